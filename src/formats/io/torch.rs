//! PyTorch `torch.save` files of a state dict (`.pt`, `.pth`, `.bin`):
//!
//! * the zip format (torch ≥ 1.6): `<top>/data.pkl` (the pickle),
//!   `<top>/data/<key>` (one member per storage, raw little-endian),
//!   `<top>/byteorder`, `<top>/version`; the top folder's name varies;
//! * the legacy format (`_use_new_zipfile_serialization=False`): pickles
//!   of the magic number, the protocol version and `sys_info`, then the
//!   state dict's pickle, then the list of storage keys, then each storage
//!   as an 8-byte element count and its raw bytes.
//!
//! The pickle is read by the restricted unpickler of `pickle.rs`, which
//! never runs anything. Opening a file reads the pickle only: names,
//! shapes and dtypes are known at once, and a tensor's storage is read,
//! checked (its size, and that the shape, strides and offset stay inside
//! it) and decoded (float32, float64, float16, bfloat16 → f32; any
//! strides) only when it is asked for, so tensors a model does not use
//! (BatchNorm's int64 `num_batches_tracked`, say) may have any dtype.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::Path;
use std::sync::Mutex;

use super::pickle::{self, Fail, StorageKind, TensorRec};
use super::{Archive, Entry, Source, Tensor, TensorFile, half};
use crate::error::{Error, Result, checked_elements, shape_str, try_filled, try_zeros};

/// The longest `data.pkl` read from a zip save (a state dict's pickle is
/// about 100 bytes per tensor).
pub const MAX_PICKLE_BYTES: u64 = 64 << 20;

/// The magic number `0x1950a86a20f9469cfc6c` that a legacy save pickles
/// first, as the LONG1 opcode writes it.
const LEGACY_MAGIC: &[u8] = b"\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19";

/// How many first bytes [`is_legacy`] looks at.
pub(super) const SNIFF_BYTES: usize = 32;

/// The format name in messages.
const FORMAT: &str = "PyTorch";

/// Where a tensor's storage is.
#[derive(Debug)]
enum Loc {
    /// The zip member of this name.
    Member(String),
    /// Bytes `start..start + len` of the legacy file, kept in memory.
    Blob { start: usize, len: usize },
    /// A legacy storage key the file's storage list lacks.
    Missing,
}

/// A tensor of a `torch.save` file: its view of a storage, and where the
/// storage is.
#[derive(Debug)]
pub(super) struct Stored {
    rec: TensorRec,
    loc: Loc,
}

impl Stored {
    /// [`Error::Dtype`] unless the storage is a float one.
    pub(super) fn check_float(&self, path: &Path, name: &str) -> Result<()> {
        if self.rec.storage.kind.is_float() {
            Ok(())
        } else {
            Err(Error::Dtype {
                tensor: name.to_string(),
                path: path.to_path_buf(),
                dtype: self.rec.storage.kind.dtype().into(),
            })
        }
    }
}

fn err(path: &Path, reason: impl ToString) -> Error {
    Error::Format {
        path: path.to_path_buf(),
        format: FORMAT,
        reason: reason.to_string(),
    }
}

fn fail(path: &Path, what: &str, f: Fail) -> Error {
    match f {
        Fail::Format(m) => err(path, format!("{what}: {m}")),
        Fail::Refused(m) => Error::Unsupported(format!(
            "{}: refused (nothing was run): {m}",
            path.display()
        )),
    }
}

/// The folder (with its `/`, or empty) of a zip save's `data.pkl`, if
/// the archive is one: a member `data.pkl` or `<top>/data.pkl`.
pub(super) fn zip_top(zip: &Archive) -> Option<String> {
    zip.file_names().filter_map(|n| n.ok()).find_map(|n| {
        let top = n.strip_suffix("data.pkl")?;
        (top.is_empty() || (top.ends_with('/') && top.matches('/').count() == 1))
            .then(|| top.to_string())
    })
}

