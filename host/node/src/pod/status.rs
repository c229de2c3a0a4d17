//! A pod's status as Kubernetes shapes it, computed from what the node
//! knows about each container: `phase` (kubelet's `getPhase`), the
//! `Initialized`, `Ready` and `ContainersReady` conditions (not
//! `PodScheduled`, which stays the scheduler's), `startTime`, pod-level
//! `reason`/`message` (`DeadlineExceeded`), and `containerStatuses[]` and
//! `initContainerStatuses[]` with `state`, `lastState`, `restartCount`,
//! `ready`, `started`, `image`, `imageID` and `resources.limits` (the
//! limits the node enforces: the container's own, or the node's default
//! memory limit for a container that sets none). Everything here is pure: the
//! pod worker mutates a [`PodRecord`] and publishes [`PodRecord::status`].

use std::collections::HashMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value, json};

use super::spec::RestartPolicy;

/// `status.phase`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Pending,
    Running,
    Succeeded,
    Failed,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Running => "Running",
            Phase::Succeeded => "Succeeded",
            Phase::Failed => "Failed",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed)
    }
}

/// A container's `state`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerState {
    Waiting { reason: String, message: Option<String> },
    Running { started_at: DateTime<Utc> },
    Terminated(Termination),
}

impl ContainerState {
    pub fn waiting(reason: &str, message: Option<String>) -> Self {
        ContainerState::Waiting { reason: reason.to_string(), message }
    }
}

/// A `terminated` state: how one run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Termination {
    pub exit_code: i32,
    pub reason: String,
    pub message: String,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: DateTime<Utc>,
    pub container_id: Option<String>,
}

impl Termination {
    /// A `terminated` state as the pod's status carries it.
    pub fn from_json(terminated: &Value) -> Option<Termination> {
        let at = |key: &str| terminated.get(key).and_then(Value::as_str).and_then(parse_time);
        let text = |key: &str| terminated.get(key).and_then(Value::as_str).map(str::to_string);
        Some(Termination {
            exit_code: i32::try_from(terminated.get("exitCode")?.as_i64()?).ok()?,
            reason: text("reason").unwrap_or_default(),
            message: text("message").unwrap_or_default(),
            started_at: at("startedAt"),
            finished_at: at("finishedAt").unwrap_or_else(Utc::now),
            container_id: text("containerID"),
        })
    }

    /// How a run that was in progress when its node agent went away ended,
    /// as far as the agent that comes back can tell: as kubelet reports a
    /// container that vanished (exit code 137, `ContainerStatusUnknown`).
    pub fn vanished(started_at: Option<DateTime<Utc>>, container_id: Option<String>) -> Termination {
        Termination {
            exit_code: 137,
            reason: "ContainerStatusUnknown".into(),
            message: "The container could not be located when the node agent came back: it stopped with the agent".into(),
            started_at,
            finished_at: Utc::now(),
            container_id,
        }
    }
}

/// What the node knows about one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerRecord {
    pub name: String,
    pub image: String,
    /// The digest the image resolved to (empty until it did).
    pub image_id: String,
    pub container_id: Option<String>,
    pub restart_count: u32,
    pub state: ContainerState,
    pub last_state: Option<Termination>,
    /// The limits the node holds the container to, as `status.containerStatuses[].resources.limits`.
    pub limits: Limits,
}

/// The limits a node enforces on a container.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub memory_bytes: Option<u64>,
    pub cpu_millicores: Option<u64>,
}

