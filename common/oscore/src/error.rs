//! The errors of OSCORE processing: one small `Copy` enum, so firmware can count them by reason.

use core::fmt;

/// Why a message could not be protected or unprotected.
///
/// The receiver-side reasons ([`UnknownKid`](Error::UnknownKid), [`Decrypt`](Error::Decrypt),
/// [`Replay`](Error::Replay), [`Stale`](Error::Stale), [`Malformed`](Error::Malformed)) are
/// what a server counts; none of them leaves any state changed.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Error {
    /// Not a well-formed CoAP message, OSCORE option or COSE object (RFC 8613 §7.4, §8.2 step 2).
    Malformed,
    /// The message carries no OSCORE option.
    NotProtected,
    /// The key id names no security context of this receiver.
    UnknownKid,
    /// The authentication tag does not verify (forged, altered, or a wrong key).
    Decrypt,
    /// The sequence number was already received (replay window, RFC 8613 §7.4).
    Replay,
    /// The sequence number is older than the replay window reaches.
    Stale,
    /// The sender sequence number has reached 2^40 - 1: the context must be renewed.
    SequenceExhausted,
    /// The output buffer is too small for the result.
    BufferTooSmall,
    /// A parameter is out of range (an id longer than 7 bytes, an id context longer than 16).
    InvalidParameter,
}

impl Error {
    /// A short stable name (metrics labels, logs).
    pub const fn as_str(self) -> &'static str {
        match self {
            Error::Malformed => "malformed",
            Error::NotProtected => "not_protected",
            Error::UnknownKid => "unknown_kid",
            Error::Decrypt => "decrypt",
            Error::Replay => "replay",
            Error::Stale => "stale",
            Error::SequenceExhausted => "sequence_exhausted",
            Error::BufferTooSmall => "buffer_too_small",
            Error::InvalidParameter => "invalid_parameter",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Error::Malformed => "malformed OSCORE message",
            Error::NotProtected => "message is not OSCORE-protected",
            Error::UnknownKid => "unknown OSCORE key id",
            Error::Decrypt => "OSCORE authentication failed",
            Error::Replay => "OSCORE replay",
            Error::Stale => "OSCORE sequence number older than the replay window",
            Error::SequenceExhausted => "OSCORE sender sequence number exhausted",
            Error::BufferTooSmall => "buffer too small",
            Error::InvalidParameter => "OSCORE parameter out of range",
        })
    }
}

impl core::error::Error for Error {}
