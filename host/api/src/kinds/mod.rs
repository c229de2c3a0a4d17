//! One module per served kind: its registration ([`crate::ResourceType`])
//! and validation. Core kinds validate through their `k8s-openapi` types,
//! so a field of the wrong type is reported with its exact path.

pub mod admission_policy;
pub mod artifact;
pub mod config;
pub mod event;
pub mod lease;
pub mod limit_range;
pub mod namespace;
pub mod node;
pub mod plugin;
pub mod pod;
pub mod resource_class;
pub mod resource_quota;
pub mod service;
pub mod token;
pub mod workload_template;

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity as K8sQuantity;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::quantity::Quantity;
use crate::validation::FieldError;

/// Deserializes `object[field]` into `T`, reporting a type error at its full path.
/// A missing field reads as `null` (so `Option`/defaulted types accept it).
pub(crate) fn typed<T: DeserializeOwned>(object: &Value, field: &str) -> Result<T, FieldError> {
    let value = object.get(field).unwrap_or(&Value::Null);
    serde_path_to_error::deserialize(value).map_err(|e| {
        let inner = e.path().to_string();
        let path = if inner == "." { field.to_string() } else { format!("{field}.{inner}") };
        FieldError::invalid(path, e.inner().to_string())
    })
}

/// The required `spec` of `object` as `T`: `spec` missing or null is
/// `Required`, a field of the wrong type is reported at its full path.
pub(crate) fn required_spec<T: DeserializeOwned>(object: &Value) -> Result<T, FieldError> {
    if object.get("spec").is_none_or(Value::is_null) {
        return Err(FieldError::required("spec"));
    }
    typed(object, "spec")
}

/// Checks that every value of a resource map parses as a non-negative quantity.
pub(crate) fn check_quantities(map: Option<&BTreeMap<String, K8sQuantity>>, path: &str, errors: &mut Vec<FieldError>) {
    for (resource, quantity) in map.into_iter().flatten() {
        match Quantity::parse(&quantity.0) {
            Ok(q) if q.is_negative() => {
                errors.push(FieldError::invalid(format!("{path}.{resource}"), "must be greater than or equal to 0"))
            }
            Ok(_) => {}
            Err(e) => errors.push(FieldError::invalid(format!("{path}.{resource}"), e.to_string())),
        }
    }
}

/// A string at a dotted path of a JSON object, for table columns.
pub(crate) fn text_at(object: &Value, path: &str) -> String {
    let mut current = Some(object);
    for part in path.split('.') {
        current = current.and_then(|c| c.get(part));
    }
    match current {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "<none>".into(),
        Some(other) => other.to_string(),
    }
}

/// Decodes `object` as `T` and encodes it back (for unknown-field detection).
pub(crate) fn roundtrip<T: DeserializeOwned + serde::Serialize>(object: &Value) -> Option<Value> {
    let typed = T::deserialize(object).ok()?;
    serde_json::to_value(typed).ok()
}

pub(crate) fn no_spec_checks(_: &Value) -> Vec<FieldError> {
    Vec::new()
}
