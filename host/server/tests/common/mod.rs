//! An in-process Kapsel API for integration tests: a fresh SQLite store in a
//! temporary directory, an IT admin and a tenant token, the `default`,
//! `dev`, `qa` and `prod` namespaces with the [`IMAGES`] pushed into each
//! (a pod's image must name a pushed `Artifact`), and the router driven
//! with `tower::ServiceExt::oneshot` (no network).

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::BodyExt as _;
use kapsel_api::kinds::token::TOKEN;
use kapsel_server::auth::{Authenticator, hash_secret};
use kapsel_server::{App, ServerInfo, router};
use kapsel_store::{Key, Store, StoreOptions};
use serde_json::{Value, json};
use tower::ServiceExt as _;

/// The IT admin's bearer token.
pub const ADMIN: &str = "kpl_test-admin-secret";
/// Alice's bearer token: `edit` in `dev`, `view` in `qa`, nothing elsewhere.
pub const ALICE: &str = "kpl_test-alice-secret";

pub const JSON: &str = "application/json";
pub const MERGE_PATCH: &str = "application/merge-patch+json";
pub const STRATEGIC_PATCH: &str = "application/strategic-merge-patch+json";
pub const JSON_PATCH: &str = "application/json-patch+json";
pub const TABLE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io";

/// How long a test waits for something that should happen.
pub const PATIENCE: Duration = Duration::from_secs(10);
/// How long a test listens to make sure nothing (more) happens.
pub const QUIET: Duration = Duration::from_millis(400);

/// The API under test and a handle on its store.
pub struct Api {
    pub router: Router,
    /// The application state, for starting what `controllers::start` does not (the periodic audit).
    pub app: App,
    pub store: Store,
    /// Set to `true` to tell the server it is stopping (watches end). Kept
    /// here because a dropped sender would read as "stopping" at once.
    pub stop: tokio::sync::watch::Sender<bool>,
    /// The data directory (the store's SQLite file is `k.db` in it).
    pub dir: tempfile::TempDir,
}

/// A response, its body parsed as JSON when it is JSON (`Value::Null` otherwise).
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
    pub body: Value,
}

impl Reply {
    /// `metadata.resourceVersion` of the body.
    pub fn rv(&self) -> String {
        rv(&self.body)
    }

    /// `message` of a `Status` body.
    pub fn message(&self) -> &str {
        self.body["message"].as_str().unwrap_or_default()
    }

    /// `details.causes[].field` of a `Status` body.
    pub fn cause_fields(&self) -> Vec<String> {
        self.body["details"]["causes"]
            .as_array()
            .map(|c| c.iter().map(|c| c["field"].as_str().unwrap_or_default().to_string()).collect())
            .unwrap_or_default()
    }

    /// The `reason` of the cause at `field`.
    pub fn cause_reason(&self, field: &str) -> Option<String> {
        self.body["details"]["causes"]
            .as_array()?
            .iter()
            .find(|c| c["field"] == field)
            .and_then(|c| c["reason"].as_str().map(str::to_string))
    }

    /// Sorted `name`s of the items of a list body.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.items().iter().map(|o| o["metadata"]["name"].as_str().unwrap_or_default().to_string()).collect();
        names.sort();
        names
    }

    /// Sorted `namespace/name`s of the items of a list body.
    pub fn qualified_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .items()
            .iter()
            .map(|o| {
                format!(
                    "{}/{}",
                    o["metadata"]["namespace"].as_str().unwrap_or_default(),
                    o["metadata"]["name"].as_str().unwrap_or_default()
                )
            })
            .collect();
        names.sort();
        names
    }

    pub fn items(&self) -> Vec<Value> {
        self.body["items"].as_array().cloned().unwrap_or_else(|| panic!("not a list: {}", self.text))
    }

    /// Asserts a success status code.
    #[track_caller]
    pub fn ok(&self, code: u16) -> &Self {
        assert_eq!(self.status.as_u16(), code, "unexpected status; body: {}", self.text);
        self
    }

    /// Asserts a failure `Status` body with this code and reason.
    #[track_caller]
    pub fn failure(&self, code: u16, reason: &str) -> &Self {
        assert_eq!(self.status.as_u16(), code, "unexpected status; body: {}", self.text);
        assert_eq!(self.body["kind"], "Status", "not a Status: {}", self.text);
        assert_eq!(self.body["apiVersion"], "v1", "{}", self.text);
        assert_eq!(self.body["status"], "Failure", "{}", self.text);
        assert_eq!(self.body["code"], code, "{}", self.text);
        assert_eq!(self.body["reason"], reason, "{}", self.text);
        self
    }

    /// Asserts the `Status` message exactly.
    #[track_caller]
    pub fn says(&self, message: &str) -> &Self {
        assert_eq!(self.message(), message, "{}", self.text);
        self
    }

    /// Asserts the `Status` message contains each of `parts`.
    #[track_caller]
    pub fn mentions(&self, parts: &[&str]) -> &Self {
        for part in parts {
            assert!(self.message().contains(part), "message {:?} lacks {part:?}", self.message());
        }
        self
    }

    /// Asserts `details.name`, `details.kind` (and `details.group`, when not empty).
    #[track_caller]
    pub fn about(&self, name: &str, kind: &str, group: &str) -> &Self {
        let details = &self.body["details"];
        assert_eq!(details["name"].as_str().unwrap_or_default(), name, "{}", self.text);
        assert_eq!(details["kind"].as_str().unwrap_or_default(), kind, "{}", self.text);
        assert_eq!(details["group"].as_str().unwrap_or_default(), group, "{}", self.text);
        self
    }
}

