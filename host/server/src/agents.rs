//! Where node agents are reached: the endpoint a node agent publishes in
//! its lease (`kapsel.io/agent-endpoint`) must be `https://IP:PORT` at an
//! `InternalIP` the node registered (and its reported port), so the
//! supervisor, which relays pod logs from it, goes nowhere a node token
//! chose; and the client that trusts only the certificate the agent
//! published. Checked when a node writes its lease (`crate::auth`) and
//! again before each relay (`crate::logs`).

use serde_json::Value;

/// A client for a node agent's log endpoint: it trusts only `certificate`
/// (the agent's, PEM, from its lease), and follows no redirects.
pub fn agent_client(certificate: &str) -> Result<reqwest::Client, String> {
    use rustls::pki_types::pem::PemObject as _;
    let invalid = |e: &dyn std::fmt::Display| format!("its certificate is not valid: {e}");
    let der = rustls::pki_types::CertificateDer::from_pem_slice(certificate.as_bytes()).map_err(|e| invalid(&e))?;
    let certificate = reqwest::Certificate::from_der(&der).map_err(|e| invalid(&e))?;
    reqwest::Client::builder()
        .tls_backend_rustls()
        .tls_certs_only([certificate])
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(std::time::Duration::from_secs(5))
        .build()
        .map_err(|e| format!("its certificate cannot be used: {e}"))
}

/// The address a lease's `kapsel.io/agent-endpoint` names, when it has the
/// only shape relayed to: `https://IP:PORT` (an IP literal, a port — 443
/// when left out — and no user, path, query or fragment).
pub fn parse_agent_endpoint(endpoint: &str) -> Result<std::net::SocketAddr, String> {
    let url = reqwest::Url::parse(endpoint).map_err(|e| format!("{endpoint:?} is not a URL ({e})"))?;
    if url.scheme() != "https" {
        return Err(format!("{endpoint:?} is not an https:// URL"));
    }
    if !url.username().is_empty() || url.password().is_some() || url.query().is_some() || url.fragment().is_some() || url.path() != "/" {
        return Err(format!("{endpoint:?} must be https://IP:PORT, with nothing after the port"));
    }
    let host = url.host_str().unwrap_or_default();
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    let ip: std::net::IpAddr = host.parse().map_err(|_| format!("{endpoint:?} must name the node by its IP address"))?;
    let port = url.port_or_known_default().ok_or_else(|| format!("{endpoint:?} names no port"))?;
    Ok(std::net::SocketAddr::new(ip, port))
}

/// Checks a lease's agent endpoint against its `Node` as registered: the
/// shape of [`parse_agent_endpoint`], an `InternalIP` of the node, and the
/// node's reported agent port (when it reports one).
pub fn check_agent_endpoint(endpoint: &str, node: &Value) -> Result<std::net::SocketAddr, String> {
    let address = parse_agent_endpoint(endpoint)?;
    let registered: Vec<std::net::IpAddr> = node
        .pointer("/status/addresses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|a| a.get("type").and_then(Value::as_str) == Some("InternalIP"))
        .filter_map(|a| a.get("address").and_then(Value::as_str)?.parse().ok())
        .collect();
    if !registered.contains(&address.ip()) {
        let listed: Vec<String> = registered.iter().map(ToString::to_string).collect();
        return Err(format!("{endpoint:?} is not at the node's registered address (status.addresses InternalIP: [{}])", listed.join(", ")));
    }
    let port = node.pointer("/status/daemonEndpoints/kubeletEndpoint/Port").and_then(Value::as_u64);
    if port.is_some_and(|port| port != u64::from(address.port())) {
        return Err(format!(
            "{endpoint:?} is not at the node's registered port (status.daemonEndpoints.kubeletEndpoint.Port: {})",
            port.unwrap_or_default()
        ));
    }
    Ok(address)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_https_at_the_registered_address_is_relayed_to() {
        let node = json!({"status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.7"}, {"type": "Hostname", "address": "n1"}],
                                     "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}}}});
        assert_eq!(check_agent_endpoint("https://10.0.0.7:10250", &node).unwrap(), "10.0.0.7:10250".parse().unwrap());
        assert_eq!(check_agent_endpoint("https://10.0.0.7:10250/", &node).unwrap(), "10.0.0.7:10250".parse().unwrap());
        let refused = |endpoint: &str| check_agent_endpoint(endpoint, &node).unwrap_err();
        assert!(refused("http://10.0.0.7:10250").contains("not an https:// URL"));
        assert!(refused("https://10.0.0.8:10250").contains("not at the node's registered address"));
        assert!(refused("https://169.254.169.254:10250").contains("[10.0.0.7]"));
        assert!(refused("https://n1:10250").contains("by its IP address"), "the Hostname address is not an IP");
        assert!(refused("https://metadata.internal:10250").contains("by its IP address"));
        assert!(refused("https://10.0.0.7:6443").contains("registered port"));
        assert!(refused("https://10.0.0.7").contains("registered port"), "443, the scheme's default, is not the node's port");
        assert!(refused("https://10.0.0.7:10250/admin").contains("nothing after the port"));
        assert!(refused("https://10.0.0.7:10250?x=1").contains("nothing after the port"));
        assert!(refused("https://user:pw@10.0.0.7:10250").contains("nothing after the port"));
        assert!(refused("file:///etc/passwd").contains("not an https:// URL"));
        assert!(refused("not a url").contains("not a URL"));
        // A node that reports no port: any port at its address.
        let portless = json!({"status": {"addresses": [{"type": "InternalIP", "address": "::1"}]}});
        assert!(check_agent_endpoint("https://[::1]:4000", &portless).is_ok());
        assert!(check_agent_endpoint("https://10.0.0.7:4000", &json!({})).is_err(), "a node with no addresses");
    }
}
