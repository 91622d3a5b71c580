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

use super::exact::Dy;
use super::{check_disjoint, check_operand, writer_of, CertifyError, Content, Ctx, Part, RowState};
use crate::ir::OpKind;
use crate::layout::{OpPart, PlacedOp};
use crate::model::config::{MlpConfig, MlpKind, NormConfig};
use std::collections::HashMap;

/// A quadratic polynomial in the MLP input m.
#[derive(Debug, Clone, Default)]
pub struct Poly {
    /// (i, j) with i ≤ j: coefficient of m_i m_j.
    pub quad: HashMap<(u32, u32), Dy>,
    pub lin: HashMap<u32, Dy>,
    pub c: Dy,
}

/// A term of a polynomial, ordered for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Term {
    Const,
    Lin(u32),
    Quad(u32, u32),
}

fn key(i: usize, j: usize) -> (u32, u32) {
    (i.min(j) as u32, i.max(j) as u32)
}

/// What the MLP half of a division leaves for the bound.
#[derive(Debug, Clone)]
pub struct ApplyInfo {
    pub op: usize,
    pub gain: Dy,
    pub eps: f64,
}

/// Check layer `l`'s MLP against its placed operations and advance `state` (except for a
/// division's destination, which [`super::div`] writes with its error bound).
pub fn check_mlp(
    ctx: &Ctx,
    l: usize,
    mc: &MlpConfig,
    norm: Option<&NormConfig>,
    ops: &[PlacedOp],
    state: &mut [RowState],
) -> Result<Option<ApplyInfo>, CertifyError> {
    let p = ctx.p;
    let w = ctx.width;
    let part = Part::Mlp;
    let first_op = ops.first().map(|o| o.op);
    if mc.kind == MlpKind::Gelu {
        return Err(ctx.op_err(
            l,
            Part::Layer,
            first_op,
            "GeLU MLP — no exact normal form; use the paper target's bounds".into(),
        ));
    }
    let pre = format!("layers.{l}");
    let div_op = ops
        .iter()
        .find(|o| o.part == OpPart::DivApply)
        .map(|o| o.op);
    match (norm, div_op) {
        (Some(nc), Some(k)) => {
            if ops.len() != 1 {
                return Err(ctx.op_err(
                    l,
                    part,
                    Some(k),
                    "a LayerNorm division must be the only operation of its MLP (the others \
                     would read normalized values)"
                        .into(),
                ));
            }
            if !(nc.eps >= 0.0 && nc.eps.is_finite()) {
                return Err(ctx.op_err(l, part, Some(k), format!("LayerNorm eps {}", nc.eps)));
            }
            let nw = ctx.tensor(&format!("{pre}.norm.weight"), &[w])?;
            let nb = ctx.tensor(&format!("{pre}.norm.bias"), &[w])?;
            for r in 0..w {
                if nw.data[r] != 1.0 || nb.data[r] != 0.0 {
                    return Err(ctx.op_err(
                        l,
                        part,
                        Some(k),
                        format!(
                            "LayerNorm row {r}: weight {}, bias {}; the division needs weight 1, \
                             bias 0",
                            nw.data[r], nb.data[r]
                        ),
                    ));
                }
            }
        }
        (Some(_), None) => {
            return Err(ctx.op_err(
                l,
                Part::Layer,
                first_op,
                "a LayerNorm on the MLP input, but no division in this layer: its operations \
                 would read normalized values"
                    .into(),
            ))
        }
        (None, Some(k)) => {
            return Err(ctx.op_err(
                l,
                part,
                Some(k),
                "the MLP half of a division needs a LayerNorm on this layer's MLP input".into(),
            ))
        }
        (None, None) => {}
    }
    check_disjoint(ctx, l, part, ops)?;
    for po in ops {
        let k = po.op;
        match &p.ops[k].kind {
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
                // The LayerNorm input: dst cleared, payload ±P·den of this division, zero row 0.
                let pl = ctx.layout.div_payload.expect("checked");
                let mut need: Vec<(usize, Content)> = (0..p.reg(*dst).shape.size())
                    .map(|e| (ctx.row(*dst, e), Content::Cleared(k)))
                    .collect();
                need.push((pl[0], Content::Payload(k)));
                need.push((pl[1], Content::Payload(k)));
                need.push((ctx.layout.zero_row, Content::Zero));
                for (r, c) in need {
                    if state[r].content != c {
                        return Err(ctx.op_err(
                            l,
                            part,
                            Some(k),
                            format!(
                                "the LayerNorm division needs {} here, found {}",
                                ctx.content_name(r, &c),
                                ctx.content_name(r, &state[r].content)
                            ),
                        ));
                    }
                }
            }
            OpKind::Mov { .. } => unreachable!("checked by check_placements"),
        }
    }

    let hidden = mc.hidden;
    let gw = ctx.tensor(&format!("{pre}.mlp.gate.weight"), &[hidden, w])?;
    let gb = ctx.tensor(&format!("{pre}.mlp.gate.bias"), &[hidden])?;
    let uw = ctx.tensor(&format!("{pre}.mlp.up.weight"), &[hidden, w])?;
    let ub = ctx.tensor(&format!("{pre}.mlp.up.bias"), &[hidden])?;
    let dw = ctx.tensor(&format!("{pre}.mlp.down.weight"), &[w, hidden])?;
    let db = ctx.tensor(&format!("{pre}.mlp.down.bias"), &[w])?;
    let g = super::sparse_rows(&format!("{pre}.mlp.gate.weight"), gw)?;
    let u = super::sparse_rows(&format!("{pre}.mlp.up.weight"), uw)?;
    let bg = super::exact_vec(&format!("{pre}.mlp.gate.bias"), gb)?;
    let bu = super::exact_vec(&format!("{pre}.mlp.up.bias"), ub)?;
    let bd = super::exact_vec(&format!("{pre}.mlp.down.bias"), db)?;
    let mut dcols: Vec<Vec<(usize, Dy)>> = vec![Vec::new(); hidden];
    for (r, row) in super::sparse_rows(&format!("{pre}.mlp.down.weight"), dw)?
        .into_iter()
        .enumerate()
    {
        for (k, v) in row {
            dcols[k].push((r, v));
        }
    }

    // Derived polynomials.
    let mut derived: Vec<Poly> = vec![Poly::default(); w];
    for k in 0..hidden {
        if dcols[k].is_empty() {
            continue;
        }
        let mut qk: HashMap<(u32, u32), Dy> = HashMap::new();
        for (i, gi) in &g[k] {
            for (j, uj) in &u[k] {
                qk.entry(key(*i, *j)).or_default().add_assign(&gi.mul(uj));
            }
        }
        let mut lk: HashMap<u32, Dy> = HashMap::new();
        if !bu[k].is_zero() {
            for (i, gi) in &g[k] {
                lk.entry(*i as u32).or_default().add_assign(&bu[k].mul(gi));
            }
        }
        if !bg[k].is_zero() {
            for (j, uj) in &u[k] {
                lk.entry(*j as u32).or_default().add_assign(&bg[k].mul(uj));
            }
        }
        let ck = bg[k].mul(&bu[k]);
        for (r, dr) in &dcols[k] {
            let poly = &mut derived[*r];
            for (kk, v) in &qk {
                if !v.is_zero() {
                    poly.quad.entry(*kk).or_default().add_assign(&dr.mul(v));
                }
            }
            for (kk, v) in &lk {
                if !v.is_zero() {
                    poly.lin.entry(*kk).or_default().add_assign(&dr.mul(v));
                }
            }
            poly.c.add_assign(&dr.mul(&ck));
        }
    }
    for (r, b) in bd.iter().enumerate() {
        derived[r].c.add_assign(b);
    }

    // Expected polynomials.
    let mut expected: Vec<Poly> = vec![Poly::default(); w];
    let mut apply = None;
    for po in ops {
        let k = po.op;
        match &p.ops[k].kind {
            OpKind::Mul { dst, a, b } => {
                let (sa, sb) = (p.operand_shape(*a), p.operand_shape(*b));
                for i in 0..sa.rows {
                    for kk in 0..sb.cols {
                        let rd = ctx.row(*dst, i * sb.cols + kk);
                        let poly = &mut expected[rd];
                        for j in 0..sa.cols {
                            let ra = ctx.operand_row(a.reg, a.transposed, i, j);
                            let rb = ctx.operand_row(b.reg, b.transposed, j, kk);
                            poly.quad
                                .entry(key(ra, rb))
                                .or_default()
                                .add_assign(&Dy::int(1));
                        }
                        poly.lin
                            .entry(rd as u32)
                            .or_default()
                            .add_assign(&Dy::int(-1));
                    }
                }
            }
            OpKind::Aff { dst, terms, bias } => {
                let nd = p.reg(*dst).shape.size();
                for (e, &be) in bias.iter().enumerate().take(nd) {
                    let rd = ctx.row(*dst, e);
                    let poly = &mut expected[rd];
                    for (_, reg, elem, c) in p.aff_coefficients(terms, e) {
                        let cd = Dy::from_f64(c).ok_or_else(|| {
                            ctx.op_err(l, part, Some(k), format!("coefficient {c} is not finite"))
                        })?;
                        let rs = ctx.row(reg, elem);
                        poly.lin.entry(rs as u32).or_default().add_assign(&cd);
                    }
                    let bdy = Dy::from_f64(be).ok_or_else(|| {
                        ctx.op_err(l, part, Some(k), format!("bias {be} is not finite"))
                    })?;
                    poly.c.add_assign(&bdy);
                    poly.lin
                        .entry(rd as u32)
                        .or_default()
                        .add_assign(&Dy::int(-1));
                }
            }
            OpKind::Div { dst, num, .. } => {
                let zr = ctx.layout.zero_row;
                let gain = derived[ctx.row(*dst, 0)]
                    .lin
                    .get(&(ctx.row(*num, 0) as u32))
                    .cloned()
                    .unwrap_or_default();
                if !gain.is_positive() {
                    return Err(ctx.op_err(
                        l,
                        part,
                        Some(k),
                        format!(
                            "{} gets {gain}·LN(h)[{}]; the LayerNorm division needs a gain g > 0",
                            ctx.content_name(
                                ctx.row(*dst, 0),
                                &Content::Val {
                                    reg: *dst,
                                    elem: 0,
                                    ver: None
                                }
                            ),
                            ctx.elem_name(*num, 0)
                        ),
                    ));
                }
                let dc = ctx.layout.div_constants.iter().find(|c| c.layer == l);
                let layout_gain = |c: &crate::layout::DivConstants| {
                    Some(Dy::from_f64(c.gain)?.mul(&Dy::from_f64(c.gain_up)?))
                };
                match dc.map(layout_gain) {
                    Some(Some(v)) if v == gain => {}
                    other => {
                        return Err(ctx.op_err(
                            l,
                            part,
                            Some(k),
                            format!(
                                "layout.json div_constants give gain·gain_up {:?} for this \
                                 layer; the weights have {gain}",
                                other.flatten().map(|v| v.to_string())
                            ),
                        ))
                    }
                }
                for e in 0..p.reg(*dst).shape.size() {
                    let poly = &mut expected[ctx.row(*dst, e)];
                    poly.lin
                        .entry(ctx.row(*num, e) as u32)
                        .or_default()
                        .add_assign(&gain);
                    poly.lin
                        .entry(zr as u32)
                        .or_default()
                        .add_assign(&gain.neg());
                }
                apply = Some(ApplyInfo {
                    op: k,
                    gain,
                    eps: norm.map(|n| n.eps).unwrap_or(0.0),
                });
            }
            OpKind::Mov { .. } => unreachable!(),
        }
    }

    // Compare.
    let writer = writer_of(ctx, ops);
    // Rows an operation of this layer writes first (the most specific message), then the rest.
    let order: Vec<usize> = writer
        .keys()
        .copied()
        .chain((0..w).filter(|r| !writer.contains_key(r)))
        .collect();
    for r in order {
        let (d, e) = (&derived[r], &expected[r]);
        let mut bad: Vec<(Term, Dy, Dy)> = Vec::new();
        if d.c != e.c {
            bad.push((Term::Const, d.c.clone(), e.c.clone()));
        }
        for (i, dv) in &d.lin {
            let ev = e.lin.get(i).cloned().unwrap_or_default();
            if *dv != ev {
                bad.push((Term::Lin(*i), dv.clone(), ev));
            }
        }
        for (i, ev) in &e.lin {
            if !d.lin.contains_key(i) && !ev.is_zero() {
                bad.push((Term::Lin(*i), Dy::zero(), ev.clone()));
            }
        }
        for (ij, dv) in &d.quad {
            let ev = e.quad.get(ij).cloned().unwrap_or_default();
            if *dv != ev {
                bad.push((Term::Quad(ij.0, ij.1), dv.clone(), ev));
            }
        }
        for (ij, ev) in &e.quad {
            if !d.quad.contains_key(ij) && !ev.is_zero() {
                bad.push((Term::Quad(ij.0, ij.1), Dy::zero(), ev.clone()));
            }
        }
        if bad.is_empty() {
            continue;
        }
        bad.sort_by_key(|b| b.0);
        let (term, got, want) = &bad[0];
        let name = |i: u32| short_name(ctx, i as usize, &state[i as usize].content);
        let tname = match term {
            Term::Const => "the constant term".to_string(),
            Term::Lin(i) => format!("coefficient of {}", name(*i)),
            Term::Quad(i, j) if i == j => format!("coefficient of {}²", name(*i)),
            Term::Quad(i, j) => format!("coefficient of {}·{}", name(*i), name(*j)),
        };
        let rname = match writer.get(&r) {
            Some(&k) => {
                let dst = p.ops[k].kind.dst();
                format!("row {r} ({})", ctx.elem_name(dst, r - ctx.start[dst]))
            }
            None => format!(
                "{} (written by no operation of this layer)",
                ctx.content_name(r, &state[r].content)
            ),
        };
        let more = if bad.len() > 1 {
            format!(" ({} terms of this row differ)", bad.len())
        } else {
            String::new()
        };
        return Err(ctx.op_err(
            l,
            part,
            writer.get(&r).copied(),
            format!("{rname} {tname} is {got}, expected {want}{more}"),
        ));
    }

    // Advance the symbolic state (a division's destination is written by `div`).
    let errs: Vec<(usize, Vec<f64>)> = ops
        .iter()
        .filter(|po| po.part == OpPart::Whole)
        .map(|po| (po.op, super::bound::op_error(ctx, po.op, state)))
        .collect();
    for (k, e) in errs {
        let dst = p.ops[k].kind.dst();
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
    Ok(apply)
}

/// Short name of what row r holds, for monomials: `A[2,1]`, `x[0]`, `one`, `row 7`.
fn short_name(ctx: &Ctx, r: usize, c: &Content) -> String {
    match c {
        Content::Val { reg, elem, .. } => ctx.elem_name(*reg, *elem),
        Content::Builtin(b, e) if b.shape(ctx.p.d).is_scalar() => {
            let _ = e;
            b.name().to_string()
        }
        Content::Builtin(b, e) => format!("{}[{e}]", b.name()),
        Content::Zero if r == ctx.layout.zero_row => format!("zero row {r}"),
        Content::Zero => format!("row {r} (unused)"),
        Content::Cleared(_) => format!("row {r} (cleared)"),
        Content::Payload(_) => format!("payload row {r}"),
    }
}
