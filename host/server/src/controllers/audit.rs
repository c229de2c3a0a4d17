//! The admission audit, as OPA Gatekeeper's: every `--audit-interval`
//! (default a minute), and on demand (`POST …/clusteradmissionpolicies/{name}/audit`,
//! `POST …/namespaces/{ns}/admissionpolicies/{name}/audit`), each loaded
//! policy — whatever its enforcement — is evaluated against the stored
//! objects its `match` selects (reviewed at rest, without an operation or a
//! user: see `kapsel_admission::audit`; a namespace's policy sees only its
//! namespace). What it found goes into the policy's `status.audit`:
//! `lastRun`, `objectsReviewed`, `totalViolations` (one per violation
//! message), the first [`REPORTED_VIOLATIONS`] `violations` (`kind`,
//! `namespace`, `name`, `message`, `enforcement`) and `error` when objects
//! could not be evaluated. The evaluation runs on a blocking thread and is
//! bounded: at most [`MAX_OBJECTS`] objects and [`MAX_EVALUATION`] per
//! policy per pass (`truncated: true` says it stopped there). Only
//! `status.audit` is written, retried on conflict; `loaded` and `message`
//! belong to admission. Request-time violations of `audit` policies are
//! recorded here too, as an aggregated `AuditViolation` Warning Event on
//! the policy ([`record_violation`]). On-demand audits by tenants are
//! rate-limited per namespace (429 `TooManyRequests` with `Retry-After`:
//! `crate::admission::Admission::audit_permit`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kapsel_admission::audit::Stored;
use kapsel_admission::{Policy, PolicyId};
use kapsel_api::kinds::admission_policy::Enforcement;
use kapsel_api::kinds::namespace::NAMESPACE;
use kapsel_api::{FieldError, ResourceType, object, registry};
use kapsel_store::{Store, StoreError};
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::App;
use crate::admission::{policy_key, policy_kind, qualified};
use crate::auth::{Verb, authorize};
use crate::error::ApiError;
use crate::operation::Context;

/// The default of `kapsel serve --audit-interval`.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);
/// The most objects one policy reviews in one pass.
pub const MAX_OBJECTS: usize = 5_000;
/// The longest one policy evaluates in one pass.
pub const MAX_EVALUATION: Duration = Duration::from_secs(10);
/// How many violations a policy's status lists (all are counted).
pub const REPORTED_VIOLATIONS: usize = 20;
/// How many times a status write is retried when the policy changed meanwhile.
const STATUS_RETRIES: usize = 5;

/// What one audit of one policy found: its `status.audit`.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// When the audit started (RFC 3339).
    pub last_run: String,
    pub objects_reviewed: usize,
    pub total_violations: usize,
    /// The first [`REPORTED_VIOLATIONS`].
    pub violations: Vec<Found>,
    /// The pass stopped at [`MAX_OBJECTS`] or [`MAX_EVALUATION`].
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One violation an audit found.
#[derive(Debug, Clone, Serialize)]
pub struct Found {
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
    pub message: String,
    pub enforcement: Enforcement,
}

/// Starts the periodic audit; `interval` zero leaves it off.
pub fn start(app: &App, interval: Duration) {
    if interval.is_zero() {
        tracing::info!("the periodic admission audit is off");
        return;
    }
    super::Periodic::new("admission-audit", interval).start(app, |app| async move { pass(&app).await });
}

/// Audits every loaded policy once and records what each found.
pub async fn pass(app: &App) {
    let policies = app.admission.current();
    if policies.is_empty() {
        return;
    }
    let started = Instant::now();
    let mut objects = Objects::new(&app.store);
    let mut violations = 0;
    for policy in policies.all() {
        let report = audit(&mut objects, policy.clone()).await;
        violations += report.total_violations;
        match record(&app.store, &policy.id, &report).await {
            // Deleted meanwhile: nothing to report on.
            Ok(_) | Err(StoreError::NotFound) => {}
            Err(error) => {
                tracing::warn!(policy = %policy.id, error = &error as &dyn std::error::Error, "could not record an audit; the next pass will")
            }
        }
    }
    tracing::debug!(policies = policies.len(), violations, elapsed = ?started.elapsed(), "admission audit pass");
}

/// The stored objects of one pass: each listing is read once and shared by the policies that need it.
struct Objects<'a> {
    store: &'a Store,
    lists: HashMap<(String, Option<String>), Arc<Vec<Value>>>,
    namespace_labels: Option<Arc<HashMap<String, Map<String, Value>>>>,
}

