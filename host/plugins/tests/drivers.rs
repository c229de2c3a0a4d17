//! The storage-driver and network-driver hosts against the default
//! plug-ins `local-volumes` and `namespace-ipam`, and the hostile network
//! driver of `plugins/`.

use std::collections::BTreeMap;
use std::time::Duration;

use kapsel_plugins::network::{Endpoint, NetworkDriver, NetworkError};
use kapsel_plugins::storage::{StorageDriver, StorageError, VolumeRequest};
use kapsel_plugins::{Grants, Hosted, Limits, PluginError, World, compile, defaults};

fn storage(root: &std::path::Path, config: &[(&str, &str)]) -> Result<StorageDriver, PluginError> {
    let config = config.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    StorageDriver::from_component("local-volumes", &compile(defaults::LOCAL_VOLUMES)?, config, Limits::default(), root)
}

fn request(name: &str, size_bytes: u64) -> VolumeRequest {
    VolumeRequest { namespace: "dev".into(), name: name.into(), size_bytes, parameters: vec![] }
}

#[test]
fn local_volumes_provisions_under_its_root_only_and_accounts_capacity() {
    let root = tempfile::tempdir().unwrap();
    let mut driver = storage(root.path(), &[("capacity", "10Mi")]).unwrap();
    let volume = driver.create_volume(&request("data", 4 << 20)).unwrap().unwrap();
    assert!(volume.size_bytes >= 4 << 20);
    // Idempotent for the same request; a different one under the same name is refused.
    assert_eq!(driver.create_volume(&request("data", 4 << 20)).unwrap().unwrap(), volume);
    assert_eq!(driver.create_volume(&request("data", 5 << 20)).unwrap(), Err(StorageError::AlreadyExists));
    match driver.create_volume(&request("big", 8 << 20)).unwrap() {
        Err(StorageError::InsufficientCapacity(left)) => assert_eq!(left, (10 << 20) - volume.size_bytes),
        other => panic!("expected insufficient capacity, got {other:?}"),
    }
    let mount = driver.attach(&volume.id, "node-a").unwrap().unwrap();
    assert!(!mount.path.starts_with('/') && !mount.path.contains(".."), "{}", mount.path);
    // The directory is on the host, under the granted root.
    assert!(root.path().join(&mount.path).is_dir(), "{} not under {}", mount.path, root.path().display());
    assert!(matches!(driver.delete_volume(&volume.id).unwrap(), Err(StorageError::Invalid(_))), "attached volumes are not deleted");
    driver.detach(&volume.id, "node-a").unwrap().unwrap();
    driver.delete_volume(&volume.id).unwrap().unwrap();
    assert!(!root.path().join(&mount.path).exists());

    // A fresh instance (a restart) finds its ledger under the root.
    let kept = driver.create_volume(&request("kept", 1 << 20)).unwrap().unwrap();
    drop(driver);
    let mut again = storage(root.path(), &[("capacity", "10Mi")]).unwrap();
    assert_eq!(again.create_volume(&request("kept", 1 << 20)).unwrap().unwrap(), kept);
}

#[test]
fn a_storage_driver_is_refused_when_it_does_not_fit() {
    let root = tempfile::tempdir().unwrap();
    match storage(root.path(), &[("capacity", "lots")]) {
        Err(PluginError::Config(message)) => assert!(message.contains("capacity"), "{message}"),
        other => panic!("expected a configuration error, got {other:?}"),
    }
    // A scheduler extension is not a storage driver.
    let spread = compile(defaults::SPREAD).unwrap();
    match StorageDriver::from_component("x", &spread, vec![], Limits::default(), root.path()) {
        Err(PluginError::Rejected(message)) => assert!(message.contains("storage-driver"), "{message}"),
        other => panic!("expected a rejection, got {other:?}"),
    }
}

fn ipam(networks: BTreeMap<String, kapsel_plugins::network::Network>) -> NetworkDriver {
    NetworkDriver::from_component("namespace-ipam", &compile(defaults::NAMESPACE_IPAM).unwrap(), vec![], Limits::default(), networks)
        .unwrap()
}

fn endpoint(namespace: &str, pod: &str) -> Endpoint {
    Endpoint { namespace: namespace.into(), pod: pod.into(), labels: vec![] }
}

#[test]
fn namespace_ipam_hands_out_segments_and_addresses_and_isolates_namespaces() {
    let mut driver = ipam(BTreeMap::new());
    let dev = driver.create_network("dev").unwrap().unwrap();
    let qa = driver.create_network("qa").unwrap().unwrap();
    assert!(dev.cidr.ends_with("/24") && dev.cidr != qa.cidr, "{dev:?} {qa:?}");
    assert_eq!(driver.create_network("dev").unwrap().unwrap(), dev, "a repeat returns the same segment");
    let web = driver.attach_pod("dev", "web").unwrap().unwrap();
    assert_eq!(driver.attach_pod("dev", "web").unwrap().unwrap(), web);
    assert_ne!(driver.attach_pod("dev", "db").unwrap().unwrap(), web);
    assert_eq!(driver.attach_pod("nowhere", "x").unwrap(), Err(NetworkError::UnknownNamespace));
    assert!(driver.allow(&endpoint("dev", "web"), &endpoint("dev", "db")).unwrap());
    assert!(!driver.allow(&endpoint("dev", "web"), &endpoint("qa", "api")).unwrap());

    // What the host remembers is restored into a fresh instance: addresses survive.
    let remembered = driver.networks().clone();
    assert_eq!(remembered["dev"].pods["web"], web);
    let mut restarted = ipam(remembered);
    assert_eq!(restarted.attach_pod("dev", "web").unwrap().unwrap(), web);
    let next = restarted.create_network("prod").unwrap().unwrap();
    assert!(next.cidr != dev.cidr && next.cidr != qa.cidr, "a restored segment was handed out again: {next:?}");
}

#[test]
fn a_failing_network_call_discards_the_instance_and_the_next_one_is_restored() {
    let bytes = kapsel_test_guests::HOSTILE_NETWORK.to_vec();
    let component = compile(&bytes).unwrap();
    // Loose enough for the hog to reach its memory cap (64 MiB written) before the deadline on a busy machine.
    let limits = Limits { deadline: Duration::from_millis(500), ..Limits::default() };
    let Hosted::Network(mut driver) =
        kapsel_plugins::load(World::NetworkDriver, "hostile", &component, vec![], limits, Grants::default()).unwrap()
    else {
        panic!("not loaded as a network driver")
    };
    let dev = driver.create_network("dev").unwrap().unwrap();
    assert!(matches!(driver.create_network("trap-1"), Err(PluginError::Trap(_))));
    assert_eq!(driver.create_network("loop-1"), Err(PluginError::Deadline(limits.deadline)));
    assert_eq!(driver.create_network("hog-1"), Err(PluginError::Memory(limits.memory_bytes)));
    // Each failure dropped the instance; the fresh one had "dev" restored, so it is not handed out twice.
    assert_eq!(driver.create_network("dev").unwrap().unwrap(), dev);
    assert_ne!(driver.create_network("qa").unwrap().unwrap(), dev);
}
