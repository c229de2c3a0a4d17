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
//! (more wait to be accepted), and has 10 s to send a request's headers.
//!
//! The Services come from the supervisor (followed: list, then watch); the
//! pods are the ones serving on this node ([`kapsel_node::Servers`]).
//! Serving pods on other nodes are not reached from here yet: a request
//! goes to the pods of the node whose ingress it reaches.

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
type AnswerBody = UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

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

/// What the ingress routes with.
#[derive(Clone)]
pub struct Ingress {
    services: Services,
    servers: Servers,
    /// Turns: the next pod of a service's ready pods.
    turn: Arc<AtomicUsize>,
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
    pub fn new(services: Services, servers: Servers) -> Ingress {
        Ingress { services, servers, turn: Arc::new(AtomicUsize::new(0)) }
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
        let Some(route) = route_of(&request) else {
            return plain(
                StatusCode::NOT_FOUND,
                "no service named: send Host: <service>.<namespace>, or the path /<namespace>/<service>/…\n".into(),
            );
        };
        let Some(wanted) = self.services.selector(&route.namespace, &route.service) else {
            return plain(StatusCode::NOT_FOUND, format!("service {:?} not found in namespace {:?}\n", route.service, route.namespace));
        };
        let ready: Vec<Arc<ServingPod>> =
            self.servers.serving(&route.namespace).into_iter().filter(|pod| selects(&wanted, &pod.labels)).collect();
        if ready.is_empty() {
            let selector = wanted.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",");
            return plain(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "service {}/{} has no ready pod to take the request (selector {}) on this node\n",
                    route.namespace,
                    route.service,
                    if selector.is_empty() { "none: it selects no pod".into() } else { selector }
                ),
            );
        }
        let pod = ready[self.turn.fetch_add(1, Ordering::Relaxed) % ready.len()].clone();
        let request = forwarded(request, &route, peer);
        pod.handle(request)
            .await
            .map(|body| body.map_err(|error| Box::new(error) as Box<dyn std::error::Error + Send + Sync>).boxed_unsync())
    }
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
    fn ports_are_not_part_of_the_host() {
        assert_eq!(host_of(&request("web.dev:8080", "/")), Some("web.dev"));
        assert_eq!(host_of(&request("web.dev", "/")), Some("web.dev"));
        assert_eq!(host_of(&request("[::1]:8080", "/")), Some("[::1]:8080"));
    }
}
