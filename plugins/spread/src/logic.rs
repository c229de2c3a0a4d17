//! The spread policy, free of any Wasm bindings so it can be tested natively.
//!
//! Pods *match* when they are in the same namespace and carry the same values
//! for every configured label key (a key missing on both counts as equal).
//! `score` prefers the nodes, and above all the zones, that hold the fewest
//! pods matching the pod being placed; the utilisation of CPU and memory
//! after placement breaks ties (a DRS-like balance). `filter` rejects nodes
//! that would push the skew (count on a node or zone minus the smallest count
//! among the candidates) above `max-skew` / `zone-max-skew` when those are set.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;

/// Config key: comma-separated label keys that, with the namespace, define
/// which pods belong together.
pub const KEY_LABEL_KEY: &str = "label-key";
/// Config key: the node label holding the zone.
pub const KEY_ZONE_KEY: &str = "zone-key";
/// Config key: the largest allowed node skew (unset: no limit).
pub const KEY_MAX_SKEW: &str = "max-skew";
/// Config key: the largest allowed zone skew (unset: no limit).
pub const KEY_ZONE_MAX_SKEW: &str = "zone-max-skew";
/// Config key: weight (0–100) of the utilisation balance in the score.
pub const KEY_BALANCE_WEIGHT: &str = "balance-weight";

/// Default of `label-key`.
pub const DEFAULT_LABEL_KEY: &str = "app";
/// Default of `zone-key`.
pub const DEFAULT_ZONE_KEY: &str = "topology.kubernetes.io/zone";
/// Default of `balance-weight`.
pub const DEFAULT_BALANCE_WEIGHT: u8 = 10;

/// At most this many label sets keep their counts cached between snapshots.
const MAX_CACHED_GROUPS: usize = 1024;

/// Amounts of CPU, memory and storage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resources {
    /// CPU in millicores.
    pub cpu_millicores: u64,
    /// Memory in bytes.
    pub memory_bytes: u64,
    /// Storage in bytes.
    pub storage_bytes: u64,
}

impl Resources {
    fn add(&mut self, other: &Resources) {
        self.cpu_millicores = self.cpu_millicores.saturating_add(other.cpu_millicores);
        self.memory_bytes = self.memory_bytes.saturating_add(other.memory_bytes);
        self.storage_bytes = self.storage_bytes.saturating_add(other.storage_bytes);
    }
}

/// Labels as key/value pairs.
pub type Labels = Vec<(String, String)>;

fn label<'a>(labels: &'a [(String, String)], key: &str) -> Option<&'a str> {
    labels.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// A pod bound to a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRef {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Labels.
    pub labels: Labels,
}

/// A node of the snapshot.
#[derive(Debug, Clone, Default)]
pub struct Node {
    /// Name.
    pub name: String,
    /// Labels (the zone is one of them).
    pub labels: Labels,
    /// Capacity offered to pods.
    pub allocatable: Resources,
    /// Requests of the pods bound to the node.
    pub requested: Resources,
    /// Whether the node is ready (not used by the policy; kept for logs).
    pub ready: bool,
    /// The pods bound to the node.
    pub pods: Vec<PodRef>,
}

/// The pod being placed.
#[derive(Debug, Clone, Default)]
pub struct Pod {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Labels.
    pub labels: Labels,
    /// Summed container requests.
    pub requests: Resources,
}

/// A filter verdict for one candidate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Index into the snapshot.
    pub index: u32,
    /// Whether the pod may go there.
    pub feasible: bool,
    /// Why not, when not.
    pub reason: String,
}

impl Verdict {
    fn ok(index: u32) -> Verdict {
        Verdict { index, feasible: true, reason: String::new() }
    }
    fn no(index: u32, reason: String) -> Verdict {
        Verdict { index, feasible: false, reason }
    }
}

