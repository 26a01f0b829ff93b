//! The fast engine: weights packed once per model for one instruction set,
//! and the driver that runs a batch through a sequence with them.
//!
//! Data flow of [`forward`]: the batch is split into chunks of whole row
//! blocks, each chunk runs the whole sequence on its own thread (no
//! synchronisation per step). Within a chunk (`cell::run`): the input part
//! `x·W_x + b` of a block of steps is one GEMM into scratch; then per step
//! the recurrent GEMM `m·W_h` with the fused cell epilogue, the peephole
//! GEMM `c·v_o` and the head GEMM. The microkernel is `gemm::tile`.
//!
//! ISA dispatch: `cell::run` is generic over [`KernelIsa`] and instantiated
//! by `#[target_feature]` wrappers (AVX-512F, AVX2+FMA) and a portable one;
//! the model picks one ISA at construction.

mod cell;
mod gemm;
mod peak;

pub use peak::fma_peak_gflops;

use std::sync::atomic::{AtomicU64, Ordering};

use crate::config::{LstmConfig, Peephole};
use crate::error::{Error, Result};
use crate::pack::{AlignedBuf, PanelKind, Panels};
#[cfg(target_arch = "x86_64")]
use crate::simd::{Avx2, Avx512};
use crate::simd::{DenormalGuard, Isa, Portable, Simd};
use crate::weights::LstmWeights;

/// An ISA the kernels can be instantiated for, with its row block.
pub(crate) trait KernelIsa: Simd {
    /// Rows per register block (accumulators: `MR × 4` vectors).
    const MR: usize;
}

#[cfg(target_arch = "x86_64")]
impl KernelIsa for Avx512 {
    // 6 × 4 zmm accumulators + 4 weight vectors + 1 broadcast ≤ 32 registers.
    const MR: usize = 6;
}
#[cfg(target_arch = "x86_64")]
impl KernelIsa for Avx2 {
    // 2 × 4 ymm accumulators + 4 weight vectors + 1 broadcast ≤ 16 registers
    // (3 rows spill and run at half the speed).
    const MR: usize = 2;
}
impl KernelIsa for Portable {
    const MR: usize = 2;
}

/// Scratch for a hoisted block of input-GEMM results, in floats (256 KiB):
/// small enough to stay in L2 until the step kernels read it back
/// (measured: 4 MiB blocks cost 5–7% at H=256).
const XW_BUDGET: usize = 1 << 16;

/// Weights packed for one ISA.
#[derive(Clone, Debug)]
pub(crate) struct Packed {
    pub(crate) isa: Isa,
    pub(crate) n_in: usize,
    pub(crate) h: usize,
    pub(crate) n_out: usize,
    /// Hidden units padded to whole gate panels.
    pub(crate) hp: usize,
    /// Hidden units padded to whole wide panels (≥ hp): `o_pre` row length.
    pub(crate) hw: usize,
    /// Input gate weights with the bias row.
    pub(crate) wx: Panels,
    /// Recurrent gate weights.
    pub(crate) wh: Panels,
    pub(crate) vo: Option<Panels>,
    pub(crate) head: Option<Panels>,
}

impl Packed {
    pub(crate) fn new(cfg: &LstmConfig, w: &LstmWeights, isa: Isa) -> Packed {
        let u = isa.lanes();
        let (n, h) = (cfg.n_input, cfg.n_hidden);
        let cols = 4 * h;
        let wx = Panels::pack(
            &w.gates[..n * cols],
            n,
            PanelKind::Gates { h },
            Some(&w.bias),
            u,
        );
        let wh = Panels::pack(&w.gates[n * cols..], h, PanelKind::Gates { h }, None, u);
        let vo = match (cfg.peephole, &w.v_o) {
            (Peephole::Matrix, Some(v)) => {
                Some(Panels::pack(v, h, PanelKind::Wide { cols: h }, None, u))
            }
            _ => None,
        };
        let head = match (&w.w_h, &w.b_h) {
            (Some(wh), Some(bh)) => Some(Panels::pack(
                wh,
                h,
                PanelKind::Wide { cols: bh.len() },
                Some(bh),
                u,
            )),
            _ => None,
        };
        let hp = wh.n_panels * u;
        Packed {
            isa,
            n_in: n,
            h,
            n_out: cfg.n_output(),
            hp,
            hw: hp.max(h.div_ceil(4 * u) * 4 * u),
            wx,
            wh,
            vo,
            head,
        }
    }

    /// Rows per register block for this ISA.
    pub(crate) fn mr(&self) -> usize {
        match self.isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => Avx512::MR,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => Avx2::MR,
            _ => Portable::MR,
        }
    }

    /// Bytes of packed weights.
    pub(crate) fn bytes(&self) -> usize {
        self.wx.bytes()
            + self.wh.bytes()
            + self.vo.as_ref().map_or(0, Panels::bytes)
            + self.head.as_ref().map_or(0, Panels::bytes)
    }
}

