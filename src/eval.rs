//! Evaluation of any model directory (trained or compiled) on sampled in-context regression
//! prompts: mean squared error at each prefix length next to OLS, ridge(λ) and the zero predictor.
//!
//! The baselines here are small local f64 solvers (nalgebra); they are the same estimators as
//! DESIGN §6's (OLS = minimum-norm least squares, ridge = (XᵀX + λI)⁻¹Xᵀy).

use crate::model::{ModelError, Transformer};
use crate::prompt::{Prompt, PromptDistribution};
use nalgebra::{DMatrix, DVector};

/// Minimum-norm least squares (λ = 0) or ridge (λ > 0) weights from the first `k` examples.
/// With k = 0 the weights are 0.
pub fn fit_weights(p: &Prompt, k: usize, lambda: f64) -> Vec<f64> {
    let d = p.d();
    if k == 0 {
        return vec![0.0; d];
    }
    let x = DMatrix::from_fn(k, d, |i, j| p.xs[i][j]);
    let y = DVector::from_iterator(k, p.ys[..k].iter().copied());
    if lambda > 0.0 {
        // (XᵀX + λI) is SPD for λ > 0: Cholesky solve.
        let a = x.transpose() * &x + DMatrix::identity(d, d) * lambda;
        let b = x.transpose() * y;
        match a.cholesky() {
            Some(c) => c.solve(&b).iter().copied().collect(),
            None => vec![f64::NAN; d],
        }
    } else {
        // Minimum-norm solution X⁺y via the SVD; singular values below a relative tolerance
        // count as zero (the same cut as numpy's lstsq default: max(k, d)·eps·σ_max).
        let svd = x.svd(true, true);
        let smax = svd.singular_values.iter().cloned().fold(0.0, f64::max);
        let tol = (k.max(d) as f64) * f64::EPSILON * smax;
        match svd.solve(&y, tol) {
            Ok(w) => w.iter().copied().collect(),
            Err(_) => vec![f64::NAN; d],
        }
    }
}

/// Prediction for the query x_{k+1} (i.e. at x̃_{k+1}) from the first k examples.
pub fn predict_at(p: &Prompt, k: usize, lambda: f64) -> f64 {
    let w = fit_weights(p, k, lambda);
    w.iter().zip(&p.xs[k]).map(|(a, b)| a * b).sum()
}

/// Baseline predictions at every x̃ column (n+1 per prompt).
pub fn baseline_predictions(p: &Prompt, lambda: f64) -> Vec<f64> {
    (0..=p.n()).map(|k| predict_at(p, k, lambda)).collect()
}

/// Mean over prompts and x̃ positions of (prediction − target)².
pub fn mean_squared_error(preds: &[Vec<f64>], prompts: &[Prompt]) -> f64 {
    let mut s = 0.0;
    let mut c = 0usize;
    for (pr, p) in preds.iter().zip(prompts) {
        for (a, y) in pr.iter().zip(&p.ys) {
            s += (a - y) * (a - y);
            c += 1;
        }
    }
    s / c.max(1) as f64
}

/// One row of the evaluation table: errors after `k` examples (predicting at x̃_{k+1}).
#[derive(Debug, Clone, serde::Serialize)]
pub struct EvalRow {
    pub k: usize,
    pub model: f64,
    pub ols: f64,
    pub ridge: f64,
    pub zero: f64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct EvalReport {
    pub prompts: usize,
    pub seed: u64,
    pub lambda: f64,
    pub d: usize,
    pub n: usize,
    pub rows: Vec<EvalRow>,
}

/// Run `count` prompts from `dist` (seeded) through the model and the baselines.
pub fn evaluate(
    model: &Transformer,
    dist: &PromptDistribution,
    count: usize,
    seed: u64,
    lambda: f64,
) -> Result<EvalReport, ModelError> {
    if count == 0 {
        return Err(ModelError::Input("--prompts must be at least 1".into()));
    }
    if !(lambda.is_finite() && lambda > 0.0) {
        return Err(ModelError::Input(format!(
            "--lambda must be a positive number, found {lambda}"
        )));
    }
    if 2 * dist.n + 1 > model.config.max_len {
        return Err(ModelError::Input(format!(
            "n = {} needs 2n+1 = {} columns but the model's max_len is {}",
            dist.n,
            2 * dist.n + 1,
            model.config.max_len
        )));
    }
    let prompts = dist.sample_batch(count, seed);
    let preds = model.predict_prompts(&prompts)?;
    let n = dist.n;
    let mut rows: Vec<EvalRow> = (0..=n)
        .map(|k| EvalRow {
            k,
            model: 0.0,
            ols: 0.0,
            ridge: 0.0,
            zero: 0.0,
        })
        .collect();
    for (p, pr) in prompts.iter().zip(&preds) {
        for k in 0..=n {
            let y = p.ys[k];
            let r = &mut rows[k];
            r.model += (pr[k] - y).powi(2);
            r.ols += (predict_at(p, k, 0.0) - y).powi(2);
            r.ridge += (predict_at(p, k, lambda) - y).powi(2);
            r.zero += y * y;
        }
    }
    let c = count as f64;
    for r in &mut rows {
        r.model /= c;
        r.ols /= c;
        r.ridge /= c;
        r.zero /= c;
    }
    Ok(EvalReport {
        prompts: count,
        seed,
        lambda,
        d: dist.d,
        n,
        rows,
    })
}

impl EvalReport {
    /// A fixed-width table, one line per prefix length.
    pub fn table(&self) -> String {
        let mut s = format!(
            "mean squared error over {} prompts (seed {}, d = {}, n = {}); k = examples before the query\n",
            self.prompts, self.seed, self.d, self.n
        );
        s += &format!(
            "{:>4}  {:>12}  {:>12}  {:>12}  {:>12}\n",
            "k",
            "model",
            "OLS",
            format!("ridge({})", self.lambda),
            "zero"
        );
        for r in &self.rows {
            s += &format!(
                "{:>4}  {:>12.4e}  {:>12.4e}  {:>12.4e}  {:>12.4e}\n",
                r.k, r.model, r.ols, r.ridge, r.zero
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ols_recovers_w_once_determined_and_is_min_norm_before() {
        let dist = PromptDistribution::new(3, 6);
        let p = &dist.sample_batch(1, 3)[0];
        // With k ≥ d generic noiseless examples, OLS is exact.
        let w = fit_weights(p, 4, 0.0);
        for (a, b) in w.iter().zip(&p.w) {
            assert!((a - b).abs() < 1e-9, "{w:?} vs {:?}", p.w);
        }
        // With one example, the min-norm solution is x_1 y_1 / |x_1|².
        let w1 = fit_weights(p, 1, 0.0);
        let n2: f64 = p.xs[0].iter().map(|v| v * v).sum();
        for (j, wj) in w1.iter().enumerate() {
            assert!((wj - p.xs[0][j] * p.ys[0] / n2).abs() < 1e-12);
        }
        // Ridge with one example: w = x y / (|x|² + λ) (Sherman–Morrison on λI).
        let wr = fit_weights(p, 1, 0.5);
        for (j, wj) in wr.iter().enumerate() {
            assert!((wj - p.xs[0][j] * p.ys[0] / (n2 + 0.5)).abs() < 1e-12);
        }
    }
}
