//! `Pod` (core v1, namespaced): one or more containers whose images are
//! Wasm components. Validated here: container names and images, resource
//! requests and limits (quantities, requests ≤ limits), restart policy.
//! Kapsel adds one field to Kubernetes' `PodSpec`: `resourceClassName`
//! (a [`ResourceClass`](super::resource_class) that sizes every container).

use std::collections::{BTreeMap, HashSet};

use k8s_openapi::api::core::v1::PodSpec;
use serde_json::Value;

use super::{check_quantities, required_spec, roundtrip, text_at};
use crate::quantity::Quantity;
use crate::registry::{Column, ResourceType, Scope, TenantAccess};
use crate::validation::{FieldError, dns1123_label, dns1123_subdomain};

pub static POD: ResourceType = ResourceType {
    group: "",
    version: "v1",
    kind: "Pod",
    plural: "pods",
    singular: "pod",
    short_names: &["po"],
    scope: Scope::Namespaced,
    tenant_access: TenantAccess::Workload,
    selectable_fields: &["spec.nodeName", "status.phase", "spec.restartPolicy"],
    status_subresource: true,
    typed_roundtrip: Some(pod_roundtrip),
    validate_name: dns1123_subdomain,
    validate,
    columns: &[
        Column { name: "Ready", wide: false, value: ready },
        Column { name: "Status", wide: false, value: status },
        Column { name: "Restarts", wide: false, value: restarts },
        Column { name: "IP", wide: true, value: |p| text_at(p, "status.podIP") },
        Column { name: "Node", wide: true, value: |p| text_at(p, "spec.nodeName") },
    ],
};

const RESTART_POLICIES: &[&str] = &["Always", "OnFailure", "Never"];

/// The longest `activeDeadlineSeconds` (Kubernetes' limit: 2³¹-1).
pub const MAX_ACTIVE_DEADLINE_SECONDS: i64 = i32::MAX as i64;

/// The longest grace period, of `terminationGracePeriodSeconds` and of a
/// delete's `gracePeriodSeconds` (2³¹-1 s, about 68 years): every deadline
/// computed from one stays a time the clocks can hold.
pub const MAX_GRACE_SECONDS: i64 = i32::MAX as i64;

/// Whether a pod has ended: its phase is `Succeeded` or `Failed`. Nothing
/// restarts it, it holds no node resources, and quota counts it only as an object.
pub fn has_ended(pod: &Value) -> bool {
    matches!(pod.pointer("/status/phase").and_then(Value::as_str), Some("Succeeded" | "Failed"))
}

/// The node a pod is bound to (`spec.nodeName`, when set and not empty).
pub fn bound_node(pod: &Value) -> Option<&str> {
    pod.pointer("/spec/nodeName").and_then(Value::as_str).filter(|n| !n.is_empty())
}

/// Whether `pod` uses the ConfigMap or Secret (`kind`) named `name`: in a
/// container's or init container's `env[].valueFrom` or `envFrom`, or a volume.
pub fn uses_configuration(pod: &Value, kind: &str, name: &str) -> bool {
    let (key_ref, from_ref, volume, name_field) = match kind {
        "ConfigMap" => ("configMapKeyRef", "configMapRef", "configMap", "name"),
        "Secret" => ("secretKeyRef", "secretRef", "secret", "secretName"),
        _ => return false,
    };
    let named = |selector: Option<&Value>, field: &str| selector.and_then(|s| s.get(field)).and_then(Value::as_str) == Some(name);
    let spec = pod.get("spec");
    let containers = ["containers", "initContainers"].into_iter().flat_map(|field| list(spec.and_then(|s| s.get(field))));
    let in_containers = containers.into_iter().any(|container| {
        list(container.get("env")).iter().any(|var| named(var.pointer("/valueFrom").and_then(|v| v.get(key_ref)), "name"))
            || list(container.get("envFrom")).iter().any(|from| named(from.get(from_ref), "name"))
    });
    in_containers || list(spec.and_then(|s| s.get("volumes"))).iter().any(|v| named(v.get(volume), name_field))
}

