//! The store's conformance suite, written once and run against every
//! backend: SQLite in a temporary file, and PostgreSQL at
//! `KAPSEL_TEST_POSTGRES_URL` (a fresh database per test). When `CI` is set
//! and that URL is not, the PostgreSQL cases fail instead of skipping.

use std::collections::HashSet;
use std::time::Duration;

use futures::StreamExt;
use kapsel_store::{Adjustment, ChangeType, Key, Store, StoreError, StoreOptions, WriteOp};
use serde_json::{Value, json};
use sqlx::{Connection, Executor};

mod common;
use common::Backend;

fn options() -> StoreOptions {
    StoreOptions { compaction_interval: None, ..StoreOptions::default() }
}

/// Declares one test per backend for each conformance case.
macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod sqlite_backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let backend = super::Backend::sqlite().await;
                    super::$case(&backend.url).await;
                }
            )*
        }
        mod postgres_backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    if let Some(backend) = super::Backend::postgres("kapsel_conformance").await {
                        super::$case(&backend.url).await;
                        backend.drop_database().await;
                    }
                }
            )*
        }
    };
}

conformance!(
    blobs_are_stored_once_by_digest,
    crud_and_conflicts,
    list_by_namespace_at_one_revision,
    lists_in_pages,
    watch_resumes_from_a_revision,
    compaction_bounds_the_log,
    concurrent_writers_get_distinct_ordered_revisions,
    deleting_a_namespace_deletes_its_contents,
    writes_survive_reopening,
    refuses_an_unknown_schema,
    atomic_writes_apply_all_or_nothing,
    adjustments_apply_one_after_another,
    writes_queued_together_see_each_other_and_are_all_logged
);

fn pod(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "dev"}, "spec": {"containers": [{"name": "c", "image": "i"}]}})
}

fn rv(object: &Value) -> i64 {
    object["metadata"]["resourceVersion"].as_str().unwrap().parse().unwrap()
}

