//! `icl implicit`: the implicit linear model of any learner (von Oswald et al. 2023, §3; Dai et
//! al. 2023; docs/ANALYSIS.md, "Attention as implicit finetuning (Dai et al.)").
//!
//! At every k = 0…n the implicit weights are ŵ_k = ∂ŷ/∂x_q, the derivative of the prediction at
//! the query column x̃_{k+1} (column 2k) with respect to the query's x:
//! - model directories: by autograd, the token tensor a Candle `Var`, one backward pass per k of
//!   the sum over prompts of the prediction at column 2k (prompts are independent, so that sum's
//!   gradient holds every prompt's own ŵ_k); run the model in f64 for exact derivatives;
//! - `.icl` programs and non-linear solvers: by basis queries, ŵ_i = ŷ(e_i) − ŷ(0) (the query
//!   replaced in a copy of the prompt, docs/ANALYSIS.md "ILWD"); the report gives the largest
//!   |ŷ(0)| and the largest |ŷ(x_q) − ŷ(0) − ŵᵀx_q| over prompts and k, which is 0 exactly when
//!   the learner is affine along the actual query — linearity is checked there, not assumed;
//! - linear solvers: their own weights.
//!
//! The references, from the same k examples: one-step GD at its best step size per k, GD with a
//! few steps (step size tuned per k), ridge(λ) and OLS.
//!
//! **The best one-step GD step size.** One step from 0 on the summed loss gives
//! ŷ = 2α sᵀx_q, s = Σ_{i≤k} y_i x_i = Xᵀy. For x ~ N(0, I_d), w ~ N(0, τ²I), y = wᵀx + ε,
//! ε ~ N(0, σ²), write a = sᵀx_q and y_q = wᵀx_q + ε_q. Then
//! E[a·y_q] = E[sᵀw] = E[wᵀXᵀXw] = τ² E tr(XᵀX) = kdτ², and
//! E[a²] = E‖s‖² = E[wᵀ(XᵀX)²w] + σ² E tr(XᵀX) = τ² E tr((XᵀX)²) + kdσ²
//!       = kd(τ²(k + d + 1) + σ²), by the Wishart moment E tr((XᵀX)²) = kd(k + d + 1).
//! MSE(α) = E(y_q − 2α a)² = dτ² + σ² − 2(2α)kdτ² + (2α)²kd(τ²(k+d+1) + σ²) is a parabola in 2α
//! with minimum at 2α* = τ²/(τ²(k + d + 1) + σ²) (noiseless, τ = 1: α* = 1/(2(k + d + 1))), where
//! MSE* = dτ² + σ² − kdτ⁴/(τ²(k + d + 1) + σ²). For other prompt distributions (shifted or
//! scaled or uniform x, a fixed w) the formula does not apply and 2α* is fitted on the prompts
//! themselves: the least-squares scalar Σ a·y_q / Σ a² over prompts (the report says which).
//!
//! **Multi-step GD.** S steps w ← w + 2α Xᵀ(y − Xw) from 0. Its step size is tuned per k on the
//! prompts themselves (the evaluation prompts: one scalar per k and S, so the optimism is small):
//! the best MSE to y_{k+1} over the grid 2α(k + d + 1) ∈ {0.02·100^{i/29}, i = 0…29}, i.e. 0.02…2
//! in 30 geometric steps (2α(k + d + 1) ≈ 2 is the edge of stability for x ~ N(0, I)).

use super::{cell, drawable_panels, finite_mean};
use crate::analysis::figures::slug;
use crate::analysis::learner::{Learner, LearnerKind, Source};
use crate::analysis::prompt_set::PromptSet;
use crate::analysis::stats::{bootstrap_mean, cosine, Interval};
use crate::model::{TraceOptions, Transformer};
use crate::plot::{self, Figure, LineChart, Scale, Series};
use crate::prompt::{Prompt, PromptDistribution, XFamily};
use crate::solvers::Solver;
use candle_core::{DType as CDType, Var};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Weights per prompt, per k = 0…n: `w[prompt][k]` (length d).
pub type Weights = Vec<Vec<Vec<f64>>>;

/// Xᵀy and XᵀX of the first k examples of one prompt.
type Moments = (Vec<f64>, Vec<Vec<f64>>);

