//! Tuning constants of the planner and the driver, in one place. Each
//! says why it has the value it has; the measurements behind them are in
//! the README's tuning table, named by CPU.

/// Scratch for a hoisted block of input-GEMM results, in floats (256 KiB):
/// small enough to stay in L2 until the step kernels read it back.
pub(crate) const XW_BUDGET: usize = 1 << 16;

/// Gate weights (`W_x` and `W_h`) larger than this, in bytes, no longer
/// stay in L3 from one step to the next, so every step would stream `W_x`
/// from memory again for the hoisted input GEMM. Such models hoist
/// [`XW_BUDGET_STREAMED`] floats of steps at once instead, so `W_x` is read
/// once per block of steps.
pub(crate) const STREAMED_WEIGHTS: usize = 16 << 20;

/// Hoisted block for streamed weights (8 MiB): long enough to amortise
/// reading `W_x` from memory; smaller models keep [`XW_BUDGET`], since
/// their hoisted results would fall out of L2.
pub(crate) const XW_BUDGET_STREAMED: usize = 1 << 21;

/// Most rows per chunk: a larger batch runs as several chunks, one after
/// another on each thread, so that a step's input-GEMM results (2 MiB for
/// 256 rows at H=512) stay in L2; the price is streaming the weights once
/// per chunk, from L3.
pub(crate) const MAX_CHUNK_ROWS: usize = 64;

/// Rows (of a thread's chunk) from which a small cell runs its
/// batch-in-lanes kernel instead of the gates-in-lanes one: from there the
/// batch layout's independent chains beat the other's latency chain.
pub(crate) const BATCH_MIN_ROWS: usize = 5;

/// Gate FLOPs per step below which a call stays on one thread: waking a
/// worker costs a few microseconds.
pub(crate) const DEFAULT_MIN_PARALLEL_FLOPS: f64 = 2e6;