async fn crud_and_conflicts(url: &str) {
    let store = Store::open(url, options()).await.unwrap();
    let key = Key::new("pods", "dev", "p1");
    let created = store.create(key.clone(), pod("p1")).await.unwrap();
    assert_eq!(created.change_type, ChangeType::Added);
    let first_rv = rv(&created.object);
    assert_eq!(first_rv, created.revision);
    let got = store.get(&key).await.unwrap();
    assert_eq!(rv(&got), first_rv);
    assert_eq!(got["spec"]["containers"][0]["image"], "i");

    assert!(matches!(store.create(key.clone(), pod("p1")).await, Err(StoreError::AlreadyExists)));

    let mut changed = got.clone();
    changed["spec"]["containers"][0]["image"] = json!("j");
    let updated = store.update(key.clone(), changed.clone(), Some(first_rv)).await.unwrap();
    assert!(updated.revision > first_rv);
    match store.update(key.clone(), changed.clone(), Some(first_rv)).await {
        Err(StoreError::Conflict { current }) => assert_eq!(current, updated.revision),
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert!(matches!(store.delete(key.clone(), Some(first_rv)).await, Err(StoreError::Conflict { .. })));
    let unconditional = store.update(key.clone(), changed, None).await.unwrap();
    assert!(unconditional.revision > updated.revision);

    let deleted = store.delete(key.clone(), Some(unconditional.revision)).await.unwrap();
    assert_eq!(deleted.change_type, ChangeType::Deleted);
    assert_eq!(rv(&deleted.object), deleted.revision);
    assert!(matches!(store.get(&key).await, Err(StoreError::NotFound)));
    assert!(matches!(store.delete(key.clone(), None).await, Err(StoreError::NotFound)));
    assert!(matches!(store.update(key, pod("p1"), None).await, Err(StoreError::NotFound)));
}

async fn list_by_namespace_at_one_revision(url: &str) {
    let store = Store::open(url, options()).await.unwrap();
    for (ns, name) in [("dev", "a"), ("dev", "b"), ("prod", "c")] {
        store.create(Key::new("pods", ns, name), pod(name)).await.unwrap();
    }
    store.create(Key::new("namespaces", "", "dev"), json!({"metadata": {"name": "dev"}})).await.unwrap();
    let dev = store.list("pods", Some("dev")).await.unwrap();
    let names: Vec<_> = dev.objects.iter().map(|o| o["metadata"]["name"].as_str().unwrap().to_string()).collect();
    assert_eq!(names, ["a", "b"]);
    let all = store.list("pods", None).await.unwrap();
    assert_eq!(all.objects.len(), 3);
    let (current, _) = store.revisions().await.unwrap();
    assert_eq!(all.revision, current);
    assert!(all.objects.iter().all(|o| rv(o) <= all.revision));
    assert_eq!(store.list("widgets", None).await.unwrap().objects.len(), 0);
}

async fn lists_in_pages(url: &str) {
    let store = Store::open(url, options()).await.unwrap();
    let keys = [("a", "x"), ("dev", "a"), ("dev", "b"), ("dev", "c"), ("prod", "a"), ("zeta", "q")];
    for (ns, name) in keys {
        store.create(Key::new("pods", ns, name), pod(name)).await.unwrap();
    }
    store.create(Key::new("namespaces", "", "dev"), json!({"metadata": {"name": "dev"}})).await.unwrap();
    let page_keys = |listing: &kapsel_store::Listing| -> Vec<String> {
        listing.objects.iter().map(|o| o["metadata"]["name"].as_str().unwrap().to_string()).collect()
    };
    // Every namespace, two at a time: the pages add up to the whole, in order.
    let mut seen = Vec::new();
    let mut after: Option<(String, String)> = None;
    let mut pages = 0;
    loop {
        let page = store.list_page("pods", None, after.as_ref().map(|(n, m)| (n.as_str(), m.as_str())), 2).await.unwrap();
        pages += 1;
        assert!(page.objects.len() <= 2);
        if page.objects.is_empty() {
            break;
        }
        seen.extend(page_keys(&page));
        let last = &keys[seen.len() - 1];
        after = Some((last.0.to_string(), last.1.to_string()));
    }
    assert_eq!(seen, ["x", "a", "b", "c", "a", "q"]);
    assert_eq!(pages, 4);
    // One namespace: from its start, after a key in it, after a key before or after it.
    assert_eq!(page_keys(&store.list_page("pods", Some("dev"), None, 10).await.unwrap()), ["a", "b", "c"]);
    assert_eq!(page_keys(&store.list_page("pods", Some("dev"), Some(("dev", "a")), 1).await.unwrap()), ["b"]);
    assert_eq!(page_keys(&store.list_page("pods", Some("dev"), Some(("a", "x")), 10).await.unwrap()), ["a", "b", "c"]);
    assert!(store.list_page("pods", Some("dev"), Some(("prod", "")), 10).await.unwrap().objects.is_empty());
    assert!(store.list_page("pods", Some("nope"), None, 10).await.unwrap().objects.is_empty());
    assert_eq!(page_keys(&store.list_page("namespaces", None, None, 10).await.unwrap()), ["dev"]);
    let (current, _) = store.revisions().await.unwrap();
    assert_eq!(store.list_page("pods", None, None, 1).await.unwrap().revision, current);
}

async fn next_change(stream: &mut kapsel_store::WatchStream) -> kapsel_store::Change {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("a watch event in time")
        .expect("stream open")
        .expect("no error")
}

async fn watch_resumes_from_a_revision(url: &str) {
    let store = Store::open(url, options()).await.unwrap();
    let first = store.create(Key::new("pods", "dev", "a"), pod("a")).await.unwrap();
    store.create(Key::new("pods", "dev", "b"), pod("b")).await.unwrap();
    store.create(Key::new("pods", "prod", "x"), pod("x")).await.unwrap();
    store.create(Key::new("nodes", "", "n1"), json!({})).await.unwrap();

    let mut all = store.watch("pods", None, first.revision).await.unwrap();
    let mut dev = store.watch("pods", Some("dev"), first.revision).await.unwrap();
    assert_eq!(next_change(&mut all).await.key.name, "b");
    assert_eq!(next_change(&mut all).await.key.name, "x");
    assert_eq!(next_change(&mut dev).await.key.name, "b");

    // Live changes follow the backlog, in order, filtered.
    let a = store.get(&Key::new("pods", "dev", "a")).await.unwrap();
    store.update(Key::new("pods", "dev", "a"), a, None).await.unwrap();
    store.delete(Key::new("pods", "dev", "b"), None).await.unwrap();
    let modified = next_change(&mut dev).await;
    assert_eq!((modified.change_type, modified.key.name.as_str()), (ChangeType::Modified, "a"));
    assert_eq!(modified.previous.as_ref().map(|p| rv(p)), Some(first.revision), "a modification carries the object before it");
    let deleted = next_change(&mut dev).await;
    assert_eq!((deleted.change_type, deleted.key.name.as_str()), (ChangeType::Deleted, "b"));
    assert!(deleted.revision > modified.revision);
    let replayed = next_change(&mut all).await;
    assert_eq!(replayed.revision, modified.revision);
    // Replayed from the log (the watch on all namespaces read it there), the previous object is kept too.
    let late = store.watch("pods", Some("dev"), first.revision).await.unwrap();
    let mut late = late;
    assert_eq!(next_change(&mut late).await.key.name, "b");
    let from_log = next_change(&mut late).await;
    assert_eq!(from_log.previous.as_ref().map(|p| rv(p)), Some(first.revision));

    // A watch from the current revision sees only what comes next.
    let (current, _) = store.revisions().await.unwrap();
    let mut fresh = store.watch("pods", None, current).await.unwrap();
    store.create(Key::new("pods", "dev", "c"), pod("c")).await.unwrap();
    assert_eq!(next_change(&mut fresh).await.key.name, "c");
}

async fn compaction_bounds_the_log(url: &str) {
    let store = Store::open(url, StoreOptions { retained_changes: 10, ..options() }).await.unwrap();
    let key = Key::new("pods", "dev", "churn");
    let first = store.create(key.clone(), pod("churn")).await.unwrap();
    for _ in 0..50 {
        let current = store.get(&key).await.unwrap();
        store.update(key.clone(), current, None).await.unwrap();
    }
    let removed = store.compact().await.unwrap();
    assert!(removed >= 40, "compaction removed only {removed}");
    let (current, compacted) = store.revisions().await.unwrap();
    assert_eq!(compacted, current - 10);
    match store.watch("pods", None, first.revision).await {
        Err(StoreError::Compacted { requested, oldest }) => {
            assert_eq!((requested, oldest), (first.revision, compacted))
        }
        other => panic!("expected Compacted, got {other:?}"),
    }
    let mut from_horizon = store.watch("pods", None, compacted).await.unwrap();
    assert_eq!(next_change(&mut from_horizon).await.revision, compacted + 1);
    // Compacting again with nothing new to drop is a no-op.
    assert_eq!(store.compact().await.unwrap(), 0);
}

async fn concurrent_writers_get_distinct_ordered_revisions(url: &str) {
    let store = Store::open(url, options()).await.unwrap();
    let (start, _) = store.revisions().await.unwrap();
    let mut watch = store.watch("pods", None, start).await.unwrap();
    let mut tasks = Vec::new();
    for writer in 0..32 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut revisions = Vec::new();
            for i in 0..25 {
                let name = format!("w{writer}-{i}");
                revisions.push(store.create(Key::new("pods", "dev", &name), pod(&name)).await.unwrap().revision);
            }
            revisions
        }));
    }
    let mut seen = HashSet::new();
    for task in tasks {
        for revision in task.await.unwrap() {
            assert!(seen.insert(revision), "revision {revision} given twice");
        }
    }
    assert_eq!(seen.len(), 800);
    assert_eq!(store.list("pods", Some("dev")).await.unwrap().objects.len(), 800);
    let mut last = start;
    for _ in 0..800 {
        let change = next_change(&mut watch).await;
        assert!(change.revision > last, "watch out of order: {} after {last}", change.revision);
        last = change.revision;
    }
}

