//! Kapsel's supervisor, in two layers over the object store.
//!
//! The HTTP layer ([`http`]: [`router`], authentication, the Kubernetes
//! protocol, the endpoints) parses requests and answers them; it never
//! touches the store. The application — every other module — holds the
//! operations on objects ([`objects`]) and the other operations (plug-in
//! uploads [`plugins`], image pushes [`artifacts`], pod logs [`logs`],
//! policy reviews [`admission::review`], on-demand audits
//! [`controllers::audit`], template instantiation [`templates`]), the
//! rules of each kind ([`strategy`]), admission, quotas, the in-memory
//! copies of stored kinds kept by [`reflector`]s, and the [`controllers`]
//! and [`scheduler`] that run beside the API; it names no HTTP type, so
//! controllers and benchmarks call it as the HTTP layer does. [`serve`] is
//! `kapsel serve`: it prepares the data directory (database, admin token,
//! kubeconfig, TLS), opens the store and serves HTTPS until SIGTERM/ctrl-c.

pub mod admission;
pub mod agents;
pub mod artifacts;
pub mod auth;
pub mod budget;
pub mod classes;
pub mod controllers;
pub mod error;
pub mod events;
pub mod http;
pub mod limits;
pub mod listing;
pub mod logs;
pub mod objects;
pub mod operation;
pub mod patch;
pub mod plugins;
pub mod pod_network;
pub mod quota;
pub mod reflector;
pub mod scheduler;
pub mod serve;
pub mod strategy;
pub mod templates;
pub mod tls;
pub mod watches;

use std::sync::Arc;

use kapsel_store::{Store, StoreError};

use crate::auth::Authenticator;

pub use crate::http::router;

/// What the server says about itself in discovery.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    /// The `host:port` clients should use.
    pub advertise_address: String,
}

/// Shared state of every request handler.
#[derive(Debug, Clone)]
pub struct App {
    pub store: Store,
    pub auth: Authenticator,
    pub info: Arc<ServerInfo>,
    /// Turns `true` when the server is stopping; long-lived responses (watches) end then.
    pub stopping: tokio::sync::watch::Receiver<bool>,
    /// The active plug-ins.
    pub plugins: plugins::PluginRegistry,
    /// The admission policies in force.
    pub admission: admission::Admission,
    /// The watches each identity has open, and how many it may.
    pub watch_limits: watches::WatchLimits,
}

impl App {
    /// Whether the server can serve: its store answers.
    pub async fn ready(&self) -> Result<(), StoreError> {
        self.store.revisions().await.map(|_| ())
    }
}

/// The layers are kept apart: the application (every module but [`http`],
/// and the wiring in `lib.rs` and [`serve`]) names no HTTP type and does
/// not import the HTTP layer; the HTTP layer never touches the store; and
/// no two modules import each other.
#[cfg(test)]
mod layers {
    use std::path::{Path, PathBuf};

    /// What the application may not name, and what the HTTP layer may not.
    const NOT_IN_THE_APPLICATION: &[&str] = &["axum", "http::", "tower", "hyper", "HeaderMap", "StatusCode"];
    const NOT_IN_THE_HTTP_LAYER: &[&str] = &["kapsel_store", ".store.", ".store)", "Store"];

    fn sources(dir: &Path, found: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("read the source directory") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                sources(&path, found);
            } else if path.extension().is_some_and(|e| e == "rs") {
                found.push(path);
            }
        }
    }

    /// The lines of `path` that are code (comments and doc comments left out) naming one of `words`.
    fn naming(path: &Path, words: &[&str]) -> Vec<String> {
        let text = std::fs::read_to_string(path).expect("read a source file");
        text.lines()
            .enumerate()
            .filter(|(_, line)| !line.trim_start().starts_with("//"))
            .filter(|(_, line)| words.iter().any(|word| line.contains(word)))
            .map(|(n, line)| format!("{}:{}: {}", path.display(), n + 1, line.trim()))
            .collect()
    }

    #[test]
    fn the_application_names_no_http_type_and_the_http_layer_no_store() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        sources(&src, &mut files);
        let http = src.join("http");
        let wiring = [src.join("lib.rs"), src.join("serve.rs")];
        let (mut application, mut protocol) = (Vec::new(), Vec::new());
        for file in &files {
            if file.starts_with(&http) {
                protocol.extend(naming(file, NOT_IN_THE_HTTP_LAYER));
            } else if !wiring.contains(file) {
                application.extend(naming(file, NOT_IN_THE_APPLICATION));
            }
        }
        assert!(files.len() > 30 && files.iter().any(|f| f.starts_with(&http)), "the sources were not found: {files:?}");
        assert!(application.is_empty(), "the application names HTTP types or the HTTP layer:\n{}", application.join("\n"));
        assert!(protocol.is_empty(), "the HTTP layer touches the store:\n{}", protocol.join("\n"));
    }

    /// The module a source file belongs to: a top-level module, or one of the HTTP layer's.
    fn module_of(src: &Path, file: &Path) -> String {
        let relative = file.strip_prefix(src).expect("under src").with_extension("");
        let parts: Vec<String> = relative.iter().map(|p| p.to_string_lossy().into_owned()).collect();
        match parts.as_slice() {
            [http, sub, ..] if http == "http" && sub != "mod" => format!("http::{sub}"),
            [top, ..] => top.clone(),
            [] => String::new(),
        }
    }

    /// The modules the code lines of `text` name through `crate::…` paths.
    fn imports(text: &str) -> std::collections::BTreeSet<String> {
        let mut found = std::collections::BTreeSet::new();
        for line in text.lines().filter(|line| !line.trim_start().starts_with("//")) {
            for (at, _) in line.match_indices("crate::") {
                let rest = &line[at + "crate::".len()..];
                let paths: Vec<&str> = match rest.strip_prefix('{') {
                    Some(group) => group.split('}').next().unwrap_or_default().split(',').collect(),
                    None => vec![rest],
                };
                for path in paths {
                    let mut segments =
                        path.trim().split("::").map(|s| s.split(|c: char| !(c.is_alphanumeric() || c == '_')).next().unwrap_or_default());
                    let first = segments.next().unwrap_or_default();
                    let module = match (first, segments.next()) {
                        ("http", Some(sub)) if !sub.is_empty() && sub.starts_with(char::is_lowercase) => format!("http::{sub}"),
                        _ => first.to_string(),
                    };
                    found.insert(module);
                }
            }
        }
        found
    }

    #[test]
    fn no_two_modules_import_each_other() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        sources(&src, &mut files);
        let mut graph: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> = Default::default();
        for file in files.iter().filter(|f| !f.ends_with("lib.rs")) {
            let module = module_of(&src, file);
            let named = imports(&std::fs::read_to_string(file).expect("read a source file"));
            graph.entry(module.clone()).or_default().extend(named.into_iter().filter(|m| *m != module));
        }
        assert!(graph.get("objects").is_some_and(|i| i.contains("strategy")), "the imports were not read: {graph:?}");
        let mut mutual = Vec::new();
        for (a, named) in &graph {
            for b in named.iter().filter(|b| a < *b && graph.get(*b).is_some_and(|back| back.contains(a))) {
                mutual.push(format!("{a} <-> {b}"));
            }
        }
        assert!(mutual.is_empty(), "modules that import each other: {mutual:?}");
    }
}
