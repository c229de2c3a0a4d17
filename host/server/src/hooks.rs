//! Kind-specific steps of the generic request path, kept in one place:
//! a `Token` gets its secret generated and only the hash stored (the
//! secret is returned once, in the create response's `status.token`);
//! a `Namespace` starts `Active` and gets its network from the network
//! driver in charge (recorded in platform-owned annotations); a `Pod`
//! starts `Pending` with its QoS class; a deleted `Plugin` leaves the
//! registry of active plug-ins.

use kapsel_api::ResourceType;
use kapsel_api::kinds::artifact::ARTIFACT;
use kapsel_api::kinds::namespace::NAMESPACE;
use kapsel_api::kinds::plugin::PLUGIN;
use kapsel_api::kinds::pod::POD;
use kapsel_api::kinds::token::TOKEN;
use serde_json::{Value, json};

use crate::auth::{hash_secret, new_secret};
use crate::error::ApiError;
use crate::{App, plugins};
use kapsel_store::Change;

/// Why `spec.images` of an `Artifact` cannot be written through the generic API.
const IMAGES_BY_PUSH: &str = "written by pushes only (`kapsel push FILE NAME:TAG`); tags may point at the artifact's images";

/// Runs before validation on create; may return a secret to show once.
pub fn before_create(resource: &ResourceType, object: &mut Value) -> Result<Option<String>, ApiError> {
    if std::ptr::eq(resource, &TOKEN) {
        let secret = new_secret();
        if !object.get("spec").is_some_and(Value::is_object) {
            object["spec"] = json!({});
        }
        object["spec"]["secretHash"] = Value::String(hash_secret(&secret));
        object.as_object_mut().map(|o| o.remove("status"));
        return Ok(Some(secret));
    }
    if std::ptr::eq(resource, &NAMESPACE) {
        object["status"] = json!({"phase": "Active"});
        // The network annotations are the platform's to write.
        if let Some(annotations) = object.pointer_mut("/metadata/annotations").and_then(Value::as_object_mut) {
            annotations.retain(|key, _| !key.starts_with(NETWORK_ANNOTATION_PREFIX));
        }
    }
    if std::ptr::eq(resource, &ARTIFACT) && object.pointer("/spec/images").and_then(Value::as_array).is_some_and(|i| !i.is_empty()) {
        let name = kapsel_api::object::name(object).unwrap_or_default();
        return Err(ApiError::invalid(resource, name, vec![kapsel_api::FieldError::forbidden("spec.images", IMAGES_BY_PUSH)]));
    }
    if std::ptr::eq(resource, &PLUGIN) {
        for field in ["digest", "previousDigest", "previousVersion"] {
            if object.pointer(&format!("/spec/{field}")).is_some_and(|v| v.as_str() != Some("")) {
                let name = kapsel_api::object::name(object).unwrap_or_default();
                let message = "set by uploads: create the plug-in, then `kapsel plugin push` its component";
                return Err(ApiError::invalid(resource, name, vec![kapsel_api::FieldError::forbidden(format!("spec.{field}"), message)]));
            }
        }
        object["status"] = json!({"phase": "Pending", "message": "no component uploaded yet"});
    }
    if crate::admission::is_policy_kind(resource) {
        // A new policy's status is the platform's: loaded, then its audits.
        object.as_object_mut().map(|o| o.remove("status"));
        crate::admission::check_policy(resource, object)?;
    }
    if std::ptr::eq(resource, &POD) {
        // A new pod waits to be scheduled; its status is the platform's to write.
        object["status"] = json!({"phase": "Pending", "qosClass": qos_class(object)});
    }
    Ok(None)
}

/// The Kubernetes QoS class of a pod: `Guaranteed` when every container's
/// CPU and memory requests equal its limits, `BestEffort` when none sets
/// any, `Burstable` otherwise.
fn qos_class(pod: &Value) -> &'static str {
    let containers = pod.pointer("/spec/containers").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    let resources: Vec<(Option<&Value>, Option<&Value>)> =
        containers.iter().map(|c| (c.pointer("/resources/requests"), c.pointer("/resources/limits"))).collect();
    let set = |v: Option<&Value>| v.and_then(Value::as_object).is_some_and(|m| m.contains_key("cpu") || m.contains_key("memory"));
    if resources.iter().all(|(requests, limits)| !set(*requests) && !set(*limits)) {
        return "BestEffort";
    }
    let guaranteed = resources.iter().all(|(requests, limits)| {
        ["cpu", "memory"].iter().all(|r| {
            let limit = limits.and_then(|l| l.get(*r));
            // A request left out defaults to the limit.
            limit.is_some() && requests.and_then(|q| q.get(*r)).is_none_or(|q| Some(q) == limit)
        })
    });
    if guaranteed { "Guaranteed" } else { "Burstable" }
}

