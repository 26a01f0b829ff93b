//! Constant tensors of an ONNX model: decoding `TensorProto`s (inline or
//! external data), and the index arithmetic the constant folder and the
//! layout tracker share (transpose, select, concat, broadcast). Every
//! output size is checked against [`MAX_TENSOR_ELEMENTS`](crate::MAX_TENSOR_ELEMENTS)
//! and allocated fallibly before it is filled.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path};

use crate::error::{Error, Result, checked_elements, shape_str, try_filled};
use crate::formats::onnx_proto::{self as pb, TensorProto};

/// Where a model came from: the name errors give it, and the directory its
/// external data is resolved in (none when loaded from bytes without one).
pub(super) struct Source<'a> {
    pub name: &'a Path,
    pub base: Option<&'a Path>,
}

impl Source<'_> {
    /// An [`Error::Format`] about this model.
    pub fn err(&self, reason: impl ToString) -> Error {
        Error::Format {
            path: self.name.to_path_buf(),
            format: "onnx",
            reason: reason.to_string(),
        }
    }

    /// An [`Error::Unsupported`] about this model.
    pub fn unsupported(&self, reason: impl std::fmt::Display) -> Error {
        Error::Unsupported(format!("{}: {reason}", self.name.display()))
    }
}

/// A constant's elements: floating types are held as `f32`, integer and
/// boolean types as `i64`.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Data {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

impl Data {
    pub fn len(&self) -> usize {
        match self {
            Data::F32(v) => v.len(),
            Data::I64(v) => v.len(),
        }
    }

    /// The elements at `map` (indices into `self`, in range by construction).
    pub fn take(&self, map: &[usize], what: &str) -> Result<Data> {
        Ok(match self {
            Data::F32(v) => Data::F32(take(v, map, what)?),
            Data::I64(v) => Data::I64(take(v, map, what)?),
        })
    }

    pub fn all_zero(&self) -> bool {
        match self {
            Data::F32(v) => v.iter().all(|&x| x == 0.0),
            Data::I64(v) => v.iter().all(|&x| x == 0),
        }
    }
}

/// A folded constant.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Const {
    pub shape: Vec<usize>,
    pub data: Data,
}

impl Const {
    /// Its values as integers, if it is an integer scalar or vector.
    pub fn ints(&self) -> Option<&[i64]> {
        match (&self.data, self.shape.len()) {
            (Data::I64(v), 0 | 1) => Some(v),
            _ => None,
        }
    }
}

/// `src` at the indices of `map`, allocated fallibly.
pub(super) fn take<T: Copy>(src: &[T], map: &[usize], what: &str) -> Result<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(map.len()).map_err(|_| Error::Alloc {
        what: what.to_string(),
        bytes: map.len().saturating_mul(std::mem::size_of::<T>()),
    })?;
    v.extend(map.iter().map(|&i| src[i]));
    Ok(v)
}

/// Row-major strides of `shape`.
fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for a in (0..shape.len().saturating_sub(1)).rev() {
        s[a] = s[a + 1] * shape[a + 1];
    }
    s
}

/// The index map of an odometer over the lists' lengths (the output
/// shape): output element at position `pos` reads input index
/// `sum(lists[a][pos[a]] * stride[a])`; the map is allocated fallibly.
fn odometer(
    lists: &[Vec<usize>],
    stride: &[usize],
    what: &str,
) -> Result<(Vec<usize>, Vec<usize>)> {
    let dims: Vec<usize> = lists.iter().map(Vec::len).collect();
    let n = checked_elements(&dims, what)?;
    let mut map = try_filled(n, 0usize, what)?;
    if n == 0 {
        return Ok((dims, map));
    }
    let mut pos = vec![0usize; dims.len()];
    for slot in map.iter_mut() {
        *slot = pos
            .iter()
            .zip(lists)
            .zip(stride)
            .map(|((&p, l), &s)| l[p] * s)
            .sum();
        for a in (0..dims.len()).rev() {
            pos[a] += 1;
            if pos[a] < dims[a] {
                break;
            }
            pos[a] = 0;
        }
    }
    Ok((dims, map))
}

/// The index map of selecting `lists[a]` along every axis `a` of `shape`
/// (each index < `shape[a]`): the output shape and, per output element,
/// its input index.
pub(super) fn select_map(
    shape: &[usize],
    lists: &[Vec<usize>],
    what: &str,
) -> Result<(Vec<usize>, Vec<usize>)> {
    odometer(lists, &strides(shape), what)
}

/// The index map of transposing `shape` by `perm` (a permutation).
pub(super) fn transpose_map(
    shape: &[usize],
    perm: &[usize],
    what: &str,
) -> Result<(Vec<usize>, Vec<usize>)> {
    let st = strides(shape);
    let lists: Vec<Vec<usize>> = perm.iter().map(|&p| (0..shape[p]).collect()).collect();
    let pst: Vec<usize> = perm.iter().map(|&p| st[p]).collect();
    odometer(&lists, &pst, what)
}

