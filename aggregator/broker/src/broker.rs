//! The broker state machine, sans-IO: two CoAP endpoints (downstream to the edges, upstream to
//! the super-manager or a parent broker), a durable [`Queue`] between them, and the
//! [`Registry`]. No sockets, no clock: the driver passes `now` (monotonic ms) and datagrams in
//! and sends what `poll_transmit_*` gives out.
//!
//! # Downstream resources
//! - `POST /u` (Content-Format 60): an uplink batch. Checked with [`Batch::decode`], appended to
//!   the queue, and only once [`Queue::append`] returned `Ok` (the batch is durable) answered
//!   2.04 with `Ack { acked: batch.last_seq() }`. 4.00 (with the reason) for a malformed batch,
//!   4.15 without Content-Format 60, 4.05 for other methods, 5.03 when the queue failed (the
//!   edge keeps the batch and sends it again).
//! - `POST /rd?ep=..&d=..&lt=..&id=..` (RFC 9176 registration): 2.01 Created with
//!   Location-Path `rd/<n>`; 4.00 with the reason for bad parameters.
//! - `POST /rd/<n>` (refresh, optional `lt=`): 2.04; `DELETE /rd/<n>`: 2.02; 4.04 when the
//!   registration is unknown or expired (the edge registers again).
//! - `GET /c?id=<edge>` (with the edge's ETag, if any) and `POST /c?id=<edge>` (Content-Format
//!   60, a `config-report`): relayed to the upstream as the same request; the edge gets an empty
//!   ACK at once and later the upstream's answer (code, ETag, Content-Format, payload) as a
//!   separate response, or 5.04 Gateway Timeout when the upstream does not answer within
//!   `relay_timeout_ms`. 4.00 without `id=<u32>`, 4.15 for a report without Content-Format 60.
//! - `GET /.well-known/core`: [`WELL_KNOWN_CORE`].
//!
//! # Upstream resources (requests from the super-manager to an edge)
//! - `POST /p?id=<edge>` (Content-Format 60, a `probe-spec`) and `GET /r?id=<edge>[&p=<probe>]`:
//!   routed by the [`Registry`] to the address the edge last spoke from, as the same request
//!   without `id=` (other queries kept). The upstream gets an empty ACK at once and later the
//!   edge's answer as a separate response. 4.04 "unknown edge" for an id the registry does not
//!   know; 4.00 without `id=<u32>`. An edge that does not acknowledge within `attempt_ms` is
//!   taken to be away: the request is held and sent again when the edge is next heard from
//!   (a batch, a registration, a `/c` request), for up to `hold_ms` after it arrived; then (or
//!   when an edge that acknowledged never answers) the upstream gets 5.04.
//! - An OSCORE-protected order (RFC 8613; outer code POST, path and queries encrypted) is
//!   routed the same way on its outer Uri-Host `edge-<edge>` and relayed as it is, without
//!   the Uri-Host; the edge's protected answer goes back unread. 4.00 without that Uri-Host.
//! - `GET /.well-known/core`: [`UPSTREAM_LINKS`].
//!
//! More than `max_relays` requests in progress in one direction get 5.03.
//!
//! # Report
//! Every `report_interval_ms` (and within a second of a new registration) the broker sends
//! its counters and registry upstream as a NON `POST /b` ([`crate::report`]).
//!
//! # Forwarding
//! Queued batches go upstream in append order as CON `POST /u` with the same payload, one
//! exchange outstanding at a time (NSTART 1). 2.xx: the batch is removed. 4.00, 4.02, 4.13,
//! 4.15 ([`Code::rejects_content`]): the upstream refuses it for good; it is removed and counted
//! in [`BrokerStats::dropped_refused`]. Any other 4.xx (a wrong upstream address answering
//! 4.04), 5.xx, timeout or reset: the same batch is sent again after a back-off (`retry_initial_ms`, doubling
//! up to `retry_max_ms`, back to the start after a success). A batch is removed only after the
//! upstream acknowledged it, so a broker killed in between sends it again after its restart;
//! the super-manager deduplicates by (edge, seq), so this is harmless. Relayed requests share the
//! upstream's NSTART with the batches and go first (they are small and someone waits for them).
//!
//! When a backlog waits (after an outage of the upstream or a restart), replay is paced
//! ([`replay`], [`BrokerConfig::replay`]): fresh batches of edges without backlog of their own
//! go between the backlog's, so live data keeps flowing while the backlog drains; each edge's
//! batches still go in the order the edge sent them.

use qos_coap::{
    content_format, option, Code, Config as CoapConfig, ConfigError, Event, ExchangeId, Incoming,
    Link, Message, MessageWriter, Reliability, Request, RequestError, RequestHandle, WriteError,
};
use qos_wire::ids::{EdgeId, Seq};
use qos_wire::registration::{CONFIG_PATH, DIRECTORY_PATH, PROBE_PATH, RESULTS_PATH};
use qos_wire::uplink::{Ack, Batch, UPLINK_PATH};

use crate::directory;
use crate::queue::{NewBatch, Queue, QueueError, QueueId, QueueStats};
use crate::registry::{EdgeEntry, Registry};
use crate::report::{BrokerReport, ReportEdge, ReportStats, REPORT_PATH};

/// Largest CoAP message (RFC 7252 §4.6).
pub const MAX_MESSAGE: usize = 1152;
/// The downstream resources, in link format (RFC 6690).
pub const WELL_KNOWN_CORE: &str =
    "</rd>;rt=\"core.rd\",</u>;rt=\"qos.uplink\";ct=60,</c>;rt=\"qos.config\";ct=60";
/// The resources served to the upstream, in link format.
pub const UPSTREAM_LINKS: &str = "</p>;rt=\"qos.probe\";ct=60,</r>;rt=\"qos.results\";ct=60";

/// Endpoint towards the edges (and child brokers): 64 exchanges, 1024 deduplication entries,
/// 64 stream connections (see [`transport`]).
pub type DownstreamEndpoint<A> = Link<A, 64, 1024, MAX_MESSAGE, 64, 64>;
/// Endpoint towards the upstream: one batch in flight, relayed `/c` requests, and separate
/// responses to the upstream's `/p` and `/r`; over datagrams or one stream connection.
pub type UpstreamEndpoint<A> = Link<A, 32, 64, MAX_MESSAGE, 64, 1>;

pub mod blockwise;
pub mod link;
pub mod replay;
pub mod transport;

pub use replay::ReplayConfig;

