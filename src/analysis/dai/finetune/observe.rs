//! Per-prompt observations of ICL vs finetuning, and the metrics of Dai et al. computed from them
//! (docs/ANALYSIS.md, "ICL vs finetuning": the definitions as the authors' code computes them,
//! with the corrections of the critiques — Gaussian random baseline, ΔSimAM, both SimAOU forms).

use super::engine::{token_row, Engine, Example, TokenView, TrainQueries, Variant};
use crate::analysis::stats::{cosine, kendall_tau_b};
use candle_core::Tensor;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

/// One prompt's comparison material: the neutral prefix, the demonstrations in order, the query.
#[derive(Debug, Clone)]
pub struct Task<'a> {
    pub prefix: &'a [Example<'a>],
    pub demos: Vec<Example<'a>>,
    pub query: &'a [f64],
    pub target: f64,
}

impl Task<'_> {
    /// Column of the query in the ICL prompt with k demonstrations.
    pub fn icl_column(&self, k: usize) -> usize {
        2 * (self.prefix.len() + k)
    }
    /// Column of the query in the ZSL / FT prompt.
    pub fn bare_column(&self) -> usize {
        2 * self.prefix.len()
    }
    /// The ICL prompt's tokens with the first k demonstrations.
    pub fn icl_row(&self, k: usize) -> Vec<f64> {
        token_row(
            &[self.prefix, &self.demos[..k]].concat(),
            Some(self.query),
            None,
        )
    }
    /// The ZSL / FT prompt's tokens.
    pub fn bare_row(&self) -> Vec<f64> {
        token_row(self.prefix, Some(self.query), None)
    }
}

/// An explicit update's views at the query after k = 1…K demonstrations, and each update's
/// training-token queries.
#[derive(Debug, Clone)]
pub struct FtRun {
    pub views: Vec<TokenView>,
    pub train_queries: Vec<TrainQueries>,
}

impl FtRun {
    /// Whether every prediction is finite.
    pub fn finite(&self) -> bool {
        self.views.iter().all(|v| v.pred.is_finite())
    }
}

/// Finetune a fresh copy (from the engine's initial parameters) on `task`'s demonstrations with
/// `variant` at learning rate `lr`, viewing the query after every update. The engine is left
/// at its initial parameters.
pub fn finetune(engine: &Engine, task: &Task, variant: Variant, lr: f64) -> anyhow::Result<FtRun> {
    engine.reset()?;
    let (row, t) = (task.bare_row(), task.bare_column());
    let mut run = FtRun {
        views: Vec::new(),
        train_queries: Vec::new(),
    };
    let mut summed: Vec<Option<Tensor>> = Vec::new();
    for &demo in &task.demos {
        let (grads, queries) = engine.demo_gradient(variant, task.prefix, demo)?;
        run.train_queries.push(queries);
        if variant == Variant::Gd1 {
            // Every gradient at θ₀; the model after k demonstrations is θ₀ − lr·Σ_{i≤k} g_i.
            let g = engine.trained_grads(variant, &grads);
            summed = if summed.is_empty() {
                g
            } else {
                summed
                    .into_iter()
                    .zip(g)
                    .map(|(a, b)| match (a, b) {
                        (Some(a), Some(b)) => (a + b).map(Some),
                        (a, b) => Ok(a.or(b)),
                    })
                    .collect::<candle_core::Result<_>>()?
            };
            engine.set_from_initial(&summed, lr)?;
            run.views
                .push(engine.views(std::slice::from_ref(&row), t)?.remove(0));
            engine.reset()?;
        } else {
            engine.apply(variant, &grads, lr)?;
            run.views
                .push(engine.views(std::slice::from_ref(&row), t)?.remove(0));
        }
    }
    engine.reset()?;
    Ok(run)
}

/// Dai et al.'s per-layer metrics for one prompt, one k, one layer (docs/ANALYSIS.md).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct LayerMetrics {
    /// cos(ĥ_ICL − ĥ_ZSL, ĥ_FT − ĥ_ZSL), ĥ = h/‖h‖ (the authors' SimAOU).
    pub simaou: f64,
    /// cos(h_ICL − h_ZSL, h_FT − h_ZSL), without the normalisation.
    pub simaou_raw: f64,
    /// cos(ĥ_ICL − ĥ_ZSL, u), u ~ N(0, I): the random baseline.
    pub simaou_random: f64,
    /// cos(A_ICL, A_FT) over the query-text keys (prefix and query), mean over heads.
    pub simam: f64,
    /// cos(A_ICL, A_ZSL), SimAM's baseline.
    pub simam_zsl: f64,
    /// cos(A_ICL − A_ZSL, A_FT − A_ZSL), mean over heads (Deutch et al.'s ΔSimAM).
    pub delta_simam: f64,
    /// Kendall τ-b between ICL's attention to the 2k demonstration tokens (scores summed over
    /// heads, softmax) and FT's attention to its training tokens (softmax of q_FT·q_train).
    pub kendall_token: f64,
    /// The same with each map summed within each demonstration (k entries).
    pub kendall_example: f64,
    /// τ between ICL's map and a uniform random map: the baseline.
    pub kendall_random: f64,
}