/// Reads the whole zip member `name` (at most `limit` bytes).
fn read_member(path: &Path, zip: &mut Archive, name: &str, limit: u64) -> Result<Vec<u8>> {
    let mut f = zip
        .by_name(name)
        .map_err(|e| err(path, format!("member `{name}`: {e}")))?;
    if f.size() > limit {
        return Err(err(
            path,
            format!(
                "member `{name}` has {} bytes, more than the {limit} read",
                f.size()
            ),
        ));
    }
    let mut v = Vec::new();
    (&mut f)
        .take(limit + 1)
        .read_to_end(&mut v)
        .map_err(|e| err(path, format!("member `{name}`: {e}")))?;
    if v.len() as u64 > limit {
        return Err(err(
            path,
            format!("member `{name}` inflates past {limit} bytes"),
        ));
    }
    Ok(v)
}

/// A state dict's tensors as entries; two of one name are an error.
fn entries(
    path: &Path,
    tensors: Vec<(String, TensorRec)>,
    loc: impl Fn(&TensorRec) -> Loc,
) -> Result<BTreeMap<String, Entry>> {
    let mut out = BTreeMap::new();
    for (name, rec) in tensors {
        let entry = Entry::new(
            rec.shape.clone(),
            rec.storage.kind.dtype().into(),
            Source::Torch(Stored {
                loc: loc(&rec),
                rec,
            }),
        );
        if out.insert(name.clone(), entry).is_some() {
            return Err(err(path, format!("two tensors are named `{name}`")));
        }
    }
    Ok(out)
}

/// Opens a zip `torch.save` file whose `data.pkl` is under `top`.
pub(super) fn from_zip(path: &Path, mut zip: Archive, top: &str) -> Result<TensorFile> {
    let order = format!("{top}byteorder");
    if zip.index_for_name(&order).is_some() {
        let b = read_member(path, &mut zip, &order, 16)?;
        if b != b"little" {
            return Err(Error::Unsupported(format!(
                "{}: byteorder `{}`: only little-endian torch.save files are read",
                path.display(),
                String::from_utf8_lossy(&b).escape_debug()
            )));
        }
    }
    let pkl = read_member(path, &mut zip, &format!("{top}data.pkl"), MAX_PICKLE_BYTES)?;
    let (p, end) = pickle::parse(&pkl, 0).map_err(|f| fail(path, "data.pkl", f))?;
    if end != pkl.len() {
        return Err(err(
            path,
            format!("data.pkl: {} bytes after STOP", pkl.len() - end),
        ));
    }
    let tensors = p.tensors().map_err(|f| fail(path, "data.pkl", f))?;
    let entries = entries(path, tensors, |r| {
        Loc::Member(format!("{top}data/{}", r.storage.key))
    })?;
    Ok(TensorFile::new(path, entries, Some(Mutex::new(zip))))
}

/// Whether `bytes` start like a legacy `torch.save` file: a pickle
/// (protocol 2 to 5) whose first [`SNIFF_BYTES`] hold the magic number.
pub(super) fn is_legacy(bytes: &[u8]) -> bool {
    let head = &bytes[..bytes.len().min(SNIFF_BYTES)];
    head.first() == Some(&0x80)
        && head.get(1).is_some_and(|v| (2..=5).contains(v))
        && head.windows(LEGACY_MAGIC.len()).any(|w| w == LEGACY_MAGIC)
}

