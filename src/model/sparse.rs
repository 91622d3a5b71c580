//! A forward pass for compiled `exact`-target models that touches only their non-zero weights
//! (docs/FORMATS.md, "The forward pass"; the dense [`super::Transformer`] forward is the
//! reference and the tests compare the two).
//!
//! Compiled models are mostly zeros — ridge.icl at d = 8, n = 40 has 1.1 M non-zero of 17 M
//! parameters — and their attention has no Q/K: the scores are the fixed 0/−∞ bias table, so each
//! head's softmax is a fixed weighting of earlier columns. This executor stores every linear map
//! as its non-zero rows ([`SparseLinear`]), each head's attention as, per query column, the list
//! of (key column, weight) pairs the softmax gives ([`Pattern`]), and runs column by column.
//! It rounds as the dense forward does — each dot product one fused multiply-add per non-zero
//! term in ascending order (Candle's matrix products on an FMA CPU; the zero terms it skips leave
//! that chain unchanged), Candle's in-order sums and `mean = sum · fl(1/n)` — so the two agree
//! bit for bit there (`tests/sparse.rs`). It computes in the model file's dtype (f64 or f32,
//! like the dense forward) and applies to
//! models whose attention has no Q/K and no momentum and whose MLPs are bilinear (the `exact`
//! target); [`AnySparse::new`] returns `None` for any other.

use super::config::{DType, MlpKind, ModelConfig};
use super::schema::{Linear, Norm, Weights};
use crate::prompt::Prompt;
use crate::tensors::{NamedTensors, RawTensor};
use num_traits::Float;

/// The scalar the executor computes in: f64, or f32 for f32 model files (their values are
/// stored widened to f64, so the conversion back is exact).
pub trait Scalar: Float + std::iter::Sum + Copy + std::fmt::Debug + 'static {
    fn of(v: f64) -> Self;
    fn f64(self) -> f64;
}

impl Scalar for f64 {
    fn of(v: f64) -> Self {
        v
    }
    fn f64(self) -> f64 {
        self
    }
}

impl Scalar for f32 {
    fn of(v: f64) -> Self {
        v as f32
    }
    fn f64(self) -> f64 {
        self as f64
    }
}

/// `Σ a_i·b_i` as the dense forward's matrix product computes it on an FMA CPU: one fused
/// multiply-add per term, in the order given (ascending input index), from 0. Zero terms, which
/// the sparse lists leave out, change nothing in that chain, so the result is the dense one.
#[inline(always)]
fn dot<T: Scalar>(terms: impl Iterator<Item = (T, T)>) -> T {
    terms.fold(T::zero(), |acc, (a, b)| a.mul_add(b, acc))
}

/// One output row of a [`SparseLinear`]: its index, its bias and its non-zero (input, weight)s.
type SparseRow<T> = (usize, T, Vec<(usize, T)>);

/// `y = W x + b` keeping only the output rows with a non-zero weight or bias, and in each row
/// only the non-zero weights. Rows not listed are 0.
#[derive(Debug, Clone)]
pub struct SparseLinear<T> {
    rows: Vec<SparseRow<T>>,
    out: usize,
}

impl<T: Scalar> SparseLinear<T> {
    fn new(l: &Linear<&RawTensor>) -> Self {
        let (out, inp) = (l.weight.shape[0], l.weight.shape[1]);
        let rows = (0..out)
            .filter_map(|r| {
                let w: Vec<(usize, T)> = (0..inp)
                    .map(|c| (c, l.weight.data[r * inp + c]))
                    .filter(|&(_, v)| v != 0.0)
                    .map(|(c, v)| (c, T::of(v)))
                    .collect();
                let b = l.bias.data[r];
                (!w.is_empty() || b != 0.0).then_some((r, T::of(b), w))
            })
            .collect();
        SparseLinear { rows, out }
    }

