//! What one probe run measured: phase timings, the outcome and the error class.

use minicbor::decode::Decoder;

use crate::codec::{self, SliceEncoder, WireError};
use crate::ids::ProbeId;
use crate::phase::Phase;

/// Why a probe failed. The discriminant is the wire value (CDDL `error-class`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(u8)]
#[non_exhaustive]
pub enum ErrorClass {
    /// The name did not resolve (NXDOMAIN, SERVFAIL, no answer, unexpected address).
    DnsFailure = 0,
    /// The peer refused the connection (TCP RST to SYN, ICMP port unreachable).
    Refused = 1,
    /// No answer within the probe's timeout.
    Timeout = 2,
    /// The connection was reset after it was established.
    Reset = 3,
    /// The TLS handshake failed (certificate, protocol).
    TlsFailure = 4,
    /// An HTTP status other than the expected one.
    HttpStatus = 5,
    /// The answer did not contain what was expected.
    ContentMismatch = 6,
    /// No route to the host or network unreachable.
    Unreachable = 7,
    /// The peer spoke something that is not the expected protocol.
    Protocol = 8,
    /// A local problem on the edge (no socket, configuration) or anything else.
    Other = 9,
}

impl ErrorClass {
    /// Number of classes.
    pub const COUNT: usize = 10;
    /// All classes in wire order.
    pub const ALL: [ErrorClass; ErrorClass::COUNT] = [
        ErrorClass::DnsFailure,
        ErrorClass::Refused,
        ErrorClass::Timeout,
        ErrorClass::Reset,
        ErrorClass::TlsFailure,
        ErrorClass::HttpStatus,
        ErrorClass::ContentMismatch,
        ErrorClass::Unreachable,
        ErrorClass::Protocol,
        ErrorClass::Other,
    ];

    /// The class with wire value `v`.
    pub fn from_u8(v: u8) -> Option<ErrorClass> {
        ErrorClass::ALL.get(usize::from(v)).copied()
    }

    /// snake_case name used in JSON and the API.
    pub fn name(self) -> &'static str {
        match self {
            ErrorClass::DnsFailure => "dns_failure",
            ErrorClass::Refused => "refused",
            ErrorClass::Timeout => "timeout",
            ErrorClass::Reset => "reset",
            ErrorClass::TlsFailure => "tls_failure",
            ErrorClass::HttpStatus => "http_status",
            ErrorClass::ContentMismatch => "content_mismatch",
            ErrorClass::Unreachable => "unreachable",
            ErrorClass::Protocol => "protocol",
            ErrorClass::Other => "other",
        }
    }
}

/// Timings of the phases a probe went through, in microseconds; a phase it did not reach (or
/// that does not apply, like TLS on plain HTTP) is absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct PhaseTimings {
    us: [u32; Phase::COUNT],
    present: u8,
}

impl PhaseTimings {
    /// No phase measured.
    pub const fn new() -> Self {
        PhaseTimings {
            us: [0; Phase::COUNT],
            present: 0,
        }
    }
    /// Record `phase` as taking `us` microseconds.
    pub fn set(&mut self, phase: Phase, us: u32) {
        self.us[phase as usize] = us;
        self.present |= 1 << phase as u8;
    }
    /// The time of `phase`, if measured.
    pub fn get(&self, phase: Phase) -> Option<u32> {
        if self.present & (1 << phase as u8) != 0 {
            Some(self.us[phase as usize])
        } else {
            None
        }
    }
    /// Measured phases and their times, in wire order.
    pub fn iter(&self) -> impl Iterator<Item = (Phase, u32)> + '_ {
        Phase::ALL
            .iter()
            .filter_map(move |&p| self.get(p).map(|t| (p, t)))
    }
    /// Bit mask of measured phases (bit = phase wire value).
    pub fn mask(&self) -> u8 {
        self.present
    }
}

/// The full result of one probe run (kept by the edge for drill-down and answered on demand).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ProbeResult {
    /// Which probe.
    pub probe: ProbeId,
    /// Start time, Unix milliseconds.
    pub at_ms: u64,
    /// Phase timings.
    pub phases: PhaseTimings,
    /// The error, if the probe failed.
    pub error: Option<ErrorClass>,
    /// Time from the start until the error was known, µs (absent on success).
    pub error_after_us: Option<u32>,
    /// Kind-specific detail: the HTTP status, the DNS rcode, the number of answers, ...
    pub detail: u32,
    /// Redirects followed (HTTP).
    pub redirects: u8,
}

