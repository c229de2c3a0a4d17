//! Tenants' policies (namespace `AdmissionPolicy`) run in Kapsel's Rego
//! evaluator component: they decide exactly as IT's policies do in the
//! server's process, and the sandbox stops what the engine's own checks
//! cannot — one step that walks 2^40 shared nodes, memory grown by any
//! means, a compile that never ends — within the policy's budget.

use std::time::{Duration, Instant};

use kapsel_admission::{CompileError, ObjectType, Operation, Policy, PolicyId, PolicySet, Request, UserInfo, Violation};
use kapsel_api::kinds::admission_policy::PolicySpec;
use serde_json::{Value, json};

mod common;
use common::REQUIRED_LABELS_V0;

/// Well past the 100 ms budget; an unbounded evaluation of these cases takes hours.
const QUICK: Duration = Duration::from_secs(2);

fn spec(fields: Value) -> PolicySpec {
    let mut fields = fields;
    fields["match"] = json!({"kinds": ["Pod"]});
    serde_json::from_value(fields).unwrap()
}

fn tenant(name: &str) -> PolicyId {
    PolicyId { namespace: Some("dev".into()), name: name.into() }
}

fn cluster(name: &str) -> PolicyId {
    PolicyId { namespace: None, name: name.into() }
}

fn pod(labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": "dev", "labels": labels},
           "spec": {"containers": [{"name": "app", "image": "app:latest"}]}})
}

fn evaluate(policy: &Policy, object: &Value) -> (Result<Vec<Violation>, String>, Duration) {
    let user = UserInfo::default();
    let object_type = ObjectType::of(object);
    let review = Request::about(&object_type, Operation::Create, object, None, &user).review().unwrap();
    let started = Instant::now();
    let outcome = policy.evaluate(&review, None);
    (outcome, started.elapsed())
}

/// Compiles the evaluator component now (once per process), so that what a test times is the policy alone.
fn sandbox_ready() {
    kapsel_plugins::rego::prepare().expect("the Rego sandbox starts");
}

/// Asserts that the tenant policy `rego` compiles and then fails quickly on a pod, with an error mentioning each of `parts`.
#[track_caller]
fn stopped(rego: &str, parts: &[&str]) {
    sandbox_ready();
    let policy = Policy::compile(tenant("hostile"), &spec(json!({"rego": rego}))).unwrap_or_else(|e| panic!("{e}"));
    let (outcome, took) = evaluate(&policy, &pod(json!({})));
    let error = outcome.expect_err("a hostile policy must not succeed");
    for part in parts {
        assert!(error.contains(part), "{error:?} lacks {part:?}");
    }
    assert!(took < QUICK, "took {took:?}: {error}");
}

/// Rules `a0`…`a40` (and `b…`, built apart), each the one before twice: a
/// few hundred bytes in memory, 2^40 nodes to walk.
fn doubled(prefix: &str) -> String {
    let mut rego = format!("{prefix}0 := [input.review.object.kind]\n");
    for i in 1..=40 {
        rego.push_str(&format!("{prefix}{i} := [{prefix}{0}, {prefix}{0}]\n", i - 1));
    }
    rego
}

#[test]
fn one_step_over_shared_values_stops_at_the_time_budget() {
    let shared = format!("package p\n{}{}", doubled("a"), doubled("b"));
    // Comparing two equal values built apart: one step of the engine, 2^40 comparisons.
    stopped(&format!("{shared}deny contains \"x\" if {{ a40 == b40 }}\n"), &["time budget of 100 ms"]);
    // A set of them: inserting compares.
    stopped(&format!("{shared}deny contains \"x\" if {{ count({{a40, b40}}) > 0 }}\n"), &["time budget of 100 ms"]);
    // The same rule written out as a decision.
    stopped(&format!("{shared}deny contains a40 if {{ true }}\n"), &["exceeded"]);
}

