//! The plan of a forward call: how the batch is cut into chunks (one per
//! thread, or several per thread for large batches), how many steps each
//! hoisted input GEMM covers, whether one chunk is split by hidden units
//! across threads, and the scratch each chunk needs. A plan never changes
//! a row's arithmetic, so results are identical for every plan.

use super::packed::Packed;
use super::tuning::{STREAMED_WEIGHTS, XW_BUDGET_STREAMED, l1_slice_bytes};
use crate::tuning::{Partition, PlanRules};

/// `rows` split into as few parts of at most `max` rows as possible,
/// balanced (32 rows by 6: 6,6,5,5,5,5, not 6,6,6,6,6,2) so that no part is
/// a sliver: yields `(first row, rows)` per part. Row blocks, small-kernel
/// groups and their sizes never change a row's arithmetic.
#[derive(Clone, Copy)]
pub(crate) struct Balanced {
    parts: usize,
    base: usize,
    extra: usize,
    next: usize,
    r0: usize,
}

impl Balanced {
    #[inline(always)]
    pub(crate) fn new(rows: usize, max: usize) -> Balanced {
        let parts = rows.div_ceil(max);
        let base = rows.checked_div(parts).unwrap_or(0);
        let extra = rows.checked_rem(parts).unwrap_or(0);
        Balanced {
            parts,
            base,
            extra,
            next: 0,
            r0: 0,
        }
    }
}

impl Balanced {
    /// Number of parts.
    #[inline(always)]
    pub(crate) fn len(&self) -> usize {
        self.parts
    }
}

impl Iterator for Balanced {
    type Item = (usize, usize);
    #[inline(always)]
    fn next(&mut self) -> Option<(usize, usize)> {
        (self.next < self.parts).then(|| {
            let n = self.base + usize::from(self.next < self.extra);
            let r0 = self.r0;
            self.next += 1;
            self.r0 += n;
            (r0, n)
        })
    }
}

/// `0..k` in blocks of `kc` (`kc == 0`: one block), as `(k0, k1)`. The
/// last block is the remainder; blocks never change a sum's order.
#[derive(Clone, Copy)]
pub(crate) struct KBlocks {
    k: usize,
    kc: usize,
    k0: usize,
}

impl KBlocks {
    #[inline(always)]
    pub(crate) fn new(k: usize, kc: usize) -> KBlocks {
        KBlocks {
            k,
            kc: if kc == 0 { k.max(1) } else { kc },
            k0: 0,
        }
    }
}

impl Iterator for KBlocks {
    type Item = (usize, usize);
    #[inline(always)]
    fn next(&mut self) -> Option<(usize, usize)> {
        // K = 0 still yields one (empty) block, so the epilogue runs.
        (self.k0 < self.k || (self.k0 == 0 && self.k == 0)).then(|| {
            let k0 = self.k0;
            let k1 = (k0 + self.kc).min(self.k);
            self.k0 = k1.max(1);
            (k0, k1)
        })
    }
}

/// Planning of a forward call: chunking and scratch layout.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Plan {
    /// Samples per chunk (the last chunk may have fewer).
    pub(crate) per: usize,
    pub(crate) chunks: usize,
    /// Steps per hoisted input GEMM.
    pub(crate) tb: usize,
    /// Hidden-unit split of one chunk over this many threads (1: none).
    pub(crate) split: usize,
    /// K block of the gate and input GEMMs (0: whole K).
    pub(crate) kc: usize,
    /// Software prefetch distance of the microkernel, panel rows (0: none).
    pub(crate) pf: usize,
    /// Fetch the next `W_h` panel ahead (see `PlanRules::ahead`).
    pub(crate) ahead: bool,
    /// Panel slices up to this many bytes stay in L1 across row blocks
    /// (from this CPU's L1d; see `tuning::l1_slice_bytes`).
    pub(crate) l1_slice: usize,
    /// Fused one-step loop (`PlanRules::fuse`, where a call's hoisted
    /// block would be one step): panels per group, which every row block
    /// of the chunk runs through while the group stays in L2 (half of it);
    /// 0: the hoisted loop.
    pub(crate) group: usize,
}

fn round16(n: usize) -> usize {
    n.div_ceil(16) * 16
}

