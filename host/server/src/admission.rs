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
//! headers, `audit` violations are logged and recorded as an `AuditViolation`
//! Event on the policy (the periodic audit is [`crate::controllers::audit`]). A policy that fails to evaluate
//! follows its failure policy: `Fail` (default) refuses, `Ignore` admits
//! with a warning. The policy kinds themselves are not subject to admission,
//! so no policy can lock IT out of fixing policies.
//!
//! Policies judge tenants, not the platform: a node agent's writes (its
//! identity names a node) and writes that change only an object's `status`
//! (the `status` subresource, and the controllers' bookkeeping — as in
//! Kubernetes, where a policy matching `pods` does not see `pods/status`) are
//! not reviewed, so they raise no denial, warning or audit event. Each
//! evaluation is bounded in time and memory (`kapsel_admission::bounds`), all
//! the policies of one request share [`kapsel_admission::REQUEST_BUDGET`],
//! a namespace holds at most [`Admission::max_namespace_policies`] policies
//! created by its tenants (IT admins are not counted against it; a
//! `ResourceQuota` on `count/admissionpolicies.kapsel.io` sets a lower one),
//! and on-demand audits are rate-limited per namespace ([`Admission::audit_permit`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use kapsel_admission::{ObjectType, Operation, Policy, PolicyId, PolicySet, Request, UserInfo};
use kapsel_api::kinds::admission_policy::{ADMISSION_POLICY, CLUSTER_ADMISSION_POLICY, Enforcement, PolicyFailurePolicy, PolicySpec};
use kapsel_api::kinds::event::EventType;
use kapsel_api::kinds::namespace::NAMESPACE;
use kapsel_api::{FieldError, ResourceType, object};
use kapsel_store::{Change, ChangeType, Key, Store, StoreError};
use serde_json::Value;

use crate::App;
use crate::auth::{Identity, Verb, authorize};
use crate::error::ApiError;
use crate::operation::Context;
use crate::reflector::{self, Reflected, Reflection};

/// A write under review.
#[derive(Debug, Clone, Copy)]
pub struct Write<'a> {
    pub resource: &'static ResourceType,
    pub operation: Operation,
    pub namespace: Option<&'a str>,
    pub name: &'a str,
    /// The object as it would be stored (none for a delete).
    pub object: Option<&'a Value>,
    /// The object as it is stored (updates and deletes).
    pub old_object: Option<&'a Value>,
    pub dry_run: bool,
}

/// A policy whose evaluation has taken this long is evaluated off the async workers from then on.
pub const SLOW_POLICY: Duration = Duration::from_millis(20);

/// The default of the most `AdmissionPolicy` objects a namespace's tenants may create.
pub const MAX_NAMESPACE_POLICIES: usize = 20;
/// The least time between two on-demand audits of policies of one namespace
/// (or of cluster policies) that IT admins did not ask for.
pub const AUDIT_SPACING: Duration = Duration::from_secs(10);

/// The policies in force, and the bounds on what tenants may do with policies.
#[derive(Debug, Clone)]
pub struct Admission {
    policies: Arc<RwLock<Arc<PolicySet>>>,
    limits: Arc<Limits>,
    /// The reflectors of the two policy kinds (cluster, namespaced).
    reflections: [Reflection; 2],
}

/// The policies of one kind as a reflector keeps them: cluster policies or namespaces'.
#[derive(Debug)]
struct PolicyCopy {
    policies: Arc<RwLock<Arc<PolicySet>>>,
    namespaced: bool,
}

impl Reflected for PolicyCopy {
    fn replace(&self, objects: Vec<Value>) {
        let compiled: Vec<Policy> = objects
            .iter()
            .filter_map(|stored| match compile(stored) {
                Ok(policy) => Some(policy),
                Err(error) => {
                    tracing::error!(policy = %policy_id(stored), %error, "a stored admission policy does not compile; it is not in force");
                    None
                }
            })
            .collect();
        let mut policies = self.policies.write().expect("admission lock");
        let mut set = policies.retaining(|id| id.namespace.is_some() != self.namespaced);
        for policy in compiled {
            set = set.with(policy);
        }
        *policies = Arc::new(set);
    }

    fn apply(&self, change: &Change) {
        apply_policy_change(&self.policies, change);
    }
}

#[derive(Debug)]
struct Limits {
    max_namespace_policies: AtomicUsize,
    /// Per namespace (`None`: cluster policies), when the next on-demand audit may start.
    next_audit: Mutex<HashMap<Option<String>, Instant>>,
}

