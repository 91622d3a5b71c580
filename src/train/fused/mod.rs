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
pub mod ops;
mod storage;

use super::{AdamW, OptimConfig, Result, StepOutcome, TrainConfig, TrainError};
use crate::model::config::{Activation, MlpKind, ModelConfig};
use crate::model::schema::{Linear, Norm, Weights};
use crate::model::Transformer;
use crate::prompt::Prompt;
use candle_core::{DType as CDType, Device, WithDType};
use faer::Accum;
use ops::{Gelu, NormCache};

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

impl Real for f32 {
    fn of(x: f64) -> Self {
        x as f32
    }
    fn zero_() -> Self {
        0.0
    }
    fn one_() -> Self {
        1.0
    }
    #[inline(always)]
    fn sqrt(self) -> Self {
        f32::sqrt(self)
    }
    #[inline(always)]
    fn exp_(self) -> Self {
        ops::exp_f32(self)
    }
    #[inline(always)]
    fn erf_(self) -> Self {
        ops::erf_f32(self)
    }
    fn storage_mut(s: &mut candle_core::CpuStorage) -> Option<&mut Vec<Self>> {
        match s {
            candle_core::CpuStorage::F32(v) => Some(v),
            _ => None,
        }
    }
}

impl Real for f64 {
    fn of(x: f64) -> Self {
        x
    }
    fn zero_() -> Self {
        0.0
    }
    fn one_() -> Self {
        1.0
    }
    #[inline(always)]
    fn sqrt(self) -> Self {
        f64::sqrt(self)
    }
    #[inline(always)]
    fn exp_(self) -> Self {
        f64::exp(self)
    }
    #[inline(always)]
    fn erf_(self) -> Self {
        candle_core::cpu::erf::erf_f64(self)
    }
    fn storage_mut(s: &mut candle_core::CpuStorage) -> Option<&mut Vec<Self>> {
        match s {
            candle_core::CpuStorage::F64(v) => Some(v),
            _ => None,
        }
    }
}

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

/// One layer's parameters (or gradients), borrowed out of a [`Weights`] tree.
struct LayerParts<'a, T> {
    attn_norm: Option<&'a Norm<T>>,
    q: &'a Linear<T>,
    k: &'a Linear<T>,
    v: &'a Linear<T>,
    o: &'a Linear<T>,
    norm: &'a Norm<T>,
    up: &'a Linear<T>,
    down: &'a Linear<T>,
}

fn layer_parts<T>(w: &Weights<T>, l: usize) -> Result<LayerParts<'_, T>> {
    let missing = || TrainError::Internal(format!("layer {l} lacks a fused part"));
    let b = &w.layers[l];
    let a = b.attn.as_ref().ok_or_else(missing)?;
    let m = b.mlp.as_ref().ok_or_else(missing)?;
    Ok(LayerParts {
        attn_norm: b.attn_norm.as_ref(),
        q: a.q.as_ref().ok_or_else(missing)?,
        k: a.k.as_ref().ok_or_else(missing)?,
        v: &a.v,
        o: &a.o,
        norm: b.norm.as_ref().ok_or_else(missing)?,
        up: &m.up,
        down: &m.down,
    })
}

/// The sizes one step works with.
#[derive(Debug, Clone, Copy)]
struct Dims {
    batch: usize,
    /// Prompt length 2n+1 and rows B·T.
    t: usize,
    rows: usize,
    d1: usize,
    width: usize,
    inner: usize,
    hidden: usize,
    /// x̃ columns per prompt (n+1): the rows the loss reads.
    n1: usize,
    attn: attention::Shape,
}

