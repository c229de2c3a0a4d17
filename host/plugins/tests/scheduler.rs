//! The scheduler-extension host against real components: the default
//! plug-ins embedded by the build, and the `hostile` guest of `plugins/`
//! that loops, hogs memory, traps and floods the log on purpose.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kapsel_plugins::scheduler::{NodeSummary, PodSummary, Resources, SchedulerExtension};
use kapsel_plugins::{Limits, PluginError, defaults};

const ZONE: &str = "topology.kubernetes.io/zone";

fn resources(cpu_millicores: u64, memory_bytes: u64) -> Resources {
    Resources { cpu_millicores, memory_bytes, storage_bytes: 0 }
}

fn node(name: &str, zone: &str, requested_cpu: u64) -> NodeSummary {
    NodeSummary {
        name: name.into(),
        labels: vec![(ZONE.into(), zone.into())],
        taints: vec![],
        allocatable: resources(4000, 8 << 30),
        requested: resources(requested_cpu, 1 << 30),
        ready: true,
        pods: vec![],
    }
}

fn pod(name: &str, cpu: u64) -> PodSummary {
    PodSummary {
        namespace: "dev".into(),
        name: name.into(),
        labels: vec![("app".into(), "web".into())],
        requests: resources(cpu, 256 << 20),
        node_selector: vec![],
        tolerations: vec![],
    }
}

/// Filter, score and bind the way the scheduler will: the best-scoring feasible node.
fn place(extension: &mut SchedulerExtension, pod: &PodSummary, nodes: usize) -> u32 {
    let candidates: Vec<u32> = (0..nodes as u32).collect();
    let feasible: Vec<u32> = extension.filter(pod, &candidates).unwrap().feasible;
    let scores = extension.score(pod, &feasible).unwrap();
    let (best, _) = scores.iter().copied().max_by_key(|&(index, score)| (score, std::cmp::Reverse(index))).expect("a feasible node");
    extension.pod_bound(pod, best).unwrap();
    best
}

fn hostile(mode: &str, limits: Limits) -> SchedulerExtension {
    SchedulerExtension::load("hostile", kapsel_test_guests::HOSTILE, vec![("mode".into(), mode.into())], limits).unwrap()
}

#[test]
fn spread_spreads_a_workload_across_zones() {
    let mut spread = SchedulerExtension::load("spread", defaults::SPREAD, vec![], Limits::default()).unwrap();
    let nodes =
        vec![node("a1", "a", 0), node("a2", "a", 0), node("b1", "b", 0), node("b2", "b", 0), node("c1", "c", 0), node("c2", "c", 0)];
    spread.update_nodes(nodes.clone()).unwrap();
    let mut per_zone: BTreeMap<String, usize> = BTreeMap::new();
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..6 {
        let index = place(&mut spread, &pod(&format!("web-{i}"), 100), nodes.len()) as usize;
        *per_zone.entry(nodes[index].labels[0].1.clone()).or_default() += 1;
        *per_node.entry(nodes[index].name.clone()).or_default() += 1;
    }
    assert_eq!(per_zone.values().copied().collect::<Vec<_>>(), [2, 2, 2], "{per_zone:?}");
    assert!(per_node.values().all(|&n| n == 1), "{per_node:?}");
}

#[test]
fn binpack_fills_the_fullest_node_that_fits() {
    let mut binpack = SchedulerExtension::load("binpack", defaults::BINPACK, vec![], Limits::default()).unwrap();
    binpack.update_nodes(vec![node("empty", "a", 0), node("half", "a", 2000), node("full", "a", 3900)]).unwrap();
    // 500m does not fit on "full" (3900 of 4000 used): it goes to "half", the fullest that fits.
    let filtered = binpack.filter(&pod("big", 500), &[0, 1, 2]).unwrap();
    assert_eq!(filtered.feasible, [0, 1]);
    let rejected: Vec<u32> = filtered.rejected.iter().map(|r| r.index).collect();
    assert_eq!(rejected, [2]);
    assert!(!filtered.rejected[0].reason.is_empty());
    assert_eq!(place(&mut binpack, &pod("big", 500), 2), 1);
}

#[test]
fn what_is_not_a_scheduler_extension_is_refused_with_a_reason() {
    let refuse = |bytes: &[u8]| match SchedulerExtension::load("x", bytes, vec![], Limits::default()) {
        Err(PluginError::Rejected(message)) => message,
        other => panic!("expected a rejection, got {other:?}"),
    };
    assert!(refuse(b"\0asm\x01\0\0\0").contains("core WebAssembly module"));
    assert!(refuse(b"definitely not wasm").contains("not a WebAssembly binary"));
    assert!(refuse(&defaults::SPREAD[..defaults::SPREAD.len() / 2]).contains("not a valid component"));
    let wrong_world = refuse(defaults::LOCAL_VOLUMES);
    assert!(wrong_world.contains("scheduler-extension"), "{wrong_world}");
    // Right exports, but it reaches for files: linking would work, the grant check refuses it.
    let greedy = kapsel_test_guests::GREEDY.to_vec();
    let refused = refuse(&greedy);
    assert!(refused.starts_with("imports ") && refused.contains("wasi:filesystem/preopens"), "{refused}");
    assert!(refused.ends_with("which a scheduler extension is not granted"), "{refused}");
    match SchedulerExtension::load("spread", defaults::SPREAD, vec![("no-such-key".into(), "1".into())], Limits::default()) {
        Err(PluginError::Config(message)) => assert!(message.contains("no-such-key"), "{message}"),
        other => panic!("expected a configuration error, got {other:?}"),
    }
}

