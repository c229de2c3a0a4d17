//! Content-addressed blobs (plug-in components, workload images), kept
//! beside the objects but off the writer's group commit.
//!
//! A blob is written on connections of its own, never inside a batch: a
//! small one (at most [`CHUNK_BYTES`]) as its row, a bigger one in chunks
//! of [`CHUNK_BYTES`], each its own short transaction, then its row (which
//! says how many chunks it has). On SQLite, where one write transaction at
//! a time holds the database, each chunk takes the writer's turn
//! ([`WriteTurns`], fair and in order), so a batch of lease renewals waits
//! behind one chunk at most, never behind a 64 MiB insert; on PostgreSQL
//! the blob's rows lock nothing the batch touches. Writing is idempotent
//! (equal digests are equal bytes), so a retried or concurrent put of the
//! same digest is harmless.
//!
//! Every put stamps the row's `stored_at` (even when the blob was there),
//! and [`BlobStore::collect`] removes only blobs stamped before a grace
//! period, checking the stamp again in the deleting transaction: a blob a
//! write is about to reference (put, then the object written) is never
//! taken from under it. Chunks left by a put that died before its row are
//! collected after the same grace.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::any::AnyConnectOptions;
use sqlx::{AnyPool, Connection, Row};

use crate::StoreError;

/// The size of a blob's chunks: the longest a blob write holds SQLite's
/// write lock is one chunk's insert.
pub const CHUNK_BYTES: usize = 1 << 20;

/// Connections for blob reads and writes.
const CONNECTIONS: u32 = 4;

/// How many times a put starts again when its blob is collected between
/// two of its steps (only a collection with no grace period can do that).
const PUT_ATTEMPTS: usize = 3;

/// Turns at writing the database, on SQLite (one write transaction at a
/// time): the writer's batches, blob chunks and compaction take them in the
/// order they ask (a fair lock), so none waits on SQLite's busy back-off or
/// behind more than one turn of the others. On PostgreSQL there are none.
#[derive(Debug, Clone, Default)]
pub(crate) struct WriteTurns(Option<Arc<tokio::sync::Mutex<()>>>);

impl WriteTurns {
    pub(crate) fn new(single_writer: bool) -> Self {
        WriteTurns(single_writer.then(|| Arc::new(tokio::sync::Mutex::new(()))))
    }

    /// Waits for a turn; it lasts as long as the guard.
    pub(crate) async fn take(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match &self.0 {
            Some(lock) => Some(lock.lock().await),
            None => None,
        }
    }
}

#[derive(Debug)]
pub(crate) struct BlobStore {
    pool: AnyPool,
    sqlite: bool,
    turns: WriteTurns,
}

