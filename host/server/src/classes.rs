//! `ResourceClass`es applied to new pods, before LimitRanges, validation
//! and admission (so they all see the sized pod): a pod naming a class in
//! `spec.resourceClassName` gets the class's `requests` and `limits` on
//! every container. A container that sets its own resources beside a class
//! is refused (422 naming the field): the class is the size. A namespace
//! whose annotation `kapsel.io/resource-classes` lists classes admits only
//! those (403 naming the allowed ones); only IT admins write namespaces.

use kapsel_api::kinds::namespace::NAMESPACE;
use kapsel_api::kinds::pod::POD;
use kapsel_api::kinds::resource_class::{ALLOWED_CLASSES_ANNOTATION, RESOURCE_CLASS, ResourceClassSpec};
use kapsel_api::{FieldError, object};
use kapsel_store::{Key, Store, StoreError};
use serde_json::{Value, json};

use crate::error::ApiError;

/// Sizes `pod` (a new pod in `namespace`) by the class it names, if any.
pub async fn apply(store: &Store, namespace: &str, pod: &mut Value) -> Result<(), ApiError> {
    let Some(class_name) = pod.pointer("/spec/resourceClassName").and_then(Value::as_str).filter(|c| !c.is_empty()).map(str::to_string)
    else {
        return Ok(());
    };
    let name = object::name(pod).unwrap_or_default().to_string();
    let class = match store.get(&Key::new(RESOURCE_CLASS.store_key(), "", &class_name)).await {
        Ok(class) => class,
        Err(StoreError::NotFound) => {
            let message = format!("resource class {class_name:?} does not exist: `kapsel get resourceclasses` lists the classes there are");
            return Err(ApiError::invalid(&POD, &name, vec![FieldError::not_found("spec.resourceClassName", message)]));
        }
        Err(other) => return Err(ApiError::from_store(other, &RESOURCE_CLASS, &class_name)),
    };
    let namespace_object =
        store.get(&Key::new(NAMESPACE.store_key(), "", namespace)).await.map_err(|e| ApiError::from_store(e, &NAMESPACE, namespace))?;
    size(pod, namespace, &namespace_object, &class_name, &class)
}

