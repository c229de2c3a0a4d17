//! `Node` (core v1, cluster-scoped): a host of the pool, registered by its
//! node agent with capacity, allocatable resources, labels and taints.

use k8s_openapi::api::core::v1::{NodeSpec, NodeStatus};
use serde_json::Value;

use super::{check_quantities, roundtrip, text_at, typed};
use crate::registry::{Column, ResourceType, Scope, TenantAccess};
use crate::validation::{FieldError, dns1123_subdomain};

/// The annotation in which a node agent publishes where its ingress
/// listens (`http://IP:PORT`): requests to tenants' Services enter there.
pub const INGRESS_ANNOTATION: &str = "kapsel.io/ingress";

pub static NODE: ResourceType = ResourceType {
    group: "",
    version: "v1",
    kind: "Node",
    plural: "nodes",
    singular: "node",
    short_names: &["no"],
    scope: Scope::Cluster,
    tenant_access: TenantAccess::ClusterReadable,
    selectable_fields: &["spec.unschedulable"],
    status_subresource: true,
    typed_roundtrip: Some(roundtrip::<k8s_openapi::api::core::v1::Node>),
    validate_name: dns1123_subdomain,
    validate,
    columns: &[
        Column { name: "Status", wide: false, value: ready },
        Column { name: "Version", wide: false, value: |n| text_at(n, "status.nodeInfo.kubeletVersion") },
    ],
};

fn validate(object: &Value) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if let Err(e) = typed::<Option<NodeSpec>>(object, "spec") {
        errors.push(e);
    }
    match typed::<Option<NodeStatus>>(object, "status") {
        Err(e) => errors.push(e),
        Ok(Some(status)) => {
            check_quantities(status.capacity.as_ref(), "status.capacity", &mut errors);
            check_quantities(status.allocatable.as_ref(), "status.allocatable", &mut errors);
        }
        Ok(None) => {}
    }
    errors
}

fn ready(node: &Value) -> String {
    let ready = crate::object::condition(node, "Ready").and_then(|c| c.get("status").and_then(Value::as_str));
    let mut text = match ready {
        Some("True") => "Ready".to_string(),
        Some(_) => "NotReady".to_string(),
        None => "Unknown".to_string(),
    };
    if node.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
        text.push_str(",SchedulingDisabled");
    }
    text
}
