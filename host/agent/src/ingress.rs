//! The node's ingress: plain HTTP on `--ingress-listen`, routing a request
//! to a tenant's `Service` by name, to one of the ready serving pods its
//! selector picks, in turn.
//!
//! Two forms name the service: the `Host` header `<service>.<namespace>`
//! (any port), and the path `/<namespace>/<service>/…`, whose prefix is
//! removed before the pod sees the request (`curl
//! http://127.0.0.1:8080/dev/web/` on one machine). The pod gets the
//! standard proxy headers: `Forwarded`, `X-Forwarded-For` (appended),
//! `X-Forwarded-Host`, `X-Forwarded-Proto`, and for the path form
//! `X-Forwarded-Prefix`. A name that is no service is 404, a service with no
//! ready pod 503, each with a plain-text body that says so. A client holds
//! at most [`MAX_CONNECTIONS`] connections open together with everyone else
//! (more wait to be accepted), and has 10 s to send a request's headers; a
//! pod has `--ingress-request-timeout` (60 s) to start answering, or the
//! client gets a 504 and the request's instance is stopped.
//!
//! The Services, the pods and the nodes come from the supervisor (each
//! followed: list, then watch). A service's backends are the serving pods
//! of this node it selects ([`kapsel_node::Servers`]) and the ready pods it
//! selects on other nodes; a request for one of those goes to that node's
//! ingress (its Node's `kapsel.io/ingress`, used only when at the node's
//! registered `InternalIP`) with the header
//! `X-Kapsel-Backend: <namespace>/<service>/<pod uid>`, which delivers it
//! to that pod as it is — and only if the service selects it there too, so
//! the header reaches no pod that no service fronts.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, Uri, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use kapsel_api::kinds::node::INGRESS_ANNOTATION;
use kapsel_api::kinds::service::{selector, selects};
use kapsel_api::object;
use kapsel_client::Client;
use kapsel_node::{Servers, ServingPod};
use serde_json::Value;

use crate::follow::{Seen, follow};

/// The most connections the ingress holds open at once; past it, new ones
/// wait in the listen queue until one closes.
pub const MAX_CONNECTIONS: usize = 4096;

/// How long a client has to send a request's headers (a connection that
/// dribbles them, or sends nothing, is closed then).
const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The body of an ingress answer: the pod's, or the ingress's own.
type AnswerBody = UnsyncBoxBody<Bytes, BoxError>;

/// A Service's selector: the labels a pod needs to be one of its backends.
type Selector = BTreeMap<String, String>;

/// The Services of every namespace, by namespace and name: their selectors.
#[derive(Debug, Clone, Default)]
pub struct Services(Arc<RwLock<HashMap<(String, String), Selector>>>);

impl Services {
    fn key(service: &Value) -> Option<(String, String)> {
        Some((object::namespace(service)?.to_string(), object::name(service)?.to_string()))
    }

    fn apply(&self, seen: Seen) {
        let mut table = self.0.write().unwrap_or_else(|p| p.into_inner());
        match seen {
            Seen::Listed(items) => {
                *table = items.iter().filter_map(|service| Some((Services::key(service)?, selector(service)))).collect();
            }
            Seen::Changed(service) => {
                if let Some(key) = Services::key(&service) {
                    table.insert(key, selector(&service));
                }
            }
            Seen::Deleted(service) => {
                if let Some(key) = Services::key(&service) {
                    table.remove(&key);
                }
            }
        }
    }

    /// The selector of Service `name` in `namespace`, if there is one.
    fn selector(&self, namespace: &str, name: &str) -> Option<Selector> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).get(&(namespace.to_string(), name.to_string())).cloned()
    }
}

/// Keeps `services` current from the supervisor until `stopping`.
pub async fn follow_services(client: Client, services: Services, stopping: tokio::sync::watch::Receiver<bool>) {
    follow(&client, "/api/v1/services", "services", stopping, |seen| services.apply(seen)).await;
}

/// A pod's namespace and uid.
type PodKey = (String, String);

/// A ready pod of another node.
#[derive(Debug, Clone)]
struct RemotePod {
    namespace: String,
    uid: String,
    labels: BTreeMap<String, String>,
    node: String,
}

/// The ready pods of other nodes, by namespace and uid, and where each
/// node's ingress listens: what a request can be forwarded to.
#[derive(Debug, Clone, Default)]
pub struct Elsewhere {
    pods: Arc<RwLock<HashMap<PodKey, RemotePod>>>,
    ingresses: Arc<RwLock<HashMap<String, SocketAddr>>>,
}

