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
mod small;
mod specialized;

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

    /// The microkernel [`gemm::tile`] for this ISA (same contract). Inlined
    /// by default; an ISA may compile it as a function of its own instead.
    ///
    /// # Safety
    /// As [`gemm::tile`].
    #[inline(always)]
    unsafe fn tile<const MR: usize>(
        k: usize,
        a: &[*const f32; MR],
        panel: *const f32,
        acc: &mut gemm::Acc<Self, MR>,
    ) {
        // SAFETY: forwarded from the caller.
        unsafe { gemm::tile::<Self, MR>(k, a, panel, acc) }
    }
}

#[cfg(target_arch = "x86_64")]
impl KernelIsa for Avx512 {
    // 6 × 4 zmm accumulators + 4 weight vectors + 1 broadcast ≤ 32 registers.
    const MR: usize = 6;
}
#[cfg(target_arch = "x86_64")]
impl KernelIsa for Avx2 {
    // Two passes over split panels (`gemm::tile_halves`): 6 rows × 2 ymm
    // accumulators + 2 weight vectors + 1 broadcast ≤ 16 registers, 12 FMA
    // chains. Measured at B=64, H=512 (% of the AVX2 peak, one run): this
    // 85.5–86.9%; one pass of 2 rows × 4 vectors (8 chains, the previous
    // kernel) 79.5%; the same two passes over plain panels (strided halves),
    // K-blocked and prefetched: 75–77%; 3 rows with the weights re-read
    // from L1 per row: 65%; 3 rows with 3 weight vectors in registers and
    // the 4th re-read: 40% (an accumulator spills).
    const MR: usize = 6;

    // 15 of 16 ymm registers are live in the loop: inlined into a fused
    // kernel, whatever the epilogue keeps live around it can make the
    // register allocator spill an accumulator (seen: 41% of peak instead
    // of 80%). As a function of its own the loop's allocation is fixed.
    #[inline(always)]
    unsafe fn tile<const MR: usize>(
        k: usize,
        a: &[*const f32; MR],
        panel: *const f32,
        acc: &mut gemm::Acc<Self, MR>,
    ) {
        // Called through an opaque pointer: rustc 1.95 inlined it despite
        // `#[inline(never)]`. Costs one indirect call per tile.
        let f: unsafe fn(usize, &[*const f32; MR], *const f32, &mut gemm::Acc<Self, MR>) =
            std::hint::black_box(tile_avx2::<MR>);
        // SAFETY: forwarded from the caller, who guarantees AVX2 and FMA.
        unsafe { f(k, a, panel, acc) }
    }
}

/// [`gemm::tile`] on AVX2, compiled once per `MR`, not inlined.
///
/// # Safety
/// As [`gemm::tile`], and the CPU supports AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline(never)]
unsafe fn tile_avx2<const MR: usize>(
    k: usize,
    a: &[*const f32; MR],
    panel: *const f32,
    acc: &mut gemm::Acc<Avx2, MR>,
) {
    // SAFETY: forwarded from the caller.
    unsafe { gemm::tile_halves::<Avx2, MR>(k, a, panel, acc) }
}
impl KernelIsa for Portable {
    const MR: usize = 2;
}

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

/// Compile-time dimensions of a specialized kernel (generated by build.rs),
/// or [`Runtime`] for the generic kernel, which reads them from `Packed`.
/// Kernels resolve them through [`Shape::of`], which folds to constants
/// when `KNOWN`.
pub(crate) trait Dims: Copy + 'static {
    /// Whether the constants below hold (else: read the packed model).
    const KNOWN: bool;
    const N_IN: usize = 0;
    const H: usize = 0;
    /// Head size, 0 for none.
    const HEAD: usize = 0;
    const PEEPHOLE: bool = false;
}

/// The generic kernel's dimensions: whatever the model has.
#[derive(Clone, Copy)]
pub(crate) struct Runtime;

impl Dims for Runtime {
    const KNOWN: bool = false;
}

