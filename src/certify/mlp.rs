//! Bilinear MLP normal form.
//!
//! `out = down · ((G m + b_g) ⊙ (U m + b_u)) + b_d`, so output row r is the polynomial
//!   out_r = Σ_k D[r,k] (G_k·m + b_g,k)(U_k·m + b_u,k) + b_d,r
//!         = Σ_{i≤j} Q_r[i,j] m_i m_j + Σ_i L_r[i] m_i + c_r,
//! with (symmetrized) Q_r[i,j] = Σ_k D[r,k](G_ki U_kj + G_kj U_ki) for i < j,
//! Q_r[i,i] = Σ_k D[r,k] G_ki U_ki, L_r[i] = Σ_k D[r,k](b_u,k G_ki + b_g,k U_ki),
//! c_r = Σ_k D[r,k] b_g,k b_u,k + b_d,r. Monomials are distinct functions, so two MLPs compute
//! the same function iff these coefficients agree.
//! Expected, per operation (the MLP adds to the residual h, so a write subtracts the old dst):
//! - `mul dst <- A * B`: row dst(i,k) = Σ_j m_{A(i,j)} m_{B(j,k)} − m_{dst(i,k)};
//! - `aff dst <- Σ C·src + b`: row dst_e = Σ C[e,j] m_{src_j} + b_e − m_{dst_e};
//! - the MLP half of `div` (after a LayerNorm with weight 1, bias 0): row dst_e =
//!   g·m_{num_e} − g·m_{zero_row} (dst was cleared by the attention half).
//!
//! Every other row: identically 0.
//!
//! [`check_mlp`] derives the polynomials from the weights ([`derive`]), builds the expected ones
//! from the placed operations ([`expected`]) and compares them row by row
//! ([`super::coeffs::compare`]).

use super::coeffs::{add, compare, Coeffs};
use super::div::check_layout_constant;
use super::error::{CertifyError, Part};
use super::exact::Dy;
use super::state::{check_operand, Content, Ctx, RowState, Step};
use super::structure::check_disjoint;
use super::weights::Stored;
use crate::ir::{AffTerm, OpId, OpKind, Operand, RegId};
use crate::layout::{DivConstants, Layer, OpPart, PlacedOp, Row};
use crate::model::config::{MlpConfig, MlpKind, NormConfig};
use crate::model::schema::{Linear, Mlp, Norm};

/// A term of a quadratic polynomial in the MLP input m, ordered for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Term {
    Const,
    Lin(u32),
    /// m_i m_j with i ≤ j.
    Quad(u32, u32),
}

/// A quadratic polynomial in the MLP input m.
pub type Poly = Coeffs<Term>;

pub(crate) fn lin(i: Row) -> Term {
    Term::Lin(i.index() as u32)
}

pub(crate) fn quad(i: Row, j: Row) -> Term {
    Term::Quad(i.min(j).index() as u32, i.max(j).index() as u32)
}

/// The polynomials of an MLP's output, one per hidden row.
impl std::ops::Index<Row> for [Poly] {
    type Output = Poly;
    fn index(&self, r: Row) -> &Poly {
        &self[r.index()]
    }
}

impl std::ops::IndexMut<Row> for [Poly] {
    fn index_mut(&mut self, r: Row) -> &mut Poly {
        &mut self[r.index()]
    }
}

/// What the MLP half of a division leaves for the bound.
#[derive(Debug, Clone)]
pub struct ApplyInfo {
    pub op: OpId,
    pub gain: Dy,
    pub eps: f64,
}

/// Check layer `l`'s MLP against its placed operations and advance `state` (except for a
/// division's destination, which [`super::div`] writes with its error bound): derive the
/// polynomials from the weights, build the expected ones from the operations, compare row by
/// row.
pub fn check_mlp(
    ctx: &Ctx,
    l: Layer,
    mc: &MlpConfig,
    mw: &Mlp<Stored>,
    norm: Option<(&NormConfig, &Norm<Stored>)>,
    ops: &[PlacedOp],
    state: &mut [RowState],
) -> Result<Option<ApplyInfo>, CertifyError> {
    let step = Step::new(ctx, l, Part::Mlp, ops);
    let gate = match (&mw.gate, mc.kind) {
        (Some(gate), MlpKind::Bilinear) => gate,
        _ => {
            return Err(ctx.op_err(
                l,
                Part::Layer,
                step.first_op(),
                "GeLU MLP — no exact normal form; use the paper target's bounds".into(),
            ))
        }
    };
    check_norm(&step, norm)?;
    check_disjoint(ctx, l, step.part, ops)?;
    check_inputs(&step, state)?;
    let derived = derive(ctx.width, gate, &mw.up, &mw.down)?;
    let expected = expected(&step, &derived, norm.map(|n| n.0.eps).unwrap_or(0.0))?;
    compare_rows(&step, &derived, &expected.rows, state)?;
    advance(ctx, ops, state);
    Ok(expected.apply)
}

