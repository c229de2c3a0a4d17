//! The HTTP side of every kind's resource URLs (`/api/…`, `/apis/…`):
//! parse the path and query into a [`Target`] and an operation context,
//! decode the body, call the operation of [`crate::objects`], and answer
//! with the object (or a `Table` when the client asked for one), a list,
//! a watch stream, or the `Status` of the error, with `Warning` headers.

use std::sync::Arc;

use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use kapsel_api::{FieldError, ResourceType, object};
use serde_json::{Map, Value, json};

use crate::App;
use crate::auth::{Identity, Verb};
use crate::error::ApiError;
use crate::http::request::{Params, parse_path, verb};
use crate::http::{body, table, watch};
use crate::objects::{self, DeleteOptions, Target, Written};
use crate::operation::{Context, FieldValidation};
use crate::patch;

/// Serves every `/api/…` and `/apis/…` resource URL.
pub async fn handle(
    State(app): State<App>,
    Extension(identity): Extension<Identity>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (target, params, verb, ctx) = match admit_request(identity, &method, &uri).await {
        Ok(admitted) => admitted,
        Err(error) => {
            // A refused request's body is read (within the body limit) and dropped, so that
            // a client still sending it gets the Status instead of a closed connection.
            body::discard(body).await;
            return Err(error);
        }
    };
    match verb {
        Verb::Get => get(&app, &ctx, &target, &params, &headers).await,
        Verb::List => list(&app, &ctx, &target, &params, &headers).await,
        Verb::Watch => watch::serve(&app, &ctx, &target, &params, &headers).await,
        Verb::Create => create(&app, &ctx, &target, &params, &headers, body).await,
        Verb::Update => update(&app, &ctx, &target, &params, &headers, body).await,
        Verb::Patch => patch(&app, &ctx, &target, &params, &headers, body).await,
        Verb::Delete => delete(&app, &ctx, &target, &params, &headers, body).await,
    }
}

/// What a request asks for (its target, parameters, verb and context),
/// once the caller may ask it — checked, as far as it can be without the
/// store, before its body is read (the operation checks the rest).
async fn admit_request(identity: Identity, method: &Method, uri: &Uri) -> Result<(Target, Params, Verb, Context), ApiError> {
    let target = parse_path(uri.path())?;
    let params = Params::parse(uri.query())?;
    let verb = verb(method, &target, &params)?;
    let mut ctx = Context::new(identity);
    objects::pre_authorize(&ctx, verb, &target).await?;
    if !verb.is_read() {
        ctx.dry_run = params.dry_run()?;
        ctx.field_validation = FieldValidation::parse(params.get("fieldValidation"))?;
    }
    Ok((target, params, verb, ctx))
}

/// A JSON response, or a one-row `Table` when the client asked for one.
fn respond(code: StatusCode, resource: &ResourceType, object: Value, params: &Params, headers: &HeaderMap) -> Response {
    if table::wanted(headers) {
        let revision = object::resource_version(&object).and_then(Result::ok);
        return (code, axum::Json(table::table(resource, &[object], revision, params.get("includeObject"), true))).into_response();
    }
    (code, axum::Json(object)).into_response()
}

/// The answer to a write: the object (or its `Table`) and the warnings.
pub fn respond_written(code: StatusCode, resource: &ResourceType, written: Written, params: &Params, headers: &HeaderMap) -> Response {
    with_warnings(respond(code, resource, written.object, params, headers), &written.warnings)
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

async fn get(app: &App, ctx: &Context, target: &Target, params: &Params, headers: &HeaderMap) -> Result<Response, ApiError> {
    let object = objects::get(app, ctx, target).await?;
    Ok(respond(StatusCode::OK, target.resource, object, params, headers))
}

async fn list(app: &App, ctx: &Context, target: &Target, params: &Params, headers: &HeaderMap) -> Result<Response, ApiError> {
    let resource = target.resource;
    let selection = params.selection(resource)?;
    let limit = params.u64("limit")?.map(|l| usize::try_from(l).unwrap_or(usize::MAX));
    let page = objects::list(app, ctx, target, &selection, limit, params.get("continue")).await?;
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

async fn create(
    app: &App,
    ctx: &Context,
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
    let written = objects::create(app, ctx, target, object).await?;
    Ok(respond_written(StatusCode::CREATED, target.resource, written, params, headers))
}

async fn update(
    app: &App,
    ctx: &Context,
    target: &Target,
    params: &Params,
    headers: &HeaderMap,
    request: Body,
) -> Result<Response, ApiError> {
    let bytes = body::read(request).await?;
    let object = body::decode(headers, bytes).await?;
    let written = objects::update(app, ctx, target, object).await?;
    Ok(respond_written(StatusCode::OK, target.resource, written, params, headers))
}

async fn patch(
    app: &App,
    ctx: &Context,
    target: &Target,
    params: &Params,
    headers: &HeaderMap,
    request: Body,
) -> Result<Response, ApiError> {
    let bytes = body::read(request).await?;
    let kind = patch::Kind::from_media_type(&body::media_type(headers))?;
    let document = Arc::new(body::decode_json(&bytes)?);
    let written = objects::patch(app, ctx, target, kind, document).await?;
    Ok(respond_written(StatusCode::OK, target.resource, written, params, headers))
}

async fn delete(
    app: &App,
    ctx: &Context,
    target: &Target,
    params: &Params,
    headers: &HeaderMap,
    request: Body,
) -> Result<Response, ApiError> {
    if target.subresource.is_some() {
        return Err(ApiError::MethodNotAllowed("subresources cannot be deleted".into()));
    }
    let bytes = body::read(request).await?;
    let options: Map<String, Value> = if bytes.iter().all(u8::is_ascii_whitespace) {
        Map::new()
    } else {
        body::decode(headers, bytes).await?.as_object().cloned().unwrap_or_default()
    };
    let expected_revision = match options.get("preconditions").and_then(|p| p.get("resourceVersion")).and_then(Value::as_str) {
        Some(rv) => Some(rv.parse::<i64>().map_err(|_| ApiError::BadRequest(format!("invalid preconditions.resourceVersion {rv:?}")))?),
        None => None,
    };
    let mut ctx = ctx.clone();
    ctx.dry_run |= options.get("dryRun").and_then(Value::as_array).is_some_and(|d| d.iter().any(|v| v == "All"));
    let options = DeleteOptions { expected_revision, grace_seconds: grace_period(&options, params)? };
    let written = objects::delete(app, &ctx, target, options).await?;
    Ok(respond_written(StatusCode::OK, target.resource, written, params, headers))
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
