//! The sans-IO CoAP endpoint: message layer (CON/NON/ACK/RST, retransmission, deduplication)
//! and the request/response matching of RFC 7252 §4 and §5.3.
//!
//! The endpoint never reads a clock or touches a socket. The driver feeds it datagrams
//! ([`Endpoint::handle_datagram`]) and the current time in milliseconds, drains what it wants
//! to send ([`Endpoint::poll_transmit`]), sleeps until [`Endpoint::poll_timeout`] and drains
//! failures and completions with [`Endpoint::poll_event`].

use core::fmt;

use heapless::{Deque, Vec};

use crate::config::Config;
use crate::dedup::{DedupCache, DedupState};
use crate::error::{ConfigError, RequestError, RespondError, WriteError};
use crate::msg::{peek_header, Code, Message, MessageType, MessageWriter, Token, HEADER_LEN};

/// Capacity of the queue of small control messages (empty ACKs, RSTs, re-sent cached
/// responses) waiting for [`Endpoint::poll_transmit`]. When it is full, new control messages
/// are dropped and counted in [`Stats::control_dropped`]; the peer's retransmission recovers.
pub const CONTROL_QUEUE: usize = 8;

/// Identifies an exchange started by [`Endpoint::request`] or
/// [`Endpoint::respond_separate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ExchangeId(u32);

impl ExchangeId {
    #[cfg_attr(not(feature = "tcp"), allow(dead_code))]
    pub(crate) const fn from_raw(raw: u32) -> Self {
        ExchangeId(raw)
    }

    /// The raw number (unique per endpoint until it wraps after 2^32 exchanges).
    pub const fn raw(self) -> u32 {
        self.0
    }
}

impl fmt::Display for ExchangeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Outcomes reported by [`Endpoint::poll_event`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Event {
    /// The exchange failed: a confirmable message was not acknowledged after
    /// `MAX_RETRANSMIT` retransmissions, or no response came within `EXCHANGE_LIFETIME` (CON)
    /// or `NON_LIFETIME` (NON).
    Timeout(ExchangeId),
    /// The peer answered with a Reset.
    Reset(ExchangeId),
    /// A separate response ([`Endpoint::respond_separate`]) was acknowledged.
    Delivered(ExchangeId),
    /// The connection that carried the exchange failed or was closed before the answer came
    /// (stream transports only, [`crate::tcp`]): the request may or may not have been
    /// processed; send it again on a new connection.
    Aborted(ExchangeId),
}

/// Whether a request is confirmable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Reliability {
    /// CON: retransmitted until acknowledged, at most `NSTART` per peer.
    Confirmable,
    /// NON: sent once.
    NonConfirmable,
}

/// Counters (wrapping). See [`Endpoint::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub struct Stats {
    /// Datagrams given to `handle_datagram`.
    pub rx: u32,
    /// Datagrams returned by `poll_transmit` (retransmissions included).
    pub tx: u32,
    /// Retransmissions of confirmable messages.
    pub retransmissions: u32,
    /// Duplicate CON/NON messages recognised by the deduplication cache.
    pub duplicates: u32,
    /// Datagrams that failed to parse or broke a message-layer rule.
    pub malformed: u32,
    /// Exchanges that ended in [`Event::Timeout`].
    pub timeouts: u32,
    /// Exchanges that ended in [`Event::Reset`].
    pub resets: u32,
    /// ACKs, RSTs and responses that matched nothing (late duplicates, stale responses).
    pub unexpected: u32,
    /// RSTs and 4.02 responses sent to reject messages (including CoAP pings).
    pub rejected: u32,
    /// Deduplication entries evicted before their lifetime because the cache was full.
    pub dedup_evictions: u32,
    /// Control messages dropped because the control queue was full.
    pub control_dropped: u32,
}

/// What the server needs to answer a request; `Copy`, so it can be kept after the datagram
/// is gone (to answer later with [`Endpoint::respond_separate`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct RequestHandle<A> {
    peer: A,
    mid: u16,
    token: Token,
    confirmable: bool,
    deferred: bool,
    /// Received over a stream (RFC 8323) rather than as a datagram.
    stream: bool,
}

impl<A: Copy> RequestHandle<A> {
    /// The handle of a request received over a stream (no message ID, nothing to acknowledge).
    #[cfg_attr(not(feature = "tcp"), allow(dead_code))]
    pub(crate) fn stream(peer: A, token: Token) -> Self {
        RequestHandle {
            peer,
            mid: 0,
            token,
            confirmable: false,
            deferred: false,
            stream: true,
        }
    }

