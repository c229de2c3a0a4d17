//! The node's log endpoint: `GET /pods/{uid}/containers/{name}/log` with
//! Kubernetes' query (`tailLines`, `previous`, `follow`, `timestamps`),
//! answered from `kapsel-node`'s logs to holders of the agent's secret (the
//! supervisor, which relays `GET …/pods/{name}/log`).

use std::sync::Arc;

/// The query of a log request, as Kubernetes names it.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct LogParams {
    tail_lines: Option<usize>,
    #[serde(default)]
    previous: Option<String>,
    #[serde(default)]
    follow: Option<String>,
    #[serde(default)]
    timestamps: Option<String>,
}

fn flag(value: &Option<String>) -> bool {
    matches!(value.as_deref(), Some("true" | "1" | ""))
}

/// Serves `GET /pods/{uid}/containers/{name}/log` to holders of `secret`.
pub(super) async fn serve_logs(
    listener: kapsel_daemon::tls::TlsListener,
    logs: kapsel_node::Logs,
    secret: String,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) {
    use axum::extract::{Path, Query, State};
    use axum::http::{HeaderMap, StatusCode, header};
    use axum::response::{IntoResponse, Response};

    async fn log(
        State((logs, secret)): State<(kapsel_node::Logs, Arc<String>)>,
        Path((uid, container)): Path<(String, String)>,
        Query(params): Query<LogParams>,
        headers: HeaderMap,
    ) -> Response {
        let presented = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
        if presented != Some(secret.as_str()) {
            return (StatusCode::UNAUTHORIZED, "the node's log secret is required").into_response();
        }
        let query =
            kapsel_node::LogQuery { tail_lines: params.tail_lines, previous: flag(&params.previous), timestamps: flag(&params.timestamps) };
        let text = [(header::CONTENT_TYPE, "text/plain; charset=utf-8")];
        let refused = |error: kapsel_node::LogError| {
            let code = match error {
                kapsel_node::LogError::Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
                _ => StatusCode::BAD_REQUEST,
            };
            (code, format!("{error}")).into_response()
        };
        if flag(&params.follow) {
            match logs.follow(&uid, &container, &query) {
                Ok(stream) => (text, axum::body::Body::from_stream(stream)).into_response(),
                Err(error) => refused(error),
            }
        } else {
            match logs.read(&uid, &container, &query).await {
                Ok(bytes) => (text, bytes).into_response(),
                Err(error) => refused(error),
            }
        }
    }

    let app =
        axum::Router::new().route("/pods/{uid}/containers/{container}/log", axum::routing::get(log)).with_state((logs, Arc::new(secret)));
    let shutdown = async move {
        let _ = stopping.wait_for(|stop| *stop).await;
    };
    if let Err(error) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
        tracing::error!(%error, "the node's log endpoint stopped");
    }
}
