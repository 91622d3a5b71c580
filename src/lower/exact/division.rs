//! The constants of a LayerNorm division (see [`super::div_apply`] for the construction and its
//! error): the payload scale P, chosen from the range analysis so that the relative error is
//! below the dtype's epsilon, and the MLP gain g·u ≈ P·√(2/L), searched so that both factors are
//! exact in the dtype and the gain's own rounding is far below epsilon.

use super::super::alloc::Allocation;
use super::super::schedule::Schedule;
use super::super::LowerError;
use super::elem_name;
use crate::ir::{Location, OpId, OpKind, Program, RegId};
use crate::layout::{Layer, Row};
use crate::model::config::DType;
use crate::ranges::Ranges;

/// The constants and bound of one LayerNorm division.
#[derive(Debug, Clone, PartialEq)]
pub struct DivReport {
    pub op: OpId,
    pub layer: Layer,
    pub text: String,
    pub at: Location,
    /// Payload scale P (a power of two).
    pub payload_scale: f64,
    /// MLP gain: gate weight g and up bias u (both exact in the dtype) with g·u ≈ P·√(2/L).
    pub gain: f64,
    pub gain_up: f64,
    /// Bound on Σ over non-payload rows of h_r².
    pub r_max: f64,
    /// `[min |den|, max |den|]` from the range analysis at this op.
    pub den_abs: [f64; 2],
    /// Bound on the relative error δ + (1+δ)·R_max/(4P²den_min²), δ = |(gu)²L/(2P²) − 1|.
    pub relative_error: f64,
    /// Name of the divisor register.
    pub den: String,
}

/// Largest |value| each hidden row can hold (payload rows: 0, they are excluded from R).
pub(in crate::lower) fn row_bounds(
    p: &Program,
    ranges: &Ranges,
    alloc: &Allocation,
) -> Vec<(f64, String)> {
    let mut b: Vec<(f64, String)> = vec![(0.0, String::new()); alloc.width];
    let mut put = |row: Row, v: f64, who: String| {
        let row = row.index();
        // NaN (never expected) counts as unbounded.
        let v = if v.is_nan() { f64::INFINITY } else { v };
        if v > b[row].0 || b[row].1.is_empty() {
            b[row] = (v.max(b[row].0), who);
        }
    };
    for &(_, reg, row) in &alloc.input_rows {
        let r = p.reg(reg);
        for (e, iv) in ranges.reg_hull(reg).iter().enumerate() {
            put(row + e, iv.abs_max(), elem_name(&r.name, r.shape, e));
        }
    }
    for w in &alloc.webs {
        let r = p.reg(w.reg);
        for (e, iv) in ranges.reg_hull(w.reg).iter().enumerate() {
            put(w.row + e, iv.abs_max(), elem_name(&r.name, r.shape, e));
        }
    }
    b
}

/// **Division constants**, one [`DivReport`] per `div` (see [`div_apply`] for the error
/// `δ + (1+δ)·R/(4P²den²)` they bound). R_max bounds R by Σ over non-payload rows of the square of
/// the largest |value| the row can hold (the maximum over every register that ever occupies it,
/// from the range analysis: `row_bounds`); P is the smallest power of two (≥ 1) with
/// `R_max/(4P²den_min²) ≤ eps/8`, and `division_gain` finds g·u with δ ≤ eps/16, so the relative
/// error stays below eps/4. Overflow: `Σ_r (h_r − μ)² ≤ L·(2M)²` with
/// `M = max(P·den_max, max_r bound_r)` must not exceed the dtype's largest finite value.
pub(super) fn division_constants(
    p: &Program,
    ranges: &Ranges,
    alloc: &Allocation,
    sched: &Schedule,
    dtype: DType,
) -> Result<Vec<DivReport>, LowerError> {
    let has_div = p.ops.iter().any(|o| matches!(o.kind, OpKind::Div { .. }));
    if !has_div {
        return Ok(Vec::new());
    }
    let bounds = row_bounds(p, ranges, alloc);
    let mut out = Vec::new();
    for (k, op) in p.ops.iter().enumerate() {
        if let OpKind::Div { den, .. } = op.kind {
            let at = DivSite {
                p,
                k: OpId(k),
                layer: Layer(sched.block_of[k]),
                den,
            };
            out.push(division_report(at, ranges, alloc, &bounds, dtype)?);
        }
    }
    Ok(out)
}

