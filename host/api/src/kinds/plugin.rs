//! `Plugin` (`kapsel.io/v1alpha1`, cluster-scoped, IT admins only): a Wasm
//! component that extends the platform through one of the worlds of
//! `wit/`. Its bytes are uploaded to `…/plugins/{name}/component` and
//! stored by digest; the object records which digest is active, the one
//! before it (for rollback), the failure policy, the sandbox limits and the
//! configuration passed to the guest.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{text_at, typed};
use crate::registry::{Column, ResourceType, Scope, TenantAccess};
use crate::validation::{FieldError, dns1123_label};

pub static PLUGIN: ResourceType = ResourceType {
    group: crate::KAPSEL_GROUP,
    version: crate::KAPSEL_VERSION,
    kind: "Plugin",
    plural: "plugins",
    singular: "plugin",
    short_names: &["pl"],
    scope: Scope::Cluster,
    tenant_access: TenantAccess::None,
    selectable_fields: &["spec.world", "status.phase"],
    status_subresource: true,
    typed_roundtrip: None,
    validate_name: dns1123_label,
    validate,
    columns: &[
        Column { name: "World", wide: false, value: |p| text_at(p, "spec.world") },
        Column { name: "Version", wide: false, value: |p| text_at(p, "spec.version") },
        Column { name: "Phase", wide: false, value: |p| text_at(p, "status.phase") },
        Column { name: "Digest", wide: true, value: |p| text_at(p, "spec.digest") },
        Column { name: "Message", wide: true, value: |p| text_at(p, "status.message") },
    ],
};

/// The worlds a plug-in may target (`wit/kapsel-plugin@0.1.0`).
pub const WORLDS: &[&str] = &["scheduler-extension", "storage-driver", "network-driver"];

/// What the caller does when a call to the plug-in fails.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum FailurePolicy {
    /// The operation fails, with a Status naming the plug-in and the failure.
    #[default]
    Fail,
    /// The call is skipped and an Event says so.
    Ignore,
}

/// Sandbox limits of each call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PluginLimits {
    /// Longest a call may run (default 100 ms).
    #[serde(default = "default_deadline")]
    pub deadline_milliseconds: u64,
    /// Most linear memory an instance may hold (default 64 MiB).
    #[serde(default = "default_memory")]
    pub memory_bytes: u64,
}

fn default_deadline() -> u64 {
    100
}

fn default_weight() -> u32 {
    1
}

fn default_memory() -> u64 {
    64 << 20
}

impl Default for PluginLimits {
    fn default() -> Self {
        PluginLimits { deadline_milliseconds: default_deadline(), memory_bytes: default_memory() }
    }
}

/// `spec` of a `Plugin`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PluginSpec {
    pub world: String,
    /// The author's version label, shown in tables.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub version: String,
    /// `sha256:<hex>` of the active component; set by uploads.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub digest: String,
    /// The digest active before the last upload, for `rollback`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub previous_digest: String,
    /// The version label that went with `previous_digest`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub previous_version: String,
    #[serde(default)]
    pub failure_policy: FailurePolicy,
    #[serde(default)]
    pub limits: PluginLimits,
    /// For scheduler extensions: how much their scores count against the
    /// built-in least-allocated score (weight 1), 1–100.
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Passed to the guest's `configure`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, String>,
}

impl Default for PluginSpec {
    fn default() -> Self {
        PluginSpec {
            world: String::new(),
            version: String::new(),
            digest: String::new(),
            previous_digest: String::new(),
            previous_version: String::new(),
            failure_policy: FailurePolicy::default(),
            limits: PluginLimits::default(),
            weight: default_weight(),
            config: BTreeMap::new(),
        }
    }
}

/// Checks a `sha256:<64 hex>` digest.
pub fn valid_digest(digest: &str) -> bool {
    digest
        .strip_prefix("sha256:")
        .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()))
}

fn validate(object: &Value) -> Vec<FieldError> {
    let spec: PluginSpec = match typed(object, "spec") {
        Ok(spec) => spec,
        Err(e) => return vec![e],
    };
    let mut errors = Vec::new();
    if spec.world.is_empty() {
        errors.push(FieldError::required("spec.world"));
    } else if !WORLDS.contains(&spec.world.as_str()) {
        errors.push(FieldError::not_supported("spec.world", &spec.world, WORLDS));
    }
    for (field, digest) in [("spec.digest", &spec.digest), ("spec.previousDigest", &spec.previous_digest)] {
        if !digest.is_empty() && !valid_digest(digest) {
            errors.push(FieldError::invalid(field, "must be sha256: and 64 lowercase hex digits"));
        }
    }
    if !(1..=60_000).contains(&spec.limits.deadline_milliseconds) {
        errors.push(FieldError::invalid("spec.limits.deadlineMilliseconds", "must be between 1 and 60000"));
    }
    if !(1..=100).contains(&spec.weight) {
        errors.push(FieldError::invalid("spec.weight", "must be between 1 and 100"));
    }
    if !((1 << 20)..=(1 << 30)).contains(&spec.limits.memory_bytes) {
        errors.push(FieldError::invalid("spec.limits.memoryBytes", "must be between 1 MiB and 1 GiB"));
    }
    errors
}