/// The best step size α of one-step GD after k examples (module doc):
/// 2α* = τ²/(τ²(k + d + 1) + σ²).
pub fn alpha_star(d: usize, k: usize, tau: f64, sigma: f64) -> f64 {
    let t2 = tau * tau;
    0.5 * t2 / (t2 * (k + d + 1) as f64 + sigma * sigma)
}

/// The MSE (not divided by d) of one-step GD with step α after k examples, for x ~ N(0, I),
/// w ~ N(0, τ²I), noise σ (module doc).
pub fn gd_mse(d: usize, k: usize, tau: f64, sigma: f64, alpha: f64) -> f64 {
    let (t2, s2, a2, kd) = (tau * tau, sigma * sigma, 2.0 * alpha, (k * d) as f64);
    d as f64 * t2 + s2 - 2.0 * a2 * kd * t2 + a2 * a2 * kd * (t2 * (k + d + 1) as f64 + s2)
}

/// Whether [`alpha_star`] applies: x ~ N(0, I), w ~ N(0, τ²I) with τ > 0.
pub fn formula_applies(dist: &PromptDistribution) -> bool {
    dist.x_family == XFamily::Normal
        && dist.x_scale == 1.0
        && dist.x_shift == 0.0
        && dist.w_fixed.is_none()
        && dist.w_std > 0.0
}

/// Xᵀy and XᵀX of the first k examples.
fn moments(p: &Prompt, k: usize) -> Moments {
    let d = p.d();
    let (mut b, mut g) = (vec![0.0; d], vec![vec![0.0; d]; d]);
    for i in 0..k {
        let x = &p.xs[i];
        for r in 0..d {
            b[r] += x[r] * p.ys[i];
            for c in 0..d {
                g[r][c] += x[r] * x[c];
            }
        }
    }
    (b, g)
}

