//! A pod's configuration from ConfigMaps and Secrets, as kubelet gives it:
//! environment variables (`env[].valueFrom.configMapKeyRef|secretKeyRef`,
//! `envFrom[]`, and `fieldRef` to the pod's own metadata) resolved at every
//! container start, and files (`volumes[].configMap|secret`, with `items`)
//! written when the pod starts into a directory of its own under the node's
//! data directory, which the containers that mount it get as a WASI
//! preopened directory (read-only: a configuration volume is never
//! writable). `emptyDir` volumes are scratch directories, writable.
//!
//! What a tenant writes here is hostile until checked: a file path may not
//! leave its volume (no `..`, no absolute path); everything a pod's
//! configuration volumes hold together, and a container's environment, is
//! bounded ([`MAX_VOLUME_BYTES`], [`MAX_ENV_BYTES`]), so a pod cannot fill
//! the node's disk or memory by naming the same large Secret many times.
//! Values of Secrets never appear in messages, events or logs: only names
//! and keys.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use serde_json::Value;

use super::Sources;

/// The most a pod's ConfigMap and Secret volumes may hold together (bytes of files).
pub const MAX_VOLUME_BYTES: usize = 16 << 20;

/// The most a container's environment may hold (names and values).
pub const MAX_ENV_BYTES: usize = 1 << 20;

/// A ConfigMap's or Secret's entries, by key.
pub type ConfigData = BTreeMap<String, Vec<u8>>;

/// Which kind of configuration object a reference names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ConfigKind {
    ConfigMap,
    Secret,
}

impl ConfigKind {
    /// As kubelet words it in messages: `configmap`, `secret`.
    pub fn as_str(self) -> &'static str {
        match self {
            ConfigKind::ConfigMap => "configmap",
            ConfigKind::Secret => "secret",
        }
    }
}

/// A ConfigMap or Secret of the pod's namespace.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConfigRef {
    pub kind: ConfigKind,
    pub name: String,
}

/// Where an environment variable's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvValue {
    /// `value`, or a `fieldRef` already read from the pod.
    Literal(String),
    /// `valueFrom.configMapKeyRef` / `secretKeyRef`.
    Key { source: ConfigRef, key: String, optional: bool },
}

/// One `envFrom` entry: every key of a ConfigMap or Secret, with a prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvFrom {
    pub source: ConfigRef,
    pub prefix: String,
    pub optional: bool,
}

/// A pod volume the node provides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeSpec {
    pub name: String,
    pub source: VolumeSource,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeSource {
    /// `configMap` / `secret`: `items` (key → relative path) or every key as a file of its name.
    Config { source: ConfigRef, items: Option<Vec<(String, String)>>, optional: bool },
    /// `emptyDir`: a scratch directory for the pod's life.
    EmptyDir,
}

/// A container's `volumeMounts[]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub volume: String,
    /// Where the container sees it (`mountPath`).
    pub path: String,
    pub read_only: bool,
}

/// A directory a container is given: the host directory, where the guest sees it, and whether it may write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountedDir {
    pub host: PathBuf,
    pub guest: String,
    pub writable: bool,
}

/// Why a container's configuration cannot be given to it now (kubelet's
/// `CreateContainerConfigError` or `FailedMount`); it is tried again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Reads a `configMapKeyRef`/`secretKeyRef`/`configMapRef`/`secretRef`
/// object: the name (and, with `key`, the key) it names and `optional`.
fn reference(kind: ConfigKind, object: &Value, name_field: &str) -> Result<(ConfigRef, bool), String> {
    let name =
        object.get(name_field).and_then(Value::as_str).filter(|n| !n.is_empty()).ok_or_else(|| format!("{name_field} is required"))?;
    let optional = object.get("optional").and_then(Value::as_bool).unwrap_or(false);
    Ok((ConfigRef { kind, name: name.to_string() }, optional))
}

