//! `Event` (core v1, namespaced): what the platform reports about an object
//! (scheduling, plug-in failures, node loss). Written by the system; tenants read.
//!
//! Events are aggregated as Kubernetes does: one `Event` per object and
//! reason, named `<object>.<kind>.<reason>`, whose `count` and
//! `lastTimestamp` grow when it happens again. [`first_event`] builds the
//! first occurrence, for the supervisor (which writes it to its store) and
//! node agents (which post it) alike; events of cluster-scoped objects go
//! to [`CLUSTER_EVENTS_NAMESPACE`].

use k8s_openapi::api::core::v1::ObjectReference;
use serde_json::{Value, json};

use super::{roundtrip, text_at, typed};
use crate::object;
use crate::registry::{Column, ResourceType, Scope, TenantAccess};
use crate::validation::{FieldError, dns1123_subdomain};

pub static EVENT: ResourceType = ResourceType {
    group: "",
    version: "v1",
    kind: "Event",
    plural: "events",
    singular: "event",
    short_names: &["ev"],
    scope: Scope::Namespaced,
    tenant_access: TenantAccess::ReadOnly,
    selectable_fields: &["involvedObject.kind", "involvedObject.name", "reason", "type"],
    status_subresource: false,
    typed_roundtrip: Some(roundtrip::<k8s_openapi::api::core::v1::Event>),
    validate_name: dns1123_subdomain,
    validate,
    columns: &[
        Column { name: "Type", wide: false, value: |e| text_at(e, "type") },
        Column { name: "Reason", wide: false, value: |e| text_at(e, "reason") },
        Column { name: "Object", wide: false, value: object },
        Column { name: "Message", wide: false, value: |e| text_at(e, "message") },
    ],
};

fn validate(object: &Value) -> Vec<FieldError> {
    match typed::<Option<ObjectReference>>(object, "involvedObject") {
        Err(e) => vec![e],
        Ok(None) => vec![FieldError::required("involvedObject")],
        Ok(Some(_)) => Vec::new(),
    }
}

fn object(event: &Value) -> String {
    format!("{}/{}", text_at(event, "involvedObject.kind").to_lowercase(), text_at(event, "involvedObject.name"))
}

/// `type` of an Event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// The namespace events about cluster-scoped objects are recorded in.
pub const CLUSTER_EVENTS_NAMESPACE: &str = "default";

/// The first occurrence of the Event recording that `reason` happened to
/// `involved`: named `<object>.<kind>.<reason>` (so repeats can be counted
/// in it), in the involved object's namespace, or
/// [`CLUSTER_EVENTS_NAMESPACE`] for a cluster-scoped one.
pub fn first_event(involved: &Value, event_type: EventType, reason: &str, message: &str) -> Value {
    first_event_in(None, involved, event_type, reason, message)
}

/// [`first_event`], recorded in `namespace` when given (an event about a
/// cluster-scoped object that concerns one namespace, for its tenants to see).
pub fn first_event_in(namespace: Option<&str>, involved: &Value, event_type: EventType, reason: &str, message: &str) -> Value {
    let kind = involved.get("kind").and_then(Value::as_str).unwrap_or_default();
    let name = object::name(involved).unwrap_or_default();
    let object_namespace = object::meta_str(involved, "namespace").filter(|n| !n.is_empty());
    let namespace = namespace.or(object_namespace).unwrap_or(CLUSTER_EVENTS_NAMESPACE);
    let event_name = format!("{name}.{}.{}", kind.to_ascii_lowercase(), reason.to_ascii_lowercase());
    let now = object::now();
    let mut involved_object = json!({
        "apiVersion": involved.get("apiVersion").cloned().unwrap_or(Value::Null),
        "kind": kind,
        "name": name,
        "uid": object::meta_str(involved, "uid").unwrap_or_default(),
    });
    if let Some(namespace) = object_namespace {
        involved_object["namespace"] = json!(namespace);
    }
    json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": event_name,
            "namespace": namespace,
            "uid": uuid::Uuid::new_v4().to_string(),
            "creationTimestamp": now,
        },
        "involvedObject": involved_object,
        "reason": reason,
        "message": message,
        "type": event_type.as_str(),
        "count": 1,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "source": {"component": "kapsel"},
        "reportingComponent": "kapsel",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_events_are_named_per_object_and_reason_in_the_objects_namespace() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": "team-a", "uid": "u1"}});
        let event = first_event(&pod, EventType::Warning, "BackOff", "restarting");
        assert_eq!(object::name(&event), Some("web.pod.backoff"));
        assert_eq!(object::namespace(&event), Some("team-a"));
        assert_eq!(event["involvedObject"], json!({"apiVersion": "v1", "kind": "Pod", "name": "web", "uid": "u1", "namespace": "team-a"}));
        assert_eq!((event["type"].as_str(), event["count"].as_i64()), (Some("Warning"), Some(1)));
        assert!(validate(&event).is_empty());

        let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1", "uid": "u2"}});
        let event = first_event(&node, EventType::Normal, "NodeReady", "back");
        assert_eq!(object::namespace(&event), Some(CLUSTER_EVENTS_NAMESPACE));
        assert!(event["involvedObject"].get("namespace").is_none());
        let event = first_event_in(Some("team-b"), &node, EventType::Normal, "NodeReady", "back");
        assert_eq!(object::namespace(&event), Some("team-b"));
    }
}
