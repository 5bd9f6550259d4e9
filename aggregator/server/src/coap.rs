//! The CoAP face of the super-manager, sans-IO: datagrams in, datagrams out, over the shared
//! [`qos_coap`] endpoint. Resources:
//!
//! - `POST /u` (Content-Format 60): an uplink batch; answered 2.04 with the cumulative ack,
//!   4.00 with a diagnostic payload when the batch is malformed (the edge drops it and counts
//!   the loss), 5.03 when the store failed (the edge sends it again);
//! - `GET /.well-known/core` (RFC 6690): the resource list.
//!
//! With a [`Centre`] ([`CoapServer::with_centre`]) also:
//!
//! - `GET /c?id=<edge>` (optional ETag: the 4-byte ETag of the configuration the edge applied):
//!   2.05, ETag, Content-Format 60, CDDL `edge-config` when the centre holds a configuration for
//!   the edge; 2.03 Valid with the ETag when the request's ETag matches; 4.04 when it holds none;
//! - `POST /c?id=<edge>`, Content-Format 60, CDDL `config-report`: stored, 2.04; 4.00 with the
//!   reason when it does not decode, 4.15 without Content-Format 60;
//! - `POST /b`, Content-Format 60, CDDL `broker-report` ([`qos_broker::report`]): a broker's
//!   counters and registry, kept in memory for the API; 2.04, 4.00 with the reason;
//! - `POST /rd`, `POST /rd/<n>`, `DELETE /rd/<n>`: the RFC 9176 directory of
//!   [`qos_broker::directory`], for edges that send straight to the super-manager;
//! - requests from the centre to edges ([`Order`]s of the HTTP API): `POST /p` and `GET /r`,
//!   sent straight to an edge registered here, or with `id=<edge>` to the broker its last batch
//!   came from.
//!
//! A request in Block1 blocks (RFC 7959, e.g. an edge's backlog as one large batch) is
//! reassembled first ([`block`]) and then handled as above, its answer echoing Block1.
//!
//! The UDP driver is [`crate::serve::start_ingest`]; tests drive this type directly.

use std::sync::mpsc::Sender;
use std::sync::Arc;

use qos_coap::{
    content_format, option, Code, Config as CoapConfig, ConfigError, Event, ExchangeId, Incoming,
    Link, Reliability, Request, RequestError, RequestHandle,
};
use qos_wire::config::CONFIG_PATH;
use qos_wire::uplink::{Ack, UPLINK_PATH};

use crate::centre::{decode_report, Centre, Order, OrderAnswer, Route};
use crate::config::ReliabilityConfig;
use crate::ingest::{Ingest, Prepared, Rejection};
use crate::oscore::{Inbound, OscoreGate, Outbound};
use crate::stats::RejectReason;

/// Largest CoAP message accepted (RFC 7252 §4.6); larger datagrams are refused as oversized.
pub const MAX_MESSAGE: usize = 1152;
/// The resources, in link format.
pub const WELL_KNOWN_CORE: &str =
    "</u>;rt=\"qos.uplink\";ct=60,</c>;rt=\"qos.config\";ct=60,</rd>;rt=\"core.rd\",</b>;rt=\"qos.broker\";ct=60";

/// An answer: code, ETag, Location-Path `rd/<n>`, Content-Format, Block1 echo, payload.
struct Reply {
    code: Code,
    etag: Option<u32>,
    location: Option<qos_broker::directory::DirectoryAnswer>,
    cf: Option<u16>,
    /// Max-Age, seconds (a 4.29's wait).
    max_age: Option<u32>,
    block1: Option<qos_coap::option::Block>,
    body: Vec<u8>,
}

impl Reply {
    fn new(code: Code, cf: Option<u16>, body: Vec<u8>) -> Reply {
        Reply {
            code,
            etag: None,
            location: None,
            cf,
            max_age: None,
            block1: None,
            body,
        }
    }
}

/// The `id=<u32>` query of a request.
fn edge_query(m: &qos_coap::Message<'_>) -> Option<u32> {
    m.uri_queries().find_map(|q| {
        q.strip_prefix(b"id=")
            .and_then(|v| core::str::from_utf8(v).ok())
            .and_then(|v| v.parse().ok())
    })
}

/// The endpoint of the super-manager: 64 concurrent exchanges, 1024 deduplication entries
/// (each remembering up to 64 bytes of response, enough for an ack); datagrams, and up to 64
/// stream connections of brokers (CoAP over TCP/TLS, [`streams`]).
pub type ServerEndpoint<A> = Link<A, 64, 1024, MAX_MESSAGE, 64, 64>;

#[path = "coap_streams.rs"]
pub mod streams;

#[path = "coap_block.rs"]
pub mod block;

/// Map the TOML reliability settings to the endpoint's.
pub fn coap_config(r: &ReliabilityConfig) -> CoapConfig {
    CoapConfig::with_reliability(r.ack_timeout_ms, r.ack_random_factor, r.max_retransmit)
}

