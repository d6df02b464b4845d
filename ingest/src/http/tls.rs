//! TLS on the HTTP port (rustls): certificate chain and key from PEM files,
//! reread on SIGHUP so a renewed certificate (certbot, cert-manager) takes
//! effect without a restart. A reload that fails keeps the old certificate
//! and says why.

use std::io;
use std::path::Path;
use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use super::config::TlsConfig;

/// The current certificate, swappable.
pub struct Tls {
    config: TlsConfig,
    current: RwLock<TlsAcceptor>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("config", &self.config).finish()
    }
}

impl Tls {
    /// Reads the files named in `[http.tls]`.
    pub fn load(config: &TlsConfig) -> io::Result<Self> {
        Ok(Self {
            config: config.clone(),
            current: RwLock::new(acceptor(config)?),
        })
    }

    /// Rereads the files; the old certificate stays on error.
    pub fn reload(&self) -> io::Result<()> {
        let fresh = acceptor(&self.config)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(())
    }

    /// The acceptor for the next connection.
    pub fn acceptor(&self) -> TlsAcceptor {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

fn invalid(field: &str, path: &Path, message: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("http.tls.{field} {}: {message}", path.display()),
    )
}

fn acceptor(config: &TlsConfig) -> io::Result<TlsAcceptor> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&config.cert_file)
        .map_err(|e| invalid("cert_file", &config.cert_file, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| invalid("cert_file", &config.cert_file, e))?;
    if certs.is_empty() {
        return Err(invalid(
            "cert_file",
            &config.cert_file,
            "no PEM certificate in it",
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&config.key_file)
        .map_err(|e| invalid("key_file", &config.key_file, e))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid("cert_file", &config.cert_file, e))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            invalid(
                "key_file",
                &config.key_file,
                format!("does not fit the certificate: {e}"),
            )
        })?;
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(server)))
}
