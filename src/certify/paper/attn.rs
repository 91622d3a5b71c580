//! The `paper` target's attention step: patterns from the scores ([`super::scores`]), the normal
//! form shared with the exact target ([`crate::certify::attn::check_attention_forms`]), and the
//! error this step adds (docs/PAPER_TARGET.md §1 and §4).
//!
//! Per inner index j of head h, with V_j = Σ_c |W_V[j,c]|·(M_c + e_c) + |b_V[j]| bounding its
//! value (M the program's range of a row, e its error so far) and n_j its non-zeros:
//! - the value projection rounds by at most ρ_j = γ_{n_j+1}·V_j;
//! - the softmax weights p̂ (exp within one ulp, a sum of at most T+1 terms, a division) are
//!   within γ_{T+6} of the exact ones in relative terms, so Σ_s |p̂_s − p_s| ≤ γ_{T+6};
//! - the exact softmax puts at most L_h (the leak) outside the attended keys, where the value
//!   differs from the attended mean by at most 2V_j;
//! - the weighted sum rounds by γ_{T+1}·Σ p̂_s|v̂_s|.
//!
//! So |ô_j − mean_attended(v_j(ĥ))| ≤ E_j = ρ_j + (γ_{T+6} + γ_{T+1}(1+γ_{T+6}))·V̂_j + 2L_h·V_j,
//! V̂_j = V_j(1 + γ_{n_j+1}). The output row r = Σ_j W_O[r,j]·ô_j + b_O[r] then errs by
//! Σ_j|W_O[r,j]|·E_j plus its own γ_{m_r+1}·(Σ_j |W_O[r,j]|(V̂_j + E_j) + |b_O[r]|), and the
//! residual sum by u·|h_new|. The error of the exact mean itself (the operand's error) is what
//! the normal form's `advance` carries: a `mov` gets its source's error.

use super::super::bound::{add_up, mul_up};
use super::super::state::{Ctx, RowState};
use super::super::weights::Stored;
use super::rounding::gamma;
use crate::model::config::AttnConfig;
use crate::model::schema::Attention;

/// Error the attention adds to each row (0 where W_O's row is empty), from a bound `mag(r)` on
/// every row's |value| before the step (range plus error), each head's leak, and the dtype's
/// unit roundoff `u`.
pub fn attention_errors(
    ctx: &Ctx,
    ac: &AttnConfig,
    aw: &Attention<Stored>,
    mag: &dyn Fn(usize) -> f64,
    leaks: &[f64],
    u: f64,
) -> Vec<f64> {
    let width = ctx.width;
    let hd = ac.head_dim;
    let inner = ac.heads * hd;
    let t = ctx.cols;
    let g_soft = gamma(t + 6, u);
    let g_sum = gamma(t + 1, u);
    let mut v_hat = vec![0.0; inner];
    let mut e = vec![0.0; inner];
    for j in 0..inner {
        let mut v = aw.v.bias.data[j].abs();
        let mut nnz = usize::from(aw.v.bias.data[j] != 0.0);
        for r in 0..width {
            let w = aw.v.weight.data[j * width + r];
            if w != 0.0 {
                v = add_up(v, mul_up(w.abs(), mag(r)));
                nnz += 1;
            }
        }
        let g_v = gamma(nnz + 1, u);
        let rho = mul_up(g_v, v);
        v_hat[j] = add_up(v, rho);
        let weights = mul_up(add_up(g_soft, mul_up(g_sum, add_up(1.0, g_soft))), v_hat[j]);
        let leak = mul_up(2.0 * leaks[j / hd], v);
        e[j] = add_up(add_up(rho, weights), leak);
    }
    (0..width)
        .map(|r| {
            let (mut prop, mut size, mut nnz) = (0.0, aw.o.bias.data[r].abs(), 0usize);
            for j in 0..inner {
                let w = aw.o.weight.data[r * inner + j];
                if w != 0.0 {
                    prop = add_up(prop, mul_up(w.abs(), e[j]));
                    size = add_up(size, mul_up(w.abs(), add_up(v_hat[j], e[j])));
                    nnz += 1;
                }
            }
            if nnz == 0 {
                return 0.0;
            }
            add_up(prop, mul_up(gamma(nnz + 1, u), size))
        })
        .collect()
}

/// The residual sum's rounding, u·|h_new| ≤ u·(M + e)·(1+2u), added to every row the step
/// changed (`changed[r]`); `mag(r)` bounds the new |value| before this term.
pub fn add_residual_rounding(
    state: &mut [RowState],
    mag: &dyn Fn(usize, &RowState) -> f64,
    changed: &[bool],
    u: f64,
) {
    for (r, st) in state.iter_mut().enumerate() {
        if changed[r] {
            let m = mag(r, st);
            st.err = add_up(st.err, mul_up(mul_up(u, m), 1.0 + 2.0 * u));
        }
    }
}
