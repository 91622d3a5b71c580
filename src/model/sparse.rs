//! A forward pass for compiled `exact`-target models that touches only their non-zero weights
//! (docs/FORMATS.md, "The forward pass"; the dense [`super::Transformer`] forward is the
//! reference and the tests compare the two).
//!
//! Compiled models are mostly zeros — ridge.icl at d = 8, n = 40 has 1.1 M non-zero of 17 M
//! parameters — and their attention has no Q/K: the scores are the fixed 0/−∞ bias table, so each
//! head's softmax is a fixed weighting of earlier columns. This executor stores every linear map
//! as its non-zero rows ([`SparseLinear`]), each head's attention as, per query column, the list
//! of (key column, weight) pairs the softmax gives ([`Pattern`]), and runs column by column in f64.
//! It applies to f64 models whose attention has no Q/K and no momentum and whose MLPs are
//! bilinear (the `exact` target); [`SparseModel::new`] returns `None` for any other.

use super::config::{MlpKind, ModelConfig};
use super::schema::{Linear, Norm, Weights};
use crate::prompt::Prompt;
use crate::tensors::{NamedTensors, RawTensor};

/// One output row of a [`SparseLinear`]: its index, its bias and its non-zero (input, weight)s.
type SparseRow = (usize, f64, Vec<(usize, f64)>);

/// `y = W x + b` keeping only the output rows with a non-zero weight or bias, and in each row
/// only the non-zero weights. Rows not listed are 0.
#[derive(Debug, Clone)]
pub struct SparseLinear {
    rows: Vec<SparseRow>,
    out: usize,
}

impl SparseLinear {
    fn new(l: &Linear<&RawTensor>) -> Self {
        let (out, inp) = (l.weight.shape[0], l.weight.shape[1]);
        let rows = (0..out)
            .filter_map(|r| {
                let w: Vec<(usize, f64)> = (0..inp)
                    .map(|c| (c, l.weight.data[r * inp + c]))
                    .filter(|&(_, v)| v != 0.0)
                    .collect();
                let b = l.bias.data[r];
                (!w.is_empty() || b != 0.0).then_some((r, b, w))
            })
            .collect();
        SparseLinear { rows, out }
    }

