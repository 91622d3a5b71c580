//! All probes of one (readout, target), stacked along a probe axis p = h·K + i (hidden state h,
//! i-th probed k) and trained jointly with Adam on the sum of their losses — the same as training
//! each alone, since no parameter is shared and Adam's update is per parameter.

use super::data::{Hidden, TargetValues};
use super::{ProbeError, ProbeOptions, Readout, Result};
use crate::model::softmax_neg_inf;
use candle_core::{Device, Tensor, Var};
use candle_nn::optim::{AdamW, Optimizer, ParamsAdamW};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Held-out prompts per evaluation pass.
const EVAL_CHUNK: usize = 256;

/// One affine map per probe: weight [P, in, out], bias [P, 1, out].
struct Affine {
    w: Var,
    b: Var,
}

impl Affine {
    /// PyTorch's `nn.Linear` initialisation: weight and bias ~ U(−1/√in, 1/√in).
    fn new(
        probes: usize,
        fan_in: usize,
        fan_out: usize,
        rng: &mut ChaCha8Rng,
        dev: &Device,
    ) -> Result<Self> {
        let bound = 1.0 / (fan_in as f32).sqrt();
        let mut uniform = |len: usize| -> Vec<f32> {
            (0..len).map(|_| rng.random_range(-bound..bound)).collect()
        };
        let w = Tensor::from_vec(
            uniform(probes * fan_in * fan_out),
            (probes, fan_in, fan_out),
            dev,
        )?;
        let b = Tensor::from_vec(uniform(probes * fan_out), (probes, 1, fan_out), dev)?;
        Ok(Affine {
            w: Var::from_tensor(&w)?,
            b: Var::from_tensor(&b)?,
        })
    }

    /// [P, B, in] → [P, B, out].
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.matmul(self.w.as_tensor())?
            .broadcast_add(self.b.as_tensor())?)
    }

    fn vars(&self) -> Vec<Var> {
        vec![self.w.clone(), self.b.clone()]
    }
}

/// The read-out after the projection.
enum Head {
    Linear(Affine),
    /// Two layers with a GeLU (erf form) between them.
    Mlp(Affine, Affine),
}

/// Trained probes of one (readout, target) at every hidden state and probed k.
pub struct Probes {
    /// Position scores [L+1, K, T].
    scores: Var,
    /// [K, T]: 0 on the columns 0..=2k a probe after k examples may read, −∞ elsewhere.
    mask: Tensor,
    proj: Affine,
    head: Head,
    /// Mean loss per probe (standardised units, summed over coordinates) over the last steps.
    pub final_train_loss: f64,
}

/// The mask of [`Probes::mask`] for prompts of `columns` columns.
fn column_mask(ks: &[usize], columns: usize, dev: &Device) -> Result<Tensor> {
    let mut m = Vec::with_capacity(ks.len() * columns);
    for &k in ks {
        m.extend((0..columns).map(|t| if t <= 2 * k { 0f32 } else { f32::NEG_INFINITY }));
    }
    Ok(Tensor::from_vec(m, (ks.len(), columns), dev)?)
}

impl Probes {
    fn new(
        hidden: &Hidden,
        ks: &[usize],
        d: usize,
        readout: Readout,
        opts: &ProbeOptions,
        rng: &mut ChaCha8Rng,
    ) -> Result<Probes> {
        let dev = hidden.states.device();
        let p = hidden.outputs * ks.len();
        let scores = Tensor::zeros(
            (hidden.outputs, ks.len(), hidden.columns),
            candle_core::DType::F32,
            dev,
        )?;
        let proj = Affine::new(p, hidden.width, opts.proj, rng, dev)?;
        let head = match readout {
            Readout::Linear => Head::Linear(Affine::new(p, opts.proj, d, rng, dev)?),
            Readout::Mlp => Head::Mlp(
                Affine::new(p, opts.proj, opts.mlp_hidden, rng, dev)?,
                Affine::new(p, opts.mlp_hidden, d, rng, dev)?,
            ),
        };
        Ok(Probes {
            scores: Var::from_tensor(&scores)?,
            mask: column_mask(ks, hidden.columns, dev)?,
            proj,
            head,
            final_train_loss: f64::NAN,
        })
    }

    /// Projection and read-out parameters (everything but the scores).
    fn weight_vars(&self) -> Vec<Var> {
        let mut v = self.proj.vars();
        match &self.head {
            Head::Linear(a) => v.extend(a.vars()),
            Head::Mlp(a, b) => v.extend(a.vars().into_iter().chain(b.vars())),
        }
        v
    }

