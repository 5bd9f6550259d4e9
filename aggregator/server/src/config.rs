//! The super-manager's configuration: a TOML file, every key optional.
//!
//! Without a file (or for every key a file leaves out) the defaults below apply; they match
//! `qos-aggregator.example.toml` next to `Cargo.toml`, which a test keeps in step with this
//! module. Unknown keys are refused so that a misspelt option is an error, not a silent default.
//!
//! ```toml
//! [http]
//! listen = "127.0.0.1:8080"
//! workers = 2
//!
//! [coap]
//! listen = "127.0.0.1:5683"
//!
//! [coap.reliability]
//! ack_timeout_ms = 2000
//! ack_random_factor = 1.5
//! max_retransmit = 4
//!
//! [store]
//! data_dir = "./qos-data"
//! synchronous = "full"
//!
//! # optional: CoAP over TLS from brokers (client certificates required)
//! # [coap_tls]
//! # listen = "0.0.0.0:5684"
//! # cert_file = "centre.pem"
//! # key_file = "centre.key"
//! # client_ca_file = "brokers-ca.pem"
//!
//! # optional, any number:
//! # [[edge_config]]
//! # edge = 7
//! # file = "edge-7.toml"
//! ```

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The name of the SQLite database file inside [`StoreConfig::data_dir`].
pub const DATABASE_FILE: &str = "qos.sqlite";

/// Highest accepted [`HttpConfig::workers`].
pub const MAX_HTTP_WORKERS: usize = 16;

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `[http]`: the JSON API.
    pub http: HttpConfig,
    /// `[coap]`: the CoAP/UDP ingest endpoint that edges and brokers send to.
    pub coap: CoapConfig,
    /// `[store]`: where and how records are kept.
    pub store: StoreConfig,
    /// `[watch]`: when a silent broker becomes an event.
    pub watch: WatchConfig,
    /// `[coap_tls]`: also accept CoAP over TLS (RFC 8323) from brokers, with client
    /// certificates ([`crate::stream_config`]). None by default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coap_tls: Option<crate::stream_config::TlsListen>,
    /// `[coap_tcp]`: also accept plain CoAP over TCP, loopback addresses only. None by default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coap_tcp: Option<crate::stream_config::TcpListen>,
    /// `[[edge_config]]`: central edge configurations stored at start (replacing what the API
    /// stored for the same edge). None by default.
    #[serde(rename = "edge_config", skip_serializing_if = "Vec::is_empty")]
    pub edge_configs: Vec<EdgeConfigEntry>,
    /// `[model]`: the service model and its engine ([`crate::services::config::ModelConfig`]).
    pub model: crate::services::config::ModelConfig,
    /// `[[webhook]]`: where incidents, SLO alerts and flapping are POSTed. None by default.
    #[serde(rename = "webhook", skip_serializing_if = "Vec::is_empty")]
    pub webhooks: Vec<crate::services::config::WebhookEntry>,
    /// `[[scrape]]`: Prometheus text endpoints read as component metrics. None by default.
    #[serde(rename = "scrape", skip_serializing_if = "Vec::is_empty")]
    pub scrapes: Vec<crate::services::config::ScrapeEntry>,
    /// `[retention]`: how long raw summaries and hourly rollups are kept.
    pub retention: crate::services::config::RetentionConfig,
    /// `[local_edge]`: who the probes this process runs itself report as
    /// ([`crate::local_edge`]). Required when there is a `[[probe]]`; none by default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_edge: Option<LocalEdgeConfig>,
    /// `[[probe]]`: probes this process runs itself as its local edge, in the Linux edge's
    /// format (`qos_probe_config::ProbeSection`). None by default.
    #[serde(rename = "probe", skip_serializing)]
    pub probes: Vec<qos_probe_config::ProbeSection>,
    /// `[[rule]]`: threshold rules of the local edge's probes, in the Linux edge's format
    /// (`qos_probe_config::RuleSection`). None by default.
    #[serde(rename = "rule", skip_serializing)]
    pub rules: Vec<qos_probe_config::RuleSection>,
    /// `[oscore]` with `[[oscore.edge]]`: OSCORE (RFC 8613) with the edges listed
    /// ([`crate::oscore`]). None by default: every edge speaks plaintext CoAP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oscore: Option<crate::oscore::OscoreConfig>,
}

