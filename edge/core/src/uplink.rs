//! The uplink: moves the outbox to a broker (or the super-manager) in CON exchanges, one batch
//! at a time (NSTART 1), and releases records on cumulative acknowledgement.
//!
//! Rules, in one place:
//! - A batch is a CON `POST /u` (Content-Format 60) carrying [`qos_wire::uplink`]'s batch. The
//!   2.04 answer carries an [`Ack`]; every record up to it leaves the outbox.
//! - If the exchange fails (no ACK after the CoAP retransmissions, a Reset, or no answer within
//!   `failover_after_ms` — default 8 s, so an edge reaches another broker within 10 s even though
//!   RFC 7252's defaults would retransmit for up to 93 s), the same batch goes to the next broker
//!   in the list at once (failover). Sequence numbers stay, so the store deduplicates whatever
//!   had arrived before.
//! - While on a broker other than the first, the uplink returns to the first one after
//!   `return_after_ms` (default 5 min), at the next batch: the first broker is the preferred
//!   one (nearest), the others are fallbacks.
//! - A 5.xx answer (the store is unavailable) retries the same batch at the same broker after
//!   `retry_after_ms`, except a 5.03 whose diagnostic payload starts with `alt=` (a broker
//!   draining or over its load, naming alternates): the uplink fails over to the next broker
//!   of its own list at once (it does not parse the addresses). An answer that refuses the batch's content (4.00, 4.02, 4.13, 4.15:
//!   [`Code::rejects_content`], for instance a wire version the receiver does not speak) means
//!   no receiver will accept it: the batch is dropped and counted in `dropped`, so the loss is
//!   visible upstream, and the outbox moves on. Any other 4.xx (4.04, 4.05, ...) says the peer
//!   is not a broker for us (a wrong address): that is a broker failure, so the uplink fails
//!   over and keeps the batch. A 4.29 (Too Many Requests: this edge over its rate at the
//!   receiver) is neither: the batch is kept and goes again to the same broker after the
//!   answer's Max-Age (60 s without one; at least 1 s, at most [`MAX_RATE_WAIT_MS`]).
//! - Besides batches the uplink carries *control* exchanges for the [`centre`](crate::centre)
//!   (registration, configuration poll, configuration report): [`Uplink::control_request`]
//!   sends one to the current broker, [`Uplink::handle`] returns its answer as
//!   [`Received::Control`], and [`Uplink::poll_control_failure`] names one that failed. No new
//!   batch starts while a control exchange is in flight or waiting for the batch in flight
//!   (NSTART 1 per peer), so control exchanges are never starved by a busy outbox.
//! - A batch fits in one datagram ([`MAX_BATCH`] bytes of payload), unless block-wise
//!   transfer is on (feature `block`, [`Uplink::with_blocks`]): then a batch may grow to
//!   [`BlockConfig::max_body`] bytes (e.g. after the edge was cut off and summaries piled up)
//!   and one larger than a datagram goes as RFC 7959 Block1 blocks of
//!   [`BlockConfig::szx`], each block its own CON exchange (retransmitted, timed out and
//!   failed over like a batch: a failure restarts the batch from block 0, at the next broker).
//!   The server's 2.31 Continue asks for the next block (in the smaller size it may ask for);
//!   the answer to the last block is the batch's answer. A 4.13, 4.08, 4.02 or 4.00 to a
//!   block (a smaller limit, a receiver that lost the transfer, one without block-wise
//!   transfer) turns blocks off for `return_after_ms` or until the next broker change: the same
//!   records go again at once in single-datagram batches, nothing is dropped. Block bodies are
//!   not held in memory: each block's bytes are regenerated from the outbox.

use heapless::Vec;
use qos_coap::{
    content_format, option, Code, Config as CoapConfig, Endpoint, Event as CoapEvent, ExchangeId,
    Incoming, Message, MessageWriter, Reliability, Request, RequestError, WriteError,
};
use qos_wire::codec::encode_into;
use qos_wire::event::Event;
use qos_wire::ids::{EdgeId, Seq};
use qos_wire::metrics::MetricsSample;
use qos_wire::summary::Summary;
use qos_wire::uplink::{encode_batch_head, Ack, RecordKind, MAX_RECORDS, UPLINK_PATH};

use crate::fmt::{debug, info, warn};
use crate::outbox::{InFlight, Outbox, PushError};

/// Largest CoAP message the edge sends or accepts (RFC 7252 §4.6).
pub const MSG: usize = 1152;
/// Largest batch payload: leaves room for the CoAP header, token and options within [`MSG`].
pub const MAX_BATCH: usize = 1024;

/// Largest batch body sent block-wise, bytes (the broker's and the super-manager's limit).
pub const MAX_BODY: usize = 16 * 1024;

/// Block-wise batches ([`Uplink::with_blocks`]).
#[cfg(feature = "block")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockConfig {
    /// Largest batch body, bytes ([`MAX_BATCH`]..=[`MAX_BODY`]); a batch over [`MAX_BATCH`]
    /// goes in Block1 blocks.
    pub max_body: usize,
    /// Block size: `2^(szx + 4)` bytes, 0..=6 (16 to 1024).
    pub szx: u8,
}

#[cfg(feature = "block")]
impl Default for BlockConfig {
    fn default() -> Self {
        BlockConfig {
            max_body: 4096,
            szx: 6,
        }
    }
}

/// The CoAP endpoint of an edge: 4 concurrent exchanges, 8 deduplication entries.
pub type EdgeEndpoint<A> = Endpoint<A, 4, 8, MSG>;

/// Uplink settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UplinkConfig {
    /// CoAP reliability parameters (RFC 7252 §4.8).
    pub coap: CoapConfig,
    /// Return to the first broker after this long on another one, ms.
    pub return_after_ms: u64,
    /// Wait before retrying after a 5.xx answer, ms.
    pub retry_after_ms: u64,
    /// Give up on a broker when a batch has no answer this long after it was sent, ms (0: only
    /// when the CoAP retransmissions are exhausted).
    pub failover_after_ms: u64,
}

impl Default for UplinkConfig {
    fn default() -> Self {
        UplinkConfig {
            coap: CoapConfig::default(),
            return_after_ms: 300_000,
            retry_after_ms: 5_000,
            failover_after_ms: 8_000,
        }
    }
}

/// Counters of the uplink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct UplinkStats {
    /// Batches started (a resend after failover counts again).
    pub batches: u32,
    /// Batches acknowledged.
    pub acked_batches: u32,
    /// Exchanges that failed (timeout or reset).
    pub failures: u32,
    /// Moves to another broker.
    pub failovers: u32,
    /// Batches refused with 4.xx and dropped.
    pub refused: u32,
    /// 5.xx answers.
    pub server_errors: u32,
    /// 4.29 answers (this edge over its rate at the receiver): the batch waited Max-Age.
    pub rate_limited: u32,
    /// Batches started block-wise (RFC 7959 Block1; a restart after a failure counts again).
    pub block_batches: u32,
    /// Blocks sent (first transmissions).
    pub blocks: u32,
    /// Falls back to single-datagram batches after a 4.13, 4.08, 4.02 or 4.00 to a block.
    pub block_fallbacks: u32,
}

