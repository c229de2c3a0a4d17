//! IT's controls through the whole request path, in-process: quotas
//! (usage counted from what exists, exact under concurrent creates and
//! deletes, refusals worded as Kubernetes words them, dry runs checked and
//! not charged), resource classes, limit ranges and workload templates.

mod common;

use common::*;
use serde_json::{Value, json};

const QUOTAS: &str = "/api/v1/namespaces/dev/resourcequotas";

fn quota(name: &str, hard: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": name}, "spec": {"hard": hard}})
}

/// A pod whose one container requests and is limited to `cpu` and `memory`.
fn sized_pod(name: &str, cpu: &str, memory: &str) -> Value {
    let mut pod = pod(name);
    pod["spec"]["containers"][0]["resources"] =
        json!({"requests": {"cpu": cpu, "memory": memory}, "limits": {"cpu": cpu, "memory": memory}});
    pod
}

async fn used(api: &Api, name: &str) -> Value {
    let reply = api.get(&format!("{QUOTAS}/{name}")).await;
    reply.ok(200);
    reply.body["status"]["used"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_counts_what_exists_and_refuses_what_would_exceed_it() {
    let api = Api::start().await;
    api.create_pod("dev", sized_pod("a", "500m", "256Mi")).await;
    api.create_pod("dev", sized_pod("b", "250m", "256Mi")).await;

    let created = api.post(QUOTAS, quota("compute", json!({"pods": "3", "requests.cpu": "1", "limits.memory": "1Gi"}))).await;
    created.ok(201);
    assert_eq!(created.body["status"]["hard"], json!({"pods": "3", "requests.cpu": "1", "limits.memory": "1Gi"}));
    assert_eq!(created.body["status"]["used"], json!({"pods": "2", "requests.cpu": "750m", "limits.memory": "512Mi"}));

    // Over the CPU quota: refused as Kubernetes refuses it, nothing stored or charged.
    let refused = api.post(&pods("dev"), sized_pod("c", "500m", "128Mi")).await;
    refused.failure(403, "Forbidden");
    assert_eq!(
        refused.message(),
        r#"pods "c" is forbidden: exceeded quota: compute, requested: requests.cpu=500m, used: requests.cpu=750m, limited: requests.cpu=1"#
    );
    api.get(&pod_path("dev", "c")).await.failure(404, "NotFound");
    // A pod that leaves a limited resource unspecified is refused and told which.
    let refused = api.post(&pods("dev"), pod("bare")).await;
    refused.failure(403, "Forbidden");
    assert_eq!(refused.message(), r#"pods "bare" is forbidden: failed quota: compute: must specify requests.cpu, limits.memory"#);

    // A dry run is checked and not charged.
    let dry = format!("{}?dryRun=All", pods("dev"));
    api.post(&dry, sized_pod("c", "500m", "128Mi")).await.failure(403, "Forbidden");
    api.post(&dry, sized_pod("c", "250m", "128Mi")).await.ok(201);
    assert_eq!(used(&api, "compute").await["pods"], "2");

    // What fits is admitted and charged; a delete gives it back.
    api.post(&pods("dev"), sized_pod("c", "250m", "128Mi")).await.ok(201);
    assert_eq!(used(&api, "compute").await, json!({"pods": "3", "requests.cpu": "1", "limits.memory": "640Mi"}));
    let refused = api.post(&pods("dev"), sized_pod("d", "0", "0")).await;
    refused.failure(403, "Forbidden");
    assert!(refused.message().ends_with("requested: pods=1, used: pods=3, limited: pods=3"), "{}", refused.text);
    api.delete(&pod_path("dev", "a")).await.ok(200);
    assert_eq!(used(&api, "compute").await, json!({"pods": "2", "requests.cpu": "500m", "limits.memory": "384Mi"}));
    api.post(&pods("dev"), sized_pod("d", "500m", "128Mi")).await.ok(201);

    // A pod that terminated uses nothing but its place in the list.
    let mut finished = api.get(&pod_path("dev", "d")).await.body;
    finished["status"]["phase"] = json!("Succeeded");
    api.put(&format!("{}/status", pod_path("dev", "d")), finished).await.ok(200);
    assert_eq!(used(&api, "compute").await, json!({"pods": "2", "requests.cpu": "500m", "limits.memory": "384Mi"}));

    // Other namespaces are not limited by it.
    api.create_pod("qa", sized_pod("big", "8", "8Gi")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_clients_at_once_never_over_admit() {
    let api = Api::start().await;
    api.post(QUOTAS, quota("ten", json!({"pods": "10", "count/pods": "10"}))).await.ok(201);
    let creates = (0..32).map(|i| {
        let api = &api;
        async move { api.post(&pods("dev"), pod(&format!("p{i}"))).await }
    });
    let replies = futures::future::join_all(creates).await;
    let admitted: Vec<&Reply> = replies.iter().filter(|r| r.status == 201).collect();
    assert_eq!(admitted.len(), 10, "{:?}", replies.iter().map(|r| r.status).collect::<Vec<_>>());
    for refused in replies.iter().filter(|r| r.status != 201) {
        refused.failure(403, "Forbidden");
        assert!(refused.message().contains("exceeded quota: ten"), "{}", refused.text);
    }
    assert_eq!(used(&api, "ten").await, json!({"pods": "10", "count/pods": "10"}));

    // Deletes and creates racing: the usage always ends equal to what exists.
    let names: Vec<String> = api.get(&pods("dev")).await.names();
    let deletes = names.iter().take(5).map(|name| {
        let api = &api;
        async move { api.delete(&pod_path("dev", name)).await.status }
    });
    let creates = (100..120).map(|i| {
        let api = &api;
        async move { api.post(&pods("dev"), pod(&format!("p{i}"))).await.status }
    });
    let (deleted, _) = futures::future::join(futures::future::join_all(deletes), futures::future::join_all(creates)).await;
    assert!(deleted.iter().all(|status| *status == 200), "{deleted:?}");
    let existing = api.get(&pods("dev")).await.items().len();
    assert!(existing <= 10, "{existing} pods exist under a quota of 10");
    assert_eq!(used(&api, "ten").await["pods"], json!(existing.to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_status_written_by_hand_is_recounted() {
    let api = Api::start().await;
    api.create_pod("dev", pod("one")).await;
    let created = api.post(QUOTAS, quota("count", json!({"count/pods": "5"}))).await;
    created.ok(201);
    let mut edited = created.body.clone();
    edited["status"]["used"] = json!({"count/pods": "0"});
    let written = api.put(&format!("{QUOTAS}/count/status"), edited).await;
    written.ok(200);
    assert_eq!(written.body["status"]["used"], json!({"count/pods": "1"}));
    // Raising the limit keeps the count and shows the new limit.
    let mut raised = written.body.clone();
    raised["spec"]["hard"]["count/pods"] = json!("7");
    let raised = api.put(&format!("{QUOTAS}/count"), raised).await;
    raised.ok(200);
    assert_eq!(raised.body["status"], json!({"hard": {"count/pods": "7"}, "used": {"count/pods": "1"}}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_names_only_what_it_can_enforce() {
    let api = Api::start().await;
    let refused = api.post(QUOTAS, quota("odd", json!({"gpus": "1", "count/widgets": "2", "pods": "1"}))).await;
    refused.failure(422, "Invalid");
    assert_eq!(refused.cause_fields(), ["spec.hard[count/widgets]", "spec.hard[gpus]"]);
    let mut scoped = quota("scoped", json!({"pods": "1"}));
    scoped["spec"]["scopes"] = json!(["BestEffort"]);
    let refused = api.post(QUOTAS, scoped).await;
    refused.failure(422, "Invalid");
    assert_eq!(refused.cause_fields(), ["spec.scopes"]);
    // Counting other kinds works: one policy at most in the namespace.
    api.post(QUOTAS, quota("policies", json!({"count/admissionpolicies.kapsel.io": "1"}))).await.ok(201);
    let policy = |name: &str| {
        json!({"apiVersion": "kapsel.io/v1alpha1", "kind": "AdmissionPolicy", "metadata": {"name": name},
            "spec": {"rego": "package p\ndeny contains msg if { false; msg := \"\" }", "match": {"kinds": ["Pod"]}}})
    };
    let path = "/apis/kapsel.io/v1alpha1/namespaces/dev/admissionpolicies";
    api.post(path, policy("first")).await.ok(201);
    let refused = api.post(path, policy("second")).await;
    refused.failure(403, "Forbidden");
    assert!(refused.message().contains("exceeded quota: policies, requested: count/admissionpolicies.kapsel.io=1"), "{}", refused.text);
}

const CLASSES: &str = "/apis/kapsel.io/v1alpha1/resourceclasses";

fn class(name: &str, cpu: &str, memory: &str) -> Value {
    json!({"apiVersion": "kapsel.io/v1alpha1", "kind": "ResourceClass", "metadata": {"name": name},
        "spec": {"description": format!("{cpu} CPU, {memory}"), "requests": {"cpu": cpu, "memory": memory}, "limits": {"cpu": cpu, "memory": memory}}})
}

fn classed_pod(name: &str, class: &str) -> Value {
    let mut pod = pod(name);
    pod["spec"]["resourceClassName"] = json!(class);
    pod
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resource_class_sizes_every_container_and_a_namespace_can_restrict_classes() {
    let api = Api::start().await;
    api.post(CLASSES, class("guaranteed-small", "500m", "256Mi")).await.ok(201);
    api.post(CLASSES, class("guaranteed-large", "4", "8Gi")).await.ok(201);
    // Tenants read the catalogue; only IT writes it.
    api.json_as(ALICE, http::Method::GET, CLASSES, None).await.ok(200);
    api.json_as(ALICE, http::Method::POST, CLASSES, Some(class("mine", "1", "1Gi"))).await.failure(403, "Forbidden");

    let created = api.post(&pods("dev"), classed_pod("web", "guaranteed-small")).await;
    created.ok(201);
    assert_eq!(created.body["spec"]["resourceClassName"], "guaranteed-small", "the class stays on the pod");
    assert_eq!(
        created.body["spec"]["containers"][0]["resources"],
        json!({"requests": {"cpu": "500m", "memory": "256Mi"}, "limits": {"cpu": "500m", "memory": "256Mi"}})
    );
    assert_eq!(created.body["status"]["qosClass"], "Guaranteed");

    let unknown = api.post(&pods("dev"), classed_pod("odd", "huge")).await;
    unknown.failure(422, "Invalid");
    assert_eq!(unknown.cause_fields(), ["spec.resourceClassName"]);
    assert_eq!(unknown.cause_reason("spec.resourceClassName").as_deref(), Some("FieldValueNotFound"));
    let mut both = classed_pod("both", "guaranteed-small");
    both["spec"]["containers"][0]["resources"] = json!({"limits": {"cpu": "1"}});
    let refused = api.post(&pods("dev"), both).await;
    refused.failure(422, "Invalid");
    assert_eq!(refused.cause_fields(), ["spec.containers[0].resources"]);

    // IT restricts the namespace to the small class.
    let mut namespace = api.get("/api/v1/namespaces/dev").await.body;
    namespace["metadata"]["annotations"]["kapsel.io/resource-classes"] = json!("guaranteed-small");
    api.put("/api/v1/namespaces/dev", namespace).await.ok(200);
    let refused = api.post(&pods("dev"), classed_pod("big", "guaranteed-large")).await;
    refused.failure(403, "Forbidden");
    assert_eq!(
        refused.message(),
        r#"pods "big" is forbidden: resource class "guaranteed-large" is not allowed in namespace "dev" (allowed: guaranteed-small)"#
    );
    api.post(&pods("qa"), classed_pod("big", "guaranteed-large")).await.ok(201);

    // A class's sizes count against quotas like any pod's.
    api.post(QUOTAS, quota("memory", json!({"limits.memory": "600Mi"}))).await.ok(201);
    api.post(&pods("dev"), classed_pod("second", "guaranteed-small")).await.ok(201);
    let refused = api.post(&pods("dev"), classed_pod("third", "guaranteed-small")).await;
    refused.failure(403, "Forbidden");
    assert!(
        refused.message().contains("exceeded quota: memory, requested: limits.memory=256Mi, used: limits.memory=512Mi"),
        "{}",
        refused.text
    );
}

/// LimitRanges fill a new pod's missing requests and limits, then bound them, as Kubernetes' LimitRanger does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_ranges_default_and_bound_new_pods() {
    let api = Api::start().await;
    let range = json!({"apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": "sizes"},
        "spec": {"limits": [
            {"type": "Container", "default": {"cpu": "500m", "memory": "256Mi"}, "defaultRequest": {"cpu": "100m"},
             "min": {"memory": "16Mi"}, "max": {"cpu": "1", "memory": "1Gi"}, "maxLimitRequestRatio": {"cpu": "10"}},
            {"type": "Pod", "max": {"memory": "1536Mi"}}]}});
    api.post("/api/v1/namespaces/dev/limitranges", range).await.ok(201);

    // Nothing set: limits from `default`, requests from `defaultRequest` or else `default`.
    let mut bare = pod("bare");
    bare["spec"]["containers"][0].as_object_mut().unwrap().remove("resources");
    let created = api.post(&pods("dev"), bare).await;
    created.ok(201);
    let resources = &created.body["spec"]["containers"][0]["resources"];
    assert_eq!(resources["limits"], json!({"cpu": "500m", "memory": "256Mi"}), "{resources}");
    assert_eq!(resources["requests"], json!({"cpu": "100m", "memory": "256Mi"}), "{resources}");
    assert_eq!(created.body["status"]["qosClass"], "Burstable");

    // What a pod sets itself stays; bounds are checked on the result, every reason listed.
    let sized = |name: &str, requests: Value, limits: Value| {
        let mut pod = pod(name);
        pod["spec"]["containers"][0]["resources"] = json!({"requests": requests, "limits": limits});
        pod
    };
    let too_big = api.post(&pods("dev"), sized("big", json!({"cpu": "100m", "memory": "8Mi"}), json!({"cpu": "2", "memory": "2Gi"}))).await;
    too_big.failure(403, "Forbidden");
    assert_eq!(
        too_big.message(),
        r#"pods "big" is forbidden: [minimum memory usage per Container is 16Mi, but request is 8Mi, maximum cpu usage per Container is 1, but limit is 2, maximum memory usage per Container is 1Gi, but limit is 2Gi, cpu max limit to request ratio per Container is 10, but provided ratio is 20.00, maximum memory usage per Pod is 1536Mi, but limit is 2Gi]"#
    );
    // The pod's sum is bounded too: two containers of 1Gi exceed 1536Mi.
    let mut pair = sized("pair", json!({"memory": "1Gi"}), json!({"memory": "1Gi"}));
    let second = pair["spec"]["containers"][0].clone();
    pair["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "side", "image": second["image"], "resources": second["resources"]}));
    let refused = api.post(&pods("dev"), pair).await;
    refused.failure(403, "Forbidden");
    assert!(refused.message().contains("maximum memory usage per Pod is 1536Mi, but limit is 2Gi"), "{}", refused.text);
    // Other namespaces are not affected.
    api.post(&pods("qa"), sized("big", json!({"cpu": "100m"}), json!({"cpu": "2"}))).await.ok(201);
}

fn template(kind: &str, name: &str) -> Value {
    json!({"apiVersion": "kapsel.io/v1alpha1", "kind": kind, "metadata": {"name": name},
        "spec": {
            "description": "a web server",
            "parameters": [
                {"name": "image", "description": "the component to run", "required": true},
                {"name": "class", "default": "guaranteed-small"},
                {"name": "level", "default": "info"}],
            "template": {
                "metadata": {"labels": {"app": "web", "tier": "${level}"}},
                "spec": {"resourceClassName": "${class}",
                         "containers": [{"name": "web", "image": "${image}", "env": [{"name": "LOG_LEVEL", "value": "${level}"}]}]}}}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workload_template_makes_pods_through_the_ordinary_create_path() {
    let api = Api::start().await;
    api.post(CLASSES, class("guaranteed-small", "500m", "256Mi")).await.ok(201);
    api.post("/apis/kapsel.io/v1alpha1/clusterworkloadtemplates", template("ClusterWorkloadTemplate", "web")).await.ok(201);
    let instantiate = "/apis/kapsel.io/v1alpha1/clusterworkloadtemplates/web/instantiate";

    // A tenant with edit rights in dev makes a pod from IT's template.
    let made = api
        .json_as(ALICE, http::Method::POST, instantiate,
            Some(json!({"namespace": "dev", "parameters": {"image": "web:2", "level": "debug"}, "labels": {"team": "a"}, "env": {"EXTRA": "1"}})))
        .await;
    made.ok(201);
    let pod = &made.body;
    assert!(pod["metadata"]["name"].as_str().unwrap().starts_with("web-"), "{pod}");
    assert_eq!(pod["metadata"]["labels"], json!({"app": "web", "tier": "debug", "team": "a"}));
    assert_eq!(pod["metadata"]["annotations"]["kapsel.io/template"], "ClusterWorkloadTemplate/web");
    let container = &pod["spec"]["containers"][0];
    assert_eq!(container["image"], "web:2");
    assert_eq!(container["env"], json!([{"name": "LOG_LEVEL", "value": "debug"}, {"name": "EXTRA", "value": "1"}]));
    assert_eq!(container["resources"]["limits"]["memory"], "256Mi", "the default class sized it");

    // Missing and unknown parameters are named.
    let refused = api.post(instantiate, json!({"namespace": "dev", "parameters": {"colour": "blue"}})).await;
    refused.failure(422, "Invalid");
    assert_eq!(refused.cause_fields(), ["parameters.colour", "parameters.image"]);
    // Where the tenant may not create pods, the template does not help.
    api.json_as(ALICE, http::Method::POST, instantiate, Some(json!({"namespace": "qa", "parameters": {"image": "x"}})))
        .await
        .failure(403, "Forbidden");
    // The pod is admitted like any other: a policy that forbids debug logging refuses it.
    let policy = json!({"apiVersion": "kapsel.io/v1alpha1", "kind": "ClusterAdmissionPolicy", "metadata": {"name": "no-debug"},
        "spec": {"match": {"kinds": ["Pod"]}, "rego": "package nodebug\ndeny contains \"debug logging is not allowed\" if { input.review.object.metadata.labels.tier == \"debug\" }"}});
    api.post("/apis/kapsel.io/v1alpha1/clusteradmissionpolicies", policy).await.ok(201);
    let refused = api.post(instantiate, json!({"namespace": "dev", "name": "dbg", "parameters": {"image": "x", "level": "debug"}})).await;
    refused.failure(403, "Forbidden");
    assert!(refused.message().contains("debug logging is not allowed"), "{}", refused.text);
    // A dry run makes nothing.
    let dry =
        api.post(&format!("{instantiate}?dryRun=All"), json!({"namespace": "dev", "name": "dry", "parameters": {"image": "x"}})).await;
    dry.ok(201);
    api.get(&pod_path("dev", "dry")).await.failure(404, "NotFound");

    // A namespace's own template, in its namespace only; undeclared references are refused at once.
    let own = "/apis/kapsel.io/v1alpha1/namespaces/dev/workloadtemplates";
    let mut broken = template("WorkloadTemplate", "broken");
    broken["spec"]["template"]["spec"]["containers"][0]["args"] = json!(["${verbosity}"]);
    let refused = api.post(own, broken).await;
    refused.failure(422, "Invalid");
    assert_eq!(refused.cause_fields(), ["spec.template.spec.containers[0].args[0]"]);
    api.post(own, template("WorkloadTemplate", "web")).await.ok(201);
    let made = api.post(&format!("{own}/web/instantiate"), json!({"name": "mine", "parameters": {"image": "x"}})).await;
    made.ok(201);
    assert_eq!(made.body["metadata"]["annotations"]["kapsel.io/template"], "WorkloadTemplate/web");
    api.post(&format!("{own}/web/instantiate"), json!({"namespace": "qa", "parameters": {"image": "x"}})).await.failure(422, "Invalid");
}

/// A token for a new user with `roles`, issued by the admin.
async fn token(api: &Api, user: &str, roles: Value) -> String {
    let issued = api
        .post(
            "/apis/kapsel.io/v1alpha1/tokens",
            json!({"apiVersion": "kapsel.io/v1alpha1", "kind": "Token",
            "metadata": {"name": user}, "spec": {"user": user, "roles": roles}}),
        )
        .await;
    issued.ok(201);
    issued.body["status"]["token"].as_str().expect("the secret, shown once").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_cannot_shrink_what_their_pods_count_for() {
    let api = Api::start().await;
    api.post(CLASSES, class("guaranteed-small", "500m", "256Mi")).await.ok(201);
    api.post(QUOTAS, quota("cpu", json!({"requests.cpu": "2"}))).await.ok(201);

    // A quota on compute alone still needs every new pod to say what it asks for.
    let refused = api.json_as(ALICE, http::Method::POST, &pods("dev"), Some(pod("bare"))).await;
    refused.failure(403, "Forbidden");
    assert_eq!(refused.message(), r#"pods "bare" is forbidden: failed quota: cpu: must specify requests.cpu"#);

    api.json_as(ALICE, http::Method::POST, &pods("dev"), Some(sized_pod("web", "1", "64Mi"))).await.ok(201);
    api.json_as(ALICE, http::Method::POST, &pods("dev"), Some(classed_pod("small", "guaranteed-small"))).await.ok(201);
    assert_eq!(used(&api, "cpu").await, json!({"requests.cpu": "1500m"}));

    // Statuses are the platform's: a tenant cannot declare its pod finished to free its quota.
    let mut finished = api.get(&pod_path("dev", "web")).await.body;
    finished["status"]["phase"] = json!("Succeeded");
    let refused = api.json_as(ALICE, http::Method::PUT, &format!("{}/status", pod_path("dev", "web")), Some(finished)).await;
    refused.failure(403, "Forbidden");
    assert!(refused.message().contains("statuses are written by the platform"), "{}", refused.text);

    // A pod's size and class are fixed once it exists.
    let shrink = json!({"spec": {"containers": [{"name": "app", "image": "app:1", "resources": {"requests": {"cpu": "1m"}}}]}});
    let refused =
        api.call(Some(ALICE), http::Method::PATCH, &pod_path("dev", "web"), &[("content-type", STRATEGIC_PATCH)], shrink.to_string()).await;
    refused.failure(422, "Invalid");
    assert_eq!(refused.cause_fields(), ["spec.containers[0].resources"]);
    let reclass = api
        .call(
            Some(ALICE),
            http::Method::PATCH,
            &pod_path("dev", "small"),
            &[("content-type", MERGE_PATCH)],
            json!({"spec": {"resourceClassName": "other"}}).to_string(),
        )
        .await;
    reclass.failure(422, "Invalid");
    assert_eq!(reclass.cause_fields(), ["spec.resourceClassName"]);
    // Other edits go through; a container added to an unclassed pod must say what it asks for too.
    let relabel = api
        .call(
            Some(ALICE),
            http::Method::PATCH,
            &pod_path("dev", "web"),
            &[("content-type", MERGE_PATCH)],
            json!({"metadata": {"labels": {"a": "b"}}}).to_string(),
        )
        .await;
    relabel.ok(200);
    let sidecar = json!({"spec": {"containers": [{"name": "side", "image": "side:1"}]}});
    let refused = api
        .call(Some(ALICE), http::Method::PATCH, &pod_path("dev", "web"), &[("content-type", STRATEGIC_PATCH)], sidecar.to_string())
        .await;
    refused.failure(403, "Forbidden");
    assert!(refused.message().ends_with("failed quota: cpu: must specify requests.cpu"), "{}", refused.text);
    assert_eq!(used(&api, "cpu").await, json!({"requests.cpu": "1500m"}));
    // A quota on something else counted by name only.
    api.post(QUOTAS, quota("events", json!({"count/events": "5"}))).await.failure(422, "Invalid");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_policy_reads_only_what_its_tenants_may_read() {
    let api = Api::start().await;
    let owner = token(&api, "olga", json!([{"namespace": "dev", "role": "owner"}])).await;
    let policy = |kinds: Value| {
        json!({"apiVersion": "kapsel.io/v1alpha1", "kind": "AdmissionPolicy", "metadata": {"name": "peek", "namespace": "dev"},
            "spec": {"match": {"kinds": ["Pod"]}, "inventory": {"kinds": kinds},
                     "rego": "package peek\ndeny contains sprintf(\"%v\", [data.inventory]) if { true }"}})
    };
    let path = "/apis/kapsel.io/v1alpha1/namespaces/dev/admissionpolicies";
    for secret in ["Token", "Plugin", "Namespace"] {
        let refused = api.json_as(&owner, http::Method::POST, path, Some(policy(json!([secret])))).await;
        refused.failure(422, "Invalid");
        assert_eq!(refused.cause_fields(), ["spec.inventory.kinds[0]"], "{secret}");
    }
    // A review of an inline policy sees only what the caller may list: not another namespace's pods.
    api.create_pod("prod", pod("secret-pod")).await;
    let mut object = pod("probe");
    object["metadata"]["namespace"] = json!("prod");
    let review =
        json!({"apiVersion": "kapsel.io/v1alpha1", "kind": "PolicyReview", "spec": {"policy": policy(json!(["Pod"])), "object": object}});
    let refused = api.json_as(&owner, http::Method::POST, "/apis/kapsel.io/v1alpha1/policyreviews", Some(review)).await;
    refused.failure(403, "Forbidden");
    assert!(!refused.text.contains("secret-pod"), "{}", refused.text);
}
