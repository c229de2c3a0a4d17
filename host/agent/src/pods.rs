//! The pods of a node: following those bound to it (list, then watch),
//! running each on `kapsel-node`'s runtime with images from the
//! supervisor's artifact store, and sending back their status (merge
//! patches of `pods/{name}/status`) and events; stopping those deleted or
//! failed by the supervisor, and finishing graceful deletions.
//!
//! No pod stops the loop: each worker runs in its own tasks (a panic there
//! fails that pod alone, see `kapsel_node::pod`), and a panic while the
//! loop handles one pod's change is caught here, logged, and reported as
//! that pod's failure (`PodWorkerPanicked`); the loop goes on with the next.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, bail};
use kapsel_api::kinds::artifact::{ARTIFACT, ArtifactSpec, ImageReference};
use kapsel_api::kinds::config::{CONFIG_MAP, SECRET, config_map_data, secret_data};
use kapsel_api::kinds::event::{self, EventType};
use kapsel_api::kinds::pod::has_ended;
use kapsel_api::object;
use kapsel_client::{Client, Method};
use kapsel_node::pod::config::{ConfigData, ConfigKind};
use kapsel_node::{PodWorker, Runtime};
use serde_json::{Value, json};

use super::not_found;
use crate::follow::{Seen, follow};

/// The supervisor as the source of what pods use: an image is resolved
/// through its namespace's `Artifact`, and its bytes are fetched through
/// that artifact (which the node token may read); a ConfigMap or Secret is
/// read when a container starts (the node token may read only those its
/// pods use).
#[derive(Debug)]
struct SupervisorSources {
    client: Client,
    /// Which artifact each resolved digest came from.
    sources: Mutex<HashMap<String, (String, String)>>,
}

#[async_trait::async_trait]
impl kapsel_node::Sources for SupervisorSources {
    async fn resolve(&self, namespace: &str, image: &str) -> anyhow::Result<String> {
        let reference = ImageReference::parse(image).map_err(anyhow::Error::msg)?;
        let path = format!("{}/{}", ARTIFACT.collection_path(Some(namespace)), reference.name());
        let artifact = match self.client.get(&path).await {
            Ok(artifact) => artifact,
            Err(error) if not_found(&error) => bail!("image {image:?} not found in namespace {namespace:?}"),
            Err(error) => return Err(error),
        };
        let spec: ArtifactSpec =
            serde_json::from_value(artifact.get("spec").cloned().unwrap_or_default()).context("reading the artifact")?;
        let digest = spec.resolve(&reference).with_context(|| format!("image {image:?} not found in namespace {namespace:?}"))?.to_string();
        self.sources
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(digest.clone(), (namespace.to_string(), reference.name().to_string()));
        Ok(digest)
    }

    async fn fetch(&self, digest: &str) -> anyhow::Result<Vec<u8>> {
        let source = self.sources.lock().unwrap_or_else(|p| p.into_inner()).get(digest).cloned();
        let (namespace, name) = source.with_context(|| format!("no artifact is known to hold {digest}"))?;
        self.client.get_bytes(&format!("{}/{name}/blobs/{digest}", ARTIFACT.collection_path(Some(&namespace)))).await
    }

    async fn config(&self, kind: ConfigKind, namespace: &str, name: &str) -> anyhow::Result<Option<ConfigData>> {
        let (resource, data): (_, fn(&Value) -> ConfigData) = match kind {
            ConfigKind::ConfigMap => (&CONFIG_MAP, config_map_data),
            ConfigKind::Secret => (&SECRET, secret_data),
        };
        match self.client.get(&format!("{}/{name}", resource.collection_path(Some(namespace)))).await {
            Ok(object) => Ok(Some(data(&object))),
            Err(error) if not_found(&error) => Ok(None),
            Err(error) => Err(error),
        }
    }
}

/// A pod this node runs.
struct Running {
    worker: Arc<PodWorker>,
    /// Sends the worker's status to the supervisor.
    reporter: tokio::task::JoinHandle<()>,
    /// Records the worker's events (Pulled, Started, BackOff, Killing…) as Events.
    recorder: tokio::task::JoinHandle<()>,
}