impl Limits {
    /// `{"memory": "512Mi", "cpu": "250m"}`, as quantities; `None` when there are none.
    fn to_json(self) -> Option<Value> {
        let mut limits = Map::new();
        if let Some(millicores) = self.cpu_millicores.filter(|m| *m > 0) {
            let text = if millicores.is_multiple_of(1000) { (millicores / 1000).to_string() } else { format!("{millicores}m") };
            limits.insert("cpu".into(), json!(text));
        }
        if let Some(bytes) = self.memory_bytes {
            let text = match [(30, "Gi"), (20, "Mi"), (10, "Ki")]
                .into_iter()
                .find(|(shift, _)| bytes >= 1 << shift && bytes.trailing_zeros() >= *shift)
            {
                Some((shift, suffix)) => format!("{}{suffix}", bytes >> shift),
                None => bytes.to_string(),
            };
            limits.insert("memory".into(), json!(text));
        }
        (!limits.is_empty()).then_some(Value::Object(limits))
    }
}

impl ContainerRecord {
    pub fn new(name: &str, image: &str, state: ContainerState) -> Self {
        ContainerRecord {
            name: name.to_string(),
            image: image.to_string(),
            image_id: String::new(),
            container_id: None,
            restart_count: 0,
            state,
            last_state: None,
            limits: Limits::default(),
        }
    }

    pub fn is_running(&self) -> bool {
        matches!(self.state, ContainerState::Running { .. })
    }

    /// Ended with exit code 0 (an init container that is done).
    fn succeeded(&self) -> bool {
        matches!(&self.state, ContainerState::Terminated(t) if t.exit_code == 0)
    }

    fn to_json(&self) -> Value {
        let mut status = json!({
            "name": self.name,
            "image": self.image,
            "imageID": self.image_id,
            "ready": self.is_running(),
            "started": self.is_running(),
            "restartCount": self.restart_count,
            "state": state_json(&self.state),
            "lastState": self.last_state.as_ref().map_or_else(|| json!({}), |t| json!({"terminated": termination_json(t)})),
        });
        if let Some(id) = &self.container_id {
            status["containerID"] = json!(id);
        }
        if let Some(limits) = self.limits.to_json() {
            status["resources"] = json!({"limits": limits});
        }
        status
    }
}

fn state_json(state: &ContainerState) -> Value {
    match state {
        ContainerState::Waiting { reason, message } => {
            let mut waiting = json!({"reason": reason});
            if let Some(message) = message {
                waiting["message"] = json!(message);
            }
            json!({"waiting": waiting})
        }
        ContainerState::Running { started_at } => json!({"running": {"startedAt": time(*started_at)}}),
        ContainerState::Terminated(termination) => json!({"terminated": termination_json(termination)}),
    }
}

fn termination_json(t: &Termination) -> Value {
    let mut terminated = json!({"exitCode": t.exit_code, "reason": t.reason, "finishedAt": time(t.finished_at)});
    terminated["startedAt"] = t.started_at.map_or(Value::Null, |s| json!(time(s)));
    if !t.message.is_empty() {
        terminated["message"] = json!(t.message);
    }
    if let Some(id) = &t.container_id {
        terminated["containerID"] = json!(id);
    }
    terminated
}

/// A time of a status (RFC 3339).
pub fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text).ok().map(|t| t.with_timezone(&Utc))
}