/// `[local_edge]`: the super-manager as an edge of its own. Its `[[probe]]`s run in this process
/// on the edge's scheduler, thresholds and summariser (`qos-edge-core`), and its summaries and
/// threshold events go through the same ingest as any edge's batches (validated, numbered,
/// deduplicated by edge and sequence number) into the store, without a network hop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalEdgeConfig {
    /// `id`: the local edge's numeric id, unique among the installation's edges (it shares
    /// their numbering: a model's transactions name it like any edge). Required, at least 1.
    pub id: u32,
    /// `name`: its name, 1-63 letters, digits, `-`, `_` or `.`. Default `super-manager`.
    #[serde(default = "default_local_name")]
    pub name: String,
    /// `region`: the region its probes measure from, same character rules. Required.
    pub region: String,
    /// `window_s`: summary window, seconds, at least 1. Default 60.
    #[serde(default = "qos_probe_config::default_window")]
    pub window_s: u16,
    /// `confirm_ms`: after a failed run, run the probe again this many ms later to confirm the
    /// failure (when that is before its next slot); 0 disables. Default 5000.
    #[serde(default = "default_confirm_ms")]
    pub confirm_ms: u32,
    /// `max_concurrent_probes`: probes running at the same time at most, 1 to 32. Default 4.
    #[serde(default = "default_local_concurrency")]
    pub max_concurrent_probes: u8,
}

fn default_local_name() -> String {
    "super-manager".into()
}

fn default_confirm_ms() -> u32 {
    5_000
}

fn default_local_concurrency() -> u8 {
    4
}

/// RFC 9176 endpoint name or sector: 1-63 letters, digits, `-`, `_` or `.`.
fn valid_name(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl Config {
    /// Checks `[local_edge]`, `[[probe]]` and `[[rule]]` together; the reason names the value.
    fn validate_local_edge(&self) -> Result<(), String> {
        let Some(edge) = &self.local_edge else {
            if let Some(p) = self.probes.first() {
                return Err(format!(
                    "probe {}: [[probe]] needs a [local_edge] section (id, region)",
                    p.id
                ));
            }
            if !self.rules.is_empty() {
                return Err("[[rule]] without [[probe]]".into());
            }
            return Ok(());
        };
        if edge.id == 0 {
            return Err("local_edge.id = 0: expected at least 1".into());
        }
        for (key, value) in [("name", &edge.name), ("region", &edge.region)] {
            if !valid_name(value) {
                return Err(format!(
                    "local_edge.{key} = {value:?}: use 1-63 letters, digits, '-', '_' or '.'"
                ));
            }
        }
        if edge.window_s == 0 {
            return Err("local_edge.window_s = 0: expected at least 1 second".into());
        }
        if !(1..=crate::local_edge::MAX_PROBES as u8).contains(&edge.max_concurrent_probes) {
            return Err(format!(
                "local_edge.max_concurrent_probes = {}: expected 1 to {}",
                edge.max_concurrent_probes,
                crate::local_edge::MAX_PROBES
            ));
        }
        if self.probes.len() > crate::local_edge::MAX_PROBES {
            return Err(format!(
                "{} probes: the local edge runs at most {}",
                self.probes.len(),
                crate::local_edge::MAX_PROBES
            ));
        }
        if self.rules.len() > crate::local_edge::MAX_RULES {
            return Err(format!(
                "{} rules: the local edge evaluates at most {}",
                self.rules.len(),
                crate::local_edge::MAX_RULES
            ));
        }
        qos_probe_config::validate_set(&self.probes, &self.rules)
    }
}

/// `[watch]`: the centre's watch over its brokers ([`crate::silence`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WatchConfig {
    /// `broker_silent_after_ms`: a broker that reported (`POST /b`) or forwarded batches and
    /// is then not heard from for this long raises ONE `broker_silent` event (stored, logged,
    /// at `GET /api/v1/events`); the edges behind it are shown as its consequences, not as
    /// events of their own. 0 disables the watch. Default 90000 (three of a broker's default
    /// report intervals).
    pub broker_silent_after_ms: u64,
}

