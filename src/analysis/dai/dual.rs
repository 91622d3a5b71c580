//! `icl dual`: the dual form of attention (Dai et al. 2023, §3; docs/ANALYSIS.md, "Attention as
//! implicit finetuning (Dai et al.)").
//!
//! For one head at one query column t with scores s_j over the keys it attends (the finite
//! entries of the traced scores: s_j = k_jᵀq/√d_h plus any bias; the null key, when present, is
//! one more key with value 0) and weights p_j = softmax(s)_j (the traced weights):
//!
//! - F = Σ_j p_j v_j, the softmax read (a momentum term, docs/FORMATS.md "Momentum attention", is
//!   not part of it);
//! - F_lin = Σ_j v_j s_j, Dai's linear relaxation ("drop the softmax"): with s_j = k_jᵀq/√d_h it
//!   is ΔW_ICL·q, ΔW_ICL = Σ_j v_j k_jᵀ/√d_h — the same sum, re-associated;
//! - F₁ = v̄ + (1/T) Σ_j (v_j − v̄)(s_j − s̄), the first-order expansion of the softmax around
//!   equal scores (p_j ≈ (1 + s_j − s̄)/T), T the number of attended keys.
//!
//! Reported: ‖F − F₁‖/‖F‖, min_c ‖F − c·F_lin‖/‖F‖ (c = ⟨F, F_lin⟩/‖F_lin‖², 0 when F_lin = 0)
//! and the score spread std_j(s_j). Where ‖F‖ = 0 the two relative errors are undefined (NaN,
//! shown as `—`) and are left out of every mean, which says how many prompts defined it.

use super::{cell, drawable_panels, finite_mean, finite_median};
use crate::model::config::ModelConfig;
use crate::model::{AttnTrace, TraceOptions, Transformer};
use crate::plot::{self, Figure, LineChart, Scale, Series};
use crate::prompt::Prompt;
use candle_core::DType as CDType;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// A head named on the command line (`--heads L:H,…`) that the model lacks, or no attention.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DualError {
    #[error("--heads: `{0}` is not LAYER:HEAD (e.g. 0:1)")]
    HeadSyntax(String),
    #[error("--heads {layer}:{head}: the model has {layers} layers (0…{})", layers.saturating_sub(1))]
    NoLayer {
        layer: usize,
        head: usize,
        layers: usize,
    },
    #[error("--heads {layer}:{head}: layer {layer} has no attention sub-layer")]
    NoAttention { layer: usize, head: usize },
    #[error("--heads {layer}:{head}: layer {layer} has {heads} heads (0…{})", heads - 1)]
    NoHead {
        layer: usize,
        head: usize,
        heads: usize,
    },
    #[error("{model}: the model has no attention sub-layer, so there is no dual form to measure")]
    NoAttentionAtAll { model: String },
}

/// One head of one layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct HeadId {
    pub layer: usize,
    pub head: usize,
}

/// Parse `L:H,L:H,…`.
pub fn parse_heads(spec: &str) -> Result<Vec<HeadId>, DualError> {
    spec.split(',')
        .map(str::trim)
        .map(|item| {
            let (l, h) = item
                .split_once(':')
                .ok_or_else(|| DualError::HeadSyntax(item.into()))?;
            let num = |s: &str| s.trim().parse::<usize>();
            match (num(l), num(h)) {
                (Ok(layer), Ok(head)) => Ok(HeadId { layer, head }),
                _ => Err(DualError::HeadSyntax(item.into())),
            }
        })
        .collect()
}

