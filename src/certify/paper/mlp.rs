//! The `paper` target's MLP step, `h ← h + W₂·gelu(W₁·LN(h) + b₁) + b₂` (docs/PAPER_TARGET.md
//! §2–§4), certified from the weights.
//!
//! **The LayerNorm read.** LN has weight 1 and bias 0. Every unit's row of W₁ is zero on the
//! large rows (the bypass rows ±N, or in a division layer the payload rows ±P·den), and
//! s_k = Σ_r W₁[k,r] is its row sum (0 when the zero row cancels it). With L = width = 2k² and
//! G = N/k (P/k), G/σ = 1/√(1+x) where σ² = (Σ_r (h_r − μ)² )/L + eps and x ∈ [x_lo, x_hi]
//! from the other rows' magnitudes; so unit k computes z_k = s·c_k·ĥ + b_k (+ rounding δz_k),
//! c_k = W₁[k,·]/G, s = (G/σ̂)·(in a division) 1/|den|·… within ε_s of 1 (or of 1/|den|).
//!
//! **The normal form.** g(z) = z/2 + κz² + ρ(z), κ = 1/√(2π), ρ ∈ [−z⁴/(6√(2π)), 0] even. So
//! out_r = Σ_k W₂[r,k]·g(z_k) + b₂[r] = lin_r·y + const_r + κ·quad_r(y) + Σ_k W₂[r,k]ρ(z_k) at
//! y = s·ĥ, with lin_r = Σ_k W₂[r,k]c_k/2, const_r = Σ_k W₂[r,k]b_k/2 + b₂[r],
//! quad_r = Σ_k W₂[r,k](c_k·y)² — exact dyadics. The terms κ·2b_k c_k and κ·b_k² must vanish
//! (they do for pairs g(z) − g(−z)). lin and const must equal the operations' exactly;
//! κ·quad must equal their products up to a relative δ_q computed with an enclosure of κ, and
//! must be 0 where they have none. Pairs (units k, k' with c, b and W₂ columns exactly negated)
//! have no remainder: ρ(z) − ρ(−z) = 0.
//!
//! **The error of row r** (see [`row_error`]): propagation of the inputs' errors and of s ≠ 1
//! through the operation, δ_q times the products, the remainder Σ_{k unpaired}|W₂[r,k]|·Z_k⁴/(6√(2π)),
//! the pre-activation rounding through g (|g'| ≤ min(1/2 + 0.8|z|, 1.13)), the GeLU's own
//! rounding ([`super::rounding::gelu_error`]), the down projection's γ, and the residual sum.

use super::super::bound::{add_up, div_up, mul_up};
use super::super::coeffs::{add, diff};
use super::super::error::{CertifyError, Part};
use super::super::exact::Dy;
use super::super::mlp::{expect_aff, expect_mul, lin, Poly, Term};
use super::super::state::{check_operand, Code, Content, Ctx, RowState, Step};
use super::super::structure::check_disjoint;
use super::super::weights::Stored;
use super::rounding::{gamma, gelu_error, gelu_remainder, gelu_slope, kappa};
use crate::ir::{OpId, OpKind};
use crate::layout::{Layer, PlacedOp, Row};
use crate::model::config::{Activation, MlpConfig, MlpKind, NormConfig};
use crate::model::schema::{Mlp, Norm};
use std::collections::HashMap;

/// What the LayerNorm of this MLP is dominated by.
#[derive(Debug, Clone)]
pub enum Mode {
    /// The bypass rows hold ±n; unit weights are `gain`·(the form read), gain = n/k.
    Bypass { n: f64, gain: Dy },
    /// A division: the payload rows hold ±p·den (den ∈ [den_min, den_max] in absolute value,
    /// each payload row within `payload_err` of its value); gain = p/k.
    Division {
        op: OpId,
        p: f64,
        gain: Dy,
        den_min: f64,
        den_max: f64,
        payload_err: f64,
    },
}

