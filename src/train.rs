//! Trained-model mode (docs/ARCHITECTURE.md, "Trained mode and analysis"): ordinary transformers trained on in-context linear
//! regression with the same [`Transformer`] type compiled models use.
//!
//! Determinism: the batch of step s is drawn from `ChaCha8(batch_seed(seed, s))` — a function of
//! (seed, step) only, so there is no running RNG to lose — and a checkpoint stores the weights,
//! the AdamW moments and the step. Resuming from a checkpoint therefore replays exactly the
//! computation an uninterrupted run does (bit-identical on CPU).

use crate::model::config::{
    Activation, AttnConfig, DType, LayerConfig, MlpConfig, MlpKind, ModelConfig, ModelKind,
    MomentumConfig, NormConfig, MODEL_FORMAT,
};
use crate::model::{self, ModelError, Transformer};
use crate::prompt::{Prompt, PromptDistribution, XFamily};
use crate::tensors::{self, NamedTensors, RawTensor};
use candle_core::{DType as CDType, Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

mod checkpoint;
pub mod fused;
mod init;

use checkpoint::{ckpt_dir, load_checkpoint, save_checkpoint, save_snapshot, truncate_metrics};
pub use checkpoint::{latest_checkpoint, snapshot_dir};
use init::load_init;
pub use init::{load_config_init, parse_config_init};

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("{path}: {msg}")]
    Config { path: String, msg: String },
    #[error("{0}")]
    Model(#[from] ModelError),
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("{path}: {msg}")]
    Io { path: String, msg: String },
    #[error("loss is {loss} at step {step}: training stopped. {kept}")]
    NonFinite {
        step: usize,
        loss: f64,
        kept: String,
    },
    #[error("{0}")]
    Resume(String),
    /// `--init DIR` (`[init] dir`) cannot start this run from that directory.
    #[error("--init {dir}: {msg}")]
    Init { dir: String, msg: String },
    /// `--engine fused` on a model the fused step does not cover (the reason).
    #[error("--engine fused: {0}; use --engine auto or candle")]
    Engine(String),
    /// A broken invariant of this crate (a bug, not a user error).
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T> = std::result::Result<T, TrainError>;

