//! One strategy per kind, as Kubernetes' registry strategies: what is
//! special about writing objects of a kind — preparing a new object
//! (defaults, server-owned fields), preparing an update (fields fixed after
//! create or owned by other endpoints), checks against other stored objects,
//! what happens right before the store and after the commit, how a delete
//! goes (at once, graceful, finalized), and whether admission policies
//! review it. The generic write path ([`crate::objects`]) calls these steps
//! in order; a kind without special rules uses [`Plain`] and has nothing to
//! write. The kind's rules outside writes are here too: what its objects
//! use of quota-tracked resources and what a quota requires them to say
//! (as Kubernetes' quota evaluators), and what a tenant may not read of
//! them. [`of`] is the one place that says which kind has which strategy.

mod artifact;
mod config;
mod event;
mod namespace;
mod plugin;
mod pod;
mod policy;
mod token;

use async_trait::async_trait;
use kapsel_api::ResourceType;
use kapsel_api::kinds::admission_policy::{ADMISSION_POLICY, CLUSTER_ADMISSION_POLICY};
use kapsel_api::kinds::artifact::ARTIFACT;
use kapsel_api::kinds::config::{CONFIG_MAP, SECRET};
use kapsel_api::kinds::event::EVENT;
use kapsel_api::kinds::namespace::NAMESPACE;
use kapsel_api::kinds::plugin::PLUGIN;
use kapsel_api::kinds::pod::POD;
use kapsel_api::kinds::resource_quota::Usage;
use kapsel_api::kinds::token::TOKEN;
use kapsel_api::{FieldError, object};
use kapsel_store::Key;
use serde_json::Value;

use crate::App;
use crate::auth::Identity;
use crate::error::ApiError;

/// A delete's request, as the generic path has read it.
#[derive(Debug)]
pub struct Deleting<'a> {
    pub key: &'a Key,
    /// The object as stored.
    pub current: &'a Value,
    /// The revision the client's precondition names.
    pub expected: Option<i64>,
    /// The grace period the client asked for (`gracePeriodSeconds`), checked.
    pub grace_seconds: Option<i64>,
}

/// How a delete went.
#[derive(Debug)]
pub enum Deletion {
    /// The object is to be removed from the store now (by the generic path).
    Now,
    /// The object was marked for deletion and stays until its end is done
    /// (a pod stopping on its node, a namespace emptied): the marked object.
    Marked(Value),
}

/// The write rules of one kind. Every step has a default that does nothing.
#[async_trait]
pub trait Strategy: Send + Sync + 'static {
    /// Whether admission policies review writes of this kind.
    fn admitted(&self) -> bool {
        true
    }

    /// What an object of the kind uses of quota-tracked resources besides
    /// its count (`count/<plural>`, which every object uses), added to `usage`.
    fn usage(&self, _object: &Value, _usage: &mut Usage) {}

    /// The resources [`Strategy::usage`] may name, so that counting a
    /// namespace's usage of some resources reads only the kinds that use them.
    fn usage_names(&self) -> &'static [&'static str] {
        &[]
    }

    /// The quota-tracked resources that a write of `new` over `old` (`None`:
    /// a create) leaves unspecified for what it adds, and that a quota
    /// limiting them requires it to specify (Kubernetes: every new container
    /// of a pod sets the requests and limits of cpu and memory a quota limits).
    fn unspecified_for_quota(&self, _new: &Value, _old: Option<&Value>) -> Vec<&'static str> {
        Vec::new()
    }

    /// Whether `object` is hidden from `identity` (not an IT admin) though
    /// the caller may read the kind where the object is.
    fn hidden_from(&self, _identity: &Identity, _object: &Value) -> bool {
        false
    }

    /// Removes from `object` what `identity` (not an IT admin) may not read of it.
    fn redact(&self, _identity: &Identity, _object: &mut Value) {}

    /// On create, before validation: defaults and server-owned fields. May
    /// return a secret the create answer shows once (see [`Strategy::answer_create`]).
    async fn prepare_for_create(
        &self,
        _app: &App,
        _identity: &Identity,
        _namespace: Option<&str>,
        _object: &mut Value,
    ) -> Result<Option<String>, ApiError> {
        Ok(None)
    }

    /// On create, after validation: checks against other stored objects.
    async fn check_create(&self, _app: &App, _identity: &Identity, _namespace: Option<&str>, _object: &Value) -> Result<(), ApiError> {
        Ok(())
    }

    /// On create, right before the object is stored (not on a dry run).
    async fn before_store(&self, _app: &App, _object: &mut Value) -> Result<(), ApiError> {
        Ok(())
    }

    /// Adds what is shown once to the create answer.
    fn answer_create(&self, _answer: &mut Value, _shown_once: Option<String>) {}

    /// On update, before validation: refuses changes to fields fixed after
    /// create or owned by other endpoints, and keeps what the platform owns.
    fn prepare_for_update(&self, _current: &Value, _next: &mut Value) -> Result<(), ApiError> {
        Ok(())
    }

    /// On update, after validation: checks against other stored objects.
    async fn check_update(&self, _app: &App, _namespace: Option<&str>, _current: &Value, _next: &Value) -> Result<(), ApiError> {
        Ok(())
    }

    /// How a delete goes (after admission, not on a dry run).
    async fn delete(&self, _app: &App, _deleting: &Deleting<'_>) -> Result<Deletion, ApiError> {
        Ok(Deletion::Now)
    }

    /// After a write of the kind committed (up to `revision`), before the client hears of it.
    async fn after_commit(&self, _app: &App, _revision: i64) {}
}

/// The strategy of a kind with no rules of its own.
#[derive(Debug)]
pub struct Plain;

impl Strategy for Plain {}

/// The strategy of `resource`.
pub fn of(resource: &ResourceType) -> &'static dyn Strategy {
    let is = |kind: &ResourceType| std::ptr::eq(resource, kind);
    if is(&POD) {
        &pod::Pods
    } else if is(&NAMESPACE) {
        &namespace::Namespaces
    } else if is(&TOKEN) {
        &token::Tokens
    } else if is(&PLUGIN) {
        &plugin::Plugins
    } else if is(&ARTIFACT) {
        &artifact::Artifacts
    } else if is(&CONFIG_MAP) {
        &config::CONFIG_MAPS
    } else if is(&SECRET) {
        &config::SECRETS
    } else if is(&EVENT) {
        &event::Events
    } else if is(&CLUSTER_ADMISSION_POLICY) {
        &policy::CLUSTER_POLICIES
    } else if is(&ADMISSION_POLICY) {
        &policy::NAMESPACE_POLICIES
    } else {
        &Plain
    }
}

/// A 422 for a field of `object` that may not be written as it is.
fn forbidden(resource: &ResourceType, object: &Value, field: impl Into<String>, message: impl Into<String>) -> ApiError {
    let name = object::name(object).unwrap_or_default();
    ApiError::invalid(resource, name, vec![FieldError::forbidden(field, message)])
}
