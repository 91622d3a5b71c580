//! Running a loop compiled for the CPU's widest vector unit, chosen at run time: the one place
//! the crate enables target features (the fused training step's kernels, the sparse executor's
//! fused multiply-adds). Rust never contracts `a·b + c` into an FMA on its own, so plain
//! arithmetic gives the same results under every unit; `mul_add` is one rounding everywhere
//! (an instruction where the CPU has FMA, libm's `fma` otherwise).

/// Run `f` compiled for the CPU's widest vector unit (module doc): AVX-512 or AVX2+FMA
/// where the CPU has it (detected at run time), else the baseline. `f` must be an
/// `#[inline(always)]` closure so that its body is compiled inside the wider target.
#[inline(always)]
pub fn simd<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
        unsafe fn avx512<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        #[target_feature(enable = "avx2,fma")]
        unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512vl")
        {
            // SAFETY: the CPU has the features this function is compiled for.
            return unsafe { avx512(f) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: as above.
            return unsafe { avx2(f) };
        }
    }
    f()
}
