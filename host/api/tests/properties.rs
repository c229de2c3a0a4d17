//! Property tests of the contract's parsers and validators over arbitrary
//! input: none of them panics, whatever a request carries, and quantities
//! stay exact and bounded. The number of cases per property is proptest's
//! (`PROPTEST_CASES`, default 256); CI runs the default.

use kapsel_api::Quantity;
use kapsel_api::quantity::QuantityProblem;
use kapsel_api::registry::ALL;
use kapsel_api::selector::{FieldSelector, LabelSelector};
use proptest::prelude::*;
use serde_json::{Map, Value};

/// Strings shaped like quantities: digits, a point, a sign, suffixes and exponents.
fn quantity_like() -> impl Strategy<Value = String> {
    "[+-]?[0-9]{0,45}(\\.[0-9]{0,45})?(m|n|u|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei|[eE][+-]?[0-9]{1,4})?"
}

/// Arbitrary JSON, with object keys drawn from the names of pod fields so
/// that validators meet their own fields in the wrong shapes.
fn json() -> impl Strategy<Value = Value> {
    let keys = prop_oneof![
        Just("spec".to_string()),
        Just("metadata".to_string()),
        Just("containers".to_string()),
        Just("initContainers".to_string()),
        Just("resources".to_string()),
        Just("requests".to_string()),
        Just("limits".to_string()),
        Just("cpu".to_string()),
        Just("memory".to_string()),
        Just("name".to_string()),
        Just("image".to_string()),
        Just("labels".to_string()),
        Just("env".to_string()),
        Just("activeDeadlineSeconds".to_string()),
        Just("resourceClassName".to_string()),
        Just("hard".to_string()),
        Just("rego".to_string()),
        Just("match".to_string()),
        Just("roles".to_string()),
        "[a-zA-Z]{1,8}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        quantity_like().prop_map(Value::String),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(6, 64, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((keys.clone(), inner), 0..6).prop_map(|fields| Value::Object(fields.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

proptest! {
    #[test]
    fn quantities_never_panic_and_stay_in_range(text in prop_oneof![quantity_like(), ".{0,64}"]) {
        if let Ok(quantity) = Quantity::parse(&text) {
            let max = i128::from(Quantity::MAX_UNITS) * 1000;
            prop_assert!(quantity.millis().abs() <= max, "{text} parsed to {quantity:?}");
            // The canonical form reads back as the same amount.
            prop_assert_eq!(Quantity::parse(&quantity.to_string()).unwrap(), quantity);
        }
    }

    #[test]
    fn sums_of_quantities_never_wrap(texts in prop::collection::vec(quantity_like(), 0..64)) {
        let quantities: Vec<Quantity> = texts.iter().filter_map(|t| Quantity::parse(t).ok()).collect();
        let total: Quantity = quantities.iter().copied().sum();
        let exact: Option<i128> = quantities.iter().try_fold(0i128, |sum, q| sum.checked_add(q.millis()));
        if let Some(exact) = exact {
            prop_assert_eq!(total.millis(), exact);
        }
        if quantities.iter().all(|q| !q.is_negative()) {
            prop_assert!(quantities.iter().all(|q| *q <= total));
        }
    }

    #[test]
    fn too_large_is_told_apart_from_malformed(digits in "[1-9][0-9]{19,60}") {
        let error = Quantity::parse(&digits).unwrap_err();
        prop_assert_eq!(error.0, QuantityProblem::TooLarge);
    }

    #[test]
    fn selectors_never_panic(text in ".{0,80}", shaped in "([a-z0-9./-]{0,10}(=|==|!=| in | notin |,|\\(|\\)|!)){0,8}") {
        for input in [&text, &shaped] {
            if let Ok(selector) = LabelSelector::parse(input) {
                let _ = selector.matches(None);
            }
            let _ = FieldSelector::parse(input, &["metadata.name", "metadata.namespace", "spec.nodeName", "status.phase"]);
        }
    }

    #[test]
    fn every_kind_validates_arbitrary_objects_without_panicking(object in json()) {
        for resource in ALL {
            let _ = (resource.validate)(&object);
            let _ = kapsel_api::fields::unknown_fields(resource, &object);
            for column in resource.columns {
                let _ = (column.value)(&object);
            }
        }
    }
}
