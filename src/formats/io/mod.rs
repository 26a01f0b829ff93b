//! Files: tensors from `.npy`, `.npz` (numpy, stored or deflated) and
//! `.safetensors`, `f32` (`f64` accepted and converted); the seed's weight
//! names; atomic writes (a temporary file renamed into place, so a failed
//! write never leaves a partial output).
//!
//! `.npy` headers are parsed here, by a grammar bounded in time, memory and
//! depth ([`MAX_NPY_HEADER_BYTES`], [`MAX_NPY_DIMS`]); `.npz` members are
//! inflated lazily, only those a format reads, each bounded by the size its
//! header declares; `zip` and `safetensors` parse their containers. Every
//! failure is an [`Error`] naming the file and tensor.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use crate::error::{Error, Result, shape_str};

mod npy;
mod npz;
mod safetensors;
mod seed;
mod staged;

pub use self::safetensors::{
    MAX_PIPE_DATA_BYTES, read_safetensors, safetensors_file_bytes, safetensors_from_bytes,
    write_safetensors,
};
pub use npy::{
    MAX_NPY_DIMS, MAX_NPY_HEADER_BYTES, npy_file_bytes, read_npy, read_npy_lengths, write_npy,
};
pub use npz::{npz_file_bytes, read_npz, write_npz};
pub use seed::{load_seed_weights, save_seed_weights};
pub use staged::{
    Staged, check_replaceable, commit_all, remove_pending_files, same_file, write_atomic,
};

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
        let n = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        if n != Some(data.len()) {
            return Err(Error::Invalid(format!(
                "shape {} does not hold {} values",
                shape_str(&shape),
                data.len()
            )));
        }
        Ok(Tensor { shape, data })
    }
}

/// Where a tensor's data comes from.
#[derive(Debug)]
enum Source {
    /// Already decoded (in [`Entry::tensor`]).
    Memory,
    /// A dtype this crate does not read: an [`Error::Dtype`] when asked.
    Unsupported,
    /// An `.npz` member, inflated when first asked for.
    Member(npz::Member),
}

/// One named tensor: its shape and dtype at once, its data when asked.
#[derive(Debug)]
struct Entry {
    shape: Vec<usize>,
    dtype: String,
    tensor: OnceLock<Tensor>,
    source: Source,
}

impl Entry {
    fn new(shape: Vec<usize>, dtype: String, source: Source) -> Entry {
        Entry {
            shape,
            dtype,
            tensor: OnceLock::new(),
            source,
        }
    }

    fn loaded(t: Tensor, dtype: String) -> Entry {
        Entry {
            shape: t.shape.clone(),
            dtype,
            tensor: OnceLock::from(t),
            source: Source::Memory,
        }
    }
}

/// Named tensors of one file. Names, shapes and dtypes are known when the
/// file is opened; an `.npz` member's data is read (inflated, checked,
/// decoded) only when [`get`](Self::get) or [`take`](Self::take) asks for
/// it, so members a format never reads cost nothing and may have any
/// dtype. `Send + Sync`: the archive sits behind a lock.
#[derive(Debug)]
pub struct TensorFile {
    path: PathBuf,
    entries: BTreeMap<String, Entry>,
    archive: Option<Mutex<npz::Archive>>,
}

impl TensorFile {
    fn new(
        path: &Path,
        entries: BTreeMap<String, Entry>,
        archive: Option<Mutex<npz::Archive>>,
    ) -> TensorFile {
        TensorFile {
            path: path.to_path_buf(),
            entries,
            archive,
        }
    }

    /// Tensors already in memory, as if read from `path` (for messages).
    pub fn from_tensors(
        path: impl Into<PathBuf>,
        tensors: impl IntoIterator<Item = (String, Tensor)>,
    ) -> TensorFile {
        TensorFile {
            path: path.into(),
            entries: tensors
                .into_iter()
                .map(|(n, t)| (n, Entry::loaded(t, "float32".into())))
                .collect(),
            archive: None,
        }
    }

    /// The file they come from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The tensors' names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> + '_ {
        self.entries.keys().map(String::as_str)
    }

    /// How many tensors the file has.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the file has no tensors.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether the file has a tensor `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    fn entry(&self, name: &str) -> Result<&Entry> {
        self.entries.get(name).ok_or_else(|| Error::MissingTensor {
            tensor: name.to_string(),
            source_name: self.path.display().to_string(),
        })
    }

    /// The shape of `name` (without reading its data), or
    /// [`Error::MissingTensor`].
    pub fn shape(&self, name: &str) -> Result<&[usize]> {
        Ok(&self.entry(name)?.shape)
    }

    /// The dtype of `name` as the file spells it (`<f4`, `F64`, …),
    /// without reading its data, or [`Error::MissingTensor`].
    pub fn dtype(&self, name: &str) -> Result<&str> {
        Ok(&self.entry(name)?.dtype)
    }

    /// [`Error::Dtype`] unless `name` is float32 or float64 (from its
    /// header; nothing is read), [`Error::MissingTensor`] if absent.
    pub(crate) fn check_float(&self, name: &str) -> Result<()> {
        let e = self.entry(name)?;
        match &e.source {
            Source::Memory => Ok(()),
            Source::Member(m) => m.check_float(&self.path, name),
            Source::Unsupported => Err(self.dtype_err(name, e)),
        }
    }

    fn dtype_err(&self, name: &str, e: &Entry) -> Error {
        Error::Dtype {
            tensor: name.to_string(),
            path: self.path.clone(),
            dtype: e.dtype.clone(),
        }
    }

    /// The tensor `name`, read on first access: [`Error::MissingTensor`]
    /// naming the file if absent, [`Error::Dtype`] if not float32/float64,
    /// or the error that reading it met.
    pub fn get(&self, name: &str) -> Result<&Tensor> {
        let e = self.entry(name)?;
        if let Some(t) = e.tensor.get() {
            return Ok(t);
        }
        let t = self.load(name, e)?;
        Ok(e.tensor.get_or_init(|| t))
    }

    /// Removes `name` and returns its tensor (read now if it was not yet).
    pub fn take(&mut self, name: &str) -> Result<Tensor> {
        let mut e = self
            .entries
            .remove(name)
            .ok_or_else(|| Error::MissingTensor {
                tensor: name.to_string(),
                source_name: self.path.display().to_string(),
            })?;
        match e.tensor.take() {
            Some(t) => Ok(t),
            None => self.load(name, &e),
        }
    }

    fn load(&self, name: &str, e: &Entry) -> Result<Tensor> {
        match &e.source {
            Source::Member(m) => {
                let Some(archive) = &self.archive else {
                    return Err(format_err(&self.path, "npz", "the archive is not open"));
                };
                // A panic elsewhere while holding the lock leaves the
                // archive usable: each member is found anew by its index.
                let mut zip = archive.lock().unwrap_or_else(|p| p.into_inner());
                npz::load_member(&self.path, name, m, &mut zip)
            }
            Source::Unsupported | Source::Memory => Err(self.dtype_err(name, e)),
        }
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