/// The items of the list `value` is (none when it is not one).
fn list(value: Option<&Value>) -> &[Value] {
    value.and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default()
}

/// Amounts of resources by name (`cpu`, `memory`, `ephemeral-storage`, extended resources).
pub type Amounts = BTreeMap<String, Quantity>;

/// A pod's effective requests and limits, by Kubernetes' rule — the one the
/// scheduler places pods by and the quotas charge them by: per resource,
/// the larger of the sum over its containers and the largest of its init
/// containers (which run one at a time, before them); a container's
/// request left out is its limit. A quantity that does not parse is left
/// out (validation refuses such pods).
pub fn effective_resources(pod: &Value) -> (Amounts, Amounts) {
    let container = container_resources;
    let list = |field: &str| pod.pointer(field).and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    let (mut requests, mut limits) = (Amounts::new(), Amounts::new());
    for (r, l) in list("/spec/containers").iter().map(container) {
        for (totals, amounts) in [(&mut requests, r), (&mut limits, l)] {
            for (name, quantity) in amounts {
                let total = totals.entry(name).or_default();
                *total = *total + quantity;
            }
        }
    }
    for (r, l) in list("/spec/initContainers").iter().map(container) {
        for (totals, amounts) in [(&mut requests, r), (&mut limits, l)] {
            for (name, quantity) in amounts {
                let total = totals.entry(name).or_default();
                *total = (*total).max(quantity);
            }
        }
    }
    (requests, limits)
}

/// A container's requests (a request left out is its limit) and limits;
/// quantities that do not parse are left out.
pub fn container_resources(container: &Value) -> (Amounts, Amounts) {
    let at = |pointer: &str| -> Amounts {
        container
            .pointer(pointer)
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .filter_map(|(name, value)| Some((name.clone(), Quantity::from_json(value)?)))
            .collect()
    };
    let limits = at("/resources/limits");
    let mut requests = limits.clone();
    requests.extend(at("/resources/requests"));
    (requests, limits)
}

/// The Kubernetes QoS class of a pod: `Guaranteed` when every container's
/// CPU and memory requests equal its limits, `BestEffort` when none sets
/// any, `Burstable` otherwise.
pub fn qos_class(pod: &Value) -> &'static str {
    let containers = pod.pointer("/spec/containers").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    let resources: Vec<(Option<&Value>, Option<&Value>)> =
        containers.iter().map(|c| (c.pointer("/resources/requests"), c.pointer("/resources/limits"))).collect();
    let set = |v: Option<&Value>| v.and_then(Value::as_object).is_some_and(|m| m.contains_key("cpu") || m.contains_key("memory"));
    if resources.iter().all(|(requests, limits)| !set(*requests) && !set(*limits)) {
        return "BestEffort";
    }
    let guaranteed = resources.iter().all(|(requests, limits)| {
        ["cpu", "memory"].iter().all(|r| {
            let limit = limits.and_then(|l| l.get(*r));
            // A request left out defaults to the limit.
            limit.is_some() && requests.and_then(|q| q.get(*r)).is_none_or(|q| Some(q) == limit)
        })
    });
    if guaranteed { "Guaranteed" } else { "Burstable" }
}

/// Kapsel's fields of a pod's `spec` beyond Kubernetes' `PodSpec`.
pub const SPEC_EXTENSIONS: &[&str] = &["resourceClassName"];

/// The Kubernetes round trip, keeping Kapsel's own spec fields (they are known, not pruned).
fn pod_roundtrip(object: &Value) -> Option<Value> {
    let mut known = roundtrip::<k8s_openapi::api::core::v1::Pod>(object)?;
    for field in SPEC_EXTENSIONS {
        if let (Some(value), Some(spec)) = (object.pointer(&format!("/spec/{field}")), known.get_mut("spec").and_then(Value::as_object_mut))
        {
            spec.insert((*field).to_string(), value.clone());
        }
    }
    Some(known)
}

