//! `.npy` arrays: float32 or float64 read (Fortran order turned into C
//! order), float32 written; integer arrays only as sequence lengths. A
//! truncated array or another dtype is an error naming the file and array.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use super::{Tensor, format_err, io_err, write_atomic};
use crate::error::{Error, Result, shape_str};

/// Converts a Fortran-order buffer of `shape` to C order.
fn fortran_to_c(shape: &[usize], data: Vec<f32>) -> Vec<f32> {
    if shape.len() < 2 {
        return data;
    }
    let mut out = vec![0.0; data.len()];
    let mut idx = vec![0usize; shape.len()];
    for v in out.iter_mut() {
        // Fortran offset of the C-order multi-index `idx`.
        let mut off = 0;
        for d in (0..shape.len()).rev() {
            off = off * shape[d] + idx[d];
        }
        *v = data[off];
        for d in (0..shape.len()).rev() {
            idx[d] += 1;
            if idx[d] < shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    out
}

/// Parses one `.npy` stream (`name` and `path` are for messages).
pub(super) fn parse_npy(
    reader: impl Read,
    path: &Path,
    name: &str,
    format: &'static str,
) -> Result<Tensor> {
    let npy = npyz::NpyFile::new(reader)
        .map_err(|e| format_err(path, format, format!("array `{name}`: {e}")))?;
    let shape: Vec<usize> = npy
        .shape()
        .iter()
        .map(|&d| usize::try_from(d))
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| format_err(path, format, format!("array `{name}` is too large")))?;
    let fortran = npy.order() == npyz::Order::Fortran;
    let descr = npy.dtype().descr();
    let n: usize = shape.iter().product();
    let truncated = |e: std::io::Error| {
        format_err(
            path,
            format,
            format!("array `{name}` {}: {e}", shape_str(&shape)),
        )
    };
    let data: Vec<f32> = match npy.try_data::<f32>() {
        Ok(reader) => reader
            .into_iter()
            .collect::<std::io::Result<_>>()
            .map_err(truncated)?,
        Err(npy) => match npy.try_data::<f64>() {
            Ok(reader) => reader
                .into_iter()
                .map(|v| v.map(|v| v as f32))
                .collect::<std::io::Result<_>>()
                .map_err(truncated)?,
            Err(_) => {
                return Err(Error::Dtype {
                    tensor: name.to_string(),
                    path: path.to_path_buf(),
                    dtype: descr,
                });
            }
        },
    };
    if data.len() != n {
        return Err(format_err(
            path,
            format,
            format!(
                "array `{name}` holds {} values, its shape {} needs {n}",
                data.len(),
                shape_str(&shape)
            ),
        ));
    }
    let data = if fortran {
        fortran_to_c(&shape, data)
    } else {
        data
    };
    Ok(Tensor { shape, data })
}

/// Reads a `.npy` file (float32 or float64).
pub fn read_npy(path: impl AsRef<Path>) -> Result<Tensor> {
    let path = path.as_ref();
    let file = File::open(path).map_err(io_err(path))?;
    let name = path
        .file_stem()
        .map_or_else(|| "array".into(), |s| s.to_string_lossy().into_owned());
    parse_npy(std::io::BufReader::new(file), path, &name, "npy")
}

pub(super) fn npy_bytes(shape: &[usize], data: &[f32]) -> Result<Vec<u8>> {
    use npyz::WriterBuilder;
    let mut buf = Vec::new();
    let shape64: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
    let mut w = npyz::WriteOptions::new()
        .default_dtype()
        .shape(&shape64)
        .writer(&mut buf)
        .begin_nd()
        .map_err(|e| Error::Invalid(format!("cannot encode npy: {e}")))?;
    w.extend(data.iter().copied())
        .and_then(|_| w.finish())
        .map_err(|e| Error::Invalid(format!("cannot encode npy: {e}")))?;
    Ok(buf)
}

/// Encodes a float32 `.npy` file in memory.
pub fn npy_file_bytes(shape: &[usize], data: &[f32]) -> Result<Vec<u8>> {
    npy_bytes(shape, data)
}

/// Writes a float32 `.npy` file (atomically).
pub fn write_npy(path: impl AsRef<Path>, shape: &[usize], data: &[f32]) -> Result<()> {
    let path = path.as_ref();
    let bytes = npy_bytes(shape, data)?;
    write_atomic(path, |w| w.write_all(&bytes).map_err(io_err(path)))
}

/// Reads a 1-D `.npy` of sequence lengths (int64, int32, uint, or
/// integral floats), e.g. for `--seq-lens`.
pub fn read_npy_lengths(path: impl AsRef<Path>) -> Result<Vec<usize>> {
    let path = path.as_ref();
    let file = File::open(path).map_err(io_err(path))?;
    let npy = npyz::NpyFile::new(std::io::BufReader::new(file))
        .map_err(|e| format_err(path, "npy", e))?;
    if npy.shape().len() != 1 {
        return Err(Error::Shape {
            tensor: format!("lengths {}", path.display()),
            expected: "[B]".into(),
            got: shape_str(&npy.shape().iter().map(|&d| d as usize).collect::<Vec<_>>()),
        });
    }
    let descr = npy.dtype().descr();
    let bad = |e: std::io::Error| format_err(path, "npy", e);
    let vals: Vec<f64> = match npy.try_data::<i64>() {
        Ok(r) => r
            .into_iter()
            .map(|v| v.map(|v| v as f64))
            .collect::<std::io::Result<_>>()
            .map_err(bad)?,
        Err(npy) => match npy.try_data::<i32>() {
            Ok(r) => r
                .into_iter()
                .map(|v| v.map(|v| v as f64))
                .collect::<std::io::Result<_>>()
                .map_err(bad)?,
            Err(npy) => match npy.try_data::<u64>() {
                Ok(r) => r
                    .into_iter()
                    .map(|v| v.map(|v| v as f64))
                    .collect::<std::io::Result<_>>()
                    .map_err(bad)?,
                Err(npy) => match npy.try_data::<f64>() {
                    Ok(r) => r.into_iter().collect::<std::io::Result<_>>().map_err(bad)?,
                    Err(npy) => match npy.try_data::<f32>() {
                        Ok(r) => r
                            .into_iter()
                            .map(|v| v.map(|v| v as f64))
                            .collect::<std::io::Result<_>>()
                            .map_err(bad)?,
                        Err(_) => {
                            return Err(Error::Dtype {
                                tensor: "lengths".into(),
                                path: path.to_path_buf(),
                                dtype: descr,
                            });
                        }
                    },
                },
            },
        },
    };
    vals.iter()
        .enumerate()
        .map(|(i, &v)| {
            if v >= 0.0 && v.fract() == 0.0 && v < 1e15 {
                Ok(v as usize)
            } else {
                Err(Error::Invalid(format!(
                    "{}: length [{i}] = {v} is not a nonnegative integer",
                    path.display()
                )))
            }
        })
        .collect()
}
