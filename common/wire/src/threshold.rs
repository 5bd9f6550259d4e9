//! Threshold rules with hysteresis and k-of-n confirmation, evaluated on the edge.
//!
//! A [`ThresholdRule`] watches one [`Metric`] of a probe: a phase time, or availability. A
//! [`ThresholdState`] (one per rule and probe, 8 bytes) is fed every probe outcome as a [`Sample`]
//! and reports a [`Crossing`] when the rule raises or clears.
//!
//! # Semantics
//!
//! The state is either *clear* or *active*, and remembers the last `n` relevant samples as one flag
//! each (a `u32` bit mask; the flags of older samples fall out of the window):
//!
//! * **Clear.** A sample's flag is set when it is *bad*: for a phase rule, value `≥ raise`; for
//!   availability, a failed probe. As soon as at least `k` of the remembered (at most `n`) flags are
//!   set, the rule **raises**. So it raises on the `k`-th bad sample within any `n` consecutive
//!   samples, not before.
//! * **Active.** A sample's flag is set when it is *good*: for a phase rule, value `≤ clear`; for
//!   availability, a successful probe. As soon as at least `k` of the remembered flags are set, the
//!   rule **clears**.
//! * **Hysteresis.** While active, a phase value strictly between `clear` and `raise` (and any value
//!   `≥ raise`) is *not good*: it takes a place in the window without a flag, so it never clears the
//!   rule and pushes older good samples out. Symmetrically, while clear, a value `< raise` is not
//!   bad. With `clear < raise` a value oscillating inside the band therefore keeps the current state.
//! * **Fresh evidence.** The window is emptied at every crossing, so the next decision needs `k` new
//!   samples.
//! * **Skipped samples.** A phase rule ignores a sample that has no value for its phase (e.g. no TLS
//!   phase on a plain-HTTP probe, or a probe that failed before the phase): it takes no place in the
//!   window. A phase value is used whether the probe as a whole succeeded or not.
//!
//! The crossing carries a value: for a phase rule the value of the sample that completed the
//! decision; for availability the number of failed probes among the window's samples at that moment
//! (on raising that is `k`; on clearing, the failures still remembered next to the `k` successes).
//!
//! # Wire format
//!
//! A rule is the CBOR array `[metric, raise, clear, k, n]`. `metric` is the phase number (`phase`
//! in the schema, 0..=6, see [`Phase`]) or `-1` for availability (a negative number can never
//! collide with a future phase, and takes one byte). Decoding validates the rule
//! ([`ThresholdRule::validate`]); an invalid rule is a decode error.
//!
//! ```cddl
//! threshold-rule = [
//!   metric: phase / availability,
//!   raise: uint .size 4,      ; µs; a phase value ≥ raise is bad (ignored for availability)
//!   clear: uint .size 4,      ; µs; a phase value ≤ clear is good; clear ≤ raise
//!   k: 1..32,                 ; samples needed to decide, k ≤ n
//!   n: 1..32,                 ; window length
//! ]
//! availability = -1
//! ```

use core::fmt;

use minicbor::data::Type;
use minicbor::decode::{Decoder, Error as DecodeError};
use minicbor::encode::{Encoder, Error as EncodeError, Write};
use minicbor::{Decode, Encode};

use crate::phase::Phase;

/// Longest window of a rule, in samples (the history is a `u32` bit mask).
pub const MAX_WINDOW: u8 = 32;

/// Wire value of [`Metric::Availability`].
pub const AVAILABILITY_WIRE: i8 = -1;

/// What a rule watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Metric {
    /// The time of one phase of the probe, in µs.
    Phase(Phase),
    /// Whether the probe succeeded.
    Availability,
}

impl Metric {
    /// The wire value: the phase number, or [`AVAILABILITY_WIRE`].
    pub fn to_wire(self) -> i8 {
        match self {
            Metric::Phase(p) => p as i8,
            Metric::Availability => AVAILABILITY_WIRE,
        }
    }

