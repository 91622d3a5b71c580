//! What the probes read and predict: the standardised hidden states of every prompt (computed
//! once, no gradients) and the standardised targets.
//!
//! Prompts are ordered training first (`0..n_train`), then held out; every statistic used to
//! standardise comes from the training prompts only.

use super::{ProbeError, Result, Target};
use crate::model::Transformer;
use crate::prompt::Prompt;
use crate::solvers::{ols_weights, ridge_weights};
use candle_core::{DType, Device, Tensor};

/// Prompts per forward pass while collecting hidden states.
const CHUNK: usize = 128;
/// Largest hidden-state store (bytes, f64 working copy plus the f32 store) a run may build.
const MAX_BYTES: usize = 6 << 30;
/// A row whose standard deviation is at most this fraction of its mean's magnitude (or exactly
/// 0) is constant: it is mapped to 0.
const CONSTANT_ROW: f64 = 1e-9;

/// Standardised hidden states of all prompts.
pub struct Hidden {
    /// [L+1, T, N, width] f32: hidden state h (0 = embedding output), column t, prompt i.
    pub states: Tensor,
    pub outputs: usize,
    pub columns: usize,
    pub width: usize,
    pub n_train: usize,
    pub n_test: usize,
    /// Rows found constant on the training prompts, per hidden state (mapped to 0).
    pub constant_rows: Vec<usize>,
}

impl Hidden {
    /// Run the model on every prompt (in chunks, f64 statistics) and standardise each row of
    /// each hidden state with the training prompts' mean and standard deviation over prompts and
    /// columns.
    pub fn collect(model: &Transformer, prompts: &[Prompt], n_train: usize) -> Result<Hidden> {
        let c = &model.config;
        let (outputs, columns) = (c.layers.len() + 1, prompts[0].columns());
        let bytes = outputs * prompts.len() * columns * c.width * (8 + 4);
        if bytes > MAX_BYTES {
            return Err(ProbeError::Arg {
                arg: "--train",
                msg: format!(
                    "the hidden states of {} prompts ({outputs} hidden states × {columns} columns × width {}) need {:.1} GiB; use fewer prompts (--train/--test)",
                    prompts.len(),
                    c.width,
                    bytes as f64 / (1u64 << 30) as f64
                ),
            });
        }
        let raw = raw_states(model, prompts)?;
        let (mean, scale, constant_rows) = row_statistics(&raw, n_train)?;
        let states = raw
            .broadcast_sub(&mean)?
            .broadcast_mul(&scale)?
            .to_dtype(DType::F32)?
            .transpose(1, 2)?
            .contiguous()?;
        Ok(Hidden {
            states,
            outputs,
            columns,
            width: c.width,
            n_train,
            n_test: prompts.len() - n_train,
            constant_rows,
        })
    }
}

/// All hidden states in f64: [L+1, N, T, width].
fn raw_states(model: &Transformer, prompts: &[Prompt]) -> Result<Tensor> {
    let mut chunks = Vec::new();
    for chunk in prompts.chunks(CHUNK) {
        let tokens = model.prompts_tensor(chunk)?;
        let hs = model.hidden_states(&tokens)?;
        chunks.push(Tensor::stack(&hs, 0)?.to_dtype(DType::F64)?);
    }
    Ok(Tensor::cat(&chunks, 1)?)
}

/// Per hidden state and row, over the training prompts and all columns: the mean [L+1,1,1,W],
/// the scale 1/std (0 for a constant row) [L+1,1,1,W], and the count of constant rows per state.
fn row_statistics(raw: &Tensor, n_train: usize) -> Result<(Tensor, Tensor, Vec<usize>)> {
    let (outputs, _, columns, width) = raw.dims4()?;
    let train = raw
        .narrow(1, 0, n_train)?
        .reshape((outputs, n_train * columns, width))?;
    let mean = train.mean_keepdim(1)?;
    let var = train.broadcast_sub(&mean)?.sqr()?.mean_keepdim(1)?;
    let (mean_v, var_v) = (
        mean.flatten_all()?.to_vec1::<f64>()?,
        var.flatten_all()?.to_vec1::<f64>()?,
    );
    let mut constant_rows = vec![0; outputs];
    let scale: Vec<f64> = mean_v
        .iter()
        .zip(&var_v)
        .enumerate()
        .map(|(i, (m, v))| {
            let std = v.sqrt();
            if std == 0.0 || std <= CONSTANT_ROW * m.abs() {
                constant_rows[i / width] += 1;
                0.0
            } else {
                1.0 / std
            }
        })
        .collect();
    let shape = (outputs, 1, 1, width);
    let scale = Tensor::from_vec(scale, shape, raw.device())?;
    Ok((mean.reshape(shape)?, scale, constant_rows))
}

/// One target's values after every probed k, standardised per (k, coordinate).
pub struct TargetValues {
    /// [K, N, d] f32: (v − mean) / std with the training prompts' statistics.
    pub standardised: Tensor,
    /// std per (k, coordinate), to map standardised errors back to raw units.
    pub scale: Vec<Vec<f64>>,
    /// Held-out variance per k, averaged over coordinates (the normaliser of the error).
    pub test_variance: Vec<f64>,
}

