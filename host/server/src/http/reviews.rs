//! `POST /apis/kapsel.io/v1alpha1/policyreviews`: a `PolicyReview` (JSON or
//! YAML) evaluated by [`crate::admission::review`], answered 201 with its
//! `status`, as Kubernetes answers a `SubjectAccessReview`.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::{Extension, Json};
use serde_json::Value;

use crate::App;
use crate::auth::Identity;
use crate::error::ApiError;
use crate::operation::Context;

/// `POST /apis/kapsel.io/v1alpha1/policyreviews`.
pub async fn review(
    State(app): State<App>,
    Extension(identity): Extension<Identity>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let bytes = crate::http::body::read(body).await?;
    let review = crate::http::body::decode(&headers, bytes).await?;
    Ok((StatusCode::CREATED, Json(crate::admission::review(&app, &Context::new(identity), review).await?)))
}
