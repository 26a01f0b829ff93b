//! The floating-point environment of a kernel call: subnormals flushed
//! (MXCSR FTZ and DAZ) for its duration, as the frameworks' CPU kernels do,
//! so subnormal inputs cost no microcode assists; and rounding to nearest,
//! whatever mode the caller's thread set, so results never depend on it.

/// Flushes subnormal results and inputs to zero (MXCSR FTZ and DAZ) and
/// rounds to nearest (MXCSR RC = 0) while alive, restoring the previous
/// mode on drop. MXCSR is per thread: each worker thread makes its own
/// guard. A no-op off x86-64 and under Miri (which runs no inline
/// assembly).
pub(crate) struct DenormalGuard {
    saved: u32,
}

/// MXCSR flush-to-zero (bit 15) and denormals-are-zero (bit 6).
const FTZ_DAZ: u32 = (1 << 15) | (1 << 6);
/// MXCSR rounding control (bits 13–14); 0 is round to nearest even.
const ROUNDING: u32 = 0b11 << 13;

impl DenormalGuard {
    pub(crate) fn new() -> Self {
        let saved = mxcsr::read();
        mxcsr::write((saved | FTZ_DAZ) & !ROUNDING);
        DenormalGuard { saved }
    }
}

/// Rounds to nearest (MXCSR RC = 0) while alive, leaving FTZ/DAZ as they
/// are, and restores the previous mode on drop: for the crate's arithmetic
/// outside the kernels (random weights, importers' bias sums, a stack's
/// merge, the character model's logits), so that the caller's rounding
/// mode cannot change those results either.
pub(crate) struct NearestGuard {
    saved: u32,
}

impl NearestGuard {
    pub(crate) fn new() -> Self {
        let saved = mxcsr::read();
        mxcsr::write(saved & !ROUNDING);
        NearestGuard { saved }
    }
}

impl Drop for NearestGuard {
    fn drop(&mut self) {
        mxcsr::write(self.saved);
    }
}

impl Drop for DenormalGuard {
    fn drop(&mut self) {
        mxcsr::write(self.saved);
    }
}

/// The calling thread's MXCSR.
#[cfg(all(target_arch = "x86_64", not(miri)))]
mod mxcsr {
    pub(super) fn read() -> u32 {
        let mut v: u32 = 0;
        // SAFETY: stmxcsr only writes the 4 bytes of `v`; every x86-64 CPU
        // has SSE.
        unsafe { std::arch::asm!("stmxcsr [{}]", in(reg) &mut v, options(nostack)) };
        v
    }

    /// Sets it; the callers pass a value read from it with only the
    /// FTZ, DAZ and rounding bits changed.
    pub(super) fn write(v: u32) {
        // SAFETY: ldmxcsr only changes the calling thread's floating-point
        // mode (a valid MXCSR value, see above), no other state.
        unsafe { std::arch::asm!("ldmxcsr [{}]", in(reg) &v, options(nostack, readonly)) };
    }
}

/// No MXCSR to set off x86-64, and none under Miri.
#[cfg(not(all(target_arch = "x86_64", not(miri))))]
mod mxcsr {
    pub(super) fn read() -> u32 {
        0
    }

    pub(super) fn write(_: u32) {}
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
