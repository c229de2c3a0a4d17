//! `ResourceQuota` enforcement, as Kubernetes' quota admission and quota
//! controller do it together, but exact by construction: a write that
//! changes what a namespace uses of a resource some quota limits commits in
//! one atomic store write with an adjustment of each such quota
//! (`WriteOp::Adjust`) that checks the charge against the quota's
//! `status.used` *as stored at that moment* and adds it, inside the
//! writer's transaction. Concurrent creates are batched by the group commit
//! and charged one after the other there, so 32 clients creating at once
//! neither over-admit nor serialize on a lock, and a second supervisor on
//! the same PostgreSQL is ordered by the store's writer lock.
//!
//! What an object uses ([`usage`]): every object counts 1 of
//! `count/<plural>[.<group>]`, and its kind's strategy says what else, as
//! Kubernetes' quota evaluators do (`crate::strategy`: a pod that has not
//! ended uses `pods` and its effective requests and limits, an `Artifact`
//! the bytes of its images as `kapsel.io/artifact-storage`), and what a
//! quota requires a write to specify (a new container's cpu and memory).
//! Pushes are charged like any write (`artifacts.rs` calls [`charge_for`]
//! and [`commit`]).
//!
//! Sums never wrap: quantities add and subtract saturating (a total of
//! many huge requests stays huge and exceeds every limit) and sizes beyond
//! `i64::MAX` bytes count as `i64::MAX`.
//!
//! A quota's `status` (`hard`, `used`) is the platform's (only IT admins
//! may write any `/status`, and a pod's size cannot change after create):
//! every write of a quota recounts it from the namespace's objects, guarded
//! by the quota's revision so no charge slips between the count and the
//! write; a new quota is recounted again a moment later (a create that did
//! not see it yet), and a resync pass ([`resync`]) corrects any drift.
//! Platform writers that go to the store directly (Events, audit and
//! plug-in statuses) are not charged; `count/events` and
//! `count/resourcequotas` are refused for that reason.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use kapsel_api::kinds::resource_quota::{RESOURCE_QUOTA, Usage, count_name};
use kapsel_api::{Quantity, ResourceType, object, registry};
use kapsel_store::{Adjustment, Change, Key, StoreError, WriteOp};
use serde_json::{Value, json};

use crate::App;
use crate::error::ApiError;
use crate::strategy;

/// How often every quota's usage is recomputed from the objects.
pub const RESYNC_INTERVAL: Duration = Duration::from_secs(30);

/// How many times a charge or a recount is retried when what it read changes underneath it.
const RETRIES: usize = 8;

/// How long after a quota is created its usage is counted again (a write
/// that had read the namespace's quotas just before it existed has landed by then).
const RECOUNT_AFTER_CREATE: Duration = Duration::from_secs(1);

/// What `object` (of `resource`) uses of quota-tracked resources: its
/// count, and what its kind's strategy says it uses.
pub fn usage(resource: &ResourceType, object: &Value) -> Usage {
    let mut usage = Usage::new();
    usage.insert(count_name(resource), Quantity::from_units(1));
    strategy::of(resource).usage(object, &mut usage);
    usage
}

/// The quantities of a map of them at `pointer` (`/spec/hard`, `/resources/limits`), by name.
fn amounts_at(object: &Value, pointer: &str) -> Usage {
    object
        .pointer(pointer)
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(name, value)| Some((name.clone(), Quantity::from_json(value)?)))
        .collect()
}

/// `new - old` for every resource either names.
fn difference(new: &Usage, old: &Usage) -> Usage {
    let names: BTreeSet<&String> = new.keys().chain(old.keys()).collect();
    names
        .into_iter()
        .map(|name| (name.clone(), new.get(name).copied().unwrap_or_default() - old.get(name).copied().unwrap_or_default()))
        .filter(|(_, change)| *change != Quantity::default())
        .collect()
}

fn to_json(amounts: &Usage) -> Value {
    Value::Object(amounts.iter().map(|(name, quantity)| (name.clone(), json!(quantity.to_string()))).collect())
}

fn quota_key(quota: &Value) -> Key {
    Key::new(RESOURCE_QUOTA.store_key(), object::namespace(quota).unwrap_or_default(), object::name(quota).unwrap_or_default())
}

fn revision(object: &Value) -> Option<i64> {
    object::resource_version(object).and_then(Result::ok)
}

