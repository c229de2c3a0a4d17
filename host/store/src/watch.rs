//! Watches: the changes after a revision, read from the change log, then
//! live changes from the writer's broadcast, without gaps or repeats. A
//! watcher that falls behind the broadcast catches up from the log; one
//! that falls behind the compaction horizon gets [`StoreError::Compacted`].

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::Stream;
use tokio::sync::{broadcast, mpsc};

use crate::sql::SqlBackend;
use crate::{Change, StoreError};

/// Most changes read from the log in one query while catching up.
const CATCH_UP_PAGE: i64 = 1000;

/// A stream of changes in revision order; ends with an error if the watcher
/// can no longer be served (compacted past, store closed).
#[derive(Debug)]
pub struct WatchStream {
    events: mpsc::Receiver<Result<Change, StoreError>>,
}

impl Stream for WatchStream {
    type Item = Result<Change, StoreError>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.events.poll_recv(cx)
    }
}

struct Filter {
    resource: String,
    namespace: Option<String>,
}

impl Filter {
    fn accepts(&self, change: &Change) -> bool {
        change.key.resource == self.resource && self.namespace.as_ref().is_none_or(|ns| *ns == change.key.namespace)
    }
}

pub(crate) async fn start(
    backend: Arc<SqlBackend>,
    changes: &broadcast::Sender<Arc<Change>>,
    resource: &str,
    namespace: Option<&str>,
    after: i64,
) -> Result<WatchStream, StoreError> {
    // Subscribe before reading the log so nothing committed in between is missed.
    let live = changes.subscribe();
    let (_, compacted) = backend.revisions().await?;
    if after < compacted {
        return Err(StoreError::Compacted { requested: after, oldest: compacted });
    }
    let filter = Filter { resource: resource.to_string(), namespace: namespace.map(str::to_string) };
    let (sender, events) = mpsc::channel(256);
    tokio::spawn(run(backend, live, filter, after, sender));
    Ok(WatchStream { events })
}

async fn run(
    backend: Arc<SqlBackend>,
    mut live: broadcast::Receiver<Arc<Change>>,
    filter: Filter,
    mut last_sent: i64,
    sender: mpsc::Sender<Result<Change, StoreError>>,
) {
    if catch_up(&backend, &filter, &mut last_sent, &sender).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            _ = sender.closed() => return,
            received = live.recv() => match received {
                Ok(change) => {
                    if change.revision <= last_sent || !filter.accepts(&change) {
                        continue;
                    }
                    last_sent = change.revision;
                    if sender.send(Ok(Change::clone(&change))).await.is_err() {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::debug!(resource = %filter.resource, missed, "a watch fell behind the live changes; catching up from the log");
                    if catch_up(&backend, &filter, &mut last_sent, &sender).await.is_err() {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Closed) => {
                    let _ = sender.send(Err(StoreError::Closed)).await;
                    return;
                }
            }
        }
    }
}

/// Sends every logged change after `last_sent`; `Err` means stop watching.
async fn catch_up(
    backend: &SqlBackend,
    filter: &Filter,
    last_sent: &mut i64,
    sender: &mpsc::Sender<Result<Change, StoreError>>,
) -> Result<(), ()> {
    loop {
        let page = match backend.changes_since(&filter.resource, filter.namespace.as_deref(), *last_sent, CATCH_UP_PAGE).await {
            Ok(page) => page,
            Err(error) => {
                let _ = sender.send(Err(error)).await;
                return Err(());
            }
        };
        // Once compaction has passed `last_sent`, changes this watcher needs may be gone.
        match backend.revisions().await {
            Ok((_, compacted)) if compacted > *last_sent => {
                let _ = sender.send(Err(StoreError::Compacted { requested: *last_sent, oldest: compacted })).await;
                return Err(());
            }
            Ok(_) => {}
            Err(error) => {
                let _ = sender.send(Err(error)).await;
                return Err(());
            }
        }
        let full = page.len() as i64 == CATCH_UP_PAGE;
        for change in page {
            *last_sent = change.revision;
            if sender.send(Ok(change)).await.is_err() {
                return Err(());
            }
        }
        if !full {
            return Ok(());
        }
    }
}