impl Elsewhere {
    /// A pod of another node than `own`, when it is ready to take requests.
    fn remote(own: &str, pod: &Value) -> Option<(PodKey, RemotePod)> {
        let node = kapsel_api::kinds::pod::bound_node(pod).filter(|node| *node != own)?;
        let ready = pod
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        if !ready || kapsel_api::kinds::pod::has_ended(pod) || object::meta_str(pod, "deletionTimestamp").is_some() {
            return None;
        }
        let (namespace, uid) = (object::namespace(pod)?.to_string(), object::meta_str(pod, "uid")?.to_string());
        let labels = object::labels(pod).into_iter().flatten().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect();
        Some(((namespace.clone(), uid.clone()), RemotePod { namespace, uid, labels, node: node.to_string() }))
    }

    fn apply_pod(&self, own: &str, seen: Seen) {
        let mut pods = self.pods.write().unwrap_or_else(|p| p.into_inner());
        let key = |pod: &Value| Some((object::namespace(pod)?.to_string(), object::meta_str(pod, "uid")?.to_string()));
        match seen {
            Seen::Listed(items) => *pods = items.iter().filter_map(|pod| Elsewhere::remote(own, pod)).collect(),
            Seen::Changed(pod) => match Elsewhere::remote(own, &pod) {
                Some((key, entry)) => {
                    pods.insert(key, entry);
                }
                None => {
                    if let Some(key) = key(&pod) {
                        pods.remove(&key);
                    }
                }
            },
            Seen::Deleted(pod) => {
                if let Some(key) = key(&pod) {
                    pods.remove(&key);
                }
            }
        }
    }

    fn apply_node(&self, seen: Seen) {
        // Only an ingress at the node's registered address is forwarded to: a node's annotation
        // cannot send other nodes' requests anywhere else (and a loopback-only ingress of another host is not reached).
        let ingress = |node: &Value| -> Option<(String, SocketAddr)> {
            let url = node.pointer("/metadata/annotations").and_then(|a| a.get(INGRESS_ANNOTATION)).and_then(Value::as_str)?;
            let address: SocketAddr = url.strip_prefix("http://")?.parse().ok()?;
            let registered = node.pointer("/status/addresses").and_then(Value::as_array).into_iter().flatten().any(|a| {
                a["type"] == "InternalIP" && a["address"].as_str().and_then(|ip| ip.parse::<std::net::IpAddr>().ok()) == Some(address.ip())
            });
            registered.then(|| (object::name(node).unwrap_or_default().to_string(), address))
        };
        let mut ingresses = self.ingresses.write().unwrap_or_else(|p| p.into_inner());
        match seen {
            Seen::Listed(items) => *ingresses = items.iter().filter_map(ingress).collect(),
            Seen::Changed(node) => match ingress(&node) {
                Some((name, address)) => {
                    ingresses.insert(name, address);
                }
                None => {
                    if let Some(name) = object::name(&node) {
                        ingresses.remove(name);
                    }
                }
            },
            Seen::Deleted(node) => {
                if let Some(name) = object::name(&node) {
                    ingresses.remove(name);
                }
            }
        }
    }

    /// The ready pods of other nodes in `namespace` that `selector` selects, with their node's ingress.
    fn backends(&self, namespace: &str, selector: &Selector) -> Vec<(String, SocketAddr)> {
        let pods = self.pods.read().unwrap_or_else(|p| p.into_inner());
        let ingresses = self.ingresses.read().unwrap_or_else(|p| p.into_inner());
        let mut found: Vec<(String, SocketAddr)> = pods
            .values()
            .filter(|pod| pod.namespace == namespace && selects(selector, &pod.labels))
            .filter_map(|pod| Some((pod.uid.clone(), *ingresses.get(&pod.node)?)))
            .collect();
        found.sort();
        found
    }
}

/// Keeps `elsewhere` current from the supervisor (every pod, every node) until `stopping`.
pub async fn follow_elsewhere(client: Client, node: String, elsewhere: Elsewhere, stopping: tokio::sync::watch::Receiver<bool>) {
    let pods = {
        let (client, elsewhere, stopping) = (client.clone(), elsewhere.clone(), stopping.clone());
        async move { follow(&client, "/api/v1/pods", "pods of other nodes", stopping, |seen| elsewhere.apply_pod(&node, seen)).await }
    };
    let nodes = async { follow(&client, "/api/v1/nodes", "nodes", stopping.clone(), |seen| elsewhere.apply_node(seen)).await };
    tokio::join!(pods, nodes);
}

/// The header that delivers a forwarded request to one pod: `<namespace>/<service>/<pod uid>`.
const BACKEND_HEADER: &str = "x-kapsel-backend";