/// A training config whose values the TOML shape allows but training cannot use; each names
/// its field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TrainConfigError {
    #[error("field `{field}`: must be at least 1, found 0")]
    Zero { field: &'static str },
    #[error("field `model.heads`: {heads} heads do not divide width {width} (head size = width / heads; or give model.head_dim)")]
    HeadsDoNotDivide { heads: usize, width: usize },
    #[error("field `{field}`: must be a finite number >= 0, found {value}")]
    NotFiniteNonNegative { field: &'static str, value: f64 },
    #[error("field `{field}`: must be finite, found {value}")]
    NotFinite { field: &'static str, value: f64 },
    #[error(
        "field `model.ln_eps`: must be > 0 for training (a zero-variance column would divide by 0)"
    )]
    ZeroLayerNormEps,
    #[error("field `{field}`: must be in [0, 1), found {value}")]
    NotInUnitInterval { field: &'static str, value: f64 },
    #[error("field `{field}`: must be in [0, 1], found {value}")]
    NotInClosedUnitInterval { field: &'static str, value: f64 },
    #[error("fields `model.momentum_eta` and `model.momentum_learned`: choose one")]
    MomentumFixedAndLearned,
    #[error("field `{field}`: must be a positive number, found {value}")]
    NotPositive { field: &'static str, value: f64 },
    #[error("field `train.snapshots`: step {step} is past train.steps = {steps}")]
    SnapshotPastEnd { step: usize, steps: usize },
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> TrainError {
    TrainError::Io {
        path: path.display().to_string(),
        msg: e.to_string(),
    }
}

/// The task: prompts x ~ N(x_shift, x_scale² I_d) (or uniform with that mean and deviation),
/// w ~ N(0, w_std² I_d) (or fixed), y = wᵀx + N(0, noise_std²).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskConfig {
    pub d: usize,
    pub n: usize,
    #[serde(default = "one")]
    pub w_std: f64,
    #[serde(default)]
    pub noise_std: f64,
    #[serde(default = "one")]
    pub x_scale: f64,
    #[serde(default)]
    pub x_shift: f64,
    /// `normal` (default) or `uniform` x entries (with standard deviation `x_scale`).
    #[serde(default)]
    pub x_family: XFamily,
    /// Every entry of w fixed to this value (the paper's control task: w = 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub w_fixed: Option<f64>,
}

fn one() -> f64 {
    1.0
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// Pre-LayerNorm on attention and MLP inputs, final LayerNorm.
    Gpt2,
    /// LayerNorm only on the MLP input (the block of Akyürek et al., ICLR 2023).
    Paper,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchConfig {
    pub arch: Arch,
    pub layers: usize,
    pub width: usize,
    pub heads: usize,
    /// MLP inner width (default 4·width).
    #[serde(default)]
    pub mlp_hidden: Option<usize>,
    #[serde(default = "default_act")]
    pub activation: Activation,
    #[serde(default = "default_ln_eps")]
    pub ln_eps: f64,
    /// Momentum attention with a fixed decay η in [0, 1] (docs/FORMATS.md, "Momentum attention";
    /// Dai et al. 2023); η = 1 is the running sum of earlier values (docs/ANALYSIS.md).
    #[serde(default)]
    pub momentum_eta: Option<f64>,
    /// Momentum attention with a learned per-head decay η_h = sigmoid(logit_h).
    #[serde(default)]
    pub momentum_learned: bool,
    /// Size of one attention head (default width / heads, which heads must then divide);
    /// heads·head_dim need not equal width (a compiled `paper` model's heads may be smaller).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_dim: Option<usize>,
    /// Every attention has the null key of value 0 (PyTorch's add_zero_attn; docs/FORMATS.md),
    /// as compiled `paper` models do.
    #[serde(default, skip_serializing_if = "is_false")]
    pub zero_attn: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl ArchConfig {
    /// The size of one attention head: `head_dim`, else width / heads.
    pub fn head_size(&self) -> usize {
        self.head_dim.unwrap_or(self.width / self.heads.max(1))
    }
}

fn default_act() -> Activation {
    Activation::Gelu
}
fn default_ln_eps() -> f64 {
    1e-5
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimConfig {
    pub steps: usize,
    pub batch: usize,
    pub lr: f64,
    #[serde(default)]
    pub weight_decay: f64,
    #[serde(default = "default_b1")]
    pub beta1: f64,
    #[serde(default = "default_b2")]
    pub beta2: f64,
    #[serde(default = "default_adam_eps")]
    pub adam_eps: f64,
    /// Fraction of the steps spent in linear warm-up (the paper's 1/5).
    #[serde(default = "default_warmup")]
    pub warmup_frac: f64,
    /// Clip gradients to this global L2 norm (0 = no clipping).
    #[serde(default = "one")]
    pub clip: f64,
    #[serde(default)]
    pub seed: u64,
    #[serde(default = "default_ckpt")]
    pub checkpoint_every: usize,
    #[serde(default = "default_log")]
    pub log_every: usize,
    #[serde(default = "default_dtype")]
    pub dtype: DType,
    /// Steps (0: the initial weights) whose model directory is kept in
    /// `OUT/snapshots/step-XXXXXXXX/` (`config.json`, `model.safetensors`), each at most
    /// `steps`; checkpoints replace each other, snapshots stay. Left out of `train.toml` when
    /// empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub snapshots: Vec<usize>,
}

fn default_b1() -> f64 {
    0.9
}
fn default_b2() -> f64 {
    0.999
}
fn default_adam_eps() -> f64 {
    1e-8
}
fn default_warmup() -> f64 {
    0.2
}
fn default_ckpt() -> usize {
    1000
}
fn default_log() -> usize {
    50
}
fn default_dtype() -> DType {
    DType::F32
}

/// Where a run's initial weights come from when they are not drawn from `train.seed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitConfig {
    /// A model directory of target `paper` (compiled or trained): its architecture is the run's
    /// and its weights, converted to `train.dtype`, are the step-0 weights. A resolved config
    /// (a run's `train.toml`) holds the absolute path.
    pub dir: PathBuf,
}

/// A training configuration file (`configs/*.toml`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    pub task: TaskConfig,
    pub model: ArchConfig,
    pub train: OptimConfig,
    /// `icl train --init DIR`: start from DIR's weights (see [`load_config_init`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<InitConfig>,
}

impl TrainConfig {
    /// Checks beyond the TOML shape, each naming its field.
    pub fn validate(&self) -> std::result::Result<(), TrainConfigError> {
        use TrainConfigError as E;
        let (t, m, o) = (&self.task, &self.model, &self.train);
        let positive_counts = [
            (t.d, "task.d"),
            (t.n, "task.n"),
            (m.layers, "model.layers"),
            (m.width, "model.width"),
            (m.heads, "model.heads"),
            (o.steps, "train.steps"),
            (o.batch, "train.batch"),
            (o.checkpoint_every, "train.checkpoint_every"),
            (o.log_every, "train.log_every"),
            (m.mlp_hidden.unwrap_or(1), "model.mlp_hidden"),
            (m.head_dim.unwrap_or(1), "model.head_dim"),
        ];
        if let Some(&(_, field)) = positive_counts.iter().find(|(v, _)| *v == 0) {
            return Err(E::Zero { field });
        }
        if m.head_dim.is_none() && !m.width.is_multiple_of(m.heads) {
            return Err(E::HeadsDoNotDivide {
                heads: m.heads,
                width: m.width,
            });
        }
        let finite_nonneg = |value: f64, field: &'static str| {
            if value.is_finite() && value >= 0.0 {
                Ok(())
            } else {
                Err(E::NotFiniteNonNegative { field, value })
            }
        };
        finite_nonneg(t.w_std, "task.w_std")?;
        finite_nonneg(t.noise_std, "task.noise_std")?;
        finite_nonneg(t.x_scale, "task.x_scale")?;
        if !t.x_shift.is_finite() {
            return Err(E::NotFinite {
                field: "task.x_shift",
                value: t.x_shift,
            });
        }
        if let Some(value) = t.w_fixed.filter(|v| !v.is_finite()) {
            return Err(E::NotFinite {
                field: "task.w_fixed",
                value,
            });
        }
        finite_nonneg(m.ln_eps, "model.ln_eps")?;
        if m.ln_eps == 0.0 {
            return Err(E::ZeroLayerNormEps);
        }
        if let Some(eta) = m.momentum_eta {
            if !(eta.is_finite() && (0.0..=1.0).contains(&eta)) {
                return Err(E::NotInClosedUnitInterval {
                    field: "model.momentum_eta",
                    value: eta,
                });
            }
            if m.momentum_learned {
                return Err(E::MomentumFixedAndLearned);
            }
        }
        if !(o.lr.is_finite() && o.lr > 0.0) {
            return Err(E::NotPositive {
                field: "train.lr",
                value: o.lr,
            });
        }
        finite_nonneg(o.weight_decay, "train.weight_decay")?;
        finite_nonneg(o.clip, "train.clip")?;
        for (value, field) in [
            (o.beta1, "train.beta1"),
            (o.beta2, "train.beta2"),
            (o.warmup_frac, "train.warmup_frac"),
        ] {
            if !(0.0..1.0).contains(&value) {
                return Err(E::NotInUnitInterval { field, value });
            }
        }
        if !(o.adam_eps.is_finite() && o.adam_eps > 0.0) {
            return Err(E::NotPositive {
                field: "train.adam_eps",
                value: o.adam_eps,
            });
        }
        if let Some(&step) = o.snapshots.iter().find(|&&s| s > o.steps) {
            return Err(E::SnapshotPastEnd {
                step,
                steps: o.steps,
            });
        }
        Ok(())
    }

    pub fn distribution(&self) -> PromptDistribution {
        let t = &self.task;
        PromptDistribution {
            d: t.d,
            n: t.n,
            w_std: t.w_std,
            noise_std: t.noise_std,
            x_scale: t.x_scale,
            x_shift: t.x_shift,
            x_family: t.x_family,
            w_fixed: t.w_fixed,
        }
    }

    /// The model architecture as a `config.json` (docs/FORMATS.md).
    pub fn model_config(&self) -> ModelConfig {
        let m = &self.model;
        let eps = NormConfig { eps: m.ln_eps };
        let momentum = match (m.momentum_eta, m.momentum_learned) {
            (Some(eta), _) => Some(MomentumConfig::Fixed { eta }),
            (None, true) => Some(MomentumConfig::Learned { learned: true }),
            (None, false) => None,
        };
        let attn = AttnConfig {
            heads: m.heads,
            head_dim: m.head_size(),
            qk: true,
            bias: false,
            zero_attn: m.zero_attn,
            momentum,
        };
        let mlp = MlpConfig {
            kind: MlpKind::Gelu,
            hidden: m.mlp_hidden.unwrap_or(4 * m.width),
            activation: m.activation,
        };
        let gpt2 = m.arch == Arch::Gpt2;
        let layer = LayerConfig {
            attn_norm: gpt2.then_some(eps),
            attn: Some(attn),
            norm: Some(eps),
            mlp: Some(mlp),
        };
        ModelConfig {
            format: MODEL_FORMAT.into(),
            kind: ModelKind::Trained,
            target: match m.arch {
                Arch::Gpt2 => "gpt2".into(),
                Arch::Paper => "paper".into(),
            },
            dtype: self.train.dtype,
            d: self.task.d,
            n: self.task.n,
            max_len: 2 * self.task.n + 1,
            width: m.width,
            layers: vec![layer; m.layers],
            final_norm: gpt2.then_some(eps),
            readout_row: None,
        }
    }
}

/// Parse a TOML training config and apply `field=value` overrides (dotted paths such as
/// `model.layers=4` or `train.lr=3e-4`; the value is read as TOML, else as a string). An
/// `[init]` section is taken as written (the [model] section must then be complete, as in a
/// run's `train.toml`) and its directory is not read: see [`parse_config_init`] for that.
pub fn parse_config(text: &str, path: &str, sets: &[String]) -> Result<TrainConfig> {
    finish_config(parse_table(text, path, sets)?, path)
}

fn config_err(path: &str, msg: String) -> TrainError {
    TrainError::Config {
        path: path.into(),
        msg,
    }
}

/// The TOML table of a config with the `--set` overrides applied.
fn parse_table(text: &str, path: &str, sets: &[String]) -> Result<toml::Table> {
    let cerr = |msg: String| config_err(path, msg);
    let mut value: toml::Table = toml::from_str(text).map_err(|e| cerr(e.to_string()))?;
    for s in sets {
        let (key, raw) = s
            .split_once('=')
            .ok_or_else(|| cerr(format!("--set `{s}`: expected field=value")))?;
        let key = key.trim();
        let parts: Vec<&str> = key.split('.').collect();
        if parts.len() != 2 || parts.iter().any(|p| p.is_empty()) {
            return Err(cerr(format!(
                "--set `{s}`: expected a field as section.name (e.g. train.lr)"
            )));
        }
        let v: toml::Value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(raw.to_string()));
        section(&mut value, parts[0])
            .ok_or_else(|| cerr(format!("--set `{s}`: `{}` is not a section", parts[0])))?
            .insert(parts[1].to_string(), v);
    }
    Ok(value)
}

/// Section `name` of a config table (created empty if absent); None if `name` is not a table.
fn section<'a>(table: &'a mut toml::Table, name: &str) -> Option<&'a mut toml::Table> {
    table
        .entry(name.to_string())
        .or_insert_with(|| toml::Value::Table(Default::default()))
        .as_table_mut()
}

