//! Reading and updating the model's Candle tensors without new allocations: the step copies the
//! weights into its own buffers and writes the AdamW update straight into the variables' and the
//! moments' storage (Candle's in-place custom op), instead of building new tensors every step.

use super::Real;
use crate::train::{Result, TrainError};
use candle_core::{CpuStorage, InplaceOp1, Layout, Storage, Tensor};

/// The element range of a contiguous layout.
fn range(layout: &Layout) -> candle_core::Result<std::ops::Range<usize>> {
    let (start, end) = layout
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg("fused step: a non-contiguous parameter".into()))?;
    Ok(start..end)
}

/// Call `f` with the elements of a contiguous CPU tensor of dtype `T`.
pub fn with_slice<T: Real, R>(t: &Tensor, f: impl FnOnce(&[T]) -> R) -> Result<R> {
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(cpu) => {
            let data = T::cpu_storage_as_slice(cpu)?;
            Ok(f(&data[range(layout)?]))
        }
        _ => Err(TrainError::Internal(
            "fused step: a tensor off the CPU".into(),
        )),
    }
}

/// `dst` ← the elements of `t` (reusing `dst`'s allocation).
pub fn read_into<T: Real>(t: &Tensor, dst: &mut Vec<T>) -> Result<()> {
    with_slice(t, |s: &[T]| {
        dst.clear();
        dst.extend_from_slice(s);
    })
}

/// Apply `f` to the elements of a contiguous CPU tensor of dtype `T`, in place.
pub fn update<T: Real>(t: &Tensor, f: impl Fn(&mut [T])) -> Result<()> {
    struct Apply<F>(F);
    impl<F: Fn(&mut CpuStorage, &Layout) -> candle_core::Result<()>> InplaceOp1 for Apply<F> {
        fn name(&self) -> &'static str {
            "fused-update"
        }
        fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> candle_core::Result<()> {
            (self.0)(storage, layout)
        }
    }
    let op = Apply(|storage: &mut CpuStorage, layout: &Layout| {
        let data = T::storage_mut(storage).ok_or_else(|| {
            candle_core::Error::Msg("fused step: a tensor of another dtype".into())
        })?;
        f(&mut data[range(layout)?]);
        Ok(())
    });
    Ok(t.inplace_op1(&op)?)
}
