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
use super::super::bound::add_up;
use super::super::error::CertifyError;
use super::super::exact::Dy;
use super::super::state::{Content, RowState, Step};
use super::super::weights::Stored;
use super::rounding::exp_neg_upper;
use crate::model::config::{AttnConfig, DType};
use crate::model::schema::Attention;

/// A head's attention matrix and its leak bound.
#[derive(Debug, Clone)]
pub struct HeadPattern {
    pub key: PatKey,
    /// max_t L_t: the total weight on keys outside the attended set.
    pub leak: f64,
    /// Smallest gap between the attended keys' score and the next (None: every key attended).
    pub gap: Option<f64>,
}

/// One inner index of a Q or K projection: its non-zero weights (row, value) and its bias.
type ProjRow = (Vec<(usize, f64)>, f64);

/// q or k of one head at one column: `W·h_t + b` over the head's inner indices, exactly.
fn projection(
    step: &Step,
    rows: &[ProjRow],
    t: usize,
    state: &[RowState],
    code_scale: usize,
    bits: u32,
    what: &str,
) -> Result<Vec<f64>, CertifyError> {
    let mut out = Vec::with_capacity(rows.len());
    for (i, (weights, bias)) in rows.iter().enumerate() {
        let mut terms = vec![*bias];
        for &(r, wv) in weights {
            let st = &state[r];
            let Content::Code(code) = st.content else {
                return Err(step.err(
                    step.first_op(),
                    format!(
                        "the {what} weight [{i}, {r}] = {wv} reads {}, which is not a position \
                         code: the scores would depend on the prompt",
                        step.ctx.content_name(crate::layout::Row(r), &st.content)
                    ),
                ));
            };
            let v = code.value(t, code_scale);
            let p = exact_mul(wv, v).ok_or_else(|| {
                step.err(
                    step.first_op(),
                    format!("the {what} term {wv}·{v} at column {t} is not exact in f64"),
                )
            })?;
            terms.push(p);
        }
        out.push(exact_sum(step, &terms, bits, &|| {
            format!("{what} {i} at column {t}")
        })?);
    }
    Ok(out)
}

/// The non-zero weights and the bias of inner indices `inner` of a projection.
fn proj_rows(w: &Stored, b: &Stored, inner: std::ops::Range<usize>, width: usize) -> Vec<ProjRow> {
    inner
        .map(|i| {
            let weights = (0..width)
                .filter_map(|r| {
                    let v = w.data[i * width + r];
                    (v != 0.0).then_some((r, v))
                })
                .collect();
            (weights, b.data[i])
        })
        .collect()
}

/// x = m·2^e with m odd: e (x finite, non-zero).
fn low_exponent(x: f64) -> i64 {
    let b = x.to_bits();
    let exp = ((b >> 52) & 0x7ff) as i64;
    let frac = b & ((1u64 << 52) - 1);
    let (mant, e) = if exp == 0 {
        (frac, -1074)
    } else {
        (frac | (1u64 << 52), exp - 1075)
    };
    e + mant.trailing_zeros() as i64
}

/// a·b when the double product is exact (checked by a fused multiply-add: the rounding error
/// of a·b is exactly fma(a, b, −fl(a·b))).
fn exact_mul(a: f64, b: f64) -> Option<f64> {
    let p = a * b;
    (p.is_finite() && a.mul_add(b, -p) == 0.0).then_some(p)
}

