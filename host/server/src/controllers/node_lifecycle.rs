//! Node lifecycle: a node whose agent stopped renewing its lease is marked
//! lost, and after a grace its pods are failed so their owners can replace
//! them, as Kubernetes' node lifecycle controller does.
//!
//! Every [`PASS_INTERVAL`] it compares each node's heartbeat — its lease's
//! `renewTime` in `kube-node-lease`, or, for a node without a lease, when
//! it was created — with the clock. Older than
//! [`NodeLifecycleOptions::lost_after`] (10 s): the node's `Ready`
//! condition turns `False` with reason `NodeLost` and a `NodeNotReady`
//! Event is recorded (the scheduler then places nothing there). Lost for a
//! further [`NodeLifecycleOptions::pod_grace`] (30 s): every pod bound to it
//! that has not ended is marked `Failed`, reason `NodeLost`, which frees
//! what it counted against quotas and the node. When the lease is renewed
//! again, `Ready` turns back `True` (reason `NodeAgentReady`); the agent
//! itself stops whatever it still runs that the supervisor failed. It also
//! deletes pods whose graceful deletion is [`DELETION_SLACK`] past its
//! deadline (their node did not stop and delete them).

use std::time::Duration;

use chrono::{DateTime, Utc};
use kapsel_api::kinds::event::EventType;
use kapsel_api::kinds::lease::{LEASE, NODE_LEASE_NAMESPACE, renewed_at};
use kapsel_api::kinds::node::NODE;
use kapsel_api::kinds::pod::POD;
use kapsel_api::object;
use kapsel_store::{Key, StoreError};
use serde_json::{Value, json};

use crate::App;
use crate::events;

/// How often nodes' heartbeats are checked.
pub const PASS_INTERVAL: Duration = Duration::from_secs(1);
/// The reason of a `Ready=False` condition this controller sets, and of the pods it fails.
pub const NODE_LOST: &str = "NodeLost";

/// Settings of the node lifecycle controller.
#[derive(Debug, Clone, Copy)]
pub struct NodeLifecycleOptions {
    /// A heartbeat older than this marks the node lost.
    pub lost_after: Duration,
    /// How long a node stays lost before its pods are failed.
    pub pod_grace: Duration,
}

impl Default for NodeLifecycleOptions {
    fn default() -> Self {
        NodeLifecycleOptions { lost_after: Duration::from_secs(10), pod_grace: Duration::from_secs(30) }
    }
}

/// Starts the controller; it stops with the server.
pub fn start(app: &App, options: NodeLifecycleOptions) {
    super::Periodic::new("node-lifecycle", PASS_INTERVAL).start(app, move |app| async move {
        if let Err(error) = pass(&app, options).await {
            tracing::warn!(error = &error as &dyn std::error::Error, "node lifecycle pass failed");
        }
    });
}

fn text<'a>(value: Option<&'a Value>, field: &str) -> Option<&'a str> {
    value?.get(field)?.as_str()
}

fn parse_time(text: Option<&str>) -> Option<DateTime<Utc>> {
    text.and_then(|t| DateTime::parse_from_rfc3339(t).ok()).map(|t| t.with_timezone(&Utc))
}

/// What a pass should do about one node.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Healthy,
    /// The heartbeat is too old: mark it lost.
    Lose,
    /// Lost long enough: fail its pods.
    FailPods,
    /// Lost (by this controller) and heartbeating again.
    Recover,
}

fn judge(node: &Value, heartbeat: Option<DateTime<Utc>>, now: DateTime<Utc>, options: NodeLifecycleOptions) -> Verdict {
    let heartbeat = heartbeat.or_else(|| parse_time(object::meta_str(node, "creationTimestamp")));
    let age = heartbeat.map_or(Duration::MAX, |at| now.signed_duration_since(at).to_std().unwrap_or_default());
    let ready = object::condition(node, "Ready");
    let lost = text(ready, "status") == Some("False") && text(ready, "reason") == Some(NODE_LOST);
    match (lost, age > options.lost_after) {
        (false, false) => Verdict::Healthy,
        (false, true) => Verdict::Lose,
        (true, false) => Verdict::Recover,
        (true, true) => {
            let since = parse_time(text(ready, "lastTransitionTime"));
            let lost_for = since.map_or(Duration::MAX, |at| now.signed_duration_since(at).to_std().unwrap_or_default());
            if lost_for >= options.pod_grace { Verdict::FailPods } else { Verdict::Healthy }
        }
    }
}

