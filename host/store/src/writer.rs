//! The single writer: queues writes and commits whatever is queued in one
//! transaction (group commit), then updates the object cache, publishes the
//! changes to watchers and answers each request. On SQLite each batch
//! takes a turn at the database ([`WriteTurns`]) beside blob writes, so it
//! waits behind one blob chunk at most. Ordering: changes are published in revision order,
//! after their commit.

use std::sync::Arc;

use tokio::sync::{broadcast, mpsc, oneshot};

use crate::blobs::WriteTurns;
use crate::cache::ObjectCache;
use crate::sql::SqlBackend;
use crate::{Change, StoreError, WriteOp};

struct Request {
    op: WriteOp,
    reply: oneshot::Sender<Result<Vec<Change>, StoreError>>,
}

/// Sends writes to the writer task.
#[derive(Debug, Clone)]
pub(crate) struct WriterHandle {
    queue: mpsc::Sender<Request>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request").field("op", &self.op).finish_non_exhaustive()
    }
}

impl WriterHandle {
    pub(crate) async fn submit(&self, op: WriteOp) -> Result<Vec<Change>, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.queue.send(Request { op, reply }).await.map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }
}

pub(crate) fn spawn(
    backend: Arc<SqlBackend>,
    cache: Option<Arc<ObjectCache>>,
    changes: broadcast::Sender<Arc<Change>>,
    max_batch: usize,
    turns: WriteTurns,
) -> WriterHandle {
    let (queue, mut requests) = mpsc::channel::<Request>(max_batch * 4);
    tokio::spawn(async move {
        let mut batch = Vec::with_capacity(max_batch);
        while requests.recv_many(&mut batch, max_batch).await > 0 {
            let (ops, replies): (Vec<_>, Vec<_>) = batch.drain(..).map(|r| (r.op, r.reply)).unzip();
            let applied = {
                let _turn = turns.take().await;
                backend.apply(ops, cache.as_deref()).await
            };
            match applied {
                Ok(results) => {
                    // The cache first, so whoever hears of a write can read it back.
                    if let Some(cache) = &cache {
                        for committed in results.iter().flatten() {
                            cache.apply(committed);
                        }
                    }
                    for (result, reply) in results.into_iter().zip(replies) {
                        if let Ok(committed) = &result {
                            for change in committed {
                                // No receivers is fine: nobody is watching.
                                let _ = changes.send(Arc::new(change.clone()));
                            }
                        }
                        let _ = reply.send(result);
                    }
                }
                Err(error) => {
                    tracing::error!(error = &error as &dyn std::error::Error, "a write batch failed; nothing in it was committed");
                    for reply in replies {
                        let _ = reply.send(Err(error.clone()));
                    }
                }
            }
        }
    });
    WriterHandle { queue }
}