async fn deleting_a_namespace_deletes_its_contents(url: &str) {
    let store = Store::open(url, options()).await.unwrap();
    let ns = Key::new("namespaces", "", "dev");
    store.create(ns.clone(), json!({"metadata": {"name": "dev"}})).await.unwrap();
    store.create(Key::new("pods", "dev", "a"), pod("a")).await.unwrap();
    store.create(Key::new("resourcequotas", "dev", "q"), json!({})).await.unwrap();
    store.create(Key::new("pods", "prod", "keep"), pod("keep")).await.unwrap();
    let changes = store.write(WriteOp::DeleteNamespace { key: ns.clone(), expected_revision: None }).await.unwrap();
    assert_eq!(changes.len(), 3);
    assert_eq!(changes[0].key, ns);
    assert!(changes.iter().all(|c| c.change_type == ChangeType::Deleted));
    let revisions: HashSet<_> = changes.iter().map(|c| c.revision).collect();
    assert_eq!(revisions.len(), 3);
    assert!(store.list("pods", Some("dev")).await.unwrap().objects.is_empty());
    assert!(store.list("resourcequotas", None).await.unwrap().objects.is_empty());
    assert_eq!(store.list("pods", None).await.unwrap().objects.len(), 1);
    assert!(matches!(store.write(WriteOp::DeleteNamespace { key: ns.clone(), expected_revision: None }).await, Err(StoreError::NotFound)));

    // A stale precondition leaves the namespace and its contents alone.
    let created = store.create(ns.clone(), json!({"metadata": {"name": "dev"}})).await.unwrap();
    store.create(Key::new("pods", "dev", "b"), pod("b")).await.unwrap();
    let stale = store.write(WriteOp::DeleteNamespace { key: ns.clone(), expected_revision: Some(created.revision - 1) }).await;
    assert!(matches!(stale, Err(StoreError::Conflict { .. })), "{stale:?}");
    assert_eq!(store.list("pods", Some("dev")).await.unwrap().objects.len(), 1);
    store.write(WriteOp::DeleteNamespace { key: ns, expected_revision: Some(created.revision) }).await.unwrap();
}