impl Default for Admission {
    fn default() -> Self {
        Admission {
            policies: Arc::default(),
            limits: Arc::new(Limits { max_namespace_policies: AtomicUsize::new(MAX_NAMESPACE_POLICIES), next_audit: Mutex::default() }),
            reflections: [Reflection::complete(CLUSTER_ADMISSION_POLICY.kind), Reflection::complete(ADMISSION_POLICY.kind)],
        }
    }
}

/// Brings one committed policy change into force.
fn apply_policy_change(policies: &RwLock<Arc<PolicySet>>, change: &Change) {
    let id = policy_id(&change.object);
    let compiled = match change.change_type {
        ChangeType::Deleted => None,
        // A status write (the audit's results) leaves the policy in force as it is.
        ChangeType::Modified if change.previous.as_ref().is_some_and(|p| p.get("spec") == change.object.get("spec")) => return,
        // Compiled outside the lock: a tenant's policy compiles in its sandbox.
        ChangeType::Added | ChangeType::Modified => match compile(&change.object) {
            Ok(policy) => Some(policy),
            // Checked before it was stored; only a policy written around the API gets here.
            Err(error) => {
                tracing::error!(policy = %id, %error, "an admission policy does not compile; the previous version stays");
                return;
            }
        },
    };
    // Both policy kinds' reflectors write here: read and replace under one lock.
    let mut in_force = policies.write().expect("admission lock");
    let next = match compiled {
        Some(policy) => in_force.with(policy),
        None => in_force.without(&id),
    };
    *in_force = Arc::new(next);
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
/// column when its Rego does not compile; otherwise its status says it
/// loaded (the rest of its status, the last audit's results, stays).
pub fn check_policy(resource: &ResourceType, object: &mut Value) -> Result<(), ApiError> {
    match compile(object) {
        Ok(_) => {
            if !object.get("status").is_some_and(Value::is_object) {
                object["status"] = serde_json::json!({});
            }
            object["status"]["loaded"] = Value::Bool(true);
            object["status"]["message"] = Value::String(String::new());
            Ok(())
        }
        Err(error) => {
            let name = object::name(object).unwrap_or_default();
            Err(ApiError::invalid(resource, name, vec![FieldError::invalid(error.field, error.message)]))
        }
    }
}

impl Admission {
    /// Loads every stored policy (one that no longer compiles is logged and
    /// left out) and follows the store's changes to them.
    pub async fn start(store: &Store) -> Result<Admission, StoreError> {
        let policies: Arc<RwLock<Arc<PolicySet>>> = Arc::default();
        let copy = |namespaced| PolicyCopy { policies: Arc::clone(&policies), namespaced };
        let reflections = [
            reflector::start(store, &CLUSTER_ADMISSION_POLICY, copy(false)).await?,
            reflector::start(store, &ADMISSION_POLICY, copy(true)).await?,
        ];
        tracing::info!(policies = policies.read().expect("admission lock").len(), "admission policies loaded");
        Ok(Admission { policies, reflections, ..Admission::default() })
    }

    /// Waits until the policies in force hold every change of `resource` (a
    /// policy kind) up to `revision`: one just committed is in force for the next request.
    pub async fn caught_up(&self, resource: &ResourceType, revision: i64) -> bool {
        let reflection = if std::ptr::eq(resource, &ADMISSION_POLICY) { &self.reflections[1] } else { &self.reflections[0] };
        reflection.caught_up(revision).await
    }

    /// The most `AdmissionPolicy` objects a namespace's tenants may create ([`MAX_NAMESPACE_POLICIES`] unless set).
    pub fn max_namespace_policies(&self) -> usize {
        self.limits.max_namespace_policies.load(Ordering::Relaxed)
    }

    /// Sets [`Admission::max_namespace_policies`], for every clone of this `Admission` (`kapsel serve` passes its flag here).
    pub fn set_max_namespace_policies(&self, max: usize) {
        self.limits.max_namespace_policies.store(max, Ordering::Relaxed);
    }

    /// Whether an on-demand audit of the policy `id` may start now: IT admins
    /// always may; others once per [`AUDIT_SPACING`] per namespace (cluster
    /// policies count as one namespace), or 429 saying when to retry.
    pub fn audit_permit(&self, identity: &Identity, id: &PolicyId) -> Result<(), ApiError> {
        if identity.admin {
            return Ok(());
        }
        let now = Instant::now();
        let mut next = self.limits.next_audit.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        next.retain(|_, at| *at > now);
        if let Some(at) = next.get(&id.namespace) {
            // The same whole seconds in the message and in `Retry-After`.
            let retry = at.saturating_duration_since(now).as_secs_f64().ceil().max(1.0) as u64;
            let scope = match &id.namespace {
                Some(namespace) => format!("the policies of namespace {namespace:?}"),
                None => "cluster policies".to_string(),
            };
            return Err(ApiError::TooManyRequests {
                message: format!(
                    "too many on-demand audits: {scope} may be audited on demand once every {} s; retry in {retry} s",
                    AUDIT_SPACING.as_secs(),
                ),
                retry_after_seconds: retry,
            });
        }
        next.insert(id.namespace.clone(), now + AUDIT_SPACING);
        Ok(())
    }

    /// Refuses a tenant's new `AdmissionPolicy` in `namespace` when the namespace already holds [`Admission::max_namespace_policies`].
    pub async fn check_policy_count(&self, store: &Store, identity: &Identity, namespace: &str, name: &str) -> Result<(), ApiError> {
        let max = self.max_namespace_policies();
        if identity.admin {
            return Ok(());
        }
        let existing = store
            .list(&ADMISSION_POLICY.store_key(), Some(namespace))
            .await
            .map_err(|e| ApiError::from_store(e, &ADMISSION_POLICY, name))?;
        let count = existing.objects.len();
        if count >= max {
            return Err(ApiError::Forbidden(format!(
                "admissionpolicies.kapsel.io {name:?} is forbidden: namespace {namespace:?} already has {count} admission policies, \
                 the most its tenants may create (the limit of {max} admission policies per namespace, set by IT)"
            )));
        }
        Ok(())
    }

    /// The policies in force now.
    pub fn current(&self) -> Arc<PolicySet> {
        self.policies.read().expect("admission lock").clone()
    }

    /// Decides `write`: `Ok` with warnings for the client, or the denial.
    /// (Kinds whose strategy exempts them — policies, tokens — are not
    /// brought here: the caller asks [`crate::strategy::Strategy::admitted`].)
    pub async fn admit(&self, store: &Store, identity: &Identity, write: Write<'_>) -> Result<Vec<String>, ApiError> {
        let Write { resource, operation, namespace, name, object, old_object, dry_run } = write;
        if is_platform_write(identity, &write) {
            return Ok(Vec::new());
        }
        let policies = self.current();
        if policies.candidates(resource.kind).next().is_none() {
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
        // Policies that read existing objects (`data.inventory`) get those of their kinds here.
        let inventory_kinds = policies.inventory_kinds(&request);
        let existing = if inventory_kinds.is_empty() { Vec::new() } else { load_inventory(store, &inventory_kinds, namespace).await? };
        // Policies are evaluated in place (microseconds each); one that has
        // been slow moves the review off the async worker, whose other
        // requests it would hold up (a thread hand-off costs more than a
        // typical review, so fast ones stay). So does a tenant's policy,
        // whose sandbox may block on the runtime (once for the whole review).
        let slow = policies.candidates(resource.kind).any(|p| p.slowest_evaluation() >= SLOW_POLICY || p.is_sandboxed());
        let decisions = match tokio::runtime::Handle::current().runtime_flavor() {
            tokio::runtime::RuntimeFlavor::MultiThread if slow => {
                tokio::task::block_in_place(|| policies.review_with_inventory(&request, &existing))
            }
            _ => policies.review_with_inventory(&request, &existing),
        };
        let mut denials = Vec::new();
        let mut warnings = Vec::new();
        for decision in decisions {
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
                            tracing::info!(policy = %decision.policy, kind = resource.kind, %name, violations = ?messages, "admission audit: violation admitted");
                            if !dry_run {
                                let (kind, policy) = (resource.kind, &decision.policy);
                                record_violation(store, policy, operation, kind, namespace, name, &messages);
                            }
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

/// Whether `write` is the platform's rather than a tenant's: a node agent's
/// (its status reports, its Node, lease and events), or one that changes
/// only the object's `status` (a write to the `status` subresource, or a
/// controller's bookkeeping) — not reviewed by policies.
pub fn is_platform_write(identity: &Identity, write: &Write<'_>) -> bool {
    if identity.node.is_some() {
        return true;
    }
    match (write.operation, write.old_object, write.object) {
        (Operation::Update, Some(old), Some(new)) => write.resource.status_subresource && changes_only_status(old, new),
        _ => false,
    }
}

/// Whether `new` differs from `old` only in `status` (and the resource version a write carries).
fn changes_only_status(old: &Value, new: &Value) -> bool {
    let (Some(old), Some(new)) = (old.as_object(), new.as_object()) else { return false };
    let metadata_alike = || {
        let (Some(a), Some(b)) = (old.get("metadata").and_then(Value::as_object), new.get("metadata").and_then(Value::as_object)) else {
            return old.get("metadata") == new.get("metadata");
        };
        a.keys().chain(b.keys()).all(|k| k == "resourceVersion" || a.get(k) == b.get(k))
    };
    old.keys().chain(new.keys()).all(|key| match key.as_str() {
        "status" => true,
        "metadata" => metadata_alike(),
        _ => old.get(key) == new.get(key),
    })
}

/// A policy review (`POST /apis/kapsel.io/v1alpha1/policyreviews`, served
/// by `crate::http::reviews`): evaluates one policy —
/// a stored one the caller may read (`spec.policyRef`: `name`, and
/// `namespace` for a namespace's policy) or one given whole that the caller
/// could create (`spec.policy`, to try before saving) — against `spec.object` (and `spec.oldObject`), whatever its
/// kind, as `spec.operation` (default `CREATE`) by `spec.userInfo` (default
/// the caller). Stores nothing; answers the review with `status.allowed`
/// (what admission would do under the policy's enforcement) and
/// `status.violations`. Like Kubernetes' `SubjectAccessReview`, create-only.
pub async fn review(app: &App, ctx: &Context, mut review: Value) -> Result<Value, ApiError> {
    let identity = &ctx.identity;
    let invalid = |field: &str, message: String| ApiError::Invalid {
        kind: "PolicyReview".into(),
        group: kapsel_api::KAPSEL_GROUP.into(),
        name: String::new(),
        causes: vec![FieldError::invalid(field, message)],
    };
    let spec = review.get("spec").cloned().unwrap_or_default();
    let policy = match (spec.get("policyRef"), spec.get("policy")) {
        (Some(reference), None) => {
            let name = reference.get("name").and_then(Value::as_str).unwrap_or_default();
            let namespace = reference.get("namespace").and_then(Value::as_str).filter(|n| !n.is_empty());
            let resource = if namespace.is_some() { &ADMISSION_POLICY } else { &CLUSTER_ADMISSION_POLICY };
            authorize(identity, Verb::Get, resource, namespace)?;
            let key = Key::new(resource.store_key(), namespace.unwrap_or_default(), name);
            let stored = store_get(&app.store, &key, resource, name).await?;
            compile(&stored).map_err(|e| invalid(&format!("spec.policyRef ({})", e.field), e.message))?
        }
        (None, Some(inline)) => {
            // Trying a policy is for those who could apply it: IT admins, or a namespace's owners for its own policies.
            let namespace = object::meta_str(inline, "namespace").filter(|n| !n.is_empty());
            let resource = if namespace.is_some() { &ADMISSION_POLICY } else { &CLUSTER_ADMISSION_POLICY };
            authorize(identity, Verb::Create, resource, namespace)?;
            compile(inline).map_err(|e| invalid(&format!("spec.policy.{}", e.field), e.message))?
        }
        _ => return Err(invalid("spec", "give exactly one of policyRef (a stored policy) and policy (a whole policy)".into())),
    };
    let object =
        spec.get("object").filter(|o| o.is_object()).ok_or_else(|| invalid("spec.object", "required: the object to review".into()))?;
    let old_object = spec.get("oldObject").filter(|o| o.is_object());
    let operation = match spec.get("operation").and_then(Value::as_str) {
        None => Operation::Create,
        Some(text) => Operation::parse(text)
            .ok_or_else(|| invalid("spec.operation", format!("unsupported value {text:?}: CREATE, UPDATE or DELETE")))?,
    };
    let user = match spec.get("userInfo") {
        Some(info) => UserInfo {
            username: info.get("username").and_then(Value::as_str).unwrap_or_default().into(),
            groups: info
                .get("groups")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect(),
        },
        None => UserInfo { username: identity.user.clone(), groups: vec!["system:authenticated".into()] },
    };
    let object_type = ObjectType::of(object);
    let request = Request { dry_run: true, ..Request::about(&object_type, operation, object, old_object, &user) };
    // A policy that reads existing objects sees the stored ones, as admission
    // would show it — only those the caller may list itself.
    let existing = match policy.inventory_kinds() {
        [] => None,
        kinds => {
            for resource in kapsel_api::registry::ALL.iter().filter(|r| kinds.iter().any(|k| k == r.kind)) {
                authorize(identity, Verb::List, resource, if resource.namespaced() { request.namespace } else { None })?;
            }
            let mut objects = load_inventory(&app.store, &kinds.iter().map(String::as_str).collect(), request.namespace).await?;
            objects.retain(|o| {
                let kind = o.get("kind").and_then(Value::as_str).unwrap_or_default();
                let api_version = o.get("apiVersion").and_then(Value::as_str).unwrap_or_default();
                kapsel_api::registry::by_kind(api_version, kind).is_some_and(|r| crate::listing::visible(identity, r, o))
            });
            Some(objects)
        }
    };
    let outcome = request.review().and_then(|input| match &existing {
        None => policy.evaluate(&input, None),
        Some(objects) => policy.evaluate(&input, Some(&kapsel_admission::inventory(objects)?)),
    });
    let allowed = kapsel_admission::admits(policy.enforcement, policy.failure_policy, &outcome);
    let status = match outcome {
        Ok(violations) => serde_json::json!({"allowed": allowed, "enforcement": policy.enforcement, "violations": violations}),
        Err(error) => serde_json::json!({"allowed": allowed, "enforcement": policy.enforcement, "violations": [], "error": error}),
    };
    review["status"] = status;
    Ok(review)
}

/// The stored objects of `kinds` a policy may read as `data.inventory`: those
/// in `namespace` for namespaced kinds, all of them for cluster-scoped kinds.
async fn load_inventory(store: &Store, kinds: &std::collections::BTreeSet<&str>, namespace: Option<&str>) -> Result<Vec<Value>, ApiError> {
    let mut objects = Vec::new();
    for resource in kapsel_api::registry::ALL.iter().copied().filter(|r| kinds.contains(r.kind)) {
        let scope = match (resource.namespaced(), namespace) {
            (true, Some(ns)) => Some(ns),
            (true, None) => continue,
            (false, _) => None,
        };
        let listing = store.list(&resource.store_key(), scope).await.map_err(|e| ApiError::from_store(e, resource, ""))?;
        objects.extend(listing.objects.into_iter().map(|mut object| {
            // Stored objects carry their type, but the inventory's layout depends on it: make sure.
            if object.get("kind").is_none_or(Value::is_null) {
                object["apiVersion"] = Value::String(resource.api_version());
                object["kind"] = Value::String(resource.kind.to_string());
            }
            object
        }));
    }
    Ok(objects)
}

async fn store_get(store: &Store, key: &Key, resource: &ResourceType, name: &str) -> Result<Value, ApiError> {
    store.get(key).await.map_err(|e| ApiError::from_store(e, resource, name))
}

/// The reason of the Event recording a request admitted by an `audit` policy in violation.
pub const AUDIT_VIOLATION: &str = "AuditViolation";

/// Records that a request was admitted in violation of the `audit` policy
/// `policy`: an aggregated Warning Event on the policy (reason
/// [`AUDIT_VIOLATION`]) naming the object and the messages. In the
/// background: events never hold up a request.
fn record_violation(
    store: &Store,
    policy: &PolicyId,
    operation: Operation,
    kind: &str,
    namespace: Option<&str>,
    name: &str,
    messages: &[String],
) {
    let message = format!("{} of {kind} {} admitted in violation: {}", operation.as_str(), qualified(namespace, name), messages.join("; "));
    let store = store.clone();
    let key = policy_key(policy);
    // A cluster policy's violation by an object in a namespace is that namespace's to see, not every tenant's.
    let event_namespace = namespace.filter(|n| !n.is_empty()).map(str::to_string);
    tokio::spawn(async move {
        if let Ok(policy) = store.get(&key).await {
            crate::events::record_in(&store, event_namespace.as_deref(), &policy, EventType::Warning, AUDIT_VIOLATION, &message).await;
        }
    });
}

/// `namespace/name`, or `name` for a cluster-scoped object.
pub(crate) fn qualified(namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(namespace) => format!("{namespace}/{name}"),
        None => name.to_string(),
    }
}

/// The kind of the policy `id` names.
pub(crate) fn policy_kind(id: &PolicyId) -> &'static ResourceType {
    if id.namespace.is_some() { &ADMISSION_POLICY } else { &CLUSTER_ADMISSION_POLICY }
}

/// Where the policy `id` names is stored.
pub(crate) fn policy_key(id: &PolicyId) -> Key {
    Key::new(policy_kind(id).store_key(), id.namespace.clone().unwrap_or_default(), &id.name)
}