/// What the objects of `namespace` use of the resources `names`, counted from the store.
async fn namespace_usage(app: &App, namespace: &str, names: &BTreeSet<String>) -> Result<Usage, ApiError> {
    let mut totals: Usage = names.iter().map(|name| (name.clone(), Quantity::default())).collect();
    for resource in registry::ALL.iter().filter(|r| r.namespaced()) {
        let uses_one = strategy::of(resource).usage_names().iter().any(|name| names.contains(*name));
        if !(uses_one || names.contains(&count_name(resource))) {
            continue;
        }
        let listing = app.store.list(&resource.store_key(), Some(namespace)).await.map_err(|e| ApiError::from_store(e, resource, ""))?;
        for object in &listing.objects {
            for (name, quantity) in usage(resource, object) {
                if let Some(total) = totals.get_mut(&name) {
                    *total = *total + quantity;
                }
            }
        }
    }
    Ok(totals)
}

/// `quota` with its status recomputed: `hard` from the spec, `used` counted from the namespace.
async fn with_fresh_status(app: &App, namespace: &str, mut quota: Value) -> Result<Value, ApiError> {
    let hard = amounts_at(&quota, "/spec/hard");
    let used = namespace_usage(app, namespace, &hard.keys().cloned().collect()).await?;
    let hard_text = quota.pointer("/spec/hard").cloned().unwrap_or_else(|| json!({}));
    quota["status"] = json!({"hard": hard_text, "used": to_json(&used)});
    Ok(quota)
}

/// What a write of an object in a namespace changes of the quota-tracked
/// resources there, worked out before the write.
#[derive(Debug, Clone)]
pub struct Charge {
    resource: &'static ResourceType,
    namespace: String,
    name: String,
    change: Usage,
    /// What the write leaves unspecified that a quota limiting it requires
    /// it to specify (a new container's cpu or memory, say).
    unspecified: Vec<&'static str>,
    /// The revision of the object the charge was worked out from (updates, deletes).
    old_revision: Option<i64>,
}

impl Charge {
    /// The charge of writing `new` over `old` (`None`: created, or deleted).
    fn new(resource: &'static ResourceType, namespace: &str, name: &str, old: Option<&Value>, new: Option<&Value>) -> Charge {
        let of = |object: Option<&Value>| object.map(|o| usage(resource, o)).unwrap_or_default();
        let unspecified = new.map(|new| strategy::of(resource).unspecified_for_quota(new, old)).unwrap_or_default();
        Charge {
            resource,
            namespace: namespace.to_string(),
            name: name.to_string(),
            change: difference(&of(new), &of(old)),
            unspecified,
            old_revision: old.and_then(revision),
        }
    }

    /// Whether the write changes nothing a quota could limit.
    fn is_empty(&self) -> bool {
        self.change.is_empty() && self.unspecified.is_empty()
    }

    /// Whether a quota with these `hard` limits has a say in this write:
    /// it limits something the write changes, or something a new container
    /// leaves unspecified.
    fn limited_by(&self, hard: &Usage) -> bool {
        self.change.keys().any(|name| hard.contains_key(name)) || !self.unspecified(hard).is_empty()
    }

    /// What `hard` limits that the write leaves unspecified.
    fn unspecified(&self, hard: &Usage) -> Vec<&'static str> {
        self.unspecified.iter().copied().filter(|name| hard.contains_key(*name)).collect()
    }
}

/// The charge of a write in `namespace`, or `None` when no quota there can
/// have a say in it (most namespaces: the charge is not even worked out).
pub async fn charge_for(
    app: &App,
    resource: &'static ResourceType,
    namespace: &str,
    name: &str,
    old: Option<&Value>,
    new: Option<&Value>,
) -> Result<Option<Charge>, ApiError> {
    let quotas =
        app.store.list(&RESOURCE_QUOTA.store_key(), Some(namespace)).await.map_err(|e| ApiError::from_store(e, &RESOURCE_QUOTA, ""))?;
    if quotas.objects.is_empty() && !std::ptr::eq(resource, &RESOURCE_QUOTA) {
        return Ok(None);
    }
    Ok(Some(Charge::new(resource, namespace, name, old, new)))
}

