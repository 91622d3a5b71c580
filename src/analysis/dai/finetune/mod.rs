//! `icl finetune-vs-icl MODEL_DIR`: does in-context learning behave like explicit finetuning
//! (Dai et al. 2023, §2; docs/ANALYSIS.md, "ICL vs finetuning")?
//!
//! For every prompt: zero-shot (ZSL), in-context (ICL) and explicitly finetuned (FT) runs (see
//! [`engine`]), for k = 1…K demonstrations, with four kinds of explicit update ([`Variant`]).
//! Each variant's learning rate is chosen on a log grid by held-out FT MSE — never by
//! similarity. The same pipeline runs on controls: an untrained model of the same shape, the
//! demonstrations' labels shuffled, and another task's demonstrations.

pub mod engine;
pub mod observe;
pub mod report;

use crate::analysis::prompt_set::PromptSet;
use crate::analysis::stats::{bootstrap_mean, pearson, Interval, RESAMPLES};
use crate::model::Transformer;
use crate::prompt::Prompt;
use engine::{Engine, Example, Variant};
use observe::{baseline_rng, finetune, layer_metrics, FtRun, LayerMetrics, Task};
use rand::seq::SliceRandom;
use serde::Serialize;

/// How the comparison is run.
#[derive(Debug, Clone)]
pub struct FinetuneOptions {
    /// Demonstrations of the neutral prefix (an unrelated task) before every run's tokens.
    pub prefix: usize,
    /// Seed of the prefix's task.
    pub prefix_seed: u64,
    /// Learning rates tried for every variant.
    pub lr_grid: Vec<f64>,
    /// Held-out prompts the learning rate is chosen on, and their seed.
    pub lr_prompts: usize,
    pub lr_seed: u64,
    /// "Improves": an error below (1 − δ)·the ZSL error.
    pub delta: f64,
    /// Run the controls (untrained model, shuffled labels, another task's demonstrations).
    pub controls: bool,
    /// Seed of the untrained control's initialisation and of the shuffles and baselines.
    pub control_seed: u64,
    pub progress: bool,
}

/// Why the comparison cannot run.
#[derive(Debug, thiserror::Error)]
pub enum FinetuneError {
    #[error("--lr-grid is empty: give at least one learning rate")]
    EmptyGrid,
    #[error("--lr-grid: {0} is not a finite learning rate > 0")]
    BadRate(f64),
    #[error("--prefix {prefix} leaves no demonstration: the model's prompts hold n = {n} examples (prefix + demonstrations ≤ n)")]
    Prefix { prefix: usize, n: usize },
    #[error("--delta must be in [0, 1), found {0}")]
    Delta(f64),
    #[error("{what}: layer {layer} has no attention sub-layer with Q/K projections; K/V finetuning needs softmax attention from Q and K (fixed-pattern compiled models have none)")]
    NoKeys { what: String, layer: usize },
    #[error("prompts have d = {found}, the model d = {expected}")]
    Dim { expected: usize, found: usize },
    #[error("variant {variant}: every learning rate of the grid diverged on the held-out prompts; add smaller rates to --lr-grid")]
    AllDiverged { variant: &'static str },
    #[error("case {case}, variant {variant}: finetuning at the chosen rate {lr} gave a non-finite prediction on prompt {prompt}; add smaller rates to --lr-grid")]
    Diverged {
        case: String,
        variant: &'static str,
        lr: f64,
        prompt: usize,
    },
}

/// Check that every layer of `model` has softmax attention with Q/K projections.
pub fn check_model(model: &Transformer, what: &str) -> Result<(), FinetuneError> {
    for (layer, l) in model.config.layers.iter().enumerate() {
        if !l.attn.as_ref().is_some_and(|a| a.qk) {
            return Err(FinetuneError::NoKeys {
                what: what.into(),
                layer,
            });
        }
    }
    Ok(())
}

/// Check the options against the model's prompt size.
pub fn check_options(opts: &FinetuneOptions, n: usize) -> Result<(), FinetuneError> {
    if opts.lr_grid.is_empty() {
        return Err(FinetuneError::EmptyGrid);
    }
    if let Some(&bad) = opts.lr_grid.iter().find(|r| !(r.is_finite() && **r > 0.0)) {
        return Err(FinetuneError::BadRate(bad));
    }
    if opts.prefix >= n {
        return Err(FinetuneError::Prefix {
            prefix: opts.prefix,
            n,
        });
    }
    if !(0.0..1.0).contains(&opts.delta) {
        return Err(FinetuneError::Delta(opts.delta));
    }
    Ok(())
}

/// Where a case's demonstrations come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Demos {
    /// The prompt's own examples, in order.
    Own,
    /// The prompt's own x's with their labels permuted.
    ShuffledY,
    /// The next prompt's examples (another w).
    OtherTask,
}