/// Records a pod's events as Kubernetes Events, aggregated per pod and
/// reason as the supervisor's are (`<pod>.pod.<reason>`, a `count`).
async fn record_events(client: Client, pod: Value, mut events: tokio::sync::broadcast::Receiver<kapsel_node::PodEvent>) {
    let namespace = object::namespace(&pod).unwrap_or_default().to_string();
    let name = object::name(&pod).unwrap_or_default().to_string();
    let collection = format!("/api/v1/namespaces/{namespace}/events");
    loop {
        let event = match events.recv().await {
            Ok(event) => event,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        // The supervisor's shape and name (`<pod>.pod.<reason>`), so repeats are counted in one Event.
        let event_type = match event.kind {
            kapsel_node::EventKind::Normal => EventType::Normal,
            kapsel_node::EventKind::Warning => EventType::Warning,
        };
        let mut first = event::first_event(&pod, event_type, event.reason, &event.message);
        let path = format!("{collection}/{}", object::name(&first).unwrap_or_default());
        let recorded = match client.get(&path).await {
            Ok(mut existing) => {
                let count = existing.get("count").and_then(Value::as_i64).unwrap_or(1);
                existing["count"] = json!(count.saturating_add(1));
                existing["lastTimestamp"] = first["lastTimestamp"].clone();
                existing["message"] = json!(event.message);
                client.put(&path, &existing).await
            }
            Err(error) if not_found(&error) => {
                if let Some(field_path) = &event.field_path {
                    first["involvedObject"]["fieldPath"] = json!(field_path);
                }
                first["source"] = json!({"component": "kapsel-node", "host": pod.pointer("/spec/nodeName").cloned().unwrap_or_default()});
                first["reportingComponent"] = json!("kapsel-node");
                client.post(&collection, &first).await
            }
            Err(error) => Err(error),
        };
        if let Err(error) = recorded {
            tracing::debug!(pod = %name, reason = event.reason, error = format!("{error:#}"), "an event was not recorded");
        }
    }
}

fn pod_status_path(pod: &Value) -> String {
    format!("/api/v1/namespaces/{}/pods/{}/status", object::namespace(pod).unwrap_or_default(), object::name(pod).unwrap_or_default())
}

/// Sends every change of a pod's status as a merge patch, keeping the
/// scheduler's `PodScheduled` condition; ends when the pod is gone.
async fn report(client: Client, pod: Value, mut status: tokio::sync::watch::Receiver<Value>) {
    let path = pod_status_path(&pod);
    let scheduled = object::condition(&pod, "PodScheduled").cloned();
    loop {
        let mut next = status.borrow_and_update().clone();
        if let (Some(scheduled), Some(conditions)) = (&scheduled, next.get_mut("conditions").and_then(Value::as_array_mut)) {
            conditions.insert(0, scheduled.clone());
        }
        match client.merge_patch(&path, &json!({"status": next})).await {
            Ok(_) => {}
            Err(error) if not_found(&error) => return,
            Err(error) => {
                tracing::warn!(pod = %path, error = format!("{error:#}"), "reporting a pod's status failed; trying again");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        }
        if status.changed().await.is_err() {
            return;
        }
    }
}

/// The pods this node runs, by uid.
struct PodSync {
    client: Client,
    runtime: Runtime,
    sources: Arc<SupervisorSources>,
    running: HashMap<String, Running>,
}

impl PodSync {
    /// Starts `pod` unless it runs here already, has ended or is being deleted;
    /// stops one the supervisor marked ended while it runs here.
    fn take(&mut self, pod: &Value) {
        let uid = object::meta_str(pod, "uid").unwrap_or_default().to_string();
        if pod.pointer("/metadata/deletionTimestamp").is_some_and(|t| !t.is_null()) {
            self.finish_deletion(pod, &uid);
            return;
        }
        if let Some(running) = self.running.get(&uid) {
            if has_ended(pod) && !running.worker.phase().is_terminal() {
                tracing::warn!(pod = %pod_status_path(pod), "the supervisor ended a pod this node runs; stopping it");
                self.stop(&uid, false);
            }
            return;
        }
        if has_ended(pod) {
            return;
        }
        let worker = Arc::new(PodWorker::start(self.runtime.clone(), self.sources.clone(), pod));
        let recorder = tokio::spawn(record_events(self.client.clone(), pod.clone(), worker.events()));
        let reporter = tokio::spawn(report(self.client.clone(), pod.clone(), worker.status()));
        tracing::info!(pod = %pod_status_path(pod), %uid, "pod started");
        self.running.insert(uid, Running { worker, reporter, recorder });
    }

    /// A pod being deleted gracefully: stop it (within its grace period),
    /// then delete its object, which the supervisor left for this node to
    /// delete once the pod is stopped.
    fn finish_deletion(&mut self, pod: &Value, uid: &str) {
        let running = self.running.remove(uid);
        let client = self.client.clone();
        let logs = self.runtime.logs().clone();
        let path =
            format!("/api/v1/namespaces/{}/pods/{}", object::namespace(pod).unwrap_or_default(), object::name(pod).unwrap_or_default());
        let uid = uid.to_string();
        tokio::spawn(async move {
            if let Some(running) = running {
                running.worker.stop(running.worker.termination_grace()).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
                running.reporter.abort();
                running.recorder.abort();
            }
            let now = json!({"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0});
            match client.send(Method::DELETE, &path, Some(("application/json", serde_json::to_vec(&now).unwrap_or_default()))).await {
                Ok(_) => tracing::info!(pod = %path, "pod stopped and deleted"),
                Err(error) if not_found(&error) => {}
                Err(error) => tracing::warn!(pod = %path, error = format!("{error:#}"), "deleting a stopped pod failed"),
            }
            let _ = logs.remove_pod(&uid);
        });
    }

    /// Stops the pod `uid` runs as (if it does) in the background, within
    /// its termination grace period; a pod `gone` from the supervisor also
    /// leaves its logs behind.
    fn stop(&mut self, uid: &str, gone: bool) {
        let Some(running) = self.running.remove(uid) else { return };
        let logs = self.runtime.logs().clone();
        let uid = uid.to_string();
        tokio::spawn(async move {
            running.worker.stop(running.worker.termination_grace()).await;
            // The last status and events reach the supervisor (when the pod still exists) before their tasks go.
            tokio::time::sleep(Duration::from_millis(200)).await;
            running.reporter.abort();
            running.recorder.abort();
            if gone && let Err(error) = logs.remove_pod(&uid) {
                tracing::warn!(%uid, %error, "a deleted pod's logs could not be removed");
            }
        });
    }

    /// [`PodSync::take`], with a panic caught: the pod is reported `Failed`
    /// (unless it already runs here) and the loop goes on.
    fn take_guarded(&mut self, pod: &Value) {
        let taking = std::panic::AssertUnwindSafe(|| self.take(pod));
        if let Err(payload) = std::panic::catch_unwind(taking) {
            let message = kapsel_node::pod::panic_message(payload.as_ref());
            tracing::error!(pod = %pod_status_path(pod), panic = %message, "handling a pod panicked; it is failed, the node's other pods go on");
            let uid = object::meta_str(pod, "uid").unwrap_or_default();
            if !self.running.contains_key(uid) && !has_ended(pod) {
                tokio::spawn(report_failure(self.client.clone(), pod.clone(), message));
            }
        }
    }

    /// [`PodSync::stop`], with a panic caught and logged.
    fn stop_guarded(&mut self, uid: &str, gone: bool) {
        if let Err(payload) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.stop(uid, gone))) {
            let message = kapsel_node::pod::panic_message(payload.as_ref());
            tracing::error!(%uid, panic = %message, "stopping a pod panicked; the node's other pods go on");
        }
    }

    /// Brings what runs in line with a full list of the pods bound here
    /// (and removes the logs of pods that are gone, from before a restart
    /// too), one pod at a time, each with its panics caught.
    fn resync(&mut self, pods: &[Value]) {
        let listed: std::collections::HashSet<&str> = pods.iter().filter_map(|p| object::meta_str(p, "uid")).collect();
        let gone: Vec<String> = self.running.keys().filter(|uid| !listed.contains(uid.as_str())).cloned().collect();
        for uid in gone {
            self.stop_guarded(&uid, true);
        }
        let logs = self.runtime.logs().clone();
        for uid in logs.pod_uids().unwrap_or_default() {
            if !listed.contains(uid.as_str()) && !self.running.contains_key(&uid) {
                let _ = logs.remove_pod(&uid);
            }
        }
        for pod in pods {
            self.take_guarded(pod);
        }
    }
}

/// Reports a pod the agent could not handle as `Failed` (reason
/// `PodWorkerPanicked`), so that it does not stay `Pending` for good.
async fn report_failure(client: Client, pod: Value, panic: String) {
    let status = json!({"status": {
        "phase": "Failed",
        "reason": kapsel_node::pod::WORKER_PANICKED,
        "message": format!("the node agent panicked handling this pod ({panic}); it was not run"),
    }});
    if let Err(error) = client.merge_patch(&pod_status_path(&pod), &status).await {
        tracing::warn!(pod = %pod_status_path(&pod), error = format!("{error:#}"), "reporting a pod the agent failed on failed");
    }
}

/// Follows the pods bound to `node` (list, then watch; again after a
/// watch ends) and runs them, until `stopping`; then stops them all.
pub(super) async fn sync_pods(client: Client, node: String, runtime: Runtime, stopping: tokio::sync::watch::Receiver<bool>) {
    let sources = Arc::new(SupervisorSources { client: client.clone(), sources: Mutex::default() });
    let mut pods = PodSync { client: client.clone(), runtime, sources, running: HashMap::new() };
    let collection = format!("/api/v1/pods?fieldSelector=spec.nodeName%3D{node}");
    follow(&client, &collection, "the node's pods", stopping, |seen| match seen {
        Seen::Listed(items) => pods.resync(&items),
        Seen::Changed(pod) => pods.take_guarded(&pod),
        Seen::Deleted(pod) => pods.stop_guarded(object::meta_str(&pod, "uid").unwrap_or_default(), true),
    })
    .await;
    let uids: Vec<String> = pods.running.keys().cloned().collect();
    for uid in uids {
        pods.stop_guarded(&uid, false);
    }
}
