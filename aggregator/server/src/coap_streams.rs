//! The stream side of [`CoapServer`]: brokers connected over CoAP over TCP or TLS (RFC 8323).
//! Their frames go through [`CoapServer::handle_datagram`] like datagrams (one complete frame
//! each) and the answers come out of [`CoapServer::poll_transmit`] for their address; the
//! driver ([`crate::serve`]) reports connections here and writes to them.

use super::CoapServer;

impl<A: Copy + Ord> CoapServer<A> {
    /// A broker's stream connection from `peer` is up; `false` when too many are (close it).
    pub fn connected(&mut self, now: u64, peer: A) -> bool {
        self.endpoint.connected(now, peer)
    }

    /// The stream connection from `peer` ended; orders waiting on it fail.
    pub fn disconnected(&mut self, now: u64, peer: A) {
        self.endpoint.disconnected(now, peer);
        self.handle_timeout(now);
    }

    /// Whether `peer` is a stream connection.
    pub fn is_stream(&self, peer: A) -> bool {
        self.endpoint.is_connected(peer)
    }

    /// A stream connection the endpoint wants closed (protocol error, failed keep-alive).
    pub fn poll_disconnect(&mut self) -> Option<A> {
        self.endpoint.poll_disconnect()
    }
}