/// Kubernetes' time format in status: RFC 3339, whole seconds, `Z`.
pub fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Kubelet's `getPhase`: from the init containers, the containers and the
/// restart policy. `terminal` means the node stopped the pod (deleted, or
/// past its deadline), so nothing will run again.
pub fn phase(policy: RestartPolicy, init: &[ContainerRecord], containers: &[ContainerRecord], terminal: bool) -> Phase {
    let mut pending_initialization = 0;
    let mut failed_initialization = 0;
    for record in init {
        match &record.state {
            ContainerState::Running { .. } => pending_initialization += 1,
            ContainerState::Terminated(t) => failed_initialization += usize::from(t.exit_code != 0),
            ContainerState::Waiting { .. } => match &record.last_state {
                Some(last) => failed_initialization += usize::from(last.exit_code != 0),
                None => pending_initialization += 1,
            },
        }
    }
    let (mut waiting, mut running, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for record in containers {
        match &record.state {
            ContainerState::Running { .. } => running += 1,
            ContainerState::Terminated(t) => {
                stopped += 1;
                succeeded += usize::from(t.exit_code == 0);
            }
            ContainerState::Waiting { .. } if record.last_state.is_some() => stopped += 1,
            ContainerState::Waiting { .. } => waiting += 1,
        }
    }
    if terminal {
        return if !containers.is_empty() && succeeded == containers.len() { Phase::Succeeded } else { Phase::Failed };
    }
    if failed_initialization > 0 && policy == RestartPolicy::Never {
        return Phase::Failed;
    }
    if pending_initialization > 0 || waiting > 0 {
        return Phase::Pending;
    }
    if running > 0 {
        return Phase::Running;
    }
    if stopped == 0 {
        return Phase::Pending;
    }
    match policy {
        RestartPolicy::Always => Phase::Running,
        _ if stopped == succeeded => Phase::Succeeded,
        RestartPolicy::Never => Phase::Failed,
        RestartPolicy::OnFailure => Phase::Running,
    }
}

/// Everything the node knows about a pod, from which its status is written.
#[derive(Debug, Clone)]
pub struct PodRecord {
    pub start_time: DateTime<Utc>,
    pub restart_policy: RestartPolicy,
    pub init: Vec<ContainerRecord>,
    pub containers: Vec<ContainerRecord>,
    /// The node stopped the pod: nothing restarts, the phase is final.
    pub terminal: bool,
    /// A pod-level failure: `reason` and `message` (`DeadlineExceeded`, `InvalidPod`).
    pub failure: Option<(String, String)>,
    /// Each condition's status and since when it holds.
    transitions: HashMap<&'static str, (bool, DateTime<Utc>)>,
}

impl PodRecord {
    pub fn new(
        start_time: DateTime<Utc>,
        restart_policy: RestartPolicy,
        init: Vec<ContainerRecord>,
        containers: Vec<ContainerRecord>,
    ) -> Self {
        PodRecord { start_time, restart_policy, init, containers, terminal: false, failure: None, transitions: HashMap::new() }
    }

    pub fn phase(&self) -> Phase {
        if self.failure.is_some() {
            return Phase::Failed;
        }
        phase(self.restart_policy, &self.init, &self.containers, self.terminal)
    }

    /// The pod's `status` at `now` (condition transition times are kept from earlier calls).
    pub fn status(&mut self, now: DateTime<Utc>) -> Value {
        let phase = self.phase();
        let uninitialized: Vec<String> = self.init.iter().filter(|c| !c.succeeded()).map(|c| c.name.clone()).collect();
        let unready: Vec<String> = self.containers.iter().filter(|c| !c.is_running()).map(|c| c.name.clone()).collect();
        let (ready_reason, ready_message) = if phase.is_terminal() {
            (Some("PodCompleted"), None)
        } else if unready.is_empty() {
            (None, None)
        } else {
            (Some("ContainersNotReady"), Some(format!("containers with unready status: [{}]", unready.join(" "))))
        };
        let initialized_message = format!("containers with incomplete status: [{}]", uninitialized.join(" "));
        let conditions = vec![
            self.condition("Initialized", uninitialized.is_empty(), Some("ContainersNotInitialized"), Some(initialized_message), now),
            self.condition("Ready", unready.is_empty() && !phase.is_terminal(), ready_reason, ready_message.clone(), now),
            self.condition("ContainersReady", unready.is_empty() && !phase.is_terminal(), ready_reason, ready_message, now),
        ];

        let mut status = Map::new();
        status.insert("phase".into(), json!(phase.as_str()));
        if let Some((reason, message)) = &self.failure {
            status.insert("reason".into(), json!(reason));
            status.insert("message".into(), json!(message));
        }
        status.insert("startTime".into(), json!(time(self.start_time)));
        status.insert("conditions".into(), Value::Array(conditions));
        if !self.init.is_empty() {
            status.insert("initContainerStatuses".into(), self.init.iter().map(ContainerRecord::to_json).collect());
        }
        status.insert("containerStatuses".into(), self.containers.iter().map(ContainerRecord::to_json).collect());
        Value::Object(status)
    }

    /// A condition; `reason` and `message` are written only while it is False.
    fn condition(&mut self, kind: &'static str, holds: bool, reason: Option<&str>, message: Option<String>, now: DateTime<Utc>) -> Value {
        let since = match self.transitions.get(kind) {
            Some((was, since)) if *was == holds => *since,
            _ => {
                self.transitions.insert(kind, (holds, now));
                now
            }
        };
        let mut condition = json!({
            "type": kind,
            "status": if holds { "True" } else { "False" },
            "lastProbeTime": null,
            "lastTransitionTime": time(since),
        });
        if !holds {
            if let Some(reason) = reason {
                condition["reason"] = json!(reason);
            }
            if let Some(message) = message {
                condition["message"] = json!(message);
            }
        }
        condition
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap()
    }

    fn ended(exit_code: i32) -> Termination {
        Termination {
            exit_code,
            reason: if exit_code == 0 { "Completed".into() } else { "Error".into() },
            message: String::new(),
            started_at: Some(at(1)),
            finished_at: at(2),
            container_id: None,
        }
    }

    fn waiting(name: &str) -> ContainerRecord {
        ContainerRecord::new(name, "img:1", ContainerState::waiting("ContainerCreating", None))
    }
    fn running(name: &str) -> ContainerRecord {
        ContainerRecord::new(name, "img:1", ContainerState::Running { started_at: at(1) })
    }
    fn terminated(name: &str, exit_code: i32) -> ContainerRecord {
        ContainerRecord::new(name, "img:1", ContainerState::Terminated(ended(exit_code)))
    }
    fn backing_off(name: &str, exit_code: i32) -> ContainerRecord {
        let mut record = ContainerRecord::new(name, "img:1", ContainerState::waiting("CrashLoopBackOff", None));
        record.last_state = Some(ended(exit_code));
        record
    }

    use RestartPolicy::{Always, Never, OnFailure};

    #[test]
    fn phase_follows_kubelet_for_containers() {
        assert_eq!(phase(Always, &[], &[waiting("a")], false), Phase::Pending);
        assert_eq!(phase(Always, &[], &[running("a"), waiting("b")], false), Phase::Pending);
        assert_eq!(phase(Never, &[], &[running("a"), terminated("b", 1)], false), Phase::Running);
        assert_eq!(phase(Never, &[], &[terminated("a", 0)], false), Phase::Succeeded);
        assert_eq!(phase(Never, &[], &[terminated("a", 0), terminated("b", 3)], false), Phase::Failed);
        assert_eq!(phase(OnFailure, &[], &[terminated("a", 0)], false), Phase::Succeeded);
        assert_eq!(phase(OnFailure, &[], &[backing_off("a", 3)], false), Phase::Running);
        assert_eq!(phase(Always, &[], &[terminated("a", 0)], false), Phase::Running);
        assert_eq!(phase(Always, &[], &[backing_off("a", 3)], false), Phase::Running);
    }

    #[test]
    fn phase_follows_kubelet_for_init_containers() {
        assert_eq!(phase(Always, &[running("init")], &[waiting("a")], false), Phase::Pending);
        assert_eq!(phase(Always, &[backing_off("init", 1)], &[waiting("a")], false), Phase::Pending);
        assert_eq!(phase(Never, &[terminated("init", 1)], &[waiting("a")], false), Phase::Failed);
        assert_eq!(phase(Never, &[terminated("init", 0)], &[running("a")], false), Phase::Running);
    }

    #[test]
    fn limits_read_as_quantities() {
        let limits = |memory_bytes, cpu_millicores| Limits { memory_bytes, cpu_millicores }.to_json();
        assert_eq!(limits(None, None), None);
        assert_eq!(limits(Some(512 << 20), Some(250)), Some(json!({"memory": "512Mi", "cpu": "250m"})));
        assert_eq!(limits(Some(2 << 30), Some(2000)), Some(json!({"memory": "2Gi", "cpu": "2"})));
        assert_eq!(limits(Some(1_000_000), Some(0)), Some(json!({"memory": "1000000"})), "cpu 0 is no limit");
        assert_eq!(limits(Some(1536), None), Some(json!({"memory": "1536"})));
        assert_eq!(limits(Some(3 << 10), None), Some(json!({"memory": "3Ki"})));
        let mut record = ContainerRecord::new("main", "hello:1", ContainerState::waiting("ContainerCreating", None));
        assert!(record.to_json().get("resources").is_none());
        record.limits.memory_bytes = Some(32 << 20);
        assert_eq!(record.to_json()["resources"], json!({"limits": {"memory": "32Mi"}}));
    }

    #[test]
    fn a_stopped_pod_ends_by_its_exit_codes() {
        assert_eq!(phase(Always, &[], &[terminated("a", 0)], true), Phase::Succeeded);
        assert_eq!(phase(Always, &[], &[terminated("a", 0), terminated("b", 137)], true), Phase::Failed);
        assert_eq!(phase(Always, &[], &[waiting("a")], true), Phase::Failed);
    }

    #[test]
    fn status_has_kubernetes_shape_and_keeps_transition_times() {
        let mut record = PodRecord::new(at(0), Never, vec![terminated("setup", 0)], vec![waiting("main")]);
        let first = record.status(at(5));
        assert_eq!(first["phase"], "Pending");
        assert_eq!(first["startTime"], "2027-01-15T08:00:00Z");
        let conditions = first["conditions"].as_array().unwrap();
        let kinds: Vec<&str> = conditions.iter().map(|c| c["type"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["Initialized", "Ready", "ContainersReady"]);
        assert_eq!(conditions[0]["status"], "True");
        assert_eq!(conditions[1]["status"], "False");
        assert_eq!(conditions[1]["reason"], "ContainersNotReady");
        assert_eq!(conditions[1]["message"], "containers with unready status: [main]");
        assert_eq!(first["initContainerStatuses"][0]["state"]["terminated"]["reason"], "Completed");
        let main = &first["containerStatuses"][0];
        assert_eq!(main["state"], json!({"waiting": {"reason": "ContainerCreating"}}));
        assert_eq!(main["lastState"], json!({}));
        assert_eq!(main["ready"], false);
        assert_eq!(main["restartCount"], 0);

        record.containers[0] = running("main");
        record.containers[0].image_id = "sha256:abc".into();
        let second = record.status(at(9));
        assert_eq!(second["phase"], "Running");
        assert_eq!(second["conditions"][0]["lastTransitionTime"], time(at(5)));
        assert_eq!(second["conditions"][1]["lastTransitionTime"], time(at(9)));
        assert_eq!(second["conditions"][1]["status"], "True");
        assert!(second["conditions"][1].get("reason").is_none());
        assert_eq!(second["containerStatuses"][0]["imageID"], "sha256:abc");
        assert_eq!(second["containerStatuses"][0]["state"]["running"]["startedAt"], time(at(1)));

        record.terminal = true;
        record.failure = Some(("DeadlineExceeded".into(), "Pod was active on the node longer than the specified deadline".into()));
        record.containers[0].state = ContainerState::Terminated(ended(137));
        let last = record.status(at(12));
        assert_eq!(last["phase"], "Failed");
        assert_eq!(last["reason"], "DeadlineExceeded");
        assert_eq!(last["conditions"][1]["reason"], "PodCompleted");
        assert_eq!(last["containerStatuses"][0]["state"]["terminated"]["exitCode"], 137);
    }
}