impl ProbeResult {
    /// Whether the probe succeeded.
    pub fn ok(&self) -> bool {
        self.error.is_none()
    }

    /// Encode as CDDL `probe-result`:
    /// `[probe, at_ms, mask, *phase_us, error / null, error_after / null, detail, redirects]`.
    pub fn encode(&self, e: &mut SliceEncoder<'_>) -> Result<(), WireError> {
        let n = self.phases.iter().count() as u64;
        e.array(7 + n)?
            .u16(self.probe.0)?
            .u64(self.at_ms)?
            .u8(self.phases.mask())?;
        for (_, us) in self.phases.iter() {
            e.u32(us)?;
        }
        match self.error {
            Some(c) => e.u8(c as u8)?,
            None => e.null()?,
        };
        match self.error_after_us {
            Some(t) => e.u32(t)?,
            None => e.null()?,
        };
        e.u32(self.detail)?.u8(self.redirects)?;
        Ok(())
    }

    /// Decode CDDL `probe-result`.
    pub fn decode(d: &mut Decoder<'_>) -> Result<Self, WireError> {
        let n = codec::array(d, 7, 7 + Phase::COUNT as u64)?;
        let probe = ProbeId(d.u16()?);
        let at_ms = d.u64()?;
        let mask = d.u8()?;
        if mask >> Phase::COUNT != 0 || u64::from(mask.count_ones()) + 7 != n {
            return Err(WireError::Invalid("phase mask"));
        }
        let mut phases = PhaseTimings::new();
        for p in Phase::ALL {
            if mask & (1 << p as u8) != 0 {
                phases.set(p, d.u32()?);
            }
        }
        let error = opt(d, |d| {
            ErrorClass::from_u8(d.u8()?).ok_or(WireError::Invalid("error class"))
        })?;
        let error_after_us = opt(d, |d| Ok(d.u32()?))?;
        let detail = d.u32()?;
        let redirects = d.u8()?;
        Ok(ProbeResult {
            probe,
            at_ms,
            phases,
            error,
            error_after_us,
            detail,
            redirects,
        })
    }
}

/// Decode `null` as `None`, anything else with `f`.
pub(crate) fn opt<'b, T>(
    d: &mut Decoder<'b>,
    f: impl FnOnce(&mut Decoder<'b>) -> Result<T, WireError>,
) -> Result<Option<T>, WireError> {
    if d.datatype()? == minicbor::data::Type::Null {
        d.null()?;
        Ok(None)
    } else {
        f(d).map(Some)
    }
}

impl From<&ProbeResult> for crate::threshold::Sample {
    fn from(r: &ProbeResult) -> Self {
        let mut s = if r.ok() { Self::ok() } else { Self::failed() };
        for (p, us) in r.phases.iter() {
            s = s.with(p, us);
        }
        s
    }
}

impl<'b> crate::codec::Element<'b> for ProbeResult {
    fn decode_element(d: &mut Decoder<'b>) -> Result<Self, WireError> {
        ProbeResult::decode(d)
    }
    fn encode_element(&self, e: &mut SliceEncoder<'_>) -> Result<(), WireError> {
        self.encode(e)
    }
}

/// Most results a `recent-results` message may carry (a receiver's bound; an edge sends as
/// many as fit in one CoAP message, a few dozen).
pub const MAX_RECENT: u16 = 1024;

/// Largest encoded `probe-result` (every phase, an error, the widest integers).
const MAX_RESULT_BYTES: usize = 80;

/// Encode CDDL `recent-results = [v: 1, [* probe-result]]` into `buf` with as many of
/// `results` as fit, in the iterator's order (an edge passes them newest first). Results that
/// do not fit are left out, the later ones first; the returned count says how many were
/// written, with the number of bytes. Errors only when not even the empty message fits.
pub fn encode_results<'r, I>(buf: &mut [u8], results: I) -> Result<(usize, u16), WireError>
where
    I: Iterator<Item = &'r ProbeResult> + Clone,
{
    // First pass: how many fit. The array header grows with the count (1, 2 or 3 bytes for up
    // to 23, 255, 65535 items), so check the total with the header of each candidate count.
    let header = |n: u16| match n {
        0..=23 => 1,
        24..=255 => 2,
        _ => 3,
    };
    let mut scratch = [0u8; MAX_RESULT_BYTES];
    let mut body = 0usize;
    let mut count: u16 = 0;
    for r in results.clone() {
        if count == MAX_RECENT {
            break;
        }
        let len = codec::encode_into(&mut scratch, |e| r.encode(e))?;
        // [v: 1, ...]: array(2) and the version take 2 bytes.
        if 2 + header(count + 1) + body + len > buf.len() {
            break;
        }
        body += len;
        count += 1;
    }
    let n = codec::encode_into(buf, |e| {
        e.array(2)?.u8(codec::VERSION)?.array(u64::from(count))?;
        results
            .take(usize::from(count))
            .try_for_each(|r| r.encode(e))
    })?;
    Ok((n, count))
}

