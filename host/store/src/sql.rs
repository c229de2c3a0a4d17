//! The SQL backend, shared by SQLite and PostgreSQL through sqlx's `Any`
//! driver: the statements are written once in the subset both speak
//! (`$n` parameters, `ON CONFLICT`, `RETURNING`); the differences —
//! connection set-up, row locking, snapshot reads, migrations — are
//! chosen by [`Dialect`].

use std::sync::Arc;

use serde_json::Value;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Connection, Executor, Row};

use crate::batch::Batch;
use crate::cache::ObjectCache;
use crate::{Change, ChangeType, Key, Listing, StoreError, StoreOptions, WriteOp};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    Sqlite,
    Postgres,
}

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Settings applied to every SQLite connection. WAL lets reads run beside
/// the writer; `synchronous = FULL` makes each commit durable before it is
/// acknowledged (group commit keeps that to one fsync per batch).
const SQLITE_PRAGMAS: &str = "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON;";

/// A pool of at most `max` connections (at least `min` kept open); on
/// SQLite each connection gets [`SQLITE_PRAGMAS`]. The store's and the blob
/// store's pools are all made here.
pub(crate) fn pool_options(sqlite: bool, max: u32, min: u32) -> AnyPoolOptions {
    let options = AnyPoolOptions::new().max_connections(max).min_connections(min);
    if sqlite { options.after_connect(|conn, _| Box::pin(async move { conn.execute(SQLITE_PRAGMAS).await.map(drop) })) } else { options }
}

/// The statement that begins a read-only snapshot: SQLite's transactions
/// are snapshots in WAL mode; PostgreSQL's must ask for one.
pub(crate) fn snapshot_begin(sqlite: bool) -> &'static str {
    if sqlite { "BEGIN" } else { "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY" }
}

#[derive(Debug)]
pub(crate) struct SqlBackend {
    dialect: Dialect,
    writer: AnyPool,
    readers: AnyPool,
}