    /// The output rows that can be non-zero.
    fn active(&self) -> impl Iterator<Item = usize> + '_ {
        self.rows.iter().map(|r| r.0)
    }

    /// `W x + b` into `y` (length `out`; rows not listed are left untouched — callers zero them):
    /// the dense product's chain over the non-zero terms, then the bias.
    #[inline(always)]
    fn apply(&self, x: &[T], y: &mut [T]) {
        for (r, b, w) in &self.rows {
            y[*r] = dot(w.iter().map(|&(c, v)| (x[c], v))) + *b;
        }
    }

    /// Adds `W x + b` to `h` (the residual update).
    #[inline(always)]
    fn add_to(&self, x: &[T], h: &mut [T]) {
        for (r, b, w) in &self.rows {
            h[*r] = h[*r] + (dot(w.iter().map(|&(c, v)| (x[c], v))) + *b);
        }
    }

    pub fn nonzeros(&self) -> usize {
        self.rows.iter().map(|r| r.2.len() + 1).sum()
    }
}

/// One head's fixed attention for prompts of T columns: for each query column t, the key
/// columns s ≤ t with their softmax weights (the null key, whose value is 0, only enters the
/// normalisation).
#[derive(Debug, Clone)]
struct Pattern<T> {
    per_query: Vec<Vec<(usize, T)>>,
}

impl<T: Scalar> Pattern<T> {
    /// From the bias table [heads, max_len, max_len+1] of head `h` for T columns, as the dense
    /// softmax computes it: scores of the causal keys and (with `zero_attn`) the null key, max
    /// subtracted, exponentiated, normalised.
    fn new(bias: &RawTensor, h: usize, t_len: usize, zero_attn: bool) -> Pattern<T> {
        let (ml, cols) = (bias.shape[1], bias.shape[2]);
        let at = |t: usize, s: usize| T::of(bias.data[(h * ml + t) * cols + s]);
        let per_query = (0..t_len)
            .map(|t| {
                let mut scores: Vec<(usize, T)> = (0..=t).map(|s| (s, at(t, s))).collect();
                let null = zero_attn.then(|| at(t, ml));
                let m = scores
                    .iter()
                    .map(|p| p.1)
                    .chain(null)
                    .fold(T::neg_infinity(), T::max);
                if m == T::neg_infinity() {
                    return Vec::new();
                }
                let z: T = scores
                    .iter()
                    .map(|p| (p.1 - m).exp())
                    .chain(null.map(|n| (n - m).exp()))
                    .sum();
                scores.retain(|p| p.1 != T::neg_infinity());
                scores
                    .iter()
                    .map(|&(s, v)| (s, (v - m).exp() / z))
                    .collect()
            })
            .collect();
        Pattern { per_query }
    }
}

struct SparseAttention<T> {
    v: SparseLinear<T>,
    o: SparseLinear<T>,
    /// Per head: its pattern and the value dims (inner indices) that can be non-zero.
    heads: Vec<(Pattern<T>, Vec<usize>)>,
}

struct SparseMlp<T> {
    gate: SparseLinear<T>,
    up: SparseLinear<T>,
    down: SparseLinear<T>,
}

struct SparseBlock<T> {
    attn: Option<SparseAttention<T>>,
    norm: Option<(Vec<T>, Vec<T>, T)>,
    mlp: Option<SparseMlp<T>>,
}

/// A compiled model prepared for prompts of `t_len` columns, computing in `T` (the dtype of its
/// file, as the dense forward does).
pub struct SparseModel<T> {
    config: ModelConfig,
    t_len: usize,
    embed: (Vec<Vec<T>>, Vec<T>),
    pos: Vec<Vec<T>>,
    blocks: Vec<SparseBlock<T>>,
    readout: SparseLinear<T>,
}

/// A sparse model in its file's dtype.
pub enum AnySparse {
    F64(SparseModel<f64>),
    F32(SparseModel<f32>),
}

impl AnySparse {
    /// The executor for `config`'s dtype (`None` where it does not apply; module doc).
    pub fn new(config: &ModelConfig, named: &NamedTensors, t_len: usize) -> Option<AnySparse> {
        match config.dtype {
            DType::F64 => SparseModel::new(config, named, t_len).map(AnySparse::F64),
            DType::F32 => SparseModel::new(config, named, t_len).map(AnySparse::F32),
        }
    }
    pub fn predict(&self, p: &Prompt) -> Vec<f64> {
        match self {
            AnySparse::F64(m) => m.predict(p),
            AnySparse::F32(m) => m.predict(p),
        }
    }
    pub fn nonzeros(&self) -> usize {
        match self {
            AnySparse::F64(m) => m.nonzeros(),
            AnySparse::F32(m) => m.nonzeros(),
        }
    }
}

