//! Workload images: pushing a component into an `Artifact`, fetching it
//! back (node agents, by digest), and resolving a pod's `image`.
//!
//! `POST /apis/kapsel.io/v1alpha1/namespaces/{ns}/artifacts/{name}/push?tag=T`
//! takes the component's bytes (at most [`MAX_IMAGE_BYTES`]), checks they
//! are a WebAssembly component (not a core module), stores them once by
//! sha256 in the blob store — shared by every namespace, so the same bytes
//! pushed twice are stored once —, adds the image to the artifact (created
//! on first push) and points the tag at it. `GET …/artifacts/{name}/blobs/{digest}`
//! returns the bytes of one of the artifact's images to whoever may read
//! the artifact (the namespace's tenants, node agents): an artifact can only
//! lead to bytes its own namespace pushed.

use axum::Extension;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use kapsel_api::kinds::artifact::{ARTIFACT, ArtifactImage, ArtifactSpec, ImageReference, valid_tag};
use kapsel_api::{FieldError, object};
use kapsel_store::{Key, Store, StoreError};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::App;
use crate::auth::{Identity, Verb, authorize};
use crate::error::ApiError;

/// The largest component a push accepts.
pub const MAX_IMAGE_BYTES: usize = 64 << 20;

/// How many times a push retries when the artifact changes underneath it.
const PUSH_RETRIES: usize = 5;

#[derive(Debug, Deserialize)]
pub struct PushQuery {
    /// The tag to point at the pushed image (default `latest`).
    tag: Option<String>,
}

fn invalid(name: &str, field: &str, message: impl Into<String>) -> ApiError {
    ApiError::invalid(&ARTIFACT, name, vec![FieldError::invalid(field, message.into())])
}

/// Says why `bytes` are not a WebAssembly component, if they are not.
fn check_component(bytes: &[u8]) -> Result<(), String> {
    const COMPONENT: [u8; 8] = *b"\0asm\x0d\0\x01\0";
    const CORE_MODULE: [u8; 8] = *b"\0asm\x01\0\0\0";
    match bytes.get(..8) {
        Some(header) if header == COMPONENT => Ok(()),
        Some(header) if header == CORE_MODULE => {
            Err("a core WebAssembly module, not a component: build for the wasm32-wasip2 target (a binary crate's .wasm is a wasi:cli command component)".into())
        }
        _ => Err("not a WebAssembly component".into()),
    }
}

