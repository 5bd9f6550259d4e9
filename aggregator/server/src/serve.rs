//! `qos-aggregator serve`: opens the store, starts the listeners, stops them in order.
//!
//! [`run_serve`] returns at once with a [`ServeHandle`]; [`ServeHandle::wait`] blocks until the
//! shutdown flag is set (by SIGINT/SIGTERM through `qos_host::signal`, or by a test) and then stops
//! everything. Listeners:
//!
//! - the HTTP API ([`crate::http`]), one read-only store connection per worker;
//! - the CoAP ingest ([`start_ingest`]), which owns the store's writer for records, and serves
//!   the centre's resources (`/c`, `/b`, `/rd`) and carries out the API's requests to edges.
//!
//! - the local edge ([`crate::local_edge`]), when the configuration has `[[probe]]`s: probes
//!   run in this process, stored through an ingest of its own.
//!
//! Both share a [`Centre`]: the central edge configurations (their own store connection,
//! filled from `[[edge_config]]` at start) and the in-memory routes to edges.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use std::net::UdpSocket;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::centre::{Centre, ConfigStore, PutError};
use crate::coap::{coap_config, CoapServer, MAX_MESSAGE};
use crate::config::{CoapConfig, Config};
use crate::http::{self, HttpError, HttpServer};
use crate::ingest::Ingest;
use crate::stats::IngestStats;
use crate::store::{SqliteStore, Store, StoreError, StoreRead};

#[path = "serve_streams.rs"]
mod streams;

/// How often [`ServeHandle::wait`] looks at the shutdown flag.
const SHUTDOWN_POLL: Duration = Duration::from_millis(100);

/// Why serving could not start or ended badly.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The data directory could not be created.
    #[error("cannot create data directory {}: {source}", path.display())]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The HTTP API could not start.
    #[error(transparent)]
    Http(#[from] HttpError),
    /// A listener thread could not be started.
    #[error("cannot start the {name} thread: {source}")]
    Spawn {
        /// Which listener.
        name: &'static str,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A socket could not be bound.
    #[error("cannot bind the {what} listener to {addr}: {source}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// The configured address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// An `[[edge_config]]` file could not be read or is not a valid configuration.
    #[error("edge_config for edge {edge}: {}: {reason}", path.display())]
    EdgeConfig {
        /// The edge.
        edge: u32,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The service model could not be loaded or the engine not rebuilt.
    #[error("{0}")]
    Services(String),
    /// The CoAP parameters are invalid.
    #[error("invalid [coap.reliability]: {0}")]
    Coap(String),
    /// A TLS file of `[coap_tls]` could not be loaded (the message names it).
    #[error("[coap_tls]: {0}")]
    Tls(String),
    /// `[oscore]` could not be loaded (the message names the edge and the file or value).
    #[error("{0}")]
    Oscore(String),
    /// A TLS file of `[http]` could not be loaded (the message names it).
    #[error("[http]: {0}")]
    HttpTls(String),
    /// A listener thread ended by panicking.
    #[error("the {name} listener stopped unexpectedly")]
    ListenerFailed {
        /// Which listener.
        name: &'static str,
    },
}

/// A listener running beside the HTTP API, stopped through the shared shutdown flag.
pub struct Listener {
    name: &'static str,
    thread: Option<JoinHandle<()>>,
    /// The address it is bound to, if it listens on a socket.
    local: Option<SocketAddr>,
}

impl Listener {
    /// A listener whose work runs on `thread`; the thread must end soon after the shutdown flag
    /// is set.
    pub fn thread(name: &'static str, thread: JoinHandle<()>) -> Listener {
        Listener {
            name,
            thread: Some(thread),
            local: None,
        }
    }

    /// The address it is bound to, if it listens on a socket.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local
    }

    /// The listener's name, for logs and errors.
    pub fn name(&self) -> &'static str {
        self.name
    }

    fn has_died(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| t.is_finished())
    }

    fn join(mut self) -> Result<(), ServeError> {
        match self.thread.take() {
            Some(thread) => thread
                .join()
                .map_err(|_| ServeError::ListenerFailed { name: self.name }),
            None => Ok(()),
        }
    }
}

