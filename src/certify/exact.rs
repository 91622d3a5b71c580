//! Exact dyadic rationals `m · 2^e`: every finite f64 (and f32) is one, and sums and products of
//! dyadics are dyadics, so the normal forms of the exact target (products and sums of weights)
//! are computed without rounding and without the gcd work of a general rational. Where a value
//! that is not dyadic is needed (the LayerNorm-division factor), [`Dy::to_rational`] converts
//! exactly to `num_rational::BigRational` (equal to `BigRational::from_float` of the weight).

use num_bigint::BigInt;
use num_rational::BigRational;
use num_traits::{One, Signed, ToPrimitive, Zero};

/// `m · 2^e`, normalized: `m` odd, or `m = 0` and `e = 0`. Equality of values is equality of the
/// normalized pairs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Dy {
    m: BigInt,
    e: i64,
}

impl Dy {
    pub fn zero() -> Dy {
        Dy::default()
    }
    pub fn int(v: i64) -> Dy {
        Dy::norm(BigInt::from(v), 0)
    }
    fn norm(m: BigInt, e: i64) -> Dy {
        if m.is_zero() {
            return Dy::zero();
        }
        let tz = m.trailing_zeros().unwrap_or(0);
        if tz == 0 {
            Dy { m, e }
        } else {
            Dy {
                m: m >> tz,
                e: e + tz as i64,
            }
        }
    }
    /// The exact value of a finite double; `None` for ±∞ and NaN.
    pub fn from_f64(x: f64) -> Option<Dy> {
        if !x.is_finite() {
            return None;
        }
        if x == 0.0 {
            return Some(Dy::zero());
        }
        // IEEE 754: x = (−1)^s · 1.f · 2^(E−1023) (normal) or 0.f · 2^(−1022) (subnormal),
        // i.e. an integer mantissa of 53 bits times 2^(E−1075).
        let bits = x.to_bits();
        let sign = bits >> 63 != 0;
        let exp = ((bits >> 52) & 0x7ff) as i64;
        let frac = bits & ((1u64 << 52) - 1);
        let (mant, e) = if exp == 0 {
            (frac, -1074)
        } else {
            (frac | (1u64 << 52), exp - 1075)
        };
        let m = BigInt::from(mant);
        Some(Dy::norm(if sign { -m } else { m }, e))
    }
    pub fn is_zero(&self) -> bool {
        self.m.is_zero()
    }
    pub fn is_positive(&self) -> bool {
        self.m.is_positive()
    }
    /// True when the value is exactly `v`.
    pub fn is_int(&self, v: i64) -> bool {
        *self == Dy::int(v)
    }
    pub fn neg(&self) -> Dy {
        Dy {
            m: -self.m.clone(),
            e: self.e,
        }
    }
    pub fn add(&self, o: &Dy) -> Dy {
        if self.is_zero() {
            return o.clone();
        }
        if o.is_zero() {
            return self.clone();
        }
        // Align to the smaller exponent: a·2^ea + b·2^eb = (a·2^(ea−e) + b·2^(eb−e))·2^e.
        let e = self.e.min(o.e);
        let a = &self.m << (self.e - e) as usize;
        let b = &o.m << (o.e - e) as usize;
        Dy::norm(a + b, e)
    }
    pub fn add_assign(&mut self, o: &Dy) {
        if o.is_zero() {
            return;
        }
        if self.is_zero() {
            *self = o.clone();
            return;
        }
        if self.e == o.e {
            let m = std::mem::take(&mut self.m) + &o.m;
            *self = Dy::norm(m, self.e);
        } else {
            *self = self.add(o);
        }
    }
    pub fn abs(&self) -> Dy {
        Dy {
            m: self.m.abs(),
            e: self.e,
        }
    }
    /// Bits of the odd mantissa and the exponent: the value is representable with a p-bit
    /// significand iff the first is at most p (exponent range aside).
    pub fn mantissa_bits_and_exponent(&self) -> (u64, i64) {
        (self.m.bits(), self.e)
    }
    /// True when |value| < 2^bits · 2^grid, i.e. every multiple of 2^grid up to |value| has a
    /// significand of at most `bits` bits.
    pub fn fits_grid(&self, grid: i64, bits: u32) -> bool {
        self.is_zero() || (self.m.bits() as i64 + self.e - grid) <= bits as i64
    }
    /// Order of the values.
    pub fn cmp_value(&self, o: &Dy) -> std::cmp::Ordering {
        let d = self.sub(o);
        if d.is_zero() {
            std::cmp::Ordering::Equal
        } else if d.m.is_positive() {
            std::cmp::Ordering::Greater
        } else {
            std::cmp::Ordering::Less
        }
    }
    pub fn sub(&self, o: &Dy) -> Dy {
        self.add(&o.neg())
    }
    /// Product of two normalized values: odd·odd is odd, so it stays normalized.
    pub fn mul(&self, o: &Dy) -> Dy {
        if self.is_zero() || o.is_zero() {
            return Dy::zero();
        }
        Dy {
            m: &self.m * &o.m,
            e: self.e + o.e,
        }
    }
    pub fn to_rational(&self) -> BigRational {
        let two = BigInt::from(2);
        if self.e >= 0 {
            BigRational::from_integer(&self.m * num_traits::pow(two, self.e as usize))
        } else {
            BigRational::new(self.m.clone(), num_traits::pow(two, (-self.e) as usize))
        }
    }
    /// The value as a double when it is one exactly (a mantissa of at most 53 bits, a normal
    /// exponent).
    pub fn to_f64_exact(&self) -> Option<f64> {
        if self.m.bits() > 53 {
            return None;
        }
        let m = self.m.to_i64()? as f64;
        let top = self.m.bits() as i64 + self.e;
        (-1020..1020)
            .contains(&top)
            .then(|| m * (self.e as f64).exp2())
    }
    /// Nearest double (for messages and bounds that are rounded outward by the caller).
    pub fn to_f64(&self) -> f64 {
        if let Some(x) = self.to_f64_exact() {
            return x;
        }
        let r = self.to_rational();
        r.to_f64().unwrap_or(if self.m.is_negative() {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        })
    }
}

