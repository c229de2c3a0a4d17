//! The blob store against every backend (SQLite in a temporary file, and
//! PostgreSQL at `KAPSEL_TEST_POSTGRES_URL`, a fresh database per test, as
//! the conformance suite runs): big blobs stored in chunks and read back
//! whole, collection of what nothing references after a grace period (a
//! blob stored again is spared, chunks of an unfinished put are removed),
//! and a big blob's write not holding up the group commit.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use kapsel_store::blobs::CHUNK_BYTES;
use kapsel_store::{Key, Store, StoreError, StoreOptions};
use serde_json::json;
use sqlx::{Connection, Executor, Row};

mod common;
use common::Backend;

/// What the cases below need of a backend besides its database.
impl Backend {
    async fn store(&self) -> Store {
        Store::open(&self.url, StoreOptions { compaction_interval: None, ..StoreOptions::default() }).await.unwrap()
    }

    /// A query's one integer, on a connection of the test's own.
    async fn count(&self, query: &str) -> i64 {
        sqlx::any::install_default_drivers();
        let mut conn = sqlx::AnyConnection::connect(&self.url).await.unwrap();
        conn.fetch_one(sqlx::AssertSqlSafe(query.to_string())).await.unwrap().try_get::<i64, _>(0).unwrap()
    }
}

macro_rules! on_every_backend {
    ($($case:ident),* $(,)?) => {
        mod sqlite_backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    super::$case(&super::Backend::sqlite().await).await;
                }
            )*
        }
        mod postgres_backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    if let Some(backend) = super::Backend::postgres("kapsel_blobs").await {
                        super::$case(&backend).await;
                        backend.drop_database().await;
                    }
                }
            )*
        }
    };
}

on_every_backend!(
    big_blobs_are_stored_in_chunks_and_read_back_whole,
    unreferenced_blobs_are_collected_after_the_grace_period,
    a_blob_stored_again_is_spared,
    chunks_of_an_unfinished_put_are_collected,
    a_big_blob_does_not_hold_up_other_writes,
);

/// `len` bytes that differ with `seed`.
fn bytes(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8 ^ seed).collect()
}

/// A test digest: the store takes the caller's word for it.
fn digest(name: &str) -> String {
    format!("sha256:{name}")
}

async fn big_blobs_are_stored_in_chunks_and_read_back_whole(backend: &Backend) {
    let store = backend.store().await;
    let small = bytes(100_000, 1);
    let big = bytes(2 * CHUNK_BYTES + 12_345, 2);
    let exact = bytes(CHUNK_BYTES, 3);
    for (name, data) in [("small", &small), ("big", &big), ("exact", &exact), ("empty", &Vec::new())] {
        assert!(store.put_blob(&digest(name), data).await.unwrap(), "{name} is new");
        assert!(!store.put_blob(&digest(name), data).await.unwrap(), "{name} is stored once");
        assert_eq!(&store.get_blob(&digest(name)).await.unwrap(), data, "{name} reads back whole");
    }
    assert_eq!(backend.count("SELECT count(*) FROM blob_chunks WHERE digest = 'sha256:big'").await, 3);
    assert_eq!(backend.count("SELECT count(*) FROM blob_chunks WHERE digest <> 'sha256:big'").await, 0, "one chunk's worth is its row");
    assert!(matches!(store.get_blob(&digest("missing")).await, Err(StoreError::NotFound)));
}

async fn unreferenced_blobs_are_collected_after_the_grace_period(backend: &Backend) {
    let store = backend.store().await;
    let (kept, small, big) = (bytes(10, 1), bytes(10, 2), bytes(3 * CHUNK_BYTES, 3));
    for (name, data) in [("kept", &kept), ("small", &small), ("big", &big)] {
        store.put_blob(&digest(name), data).await.unwrap();
    }
    let referenced: HashSet<String> = [digest("kept")].into();
    // Within the grace period nothing goes, referenced or not.
    assert!(store.collect_blobs(&referenced, Duration::from_secs(3600)).await.unwrap().is_empty());
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut removed = store.collect_blobs(&referenced, Duration::ZERO).await.unwrap();
    removed.sort();
    assert_eq!(removed, [digest("big"), digest("small")]);
    assert_eq!(store.get_blob(&digest("kept")).await.unwrap(), kept);
    for name in ["small", "big"] {
        assert!(matches!(store.get_blob(&digest(name)).await, Err(StoreError::NotFound)), "{name} was collected");
    }
    assert_eq!(backend.count("SELECT count(*) FROM blob_chunks").await, 0, "a collected blob's chunks go with it");
    // Nothing left to collect; a collected blob can be stored again.
    assert!(store.collect_blobs(&referenced, Duration::ZERO).await.unwrap().is_empty());
    assert!(store.put_blob(&digest("big"), &big).await.unwrap());
    assert_eq!(store.get_blob(&digest("big")).await.unwrap(), big);
}

async fn a_blob_stored_again_is_spared(backend: &Backend) {
    let store = backend.store().await;
    let data = bytes(2 * CHUNK_BYTES, 4);
    store.put_blob(&digest("again"), &data).await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    // A push of the same bytes (about to reference them) stamps them stored now.
    assert!(!store.put_blob(&digest("again"), &data).await.unwrap());
    let grace = Duration::from_millis(400);
    assert!(store.collect_blobs(&HashSet::new(), grace).await.unwrap().is_empty(), "stored again within the grace period");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(store.collect_blobs(&HashSet::new(), grace).await.unwrap(), [digest("again")]);
}

async fn chunks_of_an_unfinished_put_are_collected(backend: &Backend) {
    let store = backend.store().await;
    let whole = bytes(2 * CHUNK_BYTES, 5);
    store.put_blob(&digest("whole"), &whole).await.unwrap();
    // What a put that died after its chunks and before its row leaves behind.
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(&backend.url).await.unwrap();
    for seq in 0..2i64 {
        sqlx::query("INSERT INTO blob_chunks (digest, seq, data, stored_at) VALUES ('sha256:dead', $1, $2, 0)")
            .bind(seq)
            .bind(vec![7u8; 16])
            .execute(&mut conn)
            .await
            .unwrap();
    }
    let referenced: HashSet<String> = [digest("whole")].into();
    store.collect_blobs(&referenced, Duration::from_secs(60)).await.unwrap();
    assert_eq!(backend.count("SELECT count(*) FROM blob_chunks WHERE digest = 'sha256:dead'").await, 0);
    assert_eq!(store.get_blob(&digest("whole")).await.unwrap(), whole, "a complete blob's chunks stay");
}

/// A 48 MiB blob is written while small writes go on: they commit while it
/// is being written, instead of queueing behind it.
async fn a_big_blob_does_not_hold_up_other_writes(backend: &Backend) {
    let store = backend.store().await;
    let big = bytes(48 << 20, 6);
    let putting = {
        let store = store.clone();
        tokio::spawn(async move {
            store.put_blob(&digest("huge"), &big).await.unwrap();
            Instant::now()
        })
    };
    let mut committed = Vec::new();
    for i in 0.. {
        let key = Key::new("leases", "kube-node-lease", format!("node-{i}"));
        store.create(key, json!({"metadata": {"name": format!("node-{i}")}})).await.unwrap();
        committed.push(Instant::now());
        if putting.is_finished() {
            break;
        }
    }
    let stored = putting.await.unwrap();
    let during = committed.iter().filter(|at| **at < stored).count();
    assert!(during >= 3, "only {during} small writes committed while the big blob was written");
}
