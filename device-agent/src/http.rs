//! HTTPS to the edge's site API, beside the WebSocket session: log uploads and
//! artifact downloads go to the host the agent dials, at the port the edge names,
//! trusting the edges' CA.

use std::path::Path;
use std::time::Duration;

/// A client trusting `ca_file` (none: the system's roots, for plain `http://`).
pub fn client(
    ca_file: Option<&Path>,
    timeout: Option<Duration>,
) -> Result<reqwest::Client, String> {
    let mut client = reqwest::Client::builder()
        .use_rustls_tls()
        .connect_timeout(Duration::from_secs(10));
    if let Some(t) = timeout {
        client = client.timeout(t);
    }
    if let Some(ca) = ca_file {
        let pem = std::fs::read(ca).map_err(|e| format!("reading {}: {e}", ca.display()))?;
        let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| e.to_string())?;
        client = client.add_root_certificate(cert);
    }
    client.build().map_err(|e| e.to_string())
}

/// `scheme://<edge host>:port/path`, the host bracketed when it is an IPv6 address.
pub fn url(edge_host: &str, scheme: &str, port: u16, path: &str) -> String {
    let host = if edge_host.contains(':') {
        format!("[{edge_host}]")
    } else {
        edge_host.to_string()
    };
    format!("{scheme}://{host}:{port}{path}")
}
