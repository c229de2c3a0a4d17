//! `GET /api/v1/namespaces/{ns}/pods/{name}/log`: a container's log, read
//! from the node that runs the pod, as the Kubernetes API server relays
//! kubelet's (`kubectl logs` and `kapsel logs` use it).
//!
//! Whoever may read the pod may read its logs. The query is Kubernetes':
//! `container` (needed when the pod has several), `follow`, `tailLines`,
//! `previous`, `timestamps`. The supervisor finds the node's agent through
//! the annotations of its lease (`kapsel.io/agent-endpoint`,
//! `kapsel.io/agent-certificate`, `kapsel.io/agent-secret`, written by the
//! agent), asks it over HTTPS — trusting only that certificate — with the
//! secret, and streams its answer back as `text/plain`; a followed log ends
//! when the container's run ends.

use axum::Extension;
use axum::extract::{Path, RawQuery, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use kapsel_api::kinds::lease::{
    AGENT_CERTIFICATE_ANNOTATION, AGENT_ENDPOINT_ANNOTATION, AGENT_SECRET_ANNOTATION, LEASE, NODE_LEASE_NAMESPACE,
};
use kapsel_api::kinds::pod::POD;
use kapsel_store::Key;
use serde_json::Value;

use crate::App;
use crate::auth::{Identity, Verb, authorize};
use crate::error::ApiError;

/// A client for a node agent's log endpoint: it trusts only `certificate`
/// (the agent's, PEM, from its lease), and follows no redirects.
pub fn agent_client(certificate: &str) -> Result<reqwest::Client, String> {
    use rustls::pki_types::pem::PemObject as _;
    let invalid = |e: &dyn std::fmt::Display| format!("its certificate is not valid: {e}");
    let der = rustls::pki_types::CertificateDer::from_pem_slice(certificate.as_bytes()).map_err(|e| invalid(&e))?;
    let certificate = reqwest::Certificate::from_der(&der).map_err(|e| invalid(&e))?;
    reqwest::Client::builder()
        .tls_backend_rustls()
        .tls_certs_only([certificate])
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(std::time::Duration::from_secs(5))
        .build()
        .map_err(|e| format!("its certificate cannot be used: {e}"))
}

/// The query parameters relayed to the node.
const RELAYED: &[&str] = &["follow", "tailLines", "previous", "timestamps"];

fn annotation<'a>(object: &'a Value, key: &str) -> Option<&'a str> {
    object.pointer("/metadata/annotations")?.get(key)?.as_str()
}

/// The container a log request is about: the one named, or the pod's only one.
fn container_of(pod: &Value, name: &str, asked: Option<&str>) -> Result<String, ApiError> {
    let mut names: Vec<&str> = Vec::new();
    for list in ["initContainers", "containers"] {
        for container in pod.pointer(&format!("/spec/{list}")).and_then(Value::as_array).into_iter().flatten() {
            names.extend(container.get("name").and_then(Value::as_str));
        }
    }
    match asked {
        Some(asked) if names.contains(&asked) => Ok(asked.to_string()),
        Some(asked) => Err(ApiError::BadRequest(format!("container {asked} is not valid for pod {name}"))),
        None => match pod.pointer("/spec/containers").and_then(Value::as_array).map(Vec::as_slice) {
            Some([only]) => Ok(only.get("name").and_then(Value::as_str).unwrap_or_default().to_string()),
            _ => Err(ApiError::BadRequest(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                names.join(" ")
            ))),
        },
    }
}

/// `GET /api/v1/namespaces/{namespace}/pods/{name}/log`.
pub async fn pod_log(
    State(app): State<App>,
    Extension(identity): Extension<Identity>,
    Path((namespace, name)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    authorize(&identity, Verb::Get, &POD, Some(&namespace))?;
    let params: Vec<(String, String)> = serde_urlencoded::from_str(query.as_deref().unwrap_or_default())
        .map_err(|e| ApiError::BadRequest(format!("the query is not valid: {e}")))?;
    let param = |key: &str| params.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
    let pod = app.store.get(&Key::new(POD.store_key(), &namespace, &name)).await.map_err(|e| ApiError::from_store(e, &POD, &name))?;
    let container = container_of(&pod, &name, param("container"))?;
    let Some(node) = pod.pointer("/spec/nodeName").and_then(Value::as_str).filter(|n| !n.is_empty()) else {
        return Err(ApiError::BadRequest(format!("pod {name} does not have a host assigned")));
    };
    let lease = app
        .store
        .get(&Key::new(LEASE.store_key(), NODE_LEASE_NAMESPACE, node))
        .await
        .map_err(|_| ApiError::ServiceUnavailable(format!("the agent of node {node} has no lease: it does not serve logs")))?;
    let published = |key| annotation(&lease, key);
    let (Some(endpoint), Some(secret), Some(certificate)) =
        (published(AGENT_ENDPOINT_ANNOTATION), published(AGENT_SECRET_ANNOTATION), published(AGENT_CERTIFICATE_ANNOTATION))
    else {
        return Err(ApiError::ServiceUnavailable(format!("the agent of node {node} publishes no log endpoint")));
    };
    let client = agent_client(certificate).map_err(|e| ApiError::ServiceUnavailable(format!("the agent of node {node}: {e}")))?;
    let uid = pod.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default();
    let relayed: Vec<(&str, &str)> = RELAYED.iter().filter_map(|key| Some((*key, param(key)?))).collect();
    let url = format!("{endpoint}/pods/{uid}/containers/{container}/log?{}", serde_urlencoded::to_string(&relayed).unwrap_or_default());
    let answer = client
        .get(&url)
        .bearer_auth(secret)
        .send()
        .await
        .map_err(|e| ApiError::ServiceUnavailable(format!("cannot reach the agent of node {node} at {endpoint}: {e}")))?;
    let status = answer.status();
    if !status.is_success() {
        let message = answer.text().await.unwrap_or_default();
        return Err(match status.as_u16() {
            400 | 404 => ApiError::BadRequest(format!("{message} (pod {name})")),
            _ => ApiError::ServiceUnavailable(format!("the agent of node {node} answered {status}: {message}")),
        });
    }
    let body = axum::body::Body::from_stream(answer.bytes_stream());
    Ok(([(header::CONTENT_TYPE, "text/plain")], body).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_container_is_the_named_one_or_the_only_one() {
        let one = json!({"spec": {"containers": [{"name": "main"}]}});
        assert_eq!(container_of(&one, "p", None).unwrap(), "main");
        let two = json!({"spec": {"initContainers": [{"name": "setup"}], "containers": [{"name": "web"}, {"name": "sidecar"}]}});
        assert_eq!(container_of(&two, "p", Some("setup")).unwrap(), "setup");
        let message = container_of(&two, "p", None).unwrap_err().to_string();
        assert_eq!(message, "a container name must be specified for pod p, choose one of: [setup web sidecar]");
        assert!(container_of(&two, "p", Some("db")).unwrap_err().to_string().contains("container db is not valid for pod p"));
    }
}
