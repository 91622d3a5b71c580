//! Certification of `paper`-target models (docs/PAPER_TARGET.md), from the emitted files alone.
//!
//! The structure checks, the symbolic state and the attention normal form are the exact
//! target's ([`super::structure`], [`super::state`], [`super::attn`]); what differs is where the
//! attention matrices come from (position-coded scores, [`scores`]), the GeLU MLP behind the
//! LayerNorm bypass ([`mlp`]), and the bound: every layer adds its own error — softmax leak,
//! Taylor remainders, LayerNorm read, and the floating-point rounding of every operation of the
//! forward pass in the model's dtype ([`rounding`]) — to the errors it propagates, so the
//! end-to-end bound covers the model as it runs, not an exact-arithmetic idealisation.

pub mod attn;
pub mod mlp;
pub mod rounding;
pub mod scores;

use super::bound::{add_up, mul_up};
use super::coeffs::Coeffs;
use super::error::{CertifyError, Part};
use super::exact::Dy;
use super::io::check_embedding_with_codes;
use super::report::{LayerCertificate, Verdict};
use super::state::{Code, Content, Ctx, RowState, Step};
use super::{Certificate, ModelFiles};
use crate::ir::{OpKind, Program};
use crate::layout::{Layer, OpPart, PaperLayout, Row};
use crate::model::config::{Activation, MlpKind};
use std::collections::BTreeMap;

fn layout_err(msg: String) -> CertifyError {
    CertifyError::new(Part::Layout, msg)
}

/// The paper section of layout.json, with its rows inside the width and apart from every
/// register, the zero row and the payload rows; the width L = 2k².
fn check_paper_layout<'a>(ctx: &Ctx<'a>) -> Result<(&'a PaperLayout, usize), CertifyError> {
    let paper = ctx.layout.paper.as_ref().ok_or_else(|| {
        layout_err("a paper-target model needs layout.json's `paper` section".into())
    })?;
    let c = &paper.codes;
    let fixed = [
        c.c1,
        c.c2,
        c.parity,
        c.one,
        paper.bypass[0],
        paper.bypass[1],
    ];
    let mut taken: Vec<Row> = vec![ctx.layout.zero_row];
    taken.extend(ctx.layout.div_payload.into_iter().flatten());
    for reg in ctx.p.reg_ids() {
        taken.extend(ctx.rows(reg));
    }
    for (i, r) in fixed.iter().enumerate() {
        if r.index() >= ctx.width || taken.contains(r) || fixed[..i].contains(r) {
            return Err(layout_err(format!(
                "paper row {r} is outside the width or shared with another row's use"
            )));
        }
    }
    let k = (1..=ctx.width)
        .find(|k| 2 * k * k >= ctx.width)
        .unwrap_or(1);
    if 2 * k * k != ctx.width {
        return Err(layout_err(format!(
            "width {} is not 2k²: the bypass gain N·√(2/L) would be irrational",
            ctx.width
        )));
    }
    if !paper.code_scale.is_power_of_two() || paper.code_scale < ctx.cols {
        return Err(layout_err(format!(
            "code scale D = {} must be a power of two ≥ max_len {}",
            paper.code_scale, ctx.cols
        )));
    }
    Ok((paper, k))
}

/// Every layer is the trained `paper` block: no attention norm; Q/K attention with the null
/// key and no bias table or momentum; LayerNorm; a GeLU (erf) MLP.
fn check_blocks(ctx: &Ctx) -> Result<(), CertifyError> {
    for (l, lc) in ctx.cfg.layers.iter().enumerate() {
        let bad = |m: &str| ctx.op_err(Layer(l), Part::Layer, None, m.into());
        let Some(a) = lc.attn else {
            return Err(bad("no attention"));
        };
        if lc.attn_norm.is_some() || !a.qk || a.bias || !a.zero_attn || a.momentum.is_some() {
            return Err(bad(
                "attention must be Q/K softmax with the null key, no bias table, no attention \
                 norm, no momentum",
            ));
        }
        let ok_mlp = lc
            .mlp
            .is_some_and(|m| m.kind == MlpKind::Gelu && m.activation == Activation::Gelu);
        if lc.norm.is_none() || !ok_mlp {
            return Err(bad("the MLP must be a GeLU (erf) MLP behind a LayerNorm"));
        }
    }
    Ok(())
}

