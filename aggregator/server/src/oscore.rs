//! OSCORE (RFC 8613) between edges and `serve`, end to end through brokers: per-edge security
//! contexts from `[oscore]` (secrets from files), unprotection of requests before the CoAP
//! endpoint sees them, protection of the answers, replay windows persisted across restarts.
//!
//! ```toml
//! [oscore]
//! # state_file = "qos-data/oscore-replay.json"   # default: data_dir/oscore-replay.json
//!
//! [[oscore.edge]]
//! edge = 7                    # the edge's numeric id
//! kid = "0e07"                # the edge's sender id (hex, at most 7 bytes)
//! serve_id = "5e"             # serve's sender id (hex)
//! salt = "a1b2c3d4e5f60718"   # master salt (hex, not secret)
//! secret_file = "edge-7.key"  # master secret: hex in a file (mode 0600), never in the config
//! ```
//!
//! What is refused is counted by reason (`oscore_*`, [`crate::stats::RejectReason`]) and never
//! reaches the store: unknown key ids, tags that do not verify, replays, sequence numbers
//! older than the window, malformed OSCORE, plaintext requests naming an edge that must use
//! OSCORE, and protected requests naming another edge than their key's. See docs/security.md.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};

use qos_coap::{Code, Message};
use qos_oscore::{Context, Error as OscoreError, ReplayWindow, RequestInfo};
use qos_wire::config::CONFIG_PATH;
use qos_wire::uplink::{Batch, UPLINK_PATH};
use serde::{Deserialize, Serialize};

use crate::stats::RejectReason;

/// The default [`OscoreConfig::state_file`], inside the store's data directory.
pub const STATE_FILE: &str = "oscore-replay.json";
/// Protected requests remembered to protect their answers (and the endpoint's repeats).
const PENDING: usize = 1024;
/// Accepted datagrams remembered to recognise a CoAP retransmission of one (same bytes).
const RECENT: usize = 256;

/// `[oscore]`: OSCORE with edges. Absent: no edge uses OSCORE.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OscoreConfig {
    /// `state_file`: where the replay windows are kept across restarts (rewritten after each
    /// accepted request). Default `oscore-replay.json` in `[store] data_dir`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_file: Option<PathBuf>,
    /// `[[oscore.edge]]`: one per edge that speaks OSCORE.
    #[serde(rename = "edge", skip_serializing_if = "Vec::is_empty")]
    pub edges: Vec<OscoreEdge>,
}

/// `[[oscore.edge]]`: the security context shared with one edge (`qos-aggregator provision`
/// writes it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OscoreEdge {
    /// `edge`: the edge's numeric id; its batches and `/c` requests must name it.
    pub edge: u32,
    /// `kid`: the edge's sender id (the key id of its requests), hex, at most 7 bytes.
    pub kid: String,
    /// `serve_id`: serve's sender id for this edge, hex, at most 7 bytes (may be empty).
    pub serve_id: String,
    /// `salt`: the master salt, hex (may be empty).
    #[serde(default)]
    pub salt: String,
    /// `secret_file`: a file holding the master secret in hex (16 to 64 bytes). Relative to
    /// the working directory.
    pub secret_file: PathBuf,
}

