//! The container runtime with the real sample workloads: exits, logs,
//! memory limits (the node's default among them), kills, deadlines, CPU
//! fairness and limits, digests and the compile cache.

mod common;

use std::time::{Duration, Instant};

use common::{runtime, workload};
use futures::StreamExt;
use kapsel_node::runtime::{EXIT_CODE_KILLED, digest_of};
use kapsel_node::{ContainerConfig, ExitReason, LogQuery, PrepareError, Prepared, Runtime, RuntimeConfig};

async fn prepare(runtime: &Runtime, name: &str) -> Prepared {
    let bytes = workload(name);
    runtime.prepare(&digest_of(&bytes), async { Ok(bytes) }).await.expect("the workload prepares")
}

fn config(runtime: &Runtime, pod: &str, args: &[&str]) -> ContainerConfig {
    ContainerConfig {
        dirs: Vec::new(),
        args: args.iter().map(|a| a.to_string()).collect(),
        env: Vec::new(),
        memory_limit_bytes: None,
        cpu_limit_millicores: None,
        log: runtime.logs().create(pod, "main", 0).expect("a log"),
        deadline: None,
    }
}

async fn log_of(runtime: &Runtime, pod: &str) -> String {
    String::from_utf8_lossy(&runtime.logs().read(pod, "main", &LogQuery::default()).await.unwrap()).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_gets_its_args_and_env_and_completes() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime(dir.path());
    let bytes = workload("hello");
    let compiling = Instant::now();
    let hello = runtime.prepare(&digest_of(&bytes), async { Ok(bytes) }).await.unwrap();
    let compiled_in = compiling.elapsed();

    let mut config = config(&runtime, "pod-hello", &["hello", "--from", "a test"]);
    config.env = vec![("GREETING".into(), "Grüezi".into())];
    let starting = Instant::now();
    let container = runtime.start(&hello, config);
    let mut follow = runtime.logs().follow("pod-hello", "main", &LogQuery::default()).unwrap();
    let mut first_line_after = None;
    while let Some(chunk) = follow.next().await {
        if !chunk.unwrap().is_empty() && first_line_after.is_none() {
            first_line_after = Some(starting.elapsed());
        }
    }
    let exit = container.wait().await;
    assert_eq!((exit.exit_code, exit.reason), (0, ExitReason::Completed), "{exit:?}");
    assert!(exit.finished_at >= exit.started_at);
    assert_eq!(log_of(&runtime, "pod-hello").await, "Hello from Kapsel\nargs: hello --from a test\nGREETING=Grüezi\n");
    eprintln!("hello: compiled in {compiled_in:?}; first log line {first_line_after:?} after start; run took {:?}", starting.elapsed());
}

#[tokio::test]
async fn fail_reports_failure_and_its_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime(dir.path());
    let fail = prepare(&runtime, "fail").await;
    let exit = runtime.start(&fail, config(&runtime, "pod-fail", &["fail"])).wait().await;
    // `std::process::exit(3)` reaches the host as WASI 0.2's `exit(err)`: status 1.
    assert_eq!((exit.exit_code, exit.reason), (1, ExitReason::Error), "{exit:?}");
    let stored = std::fs::read_to_string(runtime.logs().container_dir("pod-fail", "main").join("0.log")).unwrap();
    assert!(stored.contains(" stderr F fail: giving up on purpose"), "{stored}");
}

#[tokio::test]
async fn a_trap_is_an_error_with_the_trap_as_message() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime(dir.path());
    let fail = prepare(&runtime, "fail").await;
    let exit = runtime.start(&fail, config(&runtime, "pod-panic", &["fail", "panic"])).wait().await;
    assert_eq!((exit.exit_code, exit.reason), (kapsel_node::runtime::EXIT_CODE_TRAP, ExitReason::Error), "{exit:?}");
    assert!(exit.message.starts_with("wasm trap: "), "{}", exit.message);
    assert!(log_of(&runtime, "pod-panic").await.contains("panicking on purpose"));
}

#[tokio::test]
async fn memhog_is_oom_killed_at_its_limit() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime(dir.path());
    let memhog = prepare(&runtime, "memhog").await;
    let mut config = config(&runtime, "pod-memhog", &["memhog"]);
    config.memory_limit_bytes = Some(32 << 20);
    let exit = tokio::time::timeout(Duration::from_secs(10), runtime.start(&memhog, config).wait()).await.expect("memhog ends");
    assert_eq!((exit.exit_code, exit.reason), (EXIT_CODE_KILLED, ExitReason::OOMKilled), "{exit:?}");
    assert!(exit.message.contains("memory limit of 32Mi"), "{}", exit.message);
    let log = log_of(&runtime, "pod-memhog").await;
    assert!(log.contains("memhog: holding 16 MiB"), "{log}");
    assert!(!log.contains("holding 32 MiB"), "{log}");
}