/// `steps` steps of GD w ← w + 2α(b − Gw) from 0, with b = Xᵀy, G = XᵀX.
pub fn gd_steps(b: &[f64], g: &[Vec<f64>], alpha: f64, steps: usize) -> Vec<f64> {
    let mut w = vec![0.0; b.len()];
    for _ in 0..steps {
        let grad: Vec<f64> = (0..b.len())
            .map(|r| b[r] - g[r].iter().zip(&w).map(|(a, c)| a * c).sum::<f64>())
            .collect();
        for (wi, gi) in w.iter_mut().zip(grad) {
            *wi += 2.0 * alpha * gi;
        }
    }
    w
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The step size of `steps`-step GD with the least MSE to y_{k+1} over `prompts` on the grid of
/// the module doc (ties: the smallest step).
pub fn tune_gd(prompts: &[Prompt], mom: &[Moments], k: usize, steps: usize) -> f64 {
    let d = prompts[0].d();
    let mut best = (f64::INFINITY, 0.0);
    for i in 0..30 {
        let eta = 0.02 * 100f64.powf(i as f64 / 29.0);
        let alpha = eta / (2.0 * (k + d + 1) as f64);
        let mse: f64 = prompts
            .iter()
            .zip(mom)
            .map(|(p, (b, g))| (dot(&gd_steps(b, g, alpha, steps), &p.xs[k]) - p.ys[k]).powi(2))
            .sum();
        if mse < best.0 {
            best = (mse, alpha);
        }
    }
    best.1
}

/// A reference learner's weights after k examples, per prompt and k.
#[derive(Debug, Clone, Serialize)]
pub struct Reference {
    pub label: String,
    /// How its constants were chosen.
    pub how: String,
    /// The step size per k (GD references).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alphas: Option<Vec<f64>>,
    #[serde(skip)]
    pub weights: Weights,
}

/// The references of the module doc on `set`: GD-1 at α*_k, GD-S for each S in `steps`, ridge(λ)
/// (λ given, else the task's Bayes λ = σ²/τ²; left out when 0, where it is OLS) and OLS.
pub fn references(set: &PromptSet, steps: &[usize], lambda: Option<f64>) -> Vec<Reference> {
    let (d, n, ps) = (set.d(), set.n(), &set.prompts);
    let mom: Vec<Vec<Moments>> = (0..=n)
        .map(|k| ps.iter().map(|p| moments(p, k)).collect())
        .collect();
    let dist = &set.dist;
    let formula = formula_applies(dist);
    let alpha1: Vec<f64> = (0..=n)
        .map(|k| match formula {
            true => alpha_star(d, k, dist.w_std, dist.noise_std),
            false => fitted_alpha(ps, &mom[k], k),
        })
        .collect();
    let gd = |label: String, how: String, alphas: Vec<f64>, s: usize| Reference {
        weights: ps
            .iter()
            .enumerate()
            .map(|(i, _)| {
                (0..=n)
                    .map(|k| gd_steps(&mom[k][i].0, &mom[k][i].1, alphas[k], s))
                    .collect()
            })
            .collect(),
        label,
        how,
        alphas: Some(alphas),
    };
    let how1 = if formula {
        "α*_k = τ²/(2(τ²(k+d+1)+σ²)) (x ~ N(0, I))"
    } else {
        "α*_k fitted on the prompts (least squares; the N(0, I) formula does not apply)"
    };
    let mut refs = vec![gd("gd-1(α*)".into(), how1.into(), alpha1, 1)];
    for &s in steps {
        let alphas = (0..=n).map(|k| tune_gd(ps, &mom[k], k, s)).collect();
        let how = "step size tuned per k on the prompts: least MSE over 2α(k+d+1) ∈ 0.02…2 (30 geometric steps)";
        refs.push(gd(format!("gd-{s}"), how.into(), alphas, s));
    }
    let solver_ref = |s: Solver, how: &str| Reference {
        label: s.name(),
        how: how.into(),
        alphas: None,
        weights: ps
            .iter()
            .map(|p| {
                (0..=n)
                    .map(|k| {
                        let w = s.weights(&p.xs[..k], &p.ys[..k]);
                        if w.is_empty() {
                            vec![0.0; d]
                        } else {
                            w
                        }
                    })
                    .collect()
            })
            .collect(),
    };
    let (lam, how) = match lambda {
        Some(l) => (Some(l), "λ given"),
        None => (dist.bayes_lambda(), "the task's Bayes λ = σ²/τ²"),
    };
    if let Some(l) = lam.filter(|&l| l > 0.0) {
        refs.push(solver_ref(Solver::Ridge { lambda: l }, how));
    }
    refs.push(solver_ref(Solver::Ols, "minimum-norm least squares"));
    refs
}

/// 2α = Σ a·y / Σ a² with a = sᵀx_q over the prompts (0 when every a is 0, e.g. k = 0).
fn fitted_alpha(ps: &[Prompt], mom: &[Moments], k: usize) -> f64 {
    let (mut ay, mut aa) = (0.0, 0.0);
    for (p, (b, _)) in ps.iter().zip(mom) {
        let a = dot(b, &p.xs[k]);
        ay += a * p.ys[k];
        aa += a * a;
    }
    if aa > 0.0 {
        0.5 * ay / aa
    } else {
        0.0
    }
}

/// ŵ_k = ∂ŷ/∂x_q at every query column of every prompt, by autograd (module doc), and the
/// predictions ŷ at the actual queries. Run the model in f64 for exact derivatives.
pub fn model_weights(
    model: &Transformer,
    prompts: &[Prompt],
) -> anyhow::Result<(Weights, Vec<Vec<f64>>)> {
    let d = model.config.d;
    let (mut weights, mut preds) = (Vec::new(), Vec::new());
    for chunk in prompts.chunks(128) {
        let n = chunk[0].n();
        let tokens = model.prompts_tensor(chunk)?.to_dtype(model.dtype())?;
        let var = Var::from_tensor(&tokens)?;
        let pred = model
            .forward_traced(var.as_tensor(), &TraceOptions::default())?
            .pred;
        let p64 = pred.to_dtype(CDType::F64)?.to_vec2::<f64>()?;
        preds.extend(
            p64.into_iter()
                .map(|r| r.into_iter().step_by(2).collect::<Vec<_>>()),
        );
        let mut w: Weights = vec![Vec::with_capacity(n + 1); chunk.len()];
        for k in 0..=n {
            let grads = pred.narrow(1, 2 * k, 1)?.sum_all()?.backward()?;
            let g = match grads.get(var.as_tensor()) {
                Some(g) => g
                    .narrow(1, 2 * k, 1)?
                    .narrow(2, 1, d)?
                    .to_dtype(CDType::F64)?
                    .squeeze(1)?
                    .to_vec2::<f64>()?,
                // The prediction does not depend on the tokens at all.
                None => vec![vec![0.0; d]; chunk.len()],
            };
            for (wp, gp) in w.iter_mut().zip(g) {
                wp.push(gp);
            }
        }
        weights.extend(w);
    }
    Ok((weights, preds))
}

/// How far a learner read by basis queries is from linear in the query (module doc).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Linearity {
    /// max |ŷ(0)| over prompts and k.
    pub max_intercept: f64,
    /// max |ŷ(x_q) − ŷ(0) − ŵᵀx_q| over prompts and k.
    pub max_deviation: f64,
    /// max |ŷ(x_q)|, for scale.
    pub max_prediction: f64,
}

