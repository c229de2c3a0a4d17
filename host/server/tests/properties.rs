//! Property tests of what a request can make the server do: the body
//! decoders and the three patch kinds over arbitrary input never panic and
//! never produce more than their budgets allow, and arbitrary objects sent
//! as a tenant through the real router are answered with a `Status` below
//! 500. The number of cases per property is proptest's (`PROPTEST_CASES`,
//! default 256).

mod common;

use axum::http::{HeaderMap, HeaderValue, Method};
use common::*;
use kapsel_server::http::body;
use kapsel_server::patch;
use proptest::prelude::*;
use serde_json::{Map, Value, json};

fn keys() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("spec".to_string()),
        Just("metadata".to_string()),
        Just("annotations".to_string()),
        Just("labels".to_string()),
        Just("containers".to_string()),
        Just("resources".to_string()),
        Just("requests".to_string()),
        Just("limits".to_string()),
        Just("name".to_string()),
        Just("image".to_string()),
        Just("env".to_string()),
        Just("nodeName".to_string()),
        Just("resourceClassName".to_string()),
        Just("$patch".to_string()),
        Just("$retainKeys".to_string()),
        Just("$setElementOrder/containers".to_string()),
        Just("$deleteFromPrimitiveList/finalizers".to_string()),
        "[a-z]{1,6}",
    ]
}

fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        prop_oneof![Just("delete"), Just("replace"), Just("app:1"), Just("small"), Just("100m"), Just("9223372036854775807Ei")]
            .prop_map(|s| Value::String(s.to_string())),
        "[a-z0-9:./-]{0,10}".prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 48, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((keys(), inner), 0..5).prop_map(|f| Value::Object(f.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn pointer() -> impl Strategy<Value = String> {
    prop::collection::vec(prop_oneof![keys(), Just("0".to_string()), Just("-".to_string())], 0..4)
        .prop_map(|parts| parts.iter().map(|p| format!("/{p}")).collect())
}

fn json_patch_op() -> impl Strategy<Value = Value> {
    prop_oneof![
        (pointer(), json()).prop_map(|(path, value)| json!({"op": "add", "path": path, "value": value})),
        (pointer(), json()).prop_map(|(path, value)| json!({"op": "replace", "path": path, "value": value})),
        pointer().prop_map(|path| json!({"op": "remove", "path": path})),
        (pointer(), pointer()).prop_map(|(from, path)| json!({"op": "copy", "from": from, "path": path})),
        (pointer(), pointer()).prop_map(|(from, path)| json!({"op": "move", "from": from, "path": path})),
        (pointer(), json()).prop_map(|(path, value)| json!({"op": "test", "path": path, "value": value})),
    ]
}

fn headers(media: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_str(media).unwrap());
    headers
}

/// What a value counts as, as the budgets count it (about its JSON's bytes).
fn cost(value: &Value) -> usize {
    kapsel_server::budget::NODE_COST
        + match value {
            Value::String(s) => s.len(),
            Value::Array(items) => items.iter().map(cost).sum(),
            Value::Object(fields) => fields.iter().map(|(k, v)| k.len() + cost(v)).sum(),
            _ => 0,
        }
}

/// YAML built from pieces that make anchors, aliases, flow and block forms likely.
fn yaml_like() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            Just("&a ".to_string()),
            Just("*a".to_string()),
            Just("[".to_string()),
            Just("]".to_string()),
            Just("{".to_string()),
            Just("}".to_string()),
            Just(", ".to_string()),
            Just(": ".to_string()),
            Just("\n- ".to_string()),
            Just("\n  ".to_string()),
            Just("<<: *a".to_string()),
            Just("!!str ".to_string()),
            "[a-z0-9]{1,5}",
        ],
        0..60,
    )
    .prop_map(|parts| format!("a: {}", parts.concat()))
}