/// What charging `charge` makes of `quota` as stored: the quota with its
/// new `status.used` (unchanged when it limits nothing the write changes),
/// or the refusal in Kubernetes' words.
fn charged(charge: &Charge, quota: &Value) -> Result<Value, String> {
    let hard = amounts_at(quota, "/spec/hard");
    if !charge.limited_by(&hard) {
        return Ok(quota.clone());
    }
    let name = object::name(quota).unwrap_or_default();
    let refused = |why: String| format!("{} {:?} is forbidden: {why}", charge.resource.plural, charge.name);
    let used = amounts_at(quota, "/status/used");
    if amounts_at(quota, "/status/hard") != hard || !hard.keys().all(|limited| used.contains_key(limited)) {
        // Every write of a quota counts its status; only one written around the API lacks it.
        return Err(refused(format!("quota {name} has not been counted yet; try again in a moment")));
    }
    let missing = charge.unspecified(&hard);
    if !missing.is_empty() {
        return Err(refused(format!("failed quota: {name}: must specify {}", missing.join(", "))));
    }
    let exceeded: Vec<&String> = charge
        .change
        .iter()
        .filter(|(limited, delta)| {
            hard.get(*limited)
                .is_some_and(|limit| **delta > Quantity::default() && used.get(*limited).copied().unwrap_or_default() + **delta > *limit)
        })
        .map(|(limited, _)| limited)
        .collect();
    if !exceeded.is_empty() {
        let list = |amounts: &dyn Fn(&String) -> Quantity| {
            exceeded.iter().map(|limited| format!("{limited}={}", amounts(limited))).collect::<Vec<_>>().join(",")
        };
        return Err(refused(format!(
            "exceeded quota: {name}, requested: {}, used: {}, limited: {}",
            list(&|limited| charge.change[limited]),
            list(&|limited| used.get(limited).copied().unwrap_or_default()),
            list(&|limited| hard[limited]),
        )));
    }
    let mut next_used = used;
    for (limited, delta) in charge.change.iter().filter(|(limited, _)| hard.contains_key(*limited)) {
        let total = next_used.entry(limited.clone()).or_default();
        *total = *total + *delta;
        if total.is_negative() {
            *total = Quantity::default();
        }
    }
    let mut next = quota.clone();
    next["status"]["used"] = to_json(&next_used);
    Ok(next)
}

/// The namespace's quotas, as stored now.
async fn quotas_of(app: &App, namespace: &str) -> Result<Vec<Value>, ApiError> {
    Ok(app
        .store
        .list(&RESOURCE_QUOTA.store_key(), Some(namespace))
        .await
        .map_err(|e| ApiError::from_store(e, &RESOURCE_QUOTA, ""))?
        .objects)
}

/// The quotas of `quotas` that have a say in the write `charge` describes.
fn affected<'a>(quotas: &'a [Value], charge: &Charge) -> impl Iterator<Item = &'a Value> {
    quotas.iter().filter(|quota| charge.limited_by(&amounts_at(quota, "/spec/hard")))
}

/// Checks a write against its namespace's quotas as they are now, without
/// writing (a dry run).
pub async fn check(app: &App, charge: &Charge) -> Result<(), ApiError> {
    if charge.is_empty() {
        return Ok(());
    }
    for quota in affected(&quotas_of(app, &charge.namespace).await?, charge) {
        charged(charge, quota).map_err(ApiError::Forbidden)?;
    }
    Ok(())
}

