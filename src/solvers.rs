//! Ground-truth learners in f64 (faer for ridge, nalgebra for the SVD of OLS), evaluated like an in-context learner: each gives the
//! prediction at every x̃ column, i.e. at x̃_k the prediction for x_k from examples 1..k−1
//! (n+1 values per prompt; the first, from no example, is each solver's empty-data answer).
//!
//! - `Ols`: minimum-norm least squares, `w = X⁺y` (pseudo-inverse by SVD; 0 with no examples).
//! - `Ridge { lambda }`: `w = (XᵀX + λI)⁻¹Xᵀy` (faer's Cholesky; λ = 0 is OLS).
//! - `Gd { alpha }`: one step of full-batch GD on the summed loss from w₀ = 0. The paper's step
//!   `w = w₀ − 2α(XᵀXw₀ − Xᵀy + λw₀)` at w₀ = 0 is `w = 2α Xᵀy` (λ drops out).
//! - `Sgd { alpha, lambda }`: one pass of SGD with batch size 1 from w₀ = 0:
//!   `w_i = w_{i−1} − 2α(x_i x_iᵀ w_{i−1} − x_i y_i + λ w_{i−1})`.
//! - `Knn { k, weighted }`: mean of the y's of the k nearest earlier examples (Euclidean; ties
//!   broken by example order), uniform or weighted by 1/distance²; an exact match (distance 0)
//!   predicts the mean y of the exact matches; fewer than k examples: all of them; none: 0.
//! - `Moments`: the moment estimator `w = Xᵀy / k` after k examples (the reference code's
//!   "Lstsq-Constant-Sigma" with P = I; 0 with no examples).
//! - `Zero`: always 0.

use crate::prompt::Prompt;
use nalgebra::{DMatrix, DVector};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Solver {
    Ols,
    Ridge { lambda: f64 },
    Gd { alpha: f64 },
    Sgd { alpha: f64, lambda: f64 },
    Knn { k: usize, weighted: bool },
    Moments,
    Zero,
}

impl Solver {
    /// A short name for tables and plots, e.g. `ridge(0.5)`, `knn(3,weighted)`.
    pub fn name(&self) -> String {
        match *self {
            Solver::Ols => "ols".into(),
            Solver::Ridge { lambda } => format!("ridge({lambda})"),
            Solver::Gd { alpha } => format!("gd({alpha})"),
            Solver::Sgd { alpha, lambda: 0.0 } => format!("sgd({alpha})"),
            Solver::Sgd { alpha, lambda } => format!("sgd({alpha},{lambda})"),
            Solver::Knn { k, weighted: false } => format!("knn({k})"),
            Solver::Knn { k, weighted: true } => format!("knn({k},weighted)"),
            Solver::Moments => "moments".into(),
            Solver::Zero => "zero".into(),
        }
    }

    /// Predictions at every x̃ column: `out[k-1]` predicts y_k from examples 1..k−1.
    pub fn predict(&self, p: &Prompt) -> Vec<f64> {
        let n = p.n();
        match *self {
            Solver::Zero => vec![0.0; n + 1],
            Solver::Knn { k, weighted } => (0..=n)
                .map(|m| knn_predict(&p.xs[..m], &p.ys[..m], &p.xs[m], k, weighted))
                .collect(),
            Solver::Sgd { alpha, lambda } => {
                // Online: the weights after m examples predict x_{m+1}.
                let d = p.d();
                let mut w = vec![0.0; d];
                let mut out = Vec::with_capacity(n + 1);
                for m in 0..=n {
                    out.push(dot(&w, &p.xs[m]));
                    if m < n {
                        sgd_step(&mut w, &p.xs[m], p.ys[m], alpha, lambda);
                    }
                }
                out
            }
            _ => (0..=n)
                .map(|m| dot(&self.weights(&p.xs[..m], &p.ys[..m]), &p.xs[m]))
                .collect(),
        }
    }