/// A LayerNorm on the MLP input goes with a division (and only then): the division is the
/// MLP's only operation, eps ≥ 0, and the norm has weight 1 and bias 0.
fn check_norm(step: &Step, norm: Option<(&NormConfig, &Norm<Stored>)>) -> Result<(), CertifyError> {
    let div_op = step
        .ops
        .iter()
        .find(|o| o.part == OpPart::DivApply)
        .map(|o| o.op);
    match (norm, div_op) {
        (Some((nc, nw)), Some(k)) => {
            if step.ops.len() != 1 {
                return Err(step.err(
                    Some(k),
                    "a LayerNorm division must be the only operation of its MLP (the others \
                     would read normalized values)"
                        .into(),
                ));
            }
            if !(nc.eps >= 0.0 && nc.eps.is_finite()) {
                return Err(step.err(Some(k), format!("LayerNorm eps {}", nc.eps)));
            }
            let (w, b) = (&nw.weight.data, &nw.bias.data);
            if let Some(r) = (0..step.ctx.width).find(|&r| w[r] != 1.0 || b[r] != 0.0) {
                return Err(step.err(
                    Some(k),
                    format!(
                        "LayerNorm row {r}: weight {}, bias {}; the division needs weight 1, \
                         bias 0",
                        w[r], b[r]
                    ),
                ));
            }
            Ok(())
        }
        (Some(_), None) => Err(step.ctx.op_err(
            step.layer,
            Part::Layer,
            step.first_op(),
            "a LayerNorm on the MLP input, but no division in this layer: its operations would \
             read normalized values"
                .into(),
        )),
        (None, Some(k)) => Err(step.err(
            Some(k),
            "the MLP half of a division needs a LayerNorm on this layer's MLP input".into(),
        )),
        (None, None) => Ok(()),
    }
}

/// Every operand holds the version the program reads; a division's MLP half also needs the
/// LayerNorm input its attention half left: dst cleared, payload ±P·den of this division, the
/// zero row 0.
fn check_inputs(step: &Step, state: &[RowState]) -> Result<(), CertifyError> {
    let (ctx, l, part) = (step.ctx, step.layer, step.part);
    for po in step.ops {
        let k = po.op;
        match &ctx.p.ops[k].kind {
            OpKind::Mul { a, b, .. } => {
                check_operand(ctx, l, part, k, a.reg, state)?;
                check_operand(ctx, l, part, k, b.reg, state)?;
            }
            OpKind::Aff { terms, .. } => {
                for t in terms {
                    check_operand(ctx, l, part, k, t.src.reg, state)?;
                }
            }
            OpKind::Div { dst, num, .. } => {
                check_operand(ctx, l, part, k, *num, state)?;
                let pl = ctx.layout.div_payload.expect("checked by check_disjoint");
                let mut need: Vec<(Row, Content)> =
                    ctx.rows(*dst).map(|r| (r, Content::Cleared(k))).collect();
                need.push((pl[0], Content::Payload(k)));
                need.push((pl[1], Content::Payload(k)));
                need.push((ctx.layout.zero_row, Content::Zero));
                if let Some((r, c)) = need.into_iter().find(|(r, c)| state[*r].content != *c) {
                    return Err(step.err(
                        Some(k),
                        format!(
                            "the LayerNorm division needs {} here, found {}",
                            ctx.content_name(r, &c),
                            ctx.content_name(r, &state[r].content)
                        ),
                    ));
                }
            }
            OpKind::Mov { .. } => unreachable!("checked by check_placements"),
        }
    }
    Ok(())
}

