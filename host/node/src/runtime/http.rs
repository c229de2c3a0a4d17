//! Serving HTTP with a pod's component: a container whose component is a
//! `wasi:http` proxy ([`Prepared::serves_http`]) is run with
//! [`Runtime::serve`]. It starts by making one instance, to learn that it
//! can (within its memory limit, without trapping); a container that cannot
//! ends as a command would (`OOMKilled`, or an error), and one that can is
//! serving ([`Container::serving`]) until it is killed or its deadline
//! passes, which ends it as a command's run is ended.
//!
//! While serving, its [`HttpHandler`] answers each request from a fresh
//! instance of the pre-instantiated [`ProxyPre`] in a store of its own,
//! made as a command's is (the container's arguments, environment, volumes
//! and log; epoch yields; its CPU account, so all its requests together
//! are held to its CPU limit). All the instances of one container draw
//! their linear memory from one budget, its memory limit, and give it back
//! when their request is done. At most [`MAX_CONCURRENT_REQUESTS`] run at
//! once per container; more wait their turn, so a flood queues instead of
//! allocating without bound.
//!
//! Whatever a request does stays with it: a guest that traps, fails or
//! does not answer gets its request a 500, one that cannot get memory a 500
//! (it needs more than the whole limit) or a 503 (the container's other
//! requests hold the rest; `Retry-After: 1`), a request that comes while
//! the container stops a 503 — each with a short plain-text body — and
//! neither the container's other requests nor the node notice. A request
//! whose caller goes away before the answer stops its guest; once the
//! answer has begun, the guest runs until it has written its body.

use std::convert::Infallible;
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use http_body_util::{BodyExt, Full};
use hyper::StatusCode;
use hyper::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use tokio::sync::{Semaphore, oneshot, watch};
use wasmtime::Engine;
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use super::{
    Container, ContainerConfig, ContainerState, Entry, Exit, ExitReason, Outcome, Prepared, Refusal, Runtime, StoreRecipe, bytes_text,
    classify, until_stopped,
};

/// The most requests one container serves at once; more wait for a turn.
/// With the node's default memory limit (512 MiB) and a small guest (about
/// 1 MiB an instance) they fit many times over; a guest whose instances are
/// larger finds its limit first and answers 503.
pub const MAX_CONCURRENT_REQUESTS: usize = 32;

impl Runtime {
    /// Serves HTTP with `prepared`, a `wasi:http` proxy, on tokio tasks (call
    /// it within a tokio runtime): once its first instance is made the
    /// container is serving ([`Container::serving`] gives its
    /// [`HttpHandler`]), until it is killed or passes its deadline
    /// ([`Container::wait`] then gives [`ExitReason::Killed`] or
    /// [`ExitReason::DeadlineExceeded`], after the requests in progress are
    /// stopped). A first instance that cannot be made ends it at once, as a
    /// command that traps or outgrows its memory does. A command given here
    /// ends at once with an error.
    pub fn serve(&self, prepared: &Prepared, config: ContainerConfig) -> Container {
        let started_at = Utc::now();
        let pre = match &prepared.entry {
            Entry::Proxy(pre) => pre.clone(),
            Entry::Command(_) => {
                let message = format!("{} is a command (wasi:cli/run), not an HTTP server: it is run, not served", prepared.digest);
                return Container::failed_to_start(config.log, message, started_at);
            }
        };
        if let Err(message) = self.check_engine(prepared) {
            return Container::failed_to_start(config.log, message, started_at);
        }
        let server = Arc::new(Server {
            digest: prepared.digest.clone(),
            engine: self.inner.engine.clone(),
            pre,
            recipe: self.recipe(&config),
            turns: Arc::new(Semaphore::new(MAX_CONCURRENT_REQUESTS)),
            stopping: watch::Sender::new(false),
            ready: watch::Sender::new(false),
        });
        let (kill, killed) = watch::channel(false);
        let (exited, exit) = watch::channel(None);
        tokio::spawn(lifecycle(server.clone(), killed, config.deadline, exited, started_at));
        Container { kill, exit, started_at, server: Some(ServerHandle(server)) }
    }
}

/// What a serving container's requests share.
struct Server {
    digest: String,
    engine: Engine,
    pre: ProxyPre<ContainerState>,
    recipe: StoreRecipe,
    /// One permit per request allowed to run at once.
    turns: Arc<Semaphore>,
    /// True once the container is stopping: new requests are refused and those in progress stopped.
    stopping: watch::Sender<bool>,
    /// True once the first instance was made.
    ready: watch::Sender<bool>,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("digest", &self.digest)
            .field("ready", &*self.ready.borrow())
            .field("stopping", &*self.stopping.borrow())
            .finish_non_exhaustive()
    }
}

