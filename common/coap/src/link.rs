//! [`Link`]: one CoAP interface over datagrams (RFC 7252) and streams (RFC 8323) at once, so an
//! application (the broker, the super-manager) is written once and its driver decides which
//! transports carry it.
//!
//! A link holds a datagram [`Endpoint`] and a [`StreamEndpoint`]. The peer address `A` chooses:
//! a peer with a live stream connection ([`Link::connected`]) is spoken to over the stream,
//! any other over datagrams, except that requests to a peer with no connection go to the
//! *default* transport (so a broker whose upstream is TLS queues its requests for the next
//! connection). Requests remember where they came from ([`RequestHandle::is_stream`]), and
//! stream exchange IDs never equal datagram ones, so answers and events need no routing by
//! the application.
//!
//! The driver sends what [`Link::poll_transmit`] gives to its stream connection for that
//! address when it has one, else as a datagram. (A driver with both transports on the same
//! port numbers should keep TCP and UDP peers apart: a stream connection takes precedence for
//! its address.)

use crate::config::Config;
use crate::endpoint::{Endpoint, Event, ExchangeId, Incoming, Reliability, RequestHandle, Stats};
use crate::error::{ConfigError, RequestError, RespondError, WriteError};
use crate::msg::{Code, MessageWriter};
use crate::tcp::{StreamConfig, StreamEndpoint, STREAM_ID_BIT};

/// Which transport a [`Link`] uses for requests to peers without a stream connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Transport {
    /// CoAP over UDP (RFC 7252).
    Datagram,
    /// CoAP over TCP or TLS (RFC 8323): requests wait for a connection.
    Stream,
}

/// Datagram and stream endpoints behind one interface (see the module docs).
pub struct Link<
    A,
    const EXCHANGES: usize,
    const DEDUP: usize,
    const MSG: usize,
    const RESP: usize,
    const PEERS: usize,
> {
    datagram: Endpoint<A, EXCHANGES, DEDUP, MSG, RESP>,
    stream: StreamEndpoint<A, EXCHANGES, MSG, PEERS>,
    default: Transport,
}

impl<A, const E: usize, const D: usize, const M: usize, const R: usize, const P: usize>
    core::fmt::Debug for Link<A, E, D, M, R, P>
{
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Link")
            .field("datagram", &self.datagram)
            .field("stream", &self.stream)
            .field("default", &self.default)
            .finish()
    }
}

/// The stream settings that go with datagram settings: a request waits as long as a
/// confirmable one could (`MAX_TRANSMIT_WAIT`), same token length and option policy.
pub fn stream_config(config: &Config) -> StreamConfig {
    StreamConfig {
        request_timeout_ms: config.max_transmit_wait_ms(),
        token_len: config.token_len,
        reject_unknown_critical: config.reject_unknown_critical,
        ..StreamConfig::default()
    }
}

fn add(a: Stats, b: Stats) -> Stats {
    Stats {
        rx: a.rx.wrapping_add(b.rx),
        tx: a.tx.wrapping_add(b.tx),
        retransmissions: a.retransmissions.wrapping_add(b.retransmissions),
        duplicates: a.duplicates.wrapping_add(b.duplicates),
        malformed: a.malformed.wrapping_add(b.malformed),
        timeouts: a.timeouts.wrapping_add(b.timeouts),
        resets: a.resets.wrapping_add(b.resets),
        unexpected: a.unexpected.wrapping_add(b.unexpected),
        rejected: a.rejected.wrapping_add(b.rejected),
        dedup_evictions: a.dedup_evictions.wrapping_add(b.dedup_evictions),
        control_dropped: a.control_dropped.wrapping_add(b.control_dropped),
    }
}

fn is_stream_id(id: ExchangeId) -> bool {
    id.raw() & STREAM_ID_BIT != 0
}

