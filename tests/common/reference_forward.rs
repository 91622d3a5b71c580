//! The tests' one reference forward pass of a model directory's tensors: plain f64 loops written
//! from docs/FORMATS.md line by line, independently of `icl::model` (Candle) and of the compiler.
//! It covers every part the format has: the embedding with positions; attention with an optional
//! pre-norm, Q/K scores, additive bias patterns, the null key, and fixed or learned momentum;
//! LayerNorm (any eps, 0 included); bilinear and GeLU (erf or tanh) MLPs; the final norm and the
//! readout.

use icl::model::config::{
    Activation, AttnConfig, LayerConfig, MlpConfig, MlpKind, ModelConfig, MomentumConfig,
};
use icl::tensors::{NamedTensors, RawTensor};

/// The tensor `name`, or a panic naming the missing tensor.
fn tensor<'a>(t: &'a NamedTensors, name: &str) -> &'a RawTensor {
    t.get(name)
        .unwrap_or_else(|| panic!("missing tensor {name}"))
}

fn matvec(w: &RawTensor, x: &[f64]) -> Vec<f64> {
    (0..w.shape[0])
        .map(|i| (0..w.shape[1]).map(|j| w.at2(i, j) * x[j]).sum())
        .collect()
}

/// `{p}.weight · x + {p}.bias`.
fn lin(t: &NamedTensors, p: &str, x: &[f64]) -> Vec<f64> {
    let mut y = matvec(tensor(t, &format!("{p}.weight")), x);
    for (a, b) in y.iter_mut().zip(&tensor(t, &format!("{p}.bias")).data) {
        *a += b;
    }
    y
}

/// LayerNorm of one column: `(x − mean) / √(var + eps) · {p}.weight + {p}.bias` (biased variance).
fn lnorm(t: &NamedTensors, p: &str, x: &[f64], eps: f64) -> Vec<f64> {
    let n = x.len() as f64;
    let mean = x.iter().sum::<f64>() / n;
    let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    let (w, b) = (
        &tensor(t, &format!("{p}.weight")).data,
        &tensor(t, &format!("{p}.bias")).data,
    );
    x.iter()
        .enumerate()
        .map(|(i, v)| (v - mean) / (var + eps).sqrt() * w[i] + b[i])
        .collect()
}

/// erf by its Taylor series: erf(x) = 2/√π Σ (−1)^k x^{2k+1} / (k! (2k+1)), which converges for
/// all x; 200 terms are plenty for |x| < 6 (Abramowitz–Stegun 7.1.26 is too coarse here).
pub fn erf(x: f64) -> f64 {
    let mut sum = 0.0;
    let mut term = x; // (−1)^k x^{2k+1} / k!
    for k in 0..200 {
        sum += term / (2 * k + 1) as f64;
        term *= -x * x / (k + 1) as f64;
    }
    sum * 2.0 / std::f64::consts::PI.sqrt()
}

/// GeLU: `x·Φ(x)` with the erf (`gelu`) or the tanh approximation (`gelu_tanh`).
pub fn gelu(x: f64, act: Activation) -> f64 {
    match act {
        Activation::Gelu => 0.5 * x * (1.0 + erf(x / 2f64.sqrt())),
        Activation::GeluTanh => {
            0.5 * x
                * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x.powi(3))).tanh())
        }
    }
}

/// The read-out at every column of `tokens` (one token per column, `d + 1` values each).
pub fn forward(c: &ModelConfig, t: &NamedTensors, tokens: &[Vec<f64>]) -> Vec<f64> {
    let mut h = embed(t, tokens);
    for (l, layer) in c.layers.iter().enumerate() {
        let p = format!("layers.{l}");
        if let Some(a) = &layer.attn {
            let upd = attention(c, layer, a, t, &p, &h);
            for (x, u) in h.iter_mut().zip(upd) {
                for (a, b) in x.iter_mut().zip(u) {
                    *a += b;
                }
            }
        }
        if let Some(m) = &layer.mlp {
            for x in h.iter_mut() {
                let out = mlp(layer, m, t, &p, x);
                for (a, b) in x.iter_mut().zip(out) {
                    *a += b;
                }
            }
        }
    }
    h.iter()
        .map(|x| {
            let x = match c.final_norm {
                Some(n) => lnorm(t, "final_norm", x, n.eps),
                None => x.clone(),
            };
            lin(t, "readout", &x)[0]
        })
        .collect()
}

/// Column s of the hidden state: `embed.weight · token_s + embed.bias + pos.weight[s]`.
fn embed(t: &NamedTensors, tokens: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let pos = tensor(t, "pos.weight");
    tokens
        .iter()
        .enumerate()
        .map(|(s, tok)| {
            lin(t, "embed", tok)
                .iter()
                .enumerate()
                .map(|(i, v)| v + pos.at2(s, i))
                .collect()
        })
        .collect()
}

