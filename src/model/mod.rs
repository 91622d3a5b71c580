//! The one Candle transformer used by compiled and trained models (docs/FORMATS.md).
//!
//! A [`Transformer`] is a [`ModelConfig`] plus its weights, resolved once by name into a typed
//! [`schema::Weights`] tree of Candle tensors (a struct per block part); the forward pass takes
//! those parts and never looks a tensor up by name. It is built from a model directory
//! ([`Transformer::load`]), from named f64 tensors ([`Transformer::from_named`]), and — for
//! training — with every parameter a `candle_nn` variable registered in a [`VarMap`], so the
//! trained and compiled models share the forward pass below line for line.

pub mod config;
pub mod schema;
pub mod sparse;

use crate::prompt::Prompt;
use crate::tensors::{self, NamedTensors, RawTensor};
use candle_core::{DType as CDType, Device, Tensor, D};
use candle_nn::VarMap;
use config::{
    Activation, AttnConfig, ConfigError, DType, MlpConfig, MlpKind, ModelConfig, MomentumConfig,
    NormSite, MODEL_FORMAT,
};
use schema::{Attention, Linear, Mlp, Norm, Weights};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Everything that can go wrong loading or running a model. Messages name the file, the tensor,
/// what was expected and what was found.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: missing file ({source})")]
    MissingFile {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: invalid config: {source}")]
    Config { path: String, source: ConfigError },
    #[error("{path}: {source}")]
    TensorFile {
        path: String,
        source: tensors::TensorFileError,
    },
    #[error("{path}: missing tensor `{name}` (expected shape {expected:?})")]
    MissingTensor {
        path: String,
        name: String,
        expected: Vec<usize>,
    },
    #[error("{path}: unexpected tensor `{name}` (shape {found:?}): the config does not use it")]
    ExtraTensor {
        path: String,
        name: String,
        found: Vec<usize>,
    },
    #[error("{path}: tensor `{name}` has shape {found:?}, expected {expected:?} from the config")]
    Shape {
        path: String,
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("{path}: tensors have dtype {found}, but config.json says dtype {expected}")]
    DType {
        path: String,
        expected: String,
        found: String,
    },
    #[error("input: {0}")]
    Input(String),
    #[error("device: {0}")]
    Device(String),
    #[error("io: {0}")]
    Io(String),
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
}

pub type Result<T> = std::result::Result<T, ModelError>;

/// Config dtype of a Candle runtime dtype (f64 stays f64; anything else is run as f32).
pub fn config_dtype(d: CDType) -> DType {
    if d == CDType::F64 {
        DType::F64
    } else {
        DType::F32
    }
}

/// Candle dtype of a config dtype.
pub fn candle_dtype(d: DType) -> CDType {
    match d {
        DType::F32 => CDType::F32,
        DType::F64 => CDType::F64,
    }
}

/// `cpu` or `cuda` (`cuda:N`). Asking for CUDA in a build without the `cuda` feature is an error.
pub fn parse_device(s: &str) -> Result<Device> {
    match s {
        "cpu" => Ok(Device::Cpu),
        s if s == "cuda" || s.starts_with("cuda:") => {
            let ordinal: usize = match s.strip_prefix("cuda:") {
                Some(n) => n
                    .parse()
                    .map_err(|_| ModelError::Device(format!("bad CUDA ordinal in `{s}`")))?,
                None => 0,
            };
            if cfg!(feature = "cuda") {
                Device::new_cuda(ordinal).map_err(|e| {
                    ModelError::Device(format!("cannot open CUDA device {ordinal}: {e}"))
                })
            } else {
                Err(ModelError::Device(
                    "this binary was built without CUDA support; rebuild with `--features cuda` or use `--device cpu`".into(),
                ))
            }
        }
        other => Err(ModelError::Device(format!(
            "unknown device `{other}` (expected cpu or cuda)"
        ))),
    }
}

