//! Experiment drivers over training configs (docs/ANALYSIS.md, "Experiments"): the noise table
//! (paper Fig. 2), the depth/width sweep (Fig. 3), momentum attention (Dai et al. 2023, §3;
//! docs/ANALYSIS.md, "Momentum attention") and training from compiled weights
//! (docs/ANALYSIS.md, "Training from compiled weights"). Each setting is a training run in its own
//! folder under the experiment's `out`; a finished run is reused, an interrupted one resumed, and
//! a folder holding a run of another config is an error (never silently replaced).

pub mod from_compiled;
pub mod momentum;
pub mod noise;
pub mod sweep;

use crate::train::{self, TrainConfig, TrainOptions};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// How the trained models are evaluated.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EvalConfig {
    /// Prompts per model, drawn from the model's own task.
    #[serde(default = "default_prompts")]
    pub prompts: usize,
    #[serde(default = "default_seed")]
    pub seed: u64,
}

fn default_prompts() -> usize {
    1000
}
fn default_seed() -> u64 {
    12345
}

impl Default for EvalConfig {
    fn default() -> Self {
        EvalConfig {
            prompts: default_prompts(),
            seed: default_seed(),
        }
    }
}

/// One training run of an experiment.
#[derive(Debug, Clone)]
pub struct Run {
    /// The setting's name, also its folder under `out`.
    pub name: String,
    pub dir: PathBuf,
    pub config: TrainConfig,
}

/// What happened to a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// A finished run of the same config was found and used as is.
    Reused,
    /// An interrupted run of the same config was continued from its last checkpoint.
    Resumed,
    Trained,
}

/// How runs are trained.
pub struct RunOptions {
    pub device: candle_core::Device,
    pub progress: bool,
    /// Stop every run after this many steps (tests: an interrupted experiment).
    pub stop_after: Option<usize>,
    /// Which implementation trains (`icl train --engine`).
    pub engine: train::Engine,
}

/// The base config of an experiment with `--set`-style overrides (`base` relative to the
/// experiment file's folder).
pub fn run_config(exp_file: &Path, base: &Path, sets: &[String]) -> anyhow::Result<TrainConfig> {
    let path = exp_file.parent().unwrap_or(Path::new(".")).join(base);
    train::load_config(&path, sets)
        .map_err(|e| anyhow::anyhow!("{}: base config: {e}", exp_file.display()))
}

/// Train `run` unless its folder already holds the finished run; resume it when interrupted.
pub fn ensure_trained(run: &Run, opts: &RunOptions) -> anyhow::Result<RunStatus> {
    let checkpoint = train::latest_checkpoint(&run.dir)?;
    if let Some((step, _)) = &checkpoint {
        let saved = run.dir.join("train.toml");
        let found = train::load_config(&saved, &[])?;
        if found != run.config {
            anyhow::bail!(
                "{} holds a run of another config than setting `{}` asks for (compare its train.toml); remove the folder or change the experiment's out",
                run.dir.display(),
                run.name
            );
        }
        if *step >= run.config.train.steps {
            return Ok(RunStatus::Reused);
        }
    }
    let resumed = checkpoint.is_some();
    train::train(
        &run.config,
        &TrainOptions {
            out: run.dir.clone(),
            resume: resumed,
            stop_after: opts.stop_after,
            progress: opts.progress,
            device: opts.device.clone(),
            engine: opts.engine,
        },
    )?;
    Ok(if resumed {
        RunStatus::Resumed
    } else {
        RunStatus::Trained
    })
}

/// Train (or reuse, or resume) every run in order; an error if `opts.stop_after` interrupted them.
pub fn ensure_all(runs: &[Run], opts: &RunOptions) -> anyhow::Result<Vec<RunStatus>> {
    let statuses = runs
        .iter()
        .map(|r| ensure_trained(r, opts))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if opts.stop_after.is_some() {
        anyhow::bail!("stopped early (--stop-after) before the evaluation");
    }
    Ok(statuses)
}

/// Compare a run's model with solvers (`(SPEC, label)` pairs) on `eval.prompts` prompts of its own
/// task, by SPD only (no ILWD).
pub fn compare_run(
    r: &Run,
    solvers: &[(String, String)],
    eval: &EvalConfig,
    opts: &RunOptions,
) -> anyhow::Result<crate::analysis::compare::Comparison> {
    use crate::analysis::{compare, learner, prompt_set::PromptSet};
    let dist = r.config.distribution();
    let set = PromptSet::sample(&dist, eval.prompts, eval.seed)?;
    let lopts = learner::LoadOptions {
        device: opts.device.clone(),
        dtype: None,
        executor: Default::default(),
    };
    let mut learners = vec![learner::load(&r.dir.display().to_string(), &dist, &lopts)?];
    for (spec, label) in solvers {
        let mut l = learner::load(spec, &dist, &lopts)?;
        l.label = label.clone();
        learners.push(l);
    }
    let copts = compare::CompareOptions {
        ilwd_prompts: 0,
        probes: 0,
        seed: 0,
        allow_uncertified: false,
        progress: false,
    };
    compare::compare(&learners, &set, &r.name, &copts)
}

/// Read and parse an experiment file.
pub fn read_toml<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    let text =
        std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    toml::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.to_string().trim()))
}

/// A number for folder names: `0.25`, `1`.
pub fn short(v: f64) -> String {
    format!("{v}")
}
