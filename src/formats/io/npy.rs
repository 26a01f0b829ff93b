//! `.npy` arrays, read by a parser of our own that is bounded by
//! construction: the header length is capped before anything is
//! allocated, the header dict is parsed by a small non-recursive grammar in
//! one pass, the shape's element and byte counts are checked
//! (`checked_mul`) and compared with the bytes actually there before the
//! data is allocated (fallibly: [`Error::Alloc`] instead of an abort), and
//! bytes after the data are an error. float32, float64 or float16 read
//! (either byte order; Fortran order turned into C order), float32 written; integer
//! arrays only as sequence lengths. Every error names the file and array.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use super::{Tensor, io_err, write_atomic};
use crate::error::{Error, Result, shape_str};

/// The longest npy header read, in bytes (the dict after the magic,
/// version and length fields). numpy writes a few hundred bytes and by
/// default refuses to read more than 10,000; a longer header is an error
/// before anything is allocated.
pub const MAX_NPY_HEADER_BYTES: usize = 65_536;

/// The most dimensions an npy shape may have (numpy's own limit: 64 since
/// numpy 2.0, 32 before); more is an error.
pub const MAX_NPY_DIMS: usize = 64;

const MAGIC: &[u8; 6] = b"\x93NUMPY";

/// Bytes read and decoded at a time.
const CHUNK: usize = 64 * 1024;

/// Where an array comes from, for messages.
#[derive(Clone, Copy)]
pub(super) struct Ctx<'a> {
    pub path: &'a Path,
    pub name: &'a str,
    pub format: &'static str,
}

impl Ctx<'_> {
    /// [`Error::Format`] naming the file and the array.
    pub(super) fn err(&self, reason: impl std::fmt::Display) -> Error {
        Error::Format {
            path: self.path.to_path_buf(),
            format: self.format,
            reason: format!("array `{}`: {reason}", self.name),
        }
    }

    fn alloc(&self, bytes: usize) -> Error {
        Error::Alloc {
            what: format!("array `{}` of {}", self.name, self.path.display()),
            bytes,
        }
    }
}

/// The element types read: floats as tensors, all six as lengths.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    F16,
    F32,
    F64,
    I32,
    I64,
    U32,
    U64,
}

/// An element type and its byte order.
#[derive(Clone, Copy, Debug)]
pub(super) struct Dtype {
    kind: Kind,
    big_endian: bool,
}

impl Dtype {
    /// `<f4`, `>f8`, `=i8`, `|u4`, … (`=` and `|` mean the machine's order,
    /// as numpy reads them); `None` for anything else.
    fn parse(descr: &str) -> Option<Dtype> {
        let b = descr.as_bytes();
        let (&order, code) = b.split_first()?;
        let big_endian = match order {
            b'<' => false,
            b'>' => true,
            b'=' | b'|' => cfg!(target_endian = "big"),
            _ => return None,
        };
        let kind = match code {
            b"f2" => Kind::F16,
            b"f4" => Kind::F32,
            b"f8" => Kind::F64,
            b"i4" => Kind::I32,
            b"i8" => Kind::I64,
            b"u4" => Kind::U32,
            b"u8" => Kind::U64,
            _ => return None,
        };
        Some(Dtype { kind, big_endian })
    }

    fn size(self) -> usize {
        match self.kind {
            Kind::F16 => 2,
            Kind::F32 | Kind::I32 | Kind::U32 => 4,
            Kind::F64 | Kind::I64 | Kind::U64 => 8,
        }
    }

    fn is_float(self) -> bool {
        matches!(self.kind, Kind::F16 | Kind::F32 | Kind::F64)
    }
}

/// An npy header: the dict's three keys, the element count and where the
/// data starts.
#[derive(Clone, Debug)]
pub(super) struct Header {
    /// The `descr` string as written (`<f4`, `<i8`, …).
    pub descr: String,
    /// `fortran_order`.
    pub fortran: bool,
    /// `shape`.
    pub shape: Vec<usize>,
    /// The product of `shape` (checked).
    pub count: usize,
    /// Bytes before the data: magic, version, length field, header.
    pub data_offset: u64,
}

