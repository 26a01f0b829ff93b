//! `.npz` archives (numpy `savez`, stored or deflated): each member is read
//! as a `.npy` array named by its file name without `.npy`; written
//! uncompressed.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::Path;

use super::npy::{npy_bytes, parse_npy};
use super::{TensorFile, format_err, io_err, write_atomic};
use crate::error::{Error, Result};

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