/// Start the CoAP ingest: bind `coap.listen` (UDP) now, so a bind error fails `serve` at
/// start-up with the address in the message, and spawn the thread that owns `store` (the only
/// writer). The thread is a thin driver around [`CoapServer`]: it waits on the socket until the
/// endpoint's next deadline (at most 100 ms, so it notices `shutdown`), takes that datagram
/// and those already waiting behind it as one group (`coap_loop`), and sends what the server
/// has to send. A batch is acknowledged only after the store committed it (with its group).
pub fn start_ingest(
    coap: &CoapConfig,
    store: Box<dyn Store>,
    stats: Arc<IngestStats>,
    centre: Arc<Centre>,
    shutdown: Arc<AtomicBool>,
) -> Result<Listener, ServeError> {
    start_ingest_with(coap, store, stats, centre, shutdown, None)
}

/// [`start_ingest`] with OSCORE for the edges of `oscore` ([`crate::oscore`]).
pub fn start_ingest_with(
    coap: &CoapConfig,
    store: Box<dyn Store>,
    stats: Arc<IngestStats>,
    centre: Arc<Centre>,
    shutdown: Arc<AtomicBool>,
    oscore: Option<crate::oscore::OscoreGate<SocketAddr>>,
) -> Result<Listener, ServeError> {
    let socket = UdpSocket::bind(coap.listen).map_err(|source| ServeError::Bind {
        what: "CoAP",
        addr: coap.listen,
        source,
    })?;
    let local = socket.local_addr().map_err(|source| ServeError::Bind {
        what: "CoAP",
        addr: coap.listen,
        source,
    })?;
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    let server = CoapServer::new(
        coap_config(&coap.reliability),
        Ingest::new(store, stats),
        seed,
    )
    .map_err(|e| ServeError::Coap(e.to_string()))?
    .with_centre(centre)
    .with_rate_limit(coap.rate_limit.limit(), crate::config::rate_key)
    .with_edge_rate_limit(coap.rate_limit.edge_limit())
    .with_max_edges(coap.max_edges);
    let server = match oscore {
        Some(gate) => server.with_oscore(gate),
        None => server,
    };
    tracing::info!(listen = %local, "CoAP ingest listening");
    let thread = std::thread::Builder::new()
        .name("coap-ingest".into())
        .spawn(move || coap_loop(socket, server, &shutdown))
        .map_err(|source| ServeError::Spawn {
            name: "coap-ingest",
            source,
        })?;
    Ok(Listener {
        name: "coap-ingest",
        thread: Some(thread),
        local: Some(local),
    })
}

/// Most datagrams handled as one group (one store transaction).
pub const GROUP_MAX: usize = 256;