/// The polynomial of every output row (module comment): per hidden unit k, the product
/// (G_k·m + b_g,k)(U_k·m + b_u,k) = Σ G_ki U_kj m_i m_j + Σ (b_u,k G_ki + b_g,k U_ki) m_i +
/// b_g,k b_u,k, added to row r with weight D[r,k]; then the down bias b_d,r.
fn derive(
    width: usize,
    gate: &Linear<Stored>,
    up: &Linear<Stored>,
    down: &Linear<Stored>,
) -> Result<Vec<Poly>, CertifyError> {
    let (g, u) = (gate.weight.sparse_rows()?, up.weight.sparse_rows()?);
    let (bg, bu) = (gate.bias.exact_vec()?, up.bias.exact_vec()?);
    let dcols = down.weight.sparse_cols()?;
    let mut derived: Vec<Poly> = vec![Poly::new(); width];
    for (k, dk) in dcols.iter().enumerate().filter(|(_, d)| !d.is_empty()) {
        let mut unit = Poly::new();
        for (i, gi) in &g[k] {
            for (j, uj) in &u[k] {
                add(&mut unit, quad(Row(*i), Row(*j)), &gi.mul(uj));
            }
        }
        if !bu[k].is_zero() {
            for (i, gi) in &g[k] {
                add(&mut unit, lin(Row(*i)), &bu[k].mul(gi));
            }
        }
        if !bg[k].is_zero() {
            for (j, uj) in &u[k] {
                add(&mut unit, lin(Row(*j)), &bg[k].mul(uj));
            }
        }
        add(&mut unit, Term::Const, &bg[k].mul(&bu[k]));
        for (r, dr) in dk {
            for (t, v) in unit.iter().filter(|(_, v)| !v.is_zero()) {
                add(&mut derived[*r], *t, &dr.mul(v));
            }
        }
    }
    for (r, b) in down.bias.exact_vec()?.iter().enumerate() {
        add(&mut derived[r], Term::Const, b);
    }
    Ok(derived)
}

/// The polynomials the step's operations call for, with what a division's MLP half leaves for
/// the bound.
struct Expected {
    rows: Vec<Poly>,
    apply: Option<ApplyInfo>,
}

/// The expected polynomials: every row 0, then per operation (the MLP adds to the residual h,
/// so a write subtracts the old dst) [`expect_mul`], [`expect_aff`], [`expect_div_apply`].
fn expected(step: &Step, derived: &[Poly], eps: f64) -> Result<Expected, CertifyError> {
    let ctx = step.ctx;
    let mut out = Expected {
        rows: vec![Poly::new(); ctx.width],
        apply: None,
    };
    for po in step.ops {
        let k = po.op;
        match &ctx.p.ops[k].kind {
            OpKind::Mul { dst, a, b } => expect_mul(ctx, *dst, a, b, &mut out.rows),
            OpKind::Aff { dst, terms, bias } => {
                expect_aff(step, k, *dst, terms, bias, &mut out.rows)?
            }
            OpKind::Div { dst, num, .. } => {
                let gain = expect_div_apply(step, k, *dst, *num, derived, &mut out.rows)?;
                out.apply = Some(ApplyInfo { op: k, gain, eps });
            }
            OpKind::Mov { .. } => unreachable!("checked by check_placements"),
        }
    }
    Ok(out)
}

/// `mul dst <- A * B`: row dst(i,k) = Σ_j m_{A(i,j)} m_{B(j,k)} − m_{dst(i,k)}.
pub(crate) fn expect_mul(ctx: &Ctx, dst: RegId, a: &Operand, b: &Operand, rows: &mut [Poly]) {
    let (sa, sb) = (ctx.p.operand_shape(*a), ctx.p.operand_shape(*b));
    for i in 0..sa.rows {
        for kk in 0..sb.cols {
            let rd = ctx.row(dst, i * sb.cols + kk);
            for j in 0..sa.cols {
                let ra = ctx.operand_row(a.reg, a.transposed, i, j);
                let rb = ctx.operand_row(b.reg, b.transposed, j, kk);
                add(&mut rows[rd], quad(ra, rb), &Dy::int(1));
            }
            add(&mut rows[rd], lin(rd), &Dy::int(-1));
        }
    }
}

/// `aff dst <- Σ C·src + b` (operation `k`): row dst_e = Σ C[e,j] m_{src_j} + b_e − m_{dst_e}.
pub(crate) fn expect_aff(
    step: &Step,
    k: OpId,
    dst: RegId,
    terms: &[AffTerm],
    bias: &[f64],
    rows: &mut [Poly],
) -> Result<(), CertifyError> {
    let ctx = step.ctx;
    let exact = |v: f64, what: &str| {
        Dy::from_f64(v).ok_or_else(|| step.err(Some(k), format!("{what} {v} is not finite")))
    };
    let nd = ctx.p.reg(dst).shape.size();
    for (e, &be) in bias.iter().enumerate().take(nd) {
        let rd = ctx.row(dst, e);
        for (_, reg, elem, c) in ctx.p.aff_coefficients(terms, e) {
            add(
                &mut rows[rd],
                lin(ctx.row(reg, elem)),
                &exact(c, "coefficient")?,
            );
        }
        add(&mut rows[rd], Term::Const, &exact(be, "bias")?);
        add(&mut rows[rd], lin(rd), &Dy::int(-1));
    }
    Ok(())
}