/// Settings of a [`Broker`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BrokerConfig {
    /// Transmission parameters towards the edges.
    pub downstream: CoapConfig,
    /// Transmission parameters towards the upstream.
    pub upstream: CoapConfig,
    /// First wait before sending a batch again after a failed exchange, ms.
    pub retry_initial_ms: u64,
    /// Longest wait between attempts, ms.
    pub retry_max_ms: u64,
    /// How long a request for an edge (`/p`, `/r` from the upstream) is held for an edge that
    /// does not answer, waiting for it to be heard from again, ms (from its arrival).
    pub hold_ms: u64,
    /// How long one attempt to reach an edge may stay unacknowledged before the request is
    /// held, ms.
    pub attempt_ms: u64,
    /// How long an edge's `/c` request waits for the upstream's answer before 5.04, ms.
    pub relay_timeout_ms: u64,
    /// Relayed requests in progress at most, per direction; more are answered 5.03.
    pub max_relays: usize,
    /// Interval of the broker's report about itself to the upstream (`POST /b`, see
    /// [`crate::report`]), ms; 0: none. A new registration brings the next one forward to
    /// within a second.
    pub report_interval_ms: u64,
    /// Largest request body reassembled from Block1 blocks ([`blockwise`]), bytes (at most
    /// [`blockwise::MAX_BODY`]); larger ones get 4.13 with Size1.
    pub max_body_bytes: usize,
    /// Block1 transfers in progress at most per edge address; more get 5.03.
    pub block_transfers_per_peer: usize,
    /// A Block1 transfer without a block for this long is dropped (its next block gets 4.08),
    /// ms.
    pub block_timeout_ms: u64,
    /// Interval of the CoAP pings to every registered edge that measure round trip and loss
    /// ([`link`]), ms; 0: none.
    pub ping_interval_ms: u64,
    /// A ping unanswered for this long is counted lost, ms.
    pub ping_timeout_ms: u64,
    /// How a backlog is replayed ([`replay`]).
    pub replay: ReplayConfig,
    /// Batches on their way upstream at once, at least 1: at most one per edge, so each
    /// edge's batches still reach the upstream one at a time and in order, and only among the
    /// [`replay::LOOKAHEAD`] oldest. Above 1, the upstream endpoint's NSTART is raised to one
    /// more than this, so relayed requests still have room. Default 1.
    pub upstream_window: usize,
}

impl BrokerConfig {
    /// The upstream endpoint's parameters: `upstream`, with NSTART room for the window.
    pub(crate) fn upstream_coap(&self) -> CoapConfig {
        let mut c = self.upstream;
        if self.upstream_window > 1 {
            let room = u8::try_from(self.upstream_window + 1).unwrap_or(u8::MAX);
            c.nstart = c.nstart.max(room);
        }
        c
    }
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            downstream: CoapConfig::default(),
            upstream: CoapConfig::default(),
            retry_initial_ms: 1_000,
            retry_max_ms: 30_000,
            hold_ms: 30_000,
            attempt_ms: 5_000,
            relay_timeout_ms: 20_000,
            max_relays: 64,
            report_interval_ms: 30_000,
            max_body_bytes: blockwise::MAX_BODY,
            block_transfers_per_peer: 2,
            block_timeout_ms: 60_000,
            ping_interval_ms: 30_000,
            ping_timeout_ms: 5_000,
            replay: ReplayConfig::default(),
            upstream_window: 1,
        }
    }
}

/// Why a request or datagram was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// Not a CoAP message, or oversized.
    Malformed,
    /// A batch that does not decode.
    BadBatch,
    /// No Content-Format 60 on `POST /u`.
    BadContentFormat,
    /// Bad registration parameters.
    BadRegistration,
    /// Unknown resource or registration.
    NotFound,
    /// Wrong method.
    MethodNotAllowed,
    /// A relayed request without a valid `id=` query.
    BadRequest,
}

/// Counters of a broker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BrokerStats {
    /// Batches received from edges (valid or not).
    pub received: u64,
    /// Batches acknowledged to edges (durably queued).
    pub acked: u64,
    /// Batches answered 5.03 because the queue failed.
    pub queue_failures: u64,
    /// Batches acknowledged by the upstream and removed.
    pub forwarded: u64,
    /// Batches the upstream refused (4.xx), dropped.
    pub dropped_refused: u64,
    /// Failed upstream attempts (timeout, reset, 5.xx), retried.
    pub upstream_failures: u64,
    /// Datagrams that were not CoAP, or oversized.
    pub rejected_malformed: u64,
    /// Batches that did not decode.
    pub rejected_bad_batch: u64,
    /// `POST /u` without Content-Format 60.
    pub rejected_content_format: u64,
    /// Registrations with bad parameters.
    pub rejected_registration: u64,
    /// Requests for unknown resources or registrations.
    pub rejected_not_found: u64,
    /// Requests with a wrong method.
    pub rejected_method: u64,
    /// Registrations created or renewed.
    pub registrations: u64,
    /// Relayed requests (`/c`, `/p`, `/r`) without a valid `id=` query.
    pub rejected_bad_request: u64,
    /// `/c` requests of edges answered with the upstream's answer.
    pub config_relayed: u64,
    /// OSCORE-protected requests of edges relayed upstream unread.
    pub protected_relayed: u64,
    /// `/c` requests of edges answered 5.04 (the upstream did not answer).
    pub config_timeouts: u64,
    /// `/p` and `/r` requests of the upstream answered with the edge's answer.
    pub edge_relayed: u64,
    /// `/p` and `/r` requests of the upstream answered 5.04 (the edge did not answer).
    pub edge_timeouts: u64,
    /// Requests for an edge the registry does not know (4.04): `/p` and `/r` of the upstream,
    /// `/c` of an edge that neither registered nor sent a batch here.
    pub unknown_edge: u64,
    /// Times a request for an edge was held because the edge did not acknowledge it.
    pub held: u64,
    /// Requests answered 5.03 because `max_relays` were in progress.
    pub relay_overload: u64,
    /// Registrations and batches of edges turned away (5.03 naming alternates) while draining
    /// or full ([`Broker::with_peers`]).
    pub redirected: u64,
    /// Datagrams of edges dropped unread because their source exceeded its rate
    /// ([`Broker::with_rate_limit`]).
    pub rejected_rate_limited: u64,
    /// Batches and registrations of edges over their own rate
    /// ([`Broker::with_edge_rate_limit`]), answered 4.29.
    pub rejected_rate_limited_edge: u64,
    /// Block-wise request bodies over `max_body_bytes` (4.13), or batches with a record too
    /// large to forward.
    pub rejected_too_large: u64,
    /// Block-wise requests with a block missing, or a continuation of no transfer (4.08).
    pub rejected_incomplete: u64,
    /// Live batches forwarded ahead of older backlog (paced replay, [`replay`]).
    pub forwarded_live_first: u64,
}

/// An answer carried across the broker: code, ETag, Content-Format and payload.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Reply {
    code: Code,
    etag: Option<Vec<u8>>,
    /// The OSCORE option of a protected message relayed as it is (RFC 8613).
    oscore: Option<Vec<u8>>,
    cf: Option<u16>,
    payload: Vec<u8>,
}

impl Reply {
    fn of(m: &Message<'_>) -> Reply {
        Reply {
            code: m.code(),
            etag: m.option(option::ETAG).map(<[u8]>::to_vec),
            oscore: m.option(option::OSCORE).map(<[u8]>::to_vec),
            cf: m.content_format(),
            payload: m.payload().to_vec(),
        }
    }

    fn error(code: Code, text: &str) -> Reply {
        Reply {
            code,
            etag: None,
            oscore: None,
            cf: None,
            payload: text.as_bytes().to_vec(),
        }
    }

    fn write(&self, w: &mut MessageWriter<'_>) -> Result<(), WriteError> {
        if let Some(e) = &self.etag {
            w.option(option::ETAG, e)?;
        }
        if let Some(o) = &self.oscore {
            w.option(option::OSCORE, o)?;
        }
        if let Some(cf) = self.cf {
            w.uint_option(option::CONTENT_FORMAT, u32::from(cf))?;
        }
        w.payload(&self.payload)
    }
}