impl Default for WatchConfig {
    fn default() -> Self {
        WatchConfig {
            broker_silent_after_ms: crate::silence::DEFAULT_SILENT_AFTER_MS,
        }
    }
}

/// `[[edge_config]]`: the central configuration of one edge, which the edge fetches with
/// `GET /c` (directly or through its broker).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeConfigEntry {
    /// `edge`: the edge's numeric id.
    pub edge: u32,
    /// `file`: a TOML file in the edge's format: optional `window_s` (seconds, default 60),
    /// `[[probe]]` and `[[rule]]` tables exactly as in the edge's own configuration file
    /// (`ca_file` excepted: it is local to an edge). Relative to the working directory. An
    /// invalid file stops `serve` at start with the reason.
    pub file: PathBuf,
}

/// `[http]`: the JSON API under `/api/v1/`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// `listen`: TCP address (`IP:port`) of the HTTP API. Default `127.0.0.1:8080`, reachable from
    /// this machine only; use `0.0.0.0:8080` (or `[::]:8080`) to serve other machines. Port 0
    /// picks a free port (the chosen one is logged).
    pub listen: SocketAddr,
    /// `workers`: threads answering HTTP requests, 1 to 16. Default 2. Each worker holds its own
    /// read-only store connection, so API reads never block the ingest writer.
    pub workers: usize,
    /// `allow_unauthenticated`: serve the API without tokens on a non-loopback `listen` (logged
    /// as a warning at start). Default false: without `[[http.token]]` entries a non-loopback
    /// listener is refused at start, so an open API is never exposed by accident.
    pub allow_unauthenticated: bool,
    /// `[[http.token]]`: the accepted bearer tokens, stored hashed, with their role
    /// ([`crate::http::auth`]). None by default: no checks (loopback only, see above).
    #[serde(rename = "token", skip_serializing_if = "Vec::is_empty")]
    pub tokens: Vec<crate::http::auth::TokenEntry>,
    /// `tls_cert`: PEM certificate chain (leaf first) to serve the API over HTTPS instead of
    /// HTTP, with `tls_key`; both or neither. Reloaded, with the key, on SIGHUP (new
    /// connections get the new certificate). None by default: plain HTTP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// `tls_key`: the PEM private key (PKCS#8, PKCS#1 or SEC1) of `tls_cert`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// `max_connections`: connections open at once (waiting for a worker or served), at least
    /// 1; a new one beyond is answered 503 with `Retry-After` and closed (over HTTPS: closed).
    /// Default 64.
    pub max_connections: usize,
    /// `max_connections_per_peer`: connections open at once from one client IP address, at
    /// least 1; beyond, as above. Default 16.
    pub max_connections_per_peer: usize,
    /// `peer_rate_per_s`: requests per second one client IP address may send on average (a
    /// token bucket); a request beyond is answered 429 with `Retry-After` and its connection
    /// closed. 0 disables the limit. Default 100.
    pub peer_rate_per_s: u32,
    /// `peer_burst`: requests one client IP address may send at once, at least 1. Default 500.
    pub peer_burst: u32,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8080)),
            workers: 2,
            allow_unauthenticated: false,
            tokens: Vec::new(),
            tls_cert: None,
            tls_key: None,
            max_connections: 64,
            max_connections_per_peer: 16,
            peer_rate_per_s: 100,
            peer_burst: 500,
        }
    }
}

impl HttpConfig {
    /// The HTTP server's limits ([`crate::http::server`]).
    pub fn server_options(&self) -> crate::http::ServerOptions {
        crate::http::ServerOptions {
            max_connections: self.max_connections.max(1),
            queue_capacity: self.max_connections.max(1),
            max_connections_per_peer: self.max_connections_per_peer.max(1),
            peer_rate_per_s: self.peer_rate_per_s,
            peer_burst: self.peer_burst.max(1),
            ..crate::http::ServerOptions::default()
        }
    }

    /// The accepted tokens (validated by [`Config::validate`]; an invalid list gives none).
    pub fn auth(&self) -> crate::http::auth::Auth {
        crate::http::auth::Auth::new(&self.tokens).unwrap_or_default()
    }
}

