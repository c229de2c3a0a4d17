//! Kubeconfig files, read as kubectl reads them. `--kubeconfig` names the
//! one file to read; else `KUBECONFIG` lists files (`:`-separated; empty
//! and missing entries skipped) that are merged — the first file that sets
//! `current-context` sets it, and a context, cluster or user is taken whole
//! from the first file that names it, never merged with a later file's
//! entry of the same name; else `./kapsel-data/kubeconfig.yaml`, which
//! `kapsel serve` writes, when it exists. Paths inside a file
//! (`certificate-authority`, a user's `tokenFile`) are relative to the
//! directory of the file that names them. A user's `token` comes before
//! its `tokenFile`, a cluster's `certificate-authority-data` before its
//! `certificate-authority`, as in client-go. Client certificates and exec
//! or auth-provider plug-ins are not read: Kapsel authenticates bearer
//! tokens.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use base64::Engine as _;
use serde::{Deserialize, Deserializer};

use crate::TlsTrust;

/// Where the kubeconfig `kapsel serve` writes lives by default.
pub const DEFAULT_KUBECONFIG: &str = "./kapsel-data/kubeconfig.yaml";

/// The kubeconfig files to read, most important first: `explicit`
/// (`--kubeconfig`) alone, even if it is missing (reading it then fails);
/// else the existing files the `KUBECONFIG` value `list` names, each once;
/// else [`DEFAULT_KUBECONFIG`] if it exists. None: no kubeconfig.
pub fn files(explicit: Option<&Path>, list: Option<&OsStr>) -> Vec<PathBuf> {
    if let Some(path) = explicit {
        return vec![path.to_path_buf()];
    }
    if let Some(list) = list.filter(|list| !list.is_empty()) {
        let mut files: Vec<PathBuf> = Vec::new();
        for path in std::env::split_paths(list) {
            if !path.as_os_str().is_empty() && path.exists() && !files.contains(&path) {
                files.push(path);
            }
        }
        return files;
    }
    let default = PathBuf::from(DEFAULT_KUBECONFIG);
    if default.exists() { vec![default] } else { Vec::new() }
}

/// What the current context of the merged kubeconfigs says.
#[derive(Debug, Default)]
pub struct Target {
    pub server: Option<String>,
    pub token: Option<String>,
    /// The context's namespace.
    pub namespace: Option<String>,
    pub trust: TlsTrust,
}

impl Target {
    /// The target of the kubeconfigs `files` (see [`files`]) merged: their
    /// current context (or, when that names no context, the first one), its
    /// cluster and its user. No files: an empty target.
    pub fn read(files: &[PathBuf]) -> anyhow::Result<Target> {
        if files.is_empty() {
            return Ok(Target::default());
        }
        let mut merged = Kubeconfig::default();
        for path in files {
            merged.merge(Kubeconfig::load(path)?);
        }
        merged.target(files)
    }
}

/// One kubeconfig file, or several merged.
#[derive(Debug, Default, Deserialize)]
struct Kubeconfig {
    #[serde(rename = "current-context", default, deserialize_with = "null_as_default")]
    current_context: String,
    #[serde(default, deserialize_with = "null_as_default")]
    contexts: Vec<Named<ContextEntry>>,
    #[serde(default, deserialize_with = "null_as_default")]
    clusters: Vec<Named<ClusterEntry>>,
    #[serde(default, deserialize_with = "null_as_default")]
    users: Vec<Named<UserEntry>>,
}

/// A context, cluster or user, with its name and the file it came from.
#[derive(Debug, Deserialize)]
struct Named<T> {
    name: String,
    #[serde(alias = "context", alias = "cluster", alias = "user")]
    value: T,
    #[serde(skip)]
    origin: PathBuf,
}

