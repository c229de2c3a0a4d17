//! What the node takes from a Pod object (as the API stores it, JSON): its
//! identity and labels, restart policy, deadline, volumes, and per container the
//! image, argv, environment (with its ConfigMap and Secret references, see
//! [`super::config`]), volume mounts, memory limit and CPU limit. Fields the
//! node cannot honour for one container (an unsupported `valueFrom`, a
//! mount of a volume type the node does not provide, a bad quantity)
//! become that container's configuration error, reported as kubelet's
//! `CreateContainerConfigError`, instead of failing the whole pod.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use kapsel_api::Quantity;
use serde_json::Value;

use super::config::{self, EnvFrom, EnvValue, Mount, VolumeSpec};
use super::status::{Termination, parse_time};

/// `spec.restartPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RestartPolicy {
    #[default]
    Always,
    OnFailure,
    Never,
}

impl RestartPolicy {
    pub fn parse(text: &str) -> Option<RestartPolicy> {
        match text {
            "Always" => Some(RestartPolicy::Always),
            "OnFailure" => Some(RestartPolicy::OnFailure),
            "Never" => Some(RestartPolicy::Never),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RestartPolicy::Always => "Always",
            RestartPolicy::OnFailure => "OnFailure",
            RestartPolicy::Never => "Never",
        }
    }

    /// Whether a container that exited with `exit_code` is started again.
    pub fn restarts(self, exit_code: i32) -> bool {
        match self {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => exit_code != 0,
            RestartPolicy::Never => false,
        }
    }

    /// The policy an init container follows: never again once it succeeded,
    /// and after a failure as the pod says (Always counts as OnFailure).
    pub fn for_init_container(self) -> RestartPolicy {
        match self {
            RestartPolicy::Never => RestartPolicy::Never,
            RestartPolicy::Always | RestartPolicy::OnFailure => RestartPolicy::OnFailure,
        }
    }
}

/// Why a pod object cannot be run at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("the pod has no metadata.uid")]
    NoUid,
    #[error("the pod has no containers")]
    NoContainers,
    #[error("{field}: {problem}")]
    Invalid { field: String, problem: String },
}

/// The parts of a pod the node acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodSpec {
    pub uid: String,
    pub name: String,
    pub namespace: String,
    /// `metadata.labels` (a value that is not a string is left out).
    pub labels: BTreeMap<String, String>,
    pub restart_policy: RestartPolicy,
    pub init_containers: Vec<ContainerSpec>,
    pub containers: Vec<ContainerSpec>,
    /// `spec.activeDeadlineSeconds`, counted from the start time.
    pub active_deadline: Option<Duration>,
    /// `status.startTime`, when a node already started the pod (the deadline counts from it).
    pub start_time: Option<DateTime<Utc>>,
    /// `spec.terminationGracePeriodSeconds` (30 s when not set).
    pub termination_grace: Duration,
    /// The volumes the node provides (ConfigMaps, Secrets, emptyDirs).
    pub volumes: Vec<VolumeSpec>,
}

/// Kubernetes' default `terminationGracePeriodSeconds`.
pub const DEFAULT_TERMINATION_GRACE: Duration = Duration::from_secs(30);

/// One container of a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
    /// The program name (from the image), then `command`, then `args`.
    pub argv: Vec<String>,
    /// `env`, in order; resolved at every start.
    pub env: Vec<(String, EnvValue)>,
    /// `envFrom`, in order.
    pub env_from: Vec<EnvFrom>,
    /// `volumeMounts`.
    pub mounts: Vec<Mount>,
    /// `resources.limits.memory` in bytes.
    pub memory_limit_bytes: Option<u64>,
    /// `resources.limits.cpu` in millicores.
    pub cpu_limit_millicores: Option<u64>,
    /// Why the node cannot start this container as specified.
    pub config_error: Option<String>,
    /// A run an earlier life of this node's agent made of this (main)
    /// container, as the pod's status recorded it.
    pub earlier: Option<EarlierRun>,
}

/// A container an earlier life of the node agent started (a restarted
/// agent takes its pods over from their status): its restarts so far and
/// how its last run ended — a run still in progress when the agent went
/// ended with it ([`Termination::vanished`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EarlierRun {
    pub restart_count: u32,
    pub ended: Termination,
}