/// A decoded `recent-results` message (zero-copy; every result validated).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RecentResults<'b> {
    /// The results, in the order the edge sent them (newest first).
    pub results: crate::codec::List<'b, ProbeResult>,
}

impl<'b> RecentResults<'b> {
    /// Decode CDDL `recent-results`.
    pub fn decode(bytes: &'b [u8]) -> Result<Self, WireError> {
        let mut d = Decoder::new(bytes);
        codec::array(&mut d, 2, 2)?;
        codec::version(&mut d)?;
        let results = crate::codec::List::decode(&mut d, MAX_RECENT)?;
        codec::finish(&d)?;
        Ok(RecentResults { results })
    }
}

#[cfg(test)]
mod recent_tests {
    use super::*;

    fn result(i: u16) -> ProbeResult {
        let mut phases = PhaseTimings::new();
        phases.set(Phase::Connect, 1_000 + u32::from(i));
        phases.set(Phase::Total, 2_000 + u32::from(i));
        ProbeResult {
            probe: ProbeId(i % 3),
            at_ms: 1_764_000_000_000 + u64::from(i),
            phases,
            error: None,
            error_after_us: None,
            detail: 0,
            redirects: 0,
        }
    }

    #[test]
    fn results_round_trip_in_order() {
        let rs: std::vec::Vec<_> = (0..5).map(result).collect();
        let mut buf = [0u8; 512];
        let (n, count) = encode_results(&mut buf, rs.iter()).unwrap();
        assert_eq!(count, 5);
        let back = RecentResults::decode(&buf[..n]).unwrap();
        assert!(back.results.iter().eq(rs.iter().copied()));
    }

    #[test]
    fn only_what_fits_is_written_and_counted() {
        let rs: std::vec::Vec<_> = (0..100).map(result).collect();
        for size in [3usize, 20, 64, 200, 1024, 4096] {
            let mut buf = std::vec![0u8; size];
            let (n, count) = encode_results(&mut buf, rs.iter()).unwrap();
            assert!(n <= size);
            let back = RecentResults::decode(&buf[..n]).unwrap();
            assert_eq!(back.results.len(), usize::from(count));
            assert!(back
                .results
                .iter()
                .eq(rs.iter().take(count.into()).copied()));
            // one more would not have fit
            if usize::from(count) < rs.len() {
                let mut big = std::vec![0u8; 8192];
                let (m, _) =
                    encode_results(&mut big, rs.iter().take(usize::from(count) + 1)).unwrap();
                assert!(m > size, "{size}: {count} written but {m} bytes would fit");
            }
        }
        // around the array-header growth at 24 items
        let mut big = std::vec![0u8; 8192];
        let (m24, c) = encode_results(&mut big, rs.iter().take(24)).unwrap();
        assert_eq!(c, 24);
        let mut exact = std::vec![0u8; m24];
        assert_eq!(encode_results(&mut exact, rs.iter()).unwrap(), (m24, 24));
        let mut short = std::vec![0u8; m24 - 1];
        assert_eq!(encode_results(&mut short, rs.iter()).unwrap().1, 23);
    }

    #[test]
    fn too_small_a_buffer_and_bad_messages_are_errors() {
        let mut buf = [0u8; 2];
        assert_eq!(
            encode_results(&mut buf, core::iter::empty()),
            Err(WireError::BufferFull)
        );
        let mut buf = [0u8; 3];
        assert_eq!(encode_results(&mut buf, core::iter::empty()), Ok((3, 0)));
        assert_eq!(
            RecentResults::decode(&[0x82, 0x02, 0x80]),
            Err(WireError::UnsupportedVersion(2))
        );
        assert_eq!(
            RecentResults::decode(&[0x82, 0x01, 0x80, 0x00]),
            Err(WireError::TrailingBytes)
        );
        assert!(RecentResults::decode(&[0x82, 0x01, 0x81, 0x01]).is_err());
    }
}