/// The parsed configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Label keys that, with the namespace, group pods.
    pub label_keys: Vec<String>,
    /// The node label holding the zone.
    pub zone_key: String,
    /// Largest allowed node skew.
    pub max_skew: Option<u32>,
    /// Largest allowed zone skew.
    pub zone_max_skew: Option<u32>,
    /// Weight of the utilisation balance in the score (0–100).
    pub balance_weight: u8,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            label_keys: vec![DEFAULT_LABEL_KEY.to_owned()],
            zone_key: DEFAULT_ZONE_KEY.to_owned(),
            max_skew: None,
            zone_max_skew: None,
            balance_weight: DEFAULT_BALANCE_WEIGHT,
        }
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
                KEY_LABEL_KEY => {
                    let keys: Vec<String> = value.split(',').map(str::trim).filter(|k| !k.is_empty()).map(str::to_owned).collect();
                    if keys.is_empty() {
                        return Err(format!("{KEY_LABEL_KEY}: at least one label key is needed, e.g. `app`"));
                    }
                    config.label_keys = keys;
                }
                KEY_ZONE_KEY => {
                    if value.is_empty() {
                        return Err(format!("{KEY_ZONE_KEY}: must not be empty"));
                    }
                    config.zone_key = value.to_owned();
                }
                KEY_MAX_SKEW => config.max_skew = parse_skew(KEY_MAX_SKEW, value)?,
                KEY_ZONE_MAX_SKEW => config.zone_max_skew = parse_skew(KEY_ZONE_MAX_SKEW, value)?,
                KEY_BALANCE_WEIGHT => {
                    config.balance_weight = match value.parse::<u8>() {
                        Ok(w) if w <= 100 => w,
                        _ => return Err(format!("{KEY_BALANCE_WEIGHT}: expected a whole number from 0 to 100, got `{value}`")),
                    }
                }
                other => {
                    return Err(format!(
                        "unknown config key `{other}` (known: {KEY_LABEL_KEY}, {KEY_ZONE_KEY}, {KEY_MAX_SKEW}, {KEY_ZONE_MAX_SKEW}, {KEY_BALANCE_WEIGHT})"
                    ));
                }
            }
        }
        Ok(config)
    }
}

fn parse_skew(key: &str, value: &str) -> Result<Option<u32>, String> {
    if value.is_empty() {
        return Ok(None);
    }
    match value.parse::<u32>() {
        Ok(n) if n >= 1 => Ok(Some(n)),
        _ => Err(format!("{key}: expected a whole number of at least 1 (or empty for no limit), got `{value}`")),
    }
}

/// Which pods count together: the namespace and the values of the label keys.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct GroupKey {
    namespace: String,
    values: Vec<Option<String>>,
}

impl GroupKey {
    fn of(config: &Config, namespace: &str, labels: &[(String, String)]) -> GroupKey {
        GroupKey {
            namespace: namespace.to_owned(),
            values: config.label_keys.iter().map(|k| label(labels, k).map(str::to_owned)).collect(),
        }
    }

    fn matches(&self, config: &Config, pod: &PodRef) -> bool {
        pod.namespace == self.namespace && config.label_keys.iter().zip(&self.values).all(|(k, v)| label(&pod.labels, k) == v.as_deref())
    }

    /// `pods of dev with app=web`, for reasons.
    fn describe(&self, config: &Config) -> String {
        let labels: Vec<String> = config
            .label_keys
            .iter()
            .zip(&self.values)
            .map(|(k, v)| match v {
                Some(v) => format!("{k}={v}"),
                None => format!("no {k}"),
            })
            .collect();
        format!("pods of {} with {}", self.namespace, labels.join(", "))
    }
}

/// Matching pods per node and per zone, for one group.
#[derive(Debug)]
struct Counts {
    per_node: Vec<u32>,
    per_zone: Vec<u32>,
}

/// The plug-in's state: configuration, node snapshot, cached counts.
#[derive(Debug, Default)]
pub struct Spread {
    config: Config,
    nodes: Vec<Node>,
    /// Zone id of each node (an index into `zones`).
    node_zone: Vec<usize>,
    /// Zone names; nodes without the zone label share the zone "".
    zones: Vec<String>,
    /// Counts per group, computed on first use after a snapshot and kept
    /// current by `pod_bound`.
    groups: BTreeMap<GroupKey, Counts>,
}

impl Spread {
    /// Applies a new configuration.
    pub fn configure(&mut self, config: Config) {
        self.config = config;
        self.reindex();
    }

