//! Pods serving HTTP (issue 13) with the real `http-hello` component: a
//! serving pod is Running and Ready and listed in the runtime's `Servers`
//! with its labels until it stops; requests reach a fresh instance with the
//! pod's environment and headers; concurrent requests all succeed; memory
//! limits hold across a container's concurrent requests (503 while its
//! other requests hold the memory, the container `OOMKilled` when not even
//! one instance fits) without touching other pods; commands are not listed.
//!
//! Requests are real: a hyper server on 127.0.0.1 hands the pod's handler
//! the `Request<Incoming>` it reads, as the node's ingress will, and a hyper
//! client on the same machine sends them. No other network.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{WorkloadImages, runtime, status_where, workload};
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::Frame;
use hyper::{Request, StatusCode};
use kapsel_node::runtime::digest_of;
use kapsel_node::{ContainerConfig, ExitReason, PodWorker, Runtime, ServingPod};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use wasmtime_wasi_http::io::TokioIo;

const SOON: Duration = Duration::from_secs(10);

fn pod(name: &str, labels: Value, spec: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "team-a", "uid": format!("uid-{name}"), "labels": labels}, "spec": spec})
}

/// A pod running `http-hello` with `POD_NAME` set to its name.
fn http_hello(name: &str, memory: Option<&str>) -> Value {
    let mut container = json!({"name": "web", "image": "http-hello:1", "env": [{"name": "POD_NAME", "value": name}]});
    if let Some(memory) = memory {
        container["resources"] = json!({"limits": {"memory": memory}});
    }
    pod(name, json!({"app": "hello", "tier": "web"}), json!({"containers": [container]}))
}

fn condition<'a>(status: &'a Value, kind: &str) -> &'a str {
    let conditions = status["conditions"].as_array().map(Vec::as_slice).unwrap_or_default();
    conditions.iter().find(|c| c["type"] == kind).and_then(|c| c["status"].as_str()).unwrap_or_default()
}

fn is_ready(status: &Value) -> bool {
    status["phase"] == "Running" && condition(status, "Ready") == "True"
}

/// The pod of `namespace` named `name` that `runtime` lists as serving.
fn serving(runtime: &Runtime, namespace: &str, name: &str) -> Option<Arc<ServingPod>> {
    runtime.servers().serving(namespace).into_iter().find(|pod| pod.name == name)
}

