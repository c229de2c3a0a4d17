//! `Token` (`kapsel.io/v1alpha1`, cluster-scoped, IT admins only): a bearer
//! token's identity and grants. Only the SHA-256 of the secret is stored
//! (`spec.secretHash`); the secret itself is shown once, when created.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{text_at, typed};
use crate::registry::{Column, ResourceType, Scope, TenantAccess};
use crate::validation::{FieldError, dns1123_label, dns1123_subdomain};

pub static TOKEN: ResourceType = ResourceType {
    group: crate::KAPSEL_GROUP,
    version: crate::KAPSEL_VERSION,
    kind: "Token",
    plural: "tokens",
    singular: "token",
    short_names: &[],
    scope: Scope::Cluster,
    tenant_access: TenantAccess::None,
    selectable_fields: &["spec.user"],
    status_subresource: false,
    typed_roundtrip: None,
    validate_name: dns1123_subdomain,
    validate,
    columns: &[
        Column { name: "User", wide: false, value: |t| text_at(t, "spec.user") },
        Column { name: "Admin", wide: false, value: |t| t.pointer("/spec/admin").and_then(Value::as_bool).unwrap_or(false).to_string() },
        Column { name: "Roles", wide: false, value: roles_column },
        Column { name: "Node", wide: false, value: |t| text_at(t, "spec.node") },
    ],
};

/// A namespace role, as vSphere namespaces grant them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read everything in the namespace.
    View,
    /// `view` plus create, update and delete workloads.
    Edit,
    /// `edit` plus the namespace's own policies.
    Owner,
}

impl Role {
    pub const NAMES: &'static [&'static str] = &["view", "edit", "owner"];

    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "view" => Some(Role::View),
            "edit" => Some(Role::Edit),
            "owner" => Some(Role::Owner),
            _ => None,
        }
    }
}

/// A role in one namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceRole {
    pub namespace: String,
    pub role: Role,
}

/// `spec` of a `Token`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenSpec {
    /// The user this token authenticates as.
    pub user: String,
    /// IT admin: every verb on every kind in every namespace.
    #[serde(default)]
    pub admin: bool,
    #[serde(default)]
    pub roles: Vec<NamespaceRole>,
    /// `sha256:<hex>` of the secret; set by the server.
    #[serde(default)]
    pub secret_hash: String,
    /// RFC 3339 expiry; none means it lasts until revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// A node agent's token: it may touch only this `Node`, its lease, and
    /// the pods bound to it (their status, their deletion), and read pods,
    /// nodes and images. Not with `admin` or `roles`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// The user a node token authenticates as, as Kubernetes names kubelets.
pub fn node_user(node: &str) -> String {
    format!("system:node:{node}")
}

fn validate(object: &Value) -> Vec<FieldError> {
    let spec: TokenSpec = match typed(object, "spec") {
        Ok(spec) => spec,
        Err(e) => return vec![e],
    };
    let mut errors = Vec::new();
    if spec.user.trim().is_empty() {
        errors.push(FieldError::required("spec.user"));
    }
    for (i, role) in spec.roles.iter().enumerate() {
        if let Err(e) = dns1123_label(&role.namespace) {
            errors.push(FieldError::invalid(format!("spec.roles[{i}].namespace"), e));
        }
    }
    if let Some(node) = &spec.node {
        if let Err(e) = dns1123_subdomain(node) {
            errors.push(FieldError::invalid("spec.node", e));
        }
        if spec.admin {
            errors.push(FieldError::forbidden("spec.admin", "a node token cannot be an IT admin's"));
        }
        if !spec.roles.is_empty() {
            errors.push(FieldError::forbidden("spec.roles", "a node token holds no namespace roles"));
        }
    }
    if let Some(expiry) = &spec.expires_at
        && chrono::DateTime::parse_from_rfc3339(expiry).is_err()
    {
        errors.push(FieldError::invalid("spec.expiresAt", "must be an RFC 3339 time"));
    }
    errors
}

fn roles_column(token: &Value) -> String {
    let roles: Vec<NamespaceRole> = typed::<TokenSpec>(token, "spec").map(|s| s.roles).unwrap_or_default();
    if roles.is_empty() {
        return "<none>".into();
    }
    roles
        .iter()
        .map(|r| {
            format!("{}:{}", r.namespace, serde_json::to_value(r.role).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default())
        })
        .collect::<Vec<_>>()
        .join(",")
}