    /// The current configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Replaces the node snapshot.
    pub fn update_nodes(&mut self, nodes: Vec<Node>) {
        self.nodes = nodes;
        self.reindex();
    }

    /// The number of nodes in the snapshot.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// The number of distinct zones in the snapshot.
    pub fn zone_count(&self) -> usize {
        self.zones.len()
    }

    fn reindex(&mut self) {
        self.groups.clear();
        self.zones.clear();
        self.node_zone.clear();
        let mut ids: BTreeMap<String, usize> = BTreeMap::new();
        for node in &self.nodes {
            let zone = label(&node.labels, &self.config.zone_key).unwrap_or("");
            let id = match ids.get(zone) {
                Some(&id) => id,
                None => {
                    let id = self.zones.len();
                    self.zones.push(zone.to_owned());
                    ids.insert(zone.to_owned(), id);
                    id
                }
            };
            self.node_zone.push(id);
        }
    }

    /// Makes sure the counts of `key` are cached.
    fn ensure_counts(&mut self, key: &GroupKey) {
        if self.groups.contains_key(key) {
            return;
        }
        if self.groups.len() >= MAX_CACHED_GROUPS {
            self.groups.clear();
        }
        let mut counts = Counts { per_node: vec![0; self.nodes.len()], per_zone: vec![0; self.zones.len()] };
        for (i, node) in self.nodes.iter().enumerate() {
            let n = node.pods.iter().filter(|p| key.matches(&self.config, p)).count() as u32;
            counts.per_node[i] = n;
            counts.per_zone[self.node_zone[i]] += n;
        }
        self.groups.insert(key.clone(), counts);
    }

    fn valid(&self, index: u32) -> bool {
        (index as usize) < self.nodes.len()
    }

    fn unknown(&self, index: u32) -> String {
        format!("unknown node index {index} (the snapshot has {} nodes)", self.nodes.len())
    }

    /// Rejects the candidates where placing `pod` would exceed the configured
    /// skew; one verdict per candidate.
    pub fn filter(&mut self, pod: &Pod, candidates: &[u32]) -> Vec<Verdict> {
        let limits = (self.config.max_skew, self.config.zone_max_skew);
        if limits == (None, None) {
            return candidates.iter().map(|&i| if self.valid(i) { Verdict::ok(i) } else { Verdict::no(i, self.unknown(i)) }).collect();
        }
        let key = GroupKey::of(&self.config, &pod.namespace, &pod.labels);
        self.ensure_counts(&key);
        let counts = &self.groups[&key];
        let valid: Vec<usize> = candidates.iter().filter(|&&i| self.valid(i)).map(|&i| i as usize).collect();
        let min_node = valid.iter().map(|&i| counts.per_node[i]).min().unwrap_or(0);
        let min_zone = valid.iter().map(|&i| counts.per_zone[self.node_zone[i]]).min().unwrap_or(0);
        candidates
            .iter()
            .map(|&index| {
                if !self.valid(index) {
                    return Verdict::no(index, self.unknown(index));
                }
                let i = index as usize;
                if let Some(max) = self.config.max_skew {
                    let skew = counts.per_node[i] + 1 - min_node;
                    if skew > max {
                        return Verdict::no(
                            index,
                            format!(
                                "spread: node {} already runs {} {}; placing one more would make the node skew {skew}, above max-skew {max}",
                                self.nodes[i].name,
                                counts.per_node[i],
                                key.describe(&self.config)
                            ),
                        );
                    }
                }
                if let Some(max) = self.config.zone_max_skew {
                    let zone = self.node_zone[i];
                    let skew = counts.per_zone[zone] + 1 - min_zone;
                    if skew > max {
                        return Verdict::no(
                            index,
                            format!(
                                "spread: zone `{}` already runs {} {}; placing one more would make the zone skew {skew}, above zone-max-skew {max}",
                                self.zones[zone],
                                counts.per_zone[zone],
                                key.describe(&self.config)
                            ),
                        );
                    }
                }
                Verdict::ok(index)
            })
            .collect()
    }

