//! The three runs of Dai et al.'s comparison on one prompt — zero-shot (ZSL), in-context (ICL)
//! and explicitly finetuned (FT) — and what each shows at the query token (docs/ANALYSIS.md,
//! "ICL vs finetuning").
//!
//! Every run sees the same fixed neutral prefix (m demonstrations of an unrelated task) before
//! its own tokens: a one-column prompt has a single key, whose softmax weight is 1 whatever the
//! keys are, so without the prefix finetuning could never move W_K.
//!
//! - ZSL: `[prefix, x̃_q]`, the unchanged model.
//! - ICL: `[prefix, x̃_1, ỹ_1, …, x̃_k, ỹ_k, x̃_q]`, the unchanged model.
//! - FT: the model after k updates, on `[prefix, x̃_q]`. An update trains on one demonstration
//!   as its own sequence `[prefix, x̃_i, ỹ_i]` with loss (ŷ(x̃_i) − y_i)² (ỹ_i is causal-after
//!   the prediction, so it does not change the loss; it is there so that both demonstration
//!   tokens have a recorded query vector for the Kendall map).

use crate::model::{AttnTrace, Trace, TraceOptions, Transformer};
use candle_core::{backprop::GradStore, DType as CDType, IndexOp, Tensor, Var};

/// Which parameters an explicit update trains, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Variant {
    /// Dai's finetuning: SGD on the K and V projections (weights and biases, all layers), one
    /// epoch, batch 1, demonstrations in prompt order.
    Ft,
    /// One full-batch gradient step on K and V from the unchanged model: θ₀ − lr·Σ_{i≤k} ∇ℓ_i
    /// (order-free; the closest counterpart of ΔW_ICL = Σ_i v_i k_iᵀ).
    Gd1,
    /// SGD as `Ft`, but on every parameter.
    All,
    /// Deutch et al.'s layer-causal SGD on K and V: every layer's input is detached and every
    /// layer's output read out, the losses summed, so layer l's update depends on layers ≤ l
    /// only (as in ICL, where later layers cannot change earlier ones).
    Causal,
}

impl Variant {
    pub const ALL: [Variant; 4] = [Variant::Ft, Variant::Gd1, Variant::All, Variant::Causal];

    pub fn name(self) -> &'static str {
        match self {
            Variant::Ft => "ft",
            Variant::Gd1 => "gd1",
            Variant::All => "all",
            Variant::Causal => "causal",
        }
    }

    /// Whether the update trains parameter `name`.
    fn trains(self, name: &str) -> bool {
        match self {
            Variant::All => true,
            _ => {
                let kv = |p: &str| name.contains(&format!(".attn.{p}."));
                kv("k") || kv("v")
            }
        }
    }
}

/// What a forward pass shows at one token, per layer l (docs/ANALYSIS.md, "ICL vs finetuning").
#[derive(Debug, Clone, Default)]
pub struct TokenView {
    /// The prediction at the token.
    pub pred: f64,
    /// h^l: the attention sub-layer's output after W_O (before the residual add), [L][width].
    pub h: Vec<Vec<f64>>,
    /// Pre-softmax scores q·k/√d_h of the token to every earlier key, [L][head][key].
    pub scores: Vec<Vec<Vec<f64>>>,
    /// The full-width query vector (heads concatenated) scaled by 1/√d_h, [L][heads·d_h].
    pub q: Vec<Vec<f64>>,
}

fn row(t: &Tensor) -> candle_core::Result<Vec<f64>> {
    t.to_dtype(CDType::F64)?.flatten_all()?.to_vec1::<f64>()
}

/// The view of batch entry `b` at token `t` from a traced forward pass.
pub fn token_view(trace: &Trace, b: usize, t: usize) -> anyhow::Result<TokenView> {
    let mut view = TokenView {
        pred: trace
            .pred
            .i((b, t))?
            .to_dtype(CDType::F64)?
            .to_scalar::<f64>()?,
        ..Default::default()
    };
    for at in trace.attn.iter().flatten() {
        let AttnTrace { q, scores, out, .. } = at;
        let q = q
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("internal: a traced layer without queries"))?;
        let (_, heads, _, hd) = q.dims4()?;
        view.h.push(row(&out.i((b, t))?)?);
        view.scores.push(
            (0..heads)
                .map(|h| row(&scores.i((b, h, t))?.narrow(0, 0, t + 1)?))
                .collect::<candle_core::Result<_>>()?,
        );
        let scale = 1.0 / (hd as f64).sqrt();
        let qt = row(&q.i((b, .., t))?)?;
        view.q.push(qt.into_iter().map(|v| v * scale).collect());
    }
    Ok(view)
}

/// One demonstration (x, y).
pub type Example<'a> = (&'a [f64], f64);

/// Tokens `[examples…, x̃_query?, ỹ_tail?]` as one prompt row (each token d+1 long: y first).
pub fn token_row(examples: &[Example], query: Option<&[f64]>, tail_y: Option<f64>) -> Vec<f64> {
    let d = examples
        .first()
        .map(|e| e.0.len())
        .or(query.map(|q| q.len()))
        .unwrap_or(0);
    let mut out = Vec::new();
    let x_tok = |out: &mut Vec<f64>, x: &[f64]| {
        out.push(0.0);
        out.extend_from_slice(x);
    };
    let y_tok = |out: &mut Vec<f64>, y: f64| {
        out.push(y);
        out.extend(std::iter::repeat_n(0.0, d));
    };
    for (x, y) in examples {
        x_tok(&mut out, x);
        y_tok(&mut out, *y);
    }
    if let Some(q) = query {
        x_tok(&mut out, q);
    }
    if let Some(y) = tail_y {
        y_tok(&mut out, y);
    }
    out
}