/// The index map of broadcasting `shape` to `out` (numpy rules; `out` has
/// at least as many axes and every axis of `shape` is 1 or equal).
pub(super) fn broadcast_map(shape: &[usize], out: &[usize], what: &str) -> Result<Vec<usize>> {
    let off = out.len() - shape.len();
    let st = strides(shape);
    let lists: Vec<Vec<usize>> = out
        .iter()
        .enumerate()
        .map(|(a, &d)| {
            if a < off || shape[a - off] == 1 {
                vec![0; d]
            } else {
                (0..d).collect()
            }
        })
        .collect();
    let pst: Vec<usize> = (0..out.len())
        .map(|a| if a < off { 0 } else { st[a - off] })
        .collect();
    Ok(odometer(&lists, &pst, what)?.1)
}

/// Concatenates `parts` (shapes equal but for `axis`) along `axis`.
pub(super) fn concat<T: Copy>(
    parts: &[(&[usize], &[T])],
    axis: usize,
    what: &str,
) -> Result<(Vec<usize>, Vec<T>)> {
    let first = parts[0].0;
    let mut shape = first.to_vec();
    shape[axis] = 0;
    for (s, _) in parts {
        shape[axis] = shape[axis].saturating_add(s[axis]);
    }
    let n = checked_elements(&shape, what)?;
    let mut out = Vec::new();
    out.try_reserve_exact(n).map_err(|_| Error::Alloc {
        what: what.to_string(),
        bytes: n.saturating_mul(std::mem::size_of::<T>()),
    })?;
    let outer: usize = first[..axis].iter().product();
    for o in 0..outer {
        for (s, d) in parts {
            let block: usize = s[axis..].iter().product();
            out.extend_from_slice(&d[o * block..(o + 1) * block]);
        }
    }
    Ok((shape, out))
}

/// ONNX `Slice` on one axis of length `dim`: the indices selected.
pub(super) fn slice_indices(dim: usize, start: i64, end: i64, step: i64) -> Option<Vec<usize>> {
    if step == 0 {
        return None;
    }
    let d = dim as i64;
    let norm = |v: i64| if v < 0 { v.saturating_add(d) } else { v };
    let (s, e) = (norm(start), norm(end));
    let mut out = Vec::new();
    if step > 0 {
        let (s, e) = (s.clamp(0, d), e.clamp(0, d));
        let mut i = s;
        while i < e {
            out.push(i as usize);
            i = i.saturating_add(step);
        }
    } else if d > 0 {
        // As the ONNX spec says: start clamped to [0, d − 1], end to
        // [−1, d − 1] (−1: through index 0).
        let (s, e) = (s.clamp(0, d - 1), e.clamp(-1, d - 1));
        let mut i = s;
        while i > e {
            out.push(i as usize);
            i = i.saturating_add(step);
        }
    }
    Some(out)
}

/// Normalizes a possibly negative axis against `rank`.
pub(super) fn axis(a: i64, rank: usize) -> Option<usize> {
    let r = rank as i64;
    let a = if a < 0 { a + r } else { a };
    (0..r).contains(&a).then_some(a as usize)
}

/// An IEEE half's value.
fn f16_to_f32(h: u16) -> f32 {
    let sign = if h & 0x8000 != 0 { -1.0f32 } else { 1.0 };
    let exp = ((h >> 10) & 0x1f) as i32;
    let frac = (h & 0x3ff) as f32;
    match exp {
        0 => sign * frac * 2f32.powi(-24),
        31 if frac == 0.0 => sign * f32::INFINITY,
        31 => f32::NAN,
        e => sign * (1.0 + frac / 1024.0) * 2f32.powi(e - 15),
    }
}