/// Commits `op` (the write `charge` describes) with an adjustment of every
/// quota of the namespace that has a say in it, atomically; a write that
/// would exceed one is refused with 403 and nothing is stored. A write of a
/// quota itself gets its status recounted. Returns the changes of `op`
/// alone, or the store's failure of `op` as it is (for the caller to word).
///
/// The charge was worked out from the object as it was read; an update or
/// delete the client did not make conditional is made conditional on that
/// revision here, and when the object changed meanwhile (a status write
/// that ended the pod, say) the charge is worked out again.
pub async fn commit(app: &App, charge: Charge, op: WriteOp) -> Result<Result<Vec<Change>, StoreError>, ApiError> {
    if std::ptr::eq(charge.resource, &RESOURCE_QUOTA) {
        return commit_quota(app, &charge, op).await;
    }
    if charge.is_empty() {
        return Ok(app.store.write(op).await);
    }
    let (mut charge, mut op, guarded_here) = guard(charge, op);
    for _ in 0..RETRIES {
        let quotas = quotas_of(app, &charge.namespace).await?;
        let keys: Vec<Key> = affected(&quotas, &charge).map(quota_key).collect();
        if keys.is_empty() {
            // No quota has a say: the write goes as the client made it.
            let op = if guarded_here { with_expected_revision(op, None) } else { op };
            return Ok(app.store.write(op).await);
        }
        let shared = Arc::new(charge.clone());
        let adjust = Adjustment(Arc::new(move |quota: &Value| charged(&shared, quota)));
        let mut ops = vec![op.clone()];
        ops.extend(keys.into_iter().map(|key| WriteOp::Adjust { key, adjust: adjust.clone() }));
        match app.store.write(WriteOp::Atomic(ops)).await {
            Ok(mut changes) => {
                // The op's own change; the quotas' changes went to watchers.
                changes.truncate(1);
                return Ok(Ok(changes));
            }
            Err(StoreError::AtomicOpFailed { index: 0, error }) => match *error {
                // The object moved since the charge was worked out: work it out again.
                StoreError::Conflict { .. } if guarded_here => {
                    let key = Key::new(charge.resource.store_key(), charge.namespace.clone(), charge.name.clone());
                    let current = match app.store.get(&key).await {
                        Ok(current) => current,
                        Err(error) => return Ok(Err(error)),
                    };
                    let new = match &op {
                        WriteOp::Update { object, .. } => Some(object),
                        _ => None,
                    };
                    charge = Charge::new(charge.resource, &charge.namespace, &charge.name, Some(&current), new);
                    op = with_expected_revision(op, charge.old_revision);
                }
                error => return Ok(Err(error)),
            },
            Err(StoreError::AtomicOpFailed { error, .. }) => match *error {
                StoreError::Refused(message) => return Err(ApiError::Forbidden(message)),
                // A quota deleted meanwhile: charge the ones there are.
                StoreError::NotFound => {}
                other => return Ok(Err(other)),
            },
            Err(other) => return Ok(Err(other)),
        }
    }
    Err(ApiError::conflict(charge.resource, &charge.name, "the namespace's quotas kept changing while the write was charged; try again"))
}

/// Makes an unconditional update or delete conditional on the revision the
/// charge was worked out from; says whether it did.
fn guard(charge: Charge, op: WriteOp) -> (Charge, WriteOp, bool) {
    match &op {
        WriteOp::Update { expected_revision: None, .. } | WriteOp::Delete { expected_revision: None, .. }
            if charge.old_revision.is_some() =>
        {
            let op = with_expected_revision(op, charge.old_revision);
            (charge, op, true)
        }
        _ => (charge, op, false),
    }
}

fn with_expected_revision(op: WriteOp, revision: Option<i64>) -> WriteOp {
    match op {
        WriteOp::Update { key, object, .. } => WriteOp::Update { key, object, expected_revision: revision },
        WriteOp::Delete { key, .. } => WriteOp::Delete { key, expected_revision: revision },
        other => other,
    }
}

/// Writes a quota (create, update, status write) with its status counted
/// from the namespace's objects. An update is guarded by the revision read
/// before the count (the client's, when it gave one), so a charge that
/// lands meanwhile makes it count again; a new quota is counted again a
/// moment after it is created.
async fn commit_quota(app: &App, charge: &Charge, op: WriteOp) -> Result<Result<Vec<Change>, StoreError>, ApiError> {
    let namespace = charge.namespace.clone();
    match op {
        WriteOp::Create { key, object } => {
            let object = with_fresh_status(app, &namespace, object).await?;
            let created = app.store.write(WriteOp::Create { key, object }).await;
            if created.is_ok() {
                let app = app.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(RECOUNT_AFTER_CREATE).await;
                    if let Err(error) = recount(&app, &namespace).await {
                        tracing::warn!(namespace, error = %error, "recounting a new quota failed; the resync will");
                    }
                });
            }
            Ok(created)
        }
        WriteOp::Update { key, object, expected_revision } => {
            for _ in 0..RETRIES {
                let stored = match app.store.get(&key).await {
                    Ok(stored) => stored,
                    Err(error) => return Ok(Err(error)),
                };
                let guard = expected_revision.or_else(|| revision(&stored));
                let counted = with_fresh_status(app, &namespace, object.clone()).await?;
                match app.store.write(WriteOp::Update { key: key.clone(), object: counted, expected_revision: guard }).await {
                    Err(StoreError::Conflict { .. }) if expected_revision.is_none() => continue,
                    written => return Ok(written),
                }
            }
            Err(ApiError::conflict(&RESOURCE_QUOTA, &charge.name, "the quota kept changing while it was counted; try again"))
        }
        other => Ok(app.store.write(other).await),
    }
}

