//! TLS for the API, as k3s does it: on first start `kapsel serve` makes a
//! private CA (`tls/ca.crt`, `tls/ca.key`, mode 0600) in its data directory;
//! at every start it issues a fresh server certificate from that CA for
//! localhost, the host name, the listen address and any `--tls-san`. The
//! kubeconfig carries the CA, so kubectl, client libraries and the CLI
//! verify the server — and send their bearer tokens, which they refuse to
//! do over plain HTTP.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// Longest a client may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The CA and the server certificate of one start.
#[derive(Debug)]
pub struct Certificates {
    /// PEM of the CA, for kubeconfigs.
    pub ca_pem: String,
    pub server_config: Arc<rustls::ServerConfig>,
}

/// Where the CA lives in a data directory.
pub fn ca_path(data_dir: &Path) -> PathBuf {
    data_dir.join("tls").join("ca.crt")
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, "kapsel-ca");
    name.push(DnType::OrganizationName, "Kapsel");
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params.not_before = rcgen::date_time_ymd(2025, 1, 1);
    params.not_after = rcgen::date_time_ymd(2035, 1, 1);
    params
}

/// Loads (or makes, on first start) the CA and issues this start's server certificate.
pub fn prepare(data_dir: &Path, listen: SocketAddr, extra_names: &[String]) -> anyhow::Result<Certificates> {
    let dir = data_dir.join("tls");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let (ca_cert_path, ca_key_path) = (ca_path(data_dir), dir.join("ca.key"));
    // Each file is written atomically, the certificate before the key: a
    // key in place means its certificate is too. A start killed between the
    // two leaves no key, and the next start makes the CA afresh.
    if !ca_key_path.exists() {
        let key = KeyPair::generate().context("generating the CA key")?;
        let cert = ca_params().self_signed(&key).context("signing the CA certificate")?;
        crate::files::write_atomically(&ca_cert_path, cert.pem().as_bytes(), 0o644)?;
        crate::files::write_atomically(&ca_key_path, key.serialize_pem().as_bytes(), 0o600)?;
        tracing::info!(ca = %ca_cert_path.display(), "created the cluster CA");
    }
    let ca_key = KeyPair::from_pem(&std::fs::read_to_string(&ca_key_path).with_context(|| format!("reading {}", ca_key_path.display()))?)
        .context("parsing the CA key")?;
    if !ca_cert_path.exists() {
        // A data directory written before the files were atomic may hold the key alone: its certificate is made again.
        let cert = ca_params().self_signed(&ca_key).context("signing the CA certificate")?;
        crate::files::write_atomically(&ca_cert_path, cert.pem().as_bytes(), 0o644)?;
        tracing::warn!(ca = %ca_cert_path.display(), "the CA certificate was missing: made it again from the CA key");
    }
    let ca_pem = std::fs::read_to_string(&ca_cert_path).with_context(|| format!("reading {}", ca_cert_path.display()))?;
    let issuer = Issuer::new(ca_params(), ca_key);

    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()];
    if let Ok(host) = hostname() {
        names.push(host);
    }
    if !listen.ip().is_unspecified() {
        names.push(listen.ip().to_string());
    }
    names.extend(extra_names.iter().cloned());
    names.sort();
    names.dedup();
    let params = server_params("kapsel-apiserver", names)?;
    let server_key = KeyPair::generate().context("generating the server key")?;
    let server_cert = params.signed_by(&server_key, &issuer).context("signing the server certificate")?;

    let ca_der = CertificateDer::pem_slice_iter(ca_pem.as_bytes())
        .next()
        .context("the CA file holds no certificate")?
        .context("parsing the CA certificate")?;
    let server_config = server_config(vec![server_cert.der().clone(), ca_der], &server_key)?;
    Ok(Certificates { ca_pem, server_config })
}

/// A self-signed server certificate for `names` (IP addresses or DNS
/// names), valid for a year, made at each start and kept in memory only:
/// its PEM, to be trusted by exactly the one client that needs it, and the
/// server configuration presenting it. A node agent's log endpoint uses
/// one; the supervisor learns it from the agent's lease.
pub fn self_signed(common_name: &str, names: Vec<String>) -> anyhow::Result<(String, Arc<rustls::ServerConfig>)> {
    let params = server_params(common_name, names)?;
    let key = KeyPair::generate().context("generating the key")?;
    let cert = params.self_signed(&key).context("signing the certificate")?;
    Ok((cert.pem(), server_config(vec![cert.der().clone()], &key)?))
}

/// A server certificate's parameters: `names` (IP addresses or DNS names),
/// server authentication only, valid from an hour ago for a year.
fn server_params(common_name: &str, names: Vec<String>) -> anyhow::Result<CertificateParams> {
    let mut params = CertificateParams::new(names).context("server certificate names")?;
    params.distinguished_name.push(DnType::CommonName, common_name);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let now = time_now();
    params.not_before = now - Duration::from_secs(3600);
    params.not_after = now + Duration::from_secs(365 * 24 * 3600);
    Ok(params)
}

/// rustls (ring) serving `chain` with `key`, HTTP/1.1.
fn server_config(chain: Vec<CertificateDer<'static>>, key: &KeyPair) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("the server certificate")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn time_now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

fn hostname() -> std::io::Result<String> {
    Ok(std::fs::read_to_string("/proc/sys/kernel/hostname")?.trim().to_string())
}

/// A listener that hands axum TLS streams: TCP connections are accepted in
/// a background task and each handshake runs in its own task, so a slow
/// client never holds up the others.
#[derive(Debug)]
pub struct TlsListener {
    streams: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    pub fn new(listener: TcpListener, config: Arc<rustls::ServerConfig>) -> std::io::Result<TlsListener> {
        let local = listener.local_addr()?;
        let acceptor = TlsAcceptor::from(config);
        let (sender, streams) = mpsc::channel(256);
        tokio::spawn(async move {
            loop {
                let (tcp, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of file descriptors and the like: back off rather than spin.
                        tracing::warn!(%error, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let (acceptor, handshaken) = (acceptor.clone(), sender.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let _ = handshaken.send((stream, peer)).await;
                        }
                        Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
                if sender.is_closed() {
                    return;
                }
            }
        });
        Ok(TlsListener { streams, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.streams.recv().await {
            Some(accepted) => accepted,
            // The acceptor task only ends when this listener is gone.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
