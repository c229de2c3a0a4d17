//! Errors as HTTP answers: an [`ApiError`] is answered with its status
//! code and its Kubernetes `Status` as the body, plus `WWW-Authenticate`
//! on a 401 and `Retry-After` on a 429. A server fault is logged here, with its cause chain.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal { .. } = &self {
            tracing::error!(error = &self as &dyn std::error::Error, "request failed");
        }
        let code = StatusCode::from_u16(self.code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (code, axum::Json(self.status())).into_response();
        match self {
            ApiError::Unauthorized(_) => {
                response.headers_mut().insert(http::header::WWW_AUTHENTICATE, http::HeaderValue::from_static("Bearer realm=\"kapsel\""));
            }
            ApiError::TooManyRequests { retry_after_seconds, .. } => {
                response.headers_mut().insert(http::header::RETRY_AFTER, http::HeaderValue::from(retry_after_seconds));
            }
            _ => {}
        }
        response
    }
}