/// CoAP server of the ingest.
pub struct CoapServer<A> {
    endpoint: Box<ServerEndpoint<A>>,
    ingest: Ingest,
    centre: Option<Arc<Centre<A>>>,
    /// Orders sent, waiting for their answer.
    asked: Vec<(ExchangeId, Sender<OrderAnswer<A>>, Route<A>)>,
    /// Orders not sent yet (NSTART towards their peer).
    waiting: Vec<Order<A>>,
    /// Token buckets per source ([`CoapServer::with_rate_limit`]) and the key of a source.
    limiter: Option<qos_broker::ratelimit::SourceLimiter<A>>,
    /// Token buckets per edge id ([`CoapServer::with_edge_rate_limit`]).
    edge_limiter: Option<qos_broker::ratelimit::EdgeLimiter>,
    /// OSCORE with edges ([`CoapServer::with_oscore`]).
    oscore: Option<OscoreGate<A>>,
    /// Block1 reassembly ([`block`]).
    blocks: block::Blocks<A>,
    /// Edges the directory knows at most ([`CoapServer::with_max_edges`]); 0: no limit.
    max_edges: usize,
}

impl<A: Copy + Ord> CoapServer<A> {
    /// A server handing batches to `ingest`.
    pub fn new(config: CoapConfig, ingest: Ingest, seed: u64) -> Result<Self, ConfigError> {
        Ok(CoapServer {
            endpoint: Box::new(ServerEndpoint::new(config, seed)?),
            ingest,
            centre: None,
            asked: Vec::new(),
            waiting: Vec::new(),
            limiter: None,
            edge_limiter: None,
            oscore: None,
            blocks: block::Blocks::new(),
            max_edges: 0,
        })
    }

    /// Unprotects OSCORE requests of the edges of `gate` before they are handled, and
    /// protects their answers ([`crate::oscore`]).
    pub fn with_oscore(mut self, mut gate: OscoreGate<A>) -> Self {
        gate.count_in(self.ingest.stats().clone());
        self.oscore = Some(gate);
        self
    }

    /// The datagram the endpoint wrote into `buf[..n]` for `to`, protected when it answers an
    /// OSCORE request or is an order to an OSCORE edge; its new length, or `None` to send
    /// nothing.
    fn sealed(&mut self, to: A, buf: &mut [u8], n: usize) -> Option<usize> {
        let stream = self.endpoint.is_connected(to);
        match self
            .oscore
            .as_mut()
            .map(|g| g.seal_on(to, &buf[..n], stream))
        {
            None | Some(Outbound::Pass) => Some(n),
            Some(Outbound::Sealed(v)) if v.len() <= buf.len() => {
                buf[..v.len()].copy_from_slice(&v);
                Some(v.len())
            }
            Some(_) => None,
        }
    }

    /// Drops (and counts as `rate_limited`) the datagrams of a source over `limit`; `key` maps
    /// an address to its source (the driver: the IP address without the port).
    pub fn with_rate_limit(mut self, limit: qos_broker::RateLimit, key: fn(A) -> A) -> Self {
        self.limiter = (limit.rate_per_s > 0).then(|| (qos_broker::RateLimiter::new(limit), key));
        self
    }

    /// Answers 4.29 Too Many Requests with Max-Age (and counts as `rate_limited_edge`) the
    /// batches and registrations (`POST /rd`) of an edge over `limit`, per edge id whatever
    /// its address, once decoded and before they are stored. Batches forwarded by a broker are not limited here: the broker
    /// limits its edges itself ([`qos_broker::Broker::with_edge_rate_limit`]).
    pub fn with_edge_rate_limit(mut self, limit: qos_broker::RateLimit) -> Self {
        self.edge_limiter = (limit.rate_per_s > 0).then(|| qos_broker::RateLimiter::new(limit));
        self
    }

    /// Answers 5.03 `full` (counted as `directory_full`) a new edge's registration while the
    /// directory knows `max` edges; 0: no limit.
    pub fn with_max_edges(mut self, max: usize) -> Self {
        self.max_edges = max;
        self
    }

    /// The 4.29 answer to a batch or registration of `edge` from `from` when the edge is over
    /// its rate.
    fn edge_over_rate(&mut self, now: u64, from: A, edge: u32) -> Option<Reply> {
        let limiter = self.edge_limiter.as_mut()?;
        if self
            .centre
            .as_ref()
            .is_some_and(|c| c.state().is_broker(from))
        {
            return None;
        }
        let wait = limiter.check(now, edge).err()?;
        self.ingest.stats().reject(RejectReason::RateLimitedEdge);
        let mut r = Reply::new(
            Code::TOO_MANY_REQUESTS,
            None,
            b"edge over its rate".to_vec(),
        );
        r.max_age = Some(qos_broker::ratelimit::max_age_s(wait));
        Some(r)
    }

    /// Serves the centre's resources (`/c`, `/rd`) and carries out its [`Order`]s.
    pub fn with_centre(mut self, centre: Arc<Centre<A>>) -> Self {
        self.centre = Some(centre);
        self
    }

    /// The ingest (its store and counters).
    pub fn ingest(&self) -> &Ingest {
        &self.ingest
    }

    /// The endpoint's counters.
    pub fn coap_stats(&self) -> qos_coap::Stats {
        self.endpoint.stats()
    }

    /// Process one datagram received at `now` (monotonic ms) from `from`; `unix_ms` is the
    /// wall-clock time recorded with what is stored.
    pub fn handle_datagram(&mut self, now: u64, unix_ms: u64, from: A, bytes: &[u8]) {
        if self.admit(now, from, bytes) {
            self.process(now, unix_ms, from, bytes, None);
        }
    }

