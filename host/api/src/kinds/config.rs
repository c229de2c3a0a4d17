//! `ConfigMap` and `Secret` (core v1, namespaced): configuration a pod reads
//! as environment variables (`env[].valueFrom`, `envFrom`) or as files
//! (`volumes[].configMap|secret`). A key is what a file name may be
//! (`[-._a-zA-Z0-9]+`, at most 253 characters, not `.` or `..`); a map's
//! data is at most 1 MiB in all, as in Kubernetes. A Secret's `data` holds
//! base64; `stringData` is written as plain text and folded into `data` by
//! the server on every write (a key in both takes `stringData`'s value).
//! Either kind marked `immutable: true` keeps its data, and the mark, for
//! good. A Secret is readable only by a namespace's `edit` and `owner`
//! roles ([`TenantAccess::Confidential`]).

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;

use super::roundtrip;
use crate::registry::{Column, ResourceType, Scope, TenantAccess};
use crate::validation::{FieldError, dns1123_subdomain};

/// The most a ConfigMap's or a Secret's data may hold in all (Kubernetes' limit).
pub const MAX_DATA_BYTES: usize = 1 << 20;

/// The longest key.
const MAX_KEY_LENGTH: usize = 253;

pub static CONFIG_MAP: ResourceType = ResourceType {
    group: "",
    version: "v1",
    kind: "ConfigMap",
    plural: "configmaps",
    singular: "configmap",
    short_names: &["cm"],
    scope: Scope::Namespaced,
    tenant_access: TenantAccess::Workload,
    selectable_fields: &[],
    status_subresource: false,
    typed_roundtrip: Some(roundtrip::<k8s_openapi::api::core::v1::ConfigMap>),
    validate_name: dns1123_subdomain,
    validate: validate_config_map,
    columns: &[Column { name: "Data", wide: false, value: config_map_count }],
};

pub static SECRET: ResourceType = ResourceType {
    group: "",
    version: "v1",
    kind: "Secret",
    plural: "secrets",
    singular: "secret",
    short_names: &[],
    scope: Scope::Namespaced,
    tenant_access: TenantAccess::Confidential,
    selectable_fields: &["type"],
    status_subresource: false,
    typed_roundtrip: Some(roundtrip::<k8s_openapi::api::core::v1::Secret>),
    validate_name: dns1123_subdomain,
    validate: validate_secret,
    columns: &[
        Column { name: "Type", wide: false, value: |secret| secret.get("type").and_then(Value::as_str).unwrap_or(OPAQUE).to_string() },
        Column { name: "Data", wide: false, value: |secret| map_len(secret, "data").to_string() },
    ],
};

/// A Secret's default `type`.
pub const OPAQUE: &str = "Opaque";

fn map_len(object: &Value, field: &str) -> usize {
    object.get(field).and_then(Value::as_object).map_or(0, serde_json::Map::len)
}

fn config_map_count(config_map: &Value) -> String {
    (map_len(config_map, "data") + map_len(config_map, "binaryData")).to_string()
}

/// Whether `key` may name an entry of a ConfigMap or Secret (and so a file).
pub fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > MAX_KEY_LENGTH {
        return Err(format!("must be 1 to {MAX_KEY_LENGTH} characters"));
    }
    if key == "." || key == ".." {
        return Err("must not be '.' or '..'".into());
    }
    if !key.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')) {
        return Err("a valid config key must consist of alphanumeric characters, '-', '_' or '.'".into());
    }
    Ok(())
}

/// The entries of the map at `object[field]`: each value must be a string.
fn entries<'a>(object: &'a Value, field: &str, errors: &mut Vec<FieldError>) -> BTreeMap<&'a str, &'a str> {
    let mut found = BTreeMap::new();
    match object.get(field) {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => {
            for (key, value) in map {
                if let Err(problem) = check_key(key) {
                    errors.push(FieldError::invalid(format!("{field}[{key}]"), problem));
                }
                match value.as_str() {
                    Some(text) => {
                        found.insert(key.as_str(), text);
                    }
                    None => errors.push(FieldError::invalid(format!("{field}[{key}]"), "must be a string")),
                }
            }
        }
        Some(_) => errors.push(FieldError::invalid(field, "must be a map of keys to strings")),
    }
    found
}

fn check_size(total: usize, field: &str, errors: &mut Vec<FieldError>) {
    if total > MAX_DATA_BYTES {
        errors.push(FieldError::invalid(field, format!("the data may not be more than {MAX_DATA_BYTES} bytes in all (got {total})")));
    }
}

fn check_immutable_field(object: &Value, errors: &mut Vec<FieldError>) {
    if object.get("immutable").is_some_and(|v| !v.is_null() && !v.is_boolean()) {
        errors.push(FieldError::invalid("immutable", "must be true or false"));
    }
}

fn validate_config_map(config_map: &Value) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let data = entries(config_map, "data", &mut errors);
    let binary = entries(config_map, "binaryData", &mut errors);
    let mut total = 0;
    for (key, value) in &binary {
        match STANDARD.decode(value) {
            Ok(bytes) => total += bytes.len(),
            Err(_) => errors.push(FieldError::invalid(format!("binaryData[{key}]"), "must be base64")),
        }
        if data.contains_key(key) {
            errors.push(FieldError::duplicate(format!("binaryData[{key}]"), key).with_message("the key is also in data"));
        }
    }
    total += data.iter().map(|(key, value)| key.len() + value.len()).sum::<usize>();
    check_size(total, "data", &mut errors);
    check_immutable_field(config_map, &mut errors);
    errors
}