impl SqlBackend {
    pub(crate) async fn connect(url: &str, options: &StoreOptions) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let dialect = if url.starts_with("sqlite:") {
            Dialect::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Dialect::Postgres
        } else {
            return Err(StoreError::UnsupportedUrl(url.to_string()));
        };
        let connect_options: AnyConnectOptions = url.parse()?;
        let pool = |connections: u32| pool_options(dialect == Dialect::Sqlite, connections, 1);
        let writer = pool(1).connect_with(connect_options.clone()).await?;
        let migrator = match dialect {
            Dialect::Sqlite => &SQLITE_MIGRATIONS,
            Dialect::Postgres => &POSTGRES_MIGRATIONS,
        };
        migrator.run(&writer).await.map_err(|e| StoreError::Schema(Arc::new(e)))?;
        let readers = pool(options.read_connections.max(1)).connect_with(connect_options).await?;
        Ok(SqlBackend { dialect, writer, readers })
    }

    pub(crate) fn name(&self) -> &'static str {
        match self.dialect {
            Dialect::Sqlite => "sqlite",
            Dialect::Postgres => "postgres",
        }
    }

    /// Applies `ops` in one transaction. The outer error fails the whole
    /// batch (nothing committed); inner errors fail one op only. With
    /// `cache` (this process the only writer, the cache exact as of the
    /// last commit), objects are read from it instead of the database.
    pub(crate) async fn apply(
        &self,
        ops: Vec<WriteOp>,
        cache: Option<&ObjectCache>,
    ) -> Result<Vec<Result<Vec<Change>, StoreError>>, StoreError> {
        let mut conn = self.writer.acquire().await?;
        let applied = self.apply_on(&mut conn, ops, cache).await;
        if applied.is_err() {
            // A failed batch may leave the connection in a state its driver no
            // longer tracks (SQLite rolls a transaction back by itself on a
            // full disk): the next batch gets a fresh connection.
            conn.close_on_drop();
        }
        applied
    }

    async fn apply_on(
        &self,
        conn: &mut sqlx::pool::PoolConnection<sqlx::Any>,
        ops: Vec<WriteOp>,
        cache: Option<&ObjectCache>,
    ) -> Result<Vec<Result<Vec<Change>, StoreError>>, StoreError> {
        let mut tx = conn.begin().await?;
        let lock = match self.dialect {
            Dialect::Sqlite => "SELECT revision FROM kapsel_meta WHERE id = 1",
            // The row lock orders writers across supervisor replicas, so revisions commit in order.
            Dialect::Postgres => "SELECT revision FROM kapsel_meta WHERE id = 1 FOR UPDATE",
        };
        let mut revision: i64 = sqlx::query(lock).fetch_one(&mut *tx).await?.try_get(0)?;
        let mut batch = Batch::new(&mut tx, cache, self.dialect == Dialect::Postgres);
        let mut results = Vec::with_capacity(ops.len());
        for op in ops {
            let result = batch.apply(op, revision).await?;
            if let Ok(changes) = &result {
                revision += changes.len() as i64;
            }
            results.push(result);
        }
        batch.log_changes().await?;
        sqlx::query("UPDATE kapsel_meta SET revision = $1 WHERE id = 1").bind(revision).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(results)
    }

    pub(crate) async fn get(&self, key: &Key) -> Result<Option<Value>, StoreError> {
        let row = sqlx::query("SELECT data FROM objects WHERE resource = $1 AND namespace = $2 AND name = $3")
            .bind(&key.resource)
            .bind(&key.namespace)
            .bind(&key.name)
            .fetch_optional(&self.readers)
            .await?;
        row.map(|row| parse(&row.try_get::<String, _>(0)?)).transpose()
    }

    /// A read-only transaction and the revision it sees: reads in it are one
    /// snapshot, so a watch from that revision misses nothing they missed.
    async fn snapshot<'c>(&self, conn: &'c mut sqlx::pool::PoolConnection<sqlx::Any>) -> Result<(Tx<'c>, i64), StoreError> {
        let mut tx = conn.begin_with(snapshot_begin(self.dialect == Dialect::Sqlite)).await?;
        let revision: i64 = sqlx::query("SELECT revision FROM kapsel_meta WHERE id = 1").fetch_one(&mut *tx).await?.try_get(0)?;
        Ok((tx, revision))
    }

    pub(crate) async fn list(&self, resource: &str, namespace: Option<&str>) -> Result<Listing, StoreError> {
        let mut conn = self.readers.acquire().await?;
        let (mut tx, revision) = self.snapshot(&mut conn).await?;
        let rows = match namespace {
            Some(ns) => {
                sqlx::query("SELECT data FROM objects WHERE resource = $1 AND namespace = $2 ORDER BY namespace, name")
                    .bind(resource)
                    .bind(ns)
                    .fetch_all(&mut *tx)
                    .await?
            }
            None => {
                sqlx::query("SELECT data FROM objects WHERE resource = $1 ORDER BY namespace, name")
                    .bind(resource)
                    .fetch_all(&mut *tx)
                    .await?
            }
        };
        tx.commit().await?;
        let objects = rows.iter().map(|row| parse(&row.try_get::<String, _>(0)?)).collect::<Result<_, _>>()?;
        Ok(Listing { revision, objects })
    }

    /// At most `limit` objects of `resource` (in `namespace`, or all) after `after`, in (namespace, name) order.
    pub(crate) async fn list_page(
        &self,
        resource: &str,
        namespace: Option<&str>,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> Result<Listing, StoreError> {
        let (after_namespace, after_name) = after.unwrap_or((namespace.unwrap_or_default(), ""));
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut conn = self.readers.acquire().await?;
        let (mut tx, revision) = self.snapshot(&mut conn).await?;
        let rows = match namespace {
            Some(ns) => {
                // A page after another namespace's key starts at the beginning of this one, or is empty.
                let after_name = if after_namespace < ns { "" } else { after_name };
                if after_namespace > ns {
                    Vec::new()
                } else {
                    sqlx::query(
                        "SELECT data FROM objects WHERE resource = $1 AND namespace = $2 AND name > $3 ORDER BY namespace, name LIMIT $4",
                    )
                    .bind(resource)
                    .bind(ns)
                    .bind(after_name)
                    .bind(limit)
                    .fetch_all(&mut *tx)
                    .await?
                }
            }
            None => {
                sqlx::query(
                    "SELECT data FROM objects WHERE resource = $1 AND (namespace > $2 OR (namespace = $2 AND name > $3)) \
                     ORDER BY namespace, name LIMIT $4",
                )
                .bind(resource)
                .bind(after_namespace)
                .bind(after_name)
                .bind(limit)
                .fetch_all(&mut *tx)
                .await?
            }
        };
        tx.commit().await?;
        let objects = rows.iter().map(|row| parse(&row.try_get::<String, _>(0)?)).collect::<Result<_, _>>()?;
        Ok(Listing { revision, objects })
    }

    /// Every live object and the revision they are consistent at (to fill the cache).
    pub(crate) async fn load_all(&self) -> Result<(i64, Vec<(Key, Value)>), StoreError> {
        let mut conn = self.readers.acquire().await?;
        let (mut tx, revision) = self.snapshot(&mut conn).await?;
        let rows = sqlx::query("SELECT resource, namespace, name, data FROM objects").fetch_all(&mut *tx).await?;
        tx.commit().await?;
        let objects = rows
            .iter()
            .map(|row| {
                let key = Key::new(row.try_get::<String, _>(0)?, row.try_get::<String, _>(1)?, row.try_get::<String, _>(2)?);
                Ok((key, parse(&row.try_get::<String, _>(3)?)?))
            })
            .collect::<Result<_, StoreError>>()?;
        Ok((revision, objects))
    }

    /// Whether this process is the only writer of the database (SQLite), so an in-memory copy stays exact.
    pub(crate) fn single_writer(&self) -> bool {
        self.dialect == Dialect::Sqlite
    }

    pub(crate) async fn revisions(&self) -> Result<(i64, i64), StoreError> {
        let row = sqlx::query("SELECT revision, compacted FROM kapsel_meta WHERE id = 1").fetch_one(&self.readers).await?;
        Ok((row.try_get(0)?, row.try_get(1)?))
    }

    /// Up to `limit` changes to `resource` after revision `after`, oldest first.
    pub(crate) async fn changes_since(
        &self,
        resource: &str,
        namespace: Option<&str>,
        after: i64,
        limit: i64,
    ) -> Result<Vec<Change>, StoreError> {
        let query = match namespace {
            Some(ns) => sqlx::query(
                "SELECT revision, type, resource, namespace, name, data, previous FROM changes WHERE resource = $1 AND revision > $2 AND namespace = $3 ORDER BY revision LIMIT $4",
            )
            .bind(resource)
            .bind(after)
            .bind(ns)
            .bind(limit),
            None => sqlx::query("SELECT revision, type, resource, namespace, name, data, previous FROM changes WHERE resource = $1 AND revision > $2 ORDER BY revision LIMIT $3")
                .bind(resource)
                .bind(after)
                .bind(limit),
        };
        let rows = query.fetch_all(&self.readers).await?;
        rows.iter()
            .map(|row| {
                Ok(Change {
                    revision: row.try_get(0)?,
                    change_type: ChangeType::parse(&row.try_get::<String, _>(1)?)?,
                    key: Key::new(row.try_get::<String, _>(2)?, row.try_get::<String, _>(3)?, row.try_get::<String, _>(4)?),
                    object: Arc::new(parse(&row.try_get::<String, _>(5)?)?),
                    previous: row.try_get::<Option<String>, _>(6)?.map(|p| parse(&p)).transpose()?.map(Arc::new),
                })
            })
            .collect()
    }

    /// Deletes changes at or below `revision` and moves the horizon there.
    pub(crate) async fn compact(&self, revision: i64) -> Result<u64, StoreError> {
        let mut conn = self.writer.acquire().await?;
        let mut tx = conn.begin().await?;
        let removed = sqlx::query("DELETE FROM changes WHERE revision <= $1").bind(revision).execute(&mut *tx).await?.rows_affected();
        sqlx::query("UPDATE kapsel_meta SET compacted = $1 WHERE id = 1 AND compacted < $1").bind(revision).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(removed)
    }
}

pub(crate) fn parse(data: &str) -> Result<Value, StoreError> {
    serde_json::from_str(data).map_err(|e| StoreError::Corrupt(format!("stored object is not JSON: {e}")))
}

/// The revision `metadata.resourceVersion` of a stored object says (0 if none).
pub(crate) fn stored_revision(object: &Value) -> i64 {
    object.pointer("/metadata/resourceVersion").and_then(Value::as_str).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// Sets `metadata.resourceVersion` to `revision`.
pub(crate) fn stamp(object: &mut Value, revision: i64) {
    if let Some(meta) = object.as_object_mut().map(|o| o.entry("metadata").or_insert_with(|| Value::Object(Default::default())))
        && let Some(meta) = meta.as_object_mut()
    {
        meta.insert("resourceVersion".into(), Value::String(revision.to_string()));
    }
}

pub(crate) type Tx<'a> = sqlx::Transaction<'a, sqlx::Any>;