/// A serving container's side of its [`Container`].
#[derive(Debug)]
pub(super) struct ServerHandle(Arc<Server>);

impl ServerHandle {
    /// Waits until the first instance is made (true), or the server is gone (false).
    pub(super) async fn ready(&self) -> bool {
        self.0.ready.subscribe().wait_for(|ready| *ready).await.is_ok()
    }

    pub(super) fn handler(&self) -> HttpHandler {
        HttpHandler { server: self.0.clone() }
    }
}

/// Handles requests for one serving container ([`Container::serving`]).
/// Cheap to clone; clones serve the same container. Once the container has
/// stopped, every request is answered 503.
#[derive(Clone)]
pub struct HttpHandler {
    server: Arc<Server>,
}

impl fmt::Debug for HttpHandler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpHandler").field("server", &self.server).finish()
    }
}

impl HttpHandler {
    /// Answers `request` with a fresh instance of the container's component
    /// (see the module docs for what a failure is answered with). The
    /// request is given to the guest as `http` (the scheme of `wasi:http`'s
    /// `incoming-request`); it needs an authority, in its URI or a `Host`
    /// header (400 otherwise). The response's body streams from the guest.
    pub async fn handle<B>(&self, request: hyper::Request<B>) -> hyper::Response<HyperOutgoingBody>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        self.server.handle(request).await
    }

    /// Whether the container has stopped serving (every request is answered 503).
    pub fn is_stopped(&self) -> bool {
        *self.server.stopping.borrow()
    }
}

impl Server {
    async fn handle<B>(&self, request: hyper::Request<B>) -> hyper::Response<HyperOutgoingBody>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let mut stopping = self.stopping.subscribe();
        let turn = tokio::select! {
            biased;
            _ = stopping.wait_for(|stopping| *stopping) => None,
            turn = self.turns.clone().acquire_owned() => turn.ok(),
        };
        let Some(turn) = turn.filter(|_| !*stopping.borrow()) else {
            return plain(StatusCode::SERVICE_UNAVAILABLE, "the pod is stopping\n");
        };
        let mut store = match self.recipe.store(&self.engine) {
            Ok(store) => store,
            Err(message) => {
                tracing::warn!(digest = %self.digest, %message, "cannot make a store for a request");
                return plain(StatusCode::INTERNAL_SERVER_ERROR, "the pod cannot take requests\n");
            }
        };
        let incoming = match store.data_mut().http().new_incoming_request(Scheme::Http, request) {
            Ok(incoming) => incoming,
            Err(error) => return plain(StatusCode::BAD_REQUEST, format!("bad request: {error}\n")),
        };
        let (answer, answered) = oneshot::channel();
        let outparam = match store.data_mut().http().new_response_outparam(answer) {
            Ok(outparam) => outparam,
            Err(error) => {
                tracing::warn!(digest = %self.digest, error = %format!("{error:#}"), "cannot give a request its response");
                return plain(StatusCode::INTERNAL_SERVER_ERROR, "the pod cannot take requests\n");
            }
        };
        let pre = self.pre.clone();
        let guest = tokio::spawn(async move {
            let _turn = turn;
            let call = async {
                let proxy = pre.instantiate_async(&mut store).await?;
                proxy.wasi_http_incoming_handler().call_handle(&mut store, incoming, outparam).await
            };
            let outcome = until_stopped(call, &mut stopping, None).await;
            let refused = store.data().limiter.refused;
            // The store goes here, and the memory it held goes back to the container's budget.
            (outcome, refused)
        });
        let guest = StopUnlessAnswered(Some(guest));
        match answered.await {
            Ok(Ok(response)) => {
                guest.detach();
                response
            }
            Ok(Err(code)) => {
                guest.detach();
                // At debug, as every failure of a request: a pod failing every request must not fill the node's log.
                tracing::debug!(digest = %self.digest, error = ?code, "a pod answered a request with an error");
                plain(StatusCode::INTERNAL_SERVER_ERROR, "the pod failed to handle the request\n")
            }
            // The guest's end dropped the outparam without an answer: its outcome says why.
            Err(_) => match guest.detach() {
                Some(guest) => match guest.await {
                    Ok((outcome, refused)) => self.failure(outcome, refused),
                    Err(error) => {
                        tracing::error!(digest = %self.digest, %error, "a request's task failed");
                        plain(StatusCode::INTERNAL_SERVER_ERROR, "the pod failed to handle the request\n")
                    }
                },
                None => plain(StatusCode::INTERNAL_SERVER_ERROR, "the pod failed to handle the request\n"),
            },
        }
    }

    /// The answer to a request whose guest ended without answering.
    fn failure(&self, outcome: Outcome<wasmtime::Result<()>>, refused: Option<Refusal>) -> hyper::Response<HyperOutgoingBody> {
        if let (Some(refusal), Some(limit)) = (refused, self.recipe.memory.limit) {
            let limit_text = bytes_text(limit);
            if refusal.store > limit {
                let text = format!("the request needs more memory than the pod's limit of {limit_text}\n");
                return plain(StatusCode::INTERNAL_SERVER_ERROR, text);
            }
            let text = format!("the pod's memory limit of {limit_text} is taken by its other requests; try again\n");
            let mut response = plain(StatusCode::SERVICE_UNAVAILABLE, text);
            response.headers_mut().insert(RETRY_AFTER, HeaderValue::from_static("1"));
            return response;
        }
        match outcome {
            Outcome::Killed | Outcome::DeadlineExceeded => plain(StatusCode::SERVICE_UNAVAILABLE, "the pod is stopping\n"),
            Outcome::Finished(Ok(())) => plain(StatusCode::INTERNAL_SERVER_ERROR, "the pod did not answer the request\n"),
            Outcome::Finished(Err(error)) => {
                let error = match error.downcast_ref::<wasmtime::Trap>() {
                    Some(trap) => format!("wasm trap: {trap}"),
                    None => format!("{error:#}"),
                };
                tracing::debug!(digest = %self.digest, %error, "a pod failed to handle a request");
                plain(StatusCode::INTERNAL_SERVER_ERROR, "the pod failed to handle the request\n")
            }
        }
    }

    /// Makes the first instance: `Ok` when it could be made, otherwise how the container ended.
    async fn first_instance(
        &self,
        killed: &mut watch::Receiver<bool>,
        deadline: Option<tokio::time::Instant>,
        started_at: DateTime<Utc>,
    ) -> Result<(), Exit> {
        let mut store = self.recipe.store(&self.engine).map_err(|message| Exit {
            exit_code: super::EXIT_CODE_TRAP,
            reason: ExitReason::Error,
            message,
            started_at,
            finished_at: Utc::now(),
        })?;
        let instantiate = async { self.pre.instantiate_async(&mut store).await.map(drop) };
        let outcome = match until_stopped(instantiate, killed, deadline).await {
            Outcome::Finished(Ok(())) => return Ok(()),
            Outcome::Finished(Err(error)) => Outcome::Finished(Err(error.context("making the server's first instance"))),
            Outcome::Killed => Outcome::Killed,
            Outcome::DeadlineExceeded => Outcome::DeadlineExceeded,
        };
        Err(classify(outcome, store.data().limiter.oom_message(), started_at, Utc::now()))
    }

    /// Stops taking requests and waits until those in progress (stopped at their next yield) are done.
    async fn stop(&self) {
        self.stopping.send_replace(true);
        let all = u32::try_from(MAX_CONCURRENT_REQUESTS).unwrap_or(u32::MAX);
        // Turns are handed out in order: those waiting before this see `stopping` and give theirs back at once.
        drop(self.turns.acquire_many(all).await);
        self.turns.close();
    }
}

