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
