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
//! The UDP driver is [`crate::serve::start_ingest`]; tests drive this type directly.

use std::sync::mpsc::Sender;
use std::sync::Arc;

use qos_coap::{
    content_format, option, Code, Config as CoapConfig, ConfigError, Event, ExchangeId, Incoming,
    Link, Reliability, Request, RequestError,
};
use qos_wire::config::CONFIG_PATH;
use qos_wire::uplink::{Batch, UPLINK_PATH};

use crate::centre::{decode_report, Centre, Order, OrderAnswer, Route};
use crate::config::ReliabilityConfig;
use crate::ingest::Ingest;
use crate::stats::RejectReason;

/// Largest CoAP message accepted (RFC 7252 §4.6); larger datagrams are refused as oversized.
pub const MAX_MESSAGE: usize = 1152;
/// The resources, in link format.
pub const WELL_KNOWN_CORE: &str =
    "</u>;rt=\"qos.uplink\";ct=60,</c>;rt=\"qos.config\";ct=60,</rd>;rt=\"core.rd\",</b>;rt=\"qos.broker\";ct=60";

/// An answer: code, ETag, Location-Path `rd/<n>`, Content-Format, payload.
struct Reply {
    code: Code,
    etag: Option<u32>,
    location: Option<qos_broker::directory::DirectoryAnswer>,
    cf: Option<u16>,
    body: Vec<u8>,
}

impl Reply {
    fn new(code: Code, cf: Option<u16>, body: Vec<u8>) -> Reply {
        Reply {
            code,
            etag: None,
            location: None,
            cf,
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
        })
    }

    /// Drops (and counts as `rate_limited`) the datagrams of a source over `limit`; `key` maps
    /// an address to its source (the driver: the IP address without the port).
    pub fn with_rate_limit(mut self, limit: qos_broker::RateLimit, key: fn(A) -> A) -> Self {
        self.limiter = (limit.rate_per_s > 0).then(|| (qos_broker::RateLimiter::new(limit), key));
        self
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
        let stats = self.ingest.stats().clone();
        stats.add_datagrams(1);
        if let Some((limiter, key)) = &mut self.limiter {
            if !limiter.allow(now, key(from)) {
                stats.reject(RejectReason::RateLimited);
                return;
            }
        }
        if bytes.len() > MAX_MESSAGE {
            stats.reject(RejectReason::Oversized);
            return;
        }
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
        let r = self.route(&req, unix_ms);
        let handle = req.handle;
        let _ = self.endpoint.respond(now, &handle, r.code, |w| {
            if let Some(e) = r.etag {
                w.option(option::ETAG, &e.to_be_bytes())?;
            }
            if let Some(l) = &r.location {
                l.write_location(w)?;
            }
            if let Some(cf) = r.cf {
                w.uint_option(option::CONTENT_FORMAT, u32::from(cf))?;
            }
            w.payload(&r.body)
        });
    }

    fn route(&mut self, req: &Request<'_, A>, unix_ms: u64) -> Reply {
        let m = &req.message;
        let stats = self.ingest.stats().clone();
        if m.path_is(UPLINK_PATH) {
            return self.uplink(req, unix_ms);
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

    fn uplink(&mut self, req: &Request<'_, A>, unix_ms: u64) -> Reply {
        let m = &req.message;
        let stats = self.ingest.stats().clone();
        if m.code() != Code::POST {
            stats.reject(RejectReason::BadRequest);
            return Reply::new(Code::METHOD_NOT_ALLOWED, None, b"POST only".to_vec());
        }
        if m.content_format() != Some(content_format::CBOR) {
            stats.reject(RejectReason::BadContentFormat);
            return Reply::new(
                Code::UNSUPPORTED_CONTENT_FORMAT,
                None,
                b"Content-Format 60 (CBOR) expected".to_vec(),
            );
        }
        match self.ingest.handle_batch(m.payload(), unix_ms) {
            Ok(ack) => {
                if let (Some(centre), Ok(batch)) = (&self.centre, Batch::decode(m.payload())) {
                    let mut st = centre.state();
                    st.via.insert(batch.edge.0, req.from);
                    let seen = st.senders.entry(req.from).or_default();
                    seen.edges.insert(batch.edge.0);
                    seen.last_batch_ms = unix_ms;
                    seen.batches += 1;
                    seen.records += batch.len() as u64;
                }
                let mut buf = [0u8; 16];
                match ack.encode(&mut buf) {
                    Ok(n) => {
                        Reply::new(Code::CHANGED, Some(content_format::CBOR), buf[..n].to_vec())
                    }
                    Err(_) => Reply::new(Code::INTERNAL_SERVER_ERROR, None, Vec::new()),
                }
            }
            Err(r) if r.is_transient() => Reply::new(
                Code::SERVICE_UNAVAILABLE,
                None,
                b"store unavailable".to_vec(),
            ),
            Err(r) => Reply::new(Code::BAD_REQUEST, None, r.detail.into_bytes()),
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
            let (to, id_query) = match route {
                Route::Direct(a) => (a, None),
                Route::Broker(a) => (a, Some(format!("id={}", order.edge))),
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
        self.endpoint.poll_transmit(now, buf)
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
            centre.state().reports.insert(req.from, (unix_ms, r));
            Reply::new(Code::CHANGED, None, Vec::new())
        }
        Err(why) => Reply::new(Code::BAD_REQUEST, None, why.into_bytes()),
    }
}