fn validate(object: &Value) -> Vec<FieldError> {
    let spec: PodSpec = match required_spec(object) {
        Ok(spec) => spec,
        Err(e) => return vec![e],
    };
    let mut errors = Vec::new();
    if spec.containers.is_empty() {
        errors.push(FieldError::required("spec.containers"));
    }
    match object.pointer("/spec/resourceClassName") {
        None | Some(Value::Null) => {}
        Some(Value::String(class)) if class.is_empty() => {}
        Some(Value::String(class)) => {
            if let Err(e) = dns1123_subdomain(class) {
                errors.push(FieldError::invalid("spec.resourceClassName", e));
            }
        }
        Some(_) => errors.push(FieldError::invalid("spec.resourceClassName", "must be a string: the name of a ResourceClass")),
    }
    let mut names = HashSet::new();
    for (i, container) in spec.containers.iter().enumerate() {
        let at = format!("spec.containers[{i}]");
        if container.name.is_empty() {
            errors.push(FieldError::required(format!("{at}.name")));
        } else if let Err(e) = dns1123_label(&container.name) {
            errors.push(FieldError::invalid(format!("{at}.name"), e));
        } else if !names.insert(container.name.as_str()) {
            errors.push(FieldError::duplicate(format!("{at}.name"), &container.name));
        }
        if container.image.as_deref().is_none_or(|i| i.trim().is_empty()) {
            errors.push(FieldError::required(format!("{at}.image")));
        }
        if let Some(resources) = &container.resources {
            check_quantities(resources.requests.as_ref(), &format!("{at}.resources.requests"), &mut errors);
            check_quantities(resources.limits.as_ref(), &format!("{at}.resources.limits"), &mut errors);
            for (resource, request) in resources.requests.iter().flatten() {
                let limit = resources.limits.as_ref().and_then(|l| l.get(resource));
                if let (Ok(request), Some(Ok(limit))) = (Quantity::parse(&request.0), limit.map(|l| Quantity::parse(&l.0)))
                    && request > limit
                {
                    errors.push(FieldError::invalid(
                        format!("{at}.resources.requests.{resource}"),
                        format!("must be less than or equal to {resource} limit of {limit}"),
                    ));
                }
            }
        }
        let mut env_names = HashSet::new();
        for (j, env) in container.env.iter().flatten().enumerate() {
            if env.name.is_empty() {
                errors.push(FieldError::required(format!("{at}.env[{j}].name")));
            } else if !env_names.insert(env.name.as_str()) {
                errors.push(FieldError::duplicate(format!("{at}.env[{j}].name"), &env.name));
            }
        }
    }
    if let Some(policy) = spec.restart_policy.as_deref()
        && !RESTART_POLICIES.contains(&policy)
    {
        errors.push(FieldError::not_supported("spec.restartPolicy", policy, RESTART_POLICIES));
    }
    if let Some(seconds) = spec.active_deadline_seconds
        && !(1..=MAX_ACTIVE_DEADLINE_SECONDS).contains(&seconds)
    {
        errors.push(FieldError::invalid(
            "spec.activeDeadlineSeconds",
            format!("must be between 1 and {MAX_ACTIVE_DEADLINE_SECONDS}, inclusive"),
        ));
    }
    if let Some(seconds) = spec.termination_grace_period_seconds
        && !(0..=MAX_GRACE_SECONDS).contains(&seconds)
    {
        errors.push(FieldError::invalid(
            "spec.terminationGracePeriodSeconds",
            format!("must be between 0 and {MAX_GRACE_SECONDS}, inclusive"),
        ));
    }
    errors
}

fn container_statuses(pod: &Value) -> &[Value] {
    pod.pointer("/status/containerStatuses").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[])
}

fn ready(pod: &Value) -> String {
    let total = pod.pointer("/spec/containers").and_then(Value::as_array).map_or(0, Vec::len);
    let ready = container_statuses(pod).iter().filter(|s| s.get("ready").and_then(Value::as_bool) == Some(true)).count();
    format!("{ready}/{total}")
}

