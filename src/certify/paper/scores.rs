//! Attention patterns of the `paper` target from the emitted Q/K weights (docs/PAPER_TARGET.md
//! §1). A head's queries and keys may read only position-code rows (whose values at every
//! column the embedding check proved), so its scores z(t, s) = (q_t·k_s)/√head_dim are the same
//! numbers in every prompt. They are computed here exactly, as dyadic rationals, together with a
//! proof that the model's floating-point computation of them is exact: every product and every
//! partial sum is a multiple of the finest grid of its terms and below 2^p times it (p the
//! dtype's precision), so no rounding can happen in any summation order.
//!
//! The attention matrix is then the argmax pattern: query t attends uniformly the keys of
//! largest score (the null key included when it ties), and every other key is a leak bounded by
//! L_t ≤ (#others)·e^{−gap_t}/m, gap_t the distance from the best score to the next, m the
//! number of best keys (each other key has weight e^{z_u − z*}/Σ ≤ e^{−gap}/m).

use super::super::attn::{PatKey, PatRow};
use super::super::error::CertifyError;
use super::super::exact::Dy;
use super::super::state::{Content, RowState, Step};
use super::super::weights::Stored;
use super::rounding::exp_neg_upper;
use crate::model::config::{AttnConfig, DType};
use crate::model::schema::Attention;

/// A head's attention matrix and its leak bound.
pub struct HeadPattern {
    pub key: PatKey,
    /// max_t L_t: the total weight on keys outside the attended set.
    pub leak: f64,
    /// Smallest gap between the attended keys' score and the next (None: every key attended).
    pub gap: Option<f64>,
}

/// q or k of one head at one column: `W·h_t + b` over the head's inner indices, exactly.
fn projection(
    step: &Step,
    w: &Stored,
    b: &Stored,
    inner: std::ops::Range<usize>,
    t: usize,
    state: &[RowState],
    code_value: &dyn Fn(&Content, usize) -> Option<Dy>,
    bits: u32,
    what: &str,
) -> Result<Vec<Dy>, CertifyError> {
    let mut out = Vec::with_capacity(inner.len());
    for i in inner {
        let mut terms = vec![Dy::from_f64(b.data[i]).expect("finite weights")];
        for (r, st) in state.iter().enumerate() {
            let wv = w.data[i * state.len() + r];
            if wv == 0.0 {
                continue;
            }
            let Some(v) = code_value(&st.content, t) else {
                return Err(step.err(
                    step.first_op(),
                    format!(
                        "{}[{i}, {r}] = {wv} makes the {what} read {}, which is not a position \
                         code: the scores would depend on the prompt",
                        w.name,
                        step.ctx.content_name(crate::layout::Row(r), &st.content)
                    ),
                ));
            };
            terms.push(Dy::from_f64(wv).expect("finite").mul(&v));
        }
        out.push(exact_sum(
            step,
            &terms,
            bits,
            &format!("{what} {i} at column {t}"),
        )?);
    }
    Ok(out)
}

/// The exact sum of `terms`, with the proof that any floating-point evaluation of it is exact:
/// each term representable, and Σ|terms| below 2^bits units of the finest term's last place.
fn exact_sum(step: &Step, terms: &[Dy], bits: u32, what: &str) -> Result<Dy, CertifyError> {
    let mut sum = Dy::zero();
    let mut abs = Dy::zero();
    let mut finest: Option<i64> = None;
    for t in terms.iter().filter(|t| !t.is_zero()) {
        let (m_bits, e) = t.mantissa_bits_and_exponent();
        if m_bits > bits as u64 {
            return Err(step.err(
                step.first_op(),
                format!("{what}: the term {t} is not representable in {bits} bits"),
            ));
        }
        finest = Some(finest.map_or(e, |f: i64| f.min(e)));
        sum.add_assign(t);
        abs.add_assign(&t.abs());
    }
    if let Some(f) = finest {
        if !abs.fits_grid(f, bits) {
            return Err(step.err(
                step.first_op(),
                format!(
                    "{what}: the partial sums (up to {}) are not exact in {bits} bits, so the \
                     scores could round",
                    abs.to_f64()
                ),
            ));
        }
    }
    Ok(sum)
}

