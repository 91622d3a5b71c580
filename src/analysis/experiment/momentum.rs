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
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        Errors {
            mse: mean(&mse_per_k),
            nmse: mean(&nmse_per_k),
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

/// One arm: its runs and, over the seeds, the mean errors with their intervals and the paired
/// differences with the reference arm (absent for the reference itself).
#[derive(Debug, Clone, Serialize)]
pub struct ArmResult {
    #[serde(flatten)]
    pub arm: ArmConfig,
    pub runs: Vec<SeedResult>,
    pub mse: Interval,
    pub nmse: Interval,
    /// Mean over the seeds of `nmse_per_k`.
    pub nmse_per_k: Vec<f64>,
    /// MSE / d minus the reference arm's, paired by seed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff_mse: Option<Paired>,
    /// Mean normalised MSE minus the reference arm's, paired by seed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff_nmse: Option<Paired>,
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
    let col = |f: &dyn Fn(&SeedResult) -> f64| runs.iter().map(f).collect::<Vec<f64>>();
    let ks = eval.zero_per_k.len();
    let nmse_per_k = (0..ks)
        .map(|k| runs.iter().map(|r| r.errors.nmse_per_k[k]).sum::<f64>() / runs.len() as f64)
        .collect();
    Ok(ArmResult {
        arm: a.arm.clone(),
        mse: bootstrap_mean(&col(&|r| r.errors.mse), RESAMPLES, ci_seed),
        nmse: bootstrap_mean(&col(&|r| r.errors.nmse), RESAMPLES, ci_seed),
        nmse_per_k,
        runs,
        diff_mse: None,
        diff_nmse: None,
    })
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
    let of = |a: &ArmResult, f: fn(&Errors) -> f64| -> Vec<f64> {
        a.runs.iter().map(|r| f(&r.errors)).collect()
    };
    for (i, a) in arms.iter_mut().enumerate() {
        if a.arm.name == reference {
            continue;
        }
        let seed = ci_seed.wrapping_add(i as u64 + 1);
        a.diff_mse = Some(Paired::new(&of(a, |e| e.mse), &of(&rf, |e| e.mse), seed));
        a.diff_nmse = Some(Paired::new(&of(a, |e| e.nmse), &of(&rf, |e| e.nmse), seed));
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
    /// Aligned text: the summary per arm, the per-seed values, the normalised MSE per k.
    pub fn table(&self) -> String {
        let mut out = format!(
            "momentum attention: MSE / d over all x̃ positions of {} prompts (seed {}) of the task (d = {}, n = {}), {} training steps, paired seeds {:?}\n\
             [lo, hi]: 95% percentile-bootstrap interval of the mean over the {} seeds ({} resamples; with this few seeds it is coarse)\n\
             normalised MSE: MSE_k / zero-predictor MSE_k, averaged over k = 0…{}\n\n",
            self.prompts, self.eval_seed, self.d, self.n, self.steps, self.seeds,
            self.seeds.len(), self.resamples, self.n
        );
        let reference = &self.reference;
        out += &format!(
            "{:<12} {:>8}  {:<31}  {:<31}  {:<33}  {:<33}\n",
            "arm",
            "η",
            "MSE/d",
            "normalised MSE",
            format!("MSE/d − {reference}"),
            format!("normalised − {reference}")
        );
        for a in &self.arms {
            let diff = |p: &Option<Paired>| p.as_ref().map_or("—".into(), |p| p.ci.display(3));
            out += &format!(
                "{:<12} {:>8}  {:<31}  {:<31}  {:<33}  {:<33}\n",
                a.arm.name,
                eta_label(&a.arm),
                a.mse.display(3),
                a.nmse.display(3),
                diff(&a.diff_mse),
                diff(&a.diff_nmse)
            );
        }
        for b in &self.baselines {
            out += &format!(
                "{:<12} {:>8}  {:<31}  {:<31}\n",
                b.name,
                "",
                format!("{:.2e}", b.errors.mse),
                format!("{:.2e}", b.errors.nmse)
            );
        }
        out += &self.per_seed_table();
        out += &self.per_k_table();
        out
    }

    /// MSE / d per arm and seed, the paired differences per seed, and the learned η.
    fn per_seed_table(&self) -> String {
        let mut out = String::new();
        let head = |title: &str| {
            let mut h = format!("\n{title}\n{:<12}", "arm");
            for s in &self.seeds {
                h += &format!(" {:>10}", format!("s{s}"));
            }
            h + "\n"
        };
        out += &head("MSE / d per seed");
        for a in &self.arms {
            out += &format!("{:<12}", a.arm.name);
            for r in &a.runs {
                out += &format!(" {:>10.3e}", r.errors.mse);
            }
            out += "\n";
        }
        out += &head(&format!("MSE / d − {} per seed (paired)", self.reference));
        for a in &self.arms {
            if let Some(p) = &a.diff_mse {
                out += &format!("{:<12}", a.arm.name);
                for v in &p.per_seed {
                    out += &format!(" {:>+10.2e}", v);
                }
                out += "\n";
            }
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
                out += &format!("s{:<11} {}\n", r.seed, etas.join(" "));
            }
        }
        out
    }

    /// Normalised MSE per k: every arm's mean over the seeds, and the baselines.
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

    /// Panel 1: normalised MSE per k per arm (mean over seeds) and the baselines, log y.
    /// Panel 2: each arm's paired difference of MSE / d with the reference, mean and 95%
    /// interval over the seeds (a vertical bar at the arm's index), and the zero line.
    pub fn figure(&self) -> Figure {
        let mut per_k = LineChart::new(
            format!(
                "normalised MSE per k (d = {}, n = {}; mean over {} seeds)",
                self.d,
                self.n,
                self.seeds.len()
            ),
            "k (in-context examples)",
            "MSE_k / zero-predictor MSE_k",
        );
        per_k.x_scale = Scale::Linear;
        per_k.y_scale = Scale::Log;
        let ks = |v: &[f64]| -> Vec<(f64, f64)> {
            v.iter().enumerate().map(|(k, &y)| (k as f64, y)).collect()
        };
        for a in &self.arms {
            per_k.series.push(Series::new(
                format!("{} (η {})", a.arm.name, eta_label(&a.arm)),
                ks(&a.nmse_per_k),
            ));
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
            per_k.series.push(Series::new(label, points));
        }
        let mut diff = LineChart::new(
            format!(
                "MSE/d − {} per arm: mean and 95% bootstrap CI over seeds",
                self.reference
            ),
            "arm (index, see legend)",
            format!("paired Δ MSE / d vs {}", self.reference),
        );
        diff.x_scale = Scale::Linear;
        diff.y_scale = Scale::Linear;
        let paired: Vec<(usize, &ArmResult)> = (self.arms.iter().enumerate())
            .filter(|(_, a)| a.diff_mse.is_some())
            .collect();
        diff.series.push(Series::new(
            "0 (no difference)",
            vec![(0.5, 0.0), (paired.len() as f64 + 0.5, 0.0)],
        ));
        for (x, (_, a)) in paired.iter().enumerate() {
            let ci = a.diff_mse.as_ref().expect("filtered").ci;
            let x = x as f64 + 1.0;
            diff.series.push(Series::new(
                format!("{} @ {x}", a.arm.name),
                vec![(x, ci.lo), (x, ci.mean), (x, ci.hi)],
            ));
        }
        Figure {
            panels: vec![Panel::Line(per_k), Panel::Line(diff)],
            columns: 2,
            panel_size: (720, 480),
        }
    }
}
