//! Following a collection of the supervisor's objects, as client-go's
//! informers do: list, then watch from the list's revision, and list again
//! whenever the watch ends or fails (after a second), until the agent stops.
//! What the collection holds reaches the caller as [`Seen`] changes.

use std::time::Duration;

use anyhow::bail;
use futures::StreamExt as _;
use kapsel_client::Client;
use serde_json::Value;

/// A change to the followed collection.
#[derive(Debug)]
pub enum Seen {
    /// Everything there is now (at the start, and after every re-list).
    Listed(Vec<Value>),
    /// An object was added or changed.
    Changed(Value),
    /// An object was deleted (its last state).
    Deleted(Value),
}

/// How long to wait before listing again after a failure.
const RETRY: Duration = Duration::from_secs(1);

/// Follows `collection` (a path with its query, without `watch`), handing
/// every change to `apply`, until `stopping` is set. `what` names the
/// collection in the log.
pub async fn follow(
    client: &Client,
    collection: &str,
    what: &str,
    mut stopping: tokio::sync::watch::Receiver<bool>,
    mut apply: impl FnMut(Seen),
) {
    let separator = if collection.contains('?') { '&' } else { '?' };
    loop {
        let followed = async {
            let list = client.get(collection).await?;
            apply(Seen::Listed(list.get("items").and_then(Value::as_array).cloned().unwrap_or_default()));
            let revision = list.pointer("/metadata/resourceVersion").and_then(Value::as_str).unwrap_or("0").to_string();
            let watch = format!("{collection}{separator}watch=true&resourceVersion={revision}&timeoutSeconds=300");
            let mut events = std::pin::pin!(client.watch(&watch).await?);
            while let Some(event) = events.next().await {
                let event = event?;
                let object = event.get("object").cloned().unwrap_or_default();
                match event.get("type").and_then(Value::as_str) {
                    Some("DELETED") => apply(Seen::Deleted(object)),
                    Some("ADDED" | "MODIFIED") => apply(Seen::Changed(object)),
                    Some("ERROR") => bail!("the watch failed: {}", object.get("message").and_then(Value::as_str).unwrap_or_default()),
                    _ => {}
                }
            }
            anyhow::Ok(())
        };
        let outcome = tokio::select! {
            _ = stopping.wait_for(|stop| *stop) => return,
            outcome = followed => outcome,
        };
        if let Err(error) = outcome {
            tracing::warn!(what, error = format!("{error:#}"), "following failed; listing again");
            tokio::select! {
                _ = stopping.wait_for(|stop| *stop) => return,
                _ = tokio::time::sleep(RETRY) => {}
            }
        }
    }
}