/// The heads to measure: `wanted` checked against the config, or every head of every layer with
/// attention. `model` names the model in the error for a model without attention.
pub fn select_heads(
    c: &ModelConfig,
    wanted: Option<&[HeadId]>,
    model: &str,
) -> Result<Vec<HeadId>, DualError> {
    let all: Vec<HeadId> = c
        .layers
        .iter()
        .enumerate()
        .flat_map(|(layer, l)| {
            let heads = l.attn.map_or(0, |a| a.heads);
            (0..heads).map(move |head| HeadId { layer, head })
        })
        .collect();
    if all.is_empty() {
        return Err(DualError::NoAttentionAtAll {
            model: model.into(),
        });
    }
    let Some(wanted) = wanted else {
        return Ok(all);
    };
    for &HeadId { layer, head } in wanted {
        let l = c.layers.get(layer).ok_or(DualError::NoLayer {
            layer,
            head,
            layers: c.layers.len(),
        })?;
        let a = l.attn.ok_or(DualError::NoAttention { layer, head })?;
        if head >= a.heads {
            return Err(DualError::NoHead {
                layer,
                head,
                heads: a.heads,
            });
        }
    }
    let mut v = wanted.to_vec();
    v.sort();
    v.dedup();
    Ok(v)
}

/// One key a head attends: its score, its weight and its value.
#[derive(Debug, Clone, Copy)]
pub struct Key<'a> {
    pub score: f64,
    pub prob: f64,
    pub value: &'a [f64],
}

/// The dual-form quantities of one head at one query column (module doc).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct DualPoint {
    /// ‖F‖.
    pub f_norm: f64,
    /// ‖F − F₁‖/‖F‖ (NaN when ‖F‖ = 0).
    pub first_order_err: f64,
    /// min_c ‖F − c·F_lin‖/‖F‖ (NaN when ‖F‖ = 0).
    pub linear_err: f64,
    /// The minimising c (0 when F_lin = 0).
    pub linear_c: f64,
    /// std_j(s_j) over the attended keys (population; NaN with no key).
    pub spread: f64,
    /// Number of attended keys T.
    pub keys: usize,
}

/// The quantities of the module doc for the attended `keys` (value dimension `dim`).
pub fn dual_point(keys: &[Key], dim: usize) -> DualPoint {
    let t = keys.len() as f64;
    let (mut f, mut f_lin, mut vbar) = (vec![0.0; dim], vec![0.0; dim], vec![0.0; dim]);
    let sbar = keys.iter().map(|k| k.score).sum::<f64>() / t;
    for k in keys {
        for i in 0..dim {
            f[i] += k.prob * k.value[i];
            f_lin[i] += k.score * k.value[i];
            vbar[i] += k.value[i] / t;
        }
    }
    let mut f1 = vbar.clone();
    for k in keys {
        for i in 0..dim {
            f1[i] += (k.value[i] - vbar[i]) * (k.score - sbar) / t;
        }
    }
    let norm = |v: &[f64]| crate::analysis::stats::norm(v);
    let f_norm = norm(&f);
    let lin_sq: f64 = f_lin.iter().map(|x| x * x).sum();
    let linear_c = if lin_sq > 0.0 {
        f.iter().zip(&f_lin).map(|(a, b)| a * b).sum::<f64>() / lin_sq
    } else {
        0.0
    };
    let rel = |r: Vec<f64>| {
        if f_norm > 0.0 {
            norm(&r) / f_norm
        } else {
            f64::NAN
        }
    };
    let spread = (keys.iter().map(|k| (k.score - sbar).powi(2)).sum::<f64>() / t).sqrt();
    DualPoint {
        f_norm,
        first_order_err: rel(f.iter().zip(&f1).map(|(a, b)| a - b).collect()),
        linear_err: rel(f
            .iter()
            .zip(&f_lin)
            .map(|(a, b)| a - linear_c * b)
            .collect()),
        linear_c,
        spread,
        keys: keys.len(),
    }
}

/// Summary statistics of the dual-form quantities over prompts (or over heads and k).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Stats {
    pub first_order_err: f64,
    pub linear_err: f64,
    pub linear_c: f64,
    pub spread: f64,
    pub f_norm: f64,
}