#[derive(Debug, Deserialize)]
struct ContextEntry {
    cluster: String,
    user: String,
    #[serde(default)]
    namespace: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ClusterEntry {
    server: String,
    #[serde(rename = "certificate-authority-data", default)]
    ca_data: Option<String>,
    #[serde(rename = "certificate-authority", default)]
    ca_file: Option<PathBuf>,
    #[serde(rename = "insecure-skip-tls-verify", default)]
    insecure: bool,
}

#[derive(Debug, Deserialize)]
struct UserEntry {
    #[serde(default)]
    token: Option<String>,
    #[serde(rename = "tokenFile", default)]
    token_file: Option<PathBuf>,
}

/// `null` (as kubectl writes an empty list) read as the default.
fn null_as_default<'de, D: Deserializer<'de>, T: Default + Deserialize<'de>>(deserializer: D) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

impl Kubeconfig {
    /// Reads the file at `path`, its paths made relative to its directory.
    fn load(path: &Path) -> anyhow::Result<Kubeconfig> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading kubeconfig {}", path.display()))?;
        if text.trim().is_empty() {
            return Ok(Kubeconfig::default());
        }
        let mut config: Kubeconfig = serde_saphyr::from_str(&text).with_context(|| format!("parsing kubeconfig {}", path.display()))?;
        let dir = path.parent().unwrap_or(Path::new(""));
        for cluster in &mut config.clusters {
            cluster.origin = path.to_path_buf();
            resolve(dir, &mut cluster.value.ca_file);
        }
        for user in &mut config.users {
            user.origin = path.to_path_buf();
            resolve(dir, &mut user.value.token_file);
        }
        for context in &mut config.contexts {
            context.origin = path.to_path_buf();
        }
        Ok(config)
    }

    /// Takes in `later`, a file of less importance: what this one sets stays.
    fn merge(&mut self, later: Kubeconfig) {
        if self.current_context.is_empty() {
            self.current_context = later.current_context;
        }
        add_new(&mut self.contexts, later.contexts);
        add_new(&mut self.clusters, later.clusters);
        add_new(&mut self.users, later.users);
    }

    fn target(&self, files: &[PathBuf]) -> anyhow::Result<Target> {
        let context = self
            .contexts
            .iter()
            .find(|c| c.name == self.current_context)
            .or(self.contexts.first())
            .with_context(|| format!("kubeconfig {} has no context", described(files)))?;
        let cluster = self
            .clusters
            .iter()
            .find(|c| c.name == context.value.cluster)
            .with_context(|| format!("kubeconfig {}: no cluster {:?}", context.origin.display(), context.value.cluster))?;
        let token = match self.users.iter().find(|u| u.name == context.value.user) {
            Some(Named { value: UserEntry { token: Some(token), .. }, .. }) if !token.is_empty() => Some(token.clone()),
            Some(Named { value: UserEntry { token_file: Some(file), .. }, origin, .. }) => Some(
                std::fs::read_to_string(file)
                    .with_context(|| format!("kubeconfig {}: reading the tokenFile {}", origin.display(), file.display()))?
                    .trim()
                    .to_string(),
            ),
            Some(Named { value: UserEntry { token, .. }, .. }) => token.clone(),
            None => None,
        };
        let ca_pem = match (&cluster.value.ca_data, &cluster.value.ca_file) {
            (Some(data), _) => Some(
                base64::engine::general_purpose::STANDARD
                    .decode(data.trim())
                    .with_context(|| format!("kubeconfig {}: certificate-authority-data is not base64", cluster.origin.display()))?,
            ),
            (None, Some(file)) => Some(std::fs::read(file).with_context(|| format!("reading {}", file.display()))?),
            (None, None) => None,
        };
        Ok(Target {
            server: Some(cluster.value.server.clone()),
            token,
            namespace: context.value.namespace.clone(),
            trust: TlsTrust { ca_pem, insecure: cluster.value.insecure },
        })
    }
}

/// Adds the entries of `later` whose names `entries` does not hold yet.
fn add_new<T>(entries: &mut Vec<Named<T>>, later: Vec<Named<T>>) {
    for entry in later {
        if !entries.iter().any(|e| e.name == entry.name) {
            entries.push(entry);
        }
    }
}

/// `path`, when relative, made relative to `dir` (the directory of the kubeconfig naming it).
fn resolve(dir: &Path, path: &mut Option<PathBuf>) {
    if let Some(relative) = path.as_mut().filter(|p| !p.as_os_str().is_empty() && p.is_relative()) {
        *relative = dir.join(&*relative);
    }
}