impl EarlierRun {
    /// From the pod's `status.containerStatuses` entry for `container`.
    fn from_status(pod: &Value, container: &str) -> Option<EarlierRun> {
        let status = pod
            .pointer("/status/containerStatuses")?
            .as_array()?
            .iter()
            .find(|status| status.get("name").and_then(Value::as_str) == Some(container))?;
        let restart_count = status.get("restartCount").and_then(Value::as_u64).and_then(|n| u32::try_from(n).ok()).unwrap_or(0);
        let state = status.get("state")?;
        let ended = if let Some(running) = state.get("running") {
            let started_at = running.get("startedAt").and_then(Value::as_str).and_then(parse_time);
            let container_id = status.get("containerID").and_then(Value::as_str).map(str::to_string);
            Termination::vanished(started_at, container_id)
        } else if let Some(terminated) = state.get("terminated") {
            Termination::from_json(terminated)?
        } else {
            // Waiting: after a run (back-off) or before any (creating, pulling).
            Termination::from_json(status.pointer("/lastState/terminated")?)?
        };
        Some(EarlierRun { restart_count, ended })
    }
}

impl PodSpec {
    /// Reads a Pod object.
    pub fn from_pod(pod: &Value) -> Result<PodSpec, SpecError> {
        let uid = kapsel_api::object::meta_str(pod, "uid").filter(|uid| !uid.is_empty()).ok_or(SpecError::NoUid)?;
        let spec = pod.get("spec").unwrap_or(&Value::Null);
        let restart_policy = match spec.get("restartPolicy").and_then(Value::as_str) {
            None => RestartPolicy::Always,
            Some(text) => RestartPolicy::parse(text).ok_or_else(|| SpecError::Invalid {
                field: "spec.restartPolicy".into(),
                problem: format!("unsupported value {text:?}: must be Always, OnFailure or Never"),
            })?,
        };
        let active_deadline = match spec.get("activeDeadlineSeconds") {
            None | Some(Value::Null) => None,
            Some(value) => Some(value.as_u64().filter(|s| *s > 0).map(Duration::from_secs).ok_or_else(|| SpecError::Invalid {
                field: "spec.activeDeadlineSeconds".into(),
                problem: format!("must be a positive integer, not {value}"),
            })?),
        };
        let termination_grace = match spec.get("terminationGracePeriodSeconds") {
            None | Some(Value::Null) => DEFAULT_TERMINATION_GRACE,
            Some(value) => value.as_u64().map(Duration::from_secs).ok_or_else(|| SpecError::Invalid {
                field: "spec.terminationGracePeriodSeconds".into(),
                problem: format!("must be a non-negative integer, not {value}"),
            })?,
        };
        let (volumes, unsupported) = config::volumes(spec);
        let mut init_containers = containers(pod, spec, "initContainers")?;
        let mut containers = containers(pod, spec, "containers")?;
        for container in init_containers.iter_mut().chain(containers.iter_mut()) {
            check_mounts(container, &volumes, &unsupported);
        }
        if containers.is_empty() {
            return Err(SpecError::NoContainers);
        }
        for container in &mut containers {
            container.earlier = EarlierRun::from_status(pod, &container.name);
        }
        let start_time = pod.pointer("/status/startTime").and_then(Value::as_str).and_then(parse_time);
        Ok(PodSpec {
            uid: uid.to_string(),
            name: kapsel_api::object::name(pod).unwrap_or_default().to_string(),
            namespace: kapsel_api::object::namespace(pod).unwrap_or("default").to_string(),
            labels: labels(pod),
            restart_policy,
            init_containers,
            containers,
            active_deadline,
            start_time,
            termination_grace,
            volumes,
        })
    }
}

/// The pod's `metadata.labels` whose values are strings.
fn labels(pod: &Value) -> BTreeMap<String, String> {
    kapsel_api::object::labels(pod)
        .into_iter()
        .flatten()
        .filter_map(|(key, value)| Some((key.clone(), value.as_str()?.to_string())))
        .collect()
}