    /// The metric with wire value `v`, if any.
    pub fn from_wire(v: i64) -> Option<Metric> {
        if v == i64::from(AVAILABILITY_WIRE) {
            return Some(Metric::Availability);
        }
        let v = u8::try_from(v).ok()?;
        Phase::from_u8(v).map(Metric::Phase)
    }
}

/// Why a [`ThresholdRule`] is invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum RuleError {
    /// `k` is 0: a decision needs at least one sample.
    KZero,
    /// `k > n`: the rule could never decide.
    KAboveN,
    /// `n` is above [`MAX_WINDOW`].
    WindowTooLong,
    /// For a phase rule, `clear > raise`: the hysteresis band is inverted.
    ClearAboveRaise,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RuleError::KZero => "k must be at least 1",
            RuleError::KAboveN => "k must not exceed n",
            RuleError::WindowTooLong => "n must not exceed 32",
            RuleError::ClearAboveRaise => "clear level must not exceed raise level",
        })
    }
}

impl core::error::Error for RuleError {}

/// A threshold rule: raise when `k` of the last `n` samples are bad, clear when `k` of the last
/// `n` are good; see the [module documentation](self) for the exact semantics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ThresholdRule {
    /// The watched metric.
    pub metric: Metric,
    /// Phase rules: a value `≥ raise` (µs) is bad. Ignored for availability.
    pub raise: u32,
    /// Phase rules: a value `≤ clear` (µs) is good. Ignored for availability.
    pub clear: u32,
    /// Number of bad (or good) samples within the window that decides a crossing.
    pub k: u8,
    /// Window length in samples.
    pub n: u8,
}

impl ThresholdRule {
    /// Checks `1 ≤ k ≤ n ≤ 32`, and `clear ≤ raise` for a phase rule.
    pub fn validate(&self) -> Result<(), RuleError> {
        if self.k == 0 {
            return Err(RuleError::KZero);
        }
        if self.n > MAX_WINDOW {
            return Err(RuleError::WindowTooLong);
        }
        if self.k > self.n {
            return Err(RuleError::KAboveN);
        }
        if matches!(self.metric, Metric::Phase(_)) && self.clear > self.raise {
            return Err(RuleError::ClearAboveRaise);
        }
        Ok(())
    }
}

/// One probe outcome as seen by threshold rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Sample {
    /// Whether the probe succeeded.
    pub ok: bool,
    /// Phase times in µs, indexed by the phase's wire number; `None` where the probe has no value.
    pub phases: [Option<u32>; Phase::COUNT],
}

impl Sample {
    /// A successful probe with no phase value yet (add them with [`Sample::with`]).
    pub const fn ok() -> Sample {
        Sample {
            ok: true,
            phases: [None; Phase::COUNT],
        }
    }

    /// A failed probe with no phase value (add the ones it measured with [`Sample::with`]).
    pub const fn failed() -> Sample {
        Sample {
            ok: false,
            phases: [None; Phase::COUNT],
        }
    }

    /// This sample with phase `phase` set to `us` µs.
    pub const fn with(mut self, phase: Phase, us: u32) -> Sample {
        self.phases[phase as usize] = Some(us);
        self
    }

    /// The value of `phase`, if measured.
    pub const fn phase(&self, phase: Phase) -> Option<u32> {
        self.phases[phase as usize]
    }
}

/// Direction of a [`Crossing`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Direction {
    /// The rule became active.
    Raised,
    /// The rule became clear again.
    Cleared,
}

/// A state change of a rule, reported by [`ThresholdState::observe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Crossing {
    /// Raised or cleared.
    pub direction: Direction,
    /// Phase rules: the value (µs) of the sample that decided. Availability: the number of
    /// failed probes among the window's samples at that moment.
    pub value: u32,
}