/// What the step reports for the certificate.
#[derive(Debug, Clone, Default)]
pub struct MlpFigures {
    /// Bound on |G/σ̂ − 1| (relative error of every read through the LayerNorm).
    pub read_error: f64,
    /// Largest relative error of a product coefficient (κ·quad against 1).
    pub coefficient_error: f64,
    /// Largest error bound over the rows an operation writes, after the step.
    pub max_written_error: f64,
}

/// One unit: its form c (over rows), bias, row sum of W₁, non-zero count, and whether it is in a
/// pair.
struct Unit {
    c: Vec<(usize, Dy)>,
    bias: Dy,
    row_sum: Dy,
    nnz: usize,
    paired: bool,
}

/// The bounds of the LayerNorm read (module comment), for the rows' magnitudes `mag`.
struct Read {
    /// |s − 1| ≤ eps_s (bypass) or |s·|den| − 1| ≤ eps_s (division).
    eps_s: f64,
    /// Scale from h units to z units: 1, or 1/den_min in a division.
    lambda: f64,
    /// Bound on |μ| + |μ̂ − μ|.
    mu: f64,
    /// 1/G in f64 (exact: G is a power of two).
    inv_gain: f64,
}

fn read_bounds(
    ctx: &Ctx,
    mode: &Mode,
    big: &[Row],
    eps: f64,
    mag: &dyn Fn(usize) -> f64,
    u: f64,
) -> Read {
    let l = ctx.width as f64;
    let (mut s2, mut a1) = (0.0, 0.0);
    for r in 0..ctx.width {
        if big.contains(&Row(r)) {
            continue;
        }
        let m = mag(r);
        s2 = add_up(s2, mul_up(m, m));
        a1 = add_up(a1, m);
    }
    let s2 = add_up(s2, mul_up(l, eps));
    let (base2, big_sum, x_lo, x_hi, lambda, resid, gain) = match mode {
        Mode::Bypass { n, gain } => {
            let base2 = 2.0 * n * n;
            (
                base2,
                2.0 * n,
                0.0,
                div_up(s2, base2.next_down()),
                1.0,
                0.0,
                gain,
            )
        }
        Mode::Division {
            p,
            gain,
            den_min,
            den_max,
            payload_err,
            ..
        } => {
            let q = (p * den_min).next_down();
            let alpha = div_up(*payload_err, q);
            let beta = add_up(2.0 * alpha, mul_up(alpha, alpha));
            let base2 = (2.0 * q * q).next_down();
            let big_sum = mul_up(2.0 * p * den_max, 1.0 + alpha);
            (
                base2,
                big_sum,
                -beta,
                add_up(beta, div_up(s2, base2)),
                1.0 / den_min,
                2.0 * payload_err,
                gain,
            )
        }
    };
    let mu = div_up(add_up(a1, resid), l);
    let total = add_up(a1, big_sum);
    let dmu = add_up(
        mul_up(gamma(ctx.width + 1, u), div_up(total, l)),
        mul_up(u, mu),
    );
    let theta = add_up(
        gamma(ctx.width + 8, u),
        div_up(mul_up(l, mul_up(dmu, dmu)), base2),
    );
    let ex = x_hi.max(-x_lo);
    if ex > 0.5 || theta > 0.25 {
        // The large rows no longer dominate σ (in a division: the divisor's error is too large
        // against its smallest value): no finite bound on what the step reads.
        return Read {
            eps_s: f64::INFINITY,
            lambda,
            mu: add_up(mu, dmu),
            inv_gain: 1.0 / gain.to_f64(),
        };
    }
    let a = mul_up(ex, add_up(0.5, ex));
    let eps_s = add_up(add_up(a, 2.0 * theta), mul_up(2.0 * a, theta));
    let inv_gain = 1.0 / gain.to_f64();
    Read {
        eps_s,
        lambda,
        mu: add_up(mu, dmu),
        inv_gain,
    }
}

