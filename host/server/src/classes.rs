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
    let invalid = |field: String, message: String| ApiError::invalid(&POD, &name, vec![FieldError::invalid(field, message)]);
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
    if let Some(allowed) = namespace_object
        .pointer(&format!("/metadata/annotations/{}", ALLOWED_CLASSES_ANNOTATION.replace('/', "~1")))
        .and_then(Value::as_str)
    {
        let allowed: Vec<&str> = allowed.split(',').map(str::trim).filter(|c| !c.is_empty()).collect();
        if !allowed.contains(&class_name.as_str()) {
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