/// How long past its deletion deadline a pod may stay before it is deleted
/// without its node (lost, or too slow to stop it).
pub const DELETION_SLACK: Duration = Duration::from_secs(5);

/// Deletes the pods whose graceful deletion is [`DELETION_SLACK`] past its
/// deadline: their node did not stop and delete them in time.
async fn force_overdue_deletions(app: &App, pods: &[Value], now: DateTime<Utc>) -> Result<(), StoreError> {
    for pod in pods {
        let Some(deadline) = parse_time(object::meta_str(pod, "deletionTimestamp")) else { continue };
        if now.signed_duration_since(deadline).to_std().unwrap_or_default() < DELETION_SLACK {
            continue;
        }
        let (namespace, name) = (object::namespace(pod).unwrap_or_default(), object::name(pod).unwrap_or_default());
        let expected = object::resource_version(pod).and_then(Result::ok);
        let key = Key::new(POD.store_key(), namespace, name);
        let charge = crate::quota::charge_for(app, &POD, namespace, name, Some(pod), None).await.ok().flatten();
        let deleted = match charge {
            Some(charge) => crate::quota::commit(app, charge, kapsel_store::WriteOp::Delete { key, expected_revision: expected })
                .await
                .unwrap_or_else(|refused| Err(StoreError::Refused(refused.to_string()))),
            None => app.store.delete(key, expected).await.map(|change| vec![change]),
        };
        match deleted {
            Ok(_) => tracing::warn!(pod = %format!("{namespace}/{name}"), "pod deleted past its grace period without its node"),
            Err(StoreError::Conflict { .. } | StoreError::NotFound) => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

async fn pass(app: &App, options: NodeLifecycleOptions) -> Result<(), StoreError> {
    // One listing of the pods per pass serves both the overdue deletions and the pods of lost nodes.
    let pods = app.store.list(&POD.store_key(), None).await?.objects;
    force_overdue_deletions(app, &pods, Utc::now()).await?;
    let nodes = app.store.list(&NODE.store_key(), None).await?.objects;
    if nodes.is_empty() {
        return Ok(());
    }
    let leases = app.store.list(&LEASE.store_key(), Some(NODE_LEASE_NAMESPACE)).await?.objects;
    let now = Utc::now();
    for node in nodes {
        let name = object::name(&node).unwrap_or_default().to_string();
        let heartbeat = leases.iter().find(|l| object::name(l) == Some(name.as_str())).and_then(renewed_at);
        match judge(&node, heartbeat, now, options) {
            Verdict::Healthy => {}
            Verdict::Lose => {
                let age = heartbeat.map(|at| now.signed_duration_since(at).num_seconds());
                let message = match age {
                    Some(seconds) => format!("the node agent has not renewed its lease for {seconds} s"),
                    None => "the node agent has never renewed a lease".to_string(),
                };
                if set_ready(app, &node, "False", NODE_LOST, &message).await {
                    tracing::warn!(node = %name, %message, "node lost");
                    events::record(&app.store, &node, EventType::Warning, "NodeNotReady", &message).await;
                }
            }
            Verdict::Recover => {
                if set_ready(app, &node, "True", "NodeAgentReady", "the node agent is renewing its lease again").await {
                    tracing::info!(node = %name, "node back");
                    events::record(&app.store, &node, EventType::Normal, "NodeReady", "the node agent is renewing its lease again").await;
                }
            }
            Verdict::FailPods => fail_pods(app, &name, &pods).await?,
        }
    }
    Ok(())
}

/// Sets the node's `Ready` condition; `true` when it was written.
async fn set_ready(app: &App, node: &Value, status: &str, reason: &str, message: &str) -> bool {
    let mut next = node.clone();
    let now = object::now();
    let condition = json!({"type": "Ready", "status": status, "reason": reason, "message": message,
        "lastHeartbeatTime": now, "lastTransitionTime": now});
    object::set_condition(&mut next, condition);
    let name = object::name(node).unwrap_or_default();
    let expected = object::resource_version(node).and_then(Result::ok);
    match app.store.update(Key::new(NODE.store_key(), "", name), next, expected).await {
        Ok(_) => true,
        // Changed since the list (the agent registered again): the next pass looks again.
        Err(StoreError::Conflict { .. } | StoreError::NotFound) => false,
        Err(error) => {
            tracing::warn!(node = %name, error = &error as &dyn std::error::Error, "could not mark a node");
            false
        }
    }
}

/// Marks every pod bound to `node` that has not ended `Failed`, reason `NodeLost`.
async fn fail_pods(app: &App, node: &str, pods: &[Value]) -> Result<(), StoreError> {
    for pod in pods {
        if pod.pointer("/spec/nodeName").and_then(Value::as_str) != Some(node) {
            continue;
        }
        if kapsel_api::kinds::pod::has_ended(pod) {
            continue;
        }
        let message = format!("node {node:?} was lost: its agent stopped renewing its lease");
        let mut failed = pod.clone();
        if !failed.get("status").is_some_and(Value::is_object) {
            failed["status"] = json!({});
        }
        failed["status"]["phase"] = json!("Failed");
        failed["status"]["reason"] = json!(NODE_LOST);
        failed["status"]["message"] = json!(message);
        let (namespace, name) = (object::namespace(pod).unwrap_or_default(), object::name(pod).unwrap_or_default());
        let expected = object::resource_version(pod).and_then(Result::ok);
        match app.store.update(Key::new(POD.store_key(), namespace, name), failed, expected).await {
            Ok(_) => {
                tracing::warn!(pod = %format!("{namespace}/{name}"), %node, "pod failed with its lost node");
                events::record(&app.store, pod, EventType::Warning, NODE_LOST, &message).await;
            }
            Err(StoreError::Conflict { .. } | StoreError::NotFound) => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(ready: Option<(&str, &str, &str)>) -> Value {
        let mut node = json!({"metadata": {"name": "n", "creationTimestamp": "2026-01-01T00:00:00Z"}, "status": {}});
        if let Some((status, reason, since)) = ready {
            node["status"]["conditions"] = json!([{"type": "Ready", "status": status, "reason": reason, "lastTransitionTime": since}]);
        }
        node
    }

    fn at(text: &str) -> DateTime<Utc> {
        parse_time(Some(text)).unwrap()
    }

    #[test]
    fn a_node_is_lost_after_its_lease_ages_and_its_pods_after_the_grace() {
        let options = NodeLifecycleOptions::default();
        let now = at("2026-01-01T00:01:00Z");
        let healthy = node(Some(("True", "NodeAgentReady", "2026-01-01T00:00:00Z")));
        assert_eq!(judge(&healthy, Some(at("2026-01-01T00:00:55Z")), now, options), Verdict::Healthy);
        assert_eq!(judge(&healthy, Some(at("2026-01-01T00:00:49Z")), now, options), Verdict::Lose);
        // No lease: the node's age counts.
        assert_eq!(judge(&healthy, None, now, options), Verdict::Lose);
        let lost_recently = node(Some(("False", NODE_LOST, "2026-01-01T00:00:40Z")));
        assert_eq!(judge(&lost_recently, Some(at("2026-01-01T00:00:20Z")), now, options), Verdict::Healthy);
        let lost_long = node(Some(("False", NODE_LOST, "2026-01-01T00:00:29Z")));
        assert_eq!(judge(&lost_long, Some(at("2026-01-01T00:00:20Z")), now, options), Verdict::FailPods);
        assert_eq!(judge(&lost_long, Some(at("2026-01-01T00:00:59Z")), now, options), Verdict::Recover);
        // A node an admin marked not ready for another reason is not this controller's.
        let drained = node(Some(("False", "Maintenance", "2026-01-01T00:00:00Z")));
        assert_eq!(judge(&drained, Some(at("2026-01-01T00:00:59Z")), now, options), Verdict::Healthy);
    }
}
