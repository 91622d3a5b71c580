//! `icl experiment momentum CONFIG`: momentum attention (Dai et al. 2023, §3), measured fairly
//! (docs/ANALYSIS.md, "Momentum attention"). Every arm — plain attention, fixed η, learned η and
//! the sum-path control η = 1 — is trained once per seed from the same base config; with the same
//! `train.seed` every arm starts from the same initial values of every shared parameter and sees
//! the same batches (`train::init_params` draws nothing for the momentum logit; the batch of step
//! s depends on (seed, s) only). Each run is evaluated on one fixed prompt set of the task: MSE / d
//! over all x̃ positions (the "perplexity analogue") and MSE per k divided by the zero predictor's
//! MSE per k, with OLS and ridge alongside. The arms are compared with the reference arm by paired
//! differences per seed and a percentile-bootstrap interval over the seeds
//! (`analysis::stats::bootstrap_mean`).
//!
//! Runs live in `out/<arm>-s<seed>`; finished runs are reused, interrupted ones resumed, and a
//! folder holding another config's run is an error (`experiment::ensure_trained`).

use super::{ensure_all, ensure_trained, read_toml, run_config, Run, RunOptions, RunStatus};
use crate::analysis::learner::{self, LoadOptions};
use crate::analysis::metrics;
use crate::analysis::prompt_set::PromptSet;
use crate::analysis::stats::{bootstrap_mean, Interval, RESAMPLES};
use crate::plot::{Figure, LineChart, Panel, Scale, Series};
use crate::train::TrainConfig;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The experiment file (configs/momentum.toml).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MomentumConfig {
    /// Training config every run starts from (relative to this file); it must set no momentum.
    pub base: PathBuf,
    /// Folder of the runs (relative to the working directory).
    pub out: PathBuf,
    /// Overrides applied to the base config of every run (`section.field=value`).
    #[serde(default)]
    pub set: Vec<String>,
    pub arms: Vec<ArmConfig>,
    /// `train.seed` of the runs: every arm is trained once per seed.
    pub seeds: Vec<u64>,
    /// The arm the others are compared with (default `plain`).
    #[serde(default = "default_reference")]
    pub reference: String,
    pub eval: MomentumEval,
}

fn default_reference() -> String {
    "plain".into()
}

/// One arm: plain attention (neither field), a fixed η in [0, 1], or a learned η.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ArmConfig {
    /// Also the folder prefix of its runs: letters, digits, `.`, `_`, `-`.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta: Option<f64>,
    #[serde(default)]
    pub learned: bool,
}

/// The fixed evaluation set: `prompts` prompts of the base task drawn with `seed`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MomentumEval {
    pub prompts: usize,
    pub seed: u64,
    /// λ of the ridge baseline; default the task's Bayes λ* = σ²/τ², or 0.1 when noiseless.
    #[serde(default)]
    pub ridge_lambda: Option<f64>,
}

/// One arm's runs, in seed order.
pub struct ArmRuns {
    pub arm: ArmConfig,
    pub runs: Vec<Run>,
}

/// The overrides that turn the base config into an arm's config for one seed.
fn arm_sets(arm: &ArmConfig, seed: u64) -> Vec<String> {
    let mut sets = vec![format!("train.seed={seed}")];
    if let Some(eta) = arm.eta {
        sets.push(format!("model.momentum_eta={eta:?}"));
    }
    if arm.learned {
        sets.push("model.momentum_learned=true".into());
    }
    sets
}

