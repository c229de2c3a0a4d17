//! `Plugin`: its component digests (and its world, once set) are written by
//! uploads and rollbacks only (`crate::plugins`); a new plug-in waits for
//! its first upload (`Pending`). A write is answered once the registry of
//! active plug-ins has acted on it (loaded, reloaded, stopped).

use async_trait::async_trait;
use kapsel_api::kinds::plugin::PLUGIN;
use serde_json::{Value, json};

use super::{Strategy, forbidden};
use crate::App;
use crate::auth::Identity;
use crate::error::ApiError;

#[derive(Debug)]
pub struct Plugins;

#[async_trait]
impl Strategy for Plugins {
    async fn prepare_for_create(
        &self,
        _app: &App,
        _identity: &Identity,
        _namespace: Option<&str>,
        plugin: &mut Value,
    ) -> Result<Option<String>, ApiError> {
        for field in ["digest", "previousDigest", "previousVersion"] {
            if plugin.pointer(&format!("/spec/{field}")).is_some_and(|v| v.as_str() != Some("")) {
                let message = "set by uploads: create the plug-in, then `kapsel plugin push` its component";
                return Err(forbidden(&PLUGIN, plugin, format!("spec.{field}"), message));
            }
        }
        plugin["status"] = json!({"phase": "Pending", "message": "no component uploaded yet"});
        Ok(None)
    }

    fn prepare_for_update(&self, current: &Value, next: &mut Value) -> Result<(), ApiError> {
        for field in ["world", "digest", "previousDigest", "previousVersion"] {
            if current.pointer(&format!("/spec/{field}")) != next.pointer(&format!("/spec/{field}")) {
                let message = "set by uploads: use `kapsel plugin push` or `kapsel plugin rollback`";
                return Err(forbidden(&PLUGIN, current, format!("spec.{field}"), message));
            }
        }
        Ok(())
    }

    async fn after_commit(&self, app: &App, revision: i64) {
        app.plugins.caught_up(revision).await;
    }
}