/// What one layer's forward keeps for its backward.
#[derive(Default)]
struct LayerCache<T> {
    /// The attention's input: LayerNorm(h) in `gpt2`, h itself in `paper`.
    a: Vec<T>,
    ln1: NormCache<T>,
    q: Vec<T>,
    k: Vec<T>,
    v: Vec<T>,
    /// Attention weights [B, heads, T, T].
    p: Vec<T>,
    /// The heads' outputs side by side, before W_O: [B·T, inner].
    att: Vec<T>,
    ln2: NormCache<T>,
    m: Vec<T>,
    u: Vec<T>,
    /// Φ(u) (erf GeLU) or the tanh (tanh GeLU): what the GeLU's gradient needs.
    s: Vec<T>,
    g: Vec<T>,
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
    let mut status = Ok(());
    let mut dst = params.leaves_mut().into_iter();
    weights.visit(|t| {
        if status.is_ok() {
            status = storage::read_into(t, dst.next().expect("same tree"));
        }
    });
    status?;
    let loss = loss_and_grads_into(&model.config, &params, buf, &prompts, &mut grads);
    let out = loss.and_then(|loss| {
        if !loss.is_finite() {
            return Ok(StepOutcome::NonFinite(loss));
        }
        clip(&mut grads, cfg.train.clip);
        adamw(model, opt, &grads, lr, &cfg.train)?;
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
    let dims = dims(c, prompts)?;
    load_tokens(buf, prompts, dims);
    forward(c, w, buf, dims)?;
    let mut sizes = w.leaves().into_iter().map(Vec::len);
    for g in grads.leaves_mut() {
        ops::resize(g, sizes.next().expect("same tree"));
    }
    let loss = readout_backward(w, grads, buf, prompts, dims);
    for l in (0..c.layers.len()).rev() {
        layer_backward(c, w, grads, buf, dims, l)?;
    }
    embed_backward(w, grads, buf, dims);
    Ok(loss)
}

fn dims(c: &ModelConfig, prompts: &[Prompt]) -> Result<Dims> {
    let first = prompts
        .first()
        .ok_or_else(|| TrainError::Internal("an empty batch".into()))?;
    let t = first.columns();
    if t > c.max_len || prompts.iter().any(|p| p.columns() != t) {
        return Err(TrainError::Resume(format!(
            "internal: prompts of {t} columns for max_len {}",
            c.max_len
        )));
    }
    let a = c.layers[0].attn.expect("checked by unsupported()");
    let hidden = c.layers[0].mlp.expect("checked by unsupported()").hidden;
    let batch = prompts.len();
    Ok(Dims {
        batch,
        t,
        rows: batch * t,
        d1: c.d + 1,
        width: c.width,
        inner: a.heads * a.head_dim,
        hidden,
        n1: first.ys.len(),
        attn: attention::Shape {
            batch,
            t,
            heads: a.heads,
            head_dim: a.head_dim,
            null_key: a.zero_attn,
        },
    })
}

fn load_tokens<T: Real>(buf: &mut Buffers<T>, prompts: &[Prompt], d: Dims) {
    buf.tokens.clear();
    for p in prompts {
        for col in 0..d.t {
            buf.tokens.extend(p.token(col).into_iter().map(T::of));
        }
    }
}

fn gelu_kind(c: &ModelConfig, l: usize) -> Gelu {
    match c.layers[l].mlp.map(|m| m.activation) {
        Some(Activation::GeluTanh) => Gelu::Tanh,
        _ => Gelu::Erf,
    }
}

/// Embedding, then every layer, then the final norm and read-out on the x̃ rows.
fn forward<T: Real>(
    c: &ModelConfig,
    w: &Weights<Vec<T>>,
    buf: &mut Buffers<T>,
    d: Dims,
) -> Result<()> {
    ops::resize(&mut buf.h, d.rows * d.width);
    ops::linear(
        &mut buf.h,
        &buf.tokens,
        &w.embed.weight,
        &w.embed.bias,
        d.rows,
        d.d1,
    );
    let pos = &w.pos[..d.t * d.width];
    for prompt in buf.h.chunks_exact_mut(d.t * d.width) {
        for (h, &p) in prompt.iter_mut().zip(pos) {
            *h += p;
        }
    }
    buf.layers.resize_with(c.layers.len(), Default::default);
    for l in 0..c.layers.len() {
        layer_forward(c, &layer_parts(w, l)?, &mut buf.layers[l], &mut buf.h, d, l);
    }
    // The x̃ rows (columns 0, 2, …, 2n of every prompt).
    buf.sel.clear();
    for b in 0..d.batch {
        for k in 0..d.n1 {
            let row = b * d.t + 2 * k;
            buf.sel
                .extend_from_slice(&buf.h[row * d.width..][..d.width]);
        }
    }
    ops::resize(&mut buf.hf, buf.sel.len());
    match (&c.final_norm, &w.final_norm) {
        (Some(n), Some(fw)) => ops::layer_norm(
            &mut buf.hf,
            &mut buf.final_ln,
            &buf.sel,
            &fw.weight,
            &fw.bias,
            n.eps,
        ),
        _ => buf.hf.copy_from_slice(&buf.sel),
    }
    ops::resize(&mut buf.pred, d.batch * d.n1);
    ops::linear(
        &mut buf.pred,
        &buf.hf,
        &w.readout.weight,
        &w.readout.bias,
        d.batch * d.n1,
        d.width,
    );
    Ok(())
}

/// `h ← h + Attn(LN?(h)); h ← h + MLP(LN(h))`, keeping what the backward needs.
fn layer_forward<T: Real>(
    c: &ModelConfig,
    p: &LayerParts<'_, Vec<T>>,
    lc: &mut LayerCache<T>,
    h: &mut [T],
    d: Dims,
    l: usize,
) {
    let (n, w) = (d.rows, d.width);
    ops::resize(&mut lc.a, n * w);
    match (c.layers[l].attn_norm, p.attn_norm) {
        (Some(cfg), Some(nw)) => {
            ops::layer_norm(&mut lc.a, &mut lc.ln1, h, &nw.weight, &nw.bias, cfg.eps)
        }
        _ => lc.a.copy_from_slice(h),
    }
    for (dst, lin) in [(&mut lc.q, p.q), (&mut lc.k, p.k), (&mut lc.v, p.v)] {
        ops::resize(dst, n * d.inner);
        ops::linear(dst, &lc.a, &lin.weight, &lin.bias, n, w);
    }
    ops::resize(&mut lc.p, d.batch * d.attn.heads * d.t * d.t);
    ops::resize(&mut lc.att, n * d.inner);
    attention::forward(d.attn, &lc.q, &lc.k, &lc.v, &mut lc.p, &mut lc.att);
    ops::linear_add(h, &lc.att, &p.o.weight, &p.o.bias, n, d.inner);
    ops::resize(&mut lc.m, n * w);
    let eps = c.layers[l].norm.map_or(1e-5, |n| n.eps);
    ops::layer_norm(&mut lc.m, &mut lc.ln2, h, &p.norm.weight, &p.norm.bias, eps);
    for v in [&mut lc.u, &mut lc.s, &mut lc.g] {
        ops::resize(v, n * d.hidden);
    }
    ops::linear(&mut lc.u, &lc.m, &p.up.weight, &p.up.bias, n, w);
    ops::gelu(gelu_kind(c, l), &mut lc.g, &mut lc.s, &lc.u);
    ops::linear_add(h, &lc.g, &p.down.weight, &p.down.bias, n, d.hidden);
}

/// The loss `mean((pred − y)²)` (accumulated in f64) and the backward from it to the last hidden
/// state: read-out and final-norm gradients written, `buf.dh` set (non-zero on x̃ rows only).
fn readout_backward<T: Real>(
    w: &Weights<Vec<T>>,
    g: &mut Weights<Vec<T>>,
    buf: &mut Buffers<T>,
    prompts: &[Prompt],
    d: Dims,
) -> f64 {
    let count = (d.batch * d.n1) as f64;
    let mut loss = 0.0;
    let mut dpred = Vec::with_capacity(d.batch * d.n1);
    for (&pred, &y) in buf.pred.iter().zip(prompts.iter().flat_map(|p| &p.ys)) {
        let e = pred.to_f64() - T::of(y).to_f64();
        loss += e * e;
        dpred.push(T::of(2.0 * e / count));
    }
    let loss = loss / count;
    ops::resize(&mut buf.dhf, buf.hf.len());
    ops::linear_backward(
        &dpred,
        &buf.hf,
        &w.readout.weight,
        d.batch * d.n1,
        d.width,
        &mut g.readout.weight,
        &mut g.readout.bias,
        Some((&mut buf.dhf, Accum::Replace)),
    );
    ops::resize(&mut buf.dsel, buf.sel.len());
    match (&w.final_norm, &mut g.final_norm) {
        (Some(fw), Some(fg)) => {
            buf.dsel.fill(T::zero_());
            ops::layer_norm_backward(
                &mut buf.dsel,
                &buf.dhf,
                &buf.final_ln,
                &fw.weight,
                &mut fg.weight,
                &mut fg.bias,
            );
        }
        _ => buf.dsel.copy_from_slice(&buf.dhf),
    }
    ops::resize(&mut buf.dh, d.rows * d.width);
    buf.dh.fill(T::zero_());
    for (i, ds) in buf.dsel.chunks_exact(d.width).enumerate() {
        let row = (i / d.n1) * d.t + 2 * (i % d.n1);
        buf.dh[row * d.width..][..d.width].copy_from_slice(ds);
    }
    loss
}

/// Layer `l`'s backward: from `buf.dh` (the gradient of its output) to the gradient of its
/// input (in `buf.dh`), its parameters' gradients written into `g`.
fn layer_backward<T: Real>(
    c: &ModelConfig,
    w: &Weights<Vec<T>>,
    g: &mut Weights<Vec<T>>,
    buf: &mut Buffers<T>,
    d: Dims,
    l: usize,
) -> Result<()> {
    let p = layer_parts(w, l)?;
    let gl = layer_parts_mut(g, l)?;
    let lc = &buf.layers[l];
    let (n, wd) = (d.rows, d.width);
    // MLP branch: h_out = h_mid + down(act(up(LN(h_mid)))).
    ops::resize(&mut buf.dg, n * d.hidden);
    ops::linear_backward(
        &buf.dh,
        &lc.g,
        &p.down.weight,
        n,
        d.hidden,
        &mut gl.down.weight,
        &mut gl.down.bias,
        Some((&mut buf.dg, Accum::Replace)),
    );
    ops::gelu_backward(gelu_kind(c, l), &mut buf.dg, &lc.s, &lc.u);
    ops::resize(&mut buf.dm, n * wd);
    ops::linear_backward(
        &buf.dg,
        &lc.m,
        &p.up.weight,
        n,
        wd,
        &mut gl.up.weight,
        &mut gl.up.bias,
        Some((&mut buf.dm, Accum::Replace)),
    );
    ops::layer_norm_backward(
        &mut buf.dh,
        &buf.dm,
        &lc.ln2,
        &p.norm.weight,
        &mut gl.norm.weight,
        &mut gl.norm.bias,
    );
    // Attention branch: h_mid = h_in + o(attn(q, k, v of a)), a = LN?(h_in).
    ops::resize(&mut buf.datt, n * d.inner);
    ops::linear_backward(
        &buf.dh,
        &lc.att,
        &p.o.weight,
        n,
        d.inner,
        &mut gl.o.weight,
        &mut gl.o.bias,
        Some((&mut buf.datt, Accum::Replace)),
    );
    for v in [&mut buf.dq, &mut buf.dk, &mut buf.dv] {
        ops::resize(v, n * d.inner);
    }
    attention::backward(
        d.attn,
        &lc.q,
        &lc.k,
        &lc.v,
        &lc.p,
        &buf.datt,
        &mut buf.dq,
        &mut buf.dk,
        &mut buf.dv,
    );
    ops::resize(&mut buf.da, n * wd);
    let projections = [
        (&buf.dq, p.q, &mut *gl.q, Accum::Replace),
        (&buf.dk, p.k, &mut *gl.k, Accum::Add),
        (&buf.dv, p.v, &mut *gl.v, Accum::Add),
    ];
    for (dy, lin, glin, accum) in projections {
        ops::linear_backward(
            dy,
            &lc.a,
            &lin.weight,
            n,
            wd,
            &mut glin.weight,
            &mut glin.bias,
            Some((&mut buf.da, accum)),
        );
    }
    match (p.attn_norm, gl.attn_norm) {
        (Some(nw), Some(ng)) => ops::layer_norm_backward(
            &mut buf.dh,
            &buf.da,
            &lc.ln1,
            &nw.weight,
            &mut ng.weight,
            &mut ng.bias,
        ),
        _ => {
            for (h, &a) in buf.dh.iter_mut().zip(&buf.da) {
                *h += a;
            }
        }
    }
    Ok(())
}

/// One layer's gradients, borrowed mutably out of a [`Weights`] tree.
struct LayerPartsMut<'a, T> {
    attn_norm: Option<&'a mut Norm<T>>,
    q: &'a mut Linear<T>,
    k: &'a mut Linear<T>,
    v: &'a mut Linear<T>,
    o: &'a mut Linear<T>,
    norm: &'a mut Norm<T>,
    up: &'a mut Linear<T>,
    down: &'a mut Linear<T>,
}

fn layer_parts_mut<T>(w: &mut Weights<T>, l: usize) -> Result<LayerPartsMut<'_, T>> {
    let missing = || TrainError::Internal(format!("layer {l} lacks a fused part"));
    let b = &mut w.layers[l];
    let a = b.attn.as_mut().ok_or_else(missing)?;
    let m = b.mlp.as_mut().ok_or_else(missing)?;
    Ok(LayerPartsMut {
        attn_norm: b.attn_norm.as_mut(),
        q: a.q.as_mut().ok_or_else(missing)?,
        k: a.k.as_mut().ok_or_else(missing)?,
        v: &mut a.v,
        o: &mut a.o,
        norm: b.norm.as_mut().ok_or_else(missing)?,
        up: &mut m.up,
        down: &mut m.down,
    })
}

