//! Causal softmax attention and its gradient, one prompt at a time (prompts in parallel), the
//! heads read in place from the `[B·T, heads·head_dim]` projections through strided views — no
//! head is copied out or merged back.

use super::ops::{self, matmul_seq as mm, simd};
use super::Real;
use faer::{Accum, MatMut, MatRef};
use rayon::prelude::*;

/// The shape of one attention sub-layer's work.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub batch: usize,
    pub t: usize,
    pub heads: usize,
    pub head_dim: usize,
    /// The null key of value 0 and score 0 (`zero_attn`): it only adds `e^{0}` to every
    /// softmax denominator.
    pub null_key: bool,
}

impl Shape {
    fn inner(&self) -> usize {
        self.heads * self.head_dim
    }
    /// Head `h`'s `[T, head_dim]` block of one prompt's `[T, inner]` rows.
    fn head<'a, T: Real>(&self, rows: &'a [T], h: usize) -> MatRef<'a, T> {
        MatRef::from_row_major_slice_with_stride(
            &rows[h * self.head_dim..],
            self.t,
            self.head_dim,
            self.inner(),
        )
    }
    fn head_mut<'a, T: Real>(&self, rows: &'a mut [T], h: usize) -> MatMut<'a, T> {
        // As a transposed column-major view: faer 0.24.4's `from_row_major_slice_with_stride_mut`
        // swaps the two strides (it builds a column-major view).
        MatMut::from_column_major_slice_with_stride_mut(
            &mut rows[h * self.head_dim..],
            self.head_dim,
            self.t,
            self.inner(),
        )
        .transpose_mut()
    }
}

/// Forward: per prompt and head, `P = softmax(q·kᵀ/√head_dim + causal mask [+ null key])`
/// (kept in `p`, `[B, heads, T, T]`, 0 above the diagonal) and `out = P·v` written into that
/// head's columns of `out` (`[B·T, inner]`).
pub fn forward<T: Real>(s: Shape, q: &[T], k: &[T], v: &[T], p: &mut [T], out: &mut [T]) {
    let (t, rows) = (s.t, s.t * s.inner());
    let scale = T::of(1.0 / (s.head_dim as f64).sqrt());
    p.par_chunks_mut(s.heads * t * t)
        .zip(out.par_chunks_mut(rows))
        .enumerate()
        .for_each(|(b, (p, out))| {
            let (q, k, v) = (&q[b * rows..], &k[b * rows..], &v[b * rows..]);
            for (h, p) in p.chunks_exact_mut(t * t).enumerate() {
                let (qh, kh) = (s.head(q, h), s.head(k, h));
                mm(
                    ops::mat_mut(p, t, t),
                    Accum::Replace,
                    qh,
                    kh.transpose(),
                    scale,
                );
                simd(
                    #[inline(always)]
                    || causal_softmax(p, t, s.null_key),
                );
                mm(
                    s.head_mut(out, h),
                    Accum::Replace,
                    ops::mat(p, t, t),
                    s.head(v, h),
                    T::one_(),
                );
            }
        });
}

/// Row `i` of the `[T, T]` scores becomes the softmax of its first `i + 1` entries (and the null
/// key's score 0 when `null_key`), the rest 0.
#[inline(always)]
fn causal_softmax<T: Real>(p: &mut [T], t: usize, null_key: bool) {
    for (i, row) in p.chunks_exact_mut(t).enumerate() {
        let (seen, masked) = row.split_at_mut(i + 1);
        let mut max = if null_key { T::zero_() } else { seen[0] };
        for &x in seen.iter() {
            max = if x > max { x } else { max };
        }
        let mut z = if null_key { (-max).exp_() } else { T::zero_() };
        for x in seen.iter_mut() {
            *x = (*x - max).exp_();
            z += *x;
        }
        let inv = T::one_() / z;
        for x in seen.iter_mut() {
            *x *= inv;
        }
        masked.fill(T::zero_());
    }
}

/// Backward, given `d_out` (`[B·T, inner]`, the gradient of `out`): per prompt and head,
/// `dP = d_out·vᵀ`, `dv = Pᵀ·d_out`, `dS = P ⊙ (dP − rowsum(dP ⊙ P))` (the null key's value is
/// 0, so it adds nothing to dP), `dq = dS·k/√head_dim`, `dk = dSᵀ·q/√head_dim`; `dq`, `dk`, `dv`
/// written.
#[allow(clippy::too_many_arguments)]
pub fn backward<T: Real>(
    s: Shape,
    q: &[T],
    k: &[T],
    v: &[T],
    p: &[T],
    d_out: &[T],
    dq: &mut [T],
    dk: &mut [T],
    dv: &mut [T],
) {
    let (t, rows) = (s.t, s.t * s.inner());
    let scale = T::of(1.0 / (s.head_dim as f64).sqrt());
    dq.par_chunks_mut(rows)
        .zip(dk.par_chunks_mut(rows))
        .zip(dv.par_chunks_mut(rows))
        .enumerate()
        .for_each_init(
            || vec![T::zero_(); t * t],
            |ds, (b, ((dq, dk), dv))| {
                let (q, k, v) = (&q[b * rows..], &k[b * rows..], &v[b * rows..]);
                let d_out = &d_out[b * rows..];
                for h in 0..s.heads {
                    let p = &p[(b * s.heads + h) * t * t..][..t * t];
                    let (dout_h, one) = (s.head(d_out, h), T::one_());
                    let pm = ops::mat(p, t, t);
                    mm(
                        ops::mat_mut(ds, t, t),
                        Accum::Replace,
                        dout_h,
                        s.head(v, h).transpose(),
                        one,
                    );
                    mm(
                        s.head_mut(dv, h),
                        Accum::Replace,
                        pm.transpose(),
                        dout_h,
                        one,
                    );
                    simd(
                        #[inline(always)]
                        || softmax_backward(ds, p, t),
                    );
                    let dsm = ops::mat(ds, t, t);
                    mm(s.head_mut(dq, h), Accum::Replace, dsm, s.head(k, h), scale);
                    mm(
                        s.head_mut(dk, h),
                        Accum::Replace,
                        dsm.transpose(),
                        s.head(q, h),
                        scale,
                    );
                }
            },
        );
}

/// `dS = P ⊙ (dP − rowsum(dP ⊙ P))` in place of `dP`, row by row (0 where P is masked).
#[inline(always)]
fn softmax_backward<T: Real>(dp: &mut [T], p: &[T], t: usize) {
    for (i, (d, p)) in dp.chunks_exact_mut(t).zip(p.chunks_exact(t)).enumerate() {
        let (d, dmasked) = d.split_at_mut(i + 1);
        let p = &p[..i + 1];
        let mut dot = T::zero_();
        for (&a, &b) in d.iter().zip(p) {
            dot += a * b;
        }
        for (x, &pi) in d.iter_mut().zip(p) {
            *x = pi * (*x - dot);
        }
        dmasked.fill(T::zero_());
    }
}
