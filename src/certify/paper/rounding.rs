//! Floating-point error terms of the `paper` target's forward pass (docs/PAPER_TARGET.md §4),
//! under the standard model: every IEEE operation is exact then rounded to nearest,
//! |fl(a ∘ b) − a ∘ b| ≤ u·|fl(a ∘ b)|, u = 2^-24 (f32) or 2^-53 (f64). Sums and dot products
//! of n non-zero terms, in any order (blocked, vectorised, with FMA), are within γ_n = n·u/(1−n·u)
//! of the exact sum relative to Σ|terms| (Higham, *Accuracy and Stability*, Lemma 3.1 and
//! §3.1): terms that are exactly 0 add nothing and round nothing, so n counts non-zeros.
//!
//! Two assumptions, stated in every certificate ([`ASSUMPTIONS`]): the libm `exp` and `erf`
//! (`expf`, `erff`) that Candle calls are within one ulp (a relative error ≤ 2u), as the musl /
//! FreeBSD implementations document; and nothing runs in reduced precision (no TF32 on a GPU).
//!
//! Every bound below is computed with upward rounding ([`super::super::bound::add_up`],
//! `mul_up`), so the f64 result is ≥ the real quantity it stands for.

use super::super::bound::{add_up, div_up, mul_up};
use super::super::sound;
use crate::model::config::DType;
use num_rational::BigRational;

pub const ASSUMPTIONS: &str = "floating-point: IEEE round-to-nearest in the model's dtype \
     (standard model |fl(x∘y) − x∘y| ≤ u·|fl(x∘y)|, sums of n non-zero terms within γ_n); libm \
     exp and erf within 1 ulp; no reduced-precision matmuls (TF32 off)";

/// Unit roundoff of a dtype.
pub fn unit(dtype: DType) -> f64 {
    dtype.epsilon() / 2.0
}

/// γ_n = n·u/(1 − n·u), rounded up (∞ when n·u ≥ 1).
pub fn gamma(n: usize, u: f64) -> f64 {
    let nu = mul_up(n as f64, u);
    if nu >= 1.0 {
        return f64::INFINITY;
    }
    div_up(nu, (1.0 - nu).next_down())
}

/// Upper bound on |g'(z)| = |Φ(z) + zφ(z)| for |z| ≤ Z: at most 1/2 + 2φ(0)·Z (Φ(z) − 1/2 and
/// zφ(z) are each at most φ(0)|z| in size), and at most 1.13 everywhere (the maximum, at
/// z = √2, is 1.1289).
pub fn gelu_slope(z: f64) -> f64 {
    add_up(0.5, mul_up(0.797_884_561, z)).min(1.13)
}

/// Error of Candle's GeLU `(erf(v·c) + 1)·0.5·v` (c = fl(1/√2)) at |v| ≤ V against g(v) =
/// v·Φ(v). With w = fl(v·c) = (v/√2)(1+δ₀)(1+δ₁) (|δ₀|, |δ₁| ≤ u: the constant and the
/// product), ê = erf(w)(1+δ_e) (|δ_e| ≤ 2u, one ulp), the sum and the last product rounded:
/// out = 0.5·v·(1 + erf(v/√2) + Δ)(1+δ₂)(1+δ₃), where
/// |Δ| ≤ 2u·|erf(w)| + |erf(w) − erf(v/√2)| ≤ 2u·min(1, √(2/π)V) + min(0.484, √(2/π)V)·γ₂·(1+γ₂)
/// (|erf z| ≤ min(1, 2|z|/√π); erf' = (2/√π)e^{−z²} and |z|e^{−z²} ≤ 1/√(2e)). Hence
/// |out − g(v)| ≤ 0.5·V·(2·γ₂ + |Δ|·(1 + γ₂)), since |1 + erf| ≤ 2.
pub fn gelu_error(v: f64, u: f64) -> f64 {
    let g2 = gamma(2, u);
    let s = mul_up(0.797_884_561, v);
    let delta = add_up(
        mul_up(2.0 * u, s.min(1.0)),
        mul_up(mul_up(s.min(0.484), g2), add_up(1.0, g2)),
    );
    mul_up(
        mul_up(0.5, v),
        add_up(mul_up(2.0, g2), mul_up(delta, add_up(1.0, g2))),
    )
}