/// Checks on a config beyond its JSON shape: the values the forward pass relies on.
pub fn validate_config(c: &ModelConfig) -> std::result::Result<(), ConfigError> {
    if c.format != MODEL_FORMAT {
        return Err(ConfigError::Format(c.format.clone()));
    }
    for (field, size) in [("d", c.d), ("width", c.width), ("max_len", c.max_len)] {
        if size == 0 {
            return Err(ConfigError::Empty(field));
        }
    }
    if let Some(row) = c.readout_row {
        if row >= c.width {
            return Err(ConfigError::ReadoutRow {
                row,
                width: c.width,
            });
        }
    }
    let norm_ok = |eps: f64, norm: NormSite| {
        if eps.is_finite() && eps >= 0.0 {
            Ok(())
        } else {
            Err(ConfigError::NormEps { norm, eps })
        }
    };
    if let Some(n) = c.final_norm {
        norm_ok(n.eps, NormSite::Final)?;
    }
    for (layer, l) in c.layers.iter().enumerate() {
        if let Some(n) = l.attn_norm {
            norm_ok(n.eps, NormSite::Attn(layer))?;
        }
        if let Some(n) = l.norm {
            norm_ok(n.eps, NormSite::Mlp(layer))?;
        }
        if let Some(a) = &l.attn {
            if a.heads == 0 || a.head_dim == 0 {
                return Err(ConfigError::NoHeads { layer });
            }
            match a.momentum {
                Some(MomentumConfig::Fixed { eta })
                    if !(eta.is_finite() && (0.0..=1.0).contains(&eta)) =>
                {
                    return Err(ConfigError::Eta { layer, eta });
                }
                Some(MomentumConfig::Learned { learned: false }) => {
                    return Err(ConfigError::LearnedFalse { layer });
                }
                _ => {}
            }
        }
        if l.mlp.is_some_and(|m| m.hidden == 0) {
            return Err(ConfigError::NoHidden { layer });
        }
    }
    Ok(())
}

/// Every tensor a config requires, with its shape (docs/FORMATS.md, table "model.safetensors"):
/// the names of [`schema::Weights::spec`].
pub fn expected_tensors(c: &ModelConfig) -> BTreeMap<String, Vec<usize>> {
    schema::Weights::spec(c).shapes()
}

/// Check named tensors against a config: every expected tensor present with its shape, nothing
/// else. `path` names the file in messages.
pub fn check_tensors(c: &ModelConfig, t: &NamedTensors, path: &str) -> Result<()> {
    let expected = expected_tensors(c);
    for (name, shape) in &expected {
        match t.get(name) {
            None => {
                return Err(ModelError::MissingTensor {
                    path: path.into(),
                    name: name.clone(),
                    expected: shape.clone(),
                })
            }
            Some(found) if &found.shape != shape => {
                return Err(ModelError::Shape {
                    path: path.into(),
                    name: name.clone(),
                    expected: shape.clone(),
                    found: found.shape.clone(),
                })
            }
            Some(_) => {}
        }
    }
    if let Some((name, found)) = t.iter().find(|(n, _)| !expected.contains_key(*n)) {
        return Err(ModelError::ExtraTensor {
            path: path.into(),
            name: name.clone(),
            found: found.shape.clone(),
        });
    }
    Ok(())
}

/// Read and validate `config.json`.
pub fn load_config(path: &Path) -> Result<ModelConfig> {
    let p = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ModelError::MissingFile {
        path: p.clone(),
        source: e,
    })?;
    let cfg: ModelConfig = serde_json::from_str(&text).map_err(|e| ModelError::Config {
        path: p.clone(),
        source: e.into(),
    })?;
    validate_config(&cfg).map_err(|source| ModelError::Config { path: p, source })?;
    Ok(cfg)
}

/// The Candle transformer of docs/FORMATS.md.
pub struct Transformer {
    pub config: ModelConfig,
    device: Device,
    dtype: CDType,
    /// Every parameter, resolved once from [`Weights::spec`]: what the forward pass reads.
    weights: Weights<Tensor>,
    /// The same tensors by name (clones share storage, and for trainable models they are the
    /// variables' tensors, so an optimiser step through [`Self::varmap`] updates both).
    params: BTreeMap<String, Tensor>,
    varmap: Option<VarMap>,
    /// Causal masks by prompt length (0 on and below the diagonal, −inf above), built lazily.
    masks: std::sync::Mutex<BTreeMap<usize, Tensor>>,
}

impl std::fmt::Debug for Transformer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transformer")
            .field("config", &self.config)
            .field("dtype", &self.dtype)
            .finish()
    }
}