impl Stats {
    fn over(points: &[DualPoint], reduce: impl Fn(Vec<f64>) -> f64) -> Stats {
        let get = |f: fn(&DualPoint) -> f64| reduce(points.iter().map(f).collect());
        Stats {
            first_order_err: get(|p| p.first_order_err),
            linear_err: get(|p| p.linear_err),
            // c is only meaningful where F is defined.
            linear_c: get(|p| if p.f_norm > 0.0 { p.linear_c } else { f64::NAN }),
            spread: get(|p| p.spread),
            f_norm: get(|p| p.f_norm),
        }
    }

    /// The mean of each field over `stats` (finite values only).
    fn mean_of(stats: &[Stats]) -> Stats {
        let m = |f: fn(&Stats) -> f64| finite_mean(stats.iter().map(f)).0;
        Stats {
            first_order_err: m(|s| s.first_order_err),
            linear_err: m(|s| s.linear_err),
            linear_c: m(|s| s.linear_c),
            spread: m(|s| s.spread),
            f_norm: m(|s| s.f_norm),
        }
    }
}

/// One head at one k: means and medians over prompts.
#[derive(Debug, Clone, Serialize)]
pub struct HeadAtK {
    pub k: usize,
    pub mean: Stats,
    pub median: Stats,
    /// Prompts where ‖F‖ > 0 (the relative errors are defined).
    pub defined: usize,
    /// Attended keys at this column (of the first prompt; the same for every prompt).
    pub keys: usize,
}

/// One head: per k, and the mean over k.
#[derive(Debug, Clone, Serialize)]
pub struct HeadReport {
    pub layer: usize,
    pub head: usize,
    /// Scores from q·k (false: a fixed bias pattern only, a compiled head).
    pub qk: bool,
    pub per_k: Vec<HeadAtK>,
    pub mean_over_k: Stats,
}

/// One layer: the mean over its measured heads and over k of the per-(head, k) means.
#[derive(Debug, Clone, Serialize)]
pub struct LayerSummary {
    pub layer: usize,
    pub heads: usize,
    pub mean: Stats,
    /// Per k: the mean over heads (for the figures).
    pub per_k: Vec<Stats>,
}

/// Everything `icl dual` reports (`--json`).
#[derive(Debug, Clone, Serialize)]
pub struct DualReport {
    pub format: String,
    pub model: String,
    pub kind: String,
    pub dtype: String,
    pub prompts_source: String,
    pub distribution: String,
    pub prompts: usize,
    pub d: usize,
    pub n: usize,
    pub heads: Vec<HeadReport>,
    pub layers: Vec<LayerSummary>,
    pub notes: Vec<String>,
}

/// Per head (in `heads` order), per k, per prompt: the dual point.
type Points = Vec<Vec<Vec<DualPoint>>>;

/// The dual points of one traced layer for the selected heads of that layer, appended to `out`
/// (indexed like `heads`). `t` columns; scores have `t` or `t + 1` (null key) key columns.
fn collect_layer(
    trace: &AttnTrace,
    heads: &[(usize, usize)],
    t: usize,
    out: &mut Points,
) -> crate::model::Result<()> {
    let (b, nh, _, hd) = trace.v.dims4()?;
    let keys_cols = trace.scores.dims()[3];
    let flat = |x: &candle_core::Tensor| -> crate::model::Result<Vec<f64>> {
        Ok(x.to_dtype(CDType::F64)?.flatten_all()?.to_vec1::<f64>()?)
    };
    let (scores, probs, v) = (flat(&trace.scores)?, flat(&trace.probs)?, flat(&trace.v)?);
    let zero = vec![0.0; hd];
    for &(slot, h) in heads {
        for (k, per_prompt) in out[slot].iter_mut().enumerate() {
            let col = 2 * k;
            if col >= t {
                continue;
            }
            for bi in 0..b {
                let row = ((bi * nh + h) * t + col) * keys_cols;
                let keys: Vec<Key> = (0..keys_cols)
                    .filter(|&j| scores[row + j].is_finite())
                    .map(|j| Key {
                        score: scores[row + j],
                        prob: probs[row + j],
                        value: if j < t {
                            let at = ((bi * nh + h) * t + j) * hd;
                            &v[at..at + hd]
                        } else {
                            &zero
                        },
                    })
                    .collect();
                per_prompt.push(dual_point(&keys, hd));
            }
        }
    }
    Ok(())
}

