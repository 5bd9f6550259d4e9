//! TLS for CoAP over TLS (RFC 8323) between brokers and the super-manager: rustls with the
//! `ring` provider (as the edge's HTTPS probes), mutual authentication both ways.
//!
//! - The listening side ([`server_config`]) presents `cert_file`/`key_file` and requires a
//!   client certificate signed by `client_ca_file`; connections without one, or with one from
//!   another CA, fail in the handshake (the listener logs and counts them).
//! - The connecting side ([`client_config`]) trusts `ca_file` only (not the system store),
//!   checks the server's name against `server_name`, and presents `cert_file`/`key_file`.
//!
//! - HTTPS for the API ([`https_server_config`]): `[http] tls_cert`/`tls_key`, no client
//!   certificates (clients present API tokens).
//!
//! Files are PEM: certificates (a chain, leaf first), a private key (PKCS#8, PKCS#1 or SEC1).
//! Listening sides hold their settings in a [`ServerSlot`], connecting sides (a broker's
//! `[upstream]`) in a [`ClientSlot`]: [`reload_all`] (on SIGHUP) reads the files again for new
//! connections; a file that does not load is refused and the previous certificate stays in
//! use.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};

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

/// What a [`Slot`] is built from, to build it again on reload.
pub trait SlotSource: std::fmt::Debug + Send + Sync + 'static {
    /// The settings built.
    type Config: Send + Sync + 'static;
    /// Reads the files and builds the settings.
    fn build(&self) -> Result<Arc<Self::Config>, TlsError>;
}

/// A listening side's files: certificate, key and, for mutual TLS, the clients' CA.
#[derive(Debug, Clone)]
pub struct ServerSource {
    cert_file: PathBuf,
    key_file: PathBuf,
    client_ca_file: Option<PathBuf>,
}

impl SlotSource for ServerSource {
    type Config = ServerConfig;
    fn build(&self) -> Result<Arc<ServerConfig>, TlsError> {
        match &self.client_ca_file {
            Some(ca) => server_config(&self.cert_file, &self.key_file, ca),
            None => https_server_config(&self.cert_file, &self.key_file),
        }
    }
}

/// A connecting side's files ([`client_config`]): the server's CA, our certificate and key.
#[derive(Debug, Clone)]
pub struct ClientSource {
    ca_file: PathBuf,
    cert_file: PathBuf,
    key_file: PathBuf,
}

impl SlotSource for ClientSource {
    type Config = ClientConfig;
    fn build(&self) -> Result<Arc<ClientConfig>, TlsError> {
        client_config(&self.ca_file, &self.cert_file, &self.key_file)
    }
}

/// TLS settings that can be replaced while running (certificate rotation, SIGHUP): each new
/// connection takes the current settings; connections already established keep theirs. Every
/// slot of the process is reloaded by [`reload_all`].
pub struct Slot<S: SlotSource>(Arc<SlotInner<S>>);

/// A listening side's slot ([`ServerSlot::load`]): `[coap_tls]`, `[downstream_tls]`, HTTPS.
pub type ServerSlot = Slot<ServerSource>;

/// A connecting side's slot ([`ClientSlot::load`]): a broker's `[upstream]` over TLS.
pub type ClientSlot = Slot<ClientSource>;

struct SlotInner<S: SlotSource> {
    source: S,
    current: RwLock<Arc<S::Config>>,
}

/// What [`reload_all`] needs of a slot, whatever its settings.
trait Reload: Send + Sync {
    fn reload(&self) -> Result<(), TlsError>;
}

impl<S: SlotSource> Reload for SlotInner<S> {
    fn reload(&self) -> Result<(), TlsError> {
        let fresh = self.source.build()?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(())
    }
}

/// The live slots of this process, for [`reload_all`].
fn registry() -> &'static Mutex<Vec<Weak<dyn Reload>>> {
    static SLOTS: OnceLock<Mutex<Vec<Weak<dyn Reload>>>> = OnceLock::new();
    SLOTS.get_or_init(|| Mutex::new(Vec::new()))
}