/// The units, from W₁ and b₁ (`gain` G): c_k = W₁[k,·]/G, which must not read the large rows.
fn units(step: &Step, mw: &Mlp<Stored>, gain: &Dy, big: &[Row]) -> Result<Vec<Unit>, CertifyError> {
    let inv = Dy::from_f64(1.0 / gain.to_f64()).expect("finite");
    if inv.mul(gain) != Dy::int(1) {
        return Err(step.err(
            step.first_op(),
            format!("the LayerNorm gain {gain} is not a power of two"),
        ));
    }
    let rows = mw.up.weight.sparse_rows()?;
    let bias = mw.up.bias.exact_vec()?;
    let mut out = Vec::with_capacity(rows.len());
    for (k, (row, b)) in rows.into_iter().zip(bias).enumerate() {
        let mut row_sum = Dy::zero();
        for (r, w) in &row {
            if big.contains(&Row(*r)) {
                return Err(step.err(
                    step.first_op(),
                    format!(
                        "{}[{k}, {r}] = {}: unit {k} reads a LayerNorm bypass or payload row",
                        mw.up.weight.name,
                        w.to_f64()
                    ),
                ));
            }
            row_sum.add_assign(w);
        }
        let nnz = row.len() + usize::from(!b.is_zero());
        out.push(Unit {
            c: row.into_iter().map(|(r, w)| (r, w.mul(&inv))).collect(),
            bias: b,
            row_sum,
            nnz,
            paired: false,
        });
    }
    Ok(out)
}

/// A unit's form and bias, exactly.
type FormKey = (Vec<(usize, Dy)>, Dy);

/// Marks every pair: units k, k' with c_k' = −c_k, b_k' = −b_k and W₂[·,k'] = −W₂[·,k].
fn mark_pairs(units: &mut [Unit], down_cols: &[Vec<(usize, Dy)>]) {
    let key = |c: &[(usize, Dy)], b: &Dy| -> FormKey { (c.to_vec(), b.clone()) };
    let mut by_form: HashMap<FormKey, Vec<usize>> = HashMap::new();
    for (k, unit) in units.iter().enumerate() {
        by_form.entry(key(&unit.c, &unit.bias)).or_default().push(k);
    }
    for k in 0..units.len() {
        if units[k].paired || down_cols[k].is_empty() {
            continue;
        }
        let neg_c: Vec<(usize, Dy)> = units[k].c.iter().map(|(r, v)| (*r, v.neg())).collect();
        let neg_down: Vec<(usize, Dy)> = down_cols[k].iter().map(|(r, v)| (*r, v.neg())).collect();
        if let Some(cands) = by_form.get(&(neg_c, units[k].bias.neg())) {
            if let Some(&k2) = cands
                .iter()
                .find(|&&k2| k2 != k && !units[k2].paired && down_cols[k2] == neg_down)
            {
                units[k].paired = true;
                units[k2].paired = true;
            }
        }
    }
}

/// The normal form of every output row: (lin + const, quad, κ-cross terms that must vanish).
struct Derived {
    lin: Vec<Poly>,
    quad: Vec<Poly>,
    cross: Vec<Poly>,
}

fn derive(units: &[Unit], down_rows: &[Vec<(usize, Dy)>], b2: &[Dy]) -> Derived {
    let width = down_rows.len();
    let half = Dy::from_f64(0.5).expect("finite");
    let two = Dy::int(2);
    let mut d = Derived {
        lin: vec![Poly::new(); width],
        quad: vec![Poly::new(); width],
        cross: vec![Poly::new(); width],
    };
    for (r, row) in down_rows.iter().enumerate() {
        if !b2[r].is_zero() {
            add(&mut d.lin[r], Term::Const, &b2[r]);
        }
        for (k, w) in row {
            let unit = &units[*k];
            let wh = w.mul(&half);
            for (i, c) in &unit.c {
                add(&mut d.lin[r], lin(Row(*i)), &wh.mul(c));
            }
            add(&mut d.lin[r], Term::Const, &wh.mul(&unit.bias));
            for (a, (i, ci)) in unit.c.iter().enumerate() {
                for (j, cj) in &unit.c[a..] {
                    let mut v = w.mul(ci).mul(cj);
                    if i != j {
                        v = v.mul(&two);
                    }
                    add(&mut d.quad[r], Term::Quad(*i as u32, *j as u32), &v);
                }
            }
            if !unit.bias.is_zero() {
                let wb = w.mul(&unit.bias);
                for (i, c) in &unit.c {
                    add(&mut d.cross[r], lin(Row(*i)), &wb.mul(c).mul(&two));
                }
                add(&mut d.cross[r], Term::Const, &wb.mul(&unit.bias));
            }
        }
        for p in [&mut d.lin[r], &mut d.quad[r], &mut d.cross[r]] {
            p.retain(|_, v| !v.is_zero());
        }
    }
    d
}