impl Header {
    /// The data's dtype if it is a float one, else [`Error::Dtype`].
    pub(super) fn float_dtype(&self, ctx: &Ctx) -> Result<Dtype> {
        match Dtype::parse(&self.descr) {
            Some(dt) if dt.is_float() => Ok(dt),
            _ => Err(Error::Dtype {
                tensor: ctx.name.to_string(),
                path: ctx.path.to_path_buf(),
                dtype: self.descr.clone(),
            }),
        }
    }

    /// The data's size in bytes (checked).
    pub(super) fn data_bytes(&self, dt: Dtype, ctx: &Ctx) -> Result<usize> {
        self.count.checked_mul(dt.size()).ok_or_else(|| {
            ctx.err(format!(
                "shape {} of {} has more bytes than memory has addresses",
                shape_str(&self.shape),
                self.descr
            ))
        })
    }

    /// An error unless `have` data bytes are exactly the `need` ones the
    /// shape declares.
    pub(super) fn check_present(&self, have: u64, need: usize, ctx: &Ctx) -> Result<()> {
        let need64 = need as u64;
        if have < need64 {
            Err(ctx.err(format!(
                "truncated: {have} bytes of data, its shape {} of {} needs {need}",
                shape_str(&self.shape),
                self.descr
            )))
        } else if have > need64 {
            Err(ctx.err(format!(
                "{} bytes after the {need} bytes of data its shape {} of {} needs",
                have - need64,
                shape_str(&self.shape),
                self.descr
            )))
        } else {
            Ok(())
        }
    }
}

/// `read_exact`, with a short read reported as `what` being truncated.
fn read_full(r: &mut dyn Read, buf: &mut [u8], what: &str, ctx: &Ctx) -> Result<()> {
    r.read_exact(buf).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            ctx.err(format!("truncated {what}"))
        } else {
            ctx.err(format!("reading the {what}: {e}"))
        }
    })
}

/// Reads an npy preamble and header from `r` (at most
/// 12 + [`MAX_NPY_HEADER_BYTES`] bytes) and parses it.
pub(super) fn read_header(r: &mut dyn Read, ctx: &Ctx) -> Result<Header> {
    let mut pre = [0u8; 8];
    read_full(r, &mut pre, "npy header", ctx)?;
    if &pre[..6] != MAGIC {
        return Err(ctx.err("not an npy array (no \\x93NUMPY magic)"));
    }
    let len_bytes = match (pre[6], pre[7]) {
        (1, 0) => 2,
        (2, 0) | (3, 0) => 4,
        (major, minor) => {
            return Err(ctx.err(format!("unsupported npy version {major}.{minor}")));
        }
    };
    let mut len = [0u8; 4];
    read_full(r, &mut len[..len_bytes], "npy header", ctx)?;
    let header_len = u32::from_le_bytes(len) as usize;
    if header_len > MAX_NPY_HEADER_BYTES {
        return Err(ctx.err(format!(
            "the header declares {header_len} bytes, more than the {MAX_NPY_HEADER_BYTES} read"
        )));
    }
    let mut text = vec![0u8; header_len];
    read_full(r, &mut text, "npy header", ctx)?;
    let (descr, fortran, shape) =
        parse_dict(&text).map_err(|e| ctx.err(format!("npy header: {e}")))?;
    let count = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| {
            ctx.err(format!(
                "shape {} has more elements than memory has addresses",
                shape_str(&shape)
            ))
        })?;
    // The crate's limit per tensor: also what bounds a pipe's data, whose
    // length cannot be checked before reading.
    if count > crate::MAX_TENSOR_ELEMENTS {
        return Err(ctx.err(format!(
            "shape {} exceeds the limit of {} elements per tensor",
            shape_str(&shape),
            crate::MAX_TENSOR_ELEMENTS
        )));
    }
    Ok(Header {
        descr,
        fortran,
        shape,
        count,
        data_offset: (8 + len_bytes + header_len) as u64,
    })
}

