//! `ClusterAdmissionPolicy` and `AdmissionPolicy`: a policy that does not
//! compile is refused (and the version in force stays); its status is the
//! platform's (loaded, then its audits). Policies are not reviewed by
//! policies, and a written policy is in force before the client hears of it.

use async_trait::async_trait;
use kapsel_api::ResourceType;
use kapsel_api::kinds::admission_policy::{ADMISSION_POLICY, CLUSTER_ADMISSION_POLICY};
use serde_json::Value;

use super::Strategy;
use crate::App;
use crate::auth::Identity;
use crate::error::ApiError;

/// The strategy of one of the two policy kinds.
#[derive(Debug)]
pub struct Policies(&'static ResourceType);

pub static CLUSTER_POLICIES: Policies = Policies(&CLUSTER_ADMISSION_POLICY);
pub static NAMESPACE_POLICIES: Policies = Policies(&ADMISSION_POLICY);

#[async_trait]
impl Strategy for Policies {
    fn admitted(&self) -> bool {
        false
    }

    /// A `ClusterAdmissionPolicy` is readable by every tenant: its audit
    /// lists only the violations by objects in the reader's namespaces (the
    /// total stays: a count names no one).
    fn redact(&self, identity: &Identity, policy: &mut Value) {
        if !std::ptr::eq(self.0, &CLUSTER_ADMISSION_POLICY) {
            return;
        }
        if let Some(violations) = policy.pointer_mut("/status/audit/violations").and_then(Value::as_array_mut) {
            violations
                .retain(|violation| violation.get("namespace").and_then(Value::as_str).is_some_and(|ns| identity.roles.contains_key(ns)));
        }
    }

    async fn prepare_for_create(
        &self,
        _app: &App,
        _identity: &Identity,
        _namespace: Option<&str>,
        policy: &mut Value,
    ) -> Result<Option<String>, ApiError> {
        policy.as_object_mut().map(|o| o.remove("status"));
        crate::admission::check_policy(self.0, policy)?;
        Ok(None)
    }

    /// A namespace holds at most [`crate::admission::Admission::max_namespace_policies`]
    /// policies created by its tenants (IT admins are not counted against it).
    async fn check_create(&self, app: &App, identity: &Identity, namespace: Option<&str>, policy: &Value) -> Result<(), ApiError> {
        match namespace {
            Some(namespace) if std::ptr::eq(self.0, &ADMISSION_POLICY) => {
                let name = kapsel_api::object::name(policy).unwrap_or_default();
                app.admission.check_policy_count(&app.store, identity, namespace, name).await
            }
            _ => Ok(()),
        }
    }

    fn prepare_for_update(&self, _current: &Value, next: &mut Value) -> Result<(), ApiError> {
        crate::admission::check_policy(self.0, next)
    }

    async fn after_commit(&self, app: &App, revision: i64) {
        app.admission.caught_up(self.0, revision).await;
    }
}
