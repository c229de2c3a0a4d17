//! The application's operations on objects of every kind: get, list,
//! watch, create, update, patch and delete. Each takes an operation
//! [`Context`] (who asks, whether it is a dry run, how unknown fields are
//! treated) and returns objects and warnings, or an [`ApiError`]. They know
//! nothing of HTTP: the HTTP layer (`crate::http::resources`) parses a request
//! into a call and writes the answer; controllers, templates and
//! benchmarks call them directly, and their writes take the same path.
//!
//! A write's path: authorize → check the body's type, namespace and name
//! → stamp server fields → the kind's strategy prepares the object (a
//! pod's class and limit ranges) → validate → unknown fields → the
//! strategy's checks against other objects → admission
//! ([`crate::admission`]) → quota ([`crate::quota`]), charged in the same
//! atomic store write → the strategy's after-commit step ([`crate::strategy`]).

use std::sync::Arc;

use futures::StreamExt;
use kapsel_admission::Operation;
use kapsel_api::kinds::config::{CONFIG_MAP, SECRET};
use kapsel_api::kinds::namespace::NAMESPACE;
use kapsel_api::kinds::pod::POD;
use kapsel_api::{FieldError, ResourceType, object, validation};
use kapsel_store::{Change, ChangeType, Key, StoreError, WatchStream, WriteOp};
use rand::Rng as _;
use serde_json::{Map, Value};

use crate::App;
use crate::admission::Write;
use crate::auth::{Identity, Verb, authorize as authorize_role};
use crate::error::ApiError;
use crate::listing::{self, Page, Selection, visible};
use crate::operation::{Context, FieldValidation};
use crate::strategy::{self, Deleting, Deletion};
use crate::watches::WatchPermit;
use crate::{patch, quota};

/// How many times a patch is retried when the object changes underneath it.
const PATCH_RETRIES: usize = 5;

/// What an operation addresses: a kind, and a namespace, a name and a subresource where given.
#[derive(Debug, Clone)]
pub struct Target {
    pub resource: &'static ResourceType,
    /// The namespace (namespaced kinds), if any.
    pub namespace: Option<String>,
    pub name: Option<String>,
    /// `status`, or `None` for the object itself.
    pub subresource: Option<String>,
}

impl Target {
    /// The object `name` of `resource` in `namespace` (`None` for a cluster-scoped kind).
    pub fn object(resource: &'static ResourceType, namespace: Option<&str>, name: &str) -> Target {
        Target { resource, namespace: namespace.map(str::to_string), name: Some(name.to_string()), subresource: None }
    }

    /// The collection of `resource` in `namespace` (where new objects are created).
    pub fn collection(resource: &'static ResourceType, namespace: Option<&str>) -> Target {
        Target { resource, namespace: namespace.map(str::to_string), name: None, subresource: None }
    }

    fn name(&self) -> &str {
        self.name.as_deref().unwrap_or_default()
    }

    /// The store key of the named object.
    fn key(&self, name: &str) -> Key {
        Key::new(self.resource.store_key(), self.namespace.clone().unwrap_or_default(), name)
    }
}

/// What a write answers: the object as stored (or as it would be, on a dry run) and warnings for the client.
#[derive(Debug)]
pub struct Written {
    pub object: Value,
    pub warnings: Vec<String>,
}

/// A delete's options (Kubernetes' `DeleteOptions`, as far as they apply).
#[derive(Debug, Default, Clone)]
pub struct DeleteOptions {
    /// `preconditions.resourceVersion`: delete only this revision.
    pub expected_revision: Option<i64>,
    /// `gracePeriodSeconds`, checked by the caller (0 to the kind's maximum).
    pub grace_seconds: Option<i64>,
}

/// Whether `ctx` may do `verb` on `target`: the caller's role, a node's
/// rights (the pods bound to it, its Node and lease), and statuses, which
/// the platform writes. The operations check this themselves.
pub async fn authorize(app: &App, ctx: &Context, verb: Verb, target: &Target) -> Result<(), ApiError> {
    check_rights(Some(app), ctx, verb, target).await
}

