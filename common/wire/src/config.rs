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
