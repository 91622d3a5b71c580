//! `icl experiment from-compiled CONFIG`: training from compiled weights (docs/ANALYSIS.md,
//! "Training from compiled weights"). A program is compiled to the paper target
//! (`icl::pipeline`, as `icl-compile --target paper` does) into `out/compiled/`; one training run
//! per learning rate starts from it (`icl train --init`) on the in-context regression task and
//! keeps its weights at the evaluated steps (`train.snapshots`, step 0 being the compiled weights
//! converted to the training dtype). Every kept model — and the compiled model itself, through
//! the same loader `icl compare` uses — is evaluated on one fixed prompt set: MSE / d per k (also
//! divided by the zero predictor's), and the SPD / d per k to each baseline solver (by default
//! ridge(0.5) and OLS), with its means over k < d and over all k, computed by the functions
//! `icl compare` computes them with ([`crate::analysis::metrics`]).
//!
//! A run whose loss turns NaN or infinite stops there: that is a result here, not a failure.
//! The run folder gets `diverged.json` (the step and the loss) and the evaluation covers the
//! snapshots written before it. Resumable like the other experiments: the compile is reused when
//! `out/compile.json` records the same program source, parameters and dtype (another one is an
//! error), finished runs are reused, interrupted ones resumed (`experiment::ensure_trained`),
//! diverged ones not retried.

use super::momentum::{Errors, EvalSet};
use super::{ensure_trained, read_toml, EvalConfig, Run, RunOptions, RunStatus};
use crate::analysis::learner::{self, LearnerKind, LoadOptions};
use crate::analysis::metrics::{mean_over, mean_sq_diff};
use crate::model::config::DType;
use crate::train::{self, TrainConfig, TrainError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

mod report;

/// The experiment file (configs/from_compiled.toml).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FromCompiledConfig {
    /// The program (relative to this file).
    pub program: PathBuf,
    /// Its parameters (`icl-compile --set NAME=VALUE`); the others keep the program's defaults.
    #[serde(default)]
    pub params: BTreeMap<String, toml::Value>,
    /// Dtype of the compiled weights and of training (`train.dtype`).
    #[serde(default = "default_dtype")]
    pub dtype: DType,
    /// Folder of the compile and the runs (relative to the working directory).
    pub out: PathBuf,
    /// One training run per learning rate (`train.lr`), all from the same compiled weights with
    /// the same batches.
    pub lrs: Vec<f64>,
    /// Steps whose weights are kept and evaluated (0: the compiled weights).
    pub eval_steps: Vec<usize>,
    /// `[task]` of the training config (`d` and `n` may be left to the compiled model).
    #[serde(default)]
    pub task: toml::Table,
    /// `[model]`: may be left out (the compiled model's architecture); what it gives must agree.
    #[serde(default)]
    pub model: Option<toml::Table>,
    /// `[train]` of the training config, without `lr` (see `lrs`), `snapshots` (see
    /// `eval_steps`) and `dtype` (see `dtype`).
    pub train: toml::Table,
    #[serde(default)]
    pub eval: FromCompiledEval,
}

fn default_dtype() -> DType {
    DType::F64
}

/// The fixed evaluation set and the solvers every model is compared with.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FromCompiledEval {
    #[serde(default = "default_prompts")]
    pub prompts: usize,
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Solver SPECs (`icl compare`'s: `ridge:λ`, `ols`, …).
    #[serde(default = "default_baselines")]
    pub baselines: Vec<String>,
}

fn default_prompts() -> usize {
    EvalConfig::default().prompts
}
fn default_seed() -> u64 {
    EvalConfig::default().seed
}
fn default_baselines() -> Vec<String> {
    vec!["ridge:0.5".into(), "ols".into()]
}

impl Default for FromCompiledEval {
    fn default() -> Self {
        FromCompiledEval {
            prompts: default_prompts(),
            seed: default_seed(),
            baselines: default_baselines(),
        }
    }
}

/// What the compile was made from (`out/compile.json`): a folder holding another is refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompileRecord {
    pub format: String,
    pub target: String,
    pub dtype: DType,
    /// The program's source text.
    pub source: String,
    /// The parameter overrides, as given to the compiler.
    pub params: BTreeMap<String, String>,
}

