//! `.safetensors` files: F32 and F64 tensors read (F64 converted to f32),
//! F32 written; any other dtype is an [`Error::Dtype`] naming the tensor.

use std::collections::BTreeMap;
use std::path::Path;

use super::{Tensor, TensorFile, format_err, io_err, write_atomic};
use crate::error::{Error, Result};

/// Reads every tensor of a `.safetensors` file (F32 or F64).
pub fn read_safetensors(path: impl AsRef<Path>) -> Result<TensorFile> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    safetensors_from_bytes(&bytes, path)
}

/// Parses `.safetensors` bytes (F32 or F64); `path` names them in errors.
pub fn safetensors_from_bytes(bytes: &[u8], path: &Path) -> Result<TensorFile> {
    use safetensors::Dtype;
    let st = safetensors::SafeTensors::deserialize(bytes)
        .map_err(|e| format_err(path, "safetensors", e))?;
    let mut tensors = BTreeMap::new();
    for (name, view) in st.iter() {
        let data: Vec<f32> = match view.dtype() {
            Dtype::F32 => view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::F64 => view
                .data()
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().expect("chunks_exact(8)")) as f32)
                .collect(),
            other => {
                return Err(Error::Dtype {
                    tensor: name.to_string(),
                    path: path.to_path_buf(),
                    dtype: format!("{other:?}"),
                });
            }
        };
        tensors.insert(name.to_string(), Tensor::new(view.shape().to_vec(), data)?);
    }
    Ok(TensorFile {
        path: path.to_path_buf(),
        tensors,
    })
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