fn deserialize_config(table: toml::Table, path: &str) -> Result<TrainConfig> {
    toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| config_err(path, e.to_string().trim().to_string()))
}

fn finish_config(table: toml::Table, path: &str) -> Result<TrainConfig> {
    let cfg = deserialize_config(table, path)?;
    cfg.validate()
        .map_err(|e| config_err(path, e.to_string()))?;
    Ok(cfg)
}

pub fn load_config(path: &Path, sets: &[String]) -> Result<TrainConfig> {
    let text = std::fs::read_to_string(path).map_err(|e| io_err(path, e))?;
    parse_config(&text, &path.display().to_string(), sets)
}

/// splitmix64: a bijective mixer, used to derive independent per-step seeds.
fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The seed of step `step`'s batch: a function of (seed, step) only.
pub fn batch_seed(seed: u64, step: usize) -> u64 {
    splitmix64(splitmix64(seed) ^ (step as u64).wrapping_mul(0xD1B5_4A32_D192_ED03))
}

/// Initial parameters: linear weights U(±1/√fan_in) (the paper's "uniform scaling"), biases 0,
/// LayerNorm gains 1, position table N(0, 0.02²), momentum logits 0 (η = 1/2).
pub fn init_params(mc: &ModelConfig, seed: u64) -> NamedTensors {
    let mut rng = ChaCha8Rng::seed_from_u64(splitmix64(seed ^ 0x1C1_u64));
    let mut out = NamedTensors::new();
    for (name, shape) in model::expected_tensors(mc) {
        let mut t = RawTensor::zeros(&shape);
        let is_norm = name.contains("norm.");
        if name == "pos.weight" {
            for v in &mut t.data {
                let g: f64 = StandardNormal.sample(&mut rng);
                *v = 0.02 * g;
            }
        } else if is_norm && name.ends_with(".weight") {
            t.data.iter_mut().for_each(|v| *v = 1.0);
        } else if name.ends_with(".weight") {
            let bound = 1.0 / (shape[1] as f64).sqrt();
            for v in &mut t.data {
                *v = rng.random_range(-bound..bound);
            }
        }
        out.insert(name, t);
    }
    out
}