impl<'a> Objects<'a> {
    fn new(store: &'a Store) -> Self {
        Objects { store, lists: HashMap::new(), namespace_labels: None }
    }

    async fn list(&mut self, resource: &ResourceType, namespace: Option<&str>) -> Result<Arc<Vec<Value>>, StoreError> {
        let key = (resource.store_key(), namespace.map(str::to_string));
        if let Some(list) = self.lists.get(&key) {
            return Ok(list.clone());
        }
        let list = Arc::new(self.store.list(&key.0, namespace).await?.objects);
        self.lists.insert(key, list.clone());
        Ok(list)
    }

    /// Each namespace's labels, for policies with a `namespaceSelector`.
    async fn namespace_labels(&mut self) -> Result<Arc<HashMap<String, Map<String, Value>>>, StoreError> {
        if let Some(labels) = &self.namespace_labels {
            return Ok(labels.clone());
        }
        let namespaces = self.list(&NAMESPACE, None).await?;
        let labels: HashMap<String, Map<String, Value>> = namespaces
            .iter()
            .filter_map(|n| Some((object::name(n)?.to_string(), object::labels(n).cloned().unwrap_or_default())))
            .collect();
        let labels = Arc::new(labels);
        self.namespace_labels = Some(labels.clone());
        Ok(labels)
    }
}

/// The kinds an audit reviews: those admission reviews (not the policy kinds, not tokens).
fn auditable(resource: &ResourceType) -> bool {
    crate::strategy::of(resource).admitted()
}

