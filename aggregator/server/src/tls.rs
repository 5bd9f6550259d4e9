//! TLS for CoAP over TLS (RFC 8323) between brokers and the super-manager: rustls with the
//! `ring` provider (as the edge's HTTPS probes), mutual authentication both ways.
//!
//! - The listening side ([`server_config`]) presents `cert_file`/`key_file` and requires a
//!   client certificate signed by `client_ca_file`; connections without one, or with one from
//!   another CA, fail in the handshake (the listener logs and counts them).
//! - The connecting side ([`client_config`]) trusts `ca_file` only (not the system store),
//!   checks the server's name against `server_name`, and presents `cert_file`/`key_file`.
//!
//! Files are PEM: certificates (a chain, leaf first), a private key (PKCS#8, PKCS#1 or SEC1).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// Why a TLS setting could not be loaded; names the file at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{what} {}: {reason}", path.display())]
    File {
        /// Which setting (`cert_file`, ...).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// `server_name` is not a DNS name or IP address.
    #[error("server_name {0:?}: not a DNS name or IP address")]
    ServerName(String),
    /// rustls refused the combination (e.g. a key that does not match the certificate).
    #[error("TLS settings ({context}): {source}")]
    Rustls {
        /// The settings concerned.
        context: String,
        /// rustls' reason.
        source: rustls::Error,
    },
}

fn certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |reason: String| TlsError::File {
        what,
        path: path.to_path_buf(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no PEM certificate in the file".into()));
    }
    Ok(certs)
}

fn key(what: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::File {
        what,
        path: path.to_path_buf(),
        reason: format!("no usable PEM private key ({e})"),
    })
}

fn roots(what: &'static str, path: &Path) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    for c in certs(what, path)? {
        store.add(c).map_err(|e| TlsError::File {
            what,
            path: path.to_path_buf(),
            reason: format!("not a usable CA certificate ({e})"),
        })?;
    }
    Ok(store)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The listening side: our certificate, and client certificates required from `client_ca`.
pub fn server_config(
    cert_file: &Path,
    key_file: &Path,
    client_ca_file: &Path,
) -> Result<Arc<ServerConfig>, TlsError> {
    let context = || format!("{} / {}", cert_file.display(), key_file.display());
    let rustls = |source| TlsError::Rustls {
        context: context(),
        source,
    };
    let roots = roots("client_ca_file", client_ca_file)?;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| TlsError::Rustls {
            context: client_ca_file.display().to_string(),
            source: rustls::Error::General(e.to_string()),
        })?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(rustls)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs("cert_file", cert_file)?, key("key_file", key_file)?)
        .map_err(rustls)?;
    Ok(Arc::new(config))
}

/// The connecting side: trusts `ca_file`, presents `cert_file`/`key_file`.
pub fn client_config(
    ca_file: &Path,
    cert_file: &Path,
    key_file: &Path,
) -> Result<Arc<ClientConfig>, TlsError> {
    let rustls = |source| TlsError::Rustls {
        context: format!("{} / {}", cert_file.display(), key_file.display()),
        source,
    };
    let roots = roots("ca_file", ca_file)?;
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(rustls)?
        .with_root_certificates(roots)
        .with_client_auth_cert(certs("cert_file", cert_file)?, key("key_file", key_file)?)
        .map_err(rustls)?;
    Ok(Arc::new(config))
}

/// `server_name` as rustls wants it.
pub fn server_name(name: &str) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(name.to_owned()).map_err(|_| TlsError::ServerName(name.into()))
}