/// The expected residual form of every row: per op, its polynomial (mul, aff as in the exact
/// target; a division's dst_e = num_e, read divided by |den|), the bypass rows restored in a
/// division layer.
fn expected(step: &Step, mode: &Mode, bypass: [Row; 2]) -> Result<Vec<Poly>, CertifyError> {
    let ctx = step.ctx;
    let mut rows = vec![Poly::new(); ctx.width];
    for po in step.ops {
        let k = po.op;
        match &ctx.p.ops[k].kind {
            OpKind::Mul { dst, a, b } => expect_mul(ctx, *dst, a, b, &mut rows),
            OpKind::Aff { dst, terms, bias } => expect_aff(step, k, *dst, terms, bias, &mut rows)?,
            OpKind::Div { dst, num, .. } => {
                for e in 0..ctx.p.reg(*dst).shape.size() {
                    add(
                        &mut rows[ctx.row(*dst, e).index()],
                        lin(ctx.row(*num, e)),
                        &Dy::int(1),
                    );
                }
            }
            OpKind::Mov { .. } => unreachable!("checked by check_placements"),
        }
    }
    if let Mode::Division { p: _, .. } = mode {
        let n = bypass_n(ctx)?;
        add(&mut rows[bypass[0].index()], Term::Const, &n);
        add(&mut rows[bypass[1].index()], Term::Const, &n.neg());
    }
    Ok(rows)
}

fn bypass_n(ctx: &Ctx) -> Result<Dy, CertifyError> {
    let n = ctx
        .layout
        .paper
        .as_ref()
        .map_or(f64::NAN, |p| p.bypass_scale);
    Dy::from_f64(n).ok_or_else(|| CertifyError::new(Part::Layout, "no bypass scale"))
}

/// Splits an expected polynomial into its exact part (constant and linear) and its products.
fn split(p: &Poly) -> (Poly, Poly) {
    let (mut exact, mut products) = (Poly::new(), Poly::new());
    for (t, v) in p {
        match t {
            Term::Quad(..) => products.insert(*t, v.clone()),
            _ => exact.insert(*t, v.clone()),
        };
    }
    (exact, products)
}

