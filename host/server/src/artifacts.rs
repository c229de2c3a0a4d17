//! Workload images: pushing a component into an `Artifact`, fetching it
//! back (node agents, by digest), and resolving a pod's `image`.
//!
//! `POST /apis/kapsel.io/v1alpha1/namespaces/{ns}/artifacts/{name}/push?tag=T`
//! (served by `crate::http::artifacts`) takes the component's bytes (at most [`MAX_PUSH_BYTES`]), checks they
//! are a WebAssembly component (not a core module), stores them once by
//! sha256 in the blob store — shared by every namespace, so the same bytes
//! pushed twice are stored once —, adds the image to the artifact (created
//! on first push) and points the tag at it. The artifact's write goes the
//! way of any write: admission reviews it as a `CREATE` or `UPDATE` of the
//! `Artifact` (a policy that denies it denies the push), and it is charged
//! to the namespace's quotas (`count/artifacts.kapsel.io`, and the bytes of
//! its images as `kapsel.io/artifact-storage`) in one atomic store write
//! (`quota.rs`); a refused push stores no artifact, and is refused before
//! its bytes are stored when the quotas as they stand refuse it. `GET …/artifacts/{name}/blobs/{digest}`
//! returns the bytes of one of the artifact's images to whoever may read
//! the artifact (the namespace's tenants, node agents): an artifact can only
//! lead to bytes its own namespace pushed.
//!
//! Blobs nothing references are collected ([`collect_blobs`], a controller
//! pass every [`BLOB_COLLECTION_INTERVAL`]): what no artifact's images
//! (any namespace) nor plug-in's active or previous component names, and
//! was last stored more than [`BLOB_GRACE`] ago — the bytes of deleted
//! artifacts and of pushes that failed after storing them. A push stores
//! (or re-stamps) its bytes before writing the artifact, so the grace
//! period covers a push in progress.

use std::collections::HashSet;
use std::time::Duration;

use kapsel_admission::Operation;
use kapsel_api::kinds::artifact::{ARTIFACT, ArtifactImage, ArtifactSpec, ImageReference, valid_tag};
use kapsel_api::kinds::plugin::PLUGIN;
use kapsel_api::{FieldError, object};
use kapsel_store::{Key, Store, StoreError, WriteOp};
use serde_json::{Value, json};

use crate::admission::Write;
use crate::auth::{Identity, Verb, authorize};
use crate::error::ApiError;
use crate::objects::Written;
use crate::operation::Context;
use crate::{App, quota};

/// The largest component a push accepts, server-wide (64 MiB): a bigger
/// upload is refused with 413 `RequestEntityTooLarge` naming the limit,
/// before it is read past it. Quotas (`kapsel.io/artifact-storage`) bound
/// what a namespace keeps in total.
pub const MAX_PUSH_BYTES: usize = 64 << 20;

/// How many times a push retries when the artifact changes underneath it.
const PUSH_RETRIES: usize = 5;

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

/// Whether the caller may push to the artifact `name` in `namespace` under
/// `tag` (rights, names, a namespace that takes new content): checked
/// before the image's bytes are read.
pub async fn may_push(app: &App, identity: &Identity, namespace: &str, name: &str, tag: &str) -> Result<(), ApiError> {
    authorize(identity, Verb::Create, &ARTIFACT, Some(namespace))?;
    authorize(identity, Verb::Update, &ARTIFACT, Some(namespace))?;
    if let Err(message) = (ARTIFACT.validate_name)(name) {
        return Err(invalid(name, "metadata.name", message));
    }
    if !valid_tag(tag) {
        return Err(invalid(name, "tag", "a tag is 1-128 letters, digits, '_', '.' or '-', not starting with '.' or '-'"));
    }
    crate::objects::require_namespace(app, namespace).await
}