/// The evaluation state of one rule (8 bytes, no allocation); see the
/// [module documentation](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ThresholdState {
    /// Flags of the remembered samples, newest in bit 0 (bad while clear, good while active).
    history: u32,
    /// Number of remembered samples, ≤ n.
    filled: u8,
    /// Whether the rule is raised.
    active: bool,
}

impl ThresholdState {
    /// A clear state with an empty window.
    pub const fn new() -> ThresholdState {
        ThresholdState {
            history: 0,
            filled: 0,
            active: false,
        }
    }

    /// Whether the rule is currently raised.
    pub const fn is_active(&self) -> bool {
        self.active
    }

    /// Number of samples remembered since the last crossing (at most `n`).
    pub const fn window(&self) -> u8 {
        self.filled
    }

    /// Back to clear with an empty window (e.g. after the rule was changed).
    pub fn reset(&mut self) {
        *self = ThresholdState::new();
    }

    /// Feeds one probe outcome; returns the crossing it causes, if any.
    ///
    /// A rule that fails [`ThresholdRule::validate`] is ignored (`None`, state unchanged).
    pub fn observe(&mut self, rule: &ThresholdRule, sample: &Sample) -> Option<Crossing> {
        rule.validate().ok()?;
        let (flag, value) = match rule.metric {
            Metric::Phase(p) => {
                let v = sample.phase(p)?;
                let flag = if self.active {
                    v <= rule.clear
                } else {
                    v >= rule.raise
                };
                (flag, Some(v))
            }
            Metric::Availability => (sample.ok == self.active, None),
        };
        let mask = if rule.n >= MAX_WINDOW {
            u32::MAX
        } else {
            (1u32 << rule.n) - 1
        };
        self.history = ((self.history << 1) | u32::from(flag)) & mask;
        self.filled = (self.filled + 1).min(rule.n);
        let flagged = self.history.count_ones();
        if flagged < u32::from(rule.k) {
            return None;
        }
        let failures = if self.active {
            u32::from(self.filled).saturating_sub(flagged)
        } else {
            flagged
        };
        let direction = if self.active {
            Direction::Cleared
        } else {
            Direction::Raised
        };
        *self = ThresholdState {
            history: 0,
            filled: 0,
            active: !self.active,
        };
        Some(Crossing {
            direction,
            value: value.unwrap_or(failures),
        })
    }
}

impl<C> Encode<C> for ThresholdRule {
    fn encode<W: Write>(
        &self,
        e: &mut Encoder<W>,
        _ctx: &mut C,
    ) -> Result<(), EncodeError<W::Error>> {
        e.array(5)?
            .i8(self.metric.to_wire())?
            .u32(self.raise)?
            .u32(self.clear)?
            .u8(self.k)?
            .u8(self.n)?
            .ok()
    }
}

impl<'b, C> Decode<'b, C> for ThresholdRule {
    fn decode(d: &mut Decoder<'b>, _ctx: &mut C) -> Result<Self, DecodeError> {
        let pos = d.position();
        if d.array()? != Some(5) {
            return Err(DecodeError::message("threshold rule: expected an array of 5").at(pos));
        }
        let pos = d.position();
        let metric = match d.datatype()? {
            Type::U8
            | Type::U16
            | Type::U32
            | Type::U64
            | Type::I8
            | Type::I16
            | Type::I32
            | Type::I64 => {
                let v = d.i64().ok();
                v.and_then(Metric::from_wire)
                    .ok_or_else(|| DecodeError::message("threshold rule: unknown metric").at(pos))?
            }
            t => {
                return Err(DecodeError::type_mismatch(t)
                    .at(pos)
                    .with_message("threshold rule: metric must be an integer"))
            }
        };
        let raise = d.u32()?;
        let clear = d.u32()?;
        let k = d.u8()?;
        let n = d.u8()?;
        let rule = ThresholdRule {
            metric,
            raise,
            clear,
            k,
            n,
        };
        rule.validate()
            .map_err(|e| DecodeError::message(rule_error_message(e)).at(pos))?;
        Ok(rule)
    }
}

