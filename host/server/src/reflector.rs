//! The reflector: an in-memory copy of one stored kind kept current from
//! the store's change stream, as Kubernetes' informers keep theirs. It lists
//! the kind, then watches from the listing's revision; when the watch falls
//! behind the change log (`Compacted`) it lists again and replaces the copy
//! whole; after any other error it watches again from the last change it
//! applied, backing off up to [`MAX_BACKOFF`]. So every write committed
//! through the store — by a request handler, a controller, a template, a
//! tool holding the `Store` — reaches the copy, and no error makes it stop
//! following. (The store's change stream is this process's own; writes by
//! another supervisor on the same PostgreSQL reach it once the stream
//! follows the database.)
//!
//! The revision it has applied is published ([`Reflection::caught_up`]):
//! a request handler that has just committed a change of the kind waits
//! for the copy to hold it before answering, so the client's next request
//! meets it (a token works, a revoked one is refused, a policy is in force).

use std::time::Duration;

use futures::StreamExt;
use kapsel_api::registry::ResourceType;
use kapsel_store::{Change, Store, StoreError};
use serde_json::Value;
use tokio::sync::watch;

/// The longest wait between two attempts to watch again after an error.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// The first wait after an error.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// How long a handler waits for the copy to hold its own write before answering anyway.
pub const CATCH_UP: Duration = Duration::from_secs(5);

/// An in-memory copy of one kind.
pub trait Reflected: Send + Sync + 'static {
    /// Replaces the copy with `objects`: every object of the kind, as listed.
    fn replace(&self, objects: Vec<Value>);
    /// Takes in one committed change (changes come in commit order).
    fn apply(&self, change: &Change);
}

/// The revision a reflector's copy holds, for those who wait on it.
#[derive(Debug, Clone)]
pub struct Reflection {
    kind: &'static str,
    applied: watch::Receiver<i64>,
}

impl Reflection {
    /// Waits until the copy holds every change up to `revision` (at most
    /// [`CATCH_UP`]); false if it did not get there in time.
    pub async fn caught_up(&self, revision: i64) -> bool {
        let mut applied = self.applied.clone();
        match tokio::time::timeout(CATCH_UP, applied.wait_for(|at| *at >= revision)).await {
            Ok(Ok(_)) => true,
            Ok(Err(_)) | Err(_) => {
                tracing::warn!(kind = self.kind, revision, "the in-memory copy did not catch up with a write in time");
                false
            }
        }
    }

    /// A reflection that already holds every revision, for a copy filled by hand (tests).
    pub fn complete(kind: &'static str) -> Reflection {
        let (_, applied) = watch::channel(i64::MAX);
        Reflection { kind, applied }
    }
}

/// Lists `resource` into `copy` (before returning, so the copy is whole when
/// the server starts serving), then follows the store in the background.
pub async fn start(store: &Store, resource: &'static ResourceType, copy: impl Reflected) -> Result<Reflection, StoreError> {
    let revision = relist(store, resource, &copy).await?;
    let (applied, reflection) = watch::channel(revision);
    tokio::spawn(follow(store.clone(), resource, copy, revision, applied));
    Ok(Reflection { kind: resource.kind, applied: reflection })
}

async fn relist(store: &Store, resource: &ResourceType, copy: &impl Reflected) -> Result<i64, StoreError> {
    let listing = store.list(&resource.store_key(), None).await?;
    copy.replace(listing.objects);
    Ok(listing.revision)
}

/// Follows the changes after `revision` for as long as anyone may wait on the copy.
async fn follow(store: Store, resource: &'static ResourceType, copy: impl Reflected, mut revision: i64, applied: watch::Sender<i64>) {
    let key = resource.store_key();
    let mut backoff = MIN_BACKOFF;
    loop {
        let failure = match store.watch(&key, None, revision).await {
            Ok(mut changes) => loop {
                match changes.next().await {
                    Some(Ok(change)) => {
                        copy.apply(&change);
                        revision = change.revision;
                        applied.send_replace(revision);
                        backoff = MIN_BACKOFF;
                    }
                    Some(Err(error)) => break error,
                    None => break StoreError::Closed,
                }
            },
            Err(error) => error,
        };
        if applied.is_closed() || matches!(failure, StoreError::Closed) {
            // Nobody holds the copy any more, or the store shut down.
            return;
        }
        if matches!(failure, StoreError::Compacted { .. }) {
            // Fell behind the change log: what was missed is only in a new listing.
            match relist(&store, resource, &copy).await {
                Ok(listed) => {
                    tracing::info!(kind = resource.kind, revision = listed, "fell behind the change log; listed again");
                    revision = listed;
                    applied.send_replace(revision);
                    continue;
                }
                Err(error) => tracing::warn!(kind = resource.kind, %error, "listing again failed; retrying"),
            }
        } else {
            tracing::warn!(kind = resource.kind, error = %failure, "the watch ended; watching again");
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}