/// Upper bound on the Taylor remainder ρ(z) = g(z) − z/2 − z²/√(2π) for |z| ≤ Z: ρ ∈
/// [−z⁴/(6√(2π)), 0], from g(z) − z/2 = (z/√(2π))∫₀^z e^{−t²/2}dt and 1 − t²/2 ≤ e^{−t²/2} ≤ 1.
/// ρ is even, so a pair g(z) − g(−z) has no remainder at all.
pub fn gelu_remainder(z: f64) -> f64 {
    let z2 = mul_up(z, z);
    mul_up(mul_up(z2, z2), 0.066_490_380) // 1/(6√(2π)) = 0.0664903801…, rounded up
}

/// κ = 1/√(2π), the quadratic Taylor coefficient of g, enclosed in f64: [lo, hi] from a
/// rational enclosure of π (Machin) and an integer square root (`sound`).
pub fn kappa() -> (f64, f64) {
    let bits = 80;
    let pi = sound::pi(bits);
    let two = BigRational::from_integer(2.into());
    let lo_root = sound::sqrt(&(&two * &pi.lo), bits).lo;
    let hi_root = sound::sqrt(&(&two * &pi.hi), bits).hi;
    let one = BigRational::from_integer(1.into());
    let e = sound::Enclosure {
        lo: &one / hi_root,
        hi: &one / lo_root,
    };
    e.to_f64()
}

/// Upper bound on e^{−g} for a gap g ≥ 0 (given as a double that is ≤ the real gap):
/// e^{−g} = 2^{−g·log₂e} ≤ 2^{−⌊g·L⌋} with L = fl(log₂e)·(1 − 10⁻¹²) < log₂e (fl(log₂e) is
/// within one ulp of it).
/// A power of two, so no rounding; at most twice the exact value.
pub fn exp_neg_upper(gap_lower: f64) -> f64 {
    if gap_lower.is_nan() || gap_lower <= 0.0 {
        return 1.0;
    }
    let k = (gap_lower * std::f64::consts::LOG2_E * (1.0 - 1e-12))
        .floor()
        .min(1074.0);
    (-k).exp2()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gelu(v: f64) -> f64 {
        (libm::erf(v * std::f64::consts::FRAC_1_SQRT_2) + 1.0) * 0.5 * v
    }

    #[test]
    fn kappa_encloses_one_over_root_two_pi() {
        let (lo, hi) = kappa();
        let k = 1.0 / (2.0 * std::f64::consts::PI).sqrt();
        assert!(lo <= k && k <= hi && hi - lo < 1e-15, "{lo} {k} {hi}");
    }

    #[test]
    fn remainder_bound_holds_and_is_tight() {
        // ρ(z) computed in f64 with a rounding margin: within [−bound, 0] and the bound is
        // reached to within a few percent at small z.
        let k = 1.0 / (2.0 * std::f64::consts::PI).sqrt();
        for i in 1..200 {
            let z = i as f64 * 0.01;
            let rho = gelu(z) - z / 2.0 - k * z * z;
            let slack = 1e-15 * z;
            assert!(rho <= slack, "ρ({z}) = {rho} > 0");
            assert!(-rho <= gelu_remainder(z) + slack, "ρ({z}) = {rho}");
            if z < 0.1 {
                assert!(-rho > 0.9 * gelu_remainder(z), "loose at {z}: {rho}");
            }
        }
    }

    #[test]
    fn exp_bound_is_above_and_within_two() {
        for g in [0.5, 1.0, 42.0, 44.0, 87.5, 700.0] {
            let b = exp_neg_upper(g);
            let e = (-g).exp();
            assert!(
                b >= e * (1.0 - 1e-12) && b <= 2.0 * e * (1.0 + 1e-12),
                "{g}: {b} vs {e}"
            );
        }
    }

    #[test]
    fn gamma_grows_with_n_and_is_infinite_past_one() {
        let u = unit(DType::F32);
        assert!(gamma(1, u) > u && gamma(2, u) > 2.0 * u);
        assert!(gamma(1 << 25, u).is_infinite());
    }
}