/// Dimensions as a kernel uses them (constants when `D::KNOWN`; the
/// variants' switches are always off for generated kernels).
#[derive(Clone, Copy)]
pub(crate) struct Shape {
    pub(crate) n_in: usize,
    pub(crate) h: usize,
    /// Recurrent size: the projection size, or `h`.
    pub(crate) r: usize,
    pub(crate) diag: bool,
    pub(crate) proj: bool,
    pub(crate) proj_panels: usize,
    pub(crate) cell_clip: Option<f32>,
    pub(crate) proj_clip: Option<f32>,
    pub(crate) clip: Option<f32>,
    pub(crate) input_forget: bool,
    pub(crate) n_out: usize,
    pub(crate) hp: usize,
    pub(crate) hw: usize,
    pub(crate) peephole: bool,
    pub(crate) head: bool,
    pub(crate) gate_panels: usize,
    pub(crate) wide_panels: usize,
    pub(crate) head_panels: usize,
}

impl Shape {
    #[inline(always)]
    pub(crate) fn of<S: Simd, D: Dims>(pk: &Packed) -> Shape {
        let u = S::LANES;
        let (n_in, h, n_out, peephole, head) = if D::KNOWN {
            (
                D::N_IN,
                D::H,
                if D::HEAD > 0 { D::HEAD } else { D::H },
                D::PEEPHOLE,
                D::HEAD > 0,
            )
        } else {
            (pk.n_in, pk.h, pk.n_out, pk.vo.is_some(), pk.head.is_some())
        };
        let gate_panels = h.div_ceil(u);
        let hp = gate_panels * u;
        let v = if D::KNOWN {
            Variants::default()
        } else {
            pk.variants
        };
        let r = if v.proj { pk.r } else { h };
        Shape {
            n_in,
            h,
            r,
            diag: v.diag,
            proj: v.proj,
            proj_panels: r.div_ceil(4 * u),
            cell_clip: v.cell_clip,
            proj_clip: v.proj_clip,
            clip: v.clip,
            input_forget: v.input_forget,
            n_out,
            hp,
            hw: hp.max(h.div_ceil(4 * u) * 4 * u),
            peephole,
            head,
            gate_panels,
            wide_panels: h.div_ceil(4 * u),
            head_panels: n_out.div_ceil(4 * u),
        }
    }
}

/// Scratch for a hoisted block of input-GEMM results, in floats (256 KiB):
/// small enough to stay in L2 until the step kernels read it back
/// (measured: 4 MiB blocks cost 5–7% at H=256).
const XW_BUDGET: usize = 1 << 16;

/// Gate weights (`W_x` and `W_h`) larger than this, in bytes, no longer
/// stay in L3 (32 MiB here) from one step to the next, so every step would
/// stream `W_x` from memory again for the hoisted input GEMM. Such models
/// hoist [`XW_BUDGET_STREAMED`] floats of steps at once instead, so `W_x`
/// is read once per block of steps. Measured at B=32, H=1024 (32 MiB of
/// weights), % of peak in one run: 256 KiB blocks 80.9–86.7%, 2 MiB 87.7%,
/// 4 MiB 86.7–89.6%, 8 MiB 91.5–91.8%. H=256/512 lose 5% with blocks of
/// 4 MiB (their `xw` falls out of L2), hence the threshold.
const STREAMED_WEIGHTS: usize = 16 << 20;
/// Most rows per chunk: a larger batch runs as several chunks, one after
/// another on each thread. A step of 256 rows writes 2 MiB of input-GEMM
/// results at H=512 — more than L2 — and reads it back; 64 rows keep it
/// in L2 at the cost of streaming the weights once per chunk (from L3).
/// Measured B=256, H=512 in one run: one chunk 89.0% of peak, chunks of 64
/// rows 93.9% (2 threads: 90.5% → 94.6%); H=64 and H=256 unchanged.
const MAX_CHUNK_ROWS: usize = 64;