/// `POST …/namespaces/{namespace}/artifacts/{name}/push?tag=T`: push an image.
pub async fn push(
    State(app): State<App>,
    Extension(identity): Extension<Identity>,
    Path((namespace, name)): Path<(String, String)>,
    Query(query): Query<PushQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    authorize(&identity, Verb::Create, &ARTIFACT, Some(&namespace))?;
    authorize(&identity, Verb::Update, &ARTIFACT, Some(&namespace))?;
    if let Err(message) = (ARTIFACT.validate_name)(&name) {
        return Err(invalid(&name, "metadata.name", message));
    }
    let tag = query.tag.unwrap_or_else(|| "latest".into());
    if !valid_tag(&tag) {
        return Err(invalid(&name, "tag", "a tag is 1-128 letters, digits, '_', '.' or '-', not starting with '.' or '-'"));
    }
    crate::resources::require_namespace(&app, &namespace).await?;
    let (bytes, digest) = crate::body::receive_blob(&headers, body, MAX_IMAGE_BYTES).await?;
    check_component(&bytes).map_err(|message| invalid(&name, "component", message))?;
    app.store.put_blob(&digest, &bytes).await.map_err(|e| ApiError::from_store(e, &ARTIFACT, &name))?;
    let key = Key::new(ARTIFACT.store_key(), &namespace, &name);
    for _ in 0..PUSH_RETRIES {
        let current = match app.store.get(&key).await {
            Ok(current) => Some(current),
            Err(StoreError::NotFound) => None,
            Err(error) => return Err(ApiError::from_store(error, &ARTIFACT, &name)),
        };
        let mut spec: ArtifactSpec = match &current {
            Some(current) => serde_json::from_value(current.get("spec").cloned().unwrap_or_default())
                .map_err(|e| ApiError::internal("reading the stored artifact", e))?,
            None => ArtifactSpec::default(),
        };
        if !spec.images.iter().any(|i| i.digest == digest) {
            let pushed_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            spec.images.push(ArtifactImage { digest: digest.clone(), size: bytes.len() as u64, pushed_at });
        }
        spec.tags.insert(tag.clone(), digest.clone());
        let spec = serde_json::to_value(&spec).map_err(|e| ApiError::internal("encoding the artifact", e))?;
        let written = match current {
            Some(mut current) => {
                let expected = object::resource_version(&current).and_then(Result::ok);
                current["spec"] = spec;
                let generation = current.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(1);
                current["metadata"]["generation"] = json!(generation + 1);
                app.store.update(key.clone(), current, expected).await
            }
            None => {
                let artifact = json!({
                    "apiVersion": ARTIFACT.api_version(), "kind": ARTIFACT.kind,
                    "metadata": {"name": name, "namespace": namespace, "uid": uuid::Uuid::new_v4().to_string(),
                                 "creationTimestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true), "generation": 1},
                    "spec": spec,
                });
                app.store.create(key.clone(), artifact).await
            }
        };
        match written {
            Ok(change) => {
                tracing::info!(artifact = %format!("{namespace}/{name}"), %tag, %digest, bytes = bytes.len(), "image pushed");
                return Ok((StatusCode::OK, axum::Json((*change.object).clone())).into_response());
            }
            // Another push (or a tag edit) got there first: do it again on the new version.
            Err(StoreError::Conflict { .. } | StoreError::AlreadyExists) => continue,
            Err(error) => return Err(ApiError::from_store(error, &ARTIFACT, &name)),
        }
    }
    Err(ApiError::Conflict {
        resource: ARTIFACT.plural.into(),
        name,
        reason: "the artifact kept changing while the image was pushed; push again".into(),
    })
}

/// `GET …/namespaces/{namespace}/artifacts/{name}/blobs/{digest}`: an image's bytes.
pub async fn blob(
    State(app): State<App>,
    Extension(identity): Extension<Identity>,
    Path((namespace, name, digest)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    authorize(&identity, Verb::Get, &ARTIFACT, Some(&namespace))?;
    let artifact =
        app.store.get(&Key::new(ARTIFACT.store_key(), &namespace, &name)).await.map_err(|e| ApiError::from_store(e, &ARTIFACT, &name))?;
    let spec: ArtifactSpec = serde_json::from_value(artifact.get("spec").cloned().unwrap_or_default())
        .map_err(|e| ApiError::internal("reading the stored artifact", e))?;
    if !spec.images.iter().any(|i| i.digest == digest) {
        return Err(ApiError::NotFound { resource: format!("{}/blobs", ARTIFACT.plural), name: format!("{name}@{digest}") });
    }
    let bytes = app.store.get_blob(&digest).await.map_err(|e| ApiError::from_store(e, &ARTIFACT, &name))?;
    Ok(([(header::CONTENT_TYPE, "application/wasm")], bytes).into_response())
}

/// Why the images of a pod to be created cannot be run, as field errors
/// (`spec.containers[0].image`): a malformed reference, or one no
/// `Artifact` of the namespace has.
pub async fn check_pod_images(store: &Store, namespace: &str, pod: &Value) -> Result<Vec<FieldError>, StoreError> {
    let mut errors = Vec::new();
    for list in ["initContainers", "containers"] {
        let containers = pod.pointer(&format!("/spec/{list}")).and_then(Value::as_array).cloned().unwrap_or_default();
        for (i, container) in containers.iter().enumerate() {
            let Some(image) = container.get("image").and_then(Value::as_str).filter(|i| !i.is_empty()) else { continue };
            let field = format!("spec.{list}[{i}].image");
            let reference = match ImageReference::parse(image) {
                Ok(reference) => reference,
                Err(message) => {
                    errors.push(FieldError::invalid(field, message));
                    continue;
                }
            };
            let artifact = match store.get(&Key::new(ARTIFACT.store_key(), namespace, reference.name())).await {
                Ok(artifact) => Some(artifact),
                Err(StoreError::NotFound) => None,
                Err(error) => return Err(error),
            };
            let spec: Option<ArtifactSpec> = artifact.and_then(|a| serde_json::from_value(a.get("spec").cloned().unwrap_or_default()).ok());
            if spec.as_ref().and_then(|s| s.resolve(&reference)).is_none() {
                let message = format!(
                    "image {image:?} not found in namespace {namespace:?}: push it with `kapsel push FILE {} -n {namespace}`",
                    match &reference {
                        ImageReference::Tag { name, tag } => format!("{name}:{tag}"),
                        ImageReference::Digest { name, .. } => format!("{name}:TAG"),
                    }
                );
                errors.push(FieldError::not_found(field, message));
            }
        }
    }
    Ok(errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_components_are_images() {
        assert!(check_component(b"\0asm\x0d\0\x01\0rest").is_ok());
        assert!(check_component(b"\0asm\x01\0\0\0rest").unwrap_err().contains("wasm32-wasip2"));
        assert!(check_component(b"#!/bin/sh").unwrap_err().contains("not a WebAssembly component"));
    }
}