fn validate_secret(secret: &Value) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let data = entries(secret, "data", &mut errors);
    let plain = entries(secret, "stringData", &mut errors);
    let mut total = plain.iter().map(|(key, value)| key.len() + value.len()).sum::<usize>();
    for (key, value) in &data {
        match STANDARD.decode(value) {
            Ok(bytes) => total += key.len() + bytes.len(),
            Err(_) => errors.push(FieldError::invalid(format!("data[{key}]"), "must be base64")),
        }
    }
    check_size(total, "data", &mut errors);
    match secret.get("type") {
        None | Some(Value::Null) => {}
        Some(Value::String(kind)) if !kind.is_empty() && kind.len() <= MAX_KEY_LENGTH => {}
        Some(_) => errors.push(FieldError::invalid("type", "must be a non-empty string of at most 253 characters")),
    }
    check_immutable_field(secret, &mut errors);
    errors
}

/// A Secret's `data` decoded, by key (values that are not base64 are left out).
pub fn secret_data(secret: &Value) -> BTreeMap<String, Vec<u8>> {
    let Some(data) = secret.get("data").and_then(Value::as_object) else { return BTreeMap::new() };
    data.iter().filter_map(|(key, value)| Some((key.clone(), STANDARD.decode(value.as_str()?).ok()?))).collect()
}

/// A ConfigMap's `data` and `binaryData` together, by key.
pub fn config_map_data(config_map: &Value) -> BTreeMap<String, Vec<u8>> {
    let mut all = BTreeMap::new();
    for (key, value) in config_map.get("data").and_then(Value::as_object).into_iter().flatten() {
        if let Some(text) = value.as_str() {
            all.insert(key.clone(), text.as_bytes().to_vec());
        }
    }
    for (key, value) in config_map.get("binaryData").and_then(Value::as_object).into_iter().flatten() {
        if let Some(bytes) = value.as_str().and_then(|text| STANDARD.decode(text).ok()) {
            all.insert(key.clone(), bytes);
        }
    }
    all
}

/// Folds a Secret's `stringData` into `data` (base64), as the API server
/// does on every write; a key in both takes `stringData`'s value. A
/// `stringData` that is not a map of strings is left for validation to refuse.
pub fn fold_string_data(secret: &mut Value) {
    let Some(object) = secret.as_object_mut() else { return };
    match object.get("stringData") {
        Some(Value::Object(plain)) if plain.values().all(Value::is_string) => {}
        Some(Value::Null) => {
            object.remove("stringData");
            return;
        }
        _ => return,
    }
    let Some(Value::Object(plain)) = object.remove("stringData") else { return };
    let data = object.entry("data").or_insert_with(|| Value::Object(Default::default()));
    if !data.is_object() {
        *data = Value::Object(Default::default());
    }
    if let Some(data) = data.as_object_mut() {
        for (key, value) in plain {
            if let Some(text) = value.as_str() {
                data.insert(key, Value::String(STANDARD.encode(text)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn keys_are_file_names() {
        for good in ["a", "app.properties", "TOKEN_1", "-x", "a.b-c_d"] {
            assert!(check_key(good).is_ok(), "{good}");
        }
        for bad in ["", ".", "..", "a/b", "a b", "ä", &"k".repeat(254)] {
            assert!(check_key(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_config_map_over_a_mebibyte_or_with_bad_entries_is_refused() {
        let big = json!({"data": {"a": "x".repeat(MAX_DATA_BYTES)}});
        assert!(validate_config_map(&big).iter().any(|e| e.field == "data"));
        let errors = validate_config_map(&json!({"data": {"a/b": "x", "n": 1}, "binaryData": {"c": "!!"}}));
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["data[a/b]", "data[n]", "binaryData[c]"]);
        let both = validate_config_map(&json!({"data": {"k": "x"}, "binaryData": {"k": "eA=="}}));
        assert_eq!(both.len(), 1, "{both:?}");
    }

    #[test]
    fn string_data_is_folded_into_data_and_wins() {
        let mut secret = json!({"data": {"a": STANDARD.encode("old"), "b": STANDARD.encode("kept")}, "stringData": {"a": "new"}});
        fold_string_data(&mut secret);
        assert!(secret.get("stringData").is_none());
        let data = secret_data(&secret);
        assert_eq!(data["a"], b"new");
        assert_eq!(data["b"], b"kept");
        let mut only_plain = json!({"stringData": {"token": "s3cret"}});
        fold_string_data(&mut only_plain);
        assert_eq!(secret_data(&only_plain)["token"], b"s3cret");
    }

    #[test]
    fn secret_data_must_be_base64_and_fit() {
        assert!(validate_secret(&json!({"data": {"a": "not base64!"}})).iter().any(|e| e.field == "data[a]"));
        let big = json!({"stringData": {"a": "x".repeat(MAX_DATA_BYTES)}});
        assert!(validate_secret(&big).iter().any(|e| e.field == "data"));
        assert!(validate_secret(&json!({"type": 3})).iter().any(|e| e.field == "type"));
        assert!(validate_secret(&json!({"type": "kubernetes.io/tls", "data": {"tls.crt": "eA=="}})).is_empty());
    }
}