/// ŵ_i = ŷ(e_i) − ŷ(0) at every query column by basis queries, and the linearity check along
/// the actual query (module doc). `preds` are the learner's predictions at the actual queries.
pub fn basis_weights(
    learner: &Learner,
    prompts: &[Prompt],
    preds: &[Vec<f64>],
) -> anyhow::Result<(Weights, Linearity)> {
    let d = prompts[0].d();
    let mut probes = vec![vec![0.0; d]];
    probes.extend((0..d).map(|i| (0..d).map(|j| f64::from(u8::from(i == j))).collect()));
    let requests: Vec<(&Prompt, usize, &[Vec<f64>])> = prompts
        .iter()
        .flat_map(|p| (0..=p.n()).map(move |k| (p, k, &[] as &[Vec<f64>])))
        .map(|(p, k, _)| (p, k, probes.as_slice()))
        .collect();
    let answers = learner.predict_probes(&requests)?;
    let mut lin = Linearity {
        max_intercept: 0.0,
        max_deviation: 0.0,
        max_prediction: 0.0,
    };
    let mut it = answers.into_iter();
    let mut weights = Vec::with_capacity(prompts.len());
    for (p, yp) in prompts.iter().zip(preds) {
        let mut wp = Vec::with_capacity(p.n() + 1);
        for (k, &y) in yp.iter().enumerate().take(p.n() + 1) {
            let r = it
                .next()
                .ok_or_else(|| anyhow::anyhow!("internal: missing probe answers"))?;
            let w: Vec<f64> = r[1..].iter().map(|v| v - r[0]).collect();
            lin.max_intercept = lin.max_intercept.max(r[0].abs());
            lin.max_deviation = lin.max_deviation.max((y - r[0] - dot(&w, &p.xs[k])).abs());
            lin.max_prediction = lin.max_prediction.max(y.abs());
            wp.push(w);
        }
        weights.push(wp);
    }
    Ok((weights, lin))
}

/// A learner's implicit weights and predictions, with how they were read.
pub struct Fit {
    pub weights: Weights,
    pub preds: Vec<Vec<f64>>,
    pub method: String,
    pub linearity: Option<Linearity>,
}

/// The implicit weights of `learner` on `prompts` by the method of the module doc.
pub fn learner_weights(learner: &Learner, prompts: &[Prompt]) -> anyhow::Result<Fit> {
    if let Source::Model { model, .. } = &learner.source {
        let (weights, preds) = model_weights(model, prompts)?;
        let method = format!("autograd ∂ŷ/∂x_q ({:?})", model.dtype()).to_lowercase();
        return Ok(Fit {
            weights,
            preds,
            method,
            linearity: None,
        });
    }
    let preds = learner.predict(prompts)?;
    if learner.solver().is_some_and(|s| s.is_linear()) {
        let weights = prompts
            .iter()
            .map(|p| {
                (0..=p.n())
                    .map(|k| {
                        learner
                            .own_weights(p, k)
                            .unwrap_or_else(|| vec![0.0; p.d()])
                    })
                    .collect()
            })
            .collect();
        return Ok(Fit {
            weights,
            preds,
            method: "own weights".into(),
            linearity: None,
        });
    }
    let (weights, lin) = basis_weights(learner, prompts, &preds)?;
    Ok(Fit {
        weights,
        preds,
        method: "basis queries ŷ(e_i) − ŷ(0)".into(),
        linearity: Some(lin),
    })
}

