//! Kapsel's object store: one revisioned key space of JSON objects.
//!
//! Every write gets the next value of a global revision (an object's
//! `resourceVersion`) and is appended to a change log that watches resume
//! from. Writes go through one writer task that commits whatever is queued
//! in a single transaction (group commit: one fsync for many requests), and
//! a write is acknowledged only after its transaction commits. The change
//! log is compacted so that churn does not grow the database without bound.
//!
//! Backends: SQLite (WAL, the embedded default) and PostgreSQL, through
//! sqlx with the same SQL and versioned migrations per backend
//! ([`sql::SqlBackend`]); a batch's ops and its change-log rows are applied
//! by [`batch::Batch`]. On SQLite, where this process is the only writer,
//! reads — the writer's own checks included — are served from an in-memory
//! copy kept exact by the writer ([`cache::ObjectCache`]). The store knows nothing of kinds: a key
//! is (resource, namespace, name), with the resource an opaque string.
//! Beside the objects it keeps content-addressed blobs (plug-in components,
//! workload images), which are not revisioned or watched, are written off
//! the group commit, and are removed by [`Store::collect_blobs`] once
//! nothing references them ([`blobs`]).

mod batch;
pub mod blobs;
mod cache;
mod sql;
mod watch;
mod writer;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::broadcast;

pub use watch::WatchStream;

/// Where an object lives: its kind's store key, namespace (`""` for
/// cluster-scoped kinds) and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub resource: String,
    pub namespace: String,
    pub name: String,
}

impl Key {
    pub fn new(resource: impl Into<String>, namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Key { resource: resource.into(), namespace: namespace.into(), name: name.into() }
    }
}

/// What a change did to its object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeType {
    Added,
    Modified,
    Deleted,
}

impl ChangeType {
    /// The watch event type: `ADDED`, `MODIFIED` or `DELETED`.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeType::Added => "ADDED",
            ChangeType::Modified => "MODIFIED",
            ChangeType::Deleted => "DELETED",
        }
    }

    fn parse(text: &str) -> Result<Self, StoreError> {
        match text {
            "ADDED" => Ok(ChangeType::Added),
            "MODIFIED" => Ok(ChangeType::Modified),
            "DELETED" => Ok(ChangeType::Deleted),
            other => Err(StoreError::Corrupt(format!("unknown change type {other:?}"))),
        }
    }
}

/// One committed change: the object after it (before it, for a delete,
/// with `resourceVersion` set to the deleting revision).
#[derive(Debug, Clone)]
pub struct Change {
    pub revision: i64,
    pub change_type: ChangeType,
    pub key: Key,
    pub object: Arc<Value>,
    /// For [`ChangeType::Modified`]: the object before the change, so a
    /// filtered watch can tell an object entering or leaving its selection.
    pub previous: Option<Arc<Value>>,
}

/// The current objects of a list and the revision they are consistent at.
#[derive(Debug, Clone)]
pub struct Listing {
    pub revision: i64,
    pub objects: Vec<Value>,
}

/// A write, applied atomically.
#[derive(Debug, Clone)]
pub enum WriteOp {
    /// Create `object` under `key`; fails with [`StoreError::AlreadyExists`].
    Create { key: Key, object: Value },
    /// Replace the object under `key`; with `expected_revision`, only if it is still at that revision.
    Update { key: Key, object: Value, expected_revision: Option<i64> },
    /// Delete the object under `key`; with `expected_revision`, only if it is still at that revision.
    Delete { key: Key, expected_revision: Option<i64> },
    /// Delete the object under `key` (a namespace) and every object whose
    /// namespace is its name; with `expected_revision`, only if the namespace
    /// is still at that revision.
    DeleteNamespace { key: Key, expected_revision: Option<i64> },
    /// Replace the object under `key` with what `adjust` makes of it as
    /// stored at that moment, inside the write's transaction: the read and
    /// the write see no other write between them, so adjustments queued by
    /// concurrent requests apply one after the other (a quota's usage,
    /// charged and checked by many creates at once). `adjust` refusing fails
    /// the op with [`StoreError::Refused`]; returning the object unchanged
    /// writes nothing.
    Adjust { key: Key, adjust: Adjustment },
    /// Every op or none: applied in order at consecutive revisions; when one
    /// fails, those before it are undone and the write fails with
    /// [`StoreError::AtomicOpFailed`] naming it (a quota's usage and the
    /// object it is charged for commit together).
    Atomic(Vec<WriteOp>),
}

/// The function of a [`WriteOp::Adjust`]: the stored object in, the object
/// to store (or why not) out. It runs inside the writer's transaction, so
/// it must be quick and must not wait on anything.
#[derive(Clone)]
pub struct Adjustment(pub Arc<AdjustFn>);

/// The object as stored → the object to store, or why it may not be.
pub type AdjustFn = dyn Fn(&Value) -> Result<Value, String> + Send + Sync;

impl std::fmt::Debug for Adjustment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Adjustment(..)")
    }
}