/// Checks beyond the TOML shape, each naming its field.
fn validate(cfg: &MomentumConfig) -> anyhow::Result<()> {
    if cfg.arms.is_empty() {
        anyhow::bail!("`arms` is empty");
    }
    if cfg.seeds.is_empty() {
        anyhow::bail!("`seeds` is empty");
    }
    for (i, s) in cfg.seeds.iter().enumerate() {
        if cfg.seeds[..i].contains(s) {
            anyhow::bail!("`seeds`: seed {s} is listed twice");
        }
    }
    for (i, a) in cfg.arms.iter().enumerate() {
        let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if a.name.is_empty() || !a.name.chars().all(ok_char) {
            anyhow::bail!(
                "`arms[{i}].name`: {:?} must be non-empty letters, digits, `.`, `_` or `-`",
                a.name
            );
        }
        if cfg.arms[..i].iter().any(|b| b.name == a.name) {
            anyhow::bail!("`arms[{i}].name`: duplicate arm name {:?}", a.name);
        }
        if let Some(eta) = a.eta {
            if !(eta.is_finite() && (0.0..=1.0).contains(&eta)) {
                anyhow::bail!("`arms[{i}].eta`: must be in [0, 1], found {eta}");
            }
            if a.learned {
                anyhow::bail!("`arms[{i}]`: set `eta` or `learned = true`, not both");
            }
        }
    }
    if !cfg.arms.iter().any(|a| a.name == cfg.reference) {
        anyhow::bail!("`reference`: {:?} names no arm", cfg.reference);
    }
    if cfg.eval.prompts == 0 {
        anyhow::bail!("`eval.prompts`: must be at least 1");
    }
    if let Some(l) = cfg
        .eval
        .ridge_lambda
        .filter(|l| !(l.is_finite() && *l > 0.0))
    {
        anyhow::bail!("`eval.ridge_lambda`: must be a positive number, found {l}");
    }
    Ok(())
}

/// The experiment file, its base config (overrides applied, no momentum) and the runs of every
/// arm, seeds inner.
pub fn runs(path: &Path) -> anyhow::Result<(MomentumConfig, TrainConfig, Vec<ArmRuns>)> {
    let cfg: MomentumConfig = read_toml(path)?;
    validate(&cfg).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let base = run_config(path, &cfg.base, &cfg.set)?;
    if base.model.momentum_eta.is_some() || base.model.momentum_learned {
        anyhow::bail!(
            "{}: the base config (with `set`) has momentum; leave `model.momentum_eta` and `model.momentum_learned` to the arms",
            path.display()
        );
    }
    let mut arms = Vec::new();
    for arm in &cfg.arms {
        let mut runs = Vec::new();
        for &seed in &cfg.seeds {
            let mut sets = cfg.set.clone();
            sets.extend(arm_sets(arm, seed));
            let name = format!("{}-s{seed}", arm.name);
            runs.push(Run {
                dir: cfg.out.join(&name),
                config: run_config(path, &cfg.base, &sets)
                    .map_err(|e| anyhow::anyhow!("arm {}: {e:#}", arm.name))?,
                name,
            });
        }
        arms.push(ArmRuns {
            arm: arm.clone(),
            runs,
        });
    }
    Ok((cfg, base, arms))
}

/// Train (or reuse, or resume) every run, `jobs` at a time (1: in order, with each run's
/// progress bar, as the other drivers do; more: one bar over the runs). An error if
/// `opts.stop_after` interrupted them.
pub fn train_runs(runs: &[Run], opts: &RunOptions, jobs: usize) -> anyhow::Result<Vec<RunStatus>> {
    if jobs <= 1 {
        return ensure_all(runs, opts);
    }
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Mutex;
    let bar = crate::progress::bar(
        opts.progress,
        runs.len() as u64,
        "runs {bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}]",
    );
    let quiet = RunOptions {
        device: opts.device.clone(),
        progress: false,
        stop_after: opts.stop_after,
        engine: opts.engine,
    };
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let results: Mutex<Vec<Option<anyhow::Result<RunStatus>>>> =
        Mutex::new((0..runs.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..jobs.min(runs.len()) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= runs.len() || failed.load(Ordering::SeqCst) {
                    break;
                }
                let r = ensure_trained(&runs[i], &quiet)
                    .map_err(|e| anyhow::anyhow!("run {}: {e:#}", runs[i].name));
                failed.fetch_or(r.is_err(), Ordering::SeqCst);
                results.lock().expect("results lock")[i] = Some(r);
                bar.inc(1);
            });
        }
    });
    bar.finish();
    let results = results.into_inner().expect("results lock");
    let statuses = results
        .into_iter()
        .flatten()
        .collect::<anyhow::Result<Vec<_>>>()?;
    if opts.stop_after.is_some() {
        anyhow::bail!("stopped early (--stop-after) before the evaluation");
    }
    Ok(statuses)
}