/// Learning rate before update `step` (0-based): linear warm-up over the first
/// `warmup_frac·steps` updates, then a half cosine down to 0.
pub fn learning_rate(o: &OptimConfig, step: usize) -> f64 {
    let warm = ((o.warmup_frac * o.steps as f64).round() as usize).max(1);
    if step < warm {
        o.lr * (step + 1) as f64 / warm as f64
    } else {
        let rest = (o.steps - warm).max(1) as f64;
        let progress = ((step - warm) as f64 / rest).min(1.0);
        o.lr * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
    }
}

/// AdamW with decoupled weight decay; moments are kept per parameter name.
pub struct AdamW {
    pub m: std::collections::BTreeMap<String, Tensor>,
    pub v: std::collections::BTreeMap<String, Tensor>,
    /// Number of updates applied so far.
    pub t: usize,
    /// The fused step's buffers, reused from one step to the next (not optimizer state: never
    /// saved, rebuilt on first use).
    pub scratch: fused::Scratch,
}

impl AdamW {
    pub fn new(model: &Transformer) -> Result<Self> {
        let mut m = std::collections::BTreeMap::new();
        let mut v = std::collections::BTreeMap::new();
        for (name, p) in model.params() {
            m.insert(name.clone(), p.zeros_like()?);
            v.insert(name.clone(), p.zeros_like()?);
        }
        Ok(AdamW {
            m,
            v,
            t: 0,
            scratch: fused::Scratch::default(),
        })
    }