/// Sizes `pod` (a new pod in `namespace`, stored as `namespace_object`) by
/// `class`, the stored ResourceClass it names as `class_name`, if the
/// namespace allows that class.
fn size(pod: &mut Value, namespace: &str, namespace_object: &Value, class_name: &str, class: &Value) -> Result<(), ApiError> {
    let name = object::name(pod).unwrap_or_default().to_string();
    let invalid = |field: String, message: String| ApiError::invalid(&POD, &name, vec![FieldError::invalid(field, message)]);
    if let Some(allowed) = namespace_object
        .pointer(&format!("/metadata/annotations/{}", ALLOWED_CLASSES_ANNOTATION.replace('/', "~1")))
        .and_then(Value::as_str)
    {
        let allowed: Vec<&str> = allowed.split(',').map(str::trim).filter(|c| !c.is_empty()).collect();
        if !allowed.contains(&class_name) {
            return Err(ApiError::Forbidden(format!(
                "pods {name:?} is forbidden: resource class {class_name:?} is not allowed in namespace {namespace:?} (allowed: {})",
                if allowed.is_empty() { "none".to_string() } else { allowed.join(", ") }
            )));
        }
    }
    let spec: ResourceClassSpec = serde_json::from_value(class.get("spec").cloned().unwrap_or(Value::Null))
        .map_err(|e| ApiError::internal(format!("resource class {class_name:?} as stored"), e))?;
    for field in ["initContainers", "containers"] {
        let Some(containers) = pod.pointer_mut(&format!("/spec/{field}")).and_then(Value::as_array_mut) else { continue };
        for (i, container) in containers.iter_mut().enumerate() {
            // A container that is not an object is validation's to report.
            let Some(container) = container.as_object_mut() else { continue };
            let own = ["requests", "limits"]
                .iter()
                .any(|f| container.get("resources").and_then(|r| r.get(f)).and_then(Value::as_object).is_some_and(|m| !m.is_empty()));
            if own {
                return Err(invalid(
                    format!("spec.{field}[{i}].resources"),
                    format!("must be empty when spec.resourceClassName is set: the class {class_name:?} sizes every container"),
                ));
            }
            // Only requests and limits: anything else under resources (claims) stays.
            // Resources that are not an object are left for validation to report.
            if let Some(resources) = crate::limits::object_at(container, "resources") {
                resources.insert("requests".into(), json!(spec.requests));
                resources.insert("limits".into(), json!(spec.limits));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The class `small`, as stored.
    fn small() -> Value {
        json!({"apiVersion": "kapsel.io/v1alpha1", "kind": "ResourceClass", "metadata": {"name": "small"},
            "spec": {"description": "small things", "requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": "200m", "memory": "64Mi"}}})
    }

    /// The namespace `dev`, with the allowed-classes annotation when given.
    fn namespace(allowed: Option<&str>) -> Value {
        let mut namespace = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "dev"}});
        if let Some(allowed) = allowed {
            namespace["metadata"]["annotations"] = json!({ALLOWED_CLASSES_ANNOTATION: allowed});
        }
        namespace
    }

    fn pod(containers: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"}, "spec": {"resourceClassName": "small", "containers": containers}})
    }

    #[test]
    fn every_container_and_init_container_gets_the_class() {
        let mut pod =
            pod(json!([{"name": "a", "image": "app:1"}, {"name": "b", "image": "app:1", "resources": {"claims": [{"name": "gpu"}]}}]));
        pod["spec"]["initContainers"] = json!([{"name": "setup", "image": "app:1", "resources": {}}]);
        size(&mut pod, "dev", &namespace(None), "small", &small()).unwrap();
        let sized = json!({"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": "200m", "memory": "64Mi"}});
        assert_eq!(pod["spec"]["containers"][0]["resources"], sized);
        assert_eq!(pod["spec"]["initContainers"][0]["resources"], sized);
        // What else is under resources stays.
        let b = &pod["spec"]["containers"][1]["resources"];
        assert_eq!((&b["requests"], &b["limits"], &b["claims"]), (&sized["requests"], &sized["limits"], &json!([{"name": "gpu"}])));
    }

    #[test]
    fn a_container_sized_by_itself_beside_a_class_is_invalid_at_its_resources() {
        let mut second = pod(
            json!([{"name": "a", "image": "app:1", "resources": {"requests": {}}}, {"name": "b", "image": "app:1", "resources": {"limits": {"cpu": "1"}}}]),
        );
        match size(&mut second, "dev", &namespace(None), "small", &small()) {
            Err(ApiError::Invalid { kind, name, causes, .. }) => {
                assert_eq!((kind.as_str(), name.as_str()), ("Pod", "web"));
                assert_eq!(causes.len(), 1, "{causes:?}");
                assert_eq!((causes[0].field.as_str(), causes[0].reason), ("spec.containers[1].resources", "FieldValueInvalid"));
                assert!(causes[0].message.contains("the class \"small\" sizes every container"), "{}", causes[0].message);
            }
            other => panic!("expected 422 Invalid, got {other:?}"),
        }
        // Init containers are checked too, and first.
        let mut both = pod(json!([{"name": "a", "image": "app:1", "resources": {"limits": {"cpu": "1"}}}]));
        both["spec"]["initContainers"] = json!([{"name": "setup", "image": "app:1", "resources": {"requests": {"memory": "1Gi"}}}]);
        match size(&mut both, "dev", &namespace(None), "small", &small()) {
            Err(ApiError::Invalid { causes, .. }) => assert_eq!(causes[0].field, "spec.initContainers[0].resources"),
            other => panic!("expected 422 Invalid, got {other:?}"),
        }
    }

    #[test]
    fn a_namespace_that_lists_classes_admits_only_those() {
        let mut allowed = pod(json!([{"name": "a", "image": "app:1"}]));
        size(&mut allowed, "dev", &namespace(Some(" large , small ")), "small", &small()).unwrap();
        assert_eq!(allowed["spec"]["containers"][0]["resources"]["limits"]["cpu"], "200m");

        let mut refused = pod(json!([{"name": "a", "image": "app:1"}]));
        match size(&mut refused, "dev", &namespace(Some("large,huge")), "small", &small()) {
            Err(ApiError::Forbidden(message)) => assert_eq!(
                message,
                r#"pods "web" is forbidden: resource class "small" is not allowed in namespace "dev" (allowed: large, huge)"#
            ),
            other => panic!("expected 403 Forbidden, got {other:?}"),
        }
        assert!(refused["spec"]["containers"][0].get("resources").is_none(), "a refused pod was sized");
        match size(&mut refused, "dev", &namespace(Some("")), "small", &small()) {
            Err(ApiError::Forbidden(message)) => assert!(message.ends_with("(allowed: none)"), "{message}"),
            other => panic!("expected 403 Forbidden, got {other:?}"),
        }
    }
}