    /// The output rows that can be non-zero.
    fn active(&self) -> impl Iterator<Item = usize> + '_ {
        self.rows.iter().map(|r| r.0)
    }

    /// `W x + b` into `y` (length `out`; rows not listed are left untouched — callers zero them).
    fn apply(&self, x: &[f64], y: &mut [f64]) {
        for (r, b, w) in &self.rows {
            // Same order as a dense dot product over the non-zero terms, then the bias.
            let s: f64 = w.iter().map(|&(c, v)| v * x[c]).sum();
            y[*r] = s + b;
        }
    }

    /// Adds `W x + b` to `h` (the residual update).
    fn add_to(&self, x: &[f64], h: &mut [f64]) {
        for (r, b, w) in &self.rows {
            let s: f64 = w.iter().map(|&(c, v)| v * x[c]).sum();
            h[*r] += s + b;
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
struct Pattern {
    per_query: Vec<Vec<(usize, f64)>>,
}

impl Pattern {
    /// From the bias table [heads, max_len, max_len+1] of head `h` for T columns, as the dense
    /// softmax computes it: scores of the causal keys and (with `zero_attn`) the null key, max
    /// subtracted, exponentiated, normalised.
    fn new(bias: &RawTensor, h: usize, t_len: usize, zero_attn: bool) -> Pattern {
        let (ml, cols) = (bias.shape[1], bias.shape[2]);
        let at = |t: usize, s: usize| bias.data[(h * ml + t) * cols + s];
        let per_query = (0..t_len)
            .map(|t| {
                let mut scores: Vec<(usize, f64)> = (0..=t).map(|s| (s, at(t, s))).collect();
                let null = zero_attn.then(|| at(t, ml));
                let m = scores
                    .iter()
                    .map(|p| p.1)
                    .chain(null)
                    .fold(f64::NEG_INFINITY, f64::max);
                if m == f64::NEG_INFINITY {
                    return Vec::new();
                }
                let z: f64 = scores
                    .iter()
                    .map(|p| (p.1 - m).exp())
                    .chain(null.map(|n| (n - m).exp()))
                    .sum();
                scores.retain(|p| p.1 != f64::NEG_INFINITY);
                scores
                    .iter()
                    .map(|&(s, v)| (s, (v - m).exp() / z))
                    .collect()
            })
            .collect();
        Pattern { per_query }
    }
}

struct SparseAttention {
    v: SparseLinear,
    o: SparseLinear,
    /// Per head: its pattern and the value dims (inner indices) that can be non-zero.
    heads: Vec<(Pattern, Vec<usize>)>,
}

struct SparseMlp {
    gate: SparseLinear,
    up: SparseLinear,
    down: SparseLinear,
}

struct SparseBlock {
    attn: Option<SparseAttention>,
    norm: Option<(Vec<f64>, Vec<f64>, f64)>,
    mlp: Option<SparseMlp>,
}

/// A compiled model prepared for prompts of `t_len` columns.
pub struct SparseModel {
    config: ModelConfig,
    t_len: usize,
    embed: (RawTensor, Vec<f64>),
    pos: RawTensor,
    blocks: Vec<SparseBlock>,
    readout: SparseLinear,
}

impl SparseModel {
    /// `None` when the model is not one this executor runs (see the module doc).
    pub fn new(config: &ModelConfig, named: &NamedTensors, t_len: usize) -> Option<SparseModel> {
        let supported = config.dtype == super::config::DType::F64
            && config.final_norm.is_none()
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
                        (n.weight.data.clone(), n.bias.data.clone(), nc.eps)
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
            embed: (w.embed.weight.clone(), w.embed.bias.data.clone()),
            pos: w.pos.clone(),
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

    /// The prediction at every x̃ column of one prompt of `t_len` columns.
    pub fn predict(&self, p: &Prompt) -> Vec<f64> {
        let width = self.config.width;
        let tokens = p.tokens();
        debug_assert_eq!(tokens.len(), self.t_len);
        let mut h: Vec<Vec<f64>> = tokens
            .iter()
            .enumerate()
            .map(|(t, tok)| self.embed(t, tok))
            .collect();
        let mut scratch = vec![0.0; width];
        for b in &self.blocks {
            if let Some(a) = &b.attn {
                self.attention(a, &mut h);
            }
            if let Some(m) = &b.mlp {
                for col in h.iter_mut() {
                    let x: &[f64] = match &b.norm {
                        Some((g, beta, eps)) => {
                            layer_norm(col, g, beta, *eps, &mut scratch);
                            &scratch
                        }
                        None => col,
                    };
                    let mut gate = vec![0.0; m.gate.out];
                    let mut up = vec![0.0; m.up.out];
                    m.gate.apply(x, &mut gate);
                    m.up.apply(x, &mut up);
                    let inner: Vec<f64> = gate.iter().zip(&up).map(|(g, u)| g * u).collect();
                    m.down.add_to(&inner, col);
                }
            }
        }
        let mut out = [0.0];
        (0..self.t_len)
            .step_by(2)
            .map(|t| {
                out[0] = 0.0;
                self.readout.apply(&h[t], &mut out);
                out[0]
            })
            .collect()
    }

    fn embed(&self, t: usize, tok: &[f64]) -> Vec<f64> {
        let (w, b) = &self.embed;
        let (width, inp) = (w.shape[0], w.shape[1]);
        (0..width)
            .map(|r| {
                let s: f64 = (0..inp).map(|c| w.data[r * inp + c] * tok[c]).sum();
                s + b[r] + self.pos.data[t * width + r]
            })
            .collect()
    }

    /// `h += O · concat_h(Σ_s p[h,t,s] v_s^h) + o.bias` for every column t.
    fn attention(&self, a: &SparseAttention, h: &mut [Vec<f64>]) {
        let inner = a.v.out;
        let v: Vec<Vec<f64>> = h
            .iter()
            .map(|col| {
                let mut y = vec![0.0; inner];
                a.v.apply(col, &mut y);
                y
            })
            .collect();
        let mut o = vec![0.0; inner];
        for (t, col) in h.iter_mut().enumerate() {
            o.iter_mut().for_each(|x| *x = 0.0);
            for (pattern, dims) in &a.heads {
                for &i in dims {
                    o[i] = pattern.per_query[t].iter().map(|&(s, p)| p * v[s][i]).sum();
                }
            }
            a.o.add_to(&o, col);
        }
    }
}

/// Uniform causal attention (a model without a bias table: all scores 0).
fn uniform_causal(t_len: usize, zero_attn: bool) -> Pattern {
    let per_query = (0..t_len)
        .map(|t| {
            let z = (t + 1 + usize::from(zero_attn)) as f64;
            (0..=t).map(|s| (s, 1.0 / z)).collect()
        })
        .collect();
    Pattern { per_query }
}

/// LayerNorm of one column into `out` (biased variance, as the dense forward).
fn layer_norm(x: &[f64], g: &[f64], b: &[f64], eps: f64, out: &mut [f64]) {
    let n = x.len() as f64;
    let mean = x.iter().sum::<f64>() / n;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
    let den = (var + eps).sqrt();
    for i in 0..x.len() {
        out[i] = (x[i] - mean) / den * g[i] + b[i];
    }
}