#[test]
fn memory_is_capped_by_the_sandbox_whatever_allocates_it() {
    let range =
        |n: &str| format!("package p\ndeny contains \"x\" if {{ input.review.object.kind == \"Pod\"; count(numbers.range(0, {n})) > 0 }}");
    stopped(&range("30000000"), &["exceeded the memory of its sandbox, 64 MiB"]);
    // More than a 32-bit guest can even ask for: it fails alone, saying why.
    stopped(&range("300000000"), &["failed in its sandbox: capacity overflow"]);
    // An array doubled by a builtin the sandbox does not guard: stopped at the
    // cap (given a second, so that the clock cannot come first on a busy machine).
    let mut doubling = String::from("package p\na0 := numbers.range(count(input.review.object.kind), 200000)\n");
    for i in 1..=40 {
        doubling.push_str(&format!("a{i} := array.concat(a{0}, a{0})\n", i - 1));
    }
    doubling.push_str("deny contains \"x\" if { count(a40) > 0 }\n");
    sandbox_ready();
    let policy = Policy::compile(tenant("doubling"), &spec(json!({"rego": doubling}))).unwrap();
    let object = pod(json!({}));
    let user = UserInfo::default();
    let object_type = ObjectType::of(&object);
    let review = Request::about(&object_type, Operation::Create, &object, None, &user).review().unwrap();
    let limits = kapsel_admission::Limits { time: Duration::from_secs(1), ..Default::default() };
    let error = policy.evaluate_within(&review, None, limits).unwrap_err();
    assert!(error.contains("exceeded the memory of its sandbox, 64 MiB"), "{error}");
}

#[test]
fn a_compile_that_does_not_end_is_stopped() {
    // Preparing the policy evaluates it on an empty input: this one loops over ten billion pairs.
    let looping = "package p\ndeny contains \"x\" if { r := numbers.range(1, 100000); some i in r; some j in r; i == j + 100001 }";
    sandbox_ready();
    let started = Instant::now();
    let error = Policy::compile(tenant("looping"), &spec(json!({"rego": looping}))).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    assert_eq!(error.field, "spec.rego");
    assert!(error.message.contains("took longer than 1 s"), "{error}");
}

#[test]
fn a_failed_evaluation_leaves_the_policy_working() {
    let rego = "package p\nimport rego.v1\ndeny contains \"slow\" if { input.review.object.metadata.labels.slow; r := numbers.range(1, 100000); some i in r; some j in r; i == j + 100001 }\ndeny contains \"no team\" if not input.review.object.metadata.labels.team";
    let policy = Policy::compile(tenant("recovers"), &spec(json!({"rego": rego}))).unwrap();
    let (slow, _) = evaluate(&policy, &pod(json!({"slow": "yes"})));
    assert!(slow.unwrap_err().contains("time budget"));
    // The instance that ran out was discarded; the next evaluation gets a fresh one.
    let (outcome, _) = evaluate(&policy, &pod(json!({})));
    assert_eq!(outcome.unwrap().into_iter().map(|v| v.msg).collect::<Vec<_>>(), ["no team"]);
    let (outcome, _) = evaluate(&policy, &pod(json!({"team": "a"})));
    assert_eq!(outcome.unwrap(), []);
}

const NO_LATEST_V1: &str = r#"package nolatest
import rego.v1
import data.lib.images
deny contains msg if {
  some c in input.review.object.spec.containers
  images.latest(c.image)
  msg := sprintf("container %s uses a latest tag", [c.name])
}"#;

const IMAGES_LIB: &str = "package lib.images\nimport rego.v1\nlatest(image) if endswith(image, \":latest\")";

