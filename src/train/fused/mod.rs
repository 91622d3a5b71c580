//! The CPU training step written out: forward, loss and backward of the trained block by hand
//! (docs/ARCHITECTURE.md, "The fused training step"), with faer's matrix products and
//! vectorised kernels, in buffers that live from one step to the next.
//!
//! It computes what [`crate::model::Transformer::forward`] and Candle's autograd compute for
//! the same parameters — the same block (docs/FORMATS.md, "The forward pass"), the same MSE on
//! the x̃ columns, then global-norm clipping and AdamW — and a test holds it to that
//! (`tests/fused.rs`: loss, every gradient and the updated weights against the Candle path).
//! Why it is faster: every matrix product is one faer call on the whole `[B·T, ·]` matrix
//! (AVX-512/AVX2 kernels, 2–6× Candle's gemm here on these shapes); attention reads the heads in
//! place through strided views; LayerNorm, GeLU and softmax are single passes with their
//! gradients written out (no graph, no zero-fill-then-add per node); the final norm and read-out
//! run only on the x̃ rows the loss reads; buffers are reused across steps.
//!
//! What it covers: CPU, f32 or f64, Q/K softmax attention without score bias or momentum (with
//! or without the null key), the GeLU MLP (erf or tanh), with or without the pre-attention and
//! final LayerNorm — every `gpt2` and `paper` config. [`unsupported`] says why another config
//! takes the Candle path.

pub mod attention;
mod backward;
mod forward;
pub mod ops;
mod storage;
mod update;

use super::{AdamW, Result, StepOutcome, TrainConfig};
use crate::model::config::{MlpKind, ModelConfig};
use crate::model::schema::Weights;
use crate::model::Transformer;
use crate::prompt::Prompt;
use candle_core::{DType as CDType, Device, WithDType};
use forward::LayerCache;
use ops::NormCache;

/// The element types the fused step runs in: f32 and f64.
pub trait Real:
    faer::traits::RealField
    + WithDType
    + Copy
    + Default
    + Send
    + Sync
    + PartialOrd
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::Div<Output = Self>
    + std::ops::Neg<Output = Self>
    + std::ops::AddAssign
    + std::ops::MulAssign
{
    fn of(x: f64) -> Self;
    fn zero_() -> Self;
    fn one_() -> Self;
    fn sqrt(self) -> Self;
    /// e^x; f32: [`ops::exp_f32`] (vectorisable, ≤ 2 ulp), f64: the libm one.
    fn exp_(self) -> Self;
    /// erf; f32: [`ops::erf_f32`] (vectorisable), f64: Candle's (the one its GeLU uses).
    fn erf_(self) -> Self;
    /// The elements of a CPU storage of this dtype.
    fn storage_mut(s: &mut candle_core::CpuStorage) -> Option<&mut Vec<Self>>;
}

/// `Real` for a float type: its CPU storage variant and its exp and erf.
macro_rules! impl_real {
    ($t:ty, $variant:ident, $exp:path, $erf:path) => {
        impl Real for $t {
            fn of(x: f64) -> Self {
                x as $t
            }
            fn zero_() -> Self {
                0.0
            }
            fn one_() -> Self {
                1.0
            }
            #[inline(always)]
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            #[inline(always)]
            fn exp_(self) -> Self {
                $exp(self)
            }
            #[inline(always)]
            fn erf_(self) -> Self {
                $erf(self)
            }
            fn storage_mut(s: &mut candle_core::CpuStorage) -> Option<&mut Vec<Self>> {
                match s {
                    candle_core::CpuStorage::$variant(v) => Some(v),
                    _ => None,
                }
            }
        }
    };
}

impl_real!(f32, F32, ops::exp_f32, ops::erf_f32);
impl_real!(f64, F64, f64::exp, candle_core::cpu::erf::erf_f64);

/// Why the fused step cannot run a model of config `c` on `device` (None: it can).
pub fn unsupported(c: &ModelConfig, device: &Device) -> Option<String> {
    if !device.is_cpu() {
        return Some("the fused step runs on the CPU only".into());
    }
    for (l, layer) in c.layers.iter().enumerate() {
        let why = match (&layer.attn, &layer.mlp, layer.norm) {
            (None, _, _) | (_, None, _) => "a layer without attention or MLP",
            (_, _, None) => "an MLP without its LayerNorm",
            (Some(a), _, _) if !a.qk => "fixed attention patterns (no Q/K)",
            (Some(a), _, _) if a.bias => "an attention score bias",
            (Some(a), _, _) if a.momentum.is_some() => "momentum attention",
            (_, Some(m), _) if m.kind != MlpKind::Gelu => "a bilinear MLP",
            _ => continue,
        };
        return Some(format!("layer {l} has {why}"));
    }
    None
}

