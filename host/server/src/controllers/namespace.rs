//! Namespaces: networks and finalization.
//!
//! Deleting a namespace marks it `Terminating` (`metadata.deletionTimestamp`),
//! as in Kubernetes: it takes no new content, and what is in it can still be
//! read and deleted. After [`FINALIZE_AFTER`], this controller releases its
//! network (through the driver that handed it out, under that driver's
//! failure policy: under `Fail` a failed release keeps the namespace
//! `Terminating` and is retried) and deletes the namespace and everything
//! left in it, in one transaction — which also ends the roles tokens hold
//! in it: each `Token` with a role there loses that entry (an adjustment of
//! the token as stored, inside the same transaction), so a namespace
//! re-created under the same name is not handed to the old tokens. A role
//! granted for a namespace that does not exist yet is left alone: it is
//! for the namespace to come, as the admin meant.
//!
//! It also gives a network to every active namespace that has none while a
//! network driver is in charge — namespaces created before the driver was
//! uploaded, the `default` one, and those whose create skipped a failing
//! driver under `Ignore` — every [`NETWORK_PASS_EVERY`] passes.

use std::sync::Arc;
use std::time::Duration;

use kapsel_api::kinds::namespace::NAMESPACE;
use kapsel_api::kinds::token::TOKEN;
use kapsel_api::object;
use kapsel_store::{Adjustment, Key, StoreError, WriteOp};
use serde_json::{Value, json};

use crate::plugins::{self, DRIVER_ANNOTATION, GATEWAY_ANNOTATION, SEGMENT_ANNOTATION};
use crate::{App, auth};

/// How long a namespace stays `Terminating` before its contents go.
pub const FINALIZE_AFTER: Duration = Duration::from_secs(1);
/// How often terminating namespaces are looked for.
pub const PASS_INTERVAL: Duration = Duration::from_millis(250);
/// Namespaces without a network are looked for every this many passes (2 s).
const NETWORK_PASS_EVERY: u32 = 8;

/// Pass number `number`: finalize the namespaces being deleted and, every
/// [`NETWORK_PASS_EVERY`] passes, give networks to those without one.
pub async fn pass(app: App, number: u32) {
    if let Err(error) = finalize(&app).await {
        tracing::warn!(error = &error as &dyn std::error::Error, "namespace finalization pass failed");
    }
    if number.is_multiple_of(NETWORK_PASS_EVERY)
        && let Err(error) = give_networks(&app).await
    {
        tracing::warn!(error = &error as &dyn std::error::Error, "namespace network pass failed");
    }
}

fn annotation<'a>(namespace: &'a Value, key: &str) -> Option<&'a str> {
    namespace.get("metadata")?.get("annotations")?.get(key)?.as_str()
}

