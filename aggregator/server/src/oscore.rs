//! OSCORE (RFC 8613) between edges and `serve`, end to end through brokers: per-edge security
//! contexts from `[oscore]` (secrets from files), unprotection of requests before the CoAP
//! endpoint sees them, protection of the answers, replay windows kept across restarts by a
//! high-water mark written every `persist_every` numbers (RFC 8613 Appendix B.1), over UDP
//! and over the CoAP-over-TCP/TLS connections of brokers alike.
//!
//! ```toml
//! [oscore]
//! # state_file = "qos-data/oscore-replay.json"   # default: data_dir/oscore-replay.json
//! # persist_every = 64                           # a mark per 64 sequence numbers
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
use std::sync::Arc;

use qos_coap::{Code, Message};
use qos_oscore::{Context, Error as OscoreError, HighWater, ReplayWindow, RequestInfo};
use qos_wire::config::CONFIG_PATH;
use qos_wire::registration::{PROBE_PATH, RESULTS_PATH};
use qos_wire::uplink::{Batch, UPLINK_PATH};
use serde::{Deserialize, Serialize};

use crate::stats::{IngestStats, RejectReason};

/// The default [`OscoreConfig::state_file`], inside the store's data directory.
pub const STATE_FILE: &str = "oscore-replay.json";
/// The default [`OscoreConfig::persist_every`].
pub const PERSIST_EVERY: u64 = 64;
/// Protected requests remembered to protect their answers (and the endpoint's repeats).
const PENDING: usize = 1024;
/// Accepted datagrams remembered to recognise a CoAP retransmission of one (same bytes).
const RECENT: usize = 256;
/// The outer Uri-Host of a protected order to edge `n` is `edge-<n>`: the Uri-Path and the
/// queries are encrypted (class E), so a broker routes on this (class U) option.
pub const EDGE_HOST_PREFIX: &str = "edge-";

/// `[oscore]`: OSCORE with edges. Absent: no edge uses OSCORE.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OscoreConfig {
    /// `state_file`: where the high-water marks of the replay windows (and of serve's own
    /// sequence numbers) are kept across restarts. Default `oscore-replay.json` in
    /// `[store] data_dir`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_file: Option<PathBuf>,
    /// `persist_every`: N, the state file is rewritten once per N sequence numbers of an edge
    /// (not per request); after a restart every number at or below the last mark + N is
    /// refused (an edge there is answered 4.01 "Replay detected" and moves its numbers on by
    /// [`qos_oscore::RESYNC_STEP`]). Default [`PERSIST_EVERY`]; 1 to `RESYNC_STEP`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub persist_every: Option<u64>,
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
    /// `persist_every` beyond what an edge skips on a "Replay detected" answer.
    #[error("[oscore] persist_every {0}: must be 1 to {max}", max = qos_oscore::RESYNC_STEP)]
    PersistEvery(u64),
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
    /// The mark of the numbers accepted from the edge.
    recv: HighWater,
    /// The mark of serve's own sender sequence numbers (requests to the edge).
    send: HighWater,
}

/// One edge's entry in the state file.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Marks {
    /// N when these marks were written (the restart rule uses it, whatever N is now).
    every: u64,
    /// The highest number accepted from the edge when last written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    recv: Option<u64>,
    /// serve's highest sender sequence number when last written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    send: Option<u64>,
}

