//! `LimitRange` (core v1, namespaced): IT's per-container defaults, minimums
//! and maximums in a namespace.

use k8s_openapi::api::core::v1::LimitRangeSpec;
use serde_json::Value;

use super::{check_quantities, roundtrip, typed};
use crate::registry::{ResourceType, Scope, TenantAccess};
use crate::validation::{FieldError, dns1123_subdomain};

pub static LIMIT_RANGE: ResourceType = ResourceType {
    group: "",
    version: "v1",
    kind: "LimitRange",
    plural: "limitranges",
    singular: "limitrange",
    short_names: &["limits"],
    scope: Scope::Namespaced,
    tenant_access: TenantAccess::ReadOnly,
    selectable_fields: &[],
    status_subresource: false,
    typed_roundtrip: Some(roundtrip::<k8s_openapi::api::core::v1::LimitRange>),
    validate_name: dns1123_subdomain,
    validate,
    columns: &[],
};

const LIMIT_TYPES: &[&str] = &["Container", "Pod", "PersistentVolumeClaim"];

fn validate(object: &Value) -> Vec<FieldError> {
    let spec: LimitRangeSpec = match typed(object, "spec") {
        Ok(spec) => spec,
        Err(e) if object.get("spec").is_none() => return vec![FieldError::required(e.field)],
        Err(e) => return vec![e],
    };
    let mut errors = Vec::new();
    for (i, item) in spec.limits.iter().enumerate() {
        let at = format!("spec.limits[{i}]");
        if !LIMIT_TYPES.contains(&item.type_.as_str()) {
            errors.push(FieldError::not_supported(format!("{at}.type"), &item.type_, LIMIT_TYPES));
        }
        check_quantities(item.default.as_ref(), &format!("{at}.default"), &mut errors);
        check_quantities(item.default_request.as_ref(), &format!("{at}.defaultRequest"), &mut errors);
        check_quantities(item.min.as_ref(), &format!("{at}.min"), &mut errors);
        check_quantities(item.max.as_ref(), &format!("{at}.max"), &mut errors);
        check_quantities(item.max_limit_request_ratio.as_ref(), &format!("{at}.maxLimitRequestRatio"), &mut errors);
    }
    errors
}
