//! The crate's one error type. Every message names the offending tensor,
//! file or setting and, for shapes, what was expected and what was found.
//! Every message is one line, and each part of it taken from a file or a
//! caller (a reason, a shape, a name, a path) is capped at
//! [`MAX_MESSAGE_PART_CHARS`] characters, so no input can make a message
//! long or break it over lines.

use std::fmt;
use std::path::PathBuf;

/// The most characters of one part of an error message (a reason, a
/// shape, a tensor name, a path) that `Display` prints; a longer part is
/// cut with `…` (a path keeps its end, everything else its start and its
/// end, so that a reason after a long path survives).
/// Newlines and other control characters in a part print as spaces.
pub const MAX_MESSAGE_PART_CHARS: usize = 300;

/// Everything that can go wrong in `lstm-kernels`. Nothing in the public API
/// panics on bad input; it returns one of these instead.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is inconsistent (zero sizes, head larger than the
    /// hidden size, sizes whose products overflow, ...).
    Config(String),

    /// A tensor has the wrong shape.
    Shape {
        /// Name of the tensor (e.g. `u_f`, `x`, `state.c`).
        tensor: String,
        /// The expected shape, e.g. `[7, 5]`.
        expected: String,
        /// The shape that was given.
        got: String,
    },

    /// A tensor required by the configuration or file format is absent.
    MissingTensor {
        /// Name of the missing tensor.
        tensor: String,
        /// Where it was looked for (a file path, or "the weights").
        source_name: String,
    },

    /// A tensor is given although the configuration says it must not be.
    UnexpectedTensor {
        /// Name of the tensor.
        tensor: String,
        /// Why it does not fit.
        why: String,
    },

    /// A tensor in a file has an element type this crate cannot read.
    Dtype {
        /// Name of the tensor.
        tensor: String,
        /// The file it came from.
        path: PathBuf,
        /// The dtype found.
        dtype: String,
    },

    /// A file could not be read or written.
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },

    /// A file exists but is not a valid file of its format (truncated,
    /// corrupt, wrong container).
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
    Invalid(String),

    /// The requested instruction set or kernel is not available here.
    Unsupported(String),

    /// Memory for a buffer whose size came from a file or a caller could
    /// not be had: an error instead of an abort.
    Alloc {
        /// What the buffer was for (e.g. an array and its file).
        what: String,
        /// The bytes asked for.
        bytes: usize,
    },

    /// A bounded resource is full for now: a stream pool with every
    /// stream open, a batcher's queue under [`Backpressure::Busy`](crate::Backpressure::Busy).
    /// Retrying later may succeed.
    Busy(String),

    /// The [`Batcher`](crate::Batcher) was shut down (or its worker
    /// stopped) before the call could be served.
    Shutdown(String),
}

/// One part of a message, printed on one line and capped (see
/// [`MAX_MESSAGE_PART_CHARS`]); `keep_end` keeps the end of a long part
/// (a path's file name) instead of its start.
struct Part<'a>(&'a str, bool);

impl fmt::Display for Part<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Part(s, keep_end) = *self;
        // Control characters and the Unicode line and paragraph separators
        // would break the line.
        let clean = |c: char| {
            if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') {
                ' '
            } else {
                c
            }
        };
        let n = s.chars().count();
        let keep = MAX_MESSAGE_PART_CHARS - 1;
        let out: String = if n <= MAX_MESSAGE_PART_CHARS {
            s.chars().map(clean).collect()
        } else if keep_end {
            std::iter::once('…')
                .chain(s.chars().skip(n - keep).map(clean))
                .collect()
        } else {
            // The start and the end: a message that begins with a long path
            // keeps its reason, which comes last.
            let head = keep / 2;
            s.chars()
                .take(head)
                .map(clean)
                .chain(std::iter::once('…'))
                .chain(s.chars().skip(n - (keep - head)).map(clean))
                .collect()
        };
        f.write_str(&out)
    }
}

