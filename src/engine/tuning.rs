//! Tuning constants of the planner and the driver, in one place. Each
//! says why it has the value it has; the measurements behind them are in
//! the README's tuning table, named by CPU.

/// Gate weights (`W_x` and `W_h`) larger than this, in bytes, no longer
/// stay in L3 from one step to the next, so every step would stream `W_x`
/// from memory again for the hoisted input GEMM. Such models hoist
/// [`XW_BUDGET_STREAMED`] floats of steps at once instead, so `W_x` is read
/// once per block of steps.
pub(crate) const STREAMED_WEIGHTS: usize = 16 << 20;

/// Hoisted block for streamed weights (8 MiB): long enough to amortise
/// reading `W_x` from memory; smaller models keep `PlanRules::hoist`, since
/// their hoisted results would fall out of L2.
pub(crate) const XW_BUDGET_STREAMED: usize = 1 << 21;

/// Rows (of a thread's chunk) from which a small cell runs its
/// batch-in-lanes kernel instead of the gates-in-lanes one: from there the
/// batch layout's independent chains beat the other's latency chain.
pub(crate) const BATCH_MIN_ROWS: usize = 5;

/// Gate FLOPs per step below which a call stays on one thread: waking a
/// worker costs a few microseconds.
pub(crate) const DEFAULT_MIN_PARALLEL_FLOPS: f64 = 2e6;

/// Bytes of a panel slice (a `kc`-row K block of a 4-vector panel, or a
/// whole panel) that stay in L1 across the row blocks that read it: the
/// first row block streams such a slice in with the plan's software
/// prefetches, the later ones find it in L1 and issue none (measured on
/// the Xeon model 167, 48 KiB L1d: H=128, whose 32 KiB panels stay, +5%
/// at B=16 and 64, as fast as no prefetch at all). The CPUs whose plans
/// prefetch (full-rate AVX-512 Xeons since Ice Lake) have 48 KiB of L1d;
/// 32 KiB leaves room for the tile's rows of A and its `xw`.
pub(crate) const L1_SLICE_BYTES: usize = 32 << 10;