/// What [`authorize`] checks without reading the store — all of it but
/// where a pod a node writes is bound, which its operation checks: the
/// HTTP layer asks this before it reads a request's body, at no store read.
pub async fn pre_authorize(ctx: &Context, verb: Verb, target: &Target) -> Result<(), ApiError> {
    check_rights(None, ctx, verb, target).await
}

async fn check_rights(app: Option<&App>, ctx: &Context, verb: Verb, target: &Target) -> Result<(), ApiError> {
    let identity = &ctx.identity;
    let authz_namespace = if std::ptr::eq(target.resource, &NAMESPACE) { target.name.as_deref() } else { target.namespace.as_deref() };
    authorize_role(identity, verb, target.resource, authz_namespace)?;
    if let Some(node) = &identity.node {
        // A node agent writes the status of the pods bound to it: read where the pod is bound.
        let bound_to = match app {
            Some(app) if std::ptr::eq(target.resource, &POD) && !verb.is_read() && target.name.is_some() => {
                // A pod that is gone is 404 to its node too (its agent then stops reporting about it).
                let name = target.name();
                let stored = app.store.get(&target.key(name)).await.map_err(|e| ApiError::from_store(e, target.resource, name))?;
                Some(stored.pointer("/spec/nodeName").and_then(Value::as_str).map(str::to_string))
            }
            // Without the store, a node's write of a pod is left to its operation.
            None if std::ptr::eq(target.resource, &POD) && !verb.is_read() && target.name.is_some() => None,
            _ => Some(None),
        };
        if let Some(bound_to) = bound_to {
            let (namespace, name, subresource) = (target.namespace.as_deref(), target.name.as_deref(), target.subresource.as_deref());
            crate::auth::node_may_touch(node, verb, target.resource, namespace, name, subresource, bound_to.as_deref())?;
        }
        if let Some(app) = app
            && is_configuration(target.resource)
        {
            node_uses_configuration(app, node, target).await?;
        }
    }
    if target.subresource.as_deref() == Some("status") && !verb.is_read() && !identity.admin && identity.node.is_none() {
        // What a status says (a pod's phase, a quota's usage, a policy's audit) is the platform's to write.
        return Err(ApiError::Forbidden(format!(
            "{plural}/status is forbidden: User {user:?} cannot {verb} resource \"{plural}/status\": statuses are written by the platform",
            plural = target.resource.plural,
            user = identity.user,
            verb = verb.as_str(),
        )));
    }
    Ok(())
}

fn is_configuration(resource: &ResourceType) -> bool {
    std::ptr::eq(resource, &CONFIG_MAP) || std::ptr::eq(resource, &SECRET)
}

/// A node reads a ConfigMap or Secret only while a pod bound to it, not
/// ended, uses it (as Kubernetes' node authorizer decides): a node agent
/// cannot read a namespace's secrets its pods do not use.
async fn node_uses_configuration(app: &App, node: &str, target: &Target) -> Result<(), ApiError> {
    let (Some(namespace), Some(name)) = (target.namespace.as_deref(), target.name.as_deref()) else {
        return Err(ApiError::Forbidden(format!("{} is forbidden: node {node:?} reads them one at a time", target.resource.plural)));
    };
    let pods = app.store.list(&POD.store_key(), Some(namespace)).await.map_err(|e| ApiError::from_store(e, &POD, ""))?;
    let uses = pods.objects.iter().any(|pod| {
        kapsel_api::kinds::pod::bound_node(pod) == Some(node)
            && !kapsel_api::kinds::pod::has_ended(pod)
            && kapsel_api::kinds::pod::uses_configuration(pod, target.resource.kind, name)
    });
    if uses {
        return Ok(());
    }
    Err(ApiError::Forbidden(format!(
        "{plural} {name:?} is forbidden: node {node:?} cannot get it: no pod bound to the node uses it",
        plural = target.resource.plural
    )))
}