async fn writes_survive_reopening(url: &str) {
    let revision = {
        let store = Store::open(url, options()).await.unwrap();
        store.create(Key::new("pods", "dev", "kept"), pod("kept")).await.unwrap().revision
    };
    let store = Store::open(url, options()).await.unwrap();
    let got = store.get(&Key::new("pods", "dev", "kept")).await.unwrap();
    assert_eq!(rv(&got), revision);
    let next = store.create(Key::new("pods", "dev", "after"), pod("after")).await.unwrap();
    assert!(next.revision > revision, "the revision counter went backwards after reopening");
}

async fn refuses_an_unknown_schema(url: &str) {
    Store::open(url, options()).await.unwrap();
    let mut conn = sqlx::AnyConnection::connect(url).await.unwrap();
    // A migration this build does not know, as a newer Kapsel would leave it.
    let checksum = if url.starts_with("sqlite:") { "x'00'" } else { "'\\x00'::bytea" };
    let insert = format!(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) VALUES (99990101000000, 'from a newer kapsel', TRUE, {checksum}, 0)"
    );
    conn.execute(sqlx::AssertSqlSafe(insert)).await.unwrap();
    drop(conn);
    match Store::open(url, options()).await {
        Err(StoreError::Schema(e)) => assert!(e.to_string().contains("99990101000000"), "{e}"),
        other => panic!("expected a schema error, got {other:?}"),
    }
}

async fn blobs_are_stored_once_by_digest(url: &str) {
    let store = Store::open(url, options()).await.unwrap();
    let data: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    assert!(store.put_blob("sha256:abc", &data).await.unwrap());
    assert!(!store.put_blob("sha256:abc", &data).await.unwrap(), "the second put of a digest stores nothing");
    assert_eq!(store.get_blob("sha256:abc").await.unwrap(), data);
    assert!(matches!(store.get_blob("sha256:missing").await, Err(StoreError::NotFound)));
}

