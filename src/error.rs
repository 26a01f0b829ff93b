//! The crate's one error type. Every message names the offending tensor,
//! file or setting and, for shapes, what was expected and what was found.

use std::path::PathBuf;

/// Everything that can go wrong in `lstm-kernels`. Nothing in the public API
/// panics on bad input; it returns one of these instead.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is inconsistent (zero sizes, head larger than the
    /// hidden size, sizes whose products overflow, ...).
    #[error("invalid config: {0}")]
    Config(String),

    /// A tensor has the wrong shape.
    #[error("tensor `{tensor}` has shape {got}, expected {expected}")]
    Shape {
        /// Name of the tensor (e.g. `u_f`, `x`, `state.c`).
        tensor: String,
        /// The expected shape, e.g. `[7, 5]`.
        expected: String,
        /// The shape that was given.
        got: String,
    },

    /// A tensor required by the configuration or file format is absent.
    #[error("tensor `{tensor}` is missing from {source_name}")]
    MissingTensor {
        /// Name of the missing tensor.
        tensor: String,
        /// Where it was looked for (a file path, or "the weights").
        source_name: String,
    },

    /// A tensor is given although the configuration says it must not be.
    #[error("tensor `{tensor}` is not expected: {why}")]
    UnexpectedTensor {
        /// Name of the tensor.
        tensor: String,
        /// Why it does not fit.
        why: String,
    },

    /// A tensor in a file has an element type this crate cannot read.
    #[error("tensor `{tensor}` in {path} has dtype {dtype}; expected float32 or float64")]
    Dtype {
        /// Name of the tensor.
        tensor: String,
        /// The file it came from.
        path: PathBuf,
        /// The dtype found.
        dtype: String,
    },

    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },

    /// A file exists but is not a valid file of its format (truncated,
    /// corrupt, wrong container).
    #[error("{path}: not a valid {format} file: {reason}")]
    Format {
        /// The file.
        path: PathBuf,
        /// The format it should have had (`npy`, `npz`, `safetensors`).
        format: &'static str,
        /// What is wrong with it.
        reason: String,
    },

    /// A value (input, weight) is not finite where finiteness is required,
    /// or a setting is out of range.
    #[error("invalid argument: {0}")]
    Invalid(String),

    /// The requested instruction set or kernel is not available here.
    #[error("unsupported: {0}")]
    Unsupported(String),

    /// Memory for a buffer could not be allocated (the sizes passed
    /// validation, but the system refused the allocation).
    #[error("cannot allocate {bytes} bytes for {what}")]
    Alloc {
        /// What the buffer was for (e.g. `weights gates`, `state c`).
        what: String,
        /// The size asked for.
        bytes: usize,
    },
}

/// Shorthand for `Result<T, lstm_kernels::Error>`.
pub type Result<T> = std::result::Result<T, Error>;

/// A zero-filled `Vec<f32>` of `len` values, or [`Error::Alloc`] naming
/// `what` if the system refuses the memory (never an abort).
pub(crate) fn try_zeros(len: usize, what: &str) -> Result<Vec<f32>> {
    let mut v = Vec::new();
    v.try_reserve_exact(len).map_err(|_| Error::Alloc {
        what: what.to_string(),
        bytes: len.saturating_mul(std::mem::size_of::<f32>()),
    })?;
    v.resize(len, 0.0);
    Ok(v)
}

/// Formats a shape as `[a, b, c]` for messages.
pub fn shape_str(dims: &[usize]) -> String {
    let parts: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
    format!("[{}]", parts.join(", "))
}

/// Returns `Error::Shape` unless `got == expected`.
#[cfg(feature = "formats")] // only the file loaders check whole shapes
pub(crate) fn check_shape(tensor: &str, got: &[usize], expected: &[usize]) -> Result<()> {
    if got == expected {
        Ok(())
    } else {
        Err(Error::Shape {
            tensor: tensor.to_string(),
            expected: shape_str(expected),
            got: shape_str(got),
        })
    }
}

/// Returns `Error::Shape` unless a flat slice has `expected` elements; the
/// message shows the logical shape that was expected.
pub(crate) fn check_len(tensor: &str, got_len: usize, expected: &[usize]) -> Result<()> {
    let want: usize = expected.iter().product();
    if got_len == want {
        Ok(())
    } else {
        Err(Error::Shape {
            tensor: tensor.to_string(),
            expected: format!("{} ({} elements)", shape_str(expected), want),
            got: format!("{got_len} elements"),
        })
    }
}