/// The object `target` names, as the caller may see it.
pub async fn get(app: &App, ctx: &Context, target: &Target) -> Result<Value, ApiError> {
    authorize(app, ctx, Verb::Get, target).await?;
    let name = target.name();
    let mut object = app.store.get(&target.key(name)).await.map_err(|e| ApiError::from_store(e, target.resource, name))?;
    if !visible(&ctx.identity, target.resource, &object) {
        return Err(ApiError::not_found(target.resource, name));
    }
    listing::redact(&ctx.identity, target.resource, &mut object);
    Ok(object)
}

/// One page (or all, without `limit`) of the objects of `target`'s kind the
/// caller may see and `selection` selects, from where `continue_token` says.
pub async fn list(
    app: &App,
    ctx: &Context,
    target: &Target,
    selection: &Selection,
    limit: Option<usize>,
    continue_token: Option<&str>,
) -> Result<Page, ApiError> {
    authorize(app, ctx, Verb::List, target).await?;
    let namespace = target.namespace.as_deref().or(selection.namespace());
    listing::read(app, &ctx.identity, target.resource, namespace, selection, limit, continue_token).await
}

/// Where a watch starts.
#[derive(Debug, Clone, Copy)]
pub enum WatchFrom {
    /// With the current objects (`ADDED` each), then what changes.
    Now {
        /// A `BOOKMARK` marks the end of the current objects (client-go's watch-list).
        bookmark: bool,
    },
    /// With what changed after this revision.
    After(i64),
}

/// An event of a watch.
#[derive(Debug)]
pub enum WatchEvent {
    /// `ADDED`, `MODIFIED` or `DELETED`, and the object.
    Object(&'static str, Value),
    /// The current objects have all been sent, up to this revision.
    InitialEventsEnd(i64),
    /// The watch cannot go on (fell behind the change log: `Expired`; the store closed); the last event.
    Error(ApiError),
}

/// An open watch: what the caller may see of the changes of one kind.
#[derive(Debug)]
pub struct Watch {
    pub resource: &'static ResourceType,
    identity: Identity,
    name: Option<String>,
    selection: Selection,
    initial: std::vec::IntoIter<Value>,
    bookmark: Option<i64>,
    changes: WatchStream,
    ended: bool,
    _permit: Option<WatchPermit>,
}

/// Opens a watch of `target` (one object when it names one) from `from`:
/// counted against the caller's open watches (429 past the limit).
pub async fn watch(app: &App, ctx: &Context, target: &Target, selection: Selection, from: WatchFrom) -> Result<Watch, ApiError> {
    authorize(app, ctx, Verb::Watch, target).await?;
    let permit = app.watch_limits.acquire(&ctx.identity)?;
    let resource = target.resource;
    let namespace = target.namespace.as_deref().or(selection.namespace()).map(str::to_string);
    let (initial, after, bookmark) = match from {
        WatchFrom::After(revision) => (Vec::new(), revision, false),
        WatchFrom::Now { bookmark } => {
            let page = listing::read(app, &ctx.identity, resource, namespace.as_deref(), &selection, None, None).await?;
            (page.items, page.revision, bookmark)
        }
    };
    let changes =
        app.store.watch(&resource.store_key(), namespace.as_deref(), after).await.map_err(|e| ApiError::from_store(e, resource, ""))?;
    Ok(Watch {
        resource,
        identity: ctx.identity.clone(),
        name: target.name.clone(),
        selection,
        initial: initial.into_iter(),
        bookmark: bookmark.then_some(after),
        changes,
        ended: false,
        _permit: permit,
    })
}

impl Watch {
    /// The next event; `None` once the watch has ended.
    pub async fn next(&mut self) -> Option<WatchEvent> {
        while let Some(object) = self.initial.next() {
            if self.wanted(&object) {
                return Some(WatchEvent::Object("ADDED", object));
            }
        }
        if let Some(revision) = self.bookmark.take() {
            return Some(WatchEvent::InitialEventsEnd(revision));
        }
        while !self.ended {
            let change = match self.changes.next().await {
                None => {
                    self.ended = true;
                    return None;
                }
                Some(Err(StoreError::Compacted { requested, oldest })) => {
                    self.ended = true;
                    return Some(WatchEvent::Error(ApiError::Expired(format!("too old resource version: {requested} ({oldest})"))));
                }
                Some(Err(error)) => {
                    self.ended = true;
                    return Some(WatchEvent::Error(ApiError::ServiceUnavailable(format!("the watch ended: {error}"))));
                }
                Some(Ok(change)) => change,
            };
            let Some((kind, mut object)) = filtered(&change, |object| self.wanted(object)) else { continue };
            listing::redact(&self.identity, self.resource, &mut object);
            return Some(WatchEvent::Object(kind, object));
        }
        None
    }

