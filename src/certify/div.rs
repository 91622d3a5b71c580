//! The LayerNorm division bound.
//!
//! After the attention half, the MLP input column holds: payload rows +P·den and −P·den, the
//! zero row 0, dst rows 0 (cleared), and the other rows h_r. With LayerNorm weight 1, bias 0,
//! eps ≥ 0 over L = width rows, and the MLP g·(m[num_e] − m[zero]) (checked exactly by
//! [`super::mlp`]): the mean μ cancels, m[num_e] − m[zero] = h_num/σ, and
//!   σ² = (1/L)Σ_r (h_r − μ)² + eps = (2P²den² + R)/L,
//!   R = Σ_{r∉payload} h_r² − L·μ² + L·eps ∈ [0, Σ_{r∉payload} h_r² + L·eps]
//! (the payload sums to 0, so L·μ = Σ_{r∉payload} h_r and L·μ² ≤ Σ h_r² by Cauchy–Schwarz).
//! Hence dst_e = (num_e/|den|) · c / √(1 + x), c = g√L/(√2·P), x = R/(2P²den²), and
//!   |dst_e/(num_e/|den|) − 1| ≤ |c − 1| + c·x/2 ≤ δ + (1+δ)·x_max/2,
//! using 1 ≥ 1/√(1+x) ≥ 1 − x/2 (x ≥ 0) and |c − 1| = |c² − 1|/(c + 1) ≤ |c² − 1| =: δ,
//! with c² = g²L/(2P²) computed exactly as a rational, x_max = R_max/(2P²den_min²).

use super::bound::{add_up, div_up, mul_up};
use super::exact::{q, rational_upper, Dy};
use super::state::Step;
use super::{
    attn::PrepInfo, mlp::ApplyInfo, CertifyError, Content, Ctx, ExtF64, LayerCertificate, Part,
    RangeValue, RowState, Verdict,
};
use crate::ir::{OpId, OpKind};
use crate::layout::{DivConstants, Layer, Row};
use crate::ranges::Interval;
use num_rational::BigRational;
use num_traits::{One, Signed};

/// The relative error bound ε = δ + (1+δ)·x_max/2 (rounded up), with δ = |g²L/(2P²) − 1| and
/// x_max = r_max/(2P²·den_min²). `None` when r_max is infinite or den_min ≤ 0.
pub fn relative_bound(
    scale: &Dy,
    gain: &Dy,
    width: usize,
    r_max: f64,
    den_min: f64,
) -> Option<f64> {
    // (`den_min > 0.0` is false for NaN too.)
    let den_positive = den_min > 0.0;
    if !r_max.is_finite() || !den_positive || !den_min.is_finite() {
        return None;
    }
    let p = scale.to_rational();
    let g = gain.to_rational();
    let two = BigRational::from_integer(2.into());
    let l = BigRational::from_integer(width.into());
    let c2 = &g * &g * &l / (&two * &p * &p);
    let delta = (c2 - BigRational::one()).abs();
    let dmin = q(den_min)?;
    let x = q(r_max)? / (&two * &p * &p * &dmin * &dmin);
    let eps = &delta + (BigRational::one() + &delta) * x / two;
    Some(rational_upper(&eps))
}

/// A constant of layer `step`'s division `k` as layout.json's `div_constants` record it
/// (`recorded`; `None`: not a finite number), checked to equal the one its weights have.
pub fn check_layout_constant(
    step: &Step,
    k: OpId,
    what: &str,
    recorded: impl Fn(&DivConstants) -> Option<Dy>,
    weights: &Dy,
) -> Result<(), CertifyError> {
    let layout = &step.ctx.layout;
    let dc = layout.div_constants.iter().find(|c| c.layer == step.layer);
    match dc.map(recorded) {
        Some(Some(v)) if v == *weights => Ok(()),
        other => Err(step.err(
            Some(k),
            format!(
                "layout.json div_constants give {what} {:?} for this layer; the weights have \
                 {weights}",
                other.flatten().map(|v| v.to_string())
            ),
        )),
    }
}

/// Σ h_r² + L·eps over the rows outside the payload, rounded up: for the exact inputs (from
/// the rows' ranges: the layer's own bound) and perturbed by the rows' errors (end to end).
/// `Err(r)`: row r has no finite range.
fn r_max(ctx: &Ctx, eps: f64, state: &[RowState]) -> Result<(f64, f64), Row> {
    let pl = ctx.layout.div_payload.expect("checked");
    let leps = mul_up(ctx.width as f64, eps);
    let (mut r_exact, mut r_pert) = (leps, leps);
    let mut unbounded = None;
    for (r, row) in state.iter().enumerate().take(ctx.width) {
        let r = Row(r);
        if r == pl[0] || r == pl[1] {
            continue;
        }
        let b = ctx.content_range(&row.content).abs_max();
        if !b.is_finite() && unbounded.is_none() {
            unbounded = Some(r);
        }
        r_exact = add_up(r_exact, mul_up(b, b));
        let be = add_up(b, row.err);
        r_pert = add_up(r_pert, mul_up(be, be));
    }
    match unbounded {
        Some(r) => Err(r),
        None => Ok((r_exact, r_pert)),
    }
}