/// Where a request for a service goes.
enum Backend {
    Here(Arc<ServingPod>),
    /// A pod of another node (its uid), through that node's ingress.
    There(String, SocketAddr),
}

/// What the ingress routes with.
#[derive(Clone)]
pub struct Ingress {
    services: Services,
    servers: Servers,
    elsewhere: Elsewhere,
    /// Forwards requests to other nodes' ingresses (keep-alive connections, pooled).
    forwarder: hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, Incoming>,
    /// Turns: the next pod of a service's ready pods.
    turn: Arc<AtomicUsize>,
    /// How long a pod has to start answering (`--ingress-request-timeout`).
    request_timeout: std::time::Duration,
}

impl std::fmt::Debug for Ingress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingress").finish_non_exhaustive()
    }
}

/// Which service a request names, and the path the pod is to see.
#[derive(Debug, PartialEq, Eq)]
struct Route {
    namespace: String,
    service: String,
    /// For the path form: the prefix removed (`/<namespace>/<service>`).
    prefix: Option<String>,
}

impl Ingress {
    pub fn new(services: Services, servers: Servers, elsewhere: Elsewhere, request_timeout: std::time::Duration) -> Ingress {
        let forwarder = hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http();
        Ingress { services, servers, elsewhere, forwarder, turn: Arc::new(AtomicUsize::new(0)), request_timeout }
    }

    /// A pod's answer, or a 504 when it has not started answering within the request timeout
    /// (the request's instance is then dropped, which stops it).
    async fn in_time(&self, answering: impl Future<Output = Response<AnswerBody>>) -> Response<AnswerBody> {
        match tokio::time::timeout(self.request_timeout, answering).await {
            Ok(response) => response,
            Err(_) => plain(
                StatusCode::GATEWAY_TIMEOUT,
                format!("the pod did not answer within {} s (the ingress's request timeout)\n", self.request_timeout.as_secs_f64()),
            ),
        }
    }

    /// Serves HTTP/1 and HTTP/2 (prior knowledge) on `listener` until `stopping`.
    pub async fn serve(self, listener: tokio::net::TcpListener, mut stopping: tokio::sync::watch::Receiver<bool>) {
        let connections = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        loop {
            let accepted = tokio::select! {
                _ = stopping.wait_for(|stop| *stop) => return,
                accepted = async {
                    let permit = connections.clone().acquire_owned().await;
                    (permit, listener.accept().await)
                } => accepted,
            };
            let (Ok(permit), accepted) = accepted else { return };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, say: give the ones in use a moment.
                    tracing::warn!(%error, "the ingress could not accept a connection");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let ingress = self.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let service = hyper::service::service_fn(move |request| {
                    let ingress = ingress.clone();
                    async move { Ok::<_, Infallible>(ingress.route(request, peer).await) }
                });
                let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                builder.http1().timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
                let served = builder.serve_connection(TokioIo::new(stream), service).await;
                if let Err(error) = served {
                    tracing::debug!(%peer, error = %error, "an ingress connection ended with an error");
                }
            });
        }
    }

    /// Answers one request: the chosen pod's answer, or the ingress's 404/503.
    async fn route(&self, request: Request<Incoming>, peer: SocketAddr) -> Response<AnswerBody> {
        if request.headers().contains_key(BACKEND_HEADER) {
            return self.deliver(request).await;
        }
        let Some(route) = route_of(&request) else {
            return plain(
                StatusCode::NOT_FOUND,
                "no service named: send Host: <service>.<namespace>, or the path /<namespace>/<service>/…\n".into(),
            );
        };
        let Some(wanted) = self.services.selector(&route.namespace, &route.service) else {
            return plain(StatusCode::NOT_FOUND, format!("service {:?} not found in namespace {:?}\n", route.service, route.namespace));
        };
        let mut backends: Vec<Backend> =
            self.servers.serving(&route.namespace).into_iter().filter(|pod| selects(&wanted, &pod.labels)).map(Backend::Here).collect();
        backends.extend(self.elsewhere.backends(&route.namespace, &wanted).into_iter().map(|(uid, address)| Backend::There(uid, address)));
        if backends.is_empty() {
            let selector = wanted.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",");
            return plain(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "service {}/{} has no ready pod to take the request (selector {})\n",
                    route.namespace,
                    route.service,
                    if selector.is_empty() { "none: it selects no pod".into() } else { selector }
                ),
            );
        }
        let turn = self.turn.fetch_add(1, Ordering::Relaxed) % backends.len();
        let mut request = forwarded(request, &route, peer);
        match &backends[turn] {
            Backend::Here(pod) => self.in_time(async { answer(pod.handle(request).await) }).await,
            Backend::There(uid, address) => {
                let backend = format!("{}/{}/{uid}", route.namespace, route.service);
                let Ok(value) = HeaderValue::from_str(&backend) else {
                    return plain(StatusCode::BAD_GATEWAY, "the backend's name is not a header value\n".into());
                };
                request.headers_mut().insert(BACKEND_HEADER, value);
                let path = request.uri().path_and_query().map_or("/", |p| p.as_str()).to_string();
                match format!("http://{address}{path}").parse::<Uri>() {
                    Ok(uri) => *request.uri_mut() = uri,
                    Err(_) => return plain(StatusCode::BAD_REQUEST, "the request's path is not a valid URI\n".into()),
                }
                self.in_time(async {
                    match self.forwarder.request(request).await {
                        Ok(response) => response.map(|body| body.map_err(|error| Box::new(error) as BoxError).boxed_unsync()),
                        Err(error) => plain(StatusCode::BAD_GATEWAY, format!("the pod's node at {address} did not answer: {error}\n")),
                    }
                })
                .await
            }
        }
    }

    /// A request another node's ingress forwarded for one of this node's
    /// pods: delivered as it is, if the service it names selects that pod here.
    async fn deliver(&self, mut request: Request<Incoming>) -> Response<AnswerBody> {
        let named = request.headers_mut().remove(BACKEND_HEADER).and_then(|v| v.to_str().ok().map(str::to_string)).unwrap_or_default();
        let mut parts = named.splitn(3, '/');
        let (Some(namespace), Some(service), Some(uid)) = (parts.next(), parts.next(), parts.next()) else {
            return plain(StatusCode::BAD_REQUEST, format!("{BACKEND_HEADER} must be <namespace>/<service>/<pod uid>\n"));
        };
        let Some(wanted) = self.services.selector(namespace, service) else {
            return plain(StatusCode::NOT_FOUND, format!("service {service:?} not found in namespace {namespace:?}\n"));
        };
        let pod = self.servers.serving(namespace).into_iter().find(|pod| pod.uid == uid && selects(&wanted, &pod.labels));
        match pod {
            Some(pod) => self.in_time(async { answer(pod.handle(request).await) }).await,
            None => {
                plain(StatusCode::SERVICE_UNAVAILABLE, format!("pod {uid} of service {namespace}/{service} is not serving on this node\n"))
            }
        }
    }
}