/// A request to relay: what goes out, and who waits for the answer.
#[derive(Debug, Clone)]
struct Relay<A> {
    /// The waiting requester (an edge for `/c`, the upstream for `/p` and `/r`).
    handle: RequestHandle<A>,
    /// The edge concerned.
    edge: EdgeId,
    code: Code,
    path: &'static str,
    /// Uri-Query items sent on.
    queries: Vec<Vec<u8>>,
    request: Reply,
    created: u64,
    /// The exchange carrying it and when it was sent.
    sent: Option<(ExchangeId, u64)>,
    /// The receiver acknowledged and its separate answer is awaited.
    acked: bool,
    /// `/p`, `/r`: the edge was heard from since the last attempt went out (or there was
    /// none yet): it may be sent (again) now.
    ready: bool,
}

impl<A: Copy> Relay<A> {
    fn write(&self, w: &mut MessageWriter<'_>) -> Result<(), WriteError> {
        if let Some(e) = &self.request.etag {
            w.option(option::ETAG, e)?;
        }
        if let Some(o) = &self.request.oscore {
            w.option(option::OSCORE, o)?;
        }
        w.uri_path(self.path)?;
        if let Some(cf) = self.request.cf {
            w.uint_option(option::CONTENT_FORMAT, u32::from(cf))?;
        }
        for q in &self.queries {
            w.option(option::URI_QUERY, q)?;
        }
        w.payload(&self.request.payload)
    }
}

/// The `id=<u32>` query of a relayed request, and the other queries.
fn split_id<'a>(m: &Message<'a>) -> Result<(EdgeId, Vec<Vec<u8>>), &'static str> {
    let mut id = None;
    let mut rest = Vec::new();
    for q in m.uri_queries() {
        match q.strip_prefix(b"id=") {
            Some(v) => {
                id = Some(
                    core::str::from_utf8(v)
                        .ok()
                        .and_then(|v| v.parse::<u32>().ok())
                        .ok_or("query id=<edge id> is not a number")?,
                )
            }
            None => rest.push(q.to_vec()),
        }
    }
    id.map(|id| (EdgeId(id), rest))
        .ok_or("query id=<edge id> needed")
}

/// The edge a protected order is for: its outer Uri-Host `edge-<u32>`.
fn edge_host(m: &Message<'_>) -> Result<(EdgeId, Vec<Vec<u8>>), &'static str> {
    m.option(option::URI_HOST)
        .and_then(|h| h.strip_prefix(b"edge-"))
        .and_then(|v| core::str::from_utf8(v).ok())
        .and_then(|v| v.parse::<u32>().ok())
        .map(|id| (EdgeId(id), Vec::new()))
        .ok_or("a protected order needs Uri-Host edge-<edge id>")
}

/// The broker.
pub struct Broker<A> {
    down: Box<DownstreamEndpoint<A>>,
    up: Box<UpstreamEndpoint<A>>,
    upstream: A,
    queue: Box<dyn Queue>,
    registry: Registry<A>,
    stats: BrokerStats,
    config: BrokerConfig,
    /// Batches on their way upstream: exchange, queue id, edge (at most one per edge).
    in_flight: Vec<(ExchangeId, QueueId, EdgeId)>,
    /// Room in the window but no batch that may go now (all waiting ones are of busy edges):
    /// no retry timer until an answer or a new batch changes that.
    starved: bool,
    retry_at: u64,
    backoff_ms: u64,
    /// Edges' `/c` requests on their way upstream.
    up_relays: Vec<Relay<A>>,
    /// The upstream's `/p` and `/r` requests on their way to edges.
    down_relays: Vec<Relay<A>>,
    /// When the next report goes upstream.
    next_report: u64,
    /// Token buckets per source ([`Broker::with_rate_limit`]) and the key of a source.
    limiter: Option<crate::ratelimit::SourceLimiter<A>>,
    /// Token buckets per edge id ([`Broker::with_edge_rate_limit`]).
    edge_limiter: Option<crate::ratelimit::EdgeLimiter>,
    /// The Max-Age of the 4.29 answer just given (`edge_over_rate`), for its response.
    max_age: Option<u32>,
    /// Where edges are sent when this broker is draining or full ([`Broker::with_peers`]).
    peers: Vec<String>,
    /// Edges the registry may know before new ones are turned away; 0: no limit.
    max_edges: usize,
    /// Turning every edge away ([`Broker::set_draining`]).
    draining: bool,
    /// Block1 reassembly ([`blockwise`]).
    blocks: Box<blockwise::Blocks<A>>,
    /// Pings measuring the edges' links ([`link`]).
    pinger: link::Pinger<A>,
    /// Which batch goes upstream next ([`replay`]).
    pacer: replay::Pacer,
    /// The latest (monotonic `now`, Unix ms) pair the driver gave, to tell batches' age.
    clock: Option<(u64, u64)>,
    /// This broker's stable id, sent in its reports ([`Broker::with_id`]).
    id: String,
    /// Uplink batches taken while a group is open ([`Broker::begin_group`]), to be queued in
    /// one transaction and answered by [`Broker::end_group`].
    group: Option<Vec<Pending<A>>>,
}

/// An answer to an edge: code, Content-Format, the number of a Location-Path (`/rd/N`), body.
type Answer = (Code, Option<u16>, Option<u32>, Vec<u8>);

/// An edge's batch validated and waiting for its group's append ([`Broker::end_group`]).
struct Pending<A> {
    handle: RequestHandle<A>,
    from: A,
    edge: EdgeId,
    last: Seq,
    /// `(first, last, payload)` of each part to queue ([`blockwise::split_batch`]).
    parts: Vec<(Seq, Seq, Vec<u8>)>,
    unix_ms: u64,
}

/// `make()` on the heap, built in a frame of its own: an endpoint is large (the downstream one
/// about 250 KB), and the copies of two of them in [`Broker::new`]'s frame of an unoptimised
/// build came near a thread's 2 MiB stack.
#[inline(never)]
fn boxed<T>(make: impl FnOnce() -> Result<T, ConfigError>) -> Result<Box<T>, ConfigError> {
    make().map(Box::new)
}

impl<A> Pending<A> {
    fn new_batches(&self) -> Vec<NewBatch<'_>> {
        self.parts
            .iter()
            .map(|(first, last, payload)| NewBatch {
                edge: self.edge,
                first_seq: *first,
                last_seq: *last,
                payload,
                queued_at_ms: self.unix_ms,
            })
            .collect()
    }
}

impl<A> std::fmt::Debug for Broker<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("stats", &self.stats)
            .field("queue", &self.queue.stats())
            .finish_non_exhaustive()
    }
}

impl<A: Copy + Eq> Broker<A> {
    /// A broker forwarding to `upstream`, queueing in `queue` (which may already hold batches
    /// from a previous run: they go first).
    pub fn new(
        config: BrokerConfig,
        upstream: A,
        queue: Box<dyn Queue>,
        seed: u64,
    ) -> Result<Self, ConfigError> {
        Ok(Broker {
            down: boxed(|| DownstreamEndpoint::new(config.downstream, seed))?,
            up: boxed(|| {
                UpstreamEndpoint::new(config.upstream_coap(), seed ^ 0x9e37_79b9_7f4a_7c15)
            })?,
            upstream,
            queue,
            registry: Registry::new(),
            stats: BrokerStats::default(),
            in_flight: Vec::new(),
            starved: false,
            retry_at: 0,
            backoff_ms: config.retry_initial_ms,
            config,
            up_relays: Vec::new(),
            down_relays: Vec::new(),
            next_report: 0,
            limiter: None,
            edge_limiter: None,
            max_age: None,
            peers: Vec::new(),
            max_edges: 0,
            draining: false,
            blocks: Box::new(blockwise::Blocks::new(
                config.max_body_bytes,
                config.block_transfers_per_peer,
                config.block_timeout_ms,
            )),
            pinger: link::Pinger::new(seed),
            pacer: replay::Pacer::new(config.replay),
            clock: None,
            id: String::new(),
            group: None,
        })
    }

