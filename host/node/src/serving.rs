//! The table of pods serving HTTP on a node, for its ingress: which pods of
//! a namespace can take requests now, with their labels (to select them,
//! as a Service does) and the handler that answers a request.
//!
//! The pod worker registers a pod while one of its main containers serves
//! HTTP ([`crate::Runtime::serve`]) and is running, and removes it when that
//! container stops or the pod ends (panics included: the registration goes
//! with its guard, and the pod's guard removes whatever the pod left). A
//! pod with several serving containers takes its requests at the first of
//! them, in the order of `spec.containers`, that is running — Kubernetes
//! routes by port, and pods have no ports yet.
//!
//! Reads are cheap: [`Servers::serving`] takes a read lock and clones `Arc`s.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use bytes::Bytes;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use crate::runtime::HttpHandler;

/// A pod serving HTTP on this node.
#[derive(Debug)]
pub struct ServingPod {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// The pod's `metadata.labels`.
    pub labels: BTreeMap<String, String>,
    handler: HttpHandler,
}

impl ServingPod {
    pub(crate) fn new(namespace: String, name: String, uid: String, labels: BTreeMap<String, String>, handler: HttpHandler) -> ServingPod {
        ServingPod { namespace, name, uid, labels, handler }
    }

    /// Answers `request` with the pod's serving container (see
    /// [`HttpHandler::handle`]): a fresh instance of its component; a failure
    /// is a 500 or 503 with a short plain-text body, and a pod that has
    /// stopped since it was looked up answers 503.
    pub async fn handle<B>(&self, request: hyper::Request<B>) -> hyper::Response<HyperOutgoingBody>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        self.handler.handle(request).await
    }
}

/// The pods serving HTTP on a node, by namespace. Cheap to clone; clones share the table.
#[derive(Debug, Clone, Default)]
pub struct Servers {
    inner: Arc<RwLock<Table>>,
}

/// Namespace → pod uid → index of the serving container → the pod as that container serves it.
type Table = HashMap<String, BTreeMap<String, BTreeMap<usize, Arc<ServingPod>>>>;

impl Servers {
    /// The pods of `namespace` that can take requests now, in the order of their uids.
    pub fn serving(&self, namespace: &str) -> Vec<Arc<ServingPod>> {
        let table = self.read();
        let Some(pods) = table.get(namespace) else { return Vec::new() };
        pods.values().filter_map(|containers| containers.values().next().cloned()).collect()
    }

    /// Registers `pod` as served by its main container `container` (its
    /// index in `spec.containers`) until the returned registration is dropped.
    pub(crate) fn register(&self, container: usize, pod: ServingPod) -> Registration {
        let pod = Arc::new(pod);
        let mut table = self.write();
        let containers = table.entry(pod.namespace.clone()).or_default().entry(pod.uid.clone()).or_default();
        containers.insert(container, pod.clone());
        Registration { servers: self.clone(), container, pod }
    }

    /// Removes every registration of a pod (its run is over).
    pub(crate) fn remove_pod(&self, namespace: &str, uid: &str) {
        let mut table = self.write();
        if let Some(pods) = table.get_mut(namespace) {
            pods.remove(uid);
            if pods.is_empty() {
                table.remove(namespace);
            }
        }
    }

    fn unregister(&self, container: usize, pod: &Arc<ServingPod>) {
        let mut table = self.write();
        let Some(pods) = table.get_mut(&pod.namespace) else { return };
        let Some(containers) = pods.get_mut(&pod.uid) else { return };
        // Only this registration's own entry: a later one of the same container replaced it.
        if containers.get(&container).is_some_and(|registered| Arc::ptr_eq(registered, pod)) {
            containers.remove(&container);
        }
        if containers.is_empty() {
            pods.remove(&pod.uid);
        }
        if pods.is_empty() {
            table.remove(&pod.namespace);
        }
    }

    // The table holds plain records: a panic of another holder leaves it consistent.
    fn read(&self) -> RwLockReadGuard<'_, Table> {
        self.inner.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Table> {
        self.inner.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A pod's entry in [`Servers`] while its container serves; dropping it removes the entry.
#[derive(Debug)]
pub(crate) struct Registration {
    servers: Servers,
    container: usize,
    pod: Arc<ServingPod>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.servers.unregister(self.container, &self.pod);
    }
}