impl<S: SlotSource> Clone for Slot<S> {
    fn clone(&self) -> Self {
        Slot(self.0.clone())
    }
}

impl<S: SlotSource> std::fmt::Debug for Slot<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Slot").field(&self.0.source).finish()
    }
}

impl<S: SlotSource> Slot<S> {
    /// Builds the settings from `source` and registers the slot for [`reload_all`].
    fn register(source: S) -> Result<Slot<S>, TlsError> {
        let current = RwLock::new(source.build()?);
        let inner = Arc::new(SlotInner { source, current });
        let mut slots = registry().lock().unwrap_or_else(|e| e.into_inner());
        slots.retain(|w| w.strong_count() > 0);
        let weak: Weak<SlotInner<S>> = Arc::downgrade(&inner);
        slots.push(weak);
        Ok(Slot(inner))
    }

    /// The settings for a new connection.
    pub fn current(&self) -> Arc<S::Config> {
        self.0
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Reads the files again; on an error the previous settings stay in use.
    pub fn reload(&self) -> Result<(), TlsError> {
        self.0.reload()
    }
}

impl ServerSlot {
    /// Loads `cert_file`/`key_file` (and requires client certificates from `client_ca_file`
    /// when given), and registers the slot for [`reload_all`].
    pub fn load(
        cert_file: &Path,
        key_file: &Path,
        client_ca_file: Option<&Path>,
    ) -> Result<ServerSlot, TlsError> {
        Slot::register(ServerSource {
            cert_file: cert_file.to_path_buf(),
            key_file: key_file.to_path_buf(),
            client_ca_file: client_ca_file.map(Path::to_path_buf),
        })
    }

    /// The certificate file (for logs).
    pub fn cert_file(&self) -> &Path {
        &self.0.source.cert_file
    }
}

impl ClientSlot {
    /// Loads the files ([`client_config`]) and registers the slot for [`reload_all`].
    pub fn load(ca_file: &Path, cert_file: &Path, key_file: &Path) -> Result<ClientSlot, TlsError> {
        Slot::register(ClientSource {
            ca_file: ca_file.to_path_buf(),
            cert_file: cert_file.to_path_buf(),
            key_file: key_file.to_path_buf(),
        })
    }
}

/// Reloads every [`ServerSlot`] and [`ClientSlot`] of the process; each one's error (its
/// previous settings kept).
pub fn reload_all() -> Vec<TlsError> {
    let slots: Vec<Arc<dyn Reload>> = registry()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter_map(Weak::upgrade)
        .collect();
    slots.iter().filter_map(|s| s.reload().err()).collect()
}

/// HTTPS: our certificate, no client certificate asked for (clients authenticate with API
/// tokens).
pub fn https_server_config(
    cert_file: &Path,
    key_file: &Path,
) -> Result<Arc<ServerConfig>, TlsError> {
    let rustls = |source| TlsError::Rustls {
        context: format!("{} / {}", cert_file.display(), key_file.display()),
        source,
    };
    let (chain, key) = (certs("tls_cert", cert_file)?, key("tls_key", key_file)?);
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(rustls)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(rustls)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Starts a thread that, each time `reload` is set (by SIGHUP), reloads every [`ServerSlot`]
/// ([`reload_all`]) and logs the outcome: one line per refused file, naming it (the previous
/// certificate stays in use). It ends once `shutdown` is set.
pub fn watch_reload(
    reload: Arc<std::sync::atomic::AtomicBool>,
    shutdown: Arc<std::sync::atomic::AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    use std::sync::atomic::Ordering;
    std::thread::Builder::new()
        .name("tls-reload".into())
        .spawn(move || {
            while !shutdown.load(Ordering::SeqCst) {
                std::thread::sleep(std::time::Duration::from_millis(100));
                if !reload.swap(false, Ordering::SeqCst) {
                    continue;
                }
                let errors = reload_all();
                if errors.is_empty() {
                    tracing::info!("SIGHUP: TLS certificates reloaded");
                }
                for e in errors {
                    tracing::error!(
                        "TLS reload refused, the previous certificate stays in use: {e}"
                    );
                }
            }
        })
}