    /// This broker's stable id (at most [`crate::report::MAX_ID_BYTES`] bytes; longer is cut at
    /// a character boundary), sent in its reports so the upstream recognises it after a
    /// restart from another address. Default: none (the upstream keys it by address).
    pub fn with_id(mut self, id: &str) -> Self {
        let mut end = id.len().min(crate::report::MAX_ID_BYTES);
        while !id.is_char_boundary(end) {
            end -= 1;
        }
        self.id = id[..end].to_string();
        self
    }

    /// This broker's id ([`Broker::with_id`]).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Brokers to send edges to (their addresses as text, e.g. `127.0.0.1:5685`) when this one
    /// is draining ([`Broker::set_draining`]) or already knows `max_edges` edges (0: no
    /// limit): a registration (`POST /rd`) or batch (`POST /u`) of an edge it must turn away
    /// is answered 5.03 with the diagnostic payload `alt=<peer>[,<peer>...]` (without peers:
    /// `draining` or `full`, a plain 5.03 the edge retries later). Edges fail over at once
    /// on `alt=`. A batch turned away is not queued nor acknowledged.
    pub fn with_peers(mut self, peers: Vec<String>, max_edges: usize) -> Self {
        self.peers = peers;
        self.max_edges = max_edges;
        self
    }

    /// Starts (or stops) draining: every edge's registration and batch is turned away.
    pub fn set_draining(&mut self, on: bool) {
        self.draining = on;
    }

    /// Whether the broker is draining.
    pub fn draining(&self) -> bool {
        self.draining
    }

    /// The 5.03 payload for edge `edge`, if it must go elsewhere.
    fn turn_away(&mut self, edge: EdgeId) -> Option<Vec<u8>> {
        let full = self.max_edges > 0
            && self.registry.get(edge).is_none()
            && self.registry.len() >= self.max_edges;
        if !self.draining && !full {
            return None;
        }
        self.stats.redirected += 1;
        Some(if self.peers.is_empty() {
            if self.draining { "draining" } else { "full" }
                .as_bytes()
                .to_vec()
        } else {
            format!("alt={}", self.peers.join(",")).into_bytes()
        })
    }

    /// Drops (and counts in `rejected_rate_limited`) the edges' datagrams of a source over
    /// `limit`; `key` maps an address to its source (the driver: the IP address, port 0).
    pub fn with_rate_limit(mut self, limit: crate::RateLimit, key: fn(A) -> A) -> Self
    where
        A: Ord,
    {
        self.limiter = (limit.rate_per_s > 0).then(|| (crate::RateLimiter::new(limit), key));
        self
    }

    /// Answers 4.29 Too Many Requests, with Max-Age the seconds until the next token, to the
    /// batches and registrations (`POST /rd`) of an edge over `limit` (per edge id, after the
    /// per-address gate of [`Broker::with_rate_limit`]); counted in
    /// `rejected_rate_limited_edge`. The batch is neither queued nor acknowledged: the edge
    /// keeps it and sends it again; a refused registration is tried again later.
    pub fn with_edge_rate_limit(mut self, limit: crate::RateLimit) -> Self {
        self.edge_limiter = (limit.rate_per_s > 0).then(|| crate::RateLimiter::new(limit));
        self
    }

    /// The counters.
    pub fn stats(&self) -> BrokerStats {
        BrokerStats {
            forwarded_live_first: self.pacer.live_ahead,
            ..self.stats
        }
    }

    /// The queue's counters (depth, bytes, quota drops).
    pub fn queue_stats(&self) -> QueueStats {
        self.queue.stats()
    }

    /// The registry.
    pub fn registry(&self) -> &Registry<A> {
        &self.registry
    }

    /// Whether a batch is on its way upstream.
    pub fn forwarding(&self) -> bool {
        !self.in_flight.is_empty()
    }

    /// A datagram from an edge (downstream socket). `unix_ms` is recorded with queued batches.
    pub fn handle_downstream(&mut self, now: u64, unix_ms: u64, from: A, bytes: &[u8])
    where
        A: Ord,
    {
        self.clock = Some((now, unix_ms));
        if let Some((limiter, key)) = &mut self.limiter {
            if !limiter.allow(now, key(from)) {
                self.stats.rejected_rate_limited += 1;
                return;
            }
        }
        if bytes.len() > MAX_MESSAGE {
            self.stats.rejected_malformed += 1;
            return;
        }
        if self.pong(now, from, bytes) {
            self.poll(now);
            return;
        }
        let (malformed, duplicates) = (self.down.stats().malformed, self.down.stats().duplicates);
        let incoming = self.down.handle_datagram(now, from, bytes);
        if self.down.stats().malformed != malformed {
            self.stats.rejected_malformed += 1;
        }
        let retransmitted = self.down.stats().duplicates != duplicates;
        let con_request = matches!(
            qos_coap::msg::peek_header(bytes),
            Some((qos_coap::MessageType::Confirmable, _))
        ) && bytes
            .get(1)
            .is_some_and(|c| Code::from_raw(*c).is_request());
        let (incoming, whole) = match incoming {
            Some(Incoming::Request(req)) => match self.block1_body(now, &req) {
                blockwise::Body::Whole => (Some(Incoming::Request(req)), None),
                blockwise::Body::Reassembled(body, echo) => {
                    (Some(Incoming::Request(req)), Some((body, echo)))
                }
                blockwise::Body::Answered => (None, None),
            },
            other => (other, None),
        };
        match incoming {
            Some(Incoming::Request(req)) if req.message.option(option::OSCORE).is_some() => {
                self.relay_protected(now, req);
            }
            Some(Incoming::Request(req)) if req.message.path_is(CONFIG_PATH) => {
                self.relay_up(now, req, whole.map(|(body, _)| body));
            }
            Some(Incoming::Request(req)) => {
                let payload = whole.as_ref().map_or(req.message.payload(), |(b, _)| b);
                let defer = whole.is_none() && self.group.is_some();
                let answer = if req.message.path_is(UPLINK_PATH) {
                    // None: queued, and answered with its group (`end_group`).
                    self.uplink(now, unix_ms, &req, payload, defer)
                } else {
                    Some(self.route(now, &req))
                };
                if let Some(answer) = answer {
                    let echo = whole.as_ref().map(|(_, e)| *e);
                    self.answer_request(now, &req, echo, answer);
                }
            }
            Some(Incoming::Response { exchange, message }) => {
                if let Some(i) = self
                    .down_relays
                    .iter()
                    .position(|r| matches!(r.sent, Some((id, _)) if id == exchange))
                {
                    let mut relay = self.down_relays.swap_remove(i);
                    self.stats.edge_relayed += 1;
                    let reply = Reply::of(&message);
                    self.answer_upstream(now, &mut relay.handle, &reply);
                }
            }
            None => {}
        }
        if con_request {
            self.con_outcome(from, retransmitted);
        }
        // Requests held for an edge that was away go out now that it spoke (and one whose
        // attempt is still unanswered goes out again at once if that attempt runs out).
        let ids: Vec<EdgeId> = self.registry.ids_at(from).collect();
        for r in self.down_relays.iter_mut() {
            if !r.acked && ids.contains(&r.edge) {
                r.ready = true;
            }
        }
        self.poll(now);
    }