/// Run `model` on `prompts` (all of one shape, n examples) in batches and collect the dual
/// points of `heads` at every x̃ column.
fn collect(model: &Transformer, prompts: &[Prompt], heads: &[HeadId]) -> anyhow::Result<Points> {
    let n = prompts.first().map_or(0, Prompt::n);
    let mut points: Points = vec![vec![Vec::new(); n + 1]; heads.len()];
    for chunk in prompts.chunks(128) {
        let tokens = model.prompts_tensor(chunk)?;
        let tr = model.forward_traced(&tokens, &TraceOptions::default())?;
        for (layer, at) in tr.attn.iter().enumerate() {
            let Some(at) = at else { continue };
            let sel: Vec<(usize, usize)> = heads
                .iter()
                .enumerate()
                .filter(|(_, h)| h.layer == layer)
                .map(|(slot, h)| (slot, h.head))
                .collect();
            if !sel.is_empty() {
                collect_layer(at, &sel, 2 * n + 1, &mut points)?;
            }
        }
    }
    Ok(points)
}

/// Where the prompts came from, for the report.
pub struct PromptInfo<'a> {
    pub source: &'a str,
    pub distribution: String,
}

/// `icl dual`: the dual-form quantities of `heads` (None: every head) of `model` on `prompts`.
pub fn analyze(
    model: &Transformer,
    name: &str,
    prompts: &[Prompt],
    info: &PromptInfo,
    heads: Option<&[HeadId]>,
) -> anyhow::Result<DualReport> {
    let c = &model.config;
    let heads = select_heads(c, heads, name)?;
    anyhow::ensure!(!prompts.is_empty(), "no prompts");
    let points = collect(model, prompts, &heads)?;
    let reports: Vec<HeadReport> = heads
        .iter()
        .zip(&points)
        .map(|(h, per_k)| head_report(c, *h, per_k))
        .collect();
    let layers = layer_summaries(&reports);
    Ok(DualReport {
        format: "icl-dual/1".into(),
        model: name.into(),
        kind: format!("{:?}", c.kind).to_lowercase(),
        dtype: format!("{:?}", model.dtype()).to_lowercase(),
        prompts_source: info.source.into(),
        distribution: info.distribution.clone(),
        prompts: prompts.len(),
        d: c.d,
        n: prompts[0].n(),
        heads: reports,
        layers,
        notes: notes(c),
    })
}

fn head_report(c: &ModelConfig, h: HeadId, per_k: &[Vec<DualPoint>]) -> HeadReport {
    let qk = c.layers[h.layer].attn.is_some_and(|a| a.qk);
    let per_k: Vec<HeadAtK> = per_k
        .iter()
        .enumerate()
        .map(|(k, pts)| HeadAtK {
            k,
            mean: Stats::over(pts, |v| finite_mean(v).0),
            median: Stats::over(pts, finite_median),
            defined: pts.iter().filter(|p| p.f_norm > 0.0).count(),
            keys: pts.first().map_or(0, |p| p.keys),
        })
        .collect();
    let means: Vec<Stats> = per_k.iter().map(|x| x.mean).collect();
    HeadReport {
        layer: h.layer,
        head: h.head,
        qk,
        mean_over_k: Stats::mean_of(&means),
        per_k,
    }
}

