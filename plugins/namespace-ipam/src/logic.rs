//! The namespace IPAM, free of any Wasm bindings so it can be tested
//! natively.
//!
//! The pool (default `10.64.0.0/16`) is cut into /24 segments; each namespace
//! network gets the lowest free one. In a segment `x.y.z.0/24`, `.1` is the
//! gateway, `.2`–`.254` go to pods (lowest free first), `.0` and `.255` are
//! never handed out. Traffic within a namespace is allowed; across
//! namespaces it is denied unless `allow-cross-namespace` is `true`.
//!
//! All state is in memory. After a restart the host re-plays it with
//! `restore` (segment and pod addresses as handed out before), so addresses
//! of running pods never change.

#![forbid(unsafe_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;

/// Config key: the pool of addresses, an IPv4 CIDR with a prefix of at most 24.
pub const KEY_POOL: &str = "pool";
/// Config key: `true` to allow traffic between namespaces.
pub const KEY_ALLOW_CROSS_NAMESPACE: &str = "allow-cross-namespace";
/// Default of `pool`.
pub const DEFAULT_POOL: &str = "10.64.0.0/16";

/// First and last host number handed to pods in a segment.
const FIRST_POD: u8 = 2;
const LAST_POD: u8 = 254;
/// The gateway's host number in a segment.
const GATEWAY: u8 = 1;

/// Why an operation failed; mirrors the WIT `network-error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkError {
    /// No free segment or address.
    Exhausted,
    /// The namespace has no network.
    UnknownNamespace,
    /// The request is invalid.
    Invalid(String),
}

/// An IPv4 network: base address and prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    base: u32,
    prefix: u8,
}

impl Cidr {
    /// Parses `a.b.c.d/p`; the host bits must be zero.
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let (addr, prefix) = text.split_once('/').ok_or_else(|| format!("`{text}` is not a CIDR such as `10.64.0.0/16`"))?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| format!("`{addr}` is not an IPv4 address"))?;
        let prefix: u8 =
            prefix.parse().ok().filter(|p| *p <= 32).ok_or_else(|| format!("`/{prefix}` is not a prefix length from 0 to 32"))?;
        let base = u32::from(addr);
        let cidr = Cidr { base: base & mask(prefix), prefix };
        if cidr.base != base {
            return Err(format!("`{text}` has host bits set; did you mean `{cidr}`?"));
        }
        Ok(cidr)
    }

    fn contains(&self, addr: u32) -> bool {
        addr & mask(self.prefix) == self.base
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.base), self.prefix)
    }
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) }
}

/// The parsed configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// The pool the /24 segments come from.
    pub pool: Cidr,
    /// Whether traffic between namespaces is allowed.
    pub allow_cross_namespace: bool,
}

impl Default for Config {
    fn default() -> Config {
        Config { pool: Cidr::parse(DEFAULT_POOL).expect("the default pool is valid"), allow_cross_namespace: false }
    }
}

impl Config {
    /// Parses the `Plugin` config; unknown keys and bad values are errors
    /// naming the key.
    pub fn parse(pairs: &[(String, String)]) -> Result<Config, String> {
        let mut config = Config::default();
        for (key, value) in pairs {
            let value = value.trim();
            match key.as_str() {
                KEY_POOL => {
                    let pool = Cidr::parse(value).map_err(|e| format!("{KEY_POOL}: {e}"))?;
                    if pool.prefix > 24 {
                        return Err(format!("{KEY_POOL}: `{value}` is smaller than one /24 segment; use a prefix of 24 or less"));
                    }
                    config.pool = pool;
                }
                KEY_ALLOW_CROSS_NAMESPACE => {
                    config.allow_cross_namespace = match value {
                        "true" => true,
                        "false" => false,
                        _ => return Err(format!("{KEY_ALLOW_CROSS_NAMESPACE}: expected `true` or `false`, got `{value}`")),
                    }
                }
                other => return Err(format!("unknown config key `{other}` (known: {KEY_POOL}, {KEY_ALLOW_CROSS_NAMESPACE})")),
            }
        }
        Ok(config)
    }

    /// How many /24 segments the pool holds.
    pub fn segments(&self) -> u32 {
        1 << (24 - self.pool.prefix)
    }
}

/// A namespace's segment, as handed out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// `x.y.z.0/24`.
    pub cidr: String,
    /// `x.y.z.1`.
    pub gateway: String,
}

/// One side of a connection.
#[derive(Debug, Clone, Default)]
pub struct Endpoint {
    /// Namespace.
    pub namespace: String,
    /// Pod name.
    pub pod: String,
}

