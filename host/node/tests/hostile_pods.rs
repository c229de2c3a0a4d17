//! Pods written to hurt the node (issue 11): numbers at the edge of their
//! types in the spec and the status, and a worker that panics. Each must end
//! (or run) that pod alone, with the node's other pods going on. No network:
//! the sample workloads come from the build, images from memory.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{WorkloadImages, log_contains, runtime, status_where};
use kapsel_node::pod::WORKER_PANICKED;
use kapsel_node::pod::config::{ConfigData, ConfigKind};
use kapsel_node::{PodWorker, Sources};
use serde_json::{Value, json};

const SOON: Duration = Duration::from_secs(10);

fn pod(uid: &str, spec: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": uid, "namespace": "team-a", "uid": uid}, "spec": spec})
}

fn phase(status: &Value) -> &str {
    status["phase"].as_str().unwrap_or_default()
}

/// Serves the sample workloads, except that resolving `boom:*` panics (a bug in the image source, as far as the node knows).
struct PanickingImages(Arc<WorkloadImages>);

#[async_trait::async_trait]
impl Sources for PanickingImages {
    async fn resolve(&self, namespace: &str, image: &str) -> anyhow::Result<String> {
        if image.starts_with("boom") {
            panic!("the image source blew up on {image}");
        }
        self.0.resolve(namespace, image).await
    }

    async fn fetch(&self, digest: &str) -> anyhow::Result<Vec<u8>> {
        self.0.fetch(digest).await
    }

    async fn config(&self, kind: ConfigKind, namespace: &str, name: &str) -> anyhow::Result<Option<ConfigData>> {
        self.0.config(kind, namespace, name).await
    }
}

/// The largest numbers a pod can carry (`activeDeadlineSeconds` and
/// `terminationGracePeriodSeconds` at `i64::MAX`, a restart count at
/// `u32::MAX`) neither panic nor wrap: the pod runs, its count stays at
/// the top, and it stops when asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_largest_numbers_a_pod_can_say_run_without_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime(dir.path());
    let images = WorkloadImages::new();

    let forever = json!({"activeDeadlineSeconds": i64::MAX, "terminationGracePeriodSeconds": i64::MAX,
                         "containers": [{"name": "main", "image": "worker:1"}]});
    let worker = PodWorker::start(runtime.clone(), images.clone(), &pod("uid-forever", forever));
    assert_eq!(worker.termination_grace(), Duration::from_secs(i64::MAX as u64));
    status_where(&worker, SOON, |s| phase(s) == "Running").await;
    log_contains(&runtime, "uid-forever", "main", "tick", SOON).await;

    // An earlier run at the top of the restart count: the next one stays there instead of wrapping to 0.
    let mut crashing = pod("uid-top", json!({"containers": [{"name": "main", "image": "fail:1"}]}));
    crashing["status"] = json!({"phase": "Running", "startTime": "2000-01-01T00:00:00Z", "containerStatuses": [{
        "name": "main", "restartCount": u32::MAX, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
        "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": "2026-11-26T10:00:03Z"}}}]});
    crashing["spec"]["activeDeadlineSeconds"] = json!(u64::MAX);
    let top = PodWorker::start(runtime.clone(), images.clone(), &crashing);
    let ran_here = |s: &Value| s["containerStatuses"][0]["lastState"]["terminated"]["containerID"] == "kapsel://uid-top/main/4294967295";
    let status = status_where(&top, SOON, ran_here).await;
    assert_eq!(status["containerStatuses"][0]["restartCount"], u32::MAX, "{status:#}");
    assert_ne!(phase(&status), "Failed", "a deadline of u64::MAX seconds (held to 68 years) since 2000 has not passed: {status:#}");

    // The largest grace period still ends the stop once the containers are killed.
    tokio::time::timeout(SOON, worker.stop(Duration::from_secs(i64::MAX as u64))).await.expect("the stop ends");
    assert_eq!(phase(&worker.status().borrow()), "Failed");
    tokio::time::timeout(SOON, top.stop(Duration::MAX)).await.expect("the stop ends");
}

/// A worker that panics fails its pod alone — `Failed`, reason
/// `PodWorkerPanicked`, the panic in the message — while a pod beside it
/// on the same runtime keeps running, and a pod started after it runs too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_worker_fails_its_pod_and_no_other() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime(dir.path());
    let images: Arc<dyn Sources> = Arc::new(PanickingImages(WorkloadImages::new()));

    let neighbour = PodWorker::start(
        runtime.clone(),
        images.clone(),
        &pod("uid-neighbour", json!({"containers": [{"name": "main", "image": "worker:1"}]})),
    );
    status_where(&neighbour, SOON, |s| phase(s) == "Running").await;

    let spec = json!({"containers": [{"name": "main", "image": "worker:1"}, {"name": "bad", "image": "boom:1"}]});
    let broken = PodWorker::start(runtime.clone(), images.clone(), &pod("uid-broken", spec));
    tokio::time::timeout(SOON, broken.wait()).await.expect("the panicking pod ends");
    let status = broken.status().borrow().clone();
    assert_eq!(phase(&status), "Failed", "{status:#}");
    assert_eq!(status["reason"], WORKER_PANICKED);
    let message = status["message"].as_str().unwrap_or_default();
    assert!(message.contains("the image source blew up on boom:1"), "{message}");
    for container in status["containerStatuses"].as_array().unwrap() {
        assert!(container["state"]["terminated"].is_object(), "every container ended: {status:#}");
    }

    // The neighbour was not touched, and the node still starts pods.
    assert_eq!(phase(&neighbour.status().borrow()), "Running");
    let before = log_contains(&runtime, "uid-neighbour", "main", "tick", SOON).await;
    let ticks = before.matches("tick").count();
    let later = log_contains(&runtime, "uid-neighbour", "main", &format!("tick {}", ticks + 1), SOON).await;
    assert!(later.matches("tick").count() > ticks);
    let after = PodWorker::start(
        runtime.clone(),
        images,
        &pod("uid-after", json!({"restartPolicy": "Never", "containers": [{"name": "main", "image": "hello:1"}]})),
    );
    tokio::time::timeout(SOON, after.wait()).await.expect("a pod started after the panic runs");
    assert_eq!(phase(&after.status().borrow()), "Succeeded");
    neighbour.stop(Duration::from_secs(5)).await;
}