    /// Process datagrams received together (group commit): every one is decoded and validated
    /// and answered as by [`CoapServer::handle_datagram`], except that the valid uplink batches
    /// are stored in ONE transaction and acknowledged only once it has committed (if it fails,
    /// each gets 5.03 and nothing of the group is stored). A retransmission (same peer and
    /// message ID) of a request of the group waiting for that commit is handled after the
    /// answers, so it gets the cached response. What is to be sent is handed to `transmit` as
    /// it is ready (the endpoint holds only a few exchanges at a time); `buf` is its scratch.
    pub fn handle_datagrams(
        &mut self,
        now: u64,
        unix_ms: u64,
        datagrams: &[(A, &[u8])],
        buf: &mut [u8],
        transmit: &mut dyn FnMut(A, &[u8]),
    ) {
        let mut group = Vec::new();
        let mut replay = Vec::new();
        for &(from, bytes) in datagrams {
            if !self.admit(now, from, bytes) {
                continue;
            }
            let waiting = qos_coap::msg::peek_header(bytes).is_some_and(|(ty, mid)| {
                ty == qos_coap::MessageType::Confirmable
                    && group.iter().any(|(h, _): &(RequestHandle<A>, Prepared)| {
                        h.peer() == from && h.message_id() == mid
                    })
            });
            if waiting {
                replay.push((from, bytes));
                continue;
            }
            self.process(now, unix_ms, from, bytes, Some(&mut group));
            self.flush(now, buf, transmit);
        }
        let (handles, batches): (Vec<_>, Vec<Prepared>) = group.into_iter().unzip();
        let result = self.ingest.commit(&batches);
        for (i, (handle, batch)) in handles.iter().zip(&batches).enumerate() {
            let r = match &result {
                Ok(acks) => self.acked(handle.peer(), batch, acks[i], unix_ms),
                Err(e) => uplink_refused(e.clone()),
            };
            self.answer(now, handle, r);
            self.flush(now, buf, transmit);
        }
        for (from, bytes) in replay {
            self.process(now, unix_ms, from, bytes, None);
            self.flush(now, buf, transmit);
        }
    }

    /// Hands what the endpoint has to send to `transmit`.
    fn flush(&mut self, now: u64, buf: &mut [u8], transmit: &mut dyn FnMut(A, &[u8])) {
        while let Some((to, n)) = self.endpoint.poll_transmit(now, buf) {
            if let Some(n) = self.sealed(to, buf, n) {
                transmit(to, &buf[..n]);
            }
        }
    }

    /// Counts a datagram; `false` (counted as refused) when its source is over its rate or it
    /// is too large.
    fn admit(&mut self, now: u64, from: A, bytes: &[u8]) -> bool {
        let stats = self.ingest.stats().clone();
        stats.add_datagrams(1);
        if let Some((limiter, key)) = &mut self.limiter {
            if !limiter.allow(now, key(from)) {
                stats.reject(RejectReason::RateLimited);
                return false;
            }
        }
        if bytes.len() > MAX_MESSAGE {
            stats.reject(RejectReason::Oversized);
            return false;
        }
        true
    }

    /// Handles an admitted datagram. With `group`, a valid uplink batch is only validated and
    /// left there to be committed and answered by the caller.
    fn process(
        &mut self,
        now: u64,
        unix_ms: u64,
        from: A,
        bytes: &[u8],
        group: Option<&mut Vec<(RequestHandle<A>, Prepared)>>,
    ) {
        let stats = self.ingest.stats().clone();
        let opened;
        let stream = self.endpoint.is_connected(from);
        let bytes = match self.oscore.as_mut().map(|g| g.open_on(from, bytes, stream)) {
            None | Some(Inbound::Plain) => bytes,
            Some(Inbound::Opened(plain)) => {
                opened = plain;
                &opened[..]
            }
            Some(Inbound::Refused(reason)) => {
                stats.reject(reason);
                if reason == RejectReason::OscoreReplay {
                    self.replay_detected(now, from, bytes);
                }
                return;
            }
        };
        let malformed_before = self.endpoint.stats().malformed;
        let incoming = self.endpoint.handle_datagram(now, from, bytes);
        if self.endpoint.stats().malformed != malformed_before {
            stats.reject(RejectReason::Malformed);
        }
        let req = match incoming {
            Some(Incoming::Request(req)) => req,
            Some(Incoming::Response { exchange, message }) => {
                if let Some(i) = self.asked.iter().position(|(x, _, _)| *x == exchange) {
                    let (_, reply, route) = self.asked.swap_remove(i);
                    let _ = reply.send(OrderAnswer::Answer {
                        code: message.code(),
                        cf: message.content_format(),
                        payload: message.payload().to_vec(),
                        route,
                    });
                }
                return;
            }
            None => return,
        };
        let mut whole = Vec::new();
        let Some((req, block1)) =
            self.blocks
                .request(now, req, &mut whole, &mut self.endpoint, &stats)
        else {
            return;
        };
        let r = match group {
            // A reassembled body is stored on its own, so its answer can echo Block1.
            Some(group) if req.message.path_is(UPLINK_PATH) && block1.is_none() => {
                match self.check_uplink(&req) {
                    Err(r) => r,
                    Ok(payload) => match self.ingest.prepare(payload, unix_ms) {
                        Ok(batch) => match self.edge_over_rate(now, from, batch.edge()) {
                            Some(r) => r,
                            None => {
                                group.push((req.handle, batch));
                                return;
                            }
                        },
                        Err(e) => uplink_refused(e),
                    },
                }
            }
            _ => self.route(now, &req, unix_ms),
        };
        self.answer(now, &req.handle, Reply { block1, ..r });
    }

