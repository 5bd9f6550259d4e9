//! The configuration of `qos-aggregator broker`: a TOML file, every key optional.
//!
//! The defaults below match `qos-broker.example.toml` next to `Cargo.toml`, which a test keeps
//! in step with this module. Unknown keys are refused.
//!
//! ```toml
//! [broker]
//! id = ""
//! listen = "127.0.0.1:5684"
//! upstream = "127.0.0.1:5683"
//! data_dir = "./qos-broker-data"
//! max_queue_bytes = 1073741824
//! hold_ms = 30000
//! relay_timeout_ms = 20000
//! report_interval_ms = 30000
//! peers = []
//! max_edges = 0
//! ping_interval_ms = 30000
//! max_body_bytes = 16384
//! upstream_window = 4
//!
//! [broker.reliability]
//! ack_timeout_ms = 2000
//! ack_random_factor = 1.5
//! max_retransmit = 4
//!
//! [broker.rate_limit]
//! rate_per_s = 2000
//! burst = 4000
//! max_sources = 65536
//!
//! [broker.replay]
//! live_after_ms = 10000
//! backlog_per_live = 4
//!
//! # optional: the upstream over TLS (or "tcp" on loopback; default "udp")
//! # [upstream]
//! # transport = "tls"
//! # address = "192.0.2.10:5684"
//! # ca_file = "ca.pem"
//! # cert_file = "broker.pem"
//! # key_file = "broker.key"
//! # server_name = "centre.example"
//! # allow_plaintext = false   # "udp"/"tcp" to a non-loopback address only when true
//!
//! # optional: accept child brokers over TLS (a region broker)
//! # [downstream_tls]
//! # listen = "0.0.0.0:5685"
//! # cert_file = "region.pem"
//! # key_file = "region.key"
//! # client_ca_file = "brokers-ca.pem"
//!
//! # optional: plain CoAP over TCP from child brokers (loopback unless allow_plaintext)
//! # [downstream_tcp]
//! # listen = "127.0.0.1:5686"
//! # allow_plaintext = false
//! ```

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::{parse_toml, read_file, ConfigError, RateLimitConfig, ReliabilityConfig};
use crate::stream_config::{TcpListen, TlsListen, UpstreamSection};

/// The name of the queue's SQLite file inside [`BrokerSection::data_dir`].
pub const QUEUE_FILE: &str = "queue.sqlite";
/// The file inside [`BrokerSection::data_dir`] holding the id made at the first start when
/// `broker.id` is empty.
pub const ID_FILE: &str = "broker-id";

/// The whole file.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerFile {
    /// `[broker]`.
    pub broker: BrokerSection,
    /// `[upstream]`: the transport to the upstream (UDP by default, or TCP/TLS, see
    /// [`crate::stream_config`]).
    pub upstream: UpstreamSection,
    /// `[downstream_tls]`: also accept CoAP over TLS from child brokers (a region broker).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub downstream_tls: Option<TlsListen>,
    /// `[downstream_tcp]`: also accept plain CoAP over TCP, loopback only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub downstream_tcp: Option<TcpListen>,
}