/// Why a store operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("already exists")]
    AlreadyExists,
    #[error("the object has been modified: it is at revision {current}")]
    Conflict { current: i64 },
    #[error("revision {requested} has been compacted; the oldest available is {oldest}")]
    Compacted { requested: i64, oldest: i64 },
    #[error("datastore error")]
    Backend(#[source] Arc<sqlx::Error>),
    /// The database's disk (or PostgreSQL's) has no space left: nothing was
    /// written; reads go on, and writes succeed again once space is freed.
    #[error("the datastore has no space left")]
    DiskFull(#[source] Arc<sqlx::Error>),
    #[error("datastore schema")]
    Schema(#[source] Arc<sqlx::migrate::MigrateError>),
    #[error("corrupt data in the datastore: {0}")]
    Corrupt(String),
    #[error("unsupported datastore URL {0:?}: use sqlite://PATH or postgres://…")]
    UnsupportedUrl(String),
    #[error("the store is shut down")]
    Closed,
    /// The function of a [`WriteOp::Adjust`] refused the object, saying why.
    #[error("refused: {0}")]
    Refused(String),
    /// Op `index` of a [`WriteOp::Atomic`] failed with `error`; nothing of it was applied.
    #[error("write {index} of an atomic write failed: {error}")]
    AtomicOpFailed { index: usize, error: Box<StoreError> },
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if disk_full(&e) { StoreError::DiskFull(Arc::new(e)) } else { StoreError::Backend(Arc::new(e)) }
    }
}

/// Whether `error` says the disk is full: SQLite's `SQLITE_FULL` (13) or a
/// write that failed for want of space, PostgreSQL's `disk_full` (53100),
/// or the operating system's `ENOSPC`.
fn disk_full(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(database) => {
            let code = database.code();
            let code = code.as_deref().unwrap_or_default();
            // SQLite reports extended codes; the primary code is the low byte.
            let sqlite_primary = code.parse::<i32>().ok().map(|c| c & 0xff);
            sqlite_primary == Some(13) || code == "53100" || database.message().contains("database or disk is full")
        }
        sqlx::Error::Io(io) => io.kind() == std::io::ErrorKind::StorageFull,
        _ => false,
    }
}

/// Tuning of a [`Store`]; the defaults suit one supervisor.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Most writes committed in one transaction.
    pub max_batch: usize,
    /// Connections for reads (SQLite) or for everything (PostgreSQL).
    pub read_connections: u32,
    /// How many of the newest changes compaction keeps for watches to resume from.
    pub retained_changes: i64,
    /// How often compaction runs; `None` disables the background compactor.
    pub compaction_interval: Option<Duration>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions { max_batch: 512, read_connections: 16, retained_changes: 10_000, compaction_interval: Some(Duration::from_secs(60)) }
    }
}

/// The object store facade; cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    backend: Arc<sql::SqlBackend>,
    blobs: Arc<blobs::BlobStore>,
    /// Turns at writing the database (SQLite): the writer's, blobs', compaction's.
    turns: blobs::WriteTurns,
    cache: Option<Arc<cache::ObjectCache>>,
    writer: writer::WriterHandle,
    /// Committed changes, shared by every watcher (each takes what it watches).
    changes: broadcast::Sender<Arc<Change>>,
    options: Arc<StoreOptions>,
}

impl Store {
    /// Opens (creating and migrating if needed) the store at `url`:
    /// `sqlite://PATH` or `postgres://…`. Refuses a database whose schema
    /// holds migrations this build does not know.
    pub async fn open(url: &str, options: StoreOptions) -> Result<Store, StoreError> {
        let backend = Arc::new(sql::SqlBackend::connect(url, &options).await?);
        let (changes, _) = broadcast::channel(8192);
        let cache = if backend.single_writer() {
            let (revision, objects) = backend.load_all().await?;
            Some(Arc::new(cache::ObjectCache::new(revision, objects)))
        } else {
            None
        };
        let turns = blobs::WriteTurns::new(backend.single_writer());
        let blobs = Arc::new(blobs::BlobStore::connect(url, backend.single_writer(), turns.clone()).await?);
        let writer = writer::spawn(backend.clone(), cache.clone(), changes.clone(), options.max_batch, turns.clone());
        let store = Store { backend, blobs, turns, cache, writer, changes, options: Arc::new(options) };
        if let Some(interval) = store.options.compaction_interval {
            let compactor = store.clone();
            tokio::spawn(async move {
                let mut ticker = tokio::time::interval(interval);
                ticker.tick().await;
                loop {
                    ticker.tick().await;
                    match compactor.compact().await {
                        Ok(0) => {}
                        Ok(removed) => tracing::debug!(removed, "compacted the change log"),
                        Err(StoreError::Closed) => break,
                        Err(error) => tracing::warn!(error = &error as &dyn std::error::Error, "compaction failed"),
                    }
                }
            });
        }
        Ok(store)
    }

