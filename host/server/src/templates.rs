//! Instantiating workload templates (the endpoints are served by
//! `crate::http::templates`): `POST …/workloadtemplates/{name}/instantiate`
//! (a namespace's own template, creating in that namespace) and
//! `POST /apis/kapsel.io/v1alpha1/clusterworkloadtemplates/{name}/instantiate`
//! (IT's, creating in the body's `namespace`). The body:
//!
//! ```yaml
//! namespace: dev            # cluster templates only
//! name: web-1               # else generateName "<template>-"
//! parameters: {image: registry.example/web:2, class: best-effort-small}
//! labels: {team: web}       # added to the pod's labels
//! env: {LOG_LEVEL: debug}   # added to (or replacing in) every container's env
//! ```
//!
//! The caller needs to read the template and to create pods in the
//! namespace. Every `${parameter}` in the template's strings becomes its
//! value (given, else the default; a required one without either is a 422
//! naming `parameters.<name>`); the pod, annotated
//! `kapsel.io/template: <Kind>/<name>`, then takes the ordinary create path
//! (classes, limit ranges, validation, admission, quota), and the answer is
//! what creating it answers (`?dryRun=All` creates nothing). The size of
//! the expansion is computed before it is made: a template whose values
//! would make a pod larger than a request body may be is refused (413).

use std::collections::BTreeMap;

use kapsel_api::kinds::pod::POD;
use kapsel_api::kinds::workload_template::WorkloadTemplateSpec;
use kapsel_api::{FieldError, ResourceType, object};
use kapsel_store::Key;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::App;
use crate::auth::{Verb, authorize};
use crate::error::ApiError;
use crate::objects::{Target, Written};
use crate::operation::Context;

/// The annotation naming the template a pod was made from.
pub const TEMPLATE_ANNOTATION: &str = "kapsel.io/template";

/// What a client asks of a template.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Instantiation {
    /// The namespace to create in (IT's templates; a namespace's own creates in its namespace).
    #[serde(default)]
    pub namespace: Option<String>,
    /// The pod's name; else `generateName` `<template>-`.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
    /// Added to the pod's labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Added to (or replacing in) every container's environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

fn invalid(template: &str, field: &str, message: String) -> ApiError {
    ApiError::Invalid {
        kind: "WorkloadTemplate".into(),
        group: kapsel_api::KAPSEL_GROUP.into(),
        name: template.to_string(),
        causes: vec![FieldError::invalid(field, message)],
    }
}

/// Creates a pod from the template `name` of `kind` with `request`'s
/// values, through the ordinary create path: a namespace's own template
/// (`template_namespace`) creates in that namespace, IT's in the
/// request's `namespace`.
pub async fn instantiate(
    app: &App,
    ctx: &Context,
    kind: &'static ResourceType,
    template_namespace: Option<&str>,
    name: &str,
    mut request: Instantiation,
) -> Result<Written, ApiError> {
    let namespace = match template_namespace {
        Some(own) => {
            if request.namespace.as_deref().is_some_and(|ns| ns != own) {
                return Err(invalid(name, "namespace", "a namespace's template creates in that namespace only".into()));
            }
            own.to_string()
        }
        None => match request.namespace.take().filter(|ns| !ns.is_empty()) {
            Some(namespace) => namespace,
            None => return Err(invalid(name, "namespace", "required: the namespace to create the pod in".into())),
        },
    };
    let namespace = namespace.as_str();
    let identity = &ctx.identity;
    authorize(identity, Verb::Get, kind, template_namespace)?;
    authorize(identity, Verb::Create, &POD, Some(namespace))?;
    let key = Key::new(kind.store_key(), template_namespace.unwrap_or_default(), name);
    let stored = app.store.get(&key).await.map_err(|e| ApiError::from_store(e, kind, name))?;
    let spec: WorkloadTemplateSpec = serde_json::from_value(stored.get("spec").cloned().unwrap_or(Value::Null))
        .map_err(|e| ApiError::internal(format!("workload template {name:?} as stored"), e))?;
    let pod = render(kind, name, &spec, &request)?;
    crate::objects::create(app, ctx, &Target::collection(&POD, Some(namespace)), pod).await
}