/// Certify the division of layer `l` (its two halves already checked exactly), record the bound
/// in `cert`, and write the destination rows with their end-to-end error into `state`.
pub fn certify_division(
    ctx: &Ctx,
    l: Layer,
    prep: &PrepInfo,
    apply: &ApplyInfo,
    state: &mut [RowState],
    cert: &mut LayerCertificate,
) -> Result<(), CertifyError> {
    let p = ctx.p;
    let k = apply.op;
    let fail = |m: String| ctx.op_err(l, Part::Mlp, Some(k), m);
    if prep.op != k {
        return Err(fail(format!(
            "the attention half of this layer prepares `{}`, the MLP half applies another division",
            p.ops[prep.op].text
        )));
    }
    let OpKind::Div { den, .. } = p.ops[k].kind else {
        unreachable!("checked by check_placements")
    };
    let (r_exact, r_pert) = r_max(ctx, apply.eps, state).map_err(|r| {
        fail(format!(
            "cannot bound the LayerNorm division: {} has no finite range (state input ranges \
             with `assume`)",
            ctx.content_name(r, &state[r].content)
        ))
    })?;
    let den_range = ctx.content_range(&state[ctx.row(den, 0)].content);
    let eps = relative_bound(
        &prep.scale,
        &apply.gain,
        ctx.width,
        r_exact,
        den_range.abs_min(),
    )
    .ok_or_else(|| {
        fail(format!(
            "cannot bound the LayerNorm division: den's range {den_range} is not bounded \
                 away from 0"
        ))
    })?;
    record(ctx, k, prep, apply, (eps, den_range, r_exact), cert);
    write_result(ctx, k, prep, apply, (r_pert, den_range.abs_min()), state);
    Ok(())
}

/// The layer's certificate: bounded, with ε, den's range, R, the assumptions on den and a note
/// on the construction.
fn record(
    ctx: &Ctx,
    k: OpId,
    prep: &PrepInfo,
    apply: &ApplyInfo,
    (eps, den_range, r_exact): (f64, Interval, f64),
    cert: &mut LayerCertificate,
) {
    let p = ctx.p;
    let OpKind::Div { den, .. } = p.ops[k].kind else {
        unreachable!("checked by check_placements")
    };
    let pl = ctx.layout.div_payload.expect("checked");
    let w = ctx.width;
    cert.verdict = Verdict::Bounded;
    cert.relative_error = Some(eps);
    cert.ranges.insert(
        p.reg(den).name.clone(),
        RangeValue::Interval([ExtF64(den_range.lo), ExtF64(den_range.hi)]),
    );
    cert.ranges
        .insert("R".into(), RangeValue::Value(ExtF64(r_exact)));
    cert.assumptions = p.assumptions_on(den).map(|a| a.text.clone()).collect();
    cert.note = Some(format!(
        "LayerNorm division `{}`: payload ±P·{} in rows {}, {} with P = {}, gain g = {}, width {w}; \
         relative error ≤ |g²·L/(2P²) − 1| + (1+δ)·R/(4P²·den_min²)",
        p.ops[k].text,
        p.reg(den).name,
        pl[0],
        pl[1],
        prep.scale,
        apply.gain
    ));
}

/// Write the division's destination into `state` with its end-to-end error: the model's den is
/// within e_den of the program's, so |deñ| ≥ den_min − e_den, and
/// |ñ/|d̃| − n/|d|| ≤ e_num/|d̃| + |n|·e_den/(|d|·|d̃|); the division's own relative error (with
/// R perturbed by the rows' errors) multiplies the result's range.
fn write_result(
    ctx: &Ctx,
    k: OpId,
    prep: &PrepInfo,
    apply: &ApplyInfo,
    (r_pert, den_min): (f64, f64),
    state: &mut [RowState],
) {
    let p = ctx.p;
    let OpKind::Div { dst, num, den } = p.ops[k].kind else {
        unreachable!("checked by check_placements")
    };
    let e_den = state[ctx.row(den, 0)].err;
    let dmin_p = {
        let d = den_min - e_den;
        if e_den > 0.0 {
            d.next_down()
        } else {
            d
        }
    };
    let eps_p = relative_bound(&prep.scale, &apply.gain, ctx.width, r_pert, dmin_p)
        .unwrap_or(f64::INFINITY);
    let after = ctx.ranges.before_op(k.next(), dst);
    for e in 0..p.reg(dst).shape.size() {
        let rn = ctx.row(num, e);
        let e_num = state[rn].err;
        let n_max = ctx.content_range(&state[rn].content).abs_max();
        let e_prop = if dmin_p > 0.0 {
            add_up(
                div_up(e_num, dmin_p),
                div_up(mul_up(n_max, e_den), (den_min * dmin_p).next_down()),
            )
        } else {
            f64::INFINITY
        };
        let q_max = after
            .and_then(|v| v.get(e))
            .map(|iv| iv.abs_max())
            .unwrap_or(f64::INFINITY);
        let err = add_up(e_prop, mul_up(add_up(q_max, e_prop), eps_p));
        state[ctx.row(dst, e)] = RowState {
            content: Content::Val {
                reg: dst,
                elem: e,
                ver: Some(k),
            },
            err,
        };
    }
}
