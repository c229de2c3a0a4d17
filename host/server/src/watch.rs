//! Watches over HTTP: newline-delimited JSON events
//! (`{"type":"ADDED|MODIFIED|DELETED|ERROR","object":…}`) streamed while
//! the connection lasts or until `timeoutSeconds`.
//!
//! Without a `resourceVersion` (or with `0`), or with `sendInitialEvents=true`
//! (client-go's watch-list, which kubectl's waits use), the watch starts with
//! an `ADDED` event per current object — the latter then a `BOOKMARK` marked
//! `k8s.io/initial-events-end`; with a revision, it resumes after it. A
//! revision older than the compaction horizon is answered 410 `Expired`
//! (or, mid-stream, an `ERROR` event carrying that `Status`), and the
//! client lists again. Selectors are applied to each event, turning a
//! change that moves an object out of the selection into `DELETED`.
//!
//! A tenant's initial state is read like its lists (only its namespaces,
//! [`crate::listing`]), and each identity but IT admins may hold at most
//! [`WatchLimits`]' number of watches open at once: one more is answered
//! 429 `TooManyRequests` with `Retry-After`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;
use kapsel_store::{Change, ChangeType, StoreError};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::App;
use crate::auth::Identity;
use crate::error::ApiError;
use crate::request::{Params, Target};
use crate::resources::{Selectors, visible};
use crate::table;

/// The default of `kapsel serve --max-watches-per-identity`.
pub const DEFAULT_MAX_WATCHES_PER_IDENTITY: usize = 100;

/// How long a client told it has too many watches open should wait.
const WATCH_RETRY_AFTER_SECONDS: u64 = 5;

/// The watches each identity has open, and how many it may.
#[derive(Debug, Clone)]
pub struct WatchLimits {
    max_per_identity: usize,
    open: Arc<Mutex<HashMap<String, usize>>>,
}

impl Default for WatchLimits {
    fn default() -> Self {
        WatchLimits::new(DEFAULT_MAX_WATCHES_PER_IDENTITY)
    }
}

impl WatchLimits {
    pub fn new(max_per_identity: usize) -> Self {
        WatchLimits { max_per_identity, open: Arc::default() }
    }

    /// Counts one more watch of `identity`, or refuses it (429) at the limit; IT admins are not counted.
    pub fn acquire(&self, identity: &Identity) -> Result<Option<WatchPermit>, ApiError> {
        if identity.admin {
            return Ok(None);
        }
        let mut open = self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = open.entry(identity.user.clone()).or_default();
        if *count >= self.max_per_identity {
            return Err(ApiError::TooManyRequests {
                message: format!("too many watches open: {:?} has {count} open, the most one identity may have at once", identity.user),
                retry_after_seconds: WATCH_RETRY_AFTER_SECONDS,
            });
        }
        *count += 1;
        Ok(Some(WatchPermit { limits: self.clone(), user: identity.user.clone() }))
    }

    /// How many watches `user` has open.
    pub fn open(&self, user: &str) -> usize {
        self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(user).copied().unwrap_or(0)
    }
}

/// One open watch, counted until it is dropped.
#[derive(Debug)]
pub struct WatchPermit {
    limits: WatchLimits,
    user: String,
}

impl Drop for WatchPermit {
    fn drop(&mut self) {
        let mut open = self.limits.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.user) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.user);
            }
        }
    }
}