/// The state file's entries: marks, or (older files) the whole window `[next, seen]`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(untagged)]
enum Saved {
    Marks(Marks),
    Window(u64, u32),
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
    /// serve's protected orders (`/p`, `/r`) to edges: peer, message id, token, edge index,
    /// request binding (to open the answers and protect a retransmission identically).
    asked: VecDeque<(A, u16, Vec<u8>, usize, RequestInfo)>,
    state_file: PathBuf,
    every: u64,
    /// Where accepted requests and state file writes are counted.
    stats: Option<Arc<IngestStats>>,
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
        let every = config.persist_every.unwrap_or(PERSIST_EVERY);
        if !(1..=qos_oscore::RESYNC_STEP).contains(&every) {
            return Err(OscoreConfigError::PersistEvery(every));
        }
        let mut gate = OscoreGate {
            edges: Vec::new(),
            by_kid: HashMap::new(),
            pending: VecDeque::new(),
            recent: VecDeque::new(),
            asked: VecDeque::new(),
            state_file,
            every,
            stats: None,
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
            gate.edges.push(EdgeContext {
                edge: e.edge,
                ctx,
                recv: HighWater::new(every, None),
                send: HighWater::new(every, None),
            });
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

    /// Whether edge `edge` has a context (its orders are protected).
    pub fn has_edge(&self, edge: u32) -> bool {
        self.edges.iter().any(|e| e.edge == edge)
    }

    /// Counts accepted requests and state file writes in `stats` (`/api/v1/stats`, `oscore`).
    pub fn count_in(&mut self, stats: Arc<IngestStats>) {
        self.stats = Some(stats);
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
        let state: HashMap<String, Saved> =
            serde_json::from_str(&text).map_err(|e| OscoreConfigError::State {
                path: self.state_file.clone(),
                what: e.to_string(),
            })?;
        for (kid, saved) in &state {
            let Some(&i) = from_hex(kid).and_then(|k| self.by_kid.get(&k)) else {
                continue;
            };
            let e = &mut self.edges[i];
            match *saved {
                Saved::Window(next, seen) => {
                    e.ctx
                        .set_replay_window(ReplayWindow::from_state(next, seen));
                    // Written after every request: the next number accepted writes a mark.
                }
                Saved::Marks(m) => {
                    let every = m.every.max(1);
                    if let Some(mark) = m.recv {
                        e.ctx
                            .set_replay_window(ReplayWindow::after_restart(mark, every));
                        e.recv = HighWater::new(self.every, Some(mark));
                    }
                    if let Some(mark) = m.send {
                        let resume = HighWater::new(every, Some(mark)).resume();
                        e.ctx.set_sender_sequence(resume);
                        e.send = HighWater::new(self.every, Some(mark));
                    }
                }
            }
        }
        Ok(())
    }

    /// Writes every edge's marks (to a temporary file renamed over the state file, so a kill
    /// leaves the old or the new state), then counts the write.
    fn persist(&self) -> std::io::Result<()> {
        let state: HashMap<String, Saved> = self
            .edges
            .iter()
            .map(|e| {
                let marks = Marks {
                    every: self.every,
                    recv: e.recv.mark(),
                    send: e.send.mark(),
                };
                (to_hex(e.ctx.recipient_id()), Saved::Marks(marks))
            })
            .collect();
        let tmp = self.state_file.with_extension("tmp");
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&serde_json::to_vec(&state).unwrap_or_default())?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &self.state_file)?;
        if let Some(s) = &self.stats {
            s.add_oscore_state_writes(1);
        }
        Ok(())
    }

    /// Number `seq` was just accepted from edge `i`: writes a new mark when the last one no
    /// longer covers it. `false` when it must be and cannot be written (refuse the request:
    /// a restart could accept it again).
    fn mark_accepted(&mut self, i: usize, seq: u64) -> bool {
        let Some(mark) = self.edges[i].recv.needs(seq) else {
            return true;
        };
        let before = self.edges[i].recv;
        self.edges[i].recv.persisted(mark);
        match self.persist() {
            Ok(()) => true,
            Err(e) => {
                self.edges[i].recv = before;
                tracing::warn!(error = %e, path = %self.state_file.display(), "cannot persist the OSCORE replay marks; request refused");
                false
            }
        }
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

    /// Checks and opens a message from `from`: a datagram, or with `stream` a CoAP-over-TCP/TLS
    /// frame (RFC 8323) of a broker's connection, which goes through the same checks, counters
    /// and replay windows (as a datagram with the frame's code, token, options and payload)
    /// and comes out as a frame again.
    pub fn open_on(&mut self, from: A, bytes: &[u8], stream: bool) -> Inbound {
        if !stream {
            return self.open(from, bytes);
        }
        let Some(datagram) = Message::parse_frame(bytes)
            .ok()
            .and_then(|m| recode(&m, false))
        else {
            // Not a frame the endpoint could read either: it counts it as malformed.
            return Inbound::Plain;
        };
        match self.open(from, &datagram) {
            Inbound::Opened(plain) => {
                match Message::parse(&plain).ok().and_then(|m| recode(&m, true)) {
                    Some(frame) => Inbound::Opened(frame),
                    None => Inbound::Refused(RejectReason::OscoreMalformed),
                }
            }
            other => other,
        }
    }

    /// [`OscoreGate::seal`] for a datagram, or with `stream` a frame of a broker's connection.
    pub fn seal_on(&mut self, to: A, bytes: &[u8], stream: bool) -> Outbound {
        if !stream {
            return self.seal(to, bytes);
        }
        let Some(datagram) = Message::parse_frame(bytes)
            .ok()
            .and_then(|m| recode(&m, false))
        else {
            return Outbound::Pass;
        };
        match self.seal(to, &datagram) {
            Outbound::Sealed(v) => match Message::parse(&v).ok().and_then(|m| recode(&m, true)) {
                Some(frame) => Outbound::Sealed(frame),
                None => Outbound::Drop,
            },
            other => other,
        }
    }

    /// Checks and opens a datagram received from `from`.
    pub fn open(&mut self, from: A, bytes: &[u8]) -> Inbound {
        if let Some(answer) = self.open_answer(from, bytes) {
            return answer;
        }
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
        if !self.mark_accepted(i, info.sequence()) {
            return Inbound::Refused(RejectReason::StoreError);
        }
        if let Some(s) = &self.stats {
            s.add_oscore_accepted(1);
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

    /// The answer of an edge to one of serve's protected orders: opened when it verifies;
    /// an unprotected error (a broker's 4.04, 5.03, 5.04) passes; an unprotected success or
    /// one that does not verify is refused. `None`: not such an answer.
    fn open_answer(&mut self, from: A, bytes: &[u8]) -> Option<Inbound> {
        let m = Message::parse(bytes).ok()?;
        if !m.code().is_response() {
            return None;
        }
        let (_, _, _, i, info) = self
            .asked
            .iter()
            .rev()
            .find(|(a, _, t, _, _)| *a == from && t.as_slice() == m.token())?;
        if m.option(qos_coap::option::OSCORE).is_none() {
            return Some(if m.code().class() >= 4 {
                Inbound::Plain
            } else {
                Inbound::Refused(RejectReason::OscoreRequired)
            });
        }
        let mut out = vec![0u8; 2 * bytes.len() + 64];
        Some(
            match self.edges[*i].ctx.unprotect_response(bytes, info, &mut out) {
                Ok(n) => {
                    out.truncate(n);
                    Inbound::Opened(out)
                }
                Err(e) => Inbound::Refused(reason(e)),
            },
        )
    }

    /// serve's order `/p` or `/r` to an edge with a context (named by its `id=` query, which
    /// is left out): protected, with the outer Uri-Host `edge-<id>` a broker routes on. A
    /// retransmission (same peer, message id and token) goes out as the same bytes. `Drop`
    /// when it cannot be protected (serve's numbers cannot be persisted): never in plaintext.
    fn seal_order(&mut self, to: A, m: &Message<'_>) -> Outbound {
        use qos_coap::{option, MessageWriter};
        if !(m.path_is(PROBE_PATH) || m.path_is(RESULTS_PATH)) {
            return Outbound::Pass;
        }
        let Some(edge) = m.uri_queries().find_map(|q| {
            q.strip_prefix(b"id=")
                .and_then(|v| std::str::from_utf8(v).ok())
                .and_then(|v| v.parse::<u32>().ok())
        }) else {
            return Outbound::Pass;
        };
        let Some(i) = self.edges.iter().position(|e| e.edge == edge) else {
            return Outbound::Pass;
        };
        // The request as the edge will see it: without `id=`, with the outer Uri-Host.
        let mut plain = vec![0u8; m.as_bytes().len() + 32];
        let host = format!("{EDGE_HOST_PREFIX}{edge}");
        let written = (|| {
            let mut w =
                MessageWriter::new(&mut plain, m.ty(), m.code(), m.message_id(), m.token())?;
            let mut host_written = false;
            for (number, value) in m.options() {
                if number > option::URI_HOST && !host_written {
                    w.option(option::URI_HOST, host.as_bytes())?;
                    host_written = true;
                }
                if number == option::URI_QUERY && value.starts_with(b"id=") {
                    continue;
                }
                w.option(number, value)?;
            }
            if !host_written {
                w.option(option::URI_HOST, host.as_bytes())?;
            }
            w.payload(m.payload())?;
            Ok::<usize, qos_coap::WriteError>(w.finish())
        })();
        let Ok(n) = written else {
            return Outbound::Drop;
        };
        plain.truncate(n);
        let mut out = vec![0u8; n + 64];
        let again = self.asked.iter().find(|(a, mid, t, _, _)| {
            *a == to && *mid == m.message_id() && t.as_slice() == m.token()
        });
        if let Some((_, _, _, j, info)) = again {
            return match self.edges[*j]
                .ctx
                .protect_request_again(&plain, info, &mut out)
            {
                Ok(k) => {
                    out.truncate(k);
                    Outbound::Sealed(out)
                }
                Err(_) => Outbound::Drop,
            };
        }
        // serve's own numbers: a mark on disk before a number above the last one is used.
        let ssn = self.edges[i].ctx.sender_sequence();
        if let Some(mark) = self.edges[i].send.needs(ssn) {
            let before = self.edges[i].send;
            self.edges[i].send.persisted(mark);
            if let Err(e) = self.persist() {
                self.edges[i].send = before;
                tracing::warn!(error = %e, path = %self.state_file.display(), "cannot persist serve's OSCORE sequence number; order not sent");
                return Outbound::Drop;
            }
        }
        match self.edges[i].ctx.protect_request(&plain, &mut out) {
            Ok((k, info)) => {
                out.truncate(k);
                if self.asked.len() >= PENDING {
                    self.asked.pop_front();
                }
                self.asked
                    .push_back((to, m.message_id(), m.token().to_vec(), i, info));
                Outbound::Sealed(out)
            }
            Err(e) => {
                tracing::warn!(error = %e, edge, "cannot protect an order; not sent");
                Outbound::Drop
            }
        }
    }

    /// Protects what serve sends to `to`: an answer to a protected request (by token), or an
    /// order to an edge with a context (`OscoreGate::seal_order`).
    pub fn seal(&mut self, to: A, bytes: &[u8]) -> Outbound {
        let Ok(m) = Message::parse(bytes) else {
            return Outbound::Pass;
        };
        if m.code().is_request() {
            return self.seal_order(to, &m);
        }
        if m.code() == Code::EMPTY {
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

/// `m` written again as a stream frame (`frame`) or as a datagram (CON, message ID 0): the
/// same code, token, options and payload. `None` for an empty or signalling message.
fn recode(m: &Message<'_>, frame: bool) -> Option<Vec<u8>> {
    use qos_coap::{MessageType, MessageWriter};
    if m.code() == Code::EMPTY || m.code().class() == 7 {
        return None;
    }
    let mut buf = vec![0u8; m.as_bytes().len() + 16];
    let mut w = if frame {
        MessageWriter::new_frame(&mut buf, m.code(), m.token()).ok()?
    } else {
        MessageWriter::new(&mut buf, MessageType::Confirmable, m.code(), 0, m.token()).ok()?
    };
    for (number, value) in m.options() {
        w.option(number, value).ok()?;
    }
    w.payload(m.payload()).ok()?;
    let n = w.finish();
    buf.truncate(n);
    Some(buf)
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
            persist_every: None,
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

    /// A gate for edge 3 (kid 0e, serve id 5e) with a mark every `every` numbers, its state
    /// in `out`; and the edge's context.
    fn gate_and_edge(out: &Path, every: u64) -> (OscoreGate<u8>, Context, Arc<IngestStats>) {
        std::fs::create_dir_all(out).unwrap();
        let file = out.join("edge-3.key");
        std::fs::write(&file, to_hex(&[5u8; 32])).unwrap();
        let config = OscoreConfig {
            state_file: None,
            persist_every: Some(every),
            edges: vec![OscoreEdge {
                edge: 3,
                kid: "0e".into(),
                serve_id: "5e".into(),
                salt: "a1".into(),
                secret_file: file,
            }],
        };
        let mut gate = OscoreGate::<u8>::load(&config, out).unwrap();
        let stats = Arc::new(IngestStats::new());
        gate.count_in(stats.clone());
        let edge = Context::derive(&[5u8; 32], &[0xa1], None, &[0x0e], &[0x5e]).unwrap();
        (gate, edge, stats)
    }

    /// A CON `POST /u` of edge 3's batch `seq`, protected by `edge`.
    fn protected_batch(edge: &mut Context, mid: u16) -> Vec<u8> {
        use qos_coap::{option, MessageType, MessageWriter};
        let s: qos_wire::summary::Summary<16> = qos_wire::samples::http_summary(1, 60, 0);
        let batch = qos_wire::samples::batch(
            qos_wire::ids::EdgeId(3),
            qos_wire::ids::Seq(u64::from(mid)),
            0,
            &[s],
        )
        .unwrap();
        let mut buf = [0u8; 512];
        let mut w =
            MessageWriter::new(&mut buf, MessageType::Confirmable, Code::POST, mid, &[1, 2])
                .unwrap();
        w.uri_path(UPLINK_PATH).unwrap();
        w.uint_option(option::CONTENT_FORMAT, 60).unwrap();
        w.payload(&batch).unwrap();
        let n = w.finish();
        let mut out = vec![0u8; 700];
        let (k, _) = edge.protect_request(&buf[..n], &mut out).unwrap();
        out.truncate(k);
        out
    }

    #[test]
    fn the_replay_state_is_written_once_per_n_numbers_and_a_restart_refuses_up_to_mark_plus_n() {
        let out = dir("highwater");
        let (mut gate, mut edge, stats) = gate_and_edge(&out, 8);
        let mut sent = Vec::new();
        for mid in 0..40u16 {
            let d = protected_batch(&mut edge, mid);
            assert!(matches!(gate.open(1, &d), Inbound::Opened(_)), "{mid}");
            sent.push(d);
        }
        let snap = stats.snapshot();
        assert_eq!(snap.oscore.accepted, 40);
        assert_eq!(
            snap.oscore.state_writes, 5,
            "marks at 0, 8, 16, 24, 32: accepted / N"
        );
        // A restart (the state file as the last write left it): every number at or below
        // 32 + 8 is refused, the ones accepted before and the ones that might have been.
        drop(gate);
        let (mut gate, _, stats) = gate_and_edge(&out, 8);
        for d in sent.iter().rev().take(3) {
            assert_eq!(
                gate.open(2, d),
                Inbound::Refused(RejectReason::OscoreReplay)
            );
        }
        assert_eq!(edge.sender_sequence(), 40);
        let fresh = protected_batch(&mut edge, 40);
        assert_eq!(
            gate.open(1, &fresh),
            Inbound::Refused(RejectReason::OscoreReplay),
            "40 = mark + N may have been accepted before the restart"
        );
        let fresh = protected_batch(&mut edge, 41);
        assert!(matches!(gate.open(1, &fresh), Inbound::Opened(_)));
        assert_eq!(
            stats.snapshot().oscore.state_writes,
            1,
            "41 >= 32 + 8: a new mark"
        );
        // The file names N with the marks: a smaller N after a restart still covers them.
        drop(gate);
        let (mut gate, _, _) = gate_and_edge(&out, 1);
        let late = protected_batch(&mut edge, 42);
        let mut e2 = edge.clone();
        e2.set_sender_sequence(48);
        let within = protected_batch(&mut e2, 48);
        assert_eq!(
            gate.open(1, &within),
            Inbound::Refused(RejectReason::OscoreReplay),
            "41 + 8 (the N the mark was written with)"
        );
        assert_eq!(
            gate.open(1, &late),
            Inbound::Refused(RejectReason::OscoreReplay)
        );
        let _ = std::fs::remove_dir_all(&out);
    }

    #[test]
    fn a_stream_frame_is_opened_and_its_answer_sealed_like_a_datagram() {
        use qos_coap::MessageWriter;
        let out = dir("frames");
        let (mut gate, mut edge, stats) = gate_and_edge(&out, 64);
        let d = protected_batch(&mut edge, 1);
        let m = Message::parse(&d).unwrap();
        let frame = recode(&m, true).unwrap();
        let Inbound::Opened(plain) = gate.open_on(1, &frame, true) else {
            panic!("not opened");
        };
        let pm = Message::parse_frame(&plain).expect("opened as a frame");
        assert!(pm.path_is(UPLINK_PATH));
        // The answer (a frame) goes out protected, as a frame; the edge opens it.
        let mut buf = [0u8; 64];
        let mut w = MessageWriter::new_frame(&mut buf, Code::CHANGED, pm.token()).unwrap();
        w.payload(b"ack").unwrap();
        let n = w.finish();
        let Outbound::Sealed(sealed) = gate.seal_on(1, &buf[..n], true) else {
            panic!("not sealed");
        };
        let sm = Message::parse_frame(&sealed).unwrap();
        let info = RequestInfo {
            kid: qos_oscore::Id::from_slice(&[0x0e]).unwrap(),
            piv: qos_oscore::Piv::from_slice(&[0]).unwrap(),
        };
        let dg = recode(&sm, false).unwrap();
        let mut o = [0u8; 128];
        let k = edge.unprotect_response(&dg, &info, &mut o).unwrap();
        assert_eq!(Message::parse(&o[..k]).unwrap().payload(), b"ack");
        // The same frame again (a new connection) is a replay; signalling passes.
        assert_eq!(
            gate.open_on(2, &frame, true),
            Inbound::Refused(RejectReason::OscoreReplay)
        );
        assert_eq!(gate.open_on(1, &[0x00, 0xe1], true), Inbound::Plain);
        assert_eq!(stats.snapshot().oscore.accepted, 1);
        let _ = std::fs::remove_dir_all(&out);
    }

    #[test]
    fn orders_to_an_edge_are_protected_and_only_its_verified_answer_opens() {
        use qos_coap::{option, MessageType, MessageWriter};
        let out = dir("orders");
        let (mut gate, mut edge, _) = gate_and_edge(&out, 4);
        // serve's GET /r?id=3&p=1 to a broker (address 9).
        let mut buf = [0u8; 128];
        let mut w =
            MessageWriter::new(&mut buf, MessageType::Confirmable, Code::GET, 70, &[7]).unwrap();
        w.uri_path(RESULTS_PATH).unwrap();
        w.option(option::URI_QUERY, b"id=3").unwrap();
        w.option(option::URI_QUERY, b"p=1").unwrap();
        let n = w.finish();
        let Outbound::Sealed(order) = gate.seal(9, &buf[..n]) else {
            panic!("an order to an OSCORE edge is protected");
        };
        let om = Message::parse(&order).unwrap();
        assert_eq!(om.option(option::URI_HOST), Some(&b"edge-3"[..]));
        assert_eq!(om.uri_path().count() + om.uri_queries().count(), 0);
        assert_eq!(
            gate.seal(9, &buf[..n]),
            Outbound::Sealed(order.clone()),
            "a retransmission goes out as the same bytes"
        );
        // serve's numbers: a mark was written before the first one was used.
        let state = std::fs::read_to_string(out.join(STATE_FILE)).unwrap();
        assert!(state.contains("\"send\":0"), "{state}");
        // The edge opens it (without the Uri-Host the broker drops), answers protected.
        let mut plain = [0u8; 256];
        let (k, info) = edge.unprotect_request(&order, &mut plain).unwrap();
        let pm = Message::parse(&plain[..k]).unwrap();
        assert!(pm.path_is(RESULTS_PATH));
        assert!(pm.uri_queries().eq([&b"p=1"[..]]), "id= is left out");
        let mut ans = [0u8; 64];
        let mut w = MessageWriter::new(
            &mut ans,
            MessageType::Acknowledgement,
            Code::CONTENT,
            70,
            &[7],
        )
        .unwrap();
        w.payload(b"recent").unwrap();
        let a = w.finish();
        let mut sealed = [0u8; 128];
        let s = edge
            .protect_response(&ans[..a], &info, &mut sealed)
            .unwrap();
        let Inbound::Opened(opened) = gate.open(9, &sealed[..s]) else {
            panic!("the verified answer opens");
        };
        assert_eq!(Message::parse(&opened).unwrap().payload(), b"recent");
        // Altered, or unprotected success: refused; a broker's unprotected 5.04 passes.
        let mut bad = sealed[..s].to_vec();
        *bad.last_mut().unwrap() ^= 1;
        assert_eq!(
            gate.open(9, &bad),
            Inbound::Refused(RejectReason::OscoreForged)
        );
        assert_eq!(
            gate.open(9, &ans[..a]),
            Inbound::Refused(RejectReason::OscoreRequired)
        );
        let mut gw = [0u8; 16];
        let w = MessageWriter::new(
            &mut gw,
            MessageType::Confirmable,
            Code::GATEWAY_TIMEOUT,
            5,
            &[7],
        )
        .unwrap();
        let g = w.finish();
        assert_eq!(gate.open(9, &gw[..g]), Inbound::Plain);
        // Orders to edges without a context, and other requests, pass.
        let mut w =
            MessageWriter::new(&mut buf, MessageType::Confirmable, Code::GET, 71, &[8]).unwrap();
        w.uri_path(RESULTS_PATH).unwrap();
        w.option(option::URI_QUERY, b"id=4").unwrap();
        let n = w.finish();
        assert_eq!(gate.seal(9, &buf[..n]), Outbound::Pass);
        // After a restart serve's numbers resume above its mark + N: never a nonce twice.
        drop(gate);
        let (gate, _, _) = gate_and_edge(&out, 4);
        assert_eq!(gate.edges[0].ctx.sender_sequence(), 5);
        let _ = std::fs::remove_dir_all(&out);
    }
}
