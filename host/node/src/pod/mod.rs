//! Running one pod, as kubelet's pod worker does: init containers in
//! order, then the containers side by side, each restarted under the pod's
//! `restartPolicy` with kubelet's back-off (`CrashLoopBackOff`), images
//! resolved and fetched through [`Sources`] (retried with back-off while
//! `ErrImagePull`), its ConfigMaps and Secrets given as environment and
//! files ([`config`]; retried while `CreateContainerConfigError`), `activeDeadlineSeconds` enforced, and the pod's status
//! published after every change as Kubernetes shapes it ([`status`]).
//!
//! A pod an earlier life of the node agent ran (its containers stop with
//! the agent) is taken over from its status: each main container's last
//! run counts as ended — one still in progress as `ContainerStatusUnknown`,
//! exit 137, as kubelet reports a container that vanished — and it is
//! restarted or not as the policy says, its restart count carried on
//! ([`spec::EarlierRun`]).
//!
//! A main container whose component serves HTTP (a `wasi:http` proxy) is
//! served rather than run ([`crate::Runtime::serve`]): it is `Running` — and
//! so ready — once its first instance is made, and while it is the pod is
//! listed in the runtime's [`crate::Servers`] with its labels, for the
//! node's ingress to route requests to (until the container stops or the
//! pod ends). An init container must run to completion, so one whose
//! component serves HTTP cannot start (`CreateContainerError`).
//!
//! Each container runs under its `limits.memory` and `limits.cpu`; one
//! without a memory limit gets the node's default
//! ([`crate::RuntimeConfig::default_memory_limit_bytes`]), and its status
//! says so (`containerStatuses[].resources.limits`, the limits in force).
//!
//! What happens along the way is also told as [`PodEvent`]s (kubelet's
//! `Pulled`, `Failed`, `Started`, `BackOff`, `Killing`, `DeadlineExceeded`)
//! for the agent to record as Events.
//!
//! Nothing a pod says can stop the node: every number taken from its spec
//! or status is used with checked or saturating arithmetic (a deadline
//! past what a clock can hold is no deadline, restart counts stop at
//! `u32::MAX`), and a panic in a pod's worker is caught — at its start or
//! in its task — and ends that pod alone, `Failed` with reason
//! [`WORKER_PANICKED`], while the node's other pods go on.
//!
//! Stopping a pod ([`PodWorker::stop`]) kills its containers at once: Wasm
//! guests have no signals, so there is nothing to tell them and waiting out
//! the grace period would only delay the stop; the grace period bounds how
//! long `stop` waits for the kills to take effect (an epoch tick for a busy
//! guest, at once for one waiting on the host).

pub mod backoff;
pub mod config;
pub mod spec;
pub mod status;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio::sync::{broadcast, watch};

use crate::lock;
use crate::runtime::{ContainerConfig, Exit, ExitReason, Prepared, Runtime};
use crate::serving::ServingPod;
use backoff::{Backoff, go_duration};
use spec::{ContainerSpec, PodSpec, RestartPolicy};
use status::{ContainerRecord, ContainerState, Limits, Phase, PodRecord, Termination};

/// Where a node gets what its pods use from the supervisor: their
/// components (from the artifact store), ConfigMaps and Secrets.
#[async_trait::async_trait]
pub trait Sources: Send + Sync + 'static {
    /// The digest (`sha256:<hex>`) that `image` (`NAME:TAG` or `NAME@sha256:…`) names in `namespace`.
    async fn resolve(&self, namespace: &str, image: &str) -> anyhow::Result<String>;
    /// The component's bytes.
    async fn fetch(&self, digest: &str) -> anyhow::Result<Vec<u8>>;
    /// The entries of ConfigMap or Secret `name` in `namespace`; `None` when there is none.
    async fn config(&self, kind: config::ConfigKind, namespace: &str, name: &str) -> anyhow::Result<Option<config::ConfigData>>;
}

/// Something that happened to a pod, as kubelet records it in an Event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodEvent {
    pub kind: EventKind,
    /// `Pulled`, `Failed`, `Started`, `BackOff`, `Killing`, `DeadlineExceeded`.
    pub reason: &'static str,
    pub message: String,
    /// The container it concerns, as an Event's `involvedObject.fieldPath`
    /// (`spec.containers{main}`, `spec.initContainers{setup}`); `None` for the pod.
    pub field_path: Option<String>,
}

/// An Event's `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Normal,
    Warning,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Normal => "Normal",
            EventKind::Warning => "Warning",
        }
    }
}