    /// Answers an edge's request (piggybacked) with `answer`, as Block2
    /// parts if it asked for them, echoing `echo` (the Block1 of a reassembled body).
    fn answer_request(
        &mut self,
        now: u64,
        req: &Request<'_, A>,
        echo: Option<option::Block>,
        (code, cf, location, body): Answer,
    ) {
        let max_age = self.max_age.take();
        let want = qos_coap::block::block2_of(&req.message).ok().flatten();
        let part = (code.class() == 2 && qos_coap::block::needs_blocks(body.len(), want))
            .then(|| qos_coap::block::slice(&body, want, option::Block::MAX_SZX));
        if let Some(None) = part {
            // A block beyond the body (RFC 7959 §2.4).
            self.reject(RejectReason::Malformed);
            let _ = self.down.respond(now, &req.handle, Code::BAD_OPTION, |w| {
                w.payload(b"no such block")
            });
        } else {
            let _ = self.down.respond(now, &req.handle, code, |w| {
                if let Some(n) = location {
                    w.option(option::LOCATION_PATH, DIRECTORY_PATH.as_bytes())?;
                    w.option(option::LOCATION_PATH, n.to_string().as_bytes())?;
                }
                if let Some(cf) = cf {
                    w.uint_option(option::CONTENT_FORMAT, u32::from(cf))?;
                }
                if let Some(s) = max_age {
                    w.uint_option(option::MAX_AGE, s)?;
                }
                if let Some(Some((b, part))) = part {
                    qos_coap::block::write_block2(w, b, body.len())?;
                    return w.payload(part);
                }
                if let Some(b) = echo {
                    w.block_option(option::BLOCK1, b)?;
                }
                w.payload(&body)
            });
        }
    }

    /// An edge's `GET /c` or `POST /c`: answered at once when it is wrong, else deferred and
    /// relayed upstream.
    fn relay_up(&mut self, now: u64, req: Request<'_, A>, body: Option<Vec<u8>>) {
        let m = &req.message;
        let refuse = |code, text: &str| Some(Reply::error(code, text));
        let error = if m.code() != Code::GET && m.code() != Code::POST {
            self.reject(RejectReason::MethodNotAllowed);
            refuse(Code::METHOD_NOT_ALLOWED, "GET or POST only")
        } else if m.code() == Code::POST && m.content_format() != Some(content_format::CBOR) {
            self.reject(RejectReason::BadContentFormat);
            refuse(
                Code::UNSUPPORTED_CONTENT_FORMAT,
                "Content-Format 60 (CBOR) expected",
            )
        } else if self.up_relays.len() >= self.config.max_relays {
            self.stats.relay_overload += 1;
            refuse(Code::SERVICE_UNAVAILABLE, "too many requests in progress")
        } else {
            None
        };
        let parsed = split_id(m);
        let (edge, error) = match (error, parsed) {
            (Some(e), _) => (EdgeId(0), Some(e)),
            (None, Err(why)) => {
                self.reject(RejectReason::BadRequest);
                (EdgeId(0), refuse(Code::BAD_REQUEST, why))
            }
            (None, Ok((edge, _))) if self.registry.get(edge).is_none() => {
                // Neither registered nor sending batches here: nothing to relay for.
                self.stats.unknown_edge += 1;
                (
                    edge,
                    refuse(Code::NOT_FOUND, "unknown edge: register first"),
                )
            }
            (None, Ok((edge, _))) => (edge, None),
        };
        if let Some(reply) = error {
            let _ = self
                .down
                .respond(now, &req.handle, reply.code, |w| reply.write(w));
            return;
        }
        self.registry.heard(now, req.from, edge);
        let mut handle = req.handle;
        if handle.is_confirmable() && self.down.defer(now, &mut handle).is_err() {
            // The control queue is full: the edge's retransmission brings the request back.
            return;
        }
        let mut request = Reply::of(m);
        if let Some(body) = body {
            request.payload = body;
        }
        self.up_relays.push(Relay {
            handle,
            edge,
            code: m.code(),
            path: CONFIG_PATH,
            queries: vec![format!("id={}", edge.0).into_bytes()],
            request,
            created: now,
            sent: None,
            acked: false,
            ready: true,
        });
    }

    /// An OSCORE-protected request (RFC 8613): relayed upstream as it is (code, OSCORE option,
    /// ciphertext), which is all the broker can see; the edge gets an empty ACK at once and
    /// later the upstream's protected answer, or an unprotected 5.04 / 5.03 (which an edge
    /// takes as "try again", never as an acknowledgement). Neither queued nor acknowledged
    /// here: the end-to-end answer comes from the super-manager.
    fn relay_protected(&mut self, now: u64, req: Request<'_, A>) {
        if self.up_relays.len() >= self.config.max_relays {
            self.stats.relay_overload += 1;
            let reply = Reply::error(Code::SERVICE_UNAVAILABLE, "too many requests in progress");
            let _ = self
                .down
                .respond(now, &req.handle, reply.code, |w| reply.write(w));
            return;
        }
        let m = &req.message;
        let mut handle = req.handle;
        if handle.is_confirmable() && self.down.defer(now, &mut handle).is_err() {
            return;
        }
        self.stats.protected_relayed += 1;
        self.up_relays.push(Relay {
            handle,
            edge: EdgeId(0),
            code: m.code(),
            path: "",
            queries: Vec::new(),
            request: Reply::of(m),
            created: now,
            sent: None,
            acked: false,
            ready: true,
        });
    }

    /// Sends `reply` to the upstream as the separate answer of `handle`.
    fn answer_upstream(&mut self, now: u64, handle: &mut RequestHandle<A>, reply: &Reply) {
        if let Err(e) = self
            .up
            .respond_separate(now, handle, reply.code, |w| reply.write(w))
        {
            tracing::warn!(error = %e, "cannot answer the upstream");
        }
    }

    /// Sends `reply` to an edge as the separate answer of `handle`.
    fn answer_edge(&mut self, now: u64, handle: &mut RequestHandle<A>, reply: &Reply) {
        if let Err(e) = self
            .down
            .respond_separate(now, handle, reply.code, |w| reply.write(w))
        {
            tracing::warn!(error = %e, "cannot answer an edge");
        }
    }

    fn reject(&mut self, reason: RejectReason) {
        let s = &mut self.stats;
        match reason {
            RejectReason::Malformed => s.rejected_malformed += 1,
            RejectReason::BadBatch => s.rejected_bad_batch += 1,
            RejectReason::BadContentFormat => s.rejected_content_format += 1,
            RejectReason::BadRegistration => s.rejected_registration += 1,
            RejectReason::NotFound => s.rejected_not_found += 1,
            RejectReason::MethodNotAllowed => s.rejected_method += 1,
            RejectReason::BadRequest => s.rejected_bad_request += 1,
        }
    }