/// Audits one policy against the objects its `match` selects.
async fn audit(objects: &mut Objects<'_>, policy: Arc<Policy>) -> Report {
    let last_run = object::now();
    let failed = |last_run: String, error: String| Report { last_run, error: Some(error), ..Report::default() };
    let own_namespace = policy.id.namespace.clone();
    let mut inputs: Vec<(&'static ResourceType, Arc<Vec<Value>>)> = Vec::new();
    for resource in registry::ALL.iter().copied().filter(|r| auditable(r)) {
        let kinds = policy.kinds();
        if (!kinds.is_empty() && !kinds.iter().any(|k| k == resource.kind)) || (own_namespace.is_some() && !resource.namespaced()) {
            continue;
        }
        match objects.list(resource, own_namespace.as_deref()).await {
            Ok(list) => inputs.push((resource, list)),
            Err(error) => return failed(last_run, format!("could not list {}: {error}", resource.plural)),
        }
    }
    // A policy that reads existing objects (`data.inventory`) sees, as at admission, those of its
    // inventory kinds in the audited object's namespace and the cluster-scoped ones.
    let mut inventory: Vec<Arc<Vec<Value>>> = Vec::new();
    for resource in registry::ALL.iter().copied().filter(|r| policy.inventory_kinds().iter().any(|k| k == r.kind)) {
        match objects.list(resource, own_namespace.as_deref().filter(|_| resource.namespaced())).await {
            Ok(list) => inventory.push(list),
            Err(error) => return failed(last_run, format!("could not list {}: {error}", resource.plural)),
        }
    }
    let namespace_labels = match policy.needs_namespace_labels() {
        true => match objects.namespace_labels().await {
            Ok(labels) => Some(labels),
            Err(error) => return failed(last_run, format!("could not list namespaces: {error}")),
        },
        false => None,
    };
    // Rego runs off the async workers: a pass may evaluate thousands of objects.
    let started = last_run.clone();
    let evaluation = move || evaluate(&policy, &inputs, &inventory, namespace_labels.as_deref(), started);
    match tokio::task::spawn_blocking(evaluation).await {
        Ok(report) => report,
        Err(error) => failed(last_run, format!("the audit stopped: {error}")),
    }
}

/// Evaluates `policy` on every selected object of `inputs`, within the bounds of a pass.
fn evaluate(
    policy: &Policy,
    inputs: &[(&'static ResourceType, Arc<Vec<Value>>)],
    inventory: &[Arc<Vec<Value>>],
    namespace_labels: Option<&HashMap<String, Map<String, Value>>>,
    last_run: String,
) -> Report {
    let began = Instant::now();
    let mut report = Report { last_run, ..Report::default() };
    let mut failures = 0;
    let mut first_failure = None;
    // `data.inventory` per namespace (`None`: for cluster-scoped objects), built when first needed:
    // the cluster-scoped objects of the inventory kinds and the namespaced ones in that namespace.
    let mut inventories: HashMap<Option<&str>, Result<_, String>> = HashMap::new();
    let namespace_inventory = |namespace: Option<&str>| {
        let objects = inventory.iter().flat_map(|list| list.iter()).filter(move |o| match object::namespace(o).filter(|n| !n.is_empty()) {
            Some(theirs) => Some(theirs) == namespace,
            None => true,
        });
        kapsel_admission::inventory(objects)
    };
    'pass: for (resource, objects) in inputs {
        for object in objects.iter() {
            let namespace = object::namespace(object).filter(|n| !n.is_empty());
            let stored = Stored {
                group: resource.group,
                version: resource.version,
                kind: resource.kind,
                resource: resource.plural,
                object,
                namespace_labels: namespace.and_then(|n| namespace_labels?.get(n)),
            };
            if !policy.audits(&stored) {
                continue;
            }
            if report.objects_reviewed >= MAX_OBJECTS || began.elapsed() >= MAX_EVALUATION {
                report.truncated = true;
                break 'pass;
            }
            report.objects_reviewed += 1;
            let name = stored.name().to_string();
            let data = match inventory.is_empty() {
                true => None,
                false => Some(inventories.entry(namespace).or_insert_with(|| namespace_inventory(namespace))),
            };
            let outcome = match data {
                None => stored.review().and_then(|review| policy.evaluate(&review, None)),
                Some(Err(error)) => Err(error.clone()),
                Some(Ok(data)) => stored.review().and_then(|review| policy.evaluate(&review, Some(&*data))),
            };
            match outcome {
                Ok(violations) => {
                    report.total_violations += violations.len();
                    let room = REPORTED_VIOLATIONS.saturating_sub(report.violations.len());
                    report.violations.extend(violations.into_iter().take(room).map(|violation| Found {
                        kind: resource.kind.to_string(),
                        namespace: namespace.map(str::to_string),
                        name: name.clone(),
                        message: violation.msg,
                        enforcement: policy.enforcement,
                    }));
                }
                Err(error) => {
                    failures += 1;
                    first_failure.get_or_insert_with(|| format!("{} {}: {error}", resource.kind, qualified(namespace, &name)));
                }
            }
        }
    }
    if let Some(first) = first_failure {
        report.error = Some(format!("{failures} of {} objects could not be evaluated; the first: {first}", report.objects_reviewed));
    }
    report
}

/// Writes `report` as the policy's `status.audit`, leaving the rest of its
/// status as it is; returns the policy as stored.
pub async fn record(store: &Store, id: &PolicyId, report: &Report) -> Result<Value, StoreError> {
    let key = policy_key(id);
    let audit = serde_json::to_value(report).expect("an audit report is JSON");
    let mut attempt = 0;
    loop {
        let mut current = store.get(&key).await?;
        if !current.get("status").is_some_and(Value::is_object) {
            current["status"] = json!({});
        }
        current["status"]["audit"] = audit.clone();
        let expected = object::resource_version(&current).and_then(Result::ok);
        match store.update(key.clone(), current, expected).await {
            Ok(change) => return Ok((*change.object).clone()),
            Err(StoreError::Conflict { .. }) if attempt + 1 < STATUS_RETRIES => attempt += 1,
            Err(error) => return Err(error),
        }
    }
}

/// Audits one policy now, for whoever may update it (`POST …/audit` on
/// the policy, served by `crate::http::audits`); answers with the policy and its new `status.audit`.
pub async fn on_demand(app: &App, ctx: &Context, id: PolicyId) -> Result<Value, ApiError> {
    let identity = &ctx.identity;
    let resource = policy_kind(&id);
    authorize(identity, Verb::Update, resource, id.namespace.as_deref())?;
    let stored = app.store.get(&policy_key(&id)).await.map_err(|e| ApiError::from_store(e, resource, &id.name))?;
    app.admission.audit_permit(identity, &id)?;
    let policy = match app.admission.current().get(&id) {
        Some(policy) => policy.clone(),
        // Stored around the API: compile what is stored.
        None => Arc::new(
            crate::admission::compile(&stored)
                .map_err(|e| ApiError::invalid(resource, &id.name, vec![FieldError::invalid(e.field, e.message)]))?,
        ),
    };
    let report = audit(&mut Objects::new(&app.store), policy).await;
    record(&app.store, &id, &report).await.map_err(|e| ApiError::from_store(e, resource, &id.name))
}
