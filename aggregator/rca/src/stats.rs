//! Robust statistics on slices of finite numbers: median, quantiles, MAD, IQR and the robust
//! scale built from them. Every function takes a scratch copy it may reorder, so callers keep
//! their time order.

/// Scale factor that turns a median absolute deviation into a standard-deviation estimate for
/// normally distributed data.
pub const MAD_TO_SIGMA: f64 = 1.4826;
/// Divisor that turns an inter-quartile range into a standard-deviation estimate for normally
/// distributed data.
pub const IQR_TO_SIGMA: f64 = 1.349;

/// The `q`-quantile (0 ≤ q ≤ 1, linear interpolation between order statistics) of `values`,
/// which it reorders. `None` for an empty slice.
pub fn quantile(values: &mut [f64], q: f64) -> Option<f64> {
    let n = values.len();
    if n == 0 {
        return None;
    }
    let q = q.clamp(0.0, 1.0);
    let h = (n - 1) as f64 * q;
    let lo = h.floor() as usize;
    let frac = h - lo as f64;
    let (_, lo_value, upper) = values.select_nth_unstable_by(lo, f64::total_cmp);
    let lo_value = *lo_value;
    if frac == 0.0 || upper.is_empty() {
        return Some(lo_value);
    }
    let hi_value = upper.iter().copied().fold(f64::INFINITY, f64::min);
    Some(lo_value + (hi_value - lo_value) * frac)
}

/// The median of `values` (reordered). `None` for an empty slice.
pub fn median(values: &mut [f64]) -> Option<f64> {
    quantile(values, 0.5)
}

/// Location and spread of a baseline, both robust to a minority of outliers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Baseline {
    /// The median of the baseline samples.
    pub center: f64,
    /// A robust standard-deviation estimate: the larger of 1.4826·MAD and IQR/1.349, never
    /// below a floor relative to the level of the series (so a flat or nearly flat baseline
    /// still gives finite, comparable scores).
    pub scale: f64,
    /// How many samples the baseline had.
    pub samples: usize,
}

/// Absolute floor of [`Baseline::scale`] for series whose level is zero.
pub const ABSOLUTE_SCALE_FLOOR: f64 = 1e-9;

impl Baseline {
    /// The robust baseline of `values` (reordered), or `None` with fewer than `min_samples`
    /// (at least 1) samples. The scale is at least `relative_floor` times the magnitude of the
    /// median (and at least [`ABSOLUTE_SCALE_FLOOR`]).
    pub fn of(values: &mut [f64], min_samples: usize, relative_floor: f64) -> Option<Baseline> {
        if values.len() < min_samples.max(1) {
            return None;
        }
        let center = median(values)?;
        let q1 = quantile(values, 0.25)?;
        let q3 = quantile(values, 0.75)?;
        for v in values.iter_mut() {
            *v = (*v - center).abs();
        }
        let mad = median(values)?;
        let floor = (center.abs() * relative_floor).max(ABSOLUTE_SCALE_FLOOR);
        let scale = (mad * MAD_TO_SIGMA)
            .max((q3 - q1) / IQR_TO_SIGMA)
            .max(floor);
        Some(Baseline {
            center,
            scale,
            samples: values.len(),
        })
    }

    /// The same baseline with its scale raised to at least `floor`.
    pub fn with_floor(self, floor: f64) -> Baseline {
        Baseline {
            scale: self.scale.max(floor),
            ..self
        }
    }

    /// The robust z-score of `value`: its signed distance from the center in units of scale.
    pub fn z(&self, value: f64) -> f64 {
        (value - self.center) / self.scale
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_between_order_statistics() {
        let mut v = [5.0, 1.0, 4.0, 2.0, 3.0];
        assert_eq!(median(&mut v), Some(3.0));
        assert_eq!(quantile(&mut v, 0.25), Some(2.0));
        assert_eq!(quantile(&mut v, 0.0), Some(1.0));
        assert_eq!(quantile(&mut v, 1.0), Some(5.0));
        let mut even = [4.0, 1.0, 3.0, 2.0];
        assert_eq!(median(&mut even), Some(2.5));
        assert_eq!(quantile(&mut even, 0.75), Some(3.25));
        assert_eq!(median(&mut []), None);
    }

    #[test]
    fn the_baseline_ignores_a_minority_of_outliers() {
        let mut v: Vec<f64> = (0..100).map(|i| 10.0 + (i % 5) as f64 * 0.1).collect();
        let clean = Baseline::of(&mut v.clone(), 3, 1e-6).unwrap();
        v[3] = 1e6;
        v[50] = -1e6;
        let dirty = Baseline::of(&mut v, 3, 1e-6).unwrap();
        assert!((dirty.center - clean.center).abs() < 0.11, "{dirty:?}");
        assert!(dirty.scale < 2.0 * clean.scale, "{dirty:?} vs {clean:?}");
        assert!(dirty.z(1e6) > 1e5);
    }

    #[test]
    fn a_flat_baseline_has_a_small_positive_scale() {
        let mut v = vec![200.0; 30];
        let b = Baseline::of(&mut v, 3, 1e-6).unwrap();
        assert_eq!(b.center, 200.0);
        assert!(b.scale > 0.0 && b.scale <= 200.0 * 1e-5, "{b:?}");
        assert!(b.z(201.0) > 1000.0);
        let mut zeros = vec![0.0; 30];
        let b = Baseline::of(&mut zeros, 3, 1e-6).unwrap();
        assert!(b.scale > 0.0 && b.z(0.0) == 0.0);
        let b = Baseline::of(&mut vec![200.0; 30], 3, 0.05).unwrap();
        assert!((b.scale - 10.0).abs() < 1e-9, "{b:?}");
    }

    #[test]
    fn too_few_samples_give_no_baseline() {
        assert!(Baseline::of(&mut [1.0, 2.0], 3, 1e-6).is_none());
        assert!(Baseline::of(&mut [], 0, 1e-6).is_none());
    }

    #[test]
    fn the_scale_matches_sigma_for_gaussian_like_data() {
        // A symmetric triangular-ish spread; MAD·1.4826 and IQR/1.349 both near the sd.
        let mut v: Vec<f64> = (0..1001).map(|i| (i as f64 - 500.0) / 100.0).collect();
        let b = Baseline::of(&mut v, 3, 1e-6).unwrap();
        assert!((b.center).abs() < 1e-9);
        // uniform on [-5, 5]: MAD = 2.5, IQR = 5 → max(3.7, 3.7)
        assert!((b.scale - 3.7).abs() < 0.05, "{b:?}");
    }
}