impl Transformer {
    /// Load `dir/config.json` + `dir/model.safetensors`. `run_dtype` picks the runtime dtype
    /// (default: the file's); f64 weights may run in f32 and vice versa.
    pub fn load(dir: &Path, device: &Device, run_dtype: Option<DType>) -> Result<Self> {
        let cfg = load_config(&dir.join("config.json"))?;
        let wpath = dir.join("model.safetensors");
        let wp = wpath.display().to_string();
        if !wpath.exists() {
            return Err(ModelError::MissingFile {
                path: wp,
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
            });
        }
        let (named, file_dtype) = tensors::load(&wpath).map_err(|e| ModelError::TensorFile {
            path: wp.clone(),
            source: e,
        })?;
        if !named.is_empty() && file_dtype != cfg.dtype {
            return Err(ModelError::DType {
                path: wp,
                expected: cfg.dtype.name().into(),
                found: file_dtype.name().into(),
            });
        }
        check_tensors(&cfg, &named, &wp)?;
        let run = run_dtype.unwrap_or(cfg.dtype);
        Self::from_named(cfg, &named, device, run, false)
    }

    /// Build from named f64 tensors (checked against the config). With `trainable`, every
    /// parameter is a `candle_nn` variable registered in [`Transformer::varmap`].
    pub fn from_named(
        config: ModelConfig,
        named: &NamedTensors,
        device: &Device,
        run_dtype: DType,
        trainable: bool,
    ) -> Result<Self> {
        validate_config(&config).map_err(|source| ModelError::Config {
            path: "<config>".into(),
            source,
        })?;
        check_tensors(&config, named, "<tensors>")?;
        let dtype = candle_dtype(run_dtype);
        let varmap = trainable.then(VarMap::new);
        let spec = Weights::spec(&config);
        let weights = spec.try_map(|s| -> Result<Tensor> {
            let raw = named
                .get(&s.name)
                .ok_or_else(|| ModelError::MissingTensor {
                    path: "<tensors>".into(),
                    name: s.name.clone(),
                    expected: s.shape.clone(),
                })?;
            let t = Tensor::from_vec(raw.data.clone(), raw.shape.as_slice(), device)?
                .to_dtype(dtype)?;
            let Some(vm) = &varmap else {
                return Ok(t);
            };
            // The variable's own tensor (not `t`): gradients and updates are tracked on it.
            let var = candle_core::Var::from_tensor(&t)?;
            let t = var.as_tensor().clone();
            vm.data()
                .lock()
                .expect("varmap lock")
                .insert(s.name.clone(), var);
            Ok(t)
        })?;
        let params = spec.into_named(weights.clone());
        Ok(Transformer {
            config,
            device: device.clone(),
            dtype,
            weights,
            params,
            varmap,
            masks: Default::default(),
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }
    pub fn dtype(&self) -> CDType {
        self.dtype
    }
    /// The variables (trainable models only).
    pub fn varmap(&self) -> Option<&VarMap> {
        self.varmap.as_ref()
    }
    /// Every parameter as the typed tree the forward pass reads.
    pub fn weights(&self) -> &Weights<Tensor> {
        &self.weights
    }

    /// Parameters by name (for trainable models these are the variables' tensors).
    pub fn params(&self) -> &BTreeMap<String, Tensor> {
        &self.params
    }

    /// All parameters as f64 tensors (exact for f32 and f64).
    pub fn to_named(&self) -> Result<NamedTensors> {
        let mut out = NamedTensors::new();
        for (name, t) in &self.params {
            let data = t.to_dtype(CDType::F64)?.flatten_all()?.to_vec1::<f64>()?;
            out.insert(
                name.clone(),
                RawTensor {
                    shape: t.dims().to_vec(),
                    data,
                },
            );
        }
        Ok(out)
    }

    /// Write `config.json` and `model.safetensors` (in the config's dtype) to `dir`, atomically.
    pub fn save(&self, dir: &Path) -> Result<()> {
        save_model_dir(dir, &self.config, &self.to_named()?)
    }

    fn causal_mask(&self, t: usize) -> Result<Tensor> {
        let mut masks = self.masks.lock().expect("mask lock");
        if let Some(m) = masks.get(&t) {
            return Ok(m.clone());
        }
        let data: Vec<f64> = (0..t)
            .flat_map(|q| (0..t).map(move |k| if k <= q { 0.0 } else { f64::NEG_INFINITY }))
            .collect();
        let m = Tensor::from_vec(data, (t, t), &self.device)?.to_dtype(self.dtype)?;
        masks.insert(t, m.clone());
        Ok(m)
    }

    /// Momentum matrix [heads, T, T] with entry η_h^{t−s} for s < t, else 0 (docs/FORMATS.md,
    /// "Momentum attention").
    fn momentum_matrix(
        &self,
        a: &AttnConfig,
        w: &Attention<Tensor>,
        t: usize,
    ) -> Result<Option<Tensor>> {
        let lag: Vec<f64> = (0..t)
            .flat_map(|q| (0..t).map(move |k| if k < q { (q - k) as f64 } else { 0.0 }))
            .collect();
        let strict: Vec<f64> = (0..t)
            .flat_map(|q| (0..t).map(move |k| if k < q { 1.0 } else { 0.0 }))
            .collect();
        match a.momentum {
            None => Ok(None),
            Some(MomentumConfig::Fixed { eta }) => {
                // Computed on the host in f64: η^{lag} for lag ≥ 1 (0^k = 0 for η = 0).
                let data: Vec<f64> = lag
                    .iter()
                    .zip(&strict)
                    .map(|(l, s)| s * eta.powf(*l))
                    .collect();
                let m = Tensor::from_vec(data, (1, t, t), &self.device)?.to_dtype(self.dtype)?;
                Ok(Some(m.broadcast_as((a.heads, t, t))?.contiguous()?))
            }
            Some(MomentumConfig::Learned { .. }) => {
                // η_h^{lag} = exp(lag · log sigmoid(logit_h)), masked to s < t; differentiable.
                let logit = w.momentum_logit.as_ref().ok_or_else(|| {
                    ModelError::Input("internal: learned momentum without its logit".into())
                })?;
                let log_eta = candle_nn::ops::sigmoid(logit)?
                    .log()?
                    .reshape((a.heads, 1, 1))?;
                let lag = Tensor::from_vec(lag, (1, t, t), &self.device)?.to_dtype(self.dtype)?;
                let strict =
                    Tensor::from_vec(strict, (1, t, t), &self.device)?.to_dtype(self.dtype)?;
                Ok(Some(
                    lag.broadcast_mul(&log_eta)?.exp()?.broadcast_mul(&strict)?,
                ))
            }
        }
    }

    /// Attention sub-layer on `a` [B, T, width] (docs/FORMATS.md "Attention"), with what it
    /// computed on the way: queries, keys, values, scores, weights and the per-head outputs.
    fn attention(&self, a: &Tensor, cfg: &AttnConfig, w: &Attention<Tensor>) -> Result<AttnTrace> {
        let (b, t, _) = a.dims3()?;
        let (nh, hd) = (cfg.heads, cfg.head_dim);
        let split = |x: Tensor| -> Result<Tensor> {
            Ok(x.reshape((b, t, nh, hd))?.transpose(1, 2)?.contiguous()?)
        };
        let v = split(linear(a, &w.v)?)?; // [B, H, T, hd]
        let (q, k) = match (&w.q, &w.k) {
            (Some(wq), Some(wk)) => (Some(split(linear(a, wq)?)?), Some(split(linear(a, wk)?)?)),
            _ => (None, None),
        };
        let mut scores = match (&q, &k) {
            (Some(q), Some(k)) => (q.matmul(&k.t()?.contiguous()?)? / (hd as f64).sqrt())?,
            _ => Tensor::zeros((b, nh, t, t), self.dtype, &self.device)?,
        };
        // Null key: score = bias[h, t, max_len] (or 0); value 0, so it only adds to the softmax
        // denominator.
        let mut null = Tensor::zeros((b, nh, t, 1), self.dtype, &self.device)?;
        if let Some(bias) = &w.bias {
            // [H, max_len, max_len+1]
            let ml = self.config.max_len;
            let keys = bias.narrow(1, 0, t)?.narrow(2, 0, t)?;
            scores = scores.broadcast_add(&keys)?;
            null = null.broadcast_add(&bias.narrow(1, 0, t)?.narrow(2, ml, 1)?)?;
        }
        scores = scores.broadcast_add(&self.causal_mask(t)?)?;
        let scores = if cfg.zero_attn {
            Tensor::cat(&[&scores, &null], 3)?
        } else {
            scores
        };
        let probs = softmax_neg_inf(&scores)?;
        let mut heads = probs.narrow(3, 0, t)?.matmul(&v)?; // [B, H, T, hd]
        if let Some(m) = self.momentum_matrix(cfg, w, t)? {
            heads = (heads + m.unsqueeze(0)?.broadcast_matmul(&v)?)?;
        }
        let merged = heads
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b, t, nh * hd))?;
        let out = linear(&merged, &w.o)?;
        Ok(AttnTrace {
            q,
            k,
            v,
            scores,
            probs,
            heads,
            out,
        })
    }

