//! End-to-end error propagation: a bound on |model value − program value| per row, carried
//! through the schedule alongside the symbolic contents. Exact parts add no error of their own;
//! only LayerNorm divisions do (see [`super::div`]). Arithmetic on the bounds rounds upward, so
//! each bound is ≥ the exact real quantity it stands for.

use super::{Ctx, RowState};
use crate::ir::{OpId, OpKind};
use crate::layout::Row;

/// a + b rounded up (a, b ≥ 0).
pub fn add_up(a: f64, b: f64) -> f64 {
    let s = a + b;
    if s.is_finite() && s != 0.0 {
        s.next_up()
    } else {
        s
    }
}

/// a · b rounded up (a, b ≥ 0); 0 · ∞ = 0 (a zero factor is exactly zero).
pub fn mul_up(a: f64, b: f64) -> f64 {
    if a == 0.0 || b == 0.0 {
        return 0.0;
    }
    let s = a * b;
    if s.is_finite() {
        s.next_up()
    } else {
        s
    }
}

/// a / b rounded up (a ≥ 0, b > 0).
pub fn div_up(a: f64, b: f64) -> f64 {
    if a == 0.0 {
        return 0.0;
    }
    let s = a / b;
    if s.is_finite() {
        s.next_up()
    } else {
        s
    }
}

/// Error bound of every element an exact MLP operation (mul, aff) writes, from its operands'
/// rows in `state` (the MLP input):
/// - mul: |Ã·B̃ − A·B|_{ik} ≤ Σ_j |A_ij|·eB_jk + eA_ij·|B_jk| + eA_ij·eB_jk;
/// - aff: |Σ C·s̃ − Σ C·s| ≤ Σ |C|·e_s.
///
/// |A|, |B| are the program's ranges of the values the rows hold.
pub fn op_error(ctx: &Ctx, k: OpId, state: &[RowState]) -> Vec<f64> {
    let p = ctx.p;
    let absmax = |r: Row| ctx.content_range(&state[r].content).abs_max();
    match &p.ops[k].kind {
        OpKind::Mul { a, b, .. } => {
            let (sa, sb) = (p.operand_shape(*a), p.operand_shape(*b));
            let mut out = Vec::with_capacity(sa.rows * sb.cols);
            for i in 0..sa.rows {
                for kk in 0..sb.cols {
                    let mut acc = 0.0;
                    for j in 0..sa.cols {
                        let ra = ctx.operand_row(a.reg, a.transposed, i, j);
                        let rb = ctx.operand_row(b.reg, b.transposed, j, kk);
                        let (ea, eb) = (state[ra].err, state[rb].err);
                        if ea == 0.0 && eb == 0.0 {
                            continue;
                        }
                        acc = add_up(acc, mul_up(absmax(ra), eb));
                        acc = add_up(acc, mul_up(ea, absmax(rb)));
                        acc = add_up(acc, mul_up(ea, eb));
                    }
                    out.push(acc);
                }
            }
            out
        }
        OpKind::Aff { dst, terms, .. } => {
            let nd = p.reg(*dst).shape.size();
            (0..nd)
                .map(|e| {
                    p.aff_coefficients(terms, e)
                        .fold(0.0, |acc, (_, reg, elem, c)| {
                            add_up(acc, mul_up(c.abs(), state[ctx.row(reg, elem)].err))
                        })
                })
                .collect()
        }
        _ => vec![0.0; p.reg(p.ops[k].kind.dst()).shape.size()],
    }
}