    /// One update with learning rate `lr`; gradients already clipped.
    pub fn step(
        &mut self,
        model: &Transformer,
        grads: &candle_core::backprop::GradStore,
        lr: f64,
        o: &OptimConfig,
    ) -> Result<()> {
        self.t += 1;
        let bc1 = 1.0 - o.beta1.powi(self.t as i32);
        let bc2 = 1.0 - o.beta2.powi(self.t as i32);
        let vars = model
            .varmap()
            .ok_or_else(|| TrainError::Resume("internal: model is not trainable".into()))?;
        let vars = vars.data().lock().expect("varmap lock");
        for (name, var) in vars.iter() {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            let m = self.m.get_mut(name).expect("moment for every parameter");
            *m = ((&*m * o.beta1)? + (g * (1.0 - o.beta1))?)?;
            let v = self.v.get_mut(name).expect("moment for every parameter");
            *v = ((&*v * o.beta2)? + (g.sqr()? * (1.0 - o.beta2))?)?;
            let mhat = (&*m / bc1)?;
            let vhat = (&*v / bc2)?;
            let update = (mhat / (vhat.sqrt()? + o.adam_eps)?)?;
            let decayed = (var.as_tensor() * (1.0 - lr * o.weight_decay))?;
            var.set(&(decayed - (update * lr)?)?)?;
        }
        Ok(())
    }
}

