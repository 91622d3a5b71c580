//! AdamW with decoupled weight decay and global-norm gradient scaling (the training mode's
//! optimiser, docs/ARCHITECTURE.md).
//!
//! On the CPU the update of a parameter is one loop over its values ([`fused_update`]) instead of
//! eleven Candle tensor operations, each of which allocates its result: for the tiny model's ~60
//! parameters that is ~650 allocations and dispatches per step saved. The loop performs the same
//! floating-point operations in the same order as the composition (Candle's `tensor * c` is
//! `x·c + 0` in the tensor's dtype, `tensor / c` is `x·(1/c) + 0`, and so on), so both paths give
//! bit-identical parameters — `tests/train.rs` checks this — and [`AdamW::step_composed`] stays
//! as the path for other devices and as the reference.

use crate::model::Transformer;
use crate::train::{OptimConfig, Result, TrainError};
use candle_core::{backprop::GradStore, DType as CDType, Device, Tensor, Var, WithDType};
use std::collections::BTreeMap;

/// AdamW with decoupled weight decay; moments are kept per parameter name.
pub struct AdamW {
    pub m: BTreeMap<String, Tensor>,
    pub v: BTreeMap<String, Tensor>,
    /// Number of updates applied so far.
    pub t: usize,
}

/// The constants of one update, in f64 (each is rounded to the parameter's dtype where Candle's
/// composition rounds it).
#[derive(Debug, Clone, Copy)]
struct Consts {
    /// Gradient scale from clipping (1 when none).
    scale: f64,
    beta1: f64,
    beta2: f64,
    /// 1/(1 − β₁ᵗ) and 1/(1 − β₂ᵗ).
    inv_bc1: f64,
    inv_bc2: f64,
    eps: f64,
    /// 1 − lr·weight_decay.
    decay: f64,
    lr: f64,
}

/// One AdamW update of `theta` with gradient `g` and moments `m`, `v`, in place, as the Candle
/// composition of [`AdamW::step_composed`] computes it, operation for operation:
/// g ← g·s; m ← m·β₁ + g·(1−β₁); v ← v·β₂ + g²·(1−β₂); m̂ = m/(1−β₁ᵗ); v̂ = v/(1−β₂ᵗ);
/// θ ← θ·(1 − lr·λ) − lr·m̂/(√v̂ + ε).
fn fused_update<T: WithDType + num_traits::Float>(
    theta: &mut [T],
    g: &[T],
    m: &mut [T],
    v: &mut [T],
    c: &Consts,
) {
    let f = T::from_f64;
    let zero = f(0.0);
    let (scale, b1, b1c, b2, b2c) = (
        f(c.scale),
        f(c.beta1),
        f(1.0 - c.beta1),
        f(c.beta2),
        f(1.0 - c.beta2),
    );
    let (ibc1, ibc2, eps, decay, lr, one) = (
        f(c.inv_bc1),
        f(c.inv_bc2),
        f(c.eps),
        f(c.decay),
        f(c.lr),
        f(1.0),
    );
    let scaled = c.scale != 1.0;
    for i in 0..theta.len() {
        let gi = if scaled { g[i] * scale + zero } else { g[i] };
        m[i] = (m[i] * b1 + zero) + (gi * b1c + zero);
        v[i] = (v[i] * b2 + zero) + ((gi * gi) * b2c + zero);
        let mhat = m[i] * ibc1 + zero;
        let vhat = v[i] * ibc2 + zero;
        let update = mhat / (vhat.sqrt() * one + eps);
        theta[i] = (theta[i] * decay + zero) - (update * lr + zero);
    }
}

fn values<T: WithDType>(t: &Tensor) -> candle_core::Result<Vec<T>> {
    t.flatten_all()?.to_vec1::<T>()
}

