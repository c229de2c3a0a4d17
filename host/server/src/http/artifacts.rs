//! The image endpoints of artifacts: `POST …/artifacts/{name}/push?tag=T`
//! (the component's bytes as the body, at most
//! [`MAX_PUSH_BYTES`](crate::artifacts::MAX_PUSH_BYTES)) and
//! `GET …/artifacts/{name}/blobs/{digest}`. The work is [`crate::artifacts`]'.

use axum::Extension;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::App;
use crate::artifacts::{self, MAX_PUSH_BYTES};
use crate::auth::Identity;
use crate::error::ApiError;
use crate::operation::Context;

/// The query of a push.
#[derive(Debug, Deserialize)]
pub struct PushQuery {
    /// The tag to point at the pushed image (default `latest`).
    tag: Option<String>,
}

/// `POST …/namespaces/{namespace}/artifacts/{name}/push?tag=T`: push an image.
pub async fn push(
    State(app): State<App>,
    Extension(identity): Extension<Identity>,
    Path((namespace, name)): Path<(String, String)>,
    Query(query): Query<PushQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let tag = query.tag.unwrap_or_else(|| "latest".into());
    artifacts::may_push(&app, &identity, &namespace, &name, &tag).await?;
    let (bytes, digest) = crate::http::body::receive_blob(&headers, body, MAX_PUSH_BYTES).await?;
    let written = artifacts::push(&app, &Context::new(identity), &namespace, &name, &tag, bytes, digest).await?;
    let response = (StatusCode::OK, axum::Json(written.object)).into_response();
    Ok(crate::http::resources::with_warnings(response, &written.warnings))
}

/// `GET …/namespaces/{namespace}/artifacts/{name}/blobs/{digest}`: an image's bytes.
pub async fn blob(
    State(app): State<App>,
    Extension(identity): Extension<Identity>,
    Path((namespace, name, digest)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    let bytes = artifacts::blob(&app, &Context::new(identity), &namespace, &name, &digest).await?;
    Ok(([(header::CONTENT_TYPE, "application/wasm")], bytes).into_response())
}