/// Check the normal form of every row; returns per row δ_q (the products' relative coefficient
/// error, 0 without products) and the effect of linear coefficients the dtype rounded.
fn compare_forms(
    step: &Step,
    d: &Derived,
    want: &[Poly],
    state: &[RowState],
    mag: &dyn Fn(usize) -> f64,
    u: f64,
) -> Result<(Vec<f64>, Vec<f64>), CertifyError> {
    let ctx = step.ctx;
    let (k_lo, k_hi) = kappa();
    let name = |r: usize| {
        step.written_name(Row(r))
            .unwrap_or_else(|| ctx.content_name(Row(r), &state[r].content))
    };
    let term_name = |t: &Term| match t {
        Term::Const => "the constant".to_string(),
        Term::Lin(i) => ctx.short_name(Row(*i as usize), &state[*i as usize].content),
        Term::Quad(i, j) => format!(
            "{}·{}",
            ctx.short_name(Row(*i as usize), &state[*i as usize].content),
            ctx.short_name(Row(*j as usize), &state[*j as usize].content)
        ),
    };
    let mut dq: Vec<f64> = vec![0.0; ctx.width];
    let mut coef: Vec<f64> = vec![0.0; ctx.width];
    for r in 0..ctx.width {
        let (exact, products) = split(&want[r]);
        let bad = diff(&d.lin[r], &exact, |_| ());
        for m in &bad {
            // A coefficient the dtype cannot hold (0.02 in f32) is stored rounded: accept a
            // relative difference up to 2u and bound its effect; anything else is wrong.
            let (g, w) = (m.got.to_f64(), m.want.to_f64());
            let close = !m.want.is_zero() && (g - w).abs() <= 2.0 * u * w.abs();
            if close {
                let size = match m.term {
                    Term::Lin(i) => mag(i as usize),
                    _ => 1.0,
                };
                coef[r] = add_up(coef[r], mul_up((g - w).abs().next_up(), size));
                continue;
            }
            return Err(step.row_err(
                Row(r),
                format!(
                    "{} gets {} × {}, expected {}{}",
                    name(r),
                    m.got,
                    term_name(&m.term),
                    m.want,
                    if bad.len() > 1 {
                        format!(" ({} terms differ)", bad.len())
                    } else {
                        String::new()
                    }
                ),
            ));
        }
        if let Some((t, v)) = d.cross[r].iter().next() {
            return Err(step.row_err(
                Row(r),
                format!(
                    "{}: a unit with a bias is not cancelled by its pair (κ·{} × {} remains)",
                    name(r),
                    v,
                    term_name(t)
                ),
            ));
        }
        let mut terms: Vec<&Term> = d.quad[r].keys().chain(products.keys()).collect();
        terms.sort();
        terms.dedup();
        for t in terms {
            let got = d.quad[r].get(t).cloned().unwrap_or_default();
            let Some(e) = products.get(t) else {
                return Err(step.row_err(
                    Row(r),
                    format!(
                        "{} gets the product {} (coefficient κ·{got}), which no operation asks for",
                        name(r),
                        term_name(t)
                    ),
                ));
            };
            let rf = match (got.to_f64_exact(), e.to_f64_exact()) {
                // e is a small integer in practice: one division, rounded outward.
                (Some(g), Some(w)) if w != 0.0 => {
                    let r = g / w;
                    (r.next_down(), r.next_up())
                }
                _ => ratio_f64(&(got.to_rational() / e.to_rational())),
            };
            // κ·ratio ∈ [κ_lo·lo, κ_hi·hi] (both factors positive when it is near 1).
            let lo = (k_lo * rf.0).next_down();
            let hi = mul_up(k_hi, rf.1);
            let delta = (hi - 1.0).max(1.0 - lo).max(0.0).next_up();
            if delta.is_nan() || delta > 1.0 / 1024.0 {
                return Err(step.row_err(
                    Row(r),
                    format!(
                        "{} gets the product {} with coefficient κ·{} ≈ {:.6}, expected {} \
                         (the GeLU-product weights do not match)",
                        name(r),
                        term_name(t),
                        got,
                        k_lo * got.to_f64(),
                        e
                    ),
                ));
            }
            dq[r] = dq[r].max(delta);
        }
    }
    Ok((dq, coef))
}

/// An f64 enclosure [lo, hi] of a rational: the nearest doubles, moved outward until they are
/// provably below and above it.
fn ratio_f64(q: &num_rational::BigRational) -> (f64, f64) {
    use num_traits::ToPrimitive;
    let x = q.to_f64().unwrap_or(f64::NAN);
    let (mut lo, mut hi) = (x, x);
    let val = |v: f64| num_rational::BigRational::from_float(v);
    while lo.is_finite() && val(lo).is_none_or(|v| &v > q) {
        lo = lo.next_down();
    }
    while hi.is_finite() && val(hi).is_none_or(|v| &v < q) {
        hi = hi.next_up();
    }
    (lo, hi)
}

