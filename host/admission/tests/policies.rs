//! Policies compiled and evaluated the way the server does it: Rego v0 in
//! Gatekeeper's shape and Rego v1, matching, errors with line and column,
//! and the time budget.

use kapsel_admission::{Operation, Policy, PolicyId, PolicySet, Request, UserInfo};
use kapsel_api::kinds::admission_policy::PolicySpec;
use serde_json::{Value, json};

mod common;
use common::REQUIRED_LABELS_V0;

const NO_LATEST_V1: &str = r#"
package kapsel.nolatest

deny contains msg if {
  some container in input.review.object.spec.containers
  endswith(container.image, ":latest")
  msg := sprintf("container %s uses the latest tag", [container.name])
}
"#;

fn spec(value: Value) -> PolicySpec {
    serde_json::from_value(value).expect("a policy spec")
}

fn cluster(name: &str) -> PolicyId {
    PolicyId { namespace: None, name: name.into() }
}

fn pod(labels: Value, image: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": "dev", "labels": labels},
           "spec": {"containers": [{"name": "main", "image": image}]}})
}

fn request<'a>(object: &'a Value, namespace: &'a str, user: &'a UserInfo) -> Request<'a> {
    Request {
        group: "",
        version: "v1",
        kind: "Pod",
        resource: "pods",
        operation: Operation::Create,
        name: "web",
        namespace: Some(namespace),
        object: Some(object),
        old_object: None,
        user,
        dry_run: false,
        namespace_labels: None,
    }
}

fn messages(set: &PolicySet, request: &Request<'_>) -> Vec<(String, Vec<String>)> {
    set.review(request)
        .into_iter()
        .map(|d| (d.policy.to_string(), d.outcome.expect("evaluates").into_iter().map(|v| v.msg).collect()))
        .collect()
}

#[test]
fn gatekeeper_style_v0_and_v1_policies_decide() {
    let labels = Policy::compile(
        cluster("require-cost-center"),
        &spec(json!({"rego": REQUIRED_LABELS_V0, "regoVersion": "v0", "parameters": {"labels": ["cost-center"]}, "match": {"kinds": ["Pod"]}})),
    )
    .unwrap();
    let latest = Policy::compile(cluster("no-latest"), &spec(json!({"rego": NO_LATEST_V1}))).unwrap();
    let set = PolicySet::default().with(labels).with(latest);
    let user = UserInfo { username: "alice".into(), groups: vec![] };

    let bad = pod(json!({"app": "web"}), "registry.example/web:latest");
    let decisions = set.review(&request(&bad, "dev", &user));
    assert_eq!(decisions.len(), 2);
    let found = messages(&set, &request(&bad, "dev", &user));
    assert_eq!(
        found,
        [
            ("no-latest".to_string(), vec!["container main uses the latest tag".to_string()]),
            ("require-cost-center".to_string(), vec![r#"you must provide labels: {"cost-center"}"#.to_string()]),
        ]
    );
    let details = &decisions[1].outcome.as_ref().unwrap()[0].details;
    assert_eq!(details, &json!({"missing_labels": ["cost-center"]}));

    let good = pod(json!({"cost-center": "42"}), "registry.example/web:1.2");
    assert!(messages(&set, &request(&good, "dev", &user)).iter().all(|(_, m)| m.is_empty()));
}

#[test]
fn match_selects_kinds_operations_namespaces_and_labels() {
    let deny_all = r#"package x
deny contains "no" if { true }"#;
    let compile = |id: PolicyId, matching: Value| Policy::compile(id, &spec(json!({"rego": deny_all, "match": matching}))).unwrap();
    let set = PolicySet::default()
        .with(compile(cluster("nodes-only"), json!({"kinds": ["Node"]})))
        .with(compile(cluster("updates-only"), json!({"operations": ["UPDATE"]})))
        .with(compile(cluster("not-in-dev"), json!({"excludedNamespaces": ["dev"]})))
        .with(compile(cluster("prod-only"), json!({"namespaces": ["prod"]})))
        .with(compile(cluster("tier-front"), json!({"labelSelector": {"matchLabels": {"tier": "front"}}})))
        .with(compile(
            cluster("pci-namespaces"),
            json!({"namespaceSelector": {"matchExpressions": [{"key": "pci", "operator": "Exists"}]}}),
        ))
        // A namespace's own policy never sees another namespace, whatever its match says.
        .with(compile(PolicyId { namespace: Some("qa".into()), name: "own".into() }, json!({"namespaces": ["dev"]})));
    let user = UserInfo::default();
    let object = pod(json!({"tier": "front"}), "x:1");
    let names = |request: &Request<'_>| set.review(request).into_iter().map(|d| d.policy.to_string()).collect::<Vec<_>>();

    assert_eq!(names(&request(&object, "dev", &user)), ["tier-front"]);
    assert_eq!(names(&request(&object, "prod", &user)), ["not-in-dev", "prod-only", "tier-front"]);
    assert_eq!(names(&request(&object, "qa", &user)), ["not-in-dev", "tier-front", "qa/own"], "cluster policies first");
    let labels = json!({"pci": "yes"});
    let pci = Request { namespace_labels: labels.as_object(), ..request(&object, "dev", &user) };
    assert_eq!(names(&pci), ["pci-namespaces", "tier-front"]);
    let update = Request { operation: Operation::Update, ..request(&object, "dev", &user) };
    assert_eq!(names(&update), ["tier-front", "updates-only"]);
}

#[test]
fn invalid_rego_is_reported_with_line_and_column() {
    let broken = "package x\n\ndeny contains msg if {\n  msg := \n}\n";
    let error = Policy::compile(cluster("broken"), &spec(json!({"rego": broken}))).unwrap_err();
    assert_eq!(error.field, "spec.rego");
    assert!(error.message.contains(":5:") || error.message.contains(":4:"), "{}", error.message);

    let lib_error =
        Policy::compile(cluster("lib"), &spec(json!({"rego": NO_LATEST_V1, "libs": ["package lib\nthis is not rego"]}))).unwrap_err();
    assert_eq!(lib_error.field, "spec.libs[0]");

    // v0 text is not v1: the version is declared, not guessed.
    let as_v1 = Policy::compile(cluster("v0-as-v1"), &spec(json!({"rego": REQUIRED_LABELS_V0}))).unwrap_err();
    assert_eq!(as_v1.field, "spec.rego");

    let undecided = Policy::compile(cluster("nothing"), &spec(json!({"rego": "package x\nallow := true"}))).unwrap_err();
    assert!(undecided.message.contains("neither `violation`"), "{}", undecided.message);
}

#[test]
fn libraries_are_imported() {
    let lib = r#"package lib.images
is_pinned(image) if contains(image, "@sha256:")"#;
    let rego = r#"package pinned
import data.lib.images
deny contains sprintf("%s is not pinned by digest", [c.image]) if {
  some c in input.review.object.spec.containers
  not images.is_pinned(c.image)
}"#;
    let set = PolicySet::default().with(Policy::compile(cluster("pinned"), &spec(json!({"rego": rego, "libs": [lib]}))).unwrap());
    let user = UserInfo::default();
    let object = pod(json!({}), "registry.example/web:1");
    assert_eq!(messages(&set, &request(&object, "dev", &user))[0].1, ["registry.example/web:1 is not pinned by digest"]);
}

#[test]
fn a_policy_past_its_time_budget_fails_alone() {
    let slow = r#"package slow
deny contains "too many" if {
  input.review.object.kind == "Pod"
  count([x | some i in numbers.range(1, 5000); some j in numbers.range(1, 5000); x := i * j]) > 0
}"#;
    let policy = Policy::compile(cluster("slow"), &spec(json!({"rego": slow}))).unwrap();
    let set = PolicySet::default().with(policy);
    let user = UserInfo::default();
    let object = pod(json!({}), "x:1");
    let started = std::time::Instant::now();
    let decision = set.review(&request(&object, "dev", &user)).pop().unwrap();
    let error = decision.outcome.unwrap_err();
    assert!(error.contains("time") || error.contains("limit"), "{error}");
    assert!(started.elapsed() < std::time::Duration::from_secs(2), "{:?}", started.elapsed());
}

#[test]
fn the_inventory_is_laid_out_as_gatekeeper_lays_it_out() {
    let objects = [
        pod(json!({"owner": "alice"}), "x:1"),
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "dev"}}),
        json!({"apiVersion": "kapsel.io/v1alpha1", "kind": "Plugin", "metadata": {"name": "spread"}}),
        json!({"kind": "Pod", "metadata": {"name": "typeless", "namespace": "dev"}}),
    ];
    let layout = serde_json::to_value(kapsel_admission::inventory(&objects).unwrap()).unwrap();
    assert_eq!(layout["namespace"]["dev"]["v1"]["Pod"]["web"], objects[0]);
    assert_eq!(layout["cluster"]["v1"]["Namespace"]["dev"], objects[1]);
    assert_eq!(layout["cluster"]["kapsel.io/v1alpha1"]["Plugin"]["spread"], objects[2]);
    assert_eq!(layout["namespace"]["dev"]["v1"]["Pod"].as_object().unwrap().len(), 1, "objects without apiVersion are left out");
    let empty = serde_json::to_value(kapsel_admission::inventory(&[]).unwrap()).unwrap();
    assert_eq!(empty, json!({"namespace": {}, "cluster": {}}));
}

