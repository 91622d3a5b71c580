//! The fused step's kernels: products through faer, and the elementwise and per-row pieces
//! (LayerNorm, GeLU, exp, erf, column sums) with their hand-written gradients.
//!
//! Every loop here runs inside [`simd`], which compiles it for the widest vector unit the CPU
//! has (AVX2+FMA or AVX-512, picked at run time by `pulp`), so plain Rust loops become vector
//! code. Rust never contracts `a·b + c` into an FMA on its own, so the results are the same
//! whichever unit runs them. Work is split over rows in fixed chunks and every sum runs in one
//! fixed order, so the results do not depend on the number of threads.

use super::Real;
use crate::model::schema::Linear;
use faer::{Accum, MatMut, MatRef, Par};
use rayon::prelude::*;

/// Rows per parallel task of the row-wise kernels (a fixed split: results do not depend on it).
const ROW_CHUNK: usize = 64;

pub use crate::simd::simd;

/// faer's parallelism for a product of `flops` floating-point operations: the rayon pool's
/// threads when there is more than one and the product is big enough to share, else one.
pub fn par_for(flops: usize) -> Par {
    if rayon::current_num_threads() > 1 && flops >= 1 << 21 {
        Par::rayon(0)
    } else {
        Par::Seq
    }
}

/// A row-major `[rows, cols]` matrix over `data`.
pub fn mat<T: Real>(data: &[T], rows: usize, cols: usize) -> MatRef<'_, T> {
    MatRef::from_row_major_slice(&data[..rows * cols], rows, cols)
}

/// A row-major `[rows, cols]` mutable matrix over `data`.
pub fn mat_mut<T: Real>(data: &mut [T], rows: usize, cols: usize) -> MatMut<'_, T> {
    MatMut::from_row_major_slice_mut(&mut data[..rows * cols], rows, cols)
}

/// `dst (=|+=) a · b` (row-major views), on `par`.
pub fn matmul<T: Real>(dst: MatMut<'_, T>, accum: Accum, a: MatRef<'_, T>, b: MatRef<'_, T>) {
    let flops = 2 * a.nrows() * a.ncols() * b.ncols();
    faer::linalg::matmul::matmul(dst, accum, a, b, T::one_(), par_for(flops));
}

/// `dst (=|+=) alpha · a · b` on one thread (the products inside a parallel task).
pub fn matmul_seq<T: Real>(
    dst: MatMut<'_, T>,
    accum: Accum,
    a: MatRef<'_, T>,
    b: MatRef<'_, T>,
    alpha: T,
) {
    faer::linalg::matmul::matmul(dst, accum, a, b, alpha, Par::Seq);
}

/// The input and output sizes of a linear layer (`weight` is `[out, inp]`).
fn sizes<T>(l: &Linear<Vec<T>>) -> (usize, usize) {
    let out = l.bias.len();
    (l.weight.len() / out.max(1), out)
}

/// `y (=|+=) x·Wᵀ + b` for `x` `[n, inp]` and `y` `[n, out]` (`W` `[out, inp]` as stored).
pub fn linear<T: Real>(y: &mut [T], accum: Accum, x: &[T], l: &Linear<Vec<T>>, n: usize) {
    let (inp, out) = sizes(l);
    matmul(
        mat_mut(y, n, out),
        accum,
        mat(x, n, inp),
        mat(&l.weight, out, inp).transpose(),
    );
    add_rows(y, &l.bias);
}

/// The gradients of `y = x·Wᵀ + b` given `dy` `[n, out]`: `dW = dyᵀ·x` and `db = Σ_rows dy`
/// written into `g`, and `dx (=|+=) dy·W` when `dx` is wanted.
pub fn linear_backward<T: Real>(
    dy: &[T],
    x: &[T],
    n: usize,
    l: &Linear<Vec<T>>,
    g: &mut Linear<Vec<T>>,
    dx: Option<(&mut [T], Accum)>,
) {
    let (inp, out) = sizes(l);
    matmul(
        mat_mut(&mut g.weight, out, inp),
        Accum::Replace,
        mat(dy, n, out).transpose(),
        mat(x, n, inp),
    );
    column_sums(&mut g.bias, dy);
    if let Some((dx, accum)) = dx {
        matmul(
            mat_mut(dx, n, inp),
            accum,
            mat(dy, n, out),
            mat(&l.weight, out, inp),
        );
    }
}

