//! Sound enclosures of exp, erf, π and square roots in exact rational arithmetic.
//!
//! The bounds of a target built from softmax, GeLU and LayerNorm (softmax leakage from score
//! gaps, the GeLU-product remainder, bypass errors) involve e^{−y}, erf, √π and square roots.
//! Evaluating them in f64 would make a certificate depend on a libm's rounding, which no one
//! has proven; so every such constant is enclosed here in an interval [lo, hi] of rationals with
//! a proof in the doc comment of the function that computes it, and only the endpoints are
//! rounded, outward, when a bound is stated in f64 ([`Enclosure::to_f64`]).
//!
//! The method (num-rational, num-bigint: both already dependencies; no MPFR build needed):
//! - **exp**: the Taylor series with its tail bounded by a geometric series, after halving the
//!   argument into [−½, ½] and squaring back (squaring is monotone on positive intervals);
//! - **π**: Machin's formula π = 16·atan(1/5) − 4·atan(1/239), each atan an alternating series
//!   with decreasing terms, whose consecutive partial sums bracket it;
//! - **√q**: the integer square root of q·4^b, checked by squaring;
//! - **erf**: the alternating Maclaurin series (2/√π) Σ (−1)^k x^{2k+1}/(k!(2k+1)), bracketed by
//!   consecutive partial sums once its terms decrease; beyond |x| = 8, 1 − e^{−x²}/(x√π) < erf(x)
//!   < 1.
//!
//! Every result is rounded outward to a multiple of 2^{−bits}, so numbers stay small.

use num_bigint::BigInt;
use num_integer::Integer;
use num_rational::BigRational;
use num_traits::{One, Signed, ToPrimitive, Zero};

/// An exact rational.
pub type Q = BigRational;

/// A closed interval [lo, hi] of rationals that contains a real number.
#[derive(Debug, Clone, PartialEq)]
pub struct Enclosure {
    pub lo: Q,
    pub hi: Q,
}

fn q(n: i64) -> Q {
    Q::from_integer(BigInt::from(n))
}

fn pow2(bits: u32) -> BigInt {
    BigInt::one() << bits
}

/// ⌊v·2^bits⌋ / 2^bits.
fn round_down(v: &Q, bits: u32) -> Q {
    let s = v * Q::from_integer(pow2(bits));
    Q::new(s.numer().div_floor(s.denom()), pow2(bits))
}

/// ⌈v·2^bits⌉ / 2^bits.
fn round_up(v: &Q, bits: u32) -> Q {
    let s = v * Q::from_integer(pow2(bits));
    Q::new(s.numer().div_ceil(s.denom()), pow2(bits))
}

/// The f64 just below `v` (toward −∞); `v` finite.
fn next_down(v: f64) -> f64 {
    if v == 0.0 {
        return -f64::from_bits(1);
    }
    let b = v.to_bits();
    f64::from_bits(if v > 0.0 { b - 1 } else { b + 1 })
}

impl Enclosure {
    /// The interval between two numbers, in either order.
    pub fn between(a: Q, b: Q) -> Self {
        if a <= b {
            Enclosure { lo: a, hi: b }
        } else {
            Enclosure { lo: b, hi: a }
        }
    }

    /// [v, v].
    pub fn point(v: Q) -> Self {
        Enclosure {
            lo: v.clone(),
            hi: v,
        }
    }

    pub fn width(&self) -> Q {
        &self.hi - &self.lo
    }

    pub fn contains(&self, v: &Q) -> bool {
        &self.lo <= v && v <= &self.hi
    }

    /// The endpoints rounded outward to multiples of 2^{−bits}: still an enclosure.
    pub fn outward(&self, bits: u32) -> Self {
        Enclosure {
            lo: round_down(&self.lo, bits),
            hi: round_up(&self.hi, bits),
        }
    }

    /// f64 endpoints with lo ≤ self.lo and hi ≥ self.hi exactly (directed rounding, checked
    /// in rational arithmetic rather than trusted to a conversion's rounding mode).
    pub fn to_f64(&self) -> (f64, f64) {
        let mut lo = self.lo.to_f64().unwrap_or(f64::NEG_INFINITY);
        while lo.is_finite() && Q::from_float(lo).is_some_and(|l| l > self.lo) {
            lo = next_down(lo);
        }
        let mut hi = self.hi.to_f64().unwrap_or(f64::INFINITY);
        while hi.is_finite() && Q::from_float(hi).is_some_and(|h| h < self.hi) {
            hi = -next_down(-hi);
        }
        (lo, hi)
    }

