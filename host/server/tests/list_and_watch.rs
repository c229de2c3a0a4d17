//! Reading collections through the API, in-process: lists (label and field
//! selectors, across namespaces, the list's resourceVersion), watches
//! (resumed after a resourceVersion or started from the current objects,
//! filtered by selectors with objects modified into and out of them, ended
//! by `timeoutSeconds`, a compacted revision or the server stopping, the
//! watch-list bookmark) and Table output for `kubectl get`.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use axum::body::Body;
use common::*;
use http::Method;
use serde_json::json;

// ---------------------------------------------------------------------------
// List
// ---------------------------------------------------------------------------

/// `a` (app=web, env=dev, node-1), `b` (app=web, env=qa, tier=front, node-2),
/// `c` (app=db, env=prod), `d` (no labels) in `dev`; `e` (app=web) in `qa`.
async fn selector_fixture(api: &Api) {
    let mut a = labelled_pod("a", json!({"app": "web", "env": "dev"}));
    a["spec"]["nodeName"] = json!("node-1");
    let mut b = labelled_pod("b", json!({"app": "web", "env": "qa", "tier": "front"}));
    b["spec"]["nodeName"] = json!("node-2");
    api.create_pod("dev", a).await;
    api.create_pod("dev", b).await;
    api.create_pod("dev", labelled_pod("c", json!({"app": "db", "env": "prod"}))).await;
    api.create_pod("dev", pod("d")).await;
    api.create_pod("qa", labelled_pod("e", json!({"app": "web"}))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_with_label_selectors() {
    let api = Api::start().await;
    selector_fixture(&api).await;
    let cases: &[(&str, &[&str])] = &[
        ("", &["a", "b", "c", "d"]),
        ("app=web", &["a", "b"]),
        ("app==web", &["a", "b"]),
        ("app!=web", &["c", "d"]),
        ("env in (dev,qa)", &["a", "b"]),
        ("env in (dev, qa)", &["a", "b"]),
        ("env notin (dev,qa)", &["c", "d"]),
        ("tier", &["b"]),
        ("!tier", &["a", "c", "d"]),
        ("app=web,!tier", &["a"]),
        ("app=web,env=qa", &["b"]),
        ("app=nothing", &[]),
    ];
    for (selector, expected) in cases {
        let reply = api.get(&format!("{}?labelSelector={}", pods("dev"), q(selector))).await;
        reply.ok(200);
        assert_eq!(reply.names(), *expected, "labelSelector={selector:?}");
    }
    for bad in ["app in web", "bad key=1", "app=(", "a=b,,c", "env in (dev"] {
        let reply = api.get(&format!("{}?labelSelector={}", pods("dev"), q(bad))).await;
        reply.failure(400, "BadRequest").mentions(&["unable to parse selector"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_with_field_selectors() {
    let api = Api::start().await;
    selector_fixture(&api).await;
    let cases: &[(&str, &str, &[&str])] = &[
        ("dev", "metadata.name=a", &["dev/a"]),
        ("dev", "metadata.name!=a", &["dev/b", "dev/c", "dev/d"]),
        ("dev", "spec.nodeName=node-1", &["dev/a"]),
        ("dev", "spec.nodeName!=node-1", &["dev/b", "dev/c", "dev/d"]),
        ("dev", "spec.nodeName=", &["dev/c", "dev/d"]),
        ("dev", "spec.nodeName=node-2,metadata.name=b", &["dev/b"]),
        ("", "metadata.namespace=qa", &["qa/e"]),
        ("", "metadata.namespace!=dev", &["qa/e"]),
        ("", "metadata.name=a", &["dev/a"]),
    ];
    for (namespace, selector, expected) in cases {
        let collection = if namespace.is_empty() { "/api/v1/pods".to_string() } else { pods(namespace) };
        let reply = api.get(&format!("{collection}?fieldSelector={}", q(selector))).await;
        reply.ok(200);
        assert_eq!(reply.qualified_names(), *expected, "{collection} fieldSelector={selector:?}");
    }
    // Both selectors at once.
    let reply = api.get(&format!("/api/v1/pods?labelSelector={}&fieldSelector={}", q("app=web"), q("metadata.namespace=dev"))).await;
    assert_eq!(reply.qualified_names(), ["dev/a", "dev/b"]);
    for bad in ["spec.image=x", "metadata.name", "metadata.labels=x"] {
        let reply = api.get(&format!("{}?fieldSelector={}", pods("dev"), q(bad))).await;
        reply.failure(400, "BadRequest").mentions(&["unable to parse selector"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_across_namespaces_with_a_resource_version() {
    let api = Api::start().await;
    let empty = api.get("/api/v1/pods").await;
    empty.ok(200);
    assert_eq!(empty.body["kind"], "PodList");
    assert_eq!(empty.body["apiVersion"], "v1");
    assert!(empty.items().is_empty());
    let empty_revision: i64 = empty.rv().parse().expect("list resourceVersion is a number");

    let a = api.create_pod("dev", pod("a")).await;
    let b = api.create_pod("qa", pod("b")).await;
    let c = api.create_pod("prod", pod("c")).await;
    let all = api.get("/api/v1/pods").await;
    all.ok(200);
    assert_eq!(all.qualified_names(), ["dev/a", "prod/c", "qa/b"]);
    let list_revision: i64 = all.rv().parse().expect("list resourceVersion is a number");
    assert!(list_revision > empty_revision);
    for object in [&a, &b, &c] {
        assert!(list_revision >= revision(object), "the list's revision {list_revision} predates {object}");
    }
    // Items carry their own resourceVersions, as stored.
    for item in all.items() {
        let name = item["metadata"]["name"].as_str().unwrap().to_string();
        let single = api.get(&pod_path(item["metadata"]["namespace"].as_str().unwrap(), &name)).await;
        assert_eq!(single.body, item);
    }
    // One namespace only.
    let dev = api.get(&pods("dev")).await;
    assert_eq!(dev.qualified_names(), ["dev/a"]);
    assert_eq!(dev.body["kind"], "PodList");

    // Cluster-scoped kinds list at their collection.
    let namespaces = api.get("/api/v1/namespaces").await;
    assert_eq!(namespaces.body["kind"], "NamespaceList");
    assert_eq!(namespaces.names(), ["default", "dev", "prod", "qa"]);
}

// ---------------------------------------------------------------------------
// Watch
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_resumes_after_a_resource_version() {
    let api = Api::start().await;
    let a = api.create_pod("dev", pod("a")).await;
    let b = api.create_pod("dev", pod("b")).await;
    api.create_pod("qa", pod("elsewhere")).await;
    let modified = api.patch(&pod_path("dev", "a"), MERGE_PATCH, json!({"metadata": {"labels": {"v": "2"}}})).await;
    modified.ok(200);
    let deleted = api.delete(&pod_path("dev", "b")).await;
    deleted.ok(200);

    // From a's creation: b's creation, a's change, b's deletion, in order; then live events.
    let mut watch = api.watch(&format!("{}?watch=true&resourceVersion={}", pods("dev"), rv(&a))).await;
    let added = watch.expect("ADDED", "b").await;
    assert_eq!(rv(&added), rv(&b));
    let changed = watch.expect("MODIFIED", "a").await;
    assert_eq!(changed["metadata"]["labels"], json!({"v": "2"}));
    assert_eq!(rv(&changed), modified.rv());
    let removed = watch.expect("DELETED", "b").await;
    assert!(revision(&removed) > revision(&changed));
    watch.assert_quiet().await;
    let c = api.create_pod("dev", pod("c")).await;
    let live = watch.expect("ADDED", "c").await;
    assert_eq!(live, c);
    api.create_pod("qa", pod("other")).await;
    watch.assert_quiet().await;

    // From b's deletion on, only what came later.
    let mut later = api.watch(&format!("{}?watch=true&resourceVersion={}", pods("dev"), deleted.rv())).await;
    later.expect("ADDED", "c").await;
    later.assert_quiet().await;

    // From the current revision of a list: nothing until the next change.
    let listed = api.get(&pods("dev")).await;
    let mut fresh = api.watch(&format!("{}?watch=true&resourceVersion={}", pods("dev"), listed.rv())).await;
    fresh.assert_quiet().await;
    api.delete(&pod_path("dev", "c")).await.ok(200);
    fresh.expect("DELETED", "c").await;
    watch.expect("DELETED", "c").await;

    // A resourceVersion that is not a number is a bad request.
    api.get(&format!("{}?watch=true&resourceVersion=abc", pods("dev"))).await.failure(400, "BadRequest");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_without_a_resource_version_starts_with_the_current_objects() {
    let api = Api::start().await;
    api.create_pod("dev", pod("a")).await;
    api.create_pod("dev", pod("b")).await;
    api.create_pod("qa", pod("q")).await;
    let mut watch = api.watch(&format!("{}?watch=true", pods("dev"))).await;
    let first: BTreeSet<(String, String)> = [watch.next().await, watch.next().await].iter().map(summary).collect();
    assert_eq!(first, BTreeSet::from([("ADDED".to_string(), "dev/a".to_string()), ("ADDED".to_string(), "dev/b".to_string())]));
    watch.assert_quiet().await;
    api.create_pod("dev", pod("c")).await;
    watch.expect("ADDED", "c").await;

    // resourceVersion=0 means the same.
    let mut zero = api.watch(&format!("{}?watch=true&resourceVersion=0", pods("dev"))).await;
    let initial: BTreeSet<(String, String)> = [zero.next().await, zero.next().await, zero.next().await].iter().map(summary).collect();
    assert_eq!(initial.len(), 3);
    assert!(initial.iter().all(|(kind, _)| kind == "ADDED"));
    zero.assert_quiet().await;

    // Across all namespaces.
    let mut all = api.watch("/api/v1/pods?watch=1").await;
    let mut initial = BTreeSet::new();
    for _ in 0..4 {
        initial.insert(summary(&all.next().await).1);
    }
    assert_eq!(initial, BTreeSet::from(["dev/a", "dev/b", "dev/c", "qa/q"].map(String::from)));
    all.assert_quiet().await;

    // A single object, by name.
    let mut one = api.watch(&format!("{}?watch=true", pod_path("dev", "a"))).await;
    one.expect("ADDED", "a").await;
    one.assert_quiet().await;
    api.patch(&pod_path("dev", "b"), MERGE_PATCH, json!({"metadata": {"labels": {"x": "y"}}})).await.ok(200);
    api.patch(&pod_path("dev", "a"), MERGE_PATCH, json!({"metadata": {"labels": {"x": "y"}}})).await.ok(200);
    one.expect("MODIFIED", "a").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_with_a_label_selector() {
    let api = Api::start().await;
    api.create_pod("dev", labelled_pod("web-1", json!({"app": "web"}))).await;
    api.create_pod("dev", labelled_pod("db-1", json!({"app": "db"}))).await;
    let mut watch = api.watch(&format!("{}?watch=true&labelSelector={}", pods("dev"), q("app=web"))).await;
    watch.expect("ADDED", "web-1").await;
    watch.assert_quiet().await;

    api.create_pod("dev", labelled_pod("db-2", json!({"app": "db"}))).await;
    api.create_pod("dev", labelled_pod("web-2", json!({"app": "web"}))).await;
    watch.expect("ADDED", "web-2").await;

    // Modified out of the selection: DELETED.
    api.patch(&pod_path("dev", "web-1"), MERGE_PATCH, json!({"metadata": {"labels": {"app": "db"}}})).await.ok(200);
    watch.expect("DELETED", "web-1").await;
    // Changes to objects outside the selection are not sent.
    api.patch(&pod_path("dev", "web-1"), MERGE_PATCH, json!({"metadata": {"labels": {"more": "x"}}})).await.ok(200);
    api.delete(&pod_path("dev", "db-2")).await.ok(200);
    api.patch(&pod_path("dev", "web-2"), MERGE_PATCH, json!({"metadata": {"labels": {"more": "x"}}})).await.ok(200);
    watch.expect("MODIFIED", "web-2").await;
    api.delete(&pod_path("dev", "web-2")).await.ok(200);
    watch.expect("DELETED", "web-2").await;
    watch.assert_quiet().await;

    // A field selector filters a watch as well.
    let mut by_name = api.watch(&format!("{}?watch=true&fieldSelector={}", pods("dev"), q("metadata.name=db-1"))).await;
    by_name.expect("ADDED", "db-1").await;
    api.patch(&pod_path("dev", "web-1"), MERGE_PATCH, json!({"metadata": {"labels": {"again": "x"}}})).await.ok(200);
    api.patch(&pod_path("dev", "db-1"), MERGE_PATCH, json!({"metadata": {"labels": {"again": "x"}}})).await.ok(200);
    by_name.expect("MODIFIED", "db-1").await;

    // An invalid selector is refused before the stream starts.
    api.get(&format!("{}?watch=true&labelSelector={}", pods("dev"), q("app in web"))).await.failure(400, "BadRequest");
}

/// In Kubernetes a watch with a selector compares each change's previous and
/// new object: one that starts matching arrives as `ADDED` (the watcher has
/// never seen it), and one that stops matching as `DELETED` carrying the
/// object as the watcher last saw it (still matching), at the new resourceVersion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_with_a_label_selector_adds_objects_modified_into_it() {
    let api = Api::start().await;
    api.create_pod("dev", labelled_pod("db-1", json!({"app": "db"}))).await;
    let mut watch = api.watch(&format!("{}?watch=true&labelSelector={}", pods("dev"), q("app=web"))).await;
    watch.assert_quiet().await;
    api.patch(&pod_path("dev", "db-1"), MERGE_PATCH, json!({"metadata": {"labels": {"app": "web"}}})).await.ok(200);
    watch.expect("ADDED", "db-1").await;
    api.patch(&pod_path("dev", "db-1"), MERGE_PATCH, json!({"metadata": {"labels": {"v": "2"}}})).await.ok(200);
    watch.expect("MODIFIED", "db-1").await;
    let moved = api.patch(&pod_path("dev", "db-1"), MERGE_PATCH, json!({"metadata": {"labels": {"app": "db"}}})).await;
    moved.ok(200);
    let gone = watch.expect("DELETED", "db-1").await;
    assert_eq!(gone["metadata"]["labels"], json!({"app": "web", "v": "2"}), "the DELETED object is the last one that matched");
    assert_eq!(rv(&gone), moved.rv());
}

/// A watch resumed from a resourceVersion must also turn "modified out of
/// the selection" into `DELETED`: the client saw the object in its list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumed_watch_with_a_label_selector_deletes_objects_modified_out_of_it() {
    let api = Api::start().await;
    api.create_pod("dev", labelled_pod("web-1", json!({"app": "web"}))).await;
    let listed = api.get(&format!("{}?labelSelector={}", pods("dev"), q("app=web"))).await;
    assert_eq!(listed.names(), ["web-1"]);
    let mut watch = api.watch(&format!("{}?watch=true&labelSelector={}&resourceVersion={}", pods("dev"), q("app=web"), listed.rv())).await;
    api.patch(&pod_path("dev", "web-1"), MERGE_PATCH, json!({"metadata": {"labels": {"app": "db"}}})).await.ok(200);
    watch.expect("DELETED", "web-1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_ends_after_timeout_seconds() {
    let api = Api::start().await;
    api.create_pod("dev", pod("a")).await;
    let started = tokio::time::Instant::now();
    let mut watch = api.watch(&format!("{}?watch=true&timeoutSeconds=1", pods("dev"))).await;
    watch.expect("ADDED", "a").await;
    match watch.poll(Duration::from_secs(5)).await {
        Next::End => {}
        other => panic!("expected the watch to end, got {other:?}"),
    }
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(5), "ended after {elapsed:?}");
    api.get(&format!("{}?watch=true&timeoutSeconds=soon", pods("dev"))).await.failure(400, "BadRequest");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_from_a_compacted_resource_version_is_expired() {
    let api = Api::start().await;
    let a = api.create_pod("dev", pod("a")).await;
    api.create_pod("dev", pod("b")).await;
    let c = api.create_pod("dev", pod("c")).await;
    let store = api.store.clone();
    store.compact_to(revision(&c) - 1).await.expect("compact");

    let reply = api.get(&format!("{}?watch=true&resourceVersion={}", pods("dev"), rv(&a))).await;
    reply.failure(410, "Expired").mentions(&["too old resource version", &rv(&a)]);
    let reply = api.get(&format!("/api/v1/pods?watch=true&resourceVersion={}", rv(&a))).await;
    reply.failure(410, "Expired");

    // At the horizon and later still works; so does a fresh watch.
    let mut watch = api.watch(&format!("{}?watch=true&resourceVersion={}", pods("dev"), revision(&c) - 1)).await;
    watch.expect("ADDED", "c").await;
    let mut fresh = api.watch(&format!("{}?watch=true", pods("dev"))).await;
    let names: BTreeSet<String> = [fresh.next().await, fresh.next().await, fresh.next().await].iter().map(|e| summary(e).1).collect();
    assert_eq!(names, BTreeSet::from(["dev/a", "dev/b", "dev/c"].map(String::from)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_end_when_the_server_stops() {
    let api = Api::start().await;
    api.create_pod("dev", pod("a")).await;
    let mut watch = api.watch(&format!("{}?watch=true", pods("dev"))).await;
    watch.expect("ADDED", "a").await;
    watch.assert_quiet().await;
    api.stop.send(true).expect("the server listens for the stop");
    match watch.poll(Duration::from_secs(5)).await {
        Next::End => {}
        other => panic!("expected the watch to end on shutdown, got {other:?}"),
    }
}

/// client-go's watch-list (kubectl's `delete --wait`, `wait`) needs the bookmark that ends the initial events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_list_ends_its_initial_events_with_a_bookmark() {
    let api = Api::start().await;
    api.create_pod("dev", pod("a")).await;
    let list_rv = api.get(&pods("dev")).await.rv();
    let path = format!("{}?watch=true&sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan", pods("dev"));
    let mut watch = api.watch(&path).await;
    assert_eq!(summary(&watch.next().await), ("ADDED".to_string(), "dev/a".to_string()));
    let bookmark = watch.next().await;
    assert_eq!(bookmark["type"], "BOOKMARK", "{bookmark}");
    assert_eq!(bookmark["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"], "true");
    assert_eq!(bookmark["object"]["metadata"]["resourceVersion"], list_rv.as_str());
    api.create_pod("dev", pod("b")).await;
    assert_eq!(summary(&watch.next().await), ("ADDED".to_string(), "dev/b".to_string()));
}

// ---------------------------------------------------------------------------
// Tables
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_output_for_list_and_get() {
    let api = Api::start().await;
    let mut a = pod("a");
    a["spec"]["nodeName"] = json!("node-1");
    api.create_pod("dev", a).await;
    api.create_pod("dev", pod("b")).await;

    let reply = api.call(Some(ADMIN), Method::GET, &pods("dev"), &[("accept", TABLE)], Body::empty()).await;
    reply.ok(200);
    let table = &reply.body;
    assert_eq!(table["kind"], "Table");
    assert_eq!(table["apiVersion"], "meta.k8s.io/v1");
    assert!(table["metadata"]["resourceVersion"].as_str().is_some_and(|v| v.parse::<i64>().is_ok()), "{table}");
    let columns: Vec<&str> =
        table["columnDefinitions"].as_array().expect("columnDefinitions").iter().map(|c| c["name"].as_str().unwrap()).collect();
    // Kubernetes' order: Age after the default columns, then the wide ones.
    assert_eq!(columns, ["Name", "Ready", "Status", "Restarts", "Age", "IP", "Node"]);
    for definition in table["columnDefinitions"].as_array().unwrap() {
        assert!(definition["type"].is_string() && definition["priority"].is_number(), "{definition}");
    }
    let rows = table["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 2);
    let mut names = Vec::new();
    for row in rows {
        let cells = row["cells"].as_array().expect("cells");
        assert_eq!(cells.len(), columns.len(), "{row}");
        names.push(cells[0].as_str().unwrap().to_string());
        let status = columns.iter().position(|c| *c == "Status").unwrap();
        assert_eq!(cells[status], "Pending");
        let ready = columns.iter().position(|c| *c == "Ready").unwrap();
        assert_eq!(cells[ready], "0/1");
        let age = columns.iter().position(|c| *c == "Age").unwrap();
        assert!(cells[age].as_str().unwrap().ends_with('s'), "age: {row}");
        assert_eq!(row["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(row["object"]["metadata"]["name"], cells[0]);
    }
    names.sort();
    assert_eq!(names, ["a", "b"]);

    let reply = api.call(Some(ADMIN), Method::GET, &pod_path("dev", "a"), &[("accept", TABLE)], Body::empty()).await;
    reply.ok(200);
    assert_eq!(reply.body["kind"], "Table");
    assert_eq!(reply.body["columnDefinitions"].as_array().unwrap().len(), columns.len());
    let rows = reply.body["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["cells"][0], "a");
    let node = columns.iter().position(|c| c.eq_ignore_ascii_case("node")).expect("a Node column");
    assert_eq!(rows[0]["cells"][node], "node-1");

    // includeObject=Object embeds the whole object.
    let reply = api
        .call(Some(ADMIN), Method::GET, &format!("{}?includeObject=Object", pod_path("dev", "a")), &[("accept", TABLE)], Body::empty())
        .await;
    assert_eq!(reply.body["rows"][0]["object"]["kind"], "Pod");
    assert_eq!(reply.body["rows"][0]["object"]["spec"]["nodeName"], "node-1");

    // Namespaces: Name, Status, Age.
    let reply = api.call(Some(ADMIN), Method::GET, "/api/v1/namespaces", &[("accept", TABLE)], Body::empty()).await;
    let columns: Vec<&str> = reply.body["columnDefinitions"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(columns, ["Name", "Status", "Age"]);
    let rows: Vec<(String, String)> = reply.body["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["cells"][0].as_str().unwrap().to_string(), r["cells"][1].as_str().unwrap().to_string()))
        .collect();
    assert!(rows.contains(&("dev".to_string(), "Active".to_string())), "{rows:?}");

    // Without the Accept parameter, plain JSON.
    assert_eq!(api.get(&pods("dev")).await.body["kind"], "PodList");
}