    /// RFC 8613 §7.4: a protected request whose number the replay window refuses is answered
    /// with an unprotected 4.01 "Replay detected" (nothing of it is read or stored). An edge
    /// takes it as a cue to move its sender sequence number on by [`qos_oscore::RESYNC_STEP`]:
    /// after serve restarted, the numbers the edge had not used yet may lie below the persisted
    /// mark + `persist_every`, and without the cue each would cost it an exchange timeout.
    fn replay_detected(&mut self, now: u64, from: A, bytes: &[u8]) {
        if let Some(Incoming::Request(req)) = self.endpoint.handle_datagram(now, from, bytes) {
            let r = Reply::new(
                Code::UNAUTHORIZED,
                None,
                qos_oscore::REPLAY_DETECTED.to_vec(),
            );
            self.answer(now, &req.handle, r);
        }
    }

    fn answer(&mut self, now: u64, handle: &RequestHandle<A>, r: Reply) {
        let _ = self.endpoint.respond(now, handle, r.code, |w| {
            if let Some(e) = r.etag {
                w.option(option::ETAG, &e.to_be_bytes())?;
            }
            if let Some(l) = &r.location {
                l.write_location(w)?;
            }
            if let Some(cf) = r.cf {
                w.uint_option(option::CONTENT_FORMAT, u32::from(cf))?;
            }
            if let Some(s) = r.max_age {
                w.uint_option(option::MAX_AGE, s)?;
            }
            if let Some(b) = r.block1 {
                w.block_option(option::BLOCK1, b)?;
            }
            w.payload(&r.body)
        });
    }

    fn route(&mut self, now: u64, req: &Request<'_, A>, unix_ms: u64) -> Reply {
        let m = &req.message;
        let stats = self.ingest.stats().clone();
        if m.path_is(UPLINK_PATH) {
            return self.uplink(now, req, unix_ms);
        }
        if m.path_is(".well-known/core") {
            if m.code() != Code::GET {
                return Reply::new(Code::METHOD_NOT_ALLOWED, None, b"GET only".to_vec());
            }
            return Reply::new(
                Code::CONTENT,
                Some(content_format::LINK_FORMAT),
                WELL_KNOWN_CORE.as_bytes().to_vec(),
            );
        }
        if let Some(centre) = self.centre.clone() {
            if m.path_is(CONFIG_PATH) {
                return counted(&stats, config(&centre, req, unix_ms));
            }
            if m.path_is(qos_broker::REPORT_PATH) {
                return counted(&stats, broker_report(&centre, req, unix_ms));
            }
            if let Some(id) = qos_broker::directory::registering_edge(m) {
                if let Some(refused) = self.edge_over_rate(now, req.from, id) {
                    return refused;
                }
                let full = self.max_edges > 0 && {
                    let registry = &centre.state().registry;
                    registry.get(qos_wire::ids::EdgeId(id)).is_none()
                        && registry.len() >= self.max_edges
                };
                if full {
                    stats.reject(RejectReason::DirectoryFull);
                    return Reply::new(Code::SERVICE_UNAVAILABLE, None, b"full".to_vec());
                }
            }
            let answer = qos_broker::directory::serve(
                &mut centre.state().registry,
                centre.mono_ms(),
                req.from,
                m,
            );
            if let Some(answer) = answer {
                if answer.code == Code::NOT_FOUND {
                    stats.reject(RejectReason::UnknownEdge);
                } else if answer.code.class() != 2 {
                    stats.reject(RejectReason::BadRequest);
                }
                let mut r = Reply::new(answer.code, None, answer.body.clone());
                r.location = Some(answer);
                return r;
            }
        }
        stats.reject(RejectReason::UnknownResource);
        Reply::new(Code::NOT_FOUND, None, Vec::new())
    }