    fn check_tokens(&self, tokens: &Tensor) -> Result<(usize, usize)> {
        let dims = tokens.dims();
        if dims.len() != 3 || dims[2] != self.config.d + 1 {
            return Err(ModelError::Input(format!(
                "tokens must have shape [batch, T, {}] (d+1 = {}), found {dims:?}",
                self.config.d + 1,
                self.config.d + 1
            )));
        }
        if dims[1] == 0 || dims[1] > self.config.max_len {
            return Err(ModelError::Input(format!(
                "prompt length T = {} must be between 1 and max_len = {}",
                dims[1], self.config.max_len
            )));
        }
        Ok((dims[0], dims[1]))
    }

    /// Hidden states [B, T, width]: after the embedding, then after each layer (L+1 tensors;
    /// the final norm is not applied), and the predictions [B, T].
    pub fn forward_with_hidden(
        &self,
        tokens: &Tensor,
        keep: bool,
    ) -> Result<(Tensor, Vec<Tensor>)> {
        let opts = TraceOptions {
            keep_hidden: keep,
            ..Default::default()
        };
        let trace = self.forward_traced(tokens, &opts)?;
        Ok((trace.pred, trace.hidden))
    }

    /// The forward pass with its internals (docs/ANALYSIS.md, "Attention as implicit
    /// finetuning"): every attention sub-layer's [`AttnTrace`], optionally the hidden states, the
    /// read-out of every layer's output, and every layer's input detached from the graph (so a
    /// loss on layer l's read-out trains layer l alone: Deutch et al.'s layer-causal update).
    pub fn forward_traced(&self, tokens: &Tensor, opts: &TraceOptions) -> Result<Trace> {
        let (_, t) = self.check_tokens(tokens)?;
        let tokens = tokens.to_dtype(self.dtype)?;
        let w = &self.weights;
        let pos = w.pos.narrow(0, 0, t)?;
        let mut h = add_per_batch(&linear(&tokens, &w.embed)?, &pos)?;
        let (mut hidden, mut attn_traces, mut layer_preds) = (Vec::new(), Vec::new(), Vec::new());
        if opts.keep_hidden {
            hidden.push(h.clone());
        }
        for (layer, block) in self.config.layers.iter().zip(&w.layers) {
            if opts.detach_layer_inputs {
                h = h.detach();
            }
            let mut attn_trace = None;
            if let (Some(cfg), Some(attn)) = (&layer.attn, &block.attn) {
                let a = norm_if(&h, layer.attn_norm.map(|n| n.eps), &block.attn_norm)?;
                let at = self.attention(&a, cfg, attn)?;
                h = (&h + &at.out)?;
                attn_trace = Some(at);
            }
            attn_traces.push(attn_trace);
            if let (Some(cfg), Some(mlp_w)) = (&layer.mlp, &block.mlp) {
                let m = norm_if(&h, layer.norm.map(|n| n.eps), &block.norm)?;
                h = (&h + mlp(&m, cfg, mlp_w)?)?;
            }
            if opts.keep_hidden {
                hidden.push(h.clone());
            }
            if opts.layer_readouts {
                layer_preds.push(self.read_out(&h)?);
            }
        }
        Ok(Trace {
            pred: self.read_out(&h)?,
            hidden,
            attn: attn_traces,
            layer_preds,
        })
    }