/// A cursor over the header text; every method consumes what it looks at,
/// so parsing is one pass, linear in the header's length, without
/// recursion.
struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        let hit = self.peek() == Some(c);
        if hit {
            self.i += 1;
        }
        hit
    }

    /// What is at the cursor, for messages.
    fn found(&self) -> String {
        match self.peek() {
            Some(c) => format!("`{}` at byte {}", c.escape_ascii(), self.i),
            None => "the end of the header".into(),
        }
    }

    fn expect(&mut self, c: u8) -> std::result::Result<(), String> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(format!("expected `{}`, found {}", c as char, self.found()))
        }
    }

    /// A quoted string (single or double quotes, no escapes).
    fn string(&mut self) -> std::result::Result<&'a [u8], String> {
        let q = match self.peek() {
            Some(q @ (b'\'' | b'"')) => q,
            _ => return Err(format!("expected a quoted string, found {}", self.found())),
        };
        let start = self.i + 1;
        let mut j = start;
        loop {
            match self.s.get(j) {
                Some(&c) if c == q => break,
                Some(b'\\') => return Err("escapes in strings are not supported".into()),
                Some(b'\n') | None => return Err("an unterminated string".into()),
                Some(_) => j += 1,
            }
        }
        self.i = j + 1;
        Ok(&self.s[start..j])
    }

    fn boolean(&mut self) -> std::result::Result<bool, String> {
        for (word, v) in [(&b"True"[..], true), (&b"False"[..], false)] {
            if self.s[self.i..].starts_with(word) {
                self.i += word.len();
                return Ok(v);
            }
        }
        Err(format!(
            "expected True or False for 'fortran_order', found {}",
            self.found()
        ))
    }

    /// A non-negative integer (Python 2's `L` suffix allowed).
    fn int(&mut self) -> std::result::Result<usize, String> {
        let start = self.i;
        let mut v: usize = 0;
        while let Some(c @ b'0'..=b'9') = self.peek() {
            v = v
                .checked_mul(10)
                .and_then(|v| v.checked_add(usize::from(c - b'0')))
                .ok_or_else(|| format!("a dimension at byte {start} exceeds {}", usize::MAX))?;
            self.i += 1;
        }
        if self.i == start {
            return Err(format!(
                "expected a non-negative integer in 'shape', found {}",
                self.found()
            ));
        }
        if matches!(self.peek(), Some(b'L' | b'l')) {
            self.i += 1;
        }
        Ok(v)
    }

    /// A flat tuple of non-negative integers; nesting is an error.
    fn shape(&mut self) -> std::result::Result<Vec<usize>, String> {
        if !self.eat(b'(') {
            return Err(format!(
                "'shape' must be a tuple of integers, found {}",
                self.found()
            ));
        }
        let mut dims = Vec::new();
        loop {
            self.ws();
            if self.eat(b')') {
                break;
            }
            if matches!(self.peek(), Some(b'(' | b'[')) {
                return Err(format!(
                    "a nested tuple in 'shape' at byte {} (a shape is a flat tuple of integers)",
                    self.i
                ));
            }
            if dims.len() == MAX_NPY_DIMS {
                return Err(format!("'shape' has more than {MAX_NPY_DIMS} dimensions"));
            }
            dims.push(self.int()?);
            self.ws();
            if !self.eat(b',') {
                self.expect(b')')?;
                break;
            }
        }
        Ok(dims)
    }
}

/// Parses the header dict: exactly the keys `descr` (a string),
/// `fortran_order` (`True`/`False`) and `shape` (a flat tuple), in any
/// order, either quotes, optional trailing comma, then only padding.
fn parse_dict(s: &[u8]) -> std::result::Result<(String, bool, Vec<usize>), String> {
    let mut p = Cursor { s, i: 0 };
    let (mut descr, mut fortran, mut shape) = (None, None, None);
    p.ws();
    p.expect(b'{')?;
    loop {
        p.ws();
        if p.eat(b'}') {
            break;
        }
        let key = p.string()?;
        p.ws();
        p.expect(b':')?;
        p.ws();
        let dup = match key {
            b"descr" => {
                if matches!(p.peek(), Some(b'[' | b'(' | b'{')) {
                    return Err("structured (record) dtypes are not supported".into());
                }
                let raw = p.string()?;
                // Every dtype this reader knows is a few characters (`<f4`).
                if raw.len() > 16 {
                    return Err(format!("'descr' of {} bytes is not a dtype", raw.len()));
                }
                let d = String::from_utf8_lossy(raw).into_owned();
                descr.replace(d).is_some()
            }
            b"fortran_order" => fortran.replace(p.boolean()?).is_some(),
            b"shape" => shape.replace(p.shape()?).is_some(),
            other => {
                let shown: Vec<u8> = other.iter().copied().take(40).collect();
                return Err(format!("unknown key '{}'", shown.escape_ascii()));
            }
        };
        if dup {
            return Err(format!("the key '{}' appears twice", key.escape_ascii()));
        }
        p.ws();
        if !p.eat(b',') {
            p.expect(b'}')?;
            break;
        }
    }
    p.ws();
    if p.i != s.len() {
        return Err(format!("{} after the header dict", p.found()));
    }
    match (descr, fortran, shape) {
        (Some(d), Some(f), Some(s)) => Ok((d, f, s)),
        (None, _, _) => Err("no 'descr' key".into()),
        (_, None, _) => Err("no 'fortran_order' key".into()),
        (_, _, None) => Err("no 'shape' key".into()),
    }
}