/// One learner against one reference, per k: means over prompts with 95% bootstrap intervals.
#[derive(Debug, Clone, Serialize)]
pub struct VsReference {
    pub reference: String,
    /// von Oswald's "model cos": cos(ŵ, w_ref) (prompts where both are non-zero).
    pub cos: Vec<Interval>,
    /// Prompts where the cosine is defined, per k.
    pub cos_defined: Vec<usize>,
    /// "model diff": ‖ŵ − w_ref‖.
    pub diff: Vec<Interval>,
    /// "preds diff": |ŷ − w_refᵀx_q| at the actual query.
    pub preds_diff: Vec<Interval>,
}

/// One learner's implicit model.
#[derive(Debug, Clone, Serialize)]
pub struct LearnerReport {
    pub label: String,
    pub spec: String,
    pub kind: LearnerKind,
    pub method: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub linearity: Option<Linearity>,
    /// MSE / d to y_{k+1} per k.
    pub mse: Vec<f64>,
    /// Mean ‖ŵ‖ per k.
    pub weight_norm: Vec<f64>,
    pub vs: Vec<VsReference>,
}

/// A reference's description and its MSE / d per k.
#[derive(Debug, Clone, Serialize)]
pub struct ReferenceReport {
    #[serde(flatten)]
    pub reference: Reference,
    pub mse: Vec<f64>,
}

/// Everything `icl implicit` reports (`--json`).
#[derive(Debug, Clone, Serialize)]
pub struct ImplicitReport {
    pub format: String,
    pub prompts_source: String,
    pub distribution: String,
    pub prompts: usize,
    pub d: usize,
    pub n: usize,
    pub references: Vec<ReferenceReport>,
    pub learners: Vec<LearnerReport>,
}

/// Options of `icl implicit`.
#[derive(Debug, Clone)]
pub struct ImplicitOptions {
    /// Steps of the multi-step GD references.
    pub gd_steps: Vec<usize>,
    /// λ of the ridge reference (default: the task's Bayes λ).
    pub lambda: Option<f64>,
    /// Bootstrap resamples and seed.
    pub resamples: usize,
    pub seed: u64,
}

/// MSE / d to y_{k+1} of predictions `preds[prompt][k]`.
fn mse_per_k(prompts: &[Prompt], preds: &[Vec<f64>]) -> Vec<f64> {
    let (n, d) = (prompts[0].n(), prompts[0].d() as f64);
    (0..=n)
        .map(|k| {
            let s: f64 = prompts
                .iter()
                .zip(preds)
                .map(|(p, y)| (y[k] - p.ys[k]).powi(2))
                .sum();
            s / (prompts.len() as f64 * d)
        })
        .collect()
}

/// Predictions wᵀx_{k+1} of weights per prompt and k.
fn preds_of(prompts: &[Prompt], w: &Weights) -> Vec<Vec<f64>> {
    prompts
        .iter()
        .zip(w)
        .map(|(p, wp)| {
            wp.iter()
                .enumerate()
                .map(|(k, wk)| dot(wk, &p.xs[k]))
                .collect()
        })
        .collect()
}

/// One learner's fit against one reference, per k (k indexes several per-prompt tables at once).
#[allow(clippy::needless_range_loop)]
fn vs_reference(
    prompts: &[Prompt],
    fit: &Fit,
    r: &Reference,
    opts: &ImplicitOptions,
) -> VsReference {
    let n = prompts[0].n();
    let rp = preds_of(prompts, &r.weights);
    let boot = |v: Vec<f64>, k: usize| {
        let v: Vec<f64> = v.into_iter().filter(|x| x.is_finite()).collect();
        (
            bootstrap_mean(&v, opts.resamples, opts.seed.wrapping_add(k as u64)),
            v.len(),
        )
    };
    let mut out = VsReference {
        reference: r.label.clone(),
        cos: vec![],
        cos_defined: vec![],
        diff: vec![],
        preds_diff: vec![],
    };
    for k in 0..=n {
        let per = |f: &dyn Fn(usize) -> f64| (0..prompts.len()).map(f).collect::<Vec<f64>>();
        let (cos, defined) = boot(per(&|i| cosine(&fit.weights[i][k], &r.weights[i][k])), k);
        let diff = per(&|i| {
            let dv: Vec<f64> = fit.weights[i][k]
                .iter()
                .zip(&r.weights[i][k])
                .map(|(a, b)| a - b)
                .collect();
            crate::analysis::stats::norm(&dv)
        });
        out.cos.push(cos);
        out.cos_defined.push(defined);
        out.diff.push(boot(diff, k).0);
        out.preds_diff
            .push(boot(per(&|i| (fit.preds[i][k] - rp[i][k]).abs()), k).0);
    }
    out
}

