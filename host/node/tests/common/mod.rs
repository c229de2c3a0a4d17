//! What the integration tests share: a runtime on a temporary data
//! directory with fast back-off, and a [`Sources`] that serves the sample
//! workloads built by the crate's build script and the ConfigMaps and
//! Secrets a test puts in it.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kapsel_node::pod::config::{ConfigData, ConfigKind};
use kapsel_node::runtime::digest_of;
use kapsel_node::{EXAMPLE_WORKLOADS_DIR, PodWorker, Runtime, RuntimeConfig, Sources};
use serde_json::Value;

/// The bytes of a sample workload (`hello`, `fail`, `worker`, `memhog`, `spin`, `http-hello`).
pub fn workload(name: &str) -> Vec<u8> {
    let path = Path::new(EXAMPLE_WORKLOADS_DIR).join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// A runtime whose restarts back off from 100 ms (capped at 400 ms).
pub fn runtime(data_dir: &Path) -> Runtime {
    let mut config = RuntimeConfig::new(data_dir);
    config.restart_backoff_base = Duration::from_millis(100);
    config.restart_backoff_cap = Duration::from_millis(400);
    Runtime::new(config).expect("a runtime")
}

/// Serves the sample workloads as `NAME:TAG` in any namespace, and counts fetches.
#[derive(Debug, Default)]
pub struct WorkloadImages {
    /// Blobs by digest.
    blobs: HashMap<String, Vec<u8>>,
    /// Image names to digests.
    tags: HashMap<String, String>,
    pub fetches: AtomicUsize,
    /// ConfigMaps and Secrets by kind, namespace and name.
    configs: Mutex<HashMap<(ConfigKind, String, String), ConfigData>>,
}

impl WorkloadImages {
    pub fn new() -> Arc<Self> {
        let mut images = WorkloadImages::default();
        for name in ["hello", "fail", "worker", "memhog", "spin", "http-hello"] {
            let bytes = workload(name);
            let digest = digest_of(&bytes);
            images.tags.insert(name.to_string(), digest.clone());
            images.blobs.insert(digest, bytes);
        }
        Arc::new(images)
    }

    /// Puts (or replaces) a ConfigMap or Secret.
    pub fn put_config(&self, kind: ConfigKind, namespace: &str, name: &str, entries: &[(&str, &str)]) {
        let data = entries.iter().map(|(key, value)| (key.to_string(), value.as_bytes().to_vec())).collect();
        self.configs.lock().unwrap().insert((kind, namespace.to_string(), name.to_string()), data);
    }

    pub fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

#[async_trait::async_trait]
impl Sources for WorkloadImages {
    async fn resolve(&self, _namespace: &str, image: &str) -> anyhow::Result<String> {
        let name = image.split(':').next().unwrap_or(image);
        self.tags.get(name).cloned().ok_or_else(|| anyhow::anyhow!("image {image:?} not found"))
    }

    async fn fetch(&self, digest: &str) -> anyhow::Result<Vec<u8>> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        self.blobs.get(digest).cloned().ok_or_else(|| anyhow::anyhow!("blob {digest} not found"))
    }

    async fn config(&self, kind: ConfigKind, namespace: &str, name: &str) -> anyhow::Result<Option<ConfigData>> {
        Ok(self.configs.lock().unwrap().get(&(kind, namespace.to_string(), name.to_string())).cloned())
    }
}

/// Waits (at most `within`) for the pod's status to satisfy `wanted`, and returns it.
pub async fn status_where(worker: &PodWorker, within: Duration, wanted: impl Fn(&Value) -> bool) -> Value {
    let mut status = worker.status();
    let found = tokio::time::timeout(within, status.wait_for(|s| wanted(s))).await.map(|found| found.map(|s| s.clone()));
    match found {
        Ok(Ok(status)) => status,
        _ => panic!("the status did not get there within {within:?}; it is:\n{:#}", *worker.status().borrow()),
    }
}

/// Reads a container's current log as text.
pub async fn log_text(runtime: &Runtime, uid: &str, container: &str) -> String {
    let bytes = runtime.logs().read(uid, container, &kapsel_node::LogQuery::default()).await.expect("the log");
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Waits (at most `within`) until a container's log contains `text`.
pub async fn log_contains(runtime: &Runtime, uid: &str, container: &str, text: &str, within: Duration) -> String {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let log = match runtime.logs().read(uid, container, &kapsel_node::LogQuery::default()).await {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(_) => String::new(),
        };
        if log.contains(text) {
            return log;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("the log of {container} did not show {text:?} within {within:?}; it is:\n{log}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