/// Hoisted block for streamed weights (8 MiB).
const XW_BUDGET_STREAMED: usize = 1 << 21;

/// The variants' run-time switches (all off for the seed's cell).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Variants {
    pub(crate) diag: bool,
    pub(crate) proj: bool,
    pub(crate) cell_clip: Option<f32>,
    pub(crate) proj_clip: Option<f32>,
    pub(crate) clip: Option<f32>,
    pub(crate) input_forget: bool,
}

/// Weights packed for one ISA.
#[derive(Clone, Debug)]
pub(crate) struct Packed {
    pub(crate) isa: Isa,
    pub(crate) n_in: usize,
    pub(crate) h: usize,
    /// Recurrent size (projection size, or h).
    pub(crate) r: usize,
    pub(crate) variants: Variants,
    /// Diagonal peepholes `[3][hp]` (i, f, o), zero-padded per unit.
    pub(crate) diag: Option<AlignedBuf>,
    /// Projection `W_p` as wide panels over the R outputs.
    pub(crate) proj: Option<Panels>,
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
    /// The generated kernel to run, or `None` for the generic one.
    pub(crate) kernel: Option<&'static specialized::Specialized>,
}

impl Packed {
    /// Chooses the kernel (see [`KernelChoice`]) and packs the weights for
    /// it: the ISA's lanes, or those of a generated kernel's body.
    pub(crate) fn build(
        cfg: &LstmConfig,
        w: &LstmWeights,
        isa: Isa,
        choice: KernelChoice,
    ) -> Result<Packed> {
        let kernel = Self::pick_kernel(cfg, isa, choice)?;
        let u = kernel.map_or(isa.lanes(), |k| k.lanes);
        // The AVX2 microkernel runs in two passes over split panels (see
        // `gemm::tile_halves`); register-resident small kernels read plain ones.
        let halves = isa == Isa::Avx2 && kernel.is_none_or(|k| !k.small);
        let mut p = Packed::new(cfg, w, isa, u, halves);
        p.kernel = kernel;
        Ok(p)
    }

    fn new(cfg: &LstmConfig, w: &LstmWeights, isa: Isa, u: usize, halves: bool) -> Packed {
        let (n, h, r) = (cfg.n_input, cfg.n_hidden, cfg.n_recurrent());
        let cols = 4 * h;
        // The run-time forget bias is folded into the packed bias (one more
        // term of the same sum; the error bound counts it).
        let mut bias = w.bias.clone();
        bias[h..2 * h]
            .iter_mut()
            .for_each(|b| *b += cfg.forget_bias);
        // Every matrix in the same lanes and layout.
        let pack = |src: &[f32], k: usize, kind: PanelKind, bias: Option<&[f32]>| {
            Panels::pack(src, k, kind, bias, u, halves)
        };
        let wx = pack(&w.gates[..n * cols], n, PanelKind::Gates { h }, Some(&bias));
        let wh = pack(&w.gates[n * cols..], r, PanelKind::Gates { h }, None);
        let hp_pad = h.div_ceil(u) * u;
        let diag = w.peep_diag.as_ref().map(|d| {
            let mut buf = AlignedBuf::zeros(3 * hp_pad);
            let out = buf.as_mut_slice();
            for g in 0..3 {
                out[g * hp_pad..g * hp_pad + h].copy_from_slice(&d[g * h..(g + 1) * h]);
            }
            buf
        });
        let proj = match (cfg.projection, &w.w_p) {
            (Some(r), Some(wp)) => Some(pack(wp, h, PanelKind::Wide { cols: r }, None)),
            _ => None,
        };
        let variants = Variants {
            diag: diag.is_some(),
            proj: proj.is_some(),
            cell_clip: cfg.cell_clip,
            proj_clip: cfg.proj_clip,
            clip: cfg.clip,
            input_forget: cfg.input_forget,
        };
        let vo = match (cfg.peephole, &w.v_o) {
            (Peephole::Matrix, Some(v)) => Some(pack(v, h, PanelKind::Wide { cols: h }, None)),
            _ => None,
        };
        let head = match (&w.w_h, &w.b_h) {
            (Some(wh), Some(bh)) => Some(pack(wh, h, PanelKind::Wide { cols: bh.len() }, Some(bh))),
            _ => None,
        };
        let hp = wh.n_panels * u;
        Packed {
            isa,
            n_in: n,
            h,
            r,
            variants,
            diag,
            proj,
            n_out: cfg.n_output(),
            hp,
            hw: hp.max(h.div_ceil(4 * u) * 4 * u),
            wx,
            wh,
            vo,
            head,
            kernel: None,
        }
    }