/// The embedding: inputs as in the exact target, the code rows with their values at every
/// column, the bypass rows ±N, everything else 0. Returns the state after it.
fn check_embedding(ctx: &Ctx, paper: &PaperLayout) -> Result<Vec<RowState>, CertifyError> {
    let c = &paper.codes;
    let n = paper.bypass_scale;
    let codes = [
        (c.c1, Code::C1),
        (c.c2, Code::C2),
        (c.parity, Code::Parity),
        (c.one, Code::One),
        (paper.bypass[0], Code::Bypass(n)),
        (paper.bypass[1], Code::Bypass(-n)),
    ];
    check_embedding_with_codes(ctx, &codes, paper.code_scale)
}

/// Payload scale and largest |den| of every division, for the magnitude of payload rows.
type Payloads = BTreeMap<crate::ir::OpId, (f64, f64)>;

/// |value| of a row: its range plus its error, a payload row ±P·|den|max.
fn magnitude(ctx: &Ctx, payloads: &Payloads, st: &RowState) -> f64 {
    let m = match &st.content {
        Content::Payload(k) => payloads
            .get(k)
            .map_or(f64::INFINITY, |(p, d)| mul_up(*p, *d)),
        c => ctx.content_range(c).abs_max(),
    };
    add_up(m, st.err)
}

/// One layer's figures for the certificate.
fn layer_note(leak: f64, gap: Option<f64>, f: &mlp::MlpFigures, attn_max: f64) -> String {
    format!(
        "attention: leak ≤ {leak:.3e} (score gap ≥ {}), adds ≤ {attn_max:.3e}; MLP: LayerNorm \
         read within {:.3e}, product coefficients within {:.3e}; rows written hold errors ≤ {:.3e}",
        gap.map_or("—".to_string(), |g| format!("{g}")),
        f.read_error,
        f.coefficient_error,
        f.max_written_error
    )
}