    /// The interval product (all four endpoint products: any signs).
    pub fn mul(&self, o: &Enclosure) -> Enclosure {
        let p = [
            &self.lo * &o.lo,
            &self.lo * &o.hi,
            &self.hi * &o.lo,
            &self.hi * &o.hi,
        ];
        let lo = p.iter().min().expect("four products").clone();
        let hi = p.iter().max().expect("four products").clone();
        Enclosure { lo, hi }
    }

    /// 1/self for an interval of positive numbers.
    fn recip_pos(&self) -> Enclosure {
        assert!(
            self.lo.is_positive(),
            "reciprocal of an interval that is not positive"
        );
        Enclosure {
            lo: self.hi.recip(),
            hi: self.lo.recip(),
        }
    }

    fn neg(&self) -> Enclosure {
        Enclosure {
            lo: -&self.hi,
            hi: -&self.lo,
        }
    }
}

/// e^r for |r| ≤ ½. Proof: for 0 ≤ r, every term of Σ r^k/k! is ≥ 0, so the partial sum S_n is
/// a lower bound, and the tail Σ_{k>n} r^k/k! ≤ t_{n+1}·Σ_{j≥0} (r/(n+2))^j = t_{n+1}·(n+2)/(n+2−r)
/// (each term is at most r/(n+2) times the one before) bounds it from above. For r < 0,
/// e^r = 1/e^{−r}.
fn exp_small(r: &Q, bits: u32) -> Enclosure {
    if r.is_negative() {
        return exp_small(&-r, bits).recip_pos();
    }
    let eps = Q::new(BigInt::one(), pow2(bits + 8));
    let (mut sum, mut term, mut k) = (Q::one(), Q::one(), 0i64);
    loop {
        k += 1;
        term = term * r / q(k);
        if term <= eps || term.is_zero() {
            // `term` is t_k, the first term not summed: the tail bound starts there.
            let tail = &term * q(k + 1) / (q(k + 1) - r);
            return Enclosure {
                hi: &sum + tail,
                lo: sum,
            };
        }
        sum += &term;
    }
}

/// e^x to about 2^{−bits} relative. Proof: x = 2^m·r with |r| ≤ ½ and e^x = (e^r)^{2^m}; squaring
/// is increasing on positive numbers, so squaring an enclosure of a positive number m times
/// encloses its 2^m-th power (each step rounded outward).
pub fn exp(x: &Q, bits: u32) -> Enclosure {
    let half = Q::new(BigInt::one(), BigInt::from(2));
    let (mut r, mut m) = (x.clone(), 0u32);
    while r.abs() > half {
        r /= q(2);
        m += 1;
    }
    // Relative errors double at each squaring: guard bits for them and for e^x < 1.
    let work = bits + m + 16 + x.abs().to_f64().unwrap_or(0.0).ceil().min(1e6) as u32 * 2;
    let mut e = exp_small(&r, work).outward(work);
    for _ in 0..m {
        e = Enclosure {
            lo: &e.lo * &e.lo,
            hi: &e.hi * &e.hi,
        }
        .outward(work);
    }
    e
}

/// atan(1/n) for an integer n ≥ 2. Proof: atan(1/n) = Σ_k (−1)^k / ((2k+1)·n^{2k+1}), an
/// alternating series whose terms decrease, so its value lies between any two consecutive
/// partial sums.
fn atan_recip(n: i64, bits: u32) -> Enclosure {
    let eps = Q::new(BigInt::one(), pow2(bits + 8));
    let n2 = q(n * n);
    let (mut sum, mut power, mut k) = (Q::zero(), q(n), 0i64); // power = n^{2k+1}
    loop {
        let term = (q(2 * k + 1) * &power).recip();
        let next = if k % 2 == 0 {
            &sum + &term
        } else {
            &sum - &term
        };
        if term <= eps {
            return Enclosure::between(sum, next);
        }
        sum = next;
        power *= &n2;
        k += 1;
    }
}

/// π by Machin's formula π = 16·atan(1/5) − 4·atan(1/239).
pub fn pi(bits: u32) -> Enclosure {
    let a = atan_recip(5, bits + 8);
    let b = atan_recip(239, bits + 8);
    Enclosure {
        lo: q(16) * &a.lo - q(4) * &b.hi,
        hi: q(16) * &a.hi - q(4) * &b.lo,
    }
    .outward(bits + 4)
}