/// Reads one `env[]` entry's value: `value`, or `valueFrom` (a key of a
/// ConfigMap or Secret, or a field of the pod itself).
pub fn env_value(pod: &Value, var: &Value) -> Result<EnvValue, String> {
    let Some(from) = var.get("valueFrom").filter(|v| !v.is_null()) else {
        return Ok(EnvValue::Literal(var.get("value").and_then(Value::as_str).unwrap_or_default().to_string()));
    };
    for (field, kind, name_field) in [("configMapKeyRef", ConfigKind::ConfigMap, "name"), ("secretKeyRef", ConfigKind::Secret, "name")] {
        if let Some(selector) = from.get(field).filter(|v| !v.is_null()) {
            let (source, optional) = reference(kind, selector, name_field).map_err(|e| format!("valueFrom.{field}: {e}"))?;
            let key = selector.get("key").and_then(Value::as_str).filter(|k| !k.is_empty());
            let key = key.ok_or_else(|| format!("valueFrom.{field}: key is required"))?;
            return Ok(EnvValue::Key { source, key: key.to_string(), optional });
        }
    }
    if let Some(path) = from.pointer("/fieldRef/fieldPath").and_then(Value::as_str) {
        return pod_field(pod, path).map(EnvValue::Literal);
    }
    Err("valueFrom: only configMapKeyRef, secretKeyRef and fieldRef are supported on this node".into())
}

/// The value of a `fieldRef` path of the pod, as the downward API reads it.
fn pod_field(pod: &Value, path: &str) -> Result<String, String> {
    let text = |pointer: &str| pod.pointer(pointer).and_then(Value::as_str).unwrap_or_default().to_string();
    let in_map = |map: &str, key: &str| {
        pod.pointer(&format!("/metadata/{map}")).and_then(|m| m.get(key)).and_then(Value::as_str).unwrap_or_default().to_string()
    };
    let bracketed =
        |prefix: &str| path.strip_prefix(prefix).and_then(|rest| rest.strip_prefix("['")).and_then(|rest| rest.strip_suffix("']"));
    Ok(match path {
        "metadata.name" => text("/metadata/name"),
        "metadata.namespace" => text("/metadata/namespace"),
        "metadata.uid" => text("/metadata/uid"),
        "spec.nodeName" => text("/spec/nodeName"),
        "spec.serviceAccountName" => text("/spec/serviceAccountName"),
        "status.podIP" => text("/status/podIP"),
        _ => {
            if let Some(key) = bracketed("metadata.labels") {
                in_map("labels", key)
            } else if let Some(key) = bracketed("metadata.annotations") {
                in_map("annotations", key)
            } else {
                return Err(format!("valueFrom.fieldRef: fieldPath {path:?} is not supported"));
            }
        }
    })
}

/// Reads one `envFrom[]` entry.
pub fn env_from(entry: &Value) -> Result<EnvFrom, String> {
    let prefix = entry.get("prefix").and_then(Value::as_str).unwrap_or_default().to_string();
    for (field, kind) in [("configMapRef", ConfigKind::ConfigMap), ("secretRef", ConfigKind::Secret)] {
        if let Some(selector) = entry.get(field).filter(|v| !v.is_null()) {
            let (source, optional) = reference(kind, selector, "name").map_err(|e| format!("{field}: {e}"))?;
            return Ok(EnvFrom { source, prefix, optional });
        }
    }
    Err("needs configMapRef or secretRef".into())
}

/// Reads `spec.volumes`: the volumes this node provides, and for each one
/// it does not, why (a container that mounts it cannot start).
pub fn volumes(spec: &Value) -> (Vec<VolumeSpec>, BTreeMap<String, String>) {
    let (mut provided, mut unsupported) = (Vec::new(), BTreeMap::new());
    for volume in spec.get("volumes").and_then(Value::as_array).into_iter().flatten() {
        let Some(name) = volume.get("name").and_then(Value::as_str) else { continue };
        match volume_source(volume) {
            Ok(source) => provided.push(VolumeSpec { name: name.to_string(), source }),
            Err(problem) => {
                unsupported.insert(name.to_string(), problem);
            }
        }
    }
    (provided, unsupported)
}

fn volume_source(volume: &Value) -> Result<VolumeSource, String> {
    for (field, kind, name_field) in [("configMap", ConfigKind::ConfigMap, "name"), ("secret", ConfigKind::Secret, "secretName")] {
        let Some(selector) = volume.get(field).filter(|v| !v.is_null()) else { continue };
        let (source, optional) = reference(kind, selector, name_field).map_err(|e| format!("{field}: {e}"))?;
        let items = match selector.get("items").and_then(Value::as_array) {
            None => None,
            Some(items) => Some(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| {
                        let text = |key: &str| item.get(key).and_then(Value::as_str).filter(|t| !t.is_empty()).map(str::to_string);
                        let key = text("key").ok_or_else(|| format!("{field}.items[{i}].key is required"))?;
                        let path = text("path").ok_or_else(|| format!("{field}.items[{i}].path is required"))?;
                        check_relative(&path).map_err(|e| format!("{field}.items[{i}].path: {e}"))?;
                        Ok((key, path))
                    })
                    .collect::<Result<Vec<_>, String>>()?,
            ),
        };
        return Ok(VolumeSource::Config { source, items, optional });
    }
    if volume.get("emptyDir").is_some_and(|v| !v.is_null()) {
        return Ok(VolumeSource::EmptyDir);
    }
    let kinds: Vec<&str> = volume.as_object().into_iter().flatten().map(|(k, _)| k.as_str()).filter(|k| *k != "name").collect();
    Err(format!("volume type {} is not supported on this node (configMap, secret and emptyDir are)", kinds.join(", ")))
}