/// Finalizes every namespace whose termination grace has passed.
async fn finalize(app: &App) -> Result<(), StoreError> {
    let now = chrono::Utc::now();
    for namespace in app.store.list(&NAMESPACE.store_key(), None).await?.objects {
        let Some(since) = object::meta_str(&namespace, "deletionTimestamp").and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        else {
            continue;
        };
        if now.signed_duration_since(since).to_std().unwrap_or_default() < FINALIZE_AFTER {
            continue;
        }
        let name = object::name(&namespace).unwrap_or_default().to_string();
        if !release_network(app, &namespace, &name).await {
            continue;
        }
        let expected_revision = object::resource_version(&namespace).and_then(Result::ok);
        let mut ops = vec![WriteOp::DeleteNamespace { key: Key::new(NAMESPACE.store_key(), "", &name), expected_revision }];
        ops.extend(end_roles(app, &name).await?);
        match app.store.write(WriteOp::Atomic(ops)).await {
            Ok(changes) => {
                let tokens = changes.iter().filter(|c| c.key.resource == TOKEN.store_key()).count();
                let objects = changes.len() - tokens;
                if let Some(last) = changes.iter().filter(|c| c.key.resource == TOKEN.store_key()).map(|c| c.revision).max() {
                    // The very next request sees the tokens without the role.
                    app.auth.caught_up(last).await;
                }
                tracing::info!(namespace = %name, objects = objects.saturating_sub(1), tokens, "namespace deleted with its contents and the roles in it");
            }
            // Changed or gone since the list (the namespace, or a token): the next pass sees the new state.
            Err(StoreError::AtomicOpFailed { error, .. }) if matches!(*error, StoreError::Conflict { .. } | StoreError::NotFound) => {}
            Err(StoreError::Conflict { .. } | StoreError::NotFound) => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// The ops that take `namespace`'s roles out of every token holding one,
/// each applied to the token as stored when the transaction runs (a token
/// changed since the list loses the role all the same; one deleted since
/// fails the transaction, which the next pass retries).
async fn end_roles(app: &App, namespace: &str) -> Result<Vec<WriteOp>, StoreError> {
    let tokens = app.store.list(&TOKEN.store_key(), None).await?.objects;
    Ok(tokens
        .iter()
        .filter(|token| auth::without_roles_in(token, namespace).is_some())
        .map(|token| {
            let ending = namespace.to_string();
            WriteOp::Adjust {
                key: Key::new(TOKEN.store_key(), "", object::name(token).unwrap_or_default()),
                adjust: Adjustment(Arc::new(move |stored: &Value| {
                    Ok(auth::without_roles_in(stored, &ending).unwrap_or_else(|| stored.clone()))
                })),
            }
        })
        .collect())
}

/// Releases the namespace's network through the driver that handed it out;
/// `false` when the namespace must wait (the call failed under `Fail`).
async fn release_network(app: &App, namespace: &Value, name: &str) -> bool {
    let Some(driver) = annotation(namespace, DRIVER_ANNOTATION).and_then(|d| app.plugins.get(d)) else {
        // No network, or its driver is gone (deleting a driver abandons what it handed out).
        return true;
    };
    let releasing = name.to_string();
    let released = app
        .plugins
        .invoke(&driver, format!("releasing the network of namespace {name:?}"), move |hosted| match hosted {
            kapsel_plugins::Hosted::Network(network) => network.delete_network(&releasing),
            _ => Ok(Ok(())),
        })
        .await;
    match released {
        Ok(Some(Err(refusal))) => {
            tracing::warn!(namespace = %name, driver = %driver.name, refusal = %kapsel_plugins::network::describe(&refusal), "the network driver refused to release a namespace network; deleting the namespace anyway");
            true
        }
        Ok(_) => true,
        Err(failure) => {
            tracing::warn!(namespace = %name, %failure, "namespace waits for its network to be released");
            false
        }
    }
}

/// Gives a network to every active namespace without one.
async fn give_networks(app: &App) -> Result<(), StoreError> {
    if app.plugins.network_driver().is_none() {
        return Ok(());
    }
    for namespace in app.store.list(&NAMESPACE.store_key(), None).await?.objects {
        if annotation(&namespace, SEGMENT_ANNOTATION).is_some() || object::meta_str(&namespace, "deletionTimestamp").is_some() {
            continue;
        }
        let name = object::name(&namespace).unwrap_or_default().to_string();
        let creating = name.clone();
        let answer = plugins::network_call(&app.plugins, format!("creating the network of namespace {name:?}"), move |driver| {
            driver.create_network(&creating)
        })
        .await;
        let (driver, segment) = match answer {
            Ok(Some((driver, Ok(segment)))) => (driver, segment),
            Ok(Some((driver, Err(refusal)))) => {
                let refusal = kapsel_plugins::network::describe(&refusal);
                tracing::warn!(namespace = %name, %driver, %refusal, "no network for a namespace");
                continue;
            }
            Ok(None) => continue,
            Err(failure) => {
                tracing::warn!(namespace = %name, %failure, "no network for a namespace yet");
                continue;
            }
        };
        let mut updated = namespace.clone();
        let metadata = object::metadata_mut(&mut updated);
        let annotations = metadata.entry("annotations").or_insert_with(|| json!({}));
        annotations[SEGMENT_ANNOTATION] = json!(segment.cidr);
        annotations[GATEWAY_ANNOTATION] = json!(segment.gateway);
        annotations[DRIVER_ANNOTATION] = json!(driver);
        let expected = object::resource_version(&namespace).and_then(Result::ok);
        match app.store.update(Key::new(NAMESPACE.store_key(), "", &name), updated, expected).await {
            Ok(_) => tracing::info!(namespace = %name, segment = %segment.cidr, "namespace network assigned"),
            // Changed meanwhile: the next pass tries again (create-network is idempotent).
            Err(StoreError::Conflict { .. } | StoreError::NotFound) => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}