/// Every row of `y` (`[n, b.len()]`) plus `b`.
pub fn add_rows<T: Real>(y: &mut [T], b: &[T]) {
    let w = b.len();
    y.par_chunks_mut(ROW_CHUNK * w).for_each(|rows| {
        simd(
            #[inline(always)]
            || {
                for row in rows.chunks_exact_mut(w) {
                    for (v, &bi) in row.iter_mut().zip(b) {
                        *v += bi;
                    }
                }
            },
        )
    });
}

/// `out[j] = Σ_i m[i, j]` over the rows of `m` (`[_, out.len()]`), summed from the first row to
/// the last in one thread (a fixed order).
pub fn column_sums<T: Real>(out: &mut [T], m: &[T]) {
    let w = out.len();
    out.fill(T::zero_());
    simd(
        #[inline(always)]
        || {
            for row in m.chunks_exact(w) {
                for (o, &v) in out.iter_mut().zip(row) {
                    *o += v;
                }
            }
        },
    );
}

/// What a LayerNorm's forward keeps for its backward: the normalised rows `x̂` and `1/σ`.
#[derive(Default)]
pub struct NormCache<T> {
    pub xhat: Vec<T>,
    pub rstd: Vec<T>,
}

/// LayerNorm over rows of width `w`: `x̂ = (x − mean)/√(var + eps)` (var biased, two passes as
/// the Candle composition does), `y = x̂ ⊙ gain + shift`. Fills `cache` and `y`.
pub fn layer_norm<T: Real>(
    y: &mut [T],
    cache: &mut NormCache<T>,
    x: &[T],
    gain: &[T],
    shift: &[T],
    eps: f64,
) {
    let w = gain.len();
    let n = x.len() / w;
    resize(&mut cache.xhat, n * w);
    resize(&mut cache.rstd, n);
    let (inv_w, eps) = (T::of(1.0 / w as f64), T::of(eps));
    y.par_chunks_mut(ROW_CHUNK * w)
        .zip(cache.xhat.par_chunks_mut(ROW_CHUNK * w))
        .zip(cache.rstd.par_chunks_mut(ROW_CHUNK))
        .zip(x.par_chunks(ROW_CHUNK * w))
        .for_each(|(((y, xh), rs), x)| {
            simd(
                #[inline(always)]
                || {
                    for (((y, xh), r), x) in y
                        .chunks_exact_mut(w)
                        .zip(xh.chunks_exact_mut(w))
                        .zip(rs.iter_mut())
                        .zip(x.chunks_exact(w))
                    {
                        let mean = sum(x) * inv_w;
                        let mut var = T::zero_();
                        for &v in x {
                            var += (v - mean) * (v - mean);
                        }
                        *r = T::one_() / (var * inv_w + eps).sqrt();
                        for ((((y, xh), &v), &g), &s) in
                            y.iter_mut().zip(xh.iter_mut()).zip(x).zip(gain).zip(shift)
                        {
                            *xh = (v - mean) * *r;
                            *y = *xh * g + s;
                        }
                    }
                },
            )
        });
}