/// Every buffer of the step, kept from one step to the next (sized on first use).
#[derive(Default)]
pub struct Buffers<T> {
    /// The weights as this step reads them, and their gradients.
    params: Option<Weights<Vec<T>>>,
    grads: Option<Weights<Vec<T>>>,
    tokens: Vec<T>,
    h: Vec<T>,
    layers: Vec<LayerCache<T>>,
    /// The x̃ rows of the last hidden state, after the final norm, and the predictions.
    sel: Vec<T>,
    final_ln: NormCache<T>,
    hf: Vec<T>,
    pred: Vec<T>,
    // Gradients of activations.
    dh: Vec<T>,
    dsel: Vec<T>,
    dhf: Vec<T>,
    datt: Vec<T>,
    dq: Vec<T>,
    dk: Vec<T>,
    dv: Vec<T>,
    da: Vec<T>,
    dg: Vec<T>,
    dm: Vec<T>,
}

/// The fused step's buffers for whichever dtype a run trains in.
#[derive(Default)]
pub enum Scratch {
    #[default]
    Empty,
    F32(Box<Buffers<f32>>),
    F64(Box<Buffers<f64>>),
}

impl Scratch {
    fn f32(&mut self) -> &mut Buffers<f32> {
        if !matches!(self, Scratch::F32(_)) {
            *self = Scratch::F32(Box::default());
        }
        match self {
            Scratch::F32(b) => b,
            _ => unreachable!("set above"),
        }
    }
    fn f64(&mut self) -> &mut Buffers<f64> {
        if !matches!(self, Scratch::F64(_)) {
            *self = Scratch::F64(Box::default());
        }
        match self {
            Scratch::F64(b) => b,
            _ => unreachable!("set above"),
        }
    }
}

impl std::fmt::Debug for Scratch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Scratch")
    }
}

/// One training step on the fused path (see [`super::train_step`], which it replaces for the
/// configs [`unsupported`] accepts): the same batch, loss, clipping and AdamW update.
pub fn train_step(
    cfg: &TrainConfig,
    model: &Transformer,
    opt: &mut AdamW,
    prompts: Vec<Prompt>,
    lr: f64,
) -> Result<StepOutcome> {
    let mut scratch = std::mem::take(&mut opt.scratch);
    // The whole step on one of rayon's worker threads: its parallel loops then hand work to the
    // other workers directly, instead of each one waking the pool from outside and waiting.
    let out = rayon::scope(|_| match model.dtype() {
        CDType::F64 => step_in::<f64>(cfg, model, opt, scratch.f64(), prompts, lr),
        _ => step_in::<f32>(cfg, model, opt, scratch.f32(), prompts, lr),
    });
    opt.scratch = scratch;
    out
}

fn step_in<T: Real>(
    cfg: &TrainConfig,
    model: &Transformer,
    opt: &mut AdamW,
    buf: &mut Buffers<T>,
    prompts: Vec<Prompt>,
    lr: f64,
) -> Result<StepOutcome> {
    let weights = model.weights();
    let mut params = match buf.params.take() {
        Some(p) => p,
        None => weights.map(|_| Vec::new()),
    };
    let mut grads = match buf.grads.take() {
        Some(g) => g,
        None => params.map(|_| Vec::new()),
    };
    for (t, dst) in weights.leaves().into_iter().zip(params.leaves_mut()) {
        storage::read_into(t, dst)?;
    }
    let loss = loss_and_grads_into(&model.config, &params, buf, &prompts, &mut grads);
    let out = loss.and_then(|loss| {
        if !loss.is_finite() {
            return Ok(StepOutcome::NonFinite(loss));
        }
        update::clip(&mut grads, cfg.train.clip);
        update::adamw(model, opt, &grads, lr, &cfg.train)?;
        Ok(StepOutcome::Done { loss, prompts })
    });
    buf.params = Some(params);
    buf.grads = Some(grads);
    out
}

/// The batch's MSE over the x̃ columns and its gradient with respect to every parameter.
pub fn loss_and_grads<T: Real>(
    c: &ModelConfig,
    w: &Weights<Vec<T>>,
    buf: &mut Buffers<T>,
    prompts: &[Prompt],
) -> Result<(f64, Weights<Vec<T>>)> {
    let mut grads = w.map(|_| Vec::new());
    let loss = loss_and_grads_into(c, w, buf, prompts, &mut grads)?;
    Ok((loss, grads))
}

/// [`loss_and_grads`] into `grads` (a tree of the same shape; its vectors are resized and every
/// element overwritten).
fn loss_and_grads_into<T: Real>(
    c: &ModelConfig,
    w: &Weights<Vec<T>>,
    buf: &mut Buffers<T>,
    prompts: &[Prompt],
    grads: &mut Weights<Vec<T>>,
) -> Result<f64> {
    let dims = forward::dims(c, prompts)?;
    forward::load_tokens(buf, prompts, dims);
    forward::forward(c, w, buf, dims)?;
    let mut sizes = w.leaves().into_iter().map(Vec::len);
    for g in grads.leaves_mut() {
        ops::resize(g, sizes.next().expect("same tree"));
    }
    let loss = backward::readout(w, grads, buf, prompts, dims);
    for l in (0..c.layers.len()).rev() {
        backward::layer(c, w, grads, buf, dims, l)?;
    }
    backward::embed(w, grads, buf, dims);
    Ok(loss)
}