/// Certify layer `l`.
#[allow(clippy::too_many_arguments)]
fn certify_layer(
    ctx: &Ctx,
    l: Layer,
    paper: &PaperLayout,
    k: usize,
    (attn_ops, mlp_ops): &super::structure::LayerPlacement,
    payloads: &Payloads,
    cache: &mut scores::PatternCache,
    state: &mut [RowState],
) -> Result<LayerCertificate, CertifyError> {
    let li = l.index();
    let (lc, block) = (&ctx.cfg.layers[li], &ctx.weights.layers[li]);
    let (Some(ac), Some(aw)) = (&lc.attn, &block.attn) else {
        return Err(ctx.op_err(l, Part::Layer, None, "no attention".into()));
    };
    let u = rounding::unit(ctx.cfg.dtype);
    let step = Step::new(ctx, l, Part::Attention, attn_ops);
    let pats = scores::head_patterns(&step, ac, aw, state, paper.code_scale, ctx.cfg.dtype, cache)?;
    let leaks: Vec<f64> = pats.iter().map(|p| p.leak).collect();
    let leak = leaks.iter().copied().fold(0.0, f64::max);
    let gap = pats.iter().filter_map(|p| p.gap).reduce(f64::min);
    let divides = attn_ops.iter().any(|po| po.part == OpPart::DivPrep);
    let mut o_bias: Coeffs<Row> = Coeffs::new();
    if divides {
        let n = Dy::from_f64(paper.bypass_scale).expect("finite");
        o_bias.insert(paper.bypass[0], n.neg());
        o_bias.insert(paper.bypass[1], n);
    }
    let clears = paper.payload_clears.iter().any(|c| c.layer == l);
    let before = state.to_vec();
    let mag_before = |r: usize| magnitude(ctx, payloads, &before[r]);
    let local = attn::attention_errors(ctx, ac, aw, &mag_before, &leaks, u);
    let keys = pats.into_iter().map(|p| p.key).collect();
    let prep = super::attn::check_attention_forms(&step, ac, aw, keys, &o_bias, clears, state)?;
    // What the attention adds to values (the payload rows' error is relative to ±P·den and
    // enters the division's bound instead).
    let payload_rows: Vec<usize> = ctx
        .layout
        .div_payload
        .into_iter()
        .flatten()
        .map(|r| r.index())
        .collect();
    let attn_max = local
        .iter()
        .enumerate()
        .filter(|(r, _)| !payload_rows.contains(r))
        .map(|(_, e)| *e)
        .fold(0.0, f64::max);
    for (r, e) in local.iter().enumerate() {
        state[r].err = add_up(state[r].err, *e);
    }
    if let Some(prep) = &prep {
        // The payload rows: ±P·den read from the den row, whose error P multiplies.
        let den = match &ctx.p.ops[prep.op].kind {
            OpKind::Div { den, .. } => *den,
            _ => unreachable!("a PrepInfo is a division's"),
        };
        let e_den = before[ctx.row(den, 0).index()].err;
        if std::env::var("ICL_DEBUG").is_ok() {
            let pl: Vec<f64> = ctx
                .layout
                .div_payload
                .into_iter()
                .flatten()
                .map(|r| state[r.index()].err)
                .collect();
            eprintln!(
                "layer {l}: P {} e_den {e_den} payload local {pl:?}",
                prep.scale.to_f64()
            );
        }
        for r in ctx.layout.div_payload.into_iter().flatten() {
            state[r.index()].err = add_up(
                state[r.index()].err,
                mul_up(prep.scale.to_f64().abs(), e_den),
            );
        }
    }
    let changed: Vec<bool> = local.iter().map(|e| *e > 0.0).collect();
    let mag = |_: usize, st: &RowState| magnitude(ctx, payloads, st);
    attn::add_residual_rounding(state, &mag, &changed, u);

    let (Some(mc), Some(mw), Some(nc), Some(nw)) = (&lc.mlp, &block.mlp, &lc.norm, &block.norm)
    else {
        return Err(ctx.op_err(l, Part::Layer, None, "no MLP or LayerNorm".into()));
    };
    let mode = match (&prep, mlp_ops.iter().find(|po| po.part == OpPart::DivApply)) {
        (Some(prep), Some(apply)) if prep.op == apply.op => {
            let (pp, dmax) = payloads[&prep.op];
            let den = match &ctx.p.ops[prep.op].kind {
                OpKind::Div { den, .. } => *den,
                _ => unreachable!(),
            };
            let iv = ctx.ranges.before_op(prep.op, den).map(|v| v[0]);
            let den_min = iv.map_or(0.0, |i| i.abs_min());
            if den_min.is_nan() || den_min <= 0.0 {
                return Err(ctx.op_err(
                    l,
                    Part::Mlp,
                    Some(prep.op),
                    "the divisor's range contains 0".into(),
                ));
            }
            let gain = gain_of(ctx, l, pp, k)?;
            let payload_err = ctx
                .layout
                .div_payload
                .into_iter()
                .flatten()
                .map(|r| state[r.index()].err)
                .fold(0.0, f64::max);
            mlp::Mode::Division {
                op: prep.op,
                p: pp,
                gain,
                den_min,
                den_max: dmax,
                payload_err,
            }
        }
        (None, None) => mlp::Mode::Bypass {
            n: paper.bypass_scale,
            gain: gain_of(ctx, l, paper.bypass_scale, k)?,
        },
        _ => {
            return Err(ctx.op_err(
                l,
                Part::Layer,
                attn_ops.first().or(mlp_ops.first()).map(|p| p.op),
                "a division's two halves must share a layer".into(),
            ))
        }
    };
    let input = mlp::MlpInput {
        mc,
        norm: (nc, nw),
        mw,
        ops: mlp_ops,
        mode,
        u,
    };
    let figures = mlp::check_mlp(ctx, l, &input, state, &mag)?;
    let ops = super::layer::op_labels(ctx, attn_ops, mlp_ops);
    Ok(LayerCertificate {
        index: l,
        ops,
        verdict: Verdict::Bounded,
        relative_error: Some(figures.read_error),
        ranges: BTreeMap::new(),
        assumptions: Vec::new(),
        note: Some(layer_note(leak, gap, &figures, attn_max)),
        // Filled by the local pass (`certify_model`).
        local_error: None,
        error_after: Some(super::ExtF64(figures.max_written_error)),
    })
}

