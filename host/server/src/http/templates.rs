//! The endpoints that instantiate workload templates:
//! `POST …/namespaces/{ns}/workloadtemplates/{name}/instantiate` and
//! `POST /apis/kapsel.io/v1alpha1/clusterworkloadtemplates/{name}/instantiate`.
//! The body (JSON or YAML) is an [`Instantiation`]; `?dryRun` and
//! `?fieldValidation` are a create's; the answer is what creating the pod
//! answers (201, or a `Table`). The work is [`crate::templates::instantiate`]'s.

use axum::Extension;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use kapsel_api::ResourceType;
use kapsel_api::kinds::pod::POD;
use kapsel_api::kinds::workload_template::{CLUSTER_WORKLOAD_TEMPLATE, WORKLOAD_TEMPLATE};

use crate::App;
use crate::auth::Identity;
use crate::error::ApiError;
use crate::http::request::Params;
use crate::operation::{Context, FieldValidation};
use crate::templates::{Instantiation, instantiate};

/// `POST /apis/kapsel.io/v1alpha1/namespaces/{namespace}/workloadtemplates/{name}/instantiate`.
pub async fn instantiate_namespaced(
    State(app): State<App>,
    Extension(identity): Extension<Identity>,
    Path((namespace, name)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    respond(&app, identity, &WORKLOAD_TEMPLATE, Some(&namespace), &name, &uri, &headers, body).await
}

/// `POST /apis/kapsel.io/v1alpha1/clusterworkloadtemplates/{name}/instantiate`.
pub async fn instantiate_cluster(
    State(app): State<App>,
    Extension(identity): Extension<Identity>,
    Path(name): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    respond(&app, identity, &CLUSTER_WORKLOAD_TEMPLATE, None, &name, &uri, &headers, body).await
}

#[allow(clippy::too_many_arguments)]
async fn respond(
    app: &App,
    identity: Identity,
    kind: &'static ResourceType,
    template_namespace: Option<&str>,
    name: &str,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let request = read_request(headers, body).await?;
    let params = Params::parse(uri.query())?;
    let mut ctx = Context::new(identity);
    ctx.dry_run = params.dry_run()?;
    ctx.field_validation = FieldValidation::parse(params.get("fieldValidation"))?;
    let written = instantiate(app, &ctx, kind, template_namespace, name, request).await?;
    Ok(crate::http::resources::respond_written(StatusCode::CREATED, &POD, written, &params, headers))
}

async fn read_request(headers: &HeaderMap, body: Body) -> Result<Instantiation, ApiError> {
    let bytes = crate::http::body::read(body).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Instantiation::default());
    }
    let value = crate::http::body::decode(headers, bytes).await?;
    serde_path_to_error::deserialize(value)
        .map_err(|e| ApiError::BadRequest(format!("invalid instantiation at {}: {}", e.path(), e.inner())))
}