/// Checks beyond the TOML shape, each naming its field.
fn validate(cfg: &FromCompiledConfig) -> anyhow::Result<()> {
    if cfg.lrs.is_empty() {
        anyhow::bail!("`lrs` is empty");
    }
    for (i, &lr) in cfg.lrs.iter().enumerate() {
        if !(lr.is_finite() && lr > 0.0) {
            anyhow::bail!("`lrs[{i}]`: must be a positive number, found {lr}");
        }
        if cfg.lrs[..i].contains(&lr) {
            anyhow::bail!("`lrs[{i}]`: learning rate {lr} is listed twice");
        }
    }
    if !cfg.eval_steps.contains(&0) {
        anyhow::bail!(
            "`eval_steps`: must include 0 (the compiled weights, where every run starts)"
        );
    }
    for (i, s) in cfg.eval_steps.iter().enumerate() {
        if cfg.eval_steps[..i].contains(s) {
            anyhow::bail!("`eval_steps[{i}]`: step {s} is listed twice");
        }
    }
    if let Some(steps) = cfg.train.get("steps").and_then(|v| v.as_integer()) {
        if let Some(s) = cfg.eval_steps.iter().find(|&&s| s as i64 > steps) {
            anyhow::bail!("`eval_steps`: step {s} is past train.steps = {steps}");
        }
    }
    for (key, instead) in [
        ("lr", "the learning rates go in `lrs`"),
        ("snapshots", "the kept steps go in `eval_steps`"),
        (
            "dtype",
            "the dtype goes in `dtype` (the compile's and training's)",
        ),
    ] {
        if cfg.train.contains_key(key) {
            anyhow::bail!("`train.{key}`: leave it out: {instead}");
        }
    }
    if cfg.eval.prompts == 0 {
        anyhow::bail!("`eval.prompts`: must be at least 1");
    }
    if cfg.eval.baselines.is_empty() {
        anyhow::bail!("`eval.baselines` is empty");
    }
    for (key, v) in &cfg.params {
        if !matches!(
            v,
            toml::Value::Integer(_) | toml::Value::Float(_) | toml::Value::String(_)
        ) {
            anyhow::bail!("`params.{key}`: expected a number, found {v}");
        }
    }
    Ok(())
}

/// A learning rate as a folder name: `lr0.0001`, `lr1e-20`.
fn run_name(lr: f64) -> String {
    format!("lr{lr:?}")
}

/// The experiment file, checked, and the program path (relative to the file).
pub fn load(path: &Path) -> anyhow::Result<(FromCompiledConfig, PathBuf)> {
    let cfg: FromCompiledConfig = read_toml(path)?;
    validate(&cfg).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let program = path.parent().unwrap_or(Path::new(".")).join(&cfg.program);
    Ok((cfg, program))
}

