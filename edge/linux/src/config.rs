//! The Linux edge's TOML configuration. Every option is documented here and in
//! `qos-edge.example.toml` (a test checks that the example parses).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

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
}

impl Default for UplinkSection {
    fn default() -> Self {
        UplinkSection {
            brokers: vec![SocketAddr::from(([127, 0, 0, 1], 5683))],
            window_s: 60,
            ack_timeout_ms: 2000,
            ack_random_factor: 1.5,
            max_retransmit: 4,
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

/// Kinds of probe this build runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum ProbeKindName {
    /// TCP connect to `target` (`host:port`).
    Tcp,
}

/// `[[probe]]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeSection {
    /// Id, unique within this edge (1..=65535).
    pub id: u16,
    /// What to run.
    pub kind: ProbeKindName,
    /// `host:port`.
    pub target: String,
    /// Interval between runs, ms (≥ 100).
    #[serde(default = "default_interval")]
    pub interval_ms: u32,
    /// Timeout of one run, ms (1..=interval_ms).
    #[serde(default = "default_timeout")]
    pub timeout_ms: u32,
}

fn default_interval() -> u32 {
    10_000
}
fn default_timeout() -> u32 {
    2_000
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
        if u.ack_timeout_ms == 0 || !(1.0..=4.0).contains(&u.ack_random_factor) {
            return Err(
                "uplink.ack_timeout_ms must be > 0 and uplink.ack_random_factor within 1.0..=4.0"
                    .into(),
            );
        }
        let mut ids = std::collections::BTreeSet::new();
        for p in &self.probes {
            if p.id == 0 || !ids.insert(p.id) {
                return Err(format!(
                    "probe id {}: ids must be unique and non-zero",
                    p.id
                ));
            }
            if p.interval_ms < 100 || p.timeout_ms == 0 || p.timeout_ms > p.interval_ms {
                return Err(format!(
                    "probe {}: need interval_ms >= 100 and 1 <= timeout_ms <= interval_ms",
                    p.id
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_file_parses() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/qos-edge.example.toml"
        ));
        let cfg = Config::load(path).expect("example config");
        assert_eq!(cfg.uplink, UplinkSection::default());
        assert_eq!(cfg.storage, StorageSection::default());
        assert_eq!(cfg.probes.len(), 1);
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