/// How many events a slow reader of [`PodWorker::events`] may fall behind before it misses some.
const EVENT_BACKLOG: usize = 128;

/// The pod-level reason and message of a pod stopped at its deadline (kubelet's words).
pub const DEADLINE_EXCEEDED: (&str, &str) = ("DeadlineExceeded", "Pod was active on the node longer than the specified deadline");

/// The pod-level reason of a pod whose worker on the node panicked (the message says what and where).
pub const WORKER_PANICKED: &str = "PodWorkerPanicked";

/// The longest `activeDeadlineSeconds` the node counts down (Kubernetes'
/// bound, about 68 years); a longer deadline is held to this one.
pub const MAX_ACTIVE_DEADLINE: Duration = Duration::from_secs(i32::MAX as u64);

/// When a pod started at `start_time` (on the wall clock, now `now`) must
/// end under `active_deadline`, on the monotonic clock (now `instant`):
/// the deadline less the time already spent, held to
/// [`MAX_ACTIVE_DEADLINE`]; `None` when there is no deadline or it lies
/// past what the clock can hold. Never panics, whatever the pod says.
pub fn deadline_instant(
    instant: tokio::time::Instant,
    now: DateTime<Utc>,
    start_time: DateTime<Utc>,
    active_deadline: Option<Duration>,
) -> Option<tokio::time::Instant> {
    let deadline = active_deadline?.min(MAX_ACTIVE_DEADLINE);
    let elapsed = now.signed_duration_since(start_time).to_std().unwrap_or_default();
    instant.checked_add(deadline.saturating_sub(elapsed))
}

/// What a caught panic says (its `&str` or `String` payload).
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    match (payload.downcast_ref::<&str>(), payload.downcast_ref::<String>()) {
        (Some(text), _) => (*text).to_string(),
        (_, Some(text)) => text.clone(),
        _ => "a panic without a message".into(),
    }
}

/// Runs one pod on a [`Runtime`] and publishes its status. Dropping the
/// worker stops the pod (its containers are killed).
#[derive(Debug)]
pub struct PodWorker {
    context: Arc<PodContext>,
    status: watch::Receiver<Value>,
    done: watch::Receiver<bool>,
    /// The events since the start, for the first caller of [`PodWorker::events`].
    first_events: Mutex<Option<broadcast::Receiver<PodEvent>>>,
}

impl PodWorker {
    /// Starts running `pod` (a Pod object as the API stores it) on tokio
    /// (call it within a tokio runtime).
    /// A pod the node cannot read at all is reported `Failed` with reason
    /// `InvalidPod` and the problem as its message. A panic while starting
    /// or running the pod is caught: the pod alone is `Failed` with reason
    /// [`WORKER_PANICKED`] (and the panic logged).
    pub fn start(runtime: Runtime, sources: Arc<dyn Sources>, pod: &Value) -> PodWorker {
        let starting = std::panic::AssertUnwindSafe(|| PodWorker::try_start(runtime.clone(), sources.clone(), pod));
        match std::panic::catch_unwind(starting) {
            Ok(worker) => worker,
            Err(payload) => {
                let message = panic_message(payload.as_ref());
                let spec = PodSpec::invalid(pod);
                tracing::error!(pod = %format!("{}_{}({})", spec.name, spec.namespace, spec.uid), panic = %message, "starting a pod's worker panicked; the pod is failed");
                PodWorker::new(runtime, sources, spec, Utc::now(), None, Some((WORKER_PANICKED.into(), worker_panicked(&message))))
            }
        }
    }

    fn try_start(runtime: Runtime, sources: Arc<dyn Sources>, pod: &Value) -> PodWorker {
        let now = Utc::now();
        let (spec, problem) = match PodSpec::from_pod(pod) {
            Ok(spec) => (spec, None),
            Err(problem) => (PodSpec::invalid(pod), Some(problem)),
        };
        let start_time = spec.start_time.unwrap_or(now);
        let deadline = deadline_instant(tokio::time::Instant::now(), now, start_time, spec.active_deadline);
        let failure = problem.map(|problem| ("InvalidPod".to_string(), problem.to_string()));
        PodWorker::new(runtime, sources, spec, start_time, deadline, failure)
    }

