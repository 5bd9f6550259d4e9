//! OSCORE (RFC 8613) for the QoS system: `no_std`, no allocation, no clock, no sockets.
//!
//! - [`Context`]: a security context derived from a pre-shared master secret and salt with
//!   HKDF-SHA256 for AES-CCM-16-64-128 (COSE algorithm 10), the sender sequence number and the
//!   recipient's [`ReplayWindow`].
//! - [`Context::protect_request`] / [`Context::unprotect_request`] and
//!   [`Context::protect_response`] / [`Context::unprotect_response`]: the message
//!   transformation of RFC 8613 §5 and §8 on whole CoAP datagrams: class U options (Uri-Host,
//!   Uri-Port, Proxy-Uri, Proxy-Scheme) stay outside, every other option, the code and the
//!   payload are encrypted; the outer code is POST (requests) or 2.04 Changed (responses).
//! - [`request_kid`]: the key id of a protected request, to pick its context (a server) or
//!   to route on (a relay, which can read nothing else).
//! - [`Error`]: why a message was refused, a small `Copy` enum to count by reason.
//!
//! The cryptographic primitives (AES, CCM, HMAC, SHA-256, HKDF) are the RustCrypto crates;
//! this crate writes only the protocol around them. Verified against the test vectors of RFC
//! 8613 Appendix C (`tests/rfc8613_vectors.rs`) and against aiocoap's implementation.
//!
//! ```
//! use qos_oscore::Context;
//! let secret = [7u8; 16];
//! let mut client = Context::derive(&secret, b"salt", None, b"e1", b"").unwrap();
//! let mut server = Context::derive(&secret, b"salt", None, b"", b"e1").unwrap();
//! // A CoAP GET /c (CON, message id 1, token 0xab).
//! let get = [0x41, 0x01, 0x00, 0x01, 0xab, 0xb1, b'c'];
//! let (mut p, mut q) = ([0u8; 64], [0u8; 128]);
//! let (n, sent) = client.protect_request(&get, &mut p).unwrap();
//! let (m, got) = server.unprotect_request(&p[..n], &mut q).unwrap();
//! assert_eq!(&q[..m], &get);
//! assert_eq!(got, sent);
//! // The same datagram again is a replay.
//! assert_eq!(
//!     server.unprotect_request(&p[..n], &mut q).unwrap_err(),
//!     qos_oscore::Error::Replay
//! );
//! ```
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[cfg(test)]
extern crate std;

mod context;
mod error;
pub mod option;
mod replay;

pub use context::{request_kid, Context, Id, IdContext, Piv, RequestInfo};
pub use error::Error;
pub use option::OscoreOption;
pub use replay::{HighWater, ReplayWindow, WINDOW};

/// COSE algorithm AES-CCM-16-64-128.
pub const ALG_AES_CCM_16_64_128: u8 = 10;
/// Key length of AES-CCM-16-64-128.
pub const KEY_LEN: usize = 16;
/// Nonce length of AES-CCM-16-64-128.
pub const NONCE_LEN: usize = 13;
/// Tag length of AES-CCM-16-64-128.
pub const TAG_LEN: usize = 8;
/// Longest sender or recipient id: nonce length - 6.
pub const MAX_ID_LEN: usize = NONCE_LEN - 6;
/// Longest id context this crate accepts.
pub const MAX_ID_CONTEXT_LEN: usize = 16;
/// Longest Partial IV.
pub const MAX_PIV_LEN: usize = 5;
/// Highest sender sequence number (RFC 8613 §7.2.1: 2^40 - 1).
pub const MAX_SEQUENCE: u64 = (1 << 40) - 1;
/// The diagnostic payload of the unprotected 4.01 a server answers to a request whose number
/// its replay window refuses (RFC 8613 §7.4, "Replay detected").
pub const REPLAY_DETECTED: &[u8] = b"Replay detected";
/// How far a client moves its sender sequence number on a 4.01 [`REPLAY_DETECTED`] answer to
/// a request it protected: a server that persists its replay state as a high-water mark every
/// N numbers (Appendix B.1.1; N at most this) refuses, after its restart, up to N numbers the
/// client has not used yet; one step past them and the client is accepted again. The answer is
/// unprotected (it cannot be otherwise: the server refused the request), so a forged one can
/// burn at most this many numbers.
pub const RESYNC_STEP: u64 = 4096;
