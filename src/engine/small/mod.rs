//! The register-resident bodies for small cells, run by generated kernels
//! when the hidden size fits one vector (`H ≤ LANES`). Compiled only when
//! the shape list has such a cell (build.rs sets `lstm_kernels_small`).
//!
//! Two layouts, chosen per chunk by its number of rows (the driver picks
//! the batch one from `tuning::BATCH_MIN_ROWS` rows):
//!
//! * [`Lanes`] (gates in lanes, `lanes.rs`): one sample's step is a chain
//!   of two matrix–vector products and two activations — latency.
//! * [`Batch`] (samples in lanes, `batch.rs`, only for cells with at most
//!   `SMALL_BATCH_MAX_IN` inputs): every gate of every unit is an
//!   independent FMA chain — throughput.
//!
//! Contract of both: the same as the blocked body (reads `xs`, the chunk's
//! `c` and `m`; writes `out`, `c`, `m`), without scratch. Every sum is taken
//! in the same order as the generic kernel (bias, inputs, recurrent terms;
//! peephole after), so results are bitwise identical to it.

#[cfg(lstm_kernels_batch)]
mod batch;
mod lanes;

use super::isa::Arch;
use super::job::Job;
use super::layout::Dims;
use super::registry::{BodyKind, KernelBody};
use super::simd::LaneSplat;
#[cfg(lstm_kernels_batch)]
use super::simd::Strided;

/// Gates in lanes, in the packing vectors `S`.
pub(crate) struct Lanes;

impl<A: Arch, S: Arch + LaneSplat> KernelBody<A, S> for Lanes {
    const KIND: BodyKind = BodyKind::Lanes;
    #[inline(always)]
    unsafe fn run<D: Dims>(job: &Job) {
        // SAFETY: forwarded from the caller.
        unsafe { lanes::run::<S, D>(job) }
    }
}

/// Samples in lanes: weights read from panels packed for `S`, groups in
/// `A`'s own (widest) vectors.
#[cfg(lstm_kernels_batch)]
pub(crate) struct Batch;

#[cfg(lstm_kernels_batch)]
impl<A: Arch + Strided, S: Arch + Strided> KernelBody<A, S> for Batch {
    const KIND: BodyKind = BodyKind::Batch;
    #[inline(always)]
    unsafe fn run<D: Dims>(job: &Job) {
        // SAFETY: forwarded from the caller.
        unsafe { batch::run::<S, A, D>(job) }
    }
}