/// The pod `spec` makes with `request`'s values.
fn render(kind: &ResourceType, name: &str, spec: &WorkloadTemplateSpec, request: &Instantiation) -> Result<Value, ApiError> {
    let mut values: BTreeMap<&str, &str> = BTreeMap::new();
    let mut errors = Vec::new();
    for given in request.parameters.keys() {
        if !spec.parameters.iter().any(|p| &p.name == given) {
            let declared: Vec<&str> = spec.parameters.iter().map(|p| p.name.as_str()).collect();
            errors.push(FieldError::not_supported(format!("parameters.{given}"), given, &declared));
        }
    }
    for parameter in &spec.parameters {
        match (request.parameters.get(&parameter.name), &parameter.default) {
            (Some(value), _) | (None, Some(value)) => {
                values.insert(&parameter.name, value);
            }
            (None, None) if parameter.required => {
                let about = if parameter.description.is_empty() { String::new() } else { format!(" ({})", parameter.description) };
                errors.push(
                    FieldError::required(format!("parameters.{}", parameter.name))
                        .with_message(format!("the template needs a value for {}{about}: --set {}=…", parameter.name, parameter.name)),
                );
            }
            (None, None) => {
                values.insert(&parameter.name, "");
            }
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::Invalid { kind: kind.kind.into(), group: kind.group.into(), name: name.to_string(), causes: errors });
    }
    let expanded = expanded_len(&spec.template, &values);
    if expanded > crate::budget::MAX_OBJECT_BYTES {
        return Err(ApiError::ExpandsTooLarge(format!(
            "the template's strings would expand to {expanded} bytes with these parameters; a pod may hold at most {} bytes",
            crate::budget::MAX_OBJECT_BYTES
        )));
    }
    let mut body = spec.template.clone();
    substitute(&mut body, &values);
    let mut pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": body.get("metadata").cloned().unwrap_or_else(|| json!({})), "spec": body.get("spec").cloned().unwrap_or(Value::Null)});
    let metadata = object::metadata_mut(&mut pod);
    for server_field in ["name", "namespace", "uid", "resourceVersion", "creationTimestamp"] {
        metadata.remove(server_field);
    }
    match &request.name {
        Some(pod_name) => {
            metadata.insert("name".into(), json!(pod_name));
        }
        None => {
            metadata.entry("generateName").or_insert_with(|| json!(format!("{name}-")));
        }
    }
    let labels = metadata.entry("labels").or_insert_with(|| json!({}));
    if let Some(labels) = labels.as_object_mut() {
        labels.extend(request.labels.iter().map(|(k, v)| (k.clone(), json!(v))));
    }
    let annotations = metadata.entry("annotations").or_insert_with(|| json!({}));
    if let Some(annotations) = annotations.as_object_mut() {
        annotations.insert(TEMPLATE_ANNOTATION.into(), json!(format!("{}/{name}", kind.kind)));
    }
    if !request.env.is_empty() {
        for field in ["initContainers", "containers"] {
            for container in pod.pointer_mut(&format!("/spec/{field}")).and_then(Value::as_array_mut).into_iter().flatten() {
                set_env(container, &request.env);
            }
        }
    }
    // An optional parameter left empty leaves the class unset, not named "".
    if pod.pointer("/spec/resourceClassName").is_some_and(|c| c == "")
        && let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut)
    {
        spec.remove("resourceClassName");
    }
    Ok(pod)
}

/// The pieces of a template string: literal text, and `${name}`
/// references (with the text they replace when `name` has no value).
fn pieces<'t>(text: &'t str, mut each: impl FnMut(&'t str, Option<&'t str>)) {
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        let Some(end) = rest[start + 2..].find('}') else { break };
        each(&rest[..start], None);
        each(&rest[start..start + 3 + end], Some(&rest[start + 2..start + 2 + end]));
        rest = &rest[start + 3 + end..];
    }
    each(rest, None);
}

