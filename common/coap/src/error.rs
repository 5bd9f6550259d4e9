//! Error types. All are small `Copy` enums, `#[non_exhaustive]`, with `Display` and (behind the
//! `defmt` feature) `defmt::Format`.

use core::fmt;

/// Why [`Message::parse`](crate::Message::parse) rejected a datagram (RFC 7252 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum ParseError {
    /// Fewer than the 4 bytes of the fixed header.
    TooShort,
    /// The version field is not 1 (such messages are silently ignored, RFC 7252 §3).
    Version,
    /// Token length 9 to 15, reserved (RFC 7252 §3: a message format error).
    TokenLength,
    /// The datagram ends inside the token, an option header or an option value.
    Truncated,
    /// An option delta or length nibble of 15 that is not the payload marker.
    ReservedNibble,
    /// A payload marker followed by a zero-length payload (RFC 7252 §3: format error).
    EmptyPayload,
    /// The option number grew past 65535.
    OptionNumber,
    /// A message with code 0.00 that carries a token, options or a payload (RFC 7252 §4.1).
    NonEmptyEmpty,
    /// A stream frame whose length fields disagree with the bytes given (RFC 8323 §3.2).
    FrameLength,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ParseError::TooShort => "datagram shorter than the CoAP header",
            ParseError::Version => "unknown CoAP version",
            ParseError::TokenLength => "reserved token length (9-15)",
            ParseError::Truncated => "datagram truncated inside token or option",
            ParseError::ReservedNibble => "reserved option delta or length nibble 15",
            ParseError::EmptyPayload => "payload marker followed by an empty payload",
            ParseError::OptionNumber => "option number exceeds 65535",
            ParseError::NonEmptyEmpty => "empty message (0.00) with token, options or payload",
            ParseError::FrameLength => "stream frame length disagrees with its Len field",
        })
    }
}

/// Why [`MessageWriter`](crate::MessageWriter) could not write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum WriteError {
    /// The output buffer is too small.
    BufferTooSmall,
    /// A token longer than 8 bytes.
    TokenTooLong,
    /// An option number lower than the previous one (options go in ascending order).
    OptionOrder,
    /// An option after the payload was started.
    AfterPayload,
    /// An option value longer than the encodable maximum (65804 bytes).
    ValueTooLong,
    /// The application refused to build the message (free for closures to use).
    Rejected,
}

impl fmt::Display for WriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WriteError::BufferTooSmall => "message does not fit the buffer",
            WriteError::TokenTooLong => "token longer than 8 bytes",
            WriteError::OptionOrder => "options must be written in ascending number order",
            WriteError::AfterPayload => "option written after the payload",
            WriteError::ValueTooLong => "option value too long",
            WriteError::Rejected => "message building rejected by the application",
        })
    }
}

/// Why [`Endpoint::request`](crate::Endpoint::request) did not start an exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum RequestError {
    /// Every exchange slot is in use (outstanding exchanges, queued responses or unpolled events).
    NoSlot,
    /// NSTART confirmable requests to this peer are already outstanding (RFC 7252 §4.7):
    /// retry after one of them completes.
    Busy,
    /// The code is not a request code (class 0, detail 1-31).
    InvalidCode,
    /// Building the message failed.
    Write(WriteError),
}

impl From<WriteError> for RequestError {
    fn from(e: WriteError) -> Self {
        RequestError::Write(e)
    }
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::NoSlot => f.write_str("no free exchange slot"),
            RequestError::Busy => f.write_str("NSTART outstanding requests to this peer"),
            RequestError::InvalidCode => f.write_str("not a request code"),
            RequestError::Write(e) => write!(f, "cannot build request: {e}"),
        }
    }
}

/// Why a response could not be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum RespondError {
    /// Every exchange slot is in use.
    NoSlot,
    /// The code is not a response code (class 2, 4 or 5).
    InvalidCode,
    /// The request was deferred (empty ACK sent): use
    /// [`Endpoint::respond_separate`](crate::Endpoint::respond_separate).
    Deferred,
    /// Only a confirmable request can be deferred.
    NotConfirmable,
    /// The control queue for empty ACKs is full; try again after `poll_transmit`.
    QueueFull,
    /// Building the message failed.
    Write(WriteError),
}

impl From<WriteError> for RespondError {
    fn from(e: WriteError) -> Self {
        RespondError::Write(e)
    }
}

impl fmt::Display for RespondError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RespondError::NoSlot => f.write_str("no free exchange slot"),
            RespondError::InvalidCode => f.write_str("not a response code"),
            RespondError::Deferred => f.write_str("request deferred: respond separately"),
            RespondError::NotConfirmable => {
                f.write_str("only confirmable requests can be deferred")
            }
            RespondError::QueueFull => f.write_str("control queue full"),
            RespondError::Write(e) => write!(f, "cannot build response: {e}"),
        }
    }
}

/// An invalid [`Config`](crate::Config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum ConfigError {
    /// `ack_timeout_ms` is zero.
    AckTimeout,
    /// `ack_random_factor_permille` is below 1000 (RFC 7252 §4.8: at least 1.0).
    RandomFactor,
    /// `max_retransmit` above [`Config::MAX_RETRANSMIT_LIMIT`](crate::Config::MAX_RETRANSMIT_LIMIT).
    MaxRetransmit,
    /// `nstart` is zero.
    Nstart,
    /// `token_len` above 8.
    TokenLength,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConfigError::AckTimeout => "ack_timeout_ms must be positive",
            ConfigError::RandomFactor => "ack_random_factor_permille must be at least 1000",
            ConfigError::MaxRetransmit => "max_retransmit too large",
            ConfigError::Nstart => "nstart must be at least 1",
            ConfigError::TokenLength => "token_len must be at most 8",
        })
    }
}