/// The CoAP receive loop: waits (until the endpoint's next deadline) for a datagram and takes
/// it with every one already waiting behind it, without waiting for more (at most
/// [`GROUP_MAX`]; one `recvmmsg` on Linux, [`crate::udp_batch`]); the group is handed to
/// [`CoapServer::handle_datagrams`], which stores its valid batches in one transaction and
/// answers them once it has committed (group commit). The answers of a group leave together
/// (one `sendmmsg` on Linux) after that.
pub(crate) fn coap_loop(
    socket: UdpSocket,
    mut server: CoapServer<SocketAddr>,
    shutdown: &AtomicBool,
) {
    let start = Instant::now();
    let mono = || start.elapsed().as_millis() as u64;
    let unix_ms = || {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    };
    let mut rx = crate::udp_batch::Receiver::new(GROUP_MAX);
    let mut out = crate::udp_batch::Outbox::new();
    let mut tx = vec![0u8; MAX_MESSAGE];
    let mut timeout = None;
    while !shutdown.load(Ordering::Relaxed) {
        let now = mono();
        let wait = server
            .poll_timeout()
            .map(|t| Duration::from_millis(t.saturating_sub(now)))
            .unwrap_or(SHUTDOWN_POLL)
            .clamp(Duration::from_millis(1), SHUTDOWN_POLL);
        if timeout != Some(wait) {
            if let Err(e) = socket.set_read_timeout(Some(wait)) {
                tracing::error!(error = %e, "CoAP socket: cannot set timeout");
                return;
            }
            timeout = Some(wait);
        }
        // ICMP errors of earlier sends surface here on Linux; they concern one peer only.
        if let Err(e) = rx.recv(&socket) {
            tracing::debug!(error = %e, "CoAP receive error");
        }
        if !rx.is_empty() {
            let datagrams: Vec<(SocketAddr, &[u8])> = (0..rx.len()).map(|i| rx.get(i)).collect();
            server.handle_datagrams(mono(), unix_ms(), &datagrams, &mut tx, &mut |to, b| {
                out.push(to, b)
            });
        }
        let now = mono();
        server.handle_timeout(now);
        while let Some((to, n)) = server.poll_transmit(now, &mut tx) {
            out.push(to, &tx[..n]);
        }
        out.flush(&socket);
    }
}

/// A running `serve`: HTTP API plus the other listeners.
pub struct ServeHandle {
    shutdown: Arc<AtomicBool>,
    http: Option<HttpServer>,
    listeners: Vec<Listener>,
    stats: Arc<IngestStats>,
    database: PathBuf,
}

impl std::fmt::Debug for ServeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeHandle")
            .field("http", &self.http)
            .field("database", &self.database)
            .finish_non_exhaustive()
    }
}

/// Starts serving with `config`: creates `store.data_dir`, opens (and migrates) the store,
/// starts the HTTP API and the ingest slot. Returns once everything listens. Setting `shutdown`
/// asks every listener to stop; [`ServeHandle::wait`] then joins them.
pub fn run_serve(config: &Config, shutdown: Arc<AtomicBool>) -> Result<ServeHandle, ServeError> {
    let started = Instant::now();
    let data_dir = &config.store.data_dir;
    std::fs::create_dir_all(data_dir).map_err(|source| ServeError::DataDir {
        path: data_dir.clone(),
        source,
    })?;
    let database = config.store.database_path();
    let store = SqliteStore::open(&database, config.store.synchronous)?;
    tracing::info!(
        path = %database.display(),
        synchronous = config.store.synchronous.pragma_value(),
        "store open"
    );

    let centre = Arc::new(Centre::new(ConfigStore::open(&database)?));
    for entry in &config.edge_configs {
        let fail = |reason: String| ServeError::EdgeConfig {
            edge: entry.edge,
            path: entry.file.clone(),
            reason,
        };
        let text = std::fs::read_to_string(&entry.file).map_err(|e| fail(e.to_string()))?;
        match centre
            .configs
            .put(entry.edge, &text, "config-file", http::now_ms())
        {
            Ok(c) => tracing::info!(
                edge = entry.edge,
                etag = c.etag,
                "edge configuration stored"
            ),
            Err(PutError::Invalid(reason)) => return Err(fail(reason)),
            Err(PutError::Store(e)) => return Err(e.into()),
        }
    }

    let services = Arc::new(
        crate::services::Services::open(&database, config, crate::services::now_s())
            .map_err(|e| ServeError::Services(e.to_string()))?,
    );
    let stats = Arc::new(IngestStats::new());
    let readers = (0..config.http.workers)
        .map(|_| store.open_reader())
        .collect::<Result<Vec<Box<dyn StoreRead>>, _>>()?;
    if config.http.tokens.is_empty() && !config.http.listen.ip().is_loopback() {
        tracing::warn!(listen = %config.http.listen,
            "HTTP API open to the network without authentication (http.allow_unauthenticated)");
    }
    let https = match (&config.http.tls_cert, &config.http.tls_key) {
        (Some(cert), Some(key)) => Some(
            crate::tls::ServerSlot::load(cert, key, None)
                .map_err(|e| ServeError::HttpTls(e.to_string()))?,
        ),
        _ => None,
    };
    let scheme = if https.is_some() { "https" } else { "http" };
    let http = http::start_secured(
        config.http.listen,
        readers,
        stats.clone(),
        started,
        config.http.server_options(),
        Some(centre.clone()),
        Some(services.clone()),
        config.http.auth(),
        https,
    )?;
    tracing::info!(
        "HTTP API on {scheme}://{}{} (health, stats, edges)",
        http.local_addr(),
        http::API_PREFIX
    );

    let mut handle = ServeHandle {
        shutdown: shutdown.clone(),
        http: Some(http),
        listeners: Vec::new(),
        stats: stats.clone(),
        database,
    };
    if config.watch.broker_silent_after_ms > 0 {
        let watch = crate::silence::start(
            centre.clone(),
            config.watch.broker_silent_after_ms,
            shutdown.clone(),
        )
        .map_err(|source| ServeError::Spawn {
            name: "silence-watch",
            source,
        })?;
        handle
            .listeners
            .push(Listener::thread("silence-watch", watch));
    }
    // Further listeners slot in here, each stopped by `shutdown` and joined by `stop`.
    let (sv, stop) = (services, shutdown.clone());
    let monitor = std::thread::Builder::new()
        .name("services".into())
        .spawn(move || crate::services::runner::run(sv, stop))
        .map_err(|source| ServeError::Spawn {
            name: "services",
            source,
        })?;
    handle.listeners.push(Listener::thread("services", monitor));
    handle.listeners.extend(crate::local_edge::start(
        config,
        &handle.database,
        config.store.synchronous,
        stats.clone(),
        shutdown.clone(),
    )?);
    handle.listeners.extend(streams::start(
        config,
        Box::new(store),
        stats,
        centre,
        shutdown,
    )?);
    Ok(handle)
}

