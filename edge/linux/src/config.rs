//! The Linux edge's TOML configuration. Every option is documented here and in
//! `qos-edge.example.toml` (a test checks that the example parses).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use qos_edge::active::DriverOptions;

// The probe and rule model is shared with the super-manager (central edge configurations).
pub use qos_probe_config::{
    default_payload, default_redirects, unescape, Method, ProbeKindConfig, ProbeSection, QType,
    RuleSection, StepConfig,
};

/// Why the configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema (the message has line and column).
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong and where.
        message: String,
    },
    /// A value is out of range.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// The whole file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Who this edge is.
    pub edge: EdgeSection,
    /// Where summaries go and how.
    #[serde(default)]
    pub uplink: UplinkSection,
    /// Where the edge keeps its state.
    #[serde(default)]
    pub storage: StorageSection,
    /// The probes (`[[probe]]` tables).
    #[serde(default, rename = "probe")]
    pub probes: Vec<ProbeSection>,
    /// Local threshold rules (`[[rule]]` tables).
    #[serde(default, rename = "rule")]
    pub rules: Vec<RuleSection>,
    /// Host metrics of this machine.
    #[serde(default)]
    pub metrics: MetricsSection,
    /// `[oscore]`: OSCORE (RFC 8613) with the super-manager. Absent: plaintext CoAP.
    #[serde(default)]
    pub oscore: Option<OscoreSection>,
}

/// `[oscore]`: the security context shared with the super-manager (`qos-aggregator provision`
/// prints this section). Batches and `/c` requests are protected end to end; brokers relay
/// them unread. The sender sequence number restarts at `boot epoch << 24` on every start, so a
/// number is never reused after a restart.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OscoreSection {
    /// `kid`: this edge's sender id (the key id of its requests), hex, at most 7 bytes.
    pub kid: String,
    /// `serve_id`: the super-manager's sender id, hex, at most 7 bytes (may be empty).
    pub serve_id: String,
    /// `salt`: the master salt, hex (may be empty).
    #[serde(default)]
    pub salt: String,
    /// `secret_file`: the file holding the master secret in hex (16 to 64 bytes; keep it mode
    /// 0600). Relative to the working directory.
    pub secret_file: PathBuf,
}

impl OscoreSection {
    /// Reads the secret file and derives the context; the error names the file or key.
    pub fn context(&self) -> Result<qos_oscore::Context, String> {
        let hex = |name: &str, s: &str| {
            let s = s.trim();
            (s.len() % 2 == 0)
                .then(|| {
                    (0..s.len())
                        .step_by(2)
                        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
                        .collect::<Option<Vec<u8>>>()
                })
                .flatten()
                .ok_or_else(|| format!("[oscore] {name}: not hex"))
        };
        let text = std::fs::read_to_string(&self.secret_file)
            .map_err(|e| format!("[oscore] secret_file {}: {e}", self.secret_file.display()))?;
        let secret = hex("secret_file", &text)?;
        if !(16..=64).contains(&secret.len()) {
            return Err(format!(
                "[oscore] secret_file {}: not 16 to 64 bytes of hex",
                self.secret_file.display()
            ));
        }
        let kid = hex("kid", &self.kid)?;
        let serve_id = hex("serve_id", &self.serve_id)?;
        let salt = hex("salt", &self.salt)?;
        if kid == serve_id {
            return Err("[oscore] kid and serve_id must differ".into());
        }
        qos_oscore::Context::derive(&secret, &salt, None, &kid, &serve_id)
            .map_err(|_| "[oscore] kid or serve_id longer than 7 bytes".into())
    }
}

/// `[metrics]`: host metrics of this machine (CPU, memory, disk, network; see
/// `hostmetrics.rs`), sent upstream as records of kind 3 next to the summaries.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSection {
    /// Whether to sample and send them.
    pub enabled: bool,
    /// Seconds between samples (1..=65535), on a grid of Unix time like the summary windows;
    /// default: `uplink.window_s`.
    pub interval_s: Option<u16>,
}

