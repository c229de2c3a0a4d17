//! `Namespace` (core v1, cluster-scoped): the unit IT carves the pool into
//! and grants tenants roles in. Deleting one deletes everything in it.

use serde_json::Value;

use super::{roundtrip, text_at};
use crate::registry::{Column, ResourceType, Scope, TenantAccess};
use crate::validation::dns1123_label;

pub static NAMESPACE: ResourceType = ResourceType {
    group: "",
    version: "v1",
    kind: "Namespace",
    plural: "namespaces",
    singular: "namespace",
    short_names: &["ns"],
    scope: Scope::Cluster,
    tenant_access: TenantAccess::OwnNamespaces,
    selectable_fields: &["status.phase"],
    status_subresource: true,
    typed_roundtrip: Some(roundtrip::<k8s_openapi::api::core::v1::Namespace>),
    validate_name: dns1123_label,
    validate: super::no_spec_checks,
    columns: &[Column { name: "Status", wide: false, value: phase }],
};

fn phase(object: &Value) -> String {
    match text_at(object, "status.phase").as_str() {
        "<none>" => "Active".into(),
        other => other.into(),
    }
}