/// A container without `limits.memory` gets the node's default ceiling, and meets it as any limit.
#[tokio::test]
async fn memhog_without_a_limit_is_oom_killed_at_the_node_default() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = RuntimeConfig::new(dir.path());
    node.default_memory_limit_bytes = Some(24 << 20);
    let runtime = Runtime::new(node).unwrap();
    let memhog = prepare(&runtime, "memhog").await;
    let unlimited = config(&runtime, "pod-memhog-default", &["memhog"]);
    assert_eq!(unlimited.memory_limit_bytes, None);
    let exit = tokio::time::timeout(Duration::from_secs(10), runtime.start(&memhog, unlimited).wait()).await.expect("memhog ends");
    assert_eq!((exit.exit_code, exit.reason), (EXIT_CODE_KILLED, ExitReason::OOMKilled), "{exit:?}");
    assert!(exit.message.contains("the node's default memory limit of 24Mi (it sets no limits.memory"), "{}", exit.message);
    let log = log_of(&runtime, "pod-memhog-default").await;
    assert!(log.contains("memhog: holding 16 MiB"), "{log}");
    assert!(!log.contains("holding 32 MiB"), "{log}");
    // The container's own limit wins over the default, even a larger one.
    let mut own = config(&runtime, "pod-memhog-own", &["memhog"]);
    own.memory_limit_bytes = Some(40 << 20);
    let exit = tokio::time::timeout(Duration::from_secs(10), runtime.start(&memhog, own).wait()).await.expect("memhog ends");
    assert_eq!(exit.reason, ExitReason::OOMKilled, "{exit:?}");
    assert!(exit.message.contains("its memory limit of 40Mi"), "{}", exit.message);
    assert!(log_of(&runtime, "pod-memhog-own").await.contains("holding 32 MiB"));
}

/// CPU limits count the time the guest runs, not the time it waits on the
/// host: a worker sleeping between ticks keeps its pace under a tiny limit.
#[tokio::test]
async fn a_cpu_limit_does_not_slow_a_guest_that_mostly_waits() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime(dir.path());
    let worker = prepare(&runtime, "worker").await;
    let mut config = config(&runtime, "pod-worker-10m", &["worker"]);
    config.cpu_limit_millicores = Some(10);
    let started = Instant::now();
    let container = runtime.start(&worker, config);
    let mut follow = runtime.logs().follow("pod-worker-10m", "main", &LogQuery::default()).unwrap();
    let mut seen = String::new();
    while !seen.contains("worker: tick 4\n") {
        let chunk = tokio::time::timeout(Duration::from_secs(5), follow.next()).await.expect("the worker keeps logging");
        seen.push_str(&String::from_utf8_lossy(&chunk.unwrap().unwrap()));
    }
    let took = started.elapsed();
    eprintln!("a worker under limits.cpu: 10m logged 4 ticks in {took:?}");
    assert!(took < Duration::from_millis(4500), "three one-second sleeps and little work: {took:?}");
    container.kill();
    assert_eq!(container.wait().await.reason, ExitReason::Killed);
}

#[tokio::test]
async fn a_spinning_and_a_sleeping_guest_are_killed_promptly() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime(dir.path());
    for (name, pod) in [("spin", "pod-spin"), ("worker", "pod-worker")] {
        let prepared = prepare(&runtime, name).await;
        let container = runtime.start(&prepared, config(&runtime, pod, &[name]));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(container.exit().is_none(), "{name} is still running");
        let killing = Instant::now();
        container.kill();
        let exit = tokio::time::timeout(Duration::from_secs(2), container.wait()).await.expect("killed in time");
        assert_eq!((exit.exit_code, exit.reason), (EXIT_CODE_KILLED, ExitReason::Killed), "{exit:?}");
        eprintln!("{name}: killed in {:?}", killing.elapsed());
    }
}

#[tokio::test]
async fn a_deadline_stops_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime(dir.path());
    let worker = prepare(&runtime, "worker").await;
    let mut config = config(&runtime, "pod-deadline", &["worker"]);
    config.deadline = Some(tokio::time::Instant::now() + Duration::from_millis(1500));
    let exit = tokio::time::timeout(Duration::from_secs(5), runtime.start(&worker, config).wait()).await.expect("stopped");
    assert_eq!(exit.reason, ExitReason::DeadlineExceeded, "{exit:?}");
    assert!(log_of(&runtime, "pod-deadline").await.contains("worker: tick 1\n"));
}