/// Recounts every quota's usage from the objects and writes the ones that
/// drifted. Runs every [`RESYNC_INTERVAL`] until the server stops.
/// One pass of the quota recount controller (every [`RESYNC_INTERVAL`]).
pub async fn resync(app: App) {
    if let Err(error) = resync_once(&app).await {
        tracing::warn!(error = %error, "recounting quota usage failed; trying again later");
    }
}

/// One recount of every quota; returns how many were corrected.
pub async fn resync_once(app: &App) -> Result<usize, ApiError> {
    let quotas = app.store.list(&RESOURCE_QUOTA.store_key(), None).await.map_err(|e| ApiError::from_store(e, &RESOURCE_QUOTA, ""))?;
    let namespaces: BTreeSet<String> = quotas.objects.iter().filter_map(|q| object::namespace(q).map(str::to_string)).collect();
    let mut corrected = 0;
    for namespace in namespaces {
        corrected += recount(app, &namespace).await?;
    }
    Ok(corrected)
}

/// Recounts the quotas of `namespace`, each guarded by the revision read
/// before its count (a charge landing meanwhile makes it count again);
/// returns how many were corrected.
async fn recount(app: &App, namespace: &str) -> Result<usize, ApiError> {
    let mut corrected = 0;
    for listed in quotas_of(app, namespace).await? {
        let key = quota_key(&listed);
        for _ in 0..RETRIES {
            let quota = match app.store.get(&key).await {
                Ok(quota) => quota,
                Err(StoreError::NotFound) => break,
                Err(other) => return Err(ApiError::from_store(other, &RESOURCE_QUOTA, &key.name)),
            };
            let fresh = with_fresh_status(app, namespace, quota.clone()).await?;
            if fresh.get("status") == quota.get("status") {
                break;
            }
            match app.store.update(key.clone(), fresh.clone(), revision(&quota)).await {
                Ok(_) => {
                    tracing::info!(namespace, quota = key.name, used = %fresh["status"]["used"], "corrected a quota's usage");
                    corrected += 1;
                    break;
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(StoreError::NotFound) => break,
                Err(other) => return Err(ApiError::from_store(other, &RESOURCE_QUOTA, &key.name)),
            }
        }
    }
    Ok(corrected)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use kapsel_api::kinds::artifact::{ARTIFACT, ARTIFACT_STORAGE};
    use kapsel_api::kinds::pod::POD;

    use super::*;

    fn artifact(sizes: &[u64]) -> Value {
        let images: Vec<Value> = sizes
            .iter()
            .enumerate()
            .map(|(i, size)| json!({"digest": format!("sha256:{i:064x}"), "size": size, "pushedAt": "2026-01-01T00:00:00Z"}))
            .collect();
        json!({"metadata": {"name": "a", "namespace": "ns", "resourceVersion": "7"}, "spec": {"images": images}})
    }

    fn quota(hard: Value, used: Value) -> Value {
        json!({"metadata": {"name": "q", "namespace": "ns"}, "spec": {"hard": hard}, "status": {"hard": hard, "used": used}})
    }

    #[test]
    fn an_artifact_uses_the_bytes_of_its_images() {
        let used = usage(&ARTIFACT, &artifact(&[1000, 24]));
        assert_eq!(used["count/artifacts.kapsel.io"], Quantity::from_units(1));
        assert_eq!(used[ARTIFACT_STORAGE], Quantity::from_units(1024));
    }

    #[test]
    fn huge_sizes_saturate_and_exceed_every_limit() {
        // Sizes beyond i64 count as i64::MAX each; their sum does not wrap around to something small.
        let huge = artifact(&[u64::MAX, u64::MAX, u64::MAX]);
        let used = usage(&ARTIFACT, &huge);
        assert!(used[ARTIFACT_STORAGE] >= Quantity::from_units(i64::MAX), "{}", used[ARTIFACT_STORAGE]);
        let charge = Charge::new(&ARTIFACT, "ns", "a", None, Some(&huge));
        let limit = quota(json!({ARTIFACT_STORAGE: "7Ei"}), json!({ARTIFACT_STORAGE: "1"}));
        let refused = charged(&charge, &limit).unwrap_err();
        assert!(refused.contains("exceeded quota: q"), "{refused}");
        // Already used near the top, a small charge still exceeds rather than wraps.
        let full = quota(json!({ARTIFACT_STORAGE: "7Ei"}), json!({ARTIFACT_STORAGE: "7Ei"}));
        let small = Charge::new(&ARTIFACT, "ns", "a", Some(&artifact(&[1])), Some(&artifact(&[1, 1])));
        assert!(charged(&small, &full).unwrap_err().contains("exceeded quota"));
        // Freeing more than is recorded leaves zero, never a negative or wrapped total.
        let freed = Charge::new(&ARTIFACT, "ns", "a", Some(&huge), None);
        let next = charged(&freed, &quota(json!({ARTIFACT_STORAGE: "1Gi"}), json!({ARTIFACT_STORAGE: "10"}))).unwrap();
        assert_eq!(next["status"]["used"][ARTIFACT_STORAGE], "0");
    }

    #[test]
    fn counts_do_not_wrap() {
        let near_max =
            quota(json!({"count/artifacts.kapsel.io": "9223372036854775807"}), json!({"count/artifacts.kapsel.io": "9223372036854775807"}));
        let create = Charge::new(&ARTIFACT, "ns", "b", None, Some(&artifact(&[])));
        assert!(charged(&create, &near_max).unwrap_err().contains("exceeded quota"));
    }

    /// A pod `web` in `ns` with these containers (and init containers), stored at revision 3.
    fn pod(containers: Value, init_containers: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": "ns", "resourceVersion": "3"},
            "spec": {"containers": containers, "initContainers": init_containers}, "status": {"phase": "Pending"}})
    }

    fn container(name: &str, requests: Value, limits: Value) -> Value {
        json!({"name": name, "image": "app:1", "resources": {"requests": requests, "limits": limits}})
    }

    /// `usage` as text, by resource name.
    fn text(usage: &Usage) -> BTreeMap<&str, String> {
        usage.iter().map(|(name, quantity)| (name.as_str(), quantity.to_string())).collect()
    }

    #[test]
    fn a_pod_uses_its_count_and_its_effective_requests_and_limits() {
        // Containers: 100m + 200m CPU, 64Mi + 64Mi memory; the init container: 500m CPU, 100Mi memory.
        let pod = pod(
            json!([
                container("a", json!({"cpu": "100m", "memory": "64Mi"}), json!({"cpu": "1", "memory": "64Mi"})),
                container("b", json!({"cpu": "200m", "memory": "64Mi"}), json!({"cpu": "1", "memory": "64Mi"})),
            ]),
            json!([container("setup", json!({"cpu": "500m", "memory": "100Mi"}), json!({"cpu": "500m", "memory": "100Mi"}))]),
        );
        // Per resource, the larger of the containers' sum and the largest init container.
        let expected = BTreeMap::from([
            ("count/pods", "1".to_string()),
            ("pods", "1".to_string()),
            ("requests.cpu", "500m".to_string()),
            ("cpu", "500m".to_string()),
            ("requests.memory", "128Mi".to_string()),
            ("memory", "128Mi".to_string()),
            ("limits.cpu", "2".to_string()),
            ("limits.memory", "128Mi".to_string()),
        ]);
        assert_eq!(text(&usage(&POD, &pod)), expected);
    }

    #[test]
    fn the_largest_init_container_counts_not_their_sum() {
        let pod = pod(
            json!([container("a", json!({"memory": "64Mi"}), json!({}))]),
            json!([container("first", json!({"memory": "256Mi"}), json!({})), container("second", json!({"memory": "192Mi"}), json!({})),]),
        );
        let used = usage(&POD, &pod);
        assert_eq!(used["requests.memory"].to_string(), "256Mi");
        assert_eq!(used["memory"].to_string(), "256Mi");
        assert!(!used.contains_key("limits.memory"), "no container has a memory limit: {used:?}");
    }

    #[test]
    fn a_request_left_out_is_its_limit() {
        let pod = pod(json!([container("a", json!({"memory": "32Mi"}), json!({"cpu": "1500m", "memory": "64Mi"}))]), json!([]));
        let used = usage(&POD, &pod);
        assert_eq!(used["requests.cpu"].to_string(), "1500m");
        assert_eq!(used["requests.memory"].to_string(), "32Mi");
        assert_eq!(used["limits.memory"].to_string(), "64Mi");
    }

    #[test]
    fn only_cpu_memory_and_claimed_storage_are_counted() {
        let mut pod = pod(
            json!([container(
                "a",
                json!({"cpu": "1", "ephemeral-storage": "1Gi", "example.com/gpu": "1"}),
                json!({"example.com/gpu": "1"})
            )]),
            json!([]),
        );
        pod["spec"]["volumes"] = json!([
            {"name": "scratch", "ephemeral": {"volumeClaimTemplate": {"spec": {"resources": {"requests": {"storage": "1Gi"}}}}}},
            {"name": "cache", "ephemeral": {"volumeClaimTemplate": {"spec": {"resources": {"requests": {"storage": "512Mi"}}}}}},
            {"name": "tmp", "emptyDir": {"sizeLimit": "8Gi"}},
        ]);
        let used = usage(&POD, &pod);
        let names: Vec<&str> = used.keys().map(String::as_str).collect();
        assert_eq!(names, ["count/pods", "cpu", "pods", "requests.cpu", "requests.storage"]);
        assert_eq!(used["requests.storage"].to_string(), "1536Mi");
    }

    #[test]
    fn a_pod_that_has_ended_uses_only_its_count() {
        for phase in ["Succeeded", "Failed"] {
            let mut pod = pod(json!([container("a", json!({"cpu": "1"}), json!({"cpu": "1"}))]), json!([]));
            pod["status"]["phase"] = json!(phase);
            assert_eq!(text(&usage(&POD, &pod)), BTreeMap::from([("count/pods", "1".to_string())]), "{phase}");
        }
    }

    #[test]
    fn a_create_charges_and_a_delete_refunds() {
        let web = pod(json!([container("a", json!({"cpu": "250m"}), json!({"cpu": "250m"}))]), json!([]));
        let compute = quota(json!({"pods": "10", "requests.cpu": "2"}), json!({"pods": "3", "requests.cpu": "1"}));

        let create = Charge::new(&POD, "ns", "web", None, Some(&web));
        let after_create = charged(&create, &compute).unwrap();
        // What the quota does not limit (count/pods, limits.cpu) is not added to its usage.
        assert_eq!(after_create["status"]["used"], json!({"pods": "4", "requests.cpu": "1250m"}));
        assert_eq!(after_create["spec"], compute["spec"]);

        let delete = Charge::new(&POD, "ns", "web", Some(&web), None);
        assert_eq!(delete.old_revision, Some(3));
        let after_delete = charged(&delete, &after_create).unwrap();
        assert_eq!(after_delete["status"]["used"], json!({"pods": "3", "requests.cpu": "1"}));
        // A refund is never refused, even from a quota already over its limit.
        let over = quota(json!({"pods": "1"}), json!({"pods": "5"}));
        assert_eq!(charged(&delete, &over).unwrap()["status"]["used"], json!({"pods": "4"}));
    }

    #[test]
    fn a_pod_that_ends_gives_back_all_but_its_count() {
        let running = pod(json!([container("a", json!({"cpu": "500m"}), json!({"cpu": "500m"}))]), json!([]));
        let mut ended = running.clone();
        ended["status"]["phase"] = json!("Succeeded");
        let charge = Charge::new(&POD, "ns", "web", Some(&running), Some(&ended));
        let change: BTreeMap<&str, String> = text(&charge.change);
        assert_eq!(
            change,
            BTreeMap::from([
                ("cpu", "-500m".to_string()),
                ("limits.cpu", "-500m".to_string()),
                ("pods", "-1".to_string()),
                ("requests.cpu", "-500m".to_string()),
            ])
        );
        // Relabelling a pod changes nothing a quota counts: the charge is empty.
        let mut relabelled = running.clone();
        relabelled["metadata"]["labels"] = json!({"app": "web"});
        assert!(Charge::new(&POD, "ns", "web", Some(&running), Some(&relabelled)).is_empty());
    }

    #[test]
    fn a_write_over_the_limit_is_refused_in_kubernetes_words() {
        let web = pod(json!([container("a", json!({"cpu": "500m", "memory": "1Gi"}), json!({"cpu": "500m", "memory": "1Gi"}))]), json!([]));
        let charge = Charge::new(&POD, "ns", "web", None, Some(&web));
        let compute = quota(
            json!({"requests.cpu": "1", "requests.memory": "2Gi", "pods": "5"}),
            json!({"requests.cpu": "800m", "requests.memory": "1536Mi", "pods": "1"}),
        );
        assert_eq!(
            charged(&charge, &compute).unwrap_err(),
            r#"pods "web" is forbidden: exceeded quota: q, requested: requests.cpu=500m,requests.memory=1Gi, used: requests.cpu=800m,requests.memory=1536Mi, limited: requests.cpu=1,requests.memory=2Gi"#
        );
        // Up to the limit exactly is admitted.
        let room = quota(json!({"requests.cpu": "1"}), json!({"requests.cpu": "500m"}));
        assert_eq!(charged(&charge, &room).unwrap()["status"]["used"], json!({"requests.cpu": "1"}));
    }

    #[test]
    fn a_quota_that_limits_what_the_write_changes_not_is_left_alone() {
        let web = pod(json!([container("a", json!({"cpu": "1"}), json!({"cpu": "1"}))]), json!([]));
        let charge = Charge::new(&POD, "ns", "web", None, Some(&web));
        // Full, and not counted yet: neither matters to a quota that has no say.
        let artifacts = json!({"metadata": {"name": "q", "namespace": "ns"}, "spec": {"hard": {"count/artifacts.kapsel.io": "0"}}});
        assert!(!charge.limited_by(&amounts_at(&artifacts, "/spec/hard")));
        assert_eq!(charged(&charge, &artifacts).unwrap(), artifacts);
    }

    #[test]
    fn a_quota_not_counted_yet_refuses_until_it_is() {
        let web = pod(json!([container("a", json!({"cpu": "1"}), json!({"cpu": "1"}))]), json!([]));
        let charge = Charge::new(&POD, "ns", "web", None, Some(&web));
        let uncounted = json!({"metadata": {"name": "q", "namespace": "ns"}, "spec": {"hard": {"pods": "10"}}});
        assert_eq!(
            charged(&charge, &uncounted).unwrap_err(),
            r#"pods "web" is forbidden: quota q has not been counted yet; try again in a moment"#
        );
        // Counted for another `hard` than the spec's (edited since): not counted yet either.
        let mut stale = quota(json!({"pods": "10", "requests.cpu": "4"}), json!({"pods": "1", "requests.cpu": "0"}));
        stale["status"]["hard"] = json!({"pods": "10"});
        assert!(charged(&charge, &stale).unwrap_err().contains("has not been counted yet"));
    }

    #[test]
    fn a_quota_on_compute_needs_every_new_container_to_specify_it() {
        let compute = quota(json!({"requests.cpu": "4", "limits.memory": "4Gi"}), json!({"requests.cpu": "0", "limits.memory": "0"}));
        let bare = pod(json!([json!({"name": "a", "image": "app:1"})]), json!([]));
        let charge = Charge::new(&POD, "ns", "web", None, Some(&bare));
        assert_eq!(
            charged(&charge, &compute).unwrap_err(),
            r#"pods "web" is forbidden: failed quota: q: must specify requests.cpu, limits.memory"#
        );
        // A limit stands for the request; an init container must specify as well.
        let mut sized = pod(json!([container("a", json!({}), json!({"cpu": "1", "memory": "1Gi"}))]), json!([]));
        charged(&Charge::new(&POD, "ns", "web", None, Some(&sized)), &compute).unwrap();
        sized["spec"]["initContainers"] = json!([container("setup", json!({"cpu": "1"}), json!({}))]);
        assert_eq!(
            charged(&Charge::new(&POD, "ns", "web", None, Some(&sized)), &compute).unwrap_err(),
            r#"pods "web" is forbidden: failed quota: q: must specify limits.memory"#
        );
        // A quota on pods alone asks nothing of containers.
        let pods = quota(json!({"pods": "4"}), json!({"pods": "0"}));
        charged(&charge, &pods).unwrap();
        // An update that adds no container is not asked again.
        let mut relabelled = bare.clone();
        relabelled["metadata"]["labels"] = json!({"app": "web"});
        let update = Charge::new(&POD, "ns", "web", Some(&bare), Some(&relabelled));
        assert_eq!(charged(&update, &compute).unwrap(), compute);
    }
}