impl ServeHandle {
    /// The address the HTTP API is bound to.
    pub fn http_addr(&self) -> SocketAddr {
        self.http
            .as_ref()
            .map(HttpServer::local_addr)
            .expect("HTTP server runs until stop")
    }

    /// The UDP address the CoAP ingest is bound to.
    pub fn coap_addr(&self) -> SocketAddr {
        self.listeners
            .iter()
            .find_map(Listener::local_addr)
            .expect("the CoAP ingest runs until stop")
    }

    /// The ingest counters shown by the API.
    pub fn stats(&self) -> &Arc<IngestStats> {
        &self.stats
    }

    /// The database file.
    pub fn database_path(&self) -> &Path {
        &self.database
    }

    /// Blocks until the shutdown flag is set (or a listener dies), then stops everything.
    pub fn wait(self) -> Result<(), ServeError> {
        let mut died = None;
        while !self.shutdown.load(Ordering::SeqCst) {
            if let Some(dead) = self.listeners.iter().find(|l| l.has_died()) {
                tracing::error!(listener = dead.name(), "listener stopped unexpectedly");
                died = Some(dead.name());
                break;
            }
            std::thread::sleep(SHUTDOWN_POLL);
        }
        let result = self.stop();
        match died {
            Some(name) => result.and(Err(ServeError::ListenerFailed { name })),
            None => result,
        }
    }

    /// Sets the shutdown flag, stops the HTTP API (current requests finish), and joins the other
    /// listeners. Returns the first listener failure, if any.
    pub fn stop(mut self) -> Result<(), ServeError> {
        self.shutdown.store(true, Ordering::SeqCst);
        tracing::info!("shutting down");
        if let Some(http) = self.http.take() {
            http.stop();
        }
        let mut result = Ok(());
        for listener in self.listeners.drain(..) {
            if let Err(e) = listener.join() {
                tracing::error!(error = %e, "listener failed");
                if result.is_ok() {
                    result = Err(e);
                }
            }
        }
        tracing::info!("stopped");
        result
    }
}