/// `metadata.resourceVersion` of an object.
pub fn rv(object: &Value) -> String {
    object["metadata"]["resourceVersion"].as_str().unwrap_or_else(|| panic!("no resourceVersion in {object}")).to_string()
}

/// `metadata.resourceVersion` as a number.
pub fn revision(object: &Value) -> i64 {
    rv(object).parse().unwrap_or_else(|_| panic!("resourceVersion is not a number in {object}"))
}

/// The images `Api::start` pushes into each of its namespaces — all of
/// them the `hello` sample component, so one blob — for tests whose pods
/// are not about images.
pub const IMAGES: &[&str] =
    &["app:1", "app:2", "app:latest", "web:1", "web:2", "web:3", "log:1", "log:2", "sidecar:1", "side:1", "x:latest"];

/// The component the standard images are: the `hello` sample workload, built by `kapsel-node`'s build script.
pub const COMPONENT: &[u8] = kapsel_node::HELLO;

/// A minimal valid pod (its image is one of [`IMAGES`]).
pub fn pod(name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "app", "image": "app:1"}]},
    })
}

/// `sha256:<hex>` of `bytes`, as the server names a pushed image.
pub fn digest_of(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha256:{:x}", sha2::Sha256::digest(bytes))
}

pub fn artifacts(namespace: &str) -> String {
    format!("/apis/kapsel.io/v1alpha1/namespaces/{namespace}/artifacts")
}

pub fn artifact_path(namespace: &str, name: &str) -> String {
    format!("{}/{name}", artifacts(namespace))
}

/// The push endpoint of artifact `name` for `tag`.
pub fn push_path(namespace: &str, name: &str, tag: &str) -> String {
    format!("{}/push?tag={}", artifact_path(namespace, name), q(tag))
}

/// The blob endpoint of artifact `name` for `digest`.
pub fn blob_path(namespace: &str, name: &str, digest: &str) -> String {
    format!("{}/blobs/{digest}", artifact_path(namespace, name))
}

/// `NAME:TAG` (or `NAME`, meaning `NAME:latest`) as `(NAME, TAG)`.
pub fn split_image(image: &str) -> (&str, &str) {
    image.split_once(':').unwrap_or((image, "latest"))
}

/// A minimal valid pod with labels.
pub fn labelled_pod(name: &str, labels: Value) -> Value {
    let mut pod = pod(name);
    pod["metadata"]["labels"] = labels;
    pod
}

pub fn pods(namespace: &str) -> String {
    format!("/api/v1/namespaces/{namespace}/pods")
}

pub fn pod_path(namespace: &str, name: &str) -> String {
    format!("/api/v1/namespaces/{namespace}/pods/{name}")
}