/// [`fused_update`] on one parameter's tensors (read out, updated, written back).
fn fused_param<T: WithDType + num_traits::Float>(
    var: &Var,
    g: &Tensor,
    m: &mut Tensor,
    v: &mut Tensor,
    c: &Consts,
) -> candle_core::Result<()> {
    let shape = var.as_tensor().shape().clone();
    let device = var.as_tensor().device().clone();
    let mut theta = values::<T>(var.as_tensor())?;
    let (mut mv, mut vv) = (values::<T>(m)?, values::<T>(v)?);
    fused_update(&mut theta, &values::<T>(g)?, &mut mv, &mut vv, c);
    var.set(&Tensor::from_vec(theta, shape.clone(), &device)?)?;
    *m = Tensor::from_vec(mv, shape.clone(), &device)?;
    *v = Tensor::from_vec(vv, shape, &device)?;
    Ok(())
}

impl AdamW {
    pub fn new(model: &Transformer) -> Result<Self> {
        let mut m = BTreeMap::new();
        let mut v = BTreeMap::new();
        for (name, p) in model.params() {
            m.insert(name.clone(), p.zeros_like()?);
            v.insert(name.clone(), p.zeros_like()?);
        }
        Ok(AdamW { m, v, t: 0 })
    }

    fn consts(&mut self, lr: f64, scale: f64, o: &OptimConfig) -> Consts {
        self.t += 1;
        Consts {
            scale,
            beta1: o.beta1,
            beta2: o.beta2,
            inv_bc1: 1.0 / (1.0 - o.beta1.powi(self.t as i32)),
            inv_bc2: 1.0 / (1.0 - o.beta2.powi(self.t as i32)),
            eps: o.adam_eps,
            decay: 1.0 - lr * o.weight_decay,
            lr,
        }
    }

    /// One update with learning rate `lr` and the gradients scaled by `scale` (clipping; 1 for
    /// none): fused on the CPU, the Candle composition elsewhere.
    pub fn step(
        &mut self,
        model: &Transformer,
        grads: &GradStore,
        lr: f64,
        scale: f64,
        o: &OptimConfig,
    ) -> Result<()> {
        if !matches!(model.device(), Device::Cpu) {
            return self.step_composed(model, grads, lr, scale, o);
        }
        let c = self.consts(lr, scale, o);
        let vars = model
            .varmap()
            .ok_or_else(|| TrainError::Resume("internal: model is not trainable".into()))?;
        let vars = vars.data().lock().expect("varmap lock");
        for (name, var) in vars.iter() {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            let m = self.m.get_mut(name).expect("moment for every parameter");
            let v = self.v.get_mut(name).expect("moment for every parameter");
            match var.as_tensor().dtype() {
                CDType::F64 => fused_param::<f64>(var, g, m, v, &c)?,
                _ => fused_param::<f32>(var, g, m, v, &c)?,
            }
        }
        Ok(())
    }

    /// The same update as a composition of Candle tensor operations (any device).
    pub fn step_composed(
        &mut self,
        model: &Transformer,
        grads: &GradStore,
        lr: f64,
        scale: f64,
        o: &OptimConfig,
    ) -> Result<()> {
        let c = self.consts(lr, scale, o);
        let vars = model
            .varmap()
            .ok_or_else(|| TrainError::Resume("internal: model is not trainable".into()))?;
        let vars = vars.data().lock().expect("varmap lock");
        for (name, var) in vars.iter() {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            let g = if scale != 1.0 {
                (g * scale)?
            } else {
                g.clone()
            };
            let m = self.m.get_mut(name).expect("moment for every parameter");
            *m = ((&*m * o.beta1)? + (&g * (1.0 - o.beta1))?)?;
            let v = self.v.get_mut(name).expect("moment for every parameter");
            *v = ((&*v * o.beta2)? + (g.sqr()? * (1.0 - o.beta2))?)?;
            let mhat = (&*m * c.inv_bc1)?;
            let vhat = (&*v * c.inv_bc2)?;
            let update = (mhat / (vhat.sqrt()? + o.adam_eps)?)?;
            let decayed = (var.as_tensor() * c.decay)?;
            var.set(&(decayed - (update * lr)?)?)?;
        }
        Ok(())
    }
}