/// An atomic write commits every op at consecutive revisions, or none of
/// them when one fails — also inside a group-commit batch beside other
/// writes, which are unaffected.
async fn atomic_writes_apply_all_or_nothing(url: &str) {
    let store = Store::open(url, options()).await.unwrap();
    let counter = Key::new("counters", "dev", "pods");
    let base = store.create(counter.clone(), json!({"metadata": {"name": "pods"}, "used": 0})).await.unwrap();

    let changes = store
        .write(WriteOp::Atomic(vec![
            WriteOp::Create { key: Key::new("pods", "dev", "a"), object: pod("a") },
            WriteOp::Update {
                key: counter.clone(),
                object: json!({"metadata": {"name": "pods"}, "used": 1}),
                expected_revision: Some(base.revision),
            },
        ]))
        .await
        .unwrap();
    assert_eq!(changes.len(), 2);
    assert_eq!(changes[1].revision, changes[0].revision + 1);
    assert_eq!(store.get(&counter).await.unwrap()["used"], 1);

    // The second op's precondition fails: the pod created first is undone.
    let stale = WriteOp::Atomic(vec![
        WriteOp::Create { key: Key::new("pods", "dev", "b"), object: pod("b") },
        WriteOp::Update {
            key: counter.clone(),
            object: json!({"metadata": {"name": "pods"}, "used": 2}),
            expected_revision: Some(base.revision),
        },
    ]);
    let beside = store.create(Key::new("pods", "dev", "c"), pod("c"));
    let (stale, beside) = tokio::join!(store.write(stale), beside);
    match stale {
        Err(StoreError::AtomicOpFailed { index: 1, error }) => assert!(matches!(*error, StoreError::Conflict { .. })),
        other => panic!("expected the second op to fail, got {other:?}"),
    }
    beside.unwrap();
    assert!(matches!(store.get(&Key::new("pods", "dev", "b")).await, Err(StoreError::NotFound)));
    assert_eq!(store.get(&counter).await.unwrap()["used"], 1);

    // Revisions stay dense: the undone ops used none.
    let next = store.create(Key::new("pods", "dev", "d"), pod("d")).await.unwrap();
    let listing = store.list("pods", Some("dev")).await.unwrap();
    assert_eq!(listing.objects.len(), 3);
    assert_eq!(listing.revision, next.revision);
    let mut watch = store.watch("pods", Some("dev"), base.revision).await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(next_change(&mut watch).await.key.name);
    }
    assert_eq!(seen, ["a", "c", "d"]);
    // Reopened from disk, the same.
    drop(store);
    let reopened = Store::open(url, options()).await.unwrap();
    assert_eq!(reopened.get(&counter).await.unwrap()["used"], 1);
    assert!(matches!(reopened.get(&Key::new("pods", "dev", "b")).await, Err(StoreError::NotFound)));
}

/// Adjustments queued at once apply one after the other on what the ones
/// before them stored, inside the group commit: 60 concurrent "take one if
/// fewer than 40 are taken" give exactly 40, each with its object.
async fn adjustments_apply_one_after_another(url: &str) {
    let store = Store::open(url, options()).await.unwrap();
    let counter = Key::new("counters", "dev", "seats");
    store.create(counter.clone(), json!({"metadata": {"name": "seats"}, "taken": 0, "limit": 40})).await.unwrap();
    let take_one = Adjustment(std::sync::Arc::new(|stored: &Value| {
        let taken = stored["taken"].as_i64().unwrap_or_default();
        if taken >= stored["limit"].as_i64().unwrap_or_default() {
            return Err(format!("all {taken} seats are taken"));
        }
        let mut next = stored.clone();
        next["taken"] = json!(taken + 1);
        Ok(next)
    }));
    let attempts = (0..60).map(|i| {
        let (store, counter, take_one) = (store.clone(), counter.clone(), take_one.clone());
        async move {
            let name = format!("guest-{i}");
            store
                .write(WriteOp::Atomic(vec![
                    WriteOp::Create { key: Key::new("guests", "dev", &name), object: json!({"metadata": {"name": name}}) },
                    WriteOp::Adjust { key: counter, adjust: take_one },
                ]))
                .await
        }
    });
    let results = futures::future::join_all(attempts).await;
    let admitted = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(admitted, 40);
    for refused in results.iter().filter_map(|r| r.as_ref().err()) {
        match refused {
            StoreError::AtomicOpFailed { index: 1, error } => {
                assert!(matches!(&**error, StoreError::Refused(reason) if reason == "all 40 seats are taken"), "{error:?}")
            }
            other => panic!("expected the adjustment to refuse, got {other:?}"),
        }
    }
    assert_eq!(store.get(&counter).await.unwrap()["taken"], 40);
    assert_eq!(store.list("guests", Some("dev")).await.unwrap().objects.len(), 40);
    // An adjustment that changes nothing writes nothing.
    let unchanged = store
        .write(WriteOp::Atomic(vec![WriteOp::Adjust {
            key: counter.clone(),
            adjust: Adjustment(std::sync::Arc::new(|v: &Value| Ok(v.clone()))),
        }]))
        .await
        .unwrap();
    assert!(unchanged.is_empty());
}