    /// The linear weights this solver fits on the given examples (`d` = `xs[0].len()`; with no
    /// examples, the caller's d is unknown, so an empty vector is returned — its dot with any
    /// query is 0). kNN is not linear: its "weights" are empty.
    pub fn weights(&self, xs: &[Vec<f64>], ys: &[f64]) -> Vec<f64> {
        match *self {
            Solver::Ols => ols_weights(xs, ys),
            Solver::Ridge { lambda } => ridge_weights(xs, ys, lambda),
            Solver::Gd { alpha } => gd_weights(xs, ys, alpha),
            Solver::Sgd { alpha, lambda } => sgd_weights(xs, ys, alpha, lambda),
            Solver::Moments => moment_weights(xs, ys),
            Solver::Zero => xs.first().map(|x| vec![0.0; x.len()]).unwrap_or_default(),
            Solver::Knn { .. } => Vec::new(),
        }
    }

    /// Whether the solver's answer is a linear function `wᵀx` of the query (all but kNN).
    pub fn is_linear(&self) -> bool {
        !matches!(self, Solver::Knn { .. })
    }

    /// The prediction at an arbitrary query `q` after the examples `xs`, `ys`.
    pub fn predict_query(&self, xs: &[Vec<f64>], ys: &[f64], q: &[f64]) -> f64 {
        match *self {
            Solver::Knn { k, weighted } => knn_predict(xs, ys, q, k, weighted),
            _ => dot(&self.weights(xs, ys), q),
        }
    }
}

/// Predictions of one solver on many prompts.
pub fn predict_batch(s: &Solver, prompts: &[Prompt]) -> Vec<Vec<f64>> {
    prompts.iter().map(|p| s.predict(p)).collect()
}

/// `Σ a_i b_i`; an empty `a` (no examples, unknown d) gives 0.
fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn design(xs: &[Vec<f64>], ys: &[f64]) -> (DMatrix<f64>, DVector<f64>) {
    let d = xs[0].len();
    (
        DMatrix::from_fn(xs.len(), d, |i, j| xs[i][j]),
        DVector::from_column_slice(ys),
    )
}

/// Minimum-norm least squares `w = X⁺y`, by SVD with singular values below
/// `max(k, d)·ε·σ_max` treated as zero (numpy's `lstsq` default). No examples: empty (= 0).
pub fn ols_weights(xs: &[Vec<f64>], ys: &[f64]) -> Vec<f64> {
    if xs.is_empty() {
        return Vec::new();
    }
    let (x, y) = design(xs, ys);
    let (k, d) = x.shape();
    let svd = x.svd(true, true);
    let smax = svd.singular_values.max();
    let eps = (k.max(d) as f64) * f64::EPSILON * smax;
    match svd.solve(&y, eps) {
        Ok(w) => w.iter().copied().collect(),
        // Only when U/Vᵀ were not computed, which we asked for.
        Err(_) => vec![f64::NAN; d],
    }
}

/// Ridge `w = (XᵀX + λI)⁻¹Xᵀy` by faer's Cholesky. λ = 0 gives the minimum-norm OLS solution. If
/// `XᵀX + λI` is not positive definite (λ < 0), an LU solve is tried, and NaNs are returned when
/// the system is singular. No examples: empty (= 0).
pub fn ridge_weights(xs: &[Vec<f64>], ys: &[f64], lambda: f64) -> Vec<f64> {
    if xs.is_empty() {
        return Vec::new();
    }
    if lambda == 0.0 {
        return ols_weights(xs, ys);
    }
    use faer::prelude::Solve;
    let d = xs[0].len();
    // Normal equations: S = XᵀX + λI (d×d, SPD for λ > 0), b = Xᵀy.
    let s = faer::Mat::<f64>::from_fn(d, d, |i, j| {
        let xtx: f64 = xs.iter().map(|x| x[i] * x[j]).sum();
        if i == j {
            xtx + lambda
        } else {
            xtx
        }
    });
    let b = faer::Mat::<f64>::from_fn(d, 1, |i, _| xs.iter().zip(ys).map(|(x, y)| x[i] * y).sum());
    if let Ok(llt) = s.llt(faer::Side::Lower) {
        let w = llt.solve(&b);
        return (0..d).map(|i| w[(i, 0)]).collect();
    }
    // Not positive definite (λ < 0): LU with partial pivoting, NaN when singular.
    let s = DMatrix::from_fn(d, d, |i, j| s[(i, j)]);
    let b = DVector::from_fn(d, |i, _| b[(i, 0)]);
    match s.lu().solve(&b) {
        Some(w) => w.iter().copied().collect(),
        None => vec![f64::NAN; d],
    }
}