/// The held-out FT MSE of every rate, and the rate chosen.
#[derive(Debug, Clone, Serialize)]
pub struct RateChoice {
    pub variant: Variant,
    /// (rate, held-out FT MSE averaged over k = 1…K; +inf when it diverged).
    pub curve: Vec<(f64, f64)>,
    pub chosen: f64,
}

/// The prompts' (prefix, demonstrations, query) for a case.
fn tasks<'a>(
    prompts: &'a [Prompt],
    prefix: &'a [Example<'a>],
    k_max: usize,
    demos: Demos,
    labels: &'a [Vec<f64>],
) -> Vec<Task<'a>> {
    let n = prompts[0].n();
    (0..prompts.len())
        .map(|p| {
            let q = &prompts[p];
            let src = match demos {
                Demos::OtherTask => &prompts[(p + 1) % prompts.len()],
                _ => q,
            };
            let ys = if demos == Demos::ShuffledY {
                &labels[p]
            } else {
                &src.ys
            };
            Task {
                prefix,
                demos: (0..k_max).map(|i| (src.xs[i].as_slice(), ys[i])).collect(),
                query: &q.xs[n],
                target: q.ys[n],
            }
        })
        .collect()
}

/// Each prompt's labels permuted (a seeded shuffle per prompt).
fn shuffled_labels(prompts: &[Prompt], k_max: usize, seed: u64) -> Vec<Vec<f64>> {
    prompts
        .iter()
        .enumerate()
        .map(|(p, q)| {
            let mut ys = q.ys[..k_max].to_vec();
            ys.shuffle(&mut baseline_rng(seed ^ 0x5AFF1E, p));
            ys
        })
        .collect()
}

/// Choose `variant`'s rate: the grid rate with the least held-out FT MSE over k = 1…K.
fn choose_rate(
    engine: &Engine,
    held_out: &[Task],
    variant: Variant,
    grid: &[f64],
) -> anyhow::Result<RateChoice> {
    let mut curve = Vec::new();
    for &lr in grid {
        let mut sum = 0.0;
        let mut count = 0usize;
        for task in held_out {
            let run = finetune(engine, task, variant, lr)?;
            for v in &run.views {
                sum += (v.pred - task.target).powi(2);
                count += 1;
            }
        }
        let mse = sum / count as f64;
        curve.push((lr, if mse.is_finite() { mse } else { f64::INFINITY }));
    }
    let best = curve
        .iter()
        .filter(|c| c.1.is_finite())
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .ok_or(FinetuneError::AllDiverged {
            variant: variant.name(),
        })?;
    Ok(RateChoice {
        variant,
        chosen: best.0,
        curve,
    })
}

/// Raw observations of one case: squared errors and per-layer metrics by variant, k, prompt.
#[derive(Debug, Clone)]
pub struct Observations {
    /// ZSL squared error per prompt.
    pub e_zsl: Vec<f64>,
    /// ICL squared error [k−1][prompt].
    pub e_icl: Vec<Vec<f64>>,
    /// Per variant: FT squared error [k−1][prompt] and metrics [k−1][layer][prompt].
    pub e_ft: Vec<Vec<Vec<f64>>>,
    pub metrics: Vec<Vec<Vec<Vec<LayerMetrics>>>>,
}