/// Writes queued at once are committed in one transaction (group commit);
/// each sees what those before it wrote — an atomic write that failed
/// included, as undone — and every change reaches the log, in order, with
/// the object before a modification.
async fn writes_queued_together_see_each_other_and_are_all_logged(url: &str) {
    let store = Store::open(url, options()).await.unwrap();
    let (start, _) = store.revisions().await.unwrap();
    let counter = Key::new("counters", "dev", "c");
    let base = store.create(counter.clone(), json!({"metadata": {"name": "c"}, "n": 0})).await.unwrap();
    store.create(Key::new("pods", "dev", "taken"), pod("taken")).await.unwrap();
    store.create(Key::new("namespaces", "", "gone"), json!({"metadata": {"name": "gone"}})).await.unwrap();
    store.create(Key::new("pods", "gone", "inside"), pod("inside")).await.unwrap();

    // Created, changed and deleted within one atomic write.
    let short_lived = Key::new("pods", "dev", "short-lived");
    let lived = WriteOp::Atomic(vec![
        WriteOp::Create { key: short_lived.clone(), object: pod("short-lived") },
        WriteOp::Update { key: short_lived.clone(), object: pod("short-lived"), expected_revision: None },
        WriteOp::Delete { key: short_lived.clone(), expected_revision: None },
    ]);
    // Changes the counter, then fails: the counter is back at `base` for the writes after it.
    let undone = WriteOp::Atomic(vec![
        WriteOp::Update { key: counter.clone(), object: json!({"metadata": {"name": "c"}, "n": 99}), expected_revision: None },
        WriteOp::Create { key: Key::new("pods", "dev", "taken"), object: pod("taken") },
    ]);
    let guarded = WriteOp::Update {
        key: counter.clone(),
        object: json!({"metadata": {"name": "c"}, "n": 1}),
        expected_revision: Some(base.revision),
    };
    let after_namespace = WriteOp::Update { key: Key::new("pods", "gone", "inside"), object: pod("inside"), expected_revision: None };
    let creates = (0..300).map(|i| {
        let name = format!("many-{i}");
        store.create(Key::new("pods", "dev", &name), pod(&name))
    });
    let (lived, undone, guarded, namespace, after_namespace, created) = tokio::join!(
        store.write(lived),
        store.write(undone),
        store.write(guarded),
        store.write(WriteOp::DeleteNamespace { key: Key::new("namespaces", "", "gone"), expected_revision: None }),
        store.write(after_namespace),
        futures::future::join_all(creates),
    );
    assert_eq!(lived.unwrap().len(), 3);
    assert!(matches!(store.get(&short_lived).await, Err(StoreError::NotFound)));
    assert!(matches!(undone, Err(StoreError::AtomicOpFailed { index: 1, .. })), "{undone:?}");
    let guarded = guarded.expect("the failed atomic write left the counter at its revision");
    assert_eq!(guarded[0].previous.as_ref().unwrap()["n"], 0);
    assert_eq!(store.get(&counter).await.unwrap()["n"], 1);
    assert_eq!(namespace.unwrap().len(), 2);
    assert!(matches!(after_namespace, Err(StoreError::NotFound)), "{after_namespace:?}");
    assert!(created.iter().all(Result::is_ok));

    // The log, read back from the database by a watch from before it all, holds every change in order.
    let mut replay = store.watch("counters", None, start).await.unwrap();
    let mut counters = Vec::new();
    for _ in 0..2 {
        let change = next_change(&mut replay).await;
        counters.push((change.change_type, change.object["n"].clone(), change.previous.map(|p| p["n"].clone())));
    }
    assert_eq!(counters, [(ChangeType::Added, json!(0), None), (ChangeType::Modified, json!(1), Some(json!(0)))]);
    // taken, inside, short-lived ×3, inside's deletion with its namespace, 300 creates.
    let mut pods = store.watch("pods", None, start).await.unwrap();
    let mut last = start;
    let mut kinds = HashSet::new();
    for _ in 0..2 + 3 + 1 + 300 {
        let change = next_change(&mut pods).await;
        assert!(change.revision > last, "log out of order: {} after {last}", change.revision);
        assert_eq!(rv(&change.object), change.revision, "{change:?}");
        assert_eq!(change.previous.is_some(), change.change_type == ChangeType::Modified, "{change:?}");
        kinds.insert(change.change_type.as_str());
        last = change.revision;
    }
    assert_eq!(kinds.len(), 3);
}
