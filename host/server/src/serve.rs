//! `kapsel serve`: prepare the data directory, open the store, make sure
//! the built-in IT admin can log in, and serve the API until SIGTERM or
//! ctrl-c (in-flight requests finish; watches end).
//!
//! The data directory holds the SQLite database (unless `--datastore`
//! names PostgreSQL), `admin.token` (mode 0600, the admin's bearer token),
//! `tls/` (the cluster CA, see [`crate::tls`]) and `kubeconfig.yaml` (the
//! server's address, its CA and the admin token, for kapsel and kubectl alike),
//! `plugin-cache/` (compiled plug-ins) and `volumes/` (the storage roots of
//! storage drivers, one directory per plug-in), and, with the embedded node
//! agent, `node.token` (its node token) and `node/` (its own directory). On
//! first start it installs the default plug-ins
//! ([`crate::plugins::install_defaults`]). Beside the API it runs the
//! controllers, the scheduler, the node lifecycle controller and — unless
//! `--no-local-node` — a node agent for this host ([`LocalNode`]: the
//! binary runs it as a child process that outlives the supervisor), which
//! reaches the API over HTTPS like any other agent.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use kapsel_api::kinds::token::TOKEN;
use kapsel_store::{Key, Store, StoreError, StoreOptions};
use serde_json::json;

use crate::auth::{Authenticator, hash_secret, new_secret};
use crate::{App, ServerInfo, router, tls};

/// Settings of `kapsel serve`.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// `sqlite://…` or `postgres://…`; `None` means SQLite in the data directory.
    pub datastore: Option<String>,
    pub store: StoreOptions,
    /// Extra DNS names or IP addresses for the server certificate.
    pub tls_san: Vec<String>,
    /// Install the default plug-ins on first start.
    pub default_plugins: bool,
    /// How often the admission audit runs ([`crate::controllers::audit`]); zero turns it off.
    pub audit_interval: std::time::Duration,
    /// When nodes count as lost, and their pods as failed.
    pub node_lifecycle: crate::controllers::node_lifecycle::NodeLifecycleOptions,
    /// The node agent to run in-process for this host, if any.
    pub local_node: Option<LocalNode>,
    /// The most watches one identity but IT admins may hold open ([`crate::watches::WatchLimits`]).
    pub max_watches_per_identity: usize,
    /// The most `AdmissionPolicy` objects a namespace's tenants may create.
    pub max_namespace_policies: usize,
}

/// The embedded node agent of `kapsel serve`: its node's name, and the
/// agent itself (the binary's `kapsel node`, given what it needs to reach
/// this server as that node).
#[derive(Clone)]
pub struct LocalNode {
    pub name: String,
    pub agent: Arc<dyn Fn(LocalNodeContext) -> futures::future::BoxFuture<'static, anyhow::Result<()>> + Send + Sync>,
}

impl std::fmt::Debug for LocalNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalNode").field("name", &self.name).finish_non_exhaustive()
    }
}

/// What the embedded node agent is given.
#[derive(Debug, Clone)]
pub struct LocalNodeContext {
    pub name: String,
    /// `https://host:port` of this server.
    pub server: String,
    /// PEM of the cluster CA.
    pub ca_pem: String,
    /// The file holding it (`DATA/tls/ca.crt`).
    pub ca_file: PathBuf,
    /// The node's bearer token (`node.token` in the data directory).
    pub token: String,
    /// The agent's own directory: `<data dir>/node`.
    pub data_dir: PathBuf,
    /// Turns `true` when the server stops.
    pub stopping: tokio::sync::watch::Receiver<bool>,
}

/// Files `kapsel serve` writes in its data directory.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";
/// The embedded node agent's token.
pub const NODE_TOKEN_FILE: &str = "node.token";
/// The embedded node agent's directory (images, pod logs).
pub const NODE_DIR: &str = "node";
pub const KUBECONFIG_FILE: &str = "kubeconfig.yaml";
pub const DATABASE_FILE: &str = "kapsel.db";
/// Compiled plug-ins, so a restart does not compile them again.
pub const PLUGIN_CACHE_DIR: &str = "plugin-cache";
/// Storage drivers' roots, `volumes/<plug-in>`.
pub const VOLUMES_DIR: &str = "volumes";

/// The datastore URL `config` selects.
pub fn datastore_url(config: &ServeConfig) -> String {
    config.datastore.clone().unwrap_or_else(|| format!("sqlite://{}?mode=rwc", config.data_dir.join(DATABASE_FILE).display()))
}