    /// Final norm and read-out of hidden states [B, T, width] → predictions [B, T].
    fn read_out(&self, h: &Tensor) -> Result<Tensor> {
        let w = &self.weights;
        let h = norm_if(h, self.config.final_norm.map(|n| n.eps), &w.final_norm)?;
        Ok(linear(&h, &w.readout)?.squeeze(2)?)
    }

    /// Predictions at every column: tokens [batch, T, d+1] → [batch, T].
    pub fn forward(&self, tokens: &Tensor) -> Result<Tensor> {
        Ok(self.forward_with_hidden(tokens, false)?.0)
    }

    /// Hidden states after the embedding and after each layer: L+1 tensors [batch, T, width].
    pub fn hidden_states(&self, tokens: &Tensor) -> Result<Vec<Tensor>> {
        Ok(self.forward_with_hidden(tokens, true)?.1)
    }

    /// Tokens of prompts that all have the same shape, as a [batch, 2n+1, d+1] tensor.
    pub fn prompts_tensor(&self, prompts: &[Prompt]) -> Result<Tensor> {
        prompts_to_tensor(prompts, self.config.d, &self.device)
    }

    /// The prediction at every x̃ column (n+1 values per prompt, x̃_1 first), in f64.
    pub fn predict_prompts(&self, prompts: &[Prompt]) -> Result<Vec<Vec<f64>>> {
        let mut out = vec![Vec::new(); prompts.len()];
        // Group prompts by length so every batch is rectangular; keep the input order.
        let mut by_len: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for (i, p) in prompts.iter().enumerate() {
            by_len.entry(p.columns()).or_default().push(i);
        }
        for idx in by_len.values() {
            for chunk in idx.chunks(256) {
                let group: Vec<Prompt> = chunk.iter().map(|&i| prompts[i].clone()).collect();
                let tokens = self.prompts_tensor(&group)?;
                let pred = self
                    .forward(&tokens)?
                    .to_dtype(CDType::F64)?
                    .to_vec2::<f64>()?;
                for (row, &i) in pred.into_iter().zip(chunk) {
                    out[i] = row.into_iter().step_by(2).collect();
                }
            }
        }
        Ok(out)
    }
}