/// `'static` text of a rule error for `minicbor` errors (which need no allocation then).
fn rule_error_message(e: RuleError) -> &'static str {
    match e {
        RuleError::KZero => "threshold rule: k must be at least 1",
        RuleError::KAboveN => "threshold rule: k must not exceed n",
        RuleError::WindowTooLong => "threshold rule: n must not exceed 32",
        RuleError::ClearAboveRaise => "threshold rule: clear level above raise level",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::vec::Vec;

    fn rule(raise: u32, clear: u32, k: u8, n: u8) -> ThresholdRule {
        ThresholdRule {
            metric: Metric::Phase(Phase::Total),
            raise,
            clear,
            k,
            n,
        }
    }

    fn total(us: u32) -> Sample {
        Sample::ok().with(Phase::Total, us)
    }

    /// Feeds values; returns the index and crossing of each crossing.
    fn run(r: &ThresholdRule, st: &mut ThresholdState, xs: &[u32]) -> Vec<(usize, Crossing)> {
        xs.iter()
            .enumerate()
            .filter_map(|(i, &x)| st.observe(r, &total(x)).map(|c| (i, c)))
            .collect()
    }

    #[test]
    fn raises_after_exactly_k_of_n() {
        let r = rule(100, 50, 3, 5);
        let mut st = ThresholdState::new();
        // bad, ok, bad, ok, ok, ok: the first two bads leave the window before a third arrives
        assert!(run(&r, &mut st, &[100, 10, 200, 10, 10, 10]).is_empty());
        assert!(!st.is_active());
        // two more bads: the window [10, 10, 10, 150, 160] holds 2 bad of 5
        assert!(run(&r, &mut st, &[150, 160]).is_empty());
        let c = run(&r, &mut st, &[170]);
        assert_eq!(
            c,
            [(
                0,
                Crossing {
                    direction: Direction::Raised,
                    value: 170
                }
            )]
        );
        assert!(st.is_active());
        assert_eq!(st.window(), 0);
    }

    #[test]
    fn one_outlier_does_not_raise_with_k2() {
        let r = rule(1000, 500, 2, 10);
        let mut st = ThresholdState::new();
        let mut xs = [100u32; 30];
        xs[3] = 50_000;
        xs[20] = 50_000; // 17 samples later: outside the window of 10
        assert!(run(&r, &mut st, &xs).is_empty());
        // two outliers within 10 samples raise on the second
        let c = run(&r, &mut st, &[100, 5000, 100, 100, 5000]);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].0, 4);
    }

    #[test]
    fn hysteresis_band_keeps_active_and_clears_after_k_good() {
        let r = rule(1000, 500, 2, 3);
        let mut st = ThresholdState::new();
        assert_eq!(run(&r, &mut st, &[2000, 2000]).len(), 1);
        // values between clear and raise, and above raise, never clear
        assert!(run(&r, &mut st, &[700, 800, 999, 501, 5000, 600]).is_empty());
        assert!(st.is_active());
        // one good, then a band value, then good: 2 of the last 3 are good → clears
        let c = run(&r, &mut st, &[400, 700, 500]);
        assert_eq!(
            c,
            [(
                2,
                Crossing {
                    direction: Direction::Cleared,
                    value: 500
                }
            )]
        );
        // while clear, band values do not raise either
        assert!(run(&r, &mut st, &[999; 10]).is_empty());
        // fresh evidence after a crossing: the window restarted empty
        assert_eq!(st.window(), 3);
    }

    #[test]
    fn band_values_push_good_ones_out() {
        let r = rule(1000, 500, 2, 3);
        let mut st = ThresholdState::new();
        run(&r, &mut st, &[2000, 2000]);
        // good, band, band, good: the first good left the window → still active
        assert!(run(&r, &mut st, &[100, 700, 700, 100]).is_empty());
        assert!(st.is_active());
    }

    #[test]
    fn missing_phase_is_skipped() {
        let r = rule(1000, 500, 2, 2);
        let mut st = ThresholdState::new();
        assert_eq!(st.observe(&r, &total(5000)), None);
        // no Total value: ignored, does not break the 2-of-2 run
        assert_eq!(st.observe(&r, &Sample::failed().with(Phase::Dns, 10)), None);
        assert_eq!(st.window(), 1);
        assert!(st
            .observe(&r, &Sample::failed().with(Phase::Total, 6000))
            .is_some());
    }

    #[test]
    fn availability_k_of_n() {
        let r = ThresholdRule {
            metric: Metric::Availability,
            raise: 0,
            clear: 0,
            k: 2,
            n: 4,
        };
        let mut st = ThresholdState::new();
        let ok = Sample::ok();
        let ko = Sample::failed();
        for s in [ko, ok, ok, ok, ko, ok, ok] {
            assert_eq!(st.observe(&r, &s), None);
        }
        assert_eq!(st.observe(&r, &ok), None);
        assert_eq!(st.observe(&r, &ko), None);
        let c = st.observe(&r, &ko).unwrap();
        assert_eq!(c.direction, Direction::Raised);
        assert_eq!(c.value, 2);
        // clears after 2 successes within 4: fail, ok, fail, ok
        assert_eq!(st.observe(&r, &ko), None);
        assert_eq!(st.observe(&r, &ok), None);
        assert_eq!(st.observe(&r, &ko), None);
        let c = st.observe(&r, &ok).unwrap();
        assert_eq!(c.direction, Direction::Cleared);
        assert_eq!(c.value, 2, "two failures still in the window");
        assert!(!st.is_active());
    }

    #[test]
    fn full_window_of_32() {
        let r = rule(10, 5, 32, 32);
        let mut st = ThresholdState::new();
        let c = run(&r, &mut st, &[20; 32]);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].0, 31);
    }

    #[test]
    fn invalid_rules_rejected() {
        assert_eq!(rule(10, 5, 0, 3).validate(), Err(RuleError::KZero));
        assert_eq!(rule(10, 5, 4, 3).validate(), Err(RuleError::KAboveN));
        assert_eq!(rule(10, 5, 4, 33).validate(), Err(RuleError::WindowTooLong));
        assert_eq!(
            rule(10, 11, 1, 1).validate(),
            Err(RuleError::ClearAboveRaise)
        );
        assert_eq!(rule(10, 10, 1, 1).validate(), Ok(()));
        let avail = ThresholdRule {
            metric: Metric::Availability,
            raise: 0,
            clear: 7,
            k: 1,
            n: 1,
        };
        assert_eq!(avail.validate(), Ok(()));
        // an invalid rule is ignored by observe
        let mut st = ThresholdState::new();
        assert_eq!(st.observe(&rule(10, 5, 0, 3), &total(100)), None);
        assert_eq!(st, ThresholdState::new());
        assert_eq!(
            std::format!("{}", RuleError::KAboveN),
            "k must not exceed n"
        );
        // and rejected by the decoder
        let bytes = minicbor::to_vec(rule(10, 11, 1, 1)).unwrap();
        assert!(minicbor::decode::<ThresholdRule>(&bytes).is_err());
    }

    #[test]
    fn wire_examples() {
        let r = ThresholdRule {
            metric: Metric::Availability,
            raise: 0,
            clear: 0,
            k: 3,
            n: 5,
        };
        assert_eq!(minicbor::to_vec(r).unwrap(), [0x85, 0x20, 0, 0, 3, 5]);
        let r = rule(200_000, 150_000, 2, 3);
        assert_eq!(
            minicbor::to_vec(r).unwrap(),
            [0x85, 6, 0x1a, 0, 3, 0x0d, 0x40, 0x1a, 0, 2, 0x49, 0xf0, 2, 3]
        );
        for bad in [
            &[0x85, 7, 0, 0, 1, 1][..], // phase 7
            &[0x85, 0x21, 0, 0, 1, 1],  // metric -2
            &[0x84, 0, 0, 0, 1],        // 4 elements
            &[0x9f, 0, 0, 0, 1, 1, 0xff],
            &[0x85, 0, 0, 0, 1, 0x19, 1, 0], // n = 256
            &[0x85, 0x60, 0, 0, 1, 1],       // text metric
        ] {
            assert!(
                minicbor::decode::<ThresholdRule>(bad).is_err(),
                "{bad:02x?}"
            );
        }
    }

    fn any_metric() -> impl Strategy<Value = Metric> {
        prop_oneof![
            Just(Metric::Availability),
            (0u8..7).prop_map(|p| Metric::Phase(Phase::from_u8(p).unwrap())),
        ]
    }

    fn any_rule() -> impl Strategy<Value = ThresholdRule> {
        (
            any_metric(),
            any::<u32>(),
            any::<u32>(),
            any::<u8>(),
            any::<u8>(),
        )
            .prop_map(|(metric, raise, clear, k, n)| ThresholdRule {
                metric,
                raise,
                clear,
                k,
                n,
            })
    }

    /// Reference model: explicit window of the last n flags.
    fn model(r: &ThresholdRule, xs: &[Option<u32>]) -> Vec<(usize, Direction)> {
        let mut active = false;
        let mut win: Vec<bool> = Vec::new();
        let mut out = Vec::new();
        for (i, x) in xs.iter().enumerate() {
            let Some(v) = *x else { continue };
            win.push(if active { v <= r.clear } else { v >= r.raise });
            if win.len() > r.n as usize {
                win.remove(0);
            }
            if win.iter().filter(|&&b| b).count() >= r.k as usize {
                out.push((
                    i,
                    if active {
                        Direction::Cleared
                    } else {
                        Direction::Raised
                    },
                ));
                active = !active;
                win.clear();
            }
        }
        out
    }

    proptest! {
        #[test]
        fn rule_round_trip(r in any_rule()) {
            let bytes = minicbor::to_vec(r).unwrap();
            match minicbor::decode::<ThresholdRule>(&bytes) {
                Ok(back) => { prop_assert!(r.validate().is_ok()); prop_assert_eq!(back, r); }
                Err(_) => prop_assert!(r.validate().is_err()),
            }
        }

        #[test]
        fn decode_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..32)) {
            if let Ok(r) = minicbor::decode::<ThresholdRule>(&bytes) {
                prop_assert!(r.validate().is_ok());
            }
        }

        #[test]
        fn matches_reference_model(raise in 0u32..100, band in 0u32..50, k in 1u8..6, extra in 0u8..6,
                                   xs in prop::collection::vec(prop::option::weighted(0.9, 0u32..150), 0..200)) {
            let r = rule(raise, raise.saturating_sub(band), k, k + extra);
            let mut st = ThresholdState::new();
            let got: Vec<(usize, Direction)> = xs
                .iter()
                .enumerate()
                .filter_map(|(i, x)| {
                    let s = match x { Some(v) => total(*v), None => Sample::ok() };
                    st.observe(&r, &s).map(|c| (i, c.direction))
                })
                .collect();
            prop_assert_eq!(got, model(&r, &xs));
        }

        #[test]
        fn observe_never_panics(r in any_rule(), oks in prop::collection::vec(any::<bool>(), 0..80),
                                v in any::<u32>()) {
            let mut st = ThresholdState::new();
            for ok in oks {
                let s = Sample { ok, phases: [Some(v); Phase::COUNT] };
                let _ = st.observe(&r, &s);
                prop_assert!(st.window() <= MAX_WINDOW);
            }
        }
    }
}
