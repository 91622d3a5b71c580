//! The fused step's backward: from the loss through the read-out and final norm, every layer
//! in reverse, to the embedding and position table; parameter gradients written, activation
//! gradients in the step's buffers.

use super::forward::{gelu_kind, layer_parts, Dims, LayerParts};
use super::{attention, ops, Buffers, Real};
use crate::model::config::ModelConfig;
use crate::model::schema::{Linear, Norm, Weights};
use crate::prompt::Prompt;
use crate::train::{Result, TrainError};
use faer::Accum;

/// The loss `mean((pred − y)²)` (accumulated in f64) and the backward from it to the last hidden
/// state: read-out and final-norm gradients written, `buf.dh` set (non-zero on x̃ rows only).
pub(super) fn readout<T: Real>(
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
        d.batch * d.n1,
        &w.readout,
        &mut g.readout,
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
pub(super) fn layer<T: Real>(
    c: &ModelConfig,
    w: &Weights<Vec<T>>,
    g: &mut Weights<Vec<T>>,
    buf: &mut Buffers<T>,
    d: Dims,
    l: usize,
) -> Result<()> {
    let (p, mut gl) = (layer_parts(w, l)?, layer_parts_mut(g, l)?);
    mlp_branch(gelu_kind(c, l), &p, &mut gl, buf, d, l);
    attention_branch(&p, &mut gl, buf, d, l);
    Ok(())
}

/// The MLP branch `h_out = h_mid + down(act(up(LN(h_mid))))`: `buf.dh` becomes the gradient of
/// `h_mid`.
fn mlp_branch<T: Real>(
    act: ops::Gelu,
    p: &LayerParts<'_, Vec<T>>,
    gl: &mut LayerPartsMut<'_, Vec<T>>,
    buf: &mut Buffers<T>,
    d: Dims,
    l: usize,
) {
    let (lc, n) = (&buf.layers[l], d.rows);
    ops::resize(&mut buf.dg, n * d.hidden);
    let dg = Some((&mut buf.dg[..], Accum::Replace));
    ops::linear_backward(&buf.dh, &lc.g, n, p.down, gl.down, dg);
    ops::gelu_backward(act, &mut buf.dg, &lc.s, &lc.u);
    ops::resize(&mut buf.dm, n * d.width);
    let dm = Some((&mut buf.dm[..], Accum::Replace));
    ops::linear_backward(&buf.dg, &lc.m, n, p.up, gl.up, dm);
    let (gain, dnorm) = (&p.norm.weight, &mut *gl.norm);
    ops::layer_norm_backward(
        &mut buf.dh,
        &buf.dm,
        &lc.ln2,
        gain,
        &mut dnorm.weight,
        &mut dnorm.bias,
    );
}

/// The attention branch `h_mid = h_in + o(attn(q, k, v of a))`, `a = LN?(h_in)`: `buf.dh`
/// becomes the gradient of `h_in`.
fn attention_branch<T: Real>(
    p: &LayerParts<'_, Vec<T>>,
    gl: &mut LayerPartsMut<'_, Vec<T>>,
    buf: &mut Buffers<T>,
    d: Dims,
    l: usize,
) {
    let (lc, n) = (&buf.layers[l], d.rows);
    ops::resize(&mut buf.datt, n * d.inner);
    let datt = Some((&mut buf.datt[..], Accum::Replace));
    ops::linear_backward(&buf.dh, &lc.att, n, p.o, gl.o, datt);
    for v in [&mut buf.dq, &mut buf.dk, &mut buf.dv] {
        ops::resize(v, n * d.inner);
    }
    let (dq, dk, dv) = (&mut buf.dq, &mut buf.dk, &mut buf.dv);
    attention::backward(d.attn, &lc.q, &lc.k, &lc.v, &lc.p, &buf.datt, dq, dk, dv);
    ops::resize(&mut buf.da, n * d.width);
    let projections = [
        (&buf.dq, p.q, &mut *gl.q, Accum::Replace),
        (&buf.dk, p.k, &mut *gl.k, Accum::Add),
        (&buf.dv, p.v, &mut *gl.v, Accum::Add),
    ];
    for (dy, lin, glin, accum) in projections {
        ops::linear_backward(dy, &lc.a, n, lin, glin, Some((&mut buf.da, accum)));
    }
    match (p.attn_norm, &mut gl.attn_norm) {
        (Some(nw), Some(ng)) => {
            let (dgain, dshift) = (&mut ng.weight, &mut ng.bias);
            ops::layer_norm_backward(&mut buf.dh, &buf.da, &lc.ln1, &nw.weight, dgain, dshift)
        }
        _ => {
            for (h, &a) in buf.dh.iter_mut().zip(&buf.da) {
                *h += a;
            }
        }
    }
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
pub(super) fn embed<T: Real>(
    w: &Weights<Vec<T>>,
    g: &mut Weights<Vec<T>>,
    buf: &Buffers<T>,
    d: Dims,
) {
    ops::linear_backward(&buf.dh, &buf.tokens, d.rows, &w.embed, &mut g.embed, None);
    let (used, unused) = g.pos.split_at_mut(d.t * d.width);
    ops::column_sums(used, &buf.dh);
    unused.fill(T::zero_());
}