    fn wanted(&self, object: &Value) -> bool {
        visible(&self.identity, self.resource, object)
            && self.name.as_deref().is_none_or(|n| object::name(object) == Some(n))
            && self.selection.matches(object)
    }
}

/// What a watcher whose filter is `wanted` sees of `change`, as the
/// Kubernetes API server does it: a modification that brings an object into
/// the selection is `ADDED`; one that takes it out is `DELETED`, carrying the
/// last selected state at the new revision.
fn filtered(change: &Change, wanted: impl Fn(&Value) -> bool) -> Option<(&'static str, Value)> {
    let now = wanted(&change.object);
    match change.change_type {
        ChangeType::Added | ChangeType::Deleted => now.then(|| (change.change_type.as_str(), (*change.object).clone())),
        ChangeType::Modified => {
            // A modification logged without its previous state counts as selected before if selected now.
            let before = change.previous.as_deref().map_or(now, &wanted);
            match (before, now) {
                (true, true) => Some(("MODIFIED", (*change.object).clone())),
                (false, true) => Some(("ADDED", (*change.object).clone())),
                (true, false) => {
                    let mut last = change.previous.as_deref().cloned().unwrap_or_default();
                    object::set_meta(&mut last, "resourceVersion", change.revision.to_string());
                    Some(("DELETED", last))
                }
                (false, false) => None,
            }
        }
    }
}

/// Checks `apiVersion`/`kind` of a body against the target, filling them in when absent.
fn check_type(resource: &ResourceType, object: &mut Value) -> Result<(), ApiError> {
    let expected_version = resource.api_version();
    let Some(root) = object.as_object_mut() else {
        return Err(ApiError::BadRequest("the body must be an object".into()));
    };
    match root.get("apiVersion").and_then(Value::as_str) {
        Some(v) if v != expected_version => {
            return Err(ApiError::BadRequest(format!(
                "the API version in the data ({v}) does not match the expected API version ({expected_version})"
            )));
        }
        Some(_) => {}
        None => {
            root.insert("apiVersion".into(), Value::String(expected_version));
        }
    }
    match root.get("kind").and_then(Value::as_str) {
        Some(k) if k != resource.kind => {
            Err(ApiError::BadRequest(format!("the kind in the data ({k}) does not match the expected kind ({})", resource.kind)))
        }
        Some(_) => Ok(()),
        None => {
            root.insert("kind".into(), Value::String(resource.kind.into()));
            Ok(())
        }
    }
}

/// Checks the body's namespace against the target's, filling it in when absent.
fn check_namespace(target: &Target, object: &mut Value) -> Result<(), ApiError> {
    let body_namespace = object::namespace(object).map(str::to_string);
    if !target.resource.namespaced() {
        object::metadata_mut(object).remove("namespace");
        return Ok(());
    }
    let Some(namespace) = target.namespace.as_deref() else {
        return Err(ApiError::MethodNotAllowed(format!(
            "{} are namespaced: use /…/namespaces/{{namespace}}/{}",
            target.resource.plural, target.resource.plural
        )));
    };
    match body_namespace {
        Some(ns) if ns != namespace => {
            Err(ApiError::BadRequest("the namespace of the provided object does not match the namespace sent on the request".into()))
        }
        _ => {
            object::set_meta(object, "namespace", namespace);
            Ok(())
        }
    }
}

/// A check of one string value, as `validation::label_value`.
type ValueCheck = fn(&str) -> Result<(), String>;

/// Checks `metadata.<field>` (labels or annotations): a map from label-style
/// keys to strings, each value checked by `check_value` when given. Returns
/// the map when it is one.
fn check_string_map<'a>(
    object: &'a Value,
    field: &str,
    check_value: Option<ValueCheck>,
    errors: &mut Vec<FieldError>,
) -> Option<&'a Map<String, Value>> {
    let map = match object.pointer(&format!("/metadata/{field}")) {
        None | Some(Value::Null) => return None,
        Some(Value::Object(map)) => map,
        Some(_) => {
            errors.push(FieldError::invalid(format!("metadata.{field}"), "must be a map of strings"));
            return None;
        }
    };
    let singular = field.trim_end_matches('s');
    for (k, v) in map {
        let at = format!("metadata.{field}[{k}]");
        if let Err(e) = validation::label_key(k) {
            errors.push(FieldError::invalid(&at, e));
        }
        match (v.as_str(), check_value) {
            (None, _) => errors.push(FieldError::invalid(&at, format!("{singular} values must be strings"))),
            (Some(text), Some(check)) => {
                if let Err(e) = check(text) {
                    errors.push(FieldError::invalid(&at, e));
                }
            }
            (Some(_), None) => {}
        }
    }
    Some(map)
}