/// Gradients of the embedding `E·token + b` and of the position table (summed over prompts).
fn embed_backward<T: Real>(
    w: &Weights<Vec<T>>,
    g: &mut Weights<Vec<T>>,
    buf: &Buffers<T>,
    d: Dims,
) {
    ops::linear_backward(
        &buf.dh,
        &buf.tokens,
        &w.embed.weight,
        d.rows,
        d.d1,
        &mut g.embed.weight,
        &mut g.embed.bias,
        None,
    );
    let (used, unused) = g.pos.split_at_mut(d.t * d.width);
    ops::column_sums(used, &buf.dh);
    unused.fill(T::zero_());
}

/// Scale every gradient by `min(1, clip/‖g‖)` (the global L2 norm, summed in f64); `clip = 0`
/// leaves them.
fn clip<T: Real>(grads: &mut Weights<Vec<T>>, clip: f64) {
    if clip <= 0.0 {
        return;
    }
    let mut sq = 0.0;
    grads.visit(|g| sq += g.iter().map(|v| v.to_f64() * v.to_f64()).sum::<f64>());
    let norm = sq.sqrt();
    if norm > clip {
        let scale = T::of(clip / norm);
        for g in grads.leaves_mut() {
            g.iter_mut().for_each(|v| *v *= scale);
        }
    }
}