impl LayerMetrics {
    /// Names and values, in table order.
    pub fn fields(&self) -> [(&'static str, f64); 9] {
        [
            ("simaou", self.simaou),
            ("simaou_raw", self.simaou_raw),
            ("simaou_random", self.simaou_random),
            ("simam", self.simam),
            ("simam_zsl", self.simam_zsl),
            ("delta_simam", self.delta_simam),
            ("kendall_token", self.kendall_token),
            ("kendall_example", self.kendall_example),
            ("kendall_random", self.kendall_random),
        ]
    }
}

fn unit(v: &[f64]) -> Vec<f64> {
    let n = crate::analysis::stats::norm(v);
    v.iter().map(|x| x / n).collect()
}

fn sub(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(x, y)| x - y).collect()
}

fn softmax(s: &[f64]) -> Vec<f64> {
    let m = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = s.iter().map(|v| (v - m).exp()).collect();
    let z: f64 = e.iter().sum();
    e.into_iter().map(|v| v / z).collect()
}

/// The per-layer metrics at k demonstrations (k ≥ 1) of one prompt. `rng` draws the random
/// baselines (so a fixed seed fixes them).
pub fn layer_metrics(
    task: &Task,
    k: usize,
    zsl: &TokenView,
    icl: &TokenView,
    ft: &FtRun,
    rng: &mut ChaCha8Rng,
) -> Vec<LayerMetrics> {
    let m2 = 2 * task.prefix.len();
    let f = &ft.views[k - 1];
    (0..zsl.h.len())
        .map(|l| {
            let (hz, hc, hf) = (&zsl.h[l], &icl.h[l], &f.h[l]);
            let dc = sub(&unit(hc), &unit(hz));
            let u: Vec<f64> = (0..dc.len()).map(|_| StandardNormal.sample(rng)).collect();
            let heads = zsl.scores[l].len();
            let mut sims = [0.0; 3];
            for h in 0..heads {
                // Query-text keys: the prefix's tokens and the query itself.
                let sc = &icl.scores[l][h];
                let a_icl: Vec<f64> = sc[..m2].iter().chain(sc.last()).copied().collect();
                let (a_zsl, a_ft) = (&zsl.scores[l][h], &f.scores[l][h]);
                sims[0] += cosine(&a_icl, a_ft);
                sims[1] += cosine(&a_icl, a_zsl);
                sims[2] += cosine(&sub(&a_icl, a_zsl), &sub(a_ft, a_zsl));
            }
            let icl_map = softmax(
                &(m2..m2 + 2 * k)
                    .map(|j| (0..heads).map(|h| icl.scores[l][h][j]).sum())
                    .collect::<Vec<f64>>(),
            );
            let ft_map = softmax(
                &ft.train_queries[..k]
                    .iter()
                    .flat_map(|qs| {
                        qs[l]
                            .iter()
                            .map(|qt| qt.iter().zip(&f.q[l]).map(|(a, b)| a * b).sum())
                    })
                    .collect::<Vec<f64>>(),
            );
            let pairs = |v: &[f64]| -> Vec<f64> { v.chunks(2).map(|c| c.iter().sum()).collect() };
            let random: Vec<f64> = (0..2 * k).map(|_| rand::Rng::random::<f64>(rng)).collect();
            LayerMetrics {
                simaou: cosine(&dc, &sub(&unit(hf), &unit(hz))),
                simaou_raw: cosine(&sub(hc, hz), &sub(hf, hz)),
                simaou_random: cosine(&dc, &u),
                simam: sims[0] / heads as f64,
                simam_zsl: sims[1] / heads as f64,
                delta_simam: sims[2] / heads as f64,
                kendall_token: kendall_tau_b(&icl_map, &ft_map),
                kendall_example: kendall_tau_b(&pairs(&icl_map), &pairs(&ft_map)),
                kendall_random: kendall_tau_b(&icl_map, &random),
            }
        })
        .collect()
}

/// A seeded generator for prompt `p`'s random baselines.
pub fn baseline_rng(seed: u64, p: usize) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed ^ (p as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}
