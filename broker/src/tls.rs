//! TLS for the agent link (rustls): the broker's certificate, and optionally the CA that agents'
//! client certificates must chain to (mutual TLS). Loaded once at start; errors name the file.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// Why TLS files cannot be used; each names its file. The cause is part of the message (and so
/// not also given as a source, which would print it twice).
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file cannot be read as PEM.
    #[error("cannot read certificates from {}: {error}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        error: rustls_pki_types::pem::Error,
    },
    /// A certificate in it is malformed.
    #[error("bad certificate in {}: {error}", path.display())]
    BadCertificate {
        /// The file.
        path: PathBuf,
        /// Why.
        error: rustls_pki_types::pem::Error,
    },
    /// It holds no certificate.
    #[error("no certificate in {}", .0.display())]
    NoCertificate(PathBuf),
    /// A CA certificate is not usable as a root.
    #[error("bad CA certificate in {}: {error}", path.display())]
    BadCa {
        /// The file.
        path: PathBuf,
        /// Why.
        error: rustls::Error,
    },
    /// The private key cannot be read.
    #[error("cannot read the private key {}: {error}", path.display())]
    Key {
        /// The file.
        path: PathBuf,
        /// Why.
        error: rustls_pki_types::pem::Error,
    },
    /// The client CA cannot verify certificates.
    #[error("client CA {}: {error}", path.display())]
    ClientCa {
        /// The file.
        path: PathBuf,
        /// Why.
        error: rustls::server::VerifierBuilderError,
    },
    /// The certificate and the key do not belong together.
    #[error("certificate {} and its key do not fit: {error}", path.display())]
    Mismatch {
        /// The certificate's file.
        path: PathBuf,
        /// Why.
        error: rustls::Error,
    },
    /// rustls refused the protocol versions.
    #[error("{0}")]
    Config(rustls::Error),
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|error| TlsError::Read {
            path: path.to_owned(),
            error,
        })?
        .collect::<Result<_, _>>()
        .map_err(|error| TlsError::BadCertificate {
            path: path.to_owned(),
            error,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(path.to_owned()));
    }
    Ok(certs)
}

/// A root store from a PEM file of CA certificates.
pub fn roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    for c in certs(path)? {
        store.add(c).map_err(|error| TlsError::BadCa {
            path: path.to_owned(),
            error,
        })?;
    }
    Ok(store)
}

/// The acceptor for `--agent-tls-cert`/`--agent-tls-key`, requiring client certificates signed
/// by `client_ca` when given.
pub fn acceptor(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<TlsAcceptor, TlsError> {
    Ok(TlsAcceptor::from(Arc::new(server_config(
        cert, key, client_ca,
    )?)))
}

/// A server configuration for `cert` and `key`, requiring client certificates signed by
/// `client_ca` when given. Used for the agent link and for HTTPS.
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<ServerConfig, TlsError> {
    let chain = certs(cert)?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|error| TlsError::Key {
        path: key.to_owned(),
        error,
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?;
    let builder = match client_ca {
        Some(ca) => {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)?), provider)
                    .build()
                    .map_err(|error| TlsError::ClientCa {
                        path: ca.to_owned(),
                        error,
                    })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    builder
        .with_single_cert(chain, key)
        .map_err(|error| TlsError::Mismatch {
            path: cert.to_owned(),
            error,
        })
}
