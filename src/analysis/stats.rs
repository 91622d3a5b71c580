//! Small statistics shared by the Dai et al. analyses (docs/ANALYSIS.md, "Attention as implicit
//! finetuning"): percentile-bootstrap confidence intervals, cosine similarity and Kendall's τ-b.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

/// A mean with its 95% percentile-bootstrap confidence interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Interval {
    pub mean: f64,
    pub lo: f64,
    pub hi: f64,
}

impl Interval {
    /// `mean [lo, hi]` with `digits` significant digits.
    pub fn display(&self, digits: usize) -> String {
        format!(
            "{:.*e} [{:.*e}, {:.*e}]",
            digits - 1,
            self.mean,
            digits - 1,
            self.lo,
            digits - 1,
            self.hi
        )
    }
}

/// Resamples used by the analyses' confidence intervals.
pub const RESAMPLES: usize = 2000;

/// The mean of `values` and its 95% percentile-bootstrap interval: `resamples` resamples with
/// replacement, drawn from a ChaCha8 stream seeded by `seed` (the same inputs and seed give the
/// same interval). NaN values are an input error of the caller and propagate into the interval.
/// An empty slice gives NaN everywhere.
pub fn bootstrap_mean(values: &[f64], resamples: usize, seed: u64) -> Interval {
    let n = values.len();
    if n == 0 {
        return Interval {
            mean: f64::NAN,
            lo: f64::NAN,
            hi: f64::NAN,
        };
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut means: Vec<f64> = (0..resamples.max(1))
        .map(|_| (0..n).map(|_| values[rng.random_range(0..n)]).sum::<f64>() / n as f64)
        .collect();
    means.sort_by(f64::total_cmp);
    let at = |q: f64| means[((q * (means.len() - 1) as f64).round()) as usize];
    Interval {
        mean,
        lo: at(0.025),
        hi: at(0.975),
    }
}

/// Cosine of the angle between `a` and `b`; NaN when either is the zero vector.
pub fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    let nb = b.iter().map(|x| x * x).sum::<f64>().sqrt();
    if na == 0.0 || nb == 0.0 {
        f64::NAN
    } else {
        dot / (na * nb)
    }
}

/// Euclidean norm.
pub fn norm(a: &[f64]) -> f64 {
    a.iter().map(|x| x * x).sum::<f64>().sqrt()
}

/// Kendall's τ-b of two equally long rankings (ties corrected, as `scipy.stats.kendalltau`'s
/// default): (P − Q) / √((P + Q + T_x)(P + Q + T_y)) over all pairs, P concordant, Q discordant,
/// T_x pairs tied only in `x`, T_y only in `y`. NaN when either side is constant or n < 2.
/// O(n²), which is fine for the ≤ 2n demonstration tokens it ranks.
pub fn kendall_tau_b(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len().min(y.len());
    let (mut p, mut q, mut tx, mut ty) = (0u64, 0u64, 0u64, 0u64);
    for i in 0..n {
        for j in i + 1..n {
            let dx = (x[i] - x[j]).partial_cmp(&0.0);
            let dy = (y[i] - y[j]).partial_cmp(&0.0);
            use std::cmp::Ordering::Equal;
            match (dx, dy) {
                (Some(Equal), Some(Equal)) => {}
                (Some(Equal), _) => tx += 1,
                (_, Some(Equal)) => ty += 1,
                (a, b) if a == b => p += 1,
                _ => q += 1,
            }
        }
    }
    let denom = (((p + q + tx) as f64) * ((p + q + ty) as f64)).sqrt();
    if denom == 0.0 {
        f64::NAN
    } else {
        (p as f64 - q as f64) / denom
    }
}

/// Pearson correlation; NaN when either side is constant.
pub fn pearson(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len().min(y.len()) as f64;
    let mx = x.iter().sum::<f64>() / n;
    let my = y.iter().sum::<f64>() / n;
    let cx: Vec<f64> = x.iter().map(|v| v - mx).collect();
    let cy: Vec<f64> = y.iter().map(|v| v - my).collect();
    cosine(&cx, &cy)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kendall_matches_hand_counts() {
        // Identical and reversed rankings.
        assert_eq!(
            kendall_tau_b(&[1.0, 2.0, 3.0, 4.0], &[10.0, 20.0, 30.0, 40.0]),
            1.0
        );
        assert_eq!(
            kendall_tau_b(&[1.0, 2.0, 3.0, 4.0], &[4.0, 3.0, 2.0, 1.0]),
            -1.0
        );
        // x = [1,2,3,4], y = [1,3,2,4]: 5 concordant, 1 discordant → 4/6.
        let t = kendall_tau_b(&[1.0, 2.0, 3.0, 4.0], &[1.0, 3.0, 2.0, 4.0]);
        assert!((t - 4.0 / 6.0).abs() < 1e-15, "{t}");
        // With a tie in y: x = [1,2,3], y = [1,1,2]: P = 2, Q = 0, T_y = 1 → 2/√(2·3)
        // (scipy.stats.kendalltau([1,2,3],[1,1,2]) = 0.8164965809277261).
        let t = kendall_tau_b(&[1.0, 2.0, 3.0], &[1.0, 1.0, 2.0]);
        assert!((t - 0.816_496_580_927_726_1).abs() < 1e-15, "{t}");
        assert!(kendall_tau_b(&[1.0, 1.0], &[1.0, 2.0]).is_nan());
    }

    #[test]
    fn bootstrap_interval_brackets_the_mean_and_is_deterministic() {
        let v: Vec<f64> = (0..200).map(|i| ((i * 37) % 101) as f64 / 10.0).collect();
        let a = bootstrap_mean(&v, 1000, 7);
        let b = bootstrap_mean(&v, 1000, 7);
        assert_eq!(a, b);
        assert!(a.lo < a.mean && a.mean < a.hi, "{a:?}");
        // The interval's width is about 2·1.96·sd/√n for a sample this size.
        let sd = (v.iter().map(|x| (x - a.mean).powi(2)).sum::<f64>() / 199.0).sqrt();
        let want = 2.0 * 1.96 * sd / (200f64).sqrt();
        let got = a.hi - a.lo;
        assert!((got / want - 1.0).abs() < 0.2, "width {got} vs {want}");
        // A constant sample has a zero-width interval.
        let c = bootstrap_mean(&[2.5; 10], 100, 1);
        assert_eq!((c.lo, c.mean, c.hi), (2.5, 2.5, 2.5));
    }

    #[test]
    fn cosine_and_pearson() {
        assert!((cosine(&[1.0, 0.0], &[1.0, 1.0]) - 0.5f64.sqrt()).abs() < 1e-15);
        assert!(cosine(&[0.0, 0.0], &[1.0, 1.0]).is_nan());
        assert!((pearson(&[1.0, 2.0, 3.0], &[2.0, 4.0, 6.5]) - 0.9986).abs() < 1e-3);
    }
}