/// Validates metadata (name, labels, annotations) and the kind's own fields.
fn validate(resource: &ResourceType, object: &Value) -> Result<(), ApiError> {
    let name = object::name(object).unwrap_or_default();
    let mut errors = Vec::new();
    if let Err(e) = (resource.validate_name)(name) {
        errors.push(FieldError::invalid("metadata.name", e));
    }
    check_string_map(object, "labels", Some(validation::label_value), &mut errors);
    if let Some(annotations) = check_string_map(object, "annotations", None, &mut errors) {
        let size: usize = annotations.iter().map(|(k, v)| k.len() + v.as_str().map_or(0, str::len)).sum();
        if size > 256 * 1024 {
            errors.push(FieldError::invalid("metadata.annotations", "may not be more than 262144 bytes in total"));
        }
    }
    errors.extend((resource.validate)(object));
    if errors.is_empty() { Ok(()) } else { Err(ApiError::invalid(resource, name, errors)) }
}

/// Drops the fields `resource` does not have from `object`, as the
/// context's field validation says: `Strict` refuses them (400), `Warn`
/// returns a warning per field, `Ignore` drops them silently — as the
/// Kubernetes API server does.
fn check_fields(resource: &ResourceType, object: &mut Value, mode: FieldValidation) -> Result<Vec<String>, ApiError> {
    let unknown: Vec<String> =
        kapsel_api::fields::prune_unknown_fields(resource, object).into_iter().map(|f| format!("unknown field {f:?}")).collect();
    match mode {
        FieldValidation::Strict if !unknown.is_empty() => {
            Err(ApiError::BadRequest(format!("strict decoding error: {}", unknown.join(", "))))
        }
        FieldValidation::Ignore => Ok(Vec::new()),
        _ => Ok(unknown),
    }
}

/// The characters Kubernetes uses for `generateName` suffixes (no vowels, no look-alikes).
const NAME_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

fn generated_name(prefix: &str) -> String {
    let mut rng = rand::rng();
    let suffix: String = (0..5).map(|_| NAME_ALPHABET[rng.random_range(0..NAME_ALPHABET.len())] as char).collect();
    format!("{prefix}{suffix}")
}

