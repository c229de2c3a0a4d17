//! One group-commit batch inside the writer's transaction: applies each
//! [`WriteOp`] at the next revisions and collects the change log's rows,
//! which go in at the end as a few multi-row inserts instead of one
//! statement each. When this process is the only writer (SQLite), the
//! objects an op checks against are read from the object cache — exact as
//! of the last commit — and from what this batch wrote since, not from the
//! database: an update of a known object is then one statement.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use serde_json::Value;
use sqlx::Row;

use crate::cache::ObjectCache;
use crate::sql::{Tx, parse, stamp, stored_revision};
use crate::{Change, ChangeType, Key, StoreError, WriteOp};

/// What an op applied: its changes, or why this op (only) failed.
pub(crate) type OpResult = Result<Vec<Change>, StoreError>;

/// The writes of one transaction in progress.
pub(crate) struct Batch<'t, 'c> {
    tx: &'t mut Tx<'c>,
    cache: Option<&'t ObjectCache>,
    /// Whether the database wants `$n` parameters (PostgreSQL) rather than `?` (SQLite).
    numbered_parameters: bool,
    /// With a cache: the objects this batch wrote (`None`: deleted), which the cache has not seen yet.
    written: HashMap<Key, Option<Arc<Value>>>,
    /// The change log's rows of this batch, in revision order.
    log: Vec<LogRow>,
}

/// A row of the `changes` table.
struct LogRow {
    revision: i64,
    change_type: ChangeType,
    key: Key,
    data: String,
    previous: Option<String>,
}

/// An object as stored, with the revision it was written at.
struct Stored {
    object: Arc<Value>,
    revision: i64,
    /// Its JSON text, when it was read from the database.
    text: Option<String>,
}

impl Stored {
    /// The text a modification logs as its `previous`.
    fn into_text(self) -> (Arc<Value>, String) {
        let text = self.text.unwrap_or_else(|| self.object.to_string());
        (self.object, text)
    }
}

/// Most rows one insert into the change log carries (7 parameters each).
const LOG_ROWS_PER_INSERT: usize = 128;

impl<'t, 'c> Batch<'t, 'c> {
    pub(crate) fn new(tx: &'t mut Tx<'c>, cache: Option<&'t ObjectCache>, numbered_parameters: bool) -> Self {
        Batch { tx, cache, numbered_parameters, written: HashMap::new(), log: Vec::new() }
    }

