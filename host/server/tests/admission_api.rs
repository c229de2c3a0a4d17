//! Admission policies through the API, in-process: cluster policies (Rego
//! v0 and v1) decide the next request and can be made to warn, audit or go
//! without a restart; invalid Rego is refused and the version in force
//! stays; a namespace's policies are its owners' and stay in it; policy
//! reviews try one policy against an object and store nothing; audits, on
//! demand and periodic, record existing violations in the policy's status
//! and admitted violations as Events.

mod common;

use std::time::Duration;

use axum::body::Body;
use common::*;
use http::Method;
use serde_json::{Value, json};

const CLUSTER_POLICIES: &str = "/apis/kapsel.io/v1alpha1/clusteradmissionpolicies";

/// Gatekeeper's shape (Rego v0): the labels of `input.parameters.labels` are required.
const REQUIRED_LABELS_V0: &str = r#"package kapsel.requiredlabels

violation[{"msg": msg, "details": {"missing_labels": missing}}] {
  provided := {label | input.review.object.metadata.labels[label]}
  required := {label | label := input.parameters.labels[_]}
  missing := required - provided
  count(missing) > 0
  msg := sprintf("you must provide labels: %v", [missing])
}
"#;

fn required_labels(name: &str, enforcement: &str) -> Value {
    json!({"apiVersion": "kapsel.io/v1alpha1", "kind": "ClusterAdmissionPolicy", "metadata": {"name": name},
        "spec": {"rego": REQUIRED_LABELS_V0, "regoVersion": "v0", "enforcement": enforcement,
                 "parameters": {"labels": ["cost-center"]}, "match": {"kinds": ["Pod"], "operations": ["CREATE", "UPDATE"]}}})
}

// ---------------------------------------------------------------------------
// Policies
// ---------------------------------------------------------------------------

