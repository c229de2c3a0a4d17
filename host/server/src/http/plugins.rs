//! The plug-in endpoints: `POST …/plugins/{name}/component` (the
//! component's bytes as the body; `?world=` for a new plug-in, `?version=`)
//! and `POST …/plugins/{name}/rollback`. The work is
//! [`crate::plugins::upload`]'s and [`crate::plugins::rollback`]'s.

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::Value;

use crate::App;
use crate::auth::Identity;
use crate::error::ApiError;
use crate::operation::Context;
use crate::plugins::{self, MAX_COMPONENT_BYTES, Upload};

/// The query of an upload.
#[derive(Debug, Deserialize)]
pub struct UploadQuery {
    /// The world the component targets (required for a new plug-in).
    world: Option<String>,
    version: Option<String>,
}

/// `POST /apis/kapsel.io/v1alpha1/plugins/{name}/component`: upload and activate a component.
pub async fn upload(
    State(app): State<App>,
    Extension(identity): Extension<Identity>,
    Path(name): Path<String>,
    Query(query): Query<UploadQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    plugins::may_upload(&identity, &name)?;
    let (bytes, digest) = crate::http::body::receive_blob(&headers, body, MAX_COMPONENT_BYTES).await?;
    let upload = Upload { world: query.world, version: query.version, bytes, digest };
    Ok(Json(plugins::upload(&app, &Context::new(identity), &name, upload).await?))
}

/// `POST /apis/kapsel.io/v1alpha1/plugins/{name}/rollback`: make the previous component active again.
pub async fn rollback(
    State(app): State<App>,
    Extension(identity): Extension<Identity>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(plugins::rollback(&app, &Context::new(identity), &name).await?))
}
