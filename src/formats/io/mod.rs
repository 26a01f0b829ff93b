//! Files: tensors from `.npy`, `.npz` (numpy, stored or deflated) and
//! `.safetensors`, `f32` (`f64` accepted and converted); the seed's weight
//! names; atomic writes (a temporary file renamed into place, so a failed
//! write never leaves a partial output).
//!
//! Parsing is done by well-kept crates (`npyz`, `zip`, `safetensors`); this
//! module maps their failures to [`Error`]s that name the file and tensor.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result, shape_str};

mod npy;
mod npz;
mod safetensors;
mod seed;
mod staged;

pub use self::safetensors::{
    read_safetensors, safetensors_file_bytes, safetensors_from_bytes, write_safetensors,
};
pub use npy::{npy_file_bytes, read_npy, read_npy_lengths, write_npy};
pub use npz::{npz_file_bytes, read_npz, write_npz};
pub use seed::{load_seed_weights, save_seed_weights};
pub use staged::{Staged, remove_pending_files, write_atomic};

/// An `f32` tensor: shape and row-major (C order) data.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// `shape.iter().product()` values in C order.
    pub data: Vec<f32>,
}

impl Tensor {
    /// A tensor from a shape and matching data.
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Result<Self> {
        let n: usize = shape.iter().product();
        if n != data.len() {
            return Err(Error::Invalid(format!(
                "shape {} needs {n} values, got {}",
                shape_str(&shape),
                data.len()
            )));
        }
        Ok(Tensor { shape, data })
    }
}

/// Named tensors read from one file.
#[derive(Clone, Debug)]
pub struct TensorFile {
    /// The file they came from (for messages).
    pub path: PathBuf,
    /// The tensors by name.
    pub tensors: BTreeMap<String, Tensor>,
}

impl TensorFile {
    /// The tensor `name`, or [`Error::MissingTensor`] naming the file.
    pub fn get(&self, name: &str) -> Result<&Tensor> {
        self.tensors.get(name).ok_or_else(|| Error::MissingTensor {
            tensor: name.to_string(),
            source_name: self.path.display().to_string(),
        })
    }

    /// Removes and returns `name` if present.
    pub fn take(&mut self, name: &str) -> Option<Tensor> {
        self.tensors.remove(name)
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn format_err(path: &Path, format: &'static str, reason: impl ToString) -> Error {
    Error::Format {
        path: path.to_path_buf(),
        format,
        reason: reason.to_string(),
    }
}

/// Reads a tensor file, choosing the format by extension (`.npz`,
/// `.safetensors`) or, failing that, by its first bytes.
pub fn read_tensors(path: impl AsRef<Path>) -> Result<TensorFile> {
    let path = path.as_ref();
    match path.extension().and_then(|e| e.to_str()) {
        Some("npz") => read_npz(path),
        Some("safetensors") => read_safetensors(path),
        _ => {
            let mut magic = [0u8; 4];
            let mut f = File::open(path).map_err(io_err(path))?;
            let n = f.read(&mut magic).map_err(io_err(path))?;
            if n == 4 && &magic == b"PK\x03\x04" {
                read_npz(path)
            } else {
                read_safetensors(path)
            }
        }
    }
}

/// The tensor-file format a path's extension names: `npz` or
/// `safetensors`; any other extension is an error naming the path.
pub fn tensor_format(path: &Path) -> Result<&'static str> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("npz") => Ok("npz"),
        Some("safetensors") => Ok("safetensors"),
        _ => Err(Error::Invalid(format!(
            "{}: unknown tensor file extension (use .npz or .safetensors)",
            path.display()
        ))),
    }
}

/// The bytes of a tensor file in the format `path`'s extension names
/// (see [`tensor_format`]).
pub fn tensor_file_bytes(path: &Path, arrays: &[(&str, &[usize], &[f32])]) -> Result<Vec<u8>> {
    match tensor_format(path)? {
        "npz" => npz_file_bytes(arrays),
        _ => safetensors_file_bytes(arrays),
    }
}

/// Writes named tensors as `.npz` or `.safetensors`, by extension.
pub fn write_tensors(path: impl AsRef<Path>, arrays: &[(&str, &[usize], &[f32])]) -> Result<()> {
    let path = path.as_ref();
    let bytes = tensor_file_bytes(path, arrays)?;
    write_atomic(path, |w| w.write_all(&bytes).map_err(io_err(path)))
}