    /// The worker of `spec`; with a `failure`, the pod is `Failed` at once
    /// and nothing runs, otherwise its run starts (a panic in it is caught).
    fn new(
        runtime: Runtime,
        sources: Arc<dyn Sources>,
        spec: PodSpec,
        start_time: DateTime<Utc>,
        deadline: Option<tokio::time::Instant>,
        failure: Option<(String, String)>,
    ) -> PodWorker {
        let first_state = if spec.init_containers.is_empty() { "ContainerCreating" } else { "PodInitializing" };
        let default_memory = runtime.config().default_memory_limit_bytes;
        let records = |containers: &[ContainerSpec], state: &str| {
            containers
                .iter()
                .map(|c| {
                    let mut record = ContainerRecord::new(&c.name, &c.image, ContainerState::waiting(state, None));
                    // What the runtime will hold it to (`Runtime::start` gives a container without a limit the default).
                    record.limits =
                        Limits { memory_bytes: c.memory_limit_bytes.or(default_memory), cpu_millicores: c.cpu_limit_millicores };
                    record
                })
                .collect()
        };
        let mut record = PodRecord::new(
            start_time,
            spec.restart_policy,
            records(&spec.init_containers, "PodInitializing"),
            records(&spec.containers, first_state),
        );
        let failed = failure.is_some();
        record.failure = failure;
        let (status_sender, status) = watch::channel(record.status(Utc::now()));
        let (done_sender, done) = watch::channel(false);
        let (events, first_events) = broadcast::channel(EVENT_BACKLOG);
        let context = Arc::new(PodContext {
            events,
            runtime,
            sources,
            spec,
            record: Mutex::new(record),
            status: status_sender,
            stop: watch::Sender::new(None),
            deadline,
        });
        if failed {
            done_sender.send_replace(true);
        } else {
            let running = tokio::spawn(supervise(context.clone()));
            tokio::spawn(guard(context.clone(), running, done_sender));
        }
        PodWorker { context, status, done, first_events: Mutex::new(Some(first_events)) }
    }

    /// The pod's `metadata.uid`.
    pub fn uid(&self) -> &str {
        &self.context.spec.uid
    }

    /// The pod's `spec.terminationGracePeriodSeconds`, for [`PodWorker::stop`].
    pub fn termination_grace(&self) -> Duration {
        self.context.spec.termination_grace
    }

    /// The pod's `status`, updated after every change.
    pub fn status(&self) -> watch::Receiver<Value> {
        self.status.clone()
    }

    /// The pod's events: the first call gets every event since the start
    /// (up to a backlog of 128), later calls those from then on.
    pub fn events(&self) -> broadcast::Receiver<PodEvent> {
        lock(&self.first_events).take().unwrap_or_else(|| self.context.events.subscribe())
    }

    /// The pod's phase now.
    pub fn phase(&self) -> Phase {
        lock(&self.context.record).phase()
    }

    /// Waits until the pod's run is over: every container ended and none
    /// will restart (never, under `restartPolicy: Always`, until stopped).
    pub async fn wait(&self) {
        let mut done = self.done.clone();
        let _ = done.wait_for(|done| *done).await;
    }

    /// Stops the pod: every container is killed at once (see the module
    /// docs), and this resolves once they are stopped — in practice within an
    /// epoch tick; it gives up waiting after `grace` (at least a second, so a
    /// grace of 0 still sees the kills through) — with the final status
    /// published (containers `terminated`, phase `Succeeded` or `Failed`).
    pub async fn stop(&self, grace: Duration) {
        let _ = self.context.request_stop(StopCause::Stopped);
        let mut done = self.done.clone();
        let grace = grace.max(Duration::from_secs(1));
        if tokio::time::timeout(grace, done.wait_for(|done| *done)).await.is_err() {
            tracing::warn!(pod = %self.context.pod_ref(), ?grace, "the pod's containers did not stop within the grace period");
        }
    }
}

impl Drop for PodWorker {
    fn drop(&mut self) {
        let _ = self.context.request_stop(StopCause::Stopped);
    }
}

/// Why the node stops a pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopCause {
    /// Asked to ([`PodWorker::stop`], or the worker was dropped).
    Stopped,
    /// `activeDeadlineSeconds` has passed.
    DeadlineExceeded,
}

/// How a container's part in the pod ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Exited 0 and will not restart.
    Succeeded,
    /// Exited non-zero and will not restart.
    Failed,
    /// The pod was stopped.
    Stopped,
}

/// Which container of the pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Init(usize),
    Main(usize),
}

/// What the tasks of one pod share.
struct PodContext {
    runtime: Runtime,
    sources: Arc<dyn Sources>,
    spec: PodSpec,
    record: Mutex<PodRecord>,
    status: watch::Sender<Value>,
    events: broadcast::Sender<PodEvent>,
    stop: watch::Sender<Option<StopCause>>,
    deadline: Option<tokio::time::Instant>,
}

impl std::fmt::Debug for PodContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodContext").field("pod", &self.pod_ref()).finish_non_exhaustive()
    }
}

