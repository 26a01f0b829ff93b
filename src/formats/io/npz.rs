//! `.npz` archives (numpy `savez`, stored or deflated): each member is an
//! `.npy` array named by its file name without `.npy`; written
//! uncompressed. Reading is lazy: opening reads the zip directory and each
//! member's npy header (the first ≤ 12 + [`MAX_NPY_HEADER_BYTES`] bytes
//! inflated), so names, shapes and dtypes are known at once; a member's
//! data is inflated on first access only, after its declared size was
//! checked against the zip directory, and reading stops with an error the
//! moment it inflates past that size.
//!
//! [`MAX_NPY_HEADER_BYTES`]: super::MAX_NPY_HEADER_BYTES

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Mutex;

use super::npy::{Ctx, Header, npy_bytes, read_header, read_tensor_data};
use super::{Archive, Entry, Source, Tensor, TensorFile, format_err, io_err, write_atomic};
use crate::error::{Error, Result};

/// Where a member's data is and how big the directory says it is.
#[derive(Debug)]
pub(super) struct Member {
    index: usize,
    header: Header,
    size: u64,
    /// What is wrong with its directory entry (see
    /// [`super::zip_member_claim`]), said when its data is asked for.
    bad_claim: Option<String>,
}

impl Member {
    /// [`Error::Dtype`] unless the member's header says float32/float64.
    pub(super) fn check_float(&self, path: &Path, name: &str) -> Result<()> {
        let ctx = Ctx {
            path,
            name,
            format: "npz",
        };
        self.header.float_dtype(&ctx).map(drop)
    }
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

/// Opens a `.npz` file: its members' names, shapes and dtypes are read at
/// once (from each npy header), their data only when a tensor is asked for
/// ([`TensorFile::get`]). Two members of one name are an error, as is a
/// member whose npy header is malformed; a member never asked for may have
/// any dtype.
pub fn read_npz(path: impl AsRef<Path>) -> Result<TensorFile> {
    let path = path.as_ref();
    let file = File::open(path).map_err(io_err(path))?;
    let zip = zip::ZipArchive::new(Box::new(BufReader::new(file)) as Box<dyn super::ReadSeek>)
        .map_err(|e| format_err(path, "npz", e))?;
    from_archive(path, zip)
}

/// [`read_npz`] of an archive already open (a file's or bytes in memory).
pub(super) fn from_archive(path: &Path, mut zip: Archive) -> Result<TensorFile> {
    if zip.has_duplicate_names() {
        let dir = zip.central_directory_start();
        let name = first_duplicate(zip.into_inner(), dir);
        return Err(format_err(
            path,
            "npz",
            match name {
                Some(n) => format!("two members are named `{n}`"),
                None => "two members have the same name".into(),
            },
        ));
    }
    let mut entries = BTreeMap::new();
    let dir_start = zip.central_directory_start();
    for index in 0..zip.len() {
        let mut f = zip
            .by_index(index)
            .map_err(|e| format_err(path, "npz", e))?;
        if f.is_dir() {
            continue;
        }
        let member = f
            .name()
            .map_err(|e| format_err(path, "npz", e))?
            .into_owned();
        let name = member.strip_suffix(".npy").unwrap_or(&member).to_string();
        let ctx = Ctx {
            path,
            name: &name,
            format: "npz",
        };
        let header = read_header(&mut f, &ctx)?;
        let m = Member {
            index,
            size: f.size(),
            bad_claim: super::zip_member_claim(
                f.size(),
                f.compressed_size(),
                f.compression(),
                f.header_start(),
                dir_start,
            ),
            header,
        };
        drop(f);
        if entries.contains_key(&name) {
            return Err(format_err(
                path,
                "npz",
                format!("two members are named `{name}` (with and without .npy)"),
            ));
        }
        let entry = Entry::new(
            m.header.shape.clone(),
            m.header.descr.clone(),
            Source::Member(m),
        );
        entries.insert(name, entry);
    }
    Ok(TensorFile::new(path, entries, Some(Mutex::new(zip))))
}

/// Inflates and decodes one member: its dtype must be a float one, its
/// header and shape must account for exactly the size the zip directory
/// gives, and reading stops one byte past that size.
pub(super) fn load_member(
    path: &Path,
    name: &str,
    m: &Member,
    zip: &mut Archive,
) -> Result<Tensor> {
    let ctx = Ctx {
        path,
        name,
        format: "npz",
    };
    if let Some(why) = &m.bad_claim {
        return Err(ctx.err(why));
    }
    let h = &m.header;
    let dt = h.float_dtype(&ctx)?;
    let need = h.data_bytes(dt, &ctx)?;
    h.check_present(m.size.saturating_sub(h.data_offset), need, &ctx)?;
    let mut f = zip
        .by_index(m.index)
        .map_err(|e| ctx.err(format!("opening the member: {e}")))?;
    let mut r = (&mut f).take(m.size.saturating_add(1));
    let skipped = std::io::copy(&mut (&mut r).take(h.data_offset), &mut std::io::sink())
        .map_err(|e| ctx.err(format!("reading the npy header: {e}")))?;
    if skipped != h.data_offset {
        return Err(ctx.err("truncated npy header"));
    }
    read_tensor_data(&mut r, h, dt, true, &ctx)
}

/// The first name that occurs twice in the zip's central directory (the
/// archive's index keeps one of each), walked by hand: `None` if the walk
/// fails.
fn first_duplicate(mut r: Box<dyn super::ReadSeek>, dir_start: u64) -> Option<String> {
    r.seek(SeekFrom::Start(dir_start)).ok()?;
    let mut seen = HashSet::new();
    loop {
        let mut h = [0u8; 46];
        r.read_exact(&mut h).ok()?;
        if h[..4] != [0x50, 0x4b, 0x01, 0x02] {
            return None;
        }
        let le = |i: usize| usize::from(u16::from_le_bytes([h[i], h[i + 1]]));
        let (name_len, extra) = (le(28), le(30) + le(32));
        let mut name = vec![0u8; name_len];
        r.read_exact(&mut name).ok()?;
        r.seek(SeekFrom::Current(extra as i64)).ok()?;
        let name = String::from_utf8_lossy(&name).into_owned();
        let short = name.strip_suffix(".npy").unwrap_or(&name).to_string();
        if !seen.insert(name) {
            return Some(short);
        }
    }
}

/// Writes named float32 arrays as an uncompressed `.npz` (atomically).
pub fn write_npz(path: impl AsRef<Path>, arrays: &[(&str, &[usize], &[f32])]) -> Result<()> {
    let path = path.as_ref();
    let bytes = npz_file_bytes(arrays)?;
    write_atomic(path, |w| w.write_all(&bytes).map_err(io_err(path)))
}