impl Default for MetricsSection {
    fn default() -> Self {
        MetricsSection {
            enabled: true,
            interval_s: None,
        }
    }
}

impl MetricsSection {
    /// The sampling interval, given the summary window.
    pub fn interval_s(&self, window_s: u16) -> u16 {
        self.interval_s.unwrap_or(window_s)
    }
}

/// `[edge]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeSection {
    /// Numeric id, unique in the installation (used on the wire).
    pub id: u32,
    /// Name (RFC 9176 endpoint name): letters, digits, `-`, `_`, `.`; at most 63 bytes.
    pub name: String,
    /// Region (RFC 9176 sector), same character rules.
    pub region: String,
    /// After a failed run, run the probe again this many ms later to confirm the failure
    /// (when that is before its next slot), so one lost packet is not an outage; 0 disables.
    #[serde(default = "default_confirm")]
    pub confirm_ms: u32,
    /// Probes running at the same time at most (1..=32).
    #[serde(default = "default_concurrency")]
    pub max_concurrent_probes: u8,
    /// Raw results kept for drill-down (`GET /r` on the edge's CoAP socket), newest replacing
    /// oldest (1..=1024). Scheduled and on-demand runs both go in.
    #[serde(default = "default_recent")]
    pub recent_results: u16,
}

fn default_recent() -> u16 {
    64
}

fn default_confirm() -> u32 {
    5_000
}

fn default_concurrency() -> u8 {
    4
}

/// `[uplink]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UplinkSection {
    /// CoAP/UDP addresses of the brokers (or of `qos-aggregator serve`), in order of preference.
    pub brokers: Vec<SocketAddr>,
    /// Summary window, seconds.
    pub window_s: u16,
    /// RFC 7252 ACK_TIMEOUT, ms.
    pub ack_timeout_ms: u32,
    /// RFC 7252 ACK_RANDOM_FACTOR (≥ 1.0).
    pub ack_random_factor: f64,
    /// RFC 7252 MAX_RETRANSMIT.
    pub max_retransmit: u8,
    /// Move to the next broker when a batch has no answer after this many ms (0: only when
    /// the CoAP retransmissions are exhausted, up to 93 s with the RFC defaults).
    pub failover_after_ms: u64,
    /// After a failover, go back to the first broker after this many ms.
    pub return_after_ms: u64,
    /// Local address of the edge's CoAP socket (it sends batches and serves `/p`, `/r` and
    /// `/.well-known/core` on it); default `0.0.0.0:0` (`[::]:0` when the first broker is
    /// IPv6): any port.
    pub bind: Option<SocketAddr>,
    /// Lifetime of the registration with the broker (RFC 9176 `lt`), seconds (≥ 60); refreshed
    /// at half of it.
    pub lifetime_s: u32,
    /// Ask the broker for this edge's central configuration (`GET /c`) every this many
    /// seconds, and right after each registration; 0 disables the poll.
    pub config_poll_s: u32,
    /// Largest batch body, bytes (1024..=16384): a batch over 1024 bytes (a backlog after a
    /// cut) goes block-wise (RFC 7959 Block1); 1024 keeps every batch within one datagram.
    pub max_body: usize,
    /// Block size of block-wise batches, bytes: 16, 32, 64, 128, 256, 512 or 1024.
    pub block_size: usize,
}

impl UplinkSection {
    /// The block-wise settings of the uplink core, `None` when batches stay single-datagram.
    pub fn blocks(&self) -> Option<qos_edge_core::uplink::BlockConfig> {
        (self.max_body > qos_edge_core::uplink::MAX_BATCH).then(|| {
            qos_edge_core::uplink::BlockConfig {
                max_body: self.max_body,
                szx: self.block_size.trailing_zeros().saturating_sub(4) as u8,
            }
        })
    }
}