impl Plan {
    pub(crate) fn new(
        pk: &Packed,
        batch: usize,
        steps: usize,
        threads: usize,
        min_flops: f64,
        rules: &PlanRules,
    ) -> Plan {
        let mr = pk.kernel.mr;
        let blocks = batch.div_ceil(mr);
        let flops = batch as f64 * 8.0 * (pk.n_in + pk.h) as f64 * pk.h as f64;
        let chunks = if flops < min_flops {
            1
        } else {
            threads.clamp(1, blocks)
        };
        // Large batches run as several chunks of at most `chunk_rows` rows,
        // one after another on each thread (see `PlanRules`) — unless the
        // weights are streamed from memory anyway, which each chunk would do
        // again.
        let w_bytes = pk.wx.bytes() + pk.wh.bytes();
        let streamed = w_bytes > STREAMED_WEIGHTS;
        // A one-step call that does not fuse streams all of the weights
        // through each chunk once (no later step reuses them), so where they
        // exceed L2 its chunks grow to the rows whose one step of
        // input-GEMM results fills the hoisted block: fewer passes over
        // the weights, `xw` still in L2. (Xeon model 167, H=512, one-step
        // calls against 64-row chunks: 128 rows 1.03× at B=256 on 1 thread,
        // 1.06× on 2; 1024-row chunks 0.96× at B=1024.)
        let fuses = rules.fuse && !pk.kernel.small;
        let chunk_rows =
            if steps == 1 && !fuses && w_bytes > crate::tuning::CpuFacts::get().l2_bytes {
                rules.chunk_rows.max(rules.hoist / (4 * pk.hp).max(1))
            } else {
                rules.chunk_rows
            };
        let chunks = if streamed {
            chunks
        } else {
            chunks.max(batch.div_ceil(chunk_rows.max(1)))
        };
        // Even chunks (64 rows on 2 threads: 32 + 32, not 36 + 28): a row's
        // arithmetic does not depend on which block or chunk it is in.
        let per = batch.div_ceil(chunks);
        let chunks = batch.div_ceil(per);
        let budget = if streamed {
            XW_BUDGET_STREAMED.max(rules.hoist)
        } else {
            rules.hoist.max(1)
        };
        // A batch of one row block cannot be split by rows: split its hidden
        // units instead (each core keeps its share of the weights in its own
        // L2), when there is enough work per step to pay for the barriers.
        // (The heuristic plan asks for units outright where the weights
        // are streamed on some CPUs; see `PlanRules::heuristic`.)
        // (Neither the register-resident small kernel nor a projection,
        // whose output needs every unit of m, is split.)
        let splittable = !pk.kernel.small && !pk.variants.proj;
        let split_units = match rules.partition {
            Partition::Auto => chunks == 1 && flops >= min_flops / 8.0,
            Partition::Rows => false,
            Partition::Units => flops >= min_flops / 8.0,
        };
        let split = if splittable && split_units && threads > 1 && pk.wh.n_panels >= 2 * threads {
            threads
        } else {
            1
        };
        // A split runs the whole batch as one chunk (every part runs every
        // row), so it only replaces a row partition that was there for the
        // threads, not one that chunk_rows asks for.
        let (per, chunks) = if split > 1 && (streamed || batch <= chunk_rows) {
            (batch, 1)
        } else {
            (per, chunks)
        };
        let split = if chunks == 1 { split } else { 1 };
        let tb = (budget / (per * 4 * pk.hp)).clamp(1, steps.max(1));
        let kc = rules.kc;
        // One-step blocks (every one-step call: `tb` is at most `steps`)
        // run fused tiles (no hoisted input GEMM, no round trip through
        // xw), in groups of panels that fit in half of L2, when the plan
        // asks for it; the small cells' kernels have their own loops.
        let group = if fuses && tb == 1 {
            let panel_bytes = (pk.wx.panel_len() + pk.wh.panel_len()) * 4;
            (crate::tuning::CpuFacts::get().l2_bytes / 2 / panel_bytes.max(1)).max(1)
        } else {
            0
        };
        Plan {
            per,
            chunks,
            tb,
            split,
            kc,
            pf: rules.prefetch,
            ahead: rules.ahead,
            l1_slice: l1_slice_bytes(crate::tuning::CpuFacts::get().l1d_bytes),
            group,
        }
    }

    /// Rows of chunk `k` of a batch of `batch` rows (the last may have fewer).
    pub(crate) fn rows(&self, batch: usize, k: usize) -> usize {
        self.per.min(batch - k * self.per)
    }

    /// Scratch floats for a chunk of `rows` samples.
    pub(crate) fn chunk_scratch(&self, pk: &Packed, rows: usize) -> [usize; 4] {
        [
            // The fused loop keeps no input-GEMM results.
            if self.group > 0 {
                0
            } else {
                round16(self.tb * rows * 4 * pk.hp)
            },
            round16(rows * pk.hw),
            // Without a head the steps' m live in the output (`cell::run`).
            if pk.head.is_some() {
                round16(rows * pk.r)
            } else {
                0
            },
            if pk.variants.proj {
                round16(rows * pk.h)
            } else {
                0
            },
        ]
    }

    /// The most scratch a one-step call of any batch up to `rows` can
    /// need, whatever its plan: one step's input-GEMM results (`tb` = 1),
    /// each chunk's four buffers rounded up by at most 15 floats, and at
    /// most one chunk per row. `None` if it overflows.
    pub(crate) fn one_step_scratch_bound(pk: &Packed, rows: usize) -> Option<usize> {
        let proj = if pk.variants.proj { pk.h } else { 0 };
        let per_row = (4 * pk.hp).checked_add(pk.hw + pk.r + proj + 4 * 15)?;
        rows.checked_mul(per_row)
    }

    pub(crate) fn scratch_len(&self, pk: &Packed, batch: usize) -> usize {
        (0..self.chunks)
            .map(|k| {
                self.chunk_scratch(pk, self.rows(batch, k))
                    .iter()
                    .sum::<usize>()
            })
            .sum()
    }
}
