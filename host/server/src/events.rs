//! Events the platform records about objects, aggregated as Kubernetes
//! does: one `Event` per object and reason (named `<object>.<kind>.<reason>`,
//! built by `kapsel_api::kinds::event::first_event`), its `count` and
//! `lastTimestamp` bumped when it happens again, so a failing plug-in
//! called a thousand times leaves one event, not a thousand.
//! Events of cluster-scoped objects go to the `default` namespace, where
//! only IT admins see them (they may name any tenant's objects); an event
//! about a cluster-scoped object that concerns one namespace (a cluster
//! policy's audit violation by an object there) is recorded in that
//! namespace instead ([`record_in`]), for its tenants to see.

use kapsel_api::kinds::event::{self, CLUSTER_EVENTS_NAMESPACE, EVENT, EventType};
use kapsel_api::object;
use kapsel_store::{Key, Store, StoreError};
use serde_json::{Value, json};

/// Records that `reason` happened to `involved` (a stored object). Failing
/// to record is logged, never raised: events are a report, not a step of
/// the operation.
pub async fn record(store: &Store, involved: &Value, event_type: EventType, reason: &str, message: &str) {
    record_in(store, None, involved, event_type, reason, message).await;
}

/// [`record`], in `namespace` when given (else the involved object's, or
/// [`CLUSTER_EVENTS_NAMESPACE`] for a cluster-scoped one).
pub async fn record_in(store: &Store, namespace: Option<&str>, involved: &Value, event_type: EventType, reason: &str, message: &str) {
    for _ in 0..3 {
        match try_record(store, namespace, involved, event_type, reason, message).await {
            Err(StoreError::Conflict { .. } | StoreError::AlreadyExists) => continue,
            Err(error) => {
                tracing::warn!(reason, error = &error as &dyn std::error::Error, "could not record an event");
                return;
            }
            Ok(()) => return,
        }
    }
}

/// The key and first occurrence of the Event recording that `reason`
/// happened to `involved` (for a caller that writes it together with
/// something else; [`record`] aggregates repeats).
pub fn first_event(involved: &Value, event_type: EventType, reason: &str, message: &str) -> (Key, Value) {
    let event = event::first_event(involved, event_type, reason, message);
    (key_of(&event), event)
}

/// Where `event` is stored.
fn key_of(event: &Value) -> Key {
    Key::new(EVENT.store_key(), object::namespace(event).unwrap_or_default(), object::name(event).unwrap_or_default())
}

async fn try_record(
    store: &Store,
    namespace: Option<&str>,
    involved: &Value,
    event_type: EventType,
    reason: &str,
    message: &str,
) -> Result<(), StoreError> {
    let first = event::first_event_in(namespace, involved, event_type, reason, message);
    let key = key_of(&first);
    match store.get(&key).await {
        Ok(mut event) => {
            let expected = object::resource_version(&event).and_then(Result::ok);
            let count = event.get("count").and_then(Value::as_i64).unwrap_or(1);
            event["count"] = json!(count + 1);
            event["lastTimestamp"] = first["lastTimestamp"].clone();
            event["message"] = json!(message);
            event["type"] = json!(event_type.as_str());
            store.update(key, event, expected).await.map(drop)
        }
        Err(StoreError::NotFound) => store.create(key, first).await.map(drop),
        Err(error) => Err(error),
    }
}

/// Whether `event` is IT's alone to read: one about a cluster-scoped
/// object (its `involvedObject` has no namespace), recorded in
/// [`CLUSTER_EVENTS_NAMESPACE`] — it may name any tenant's objects.
pub fn for_it_only(event: &Value) -> bool {
    object::namespace(event) == Some(CLUSTER_EVENTS_NAMESPACE)
        && event.pointer("/involvedObject/namespace").and_then(Value::as_str).is_none_or(str::is_empty)
}
