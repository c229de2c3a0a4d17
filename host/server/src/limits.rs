//! `LimitRange`s applied to new pods, as Kubernetes' LimitRanger does,
//! before validation and admission (so policies and the QoS class see the
//! result): a container's missing limits are filled from the namespace's
//! `Container` limits' `default`, and missing requests from
//! `defaultRequest` (or, without one, from `default`, as Kubernetes
//! defaults it); then every container is checked against `min`, `max` and
//! `maxLimitRequestRatio`, and the pod's sums against `Pod` limits. A pod
//! outside them is refused with 403, every reason listed:
//! `pods "web" is forbidden: [maximum cpu usage per Container is 1, but limit is 2]`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::LimitRangeItem;
use kapsel_api::Quantity;
use kapsel_api::kinds::limit_range::LIMIT_RANGE;
use kapsel_api::object;
use kapsel_store::Store;
use serde_json::{Value, json};

use crate::error::ApiError;

/// The `(requests, limits)` of a container, as quantities.
type Amounts = (BTreeMap<String, Quantity>, BTreeMap<String, Quantity>);

/// Applies the namespace's limit ranges to `pod` (a new pod in `namespace`).
pub async fn apply(store: &Store, namespace: &str, pod: &mut Value) -> Result<(), ApiError> {
    let ranges = store.list(&LIMIT_RANGE.store_key(), Some(namespace)).await.map_err(|e| ApiError::from_store(e, &LIMIT_RANGE, ""))?;
    let items: Vec<LimitRangeItem> = ranges
        .objects
        .iter()
        .filter_map(|range| range.pointer("/spec/limits").cloned())
        .filter_map(|limits| serde_json::from_value::<Vec<LimitRangeItem>>(limits).ok())
        .flatten()
        .collect();
    if items.is_empty() {
        return Ok(());
    }
    let name = object::name(pod).unwrap_or_default().to_string();
    let mut containers: Vec<&mut Value> = Vec::new();
    if let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) {
        for (field, value) in spec.iter_mut() {
            if let ("containers" | "initContainers", Value::Array(list)) = (field.as_str(), value) {
                containers.extend(list.iter_mut());
            }
        }
    }
    let mut problems = Vec::new();
    let mut pod_requests: BTreeMap<String, Quantity> = BTreeMap::new();
    let mut pod_limits: BTreeMap<String, Quantity> = BTreeMap::new();
    for container in containers {
        for item in items.iter().filter(|i| i.type_ == "Container") {
            fill_defaults(container, item);
        }
        let (requests, limits) = amounts(container);
        for item in items.iter().filter(|i| i.type_ == "Container") {
            check(item, "Container", &requests, &limits, &mut problems);
        }
        for (totals, amounts) in [(&mut pod_requests, &requests), (&mut pod_limits, &limits)] {
            for (resource, quantity) in amounts {
                let total = totals.entry(resource.clone()).or_default();
                *total = *total + *quantity;
            }
        }
    }
    for item in items.iter().filter(|i| i.type_ == "Pod") {
        check(item, "Pod", &pod_requests, &pod_limits, &mut problems);
    }
    match problems.len() {
        0 => Ok(()),
        1 => Err(ApiError::Forbidden(format!("pods {name:?} is forbidden: {}", problems[0]))),
        _ => Err(ApiError::Forbidden(format!("pods {name:?} is forbidden: [{}]", problems.join(", ")))),
    }
}

/// Fills a container's missing limits from `item.default`, and its missing
/// requests from `item.defaultRequest`, or `default` for a resource that
/// has no default request (as Kubernetes defaults a LimitRange).
fn fill_defaults(container: &mut Value, item: &LimitRangeItem) {
    let limits: BTreeMap<&String, &str> = item.default.iter().flatten().map(|(r, q)| (r, q.0.as_str())).collect();
    let mut requests = limits.clone();
    requests.extend(item.default_request.iter().flatten().map(|(r, q)| (r, q.0.as_str())));
    if requests.is_empty() {
        return;
    }
    // Anything of the wrong shape (a container, its resources, its amounts
    // not objects) is left as it is, for validation to report.
    let Some(container) = container.as_object_mut() else { return };
    let Some(resources) = object_at(container, "resources") else { return };
    for (field, values) in [("limits", limits), ("requests", requests)] {
        let Some(amounts) = object_at(resources, field) else { continue };
        for (resource, quantity) in values {
            amounts.entry(resource.as_str()).or_insert_with(|| json!(quantity));
        }
    }
}

/// The object under `field` of `parent`, made when absent or null; `None`
/// when it is something else.
pub fn object_at<'a>(parent: &'a mut serde_json::Map<String, Value>, field: &str) -> Option<&'a mut serde_json::Map<String, Value>> {
    let value = parent.entry(field).or_insert(Value::Null);
    if value.is_null() {
        *value = json!({});
    }
    value.as_object_mut()
}

/// A container's requests and limits (values that do not parse were refused by validation before; they are skipped here).
fn amounts(container: &Value) -> Amounts {
    let read = |field: &str| -> BTreeMap<String, Quantity> {
        container
            .pointer(&format!("/resources/{field}"))
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .filter_map(|(resource, value)| {
                let text = match value {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    _ => return None,
                };
                Quantity::parse(&text).ok().map(|q| (resource.clone(), q))
            })
            .collect()
    };
    (read("requests"), read("limits"))
}

/// Checks `requests`/`limits` of a container or a pod against `item`'s bounds.
fn check(
    item: &LimitRangeItem,
    scope: &str,
    requests: &BTreeMap<String, Quantity>,
    limits: &BTreeMap<String, Quantity>,
    problems: &mut Vec<String>,
) {
    let bound = |quantity: &k8s_openapi::apimachinery::pkg::api::resource::Quantity| Quantity::parse(&quantity.0).ok();
    for (resource, min) in item.min.iter().flatten() {
        let Some(min) = bound(min) else { continue };
        match requests.get(resource).or(limits.get(resource)) {
            None => problems.push(format!("minimum {resource} usage per {scope} is {min}, but no request is specified")),
            Some(request) if *request < min => {
                problems.push(format!("minimum {resource} usage per {scope} is {min}, but request is {request}"))
            }
            Some(_) => {}
        }
    }
    for (resource, max) in item.max.iter().flatten() {
        let Some(max) = bound(max) else { continue };
        match limits.get(resource) {
            None => problems.push(format!("maximum {resource} usage per {scope} is {max}, but no limit is specified")),
            Some(limit) if *limit > max => problems.push(format!("maximum {resource} usage per {scope} is {max}, but limit is {limit}")),
            Some(_) => {}
        }
    }
    for (resource, ratio) in item.max_limit_request_ratio.iter().flatten() {
        let (Some(ratio), Some(limit), Some(request)) = (bound(ratio), limits.get(resource), requests.get(resource)) else { continue };
        if request.millis() <= 0 {
            continue;
        }
        let actual = limit.millis() as f64 / request.millis() as f64;
        if actual > ratio.millis() as f64 / 1000.0 {
            problems.push(format!("{resource} max limit to request ratio per {scope} is {ratio}, but provided ratio is {actual:.2}"));
        }
    }
}