/// What one attention sub-layer computed (docs/FORMATS.md "Attention"), per head.
#[derive(Debug, Clone)]
pub struct AttnTrace {
    /// Queries and keys [B, H, T, head_dim], unscaled (None for fixed-pattern heads: no Q/K).
    pub q: Option<Tensor>,
    pub k: Option<Tensor>,
    /// Values [B, H, T, head_dim].
    pub v: Tensor,
    /// Scores before the softmax [B, H, T, T (+1: the null key, when the config has it)]:
    /// q·k/√head_dim plus the bias pattern, −inf above the diagonal.
    pub scores: Tensor,
    /// The softmax of `scores` (same shape).
    pub probs: Tensor,
    /// Σ_s p[t, s] v_s (plus the momentum term) per head, before W_O: [B, H, T, head_dim].
    pub heads: Tensor,
    /// The sub-layer's output after W_O (what is added to the residual): [B, T, width].
    pub out: Tensor,
}

/// What [`Transformer::forward_traced`] keeps.
#[derive(Debug, Clone, Copy, Default)]
pub struct TraceOptions {
    /// Keep the hidden states (after the embedding and after each layer).
    pub keep_hidden: bool,
    /// Read out (final norm + read-out) every layer's output.
    pub layer_readouts: bool,
    /// Detach every layer's input from the graph.
    pub detach_layer_inputs: bool,
}

/// The forward pass's result and internals.
#[derive(Debug, Clone)]
pub struct Trace {
    /// Predictions [B, T].
    pub pred: Tensor,
    /// L+1 hidden states [B, T, width] with `keep_hidden` (the final norm not applied).
    pub hidden: Vec<Tensor>,
    /// Per layer: its attention sub-layer's trace (None for a layer without attention).
    pub attn: Vec<Option<AttnTrace>>,
    /// With `layer_readouts`: predictions [B, T] read out from each layer's output.
    pub layer_preds: Vec<Tensor>,
}

/// `x·Wᵀ + b` over the last dim of `x` (`W` is [out, in] as stored).
fn linear(x: &Tensor, l: &Linear<Tensor>) -> Result<Tensor> {
    let w = &l.weight;
    // Fold the leading dims into one: [.., in] → [N, in] · [in, out] → [.., out].
    let dims = x.dims().to_vec();
    let (lead, inp) = dims.split_at(dims.len() - 1);
    let n: usize = lead.iter().product();
    let y = x.reshape((n, inp[0]))?.matmul(&w.t()?)?;
    // The bias enters as the product ones[n,1]·bias[1,out] (exactly `bias` in every row), so its
    // gradient is the matmul onesᵀ·grad instead of Candle's single-threaded sum over the leading
    // dims of a broadcast add.
    let ones = Tensor::ones((n, 1), y.dtype(), y.device())?;
    let y = (y + ones.matmul(&l.bias.unsqueeze(0)?)?)?;
    let mut out_shape = lead.to_vec();
    out_shape.push(w.dims()[0]);
    Ok(y.reshape(out_shape)?)
}