/// Opens a legacy (non-zip) `torch.save` file held in memory.
pub(super) fn from_legacy(path: &Path, bytes: Vec<u8>) -> Result<TensorFile> {
    if !is_legacy(&bytes) {
        return Err(err(path, "no legacy torch.save magic number"));
    }
    let (magic, at) = pickle::parse(&bytes, 0).map_err(|f| fail(path, "magic number", f))?;
    if !magic.root_is_big_int() {
        return Err(err(path, "the first pickle is not the magic number"));
    }
    let (version, at) = pickle::parse(&bytes, at).map_err(|f| fail(path, "protocol version", f))?;
    match version.root_int() {
        Some(1001) => {}
        Some(v) => {
            return Err(err(
                path,
                format!("legacy protocol version {v} (1001 is read)"),
            ));
        }
        None => return Err(err(path, "the legacy protocol version is not an int")),
    }
    let (info, at) = pickle::parse(&bytes, at).map_err(|f| fail(path, "sys_info", f))?;
    if info.root_dict_false("little_endian") {
        return Err(Error::Unsupported(format!(
            "{}: saved on a big-endian machine; only little-endian torch.save files are read",
            path.display()
        )));
    }
    let (main, at) = pickle::parse(&bytes, at).map_err(|f| fail(path, "the state dict", f))?;
    let tensors = main
        .tensors()
        .map_err(|f| fail(path, "the state dict", f))?;
    let (keys, mut at) = pickle::parse(&bytes, at).map_err(|f| fail(path, "storage keys", f))?;
    let keys = keys
        .root_strings()
        .map_err(|f| fail(path, "storage keys", f))?;
    let declared: HashMap<&str, (StorageKind, u64)> = main
        .storages()
        .map(|s| (s.key.as_str(), (s.kind, s.numel)))
        .collect();
    let mut blobs: HashMap<String, (usize, usize)> = HashMap::new();
    for key in keys {
        let Some(&(kind, numel)) = declared.get(key) else {
            return Err(err(
                path,
                format!("storage `{key}` is listed but no tensor refers to it"),
            ));
        };
        let Some(n) = bytes.get(at..at + 8) else {
            return Err(err(path, format!("truncated before storage `{key}`")));
        };
        let stored = u64::from_le_bytes(n.try_into().unwrap_or([0; 8]));
        if stored != numel {
            return Err(err(
                path,
                format!("storage `{key}` holds {stored} elements, its record says {numel}"),
            ));
        }
        at += 8;
        let len = numel
            .checked_mul(kind.size() as u64)
            .and_then(|n| usize::try_from(n).ok())
            .filter(|&n| n <= bytes.len() - at)
            .ok_or_else(|| {
                err(
                    path,
                    format!(
                        "truncated: storage `{key}` of {numel} {} needs more than the {} bytes left",
                        kind.dtype(),
                        bytes.len() - at
                    ),
                )
            })?;
        if blobs.insert(key.to_string(), (at, len)).is_some() {
            return Err(err(path, format!("storage `{key}` is listed twice")));
        }
        at += len;
    }
    if at != bytes.len() {
        return Err(err(
            path,
            format!("{} bytes after the last storage", bytes.len() - at),
        ));
    }
    let entries = entries(path, tensors, |r| match blobs.get(&r.storage.key) {
        Some(&(start, len)) => Loc::Blob { start, len },
        None => Loc::Missing,
    })?;
    Ok(TensorFile::new(path, entries, None).with_blob(Some(bytes)))
}