    /// Predictions [L+1, K, B, d] from a batch of hidden states [L+1, T, B, W].
    fn forward(&self, batch: &Tensor) -> Result<Tensor> {
        let (outputs, columns, b, width) = batch.dims4()?;
        let alpha = softmax_neg_inf(&self.scores.as_tensor().broadcast_add(&self.mask)?)?;
        let k = alpha.dim(1)?;
        let pooled = alpha
            .matmul(&batch.reshape((outputs, columns, b * width))?)?
            .reshape((outputs * k, b, width))?;
        let p = self.proj.forward(&pooled)?;
        let out = match &self.head {
            Head::Linear(a) => a.forward(&p)?,
            Head::Mlp(a, c) => c.forward(&a.forward(&p)?.gelu_erf()?)?,
        };
        let d = out.dim(2)?;
        Ok(out.reshape((outputs, k, b, d))?)
    }

    /// Summed squared error per (h, k, coordinate) over a batch: [L+1, K, d].
    fn squared_errors(
        &self,
        hidden: &Hidden,
        values: &TargetValues,
        idx: &Tensor,
    ) -> Result<Tensor> {
        let batch = hidden.states.index_select(idx, 2)?;
        let target = values.standardised.index_select(idx, 1)?.unsqueeze(0)?;
        let diff = self.forward(&batch)?.broadcast_sub(&target)?;
        Ok(diff.sqr()?.sum(2)?)
    }

    /// Held-out mean squared error in standardised units, per probe p = h·K + i and coordinate.
    pub fn held_out(&self, hidden: &Hidden, values: &TargetValues) -> Result<Vec<Vec<f64>>> {
        let dev = hidden.states.device();
        let mut total: Option<Tensor> = None;
        let test: Vec<u32> = (hidden.n_train..hidden.n_train + hidden.n_test)
            .map(|i| i as u32)
            .collect();
        for chunk in test.chunks(EVAL_CHUNK) {
            let idx = Tensor::from_slice(chunk, chunk.len(), dev)?;
            let se = self.squared_errors(hidden, values, &idx)?.detach();
            total = Some(match total {
                None => se,
                Some(t) => (t + se)?,
            });
        }
        let total = total.ok_or_else(|| ProbeError::Arg {
            arg: "--test",
            msg: "no held-out prompts".into(),
        })?;
        let mse = (total.to_dtype(candle_core::DType::F64)? / hidden.n_test as f64)?;
        let (outputs, k, d) = mse.dims3()?;
        Ok(mse.reshape((outputs * k, d))?.to_vec2::<f64>()?)
    }
}

fn adam(vars: Vec<Var>, lr: f64) -> Result<AdamW> {
    let params = ParamsAdamW {
        lr,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.0,
    };
    Ok(AdamW::new(vars, params)?)
}

/// Train the probes of one (readout, target) for `opts.steps` Adam steps on batches of
/// `opts.batch` training prompts drawn with replacement (seeded by `seed`).
pub fn train(
    hidden: &Hidden,
    values: &TargetValues,
    ks: &[usize],
    readout: Readout,
    opts: &ProbeOptions,
    seed: u64,
    bar: &indicatif::ProgressBar,
) -> Result<Probes> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let d = values.standardised.dim(2)?;
    let mut probes = Probes::new(hidden, ks, d, readout, opts, &mut rng)?;
    let mut score_opt = adam(vec![probes.scores.clone()], opts.score_lr)?;
    let mut weight_opt = adam(probes.weight_vars(), opts.lr)?;
    let dev = hidden.states.device().clone();
    let probe_count = (hidden.outputs * ks.len()) as f64;
    let tail = (opts.steps / 10).max(1);
    let mut tail_loss = 0.0;
    for step in 0..opts.steps {
        let idx: Vec<u32> = (0..opts.batch)
            .map(|_| rng.random_range(0..hidden.n_train as u32))
            .collect();
        let idx = Tensor::from_vec(idx, opts.batch, &dev)?;
        let loss = (probes.squared_errors(hidden, values, &idx)?.sum_all()? / opts.batch as f64)?;
        let value = loss.to_scalar::<f32>()? as f64;
        if !value.is_finite() {
            return Err(ProbeError::Arg {
                arg: "--lr",
                msg: format!("probe loss is {value} at step {step}: lower the learning rates"),
            });
        }
        if step + tail >= opts.steps {
            tail_loss += value / probe_count / tail as f64;
        }
        let grads = loss.backward()?;
        score_opt.step(&grads)?;
        weight_opt.step(&grads)?;
        bar.inc(1);
    }
    probes.final_train_loss = tail_loss;
    Ok(probes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probe_after_k_examples_sees_columns_up_to_2k() {
        let m = column_mask(&[1, 3], 7, &Device::Cpu).unwrap();
        let m = m.to_vec2::<f32>().unwrap();
        let seen = |row: &[f32]| row.iter().filter(|v| v.is_finite()).count();
        assert_eq!((seen(&m[0]), seen(&m[1])), (3, 7));
        assert!(m[0][2] == 0.0 && m[0][3] == f32::NEG_INFINITY);
    }
}
