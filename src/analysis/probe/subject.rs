//! A model directory to probe: the model, the prompt distribution it is probed on and, for a
//! compiled model, its layout.
//!
//! The distribution is, in order: `--dist SPEC` when given (d must equal the model's, 2n+1 columns
//! must fit its `max_len`, and a compiled model needs its own n: its attention patterns name fixed
//! columns); otherwise a trained run's task from its `train.toml`, with a fixed w (the paper's
//! control task) replaced by w ~ N(0, I) — the paper probes its control model on the same random-w
//! prompts as the real one, so the probe asks whether the model computes these quantities on
//! prompts it was not trained to solve; otherwise (a compiled model) x, w ~ N(0, I), no noise, at
//! the config's d and n.

use super::{ProbeError, Result};
use crate::layout::Layout;
use crate::model::config::{ModelConfig, ModelKind};
use crate::model::Transformer;
use crate::prompt::PromptDistribution;
use candle_core::Device;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Why a model is in the run: one of the models asked about, or the control (`--control`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Model,
    Control,
}

/// A loaded model directory and the prompts it is probed on.
pub struct Subject {
    pub dir: PathBuf,
    pub role: Role,
    pub model: Transformer,
    pub dist: PromptDistribution,
    /// Where `dist` came from, for people.
    pub dist_source: String,
    /// `layout.json` of a compiled model (absent for trained ones).
    pub layout: Option<Layout>,
    /// Prompts from `--prompts FILE` (the first `train` train, the next `test` held out);
    /// `None`: sampled from `dist`.
    pub prompts: Option<Vec<crate::prompt::Prompt>>,
}

/// Where a subject's prompts come from.
#[derive(Clone, Copy)]
pub enum PromptChoice<'a> {
    /// The model's own task (a fixed-w task probed on random w).
    Task,
    /// `--dist SPEC`.
    Spec(&'a str),
    /// `--prompts FILE`, already read.
    File(&'a Path, &'a crate::analysis::prompt_set::PromptSet),
}

fn dir_error(dir: &Path, msg: impl Into<String>) -> ProbeError {
    ProbeError::Dir {
        path: dir.display().to_string(),
        msg: msg.into(),
    }
}

/// Load `dir` (config.json + model.safetensors, and layout.json when present) on `device`, in the
/// file's dtype, and choose its distribution (module doc); `dist_spec` is `--dist`.
pub fn load_subject(
    dir: &Path,
    role: Role,
    choice: PromptChoice<'_>,
    device: &Device,
) -> Result<Subject> {
    if !dir.is_dir() {
        return Err(dir_error(dir, "no such model directory"));
    }
    let model = Transformer::load(dir, device, None)?;
    let layout = read_layout(dir)?;
    let mut prompts = None;
    let (dist, dist_source) = match choice {
        PromptChoice::Spec(spec) => {
            let dist = PromptDistribution::parse_spec(spec).map_err(|e| ProbeError::Arg {
                arg: "--dist",
                msg: e.to_string(),
            })?;
            (fits(dist, &model.config, "--dist")?, "--dist".to_string())
        }
        PromptChoice::File(path, set) => {
            prompts = Some(set.prompts.clone());
            (
                fits(set.dist.clone(), &model.config, "--prompts")?,
                format!("{} ({})", path.display(), set.dist.spec()),
            )
        }
        PromptChoice::Task => default_distribution(dir, &model.config)?,
    };
    Ok(Subject {
        dir: dir.to_path_buf(),
        role,
        model,
        dist,
        dist_source,
        layout,
        prompts,
    })
}

/// `layout.json`, if the directory has one.
fn read_layout(dir: &Path) -> Result<Option<Layout>> {
    let path = dir.join("layout.json");
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path).map_err(|e| dir_error(&path, e.to_string()))?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| dir_error(&path, format!("invalid layout: {e}")))
}

/// `--dist SPEC`, checked against the model.
/// `dist` if prompts of it fit the model (`arg` names the flag they came from).
fn fits(
    dist: PromptDistribution,
    config: &ModelConfig,
    arg: &'static str,
) -> Result<PromptDistribution> {
    let arg = |msg: String| ProbeError::Arg { arg, msg };
    if dist.d != config.d {
        return Err(arg(format!(
            "d = {} but the model reads d = {} features",
            dist.d, config.d
        )));
    }
    if 2 * dist.n + 1 > config.max_len {
        return Err(arg(format!(
            "n = {} needs 2n+1 = {} columns but the model's max_len is {}",
            dist.n,
            2 * dist.n + 1,
            config.max_len
        )));
    }
    if config.kind == ModelKind::Compiled && dist.n != config.n {
        return Err(arg(format!(
            "n = {} but this compiled model was built for n = {} (its attention patterns name fixed columns)",
            dist.n, config.n
        )));
    }
    Ok(dist)
}

/// The task of a trained run (fixed w replaced by N(0, I)), or N(0, I) at a compiled model's size.
fn default_distribution(dir: &Path, config: &ModelConfig) -> Result<(PromptDistribution, String)> {
    let toml = dir.join("train.toml");
    // The same default as every analysis command (`icl compare` without --prompts/--dist).
    let mut dist = crate::analysis::learner::default_distribution(dir)
        .map_err(|e| dir_error(dir, format!("{e:#}")))?;
    let mut source = if toml.exists() {
        format!("task of {}", toml.display())
    } else {
        "x ~ N(0, I), w ~ N(0, I), no noise (no train.toml)".to_string()
    };
    if let Some(c) = dist.w_fixed.take() {
        dist.w_std = 1.0;
        source.push_str(&format!(
            ", with w ~ N(0, I) instead of the trained fixed w = {c} (control)"
        ));
    }
    if dist.d != config.d || 2 * dist.n + 1 > config.max_len {
        return Err(dir_error(
            &toml,
            format!(
                "task d = {}, n = {} does not fit the model (d = {}, max_len = {})",
                dist.d, dist.n, config.d, config.max_len
            ),
        ));
    }
    Ok((dist, source))
}
