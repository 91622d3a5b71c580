//! The fused step's forward: embedding, every layer, the final norm and read-out on the x̃ rows,
//! keeping in [`LayerCache`]s what the backward needs.

use super::{attention, ops, Buffers, Real};
use crate::model::config::{Activation, ModelConfig};
use crate::model::schema::{Linear, Norm, Weights};
use crate::prompt::Prompt;
use crate::train::{Result, TrainError};
use faer::Accum;
use ops::{Gelu, NormCache};

/// One layer's parameters (or gradients), borrowed out of a [`Weights`] tree.
pub(super) struct LayerParts<'a, T> {
    pub(super) attn_norm: Option<&'a Norm<T>>,
    pub(super) q: &'a Linear<T>,
    pub(super) k: &'a Linear<T>,
    pub(super) v: &'a Linear<T>,
    pub(super) o: &'a Linear<T>,
    pub(super) norm: &'a Norm<T>,
    pub(super) up: &'a Linear<T>,
    pub(super) down: &'a Linear<T>,
}

pub(super) fn layer_parts<T>(w: &Weights<T>, l: usize) -> Result<LayerParts<'_, T>> {
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
pub(super) struct Dims {
    pub(super) batch: usize,
    /// Prompt length 2n+1 and rows B·T.
    pub(super) t: usize,
    pub(super) rows: usize,
    pub(super) width: usize,
    pub(super) inner: usize,
    pub(super) hidden: usize,
    /// x̃ columns per prompt (n+1): the rows the loss reads.
    pub(super) n1: usize,
    pub(super) attn: attention::Shape,
}

/// What one layer's forward keeps for its backward.
#[derive(Default)]
pub(super) struct LayerCache<T> {
    /// The attention's input: LayerNorm(h) in `gpt2`, h itself in `paper`.
    pub(super) a: Vec<T>,
    pub(super) ln1: NormCache<T>,
    pub(super) q: Vec<T>,
    pub(super) k: Vec<T>,
    pub(super) v: Vec<T>,
    /// Attention weights [B, heads, T, T].
    pub(super) p: Vec<T>,
    /// The heads' outputs side by side, before W_O: [B·T, inner].
    pub(super) att: Vec<T>,
    pub(super) ln2: NormCache<T>,
    pub(super) m: Vec<T>,
    pub(super) u: Vec<T>,
    /// Φ(u) (erf GeLU) or the tanh (tanh GeLU): what the GeLU's gradient needs.
    pub(super) s: Vec<T>,
    pub(super) g: Vec<T>,
}

pub(super) fn dims(c: &ModelConfig, prompts: &[Prompt]) -> Result<Dims> {
    let first = prompts
        .first()
        .ok_or_else(|| TrainError::Internal("an empty batch".into()))?;
    let t = first.columns();
    if t > c.max_len || prompts.iter().any(|p| p.columns() != t) {
        return Err(TrainError::Internal(format!(
            "prompts of {t} columns for max_len {}",
            c.max_len
        )));
    }
    // `unsupported()` refuses models without these before a step runs.
    let uncovered = || TrainError::Internal("the fused step got a model it does not cover".into());
    let layer = c.layers.first().ok_or_else(uncovered)?;
    let a = layer.attn.ok_or_else(uncovered)?;
    let hidden = layer.mlp.ok_or_else(uncovered)?.hidden;
    let batch = prompts.len();
    Ok(Dims {
        batch,
        t,
        rows: batch * t,
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

pub(super) fn load_tokens<T: Real>(buf: &mut Buffers<T>, prompts: &[Prompt], d: Dims) {
    buf.tokens.clear();
    for p in prompts {
        for col in 0..d.t {
            buf.tokens.extend(p.token(col).into_iter().map(T::of));
        }
    }
}

pub(super) fn gelu_kind(c: &ModelConfig, l: usize) -> Gelu {
    match c.layers[l].mlp.map(|m| m.activation) {
        Some(Activation::GeluTanh) => Gelu::Tanh,
        _ => Gelu::Erf,
    }
}

/// Embedding, then every layer, then the final norm and read-out on the x̃ rows.
pub(super) fn forward<T: Real>(
    c: &ModelConfig,
    w: &Weights<Vec<T>>,
    buf: &mut Buffers<T>,
    d: Dims,
) -> Result<()> {
    ops::resize(&mut buf.h, d.rows * d.width);
    ops::linear(&mut buf.h, Accum::Replace, &buf.tokens, &w.embed, d.rows);
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
        Accum::Replace,
        &buf.hf,
        &w.readout,
        d.batch * d.n1,
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
        ops::linear(dst, Accum::Replace, &lc.a, lin, n);
    }
    ops::resize(&mut lc.p, d.batch * d.attn.heads * d.t * d.t);
    ops::resize(&mut lc.att, n * d.inner);
    attention::forward(d.attn, &lc.q, &lc.k, &lc.v, &mut lc.p, &mut lc.att);
    ops::linear(h, Accum::Add, &lc.att, p.o, n);
    ops::resize(&mut lc.m, n * w);
    let eps = c.layers[l].norm.map_or(1e-5, |n| n.eps);
    ops::layer_norm(&mut lc.m, &mut lc.ln2, h, &p.norm.weight, &p.norm.bias, eps);
    for v in [&mut lc.u, &mut lc.s, &mut lc.g] {
        ops::resize(v, n * d.hidden);
    }
    ops::linear(&mut lc.u, Accum::Replace, &lc.m, p.up, n);
    ops::gelu(gelu_kind(c, l), &mut lc.g, &mut lc.s, &lc.u);
    ops::linear(h, Accum::Add, &lc.g, p.down, n);
}