impl Default for UplinkSection {
    fn default() -> Self {
        UplinkSection {
            brokers: vec![SocketAddr::from(([127, 0, 0, 1], 5683))],
            window_s: 60,
            ack_timeout_ms: 2000,
            ack_random_factor: 1.5,
            max_retransmit: 4,
            failover_after_ms: 8_000,
            return_after_ms: 300_000,
            bind: None,
            lifetime_s: qos_wire::registration::DEFAULT_LIFETIME,
            config_poll_s: 60,
            max_body: 4096,
            block_size: 1024,
        }
    }
}

/// `[storage]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageSection {
    /// Directory for the boot epoch and the outbox; created if missing.
    pub dir: PathBuf,
}

impl Default for StorageSection {
    fn default() -> Self {
        StorageSection {
            dir: PathBuf::from("./qos-edge-data"),
        }
    }
}

/// Kinds of probe this build runs (names as in the configuration and on the command line).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProbeKindName {
    /// DNS query to a resolver.
    Dns,
    /// TCP connect.
    Tcp,
    /// HTTP(S) request.
    #[value(alias = "https")]
    Http,
    /// UDP echo.
    #[value(name = "udp_echo", alias = "udp-echo")]
    UdpEcho,
    /// CoAP ping.
    #[value(name = "coap_ping", alias = "coap-ping")]
    CoapPing,
    /// ICMP echo.
    Icmp,
    /// Send/expect script over TCP.
    Transaction,
}