/// The prefix of the annotations recording a namespace's network.
const NETWORK_ANNOTATION_PREFIX: &str = "network.kapsel.io/";

/// Runs on create after validation, right before the object is stored
/// (not on a dry run): a new namespace gets its network segment from the
/// network driver in charge, under the driver's failure policy.
pub async fn before_store(app: &App, resource: &ResourceType, object: &mut Value) -> Result<(), ApiError> {
    if std::ptr::eq(resource, &NAMESPACE) {
        let name = kapsel_api::object::name(object).unwrap_or_default().to_string();
        let namespace = name.clone();
        let answer = plugins::network_call(app, format!("creating the network of namespace {name:?}"), move |driver| {
            driver.create_network(&namespace)
        })
        .await?;
        match answer {
            Some((driver, Ok(segment))) => {
                let metadata = kapsel_api::object::metadata_mut(object);
                let annotations = metadata.entry("annotations").or_insert_with(|| json!({}));
                annotations[plugins::SEGMENT_ANNOTATION] = json!(segment.cidr);
                annotations[plugins::GATEWAY_ANNOTATION] = json!(segment.gateway);
                annotations[plugins::DRIVER_ANNOTATION] = json!(driver);
            }
            Some((driver, Err(refusal))) => {
                return Err(ApiError::Forbidden(format!(
                    "namespace {name:?} cannot get a network: the network driver {driver:?} refused: {}",
                    kapsel_plugins::network::describe(&refusal)
                )));
            }
            None => {}
        }
    }
    Ok(())
}

/// Adds what is shown once (a new token's secret) to the create response.
pub fn after_create(resource: &ResourceType, answer: &mut Value, shown_once: Option<String>) {
    if let (true, Some(secret)) = (std::ptr::eq(resource, &TOKEN), shown_once) {
        answer["status"] = json!({"token": secret});
    }
}

/// Runs after a write committed: token changes are in the authenticator,
/// and policy changes in force, before the client hears of them (their
/// reflectors take them in; this waits for that).
pub async fn after_commit(app: &App, resource: &ResourceType, changes: &[Change]) {
    let key = resource.store_key();
    let Some(last) = changes.iter().filter(|c| c.key.resource == key).map(|c| c.revision).max() else {
        return;
    };
    if crate::admission::is_policy_kind(resource) {
        app.admission.caught_up(resource, last).await;
    }
    if std::ptr::eq(resource, &TOKEN) {
        app.auth.caught_up(last).await;
    }
    // A deleted plug-in stops at once (its callers fall back to built-in
    // behaviour); an edited one is reloaded with its new spec.
    if std::ptr::eq(resource, &PLUGIN) {
        for change in changes {
            match change.change_type {
                kapsel_store::ChangeType::Deleted => app.plugins.remove(&change.key.name),
                kapsel_store::ChangeType::Modified
                    if change.previous.as_ref().map(|p| p.get("spec")) != Some(change.object.get("spec")) =>
                {
                    plugins::reload_after_edit(app, &change.object)
                }
                _ => {}
            }
        }
    }
}

