//! The on-demand audit endpoints of admission policies:
//! `POST …/clusteradmissionpolicies/{name}/audit` and
//! `POST …/namespaces/{ns}/admissionpolicies/{name}/audit`, answered with
//! the policy and its new `status.audit` ([`crate::controllers::audit::on_demand`]).

use axum::extract::{Path, State};
use axum::{Extension, Json};
use kapsel_admission::PolicyId;
use serde_json::Value;

use crate::App;
use crate::auth::Identity;
use crate::controllers::audit::on_demand;
use crate::error::ApiError;
use crate::operation::Context;

/// `POST /apis/kapsel.io/v1alpha1/clusteradmissionpolicies/{name}/audit`.
pub async fn audit_cluster_policy(
    State(app): State<App>,
    Extension(identity): Extension<Identity>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(on_demand(&app, &Context::new(identity), PolicyId { namespace: None, name }).await?))
}

/// `POST /apis/kapsel.io/v1alpha1/namespaces/{namespace}/admissionpolicies/{name}/audit`.
pub async fn audit_namespace_policy(
    State(app): State<App>,
    Extension(identity): Extension<Identity>,
    Path((namespace, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(on_demand(&app, &Context::new(identity), PolicyId { namespace: Some(namespace), name }).await?))
}
