//! What a namespace owner cannot do with admission policies: hold more than
//! the per-namespace cap of them, trigger on-demand audits without limit,
//! make one evaluation cost more than its budget, or deny the platform's
//! own writes (a node agent's status reports).

mod common;

use std::time::{Duration, Instant};

use common::*;
use http::Method;
use serde_json::{Value, json};

const DEV_POLICIES: &str = "/apis/kapsel.io/v1alpha1/namespaces/dev/admissionpolicies";

/// A token for a new user with `roles`, issued by the admin.
async fn token(api: &Api, user: &str, roles: Value) -> String {
    let issued = api
        .post(
            "/apis/kapsel.io/v1alpha1/tokens",
            json!({"apiVersion": "kapsel.io/v1alpha1", "kind": "Token", "metadata": {"name": user}, "spec": {"user": user, "roles": roles}}),
        )
        .await;
    issued.ok(201);
    issued.body["status"]["token"].as_str().expect("the secret, shown once").to_string()
}

/// An owner of `dev` and `qa`.
async fn owner(api: &Api) -> String {
    token(api, "olga", json!([{"namespace": "dev", "role": "owner"}, {"namespace": "qa", "role": "owner"}])).await
}

fn policy(name: &str, rego: &str, enforcement: &str, operations: Value) -> Value {
    json!({"apiVersion": "kapsel.io/v1alpha1", "kind": "AdmissionPolicy", "metadata": {"name": name},
        "spec": {"rego": rego, "enforcement": enforcement, "match": {"kinds": ["Pod"], "operations": operations}}})
}