/// √v for v ≥ 0, to 2^{−bits}. Proof: with s = ⌊√⌊v·4^b⌋⌋ (integer square root),
/// s² ≤ ⌊v·4^b⌋ ≤ v·4^b < ⌊v·4^b⌋ + 1 ≤ (s+1)², so s/2^b ≤ √v < (s+1)/2^b.
pub fn sqrt(v: &Q, bits: u32) -> Enclosure {
    assert!(!v.is_negative(), "square root of a negative number");
    let scaled = v * Q::from_integer(pow2(2 * bits));
    let s = scaled.numer().div_floor(scaled.denom()).sqrt();
    Enclosure {
        lo: Q::new(s.clone(), pow2(bits)),
        hi: Q::new(s + BigInt::one(), pow2(bits)),
    }
}

/// 2/√π.
fn two_over_sqrt_pi(bits: u32) -> Enclosure {
    let p = pi(bits + 8);
    let root = Enclosure {
        lo: sqrt(&p.lo, bits + 8).lo,
        hi: sqrt(&p.hi, bits + 8).hi,
    };
    root.recip_pos().mul(&Enclosure::point(q(2)))
}

/// Σ_k (−1)^k x^{2k+1}/(k!(2k+1)) for x ≥ 0. Proof: the ratio of consecutive terms,
/// x²(2k+1)/((k+1)(2k+3)), falls with k, so once it is ≤ 1 the terms decrease from there on
/// and the sum lies between consecutive partial sums taken past that point.
fn erf_series(x: &Q, bits: u32) -> Enclosure {
    let eps = Q::new(BigInt::one(), pow2(bits + 8));
    let x2 = x * x;
    let (mut sum, mut power, mut fact, mut k) = (Q::zero(), x.clone(), Q::one(), 0i64);
    loop {
        let term = &power / (&fact * q(2 * k + 1));
        let next = if k % 2 == 0 {
            &sum + &term
        } else {
            &sum - &term
        };
        let ratio = &x2 * q(2 * k + 1) / q((k + 1) * (2 * k + 3));
        if ratio <= Q::one() && term <= eps {
            return Enclosure::between(sum, next);
        }
        sum = next;
        power *= &x2;
        k += 1;
        fact *= q(k);
    }
}