/// Decodes a `TensorProto` (an initializer, a `Constant`'s value).
pub(super) fn read_tensor(src: &Source, t: &TensorProto) -> Result<Const> {
    let name = &t.name;
    let shape: Vec<usize> = t
        .dims
        .iter()
        .map(|&d| {
            usize::try_from(d)
                .map_err(|_| src.err(format!("tensor `{name}` has a negative dimension ({d})")))
        })
        .collect::<Result<_>>()?;
    let n = checked_elements(&shape, &format!("tensor `{name}`"))
        .map_err(|e| src.err(e.to_string()))?;
    let item = match t.data_type {
        pb::FLOAT | pb::INT32 | pb::UINT32 => 4,
        pb::DOUBLE | pb::INT64 => 8,
        pb::FLOAT16 | pb::BFLOAT16 | pb::INT16 | pb::UINT16 => 2,
        pb::INT8 | pb::UINT8 | pb::BOOL => 1,
        other => {
            return Err(Error::Dtype {
                tensor: name.clone(),
                path: src.name.to_path_buf(),
                dtype: format!("ONNX data type {other}"),
            });
        }
    };
    let external;
    let raw: &[u8] = match t.data_location {
        0 => &t.raw_data,
        pb::EXTERNAL => {
            // Sized from the shape, checked against the file first.
            let bytes = n
                .checked_mul(item)
                .ok_or_else(|| src.err(format!("tensor `{name}` is too large")))?;
            external = external_bytes(src, t, bytes)?;
            &external
        }
        other => {
            return Err(src.err(format!(
                "tensor `{name}` has data_location {other} (0 or 1 expected)"
            )));
        }
    };
    let what = format!("tensor `{name}` of {}", src.name.display());
    let data = if !raw.is_empty() || t.data_location == pb::EXTERNAL {
        if !raw.len().is_multiple_of(item) {
            return Err(src.err(format!(
                "tensor `{name}`: raw_data holds {} bytes, not a whole number of {item}-byte values",
                raw.len()
            )));
        }
        if raw.len() / item != n {
            return Err(src.err(format!(
                "tensor `{name}` holds {} values, its shape {} needs {n}",
                raw.len() / item,
                shape_str(&shape)
            )));
        }
        let le = |c: &[u8]| {
            let mut b = [0u8; 8];
            b[..c.len()].copy_from_slice(c);
            u64::from_le_bytes(b)
        };
        let chunks = raw.chunks_exact(item);
        match t.data_type {
            pb::FLOAT | pb::DOUBLE | pb::FLOAT16 | pb::BFLOAT16 => {
                let mut v = try_filled(n, 0f32, &what)?;
                for (o, c) in v.iter_mut().zip(chunks) {
                    let bits = le(c);
                    *o = match t.data_type {
                        pb::FLOAT => f32::from_bits(bits as u32),
                        pb::DOUBLE => f64::from_bits(bits) as f32,
                        pb::FLOAT16 => f16_to_f32(bits as u16),
                        _ => f32::from_bits((bits as u32) << 16),
                    };
                }
                Data::F32(v)
            }
            dt => {
                let mut v = try_filled(n, 0i64, &what)?;
                for (o, c) in v.iter_mut().zip(chunks) {
                    let bits = le(c);
                    *o = match dt {
                        pb::INT64 => bits as i64,
                        pb::INT32 => bits as u32 as i32 as i64,
                        pb::INT16 => bits as u16 as i16 as i64,
                        pb::INT8 => bits as u8 as i8 as i64,
                        _ => bits as i64, // unsigned and bool
                    };
                }
                Data::I64(v)
            }
        }
    } else {
        let count = |len: usize| {
            if len == n {
                Ok(())
            } else {
                Err(src.err(format!(
                    "tensor `{name}` holds {len} values, its shape {} needs {n}",
                    shape_str(&shape)
                )))
            }
        };
        match t.data_type {
            pb::FLOAT => {
                count(t.float_data.len())?;
                Data::F32(t.float_data.clone())
            }
            pb::DOUBLE => {
                count(t.double_data.len())?;
                Data::F32(t.double_data.iter().map(|&v| v as f32).collect())
            }
            pb::FLOAT16 | pb::BFLOAT16 => {
                count(t.int32_data.len())?;
                let bf = t.data_type == pb::BFLOAT16;
                Data::F32(
                    t.int32_data
                        .iter()
                        .map(|&b| {
                            if bf {
                                f32::from_bits((b as u32 & 0xffff) << 16)
                            } else {
                                f16_to_f32(b as u16)
                            }
                        })
                        .collect(),
                )
            }
            pb::INT64 => {
                count(t.int64_data.len())?;
                Data::I64(t.int64_data.clone())
            }
            pb::UINT32 => {
                // uint64_data (tag 11) is not decoded: only raw_data.
                count(0)?;
                Data::I64(Vec::new())
            }
            _ => {
                count(t.int32_data.len())?;
                Data::I64(t.int32_data.iter().map(|&v| v as i64).collect())
            }
        }
    };
    Ok(Const { shape, data })
}

