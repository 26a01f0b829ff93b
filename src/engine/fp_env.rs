//! The floating-point environment of a kernel call: subnormals flushed
//! (MXCSR FTZ and DAZ) for its duration, as the frameworks' CPU kernels do,
//! so subnormal inputs cost no microcode assists; and rounding to nearest,
//! whatever mode the caller's thread set, so results never depend on it.

/// Flushes subnormal results and inputs to zero (MXCSR FTZ and DAZ) and
/// rounds to nearest (MXCSR RC = 0) while alive, restoring the previous
/// mode on drop. MXCSR is per thread: each
/// worker thread makes its own guard. A no-op off x86-64 and under Miri
/// (which runs no inline assembly).
pub(crate) struct DenormalGuard {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    saved: u32,
}

#[cfg(all(target_arch = "x86_64", not(miri)))]
const FTZ_DAZ: u32 = (1 << 15) | (1 << 6);
/// MXCSR rounding control (bits 13–14); 0 is round to nearest even.
#[cfg(all(target_arch = "x86_64", not(miri)))]
const ROUNDING: u32 = 0b11 << 13;

impl DenormalGuard {
    pub(crate) fn new() -> Self {
        #[cfg(all(target_arch = "x86_64", not(miri)))]
        {
            let mut saved: u32 = 0;
            // SAFETY: stmxcsr/ldmxcsr only read and write the calling
            // thread's MXCSR; setting FTZ, DAZ and the rounding mode changes
            // no other state and every x86-64 CPU has SSE.
            unsafe {
                std::arch::asm!("stmxcsr [{}]", in(reg) &mut saved, options(nostack));
                let new = (saved | FTZ_DAZ) & !ROUNDING;
                std::arch::asm!("ldmxcsr [{}]", in(reg) &new, options(nostack, readonly));
            }
            DenormalGuard { saved }
        }
        #[cfg(not(all(target_arch = "x86_64", not(miri))))]
        DenormalGuard {}
    }
}

impl Drop for DenormalGuard {
    fn drop(&mut self) {
        #[cfg(all(target_arch = "x86_64", not(miri)))]
        // SAFETY: restores the MXCSR value read in `new` on this thread.
        unsafe {
            std::arch::asm!("ldmxcsr [{}]", in(reg) &self.saved, options(nostack, readonly));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denormal_guard_flushes_and_restores() {
        let tiny = std::hint::black_box(1e-30f32);
        let scale = std::hint::black_box(1e-10f32);
        assert!(tiny * scale > 0.0, "subnormal product without the guard");
        {
            let _g = DenormalGuard::new();
            #[cfg(all(target_arch = "x86_64", not(miri)))]
            assert_eq!(
                std::hint::black_box(tiny) * std::hint::black_box(scale),
                0.0
            );
        }
        assert!(std::hint::black_box(tiny) * std::hint::black_box(scale) > 0.0);
    }
}