/// How many times each ISA's kernel entry ran in this process (avx512,
/// avx2, portable): lets tests prove which path really executed.
static RUNS: [AtomicU64; 3] = [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)];

/// Number of chunk runs per ISA so far in this process.
pub fn kernel_runs(isa: Isa) -> u64 {
    RUNS[isa as usize].load(Ordering::Relaxed)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn run_avx512(job: &cell::Job) {
    // SAFETY: this wrapper is only called after `Isa::Avx512.available()`.
    unsafe { cell::run::<Avx512>(job) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn run_avx2(job: &cell::Job) {
    // SAFETY: this wrapper is only called after `Isa::Avx2.available()`.
    unsafe { cell::run::<Avx2>(job) }
}

fn run_portable(job: &cell::Job) {
    // SAFETY: the portable ISA needs no CPU feature; `job` is well formed.
    unsafe { cell::run::<Portable>(job) }
}

/// Runs one chunk on the model's ISA, with subnormals flushed for the call.
fn run_job(job: &cell::Job) {
    let _denormals = DenormalGuard::new();
    let isa = job.packed.isa;
    RUNS[isa as usize].fetch_add(1, Ordering::Relaxed);
    match isa {
        // SAFETY: a `Packed` is only built for an ISA the CPU supports
        // (checked by `Lstm` at construction).
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { run_avx512(job) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { run_avx2(job) },
        _ => run_portable(job),
    }
}

/// A barrier for the parts of a hidden-unit split: they spin (briefly, then
/// yield) instead of sleeping, since a step takes microseconds.
pub(crate) struct SpinBarrier {
    parts: usize,
    arrived: AtomicU64,
    generation: AtomicU64,
}

impl SpinBarrier {
    fn new(parts: usize) -> Self {
        SpinBarrier {
            parts,
            arrived: AtomicU64::new(0),
            generation: AtomicU64::new(0),
        }
    }

    /// Returns once all `parts` callers have arrived.
    pub(crate) fn wait(&self) {
        let generation = self.generation.load(Ordering::Acquire);
        if self.arrived.fetch_add(1, Ordering::AcqRel) + 1 == self.parts as u64 {
            self.arrived.store(0, Ordering::Relaxed);
            self.generation.fetch_add(1, Ordering::Release);
        } else {
            let mut spins = 0u32;
            while self.generation.load(Ordering::Acquire) == generation {
                spins += 1;
                if spins < 1 << 14 {
                    std::hint::spin_loop();
                } else {
                    std::thread::yield_now();
                }
            }
        }
    }
}

/// A chunk's job, sendable to a worker thread.
struct SendJob<'a>(cell::Job<'a>);

// SAFETY: a job's mutable regions (its rows of c, m, m_alt, o_pre, xw, and
// its samples' rows of the output) are disjoint from every other job's;
// `xs` and the packed weights are only read.
unsafe impl Send for SendJob<'_> {}

impl<'a> SendJob<'a> {
    fn job(&self) -> cell::Job<'a> {
        self.0
    }
}

// SAFETY: shared only for a hidden-unit split, whose parts write disjoint
// units and synchronise through `SpinBarrier` before reading each other's.
unsafe impl Sync for SendJob<'_> {}

/// Mutable state of a batch, as slices the driver splits among chunks.
pub(crate) struct StateBufs<'a> {
    pub(crate) c: &'a mut [f32],
    pub(crate) m: &'a mut [f32],
    pub(crate) scratch: &'a mut AlignedBuf,
}

/// Planning of a forward call: chunking and scratch layout.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Plan {
    /// Samples per chunk (a multiple of MR, except possibly the last).
    pub(crate) per: usize,
    pub(crate) chunks: usize,
    /// Steps per hoisted input GEMM.
    pub(crate) tb: usize,
    /// Hidden-unit split of one chunk over this many threads (1: none).
    pub(crate) split: usize,
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
    ) -> Plan {
        let mr = pk.mr();
        let blocks = batch.div_ceil(mr);
        let flops = batch as f64 * 8.0 * (pk.n_in + pk.h) as f64 * pk.h as f64;
        let chunks = if flops < min_flops {
            1
        } else {
            threads.clamp(1, blocks)
        };
        let per = blocks.div_ceil(chunks) * mr;
        let chunks = batch.div_ceil(per);
        let tb = (XW_BUDGET / (batch * 4 * pk.hp)).clamp(1, steps.max(1));
        // A batch of one row block cannot be split by rows: split its hidden
        // units instead (each core keeps its share of the weights in its own
        // L2), when there is enough work per step to pay for the barriers.
        let split = if chunks == 1
            && threads > 1
            && pk.wh.n_panels >= 2 * threads
            && flops >= min_flops / 8.0
        {
            threads
        } else {
            1
        };
        Plan {
            per,
            chunks,
            tb,
            split,
        }
    }

    /// Scratch floats for a chunk of `rows` samples.
    fn chunk_scratch(&self, pk: &Packed, rows: usize) -> [usize; 3] {
        [
            round16(self.tb * rows * 4 * pk.hp),
            round16(rows * pk.hw),
            round16(rows * pk.h),
        ]
    }

    pub(crate) fn scratch_len(&self, pk: &Packed, batch: usize) -> usize {
        (0..self.chunks)
            .map(|k| {
                self.chunk_scratch(pk, self.per.min(batch - k * self.per))
                    .iter()
                    .sum::<usize>()
            })
            .sum()
    }
}