/// One executor thread for both guests: only the epoch yields let the worker run beside the busy loop.
#[tokio::test(flavor = "current_thread")]
async fn a_busy_guest_does_not_starve_another() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime(dir.path());
    let spin = prepare(&runtime, "spin").await;
    let worker = prepare(&runtime, "worker").await;
    let spinning = runtime.start(&spin, config(&runtime, "pod-spin", &["spin"]));
    let working = runtime.start(&worker, config(&runtime, "pod-worker", &["worker"]));
    let started = Instant::now();
    let mut follow = runtime.logs().follow("pod-worker", "main", &LogQuery::default()).unwrap();
    let mut seen = String::new();
    while !seen.contains("worker: tick 3\n") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), follow.next()).await.expect("the worker keeps logging");
        seen.push_str(&String::from_utf8_lossy(&chunk.unwrap().unwrap()));
    }
    eprintln!("fairness: the worker logged 3 ticks in {:?} beside a busy loop", started.elapsed());
    assert!(spinning.exit().is_none(), "the busy loop is still running");
    spinning.kill();
    working.kill();
    assert_eq!(spinning.wait().await.reason, ExitReason::Killed);
    assert_eq!(working.wait().await.reason, ExitReason::Killed);
}

#[tokio::test]
async fn bytes_that_do_not_match_the_digest_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime(dir.path());
    let digest = digest_of(&workload("hello"));
    let error = runtime.prepare(&digest, async { Ok(workload("worker")) }).await.unwrap_err();
    assert!(matches!(error, PrepareError::DigestMismatch { .. }), "{error}");
    assert!(error.to_string().contains(&format!("not {digest}: refusing them")), "{error}");
    assert!(error.is_pull_error());
    // The refusal is not remembered: the right bytes are accepted afterwards.
    runtime.prepare(&digest, async { Ok(workload("hello")) }).await.unwrap();
}

#[tokio::test]
async fn modules_and_non_commands_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime(dir.path());
    let core_module = b"\0asm\x01\0\0\0".to_vec();
    let error = runtime.prepare(&digest_of(&core_module), async { Ok(core_module.clone()) }).await.unwrap_err();
    assert!(error.to_string().contains("is a core WebAssembly module, not a component"), "{error}");
    let empty_component = b"\0asm\x0d\0\x01\0".to_vec();
    let error = runtime.prepare(&digest_of(&empty_component), async { Ok(empty_component.clone()) }).await.unwrap_err();
    assert!(
        error.to_string().contains(
            "is neither a command nor an HTTP server: it exports neither wasi:cli/run nor wasi:http/incoming-handler (its exports: none)"
        ),
        "{error}"
    );
    let text = b"#!/bin/sh\necho hi\n".to_vec();
    let error = runtime.prepare(&digest_of(&text), async { Ok(text.clone()) }).await.unwrap_err();
    assert!(error.to_string().ends_with("is not a WebAssembly file"), "{error}");
    let error = runtime.prepare("latest", async { Ok(Vec::new()) }).await.unwrap_err();
    assert!(matches!(error, PrepareError::InvalidDigest(_)), "{error}");
}

#[tokio::test]
async fn components_are_compiled_once_and_the_disk_cache_serves_another_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = workload("hello");
    let digest = digest_of(&bytes);
    let first = runtime(dir.path());
    first.prepare(&digest, async { Ok(bytes.clone()) }).await.unwrap();
    first.prepare(&digest, async { panic!("fetched although prepared in memory") }).await.unwrap();
    let cached = dir.path().join("images").join(format!("{}.cwasm", digest.replace(':', "-")));
    assert!(cached.is_file(), "{} is written", cached.display());

    let second = runtime(dir.path());
    let loading = Instant::now();
    let hello = second.prepare(&digest, async { panic!("fetched although cached on disk") }).await.unwrap();
    eprintln!("hello: loaded from the disk cache in {:?}", loading.elapsed());
    let exit = second.start(&hello, config(&second, "pod-cached", &["hello"])).wait().await;
    assert_eq!(exit.reason, ExitReason::Completed);

    // A damaged cache file is dropped and the component compiled again.
    let mut damaged = std::fs::read(&cached).unwrap();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0xff;
    std::fs::write(&cached, &damaged).unwrap();
    let third = runtime(dir.path());
    let fetched = std::sync::atomic::AtomicBool::new(false);
    let hello = third
        .prepare(&digest, async {
            fetched.store(true, std::sync::atomic::Ordering::SeqCst);
            Ok(bytes.clone())
        })
        .await
        .unwrap();
    assert!(fetched.load(std::sync::atomic::Ordering::SeqCst), "the damaged file was not used");
    assert_eq!(third.start(&hello, config(&third, "pod-recompiled", &["hello"])).wait().await.reason, ExitReason::Completed);
    assert_ne!(std::fs::read(&cached).unwrap(), damaged, "the cache file was written again");

    // Compiled code stays with its engine: another runtime refuses to start it.
    let exit = first.start(&hello, config(&first, "pod-elsewhere", &["hello"])).wait().await;
    assert_eq!(exit.reason, ExitReason::Error);
    assert!(exit.message.ends_with("was prepared by another runtime"), "{}", exit.message);
}