/// `[broker]`: a stand-alone store-and-forward broker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerSection {
    /// `id`: this broker's stable identity, sent in its reports (`broker-id`): the
    /// super-manager keys its broker registry by it, so a restarted broker (which talks from a
    /// new source port) replaces its own entry. Up to 64 printable characters, unique among
    /// the brokers of one super-manager. Empty (default): an id made at the first start
    /// (`b-` and 16 hexadecimal digits) and kept in `data_dir/broker-id`, so it stays the same
    /// across restarts with the same data directory.
    pub id: String,
    /// `listen`: UDP address (`IP:port`) where edges send batches (`POST /u`) and register
    /// (`POST /rd`). Default `127.0.0.1:5684` (next to a super-manager on 5683). Use
    /// `0.0.0.0:5684` to accept edges of other machines (plain CoAP: restrict senders with the
    /// host firewall).
    pub listen: SocketAddr,
    /// `upstream`: UDP address of the super-manager's CoAP ingest, or of a parent broker.
    /// Default `127.0.0.1:5683`. The broker sends from an ephemeral port.
    pub upstream: SocketAddr,
    /// `data_dir`: directory of the durable queue `queue.sqlite` (created if missing; relative
    /// to the working directory). Default `./qos-broker-data`.
    pub data_dir: PathBuf,
    /// `max_queue_bytes`: quota of queued payload bytes. Beyond it the OLDEST batches are
    /// dropped and counted; the super-manager then sees gaps in those edges' numbering.
    /// Default 1 GiB (about a million batches).
    pub max_queue_bytes: u64,
    /// `hold_ms`: how long a request of the super-manager for an edge (`POST /p`, `GET /r`)
    /// waits for an edge that does not answer to be heard from again (a batch, a registration,
    /// a `/c` request), then it is sent on; after this many ms the super-manager gets 5.04.
    /// Default 30000, at least 1000.
    pub hold_ms: u64,
    /// `relay_timeout_ms`: how long an edge's `/c` request (configuration, report) waits for
    /// the upstream's answer before the edge gets 5.04. Default 20000, at least 1000.
    pub relay_timeout_ms: u64,
    /// `report_interval_ms`: how often the broker sends its counters and registry to the
    /// upstream (`POST /b`, CDDL `broker-report`; shown by the super-manager's
    /// `GET /api/v1/brokers`), ms; a new registration brings the next report forward to within
    /// a second. 0 turns reports off. Default 30000.
    pub report_interval_ms: u64,
    /// `peers`: other brokers (`IP:port`, as edges reach them) this one sends edges to when it
    /// is draining (after SIGUSR1) or full (`max_edges`): their registrations and batches are
    /// answered 5.03 with the diagnostic payload `alt=<peer>,...`, and edges fail over to the
    /// next broker of their own list at once. Default empty (a plain 5.03: edges retry later).
    pub peers: Vec<SocketAddr>,
    /// `max_edges`: edges this broker serves at most (those its registry knows); a new edge
    /// beyond is turned away as above. 0 (default): no limit.
    pub max_edges: usize,
    /// `ping_interval_ms`: interval of the CoAP pings to every registered edge that measure
    /// the round-trip time and loss of its link ([`qos_broker::broker::link`]), ms. 0 turns
    /// them off; else at least 100. Default 30000.
    pub ping_interval_ms: u64,
    /// `max_body_bytes`: largest request body reassembled from Block1 blocks (RFC 7959,
    /// [`qos_broker::broker::blockwise`]); larger ones get 4.13 with Size1. 1024 to 16384,
    /// default 16384.
    pub max_body_bytes: usize,
    /// `upstream_window`: batches on their way upstream at once, at most one per edge (each
    /// edge's batches still go one at a time and in order), picked among the 64 oldest. 1 to
    /// 16, default 4. 1: one batch at a time, one round trip each.
    pub upstream_window: usize,
    /// `[broker.reliability]`: RFC 7252 §4.8 parameters for both sides.
    pub reliability: ReliabilityConfig,
    /// `[broker.rate_limit]`: datagrams accepted from the edges per source IP address (see
    /// [`RateLimitConfig`]; same defaults as `serve`'s `[coap.rate_limit]`).
    pub rate_limit: RateLimitConfig,
    /// `[broker.replay]`: how a backlog is replayed (see [`ReplaySection`]).
    pub replay: ReplaySection,
}

/// `[broker.replay]`: paced replay of a backlog (after an outage of the upstream or a
/// restart), so live data keeps flowing while the backlog drains ([`qos_broker::ReplayConfig`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReplaySection {
    /// `live_after_ms`: a batch queued less than this many ms ago is live, an older one is
    /// backlog. 0 turns pacing off (batches go in the order they were queued). Default 10000.
    pub live_after_ms: u64,
    /// `backlog_per_live`: backlog batches sent in a row at most while a live batch of an edge
    /// without backlog of its own waits; 0: such live batches always go first. Default 4.
    pub backlog_per_live: u32,
}

impl Default for ReplaySection {
    fn default() -> Self {
        let d = qos_broker::ReplayConfig::default();
        ReplaySection {
            live_after_ms: d.live_after_ms,
            backlog_per_live: d.backlog_per_live,
        }
    }
}

impl ReplaySection {
    /// The broker logic's settings.
    pub fn config(&self) -> qos_broker::ReplayConfig {
        qos_broker::ReplayConfig {
            live_after_ms: self.live_after_ms,
            backlog_per_live: self.backlog_per_live,
        }
    }
}

impl Default for BrokerSection {
    fn default() -> Self {
        BrokerSection {
            id: String::new(),
            listen: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 5684)),
            upstream: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 5683)),
            data_dir: PathBuf::from("./qos-broker-data"),
            max_queue_bytes: 1 << 30,
            hold_ms: 30_000,
            relay_timeout_ms: 20_000,
            report_interval_ms: 30_000,
            peers: Vec::new(),
            max_edges: 0,
            ping_interval_ms: 30_000,
            max_body_bytes: qos_broker::broker::blockwise::MAX_BODY,
            upstream_window: 4,
            reliability: ReliabilityConfig::default(),
            rate_limit: RateLimitConfig::default(),
            replay: ReplaySection::default(),
        }
    }
}