/// LayerNorm backward. With `g = dy ⊙ gain`: `dx = (g − mean(g) − x̂·mean(g ⊙ x̂)) / σ`, added
/// into `dx`; `dgain = Σ_rows dy ⊙ x̂` and `dshift = Σ_rows dy` written.
pub fn layer_norm_backward<T: Real>(
    dx: &mut [T],
    dy: &[T],
    cache: &NormCache<T>,
    gain: &[T],
    dgain: &mut [T],
    dshift: &mut [T],
) {
    let w = gain.len();
    let inv_w = T::of(1.0 / w as f64);
    column_sums(dshift, dy);
    dgain.fill(T::zero_());
    simd(
        #[inline(always)]
        || {
            for (dy, xh) in dy.chunks_exact(w).zip(cache.xhat.chunks_exact(w)) {
                for ((o, &a), &b) in dgain.iter_mut().zip(dy).zip(xh) {
                    *o += a * b;
                }
            }
        },
    );
    dx.par_chunks_mut(ROW_CHUNK * w)
        .zip(dy.par_chunks(ROW_CHUNK * w))
        .zip(cache.xhat.par_chunks(ROW_CHUNK * w))
        .zip(cache.rstd.par_chunks(ROW_CHUNK))
        .for_each(|(((dx, dy), xh), rs)| {
            simd(
                #[inline(always)]
                || {
                    for (((dx, dy), xh), &r) in dx
                        .chunks_exact_mut(w)
                        .zip(dy.chunks_exact(w))
                        .zip(xh.chunks_exact(w))
                        .zip(rs)
                    {
                        let (mut mg, mut mgx) = (T::zero_(), T::zero_());
                        for ((&d, &g), &x) in dy.iter().zip(gain).zip(xh) {
                            mg += d * g;
                            mgx += d * g * x;
                        }
                        let (mg, mgx) = (mg * inv_w, mgx * inv_w);
                        for (((o, &d), &g), &x) in dx.iter_mut().zip(dy).zip(gain).zip(xh) {
                            *o += (d * g - mg - x * mgx) * r;
                        }
                    }
                },
            )
        });
}

/// Which GeLU: the exact one `u·Φ(u)` (erf) or the tanh approximation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gelu {
    Erf,
    Tanh,
}

/// `√(2/π)` and the cubic coefficient of the tanh GeLU.
const SQRT_2_OVER_PI: f64 = 0.797_884_560_802_865_4;
const GELU_TANH_C: f64 = 0.044_715;

/// GeLU forward: `g = act(u)`, and in `s` what the backward needs — `Φ(u)` for the erf GeLU,
/// `tanh(√(2/π)(u + 0.044715u³))` for the tanh one.
pub fn gelu<T: Real>(kind: Gelu, g: &mut [T], s: &mut [T], u: &[T]) {
    const CHUNK: usize = 4096;
    let (half, one) = (T::of(0.5), T::one_());
    let (rsqrt2, k, c) = (
        T::of(std::f64::consts::FRAC_1_SQRT_2),
        T::of(SQRT_2_OVER_PI),
        T::of(GELU_TANH_C),
    );
    g.par_chunks_mut(CHUNK)
        .zip(s.par_chunks_mut(CHUNK))
        .zip(u.par_chunks(CHUNK))
        .for_each(|((g, s), u)| {
            simd(
                #[inline(always)]
                || {
                    let rows = g.iter_mut().zip(s.iter_mut()).zip(u);
                    match kind {
                        Gelu::Erf => {
                            for ((g, s), &u) in rows {
                                *s = half * (one + (u * rsqrt2).erf_());
                                *g = u * *s;
                            }
                        }
                        Gelu::Tanh => {
                            for ((g, s), &u) in rows {
                                *s = tanh(k * (u + c * u * u * u));
                                *g = half * u * (one + *s);
                            }
                        }
                    }
                },
            )
        });
}

/// GeLU backward in place: `d ← d · act'(u)`, with `s` from [`gelu`]:
/// erf: `act' = Φ(u) + u·φ(u)`, φ(u) = e^{−u²/2}/√(2π);
/// tanh: `act' = ½(1 + t) + ½u(1 − t²)·√(2/π)(1 + 3·0.044715u²)`.
pub fn gelu_backward<T: Real>(kind: Gelu, d: &mut [T], s: &[T], u: &[T]) {
    const CHUNK: usize = 4096;
    let (half, one) = (T::of(0.5), T::one_());
    let inv_sqrt_2pi = T::of(0.398_942_280_401_432_7);
    let (k, c3) = (T::of(SQRT_2_OVER_PI), T::of(3.0 * GELU_TANH_C));
    d.par_chunks_mut(CHUNK)
        .zip(s.par_chunks(CHUNK))
        .zip(u.par_chunks(CHUNK))
        .for_each(|((d, s), u)| {
            simd(
                #[inline(always)]
                || {
                    let rows = d.iter_mut().zip(s).zip(u);
                    match kind {
                        Gelu::Erf => {
                            for ((d, &s), &u) in rows {
                                *d *= s + u * inv_sqrt_2pi * (-half * u * u).exp_();
                            }
                        }
                        Gelu::Tanh => {
                            for ((d, &s), &u) in rows {
                                *d *= half * (one + s)
                                    + half * u * (one - s * s) * k * (one + c3 * u * u);
                            }
                        }
                    }
                },
            )
        });
}

