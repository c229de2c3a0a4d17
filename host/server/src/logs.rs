//! Pod logs (`GET /api/v1/namespaces/{ns}/pods/{name}/log`, served by
//! `crate::http::logs`): a container's log, read from the node that runs
//! the pod, as the Kubernetes API server relays kubelet's (`kubectl logs`
//! and `kapsel logs` use it).
//!
//! Whoever may read the pod may read its logs — except node agents, which
//! read the logs of the pods bound to their own node only. The query is Kubernetes':
//! `container` (needed when the pod has several), `follow`, `tailLines`,
//! `previous`, `timestamps`. The supervisor finds the node's agent through
//! the annotations of its lease (`kapsel.io/agent-endpoint`,
//! `kapsel.io/agent-certificate`, `kapsel.io/agent-secret`, written by the
//! agent), asks it over HTTPS — trusting only that certificate — with the
//! secret, and streams its answer back as `text/plain`; a followed log ends
//! when the container's run ends.
//!
//! The endpoint is written by a node token, so the supervisor does not go
//! wherever it says: it relays only to `https://IP:PORT` (nothing else in
//! the URL), where IP is one of the `InternalIP` addresses of the node's
//! `status.addresses` — the address the agent registered and made its
//! certificate for — and PORT, when the node reports one in
//! `status.daemonEndpoints.kubeletEndpoint.Port`, is that port
//! ([`crate::agents::check_agent_endpoint`]). Anything else is refused with a 503 naming
//! the rule, before any connection is made.

use kapsel_api::kinds::lease::{
    AGENT_CERTIFICATE_ANNOTATION, AGENT_ENDPOINT_ANNOTATION, AGENT_SECRET_ANNOTATION, LEASE, NODE_LEASE_NAMESPACE,
};
use kapsel_api::kinds::node::NODE;
use kapsel_api::kinds::pod::POD;
use kapsel_store::Key;
use serde_json::Value;

use crate::App;
use crate::auth::{Verb, authorize};
use crate::error::ApiError;
use crate::operation::Context;

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

/// A log as it comes from the node's agent.
pub type LogStream = futures::stream::BoxStream<'static, Result<bytes::Bytes, reqwest::Error>>;

/// Opens the log of a container of the pod `name` in `namespace`, as the
/// query `params` (Kubernetes' log options) ask, from the agent of the node that runs it.
pub async fn open(app: &App, ctx: &Context, namespace: &str, name: &str, params: &[(String, String)]) -> Result<LogStream, ApiError> {
    let identity = &ctx.identity;
    authorize(identity, Verb::Get, &POD, Some(namespace))?;
    let param = |key: &str| params.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
    let pod = app.store.get(&Key::new(POD.store_key(), namespace, name)).await.map_err(|e| ApiError::from_store(e, &POD, name))?;
    let bound_to = pod.pointer("/spec/nodeName").and_then(Value::as_str).filter(|n| !n.is_empty());
    if let Some(agent) = &identity.node
        && bound_to != Some(agent.as_str())
    {
        return Err(ApiError::Forbidden(format!(
            "pods \"{name}\" is forbidden: User {user:?} cannot get resource \"pods/log\" in the namespace {namespace:?}: a node agent reads the logs of the pods bound to its node only",
            user = identity.user,
        )));
    }
    let container = container_of(&pod, name, param("container"))?;
    let Some(node) = bound_to else {
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
    let registered = app
        .store
        .get(&Key::new(NODE.store_key(), "", node))
        .await
        .map_err(|_| ApiError::ServiceUnavailable(format!("node {node} is not registered: its logs cannot be read")))?;
    let address = crate::agents::check_agent_endpoint(endpoint, &registered).map_err(|e| {
        tracing::warn!(%node, %endpoint, problem = %e, "a node's lease publishes a log endpoint the supervisor does not relay to");
        ApiError::ServiceUnavailable(format!(
            "the agent of node {node} publishes a log endpoint the supervisor does not relay to: {e}; it must be https://IP:PORT at the node's InternalIP"
        ))
    })?;
    let endpoint = format!("https://{address}");
    let client =
        crate::agents::agent_client(certificate).map_err(|e| ApiError::ServiceUnavailable(format!("the agent of node {node}: {e}")))?;
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
    Ok(Box::pin(answer.bytes_stream()))
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
