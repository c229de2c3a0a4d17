//! TLS for the API, as k3s does it: on first start `kapsel serve` makes a
//! private CA (`tls/ca.crt`, `tls/ca.key`, mode 0600) in its data directory;
//! at every start it issues a fresh server certificate from that CA for
//! localhost, the host name, the listen address and any `--tls-san`. The
//! kubeconfig carries the CA, so kubectl, client libraries and the CLI
//! verify the server — and send their bearer tokens, which they refuse to
//! do over plain HTTP. The server certificate's parameters, its rustls
//! configuration and the listener are `kapsel_daemon::tls`'s, which node
//! agents share.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use kapsel_daemon::files::write_atomically;
use kapsel_daemon::tls::{server_config, server_params};
use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;

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
        write_atomically(&ca_cert_path, cert.pem().as_bytes(), 0o644)?;
        write_atomically(&ca_key_path, key.serialize_pem().as_bytes(), 0o600)?;
        tracing::info!(ca = %ca_cert_path.display(), "created the cluster CA");
    }
    let ca_key = KeyPair::from_pem(&std::fs::read_to_string(&ca_key_path).with_context(|| format!("reading {}", ca_key_path.display()))?)
        .context("parsing the CA key")?;
    if !ca_cert_path.exists() {
        // A data directory written before the files were atomic may hold the key alone: its certificate is made again.
        let cert = ca_params().self_signed(&ca_key).context("signing the CA certificate")?;
        write_atomically(&ca_cert_path, cert.pem().as_bytes(), 0o644)?;
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

fn hostname() -> std::io::Result<String> {
    Ok(std::fs::read_to_string("/proc/sys/kernel/hostname")?.trim().to_string())
}