/// Why `[oscore]` could not be loaded; names the edge and the file or value at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OscoreConfigError {
    /// The secret file could not be read.
    #[error("[[oscore.edge]] edge {edge}: cannot read secret_file {}: {source}", path.display())]
    Secret {
        /// The edge.
        edge: u32,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A value is not what it must be.
    #[error("[[oscore.edge]] edge {edge}: {what}")]
    Invalid {
        /// The edge.
        edge: u32,
        /// What is wrong (never the secret itself).
        what: String,
    },
    /// The state file exists but does not parse.
    #[error("[oscore] state_file {}: {what}", path.display())]
    State {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
}

/// Decodes hex (whitespace around it ignored).
pub fn from_hex(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Encodes bytes as lowercase hex.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

struct EdgeContext {
    edge: u32,
    ctx: Context,
}

/// What became of an incoming datagram.
#[derive(Debug, PartialEq, Eq)]
pub enum Inbound {
    /// Not protected and allowed: process the datagram as it is.
    Plain,
    /// Protected and verified: process this reconstructed message instead.
    Opened(Vec<u8>),
    /// Refused (count it, drop it).
    Refused(RejectReason),
}

/// What to send for an outgoing datagram.
#[derive(Debug, PartialEq, Eq)]
pub enum Outbound {
    /// Send it as it is.
    Pass,
    /// Send this protected message instead.
    Sealed(Vec<u8>),
    /// Send nothing (an answer to a protected request that could not be protected).
    Drop,
}

/// The OSCORE gate of the CoAP server: contexts by key id, the protected requests waiting for
/// their answer.
pub struct OscoreGate<A> {
    edges: Vec<EdgeContext>,
    by_kid: HashMap<Vec<u8>, usize>,
    /// Peer, token, edge index, request binding: the answers to protect.
    pending: VecDeque<(A, Vec<u8>, usize, RequestInfo)>,
    /// Peer, protected datagram, what it opened to.
    recent: VecDeque<(A, Vec<u8>, Vec<u8>)>,
    state_file: PathBuf,
}

fn reason(e: OscoreError) -> RejectReason {
    match e {
        OscoreError::UnknownKid => RejectReason::OscoreUnknownKid,
        OscoreError::Decrypt => RejectReason::OscoreForged,
        OscoreError::Replay => RejectReason::OscoreReplay,
        OscoreError::Stale => RejectReason::OscoreStale,
        _ => RejectReason::OscoreMalformed,
    }
}

impl<A: Copy + PartialEq> OscoreGate<A> {
    /// Loads the contexts (reading each secret file) and the persisted replay windows.
    /// `data_dir` is where the state file goes by default.
    pub fn load(config: &OscoreConfig, data_dir: &Path) -> Result<Self, OscoreConfigError> {
        let state_file = config
            .state_file
            .clone()
            .unwrap_or_else(|| data_dir.join(STATE_FILE));
        let mut gate = OscoreGate {
            edges: Vec::new(),
            by_kid: HashMap::new(),
            pending: VecDeque::new(),
            recent: VecDeque::new(),
            state_file,
        };
        for e in &config.edges {
            let invalid = |what: &str| OscoreConfigError::Invalid {
                edge: e.edge,
                what: what.to_string(),
            };
            let text = std::fs::read_to_string(&e.secret_file).map_err(|source| {
                OscoreConfigError::Secret {
                    edge: e.edge,
                    path: e.secret_file.clone(),
                    source,
                }
            })?;
            let secret = from_hex(&text)
                .filter(|s| (16..=64).contains(&s.len()))
                .ok_or_else(|| {
                    invalid(&format!(
                        "secret_file {}: not 16 to 64 bytes of hex",
                        e.secret_file.display()
                    ))
                })?;
            let kid = from_hex(&e.kid).ok_or_else(|| invalid("kid: not hex"))?;
            let serve_id = from_hex(&e.serve_id).ok_or_else(|| invalid("serve_id: not hex"))?;
            let salt = from_hex(&e.salt).ok_or_else(|| invalid("salt: not hex"))?;
            if kid == serve_id {
                return Err(invalid("kid and serve_id must differ"));
            }
            let ctx = Context::derive(&secret, &salt, None, &serve_id, &kid)
                .map_err(|_| invalid("kid or serve_id longer than 7 bytes"))?;
            if gate.by_kid.insert(kid.clone(), gate.edges.len()).is_some() {
                return Err(invalid(&format!("kid {} is used twice", e.kid)));
            }
            gate.edges.push(EdgeContext { edge: e.edge, ctx });
        }
        gate.restore()?;
        Ok(gate)
    }

    /// How many edges have a context.
    pub fn len(&self) -> usize {
        self.edges.len()
    }

    /// Whether no edge has a context.
    pub fn is_empty(&self) -> bool {
        self.edges.is_empty()
    }

    fn restore(&mut self) -> Result<(), OscoreConfigError> {
        let text = match std::fs::read_to_string(&self.state_file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => {
                return Err(OscoreConfigError::State {
                    path: self.state_file.clone(),
                    what: e.to_string(),
                })
            }
        };
        let state: HashMap<String, (u64, u32)> =
            serde_json::from_str(&text).map_err(|e| OscoreConfigError::State {
                path: self.state_file.clone(),
                what: e.to_string(),
            })?;
        for (kid, &(next, seen)) in &state {
            if let Some(&i) = from_hex(kid).and_then(|k| self.by_kid.get(&k)) {
                self.edges[i]
                    .ctx
                    .set_replay_window(ReplayWindow::from_state(next, seen));
            }
        }
        Ok(())
    }

    /// Writes every replay window (to a temporary file renamed over the state file, so a kill
    /// leaves the old or the new state).
    fn persist(&self) -> std::io::Result<()> {
        let state: HashMap<String, (u64, u32)> = self
            .edges
            .iter()
            .map(|e| (to_hex(e.ctx.recipient_id()), e.ctx.replay_window().state()))
            .collect();
        let tmp = self.state_file.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec(&state).unwrap_or_default())?;
        std::fs::rename(&tmp, &self.state_file)
    }

    /// The edge id a plaintext or opened request names: the batch's edge for `POST /u`, the
    /// `id=` of `/c`.
    fn named_edge(m: &Message<'_>) -> Option<u32> {
        if m.path_is(UPLINK_PATH) {
            return Batch::decode(m.payload()).ok().map(|b| b.edge.0);
        }
        if m.path_is(CONFIG_PATH) {
            return m.uri_queries().find_map(|q| {
                q.strip_prefix(b"id=")
                    .and_then(|v| std::str::from_utf8(v).ok())
                    .and_then(|v| v.parse().ok())
            });
        }
        None
    }

    /// Checks and opens a datagram received from `from`.
    pub fn open(&mut self, from: A, bytes: &[u8]) -> Inbound {
        let kid = match qos_oscore::request_kid(bytes) {
            Ok(Some(kid)) => kid,
            Ok(None) => {
                // Plaintext: refused only when it speaks for an edge that uses OSCORE.
                let Ok(m) = Message::parse(bytes) else {
                    return Inbound::Plain;
                };
                if !m.code().is_request() {
                    return Inbound::Plain;
                }
                let named = Self::named_edge(&m);
                if named.is_some_and(|n| self.edges.iter().any(|e| e.edge == n)) {
                    return Inbound::Refused(RejectReason::OscoreRequired);
                }
                return Inbound::Plain;
            }
            Err(e) => {
                // An OSCORE option on a response, or a bad one.
                let response = Message::parse(bytes).is_ok_and(|m| !m.code().is_request());
                if response {
                    return Inbound::Plain;
                }
                return Inbound::Refused(reason(e));
            }
        };
        let Some(&i) = self.by_kid.get(kid) else {
            return Inbound::Refused(RejectReason::OscoreUnknownKid);
        };
        let mut out = vec![0u8; 2 * bytes.len() + 64];
        let opened = self.edges[i].ctx.unprotect_request(bytes, &mut out);
        let (n, info) = match opened {
            Ok(x) => x,
            Err(OscoreError::Replay) => {
                // The same datagram again is a CoAP retransmission (the endpoint answers it
                // from its cache); anything else with a used number is a replay.
                if let Some((_, _, plain)) = self
                    .recent
                    .iter()
                    .find(|(a, b, _)| *a == from && b.as_slice() == bytes)
                {
                    return Inbound::Opened(plain.clone());
                }
                return Inbound::Refused(RejectReason::OscoreReplay);
            }
            Err(e) => return Inbound::Refused(reason(e)),
        };
        out.truncate(n);
        if let Err(e) = self.persist() {
            tracing::warn!(error = %e, path = %self.state_file.display(), "cannot persist the OSCORE replay windows");
        }
        let Ok(m) = Message::parse(&out) else {
            return Inbound::Refused(RejectReason::OscoreMalformed);
        };
        if Self::named_edge(&m).is_some_and(|n| n != self.edges[i].edge) {
            return Inbound::Refused(RejectReason::OscoreRequired);
        }
        if self.pending.len() >= PENDING {
            self.pending.pop_front();
        }
        self.pending.push_back((from, m.token().to_vec(), i, info));
        if self.recent.len() >= RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back((from, bytes.to_vec(), out.clone()));
        Inbound::Opened(out)
    }

    /// Protects an answer to `to` when it answers a protected request (by token).
    pub fn seal(&self, to: A, bytes: &[u8]) -> Outbound {
        let Ok(m) = Message::parse(bytes) else {
            return Outbound::Pass;
        };
        if m.code() == Code::EMPTY || m.code().is_request() {
            return Outbound::Pass;
        }
        let Some((_, _, i, info)) = self
            .pending
            .iter()
            .rev()
            .find(|(a, t, _, _)| *a == to && t.as_slice() == m.token())
        else {
            return Outbound::Pass;
        };
        let mut out = vec![0u8; bytes.len() + 64];
        match self.edges[*i].ctx.protect_response(bytes, info, &mut out) {
            Ok(n) => {
                out.truncate(n);
                Outbound::Sealed(out)
            }
            Err(e) => {
                // Never the answer in plaintext.
                tracing::warn!(error = %e, "cannot protect an answer; dropped");
                Outbound::Drop
            }
        }
    }
}

/// Why `provision` failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProvisionError {
    /// The system's random source failed.
    #[error("no randomness from the system")]
    Random,
    /// The secret file could not be written (it must not exist yet).
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Fresh credentials for edge `edge`: a 32-byte master secret written in hex to
/// `out/edge-<edge>.key` (mode 0600, never overwritten), a random 8-byte salt and random
/// sender ids. Returns the configuration fragments: `[[oscore.edge]]` for `serve`, then
/// `[oscore]` for the edge, each after a comment line naming it. The secret itself is only in
/// the file.
pub fn provision(edge: u32, out: &Path) -> Result<String, ProvisionError> {
    use ring::rand::{SecureRandom, SystemRandom};
    let rng = SystemRandom::new();
    let mut secret = [0u8; 32];
    let mut salt = [0u8; 8];
    let mut kid = [0u8; 4];
    let mut serve_id = [0u8; 2];
    for buf in [
        &mut secret[..],
        &mut salt[..],
        &mut kid[..],
        &mut serve_id[..],
    ] {
        rng.fill(buf).map_err(|_| ProvisionError::Random)?;
    }
    let path = out.join(format!("edge-{edge}.key"));
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        #[cfg(unix)]
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::create_dir_all(out)?;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        options.mode(0o600);
        let mut f = options.open(&path)?;
        writeln!(f, "{}", to_hex(&secret))?;
        f.sync_all()
    };
    write().map_err(|source| ProvisionError::Write {
        path: path.clone(),
        source,
    })?;
    let (kid, serve_id, salt) = (to_hex(&kid), to_hex(&serve_id), to_hex(&salt));
    let file = path.display().to_string();
    Ok(format!(
        "# serve (qos-aggregator serve --config): append to its file\n\
         [[oscore.edge]]\nedge = {edge}\nkid = \"{kid}\"\nserve_id = \"{serve_id}\"\n\
         salt = \"{salt}\"\nsecret_file = {file:?}\n\n\
         # edge {edge} (qos-edge run --config): append to its file; copy the secret file to the \
         edge (mode 0600)\n\
         [oscore]\nkid = \"{kid}\"\nserve_id = \"{serve_id}\"\nsalt = \"{salt}\"\n\
         secret_file = {file:?}\n"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("qos-oscore-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn provisioned_credentials_load_and_are_fresh_each_time() {
        let out = dir("provision");
        let text = provision(7, &out).unwrap();
        let serve_part = text.split("# edge 7").next().unwrap();
        let config: crate::config::Config = toml::from_str(serve_part).unwrap();
        let oscore = config.oscore.expect("an [oscore] section");
        assert_eq!(oscore.edges.len(), 1);
        assert_eq!(oscore.edges[0].edge, 7);
        let gate = OscoreGate::<u8>::load(&oscore, &out).unwrap();
        assert_eq!(gate.len(), 1);
        let key = std::fs::read_to_string(out.join("edge-7.key")).unwrap();
        assert!(!text.contains(key.trim()), "the secret is not printed");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(out.join("edge-7.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(
            matches!(provision(7, &out), Err(ProvisionError::Write { .. })),
            "an existing secret file is never overwritten"
        );
        let again = provision(8, &out).unwrap();
        let key8 = std::fs::read_to_string(out.join("edge-8.key")).unwrap();
        assert_ne!(key, key8);
        assert_ne!(text.replace("edge = 7", ""), again.replace("edge = 8", ""));
        let _ = std::fs::remove_dir_all(&out);
    }

    #[test]
    fn a_bad_secret_file_is_named_without_its_content() {
        let out = dir("badsecret");
        std::fs::create_dir_all(&out).unwrap();
        let file = out.join("k");
        std::fs::write(&file, "zz-not-hex-topsecret").unwrap();
        let config = OscoreConfig {
            state_file: None,
            edges: vec![OscoreEdge {
                edge: 3,
                kid: "01".into(),
                serve_id: "02".into(),
                salt: String::new(),
                secret_file: file.clone(),
            }],
        };
        let err = OscoreGate::<u8>::load(&config, &out)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("edge 3") && err.contains(&file.display().to_string()),
            "{err}"
        );
        assert!(!err.contains("topsecret"), "{err}");
        let _ = std::fs::remove_dir_all(&out);
    }
}
