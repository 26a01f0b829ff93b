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
//! [`reference`] is the scalar `f64` oracle; `io` (feature `formats`, on by
//! default) reads and writes `.npz`, `.safetensors` and `.npy` files.
#![warn(missing_docs)]

mod activation;
#[cfg(feature = "charlm")]
mod apps;
mod codegen;
pub mod config;
pub mod error;
#[cfg(feature = "formats")]
mod formats;
mod kernel;
pub mod model;
mod pack;
pub mod reference;
pub mod rng;
mod simd;
pub mod stack;
pub mod weights;

#[cfg(feature = "charlm")]
pub use apps::charlm;
pub use config::{LstmConfig, Peephole};
pub use error::{Error, Result};
#[cfg(feature = "formats")]
pub use formats::{import, io};
pub use kernel::{
    KernelChoice, fma_peak_gflops, generated_source, kernel_runs, small_batch_runs,
    specialized_kernels, specialized_runs, specialized_shapes,
};
pub use model::{Lstm, LstmState};
pub use simd::{ISA_ENV, Isa};
pub use stack::{LstmStack, Merge, SeqOptions, StackLayer, StackState};
pub use weights::{GATE_ORDER, LstmWeights, SEED_NAMES, SeedWeights};

/// The largest absolute error of the crate's `σ` and `tanh` on any `f32`
/// argument, against the exact function. Tolerances in the tests derive
/// from it (see [`reference::forward_with_bound`]).
pub const ACTIVATION_MAX_ABS_ERROR: f32 = 1e-6;

/// What build.rs would generate for a shape list in the
/// `LSTM_KERNELS_SHAPES` grammar (`<n_in>x<hidden>[h<head>][p]`, comma
/// separated, `only:` prefix to drop the defaults), or the parse error.
pub fn codegen_preview(shapes: &str) -> std::result::Result<String, String> {
    codegen::shape_list(shapes).map(|s| codegen::generate(&s))
}

/// The config of a shape tag in the `LSTM_KERNELS_SHAPES` grammar
/// (`<n_in>x<hidden>[h<head>][p]`, e.g. `7x5h3p`), as
/// [`specialized_shapes`] lists them.
pub fn config_from_shape_tag(tag: &str) -> std::result::Result<LstmConfig, String> {
    let s = codegen::ShapeSpec::parse(tag)?;
    let mut cfg = LstmConfig::new(s.n_in, s.hidden);
    if let Some(p) = s.head {
        cfg = cfg.with_head(p);
    }
    if s.peephole {
        cfg = cfg.with_peephole(Peephole::Matrix);
    }
    Ok(cfg)
}

/// The README's code examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