    /// `Auto` takes a generated kernel when the shape, variant and ISA
    /// match; `Specialized` requires one.
    fn pick_kernel(
        cfg: &LstmConfig,
        isa: Isa,
        choice: KernelChoice,
    ) -> Result<Option<&'static specialized::Specialized>> {
        let found = specialized::find(cfg, isa);
        Ok(match choice {
            KernelChoice::Generic => None,
            KernelChoice::Auto => found,
            KernelChoice::Specialized => Some(found.ok_or_else(|| {
                Error::Unsupported(format!(
                    "no specialized kernel for n_in={} hidden={} head={} peephole={} on {} (generated shapes: {}; add one with {} at build time)",
                    cfg.n_input,
                    cfg.n_hidden,
                    cfg.head.map_or("none".into(), |p| p.to_string()),
                    cfg.peephole.name(),
                    isa.name(),
                    specialized_shapes().join(", "),
                    crate::codegen::SHAPES_ENV
                ))
            })?),
        })
    }

    /// Name of the kernel that runs: a generated one's, or `generic`.
    pub(crate) fn kernel_name(&self) -> &'static str {
        self.kernel.map_or("generic", |k| k.name)
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

/// Which kernel a model runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum KernelChoice {
    /// A generated, shape-specialized kernel when one matches, else generic.
    #[default]
    Auto,
    /// The generic kernel (any shape).
    Generic,
    /// A generated kernel; an error if none matches the model.
    Specialized,
}

impl std::str::FromStr for KernelChoice {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(KernelChoice::Auto),
            "generic" => Ok(KernelChoice::Generic),
            "specialized" => Ok(KernelChoice::Specialized),
            other => Err(Error::Invalid(format!(
                "unknown kernel `{other}` (expected auto, generic or specialized)"
            ))),
        }
    }
}

/// The shapes build.rs generated kernels for (tags like `7x5h3p`).
pub fn specialized_shapes() -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    for k in specialized::SPECIALIZED {
        let tag = k
            .name
            .trim_start_matches("cell_")
            .split("__")
            .next()
            .unwrap_or("")
            .to_string();
        if !v.contains(&tag) {
            v.push(tag);
        }
    }
    v
}

/// Names of every generated kernel.
pub fn specialized_kernels() -> Vec<&'static str> {
    specialized::SPECIALIZED.iter().map(|k| k.name).collect()
}

/// The generated source of the specialized kernels (for review).
pub fn generated_source() -> &'static str {
    specialized::SOURCE
}

/// Runs of generated kernels in this process (tests prove dispatch with it).
static SPECIALIZED_RUNS: AtomicU64 = AtomicU64::new(0);

/// Number of chunk runs of generated (specialized) kernels so far.
pub fn specialized_runs() -> u64 {
    SPECIALIZED_RUNS.load(Ordering::Relaxed)
}

/// Runs of the batch-in-lanes layout of small generated kernels.
static BATCH_RUNS: AtomicU64 = AtomicU64::new(0);

