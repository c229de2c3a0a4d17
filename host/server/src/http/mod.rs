//! The HTTP layer: the router, authentication of every request, the
//! Kubernetes protocol (paths and query parameters, media types and
//! bodies, `Table`s, watch streams, discovery, OpenAPI, `Status` errors)
//! and the endpoints beside the generic resource URLs. Handlers parse a
//! request, call the application (`crate::objects` and the modules of the
//! other operations) with an operation context, and write the answer. This
//! layer never reads or writes the store itself.

pub mod artifacts;
pub mod audits;
pub mod body;
pub mod discovery;
pub mod logs;
pub mod openapi;
pub mod plugins;
pub mod protobuf;
pub mod request;
pub mod resources;
pub mod reviews;
pub mod status;
pub mod table;
pub mod templates;
pub mod watch;

use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use kapsel_daemon::task::panic_message;
use serde_json::json;

use crate::App;
use crate::auth::Identity;
use crate::error::ApiError;

/// The whole HTTP API: unauthenticated health checks, then — behind
/// bearer-token authentication — discovery, OpenAPI, the plug-in upload
/// and rollback endpoints, image pushes and blob reads, pod logs relayed
/// from nodes, policy reviews, on-demand policy audits, workload template
/// instantiation, and the generic resource handler that serves every
/// registered kind.
pub fn router(app: App) -> Router {
    let authenticated = Router::new()
        .route("/version", get(discovery::version))
        .route("/api", get(discovery::core_versions))
        .route("/api/v1", get(discovery::core_resources))
        .route("/apis", get(discovery::groups))
        .route("/apis/{group}", get(discovery::group))
        .route("/apis/{group}/{version}", get(discovery::group_resources))
        .route("/openapi/v2", get(openapi::v2))
        .route("/openapi/v3", get(openapi::v3_index))
        .route("/openapi/v3/{*path}", get(openapi::v3_document))
        .route("/apis/kapsel.io/v1alpha1/plugins/{name}/component", post(plugins::upload))
        .route("/apis/kapsel.io/v1alpha1/plugins/{name}/rollback", post(plugins::rollback))
        .route("/api/v1/namespaces/{namespace}/pods/{name}/log", get(logs::pod_log))
        .route("/apis/kapsel.io/v1alpha1/policyreviews", post(reviews::review))
        .route("/apis/kapsel.io/v1alpha1/namespaces/{namespace}/artifacts/{name}/push", post(artifacts::push))
        .route("/apis/kapsel.io/v1alpha1/namespaces/{namespace}/artifacts/{name}/blobs/{digest}", get(artifacts::blob))
        .route(
            "/apis/kapsel.io/v1alpha1/namespaces/{namespace}/workloadtemplates/{name}/instantiate",
            post(templates::instantiate_namespaced),
        )
        .route("/apis/kapsel.io/v1alpha1/clusterworkloadtemplates/{name}/instantiate", post(templates::instantiate_cluster))
        .route("/apis/kapsel.io/v1alpha1/clusteradmissionpolicies/{name}/audit", post(audits::audit_cluster_policy))
        .route("/apis/kapsel.io/v1alpha1/namespaces/{namespace}/admissionpolicies/{name}/audit", post(audits::audit_namespace_policy))
        .fallback(dispatch)
        .layer(middleware::from_fn_with_state(app.clone(), authenticate));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/livez", get(healthz))
        .route("/readyz", get(readyz))
        .merge(authenticated)
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(answer_panic))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(app)
}

/// A handler that panicked (a bug: input never should make one) answers
/// 500 with a `Status`, and the panic is logged; the server goes on.
fn answer_panic(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!(panic = panic_message(panic.as_ref()), "a request handler panicked");
    let status = kapsel_api::Status::failure(
        500,
        "InternalError",
        "an internal error occurred: the server failed while handling the request (the failure is logged)",
    );
    (http::StatusCode::INTERNAL_SERVER_ERROR, Json(status)).into_response()
}

/// Resource URLs go to the generic handler; anything else is 404.
async fn dispatch(state: State<App>, request: Request) -> Response {
    let path = request.uri().path();
    if !(path.starts_with("/api/") || path.starts_with("/apis/")) {
        return ApiError::NoRoute(format!("the server could not find the requested resource (path {path:?})")).into_response();
    }
    let (parts, body) = request.into_parts();
    let identity = parts.extensions.get::<Identity>().cloned().expect("authenticated");
    resources::handle(state, axum::Extension(identity), parts.method, parts.uri, parts.headers, body).await.into_response()
}

async fn authenticate(State(app): State<App>, mut request: Request, next: Next) -> Response {
    let header = request.headers().get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    match app.auth.authenticate(header) {
        Ok(identity) => {
            request.extensions_mut().insert(identity);
            next.run(request).await
        }
        Err(error) => error.into_response(),
    }
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(app): State<App>) -> Response {
    match app.ready().await {
        Ok(()) => "ok".into_response(),
        Err(error) => {
            tracing::warn!(error = &error as &dyn std::error::Error, "readiness check failed");
            (http::StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "datastore unavailable"}))).into_response()
        }
    }
}