/// Pushes an image (`bytes`, whose digest is `digest`) to the artifact
/// `name` in `namespace` and points `tag` at it: the artifact's write is
/// reviewed and charged as any create or update; the bytes are stored
/// once the quotas as they are let it.
pub async fn push(
    app: &App,
    ctx: &Context,
    namespace: &str,
    name: &str,
    tag: &str,
    bytes: Vec<u8>,
    digest: String,
) -> Result<Written, ApiError> {
    let identity = &ctx.identity;
    may_push(app, identity, namespace, name, tag).await?;
    let (namespace, name, tag) = (namespace.to_string(), name.to_string(), tag.to_string());
    check_component(&bytes).map_err(|message| invalid(&name, "component", message))?;
    let image = Image { digest: &digest, size: u64::try_from(bytes.len()).unwrap_or(u64::MAX), tag: &tag };
    let key = Key::new(ARTIFACT.store_key(), &namespace, &name);
    let mut stored = false;
    for _ in 0..PUSH_RETRIES {
        let current = match app.store.get(&key).await {
            Ok(current) => Some(current),
            Err(StoreError::NotFound) => None,
            Err(error) => return Err(ApiError::from_store(error, &ARTIFACT, &name)),
        };
        let next = pushed(current.as_ref(), &namespace, &name, &image)?;
        // The artifact's write is reviewed and charged as any create or update is.
        let write = Write {
            resource: &ARTIFACT,
            operation: if current.is_some() { Operation::Update } else { Operation::Create },
            namespace: Some(&namespace),
            name: &name,
            object: Some(&next),
            old_object: current.as_ref(),
            dry_run: false,
        };
        let warnings = app.admission.admit(&app.store, identity, write).await?;
        let charge = quota::charge_for(app, &ARTIFACT, &namespace, &name, current.as_ref(), Some(&next)).await?;
        if !stored {
            // Refused before any byte is stored, when the quotas as they are now refuse it.
            if let Some(charge) = &charge {
                quota::check(app, charge).await?;
            }
            app.store.put_blob(&digest, &bytes).await.map_err(|e| ApiError::from_store(e, &ARTIFACT, &name))?;
            stored = true;
        }
        let op = match &current {
            Some(current) => WriteOp::Update { key: key.clone(), object: next, expected_revision: revision(current) },
            None => WriteOp::Create { key: key.clone(), object: next },
        };
        let written = match charge {
            Some(charge) => quota::commit(app, charge, op).await?,
            None => app.store.write(op).await,
        };
        match written.and_then(|changes| changes.into_iter().next().ok_or_else(|| StoreError::Corrupt("a write reported no change".into())))
        {
            Ok(change) => {
                tracing::info!(artifact = %format!("{namespace}/{name}"), %tag, %digest, bytes = bytes.len(), "image pushed");
                return Ok(Written { object: (*change.object).clone(), warnings });
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

/// The image a push adds.
struct Image<'a> {
    digest: &'a str,
    size: u64,
    tag: &'a str,
}

/// The artifact as a push of `image` leaves it: `current` (or a new
/// artifact) with the image added unless it has it, and the tag pointed at it.
fn pushed(current: Option<&Value>, namespace: &str, name: &str, image: &Image<'_>) -> Result<Value, ApiError> {
    let now = object::now();
    let mut spec: ArtifactSpec = match current {
        Some(current) => serde_json::from_value(current.get("spec").cloned().unwrap_or_default())
            .map_err(|e| ApiError::internal("reading the stored artifact", e))?,
        None => ArtifactSpec::default(),
    };
    if !spec.images.iter().any(|i| i.digest == image.digest) {
        spec.images.push(ArtifactImage { digest: image.digest.to_string(), size: image.size, pushed_at: now.clone() });
    }
    spec.tags.insert(image.tag.to_string(), image.digest.to_string());
    let spec = serde_json::to_value(&spec).map_err(|e| ApiError::internal("encoding the artifact", e))?;
    let next = match current {
        Some(current) => {
            let mut next = current.clone();
            next["spec"] = spec;
            let generation = next.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(1);
            next["metadata"]["generation"] = json!(generation.saturating_add(1));
            next
        }
        None => {
            let mut new = object::new_object(&ARTIFACT.api_version(), ARTIFACT.kind, Some(namespace), name);
            new["spec"] = spec;
            new
        }
    };
    let errors = (ARTIFACT.validate)(&next);
    if !errors.is_empty() {
        return Err(ApiError::invalid(&ARTIFACT, name, errors));
    }
    Ok(next)
}

fn revision(object: &Value) -> Option<i64> {
    object::resource_version(object).and_then(Result::ok)
}

/// The bytes of the image `digest` of the artifact `name` in `namespace`.
pub async fn blob(app: &App, ctx: &Context, namespace: &str, name: &str, digest: &str) -> Result<Vec<u8>, ApiError> {
    authorize(&ctx.identity, Verb::Get, &ARTIFACT, Some(namespace))?;
    let artifact =
        app.store.get(&Key::new(ARTIFACT.store_key(), namespace, name)).await.map_err(|e| ApiError::from_store(e, &ARTIFACT, name))?;
    let spec: ArtifactSpec = serde_json::from_value(artifact.get("spec").cloned().unwrap_or_default())
        .map_err(|e| ApiError::internal("reading the stored artifact", e))?;
    if !spec.images.iter().any(|i| i.digest == digest) {
        return Err(ApiError::NotFound { resource: format!("{}/blobs", ARTIFACT.plural), name: format!("{name}@{digest}") });
    }
    app.store.get_blob(digest).await.map_err(|e| ApiError::from_store(e, &ARTIFACT, name))
}

/// How long a stored blob is kept though nothing references it: longer
/// than any push or plug-in upload takes from storing its bytes to writing
/// the object that references them, so collection never takes a blob from
/// under a write in progress.
pub const BLOB_GRACE: Duration = Duration::from_secs(10 * 60);

/// How often blobs nothing references are collected.
pub const BLOB_COLLECTION_INTERVAL: Duration = Duration::from_secs(5 * 60);

/// Every digest a stored object references: the images of every
/// namespace's artifacts, and each plug-in's active and previous
/// components (kept for rollback).
pub async fn referenced_blobs(store: &Store) -> Result<HashSet<String>, StoreError> {
    let mut referenced = HashSet::new();
    for artifact in store.list(&ARTIFACT.store_key(), None).await?.objects {
        let images = artifact.pointer("/spec/images").and_then(Value::as_array).into_iter().flatten();
        referenced.extend(images.filter_map(|image| image.get("digest").and_then(Value::as_str)).map(str::to_string));
    }
    for plugin in store.list(&PLUGIN.store_key(), None).await?.objects {
        for field in ["/spec/digest", "/spec/previousDigest"] {
            referenced.extend(plugin.pointer(field).and_then(Value::as_str).filter(|d| !d.is_empty()).map(str::to_string));
        }
    }
    Ok(referenced)
}

/// One collection: removes the blobs nothing references (read first, so a
/// blob referenced by a write after the reading was stored just before it,
/// within `grace`) that were last stored more than `grace` ago; returns
/// their digests. Blobs of deleted artifacts, of pushes that failed after
/// storing their bytes, and plug-in components no longer active nor
/// previous go this way.
pub async fn collect_blobs_once(store: &Store, grace: Duration) -> Result<Vec<String>, StoreError> {
    let referenced = referenced_blobs(store).await?;
    let removed = store.collect_blobs(&referenced, grace).await?;
    if !removed.is_empty() {
        tracing::info!(blobs = removed.len(), digests = ?removed, "removed blobs nothing references");
    }
    Ok(removed)
}

/// One pass of the blob collector (every [`BLOB_COLLECTION_INTERVAL`]), with [`BLOB_GRACE`].
pub async fn collect_blobs(app: App) {
    if let Err(error) = collect_blobs_once(&app.store, BLOB_GRACE).await {
        tracing::warn!(error = &error as &dyn std::error::Error, "collecting unreferenced blobs failed; trying again later");
    }
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