/// A policy takes effect on the next request, denies with every violated
/// policy's message, and can be changed to warn or removed without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_policies_decide_the_next_request() {
    let api = Api::start().await;
    let created = api.post(CLUSTER_POLICIES, required_labels("require-cost-center", "deny")).await;
    created.ok(201);
    assert_eq!(created.body["status"]["loaded"], true);

    let denied = api.post(&pods("dev"), pod("web")).await;
    denied.failure(403, "Forbidden");
    assert_eq!(denied.message(), r#"admission policy "require-cost-center" denied the request: you must provide labels: {"cost-center"}"#);
    // Tenants are judged alike; a dry run is judged and stores nothing.
    api.json_as(ALICE, Method::POST, &pods("dev"), Some(pod("web"))).await.failure(403, "Forbidden");
    let labelled = labelled_pod("web", json!({"cost-center": "42"}));
    api.post(&format!("{}?dryRun=All", pods("dev")), labelled.clone()).await.ok(201);
    api.get(&pod_path("dev", "web")).await.failure(404, "NotFound");
    api.post(&pods("dev"), labelled).await.ok(201);
    // Updates are reviewed too: removing the label is refused.
    api.patch(&pod_path("dev", "web"), MERGE_PATCH, json!({"metadata": {"labels": {"cost-center": null}}})).await.failure(403, "Forbidden");

    // Two violated policies: both are named.
    let mut second = required_labels("require-owner", "deny");
    second["spec"]["parameters"]["labels"] = json!(["owner"]);
    api.post(CLUSTER_POLICIES, second).await.ok(201);
    let both = api.post(&pods("dev"), pod("db")).await;
    both.failure(403, "Forbidden").mentions(&["require-cost-center", "require-owner", r#"{"owner"}"#]);

    // Warn: admitted, with the message as a Warning header.
    api.delete(&format!("{CLUSTER_POLICIES}/require-owner")).await.ok(200);
    api.patch(&format!("{CLUSTER_POLICIES}/require-cost-center"), MERGE_PATCH, json!({"spec": {"enforcement": "warn"}})).await.ok(200);
    let warned = api.post(&pods("dev"), pod("db")).await;
    warned.ok(201);
    let warning = warned.headers.get("warning").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    assert!(warning.contains("require-cost-center") && warning.contains("you must provide labels"), "{warning:?}");

    // Audit: admitted silently. Deleted: no longer consulted.
    api.patch(&format!("{CLUSTER_POLICIES}/require-cost-center"), MERGE_PATCH, json!({"spec": {"enforcement": "audit"}})).await.ok(200);
    let audited = api.post(&pods("dev"), pod("cache")).await;
    audited.ok(201);
    assert!(audited.headers.get("warning").is_none());
    api.patch(&format!("{CLUSTER_POLICIES}/require-cost-center"), MERGE_PATCH, json!({"spec": {"enforcement": "deny"}})).await.ok(200);
    api.post(&pods("dev"), pod("queue")).await.failure(403, "Forbidden");
    api.delete(&format!("{CLUSTER_POLICIES}/require-cost-center")).await.ok(200);
    api.post(&pods("dev"), pod("queue")).await.ok(201);
}

/// Rego that does not compile is refused with the line and column; the version in force stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_rego_is_refused_and_the_previous_version_stays() {
    let api = Api::start().await;
    api.post(CLUSTER_POLICIES, required_labels("labels", "deny")).await.ok(201);
    let broken = "package broken\n\ndeny contains msg if {\n  msg := \n}\n";
    let mut bad = required_labels("broken", "deny");
    bad["spec"]["rego"] = json!(broken);
    bad["spec"]["regoVersion"] = json!("v1");
    let refused = api.post(CLUSTER_POLICIES, bad).await;
    refused.failure(422, "Invalid");
    assert_eq!(refused.cause_fields(), ["spec.rego"]);
    assert!(refused.message().contains(":4:") || refused.message().contains(":5:"), "{}", refused.text);
    // v0 text declared as v1 does not parse either.
    api.patch(&format!("{CLUSTER_POLICIES}/labels"), MERGE_PATCH, json!({"spec": {"regoVersion": "v1"}})).await.failure(422, "Invalid");
    api.post(&pods("dev"), pod("web")).await.failure(403, "Forbidden");
    // Tenants read cluster policies but may not write them.
    api.json_as(ALICE, Method::GET, &format!("{CLUSTER_POLICIES}/labels"), None).await.ok(200);
    api.json_as(ALICE, Method::DELETE, &format!("{CLUSTER_POLICIES}/labels"), None).await.failure(403, "Forbidden");
}

/// A namespace owner's own policy applies in that namespace only; editors cannot change it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_policies_are_the_owners_and_stay_in_their_namespace() {
    let api = Api::start().await;
    let policy = json!({"apiVersion": "kapsel.io/v1alpha1", "kind": "AdmissionPolicy", "metadata": {"name": "no-latest"},
        "spec": {"rego": "package nolatest\ndeny contains sprintf(\"%s: no latest tags here\", [c.name]) if {\n  some c in input.review.object.spec.containers\n  endswith(c.image, \":latest\")\n}\n",
                 "match": {"kinds": ["Pod"], "namespaces": ["qa", "prod"]}}});
    let path = "/apis/kapsel.io/v1alpha1/namespaces/dev/admissionpolicies";
    // alice edits dev: she may read the namespace's policies, not write them.
    api.json_as(ALICE, Method::POST, path, Some(policy.clone())).await.failure(403, "Forbidden");
    api.post(path, policy).await.ok(201);
    api.json_as(ALICE, Method::GET, path, None).await.ok(200);
    let latest = |name: &str| {
        let mut pod = pod(name);
        pod["spec"]["containers"][0]["image"] = json!("app:latest");
        pod
    };
    let denied = api.post(&pods("dev"), latest("web")).await;
    denied.failure(403, "Forbidden");
    assert_eq!(denied.message(), r#"admission policy "no-latest" of namespace "dev" denied the request: app: no latest tags here"#);
    // Its match names other namespaces, but a namespace's policy never leaves it.
    api.post(&pods("prod"), latest("web")).await.ok(201);
}

// ---------------------------------------------------------------------------
// Reviews
// ---------------------------------------------------------------------------

/// A policy is tried against an object, stored or inline, and nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_reviews_evaluate_one_policy_against_an_object() {
    let api = Api::start().await;
    api.post(CLUSTER_POLICIES, required_labels("labels", "deny")).await.ok(201);
    let reviews = "/apis/kapsel.io/v1alpha1/policyreviews";
    let by_ref = |object: Value| json!({"apiVersion": "kapsel.io/v1alpha1", "kind": "PolicyReview", "spec": {"policyRef": {"name": "labels"}, "object": object}});
    // Tenants may test the policies they can read.
    let refused = api.json_as(ALICE, Method::POST, reviews, Some(by_ref(pod("web")))).await;
    refused.ok(201);
    assert_eq!(refused.body["status"]["allowed"], false, "{}", refused.text);
    assert_eq!(refused.body["status"]["violations"][0]["msg"], r#"you must provide labels: {"cost-center"}"#);
    assert_eq!(refused.body["status"]["violations"][0]["details"], json!({"missing_labels": ["cost-center"]}));
    let admitted = api.post(reviews, by_ref(labelled_pod("web", json!({"cost-center": "1"})))).await;
    admitted.ok(201);
    assert_eq!(admitted.body["status"]["allowed"], true);
    assert_eq!(admitted.body["status"]["violations"], json!([]));

    // Inline, whatever the object's kind (its match is not consulted), before it is saved.
    let mut inline = required_labels("draft", "warn");
    inline["spec"]["match"] = json!({"kinds": ["Node"]});
    let review = json!({"apiVersion": "kapsel.io/v1alpha1", "kind": "PolicyReview", "spec": {"policy": inline, "object": pod("web")}});
    let warned = api.post(reviews, review).await;
    warned.ok(201);
    assert_eq!(warned.body["status"]["allowed"], true, "warn admits");
    assert_eq!(warned.body["status"]["violations"].as_array().unwrap().len(), 1);
    api.get(&format!("{CLUSTER_POLICIES}/draft")).await.failure(404, "NotFound");
    // Only who could apply a policy may try one inline (evaluating Rego costs the server).
    let tenant_try = json!({"apiVersion": "kapsel.io/v1alpha1", "kind": "PolicyReview", "spec": {"policy": required_labels("x", "deny"), "object": pod("web")}});
    api.json_as(ALICE, Method::POST, reviews, Some(tenant_try)).await.failure(403, "Forbidden");

    // Broken inline Rego: 422 naming the field; a missing object too.
    let mut broken = required_labels("draft", "deny");
    broken["spec"]["rego"] = json!("package x\ndeny contains m if {\n  m := \n}");
    broken["spec"]["regoVersion"] = json!("v1");
    let bad = api
        .post(
            reviews,
            json!({"apiVersion": "kapsel.io/v1alpha1", "kind": "PolicyReview", "spec": {"policy": broken, "object": pod("web")}}),
        )
        .await;
    bad.failure(422, "Invalid");
    assert_eq!(bad.cause_fields(), ["spec.policy.spec.rego"]);
    let no_object = api
        .post(reviews, json!({"apiVersion": "kapsel.io/v1alpha1", "kind": "PolicyReview", "spec": {"policyRef": {"name": "labels"}}}))
        .await;
    no_object.failure(422, "Invalid");
    assert_eq!(no_object.cause_fields(), ["spec.object"]);
    let unknown =
        json!({"apiVersion": "kapsel.io/v1alpha1", "kind": "PolicyReview", "spec": {"policyRef": {"name": "nope"}, "object": pod("x")}});
    api.post(reviews, unknown).await.failure(404, "NotFound");
}

// ---------------------------------------------------------------------------
// Audits
// ---------------------------------------------------------------------------

/// The path of a cluster policy's on-demand audit.
fn audit_path(name: &str) -> String {
    format!("{CLUSTER_POLICIES}/{name}/audit")
}

/// An on-demand audit finds the existing objects that violate a policy,
/// whatever its enforcement, and records the count and the first twenty in
/// its status, beside what admission wrote there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audit_finds_existing_violations_and_records_them_in_the_status() {
    let api = Api::start().await;
    api.create_pod("dev", pod("web")).await;
    api.create_pod("dev", pod("db")).await;
    api.create_pod("dev", labelled_pod("ok", json!({"cost-center": "7"}))).await;
    api.create_pod("qa", pod("cache")).await;
    // Written after the pods, and for creates only: an audit reviews them anyway.
    api.post(CLUSTER_POLICIES, required_labels("labels", "deny")).await.ok(201);

    let audited = api.post(&audit_path("labels"), json!({})).await;
    audited.ok(200);
    let status = &audited.body["status"];
    assert_eq!(status["loaded"], true, "admission's fields stay: {}", audited.text);
    let audit = &status["audit"];
    assert_eq!((audit["totalViolations"].as_u64(), audit["objectsReviewed"].as_u64()), (Some(3), Some(4)), "{audit}");
    assert!(audit.get("error").is_none(), "{audit}");
    let last_run = audit["lastRun"].as_str().expect("lastRun");
    assert!(chrono::DateTime::parse_from_rfc3339(last_run).is_ok(), "{last_run}");
    let mut found: Vec<String> = audit["violations"]
        .as_array()
        .expect("violations")
        .iter()
        .map(|v| {
            assert_eq!((v["kind"].as_str(), v["enforcement"].as_str()), (Some("Pod"), Some("deny")), "{v}");
            assert_eq!(v["message"], r#"you must provide labels: {"cost-center"}"#);
            format!("{}/{}", v["namespace"].as_str().unwrap_or_default(), v["name"].as_str().unwrap_or_default())
        })
        .collect();
    found.sort();
    assert_eq!(found, ["dev/db", "dev/web", "qa/cache"]);
    // Stored, and shown as a column.
    let stored = api.get(&format!("{CLUSTER_POLICIES}/labels")).await;
    assert_eq!(stored.body["status"]["audit"], *audit);
    let table = api.call(Some(ADMIN), Method::GET, CLUSTER_POLICIES, &[("accept", TABLE)], Body::empty()).await;
    table.ok(200);
    let column =
        table.body["columnDefinitions"].as_array().unwrap().iter().position(|c| c["name"] == "Violations").expect("a Violations column");
    assert_eq!(table.body["rows"][0]["cells"][column], "3");

    // Fixed objects drop out; every violation is counted, twenty are listed; enforcement does not matter.
    api.patch(&pod_path("dev", "web"), MERGE_PATCH, json!({"metadata": {"labels": {"cost-center": "1"}}})).await.ok(200);
    let edited = api.patch(&format!("{CLUSTER_POLICIES}/labels"), MERGE_PATCH, json!({"spec": {"enforcement": "audit"}})).await;
    edited.ok(200);
    assert_eq!(edited.body["status"]["audit"]["totalViolations"], 3, "an edit keeps the last audit: {}", edited.text);
    assert_eq!(edited.body["status"]["loaded"], true);
    for i in 0..20 {
        api.create_pod("prod", pod(&format!("batch-{i}"))).await;
    }
    let audit = api.post(&audit_path("labels"), json!({})).await.body["status"]["audit"].clone();
    assert_eq!(audit["totalViolations"], 22, "{audit}");
    assert_eq!(audit["violations"].as_array().unwrap().len(), 20);
    assert_eq!(audit["violations"][0]["enforcement"], "audit");

    // Auditing takes the right to update the policy.
    api.json_as(ALICE, Method::POST, &audit_path("labels"), Some(json!({}))).await.failure(403, "Forbidden");
    api.post(&audit_path("nope"), json!({})).await.failure(404, "NotFound");
}

/// A namespace's policy audits only its own namespace, for its owners.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_policy_audits_only_its_namespace() {
    let api = Api::start().await;
    let latest = |name: &str| {
        let mut pod = pod(name);
        pod["spec"]["containers"][0]["image"] = json!("app:latest");
        pod
    };
    api.create_pod("dev", latest("web")).await;
    api.create_pod("dev", pod("pinned")).await;
    api.create_pod("qa", latest("web")).await;
    let policies = "/apis/kapsel.io/v1alpha1/namespaces/dev/admissionpolicies";
    let policy = json!({"apiVersion": "kapsel.io/v1alpha1", "kind": "AdmissionPolicy", "metadata": {"name": "no-latest"},
        "spec": {"rego": "package nolatest\ndeny contains sprintf(\"%s: no latest tags here\", [c.name]) if {\n  some c in input.review.object.spec.containers\n  endswith(c.image, \":latest\")\n}\n",
                 "enforcement": "warn", "match": {"kinds": ["Pod"], "namespaces": ["qa"]}}});
    api.post(policies, policy).await.ok(201);
    let path = format!("{policies}/no-latest/audit");
    // alice edits dev: she may read the policy, not audit it.
    api.json_as(ALICE, Method::POST, &path, Some(json!({}))).await.failure(403, "Forbidden");
    let audited = api.post(&path, json!({})).await;
    audited.ok(200);
    let audit = &audited.body["status"]["audit"];
    assert_eq!((audit["totalViolations"].as_u64(), audit["objectsReviewed"].as_u64()), (Some(1), Some(2)), "{audit}");
    let violation = &audit["violations"][0];
    assert_eq!((violation["namespace"].as_str(), violation["name"].as_str()), (Some("dev"), Some("web")));
    assert_eq!((violation["message"].as_str(), violation["enforcement"].as_str()), (Some("app: no latest tags here"), Some("warn")));
}

