//! `Artifact`: its images are written by pushes only (`crate::artifacts`),
//! so an artifact leads only to bytes its own namespace pushed; tags may
//! point at its images.

use async_trait::async_trait;
use kapsel_api::kinds::artifact::ARTIFACT;
use serde_json::Value;

use super::{Strategy, forbidden};
use crate::App;
use crate::auth::Identity;
use crate::error::ApiError;

/// Why `spec.images` cannot be written through the generic API.
const IMAGES_BY_PUSH: &str = "written by pushes only (`kapsel push FILE NAME:TAG`); tags may point at the artifact's images";

#[derive(Debug)]
pub struct Artifacts;

#[async_trait]
impl Strategy for Artifacts {
    async fn prepare_for_create(
        &self,
        _app: &App,
        _identity: &Identity,
        _namespace: Option<&str>,
        artifact: &mut Value,
    ) -> Result<Option<String>, ApiError> {
        if artifact.pointer("/spec/images").and_then(Value::as_array).is_some_and(|images| !images.is_empty()) {
            return Err(forbidden(&ARTIFACT, artifact, "spec.images", IMAGES_BY_PUSH));
        }
        Ok(None)
    }

    fn prepare_for_update(&self, current: &Value, next: &mut Value) -> Result<(), ApiError> {
        if current.pointer("/spec/images") != next.pointer("/spec/images") {
            return Err(forbidden(&ARTIFACT, current, "spec.images", IMAGES_BY_PUSH));
        }
        Ok(())
    }
}