fn reserve<T>(v: &mut Vec<T>, extra: usize, exact: bool, ctx: &Ctx) -> Result<()> {
    let r = if exact {
        v.try_reserve_exact(extra)
    } else {
        v.try_reserve(extra)
    };
    r.map_err(|_| ctx.alloc(v.len().saturating_add(extra).saturating_mul(size_of::<T>())))
}

/// Reads the `count` elements of `item` bytes that follow a header,
/// decoding each chunk with `decode`, then checks that nothing follows
/// them. `reserve_all`: the bytes are known to be there (the file's or
/// member's size was checked), so the output is reserved at once;
/// otherwise it grows only as data arrives.
fn read_payload<T>(
    r: &mut dyn Read,
    count: usize,
    item: usize,
    reserve_all: bool,
    ctx: &Ctx,
    decode: impl Fn(&[u8], &mut Vec<T>),
) -> Result<Vec<T>> {
    let mut out = Vec::new();
    if reserve_all {
        reserve(&mut out, count, true, ctx)?;
    }
    let mut buf = vec![0u8; CHUNK];
    let per_chunk = CHUNK / item;
    let mut left = count;
    while left > 0 {
        let n = left.min(per_chunk);
        let chunk = &mut buf[..n * item];
        r.read_exact(chunk).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                ctx.err(format!(
                    "truncated: its shape needs {} bytes of data",
                    count.saturating_mul(item)
                ))
            } else {
                ctx.err(format!("reading the data: {e}"))
            }
        })?;
        if out.capacity() - out.len() < n {
            reserve(&mut out, n, false, ctx)?;
        }
        decode(chunk, &mut out);
        left -= n;
    }
    let mut one = [0u8; 1];
    loop {
        match r.read(&mut one) {
            Ok(0) => return Ok(out),
            Ok(_) => {
                return Err(ctx.err(format!(
                    "more bytes follow the {} bytes of data its shape needs",
                    count.saturating_mul(item)
                )));
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ctx.err(format!("reading the data: {e}"))),
        }
    }
}

fn bytes4(c: &[u8], big: bool) -> [u8; 4] {
    let mut a = [0u8; 4];
    a.copy_from_slice(c);
    if big {
        a.reverse();
    }
    a
}

fn bytes8(c: &[u8], big: bool) -> [u8; 8] {
    let mut a = [0u8; 8];
    a.copy_from_slice(c);
    if big {
        a.reverse();
    }
    a
}

/// Appends the float values in `bytes` (whole elements of `dt`) as f32.
fn decode_f32(dt: Dtype, bytes: &[u8], out: &mut Vec<f32>) {
    let big = dt.big_endian;
    match dt.kind {
        Kind::F64 => out.extend(
            bytes
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(bytes8(c, big)) as f32),
        ),
        Kind::F16 => out.extend(bytes.chunks_exact(2).map(|c| {
            let b = if big { [c[1], c[0]] } else { [c[0], c[1]] };
            super::half::f16_to_f32(u16::from_le_bytes(b))
        })),
        _ => out.extend(
            bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(bytes4(c, big))),
        ),
    }
}