/// A serving container's life: its first instance, then serving until it is killed or its deadline passes.
async fn lifecycle(
    server: Arc<Server>,
    mut killed: watch::Receiver<bool>,
    deadline: Option<tokio::time::Instant>,
    exited: watch::Sender<Option<Exit>>,
    started_at: DateTime<Utc>,
) {
    let exit = match server.first_instance(&mut killed, deadline, started_at).await {
        Err(exit) => exit,
        Ok(()) => {
            server.ready.send_replace(true);
            let outcome = until_stopped(std::future::pending::<Infallible>(), &mut killed, deadline).await;
            server.stop().await;
            let outcome = match outcome {
                Outcome::DeadlineExceeded => Outcome::DeadlineExceeded,
                Outcome::Killed | Outcome::Finished(_) => Outcome::Killed,
            };
            classify(outcome, None, started_at, Utc::now())
        }
    };
    server.stopping.send_replace(true);
    server.turns.close();
    server.recipe.log.close();
    exited.send_replace(Some(exit));
}

/// A request's guest task, stopped when the request's caller goes away
/// before it was answered (the future of [`HttpHandler::handle`] dropped).
struct StopUnlessAnswered<T>(Option<tokio::task::JoinHandle<T>>);

impl<T> StopUnlessAnswered<T> {
    /// Lets the task run to its end; its handle, to await it.
    fn detach(mut self) -> Option<tokio::task::JoinHandle<T>> {
        self.0.take()
    }
}

impl<T> Drop for StopUnlessAnswered<T> {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}

/// A response with a short plain-text body.
fn plain(status: StatusCode, text: impl Into<String>) -> hyper::Response<HyperOutgoingBody> {
    let body = Full::new(Bytes::from(text.into())).map_err(|never: Infallible| match never {}).boxed_unsync();
    let mut response = hyper::Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}