/// The files, for a message: `a` or `a:b`.
fn described(files: &[PathBuf]) -> String {
    files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn the_kubeconfig_list_skips_empty_missing_and_repeated_entries_and_an_explicit_file_stands_alone() {
        let dir = tempfile::tempdir().unwrap();
        let a = write(dir.path(), "a.yaml", "");
        let b = write(dir.path(), "b.yaml", "");
        let missing = dir.path().join("missing.yaml");
        let list = std::env::join_paths([&a, Path::new(""), &missing, &b, &a]).unwrap();
        assert_eq!(files(None, Some(list.as_os_str())), [a, b]);
        assert_eq!(files(Some(&missing), Some(list.as_os_str())), vec![missing.clone()], "--kubeconfig is read alone, missing or not");
        assert!(files(None, Some(missing.as_os_str())).is_empty(), "a list of missing files: no kubeconfig");
    }

    #[test]
    fn merged_files_keep_the_first_current_context_and_the_first_entry_of_each_name_whole() {
        let dir = tempfile::tempdir().unwrap();
        let first = write(
            dir.path(),
            "first.yaml",
            "current-context: dev
contexts:
- name: dev
  context: {cluster: dev, user: alice, namespace: team-a}
users:
- name: alice
  user: {token: first-token}
clusters: null
",
        );
        let second = write(
            dir.path(),
            "second.yaml",
            "current-context: prod
contexts:
- name: dev
  context: {cluster: prod, user: bob, namespace: team-b}
- name: prod
  context: {cluster: prod, user: bob}
users:
- name: alice
  user: {token: second-token, tokenFile: never-read}
- name: bob
  user: {token: bob-token}
clusters:
- name: dev
  cluster: {server: 'https://dev.example:6443', insecure-skip-tls-verify: true}
- name: prod
  cluster: {server: 'https://prod.example:6443'}
",
        );
        let target = Target::read(&[first.clone(), second.clone()]).unwrap();
        assert_eq!(
            target.server.as_deref(),
            Some("https://dev.example:6443"),
            "dev's context from the first file, its cluster from the second"
        );
        assert_eq!(target.token.as_deref(), Some("first-token"), "alice as the first file has her");
        assert_eq!(target.namespace.as_deref(), Some("team-a"));
        assert!(target.trust.insecure);

        let target = Target::read(&[second, first]).unwrap();
        assert_eq!(target.server.as_deref(), Some("https://prod.example:6443"));
        assert_eq!(target.token.as_deref(), Some("bob-token"));
        assert_eq!(target.namespace, None);
        assert!(!target.trust.insecure);

        let empty = write(dir.path(), "empty.yaml", "");
        assert!(Target::read(&[empty]).unwrap_err().to_string().contains("has no context"));
        assert_eq!(Target::read(&[]).unwrap().server, None);
    }

    #[test]
    fn paths_in_a_kubeconfig_are_relative_to_its_own_directory() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "team/certs/ca.pem", "the team's CA");
        write(dir.path(), "team/secrets/token", "team-token\n");
        write(dir.path(), "admin/ca.pem", "the admin's CA");
        let team = write(
            dir.path(),
            "team/config",
            "current-context: team
contexts:
- name: team
  context: {cluster: shared, user: team}
users:
- name: team
  user: {tokenFile: secrets/token}
",
        );
        let admin = write(
            dir.path(),
            "admin/config",
            "clusters:
- name: shared
  cluster: {server: 'https://127.0.0.1:6443', certificate-authority: ca.pem}
",
        );
        let target = Target::read(&[team, admin]).unwrap();
        assert_eq!(target.token.as_deref(), Some("team-token"), "the token file next to the file naming it, trimmed");
        assert_eq!(target.trust.ca_pem.as_deref(), Some(&b"the admin's CA"[..]), "the CA next to the file naming the cluster");

        let absolute = dir.path().join("team/certs/ca.pem");
        let alone = write(
            dir.path(),
            "team/absolute",
            &format!(
                "contexts:
- name: team
  context: {{cluster: shared, user: team}}
clusters:
- name: shared
  cluster: {{server: 'https://127.0.0.1:6443', certificate-authority: '{}'}}
",
                absolute.display()
            ),
        );
        let target = Target::read(&[alone]).unwrap();
        assert_eq!(target.trust.ca_pem.as_deref(), Some(&b"the team's CA"[..]), "an absolute path stays");
        assert_eq!(target.token, None, "a user the file does not have: no token");
    }
}
