//! The configuration of an edge, as the centre sends it (`GET /c` through the broker, with an
//! ETag so an unchanged configuration costs one small exchange).
//!
//! ```text
//! edge-config = [v: 1, etag: uint, window_s: uint, probes: [* probe-spec],
//!                rules: [* [probe, threshold-rule]]]
//! ```
//! Decoding validates everything (each probe, each rule, unique probe ids, rules naming
//! existing probes), so an edge applies a configuration whole or keeps its old one.

use minicbor::decode::Decoder;

use crate::codec::{self, Element, List, SliceEncoder, WireError};
use crate::ids::ProbeId;
use crate::probe::ProbeSpec;
use crate::threshold::ThresholdRule;

/// URI path of an edge's configuration resource.
pub const CONFIG_PATH: &str = "c";
/// Most probes in one configuration.
pub const MAX_PROBES: u16 = 32;
/// Most rules in one configuration.
pub const MAX_RULES: u16 = 64;

/// A threshold rule applied to one probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct RuleBinding {
    /// The probe.
    pub probe: ProbeId,
    /// The rule.
    pub rule: ThresholdRule,
}

impl<'b> Element<'b> for RuleBinding {
    fn decode_element(d: &mut Decoder<'b>) -> Result<Self, WireError> {
        codec::array(d, 2, 2)?;
        let probe = ProbeId(d.u16()?);
        let rule = d.decode()?;
        Ok(RuleBinding { probe, rule })
    }
    fn encode_element(&self, e: &mut SliceEncoder<'_>) -> Result<(), WireError> {
        e.array(2)?.u16(self.probe.0)?.encode(self.rule)?;
        Ok(())
    }
}

impl<'b> Element<'b> for ProbeSpec<'b> {
    fn decode_element(d: &mut Decoder<'b>) -> Result<Self, WireError> {
        ProbeSpec::decode(d)
    }
    fn encode_element(&self, e: &mut SliceEncoder<'_>) -> Result<(), WireError> {
        self.encode(e)
    }
}

/// An edge's configuration (zero-copy over the received bytes).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EdgeConfig<'a> {
    /// Version tag; also the CoAP ETag of the resource.
    pub etag: u32,
    /// Summary window, seconds (≥ 1).
    pub window_s: u16,
    /// The probes.
    pub probes: List<'a, ProbeSpec<'a>>,
    /// Threshold rules per probe.
    pub rules: List<'a, RuleBinding>,
}

impl<'a> EdgeConfig<'a> {
    /// Check what each element's own validation cannot: window, unique ids, rule targets.
    pub fn validate(&self) -> Result<(), WireError> {
        if self.window_s == 0 {
            return Err(WireError::Invalid("window_s must be at least 1"));
        }
        for (i, p) in self.probes.iter().enumerate() {
            if self.probes.iter().skip(i + 1).any(|q| q.id == p.id) {
                return Err(WireError::Invalid("duplicate probe id"));
            }
        }
        if self
            .rules
            .iter()
            .any(|r| !self.probes.iter().any(|p| p.id == r.probe))
        {
            return Err(WireError::Invalid("rule names an unknown probe"));
        }
        Ok(())
    }

    /// The probe with id `id`.
    pub fn probe(&self, id: ProbeId) -> Option<ProbeSpec<'a>> {
        self.probes.iter().find(|p| p.id == id)
    }

    /// Encode as CDDL `edge-config` into `buf`.
    pub fn encode(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        codec::encode_into(buf, |e| {
            e.array(5)?
                .u8(codec::VERSION)?
                .u32(self.etag)?
                .u16(self.window_s)?;
            self.probes.encode(e)?;
            self.rules.encode(e)
        })
    }

    /// Decode and validate CDDL `edge-config`.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, WireError> {
        let mut d = Decoder::new(bytes);
        codec::array(&mut d, 5, 5)?;
        codec::version(&mut d)?;
        let etag = d.u32()?;
        let window_s = d.u16()?;
        let probes = List::decode(&mut d, MAX_PROBES)?;
        let rules = List::decode(&mut d, MAX_RULES)?;
        codec::finish(&d)?;
        let cfg = EdgeConfig {
            etag,
            window_s,
            probes,
            rules,
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

/// Longest reason of a [`ConfigReport`], bytes.
pub const MAX_REASON: usize = 96;

/// What an edge reports after it applied or refused a configuration: CON `POST /c?id=<edge>`
/// (Content-Format 60) to its broker, answered 2.04.
///
/// ```text
/// config-report = [v: 1, etag: uint, accepted: bool, reason: tstr .size (0..96)]
/// ```
/// `reason` is empty for an accepted configuration and names the cause of a refusal
/// (for instance `too large`, `invalid value: duplicate probe id`, `too many probes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ConfigReport<'a> {
    /// The configuration's etag.
    pub etag: u32,
    /// Whether it is now in force.
    pub accepted: bool,
    /// Why it was refused (empty when accepted), at most [`MAX_REASON`] bytes.
    pub reason: &'a str,
}

impl<'a> ConfigReport<'a> {
    /// Check the reason's length.
    pub fn validate(&self) -> Result<(), WireError> {
        if self.reason.len() > MAX_REASON {
            return Err(WireError::Invalid("reason longer than 96 bytes"));
        }
        Ok(())
    }

    /// Encode as CDDL `config-report` into `buf`.
    pub fn encode(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        self.validate()?;
        codec::encode_into(buf, |e| {
            e.array(4)?
                .u8(codec::VERSION)?
                .u32(self.etag)?
                .bool(self.accepted)?
                .str(self.reason)?;
            Ok(())
        })
    }

    /// Decode and validate CDDL `config-report`.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, WireError> {
        let mut d = Decoder::new(bytes);
        codec::array(&mut d, 4, 4)?;
        codec::version(&mut d)?;
        let etag = d.u32()?;
        let accepted = d.bool()?;
        let reason = d.str()?;
        codec::finish(&d)?;
        let r = ConfigReport {
            etag,
            accepted,
            reason,
        };
        r.validate()?;
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn report_round_trips_and_bounds_the_reason() {
        let r = ConfigReport {
            etag: 7,
            accepted: false,
            reason: "too large",
        };
        let mut buf = [0u8; 128];
        let n = r.encode(&mut buf).unwrap();
        assert_eq!(ConfigReport::decode(&buf[..n]).unwrap(), r);
        let long = "x".repeat(MAX_REASON + 1);
        let bad = ConfigReport { reason: &long, ..r };
        assert!(bad.encode(&mut [0u8; 256]).is_err());
        // hand-encoded with a long reason: refused on decode too
        let mut e = minicbor::Encoder::new(std::vec::Vec::new());
        e.array(4).unwrap().u8(1).unwrap().u32(1).unwrap();
        e.bool(false).unwrap().str(&long).unwrap();
        assert!(ConfigReport::decode(e.writer()).is_err());
        assert!(ConfigReport::decode(&buf[..n - 1]).is_err());
    }

    proptest! {
        #[test]
        fn report_round_trip(etag: u32, accepted: bool, reason in "[ -~]{0,96}") {
            let r = ConfigReport { etag, accepted, reason: &reason };
            let mut buf = [0u8; 128];
            let n = r.encode(&mut buf).unwrap();
            prop_assert_eq!(ConfigReport::decode(&buf[..n]).unwrap(), r);
        }

        #[test]
        fn report_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = ConfigReport::decode(&bytes);
        }
    }
}