#[test]
fn a_tenant_policy_decides_as_the_same_policy_of_it_does() {
    let specs = [
        spec(json!({"rego": REQUIRED_LABELS_V0, "regoVersion": "v0", "parameters": {"labels": ["team", "tier"]}})),
        spec(json!({"rego": NO_LATEST_V1, "libs": [IMAGES_LIB]})),
    ];
    for (i, spec) in specs.iter().enumerate() {
        let sandboxed = Policy::compile(tenant(&format!("p{i}")), spec).unwrap_or_else(|e| panic!("{e}"));
        let in_process = Policy::compile(cluster(&format!("p{i}")), spec).unwrap_or_else(|e| panic!("{e}"));
        for labels in [json!({}), json!({"team": "a"}), json!({"team": "a", "tier": "web"})] {
            let object = pod(labels);
            let (expected, _) = evaluate(&in_process, &object);
            let (got, _) = evaluate(&sandboxed, &object);
            assert_eq!(got, expected, "policy {i} on {object}");
        }
    }
    // The same violations, details included.
    let sandboxed = Policy::compile(tenant("labels"), &specs[0]).unwrap();
    let (violations, _) = evaluate(&sandboxed, &pod(json!({"team": "a"})));
    let violations = violations.unwrap();
    assert_eq!(violations.len(), 1);
    assert_eq!(violations[0].msg, "you must provide labels: {\"tier\"}");
    assert_eq!(violations[0].details, json!({"missing_labels": ["tier"]}));
}

#[test]
fn inventory_reaches_a_tenant_policy_as_data() {
    let counting = "package unique\nimport rego.v1\ndeny contains \"taken\" if { some name, _ in data.inventory.namespace.dev.v1.Pod; name == input.review.object.metadata.name }";
    let policy = Policy::compile(tenant("unique"), &spec(json!({"rego": counting, "inventory": {"kinds": ["Pod"]}}))).unwrap();
    let set = PolicySet::default().with(policy);
    let object = pod(json!({}));
    let user = UserInfo::default();
    let object_type = ObjectType::of(&object);
    let request = Request::about(&object_type, Operation::Create, &object, None, &user);
    let existing = [pod(json!({"old": "yes"}))];
    let decisions = set.review_with_inventory(&request, &existing);
    assert_eq!(decisions[0].outcome.as_ref().unwrap().iter().map(|v| v.msg.as_str()).collect::<Vec<_>>(), ["taken"]);
    let decisions = set.review_with_inventory(&request, &[]);
    assert_eq!(decisions[0].outcome.as_ref().unwrap(), &[]);
}

#[test]
fn compile_errors_name_the_field_at_fault() {
    let broken_lib = Policy::compile(tenant("lib"), &spec(json!({"rego": NO_LATEST_V1, "libs": ["package lib\nthis is not rego"]})));
    let CompileError { field, message } = broken_lib.unwrap_err();
    assert_eq!(field, "spec.libs[0]");
    assert!(message.contains("lib-0.rego"), "{message}");
    let broken = Policy::compile(tenant("main"), &spec(json!({"rego": "package p\ndeny contains \"x\" if {"}))).unwrap_err();
    assert_eq!(broken.field, "spec.rego");
    assert!(broken.message.contains("policy.rego"), "{}", broken.message);
    let undecided = Policy::compile(tenant("nothing"), &spec(json!({"rego": "package x\nallow := true"}))).unwrap_err();
    assert_eq!(undecided.field, "spec.rego");
    assert!(undecided.message.contains("neither `violation`"), "{}", undecided.message);
}

#[test]
fn a_chain_of_rules_too_deep_for_the_sandbox_stack_is_refused_clearly() {
    let chain = |n: usize| {
        let mut rego = String::from("package p\nd0 := [input.review.object.kind]\n");
        for i in 1..=n {
            rego.push_str(&format!("d{i} := [d{}]\n", i - 1));
        }
        rego.push_str(&format!("deny contains \"x\" if {{ count(d{n}) > 5 }}\n"));
        rego
    };
    let policy = Policy::compile(tenant("chain"), &spec(json!({"rego": chain(200)}))).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(evaluate(&policy, &pod(json!({}))).0.unwrap(), []);
    // The longest chain 64 KiB can write overflows the sandbox's stack, which traps (in the host's process it would end it).
    let refused = Policy::compile(tenant("chain"), &spec(json!({"rego": chain(3000)}))).unwrap_err();
    assert_eq!(refused.field, "spec.rego");
    assert!(refused.message.contains("too deeply for the sandbox's stack"), "{}", refused.message);
}