#[test]
fn a_looping_call_is_stopped_at_its_deadline_and_fails_alone() {
    let limits = Limits { deadline: Duration::from_millis(50), ..Limits::default() };
    let mut looping = hostile("loop", limits);
    looping.update_nodes(vec![node("a1", "a", 0)]).unwrap();
    let started = Instant::now();
    assert_eq!(looping.score(&pod("p", 1), &[0]), Err(PluginError::Deadline(limits.deadline)));
    assert!(started.elapsed() < Duration::from_secs(2), "stopped after {:?}", started.elapsed());
    // The next call gets a fresh instance, configured and given the snapshot again.
    assert_eq!(looping.filter(&pod("p", 1), &[0]).unwrap().feasible, [0]);
}

#[test]
fn a_memory_hog_fails_at_its_cap() {
    // A deadline far from the default, so that a machine busy enough to
    // slow the guest's growing cannot turn the memory failure into a timeout.
    let limits = Limits { deadline: Duration::from_secs(10), ..Limits::default() };
    let mut hog = hostile("alloc", limits);
    assert_eq!(hog.score(&pod("p", 1), &[0]), Err(PluginError::Memory(limits.memory_bytes)));
    assert!(hog.filter(&pod("p", 1), &[0]).is_ok());
}

#[test]
fn a_trap_fails_that_call_only() {
    let mut trapping = hostile("trap", Limits::default());
    assert!(matches!(trapping.score(&pod("p", 1), &[0]), Err(PluginError::Trap(_))));
    assert!(trapping.filter(&pod("p", 1), &[0]).is_ok());
}

#[test]
fn a_log_flood_is_cut_and_bounded() {
    // A thousand 1 MiB lines: each is cut to a few KiB on the host side; a
    // tight deadline stops the flood, a loose one lets it finish.
    let mut flooding = hostile("log-flood", Limits { deadline: Duration::from_secs(30), ..Limits::default() });
    assert_eq!(flooding.score(&pod("p", 1), &[0, 1]).unwrap(), [(0, 50), (1, 50)]);
    let mut stopped = hostile("log-flood", Limits { deadline: Duration::from_millis(20), ..Limits::default() });
    assert_eq!(stopped.score(&pod("p", 1), &[0]), Err(PluginError::Deadline(Duration::from_millis(20))));
}

#[test]
fn compiled_components_are_cached_and_damaged_entries_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let cache = kapsel_plugins::CompileCache::new(dir.path());
    let digest = "sha256:0123";
    let first = cache.compile(digest, defaults::BINPACK).unwrap();
    let cached = cache.path_for(digest);
    assert!(cached.exists(), "nothing cached at {}", cached.display());
    // The cached form loads and runs like the compiled one.
    let again = cache.compile(digest, defaults::BINPACK).unwrap();
    for component in [&first, &again] {
        let mut binpack = SchedulerExtension::from_component("binpack", component, vec![], Limits::default()).unwrap();
        binpack.update_nodes(vec![node("n", "a", 0)]).unwrap();
        assert_eq!(binpack.filter(&pod("p", 100), &[0]).unwrap().feasible, [0]);
    }
    // A damaged entry is dropped and the component compiled again.
    std::fs::write(&cached, b"not compiled code").unwrap();
    cache.compile(digest, defaults::BINPACK).unwrap();
    assert_ne!(std::fs::read(&cached).unwrap(), b"not compiled code");
    // So is one with a flipped bit inside the compiled code, which no header check sees: the checksum does.
    let good = std::fs::read(&cached).unwrap();
    let mut flipped = good.clone();
    flipped[good.len() / 2] ^= 0x10;
    std::fs::write(&cached, &flipped).unwrap();
    let recompiled = cache.compile(digest, defaults::BINPACK).unwrap();
    assert_eq!(std::fs::read(&cached).unwrap().len(), good.len());
    assert_ne!(std::fs::read(&cached).unwrap(), flipped);
    let mut binpack = SchedulerExtension::from_component("binpack", &recompiled, vec![], Limits::default()).unwrap();
    binpack.update_nodes(vec![node("n", "a", 0)]).unwrap();
    assert_eq!(binpack.filter(&pod("p", 100), &[0]).unwrap().feasible, [0]);
}
