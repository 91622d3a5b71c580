//! `config.json`: the architecture of a model directory, compiled or trained (docs/FORMATS.md).

use serde::{Deserialize, Serialize};

/// Storage dtype of a model's tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    F32,
    F64,
}

impl DType {
    /// Machine epsilon (half an ulp of 1 is eps/2).
    pub fn epsilon(self) -> f64 {
        match self {
            DType::F32 => f32::EPSILON as f64,
            DType::F64 => f64::EPSILON,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F64 => "f64",
        }
    }
}

/// A dtype name other than `f32` and `f64`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown dtype `{0}` (expected f32 or f64)")]
pub struct UnknownDType(pub String);

impl std::str::FromStr for DType {
    type Err = UnknownDType;
    fn from_str(s: &str) -> Result<Self, UnknownDType> {
        match s {
            "f32" => Ok(DType::F32),
            "f64" => Ok(DType::F64),
            other => Err(UnknownDType(other.to_string())),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    Compiled,
    Trained,
}

/// LayerNorm over the `width` entries of a column, with weight and bias tensors.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NormConfig {
    pub eps: f64,
}

/// Momentum attention (docs/FORMATS.md, "Momentum attention"): `o_t += Σ_{s<t} η^{t−s} v_s`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged, deny_unknown_fields)]
pub enum MomentumConfig {
    /// Fixed decay η in [0, 1]; η = 1 is the unnormalised running sum of earlier values (the
    /// sum-path control of docs/ANALYSIS.md, "Momentum attention").
    Fixed { eta: f64 },
    /// η_h = sigmoid(attn.momentum_logit[h]), learned per head.
    Learned { learned: bool },
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttnConfig {
    pub heads: usize,
    pub head_dim: usize,
    /// Query/key projections present (scores q·k/√head_dim).
    pub qk: bool,
    /// Additive bias pattern `attn.bias` [heads, max_len, max_len+1] present.
    pub bias: bool,
    /// A null key with value 0 is appended (its bias is column max_len of `attn.bias`).
    pub zero_attn: bool,
    #[serde(default)]
    pub momentum: Option<MomentumConfig>,
}

impl AttnConfig {
    pub fn inner(&self) -> usize {
        self.heads * self.head_dim
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MlpKind {
    /// `down · ((gate·m + b_g) ⊙ (up·m + b_u)) + b_down`.
    Bilinear,
    /// `down · gelu(up·m + b_up) + b_down`.
    Gelu,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// Exact GeLU, x·Φ(x).
    Gelu,
    /// tanh approximation of GeLU.
    GeluTanh,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MlpConfig {
    pub kind: MlpKind,
    pub hidden: usize,
    #[serde(default = "default_activation")]
    pub activation: Activation,
}

fn default_activation() -> Activation {
    Activation::Gelu
}

/// One block: `h ← h + Attn(attn_norm?(h)); h ← h + MLP(norm?(h))`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerConfig {
    pub attn_norm: Option<NormConfig>,
    pub attn: Option<AttnConfig>,
    pub norm: Option<NormConfig>,
    pub mlp: Option<MlpConfig>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Always `icl-model/1`.
    pub format: String,
    pub kind: ModelKind,
    /// Compiled: "exact" or "paper"; trained: "gpt2" or "paper".
    pub target: String,
    pub dtype: DType,
    pub d: usize,
    pub n: usize,
    pub max_len: usize,
    pub width: usize,
    pub layers: Vec<LayerConfig>,
    pub final_norm: Option<NormConfig>,
    /// Compiled models: the hidden row the prediction is read from (informational).
    pub readout_row: Option<usize>,
}

pub const MODEL_FORMAT: &str = "icl-model/1";

/// What is wrong with a `config.json`: its JSON, or a value the forward pass cannot use.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    #[error("field `format`: expected \"{expected}\", found \"{0}\"", expected = MODEL_FORMAT)]
    Format(String),
    /// A size field (`d`, `width`, `max_len`) that is 0.
    #[error("field `{0}`: must be at least 1")]
    Empty(&'static str),
    #[error("field `readout_row`: {row} is not a row of a width-{width} hidden state")]
    ReadoutRow { row: usize, width: usize },
    #[error("{norm}.eps: must be finite and >= 0, found {eps}")]
    NormEps { norm: NormSite, eps: f64 },
    #[error("layers[{layer}].attn: heads and head_dim must be at least 1")]
    NoHeads { layer: usize },
    #[error("layers[{layer}].attn.momentum.eta: must be in [0, 1], found {eta}")]
    Eta { layer: usize, eta: f64 },
    #[error(
        "layers[{layer}].attn.momentum: {{\"learned\": false}} is ambiguous; use null for no momentum"
    )]
    LearnedFalse { layer: usize },
    #[error("layers[{layer}].mlp.hidden: must be at least 1")]
    NoHidden { layer: usize },
}

/// Which LayerNorm of a config a [`ConfigError::NormEps`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormSite {
    Final,
    /// `layers[l].attn_norm`.
    Attn(usize),
    /// `layers[l].norm` (before the MLP).
    Mlp(usize),
}

impl std::fmt::Display for NormSite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NormSite::Final => write!(f, "field `final_norm`"),
            NormSite::Attn(l) => write!(f, "layers[{l}].attn_norm"),
            NormSite::Mlp(l) => write!(f, "layers[{l}].norm"),
        }
    }
}