/// One predictor's errors on the evaluation set.
#[derive(Debug, Clone, Serialize)]
pub struct Errors {
    /// MSE / d over all x̃ positions (every k weighted alike).
    pub mse: f64,
    /// Mean over k of `nmse_per_k`.
    pub nmse: f64,
    /// Mean of `nmse_per_k` over k ≥ d, where the noiseless task is determined (NaN if n < d).
    pub nmse_late: f64,
    /// MSE / d at x̃_{k+1}, k = 0…n.
    pub mse_per_k: Vec<f64>,
    /// `mse_per_k` divided by the zero predictor's MSE / d at the same k on the same prompts.
    pub nmse_per_k: Vec<f64>,
}

/// The evaluation set and what every run is measured against.
pub struct EvalSet {
    pub set: PromptSet,
    /// Targets at every x̃ column, `[prompt][k]`.
    pub targets: Vec<Vec<f64>>,
    /// The zero predictor's MSE / d per k.
    pub zero_per_k: Vec<f64>,
}

impl EvalSet {
    /// `count` prompts of `cfg`'s task drawn with `seed`.
    pub fn new(cfg: &TrainConfig, count: usize, seed: u64) -> anyhow::Result<Self> {
        let set = PromptSet::sample(&cfg.distribution(), count, seed)?;
        let targets: Vec<Vec<f64>> = set.prompts.iter().map(|p| p.ys.clone()).collect();
        let zeros: Vec<Vec<f64>> = targets.iter().map(|t| vec![0.0; t.len()]).collect();
        let zero_per_k = metrics::mean_sq_diff(&zeros, &targets, set.d());
        Ok(EvalSet {
            set,
            targets,
            zero_per_k,
        })
    }

    /// The errors of predictions `[prompt][k]`.
    pub fn errors(&self, preds: &[Vec<f64>]) -> Errors {
        let mse_per_k = metrics::mean_sq_diff(preds, &self.targets, self.set.d());
        let nmse_per_k: Vec<f64> = mse_per_k
            .iter()
            .zip(&self.zero_per_k)
            .map(|(m, z)| m / z)
            .collect();
        let all: Vec<usize> = (0..mse_per_k.len()).collect();
        let late: Vec<usize> = (self.set.d()..mse_per_k.len()).collect();
        Errors {
            mse: metrics::mean_over(&mse_per_k, &all),
            nmse: metrics::mean_over(&nmse_per_k, &all),
            nmse_late: metrics::mean_over(&nmse_per_k, &late),
            mse_per_k,
            nmse_per_k,
        }
    }

    /// The errors of the learner `spec` (a run folder or a solver SPEC).
    pub fn evaluate(&self, spec: &str, opts: &RunOptions) -> anyhow::Result<Errors> {
        let lopts = LoadOptions {
            device: opts.device.clone(),
            dtype: None,
            executor: Default::default(),
        };
        let l = learner::load(spec, &self.set.dist, &lopts)?;
        let preds = l.predict(&self.set.prompts)?;
        if preds.iter().flatten().any(|v| !v.is_finite()) {
            anyhow::bail!("{spec}: a prediction on the evaluation set is not finite");
        }
        Ok(self.errors(&preds))
    }
}

/// η_h = sigmoid(logit) of every layer and head of a learned-η run, `[layer][head]`.
fn learned_etas(run: &Run) -> anyhow::Result<Vec<Vec<f64>>> {
    let path = run.dir.join("model.safetensors");
    let (named, _) = crate::tensors::load(&path).map_err(|e| anyhow::anyhow!("{e}"))?;
    (0..run.config.model.layers)
        .map(|l| {
            let name = format!("layers.{l}.attn.momentum_logit");
            let t = named
                .get(&name)
                .ok_or_else(|| anyhow::anyhow!("{}: no tensor `{name}`", path.display()))?;
            Ok(t.data.iter().map(|x| 1.0 / (1.0 + (-x).exp())).collect())
        })
        .collect()
}