proptest! {
    #[test]
    fn bodies_decode_or_are_refused_within_budget(yaml in yaml_like(), bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        for (media, input) in [("application/yaml", yaml.as_bytes()), ("application/json", &bytes[..]), ("application/yaml", &bytes[..]),
            ("application/vnd.kubernetes.protobuf", &bytes[..])] {
            if let Ok(value) = body::decode_object(&headers(media), input) {
                prop_assert!(value.is_object());
                prop_assert!(cost(&value) <= body::yaml_budget(input.len()) + 64 * 1024, "{media}: {} bytes decoded to {}", input.len(), cost(&value));
            }
        }
    }

    #[test]
    fn patches_apply_or_are_refused_without_panicking(
        document in json(),
        merge in json(),
        operations in prop::collection::vec(json_patch_op(), 0..12),
    ) {
        let document = json!({"metadata": {"name": "x"}, "spec": document});
        let json_patch = Value::Array(operations);
        for (kind, patch) in [(patch::Kind::Merge, &merge), (patch::Kind::StrategicMerge, &merge), (patch::Kind::Json, &json_patch)] {
            if let Ok(result) = patch::apply(kind, &document, patch) {
                prop_assert!(cost(&result) <= kapsel_server::budget::MAX_OBJECT_COST);
            }
        }
    }
}

/// Objects of every shape, posted and patched as a tenant through the
/// router: each answer is below 500 and, when it is an error, a `Status`.
#[test]
fn arbitrary_objects_through_the_router_never_answer_5xx() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let api = runtime.block_on(async {
        let api = Api::start().await;
        api.push_images("dev", &["app:1"]).await;
        api.create_pod("dev", pod("target")).await;
        // A class and a limit range, so that pods naming one and the defaults meet every shape.
        api.add_class_and_limit_range("dev").await;
        api
    });
    let paths = [
        pods("dev"),
        "/api/v1/namespaces/dev/resourcequotas".to_string(),
        "/api/v1/namespaces/dev/limitranges".to_string(),
        "/apis/kapsel.io/v1alpha1/namespaces/dev/admissionpolicies".to_string(),
        "/apis/kapsel.io/v1alpha1/namespaces/dev/workloadtemplates".to_string(),
        "/apis/kapsel.io/v1alpha1/policyreviews".to_string(),
        "/apis/kapsel.io/v1alpha1/namespaces/dev/workloadtemplates/none/instantiate".to_string(),
    ];
    let config = ProptestConfig { failure_persistence: None, ..ProptestConfig::default() };
    let mut runner = proptest::test_runner::TestRunner::new(config);
    let strategy = (json(), json(), prop::collection::vec(json_patch_op(), 0..6), 0..paths.len());
    runner
        .run(&strategy, |(spec, metadata, operations, path)| {
            runtime.block_on(async {
                let mut object = json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec});
                if !object["metadata"].is_object() {
                    object["metadata"] = json!({"name": "fuzzed"});
                }
                let mut replies = vec![api.json_as(ALICE, Method::POST, &paths[path], Some(object.clone())).await];
                replies.push(
                    api.json_as(
                        ALICE,
                        Method::POST,
                        &paths[0],
                        Some(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "fuzzed-pod"}, "spec": spec_of(&object)})),
                    )
                    .await,
                );
                for (media, body) in [
                    (MERGE_PATCH, json!({"spec": object["spec"].clone()}).to_string()),
                    (STRATEGIC_PATCH, json!({"spec": object["spec"].clone()}).to_string()),
                    (JSON_PATCH, Value::Array(operations.clone()).to_string()),
                ] {
                    replies.push(api.call(Some(ALICE), Method::PATCH, &pod_path("dev", "target"), &[("content-type", media)], body).await);
                }
                for reply in replies {
                    prop_assert!(reply.status.as_u16() < 500, "{} {}", reply.status, reply.text);
                    if !reply.status.is_success() {
                        prop_assert_eq!(&reply.body["kind"], "Status", "{}", reply.text);
                    }
                }
                // Whatever was created goes again, so later cases meet the same state.
                api.json_as(ADMIN, Method::DELETE, &pod_path("dev", "fuzzed-pod"), None).await;
                Ok(())
            })
        })
        .unwrap();
}

fn spec_of(object: &Value) -> Value {
    object["spec"].clone()
}