/// The parameter overrides as the compiler takes them.
fn param_sets(cfg: &FromCompiledConfig) -> Vec<(String, String)> {
    cfg.params
        .iter()
        .map(|(k, v)| {
            let text = match v {
                toml::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (k.clone(), text)
        })
        .collect()
}

/// The compiled model directory of an experiment.
pub fn compiled_dir(cfg: &FromCompiledConfig) -> PathBuf {
    cfg.out.join("compiled")
}

/// Compile the program to the paper target in `out/compiled/` unless `out/compile.json` says
/// it is there already; a record of another program, parameter set or dtype is an error.
/// Returns whether the compile was reused.
pub fn ensure_compiled(
    path: &Path,
    cfg: &FromCompiledConfig,
    program: &Path,
) -> anyhow::Result<bool> {
    let source = std::fs::read_to_string(program).map_err(|e| {
        anyhow::anyhow!("{}: `program`: {}: {e}", path.display(), program.display())
    })?;
    let sets = param_sets(cfg);
    let record = CompileRecord {
        format: "icl-from-compiled-compile/1".into(),
        target: crate::pipeline::Target::Paper.name().into(),
        dtype: cfg.dtype,
        source,
        params: sets.iter().cloned().collect(),
    };
    let rpath = cfg.out.join("compile.json");
    let dir = compiled_dir(cfg);
    if rpath.exists() {
        let text = std::fs::read_to_string(&rpath)
            .map_err(|e| anyhow::anyhow!("{}: {e}", rpath.display()))?;
        let found: CompileRecord =
            serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", rpath.display()))?;
        if found != record {
            anyhow::bail!(
                "{} holds a compile of another program, parameters or dtype than {} asks for (compare its compile.json); remove the folder or change `out`",
                cfg.out.display(),
                path.display()
            );
        }
        if dir.join("config.json").exists() && dir.join("model.safetensors").exists() {
            return Ok(true);
        }
    }
    // Validation prompts are left to the experiment's own evaluation (the compiled model is
    // evaluated on the fixed prompt set beside the trained ones).
    let opts = crate::pipeline::Options {
        target: crate::pipeline::Target::Paper,
        tolerance: None,
        dtype: cfg.dtype,
        device: "cpu".into(),
        prompts: 0,
        seed: 0,
    };
    crate::pipeline::run(program, &sets, &dir, &opts)
        .map_err(|e| anyhow::anyhow!("compiling {}: {e:#}", program.display()))?;
    let json = serde_json::to_string_pretty(&record)? + "\n";
    crate::tensors::write_atomic(&rpath, json.as_bytes())
        .map_err(|e| anyhow::anyhow!("{}: {e}", rpath.display()))?;
    Ok(false)
}

/// The training config of the run at learning rate `lr`, resolved against the compiled model
/// directory (which must exist: [`ensure_compiled`]).
pub fn run_config(path: &Path, cfg: &FromCompiledConfig, lr: f64) -> anyhow::Result<TrainConfig> {
    let mut train = cfg.train.clone();
    train.insert("lr".into(), toml::Value::Float(lr));
    let dtype = toml::Value::try_from(cfg.dtype)?;
    train.insert("dtype".into(), dtype);
    let steps: Vec<toml::Value> = (cfg.eval_steps.iter())
        .map(|&s| toml::Value::Integer(s as i64))
        .collect();
    train.insert("snapshots".into(), toml::Value::Array(steps));
    let mut table = toml::Table::new();
    table.insert("task".into(), toml::Value::Table(cfg.task.clone()));
    if let Some(m) = &cfg.model {
        table.insert("model".into(), toml::Value::Table(m.clone()));
    }
    table.insert("train".into(), toml::Value::Table(train));
    let text = toml::to_string(&table)?;
    let dir = compiled_dir(cfg);
    Ok(train::parse_config_init(
        &text,
        &path.display().to_string(),
        &[],
        Some(&dir),
    )?)
}

/// The runs of an experiment (the compile must exist), in `lrs` order.
pub fn runs(path: &Path, cfg: &FromCompiledConfig) -> anyhow::Result<Vec<Run>> {
    cfg.lrs
        .iter()
        .map(|&lr| {
            let name = run_name(lr);
            Ok(Run {
                dir: cfg.out.join(&name),
                config: run_config(path, cfg, lr)?,
                name,
            })
        })
        .collect()
}

/// Where a run's loss stopped being finite (`RUN/diverged.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Divergence {
    /// Updates applied before the non-finite loss: the weights after this many steps gave it.
    pub after_steps: usize,
    /// The loss (`NaN`, `inf` or `-inf`).
    pub loss: String,
}

fn divergence_path(r: &Run) -> PathBuf {
    r.dir.join("diverged.json")
}

/// Train (or reuse, or resume) one run; a non-finite loss ends it with its [`Divergence`]
/// recorded, and a run recorded as diverged (with the same config) is not retried.
pub fn ensure_run(r: &Run, opts: &RunOptions) -> anyhow::Result<(RunStatus, Option<Divergence>)> {
    let dpath = divergence_path(r);
    if dpath.exists() {
        let saved = train::load_config(&r.dir.join("train.toml"), &[])?;
        if saved == r.config {
            let text = std::fs::read_to_string(&dpath)
                .map_err(|e| anyhow::anyhow!("{}: {e}", dpath.display()))?;
            let d: Divergence = serde_json::from_str(&text)
                .map_err(|e| anyhow::anyhow!("{}: {e}", dpath.display()))?;
            return Ok((RunStatus::Reused, Some(d)));
        }
    }
    let resumed = train::latest_checkpoint(&r.dir)?.is_some();
    match ensure_trained(r, opts) {
        Ok(status) => Ok((status, None)),
        Err(e) => match e.downcast_ref::<TrainError>() {
            Some(TrainError::NonFinite { step, loss, .. }) => {
                let d = Divergence {
                    after_steps: step - 1,
                    loss: format!("{loss}"),
                };
                let json = serde_json::to_string_pretty(&d)? + "\n";
                crate::tensors::write_atomic(&dpath, json.as_bytes())
                    .map_err(|e| anyhow::anyhow!("{}: {e}", dpath.display()))?;
                let status = if resumed {
                    RunStatus::Resumed
                } else {
                    RunStatus::Trained
                };
                Ok((status, Some(d)))
            }
            _ => Err(e),
        },
    }
}

