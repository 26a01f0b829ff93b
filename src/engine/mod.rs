//! The fast engine, private to the crate. Stages in the order data flows:
//!
//! 1. **Kernel choice and packing** (`packed`, `packing`, `registry`): at
//!    model construction the ISA is checked (`isa::Supported`), a kernel
//!    is chosen — a generated, shape-specialized one or the generic one —
//!    and the weights are packed once in the format that kernel reads.
//! 2. **Plan** (`plan`, `tuning`): per call, the batch is cut into chunks
//!    of whole register blocks (or one chunk is split by hidden units).
//! 3. **Driver** (`driver`, `job`, `team`): each chunk's [`job::Job`]
//!    runs on the caller's thread or the model's rayon pool (the parts of
//!    a hidden-unit split on the caller and the pool's team of helpers),
//!    with subnormals flushed.
//! 4. **Bodies**: `cell` (blocked GEMM tiles over `microkernel::tile`,
//!    fused epilogue with `activation`), `small` (register-resident small
//!    cells). Generic over the vector type (`simd`) and the dimensions
//!    (`layout`); compiled inside the ISA's `#[target_feature]` entry
//!    (`isa::Arch::vectorize`, reached through `registry::entry`).

mod activation;
pub(crate) mod bf16;
mod cell;
pub(crate) mod diagnostics;
mod driver;
mod fp_env;
pub(crate) mod int8;
mod isa;
mod job;
mod layout;
pub(crate) mod lowp;
mod microkernel;
mod packed;
mod packing;
mod peak;
mod plan;
mod registry;
mod simd;
#[cfg(lstm_kernels_small)]
mod small;
mod team;
mod tuning;
pub(crate) use team::Threads;
pub(crate) use tuning::STREAMED_WEIGHTS;

pub use isa::{ISA_ENV, Isa};
pub use packed::KernelChoice;
pub use peak::{fma_peak_gflops, fma_rate_probe, kernel_l1_gflops};
pub use registry::{
    config_from_shape_tag, generated_source, specialized_kernels, specialized_shapes,
};

pub use bf16::BF16_KERNEL_ENV;
pub(crate) use driver::{Parallel, StateBufs, forward, kernels_for_batch};
pub(crate) use fp_env::NearestGuard;
pub use int8::INT8_KERNEL_ENV;
pub(crate) use isa::Supported;
pub(crate) use lowp::{
    KernelSet, forward as lowp_forward, one_step_scratch_bound as lowp_one_step_scratch_bound,
};
pub(crate) use packed::Packed;
pub(crate) use packing::AlignedBuf;
pub(crate) use tuning::DEFAULT_MIN_PARALLEL_FLOPS;

/// The most f32 scratch (floats) a one-step call of any batch up to
/// `rows` can need, whatever its plan (see `Plan::one_step_scratch_bound`).
pub(crate) fn one_step_scratch_bound(pk: &Packed, rows: usize) -> Option<usize> {
    plan::Plan::one_step_scratch_bound(pk, rows)
}