/// One run's evaluation.
#[derive(Debug, Clone, Serialize)]
pub struct SeedResult {
    pub seed: u64,
    pub run: PathBuf,
    pub status: RunStatus,
    #[serde(flatten)]
    pub errors: Errors,
    /// Learned-η arms: the trained η_h, `[layer][head]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub learned_eta: Option<Vec<Vec<f64>>>,
}

/// Differences arm − reference, seed by seed, and their mean with its bootstrap interval over
/// the seeds.
#[derive(Debug, Clone, Serialize)]
pub struct Paired {
    pub per_seed: Vec<f64>,
    pub ci: Interval,
}

impl Paired {
    /// `a[i] − b[i]` per seed; the interval resampled with `seed`.
    pub fn new(a: &[f64], b: &[f64], seed: u64) -> Paired {
        let per_seed: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
        Paired {
            ci: bootstrap_mean(&per_seed, RESAMPLES, seed),
            per_seed,
        }
    }
}

/// A summary metric: its key (in the JSON), its title (in the table) and its value on a run.
pub type Metric = (&'static str, &'static str, fn(&Errors) -> f64);

/// The summaries every arm is compared by.
pub const METRICS: [Metric; 3] = [
    ("mse", "MSE / d over all x̃ positions", |e| e.mse),
    ("nmse", "normalised MSE, mean over all k", |e| e.nmse),
    ("nmse_late", "normalised MSE, mean over k ≥ d", |e| {
        e.nmse_late
    }),
];

/// One summary of an arm over the seeds: its mean with a bootstrap interval and, for every arm
/// but the reference, the paired differences with the reference arm.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// A key of [`METRICS`].
    pub metric: String,
    pub mean: Interval,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<Paired>,
}

/// One arm: its runs, their summaries (in [`METRICS`] order) and the mean normalised MSE per k.
#[derive(Debug, Clone, Serialize)]
pub struct ArmResult {
    #[serde(flatten)]
    pub arm: ArmConfig,
    pub runs: Vec<SeedResult>,
    pub summaries: Vec<Summary>,
    /// Mean over the seeds of `nmse_per_k`.
    pub nmse_per_k: Vec<f64>,
}

impl ArmResult {
    /// The values of metric `m` (an index of [`METRICS`]), seed by seed.
    pub fn values(&self, m: usize) -> Vec<f64> {
        self.runs
            .iter()
            .map(|r| (METRICS[m].2)(&r.errors))
            .collect()
    }
}

/// A solver on the same evaluation set.
#[derive(Debug, Clone, Serialize)]
pub struct Baseline {
    pub name: String,
    #[serde(flatten)]
    pub errors: Errors,
}

/// The momentum experiment's result (written by `--json`).
#[derive(Debug, Clone, Serialize)]
pub struct MomentumReport {
    pub format: String,
    pub d: usize,
    pub n: usize,
    pub steps: usize,
    pub prompts: usize,
    pub eval_seed: u64,
    pub seeds: Vec<u64>,
    pub reference: String,
    /// Bootstrap resamples of every interval (95%, percentile, over the seeds).
    pub resamples: usize,
    pub ridge_lambda: f64,
    /// The zero predictor's MSE / d per k (the normaliser).
    pub zero_mse_per_k: Vec<f64>,
    pub arms: Vec<ArmResult>,
    pub baselines: Vec<Baseline>,
}

/// λ of the ridge baseline: the file's, else the Bayes λ* = σ²/τ², else 0.1 (noiseless task).
fn ridge_lambda(cfg: &MomentumConfig, base: &TrainConfig) -> f64 {
    let t = &base.task;
    cfg.eval
        .ridge_lambda
        .unwrap_or(if t.noise_std > 0.0 && t.w_std > 0.0 {
            t.noise_std * t.noise_std / (t.w_std * t.w_std)
        } else {
            0.1
        })
}