/// Waits for the pod's run (the task of [`supervise`]) and says it is done;
/// a run that panicked ends the pod `Failed` ([`WORKER_PANICKED`]), its
/// containers killed (they went with the task's future), and is logged —
/// the node's other pods and its agent carry on.
async fn guard(context: Arc<PodContext>, running: tokio::task::JoinHandle<()>, done: watch::Sender<bool>) {
    let ended = running.await;
    // Whatever way the run ended, the pod serves no more.
    context.runtime.servers().remove_pod(&context.spec.namespace, &context.spec.uid);
    if let Err(error) = ended {
        let message = if error.is_panic() { panic_message(error.into_panic().as_ref()) } else { "its task was cancelled".into() };
        tracing::error!(pod = %context.pod_ref(), panic = %message, "a pod's worker failed; the pod is failed, the node's other pods go on");
        context.request_stop(StopCause::Stopped);
        let now = Utc::now();
        context.update(|record| {
            record.terminal = true;
            record.failure = Some((WORKER_PANICKED.into(), worker_panicked(&message)));
            for container in record.init.iter_mut().chain(record.containers.iter_mut()) {
                let started_at = match &container.state {
                    ContainerState::Terminated(_) => continue,
                    ContainerState::Running { started_at } => Some(*started_at),
                    ContainerState::Waiting { .. } => None,
                };
                container.state = ContainerState::Terminated(Termination {
                    exit_code: crate::runtime::EXIT_CODE_KILLED,
                    reason: "ContainerStatusUnknown".into(),
                    message: "the node's worker for this pod failed; the container was stopped".into(),
                    started_at,
                    finished_at: now,
                    container_id: container.container_id.clone(),
                });
            }
        });
    }
    context.remove_volumes().await;
    done.send_replace(true);
}

/// The pod-level message of [`WORKER_PANICKED`].
fn worker_panicked(panic: &str) -> String {
    format!("the node agent's worker for this pod panicked ({panic}); the pod was stopped")
}

/// Runs the pod, enforces its deadline, and writes its final status.
async fn supervise(context: Arc<PodContext>) {
    let pod = run_pod(&context);
    tokio::pin!(pod);
    match context.deadline {
        Some(deadline) => {
            tokio::select! {
                () = &mut pod => {}
                () = tokio::time::sleep_until(deadline) => {
                    if context.request_stop(StopCause::DeadlineExceeded) {
                        context.event(None, EventKind::Warning, DEADLINE_EXCEEDED.0, DEADLINE_EXCEEDED.1.into());
                    }
                    pod.await;
                }
            }
        }
        None => pod.await,
    }
    let cause = *context.stop.borrow();
    if let Some(cause) = cause {
        context.update(|record| {
            record.terminal = true;
            if cause == StopCause::DeadlineExceeded {
                record.failure = Some((DEADLINE_EXCEEDED.0.into(), DEADLINE_EXCEEDED.1.into()));
            }
            // Containers that never ran end too: as kubelet reports a container it cannot find.
            for container in record.init.iter_mut().chain(record.containers.iter_mut()) {
                if matches!(container.state, ContainerState::Waiting { .. }) {
                    container.state = ContainerState::Terminated(Termination {
                        exit_code: crate::runtime::EXIT_CODE_KILLED,
                        reason: "ContainerStatusUnknown".into(),
                        message: "the pod was stopped before the container started".into(),
                        started_at: None,
                        finished_at: Utc::now(),
                        container_id: None,
                    });
                }
            }
        });
    }
}

async fn run_pod(context: &PodContext) {
    if !context.spec.volumes.is_empty() && !context.write_volumes().await {
        return;
    }
    for index in 0..context.spec.init_containers.len() {
        if run_container(context, Slot::Init(index)).await != Outcome::Succeeded {
            return;
        }
    }
    if !context.spec.init_containers.is_empty() {
        context.update(|record| {
            for container in &mut record.containers {
                container.state = ContainerState::waiting("ContainerCreating", None);
            }
        });
    }
    let containers = (0..context.spec.containers.len()).map(|index| run_container(context, Slot::Main(index)));
    futures::future::join_all(containers).await;
}

