//! CoAP over reliable transports (TCP and TLS, RFC 8323), sans-IO: the signalling messages and
//! a [`StreamEndpoint`] with the same request/response interface as the datagram
//! [`Endpoint`](crate::Endpoint), so an application runs unchanged over either.
//!
//! The frame codec is [`MessageWriter::new_frame`] / [`Message::parse_frame`] /
//! [`frame_len`](crate::msg::frame_len): the same option and payload code as datagrams, with the
//! RFC 8323 §3.2 head (`Len | TKL`, extended length, code, token; no type, no message ID).
//!
//! # What the endpoint does
//! - Connections are identified by the driver's peer type `A` (a socket address, a connection
//!   number). The driver reports [`StreamEndpoint::connected`] when the TCP connection (and TLS
//!   handshake) is up and [`StreamEndpoint::disconnected`] when it ends; it passes every
//!   complete frame to [`StreamEndpoint::handle_datagram`] (the name is shared with the datagram
//!   endpoint: here it takes one frame) and writes what [`StreamEndpoint::poll_transmit`] gives.
//! - CSM (7.01, RFC 8323 §5.3) is the first frame sent on every connection, announcing
//!   Max-Message-Size; the peer's CSM must be the first frame received, else the connection is
//!   aborted (7.05). Until the peer's CSM arrives, frames larger than 1152 bytes are held back.
//! - Ping (7.02) is answered with Pong (7.03); after `keepalive_ms` without receiving anything
//!   the endpoint pings, and when nothing came back `keepalive_ms` later the connection is
//!   declared failed. Release (7.04) and Abort (7.05) from the peer close the connection.
//! - Requests are matched to responses by token and connection; nothing is retransmitted (the
//!   transport is reliable); a request not answered within `request_timeout_ms` ends in
//!   [`Event::Timeout`]; every exchange open on a failed connection ends in
//!   [`Event::Aborted`]. A request made while the connection is down waits for it (within its
//!   timeout).
//! - [`StreamEndpoint::poll_disconnect`] names the connections the driver must close
//!   (after an Abort, a failed keep-alive, a Release).

use heapless::{Deque, Vec};

use crate::endpoint::{Event, ExchangeId, Incoming, Request, RequestHandle, Rng, Stats};
use crate::error::{ConfigError, RequestError, RespondError, WriteError};
use crate::msg::{Code, Message, MessageWriter, Token};
use crate::option;

/// 7.01 CSM: capabilities and settings (RFC 8323 §5.3).
pub const CSM: Code = Code::new(7, 1);
/// 7.02 Ping (RFC 8323 §5.4).
pub const PING: Code = Code::new(7, 2);
/// 7.03 Pong (RFC 8323 §5.4).
pub const PONG: Code = Code::new(7, 3);
/// 7.04 Release (RFC 8323 §5.5).
pub const RELEASE: Code = Code::new(7, 4);
/// 7.05 Abort (RFC 8323 §5.6).
pub const ABORT: Code = Code::new(7, 5);
/// CSM option 2: Max-Message-Size (uint).
pub const OPT_MAX_MESSAGE_SIZE: u16 = 2;
/// CSM option 4: Block-Wise-Transfer (empty).
pub const OPT_BLOCK_WISE: u16 = 4;
/// Ping/Pong option 2: Custody (empty).
pub const OPT_CUSTODY: u16 = 2;
/// Abort option 2: Bad-CSM-Option (uint).
pub const OPT_BAD_CSM_OPTION: u16 = 2;
/// The Max-Message-Size assumed until the peer's CSM says otherwise (RFC 8323 §5.3.1).
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 1152;

/// The bit set in every [`ExchangeId`] of a [`StreamEndpoint`].
pub(crate) const STREAM_ID_BIT: u32 = 1 << 31;