/// The MLP half of `div dst <- num / |den|` (operation `k`), after a LayerNorm with weight 1,
/// bias 0: row dst_e = g·m_{num_e} − g·m_{zero_row} (dst was cleared by the attention half).
/// The gain g is read from the weights (it must be positive and be layout.json's
/// gain·gain_up); the rest of the form is fixed by it. Returns g.
fn expect_div_apply(
    step: &Step,
    k: OpId,
    dst: RegId,
    num: RegId,
    derived: &[Poly],
    rows: &mut [Poly],
) -> Result<Dy, CertifyError> {
    let ctx = step.ctx;
    let gain = derived[ctx.row(dst, 0)]
        .get(&lin(ctx.row(num, 0)))
        .cloned()
        .unwrap_or_default();
    if !gain.is_positive() {
        let dst0 = Content::Val {
            reg: dst,
            elem: 0,
            ver: None,
        };
        return Err(step.err(
            Some(k),
            format!(
                "{} gets {gain}·LN(h)[{}]; the LayerNorm division needs a gain g > 0",
                ctx.content_name(ctx.row(dst, 0), &dst0),
                ctx.elem_name(num, 0)
            ),
        ));
    }
    let recorded = |c: &DivConstants| Some(Dy::from_f64(c.gain)?.mul(&Dy::from_f64(c.gain_up)?));
    check_layout_constant(step, k, "gain·gain_up", recorded, &gain)?;
    let zr = ctx.layout.zero_row;
    for e in 0..ctx.p.reg(dst).shape.size() {
        let rd = ctx.row(dst, e);
        add(&mut rows[rd], lin(ctx.row(num, e)), &gain);
        add(&mut rows[rd], lin(zr), &gain.neg());
    }
    Ok(gain)
}

/// Compare row by row, rows an operation of this layer writes first (the most specific
/// message), then the rest; within a row, the constant, linear and quadratic terms in order.
fn compare_rows(
    step: &Step,
    derived: &[Poly],
    expected: &[Poly],
    state: &[RowState],
) -> Result<(), CertifyError> {
    let ctx = step.ctx;
    let order = step.writer.keys().copied().chain(
        (0..ctx.width)
            .map(Row)
            .filter(|r| !step.writer.contains_key(r)),
    );
    let name = |i: u32| {
        let r = Row(i as usize);
        ctx.short_name(r, &state[r].content)
    };
    for r in order {
        compare(
            &derived[r],
            &expected[r],
            |_| (),
            |m, n| {
                let tname = match m.term {
                    Term::Const => "the constant term".to_string(),
                    Term::Lin(i) => format!("coefficient of {}", name(i)),
                    Term::Quad(i, j) if i == j => format!("coefficient of {}²", name(i)),
                    Term::Quad(i, j) => format!("coefficient of {}·{}", name(i), name(j)),
                };
                let rname = step.written_name(r).unwrap_or_else(|| {
                    format!(
                        "{} (written by no operation of this layer)",
                        ctx.content_name(r, &state[r].content)
                    )
                });
                let more = if n > 1 {
                    format!(" ({n} terms of this row differ)")
                } else {
                    String::new()
                };
                step.row_err(
                    r,
                    format!("{rname} {tname} is {}, expected {}{more}", m.got, m.want),
                )
            },
        )?;
    }
    Ok(())
}

/// Advance the symbolic state: every mul and aff writes its destination with the error
/// [`super::bound::op_error`] propagates (a division's destination is written by `div`).
fn advance(ctx: &Ctx, ops: &[PlacedOp], state: &mut [RowState]) {
    let errs: Vec<(OpId, Vec<f64>)> = ops
        .iter()
        .filter(|po| po.part == OpPart::Whole)
        .map(|po| (po.op, super::bound::op_error(ctx, po.op, state)))
        .collect();
    for (k, e) in errs {
        let dst = ctx.p.ops[k].kind.dst();
        for (i, err) in e.into_iter().enumerate() {
            state[ctx.row(dst, i)] = RowState {
                content: Content::Val {
                    reg: dst,
                    elem: i,
                    ver: Some(k),
                },
                err,
            };
        }
    }
}