/// Creates `object` in `target`'s collection through the whole create
/// path: defaults, the kind's strategy (a pod's class and limit ranges),
/// validation, admission, quota, store.
pub async fn create(app: &App, ctx: &Context, target: &Target, mut object: Value) -> Result<Written, ApiError> {
    authorize(app, ctx, Verb::Create, target).await?;
    let identity = &ctx.identity;
    if target.subresource.is_some() {
        return Err(ApiError::MethodNotAllowed("subresources cannot be created".into()));
    }
    let resource = target.resource;
    check_type(resource, &mut object)?;
    check_namespace(target, &mut object)?;
    if object::name(&object).is_none() {
        match object::meta_str(&object, "generateName").filter(|g| !g.is_empty()) {
            Some(prefix) => {
                let name = generated_name(prefix);
                object::set_meta(&mut object, "name", name);
            }
            None => {
                return Err(ApiError::invalid(
                    resource,
                    "",
                    vec![FieldError::required("metadata.name").with_message("name or generateName is required")],
                ));
            }
        }
    }
    if object::meta_str(&object, "resourceVersion").is_some_and(|v| !v.is_empty()) {
        return Err(ApiError::BadRequest("resourceVersion should not be set on objects to be created".into()));
    }
    if let Some(node) = &identity.node {
        let (namespace, name) = (target.namespace.as_deref(), object::name(&object));
        crate::auth::node_may_touch(node, Verb::Create, resource, namespace, name, None, None)?;
        crate::auth::node_may_write(node, resource, &object)?;
    }
    object::stamp_new(&mut object);
    let strategy = strategy::of(resource);
    let namespace = target.namespace.as_deref();
    let shown_once = strategy.prepare_for_create(app, identity, namespace, &mut object).await?;
    validate(resource, &object)?;
    let mut warnings = check_fields(resource, &mut object, ctx.field_validation)?;
    let name = object::name(&object).unwrap_or_default().to_string();
    if let Some(namespace) = namespace {
        require_namespace(app, namespace).await?;
    }
    strategy.check_create(app, identity, namespace, &object).await?;
    let write = Write {
        resource,
        operation: Operation::Create,
        namespace,
        name: &name,
        object: Some(&object),
        old_object: None,
        dry_run: ctx.dry_run,
    };
    if strategy.admitted() {
        warnings.extend(app.admission.admit(&app.store, identity, write).await?);
    }
    let charge = match namespace {
        Some(ns) => quota::charge_for(app, resource, ns, &name, None, Some(&object)).await?,
        None => None,
    };
    if ctx.dry_run {
        if let Some(charge) = &charge {
            quota::check(app, charge).await?;
        }
        return Ok(Written { object, warnings });
    }
    strategy.before_store(app, &mut object).await?;
    let op = WriteOp::Create { key: target.key(&name), object };
    let created = first_change(commit(app, charge, op).await?).map_err(|e| ApiError::from_store(e, resource, &name))?;
    strategy.after_commit(app, created.revision).await;
    let mut answer = (*created.object).clone();
    strategy.answer_create(&mut answer, shown_once);
    Ok(Written { object: answer, warnings })
}

/// Commits the write of one object: charged to its namespace's quotas
/// when it has a namespace. The outer error is a quota's refusal; the inner
/// one the store's failure of the write, for the caller to word.
async fn commit(app: &App, charge: Option<quota::Charge>, op: WriteOp) -> Result<Result<Vec<Change>, StoreError>, ApiError> {
    match charge {
        Some(charge) => quota::commit(app, charge, op).await,
        None => Ok(app.store.write(op).await),
    }
}

/// The one change of a single-object write.
fn first_change(written: Result<Vec<Change>, StoreError>) -> Result<Change, StoreError> {
    written?.into_iter().next().ok_or_else(|| StoreError::Corrupt("a write reported no change".into()))
}

/// New content needs a namespace that exists and is not terminating.
pub async fn require_namespace(app: &App, namespace: &str) -> Result<(), ApiError> {
    let object =
        app.store.get(&Key::new(NAMESPACE.store_key(), "", namespace)).await.map_err(|e| ApiError::from_store(e, &NAMESPACE, namespace))?;
    if object::meta_str(&object, "deletionTimestamp").is_some() {
        return Err(ApiError::Forbidden(format!("unable to create new content in namespace {namespace} because it is being terminated")));
    }
    Ok(())
}