impl std::fmt::Display for Dy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.e >= 0 && self.e < 64 {
            if let Some(v) = self.m.to_i64() {
                if let Some(x) = v.checked_mul(1i64 << self.e) {
                    return write!(f, "{x}");
                }
            }
        }
        let x = self.to_f64();
        if Dy::from_f64(x).as_ref() == Some(self) {
            write!(f, "{x:e}")
        } else {
            write!(f, "{} (≈{x:e})", self.to_rational())
        }
    }
}

/// Upper bound, as a double, of a non-negative rational: the nearest double, moved up until it
/// is provably ≥ the value.
pub fn rational_upper(r: &BigRational) -> f64 {
    if r.is_zero() || r.is_negative() {
        return 0.0;
    }
    let mut x = r.to_f64().unwrap_or(f64::INFINITY);
    while x.is_finite() {
        match BigRational::from_float(x) {
            Some(q) if &q >= r => return x,
            _ => x = x.next_up(),
        }
    }
    f64::INFINITY
}

/// Exact rational of a finite double (`None` for ±∞, NaN).
pub fn q(x: f64) -> Option<BigRational> {
    BigRational::from_float(x)
}

/// 1 as a rational.
pub fn q_one() -> BigRational {
    BigRational::one()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_convert_exactly_and_arithmetic_is_exact() {
        for x in [
            1.0,
            -3.5,
            0.1,
            1e-300,
            5e-324,
            1e300,
            -0.0,
            2f64.powi(60) + 4096.0,
        ] {
            let d = Dy::from_f64(x).unwrap();
            assert_eq!(d.to_rational(), BigRational::from_float(x).unwrap(), "{x}");
        }
        // 0.1 + 0.2 in exact arithmetic is not the double 0.30000000000000004, nor 0.3.
        let s = Dy::from_f64(0.1).unwrap().add(&Dy::from_f64(0.2).unwrap());
        assert_eq!(
            s.to_rational(),
            BigRational::from_float(0.1).unwrap() + BigRational::from_float(0.2).unwrap()
        );
        assert_ne!(Some(s.clone()), Dy::from_f64(0.1 + 0.2));
        // (a·b) − (a·b) = 0 and equality is value equality after normalization.
        let a = Dy::from_f64(3.0).unwrap();
        let b = Dy::from_f64(0.75).unwrap();
        assert!(a.mul(&b).sub(&Dy::from_f64(2.25).unwrap()).is_zero());
        assert_eq!(Dy::from_f64(4.0).unwrap(), Dy::int(4));
        assert!(Dy::from_f64(f64::INFINITY).is_none());
    }

    #[test]
    fn rational_upper_bounds_from_above() {
        let third = BigRational::new(1.into(), 3.into());
        let u = rational_upper(&third);
        assert!(BigRational::from_float(u).unwrap() >= third);
        assert!(u < 0.3333333333333335);
    }
}
