//! Admission policies in Rego, split as Kubewarden splits them:
//! `ClusterAdmissionPolicy` (`kapsel.io/v1alpha1`, cluster-scoped, IT
//! admins; applies wherever it matches) and `AdmissionPolicy` (namespaced:
//! a namespace owner's own policy, applying only inside that namespace —
//! it can only add restrictions, since every matching policy must admit).
//!
//! Their `spec` ([`PolicySpec`]): the Rego source and extra modules it
//! imports (`libs`), which requests it sees (`match`), its `parameters`
//! (`input.parameters`), what a violation does (`enforcement`), the Rego
//! dialect (`regoVersion`: `v1` by default, `v0` for Gatekeeper's library
//! text), what a policy that errors does (`failurePolicy`) and which kinds
//! of existing objects it reads as `data.inventory` (`inventory.kinds`, as
//! Gatekeeper's referential policies do). That the Rego compiles is checked
//! by the server (kapsel-admission) on create and update; this module checks
//! the shape.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector as K8sLabelSelector;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{text_at, typed};
use crate::registry::{Column, ResourceType, Scope, TenantAccess};
use crate::selector::LabelSelector;
use crate::validation::{FieldError, dns1123_label, dns1123_subdomain};

const COLUMNS: &[Column] = &[
    Column { name: "Enforcement", wide: false, value: |p| text_at(p, "spec.enforcement") },
    Column { name: "Kinds", wide: false, value: kinds_column },
    Column { name: "Loaded", wide: false, value: |p| text_at(p, "status.loaded") },
    Column { name: "Violations", wide: false, value: |p| text_at(p, "status.audit.totalViolations") },
    Column { name: "Message", wide: true, value: |p| text_at(p, "status.message") },
];

pub static CLUSTER_ADMISSION_POLICY: ResourceType = ResourceType {
    group: crate::KAPSEL_GROUP,
    version: crate::KAPSEL_VERSION,
    kind: "ClusterAdmissionPolicy",
    plural: "clusteradmissionpolicies",
    singular: "clusteradmissionpolicy",
    short_names: &["cap"],
    scope: Scope::Cluster,
    tenant_access: TenantAccess::ClusterReadable,
    selectable_fields: &["spec.enforcement"],
    status_subresource: true,
    typed_roundtrip: None,
    validate_name: dns1123_subdomain,
    validate,
    columns: COLUMNS,
};

pub static ADMISSION_POLICY: ResourceType = ResourceType {
    group: crate::KAPSEL_GROUP,
    version: crate::KAPSEL_VERSION,
    kind: "AdmissionPolicy",
    plural: "admissionpolicies",
    singular: "admissionpolicy",
    short_names: &["ap"],
    scope: Scope::Namespaced,
    tenant_access: TenantAccess::NamespaceOwned,
    selectable_fields: &["spec.enforcement"],
    status_subresource: true,
    typed_roundtrip: None,
    validate_name: dns1123_label,
    validate,
    columns: COLUMNS,
};

/// What a violation does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Enforcement {
    /// The request is refused (403) with the policy's messages.
    #[default]
    Deny,
    /// The request is admitted; the messages come back as `Warning` headers.
    Warn,
    /// The request is admitted; the violation is only recorded.
    Audit,
}

/// The Rego dialect of a policy's modules.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum RegoVersion {
    /// Rego v1 (OPA 1.0): `if` and `contains` are required.
    #[default]
    #[serde(rename = "v1")]
    V1,
    /// Rego v0, as OPA Gatekeeper's library is written (`violation[{"msg": msg}] { … }`).
    #[serde(rename = "v0")]
    V0,
}

/// What happens when evaluating the policy fails (an error, or its time budget exceeded).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum PolicyFailurePolicy {
    /// Fail closed: the request is refused, naming the policy and the error.
    #[default]
    Fail,
    /// Fail open: the policy is skipped, with a warning.
    Ignore,
}

/// Which requests a policy sees. Every field given must match; an empty
/// match selects every request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyMatch {
    /// Kind names such as `Pod`; `*` or empty for every kind.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kinds: Vec<String>,
    /// `CREATE`, `UPDATE`, `DELETE`; empty for all three.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub operations: Vec<String>,
    /// Only requests in these namespaces (empty: any).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// Never requests in these namespaces.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excluded_namespaces: Vec<String>,
    /// Only requests in namespaces whose labels match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<K8sLabelSelector>,
    /// Only objects whose labels match (the old object's, for a delete).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_selector: Option<K8sLabelSelector>,
}

