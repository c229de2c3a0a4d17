//! `Artifact` (`kapsel.io/v1alpha1`, namespaced): a tenant's workload
//! image — Wasm components pushed with `kapsel push FILE NAME:TAG`, named
//! by the artifact (`NAME`), each stored once by its sha256 in the
//! platform's blob store (shared and deduplicated across namespaces), with
//! tags pointing at them. A pod's `image` is `NAME:TAG` or
//! `NAME@sha256:<hex>`, resolved in the pod's namespace.
//!
//! `spec.images` is written by pushes only (so an artifact can only point
//! at bytes its namespace pushed); `spec.tags` may be moved by tenants
//! between the artifact's images.
//!
//! A `ResourceQuota` limits how many artifacts a namespace has
//! (`count/artifacts.kapsel.io`) and the bytes of their images
//! ([`ARTIFACT_STORAGE`]); pushes are charged to both.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::plugin::valid_digest;
use super::typed;
use crate::registry::{Column, ResourceType, Scope, TenantAccess};
use crate::validation::{FieldError, dns1123_subdomain};

pub static ARTIFACT: ResourceType = ResourceType {
    group: crate::KAPSEL_GROUP,
    version: crate::KAPSEL_VERSION,
    kind: "Artifact",
    plural: "artifacts",
    singular: "artifact",
    short_names: &["art"],
    scope: Scope::Namespaced,
    tenant_access: TenantAccess::Workload,
    selectable_fields: &[],
    status_subresource: false,
    typed_roundtrip: None,
    validate_name: dns1123_subdomain,
    validate,
    columns: &[
        Column { name: "Tags", wide: false, value: tags_column },
        Column {
            name: "Images",
            wide: false,
            value: |a| a.pointer("/spec/images").and_then(Value::as_array).map_or(0, Vec::len).to_string(),
        },
    ],
};

/// The quota resource of the bytes a namespace's artifacts hold: the sum
/// of the sizes of every image of every artifact (`spec.images[].size`).
pub const ARTIFACT_STORAGE: &str = "kapsel.io/artifact-storage";

/// One pushed component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactImage {
    /// `sha256:<hex>` of the component's bytes.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
    /// When it was first pushed (RFC 3339).
    pub pushed_at: String,
}

/// `spec` of an `Artifact`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactSpec {
    /// Tag → digest of one of `images`.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// The components pushed under this name.
    #[serde(default)]
    pub images: Vec<ArtifactImage>,
}

impl ArtifactSpec {
    /// The digest `reference` (a tag, or `sha256:…`) names, if this artifact has it.
    pub fn resolve(&self, reference: &ImageReference) -> Option<&str> {
        match reference {
            ImageReference::Tag { tag, .. } => self.tags.get(tag).map(String::as_str),
            ImageReference::Digest { digest, .. } => self.images.iter().find(|i| &i.digest == digest).map(|i| i.digest.as_str()),
        }
    }
}

/// A pod's `image`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageReference {
    /// `NAME:TAG` (`NAME` alone means `NAME:latest`).
    Tag { name: String, tag: String },
    /// `NAME@sha256:<hex>`.
    Digest { name: String, digest: String },
}

impl ImageReference {
    /// Parses `NAME:TAG`, `NAME` or `NAME@sha256:<hex>`; says what is wrong otherwise.
    pub fn parse(image: &str) -> Result<ImageReference, String> {
        let (name, reference) = match image.split_once('@') {
            Some((name, digest)) => {
                if !valid_digest(digest) {
                    return Err(format!("{image:?}: the digest must be sha256: and 64 lowercase hex digits"));
                }
                (name, ImageReference::Digest { name: name.to_string(), digest: digest.to_string() })
            }
            None => {
                let (name, tag) = image.rsplit_once(':').unwrap_or((image, "latest"));
                if !valid_tag(tag) {
                    return Err(format!("{image:?}: the tag must be 1-128 letters, digits, '_', '.' or '-', not starting with '.' or '-'"));
                }
                (name, ImageReference::Tag { name: name.to_string(), tag: tag.to_string() })
            }
        };
        dns1123_subdomain(name).map_err(|e| format!("{image:?}: the name is an Artifact's name in the pod's namespace: {e}"))?;
        Ok(reference)
    }

    pub fn name(&self) -> &str {
        match self {
            ImageReference::Tag { name, .. } | ImageReference::Digest { name, .. } => name,
        }
    }
}

/// Whether `tag` is a valid tag (as OCI's: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`).
pub fn valid_tag(tag: &str) -> bool {
    !tag.is_empty()
        && tag.len() <= 128
        && tag.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        && !tag.starts_with(['.', '-'])
}

fn validate(object: &Value) -> Vec<FieldError> {
    let spec: ArtifactSpec = match typed::<Option<ArtifactSpec>>(object, "spec") {
        Ok(spec) => spec.unwrap_or_default(),
        Err(e) => return vec![e],
    };
    let mut errors = Vec::new();
    for (i, image) in spec.images.iter().enumerate() {
        if !valid_digest(&image.digest) {
            errors.push(FieldError::invalid(format!("spec.images[{i}].digest"), "must be sha256: and 64 lowercase hex digits"));
        }
    }
    for (tag, digest) in &spec.tags {
        if !valid_tag(tag) {
            errors.push(FieldError::invalid(format!("spec.tags[{tag}]"), "a tag is 1-128 letters, digits, '_', '.' or '-'"));
        } else if !spec.images.iter().any(|i| &i.digest == digest) {
            errors.push(FieldError::not_found(format!("spec.tags[{tag}]"), format!("{digest} is not one of this artifact's images")));
        }
    }
    errors
}

fn tags_column(artifact: &Value) -> String {
    let tags: Vec<&String> = artifact.pointer("/spec/tags").and_then(Value::as_object).map(|t| t.keys().collect()).unwrap_or_default();
    if tags.is_empty() { "<none>".into() } else { tags.iter().map(|t| t.as_str()).collect::<Vec<_>>().join(",") }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn image_references_are_names_with_a_tag_or_a_digest() {
        assert_eq!(ImageReference::parse("hello:1").unwrap(), ImageReference::Tag { name: "hello".into(), tag: "1".into() });
        assert_eq!(ImageReference::parse("hello").unwrap(), ImageReference::Tag { name: "hello".into(), tag: "latest".into() });
        let pinned = format!("hello@{DIGEST}");
        assert_eq!(ImageReference::parse(&pinned).unwrap(), ImageReference::Digest { name: "hello".into(), digest: DIGEST.into() });
        assert!(ImageReference::parse("hello@sha256:short").unwrap_err().contains("digest"));
        assert!(ImageReference::parse("Hello:1").unwrap_err().contains("Artifact's name"));
        assert!(ImageReference::parse("hello:-x").unwrap_err().contains("tag"));
    }

    #[test]
    fn tags_point_at_the_artifacts_own_images() {
        let image = json!({"digest": DIGEST, "size": 10, "pushedAt": "2026-01-01T00:00:00Z"});
        let good = json!({"spec": {"tags": {"1": DIGEST}, "images": [image]}});
        assert!(validate(&good).is_empty());
        let spec: ArtifactSpec = serde_json::from_value(good["spec"].clone()).unwrap();
        assert_eq!(spec.resolve(&ImageReference::parse("x:1").unwrap()), Some(DIGEST));
        assert_eq!(spec.resolve(&ImageReference::parse("x:2").unwrap()), None);
        let dangling = json!({"spec": {"tags": {"1": DIGEST}, "images": []}});
        assert_eq!(validate(&dangling)[0].field, "spec.tags[1]");
    }
}
