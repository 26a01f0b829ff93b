//! Counters of kernel runs, so that tests and `lstm bench` can prove which
//! path really ran (feature `diagnostics`; without it, recording compiles
//! to nothing).

use super::isa::Isa;

#[cfg(feature = "diagnostics")]
mod counters {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::Isa;

    /// Chunk runs per ISA (avx512, avx2, portable).
    static RUNS: [AtomicU64; 3] = [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)];
    /// Chunk runs of generated kernels.
    static GENERATED: AtomicU64 = AtomicU64::new(0);
    /// Chunk runs of the batch-in-lanes layout of small generated kernels.
    static BATCH: AtomicU64 = AtomicU64::new(0);

    std::thread_local! {
        /// Chunk runs per ISA on this thread (const-initialised: no
        /// allocation), then per bf16 kernel and per int8 kernel, then of
        /// the f32 engine's fused one-step loop, then split calls run by
        /// a team from this thread.
        static MINE: [std::cell::Cell<u64>; 11] = const {
            [const { std::cell::Cell::new(0) }; 11]
        };
    }

    fn bump_mine(i: usize) {
        MINE.with(|m| m[i].set(m[i].get() + 1));
    }

    fn mine(i: usize) -> u64 {
        MINE.with(|m| m[i].get())
    }

    #[inline]
    pub(crate) fn record(isa: Isa, generated: bool, batch: bool) {
        bump_mine(isa as usize);
        RUNS[isa as usize].fetch_add(1, Ordering::Relaxed);
        if generated {
            GENERATED.fetch_add(1, Ordering::Relaxed);
        }
        if batch {
            BATCH.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records one chunk run of the fused one-step loop (`Plan::group`).
    #[inline]
    pub(crate) fn record_fused() {
        bump_mine(9);
    }

    /// Number of chunk runs of the f32 engine's fused one-step loop
    /// (`PlanRules::fuse`) on the calling thread so far.
    pub fn fused_runs_on_this_thread() -> u64 {
        mine(9)
    }

    /// Chunk runs per bf16 kernel (amx, avx512bf16, portable).
    /// Records one hidden-unit split run by the pool's team, called
    /// from this thread (`engine::team`).
    #[inline]
    pub(crate) fn record_split() {
        bump_mine(10);
    }

    /// Number of hidden-unit splits run by a pool's team of helpers from
    /// the calling thread so far.
    pub fn split_runs_on_this_thread() -> u64 {
        mine(10)
    }

    static BF16: [AtomicU64; 3] = [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)];

    #[inline]
    pub(crate) fn record_bf16(kernel: usize) {
        bump_mine(3 + kernel);
        BF16[kernel].fetch_add(1, Ordering::Relaxed);
    }

    /// Chunk runs per int8 kernel (amx, avx512vnni, portable).
    static INT8: [AtomicU64; 3] = [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)];

    #[inline]
    pub(crate) fn record_int8(kernel: usize) {
        bump_mine(6 + kernel);
        INT8[kernel].fetch_add(1, Ordering::Relaxed);
    }

    /// Number of chunk runs of the int8 kernel named `name` (as
    /// `Lstm::kernel_name` reports it) so far in this process; 0 for an
    /// unknown name.
    pub fn int8_runs(name: &str) -> u64 {
        use crate::engine::KernelSet;
        crate::engine::int8::Int8Kernel::ALL
            .iter()
            .position(|k| k.name() == name)
            .map_or(0, |i| INT8[i].load(Ordering::Relaxed))
    }

    /// Number of chunk runs of the bf16 kernel named `name` (as
    /// `Lstm::kernel_name` reports it) so far in this process; 0 for an
    /// unknown name.
    pub fn bf16_runs(name: &str) -> u64 {
        use crate::engine::KernelSet;
        crate::engine::bf16::Bf16Kernel::ALL
            .iter()
            .position(|k| k.name() == name)
            .map_or(0, |i| BF16[i].load(Ordering::Relaxed))
    }

    /// Number of chunk runs on `isa` so far in this process.
    pub fn kernel_runs(isa: Isa) -> u64 {
        RUNS[isa as usize].load(Ordering::Relaxed)
    }

    /// Number of chunk runs on `isa` so far on the calling thread (where
    /// a single-threaded model's calls run): unlike [`kernel_runs`], other
    /// threads' runs (tests running at the same time) do not count.
    pub fn kernel_runs_on_this_thread(isa: Isa) -> u64 {
        mine(isa as usize)
    }

    /// [`int8_runs`] on the calling thread only (see
    /// [`kernel_runs_on_this_thread`]).
    pub fn int8_runs_on_this_thread(name: &str) -> u64 {
        use crate::engine::KernelSet;
        crate::engine::int8::Int8Kernel::ALL
            .iter()
            .position(|k| k.name() == name)
            .map_or(0, |i| mine(6 + i))
    }

    /// [`bf16_runs`] on the calling thread only (see
    /// [`kernel_runs_on_this_thread`]).
    pub fn bf16_runs_on_this_thread(name: &str) -> u64 {
        use crate::engine::KernelSet;
        crate::engine::bf16::Bf16Kernel::ALL
            .iter()
            .position(|k| k.name() == name)
            .map_or(0, |i| mine(3 + i))
    }

    /// Number of chunk runs of generated (specialized) kernels so far.
    pub fn specialized_runs() -> u64 {
        GENERATED.load(Ordering::Relaxed)
    }

    /// Number of chunk runs of small generated kernels in their
    /// batch-in-lanes layout so far in this process.
    pub fn small_batch_runs() -> u64 {
        BATCH.load(Ordering::Relaxed)
    }
}

#[cfg(feature = "diagnostics")]
pub use counters::{
    bf16_runs, bf16_runs_on_this_thread, fused_runs_on_this_thread, int8_runs,
    int8_runs_on_this_thread, kernel_runs, kernel_runs_on_this_thread, small_batch_runs,
    specialized_runs, split_runs_on_this_thread,
};
#[cfg(feature = "diagnostics")]
pub(crate) use counters::{record, record_bf16, record_fused, record_int8, record_split};

/// Records one chunk run (nothing without the `diagnostics` feature).
#[cfg(not(feature = "diagnostics"))]
#[inline(always)]
pub(crate) fn record(_isa: Isa, _generated: bool, _batch: bool) {}

/// Records one bf16 chunk run (nothing without the `diagnostics` feature).
#[cfg(not(feature = "diagnostics"))]
#[inline(always)]
pub(crate) fn record_bf16(_kernel: usize) {}

/// Records one int8 chunk run (nothing without the `diagnostics` feature).
#[cfg(not(feature = "diagnostics"))]
#[inline(always)]
pub(crate) fn record_int8(_kernel: usize) {}

/// Records one fused-loop chunk run (nothing without the `diagnostics`
/// feature).
#[cfg(not(feature = "diagnostics"))]
#[inline(always)]
pub(crate) fn record_fused() {}

/// Records one team-run split (nothing without the `diagnostics`
/// feature).
#[cfg(not(feature = "diagnostics"))]
#[inline(always)]
pub(crate) fn record_split() {}
