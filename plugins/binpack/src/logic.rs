//! The bin-packing policy, free of any Wasm bindings so it can be tested
//! natively.
//!
//! `filter` rejects nodes that are not ready or where the pod's requests do
//! not fit in what is left (allocatable minus requested). `score` is the
//! weighted utilisation of the node *after* placing the pod (most-allocated):
//! the fuller a node would be, the higher it scores, so pods fill nodes one
//! after the other and whole nodes stay free for large pods or for powering
//! down.

#![forbid(unsafe_code)]

/// Config key: weight of CPU in the score.
pub const KEY_CPU_WEIGHT: &str = "cpu-weight";
/// Config key: weight of memory in the score.
pub const KEY_MEMORY_WEIGHT: &str = "memory-weight";
/// Config key: weight of storage in the score.
pub const KEY_STORAGE_WEIGHT: &str = "storage-weight";

/// Amounts of CPU, memory and storage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resources {
    /// CPU in millicores.
    pub cpu_millicores: u64,
    /// Memory in bytes.
    pub memory_bytes: u64,
    /// Storage in bytes; on a node, 0 allocatable means "not accounted".
    pub storage_bytes: u64,
}

impl Resources {
    fn add(&mut self, other: &Resources) {
        self.cpu_millicores = self.cpu_millicores.saturating_add(other.cpu_millicores);
        self.memory_bytes = self.memory_bytes.saturating_add(other.memory_bytes);
        self.storage_bytes = self.storage_bytes.saturating_add(other.storage_bytes);
    }
}

/// A node of the snapshot, as far as packing cares.
#[derive(Debug, Clone, Default)]
pub struct Node {
    /// Name.
    pub name: String,
    /// Whether the node is ready.
    pub ready: bool,
    /// Capacity offered to pods.
    pub allocatable: Resources,
    /// Requests of the pods bound to the node.
    pub requested: Resources,
}

/// A filter verdict for one candidate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Index into the snapshot.
    pub index: u32,
    /// Whether the pod fits there.
    pub feasible: bool,
    /// Why not, when not.
    pub reason: String,
}

/// The parsed configuration: how much each resource counts in the score.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Weight of CPU utilisation (0–100).
    pub cpu_weight: u32,
    /// Weight of memory utilisation (0–100).
    pub memory_weight: u32,
    /// Weight of storage utilisation (0–100), only on nodes that account
    /// storage.
    pub storage_weight: u32,
}

impl Default for Config {
    fn default() -> Config {
        Config { cpu_weight: 1, memory_weight: 1, storage_weight: 0 }
    }
}

impl Config {
    /// Parses the `Plugin` config; unknown keys and bad values are errors
    /// naming the key.
    pub fn parse(pairs: &[(String, String)]) -> Result<Config, String> {
        let mut config = Config::default();
        for (key, value) in pairs {
            let slot = match key.as_str() {
                KEY_CPU_WEIGHT => &mut config.cpu_weight,
                KEY_MEMORY_WEIGHT => &mut config.memory_weight,
                KEY_STORAGE_WEIGHT => &mut config.storage_weight,
                other => {
                    return Err(format!(
                        "unknown config key `{other}` (known: {KEY_CPU_WEIGHT}, {KEY_MEMORY_WEIGHT}, {KEY_STORAGE_WEIGHT})"
                    ));
                }
            };
            *slot = match value.trim().parse::<u32>() {
                Ok(w) if w <= 100 => w,
                _ => return Err(format!("{key}: expected a whole number from 0 to 100, got `{value}`")),
            };
        }
        if config.cpu_weight + config.memory_weight + config.storage_weight == 0 {
            return Err(format!("{KEY_CPU_WEIGHT}, {KEY_MEMORY_WEIGHT}, {KEY_STORAGE_WEIGHT}: at least one weight must be above 0"));
        }
        Ok(config)
    }
}

/// The plug-in's state: configuration and node snapshot.
#[derive(Debug, Default)]
pub struct Binpack {
    config: Config,
    nodes: Vec<Node>,
}