/// A container that mounts a volume the pod does not have, or one of a type
/// the node does not provide, cannot start: its configuration error says why.
fn check_mounts(container: &mut ContainerSpec, volumes: &[VolumeSpec], unsupported: &BTreeMap<String, String>) {
    for mount in &container.mounts {
        let problem = match unsupported.get(&mount.volume) {
            Some(problem) => format!("volume {:?}: {problem}", mount.volume),
            None if !volumes.iter().any(|v| v.name == mount.volume) => format!("volumeMounts: the pod has no volume {:?}", mount.volume),
            None => continue,
        };
        container.config_error = Some(match container.config_error.take() {
            Some(earlier) => format!("{earlier}; {problem}"),
            None => problem,
        });
    }
}

fn containers(pod: &Value, spec: &Value, field: &str) -> Result<Vec<ContainerSpec>, SpecError> {
    let Some(items) = spec.get(field).filter(|v| !v.is_null()) else {
        return Ok(Vec::new());
    };
    let items = items.as_array().ok_or_else(|| SpecError::Invalid { field: format!("spec.{field}"), problem: "must be a list".into() })?;
    items.iter().enumerate().map(|(index, item)| container(pod, item, &format!("spec.{field}[{index}]"))).collect()
}

fn container(pod: &Value, item: &Value, field: &str) -> Result<ContainerSpec, SpecError> {
    let text = |key: &str| item.get(key).and_then(Value::as_str).filter(|s| !s.is_empty());
    let name = text("name").ok_or_else(|| SpecError::Invalid { field: format!("{field}.name"), problem: "required".into() })?;
    let image = text("image").ok_or_else(|| SpecError::Invalid { field: format!("{field}.image"), problem: "required".into() })?;
    let mut problems = Vec::new();

    let mut argv = vec![program_name(image)];
    for key in ["command", "args"] {
        for (index, arg) in item.get(key).and_then(Value::as_array).into_iter().flatten().enumerate() {
            match arg.as_str() {
                Some(arg) => argv.push(arg.to_string()),
                None => problems.push(format!("{key}[{index}] is not a string")),
            }
        }
    }

    let mut env = Vec::new();
    for var in item.get("env").and_then(Value::as_array).into_iter().flatten() {
        let Some(name) = var.get("name").and_then(Value::as_str) else {
            problems.push("an env entry has no name".into());
            continue;
        };
        match config::env_value(pod, var) {
            Ok(value) => env.push((name.to_string(), value)),
            Err(problem) => problems.push(format!("env {name}: {problem}")),
        }
    }
    let mut env_from = Vec::new();
    for (index, entry) in item.get("envFrom").and_then(Value::as_array).into_iter().flatten().enumerate() {
        match config::env_from(entry) {
            Ok(from) => env_from.push(from),
            Err(problem) => problems.push(format!("envFrom[{index}]: {problem}")),
        }
    }
    let mounts = config::mounts(item).unwrap_or_else(|problem| {
        problems.push(problem);
        Vec::new()
    });

    // A limit that does not read is the container's problem, not the pod's.
    let mut limit = |resource: &str, read: fn(&Value) -> Result<u64, String>| match item.get("resources")?.get("limits")?.get(resource)? {
        Value::Null => None,
        value => read(value).map_err(|problem| problems.push(format!("resources.limits.{resource}: {problem}"))).ok(),
    };
    let memory_limit_bytes = limit("memory", memory_bytes);
    let cpu_limit_millicores = limit("cpu", cpu_millicores);

    Ok(ContainerSpec {
        name: name.to_string(),
        image: image.to_string(),
        argv,
        env,
        env_from,
        mounts,
        memory_limit_bytes,
        cpu_limit_millicores,
        config_error: (!problems.is_empty()).then(|| problems.join("; ")),
        earlier: None,
    })
}

/// A memory quantity (`32Mi`, `1Gi`, `1000000`, or a JSON number) in bytes, rounded up.
pub fn memory_bytes(value: &Value) -> Result<u64, String> {
    let quantity = quantity(value)?;
    if quantity.is_negative() {
        return Err(format!("must not be negative (got {value})"));
    }
    u64::try_from(quantity.units_ceil()).map_err(|_| format!("too large (got {value})"))
}

/// A CPU quantity (`250m`, `1.5`, `2`, or a JSON number) in millicores, rounded up.
pub fn cpu_millicores(value: &Value) -> Result<u64, String> {
    let quantity = quantity(value)?;
    if quantity.is_negative() {
        return Err(format!("must not be negative (got {value})"));
    }
    u64::try_from(quantity.millis()).map_err(|_| format!("too large (got {value})"))
}

