//! `ConfigMap` and `Secret`: a Secret's `stringData` is folded into `data`
//! on every write (so it is stored, read and watched as `data` only); once
//! either is marked `immutable`, its data and the mark stay, and a Secret's
//! `type` never changes.

use async_trait::async_trait;
use kapsel_api::ResourceType;
use kapsel_api::kinds::config::{CONFIG_MAP, SECRET, fold_string_data};
use serde_json::Value;

use super::{Strategy, forbidden};
use crate::App;
use crate::auth::Identity;
use crate::error::ApiError;

/// The strategy of one of the two configuration kinds.
#[derive(Debug)]
pub struct Configuration(&'static ResourceType);

pub static CONFIG_MAPS: Configuration = Configuration(&CONFIG_MAP);
pub static SECRETS: Configuration = Configuration(&SECRET);

impl Configuration {
    fn is_secret(&self) -> bool {
        std::ptr::eq(self.0, &SECRET)
    }

    /// The fields an immutable object keeps.
    fn data_fields(&self) -> &'static [&'static str] {
        if self.is_secret() { &["data"] } else { &["data", "binaryData"] }
    }
}

#[async_trait]
impl Strategy for Configuration {
    async fn prepare_for_create(
        &self,
        _app: &App,
        _identity: &Identity,
        _namespace: Option<&str>,
        object: &mut Value,
    ) -> Result<Option<String>, ApiError> {
        if self.is_secret() {
            fold_string_data(object);
        }
        Ok(None)
    }

    fn prepare_for_update(&self, current: &Value, next: &mut Value) -> Result<(), ApiError> {
        if self.is_secret() {
            fold_string_data(next);
            let kind = |secret: &Value| secret.get("type").and_then(Value::as_str).unwrap_or(kapsel_api::kinds::config::OPAQUE).to_string();
            if kind(current) != kind(next) {
                return Err(forbidden(self.0, current, "type", "field is immutable"));
            }
        }
        if current.get("immutable").and_then(Value::as_bool) == Some(true) {
            if next.get("immutable").and_then(Value::as_bool) != Some(true) {
                return Err(forbidden(self.0, current, "immutable", "field is immutable when `immutable` is set"));
            }
            for field in self.data_fields() {
                let map = |object: &Value| object.get(*field).filter(|v| !v.is_null()).cloned();
                if map(current) != map(next) {
                    return Err(forbidden(self.0, current, *field, "field is immutable when `immutable` is set"));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn immutable_data_stays_and_so_does_the_mark() {
        let frozen = json!({"metadata": {"name": "c"}, "immutable": true, "data": {"a": "1"}});
        let mut changed = json!({"metadata": {"name": "c"}, "immutable": true, "data": {"a": "2"}});
        assert!(CONFIG_MAPS.prepare_for_update(&frozen, &mut changed).unwrap_err().to_string().contains("data"));
        let mut thawed = json!({"metadata": {"name": "c"}, "immutable": false, "data": {"a": "1"}});
        assert!(CONFIG_MAPS.prepare_for_update(&frozen, &mut thawed).unwrap_err().to_string().contains("immutable"));
        let mut relabelled = json!({"metadata": {"name": "c", "labels": {"x": "y"}}, "immutable": true, "data": {"a": "1"}});
        assert!(CONFIG_MAPS.prepare_for_update(&frozen, &mut relabelled).is_ok());
    }

    #[test]
    fn a_secret_keeps_its_type_and_string_data_counts_as_data() {
        let secret = json!({"metadata": {"name": "s"}, "type": "Opaque", "immutable": true, "data": {"a": "MQ=="}});
        let mut same_by_string = json!({"metadata": {"name": "s"}, "immutable": true, "stringData": {"a": "1"}});
        assert!(SECRETS.prepare_for_update(&secret, &mut same_by_string).is_ok());
        assert_eq!(same_by_string["data"]["a"], "MQ==");
        let mut retyped = json!({"metadata": {"name": "s"}, "type": "kubernetes.io/tls", "immutable": true, "data": {"a": "MQ=="}});
        assert!(SECRETS.prepare_for_update(&secret, &mut retyped).unwrap_err().to_string().contains("type"));
    }
}
