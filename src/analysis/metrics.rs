//! The paper's metrics between learners (docs/ANALYSIS.md, "Metrics"), all divided by d
//! ("dimension normalized"):
//! - MSE(A, k) = E_p (A_k(p) − y_{k+1})² / d, the error at x̃_{k+1} after k examples;
//! - SPD(A, B, k) = E_p (A_k(p) − B_k(p))² / d (Eq. 15; the probe x′ is the next in-context x);
//! - ILWD(A, B, k) = E_p ‖ŵ_A − ŵ_B‖² / d (Eq. 17), with ŵ the least-squares fit without
//!   intercept of A's predictions at fresh probe inputs after k examples (Eq. 16), or a linear
//!   solver's own w;
//! - R² of that fit, 1 − SS_res/SS_tot with SS_tot about the mean prediction (App. F); `None`
//!   when the predictions are constant (e.g. zero after no examples).

use nalgebra::{DMatrix, DVector};

/// The least-squares fit without intercept of `ys ≈ Xw` over the probes (rows of X), by SVD
/// (minimum norm when the probes do not span R^d), and its R².
pub fn fit_linear(probes: &[Vec<f64>], ys: &[f64]) -> (Vec<f64>, Option<f64>) {
    let d = probes[0].len();
    let x = DMatrix::from_fn(probes.len(), d, |i, j| probes[i][j]);
    let y = DVector::from_column_slice(ys);
    let svd = x.clone().svd(true, true);
    let tol = probes.len().max(d) as f64 * f64::EPSILON * svd.singular_values.max();
    let w = svd
        .solve(&y, tol)
        .unwrap_or_else(|_| DVector::from_element(d, f64::NAN));
    let resid = &y - &x * &w;
    let mean = y.mean();
    let ss_tot: f64 = y.iter().map(|v| (v - mean).powi(2)).sum();
    let ss_res = resid.norm_squared();
    let scale: f64 = y.iter().map(|v| v * v).sum::<f64>().max(f64::MIN_POSITIVE);
    let r2 = (ss_tot > 1e-24 * scale).then(|| 1.0 - ss_res / ss_tot);
    (w.iter().copied().collect(), r2)
}

/// Mean over prompts of (a − b)² / d at every k: `a[p][k]`, `b[p][k]`.
pub fn mean_sq_diff(a: &[Vec<f64>], b: &[Vec<f64>], d: usize) -> Vec<f64> {
    let ks = a[0].len();
    let mut out = vec![0.0; ks];
    for (pa, pb) in a.iter().zip(b) {
        for k in 0..ks {
            out[k] += (pa[k] - pb[k]).powi(2);
        }
    }
    let c = (a.len() * d) as f64;
    out.iter().map(|s| s / c).collect()
}

/// Mean over prompts of ‖wa − wb‖² / d at every k: `wa[p][k]` is a weight vector.
pub fn mean_weight_dist(wa: &[Vec<Vec<f64>>], wb: &[Vec<Vec<f64>>], d: usize) -> Vec<f64> {
    let ks = wa[0].len();
    let mut out = vec![0.0; ks];
    for (pa, pb) in wa.iter().zip(wb) {
        for k in 0..ks {
            out[k] += pa[k]
                .iter()
                .zip(&pb[k])
                .map(|(x, y)| (x - y).powi(2))
                .sum::<f64>();
        }
    }
    let c = (wa.len() * d) as f64;
    out.iter().map(|s| s / c).collect()
}

/// Mean of `v` over the k in `ks` (NaN when `ks` is empty).
pub fn mean_over(v: &[f64], ks: &[usize]) -> f64 {
    if ks.is_empty() {
        return f64::NAN;
    }
    ks.iter().map(|&k| v[k]).sum::<f64>() / ks.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fit_recovers_a_linear_map_and_its_r2_is_one() {
        let probes: Vec<Vec<f64>> = (0..8)
            .map(|i| vec![(i as f64).sin(), (i as f64 * 0.7).cos(), i as f64 / 8.0])
            .collect();
        let w = [0.5, -2.0, 3.0];
        let ys: Vec<f64> = probes
            .iter()
            .map(|x| x.iter().zip(&w).map(|(a, b)| a * b).sum())
            .collect();
        let (fit, r2) = fit_linear(&probes, &ys);
        for (a, b) in fit.iter().zip(&w) {
            assert!((a - b).abs() < 1e-12, "{fit:?}");
        }
        assert!((r2.unwrap() - 1.0).abs() < 1e-12);
        // A non-linear learner has R² < 1; a constant one has none.
        let sq: Vec<f64> = probes.iter().map(|x| x[0] * x[0] + x[2]).collect();
        assert!(fit_linear(&probes, &sq).1.unwrap() < 0.99);
        assert_eq!(fit_linear(&probes, &[0.0; 8]).1, None);
    }

    #[test]
    fn divergences_are_means_over_prompts_divided_by_d() {
        let a = vec![vec![1.0, 2.0], vec![0.0, 0.0]];
        let b = vec![vec![0.0, 0.0], vec![1.0, 4.0]];
        assert_eq!(mean_sq_diff(&a, &b, 2), vec![0.5, 5.0]);
        let wa = vec![vec![vec![1.0, 1.0]]];
        let wb = vec![vec![vec![0.0, 3.0]]];
        assert_eq!(mean_weight_dist(&wa, &wb, 2), vec![2.5]);
        assert_eq!(mean_over(&[1.0, 3.0, 5.0], &[0, 2]), 3.0);
        assert!(mean_over(&[1.0], &[]).is_nan());
    }
}
