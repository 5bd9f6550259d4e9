//! Window summaries: what one probe saw during one window (default 60 s).
//!
//! Per phase: count, min, max and sum (so means merge exactly); per error class: a count; the
//! total time of successful runs in a [`Sketch`] (mergeable percentiles with ≤ 1 % relative
//! error). Wire (CDDL `summary`):
//!
//! ```text
//! [probe, start_s, len_s, ok, failed, [*(error-class, count)], sketch, mask,
//!  *(missing, min, max - min, sum - count*min)]
//! ```
//! The phase statistics follow flat at the end of the array, one group of four numbers per set
//! bit of `mask` (bit `i` is phase `i`; bit 7 is the time until an error was known). They are
//! stored relative to what the receiver already knows — `missing` is the number of runs that
//! did not reach the phase (runs − count; for time-to-error, failed − count), max and sum are
//! relative to the minimum — which keeps the numbers, and so their CBOR encoding, small.

use minicbor::decode::Decoder;

use crate::codec::{self, SliceEncoder, WireError};
use crate::ids::ProbeId;
use crate::outcome::{ErrorClass, ProbeResult};
use crate::phase::Phase;
use crate::sketch::Sketch;

/// Index of the time-to-error statistics in [`Summary::phases`].
pub const TIME_TO_ERROR: usize = Phase::COUNT;
/// Number of phase statistics in a summary: every phase plus time-to-error.
pub const STATS: usize = Phase::COUNT + 1;

/// Count, min, max and sum of a timing, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct PhaseStat {
    /// Number of values.
    pub count: u32,
    /// Smallest value (0 when empty).
    pub min: u32,
    /// Largest value.
    pub max: u32,
    /// Sum of the values.
    pub sum: u64,
}

impl PhaseStat {
    /// Add one value.
    pub fn add(&mut self, us: u32) {
        if self.count == 0 || us < self.min {
            self.min = us;
        }
        self.max = self.max.max(us);
        self.count = self.count.saturating_add(1);
        self.sum = self.sum.saturating_add(u64::from(us));
    }

    /// Merge another statistic into this one (exact).
    pub fn merge(&mut self, o: &PhaseStat) {
        if o.count == 0 {
            return;
        }
        if self.count == 0 || o.min < self.min {
            self.min = o.min;
        }
        self.max = self.max.max(o.max);
        self.count = self.count.saturating_add(o.count);
        self.sum = self.sum.saturating_add(o.sum);
    }

    /// Mean, if any value.
    pub fn mean(&self) -> Option<u32> {
        (self.count > 0).then(|| (self.sum / u64::from(self.count)) as u32)
    }
}

/// The summary of one probe over one window. `N` is the sketch's bucket capacity.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary<const N: usize> {
    /// Which probe.
    pub probe: ProbeId,
    /// Window start, Unix seconds.
    pub start_s: u32,
    /// Window length, seconds.
    pub len_s: u16,
    /// Successful runs.
    pub ok: u32,
    /// Failed runs.
    pub failed: u32,
    /// Per-phase statistics (index = phase wire value), then time-to-error at [`TIME_TO_ERROR`].
    pub phases: [PhaseStat; STATS],
    /// Failed runs per error class (index = class wire value).
    pub errors: [u32; ErrorClass::COUNT],
    /// Total time of successful runs.
    pub sketch: Sketch<N>,
}

impl<const N: usize> Summary<N> {
    /// An empty summary of `probe` for the window starting at `start_s`.
    pub fn new(probe: ProbeId, start_s: u32, len_s: u16) -> Self {
        Summary {
            probe,
            start_s,
            len_s,
            ok: 0,
            failed: 0,
            phases: [PhaseStat::default(); STATS],
            errors: [0; ErrorClass::COUNT],
            sketch: Sketch::new(),
        }
    }

    /// Number of runs.
    pub fn runs(&self) -> u32 {
        self.ok.saturating_add(self.failed)
    }

    /// Availability in the window as successful / runs, if any run.
    pub fn availability(&self) -> Option<f64> {
        let n = self.runs();
        (n > 0).then(|| f64::from(self.ok) / f64::from(n))
    }

    /// Statistics of `phase`.
    pub fn phase(&self, phase: Phase) -> &PhaseStat {
        &self.phases[phase as usize]
    }

    /// Account one probe run.
    pub fn record(&mut self, r: &ProbeResult) {
        for (p, us) in r.phases.iter() {
            self.phases[p as usize].add(us);
        }
        match r.error {
            None => {
                self.ok = self.ok.saturating_add(1);
                if let Some(t) = r.phases.get(Phase::Total) {
                    self.sketch.insert(t);
                }
            }
            Some(c) => {
                self.failed = self.failed.saturating_add(1);
                self.errors[c as usize] = self.errors[c as usize].saturating_add(1);
                if let Some(t) = r.error_after_us {
                    self.phases[TIME_TO_ERROR].add(t);
                }
            }
        }
    }