impl<T: Scalar> SparseModel<T> {
    /// `None` when the model is not one this executor runs (see the module doc).
    pub fn new(config: &ModelConfig, named: &NamedTensors, t_len: usize) -> Option<SparseModel<T>> {
        let supported = config.final_norm.is_none()
            && t_len <= config.max_len
            && config.layers.iter().all(|l| {
                l.attn_norm.is_none()
                    && l.attn
                        .as_ref()
                        .is_none_or(|a| !a.qk && a.momentum.is_none())
                    && l.mlp.as_ref().is_none_or(|m| m.kind == MlpKind::Bilinear)
            });
        if !supported {
            return None;
        }
        let w: Weights<&RawTensor> = Weights::spec(config)
            .try_map(&mut |s: &super::schema::TensorSpec| named.get(&s.name).ok_or(()))
            .ok()?;
        let blocks = config
            .layers
            .iter()
            .zip(&w.layers)
            .map(|(lc, b)| SparseBlock {
                attn: lc.attn.as_ref().zip(b.attn.as_ref()).map(|(ac, a)| {
                    let v = SparseLinear::new(&a.v);
                    let active: Vec<usize> = v.active().collect();
                    let heads = (0..ac.heads)
                        .map(|h| {
                            let dims: Vec<usize> = active
                                .iter()
                                .copied()
                                .filter(|&i| i / ac.head_dim == h)
                                .collect();
                            let pattern = match a.bias {
                                Some(bias) => Pattern::new(bias, h, t_len, ac.zero_attn),
                                None => uniform_causal(t_len, ac.zero_attn),
                            };
                            (pattern, dims)
                        })
                        .collect();
                    SparseAttention {
                        v,
                        o: SparseLinear::new(&a.o),
                        heads,
                    }
                }),
                norm: lc
                    .norm
                    .zip(b.norm.as_ref())
                    .map(|(nc, n): (_, &Norm<&RawTensor>)| {
                        (cast(&n.weight.data), cast(&n.bias.data), T::of(nc.eps))
                    }),
                mlp: b.mlp.as_ref().and_then(|m| {
                    Some(SparseMlp {
                        gate: SparseLinear::new(m.gate.as_ref()?),
                        up: SparseLinear::new(&m.up),
                        down: SparseLinear::new(&m.down),
                    })
                }),
            })
            .collect();
        Some(SparseModel {
            config: config.clone(),
            t_len,
            embed: (rows(w.embed.weight), cast(&w.embed.bias.data)),
            pos: rows(w.pos),
            blocks,
            readout: SparseLinear::new(&w.readout),
        })
    }

    /// Non-zero weights and biases this executor multiplies per column.
    pub fn nonzeros(&self) -> usize {
        let mut n = self.readout.nonzeros();
        for b in &self.blocks {
            if let Some(a) = &b.attn {
                n += a.v.nonzeros() + a.o.nonzeros();
            }
            if let Some(m) = &b.mlp {
                n += m.gate.nonzeros() + m.up.nonzeros() + m.down.nonzeros();
            }
        }
        n
    }

    /// The prediction at every x̃ column of one prompt of `t_len` columns (compiled for the
    /// CPU's FMA unit, as the dense forward's products run: `crate::simd`).
    pub fn predict(&self, p: &Prompt) -> Vec<f64> {
        crate::simd::simd(
            #[inline(always)]
            || self.predict_columns(p),
        )
    }

