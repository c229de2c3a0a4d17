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
    apply_ranges(&ranges.objects, pod)
}

/// Applies `ranges` (the LimitRange objects of the pod's namespace) to `pod`.
fn apply_ranges(ranges: &[Value], pod: &mut Value) -> Result<(), ApiError> {
    let items: Vec<LimitRangeItem> = ranges
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

#[cfg(test)]
mod tests {
    use super::*;

    fn range(limits: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": "sizes", "namespace": "dev"}, "spec": {"limits": limits}})
    }

    /// A pod named `web` with one container per entry of `resources` (`null`: none set).
    fn pod(resources: &[Value]) -> Value {
        let containers: Vec<Value> = resources
            .iter()
            .enumerate()
            .map(|(i, resources)| {
                let mut container = json!({"name": format!("c{i}"), "image": "app:1"});
                if !resources.is_null() {
                    container["resources"] = resources.clone();
                }
                container
            })
            .collect();
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"}, "spec": {"containers": containers}})
    }

    /// The message of a 403, or a panic naming what came instead.
    fn forbidden(result: Result<(), ApiError>) -> String {
        match result {
            Err(ApiError::Forbidden(message)) => message,
            other => panic!("expected 403 Forbidden, got {other:?}"),
        }
    }

    #[test]
    fn a_container_without_resources_gets_the_defaults() {
        let ranges =
            [range(json!([{"type": "Container", "default": {"cpu": "500m", "memory": "256Mi"}, "defaultRequest": {"cpu": "100m"}}]))];
        let mut pod = pod(&[Value::Null]);
        apply_ranges(&ranges, &mut pod).unwrap();
        let resources = &pod["spec"]["containers"][0]["resources"];
        assert_eq!(resources["limits"], json!({"cpu": "500m", "memory": "256Mi"}));
        // A request without a defaultRequest is the default limit, as Kubernetes defaults a LimitRange.
        assert_eq!(resources["requests"], json!({"cpu": "100m", "memory": "256Mi"}));
    }

    #[test]
    fn what_a_container_sets_itself_stays() {
        let ranges =
            [range(json!([{"type": "Container", "default": {"cpu": "500m", "memory": "256Mi"}, "defaultRequest": {"cpu": "100m"}}]))];
        let mut pod = pod(&[json!({"requests": {"cpu": "250m"}, "limits": {"cpu": "750m"}})]);
        apply_ranges(&ranges, &mut pod).unwrap();
        let resources = &pod["spec"]["containers"][0]["resources"];
        assert_eq!(resources["limits"], json!({"cpu": "750m", "memory": "256Mi"}));
        assert_eq!(resources["requests"], json!({"cpu": "250m", "memory": "256Mi"}));
    }

    #[test]
    fn init_containers_get_the_defaults_too() {
        let ranges = [range(json!([{"type": "Container", "default": {"memory": "64Mi"}}]))];
        let mut pod = pod(&[Value::Null]);
        pod["spec"]["initContainers"] = json!([{"name": "setup", "image": "app:1"}]);
        apply_ranges(&ranges, &mut pod).unwrap();
        assert_eq!(pod["spec"]["initContainers"][0]["resources"], json!({"limits": {"memory": "64Mi"}, "requests": {"memory": "64Mi"}}));
        assert_eq!(pod["spec"]["containers"][0]["resources"]["limits"], json!({"memory": "64Mi"}));
    }

    #[test]
    fn without_ranges_or_defaults_a_pod_is_left_as_it_is() {
        let bare = pod(&[Value::Null]);
        let mut unchanged = bare.clone();
        apply_ranges(&[], &mut unchanged).unwrap();
        assert_eq!(unchanged, bare);
        // Bounds alone default nothing; a Pod item defaults nothing either.
        let bounds =
            [range(json!([{"type": "Container", "maxLimitRequestRatio": {"cpu": "10"}}, {"type": "Pod", "default": {"cpu": "1"}}]))];
        apply_ranges(&bounds, &mut unchanged).unwrap();
        assert_eq!(unchanged, bare);
    }

    #[test]
    fn a_container_above_max_is_refused_naming_the_resource_and_both_amounts() {
        let ranges = [range(json!([{"type": "Container", "max": {"cpu": "1"}}]))];
        let mut big = pod(&[json!({"limits": {"cpu": "2"}})]);
        assert_eq!(
            forbidden(apply_ranges(&ranges, &mut big)),
            r#"pods "web" is forbidden: maximum cpu usage per Container is 1, but limit is 2"#
        );
        let mut at_max = pod(&[json!({"limits": {"cpu": "1000m"}})]);
        apply_ranges(&ranges, &mut at_max).unwrap();
        // A max needs a limit to compare with.
        let mut unlimited = pod(&[Value::Null]);
        assert_eq!(
            forbidden(apply_ranges(&ranges, &mut unlimited)),
            r#"pods "web" is forbidden: maximum cpu usage per Container is 1, but no limit is specified"#
        );
    }

    #[test]
    fn a_container_below_min_is_refused_and_a_limit_stands_for_a_missing_request() {
        let ranges = [range(json!([{"type": "Container", "min": {"memory": "16Mi"}}]))];
        let mut small = pod(&[json!({"requests": {"memory": "8Mi"}, "limits": {"memory": "64Mi"}})]);
        assert_eq!(
            forbidden(apply_ranges(&ranges, &mut small)),
            r#"pods "web" is forbidden: minimum memory usage per Container is 16Mi, but request is 8Mi"#
        );
        let mut limited = pod(&[json!({"limits": {"memory": "16Mi"}})]);
        apply_ranges(&ranges, &mut limited).unwrap();
        let mut unspecified = pod(&[Value::Null]);
        assert_eq!(
            forbidden(apply_ranges(&ranges, &mut unspecified)),
            r#"pods "web" is forbidden: minimum memory usage per Container is 16Mi, but no request is specified"#
        );
    }

    #[test]
    fn the_limit_to_request_ratio_is_bounded() {
        let ranges = [range(json!([{"type": "Container", "maxLimitRequestRatio": {"cpu": "10"}}]))];
        let mut twenty = pod(&[json!({"requests": {"cpu": "100m"}, "limits": {"cpu": "2"}})]);
        assert_eq!(
            forbidden(apply_ranges(&ranges, &mut twenty)),
            r#"pods "web" is forbidden: cpu max limit to request ratio per Container is 10, but provided ratio is 20.00"#
        );
        let mut ten = pod(&[json!({"requests": {"cpu": "100m"}, "limits": {"cpu": "1"}})]);
        apply_ranges(&ranges, &mut ten).unwrap();
    }

    #[test]
    fn defaults_are_filled_before_the_bounds_are_checked() {
        // The default limit of 2 CPUs is itself above max: a bare pod is refused for it.
        let ranges = [range(json!([{"type": "Container", "default": {"cpu": "2"}, "max": {"cpu": "1"}}]))];
        let mut bare = pod(&[Value::Null]);
        assert_eq!(
            forbidden(apply_ranges(&ranges, &mut bare)),
            r#"pods "web" is forbidden: maximum cpu usage per Container is 1, but limit is 2"#
        );
    }

    #[test]
    fn a_pod_item_bounds_the_sum_of_the_containers() {
        let ranges = [range(json!([{"type": "Pod", "max": {"memory": "1536Mi"}}]))];
        let gib = json!({"requests": {"memory": "1Gi"}, "limits": {"memory": "1Gi"}});
        let mut one = pod(std::slice::from_ref(&gib));
        apply_ranges(&ranges, &mut one).unwrap();
        let mut two = pod(&[gib.clone(), gib]);
        assert_eq!(
            forbidden(apply_ranges(&ranges, &mut two)),
            r#"pods "web" is forbidden: maximum memory usage per Pod is 1536Mi, but limit is 2Gi"#
        );
    }

    #[test]
    fn every_reason_is_listed_in_brackets() {
        let ranges = [range(json!([{"type": "Container", "min": {"memory": "16Mi"}, "max": {"cpu": "1"}}]))];
        let mut pod = pod(&[json!({"requests": {"memory": "8Mi"}, "limits": {"cpu": "2", "memory": "8Mi"}})]);
        assert_eq!(
            forbidden(apply_ranges(&ranges, &mut pod)),
            r#"pods "web" is forbidden: [minimum memory usage per Container is 16Mi, but request is 8Mi, maximum cpu usage per Container is 1, but limit is 2]"#
        );
    }

    #[test]
    fn resources_of_the_wrong_shape_are_left_for_validation() {
        let ranges = [range(json!([{"type": "Container", "default": {"cpu": "500m"}}]))];
        let mut pod = pod(&[json!("lots")]);
        apply_ranges(&ranges, &mut pod).unwrap();
        assert_eq!(pod["spec"]["containers"][0]["resources"], "lots");
    }
}
