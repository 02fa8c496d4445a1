//! TLS for the operator APIs. With no certificate configured, a node makes a
//! development CA and a server certificate signed by it on first start, in
//! `DATA_DIR/tls/`, and reuses them afterwards, so `curl --cacert DATA_DIR/tls/ca.crt`
//! works out of the box.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("reading {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("generating development certificates: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("building the TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// Where a node's certificate material is.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub ca: Option<PathBuf>,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The secret session tickets are sealed with (`tickets.rs`), made on first start.
    pub tickets: PathBuf,
}

/// Returns the development CA and server certificate in `dir`, making them if absent.
/// `hosts` are the DNS names and IP addresses the server certificate is valid for.
pub fn ensure_dev_certs(dir: &Path, hosts: &[String]) -> Result<CertFiles, TlsError> {
    let files = CertFiles {
        ca: Some(dir.join("ca.crt")),
        cert: dir.join("server.crt"),
        key: dir.join("server.key"),
        tickets: dir.join("ticket.key"),
    };
    let ca_path = dir.join("ca.crt");
    if ca_path.exists() && files.cert.exists() && files.key.exists() {
        return Ok(files);
    }
    std::fs::create_dir_all(dir).map_err(|source| TlsError::Write {
        path: dir.to_path_buf(),
        source,
    })?;

    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::default();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Fleet development CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key)?;

    let server_key = KeyPair::generate()?;
    let mut params = CertificateParams::new(hosts.to_vec())?;
    params.distinguished_name.push(
        DnType::CommonName,
        hosts.first().map_or("localhost", String::as_str),
    );
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let server_cert = params.signed_by(&server_key, &ca_cert, &ca_key)?;

    write_private(&dir.join("ca.key"), ca_key.serialize_pem().as_bytes())?;
    write_private(&files.key, server_key.serialize_pem().as_bytes())?;
    write(&files.cert, server_cert.pem().as_bytes(), false)?;
    write(&ca_path, ca_cert.pem().as_bytes(), false)?;
    Ok(files)
}

/// Writes a file only its owner can read, making its directory if needed.
pub(crate) fn write_private(path: &Path, contents: &[u8]) -> Result<(), TlsError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| TlsError::Write {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    write(path, contents, true)
}

fn write(path: &Path, contents: &[u8], private: bool) -> Result<(), TlsError> {
    let err = |source| TlsError::Write {
        path: path.to_path_buf(),
        source,
    };
    std::fs::write(path, contents).map_err(err)?;
    if private {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    }
    Ok(())
}

/// A rustls server configuration from PEM files, pinned to the ring provider so the
/// process-wide provider choice can never make it panic. It issues one session ticket
/// per connection, which opens after a restart too.
pub fn server_config(files: &CertFiles) -> Result<rustls::ServerConfig, TlsError> {
    let read_err = |path: &Path, e: rustls::pki_types::pem::Error| TlsError::Read {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| read_err(&files.cert, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| read_err(&files.cert, e))?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| read_err(&files.key, e))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(certs, key)?;
    config.ticketer = Arc::new(crate::tickets::Tickets::from_file(&files.tickets)?);
    // One is enough: every resumption hands out the next.
    config.send_tls13_tickets = 1;
    Ok(config)
}

/// A rustls client configuration that trusts only the CA certificates in `ca_file`
/// (a federation peer's CA, not the system's roots).
pub fn client_config(ca_file: &Path) -> Result<rustls::ClientConfig, TlsError> {
    let read_err = |e: rustls::pki_types::pem::Error| TlsError::Read {
        path: ca_file.to_path_buf(),
        message: e.to_string(),
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file).map_err(read_err)? {
        roots.add(cert.map_err(read_err)?)?;
    }
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn makes_certificates_once_and_loads_them() {
        let dir = tempfile::tempdir().expect("temp dir");
        let hosts = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let files = ensure_dev_certs(dir.path(), &hosts).expect("generated");
        let first = std::fs::read(&files.cert).expect("cert written");
        let again = ensure_dev_certs(dir.path(), &hosts).expect("reused");
        assert_eq!(first, std::fs::read(&again.cert).expect("cert kept"));
        server_config(&files).expect("loads");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&files.key)
            .expect("key")
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "private key is not readable by others");
    }

    /// One TLS connection over an in-memory pipe; how its handshake went.
    async fn handshake(
        server: &Arc<rustls::ServerConfig>,
        client: &Arc<rustls::ClientConfig>,
    ) -> Option<rustls::HandshakeKind> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (near, far) = tokio::io::duplex(64 * 1024);
        let acceptor = tokio_rustls::TlsAcceptor::from(server.clone());
        let served = tokio::spawn(async move {
            let mut tls = acceptor.accept(far).await.expect("server handshake");
            tls.write_all(b"hello").await.expect("write");
            tls.flush().await.expect("flush");
            let mut rest = Vec::new();
            let _ = tls.read_to_end(&mut rest).await;
        });
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
        let mut tls = tokio_rustls::TlsConnector::from(client.clone())
            .connect(name, near)
            .await
            .expect("client handshake");
        // Reading past the handshake takes in the session ticket sent after it.
        let mut hello = [0u8; 5];
        tls.read_exact(&mut hello).await.expect("read");
        let kind = tls.get_ref().1.handshake_kind();
        tls.shutdown().await.expect("close");
        served.await.expect("server task");
        kind
    }

    #[tokio::test]
    async fn a_client_resumes_its_session_after_the_server_restarts() {
        let dir = tempfile::tempdir().expect("temp dir");
        let hosts = vec!["localhost".to_string()];
        let files = ensure_dev_certs(dir.path(), &hosts).expect("generated");
        let ca = files.ca.clone().expect("ca");
        let client = Arc::new(client_config(&ca).expect("client"));
        let first = Arc::new(server_config(&files).expect("server"));
        assert_eq!(
            handshake(&first, &client).await,
            Some(rustls::HandshakeKind::Full)
        );
        let restarted = Arc::new(server_config(&files).expect("server again"));
        assert_eq!(
            handshake(&restarted, &client).await,
            Some(rustls::HandshakeKind::Resumed)
        );
        // A client that never met this server starts from a full handshake.
        let stranger = Arc::new(client_config(&ca).expect("client"));
        assert_eq!(
            handshake(&restarted, &stranger).await,
            Some(rustls::HandshakeKind::Full)
        );
    }
}