#[test]
fn only_policies_that_declare_an_inventory_see_one() {
    let counting = r#"package counting
deny contains sprintf("%d pods, %d nodes", [count(pods), count(nodes)]) if { true }
pods := object.get(data.inventory.namespace, [input.review.namespace, "v1", "Pod"], {})
nodes := object.get(data.inventory.cluster, ["v1", "Node"], {})"#;
    let peeking = r#"package peeking
deny contains "saw an inventory" if data.inventory"#;
    let set = PolicySet::default()
        .with(Policy::compile(cluster("counting"), &spec(json!({"rego": counting, "inventory": {"kinds": ["Pod"]}}))).unwrap())
        .with(Policy::compile(cluster("peeking"), &spec(json!({"rego": peeking}))).unwrap());
    let user = UserInfo::default();
    let object = pod(json!({}), "x:1");
    let request = request(&object, "dev", &user);
    assert_eq!(set.inventory_kinds(&request).into_iter().collect::<Vec<_>>(), ["Pod"]);
    assert_eq!(set.get(&cluster("counting")).unwrap().inventory_kinds(), ["Pod"]);

    let mut other = pod(json!({}), "x:1");
    other["metadata"]["name"] = json!("other");
    let mut elsewhere = other.clone();
    elsewhere["metadata"]["namespace"] = json!("prod");
    let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}});
    let existing = [other, elsewhere, node];
    let decided = |decisions: Vec<kapsel_admission::Decision>| {
        decisions.into_iter().map(|d| d.outcome.unwrap().into_iter().map(|v| v.msg).collect::<Vec<_>>()).collect::<Vec<_>>()
    };
    // Only the declared kind, only the request's namespace; the policy without an inventory sees none.
    assert_eq!(decided(set.review_with_inventory(&request, &existing)), [vec!["1 pods, 0 nodes".to_string()], vec![]]);
    assert_eq!(decided(set.review(&request)), [vec!["0 pods, 0 nodes".to_string()], vec![]]);
}