/// Runs the supervisor until a shutdown signal.
pub async fn run(config: ServeConfig) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir).with_context(|| format!("creating the data directory {}", config.data_dir.display()))?;
    std::fs::set_permissions(&config.data_dir, std::fs::Permissions::from_mode(0o700)).ok();
    let url = datastore_url(&config);
    let store = Store::open(&url, config.store.clone()).await.with_context(|| format!("opening the datastore {}", redact(&url)))?;
    let admin_secret = ensure_admin_token(&config.data_dir, &store).await?;
    let first_start = ensure_namespace(&store, DEFAULT_NAMESPACE).await?;
    ensure_namespace(&store, kapsel_api::kinds::lease::NODE_LEASE_NAMESPACE).await?;
    let node_secret = match &config.local_node {
        Some(local) => Some(ensure_node_token(&config.data_dir, &store, &local.name).await?),
        None => None,
    };
    if first_start && config.default_plugins {
        crate::plugins::install_defaults(&store).await.context("installing the default plug-ins")?;
    }
    let auth = Authenticator::start(&store).await.context("loading tokens")?;

    let listener = tokio::net::TcpListener::bind(config.listen).await.with_context(|| format!("binding {}", config.listen))?;
    let bound = listener.local_addr()?;
    let certificates = tls::prepare(&config.data_dir, bound, &config.tls_san)?;
    let advertise = advertised(bound);
    let kubeconfig = config.data_dir.join(KUBECONFIG_FILE);
    write_kubeconfig(&kubeconfig, &format!("https://{advertise}"), &certificates.ca_pem, &admin_secret)?;
    let listener = kapsel_daemon::tls::TlsListener::new(listener, certificates.server_config)?;
    tracing::info!(address = %bound, datastore = store.backend_name(), data_dir = %config.data_dir.display(), kubeconfig = %kubeconfig.display(), "kapsel is serving");

    let (stop, stopping) = tokio::sync::watch::channel(false);
    let cache = kapsel_plugins::CompileCache::new(config.data_dir.join(PLUGIN_CACHE_DIR));
    // Tenants' policies run in the Rego evaluator component, compiled when
    // the first one is (seconds of CPU, which a server without tenants'
    // policies never spends), then read back from the cache on later starts.
    kapsel_plugins::rego::use_compile_cache(cache.clone());
    let plugins =
        crate::plugins::PluginRegistry::start(&store, Some(cache), config.data_dir.join(VOLUMES_DIR)).await.context("loading plug-ins")?;
    let admission = crate::admission::Admission::start(&store).await.context("loading admission policies")?;
    admission.set_max_namespace_policies(config.max_namespace_policies);
    let app = App {
        store,
        auth,
        info: Arc::new(ServerInfo { advertise_address: advertise.clone() }),
        stopping,
        plugins,
        admission,
        watch_limits: crate::watches::WatchLimits::new(config.max_watches_per_identity),
    };
    crate::controllers::start(&app);
    crate::controllers::audit::start(&app, config.audit_interval);
    crate::scheduler::start(&app, crate::scheduler::SchedulerOptions::default());
    crate::controllers::node_lifecycle::start(&app, config.node_lifecycle);
    if let (Some(local), Some(token)) = (&config.local_node, node_secret) {
        let context = LocalNodeContext {
            name: local.name.clone(),
            server: format!("https://{advertise}"),
            ca_pem: certificates.ca_pem.clone(),
            ca_file: tls::ca_path(&config.data_dir),
            token,
            data_dir: config.data_dir.join(NODE_DIR),
            stopping: app.stopping.clone(),
        };
        let agent = (local.agent)(context);
        let name = local.name.clone();
        tokio::spawn(async move {
            if let Err(error) = agent.await {
                tracing::error!(node = %name, error = format!("{error:#}"), "the embedded node agent stopped");
            }
        });
    }
    let server = axum::serve(listener, router(app)).with_graceful_shutdown(async move {
        shutdown_signal().await;
        // Ends open watches so that graceful shutdown does not wait for their timeouts.
        let _ = stop.send(true);
    });
    server.await.context("serving")?;
    tracing::info!("kapsel stopped");
    Ok(())
}

