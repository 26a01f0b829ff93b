//! # lstm-kernels
//!
//! LSTM cells on the CPU for high-throughput batch inference, with the
//! numerics of the frameworks users bring weights from.
//!
//! The cell (row-vector convention, `x` is `[batch, n_in]`):
//!
//! ```text
//! i = σ(x·w_i + m·u_i + b_i)          f = σ(x·w_f + m·u_f + b_f)
//! c = f⊙c + i⊙tanh(x·w_c + m·u_c + b_c)
//! o = σ(x·w_o + m·u_o + c·v_o + b_o)  (v_o: optional [H,H] peephole on the NEW c)
//! m = o⊙tanh(c)                       (m recurs)
//! h = tanh(m·w_h + b_h)               (optional output head; not fed back)
//! ```
//!
//! Data flows: [`LstmConfig`] → [`LstmWeights`] (canonical concatenated
//! layout; [`SeedWeights`] for the per-gate names) → [`Lstm`] (immutable
//! model) → [`LstmState`] (per caller) → [`Lstm::step`] / [`Lstm::forward`].
//! [`reference`](mod@reference) is the scalar `f64` oracle; `io` (feature `formats`, on by
//! default) reads and writes `.npz`, `.safetensors` and `.npy` files.
#![warn(missing_docs)]
#![warn(clippy::undocumented_unsafe_blocks)]

// Layers, from the API down: the model (config, weights, Lstm), the
// sequence models on it, the f64 oracle, file formats and importers, the
// char LM application; the engine underneath is private.
#[cfg(feature = "charlm")]
mod apps;
mod engine;
pub mod error;
#[cfg(feature = "formats")]
mod formats;
mod model;
pub mod reference;
pub mod rng;
mod seq;
// Atomic file writes (re-exported by `io`; plan files use them without it).
#[cfg_attr(not(feature = "formats"), allow(dead_code))]
mod staged;
pub mod tuning;

#[cfg(feature = "charlm")]
pub use apps::charlm;
pub use engine::{
    BF16_KERNEL_ENV, INT8_KERNEL_ENV, ISA_ENV, Isa, KernelChoice, config_from_shape_tag,
    fma_peak_gflops, generated_source, kernel_l1_gflops, specialized_kernels, specialized_shapes,
};
pub use error::{Error, Result};
#[cfg(feature = "formats")]
pub use formats::{import, io};
pub use model::config::{LstmConfig, MAX_TENSOR_ELEMENTS, Peephole};
pub use model::weights::{GATE_ORDER, Int8Gates, LstmWeights, SEED_NAMES, SeedWeights};
pub use model::{Lstm, LstmState, Precision, config, max_threads, weights};
pub use seq::batcher::{
    self, Backpressure, Batcher, BatcherConfig, BatcherStats, Client, Collected, Outputs, Pending,
    Shutdown,
};
pub use seq::pool::{self, StreamId, StreamPool};
pub use seq::stack::{self, LstmStack, Merge, SeqOptions, StackLayer, StackState};
pub use tuning::{ModelPlan, Partition, PlanRules, Tuning};

/// Counters of kernel runs, to prove which path ran (tests, `lstm bench`).
#[cfg(feature = "diagnostics")]
pub mod diagnostics {
    pub use crate::engine::diagnostics::{
        bf16_runs, bf16_runs_on_this_thread, fused_runs_on_this_thread, int8_runs,
        int8_runs_on_this_thread, kernel_runs, kernel_runs_on_this_thread, small_batch_runs,
        specialized_runs, split_runs_on_this_thread,
    };
}

/// The largest absolute error of the crate's `σ` and `tanh` on any `f32`
/// argument, against the exact function. Tolerances in the tests derive
/// from it (see [`reference::forward_with_bound`]).
pub const ACTIVATION_MAX_ABS_ERROR: f32 = 1e-6;

/// The README's code examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