/// `icl implicit`: every learner's implicit weights against the references on `set`.
pub fn implicit(
    learners: &[Learner],
    set: &PromptSet,
    source: &str,
    opts: &ImplicitOptions,
) -> anyhow::Result<ImplicitReport> {
    let ps = &set.prompts;
    anyhow::ensure!(!ps.is_empty(), "no prompts");
    let refs = references(set, &opts.gd_steps, opts.lambda);
    let mut reports = Vec::new();
    for l in learners {
        l.check_fits(&set.dist)?;
        let fit =
            learner_weights(l, ps).map_err(|e| anyhow::anyhow!("learner `{}`: {e:#}", l.spec))?;
        let weight_norm = (0..=set.n())
            .map(|k| {
                finite_mean(
                    fit.weights
                        .iter()
                        .map(|w| crate::analysis::stats::norm(&w[k])),
                )
                .0
            })
            .collect();
        reports.push(LearnerReport {
            label: l.label.clone(),
            spec: l.spec.clone(),
            kind: l.kind(),
            method: fit.method.clone(),
            linearity: fit.linearity,
            mse: mse_per_k(ps, &fit.preds),
            weight_norm,
            vs: refs
                .iter()
                .map(|r| vs_reference(ps, &fit, r, opts))
                .collect(),
        });
    }
    Ok(ImplicitReport {
        format: "icl-implicit/1".into(),
        prompts_source: source.into(),
        distribution: set.dist.spec(),
        prompts: ps.len(),
        d: set.d(),
        n: set.n(),
        references: refs
            .into_iter()
            .map(|r| ReferenceReport {
                mse: mse_per_k(ps, &preds_of(ps, &r.weights)),
                reference: r,
            })
            .collect(),
        learners: reports,
    })
}

/// The mean over k in `ks` of the per-k means.
fn mean_k(v: &[Interval], ks: std::ops::Range<usize>) -> f64 {
    finite_mean(
        v.iter()
            .enumerate()
            .filter(|(k, _)| ks.contains(k))
            .map(|(_, x)| x.mean),
    )
    .0
}

impl ImplicitReport {
    /// Aligned tables: per learner, one row per reference (means over k < d and k ≥ d of the
    /// per-k means over prompts), and the MSE of everything.
    pub fn table(&self) -> String {
        let (d, n) = (self.d, self.n);
        let mut s = format!(
            "implicit linear models ŵ = ∂ŷ/∂x_q: {} prompts, {} (d = {d}, n = {n})\n",
            self.prompts, self.distribution
        );
        for r in &self.references {
            s += &format!("reference {}: {}\n", r.reference.label, r.reference.how);
        }
        for l in &self.learners {
            s += &format!(
                "\n{} ({}; MSE/d mean over k = {})\n",
                l.label,
                l.method,
                cell(finite_mean(l.mse.iter().copied()).0)
            );
            if let Some(lin) = l.linearity {
                s += &format!(
                    "  linearity in the query: max |ŷ(0)| = {}, max |ŷ(x_q) − ŷ(0) − ŵᵀx_q| = {} (max |ŷ| = {})\n",
                    cell(lin.max_intercept), cell(lin.max_deviation), cell(lin.max_prediction)
                );
            }
            s += &format!(
                "  {:<12} {:>9} {:>9} {:>11} {:>11} {:>11} {:>11}\n",
                "reference", "cos k<d", "cos k≥d", "‖Δw‖ k<d", "‖Δw‖ k≥d", "|Δŷ| k<d", "|Δŷ| k≥d"
            );
            for v in &l.vs {
                let (u, o) = (0..d.min(n + 1), d.min(n + 1)..n + 1);
                s += &format!(
                    "  {:<12} {:>9} {:>9} {:>11} {:>11} {:>11} {:>11}\n",
                    v.reference,
                    cell(mean_k(&v.cos, u.clone())),
                    cell(mean_k(&v.cos, o.clone())),
                    cell(mean_k(&v.diff, u.clone())),
                    cell(mean_k(&v.diff, o.clone())),
                    cell(mean_k(&v.preds_diff, u)),
                    cell(mean_k(&v.preds_diff, o))
                );
            }
        }
        s += "\nMSE/d per k:\n";
        let mut rows: Vec<(&str, &[f64])> = self
            .learners
            .iter()
            .map(|l| (l.label.as_str(), l.mse.as_slice()))
            .collect();
        rows.extend(
            self.references
                .iter()
                .map(|r| (r.reference.label.as_str(), r.mse.as_slice())),
        );
        s += &format!(
            "  {:<14}{}\n",
            "k",
            (0..=n).map(|k| format!("{k:>9}")).collect::<String>()
        );
        for (label, m) in rows {
            s += &format!(
                "  {label:<14}{}\n",
                m.iter()
                    .map(|v| format!("{:>9}", cell(*v)))
                    .collect::<String>()
            );
        }
        s
    }

