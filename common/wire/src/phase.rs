//! Phases of a probe, outcomes and error classes.

/// One phase of a probe, as users experience a service. Timings are in microseconds.
///
/// The discriminant is the wire value (CDDL `phase`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(u8)]
pub enum Phase {
    /// DNS lookup.
    Dns = 0,
    /// TCP connect (or the first exchange of a datagram probe).
    Connect = 1,
    /// TLS handshake.
    Tls = 2,
    /// Time from the end of the request until the first byte of the answer (server processing).
    FirstByte = 3,
    /// Time from the first byte until the last byte of the answer.
    Download = 4,
    /// Time to send the request body.
    Upload = 5,
    /// The whole probe, from start to last byte (or to the error).
    Total = 6,
}

impl Phase {
    /// Number of phases.
    pub const COUNT: usize = 7;
    /// All phases in wire order.
    pub const ALL: [Phase; Phase::COUNT] = [
        Phase::Dns,
        Phase::Connect,
        Phase::Tls,
        Phase::FirstByte,
        Phase::Download,
        Phase::Upload,
        Phase::Total,
    ];

    /// The phase with wire value `v`, if any.
    pub fn from_u8(v: u8) -> Option<Phase> {
        Phase::ALL.get(v as usize).copied()
    }

    /// Lower-case name used in JSON, TOML and the API.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Dns => "dns",
            Phase::Connect => "connect",
            Phase::Tls => "tls",
            Phase::FirstByte => "first_byte",
            Phase::Download => "download",
            Phase::Upload => "upload",
            Phase::Total => "total",
        }
    }

    /// The phase named `s` (as returned by [`Phase::name`]).
    pub fn from_name(s: &str) -> Option<Phase> {
        Phase::ALL.iter().copied().find(|p| p.name() == s)
    }
}