/// Run ZSL, ICL and every variant's FT on `tasks` and compute the metrics.
fn observe(
    engine: &Engine,
    tasks: &[Task],
    rates: &[RateChoice],
    case: &str,
    opts: &FinetuneOptions,
) -> anyhow::Result<Observations> {
    let k_max = tasks[0].demos.len();
    let bare: Vec<Vec<f64>> = tasks.iter().map(|t| t.bare_row()).collect();
    let zsl = engine.views(&bare, tasks[0].bare_column())?;
    let icl: Vec<Vec<_>> = (1..=k_max)
        .map(|k| {
            let rows: Vec<Vec<f64>> = tasks.iter().map(|t| t.icl_row(k)).collect();
            engine.views(&rows, tasks[0].icl_column(k))
        })
        .collect::<anyhow::Result<_>>()?;
    let sq = |pred: f64, t: &Task| (pred - t.target).powi(2);
    let mut obs = Observations {
        e_zsl: zsl.iter().zip(tasks).map(|(v, t)| sq(v.pred, t)).collect(),
        e_icl: icl
            .iter()
            .map(|vs| vs.iter().zip(tasks).map(|(v, t)| sq(v.pred, t)).collect())
            .collect(),
        e_ft: Vec::new(),
        metrics: Vec::new(),
    };
    let layers = zsl[0].h.len();
    let bar = crate::progress::bar(
        opts.progress,
        (tasks.len() * rates.len()) as u64,
        &format!("{{bar:30}} {{pos}}/{{len}} finetuning runs ({case}) [{{elapsed_precise}}<{{eta_precise}}]"),
    );
    for rate in rates {
        let mut e_ft = vec![vec![0.0; tasks.len()]; k_max];
        let mut metrics = vec![vec![vec![LayerMetrics::default(); tasks.len()]; layers]; k_max];
        for (p, task) in tasks.iter().enumerate() {
            let run: FtRun = finetune(engine, task, rate.variant, rate.chosen)?;
            if !run.finite() {
                return Err(FinetuneError::Diverged {
                    case: case.into(),
                    variant: rate.variant.name(),
                    lr: rate.chosen,
                    prompt: p,
                }
                .into());
            }
            let mut rng = baseline_rng(opts.control_seed, p);
            for k in 1..=k_max {
                e_ft[k - 1][p] = sq(run.views[k - 1].pred, task);
                let lm = layer_metrics(task, k, &zsl[p], &icl[k - 1][p], &run, &mut rng);
                for (l, m) in lm.into_iter().enumerate() {
                    metrics[k - 1][l][p] = m;
                }
            }
            bar.inc(1);
        }
        obs.e_ft.push(e_ft);
        obs.metrics.push(metrics);
    }
    bar.finish_and_clear();
    Ok(obs)
}

/// One case of the comparison (the model, or a control).
#[derive(Debug, Clone, Serialize)]
pub struct Case {
    pub name: String,
    pub demos: Demos,
    pub trained_model: bool,
    pub rates: Vec<RateChoice>,
    #[serde(skip)]
    pub observations: Observations,
}

/// What a comparison ran on (part of the run and of its JSON summary).
#[derive(Debug, Clone, Serialize)]
pub struct Setup {
    pub model: String,
    pub prompts: usize,
    pub prompt_source: String,
    pub d: usize,
    pub n: usize,
    pub prefix: usize,
    pub k_max: usize,
    pub delta: f64,
    pub lr_grid: Vec<f64>,
    pub lr_prompts: usize,
}

/// Everything `icl finetune-vs-icl` measured.
#[derive(Debug, Clone, Serialize)]
pub struct FinetuneRun {
    pub setup: Setup,
    pub cases: Vec<Case>,
}

