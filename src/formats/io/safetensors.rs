//! `.safetensors` files: F32, F64, F16 and BF16 tensors read (converted
//! to f32), F32 written; a tensor of another dtype is an [`Error::Dtype`] naming it
//! when a format asks for it (and nothing if none does).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use super::{Entry, Source, Tensor, TensorFile, format_err, io_err, write_atomic};
use crate::error::{Error, Result};

/// safetensors' own cap on the JSON header.
const MAX_HEADER_BYTES: u64 = 100_000_000;

/// Reads every tensor of a `.safetensors` file (F32, F64, F16 or BF16). A regular
/// file is read whole (its length is known; the buffer is reserved
/// fallibly); anything else (a pipe, a device) only after its 8-byte
/// header length and JSON header look like a safetensors header, so
/// `/dev/zero` is an error at once.
pub fn read_safetensors(path: impl AsRef<Path>) -> Result<TensorFile> {
    let path = path.as_ref();
    let mut file = File::open(path).map_err(io_err(path))?;
    let meta = file.metadata().map_err(io_err(path))?;
    let mut bytes = Vec::new();
    let alloc = |bytes: u64| Error::Alloc {
        what: format!("the safetensors file {}", path.display()),
        bytes: usize::try_from(bytes).unwrap_or(usize::MAX),
    };
    if meta.is_file() {
        let len = usize::try_from(meta.len()).map_err(|_| alloc(meta.len()))?;
        bytes
            .try_reserve_exact(len)
            .map_err(|_| alloc(meta.len()))?;
        (&mut file)
            .take(meta.len())
            .read_to_end(&mut bytes)
            .map_err(io_err(path))?;
    } else {
        let mut n = [0u8; 8];
        file.read_exact(&mut n).map_err(io_err(path))?;
        let n64 = u64::from_le_bytes(n);
        if !(2..=MAX_HEADER_BYTES).contains(&n64) {
            return Err(format_err(
                path,
                "safetensors",
                format!("a header of {n64} bytes"),
            ));
        }
        bytes.extend_from_slice(&n);
        (&mut file)
            .take(n64)
            .read_to_end(&mut bytes)
            .map_err(io_err(path))?;
        if bytes.get(8) != Some(&b'{') {
            return Err(format_err(
                path,
                "safetensors",
                "the header is not a JSON object",
            ));
        }
        // A pipe's length is unknown: read no further than the header's
        // largest data offset (one byte more shows extra data), within the
        // limit for piped data, growing only as data arrives.
        let header = &bytes[8..];
        let end = data_end(header).min(MAX_PIPE_DATA_BYTES);
        (&mut file)
            .take(end + 1)
            .read_to_end(&mut bytes)
            .map_err(io_err(path))?;
    }
    safetensors_from_bytes(&bytes, path)
}

/// The most data bytes read from a safetensors file that is not a regular
/// file (a pipe), whatever its header says (8 × the per-tensor limit).
pub const MAX_PIPE_DATA_BYTES: u64 = 8 * crate::MAX_TENSOR_ELEMENTS as u64;

/// The largest end offset named by a `"data_offsets": [a, b]` in the header
/// text (0 if none): how many data bytes the file claims. Only a bound for
/// reading; the header itself is parsed and checked afterwards.
fn data_end(header: &[u8]) -> u64 {
    let key = b"data_offsets";
    let mut end = 0u64;
    let mut i = 0;
    while let Some(at) = header[i..].windows(key.len()).position(|w| w == key) {
        i += at + key.len();
        // The second number after the next '['.
        let Some(open) = header[i..].iter().position(|&c| c == b'[') else {
            break;
        };
        let rest = &header[i + open + 1..];
        let mut nums = rest.split(|&c| c == b',' || c == b']').take(2).map(|t| {
            std::str::from_utf8(t)
                .ok()
                .and_then(|t| t.trim().parse::<u64>().ok())
                .unwrap_or(u64::MAX)
        });
        if let (Some(_), Some(b)) = (nums.next(), nums.next()) {
            end = end.max(b);
        }
    }
    end
}

/// Parses `.safetensors` bytes; `path` names them in errors. F32, F64,
/// F16 and BF16 tensors are decoded at once (as f32); others only make [`TensorFile::get`] fail.
pub fn safetensors_from_bytes(bytes: &[u8], path: &Path) -> Result<TensorFile> {
    use safetensors::Dtype;
    let st = safetensors::SafeTensors::deserialize(bytes)
        .map_err(|e| format_err(path, "safetensors", e))?;
    let mut entries = BTreeMap::new();
    for (name, view) in st.iter() {
        let dtype = format!("{:?}", view.dtype());
        let shape = view.shape().to_vec();
        let (width, decode): (usize, fn(&[u8]) -> f32) = match view.dtype() {
            Dtype::F32 => (4, |b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            Dtype::F64 => (8, |b| {
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                f64::from_le_bytes(a) as f32
            }),
            Dtype::F16 => (2, |b| {
                super::half::f16_to_f32(u16::from_le_bytes([b[0], b[1]]))
            }),
            Dtype::BF16 => (2, |b| {
                super::half::bf16_to_f32(u16::from_le_bytes([b[0], b[1]]))
            }),
            _ => {
                entries.insert(
                    name.to_string(),
                    Entry::new(shape, dtype, Source::Unsupported),
                );
                continue;
            }
        };
        let n = view.data().len() / width;
        let mut data = Vec::new();
        data.try_reserve_exact(n).map_err(|_| Error::Alloc {
            what: format!("tensor `{name}` of {}", path.display()),
            bytes: n.saturating_mul(4),
        })?;
        data.extend(view.data().chunks_exact(width).map(decode));
        entries.insert(
            name.to_string(),
            Entry::loaded(Tensor::new(shape, data)?, dtype),
        );
    }
    Ok(TensorFile::new(path, entries, None))
}

/// The bytes of a `.safetensors` file holding named float32 tensors.
pub fn safetensors_file_bytes(arrays: &[(&str, &[usize], &[f32])]) -> Result<Vec<u8>> {
    let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = arrays
        .iter()
        .map(|(n, s, d)| {
            (
                n.to_string(),
                d.iter().flat_map(|v| v.to_le_bytes()).collect(),
                s.to_vec(),
            )
        })
        .collect();
    let views = bytes
        .iter()
        .map(|(n, b, s)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| Error::Invalid(format!("tensor `{n}`: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::serialize(views, None)
        .map_err(|e| Error::Invalid(format!("writing safetensors: {e}")))
}

/// Writes named float32 tensors as `.safetensors` (atomically).
pub fn write_safetensors(
    path: impl AsRef<Path>,
    arrays: &[(&str, &[usize], &[f32])],
) -> Result<()> {
    let path = path.as_ref();
    let out = safetensors_file_bytes(arrays)?;
    write_atomic(path, |w| w.write_all(&out).map_err(io_err(path)))
}