/// Where a run writes: `DIR/config.json` + `DIR/model.safetensors` (the latest weights, a model
/// directory `icl eval` loads), `DIR/metrics.jsonl`, `DIR/train.toml` (the resolved config; with
/// `[init] dir`, the absolute path of the model directory the run started from),
/// `DIR/checkpoints/step-XXXXXXXX/` (weights, optimizer state, state.json) and
/// `DIR/checkpoint.json` naming the latest complete checkpoint (written last: the commit point).
pub struct TrainOptions {
    pub out: PathBuf,
    pub resume: bool,
    /// Stop (after checkpointing) once this many steps are done — simulates an interrupted run.
    pub stop_after: Option<usize>,
    pub progress: bool,
    pub device: Device,
    pub engine: Engine,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckpointState {
    pub step: usize,
    pub seed: u64,
    /// How the data RNG is derived (there is no running RNG state to save).
    pub rng: String,
    pub config: TrainConfig,
}

#[derive(Debug, Clone, Serialize)]
pub struct Metrics {
    pub step: usize,
    pub loss: f64,
    pub ols_loss: f64,
    pub loss_over_ols: f64,
    pub lr: f64,
    pub steps_per_s: f64,
}

#[derive(Debug, Clone)]
pub struct TrainSummary {
    pub steps_done: usize,
    pub last_loss: f64,
    pub steps_per_s: f64,
}

/// Targets at the x̃ columns [batch, n+1] and the indices of those columns.
fn batch_tensors(
    prompts: &[Prompt],
    d: usize,
    device: &Device,
    dtype: CDType,
) -> Result<(Tensor, Tensor, Tensor)> {
    let tokens = model::prompts_to_tensor(prompts, d, device)?.to_dtype(dtype)?;
    let n1 = prompts[0].ys.len();
    let ys: Vec<f64> = prompts.iter().flat_map(|p| p.ys.iter().copied()).collect();
    let ys = Tensor::from_vec(ys, (prompts.len(), n1), device)?.to_dtype(dtype)?;
    let cols: Vec<u32> = (0..n1 as u32).map(|k| 2 * k).collect();
    let cols = Tensor::from_vec(cols, n1, device)?;
    Ok((tokens, ys, cols))
}

/// Mean squared error of the OLS (minimum-norm) prediction at every x̃ column of the batch.
pub fn ols_loss(prompts: &[Prompt]) -> f64 {
    let (mut sum, mut count) = (0.0, 0usize);
    for p in prompts {
        for (a, y) in crate::solvers::Solver::Ols.predict(p).iter().zip(&p.ys) {
            sum += (a - y) * (a - y);
            count += 1;
        }
    }
    sum / count.max(1) as f64
}

/// What one training step did.
pub enum StepOutcome {
    /// The update was applied; the batch loss (before the update) and the batch.
    Done { loss: f64, prompts: Vec<Prompt> },
    /// The loss was NaN or ±inf; nothing was updated.
    NonFinite(f64),
}

/// Which implementation runs a training step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Engine {
    /// The fused CPU step (src/train/fused/) where it covers the model, else Candle's autograd.
    #[default]
    Auto,
    /// The fused CPU step; an error naming the reason where it does not cover the model.
    Fused,
    /// Candle's forward and autograd (the reference: every model, every device).
    Candle,
}

impl Engine {
    /// Whether this engine runs a model of config `c` on `device` on the fused step: `Candle`
    /// never, `Auto` where the fused step covers the model, `Fused` there and otherwise an error
    /// naming why. The one place the engine is resolved.
    pub fn runs_fused(self, c: &ModelConfig, device: &Device) -> Result<bool> {
        if self == Engine::Candle {
            return Ok(false);
        }
        match (self, fused::unsupported(c, device)) {
            (_, None) => Ok(true),
            (Engine::Fused, Some(why)) => Err(TrainError::Engine(why)),
            _ => Ok(false),
        }
    }
}

/// One training step (0-based `step`): sample the step's batch, forward, MSE on every x̃ column,
/// backward, global-norm clipping, AdamW update with the scheduled learning rate; on the
/// [`Engine::Auto`] path.
pub fn train_step(
    cfg: &TrainConfig,
    model: &Transformer,
    opt: &mut AdamW,
    step: usize,
) -> Result<StepOutcome> {
    train_step_on(cfg, model, opt, step, Engine::Auto)
}

/// [`train_step`] on a chosen engine. Both compute the same step (`tests/fused.rs`).
pub fn train_step_on(
    cfg: &TrainConfig,
    model: &Transformer,
    opt: &mut AdamW,
    step: usize,
    engine: Engine,
) -> Result<StepOutcome> {
    let o = &cfg.train;
    let prompts = cfg
        .distribution()
        .sample_batch(o.batch, batch_seed(o.seed, step));
    let lr = learning_rate(o, step);
    if engine.runs_fused(&model.config, model.device())? {
        return fused::train_step(cfg, model, opt, prompts, lr);
    }
    let (lval, mut grads) = candle_loss_and_grads(model, &prompts)?;
    if !lval.is_finite() {
        return Ok(StepOutcome::NonFinite(lval));
    }
    // Global-norm clipping: scale every gradient by min(1, clip / ‖g‖).
    if o.clip > 0.0 {
        let mut sq = 0.0;
        for p in model.params().values() {
            if let Some(g) = grads.get(p) {
                sq += g
                    .sqr()?
                    .sum_all()?
                    .to_dtype(CDType::F64)?
                    .to_scalar::<f64>()?;
            }
        }
        let norm = sq.sqrt();
        if norm > o.clip {
            let scale = o.clip / norm;
            for p in model.params().values() {
                if let Some(g) = grads.remove(p) {
                    grads.insert(p, (g * scale)?);
                }
            }
        }
    }
    opt.step(model, &grads, lr, o)?;
    Ok(StepOutcome::Done {
        loss: lval,
        prompts,
    })
}

