//! Kapsel's API client, used by the CLI, node agents and the benchmarks:
//! where the server is and which token to send (`--server`/`--token`, else
//! the kubeconfigs of `--kubeconfig`, `$KUBECONFIG` or
//! `./kapsel-data/kubeconfig.yaml`, read as kubectl reads them: see
//! [`kubeconfig`]), and requests that turn a failure `Status` into an error
//! carrying the server's own message ([`ApiFailure`]).

pub mod kubeconfig;

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use kapsel_api::Status;
pub use reqwest::Method;
use serde_json::Value;

pub use kubeconfig::DEFAULT_KUBECONFIG;

/// The flags that say which server to talk to and how (`--server`, `--token`, `--kubeconfig`, …).
#[derive(Debug, Clone, clap::Args)]
pub struct ConnectionArgs {
    /// API server URL, e.g. https://127.0.0.1:6443 (overrides the kubeconfig).
    #[arg(long, global = true, env = "KAPSEL_SERVER")]
    pub server: Option<String>,
    /// Bearer token (overrides the kubeconfig).
    #[arg(long, global = true, env = "KAPSEL_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Kubeconfig to read the server and token from (default: the files $KUBECONFIG lists, merged as kubectl merges them, then ./kapsel-data/kubeconfig.yaml).
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// PEM file of the CA that signed the server's certificate (overrides the kubeconfig).
    #[arg(long, global = true)]
    pub certificate_authority: Option<PathBuf>,
    /// Do not verify the server's certificate (insecure; for debugging only).
    #[arg(long, global = true)]
    pub insecure_skip_tls_verify: bool,
}

/// How the client verifies the server.
#[derive(Debug, Clone, Default)]
pub struct TlsTrust {
    /// PEM of the CA to trust; none means the system's roots.
    pub ca_pem: Option<Vec<u8>>,
    pub insecure: bool,
}

/// A failure answered by the server, with its `Status`.
#[derive(Debug, thiserror::Error)]
#[error("{} ({})", status.message, status.reason)]
pub struct ApiFailure {
    pub status: Status,
}

/// The message to print for a failed command: the server's message for API
/// failures, the error chain otherwise.
pub fn describe_error(error: &anyhow::Error) -> String {
    if let Some(failure) = error.downcast_ref::<ApiFailure>() {
        let mut text = failure.status.message.clone();
        if let Some(details) = &failure.status.details {
            for cause in &details.causes {
                if !text.contains(&cause.field) {
                    text.push_str(&format!("\n  {}: {}", cause.field, cause.message));
                }
            }
        }
        return text;
    }
    format!("{error:#}")
}

/// An authenticated HTTP client for one server.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    token: Option<String>,
    /// The kubeconfig context's namespace, used when a command has no `-n`.
    pub default_namespace: String,
    http: reqwest::Client,
}

impl Client {
    /// A client for the server `args` name, or the kubeconfigs they lead to.
    pub fn connect(args: &ConnectionArgs) -> anyhow::Result<Client> {
        let files = kubeconfig::files(args.kubeconfig.as_deref(), std::env::var_os("KUBECONFIG").as_deref());
        let mut target = kubeconfig::Target::read(&files)?;
        if let Some(s) = &args.server {
            target.server = Some(s.clone());
        }
        if let Some(t) = &args.token {
            target.token = Some(t.clone());
        }
        if let Some(path) = &args.certificate_authority {
            target.trust.ca_pem = Some(std::fs::read(path).with_context(|| format!("reading {}", path.display()))?);
        }
        target.trust.insecure |= args.insecure_skip_tls_verify;
        let Some(server) = target.server else {
            bail!(
                "no server to talk to: pass --server and --token, or --kubeconfig (or run `kapsel serve`, which writes {DEFAULT_KUBECONFIG})"
            );
        };
        Client::new(&server, target.token, target.namespace.unwrap_or_else(|| "default".into()), &target.trust)
    }

    pub fn new(server: &str, token: Option<String>, default_namespace: String, trust: &TlsTrust) -> anyhow::Result<Client> {
        let mut builder = reqwest::Client::builder().pool_max_idle_per_host(64).tls_backend_rustls();
        if let Some(pem) = &trust.ca_pem {
            let certificates = reqwest::Certificate::from_pem_bundle(pem).context("parsing the certificate authority")?;
            builder = builder.tls_certs_only(certificates);
        }
        if trust.insecure {
            builder = builder.tls_danger_accept_invalid_certs(true);
        }
        let http = builder.build().context("setting up the HTTP client")?;
        Ok(Client { base: server.trim_end_matches('/').to_string(), token, default_namespace, http })
    }

    /// Sends a request and decodes the JSON answer; a failure `Status` becomes [`ApiFailure`].
    pub async fn send(&self, method: Method, path: &str, body: Option<(&str, Vec<u8>)>) -> anyhow::Result<Value> {
        self.send_body(method, path, body.map(|(content_type, bytes)| (content_type, reqwest::Body::from(bytes), None))).await
    }