    /// `POST /u`: the batch is queued (now, or with its group when `defer`) and acknowledged
    /// once it is durable.
    fn uplink(
        &mut self,
        now: u64,
        unix_ms: u64,
        req: &Request<'_, A>,
        payload: &[u8],
        defer: bool,
    ) -> Option<Answer> {
        let m = &req.message;
        let plain = |code, text: &str| Some((code, None, None, text.as_bytes().to_vec()));
        if m.code() != Code::POST {
            self.reject(RejectReason::MethodNotAllowed);
            return plain(Code::METHOD_NOT_ALLOWED, "POST only");
        }
        self.stats.received += 1;
        if m.content_format() != Some(content_format::CBOR) {
            self.reject(RejectReason::BadContentFormat);
            return plain(
                Code::UNSUPPORTED_CONTENT_FORMAT,
                "Content-Format 60 (CBOR) expected",
            );
        }
        let batch = match Batch::decode(payload) {
            Ok(b) => b,
            Err(e) => {
                self.reject(RejectReason::BadBatch);
                return plain(Code::BAD_REQUEST, &format!("bad batch: {e}"));
            }
        };
        if let Some(hint) = self.turn_away(batch.edge) {
            return Some((Code::SERVICE_UNAVAILABLE, None, None, hint));
        }
        if let Some(refused) = self.edge_over_rate(now, batch.edge.0) {
            return Some(refused);
        }
        let last = batch.last_seq();
        let parts = if payload.len() <= blockwise::UPSTREAM_BATCH_BYTES {
            vec![(batch.first_seq, last, payload.to_vec())]
        } else {
            match blockwise::split_batch(&batch, blockwise::UPSTREAM_BATCH_BYTES) {
                Ok(parts) => parts,
                Err(()) => {
                    self.stats.rejected_too_large += 1;
                    return plain(
                        Code::REQUEST_ENTITY_TOO_LARGE,
                        "a record larger than the upstream's datagram",
                    );
                }
            }
        };
        let pending = Pending {
            handle: req.handle,
            from: req.from,
            edge: batch.edge,
            last,
            parts,
            unix_ms,
        };
        match &mut self.group {
            Some(group) if defer => {
                group.push(pending);
                None
            }
            _ => {
                // All parts or none: the edge sends a refused batch again.
                let queued = self.queue.append_all(&pending.new_batches()).map(|_| ());
                if let Err(e) = &queued {
                    tracing::error!(error = %e, "cannot queue a batch; answered 5.03");
                }
                Some(self.queued(now, &pending, &queued))
            }
        }
    }

    /// 4.29 with Max-Age (counted) when `edge` is over its own rate: a batch or a registration
    /// takes a token ([`Broker::with_edge_rate_limit`]).
    fn edge_over_rate(&mut self, now: u64, edge: u32) -> Option<Answer> {
        let wait = self.edge_limiter.as_mut()?.check(now, edge).err()?;
        self.stats.rejected_rate_limited_edge += 1;
        self.max_age = Some(crate::ratelimit::max_age_s(wait));
        Some((
            Code::TOO_MANY_REQUESTS,
            None,
            None,
            b"edge over its rate".to_vec(),
        ))
    }

    /// The answer to a batch whose append gave `queued`.
    fn queued(&mut self, now: u64, p: &Pending<A>, queued: &Result<(), QueueError>) -> Answer {
        let plain = |code, text: &str| (code, None, None, text.as_bytes().to_vec());
        if queued.is_err() {
            self.stats.queue_failures += 1;
            return plain(Code::SERVICE_UNAVAILABLE, "queue unavailable");
        }
        self.stats.acked += 1;
        self.registry.saw_batch(now, p.from, p.edge, p.last);
        let mut buf = [0u8; 16];
        match (Ack { acked: p.last }).encode(&mut buf) {
            Ok(n) => (
                Code::CHANGED,
                Some(content_format::CBOR),
                None,
                buf[..n].to_vec(),
            ),
            Err(_) => plain(Code::INTERNAL_SERVER_ERROR, ""),
        }
    }

    /// Starts a group: the uplink batches handled until [`Broker::end_group`] are queued
    /// together in one append (one wait for the disk) and answered then. A driver opens one
    /// around the datagrams it takes at once. Requests other than uplink batches, and
    /// reassembled block-wise batches, are answered at once as always.
    pub fn begin_group(&mut self) {
        self.group.get_or_insert_with(Vec::new);
    }

    /// Ends the group [`Broker::begin_group`] opened: queues its batches in one append and
    /// answers each with its ack, or, if the append failed, each with 5.03 (none is queued, and
    /// the edges send them again).
    pub fn end_group(&mut self, now: u64) {
        let Some(group) = self.group.take() else {
            return;
        };
        if !group.is_empty() {
            let batches: Vec<NewBatch<'_>> = group.iter().flat_map(Pending::new_batches).collect();
            let queued = self.queue.append_all(&batches).map(|_| ());
            drop(batches);
            if let Err(e) = &queued {
                tracing::error!(error = %e, batches = group.len(), "cannot queue a group of batches; each answered 5.03");
            }
            for p in &group {
                let (code, cf, _, body) = self.queued(now, p, &queued);
                let _ = self.down.respond(now, &p.handle, code, |w| {
                    if let Some(cf) = cf {
                        w.uint_option(option::CONTENT_FORMAT, u32::from(cf))?;
                    }
                    w.payload(&body)
                });
            }
        }
        self.poll(now);
    }

    /// The answer to an edge's request other than `POST /u` ([`Broker::uplink`]).
    fn route(&mut self, now: u64, req: &Request<'_, A>) -> Answer {
        let m = &req.message;
        let path: Vec<&[u8]> = m.uri_path().collect();
        let plain = |code, text: &str| (code, None, None, text.as_bytes().to_vec());
        match path.as_slice() {
            [p, ..] if *p == DIRECTORY_PATH.as_bytes() => {
                if let Some(id) = directory::registering_edge(m) {
                    if let Some(hint) = self.turn_away(EdgeId(id)) {
                        return (Code::SERVICE_UNAVAILABLE, None, None, hint);
                    }
                    if let Some(refused) = self.edge_over_rate(now, id) {
                        return refused;
                    }
                }
                let Some(answer) = directory::serve(&mut self.registry, now, req.from, m) else {
                    self.reject(RejectReason::NotFound);
                    return plain(Code::NOT_FOUND, "");
                };
                if let Some(reason) = answer.reject {
                    self.reject(reason);
                }
                if answer.registered {
                    self.stats.registrations += 1;
                }
                if answer.code == Code::CREATED {
                    self.next_report = self.next_report.min(now + 1_000);
                }
                (answer.code, None, answer.location, answer.body)
            }
            [a, b] if *a == b".well-known" && *b == b"core" => {
                if m.code() != Code::GET {
                    self.reject(RejectReason::MethodNotAllowed);
                    return plain(Code::METHOD_NOT_ALLOWED, "GET only");
                }
                (
                    Code::CONTENT,
                    Some(content_format::LINK_FORMAT),
                    None,
                    WELL_KNOWN_CORE.as_bytes().to_vec(),
                )
            }
            _ => {
                self.reject(RejectReason::NotFound);
                (Code::NOT_FOUND, None, None, Vec::new())
            }
        }
    }

    /// A datagram from the upstream socket.
    pub fn handle_upstream(&mut self, now: u64, from: A, bytes: &[u8]) {
        match self.up.handle_datagram(now, from, bytes) {
            Some(Incoming::Response { exchange, message }) => {
                if let Some(i) = self.in_flight.iter().position(|f| f.0 == exchange) {
                    let (_, qid, _) = self.in_flight.swap_remove(i);
                    self.on_answer(now, qid, message.code());
                }
                if let Some(i) = self
                    .up_relays
                    .iter()
                    .position(|r| matches!(r.sent, Some((id, _)) if id == exchange))
                {
                    let mut relay = self.up_relays.swap_remove(i);
                    self.stats.config_relayed += 1;
                    let reply = Reply::of(&message);
                    self.answer_edge(now, &mut relay.handle, &reply);
                }
            }
            Some(Incoming::Request(req)) => self.relay_down(now, req),
            None => {}
        }
        self.poll(now);
    }

