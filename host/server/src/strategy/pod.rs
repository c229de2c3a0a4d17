//! `Pod`: a new pod is placed by the scheduler (only IT admins may name a
//! node), sized by the `ResourceClass` it names (`crate::classes`), given
//! its namespace's LimitRange defaults and bounds (`crate::limits`), and
//! starts `Pending` with its QoS class; it may run only images its
//! namespace pushed. Its size and class are fixed at create, its node once
//! bound. A bound pod that has not ended is deleted gracefully: marked, then
//! stopped and removed by its node within the grace period.
//!
//! Of its namespace's quota, a pod that has not ended uses 1 of `pods` and
//! its effective requests and limits (the larger of its containers' sum and
//! its largest init container, as Kubernetes computes them; a request left
//! out is its limit) as `requests.cpu` (also `cpu`), `requests.memory`
//! (also `memory`), `limits.cpu`, `limits.memory`, and the storage its
//! generic ephemeral volumes claim as `requests.storage`; a pod that has
//! ended uses only its count. A quota limiting cpu or memory requires every
//! new container to set it.

use async_trait::async_trait;
use kapsel_api::kinds::pod::{self, MAX_GRACE_SECONDS, POD, qos_class};
use kapsel_api::kinds::resource_quota::{COMPUTE_RESOURCES, Usage};
use kapsel_api::{FieldError, Quantity, object};
use kapsel_store::StoreError;
use serde_json::{Value, json};

use super::{Deleting, Deletion, Strategy, forbidden};
use crate::App;
use crate::auth::Identity;
use crate::error::ApiError;

/// How many times marking a pod for deletion is tried when it changes meanwhile.
const MARK_RETRIES: usize = 5;

/// The quota names that need every new container of a pod to set a
/// request or a limit: (quota name, `requests` or `limits`, resource).
const NEEDS_SPECIFIED: [(&str, &str, &str); 6] = [
    ("requests.cpu", "requests", "cpu"),
    ("cpu", "requests", "cpu"),
    ("requests.memory", "requests", "memory"),
    ("memory", "requests", "memory"),
    ("limits.cpu", "limits", "cpu"),
    ("limits.memory", "limits", "memory"),
];

#[derive(Debug)]
pub struct Pods;

#[async_trait]
impl Strategy for Pods {
    fn usage(&self, pod: &Value, usage: &mut Usage) {
        if pod::has_ended(pod) {
            return;
        }
        usage.insert("pods".into(), Quantity::from_units(1));
        let (requests, limits) = pod::effective_resources(pod);
        for (name, quantity) in requests {
            if matches!(name.as_str(), "cpu" | "memory") {
                usage.insert(format!("requests.{name}"), quantity);
                usage.insert(name, quantity);
            }
        }
        for (name, quantity) in limits {
            if matches!(name.as_str(), "cpu" | "memory") {
                usage.insert(format!("limits.{name}"), quantity);
            }
        }
        let storage: Quantity =
            ephemeral_claims(pod).filter_map(|claim| claim.pointer("/spec/resources/requests/storage").and_then(Quantity::from_json)).sum();
        if storage != Quantity::default() {
            usage.insert("requests.storage".into(), storage);
        }
    }

