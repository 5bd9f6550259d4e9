//! Onset detection: the first moment a deviation starts and is sustained.
//!
//! A single sample over the threshold is noise; a deviation is taken as begun at the first
//! sample over the threshold such that at least `k` of the `n` samples starting there are over
//! it (a "k of n" rule, as used for alarm debouncing). Near the end of the series the window is
//! shorter, and `k` shrinks with it, so a deviation in the last samples still has an onset.

/// The "k of n" rule of [`onset`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sustain {
    /// Samples over the threshold needed in the window (at least 1).
    pub k: usize,
    /// Window length in samples (at least `k`).
    pub n: usize,
}

impl Default for Sustain {
    /// Two of three samples.
    fn default() -> Self {
        Sustain { k: 2, n: 3 }
    }
}

/// The time of the first sustained deviation in `z` (pairs of time and z-score, in time
/// order): the first sample with `|z| >= threshold` that starts a window where the
/// [`Sustain`] rule holds. `None` if there is none.
pub fn onset(z: &[(f64, f64)], threshold: f64, rule: Sustain) -> Option<f64> {
    let n = rule.n.max(1);
    let k = rule.k.clamp(1, n);
    let over: Vec<bool> = z.iter().map(|&(_, v)| v.abs() >= threshold).collect();
    for (i, &(t, _)) in z.iter().enumerate() {
        if !over[i] {
            continue;
        }
        let end = (i + n).min(over.len());
        let window = end - i;
        let need = k.min(window).max(1);
        // A window cut short by the end of the data needs proportionally fewer samples.
        let need = if window < n {
            need.min(window.div_ceil(2)).max(1)
        } else {
            need
        };
        let count = over[i..end].iter().filter(|&&o| o).count();
        if count >= need {
            return Some(t);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(z: &[f64]) -> Vec<(f64, f64)> {
        z.iter()
            .enumerate()
            .map(|(i, &v)| (i as f64 * 10.0, v))
            .collect()
    }

    #[test]
    fn a_lone_spike_is_not_an_onset_but_a_sustained_shift_is() {
        let z = series(&[0.1, 9.0, 0.2, 0.0, 0.3, 5.0, 6.0, 0.5, 7.0]);
        assert_eq!(onset(&z, 3.0, Sustain::default()), Some(50.0));
    }

    #[test]
    fn negative_deviations_count_too() {
        let z = series(&[0.0, -4.0, -5.0, -6.0]);
        assert_eq!(onset(&z, 3.0, Sustain::default()), Some(10.0));
    }

    #[test]
    fn nothing_over_the_threshold_means_no_onset() {
        let z = series(&[0.0, 1.0, -2.9, 2.0]);
        assert_eq!(onset(&z, 3.0, Sustain::default()), None);
        assert_eq!(onset(&[], 3.0, Sustain::default()), None);
    }

    #[test]
    fn a_deviation_in_the_last_sample_still_has_an_onset() {
        let z = series(&[0.0, 0.0, 0.0, 8.0]);
        assert_eq!(onset(&z, 3.0, Sustain::default()), Some(30.0));
    }

    #[test]
    fn k_of_n_tolerates_one_dip() {
        let z = series(&[0.0, 4.0, 0.0, 4.0, 4.0]);
        assert_eq!(onset(&z, 3.0, Sustain { k: 2, n: 3 }), Some(10.0));
        assert_eq!(onset(&z, 3.0, Sustain { k: 3, n: 3 }), Some(30.0));
    }
}