pub async fn serve(app: &App, identity: &Identity, target: &Target, params: &Params, headers: &HeaderMap) -> Result<Response, ApiError> {
    let permit = app.watch_limits.acquire(identity)?;
    let resource = target.resource;
    let selectors = Selectors::parse(resource, params)?;
    let namespace = target.namespace.clone().or(selectors.namespace().map(str::to_string));
    // `sendInitialEvents=true` (client-go's watch-list) asks for the current objects first, whatever the revision.
    let send_initial_events = params.flag("sendInitialEvents");
    // The revision to resume after, unless the watch starts with the current objects.
    let resume_after = match params.get("resourceVersion") {
        _ if send_initial_events => None,
        None | Some("0") => None,
        Some(text) => Some(text.parse::<i64>().map_err(|_| ApiError::BadRequest(format!("invalid resourceVersion {text:?}")))?),
    };
    let (initial, after) = match resume_after {
        Some(revision) => (Vec::new(), revision),
        None => {
            let page = crate::listing::read(app, identity, resource, namespace.as_deref(), &selectors, None, None).await?;
            (page.items, page.revision)
        }
    };
    let mut changes =
        app.store.watch(&resource.store_key(), namespace.as_deref(), after).await.map_err(|e| ApiError::from_store(e, resource, ""))?;
    let timeout = params.u64("timeoutSeconds")?.map(Duration::from_secs).unwrap_or(Duration::from_secs(30 * 60));
    let encoder = Encoder {
        resource,
        as_table: table::wanted(headers),
        include_object: params.get("includeObject").map(str::to_string),
        first: true,
    };
    let name = target.name.clone();
    let identity = identity.clone();
    let mut stopping = app.stopping.clone();
    let (sender, receiver) = mpsc::channel::<Result<Bytes, std::convert::Infallible>>(64);
    tokio::spawn(async move {
        let _permit = permit;
        let mut encoder = encoder;
        let wanted = |object: &Value| {
            visible(&identity, resource, object)
                && name.as_deref().is_none_or(|n| kapsel_api::object::name(object) == Some(n))
                && selectors.matches(object)
        };
        for object in initial {
            if wanted(&object) && sender.send(Ok(encoder.event("ADDED", object))).await.is_err() {
                return;
            }
        }
        if send_initial_events {
            // The bookmark that tells a watch-list client its initial state is complete.
            let bookmark = json!({
                "kind": resource.kind,
                "apiVersion": resource.api_version(),
                "metadata": {"resourceVersion": after.to_string(), "annotations": {"k8s.io/initial-events-end": "true"}},
            });
            if sender.send(Ok(line(json!({"type": "BOOKMARK", "object": bookmark})))).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        loop {
            let next = tokio::select! {
                _ = sender.closed() => return,
                _ = stopping.wait_for(|stop| *stop) => return,
                _ = &mut deadline => return,
                next = changes.next() => next,
            };
            let change = match next {
                None => return,
                Some(Err(StoreError::Compacted { requested, oldest })) => {
                    let status = ApiError::Expired(format!("too old resource version: {requested} ({oldest})")).status();
                    let _ = sender.send(Ok(line(json!({"type": "ERROR", "object": status})))).await;
                    return;
                }
                Some(Err(error)) => {
                    let status = ApiError::ServiceUnavailable(format!("the watch ended: {error}")).status();
                    let _ = sender.send(Ok(line(json!({"type": "ERROR", "object": status})))).await;
                    return;
                }
                Some(Ok(change)) => change,
            };
            let Some((kind, mut object)) = filtered(&change, wanted) else { continue };
            crate::listing::redact(&identity, resource, &mut object);
            if sender.send(Ok(encoder.event(kind, object))).await.is_err() {
                return;
            }
        }
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(receiver));
    Ok(([(http::header::CONTENT_TYPE, "application/json"), (http::header::CACHE_CONTROL, "no-cache")], body).into_response())
}

/// What a watcher whose filter is `wanted` sees of `change`, as the
/// Kubernetes API server does it: a modification that brings an object into
/// the selection is `ADDED`; one that takes it out is `DELETED`, carrying the
/// last selected state at the new revision.
fn filtered(change: &Change, wanted: impl Fn(&Value) -> bool) -> Option<(&'static str, Value)> {
    let now = wanted(&change.object);
    match change.change_type {
        ChangeType::Added | ChangeType::Deleted => now.then(|| (change.change_type.as_str(), (*change.object).clone())),
        ChangeType::Modified => {
            // A modification logged without its previous state counts as selected before if selected now.
            let before = change.previous.as_deref().map_or(now, &wanted);
            match (before, now) {
                (true, true) => Some(("MODIFIED", (*change.object).clone())),
                (false, true) => Some(("ADDED", (*change.object).clone())),
                (true, false) => {
                    let mut last = change.previous.as_deref().cloned().unwrap_or_default();
                    kapsel_api::object::set_meta(&mut last, "resourceVersion", change.revision.to_string());
                    Some(("DELETED", last))
                }
                (false, false) => None,
            }
        }
    }
}

/// Encodes events as JSON lines, as objects or as one-row `Table`s.
struct Encoder {
    resource: &'static kapsel_api::ResourceType,
    as_table: bool,
    include_object: Option<String>,
    first: bool,
}

impl Encoder {
    fn event(&mut self, kind: &str, object: Value) -> Bytes {
        let object = if self.as_table {
            let revision = kapsel_api::object::resource_version(&object).and_then(Result::ok);
            let rendered = table::table(self.resource, &[object], revision, self.include_object.as_deref(), self.first);
            self.first = false;
            rendered
        } else {
            object
        };
        line(json!({"type": kind, "object": object}))
    }
}

fn line(value: Value) -> Bytes {
    let mut bytes = serde_json::to_vec(&value).expect("JSON values serialize");
    bytes.push(b'\n');
    Bytes::from(bytes)
}