/// Reads a container's `volumeMounts`.
pub fn mounts(container: &Value) -> Result<Vec<Mount>, String> {
    let mut mounts = Vec::new();
    for (i, mount) in container.get("volumeMounts").and_then(Value::as_array).into_iter().flatten().enumerate() {
        let text = |key: &str| mount.get(key).and_then(Value::as_str).filter(|t| !t.is_empty());
        let volume = text("name").ok_or_else(|| format!("volumeMounts[{i}].name is required"))?;
        let path = text("mountPath").ok_or_else(|| format!("volumeMounts[{i}].mountPath is required"))?;
        if text("subPath").is_some() {
            return Err(format!("volumeMounts[{i}].subPath is not supported on this node"));
        }
        mounts.push(Mount {
            volume: volume.to_string(),
            path: path.to_string(),
            read_only: mount.get("readOnly").and_then(Value::as_bool).unwrap_or(false),
        });
    }
    Ok(mounts)
}

/// A path inside a volume: relative, made of normal parts only.
fn check_relative(path: &str) -> Result<(), String> {
    let parts = Path::new(path).components();
    if path.len() > 4096 || !parts.clone().all(|part| matches!(part, Component::Normal(_))) || parts.count() == 0 {
        return Err(format!("{path:?} must be a relative path without '..'"));
    }
    Ok(())
}

/// The ConfigMaps and Secrets one resolution has read, each read once.
struct Reads<'a> {
    sources: &'a dyn Sources,
    namespace: &'a str,
    read: BTreeMap<ConfigRef, Option<ConfigData>>,
}

impl<'a> Reads<'a> {
    fn new(sources: &'a dyn Sources, namespace: &'a str) -> Self {
        Reads { sources, namespace, read: BTreeMap::new() }
    }

    /// The data of `source` (`None`: it does not exist).
    async fn get(&mut self, source: &ConfigRef) -> Result<Option<&ConfigData>, ConfigError> {
        if !self.read.contains_key(source) {
            let data = self
                .sources
                .config(source.kind, self.namespace, &source.name)
                .await
                .map_err(|error| ConfigError(format!("reading {} {:?}: {error:#}", source.kind.as_str(), source.name)))?;
            self.read.insert(source.clone(), data);
        }
        Ok(self.read.get(source).and_then(Option::as_ref))
    }

    /// The data of `source`, or the refusal kubelet gives when a required one is missing.
    async fn required(&mut self, source: &ConfigRef, optional: bool) -> Result<Option<&ConfigData>, ConfigError> {
        let namespace = self.namespace;
        match self.get(source).await? {
            Some(data) => Ok(Some(data)),
            None if optional => Ok(None),
            None => Err(ConfigError(format!("{} {:?} not found in namespace {namespace:?}", source.kind.as_str(), source.name))),
        }
    }
}

