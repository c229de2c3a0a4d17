//! `Namespace`: a new one starts `Active` and gets its network from the
//! network driver in charge, under the driver's failure policy, recorded in
//! annotations only the platform writes. Deleting one marks it
//! `Terminating`; the namespace controller (`controllers::namespace`)
//! deletes its contents, releases its network and then the namespace. A
//! tenant sees only the namespaces it holds a role in.

use async_trait::async_trait;
use kapsel_api::kinds::namespace::NAMESPACE;
use kapsel_api::object;
use kapsel_store::StoreError;
use serde_json::{Value, json};

use super::{Deleting, Deletion, Strategy};
use crate::App;
use crate::auth::Identity;
use crate::error::ApiError;
use crate::plugins;

/// The prefix of the annotations recording a namespace's network.
const NETWORK_ANNOTATION_PREFIX: &str = "network.kapsel.io/";

#[derive(Debug)]
pub struct Namespaces;

#[async_trait]
impl Strategy for Namespaces {
    fn hidden_from(&self, identity: &Identity, namespace: &Value) -> bool {
        !object::name(namespace).is_some_and(|name| identity.sees_namespace(name))
    }

    async fn prepare_for_create(
        &self,
        _app: &App,
        _identity: &Identity,
        _namespace: Option<&str>,
        namespace: &mut Value,
    ) -> Result<Option<String>, ApiError> {
        namespace["status"] = json!({"phase": "Active"});
        // The network annotations are the platform's to write.
        if let Some(annotations) = namespace.pointer_mut("/metadata/annotations").and_then(Value::as_object_mut) {
            annotations.retain(|key, _| !key.starts_with(NETWORK_ANNOTATION_PREFIX));
        }
        Ok(None)
    }

    async fn before_store(&self, app: &App, namespace: &mut Value) -> Result<(), ApiError> {
        let name = object::name(namespace).unwrap_or_default().to_string();
        let creating = name.clone();
        let answer = plugins::network_call(&app.plugins, format!("creating the network of namespace {name:?}"), move |driver| {
            driver.create_network(&creating)
        })
        .await?;
        match answer {
            Some((driver, Ok(segment))) => {
                let metadata = object::metadata_mut(namespace);
                let annotations = metadata.entry("annotations").or_insert_with(|| json!({}));
                annotations[plugins::SEGMENT_ANNOTATION] = json!(segment.cidr);
                annotations[plugins::GATEWAY_ANNOTATION] = json!(segment.gateway);
                annotations[plugins::DRIVER_ANNOTATION] = json!(driver);
                Ok(())
            }
            Some((driver, Err(refusal))) => Err(ApiError::Forbidden(format!(
                "namespace {name:?} cannot get a network: the network driver {driver:?} refused: {}",
                kapsel_plugins::network::describe(&refusal)
            ))),
            None => Ok(()),
        }
    }

    fn prepare_for_update(&self, current: &Value, next: &mut Value) -> Result<(), ApiError> {
        // The network annotations stay as the platform wrote them.
        let network = |object: &Value| -> Vec<(String, Value)> {
            object
                .pointer("/metadata/annotations")
                .and_then(Value::as_object)
                .map(|a| a.iter().filter(|(k, _)| k.starts_with(NETWORK_ANNOTATION_PREFIX)).map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default()
        };
        let kept = network(current);
        let metadata = object::metadata_mut(next);
        if kept.is_empty() && !metadata.contains_key("annotations") {
            return Ok(());
        }
        let annotations = metadata.entry("annotations").or_insert_with(|| json!({}));
        if let Some(annotations) = annotations.as_object_mut() {
            annotations.retain(|key, _| !key.starts_with(NETWORK_ANNOTATION_PREFIX));
            annotations.extend(kept);
        }
        Ok(())
    }

    /// Marks the namespace `Terminating`; the namespace controller deletes it and its contents shortly after.
    async fn delete(&self, app: &App, deleting: &Deleting<'_>) -> Result<Deletion, ApiError> {
        let Deleting { key, expected, .. } = *deleting;
        let name = key.name.as_str();
        // Read again: admission ran since the generic path read it.
        let current = &app.store.get(key).await.map_err(|e| ApiError::from_store(e, &NAMESPACE, name))?;
        let revision = object::resource_version(current).and_then(Result::ok);
        let precondition_failed =
            || ApiError::conflict(&NAMESPACE, name, "Precondition failed: the object has been modified since the given resourceVersion");
        if expected.is_some_and(|e| Some(e) != revision) {
            return Err(precondition_failed());
        }
        if object::meta_str(current, "deletionTimestamp").is_some() {
            return Ok(Deletion::Marked(current.clone()));
        }
        let mut namespace = current.clone();
        object::set_meta(&mut namespace, "deletionTimestamp", object::now());
        object::set_meta(&mut namespace, "deletionGracePeriodSeconds", 0);
        namespace["status"] = json!({"phase": "Terminating"});
        let updated = app.store.update(key.clone(), namespace, revision).await.map_err(|e| match e {
            StoreError::Conflict { .. } => precondition_failed(),
            other => ApiError::from_store(other, &NAMESPACE, name),
        })?;
        Ok(Deletion::Marked((*updated.object).clone()))
    }
}