/// The attention update of every column (added to the residual by the caller): per head, causal
/// softmax over the scores `q·k/√head_dim` (with `qk`) plus the bias pattern entry (with `bias`),
/// and the null key (with `zero_attn`: score = its bias entry, or 0; value 0); momentum adds
/// `η^(t−s)·v_s` for every earlier column s; then the output projection.
#[allow(clippy::needless_range_loop)] // index loops mirror the formulas
fn attention(
    c: &ModelConfig,
    layer: &LayerConfig,
    a: &AttnConfig,
    t: &NamedTensors,
    p: &str,
    h: &[Vec<f64>],
) -> Vec<Vec<f64>> {
    let tl = h.len();
    let ml = c.max_len;
    let an: Vec<Vec<f64>> = h
        .iter()
        .map(|x| match layer.attn_norm {
            Some(n) => lnorm(t, &format!("{p}.attn_norm"), x, n.eps),
            None => x.clone(),
        })
        .collect();
    let v: Vec<Vec<f64>> = an
        .iter()
        .map(|x| lin(t, &format!("{p}.attn.v"), x))
        .collect();
    let (q, k): (Vec<Vec<f64>>, Vec<Vec<f64>>) = if a.qk {
        (
            an.iter()
                .map(|x| lin(t, &format!("{p}.attn.q"), x))
                .collect(),
            an.iter()
                .map(|x| lin(t, &format!("{p}.attn.k"), x))
                .collect(),
        )
    } else {
        (vec![], vec![])
    };
    let pattern = a.bias.then(|| tensor(t, &format!("{p}.attn.bias")));
    let bias = |hh: usize, tq: usize, s: usize| {
        pattern.expect("a bias pattern").data[(hh * ml + tq) * (ml + 1) + s]
    };
    let eta: Vec<f64> = match a.momentum {
        None => vec![],
        Some(MomentumConfig::Fixed { eta }) => vec![eta; a.heads],
        Some(MomentumConfig::Learned { .. }) => tensor(t, &format!("{p}.attn.momentum_logit"))
            .data
            .iter()
            .map(|z| 1.0 / (1.0 + (-z).exp()))
            .collect(),
    };
    let hd = a.head_dim;
    let mut upd = vec![];
    for tq in 0..tl {
        let mut o = vec![0.0; a.heads * hd];
        for hh in 0..a.heads {
            let r = hh * hd..(hh + 1) * hd;
            let mut scores: Vec<f64> = (0..=tq)
                .map(|s| {
                    let mut sc = 0.0;
                    if a.qk {
                        sc +=
                            r.clone().map(|i| q[tq][i] * k[s][i]).sum::<f64>() / (hd as f64).sqrt();
                    }
                    if a.bias {
                        sc += bias(hh, tq, s);
                    }
                    sc
                })
                .collect();
            if a.zero_attn {
                scores.push(if a.bias { bias(hh, tq, ml) } else { 0.0 });
            }
            let mx = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = scores.iter().map(|s| (s - mx).exp()).collect();
            let z: f64 = e.iter().sum();
            for s in 0..=tq {
                for i in r.clone() {
                    o[i] += e[s] / z * v[s][i];
                }
            }
            if !eta.is_empty() {
                for s in 0..tq {
                    for i in r.clone() {
                        o[i] += eta[hh].powi((tq - s) as i32) * v[s][i];
                    }
                }
            }
        }
        upd.push(lin(t, &format!("{p}.attn.o"), &o));
    }
    upd
}

/// The MLP update of one column (added to the residual by the caller), after the layer's norm if
/// it has one: `down · (gate(x) ⊙ up(x))` (bilinear) or `down · gelu(up(x))`.
fn mlp(layer: &LayerConfig, m: &MlpConfig, t: &NamedTensors, p: &str, x: &[f64]) -> Vec<f64> {
    let mi = match layer.norm {
        Some(n) => lnorm(t, &format!("{p}.norm"), x, n.eps),
        None => x.to_vec(),
    };
    let up = lin(t, &format!("{p}.mlp.up"), &mi);
    let inner: Vec<f64> = match m.kind {
        MlpKind::Bilinear => {
            let g = lin(t, &format!("{p}.mlp.gate"), &mi);
            g.iter().zip(&up).map(|(a, b)| a * b).collect()
        }
        MlpKind::Gelu => up.iter().map(|u| gelu(*u, m.activation)).collect(),
    };
    lin(t, &format!("{p}.mlp.down"), &inner)
}