/// Percent-encodes a query parameter value.
pub fn q(value: &str) -> String {
    let mut out = String::new();
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

pub async fn store_token(store: &Store, name: &str, secret: &str, mut spec: Value) {
    spec["secretHash"] = json!(hash_secret(secret));
    let token = json!({
        "apiVersion": TOKEN.api_version(),
        "kind": TOKEN.kind,
        "metadata": {"name": name, "uid": format!("uid-{name}"), "creationTimestamp": "2024-01-01T00:00:00Z", "generation": 1},
        "spec": spec,
    });
    store.create(Key::new(TOKEN.store_key(), "", name), token).await.expect("store a token");
}

impl Api {
    /// A fresh API with the admin and alice tokens and the `default`, `dev`, `qa`, `prod` namespaces.
    pub async fn start() -> Api {
        let dir = tempfile::tempdir().expect("temporary directory");
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("k.db").display());
        let store = Store::open(&url, StoreOptions { compaction_interval: None, ..Default::default() }).await.expect("open the store");
        store_token(&store, "admin", ADMIN, json!({"user": "admin", "admin": true, "roles": []})).await;
        store_token(
            &store,
            "alice",
            ALICE,
            json!({"user": "alice", "roles": [{"namespace": "dev", "role": "edit"}, {"namespace": "qa", "role": "view"}]}),
        )
        .await;
        let auth = Authenticator::start(&store).await.expect("start the authenticator");
        let (stop, stopping) = tokio::sync::watch::channel(false);
        let cache = kapsel_plugins::CompileCache::new(dir.path().join("plugin-cache"));
        let plugins =
            kapsel_server::plugins::PluginRegistry::start(&store, Some(cache), dir.path().join("volumes")).await.expect("load plug-ins");
        let app = App {
            store: store.clone(),
            auth,
            info: Arc::new(ServerInfo { advertise_address: "127.0.0.1:6443".into() }),
            stopping,
            plugins,
            admission: kapsel_server::admission::Admission::start(&store).await.expect("load admission policies"),
            watch_limits: kapsel_server::watches::WatchLimits::new(4),
        };
        kapsel_server::controllers::start(&app);
        let api = Api { router: router(app.clone()), app, store, stop, dir };
        let namespaces = ["default", "dev", "qa", "prod"];
        for namespace in namespaces {
            let reply =
                api.post("/api/v1/namespaces", json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})).await;
            reply.ok(201);
            assert_eq!(reply.body["status"]["phase"], "Active");
        }
        futures::future::join_all(namespaces.map(|namespace| api.push_images(namespace, IMAGES))).await;
        api
    }

    /// Pushes `bytes` as `token` to artifact `name` under `tag` (the reply as it is).
    pub async fn push_as(&self, token: &str, namespace: &str, name: &str, tag: &str, bytes: impl Into<Body>) -> Reply {
        self.call(Some(token), Method::POST, &push_path(namespace, name, tag), &[("content-type", "application/wasm")], bytes).await
    }

    /// Pushes the standard [`COMPONENT`] as the admin under `image` (`NAME:TAG`
    /// or `NAME`) into `namespace`, as `kapsel push` does; returns the artifact.
    pub async fn push_image(&self, namespace: &str, image: &str) -> Value {
        let (name, tag) = split_image(image);
        let reply = self.push_as(ADMIN, namespace, name, tag, COMPONENT).await;
        reply.ok(200);
        assert_eq!(reply.body["spec"]["tags"][tag], digest_of(COMPONENT), "{}", reply.text);
        reply.body
    }

    /// Pushes each of `images` into `namespace`: the tags of one artifact one
    /// after the other, different artifacts at the same time.
    pub async fn push_images(&self, namespace: &str, images: &[&str]) {
        let mut by_name: Vec<(&str, Vec<&str>)> = Vec::new();
        for image in images {
            let name = split_image(image).0;
            match by_name.iter_mut().find(|(n, _)| *n == name) {
                Some((_, same)) => same.push(image),
                None => by_name.push((name, vec![image])),
            }
        }
        futures::future::join_all(by_name.into_iter().map(|(_, images)| async move {
            for image in images {
                self.push_image(namespace, image).await;
            }
        }))
        .await;
    }

    /// Sends a request as it is.
    pub async fn send(&self, request: Request<Body>) -> http::Response<Body> {
        self.router.clone().oneshot(request).await.expect("the router is infallible")
    }

    /// Sends a request and reads the whole response.
    pub async fn call(&self, token: Option<&str>, method: Method, path: &str, headers: &[(&str, &str)], body: impl Into<Body>) -> Reply {
        let mut builder = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let response = self.send(builder.body(body.into()).expect("request")).await;
        read(response).await
    }

    /// A JSON request as `token`.
    pub async fn json_as(&self, token: &str, method: Method, path: &str, body: Option<Value>) -> Reply {
        match body {
            Some(body) => self.call(Some(token), method, path, &[("content-type", JSON)], body.to_string()).await,
            None => self.call(Some(token), method, path, &[], Body::empty()).await,
        }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.json_as(ADMIN, Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.json_as(ADMIN, Method::POST, path, Some(body)).await
    }

    pub async fn put(&self, path: &str, body: Value) -> Reply {
        self.json_as(ADMIN, Method::PUT, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.json_as(ADMIN, Method::DELETE, path, None).await
    }

    pub async fn patch(&self, path: &str, content_type: &str, body: Value) -> Reply {
        self.call(Some(ADMIN), Method::PATCH, path, &[("content-type", content_type)], body.to_string()).await
    }

    /// Creates a pod as the admin and returns it as stored.
    pub async fn create_pod(&self, namespace: &str, pod: Value) -> Value {
        let reply = self.post(&pods(namespace), pod).await;
        reply.ok(201);
        reply.body
    }

    /// Creates the ResourceClass `small` (100m CPU) and, in `namespace`, a
    /// LimitRange defaulting containers' memory to 64Mi: a pod then meets
    /// both class sizing and limit-range defaulting.
    pub async fn add_class_and_limit_range(&self, namespace: &str) {
        let class = json!({"apiVersion": "kapsel.io/v1alpha1", "kind": "ResourceClass", "metadata": {"name": "small"},
            "spec": {"requests": {"cpu": "100m"}, "limits": {"cpu": "100m"}}});
        self.post("/apis/kapsel.io/v1alpha1/resourceclasses", class).await.ok(201);
        let range = json!({"apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": "defaults"},
            "spec": {"limits": [{"type": "Container", "default": {"memory": "64Mi"}}]}});
        self.post(&format!("/api/v1/namespaces/{namespace}/limitranges"), range).await.ok(201);
    }

    /// Starts a watch as `token`; asserts that it was accepted.
    pub async fn watch_as(&self, token: &str, path: &str) -> Watch {
        let request =
            Request::builder().uri(path).header(header::AUTHORIZATION, format!("Bearer {token}")).body(Body::empty()).expect("request");
        let response = tokio::time::timeout(PATIENCE, self.send(request)).await.expect("the watch answers in time");
        if response.status() != StatusCode::OK {
            let reply = read(response).await;
            panic!("watch {path} refused: {} {}", reply.status, reply.text);
        }
        assert_eq!(response.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()), Some("application/json"));
        Watch { body: response.into_body(), buffer: Vec::new() }
    }

    pub async fn watch(&self, path: &str) -> Watch {
        self.watch_as(ADMIN, path).await
    }
}