/// Runs one container until it ends for good (or the pod is stopped): pull,
/// start, wait, and under the restart policy back off and start again.
async fn run_container(context: &PodContext, slot: Slot) -> Outcome {
    let spec = context.container_spec(slot);
    let policy = match slot {
        Slot::Init(_) => context.spec.restart_policy.for_init_container(),
        Slot::Main(_) => context.spec.restart_policy,
    };
    let mut stop = context.stop.subscribe();
    if let Some(problem) = &spec.config_error {
        context.set(slot, |c| c.state = ContainerState::waiting("CreateContainerConfigError", Some(problem.clone())));
        context.event(Some(slot), EventKind::Warning, "Failed", format!("Error: {problem}"));
        stopped(&mut stop).await;
        return Outcome::Stopped;
    }
    let mut restart_count: u32 = 0;
    if let Some(earlier) = &spec.earlier {
        // An earlier life of this node's agent ran it; that run is over. It
        // counts as a run that ended: restarted as the policy says, or not.
        let ended = earlier.ended.clone();
        if !policy.restarts(ended.exit_code) {
            let outcome = if ended.exit_code == 0 { Outcome::Succeeded } else { Outcome::Failed };
            context.set(slot, |c| {
                c.restart_count = earlier.restart_count;
                c.container_id.clone_from(&ended.container_id);
                c.state = ContainerState::Terminated(ended);
            });
            return outcome;
        }
        restart_count = earlier.restart_count.saturating_add(1);
        context.set(slot, |c| {
            c.restart_count = earlier.restart_count;
            c.last_state = Some(ended);
        });
    }
    let config = context.runtime.config();
    let new_backoff = || Backoff::new(config.restart_backoff_base, config.restart_backoff_cap, config.restart_backoff_reset);
    let (mut restarts, mut pulls) = (new_backoff(), new_backoff());
    context.set(slot, |c| c.state = ContainerState::waiting("ContainerCreating", None));
    let prepared = loop {
        let pulling = std::time::Instant::now();
        let pulled = tokio::select! {
            pulled = context.pull(spec) => pulled,
            _ = stopped(&mut stop) => return Outcome::Stopped,
        };
        match pulled {
            Ok(prepared) if matches!(slot, Slot::Init(_)) && prepared.serves_http() => {
                let message = format!(
                    "image {:?} ({}) serves HTTP (wasi:http/incoming-handler); an init container must be a command (wasi:cli/run) that runs to completion",
                    spec.image,
                    prepared.digest()
                );
                context.event(Some(slot), EventKind::Warning, "Failed", format!("Error: CreateContainerError: {message}"));
                context.set(slot, |c| c.state = ContainerState::waiting("CreateContainerError", Some(message)));
                tokio::select! {
                    () = tokio::time::sleep(pulls.next_delay(Duration::ZERO)) => {}
                    _ = stopped(&mut stop) => return Outcome::Stopped,
                }
            }
            Ok(prepared) => {
                let message = format!("Image {:?} ({}) ready in {:?}", spec.image, prepared.digest(), pulling.elapsed());
                context.event(Some(slot), EventKind::Normal, "Pulled", message);
                break prepared;
            }
            Err((reason, message)) => {
                tracing::info!(pod = %context.pod_ref(), container = %spec.name, %reason, %message, "cannot get the container's image");
                context.event(Some(slot), EventKind::Warning, "Failed", format!("Error: {reason}: {message}"));
                context.set(slot, |c| c.state = ContainerState::waiting(reason, Some(message)));
                tokio::select! {
                    () = tokio::time::sleep(pulls.next_delay(Duration::ZERO)) => {}
                    _ = stopped(&mut stop) => return Outcome::Stopped,
                }
            }
        }
    };
    context.set(slot, |c| c.image_id = prepared.digest().to_string());

    loop {
        let Some(given) = context.configure(spec, slot, &mut stop).await else { return Outcome::Stopped };
        let container_id = context.container_id(spec, restart_count);
        let exit = match context.run_once(spec, &prepared, given, restart_count, slot, &mut stop).await {
            Ok(exit) => exit,
            Err(message) => {
                // The run could not even start (its log could not be created): back off like a crash.
                context.set(slot, |c| c.state = ContainerState::waiting("RunContainerError", Some(message)));
                tokio::select! {
                    () = tokio::time::sleep(restarts.next_delay(Duration::ZERO)) => continue,
                    _ = stopped(&mut stop) => return Outcome::Stopped,
                }
            }
        };
        let termination = termination(&exit, &container_id);
        context.set(slot, |c| c.state = ContainerState::Terminated(termination.clone()));
        if stop.borrow().is_some() {
            return Outcome::Stopped;
        }
        if !policy.restarts(exit.exit_code) {
            return if exit.exit_code == 0 { Outcome::Succeeded } else { Outcome::Failed };
        }

        let ran_for = (exit.finished_at - exit.started_at).to_std().unwrap_or_default();
        let delay = restarts.next_delay(ran_for);
        let message = format!("back-off {} restarting failed container={} pod={}", go_duration(delay), spec.name, context.pod_ref());
        let event = format!("Back-off restarting failed container {} in pod {}", spec.name, context.pod_ref());
        context.event(Some(slot), EventKind::Warning, "BackOff", event);
        let mut older = None;
        context.set(slot, |c| {
            older = c.last_state.replace(termination.clone());
            c.state = ContainerState::waiting("CrashLoopBackOff", Some(message));
        });
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = stopped(&mut stop) => {
                context.set(slot, |c| {
                    c.state = ContainerState::Terminated(termination);
                    c.last_state = older;
                });
                return Outcome::Stopped;
            }
        }
        restart_count = restart_count.saturating_add(1);
    }
}