/// Check the norm: weight 1, bias 0, so LN(h) is the plain normalised column.
fn check_norm(step: &Step, n: &Norm<Stored>) -> Result<(), CertifyError> {
    for (t, want) in [(&n.weight, 1.0), (&n.bias, 0.0)] {
        if let Some(i) = t.data.iter().position(|v| *v != want) {
            return Err(step.err(
                step.first_op(),
                format!("{}[{i}] is {}, expected {want}", t.name, t.data[i]),
            ));
        }
    }
    Ok(())
}

/// Inputs of one MLP check.
pub struct MlpInput<'s, 'a> {
    pub mc: &'s MlpConfig,
    pub norm: (&'s NormConfig, &'s Norm<Stored<'a>>),
    pub mw: &'s Mlp<Stored<'a>>,
    pub ops: &'s [PlacedOp],
    pub mode: Mode,
    pub u: f64,
}

/// Check layer `l`'s MLP and advance `state` with the new contents and error bounds; `mag(r)`
/// bounds |value| of row r before the step (range plus error; payload rows ±P·den).
pub fn check_mlp(
    ctx: &Ctx,
    l: Layer,
    input: &MlpInput,
    state: &mut [RowState],
    mag: &dyn Fn(usize, &RowState) -> f64,
) -> Result<MlpFigures, CertifyError> {
    let step = Step::new(ctx, l, Part::Mlp, input.ops);
    check_disjoint(ctx, l, step.part, input.ops)?;
    if input.mc.kind != MlpKind::Gelu || input.mc.activation != Activation::Gelu {
        return Err(step.err(
            step.first_op(),
            "the paper target's MLP is a GeLU (erf) MLP".into(),
        ));
    }
    check_norm(&step, input.norm.1)?;
    for po in input.ops {
        let kind = &ctx.p.ops[po.op].kind;
        let reads = match kind {
            OpKind::Div { num, .. } => vec![*num],
            other => other.reads(),
        };
        for reg in reads {
            check_operand(ctx, l, step.part, po.op, reg, state)?;
        }
    }
    let paper = ctx.layout.paper.as_ref().expect("checked by the caller");
    let bypass = paper.bypass;
    let (gain, big): (Dy, Vec<Row>) = match &input.mode {
        Mode::Bypass { gain, .. } => (gain.clone(), bypass.to_vec()),
        Mode::Division { gain, .. } => {
            let mut big = ctx
                .layout
                .div_payload
                .map(|p| p.to_vec())
                .unwrap_or_default();
            big.extend(bypass);
            (gain.clone(), big)
        }
    };
    let before = state.to_vec();
    let magb = |r: usize| mag(r, &before[r]);
    let read = read_bounds(ctx, &input.mode, &big, input.norm.0.eps, &magb, input.u);
    let mut units = units(&step, input.mw, &gain, &big)?;
    let down_cols = input.mw.down.weight.sparse_cols()?;
    let down_rows = input.mw.down.weight.sparse_rows()?;
    let b2 = input.mw.down.bias.exact_vec()?;
    mark_pairs(&mut units, &down_cols);
    let mut d = derive(&units, &down_rows, &b2);
    // Rows that hold exactly 0 in every column (the zero row, unused rows) contribute nothing:
    // their monomials vanish identically.
    let zero = |i: &u32| {
        let st = &before[*i as usize];
        st.content == Content::Zero && st.err == 0.0
    };
    for p in d
        .lin
        .iter_mut()
        .chain(d.quad.iter_mut())
        .chain(d.cross.iter_mut())
    {
        p.retain(|t, _| match t {
            Term::Const => true,
            Term::Lin(i) => !zero(i),
            Term::Quad(i, j) => !zero(i) && !zero(j),
        });
    }
    let mut want = expected(&step, &input.mode, bypass)?;
    for p in want.iter_mut() {
        p.retain(|t, _| match t {
            Term::Const => true,
            Term::Lin(i) => !zero(i),
            Term::Quad(i, j) => !zero(i) && !zero(j),
        });
    }
    let (dq, coef) = compare_forms(&step, &d, &want, &before, &magb, input.u)?;
    let per_unit = unit_bounds(&units, &read, &magb, input.u, &gain);
    let mut figures = MlpFigures {
        read_error: read.eps_s,
        coefficient_error: dq.iter().copied().fold(0.0, f64::max),
        max_written_error: 0.0,
    };
    let writer = step.writer.clone();
    for r in 0..ctx.width {
        if down_rows[r].is_empty() {
            continue;
        }
        let local = row_local_error(&down_rows[r], &units, &per_unit, &b2[r], input.u);
        let quad_err = {
            let (_, products) = split(&want[r]);
            let mut acc = 0.0;
            for (t, e) in &products {
                if let Term::Quad(i, j) = t {
                    let yi = mul_up(1.0 + read.eps_s, magb(*i as usize));
                    let yj = mul_up(1.0 + read.eps_s, magb(*j as usize));
                    acc = add_up(acc, mul_up(e.to_f64().abs(), mul_up(yi, yj)));
                }
            }
            mul_up(dq[r], acc)
        };
        let prop = propagation(
            ctx,
            writer.get(&Row(r)).copied(),
            Row(r),
            &before,
            &read,
            &magb,
        );
        let own = add_up(add_up(quad_err, local), coef[r]);
        let err = add_up(prop, own);
        state[r].err = err;
        if writer.contains_key(&Row(r)) {
            figures.max_written_error = figures.max_written_error.max(err);
        }
    }
    advance(ctx, input.ops, &input.mode, bypass, state);
    let changed: Vec<bool> = down_rows.iter().map(|row| !row.is_empty()).collect();
    super::attn::add_residual_rounding(state, mag, &changed, input.u);
    Ok(figures)
}

/// Per unit: Z_k (bound on the exact pre-activation at y = s·ĥ), δz_k (its rounding) and
/// Ẑ_k = Z_k + δz_k.
struct UnitBound {
    z: f64,
    dz: f64,
    z_hat: f64,
}

fn unit_bounds(
    units: &[Unit],
    read: &Read,
    mag: &dyn Fn(usize) -> f64,
    u: f64,
    gain: &Dy,
) -> Vec<UnitBound> {
    let s_hi = 1.0 + read.eps_s;
    let scale = mul_up(s_hi, read.lambda);
    let g2 = gamma(2, u);
    let _ = gain;
    units
        .iter()
        .map(|unit| {
            let (mut zc, mut a) = (0.0, 0.0);
            for (r, c) in &unit.c {
                let c = c.to_f64().abs() * (1.0 + 1e-15);
                zc = add_up(zc, mul_up(c, mag(*r)));
                a = add_up(a, mul_up(c, add_up(mag(*r), read.mu)));
            }
            let b = unit.bias.to_f64().abs();
            let gk = gamma(unit.nnz + 1, u);
            let sum_term = mul_up(unit.row_sum.to_f64().abs() * read.inv_gain, read.mu);
            let inner = add_up(
                add_up(sum_term, mul_up(g2, a)),
                mul_up(mul_up(gk, 1.0 + g2), a),
            );
            let dz = add_up(mul_up(scale, inner), mul_up(gk, b));
            let z = add_up(mul_up(scale, zc), b);
            UnitBound {
                z,
                dz,
                z_hat: add_up(z, dz),
            }
        })
        .collect()
}

/// The error row r's MLP output adds beyond the propagated inputs: the Taylor remainder of its
/// unpaired units, the pre-activation rounding through g, the GeLU rounding, and the down
/// projection's rounding.
fn row_local_error(row: &[(usize, Dy)], units: &[Unit], ub: &[UnitBound], b2: &Dy, u: f64) -> f64 {
    let (mut rem, mut slope, mut gerr, mut size) = (0.0, 0.0, 0.0, b2.to_f64().abs());
    for (k, w) in row {
        let w = w.to_f64().abs() * (1.0 + 1e-15);
        let b = &ub[*k];
        if !units[*k].paired {
            rem = add_up(rem, mul_up(w, gelu_remainder(b.z)));
        }
        slope = add_up(slope, mul_up(w, mul_up(gelu_slope(b.z_hat), b.dz)));
        let ge = gelu_error(b.z_hat, u);
        gerr = add_up(gerr, mul_up(w, ge));
        size = add_up(size, mul_up(w, add_up(b.z_hat, ge)));
    }
    let down = mul_up(gamma(row.len() + 1, u), size);
    add_up(add_up(rem, slope), add_up(gerr, down))
}

/// How the operands' errors and the read factor s reach row r (module comment of
/// `row_error`): an unwritten row keeps its error; a write y = s·ĥ of `mul`/`aff` adds
/// |1 − s|·|ĥ_dst| (the overwrite) and the operation's sensitivity to y − h; a division's
/// quotient (e_num + ε_s·|num|)/den_min on top of what the cleared dst held.
fn propagation(
    ctx: &Ctx,
    writer: Option<OpId>,
    r: Row,
    before: &[RowState],
    read: &Read,
    mag: &dyn Fn(usize) -> f64,
) -> f64 {
    let Some(k) = writer else {
        return before[r.index()].err;
    };
    if !read.eps_s.is_finite() {
        return f64::INFINITY;
    }
    let p = ctx.p;
    let dy = |row: Row| {
        add_up(
            before[row.index()].err,
            mul_up(read.eps_s, mag(row.index())),
        )
    };
    let range = |row: Row| ctx.content_range(&before[row.index()].content).abs_max();
    match &p.ops[k].kind {
        OpKind::Aff { dst, terms, .. } => {
            let e = r - ctx.row(*dst, 0);
            let mut acc = mul_up(read.eps_s, mag(r.index()));
            for (_, reg, elem, c) in p.aff_coefficients(terms, e) {
                acc = add_up(acc, mul_up(c.abs(), dy(ctx.row(reg, elem))));
            }
            acc
        }
        OpKind::Mul { dst, a, b } => {
            let (sa, sb) = (p.operand_shape(*a), p.operand_shape(*b));
            let e = r - ctx.row(*dst, 0);
            let (i, kk) = (e / sb.cols, e % sb.cols);
            let mut acc = mul_up(read.eps_s, mag(r.index()));
            for j in 0..sa.cols {
                let ra = ctx.operand_row(a.reg, a.transposed, i, j);
                let rb = ctx.operand_row(b.reg, b.transposed, j, kk);
                let (da, db) = (dy(ra), dy(rb));
                acc = add_up(acc, mul_up(range(ra), db));
                acc = add_up(acc, mul_up(range(rb), da));
                acc = add_up(acc, mul_up(da, db));
            }
            acc
        }
        OpKind::Div { dst, num, .. } => {
            let e = r - ctx.row(*dst, 0);
            let rn = ctx.row(*num, e);
            add_up(before[r.index()].err, mul_up(read.lambda, dy(rn)))
        }
        OpKind::Mov { .. } => unreachable!("checked by check_placements"),
    }
}

/// The new contents: every written row holds its op's version; a division restores the bypass.
fn advance(ctx: &Ctx, ops: &[PlacedOp], mode: &Mode, bypass: [Row; 2], state: &mut [RowState]) {
    for po in ops {
        let k = po.op;
        let dst = ctx.p.ops[k].kind.dst();
        for e in 0..ctx.p.reg(dst).shape.size() {
            state[ctx.row(dst, e).index()].content = Content::Val {
                reg: dst,
                elem: e,
                ver: Some(k),
            };
        }
    }
    if let Mode::Division { .. } = mode {
        if let Some(paper) = ctx.layout.paper.as_ref() {
            let n = paper.bypass_scale;
            state[bypass[0].index()] = RowState {
                content: Content::Code(Code::Bypass(n)),
                err: 0.0,
            };
            state[bypass[1].index()] = RowState {
                content: Content::Code(Code::Bypass(-n)),
                err: 0.0,
            };
        }
    }
}
