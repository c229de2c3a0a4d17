//! The server's in-memory copies follow the store, not its own request
//! handlers: a token, a token's revocation, admission policies and
//! plug-ins written straight into the store (as a controller, a template
//! or another tool holding the store would) take effect; a follower that
//! fell behind the change log is given the kind whole again.

mod common;

use std::time::{Duration, Instant};

use common::*;
use http::Method;
use kapsel_api::kinds::admission_policy::{ADMISSION_POLICY, CLUSTER_ADMISSION_POLICY};
use kapsel_api::kinds::plugin::PLUGIN;
use kapsel_api::kinds::token::TOKEN;
use kapsel_store::Key;
use serde_json::{Value, json};

/// How soon a change written into the store must be in force.
const SOON: Duration = Duration::from_secs(1);

/// Polls `check` until it holds or [`SOON`] has passed; whether it held.
async fn within_a_second(check: impl AsyncFnMut() -> bool) -> bool {
    within(SOON, check).await
}

/// Polls `check` until it holds or `time` has passed; whether it held.
async fn within(time: Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + time;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_and_its_revocation_written_into_the_store_take_effect() {
    let api = Api::start().await;
    let secret = "kpl_straight-into-the-store";
    let bob = || api.json_as(secret, Method::GET, "/api/v1/namespaces/dev/pods", None);
    assert_eq!(bob().await.status, 401);

    store_token(&api.store, "bob", secret, json!({"user": "bob", "roles": [{"namespace": "dev", "role": "view"}]})).await;
    assert!(within_a_second(async || bob().await.status == 200).await, "a token stored directly is not accepted");

    api.store.delete(Key::new(TOKEN.store_key(), "", "bob"), None).await.expect("delete the token");
    assert!(within_a_second(async || bob().await.status == 401).await, "a token deleted directly still works");
}

fn deny_all_pods(kind: &str, namespace: Option<&str>, name: &str) -> Value {
    let mut metadata = json!({"name": name, "uid": format!("uid-{name}"), "creationTimestamp": "2024-01-01T00:00:00Z", "generation": 1});
    if let Some(namespace) = namespace {
        metadata["namespace"] = json!(namespace);
    }
    json!({
        "apiVersion": "kapsel.io/v1alpha1",
        "kind": kind,
        "metadata": metadata,
        "spec": {
            "enforcement": "deny",
            "match": {"kinds": ["Pod"]},
            "rego": format!("package {}\nimport rego.v1\ndeny contains \"{name} denies every pod\" if true", name.replace('-', "_")),
        },
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_written_into_the_store_come_into_force_and_leave_it() {
    let api = Api::start().await;
    // The sandbox tenants' policies run in is compiled once per process, with the first of them: not what is timed here.
    tokio::task::spawn_blocking(kapsel_plugins::rego::prepare).await.unwrap().unwrap();
    let mut n = 0;
    let mut create_pod = async || {
        n += 1;
        api.post(&pods("dev"), pod(&format!("p{n}"))).await
    };
    assert_eq!(create_pod().await.status, 201);

    for (resource, namespace, name) in [(&CLUSTER_ADMISSION_POLICY, None, "it-stored"), (&ADMISSION_POLICY, Some("dev"), "tenant-stored")] {
        let key = Key::new(resource.store_key(), namespace.unwrap_or_default(), name);
        api.store.create(key.clone(), deny_all_pods(resource.kind, namespace, name)).await.expect("store a policy");
        let denied = within_a_second(async || {
            let reply = create_pod().await;
            reply.status == 403 && reply.message().contains(&format!("{name} denies every pod"))
        })
        .await;
        assert!(denied, "{} {name} stored directly is not in force", resource.kind);

        api.store.delete(key, None).await.expect("delete the policy");
        assert!(
            within_a_second(async || create_pod().await.status == 201).await,
            "{} {name} deleted directly is still in force",
            resource.kind
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_written_into_the_store_is_loaded_and_a_deleted_one_stops() {
    let api = Api::start().await;
    let driver_of = async |namespace: &str| {
        let reply = api.post("/api/v1/namespaces", json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})).await;
        reply.ok(201);
        reply.body.pointer("/metadata/annotations/network.kapsel.io~1driver").and_then(Value::as_str).map(str::to_string)
    };
    assert_eq!(driver_of("before").await, None, "no network driver yet");

    // What an upload stores, written by hand: the component's bytes, then the object pointing at them.
    let bytes = kapsel_plugins::defaults::by_name("namespace-ipam").expect("the default network driver is embedded");
    let digest = digest_of(bytes);
    api.store.put_blob(&digest, bytes).await.expect("store the component");
    let plugin = json!({
        "apiVersion": PLUGIN.api_version(),
        "kind": PLUGIN.kind,
        "metadata": {"name": "ipam", "uid": "uid-ipam", "creationTimestamp": "2024-01-01T00:00:00Z", "generation": 1},
        "spec": {"world": "network-driver", "digest": digest},
    });
    let key = Key::new(PLUGIN.store_key(), "", "ipam");
    api.store.create(key.clone(), plugin).await.expect("store the plug-in");
    // Loading compiles the component (not cached yet): given longer than a second.
    let mut n = 0;
    let loaded = within(PATIENCE, async || {
        n += 1;
        driver_of(&format!("with-{n}")).await.as_deref() == Some("ipam")
    })
    .await;
    assert!(loaded, "a plug-in stored directly is not active");

    api.store.delete(key, None).await.expect("delete the plug-in");
    let stopped = within(SOON, async || {
        n += 1;
        driver_of(&format!("after-{n}")).await.is_none()
    })
    .await;
    assert!(stopped, "a plug-in deleted directly is still active");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_that_fell_behind_the_change_log_gets_a_new_listing() {
    use futures::StreamExt;
    use kapsel_server::reflector::{Event, follow};
    use kapsel_store::{Store, StoreOptions};

    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("k.db").display());
    let options = StoreOptions { compaction_interval: None, retained_changes: 2, ..Default::default() };
    let store = Store::open(&url, options).await.unwrap();
    let token = |name: &str| json!({"apiVersion": "kapsel.io/v1alpha1", "kind": "Token", "metadata": {"name": name}, "spec": {}});
    let first = store.create(Key::new(TOKEN.store_key(), "", "t0"), token("t0")).await.unwrap().revision;
    for n in 1..6 {
        store.create(Key::new(TOKEN.store_key(), "", format!("t{n}")), token(&format!("t{n}"))).await.unwrap();
    }
    store.compact().await.unwrap();

    // From a revision the change log no longer holds: the whole kind, as of now.
    let mut events = follow(store.clone(), &TOKEN, Some(first));
    let Some(Event::Listed { objects, revision }) = tokio::time::timeout(SOON, events.next()).await.unwrap() else {
        panic!("a follower behind the change log is not given a listing");
    };
    assert_eq!(objects.len(), 6);
    // Then the changes after it, as they come.
    store.delete(Key::new(TOKEN.store_key(), "", "t3"), None).await.unwrap();
    let Some(Event::Changed(change)) = tokio::time::timeout(SOON, events.next()).await.unwrap() else {
        panic!("a change after the listing is not followed");
    };
    assert!(change.revision > revision && change.key.name == "t3");

    // Without a revision, following starts with a listing too.
    let mut fresh = follow(store.clone(), &TOKEN, None);
    let Some(Event::Listed { objects, .. }) = tokio::time::timeout(SOON, fresh.next()).await.unwrap() else {
        panic!("following from nothing does not start with a listing");
    };
    assert_eq!(objects.len(), 5);
}
