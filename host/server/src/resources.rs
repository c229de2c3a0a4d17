//! The generic resource handler: every kind in the registry is served by
//! these functions, verb by verb. Kind-specific behaviour lives in the
//! registration (validation, columns) and in the kind's strategy
//! ([`crate::strategy`]).
//!
//! The request path: authenticate (middleware) → parse the target → authorize
//! → decode → stamp server fields → the strategy prepares the object (a
//! pod's class and limit ranges: [`crate::classes`], [`crate::limits`]) →
//! validate → the strategy's checks → admission ([`crate::admission`]) →
//! persist, charged to the namespace's quotas ([`crate::quota`]) → the
//! strategy's after-commit step → respond.

use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use kapsel_admission::Operation;
use kapsel_api::kinds::namespace::NAMESPACE;
use kapsel_api::kinds::pod::POD;
use kapsel_api::selector::{FieldSelector, LabelSelector};
use kapsel_api::{FieldError, ResourceType, object, validation};
use kapsel_store::{Change, Key, StoreError, WriteOp};
use rand::Rng as _;
use serde_json::{Map, Value, json};

use crate::App;
use crate::admission::Write;
use crate::auth::{Identity, Verb, authorize};
use crate::error::ApiError;
use crate::request::{Params, Target, parse_path, verb};
use crate::strategy::{self, Deleting, Deletion};
use crate::{body, listing, patch, quota, table, watch};

/// How many times a patch is retried when the object changes underneath it.
const PATCH_RETRIES: usize = 5;

/// Serves every `/api/…` and `/apis/…` resource URL.
pub async fn handle(
    State(app): State<App>,
    Extension(identity): Extension<Identity>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (target, params, verb) = match admit_request(&app, &identity, &method, &uri).await {
        Ok(admitted) => admitted,
        Err(error) => {
            // A refused request's body is read (within the body limit) and dropped, so that
            // a client still sending it gets the Status instead of a closed connection.
            body::discard(body).await;
            return Err(error);
        }
    };
    match verb {
        Verb::Get => get(&app, &identity, &target, &params, &headers).await,
        Verb::List => list(&app, &identity, &target, &params, &headers).await,
        Verb::Watch => watch::serve(&app, &identity, &target, &params, &headers).await,
        Verb::Create => create(&app, &identity, &target, &params, &headers, body).await,
        Verb::Update => update(&app, &identity, &target, &params, &headers, body).await,
        Verb::Patch => patch(&app, &identity, &target, &params, &headers, body).await,
        Verb::Delete => delete(&app, &identity, &target, &params, &headers, body).await,
    }
}