const DENY_ALL: &str = "package p\ndeny contains \"no pod may change\" if { true }\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_holds_at_most_the_policies_it_set() {
    let api = Api::start().await;
    api.app.admission.set_max_namespace_policies(2);
    let olga = owner(&api).await;
    for name in ["one", "two"] {
        api.json_as(&olga, Method::POST, DEV_POLICIES, Some(policy(name, DENY_ALL, "warn", json!(["DELETE"])))).await.ok(201);
    }
    let refused = api.json_as(&olga, Method::POST, DEV_POLICIES, Some(policy("three", DENY_ALL, "warn", json!(["DELETE"])))).await;
    refused.failure(403, "Forbidden").mentions(&[
        "\"three\"",
        "already has 2 admission policies",
        "limit of 2 admission policies per namespace",
    ]);
    // Another namespace has its own count; deleting one makes room; IT admins are not held to it.
    api.json_as(
        &olga,
        Method::POST,
        "/apis/kapsel.io/v1alpha1/namespaces/qa/admissionpolicies",
        Some(policy("one", DENY_ALL, "warn", json!(["DELETE"]))),
    )
    .await
    .ok(201);
    api.json_as(&olga, Method::DELETE, &format!("{DEV_POLICIES}/two"), None).await.ok(200);
    api.json_as(&olga, Method::POST, DEV_POLICIES, Some(policy("three", DENY_ALL, "warn", json!(["DELETE"])))).await.ok(201);
    api.post(DEV_POLICIES, policy("by-it", DENY_ALL, "warn", json!(["DELETE"]))).await.ok(201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_demand_audits_are_rate_limited_per_namespace() {
    let api = Api::start().await;
    let olga = owner(&api).await;
    api.json_as(&olga, Method::POST, DEV_POLICIES, Some(policy("a", DENY_ALL, "warn", json!([])))).await.ok(201);
    api.json_as(&olga, Method::POST, DEV_POLICIES, Some(policy("b", DENY_ALL, "warn", json!([])))).await.ok(201);
    api.json_as(&olga, Method::POST, &format!("{DEV_POLICIES}/a/audit"), Some(json!({}))).await.ok(200);
    // Again, or another policy of the same namespace: too soon.
    for name in ["a", "b"] {
        let refused = api.json_as(&olga, Method::POST, &format!("{DEV_POLICIES}/{name}/audit"), Some(json!({}))).await;
        refused.failure(429, "TooManyRequests").mentions(&["namespace \"dev\"", "once every 10 s"]);
        let retry: u64 = refused.headers["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=10).contains(&retry), "Retry-After: {retry}");
        assert_eq!(refused.body["details"]["retryAfterSeconds"], retry, "{}", refused.text);
    }
    // Another namespace is counted apart; IT admins are not limited.
    let qa = "/apis/kapsel.io/v1alpha1/namespaces/qa/admissionpolicies";
    api.json_as(&olga, Method::POST, qa, Some(policy("c", DENY_ALL, "warn", json!([])))).await.ok(201);
    api.json_as(&olga, Method::POST, &format!("{qa}/c/audit"), Some(json!({}))).await.ok(200);
    api.post(&format!("{DEV_POLICIES}/a/audit"), json!({})).await.ok(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_policy_does_not_judge_the_node_agents_status_reports() {
    let api = Api::start().await;
    let olga = owner(&api).await;
    // A node and a pod bound to it, from before the policies.
    let agent = {
        let created = api
            .post("/apis/kapsel.io/v1alpha1/tokens", json!({"apiVersion": "kapsel.io/v1alpha1", "kind": "Token", "metadata": {"name": "node-n1"}, "spec": {"user": "ignored", "node": "n1"}}))
            .await;
        created.ok(201);
        created.body["status"]["token"].as_str().unwrap().to_string()
    };
    let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"},
        "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"}, "conditions": [{"type": "Ready", "status": "True"}]}});
    api.json_as(&agent, Method::POST, "/api/v1/nodes", Some(node)).await.ok(201);
    let mut bound = pod("bound");
    bound["spec"]["nodeName"] = json!("n1");
    api.create_pod("dev", bound).await;
    // The namespace's owner denies every pod update, and warns on every one.
    api.json_as(&olga, Method::POST, DEV_POLICIES, Some(policy("frozen", DENY_ALL, "deny", json!(["UPDATE"])))).await.ok(201);
    api.json_as(&olga, Method::POST, DEV_POLICIES, Some(policy("noisy", DENY_ALL, "warn", json!(["UPDATE"])))).await.ok(201);

    // The agent's status reports go through, without warnings.
    let mut running = api.json_as(&agent, Method::GET, &pod_path("dev", "bound"), None).await.body;
    running["status"]["phase"] = json!("Running");
    let reported = api.json_as(&agent, Method::PUT, &format!("{}/status", pod_path("dev", "bound")), Some(running)).await;
    reported.ok(200);
    assert_eq!(reported.body["status"]["phase"], "Running");
    assert!(reported.headers.get("warning").is_none(), "{:?}", reported.headers);
    // So do the IT admin's status writes (the platform's bookkeeping).
    let mut marked = reported.body.clone();
    marked["status"]["message"] = json!("checked");
    api.put(&format!("{}/status", pod_path("dev", "bound")), marked).await.ok(200);

    // A tenant's update of the pod itself is judged.
    let mut labelled = api.get(&pod_path("dev", "bound")).await.body;
    labelled["metadata"]["labels"] = json!({"tier": "web"});
    api.json_as(&olga, Method::PUT, &pod_path("dev", "bound"), Some(labelled))
        .await
        .failure(403, "Forbidden")
        .mentions(&["\"frozen\"", "no pod may change"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_review_costs_no_more_than_its_budget() {
    let api = Api::start().await;
    let olga = owner(&api).await;
    // The sandbox tenants' policies run in is compiled once per process, with the first of them: not what is timed here.
    tokio::task::spawn_blocking(kapsel_plugins::rego::prepare).await.unwrap().unwrap();
    let hostile = json!({"apiVersion": "kapsel.io/v1alpha1", "kind": "AdmissionPolicy", "metadata": {"name": "hostile", "namespace": "dev"},
        "spec": {"rego": "package p\ndeny contains \"x\" if { input.review.object.kind == \"Pod\"; count(numbers.range(0, 30000000)) > 0 }"}});
    let mut object = pod("web");
    object["metadata"]["namespace"] = json!("dev");
    let review = json!({"apiVersion": "kapsel.io/v1alpha1", "kind": "PolicyReview", "spec": {"policy": hostile, "object": object}});
    let started = Instant::now();
    let reviewed = api.json_as(&olga, Method::POST, "/apis/kapsel.io/v1alpha1/policyreviews", Some(review)).await;
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
    reviewed.ok(201);
    assert_eq!(reviewed.body["status"]["allowed"], false, "{}", reviewed.text);
    let error = reviewed.body["status"]["error"].as_str().unwrap_or_default();
    assert!(error.contains("exceeded the memory of its sandbox, 64 MiB"), "{error}");

    // Stored, it fails closed at admission with the same message; a policy that blows its budget on any input is refused.
    let stored = policy(
        "hostile",
        "package p\ndeny contains \"x\" if { input.review.object.kind == \"Pod\"; count(numbers.range(0, 30000000)) > 0 }",
        "deny",
        json!([]),
    );
    api.json_as(&olga, Method::POST, DEV_POLICIES, Some(stored)).await.ok(201);
    api.post(&pods("dev"), pod("refused"))
        .await
        .failure(403, "Forbidden")
        .mentions(&["could not be evaluated and fails closed", "memory of its sandbox"]);
    let eager = policy("eager", "package p\ndeny contains \"x\" if { count(numbers.range(0, 30000000)) > 0 }", "deny", json!([]));
    let refused = api.json_as(&olga, Method::POST, DEV_POLICIES, Some(eager)).await;
    refused.failure(422, "Invalid").mentions(&["needed more than the 64 MiB it may use"]);
    assert_eq!(refused.cause_fields(), ["spec.rego"]);
}