/// A namespace network: its segment number and the pods' host numbers.
#[derive(Debug, Default)]
struct Network {
    segment: u32,
    pods: BTreeMap<String, u8>,
    used: BTreeSet<u8>,
}

/// The IPAM state.
#[derive(Debug, Default)]
pub struct Ipam {
    config: Config,
    networks: BTreeMap<String, Network>,
    /// Segment numbers in use.
    used: BTreeSet<u32>,
}

impl Ipam {
    /// Applies a new configuration. The pool cannot change while networks
    /// exist (their addresses are in use).
    pub fn configure(&mut self, config: Config) -> Result<(), String> {
        if config.pool != self.config.pool && !self.networks.is_empty() {
            return Err(format!(
                "{KEY_POOL}: cannot change from {} to {} while {} namespace networks exist",
                self.config.pool,
                config.pool,
                self.networks.len()
            ));
        }
        self.config = config;
        Ok(())
    }

    /// The number of namespace networks.
    pub fn network_count(&self) -> usize {
        self.networks.len()
    }

    fn segment_base(&self, segment: u32) -> u32 {
        self.config.pool.base + (segment << 8)
    }

    fn segment_of(&self, network: &Network) -> Segment {
        let base = self.segment_base(network.segment);
        Segment { cidr: format!("{}/24", Ipv4Addr::from(base)), gateway: Ipv4Addr::from(base + u32::from(GATEWAY)).to_string() }
    }

    fn address(&self, network: &Network, host: u8) -> String {
        Ipv4Addr::from(self.segment_base(network.segment) + u32::from(host)).to_string()
    }

    /// Gives the namespace the lowest free segment; a repeat returns the
    /// same one.
    pub fn create_network(&mut self, namespace: &str) -> Result<Segment, NetworkError> {
        validate_name("namespace", namespace)?;
        if let Some(network) = self.networks.get(namespace) {
            return Ok(self.segment_of(network));
        }
        let segment = (0..self.config.segments()).find(|s| !self.used.contains(s)).ok_or(NetworkError::Exhausted)?;
        self.used.insert(segment);
        let network = Network { segment, ..Network::default() };
        let answer = self.segment_of(&network);
        self.networks.insert(namespace.to_owned(), network);
        Ok(answer)
    }

    /// Releases the namespace's segment and addresses; unknown namespaces
    /// are fine.
    pub fn delete_network(&mut self, namespace: &str) {
        if let Some(network) = self.networks.remove(namespace) {
            self.used.remove(&network.segment);
        }
    }

    /// Gives the pod the lowest free address of its namespace's segment; a
    /// repeat returns the same one.
    pub fn attach_pod(&mut self, namespace: &str, pod: &str) -> Result<String, NetworkError> {
        validate_name("pod", pod)?;
        let network = self.networks.get_mut(namespace).ok_or(NetworkError::UnknownNamespace)?;
        let host = match network.pods.get(pod) {
            Some(&host) => host,
            None => {
                let host = (FIRST_POD..=LAST_POD).find(|h| !network.used.contains(h)).ok_or(NetworkError::Exhausted)?;
                network.used.insert(host);
                network.pods.insert(pod.to_owned(), host);
                host
            }
        };
        Ok(self.address(&self.networks[namespace], host))
    }

    /// Releases the pod's address; a pod without one is fine.
    pub fn detach_pod(&mut self, namespace: &str, pod: &str) -> Result<(), NetworkError> {
        let network = self.networks.get_mut(namespace).ok_or(NetworkError::UnknownNamespace)?;
        if let Some(host) = network.pods.remove(pod) {
            network.used.remove(&host);
        }
        Ok(())
    }