    /// Which backend this store runs on: `sqlite` or `postgres`.
    pub fn backend_name(&self) -> &'static str {
        self.backend.name()
    }

    /// Applies one write and returns what it changed (the namespace first,
    /// then its contents, for [`WriteOp::DeleteNamespace`]).
    pub async fn write(&self, op: WriteOp) -> Result<Vec<Change>, StoreError> {
        self.writer.submit(op).await
    }

    /// Creates `object` under `key`; returns it as stored (with its `resourceVersion`).
    pub async fn create(&self, key: Key, object: Value) -> Result<Change, StoreError> {
        first(self.write(WriteOp::Create { key, object }).await?)
    }

    /// Replaces the object under `key`, optionally only if it is at `expected_revision`.
    pub async fn update(&self, key: Key, object: Value, expected_revision: Option<i64>) -> Result<Change, StoreError> {
        first(self.write(WriteOp::Update { key, object, expected_revision }).await?)
    }

    /// Deletes the object under `key`, optionally only if it is at `expected_revision`.
    pub async fn delete(&self, key: Key, expected_revision: Option<i64>) -> Result<Change, StoreError> {
        first(self.write(WriteOp::Delete { key, expected_revision }).await?)
    }

    /// The object under `key`.
    pub async fn get(&self, key: &Key) -> Result<Value, StoreError> {
        match &self.cache {
            Some(cache) => cache.get(key).ok_or(StoreError::NotFound),
            None => self.backend.get(key).await?.ok_or(StoreError::NotFound),
        }
    }

    /// Every object of `resource` (in `namespace`, or in all), at one revision.
    pub async fn list(&self, resource: &str, namespace: Option<&str>) -> Result<Listing, StoreError> {
        match &self.cache {
            Some(cache) => Ok(cache.list(resource, namespace)),
            None => self.backend.list(resource, namespace).await,
        }
    }

    /// One page of [`Store::list`]: at most `limit` objects of `resource`
    /// (in `namespace`, or in all) whose (namespace, name) comes after
    /// `after`, in that order. Pages are each consistent at their revision,
    /// not with each other: a client that pages, then watches from the first
    /// page's revision, sees every change since.
    pub async fn list_page(
        &self,
        resource: &str,
        namespace: Option<&str>,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> Result<Listing, StoreError> {
        match &self.cache {
            Some(cache) => Ok(cache.list_page(resource, namespace, after, limit)),
            None => self.backend.list_page(resource, namespace, after, limit).await,
        }
    }

    /// The latest revision and the compaction horizon.
    pub async fn revisions(&self) -> Result<(i64, i64), StoreError> {
        self.backend.revisions().await
    }

    /// Changes to `resource` (in `namespace`, or all) after revision `after`,
    /// then live changes as they commit. Fails with [`StoreError::Compacted`]
    /// when `after` is older than the compaction horizon.
    pub async fn watch(&self, resource: &str, namespace: Option<&str>, after: i64) -> Result<WatchStream, StoreError> {
        watch::start(self.backend.clone(), &self.changes, resource, namespace, after).await
    }

    /// Stores a content-addressed blob (`digest` is the caller's `sha256:<hex>`
    /// of `data`) off the group commit; returns whether it was new. Either
    /// way the blob counts as stored now, so [`Store::collect_blobs`] spares
    /// it for its grace period: store the blob, then write what references it.
    pub async fn put_blob(&self, digest: &str, data: &[u8]) -> Result<bool, StoreError> {
        self.blobs.put(digest, data).await
    }

    /// The blob stored under `digest`.
    pub async fn get_blob(&self, digest: &str) -> Result<Vec<u8>, StoreError> {
        self.blobs.get(digest).await?.ok_or(StoreError::NotFound)
    }

    /// Removes the blobs not in `referenced` that were last stored more than
    /// `grace` ago (a blob stored since is kept, even one the caller did not
    /// know of); returns the digests removed. The grace must outlast the
    /// time between a put and the write that references the blob.
    pub async fn collect_blobs(&self, referenced: &HashSet<String>, grace: Duration) -> Result<Vec<String>, StoreError> {
        self.blobs.collect(referenced, grace).await
    }

    /// Drops changes older than the newest `retained_changes`; returns how many went.
    pub async fn compact(&self) -> Result<u64, StoreError> {
        let (current, compacted) = self.backend.revisions().await?;
        let horizon = current - self.options.retained_changes;
        if horizon <= compacted {
            return Ok(0);
        }
        let _turn = self.turns.take().await;
        self.backend.compact(horizon).await
    }

    /// Drops every change at or below `revision` now (tests and admin tools).
    pub async fn compact_to(&self, revision: i64) -> Result<u64, StoreError> {
        let _turn = self.turns.take().await;
        self.backend.compact(revision).await
    }
}

fn first(changes: Vec<Change>) -> Result<Change, StoreError> {
    changes.into_iter().next().ok_or_else(|| StoreError::Corrupt("a write reported no change".into()))
}