impl PodContext {
    fn container_spec(&self, slot: Slot) -> &ContainerSpec {
        match slot {
            Slot::Init(index) => &self.spec.init_containers[index],
            Slot::Main(index) => &self.spec.containers[index],
        }
    }

    /// The pod as kubelet names it in messages: `name_namespace(uid)`.
    fn pod_ref(&self) -> String {
        format!("{}_{}({})", self.spec.name, self.spec.namespace, self.spec.uid)
    }

    /// Asks every container to stop; true when this was the first request (its cause is the one kept).
    fn request_stop(&self, cause: StopCause) -> bool {
        self.stop.send_if_modified(|current| {
            let first = current.is_none();
            if first {
                *current = Some(cause);
            }
            first
        })
    }

    /// Resolves and prepares a container's image; on failure the waiting reason and message.
    async fn pull(&self, spec: &ContainerSpec) -> Result<Prepared, (&'static str, String)> {
        let digest = self
            .sources
            .resolve(&self.spec.namespace, &spec.image)
            .await
            .map_err(|e| ("ErrImagePull", format!("failed to resolve image {:?}: {e:#}", spec.image)))?;
        self.runtime.prepare(&digest, self.sources.fetch(&digest)).await.map_err(|error| {
            let reason = if error.is_pull_error() { "ErrImagePull" } else { "CreateContainerError" };
            (reason, format!("image {:?}: {:#}", spec.image, anyhow::Error::from(error)))
        })
    }

    /// The id of a container's run, as its status reports it.
    fn container_id(&self, spec: &ContainerSpec, restart_count: u32) -> String {
        format!("kapsel://{}/{}/{restart_count}", self.spec.uid, spec.name)
    }

    /// Where the pod's volumes are written: `DATA/volumes/<uid>/<volume>`.
    fn volumes_root(&self) -> std::path::PathBuf {
        self.runtime.config().data_dir.join("volumes").join(&self.spec.uid)
    }

    /// Writes the pod's volumes, trying again with back-off while a
    /// ConfigMap or Secret it needs is missing (kubelet's `FailedMount`);
    /// false when the pod was stopped first.
    async fn write_volumes(&self) -> bool {
        let config = self.runtime.config();
        let mut retries = Backoff::new(config.restart_backoff_base, config.restart_backoff_cap, config.restart_backoff_reset);
        let mut stop = self.stop.subscribe();
        let root = self.volumes_root();
        loop {
            let written = tokio::select! {
                written = config::write_volumes(self.sources.as_ref(), &self.spec.namespace, &self.spec.volumes, &root) => written,
                _ = stopped(&mut stop) => return false,
            };
            let Err(error) = written else { return true };
            tracing::info!(pod = %self.pod_ref(), %error, "cannot write the pod's volumes yet");
            self.event(None, EventKind::Warning, "FailedMount", format!("MountVolume.SetUp failed: {error}"));
            self.update(|record| {
                for container in record.init.iter_mut().chain(record.containers.iter_mut()) {
                    container.state = ContainerState::waiting("ContainerCreating", Some(format!("waiting for volumes: {error}")));
                }
            });
            tokio::select! {
                () = tokio::time::sleep(retries.next_delay(Duration::ZERO)) => {}
                _ = stopped(&mut stop) => return false,
            }
        }
    }