/// Reads, checks and decodes one tensor.
pub(super) fn load(
    path: &Path,
    name: &str,
    s: &Stored,
    archive: Option<&Mutex<Archive>>,
    blob: Option<&[u8]>,
) -> Result<Tensor> {
    s.check_float(path, name)?;
    let r = &s.rec;
    let st = &r.storage;
    let what = format!("tensor `{name}` of {}", path.display());
    let count = checked_elements(&r.shape, &what)?;
    if count == 0 {
        return Tensor::new(r.shape.clone(), Vec::new());
    }
    let view = || {
        format!(
            "tensor `{name}`: size {}, stride {}, offset {}",
            shape_str(&r.shape),
            shape_str(&r.stride),
            r.offset
        )
    };
    // The last element the view reaches must be inside the storage.
    let last = r
        .shape
        .iter()
        .zip(&r.stride)
        .try_fold(r.offset, |a, (&d, &s)| {
            a.checked_add((d as u64 - 1).checked_mul(s as u64)?)
        })
        .filter(|&l| l < st.numel)
        .ok_or_else(|| {
            err(
                path,
                format!(
                    "{} reach past storage `{}` of {} elements",
                    view(),
                    st.key,
                    st.numel
                ),
            )
        })?;
    let es = st.kind.size() as u64;
    let storage_bytes = st.numel.checked_mul(es);
    // (last + 1) · es ≤ numel · es, which is checked against the file below.
    let need = (last + 1) * es;
    let data: std::borrow::Cow<[u8]> = match &s.loc {
        Loc::Blob { start, len } => {
            if storage_bytes != Some(*len as u64) {
                return Err(err(
                    path,
                    format!("storage `{}` has the wrong size", st.key),
                ));
            }
            match blob {
                Some(b) => std::borrow::Cow::Borrowed(&b[*start..*start + *len]),
                None => return Err(err(path, "the file's bytes are not held")),
            }
        }
        Loc::Missing => {
            return Err(err(
                path,
                format!("{}: storage `{}` is not in the file", view(), st.key),
            ));
        }
        Loc::Member(member) => {
            let Some(archive) = archive else {
                return Err(err(path, "the archive is not open"));
            };
            let mut zip = archive.lock().unwrap_or_else(|p| p.into_inner());
            let dir_start = zip.central_directory_start();
            let mut f = zip.by_name(member).map_err(|e| {
                err(
                    path,
                    format!("tensor `{name}`: storage member `{member}`: {e}"),
                )
            })?;
            if let Some(why) = super::zip_member_claim(
                f.size(),
                f.compressed_size(),
                f.compression(),
                f.header_start(),
                dir_start,
            ) {
                return Err(err(
                    path,
                    format!("tensor `{name}`: storage member `{member}`: {why}"),
                ));
            }
            if storage_bytes != Some(f.size()) {
                return Err(err(
                    path,
                    format!(
                        "tensor `{name}`: storage member `{member}` has {} bytes; {} {} elements need {}",
                        f.size(),
                        st.numel,
                        st.kind.dtype(),
                        storage_bytes.map_or("more".into(), |b| b.to_string())
                    ),
                ));
            }
            let need = usize::try_from(need).map_err(|_| Error::Alloc {
                what: what.clone(),
                bytes: usize::MAX,
            })?;
            let mut buf = try_filled(need, 0u8, &what)?;
            f.read_exact(&mut buf).map_err(|e| {
                err(
                    path,
                    format!("tensor `{name}`: storage member `{member}`: {e}"),
                )
            })?;
            std::borrow::Cow::Owned(buf)
        }
    };
    let data = materialize(st.kind, &data, r, count, &what)?;
    Tensor::new(r.shape.clone(), data)
}

/// The `count` elements of the view `r` of storage bytes `bytes` (which
/// reach at least its last element), in C order, as f32.
fn materialize(
    kind: StorageKind,
    bytes: &[u8],
    r: &TensorRec,
    count: usize,
    what: &str,
) -> Result<Vec<f32>> {
    let es = kind.size();
    let decode = |i: usize| -> f32 {
        let b = &bytes[i * es..(i + 1) * es];
        match kind {
            StorageKind::F64 => f64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as f32,
            StorageKind::F16 => half::f16_to_f32(u16::from_le_bytes([b[0], b[1]])),
            StorageKind::Bf16 => half::bf16_to_f32(u16::from_le_bytes([b[0], b[1]])),
            _ => f32::from_le_bytes(b.try_into().unwrap_or([0; 4])),
        }
    };
    let mut out = try_zeros(count, what)?;
    // Offsets fit: the last one was checked to be inside the storage,
    // whose bytes are in memory.
    let n = r.shape.len();
    let mut idx = vec![0usize; n];
    let mut off = r.offset as usize;
    for v in out.iter_mut() {
        *v = decode(off);
        for d in (0..n).rev() {
            idx[d] += 1;
            if idx[d] < r.shape[d] {
                off += r.stride[d];
                break;
            }
            off -= (r.shape[d] - 1) * r.stride[d];
            idx[d] = 0;
        }
    }
    Ok(out)
}