fn quantity(value: &Value) -> Result<Quantity, String> {
    match value {
        Value::String(text) => Quantity::parse(text).map_err(|e| e.to_string()),
        Value::Number(number) => Quantity::parse(&number.to_string()).map_err(|e| e.to_string()),
        other => Err(format!("must be a quantity, not {other}")),
    }
}

/// The program name a container's argv starts with: the image's name
/// without registry path, tag or digest (`registry:5000/team/hello:1` → `hello`).
pub fn program_name(image: &str) -> String {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
    let name = last.split(':').next().unwrap_or(last);
    if name.is_empty() { image.to_string() } else { name.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn restart_policies_decide_like_kubelet() {
        assert!(RestartPolicy::Always.restarts(0) && RestartPolicy::Always.restarts(3));
        assert!(!RestartPolicy::OnFailure.restarts(0) && RestartPolicy::OnFailure.restarts(137));
        assert!(!RestartPolicy::Never.restarts(0) && !RestartPolicy::Never.restarts(1));
        assert_eq!(RestartPolicy::Always.for_init_container(), RestartPolicy::OnFailure);
        assert_eq!(RestartPolicy::Never.for_init_container(), RestartPolicy::Never);
    }

    #[test]
    fn quantities_become_bytes() {
        assert_eq!(memory_bytes(&json!("32Mi")), Ok(32 << 20));
        assert_eq!(memory_bytes(&json!("1Gi")), Ok(1 << 30));
        assert_eq!(memory_bytes(&json!("1000000")), Ok(1_000_000));
        assert_eq!(memory_bytes(&json!("1M")), Ok(1_000_000));
        assert_eq!(memory_bytes(&json!("1500m")), Ok(2));
        assert_eq!(memory_bytes(&json!(4096)), Ok(4096));
        assert!(memory_bytes(&json!("lots")).is_err());
        assert!(memory_bytes(&json!("-1Mi")).is_err());
        assert!(memory_bytes(&json!(true)).is_err());
        assert_eq!(cpu_millicores(&json!("250m")), Ok(250));
        assert_eq!(cpu_millicores(&json!("1.5")), Ok(1500));
        assert_eq!(cpu_millicores(&json!(2)), Ok(2000));
        assert_eq!(cpu_millicores(&json!("0.0001")), Ok(1), "rounded up");
        assert!(cpu_millicores(&json!("-1")).is_err());
        assert!(cpu_millicores(&json!("fast")).is_err());
    }

    #[test]
    fn program_names_come_from_images() {
        assert_eq!(program_name("hello:1"), "hello");
        assert_eq!(program_name("hello"), "hello");
        assert_eq!(program_name("registry:5000/team/hello:1"), "hello");
        assert_eq!(program_name("hello@sha256:abc"), "hello");
    }

    #[test]
    fn a_pod_is_read_with_kubernetes_defaults() {
        let pod = json!({
            "metadata": {"name": "hello", "uid": "u-1", "labels": {"app": "hello", "odd": 7}},
            "spec": {
                "initContainers": [{"name": "setup", "image": "setup:1"}],
                "containers": [{
                    "name": "main", "image": "hello:1",
                    "command": ["run"], "args": ["--loud", "x"],
                    "env": [{"name": "GREETING", "value": "hi"}, {"name": "EMPTY"}],
                    "resources": {"limits": {"memory": "32Mi", "cpu": "250m"}}
                }],
                "activeDeadlineSeconds": 30
            },
            "status": {"startTime": "2026-11-26T12:00:00Z"}
        });
        let spec = PodSpec::from_pod(&pod).unwrap();
        assert_eq!(spec.namespace, "default");
        assert_eq!(spec.labels, BTreeMap::from([("app".to_string(), "hello".to_string())]), "string values only");
        assert_eq!(spec.restart_policy, RestartPolicy::Always);
        assert_eq!(spec.active_deadline, Some(Duration::from_secs(30)));
        assert_eq!(spec.termination_grace, DEFAULT_TERMINATION_GRACE);
        assert_eq!(spec.start_time.unwrap().to_rfc3339(), "2026-11-26T12:00:00+00:00");
        assert_eq!(spec.init_containers[0].argv, ["setup"]);
        let main = &spec.containers[0];
        assert_eq!(main.argv, ["hello", "run", "--loud", "x"]);
        let literal = |name: &str, value: &str| (name.to_string(), EnvValue::Literal(value.to_string()));
        assert_eq!(main.env, [literal("GREETING", "hi"), literal("EMPTY", "")]);
        assert_eq!(main.memory_limit_bytes, Some(32 << 20));
        assert_eq!(main.cpu_limit_millicores, Some(250));
        assert_eq!(main.config_error, None);
    }

    #[test]
    fn what_the_node_cannot_honour_is_said() {
        assert_eq!(PodSpec::from_pod(&json!({"metadata": {"name": "x"}})), Err(SpecError::NoUid));
        assert_eq!(PodSpec::from_pod(&json!({"metadata": {"uid": "u"}, "spec": {"containers": []}})), Err(SpecError::NoContainers));
        let bad_policy =
            json!({"metadata": {"uid": "u"}, "spec": {"restartPolicy": "Sometimes", "containers": [{"name": "a", "image": "a"}]}});
        assert!(matches!(PodSpec::from_pod(&bad_policy), Err(SpecError::Invalid { field, .. }) if field == "spec.restartPolicy"));
        let unsupported = json!({"metadata": {"uid": "u"}, "spec": {
            "volumes": [{"name": "disk", "hostPath": {"path": "/etc"}}],
            "containers": [{
                "name": "a", "image": "a",
                "env": [{"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}}],
                "volumeMounts": [{"name": "disk", "mountPath": "/etc"}, {"name": "nowhere", "mountPath": "/x"}],
                "resources": {"limits": {"memory": "much"}}
            }]
        }});
        let spec = PodSpec::from_pod(&unsupported).unwrap();
        let problem = spec.containers[0].config_error.as_deref().unwrap();
        assert!(problem.contains("env CPU: valueFrom: only configMapKeyRef, secretKeyRef and fieldRef"), "{problem}");
        assert!(problem.contains("resources.limits.memory"), "{problem}");
        assert!(problem.contains("volume \"disk\": volume type hostPath is not supported"), "{problem}");
        assert!(problem.contains("the pod has no volume \"nowhere\""), "{problem}");
    }

    #[test]
    fn configuration_references_are_read() {
        let pod = json!({"metadata": {"uid": "u", "name": "web", "namespace": "dev", "labels": {"app": "shop"}}, "spec": {
            "nodeName": "n1",
            "volumes": [
                {"name": "conf", "configMap": {"name": "settings", "items": [{"key": "app.toml", "path": "etc/app.toml"}]}},
                {"name": "creds", "secret": {"secretName": "db", "optional": true}},
                {"name": "scratch", "emptyDir": {}},
                {"name": "escape", "configMap": {"name": "x", "items": [{"key": "k", "path": "../../etc/passwd"}]}}
            ],
            "containers": [{
                "name": "a", "image": "a",
                "env": [
                    {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}},
                    {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}}
                ],
                "envFrom": [{"configMapRef": {"name": "settings"}, "prefix": "CFG_"}],
                "volumeMounts": [{"name": "conf", "mountPath": "/config", "readOnly": true}, {"name": "scratch", "mountPath": "/tmp"}]
            }, {
                "name": "b", "image": "b", "volumeMounts": [{"name": "escape", "mountPath": "/e"}]
            }]
        }});
        let spec = PodSpec::from_pod(&pod).unwrap();
        let main = &spec.containers[0];
        assert_eq!(main.config_error, None);
        let secret = config::ConfigRef { kind: config::ConfigKind::Secret, name: "db".into() };
        assert_eq!(main.env[0].1, EnvValue::Key { source: secret, key: "password".into(), optional: false });
        assert_eq!(main.env[1].1, EnvValue::Literal("web".into()));
        assert_eq!(main.env[2].1, EnvValue::Literal("shop".into()));
        assert_eq!(main.env_from[0].prefix, "CFG_");
        assert_eq!(spec.volumes.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(), ["conf", "creds", "scratch"]);
        let escape = spec.containers[1].config_error.as_deref().unwrap();
        assert!(escape.contains("must be a relative path without '..'"), "{escape}");
    }
}