/// A client-usable address for a bound one (`0.0.0.0` becomes loopback).
fn advertised(bound: SocketAddr) -> String {
    if bound.ip().is_unspecified() { format!("127.0.0.1:{}", bound.port()) } else { bound.to_string() }
}

/// Hides a password in a datastore URL for logs and errors.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// Reads the secret in `path`, creating it (mode 0600) with a new one when it does not exist.
fn ensure_secret_file(path: &Path) -> anyhow::Result<String> {
    let secret = match std::fs::read_to_string(path) {
        Ok(text) => text.trim().to_string(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let secret = new_secret();
            kapsel_daemon::files::write_atomically(path, format!("{secret}\n").as_bytes(), 0o600)?;
            secret
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    anyhow::ensure!(!secret.is_empty(), "{} is empty: delete it and restart to issue a new token", path.display());
    Ok(secret)
}

/// Stores a Token named `<prefix>-<hash prefix>` for `secret` with `spec`, unless it exists.
async fn store_token(store: &Store, prefix: &str, secret: &str, mut spec: serde_json::Value) -> anyhow::Result<()> {
    let hash = hash_secret(secret);
    // Named by its hash, so replicas sharing a database keep theirs.
    let name = format!("{prefix}-{}", &hash["sha256:".len().."sha256:".len() + 10]);
    spec["secretHash"] = json!(hash);
    let mut token = kapsel_api::object::new_object(&TOKEN.api_version(), TOKEN.kind, None, &name);
    token["spec"] = spec;
    match store.create(Key::new(TOKEN.store_key(), "", &name), token).await {
        Ok(_) => tracing::info!(token = %name, "issued a token"),
        Err(StoreError::AlreadyExists) => {}
        Err(e) => return Err(e).context("storing a token"),
    }
    Ok(())
}

/// Reads (or creates) `admin.token` and makes sure the store holds its hash.
async fn ensure_admin_token(data_dir: &Path, store: &Store) -> anyhow::Result<String> {
    let secret = ensure_secret_file(&data_dir.join(ADMIN_TOKEN_FILE))?;
    store_token(store, "admin", &secret, json!({"user": "admin", "admin": true, "roles": []})).await?;
    Ok(secret)
}

/// Reads (or creates) `node.token`, the embedded node agent's, and makes sure the store holds its hash.
async fn ensure_node_token(data_dir: &Path, store: &Store, node: &str) -> anyhow::Result<String> {
    let secret = ensure_secret_file(&data_dir.join(NODE_TOKEN_FILE))?;
    let user = kapsel_api::kinds::token::node_user(node);
    store_token(store, &format!("node-{node}"), &secret, json!({"user": user, "node": node})).await?;
    Ok(secret)
}

/// The namespace kubeconfigs point at, as in Kubernetes; created on first start.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Creates the namespace `name` unless it exists; `true` when it did not (for `default`: the store is new).
async fn ensure_namespace(store: &Store, name: &str) -> anyhow::Result<bool> {
    let mut namespace = kapsel_api::object::new_object("v1", "Namespace", None, name);
    namespace["status"] = json!({"phase": "Active"});
    match store.create(Key::new(kapsel_api::kinds::namespace::NAMESPACE.store_key(), "", name), namespace).await {
        Ok(_) => Ok(true),
        Err(StoreError::AlreadyExists) => Ok(false),
        Err(e) => Err(e).with_context(|| format!("creating the namespace {name}")),
    }
}

/// Writes a kubeconfig (mode 0600) for the admin, as k3s does.
fn write_kubeconfig(path: &Path, server: &str, ca_pem: &str, token: &str) -> anyhow::Result<()> {
    use base64::Engine as _;
    let ca_data = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "kapsel", "cluster": {"server": server, "certificate-authority-data": ca_data}}],
        "users": [{"name": "kapsel-admin", "user": {"token": token}}],
        "contexts": [{"name": "kapsel", "context": {"cluster": "kapsel", "user": "kapsel-admin", "namespace": "default"}}],
        "current-context": "kapsel",
        "preferences": {},
    });
    // Long values (the CA's base64) stay on one line, as kubectl writes them.
    let text = serde_saphyr::to_string_with_options(&config, serde_saphyr::ser_options! { folded_wrap_chars: usize::MAX })?;
    kapsel_daemon::files::write_atomically(path, text.as_bytes(), 0o600)
}

async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = terminate => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact("postgres://u:secret@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("sqlite://x.db"), "sqlite://x.db");
    }
}
