//! A sans-IO CoAP (RFC 7252) endpoint for the QoS system: `no_std`, no allocation, no clock,
//! no sockets, no `unsafe`.
//!
//! - [`msg`]: the message codec. [`Message::parse`] validates a datagram once and gives a
//!   zero-copy view whose accessors cannot fail; [`MessageWriter`] writes into a caller's
//!   buffer and returns errors instead of panicking.
//! - [`option`]: option numbers, uint values, the Block1/Block2 value (RFC 7959), content
//!   formats.
//! - [`block`]: block-wise transfer (RFC 7959): Block1 reassembly with bounded per-peer
//!   state and timeouts, Block2 slicing, and the client-side Block1 sender and Block2 fetch.
//! - [`config`]: the transmission parameters of RFC 7252 §4.8 and their derived values.
//! - `tcp` (feature `tcp`): CoAP over TCP and TLS (RFC 8323): signalling (CSM, Ping/Pong,
//!   Release, Abort) and a stream endpoint with the same interface as [`Endpoint`]. The frame
//!   codec itself ([`MessageWriter::new_frame`], [`Message::parse_frame`], [`msg::frame_len`])
//!   is always built: it shares the option and payload code of datagrams.
//! - `link` (feature `tcp`): `Link`, datagram and stream endpoints behind
//!   one interface, so applications are transport-neutral.
//! - [`endpoint`]: the state machine: confirmable and non-confirmable requests, piggybacked
//!   and separate responses, retransmission with exponential back-off, NSTART, tokens,
//!   deduplication with a response cache, pings and resets.
//!
//! # Driving an endpoint
//! Time is passed in as milliseconds (`now: u64`, any epoch, monotonic). Randomness (message
//! IDs, tokens, retransmission jitter) comes from a seeded PRNG, so runs are reproducible.
//!
//! ```
//! use qos_coap::{Code, Endpoint, Incoming, Reliability, Config};
//!
//! // Peers are addressed by any `Copy + Eq` type: a `SocketAddr` on hosts, an IP endpoint on
//! // firmware, a small integer here.
//! type Ep = Endpoint<u8, 4, 8, 256>;
//! let mut client = Ep::new(Config::default(), 1).unwrap();
//! let mut server = Ep::new(Config::default(), 2).unwrap();
//! let (c_addr, s_addr) = (1u8, 2u8);
//! let mut now = 0u64;
//! let mut buf = [0u8; 256];
//!
//! let id = client
//!     .request(now, s_addr, Reliability::Confirmable, Code::GET, |w| w.uri_path("temp"))
//!     .unwrap();
//! let (to, n) = client.poll_transmit(now, &mut buf).unwrap();
//! assert_eq!(to, s_addr);
//!
//! now += 10;
//! let datagram = buf[..n].to_vec();
//! match server.handle_datagram(now, c_addr, &datagram) {
//!     Some(Incoming::Request(req)) => {
//!         assert!(req.message.path_is("temp"));
//!         server.respond(now, &req.handle, Code::CONTENT, |w| w.payload(b"21.5")).unwrap();
//!     }
//!     other => panic!("{other:?}"),
//! }
//! let (to, n) = server.poll_transmit(now, &mut buf).unwrap();
//! assert_eq!(to, c_addr);
//!
//! let datagram = buf[..n].to_vec();
//! match client.handle_datagram(now, s_addr, &datagram) {
//!     Some(Incoming::Response { exchange, message }) => {
//!         assert_eq!(exchange, id);
//!         assert_eq!(message.code(), Code::CONTENT);
//!         assert_eq!(message.payload(), b"21.5");
//!     }
//!     other => panic!("{other:?}"),
//! }
//! assert_eq!(client.poll_timeout(), None, "exchange complete, no timer left");
//! ```
//!
//! A driver loop: after each received datagram or expired timer, call
//! [`Endpoint::poll_transmit`] until it returns `None`, then [`Endpoint::poll_event`] until
//! `None`, then sleep until [`Endpoint::poll_timeout`] or the next datagram.
//!
//! See the crate's README for the retransmission rules and where each RFC rule is implemented.
//!
//! # Not implemented
//! Observe (RFC 7641) notifications after the first response, multicast, DTLS/OSCORE, proxying.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[cfg(test)]
extern crate std;

pub mod block;
pub mod config;
mod dedup;
pub mod endpoint;
pub mod error;
#[cfg(feature = "tcp")]
pub mod link;
pub mod msg;
pub mod option;
#[cfg(feature = "tcp")]
pub mod tcp;

pub use config::Config;
pub use endpoint::{
    Endpoint, Event, ExchangeId, Incoming, Reliability, Request, RequestHandle, Stats,
};
pub use error::{ConfigError, ParseError, RequestError, RespondError, WriteError};
#[cfg(feature = "tcp")]
pub use link::{Link, Transport};
pub use msg::{Code, Message, MessageType, MessageWriter, Options, Token};
pub use option::content_format;
#[cfg(feature = "tcp")]
pub use tcp::{StreamConfig, StreamEndpoint};