/// Builds the object to store from a client's new version and the stored one:
/// server-owned metadata comes from `current`; a write to the object keeps
/// the stored status, and a write to `/status` changes only the status.
fn merge_server_fields(target: &Target, current: &Value, mut incoming: Value) -> Value {
    if target.subresource.as_deref() == Some("status") {
        let mut next = current.clone();
        next["status"] = incoming.get("status").cloned().unwrap_or(Value::Null);
        if let Some(rv) = object::meta_str(&incoming, "resourceVersion") {
            object::set_meta(&mut next, "resourceVersion", rv.to_string());
        }
        return next;
    }
    if target.resource.status_subresource {
        match current.get("status") {
            Some(status) => incoming["status"] = status.clone(),
            None => {
                incoming.as_object_mut().map(|o| o.remove("status"));
            }
        }
    }
    let current_meta = current.get("metadata").and_then(Value::as_object).cloned().unwrap_or_default();
    let meta = object::metadata_mut(&mut incoming);
    for server_field in ["uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds"] {
        match current_meta.get(server_field) {
            Some(v) => meta.insert(server_field.into(), v.clone()),
            None => meta.remove(server_field),
        };
    }
    let generation = current_meta.get("generation").and_then(Value::as_i64).unwrap_or(1);
    let spec_changed = incoming.get("spec") != current.get("spec");
    object::set_meta(&mut incoming, "generation", if spec_changed { generation + 1 } else { generation });
    incoming
}

/// Persists `next` over `current` (already merged), checking the revision
/// the client read.
async fn store_update(app: &App, ctx: &Context, target: &Target, current: &Value, mut next: Value) -> Result<Written, ApiError> {
    let resource = target.resource;
    let name = target.name();
    let strategy = strategy::of(resource);
    strategy.prepare_for_update(current, &mut next)?;
    validate(resource, &next)?;
    if let Some(node) = &ctx.identity.node {
        crate::auth::node_may_write(node, resource, &next)?;
    }
    strategy.check_update(app, target.namespace.as_deref(), current, &next).await?;
    let mut warnings = check_fields(resource, &mut next, ctx.field_validation)?;
    let write = Write {
        resource,
        operation: Operation::Update,
        namespace: target.namespace.as_deref(),
        name,
        object: Some(&next),
        old_object: Some(current),
        dry_run: ctx.dry_run,
    };
    if strategy.admitted() {
        warnings.extend(app.admission.admit(&app.store, &ctx.identity, write).await?);
    }
    let expected = match object::resource_version(&next) {
        Some(Ok(revision)) => Some(revision),
        Some(Err(message)) => {
            return Err(ApiError::invalid(resource, name, vec![FieldError::invalid("metadata.resourceVersion", message)]));
        }
        None => None,
    };
    let charge = match target.namespace.as_deref() {
        Some(ns) => quota::charge_for(app, resource, ns, name, Some(current), Some(&next)).await?,
        None => None,
    };
    if ctx.dry_run {
        if let Some(charge) = &charge {
            quota::check(app, charge).await?;
        }
        return Ok(Written { object: next, warnings });
    }
    let op = WriteOp::Update { key: target.key(name), object: next, expected_revision: expected };
    let updated = first_change(commit(app, charge, op).await?).map_err(|e| ApiError::from_store(e, resource, name))?;
    strategy.after_commit(app, updated.revision).await;
    Ok(Written { object: (*updated.object).clone(), warnings })
}

/// Replaces the object `target` names (or its status) with `object`.
pub async fn update(app: &App, ctx: &Context, target: &Target, mut object: Value) -> Result<Written, ApiError> {
    authorize(app, ctx, Verb::Update, target).await?;
    let resource = target.resource;
    let name = target.name();
    check_type(resource, &mut object)?;
    check_namespace(target, &mut object)?;
    match object::name(&object) {
        Some(n) if n != name => {
            return Err(ApiError::BadRequest(format!("the name of the object ({n}) does not match the name on the URL ({name})")));
        }
        Some(_) => {}
        None => object::set_meta(&mut object, "name", name),
    }
    let current = app.store.get(&target.key(name)).await.map_err(|e| ApiError::from_store(e, resource, name))?;
    let next = merge_server_fields(target, &current, object);
    store_update(app, ctx, target, &current, next).await
}