/// LayerNorm over the last dim: `(h − mean) / sqrt(var + eps) ⊙ weight + bias`, var biased.
fn layer_norm(h: &Tensor, n: &Norm<Tensor>, eps: f64) -> Result<Tensor> {
    let mean = h.mean_keepdim(D::Minus1)?;
    let c = h.broadcast_sub(&mean)?;
    let var = c.sqr()?.mean_keepdim(D::Minus1)?;
    let denom = var.affine(1.0, eps)?.sqrt()?;
    let x = c.broadcast_div(&denom)?;
    // Gain and shift as ones·gᵀ and ones·bᵀ (exactly g and b in every row): their gradients
    // become matmuls instead of single-threaded sums over the leading dims.
    let dims = x.dims().to_vec();
    let width = dims[dims.len() - 1];
    let rows = x.elem_count() / width;
    let ones = Tensor::ones((rows, 1), x.dtype(), x.device())?;
    let x = x.reshape((rows, width))?;
    let gain = ones.matmul(&n.weight.unsqueeze(0)?)?;
    let shift = ones.matmul(&n.bias.unsqueeze(0)?)?;
    let y = ((x * gain)? + shift)?;
    Ok(y.reshape(dims)?)
}

/// `h + p` for `h` [B, T, W] and `p` [T, W], with `p` entering as ones[B,1]·vec(p)ᵀ (exactly
/// `p` for every prompt), so that its gradient is a matmul rather than a sum over the batch.
fn add_per_batch(h: &Tensor, p: &Tensor) -> Result<Tensor> {
    let (b, t, w) = h.dims3()?;
    let ones = Tensor::ones((b, 1), h.dtype(), h.device())?;
    let p = ones.matmul(&p.reshape((1, t * w))?)?.reshape((b, t, w))?;
    Ok((h + p)?)
}

/// `h` through its LayerNorm when the config has one (`eps`) and the weights hold it, else `h`.
fn norm_if(h: &Tensor, eps: Option<f64>, n: &Option<Norm<Tensor>>) -> Result<Tensor> {
    match (eps, n) {
        (Some(eps), Some(n)) => layer_norm(h, n, eps),
        _ => Ok(h.clone()),
    }
}

/// The MLP on `m` [B, T, width] (docs/FORMATS.md, "The forward pass").
fn mlp(m: &Tensor, cfg: &MlpConfig, w: &Mlp<Tensor>) -> Result<Tensor> {
    let up = linear(m, &w.up)?;
    let inner = match (cfg.kind, &w.gate) {
        (MlpKind::Bilinear, Some(gate)) => (linear(m, gate)? * up)?,
        (MlpKind::Bilinear, None) => {
            return Err(ModelError::Input(
                "internal: bilinear MLP without its gate".into(),
            ))
        }
        (MlpKind::Gelu, _) => match cfg.activation {
            Activation::Gelu => up.gelu_erf()?,
            Activation::GeluTanh => up.gelu()?,
        },
    };
    linear(&inner, &w.down)
}

/// Softmax over the last dim where −inf scores get weight 0. A row whose scores are all −inf
/// gets all-zero weights (it attends nothing) instead of NaN.
pub fn softmax_neg_inf(s: &Tensor) -> Result<Tensor> {
    // Subtracting the row max (a constant for the gradient) does not change the softmax.
    let m = s.max_keepdim(D::Minus1)?.detach();
    let finite = m.ne(f64::NEG_INFINITY)?;
    let m = finite.where_cond(&m, &m.zeros_like()?)?;
    let e = s.broadcast_sub(&m)?.exp()?;
    let z = e.sum_keepdim(D::Minus1)?;
    // z = 0 only when every score is −inf (all e = 0); add 1 there so 0/1 = 0.
    let empty = z.eq(0.0)?.to_dtype(z.dtype())?.detach();
    Ok(e.broadcast_div(&(z + empty)?)?)
}

/// Tokens of same-shape prompts as a [batch, 2n+1, d+1] f64 tensor.
pub fn prompts_to_tensor(prompts: &[Prompt], d: usize, device: &Device) -> Result<Tensor> {
    let first = prompts
        .first()
        .ok_or_else(|| ModelError::Input("no prompts".into()))?;
    let t = first.columns();
    let mut data = Vec::with_capacity(prompts.len() * t * (d + 1));
    for (i, p) in prompts.iter().enumerate() {
        if p.d() != d || p.columns() != t {
            return Err(ModelError::Input(format!(
                "prompt {i}: d = {}, {} columns; expected d = {d}, {t} columns",
                p.d(),
                p.columns()
            )));
        }
        for c in 0..t {
            data.extend(p.token(c));
        }
    }
    Ok(Tensor::from_vec(data, (prompts.len(), t, d + 1), device)?)
}