/// Settings of a [`StreamEndpoint`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct StreamConfig {
    /// How long a request waits for its response, ms (default 30 000).
    pub request_timeout_ms: u64,
    /// Idle time after which the endpoint pings, and the time it then waits for anything to
    /// come back before declaring the connection failed, ms; 0: no keep-alive (default 30 000).
    pub keepalive_ms: u64,
    /// Token length of new requests, 0 to 8 (default 4).
    pub token_len: u8,
    /// Answer requests carrying unknown critical options with 4.02 (default `true`).
    pub reject_unknown_critical: bool,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            request_timeout_ms: 30_000,
            keepalive_ms: 30_000,
            token_len: 4,
            reject_unknown_critical: true,
        }
    }
}

impl StreamConfig {
    /// Checks the invariants the endpoint relies on.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if usize::from(self.token_len) > crate::msg::MAX_TOKEN_LEN {
            return Err(ConfigError::TokenLength);
        }
        if self.request_timeout_ms == 0 {
            return Err(ConfigError::AckTimeout);
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotKind {
    Request,
    Response,
}

struct Slot<A, const MSG: usize> {
    id: ExchangeId,
    peer: A,
    kind: SlotKind,
    token: Token,
    buf: [u8; MSG],
    len: usize,
    tx_pending: bool,
    deadline: u64,
    finished: Option<Event>,
}

#[derive(Debug, Clone, Copy)]
struct Conn<A> {
    peer: A,
    /// Our CSM went out.
    csm_sent: bool,
    /// The peer's Max-Message-Size, once its CSM arrived.
    peer_max: Option<usize>,
    last_rx: u64,
    /// A keep-alive ping went out at this time and nothing came back since.
    ping_at: Option<u64>,
    /// Failed or released: waiting for the driver to close it; nothing more is sent on it
    /// (but an Abort) and nothing more is taken from it.
    closing: bool,
}

#[derive(Debug, Clone, Copy)]
enum Control<A> {
    Pong { to: A, token: Token },
    Ping { to: A, token: Token },
    Abort { to: A, bad_option: Option<u16> },
}

/// A CoAP endpoint over reliable byte streams (RFC 8323). `EXCHANGES` slots of `MSG` bytes
/// each hold outstanding requests and responses waiting to be written; `PEERS` connections at
/// most. No allocation.
pub struct StreamEndpoint<A, const EXCHANGES: usize, const MSG: usize, const PEERS: usize> {
    config: StreamConfig,
    rng: Rng,
    next_id: u32,
    conns: Vec<Conn<A>, PEERS>,
    slots: Vec<Slot<A, MSG>, EXCHANGES>,
    control: Deque<Control<A>, 16>,
    close: Deque<A, PEERS>,
    stats: Stats,
    last_now: u64,
}

impl<A, const EXCHANGES: usize, const MSG: usize, const PEERS: usize> core::fmt::Debug
    for StreamEndpoint<A, EXCHANGES, MSG, PEERS>
{
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("StreamEndpoint")
            .field("config", &self.config)
            .field("connections", &self.conns.len())
            .field("slots", &self.slots.len())
            .field("stats", &self.stats)
            .finish()
    }
}