/// Serves `pod`'s requests on 127.0.0.1, the way the node's ingress will: hyper reads each request and the pod answers it.
async fn listen(pod: Arc<ServingPod>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a local port");
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let pod = pod.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let pod = pod.clone();
                    async move { Ok::<_, Infallible>(pod.handle(request).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    address
}

/// Sends `request` on a connection of its own; the response's head.
async fn send<B>(address: SocketAddr, request: Request<B>) -> hyper::Response<hyper::body::Incoming>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = TcpStream::connect(address).await.expect("connecting to the local server");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("an HTTP/1 connection");
    tokio::spawn(connection);
    sender.send_request(request).await.expect("a response")
}

/// GETs `path` with `headers`; the status, content type and body.
async fn get(address: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (StatusCode, String, String) {
    let mut request = Request::get(path).header("host", "hello.team-a.test");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = send(address, request.body(Empty::<Bytes>::new()).unwrap()).await;
    let status = response.status();
    let content_type = response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let body = response.into_body().collect().await.expect("the body").to_bytes();
    (status, content_type, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_serving_pod_is_ready_listed_with_its_labels_and_answers_until_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime(dir.path());
    let worker = PodWorker::start(runtime.clone(), WorkloadImages::new(), &http_hello("web-1", None));
    let status = status_where(&worker, SOON, is_ready).await;
    let web = &status["containerStatuses"][0];
    assert_eq!((web["ready"].as_bool(), web["started"].as_bool()), (Some(true), Some(true)), "{status:#}");
    assert!(web["state"]["running"].is_object(), "{status:#}");

    let listed = runtime.servers().serving("team-a");
    assert_eq!(listed.len(), 1);
    let pod = listed[0].clone();
    assert_eq!((pod.namespace.as_str(), pod.name.as_str(), pod.uid.as_str()), ("team-a", "web-1", "uid-web-1"));
    assert_eq!(pod.labels.get("app").map(String::as_str), Some("hello"));
    assert_eq!(pod.labels.len(), 2);
    assert!(runtime.servers().serving("team-b").is_empty());

    let address = listen(pod.clone()).await;
    let (status_code, content_type, body) = get(address, "/", &[]).await;
    assert_eq!((status_code, body.as_str()), (StatusCode::OK, "Hello from web-1\n"));
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let (status_code, _, headers) = get(address, "/echo-headers?x=1", &[("x-kapsel-test", "forwarded")]).await;
    assert_eq!(status_code, StatusCode::OK);
    assert!(headers.lines().any(|line| line == "x-kapsel-test: forwarded"), "{headers}");
    // Hop-by-hop headers and `host` (the request's authority instead) are not given to guests.
    assert!(!headers.lines().any(|line| line.starts_with("host:")), "{headers}");

    // Stopped: no longer listed, the container ended, and a handler kept from before answers 503.
    worker.stop(Duration::from_secs(5)).await;
    assert!(runtime.servers().serving("team-a").is_empty());
    let status = worker.status().borrow().clone();
    assert!(status["containerStatuses"][0]["state"]["terminated"].is_object(), "{status:#}");
    assert_eq!(condition(&status, "Ready"), "False");
    let (status_code, _, body) = get(address, "/", &[]).await;
    assert_eq!((status_code, body.as_str()), (StatusCode::SERVICE_UNAVAILABLE, "the pod is stopping\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_concurrent_requests_all_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime(dir.path());
    let worker = PodWorker::start(runtime.clone(), WorkloadImages::new(), &http_hello("web-busy", None));
    status_where(&worker, SOON, is_ready).await;
    let address = listen(serving(&runtime, "team-a", "web-busy").expect("listed")).await;

    let started = Instant::now();
    let requests = (0..64).map(|_| tokio::spawn(get(address, "/", &[])));
    for answer in futures::future::join_all(requests).await {
        let (status, _, body) = answer.expect("the request's task");
        assert_eq!((status, body.as_str()), (StatusCode::OK, "Hello from web-busy\n"));
    }
    let concurrent = started.elapsed();

    // A rough rate, one connection per request, 16 at a time.
    let started = Instant::now();
    let mut answered = 0;
    for _ in 0..16 {
        let round = (0..16).map(|_| tokio::spawn(get(address, "/", &[])));
        for answer in futures::future::join_all(round).await {
            assert_eq!(answer.unwrap().0, StatusCode::OK);
            answered += 1;
        }
    }
    let elapsed = started.elapsed();
    eprintln!(
        "http-hello: 64 concurrent requests in {concurrent:?}; {answered} requests in {elapsed:?} ({:.0} requests/s, a fresh instance and connection each)",
        f64::from(answered) / elapsed.as_secs_f64()
    );
    worker.stop(Duration::from_secs(5)).await;
}

/// A body the test writes chunk by chunk, and closes by dropping its sender.
type OpenBody = StreamBody<futures::channel::mpsc::Receiver<Result<Frame<Bytes>, Infallible>>>;

fn open_body() -> (futures::channel::mpsc::Sender<Result<Frame<Bytes>, Infallible>>, OpenBody) {
    let (sender, receiver) = futures::channel::mpsc::channel(4);
    (sender, StreamBody::new(receiver))
}

/// The memory of one container's requests is one budget: with room for one
/// instance, a second request while the first holds its instance (its body
/// still open) is answered 503, and served once the first is done; a pod
/// where not even one instance fits is `OOMKilled`, not listed and not
/// Ready — and the node's other serving pod answers throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_limits_hold_across_a_containers_requests_and_touch_no_other_pod() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime(dir.path());
    let images = WorkloadImages::new();
    let other = PodWorker::start(runtime.clone(), images.clone(), &http_hello("web-other", None));
    status_where(&other, SOON, is_ready).await;
    let other_address = listen(serving(&runtime, "team-a", "web-other").expect("listed")).await;

    let tiny = PodWorker::start(runtime.clone(), images.clone(), &http_hello("web-tiny", Some("1Mi")));
    let status = status_where(&tiny, SOON, |s| s["containerStatuses"][0]["lastState"]["terminated"].is_object()).await;
    let last = &status["containerStatuses"][0]["lastState"]["terminated"];
    assert_eq!((last["reason"].as_str(), last["exitCode"].as_i64()), (Some("OOMKilled"), Some(137)), "{status:#}");
    let message = last["message"].as_str().unwrap_or_default();
    assert!(message.starts_with("the container exceeded its memory limit of 1Mi"), "{message}");
    assert_eq!(condition(&status, "Ready"), "False");
    assert!(serving(&runtime, "team-a", "web-tiny").is_none());
    assert_eq!(get(other_address, "/", &[]).await.0, StatusCode::OK);
    tiny.stop(Duration::from_secs(5)).await;

    let narrow = PodWorker::start(runtime.clone(), images, &http_hello("web-narrow", Some("2Mi")));
    status_where(&narrow, SOON, is_ready).await;
    let address = listen(serving(&runtime, "team-a", "web-narrow").expect("listed")).await;
    let (mut writing, body) = open_body();
    let echoing = send(address, Request::post("/echo").header("host", "narrow.test").body(body).unwrap()).await;
    assert_eq!(echoing.status(), StatusCode::OK);
    writing.try_send(Ok(Frame::data(Bytes::from_static(b"ping ")))).unwrap();
    let mut echoed = echoing.into_body();
    let first = echoed.frame().await.expect("a frame").expect("the echo").into_data().expect("data");
    assert_eq!(first, "ping ");

    // The first request holds its instance: no room for a second.
    let (status, _, body) = get(address, "/", &[]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body, "the pod's memory limit of 2Mi is taken by its other requests; try again\n");
    assert_eq!(get(other_address, "/", &[]).await, (StatusCode::OK, "text/plain; charset=utf-8".into(), "Hello from web-other\n".into()));

    // The first request ends; its memory goes back, and the next request is served.
    writing.try_send(Ok(Frame::data(Bytes::from_static(b"pong")))).unwrap();
    drop(writing);
    let rest = echoed.collect().await.expect("the rest of the echo").to_bytes();
    assert_eq!(rest, "pong");
    let (status, _, body) = get(address, "/", &[]).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "Hello from web-narrow\n"));
    assert!(is_ready(&narrow.status().borrow()), "a refused request leaves the pod as it was");
    narrow.stop(Duration::from_secs(5)).await;
    other.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_are_not_listed_and_an_init_container_cannot_serve() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime(dir.path());
    let images = WorkloadImages::new();
    let command = pod("worker", json!({"app": "worker"}), json!({"containers": [{"name": "main", "image": "worker:1"}]}));
    let worker = PodWorker::start(runtime.clone(), images.clone(), &command);
    status_where(&worker, SOON, is_ready).await;
    assert!(runtime.servers().serving("team-a").is_empty(), "a running command is not listed");
    worker.stop(Duration::from_secs(5)).await;

    let init = pod(
        "init-serves",
        json!({}),
        json!({"initContainers": [{"name": "setup", "image": "http-hello:1"}], "containers": [{"name": "main", "image": "hello:1"}]}),
    );
    let worker = PodWorker::start(runtime.clone(), images, &init);
    let status =
        status_where(&worker, SOON, |s| s["initContainerStatuses"][0]["state"]["waiting"]["reason"] == "CreateContainerError").await;
    let message = status["initContainerStatuses"][0]["state"]["waiting"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("serves HTTP") && message.contains("an init container must be a command"), "{message}");
    assert!(runtime.servers().serving("team-a").is_empty());
    worker.stop(Duration::from_secs(5)).await;
}

/// The runtime on its own: a proxy is served and not run, a command run and not served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_is_served_and_a_command_is_run() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime(dir.path());
    let prepare = |name: &'static str| {
        let runtime = runtime.clone();
        async move {
            let bytes = workload(name);
            runtime.prepare(&digest_of(&bytes), async { Ok(bytes) }).await.expect("the workload prepares")
        }
    };
    let (proxy, command) = (prepare("http-hello").await, prepare("hello").await);
    assert!(proxy.serves_http() && !command.serves_http());
    let config = |name: &str| ContainerConfig {
        args: vec!["http-hello".into()],
        env: Vec::new(),
        dirs: Vec::new(),
        memory_limit_bytes: None,
        cpu_limit_millicores: Some(500),
        log: runtime.logs().create(name, "main", 0).expect("a log"),
        deadline: None,
    };

    let exit = runtime.start(&proxy, config("run-proxy")).wait().await;
    assert_eq!(exit.reason, ExitReason::Error);
    assert!(exit.message.ends_with("serves HTTP (wasi:http/incoming-handler): it is served, not run"), "{}", exit.message);
    let command_served = runtime.serve(&command, config("serve-command"));
    assert!(command_served.serving().await.is_none());
    assert!(command_served.wait().await.message.ends_with("is a command (wasi:cli/run), not an HTTP server: it is run, not served"));

    // Served (here with a CPU limit, which its requests share): running until killed.
    let server = runtime.serve(&proxy, config("served"));
    let handler = server.serving().await.expect("serving");
    let request = Request::get("http://served.test/").body(Empty::<Bytes>::new()).unwrap();
    let response = handler.handle(request).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.expect("the body").to_bytes();
    assert_eq!(body, "Hello from Kapsel\n");
    assert!(tokio::time::timeout(Duration::from_millis(200), server.wait()).await.is_err(), "a server runs until stopped");
    server.kill();
    let exit = server.wait().await;
    assert_eq!((exit.reason, exit.exit_code), (ExitReason::Killed, 137));
    assert!(handler.is_stopped());
    let request = Request::get("http://served.test/").body(Empty::<Bytes>::new()).unwrap();
    assert_eq!(handler.handle(request).await.status(), StatusCode::SERVICE_UNAVAILABLE);
}
