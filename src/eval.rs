//! Evaluation of any model directory (trained or compiled) on sampled in-context regression
//! prompts: mean squared error at each prefix length next to OLS, ridge(λ) and the zero predictor.
//!
//! The baselines are icl::solvers (f64): OLS (minimum-norm least squares), ridge
//! (XᵀX + λI)⁻¹Xᵀy, and the zero predictor.

use crate::model::{ModelError, Transformer};
use crate::prompt::{Prompt, PromptDistribution};
use crate::solvers::Solver;

/// Baseline predictions at every x̃ column (n+1 per prompt): OLS (minimum norm) for λ = 0,
/// ridge(λ) otherwise (icl::solvers).
pub fn baseline_predictions(p: &Prompt, lambda: f64) -> Vec<f64> {
    if lambda == 0.0 {
        Solver::Ols.predict(p)
    } else {
        Solver::Ridge { lambda }.predict(p)
    }
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
        let ols = Solver::Ols.predict(p);
        let ridge = Solver::Ridge { lambda }.predict(p);
        let zero = Solver::Zero.predict(p);
        for k in 0..=n {
            let y = p.ys[k];
            let r = &mut rows[k];
            r.model += (pr[k] - y).powi(2);
            r.ols += (ols[k] - y).powi(2);
            r.ridge += (ridge[k] - y).powi(2);
            r.zero += (zero[k] - y).powi(2);
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