/// Every head's pattern and leak, from its Q/K weights and the code rows in `state`.
pub fn head_patterns(
    step: &Step,
    ac: &AttnConfig,
    aw: &Attention<Stored>,
    state: &[RowState],
    code_scale: usize,
    dtype: DType,
) -> Result<Vec<HeadPattern>, CertifyError> {
    let (Some(wq), Some(wk)) = (&aw.q, &aw.k) else {
        return Err(step.err(step.first_op(), "attention without Q/K projections".into()));
    };
    let bits = match dtype {
        DType::F32 => 24,
        DType::F64 => 53,
    };
    let hd = ac.head_dim;
    let root = (hd as f64).sqrt();
    if root.fract() != 0.0 || !(root as u64).is_power_of_two() {
        return Err(step.err(
            step.first_op(),
            format!("head_dim {hd}: √head_dim must be a power of two for exact scores"),
        ));
    }
    let inv_root = Dy::from_f64(1.0 / root).expect("power of two");
    let code_value = |c: &Content, t: usize| -> Option<Dy> {
        match c {
            Content::Code(code) => Dy::from_f64(code.value(t, code_scale)),
            _ => None,
        }
    };
    let cols = step.ctx.cols;
    let mut out = Vec::with_capacity(ac.heads);
    for h in 0..ac.heads {
        let inner = h * hd..(h + 1) * hd;
        let mut ks = Vec::with_capacity(cols);
        for s in 0..cols {
            ks.push(projection(
                step,
                &wk.weight,
                &wk.bias,
                inner.clone(),
                s,
                state,
                &code_value,
                bits,
                "key",
            )?);
        }
        let mut key = Vec::with_capacity(cols);
        let (mut leak, mut min_gap): (f64, Option<f64>) = (0.0, None);
        for t in 0..cols {
            let q = projection(
                step,
                &wq.weight,
                &wq.bias,
                inner.clone(),
                t,
                state,
                &code_value,
                bits,
                "query",
            )?;
            // Scores of keys 0..=t, then the null key (score 0).
            let mut scores = Vec::with_capacity(t + 2);
            for k in ks.iter().take(t + 1) {
                let terms: Vec<Dy> = q.iter().zip(k).map(|(a, b)| a.mul(b)).collect();
                let dot = exact_sum(step, &terms, bits, &format!("head {h} score ({t}, ·)"))?;
                scores.push(dot.mul(&inv_root));
            }
            scores.push(Dy::zero());
            let best = scores
                .iter()
                .max_by(|a, b| a.cmp_value(b))
                .expect("non-empty")
                .clone();
            let attended: Vec<usize> = (0..scores.len()).filter(|&s| scores[s] == best).collect();
            let real: Vec<u32> = attended
                .iter()
                .filter(|&&s| s <= t)
                .map(|&s| s as u32)
                .collect();
            let m = attended.len();
            key.push(if real.is_empty() {
                (vec![], 0)
            } else {
                (real, m as u32)
            } as PatRow);
            let others = scores.len() - m;
            if others > 0 {
                let next = scores
                    .iter()
                    .filter(|s| **s != best)
                    .max_by(|a, b| a.cmp_value(b))
                    .expect("others exist");
                let gap = best.sub(next).to_rational();
                let l = exp_neg_upper(&gap) * others as f64 / m as f64;
                leak = leak.max(l * (1.0 + 1e-15));
                let g = best.sub(next).to_f64();
                min_gap = Some(min_gap.map_or(g, |x: f64| x.min(g)));
            }
        }
        out.push(HeadPattern {
            key,
            leak,
            gap: min_gap,
        });
    }
    Ok(out)
}
