//! The scheduling queue, as kube-scheduler's: pods waiting for a node are
//! taken highest `spec.priority` first, then first come, first served; a pod
//! no node could take waits aside ("unschedulable") until the cluster
//! changes in a way that may let it fit (a node joins or changes, a pod
//! ends), or until [`UNSCHEDULABLE_RETRY`] has passed.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// A pod's namespace and name.
pub type PodKey = (String, String);

/// How long a pod waits aside at most before it is tried again, even if
/// nothing the scheduler watches changed (kube-scheduler waits up to 5 min).
pub const UNSCHEDULABLE_RETRY: Duration = Duration::from_secs(15);

/// An entry of the active heap: the order, and the pod it stands for.
#[derive(Debug, PartialEq, Eq)]
struct Turn {
    priority: i32,
    /// Arrival order; lower comes first among equal priorities.
    sequence: u64,
    key: PodKey,
}

impl Ord for Turn {
    fn cmp(&self, other: &Self) -> Ordering {
        self.priority.cmp(&other.priority).then_with(|| other.sequence.cmp(&self.sequence))
    }
}

impl PartialOrd for Turn {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// A pod waiting aside, with when it was put there.
#[derive(Debug)]
struct Aside {
    pod: Arc<Value>,
    since: Instant,
}

/// Pods waiting to be placed.
#[derive(Debug, Default)]
pub struct SchedulingQueue {
    heap: BinaryHeap<Turn>,
    /// The latest version of each pod in `heap` (a heap entry whose key is
    /// missing here was removed; it is skipped when it comes up).
    active: HashMap<PodKey, Arc<Value>>,
    unschedulable: HashMap<PodKey, Aside>,
    sequence: u64,
}

/// A pod's `spec.priority` (0 when unset).
pub fn priority(pod: &Value) -> i32 {
    pod.pointer("/spec/priority").and_then(Value::as_i64).map_or(0, |p| p.clamp(i32::MIN.into(), i32::MAX.into()) as i32)
}

impl SchedulingQueue {
    /// Queues `pod`, or keeps its place and takes this version when it is
    /// already waiting; one waiting aside stays there (see [`SchedulingQueue::retry_all`]).
    pub fn add(&mut self, key: PodKey, pod: Arc<Value>) {
        if let Some(aside) = self.unschedulable.get_mut(&key) {
            aside.pod = pod;
            return;
        }
        if let Some(queued) = self.active.get_mut(&key) {
            *queued = pod;
            return;
        }
        self.push(key, pod);
    }

    fn push(&mut self, key: PodKey, pod: Arc<Value>) {
        self.sequence += 1;
        self.heap.push(Turn { priority: priority(&pod), sequence: self.sequence, key: key.clone() });
        self.active.insert(key, pod);
    }

    /// Forgets `key` (bound, ended or deleted).
    pub fn remove(&mut self, key: &PodKey) {
        self.active.remove(key);
        self.unschedulable.remove(key);
    }

    /// Whether `key` waits aside.
    pub fn is_unschedulable(&self, key: &PodKey) -> bool {
        self.unschedulable.contains_key(key)
    }

    /// The next pod to place.
    pub fn pop(&mut self) -> Option<(PodKey, Arc<Value>)> {
        while let Some(turn) = self.heap.pop() {
            if let Some(pod) = self.active.remove(&turn.key) {
                return Some((turn.key, pod));
            }
        }
        None
    }

    /// Puts a pod no node could take aside.
    pub fn set_aside(&mut self, key: PodKey, pod: Arc<Value>) {
        self.active.remove(&key);
        self.unschedulable.insert(key, Aside { pod, since: Instant::now() });
    }

    /// Moves every pod waiting aside back to the active queue (the cluster changed).
    pub fn retry_all(&mut self) {
        let aside: Vec<(PodKey, Aside)> = self.unschedulable.drain().collect();
        for (key, aside) in aside {
            self.push(key, aside.pod);
        }
    }

    /// Moves back the pods that have waited aside longer than [`UNSCHEDULABLE_RETRY`].
    pub fn retry_expired(&mut self, now: Instant) {
        let expired: Vec<PodKey> = self
            .unschedulable
            .iter()
            .filter(|(_, aside)| now.duration_since(aside.since) >= UNSCHEDULABLE_RETRY)
            .map(|(k, _)| k.clone())
            .collect();
        for key in expired {
            if let Some(aside) = self.unschedulable.remove(&key) {
                self.push(key, aside.pod);
            }
        }
    }

    /// Pods waiting in the active queue.
    pub fn active_len(&self) -> usize {
        self.active.len()
    }

    /// Pods waiting aside.
    pub fn unschedulable_len(&self) -> usize {
        self.unschedulable.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, priority: Option<i64>) -> (PodKey, Arc<Value>) {
        let mut pod = json!({"metadata": {"name": name, "namespace": "dev"}, "spec": {}});
        if let Some(priority) = priority {
            pod["spec"]["priority"] = json!(priority);
        }
        (("dev".into(), name.into()), Arc::new(pod))
    }

    #[test]
    fn higher_priority_first_then_first_come_first_served() {
        let mut queue = SchedulingQueue::default();
        for (name, priority) in [("a", None), ("b", Some(10)), ("c", None), ("d", Some(10)), ("e", Some(-5))] {
            let (key, pod) = pod(name, priority);
            queue.add(key, pod);
        }
        let order: Vec<String> = std::iter::from_fn(|| queue.pop()).map(|((_, name), _)| name).collect();
        assert_eq!(order, ["b", "d", "a", "c", "e"]);
    }

    #[test]
    fn a_pod_aside_waits_for_a_change_and_removed_pods_never_come_up() {
        let mut queue = SchedulingQueue::default();
        let (a, pod_a) = pod("a", None);
        let (b, pod_b) = pod("b", None);
        queue.add(a.clone(), pod_a.clone());
        queue.add(b.clone(), pod_b);
        queue.remove(&b);
        let (popped, _) = queue.pop().expect("a is queued");
        assert_eq!(popped, a);
        assert!(queue.pop().is_none(), "b was removed");

        queue.set_aside(a.clone(), pod_a.clone());
        queue.add(a.clone(), pod_a);
        assert!(queue.is_unschedulable(&a));
        assert!(queue.pop().is_none(), "a waits aside, even when its pod is seen again");
        queue.retry_expired(Instant::now());
        assert!(queue.pop().is_none(), "not long enough aside");
        queue.retry_expired(Instant::now() + UNSCHEDULABLE_RETRY);
        assert_eq!(queue.pop().map(|(key, _)| key), Some(a.clone()));
        queue.set_aside(a.clone(), pod("a", None).1);
        queue.retry_all();
        assert_eq!((queue.active_len(), queue.unschedulable_len()), (1, 0));
    }
}