/// Run the comparison on `model` (and the controls) over `set`'s prompts.
pub fn run(
    model: &Transformer,
    model_name: &str,
    set: &PromptSet,
    source: &str,
    opts: &FinetuneOptions,
) -> anyhow::Result<FinetuneRun> {
    let cfg = &model.config;
    check_model(model, model_name)?;
    check_options(opts, cfg.n)?;
    if set.d() != cfg.d {
        return Err(FinetuneError::Dim {
            expected: cfg.d,
            found: set.d(),
        }
        .into());
    }
    let n = set.n().min(cfg.n);
    let k_max = n - opts.prefix;
    // The neutral prefix: `prefix` examples of one fixed task from the prompts' distribution.
    let prefix_prompt = set.dist.sample_batch(1, opts.prefix_seed).remove(0);
    let prefix: Vec<Example> = (0..opts.prefix)
        .map(|i| (prefix_prompt.xs[i].as_slice(), prefix_prompt.ys[i]))
        .collect();
    let held_out = set.dist.sample_batch(opts.lr_prompts.max(1), opts.lr_seed);
    let prompts: Vec<Prompt> = set.prompts.iter().map(|p| truncate(p, n)).collect();
    let held_out: Vec<Prompt> = held_out.iter().map(|p| truncate(p, n)).collect();
    let labels = shuffled_labels(&prompts, k_max, opts.control_seed);
    let mut specs = vec![("trained", Demos::Own, true)];
    if opts.controls {
        specs.extend([
            ("untrained", Demos::Own, false),
            ("shuffled-y", Demos::ShuffledY, true),
            ("other-task", Demos::OtherTask, true),
        ]);
    }
    let trained = Engine::new(model)?;
    let untrained = if opts.controls {
        Some(untrained_engine(model, opts.control_seed)?)
    } else {
        None
    };
    let mut cases = Vec::new();
    let mut trained_rates: Option<Vec<RateChoice>> = None;
    for (name, demos, is_trained) in specs {
        let engine = if is_trained {
            &trained
        } else {
            untrained.as_ref().expect("controls")
        };
        // Rates are chosen on the real task for each model; label controls reuse the model's.
        let rates = match (&trained_rates, is_trained) {
            (Some(r), true) => r.clone(),
            _ => {
                let ho = tasks(&held_out, &prefix, k_max, Demos::Own, &labels);
                let r = Variant::ALL
                    .iter()
                    .map(|&v| choose_rate(engine, &ho, v, &opts.lr_grid))
                    .collect::<anyhow::Result<Vec<_>>>()?;
                if is_trained {
                    trained_rates = Some(r.clone());
                }
                r
            }
        };
        let ts = tasks(&prompts, &prefix, k_max, demos, &labels);
        let observations = observe(engine, &ts, &rates, name, opts)?;
        cases.push(Case {
            name: name.into(),
            demos,
            trained_model: is_trained,
            rates,
            observations,
        });
    }
    let setup = Setup {
        model: model_name.into(),
        prompts: prompts.len(),
        prompt_source: source.into(),
        d: cfg.d,
        n,
        prefix: opts.prefix,
        k_max,
        delta: opts.delta,
        lr_grid: opts.lr_grid.clone(),
        lr_prompts: held_out.len(),
    };
    Ok(FinetuneRun { setup, cases })
}

/// A prompt cut to its first `n` examples and its last x as the query (the model's n may be
/// smaller than the prompt set's).
fn truncate(p: &Prompt, n: usize) -> Prompt {
    let last = p.n();
    let mut xs = p.xs[..n].to_vec();
    xs.push(p.xs[last].clone());
    let mut ys = p.ys[..n].to_vec();
    ys.push(p.ys[last]);
    Prompt {
        xs,
        ys,
        w: p.w.clone(),
    }
}

/// An untrained model of `model`'s shape (the training initialisation, `seed`).
fn untrained_engine(model: &Transformer, seed: u64) -> anyhow::Result<Engine> {
    let named = crate::train::init_params(&model.config, seed);
    let dtype = crate::model::config_dtype(model.dtype());
    let m = Transformer::from_named(model.config.clone(), &named, model.device(), dtype, false)?;
    Engine::new(&m)
}

/// Rec2FTP and its context at one k (docs/ANALYSIS.md): "improves" = error below (1 − δ)·ZSL.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Recall {
    /// |ICL improves ∧ FT improves| / |FT improves| (NaN when FT never improves).
    pub rec2ftp: f64,
    /// P(ICL improves): what Rec2FTP is when ICL and FT are unrelated.
    pub base_rate: f64,
    /// |both| / |ICL improves|.
    pub precision: f64,
    /// P(FT improves).
    pub ft_rate: f64,
    /// Pearson correlation of the per-prompt error reductions e_ZSL − e_ICL and e_ZSL − e_FT.
    pub correlation: f64,
}