impl BrokerSection {
    /// The queue file: `data_dir/queue.sqlite`.
    pub fn queue_path(&self) -> PathBuf {
        self.data_dir.join(QUEUE_FILE)
    }

    /// The broker's id: `id` when set, else the one kept in `data_dir/broker-id`, made and
    /// written there (a temporary file renamed over it) when missing. `seed` varies the made
    /// id (the driver passes the time and process id).
    pub fn resolve_id(&self, seed: u64) -> std::io::Result<String> {
        if !self.id.is_empty() {
            return Ok(self.id.clone());
        }
        let path = self.data_dir.join(ID_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) if valid_id(text.trim()) => return Ok(text.trim().to_string()),
            Ok(_) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "not a broker id (1 to 64 printable characters)",
                ))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        // SplitMix64 of the seed: distinct seeds give distinct ids.
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        let id = format!("b-{z:016x}");
        let tmp = self.data_dir.join(format!("{ID_FILE}.tmp"));
        std::fs::write(&tmp, format!("{id}\n"))?;
        std::fs::rename(&tmp, &path)?;
        Ok(id)
    }
}

/// A broker id: 1 to 64 bytes, printable, no spaces at either end.
fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= qos_broker::report::MAX_ID_BYTES
        && !id.chars().any(char::is_control)
        && id.trim() == id
}

impl BrokerFile {
    /// The upstream's address: `upstream.address`, else `broker.upstream`.
    pub fn upstream_address(&self) -> SocketAddr {
        self.upstream.address.unwrap_or(self.broker.upstream)
    }

    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<BrokerFile, ConfigError> {
        BrokerFile::parse(&read_file(path)?, path)
    }