    /// The payload of a `POST /u` with Content-Format 60, or the answer refusing it (counted).
    fn check_uplink<'m>(&self, req: &Request<'m, A>) -> Result<&'m [u8], Reply> {
        let m = &req.message;
        let stats = self.ingest.stats();
        if m.code() != Code::POST {
            stats.reject(RejectReason::BadRequest);
            return Err(Reply::new(
                Code::METHOD_NOT_ALLOWED,
                None,
                b"POST only".to_vec(),
            ));
        }
        if m.content_format() != Some(content_format::CBOR) {
            stats.reject(RejectReason::BadContentFormat);
            return Err(Reply::new(
                Code::UNSUPPORTED_CONTENT_FORMAT,
                None,
                b"Content-Format 60 (CBOR) expected".to_vec(),
            ));
        }
        Ok(m.payload())
    }

    fn uplink(&mut self, now: u64, req: &Request<'_, A>, unix_ms: u64) -> Reply {
        let payload = match self.check_uplink(req) {
            Ok(p) => p,
            Err(r) => return r,
        };
        let batch = match self.ingest.prepare(payload, unix_ms) {
            Ok(b) => b,
            Err(e) => return uplink_refused(e),
        };
        if let Some(r) = self.edge_over_rate(now, req.from, batch.edge()) {
            return r;
        }
        match self.ingest.commit(std::slice::from_ref(&batch)) {
            Ok(acks) => self.acked(req.from, &batch, acks[0], unix_ms),
            Err(e) => uplink_refused(e),
        }
    }

    /// The 2.04 answer to a stored batch from `from`, noted in the centre's routes.
    fn acked(&self, from: A, batch: &Prepared, ack: Ack, unix_ms: u64) -> Reply {
        if let Some(centre) = &self.centre {
            let mut st = centre.state();
            st.via.insert(batch.edge(), from);
            crate::centre::make_room(&mut st.senders, from, crate::centre::MAX_PEERS, |s| {
                s.last_batch_ms
            });
            let seen = st.senders.entry(from).or_default();
            seen.edges.insert(batch.edge());
            seen.last_batch_ms = unix_ms;
            seen.batches += 1;
            seen.records += batch.len() as u64;
        }
        let mut buf = [0u8; 16];
        match ack.encode(&mut buf) {
            Ok(n) => Reply::new(Code::CHANGED, Some(content_format::CBOR), buf[..n].to_vec()),
            Err(_) => Reply::new(Code::INTERNAL_SERVER_ERROR, None, Vec::new()),
        }
    }

    /// Sends the orders of the HTTP API (and those that waited for NSTART).
    fn send_orders(&mut self, now: u64) {
        let Some(centre) = self.centre.clone() else {
            return;
        };
        let mut orders = std::mem::take(&mut self.waiting);
        orders.extend(centre.take_orders());
        for order in orders {
            let Some(route) = centre.state().route(order.edge) else {
                let _ = order.reply.send(OrderAnswer::UnknownEdge);
                continue;
            };
            // An OSCORE edge's order names it even sent direct: the gate protects it and
            // moves the id to the outer Uri-Host ([`crate::oscore`]).
            let oscore = self.oscore.as_ref().is_some_and(|g| g.has_edge(order.edge));
            let (to, id_query) = match route {
                Route::Direct(a) if !oscore => (a, None),
                Route::Direct(a) | Route::Broker(a) => (a, Some(format!("id={}", order.edge))),
            };
            let sent = self
                .endpoint
                .request(now, to, Reliability::Confirmable, order.code, |w| {
                    w.uri_path(order.path)?;
                    if !order.payload.is_empty() {
                        w.uint_option(option::CONTENT_FORMAT, u32::from(content_format::CBOR))?;
                    }
                    if let Some(q) = &id_query {
                        w.option(option::URI_QUERY, q.as_bytes())?;
                    }
                    for q in &order.queries {
                        w.option(option::URI_QUERY, q.as_bytes())?;
                    }
                    w.payload(&order.payload)
                });
            match sent {
                Ok(x) => self.asked.push((x, order.reply, route)),
                Err(RequestError::Busy | RequestError::NoSlot) => self.waiting.push(order),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot send a request to an edge");
                    let _ = order.reply.send(OrderAnswer::NoAnswer);
                }
            }
        }
    }

    /// Next datagram to send.
    pub fn poll_transmit(&mut self, now: u64, buf: &mut [u8]) -> Option<(A, usize)> {
        loop {
            let (to, n) = self.endpoint.poll_transmit(now, buf)?;
            if let Some(n) = self.sealed(to, buf, n) {
                return Some((to, n));
            }
        }
    }

    /// When to call [`CoapServer::poll_transmit`] again at the latest.
    pub fn poll_timeout(&self) -> Option<u64> {
        self.endpoint.poll_timeout()
    }

    /// Advance timers (retransmissions, dedup expiry), fail the orders whose exchange failed
    /// and send the new ones.
    pub fn handle_timeout(&mut self, now: u64) {
        self.endpoint.handle_timeout(now);
        while let Some(ev) = self.endpoint.poll_event() {
            if let Event::Timeout(x) | Event::Reset(x) | Event::Aborted(x) = ev {
                if let Some(i) = self.asked.iter().position(|(id, _, _)| *id == x) {
                    let (_, reply, _) = self.asked.swap_remove(i);
                    let _ = reply.send(OrderAnswer::NoAnswer);
                }
            }
        }
        // Orders whose HTTP request gave up are dropped when their answer comes.
        self.send_orders(now);
    }
}

/// The answer to a refused batch: 5.03 when the store failed (the edge sends it again), 4.00
/// with the reason otherwise (the edge drops it).
fn uplink_refused(r: Rejection) -> Reply {
    if r.is_transient() {
        Reply::new(
            Code::SERVICE_UNAVAILABLE,
            None,
            b"store unavailable".to_vec(),
        )
    } else {
        Reply::new(Code::BAD_REQUEST, None, r.detail.into_bytes())
    }
}

/// Counts an answer of `/c` or `/b` that refuses the request: 4.04 as `unknown_edge`, other
/// 4.xx as `bad_request` (4.15 as `bad_content_format`).
fn counted(stats: &crate::stats::IngestStats, r: Reply) -> Reply {
    if r.code == Code::NOT_FOUND && !r.body.starts_with(b"no configuration") {
        stats.reject(RejectReason::UnknownEdge);
    } else if r.code == Code::UNSUPPORTED_CONTENT_FORMAT {
        stats.reject(RejectReason::BadContentFormat);
    } else if r.code.class() == 4 && r.code != Code::NOT_FOUND {
        stats.reject(RejectReason::BadRequest);
    }
    r
}