/// `[coap]`: the CoAP/UDP ingest endpoint (RFC 7252).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CoapConfig {
    /// `listen`: UDP address (`IP:port`) the CoAP ingest binds. Default `127.0.0.1:5683` (the
    /// CoAP port on loopback), which accepts edges and brokers on this machine only — including
    /// QEMU guests on user networking, which reach the host's loopback through their gateway.
    /// To accept edges from other machines set `0.0.0.0:5683` (or `[::]:5683`) and restrict who
    /// may send with the host firewall: plain CoAP has no authentication.
    pub listen: SocketAddr,
    /// `[coap.reliability]`: retransmission parameters for confirmable messages.
    pub reliability: ReliabilityConfig,
    /// `[coap.rate_limit]`: datagrams accepted per source IP address.
    pub rate_limit: RateLimitConfig,
    /// `max_edges`: edges the directory of this super-manager (`POST /rd` straight to it)
    /// knows at most; a new edge's registration beyond is answered 5.03 `full` (the edge tries
    /// again later; edges registered with a broker do not count). 0: no limit. Default 100000.
    pub max_edges: usize,
}

/// `[coap.rate_limit]` / `[broker.rate_limit]`: a token bucket per source IP address, so one
/// sender (flooding, broken or hostile) cannot starve the others. A datagram over its source's
/// rate is dropped unread and counted (`rejected.rate_limited`); a CoAP sender retransmits, so
/// a well-behaved peer over the limit is slowed, not lost.
///
/// Behind that first, cheap gate, a token bucket per edge id limits each edge's batches and
/// registrations (`POST /rd`) once they are decoded (`edge_rate_per_s`, `edge_burst`),
/// whatever address they come from: edges behind one NAT share an address, and one edge may
/// change addresses. A batch or registration over its edge's rate is answered 4.29 Too Many
/// Requests with Max-Age (the seconds until the edge may send again), neither stored nor
/// acknowledged, and counted (`rejected.rate_limited_edge`); the
/// edge keeps it and sends it again. `serve` does not apply it to batches a broker forwards
/// (the broker applied it to its edges).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    /// `rate_per_s`: datagrams per second a source may send on average; 0 disables the limit.
    /// Default 2000 (an edge sends a few per window; a broker forwards one batch per round
    /// trip, carrying up to a hundred records).
    pub rate_per_s: u32,
    /// `burst`: datagrams a source may send at once, at least 1. Default 4000.
    pub burst: u32,
    /// `max_sources`: sources tracked at once, at least 1; beyond, idle ones are forgotten
    /// first. Default 65536.
    pub max_sources: usize,
    /// `edge_rate_per_s`: batches and registrations per second one edge (by id) may send on
    /// average; 0 disables the per-edge limit. Default 50 (an edge sends a few per window, and replays a backlog
    /// of at most a few hundred records at once).
    pub edge_rate_per_s: u32,
    /// `edge_burst`: batches one edge may send at once, at least 1. Default 500.
    pub edge_burst: u32,
    /// `edge_max_tracked`: edges tracked at once, at least 1; beyond, idle ones are forgotten
    /// first (so memory stays bounded whatever ids arrive). Default 65536.
    pub edge_max_tracked: usize,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            rate_per_s: 2000,
            burst: 4000,
            max_sources: 65_536,
            edge_rate_per_s: 50,
            edge_burst: 500,
            edge_max_tracked: 65_536,
        }
    }
}

impl RateLimitConfig {
    /// The limiter's settings.
    pub fn limit(&self) -> qos_broker::RateLimit {
        qos_broker::RateLimit {
            rate_per_s: self.rate_per_s,
            burst: self.burst.max(1),
            max_sources: self.max_sources.max(1),
        }
    }

    /// The per-edge limiter's settings.
    pub fn edge_limit(&self) -> qos_broker::RateLimit {
        qos_broker::RateLimit {
            rate_per_s: self.edge_rate_per_s,
            burst: self.edge_burst.max(1),
            max_sources: self.edge_max_tracked.max(1),
        }
    }
}

/// The key of a source in a rate limiter: its IP address (the port set to 0), so a sender
/// cannot escape its bucket by changing ports.
pub fn rate_key(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip(), 0)
}

/// Default for [`CoapConfig::listen`].
fn default_coap_listen() -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 5683))
}

