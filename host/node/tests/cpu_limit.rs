//! `limits.cpu` is enforced (issue 11): the busy loop `spin` run as a pod
//! with `limits.cpu: 250m` uses about a quarter of a core, measured as the
//! CPU time of this whole test process (`/proc/self/stat`), while the same
//! pod without the limit uses a whole core (less on a machine busy with
//! other work, but always far more than the limited one). The test is alone in its
//! binary, so nothing else runs in the process while it measures.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{WorkloadImages, runtime, status_where};
use kapsel_node::{PodWorker, Runtime};
use serde_json::{Value, json};

/// How long each pod's use is measured.
const WINDOW: Duration = Duration::from_millis(3500);

/// The CPU time (user and system) this process has used, from `/proc/self/stat`.
fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // The fields after the command name (which may hold spaces) start at field 3, `state`.
    let after_name = &stat[stat.rfind(')').expect("a command name") + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // USER_HZ, which Linux fixes at 100 for user space.
    Duration::from_millis(ticks * 10)
}

/// Runs `spin` as a pod (with `limits`, when given) and returns the cores
/// the process used on average over [`WINDOW`] while it ran.
async fn cores_used(runtime: &Runtime, images: &Arc<WorkloadImages>, uid: &str, limits: Option<Value>) -> f64 {
    let mut container = json!({"name": "main", "image": "spin:1"});
    if let Some(limits) = limits {
        container["resources"] = json!({"limits": limits});
    }
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": uid, "namespace": "team-a", "uid": uid},
        "spec": {"containers": [container]}});
    let worker = PodWorker::start(runtime.clone(), images.clone(), &pod);
    status_where(&worker, Duration::from_secs(30), |s| s["containerStatuses"][0]["state"]["running"].is_object()).await;
    // Past the start (compiling, instantiating).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (cpu, wall) = (process_cpu(), Instant::now());
    tokio::time::sleep(WINDOW).await;
    let (cpu, wall) = (process_cpu() - cpu, wall.elapsed());
    assert!(worker.status().borrow()["containerStatuses"][0]["state"]["running"].is_object(), "spin ran throughout");
    worker.stop(Duration::from_secs(2)).await;
    cpu.as_secs_f64() / wall.as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_loop_is_held_to_its_cpu_limit() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime(dir.path());
    let images = WorkloadImages::new();
    let free = cores_used(&runtime, &images, "spin-free", None).await;
    let limited = cores_used(&runtime, &images, "spin-250m", Some(json!({"cpu": "250m"}))).await;
    eprintln!("spin used {free:.3} cores without a CPU limit, {limited:.3} with limits.cpu: 250m (over {WINDOW:?} each)");
    // A loaded machine (other processes busy on its cores) only lowers both figures.
    assert!(limited <= 0.4, "limits.cpu: 250m holds the busy loop to about a quarter of a core: {limited:.3}");
    assert!(limited >= 0.05, "a limited container still runs: {limited:.3}");
    assert!(free >= 0.5 && free >= 2.0 * limited, "without a limit the busy loop takes (nearly) a core: {free:.3}");
}
