//! `Artifact`: its images are written by pushes only (`crate::artifacts`),
//! so an artifact leads only to bytes its own namespace pushed; tags may
//! point at its images. An artifact uses the bytes of its images of its
//! namespace's quota as `kapsel.io/artifact-storage`: each image counts its
//! full size, though the blob store keeps one copy of equal bytes — what a
//! namespace pushed is what it is charged.

use async_trait::async_trait;
use kapsel_api::Quantity;
use kapsel_api::kinds::artifact::{ARTIFACT, ARTIFACT_STORAGE, ArtifactSpec};
use kapsel_api::kinds::resource_quota::Usage;
use serde::Deserialize as _;
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
    fn usage(&self, artifact: &Value, usage: &mut Usage) {
        // An artifact that does not parse uses no bytes; sizes beyond i64::MAX count as i64::MAX.
        let spec: ArtifactSpec = artifact.get("spec").and_then(|spec| ArtifactSpec::deserialize(spec).ok()).unwrap_or_default();
        let bytes = spec.images.iter().map(|image| Quantity::from_units(i64::try_from(image.size).unwrap_or(i64::MAX))).sum();
        usage.insert(ARTIFACT_STORAGE.into(), bytes);
    }

    fn usage_names(&self) -> &'static [&'static str] {
        &[ARTIFACT_STORAGE]
    }

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