/// One full-batch GD step from 0 on the summed loss: `w = 2α Xᵀy`.
pub fn gd_weights(xs: &[Vec<f64>], ys: &[f64], alpha: f64) -> Vec<f64> {
    let Some(d) = xs.first().map(|x| x.len()) else {
        return Vec::new();
    };
    let mut w = vec![0.0; d];
    for (x, &y) in xs.iter().zip(ys) {
        for (wj, xj) in w.iter_mut().zip(x) {
            *wj += xj * y;
        }
    }
    w.iter().map(|v| 2.0 * alpha * v).collect()
}

/// The moment estimator `w = Xᵀy / k` (k = number of examples).
pub fn moment_weights(xs: &[Vec<f64>], ys: &[f64]) -> Vec<f64> {
    let k = xs.len() as f64;
    gd_weights(xs, ys, 0.5).into_iter().map(|v| v / k).collect()
}

/// `w ← w − 2α(x xᵀw − x y + λw)`.
fn sgd_step(w: &mut [f64], x: &[f64], y: f64, alpha: f64, lambda: f64) {
    let r = dot(x, w) - y;
    for (wj, xj) in w.iter_mut().zip(x) {
        *wj -= 2.0 * alpha * (xj * r + lambda * *wj);
    }
}

/// One pass of SGD (batch size 1) from 0 over the examples in order.
pub fn sgd_weights(xs: &[Vec<f64>], ys: &[f64], alpha: f64, lambda: f64) -> Vec<f64> {
    let Some(d) = xs.first().map(|x| x.len()) else {
        return Vec::new();
    };
    let mut w = vec![0.0; d];
    for (x, &y) in xs.iter().zip(ys) {
        sgd_step(&mut w, x, y, alpha, lambda);
    }
    w
}

fn knn_predict(xs: &[Vec<f64>], ys: &[f64], q: &[f64], k: usize, weighted: bool) -> f64 {
    if xs.is_empty() || k == 0 {
        return 0.0;
    }
    let mut by_dist: Vec<(f64, usize)> = xs
        .iter()
        .enumerate()
        .map(|(i, x)| {
            (
                x.iter().zip(q).map(|(a, b)| (a - b) * (a - b)).sum::<f64>(),
                i,
            )
        })
        .collect();
    // Stable sort: equal distances keep example order.
    by_dist.sort_by(|a, b| a.0.total_cmp(&b.0));
    let near = &by_dist[..k.min(by_dist.len())];
    if !weighted {
        return near.iter().map(|&(_, i)| ys[i]).sum::<f64>() / near.len() as f64;
    }
    let exact: Vec<f64> = near
        .iter()
        .filter(|e| e.0 == 0.0)
        .map(|&(_, i)| ys[i])
        .collect();
    if !exact.is_empty() {
        return exact.iter().sum::<f64>() / exact.len() as f64;
    }
    let (num, den) = near.iter().fold((0.0, 0.0), |(n, d), &(d2, i)| {
        (n + ys[i] / d2, d + 1.0 / d2)
    });
    num / den
}
