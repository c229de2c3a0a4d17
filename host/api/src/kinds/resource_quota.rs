//! `ResourceQuota` (core v1, namespaced): IT's hard limits on what a
//! namespace may request (`requests.cpu`, `pods`, `count/<resource>`, …).

use k8s_openapi::api::core::v1::ResourceQuotaSpec;
use serde_json::Value;

use super::{check_quantities, roundtrip, typed};
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
            errors
        }
    }
}

fn hard(quota: &Value) -> String {
    let Some(hard) = quota.pointer("/spec/hard").and_then(Value::as_object) else {
        return "<none>".into();
    };
    hard.iter().map(|(k, v)| format!("{k}: {}", v.as_str().unwrap_or_default())).collect::<Vec<_>>().join(", ")
}