/// The longest wait a 4.29's Max-Age can impose on the uplink, ms.
pub const MAX_RATE_WAIT_MS: u64 = 600_000;

/// Control exchanges in flight at most.
pub const MAX_CONTROL: usize = 2;

/// What [`Uplink::handle`] hands back to the driver.
#[derive(Debug)]
pub enum Received<'a, A> {
    /// A request for the edge (answer it through [`Uplink::endpoint`], e.g. with the
    /// [`Downlink`](crate::Downlink)).
    Request(Request<'a, A>),
    /// The answer to a control exchange started with [`Uplink::control_request`].
    Control {
        /// The exchange.
        exchange: ExchangeId,
        /// The response.
        message: Message<'a>,
    },
}

/// Why the uplink could not be created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum UplinkError {
    /// No broker address, or more than the capacity.
    Brokers,
    /// Invalid CoAP parameters.
    Coap(qos_coap::ConfigError),
}

/// The uplink of edge `edge` to up to `B` brokers, with an outbox of `N` records of at most
/// `REC` bytes. `A` is the peer address type of the driver.
pub struct Uplink<A, const B: usize, const N: usize, const REC: usize> {
    edge: EdgeId,
    config: UplinkConfig,
    endpoint: EdgeEndpoint<A>,
    outbox: Outbox<N, REC>,
    brokers: Vec<A, B>,
    current: usize,
    left_first_at: u64,
    /// The batch in flight: its exchange, records, and when it was first sent.
    exchange: Option<(ExchangeId, InFlight, u64)>,
    not_before: u64,
    stats: UplinkStats,
    /// Control exchanges in flight, and when each was sent.
    controls: Vec<(ExchangeId, u64), MAX_CONTROL>,
    /// Control exchanges that failed (timeout, reset), not yet taken.
    failed_controls: Vec<ExchangeId, MAX_CONTROL>,
    /// A control request found the broker busy: hold new batches until it could start.
    control_waiting: bool,
    /// OSCORE on the requests to the super-manager ([`Uplink::with_oscore`]).
    #[cfg(feature = "oscore")]
    oscore: Option<crate::oscore::EdgeOscore<MSG>>,
    /// Block-wise batches, when on.
    #[cfg(feature = "block")]
    blocks: Option<BlockConfig>,
    /// The block-wise transfer of the batch in flight: its sender, the `dropped` count its
    /// head carries and its records (fixed for the transfer, so every block is cut from the
    /// same body).
    #[cfg(feature = "block")]
    transfer: Option<(qos_coap::block::Block1Sender, u64, InFlight)>,
    /// Blocks are off until then (after a 4.13, 4.08, 4.02 or 4.00 to a block).
    #[cfg(feature = "block")]
    blocks_off_until: u64,
}

impl<A: Copy + Eq, const B: usize, const N: usize, const REC: usize> Uplink<A, B, N, REC> {
    /// An uplink sending `outbox` (fresh, or restored from storage) to `brokers` in order of
    /// preference. `seed` drives CoAP message IDs, tokens and jitter.
    pub fn new(
        edge: EdgeId,
        brokers: &[A],
        config: UplinkConfig,
        outbox: Outbox<N, REC>,
        seed: u64,
    ) -> Result<Self, UplinkError> {
        let brokers = Vec::from_slice(brokers).map_err(|_| UplinkError::Brokers)?;
        if brokers.is_empty() {
            return Err(UplinkError::Brokers);
        }
        let endpoint = EdgeEndpoint::new(config.coap, seed).map_err(UplinkError::Coap)?;
        Ok(Uplink {
            edge,
            config,
            endpoint,
            outbox,
            brokers,
            current: 0,
            left_first_at: 0,
            exchange: None,
            not_before: 0,
            stats: UplinkStats::default(),
            controls: Vec::new(),
            failed_controls: Vec::new(),
            control_waiting: false,
            #[cfg(feature = "oscore")]
            oscore: None,
            #[cfg(feature = "block")]
            blocks: None,
            #[cfg(feature = "block")]
            transfer: None,
            #[cfg(feature = "block")]
            blocks_off_until: 0,
        })
    }

    /// Sends batches larger than one datagram block-wise (RFC 7959 Block1) from now on, up
    /// to `config.max_body` bytes (clamped to [`MAX_BATCH`]..=[`MAX_BODY`]) in blocks of
    /// `2^(szx+4)` bytes (`szx` at most 6).
    #[cfg(feature = "block")]
    pub fn with_blocks(mut self, config: BlockConfig) -> Self {
        self.blocks = Some(BlockConfig {
            max_body: config.max_body.clamp(MAX_BATCH, MAX_BODY),
            szx: config.szx.min(6),
        });
        self
    }

    /// Protects the requests to the super-manager with OSCORE (RFC 8613) from now on, with
    /// sender sequence numbers `epoch << bits | counter` ([`crate::oscore`]). The driver must
    /// pass each received datagram through [`Uplink::open_datagram`] first.
    #[cfg(feature = "oscore")]
    pub fn with_oscore(mut self, ctx: qos_oscore::Context, epoch: u32, bits: u32) -> Self {
        self.oscore = Some(crate::oscore::EdgeOscore::new(ctx, epoch, bits));
        self
    }

    /// The OSCORE hook, when [`Uplink::with_oscore`] set one.
    #[cfg(feature = "oscore")]
    pub fn oscore(&self) -> Option<&crate::oscore::EdgeOscore<MSG>> {
        self.oscore.as_ref()
    }

    /// Prepares a datagram received into `buf[..n]` for [`Uplink::handle_datagram`]: opens an
    /// OSCORE-protected answer in place. Returns the length to hand on, or `None` to drop the
    /// datagram (an answer that does not verify). Without OSCORE: `Some(n)`.
    pub fn open_datagram(&mut self, buf: &mut [u8], n: usize) -> Option<usize> {
        #[cfg(feature = "oscore")]
        if let Some(o) = self.oscore.as_mut() {
            return o.open(buf, n);
        }
        let _ = buf;
        Some(n)
    }

    /// The outbox.
    pub fn outbox(&self) -> &Outbox<N, REC> {
        &self.outbox
    }

    /// Counters.
    pub fn stats(&self) -> UplinkStats {
        self.stats
    }

    /// The CoAP endpoint (to answer requests the driver received, and for its counters).
    pub fn endpoint(&mut self) -> &mut EdgeEndpoint<A> {
        &mut self.endpoint
    }

    /// The broker batches go to now.
    pub fn broker(&self) -> A {
        self.brokers[self.current]
    }

    /// Queue a window summary.
    pub fn push_summary<const S: usize>(&mut self, s: &Summary<S>) -> Result<(), PushError> {
        self.outbox.push(RecordKind::Summary, |e| s.encode(e))
    }

    /// Queue a sample of host metrics (in order with the summaries; dropped like them, oldest
    /// first, when the outbox is full).
    pub fn push_metrics(&mut self, m: &MetricsSample) -> Result<(), PushError> {
        self.outbox.push(RecordKind::Metrics, |e| m.encode(e))
    }

    /// Queue an event; it goes out before any queued summary.
    pub fn push_event(&mut self, ev: &Event) -> Result<(), PushError> {
        self.outbox.push(RecordKind::Event, |e| ev.encode(e))
    }