/// Evaluate one arm's runs and summarise them over the seeds (differences filled in later).
fn evaluate_arm(
    a: &ArmRuns,
    statuses: &[RunStatus],
    eval: &EvalSet,
    opts: &RunOptions,
    ci_seed: u64,
) -> anyhow::Result<ArmResult> {
    let mut runs = Vec::new();
    for ((r, &status), &seed) in a.runs.iter().zip(statuses).zip(&seed_list(a)) {
        let errors = eval.evaluate(&r.dir.display().to_string(), opts)?;
        let learned_eta = a.arm.learned.then(|| learned_etas(r)).transpose()?;
        runs.push(SeedResult {
            seed,
            run: r.dir.clone(),
            status,
            errors,
            learned_eta,
        });
    }
    let ks = eval.zero_per_k.len();
    let nmse_per_k = (0..ks)
        .map(|k| runs.iter().map(|r| r.errors.nmse_per_k[k]).sum::<f64>() / runs.len() as f64)
        .collect();
    let mut out = ArmResult {
        arm: a.arm.clone(),
        runs,
        summaries: Vec::new(),
        nmse_per_k,
    };
    out.summaries = (0..METRICS.len())
        .map(|m| Summary {
            metric: METRICS[m].0.into(),
            mean: bootstrap_mean(&out.values(m), RESAMPLES, ci_seed),
            diff: None,
        })
        .collect();
    Ok(out)
}

/// The seeds of an arm's runs, in order (from the runs' configs).
fn seed_list(a: &ArmRuns) -> Vec<u64> {
    a.runs.iter().map(|r| r.config.train.seed).collect()
}

/// Fill in every non-reference arm's paired differences with the reference arm.
fn pair_with_reference(arms: &mut [ArmResult], reference: &str, ci_seed: u64) {
    let Some(rf) = arms.iter().find(|a| a.arm.name == reference).cloned() else {
        return;
    };
    for (i, a) in arms.iter_mut().enumerate() {
        if a.arm.name == reference {
            continue;
        }
        let seed = ci_seed.wrapping_add(i as u64 + 1);
        for m in 0..METRICS.len() {
            a.summaries[m].diff = Some(Paired::new(&a.values(m), &rf.values(m), seed));
        }
    }
}

/// Train (or reuse, or resume) every run, `jobs` at a time, then evaluate and compare them.
pub fn run(path: &Path, opts: &RunOptions, jobs: usize) -> anyhow::Result<MomentumReport> {
    if jobs == 0 {
        anyhow::bail!("--jobs must be at least 1");
    }
    let (cfg, base, arms) = runs(path)?;
    let all: Vec<Run> = arms.iter().flat_map(|a| a.runs.iter().cloned()).collect();
    let statuses = train_runs(&all, opts, jobs)?;
    let eval = EvalSet::new(&base, cfg.eval.prompts, cfg.eval.seed)?;
    let ci_seed = cfg.eval.seed;
    let mut results = Vec::new();
    for (a, st) in arms.iter().zip(statuses.chunks(cfg.seeds.len())) {
        results.push(evaluate_arm(a, st, &eval, opts, ci_seed)?);
    }
    pair_with_reference(&mut results, &cfg.reference, ci_seed);
    let lambda = ridge_lambda(&cfg, &base);
    let mut baselines = Vec::new();
    for (name, spec) in [
        ("ols".to_string(), "ols".to_string()),
        (format!("ridge({lambda})"), format!("ridge:{lambda}")),
    ] {
        let errors = eval.evaluate(&spec, opts)?;
        baselines.push(Baseline { name, errors });
    }
    Ok(MomentumReport {
        format: "icl-momentum/1".into(),
        d: base.task.d,
        n: base.task.n,
        steps: base.train.steps,
        prompts: cfg.eval.prompts,
        eval_seed: cfg.eval.seed,
        seeds: cfg.seeds.clone(),
        reference: cfg.reference.clone(),
        resamples: RESAMPLES,
        ridge_lambda: lambda,
        zero_mse_per_k: eval.zero_per_k.clone(),
        arms: results,
        baselines,
    })
}