/// Appends the values in `bytes` (whole elements of `dt`) as f64.
fn decode_f64(dt: Dtype, bytes: &[u8], out: &mut Vec<f64>) {
    let big = dt.big_endian;
    out.extend(bytes.chunks_exact(dt.size()).map(|c| match dt.kind {
        Kind::F16 => {
            let b = if big { [c[1], c[0]] } else { [c[0], c[1]] };
            f64::from(super::half::f16_to_f32(u16::from_le_bytes(b)))
        }
        Kind::F32 => f32::from_le_bytes(bytes4(c, big)) as f64,
        Kind::I32 => i32::from_le_bytes(bytes4(c, big)) as f64,
        Kind::U32 => u32::from_le_bytes(bytes4(c, big)) as f64,
        Kind::F64 => f64::from_le_bytes(bytes8(c, big)),
        Kind::I64 => i64::from_le_bytes(bytes8(c, big)) as f64,
        Kind::U64 => u64::from_le_bytes(bytes8(c, big)) as f64,
    }));
}

/// Converts a Fortran-order buffer of `shape` to C order.
fn fortran_to_c(shape: &[usize], data: Vec<f32>, ctx: &Ctx) -> Result<Vec<f32>> {
    if shape.len() < 2 {
        return Ok(data);
    }
    let mut out = Vec::new();
    reserve(&mut out, data.len(), true, ctx)?;
    let mut idx = vec![0usize; shape.len()];
    for _ in 0..data.len() {
        // Fortran offset of the C-order multi-index `idx`.
        let mut off = 0;
        for d in (0..shape.len()).rev() {
            off = off * shape[d] + idx[d];
        }
        out.push(data[off]);
        for d in (0..shape.len()).rev() {
            idx[d] += 1;
            if idx[d] < shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    Ok(out)
}

/// Reads a float array's data after its header from `r`, which must end
/// right after it (see [`read_payload`] for `reserve_all`).
pub(super) fn read_tensor_data(
    r: &mut dyn Read,
    h: &Header,
    dt: Dtype,
    reserve_all: bool,
    ctx: &Ctx,
) -> Result<Tensor> {
    let data = read_payload(r, h.count, dt.size(), reserve_all, ctx, |c, out| {
        decode_f32(dt, c, out)
    })?;
    let data = if h.fortran {
        fortran_to_c(&h.shape, data, ctx)?
    } else {
        data
    };
    Ok(Tensor {
        shape: h.shape.clone(),
        data,
    })
}

/// An npy file opened and its header read: the reader at the data, and
/// whether the file is a regular one (its length known, so the data's
/// size can be checked before reading).
fn open(path: &Path, ctx: &Ctx) -> Result<(BufReader<File>, Header, Option<u64>)> {
    let file = File::open(path).map_err(io_err(path))?;
    let meta = file.metadata().map_err(io_err(path))?;
    let mut r = BufReader::new(file);
    let h = read_header(&mut r, ctx)?;
    let have = meta
        .is_file()
        .then(|| meta.len().saturating_sub(h.data_offset));
    Ok((r, h, have))
}

/// Reads a `.npy` file (float32, float64 or float16, either byte order, C or
/// Fortran order). Everything is checked before the data is allocated:
/// the header (at most [`MAX_NPY_HEADER_BYTES`], [`MAX_NPY_DIMS`]), the
/// shape's byte count against the file's length, no bytes after the data.
pub fn read_npy(path: impl AsRef<Path>) -> Result<Tensor> {
    let path = path.as_ref();
    let name = path
        .file_stem()
        .map_or_else(|| "array".into(), |s| s.to_string_lossy().into_owned());
    let ctx = Ctx {
        path,
        name: &name,
        format: "npy",
    };
    let (mut r, h, have) = open(path, &ctx)?;
    let dt = h.float_dtype(&ctx)?;
    let need = h.data_bytes(dt, &ctx)?;
    if let Some(have) = have {
        h.check_present(have, need, &ctx)?;
    }
    read_tensor_data(&mut r, &h, dt, have.is_some(), &ctx)
}

/// Encodes a float32 `.npy` (version 1.0, or 2.0 for a header past 64 KiB)
/// in memory.
pub(super) fn npy_bytes(shape: &[usize], data: &[f32]) -> Result<Vec<u8>> {
    let n = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    if n != Some(data.len()) {
        return Err(Error::Invalid(format!(
            "cannot encode npy: shape {} does not hold {} values",
            shape_str(shape),
            data.len()
        )));
    }
    let mut dict = String::from("{'descr': '<f4', 'fortran_order': False, 'shape': (");
    for d in shape {
        dict.push_str(&format!("{d}, "));
    }
    dict.push_str("), }");
    // Magic, version, length field; then the dict padded with spaces and a
    // newline so the data starts at a multiple of 64 bytes.
    let (version, pre) = if dict.len() + 10 + 64 <= 0xFFFF {
        (1u8, 10)
    } else {
        (2u8, 12)
    };
    let pad = 63 - (dict.len() + pre) % 64;
    let header_len = dict.len() + pad + 1;
    let total = (pre + header_len).checked_add(data.len().saturating_mul(4));
    let mut out = Vec::new();
    let total = total.unwrap_or(usize::MAX);
    out.try_reserve_exact(total).map_err(|_| Error::Alloc {
        what: "an npy file being written".into(),
        bytes: total,
    })?;
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[version, 0]);
    if version == 1 {
        out.extend_from_slice(&(header_len as u16).to_le_bytes());
    } else {
        out.extend_from_slice(&(header_len as u32).to_le_bytes());
    }
    out.extend_from_slice(dict.as_bytes());
    out.extend(std::iter::repeat_n(b' ', pad));
    out.push(b'\n');
    for v in data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    Ok(out)
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

/// Reads a 1-D `.npy` of sequence lengths (int64, int32, uint64, uint32,
/// or integral floats), e.g. for `--seq-lens`; bounded as [`read_npy`].
pub fn read_npy_lengths(path: impl AsRef<Path>) -> Result<Vec<usize>> {
    let path = path.as_ref();
    let ctx = Ctx {
        path,
        name: "lengths",
        format: "npy",
    };
    let (mut r, h, have) = open(path, &ctx)?;
    if h.shape.len() != 1 {
        return Err(Error::Shape {
            tensor: format!("lengths {}", path.display()),
            expected: "[B]".into(),
            got: shape_str(&h.shape),
        });
    }
    let dt = Dtype::parse(&h.descr).ok_or_else(|| {
        Error::Invalid(format!(
            "{}: lengths have dtype {}; expected int64, int32, uint64, uint32 or integral floats",
            path.display(),
            h.descr
        ))
    })?;
    let need = h.data_bytes(dt, &ctx)?;
    if let Some(have) = have {
        h.check_present(have, need, &ctx)?;
    }
    let vals = read_payload(
        &mut r,
        h.count,
        dt.size(),
        have.is_some(),
        &ctx,
        |c, out| decode_f64(dt, c, out),
    )?;
    vals.iter()
        .enumerate()
        .map(|(i, &v)| {
            if v >= 0.0 && v.fract() == 0.0 && v < 1e15 {
                Ok(v as usize)
            } else if v >= 1e15 && v.fract() == 0.0 {
                Err(Error::Invalid(format!(
                    "{}: length [{i}] = {v} is too large (a sequence length is below 10^15)",
                    path.display()
                )))
            } else {
                Err(Error::Invalid(format!(
                    "{}: length [{i}] = {v} is not a nonnegative integer",
                    path.display()
                )))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::parse_dict;

    #[test]
    fn header_dicts() {
        let ok = |s: &str| parse_dict(s.as_bytes()).unwrap();
        assert_eq!(
            ok("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }    \n"),
            ("<f4".into(), false, vec![2, 3])
        );
        assert_eq!(
            ok("{\"shape\":(),\"fortran_order\":True,\"descr\":\">f8\"}"),
            (">f8".into(), true, vec![])
        );
        assert_eq!(
            ok("{'descr':'<i8','fortran_order':False,'shape':(7L,),}"),
            ("<i8".into(), false, vec![7])
        );
        for bad in [
            "",
            "{}",
            "{'descr': '<f4', 'fortran_order': False}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': ((2,),)}",
            "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,)}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'x': 1}",
            "{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2,)}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (-2,)}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2,,)}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2,)} x",
            "{'descr': '<f4', 'fortran_order': false, 'shape': (2,)}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999999,)}",
        ] {
            assert!(parse_dict(bad.as_bytes()).is_err(), "{bad}");
        }
    }
}