/// The bytes of the strings (and keys) of `value` once its `${name}`s are
/// replaced, computed without making them.
fn expanded_len(value: &Value, values: &BTreeMap<&str, &str>) -> usize {
    match value {
        Value::String(text) => {
            let mut total = 0usize;
            pieces(text, |literal, name| {
                let piece = name.and_then(|n| values.get(n)).map_or(literal.len(), |v| v.len());
                total = total.saturating_add(piece);
            });
            total
        }
        Value::Array(items) => items.iter().fold(0usize, |total, item| total.saturating_add(expanded_len(item, values))),
        Value::Object(fields) => {
            fields.iter().fold(0usize, |total, (key, item)| total.saturating_add(key.len()).saturating_add(expanded_len(item, values)))
        }
        _ => 8,
    }
}

/// Replaces every `${name}` in `value`'s strings with its value, in one
/// pass (a value that itself holds `${…}` is taken as it is).
fn substitute(value: &mut Value, values: &BTreeMap<&str, &str>) {
    match value {
        Value::String(text) if text.contains("${") => {
            let mut out = String::with_capacity(text.len());
            pieces(text, |literal, name| out.push_str(name.and_then(|n| values.get(n).copied()).unwrap_or(literal)));
            *text = out;
        }
        Value::Array(items) => items.iter_mut().for_each(|item| substitute(item, values)),
        Value::Object(fields) => fields.values_mut().for_each(|item| substitute(item, values)),
        _ => {}
    }
}

/// Adds `env` to a container's environment, replacing variables of the same name.
fn set_env(container: &mut Value, env: &BTreeMap<String, String>) {
    // A container that is not an object is left for validation to report.
    let Some(container) = container.as_object_mut() else { return };
    let list = container.entry("env").or_insert_with(|| json!([]));
    if !list.is_array() {
        *list = json!([]);
    }
    let Some(list) = list.as_array_mut() else { return };
    list.retain(|entry| entry.get("name").and_then(Value::as_str).is_none_or(|n| !env.contains_key(n)));
    list.extend(env.iter().map(|(name, value)| {
        let mut entry = Map::new();
        entry.insert("name".into(), json!(name));
        entry.insert("value".into(), json!(value));
        Value::Object(entry)
    }));
}

#[cfg(test)]
mod tests {
    use super::*;
    use kapsel_api::kinds::workload_template::{CLUSTER_WORKLOAD_TEMPLATE, WORKLOAD_TEMPLATE};

    #[test]
    fn substitutes_known_names_and_keeps_others() {
        let values = BTreeMap::from([("image", "web:2"), ("empty", "")]);
        let mut value = json!({"a": "${image}-${missing}-${empty}x", "b": ["${image", "$${image}}"]});
        let expected_len = expanded_len(&value, &values);
        substitute(&mut value, &values);
        assert_eq!(value, json!({"a": "web:2-${missing}-x", "b": ["${image", "$web:2}"]}));
        assert_eq!(expected_len, expanded_len(&value, &BTreeMap::new()));
    }

    #[test]
    fn an_expansion_past_the_body_limit_is_refused_before_it_is_made() {
        let references = "${p}".repeat(10_000);
        let spec: WorkloadTemplateSpec = serde_json::from_value(json!({
            "parameters": [{"name": "p"}],
            "template": {"spec": {"containers": [{"name": "main", "image": "x:1", "args": [references]}]}}
        }))
        .unwrap();
        let request = Instantiation { parameters: BTreeMap::from([("p".to_string(), "y".repeat(1 << 20))]), ..Default::default() };
        let started = std::time::Instant::now();
        let error = render(&WORKLOAD_TEMPLATE, "t", &spec, &request).unwrap_err();
        assert!(matches!(error, ApiError::ExpandsTooLarge(_)), "{error:?}");
        assert!(error.to_string().contains("would expand to 10485760"), "{error}");
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }

    #[test]
    fn env_is_not_set_on_containers_that_are_not_objects() {
        let mut container = json!("x");
        set_env(&mut container, &BTreeMap::from([("A".to_string(), "1".to_string())]));
        assert_eq!(container, json!("x"));
        let mut container = json!({"name": "main", "env": "nonsense"});
        set_env(&mut container, &BTreeMap::from([("A".to_string(), "1".to_string())]));
        assert_eq!(container["env"], json!([{"name": "A", "value": "1"}]));
    }