/// The operations a policy may match.
pub const OPERATIONS: &[&str] = &["CREATE", "UPDATE", "DELETE"];

/// `spec` of both policy kinds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicySpec {
    /// The policy module: its `violation[{"msg": …, "details": …}]` set (or `deny[msg]`) is the decision.
    pub rego: String,
    /// Extra modules the policy imports (as Gatekeeper templates carry them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub libs: Vec<String>,
    #[serde(default, rename = "match")]
    pub match_: PolicyMatch,
    /// Any JSON, passed as `input.parameters`.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub parameters: Value,
    #[serde(default)]
    pub enforcement: Enforcement,
    #[serde(default)]
    pub rego_version: RegoVersion,
    #[serde(default)]
    pub failure_policy: PolicyFailurePolicy,
    /// Existing objects the policy reads as `data.inventory` (none when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inventory: Option<PolicyInventory>,
}

/// Which existing objects a policy sees as `data.inventory`, laid out as
/// Gatekeeper lays it out: `data.inventory.namespace[ns][apiVersion][kind][name]`
/// for objects in the request's namespace, `data.inventory.cluster[apiVersion][kind][name]`
/// for cluster-scoped ones.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyInventory {
    /// Kind names such as `Pod`, each a kind the platform serves.
    #[serde(default)]
    pub kinds: Vec<String>,
}

fn kinds_column(policy: &Value) -> String {
    match policy.pointer("/spec/match/kinds").and_then(Value::as_array) {
        Some(kinds) if !kinds.is_empty() => kinds.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(","),
        _ => "*".into(),
    }
}

fn validate(object: &Value) -> Vec<FieldError> {
    let spec: PolicySpec = match typed(object, "spec") {
        Ok(spec) => spec,
        Err(e) => return vec![e],
    };
    let mut errors = Vec::new();
    if spec.rego.trim().is_empty() {
        errors.push(FieldError::required("spec.rego"));
    }
    for (i, operation) in spec.match_.operations.iter().enumerate() {
        if !OPERATIONS.contains(&operation.as_str()) {
            errors.push(FieldError::not_supported(format!("spec.match.operations[{i}]"), operation, OPERATIONS));
        }
    }
    for (field, selector) in
        [("spec.match.namespaceSelector", &spec.match_.namespace_selector), ("spec.match.labelSelector", &spec.match_.label_selector)]
    {
        if let Some(Err(e)) = selector.as_ref().map(LabelSelector::from_k8s) {
            errors.push(FieldError::invalid(field, e.to_string()));
        }
    }
    if let Some(inventory) = &spec.inventory {
        if inventory.kinds.is_empty() {
            errors.push(FieldError::required("spec.inventory.kinds"));
        }
        // A namespace's own policy reads only what every tenant of it may
        // read; no policy reads secrets or platform internals (tokens, plug-ins).
        let namespaced_policy = object.get("kind").and_then(Value::as_str) == Some(ADMISSION_POLICY.kind);
        let readable = |r: &ResourceType| match r.tenant_access {
            TenantAccess::None | TenantAccess::Confidential => false,
            TenantAccess::OwnNamespaces => !namespaced_policy,
            TenantAccess::Workload | TenantAccess::ReadOnly | TenantAccess::NamespaceOwned | TenantAccess::ClusterReadable => true,
        };
        for (i, kind) in inventory.kinds.iter().enumerate() {
            if !crate::registry::ALL.iter().any(|r| r.kind == kind && readable(r)) {
                let known: Vec<&str> = crate::registry::ALL.iter().filter(|r| readable(r)).map(|r| r.kind).collect();
                errors.push(FieldError::not_supported(format!("spec.inventory.kinds[{i}]"), kind, &known));
            }
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(spec: Value) -> Vec<String> {
        validate(&json!({"spec": spec})).into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn inventory_kinds_are_served_kinds() {
        let rego = "package x\ndeny contains \"no\" if false";
        assert!(fields(json!({"rego": rego, "inventory": {"kinds": ["Pod", "Namespace"]}})).is_empty());
        assert_eq!(fields(json!({"rego": rego, "inventory": {"kinds": ["Pod", "Deployment"]}})), ["spec.inventory.kinds[1]"]);
        assert_eq!(fields(json!({"rego": rego, "inventory": {"kinds": []}})), ["spec.inventory.kinds"]);
        assert_eq!(fields(json!({"rego": rego, "inventory": {"kind": ["Pod"]}})).len(), 1, "unknown fields are refused");
    }
}
