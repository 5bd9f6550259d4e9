//! The CoAP face of the super-manager, sans-IO: datagrams in, datagrams out, over the shared
//! [`qos_coap`] endpoint. Resources:
//!
//! - `POST /u` (Content-Format 60): an uplink batch; answered 2.04 with the cumulative ack,
//!   4.00 with a diagnostic payload when the batch is malformed (the edge drops it and counts
//!   the loss), 5.03 when the store failed (the edge sends it again);
//! - `GET /.well-known/core` (RFC 6690): the resource list.
//!
//! The UDP driver is [`crate::serve::start_ingest`]; tests drive this type directly.

use qos_coap::{
    content_format, option, Code, Config as CoapConfig, ConfigError, Endpoint, Incoming, Request,
};
use qos_wire::uplink::UPLINK_PATH;

use crate::config::ReliabilityConfig;
use crate::ingest::Ingest;
use crate::stats::RejectReason;

/// Largest CoAP message accepted (RFC 7252 §4.6); larger datagrams are refused as oversized.
pub const MAX_MESSAGE: usize = 1152;
/// The resources, in link format.
pub const WELL_KNOWN_CORE: &str = "</u>;rt=\"qos.uplink\";ct=60";

/// The endpoint of the super-manager: 64 concurrent exchanges, 1024 deduplication entries
/// (each remembering up to 64 bytes of response, enough for an ack).
pub type ServerEndpoint<A> = Endpoint<A, 64, 1024, MAX_MESSAGE, 64>;

/// Map the TOML reliability settings to the endpoint's.
pub fn coap_config(r: &ReliabilityConfig) -> CoapConfig {
    CoapConfig::with_reliability(r.ack_timeout_ms, r.ack_random_factor, r.max_retransmit)
}

/// CoAP server of the ingest.
pub struct CoapServer<A> {
    endpoint: Box<ServerEndpoint<A>>,
    ingest: Ingest,
}

impl<A: Copy + Eq> CoapServer<A> {
    /// A server handing batches to `ingest`.
    pub fn new(config: CoapConfig, ingest: Ingest, seed: u64) -> Result<Self, ConfigError> {
        Ok(CoapServer {
            endpoint: Box::new(ServerEndpoint::new(config, seed)?),
            ingest,
        })
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
        if bytes.len() > MAX_MESSAGE {
            stats.reject(RejectReason::Oversized);
            return;
        }
        let malformed_before = self.endpoint.stats().malformed;
        let incoming = self.endpoint.handle_datagram(now, from, bytes);
        if self.endpoint.stats().malformed != malformed_before {
            stats.reject(RejectReason::Malformed);
        }
        let Some(Incoming::Request(req)) = incoming else {
            return;
        };
        let (code, cf, body): (Code, Option<u16>, Vec<u8>) = self.route(&req, unix_ms);
        let handle = req.handle;
        let _ = self.endpoint.respond(now, &handle, code, |w| {
            if let Some(cf) = cf {
                w.uint_option(option::CONTENT_FORMAT, u32::from(cf))?;
            }
            w.payload(&body)
        });
    }

    fn route(&mut self, req: &Request<'_, A>, unix_ms: u64) -> (Code, Option<u16>, Vec<u8>) {
        let m = &req.message;
        let stats = self.ingest.stats().clone();
        if m.path_is(UPLINK_PATH) {
            if m.code() != Code::POST {
                return (Code::METHOD_NOT_ALLOWED, None, b"POST only".to_vec());
            }
            if m.content_format() != Some(content_format::CBOR) {
                stats.reject(RejectReason::BadContentFormat);
                return (
                    Code::UNSUPPORTED_CONTENT_FORMAT,
                    None,
                    b"Content-Format 60 (CBOR) expected".to_vec(),
                );
            }
            return match self.ingest.handle_batch(m.payload(), unix_ms) {
                Ok(ack) => {
                    let mut buf = [0u8; 16];
                    match ack.encode(&mut buf) {
                        Ok(n) => (Code::CHANGED, Some(content_format::CBOR), buf[..n].to_vec()),
                        Err(_) => (Code::INTERNAL_SERVER_ERROR, None, Vec::new()),
                    }
                }
                Err(r) if r.is_transient() => (
                    Code::SERVICE_UNAVAILABLE,
                    None,
                    b"store unavailable".to_vec(),
                ),
                Err(r) => (Code::BAD_REQUEST, None, r.detail.into_bytes()),
            };
        }
        if m.path_is(".well-known/core") {
            if m.code() != Code::GET {
                return (Code::METHOD_NOT_ALLOWED, None, b"GET only".to_vec());
            }
            return (
                Code::CONTENT,
                Some(content_format::LINK_FORMAT),
                WELL_KNOWN_CORE.as_bytes().to_vec(),
            );
        }
        stats.reject(RejectReason::UnknownResource);
        (Code::NOT_FOUND, None, Vec::new())
    }

    /// Next datagram to send.
    pub fn poll_transmit(&mut self, now: u64, buf: &mut [u8]) -> Option<(A, usize)> {
        self.endpoint.poll_transmit(now, buf)
    }

    /// When to call [`CoapServer::poll_transmit`] again at the latest.
    pub fn poll_timeout(&self) -> Option<u64> {
        self.endpoint.poll_timeout()
    }

    /// Advance timers (retransmissions of separate responses, dedup expiry).
    pub fn handle_timeout(&mut self, now: u64) {
        self.endpoint.handle_timeout(now);
        while self.endpoint.poll_event().is_some() {}
    }
}