/// A boxed error of an answer's body.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A pod's answer as the ingress sends it.
fn answer(response: Response<kapsel_node::HyperOutgoingBody>) -> Response<AnswerBody> {
    response.map(|body| body.map_err(|error| Box::new(error) as BoxError).boxed_unsync())
}

/// A plain-text answer of the ingress's own.
fn plain(status: StatusCode, text: String) -> Response<AnswerBody> {
    let mut response = Response::new(Full::new(Bytes::from(text)).map_err(|never| match never {}).boxed_unsync());
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

/// The host a request names (its `Host` header, or the URI's authority for
/// HTTP/2 and absolute URIs), without the port.
fn host_of<B>(request: &Request<B>) -> Option<&str> {
    let host = request.headers().get(header::HOST).and_then(|h| h.to_str().ok()).or_else(|| request.uri().host())?;
    // `[::1]:8080` keeps its brackets; `web.dev:8080` loses the port.
    Some(match host.rsplit_once(':') {
        Some((name, port)) if !name.ends_with(']') && port.bytes().all(|b| b.is_ascii_digit()) && !name.contains(':') => name,
        _ => host,
    })
}

/// Whether `label` may be a namespace's or a service's name (a DNS-1123 label).
fn is_name(label: &str) -> bool {
    kapsel_api::validation::dns1123_label(label).is_ok()
}

/// Which service `request` names: `Host: <service>.<namespace>` first, then
/// the path `/<namespace>/<service>/…`.
fn route_of<B>(request: &Request<B>) -> Option<Route> {
    if let Some((service, namespace)) = host_of(request).and_then(|host| host.split_once('.'))
        && is_name(service)
        && is_name(namespace)
    {
        return Some(Route { namespace: namespace.to_string(), service: service.to_string(), prefix: None });
    }
    let mut parts = request.uri().path().trim_start_matches('/').splitn(3, '/');
    let (namespace, service) = (parts.next()?, parts.next()?);
    if !(is_name(namespace) && is_name(service)) {
        return None;
    }
    Some(Route { namespace: namespace.to_string(), service: service.to_string(), prefix: Some(format!("/{namespace}/{service}")) })
}

/// The request as the pod gets it: the path form's prefix removed, and the proxy headers added.
fn forwarded(mut request: Request<Incoming>, route: &Route, peer: SocketAddr) -> Request<Incoming> {
    let host = host_of(&request).unwrap_or_default().to_string();
    let original_host = request.headers().get(header::HOST).cloned();
    if let Some(prefix) = &route.prefix {
        let rest = request.uri().path().strip_prefix(prefix.as_str()).unwrap_or_default();
        let path = if rest.starts_with('/') { rest.to_string() } else { format!("/{rest}") };
        let path_and_query = match request.uri().query() {
            Some(query) => format!("{path}?{query}"),
            None => path,
        };
        let mut parts = request.uri().clone().into_parts();
        parts.path_and_query = path_and_query.parse().ok();
        if let Ok(uri) = Uri::from_parts(parts) {
            *request.uri_mut() = uri;
        }
        if let Ok(value) = HeaderValue::from_str(prefix) {
            request.headers_mut().insert("x-forwarded-prefix", value);
        }
    }
    let client = peer.ip().to_string();
    let headers = request.headers_mut();
    let chain = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(earlier) => format!("{earlier}, {client}"),
        None => client.clone(),
    };
    let for_part = if peer.is_ipv6() { format!("\"[{client}]\"") } else { client };
    let forwarded = format!("for={for_part};host={host};proto=http");
    for (name, value) in [("x-forwarded-for", chain), ("forwarded", forwarded), ("x-forwarded-proto", "http".to_string())] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    }
    if let Some(original) = original_host {
        headers.insert("x-forwarded-host", original);
    }
    request
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(host: &str, path: &str) -> Request<()> {
        Request::builder().uri(path).header(header::HOST, host).body(()).unwrap()
    }

    #[test]
    fn a_host_or_a_path_names_the_service() {
        let by_host = route_of(&request("web.dev:8080", "/anything")).unwrap();
        assert_eq!((by_host.namespace.as_str(), by_host.service.as_str(), by_host.prefix), ("dev", "web", None));
        let by_path = route_of(&request("127.0.0.1:8080", "/dev/web/a/b?x=1")).unwrap();
        assert_eq!((by_path.namespace.as_str(), by_path.service.as_str()), ("dev", "web"));
        assert_eq!(by_path.prefix.as_deref(), Some("/dev/web"));
        assert!(route_of(&request("localhost:8080", "/")).is_none());
        assert!(route_of(&request("localhost", "/only-one")).is_none());
        assert!(route_of(&request("127.0.0.1", "/Dev/web")).is_none(), "names are DNS labels");
        assert!(route_of(&request("[::1]:8080", "/dev/web")).is_some());
    }

    #[test]
    fn only_an_ingress_at_the_nodes_registered_address_is_forwarded_to() {
        let node = |name: &str, ingress: &str, internal: &str| {
            serde_json::json!({"metadata": {"name": name, "annotations": {INGRESS_ANNOTATION: ingress}},
                "status": {"addresses": [{"type": "InternalIP", "address": internal}]}})
        };
        let elsewhere = Elsewhere::default();
        elsewhere.apply_node(Seen::Listed(vec![
            node("honest", "http://10.0.0.5:8080", "10.0.0.5"),
            node("elsewhere", "http://169.254.169.254:80", "10.0.0.6"),
            node("loopback", "http://127.0.0.1:8080", "10.0.0.7"),
        ]));
        let known: Vec<String> = elsewhere.ingresses.read().unwrap().keys().cloned().collect();
        assert_eq!(known, ["honest"]);
        let pod = serde_json::json!({"metadata": {"namespace": "dev", "name": "web", "uid": "u1", "labels": {"app": "web"}},
            "spec": {"nodeName": "honest"}, "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}});
        elsewhere.apply_pod("me", Seen::Changed(pod));
        let selector: Selector = [("app".to_string(), "web".to_string())].into();
        assert_eq!(elsewhere.backends("dev", &selector), [("u1".to_string(), "10.0.0.5:8080".parse().unwrap())]);
        assert!(elsewhere.backends("other", &selector).is_empty());
    }

    #[test]
    fn ports_are_not_part_of_the_host() {
        assert_eq!(host_of(&request("web.dev:8080", "/")), Some("web.dev"));
        assert_eq!(host_of(&request("web.dev", "/")), Some("web.dev"));
        assert_eq!(host_of(&request("[::1]:8080", "/")), Some("[::1]:8080"));
    }
}