    /// Merge another summary of the same probe into this one (exact for counts, phases, errors;
    /// the sketch merges exactly while its capacity allows). The window widens to cover both.
    pub fn merge<const M: usize>(&mut self, o: &Summary<M>) {
        let end = (self.start_s + u32::from(self.len_s)).max(o.start_s + u32::from(o.len_s));
        self.start_s = self.start_s.min(o.start_s);
        self.len_s = u16::try_from(end - self.start_s).unwrap_or(u16::MAX);
        self.ok = self.ok.saturating_add(o.ok);
        self.failed = self.failed.saturating_add(o.failed);
        for (a, b) in self.phases.iter_mut().zip(o.phases.iter()) {
            a.merge(b);
        }
        for (a, b) in self.errors.iter_mut().zip(o.errors.iter()) {
            *a = a.saturating_add(*b);
        }
        self.sketch.merge(&o.sketch);
    }

    /// The count a phase statistic is encoded relative to: runs for phases, failed runs for
    /// time-to-error.
    fn reference_count(&self, stat: usize) -> u32 {
        if stat == TIME_TO_ERROR {
            self.failed
        } else {
            self.runs()
        }
    }

    /// Encode as CDDL `summary`.
    pub fn encode(&self, e: &mut SliceEncoder<'_>) -> Result<(), WireError> {
        let mut mask = 0u8;
        for (i, s) in self.phases.iter().enumerate() {
            if s.count > 0 {
                mask |= 1 << i;
            }
        }
        e.array(8 + 4 * u64::from(mask.count_ones()))?;
        e.u16(self.probe.0)?
            .u32(self.start_s)?
            .u16(self.len_s)?
            .u32(self.ok)?
            .u32(self.failed)?;
        let classes = self.errors.iter().filter(|&&c| c > 0).count() as u64;
        e.array(2 * classes)?;
        for (i, &c) in self.errors.iter().enumerate().filter(|(_, &c)| c > 0) {
            e.u8(i as u8)?.u32(c)?;
        }
        e.encode(&self.sketch)?;
        e.u8(mask)?;
        for (i, s) in self.phases.iter().enumerate().filter(|(_, s)| s.count > 0) {
            let missing = self.reference_count(i).saturating_sub(s.count);
            let base = u64::from(s.count) * u64::from(s.min);
            e.u32(missing)?
                .u32(s.min)?
                .u32(s.max - s.min)?
                .u64(s.sum - base)?;
        }
        Ok(())
    }

    /// Decode and validate CDDL `summary`.
    pub fn decode(d: &mut Decoder<'_>) -> Result<Self, WireError> {
        let n = codec::array(d, 8, 8 + 4 * STATS as u64)?;
        let probe = ProbeId(d.u16()?);
        let start_s = d.u32()?;
        let len_s = d.u16()?;
        let mut s = Summary::new(probe, start_s, len_s);
        s.ok = d.u32()?;
        s.failed = d.u32()?;
        s.ok.checked_add(s.failed)
            .ok_or(WireError::Invalid("run count"))?;
        let m = codec::array(d, 0, 2 * ErrorClass::COUNT as u64)?;
        if m % 2 != 0 {
            return Err(WireError::Malformed);
        }
        for _ in 0..m / 2 {
            let class = ErrorClass::from_u8(d.u8()?).ok_or(WireError::Invalid("error class"))?;
            s.errors[class as usize] = d.u32()?;
        }
        s.sketch = d.decode()?;
        let mask = d.u8()?;
        if 8 + 4 * u64::from(mask.count_ones()) != n {
            return Err(WireError::Invalid("phase mask"));
        }
        for i in 0..STATS {
            if mask & (1 << i) == 0 {
                continue;
            }
            let missing = d.u32()?;
            let min = d.u32()?;
            let range = d.u32()?;
            let excess = d.u64()?;
            let count = s.reference_count(i).checked_sub(missing).filter(|&c| c > 0);
            let count = count.ok_or(WireError::Invalid("phase count"))?;
            let max = min
                .checked_add(range)
                .ok_or(WireError::Invalid("phase max"))?;
            let base = u64::from(count) * u64::from(min);
            if excess > u64::from(count) * u64::from(range) {
                return Err(WireError::Invalid("phase sum"));
            }
            s.phases[i] = PhaseStat {
                count,
                min,
                max,
                sum: base + excess,
            };
        }
        Ok(s)
    }
}