    /// Uploads a file as the request body, streamed from disk (not read into memory first).
    pub async fn upload_file(&self, method: Method, path: &str, content_type: &str, file: &Path) -> anyhow::Result<Value> {
        let opened = tokio::fs::File::open(file).await.with_context(|| format!("opening {}", file.display()))?;
        let length = opened.metadata().await.with_context(|| format!("reading {}", file.display()))?.len();
        let chunks = futures::stream::try_unfold(opened, |mut file| async move {
            use tokio::io::AsyncReadExt as _;
            let mut chunk = vec![0; 64 << 10];
            let read = file.read(&mut chunk).await?;
            chunk.truncate(read);
            Ok::<_, std::io::Error>((read > 0).then_some((chunk, file)))
        });
        self.send_body(method, path, Some((content_type, reqwest::Body::wrap_stream(chunks), Some(length)))).await
    }

    /// Sends a request with an optional body (content type, body, length when known) and decodes the JSON answer.
    async fn send_body(&self, method: Method, path: &str, body: Option<(&str, reqwest::Body, Option<u64>)>) -> anyhow::Result<Value> {
        let mut request = self.http.request(method.clone(), format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some((content_type, body, length)) = body {
            request = request.header(reqwest::header::CONTENT_TYPE, content_type).body(body);
            if let Some(length) = length {
                request = request.header(reqwest::header::CONTENT_LENGTH, length);
            }
        }
        let response = request.send().await.with_context(|| format!("cannot reach the Kapsel server at {}", self.base))?;
        let code = response.status();
        for warning in response.headers().get_all("Warning") {
            eprintln!("Warning: {}", display_warning(warning.to_str().unwrap_or_default()));
        }
        let bytes = response.bytes().await.context("reading the server's answer")?;
        if code.is_success() {
            return serde_json::from_slice(&bytes).with_context(|| format!("the server's answer to {method} {path} is not JSON"));
        }
        match serde_json::from_slice::<Status>(&bytes) {
            Ok(status) => Err(ApiFailure { status }.into()),
            Err(_) => bail!("{method} {path} failed with HTTP {code}: {}", String::from_utf8_lossy(&bytes)),
        }
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.send(Method::GET, path, None).await
    }

    /// The server's URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// A JSON merge patch (`application/merge-patch+json`).
    pub async fn merge_patch(&self, path: &str, patch: &Value) -> anyhow::Result<Value> {
        self.send(Method::PATCH, path, Some(("application/merge-patch+json", serde_json::to_vec(patch)?))).await
    }

    /// The raw bytes of a GET (a component), or the failure `Status`.
    pub async fn get_bytes(&self, path: &str) -> anyhow::Result<Vec<u8>> {
        let response = self.open(path).await?;
        Ok(response.bytes().await.with_context(|| format!("reading {path}"))?.to_vec())
    }

    /// Starts a GET whose answer is read as it comes (a watch, a followed
    /// log); a failure answer becomes [`ApiFailure`].
    pub async fn open(&self, path: &str) -> anyhow::Result<reqwest::Response> {
        let mut request = self.http.get(format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.with_context(|| format!("cannot reach the Kapsel server at {}", self.base))?;
        let code = response.status();
        if code.is_success() {
            return Ok(response);
        }
        let bytes = response.bytes().await.context("reading the server's answer")?;
        match serde_json::from_slice::<Status>(&bytes) {
            Ok(status) => Err(ApiFailure { status }.into()),
            Err(_) => bail!("GET {path} failed with HTTP {code}: {}", String::from_utf8_lossy(&bytes)),
        }
    }

    /// The events of a watch (`path` with `watch=true`), one JSON object per line, until the server ends it.
    pub async fn watch(&self, path: &str) -> anyhow::Result<impl futures::Stream<Item = anyhow::Result<Value>> + use<>> {
        use futures::StreamExt as _;
        let response = self.open(path).await?;
        let state = (response.bytes_stream().boxed(), Vec::<u8>::new());
        Ok(futures::stream::unfold(state, |(mut bytes, mut pending)| async move {
            loop {
                if let Some(end) = pending.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=end).collect();
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    let event = serde_json::from_slice::<Value>(&line).context("a watch event is not JSON");
                    return Some((event, (bytes, pending)));
                }
                match bytes.next().await? {
                    Ok(chunk) => pending.extend_from_slice(&chunk),
                    Err(error) => return Some((Err(anyhow::Error::new(error).context("reading the watch")), (bytes, Vec::new()))),
                }
            }
        }))
    }

    pub async fn post(&self, path: &str, object: &Value) -> anyhow::Result<Value> {
        self.send(Method::POST, path, Some(("application/json", serde_json::to_vec(object)?))).await
    }

    pub async fn put(&self, path: &str, object: &Value) -> anyhow::Result<Value> {
        self.send(Method::PUT, path, Some(("application/json", serde_json::to_vec(object)?))).await
    }

    pub async fn delete(&self, path: &str) -> anyhow::Result<Value> {
        self.send(Method::DELETE, path, None).await
    }
}

/// The text of a `Warning: 299 - "text"` header.
fn display_warning(header: &str) -> String {
    let text = header.splitn(3, ' ').nth(2).unwrap_or(header).trim();
    serde_json::from_str::<String>(text).unwrap_or_else(|_| text.to_string())
}
