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
/// whole panel) that stay in L1 across the row blocks that read it, on a
/// core with `l1d_bytes` of L1d: two thirds of it, which leaves the rest
/// for the tile's rows of A, its `xw` and `c`. The first row block streams
/// such a slice in with the plan's software prefetches; the later ones
/// find it in L1 and issue none. Measured on the Xeon model 167 (48 KiB
/// L1d, so 32 KiB): H=128, whose 32 KiB panels stay, +5% at B=16 and 64,
/// as fast as no prefetch at all. On a 32 KiB L1d (Skylake-SP and Cascade
/// Lake Xeons, which also get the prefetching plan) the limit is 21 KiB,
/// so a 32 KiB panel keeps its prefetches in every block.
pub(crate) fn l1_slice_bytes(l1d_bytes: usize) -> usize {
    l1d_bytes / 3 * 2
}

#[cfg(test)]
mod tests {
    use super::l1_slice_bytes;

    /// A whole 4-zmm panel of H=128 (128 rows × 64 floats = 32 KiB) stays
    /// in a 48 KiB L1d, not in a 32 KiB one.
    #[test]
    fn the_l1_slice_follows_the_l1d() {
        let panel_h128 = 128 * 64 * 4;
        assert_eq!(l1_slice_bytes(48 << 10), 32 << 10);
        assert!(panel_h128 <= l1_slice_bytes(48 << 10));
        assert!(panel_h128 > l1_slice_bytes(32 << 10));
        assert!(l1_slice_bytes(32 << 10) >= 20 << 10);
    }
}
