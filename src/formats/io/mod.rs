//! Files: tensors from `.npy`, `.npz` (numpy, stored or deflated),
//! `.safetensors` and PyTorch `torch.save` state dicts (`.pt`, `.pth`,
//! `.bin`; the zip format and the legacy one), as `f32` (float64, float16
//! and bfloat16 accepted and converted exactly or by rounding to nearest);
//! the seed's weight names; atomic writes (a temporary file renamed into
//! place, so a failed write never leaves a partial output).
//!
//! [`read_tensors`] and [`read_tensors_from_bytes`] tell the formats apart
//! by content, not by extension. `torch.save` pickles are read by a
//! restricted unpickler that runs nothing and knows only what a state dict
//! holds ([`MAX_PICKLE_BYTES`], [`MAX_PICKLE_OBJECTS`]).
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

mod half;
#[cfg(feature = "keras")]
pub(crate) mod hdf5;
mod npy;
mod npz;
mod pickle;
mod safetensors;
mod seed;
mod torch;

pub use pickle::MAX_PICKLE_OBJECTS;
pub use torch::MAX_PICKLE_BYTES;

pub use self::safetensors::{
    MAX_PIPE_DATA_BYTES, read_safetensors, safetensors_file_bytes, safetensors_from_bytes,
    write_safetensors,
};
pub use crate::staged::{
    Staged, check_replaceable, commit_all, remove_pending_files, rename_dir, same_file,
    write_atomic,
};
pub use npy::{
    MAX_NPY_DIMS, MAX_NPY_HEADER_BYTES, npy_file_bytes, read_npy, read_npy_lengths, write_npy,
};
pub use npz::{npz_file_bytes, read_npz, write_npz};
pub use seed::{load_seed_weights, save_seed_weights};

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
    /// A tensor of a `torch.save` file, its storage read when first asked
    /// for.
    Torch(torch::Stored),
}

/// What a lazily read archive reads from: a file or bytes in memory.
pub(super) trait ReadSeek: Read + std::io::Seek + Send + std::fmt::Debug {}

impl<T: Read + std::io::Seek + Send + std::fmt::Debug> ReadSeek for T {}

/// The zip archive behind a lazily read `.npz` or `torch.save` file.
pub(super) type Archive = zip::ZipArchive<Box<dyn ReadSeek>>;

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
    archive: Option<Mutex<Archive>>,
    /// The whole file, for formats whose tensors are decoded from it
    /// lazily (legacy `torch.save`).
    blob: Option<Vec<u8>>,
}

impl TensorFile {
    fn new(
        path: &Path,
        entries: BTreeMap<String, Entry>,
        archive: Option<Mutex<Archive>>,
    ) -> TensorFile {
        TensorFile {
            path: path.to_path_buf(),
            entries,
            archive,
            blob: None,
        }
    }