    /// Process a datagram. Answers to our batches are consumed here; a request for the edge
    /// (configuration, on-demand probe) is returned for the application to answer through
    /// [`Uplink::endpoint`].
    ///
    /// A driver that starts control exchanges uses [`Uplink::handle`] instead: this one drops
    /// their answers.
    pub fn handle_datagram<'a>(
        &mut self,
        now: u64,
        from: A,
        bytes: &'a [u8],
    ) -> Option<Request<'a, A>> {
        match self.handle(now, from, bytes)? {
            Received::Request(r) => Some(r),
            Received::Control { .. } => None,
        }
    }

    /// Process a datagram: answers to batches are consumed here; a request for the edge or the
    /// answer to a control exchange is returned.
    pub fn handle<'a>(&mut self, now: u64, from: A, bytes: &'a [u8]) -> Option<Received<'a, A>> {
        match self.endpoint.handle_datagram(now, from, bytes)? {
            Incoming::Request(r) => Some(Received::Request(r)),
            Incoming::Response { exchange, message } => {
                if let Some(i) = self.controls.iter().position(|c| c.0 == exchange) {
                    self.controls.swap_remove(i);
                    return Some(Received::Control { exchange, message });
                }
                if let Some((id, flight, _)) = self.exchange {
                    if id == exchange {
                        self.exchange = None;
                        #[cfg(feature = "block")]
                        if self.transfer.is_some() {
                            self.on_block_answer(now, flight, &message);
                            return None;
                        }
                        self.on_answer(now, flight, &message);
                    }
                }
                None
            }
        }
    }

    /// Start a control exchange: a CON request with `code` to the current broker, whose
    /// options and payload `build` writes. [`RequestError::Busy`] means the batch in flight
    /// holds the broker (NSTART): no new batch starts until a control request succeeds, so
    /// retry at the next poll.
    pub fn control_request<F>(
        &mut self,
        now: u64,
        code: Code,
        build: F,
    ) -> Result<ExchangeId, RequestError>
    where
        F: FnOnce(&mut MessageWriter<'_>) -> Result<(), WriteError>,
    {
        if self.controls.is_full() {
            self.control_waiting = true;
            return Err(RequestError::Busy);
        }
        let to = self.brokers[self.current];
        match self
            .endpoint
            .request(now, to, Reliability::Confirmable, code, build)
        {
            Ok(id) => {
                self.control_waiting = false;
                // Cannot fail: checked above.
                let _ = self.controls.push((id, now));
                Ok(id)
            }
            Err(e) => {
                self.control_waiting = matches!(e, RequestError::Busy | RequestError::NoSlot);
                Err(e)
            }
        }
    }

    /// Abandon a control exchange (no event follows).
    pub fn cancel_control(&mut self, exchange: ExchangeId) {
        if let Some(i) = self.controls.iter().position(|c| c.0 == exchange) {
            self.controls.swap_remove(i);
            self.endpoint.cancel(exchange);
        }
    }

    /// A control exchange that failed (no answer after the retransmissions, or a Reset).
    pub fn poll_control_failure(&mut self) -> Option<ExchangeId> {
        self.failed_controls.pop()
    }

    fn on_answer(&mut self, now: u64, flight: InFlight, message: &Message<'_>) {
        let (code, payload) = (message.code(), message.payload());
        if code == Code::CHANGED || code == Code::CREATED {
            match Ack::decode(payload) {
                Ok(ack) if ack.acked >= flight.first => {
                    let n = self.outbox.ack(ack.acked);
                    self.stats.acked_batches += 1;
                    debug!("batch acked up to {} ({} records)", ack.acked.0, n);
                }
                _ => {
                    warn!("unusable ack for batch from {}; resending", flight.first.0);
                    self.not_before = now + self.config.retry_after_ms;
                }
            }
        } else if code == Code::TOO_MANY_REQUESTS {
            // Over this edge's rate at the receiver (RFC 8516): not a broker failure and
            // nothing wrong with the records. The batch is kept and goes again to the same
            // broker once Max-Age has passed (60 s without one, RFC 7252 §5.10.5), waiting at
            // least 1 s and at most `MAX_RATE_WAIT_MS`.
            let wait_s = message.uint_option(option::MAX_AGE).unwrap_or(60);
            let wait_ms = (u64::from(wait_s) * 1000).clamp(1000, MAX_RATE_WAIT_MS);
            warn!(
                "batch refused 4.29 (over our rate); again in {} ms",
                wait_ms
            );
            self.stats.rate_limited += 1;
            self.not_before = now + wait_ms;
        } else if code.class() == 4 && !code.rejects_content() {
            warn!(
                "broker answered {}.{:02} to a batch: not a broker for us; failing over",
                code.class(),
                code.detail()
            );
            self.stats.failures += 1;
            self.fail_over(now);
            self.not_before = now + self.config.retry_after_ms;
        } else if code == Code::SERVICE_UNAVAILABLE && payload.starts_with(b"alt=") {
            // A broker draining or over its load names alternates: go to the next broker of
            // our own list at once (the addresses are not parsed).
            self.stats.failures += 1;
            self.fail_over(now);
        } else if code.class() == 4 {
            self.stats.refused += 1;
            let dropped = self.outbox.drop_in_flight_up_to(flight.last());
            warn!(
                "batch from {} refused ({:?}); {} records dropped",
                flight.first.0,
                code.class(),
                dropped
            );
        } else {
            self.stats.server_errors += 1;
            self.not_before = now + self.config.retry_after_ms;
        }
    }

    /// Advance timers and start the next batch if none is in flight. Call after
    /// `handle_datagram`, when the deadline of [`Uplink::poll_timeout`] passes, and after
    /// pushing records.
    pub fn poll(&mut self, now: u64) {
        self.endpoint.handle_timeout(now);
        while let Some(ev) = self.endpoint.poll_event() {
            let failed = match ev {
                CoapEvent::Timeout(id) | CoapEvent::Reset(id) => id,
                _ => continue,
            };
            if matches!(self.exchange, Some((id, _, _)) if id == failed) {
                self.exchange = None;
                self.end_transfer();
                self.stats.failures += 1;
                self.fail_over(now);
            } else if let Some(i) = self.controls.iter().position(|c| c.0 == failed) {
                self.controls.swap_remove(i);
                // Room: at most MAX_CONTROL exchanges exist.
                let _ = self.failed_controls.push(failed);
            }
        }
        let limit = self.config.failover_after_ms;
        if let Some((id, _, sent)) = self.exchange {
            if limit > 0 && now.saturating_sub(sent) >= limit {
                self.endpoint.cancel(id);
                self.exchange = None;
                self.end_transfer();
                self.stats.failures += 1;
                self.fail_over(now);
            }
        }
        // A control exchange without an answer by the failover deadline: the broker is as
        // silent as for a batch, so move on (the centre registers again with the next one).
        if limit > 0 {
            while let Some(i) = self
                .controls
                .iter()
                .position(|c| now.saturating_sub(c.1) >= limit)
            {
                let (id, _) = self.controls.swap_remove(i);
                self.endpoint.cancel(id);
                let _ = self.failed_controls.push(id);
                self.stats.failures += 1;
                if self.exchange.is_none() {
                    // A transfer between two blocks would go on at another broker: restart.
                    self.end_transfer();
                }
                self.fail_over(now);
            }
        }
        if self.exchange.is_none()
            && now >= self.not_before
            && self.controls.is_empty()
            && !self.control_waiting
        {
            self.send_batch(now);
        }
    }

    fn fail_over(&mut self, now: u64) {
        #[cfg(feature = "block")]
        {
            self.blocks_off_until = 0;
        }
        if self.brokers.len() > 1 {
            if self.current == 0 {
                self.left_first_at = now;
            }
            self.current = (self.current + 1) % self.brokers.len();
            self.stats.failovers += 1;
            info!("uplink fails over to broker {}", self.current);
        }
    }

    /// Ends the block-wise transfer in progress, if any (it restarts from block 0).
    fn end_transfer(&mut self) {
        #[cfg(feature = "block")]
        {
            self.transfer = None;
        }
    }

    /// The largest batch body to send now.
    fn body_limit(&self, now: u64) -> usize {
        #[cfg(feature = "block")]
        if let Some(b) = self.blocks {
            if now >= self.blocks_off_until {
                return b.max_body;
            }
        }
        let _ = now;
        MAX_BATCH
    }

    /// Copies `body[start..start + out.len()]` of the batch of the first `flight.count`
    /// in-flight records (head with `dropped`, then the records) into `out`. Returns the
    /// bytes copied and the body's whole length, `None` if the head does not encode.
    fn batch_window(
        &self,
        flight: InFlight,
        dropped: u64,
        start: usize,
        out: &mut [u8],
    ) -> Option<(usize, usize)> {
        let mut head = [0u8; 32];
        let h = encode_into(&mut head, |e| {
            encode_batch_head(e, self.edge, flight.first, dropped, flight.count)
        })
        .ok()?;
        let records = self
            .outbox
            .in_flight_records()
            .take(usize::from(flight.count))
            .map(|r| r.bytes());
        let (mut pos, mut copied) = (0, 0);
        for chunk in core::iter::once(&head[..h]).chain(records) {
            let (lo, hi) = (pos, pos + chunk.len());
            let (a, b) = (lo.max(start), hi.min(start + out.len()));
            if a < b {
                out[a - start..b - start].copy_from_slice(&chunk[a - lo..b - lo]);
                copied += b - a;
            }
            pos = hi;
        }
        Some((copied, pos))
    }

    fn send_batch(&mut self, now: u64) {
        #[cfg(feature = "block")]
        if self.transfer.is_some() {
            self.send_block(now);
            return;
        }
        if self.current != 0
            && now.saturating_sub(self.left_first_at) >= self.config.return_after_ms
        {
            self.current = 0;
        }
        let head_room = 32;
        let limit = self.body_limit(now);
        let Some(all) = self.outbox.start_batch(limit - head_room, MAX_RECORDS) else {
            return;
        };
        // The records in flight may be more than fit now (numbered for a block-wise batch
        // that was refused, or before a restart): send the longest prefix that fits; the
        // cumulative ack releases it and the rest follows.
        let mut used = head_room;
        let mut count = 0u16;
        for r in self.outbox.in_flight_records().take(usize::from(all.count)) {
            if count > 0 && used + r.bytes().len() > limit {
                break;
            }
            used += r.bytes().len();
            count += 1;
        }
        let flight = InFlight {
            first: all.first,
            count,
        };
        let dropped = self.outbox.stats().dropped;
        let mut payload = [0u8; MAX_BATCH];
        let Some((n, total)) = self.batch_window(flight, dropped, 0, &mut payload) else {
            return;
        };
        if total > MAX_BATCH {
            #[cfg(feature = "block")]
            if limit > MAX_BATCH {
                let szx = self.blocks.map_or(6, |b| b.szx);
                let sender = qos_coap::block::Block1Sender::new(total, szx);
                self.transfer = Some((sender, dropped, flight));
                self.stats.block_batches += 1;
                self.exchange = None;
                self.send_block_of(now, flight);
                return;
            }
            // A record larger than a batch can never be sent: drop it visibly.
            let dropped = self.outbox.drop_in_flight_up_to(flight.last());
            warn!(
                "batch does not fit in a message; {} records dropped",
                dropped
            );
            return;
        }
        let to = self.brokers[self.current];
        let sent = self
            .endpoint
            .request(now, to, Reliability::Confirmable, Code::POST, |w| {
                w.uri_path(UPLINK_PATH)?;
                w.uint_option(option::CONTENT_FORMAT, u32::from(content_format::CBOR))?;
                w.payload(&payload[..n])
            });
        match sent {
            Ok(id) => {
                self.exchange = Some((id, flight, now));
                self.stats.batches += 1;
            }
            Err(e) => warn!("cannot start batch exchange: {:?}", e),
        }
    }

    /// Sends the next block of the transfer in progress.
    #[cfg(feature = "block")]
    fn send_block(&mut self, now: u64) {
        if let Some((_, _, flight)) = self.transfer {
            self.send_block_of(now, flight);
        }
    }

    /// Sends the next block of the transfer of `flight`.
    #[cfg(feature = "block")]
    fn send_block_of(&mut self, now: u64, flight: InFlight) {
        let Some((mut sender, dropped, _)) = self.transfer else {
            return;
        };
        let Some((block, range)) = sender.next_range() else {
            self.transfer = None;
            return;
        };
        let mut payload = [0u8; qos_coap::block::MAX_BLOCK];
        let len = range.len().min(payload.len());
        let Some((n, _)) = self.batch_window(flight, dropped, range.start, &mut payload[..len])
        else {
            self.transfer = None;
            return;
        };
        let to = self.brokers[self.current];
        let sent = self
            .endpoint
            .request(now, to, Reliability::Confirmable, Code::POST, |w| {
                w.uri_path(UPLINK_PATH)?;
                w.uint_option(option::CONTENT_FORMAT, u32::from(content_format::CBOR))?;
                sender.write_options(w, block)?;
                w.payload(&payload[..n])
            });
        match sent {
            Ok(id) => {
                self.transfer = Some((sender, dropped, flight));
                self.exchange = Some((id, flight, now));
                self.stats.blocks += 1;
                if block.num() == 0 {
                    self.stats.batches += 1;
                }
            }
            Err(e) => {
                // Not sent: the same block again at the next poll.
                warn!("cannot send block {}: {:?}", block.num(), e);
            }
        }
    }

    /// The answer to a block of the transfer in progress.
    #[cfg(feature = "block")]
    fn on_block_answer(&mut self, now: u64, flight: InFlight, message: &Message<'_>) {
        use qos_coap::block::SendStep;
        let Some((mut sender, dropped, _)) = self.transfer.take() else {
            return;
        };
        let code = message.code();
        let echo = qos_coap::block::block1_of(message).ok().flatten();
        match sender.on_response(code, echo) {
            SendStep::Next => {
                self.transfer = Some((sender, dropped, flight));
                if self.controls.is_empty() && !self.control_waiting {
                    self.send_block_of(now, flight);
                }
            }
            // 4.13 (a smaller limit), 4.08 (the receiver lost the transfer), 4.02 (a receiver
            // that does not know Block1, a critical option), 4.00 (a block it finds bad):
            // none of these says anything about the records, so they are not dropped.
            SendStep::Done
                if code == Code::REQUEST_ENTITY_TOO_LARGE
                    || code == Code::REQUEST_ENTITY_INCOMPLETE
                    || code == Code::BAD_OPTION
                    || code == Code::BAD_REQUEST =>
            {
                warn!(
                    "block-wise batch refused with {}.{:02}; single-datagram batches for now",
                    code.class(),
                    code.detail()
                );
                self.stats.block_fallbacks += 1;
                self.blocks_off_until = now.saturating_add(self.config.return_after_ms).max(1);
            }
            SendStep::Done => self.on_answer(now, flight, message),
            _ => {
                warn!("block-wise batch: unexpected answer; single-datagram batches for now");
                self.stats.failures += 1;
                self.stats.block_fallbacks += 1;
                self.blocks_off_until = now.saturating_add(self.config.return_after_ms).max(1);
            }
        }
    }

    /// Earliest time `poll` must be called again, if any.
    pub fn poll_timeout(&self) -> Option<u64> {
        let retry = match self.exchange {
            Some((_, _, sent)) if self.config.failover_after_ms > 0 => {
                Some(sent + self.config.failover_after_ms)
            }
            Some(_) => None,
            None => (self.not_before > 0 && !self.outbox.is_empty()).then_some(self.not_before),
        };
        let control = self
            .controls
            .iter()
            .map(|c| c.1 + self.config.failover_after_ms)
            .filter(|_| self.config.failover_after_ms > 0)
            .min();
        let retry = match (retry, control) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        match (self.endpoint.poll_timeout(), retry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Next datagram to send.
    pub fn poll_transmit(&mut self, now: u64, buf: &mut [u8]) -> Option<(A, usize)> {
        loop {
            let (to, n) = self.endpoint.poll_transmit(now, buf)?;
            #[cfg(feature = "oscore")]
            if let Some(o) = self.oscore.as_mut() {
                match o.seal(buf, n) {
                    Some(k) => return Some((to, k)),
                    None => continue,
                }
            }
            return Some((to, n));
        }
    }

    /// Sequence number the next new batch starts at.
    pub fn next_seq(&self) -> Seq {
        self.outbox.next_seq()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use qos_wire::ids::ProbeId;

    type Up = Uplink<u8, 2, 16, 256>;
    type Server = Endpoint<u8, 4, 8, MSG>;
    const EDGE: u8 = 1;
    const B1: u8 = 2;

    fn summary(i: u32) -> Summary<16> {
        let mut s = Summary::new(ProbeId(1), 60 * i, 60);
        s.ok = i;
        s
    }

    /// Deliver what the uplink sends to a server answering with `answer`; returns the number
    /// of requests the server saw.
    fn exchange(
        up: &mut Up,
        server: &mut Server,
        now: u64,
        mut answer: impl FnMut(&[u8]) -> (Code, std::vec::Vec<u8>),
    ) -> usize {
        let mut buf = [0u8; MSG];
        let mut seen = 0;
        up.poll(now);
        while let Some((to, n)) = up.poll_transmit(now, &mut buf) {
            assert_eq!(to, up.broker());
            let bytes = buf[..n].to_vec();
            if let Some(Incoming::Request(req)) = server.handle_datagram(now, EDGE, &bytes) {
                seen += 1;
                assert!(req.message.path_is(UPLINK_PATH));
                assert_eq!(req.message.content_format(), Some(content_format::CBOR));
                let (code, body) = answer(req.message.payload());
                server
                    .respond(now, &req.handle, code, |w| w.payload(&body))
                    .unwrap();
            }
            deliver_answers(server, up, now);
        }
        up.poll(now);
        seen
    }

    /// Hands what `server` has to send to `up` (answers the uplink consumes itself).
    fn deliver_answers(server: &mut Server, up: &mut Up, now: u64) {
        let mut out = [0u8; MSG];
        while let Some((_, m)) = server.poll_transmit(now, &mut out) {
            let reply = out[..m].to_vec();
            assert!(up.handle_datagram(now, B1, &reply).is_none());
        }
    }

    fn ack_all(payload: &[u8]) -> (Code, std::vec::Vec<u8>) {
        let b = qos_wire::uplink::Batch::decode(payload).unwrap();
        let mut buf = [0u8; 16];
        let n = Ack {
            acked: b.last_seq(),
        }
        .encode(&mut buf)
        .unwrap();
        (Code::CHANGED, buf[..n].to_vec())
    }

    fn new_uplink() -> (Up, Server) {
        let up = Up::new(
            EdgeId(5),
            &[B1],
            UplinkConfig::default(),
            Outbox::new(Seq::first_of_epoch(1)),
            7,
        )
        .unwrap();
        (up, Server::new(CoapConfig::default(), 8).unwrap())
    }

    #[test]
    fn batches_are_acked_and_released() {
        let (mut up, mut server) = new_uplink();
        for i in 0..3 {
            up.push_summary(&summary(i)).unwrap();
        }
        assert_eq!(
            exchange(&mut up, &mut server, 0, ack_all),
            1,
            "one batch carries all three"
        );
        assert!(up.outbox().is_empty());
        assert_eq!(up.stats().acked_batches, 1);
        assert_eq!(up.next_seq(), Seq(Seq::first_of_epoch(1).0 + 3));
    }

    #[test]
    fn metrics_travel_with_summaries_in_push_order() {
        let (mut up, mut server) = new_uplink();
        up.push_summary(&summary(1)).unwrap();
        let mut m = MetricsSample::new(60, 60);
        m.set(qos_wire::metrics::Metric::MemTotalKib, 2048).unwrap();
        up.push_metrics(&m).unwrap();
        let mut kinds = std::vec::Vec::new();
        exchange(&mut up, &mut server, 0, |p| {
            let b = qos_wire::uplink::Batch::decode(p).unwrap();
            for r in b.records() {
                kinds.push(r.kind);
                if r.kind == RecordKind::Metrics {
                    let back = MetricsSample::decode(&mut minicbor::Decoder::new(r.body)).unwrap();
                    assert_eq!(back, m);
                }
            }
            ack_all(p)
        });
        assert_eq!(kinds, [RecordKind::Summary, RecordKind::Metrics]);
        assert!(up.outbox().is_empty());
    }

    #[test]
    fn refused_batches_are_dropped_and_counted() {
        let (mut up, mut server) = new_uplink();
        up.push_summary(&summary(1)).unwrap();
        exchange(&mut up, &mut server, 0, |_| {
            (Code::BAD_REQUEST, b"no".to_vec())
        });
        assert!(up.outbox().is_empty());
        assert_eq!((up.stats().refused, up.outbox().stats().dropped), (1, 1));
        // the next batch reports the loss
        up.push_summary(&summary(2)).unwrap();
        let mut dropped = 0;
        exchange(&mut up, &mut server, 1, |p| {
            dropped = qos_wire::uplink::Batch::decode(p).unwrap().dropped;
            ack_all(p)
        });
        assert_eq!(dropped, 1);
    }

    #[test]
    fn server_errors_retry_later_with_the_same_numbers() {
        let (mut up, mut server) = new_uplink();
        up.push_summary(&summary(1)).unwrap();
        let mut first = None;
        exchange(&mut up, &mut server, 0, |p| {
            first = Some(qos_wire::uplink::Batch::decode(p).unwrap().first_seq);
            (Code::SERVICE_UNAVAILABLE, std::vec::Vec::new())
        });
        assert_eq!(up.stats().server_errors, 1);
        assert_eq!(
            up.poll_timeout(),
            Some(UplinkConfig::default().retry_after_ms)
        );
        assert_eq!(
            exchange(&mut up, &mut server, 10, ack_all),
            0,
            "nothing is sent before the retry time"
        );
        let mut again = None;
        exchange(&mut up, &mut server, 5_000, |p| {
            again = Some(qos_wire::uplink::Batch::decode(p).unwrap().first_seq);
            ack_all(p)
        });
        assert_eq!(again, first);
        assert!(up.outbox().is_empty());
    }

    #[test]
    fn a_silent_broker_is_left_within_the_failover_deadline() {
        let cfg = UplinkConfig::default();
        let mut up = Up::new(EdgeId(5), &[B1, 3], cfg, Outbox::new(Seq(0)), 7).unwrap();
        up.push_summary(&summary(1)).unwrap();
        let mut buf = [0u8; MSG];
        let mut sent = std::vec::Vec::new();
        let mut now = 0;
        // nobody answers: drive time by the uplink's own deadlines
        while now <= 20_000 {
            up.poll(now);
            while let Some((to, _)) = up.poll_transmit(now, &mut buf) {
                sent.push((now, to));
            }
            now = up.poll_timeout().unwrap().max(now + 1);
        }
        let first_to_second = sent.iter().find(|(_, to)| *to == 3).expect("failed over").0;
        assert_eq!(
            first_to_second, cfg.failover_after_ms,
            "failover at the deadline, not after 93 s"
        );
        assert!(first_to_second <= 10_000);
        assert!(
            sent.iter().filter(|(_, to)| *to == B1).count() >= 3,
            "retransmitted meanwhile: {sent:?}"
        );
        assert_eq!(
            up.stats().failovers,
            2,
            "and on to the next after another deadline"
        );
    }

    /// An uplink with brokers B1 and 3 (default settings) and a server to answer it.
    fn two_brokers() -> (Up, Server) {
        let up = Up::new(
            EdgeId(5),
            &[B1, 3],
            UplinkConfig::default(),
            Outbox::new(Seq(0)),
            7,
        )
        .unwrap();
        (up, Server::new(CoapConfig::default(), 8).unwrap())
    }

    /// One exchange whose answer is 4.29 with the given Max-Age (none: the option left out).
    fn too_many(up: &mut Up, server: &mut Server, now: u64, max_age: Option<u32>) {
        let mut buf = [0u8; MSG];
        up.poll(now);
        let (_, n) = up.poll_transmit(now, &mut buf).expect("a batch");
        let bytes = buf[..n].to_vec();
        let Some(Incoming::Request(req)) = server.handle_datagram(now, EDGE, &bytes) else {
            panic!("not a request")
        };
        server
            .respond(now, &req.handle, Code::TOO_MANY_REQUESTS, |w| {
                if let Some(s) = max_age {
                    w.uint_option(option::MAX_AGE, s)?;
                }
                Ok(())
            })
            .unwrap();
        deliver_answers(server, up, now);
        up.poll(now);
    }

    #[test]
    fn over_its_rate_the_edge_waits_max_age_at_the_same_broker_and_keeps_the_batch() {
        let (mut up, mut server) = two_brokers();
        up.push_summary(&summary(1)).unwrap();
        too_many(&mut up, &mut server, 0, Some(3));
        assert_eq!(up.stats().rate_limited, 1);
        assert_eq!(up.outbox().len(), 1, "kept");
        assert_eq!(
            (up.stats().refused, up.stats().failovers, up.broker()),
            (0, 0, B1),
            "neither dropped nor a broker failure"
        );
        assert_eq!(up.poll_timeout(), Some(3_000), "Max-Age 3 s");
        assert_eq!(exchange(&mut up, &mut server, 2_999, ack_all), 0);
        assert_eq!(exchange(&mut up, &mut server, 3_000, ack_all), 1);
        assert!(up.outbox().is_empty());

        // Without Max-Age: its default, 60 s (RFC 7252 §5.10.5); an absurd one is capped.
        up.push_summary(&summary(2)).unwrap();
        too_many(&mut up, &mut server, 10_000, None);
        assert_eq!(up.poll_timeout(), Some(70_000));
        assert_eq!(exchange(&mut up, &mut server, 69_999, ack_all), 0);
        too_many(&mut up, &mut server, 70_000, Some(u32::MAX));
        assert_eq!(up.poll_timeout(), Some(70_000 + MAX_RATE_WAIT_MS));
        assert_eq!(up.stats().rate_limited, 3);
    }

    #[test]
    fn a_wrong_server_is_a_failure_not_a_reason_to_drop() {
        let (mut up, mut server) = two_brokers();
        up.push_summary(&summary(1)).unwrap();
        exchange(&mut up, &mut server, 0, |_| {
            (Code::NOT_FOUND, std::vec::Vec::new())
        });
        assert_eq!(up.outbox().len(), 1, "kept");
        assert_eq!((up.stats().refused, up.outbox().stats().dropped), (0, 0));
        assert_eq!((up.stats().failovers, up.broker()), (1, 3));
    }

    #[test]
    fn a_draining_broker_naming_alternates_is_left_at_once() {
        let (mut up, mut server) = two_brokers();
        up.push_summary(&summary(1)).unwrap();
        exchange(&mut up, &mut server, 0, |_| {
            (Code::SERVICE_UNAVAILABLE, b"alt=127.0.0.1:5685".to_vec())
        });
        assert_eq!(up.outbox().len(), 1, "kept");
        assert_eq!((up.stats().failovers, up.broker()), (1, 3));
        assert_eq!(
            up.poll_timeout().map(|t| t <= 1),
            Some(true),
            "sent again at once"
        );
    }

    #[test]
    fn a_control_exchange_waits_for_the_batch_and_holds_the_next_one() {
        let (mut up, mut server) = new_uplink();
        up.push_summary(&summary(1)).unwrap();
        let mut buf = [0u8; MSG];
        up.poll(0);
        let (_, n) = up.poll_transmit(0, &mut buf).expect("batch sent");
        let batch = buf[..n].to_vec();
        // NSTART 1: the control request must wait for the batch in flight
        let get = |w: &mut MessageWriter<'_>| w.uri_path("c");
        assert_eq!(
            up.control_request(0, Code::GET, get),
            Err(RequestError::Busy)
        );
        up.push_summary(&summary(2)).unwrap();
        let Some(Incoming::Request(req)) = server.handle_datagram(0, EDGE, &batch) else {
            panic!("batch expected");
        };
        let (code, body) = ack_all(req.message.payload());
        server
            .respond(0, &req.handle, code, |w| w.payload(&body))
            .unwrap();
        let (_, m) = server.poll_transmit(0, &mut buf).unwrap();
        let ack = buf[..m].to_vec();
        assert!(up.handle(1, B1, &ack).is_none());
        up.poll(1);
        assert!(
            up.poll_transmit(1, &mut buf).is_none(),
            "the next batch waits for the control exchange"
        );
        let id = up.control_request(1, Code::GET, get).unwrap();
        let (_, n) = up.poll_transmit(1, &mut buf).expect("control sent");
        let control = buf[..n].to_vec();
        up.poll(1);
        assert!(
            up.poll_transmit(1, &mut buf).is_none(),
            "still one at a time"
        );
        let Some(Incoming::Request(req)) = server.handle_datagram(2, EDGE, &control) else {
            panic!("control request expected");
        };
        assert!(req.message.path_is("c"));
        server
            .respond(2, &req.handle, Code::NOT_FOUND, |_| Ok(()))
            .unwrap();
        let (_, m) = server.poll_transmit(2, &mut buf).unwrap();
        let answer = buf[..m].to_vec();
        match up.handle(3, B1, &answer) {
            Some(Received::Control { exchange, message }) => {
                assert_eq!(exchange, id);
                assert_eq!(message.code(), Code::NOT_FOUND);
            }
            other => panic!("control answer expected, got {other:?}"),
        }
        up.poll(3);
        assert!(up.poll_transmit(3, &mut buf).is_some(), "batches resume");
    }

    #[test]
    fn a_silent_control_exchange_fails_at_the_failover_deadline() {
        let (mut up, _) = new_uplink();
        let id = up
            .control_request(0, Code::POST, |w| w.uri_path("rd"))
            .unwrap();
        up.poll(7_999);
        assert_eq!(up.poll_control_failure(), None);
        assert_eq!(up.poll_timeout().map(|t| t <= 8_000), Some(true));
        up.poll(8_000);
        assert_eq!(up.poll_control_failure(), Some(id));
        assert_eq!(up.stats().failures, 1);
    }

    /// Block-wise batches: a driver with virtual time between the uplink and a server that
    /// reassembles Block1 with the shared [`qos_coap::block::Reassembler`].
    #[cfg(feature = "block")]
    mod blockwise {
        use super::*;
        use qos_coap::block::{Block1Request, Reassembler};
        use std::vec::Vec as StdVec;

        type BigUp = Uplink<u8, 2, 64, 256>;

        /// What the server saw and did.
        #[derive(Default)]
        struct Seen {
            /// Datagrams the uplink sent (lost ones included).
            datagrams: usize,
            /// Block1 numbers received, in order (repeats included).
            blocks: StdVec<u32>,
            /// Batches complete: (first seq, record count, dropped, single datagram?).
            batches: StdVec<(u64, usize, u64, bool)>,
            /// Sequence numbers stored, in order of arrival.
            stored: StdVec<u64>,
        }

        fn loaded(n: u64, cfg: BlockConfig) -> BigUp {
            let mut up = BigUp::new(
                EdgeId(5),
                &[B1],
                UplinkConfig::default(),
                Outbox::new(Seq::first_of_epoch(1)),
                7,
            )
            .unwrap()
            .with_blocks(cfg);
            for i in 0..n {
                let s: Summary<128> = qos_wire::samples::http_summary(i + 1, 60, 0);
                up.push_summary(&s).unwrap();
            }
            up
        }

        /// Runs until the outbox is empty (or 10 virtual minutes pass). `lose(i)` drops the
        /// `i`-th datagram of the uplink (from 0); `refuse_blocks` makes the server answer
        /// any Block1 request 4.13 (a server without block-wise transfer).
        fn run(up: &mut BigUp, lose: impl FnMut(usize) -> bool, refuse_blocks: bool) -> Seen {
            run_lossy(up, lose, |_| false, refuse_blocks)
        }

        /// [`run`], also dropping the `i`-th answer of the server when `lose_answer(i)`.
        fn run_lossy(
            up: &mut BigUp,
            mut lose: impl FnMut(usize) -> bool,
            mut lose_answer: impl FnMut(usize) -> bool,
            refuse_blocks: bool,
        ) -> Seen {
            let mut answers = 0;
            let mut server = Server::new(CoapConfig::default(), 9).unwrap();
            let mut r: Reassembler<u8, 2, MAX_BODY> = Reassembler::new(MAX_BODY, 2, 60_000);
            let mut seen = Seen::default();
            let mut buf = [0u8; MSG];
            let mut now = 0;
            while !up.outbox().is_empty() && now < 600_000 {
                up.poll(now);
                while let Some((_, n)) = up.poll_transmit(now, &mut buf) {
                    seen.datagrams += 1;
                    if lose(seen.datagrams - 1) {
                        continue;
                    }
                    let bytes = buf[..n].to_vec();
                    if let Some(Incoming::Request(req)) = server.handle_datagram(now, EDGE, &bytes)
                    {
                        let m = req.message;
                        assert!(m.path_is(UPLINK_PATH));
                        let b1 = qos_coap::block::block1_of(&m).unwrap();
                        if let Some(b) = b1 {
                            seen.blocks.push(b.num());
                        }
                        let mut store = |body: &[u8], single: bool| {
                            let batch = qos_wire::uplink::Batch::decode(body).unwrap();
                            let recs: StdVec<u64> = batch.records().map(|r| r.seq.0).collect();
                            seen.batches.push((
                                batch.first_seq.0,
                                recs.len(),
                                batch.dropped,
                                single,
                            ));
                            seen.stored.extend(recs);
                            ack_all(body).1
                        };
                        if b1.is_some() && refuse_blocks {
                            server
                                .respond(now, &req.handle, Code::REQUEST_ENTITY_TOO_LARGE, |w| {
                                    w.uint_option(option::SIZE1, 1024)
                                })
                                .unwrap();
                        } else {
                            match r.request(now, EDGE, &m) {
                                Block1Request::Answer(a) => server
                                    .respond(now, &req.handle, a.code(), |w| a.write(w))
                                    .unwrap(),
                                Block1Request::Complete { block, body } => {
                                    let ack = store(body, false);
                                    server
                                        .respond(now, &req.handle, Code::CHANGED, |w| {
                                            w.block_option(option::BLOCK1, block)?;
                                            w.payload(&ack)
                                        })
                                        .unwrap()
                                }
                                _ => {
                                    assert!(m.payload().len() <= MAX_BATCH);
                                    let ack = store(m.payload(), true);
                                    server
                                        .respond(now, &req.handle, Code::CHANGED, |w| {
                                            w.payload(&ack)
                                        })
                                        .unwrap()
                                }
                            }
                        }
                    }
                    let mut out = [0u8; MSG];
                    while let Some((_, k)) = server.poll_transmit(now, &mut out) {
                        answers += 1;
                        if lose_answer(answers - 1) {
                            continue;
                        }
                        let reply = out[..k].to_vec();
                        assert!(up.handle_datagram(now, B1, &reply).is_none());
                    }
                    up.poll(now);
                }
                now = up.poll_timeout().map_or(now + 1_000, |t| t.max(now + 1));
            }
            seen
        }

        #[test]
        fn a_large_batch_goes_in_blocks_and_a_lost_block_is_retransmitted() {
            let cfg = BlockConfig {
                max_body: 4096,
                szx: 5,
            };
            let mut up = loaded(30, cfg);
            let first = Seq::first_of_epoch(1).0;
            // The second datagram (block 1) is lost once: the CoAP layer sends it again.
            let seen = run(&mut up, |i| i == 1, false);
            assert!(up.outbox().is_empty());
            assert_eq!(seen.stored, (first..first + 30).collect::<StdVec<_>>());
            assert_eq!(seen.batches.len(), 1, "one batch: {:?}", seen.batches);
            assert!(!seen.batches[0].3, "reassembled from blocks");
            let nblocks = seen.blocks.len();
            assert!(nblocks >= 4, "blocks of 512 bytes: {:?}", seen.blocks);
            assert_eq!(
                seen.blocks,
                (0..nblocks as u32).collect::<StdVec<_>>(),
                "each block once at the server"
            );
            assert_eq!(seen.datagrams, nblocks + 1, "one retransmission");
            let st = up.stats();
            assert_eq!((st.block_batches, st.blocks), (1, nblocks as u32));
            assert_eq!(
                (st.acked_batches, st.failures, st.block_fallbacks),
                (1, 0, 0)
            );
            assert_eq!(up.outbox().stats().dropped, 0);
        }

        #[test]
        fn a_block_lost_twice_is_sent_a_third_time() {
            let mut up = loaded(30, BlockConfig::default());
            // Datagrams 0 and 1 are block 0 and its first retransmission.
            let seen = run(&mut up, |i| i == 0 || i == 1, false);
            assert!(up.outbox().is_empty());
            assert_eq!(seen.stored.len(), 30);
            assert_eq!(seen.batches.len(), 1);
            assert_eq!(seen.datagrams, seen.blocks.len() + 2);
        }

        #[test]
        fn a_lost_continue_is_answered_again_from_the_servers_cache() {
            let mut up = loaded(30, BlockConfig::default());
            // The server's 2.31 to block 1 is lost: the edge retransmits block 1 (same
            // message ID), the server's deduplication answers it again, the reassembler
            // sees it once.
            let seen = run_lossy(&mut up, |_| false, |i| i == 1, false);
            assert!(up.outbox().is_empty());
            assert_eq!(seen.stored.len(), 30);
            assert_eq!(seen.batches.len(), 1);
            let n = seen.blocks.len();
            assert_eq!(seen.blocks, (0..n as u32).collect::<StdVec<_>>());
            assert_eq!(seen.datagrams, n + 1, "block 1 twice on the wire");
        }

        #[test]
        fn a_server_without_blocks_gets_the_same_records_in_single_datagram_batches() {
            let mut up = loaded(30, BlockConfig::default());
            let first = Seq::first_of_epoch(1).0;
            let seen = run(&mut up, |_| false, true);
            assert!(up.outbox().is_empty());
            assert_eq!(
                seen.stored,
                (first..first + 30).collect::<StdVec<_>>(),
                "no gap, no duplicate"
            );
            assert_eq!(seen.blocks, [0], "block 0 refused once");
            assert!(seen.batches.len() >= 2, "{:?}", seen.batches);
            assert!(
                seen.batches.iter().all(|b| b.3 && b.2 == 0),
                "single, nothing dropped"
            );
            let st = up.stats();
            assert_eq!((st.block_fallbacks, st.refused), (1, 0));
            assert_eq!(up.outbox().stats().dropped, 0);
        }

        #[test]
        fn a_silent_broker_mid_transfer_restarts_the_batch_at_the_next_one() {
            let mut up = BigUp::new(
                EdgeId(5),
                &[B1, 3],
                UplinkConfig::default(),
                Outbox::new(Seq(0)),
                7,
            )
            .unwrap()
            .with_blocks(BlockConfig::default());
            for i in 0..30 {
                let s: Summary<128> = qos_wire::samples::http_summary(i + 1, 60, 0);
                up.push_summary(&s).unwrap();
            }
            let mut buf = [0u8; MSG];
            let mut server = Server::new(CoapConfig::default(), 9).unwrap();
            let mut r: Reassembler<u8, 2, MAX_BODY> = Reassembler::new(MAX_BODY, 2, 60_000);
            // Broker B1 answers block 0 with 2.31, then falls silent.
            up.poll(0);
            let (to, n) = up.poll_transmit(0, &mut buf).unwrap();
            assert_eq!(to, B1);
            let bytes = buf[..n].to_vec();
            let Some(Incoming::Request(req)) = server.handle_datagram(0, EDGE, &bytes) else {
                panic!("block 0");
            };
            let Block1Request::Answer(a) = r.request(0, EDGE, &req.message) else {
                panic!("continue");
            };
            server
                .respond(0, &req.handle, a.code(), |w| a.write(w))
                .unwrap();
            let (_, k) = server.poll_transmit(0, &mut buf).unwrap();
            let reply = buf[..k].to_vec();
            assert!(up.handle_datagram(1, B1, &reply).is_none());
            let (to, n) = up.poll_transmit(1, &mut buf).expect("block 1 at once");
            let b1 = Message::parse(&buf[..n]).unwrap();
            assert_eq!(to, B1);
            assert_eq!(qos_coap::block::block1_of(&b1).unwrap().unwrap().num(), 1);
            // Nothing more from B1: at the failover deadline the batch starts over, block 0
            // at broker 3, with the same records.
            let mut now = 1;
            let restart = loop {
                now = up.poll_timeout().unwrap().max(now + 1);
                up.poll(now);
                if let Some((to, n)) = up.poll_transmit(now, &mut buf) {
                    if to == 3 {
                        break Message::parse(&buf[..n])
                            .unwrap()
                            .option(option::BLOCK1)
                            .map(|v| qos_coap::option::Block::decode(v).unwrap().num());
                    }
                }
                assert!(now < 60_000, "no failover");
            };
            assert_eq!(restart, Some(0));
            assert_eq!(now, 1 + UplinkConfig::default().failover_after_ms);
            assert_eq!(
                (up.stats().failovers, up.stats().block_batches),
                (1, 2),
                "a restart counts again"
            );
            assert_eq!(up.outbox().len(), 30, "nothing released, nothing dropped");
        }

        #[test]
        fn without_blocks_a_backlog_goes_in_single_datagram_batches() {
            let mut up = BigUp::new(
                EdgeId(5),
                &[B1],
                UplinkConfig::default(),
                Outbox::new(Seq(0)),
                7,
            )
            .unwrap();
            for i in 0..30 {
                let s: Summary<128> = qos_wire::samples::http_summary(i + 1, 60, 0);
                up.push_summary(&s).unwrap();
            }
            let seen = run(&mut up, |_| false, false);
            assert_eq!(seen.stored, (0..30).collect::<StdVec<_>>());
            assert!(seen.blocks.is_empty());
            assert!(seen.batches.len() >= 2);
        }
    }

    #[test]
    fn no_broker_is_an_error() {
        let r = Up::new(
            EdgeId(1),
            &[],
            UplinkConfig::default(),
            Outbox::new(Seq(0)),
            1,
        );
        assert!(matches!(r, Err(UplinkError::Brokers)));
    }
}