/// A container's environment, resolved as kubelet does at its start:
/// `envFrom` first (in order, keys that are not valid variable names
/// skipped), then `env` (later entries win).
pub async fn resolve_env(
    sources: &dyn Sources,
    namespace: &str,
    env: &[(String, EnvValue)],
    env_from: &[EnvFrom],
) -> Result<Vec<(String, String)>, ConfigError> {
    let mut reads = Reads::new(sources, namespace);
    let mut resolved: Vec<(String, String)> = Vec::new();
    let set = |resolved: &mut Vec<(String, String)>, name: String, value: String| {
        resolved.retain(|(existing, _)| *existing != name);
        resolved.push((name, value));
    };
    for from in env_from {
        let Some(data) = reads.required(&from.source, from.optional).await? else { continue };
        for (key, value) in data.clone() {
            let name = format!("{}{key}", from.prefix);
            if !valid_env_name(&name) {
                continue;
            }
            set(&mut resolved, name, String::from_utf8_lossy(&value).into_owned());
        }
    }
    for (name, value) in env {
        match value {
            EnvValue::Literal(text) => set(&mut resolved, name.clone(), text.clone()),
            EnvValue::Key { source, key, optional } => {
                let namespace = reads.namespace;
                let Some(data) = reads.required(source, *optional).await? else { continue };
                match data.get(key) {
                    Some(value) => set(&mut resolved, name.clone(), String::from_utf8_lossy(value).into_owned()),
                    None if *optional => {}
                    None => {
                        return Err(ConfigError(format!(
                            "couldn't find key {key} in {} {namespace}/{}",
                            if source.kind == ConfigKind::Secret { "Secret" } else { "ConfigMap" },
                            source.name
                        )));
                    }
                }
            }
        }
    }
    let bytes: usize = resolved.iter().map(|(name, value)| name.len() + value.len() + 2).sum();
    if bytes > MAX_ENV_BYTES {
        return Err(ConfigError(format!("the environment would hold {bytes} bytes, more than the {MAX_ENV_BYTES} a container may have")));
    }
    Ok(resolved)
}

/// Whether `name` is a C identifier-like variable name (what `envFrom` keeps).
fn valid_env_name(name: &str) -> bool {
    !name.is_empty() && !name.starts_with(|c: char| c.is_ascii_digit()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Writes the pod's volumes under `root` (one directory per volume, made
/// afresh): a configuration volume's files from its ConfigMap or Secret
/// (files mode 0400 for Secrets), an emptyDir's empty directory.
pub async fn write_volumes(sources: &dyn Sources, namespace: &str, volumes: &[VolumeSpec], root: &Path) -> Result<(), ConfigError> {
    let mut reads = Reads::new(sources, namespace);
    let mut files: Vec<(PathBuf, Vec<u8>, bool)> = Vec::new();
    let mut total = 0usize;
    for volume in volumes {
        let dir = root.join(&volume.name);
        let VolumeSource::Config { source, items, optional } = &volume.source else { continue };
        let Some(data) = reads.required(source, *optional).await? else { continue };
        let chosen: Vec<(String, String)> = match items {
            Some(items) => items.clone(),
            None => data.keys().map(|key| (key.clone(), key.clone())).collect(),
        };
        for (key, path) in chosen {
            let Some(bytes) = data.get(&key) else {
                if *optional {
                    continue;
                }
                return Err(ConfigError(format!(
                    "volume {:?}: key {key} not found in {} {:?}",
                    volume.name,
                    source.kind.as_str(),
                    source.name
                )));
            };
            total = total.saturating_add(bytes.len());
            if total > MAX_VOLUME_BYTES {
                return Err(ConfigError(format!(
                    "the pod's configuration volumes would hold more than {MAX_VOLUME_BYTES} bytes, the most a pod may have"
                )));
            }
            files.push((dir.join(path), bytes.clone(), source.kind == ConfigKind::Secret));
        }
    }
    let root = root.to_path_buf();
    let names: Vec<String> = volumes.iter().map(|v| v.name.clone()).collect();
    tokio::task::spawn_blocking(move || write_files(&root, &names, files))
        .await
        .map_err(|e| ConfigError(format!("writing the pod's volumes: {e}")))?
        .map_err(|e| ConfigError(format!("writing the pod's volumes: {e}")))
}

fn write_files(root: &Path, volumes: &[String], files: Vec<(PathBuf, Vec<u8>, bool)>) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    for volume in volumes {
        let dir = root.join(volume);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(&dir)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    }
    for (path, bytes, secret) in files {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let mut file =
            std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(if secret { 0o400 } else { 0o444 }).open(&path)?;
        std::io::Write::write_all(&mut file, &bytes)?;
    }
    Ok(())
}

/// The directories a container with `mounts` is given, from the pod's volumes under `root`.
pub fn mounted_dirs(root: &Path, volumes: &[VolumeSpec], mounts: &[Mount]) -> Result<Vec<MountedDir>, ConfigError> {
    mounts
        .iter()
        .map(|mount| {
            let volume = volumes.iter().find(|v| v.name == mount.volume).ok_or_else(|| {
                ConfigError(format!("volumeMount {:?}: the pod has no volume of that name this node provides", mount.volume))
            })?;
            let writable = matches!(volume.source, VolumeSource::EmptyDir) && !mount.read_only;
            Ok(MountedDir { host: root.join(&volume.name), guest: mount.path.clone(), writable })
        })
        .collect()
}
