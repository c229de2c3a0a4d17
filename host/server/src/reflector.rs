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
//! [`follow`] is that list-then-watch as a stream of [`Event`]s, for a
//! follower that keeps its copy itself: the scheduler follows nodes and
//! pods with it.
//!
//! The revision it has applied is published ([`Reflection::caught_up`]):
//! a request handler that has just committed a change of the kind waits
//! for the copy to hold it before answering, so the client's next request
//! meets it (a token works, a revoked one is refused, a policy is in force).

use std::time::Duration;

use futures::{Stream, StreamExt};
use kapsel_api::registry::ResourceType;
use kapsel_store::{Change, Store, StoreError, WatchStream};
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
    let listing = store.list(&resource.store_key(), None).await?;
    let revision = listing.revision;
    copy.replace(listing.objects);
    let (applied, reflection) = watch::channel(revision);
    let mut events = follow(store.clone(), resource, Some(revision));
    tokio::spawn(async move {
        loop {
            let event = tokio::select! {
                event = events.next() => event,
                // Nobody holds the copy any more.
                () = applied.closed() => return,
            };
            match event {
                Some(Event::Listed { objects, revision }) => {
                    copy.replace(objects);
                    applied.send_replace(revision);
                }
                Some(Event::Changed(change)) => {
                    copy.apply(&change);
                    applied.send_replace(change.revision);
                }
                // The store shut down.
                None => return,
            }
        }
    });
    Ok(Reflection { kind: resource.kind, applied: reflection })
}

/// What following a kind brings, in commit order.
#[derive(Debug)]
pub enum Event {
    /// Every object of the kind, as of `revision`: first (unless following
    /// started after a listing of the caller's), and again whenever the
    /// changes in between are no longer in the change log. Replaces what
    /// the follower held.
    Listed { objects: Vec<Value>, revision: i64 },
    /// One committed change after the last event.
    Changed(Change),
}

/// Follows `resource` in `store`: a listing first (or, given `after`, the
/// changes after that revision), then every committed change. A watch
/// that falls behind the change log (`Compacted`) is answered by a new
/// listing; after any other error it watches again from the last change,
/// backing off up to [`MAX_BACKOFF`]. The stream ends only when the store shuts down.
pub fn follow(store: Store, resource: &'static ResourceType, after: Option<i64>) -> impl Stream<Item = Event> + Send + Unpin + 'static {
    let state = Following { store, resource, revision: after, changes: None, backoff: MIN_BACKOFF };
    Box::pin(futures::stream::unfold(state, |mut state| async move {
        let event = state.next().await?;
        Some((event, state))
    }))
}

/// Where a [`follow`] is.
struct Following {
    store: Store,
    resource: &'static ResourceType,
    /// The revision of the last event; `None` when a listing is due.
    revision: Option<i64>,
    changes: Option<WatchStream>,
    backoff: Duration,
}

impl Following {
    async fn next(&mut self) -> Option<Event> {
        let key = self.resource.store_key();
        loop {
            let Some(revision) = self.revision else {
                match self.store.list(&key, None).await {
                    Ok(listing) => {
                        self.revision = Some(listing.revision);
                        self.backoff = MIN_BACKOFF;
                        return Some(Event::Listed { objects: listing.objects, revision: listing.revision });
                    }
                    Err(StoreError::Closed) => return None,
                    Err(error) => {
                        tracing::warn!(kind = self.resource.kind, %error, "listing failed; retrying");
                        self.back_off().await;
                        continue;
                    }
                }
            };
            let changes = match &mut self.changes {
                Some(changes) => changes,
                None => match self.store.watch(&key, None, revision).await {
                    Ok(changes) => self.changes.insert(changes),
                    Err(failure) => {
                        self.failed(failure).await?;
                        continue;
                    }
                },
            };
            match changes.next().await {
                Some(Ok(change)) => {
                    self.revision = Some(change.revision);
                    self.backoff = MIN_BACKOFF;
                    return Some(Event::Changed(change));
                }
                Some(Err(failure)) => {
                    self.changes = None;
                    self.failed(failure).await?;
                }
                None => {
                    self.changes = None;
                    self.failed(StoreError::Closed).await?;
                }
            }
        }
    }

    /// Decides what follows a failed watch: a listing (fell behind the
    /// change log), another watch after a back-off, or the end (`None`: the store shut down).
    async fn failed(&mut self, failure: StoreError) -> Option<()> {
        match failure {
            StoreError::Closed => None,
            StoreError::Compacted { .. } => {
                tracing::info!(kind = self.resource.kind, "fell behind the change log; listing again");
                self.revision = None;
                Some(())
            }
            other => {
                tracing::warn!(kind = self.resource.kind, error = %other, "the watch ended; watching again");
                self.back_off().await;
                Some(())
            }
        }
    }

    async fn back_off(&mut self) {
        tokio::time::sleep(self.backoff).await;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }
}
