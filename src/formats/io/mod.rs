//! Files: tensors from `.npy`, `.npz` (numpy, stored or deflated) and
//! `.safetensors`, `f32` (`f64` accepted and converted); the seed's weight
//! names; atomic writes (a temporary file renamed into place, so a failed
//! write never leaves a partial output).
//!
//! Parsing is done by well-kept crates (`npyz`, `zip`, `safetensors`); this
//! module maps their failures to [`Error`]s that name the file and tensor.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::config::{LstmConfig, Peephole};
use crate::error::{Error, Result, check_shape, shape_str};
use crate::weights::{SEED_NAMES, SeedWeights};

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
fn parse_npy(reader: impl Read, path: &Path, name: &str, format: &'static str) -> Result<Tensor> {
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

fn npy_bytes(shape: &[usize], data: &[f32]) -> Result<Vec<u8>> {
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

/// A file written to a temporary name beside its destination, waiting to be
/// renamed into place by [`Staged::commit`]. Dropped without commit, the
/// temporary file is removed: a failed run leaves no partial output.
#[derive(Debug)]
pub struct Staged {
    tmp: PathBuf,
    path: PathBuf,
    committed: bool,
}

impl Staged {
    /// Writes the whole file under a temporary name in `path`'s folder.
    pub fn write(
        path: impl AsRef<Path>,
        write: impl FnOnce(&mut dyn Write) -> Result<()>,
    ) -> Result<Staged> {
        let path = path.as_ref();
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let file_name = path
            .file_name()
            .ok_or_else(|| Error::Invalid(format!("{}: not a file path", path.display())))?;
        let tmp = dir.join(format!(
            ".{}.tmp{}",
            file_name.to_string_lossy(),
            std::process::id()
        ));
        let file = File::create(&tmp).map_err(io_err(path))?;
        let staged = Staged {
            tmp,
            path: path.to_path_buf(),
            committed: false,
        };
        let mut w = BufWriter::new(file);
        write(&mut w)?;
        let file = w.into_inner().map_err(|e| Error::Io {
            path: path.to_path_buf(),
            source: e.into_error(),
        })?;
        file.sync_all().map_err(io_err(path))?;
        Ok(staged)
    }

    /// Renames the temporary file to its destination.
    pub fn commit(mut self) -> Result<()> {
        std::fs::rename(&self.tmp, &self.path).map_err(io_err(&self.path))?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Writes a file atomically: staged under a temporary name, then renamed.
pub fn write_atomic(
    path: impl AsRef<Path>,
    write: impl FnOnce(&mut dyn Write) -> Result<()>,
) -> Result<()> {
    Staged::write(path, write)?.commit()
}

/// Encodes a float32 `.npy` file in memory.
pub fn npy_file_bytes(shape: &[usize], data: &[f32]) -> Result<Vec<u8>> {
    npy_bytes(shape, data)
}

/// Encodes named float32 arrays as an uncompressed `.npz` in memory.
pub fn npz_file_bytes(arrays: &[(&str, &[usize], &[f32])]) -> Result<Vec<u8>> {
    let mut buf = std::io::Cursor::new(Vec::new());
    let mut zip = zip::ZipWriter::new(&mut buf);
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    let bad = |e: zip::result::ZipError| Error::Invalid(format!("cannot encode npz: {e}"));
    for (name, shape, data) in arrays {
        zip.start_file(format!("{name}.npy"), opts).map_err(bad)?;
        zip.write_all(&npy_bytes(shape, data)?)
            .map_err(|e| Error::Invalid(format!("cannot encode npz: {e}")))?;
    }
    zip.finish().map_err(bad)?;
    Ok(buf.into_inner())
}

/// Writes a float32 `.npy` file (atomically).
pub fn write_npy(path: impl AsRef<Path>, shape: &[usize], data: &[f32]) -> Result<()> {
    let path = path.as_ref();
    let bytes = npy_bytes(shape, data)?;
    write_atomic(path, |w| w.write_all(&bytes).map_err(io_err(path)))
}

/// Reads every array of a `.npz` file.
pub fn read_npz(path: impl AsRef<Path>) -> Result<TensorFile> {
    let path = path.as_ref();
    let file = File::open(path).map_err(io_err(path))?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file))
        .map_err(|e| format_err(path, "npz", e))?;
    let mut tensors = BTreeMap::new();
    for i in 0..zip.len() {
        let entry = zip.by_index(i).map_err(|e| format_err(path, "npz", e))?;
        let entry_name = entry
            .name()
            .map_err(|e| format_err(path, "npz", e))?
            .to_string();
        let name = entry_name
            .strip_suffix(".npy")
            .unwrap_or(&entry_name)
            .to_string();
        let t = parse_npy(entry, path, &name, "npz")?;
        tensors.insert(name, t);
    }
    Ok(TensorFile {
        path: path.to_path_buf(),
        tensors,
    })
}

/// Writes named float32 arrays as an uncompressed `.npz` (atomically).
pub fn write_npz(path: impl AsRef<Path>, arrays: &[(&str, &[usize], &[f32])]) -> Result<()> {
    let path = path.as_ref();
    let bytes = npz_file_bytes(arrays)?;
    write_atomic(path, |w| w.write_all(&bytes).map_err(io_err(path)))
}

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

/// Writes named float32 tensors as `.safetensors` (atomically).
pub fn write_safetensors(
    path: impl AsRef<Path>,
    arrays: &[(&str, &[usize], &[f32])],
) -> Result<()> {
    let path = path.as_ref();
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
    let out =
        safetensors::serialize(views, None).map_err(|e| format_err(path, "safetensors", e))?;
    write_atomic(path, |w| w.write_all(&out).map_err(io_err(path)))
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

/// Writes named tensors as `.npz` or `.safetensors`, by extension.
pub fn write_tensors(path: impl AsRef<Path>, arrays: &[(&str, &[usize], &[f32])]) -> Result<()> {
    let path = path.as_ref();
    match path.extension().and_then(|e| e.to_str()) {
        Some("npz") => write_npz(path, arrays),
        Some("safetensors") => write_safetensors(path, arrays),
        _ => Err(Error::Invalid(format!(
            "{}: unknown tensor file extension (use .npz or .safetensors)",
            path.display()
        ))),
    }
}

/// Reads seed-format weights (`w_i u_i b_i … w_h b_h`, see
/// [`SeedWeights`]) and infers the config from their shapes: `n_in` and `H`
/// from `w_i`, the matrix peephole from the presence of `v_o`, the head from
/// `w_h`. Every tensor's shape is checked; an unknown name is an error.
pub fn load_seed_weights(path: impl AsRef<Path>) -> Result<(LstmConfig, SeedWeights)> {
    let mut file = read_tensors(path)?;
    let w_i = file.get("w_i")?;
    if w_i.shape.len() != 2 {
        return Err(Error::Shape {
            tensor: "w_i".into(),
            expected: "[n_in, n_hidden]".into(),
            got: shape_str(&w_i.shape),
        });
    }
    let (n, h) = (w_i.shape[0], w_i.shape[1]);
    let mut cfg = LstmConfig::new(n, h);
    if file.tensors.contains_key("v_o") {
        cfg = cfg.with_peephole(Peephole::Matrix);
    }
    if let Some(w_h) = file.tensors.get("w_h") {
        match w_h.shape.as_slice() {
            [_, p] => cfg = cfg.with_head(*p),
            other => {
                return Err(Error::Shape {
                    tensor: "w_h".into(),
                    expected: format!("[{h}, n_output]"),
                    got: shape_str(other),
                });
            }
        }
    } else if file.tensors.contains_key("b_h") {
        return Err(Error::MissingTensor {
            tensor: "w_h".into(),
            source_name: format!("{} (it has b_h)", file.path.display()),
        });
    }
    cfg.validate()?;
    if let Some(extra) = file
        .tensors
        .keys()
        .find(|k| !SEED_NAMES.contains(&k.as_str()))
    {
        return Err(Error::UnexpectedTensor {
            tensor: extra.clone(),
            why: format!("not a seed-format name (expected {})", SEED_NAMES.join(" ")),
        });
    }
    let p = cfg.n_output();
    let mut take = |name: &str, shape: &[usize]| -> Result<Vec<f32>> {
        let t = file.get(name)?;
        check_shape(name, &t.shape, shape)?;
        Ok(file.take(name).expect("present").data)
    };
    let w = SeedWeights {
        w_i: take("w_i", &[n, h])?,
        u_i: take("u_i", &[h, h])?,
        b_i: take("b_i", &[h])?,
        w_f: take("w_f", &[n, h])?,
        u_f: take("u_f", &[h, h])?,
        b_f: take("b_f", &[h])?,
        w_c: take("w_c", &[n, h])?,
        u_c: take("u_c", &[h, h])?,
        b_c: take("b_c", &[h])?,
        w_o: take("w_o", &[n, h])?,
        u_o: take("u_o", &[h, h])?,
        b_o: take("b_o", &[h])?,
        v_o: match cfg.peephole {
            Peephole::Matrix => Some(take("v_o", &[h, h])?),
            _ => None,
        },
        w_h: cfg.head.map(|_| take("w_h", &[h, p])).transpose()?,
        b_h: cfg.head.map(|_| take("b_h", &[p])).transpose()?,
        w_ci: None,
        w_cf: None,
        w_co: None,
        w_p: None,
    };
    w.validate(&cfg)?;
    Ok((cfg, w))
}

/// Writes seed-format weights as `.npz` or `.safetensors` (by extension).
pub fn save_seed_weights(path: impl AsRef<Path>, cfg: &LstmConfig, w: &SeedWeights) -> Result<()> {
    w.validate(cfg)?;
    let (n, h, p) = (cfg.n_input, cfg.n_hidden, cfg.n_output());
    let (nh, hh, hv, hp, pv) = ([n, h], [h, h], [h], [h, p], [p]);
    let mut arrays: Vec<(&str, &[usize], &[f32])> = vec![
        ("w_i", &nh, &w.w_i),
        ("u_i", &hh, &w.u_i),
        ("b_i", &hv, &w.b_i),
        ("w_f", &nh, &w.w_f),
        ("u_f", &hh, &w.u_f),
        ("b_f", &hv, &w.b_f),
        ("w_c", &nh, &w.w_c),
        ("u_c", &hh, &w.u_c),
        ("b_c", &hv, &w.b_c),
        ("w_o", &nh, &w.w_o),
        ("u_o", &hh, &w.u_o),
        ("b_o", &hv, &w.b_o),
    ];
    if let Some(v) = &w.v_o {
        arrays.push(("v_o", &hh, v));
    }
    if let (Some(wh), Some(bh)) = (&w.w_h, &w.b_h) {
        arrays.push(("w_h", &hp, wh));
        arrays.push(("b_h", &pv, bh));
    }
    write_tensors(path, &arrays)
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
