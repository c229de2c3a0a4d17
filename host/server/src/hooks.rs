//! Kind-specific steps of the generic request path, kept in one place:
//! a `Token` gets its secret generated and only the hash stored (the
//! secret is returned once, in the create response's `status.token`);
//! a `Namespace` starts `Active`.

use kapsel_api::ResourceType;
use kapsel_api::kinds::namespace::NAMESPACE;
use kapsel_api::kinds::token::TOKEN;
use serde_json::{Value, json};

use crate::auth::{Identity, hash_secret, new_secret};
use crate::error::ApiError;

/// Runs before validation on create; may return a secret to show once.
pub fn before_create(resource: &ResourceType, _identity: &Identity, object: &mut Value) -> Result<Option<String>, ApiError> {
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
    }
    Ok(None)
}

/// Adds what is shown once (a new token's secret) to the create response.
pub fn after_create(resource: &ResourceType, answer: &mut Value, shown_once: Option<String>) {
    if let (true, Some(secret)) = (std::ptr::eq(resource, &TOKEN), shown_once) {
        answer["status"] = json!({"token": secret});
    }
}

/// Refuses changes to fields that are fixed after create.
pub fn before_update(resource: &ResourceType, current: &Value, next: &Value) -> Result<(), ApiError> {
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
