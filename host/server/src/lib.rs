//! Kapsel's supervisor: the Kubernetes-style HTTP API over the object store.
//!
//! [`router`] builds the axum application: unauthenticated health checks,
//! then — behind bearer-token authentication — discovery, OpenAPI, the
//! plug-in upload and rollback endpoints ([`plugins`]), image pushes and
//! blob reads ([`artifacts`]), pod logs relayed from nodes ([`logs`]), policy reviews
//! ([`admission::review`]), on-demand policy audits
//! ([`controllers::audit`]), workload template instantiation
//! ([`templates`]), and the generic
//! resource handler that serves every registered kind. [`controllers`] and
//! the [`scheduler`] run beside it. [`serve`]
//! is `kapsel serve`: it prepares the data directory (database, admin token,
//! kubeconfig, TLS), opens the store and serves HTTPS until SIGTERM/ctrl-c.

pub mod admission;
pub mod artifacts;
pub mod auth;
pub mod body;
pub mod classes;
pub mod controllers;
pub mod discovery;
pub mod error;
pub mod events;
pub mod limits;
pub mod listing;
pub mod logs;
pub mod objects;
pub mod openapi;
pub mod patch;
pub mod plugins;
pub mod protobuf;
pub mod quota;
pub mod reflector;
pub mod request;
pub mod resources;
pub mod scheduler;
pub mod serve;
pub mod strategy;
pub mod table;
pub mod templates;
pub mod tls;
pub mod watch;
pub mod watches;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use kapsel_daemon::task::panic_message;
use kapsel_store::Store;
use serde_json::json;

use crate::auth::Authenticator;
use crate::error::ApiError;

/// What the server says about itself in discovery.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    /// The `host:port` clients should use.
    pub advertise_address: String,
}

/// Shared state of every request handler.
#[derive(Debug, Clone)]
pub struct App {
    pub store: Store,
    pub auth: Authenticator,
    pub info: Arc<ServerInfo>,
    /// Turns `true` when the server is stopping; long-lived responses (watches) end then.
    pub stopping: tokio::sync::watch::Receiver<bool>,
    /// The active plug-ins.
    pub plugins: plugins::PluginRegistry,
    /// The admission policies in force.
    pub admission: admission::Admission,
    /// The watches each identity has open, and how many it may.
    pub watch_limits: watches::WatchLimits,
}

/// The whole HTTP API.
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
        .route("/apis/kapsel.io/v1alpha1/plugins/{name}/component", axum::routing::post(plugins::upload))
        .route("/apis/kapsel.io/v1alpha1/plugins/{name}/rollback", axum::routing::post(plugins::rollback))
        .route("/api/v1/namespaces/{namespace}/pods/{name}/log", get(logs::pod_log))
        .route("/apis/kapsel.io/v1alpha1/policyreviews", axum::routing::post(admission::review))
        .route("/apis/kapsel.io/v1alpha1/namespaces/{namespace}/artifacts/{name}/push", axum::routing::post(artifacts::push))
        .route("/apis/kapsel.io/v1alpha1/namespaces/{namespace}/artifacts/{name}/blobs/{digest}", get(artifacts::blob))
        .route(
            "/apis/kapsel.io/v1alpha1/namespaces/{namespace}/workloadtemplates/{name}/instantiate",
            axum::routing::post(templates::instantiate_namespaced),
        )
        .route("/apis/kapsel.io/v1alpha1/clusterworkloadtemplates/{name}/instantiate", axum::routing::post(templates::instantiate_cluster))
        .route(
            "/apis/kapsel.io/v1alpha1/clusteradmissionpolicies/{name}/audit",
            axum::routing::post(controllers::audit::audit_cluster_policy),
        )
        .route(
            "/apis/kapsel.io/v1alpha1/namespaces/{namespace}/admissionpolicies/{name}/audit",
            axum::routing::post(controllers::audit::audit_namespace_policy),
        )
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
    let identity = parts.extensions.get::<auth::Identity>().cloned().expect("authenticated");
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
    match app.store.revisions().await {
        Ok(_) => "ok".into_response(),
        Err(error) => {
            tracing::warn!(error = &error as &dyn std::error::Error, "readiness check failed");
            (http::StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "datastore unavailable"}))).into_response()
        }
    }
}
