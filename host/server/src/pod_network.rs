//! Pod addresses from the network driver, as a CNI plug-in gives them:
//! a pod gets its address from the driver's `attach-pod` when the scheduler
//! binds it — the binding writes `status.podIP` (and `podIPs`) with
//! `spec.nodeName`, so a pod never runs without it — and gives it back
//! through `detach-pod` when it ends or is deleted ([`release`], a follower
//! of pods). The driver knows a pod by its uid, so a pod deleted and created
//! again under the same name never shares or loses an address.
//!
//! A driver that cannot give an address (its segment is full, say) leaves
//! the pod Pending: `PodScheduled=False`, reason `NetworkUnavailable`, with
//! the driver's words, tried again when the cluster changes (a pod that ends
//! frees an address). A namespace without a network (created while no
//! driver was in charge) and a cluster without a driver bind pods without an
//! address, as before. The driver's failure policy applies to its calls: a
//! failed call under `Ignore` binds without an address.

use futures::StreamExt as _;
use kapsel_api::kinds::pod::{POD, has_ended};
use kapsel_api::object;
use kapsel_plugins::network::{NetworkError, describe};
use kapsel_store::ChangeType;
use serde_json::Value;

use crate::App;
use crate::plugins::{PluginRegistry, network_call};
use crate::reflector::{self, Event};

/// The reason of a pod's `PodScheduled=False` while the driver has no address for it.
pub const NETWORK_UNAVAILABLE: &str = "NetworkUnavailable";

/// The address the network driver gives `pod` (`Ok(None)`: no driver in
/// charge, the namespace has no network, or the call failed under `Ignore`);
/// `Err` with the words the pod waits with.
pub async fn attach(plugins: &PluginRegistry, pod: &Value) -> Result<Option<String>, String> {
    let (Some(namespace), Some(uid)) = (object::namespace(pod), object::meta_str(pod, "uid")) else { return Ok(None) };
    let (namespace, uid) = (namespace.to_string(), uid.to_string());
    let operation = format!("giving pod {namespace}/{} an address", object::name(pod).unwrap_or_default());
    let (calling_namespace, calling_uid) = (namespace.clone(), uid.clone());
    match network_call(plugins, operation, move |driver| driver.attach_pod(&calling_namespace, &calling_uid)).await {
        Ok(None) | Ok(Some((_, Err(NetworkError::UnknownNamespace)))) => Ok(None),
        Ok(Some((_, Ok(address)))) => Ok(Some(address)),
        Ok(Some((driver, Err(refused)))) => {
            Err(format!("network driver {driver:?} gives namespace {namespace:?} no address for the pod: {}", describe(&refused)))
        }
        Err(failure) => Err(format!("network driver {:?} failed: {}", failure.plugin, failure.error)),
    }
}

/// Gives the address of the pod `uid` of `namespace` back to the driver (nothing to do without one).
pub async fn detach(plugins: &PluginRegistry, namespace: &str, uid: &str) {
    let (calling_namespace, calling_uid) = (namespace.to_string(), uid.to_string());
    let operation = format!("releasing the address of pod {uid} in {namespace}");
    match network_call(plugins, operation, move |driver| driver.detach_pod(&calling_namespace, &calling_uid)).await {
        Ok(None | Some((_, Ok(())))) | Ok(Some((_, Err(NetworkError::UnknownNamespace)))) => {}
        Ok(Some((_, Err(refused)))) => {
            tracing::warn!(namespace, uid, error = %describe(&refused), "the network driver did not release a pod's address")
        }
        Err(failure) => tracing::warn!(namespace, uid, error = %failure.error, "releasing a pod's address failed"),
    }
}

/// Whether `pod` holds an address it should give back: it has one, and has ended.
fn holds_address(pod: &Value) -> bool {
    pod.pointer("/status/podIP").and_then(Value::as_str).is_some_and(|ip| !ip.is_empty())
}

/// Follows the pods and gives back the addresses of those that end or go,
/// until the server stops (a listing gives back those of pods that ended meanwhile).
pub async fn release(app: App) {
    let mut pods = reflector::follow(app.store.clone(), &POD, None);
    let mut stopping = app.stopping.clone();
    loop {
        let event = tokio::select! {
            _ = stopping.wait_for(|stop| *stop) => return,
            event = pods.next() => match event {
                Some(event) => event,
                None => return,
            },
        };
        match event {
            Event::Listed { objects, .. } => {
                for pod in objects.iter().filter(|pod| holds_address(pod) && has_ended(pod)) {
                    release_one(&app, pod).await;
                }
            }
            Event::Changed(change) => {
                let gone = change.change_type == ChangeType::Deleted;
                if holds_address(&change.object) && (gone || has_ended(&change.object)) {
                    release_one(&app, &change.object).await;
                }
            }
        }
    }
}

async fn release_one(app: &App, pod: &Value) {
    if let (Some(namespace), Some(uid)) = (object::namespace(pod), object::meta_str(pod, "uid")) {
        detach(&app.plugins, namespace, uid).await;
    }
}
