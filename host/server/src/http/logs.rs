//! `GET /api/v1/namespaces/{ns}/pods/{name}/log`: the log [`crate::logs::open`]
//! relays from the pod's node, streamed as `text/plain`.

use axum::Extension;
use axum::extract::{Path, RawQuery, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::App;
use crate::auth::Identity;
use crate::error::ApiError;
use crate::operation::Context;

/// `GET /api/v1/namespaces/{namespace}/pods/{name}/log`.
pub async fn pod_log(
    State(app): State<App>,
    Extension(identity): Extension<Identity>,
    Path((namespace, name)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    crate::auth::authorize(&identity, crate::auth::Verb::Get, &kapsel_api::kinds::pod::POD, Some(&namespace))?;
    let params: Vec<(String, String)> = serde_urlencoded::from_str(query.as_deref().unwrap_or_default())
        .map_err(|e| ApiError::BadRequest(format!("the query is not valid: {e}")))?;
    let log = crate::logs::open(&app, &Context::new(identity), &namespace, &name, &params).await?;
    Ok(([(header::CONTENT_TYPE, "text/plain")], axum::body::Body::from_stream(log)).into_response())
}
