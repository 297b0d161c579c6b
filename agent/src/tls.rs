//! TLS for the agent link (rustls): the CA the broker's certificate must chain to
//! (`--broker-ca`), and optionally this agent's client certificate (`--tls-cert`/`--tls-key`)
//! for brokers that require mutual TLS.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, InvalidDnsNameError, PrivateKeyDer, ServerName};
use tokio_rustls::TlsConnector;

/// What the agent needs to open a TLS link.
#[derive(Clone)]
pub struct Tls {
    /// The connector.
    pub connector: TlsConnector,
    /// The name the broker's certificate must carry.
    pub server_name: ServerName<'static>,
    /// Whether each broker's own host name (of its `--broker` entry) is checked instead of
    /// `server_name`: with several brokers and no `--broker-name`.
    pub name_from_broker: bool,
    /// The same trust (and client certificate), for the agent's downloads of builds from
    /// the broker's HTTP API.
    pub client_config: Arc<ClientConfig>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

/// Why the TLS settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate file cannot be read.
    #[error("cannot read certificates from {path}: {source}")]
    ReadCerts {
        /// The file.
        path: PathBuf,
        /// Why.
        source: pem::Error,
    },
    /// A certificate file holds a certificate that cannot be parsed.
    #[error("bad certificate in {path}: {source}")]
    BadCert {
        /// The file.
        path: PathBuf,
        /// Why.
        source: pem::Error,
    },
    /// A certificate file holds no certificate.
    #[error("no certificate in {0}")]
    NoCert(PathBuf),
    /// A CA certificate is refused as a trust anchor.
    #[error("bad CA certificate in {path}: {source}")]
    BadCa {
        /// The CA file.
        path: PathBuf,
        /// Why.
        source: rustls::Error,
    },
    /// No protocol version is both safe and supported by the crypto provider.
    #[error("{0}")]
    Protocols(#[source] rustls::Error),
    /// The private key cannot be read.
    #[error("cannot read the private key {path}: {source}")]
    Key {
        /// The key file.
        path: PathBuf,
        /// Why.
        source: pem::Error,
    },
    /// The client certificate and key cannot be used.
    #[error("client certificate {path}: {source}")]
    ClientCert {
        /// The certificate file.
        path: PathBuf,
        /// Why.
        source: rustls::Error,
    },
    /// The broker's name is neither a DNS name nor an IP address.
    #[error("{name:?} is not a valid server name: {source}")]
    ServerName {
        /// The name given.
        name: String,
        /// Why.
        source: InvalidDnsNameError,
    },
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|source| TlsError::ReadCerts {
            path: path.to_owned(),
            source,
        })?
        .collect::<Result<_, _>>()
        .map_err(|source| TlsError::BadCert {
            path: path.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCert(path.to_owned()));
    }
    Ok(certs)
}

impl Tls {
    /// Trusts `ca` for the broker named `server_name` (a DNS name or an IP address), and
    /// presents `client` (certificate chain, key) when given.
    pub fn new(
        ca: &Path,
        server_name: &str,
        client: Option<(&Path, &Path)>,
    ) -> Result<Self, TlsError> {
        let mut roots = RootCertStore::empty();
        for c in certs(ca)? {
            roots.add(c).map_err(|source| TlsError::BadCa {
                path: ca.to_owned(),
                source,
            })?;
        }
        let builder =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(TlsError::Protocols)?
                .with_root_certificates(roots);
        let config = match client {
            Some((cert, key)) => {
                let key = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::Key {
                    path: key.to_owned(),
                    source,
                })?;
                builder
                    .with_client_auth_cert(certs(cert)?, key)
                    .map_err(|source| TlsError::ClientCert {
                        path: cert.to_owned(),
                        source,
                    })?
            }
            None => builder.with_no_client_auth(),
        };
        let server_name = ServerName::try_from(server_name.to_owned()).map_err(|source| {
            TlsError::ServerName {
                name: server_name.to_owned(),
                source,
            }
        })?;
        let config = Arc::new(config);
        Ok(Self {
            connector: TlsConnector::from(Arc::clone(&config)),
            client_config: config,
            server_name,
            name_from_broker: false,
        })
    }

    /// The name the certificate of the broker at `entry` (`host:port`) must carry.
    pub fn name_for(&self, entry: &str) -> Result<ServerName<'static>, TlsError> {
        if !self.name_from_broker {
            return Ok(self.server_name.clone());
        }
        let name = crate::brokers::broker_host(entry);
        ServerName::try_from(name.clone()).map_err(|source| TlsError::ServerName { name, source })
    }
}