    /// Whether the request came over a stream (CoAP over TCP or TLS) rather than a datagram.
    pub fn is_stream(&self) -> bool {
        self.stream
    }
    /// The client.
    pub fn peer(&self) -> A {
        self.peer
    }
    /// The request's message ID.
    pub fn message_id(&self) -> u16 {
        self.mid
    }
    /// The request's token, echoed in the response.
    pub fn token(&self) -> &[u8] {
        self.token.as_slice()
    }
    /// Whether the request was confirmable.
    pub fn is_confirmable(&self) -> bool {
        self.confirmable
    }
    /// Whether an empty ACK was sent ([`Endpoint::defer`]).
    pub fn is_deferred(&self) -> bool {
        self.deferred
    }
}

/// A request received from a peer.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Request<'a, A> {
    /// The client.
    pub from: A,
    /// The request message, borrowing the datagram.
    pub message: Message<'a>,
    /// `true` when this is a retransmission of a request already answered with a response
    /// too large for the response cache: answer it again idempotently.
    pub duplicate: bool,
    /// Pass to [`Endpoint::respond`], [`Endpoint::defer`] or [`Endpoint::respond_separate`].
    pub handle: RequestHandle<A>,
}

/// What [`Endpoint::handle_datagram`] hands to the application.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Incoming<'a, A> {
    /// The response that completes a client exchange (piggybacked, separate or NON).
    Response {
        /// The exchange from [`Endpoint::request`].
        exchange: ExchangeId,
        /// The response, borrowing the datagram.
        message: Message<'a>,
    },
    /// A request for the server side.
    Request(Request<'a, A>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A client request (CON or NON).
    Request,
    /// A separate CON response, retransmitted until ACKed.
    SeparateResponse,
    /// A piggybacked or NON response: sent once, then the slot is freed.
    OneShot,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotState {
    Active,
    Finished(Event),
}

struct Slot<A, const MSG: usize> {
    id: ExchangeId,
    peer: A,
    kind: Kind,
    confirmable: bool,
    mid: u16,
    token: Token,
    buf: [u8; MSG],
    len: usize,
    /// Waiting for `poll_transmit`; the deadline is set when it goes out.
    tx_pending: bool,
    /// An empty ACK stopped retransmission (client CON waiting for a separate response).
    acked: bool,
    retransmits: u8,
    /// The current retransmission timeout (doubled at each retransmission).
    timeout: u64,
    deadline: u64,
    first_tx: Option<u64>,
    state: SlotState,
}

impl<A, const MSG: usize> Slot<A, MSG> {
    fn active(&self) -> bool {
        self.state == SlotState::Active
    }
    fn sent(&self) -> bool {
        self.first_tx.is_some()
    }
}

#[derive(Debug, Clone, Copy)]
enum Control<A> {
    Empty { to: A, ty: MessageType, mid: u16 },
    Cached { to: A, mid: u16 },
}

enum SlotError {
    NoSlot,
    Write(WriteError),
}

impl From<SlotError> for RequestError {
    fn from(e: SlotError) -> Self {
        match e {
            SlotError::NoSlot => RequestError::NoSlot,
            SlotError::Write(w) => RequestError::Write(w),
        }
    }
}

impl From<SlotError> for RespondError {
    fn from(e: SlotError) -> Self {
        match e {
            SlotError::NoSlot => RespondError::NoSlot,
            SlotError::Write(w) => RespondError::Write(w),
        }
    }
}

/// SplitMix64: small, fast, good enough for message IDs, tokens and jitter (not for secrets).
#[derive(Debug, Clone)]
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (tiny modulo bias is irrelevant here); 0 when `n == 0`.
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }
}

/// A CoAP endpoint (client and server at once) over datagrams from peers of address type `A`.
///
/// - `EXCHANGES`: slots for outstanding client requests, separate responses waiting for their
///   ACK, responses queued until `poll_transmit`, and finished exchanges whose event has not
///   been polled yet. Each slot holds a `MSG`-byte buffer.
/// - `DEDUP`: entries of the deduplication cache (received message IDs); when full the oldest
///   is evicted ([`Stats::dedup_evictions`]).
/// - `MSG`: largest message, e.g. 1152 (RFC 7252 §4.6).
/// - `RESP`: per-dedup-entry cache for the encoded piggybacked response, re-sent for duplicate
///   CON requests (default 128).
///
/// All state lives inline: no allocation. See the crate docs for a complete example.
pub struct Endpoint<
    A,
    const EXCHANGES: usize,
    const DEDUP: usize,
    const MSG: usize,
    const RESP: usize = 128,
