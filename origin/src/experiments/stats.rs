//! The statistics of an experiment's results, pure: a proportion's 95 % Wilson score
//! interval and the two-proportion z-test (pooled) of a variant against the control.
//!
//! Successes above trials (two clicks on one impression, a purchase of an item never
//! shown) are capped at the trials here: the rate reported beside them is not, the
//! interval and the test treat it as 1.

use serde::{Deserialize, Serialize};

/// The standard normal quantile of 97.5 %: a two-sided 95 % interval.
pub const Z_95: f64 = 1.959_963_984_540_054;

/// The 95 % Wilson score interval of `successes` out of `trials` as `[low, high]`;
/// `None` without trials.
pub fn wilson(successes: u64, trials: u64) -> Option<[f64; 2]> {
    if trials == 0 {
        return None;
    }
    let n = trials as f64;
    let p = successes.min(trials) as f64 / n;
    let z2 = Z_95 * Z_95;
    let denom = 1.0 + z2 / n;
    let centre = (p + z2 / (2.0 * n)) / denom;
    let margin = Z_95 * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / denom;
    Some([(centre - margin).max(0.0), (centre + margin).min(1.0)])
}

/// A two-proportion z-test of a variant against the control.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ZTest {
    /// (variant rate − control rate) over the pooled standard error: positive when the
    /// variant's rate is higher.
    pub z: f64,
    /// Two-sided p-value.
    pub p_value: f64,
}

/// The pooled two-proportion z-test of `(x, n)` (the variant) against `(x0, n0)` (the
/// control); `None` when either has no trials or both rates are 0 or both 1 (no
/// variance to test against).
pub fn two_proportion(x: u64, n: u64, x0: u64, n0: u64) -> Option<ZTest> {
    if n == 0 || n0 == 0 {
        return None;
    }
    let (x, x0) = (x.min(n) as f64, x0.min(n0) as f64);
    let (n, n0) = (n as f64, n0 as f64);
    let pooled = (x + x0) / (n + n0);
    let se = (pooled * (1.0 - pooled) * (1.0 / n + 1.0 / n0)).sqrt();
    if se.is_nan() || se <= 0.0 {
        return None;
    }
    let z = (x / n - x0 / n0) / se;
    Some(ZTest {
        z,
        p_value: (erfc(z.abs() / std::f64::consts::SQRT_2)).clamp(0.0, 1.0),
    })
}

/// The complementary error function, to a relative error below 1.2e-7 (the Chebyshev
/// fit of Numerical Recipes' `erfcc`): 2·(1 − Φ(|z|)) = erfc(|z|/√2).
pub fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t
        * (-z * z - 1.265_512_23
            + t * (1.000_023_68
                + t * (0.374_091_96
                    + t * (0.096_784_18
                        + t * (-0.186_288_06
                            + t * (0.278_868_07
                                + t * (-1.135_203_98
                                    + t * (1.488_515_87
                                        + t * (-0.822_152_23 + t * 0.170_872_77)))))))))
            .exp();
    if x >= 0.0 {
        r
    } else {
        2.0 - r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    /// Values computed by hand from the formulas (and checked with Python's
    /// `math.erfc`): Wilson's centre (p + z²/2n)/(1 + z²/n) and margin
    /// z·√(p(1−p)/n + z²/4n²)/(1 + z²/n).
    #[test]
    fn wilson_intervals_match_hand_computed_values() {
        let [lo, hi] = wilson(50, 100).unwrap();
        assert!(
            close(lo, 0.403_831, 1e-6) && close(hi, 0.596_169, 1e-6),
            "{lo} {hi}"
        );
        let [lo, hi] = wilson(10, 1000).unwrap();
        assert!(
            close(lo, 0.005_441, 1e-6) && close(hi, 0.018_309, 1e-6),
            "{lo} {hi}"
        );
        // No successes: the interval still has width, from 0.
        let [lo, hi] = wilson(0, 20).unwrap();
        assert!(
            close(lo, 0.0, 1e-12) && close(hi, 0.161_125, 1e-6),
            "{lo} {hi}"
        );
        assert_eq!(wilson(3, 0), None);
        // Capped at the trials.
        assert_eq!(wilson(7, 5), wilson(5, 5));
    }

    /// 100/1000 (control) vs 130/1000: pooled p = 0.115, se = √(0.115·0.885·0.002)
    /// = 0.0142671, z = 0.03/se = 2.102741, p = erfc(z/√2) = 0.035488.
    #[test]
    fn the_two_proportion_test_matches_hand_computed_values() {
        let t = two_proportion(130, 1000, 100, 1000).unwrap();
        assert!(close(t.z, 2.102_741, 1e-5), "{t:?}");
        assert!(close(t.p_value, 0.035_488, 1e-6), "{t:?}");
        // Against itself the other way: z flips sign, p stays.
        let back = two_proportion(100, 1000, 130, 1000).unwrap();
        assert!(close(back.z, -t.z, 1e-12) && close(back.p_value, t.p_value, 1e-12));
        // Equal rates: z = 0, p = 1.
        let same = two_proportion(5, 50, 10, 100).unwrap();
        assert!(close(same.z, 0.0, 1e-12) && close(same.p_value, 1.0, 1e-6));
        assert_eq!(two_proportion(0, 10, 0, 10), None);
        assert_eq!(two_proportion(1, 0, 1, 10), None);
    }

    #[test]
    fn erfc_matches_known_values() {
        for (x, want) in [
            (0.0, 1.0),
            (0.5, 0.479_500_122),
            (1.0, 0.157_299_207),
            (2.0, 0.004_677_735),
            (-1.0, 1.842_700_793),
        ] {
            assert!(close(erfc(x), want, 2e-7), "erfc({x}) = {}", erfc(x));
        }
    }
}