/// G = scale/k, which must be a power of two (so unit weights G·c are exact).
fn gain_of(ctx: &Ctx, l: Layer, scale: f64, k: usize) -> Result<Dy, CertifyError> {
    let g = scale / k as f64;
    let gd = Dy::from_f64(g).expect("finite");
    let ok = Dy::from_f64(scale) == Some(gd.mul(&Dy::int(k as i64)))
        && Dy::from_f64(1.0 / g).is_some_and(|inv| inv.mul(&gd) == Dy::int(1));
    if !ok {
        return Err(ctx.op_err(
            l,
            Part::Mlp,
            None,
            format!("scale {scale} is not k·2^j (k = {k}): the LayerNorm gain would not be exact"),
        ));
    }
    Ok(gd)
}

/// Certify a `paper`-target model against its program (see the module comment).
pub fn certify_model(p: &Program, files: &ModelFiles) -> Result<Certificate, CertifyError> {
    let cfg = &files.config;
    let inputs = super::Inputs::read(p, files)?;
    let ctx = inputs.ctx(p, files);
    let ranges = &inputs.ranges;
    let (paper, k) = check_paper_layout(&ctx)?;
    check_blocks(&ctx)?;
    let placements = super::structure::check_placements(&ctx)?;
    let mut payloads = Payloads::new();
    for dc in &files.layout.div_constants {
        let op = files.layout.layers[dc.layer.index()]
            .attn
            .iter()
            .find(|po| po.part == OpPart::DivPrep)
            .map(|po| po.op)
            .ok_or_else(|| {
                layout_err(format!(
                    "division constants for layer {} without a division",
                    dc.layer
                ))
            })?;
        let den = match &p.ops[op].kind {
            OpKind::Div { den, .. } => *den,
            _ => return Err(layout_err("a DivPrep that is not a division".into())),
        };
        let dmax = ranges
            .before_op(op, den)
            .map_or(f64::INFINITY, |v| v[0].abs_max());
        payloads.insert(op, (dc.payload_scale, dmax));
    }
    let start_state = check_embedding(&ctx, paper)?;
    let mut cache = scores::PatternCache::new();
    let mut pass = |state: &mut Vec<RowState>, l: usize| {
        let placed = &placements[l];
        certify_layer(
            &ctx,
            Layer(l),
            paper,
            k,
            placed,
            &payloads,
            &mut cache,
            state,
        )
    };
    let mut state = start_state.clone();
    let mut layers = Vec::with_capacity(cfg.layers.len());
    let mut unbounded_from: Option<String> = None;
    for l in 0..placements.len() {
        let cert = pass(&mut state, l)?;
        if unbounded_from.is_none() && state.iter().any(|r| !r.err.is_finite()) {
            unbounded_from = Some(format!("layer {l} ({})", cert.ops.join("; ")));
        }
        layers.push(cert);
    }
    // The local pass: each layer again, on inputs that are the program's values (errors reset
    // to 0 on every row holding a program value; cleared and stale rows keep their bounds), so
    // its bound is what the layer adds on its own.
    let mut local = start_state;
    for (l, layer) in layers.iter_mut().enumerate() {
        for st in local.iter_mut() {
            if matches!(st.content, Content::Val { .. }) {
                st.err = 0.0;
            }
        }
        layer.local_error = pass(&mut local, l)?.error_after;
    }
    let out_err = super::io::check_readout(&ctx, &state)?;
    let worst = layers
        .iter()
        .filter_map(|c| c.local_error.map(|e| (c.index, e.0)))
        .max_by(|a, b| a.1.total_cmp(&b.1));
    let mut cert = super::certificate(p, files.dtype, ranges, layers, out_err, unbounded_from);
    cert.end_to_end.kind = format!(
        "absolute, on the output at every x̃ column, over the program's input ranges and \
         assumptions, including the floating-point rounding of the forward pass in {} ({})",
        files.dtype.name(),
        rounding::ASSUMPTIONS
    );
    cert.end_to_end.backward = None;
    cert.end_to_end.per_layer = worst.map(|(layer, max)| super::report::PerLayerError {
        max: super::ExtF64(max),
        layer,
        statement: "on every column whose values before each layer lie within the program's \
                    ranges, each layer writes its operations' results on the values it reads \
                    within its local_error (floating-point rounding included)"
            .into(),
    });
    Ok(cert)
}