    /// Removes the pod's volumes (its run is over).
    async fn remove_volumes(&self) {
        if self.spec.volumes.is_empty() {
            return;
        }
        let root = self.volumes_root();
        let removed = tokio::task::spawn_blocking(move || match std::fs::remove_dir_all(&root) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error),
            _ => Ok(()),
        })
        .await;
        if let Ok(Err(error)) = removed {
            tracing::warn!(pod = %self.pod_ref(), %error, "removing the pod's volumes failed");
        }
    }

    /// A container's environment and directories for its next run, resolved
    /// now; while a ConfigMap or Secret it needs is missing, the container
    /// waits in `CreateContainerConfigError` and it is tried again with
    /// back-off. `None` when the pod was stopped first.
    async fn configure(
        &self,
        spec: &ContainerSpec,
        slot: Slot,
        stop: &mut watch::Receiver<Option<StopCause>>,
    ) -> Option<(Vec<(String, String)>, Vec<config::MountedDir>)> {
        let config = self.runtime.config();
        let mut retries = Backoff::new(config.restart_backoff_base, config.restart_backoff_cap, config.restart_backoff_reset);
        loop {
            let resolved = tokio::select! {
                resolved = config::resolve_env(self.sources.as_ref(), &self.spec.namespace, &spec.env, &spec.env_from) => resolved,
                _ = stopped(stop) => return None,
            };
            let given = resolved.and_then(|env| Ok((env, config::mounted_dirs(&self.volumes_root(), &self.spec.volumes, &spec.mounts)?)));
            let error = match given {
                Ok(given) => return Some(given),
                Err(error) => error.0,
            };
            self.event(Some(slot), EventKind::Warning, "Failed", format!("Error: {error}"));
            self.set(slot, |c| c.state = ContainerState::waiting("CreateContainerConfigError", Some(error)));
            tokio::select! {
                () = tokio::time::sleep(retries.next_delay(Duration::ZERO)) => {}
                _ = stopped(stop) => return None,
            }
        }
    }

    /// One run of a container: its log, the guest, its exit (killed when the
    /// pod is stopped). A container that serves HTTP is `Running` once it
    /// can take requests, and a main one is listed in the runtime's
    /// [`crate::Servers`] from then until its run ends.
    async fn run_once(
        &self,
        spec: &ContainerSpec,
        prepared: &Prepared,
        (env, dirs): (Vec<(String, String)>, Vec<config::MountedDir>),
        restart_count: u32,
        slot: Slot,
        stop: &mut watch::Receiver<Option<StopCause>>,
    ) -> Result<Exit, String> {
        let log = self
            .runtime
            .logs()
            .create(&self.spec.uid, &spec.name, restart_count)
            .map_err(|e| format!("creating the container's log: {e}"))?;
        let config = ContainerConfig {
            args: spec.argv.clone(),
            env,
            dirs,
            memory_limit_bytes: spec.memory_limit_bytes,
            cpu_limit_millicores: spec.cpu_limit_millicores,
            log,
            deadline: self.deadline,
        };
        let container = if prepared.serves_http() { self.runtime.serve(prepared, config) } else { self.runtime.start(prepared, config) };
        // At once for a command; for a server, once its first instance is made (or it ended, or the pod is stopping).
        let handler = tokio::select! {
            biased;
            _ = stopped(stop) => None,
            handler = container.serving() => handler,
        };
        // Listed while it runs — from before its status says so, so that a Ready pod is listed —
        // and no longer once the pod is being stopped: its requests go elsewhere.
        let mut serving = match (slot, handler) {
            (Slot::Main(index), Some(handler)) => {
                let pod = ServingPod::new(
                    self.spec.namespace.clone(),
                    self.spec.name.clone(),
                    self.spec.uid.clone(),
                    self.spec.labels.clone(),
                    handler,
                );
                Some(self.runtime.servers().register(index, pod))
            }
            _ => None,
        };
        self.set(slot, |c| {
            c.restart_count = restart_count;
            c.container_id = Some(self.container_id(spec, restart_count));
            c.state = ContainerState::Running { started_at: container.started_at() };
        });
        self.event(Some(slot), EventKind::Normal, "Started", format!("Started container {}", spec.name));
        tokio::select! {
            exit = container.wait() => Ok(exit),
            cause = stopped(stop) => {
                drop(serving.take());
                if cause == StopCause::Stopped {
                    self.event(Some(slot), EventKind::Normal, "Killing", format!("Stopping container {}", spec.name));
                }
                // At the deadline the guest stops itself (it has the same deadline); a stop kills it.
                if cause == StopCause::Stopped
                    || tokio::time::timeout(Duration::from_secs(1), container.wait()).await.is_err()
                {
                    container.kill();
                }
                Ok(container.wait().await)
            }
        }
    }

    /// Tells whoever listens (nobody listening is fine).
    fn event(&self, slot: Option<Slot>, kind: EventKind, reason: &'static str, message: String) {
        let field_path = slot.map(|slot| match slot {
            Slot::Init(index) => format!("spec.initContainers{{{}}}", self.spec.init_containers[index].name),
            Slot::Main(index) => format!("spec.containers{{{}}}", self.spec.containers[index].name),
        });
        let _ = self.events.send(PodEvent { kind, reason, message, field_path });
    }

    /// Changes one container's record and publishes the status.
    fn set(&self, slot: Slot, change: impl FnOnce(&mut ContainerRecord)) {
        self.update(|record| match slot {
            Slot::Init(index) => change(&mut record.init[index]),
            Slot::Main(index) => change(&mut record.containers[index]),
        });
    }

    /// Changes the pod's record and publishes the status when it changed.
    fn update(&self, change: impl FnOnce(&mut PodRecord)) {
        let mut record = lock(&self.record);
        change(&mut record);
        let status = record.status(Utc::now());
        self.status.send_if_modified(|published| {
            let changed = *published != status;
            if changed {
                *published = status;
            }
            changed
        });
    }
}

