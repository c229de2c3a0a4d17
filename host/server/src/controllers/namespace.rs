//! Namespace finalization. Deleting a namespace marks it `Terminating`
//! (`metadata.deletionTimestamp`), as in Kubernetes: it takes no new
//! content, and what is in it can still be read and deleted. After
//! [`FINALIZE_AFTER`], this controller deletes the namespace and
//! everything left in it, in one transaction.

use std::time::Duration;

use kapsel_api::kinds::namespace::NAMESPACE;
use kapsel_api::object;
use kapsel_store::{Key, Store, StoreError, WriteOp};

/// How long a namespace stays `Terminating` before its contents go.
pub const FINALIZE_AFTER: Duration = Duration::from_secs(1);
/// How often terminating namespaces are looked for.
const PASS_INTERVAL: Duration = Duration::from_millis(250);

pub async fn run(store: Store, mut stopping: tokio::sync::watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(PASS_INTERVAL);
    loop {
        tokio::select! {
            _ = stopping.wait_for(|stop| *stop) => return,
            _ = ticker.tick() => {}
        }
        if let Err(error) = pass(&store).await {
            tracing::warn!(error = &error as &dyn std::error::Error, "namespace finalization pass failed");
        }
    }
}

/// Finalizes every namespace whose termination grace has passed.
async fn pass(store: &Store) -> Result<(), StoreError> {
    let now = chrono::Utc::now();
    for namespace in store.list(&NAMESPACE.store_key(), None).await?.objects {
        let Some(since) = object::meta_str(&namespace, "deletionTimestamp").and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        else {
            continue;
        };
        if now.signed_duration_since(since).to_std().unwrap_or_default() < FINALIZE_AFTER {
            continue;
        }
        let name = object::name(&namespace).unwrap_or_default().to_string();
        let expected_revision = object::resource_version(&namespace).and_then(Result::ok);
        match store.write(WriteOp::DeleteNamespace { key: Key::new(NAMESPACE.store_key(), "", &name), expected_revision }).await {
            Ok(changes) => tracing::info!(namespace = %name, objects = changes.len() - 1, "namespace deleted with its contents"),
            // Changed or gone since the list: the next pass sees the new state.
            Err(StoreError::Conflict { .. } | StoreError::NotFound) => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}
