//! Scoring one metric series against its own past.
//!
//! The samples before `at` (within the look-back) form a robust [`Baseline`]; every sample in
//! the horizon after `at` gets a robust z-score. The series' anomaly is its *mean log-surprise*:
//! the mean of `ln(1 + |z|)` over the horizon. It grows with both the size and the duration of
//! a deviation (a shift held for the whole horizon beats a burst of the same size), a lone
//! spike — common in sparse latency percentiles — is diluted by the quiet samples around it,
//! and the logarithm makes series of any scale and noise level comparable: a flat series that
//! moves a little cannot dominate everything with an astronomic z.

use crate::onset::{onset, Sustain};
use crate::stats::Baseline;
use crate::Direction;

/// How one series is scored; see [`crate::Config`] for the meaning of each field.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SeriesParams {
    /// Start of the baseline: samples in `[at - lookback, at)`.
    pub lookback: f64,
    /// End of the scored window: samples in `[at, at + horizon]`.
    pub horizon: f64,
    /// Fewest baseline samples for a series to be scored.
    pub min_baseline: usize,
    /// Floor of the baseline's scale relative to its level.
    pub relative_floor: f64,
    /// |z| over which a sample is deviating (onset detection).
    pub z_threshold: f64,
    /// The k-of-n rule of onset detection.
    pub sustain: Sustain,
}

/// The anomaly of one series after `at`.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesScore {
    /// The mean of `ln(1 + |z|)` after `at`: about 0.5 for noise, 2.3 for a 9 σ shift held
    /// over the whole horizon.
    pub score: f64,
    /// The typical |z| after `at` (the upper median, reached by at least half the samples).
    pub sustained_z: f64,
    /// The largest |z| after `at`.
    pub peak_z: f64,
    /// When the first sustained deviation began, if any.
    pub onset: Option<f64>,
    /// Whether the series went up or down (sign of the median z after `at`).
    pub direction: Direction,
    /// The z-scores after `at`, as (time, z).
    pub profile: Vec<(f64, f64)>,
    /// Whether the series was a cumulative counter, scored by its rate ([`crate::counter`]).
    pub rate: bool,
}

impl SeriesScore {
    /// Whether `self` and `other` carry the same signal: sampled at the same times after `at`
    /// (at least 3) and with z-profiles correlated (Pearson, either sign) at `min_corr` or more.
    /// Percentiles of one latency, or a quantity and its percentage, are such pairs.
    pub fn redundant_with(&self, other: &SeriesScore, min_corr: f64) -> bool {
        let (a, b) = (&self.profile, &other.profile);
        if a.len() != b.len() || a.len() < 3 || a.iter().zip(b).any(|(x, y)| x.0 != y.0) {
            return false;
        }
        let n = a.len() as f64;
        let (ma, mb) = (
            a.iter().map(|x| x.1).sum::<f64>() / n,
            b.iter().map(|x| x.1).sum::<f64>() / n,
        );
        let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
        for (x, y) in a.iter().zip(b) {
            let (dx, dy) = (x.1 - ma, y.1 - mb);
            sab += dx * dy;
            saa += dx * dx;
            sbb += dy * dy;
        }
        if saa <= 0.0 || sbb <= 0.0 {
            // A flat profile: redundant only with another flat one at the same level.
            return saa <= 0.0 && sbb <= 0.0 && (ma - mb).abs() <= 1e-9 * ma.abs().max(1.0);
        }
        (sab / (saa * sbb).sqrt()).abs() >= min_corr
    }
}