    fn with_blob(mut self, blob: Option<Vec<u8>>) -> TensorFile {
        self.blob = blob;
        self
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
            blob: None,
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

    /// [`Error::Dtype`] unless `name` is a float tensor (float32, float64,
    /// float16 or bfloat16, from its header; nothing is read),
    /// [`Error::MissingTensor`] if absent.
    pub(crate) fn check_float(&self, name: &str) -> Result<()> {
        let e = self.entry(name)?;
        match &e.source {
            Source::Memory => Ok(()),
            Source::Member(m) => m.check_float(&self.path, name),
            Source::Torch(s) => s.check_float(&self.path, name),
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

    /// The tensor `name`, read on first access (as f32): [`Error::MissingTensor`]
    /// naming the file if absent, [`Error::Dtype`] if not a float tensor
    /// (float32, float64, float16, bfloat16), or the error that reading it
    /// met.
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
            Source::Torch(s) => torch::load(
                &self.path,
                name,
                s,
                self.archive.as_ref(),
                self.blob.as_deref(),
            ),
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

/// What a file's first bytes say it is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A zip: `.npz`, or a `torch.save` file if it has a `data.pkl`.
    Zip,
    /// A legacy (non-zip) `torch.save` file.
    TorchLegacy,
    /// A single `.npy` array (not a file of named tensors).
    Npy,
    /// Anything else is read as `.safetensors`.
    Other,
}

fn sniff(head: &[u8]) -> Kind {
    if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        Kind::Zip
    } else if torch::is_legacy(head) {
        Kind::TorchLegacy
    } else if head.starts_with(b"\x93NUMPY") {
        Kind::Npy
    } else {
        Kind::Other
    }
}

/// What is wrong with a zip member's directory entry, checked before
/// anything is sized from it: its compressed bytes must lie between its
/// local header (at `header_start`) and the central directory (at
/// `dir_start`), and a stored (uncompressed) member must claim exactly the
/// bytes it stores, and a compressed one no more than deflate can
/// inflate its bytes to. `None` when it is consistent.
pub(crate) fn zip_member_claim(
    size: u64,
    compressed: u64,
    method: zip::CompressionMethod,
    header_start: u64,
    dir_start: u64,
) -> Option<String> {
    if header_start
        .checked_add(compressed)
        .is_none_or(|end| end > dir_start)
    {
        return Some(format!(
            "the zip directory says it holds {compressed} bytes from offset {header_start}, past the archive's {dir_start} bytes of members"
        ));
    }
    if method == zip::CompressionMethod::Stored && size != compressed {
        return Some(format!(
            "the zip directory says it is stored (uncompressed) in {compressed} bytes but holds {size}"
        ));
    }
    // Deflate's densest stream inflates 1032-fold (258 bytes per 2-bit
    // code); the one place the readers check it.
    if method != zip::CompressionMethod::Stored
        && size > compressed.saturating_mul(1032).saturating_add(65_536)
    {
        return Some(format!(
            "the zip directory says {size} bytes, more than its {compressed} compressed bytes can inflate to"
        ));
    }
    None
}

/// Opens a zip of tensors: a `torch.save` file if it has a `data.pkl`
/// (at its root or in one top folder), else an `.npz`.
fn from_zip(path: &Path, reader: Box<dyn ReadSeek>) -> Result<TensorFile> {
    let zip =
        zip::ZipArchive::new(reader).map_err(|e| format_err(path, "zip (npz or PyTorch)", e))?;
    match torch::zip_top(&zip) {
        Some(top) => torch::from_zip(path, zip, &top),
        None => npz::from_archive(path, zip),
    }
}

fn npy_not_a_dict(path: &Path) -> Error {
    format_err(
        path,
        "tensor",
        "a single .npy array, not a file of named tensors (use .npz, .safetensors or a torch.save file)",
    )
}

/// Reads a file of named tensors, choosing the format by its content: a
/// zip is an `.npz`, or a `torch.save` state dict when it holds a
/// `data.pkl`; a file starting with the legacy `torch.save` magic number
/// is one; anything else is read as `.safetensors` (as is a path ending in
/// `.safetensors`, also from a pipe). `torch.save` files (`.pt`, `.pth`,
/// `.bin`) must hold a state dict (`model.state_dict()`): a whole pickled
/// model is an error saying so.
pub fn read_tensors(path: impl AsRef<Path>) -> Result<TensorFile> {
    let path = path.as_ref();
    if path.extension().and_then(|e| e.to_str()) == Some("safetensors") {
        return read_safetensors(path);
    }
    let mut head = Vec::with_capacity(torch::SNIFF_BYTES);
    let mut f = File::open(path).map_err(io_err(path))?;
    (&mut f)
        .take(torch::SNIFF_BYTES as u64)
        .read_to_end(&mut head)
        .map_err(io_err(path))?;
    match sniff(&head) {
        Kind::Zip => {
            let f = File::open(path).map_err(io_err(path))?;
            from_zip(path, Box::new(std::io::BufReader::new(f)))
        }
        Kind::TorchLegacy => {
            let bytes = read_whole(path)?;
            torch::from_legacy(path, bytes)
        }
        Kind::Npy => Err(npy_not_a_dict(path)),
        Kind::Other => {
            let torch_ext = matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("pt" | "pth" | "bin" | "ckpt")
            );
            read_safetensors(path).map_err(|e| match e {
                Error::Format { .. } if torch_ext => format_err(
                    path,
                    "PyTorch",
                    "neither a zip torch.save file (with a data.pkl) nor a legacy one \
                     (a pickle of its magic number), nor safetensors",
                ),
                e => e,
            })
        }
    }
}

/// A whole file's bytes, the buffer reserved fallibly from its length (an
/// [`Error::Alloc`] instead of an abort), e.g. to load a model with a
/// `*_from_bytes` function after looking at it.
pub fn read_file_bytes(path: impl AsRef<Path>) -> Result<Vec<u8>> {
    read_whole(path.as_ref())
}

/// A regular file's bytes, the buffer reserved fallibly from its length.
pub(crate) fn read_whole(path: &Path) -> Result<Vec<u8>> {
    let mut f = File::open(path).map_err(io_err(path))?;
    let len = f.metadata().map_err(io_err(path))?.len();
    let mut bytes = Vec::new();
    let n = usize::try_from(len).unwrap_or(usize::MAX);
    bytes.try_reserve_exact(n).map_err(|_| Error::Alloc {
        what: format!("the file {}", path.display()),
        bytes: n,
    })?;
    f.read_to_end(&mut bytes).map_err(io_err(path))?;
    Ok(bytes)
}

/// [`read_tensors`] of a file's bytes already in memory (from an object
/// store, say): the same formats, told apart by content; `name` names the
/// bytes in messages. The bytes are copied once (a zip or legacy
/// `torch.save` file keeps them to read tensors lazily).
pub fn read_tensors_from_bytes(bytes: &[u8], name: impl AsRef<Path>) -> Result<TensorFile> {
    let path = name.as_ref();
    match sniff(bytes) {
        Kind::Zip | Kind::TorchLegacy => {
            let mut v = Vec::new();
            v.try_reserve_exact(bytes.len()).map_err(|_| Error::Alloc {
                what: format!("a copy of {}", path.display()),
                bytes: bytes.len(),
            })?;
            v.extend_from_slice(bytes);
            from_owned(v, path)
        }
        _ => from_slice(bytes, path),
    }
}

/// Bytes of a zip or legacy `torch.save` file, kept; others parsed from a
/// slice by [`from_slice`].
fn from_owned(bytes: Vec<u8>, path: &Path) -> Result<TensorFile> {
    match sniff(&bytes) {
        Kind::Zip => from_zip(path, Box::new(std::io::Cursor::new(bytes))),
        Kind::TorchLegacy => torch::from_legacy(path, bytes),
        _ => from_slice(&bytes, path),
    }
}

fn from_slice(bytes: &[u8], path: &Path) -> Result<TensorFile> {
    match sniff(bytes) {
        Kind::Npy => Err(npy_not_a_dict(path)),
        _ => safetensors_from_bytes(bytes, path),
    }
}

/// [`read_tensors_from_bytes`] of everything `reader` yields, read to its
/// end (at most [`MAX_PIPE_DATA_BYTES`], the buffer growing only as data
/// arrives); `name` names it in messages.
pub fn read_tensors_from_reader(reader: impl Read, name: impl AsRef<Path>) -> Result<TensorFile> {
    let path = name.as_ref();
    let mut bytes = Vec::new();
    reader
        .take(MAX_PIPE_DATA_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io_err(path))?;
    if bytes.len() as u64 > MAX_PIPE_DATA_BYTES {
        return Err(Error::Invalid(format!(
            "{}: more than {MAX_PIPE_DATA_BYTES} bytes",
            path.display()
        )));
    }
    from_owned(bytes, path)
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