    /// A web template: `image` required, `class` optional and empty by
    /// default, `port` defaulting to 8080; the template sets a label, an
    /// annotation and server fields a client may not choose.
    fn web() -> WorkloadTemplateSpec {
        serde_json::from_value(json!({
            "description": "a web server",
            "parameters": [
                {"name": "image", "description": "the image to run", "required": true},
                {"name": "class"},
                {"name": "port", "default": "8080"},
            ],
            "template": {
                "metadata": {"name": "fixed", "namespace": "elsewhere", "uid": "u", "resourceVersion": "9", "creationTimestamp": "2020-01-01T00:00:00Z",
                             "labels": {"app": "web", "team": "platform"}, "annotations": {"note": "${image}"}},
                "spec": {
                    "resourceClassName": "${class}",
                    "initContainers": [{"name": "setup", "image": "${image}", "env": [{"name": "LOG_LEVEL", "value": "info"}]}],
                    "containers": [{"name": "main", "image": "${image}", "args": ["--port=${port}"], "env": [{"name": "KEEP", "value": "1"}]}],
                },
            },
        }))
        .unwrap()
    }

    fn given(parameters: &[(&str, &str)]) -> Instantiation {
        Instantiation { parameters: parameters.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(), ..Default::default() }
    }

    /// The causes of a 422 `Invalid`, as `(field, reason)`.
    fn causes(error: ApiError) -> Vec<(String, &'static str)> {
        match error {
            ApiError::Invalid { causes, .. } => causes.into_iter().map(|c| (c.field, c.reason)).collect(),
            other => panic!("expected 422 Invalid, got {other:?}"),
        }
    }

    #[test]
    fn parameters_take_the_given_value_else_the_default() {
        let pod = render(&WORKLOAD_TEMPLATE, "web", &web(), &given(&[("image", "web:2")])).unwrap();
        assert_eq!((pod["apiVersion"].as_str(), pod["kind"].as_str()), (Some("v1"), Some("Pod")));
        assert_eq!(pod["spec"]["containers"][0]["image"], "web:2");
        assert_eq!(pod["spec"]["initContainers"][0]["image"], "web:2");
        assert_eq!(pod["spec"]["containers"][0]["args"], json!(["--port=8080"]));
        assert_eq!(pod["metadata"]["annotations"]["note"], "web:2");
        let pod = render(&WORKLOAD_TEMPLATE, "web", &web(), &given(&[("image", "web:3"), ("port", "80"), ("class", "small")])).unwrap();
        assert_eq!(pod["spec"]["containers"][0]["args"], json!(["--port=80"]));
        assert_eq!(pod["spec"]["resourceClassName"], "small");
    }

    #[test]
    fn an_optional_class_left_empty_leaves_the_class_unset() {
        let pod = render(&WORKLOAD_TEMPLATE, "web", &web(), &given(&[("image", "web:2")])).unwrap();
        assert!(pod["spec"].get("resourceClassName").is_none(), "{pod}");
    }

    #[test]
    fn a_required_parameter_without_a_value_is_invalid_at_its_name() {
        let error = render(&CLUSTER_WORKLOAD_TEMPLATE, "web", &web(), &given(&[])).unwrap_err();
        let message = error.to_string();
        assert!(message.contains("the template needs a value for image (the image to run): --set image=…"), "{message}");
        match &error {
            ApiError::Invalid { kind, group, name, .. } => {
                assert_eq!((kind.as_str(), group.as_str(), name.as_str()), ("ClusterWorkloadTemplate", "kapsel.io", "web"));
            }
            other => panic!("expected 422 Invalid, got {other:?}"),
        }
        assert_eq!(causes(error), [("parameters.image".to_string(), "FieldValueRequired")]);
    }

