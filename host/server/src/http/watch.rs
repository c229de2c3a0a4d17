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
//! [`crate::watches::WatchLimits`]' number of watches open at once: one
//! more is answered 429 `TooManyRequests` with `Retry-After`. What a
//! watch sees is [`objects::watch`]'s; this module streams it.

use std::time::Duration;

use axum::body::Body;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::App;
use crate::error::ApiError;
use crate::http::request::Params;
use crate::http::table;
use crate::objects::{self, Target, WatchEvent, WatchFrom};
use crate::operation::Context;

/// Serves a watch request: opens the watch ([`objects::watch`]) and streams its events.
pub async fn serve(app: &App, ctx: &Context, target: &Target, params: &Params, headers: &HeaderMap) -> Result<Response, ApiError> {
    let resource = target.resource;
    let selection = params.selection(resource)?;
    // `sendInitialEvents=true` (client-go's watch-list) asks for the current objects first, whatever the revision.
    let from = match params.get("resourceVersion") {
        _ if params.flag("sendInitialEvents") => WatchFrom::Now { bookmark: true },
        None | Some("0") => WatchFrom::Now { bookmark: false },
        Some(text) => WatchFrom::After(text.parse::<i64>().map_err(|_| ApiError::BadRequest(format!("invalid resourceVersion {text:?}")))?),
    };
    let timeout = params.u64("timeoutSeconds")?.map(Duration::from_secs).unwrap_or(Duration::from_secs(30 * 60));
    let mut watch = objects::watch(app, ctx, target, selection, from).await?;
    let mut encoder = Encoder {
        resource,
        as_table: table::wanted(headers),
        include_object: params.get("includeObject").map(str::to_string),
        first: true,
    };
    let mut stopping = app.stopping.clone();
    let (sender, receiver) = mpsc::channel::<Result<Bytes, std::convert::Infallible>>(64);
    tokio::spawn(async move {
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        loop {
            let event = tokio::select! {
                _ = sender.closed() => return,
                _ = stopping.wait_for(|stop| *stop) => return,
                _ = &mut deadline => return,
                event = watch.next() => event,
            };
            let line = match event {
                None => return,
                Some(WatchEvent::Object(kind, object)) => encoder.event(kind, object),
                Some(WatchEvent::InitialEventsEnd(revision)) => {
                    // The bookmark that tells a watch-list client its initial state is complete.
                    let bookmark = json!({
                        "kind": resource.kind,
                        "apiVersion": resource.api_version(),
                        "metadata": {"resourceVersion": revision.to_string(), "annotations": {"k8s.io/initial-events-end": "true"}},
                    });
                    line(json!({"type": "BOOKMARK", "object": bookmark}))
                }
                Some(WatchEvent::Error(error)) => {
                    let _ = sender.send(Ok(line(json!({"type": "ERROR", "object": error.status()})))).await;
                    return;
                }
            };
            if sender.send(Ok(line)).await.is_err() {
                return;
            }
        }
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(receiver));
    Ok(([(http::header::CONTENT_TYPE, "application/json"), (http::header::CACHE_CONTROL, "no-cache")], body).into_response())
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