    /// Applies one op at `revision + 1…`; an `Err` inside is this op's
    /// failure (the transaction goes on), an `Err` outside fails the batch.
    /// Ops never make a statement fail, so one transaction can carry many of
    /// them on both databases (a failed statement would abort a PostgreSQL
    /// transaction); an atomic op undoes its own part with a savepoint.
    pub(crate) async fn apply(&mut self, op: WriteOp, revision: i64) -> Result<OpResult, StoreError> {
        let next = revision + 1;
        match op {
            WriteOp::Atomic(ops) => {
                sqlx::query("SAVEPOINT kapsel_atomic").execute(&mut **self.tx).await?;
                let (written, logged) = (self.cache.map(|_| self.written.clone()), self.log.len());
                let mut changes = Vec::new();
                for (index, op) in ops.into_iter().enumerate() {
                    match Box::pin(self.apply(op, revision + changes.len() as i64)).await? {
                        Ok(applied) => changes.extend(applied),
                        Err(error) => {
                            sqlx::query("ROLLBACK TO SAVEPOINT kapsel_atomic").execute(&mut **self.tx).await?;
                            sqlx::query("RELEASE SAVEPOINT kapsel_atomic").execute(&mut **self.tx).await?;
                            self.log.truncate(logged);
                            if let Some(written) = written {
                                self.written = written;
                            }
                            return Ok(Err(StoreError::AtomicOpFailed { index, error: Box::new(error) }));
                        }
                    }
                }
                sqlx::query("RELEASE SAVEPOINT kapsel_atomic").execute(&mut **self.tx).await?;
                Ok(Ok(changes))
            }
            WriteOp::Create { key, mut object } => {
                stamp(&mut object, next);
                let data = object.to_string();
                let inserted = sqlx::query(
                    "INSERT INTO objects (resource, namespace, name, revision, data) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                )
                .bind(&key.resource)
                .bind(&key.namespace)
                .bind(&key.name)
                .bind(next)
                .bind(&data)
                .execute(&mut **self.tx)
                .await?
                .rows_affected();
                if inserted == 0 {
                    return Ok(Err(StoreError::AlreadyExists));
                }
                Ok(Ok(vec![self.record(next, ChangeType::Added, key, object, data, None)]))
            }
            WriteOp::Adjust { key, adjust } => {
                let stored = match self.current(&key, None).await? {
                    Ok(stored) => stored,
                    Err(error) => return Ok(Err(error)),
                };
                let mut object = match (adjust.0)(&stored.object) {
                    Ok(object) => object,
                    Err(reason) => return Ok(Err(StoreError::Refused(reason))),
                };
                // The revision is not part of the comparison: the stored one carries it.
                stamp(&mut object, stored.revision);
                if object == *stored.object {
                    return Ok(Ok(Vec::new()));
                }
                Box::pin(self.apply(WriteOp::Update { key, object, expected_revision: None }, revision)).await
            }
            WriteOp::Update { key, mut object, expected_revision } => {
                let previous = match self.current(&key, expected_revision).await? {
                    Ok(stored) => stored.into_text(),
                    Err(error) => return Ok(Err(error)),
                };
                stamp(&mut object, next);
                let data = object.to_string();
                sqlx::query("UPDATE objects SET revision = $1, data = $2 WHERE resource = $3 AND namespace = $4 AND name = $5")
                    .bind(next)
                    .bind(&data)
                    .bind(&key.resource)
                    .bind(&key.namespace)
                    .bind(&key.name)
                    .execute(&mut **self.tx)
                    .await?;
                Ok(Ok(vec![self.record(next, ChangeType::Modified, key, object, data, Some(previous))]))
            }
            WriteOp::Delete { key, expected_revision } => {
                let stored = match self.current(&key, expected_revision).await? {
                    Ok(stored) => stored,
                    Err(error) => return Ok(Err(error)),
                };
                self.delete_row(&key).await?;
                Ok(Ok(vec![self.record_deletion(next, key, (*stored.object).clone())]))
            }
            WriteOp::DeleteNamespace { key, expected_revision } => {
                let namespace = match self.current(&key, expected_revision).await? {
                    Ok(stored) => stored,
                    Err(error) => return Ok(Err(error)),
                };
                self.delete_row(&key).await?;
                let mut changes = vec![self.record_deletion(next, key.clone(), (*namespace.object).clone())];
                let contents = sqlx::query("DELETE FROM objects WHERE namespace = $1 RETURNING resource, name, data")
                    .bind(&key.name)
                    .fetch_all(&mut **self.tx)
                    .await?;
                for row in contents {
                    let inner = Key::new(row.try_get::<String, _>(0)?, key.name.clone(), row.try_get::<String, _>(1)?);
                    let object = parse(&row.try_get::<String, _>(2)?)?;
                    changes.push(self.record_deletion(next + changes.len() as i64, inner, object));
                }
                Ok(Ok(changes))
            }
        }
    }

    /// The stored object under `key`, if it exists and (when `expected` is
    /// given) is still at that revision; otherwise why not.
    async fn current(&mut self, key: &Key, expected: Option<i64>) -> Result<Result<Stored, StoreError>, StoreError> {
        let stored = match self.cache {
            Some(cache) => {
                let object = match self.written.get(key) {
                    Some(written) => written.clone(),
                    None => cache.get_shared(key),
                };
                object.map(|object| Stored { revision: stored_revision(&object), object, text: None })
            }
            None => {
                let row = sqlx::query("SELECT revision, data FROM objects WHERE resource = $1 AND namespace = $2 AND name = $3")
                    .bind(&key.resource)
                    .bind(&key.namespace)
                    .bind(&key.name)
                    .fetch_optional(&mut **self.tx)
                    .await?;
                match row {
                    Some(row) => {
                        let text: String = row.try_get(1)?;
                        Some(Stored { object: Arc::new(parse(&text)?), revision: row.try_get(0)?, text: Some(text) })
                    }
                    None => None,
                }
            }
        };
        Ok(match stored {
            None => Err(StoreError::NotFound),
            Some(stored) if expected.is_some_and(|e| e != stored.revision) => Err(StoreError::Conflict { current: stored.revision }),
            Some(stored) => Ok(stored),
        })
    }

    async fn delete_row(&mut self, key: &Key) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM objects WHERE resource = $1 AND namespace = $2 AND name = $3")
            .bind(&key.resource)
            .bind(&key.namespace)
            .bind(&key.name)
            .execute(&mut **self.tx)
            .await?;
        Ok(())
    }