/// Reads a whole response.
pub async fn read(response: http::Response<Body>) -> Reply {
    let (parts, body) = response.into_parts();
    let bytes = tokio::time::timeout(PATIENCE, body.collect()).await.expect("the body ends in time").expect("body").to_bytes();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Reply { status: parts.status, headers: parts.headers, text, body }
}

/// What a watch produced next.
#[derive(Debug)]
pub enum Next {
    Event(Value),
    /// The stream ended.
    End,
    /// Nothing arrived in the time given.
    Quiet,
}

/// A watch response body, read incrementally as newline-delimited JSON events.
pub struct Watch {
    body: Body,
    buffer: Vec<u8>,
}

impl Watch {
    /// The next event, the end of the stream, or `Quiet` after `wait`.
    pub async fn poll(&mut self, wait: Duration) -> Next {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=end).collect();
                let event = serde_json::from_slice(&line)
                    .unwrap_or_else(|e| panic!("watch line is not JSON ({e}): {}", String::from_utf8_lossy(&line)));
                return Next::Event(event);
            }
            match tokio::time::timeout_at(deadline, self.body.frame()).await {
                Err(_) => return Next::Quiet,
                Ok(None) => {
                    assert!(self.buffer.is_empty(), "the stream ended inside a line: {}", String::from_utf8_lossy(&self.buffer));
                    return Next::End;
                }
                Ok(Some(Err(error))) => panic!("the watch stream failed: {error}"),
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        self.buffer.extend_from_slice(&data);
                    }
                }
            }
        }
    }

    /// The next event; panics if none comes in time.
    pub async fn next(&mut self) -> Value {
        match self.poll(PATIENCE).await {
            Next::Event(event) => event,
            other => panic!("expected a watch event, got {other:?}"),
        }
    }

    /// The next event, asserted to be `kind` about the object `name`; returns its object.
    pub async fn expect(&mut self, kind: &str, name: &str) -> Value {
        let event = self.next().await;
        assert_eq!((event["type"].as_str(), event["object"]["metadata"]["name"].as_str()), (Some(kind), Some(name)), "event: {event}");
        event["object"].clone()
    }

    /// Asserts that nothing arrives for a while.
    pub async fn assert_quiet(&mut self) {
        match self.poll(QUIET).await {
            Next::Quiet => {}
            other => panic!("expected no watch event, got {other:?}"),
        }
    }
}

/// `(type, namespace/name)` of an event.
pub fn summary(event: &Value) -> (String, String) {
    let object = &event["object"]["metadata"];
    (
        event["type"].as_str().unwrap_or_default().to_string(),
        format!("{}/{}", object["namespace"].as_str().unwrap_or_default(), object["name"].as_str().unwrap_or_default()),
    )
}

/// Polls `path` until `done` holds for its body (plug-in status and controller passes are asynchronous).
pub async fn eventually(api: &Api, path: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let reply = api.get(path).await;
        if reply.status == 200 && done(&reply.body) {
            return reply.body;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: still {}", reply.text);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
