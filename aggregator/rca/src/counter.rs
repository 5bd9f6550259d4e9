//! Cumulative counters (bytes sent, requests served, CPU seconds used since start) only ever
//! grow, so every sample after `at` lies above every sample before it and any baseline would
//! call them anomalous. A series that never decreases and grows in most steps is taken for
//! such a counter and scored by its rate of change instead. The test is about the shape of the
//! data only; metric names are never looked at.

/// Share of steps that must increase (the rest may stay flat) for a series to be a counter.
pub const INCREASING_SHARE: f64 = 0.75;

/// The per-second rate of `points` (time-ordered, finite) if they look like a cumulative
/// counter: at least 4 samples, no decrease, and at least [`INCREASING_SHARE`] of the steps
/// increasing. Each rate is stamped with the later sample's time; repeated timestamps are
/// skipped.
pub fn counter_rate(points: &[(f64, f64)]) -> Option<Vec<(f64, f64)>> {
    if points.len() < 4 {
        return None;
    }
    let mut up = 0usize;
    for w in points.windows(2) {
        if w[1].1 < w[0].1 {
            return None;
        }
        if w[1].1 > w[0].1 {
            up += 1;
        }
    }
    if (up as f64) < INCREASING_SHARE * (points.len() - 1) as f64 {
        return None;
    }
    Some(
        points
            .windows(2)
            .filter(|w| w[1].0 > w[0].0)
            .map(|w| (w[1].0, (w[1].1 - w[0].1) / (w[1].0 - w[0].0)))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_growing_counter_becomes_its_rate() {
        let pts: Vec<(f64, f64)> = (0..10)
            .map(|i| (i as f64 * 10.0, i as f64 * 50.0))
            .collect();
        let r = counter_rate(&pts).unwrap();
        assert_eq!(r.len(), 9);
        assert!(r.iter().all(|&(_, v)| (v - 5.0).abs() < 1e-12));
        assert_eq!(r[0].0, 10.0);
    }

    #[test]
    fn gauges_flat_series_and_resets_are_not_counters() {
        let gauge: Vec<(f64, f64)> = (0..10).map(|i| (i as f64, (i % 3) as f64)).collect();
        assert!(counter_rate(&gauge).is_none());
        let flat: Vec<(f64, f64)> = (0..10).map(|i| (i as f64, 7.0)).collect();
        assert!(counter_rate(&flat).is_none());
        let reset = [(0.0, 1.0), (1.0, 2.0), (2.0, 3.0), (3.0, 0.0), (4.0, 1.0)];
        assert!(counter_rate(&reset).is_none());
        assert!(counter_rate(&[(0.0, 1.0), (1.0, 2.0)]).is_none());
    }
}