/// One model's errors and its distance to every baseline on the evaluation set.
#[derive(Debug, Clone, Serialize)]
pub struct StepEval {
    pub step: usize,
    /// Predictions that are NaN or ±∞ (of prompts × (n+1)); the means are then not finite
    /// (`null` in the JSON).
    pub nonfinite: usize,
    #[serde(flatten)]
    pub errors: Errors,
    /// SPD / d per k to each baseline, `[baseline][k]`.
    pub spd: Vec<Vec<f64>>,
    /// Mean SPD over k < d (MSPD) and over all k, per baseline.
    pub mspd_under: Vec<f64>,
    pub mspd_all: Vec<f64>,
    /// The training loss of these weights on their step's batch (`metrics.jsonl` line of step
    /// + 1; absent when not logged: `train.log_every = 1` logs every step).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_loss: Option<f64>,
    /// How far the weights are from the run's step 0 (absent for the compiled model).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub moved: Option<WeightMove>,
}

/// Which weights training changed, against the run's step-0 weights (the compiled ones in the
/// training dtype).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct WeightMove {
    /// Parameters in all (every tensor element).
    pub parameters: usize,
    /// Parameters that are 0 at step 0 (the construction's structural zeros).
    pub zeros: usize,
    /// Parameters whose value differs from step 0, and how many of them were 0 there.
    pub changed: usize,
    pub changed_zeros: usize,
    /// The largest |w| a former zero has reached.
    pub max_abs_former_zero: f64,
    /// The largest |Δw| / |w₀| over the weights non-zero at step 0.
    pub max_rel_change_nonzero: f64,
}

/// Compare the weights of two model directories tensor by tensor.
fn weight_move(start: &Path, now: &Path) -> anyhow::Result<WeightMove> {
    let read = |dir: &Path| {
        let p = dir.join("model.safetensors");
        crate::tensors::load(&p)
            .map(|(named, _)| named)
            .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))
    };
    let (a, b) = (read(start)?, read(now)?);
    let mut m = WeightMove::default();
    for (name, ta) in &a {
        let tb = b.get(name).filter(|t| t.shape == ta.shape).ok_or_else(|| {
            anyhow::anyhow!(
                "{}: no tensor `{name}` of shape {:?}",
                now.display(),
                ta.shape
            )
        })?;
        for (&x, &y) in ta.data.iter().zip(&tb.data) {
            m.parameters += 1;
            m.zeros += usize::from(x == 0.0);
            if x == y {
                continue;
            }
            m.changed += 1;
            if x == 0.0 {
                m.changed_zeros += 1;
                m.max_abs_former_zero = m.max_abs_former_zero.max(y.abs());
            } else {
                m.max_rel_change_nonzero = m.max_rel_change_nonzero.max(((y - x) / x).abs());
            }
        }
    }
    Ok(m)
}

/// One learning rate's run.
#[derive(Debug, Clone, Serialize)]
pub struct ArmResult {
    pub lr: f64,
    pub run: PathBuf,
    pub status: RunStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diverged: Option<Divergence>,
    /// The evaluated steps (those of `eval_steps` the run reached), in increasing order.
    pub evals: Vec<StepEval>,
}

impl ArmResult {
    /// The last evaluated step whose predictions are all finite.
    pub fn last_finite(&self) -> Option<&StepEval> {
        self.evals.iter().rev().find(|e| e.nonfinite == 0)
    }
}