/// The target after `k` examples of `p`.
pub fn target_vector(p: &Prompt, target: Target, k: usize, lambda: f64) -> Vec<f64> {
    let (xs, ys) = (&p.xs[..k], &p.ys[..k]);
    match target {
        Target::Xty => {
            let mut v = vec![0.0; p.d()];
            for (x, y) in xs.iter().zip(ys) {
                for (vj, xj) in v.iter_mut().zip(x) {
                    *vj += xj * y;
                }
            }
            v
        }
        Target::Ols => ols_weights(xs, ys),
        Target::Ridge => ridge_weights(xs, ys, lambda),
    }
}

/// Mean and (biased) variance of each coordinate over `rows`.
fn moments(rows: &[Vec<f64>]) -> (Vec<f64>, Vec<f64>) {
    let count = rows.len() as f64;
    let d = rows[0].len();
    let mean: Vec<f64> = (0..d)
        .map(|j| rows.iter().map(|r| r[j]).sum::<f64>() / count)
        .collect();
    let var = (0..d)
        .map(|j| rows.iter().map(|r| (r[j] - mean[j]).powi(2)).sum::<f64>() / count)
        .collect();
    (mean, var)
}

/// A coordinate whose spread is rounding noise: std ≤ 1e-12·max(|mean|, 1).
fn constant(var: f64, mean: f64) -> bool {
    var.sqrt() <= 1e-12 * mean.abs().max(1.0)
}

impl TargetValues {
    pub fn compute(
        prompts: &[Prompt],
        target: Target,
        ks: &[usize],
        lambda: f64,
        n_train: usize,
        device: &Device,
    ) -> Result<TargetValues> {
        let (d, n) = (prompts[0].d(), prompts.len());
        let mut flat = Vec::with_capacity(ks.len() * n * d);
        let (mut scale, mut test_variance) = (Vec::new(), Vec::new());
        for &k in ks {
            let values: Vec<Vec<f64>> = prompts
                .iter()
                .map(|p| target_vector(p, target, k, lambda))
                .collect();
            let (mean, var) = moments(&values[..n_train]);
            let std: Vec<f64> = var
                .iter()
                .zip(&mean)
                .map(|(v, m)| if constant(*v, *m) { 1.0 } else { v.sqrt() })
                .collect();
            let (test_mean, test_var) = moments(&values[n_train..]);
            let held_out = test_var.iter().sum::<f64>() / d as f64;
            if test_var
                .iter()
                .zip(&test_mean)
                .all(|(v, m)| constant(*v, *m))
            {
                return Err(ProbeError::Arg {
                    arg: "--targets",
                    msg: format!(
                        "{} after k = {k} examples is constant on the held-out prompts (a fixed w?): nothing to probe",
                        target.name()
                    ),
                });
            }
            for v in &values {
                flat.extend(
                    v.iter()
                        .zip(&mean)
                        .zip(&std)
                        .map(|((x, m), s)| ((x - m) / s) as f32),
                );
            }
            scale.push(std);
            test_variance.push(held_out);
        }
        let standardised = Tensor::from_vec(flat, (ks.len(), n, d), device)?;
        Ok(TargetValues {
            standardised,
            scale,
            test_variance,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prompt::PromptDistribution;

    #[test]
    fn targets_are_the_moment_vector_and_the_solvers_on_the_first_k_examples() {
        let p = &PromptDistribution::new(2, 5).sample_batch(1, 3)[0];
        let xty = target_vector(p, Target::Xty, 2, 0.5);
        for (j, v) in xty.iter().enumerate() {
            let want = p.xs[0][j] * p.ys[0] + p.xs[1][j] * p.ys[1];
            assert!((v - want).abs() < 1e-12);
        }
        // Noiseless, k ≥ d: least squares recovers w; ridge shrinks it.
        let ols = target_vector(p, Target::Ols, 4, 0.5);
        assert!(ols.iter().zip(&p.w).all(|(a, b)| (a - b).abs() < 1e-9));
        let ridge = target_vector(p, Target::Ridge, 4, 0.5);
        assert!(ridge.iter().zip(&p.w).any(|(a, b)| (a - b).abs() > 1e-6));
    }

    #[test]
    fn targets_are_standardised_on_training_prompts_and_constant_ones_rejected() {
        let prompts = PromptDistribution::new(2, 3).sample_batch(40, 1);
        let v =
            TargetValues::compute(&prompts, Target::Xty, &[1, 3], 0.5, 30, &Device::Cpu).unwrap();
        assert_eq!(v.standardised.dims(), &[2, 40, 2]);
        let train = v.standardised.narrow(1, 0, 30).unwrap();
        let mean = train.mean(1).unwrap().to_vec2::<f32>().unwrap();
        assert!(mean.iter().flatten().all(|m| m.abs() < 1e-5));
        let mut fixed = PromptDistribution::new(2, 3);
        fixed.w_fixed = Some(1.0);
        let prompts = fixed.sample_batch(40, 1);
        assert!(TargetValues::compute(&prompts, Target::Ols, &[3], 0.5, 30, &Device::Cpu).is_err());
    }
}
