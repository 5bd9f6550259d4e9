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
//! - `GET /.well-known/core`: [`WELL_KNOWN_CORE`].
//!
//! # Forwarding
//! Queued batches go upstream in append order as CON `POST /u` with the same payload, one
//! exchange outstanding at a time (NSTART 1). 2.xx: the batch is removed. 4.00, 4.02, 4.13,
//! 4.15 ([`Code::rejects_content`]): the upstream refuses it for good; it is removed and counted
//! in [`BrokerStats::dropped_refused`]. Any other 4.xx (a wrong upstream address answering
//! 4.04), 5.xx, timeout or reset: the same batch is sent again after a back-off (`retry_initial_ms`, doubling
//! up to `retry_max_ms`, back to the start after a success). A batch is removed only after the
//! upstream acknowledged it, so a broker killed in between sends it again after its restart;
//! the super-manager deduplicates by (edge, seq), so this is harmless.

use qos_coap::{
    content_format, option, Code, Config as CoapConfig, ConfigError, Endpoint, Event, ExchangeId,
    Incoming, Reliability, Request,
};
use qos_wire::registration::{Registration, DIRECTORY_PATH};
use qos_wire::uplink::{Ack, Batch, UPLINK_PATH};

use crate::queue::{Queue, QueueId, QueueStats};
use crate::registry::Registry;

/// Largest CoAP message (RFC 7252 §4.6).
pub const MAX_MESSAGE: usize = 1152;
/// The downstream resources, in link format (RFC 6690).
pub const WELL_KNOWN_CORE: &str = "</rd>;rt=\"core.rd\",</u>;rt=\"qos.uplink\";ct=60";