/// A baseline solver on the evaluation set.
#[derive(Debug, Clone, Serialize)]
pub struct Baseline {
    pub spec: String,
    pub label: String,
    #[serde(flatten)]
    pub errors: Errors,
}

/// The experiment's result (written by `--json`).
#[derive(Debug, Clone, Serialize)]
pub struct FromCompiledReport {
    pub format: String,
    pub program: PathBuf,
    pub params: BTreeMap<String, String>,
    pub dtype: DType,
    pub compiled: PathBuf,
    /// Whether the compile was reused from an earlier invocation.
    pub compile_reused: bool,
    pub layers: usize,
    pub width: usize,
    pub parameters: usize,
    pub d: usize,
    pub n: usize,
    pub steps: usize,
    pub batch: usize,
    pub warmup_frac: f64,
    pub train_seed: u64,
    pub prompts: usize,
    pub eval_seed: u64,
    pub eval_steps: Vec<usize>,
    /// The zero predictor's MSE / d per k (the normaliser of `nmse_per_k`).
    pub zero_mse_per_k: Vec<f64>,
    pub baselines: Vec<Baseline>,
    /// The compiled model itself (its own directory, as `icl compare` loads it).
    pub compiled_eval: StepEval,
    pub arms: Vec<ArmResult>,
    /// Seconds spent training (this invocation) and evaluating (not serialized: files stay
    /// byte-identical).
    #[serde(skip)]
    pub train_seconds: f64,
    #[serde(skip)]
    pub eval_seconds: f64,
}

/// Predictions of a learner (model directory or solver SPEC) on the evaluation set; compiled
/// models are held to their certified input ranges, as `icl compare` does.
fn predict(spec: &str, eval: &EvalSet, opts: &RunOptions) -> anyhow::Result<Vec<Vec<f64>>> {
    let lopts = LoadOptions {
        device: opts.device.clone(),
        dtype: None,
        executor: Default::default(),
    };
    let l = learner::load(spec, &eval.set.dist, &lopts)?;
    l.check_fits(&eval.set.dist)?;
    l.check_ranges(&eval.set.prompts, false)?;
    l.predict(&eval.set.prompts)
}

/// The errors and baseline distances of predictions `preds`.
fn step_eval(
    step: usize,
    preds: &[Vec<f64>],
    eval: &EvalSet,
    baselines: &[Vec<Vec<f64>>],
) -> StepEval {
    let d = eval.set.d();
    let n1 = eval.zero_per_k.len();
    let under: Vec<usize> = (0..n1).filter(|&k| k < d).collect();
    let all: Vec<usize> = (0..n1).collect();
    let spd: Vec<Vec<f64>> = baselines
        .iter()
        .map(|b| mean_sq_diff(preds, b, d))
        .collect();
    StepEval {
        step,
        nonfinite: preds.iter().flatten().filter(|v| !v.is_finite()).count(),
        errors: eval.errors(preds),
        mspd_under: spd.iter().map(|s| mean_over(s, &under)).collect(),
        mspd_all: spd.iter().map(|s| mean_over(s, &all)).collect(),
        spd,
        batch_loss: None,
        moved: None,
    }
}

/// The logged batch losses of a run.
fn train_losses(r: &Run) -> Vec<(usize, f64)> {
    let Ok(text) = std::fs::read_to_string(r.dir.join("metrics.jsonl")) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| Some((v["step"].as_u64()? as usize, v["loss"].as_f64()?)))
        .collect()
}