/// The batch's MSE over the x̃ columns through Candle's forward, and its gradients by Candle's
/// autograd (the reference the fused step is tested against).
pub fn candle_loss_and_grads(
    model: &Transformer,
    prompts: &[Prompt],
) -> Result<(f64, candle_core::backprop::GradStore)> {
    let d = model.config.d;
    let (tokens, ys, cols) = batch_tensors(prompts, d, model.device(), model.dtype())?;
    let pred = model.forward(&tokens)?.index_select(&cols, 1)?;
    let loss = (pred - &ys)?.sqr()?.mean_all()?;
    let lval = loss.to_dtype(CDType::F64)?.to_scalar::<f64>()?;
    Ok((lval, loss.backward()?))
}

/// Floating-point operations of one training step's matrix products, forward and backward (3×
/// the forward's 2·MACs): per token, the linear layers' weights (Q, K, V, O, MLP up and down)
/// and the attention scores and reads (4·T·heads·head_dim per layer), times batch·T tokens.
/// configs/tiny.toml: 0.12 GFLOP; the paper-shaped bench model (4 layers of width 128, batch
/// 64, T = 81): 26 GFLOP.
pub fn step_flops(cfg: &TrainConfig) -> f64 {
    let m = &cfg.model;
    let (w, t) = (m.width as f64, (2 * cfg.task.n + 1) as f64);
    // heads·head_dim: the width of Q, K and V (= width unless `model.head_dim` says otherwise).
    let inner = (m.heads * m.head_size()) as f64;
    let hidden = m.mlp_hidden.unwrap_or(4 * m.width) as f64;
    let per_token_layer = 4.0 * w * inner + 2.0 * w * hidden + 4.0 * t * inner;
    6.0 * cfg.train.batch as f64 * t * m.layers as f64 * per_token_layer
}

/// Steps smaller than this run faster on one CPU thread than on two on the Candle engine:
/// Candle's per-operation thread hand-off costs more than it saves (`cargo bench --bench train`
/// on 2 cores, Candle engine: tiny.toml 7.9 ms/step on one thread against 9.5 ms on two). The
/// fused step runs whole on the pool and gains from a second thread even there (tiny.toml:
/// 1.5 ms on two, 1.9 ms on one).
pub const ONE_THREAD_BELOW_FLOPS: f64 = 1e9;

/// The CPU threads a run should use when the user has not chosen (`RAYON_NUM_THREADS`): one for
/// small steps on the Candle engine, else None (all cores). Results do not depend on it:
/// Candle's CPU kernels split work by output rows, never a sum, and so does the fused step
/// (`tests/fused.rs` checks one against two threads bit for bit).
pub fn cpu_threads(cfg: &TrainConfig, engine: Engine) -> Option<usize> {
    // A refused `--engine fused` counts as fused here: the run stops before its first step.
    let fused = engine
        .runs_fused(&cfg.model_config(), &Device::Cpu)
        .unwrap_or(true);
    (!fused && step_flops(cfg) < ONE_THREAD_BELOW_FLOPS).then_some(1)
}

/// A fresh trainable model and optimizer for a config: the weights of `init.dir` when the
/// config has one (`icl train --init`), else drawn from `train.seed`.
pub fn fresh(cfg: &TrainConfig, device: &Device) -> Result<(Transformer, AdamW)> {
    let mc = cfg.model_config();
    let model = match &cfg.init {
        Some(init) => load_init(cfg, init, device)?,
        None => Transformer::from_named(
            mc.clone(),
            &init_params(&mc, cfg.train.seed),
            device,
            mc.dtype,
            true,
        )?,
    };
    let opt = AdamW::new(&model)?;
    Ok((model, opt))
}