    /// The upstream's `POST /p` or `GET /r` for an edge (or its `/.well-known/core`).
    fn relay_down(&mut self, now: u64, req: Request<'_, A>) {
        let m = &req.message;
        // An OSCORE-protected order (RFC 8613): its path and queries are encrypted; it is
        // routed on its outer Uri-Host `edge-<id>` and relayed as it is (ciphertext, OSCORE
        // option), without the Uri-Host, which was addressed to this broker.
        let protected = m.option(option::OSCORE).is_some();
        let path = if protected {
            Some(("", Code::POST))
        } else if m.path_is(PROBE_PATH) {
            Some((PROBE_PATH, Code::POST))
        } else if m.path_is(RESULTS_PATH) {
            Some((RESULTS_PATH, Code::GET))
        } else {
            None
        };
        let immediate = match path {
            None if m.path_is(".well-known/core") && m.code() == Code::GET => Reply {
                code: Code::CONTENT,
                etag: None,
                oscore: None,
                cf: Some(content_format::LINK_FORMAT),
                payload: UPSTREAM_LINKS.as_bytes().to_vec(),
            },
            None => {
                self.reject(RejectReason::NotFound);
                Reply::error(Code::NOT_FOUND, "")
            }
            Some((_, method)) if m.code() != method => {
                self.reject(RejectReason::MethodNotAllowed);
                Reply::error(Code::METHOD_NOT_ALLOWED, "wrong method")
            }
            Some((path, _)) => match if protected { edge_host(m) } else { split_id(m) } {
                Err(why) => {
                    self.reject(RejectReason::BadRequest);
                    Reply::error(Code::BAD_REQUEST, why)
                }
                Ok((edge, _)) if self.registry.get(edge).is_none() => {
                    self.stats.unknown_edge += 1;
                    Reply::error(Code::NOT_FOUND, "unknown edge")
                }
                Ok(_) if self.down_relays.len() >= self.config.max_relays => {
                    self.stats.relay_overload += 1;
                    Reply::error(Code::SERVICE_UNAVAILABLE, "too many requests in progress")
                }
                Ok((edge, queries)) => {
                    let mut handle = req.handle;
                    if handle.is_confirmable() && self.up.defer(now, &mut handle).is_err() {
                        return;
                    }
                    let mut request = Reply::of(m);
                    request.etag = None;
                    self.down_relays.push(Relay {
                        handle,
                        edge,
                        code: m.code(),
                        path,
                        queries,
                        request,
                        created: now,
                        sent: None,
                        acked: false,
                        ready: true,
                    });
                    return;
                }
            },
        };
        let _ = self
            .up
            .respond(now, &req.handle, immediate.code, |w| immediate.write(w));
    }

    fn on_answer(&mut self, now: u64, qid: QueueId, code: Code) {
        match code.class() {
            2 | 4 if code.class() == 2 || code.rejects_content() => {
                if code.class() == 2 {
                    self.stats.forwarded += 1;
                } else {
                    self.stats.dropped_refused += 1;
                    tracing::warn!(%code, "upstream refused a batch for good; dropped");
                }
                if let Err(e) = self.queue.remove(qid) {
                    // It will be forwarded again: harmless, the upstream deduplicates.
                    tracing::error!(error = %e, "cannot remove a forwarded batch");
                    self.fail(now);
                    return;
                }
                self.backoff_ms = self.config.retry_initial_ms;
                self.retry_at = now;
            }
            _ => {
                tracing::debug!(%code, "upstream answered with an error; will retry");
                self.fail(now);
            }
        }
    }

    fn fail(&mut self, now: u64) {
        self.stats.upstream_failures += 1;
        self.retry_at = now + self.backoff_ms;
        self.backoff_ms = (self.backoff_ms * 2).min(self.config.retry_max_ms);
    }

    /// Advances timers (retransmissions, lease expiry, retries, relays) and starts forwarding
    /// the next batch when none is in flight. Call when [`Broker::poll_timeout`] passes; the
    /// `handle_*` methods call it themselves.
    pub fn poll(&mut self, now: u64) {
        self.down.handle_timeout(now);
        while let Some(ev) = self.down.poll_event() {
            if let Event::Timeout(id) | Event::Reset(id) | Event::Aborted(id) = ev {
                self.edge_failed(now, id);
            }
        }
        self.up.handle_timeout(now);
        while let Some(ev) = self.up.poll_event() {
            let failed = match ev {
                Event::Timeout(id) | Event::Reset(id) | Event::Aborted(id) => id,
                _ => continue,
            };
            if let Some(i) = self.in_flight.iter().position(|f| f.0 == failed) {
                self.in_flight.swap_remove(i);
                tracing::debug!("upstream did not answer; will retry");
                self.fail(now);
            }
            if let Some(i) = self
                .up_relays
                .iter()
                .position(|r| matches!(r.sent, Some((id, _)) if id == failed))
            {
                self.up_relay_timed_out(now, i);
            }
        }
        self.registry.expire(now);
        self.blocks.expire(now);
        self.poll_pings(now);
        if self.config.report_interval_ms > 0 && now >= self.next_report {
            self.send_report(now);
        }
        self.poll_up_relays(now);
        self.poll_down_relays(now);
        if now >= self.retry_at {
            self.forward_next(now);
        }
    }

    /// The report about this broker, as of `now`.
    pub fn report(&self, now: u64) -> BrokerReport {
        let s = &self.stats;
        let q = self.queue.stats();
        let mut edges: Vec<&EdgeEntry<A>> = self.registry.edges().collect();
        edges.sort_by_key(|e| std::cmp::Reverse(e.last_seen_ms));
        BrokerReport {
            id: self.id.clone(),
            protected_relayed: s.protected_relayed,
            stats: ReportStats {
                received: s.received,
                acked: s.acked,
                forwarded: s.forwarded,
                queued: q.len,
                queued_bytes: q.bytes,
                dropped_quota: q.dropped_quota,
                relayed: s.config_relayed + s.edge_relayed,
                relay_timeouts: s.config_timeouts + s.edge_timeouts,
                rejected: [
                    s.rejected_malformed,
                    s.rejected_bad_batch,
                    s.rejected_content_format,
                    s.rejected_registration,
                    s.rejected_not_found,
                    s.rejected_method,
                    s.rejected_bad_request,
                    s.rejected_rate_limited,
                    s.unknown_edge,
                    s.rejected_too_large,
                    s.rejected_incomplete,
                    s.rejected_rate_limited_edge,
                ],
            },
            total_edges: edges.len() as u64,
            edges: edges
                .iter()
                .map(|e| ReportEdge {
                    id: e.id.0,
                    name: e.name.clone(),
                    region: e.region.clone(),
                    registered: e.registered(now),
                    seen_ago_ms: now.saturating_sub(e.last_seen_ms),
                    cfg: e.config_etag,
                    rtt_ms: e.link.rtt_ms(),
                    loss_permille: e.link.loss_permille(),
                })
                .collect(),
        }
    }