impl Binpack {
    /// Applies a new configuration.
    pub fn configure(&mut self, config: Config) {
        self.config = config;
    }

    /// Replaces the node snapshot.
    pub fn update_nodes(&mut self, nodes: Vec<Node>) {
        self.nodes = nodes;
    }

    /// The number of nodes in the snapshot.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    fn node(&self, index: u32) -> Option<&Node> {
        self.nodes.get(index as usize)
    }

    /// One verdict per candidate: feasible when the node is ready and the
    /// requests fit.
    pub fn filter(&self, requests: &Resources, candidates: &[u32]) -> Vec<Verdict> {
        candidates
            .iter()
            .map(|&index| {
                let reason = match self.node(index) {
                    None => Some(format!("unknown node index {index} (the snapshot has {} nodes)", self.nodes.len())),
                    Some(node) if !node.ready => Some(format!("node {} is not ready", node.name)),
                    Some(node) => misfit(node, requests),
                };
                match reason {
                    None => Verdict { index, feasible: true, reason: String::new() },
                    Some(reason) => Verdict { index, feasible: false, reason },
                }
            })
            .collect()
    }

    /// Scores each node by its weighted utilisation after placing the pod,
    /// 0 (empty) to 100 (full); nodes where it does not fit score 0.
    pub fn score(&self, requests: &Resources, feasible: &[u32]) -> Vec<(u32, u8)> {
        feasible
            .iter()
            .map(|&index| {
                let score = match self.node(index) {
                    Some(node) if misfit(node, requests).is_none() => self.utilisation_after(node, requests),
                    _ => 0.0,
                };
                (index, (score * 100.0).round().clamp(0.0, 100.0) as u8)
            })
            .collect()
    }

    /// Records that a pod with `requests` was bound to the node at `index`;
    /// false for an unknown index.
    pub fn pod_bound(&mut self, requests: &Resources, index: u32) -> bool {
        match self.nodes.get_mut(index as usize) {
            Some(node) => {
                node.requested.add(requests);
                true
            }
            None => false,
        }
    }

    fn utilisation_after(&self, node: &Node, requests: &Resources) -> f64 {
        let c = &self.config;
        let mut terms = vec![
            (c.cpu_weight, node.requested.cpu_millicores, requests.cpu_millicores, node.allocatable.cpu_millicores),
            (c.memory_weight, node.requested.memory_bytes, requests.memory_bytes, node.allocatable.memory_bytes),
        ];
        if node.allocatable.storage_bytes > 0 {
            terms.push((c.storage_weight, node.requested.storage_bytes, requests.storage_bytes, node.allocatable.storage_bytes));
        }
        let (mut sum, mut weights) = (0.0, 0.0);
        for (weight, requested, extra, allocatable) in terms {
            if weight == 0 || allocatable == 0 {
                continue;
            }
            let fraction = (requested.saturating_add(extra) as f64 / allocatable as f64).min(1.0);
            sum += f64::from(weight) * fraction;
            weights += f64::from(weight);
        }
        if weights == 0.0 { 0.0 } else { sum / weights }
    }
}

/// Why `requests` do not fit on `node`, or `None` when they do. Storage is
/// checked only on nodes that account it (allocatable storage above 0).
fn misfit(node: &Node, requests: &Resources) -> Option<String> {
    let free = |allocatable: u64, requested: u64| allocatable.saturating_sub(requested);
    let (a, r) = (&node.allocatable, &node.requested);
    let cpu_free = free(a.cpu_millicores, r.cpu_millicores);
    if requests.cpu_millicores > cpu_free {
        return Some(format!(
            "insufficient cpu on node {}: requested {}m, free {cpu_free}m of {}m",
            node.name, requests.cpu_millicores, a.cpu_millicores
        ));
    }
    let memory_free = free(a.memory_bytes, r.memory_bytes);
    if requests.memory_bytes > memory_free {
        return Some(format!(
            "insufficient memory on node {}: requested {}, free {} of {}",
            node.name,
            bytes(requests.memory_bytes),
            bytes(memory_free),
            bytes(a.memory_bytes)
        ));
    }
    let storage_free = free(a.storage_bytes, r.storage_bytes);
    if a.storage_bytes > 0 && requests.storage_bytes > storage_free {
        return Some(format!(
            "insufficient storage on node {}: requested {}, free {} of {}",
            node.name,
            bytes(requests.storage_bytes),
            bytes(storage_free),
            bytes(a.storage_bytes)
        ));
    }
    None
}