impl Default for CoapConfig {
    fn default() -> Self {
        CoapConfig {
            listen: default_coap_listen(),
            reliability: ReliabilityConfig::default(),
            rate_limit: RateLimitConfig::default(),
            max_edges: DEFAULT_MAX_EDGES,
        }
    }
}

/// The default of `[coap] max_edges`.
pub const DEFAULT_MAX_EDGES: usize = 100_000;

/// `[coap.reliability]`: the transmission parameters of RFC 7252 §4.8, used for the confirmable
/// messages this endpoint sends (its defaults are the RFC's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReliabilityConfig {
    /// `ack_timeout_ms`: ACK_TIMEOUT in milliseconds, at least 1. Default 2000.
    pub ack_timeout_ms: u64,
    /// `ack_random_factor`: ACK_RANDOM_FACTOR, a number of at least 1.0. Default 1.5. The first
    /// retransmission waits a random time between ACK_TIMEOUT and ACK_TIMEOUT × this factor.
    pub ack_random_factor: f64,
    /// `max_retransmit`: MAX_RETRANSMIT, 0 to 255. Default 4.
    pub max_retransmit: u8,
}

impl Default for ReliabilityConfig {
    fn default() -> Self {
        ReliabilityConfig {
            ack_timeout_ms: 2000,
            ack_random_factor: 1.5,
            max_retransmit: 4,
        }
    }
}

/// `[store]`: the embedded SQLite store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// `data_dir`: directory holding the database file `qos.sqlite` (and its `-wal`/`-shm`
    /// companions). Created if missing. A relative path is resolved against the working directory
    /// of the process, not against the configuration file. Default `./qos-data`.
    pub data_dir: PathBuf,
    /// `synchronous`: when commits reach the disk, `"full"` (default) or `"normal"`. See
    /// [`Synchronous`].
    pub synchronous: Synchronous,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            data_dir: PathBuf::from("./qos-data"),
            synchronous: Synchronous::Full,
        }
    }
}

impl StoreConfig {
    /// The path of the database file: `data_dir/qos.sqlite`.
    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join(DATABASE_FILE)
    }
}

/// SQLite's `synchronous` setting, in WAL mode.
///
/// The super-manager acknowledges a record only after its transaction has committed, and an
/// acknowledged record is forgotten upstream (DESIGN §4), so a commit must outlive whatever can
/// happen next.
///
/// - `Full` (default): every commit fsyncs the write-ahead log. A committed batch survives a
///   process kill, an OS crash and a power loss. Cost: one fsync per transaction, which is why
///   the ingest commits whole batches (and should group datagrams into one transaction).
/// - `Normal`: commits are written to the log but fsynced only at checkpoints. A committed batch
///   survives a process kill (the data sits in the OS page cache), but the last transactions can
///   be lost on an OS crash or power loss — after they were acknowledged. The database itself
///   stays consistent either way. Choose it only where that loss is acceptable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    /// `PRAGMA synchronous = FULL`.
    Full,
    /// `PRAGMA synchronous = NORMAL`.
    Normal,
}

impl Synchronous {
    /// The value for `PRAGMA synchronous`.
    pub fn pragma_value(self) -> &'static str {
        match self {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        }
    }
}

/// Why a configuration could not be loaded. Every variant names the file; `Display` is one line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML, or a key is unknown or has the wrong type.
    #[error("{}:{line}:{column}: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line of the offending key or value (0 if unknown).
        line: usize,
        /// 1-based column (0 if unknown).
        column: usize,
        /// The parser's explanation, naming the field where it can.
        message: String,
    },
    /// `[local_edge]`, `[[probe]]` or `[[rule]]` is unusable (the reason names the value).
    #[error("{}: {reason}", path.display())]
    LocalEdge {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A value has the right type but is out of range.
    #[error("{}: `{field}` = {value}: {reason}", path.display())]
    Invalid {
        /// The file (`<defaults>` when no file was given).
        path: PathBuf,
        /// The dotted key, such as `http.workers`.
        field: &'static str,
        /// The value found.
        value: String,
        /// What is expected instead.
        reason: &'static str,
    },
    /// An `[[http.token]]` entry is unusable.
    #[error("{}: [[http.token]] #{index} (name {name:?}): {reason}", path.display())]
    Token {
        /// The file.
        path: PathBuf,
        /// 1-based position of the entry.
        index: usize,
        /// Its `name`.
        name: String,
        /// What is wrong.
        reason: crate::http::auth::EntryError,
    },
}

