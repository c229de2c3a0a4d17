//! `ResourceClass` (`kapsel.io/v1alpha1`, cluster-scoped, written by IT
//! admins, read by everyone): a named size such as `best-effort-small` or
//! `guaranteed-medium`, as vSphere's VM classes. A pod that names one in
//! `spec.resourceClassName` gets its `requests` and `limits` for every
//! container (the server fills them in; see `kapsel-server`'s `classes`).
//! A namespace may restrict the classes its pods use with the annotation
//! [`ALLOWED_CLASSES_ANNOTATION`].

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity as K8sQuantity;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{check_quantities, required_spec, text_at};
use crate::quantity::Quantity;
use crate::registry::{Column, ResourceType, Scope, TenantAccess};
use crate::validation::{FieldError, dns1123_subdomain};

pub static RESOURCE_CLASS: ResourceType = ResourceType {
    group: crate::KAPSEL_GROUP,
    version: crate::KAPSEL_VERSION,
    kind: "ResourceClass",
    plural: "resourceclasses",
    singular: "resourceclass",
    short_names: &["rclass"],
    scope: Scope::Cluster,
    tenant_access: TenantAccess::ClusterReadable,
    selectable_fields: &[],
    status_subresource: false,
    typed_roundtrip: None,
    validate_name: dns1123_subdomain,
    validate,
    columns: &[
        Column { name: "CPU", wide: false, value: |c| amounts(c, "cpu") },
        Column { name: "Memory", wide: false, value: |c| amounts(c, "memory") },
        Column { name: "Description", wide: false, value: |c| text_at(c, "spec.description") },
    ],
};

/// The namespace annotation listing the classes its pods may name
/// (comma-separated); without it, every class. Only IT admins write namespaces.
pub const ALLOWED_CLASSES_ANNOTATION: &str = "kapsel.io/resource-classes";

/// The spec of a resource class: what each container of a pod naming it gets.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResourceClassSpec {
    /// What the class is for, shown by `kapsel get resourceclasses`.
    #[serde(default)]
    pub description: String,
    /// Each container's requests.
    #[serde(default)]
    pub requests: BTreeMap<String, K8sQuantity>,
    /// Each container's limits.
    #[serde(default)]
    pub limits: BTreeMap<String, K8sQuantity>,
}

fn validate(object: &Value) -> Vec<FieldError> {
    let spec: ResourceClassSpec = match required_spec(object) {
        Ok(spec) => spec,
        Err(e) => return vec![e],
    };
    let mut errors = Vec::new();
    if spec.requests.is_empty() && spec.limits.is_empty() {
        errors.push(FieldError::required("spec.requests").with_message("a class sets requests, limits or both"));
    }
    check_quantities(Some(&spec.requests), "spec.requests", &mut errors);
    check_quantities(Some(&spec.limits), "spec.limits", &mut errors);
    for (resource, request) in &spec.requests {
        let limit = spec.limits.get(resource).map(|l| Quantity::parse(&l.0));
        if let (Ok(request), Some(Ok(limit))) = (Quantity::parse(&request.0), limit)
            && request > limit
        {
            errors.push(FieldError::invalid(
                format!("spec.requests.{resource}"),
                format!("must be less than or equal to {resource} limit of {limit}"),
            ));
        }
    }
    errors
}

/// `request / limit` of one resource, for the table.
fn amounts(class: &Value, resource: &str) -> String {
    let at = |field: &str| class.pointer(&format!("/spec/{field}/{resource}")).and_then(Value::as_str).unwrap_or("-").to_string();
    format!("{} / {}", at("requests"), at("limits"))
}
