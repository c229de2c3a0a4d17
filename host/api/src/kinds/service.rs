//! `Service` (core v1, namespaced): a name in front of the pods its
//! `selector` picks. Requests to `<service>.<namespace>` at any node's
//! ingress go to one of the ready serving pods the selector matches, spread
//! across them. Only `type: ClusterIP` (the default) is served, with TCP
//! ports; a Service without a selector routes nowhere (Kubernetes' manual
//! endpoints are not served). There is no cluster IP yet: `spec.clusterIP`
//! stays unset until pods have addresses.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ServiceSpec;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

use super::{roundtrip, typed};
use crate::registry::{Column, ResourceType, Scope, TenantAccess};
use crate::validation::{FieldError, dns1123_label, label_key, label_value};

pub static SERVICE: ResourceType = ResourceType {
    group: "",
    version: "v1",
    kind: "Service",
    plural: "services",
    singular: "service",
    short_names: &["svc"],
    scope: Scope::Namespaced,
    tenant_access: TenantAccess::Workload,
    selectable_fields: &[],
    status_subresource: true,
    typed_roundtrip: Some(roundtrip::<k8s_openapi::api::core::v1::Service>),
    validate_name: dns1123_label,
    validate,
    columns: &[
        Column { name: "Type", wide: false, value: |svc| text(svc, "/spec/type").unwrap_or_else(|| "ClusterIP".into()) },
        Column { name: "Cluster-IP", wide: false, value: |svc| text(svc, "/spec/clusterIP").unwrap_or_else(|| "<none>".into()) },
        Column { name: "Ports", wide: false, value: ports_column },
        Column { name: "Selector", wide: true, value: selector_column },
    ],
};

/// The types a Service may have.
const TYPES: &[&str] = &["ClusterIP"];

fn text(object: &Value, pointer: &str) -> Option<String> {
    object.pointer(pointer).and_then(Value::as_str).filter(|t| !t.is_empty()).map(str::to_string)
}

fn ports_column(service: &Value) -> String {
    let ports: Vec<String> = service
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|port| {
            let number = port.get("port").map(Value::to_string).unwrap_or_default();
            format!("{number}/{}", port.get("protocol").and_then(Value::as_str).unwrap_or("TCP"))
        })
        .collect();
    if ports.is_empty() { "<none>".into() } else { ports.join(",") }
}

fn selector_column(service: &Value) -> String {
    let selector = selector(service);
    if selector.is_empty() {
        return "<none>".into();
    }
    selector.iter().map(|(key, value)| format!("{key}={value}")).collect::<Vec<_>>().join(",")
}

/// A Service's `spec.selector` (empty when it has none).
pub fn selector(service: &Value) -> BTreeMap<String, String> {
    service
        .pointer("/spec/selector")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(key, value)| Some((key.clone(), value.as_str()?.to_string())))
        .collect()
}

/// Whether a pod with `labels` is one the Service with `selector` routes to
/// (an empty selector selects nothing, as for a Service without one).
pub fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(key, value)| labels.get(key) == Some(value))
}

fn validate(service: &Value) -> Vec<FieldError> {
    let spec: ServiceSpec = match typed(service, "spec") {
        Ok(spec) => spec,
        Err(error) => return vec![error],
    };
    let mut errors = Vec::new();
    if let Some(kind) = spec.type_.as_deref().filter(|t| !TYPES.contains(t)) {
        errors.push(FieldError::not_supported("spec.type", kind, TYPES).with_message(format!(
            "Unsupported value: {kind:?}: supported values: \"ClusterIP\" (each node's ingress routes to a service by name)"
        )));
    }
    for (key, value) in spec.selector.iter().flatten() {
        if let Err(problem) = label_key(key) {
            errors.push(FieldError::invalid(format!("spec.selector[{key}]"), problem));
        }
        if let Err(problem) = label_value(value) {
            errors.push(FieldError::invalid(format!("spec.selector[{key}]"), problem));
        }
    }
    let ports = spec.ports.unwrap_or_default();
    let mut names = std::collections::BTreeSet::new();
    for (i, port) in ports.iter().enumerate() {
        let at = format!("spec.ports[{i}]");
        if !(1..=65535).contains(&port.port) {
            errors.push(FieldError::invalid(format!("{at}.port"), "must be between 1 and 65535, inclusive"));
        }
        if let Some(protocol) = port.protocol.as_deref().filter(|p| *p != "TCP") {
            errors.push(FieldError::not_supported(format!("{at}.protocol"), protocol, &["TCP"]));
        }
        match &port.target_port {
            Some(IntOrString::Int(number)) if !(1..=65535).contains(number) => {
                errors.push(FieldError::invalid(format!("{at}.targetPort"), "must be between 1 and 65535, inclusive"));
            }
            Some(IntOrString::String(name)) if dns1123_label(name).is_err() || name.len() > 15 => {
                errors
                    .push(FieldError::invalid(format!("{at}.targetPort"), "must be a port number or a port name of at most 15 characters"));
            }
            _ => {}
        }
        match port.name.as_deref() {
            None | Some("") if ports.len() > 1 => {
                errors.push(FieldError::required(format!("{at}.name")).with_message("a Service with several ports names each"));
            }
            Some(name) if !name.is_empty() && !names.insert(name.to_string()) => {
                errors.push(FieldError::duplicate(format!("{at}.name"), name));
            }
            _ => {}
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn fields(spec: Value) -> Vec<String> {
        validate(&json!({"spec": spec})).into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn a_cluster_ip_service_with_tcp_ports_is_valid() {
        assert!(fields(json!({"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]})).is_empty());
        assert!(fields(json!({"selector": {"app": "web"}, "type": "ClusterIP", "ports": [{"name": "http", "port": 80}, {"name": "admin", "port": 81}]})).is_empty());
    }

    #[test]
    fn what_the_ingress_cannot_serve_is_refused_at_its_field() {
        assert_eq!(fields(json!({"type": "LoadBalancer"})), ["spec.type"]);
        assert_eq!(fields(json!({"ports": [{"port": 0}]})), ["spec.ports[0].port"]);
        assert_eq!(fields(json!({"ports": [{"port": 53, "protocol": "UDP"}]})), ["spec.ports[0].protocol"]);
        assert_eq!(fields(json!({"ports": [{"port": 80}, {"port": 81}]})), ["spec.ports[0].name", "spec.ports[1].name"]);
        assert_eq!(fields(json!({"ports": [{"name": "a", "port": 80}, {"name": "a", "port": 81}]})), ["spec.ports[1].name"]);
        assert_eq!(fields(json!({"selector": {"bad key!": "x"}})), ["spec.selector[bad key!]"]);
        assert_eq!(fields(json!({"ports": [{"port": 80, "targetPort": 70000}]})), ["spec.ports[0].targetPort"]);
    }

    #[test]
    fn a_selector_selects_pods_with_all_its_labels_and_an_empty_one_none() {
        let labels: BTreeMap<String, String> = [("app".into(), "web".into()), ("tier".into(), "front".into())].into();
        let select = |pairs: &[(&str, &str)]| selects(&pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(), &labels);
        assert!(select(&[("app", "web")]));
        assert!(select(&[("app", "web"), ("tier", "front")]));
        assert!(!select(&[("app", "shop")]));
        assert!(!select(&[]));
    }
}