    #[inline(always)]
    fn predict_columns(&self, p: &Prompt) -> Vec<f64> {
        let width = self.config.width;
        let tokens = p.tokens();
        debug_assert_eq!(tokens.len(), self.t_len);
        let mut h: Vec<Vec<T>> = tokens
            .iter()
            .enumerate()
            .map(|(t, tok)| self.embed(t, tok))
            .collect();
        let mut scratch = vec![T::zero(); width];
        for b in &self.blocks {
            if let Some(a) = &b.attn {
                self.attention(a, &mut h);
            }
            if let Some(m) = &b.mlp {
                for col in h.iter_mut() {
                    let x: &[T] = match &b.norm {
                        Some((g, beta, eps)) => {
                            layer_norm(col, g, beta, *eps, &mut scratch);
                            &scratch
                        }
                        None => col,
                    };
                    let mut gate = vec![T::zero(); m.gate.out];
                    let mut up = vec![T::zero(); m.up.out];
                    m.gate.apply(x, &mut gate);
                    m.up.apply(x, &mut up);
                    let inner: Vec<T> = gate.iter().zip(&up).map(|(&g, &u)| g * u).collect();
                    m.down.add_to(&inner, col);
                }
            }
        }
        let mut out = [T::zero()];
        (0..self.t_len)
            .step_by(2)
            .map(|t| {
                out[0] = T::zero();
                self.readout.apply(&h[t], &mut out);
                out[0].f64()
            })
            .collect()
    }

    /// `E · token + b + pos[t]`, in the dense forward's order.
    #[inline(always)]
    fn embed(&self, t: usize, tok: &[f64]) -> Vec<T> {
        let (w, b) = &self.embed;
        w.iter()
            .zip(b)
            .zip(&self.pos[t])
            .map(|((row, &b), &p)| dot(tok.iter().zip(row).map(|(&x, &w)| (T::of(x), w))) + b + p)
            .collect()
    }

    /// `h += O · concat_h(Σ_s p[h,t,s] v_s^h) + o.bias` for every column t.
    #[inline(always)]
    fn attention(&self, a: &SparseAttention<T>, h: &mut [Vec<T>]) {
        let inner = a.v.out;
        let v: Vec<Vec<T>> = h
            .iter()
            .map(|col| {
                let mut y = vec![T::zero(); inner];
                a.v.apply(col, &mut y);
                y
            })
            .collect();
        let mut o = vec![T::zero(); inner];
        for (t, col) in h.iter_mut().enumerate() {
            o.iter_mut().for_each(|x| *x = T::zero());
            for (pattern, dims) in &a.heads {
                for &i in dims {
                    o[i] = dot(pattern.per_query[t].iter().map(|&(s, p)| (p, v[s][i])));
                }
            }
            a.o.add_to(&o, col);
        }
    }
}

/// Uniform causal attention (a model without a bias table: all scores 0).
fn uniform_causal<T: Scalar>(t_len: usize, zero_attn: bool) -> Pattern<T> {
    let per_query = (0..t_len)
        .map(|t| {
            let z = T::of((t + 1 + usize::from(zero_attn)) as f64);
            (0..=t).map(|s| (s, T::one() / z)).collect()
        })
        .collect();
    Pattern { per_query }
}

/// LayerNorm of one column into `out` (biased variance), as the dense forward rounds it: sums
/// from 0 in order, means as the sum times fl(1/n) (Candle's `mean`).
#[inline(always)]
fn layer_norm<T: Scalar>(x: &[T], g: &[T], b: &[T], eps: T, out: &mut [T]) {
    let inv_n = T::of(1.0 / x.len() as f64);
    let mean = sum(x.iter().copied()) * inv_n;
    let var = sum(x.iter().map(|&v| (v - mean) * (v - mean))) * inv_n;
    let den = (var + eps).sqrt();
    for i in 0..x.len() {
        out[i] = (x[i] - mean) / den * g[i] + b[i];
    }
}

/// `Σ v_i` from 0, first to last (Candle's CPU sum).
#[inline(always)]
fn sum<T: Scalar>(v: impl Iterator<Item = T>) -> T {
    v.fold(T::zero(), |a, x| a + x)
}

fn cast<T: Scalar>(v: &[f64]) -> Vec<T> {
    v.iter().map(|&x| T::of(x)).collect()
}

/// The rows of a 2-D tensor, cast.
fn rows<T: Scalar>(t: &RawTensor) -> Vec<Vec<T>> {
    t.data.chunks(t.shape[1]).map(cast).collect()
}