/// Applies a patch of `kind` to the object `target` names (or its status),
/// again on the new version when it changes meanwhile (unless the patch
/// names the revision it applies to).
pub async fn patch(app: &App, ctx: &Context, target: &Target, kind: patch::Kind, document: Arc<Value>) -> Result<Written, ApiError> {
    authorize(app, ctx, Verb::Patch, target).await?;
    let resource = target.resource;
    let name = target.name();
    for attempt in 0..PATCH_RETRIES {
        let current = app.store.get(&target.key(name)).await.map_err(|e| ApiError::from_store(e, resource, name))?;
        let mut patched = patch::apply_off_thread(kind, current.clone(), document.clone()).await?;
        if !patched.is_object() {
            return Err(ApiError::BadRequest("the patch must leave an object".into()));
        }
        check_type(resource, &mut patched)?;
        check_namespace(target, &mut patched)?;
        if object::name(&patched) != Some(name) {
            return Err(ApiError::BadRequest("a patch may not change metadata.name".into()));
        }
        // A resourceVersion the patch sets is a precondition; otherwise the patch applies to what was read.
        let client_precondition = object::meta_str(&patched, "resourceVersion") != object::meta_str(&current, "resourceVersion");
        let next = merge_server_fields(target, &current, patched);
        match store_update(app, ctx, target, &current, next).await {
            Ok(written) => return Ok(written),
            Err(ApiError::Conflict { .. }) if !client_precondition && attempt + 1 < PATCH_RETRIES => continue,
            Err(e) => return Err(e),
        }
    }
    Err(ApiError::conflict(resource, name, "the object kept changing while the patch was applied; try again"))
}

/// Deletes the object `target` names, as its kind deletes: at once, or
/// marked first (a bound pod's graceful stop, a namespace's finalization).
/// Answers the object as deleted or as marked.
pub async fn delete(app: &App, ctx: &Context, target: &Target, options: DeleteOptions) -> Result<Written, ApiError> {
    authorize(app, ctx, Verb::Delete, target).await?;
    let resource = target.resource;
    let name = target.name();
    if target.subresource.is_some() {
        return Err(ApiError::MethodNotAllowed("subresources cannot be deleted".into()));
    }
    let key = target.key(name);
    let current = app.store.get(&key).await.map_err(|e| ApiError::from_store(e, resource, name))?;
    let write = Write {
        resource,
        operation: Operation::Delete,
        namespace: target.namespace.as_deref(),
        name,
        object: None,
        old_object: Some(&current),
        dry_run: ctx.dry_run,
    };
    let strategy = strategy::of(resource);
    let warnings = if strategy.admitted() { app.admission.admit(&app.store, &ctx.identity, write).await? } else { Vec::new() };
    if ctx.dry_run {
        return Ok(Written { object: current, warnings });
    }
    let expected = options.expected_revision;
    let deleting = Deleting { key: &key, current: &current, expected, grace_seconds: options.grace_seconds };
    if let Deletion::Marked(marked) = strategy.delete(app, &deleting).await? {
        return Ok(Written { object: marked, warnings });
    }
    let charge = match target.namespace.as_deref() {
        Some(ns) => quota::charge_for(app, resource, ns, name, Some(&current), None).await?,
        None => None,
    };
    let changes = commit(app, charge, WriteOp::Delete { key: key.clone(), expected_revision: expected }).await?.map_err(|e| match e {
        StoreError::Conflict { .. } => {
            ApiError::conflict(resource, name, "Precondition failed: the object has been modified since the given resourceVersion")
        }
        other => ApiError::from_store(other, resource, name),
    })?;
    if let Some(last) = changes.iter().filter(|c| c.key.resource == key.resource).map(|c| c.revision).max() {
        strategy.after_commit(app, last).await;
    }
    let deleted = changes.first().map(|c| (*c.object).clone()).unwrap_or(Value::Null);
    Ok(Written { object: deleted, warnings })
}