/// The exact sum of `terms` (exact doubles), with the proof that any floating-point evaluation
/// of it in a `bits`-bit significand is exact: every term is a multiple of 2^f (f the smallest
/// exponent of their lowest set bits), so is every partial sum, and Σ|terms| < 2^(bits+f)
/// bounds every partial sum's magnitude — each is then representable (terms of more than
/// `bits` bits are caught by the same test).
fn exact_sum(
    step: &Step,
    terms: &[f64],
    bits: u32,
    what: &dyn Fn() -> String,
) -> Result<f64, CertifyError> {
    let nz = || terms.iter().copied().filter(|t| *t != 0.0);
    let Some(f) = nz().map(low_exponent).min() else {
        return Ok(0.0);
    };
    let abs = nz().fold(0.0, |a, t| add_up(a, t.abs()));
    let limit = ((bits as i64 + f) as f64).exp2();
    if abs.is_nan() || abs >= limit {
        return Err(step.err(
            step.first_op(),
            format!(
                "{}: the partial sums (up to {abs:e}) are not exact in {bits} bits, so the \
                 scores could round",
                what()
            ),
        ));
    }
    // Exact: every partial sum is representable in 53 ≥ bits bits.
    Ok(nz().sum())
}

/// Patterns already derived, by the head's Q/K weights (rows and values).
pub type PatternCache = std::collections::HashMap<String, HeadPattern>;

/// Every head's pattern and leak, from its Q/K weights and the code rows in `state`.
pub fn head_patterns(
    step: &Step,
    ac: &AttnConfig,
    aw: &Attention<Stored>,
    state: &[RowState],
    code_scale: usize,
    dtype: DType,
    cache: &mut PatternCache,
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
    let inv_root = 1.0 / root;
    let cols = step.ctx.cols;
    let width = step.ctx.width;
    let mut out = Vec::with_capacity(ac.heads);
    for h in 0..ac.heads {
        let inner = h * hd..(h + 1) * hd;
        let qrows = proj_rows(&wq.weight, &wq.bias, inner.clone(), width);
        let krows = proj_rows(&wk.weight, &wk.bias, inner, width);
        // Heads with the same Q/K weights on the same code rows have the same pattern (the
        // code rows hold the same values in every layer): computed once per model.
        let cache_key = (qrows.clone(), krows.clone());
        let ckey = format!("{cache_key:?}");
        if let Some(hp) = cache.get(&ckey) {
            let ok_rows = qrows
                .iter()
                .chain(&krows)
                .flat_map(|(w, _)| w)
                .all(|&(r, _)| matches!(state[r].content, Content::Code(_)));
            if ok_rows {
                out.push(hp.clone());
                continue;
            }
        }
        let mut ks = Vec::with_capacity(cols);
        for s in 0..cols {
            ks.push(projection(step, &krows, s, state, code_scale, bits, "key")?);
        }
        let mut key = Vec::with_capacity(cols);
        let (mut leak, mut min_gap): (f64, Option<f64>) = (0.0, None);
        for t in 0..cols {
            let q = projection(step, &qrows, t, state, code_scale, bits, "query")?;
            // Scores of keys 0..=t, then the null key (score 0).
            let mut scores = Vec::with_capacity(t + 2);
            for k in ks.iter().take(t + 1) {
                let mut terms = Vec::with_capacity(q.len());
                for (a, b) in q.iter().zip(k) {
                    terms.push(exact_mul(*a, *b).ok_or_else(|| {
                        step.err(
                            step.first_op(),
                            format!("head {h}: q·k term {a}·{b} is not exact"),
                        )
                    })?);
                }
                let dot = exact_sum(step, &terms, bits, &|| format!("head {h} score ({t}, ·)"))?;
                // Division by √head_dim, a power of two: exact.
                scores.push(dot * inv_root);
            }
            scores.push(0.0);
            let best = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
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
                    .copied()
                    .filter(|s| *s != best)
                    .fold(f64::NEG_INFINITY, f64::max);
                let gap = Dy::from_f64(best)
                    .expect("finite")
                    .sub(&Dy::from_f64(next).expect("finite"));
                let e = exp_neg_upper(gap.to_f64().next_down());
                let l = e * others as f64 / m as f64;
                leak = leak.max(l * (1.0 + 1e-15));
                let g = gap.to_f64();
                min_gap = Some(min_gap.map_or(g, |x: f64| x.min(g)));
            }
        }
        let hp = HeadPattern {
            key,
            leak,
            gap: min_gap,
        };
        cache.insert(ckey, hp.clone());
        out.push(hp);
    }
    Ok(out)
}