    fn usage_names(&self) -> &'static [&'static str] {
        COMPUTE_RESOURCES
    }

    fn unspecified_for_quota(&self, pod: &Value, old: Option<&Value>) -> Vec<&'static str> {
        let containers = |pod: &Value| -> Vec<Value> {
            ["containers", "initContainers"]
                .iter()
                .filter_map(|field| pod.pointer(&format!("/spec/{field}")).and_then(Value::as_array))
                .flatten()
                .cloned()
                .collect()
        };
        let existing: Vec<Value> = old.map(containers).unwrap_or_default();
        let added: Vec<(Usage, Usage)> = containers(pod)
            .iter()
            .filter(|c| !existing.iter().any(|e| e.get("name") == c.get("name")))
            .map(pod::container_resources)
            .collect();
        NEEDS_SPECIFIED
            .iter()
            .filter(|(_, field, resource)| {
                added.iter().any(|(requests, limits)| !if *field == "requests" { requests } else { limits }.contains_key(*resource))
            })
            .map(|(name, _, _)| *name)
            .collect()
    }

    async fn prepare_for_create(
        &self,
        app: &App,
        identity: &Identity,
        namespace: Option<&str>,
        pod: &mut Value,
    ) -> Result<Option<String>, ApiError> {
        if let Some(namespace) = namespace {
            if !identity.admin && pod.pointer("/spec/nodeName").is_some_and(|n| n.as_str() != Some("")) {
                let message = "may be set by IT admins only: the scheduler places pods (use nodeSelector, affinity or tolerations)";
                return Err(forbidden(&POD, pod, "spec.nodeName", message));
            }
            crate::classes::apply(&app.store, namespace, pod).await?;
            crate::limits::apply(&app.store, namespace, pod).await?;
        }
        // A new pod waits to be scheduled; its status is the platform's to write.
        pod["status"] = json!({"phase": "Pending", "qosClass": qos_class(pod)});
        Ok(None)
    }

    async fn check_create(&self, app: &App, _identity: &Identity, namespace: Option<&str>, pod: &Value) -> Result<(), ApiError> {
        check_images(app, namespace, None, pod).await
    }

    fn prepare_for_update(&self, current: &Value, next: &mut Value) -> Result<(), ApiError> {
        check_sizes(current, next)?;
        keep_binding(current, next)
    }

    async fn check_update(&self, app: &App, namespace: Option<&str>, current: &Value, next: &Value) -> Result<(), ApiError> {
        check_images(app, namespace, Some(current), next).await
    }

    /// Graceful deletion, as Kubernetes does it: the pod is marked
    /// (`metadata.deletionTimestamp` = now + the grace period,
    /// `deletionGracePeriodSeconds`) and its node stops it within the grace
    /// period and then deletes it; the node lifecycle controller deletes it
    /// when the node does not. It goes at once when it is not bound, has
    /// ended, or the grace period is 0.
    async fn delete(&self, app: &App, deleting: &Deleting<'_>) -> Result<Deletion, ApiError> {
        let Deleting { key, current, expected, grace_seconds } = *deleting;
        let name = key.name.as_str();
        let grace =
            grace_seconds.unwrap_or_else(|| current.pointer("/spec/terminationGracePeriodSeconds").and_then(Value::as_i64).unwrap_or(30));
        // A pod stored before its grace period was bounded still gets a deadline that exists.
        let grace = grace.min(MAX_GRACE_SECONDS);
        if pod::bound_node(current).is_none() || pod::has_ended(current) || grace <= 0 {
            return Ok(Deletion::Now);
        }
        if object::meta_str(current, "deletionTimestamp").is_some() {
            // Deleting it again changes nothing (Kubernetes may shorten the grace; this keeps the first).
            return Ok(Deletion::Marked(current.clone()));
        }
        let deadline = object::timestamp(chrono::Utc::now() + chrono::Duration::seconds(grace));
        let mut current = current.clone();
        for _ in 0..MARK_RETRIES {
            let mut marked = current.clone();
            object::set_meta(&mut marked, "deletionTimestamp", deadline.clone());
            object::metadata_mut(&mut marked).insert("deletionGracePeriodSeconds".into(), json!(grace));
            let guard = expected.or_else(|| object::resource_version(&current).and_then(Result::ok));
            match app.store.update(key.clone(), marked, guard).await {
                Ok(change) => return Ok(Deletion::Marked((*change.object).clone())),
                // Without a precondition, a pod that changed meanwhile (its node reporting) is marked in its new version.
                Err(StoreError::Conflict { .. }) if expected.is_none() => {
                    current = app.store.get(key).await.map_err(|e| ApiError::from_store(e, &POD, name))?;
                    if object::meta_str(&current, "deletionTimestamp").is_some() {
                        return Ok(Deletion::Marked(current));
                    }
                }
                Err(StoreError::Conflict { .. }) => {
                    return Err(ApiError::conflict(
                        &POD,
                        name,
                        "Precondition failed: the object has been modified since the given resourceVersion",
                    ));
                }
                Err(other) => return Err(ApiError::from_store(other, &POD, name)),
            }
        }
        Err(ApiError::conflict(&POD, name, "the pod kept changing while it was being deleted: delete it again"))
    }
}