/// `GET /c?id=` and `POST /c?id=`. The edge must be known
/// ([`crate::centre::CentreState::knows`]) or have a configuration: 4.04 `unknown edge`
/// otherwise.
fn config<A: Copy + Ord>(centre: &Centre<A>, req: &Request<'_, A>, unix_ms: u64) -> Reply {
    let m = &req.message;
    let Some(edge) = edge_query(m) else {
        return Reply::new(
            Code::BAD_REQUEST,
            None,
            b"query id=<edge id> needed".to_vec(),
        );
    };
    // An edge is known when it spoke to this process or a broker, or holds a configuration.
    let known = centre.state().knows(edge, req.from);
    if !known && matches!(centre.configs.get(edge), Ok(None)) {
        // Counted by the caller ([`counted`]) as `unknown_edge`.
        return Reply::new(
            Code::NOT_FOUND,
            None,
            format!("unknown edge {edge}: register first").into_bytes(),
        );
    }
    let unavailable = |e: crate::store::StoreError| {
        tracing::error!(error = %e, "configuration store");
        Reply::new(
            Code::SERVICE_UNAVAILABLE,
            None,
            b"store unavailable".to_vec(),
        )
    };
    if m.code() == Code::GET {
        let cfg = match centre.configs.get(edge) {
            Ok(c) => c,
            Err(e) => return unavailable(e),
        };
        let Some(cfg) = cfg else {
            return Reply::new(
                Code::NOT_FOUND,
                None,
                format!("no configuration for edge {edge}").into_bytes(),
            );
        };
        let theirs = m.option(option::ETAG);
        let mut r = if theirs == Some(&cfg.etag.to_be_bytes()[..]) {
            Reply::new(Code::VALID, None, Vec::new())
        } else {
            Reply::new(Code::CONTENT, Some(content_format::CBOR), cfg.cbor)
        };
        r.etag = Some(cfg.etag);
        return r;
    }
    if m.code() != Code::POST {
        return Reply::new(Code::METHOD_NOT_ALLOWED, None, b"GET or POST only".to_vec());
    }
    if m.content_format() != Some(content_format::CBOR) {
        return Reply::new(
            Code::UNSUPPORTED_CONTENT_FORMAT,
            None,
            b"Content-Format 60 (CBOR) expected".to_vec(),
        );
    }
    let report = match decode_report(m.payload()) {
        Ok(r) => r,
        Err(why) => return Reply::new(Code::BAD_REQUEST, None, why.into_bytes()),
    };
    match centre.configs.record_report(edge, &report, unix_ms) {
        Ok(()) => {
            if !report.accepted {
                tracing::warn!(edge, etag = report.etag, reason = %report.reason, "an edge rejected its configuration");
            }
            Reply::new(Code::CHANGED, None, Vec::new())
        }
        Err(e) => unavailable(e),
    }
}

