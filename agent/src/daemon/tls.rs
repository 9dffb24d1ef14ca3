//! TLS for the API with rustls, optionally requiring client certificates (mutual TLS).

use super::DaemonError;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use std::path::Path;
use std::sync::Arc;

fn tls_err(path: &Path, reason: impl std::fmt::Display) -> DaemonError {
    DaemonError::Tls(format!("{}: {reason}", path.display()))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, DaemonError> {
    let data = std::fs::read(path).map_err(|e| tls_err(path, e))?;
    let certs = rustls_pemfile::certs(&mut data.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_err(path, e))?;
    if certs.is_empty() {
        return Err(tls_err(path, "no PEM certificate found"));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, DaemonError> {
    let data = std::fs::read(path).map_err(|e| tls_err(path, e))?;
    rustls_pemfile::private_key(&mut data.as_slice())
        .map_err(|e| tls_err(path, e))?
        .ok_or_else(|| tls_err(path, "no PEM private key found"))
}

/// Builds the server TLS configuration from PEM files.
///
/// # Errors
/// [`DaemonError::Tls`] naming the file that cannot be used.
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<Arc<ServerConfig>, DaemonError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| DaemonError::Tls(e.to_string()))?;
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in read_certs(ca)? {
                roots.add(cert).map_err(|e| tls_err(ca, e))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| tls_err(ca, e))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(read_certs(cert)?, read_key(key)?)
        .map_err(|e| tls_err(key, e))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