/// The `div` a [`division_report`] is for: op `k` of `p` in block `layer`, dividing by `den`.
#[derive(Clone, Copy)]
struct DivSite<'a> {
    p: &'a Program,
    k: OpId,
    layer: Layer,
    den: RegId,
}

impl DivSite<'_> {
    fn error(self, msg: String) -> LowerError {
        let op = &self.p.ops[self.k];
        LowerError::Division {
            at: self.p.location(op.span),
            op: self.k,
            text: op.text.clone(),
            msg,
        }
    }
}

/// The constants of one division (the derivation is on [`division_constants`]).
fn division_report(
    site: DivSite,
    ranges: &Ranges,
    alloc: &Allocation,
    bounds: &[(f64, String)],
    dtype: DType,
) -> Result<DivReport, LowerError> {
    let (p, den) = (site.p, site.den);
    let den_name = &p.reg(den).name;
    let (r_max, m_rows) = non_payload_bound(bounds, alloc.payload).map_err(|(row, who)| {
        site.error(format!(
            "the range analysis gives no finite bound for hidden row {row} (`{who}`), \
             and every row enters the LayerNorm; state its range with an assumption \
             (e.g. `assume {} in [lo, hi]`)",
            who.split('[').next().unwrap_or(who)
        ))
    })?;
    let den_iv = ranges
        .before_op(site.k, den)
        .and_then(|v| v.first().copied())
        .ok_or_else(|| site.error(format!("no range for the divisor `{den_name}`")))?;
    let (den_min, den_max) = (den_iv.abs_min(), den_iv.abs_max());
    if den_min <= 0.0 || !den_max.is_finite() {
        return Err(site.error(format!(
            "the divisor `{den_name}` has range {den_iv}; the payload needs 0 < |den| ≤ a finite \
             bound (state it, e.g. `assume {den_name} in [1, 1000]`)",
        )));
    }
    let eps = dtype.epsilon();
    let pp = payload_scale(r_max, den_min, eps).ok_or_else(|| {
        site.error(format!(
            "no finite payload scale: R_max = {r_max:e}, min |den| = {den_min:e}"
        ))
    })?;
    let l = alloc.width as f64;
    let max_finite = match dtype {
        DType::F32 => f32::MAX as f64,
        DType::F64 => f64::MAX,
    };
    let m = (pp * den_max).max(m_rows);
    let sum_sq = 4.0 * l * m * m;
    if !sum_sq.is_finite() || sum_sq > max_finite {
        return Err(site.error(format!(
            "the payload P·|den| ≤ {:e} (P = {pp:e} chosen for {} precision with \
             R_max = {r_max:e}, |den| ∈ [{den_min:e}, {den_max:e}]) can overflow the {} \
             LayerNorm variance ({} rows); tighten the ranges of the registers or of `{den_name}`",
            pp * den_max,
            dtype.name(),
            dtype.name(),
            alloc.width,
        )));
    }
    // The relative error is δ + (1+δ)·R_max/(4P²den_min²) — the bound the certifier proves.
    let (gain, gain_up, delta) = division_gain(pp, l, dtype);
    if delta > eps / 16.0 {
        return Err(site.error(format!(
            "no gate weight and up bias in {} whose product is within {:e} of P·√(2/L) \
             (best δ = {delta:e})",
            dtype.name(),
            eps / 16.0
        )));
    }
    let rel =
        (delta + (1.0 + delta) * (r_max / (4.0 * pp * pp * den_min * den_min)).next_up()).next_up();
    let op = &p.ops[site.k];
    Ok(DivReport {
        op: site.k,
        layer: site.layer,
        text: op.text.clone(),
        at: p.location(op.span),
        payload_scale: pp,
        gain,
        gain_up,
        r_max,
        den_abs: [den_min, den_max],
        relative_error: rel,
        den: den_name.clone(),
    })
}

/// `(R_max, max bound)` over the rows outside the payload: R_max = Σ bound_r², rounded upward.
/// A row without a finite bound is returned as the error, with its register's name.
pub(super) fn non_payload_bound(
    bounds: &[(f64, String)],
    payload: Option<[Row; 2]>,
) -> Result<(f64, f64), (Row, &str)> {
    let payload = payload.unwrap_or([Row(usize::MAX); 2]);
    let mut r_max = 0.0f64;
    let mut m_rows = 0.0f64;
    for (row, (v, who)) in bounds.iter().enumerate() {
        let row = Row(row);
        if payload.contains(&row) {
            continue;
        }
        if !v.is_finite() {
            return Err((row, who));
        }
        r_max = (r_max + (v * v).next_up()).next_up();
        m_rows = m_rows.max(*v);
    }
    Ok((r_max, m_rows))
}