fn layer_summaries(heads: &[HeadReport]) -> Vec<LayerSummary> {
    let mut layers: Vec<usize> = heads.iter().map(|h| h.layer).collect();
    layers.dedup();
    layers
        .into_iter()
        .map(|layer| {
            let hs: Vec<&HeadReport> = heads.iter().filter(|h| h.layer == layer).collect();
            let ks = hs[0].per_k.len();
            let per_k: Vec<Stats> = (0..ks)
                .map(|k| Stats::mean_of(&hs.iter().map(|h| h.per_k[k].mean).collect::<Vec<_>>()))
                .collect();
            let all: Vec<Stats> = hs
                .iter()
                .flat_map(|h| h.per_k.iter().map(|x| x.mean))
                .collect();
            LayerSummary {
                layer,
                heads: hs.len(),
                mean: Stats::mean_of(&all),
                per_k,
            }
        })
        .collect()
}

/// What the numbers mean for this model's kind of attention (docs/ANALYSIS.md).
fn notes(c: &ModelConfig) -> Vec<String> {
    let mut notes = Vec::new();
    if c.layers.iter().any(|l| l.attn.is_some_and(|a| !a.qk)) {
        notes.push("fixed-pattern heads (no Q/K): the scores are the bias pattern, 0 on the attended keys, so F_lin = Σ_j 0·v_j = 0 (linear error 1, c = 0) and std(s) = 0; a uniform mean is exactly its first-order expansion (error 0). Hard 0/−∞ patterns are not linear attention".into());
    }
    if c.layers
        .iter()
        .any(|l| l.attn.is_some_and(|a| a.momentum.is_some()))
    {
        notes.push(
            "momentum attention: F is the softmax read only; the momentum term Σ η^{t−s} v_s is excluded"
                .into(),
        );
    }
    if c.layers.iter().any(|l| l.attn.is_some_and(|a| a.zero_attn)) {
        notes.push("the null key counts as an attended key with value 0".into());
    }
    notes
}

impl DualReport {
    /// The aligned table: one row per head (means over prompts, then over k) and one summary
    /// row per layer.
    pub fn table(&self) -> String {
        let mut s = format!(
            "dual form of attention: {} ({}, {}), {} prompts, {} (d = {}, n = {})\n\
             means over prompts, then over k = 0…n; — where ‖F‖ = 0 everywhere\n\n",
            self.model, self.kind, self.dtype, self.prompts, self.distribution, self.d, self.n
        );
        s += &format!(
            "{:>5} {:>5} {:>12} {:>14} {:>10} {:>10} {:>10}\n",
            "layer", "head", "‖F−F₁‖/‖F‖", "min‖F−cFlin‖", "c", "std(s)", "‖F‖"
        );
        let row = |l: String, h: String, st: &Stats| {
            format!(
                "{:>5} {:>5} {:>12} {:>14} {:>10} {:>10} {:>10}\n",
                l,
                h,
                cell(st.first_order_err),
                cell(st.linear_err),
                cell(st.linear_c),
                cell(st.spread),
                cell(st.f_norm)
            )
        };
        for l in &self.layers {
            for h in self.heads.iter().filter(|h| h.layer == l.layer) {
                s += &row(l.layer.to_string(), h.head.to_string(), &h.mean_over_k);
            }
            s += &row(l.layer.to_string(), "all".into(), &l.mean);
        }
        for n in &self.notes {
            s += &format!("note: {n}\n");
        }
        s
    }