    /// Parses and validates text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<BrokerFile, ConfigError> {
        let file: BrokerFile = parse_toml(text, origin)?;
        file.validate(origin)?;
        Ok(file)
    }

    /// Checks what the types cannot express.
    pub fn validate(&self, origin: &Path) -> Result<(), ConfigError> {
        let invalid = |field, value: String, reason| ConfigError::Invalid {
            path: origin.to_path_buf(),
            field,
            value,
            reason,
        };
        let b = &self.broker;
        if !b.id.is_empty() && !valid_id(&b.id) {
            return Err(invalid(
                "broker.id",
                format!("{:?}", b.id),
                "expected 1 to 64 printable characters without spaces at either end (or \"\" for an id made at the first start)",
            ));
        }
        self.upstream.validate(origin, b.upstream)?;
        if let Some(t) = &self.downstream_tcp {
            t.validate(origin, "downstream_tcp.listen")?;
        }
        if b.data_dir.as_os_str().is_empty() {
            return Err(invalid(
                "broker.data_dir",
                "\"\"".into(),
                "expected a directory path",
            ));
        }
        if b.max_queue_bytes < 64 * 1024 {
            return Err(invalid(
                "broker.max_queue_bytes",
                b.max_queue_bytes.to_string(),
                "expected at least 65536 bytes",
            ));
        }
        for (field, value) in [
            ("broker.hold_ms", b.hold_ms),
            ("broker.relay_timeout_ms", b.relay_timeout_ms),
        ] {
            if value < 1000 {
                return Err(invalid(
                    field,
                    value.to_string(),
                    "expected at least 1000 ms",
                ));
            }
        }
        if b.ping_interval_ms != 0 && b.ping_interval_ms < 100 {
            return Err(invalid(
                "broker.ping_interval_ms",
                b.ping_interval_ms.to_string(),
                "expected 0 (off) or at least 100 ms",
            ));
        }
        if !(1..=16).contains(&b.upstream_window) {
            return Err(invalid(
                "broker.upstream_window",
                b.upstream_window.to_string(),
                "expected 1 to 16 batches",
            ));
        }
        if !(1024..=qos_broker::broker::blockwise::MAX_BODY).contains(&b.max_body_bytes) {
            return Err(invalid(
                "broker.max_body_bytes",
                b.max_body_bytes.to_string(),
                "expected 1024 to 16384 bytes",
            ));
        }
        if b.listen == b.upstream {
            return Err(invalid(
                "broker.upstream",
                b.upstream.to_string(),
                "must differ from broker.listen",
            ));
        }
        if let Some(p) = b.peers.iter().find(|p| **p == b.listen) {
            return Err(invalid(
                "broker.peers",
                p.to_string(),
                "must not name this broker's own listen address",
            ));
        }
        let rel = &b.reliability;
        if rel.ack_timeout_ms == 0 {
            return Err(invalid(
                "broker.reliability.ack_timeout_ms",
                rel.ack_timeout_ms.to_string(),
                "expected at least 1 millisecond",
            ));
        }
        if !rel.ack_random_factor.is_finite() || rel.ack_random_factor < 1.0 {
            return Err(invalid(
                "broker.reliability.ack_random_factor",
                rel.ack_random_factor.to_string(),
                "expected a finite number of at least 1.0",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../qos-broker.example.toml");

    fn parse(text: &str) -> Result<BrokerFile, ConfigError> {
        BrokerFile::parse(text, Path::new("broker.toml"))
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let b = parse("").unwrap().broker;
        assert_eq!(b, BrokerSection::default());
        assert_eq!(b.listen.to_string(), "127.0.0.1:5684");
        assert_eq!(b.upstream.to_string(), "127.0.0.1:5683");
        assert_eq!(b.data_dir, PathBuf::from("./qos-broker-data"));
        assert_eq!(b.max_queue_bytes, 1024 * 1024 * 1024);
        assert_eq!(
            b.queue_path(),
            Path::new("./qos-broker-data").join("queue.sqlite")
        );
    }

    #[test]
    fn example_file_equals_the_defaults_and_sets_every_key() {
        assert_eq!(parse(EXAMPLE).unwrap(), BrokerFile::default());
        let example: toml::Table = toml::from_str(EXAMPLE).unwrap();
        let broker = example["broker"].as_table().unwrap();
        let mut keys: Vec<&str> = broker.keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "data_dir",
                "hold_ms",
                "id",
                "listen",
                "max_body_bytes",
                "max_edges",
                "max_queue_bytes",
                "peers",
                "ping_interval_ms",
                "rate_limit",
                "relay_timeout_ms",
                "reliability",
                "replay",
                "report_interval_ms",
                "upstream",
                "upstream_window"
            ]
        );
        assert_eq!(broker["reliability"].as_table().unwrap().len(), 3);
        assert_eq!(broker["replay"].as_table().unwrap().len(), 2);
    }

    #[test]
    fn errors_name_the_file_line_and_field() {
        let err = parse("[broker]\nlisten = \"127.0.0.1:1\"\nupstrem = \"x\"\n").unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("broker.toml:3:"), "{text}");
        assert!(text.contains("upstrem"), "{text}");
        for (text, field) in [
            ("[broker]\ndata_dir = \"\"\n", "broker.data_dir"),
            ("[broker]\nmax_queue_bytes = 10\n", "broker.max_queue_bytes"),
            (
                "[broker]\nping_interval_ms = 5\n",
                "broker.ping_interval_ms",
            ),
            (
                "[broker]\nmax_body_bytes = 100000\n",
                "broker.max_body_bytes",
            ),
            ("[broker]\nupstream_window = 0\n", "broker.upstream_window"),
            (
                "[broker]\nlisten = \"127.0.0.1:9\"\nupstream = \"127.0.0.1:9\"\n",
                "broker.upstream",
            ),
            (
                "[broker.reliability]\nack_timeout_ms = 0\n",
                "broker.reliability.ack_timeout_ms",
            ),
            ("[broker]\nid = \" a\"\n", "broker.id"),
            (
                "[broker]\nupstream = \"192.0.2.1:5683\"\n",
                "broker.upstream",
            ),
            (
                "[downstream_tcp]\nlisten = \"0.0.0.0:5686\"\n",
                "downstream_tcp.listen",
            ),
        ] {
            match parse(text) {
                Err(ConfigError::Invalid { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{text}: {other:?}"),
            }
        }
        let err = BrokerFile::load(Path::new("no/such/broker.toml")).unwrap_err();
        assert!(err.to_string().contains("no/such/broker.toml"), "{err}");
        assert!(parse(
            "[broker]\nupstream = \"192.0.2.1:5683\"\n[upstream]\nallow_plaintext = true\n"
        )
        .is_ok());
        assert!(
            parse("[downstream_tcp]\nlisten = \"0.0.0.0:5686\"\nallow_plaintext = true\n").is_ok()
        );
    }

    #[test]
    fn the_id_is_made_once_and_kept_in_the_data_dir() {
        let dir = std::env::temp_dir().join(format!("qos-broker-id-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut b = BrokerSection {
            data_dir: dir.clone(),
            ..BrokerSection::default()
        };
        let first = b.resolve_id(1).unwrap();
        assert!(first.starts_with("b-") && first.len() == 18, "{first}");
        assert_eq!(b.resolve_id(2).unwrap(), first, "kept across restarts");
        b.id = "site-7".into();
        assert_eq!(b.resolve_id(3).unwrap(), "site-7");
        b.id.clear();
        std::fs::write(dir.join(ID_FILE), "\n").unwrap();
        assert!(
            b.resolve_id(4).is_err(),
            "a damaged file is not replaced silently"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