/// Bytes the way Kubernetes quantities read: `2Gi`, `512Mi`, `1000`.
fn bytes(n: u64) -> String {
    for (unit, size) in [("Ti", 1u64 << 40), ("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)] {
        if n >= size && n.is_multiple_of(size) {
            return format!("{}{unit}", n / size);
        }
    }
    n.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GI: u64 = 1 << 30;

    fn node(name: &str, cpu: u64, memory_gi: u64) -> Node {
        Node {
            name: name.to_owned(),
            ready: true,
            allocatable: Resources { cpu_millicores: cpu, memory_bytes: memory_gi * GI, storage_bytes: 0 },
            requested: Resources::default(),
        }
    }

    fn req(cpu: u64, memory_gi: u64) -> Resources {
        Resources { cpu_millicores: cpu, memory_bytes: memory_gi * GI, storage_bytes: 0 }
    }

    fn binpack(nodes: Vec<Node>) -> Binpack {
        let mut b = Binpack::default();
        b.update_nodes(nodes);
        b
    }

    /// The host's protocol for one pod: filter, score, pick the best (lowest
    /// index on ties), bind.
    fn place(b: &mut Binpack, requests: &Resources) -> Option<u32> {
        let candidates: Vec<u32> = (0..b.node_count() as u32).collect();
        let feasible: Vec<u32> = b.filter(requests, &candidates).into_iter().filter(|v| v.feasible).map(|v| v.index).collect();
        let best = b.score(requests, &feasible).into_iter().max_by_key(|&(i, s)| (s, std::cmp::Reverse(i))).map(|(i, _)| i)?;
        assert!(b.pod_bound(requests, best));
        Some(best)
    }

    #[test]
    fn pods_fill_one_node_before_the_next() {
        let mut b = binpack(vec![node("a", 4000, 16), node("b", 4000, 16), node("c", 4000, 16)]);
        let placed: Vec<u32> = (0..8).map(|_| place(&mut b, &req(1000, 4)).unwrap()).collect();
        assert_eq!(placed, vec![0, 0, 0, 0, 1, 1, 1, 1]);
        assert_eq!(b.nodes[2].requested, Resources::default(), "node c stays empty");
        // Everything is full now except c.
        assert_eq!(place(&mut b, &req(1000, 4)), Some(2));
    }

    #[test]
    fn the_fullest_node_that_fits_wins() {
        let mut nearly_full = node("nearly-full", 4000, 16);
        nearly_full.requested = req(3500, 14);
        let mut half = node("half", 4000, 16);
        half.requested = req(2000, 8);
        let b = binpack(vec![node("empty", 4000, 16), half, nearly_full]);
        let scores = b.score(&req(500, 1), &[0, 1, 2]);
        assert!(scores[2].1 > scores[1].1 && scores[1].1 > scores[0].1, "{scores:?}");
        assert_eq!(scores[2].1, 97); // cpu 100 %, memory 15/16
        // A pod that does not fit on the nearly full node goes to the half-full one.
        let verdicts = b.filter(&req(1000, 1), &[0, 1, 2]);
        assert_eq!(verdicts.iter().map(|v| v.feasible).collect::<Vec<_>>(), vec![true, true, false]);
    }

    #[test]
    fn filter_says_why() {
        let mut n = node("small", 2000, 4);
        n.requested = req(500, 3);
        let mut down = node("down", 8000, 64);
        down.ready = false;
        let b = binpack(vec![n, down]);
        let v = b.filter(&req(1600, 1), &[0, 1, 9]);
        assert_eq!(v[0].reason, "insufficient cpu on node small: requested 1600m, free 1500m of 2000m");
        assert_eq!(v[1].reason, "node down is not ready");
        assert_eq!(v[2].reason, "unknown node index 9 (the snapshot has 2 nodes)");
        let v = b.filter(&req(100, 2), &[0]);
        assert_eq!(v[0].reason, "insufficient memory on node small: requested 2Gi, free 1Gi of 4Gi");
        assert!(b.filter(&req(1500, 1), &[0])[0].feasible, "an exact fit fits");
    }

    #[test]
    fn storage_counts_only_where_accounted() {
        let mut accounted = node("disk", 4000, 16);
        accounted.allocatable.storage_bytes = 10 * GI;
        accounted.requested.storage_bytes = 9 * GI;
        let b = binpack(vec![accounted, node("no-disk-accounting", 4000, 16)]);
        let requests = Resources { storage_bytes: 2 * GI, ..req(100, 1) };
        let v = b.filter(&requests, &[0, 1]);
        assert!(!v[0].feasible && v[0].reason.starts_with("insufficient storage"), "{v:?}");
        assert!(v[1].feasible);
    }

    #[test]
    fn weights_choose_what_counts() {
        let mut cpu_heavy = node("cpu-heavy", 4000, 16);
        cpu_heavy.requested = req(3000, 0);
        let mut memory_heavy = node("memory-heavy", 4000, 16);
        memory_heavy.requested = req(0, 12);
        let mut b = binpack(vec![cpu_heavy, memory_heavy]);
        b.configure(Config::parse(&[("memory-weight".into(), "0".into())]).unwrap());
        let s = b.score(&req(100, 1), &[0, 1]);
        assert!(s[0].1 > s[1].1, "{s:?}");
        b.configure(Config::parse(&[("cpu-weight".into(), "0".into())]).unwrap());
        let s = b.score(&req(100, 1), &[0, 1]);
        assert!(s[1].1 > s[0].1, "{s:?}");
    }

    #[test]
    fn overcommitted_nodes_do_not_underflow() {
        let mut n = node("over", 1000, 1);
        n.requested = req(3000, 2);
        let b = binpack(vec![n]);
        assert!(!b.filter(&req(1, 0), &[0])[0].feasible);
        assert_eq!(b.score(&req(0, 0), &[0]), vec![(0, 100)]);
    }

    #[test]
    fn a_snapshot_replaces_bindings() {
        let mut b = binpack(vec![node("a", 1000, 1)]);
        assert!(b.pod_bound(&req(1000, 1), 0));
        assert!(!b.filter(&req(1, 0), &[0])[0].feasible);
        b.update_nodes(vec![node("a", 1000, 1)]);
        assert!(b.filter(&req(1, 0), &[0])[0].feasible);
        assert!(!b.pod_bound(&req(1, 0), 3));
    }

    #[test]
    fn config_is_validated() {
        let pairs = |k: &str, v: &str| vec![(k.to_owned(), v.to_owned())];
        assert_eq!(Config::parse(&[]).unwrap(), Config::default());
        assert_eq!(Config::parse(&pairs("storage-weight", "3")).unwrap().storage_weight, 3);
        assert!(Config::parse(&pairs("cpu", "1")).unwrap_err().contains("unknown config key `cpu`"));
        assert!(Config::parse(&pairs("cpu-weight", "-1")).unwrap_err().starts_with("cpu-weight"));
        assert!(Config::parse(&pairs("cpu-weight", "101")).is_err());
        let zero = vec![("cpu-weight".to_owned(), "0".to_owned()), ("memory-weight".to_owned(), "0".to_owned())];
        assert!(Config::parse(&zero).unwrap_err().contains("at least one weight"));
    }

    #[test]
    fn bytes_read_like_quantities() {
        assert_eq!(bytes(2 * GI), "2Gi");
        assert_eq!(bytes(512 << 20), "512Mi");
        assert_eq!(bytes(1000), "1000");
        assert_eq!(bytes(0), "0");
    }
}
