//! TLS configuration for both sides, built once at start (rustls, ring).
//!
//! - Clients (`[listen.tls]`): natsgate's certificate chain and key; with
//!   `ca_file`, clients must present a certificate signed by it.
//! - Upstream (`[upstream.tls]`, or `tls://` servers): the CA to verify the
//!   server with (the system's roots when none is given), an optional client
//!   certificate, and the name to verify (default: the server's host).

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::config::{ListenTls, UpstreamTls};

/// A TLS setting that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {problem}")]
pub struct TlsError {
    pub file: String,
    pub problem: String,
}

fn error(file: &Path, problem: impl ToString) -> TlsError {
    TlsError {
        file: file.display().to_string(),
        problem: problem.to_string(),
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certificates(file: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(file)
        .map_err(|e| error(file, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error(file, e))?;
    if certs.is_empty() {
        return Err(error(file, "no certificate in the file"));
    }
    Ok(certs)
}

fn private_key(file: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(file).map_err(|e| error(file, e))
}

fn roots(file: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(file)? {
        roots.add(cert).map_err(|e| error(file, e))?;
    }
    Ok(roots)
}

/// The server side, for clients.
pub fn server_config(tls: &ListenTls) -> Result<Arc<ServerConfig>, TlsError> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| error(&tls.cert_file, e))?;
    let builder = match &tls.ca_file {
        Some(ca) => {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)?), provider())
                    .build()
                    .map_err(|e| error(ca, e))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(certificates(&tls.cert_file)?, private_key(&tls.key_file)?)
        .map_err(|e| error(&tls.key_file, e))?;
    Ok(Arc::new(config))
}

/// The client side, for upstream servers.
pub fn client_config(tls: Option<&UpstreamTls>) -> Result<Arc<ClientConfig>, TlsError> {
    let roots = match tls.and_then(|t| t.ca_file.as_deref()) {
        Some(ca) => roots(ca)?,
        None => {
            let mut roots = RootCertStore::empty();
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
            roots
        }
    };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| error(Path::new("[upstream.tls]"), e))?
        .with_root_certificates(roots);
    let config = match tls.and_then(|t| t.cert_file.as_deref().zip(t.key_file.as_deref())) {
        Some((cert, key)) => builder
            .with_client_auth_cert(certificates(cert)?, private_key(key)?)
            .map_err(|e| error(key, e))?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// The name to verify an upstream server's certificate against.
pub fn server_name(tls: Option<&UpstreamTls>, host: &str) -> Result<ServerName<'static>, TlsError> {
    let name = tls
        .and_then(|t| t.server_name.clone())
        .unwrap_or_else(|| host.to_string());
    ServerName::try_from(name.clone()).map_err(|e| {
        error(
            Path::new("[upstream.tls] server_name"),
            format!("{name}: {e}"),
        )
    })
}