/// AdamW as [`AdamW::step`] does it, elementwise: moments, bias corrections, decoupled weight
/// decay, written in place into the moments' and the variables' storage; the step count
/// advanced.
fn adamw<T: Real>(
    model: &Transformer,
    opt: &mut AdamW,
    grads: &Weights<Vec<T>>,
    lr: f64,
    o: &OptimConfig,
) -> Result<()> {
    opt.t += 1;
    let bc1 = T::of(1.0 - o.beta1.powi(opt.t as i32));
    let bc2 = T::of(1.0 - o.beta2.powi(opt.t as i32));
    let (b1, b2) = (T::of(o.beta1), T::of(o.beta2));
    let (c1, c2) = (T::of(1.0 - o.beta1), T::of(1.0 - o.beta2));
    let (decay, eps, lr_t) = (
        T::of(1.0 - lr * o.weight_decay),
        T::of(o.adam_eps),
        T::of(lr),
    );
    let spec = Weights::spec(&model.config);
    let names = spec.leaves();
    let params = model.weights().leaves();
    for ((spec, p), g) in names.iter().zip(params).zip(grads.leaves()) {
        let missing = || TrainError::Internal(format!("no AdamW moment for {}", spec.name));
        let m = opt.m.get(&spec.name).ok_or_else(missing)?;
        let v = opt.v.get(&spec.name).ok_or_else(missing)?;
        storage::update(m, |m: &mut [T]| {
            ops::simd(
                #[inline(always)]
                || {
                    for (m, &g) in m.iter_mut().zip(g) {
                        *m = *m * b1 + g * c1;
                    }
                },
            )
        })?;
        storage::update(v, |v: &mut [T]| {
            ops::simd(
                #[inline(always)]
                || {
                    for (v, &g) in v.iter_mut().zip(g) {
                        *v = *v * b2 + g * g * c2;
                    }
                },
            )
        })?;
        storage::with_slice(m, |m: &[T]| {
            storage::with_slice(v, |v: &[T]| {
                storage::update(p, |p: &mut [T]| {
                    ops::simd(
                        #[inline(always)]
                        || {
                            for ((p, &m), &v) in p.iter_mut().zip(m).zip(v) {
                                let update = (m / bc1) / ((v / bc2).sqrt() + eps);
                                *p = *p * decay - update * lr_t;
                            }
                        },
                    )
                })
            })
        })???;
    }
    Ok(())
}
