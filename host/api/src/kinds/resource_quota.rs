//! `ResourceQuota` (core v1, namespaced): IT's hard limits on what a
//! namespace may request (`requests.cpu`, `pods`, `count/<resource>`, the
//! bytes of its pushed images as `kapsel.io/artifact-storage`, …).
//! The names a quota may limit are checked here; what objects use of them
//! and the enforcement are the server's (`kapsel-server`'s `quota`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceQuotaSpec;
use serde_json::Value;

use super::artifact::ARTIFACT_STORAGE;
use super::{check_quantities, roundtrip, typed};
use crate::quantity::Quantity;
use crate::registry::{Column, ResourceType, Scope, TenantAccess};
use crate::validation::{FieldError, dns1123_subdomain};

pub static RESOURCE_QUOTA: ResourceType = ResourceType {
    group: "",
    version: "v1",
    kind: "ResourceQuota",
    plural: "resourcequotas",
    singular: "resourcequota",
    short_names: &["quota"],
    scope: Scope::Namespaced,
    tenant_access: TenantAccess::ReadOnly,
    selectable_fields: &[],
    status_subresource: true,
    typed_roundtrip: Some(roundtrip::<k8s_openapi::api::core::v1::ResourceQuota>),
    validate_name: dns1123_subdomain,
    validate,
    columns: &[Column { name: "Hard", wide: false, value: hard }],
};

fn validate(object: &Value) -> Vec<FieldError> {
    match typed::<Option<ResourceQuotaSpec>>(object, "spec") {
        Err(e) => vec![e],
        Ok(spec) => {
            let mut errors = Vec::new();
            check_quantities(spec.as_ref().and_then(|s| s.hard.as_ref()), "spec.hard", &mut errors);
            for name in spec.as_ref().and_then(|s| s.hard.as_ref()).into_iter().flat_map(|hard| hard.keys()) {
                let counted = name
                    .strip_prefix("count/")
                    .is_some_and(|_| crate::registry::ALL.iter().any(|r| countable(r) && count_name(r) == *name));
                if !(COMPUTE_RESOURCES.contains(&name.as_str()) || name == ARTIFACT_STORAGE || counted) {
                    let mut supported = COMPUTE_RESOURCES.to_vec();
                    supported.push(ARTIFACT_STORAGE);
                    supported.push("count/<plural>[.<group>] of a kind, as count/pods or count/plugins.kapsel.io");
                    errors.push(FieldError::not_supported(format!("spec.hard[{name}]"), name, &supported));
                }
            }
            if spec.as_ref().is_some_and(|s| s.scopes.is_some() || s.scope_selector.is_some()) {
                errors.push(FieldError::forbidden("spec.scopes", "quota scopes are not supported: a quota applies to its whole namespace"));
            }
            errors
        }
    }
}

/// Amounts of quota-tracked resources, by resource name (`requests.cpu`, `pods`, …).
pub type Usage = BTreeMap<String, Quantity>;

/// The resource names a quota may limit besides `count/<resource>`.
pub const COMPUTE_RESOURCES: &[&str] =
    &["pods", "cpu", "memory", "requests.cpu", "requests.memory", "limits.cpu", "limits.memory", "requests.storage"];

/// Whether a quota may count objects of `resource`: namespaced kinds that
/// clients create (not Events, which the platform records, nor quotas themselves).
pub fn countable(resource: &ResourceType) -> bool {
    resource.namespaced() && !matches!(resource.kind, "Event" | "ResourceQuota")
}

/// The name under which a quota counts objects of `resource`:
/// `count/pods`, `count/plugins.kapsel.io`.
pub fn count_name(resource: &ResourceType) -> String {
    if resource.group.is_empty() { format!("count/{}", resource.plural) } else { format!("count/{}.{}", resource.plural, resource.group) }
}

fn hard(quota: &Value) -> String {
    let Some(hard) = quota.pointer("/spec/hard").and_then(Value::as_object) else {
        return "<none>".into();
    };
    hard.iter().map(|(k, v)| format!("{k}: {}", v.as_str().unwrap_or_default())).collect::<Vec<_>>().join(", ")
}
