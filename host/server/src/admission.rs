//! Admission by Rego policies on the request path (see kapsel-admission).
//!
//! The loaded `ClusterAdmissionPolicy` and `AdmissionPolicy` objects live
//! in an [`Admission`] as one immutable [`PolicySet`], swapped whole when a
//! policy is created, updated or deleted (the change reaches it before the
//! client hears of the write, so the next request is decided by it — no
//! restart). A policy is compiled when it is written; Rego that does not
//! compile is refused with 422, naming the line and column, and the
//! previous version stays in force.
//!
//! [`Admission::admit`] runs after validation, before a write is persisted
//! (also on a dry run): every policy whose `match` selects the request is
//! evaluated; `deny` violations refuse it with 403 naming every violated
//! policy and its messages, `warn` violations come back as `Warning`
//! headers, `audit` violations are logged. A policy that fails to evaluate
//! follows its failure policy: `Fail` (default) refuses, `Ignore` admits
//! with a warning. The policy kinds themselves are not subject to admission,
//! so no policy can lock IT out of fixing policies.

use std::sync::{Arc, RwLock};

use kapsel_admission::{Operation, Policy, PolicyId, PolicySet, Request, UserInfo};
use kapsel_api::kinds::admission_policy::{ADMISSION_POLICY, CLUSTER_ADMISSION_POLICY, Enforcement, PolicyFailurePolicy, PolicySpec};
use kapsel_api::kinds::namespace::NAMESPACE;
use kapsel_api::kinds::token::TOKEN;
use kapsel_api::{FieldError, ResourceType, object};
use kapsel_store::{Change, ChangeType, Key, Store, StoreError};
use serde_json::Value;

use crate::auth::Identity;
use crate::error::ApiError;

/// The policies in force.
#[derive(Debug, Clone, Default)]
pub struct Admission {
    policies: Arc<RwLock<Arc<PolicySet>>>,
}

/// Whether `resource` is one of the two policy kinds.
pub fn is_policy_kind(resource: &ResourceType) -> bool {
    std::ptr::eq(resource, &CLUSTER_ADMISSION_POLICY) || std::ptr::eq(resource, &ADMISSION_POLICY)
}

fn policy_id(object: &Value) -> PolicyId {
    PolicyId {
        namespace: object::meta_str(object, "namespace").filter(|n| !n.is_empty()).map(str::to_string),
        name: object::name(object).unwrap_or_default().to_string(),
    }
}

/// Compiles a stored or submitted policy object.
pub fn compile(object: &Value) -> Result<Policy, kapsel_admission::CompileError> {
    let spec: PolicySpec = serde_json::from_value(object.get("spec").cloned().unwrap_or_default())
        .map_err(|e| kapsel_admission::CompileError { field: "spec".into(), message: e.to_string() })?;
    Policy::compile(policy_id(object), &spec)
}

/// Checks a policy before it is stored: 422 with the parser's line and
/// column when its Rego does not compile; otherwise its status says it loaded.
pub fn check_policy(resource: &ResourceType, object: &mut Value) -> Result<(), ApiError> {
    match compile(object) {
        Ok(_) => {
            object["status"] = serde_json::json!({"loaded": true, "message": ""});
            Ok(())
        }
        Err(error) => {
            let name = object::name(object).unwrap_or_default();
            Err(ApiError::invalid(resource, name, vec![FieldError::invalid(error.field, error.message)]))
        }
    }
}

impl Admission {
    /// Loads every stored policy; one that no longer compiles is logged and left out.
    pub async fn start(store: &Store) -> Result<Admission, StoreError> {
        let mut set = PolicySet::default();
        for resource in [&CLUSTER_ADMISSION_POLICY, &ADMISSION_POLICY] {
            for stored in store.list(&resource.store_key(), None).await?.objects {
                match compile(&stored) {
                    Ok(policy) => set = set.with(policy),
                    Err(error) => {
                        tracing::error!(policy = %policy_id(&stored), %error, "a stored admission policy does not compile; it is not in force")
                    }
                }
            }
        }
        tracing::info!(policies = set.len(), "admission policies loaded");
        Ok(Admission { policies: Arc::new(RwLock::new(Arc::new(set))) })
    }