/// Compile (or reuse), train (or reuse, or resume) every run, then evaluate every kept step.
pub fn run(path: &Path, opts: &RunOptions) -> anyhow::Result<FromCompiledReport> {
    let (cfg, program) = load(path)?;
    let compile_reused = ensure_compiled(path, &cfg, &program)?;
    let runs = runs(path, &cfg)?;
    // The evaluation set and the baselines before any training: a bad baseline fails early.
    let base = &runs[0].config;
    let eval = EvalSet::new(base, cfg.eval.prompts, cfg.eval.seed)?;
    let lopts = LoadOptions {
        device: opts.device.clone(),
        dtype: None,
        executor: Default::default(),
    };
    let mut baselines = Vec::new();
    let mut baseline_preds = Vec::new();
    for (i, spec) in cfg.eval.baselines.iter().enumerate() {
        let l = learner::load(spec, &eval.set.dist, &lopts)
            .map_err(|e| anyhow::anyhow!("{}: `eval.baselines[{i}]`: {e}", path.display()))?;
        if l.kind() != LearnerKind::Solver {
            anyhow::bail!(
                "{}: `eval.baselines[{i}]`: {spec:?} is not a solver (ols, ridge:λ, gd:α, …)",
                path.display()
            );
        }
        let preds = l.predict(&eval.set.prompts)?;
        baselines.push(Baseline {
            spec: spec.clone(),
            label: l.label.clone(),
            errors: eval.errors(&preds),
        });
        baseline_preds.push(preds);
    }
    let t0 = std::time::Instant::now();
    let mut trained = Vec::new();
    for r in &runs {
        trained.push(ensure_run(r, opts)?);
    }
    if opts.stop_after.is_some() {
        anyhow::bail!("stopped early (--stop-after) before the evaluation");
    }
    let train_seconds = t0.elapsed().as_secs_f64();
    let t1 = std::time::Instant::now();
    let mut steps = cfg.eval_steps.clone();
    steps.sort_unstable();
    let reached =
        |div: &Option<Divergence>, s: usize| div.as_ref().is_none_or(|d| s <= d.after_steps);
    let total: usize = 1
        + (trained.iter())
            .map(|(_, div)| steps.iter().filter(|&&s| reached(div, s)).count())
            .sum::<usize>();
    let bar = crate::progress::bar(
        opts.progress,
        total as u64,
        "evaluating {bar:30} {pos}/{len} models {msg} [{elapsed_precise}<{eta_precise}]",
    );
    let dir = compiled_dir(&cfg);
    bar.set_message("compiled".to_string());
    let cpreds = predict(&dir.display().to_string(), &eval, opts)?;
    let compiled_eval = step_eval(0, &cpreds, &eval, &baseline_preds);
    bar.inc(1);
    let mut arms = Vec::new();
    for (r, (status, diverged)) in runs.iter().zip(trained) {
        let losses = train_losses(r);
        let mut evals = Vec::new();
        for &s in steps.iter().filter(|&&s| reached(&diverged, s)) {
            bar.set_message(format!("{} step {s}", r.name));
            let snap = train::snapshot_dir(&r.dir, s);
            if !snap.join("model.safetensors").exists() {
                anyhow::bail!(
                    "{}: no snapshot of step {s} ({} is missing); remove the run folder to retrain it",
                    r.dir.display(),
                    snap.display()
                );
            }
            let preds = predict(&snap.display().to_string(), &eval, opts)?;
            let mut e = step_eval(s, &preds, &eval, &baseline_preds);
            e.batch_loss = (losses.iter()).find(|(t, _)| *t == s + 1).map(|&(_, l)| l);
            e.moved = Some(weight_move(&train::snapshot_dir(&r.dir, 0), &snap)?);
            evals.push(e);
            bar.inc(1);
        }
        arms.push(ArmResult {
            lr: r.config.train.lr,
            run: r.dir.clone(),
            status,
            diverged,
            evals,
        });
    }
    bar.finish_and_clear();
    let mc = crate::model::load_config(&dir.join("config.json"))?;
    let parameters = crate::model::expected_tensors(&mc)
        .values()
        .map(|shape| shape.iter().product::<usize>())
        .sum();
    Ok(FromCompiledReport {
        format: "icl-from-compiled/1".into(),
        program,
        params: param_sets(&cfg).into_iter().collect(),
        dtype: cfg.dtype,
        compiled: dir,
        compile_reused,
        layers: mc.layers.len(),
        width: mc.width,
        parameters,
        d: base.task.d,
        n: base.task.n,
        steps: base.train.steps,
        batch: base.train.batch,
        warmup_frac: base.train.warmup_frac,
        train_seed: base.train.seed,
        prompts: cfg.eval.prompts,
        eval_seed: cfg.eval.seed,
        eval_steps: steps,
        zero_mse_per_k: eval.zero_per_k.clone(),
        baselines,
        compiled_eval,
        arms,
        train_seconds,
        eval_seconds: t1.elapsed().as_secs_f64(),
    })
}

/// Level lines at or below this are not drawn (figure only).
const TINY: f64 = 1e-30;