    /// A `POST` of CBOR `body` to `path` at the upstream.
    fn post_upstream(
        &mut self,
        now: u64,
        reliability: Reliability,
        path: &str,
        body: &[u8],
    ) -> Result<ExchangeId, RequestError> {
        self.up
            .request(now, self.upstream, reliability, Code::POST, |w| {
                w.uri_path(path)?;
                w.uint_option(option::CONTENT_FORMAT, u32::from(content_format::CBOR))?;
                w.payload(body)
            })
    }

    fn send_report(&mut self, now: u64) {
        self.next_report = now + self.config.report_interval_ms;
        let body = self.report(now).encode();
        let sent = self.post_upstream(now, Reliability::NonConfirmable, REPORT_PATH, &body);
        if let Err(e) = sent {
            tracing::debug!(error = %e, "cannot send the broker report");
        }
    }

    fn up_relay_timed_out(&mut self, now: u64, i: usize) {
        let mut relay = self.up_relays.swap_remove(i);
        if let Some((id, _)) = relay.sent {
            self.up.cancel(id);
        }
        self.stats.config_timeouts += 1;
        let reply = Reply::error(Code::GATEWAY_TIMEOUT, "upstream did not answer");
        self.answer_edge(now, &mut relay.handle, &reply);
    }

    fn poll_up_relays(&mut self, now: u64) {
        while let Some(i) = self
            .up_relays
            .iter()
            .position(|r| now >= r.created.saturating_add(self.config.relay_timeout_ms))
        {
            self.up_relay_timed_out(now, i);
        }
        for i in 0..self.up_relays.len() {
            if self.up_relays[i].sent.is_some() {
                continue;
            }
            let relay = &self.up_relays[i];
            match self.up.request(
                now,
                self.upstream,
                Reliability::Confirmable,
                relay.code,
                |w| relay.write(w),
            ) {
                Ok(id) => self.up_relays[i].sent = Some((id, now)),
                // NSTART or slots: after the exchange in progress.
                Err(RequestError::Busy | RequestError::NoSlot) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot relay a request upstream");
                    self.up_relay_timed_out(now, i);
                    break;
                }
            }
        }
    }

    /// A request to an edge failed (timeout or reset of exchange `id`).
    fn edge_failed(&mut self, now: u64, id: ExchangeId) {
        let Some(i) = self
            .down_relays
            .iter()
            .position(|r| matches!(r.sent, Some((x, _)) if x == id))
        else {
            return;
        };
        let r = &mut self.down_relays[i];
        r.sent = None;
        if r.acked {
            // It took the request and never answered: gone mid-run.
            let mut relay = self.down_relays.swap_remove(i);
            self.give_up_on_edge(now, &mut relay);
        } else {
            self.stats.held += 1;
        }
    }

    fn give_up_on_edge(&mut self, now: u64, relay: &mut Relay<A>) {
        if let Some((id, _)) = relay.sent {
            self.down.cancel(id);
        }
        self.stats.edge_timeouts += 1;
        let reply = Reply::error(Code::GATEWAY_TIMEOUT, "edge did not answer");
        self.answer_upstream(now, &mut relay.handle, &reply);
    }

    fn poll_down_relays(&mut self, now: u64) {
        let (hold, attempt) = (self.config.hold_ms, self.config.attempt_ms);
        let mut i = 0;
        while i < self.down_relays.len() {
            let r = &mut self.down_relays[i];
            if let Some((id, sent_at)) = r.sent {
                if !r.acked && self.down.awaiting_separate(id) {
                    r.acked = true;
                }
                if !r.acked && now >= sent_at.saturating_add(attempt) {
                    // No acknowledgement: the edge is away. Hold the request.
                    self.down.cancel(id);
                    r.sent = None;
                    self.stats.held += 1;
                }
            }
            let r = &self.down_relays[i];
            if r.sent.is_none() && now >= r.created.saturating_add(hold) {
                let mut relay = self.down_relays.swap_remove(i);
                self.give_up_on_edge(now, &mut relay);
                continue;
            }
            if r.sent.is_none() && r.ready {
                let Some(to) = self.registry.get(r.edge).map(|e| e.address) else {
                    i += 1;
                    continue;
                };
                match self
                    .down
                    .request(now, to, Reliability::Confirmable, r.code, |w| r.write(w))
                {
                    Ok(id) => {
                        let r = &mut self.down_relays[i];
                        r.sent = Some((id, now));
                        r.ready = false;
                    }
                    Err(RequestError::Busy | RequestError::NoSlot) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot relay a request to an edge");
                        let mut relay = self.down_relays.swap_remove(i);
                        self.give_up_on_edge(now, &mut relay);
                        continue;
                    }
                }
            }
            i += 1;
        }
    }

    /// Starts sending queued batches upstream while the window has room
    /// ([`BrokerConfig::upstream_window`]), each picked by the [`replay`] pacer among the edges
    /// with nothing in flight.
    fn forward_next(&mut self, now: u64) {
        let unix_now = self
            .clock
            .map(|(then, unix)| unix.saturating_add(now.saturating_sub(then)));
        self.starved = false;
        while self.in_flight.len() < self.config.upstream_window.max(1) {
            let busy: Vec<EdgeId> = self.in_flight.iter().map(|f| f.2).collect();
            let (batch, lane) = match self.pacer.pick(self.queue.as_mut(), unix_now, &busy) {
                Ok(Some(b)) => b,
                Ok(None) => {
                    self.starved = !self.queue.is_empty();
                    return;
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the queue");
                    self.fail(now);
                    return;
                }
            };
            let sent =
                self.post_upstream(now, Reliability::Confirmable, UPLINK_PATH, &batch.payload);
            match sent {
                Ok(id) => {
                    self.in_flight.push((id, batch.id, batch.edge));
                    self.pacer.started(lane);
                }
                // A relayed request holds the upstream's NSTART: after it.
                Err(RequestError::Busy) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot send a queued batch upstream");
                    self.fail(now);
                    return;
                }
            }
        }
    }

    /// Next datagram for an edge.
    pub fn poll_transmit_downstream(&mut self, now: u64, buf: &mut [u8]) -> Option<(A, usize)> {
        self.down
            .poll_transmit(now, buf)
            .or_else(|| self.transmit_ping(now, buf))
    }

    /// Next datagram for the upstream.
    pub fn poll_transmit_upstream(&mut self, now: u64, buf: &mut [u8]) -> Option<(A, usize)> {
        self.up.poll_transmit(now, buf)
    }

    /// When to call [`Broker::poll`] (and the `poll_transmit_*`) next at the latest.
    pub fn poll_timeout(&self) -> Option<u64> {
        let room = self.in_flight.len() < self.config.upstream_window.max(1);
        let retry = (room && !self.starved && !self.queue.is_empty()).then_some(self.retry_at);
        let up = self
            .up_relays
            .iter()
            .map(|r| r.created.saturating_add(self.config.relay_timeout_ms));
        let down = self.down_relays.iter().map(|r| match r.sent {
            Some((_, at)) if !r.acked => at.saturating_add(self.config.attempt_ms),
            Some(_) => u64::MAX,
            None => r.created.saturating_add(self.config.hold_ms),
        });
        let report = (self.config.report_interval_ms > 0).then_some(self.next_report);
        [
            self.down.poll_timeout(),
            self.up.poll_timeout(),
            retry,
            self.registry.next_expiry(),
            self.blocks.next_deadline(),
            self.ping_deadline(),
            report,
        ]
        .into_iter()
        .flatten()
        .chain(up)
        .chain(down)
        .min()
    }
}