/// What a request asks for (its target, parameters and verb), once the
/// caller may ask it: authorization, a node's rights, status writes.
async fn admit_request(app: &App, identity: &Identity, method: &Method, uri: &Uri) -> Result<(Target, Params, Verb), ApiError> {
    let target = parse_path(uri.path())?;
    let params = Params::parse(uri.query())?;
    let verb = verb(method, &target, &params)?;
    let authz_namespace = if target.resource.kind == NAMESPACE.kind { target.name.as_deref() } else { target.namespace.as_deref() };
    authorize(identity, verb, target.resource, authz_namespace)?;
    if let Some(node) = &identity.node {
        // A node agent writes the status of the pods bound to it: read where the pod is bound.
        let bound_to = if target.resource.kind == POD.kind && !verb.is_read() && target.name.is_some() {
            // A pod that is gone is 404 to its node too (its agent then stops reporting about it).
            let name = target_name(&target);
            let stored = app.store.get(&key(&target, name)).await.map_err(|e| ApiError::from_store(e, target.resource, name))?;
            stored.pointer("/spec/nodeName").and_then(Value::as_str).map(str::to_string)
        } else {
            None
        };
        let (namespace, name, subresource) = (target.namespace.as_deref(), target.name.as_deref(), target.subresource.as_deref());
        crate::auth::node_may_touch(node, verb, target.resource, namespace, name, subresource, bound_to.as_deref())?;
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
    Ok((target, params, verb))
}

/// The store key of the named object of a target.
fn key(target: &Target, name: &str) -> Key {
    Key::new(target.resource.store_key(), target.namespace.clone().unwrap_or_default(), name)
}

fn target_name(target: &Target) -> &str {
    target.name.as_deref().unwrap_or_default()
}

/// A JSON response, or a one-row `Table` when the client asked for one.
fn respond(code: StatusCode, resource: &ResourceType, object: Value, params: &Params, headers: &HeaderMap) -> Response {
    if table::wanted(headers) {
        let revision = object::resource_version(&object).and_then(Result::ok);
        return (code, axum::Json(table::table(resource, &[object], revision, params.get("includeObject"), true))).into_response();
    }
    (code, axum::Json(object)).into_response()
}

async fn get(app: &App, identity: &Identity, target: &Target, params: &Params, headers: &HeaderMap) -> Result<Response, ApiError> {
    let name = target_name(target);
    let mut object = app.store.get(&key(target, name)).await.map_err(|e| ApiError::from_store(e, target.resource, name))?;
    if !visible(identity, target.resource, &object) {
        return Err(ApiError::not_found(target.resource, name));
    }
    listing::redact(identity, target.resource, &mut object);
    Ok(respond(StatusCode::OK, target.resource, object, params, headers))
}

/// The label and field selectors of a list or watch.
#[derive(Debug)]
pub struct Selectors {
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Selectors {
    pub fn parse(resource: &ResourceType, params: &Params) -> Result<Selectors, ApiError> {
        let labels =
            LabelSelector::parse(params.get("labelSelector").unwrap_or_default()).map_err(|e| ApiError::BadRequest(e.to_string()))?;
        let fields = FieldSelector::parse(params.get("fieldSelector").unwrap_or_default(), resource.selectable_fields)
            .map_err(|e| ApiError::BadRequest(e.to_string()))?;
        Ok(Selectors { labels, fields })
    }

    pub fn matches(&self, object: &Value) -> bool {
        self.labels.matches(object::labels(object)) && self.fields.matches(object)
    }

    /// A namespace the field selector pins (`metadata.namespace=dev`), to narrow the store read.
    pub fn namespace(&self) -> Option<&str> {
        self.fields.required_value("metadata.namespace")
    }
}

/// Whether a tenant may see `object` in a read across namespaces.
pub fn visible(identity: &Identity, resource: &ResourceType, object: &Value) -> bool {
    if identity.admin {
        return true;
    }
    if std::ptr::eq(resource, &kapsel_api::kinds::event::EVENT) && crate::events::for_it_only(object) {
        return false;
    }
    if resource.namespaced() {
        return object::namespace(object).is_some_and(|ns| identity.sees_namespace(ns));
    }
    if resource.kind == NAMESPACE.kind {
        return object::name(object).is_some_and(|ns| identity.sees_namespace(ns));
    }
    true
}

async fn list(app: &App, identity: &Identity, target: &Target, params: &Params, headers: &HeaderMap) -> Result<Response, ApiError> {
    let resource = target.resource;
    let selectors = Selectors::parse(resource, params)?;
    let namespace = target.namespace.as_deref().or(selectors.namespace());
    let limit = params.u64("limit")?.map(|l| usize::try_from(l).unwrap_or(usize::MAX));
    let page = listing::read(app, identity, resource, namespace, &selectors, limit, params.get("continue")).await?;
    let mut metadata = Map::new();
    metadata.insert("resourceVersion".into(), json!(page.revision.to_string()));
    if let Some(token) = page.continue_token {
        metadata.insert("continue".into(), json!(token));
    }
    if table::wanted(headers) {
        let mut table = table::table(resource, &page.items, Some(page.revision), params.get("includeObject"), true);
        table["metadata"] = Value::Object(metadata);
        return Ok(axum::Json(table).into_response());
    }
    Ok(axum::Json(json!({
        "kind": format!("{}List", resource.kind),
        "apiVersion": resource.api_version(),
        "metadata": metadata,
        "items": page.items,
    }))
    .into_response())
}

/// Checks `apiVersion`/`kind` of a body against the URL, filling them in when absent.
fn check_type(resource: &ResourceType, object: &mut Value) -> Result<(), ApiError> {
    let expected_version = resource.api_version();
    let root = object.as_object_mut().expect("decoded bodies are objects");
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

/// Checks the body's namespace against the URL's, filling it in when absent.
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

/// Applies the `fieldValidation` parameter to `object`: `Strict` refuses
/// unknown fields (400); `Warn` (the default) drops them and warns;
/// `Ignore` drops them silently, as the Kubernetes API server does.
fn check_fields(resource: &ResourceType, object: &mut Value, params: &Params) -> Result<Vec<String>, ApiError> {
    let mode = params.get("fieldValidation").unwrap_or("Warn");
    if !matches!(mode, "Strict" | "Warn" | "Ignore") {
        return Err(ApiError::BadRequest(format!("fieldValidation must be one of Strict, Warn or Ignore (got {mode:?})")));
    }
    let unknown: Vec<String> =
        kapsel_api::fields::prune_unknown_fields(resource, object).into_iter().map(|f| format!("unknown field {f:?}")).collect();
    match mode {
        "Strict" if !unknown.is_empty() => Err(ApiError::BadRequest(format!("strict decoding error: {}", unknown.join(", ")))),
        "Ignore" => Ok(Vec::new()),
        _ => Ok(unknown),
    }
}

/// Adds `Warning` headers (code 299), as the Kubernetes API server does.
pub fn with_warnings(mut response: Response, warnings: &[String]) -> Response {
    for warning in warnings {
        let text = format!("299 - {:?}", warning.replace(['\r', '\n'], " "));
        if let Ok(value) = HeaderValue::from_str(&text) {
            response.headers_mut().append("Warning", value);
        }
    }
    response
}

/// The characters Kubernetes uses for `generateName` suffixes (no vowels, no look-alikes).
const NAME_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

fn generated_name(prefix: &str) -> String {
    let mut rng = rand::rng();
    let suffix: String = (0..5).map(|_| NAME_ALPHABET[rng.random_range(0..NAME_ALPHABET.len())] as char).collect();
    format!("{prefix}{suffix}")
}

async fn create(
    app: &App,
    identity: &Identity,
    target: &Target,
    params: &Params,
    headers: &HeaderMap,
    request: Body,
) -> Result<Response, ApiError> {
    if target.subresource.is_some() {
        return Err(ApiError::MethodNotAllowed("subresources cannot be created".into()));
    }
    let bytes = body::read(request).await?;
    let object = body::decode(headers, bytes).await?;
    create_object(app, identity, target, params, headers, object).await
}

/// Creates `object` (a decoded body, or a pod made from a workload
/// template) at `target` through the whole create path: defaults, classes
/// and limit ranges, validation, admission, quota, store.
pub async fn create_object(
    app: &App,
    identity: &Identity,
    target: &Target,
    params: &Params,
    headers: &HeaderMap,
    mut object: Value,
) -> Result<Response, ApiError> {
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
    let mut warnings = check_fields(resource, &mut object, params)?;
    let name = object::name(&object).unwrap_or_default().to_string();
    if let Some(namespace) = namespace {
        require_namespace(app, namespace).await?;
    }
    strategy.check_create(app, namespace, &object).await?;
    let dry_run = params.dry_run()?;
    let write = Write {
        resource,
        operation: Operation::Create,
        namespace: target.namespace.as_deref(),
        name: &name,
        object: Some(&object),
        old_object: None,
        dry_run,
    };
    warnings.extend(app.admission.admit(&app.store, identity, write).await?);
    let charge = match target.namespace.as_deref() {
        Some(ns) => quota::charge_for(app, resource, ns, &name, None, Some(&object)).await?,
        None => None,
    };
    if dry_run {
        if let Some(charge) = &charge {
            quota::check(app, charge).await?;
        }
        return Ok(with_warnings(respond(StatusCode::CREATED, resource, object, params, headers), &warnings));
    }
    strategy.before_store(app, &mut object).await?;
    let op = WriteOp::Create { key: key(target, &name), object };
    let created = first_change(commit(app, charge, op).await?).map_err(|e| ApiError::from_store(e, resource, &name))?;
    strategy.after_commit(app, created.revision).await;
    let mut answer = (*created.object).clone();
    strategy.answer_create(&mut answer, shown_once);
    Ok(with_warnings(respond(StatusCode::CREATED, resource, answer, params, headers), &warnings))
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
/// the client read; returns the stored object and field warnings.
async fn store_update(
    app: &App,
    identity: &Identity,
    target: &Target,
    params: &Params,
    current: &Value,
    mut next: Value,
) -> Result<(Value, Vec<String>), ApiError> {
    let resource = target.resource;
    let name = target_name(target);
    let strategy = strategy::of(resource);
    strategy.prepare_for_update(current, &mut next)?;
    validate(resource, &next)?;
    if let Some(node) = &identity.node {
        crate::auth::node_may_write(node, resource, &next)?;
    }
    strategy.check_update(app, target.namespace.as_deref(), current, &next).await?;
    let mut warnings = check_fields(resource, &mut next, params)?;
    let dry_run = params.dry_run()?;
    let write = Write {
        resource,
        operation: Operation::Update,
        namespace: target.namespace.as_deref(),
        name,
        object: Some(&next),
        old_object: Some(current),
        dry_run,
    };
    warnings.extend(app.admission.admit(&app.store, identity, write).await?);
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
    if dry_run {
        if let Some(charge) = &charge {
            quota::check(app, charge).await?;
        }
        return Ok((next, warnings));
    }
    let op = WriteOp::Update { key: key(target, name), object: next, expected_revision: expected };
    let updated = first_change(commit(app, charge, op).await?).map_err(|e| ApiError::from_store(e, resource, name))?;
    strategy.after_commit(app, updated.revision).await;
    Ok(((*updated.object).clone(), warnings))
}

async fn update(
    app: &App,
    identity: &Identity,
    target: &Target,
    params: &Params,
    headers: &HeaderMap,
    request: Body,
) -> Result<Response, ApiError> {
    let resource = target.resource;
    let name = target_name(target);
    let bytes = body::read(request).await?;
    let mut object = body::decode(headers, bytes).await?;
    check_type(resource, &mut object)?;
    check_namespace(target, &mut object)?;
    match object::name(&object) {
        Some(n) if n != name => {
            return Err(ApiError::BadRequest(format!("the name of the object ({n}) does not match the name on the URL ({name})")));
        }
        Some(_) => {}
        None => object::set_meta(&mut object, "name", name),
    }
    let current = app.store.get(&key(target, name)).await.map_err(|e| ApiError::from_store(e, resource, name))?;
    let next = merge_server_fields(target, &current, object);
    let (stored, warnings) = store_update(app, identity, target, params, &current, next).await?;
    Ok(with_warnings(respond(StatusCode::OK, resource, stored, params, headers), &warnings))
}

async fn patch(
    app: &App,
    identity: &Identity,
    target: &Target,
    params: &Params,
    headers: &HeaderMap,
    request: Body,
) -> Result<Response, ApiError> {
    let resource = target.resource;
    let name = target_name(target);
    let bytes = body::read(request).await?;
    let kind = patch::Kind::from_media_type(&body::media_type(headers))?;
    let document = std::sync::Arc::new(body::decode_json(&bytes)?);
    for attempt in 0..PATCH_RETRIES {
        let current = app.store.get(&key(target, name)).await.map_err(|e| ApiError::from_store(e, resource, name))?;
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
        match store_update(app, identity, target, params, &current, next).await {
            Ok((stored, warnings)) => return Ok(with_warnings(respond(StatusCode::OK, resource, stored, params, headers), &warnings)),
            Err(ApiError::Conflict { .. }) if !client_precondition && attempt + 1 < PATCH_RETRIES => {
                continue;
            }
            Err(e) => return Err(e),
        }
    }
    Err(ApiError::conflict(resource, name, "the object kept changing while the patch was applied; try again"))
}

async fn delete(
    app: &App,
    identity: &Identity,
    target: &Target,
    params: &Params,
    headers: &HeaderMap,
    request: Body,
) -> Result<Response, ApiError> {
    let resource = target.resource;
    let name = target_name(target);
    if target.subresource.is_some() {
        return Err(ApiError::MethodNotAllowed("subresources cannot be deleted".into()));
    }
    let bytes = body::read(request).await?;
    let options: Map<String, Value> = if bytes.iter().all(u8::is_ascii_whitespace) {
        Map::new()
    } else {
        body::decode(headers, bytes).await?.as_object().cloned().unwrap_or_default()
    };
    let expected = match options.get("preconditions").and_then(|p| p.get("resourceVersion")).and_then(Value::as_str) {
        Some(rv) => Some(rv.parse::<i64>().map_err(|_| ApiError::BadRequest(format!("invalid preconditions.resourceVersion {rv:?}")))?),
        None => None,
    };
    let key = key(target, name);
    let dry_run = params.dry_run()? || options.get("dryRun").and_then(Value::as_array).is_some_and(|d| d.iter().any(|v| v == "All"));
    let current = app.store.get(&key).await.map_err(|e| ApiError::from_store(e, resource, name))?;
    let write = Write {
        resource,
        operation: Operation::Delete,
        namespace: target.namespace.as_deref(),
        name,
        object: None,
        old_object: Some(&current),
        dry_run,
    };
    let warnings = app.admission.admit(&app.store, identity, write).await?;
    if dry_run {
        return Ok(with_warnings(respond(StatusCode::OK, resource, current, params, headers), &warnings));
    }
    let strategy = strategy::of(resource);
    let deleting = Deleting { key: &key, current: &current, expected, grace_seconds: grace_period(&options, params)? };
    if let Deletion::Marked(marked) = strategy.delete(app, &deleting).await? {
        return Ok(with_warnings(respond(StatusCode::OK, resource, marked, params, headers), &warnings));
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
    Ok(with_warnings(respond(StatusCode::OK, resource, deleted, params, headers), &warnings))
}

/// The grace period a delete asks for (`DeleteOptions.gracePeriodSeconds`
/// in the body, else the query parameter): a whole number of seconds from
/// 0 to [`MAX_GRACE_SECONDS`](kapsel_api::kinds::pod::MAX_GRACE_SECONDS) (422 otherwise).
fn grace_period(options: &Map<String, Value>, params: &Params) -> Result<Option<i64>, ApiError> {
    let max = kapsel_api::kinds::pod::MAX_GRACE_SECONDS;
    let invalid = |given: String| ApiError::Invalid {
        kind: "DeleteOptions".into(),
        group: String::new(),
        name: String::new(),
        causes: vec![FieldError::invalid("gracePeriodSeconds", format!("must be a whole number of seconds from 0 to {max} (got {given})"))],
    };
    let given = match (options.get("gracePeriodSeconds"), params.get("gracePeriodSeconds")) {
        (Some(Value::Null) | None, None) => return Ok(None),
        (Some(Value::Null) | None, Some(text)) => text.parse::<i64>().map_err(|_| invalid(format!("{text:?}")))?,
        (Some(value), _) => value.as_i64().ok_or_else(|| invalid(value.to_string()))?,
    };
    if !(0..=max).contains(&given) {
        return Err(invalid(given.to_string()));
    }
    Ok(Some(given))
}
