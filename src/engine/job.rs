//! What a kernel receives: [`Job`], raw views of one chunk's buffers for
//! one call, built only by the driver (which checks every length), and the
//! barrier the parts of a hidden-unit split meet at.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::packed::Packed;

/// A kernel entry: runs one chunk through the whole sequence.
///
/// # Safety
/// `job` was built by `driver::forward` for a model packed for this
/// kernel (checked on entry).
pub(crate) type KernelFn = unsafe fn(&Job);

/// Raw views of one chunk's data for one `forward` call. Built only by
/// `driver::forward`, which checks every length.
#[derive(Clone, Copy)]
pub(crate) struct Job<'a> {
    pub(crate) packed: &'a Packed,
    /// Samples in this chunk.
    pub(crate) rows: usize,
    /// Samples in the whole batch (row stride of `xs`/`out` per step).
    pub(crate) batch: usize,
    /// First sample of the chunk.
    pub(crate) row0: usize,
    pub(crate) steps: usize,
    /// Steps per hoisted input GEMM.
    pub(crate) tb: usize,
    /// K block of the gate and input GEMMs (0: whole K; see `Plan`).
    pub(crate) kc: usize,
    /// Software prefetch distance in panel rows (0: none; see `Plan`).
    pub(crate) pf: usize,
    /// Fetch the next `W_h` panel into L2 during the later row blocks
    /// (see `PlanRules::ahead`).
    pub(crate) ahead: bool,
    /// Panel slices up to this many bytes stay in L1 (see `Plan`).
    pub(crate) l1_slice: usize,
    /// Panels per group of the fused one-step loop (see `Plan::group`).
    pub(crate) group: usize,
    /// `[T, batch, n_in]`.
    pub(crate) xs: *const f32,
    /// `[T, batch, n_out]`.
    pub(crate) out: *mut f32,
    /// `[rows, H]` and `[rows, R]`.
    pub(crate) c: *mut f32,
    pub(crate) m: *mut f32,
    /// `[rows, R]` with a head; without one the steps' `m` live in `out`
    /// and this is empty (see `cell::run`).
    pub(crate) m_alt: *mut f32,
    /// `[rows, hw]` (matrix peephole only).
    pub(crate) o_pre: *mut f32,
    /// `[tb, rows, 4·hp]`.
    pub(crate) xw: *mut f32,
    /// `[rows, H]`: the full `m` before the projection (projection only).
    pub(crate) m_full: *mut f32,
    /// Hidden-unit split: this job computes panel share `part` of `parts`
    /// for every phase and meets the others at `barrier` between phases.
    /// With `parts == 1` there is no barrier and the job does everything.
    pub(crate) part: usize,
    pub(crate) parts: usize,
    pub(crate) barrier: Option<&'a SpinBarrier>,
}

impl Job<'_> {
    /// Whether steps run as fused one-step tiles (see `Plan::group`).
    #[inline(always)]
    pub(crate) fn fused(&self) -> bool {
        self.group > 0
    }

    /// This job's contiguous share of `n` panels.
    #[inline(always)]
    pub(crate) fn share(&self, n: usize) -> std::ops::Range<usize> {
        (n * self.part / self.parts)..(n * (self.part + 1) / self.parts)
    }

    /// Waits for the other parts (no-op without a split).
    #[inline(always)]
    pub(crate) fn sync(&self) {
        if let Some(b) = self.barrier {
            b.wait();
        }
    }
}

/// A barrier for the parts of a hidden-unit split: they spin (briefly, then
/// yield) instead of sleeping, since a step takes microseconds. A part that
/// panics poisons it ([`SpinBarrier::poison_on_panic`]): the parts waiting
/// for it, and any that arrive later, panic too instead of waiting forever,
/// so the call's panic reaches its caller rather than hanging the threads.
pub(crate) struct SpinBarrier {
    parts: usize,
    arrived: AtomicU64,
    generation: AtomicU64,
    poisoned: AtomicBool,
}

impl SpinBarrier {
    pub(crate) fn new(parts: usize) -> Self {
        SpinBarrier {
            parts,
            arrived: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            poisoned: AtomicBool::new(false),
        }
    }

    /// Returns once all `parts` callers have arrived; panics if a part
    /// panicked (see the type's docs).
    pub(crate) fn wait(&self) {
        let generation = self.generation.load(Ordering::Acquire);
        if self.arrived.fetch_add(1, Ordering::AcqRel) + 1 == self.parts as u64 {
            self.arrived.store(0, Ordering::Relaxed);
            self.generation.fetch_add(1, Ordering::Release);
        } else {
            let mut spins = 0u32;
            while self.generation.load(Ordering::Acquire) == generation {
                if self.poisoned.load(Ordering::Acquire) {
                    panic!("another part of the hidden-unit split panicked");
                }
                spins += 1;
                if spins < 1 << 14 {
                    std::hint::spin_loop();
                } else {
                    std::thread::yield_now();
                }
            }
        }
    }

    /// Whether a part panicked (see the type's docs).
    #[cfg(test)]
    pub(crate) fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Acquire)
    }

    /// A guard that poisons the barrier if its thread starts panicking
    /// while it is held (not if it was already unwinding when the guard
    /// was made: a call from a `Drop` during a panic): hold it for the
    /// whole of a part.
    pub(crate) fn poison_on_panic(&self) -> PoisonOnPanic<'_> {
        PoisonOnPanic {
            barrier: self,
            was_panicking: std::thread::panicking(),
        }
    }
}

/// See [`SpinBarrier::poison_on_panic`].
pub(crate) struct PoisonOnPanic<'a> {
    barrier: &'a SpinBarrier,
    was_panicking: bool,
}

impl Drop for PoisonOnPanic<'_> {
    fn drop(&mut self) {
        if !self.was_panicking && std::thread::panicking() {
            self.barrier.poisoned.store(true, Ordering::Release);
        }
    }
}