/// Write a model directory: `config.json` (pretty JSON) and `model.safetensors` in the config's
/// dtype, each atomically. Checks the tensors against the config first.
pub fn save_model_dir(dir: &Path, config: &ModelConfig, named: &NamedTensors) -> Result<()> {
    check_tensors(config, named, "<tensors>")?;
    std::fs::create_dir_all(dir).map_err(|e| ModelError::Io(format!("{}: {e}", dir.display())))?;
    let json =
        serde_json::to_string_pretty(config).map_err(|e| ModelError::Io(e.to_string()))? + "\n";
    let io = |p: PathBuf, e: std::io::Error| ModelError::Io(format!("{}: {e}", p.display()));
    let cpath = dir.join("config.json");
    tensors::write_atomic(&cpath, json.as_bytes()).map_err(|e| io(cpath.clone(), e))?;
    let wpath = dir.join("model.safetensors");
    tensors::save(&wpath, named, config.dtype).map_err(|e| io(wpath.clone(), e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Var;

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    /// LayerNorm with gain and shift as products, and the per-batch position add, equal the
    /// plain broadcast compositions, forward and gradients, on random inputs.
    #[test]
    fn layer_norm_and_position_add_match_the_broadcast_compositions() {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (3, 5, 6), &dev).unwrap()).unwrap();
        let g = Var::from_tensor(&Tensor::randn(1f32, 0.3, 6, &dev).unwrap()).unwrap();
        let b = Var::from_tensor(&Tensor::randn(0f32, 1.0, 6, &dev).unwrap()).unwrap();
        let p = Var::from_tensor(&Tensor::randn(0f32, 1.0, (5, 6), &dev).unwrap()).unwrap();
        let n = Norm {
            weight: g.as_tensor().clone(),
            bias: b.as_tensor().clone(),
        };
        let fused =
            add_per_batch(&layer_norm(x.as_tensor(), &n, 1e-5).unwrap(), p.as_tensor()).unwrap();
        let xt = x.as_tensor();
        let c = xt
            .broadcast_sub(&xt.mean_keepdim(D::Minus1).unwrap())
            .unwrap();
        let var = c.sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
        let plain = c
            .broadcast_div(&var.affine(1.0, 1e-5).unwrap().sqrt().unwrap())
            .unwrap()
            .broadcast_mul(g.as_tensor())
            .unwrap()
            .broadcast_add(b.as_tensor())
            .unwrap()
            .broadcast_add(p.as_tensor())
            .unwrap();
        assert!(max_diff(&fused, &plain) <= 1e-5, "forward");
        let weights = Tensor::randn(0f32, 1.0, (3, 5, 6), &dev).unwrap();
        let gf = (fused * &weights)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let gp = (plain * &weights)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        for v in [&x, &g, &b, &p] {
            let (a, q) = (gf.get(v).unwrap(), gp.get(v).unwrap());
            assert!(
                max_diff(a, q) <= 1e-4,
                "gradient of a {:?} tensor",
                v.dims()
            );
        }
    }

    /// `linear` adds its bias as ones·biasᵀ so that the bias gradient is a matmul; forward and
    /// gradients equal the plain composition `x·Wᵀ + b` (broadcast add) on random inputs.
    #[test]
    fn linear_with_the_bias_as_a_product_matches_the_plain_composition() {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (3, 5, 4), &dev).unwrap()).unwrap();
        let w = Var::from_tensor(&Tensor::randn(0f32, 1.0, (6, 4), &dev).unwrap()).unwrap();
        let b = Var::from_tensor(&Tensor::randn(0f32, 1.0, 6, &dev).unwrap()).unwrap();
        let l = Linear {
            weight: w.as_tensor().clone(),
            bias: b.as_tensor().clone(),
        };
        let fused = linear(x.as_tensor(), &l).unwrap();
        let plain = x
            .as_tensor()
            .broadcast_matmul(&w.as_tensor().t().unwrap())
            .unwrap()
            .broadcast_add(b.as_tensor())
            .unwrap();
        assert!(max_diff(&fused, &plain) <= 1e-5, "forward");
        // A loss that weighs every output differently, so every gradient entry is exercised.
        let weights = Tensor::randn(0f32, 1.0, (3, 5, 6), &dev).unwrap();
        let gf = (fused * &weights)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let gp = (plain * &weights)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        for v in [&x, &w, &b] {
            let (a, p) = (gf.get(v).unwrap(), gp.get(v).unwrap());
            assert!(
                max_diff(a, p) <= 1e-4,
                "gradient of a {:?} tensor",
                v.dims()
            );
        }
    }
}