/// A trainable copy of a model with its initial parameters kept, so that every prompt's
/// finetuning starts from the same weights.
pub struct Engine {
    pub model: Transformer,
    /// (name, variable, initial value) for every parameter, by name.
    vars: Vec<(String, Var, Tensor)>,
    pub d: usize,
}

/// The per-update record of an explicit update: each layer's scaled query vectors at the
/// demonstration's two tokens, [L][2][heads·d_h] (the "training tokens" of the Kendall map).
pub type TrainQueries = Vec<[Vec<f64>; 2]>;

impl Engine {
    /// A trainable engine over `model`'s parameters (run in the model's dtype).
    pub fn new(model: &Transformer) -> anyhow::Result<Self> {
        let named = model.to_named()?;
        let dtype = crate::model::config_dtype(model.dtype());
        let model =
            Transformer::from_named(model.config.clone(), &named, model.device(), dtype, true)?;
        let vm = model
            .varmap()
            .ok_or_else(|| anyhow::anyhow!("internal: engine model not trainable"))?;
        let mut vars: Vec<(String, Var, Tensor)> = vm
            .data()
            .lock()
            .expect("varmap lock")
            .iter()
            .map(|(n, v)| Ok((n.clone(), v.clone(), v.as_tensor().copy()?)))
            .collect::<candle_core::Result<_>>()?;
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let d = model.config.d;
        Ok(Engine { model, vars, d })
    }

    /// Back to the initial parameters.
    pub fn reset(&self) -> anyhow::Result<()> {
        for (_, var, init) in &self.vars {
            var.set(init)?;
        }
        Ok(())
    }

    fn tensor(&self, rows: &[Vec<f64>]) -> anyhow::Result<Tensor> {
        let t = rows[0].len() / (self.d + 1);
        let data: Vec<f64> = rows.iter().flatten().copied().collect();
        Ok(Tensor::from_vec(
            data,
            (rows.len(), t, self.d + 1),
            self.model.device(),
        )?)
    }

    /// A traced forward pass of equally long token rows.
    pub fn trace(&self, rows: &[Vec<f64>], opts: &TraceOptions) -> anyhow::Result<Trace> {
        Ok(self.model.forward_traced(&self.tensor(rows)?, opts)?)
    }

    /// The views at token `t` of every row (one batched forward pass).
    pub fn views(&self, rows: &[Vec<f64>], t: usize) -> anyhow::Result<Vec<TokenView>> {
        let trace = self.trace(rows, &TraceOptions::default())?;
        (0..rows.len()).map(|b| token_view(&trace, b, t)).collect()
    }

    /// The gradient of one demonstration's loss for `variant` at the current parameters, with
    /// the training tokens' query vectors. `prefix` holds the neutral prefix's examples.
    pub fn demo_gradient(
        &self,
        variant: Variant,
        prefix: &[Example],
        demo: Example,
    ) -> anyhow::Result<(GradStore, TrainQueries)> {
        let row = token_row(&[prefix, &[demo]].concat(), None, None);
        let t = 2 * prefix.len(); // the demonstration's x̃
        let causal = variant == Variant::Causal;
        let opts = TraceOptions {
            layer_readouts: causal,
            detach_layer_inputs: causal,
            ..Default::default()
        };
        let trace = self.trace(&[row], &opts)?;
        let sq = |p: &Tensor| -> candle_core::Result<Tensor> {
            p.i((0, t))?.affine(1.0, -demo.1)?.sqr()
        };
        let loss = if causal {
            let losses = trace
                .layer_preds
                .iter()
                .map(sq)
                .collect::<candle_core::Result<Vec<_>>>()?;
            Tensor::stack(&losses, 0)?.sum_all()?
        } else {
            sq(&trace.pred)?
        };
        let grads = loss.backward()?;
        let at_x = token_view(&trace, 0, t)?;
        let at_y = token_view(&trace, 0, t + 1)?;
        let queries = at_x
            .q
            .into_iter()
            .zip(at_y.q)
            .map(|(a, b)| [a, b])
            .collect();
        Ok((grads, queries))
    }

    /// θ ← θ − lr·g on the parameters `variant` trains.
    pub fn apply(&self, variant: Variant, grads: &GradStore, lr: f64) -> anyhow::Result<()> {
        for (name, var, _) in &self.vars {
            if !variant.trains(name) {
                continue;
            }
            if let Some(g) = grads.get(var.as_tensor()) {
                var.set(&(var.as_tensor() - (g * lr)?)?)?;
            }
        }
        Ok(())
    }

    /// The gradients `variant` trains, as detached tensors in the order of [`Self::vars`]
    /// (None where the loss does not reach the parameter).
    pub fn trained_grads(&self, variant: Variant, grads: &GradStore) -> Vec<Option<Tensor>> {
        self.vars
            .iter()
            .map(|(name, var, _)| {
                if variant.trains(name) {
                    grads.get(var.as_tensor()).map(|g| g.detach())
                } else {
                    None
                }
            })
            .collect()
    }

    /// θ ← θ₀ − lr·Σg for summed gradients from [`Self::trained_grads`].
    pub fn set_from_initial(&self, summed: &[Option<Tensor>], lr: f64) -> anyhow::Result<()> {
        for ((_, var, init), g) in self.vars.iter().zip(summed) {
            match g {
                Some(g) => var.set(&(init - (g * lr)?)?)?,
                None => var.set(init)?,
            }
        }
        Ok(())
    }
}