/// A fresh run (its directory, config copy and step-0 checkpoint written) or, with `--resume`,
/// the latest checkpoint of an existing one (metrics after it dropped): the model, the
/// optimizer and the step to start from.
fn start_or_resume(cfg: &TrainConfig, opts: &TrainOptions) -> Result<(Transformer, AdamW, usize)> {
    let out = &opts.out;
    let saved_cfg = out.join("train.toml");
    Ok(match (opts.resume, latest_checkpoint(out)?) {
        (true, Some((_, dir))) => {
            let (model, opt, state) = load_checkpoint(&dir, cfg, &opts.device)?;
            truncate_metrics(&out.join("metrics.jsonl"), state.step)?;
            (model, opt, state.step)
        }
        (true, None) => {
            return Err(TrainError::Resume(format!(
                "--resume: no checkpoint in {} (no checkpoint.json)",
                out.display()
            )))
        }
        (false, Some(_)) => {
            return Err(TrainError::Resume(format!(
                "{} already holds a run; pass --resume to continue it or choose another -o",
                out.display()
            )))
        }
        (false, None) => {
            let (model, opt) = fresh(cfg, &opts.device)?;
            std::fs::create_dir_all(out).map_err(|e| io_err(out, e))?;
            let text = toml::to_string_pretty(cfg).map_err(|e| io_err(&saved_cfg, e))?;
            tensors::write_atomic(&saved_cfg, text.as_bytes())
                .map_err(|e| io_err(&saved_cfg, e))?;
            let _ = std::fs::remove_file(out.join("metrics.jsonl"));
            save_snapshot(out, cfg, &model, 0)?;
            save_checkpoint(out, cfg, &model, &opt, 0)?;
            (model, opt, 0)
        }
    })
}

/// The progress bar of a run of `steps` steps that starts at `start` (hidden when not wanted).
fn progress_bar(show: bool, steps: usize, start: usize) -> indicatif::ProgressBar {
    let b = crate::progress::bar(
        show,
        steps as u64,
        "{bar:30} {pos}/{len} {msg} [{elapsed_precise}<{eta_precise}]",
    );
    b.set_position(start as u64);
    b
}

/// Train (or resume) a model as `cfg` says, writing to `opts.out`.
pub fn train(cfg: &TrainConfig, opts: &TrainOptions) -> Result<TrainSummary> {
    cfg.validate().map_err(|e| TrainError::Config {
        path: "<config>".into(),
        msg: e.to_string(),
    })?;
    // `--engine fused` on a model it does not cover is refused before anything is written.
    opts.engine.runs_fused(&cfg.model_config(), &opts.device)?;
    let out = &opts.out;
    let (model, mut opt, start) = start_or_resume(cfg, opts)?;
    let o = &cfg.train;
    let end = opts.stop_after.map_or(o.steps, |s| s.min(o.steps));
    let bar = progress_bar(opts.progress, o.steps, start);
    let mpath = out.join("metrics.jsonl");
    let mut metrics = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&mpath)
        .map_err(|e| io_err(&mpath, e))?;
    let mut last_loss = f64::NAN;
    let t0 = std::time::Instant::now();
    let mut interval = (std::time::Instant::now(), start);
    let mut last_ckpt = start;
    for step in start..end {
        let (lval, prompts) = match train_step_on(cfg, &model, &mut opt, step, opts.engine)? {
            StepOutcome::Done { loss, prompts } => (loss, prompts),
            StepOutcome::NonFinite(lval) => {
                bar.abandon();
                return Err(TrainError::NonFinite {
                    step: step + 1,
                    loss: lval,
                    kept: format!(
                        "The last good checkpoint (step {last_ckpt}) is kept in {}.",
                        ckpt_dir(out, last_ckpt).display()
                    ),
                });
            }
        };
        last_loss = lval;
        let lr = learning_rate(o, step);
        let done = step + 1;
        if done % o.log_every == 0 || done == o.steps {
            let ols = ols_loss(&prompts);
            let now = std::time::Instant::now();
            let sps =
                (done - interval.1) as f64 / now.duration_since(interval.0).as_secs_f64().max(1e-9);
            interval = (now, done);
            let m = Metrics {
                step: done,
                loss: lval,
                ols_loss: ols,
                loss_over_ols: lval / ols,
                lr,
                steps_per_s: sps,
            };
            let line = serde_json::to_string(&m).map_err(|e| io_err(&mpath, e))?;
            writeln!(metrics, "{line}").map_err(|e| io_err(&mpath, e))?;
            bar.set_message(format!("loss {lval:.4} (OLS {ols:.4}) {sps:.1} steps/s"));
        }
        bar.set_position(done as u64);
        save_snapshot(out, cfg, &model, done)?;
        // `stop_after` does not checkpoint at its stop: it behaves like a kill, so a resume
        // replays the steps since the last checkpoint.
        if done % o.checkpoint_every == 0 || done == o.steps {
            save_checkpoint(out, cfg, &model, &opt, done)?;
            last_ckpt = done;
        }
    }
    bar.finish();
    let steps_run = end.saturating_sub(start);
    Ok(TrainSummary {
        steps_done: end,
        last_loss,
        steps_per_s: steps_run as f64 / t0.elapsed().as_secs_f64().max(1e-9),
    })
}
