//! The fused step's update: global-norm clipping and AdamW, written in place.

use super::{ops, storage, Real};
use crate::model::schema::Weights;
use crate::model::Transformer;
use crate::train::{AdamW, OptimConfig, Result, TrainError};

/// Scale every gradient by `min(1, clip/‖g‖)` (the global L2 norm, summed in f64); `clip = 0`
/// leaves them.
pub(super) fn clip<T: Real>(grads: &mut Weights<Vec<T>>, clip: f64) {
    if clip <= 0.0 {
        return;
    }
    let mut sq = 0.0;
    grads.visit(|g| sq += g.iter().map(|v| v.to_f64() * v.to_f64()).sum::<f64>());
    let norm = sq.sqrt();
    if norm > clip {
        let scale = T::of(clip / norm);
        for g in grads.leaves_mut() {
            g.iter_mut().for_each(|v| *v *= scale);
        }
    }
}

/// AdamW as [`AdamW::step`] does it, elementwise: moments, bias corrections, decoupled weight
/// decay, written in place into the moments' and the variables' storage; the step count
/// advanced.
pub(super) fn adamw<T: Real>(
    model: &Transformer,
    opt: &mut AdamW,
    grads: &Weights<Vec<T>>,
    lr: f64,
    o: &OptimConfig,
) -> Result<()> {
    opt.t += 1;
    let bc1 = T::of(1.0 - o.beta1.powi(opt.t as i32));
    let bc2 = T::of(1.0 - o.beta2.powi(opt.t as i32));
    let (b1, b2) = (T::of(o.beta1), T::of(o.beta2));
    let (c1, c2) = (T::of(1.0 - o.beta1), T::of(1.0 - o.beta2));
    let (decay, eps, lr_t) = (
        T::of(1.0 - lr * o.weight_decay),
        T::of(o.adam_eps),
        T::of(lr),
    );
    let spec = Weights::spec(&model.config);
    let names = spec.leaves();
    let params = model.weights().leaves();
    for ((spec, p), g) in names.iter().zip(params).zip(grads.leaves()) {
        let missing = || TrainError::Internal(format!("no AdamW moment for {}", spec.name));
        let m = opt.m.get(&spec.name).ok_or_else(missing)?;
        let v = opt.v.get(&spec.name).ok_or_else(missing)?;
        storage::update(m, |m: &mut [T]| {
            ops::simd(
                #[inline(always)]
                || {
                    for (m, &g) in m.iter_mut().zip(g) {
                        *m = *m * b1 + g * c1;
                    }
                },
            )
        })?;
        storage::update(v, |v: &mut [T]| {
            ops::simd(
                #[inline(always)]
                || {
                    for (v, &g) in v.iter_mut().zip(g) {
                        *v = *v * b2 + g * g * c2;
                    }
                },
            )
        })?;
        storage::with_slice(m, |m: &[T]| {
            storage::with_slice(v, |v: &[T]| {
                storage::update(p, |p: &mut [T]| {
                    ops::simd(
                        #[inline(always)]
                        || {
                            for ((p, &m), &v) in p.iter_mut().zip(m).zip(v) {
                                let update = (m / bc1) / ((v / bc2).sqrt() + eps);
                                *p = *p * decay - update * lr_t;
                            }
                        },
                    )
                })
            })
        })???;
    }
    Ok(())
}