> {
    config: Config,
    rng: Rng,
    next_mid: u16,
    next_id: u32,
    slots: Vec<Slot<A, MSG>, EXCHANGES>,
    dedup: DedupCache<A, DEDUP, RESP>,
    control: Deque<Control<A>, CONTROL_QUEUE>,
    stats: Stats,
    /// The latest `now` seen by any entry point.
    last_now: u64,
    /// No deduplication entry expires before this time (so expiry need not look before).
    dedup_expiry: u64,
}

impl<
        A: Copy + Eq,
        const EXCHANGES: usize,
        const DEDUP: usize,
        const MSG: usize,
        const RESP: usize,
    > Endpoint<A, EXCHANGES, DEDUP, MSG, RESP>
{
    /// A new endpoint. `seed` drives message IDs, tokens and retransmission jitter: the same
    /// seed and inputs give the same outputs. Seed it from a hardware RNG or the clock in
    /// production, so that tokens are hard to guess (RFC 7252 §5.3.1).
    // Inlined into the caller on a host: no frame and copy of its own for a large value (a
    // server's endpoint is ~250 KB, and unoptimised builds copied it up through each frame).
    // Firmware's endpoints are small: there the compiler decides (148 B less flash).
    #[cfg_attr(not(target_os = "none"), inline(always))]
    pub fn new(config: Config, seed: u64) -> Result<Self, ConfigError> {
        config.validate()?;
        let mut rng = Rng(seed);
        let next_mid = rng.next_u64() as u16;
        Ok(Endpoint {
            config,
            rng,
            next_mid,
            next_id: 0,
            slots: Vec::new(),
            dedup: DedupCache::new(),
            control: Deque::new(),
            stats: Stats::default(),
            last_now: 0,
            dedup_expiry: u64::MAX,
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Replaces the configuration. Timeouts already scheduled keep their deadline; the next
    /// retransmission decision and new exchanges use the new values.
    pub fn set_config(&mut self, config: Config) -> Result<(), ConfigError> {
        config.validate()?;
        self.config = config;
        Ok(())
    }

    /// The counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Exchanges in progress (client requests and separate responses not finished yet).
    pub fn active_exchanges(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| s.active() && s.kind != Kind::OneShot)
            .count()
    }

    fn alloc_mid(&mut self) -> u16 {
        let m = self.next_mid;
        self.next_mid = m.wrapping_add(1);
        m
    }

    fn alloc_id(&mut self) -> ExchangeId {
        let id = ExchangeId(self.next_id);
        self.next_id = self.next_id.wrapping_add(1);
        id
    }

    /// RFC 7252 §4.2: uniform in `[ACK_TIMEOUT, ACK_TIMEOUT * ACK_RANDOM_FACTOR]`.
    fn initial_timeout(&mut self) -> u64 {
        let lo = self.config.ack_timeout_ms;
        let hi = self.config.max_initial_timeout_ms();
        lo + self.rng.below(hi.saturating_sub(lo).saturating_add(1))
    }

    /// A random token not used by another active client request (RFC 7252 §5.3.1).
    fn fresh_token(&mut self) -> Token {
        let len = usize::from(self.config.token_len);
        let mut token = Token::default();
        for _ in 0..16 {
            let bytes = self.rng.next_u64().to_le_bytes();
            token = Token::from_slice(bytes.get(..len).unwrap_or(&[])).unwrap_or_default();
            let clash = self
                .slots
                .iter()
                .any(|s| s.kind == Kind::Request && s.active() && s.token == token);
            if !clash {
                break;
            }
        }
        token
    }

    fn queue_control(&mut self, c: Control<A>) -> bool {
        if self.control.push_back(c).is_err() {
            self.stats.control_dropped = self.stats.control_dropped.wrapping_add(1);
            false
        } else {
            true
        }
    }

    fn reject(&mut self, to: A, mid: u16) {
        self.stats.rejected = self.stats.rejected.wrapping_add(1);
        self.queue_control(Control::Empty {
            to,
            ty: MessageType::Reset,
            mid,
        });
    }

    fn ack(&mut self, to: A, mid: u16) -> bool {
        self.queue_control(Control::Empty {
            to,
            ty: MessageType::Acknowledgement,
            mid,
        })
    }

    /// Adds a slot and writes its message; the slot is removed again if writing fails.
    #[allow(clippy::too_many_arguments)]
    fn push_slot<F>(
        &mut self,
        peer: A,
        kind: Kind,
        ty: MessageType,
        code: Code,
        mid: u16,
        token: Token,
        build: F,
    ) -> Result<ExchangeId, SlotError>
    where
        F: FnOnce(&mut MessageWriter<'_>) -> Result<(), WriteError>,
    {
        if self.slots.is_full() {
            return Err(SlotError::NoSlot);
        }
        let id = self.alloc_id();
        let confirmable = ty == MessageType::Confirmable;
        let timeout = if confirmable {
            self.initial_timeout()
        } else {
            0
        };
        let slot = Slot {
            id,
            peer,
            kind,
            confirmable,
            mid,
            token,
            buf: [0; MSG],
            len: 0,
            tx_pending: true,
            acked: false,
            retransmits: 0,
            timeout,
            deadline: u64::MAX,
            first_tx: None,
            state: SlotState::Active,
        };
        self.slots.push(slot).map_err(|_| SlotError::NoSlot)?;
        let written = match self.slots.last_mut() {
            Some(slot) => MessageWriter::new(&mut slot.buf, ty, code, mid, token.as_slice())
                .and_then(|mut w| {
                    build(&mut w)?;
                    Ok(w.finish())
                }),
            None => Err(WriteError::BufferTooSmall),
        };
        match written {
            Ok(len) => {
                if let Some(slot) = self.slots.last_mut() {
                    slot.len = len;
                }
                Ok(id)
            }
            Err(e) => {
                self.slots.pop();
                Err(SlotError::Write(e))
            }
        }
    }

    /// Starts a client exchange: a request to `to` with `code`, whose options and payload
    /// `build` writes (the header and token are already written; options must go in ascending
    /// order). The endpoint picks the message ID (sequential from a random start) and a fresh
    /// random token of [`Config::token_len`] bytes, keeps the encoded request for
    /// retransmission, and queues it for [`poll_transmit`](Self::poll_transmit).
    ///
    /// Errors: [`RequestError::Busy`] when `NSTART` confirmable requests to `to` are
    /// outstanding (retry after one completes), [`RequestError::NoSlot`] when every slot is
    /// used, [`RequestError::InvalidCode`] for a non-request code, or a write error.
    pub fn request<F>(
        &mut self,
        now: u64,
        to: A,
        reliability: Reliability,
        code: Code,
        build: F,
    ) -> Result<ExchangeId, RequestError>
    where
        F: FnOnce(&mut MessageWriter<'_>) -> Result<(), WriteError>,
    {
        self.handle_timeout(now);
        if !code.is_request() {
            return Err(RequestError::InvalidCode);
        }
        let confirmable = reliability == Reliability::Confirmable;
        if confirmable {
            let outstanding = self
                .slots
                .iter()
                .filter(|s| s.active() && s.kind == Kind::Request && s.confirmable && s.peer == to)
                .count();
            if outstanding >= usize::from(self.config.nstart) {
                return Err(RequestError::Busy);
            }
        }
        if self.slots.is_full() {
            return Err(RequestError::NoSlot);
        }
        let token = self.fresh_token();
        let mid = self.alloc_mid();
        let ty = if confirmable {
            MessageType::Confirmable
        } else {
            MessageType::NonConfirmable
        };
        Ok(self.push_slot(to, Kind::Request, ty, code, mid, token, build)?)
    }

    /// Whether the peer acknowledged the request of client exchange `exchange` with an empty
    /// ACK and a separate response is awaited (RFC 7252 §5.2.2): the peer is there, its answer
    /// is just slow. `false` for unknown or finished exchanges.
    pub fn awaiting_separate(&self, exchange: ExchangeId) -> bool {
        self.slots
            .iter()
            .any(|s| s.id == exchange && s.active() && s.kind == Kind::Request && s.acked)
    }

    /// Abandons an exchange (client request or separate response): nothing more is sent and
    /// no event is reported. Returns whether it existed. A late response to it is treated as
    /// unexpected (a CON one is answered with RST, which tells an observing server to stop).
    pub fn cancel(&mut self, exchange: ExchangeId) -> bool {
        match self.slots.iter().position(|s| s.id == exchange) {
            Some(i) => {
                self.slots.remove(i);
                true
            }
            None => false,
        }
    }

    /// Answers a request now: piggybacked in the ACK for a CON request, as a NON response for
    /// a NON request; the token is echoed. For a CON request the encoded response is cached
    /// (if at most `RESP` bytes) and re-sent for duplicates of the request.
    pub fn respond<F>(
        &mut self,
        now: u64,
        request: &RequestHandle<A>,
        code: Code,
        build: F,
    ) -> Result<(), RespondError>
    where
        F: FnOnce(&mut MessageWriter<'_>) -> Result<(), WriteError>,
    {
        self.handle_timeout(now);
        if !code.is_response() {
            return Err(RespondError::InvalidCode);
        }
        if request.deferred {
            return Err(RespondError::Deferred);
        }
        let (ty, mid) = if request.confirmable {
            (MessageType::Acknowledgement, request.mid)
        } else {
            (MessageType::NonConfirmable, self.alloc_mid())
        };
        self.push_slot(
            request.peer,
            Kind::OneShot,
            ty,
            code,
            mid,
            request.token,
            build,
        )?;
        if request.confirmable {
            self.cache_response(request.peer, request.mid);
        }
        Ok(())
    }

    /// Copies the last slot's bytes (a just-written piggybacked response) into the dedup entry.
    fn cache_response(&mut self, peer: A, mid: u16) {
        let Some(slot) = self.slots.last() else {
            return;
        };
        let Some(entry) = self.dedup.get_mut(peer, mid) else {
            return;
        };
        let bytes = slot.buf.get(..slot.len).unwrap_or(&[]);
        match entry.resp.get_mut(..bytes.len()) {
            Some(dst) => {
                dst.copy_from_slice(bytes);
                entry.resp_len = bytes.len();
                entry.state = DedupState::Responded;
            }
            None => {
                entry.resp_len = 0;
                entry.state = DedupState::RespondedUncached;
            }
        }
    }

    /// Acknowledges a CON request with an empty ACK now, promising a separate response
    /// ([`respond_separate`](Self::respond_separate)) later (RFC 7252 §5.2.2). Duplicates of
    /// the request get another empty ACK. Idempotent.
    pub fn defer(&mut self, now: u64, request: &mut RequestHandle<A>) -> Result<(), RespondError> {
        self.handle_timeout(now);
        if !request.confirmable {
            return Err(RespondError::NotConfirmable);
        }
        if request.deferred {
            return Ok(());
        }
        if !self.ack(request.peer, request.mid) {
            return Err(RespondError::QueueFull);
        }
        request.deferred = true;
        if let Some(e) = self.dedup.get_mut(request.peer, request.mid) {
            e.state = DedupState::Acked;
        }
        Ok(())
    }

    /// Sends a separate response as a new CON message echoing the token, retransmitted until
    /// the client ACKs it ([`Event::Delivered`]), resets it ([`Event::Reset`]) or the
    /// retransmissions run out ([`Event::Timeout`]). A CON request not yet deferred is deferred
    /// first (empty ACK). NSTART does not apply to responses.
    pub fn respond_separate<F>(
        &mut self,
        now: u64,
        request: &mut RequestHandle<A>,
        code: Code,
        build: F,
    ) -> Result<ExchangeId, RespondError>
    where
        F: FnOnce(&mut MessageWriter<'_>) -> Result<(), WriteError>,
    {
        self.handle_timeout(now);
        if !code.is_response() {
            return Err(RespondError::InvalidCode);
        }
        if self.slots.is_full() {
            return Err(RespondError::NoSlot);
        }
        if request.confirmable && !request.deferred {
            self.defer(now, request)?;
        }
        let mid = self.alloc_mid();
        Ok(self.push_slot(
            request.peer,
            Kind::SeparateResponse,
            MessageType::Confirmable,
            code,
            mid,
            request.token,
            build,
        )?)
    }

    /// Remembers a received message ID (RFC 7252 §4.5).
    fn remember(&mut self, now: u64, peer: A, mid: u16, state: DedupState, lifetime: u64) {
        let expires = now.saturating_add(lifetime);
        if self.dedup.insert(peer, mid, expires, state) {
            self.stats.dedup_evictions = self.stats.dedup_evictions.wrapping_add(1);
        }
        if DEDUP > 0 {
            self.dedup_expiry = self.dedup_expiry.min(expires);
        }
    }

    fn forget(&mut self, peer: A, mid: u16) {
        self.dedup.remove(peer, mid);
    }

    /// Processes one received datagram from `from`. Returns a request for the application, or
    /// the response that completes a client exchange; everything else (ACKs, RSTs, duplicates,
    /// malformed datagrams) is handled inside and counted in [`stats`](Self::stats). Follow
    /// with [`poll_transmit`](Self::poll_transmit) and [`poll_event`](Self::poll_event).
    ///
    /// The result borrows `bytes` only, so the endpoint can be used (e.g. to respond) while it
    /// is alive.
    pub fn handle_datagram<'a>(
        &mut self,
        now: u64,
        from: A,
        bytes: &'a [u8],
    ) -> Option<Incoming<'a, A>> {
        self.stats.rx = self.stats.rx.wrapping_add(1);
        self.handle_timeout(now);
        let msg = match Message::parse(bytes) {
            Ok(m) => m,
            Err(_) => {
                self.stats.malformed = self.stats.malformed.wrapping_add(1);
                // RFC 7252 §4.2: a CON with a format error is rejected with RST; other types
                // and unknown versions (peek_header gives None) are silently ignored.
                if let Some((MessageType::Confirmable, mid)) = peek_header(bytes) {
                    self.reject(from, mid);
                }
                return None;
            }
        };
        match msg.ty() {
            MessageType::Acknowledgement => self.on_ack(now, from, msg),
            MessageType::Reset => {
                self.on_reset(from, msg);
                None
            }
            MessageType::Confirmable | MessageType::NonConfirmable => {
                self.on_con_non(now, from, msg)
            }
        }
    }

    fn on_ack<'a>(&mut self, now: u64, from: A, msg: Message<'a>) -> Option<Incoming<'a, A>> {
        let code = msg.code();
        // RFC 7252 §4.2: an ACK carries a response or is empty.
        if !(code.is_empty() || code.is_response()) {
            self.stats.malformed = self.stats.malformed.wrapping_add(1);
            return None;
        }
        let mid = msg.message_id();
        let found = self.slots.iter().position(|s| {
            s.active()
                && s.sent()
                && s.confirmable
                && !s.acked
                && s.kind != Kind::OneShot
                && s.peer == from
                && s.mid == mid
        });
        let Some(i) = found else {
            self.stats.unexpected = self.stats.unexpected.wrapping_add(1);
            return None;
        };
        let lifetime = self.config.exchange_lifetime_ms();
        let slot = self.slots.get_mut(i)?;
        match (slot.kind, msg.is_empty()) {
            // Empty ACK to our request: stop retransmitting, wait for the separate response
            // (RFC 7252 §5.2.2) until EXCHANGE_LIFETIME after the first transmission.
            (Kind::Request, true) => {
                slot.acked = true;
                slot.tx_pending = false;
                slot.deadline = slot.first_tx.unwrap_or(now).saturating_add(lifetime);
                None
            }
            // Piggybacked response (RFC 7252 §5.2.1): must also match the token (§5.3.2).
            (Kind::Request, false) if msg.token() == slot.token.as_slice() => {
                let exchange = slot.id;
                self.slots.remove(i);
                Some(Incoming::Response {
                    exchange,
                    message: msg,
                })
            }
            (Kind::SeparateResponse, true) => {
                slot.state = SlotState::Finished(Event::Delivered(slot.id));
                None
            }
            _ => {
                self.stats.unexpected = self.stats.unexpected.wrapping_add(1);
                None
            }
        }
    }

    fn on_reset(&mut self, from: A, msg: Message<'_>) {
        // RFC 7252 §4.2: a Reset must be empty.
        if !msg.is_empty() {
            self.stats.malformed = self.stats.malformed.wrapping_add(1);
            return;
        }
        let mid = msg.message_id();
        let slot = self.slots.iter_mut().find(|s| {
            s.active() && s.sent() && s.kind != Kind::OneShot && s.peer == from && s.mid == mid
        });
        match slot {
            Some(slot) => {
                slot.state = SlotState::Finished(Event::Reset(slot.id));
                self.stats.resets = self.stats.resets.wrapping_add(1);
            }
            None => self.stats.unexpected = self.stats.unexpected.wrapping_add(1),
        }
    }

    fn on_con_non<'a>(&mut self, now: u64, from: A, msg: Message<'a>) -> Option<Incoming<'a, A>> {
        let con = msg.ty() == MessageType::Confirmable;
        let code = msg.code();
        let mid = msg.message_id();
        if code.is_empty() {
            if con {
                // CoAP ping (RFC 7252 §4.3): answered with RST.
                self.reject(from, mid);
            } else {
                // An empty NON is a format error (RFC 7252 §4.3): ignore.
                self.stats.malformed = self.stats.malformed.wrapping_add(1);
            }
            return None;
        }
        if code.is_reserved() {
            self.stats.malformed = self.stats.malformed.wrapping_add(1);
            if con {
                self.reject(from, mid);
            }
            return None;
        }

        // Deduplication (RFC 7252 §4.5).
        if let Some(e) = self.dedup.get(from, mid) {
            self.stats.duplicates = self.stats.duplicates.wrapping_add(1);
            match e.state {
                DedupState::Pending | DedupState::Non => {}
                DedupState::Acked => {
                    if con {
                        self.ack(from, mid);
                    }
                }
                DedupState::Responded => {
                    self.queue_control(Control::Cached { to: from, mid });
                }
                DedupState::RespondedUncached => {
                    if code.is_request() {
                        return Some(Incoming::Request(Request {
                            from,
                            message: msg,
                            duplicate: true,
                            handle: self.handle_for(from, &msg, con),
                        }));
                    }
                }
            }
            return None;
        }

        let unknown_critical =
            self.config.reject_unknown_critical && msg.unknown_critical_option().is_some();
        let lifetime = if con {
            self.config.exchange_lifetime_ms()
        } else {
            self.config.non_lifetime_ms()
        };

        if code.is_request() {
            if unknown_critical {
                self.stats.rejected = self.stats.rejected.wrapping_add(1);
                if con {
                    // RFC 7252 §5.4.1: 4.02 Bad Option, piggybacked.
                    self.remember(now, from, mid, DedupState::Pending, lifetime);
                    let handle = self.handle_for(from, &msg, con);
                    if self
                        .respond(now, &handle, Code::BAD_OPTION, |_| Ok(()))
                        .is_err()
                    {
                        // No slot: let the retransmission try again.
                        self.forget(from, mid);
                    }
                }
                return None;
            }
            let state = if con {
                DedupState::Pending
            } else {
                DedupState::Non
            };
            self.remember(now, from, mid, state, lifetime);
            return Some(Incoming::Request(Request {
                from,
                message: msg,
                duplicate: false,
                handle: self.handle_for(from, &msg, con),
            }));
        }

        // A separate (CON) or NON response (RFC 7252 §5.2.2, §5.2.3), matched by token and
        // peer (§5.3.2).
        if unknown_critical {
            if con {
                // RFC 7252 §5.4.1: reject a CON response with an unknown critical option.
                self.reject(from, mid);
            } else {
                self.stats.rejected = self.stats.rejected.wrapping_add(1);
            }
            return None;
        }
        let found = self.slots.iter().position(|s| {
            s.active()
                && s.sent()
                && s.kind == Kind::Request
                && s.peer == from
                && s.token.as_slice() == msg.token()
        });
        let Some(i) = found else {
            self.stats.unexpected = self.stats.unexpected.wrapping_add(1);
            if con {
                // RFC 7252 §5.3.2: an unexpected CON response is rejected.
                self.reject(from, mid);
            }
            return None;
        };
        let exchange = self.slots.get(i)?.id;
        self.slots.remove(i);
        if con {
            self.ack(from, mid);
            self.remember(now, from, mid, DedupState::Acked, lifetime);
        } else {
            self.remember(now, from, mid, DedupState::Non, lifetime);
        }
        Some(Incoming::Response {
            exchange,
            message: msg,
        })
    }

    fn handle_for(&self, from: A, msg: &Message<'_>, con: bool) -> RequestHandle<A> {
        RequestHandle {
            peer: from,
            mid: msg.message_id(),
            token: Token::from_slice(msg.token()).unwrap_or_default(),
            confirmable: con,
            deferred: false,
            stream: false,
        }
    }

    /// Processes expired timers: schedules retransmissions (RFC 7252 §4.2) and fails
    /// exchanges whose retransmissions or lifetime ran out; drops expired deduplication
    /// entries. [`poll_transmit`](Self::poll_transmit) and the other entry points call it,
    /// so drivers need not call it themselves, but may.
    pub fn handle_timeout(&mut self, now: u64) {
        self.last_now = self.last_now.max(now);
        let max_retransmit = self.config.max_retransmit;
        for slot in self.slots.iter_mut() {
            if !slot.active()
                || slot.tx_pending
                || slot.kind == Kind::OneShot
                || slot.deadline > now
            {
                continue;
            }
            if slot.confirmable && !slot.acked && slot.retransmits < max_retransmit {
                slot.retransmits += 1;
                slot.timeout = slot.timeout.saturating_mul(2);
                slot.tx_pending = true;
                slot.deadline = u64::MAX;
                self.stats.retransmissions = self.stats.retransmissions.wrapping_add(1);
            } else {
                slot.state = SlotState::Finished(Event::Timeout(slot.id));
                self.stats.timeouts = self.stats.timeouts.wrapping_add(1);
            }
        }
        if now >= self.dedup_expiry {
            self.dedup_expiry = self.dedup.expire(now);
        }
    }

    /// The earliest time (ms) at which [`poll_transmit`](Self::poll_transmit) (or
    /// [`handle_timeout`](Self::handle_timeout)) has work to do, or `None` when nothing is
    /// pending. While datagrams are queued (or events wait in [`poll_event`](Self::poll_event))
    /// it returns the latest `now` seen, i.e. "immediately".
    pub fn poll_timeout(&self) -> Option<u64> {
        let queued =
            !self.control.is_empty() || self.slots.iter().any(|s| !s.active() || s.tx_pending);
        if queued {
            return Some(self.last_now);
        }
        self.slots
            .iter()
            .filter(|s| s.kind != Kind::OneShot)
            .map(|s| s.deadline)
            .min()
    }

    /// The next datagram to send: writes it into `buf` and returns the destination and length.
    /// Call until it returns `None`. Runs [`handle_timeout`](Self::handle_timeout) first, so
    /// due retransmissions come out here. `buf` should hold `MSG` bytes; a message that does
    /// not fit stays queued.
    pub fn poll_transmit(&mut self, now: u64, buf: &mut [u8]) -> Option<(A, usize)> {
        self.handle_timeout(now);
        while let Some(c) = self.control.pop_front() {
            match c {
                Control::Empty { to, ty, mid } => {
                    if let Ok(w) = MessageWriter::new(buf, ty, Code::EMPTY, mid, &[]) {
                        self.stats.tx = self.stats.tx.wrapping_add(1);
                        return Some((to, w.finish()));
                    }
                    self.stats.control_dropped = self.stats.control_dropped.wrapping_add(1);
                }
                Control::Cached { to, mid } => {
                    let entry = self.dedup.get(to, mid);
                    let cached = entry.and_then(|e| e.resp.get(..e.resp_len));
                    if let Some(bytes) = cached.filter(|b| b.len() >= HEADER_LEN) {
                        if let Some(dst) = buf.get_mut(..bytes.len()) {
                            dst.copy_from_slice(bytes);
                            self.stats.tx = self.stats.tx.wrapping_add(1);
                            return Some((to, bytes.len()));
                        }
                    }
                    self.stats.control_dropped = self.stats.control_dropped.wrapping_add(1);
                }
            }
        }
        let non_lifetime = self.config.non_lifetime_ms();
        let i = self
            .slots
            .iter()
            .position(|s| s.active() && s.tx_pending && s.len <= buf.len())?;
        let slot = self.slots.get_mut(i)?;
        let bytes = slot.buf.get(..slot.len)?;
        buf.get_mut(..bytes.len())?.copy_from_slice(bytes);
        let out = (slot.peer, slot.len);
        slot.tx_pending = false;
        slot.first_tx.get_or_insert(now);
        if slot.kind == Kind::OneShot {
            self.slots.remove(i);
        } else if slot.confirmable {
            // RFC 7252 §4.2: wait the current timeout for the ACK, measured from this send.
            slot.deadline = now.saturating_add(slot.timeout);
        } else {
            // A NON request: wait NON_LIFETIME for its response.
            slot.deadline = now.saturating_add(non_lifetime);
        }
        self.stats.tx = self.stats.tx.wrapping_add(1);
        Some(out)
    }

    /// The next finished exchange: [`Event::Timeout`], [`Event::Reset`] or
    /// [`Event::Delivered`]. A finished exchange keeps its slot until its event is polled.
    pub fn poll_event(&mut self) -> Option<Event> {
        let i = self.slots.iter().position(|s| !s.active())?;
        let ev = match self.slots.get(i)?.state {
            SlotState::Finished(ev) => ev,
            SlotState::Active => return None,
        };
        self.slots.remove(i);
        Some(ev)
    }
}

impl<A, const EXCHANGES: usize, const DEDUP: usize, const MSG: usize, const RESP: usize> fmt::Debug
    for Endpoint<A, EXCHANGES, DEDUP, MSG, RESP>
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("config", &self.config)
            .field("slots", &self.slots.len())
            .field("dedup", &self.dedup.len())
            .field("control", &self.control.len())
            .field("stats", &self.stats)
            .finish()
    }
}
