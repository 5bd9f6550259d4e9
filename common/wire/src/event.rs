//! Events: threshold crossings raised by an edge (sent before summaries).
//!
//! ```text
//! event = [probe, rule, raised: bool, metric, at_ms, value]
//! ```
//! `rule` is the index of the rule in the edge's configuration; `value` the sample that decided
//! (µs for a phase rule, the number of failures in the window for availability).

use minicbor::decode::Decoder;

use crate::codec::{self, SliceEncoder, WireError};
use crate::ids::ProbeId;
use crate::threshold::{Crossing, Direction, Metric};

/// A threshold crossing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Event {
    /// The probe whose results crossed.
    pub probe: ProbeId,
    /// Index of the rule in the configuration.
    pub rule: u8,
    /// What the rule watches.
    pub metric: Metric,
    /// Raised (true) or cleared.
    pub raised: bool,
    /// When, Unix milliseconds.
    pub at_ms: u64,
    /// The deciding value.
    pub value: u32,
}

impl Event {
    /// The event for `crossing` of rule `rule` (watching `metric`) of `probe` at `at_ms`.
    pub fn from_crossing(
        probe: ProbeId,
        rule: u8,
        metric: Metric,
        c: Crossing,
        at_ms: u64,
    ) -> Event {
        Event {
            probe,
            rule,
            metric,
            raised: c.direction == Direction::Raised,
            at_ms,
            value: c.value,
        }
    }

    /// Encode as CDDL `event`.
    pub fn encode(&self, e: &mut SliceEncoder<'_>) -> Result<(), WireError> {
        e.array(6)?
            .u16(self.probe.0)?
            .u8(self.rule)?
            .bool(self.raised)?;
        e.i8(self.metric.to_wire())?
            .u64(self.at_ms)?
            .u32(self.value)?;
        Ok(())
    }

    /// Decode CDDL `event`.
    pub fn decode(d: &mut Decoder<'_>) -> Result<Self, WireError> {
        codec::array(d, 6, 6)?;
        let probe = ProbeId(d.u16()?);
        let rule = d.u8()?;
        let raised = d.bool()?;
        let metric = Metric::from_wire(d.i64()?).ok_or(WireError::Invalid("metric"))?;
        let at_ms = d.u64()?;
        let value = d.u32()?;
        Ok(Event {
            probe,
            rule,
            metric,
            raised,
            at_ms,
            value,
        })
    }
}