/// Smallest P = 2^k ≥ 1 with R_max ≤ (eps/2)·P²·den_min² (⇔ R_max/(4P²den_min²) ≤ eps/8), or
/// `None` when no finite P reaches it.
pub(super) fn payload_scale(r_max: f64, den_min: f64, eps: f64) -> Option<f64> {
    let mut pp = 1.0f64;
    while r_max > 0.5 * eps * pp * pp * den_min * den_min {
        pp *= 2.0;
        if !pp.is_finite() {
            return None;
        }
    }
    Some(pp)
}

/// The division MLP's constants: gate weight g and up bias u with g·u as near P·√(2/L) as two
/// values of the dtype allow, and δ = |(g·u)²·L/(2P²) − 1| (exact, rounded up).
///
/// One stored value is off by up to half an ulp, which puts δ near the dtype's epsilon. Products
/// of two stored values are far denser: for u = 1 + k·2⁻²⁰ (exact in f32 and f64), g the dtype
/// values nearest P·√(2/L)/u; δ behaves like a fresh sample from [0, ~2 ulp) per try, so a few
/// hundred tries reach δ ≪ epsilon. Deterministic: the first pair with δ ≤ eps/1024, or the best.
pub(super) fn division_gain(pp: f64, l: f64, dtype: DType) -> (f64, f64, f64) {
    // The dtype's value nearest x and its two neighbours.
    let around = |x: f64| -> [f64; 3] {
        match dtype {
            DType::F64 => [x.next_down(), x, x.next_up()],
            DType::F32 => {
                let y = x as f32;
                [y.next_down() as f64, y as f64, y.next_up() as f64]
            }
        }
    };
    let target = pp * (2.0 / l).sqrt();
    let good = dtype.epsilon() / 1024.0;
    let mut best = (target, 1.0, f64::INFINITY);
    for k in 0..512u32 {
        let u = 1.0 + k as f64 / (1u64 << 20) as f64;
        for g in around(target / u) {
            let d = gain_delta(g, u, pp, l, false);
            if d < best.2 {
                best = (g, u, d);
            }
        }
        if best.2 <= good {
            break;
        }
    }
    let (g, u, _) = best;
    (g, u, gain_delta(g, u, pp, l, true))
}

/// δ = |(g·u)²·L/(2P²) − 1| in exact integer arithmetic (all four are dyadic): rounded up when
/// `exact`, else to about one ulp (for ranking candidates).
pub(super) fn gain_delta(g: f64, u: f64, pp: f64, l: f64, exact: bool) -> f64 {
    use num_bigint::BigInt;
    use num_rational::BigRational;
    use num_traits::{Signed, ToPrimitive};
    // x = m·2^e with an integer m (x > 0 and finite here).
    let split = |x: f64| {
        let (m, e, _) = num_traits::Float::integer_decode(x);
        (BigInt::from(m), e as i64)
    };
    let ((mg, eg), (mu, eu), (mp, ep), (ml, el)) = (split(g), split(u), split(pp), split(l));
    // (g·u)²·L / (2P²) = (mg·mu)²·ml / (2·mp²) · 2^s.
    let a = &mg * &mg * &mu * &mu * &ml;
    let b = BigInt::from(2) * &mp * &mp;
    let s = 2 * (eg + eu) + el - 2 * ep;
    let (a, b) = if s >= 0 {
        (a << s as usize, b)
    } else {
        (a, b << (-s) as usize)
    };
    let diff = (&a - &b).abs();
    // The quotient's f64 approximation ranks the candidates; an upper bound is needed only for
    // the one kept (`exact` = true), where the rational is reduced and rounded up.
    if !exact {
        return match (diff.to_f64(), b.to_f64()) {
            (Some(x), Some(y)) if y > 0.0 => x / y,
            _ => f64::INFINITY,
        };
    }
    let r = BigRational::new(diff, b);
    r.to_f64().map(f64::next_up).unwrap_or(f64::INFINITY)
}
