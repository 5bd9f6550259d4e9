//! The transport seam of the [`Broker`]: the broker logic talks to a [`qos_coap::Link`] on
//! each side and never knows whether a message travels as a UDP datagram (RFC 7252) or as a
//! frame on a TCP or TLS connection (RFC 8323).
//!
//! What the driver does for each transport:
//!
//! | | datagrams | streams (TCP, TLS) |
//! |---|---|---|
//! | in | `handle_*(…, from, datagram)` | `handle_*(…, from, frame)`, one complete frame ([`qos_coap::msg::frame_len`]) |
//! | out | `poll_transmit_*` → `send_to` | `poll_transmit_*` → write to the connection of that address |
//! | connections | — | [`Broker::upstream_connected`] / [`Broker::upstream_disconnected`], [`Broker::downstream_connected`] / [`Broker::downstream_disconnected`] |
//! | closing | — | [`Broker::poll_upstream_disconnect`], [`Broker::poll_downstream_disconnect`] |
//!
//! Upstream, one transport is chosen ([`Broker::with_upstream_transport`]); with a stream,
//! requests made while the connection is down wait for it, and every exchange open on a
//! connection that fails ends like a timeout: a batch is sent again after the back-off, a
//! relayed `/c` request is answered 5.04 when its time runs out. Nothing leaves the queue
//! before the upstream's 2.xx, whichever the transport.
//!
//! Downstream, both at once: edges over UDP and child brokers (or edges) over streams; the
//! answer goes back the way the request came.

use qos_coap::{ConfigError, StreamConfig, Transport};

use super::{boxed, Broker, BrokerConfig, DownstreamEndpoint, UpstreamEndpoint};
use crate::queue::Queue;

impl<A: Copy + Eq> Broker<A> {
    /// A broker whose upstream speaks `transport` (`stream` gives the stream settings; see
    /// [`qos_coap::link::stream_config`] for values that match `config.upstream`). Downstream
    /// it takes datagrams and, from connections its driver reports, streams.
    pub fn with_upstream_transport(
        config: BrokerConfig,
        transport: Transport,
        stream: StreamConfig,
        upstream: A,
        queue: Box<dyn Queue>,
        seed: u64,
    ) -> Result<Self, ConfigError> {
        let mut broker = Broker::new(config, upstream, queue, seed)?;
        broker.up = boxed(|| {
            UpstreamEndpoint::with_transport(
                config.upstream_coap(),
                stream,
                transport,
                seed ^ 0x9e37_79b9_7f4a_7c15,
            )
        })?;
        broker.down = boxed(|| {
            DownstreamEndpoint::with_transport(config.downstream, stream, Transport::Datagram, seed)
        })?;
        Ok(broker)
    }

    /// The upstream's address.
    pub fn upstream_address(&self) -> A {
        self.upstream
    }

    /// The upstream's transport for requests.
    pub fn upstream_transport(&self) -> Transport {
        self.up.default_transport()
    }

    /// The stream connection to the upstream is up (TLS handshake done); the broker's CSM goes
    /// out first, then whatever waited.
    pub fn upstream_connected(&mut self, now: u64) {
        let upstream = self.upstream;
        self.up.connected(now, upstream);
        self.poll(now);
    }

    /// The stream connection to the upstream ended: exchanges on it fail (batches are sent
    /// again after the back-off, on the next connection).
    pub fn upstream_disconnected(&mut self, now: u64) {
        let upstream = self.upstream;
        self.up.disconnected(now, upstream);
        self.poll(now);
    }

    /// Whether the upstream stream connection is up.
    pub fn upstream_is_connected(&self) -> bool {
        self.up.is_connected(self.upstream)
    }

    /// `true` when the broker wants the upstream connection closed (a protocol error, an
    /// Abort or Release from the upstream, a failed keep-alive); the driver closes it, calls
    /// [`upstream_disconnected`](Self::upstream_disconnected) and connects again.
    pub fn poll_upstream_disconnect(&mut self) -> bool {
        self.up.poll_disconnect().is_some()
    }

    /// A stream connection from `peer` (a child broker, an edge) is up. `false` when too
    /// many are: close it.
    pub fn downstream_connected(&mut self, now: u64, peer: A) -> bool {
        let ok = self.down.connected(now, peer);
        self.poll(now);
        ok
    }

    /// The stream connection from `peer` ended.
    pub fn downstream_disconnected(&mut self, now: u64, peer: A) {
        self.down.disconnected(now, peer);
        self.poll(now);
    }

    /// Whether `peer` is a downstream stream connection (its frames and answers go over it).
    pub fn downstream_is_stream(&self, peer: A) -> bool {
        self.down.is_connected(peer)
    }

    /// A downstream stream connection the broker wants closed.
    pub fn poll_downstream_disconnect(&mut self) -> Option<A> {
        self.down.poll_disconnect()
    }
}