    /// Scores the feasible nodes from 0 to 100: fewer matching pods in the
    /// zone and on the node score higher; the utilisation balance after
    /// placement weighs `balance-weight` of 100.
    pub fn score(&mut self, pod: &Pod, feasible: &[u32]) -> Vec<(u32, u8)> {
        let key = GroupKey::of(&self.config, &pod.namespace, &pod.labels);
        self.ensure_counts(&key);
        let counts = &self.groups[&key];
        let valid: Vec<usize> = feasible.iter().filter(|&&i| self.valid(i)).map(|&i| i as usize).collect();
        let node_counts = valid.iter().map(|&i| counts.per_node[i]);
        let (nmin, nmax) = (node_counts.clone().min().unwrap_or(0), node_counts.max().unwrap_or(0));
        let zone_counts = valid.iter().map(|&i| counts.per_zone[self.node_zone[i]]);
        let (zmin, zmax) = (zone_counts.clone().min().unwrap_or(0), zone_counts.max().unwrap_or(0));
        let several_zones = valid.iter().any(|&i| self.node_zone[i] != self.node_zone[valid[0]]);
        let balance_weight = f64::from(self.config.balance_weight);
        feasible
            .iter()
            .map(|&index| {
                if !self.valid(index) {
                    return (index, 0);
                }
                let i = index as usize;
                let node_term = normalise(counts.per_node[i], nmin, nmax);
                let spread = if several_zones {
                    let zone_term = normalise(counts.per_zone[self.node_zone[i]], zmin, zmax);
                    1.0 - (2.0 * zone_term + node_term) / 3.0
                } else {
                    1.0 - node_term
                };
                let balance = 1.0 - utilisation_after(&self.nodes[i], &pod.requests);
                let score = (100.0 - balance_weight) * spread + balance_weight * balance;
                (index, score.round().clamp(0.0, 100.0) as u8)
            })
            .collect()
    }

    /// Records that `pod` was bound to the node at `index`. A pod already
    /// on that node (same namespace and name) is not counted twice.
    pub fn pod_bound(&mut self, pod: Pod, index: u32) -> bool {
        if !self.valid(index) {
            return false;
        }
        let i = index as usize;
        let node = &mut self.nodes[i];
        if node.pods.iter().any(|p| p.namespace == pod.namespace && p.name == pod.name) {
            return true;
        }
        node.requested.add(&pod.requests);
        let key = GroupKey::of(&self.config, &pod.namespace, &pod.labels);
        if let Some(counts) = self.groups.get_mut(&key) {
            counts.per_node[i] += 1;
            counts.per_zone[self.node_zone[i]] += 1;
        }
        node.pods.push(PodRef { namespace: pod.namespace, name: pod.name, labels: pod.labels });
        true
    }
}

/// 0 for the smallest count, 1 for the largest, linear in between.
fn normalise(value: u32, min: u32, max: u32) -> f64 {
    if max == min { 0.0 } else { f64::from(value - min) / f64::from(max - min) }
}

