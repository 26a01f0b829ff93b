//! Weights from the frameworks users train in, mapped to this crate's
//! canonical layout with exactly their semantics:
//!
//! * [`pytorch`]: an `nn.LSTM` (layer 0) or `nn.LSTMCell` state dict
//!   saved with `torch.save` (`.pt`/`.pth`/`.bin`, zip or legacy format),
//!   safetensors or npz: `weight_ih_l0 [4H, in]`, `weight_hh_l0 [4H, R]`,
//!   `bias_ih_l0`, `bias_hh_l0 [4H]` (summed), `weight_hr_l0 [R, H]` with
//!   `proj_size`; gate order i, f, g, o (= ours). An optional key prefix;
//!   [`pytorch_stack`] for every layer and direction; `*_from_bytes` to
//!   load from memory.
//! * [`keras_model`] (feature `keras`): a whole Keras model saved as
//!   `.keras` (Keras 3 / tf-keras) or legacy tf-keras `.h5`: its config
//!   (units, activations, directions, stacking) and HDF5 weights, as a
//!   [`KerasModel`]; `keras_model_from_bytes` from memory.
//! * [`keras`]: a Keras `LSTM` layer's weights in `.npz`: `kernel [in, 4U]`,
//!   `recurrent_kernel [U, 4U]`, `bias [4U]`; gate order i, f, c, o. An
//!   npz records no activations: the caller vouches that the layer used
//!   Keras' defaults (`tanh`, `sigmoid`).
//! * [`tf`]: `tf.compat.v1` `LSTMCell` variables in `.npz`: `kernel
//!   [in + rec, 4U]` and `bias [4U]` in gate order i, j (= c̃), f, o;
//!   optional `w_i_diag`, `w_f_diag`, `w_o_diag [U]` and
//!   `projection/kernel [U, P]`; `forget_bias`, `cell_clip` and `proj_clip`
//!   are settings of the cell, passed in [`TfOptions`].
//!
//! * [`onnx_model`]: an `.onnx` model with one `LSTM` node or a chain of
//!   them as exporters write them (`W`, `R`, optional `B`, `P` as
//!   initializers or folded constant subgraphs, external data; gate order
//!   i, o, f, c; peephole order i, o, f; attributes `hidden_size`, `clip`,
//!   `input_forget`, `layout`; forward or bidirectional, default
//!   activations), with the layout the graph declares; [`onnx()`] for a
//!   single forward cell, [`onnx_stack`] for a time-major stack. Decoded
//!   with `prost`.
//!
//! Every error names the file and the missing or misshapen tensor.

use crate::error::{Error, Result, shape_str};
use crate::io::{Tensor, TensorFile};
use crate::weights::LstmWeights;

mod keras;
#[cfg(feature = "keras")]
mod keras_model;
mod onnx;
mod pytorch;
mod tf;

pub use keras::{keras, keras_from, keras_from_bytes};
#[cfg(feature = "keras")]
pub use keras_model::{
    KerasModel, MAX_KERAS_CONFIG_BYTES, is_keras_model, keras_model, keras_model_from_bytes,
    keras_model_from_bytes_with, keras_model_with,
};
pub use onnx::{
    OnnxModel, onnx, onnx_from_bytes, onnx_model, onnx_model_from_bytes, onnx_model_with,
    onnx_stack, onnx_stack_from_bytes, onnx_stack_with,
};
pub use pytorch::{
    pytorch, pytorch_from, pytorch_from_bytes, pytorch_prefix, pytorch_stack, pytorch_stack_from,
    pytorch_stack_from_bytes, pytorch_stack_from_with,
};
pub use tf::{TfOptions, tf, tf_from, tf_from_bytes};

/// Settings of the loaders that build models themselves (the `*_stack`
/// functions); the others return a config and weights, to which the same
/// settings apply through [`LstmConfig`](crate::LstmConfig).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LoadOptions {
    /// Accept NaN or infinite weights (see
    /// [`LstmConfig::allow_non_finite_weights`](crate::LstmConfig::allow_non_finite_weights));
    /// off by default.
    pub allow_non_finite_weights: bool,
}

impl LoadOptions {
    /// Accepts (`true`) or rejects (`false`, the default) non-finite
    /// weights.
    pub fn with_non_finite_weights(mut self, allow: bool) -> Self {
        self.allow_non_finite_weights = allow;
        self
    }
}

/// Builds one cell of a loaded stack; an error about a weight value names
/// the file and which cell it is in.
fn build_cell(
    cfg: crate::LstmConfig,
    w: LstmWeights,
    opts: LoadOptions,
    path: &std::path::Path,
    cell: &str,
) -> Result<crate::Lstm> {
    let cfg = cfg.with_non_finite_weights(opts.allow_non_finite_weights);
    crate::Lstm::new(cfg, w).map_err(|e| match e {
        Error::Invalid(m) => Error::Invalid(format!("{}: {cell}: {m}", path.display())),
        e => e,
    })
}

fn shape_err(file: &TensorFile, name: &str, expected: String, got: &[usize]) -> Error {
    Error::Shape {
        tensor: format!("{name} in {}", file.path().display()),
        expected,
        got: shape_str(got),
    }
}

/// A 2-D tensor's `(rows, cols)`, or an error naming it.
fn dims2(file: &TensorFile, name: &str, t: &Tensor) -> Result<(usize, usize)> {
    match t.shape.as_slice() {
        [a, b] => Ok((*a, *b)),
        other => Err(shape_err(file, name, "a matrix".into(), other)),
    }
}

fn expect(file: &TensorFile, name: &str, t: &Tensor, shape: &[usize]) -> Result<()> {
    if t.shape == shape {
        Ok(())
    } else {
        Err(shape_err(file, name, shape_str(shape), &t.shape))
    }
}

/// The optional tensor `name`: `None` if the file lacks it, else read
/// (an error reading it is an error).
fn optional<'a>(file: &'a TensorFile, name: &str) -> Result<Option<&'a Tensor>> {
    if file.contains(name) {
        file.get(name).map(Some)
    } else {
        Ok(None)
    }
}

/// Rejects tensors under `prefix` the loader did not use (a typo would
/// otherwise be silently ignored); tensors outside the prefix (another
/// layer, the other direction of a Bidirectional) are not its business.
fn no_leftovers(file: &TensorFile, prefix: &str, used: &[String], what: &str) -> Result<()> {
    match file
        .names()
        .find(|k| k.starts_with(prefix) && !used.iter().any(|u| u == k))
    {
        Some(extra) => Err(Error::UnexpectedTensor {
            tensor: extra.to_string(),
            why: format!("not part of a {what} in {}", file.path().display()),
        }),
        None => Ok(()),
    }
}

/// Fills the canonical gate matrix from per-row, per-gate lookups:
/// `src(row, gate, unit)` for `rows` rows.
fn fill_gates(
    w: &mut LstmWeights,
    cols: usize,
    h: usize,
    row0: usize,
    rows: usize,
    src: impl Fn(usize, usize, usize) -> f32,
) {
    for r in 0..rows {
        for g in 0..4 {
            for j in 0..h {
                w.gates[(row0 + r) * cols + g * h + j] = src(r, g, j);
            }
        }
    }
}