/// The periodic audit keeps each policy's status current; requests that an
/// `audit` policy admits in violation leave a Warning Event on the policy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_periodic_audit_keeps_the_status_current_and_audit_violations_are_events() {
    let api = Api::start().await;
    api.post(CLUSTER_POLICIES, required_labels("labels", "audit")).await.ok(201);
    kapsel_server::controllers::audit::start(&api.app, Duration::from_millis(100));
    let policy = format!("{CLUSTER_POLICIES}/labels");
    let violations = |n: u64| move |p: &Value| p["status"]["audit"]["totalViolations"].as_u64() == Some(n);
    eventually(&api, &policy, "the first pass", violations(0)).await;

    let admitted = api.post(&pods("dev"), pod("web")).await;
    admitted.ok(201);
    assert!(admitted.headers.get("warning").is_none());
    // The event is recorded in the pod's namespace: its tenants see it, no other tenant does.
    let event_in = |namespace: &str| format!("/api/v1/namespaces/{namespace}/events/labels.clusteradmissionpolicy.auditviolation");
    let event = eventually(&api, &event_in("dev"), "the event", |_| true).await;
    assert_eq!((event["type"].as_str(), event["reason"].as_str()), (Some("Warning"), Some("AuditViolation")));
    assert_eq!(event["involvedObject"]["kind"], "ClusterAdmissionPolicy");
    assert_eq!(event["message"], r#"CREATE of Pod dev/web admitted in violation: you must provide labels: {"cost-center"}"#);
    let found = eventually(&api, &policy, "a later pass", violations(1)).await;
    assert_eq!(found["status"]["audit"]["violations"][0]["enforcement"], "audit");

    // Another violation in dev: the event counts it, and so does the next pass. A dry run records nothing.
    api.post(&pods("dev"), pod("db")).await.ok(201);
    eventually(&api, &event_in("dev"), "the second event", |e| e["count"] == 2).await;
    eventually(&api, &policy, "the next pass", violations(2)).await;
    api.post(&format!("{}?dryRun=All", pods("dev")), pod("trial")).await.ok(201);
    api.post(&pods("prod"), pod("queue")).await.ok(201);
    eventually(&api, &event_in("prod"), "prod's event", |e| {
        e["count"] == 1 && e["message"].as_str().unwrap_or_default().contains("prod/queue")
    })
    .await;
    assert_eq!(api.get(&event_in("dev")).await.body["count"], 2);
    let found = eventually(&api, &policy, "the pass that finds prod's", violations(3)).await;
    assert_eq!(found["status"]["audit"]["violations"].as_array().map(Vec::len), Some(3));
    // Alice (dev and qa) reads the cluster policy's audit: only her namespaces' violations are listed.
    let seen = api.json_as(ALICE, Method::GET, &policy, None).await;
    seen.ok(200);
    let namespaces: Vec<&str> =
        seen.body["status"]["audit"]["violations"].as_array().unwrap().iter().filter_map(|v| v["namespace"].as_str()).collect();
    assert_eq!(namespaces, ["dev", "dev"], "{}", seen.text);
    let listed = api.json_as(ALICE, Method::GET, CLUSTER_POLICIES, None).await;
    assert_eq!(listed.items()[0]["status"]["audit"]["violations"].as_array().map(Vec::len), Some(2));
    api.json_as(ALICE, Method::GET, &event_in("prod"), None).await.failure(403, "Forbidden");
}