impl<A: Copy + Eq, const EXCHANGES: usize, const MSG: usize, const PEERS: usize>
    StreamEndpoint<A, EXCHANGES, MSG, PEERS>
{
    /// A new endpoint; `seed` drives the tokens.
    // Inlined into the caller on a host: no frame and copy of its own for a large value (a
    // server's endpoint is ~250 KB, and unoptimised builds copied it up through each frame).
    // Firmware's endpoints are small: there the compiler decides (148 B less flash).
    #[cfg_attr(not(target_os = "none"), inline(always))]
    pub fn new(config: StreamConfig, seed: u64) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(StreamEndpoint {
            config,
            rng: Rng(seed),
            next_id: 0,
            conns: Vec::new(),
            slots: Vec::new(),
            control: Deque::new(),
            close: Deque::new(),
            stats: Stats::default(),
            last_now: 0,
        })
    }

    /// The settings.
    pub fn config(&self) -> &StreamConfig {
        &self.config
    }

    /// The counters (`retransmissions`, `duplicates` and `dedup_evictions` stay 0).
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Exchanges holding a slot.
    pub fn active_exchanges(&self) -> usize {
        self.slots.len()
    }

    /// Whether a connection to `peer` is up.
    pub fn is_connected(&self, peer: A) -> bool {
        self.conns.iter().any(|c| c.peer == peer)
    }

    /// A connection to `peer` is up and not closing.
    fn open(&self, peer: A) -> bool {
        self.conns.iter().any(|c| c.peer == peer && !c.closing)
    }

    /// The peer's Max-Message-Size, once its CSM arrived.
    pub fn peer_max_message_size(&self, peer: A) -> Option<usize> {
        self.conns
            .iter()
            .find(|c| c.peer == peer)
            .and_then(|c| c.peer_max)
    }

    /// A connection to `peer` is up (TCP connected, TLS handshake done): our CSM goes out
    /// first. Returns `false` when `PEERS` connections are up already (the driver should close
    /// it). A connection already known is restarted (as after `disconnected`).
    pub fn connected(&mut self, now: u64, peer: A) -> bool {
        self.last_now = self.last_now.max(now);
        if self.is_connected(peer) {
            self.disconnected(now, peer);
        }
        self.conns
            .push(Conn {
                peer,
                csm_sent: false,
                peer_max: None,
                last_rx: now,
                ping_at: None,
                closing: false,
            })
            .is_ok()
    }

    /// The connection to `peer` ended: every exchange open on it ends in [`Event::Aborted`];
    /// responses not written yet are dropped; requests not sent yet wait for the next
    /// connection.
    pub fn disconnected(&mut self, now: u64, peer: A) {
        self.last_now = self.last_now.max(now);
        self.conns.retain(|c| c.peer != peer);
        self.control.retain(|c| match c {
            Control::Pong { to, .. } | Control::Ping { to, .. } | Control::Abort { to, .. } => {
                *to != peer
            }
        });
        self.slots
            .retain(|s| !(s.peer == peer && s.kind == SlotKind::Response));
        for s in self.slots.iter_mut() {
            if s.peer == peer && s.finished.is_none() && !s.tx_pending {
                s.finished = Some(Event::Aborted(s.id));
            }
        }
    }

    /// A connection the endpoint wants closed (protocol error, failed keep-alive, Release or
    /// Abort from the peer); the driver closes it and calls
    /// [`disconnected`](Self::disconnected).
    pub fn poll_disconnect(&mut self) -> Option<A> {
        self.close.pop_front()
    }

    fn fail_connection(&mut self, peer: A, abort: bool, bad_option: Option<u16>) {
        let Some(conn) = self.conns.iter_mut().find(|c| c.peer == peer) else {
            return;
        };
        if conn.closing {
            return;
        }
        conn.closing = true;
        if abort {
            self.control.retain(|c| match c {
                Control::Pong { to, .. } | Control::Ping { to, .. } => *to != peer,
                Control::Abort { .. } => true,
            });
            let _ = self.control.push_back(Control::Abort {
                to: peer,
                bad_option,
            });
        }
        if !self.close.iter().any(|p| *p == peer) {
            let _ = self.close.push_back(peer);
        }
    }

    fn fresh_token(&mut self) -> Token {
        let bytes = self.rng.next_u64().to_be_bytes();
        let n = usize::from(self.config.token_len).min(bytes.len());
        Token::from_slice(bytes.get(..n).unwrap_or(&[])).unwrap_or_default()
    }

    /// Stream exchange IDs have the top bit set, so that they never equal a datagram
    /// endpoint's (see [`crate::link::Link`]).
    fn next_exchange(&mut self) -> ExchangeId {
        let id = ExchangeId::from_raw(STREAM_ID_BIT | self.next_id);
        self.next_id = self.next_id.wrapping_add(1) & !STREAM_ID_BIT;
        id
    }

    fn push_slot<F>(
        &mut self,
        peer: A,
        kind: SlotKind,
        code: Code,
        token: Token,
        deadline: u64,
        build: F,
    ) -> Result<ExchangeId, WriteError>
    where
        F: FnOnce(&mut MessageWriter<'_>) -> Result<(), WriteError>,
    {
        let mut buf = [0u8; MSG];
        let mut w = MessageWriter::new_frame(&mut buf, code, token.as_slice())?;
        build(&mut w)?;
        let len = w.finish();
        let id = self.next_exchange();
        self.slots
            .push(Slot {
                id,
                peer,
                kind,
                token,
                buf,
                len,
                tx_pending: true,
                deadline,
                finished: None,
            })
            .map_err(|_| WriteError::BufferTooSmall)?;
        Ok(id)
    }

    /// Sends a request to `to` (the reliability is ignored: the stream is reliable). It goes
    /// out when the connection is up, and ends in a response, [`Event::Timeout`] after
    /// `request_timeout_ms`, or [`Event::Aborted`] when the connection fails first.
    pub fn request<F>(
        &mut self,
        now: u64,
        to: A,
        _reliability: crate::Reliability,
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
        if self.slots.is_full() {
            return Err(RequestError::NoSlot);
        }
        let token = self.fresh_token();
        let deadline = now.saturating_add(self.config.request_timeout_ms);
        Ok(self.push_slot(to, SlotKind::Request, code, token, deadline, build)?)
    }

    /// Whether request `exchange` went out on a live connection and its answer is awaited.
    pub fn awaiting_separate(&self, exchange: ExchangeId) -> bool {
        self.slots.iter().any(|s| {
            s.id == exchange && s.kind == SlotKind::Request && s.finished.is_none() && !s.tx_pending
        })
    }

    /// Abandons an exchange: nothing more is sent and no event is reported.
    pub fn cancel(&mut self, exchange: ExchangeId) -> bool {
        match self.slots.iter().position(|s| s.id == exchange) {
            Some(i) => {
                self.slots.remove(i);
                true
            }
            None => false,
        }
    }

    /// Answers a request (its token is echoed).
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
        self.respond_separate(now, &mut request.clone(), code, build)
            .map(|_| ())
    }

    /// Nothing to do over a stream (there is no empty ACK): always
    /// [`RespondError::NotConfirmable`], as stream requests are not confirmable.
    pub fn defer(
        &mut self,
        _now: u64,
        _request: &mut RequestHandle<A>,
    ) -> Result<(), RespondError> {
        Err(RespondError::NotConfirmable)
    }

    /// Answers a request later; over a stream the same as [`respond`](Self::respond). No
    /// event follows (the stream delivers it or the connection fails).
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
        if !self.is_connected(request.peer()) {
            // The requester is gone: nobody to answer.
            return Err(RespondError::NoSlot);
        }
        if self.slots.is_full() {
            return Err(RespondError::NoSlot);
        }
        let token = Token::from_slice(request.token()).unwrap_or_default();
        Ok(self.push_slot(
            request.peer(),
            SlotKind::Response,
            code,
            token,
            u64::MAX,
            build,
        )?)
    }

    /// Processes one complete frame received on the connection to `from`.
    pub fn handle_datagram<'a>(
        &mut self,
        now: u64,
        from: A,
        frame: &'a [u8],
    ) -> Option<Incoming<'a, A>> {
        self.stats.rx = self.stats.rx.wrapping_add(1);
        self.handle_timeout(now);
        let Some(ci) = self.conns.iter().position(|c| c.peer == from && !c.closing) else {
            self.stats.unexpected = self.stats.unexpected.wrapping_add(1);
            return None;
        };
        let msg = match Message::parse_frame(frame) {
            Ok(m) => m,
            Err(_) => {
                // A malformed frame leaves the stream unsynchronised: abort (RFC 8323 §5.6).
                self.stats.malformed = self.stats.malformed.wrapping_add(1);
                self.fail_connection(from, true, None);
                return None;
            }
        };
        let conn = self.conns.get_mut(ci)?;
        conn.last_rx = now;
        conn.ping_at = None;
        let code = msg.code();
        if conn.peer_max.is_none() && code != CSM {
            // RFC 8323 §4.3: the CSM must be the first message.
            self.stats.malformed = self.stats.malformed.wrapping_add(1);
            self.fail_connection(from, true, None);
            return None;
        }
        if code.class() == 7 {
            self.signal(from, ci, &msg);
            return None;
        }
        if code.is_empty() {
            // RFC 8323 §3.4: empty messages are ignored.
            return None;
        }
        if code.is_request() {
            let handle = RequestHandle::stream(from, Token::from_slice(msg.token())?);
            if self.config.reject_unknown_critical && msg.unknown_critical_option().is_some() {
                self.stats.rejected = self.stats.rejected.wrapping_add(1);
                let _ = self.respond(now, &handle, Code::BAD_OPTION, |_| Ok(()));
                return None;
            }
            return Some(Incoming::Request(Request {
                from,
                message: msg,
                duplicate: false,
                handle,
            }));
        }
        if !code.is_response() {
            self.stats.malformed = self.stats.malformed.wrapping_add(1);
            return None;
        }
        let found = self.slots.iter().position(|s| {
            s.kind == SlotKind::Request
                && s.finished.is_none()
                && !s.tx_pending
                && s.peer == from
                && s.token.as_slice() == msg.token()
        });
        let Some(i) = found else {
            self.stats.unexpected = self.stats.unexpected.wrapping_add(1);
            return None;
        };
        let exchange = self.slots.remove(i).id;
        Some(Incoming::Response {
            exchange,
            message: msg,
        })
    }

    fn signal(&mut self, from: A, ci: usize, msg: &Message<'_>) {
        let code = msg.code();
        if code == CSM {
            let size = msg
                .uint_option(OPT_MAX_MESSAGE_SIZE)
                .map(|v| v as usize)
                .unwrap_or(DEFAULT_MAX_MESSAGE_SIZE);
            // Unknown critical (odd) CSM options are a reason to abort (RFC 8323 §5.3).
            let bad = msg.options().map(|(n, _)| n).find(|n| {
                option::is_critical(*n) && *n != OPT_MAX_MESSAGE_SIZE && *n != OPT_BLOCK_WISE
            });
            if let Some(n) = bad {
                self.stats.malformed = self.stats.malformed.wrapping_add(1);
                self.fail_connection(from, true, Some(n));
                return;
            }
            if let Some(c) = self.conns.get_mut(ci) {
                c.peer_max = Some(size);
            }
        } else if code == PING {
            let token = Token::from_slice(msg.token()).unwrap_or_default();
            if self
                .control
                .push_back(Control::Pong { to: from, token })
                .is_err()
            {
                self.stats.control_dropped = self.stats.control_dropped.wrapping_add(1);
            }
        } else if code == PONG {
            // last_rx and ping_at were updated for any frame.
        } else if code == RELEASE || code == ABORT {
            self.fail_connection(from, false, None);
        } else {
            // Unknown signalling codes: ignore (RFC 8323 §5.1 lists no more).
            self.stats.unexpected = self.stats.unexpected.wrapping_add(1);
        }
    }

    /// Request timeouts and keep-alive.
    pub fn handle_timeout(&mut self, now: u64) {
        self.last_now = self.last_now.max(now);
        for s in self.slots.iter_mut() {
            if s.kind == SlotKind::Request && s.finished.is_none() && now >= s.deadline {
                s.finished = Some(Event::Timeout(s.id));
                self.stats.timeouts = self.stats.timeouts.wrapping_add(1);
            }
        }
        let ka = self.config.keepalive_ms;
        if ka == 0 {
            return;
        }
        for i in 0..self.conns.len() {
            let Some(c) = self.conns.get(i).copied() else {
                break;
            };
            if c.closing {
                continue;
            }
            match c.ping_at {
                Some(at) if now >= at.saturating_add(ka) => {
                    self.fail_connection(c.peer, true, None);
                }
                None if c.csm_sent && now >= c.last_rx.saturating_add(ka) => {
                    let token = self.fresh_token();
                    if self
                        .control
                        .push_back(Control::Ping { to: c.peer, token })
                        .is_ok()
                    {
                        if let Some(c) = self.conns.get_mut(i) {
                            c.ping_at = Some(now);
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// When to call [`handle_timeout`](Self::handle_timeout) (or `poll_transmit`) next.
    pub fn poll_timeout(&self) -> Option<u64> {
        let ready = !self.control.is_empty()
            || !self.close.is_empty()
            || self.conns.iter().any(|c| !c.csm_sent)
            || self
                .slots
                .iter()
                .any(|s| s.finished.is_some() || (s.tx_pending && self.open(s.peer)));
        if ready {
            return Some(self.last_now);
        }
        let ka = self.config.keepalive_ms;
        let keepalive = self
            .conns
            .iter()
            .filter(|_| ka > 0)
            .map(|c| match c.ping_at {
                Some(at) => at.saturating_add(ka),
                None => c.last_rx.saturating_add(ka),
            });
        self.slots
            .iter()
            .filter(|s| s.kind == SlotKind::Request)
            .map(|s| s.deadline)
            .chain(keepalive)
            .min()
    }

    /// The next frame to write: into `buf`, returning the connection and the length.
    pub fn poll_transmit(&mut self, now: u64, buf: &mut [u8]) -> Option<(A, usize)> {
        self.handle_timeout(now);
        // Our CSM first on every new connection.
        if let Some(c) = self.conns.iter_mut().find(|c| !c.csm_sent) {
            let mut w = MessageWriter::new_frame(buf, CSM, &[]).ok()?;
            w.uint_option(OPT_MAX_MESSAGE_SIZE, MSG as u32).ok()?;
            c.csm_sent = true;
            self.stats.tx = self.stats.tx.wrapping_add(1);
            return Some((c.peer, w.finish()));
        }
        while let Some(c) = self.control.pop_front() {
            let (to, written) = match c {
                Control::Pong { to, token } => (to, signal_frame(buf, PONG, token, None)),
                Control::Ping { to, token } => (to, signal_frame(buf, PING, token, None)),
                Control::Abort { to, bad_option } => (
                    to,
                    signal_frame(
                        buf,
                        ABORT,
                        Token::default(),
                        bad_option.map(|n| (OPT_BAD_CSM_OPTION, u32::from(n))),
                    ),
                ),
            };
            if let Some(n) = written {
                self.stats.tx = self.stats.tx.wrapping_add(1);
                return Some((to, n));
            }
            self.stats.control_dropped = self.stats.control_dropped.wrapping_add(1);
        }
        let conns = &self.conns;
        let i = self.slots.iter().position(|s| {
            s.tx_pending
                && s.finished.is_none()
                && s.len <= buf.len()
                && conns.iter().any(|c| {
                    c.peer == s.peer
                        && c.csm_sent
                        && !c.closing
                        && s.len <= c.peer_max.unwrap_or(DEFAULT_MAX_MESSAGE_SIZE)
                })
        })?;
        let slot = self.slots.get_mut(i)?;
        let bytes = slot.buf.get(..slot.len)?;
        buf.get_mut(..bytes.len())?.copy_from_slice(bytes);
        let out = (slot.peer, slot.len);
        slot.tx_pending = false;
        if slot.kind == SlotKind::Response {
            self.slots.remove(i);
        }
        self.stats.tx = self.stats.tx.wrapping_add(1);
        Some(out)
    }

    /// The next finished exchange: [`Event::Timeout`] or [`Event::Aborted`].
    pub fn poll_event(&mut self) -> Option<Event> {
        let i = self.slots.iter().position(|s| s.finished.is_some())?;
        self.slots.remove(i).finished
    }
}

fn signal_frame(
    buf: &mut [u8],
    code: Code,
    token: Token,
    option: Option<(u16, u32)>,
) -> Option<usize> {
    let mut w = MessageWriter::new_frame(buf, code, token.as_slice()).ok()?;
    if let Some((n, v)) = option {
        w.uint_option(n, v).ok()?;
    }
    Some(w.finish())
}

#[cfg(test)]
mod tests;
