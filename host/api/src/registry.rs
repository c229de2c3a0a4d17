//! The registry of served resource kinds.
//!
//! A kind is a [`ResourceType`] value in [`ALL`]: its names, scope, which
//! fields it can be selected by, how tenants may touch it, and its
//! validation. The server, the store and the CLI are generic over this
//! table, so adding a kind is a module in `kinds/` plus one line here.

use serde_json::Value;

use crate::kinds;
use crate::validation::FieldError;

/// Whether objects of a kind live in a namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Namespaced,
    Cluster,
}

/// What tenants (non-admin users) may do with a kind; IT admins may do everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TenantAccess {
    /// Namespaced workload objects: `view` reads, `edit` and `owner` write.
    Workload,
    /// Namespaced objects that may hold credentials (Secrets): `edit` and
    /// `owner` read and write; `view` cannot read them, as in Kubernetes.
    Confidential,
    /// Namespaced objects IT sets for a namespace (quotas, limit ranges, events):
    /// every role reads, only IT admins write.
    ReadOnly,
    /// Namespaced objects a namespace's owners manage (their own admission
    /// policies): every role reads, `owner` writes.
    NamespaceOwned,
    /// The `Namespace` kind itself: tenants read the namespaces they hold a role in.
    OwnNamespaces,
    /// Cluster-scoped objects every authenticated user may read (nodes).
    ClusterReadable,
    /// Only IT admins may see or touch these (tokens, cluster policy).
    None,
}

/// One served kind: the registration that makes the API, store and CLI serve it.
#[derive(Debug)]
pub struct ResourceType {
    /// API group; empty for the core group (`/api/v1`).
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub short_names: &'static [&'static str],
    pub scope: Scope,
    pub tenant_access: TenantAccess,
    /// Field paths a field selector may use beyond `metadata.name`/`metadata.namespace`.
    pub selectable_fields: &'static [&'static str],
    /// Whether `status` is a subresource: writes to the object keep the
    /// stored status, and `…/status` writes change only the status.
    pub status_subresource: bool,
    /// Decodes the whole object into its typed shape and encodes it back;
    /// fields that do not survive are unknown (see [`crate::fields`]).
    /// `None` for kinds without a complete typed shape.
    pub typed_roundtrip: Option<fn(&Value) -> Option<Value>>,
    /// Checks the object's name.
    pub validate_name: fn(&str) -> Result<(), String>,
    /// Checks everything but `metadata` (which the server checks for every kind).
    pub validate: fn(&Value) -> Vec<FieldError>,
    /// Columns for tables (`kapsel get`, `kubectl get`): header and how to read it.
    pub columns: &'static [Column],
}

/// A table column of a kind beyond Name (and Namespace) and Age.
#[derive(Debug)]
pub struct Column {
    /// As Kubernetes names it (`Ready`, `IP`); tables print it upper-cased.
    pub name: &'static str,
    /// Only shown with `-o wide`.
    pub wide: bool,
    pub value: fn(&Value) -> String,
}

impl ResourceType {
    /// `v1` for the core group, `group/version` otherwise.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() { self.version.to_string() } else { format!("{}/{}", self.group, self.version) }
    }

    pub fn namespaced(&self) -> bool {
        self.scope == Scope::Namespaced
    }

    /// The key the store files objects of this kind under: `pods`, `tokens.kapsel.io`.
    pub fn store_key(&self) -> String {
        if self.group.is_empty() { self.plural.to_string() } else { format!("{}.{}", self.plural, self.group) }
    }

    /// The URL prefix of this kind's group and version: `/api/v1` or `/apis/kapsel.io/v1alpha1`.
    pub fn group_version_path(&self) -> String {
        if self.group.is_empty() { format!("/api/{}", self.version) } else { format!("/apis/{}/{}", self.group, self.version) }
    }

    /// The collection URL of this kind in `namespace` (ignored for cluster-scoped kinds).
    pub fn collection_path(&self, namespace: Option<&str>) -> String {
        match (self.scope, namespace) {
            (Scope::Namespaced, Some(ns)) => format!("{}/namespaces/{ns}/{}", self.group_version_path(), self.plural),
            _ => format!("{}/{}", self.group_version_path(), self.plural),
        }
    }
}

/// Every kind Kapsel serves.
pub static ALL: &[&ResourceType] = &[
    &kinds::namespace::NAMESPACE,
    &kinds::pod::POD,
    &kinds::node::NODE,
    &kinds::resource_quota::RESOURCE_QUOTA,
    &kinds::limit_range::LIMIT_RANGE,
    &kinds::event::EVENT,
    &kinds::lease::LEASE,
    &kinds::token::TOKEN,
    &kinds::plugin::PLUGIN,
    &kinds::admission_policy::CLUSTER_ADMISSION_POLICY,
    &kinds::admission_policy::ADMISSION_POLICY,
    &kinds::resource_class::RESOURCE_CLASS,
    &kinds::workload_template::CLUSTER_WORKLOAD_TEMPLATE,
    &kinds::workload_template::WORKLOAD_TEMPLATE,
    &kinds::artifact::ARTIFACT,
    &kinds::config::CONFIG_MAP,
    &kinds::config::SECRET,
    &kinds::service::SERVICE,
];

/// The kind served at `group`/`version` under the plural `resource`.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static ResourceType> {
    ALL.iter().copied().find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// The kind with this `apiVersion` and `kind`, as written in a manifest.
pub fn by_kind(api_version: &str, kind: &str) -> Option<&'static ResourceType> {
    ALL.iter().copied().find(|r| r.kind == kind && r.api_version() == api_version)
}

/// The kind a user means by `name` on the command line: plural, singular,
/// short name or kind, case-insensitively, optionally qualified by group (`tokens.kapsel.io`).
pub fn resolve(name: &str) -> Option<&'static ResourceType> {
    let lower = name.to_ascii_lowercase();
    let (base, group) = match lower.split_once('.') {
        Some((base, group)) => (base.to_string(), Some(group.to_string())),
        None => (lower.clone(), None),
    };
    ALL.iter().copied().find(|r| {
        group.as_deref().is_none_or(|g| g == r.group)
            && (r.plural == base || r.singular == base || r.kind.eq_ignore_ascii_case(&base) || r.short_names.contains(&base.as_str()))
    })
}

/// Groups served, each with its one version, in discovery order.
pub fn groups() -> Vec<(&'static str, &'static str)> {
    let mut groups: Vec<(&str, &str)> = Vec::new();
    for r in ALL {
        if !groups.contains(&(r.group, r.version)) {
            groups.push((r.group, r.version));
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_cli_names() {
        assert_eq!(resolve("po").unwrap().kind, "Pod");
        assert_eq!(resolve("Pods").unwrap().kind, "Pod");
        assert_eq!(resolve("ns").unwrap().kind, "Namespace");
        assert_eq!(resolve("tokens.kapsel.io").unwrap().kind, "Token");
        assert!(resolve("widgets").is_none());
    }

    #[test]
    fn paths_and_keys() {
        let pod = resolve("pod").unwrap();
        assert_eq!(pod.collection_path(Some("dev")), "/api/v1/namespaces/dev/pods");
        assert_eq!(pod.store_key(), "pods");
        let token = resolve("token").unwrap();
        assert_eq!(token.collection_path(None), "/apis/kapsel.io/v1alpha1/tokens");
        assert_eq!(token.store_key(), "tokens.kapsel.io");
        assert_eq!(by_kind("v1", "Namespace").unwrap().plural, "namespaces");
    }
}