/// Runs `steps` steps of a `batch`: `xs` is `[steps, batch, n_in]`, `out`
/// `[steps, batch, n_out]`; `st.c`, `st.m` are `[batch, H]` and updated.
/// Lengths must have been checked by the caller (`Lstm`); they are asserted
/// here as the safety boundary of the kernels.
/// How a call may use threads.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Parallel<'a> {
    pub(crate) pool: Option<&'a rayon::ThreadPool>,
    pub(crate) threads: usize,
    /// Gate FLOPs per step below which a call stays on one thread.
    pub(crate) min_flops: f64,
}

pub(crate) fn forward(
    pk: &Packed,
    par: Parallel,
    st: StateBufs,
    xs: &[f32],
    out: &mut [f32],
    batch: usize,
    steps: usize,
) {
    if steps == 0 {
        return;
    }
    let h = pk.h;
    assert!(xs.len() == steps * batch * pk.n_in && out.len() == steps * batch * pk.n_out);
    assert!(st.c.len() == batch * h && st.m.len() == batch * h);
    let pool = par.pool;
    let plan = Plan::new(
        pk,
        batch,
        steps,
        if pool.is_some() { par.threads } else { 1 },
        par.min_flops,
    );
    let need = plan.scratch_len(pk, batch);
    if st.scratch.as_slice().len() < need {
        *st.scratch = AlignedBuf::zeros(need);
    }
    let mut scratch = st.scratch.as_mut_slice();
    let (mut c, mut m) = (st.c, st.m);
    let out_ptr = out.as_mut_ptr();
    let mut make_job = |k: usize| {
        let rows = plan.per.min(batch - k * plan.per);
        let [n_xw, n_op, n_ma] = plan.chunk_scratch(pk, rows);
        let (xw, rest) = std::mem::take(&mut scratch).split_at_mut(n_xw);
        let (o_pre, rest) = rest.split_at_mut(n_op);
        let (m_alt, rest) = rest.split_at_mut(n_ma);
        scratch = rest;
        let (ck, c_rest) = std::mem::take(&mut c).split_at_mut(rows * h);
        let (mk, m_rest) = std::mem::take(&mut m).split_at_mut(rows * h);
        (c, m) = (c_rest, m_rest);
        SendJob(cell::Job {
            packed: pk,
            rows,
            batch,
            row0: k * plan.per,
            steps,
            tb: plan.tb,
            xs: xs.as_ptr(),
            out: out_ptr,
            c: ck.as_mut_ptr(),
            m: mk.as_mut_ptr(),
            m_alt: m_alt.as_mut_ptr(),
            o_pre: o_pre.as_mut_ptr(),
            xw: xw.as_mut_ptr(),
            part: 0,
            parts: 1,
            barrier: None,
        })
    };
    match pool {
        Some(pool) if plan.split > 1 => {
            let barrier = SpinBarrier::new(plan.split);
            let shared = make_job(0);
            // SAFETY-relevant: every part gets the same buffers; `cell::run`
            // confines each part's writes to its own panels' units and
            // separates phases with the barrier. `broadcast` runs exactly
            // one part on each of the pool's `split` threads at once, so the
            // barrier cannot deadlock.
            pool.broadcast(|ctx| {
                run_job(&cell::Job {
                    part: ctx.index(),
                    parts: plan.split,
                    barrier: Some(&barrier),
                    ..shared.job()
                })
            });
        }
        Some(pool) if plan.chunks > 1 => {
            // One small Vec per call (not per step) to hand chunks to rayon.
            let jobs: Vec<SendJob> = (0..plan.chunks).map(&mut make_job).collect();
            pool.install(|| {
                use rayon::prelude::*;
                jobs.into_par_iter().for_each(|j| run_job(&j.0));
            })
        }
        _ => {
            for k in 0..plan.chunks {
                run_job(&make_job(k).0);
            }
        }
    }
}

/// Checks that `isa` can run here.
pub(crate) fn check_isa(isa: Isa) -> Result<()> {
    if isa.available() {
        Ok(())
    } else {
        Err(Error::Unsupported(format!(
            "instruction set `{}` is not available on this CPU",
            isa.name()
        )))
    }
}