/// Reads the file at `path` (errors name it).
pub(crate) fn read_file(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Deserialises TOML `text`; a syntax or schema error names `origin`, line and column.
pub(crate) fn parse_toml<T: serde::de::DeserializeOwned>(
    text: &str,
    origin: &Path,
) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| {
        let (line, column) = match e.span() {
            Some(span) => line_column(text, span.start),
            None => (0, 0),
        };
        ConfigError::Parse {
            path: origin.to_path_buf(),
            line,
            column,
            message: one_line(e.message()),
        }
    })
}

impl Config {
    /// Reads and validates the configuration file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::parse(&read_file(path)?, path)
    }

    /// Parses and validates configuration text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        let config: Config = parse_toml(text, origin)?;
        config.validate(origin)?;
        Ok(config)
    }

    /// Checks the ranges the types cannot express; `origin` names the file in errors.
    pub fn validate(&self, origin: &Path) -> Result<(), ConfigError> {
        let invalid = |field, value: &dyn fmt::Display, reason| ConfigError::Invalid {
            path: origin.to_path_buf(),
            field,
            value: value.to_string(),
            reason,
        };
        if let Some(t) = &self.coap_tcp {
            t.validate(origin, "coap_tcp.listen")?;
        }
        if self.http.workers == 0 || self.http.workers > MAX_HTTP_WORKERS {
            return Err(invalid(
                "http.workers",
                &self.http.workers,
                "expected 1 to 16 threads",
            ));
        }
        for (field, value) in [
            ("http.max_connections", self.http.max_connections),
            (
                "http.max_connections_per_peer",
                self.http.max_connections_per_peer,
            ),
            ("http.peer_burst", self.http.peer_burst as usize),
        ] {
            if value == 0 {
                return Err(invalid(field, &value, "expected at least 1"));
            }
        }
        if let Err((i, e)) = crate::http::auth::Auth::new(&self.http.tokens) {
            return Err(ConfigError::Token {
                path: origin.to_path_buf(),
                index: i + 1,
                name: self.http.tokens[i].name.clone(),
                reason: e,
            });
        }
        if self.http.tls_cert.is_some() != self.http.tls_key.is_some() {
            return Err(invalid(
                "http.tls_cert",
                &"(one of tls_cert, tls_key)",
                "set both tls_cert and tls_key, or neither",
            ));
        }
        if self.http.tokens.is_empty()
            && !self.http.allow_unauthenticated
            && !self.http.listen.ip().is_loopback()
        {
            return Err(invalid(
                "http.listen",
                &self.http.listen,
                "a non-loopback HTTP listener needs [[http.token]] entries (or http.allow_unauthenticated = true)",
            ));
        }
        let rel = &self.coap.reliability;
        if rel.ack_timeout_ms == 0 {
            return Err(invalid(
                "coap.reliability.ack_timeout_ms",
                &rel.ack_timeout_ms,
                "expected at least 1 millisecond",
            ));
        }
        if !rel.ack_random_factor.is_finite() || rel.ack_random_factor < 1.0 {
            return Err(invalid(
                "coap.reliability.ack_random_factor",
                &rel.ack_random_factor,
                "expected a finite number of at least 1.0",
            ));
        }
        crate::services::config::validate(self, origin)?;
        self.validate_local_edge()
            .map_err(|reason| ConfigError::LocalEdge {
                path: origin.to_path_buf(),
                reason,
            })?;
        if self.store.data_dir.as_os_str().is_empty() {
            return Err(invalid(
                "store.data_dir",
                &"\"\"",
                "expected a directory path",
            ));
        }
        Ok(())
    }
}

/// 1-based line and column of byte `offset` in `text`.
pub(crate) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .map_or(0, |last| last.chars().count())
        + 1;
    (line, column)
}