/// The volume claim templates of a pod's generic ephemeral volumes.
fn ephemeral_claims(pod: &Value) -> impl Iterator<Item = &Value> {
    pod.pointer("/spec/volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|volume| volume.pointer("/ephemeral/volumeClaimTemplate"))
}

/// A pod runs images its namespace pushed: one no Artifact has is refused
/// now (422 at `spec.containers[i].image`), not on a node later. On update
/// only the images that change are checked (an artifact deleted since keeps
/// its running pods updatable).
async fn check_images(app: &App, namespace: Option<&str>, current: Option<&Value>, pod: &Value) -> Result<(), ApiError> {
    let Some(namespace) = namespace else { return Ok(()) };
    let name = object::name(pod).unwrap_or_default();
    let missing = crate::artifacts::check_pod_images(&app.store, namespace, pod)
        .await
        .map_err(|e| ApiError::from_store(e, &kapsel_api::kinds::artifact::ARTIFACT, name))?;
    let changed: Vec<FieldError> = missing
        .into_iter()
        .filter(|error| {
            let pointer = format!("/{}", error.field.replace(['.', '['], "/").replace(']', ""));
            current.is_none_or(|current| current.pointer(&pointer) != pod.pointer(&pointer))
        })
        .collect();
    if changed.is_empty() { Ok(()) } else { Err(ApiError::invalid(&POD, name, changed)) }
}

/// A pod's node is set once, at create or by the scheduler's binding: an
/// update that leaves `spec.nodeName` out keeps it (so re-applying the
/// manifest a pod was created from works); one that changes it is refused.
fn keep_binding(current: &Value, next: &mut Value) -> Result<(), ApiError> {
    let node = |pod: &Value| pod.pointer("/spec/nodeName").and_then(Value::as_str).filter(|n| !n.is_empty()).map(str::to_string);
    match (node(current), node(next)) {
        (Some(bound), None) => {
            if let Some(spec) = next.get_mut("spec").and_then(Value::as_object_mut) {
                spec.insert("nodeName".into(), json!(bound));
            }
            Ok(())
        }
        (before, after) if before != after => {
            let message = match before {
                Some(_) => "field is immutable: a bound pod stays on its node",
                None => "may not be set on update: the scheduler binds pods",
            };
            Err(forbidden(&POD, current, "spec.nodeName", message))
        }
        _ => Ok(()),
    }
}

/// A pod's size is fixed at create, where its class, the LimitRanges and
/// the quotas' "must specify" judged it (as in Kubernetes, where a pod's
/// resources are immutable): its `resourceClassName` and the resources of
/// the containers it has stay; a pod with a class takes no new containers.
fn check_sizes(current: &Value, next: &Value) -> Result<(), ApiError> {
    let class = |pod: &Value| pod.pointer("/spec/resourceClassName").cloned();
    if class(current) != class(next) {
        return Err(forbidden(&POD, current, "spec.resourceClassName", "field is immutable: create a new pod with the other class"));
    }
    for field in ["containers", "initContainers"] {
        let list = |pod: &Value| pod.pointer(&format!("/spec/{field}")).and_then(Value::as_array).cloned().unwrap_or_default();
        let before = list(current);
        for (i, container) in list(next).iter().enumerate() {
            let name = container.get("name");
            match before.iter().find(|c| c.get("name") == name) {
                Some(old) if old.get("resources") != container.get("resources") => {
                    return Err(forbidden(
                        &POD,
                        current,
                        format!("spec.{field}[{i}].resources"),
                        "field is immutable: a pod's size is set when it is created",
                    ));
                }
                None if class(current).is_some() => {
                    return Err(forbidden(
                        &POD,
                        current,
                        format!("spec.{field}[{i}]"),
                        "a pod sized by a resource class takes no new containers",
                    ));
                }
                _ => {}
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod_with(resources: &[Value]) -> Value {
        let containers: Vec<Value> =
            resources.iter().enumerate().map(|(i, r)| json!({"name": format!("c{i}"), "image": "x", "resources": r})).collect();
        json!({"metadata": {"name": "p"}, "spec": {"containers": containers}})
    }

    #[test]
    fn a_bound_pod_keeps_its_node() {
        let bound = json!({"metadata": {"name": "p"}, "spec": {"nodeName": "n1", "containers": []}});
        let mut reapplied = json!({"metadata": {"name": "p"}, "spec": {"containers": []}});
        keep_binding(&bound, &mut reapplied).unwrap();
        assert_eq!(reapplied["spec"]["nodeName"], "n1");
        let mut moved = json!({"metadata": {"name": "p"}, "spec": {"nodeName": "n2", "containers": []}});
        let error = keep_binding(&bound, &mut moved).unwrap_err();
        assert!(error.to_string().contains("spec.nodeName"), "{error}");
        let unbound = json!({"metadata": {"name": "p"}, "spec": {"containers": []}});
        let mut bound_by_update = moved.clone();
        assert!(keep_binding(&unbound, &mut bound_by_update).is_err(), "only the scheduler binds");
    }

    #[test]
    fn a_pods_size_is_fixed_at_create() {
        let small = pod_with(&[json!({"limits": {"memory": "64Mi"}})]);
        let large = pod_with(&[json!({"limits": {"memory": "1Gi"}})]);
        let error = check_sizes(&small, &large).unwrap_err();
        assert!(error.to_string().contains("spec.containers[0].resources"), "{error}");
        assert!(check_sizes(&small, &small).is_ok());
        let mut classed = small.clone();
        classed["spec"]["resourceClassName"] = json!("small");
        let mut grown = classed.clone();
        grown["spec"]["containers"].as_array_mut().unwrap().push(json!({"name": "extra", "image": "x"}));
        assert!(check_sizes(&classed, &grown).unwrap_err().to_string().contains("spec.containers[1]"));
        assert!(check_sizes(&small, &classed).unwrap_err().to_string().contains("spec.resourceClassName"));
    }
}