/// Number of chunk runs of small generated kernels in their batch-in-lanes
/// layout (chunks of at least 5 rows) so far in this process.
pub fn small_batch_runs() -> u64 {
    BATCH_RUNS.load(Ordering::Relaxed)
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
    unsafe { cell::run::<Avx512, Runtime>(job) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn run_avx2(job: &cell::Job) {
    // SAFETY: this wrapper is only called after `Isa::Avx2.available()`.
    unsafe { cell::run::<Avx2, Runtime>(job) }
}

fn run_portable(job: &cell::Job) {
    // SAFETY: the portable ISA needs no CPU feature; `job` is well formed.
    unsafe { cell::run::<Portable, Runtime>(job) }
}

/// Runs one chunk on the model's ISA, with subnormals flushed for the call.
fn run_job(job: &cell::Job) {
    let _denormals = DenormalGuard::new();
    let isa = job.packed.isa;
    RUNS[isa as usize].fetch_add(1, Ordering::Relaxed);
    if let Some(k) = job.packed.kernel {
        SPECIALIZED_RUNS.fetch_add(1, Ordering::Relaxed);
        let run = match k.batch {
            Some(batch) if job.rows >= small::BATCH_MIN_ROWS => {
                BATCH_RUNS.fetch_add(1, Ordering::Relaxed);
                batch
            }
            _ => k.run,
        };
        // SAFETY: the entry matches the model's ISA (checked available at
        // construction) and shape (`specialized::find`).
        unsafe { run(job) };
        return;
    }
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
    /// Samples per chunk (the last chunk may have fewer).
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
        // Large batches run as several chunks of at most MAX_CHUNK_ROWS rows,
        // one after another on each thread (see MAX_CHUNK_ROWS) — unless the
        // weights are streamed from memory anyway, which each chunk would do
        // again (B=128, H=1024: 92.2% of peak in one chunk, 91.5% in two).
        let streamed = pk.wx.bytes() + pk.wh.bytes() > STREAMED_WEIGHTS;
        let chunks = if streamed {
            chunks
        } else {
            chunks.max(batch.div_ceil(MAX_CHUNK_ROWS))
        };
        // Even chunks (64 rows on 2 threads: 32 + 32, not 36 + 28): a row's
        // arithmetic does not depend on which block or chunk it is in.
        let per = batch.div_ceil(chunks);
        let chunks = batch.div_ceil(per);
        let budget = if streamed {
            XW_BUDGET_STREAMED
        } else {
            XW_BUDGET
        };
        let tb = (budget / (per * 4 * pk.hp)).clamp(1, steps.max(1));
        // A batch of one row block cannot be split by rows: split its hidden
        // units instead (each core keeps its share of the weights in its own
        // L2), when there is enough work per step to pay for the barriers.
        // (The register-resident small kernel is never split.)
        // (Neither the register-resident small kernel nor a projection,
        // whose output needs every unit of m, is split.)
        let splittable = pk.kernel.is_none_or(|k| !k.small) && !pk.variants.proj;
        let split = if splittable
            && chunks == 1
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
    fn chunk_scratch(&self, pk: &Packed, rows: usize) -> [usize; 4] {
        [
            round16(self.tb * rows * 4 * pk.hp),
            round16(rows * pk.hw),
            round16(rows * pk.r),
            if pk.variants.proj {
                round16(rows * pk.h)
            } else {
                0
            },
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
    assert!(st.c.len() == batch * h && st.m.len() == batch * pk.r);
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
        let [n_xw, n_op, n_ma, n_mf] = plan.chunk_scratch(pk, rows);
        let (xw, rest) = std::mem::take(&mut scratch).split_at_mut(n_xw);
        let (o_pre, rest) = rest.split_at_mut(n_op);
        let (m_alt, rest) = rest.split_at_mut(n_ma);
        let (m_full, rest) = rest.split_at_mut(n_mf);
        scratch = rest;
        let (ck, c_rest) = std::mem::take(&mut c).split_at_mut(rows * h);
        let (mk, m_rest) = std::mem::take(&mut m).split_at_mut(rows * pk.r);
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
            m_full: m_full.as_mut_ptr(),
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