    /// The policies in force now.
    pub fn current(&self) -> Arc<PolicySet> {
        self.policies.read().expect("admission lock").clone()
    }

    /// Brings committed policy changes into force.
    pub fn apply(&self, changes: &[Change]) {
        let mut policies = self.policies.write().expect("admission lock");
        for change in changes {
            let id = policy_id(&change.object);
            let next = match change.change_type {
                ChangeType::Deleted => policies.without(&id),
                ChangeType::Added | ChangeType::Modified => match compile(&change.object) {
                    Ok(policy) => policies.with(policy),
                    // Checked before it was stored; only a policy written around the API gets here.
                    Err(error) => {
                        tracing::error!(policy = %id, %error, "an admission policy does not compile; the previous version stays");
                        continue;
                    }
                },
            };
            *policies = Arc::new(next);
        }
    }

    /// Decides a write of `resource`: `Ok` with warnings for the client, or the denial.
    #[allow(clippy::too_many_arguments)]
    pub async fn admit(
        &self,
        store: &Store,
        identity: &Identity,
        resource: &ResourceType,
        operation: Operation,
        namespace: Option<&str>,
        name: &str,
        object: Option<&Value>,
        old_object: Option<&Value>,
        dry_run: bool,
    ) -> Result<Vec<String>, ApiError> {
        if is_policy_kind(resource) || std::ptr::eq(resource, &TOKEN) {
            return Ok(Vec::new());
        }
        let policies = self.current();
        if policies.is_empty() {
            return Ok(Vec::new());
        }
        let namespace_object = match namespace {
            Some(ns) if policies.candidates(resource.kind).any(|p| p.needs_namespace_labels()) => {
                store.get(&Key::new(NAMESPACE.store_key(), "", ns)).await.ok()
            }
            _ => None,
        };
        let namespace_labels = namespace_object.as_ref().and_then(|n| n.pointer("/metadata/labels")).and_then(Value::as_object);
        let mut groups = vec!["system:authenticated".to_string()];
        if identity.admin {
            groups.push("kapsel:admins".into());
        }
        let user = UserInfo { username: identity.user.clone(), groups };
        let request = Request {
            group: resource.group,
            version: resource.version,
            kind: resource.kind,
            resource: resource.plural,
            operation,
            name,
            namespace,
            object,
            old_object,
            user: &user,
            dry_run,
            namespace_labels,
        };
        let mut denials = Vec::new();
        let mut warnings = Vec::new();
        for decision in policies.review(&request) {
            let label = match &decision.policy.namespace {
                Some(namespace) => format!("admission policy {:?} of namespace {namespace:?}", decision.policy.name),
                None => format!("admission policy {:?}", decision.policy.name),
            };
            match (decision.outcome, decision.enforcement) {
                (Ok(violations), _) if violations.is_empty() => {}
                (Ok(violations), enforcement) => {
                    let messages: Vec<String> = violations.into_iter().map(|v| v.msg).collect();
                    match enforcement {
                        Enforcement::Deny => denials.push(format!("{label} denied the request: {}", messages.join("; "))),
                        Enforcement::Warn => warnings.extend(messages.into_iter().map(|m| format!("{label}: {m}"))),
                        Enforcement::Audit => {
                            tracing::info!(policy = %decision.policy, kind = resource.kind, %name, violations = ?messages, "admission audit: violation admitted")
                        }
                    }
                }
                (Err(error), _) => match decision.failure_policy {
                    PolicyFailurePolicy::Fail => denials.push(format!("{label} could not be evaluated and fails closed: {error}")),
                    PolicyFailurePolicy::Ignore => warnings.push(format!("{label} could not be evaluated and was skipped: {error}")),
                },
            }
        }
        if denials.is_empty() {
            return Ok(warnings);
        }
        let message = if denials.len() == 1 { denials.remove(0) } else { format!("[{}]", denials.join(", ")) };
        Err(ApiError::Forbidden(message))
    }
}