/// `tanh(z) = 1 − 2/(e^{2z} + 1)`, through the vectorisable exp (saturates to ±1).
#[inline(always)]
fn tanh<T: Real>(z: T) -> T {
    let two = T::of(2.0);
    T::one_() - two / ((two * z).exp_() + T::one_())
}

/// The sum of `v` from first to last.
#[inline(always)]
pub fn sum<T: Real>(v: &[T]) -> T {
    let mut s = T::zero_();
    for &x in v {
        s += x;
    }
    s
}

/// `v` resized to `len` (contents unspecified: every user overwrites it).
pub fn resize<T: Real>(v: &mut Vec<T>, len: usize) {
    if v.len() != len {
        v.clear();
        v.resize(len, T::zero_());
    }
}

/// `e^x` in f32 to within 2 ulp, written so that it vectorises: `x = k·ln2 + r` with
/// |r| ≤ ln2/2, `e^r` by its Taylor polynomial to degree 7 (remainder ≤ r⁸/8! < 7.5e-9,
/// below half an f32 ulp), times `2^k` built in the exponent bits. 0 below −87 (where e^x is
/// subnormal), +inf above 88.3 (2^k would overflow; e^88.3 = 2.2e38).
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let xc = x.clamp(-87.0, 88.3);
    let k = (xc * std::f32::consts::LOG2_E + 0.5).floor();
    let r = (xc - k * LN2_HI) - k * LN2_LO;
    let mut p = 1.0 / 5040.0;
    for c in [
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
        1.0,
    ] {
        p = p * r + c;
    }
    let scale = f32::from_bits((((k as i32) + 127) as u32) << 23);
    let e = p * scale;
    if x < -87.0 {
        0.0
    } else if x > 88.3 {
        f32::INFINITY
    } else {
        e
    }
}

/// erf in f32 to within a few ulp, vectorisable: the rational approximation `x·P(x²)/Q(x²)` on
/// x clamped to [−4, 4] (erf is ±1 in f32 beyond), with the coefficients Eigen and XLA use for
/// f32 erf.
#[inline(always)]
pub fn erf_f32(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10_f32;
    for c in [
        2.770_681_4e-8,
        -2.101_024e-6,
        -5.692_506_4e-5,
        -7.349_906e-4,
        -2.9546e-3,
        -1.609_603_3e-2,
    ] {
        p = p * x2 + c;
    }
    let mut q = -1.456_607_2e-5_f32;
    for c in [-2.133_740_6e-4, -1.682_827e-3, -7.373_329e-3, -1.426_474e-2] {
        q = q * x2 + c;
    }
    x * p / q
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_f32_is_within_two_ulp_of_exp_over_its_range() {
        let mut worst = 0.0f64;
        for i in 0..=200_000 {
            let x = -87.0 + 175.3 * i as f64 / 200_000.0;
            let (got, want) = (exp_f32(x as f32) as f64, (x as f32 as f64).exp());
            worst = worst.max(((got - want) / want).abs());
        }
        assert!(worst < 2.0 * f32::EPSILON as f64, "relative error {worst}");
        assert_eq!(exp_f32(-200.0), 0.0);
        assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_f32(100.0), f32::INFINITY);
    }

    #[test]
    fn erf_f32_is_within_a_few_ulp_of_erf() {
        let mut worst = 0.0f64;
        for i in 0..=100_000 {
            let x = -6.0 + 12.0 * i as f64 / 100_000.0;
            let x32 = x as f32 as f64;
            let want = candle_core::cpu::erf::erf_f64(x32);
            let got = erf_f32(x32 as f32) as f64;
            worst = worst.max((got - want).abs() / want.abs().max(1e-30));
        }
        assert!(worst < 4.0 * f32::EPSILON as f64, "relative error {worst}");
    }
}
