//! Server TLS from PEM files (rustls with the ring provider), shared by every listener that
//! speaks TLS: syslog (RFC 5425), the console, MLLP.

use rustls::pki_types::pem::Error as PemError;
use std::path::Path;
use std::sync::Arc;

/// TLS material that cannot serve: the message names the file and what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {error}")]
    Read { path: String, error: PemError },
    #[error("{path}: not a PEM certificate chain: {error}")]
    NotChain { path: String, error: PemError },
    #[error("{0}: no certificate in it")]
    NoCertificate(String),
    #[error("{path}: no PEM private key in it: {error}")]
    NoKey { path: String, error: PemError },
    #[error("{path}: not PEM certificates: {error}")]
    NotCertificates { path: String, error: PemError },
    #[error("{path}: unusable CA certificate: {error}")]
    Ca { path: String, error: rustls::Error },
    #[error("client certificate verifier: {0}")]
    Verifier(rustls::server::VerifierBuilderError),
    #[error("{what}: {error}")]
    Config {
        what: &'static str,
        error: rustls::Error,
    },
    #[error("tls_cert and tls_key are required")]
    Missing,
}

/// A TLS acceptor from PEM files: the certificate chain, its key, optionally a CA that client
/// certificates must chain to, and the ALPN protocols offered.
pub fn server_tls(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
    alpn: &[&[u8]],
) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let path = |p: &Path| p.display().to_string();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|error| TlsError::Read {
            path: path(cert),
            error,
        })?
        .collect::<Result<_, _>>()
        .map_err(|error| TlsError::NotChain {
            path: path(cert),
            error,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(path(cert)));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|error| TlsError::NoKey {
        path: path(key),
        error,
    })?;
    let config = |what: &'static str| move |error| TlsError::Config { what, error };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(config("TLS protocol versions"))?;
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in read_certs(ca)? {
                roots.add(c).map_err(|error| TlsError::Ca {
                    path: path(ca),
                    error,
                })?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(TlsError::Verifier)?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(config("certificate and key do not match"))?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

fn read_certs(path: &Path) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, TlsError> {
    use rustls::pki_types::pem::PemObject;
    let name = path.display().to_string();
    rustls::pki_types::CertificateDer::pem_file_iter(path)
        .map_err(|error| TlsError::Read {
            path: name.clone(),
            error,
        })?
        .collect::<Result<_, _>>()
        .map_err(|error| TlsError::NotCertificates { path: name, error })
}