    /// Long format: `layer,head,k,metric,mean,median,defined`.
    pub fn csv(&self) -> String {
        let mut s = String::from("layer,head,k,metric,mean,median,defined\n");
        type Field = (&'static str, fn(&Stats) -> f64);
        let fields: [Field; 5] = [
            ("first_order_err", |x| x.first_order_err),
            ("linear_err", |x| x.linear_err),
            ("linear_c", |x| x.linear_c),
            ("spread", |x| x.spread),
            ("f_norm", |x| x.f_norm),
        ];
        for h in &self.heads {
            for at in &h.per_k {
                for (name, f) in fields {
                    s += &format!(
                        "{},{},{},{name},{},{},{}\n",
                        h.layer,
                        h.head,
                        at.k,
                        f(&at.mean),
                        f(&at.median),
                        at.defined
                    );
                }
            }
        }
        s
    }

    /// `dir/dual.{png,svg}`: first-order error, linear error and score spread vs k, one line per
    /// layer (mean over its heads).
    pub fn plot(&self, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
        let chart = |title: &str, y: &str, f: fn(&Stats) -> f64| LineChart {
            title: format!("{title} ({})", self.model),
            x_label: "k (examples before the query)".into(),
            y_label: y.into(),
            series: self
                .layers
                .iter()
                .map(|l| {
                    let pts = l.per_k.iter().enumerate();
                    Series::new(
                        format!("layer {}", l.layer),
                        pts.map(|(k, st)| (k as f64, f(st))).collect(),
                    )
                })
                .collect(),
            x_scale: Scale::Linear,
            y_scale: Scale::Auto,
        };
        let panels = drawable_panels(vec![
            chart("‖F − F₁‖/‖F‖", "relative error", |s| {
                s.first_order_err
            }),
            chart(
                "min_c ‖F − c·F_lin‖/‖F‖",
                "relative error",
                |s| s.linear_err,
            ),
            chart("score spread std(s)", "std(s)", |s| s.spread),
        ]);
        anyhow::ensure!(
            !panels.is_empty(),
            "nothing to plot: every value is undefined"
        );
        let fig = Figure::new(panels, 3);
        Ok(plot::write_figure(&fig, &dir.join("dual"))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys<'a>(scores: &[f64], values: &'a [Vec<f64>]) -> Vec<Key<'a>> {
        let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let z: f64 = scores.iter().map(|s| (s - m).exp()).sum();
        scores
            .iter()
            .zip(values)
            .map(|(&s, v)| Key {
                score: s,
                prob: (s - m).exp() / z,
                value: v,
            })
            .collect()
    }

    #[test]
    fn equal_scores_are_exactly_first_order() {
        let vals = vec![vec![1.0, -2.0], vec![3.0, 0.5], vec![-1.0, 4.0]];
        let p = dual_point(&keys(&[0.7, 0.7, 0.7], &vals), 2);
        assert!(p.spread < 1e-15, "{p:?}");
        assert!(p.first_order_err < 1e-15, "{p:?}");
        // F_lin = 0.7·Σv is parallel to F = mean v: the best c makes it exact.
        assert!(p.linear_err < 1e-15, "{p:?}");
        assert!((p.linear_c - 1.0 / (3.0 * 0.7)).abs() < 1e-14, "{p:?}");
    }

    #[test]
    fn first_order_error_is_second_order_in_the_scores() {
        let vals = vec![vec![1.0, -2.0], vec![3.0, 0.5], vec![-1.0, 4.0]];
        let dir = [0.3, -0.5, 0.2];
        let err = |eps: f64| {
            let s: Vec<f64> = dir.iter().map(|d| d * eps).collect();
            dual_point(&keys(&s, &vals), 2).first_order_err
        };
        // Halving the scores quarters the error (up to higher orders).
        let ratio = err(1e-2) / err(5e-3);
        assert!((ratio - 4.0).abs() < 0.05, "{ratio}");
    }

    #[test]
    fn zero_read_is_undefined_not_zero() {
        let zero = vec![vec![0.0, 0.0]];
        let p = dual_point(&keys(&[0.0], &zero), 2);
        assert!(p.first_order_err.is_nan() && p.linear_err.is_nan());
        assert_eq!(p.linear_c, 0.0);
    }

    #[test]
    fn heads_parse_and_bad_ones_are_named() {
        assert_eq!(
            parse_heads("0:1, 2:0").unwrap(),
            vec![HeadId { layer: 0, head: 1 }, HeadId { layer: 2, head: 0 }]
        );
        assert_eq!(parse_heads("1-2"), Err(DualError::HeadSyntax("1-2".into())));
    }
}