/// Rec2FTP etc. from squared errors over prompts.
pub fn recall(e_zsl: &[f64], e_icl: &[f64], e_ft: &[f64], delta: f64) -> Recall {
    let imp = |e: &[f64]| -> Vec<bool> {
        e.iter()
            .zip(e_zsl)
            .map(|(e, z)| *e < (1.0 - delta) * z)
            .collect()
    };
    let (ic, ft) = (imp(e_icl), imp(e_ft));
    let count = |v: &[bool]| v.iter().filter(|b| **b).count() as f64;
    let both = ic.iter().zip(&ft).filter(|(a, b)| **a && **b).count() as f64;
    let p = e_zsl.len() as f64;
    let red = |e: &[f64]| -> Vec<f64> { e_zsl.iter().zip(e).map(|(z, e)| z - e).collect() };
    Recall {
        rec2ftp: both / count(&ft),
        base_rate: count(&ic) / p,
        precision: both / count(&ic),
        ft_rate: count(&ft) / p,
        correlation: pearson(&red(e_icl), &red(e_ft)),
    }
}

/// Mean over the finite values (NaN when there are none).
pub fn finite_mean(v: impl IntoIterator<Item = f64>) -> f64 {
    super::finite_mean(v).0
}

/// Bootstrap interval of per-prompt values, skipping non-finite ones.
pub fn interval(values: &[f64], seed: u64) -> Interval {
    let v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    bootstrap_mean(&v, RESAMPLES, seed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_change_only_what_they_say() {
        let dist = crate::prompt::PromptDistribution::parse_spec("d=2,n=5").unwrap();
        let prompts = dist.sample_batch(3, 9);
        let prefix: Vec<Example> = vec![(prompts[2].xs[0].as_slice(), 0.5)];
        let labels = shuffled_labels(&prompts, 4, 1);
        let own = tasks(&prompts, &prefix, 4, Demos::Own, &labels);
        let shuffled = tasks(&prompts, &prefix, 4, Demos::ShuffledY, &labels);
        let other = tasks(&prompts, &prefix, 4, Demos::OtherTask, &labels);
        for p in 0..3 {
            // Every case keeps the prompt's query and target.
            for t in [&own[p], &shuffled[p], &other[p]] {
                assert_eq!(
                    (t.query, t.target),
                    (prompts[p].xs[5].as_slice(), prompts[p].ys[5])
                );
                assert_eq!(t.demos.len(), 4);
            }
            let ys = |t: &Task| -> Vec<f64> { t.demos.iter().map(|d| d.1).collect() };
            let xs = |t: &Task| -> Vec<Vec<f64>> { t.demos.iter().map(|d| d.0.to_vec()).collect() };
            assert_eq!(ys(&own[p]), prompts[p].ys[..4]);
            assert_eq!(xs(&shuffled[p]), xs(&own[p]));
            let (mut a, mut b) = (ys(&shuffled[p]), ys(&own[p]));
            a.sort_by(f64::total_cmp);
            b.sort_by(f64::total_cmp);
            assert_eq!(a, b, "a permutation of the labels");
            let next = &prompts[(p + 1) % 3];
            assert_eq!(xs(&other[p]), next.xs[..4].to_vec());
            assert_eq!(ys(&other[p]), next.ys[..4]);
        }
        assert!(
            (0..3).any(|p| labels[p] != prompts[p].ys[..4]),
            "some shuffle moves a label"
        );
    }

    #[test]
    fn recall_counts() {
        // ZSL errors 1; ICL improves on prompts 0, 1; FT on 1, 2 (δ = 0.5: below 0.5).
        let r = recall(&[1.0; 4], &[0.1, 0.2, 0.9, 0.8], &[0.9, 0.3, 0.4, 1.0], 0.5);
        assert_eq!(
            (r.rec2ftp, r.base_rate, r.precision, r.ft_rate),
            (0.5, 0.5, 0.5, 0.5)
        );
        let reductions = pearson(&[0.9, 0.8, 0.1, 0.2], &[0.1, 0.7, 0.6, 0.0]);
        assert!((r.correlation - reductions).abs() < 1e-15);
    }
}