/// Normalised errors below this are rounding, not error (figure only).
const TINY: f64 = 1e-9;

/// An arm's η column: `—`, the fixed η, or `learned`.
fn eta_label(a: &ArmConfig) -> String {
    match (a.eta, a.learned) {
        (Some(eta), _) => format!("{eta}"),
        (None, true) => "learned".into(),
        (None, false) => "—".into(),
    }
}

impl MomentumReport {
    /// Aligned text: one block per summary metric (mean and paired difference per arm, with the
    /// per-seed differences), the learned η, the normalised MSE per k.
    pub fn table(&self) -> String {
        let mut out = format!(
            "momentum attention on {} prompts (seed {}) of the task (d = {}, n = {}), {} training steps, paired seeds {:?}\n\
             [lo, hi]: 95% percentile-bootstrap interval of the mean over the {} seeds ({} resamples; with this few seeds it is coarse)\n\
             normalised MSE: MSE_k / zero-predictor MSE_k on the same prompts; Δ: arm − {} of the same seed\n",
            self.prompts, self.eval_seed, self.d, self.n, self.steps, self.seeds,
            self.seeds.len(), self.resamples, self.reference
        );
        for m in 0..METRICS.len() {
            out += &self.metric_block(m);
        }
        out += &self.per_seed_table();
        out += &self.per_k_table();
        out
    }

