//! Who may do what through the API, in-process: requests without a valid
//! bearer token are 401; tenants act within their roles per namespace
//! (`edit`, `view`, none), read but do not write their quotas, and see only
//! their namespaces in lists and watches across namespaces; Tokens show
//! their secret once, keep only its hash, are validated, and revoke on delete.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use axum::body::Body;
use common::*;
use http::{Method, header};
use kapsel_server::auth::hash_secret;
use serde_json::json;

// ---------------------------------------------------------------------------
// Authentication
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_a_valid_token_are_unauthorized() {
    let api = Api::start().await;
    for path in ["/api/v1/namespaces/dev/pods", "/api", "/version", "/apis/kapsel.io/v1alpha1/tokens"] {
        let reply = api.call(None, Method::GET, path, &[], Body::empty()).await;
        reply.failure(401, "Unauthorized").mentions(&["Unauthorized"]);
        assert!(reply.headers.contains_key(header::WWW_AUTHENTICATE), "{path}: 401 without WWW-Authenticate");
    }
    let reply = api.call(Some("kpl_not-a-real-token"), Method::GET, "/api/v1/namespaces/dev/pods", &[], Body::empty()).await;
    reply.failure(401, "Unauthorized");
    let reply =
        api.call(None, Method::GET, "/api/v1/namespaces/dev/pods", &[("authorization", &format!("Basic {ADMIN}"))], Body::empty()).await;
    reply.failure(401, "Unauthorized");
    let reply = api.call(None, Method::GET, "/api/v1/namespaces/dev/pods", &[("authorization", "Bearer ")], Body::empty()).await;
    reply.failure(401, "Unauthorized");
    // Writes are refused too, and change nothing.
    let reply = api.call(None, Method::POST, &pods("dev"), &[("content-type", JSON)], pod("sneaky").to_string()).await;
    reply.failure(401, "Unauthorized");
    api.get(&pod_path("dev", "sneaky")).await.failure(404, "NotFound");
    // The admin token works.
    api.get("/api/v1/namespaces/dev/pods").await.ok(200);
}