/// Joins a possibly multi-line message into one line.
pub(crate) fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../qos-aggregator.example.toml");

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("test.toml"))
    }

    #[test]
    fn empty_file_gives_the_documented_defaults() {
        let config = parse("").unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(config.http.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.http.workers, 2);
        assert_eq!(config.coap.listen.to_string(), "127.0.0.1:5683");
        assert_eq!(config.coap.reliability.ack_timeout_ms, 2000);
        assert_eq!(config.coap.reliability.ack_random_factor, 1.5);
        assert_eq!(config.coap.reliability.max_retransmit, 4);
        assert_eq!(config.store.data_dir, PathBuf::from("./qos-data"));
        assert_eq!(config.store.synchronous, Synchronous::Full);
        assert_eq!(
            config.store.database_path(),
            Path::new("./qos-data").join("qos.sqlite")
        );
    }

    #[test]
    fn example_file_equals_the_defaults() {
        assert_eq!(parse(EXAMPLE).unwrap(), Config::default());
    }

    /// Every option must appear (uncommented) in the example file, so the example documents all of
    /// them; equality with the defaults alone would not notice a missing key.
    #[test]
    fn example_file_sets_every_option() {
        fn keys(prefix: &str, value: &serde_json::Value, out: &mut Vec<String>) {
            if let serde_json::Value::Object(map) = value {
                for (k, v) in map {
                    let path = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    if v.is_object() {
                        keys(&path, v, out);
                    } else {
                        out.push(path);
                    }
                }
            }
        }
        let mut expected = Vec::new();
        keys(
            "",
            &serde_json::to_value(Config::default()).unwrap(),
            &mut expected,
        );
        let mut present = Vec::new();
        let example: toml::Table = toml::from_str(EXAMPLE).unwrap();
        keys("", &serde_json::to_value(&example).unwrap(), &mut present);
        expected.sort();
        present.sort();
        assert_eq!(present, expected);
        assert!(expected.len() >= 8, "keys found: {expected:?}");
    }

    /// The commented `[local_edge]`, `[[probe]]` and `[[rule]]` of the example, uncommented,
    /// are a valid local edge.
    #[test]
    fn example_local_edge_parses_when_uncommented() {
        let block = &EXAMPLE[EXAMPLE.find("# [local_edge]").unwrap()..];
        let text: String = block
            .lines()
            .filter_map(|l| l.strip_prefix("# "))
            .filter(|l| l.starts_with('[') || l.contains(" = "))
            .map(|l| format!("{l}\n"))
            .collect();
        let c = parse(&text).unwrap();
        let edge = c.local_edge.unwrap();
        assert_eq!((edge.id, edge.region.as_str()), (1000, "centre"));
        assert_eq!(edge.name, "super-manager");
        assert_eq!((c.probes.len(), c.rules.len()), (2, 1));
    }

    #[test]
    fn local_edge_errors_name_the_value() {
        let probe = "[[probe]]\nid = 1\nkind = \"tcp\"\ntarget = \"127.0.0.1:1\"\n";
        let edge = "[local_edge]\nid = 5\nregion = \"eu\"\n";
        let err = |text: &str| parse(text).unwrap_err().to_string();
        assert!(err(probe).contains("probe 1: [[probe]] needs a [local_edge]"));
        assert!(err(&format!("{edge}{probe}{probe}")).contains("probe id 1: ids must be unique"));
        let e = err(&format!("[local_edge]\nid = 5\nregion = \"e u\"\n{probe}"));
        assert!(e.contains("local_edge.region = \"e u\""), "{e}");
        let e = err(&format!("[local_edge]\nid = 0\nregion = \"eu\"\n{probe}"));
        assert!(e.contains("local_edge.id = 0"), "{e}");
        let e = err(&format!(
            "{edge}{probe}[[rule]]\nprobe = 2\nmetric = \"availability\"\nk = 1\nn = 1\n"
        ));
        assert!(e.contains("rule for probe 2"), "{e}");
        let e = err("[local_edge]\nregion = \"eu\"\n");
        assert!(e.contains("id"), "{e}");
        let c = parse(&format!("{edge}{probe}")).unwrap();
        assert_eq!(c.local_edge.unwrap().window_s, 60);
    }

    #[test]
    fn non_loopback_http_needs_tokens_or_the_explicit_flag() {
        let err = parse("[http]\nlisten = \"0.0.0.0:9000\"\n").unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::Invalid {
                    field: "http.listen",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(!err.to_string().contains('\n'), "{err}");
        let hash = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        let with_token = format!(
            "[http]\nlisten = \"0.0.0.0:9000\"\n[[http.token]]\nname = \"ops\"\nrole = \"admin\"\nsha256 = \"{hash}\"\n"
        );
        let config = parse(&with_token).unwrap();
        assert!(config.http.auth().enabled());
        let bad = with_token.replace(hash, "abc");
        let err = parse(&bad).unwrap_err();
        assert!(
            matches!(err, ConfigError::Token { index: 1, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("ops"), "{err}");
        let err = parse(&with_token.replace("admin", "root")).unwrap_err();
        assert!(matches!(err, ConfigError::Parse { .. }), "{err:?}");
        let open = parse("[http]\nlisten = \"[::]:9000\"\nallow_unauthenticated = true\n").unwrap();
        assert!(!open.http.auth().enabled());
    }

    #[test]
    fn partial_file_keeps_other_defaults() {
        let config =
            parse("[http]\nlisten = \"0.0.0.0:9000\"\nallow_unauthenticated = true\n").unwrap();
        assert_eq!(config.http.listen.to_string(), "0.0.0.0:9000");
        assert_eq!(config.http.workers, 2);
        assert_eq!(config.coap, CoapConfig::default());
        assert_eq!(config.store, StoreConfig::default());
    }

    #[test]
    fn unknown_field_is_refused_with_its_name_and_line() {
        let err = parse("[http]\nlisten = \"127.0.0.1:1\"\nlisen = \"x\"\n").unwrap_err();
        let ConfigError::Parse {
            line, ref message, ..
        } = err
        else {
            panic!("expected a parse error, got {err:?}");
        };
        assert_eq!(line, 3);
        assert!(message.contains("lisen"), "{message}");
        let text = err.to_string();
        assert!(text.starts_with("test.toml:3:"), "{text}");
        assert!(!text.contains('\n'), "{text}");
    }

    #[test]
    fn unknown_table_is_refused() {
        let err = parse("[htp]\nlisten = \"127.0.0.1:1\"\n").unwrap_err();
        assert!(err.to_string().contains("htp"), "{err}");
    }

    #[test]
    fn bad_address_names_the_line() {
        let err = parse("\n[coap]\nlisten = \"localhost\"\n").unwrap_err();
        assert!(matches!(err, ConfigError::Parse { line: 3, .. }), "{err:?}");
    }

    #[test]
    fn synchronous_accepts_normal_and_refuses_others() {
        let config = parse("[store]\nsynchronous = \"normal\"\n").unwrap();
        assert_eq!(config.store.synchronous, Synchronous::Normal);
        assert_eq!(config.store.synchronous.pragma_value(), "NORMAL");
        let err = parse("[store]\nsynchronous = \"off\"\n").unwrap_err();
        assert!(matches!(err, ConfigError::Parse { line: 2, .. }), "{err:?}");
    }

    #[test]
    fn out_of_range_values_name_the_field() {
        let cases = [
            ("[http]\nworkers = 0\n", "http.workers"),
            ("[http]\nworkers = 17\n", "http.workers"),
            ("[http]\nmax_connections = 0\n", "http.max_connections"),
            (
                "[http]\nmax_connections_per_peer = 0\n",
                "http.max_connections_per_peer",
            ),
            ("[http]\npeer_burst = 0\n", "http.peer_burst"),
            (
                "[coap.reliability]\nack_timeout_ms = 0\n",
                "coap.reliability.ack_timeout_ms",
            ),
            (
                "[coap.reliability]\nack_random_factor = 0.5\n",
                "coap.reliability.ack_random_factor",
            ),
            (
                "[coap.reliability]\nack_random_factor = nan\n",
                "coap.reliability.ack_random_factor",
            ),
            ("[store]\ndata_dir = \"\"\n", "store.data_dir"),
        ];
        for (text, field) in cases {
            match parse(text) {
                Err(ConfigError::Invalid { field: f, .. }) => assert_eq!(f, field, "{text}"),
                other => panic!("{text}: expected Invalid({field}), got {other:?}"),
            }
        }
    }

    #[test]
    fn missing_file_names_the_path() {
        let err = Config::load(Path::new("no/such/dir/qos.toml")).unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }));
        assert!(err.to_string().contains("no/such/dir/qos.toml"), "{err}");
    }
}
