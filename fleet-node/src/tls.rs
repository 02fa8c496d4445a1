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
}

/// Returns the development CA and server certificate in `dir`, making them if absent.
/// `hosts` are the DNS names and IP addresses the server certificate is valid for.
pub fn ensure_dev_certs(dir: &Path, hosts: &[String]) -> Result<CertFiles, TlsError> {
    let files = CertFiles {
        ca: Some(dir.join("ca.crt")),
        cert: dir.join("server.crt"),
        key: dir.join("server.key"),
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

    write(&dir.join("ca.key"), &ca_key.serialize_pem(), true)?;
    write(&files.key, &server_key.serialize_pem(), true)?;
    write(&files.cert, &server_cert.pem(), false)?;
    write(&ca_path, &ca_cert.pem(), false)?;
    Ok(files)
}

fn write(path: &Path, contents: &str, private: bool) -> Result<(), TlsError> {
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
/// process-wide provider choice can never make it panic.
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
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(certs, key)?;
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
}