/// A container's `terminated` state for an exit.
fn termination(exit: &Exit, container_id: &str) -> Termination {
    let reason = match exit.reason {
        ExitReason::Completed => "Completed",
        ExitReason::Error | ExitReason::Killed => "Error",
        ExitReason::OOMKilled => "OOMKilled",
        ExitReason::DeadlineExceeded => "DeadlineExceeded",
    };
    Termination {
        exit_code: exit.exit_code,
        reason: reason.into(),
        message: exit.message.clone(),
        started_at: Some(exit.started_at),
        finished_at: exit.finished_at,
        container_id: Some(container_id.to_string()),
    }
}

/// Waits until the pod is to stop, and says why.
async fn stopped(stop: &mut watch::Receiver<Option<StopCause>>) -> StopCause {
    match stop.wait_for(Option::is_some).await {
        Ok(cause) => (*cause).unwrap_or(StopCause::Stopped),
        Err(_) => StopCause::Stopped,
    }
}

impl PodSpec {
    /// What can be read of a pod that cannot be run, for its status.
    fn invalid(pod: &Value) -> PodSpec {
        PodSpec {
            uid: kapsel_api::object::meta_str(pod, "uid").unwrap_or_default().to_string(),
            name: kapsel_api::object::name(pod).unwrap_or_default().to_string(),
            namespace: kapsel_api::object::namespace(pod).unwrap_or("default").to_string(),
            labels: std::collections::BTreeMap::new(),
            restart_policy: RestartPolicy::Never,
            init_containers: Vec::new(),
            containers: Vec::new(),
            active_deadline: None,
            start_time: None,
            termination_grace: spec::DEFAULT_TERMINATION_GRACE,
            volumes: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_hold_whatever_number_the_pod_says() {
        let instant = tokio::time::Instant::now();
        let now = Utc::now();
        let ago = |seconds: i64| now - chrono::TimeDelta::seconds(seconds);
        let at = |deadline: Option<u64>, start| deadline_instant(instant, now, start, deadline.map(Duration::from_secs));
        assert_eq!(at(None, now), None);
        assert_eq!(at(Some(30), now), Some(instant + Duration::from_secs(30)));
        assert_eq!(at(Some(30), ago(10)), Some(instant + Duration::from_secs(20)));
        assert_eq!(at(Some(30), ago(100)), Some(instant), "a deadline already past is now");
        assert_eq!(
            at(Some(30), now + chrono::TimeDelta::seconds(50)),
            Some(instant + Duration::from_secs(30)),
            "a start in the future counts as now"
        );
        for huge in [i64::MAX as u64, u64::MAX, i32::MAX as u64 + 1] {
            assert_eq!(at(Some(huge), now), Some(instant + MAX_ACTIVE_DEADLINE), "{huge}");
        }
        let far_past = DateTime::<Utc>::MIN_UTC;
        assert_eq!(at(Some(u64::MAX), far_past), Some(instant));
        assert_eq!(deadline_instant(instant, DateTime::<Utc>::MAX_UTC, far_past, Some(Duration::MAX)), Some(instant));
    }

    #[test]
    fn panic_messages_are_read_from_either_payload() {
        let text = std::panic::catch_unwind(|| panic!("plain")).unwrap_err();
        assert_eq!(panic_message(text.as_ref()), "plain");
        let formatted = std::panic::catch_unwind(|| panic!("with {}", 42)).unwrap_err();
        assert_eq!(panic_message(formatted.as_ref()), "with 42");
        let other = std::panic::catch_unwind(|| std::panic::panic_any(7u8)).unwrap_err();
        assert_eq!(panic_message(other.as_ref()), "a panic without a message");
    }
}