/// The `bytes` bytes of a tensor stored outside the model: its
/// `location` must be a relative path inside the model's directory (no
/// `..`, not absolute, no symbolic link leading out), and `offset` and
/// `length` must lie within that file — all checked before anything is
/// allocated.
fn external_bytes(src: &Source, t: &TensorProto, bytes: usize) -> Result<Vec<u8>> {
    let name = &t.name;
    let Some(base) = src.base else {
        return Err(src.unsupported(format!(
            "tensor `{name}` uses external data, and the model was loaded from bytes without a directory to find it in (pass the model's directory as base_dir)"
        )));
    };
    let (mut location, mut offset, mut length) = (None, None, None);
    for e in &t.external_data {
        let slot = match e.key.as_str() {
            "location" => &mut location,
            "offset" => &mut offset,
            "length" => &mut length,
            _ => continue, // checksum, or keys of newer writers
        };
        if slot.replace(e.value.as_str()).is_some() {
            return Err(src.err(format!(
                "tensor `{name}`: external data key `{}` is given twice",
                e.key
            )));
        }
    }
    let location = location.filter(|l| !l.is_empty()).ok_or_else(|| {
        src.err(format!(
            "tensor `{name}` uses external data but has no location"
        ))
    })?;
    let num = |v: Option<&str>, key: &str| -> Result<Option<u64>> {
        v.map(|s| {
            s.trim().parse::<u64>().map_err(|_| {
                src.err(format!(
                    "tensor `{name}`: external data {key} `{s}` is not a nonnegative integer"
                ))
            })
        })
        .transpose()
    };
    let (offset, length) = (num(offset, "offset")?, num(length, "length")?);
    let rel = Path::new(location);
    if rel.is_absolute()
        || rel
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(src.unsupported(format!(
            "tensor `{name}`: external data location `{location}` is not a relative path inside the model's directory (absolute paths and `..` are refused)"
        )));
    }
    let io_err = |what: &'static str| {
        move |e: std::io::Error| {
            src.err(format!(
                "tensor `{name}`: external data `{location}`: {what}: {e}"
            ))
        }
    };
    let base = if base.as_os_str().is_empty() {
        Path::new(".")
    } else {
        base
    };
    let base_real = base
        .canonicalize()
        .map_err(io_err("the model's directory"))?;
    let full = base.join(rel);
    let real = full.canonicalize().map_err(io_err("cannot open"))?;
    if !real.starts_with(&base_real) {
        return Err(src.unsupported(format!(
            "tensor `{name}`: external data `{location}` leads outside the model's directory (through a symbolic link)"
        )));
    }
    let mut file = std::fs::File::open(&real).map_err(io_err("cannot open"))?;
    let meta = file.metadata().map_err(io_err("cannot read"))?;
    if !meta.is_file() {
        return Err(src.err(format!(
            "tensor `{name}`: external data `{location}` is not a regular file"
        )));
    }
    let size = meta.len();
    let offset = offset.unwrap_or(0);
    let length = match length {
        Some(l) => l,
        None => size.saturating_sub(offset),
    };
    if offset > size || length > size - offset {
        return Err(src.err(format!(
            "tensor `{name}`: external data offset {offset} + length {length} is beyond the end of `{location}` ({size} bytes)"
        )));
    }
    if length != bytes as u64 {
        return Err(src.err(format!(
            "tensor `{name}`: external data length {length}, but its shape needs {bytes} bytes"
        )));
    }
    let mut buf = try_filled(bytes, 0u8, &format!("external data of tensor `{name}`"))?;
    file.seek(SeekFrom::Start(offset))
        .and_then(|_| file.read_exact(&mut buf))
        .map_err(io_err("cannot read"))?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_maps() {
        // [2, 3] transposed.
        let (s, m) = transpose_map(&[2, 3], &[1, 0], "t").unwrap();
        assert_eq!((s, m), (vec![3, 2], vec![0, 3, 1, 4, 2, 5]));
        let (s, m) = select_map(&[2, 3], &[vec![1], vec![2, 0]], "t").unwrap();
        assert_eq!((s, m), (vec![1, 2], vec![5, 3]));
        assert_eq!(
            broadcast_map(&[3], &[2, 3], "t").unwrap(),
            vec![0, 1, 2, 0, 1, 2]
        );
        let (s, v) = concat(&[(&[1, 2][..], &[1, 2][..]), (&[1, 1], &[3])], 1, "t").unwrap();
        assert_eq!((s, v), (vec![1, 3], vec![1, 2, 3]));
        assert_eq!(slice_indices(5, 1, i64::MAX, 2), Some(vec![1, 3]));
        assert_eq!(
            slice_indices(5, -1, i64::MIN, -1),
            Some(vec![4, 3, 2, 1, 0])
        );
        assert_eq!(slice_indices(5, 0, 3, 0), None);
        // A negative step's start is clamped to [0, d − 1] (the spec):
        // start −10 of 5 is index 0, which the slice then holds.
        assert_eq!(slice_indices(5, -10, i64::MIN, -1), Some(vec![0]));
        assert_eq!(slice_indices(5, 9, 2, -2), Some(vec![4]));
        assert_eq!(slice_indices(0, -1, i64::MIN, -1), Some(vec![]));
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
    }
}