/// `POST /b`: a broker's report.
fn broker_report<A: Copy + Ord>(centre: &Centre<A>, req: &Request<'_, A>, unix_ms: u64) -> Reply {
    let m = &req.message;
    if m.code() != Code::POST {
        return Reply::new(Code::METHOD_NOT_ALLOWED, None, b"POST only".to_vec());
    }
    if m.content_format() != Some(content_format::CBOR) {
        return Reply::new(
            Code::UNSUPPORTED_CONTENT_FORMAT,
            None,
            b"Content-Format 60 (CBOR) expected".to_vec(),
        );
    }
    match qos_broker::BrokerReport::decode(m.payload()) {
        Ok(r) => {
            centre.state().record_broker_report(req.from, unix_ms, r);
            Reply::new(Code::CHANGED, None, Vec::new())
        }
        Err(why) => Reply::new(Code::BAD_REQUEST, None, why.into_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use std::net::{SocketAddr, UdpSocket};
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use qos_coap::{Message, MessageType, MessageWriter};
    use qos_wire::ids::{EdgeId, Seq};
    use qos_wire::samples;
    use qos_wire::summary::Summary;

    use super::*;
    use crate::config::Synchronous;
    use crate::stats::IngestStats;
    use crate::store::{SqliteReader, SqliteStore, StoreRead};

    fn temp_db(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("qos-group-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("qos.sqlite")
    }

    /// A CON request with token = message ID.
    fn con(mid: u16, path: &str, payload: &[u8]) -> Vec<u8> {
        let mut buf = vec![0u8; MAX_MESSAGE + 64];
        let token = mid.to_be_bytes();
        let mut w = MessageWriter::new(&mut buf, MessageType::Confirmable, Code::POST, mid, &token)
            .unwrap();
        w.uri_path(path).unwrap();
        w.uint_option(option::CONTENT_FORMAT, 60).unwrap();
        w.payload(payload).unwrap();
        let n = w.finish();
        buf.truncate(n);
        buf
    }

    /// The `i`-th one-summary batch of `edge` (sequence numbers 0, 1, …).
    fn batch(edge: u32, i: u64) -> Vec<u8> {
        let s: Summary<128> = samples::http_summary(i + 1, 60, 0);
        samples::batch(EdgeId(edge), Seq(i), 0, &[s]).unwrap()
    }

    /// An answer received: message ID, code, payload.
    type Answer = (u16, Code, Vec<u8>);

    /// Sends `datagrams` to a socket nobody reads yet (so they wait there together), then
    /// runs the real receive loop on it and collects the answers (message ID, code, payload)
    /// until `expect` came or nothing more comes.
    fn burst(
        db: &std::path::Path,
        datagrams: &[Vec<u8>],
        expect: usize,
    ) -> (Vec<Answer>, Arc<IngestStats>) {
        let server_sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to: SocketAddr = server_sock.local_addr().unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(Duration::from_millis(1500)))
            .unwrap();
        for d in datagrams {
            client.send_to(d, to).unwrap();
        }
        let stats = Arc::new(IngestStats::new());
        let store = SqliteStore::open(db, Synchronous::Full).unwrap();
        let server = CoapServer::new(
            CoapConfig::default(),
            Ingest::new(Box::new(store), stats.clone()),
            7,
        )
        .unwrap();
        let shutdown = Arc::new(AtomicBool::new(false));
        let thread = {
            let shutdown = shutdown.clone();
            std::thread::spawn(move || crate::serve::coap_loop(server_sock, server, &shutdown))
        };
        let mut answers = Vec::new();
        let mut buf = [0u8; 2048];
        while answers.len() < expect {
            let Ok((n, _)) = client.recv_from(&mut buf) else {
                break;
            };
            let m = Message::parse(&buf[..n]).unwrap();
            answers.push((m.message_id(), m.code(), m.payload().to_vec()));
        }
        // Anything more (there should be nothing) within a short while.
        client
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        while let Ok((n, _)) = client.recv_from(&mut buf) {
            let m = Message::parse(&buf[..n]).unwrap();
            answers.push((m.message_id(), m.code(), m.payload().to_vec()));
        }
        shutdown.store(true, Ordering::SeqCst);
        thread.join().unwrap();
        (answers, stats)
    }

    fn acked(payload: &[u8]) -> u64 {
        qos_wire::uplink::Ack::decode(payload).unwrap().acked.0
    }

    /// A server with a centre (so a directory) on a fresh store, and its counters.
    fn directory_server(name: &str) -> (CoapServer<SocketAddr>, Arc<IngestStats>) {
        let db = temp_db(name);
        let store = SqliteStore::open(&db, Synchronous::Normal).unwrap();
        let centre = Arc::new(Centre::new(crate::centre::ConfigStore::open(&db).unwrap()));
        let stats = Arc::new(IngestStats::new());
        let server = CoapServer::new(
            CoapConfig::default(),
            Ingest::new(Box::new(store), stats.clone()),
            7,
        )
        .unwrap()
        .with_centre(centre);
        (server, stats)
    }

    /// Edge `id` registers (`POST /rd`, message ID `mid`) from 127.0.0.1:5683; the answer's
    /// code.
    fn register(server: &mut CoapServer<SocketAddr>, mid: u16, id: u32) -> Code {
        let mut buf = vec![0u8; 256];
        let token = mid.to_be_bytes();
        let mut w = MessageWriter::new(&mut buf, MessageType::Confirmable, Code::POST, mid, &token)
            .unwrap();
        w.uri_path("rd").unwrap();
        for q in [
            format!("ep=site-{id}"),
            "d=eu-west".into(),
            "lt=60".into(),
            format!("id={id}"),
        ] {
            w.option(option::URI_QUERY, q.as_bytes()).unwrap();
        }
        let n = w.finish();
        let from: SocketAddr = "127.0.0.1:5683".parse().unwrap();
        server.handle_datagram(0, 0, from, &buf[..n]);
        let mut out = [0u8; MAX_MESSAGE];
        let (_, n) = server.poll_transmit(0, &mut out).expect("an answer");
        let m = Message::parse(&out[..n]).unwrap();
        assert_eq!(m.message_id(), mid);
        m.code()
    }

    fn rejected(stats: &IngestStats, reason: RejectReason) -> u64 {
        let all = stats.snapshot().rejected;
        all.iter()
            .find(|(r, _)| *r == reason)
            .map_or(0, |(_, n)| *n)
    }

    #[test]
    fn registrations_take_their_edges_tokens_too() {
        let (server, stats) = directory_server("rd-rate");
        let limit = qos_broker::RateLimit {
            rate_per_s: 1,
            burst: 2,
            max_sources: 16,
        };
        let mut server = server.with_edge_rate_limit(limit);
        let codes: Vec<Code> = (1..=4).map(|mid| register(&mut server, mid, 10)).collect();
        assert_eq!(
            codes,
            [
                Code::CREATED,
                Code::CREATED,
                Code::TOO_MANY_REQUESTS,
                Code::TOO_MANY_REQUESTS
            ]
        );
        let other = register(&mut server, 5, 11);
        assert_eq!(other, Code::CREATED, "another edge at the same address");
        assert_eq!(rejected(&stats, RejectReason::RateLimitedEdge), 2);
    }

    #[test]
    fn a_full_directory_turns_new_edges_away_and_keeps_the_known_ones() {
        let (server, stats) = directory_server("rd-full");
        let mut server = server.with_max_edges(2);
        assert_eq!(register(&mut server, 1, 10), Code::CREATED);
        assert_eq!(register(&mut server, 2, 11), Code::CREATED);
        assert_eq!(register(&mut server, 3, 12), Code::SERVICE_UNAVAILABLE);
        assert_eq!(
            register(&mut server, 4, 10),
            Code::CREATED,
            "a known edge registers again"
        );
        assert_eq!(rejected(&stats, RejectReason::DirectoryFull), 1);
    }

    #[test]
    fn a_burst_is_stored_and_acknowledged_exactly_once_per_batch() {
        let db = temp_db("burst");
        let mut out = Vec::new();
        // 40 distinct batches from 4 edges, interleaved
        for i in 0..10u64 {
            for edge in 1..=4u32 {
                let mid = (edge as u16) * 100 + i as u16;
                out.push(con(mid, "u", &batch(edge, i)));
            }
        }
        // CoAP retransmissions (same message ID) of 3 of them, while they wait for the commit
        for mid in [100u16, 201, 302] {
            let i = (mid % 100) as u64;
            out.push(con(mid, "u", &batch(u32::from(mid / 100), i)));
        }
        // the same batches again under new message IDs (their ack was lost): acked, not stored
        for (mid, edge, i) in [(900u16, 1u32, 0u64), (901, 2, 5)] {
            out.push(con(mid, "u", &batch(edge, i)));
        }
        // malformed: not CoAP at all, an undecodable batch, a truncated batch
        out.push(b"\xff\xff\xff".to_vec());
        out.push(con(950, "u", b"\xff\x00"));
        let b = batch(4, 99);
        out.push(con(951, "u", &b[..b.len() - 3]));

        let expect = 40 + 3 + 2 + 2;
        let (answers, stats) = burst(&db, &out, expect);
        assert_eq!(answers.len(), expect, "{answers:?}");
        let of = |mid: u16| -> Vec<&Answer> { answers.iter().filter(|a| a.0 == mid).collect() };
        for i in 0..10u64 {
            for edge in 1..=4u32 {
                let mid = (edge as u16) * 100 + i as u16;
                let got = of(mid);
                let retransmitted = [100, 201, 302].contains(&mid);
                assert_eq!(got.len(), if retransmitted { 2 } else { 1 }, "mid {mid}");
                for a in &got {
                    assert_eq!(a.1, Code::CHANGED, "mid {mid}");
                    assert_eq!(acked(&a.2), i, "mid {mid}");
                }
                if retransmitted {
                    assert_eq!(got[0].2, got[1].2, "the cached response");
                }
            }
        }
        assert_eq!(acked(&of(900)[0].2), 0);
        assert_eq!(acked(&of(901)[0].2), 5);
        assert_eq!(of(950)[0].1, Code::BAD_REQUEST);
        assert_eq!(of(951)[0].1, Code::BAD_REQUEST);

        let reader = SqliteReader::open(&db).unwrap();
        for edge in 1..=4u32 {
            let seqs: Vec<u64> = reader
                .records(edge)
                .unwrap()
                .iter()
                .map(|r| r.seq)
                .collect();
            assert_eq!(seqs, (0..10).collect::<Vec<_>>(), "edge {edge}");
        }
        let s = stats.snapshot();
        assert_eq!((s.stored, s.duplicates, s.acked), (40, 2, 42));
        assert_eq!(s.rejected(RejectReason::Malformed), 2);
        assert_eq!(s.rejected(RejectReason::Truncated), 1);
        assert_eq!(s.rejected(RejectReason::StoreError), 0);
        std::fs::remove_dir_all(db.parent().unwrap()).unwrap();
    }

    #[test]
    fn a_failed_commit_acknowledges_none_of_the_group() {
        let db = temp_db("fail");
        // A store that fails on a record of edge 99, in the middle of the group's transaction.
        drop(SqliteStore::open(&db, Synchronous::Full).unwrap());
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch(
            "CREATE TRIGGER fail_99 BEFORE INSERT ON records WHEN NEW.edge_id = 99
             BEGIN SELECT RAISE(ABORT, 'forced failure'); END;",
        )
        .unwrap();
        let out = vec![
            con(1, "u", &batch(1, 0)),
            con(2, "u", &batch(2, 0)),
            con(3, "u", &batch(99, 0)),
            con(4, "u", &batch(3, 0)),
            con(5, "u", b"\xff\x00"),
        ];
        let (answers, stats) = burst(&db, &out, 5);
        assert_eq!(answers.len(), 5, "{answers:?}");
        for (mid, code, _) in &answers {
            let want = if *mid == 5 {
                Code::BAD_REQUEST
            } else {
                Code::SERVICE_UNAVAILABLE
            };
            assert_eq!(*code, want, "mid {mid}");
        }
        let reader = SqliteReader::open(&db).unwrap();
        assert_eq!(reader.totals().unwrap().records, 0, "nothing of the group");
        let s = stats.snapshot();
        assert_eq!((s.stored, s.acked), (0, 0));
        assert_eq!(s.rejected(RejectReason::StoreError), 4);

        // once the store works again, the edges' new attempts are stored
        conn.execute_batch("DROP TRIGGER fail_99").unwrap();
        let again: Vec<Vec<u8>> = [1u32, 2, 99, 3]
            .iter()
            .enumerate()
            .map(|(i, &edge)| con(10 + i as u16, "u", &batch(edge, 0)))
            .collect();
        let (answers, _) = burst(&db, &again, 4);
        assert_eq!(answers.len(), 4);
        assert!(answers.iter().all(|a| a.1 == Code::CHANGED), "{answers:?}");
        assert_eq!(reader.totals().unwrap().records, 4);
        std::fs::remove_dir_all(db.parent().unwrap()).unwrap();
    }
}