/// The larger of the CPU and memory utilisation of `node` once `requests`
/// are added, from 0 to 1 (a node offering nothing counts as full).
fn utilisation_after(node: &Node, requests: &Resources) -> f64 {
    let fraction = |requested: u64, extra: u64, allocatable: u64| {
        if allocatable == 0 { 1.0 } else { (requested.saturating_add(extra) as f64 / allocatable as f64).min(1.0) }
    };
    let cpu = fraction(node.requested.cpu_millicores, requests.cpu_millicores, node.allocatable.cpu_millicores);
    let memory = fraction(node.requested.memory_bytes, requests.memory_bytes, node.allocatable.memory_bytes);
    cpu.max(memory)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GI: u64 = 1 << 30;

    fn pairs(items: &[(&str, &str)]) -> Labels {
        items.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    fn node(name: &str, zone: &str) -> Node {
        Node {
            name: name.to_owned(),
            labels: pairs(&[(DEFAULT_ZONE_KEY, zone)]),
            allocatable: Resources { cpu_millicores: 8000, memory_bytes: 32 * GI, storage_bytes: 0 },
            requested: Resources::default(),
            ready: true,
            pods: Vec::new(),
        }
    }

    fn pod(namespace: &str, name: &str, app: &str) -> Pod {
        Pod {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            labels: pairs(&[("app", app)]),
            requests: Resources { cpu_millicores: 100, memory_bytes: 128 << 20, storage_bytes: 0 },
        }
    }

    fn all(spread: &Spread) -> Vec<u32> {
        (0..spread.node_count() as u32).collect()
    }

    /// Runs the host's protocol for one pod: filter, score, pick the best
    /// (lowest index on ties), bind. Returns the chosen index.
    fn place(spread: &mut Spread, pod: &Pod) -> Option<u32> {
        let candidates = all(spread);
        let feasible: Vec<u32> = spread.filter(pod, &candidates).into_iter().filter(|v| v.feasible).map(|v| v.index).collect();
        let scores = spread.score(pod, &feasible);
        let best = scores.iter().max_by_key(|&&(i, s)| (s, std::cmp::Reverse(i))).map(|&(i, _)| i)?;
        assert!(spread.pod_bound(pod.clone(), best));
        Some(best)
    }

    fn counts_per_node(spread: &Spread, namespace: &str, app: &str) -> Vec<usize> {
        spread
            .nodes
            .iter()
            .map(|n| n.pods.iter().filter(|p| p.namespace == namespace && label(&p.labels, "app") == Some(app)).count())
            .collect()
    }

    fn with_nodes(nodes: Vec<Node>) -> Spread {
        let mut spread = Spread::default();
        spread.update_nodes(nodes);
        spread
    }

    #[test]
    fn pods_of_one_app_spread_evenly_over_nodes() {
        let mut spread = with_nodes(vec![node("a", "z1"), node("b", "z1"), node("c", "z1")]);
        for n in 0..9 {
            place(&mut spread, &pod("dev", &format!("web-{n}"), "web")).unwrap();
        }
        assert_eq!(counts_per_node(&spread, "dev", "web"), vec![3, 3, 3]);
    }

    #[test]
    fn zones_are_balanced_before_nodes() {
        // Zone z1 has three nodes, z2 only one: half the pods go to z2.
        let mut spread = with_nodes(vec![node("a", "z1"), node("b", "z1"), node("c", "z1"), node("d", "z2")]);
        for n in 0..6 {
            place(&mut spread, &pod("dev", &format!("web-{n}"), "web")).unwrap();
        }
        let counts = counts_per_node(&spread, "dev", "web");
        assert_eq!(counts[3], 3, "zone z2 gets half: {counts:?}");
        assert_eq!(&counts[..3], &[1, 1, 1], "z1's share is spread over its nodes: {counts:?}");
    }

    #[test]
    fn other_apps_and_namespaces_do_not_count() {
        let mut a = node("a", "z1");
        for n in 0..5 {
            a.pods.push(PodRef { namespace: "dev".into(), name: format!("db-{n}"), labels: pairs(&[("app", "db")]) });
            a.pods.push(PodRef { namespace: "prod".into(), name: format!("web-{n}"), labels: pairs(&[("app", "web")]) });
        }
        let mut b = node("b", "z1");
        b.pods.push(PodRef { namespace: "dev".into(), name: "web-0".into(), labels: pairs(&[("app", "web")]) });
        let mut spread = with_nodes(vec![a, b]);
        let scores = spread.score(&pod("dev", "web-1", "web"), &[0, 1]);
        assert!(scores[0].1 > scores[1].1, "node a has no dev/web pod yet: {scores:?}");
    }

    #[test]
    fn pods_already_in_the_snapshot_count() {
        let mut a = node("a", "z1");
        for n in 0..2 {
            a.pods.push(PodRef { namespace: "dev".into(), name: format!("web-{n}"), labels: pairs(&[("app", "web")]) });
        }
        let mut spread = with_nodes(vec![a, node("b", "z1")]);
        assert_eq!(place(&mut spread, &pod("dev", "web-2", "web")), Some(1));
        assert_eq!(place(&mut spread, &pod("dev", "web-3", "web")), Some(1));
        assert_eq!(counts_per_node(&spread, "dev", "web"), vec![2, 2]);
    }

    #[test]
    fn a_new_snapshot_replaces_bound_pods() {
        let mut spread = with_nodes(vec![node("a", "z1"), node("b", "z1")]);
        place(&mut spread, &pod("dev", "web-0", "web"));
        spread.update_nodes(vec![node("a", "z1"), node("b", "z1")]);
        assert_eq!(counts_per_node(&spread, "dev", "web"), vec![0, 0]);
        let scores = spread.score(&pod("dev", "web-1", "web"), &[0, 1]);
        assert_eq!(scores[0].1, scores[1].1);
    }

    #[test]
    fn binding_the_same_pod_twice_counts_once() {
        let mut spread = with_nodes(vec![node("a", "z1"), node("b", "z1")]);
        let p = pod("dev", "web-0", "web");
        spread.score(&p, &[0, 1]); // caches the group's counts
        assert!(spread.pod_bound(p.clone(), 0));
        assert!(spread.pod_bound(p.clone(), 0));
        assert_eq!(counts_per_node(&spread, "dev", "web"), vec![1, 0]);
        assert_eq!(spread.groups.values().next().unwrap().per_node, vec![1, 0]);
        assert_eq!(spread.nodes[0].requested.cpu_millicores, 100);
        assert!(!spread.pod_bound(p, 7), "unknown index is refused");
    }

    #[test]
    fn balance_breaks_ties() {
        let mut busy = node("busy", "z1");
        busy.requested = Resources { cpu_millicores: 6000, memory_bytes: 4 * GI, storage_bytes: 0 };
        let mut spread = with_nodes(vec![busy, node("idle", "z1")]);
        let scores = spread.score(&pod("dev", "web-0", "web"), &[0, 1]);
        assert!(scores[1].1 > scores[0].1, "{scores:?}");
        // ... but never beats spreading.
        let mut spread = with_nodes(vec![node("a", "z1"), node("b", "z1")]);
        spread.nodes[1].requested.cpu_millicores = 8000;
        spread.pod_bound(pod("dev", "web-0", "web"), 0);
        let scores = spread.score(&pod("dev", "web-1", "web"), &[0, 1]);
        assert!(scores[1].1 > scores[0].1, "{scores:?}");
    }

    #[test]
    fn max_skew_rejects_crowded_nodes() {
        let config = Config::parse(&pairs(&[("max-skew", "1")])).unwrap();
        let mut spread = Spread::default();
        spread.configure(config);
        spread.update_nodes(vec![node("a", "z1"), node("b", "z1")]);
        spread.pod_bound(pod("dev", "web-0", "web"), 0);
        let verdicts = spread.filter(&pod("dev", "web-1", "web"), &[0, 1]);
        assert!(!verdicts[0].feasible);
        assert!(verdicts[0].reason.contains("max-skew 1"), "{}", verdicts[0].reason);
        assert!(verdicts[0].reason.contains("dev with app=web"), "{}", verdicts[0].reason);
        assert!(verdicts[1].feasible);
        // Another app is not affected.
        assert!(spread.filter(&pod("dev", "db-0", "db"), &[0, 1]).iter().all(|v| v.feasible));
        // Once b has caught up, a is fine again.
        spread.pod_bound(pod("dev", "web-1", "web"), 1);
        assert!(spread.filter(&pod("dev", "web-2", "web"), &[0, 1]).iter().all(|v| v.feasible));
    }

    #[test]
    fn zone_max_skew_rejects_crowded_zones() {
        let config = Config::parse(&pairs(&[("zone-max-skew", "1")])).unwrap();
        let mut spread = Spread::default();
        spread.configure(config);
        spread.update_nodes(vec![node("a", "z1"), node("b", "z1"), node("c", "z2")]);
        spread.pod_bound(pod("dev", "web-0", "web"), 0);
        let verdicts = spread.filter(&pod("dev", "web-1", "web"), &[0, 1, 2]);
        assert_eq!(verdicts.iter().map(|v| v.feasible).collect::<Vec<_>>(), vec![false, false, true]);
        assert!(verdicts[1].reason.contains("zone `z1`"), "{}", verdicts[1].reason);
    }

    #[test]
    fn skew_is_measured_against_the_candidates() {
        // Node c is empty but not a candidate (e.g. full): it does not pin the minimum.
        let config = Config::parse(&pairs(&[("max-skew", "1")])).unwrap();
        let mut spread = Spread::default();
        spread.configure(config);
        spread.update_nodes(vec![node("a", "z1"), node("b", "z1"), node("c", "z1")]);
        spread.pod_bound(pod("dev", "web-0", "web"), 0);
        spread.pod_bound(pod("dev", "web-1", "web"), 1);
        assert!(spread.filter(&pod("dev", "web-2", "web"), &[0, 1]).iter().all(|v| v.feasible));
    }

    #[test]
    fn unknown_indices_are_rejected_and_score_zero() {
        let mut spread = with_nodes(vec![node("a", "z1")]);
        let verdicts = spread.filter(&pod("dev", "web-0", "web"), &[0, 5]);
        assert!(verdicts[0].feasible);
        assert!(!verdicts[1].feasible && verdicts[1].reason.contains("unknown node index 5"));
        let scores = spread.score(&pod("dev", "web-0", "web"), &[5, 0]);
        assert_eq!(scores[0], (5, 0));
        assert_eq!(scores[1].0, 0);
        // Before any snapshot, nothing is known.
        let mut empty = Spread::default();
        assert!(!empty.filter(&pod("dev", "web-0", "web"), &[0])[0].feasible);
    }

    #[test]
    fn label_key_can_list_several_keys() {
        let config = Config::parse(&pairs(&[("label-key", "app, tier")])).unwrap();
        assert_eq!(config.label_keys, vec!["app".to_owned(), "tier".to_owned()]);
        let mut spread = Spread::default();
        spread.configure(config);
        let mut a = node("a", "z1");
        a.pods.push(PodRef { namespace: "dev".into(), name: "x".into(), labels: pairs(&[("app", "web"), ("tier", "back")]) });
        spread.update_nodes(vec![a, node("b", "z1")]);
        let mut front = pod("dev", "y", "web");
        front.labels.push(("tier".into(), "front".into()));
        let scores = spread.score(&front, &[0, 1]);
        assert_eq!(scores[0].1, scores[1].1, "a different tier is another group: {scores:?}");
    }

    #[test]
    fn pods_without_the_label_spread_among_themselves() {
        let mut spread = with_nodes(vec![node("a", "z1"), node("b", "z1")]);
        let mut p = pod("dev", "job-0", "x");
        p.labels.clear();
        let first = place(&mut spread, &p).unwrap();
        p.name = "job-1".into();
        let second = place(&mut spread, &p).unwrap();
        assert_ne!(first, second);
    }

    #[test]
    fn nodes_without_a_zone_share_one() {
        let mut unzoned = node("a", "");
        unzoned.labels.clear();
        let spread = with_nodes(vec![unzoned, node("b", "z1"), node("c", "z1")]);
        assert_eq!(spread.zone_count(), 2);
    }

    #[test]
    fn config_is_validated() {
        assert_eq!(Config::parse(&[]).unwrap(), Config::default());
        let c = Config::parse(&pairs(&[("zone-key", "rack"), ("balance-weight", "0"), ("max-skew", "")])).unwrap();
        assert_eq!((c.zone_key.as_str(), c.balance_weight, c.max_skew), ("rack", 0, None));
        assert!(Config::parse(&pairs(&[("lable-key", "app")])).unwrap_err().contains("unknown config key `lable-key`"));
        assert!(Config::parse(&pairs(&[("max-skew", "0")])).unwrap_err().starts_with("max-skew"));
        assert!(Config::parse(&pairs(&[("balance-weight", "101")])).unwrap_err().starts_with("balance-weight"));
        assert!(Config::parse(&pairs(&[("label-key", " , ")])).unwrap_err().starts_with("label-key"));
    }

    #[test]
    fn reconfiguring_the_zone_key_regroups_nodes() {
        let mut spread = with_nodes(vec![node("a", "z1"), node("b", "z2")]);
        assert_eq!(spread.zone_count(), 2);
        spread.configure(Config::parse(&pairs(&[("zone-key", "rack")])).unwrap());
        assert_eq!(spread.zone_count(), 1);
    }
}
