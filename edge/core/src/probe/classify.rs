//! Error classes of probe failures.
//!
//! Every failure a probe can meet maps to one [`ErrorClass`]: transport failures as the
//! driver's socket layer reports them ([`Transport`]), and the protocol outcomes of the other
//! modules of [`crate::probe`]. Drivers map their platform's errors onto [`Transport`] and
//! call [`Classify::class`] on whatever stopped the probe.

use qos_wire::outcome::ErrorClass;

use super::coap_ping::PingReply;
use super::dns::{DnsError, Verdict};
use super::http::HttpError;
use super::transaction::StepProgress;

/// A transport failure, independent of the socket layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Transport {
    /// The name of the target did not resolve.
    NameNotResolved,
    /// Connection refused (RST to SYN, ICMP port unreachable on a datagram socket).
    Refused,
    /// No answer before the deadline.
    TimedOut,
    /// An established connection was reset or aborted.
    Reset,
    /// The peer closed the connection before the answer was complete.
    Closed,
    /// No route to the host or network.
    Unreachable,
    /// The TLS handshake failed (certificate, protocol version, alert).
    Tls,
    /// A local problem (no socket, permission, configuration).
    Local,
}

/// Anything that can stop a probe.
pub trait Classify {
    /// The error class to report.
    fn class(&self) -> ErrorClass;
}

impl Classify for Transport {
    fn class(&self) -> ErrorClass {
        match self {
            Transport::NameNotResolved => ErrorClass::DnsFailure,
            Transport::Refused => ErrorClass::Refused,
            Transport::TimedOut => ErrorClass::Timeout,
            Transport::Reset => ErrorClass::Reset,
            Transport::Closed => ErrorClass::Protocol,
            Transport::Unreachable => ErrorClass::Unreachable,
            Transport::Tls => ErrorClass::TlsFailure,
            Transport::Local => ErrorClass::Other,
        }
    }
}

impl Classify for DnsError {
    fn class(&self) -> ErrorClass {
        match self {
            DnsError::BufferTooSmall | DnsError::BadName => ErrorClass::Other,
            // A resolver that answers garbage is not speaking DNS to us.
            DnsError::IdMismatch
            | DnsError::NotResponse
            | DnsError::QuestionMismatch
            | DnsError::BadPointer
            | DnsError::Malformed => ErrorClass::Protocol,
        }
    }
}

/// The class of a DNS verdict (`None` for success): any rcode, an empty answer or a missing
/// expected address is a DNS failure.
pub fn dns_verdict(v: Verdict) -> Option<ErrorClass> {
    match v {
        Verdict::Ok => None,
        Verdict::Rcode(_) | Verdict::NoAnswer | Verdict::Unexpected => Some(ErrorClass::DnsFailure),
    }
}

impl Classify for HttpError {
    fn class(&self) -> ErrorClass {
        match self {
            HttpError::BadUrl | HttpError::BufferTooSmall | HttpError::NeedleTooLong => {
                ErrorClass::Other
            }
            HttpError::BadStatusLine
            | HttpError::BadHeader
            | HttpError::HeadTooLong
            | HttpError::BadContentLength
            | HttpError::BadChunk
            | HttpError::Truncated
            | HttpError::LocationTooLong => ErrorClass::Protocol,
        }
    }
}

/// The class of a complete HTTP response (`None` for success): the status first, then the
/// body (`body_matched` as [`super::http::ResponseParser::body_matched`]).
pub fn http_response(
    status: u16,
    expect_status: u16,
    body_matched: Option<bool>,
) -> Option<ErrorClass> {
    if !super::http::status_ok(status, expect_status) {
        Some(ErrorClass::HttpStatus)
    } else if body_matched == Some(false) {
        Some(ErrorClass::ContentMismatch)
    } else {
        None
    }
}

impl Classify for StepProgress {
    /// A mismatch is a content mismatch; an answer that stopped short (the caller saw the end
    /// of the connection while `NeedMore`) is a protocol error.
    fn class(&self) -> ErrorClass {
        match self {
            StepProgress::Mismatch { .. } => ErrorClass::ContentMismatch,
            StepProgress::NeedMore | StepProgress::Matched { .. } => ErrorClass::Protocol,
        }
    }
}

impl Classify for PingReply {
    fn class(&self) -> ErrorClass {
        ErrorClass::Protocol
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_classes() {
        assert_eq!(Transport::Refused.class(), ErrorClass::Refused);
        assert_eq!(Transport::TimedOut.class(), ErrorClass::Timeout);
        assert_eq!(Transport::Reset.class(), ErrorClass::Reset);
        assert_eq!(Transport::Tls.class(), ErrorClass::TlsFailure);
        assert_eq!(Transport::NameNotResolved.class(), ErrorClass::DnsFailure);
        assert_eq!(Transport::Unreachable.class(), ErrorClass::Unreachable);
    }

    #[test]
    fn dns_classes() {
        assert_eq!(dns_verdict(Verdict::Ok), None);
        assert_eq!(dns_verdict(Verdict::Rcode(3)), Some(ErrorClass::DnsFailure));
        assert_eq!(dns_verdict(Verdict::NoAnswer), Some(ErrorClass::DnsFailure));
        assert_eq!(
            dns_verdict(Verdict::Unexpected),
            Some(ErrorClass::DnsFailure)
        );
        assert_eq!(DnsError::BadPointer.class(), ErrorClass::Protocol);
    }

    #[test]
    fn http_classes() {
        assert_eq!(http_response(200, 0, None), None);
        assert_eq!(http_response(204, 0, Some(true)), None);
        assert_eq!(http_response(404, 0, None), Some(ErrorClass::HttpStatus));
        assert_eq!(http_response(404, 404, None), None);
        assert_eq!(
            http_response(200, 0, Some(false)),
            Some(ErrorClass::ContentMismatch)
        );
        assert_eq!(
            http_response(500, 0, Some(false)),
            Some(ErrorClass::HttpStatus)
        );
        assert_eq!(HttpError::Truncated.class(), ErrorClass::Protocol);
        assert_eq!(HttpError::BadUrl.class(), ErrorClass::Other);
    }

    #[test]
    fn step_classes() {
        assert_eq!(
            StepProgress::Mismatch { at: 0 }.class(),
            ErrorClass::ContentMismatch
        );
        assert_eq!(StepProgress::NeedMore.class(), ErrorClass::Protocol);
        assert_eq!(PingReply::Unexpected.class(), ErrorClass::Protocol);
    }
}