    /// Re-establishes a namespace network and pod addresses handed out
    /// before (after a restart). All or nothing: on any conflict nothing
    /// changes. Restoring what is already there is a no-op.
    pub fn restore(&mut self, namespace: &str, segment: &Segment, pods: &[(String, String)]) -> Result<(), NetworkError> {
        validate_name("namespace", namespace)?;
        let invalid = |m: String| NetworkError::Invalid(format!("restore {namespace}: {m}"));
        let cidr = Cidr::parse(&segment.cidr).map_err(invalid)?;
        if cidr.prefix != 24 || !self.config.pool.contains(cidr.base) {
            return Err(invalid(format!("segment {cidr} is not a /24 of the pool {}", self.config.pool)));
        }
        let number = (cidr.base - self.config.pool.base) >> 8;
        let gateway = Ipv4Addr::from(cidr.base + u32::from(GATEWAY)).to_string();
        if segment.gateway != gateway {
            return Err(invalid(format!("gateway {} of {cidr} should be {gateway}", segment.gateway)));
        }
        match self.networks.get(namespace) {
            Some(network) if network.segment != number => {
                let current = self.segment_of(network).cidr;
                return Err(invalid(format!("the namespace already has segment {current}")));
            }
            None if self.used.contains(&number) => {
                let owner = self.networks.iter().find(|(_, n)| n.segment == number).map(|(ns, _)| ns.as_str()).unwrap_or("?");
                return Err(invalid(format!("segment {cidr} belongs to namespace {owner}")));
            }
            _ => {}
        }
        // Check every pod before changing anything.
        let empty = Network::default();
        let existing = self.networks.get(namespace).unwrap_or(&empty);
        let mut taken: BTreeMap<u8, &str> = existing.pods.iter().map(|(pod, &host)| (host, pod.as_str())).collect();
        let mut hosts = Vec::with_capacity(pods.len());
        for (pod, address) in pods {
            validate_name("pod", pod)?;
            let addr: Ipv4Addr = address.parse().map_err(|_| invalid(format!("`{address}` of pod {pod} is not an IPv4 address")))?;
            let addr = u32::from(addr);
            let host = (addr & 0xff) as u8;
            if !cidr.contains(addr) || !(FIRST_POD..=LAST_POD).contains(&host) {
                return Err(invalid(format!("address {address} of pod {pod} is not a pod address of {cidr}")));
            }
            if let Some(&current) = existing.pods.get(pod.as_str())
                && current != host
            {
                return Err(invalid(format!("pod {pod} already has address {}", Ipv4Addr::from(cidr.base + u32::from(current)))));
            }
            match taken.insert(host, pod.as_str()) {
                Some(other) if other != pod => return Err(invalid(format!("address {address} is taken by pod {other}"))),
                _ => {}
            }
            hosts.push((pod.clone(), host));
        }
        self.used.insert(number);
        let network = self.networks.entry(namespace.to_owned()).or_insert_with(|| Network { segment: number, ..Network::default() });
        for (pod, host) in hosts {
            network.used.insert(host);
            network.pods.insert(pod, host);
        }
        Ok(())
    }

    /// Whether `from` may reach `to`: always within a namespace, across
    /// namespaces only when configured.
    pub fn allow(&self, from: &Endpoint, to: &Endpoint) -> bool {
        from.namespace == to.namespace || self.config.allow_cross_namespace
    }
}