    fn record_deletion(&mut self, revision: i64, key: Key, mut object: Value) -> Change {
        stamp(&mut object, revision);
        let data = object.to_string();
        self.record(revision, ChangeType::Deleted, key, object, data, None)
    }

    /// Logs a change (its row goes in with [`Batch::log_changes`]) and remembers what it wrote.
    fn record(
        &mut self,
        revision: i64,
        change_type: ChangeType,
        key: Key,
        object: Value,
        data: String,
        previous: Option<(Arc<Value>, String)>,
    ) -> Change {
        let (previous, previous_text) = previous.unzip();
        let object = Arc::new(object);
        if self.cache.is_some() {
            let now = (change_type != ChangeType::Deleted).then(|| object.clone());
            self.written.insert(key.clone(), now);
        }
        self.log.push(LogRow { revision, change_type, key: key.clone(), data, previous: previous_text });
        Change { revision, change_type, key, object, previous }
    }

    /// Inserts the batch's change-log rows: chunks of a few fixed sizes, so
    /// the connection's cache of prepared statements holds every shape.
    pub(crate) async fn log_changes(&mut self) -> Result<(), StoreError> {
        let mut rows = std::mem::take(&mut self.log).into_iter();
        let mut left = rows.len();
        while left > 0 {
            let chunk = 1 << (usize::BITS - 1 - left.min(LOG_ROWS_PER_INSERT).leading_zeros());
            let mut insert = sqlx::query(log_insert(chunk, self.numbered_parameters));
            for row in rows.by_ref().take(chunk) {
                insert = insert
                    .bind(row.revision)
                    .bind(row.change_type.as_str())
                    .bind(row.key.resource)
                    .bind(row.key.namespace)
                    .bind(row.key.name)
                    .bind(row.data)
                    .bind(row.previous);
            }
            insert.execute(&mut **self.tx).await?;
            left -= chunk;
        }
        Ok(())
    }
}

/// `INSERT INTO changes …` of `rows` rows (a power of two up to
/// [`LOG_ROWS_PER_INSERT`]), with `$n` parameters or, for SQLite, anonymous
/// `?` ones (a numbered parameter costs SQLite a scan of the statement's
/// parameter names at each bind).
fn log_insert(rows: usize, numbered: bool) -> &'static str {
    static INSERTS: OnceLock<[Vec<String>; 2]> = OnceLock::new();
    let inserts = INSERTS.get_or_init(|| {
        [false, true].map(|numbered| {
            (0..=LOG_ROWS_PER_INSERT.trailing_zeros())
                .map(|power| {
                    let values: Vec<String> = (0..1usize << power)
                        .map(|row| {
                            let first = row * 7 + 1;
                            let params: Vec<String> =
                                (first..first + 7).map(|n| if numbered { format!("${n}") } else { "?".to_string() }).collect();
                            format!("({})", params.join(", "))
                        })
                        .collect();
                    format!("INSERT INTO changes (revision, type, resource, namespace, name, data, previous) VALUES {}", values.join(", "))
                })
                .collect()
        })
    });
    &inserts[usize::from(numbered)][rows.trailing_zeros() as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_inserts_number_their_parameters_in_order() {
        assert_eq!(
            log_insert(1, true),
            "INSERT INTO changes (revision, type, resource, namespace, name, data, previous) VALUES ($1, $2, $3, $4, $5, $6, $7)"
        );
        let two = log_insert(2, true);
        assert!(two.ends_with("($1, $2, $3, $4, $5, $6, $7), ($8, $9, $10, $11, $12, $13, $14)"), "{two}");
        assert!(log_insert(LOG_ROWS_PER_INSERT, true).ends_with("$896)"));
        let anonymous = log_insert(LOG_ROWS_PER_INSERT, false);
        assert_eq!(anonymous.matches('?').count(), LOG_ROWS_PER_INSERT * 7);
        assert!(anonymous.ends_with("(?, ?, ?, ?, ?, ?, ?)"));
    }
}