fn part(s: &str) -> Part<'_> {
    Part(s, false)
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = |p: &PathBuf| p.to_string_lossy().into_owned();
        match self {
            Error::Config(s) => write!(f, "invalid config: {}", part(s)),
            Error::Shape {
                tensor,
                expected,
                got,
            } => write!(
                f,
                "tensor `{}` has shape {}, expected {}",
                part(tensor),
                part(got),
                part(expected)
            ),
            Error::MissingTensor {
                tensor,
                source_name,
            } => write!(
                f,
                "tensor `{}` is missing from {}",
                part(tensor),
                Part(source_name, true)
            ),
            Error::UnexpectedTensor { tensor, why } => {
                write!(
                    f,
                    "tensor `{}` is not expected: {}",
                    part(tensor),
                    part(why)
                )
            }
            Error::Dtype {
                tensor,
                path: p,
                dtype,
            } => write!(
                f,
                "tensor `{}` in {} has dtype {}; expected float32, float64, float16 or bfloat16",
                part(tensor),
                Part(&path(p), true),
                part(dtype)
            ),
            Error::Io { path: p, source } => {
                write!(f, "{}: {}", Part(&path(p), true), part(&source.to_string()))
            }
            Error::Format {
                path: p,
                format,
                reason,
            } => write!(
                f,
                "{}: not a valid {format} file: {}",
                Part(&path(p), true),
                part(reason)
            ),
            Error::Invalid(s) => write!(f, "invalid argument: {}", part(s)),
            Error::Unsupported(s) => write!(f, "unsupported: {}", part(s)),
            Error::Alloc { what, bytes } => {
                write!(f, "cannot allocate {bytes} bytes for {}", part(what))
            }
            Error::Busy(s) => write!(f, "busy: {}", part(s)),
            Error::Shutdown(s) => write!(f, "shut down: {}", part(s)),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Shorthand for `Result<T, lstm_kernels::Error>`.
pub type Result<T> = std::result::Result<T, Error>;

/// The element count of a tensor of shape `dims`, computed with checked
/// arithmetic and held to [`MAX_TENSOR_ELEMENTS`](crate::MAX_TENSOR_ELEMENTS);
/// beyond it, an [`Error::Invalid`] naming `what`.
pub fn checked_elements(dims: &[usize], what: &str) -> Result<usize> {
    dims.iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .filter(|&n| n <= crate::MAX_TENSOR_ELEMENTS)
        .ok_or_else(|| {
            Error::Invalid(format!(
                "{what} {} exceeds the limit of {} elements",
                shape_str(dims),
                crate::MAX_TENSOR_ELEMENTS
            ))
        })
}

/// A zero-filled `Vec<f32>` of `len` values, or [`Error::Alloc`] naming
/// `what` if the system refuses the memory (never an abort).
pub fn try_zeros(len: usize, what: &str) -> Result<Vec<f32>> {
    try_filled(len, 0.0, what)
}

/// `len` copies of `value`, or [`Error::Alloc`] naming `what`: the one
/// place the crate's fallible allocations are made.
pub(crate) fn try_filled<T: Clone>(len: usize, value: T, what: &str) -> Result<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(len).map_err(|_| Error::Alloc {
        what: what.to_string(),
        bytes: len.saturating_mul(std::mem::size_of::<T>()),
    })?;
    v.resize(len, value);
    Ok(v)
}

/// Formats a shape as `[a, b, c]` for messages (past 16 dimensions, the
/// first 16 and the count).
pub fn shape_str(dims: &[usize]) -> String {
    const SHOWN: usize = 16;
    let parts: Vec<String> = dims.iter().take(SHOWN).map(|d| d.to_string()).collect();
    if dims.len() > SHOWN {
        format!("[{}, … ({} dimensions)]", parts.join(", "), dims.len())
    } else {
        format!("[{}]", parts.join(", "))
    }
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

#[cfg(test)]
mod message_tests {
    use super::*;

    /// The review of issue 17: a reason after a long path was cut off, and
    /// U+2028 broke the line.
    #[test]
    fn long_messages_keep_their_reason_and_stay_one_line() {
        let dir = "d".repeat(380);
        let e = Error::Invalid(format!(
            "/{dir}/lens.npy: length [0] = -1.5 is not a nonnegative integer"
        ));
        let m = e.to_string();
        assert!(m.ends_with("is not a nonnegative integer"), "{m}");
        assert!(m.starts_with("invalid argument: /ddd"), "{m}");
        assert!(m.chars().count() < MAX_MESSAGE_PART_CHARS + 40, "{m}");
        let e = Error::Invalid("a\u{2028}b\u{2029}c\nd".into());
        assert_eq!(e.to_string(), "invalid argument: a b c d");
    }
}