    /// One metric: per arm the mean [CI], the paired difference [CI] and the per-seed
    /// differences; then the baselines.
    fn metric_block(&self, m: usize) -> String {
        let mut out = format!(
            "\n{}\n{:<10} {:>8}  {:<28}  {:<30}  Δ per seed ({})\n",
            METRICS[m].1,
            "arm",
            "η",
            "mean [95% CI]",
            format!("Δ vs {} [95% CI]", self.reference),
            self.seeds
                .iter()
                .map(|s| format!("s{s}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
        for a in &self.arms {
            let sm = &a.summaries[m];
            let (diff, per_seed) = match &sm.diff {
                Some(p) => (
                    p.ci.display(3),
                    (p.per_seed.iter().map(|v| format!("{v:+.2e}")))
                        .collect::<Vec<_>>()
                        .join(" "),
                ),
                None => ("—".into(), String::new()),
            };
            out += &format!(
                "{:<10} {:>8}  {:<28}  {:<30}  {per_seed}\n",
                a.arm.name,
                eta_label(&a.arm),
                sm.mean.display(3),
                diff
            );
        }
        for b in &self.baselines {
            let v = (METRICS[m].2)(&b.errors);
            out += &format!("{:<10} {:>8}  {v:.3e}\n", b.name, "");
        }
        out
    }

    /// The value of every run (first metric), and the learned η.
    fn per_seed_table(&self) -> String {
        let mut out = format!("\n{} per seed\n{:<10}", METRICS[0].1, "arm");
        for s in &self.seeds {
            out += &format!(" {:>10}", format!("s{s}"));
        }
        out += "\n";
        for a in &self.arms {
            out += &format!("{:<10}", a.arm.name);
            for v in a.values(0) {
                out += &format!(" {v:>10.3e}");
            }
            out += "\n";
        }
        for a in self.arms.iter().filter(|a| a.arm.learned) {
            out += &format!("\nlearned η_h of arm {} (per layer: heads)\n", a.arm.name);
            for r in &a.runs {
                let etas: Vec<String> = (r.learned_eta.iter().flatten())
                    .map(|l| {
                        let hs: Vec<String> = l.iter().map(|e| format!("{e:.3}")).collect();
                        format!("[{}]", hs.join(" "))
                    })
                    .collect();
                out += &format!("s{:<9} {}\n", r.seed, etas.join(" "));
            }
        }
        out
    }

    /// Normalised MSE per k: every arm's mean over the seeds, and the baselines; the run statuses.
    fn per_k_table(&self) -> String {
        let mut out = format!(
            "\nnormalised MSE per k (MSE_k / zero_k; arms: mean over seeds)\n{:>3}",
            "k"
        );
        let names = self.arms.iter().map(|a| &a.arm.name);
        for name in names.chain(self.baselines.iter().map(|b| &b.name)) {
            out += &format!(" {name:>11}");
        }
        out += "\n";
        for k in 0..self.zero_mse_per_k.len() {
            out += &format!("{k:>3}");
            let arms = self.arms.iter().map(|a| a.nmse_per_k[k]);
            for v in arms.chain(self.baselines.iter().map(|b| b.errors.nmse_per_k[k])) {
                out += &format!(" {v:>11.3e}");
            }
            out += "\n";
        }
        for a in &self.arms {
            for r in &a.runs {
                out += &format!("run {}: {:?}\n", r.run.display(), r.status);
            }
        }
        out
    }

    /// Normalised MSE per k per arm (mean over seeds) and the baselines, log y.
    fn per_k_chart(&self) -> LineChart {
        let mut c = LineChart::new(
            format!(
                "normalised MSE per k (d = {}, n = {}; mean over {} seeds)",
                self.d,
                self.n,
                self.seeds.len()
            ),
            "k (in-context examples)",
            "MSE_k / zero-predictor MSE_k",
        );
        c.x_scale = Scale::Linear;
        c.y_scale = Scale::Log;
        let ks = |v: &[f64]| -> Vec<(f64, f64)> {
            v.iter().enumerate().map(|(k, &y)| (k as f64, y)).collect()
        };
        for a in &self.arms {
            let label = format!("{} (η {})", a.arm.name, eta_label(&a.arm));
            c.series.push(Series::new(label, ks(&a.nmse_per_k)));
        }
        for b in &self.baselines {
            // OLS is exact (to rounding) at k ≥ d on a noiseless task: those points would only
            // stretch the log axis down to 1e-28, so they are left out and the label says so.
            let points: Vec<(f64, f64)> = (ks(&b.errors.nmse_per_k).into_iter())
                .filter(|&(_, y)| y >= TINY)
                .collect();
            let label = if points.len() < b.errors.nmse_per_k.len() {
                format!("{} (values < {TINY:e} not drawn)", b.name)
            } else {
                b.name.clone()
            };
            c.series.push(Series::new(label, points));
        }
        c
    }

    /// Metric `m`'s paired differences with the reference: per arm a vertical bar from the
    /// interval's lower end through the mean to its upper end, at the arm's index; the zero line.
    fn diff_chart(&self, m: usize) -> LineChart {
        let mut c = LineChart::new(
            format!(
                "{}: arm − {} (mean, 95% CI over seeds)",
                METRICS[m].1, self.reference
            ),
            "arm (index, see legend)",
            format!("paired Δ vs {}", self.reference),
        );
        c.x_scale = Scale::Linear;
        c.y_scale = Scale::Linear;
        let paired: Vec<(&str, Interval)> = (self.arms.iter())
            .filter_map(|a| Some((a.arm.name.as_str(), a.summaries[m].diff.as_ref()?.ci)))
            .collect();
        let right = paired.len() as f64 + 0.5;
        c.series.push(Series::new(
            "0 (no difference)",
            vec![(0.5, 0.0), (right, 0.0)],
        ));
        for (x, (name, ci)) in paired.iter().enumerate() {
            let x = x as f64 + 1.0;
            c.series.push(Series::new(
                format!("{name} @ {x}"),
                vec![(x, ci.lo), (x, ci.mean), (x, ci.hi)],
            ));
        }
        c
    }

    /// The figure: normalised MSE per k; the paired differences of MSE / d over all positions
    /// and of the normalised MSE over k ≥ d.
    pub fn figure(&self) -> Figure {
        Figure {
            panels: vec![
                Panel::Line(self.per_k_chart()),
                Panel::Line(self.diff_chart(0)),
                Panel::Line(self.diff_chart(2)),
            ],
            columns: 3,
            panel_size: (640, 460),
        }
    }
}