/// Scores `points` (time, value; finite, in time order) for an incident at `at`, or `None`
/// when the baseline is too short or nothing was observed after `at`.
pub fn score_series(points: &[(f64, f64)], at: f64, p: &SeriesParams) -> Option<SeriesScore> {
    let start = at - p.lookback;
    let end = at + p.horizon;
    let lo = points.partition_point(|&(t, _)| t < start);
    let mid = points.partition_point(|&(t, _)| t < at);
    let hi = points.partition_point(|&(t, _)| t <= end);
    let before = &points[lo..mid];
    let after = &points[mid..hi.max(mid)];
    if after.is_empty() {
        return None;
    }
    let mut scratch: Vec<f64> = before.iter().map(|&(_, v)| v).collect();
    let mut baseline = Baseline::of(&mut scratch, p.min_baseline, p.relative_floor)?;
    if baseline.center == 0.0 {
        // A level of zero (idle error counters, unused queues) gives no relative floor: the
        // series' own magnitude in the window stands in for its level.
        let magnitude = before
            .iter()
            .chain(after)
            .fold(0.0f64, |m, &(_, v)| m.max(v.abs()));
        baseline = baseline.with_floor(p.relative_floor * magnitude);
    }
    let z: Vec<(f64, f64)> = after.iter().map(|&(t, v)| (t, baseline.z(v))).collect();
    let mut abs: Vec<f64> = z.iter().map(|&(_, v)| v.abs()).collect();
    abs.sort_unstable_by(|a, b| b.total_cmp(a));
    let sustained_z = abs[abs.len().div_ceil(2) - 1];
    let score = abs.iter().map(|z| z.ln_1p()).sum::<f64>() / abs.len() as f64;
    let peak_z = abs[0];
    let mut signed: Vec<f64> = z.iter().map(|&(_, v)| v).collect();
    let mid_z = crate::stats::median(&mut signed).unwrap_or(0.0);
    let direction = if mid_z >= 0.0 {
        Direction::Up
    } else {
        Direction::Down
    };
    Some(SeriesScore {
        score,
        sustained_z,
        peak_z,
        onset: onset(&z, p.z_threshold, p.sustain),
        direction,
        profile: z,
        rate: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> SeriesParams {
        SeriesParams {
            lookback: 1000.0,
            horizon: 100.0,
            min_baseline: 3,
            relative_floor: 1e-3,
            z_threshold: 3.0,
            sustain: Sustain::default(),
        }
    }

    fn noisy(i: usize) -> f64 {
        // deterministic, zero-mean, bounded noise
        (((i * 7919) % 101) as f64 / 100.0 - 0.5) * 2.0
    }

    #[test]
    fn a_level_shift_scores_high_with_its_onset_and_direction() {
        let pts: Vec<(f64, f64)> = (0..110)
            .map(|i| {
                let t = i as f64 * 10.0;
                let v = 50.0 + noisy(i) + if t >= 1030.0 { -30.0 } else { 0.0 };
                (t, v)
            })
            .collect();
        let s = score_series(&pts, 1000.0, &params()).unwrap();
        assert!(s.sustained_z > 10.0, "{s:?}");
        assert!(s.score > 2.0, "{s:?}");
        assert_eq!(s.onset, Some(1030.0));
        assert_eq!(s.direction, Direction::Down);
    }

    #[test]
    fn a_lone_spike_scores_low_but_shows_in_the_peak() {
        let pts: Vec<(f64, f64)> = (0..110)
            .map(|i| {
                let v = 50.0 + noisy(i) + if i == 104 { 500.0 } else { 0.0 };
                (i as f64 * 10.0, v)
            })
            .collect();
        let s = score_series(&pts, 1000.0, &params()).unwrap();
        assert!(s.sustained_z < 3.0, "{s:?}");
        // 660 σ in one of ten samples weighs less than a 9 σ shift held throughout (2.3).
        assert!(s.score < 1.5, "{s:?}");
        assert!(s.peak_z > 100.0, "{s:?}");
        assert_eq!(s.onset, None);
    }

    #[test]
    fn samples_outside_the_window_are_ignored() {
        let mut pts: Vec<(f64, f64)> = (0..110).map(|i| (i as f64 * 10.0, noisy(i))).collect();
        pts.insert(0, (-5000.0, 1e9));
        pts.push((1e12, 1e9));
        let s = score_series(&pts, 1000.0, &params()).unwrap();
        assert!(s.peak_z < 5.0, "{s:?}");
    }

    #[test]
    fn proportional_series_are_redundant_and_unrelated_ones_are_not() {
        let shift = |scale: f64, seed: usize| -> Vec<(f64, f64)> {
            (0..110)
                .map(|i| {
                    let up = if i >= 103 {
                        30.0 + (i % 4) as f64 * 5.0
                    } else {
                        0.0
                    };
                    (i as f64 * 10.0, scale * (50.0 + noisy(i + seed) + up))
                })
                .collect()
        };
        let a = score_series(&shift(1.0, 0), 1000.0, &params()).unwrap();
        let pct = score_series(&shift(0.01, 0), 1000.0, &params()).unwrap();
        let other = score_series(&shift(1.0, 5), 1000.0, &params()).unwrap();
        assert!(a.redundant_with(&pct, 0.98));
        let noise: Vec<(f64, f64)> = (0..110)
            .map(|i| (i as f64 * 10.0, noisy(i * 3 + 1)))
            .collect();
        let n = score_series(&noise, 1000.0, &params()).unwrap();
        assert!(!a.redundant_with(&n, 0.98));
        let _ = other;
    }

    #[test]
    fn a_counter_leaving_zero_once_does_not_beat_a_sustained_shift() {
        let counter: Vec<(f64, f64)> = (0..110)
            .map(|i| (i as f64 * 10.0, if i == 105 { 1.0 } else { 0.0 }))
            .collect();
        let c = score_series(&counter, 1000.0, &params()).unwrap();
        let shift: Vec<(f64, f64)> = (0..110)
            .map(|i| {
                let up = if i >= 100 { 20.0 } else { 0.0 };
                (i as f64 * 10.0, 50.0 + noisy(i) + up)
            })
            .collect();
        let s = score_series(&shift, 1000.0, &params()).unwrap();
        assert!(c.peak_z.is_finite() && c.peak_z <= 1e3 + 1e-6, "{c:?}");
        assert!(c.score < s.score, "{c:?} vs {s:?}");
    }

    #[test]
    fn no_baseline_or_no_data_after_at_gives_none() {
        let pts = [(999.0, 1.0), (1001.0, 2.0)];
        assert!(score_series(&pts, 1000.0, &params()).is_none());
        let pts: Vec<(f64, f64)> = (0..10).map(|i| (i as f64, 1.0)).collect();
        assert!(score_series(&pts, 1000.0, &params()).is_none());
    }
}