fn validate_name(what: &str, name: &str) -> Result<(), NetworkError> {
    if name.is_empty() || name.len() > 253 || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(NetworkError::Invalid(format!("{what} name `{name}` is empty, too long or has blanks")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(namespace: &str, pod: &str) -> Endpoint {
        Endpoint { namespace: namespace.to_owned(), pod: pod.to_owned() }
    }

    fn ipam(pairs: &[(&str, &str)]) -> Ipam {
        let pairs: Vec<(String, String)> = pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        let mut ipam = Ipam::default();
        ipam.configure(Config::parse(&pairs).unwrap()).unwrap();
        ipam
    }

    #[test]
    fn each_namespace_gets_its_own_24() {
        let mut ipam = ipam(&[]);
        let dev = ipam.create_network("dev").unwrap();
        let prod = ipam.create_network("prod").unwrap();
        assert_eq!(dev, Segment { cidr: "10.64.0.0/24".into(), gateway: "10.64.0.1".into() });
        assert_eq!(prod, Segment { cidr: "10.64.1.0/24".into(), gateway: "10.64.1.1".into() });
        assert_eq!(ipam.create_network("dev").unwrap(), dev, "a repeat returns the same segment");
        assert_eq!(ipam.network_count(), 2);
    }

    #[test]
    fn pods_get_distinct_addresses_in_their_segment() {
        let mut ipam = ipam(&[]);
        ipam.create_network("dev").unwrap();
        ipam.create_network("prod").unwrap();
        let mut seen = BTreeSet::new();
        for n in 0..253 {
            let addr = ipam.attach_pod("dev", &format!("pod-{n}")).unwrap();
            assert!(addr.starts_with("10.64.0."), "{addr}");
            assert!(seen.insert(addr), "addresses are distinct");
        }
        assert!(!seen.contains("10.64.0.0") && !seen.contains("10.64.0.1") && !seen.contains("10.64.0.255"));
        assert_eq!(ipam.attach_pod("dev", "one-too-many"), Err(NetworkError::Exhausted));
        assert_eq!(ipam.attach_pod("dev", "pod-7").unwrap(), "10.64.0.9", "a repeat returns the same address");
        assert_eq!(ipam.attach_pod("prod", "pod-0").unwrap(), "10.64.1.2", "the same pod name elsewhere is another pod");
    }

    #[test]
    fn released_addresses_and_segments_are_reused() {
        let mut ipam = ipam(&[]);
        ipam.create_network("dev").unwrap();
        assert_eq!(ipam.attach_pod("dev", "a").unwrap(), "10.64.0.2");
        assert_eq!(ipam.attach_pod("dev", "b").unwrap(), "10.64.0.3");
        ipam.detach_pod("dev", "a").unwrap();
        ipam.detach_pod("dev", "a").unwrap();
        assert_eq!(ipam.attach_pod("dev", "c").unwrap(), "10.64.0.2");
        ipam.delete_network("dev");
        ipam.delete_network("dev");
        assert_eq!(ipam.attach_pod("dev", "d"), Err(NetworkError::UnknownNamespace));
        assert_eq!(ipam.detach_pod("dev", "d"), Err(NetworkError::UnknownNamespace));
        ipam.create_network("test").unwrap();
        assert_eq!(ipam.attach_pod("test", "a").unwrap(), "10.64.0.2", "a fresh network starts empty");
    }

    #[test]
    fn the_pool_runs_out() {
        let mut ipam = ipam(&[("pool", "192.168.4.0/23")]);
        assert_eq!(ipam.create_network("a").unwrap().cidr, "192.168.4.0/24");
        assert_eq!(ipam.create_network("b").unwrap().cidr, "192.168.5.0/24");
        assert_eq!(ipam.create_network("c"), Err(NetworkError::Exhausted));
        ipam.delete_network("a");
        assert_eq!(ipam.create_network("c").unwrap().cidr, "192.168.4.0/24");
    }

    #[test]
    fn cross_namespace_traffic_is_denied_by_default() {
        let ipam = ipam(&[]);
        assert!(ipam.allow(&endpoint("dev", "a"), &endpoint("dev", "b")));
        assert!(!ipam.allow(&endpoint("dev", "a"), &endpoint("prod", "b")));
        assert!(!ipam.allow(&endpoint("prod", "b"), &endpoint("dev", "a")));
        let open = self::ipam(&[("allow-cross-namespace", "true")]);
        assert!(open.allow(&endpoint("dev", "a"), &endpoint("prod", "b")));
    }

    #[test]
    fn restore_keeps_addresses_across_a_restart() {
        // Before the restart: a, b, c created, a deleted, d created (reusing
        // a's segment), with pod churn inside.
        let mut before = ipam(&[]);
        for ns in ["a", "b", "c"] {
            before.create_network(ns).unwrap();
        }
        before.delete_network("a");
        before.create_network("d").unwrap();
        for pod in ["p1", "p2", "p3"] {
            before.attach_pod("b", pod).unwrap();
        }
        before.detach_pod("b", "p1").unwrap();
        let survivors: Vec<(&str, Vec<&str>)> = vec![("b", vec!["p2", "p3"]), ("c", vec![]), ("d", vec![])];
        type Restored = (String, Segment, Vec<(String, String)>);
        let state: Vec<Restored> = survivors
            .iter()
            .map(|(ns, pods)| {
                let segment = before.create_network(ns).unwrap();
                let pods = pods.iter().map(|p| ((*p).to_owned(), before.attach_pod(ns, p).unwrap())).collect();
                ((*ns).to_owned(), segment, pods)
            })
            .collect();
        // After: a fresh instance, restored in any order, hands out the same
        // answers and new allocations avoid the restored ones.
        let mut after = ipam(&[]);
        for (ns, segment, pods) in state.iter().rev() {
            after.restore(ns, segment, pods).unwrap();
        }
        for (ns, segment, pods) in &state {
            assert_eq!(&after.create_network(ns).unwrap(), segment);
            for (pod, address) in pods {
                assert_eq!(&after.attach_pod(ns, pod).unwrap(), address);
            }
        }
        assert_eq!(after.create_network("e").unwrap().cidr, "10.64.3.0/24", "segments 0 to 2 are restored");
        assert_eq!(after.attach_pod("b", "p4").unwrap(), "10.64.1.2", "p1's old address is free again");
        // Restoring again is a no-op.
        after.restore("b", &state[0].1, &state[0].2).unwrap();
    }

    #[test]
    fn restore_refuses_conflicts_and_changes_nothing() {
        let mut ipam = ipam(&[]);
        let dev = ipam.create_network("dev").unwrap();
        ipam.attach_pod("dev", "a").unwrap();
        let seg = |cidr: &str, gateway: &str| Segment { cidr: cidr.into(), gateway: gateway.into() };
        let pods = |items: &[(&str, &str)]| items.iter().map(|(p, a)| ((*p).to_owned(), (*a).to_owned())).collect::<Vec<_>>();
        let invalid = |r: Result<(), NetworkError>| match r {
            Err(NetworkError::Invalid(m)) => m,
            other => panic!("expected invalid, got {other:?}"),
        };
        assert!(invalid(ipam.restore("prod", &dev, &[])).contains("belongs to namespace dev"));
        assert!(invalid(ipam.restore("dev", &seg("10.64.5.0/24", "10.64.5.1"), &[])).contains("already has segment"));
        assert!(invalid(ipam.restore("x", &seg("10.99.0.0/24", "10.99.0.1"), &[])).contains("not a /24 of the pool"));
        assert!(invalid(ipam.restore("x", &seg("10.64.8.0/25", "10.64.8.1"), &[])).contains("not a /24"));
        assert!(invalid(ipam.restore("x", &seg("10.64.8.0/24", "10.64.8.9"), &[])).contains("gateway"));
        assert!(invalid(ipam.restore("dev", &dev, &pods(&[("b", "10.64.0.2")]))).contains("taken by pod a"));
        assert!(invalid(ipam.restore("dev", &dev, &pods(&[("a", "10.64.0.7")]))).contains("already has address 10.64.0.2"));
        assert!(invalid(ipam.restore("dev", &dev, &pods(&[("b", "10.64.1.7")]))).contains("not a pod address"));
        assert!(invalid(ipam.restore("dev", &dev, &pods(&[("b", "10.64.0.255")]))).contains("not a pod address"));
        assert!(invalid(ipam.restore("dev", &dev, &pods(&[("b", "10.64.0.1")]))).contains("not a pod address"));
        let clash = pods(&[("b", "10.64.0.9"), ("c", "10.64.0.9")]);
        assert!(invalid(ipam.restore("x", &seg("10.64.8.0/24", "10.64.8.1"), &clash)).contains("not a pod address"));
        let clash = pods(&[("b", "10.64.8.9"), ("c", "10.64.8.9")]);
        assert!(invalid(ipam.restore("x", &seg("10.64.8.0/24", "10.64.8.1"), &clash)).contains("taken by pod b"));
        // Nothing changed.
        assert_eq!(ipam.network_count(), 1);
        assert_eq!(ipam.attach_pod("dev", "b").unwrap(), "10.64.0.3");
        assert_eq!(ipam.create_network("x").unwrap().cidr, "10.64.1.0/24");
    }

    #[test]
    fn the_pool_cannot_change_under_live_networks() {
        let mut ipam = ipam(&[]);
        ipam.create_network("dev").unwrap();
        let other = Config::parse(&[("pool".into(), "10.65.0.0/16".into())]).unwrap();
        assert!(ipam.configure(other).unwrap_err().contains("cannot change"));
        let open = Config { allow_cross_namespace: true, ..Config::default() };
        ipam.configure(open).unwrap();
        ipam.delete_network("dev");
        ipam.configure(other).unwrap();
        assert_eq!(ipam.create_network("dev").unwrap().cidr, "10.65.0.0/24");
    }

    #[test]
    fn config_is_validated() {
        let parse = |k: &str, v: &str| Config::parse(&[(k.to_owned(), v.to_owned())]);
        assert_eq!(Config::parse(&[]).unwrap(), Config::default());
        assert_eq!(Config::default().segments(), 256);
        assert_eq!(parse("pool", "10.0.0.0/8").unwrap().segments(), 65536);
        assert!(parse("pool", "10.64.1.0/16").unwrap_err().contains("did you mean `10.64.0.0/16`"));
        assert!(parse("pool", "10.64.0.0/25").unwrap_err().contains("smaller than one /24"));
        assert!(parse("pool", "10.64.0.0").unwrap_err().starts_with("pool"));
        assert!(parse("pool", "10.64.0.300/16").unwrap_err().starts_with("pool"));
        assert!(parse("pool", "10.64.0.0/33").unwrap_err().starts_with("pool"));
        assert!(parse("allow-cross-namespace", "yes").unwrap_err().starts_with("allow-cross-namespace"));
        assert!(parse("cidr", "x").unwrap_err().contains("unknown config key `cidr`"));
    }

    #[test]
    fn names_are_checked() {
        let mut ipam = ipam(&[]);
        assert!(matches!(ipam.create_network(""), Err(NetworkError::Invalid(_))));
        ipam.create_network("dev").unwrap();
        assert!(matches!(ipam.attach_pod("dev", "a b"), Err(NetworkError::Invalid(_))));
    }
}