/// Refuses changes to fields that are fixed after create, or that only
/// their own endpoints may set (a plug-in's component digests and world).
pub fn before_update(resource: &ResourceType, current: &Value, next: &mut Value) -> Result<(), ApiError> {
    if crate::admission::is_policy_kind(resource) {
        // A policy that does not compile is refused; the version in force stays.
        crate::admission::check_policy(resource, next)?;
    }
    if std::ptr::eq(resource, &NAMESPACE) {
        // The network annotations stay as the platform wrote them.
        let network = |object: &Value| -> Vec<(String, Value)> {
            object
                .pointer("/metadata/annotations")
                .and_then(Value::as_object)
                .map(|a| a.iter().filter(|(k, _)| k.starts_with(NETWORK_ANNOTATION_PREFIX)).map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default()
        };
        let kept = network(current);
        let metadata = kapsel_api::object::metadata_mut(next);
        if kept.is_empty() && !metadata.contains_key("annotations") {
            return Ok(());
        }
        let annotations = metadata.entry("annotations").or_insert_with(|| json!({}));
        if let Some(annotations) = annotations.as_object_mut() {
            annotations.retain(|key, _| !key.starts_with(NETWORK_ANNOTATION_PREFIX));
            annotations.extend(kept);
        }
    }
    if std::ptr::eq(resource, &PLUGIN) {
        for field in ["world", "digest", "previousDigest", "previousVersion"] {
            if current.pointer(&format!("/spec/{field}")) != next.pointer(&format!("/spec/{field}")) {
                let name = kapsel_api::object::name(current).unwrap_or_default();
                return Err(ApiError::invalid(
                    resource,
                    name,
                    vec![kapsel_api::FieldError::forbidden(
                        format!("spec.{field}"),
                        "set by uploads: use `kapsel plugin push` or `kapsel plugin rollback`",
                    )],
                ));
            }
        }
    }
    if std::ptr::eq(resource, &ARTIFACT) && current.pointer("/spec/images") != next.pointer("/spec/images") {
        // An artifact leads only to bytes its own namespace pushed.
        let name = kapsel_api::object::name(current).unwrap_or_default();
        return Err(ApiError::invalid(resource, name, vec![kapsel_api::FieldError::forbidden("spec.images", IMAGES_BY_PUSH)]));
    }
    if std::ptr::eq(resource, &POD) {
        check_pod_sizes(current, next)?;
        keep_binding(current, next)?;
    }
    if std::ptr::eq(resource, &TOKEN) && current.pointer("/spec/secretHash") != next.pointer("/spec/secretHash") {
        let name = kapsel_api::object::name(current).unwrap_or_default();
        return Err(ApiError::invalid(
            resource,
            name,
            vec![kapsel_api::FieldError::forbidden("spec.secretHash", "field is immutable: revoke the token and create a new one")],
        ));
    }
    Ok(())
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
            let name = kapsel_api::object::name(current).unwrap_or_default();
            let message = match before {
                Some(_) => "field is immutable: a bound pod stays on its node",
                None => "may not be set on update: the scheduler binds pods",
            };
            Err(ApiError::invalid(&POD, name, vec![kapsel_api::FieldError::forbidden("spec.nodeName", message)]))
        }
        _ => Ok(()),
    }
}

/// A pod's size is fixed at create, where its class, the LimitRanges and
/// the quotas' "must specify" judged it (as in Kubernetes, where a pod's
/// resources are immutable): its `resourceClassName` and the resources of
/// the containers it has stay; a pod with a class takes no new containers.
fn check_pod_sizes(current: &Value, next: &Value) -> Result<(), ApiError> {
    let name = kapsel_api::object::name(current).unwrap_or_default();
    let immutable =
        |field: String, message: &str| ApiError::invalid(&POD, name, vec![kapsel_api::FieldError::forbidden(field, message.to_string())]);
    let class = |pod: &Value| pod.pointer("/spec/resourceClassName").cloned();
    if class(current) != class(next) {
        return Err(immutable("spec.resourceClassName".into(), "field is immutable: create a new pod with the other class"));
    }
    for field in ["containers", "initContainers"] {
        let list = |pod: &Value| pod.pointer(&format!("/spec/{field}")).and_then(Value::as_array).cloned().unwrap_or_default();
        let before = list(current);
        for (i, container) in list(next).iter().enumerate() {
            let name = container.get("name");
            match before.iter().find(|c| c.get("name") == name) {
                Some(old) if old.get("resources") != container.get("resources") => {
                    return Err(immutable(
                        format!("spec.{field}[{i}].resources"),
                        "field is immutable: a pod's size is set when it is created",
                    ));
                }
                None if class(current).is_some() => {
                    return Err(immutable(format!("spec.{field}[{i}]"), "a pod sized by a resource class takes no new containers"));
                }
                _ => {}
            }
        }
    }
    Ok(())
}