/// Milliseconds since the Unix epoch, now.
fn now_millis() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl BlobStore {
    /// Connects to the (already migrated) database at `url`.
    pub(crate) async fn connect(url: &str, sqlite: bool, turns: WriteTurns) -> Result<Self, StoreError> {
        let connect_options: AnyConnectOptions = url.parse()?;
        let pool = crate::sql::pool_options(sqlite, CONNECTIONS, 0).connect_with(connect_options).await?;
        Ok(BlobStore { pool, sqlite, turns })
    }

    /// Stores `data` under `digest` (its `sha256:<hex>`) unless it is there,
    /// and stamps it stored now either way; returns whether it was new.
    pub(crate) async fn put(&self, digest: &str, data: &[u8]) -> Result<bool, StoreError> {
        for _ in 0..PUT_ATTEMPTS {
            if self.touch(digest).await? {
                return Ok(false);
            }
            let chunks = if data.len() <= CHUNK_BYTES {
                0
            } else {
                let mut count = 0i64;
                for chunk in data.chunks(CHUNK_BYTES) {
                    let _turn = self.turns.take().await;
                    sqlx::query(
                        "INSERT INTO blob_chunks (digest, seq, data, stored_at) VALUES ($1, $2, $3, $4) \
                         ON CONFLICT (digest, seq) DO UPDATE SET stored_at = excluded.stored_at",
                    )
                    .bind(digest)
                    .bind(count)
                    .bind(chunk)
                    .bind(now_millis())
                    .execute(&self.pool)
                    .await?;
                    count += 1;
                }
                count
            };
            let inline: &[u8] = if chunks == 0 { data } else { &[] };
            let inserted = {
                let _turn = self.turns.take().await;
                sqlx::query("INSERT INTO blobs (digest, data, stored_at, chunks) VALUES ($1, $2, $3, $4) ON CONFLICT (digest) DO NOTHING")
                    .bind(digest)
                    .bind(inline)
                    .bind(now_millis())
                    .bind(chunks)
                    .execute(&self.pool)
                    .await?
                    .rows_affected()
            };
            // Not inserted: another put stored it meanwhile (stamp it), or it was collected in between (again).
            if inserted > 0 {
                return Ok(true);
            }
        }
        Err(StoreError::Corrupt(format!("blob {digest} kept being collected while it was stored")))
    }

    /// Stamps the blob under `digest` stored now; says whether there is one.
    async fn touch(&self, digest: &str) -> Result<bool, StoreError> {
        let _turn = self.turns.take().await;
        let touched = sqlx::query("UPDATE blobs SET stored_at = $2 WHERE digest = $1")
            .bind(digest)
            .bind(now_millis())
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(touched > 0)
    }

    /// The bytes stored under `digest`, read in one snapshot.
    pub(crate) async fn get(&self, digest: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let mut tx = conn.begin_with(crate::sql::snapshot_begin(self.sqlite)).await?;
        let Some(row) = sqlx::query("SELECT data, chunks FROM blobs WHERE digest = $1").bind(digest).fetch_optional(&mut *tx).await? else {
            tx.commit().await?;
            return Ok(None);
        };
        let chunks: i64 = row.try_get(1)?;
        if chunks == 0 {
            let data: Vec<u8> = row.try_get(0)?;
            tx.commit().await?;
            return Ok(Some(data));
        }
        let rows = sqlx::query("SELECT data FROM blob_chunks WHERE digest = $1 AND seq >= 0 AND seq < $2 ORDER BY seq")
            .bind(digest)
            .bind(chunks)
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        if i64::try_from(rows.len()).ok() != Some(chunks) {
            return Err(StoreError::Corrupt(format!("blob {digest} has {} of its {chunks} chunks", rows.len())));
        }
        let mut data = Vec::with_capacity(rows.len().saturating_mul(CHUNK_BYTES));
        for row in &rows {
            data.extend_from_slice(&row.try_get::<Vec<u8>, _>(0)?);
        }
        Ok(Some(data))
    }

    /// Removes every blob not in `referenced` last stored more than `grace`
    /// ago, and chunks no blob has that are as old; returns the digests removed.
    pub(crate) async fn collect(&self, referenced: &HashSet<String>, grace: Duration) -> Result<Vec<String>, StoreError> {
        let before = now_millis().saturating_sub(i64::try_from(grace.as_millis()).unwrap_or(i64::MAX));
        let rows = sqlx::query("SELECT digest FROM blobs WHERE stored_at < $1").bind(before).fetch_all(&self.pool).await?;
        let mut removed = Vec::new();
        for row in rows {
            let digest: String = row.try_get(0)?;
            if referenced.contains(&digest) {
                continue;
            }
            let _turn = self.turns.take().await;
            let mut conn = self.pool.acquire().await?;
            let mut tx = conn.begin().await?;
            // The stamp is checked again here: a put since the listing keeps its blob.
            let deleted = sqlx::query("DELETE FROM blobs WHERE digest = $1 AND stored_at < $2")
                .bind(&digest)
                .bind(before)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if deleted > 0 {
                sqlx::query("DELETE FROM blob_chunks WHERE digest = $1").bind(&digest).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            if deleted > 0 {
                removed.push(digest);
            }
        }
        let _turn = self.turns.take().await;
        let orphans = sqlx::query(
            "DELETE FROM blob_chunks WHERE stored_at < $1 \
             AND NOT EXISTS (SELECT 1 FROM blobs WHERE blobs.digest = blob_chunks.digest AND blobs.chunks > blob_chunks.seq)",
        )
        .bind(before)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if orphans > 0 {
            tracing::info!(chunks = orphans, "removed the chunks of blobs never completed");
        }
        Ok(removed)
    }
}