/// Endpoint towards the edges: 64 exchanges, 1024 deduplication entries.
pub type DownstreamEndpoint<A> = Endpoint<A, 64, 1024, MAX_MESSAGE, 64>;
/// Endpoint towards the upstream: a few exchanges (one batch in flight at a time).
pub type UpstreamEndpoint<A> = Endpoint<A, 4, 16, MAX_MESSAGE, 64>;

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
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            downstream: CoapConfig::default(),
            upstream: CoapConfig::default(),
            retry_initial_ms: 1_000,
            retry_max_ms: 30_000,
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
    in_flight: Option<(ExchangeId, QueueId)>,
    retry_at: u64,
    backoff_ms: u64,
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
            down: Box::new(DownstreamEndpoint::new(config.downstream, seed)?),
            up: Box::new(UpstreamEndpoint::new(
                config.upstream,
                seed ^ 0x9e37_79b9_7f4a_7c15,
            )?),
            upstream,
            queue,
            registry: Registry::new(),
            stats: BrokerStats::default(),
            in_flight: None,
            retry_at: 0,
            backoff_ms: config.retry_initial_ms,
            config,
        })
    }

    /// The counters.
    pub fn stats(&self) -> BrokerStats {
        self.stats
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
        self.in_flight.is_some()
    }

    /// A datagram from an edge (downstream socket). `unix_ms` is recorded with queued batches.
    pub fn handle_downstream(&mut self, now: u64, unix_ms: u64, from: A, bytes: &[u8]) {
        if bytes.len() > MAX_MESSAGE {
            self.stats.rejected_malformed += 1;
            return;
        }
        let malformed = self.down.stats().malformed;
        let incoming = self.down.handle_datagram(now, from, bytes);
        if self.down.stats().malformed != malformed {
            self.stats.rejected_malformed += 1;
        }
        if let Some(Incoming::Request(req)) = incoming {
            let (code, cf, location, body) = self.route(now, unix_ms, &req);
            let _ = self.down.respond(now, &req.handle, code, |w| {
                if let Some(n) = location {
                    w.option(option::LOCATION_PATH, DIRECTORY_PATH.as_bytes())?;
                    w.option(option::LOCATION_PATH, n.to_string().as_bytes())?;
                }
                if let Some(cf) = cf {
                    w.uint_option(option::CONTENT_FORMAT, u32::from(cf))?;
                }
                w.payload(&body)
            });
        }
        self.poll(now);
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
        }
    }

    #[allow(clippy::type_complexity)]
    fn route(
        &mut self,
        now: u64,
        unix_ms: u64,
        req: &Request<'_, A>,
    ) -> (Code, Option<u16>, Option<u32>, Vec<u8>) {
        let m = &req.message;
        let path: Vec<&[u8]> = m.uri_path().collect();
        let plain = |code, text: &str| (code, None, None, text.as_bytes().to_vec());
        match path.as_slice() {
            [p] if *p == UPLINK_PATH.as_bytes() => {
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
                let batch = match Batch::decode(m.payload()) {
                    Ok(b) => b,
                    Err(e) => {
                        self.reject(RejectReason::BadBatch);
                        return plain(Code::BAD_REQUEST, &format!("bad batch: {e}"));
                    }
                };
                let last = batch.last_seq();
                match self
                    .queue
                    .append(batch.edge, batch.first_seq, last, m.payload(), unix_ms)
                {
                    Ok(_) => {
                        self.stats.acked += 1;
                        self.registry.saw_batch(now, req.from, batch.edge, last);
                        let mut buf = [0u8; 16];
                        match (Ack { acked: last }).encode(&mut buf) {
                            Ok(n) => (
                                Code::CHANGED,
                                Some(content_format::CBOR),
                                None,
                                buf[..n].to_vec(),
                            ),
                            Err(_) => plain(Code::INTERNAL_SERVER_ERROR, ""),
                        }
                    }
                    Err(e) => {
                        self.stats.queue_failures += 1;
                        tracing::error!(error = %e, "cannot queue a batch; answered 5.03");
                        plain(Code::SERVICE_UNAVAILABLE, "queue unavailable")
                    }
                }
            }
            [p] if *p == DIRECTORY_PATH.as_bytes() => {
                if m.code() != Code::POST {
                    self.reject(RejectReason::MethodNotAllowed);
                    return plain(Code::METHOD_NOT_ALLOWED, "POST only");
                }
                let queries: Option<Vec<&str>> = m
                    .uri_queries()
                    .map(|q| core::str::from_utf8(q).ok())
                    .collect();
                let Some(queries) = queries else {
                    self.reject(RejectReason::BadRegistration);
                    return plain(Code::BAD_REQUEST, "Uri-Query is not UTF-8");
                };
                match Registration::from_query(queries) {
                    Ok(reg) => {
                        let n = self.registry.register(now, req.from, &reg);
                        self.stats.registrations += 1;
                        (Code::CREATED, None, Some(n), Vec::new())
                    }
                    Err(e) => {
                        self.reject(RejectReason::BadRegistration);
                        plain(Code::BAD_REQUEST, &e.to_string())
                    }
                }
            }
            [p, n] if *p == DIRECTORY_PATH.as_bytes() => {
                let location = core::str::from_utf8(n)
                    .ok()
                    .and_then(|n| n.parse::<u32>().ok());
                let Some(location) = location else {
                    self.reject(RejectReason::NotFound);
                    return plain(Code::NOT_FOUND, "no such registration");
                };
                let found = if m.code() == Code::POST {
                    let mut lt = None;
                    for q in m.uri_queries() {
                        if let Some(v) = q.strip_prefix(b"lt=") {
                            match core::str::from_utf8(v).ok().and_then(|v| v.parse().ok()) {
                                Some(v) if v >= qos_wire::registration::MIN_LIFETIME => {
                                    lt = Some(v)
                                }
                                _ => {
                                    self.reject(RejectReason::BadRegistration);
                                    return plain(
                                        Code::BAD_REQUEST,
                                        "invalid registration parameter `lt`",
                                    );
                                }
                            }
                        }
                    }
                    self.registry.refresh(now, req.from, location, lt)
                } else if m.code() == Code::DELETE {
                    self.registry.remove(now, location)
                } else {
                    self.reject(RejectReason::MethodNotAllowed);
                    return plain(Code::METHOD_NOT_ALLOWED, "POST or DELETE only");
                };
                if !found {
                    self.reject(RejectReason::NotFound);
                    return plain(Code::NOT_FOUND, "no such registration");
                }
                if m.code() == Code::POST {
                    self.stats.registrations += 1;
                    (Code::CHANGED, None, None, Vec::new())
                } else {
                    (Code::DELETED, None, None, Vec::new())
                }
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
                if let Some((id, qid)) = self.in_flight {
                    if id == exchange {
                        self.in_flight = None;
                        self.on_answer(now, qid, message.code());
                    }
                }
            }
            Some(Incoming::Request(req)) => {
                // Nothing is offered upstream yet.
                let _ = self
                    .up
                    .respond(now, &req.handle, Code::NOT_FOUND, |w| w.payload(b""));
            }
            None => {}
        }
        self.poll(now);
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

    /// Advances timers (retransmissions, lease expiry, retries) and starts forwarding the next
    /// batch when none is in flight. Call when [`Broker::poll_timeout`] passes; the `handle_*`
    /// methods call it themselves.
    pub fn poll(&mut self, now: u64) {
        self.down.handle_timeout(now);
        while self.down.poll_event().is_some() {}
        self.up.handle_timeout(now);
        while let Some(ev) = self.up.poll_event() {
            let failed = match ev {
                Event::Timeout(id) | Event::Reset(id) => id,
                _ => continue,
            };
            if matches!(self.in_flight, Some((id, _)) if id == failed) {
                self.in_flight = None;
                tracing::debug!("upstream did not answer; will retry");
                self.fail(now);
            }
        }
        self.registry.expire(now);
        if self.in_flight.is_none() && now >= self.retry_at {
            self.forward_next(now);
        }
    }

    fn forward_next(&mut self, now: u64) {
        let batch = match self.queue.oldest() {
            Ok(Some(b)) => b,
            Ok(None) => return,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the queue");
                self.fail(now);
                return;
            }
        };
        let sent = self.up.request(
            now,
            self.upstream,
            Reliability::Confirmable,
            Code::POST,
            |w| {
                w.uri_path(UPLINK_PATH)?;
                w.uint_option(option::CONTENT_FORMAT, u32::from(content_format::CBOR))?;
                w.payload(&batch.payload)
            },
        );
        match sent {
            Ok(id) => self.in_flight = Some((id, batch.id)),
            Err(e) => {
                tracing::warn!(error = %e, "cannot send a queued batch upstream");
                self.fail(now);
            }
        }
    }

    /// Next datagram for an edge.
    pub fn poll_transmit_downstream(&mut self, now: u64, buf: &mut [u8]) -> Option<(A, usize)> {
        self.down.poll_transmit(now, buf)
    }

    /// Next datagram for the upstream.
    pub fn poll_transmit_upstream(&mut self, now: u64, buf: &mut [u8]) -> Option<(A, usize)> {
        self.up.poll_transmit(now, buf)
    }

    /// When to call [`Broker::poll`] (and the `poll_transmit_*`) next at the latest.
    pub fn poll_timeout(&self) -> Option<u64> {
        let retry = (self.in_flight.is_none() && !self.queue.is_empty()).then_some(self.retry_at);
        [
            self.down.poll_timeout(),
            self.up.poll_timeout(),
            retry,
            self.registry.next_expiry(),
        ]
        .into_iter()
        .flatten()
        .min()
    }
}
