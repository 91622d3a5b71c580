//! One layer: `h ← h + Attn(h); h ← h + MLP(norm?(h))`, certified step by step — the attention
//! ([`super::attn`]), then the MLP ([`super::mlp`]), a division's two halves joined and bounded
//! ([`super::div`]) — advancing the symbolic state.

use super::attn::PrepInfo;
use super::error::{CertifyError, Part};
use super::report::{LayerCertificate, Verdict};
use super::state::{Ctx, RowState};
use super::structure::LayerPlacement;
use super::{attn, div, mlp};
use crate::layout::{Layer, PlacedOp};
use std::collections::BTreeMap;

/// Certify layer `l` with its placed (attention, MLP) operations, advancing `state`.
pub fn certify_layer(
    ctx: &Ctx,
    l: Layer,
    (attn_ops, mlp_ops): &LayerPlacement,
    state: &mut [RowState],
) -> Result<LayerCertificate, CertifyError> {
    if ctx.cfg.layers[l.index()].attn_norm.is_some() {
        return Err(ctx.op_err(
            l,
            Part::Layer,
            None,
            "LayerNorm on the attention input — no exact normal form (the exact target never \
             emits one)"
                .into(),
        ));
    }
    let ops = op_labels(ctx, attn_ops, mlp_ops);
    let prep = attention_step(ctx, l, attn_ops, state)?;
    let mut cert = LayerCertificate {
        index: l,
        ops,
        verdict: Verdict::Exact,
        relative_error: None,
        ranges: BTreeMap::new(),
        assumptions: Vec::new(),
        note: None,
        local_error: None,
        error_after: None,
    };
    mlp_step(ctx, l, mlp_ops, prep, state, &mut cert)?;
    Ok(cert)
}

/// The operations of a layer as the certificate lists them: `attn: …`, then `mlp: …`.
pub(crate) fn op_labels(ctx: &Ctx, attn_ops: &[PlacedOp], mlp_ops: &[PlacedOp]) -> Vec<String> {
    let label = |part: &str, po: &PlacedOp| format!("{part}: {}", ctx.op_label(po.op));
    let attn = attn_ops.iter().map(|po| label("attn", po));
    attn.chain(mlp_ops.iter().map(|po| label("mlp", po)))
        .collect()
}

/// An error for operations placed in a part the layer does not have.
fn placed_in_missing_part(ctx: &Ctx, l: Layer, part: Part, po: &PlacedOp) -> CertifyError {
    let what = if part == Part::Attention {
        "attention"
    } else {
        "MLP"
    };
    ctx.op_err(
        l,
        part,
        Some(po.op),
        format!(
            "layout.json places this operation in the layer's {what}, but the layer has no {what}"
        ),
    )
}

/// The attention step; what a division's attention half leaves for its MLP half.
fn attention_step(
    ctx: &Ctx,
    l: Layer,
    ops: &[PlacedOp],
    state: &mut [RowState],
) -> Result<Option<PrepInfo>, CertifyError> {
    let parts = (
        &ctx.cfg.layers[l.index()].attn,
        &ctx.weights.layers[l.index()].attn,
    );
    match parts {
        (Some(ac), Some(aw)) => attn::check_attention(ctx, l, ac, aw, ops, state),
        (None, _) => match ops.first() {
            Some(po) => Err(placed_in_missing_part(ctx, l, Part::Attention, po)),
            None => Ok(None),
        },
        (Some(_), None) => unreachable!("the schema gives every configured part its tensors"),
    }
}

/// The MLP step, and the bound of a division whose halves are this layer's (recorded in
/// `cert`).
fn mlp_step(
    ctx: &Ctx,
    l: Layer,
    ops: &[PlacedOp],
    prep: Option<PrepInfo>,
    state: &mut [RowState],
    cert: &mut LayerCertificate,
) -> Result<(), CertifyError> {
    let (lc, block) = (&ctx.cfg.layers[l.index()], &ctx.weights.layers[l.index()]);
    let (mc, mw) = match (&lc.mlp, &block.mlp) {
        (Some(mc), Some(mw)) => (mc, mw),
        (None, _) => {
            if let Some(po) = ops.first() {
                return Err(placed_in_missing_part(ctx, l, Part::Mlp, po));
            }
            if lc.norm.is_some() {
                return Err(ctx.op_err(
                    l,
                    Part::Layer,
                    None,
                    "a LayerNorm with no MLP after it".into(),
                ));
            }
            return Ok(());
        }
        (Some(_), None) => unreachable!("the schema gives every configured part its tensors"),
    };
    let norm = lc.norm.as_ref().zip(block.norm.as_ref());
    let Some(apply) = mlp::check_mlp(ctx, l, mc, mw, norm, ops, state)? else {
        return Ok(());
    };
    let prep = prep.ok_or_else(|| {
        ctx.op_err(
            l,
            Part::Mlp,
            Some(apply.op),
            "the division's MLP half has no attention half (payload) in this layer".into(),
        )
    })?;
    div::certify_division(ctx, l, &prep, &apply, state, cert)
}