/// erf(x) to about 2^{−bits} (absolute) for |x| ≤ 8; beyond, within e^{−x²}/(x√π) < 1e-29 of 1.
/// Proof for |x| > 8: erfc(x) = (2/√π)∫_x^∞ e^{−t²}dt < (2/√π)∫_x^∞ (t/x)e^{−t²}dt =
/// e^{−x²}/(x√π), and erfc(x) > 0. erf is odd.
pub fn erf(x: &Q, bits: u32) -> Enclosure {
    if x.is_negative() {
        return erf(&-x, bits).neg();
    }
    if x.is_zero() {
        return Enclosure::point(Q::zero());
    }
    if *x > q(8) {
        let tail = exp(&-(x * x), bits)
            .mul(&two_over_sqrt_pi(bits))
            .mul(&Enclosure::point((x * q(2)).recip()));
        return Enclosure {
            lo: Q::one() - &tail.hi,
            hi: Q::one(),
        };
    }
    // The partial sums grow to ~e^{x²} before cancelling: guard bits for that.
    let guard = (x.to_f64().unwrap_or(8.0).powi(2) * std::f64::consts::LOG2_E).ceil() as u32 + 8;
    erf_series(x, bits + guard)
        .mul(&two_over_sqrt_pi(bits + 8))
        .outward(bits + 4)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(v: f64) -> Q {
        Q::from_float(v).unwrap()
    }

    /// 50 digits of π (a reference independent of the code above).
    const PI_50: &str = "31415926535897932384626433832795028841971693993751";

    #[test]
    fn pi_contains_fifty_known_digits_and_is_narrow() {
        let p = pi(160);
        let digits = BigInt::parse_bytes(PI_50.as_bytes(), 10).unwrap();
        let below = Q::new(digits.clone(), BigInt::from(10).pow(49));
        let above = Q::new(digits + 1, BigInt::from(10).pow(49));
        assert!(p.lo < above && p.hi > below, "{p:?}");
        assert!(p.width() < Q::new(BigInt::one(), pow2(150)));
        let (lo, hi) = p.to_f64();
        assert!(lo <= std::f64::consts::PI && std::f64::consts::PI <= hi);
    }

    #[test]
    fn square_roots_are_checked_by_squaring() {
        for v in [
            f(2.0),
            f(0.0),
            f(1e-300),
            f(12345.678),
            Q::new(1.into(), 3.into()),
        ] {
            let r = sqrt(&v, 80);
            assert!(&r.lo * &r.lo <= v && v <= &r.hi * &r.hi, "{v}");
            assert_eq!(r.width(), Q::new(BigInt::one(), pow2(80)));
        }
    }

    #[test]
    fn exp_encloses_libm_within_its_error_and_agrees_with_the_plain_series() {
        for i in -60..=60 {
            let x = i as f64 * 0.37;
            let e = exp(&f(x), 80);
            let (lo, hi) = e.to_f64();
            let want = x.exp();
            // libm's exp is within 1 ulp; the enclosure is far narrower than an ulp.
            assert!(
                lo <= want * (1.0 + 3e-16) && hi >= want * (1.0 - 3e-16),
                "exp({x})"
            );
            let rel = (e.width() / &e.lo).to_f64().unwrap();
            assert!(rel < 1e-20, "exp({x}) relative width {rel}");
        }
        // Without argument reduction (|x| ≤ ½) the series alone must agree.
        let x = f(0.3);
        let (a, b) = (exp_small(&x, 100), exp(&x, 100));
        assert!(a.lo <= b.hi && b.lo <= a.hi);
    }

    #[test]
    fn erf_encloses_libm_is_odd_and_saturates() {
        // Known values (to 20 digits, independent tables): erf(1), erf(0.5), erf(2).
        let cases = [
            (1.0, "0.84270079294971486934"),
            (0.5, "0.52049987781304653768"),
            (2.0, "0.99532226501895273416"),
            (3.5, "0.99999925690162765859"),
        ];
        for (x, digits) in cases {
            let e = erf(&f(x), 100);
            let int = BigInt::parse_bytes(digits.replace("0.", "").as_bytes(), 10).unwrap();
            let scale = BigInt::from(10).pow(20);
            let lo = Q::new(int.clone() - 1, scale.clone());
            let hi = Q::new(int + 1, scale);
            assert!(e.lo <= hi && e.hi >= lo, "erf({x}) = {:?}", e.to_f64());
            assert!(
                e.width() < Q::new(BigInt::one(), pow2(90)),
                "erf({x}) width"
            );
            let m = erf(&f(-x), 100);
            assert_eq!(m, e.neg());
        }
        let big = erf(&f(9.0), 80);
        assert_eq!(big.hi, Q::one());
        assert!(big.width() < Q::new(BigInt::one(), BigInt::from(10).pow(30)));
        assert!(erf(&f(8.0), 60).lo > Q::new(BigInt::from(999_999), BigInt::from(1_000_000)));
    }

    /// Two enclosures of the same number at different precisions must overlap: a bound that
    /// leaves out part of a tail (a dropped remainder, a partial sum on the wrong side) misses
    /// the true value by less than an f64 ulp, but the finer enclosure exposes it.
    #[test]
    fn coarse_and_fine_enclosures_overlap() {
        let overlap = |a: &Enclosure, b: &Enclosure| a.lo <= b.hi && b.lo <= a.hi;
        for x in [-7.3, -0.4, 0.0, 0.2, 0.45, 1.0, 3.9, 12.5] {
            let (c, fine) = (exp(&f(x), 60), exp(&f(x), 240));
            assert!(overlap(&c, &fine), "exp({x})");
            assert!(fine.width() < c.width() || x == 0.0, "exp({x}) finer");
        }
        for x in [0.1, 0.5, 1.0, 2.5, 5.0, 7.9] {
            assert!(overlap(&erf(&f(x), 60), &erf(&f(x), 240)), "erf({x})");
        }
        // The series themselves, before any outward rounding could hide a wrong side.
        for x in [0.1, 0.5, 2.5, 7.9] {
            let (c, fine) = (erf_series(&f(x), 30), erf_series(&f(x), 200));
            assert!(overlap(&c, &fine) && c.lo < c.hi, "erf series({x})");
        }
        for x in [-0.5, 0.3, 0.5] {
            let (c, fine) = (exp_small(&f(x), 20), exp_small(&f(x), 200));
            assert!(overlap(&c, &fine) && c.lo < c.hi, "exp series({x})");
        }
        assert!(overlap(&pi(60), &pi(300)));
        assert!(overlap(&atan_recip(5, 40), &atan_recip(5, 200)));
    }

    #[test]
    fn f64_endpoints_round_outward() {
        let third = Enclosure::point(Q::new(1.into(), 3.into()));
        let (lo, hi) = third.to_f64();
        assert!(f(lo) < third.lo && f(hi) > third.hi);
        assert_eq!(hi, -next_down(-lo), "adjacent f64s");
        let exact = Enclosure::point(f(0.5));
        assert_eq!(exact.to_f64(), (0.5, 0.5));
    }
}