impl ProbeKindName {
    /// The name used in configuration and JSON.
    pub fn name(self) -> &'static str {
        match self {
            ProbeKindName::Dns => "dns",
            ProbeKindName::Tcp => "tcp",
            ProbeKindName::Http => "http",
            ProbeKindName::UdpEcho => "udp_echo",
            ProbeKindName::CoapPing => "coap_ping",
            ProbeKindName::Icmp => "icmp",
            ProbeKindName::Transaction => "transaction",
        }
    }
}
impl Config {
    /// Read and check the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Parse and check `text` (`path` names it in errors).
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().replace('\n', " "),
        })?;
        cfg.validate().map_err(|message| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        })?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), String> {
        let name_ok = |s: &str| {
            !s.is_empty()
                && s.len() <= 63
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        };
        if !name_ok(&self.edge.name) {
            return Err(format!(
                "edge.name {:?}: use 1-63 letters, digits, '-', '_' or '.'",
                self.edge.name
            ));
        }
        if !name_ok(&self.edge.region) {
            return Err(format!(
                "edge.region {:?}: use 1-63 letters, digits, '-', '_' or '.'",
                self.edge.region
            ));
        }
        let u = &self.uplink;
        if u.brokers.is_empty() {
            return Err("uplink.brokers: at least one broker address is needed".into());
        }
        if u.window_s == 0 {
            return Err("uplink.window_s must be at least 1".into());
        }
        if u.lifetime_s < qos_wire::registration::MIN_LIFETIME {
            return Err("uplink.lifetime_s must be at least 60 (RFC 9176)".into());
        }
        if !(qos_edge_core::uplink::MAX_BATCH..=qos_edge_core::uplink::MAX_BODY)
            .contains(&u.max_body)
        {
            return Err(format!(
                "uplink.max_body {}: must be within 1024..=16384 bytes",
                u.max_body
            ));
        }
        if !u.block_size.is_power_of_two() || !(16..=1024).contains(&u.block_size) {
            return Err(format!(
                "uplink.block_size {}: must be 16, 32, 64, 128, 256, 512 or 1024 bytes",
                u.block_size
            ));
        }
        if self.metrics.interval_s == Some(0) {
            return Err("metrics.interval_s must be at least 1".into());
        }
        if u.ack_timeout_ms == 0 || !(1.0..=4.0).contains(&u.ack_random_factor) {
            return Err(
                "uplink.ack_timeout_ms must be > 0 and uplink.ack_random_factor within 1.0..=4.0"
                    .into(),
            );
        }
        if !(1..=32).contains(&self.edge.max_concurrent_probes) {
            return Err("edge.max_concurrent_probes must be within 1..=32".into());
        }
        if !(1..=1024).contains(&self.edge.recent_results) {
            return Err("edge.recent_results must be within 1..=1024".into());
        }
        qos_probe_config::validate_set(&self.probes, &self.rules)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use qos_wire::phase::Phase;
    use qos_wire::probe::{DnsType, HttpMethod, ProbeKind};
    use qos_wire::threshold::{Metric, ThresholdRule};

    #[test]
    fn rules_are_checked() {
        let base = "[edge]\nid = 1\nname = \"a\"\nregion = \"r\"\n[[probe]]\nid = 1\nkind = \"tcp\"\ntarget = \"x:1\"\n";
        for (rule, needle) in [
            (
                "probe = 2\nmetric = \"availability\"\nk = 1\nn = 1",
                "no such probe",
            ),
            (
                "probe = 1\nmetric = \"latency\"\nk = 1\nn = 1",
                "unknown metric",
            ),
            ("probe = 1\nmetric = \"total\"\nk = 1\nn = 1", "raise_ms"),
            (
                "probe = 1\nmetric = \"total\"\nraise_ms = 5\nclear_ms = 9\nk = 1\nn = 1",
                "rule for probe 1",
            ),
            (
                "probe = 1\nmetric = \"availability\"\nk = 4\nn = 3",
                "rule for probe 1",
            ),
        ] {
            let err = Config::parse(&format!("{base}[[rule]]\n{rule}\n"), Path::new("e.toml"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{rule}: {err}");
        }
        let ok = Config::parse(
            &format!(
                "{base}[[rule]]\nprobe = 1\nmetric = \"connect\"\nraise_ms = 0.25\nk = 1\nn = 2\n"
            ),
            Path::new("e.toml"),
        )
        .unwrap();
        assert_eq!(ok.rules[0].rule().unwrap().raise, 250);
    }

    #[test]
    fn bind_and_recent_results() {
        let base = "[edge]\nid = 1\nname = \"a\"\nregion = \"r\"\n";
        let cfg = Config::parse(
            &format!("{base}recent_results = 8\n[uplink]\nbind = \"127.0.0.1:5999\"\n"),
            Path::new("e.toml"),
        )
        .unwrap();
        assert_eq!(cfg.edge.recent_results, 8);
        assert_eq!(
            cfg.uplink.bind,
            Some(SocketAddr::from(([127, 0, 0, 1], 5999)))
        );
        for bad in ["recent_results = 0\n", "recent_results = 1025\n"] {
            let err = Config::parse(&format!("{base}{bad}"), Path::new("e.toml"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("recent_results"), "{err}");
        }
    }

    #[test]
    fn registration_and_poll_options() {
        let base = "[edge]\nid = 1\nname = \"a\"\nregion = \"r\"\n";
        let cfg = Config::parse(base, Path::new("e.toml")).unwrap();
        assert_eq!((cfg.uplink.lifetime_s, cfg.uplink.config_poll_s), (300, 60));
        let cfg = Config::parse(
            &format!("{base}[uplink]\nlifetime_s = 120\nconfig_poll_s = 0\n"),
            Path::new("e.toml"),
        )
        .unwrap();
        assert_eq!((cfg.uplink.lifetime_s, cfg.uplink.config_poll_s), (120, 0));
        let err = Config::parse(
            &format!("{base}[uplink]\nlifetime_s = 59\n"),
            Path::new("e.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("lifetime_s"), "{err}");
    }

    #[test]
    fn example_file_parses() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/qos-edge.example.toml"
        ));
        let cfg = Config::load(path).expect("example config");
        assert_eq!(cfg.uplink, UplinkSection::default());
        assert_eq!(cfg.storage, StorageSection::default());
        assert_eq!(cfg.metrics, MetricsSection::default());
        assert_eq!(cfg.metrics.interval_s(cfg.uplink.window_s), 60);
        assert_eq!(cfg.edge.recent_results, 64);
        assert_eq!(cfg.probes.len(), 8);
        assert_eq!(
            (cfg.edge.confirm_ms, cfg.edge.max_concurrent_probes),
            (default_confirm(), default_concurrency())
        );
        let rules: Vec<ThresholdRule> = cfg.rules.iter().map(|r| r.rule().unwrap()).collect();
        assert_eq!(
            rules[0],
            ThresholdRule {
                metric: Metric::Phase(Phase::FirstByte),
                raise: 500_000,
                clear: 300_000,
                k: 2,
                n: 3
            }
        );
        assert_eq!(rules[1].metric, Metric::Availability);
        let kinds: Vec<_> = cfg
            .probes
            .iter()
            .map(|p| {
                let steps = p.steps();
                p.spec(&steps).kind.name()
            })
            .collect();
        for k in qos_wire::probe::KIND_NAMES {
            assert!(kinds.contains(&k), "the example shows no {k} probe");
        }
        let pg = &cfg.probes[7];
        assert_eq!(
            pg.steps()[0].send,
            &[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f][..],
            "escapes decoded"
        );
        assert_eq!(pg.steps()[0].expect, b"N");
        let redis = &cfg.probes[6];
        assert_eq!(redis.steps()[0].send, b"PING\r\n");
    }

    #[test]
    fn every_kind_converts_to_a_spec() {
        let base = "[edge]\nid = 1\nname = \"a\"\nregion = \"r\"\n";
        let probes = r#"
[[probe]]
id = 1
kind = "http"
url = "https://h.test:8443/x"
method = "POST"
body = 'a\x41\n'
expect_status = 201
expect_body = "ok"
max_redirects = 2
ca_file = "/tmp/ca.pem"
[[probe]]
id = 2
kind = "dns"
resolver = "10.0.0.53"
name = "h.test"
qtype = "AAAA"
expect = "2001:db8::1"
[[probe]]
id = 3
kind = "udp_echo"
target = "[::1]:7"
[[probe]]
id = 4
kind = "transaction"
target = "h:1"
steps = [{ send = "x" }, { expect = "y" }]
"#;
        let cfg = Config::parse(&format!("{base}{probes}"), Path::new("e.toml")).unwrap();
        let p = &cfg.probes[0];
        assert_eq!(
            p.spec(&[]).kind,
            ProbeKind::Http {
                method: HttpMethod::Post,
                url: "https://h.test:8443/x",
                body: b"aA\n",
                expect_status: 201,
                expect_body: Some("ok"),
                max_redirects: 2,
            }
        );
        assert_eq!(p.options().ca_file, Some(PathBuf::from("/tmp/ca.pem")));
        assert_eq!(
            cfg.probes[1].spec(&[]).kind,
            ProbeKind::Dns {
                resolver: "10.0.0.53",
                name: "h.test",
                qtype: DnsType::Aaaa,
                expect: Some("2001:db8::1"),
            }
        );
        assert_eq!(
            cfg.probes[2].spec(&[]).kind,
            ProbeKind::UdpEcho {
                target: "[::1]:7",
                payload: b"qos-edge echo",
            }
        );
        let steps = cfg.probes[3].steps();
        assert_eq!(steps.len(), 2);
        assert_eq!((steps[0].send, steps[1].expect), (&b"x"[..], &b"y"[..]));
        assert!(cfg.probes.iter().all(|p| {
            let s = p.steps();
            p.spec(&s).validate().is_ok()
        }));
    }

    #[test]
    fn kind_specific_fields_are_checked() {
        let base = "[edge]\nid = 1\nname = \"a\"\nregion = \"r\"\n[[probe]]\nid = 1\n";
        for (extra, needle) in [
            ("kind = \"tcp\"\nurl = \"http://x/\"\n", "url"),
            ("kind = \"tcp\"\ntarget = \"x:1\"\nname = \"n\"\n", "name"),
            ("kind = \"http\"\nurl = \"ftp://x/\"\n", "ftp://x/"),
            (
                "kind = \"http\"\nurl = \"http://x/\"\nmethod = \"PUT\"\n",
                "PUT",
            ),
            (
                "kind = \"dns\"\nresolver = \"dns.example\"\nname = \"a\"\n",
                "resolver",
            ),
            (
                "kind = \"dns\"\nresolver = \"1.1.1.1\"\nname = \"a..b\"\n",
                "a..b",
            ),
            (
                "kind = \"dns\"\nresolver = \"1.1.1.1\"\nname = \"a\"\nexpect = \"x\"\n",
                "expect",
            ),
            (
                "kind = \"transaction\"\ntarget = \"h:1\"\nsteps = []\n",
                "steps",
            ),
            (
                "kind = \"transaction\"\ntarget = \"h:1\"\nsteps = [{ send = 'a\\q' }]\n",
                "escape",
            ),
            ("kind = \"udp_echo\"\ntarget = \"h\"\n", "host:port"),
            ("kind = \"icmp\"\nhost = \"\"\n", "host"),
        ] {
            let err = Config::parse(&format!("{base}{extra}"), Path::new("e.toml"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{extra}: {err}");
        }
    }

    #[test]
    fn escapes() {
        assert_eq!(
            unescape(r"a\r\n\t\0\\\x7f\xFF").unwrap(),
            b"a\r\n\t\0\\\x7f\xff"
        );
        assert!(unescape(r"\x4").is_err());
        assert!(unescape(r"\q").is_err());
        assert!(unescape("x\\").is_err());
    }

    #[test]
    fn block_settings_map_to_the_core() {
        let base = "[edge]\nid = 1\nname = \"a\"\nregion = \"r\"\n";
        let p = |extra: &str| Config::parse(&format!("{base}{extra}"), Path::new("e.toml"));
        let b = p("").unwrap().uplink.blocks().unwrap();
        assert_eq!((b.max_body, b.szx), (4096, 6));
        let b = p("[uplink]\nmax_body = 16384\nblock_size = 256\n")
            .unwrap()
            .uplink
            .blocks()
            .unwrap();
        assert_eq!((b.max_body, b.szx), (16384, 4));
        assert_eq!(
            p("[uplink]\nmax_body = 1024\n").unwrap().uplink.blocks(),
            None
        );
    }

    #[test]
    fn unknown_field_is_named() {
        let text = "[edge]\nid = 1\nname = \"a\"\nregion = \"r\"\ncolour = 3\n";
        let err = Config::parse(text, Path::new("e.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("colour") && err.contains("e.toml"), "{err}");
    }

    #[test]
    fn bad_values_rejected() {
        let base = "[edge]\nid = 1\nname = \"a\"\nregion = \"r\"\n";
        for (extra, needle) in [
            (
                "[[probe]]\nid = 1\nkind = \"tcp\"\ntarget = \"x:1\"\ntimeout_ms = 0\n",
                "probe 1",
            ),
            ("[uplink]\nbrokers = []\n", "uplink.brokers"),
            ("[uplink]\nmax_body = 1000\n", "uplink.max_body 1000"),
            ("[uplink]\nmax_body = 16385\n", "uplink.max_body 16385"),
            ("[uplink]\nblock_size = 1000\n", "uplink.block_size 1000"),
            ("[uplink]\nblock_size = 2048\n", "uplink.block_size 2048"),
            ("[metrics]\ninterval_s = 0\n", "metrics.interval_s"),
            ("[metrics]\nenable = false\n", "enable"),
            (
                "[[probe]]\nid = 1\nkind = \"icmpx\"\ntarget = \"x\"\n",
                "icmpx",
            ),
        ] {
            let err = Config::parse(&format!("{base}{extra}"), Path::new("e.toml"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{err}");
        }
        let err = Config::parse(
            "[edge]\nid = 1\nname = \"a b\"\nregion = \"r\"\n",
            Path::new("e.toml"),
        );
        assert!(err.unwrap_err().to_string().contains("edge.name"));
    }
}
