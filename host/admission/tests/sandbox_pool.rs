//! However many tenant policies there are, the sandbox keeps a bounded
//! number of evaluator instances (a test binary of its own: it counts the
//! process's instances).

use kapsel_admission::{ObjectType, Operation, Policy, PolicyId, Request, UserInfo};
use kapsel_api::kinds::admission_policy::PolicySpec;
use kapsel_plugins::rego::{MAX_INSTANCES, MAX_WARM, instances};
use serde_json::json;

fn evaluate(policy: &Policy) -> usize {
    let object = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": "dev"}, "spec": {"containers": []}});
    let user = UserInfo::default();
    let object_type = ObjectType::of(&object);
    let review = Request::about(&object_type, Operation::Create, &object, None, &user).review().unwrap();
    policy.evaluate(&review, None).unwrap().len()
}

#[test]
fn many_tenant_policies_hold_a_bounded_number_of_instances() {
    let policies: Vec<Policy> = (0..MAX_WARM + 20)
        .map(|i| {
            let rego = format!("package p{i}\nimport rego.v1\ndeny contains \"no team\" if not input.review.object.metadata.labels.team");
            let spec: PolicySpec = serde_json::from_value(json!({"rego": rego, "match": {"kinds": ["Pod"]}})).unwrap();
            Policy::compile(PolicyId { namespace: Some("dev".into()), name: format!("p{i}") }, &spec).unwrap()
        })
        .collect();
    for policy in &policies {
        assert_eq!(evaluate(policy), 1);
    }
    let (warm, alive) = instances();
    assert_eq!(warm, MAX_WARM, "the most recently used stay warm");
    assert!(alive <= MAX_INSTANCES, "{alive} instances");
    // The oldest were dropped to make room; their policies compile a fresh instance when next used.
    assert_eq!(evaluate(&policies[0]), 1);
    drop(policies);
    assert_eq!(instances(), (0, 0), "a dropped policy's instances go with it");
}
