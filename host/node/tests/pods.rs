//! The pod worker with the real sample workloads: phases, restart policies
//! and back-off, OOM kills, image errors, init containers, deadlines, stop,
//! and the logs the API serves.

mod common;

use std::time::{Duration, Instant};

use common::{WorkloadImages, log_contains, log_text, runtime, status_where};
use futures::StreamExt;
use kapsel_node::LogQuery;
use kapsel_node::PodWorker;
use kapsel_node::pod::config::ConfigKind;
use kapsel_node::pod::status::Phase;
use serde_json::{Value, json};
use tokio::sync::broadcast;

const SOON: Duration = Duration::from_secs(10);

fn pod(uid: &str, spec: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": uid, "namespace": "team-a", "uid": uid}, "spec": spec})
}

/// The reasons of the events received so far.
fn reasons(events: &mut broadcast::Receiver<kapsel_node::PodEvent>) -> Vec<&'static str> {
    std::iter::from_fn(|| events.try_recv().ok()).map(|event| event.reason).collect()
}

fn phase(status: &Value) -> &str {
    status["phase"].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_succeeds_with_its_output_in_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime(dir.path());
    let images = WorkloadImages::new();
    let spec = json!({
        "restartPolicy": "Never",
        "containers": [{"name": "main", "image": "hello:1", "args": ["--from", "pods.rs"], "env": [{"name": "GREETING", "value": "hi there"}]}]
    });
    let worker = PodWorker::start(runtime.clone(), images.clone(), &pod("uid-hello", spec));
    tokio::time::timeout(SOON, worker.wait()).await.expect("hello finishes");
    let status = worker.status().borrow().clone();
    assert_eq!(phase(&status), "Succeeded", "{status:#}");
    assert_eq!(worker.phase(), Phase::Succeeded);
    let main = &status["containerStatuses"][0];
    assert_eq!(main["name"], "main");
    assert_eq!(main["image"], "hello:1");
    assert!(main["imageID"].as_str().unwrap().starts_with("sha256:"), "{main:#}");
    assert_eq!(main["ready"], false);
    assert_eq!(main["restartCount"], 0);
    let terminated = &main["state"]["terminated"];
    assert_eq!(terminated["exitCode"], 0);
    assert_eq!(terminated["reason"], "Completed");
    assert!(terminated["startedAt"].is_string() && terminated["finishedAt"].is_string());
    let conditions: Vec<(String, String)> = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["type"].as_str().unwrap().to_string(), c["status"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(
        conditions,
        [("Initialized".into(), "True".into()), ("Ready".into(), "False".into()), ("ContainersReady".into(), "False".into())]
    );
    assert!(status.get("initContainerStatuses").is_none());
    let mut events = worker.events();
    let first = events.try_recv().unwrap();
    assert_eq!((first.kind, first.reason), (kapsel_node::EventKind::Normal, "Pulled"));
    assert_eq!(first.field_path.as_deref(), Some("spec.containers{main}"));
    assert!(first.message.starts_with("Image \"hello:1\" (sha256:"), "{}", first.message);
    assert_eq!(reasons(&mut events), ["Started"]);
    assert_eq!(log_text(&runtime, "uid-hello", "main").await, "Hello from Kapsel\nargs: hello --from pods.rs\nGREETING=hi there\n");
    assert_eq!(images.fetches(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_under_always_crash_loops_with_a_rising_restart_count() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime(dir.path());
    let spec = json!({"restartPolicy": "Always", "containers": [{"name": "main", "image": "fail:1"}]});
    let worker = PodWorker::start(runtime.clone(), WorkloadImages::new(), &pod("uid-fail", spec));
    let status = status_where(&worker, SOON, |s| {
        s["containerStatuses"][0]["restartCount"].as_u64() >= Some(3)
            && s["containerStatuses"][0]["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    })
    .await;
    assert_eq!(phase(&status), "Running", "a crash-looping pod stays Running, as in Kubernetes: {status:#}");
    let main = &status["containerStatuses"][0];
    let message = main["state"]["waiting"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("back-off ") && message.ends_with(" restarting failed container=main pod=uid-fail_team-a(uid-fail)"),
        "{message}"
    );
    assert_eq!(main["lastState"]["terminated"]["exitCode"], 1);
    assert_eq!(main["lastState"]["terminated"]["reason"], "Error");
    let reasons = reasons(&mut worker.events());
    assert_eq!(&reasons[..4], ["Pulled", "Started", "BackOff", "Started"]);

    // The previous run's log is there too.
    let previous = runtime.logs().read("uid-fail", "main", &LogQuery { previous: true, ..LogQuery::default() }).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&previous), "fail: giving up on purpose (exit code 3)\n");

    worker.stop(Duration::from_secs(5)).await;
    let last = worker.status().borrow().clone();
    assert_eq!(phase(&last), "Failed", "{last:#}");
    assert!(last["containerStatuses"][0]["state"]["terminated"].is_object(), "{last:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_failure_restarts_and_never_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime(dir.path());
    let images = WorkloadImages::new();
    let on_failure = json!({"restartPolicy": "OnFailure", "containers": [{"name": "main", "image": "fail:1"}]});
    let restarting = PodWorker::start(runtime.clone(), images.clone(), &pod("uid-onfailure", on_failure));
    status_where(&restarting, SOON, |s| s["containerStatuses"][0]["restartCount"].as_u64() >= Some(1)).await;

    let never = json!({"restartPolicy": "Never", "containers": [{"name": "main", "image": "fail:1"}]});
    let failing = PodWorker::start(runtime.clone(), images, &pod("uid-never", never));
    tokio::time::timeout(SOON, failing.wait()).await.expect("the pod ends");
    let status = failing.status().borrow().clone();
    assert_eq!(phase(&status), "Failed", "{status:#}");
    assert_eq!(status["containerStatuses"][0]["state"]["terminated"]["exitCode"], 1);
    assert_eq!(status["containerStatuses"][0]["restartCount"], 0);
    restarting.stop(Duration::from_secs(5)).await;
}

/// A restarted node agent takes its pods over from their status: a run
/// that was in progress went with the agent and counts as ended (as kubelet
/// reports a container that vanished), restart counts go on, and what ended
/// for good is not run again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_taken_over_from_an_earlier_agent_go_on_from_their_status() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime(dir.path());
    let images = WorkloadImages::new();
    let was = |spec: Value, uid: &str, container_status: Value| {
        let mut pod = pod(uid, spec);
        pod["status"] = json!({"phase": "Running", "startTime": "2026-11-26T10:00:00Z", "containerStatuses": [container_status]});
        pod
    };
    let running_before = |restarts: u32| {
        json!({"name": "main", "restartCount": restarts, "containerID": "kapsel://before/main/2",
               "state": {"running": {"startedAt": "2026-11-26T10:00:01Z"}}})
    };

    // Always: started again as restart 3, the vanished run as its last state.
    let always = json!({"containers": [{"name": "main", "image": "worker:1"}]});
    let worker = PodWorker::start(runtime.clone(), images.clone(), &was(always, "uid-again", running_before(2)));
    let status = status_where(&worker, SOON, |s| s["containerStatuses"][0]["state"]["running"].is_object()).await;
    let main = &status["containerStatuses"][0];
    assert_eq!(main["restartCount"], 3, "{main:#}");
    let last = &main["lastState"]["terminated"];
    assert_eq!((last["exitCode"].as_i64(), last["reason"].as_str()), (Some(137), Some("ContainerStatusUnknown")), "{main:#}");
    assert_eq!(last["startedAt"], "2026-11-26T10:00:01Z");
    assert_eq!(main["containerID"], "kapsel://uid-again/main/3");
    log_contains(&runtime, "uid-again", "main", "tick", SOON).await;
    worker.stop(Duration::from_secs(5)).await;

    // Never: the vanished run failed the pod; nothing runs.
    let never = json!({"restartPolicy": "Never", "containers": [{"name": "main", "image": "worker:1"}]});
    let gone = PodWorker::start(runtime.clone(), images.clone(), &was(never, "uid-gone", running_before(0)));
    tokio::time::timeout(SOON, gone.wait()).await.expect("the pod ends");
    let status = gone.status().borrow().clone();
    assert_eq!(phase(&status), "Failed", "{status:#}");
    let terminated = &status["containerStatuses"][0]["state"]["terminated"];
    assert_eq!((terminated["exitCode"].as_i64(), terminated["reason"].as_str()), (Some(137), Some("ContainerStatusUnknown")));
    assert!(!reasons(&mut gone.events()).contains(&"Started"));

    // OnFailure, after a run that completed: done, not run again.
    let completed = json!({"name": "main", "restartCount": 1, "state": {"terminated": {"exitCode": 0, "reason": "Completed",
                           "startedAt": "2026-11-26T10:00:01Z", "finishedAt": "2026-11-26T10:00:02Z"}}});
    let on_failure = json!({"restartPolicy": "OnFailure", "containers": [{"name": "main", "image": "hello:1"}]});
    let done = PodWorker::start(runtime.clone(), images.clone(), &was(on_failure, "uid-done", completed));
    tokio::time::timeout(SOON, done.wait()).await.expect("the pod ends");
    let status = done.status().borrow().clone();
    assert_eq!(phase(&status), "Succeeded", "{status:#}");
    assert_eq!(status["containerStatuses"][0]["restartCount"], 1);
    assert!(!reasons(&mut done.events()).contains(&"Started"));

    // In back-off when the agent went: the next run, with the last failure as its last state.
    let backing_off = json!({"name": "main", "restartCount": 4, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                             "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": "2026-11-26T10:00:03Z"}}});
    let crashing = json!({"containers": [{"name": "main", "image": "fail:1"}]});
    let looping = PodWorker::start(runtime.clone(), images, &was(crashing, "uid-looping", backing_off));
    status_where(&looping, SOON, |s| s["containerStatuses"][0]["restartCount"].as_u64() >= Some(5)).await;
    looping.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memhog_past_its_limit_is_oom_killed() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime(dir.path());
    let spec = json!({
        "restartPolicy": "Never",
        "containers": [{"name": "main", "image": "memhog:1", "resources": {"limits": {"memory": "32Mi"}}}]
    });
    let worker = PodWorker::start(runtime, WorkloadImages::new(), &pod("uid-memhog", spec));
    tokio::time::timeout(SOON, worker.wait()).await.expect("memhog is stopped");
    let status = worker.status().borrow().clone();
    assert_eq!(phase(&status), "Failed", "{status:#}");
    let terminated = &status["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(terminated["reason"], "OOMKilled", "{status:#}");
    assert_eq!(terminated["exitCode"], 137);
}

/// A container without `limits.memory` is held to the node's default:
/// its status reports that limit, and memhog is `OOMKilled` at it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memhog_without_a_limit_is_oom_killed_at_the_node_default() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = kapsel_node::RuntimeConfig::new(dir.path());
    config.default_memory_limit_bytes = Some(24 << 20);
    let runtime = kapsel_node::Runtime::new(config).unwrap();
    let spec = json!({
        "restartPolicy": "Never",
        "containers": [
            {"name": "main", "image": "memhog:1"},
            {"name": "capped", "image": "hello:1", "resources": {"limits": {"memory": "8Mi", "cpu": "500m"}}}
        ]
    });
    let worker = PodWorker::start(runtime, WorkloadImages::new(), &pod("uid-memhog-default", spec));
    tokio::time::timeout(SOON, worker.wait()).await.expect("memhog is stopped");
    let status = worker.status().borrow().clone();
    let main = &status["containerStatuses"][0];
    assert_eq!(main["resources"], json!({"limits": {"memory": "24Mi"}}), "{status:#}");
    assert_eq!(status["containerStatuses"][1]["resources"], json!({"limits": {"memory": "8Mi", "cpu": "500m"}}), "{status:#}");
    let terminated = &main["state"]["terminated"];
    assert_eq!(terminated["reason"], "OOMKilled", "{status:#}");
    assert_eq!(terminated["exitCode"], 137);
    let message = terminated["message"].as_str().unwrap_or_default();
    assert!(message.contains("the node's default memory limit of 24Mi"), "{status:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_worker_ends_within_its_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime(dir.path());
    let spec = json!({"terminationGracePeriodSeconds": 5, "containers": [{"name": "main", "image": "worker:1"}]});
    let worker = PodWorker::start(runtime.clone(), WorkloadImages::new(), &pod("uid-worker", spec));
    let running = status_where(&worker, SOON, |s| phase(s) == "Running").await;
    let conditions = running["conditions"].as_array().unwrap();
    assert!(conditions.iter().all(|c| c["status"] == "True"), "{running:#}");
    assert_eq!(running["containerStatuses"][0]["ready"], true);
    assert!(running["containerStatuses"][0]["state"]["running"]["startedAt"].is_string());

    // Follow the log while it runs; the stream ends when the pod is stopped.
    let mut follow = runtime.logs().follow("uid-worker", "main", &LogQuery::default()).unwrap();
    log_contains(&runtime, "uid-worker", "main", "worker: tick 2\n", SOON).await;
    assert_eq!(worker.termination_grace(), Duration::from_secs(5));
    let stopping = Instant::now();
    worker.stop(worker.termination_grace()).await;
    let took = stopping.elapsed();
    assert!(took < Duration::from_secs(5), "stopping took {took:?}");
    eprintln!("worker: stopped in {took:?}");
    let mut followed = String::new();
    while let Some(chunk) = tokio::time::timeout(SOON, follow.next()).await.expect("the follow ends") {
        followed.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }
    assert!(followed.starts_with("worker: tick 1\nworker: tick 2\n"), "{followed}");

    let last = worker.status().borrow().clone();
    assert_eq!(phase(&last), "Failed", "{last:#}");
    assert_eq!(reasons(&mut worker.events()), ["Pulled", "Started", "Killing"]);
    let terminated = &last["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(terminated["exitCode"], 137, "{last:#}");
    assert_eq!(terminated["reason"], "Error");
    assert_eq!(last["conditions"][1]["reason"], "PodCompleted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_that_cannot_be_pulled_waits_in_err_image_pull() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime(dir.path());
    let spec = json!({"containers": [{"name": "main", "image": "missing:1"}]});
    let worker = PodWorker::start(runtime, WorkloadImages::new(), &pod("uid-missing", spec));
    let status = status_where(&worker, SOON, |s| s["containerStatuses"][0]["state"]["waiting"]["reason"] == "ErrImagePull").await;
    assert_eq!(phase(&status), "Pending");
    let message = status["containerStatuses"][0]["state"]["waiting"]["message"].as_str().unwrap();
    assert!(message.contains("failed to resolve image \"missing:1\": image \"missing:1\" not found"), "{message}");
    let failed = worker.events().try_recv().unwrap();
    assert_eq!((failed.kind, failed.reason), (kapsel_node::EventKind::Warning, "Failed"));
    assert!(failed.message.starts_with("Error: ErrImagePull: failed to resolve image"), "{}", failed.message);
    worker.stop(Duration::ZERO).await;
    let last = worker.status().borrow().clone();
    assert_eq!(last["containerStatuses"][0]["state"]["terminated"]["reason"], "ContainerStatusUnknown", "{last:#}");
    assert_eq!(phase(&last), "Failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_containers_run_first_and_a_failed_one_fails_the_pod() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime(dir.path());
    let images = WorkloadImages::new();
    let spec = json!({
        "restartPolicy": "Never",
        "initContainers": [{"name": "setup", "image": "hello:1", "args": ["setup"]}],
        "containers": [{"name": "main", "image": "hello:1"}]
    });
    let worker = PodWorker::start(runtime.clone(), images.clone(), &pod("uid-init", spec));
    tokio::time::timeout(SOON, worker.wait()).await.expect("the pod finishes");
    let status = worker.status().borrow().clone();
    assert_eq!(phase(&status), "Succeeded", "{status:#}");
    assert_eq!(status["initContainerStatuses"][0]["state"]["terminated"]["reason"], "Completed");
    assert_eq!(status["conditions"][0]["status"], "True");
    assert!(log_text(&runtime, "uid-init", "setup").await.contains("args: hello setup\n"));
    assert_eq!(images.fetches(), 1, "one image, fetched once");

    let failing = json!({
        "restartPolicy": "Never",
        "initContainers": [{"name": "setup", "image": "fail:1"}],
        "containers": [{"name": "main", "image": "hello:1"}]
    });
    let worker = PodWorker::start(runtime, images, &pod("uid-init-fail", failing));
    tokio::time::timeout(SOON, worker.wait()).await.expect("the pod finishes");
    let status = worker.status().borrow().clone();
    assert_eq!(phase(&status), "Failed", "{status:#}");
    assert_eq!(status["conditions"][0]["status"], "False");
    assert_eq!(status["conditions"][0]["message"], "containers with incomplete status: [setup]");
    assert_eq!(status["containerStatuses"][0]["state"]["waiting"]["reason"], "PodInitializing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_past_its_active_deadline_fails() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime(dir.path());
    let spec = json!({"activeDeadlineSeconds": 1, "containers": [{"name": "main", "image": "worker:1"}]});
    let started = Instant::now();
    let worker = PodWorker::start(runtime, WorkloadImages::new(), &pod("uid-deadline", spec));
    tokio::time::timeout(SOON, worker.wait()).await.expect("the deadline ends the pod");
    assert!(started.elapsed() >= Duration::from_secs(1));
    let status = worker.status().borrow().clone();
    assert_eq!(phase(&status), "Failed", "{status:#}");
    assert_eq!(status["reason"], "DeadlineExceeded");
    assert!(reasons(&mut worker.events()).contains(&"DeadlineExceeded"));
    assert_eq!(status["message"], "Pod was active on the node longer than the specified deadline");
    assert_eq!(status["containerStatuses"][0]["state"]["terminated"]["reason"], "DeadlineExceeded", "{status:#}");
}

#[tokio::test]
async fn a_pod_the_node_cannot_read_is_failed_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let worker = PodWorker::start(runtime(dir.path()), WorkloadImages::new(), &json!({"metadata": {"uid": "u"}, "spec": {}}));
    worker.wait().await;
    let status = worker.status().borrow().clone();
    assert_eq!(phase(&status), "Failed");
    assert_eq!(status["reason"], "InvalidPod");
    assert_eq!(status["message"], "the pod has no containers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_whose_secret_is_missing_waits_and_starts_once_it_exists() {
    let dir = tempfile::tempdir().unwrap();
    let images = WorkloadImages::new();
    let spec = json!({"restartPolicy": "Never", "containers": [{"name": "main", "image": "hello:1", "args": ["--env", "TOKEN"],
        "env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}]});
    let runtime = runtime(dir.path());
    let worker = PodWorker::start(runtime.clone(), images.clone(), &pod("uid-config", spec));
    let status =
        status_where(&worker, SOON, |s| s["containerStatuses"][0]["state"]["waiting"]["reason"] == "CreateContainerConfigError").await;
    assert_eq!(status["containerStatuses"][0]["state"]["waiting"]["message"], "secret \"s\" not found in namespace \"team-a\"");
    images.put_config(ConfigKind::Secret, "team-a", "s", &[("other", "x")]);
    status_where(&worker, SOON, |s| s["containerStatuses"][0]["state"]["waiting"]["message"] == "couldn't find key k in Secret team-a/s")
        .await;
    images.put_config(ConfigKind::Secret, "team-a", "s", &[("k", "s3cret")]);
    tokio::time::timeout(SOON, worker.wait()).await.expect("the pod runs once its secret is there");
    assert!(log_text(&runtime, "uid-config", "main").await.contains("TOKEN=s3cret"));
    worker.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_maps_and_secrets_reach_a_pod_as_environment_and_read_only_files() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime(dir.path());
    let images = WorkloadImages::new();
    images.put_config(
        ConfigKind::ConfigMap,
        "team-a",
        "settings",
        &[("color", "blue"), ("size", "L"), ("bad-name", "skipped"), ("app.toml", "port = 8080")],
    );
    images.put_config(ConfigKind::Secret, "team-a", "db", &[("password", "hunter2")]);
    let spec = json!({
        "restartPolicy": "Never",
        "volumes": [
            {"name": "conf", "configMap": {"name": "settings", "items": [{"key": "app.toml", "path": "etc/app.toml"}]}},
            {"name": "creds", "secret": {"secretName": "db"}},
            {"name": "absent", "secret": {"secretName": "nope", "optional": true}}
        ],
        "containers": [{"name": "main", "image": "hello:1",
            "args": ["--env", "CFG_color", "--env", "CFG_size", "--env", "CFG_bad-name", "--env", "PASSWORD", "--env", "POD",
                     "--cat", "/config/etc/app.toml", "--cat", "/secrets/password"],
            "envFrom": [{"configMapRef": {"name": "settings"}, "prefix": "CFG_"}],
            "env": [
                {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}},
                {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "CFG_size", "value": "XL"}
            ],
            "volumeMounts": [{"name": "conf", "mountPath": "/config"}, {"name": "creds", "mountPath": "/secrets", "readOnly": true}]}]
    });
    let worker = PodWorker::start(runtime.clone(), images.clone(), &pod("uid-configured", spec));
    let volume = dir.path().join("volumes/uid-configured/creds/password");
    tokio::time::timeout(SOON, worker.wait()).await.expect("the pod ends");
    let status = worker.status().borrow().clone();
    let log = log_text(&runtime, "uid-configured", "main").await;
    assert_eq!(phase(&status), "Succeeded", "{status:#}\n{log}");
    for line in [
        "CFG_color=blue",
        "CFG_size=XL",
        "CFG_bad-name=\n",
        "PASSWORD=hunter2",
        "POD=uid-configured",
        "/config/etc/app.toml: port = 8080",
        "/secrets/password: hunter2",
    ] {
        assert!(log.contains(line), "{line:?} missing from:\n{log}");
    }
    assert!(!volume.exists() && !dir.path().join("volumes/uid-configured").exists(), "the pod's volumes go with it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_that_names_one_large_secret_many_times_is_refused_before_the_disk_fills() {
    let dir = tempfile::tempdir().unwrap();
    let images = WorkloadImages::new();
    let big = "x".repeat(1 << 20);
    images.put_config(ConfigKind::Secret, "team-a", "big", &[("blob", big.as_str())]);
    let volumes: Vec<Value> = (0..40).map(|i| json!({"name": format!("v{i}"), "secret": {"secretName": "big"}})).collect();
    let spec = json!({"volumes": volumes, "containers": [{"name": "main", "image": "hello:1"}]});
    let worker = PodWorker::start(runtime(dir.path()), images.clone(), &pod("uid-greedy", spec));
    let status = status_where(&worker, SOON, |s| {
        s["containerStatuses"][0]["state"]["waiting"]["message"].as_str().is_some_and(|m| m.contains("more than 16777216 bytes"))
    })
    .await;
    assert_eq!(phase(&status), "Pending");
    let written: u64 = walk_size(&dir.path().join("volumes"));
    assert!(written < 17 << 20, "{written} bytes written");
    worker.stop(Duration::from_secs(5)).await;
}

/// The bytes of the files under `dir`.
fn walk_size(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| if entry.path().is_dir() { walk_size(&entry.path()) } else { entry.metadata().map(|m| m.len()).unwrap_or(0) })
        .sum()
}