    /// Per learner `implicit-<label>.{png,svg}`: model cos, model diff, preds diff (one line per
    /// reference) and MSE / d, against k.
    pub fn plot(&self, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
        let mut files = Vec::new();
        for l in &self.learners {
            let per_k = |v: &[Interval]| {
                v.iter()
                    .enumerate()
                    .map(|(k, x)| (k as f64, x.mean))
                    .collect()
            };
            let chart = |title: &str,
                         y: &str,
                         f: &dyn Fn(&VsReference) -> &[Interval],
                         scale: Scale| LineChart {
                title: format!("{title}: {}", l.label),
                x_label: "k (examples before the query)".into(),
                y_label: y.into(),
                series: l
                    .vs
                    .iter()
                    .map(|v| Series::new(v.reference.clone(), per_k(f(v))))
                    .collect(),
                x_scale: Scale::Linear,
                y_scale: scale,
            };
            let mut mse = LineChart::new(
                format!("MSE / d: {}", l.label),
                "k (examples before the query)",
                "MSE / d",
            );
            mse.x_scale = Scale::Linear;
            mse.series.push(Series::new(
                l.label.clone(),
                l.mse
                    .iter()
                    .enumerate()
                    .map(|(k, v)| (k as f64, *v))
                    .collect(),
            ));
            for r in &self.references {
                mse.series.push(Series::new(
                    r.reference.label.clone(),
                    r.mse
                        .iter()
                        .enumerate()
                        .map(|(k, v)| (k as f64, *v))
                        .collect(),
                ));
            }
            let panels = drawable_panels(vec![
                chart("model cos", "cos(ŵ, w_ref)", &|v| &v.cos, Scale::Linear),
                chart("model diff", "‖ŵ − w_ref‖", &|v| &v.diff, Scale::Auto),
                chart("preds diff", "|ŷ − ŷ_ref|", &|v| &v.preds_diff, Scale::Auto),
                mse,
            ]);
            anyhow::ensure!(!panels.is_empty(), "{}: nothing to plot", l.label);
            let stem = dir.join(format!("implicit-{}", slug(&l.label)));
            files.extend(plot::write_figure(&Figure::new(panels, 2), &stem)?);
        }
        Ok(files)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_gd_step_is_the_closed_form_and_more_steps_approach_ols() {
        let b = vec![1.0, -2.0];
        let g = vec![vec![2.0, 0.5], vec![0.5, 1.0]];
        assert_eq!(gd_steps(&b, &g, 0.1, 1), vec![0.2, -0.4]);
        // Many small steps converge to G⁻¹b.
        let w = gd_steps(&b, &g, 0.1, 2000);
        let det = 2.0 * 1.0 - 0.25;
        let ols = [
            (1.0 * 1.0 - 0.5 * -2.0) / det,
            (2.0 * -2.0 - 0.5 * 1.0) / det,
        ];
        assert!(
            (w[0] - ols[0]).abs() < 1e-12 && (w[1] - ols[1]).abs() < 1e-12,
            "{w:?}"
        );
    }

    #[test]
    fn alpha_star_minimises_the_predicted_mse() {
        for (d, k, tau, sigma) in [(4, 3, 1.0, 0.0), (2, 8, 0.5, 0.3)] {
            let a = alpha_star(d, k, tau, sigma);
            let m = gd_mse(d, k, tau, sigma, a);
            assert!(
                m < gd_mse(d, k, tau, sigma, a * 1.01) && m < gd_mse(d, k, tau, sigma, a * 0.99)
            );
        }
        assert_eq!(alpha_star(4, 3, 1.0, 0.0), 1.0 / (2.0 * 8.0));
    }
}