// ---------------------------------------------------------------------------
// Authorization
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_act_within_their_roles() {
    let api = Api::start().await;
    api.create_pod("qa", pod("qa-pod")).await;
    api.create_pod("prod", pod("prod-pod")).await;
    api.create_pod("default", pod("default-pod")).await;

    // edit in dev: create, update, patch, delete.
    let reply = api.json_as(ALICE, Method::POST, &pods("dev"), Some(pod("dev-pod"))).await;
    reply.ok(201);
    let mut changed = reply.body.clone();
    changed["metadata"]["labels"] = json!({"by": "alice"});
    api.json_as(ALICE, Method::PUT, &pod_path("dev", "dev-pod"), Some(changed)).await.ok(200);
    let reply = api
        .call(
            Some(ALICE),
            Method::PATCH,
            &pod_path("dev", "dev-pod"),
            &[("content-type", MERGE_PATCH)],
            json!({"metadata": {"labels": {"v": "2"}}}).to_string(),
        )
        .await;
    reply.ok(200);
    api.json_as(ALICE, Method::POST, &pods("dev"), Some(pod("scratch"))).await.ok(201);
    api.json_as(ALICE, Method::DELETE, &pod_path("dev", "scratch"), None).await.ok(200);

    // view in qa: read, but not write.
    let reply = api.json_as(ALICE, Method::POST, &pods("qa"), Some(pod("nope"))).await;
    reply.failure(403, "Forbidden").mentions(&["alice", "create", "pods", "qa"]);
    api.get(&pod_path("qa", "nope")).await.failure(404, "NotFound");
    api.json_as(ALICE, Method::GET, &pod_path("qa", "qa-pod"), None).await.ok(200);
    assert_eq!(api.json_as(ALICE, Method::GET, &pods("qa"), None).await.names(), ["qa-pod"]);
    api.json_as(ALICE, Method::DELETE, &pod_path("qa", "qa-pod"), None)
        .await
        .failure(403, "Forbidden")
        .mentions(&["alice", "delete", "qa"]);
    api.get(&pod_path("qa", "qa-pod")).await.ok(200);

    // No role in prod: nothing, not even whether an object exists.
    api.json_as(ALICE, Method::GET, &pod_path("prod", "prod-pod"), None)
        .await
        .failure(403, "Forbidden")
        .mentions(&["alice", "get", "pods", "prod"]);
    api.json_as(ALICE, Method::GET, &pod_path("prod", "missing"), None).await.failure(403, "Forbidden");
    api.json_as(ALICE, Method::GET, &pods("prod"), None).await.failure(403, "Forbidden").mentions(&["list"]);
    let reply = api.call(Some(ALICE), Method::GET, &format!("{}?watch=true", pods("prod")), &[], Body::empty()).await;
    reply.failure(403, "Forbidden").mentions(&["watch"]);

    // Lists across namespaces show only hers.
    let reply = api.json_as(ALICE, Method::GET, "/api/v1/pods", None).await;
    reply.ok(200);
    assert_eq!(reply.qualified_names(), ["dev/dev-pod", "qa/qa-pod"]);
    let reply = api.json_as(ALICE, Method::GET, &format!("/api/v1/pods?fieldSelector={}", q("metadata.namespace=prod")), None).await;
    assert!(reply.status.as_u16() == 403 || reply.items().is_empty(), "prod pods leaked: {}", reply.text);
    let reply = api.json_as(ALICE, Method::GET, "/api/v1/namespaces", None).await;
    reply.ok(200);
    assert_eq!(reply.names(), ["dev", "qa"]);
    api.json_as(ALICE, Method::GET, "/api/v1/namespaces/dev", None).await.ok(200);
    api.json_as(ALICE, Method::GET, "/api/v1/namespaces/prod", None).await.failure(403, "Forbidden");
    api.json_as(ALICE, Method::POST, "/api/v1/namespaces", Some(json!({"metadata": {"name": "mine"}}))).await.failure(403, "Forbidden");
    api.json_as(ALICE, Method::DELETE, "/api/v1/namespaces/dev", None).await.failure(403, "Forbidden");
    api.get("/api/v1/namespaces/dev").await.ok(200);

    // Tokens are for IT admins only.
    api.json_as(ALICE, Method::GET, "/apis/kapsel.io/v1alpha1/tokens", None).await.failure(403, "Forbidden").mentions(&[
        "alice",
        "list",
        "tokens",
        "kapsel.io",
    ]);
    api.json_as(ALICE, Method::GET, "/apis/kapsel.io/v1alpha1/tokens/admin", None).await.failure(403, "Forbidden");
    api.json_as(
        ALICE,
        Method::POST,
        "/apis/kapsel.io/v1alpha1/tokens",
        Some(json!({"metadata": {"name": "mine"}, "spec": {"user": "alice", "admin": true}})),
    )
    .await
    .failure(403, "Forbidden");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_read_but_do_not_write_quotas() {
    let api = Api::start().await;
    let quota = json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "compute"}, "spec": {"hard": {"pods": "10", "requests.cpu": "4"}}});
    api.post("/api/v1/namespaces/dev/resourcequotas", quota.clone()).await.ok(201);
    api.post("/api/v1/namespaces/prod/resourcequotas", quota.clone()).await.ok(201);

    let mut mine = quota.clone();
    mine["metadata"]["name"] = json!("mine");
    api.json_as(ALICE, Method::POST, "/api/v1/namespaces/dev/resourcequotas", Some(mine)).await.failure(403, "Forbidden").mentions(&[
        "alice",
        "create",
        "resourcequotas",
        "dev",
    ]);
    let reply = api.json_as(ALICE, Method::GET, "/api/v1/namespaces/dev/resourcequotas/compute", None).await;
    reply.ok(200);
    assert_eq!(reply.body["spec"]["hard"]["pods"], "10");
    assert_eq!(api.json_as(ALICE, Method::GET, "/api/v1/namespaces/dev/resourcequotas", None).await.names(), ["compute"]);
    let reply = api
        .call(
            Some(ALICE),
            Method::PATCH,
            "/api/v1/namespaces/dev/resourcequotas/compute",
            &[("content-type", MERGE_PATCH)],
            json!({"spec": {"hard": {"pods": "1000"}}}).to_string(),
        )
        .await;
    reply.failure(403, "Forbidden");
    api.json_as(ALICE, Method::DELETE, "/api/v1/namespaces/dev/resourcequotas/compute", None).await.failure(403, "Forbidden");
    assert_eq!(api.get("/api/v1/namespaces/dev/resourcequotas/compute").await.body["spec"]["hard"]["pods"], "10");
    // Across namespaces, only hers.
    assert_eq!(api.json_as(ALICE, Method::GET, "/api/v1/resourcequotas", None).await.qualified_names(), ["dev/compute"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_watches_across_namespaces_see_only_theirs() {
    let api = Api::start().await;
    api.create_pod("prod", pod("old-prod")).await;
    api.create_pod("qa", pod("old-qa")).await;
    let mut watch = api.watch_as(ALICE, "/api/v1/pods?watch=true").await;
    watch.expect("ADDED", "old-qa").await;
    watch.assert_quiet().await;

    api.create_pod("prod", pod("new-prod")).await;
    api.create_pod("default", pod("new-default")).await;
    api.create_pod("dev", pod("new-dev")).await;
    let event = watch.next().await;
    assert_eq!(summary(&event), ("ADDED".to_string(), "dev/new-dev".to_string()));
    api.delete(&pod_path("prod", "old-prod")).await.ok(200);
    api.delete(&pod_path("qa", "old-qa")).await.ok(200);
    let event = watch.next().await;
    assert_eq!(summary(&event), ("DELETED".to_string(), "qa/old-qa".to_string()));
    watch.assert_quiet().await;

    // Resumed from a revision, the same filtering.
    let listed = api.json_as(ALICE, Method::GET, "/api/v1/pods", None).await;
    let mut resumed = api.watch_as(ALICE, &format!("/api/v1/pods?watch=true&resourceVersion={}", listed.rv())).await;
    api.create_pod("prod", pod("later-prod")).await;
    api.create_pod("qa", pod("later-qa")).await;
    assert_eq!(summary(&resumed.next().await), ("ADDED".to_string(), "qa/later-qa".to_string()));
    // And namespaces: only hers.
    let mut namespaces = api.watch_as(ALICE, "/api/v1/namespaces?watch=true").await;
    let seen: BTreeSet<String> = [namespaces.next().await, namespaces.next().await].iter().map(|e| summary(e).1).collect();
    assert_eq!(seen, BTreeSet::from(["/dev".to_string(), "/qa".to_string()]));
    namespaces.assert_quiet().await;
}

// ---------------------------------------------------------------------------
// Tokens
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_show_their_secret_once_and_revoke_on_delete() {
    let api = Api::start().await;
    let reply = api
        .post(
            "/apis/kapsel.io/v1alpha1/tokens",
            json!({
                "apiVersion": "kapsel.io/v1alpha1",
                "kind": "Token",
                "metadata": {"name": "bob"},
                "spec": {"user": "bob", "roles": [{"namespace": "dev", "role": "view"}], "secretHash": "sha256:chosen-by-client"},
                "status": {"token": "chosen-by-client"},
            }),
        )
        .await;
    reply.ok(201);
    let secret = reply.body["status"]["token"].as_str().expect("status.token in the create response").to_string();
    assert!(secret.starts_with("kpl_") && secret.len() > 40, "{secret}");
    assert_ne!(secret, "chosen-by-client");
    let hash = reply.body["spec"]["secretHash"].as_str().expect("spec.secretHash").to_string();
    assert_eq!(hash, hash_secret(&secret));
    assert!(!reply.text.contains("chosen-by-client"), "{}", reply.text);

    // The stored object keeps only the hash.
    let stored = api.get("/apis/kapsel.io/v1alpha1/tokens/bob").await;
    stored.ok(200);
    assert_eq!(stored.body["spec"]["secretHash"], hash.as_str());
    assert!(stored.body.pointer("/status/token").is_none(), "the secret was stored: {}", stored.text);
    assert!(!stored.text.contains(&secret));
    let listed = api.get("/apis/kapsel.io/v1alpha1/tokens").await;
    assert_eq!(listed.body["kind"], "TokenList");
    assert_eq!(listed.names(), ["admin", "alice", "bob"]);
    assert!(!listed.text.contains(&secret));

    // The secret authenticates on the next request, with bob's roles.
    let reply = api.json_as(&secret, Method::GET, &pods("dev"), None).await;
    reply.ok(200);
    api.json_as(&secret, Method::POST, &pods("dev"), Some(pod("x"))).await.failure(403, "Forbidden").mentions(&["bob", "create", "view"]);
    api.json_as(&secret, Method::GET, &pods("qa"), None).await.failure(403, "Forbidden");

    // The hash cannot be changed afterwards.
    let mut rehashed = stored.body.clone();
    rehashed["spec"]["secretHash"] = json!(hash_secret("something-else"));
    let reply = api.put("/apis/kapsel.io/v1alpha1/tokens/bob", rehashed).await;
    reply.failure(422, "Invalid").about("bob", "Token", "kapsel.io");
    assert_eq!(reply.cause_fields(), vec!["spec.secretHash"]);

    // Deleting the Token revokes it.
    let reply = api.delete("/apis/kapsel.io/v1alpha1/tokens/bob").await;
    reply.ok(200);
    assert_eq!(reply.body["metadata"]["name"], "bob");
    assert!(reply.body.pointer("/status/token").is_none());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let reply = api.json_as(&secret, Method::GET, &pods("dev"), None).await;
        if reply.status.as_u16() == 401 {
            reply.failure(401, "Unauthorized");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the deleted token still authenticates: {} {}", reply.status, reply.text);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Other tokens are unaffected.
    api.json_as(ALICE, Method::GET, &pods("dev"), None).await.ok(200);
    api.get(&pods("dev")).await.ok(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_validated() {
    let api = Api::start().await;
    let reply = api
        .post(
            "/apis/kapsel.io/v1alpha1/tokens",
            json!({"metadata": {"name": "t"}, "spec": {"user": " ", "roles": [{"namespace": "Not_OK", "role": "view"}]}}),
        )
        .await;
    reply.failure(422, "Invalid").about("t", "Token", "kapsel.io");
    let fields: BTreeSet<String> = reply.cause_fields().into_iter().collect();
    assert_eq!(fields, BTreeSet::from(["spec.user".to_string(), "spec.roles[0].namespace".to_string()]));
    let reply = api
        .post(
            "/apis/kapsel.io/v1alpha1/tokens",
            json!({"metadata": {"name": "t"}, "spec": {"user": "u", "roles": [{"namespace": "dev", "role": "god"}]}}),
        )
        .await;
    reply.failure(422, "Invalid");
    assert_eq!(reply.cause_fields().len(), 1);
    assert!(reply.cause_fields()[0].starts_with("spec.roles[0]"), "{:?}", reply.cause_fields());
    // Tokens are cluster-scoped: there is no namespaced URL for them.
    api.post("/apis/kapsel.io/v1alpha1/namespaces/dev/tokens", json!({"metadata": {"name": "t"}, "spec": {"user": "u"}}))
        .await
        .failure(404, "NotFound");
}