    #[test]
    fn every_parameter_problem_is_reported_at_once() {
        let error = render(&WORKLOAD_TEMPLATE, "web", &web(), &given(&[("imgae", "web:2")])).unwrap_err();
        let message = error.to_string();
        assert!(message.contains(r#"Unsupported value: "imgae": supported values: "image", "class", "port""#), "{message}");
        assert_eq!(
            causes(error),
            [("parameters.imgae".to_string(), "FieldValueNotSupported"), ("parameters.image".to_string(), "FieldValueRequired")]
        );
    }

    #[test]
    fn the_pod_is_named_by_the_request_or_after_the_template() {
        let named = Instantiation { name: Some("web-1".into()), ..given(&[("image", "web:2")]) };
        let pod = render(&WORKLOAD_TEMPLATE, "web", &web(), &named).unwrap();
        assert_eq!(pod["metadata"]["name"], "web-1");
        assert!(pod["metadata"].get("generateName").is_none());
        let pod = render(&WORKLOAD_TEMPLATE, "web", &web(), &given(&[("image", "web:2")])).unwrap();
        assert!(pod["metadata"].get("name").is_none(), "the template's own name is not the pod's: {pod}");
        assert_eq!(pod["metadata"]["generateName"], "web-");
        // A template's own generateName stays.
        let mut spec = web();
        spec.template["metadata"]["generateName"] = json!("frontend-");
        let pod = render(&WORKLOAD_TEMPLATE, "web", &spec, &given(&[("image", "web:2")])).unwrap();
        assert_eq!(pod["metadata"]["generateName"], "frontend-");
    }

    #[test]
    fn server_fields_of_the_template_are_dropped() {
        let pod = render(&WORKLOAD_TEMPLATE, "web", &web(), &given(&[("image", "web:2")])).unwrap();
        for field in ["name", "namespace", "uid", "resourceVersion", "creationTimestamp"] {
            assert!(pod["metadata"].get(field).is_none(), "{field} kept: {pod}");
        }
    }

    #[test]
    fn labels_are_added_and_the_pod_names_its_template() {
        let request = Instantiation {
            labels: BTreeMap::from([("team".to_string(), "web".to_string()), ("tier".to_string(), "front".to_string())]),
            ..given(&[("image", "web:2")])
        };
        let pod = render(&WORKLOAD_TEMPLATE, "web", &web(), &request).unwrap();
        assert_eq!(pod["metadata"]["labels"], json!({"app": "web", "team": "web", "tier": "front"}));
        assert_eq!(pod["metadata"]["annotations"][TEMPLATE_ANNOTATION], "WorkloadTemplate/web");
        let pod = render(&CLUSTER_WORKLOAD_TEMPLATE, "web", &web(), &given(&[("image", "web:2")])).unwrap();
        assert_eq!(pod["metadata"]["annotations"][TEMPLATE_ANNOTATION], "ClusterWorkloadTemplate/web");
        assert_eq!(pod["metadata"]["annotations"]["note"], "web:2");
    }

    #[test]
    fn env_is_added_to_every_container_replacing_variables_of_the_same_name() {
        let request = Instantiation {
            env: BTreeMap::from([("LOG_LEVEL".to_string(), "debug".to_string()), ("REGION".to_string(), "eu".to_string())]),
            ..given(&[("image", "web:2")])
        };
        let pod = render(&WORKLOAD_TEMPLATE, "web", &web(), &request).unwrap();
        assert_eq!(
            pod["spec"]["initContainers"][0]["env"],
            json!([{"name": "LOG_LEVEL", "value": "debug"}, {"name": "REGION", "value": "eu"}])
        );
        assert_eq!(
            pod["spec"]["containers"][0]["env"],
            json!([{"name": "KEEP", "value": "1"}, {"name": "LOG_LEVEL", "value": "debug"}, {"name": "REGION", "value": "eu"}])
        );
    }

    #[test]
    fn a_value_is_not_expanded_again() {
        let pod = render(&WORKLOAD_TEMPLATE, "web", &web(), &given(&[("image", "${port}")])).unwrap();
        assert_eq!(pod["spec"]["containers"][0]["image"], "${port}");
    }
}