impl<
        A: Copy + Eq,
        const E: usize,
        const D: usize,
        const M: usize,
        const R: usize,
        const P: usize,
    > Link<A, E, D, M, R, P>
{
    /// Datagrams by default; the stream endpoint uses [`stream_config`] of `config`.
    // Inlined into the caller on a host: no frame and copy of its own for a large value (a
    // server's endpoint is ~250 KB, and unoptimised builds copied it up through each frame).
    // Firmware's endpoints are small: there the compiler decides (148 B less flash).
    #[cfg_attr(not(target_os = "none"), inline(always))]
    pub fn new(config: Config, seed: u64) -> Result<Self, ConfigError> {
        Self::with_transport(config, stream_config(&config), Transport::Datagram, seed)
    }

    /// Both endpoints, and the transport of requests to peers without a stream connection.
    // Inlined into the caller on a host: no frame and copy of its own for a large value (a
    // server's endpoint is ~250 KB, and unoptimised builds copied it up through each frame).
    // Firmware's endpoints are small: there the compiler decides (148 B less flash).
    #[cfg_attr(not(target_os = "none"), inline(always))]
    pub fn with_transport(
        config: Config,
        stream: StreamConfig,
        default: Transport,
        seed: u64,
    ) -> Result<Self, ConfigError> {
        Ok(Link {
            datagram: Endpoint::new(config, seed)?,
            stream: StreamEndpoint::new(stream, seed ^ 0x5851_f42d_4c95_7f2d)?,
            default,
        })
    }

    /// The default transport.
    pub fn default_transport(&self) -> Transport {
        self.default
    }

    /// The datagram endpoint's settings.
    pub fn config(&self) -> &Config {
        self.datagram.config()
    }

    /// The counters of both endpoints, added.
    pub fn stats(&self) -> Stats {
        add(self.datagram.stats(), self.stream.stats())
    }

    /// The datagram endpoint's counters.
    pub fn datagram_stats(&self) -> Stats {
        self.datagram.stats()
    }

    /// The stream endpoint's counters.
    pub fn stream_stats(&self) -> Stats {
        self.stream.stats()
    }

    /// Exchanges holding a slot, both transports.
    pub fn active_exchanges(&self) -> usize {
        self.datagram.active_exchanges() + self.stream.active_exchanges()
    }

    /// A stream connection to `peer` is up ([`StreamEndpoint::connected`]).
    pub fn connected(&mut self, now: u64, peer: A) -> bool {
        self.stream.connected(now, peer)
    }

    /// The stream connection to `peer` ended ([`StreamEndpoint::disconnected`]).
    pub fn disconnected(&mut self, now: u64, peer: A) {
        self.stream.disconnected(now, peer)
    }

    /// A stream connection to close ([`StreamEndpoint::poll_disconnect`]).
    pub fn poll_disconnect(&mut self) -> Option<A> {
        self.stream.poll_disconnect()
    }

    /// Whether a stream connection to `peer` is up.
    pub fn is_connected(&self, peer: A) -> bool {
        self.stream.is_connected(peer)
    }

    fn stream_for(&self, to: A) -> bool {
        self.default == Transport::Stream || self.stream.is_connected(to)
    }

    /// [`Endpoint::request`] or [`StreamEndpoint::request`] (see the module docs).
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
        if self.stream_for(to) {
            self.stream.request(now, to, reliability, code, build)
        } else {
            self.datagram.request(now, to, reliability, code, build)
        }
    }

    /// Whether the peer took request `exchange` and its answer is awaited.
    pub fn awaiting_separate(&self, exchange: ExchangeId) -> bool {
        if is_stream_id(exchange) {
            self.stream.awaiting_separate(exchange)
        } else {
            self.datagram.awaiting_separate(exchange)
        }
    }

    /// Abandons an exchange.
    pub fn cancel(&mut self, exchange: ExchangeId) -> bool {
        if is_stream_id(exchange) {
            self.stream.cancel(exchange)
        } else {
            self.datagram.cancel(exchange)
        }
    }

    /// Answers a request now, over the transport it came by.
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
        if request.is_stream() {
            self.stream.respond(now, request, code, build)
        } else {
            self.datagram.respond(now, request, code, build)
        }
    }

    /// [`Endpoint::defer`]; stream requests are not confirmable (nothing to acknowledge).
    pub fn defer(&mut self, now: u64, request: &mut RequestHandle<A>) -> Result<(), RespondError> {
        if request.is_stream() {
            self.stream.defer(now, request)
        } else {
            self.datagram.defer(now, request)
        }
    }

    /// Answers a request later, over the transport it came by.
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
        if request.is_stream() {
            self.stream.respond_separate(now, request, code, build)
        } else {
            self.datagram.respond_separate(now, request, code, build)
        }
    }

    /// One datagram, or one complete frame of a peer with a stream connection.
    pub fn handle_datagram<'a>(
        &mut self,
        now: u64,
        from: A,
        bytes: &'a [u8],
    ) -> Option<Incoming<'a, A>> {
        if self.stream.is_connected(from) {
            self.stream.handle_datagram(now, from, bytes)
        } else {
            self.datagram.handle_datagram(now, from, bytes)
        }
    }

    /// Timers of both endpoints.
    pub fn handle_timeout(&mut self, now: u64) {
        self.datagram.handle_timeout(now);
        self.stream.handle_timeout(now);
    }

    /// The earlier deadline of both endpoints.
    pub fn poll_timeout(&self) -> Option<u64> {
        match (self.datagram.poll_timeout(), self.stream.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The next message to send: a datagram, or a frame for a stream connection (the driver
    /// tells them apart by its connections, see the module docs).
    pub fn poll_transmit(&mut self, now: u64, buf: &mut [u8]) -> Option<(A, usize)> {
        self.poll_transmit_via(now, buf).map(|(to, n, _)| (to, n))
    }

    /// [`poll_transmit`](Self::poll_transmit), saying which transport it is for.
    pub fn poll_transmit_via(&mut self, now: u64, buf: &mut [u8]) -> Option<(A, usize, Transport)> {
        if let Some((to, n)) = self.stream.poll_transmit(now, buf) {
            return Some((to, n, Transport::Stream));
        }
        self.datagram
            .poll_transmit(now, buf)
            .map(|(to, n)| (to, n, Transport::Datagram))
    }

    /// The next finished exchange of either endpoint.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.datagram
            .poll_event()
            .or_else(|| self.stream.poll_event())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type L = Link<u8, 8, 8, 1152, 64, 4>;

    #[test]
    fn peers_with_a_connection_go_over_the_stream() {
        let mut client = L::new(Config::default(), 1).unwrap();
        let mut server = L::new(Config::default(), 2).unwrap();
        let mut buf = [0u8; 1152];
        // Datagram peer 3 and stream peer 2 at once.
        client.connected(0, 2);
        server.connected(0, 1);
        let s = client
            .request(0, 2, Reliability::Confirmable, Code::GET, |w| {
                w.uri_path("a")
            })
            .unwrap();
        let d = client
            .request(0, 3, Reliability::Confirmable, Code::GET, |w| {
                w.uri_path("b")
            })
            .unwrap();
        assert_ne!(s, d);
        let mut out = std::vec::Vec::new();
        while let Some((to, n, via)) = client.poll_transmit_via(0, &mut buf) {
            out.push((to, via, buf[..n].to_vec()));
        }
        assert_eq!(out.len(), 3, "CSM, the stream request, the datagram");
        assert!(out
            .iter()
            .any(|(to, via, _)| *to == 3 && *via == Transport::Datagram));
        for (_, _, frame) in out.iter().filter(|(to, _, _)| *to == 2) {
            if let Some(Incoming::Request(r)) = server.handle_datagram(0, 1, frame) {
                assert!(r.handle.is_stream());
                let h = r.handle;
                server
                    .respond(0, &h, Code::CONTENT, |w| w.payload(b"x"))
                    .unwrap();
            }
        }
        let mut answered = false;
        while let Some((to, n, via)) = server.poll_transmit_via(0, &mut buf) {
            assert_eq!((to, via), (1, Transport::Stream));
            if let Some(Incoming::Response { exchange, message }) =
                client.handle_datagram(0, 2, &buf[..n])
            {
                assert_eq!(exchange, s);
                assert_eq!(message.payload(), b"x");
                answered = true;
            }
        }
        assert!(answered);
        client.disconnected(1, 2);
        assert_eq!(client.poll_event(), None, "the stream exchange finished");
    }
}