fn status(pod: &Value) -> String {
    if pod.pointer("/metadata/deletionTimestamp").is_some() {
        return "Terminating".into();
    }
    for s in container_statuses(pod) {
        if let Some(reason) = s.pointer("/state/waiting/reason").or_else(|| s.pointer("/state/terminated/reason")).and_then(Value::as_str) {
            return reason.into();
        }
    }
    match pod.pointer("/status/reason").or_else(|| pod.pointer("/status/phase")).and_then(Value::as_str) {
        Some(reason) => reason.into(),
        None => "Pending".into(),
    }
}

fn restarts(pod: &Value) -> String {
    container_statuses(pod).iter().map(|s| s.get("restartCount").and_then(Value::as_i64).unwrap_or(0)).sum::<i64>().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_pod_has_ended_once_it_succeeded_or_failed_and_is_bound_once_a_node_is_named() {
        for (phase, ended) in
            [(None, false), (Some("Pending"), false), (Some("Running"), false), (Some("Succeeded"), true), (Some("Failed"), true)]
        {
            let pod = json!({"status": {"phase": phase}});
            assert_eq!(has_ended(&pod), ended, "{phase:?}");
        }
        assert_eq!(bound_node(&json!({"spec": {"nodeName": "n1"}})), Some("n1"));
        assert_eq!(bound_node(&json!({"spec": {"nodeName": ""}})), None);
        assert_eq!(bound_node(&json!({"spec": {}})), None);
    }

    fn fields(errors: Vec<FieldError>) -> Vec<String> {
        errors.into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn accepts_a_minimal_pod() {
        let pod = json!({"spec": {"containers": [{"name": "hello", "image": "hello:1", "resources": {"requests": {"cpu": "100m"}, "limits": {"cpu": "1"}}}]}});
        assert!(validate(&pod).is_empty());
    }

    #[test]
    fn reports_each_bad_field_by_path() {
        let pod = json!({"spec": {"restartPolicy": "Sometimes", "containers": [
            {"name": "a", "image": ""},
            {"name": "a", "image": "x", "resources": {"requests": {"memory": "2Gi"}, "limits": {"memory": "1Gi", "cpu": "lots"}}}
        ]}});
        let got = fields(validate(&pod));
        assert!(got.contains(&"spec.containers[0].image".to_string()), "{got:?}");
        assert!(got.contains(&"spec.containers[1].name".to_string()), "{got:?}");
        assert!(got.contains(&"spec.containers[1].resources.limits.cpu".to_string()), "{got:?}");
        assert!(got.contains(&"spec.containers[1].resources.requests.memory".to_string()), "{got:?}");
        assert!(got.contains(&"spec.restartPolicy".to_string()), "{got:?}");
    }

    #[test]
    fn durations_stay_in_range() {
        let pod = |field: &str, seconds: i64| json!({"spec": {field: seconds, "containers": [{"name": "a", "image": "x"}]}});
        assert!(validate(&pod("activeDeadlineSeconds", i64::from(i32::MAX))).is_empty());
        assert_eq!(fields(validate(&pod("activeDeadlineSeconds", i64::MAX))), vec!["spec.activeDeadlineSeconds"]);
        assert_eq!(fields(validate(&pod("activeDeadlineSeconds", 0))), vec!["spec.activeDeadlineSeconds"]);
        assert_eq!(fields(validate(&pod("terminationGracePeriodSeconds", i64::MAX))), vec!["spec.terminationGracePeriodSeconds"]);
        assert!(validate(&pod("terminationGracePeriodSeconds", 0)).is_empty());
    }

    #[test]
    fn type_errors_carry_the_path() {
        let pod = json!({"spec": {"containers": [{"name": "a", "image": "x", "args": "not-a-list"}]}});
        assert_eq!(fields(validate(&pod)), vec!["spec.containers[0].args"]);
        assert_eq!(fields(validate(&json!({}))), vec!["spec"]);
        assert_eq!(fields(validate(&json!({"spec": {"containers": []}}))), vec!["spec.containers"]);
    }

    fn sized(containers: &[Value], init: &[Value]) -> Value {
        let named = |list: &[Value], prefix: &str| -> Vec<Value> {
            list.iter().enumerate().map(|(i, r)| json!({"name": format!("{prefix}{i}"), "image": "x", "resources": r})).collect()
        };
        json!({"spec": {"containers": named(containers, "c"), "initContainers": named(init, "i")}})
    }

    #[test]
    fn a_pod_uses_the_configuration_it_names_anywhere() {
        let pod = json!({"spec": {
            "volumes": [{"name": "v", "secret": {"secretName": "tls"}}, {"name": "c", "configMap": {"name": "files"}}],
            "initContainers": [{"name": "i", "envFrom": [{"secretRef": {"name": "init-creds"}}]}],
            "containers": [{"name": "m", "env": [{"name": "A", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "a"}}}]}]
        }});
        for (kind, name) in [("Secret", "tls"), ("ConfigMap", "files"), ("Secret", "init-creds"), ("ConfigMap", "settings")] {
            assert!(uses_configuration(&pod, kind, name), "{kind} {name}");
        }
        for (kind, name) in [("ConfigMap", "tls"), ("Secret", "settings"), ("Secret", "other"), ("Pod", "tls")] {
            assert!(!uses_configuration(&pod, kind, name), "{kind} {name}");
        }
    }

    fn amounts(pairs: &[(&str, &str)]) -> Amounts {
        pairs.iter().map(|(name, q)| (name.to_string(), Quantity::parse(q).unwrap())).collect()
    }

    #[test]
    fn effective_resources_are_the_larger_of_the_containers_sum_and_the_largest_init_container() {
        let pod = sized(
            &[json!({"requests": {"cpu": "100m", "memory": "64Mi"}}), json!({"requests": {"cpu": "200m", "memory": "64Mi"}})],
            &[json!({"requests": {"cpu": "500m", "memory": "100Mi"}}), json!({"requests": {"cpu": "50m"}})],
        );
        let (requests, limits) = effective_resources(&pod);
        assert_eq!(requests, amounts(&[("cpu", "500m"), ("memory", "128Mi")]));
        assert!(limits.is_empty());
    }

    #[test]
    fn a_request_left_out_is_the_limit_and_extended_resources_count() {
        let pod = sized(
            &[
                json!({"limits": {"cpu": "1", "memory": "1Gi", "example.com/gpu": "1"}}),
                json!({"requests": {"cpu": "250m"}, "limits": {"cpu": "500m"}}),
            ],
            &[],
        );
        let (requests, limits) = effective_resources(&pod);
        assert_eq!(requests, amounts(&[("cpu", "1250m"), ("memory", "1Gi"), ("example.com/gpu", "1")]));
        assert_eq!(limits, amounts(&[("cpu", "1500m"), ("memory", "1Gi"), ("example.com/gpu", "1")]));
        // A number is a quantity too; what does not parse is left out.
        let odd = sized(&[json!({"requests": {"cpu": 2, "memory": "lots"}})], &[]);
        assert_eq!(effective_resources(&odd).0, amounts(&[("cpu", "2")]));
    }

    #[test]
    fn qos_classes_follow_kubernetes() {
        let of = |resources: &[Value]| qos_class(&sized(resources, &[]));
        assert_eq!(of(&[json!({})]), "BestEffort");
        let equal = json!({"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "1Gi"}});
        assert_eq!(of(&[equal.clone(), equal.clone()]), "Guaranteed");
        // Requests left out default to the limits.
        assert_eq!(of(&[json!({"limits": {"cpu": "1", "memory": "1Gi"}})]), "Guaranteed");
        assert_eq!(of(&[equal, json!({})]), "Burstable");
        assert_eq!(of(&[json!({"requests": {"memory": "1Gi"}})]), "Burstable");
    }
}
