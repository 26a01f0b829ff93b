//! A minimal read-only HDF5 reader for exactly what h5py writes for Keras
//! models (`model.weights.h5` inside a `.keras` file, legacy tf-keras
//! `.h5` files): superblock versions 0–3 (a user block before it
//! allowed), object headers version 1 and 2 with continuation blocks, old
//! style groups (symbol table: v1 B-tree of `SNOD` nodes and a local heap)
//! and new style compact groups (link messages), attributes (message
//! versions 1–3) holding fixed- or variable-length strings (the latter in
//! global heap collections), and datasets of IEEE float16/32/64 in
//! contiguous or compact layout without filters.
//!
//! Anything else — chunked or filtered datasets, dense (fractal heap) link
//! or attribute storage, shared messages, soft or external links — is an
//! [`Error::Format`] naming the file, the object path and what was found.
//! The whole file is a byte slice: every offset is checked against it, so
//! nothing is read outside the file; every walk (continuation blocks,
//! B-tree nodes, symbol entries, global heap objects) is iterative and
//! bounded in count with visited sets against cycles; every allocation
//! sized by the file is bounded by the file's length or
//! [`MAX_TENSOR_ELEMENTS`](crate::MAX_TENSOR_ELEMENTS) and made fallibly.

use std::collections::HashSet;
use std::path::Path;

use crate::error::{Error, Result, checked_elements, shape_str, try_filled};

use super::Tensor;

/// The HDF5 format signature.
pub(crate) const SIGNATURE: &[u8; 8] = b"\x89HDF\r\n\x1a\n";

/// Most header messages of one object (over all its blocks).
const MAX_MESSAGES: usize = 1 << 16;
/// Most continuation blocks of one object header.
const MAX_BLOCKS: usize = 1024;
/// Most B-tree nodes visited to list one group.
const MAX_BTREE_NODES: usize = 1 << 16;
/// Most links of one group.
const MAX_LINKS: usize = 1 << 16;
/// Most dimensions of a dataspace (HDF5's own limit).
const MAX_RANK: usize = 32;
/// Most strings in one attribute.
const MAX_STRINGS: usize = 1 << 20;

/// Whether `bytes` is an HDF5 file: its signature at 0 or at a user-block
/// boundary (512, 1024, 2048, … within the first 64 KiB checked here).
pub(crate) fn is_hdf5(bytes: &[u8]) -> bool {
    superblock_at(bytes).is_some()
}

fn superblock_at(bytes: &[u8]) -> Option<usize> {
    let mut at = 0usize;
    loop {
        if bytes.get(at..at.checked_add(8)?)? == SIGNATURE {
            return Some(at);
        }
        at = if at == 0 { 512 } else { at.checked_mul(2)? };
        if at >= bytes.len() {
            return None;
        }
    }
}

/// An open HDF5 file (borrowing its bytes).
#[derive(Debug)]
pub(crate) struct H5<'a> {
    b: &'a [u8],
    path: &'a Path,
    /// Size of offsets and of lengths (bytes).
    so: usize,
    sl: usize,
    /// Base address (all addresses are relative to it).
    base: u64,
    root: u64,
}

/// One header message: its type, flags and body.
#[derive(Clone, Copy, Debug)]
struct Msg<'a> {
    kind: u16,
    flags: u8,
    data: &'a [u8],
}

/// A datatype this reader understands.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Dtype {
    /// IEEE float of `size` bytes (2, 4, 8), big-endian if `be`.
    Float { size: usize, be: bool },
    /// A fixed-length string of `size` bytes.
    FixedStr { size: usize },
    /// A variable-length string (global heap references).
    VlenStr,
    /// Anything else: its class number and size, for messages.
    Other { class: u8, size: usize },
}

impl Dtype {
    fn describe(&self) -> String {
        match self {
            Dtype::Float { size, .. } => format!("float{}", size * 8),
            Dtype::FixedStr { size } => format!("fixed-length string ({size} bytes)"),
            Dtype::VlenStr => "variable-length string".into(),
            Dtype::Other { class, size } => {
                let name = match class {
                    0 => "integer",
                    2 => "time",
                    4 => "bitfield",
                    5 => "opaque",
                    6 => "compound",
                    7 => "reference",
                    8 => "enum",
                    9 => "variable-length sequence",
                    10 => "array",
                    _ => "unknown class",
                };
                format!("{name} ({size} bytes)")
            }
        }
    }
}

/// Little-endian reads from a slice, each an error if it runs past it.
struct Cur<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Cur<'a> {
    fn new(b: &'a [u8]) -> Self {
        Cur { b, pos: 0 }
    }
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.b.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }
    fn uint(&mut self, n: usize) -> Option<u64> {
        let s = self.take(n)?;
        if n > 8 {
            return None;
        }
        Some(s.iter().rev().fold(0u64, |a, &x| (a << 8) | x as u64))
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|s| s[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.uint(2).map(|v| v as u16)
    }
    fn u32(&mut self) -> Option<u32> {
        self.uint(4).map(|v| v as u32)
    }
    fn skip(&mut self, n: usize) -> Option<()> {
        self.take(n).map(drop)
    }
    fn rest(&self) -> &'a [u8] {
        self.b.get(self.pos..).unwrap_or(&[])
    }
}

/// An address of all one bits: "undefined" (no data, no such structure).
fn undefined(addr: u64, so: usize) -> bool {
    so >= 8 && addr == u64::MAX || so < 8 && addr == (1u64 << (8 * so)) - 1
}

impl<'a> H5<'a> {
    /// Opens the file in `bytes` (`path` names it in messages): finds and
    /// checks the superblock.
    pub(crate) fn open(b: &'a [u8], path: &'a Path) -> Result<H5<'a>> {
        let at = superblock_at(b).ok_or_else(|| err(path, "no HDF5 signature"))?;
        let mut c = Cur::new(&b[at..]);
        c.skip(8);
        let trunc = || err(path, "truncated superblock");
        let version = c.u8().ok_or_else(trunc)?;
        let (so, sl, base, root, eof);
        match version {
            0 | 1 => {
                // free-space, root group symtab, reserved, shared header versions
                c.skip(4).ok_or_else(trunc)?;
                so = c.u8().ok_or_else(trunc)? as usize;
                sl = c.u8().ok_or_else(trunc)? as usize;
                c.skip(1 + 2 + 2 + 4).ok_or_else(trunc)?;
                if version == 1 {
                    c.skip(4).ok_or_else(trunc)?;
                }
                check_sizes(path, so, sl)?;
                base = c.uint(so).ok_or_else(trunc)?;
                c.skip(so).ok_or_else(trunc)?; // free-space info
                eof = c.uint(so).ok_or_else(trunc)?;
                c.skip(so).ok_or_else(trunc)?; // driver info
                // The root group's symbol table entry: name offset, header.
                c.skip(so).ok_or_else(trunc)?;
                root = c.uint(so).ok_or_else(trunc)?;
            }
            2 | 3 => {
                so = c.u8().ok_or_else(trunc)? as usize;
                sl = c.u8().ok_or_else(trunc)? as usize;
                c.skip(1).ok_or_else(trunc)?;
                check_sizes(path, so, sl)?;
                base = c.uint(so).ok_or_else(trunc)?;
                c.skip(so).ok_or_else(trunc)?; // superblock extension
                eof = c.uint(so).ok_or_else(trunc)?;
                root = c.uint(so).ok_or_else(trunc)?;
            }
            v => return Err(err(path, format!("superblock version {v} (0–3 are read)"))),
        }
        // The end-of-file address: a shorter file was cut (HDF5 itself
        // refuses it too). libhdf5 writes it counting a user block, so it is
        // compared with the whole length.
        let have = b.len() as u64;
        if eof > have {
            return Err(err(
                path,
                format!(
                    "truncated: the superblock says the file ends at {eof}, it has {have} bytes"
                ),
            ));
        }
        Ok(H5 {
            b,
            path,
            so,
            sl,
            base,
            root,
        })
    }

    fn err(&self, obj: &str, reason: impl std::fmt::Display) -> Error {
        err(self.path, format!("{}: {reason}", show_obj(obj)))
    }

    /// `len` bytes at relative address `addr`, or an error naming `what`.
    fn at(&self, addr: u64, len: u64, obj: &str, what: &str) -> Result<&'a [u8]> {
        let out = || {
            self.err(
                obj,
                format!(
                    "{what} at address {addr} (+{len} bytes) lies outside the file ({} bytes)",
                    self.b.len()
                ),
            )
        };
        if undefined(addr, self.so) {
            return Err(self.err(obj, format!("{what} has an undefined address")));
        }
        let start = self.base.checked_add(addr).ok_or_else(out)?;
        let end = start.checked_add(len).ok_or_else(out)?;
        if end > self.b.len() as u64 {
            return Err(out());
        }
        Ok(&self.b[start as usize..end as usize])
    }

    /// Everything from `addr` to the end of the file.
    fn from(&self, addr: u64, obj: &str, what: &str) -> Result<&'a [u8]> {
        let start = self.base.saturating_add(addr);
        let len = (self.b.len() as u64).saturating_sub(start);
        if len == 0 {
            return self.at(addr, 1, obj, what);
        }
        self.at(addr, len, obj, what)
    }

    /// The messages of the object header at `addr` (`obj` names it).
    fn messages(&self, addr: u64, obj: &str) -> Result<Vec<Msg<'a>>> {
        let head = self.from(addr, obj, "object header")?;
        let mut out = Vec::new();
        // (address, length, version) of blocks still to read.
        let mut blocks: Vec<(u64, u64)> = Vec::new();
        let mut seen: HashSet<u64> = HashSet::new();
        seen.insert(addr);
        let trunc = |what: &str| self.err(obj, format!("truncated object header ({what})"));
        let v2 = head.starts_with(b"OHDR");
        let mut creation_order = false;
        if v2 {
            let mut c = Cur::new(head);
            c.skip(4);
            let version = c.u8().ok_or_else(|| trunc("version"))?;
            if version != 2 {
                return Err(self.err(obj, format!("object header version {version}")));
            }
            let flags = c.u8().ok_or_else(|| trunc("flags"))?;
            creation_order = flags & 0x04 != 0;
            if flags & 0x20 != 0 {
                c.skip(16).ok_or_else(|| trunc("times"))?;
            }
            if flags & 0x10 != 0 {
                c.skip(4).ok_or_else(|| trunc("attribute phase change"))?;
            }
            let size = c
                .uint(1 << (flags & 3))
                .ok_or_else(|| trunc("chunk size"))?;
            let body = usize::try_from(size)
                .ok()
                .and_then(|n| c.take(n))
                .ok_or_else(|| trunc("chunk 0 runs past the end of the file"))?;
            self.parse_v2(body, creation_order, obj, &mut out, &mut blocks)?;
        } else {
            let mut c = Cur::new(head);
            let version = c.u8().ok_or_else(|| trunc("version"))?;
            if version != 1 {
                return Err(self.err(
                    obj,
                    format!("object header version {version} (not an object header?)"),
                ));
            }
            c.skip(1 + 2 + 4).ok_or_else(|| trunc("prefix"))?;
            let size = c.u32().ok_or_else(|| trunc("size"))?;
            c.skip(4).ok_or_else(|| trunc("padding"))?;
            let body = c
                .take(size as usize)
                .ok_or_else(|| trunc("its messages run past the end of the file"))?;
            self.parse_v1(body, obj, &mut out, &mut blocks)?;
        }
        let mut n_blocks = 0;
        while let Some((a, len)) = blocks.pop() {
            n_blocks += 1;
            if n_blocks > MAX_BLOCKS {
                return Err(self.err(obj, format!("more than {MAX_BLOCKS} continuation blocks")));
            }
            if !seen.insert(a) {
                return Err(self.err(
                    obj,
                    format!("continuation block at {a} is visited twice (a cycle)"),
                ));
            }
            let block = self.at(a, len, obj, "continuation block")?;
            if v2 {
                if !block.starts_with(b"OCHK") || block.len() < 8 {
                    return Err(self.err(
                        obj,
                        format!("continuation block at {a} has no OCHK signature"),
                    ));
                }
                let body = &block[4..block.len() - 4];
                self.parse_v2(body, creation_order, obj, &mut out, &mut blocks)?;
            } else {
                self.parse_v1(block, obj, &mut out, &mut blocks)?;
            }
        }
        Ok(out)
    }

    fn push(&self, obj: &str, out: &mut Vec<Msg<'a>>, m: Msg<'a>) -> Result<()> {
        if out.len() >= MAX_MESSAGES {
            return Err(self.err(obj, format!("more than {MAX_MESSAGES} header messages")));
        }
        out.push(m);
        Ok(())
    }

    fn continuation(&self, m: &Msg<'a>, obj: &str) -> Result<(u64, u64)> {
        let mut c = Cur::new(m.data);
        let a = c.uint(self.so);
        let l = c.uint(self.sl);
        match (a, l) {
            (Some(a), Some(l)) => Ok((a, l)),
            _ => Err(self.err(obj, "truncated continuation message")),
        }
    }

    fn parse_v1(
        &self,
        body: &'a [u8],
        obj: &str,
        out: &mut Vec<Msg<'a>>,
        blocks: &mut Vec<(u64, u64)>,
    ) -> Result<()> {
        let mut c = Cur::new(body);
        while c.rest().len() >= 8 {
            let kind = c.u16().unwrap_or(0);
            let size = c.u16().unwrap_or(0) as usize;
            let flags = c.u8().unwrap_or(0);
            c.skip(3);
            let data = c.take(size).ok_or_else(|| {
                self.err(
                    obj,
                    format!("header message (type {kind}) runs past its block"),
                )
            })?;
            let m = Msg { kind, flags, data };
            if kind == 0x10 {
                blocks.push(self.continuation(&m, obj)?);
            }
            self.push(obj, out, m)?;
        }
        Ok(())
    }

    fn parse_v2(
        &self,
        body: &'a [u8],
        creation_order: bool,
        obj: &str,
        out: &mut Vec<Msg<'a>>,
        blocks: &mut Vec<(u64, u64)>,
    ) -> Result<()> {
        let mut c = Cur::new(body);
        let head = if creation_order { 6 } else { 4 };
        while c.rest().len() >= head {
            let kind = c.u8().unwrap_or(0) as u16;
            let size = c.u16().unwrap_or(0) as usize;
            let flags = c.u8().unwrap_or(0);
            if creation_order {
                c.skip(2);
            }
            let data = c.take(size).ok_or_else(|| {
                self.err(
                    obj,
                    format!("header message (type {kind}) runs past its block"),
                )
            })?;
            let m = Msg { kind, flags, data };
            if kind == 0x10 {
                blocks.push(self.continuation(&m, obj)?);
            }
            self.push(obj, out, m)?;
        }
        Ok(())
    }

    /// The links of the group at `addr` (`obj` names it): `(name, object
    /// header address)`, hard links only.
    pub(crate) fn links(&self, addr: u64, obj: &str) -> Result<Vec<(String, u64)>> {
        let msgs = self.messages(addr, obj)?;
        let mut out = Vec::new();
        let mut is_group = false;
        for m in &msgs {
            match m.kind {
                0x11 => {
                    is_group = true;
                    let mut c = Cur::new(m.data);
                    let (bt, heap) = match (c.uint(self.so), c.uint(self.so)) {
                        (Some(a), Some(b)) => (a, b),
                        _ => return Err(self.err(obj, "truncated symbol table message")),
                    };
                    self.symbol_table(bt, heap, obj, &mut out)?;
                }
                0x02 => {
                    is_group = true;
                    let mut c = Cur::new(m.data);
                    let _version = c.u8();
                    let flags = c.u8().unwrap_or(0);
                    if flags & 1 != 0 {
                        c.skip(8);
                    }
                    let heap = c
                        .uint(self.so)
                        .ok_or_else(|| self.err(obj, "truncated link info message"))?;
                    if !undefined(heap, self.so) {
                        return Err(self.err(
                            obj,
                            "dense link storage (a fractal heap; a group of many links written with libver='latest') is not supported",
                        ));
                    }
                }
                0x06 => {
                    is_group = true;
                    out.push(self.link(m.data, obj)?);
                }
                _ => {}
            }
            if out.len() > MAX_LINKS {
                return Err(self.err(obj, format!("more than {MAX_LINKS} links")));
            }
        }
        if !is_group {
            return Err(self.err(obj, "not a group"));
        }
        Ok(out)
    }

    fn link(&self, data: &'a [u8], obj: &str) -> Result<(String, u64)> {
        let bad = || self.err(obj, "truncated link message");
        let mut c = Cur::new(data);
        let version = c.u8().ok_or_else(bad)?;
        if version != 1 {
            return Err(self.err(obj, format!("link message version {version}")));
        }
        let flags = c.u8().ok_or_else(bad)?;
        let kind = if flags & 0x08 != 0 {
            c.u8().ok_or_else(bad)?
        } else {
            0
        };
        if flags & 0x04 != 0 {
            c.skip(8).ok_or_else(bad)?;
        }
        if flags & 0x10 != 0 {
            c.skip(1).ok_or_else(bad)?;
        }
        let len = c.uint(1 << (flags & 3)).ok_or_else(bad)?;
        let name = usize::try_from(len)
            .ok()
            .and_then(|n| c.take(n))
            .ok_or_else(bad)?;
        let name = String::from_utf8_lossy(name).into_owned();
        if kind != 0 {
            let what = if kind == 1 {
                "a soft link"
            } else {
                "an external link"
            };
            return Err(self.err(
                obj,
                format!("`{name}` is {what} (only hard links are read)"),
            ));
        }
        let addr = c.uint(self.so).ok_or_else(bad)?;
        Ok((name, addr))
    }

    /// Walks a v1 B-tree of symbol nodes (iteratively, each node once).
    fn symbol_table(
        &self,
        btree: u64,
        heap: u64,
        obj: &str,
        out: &mut Vec<(String, u64)>,
    ) -> Result<()> {
        // The local heap holding the names.
        let h = self.at(
            heap,
            8 + 2 * self.sl as u64 + self.so as u64,
            obj,
            "local heap",
        )?;
        if !h.starts_with(b"HEAP") {
            return Err(self.err(obj, format!("no local heap (HEAP) at address {heap}")));
        }
        let mut c = Cur::new(&h[8..]);
        let seg_size = c.uint(self.sl).unwrap_or(0);
        c.skip(self.sl);
        let seg_addr = c.uint(self.so).unwrap_or(0);
        let names = self.at(seg_addr, seg_size, obj, "local heap data")?;

        let mut stack = vec![btree];
        let mut seen = HashSet::new();
        let mut pushed = 0usize;
        while let Some(a) = stack.pop() {
            if !seen.insert(a) {
                return Err(self.err(
                    obj,
                    format!("B-tree node at {a} is reached twice (a cycle)"),
                ));
            }
            if seen.len() > MAX_BTREE_NODES {
                return Err(self.err(obj, format!("more than {MAX_BTREE_NODES} B-tree nodes")));
            }
            let node = self.from(a, obj, "B-tree node")?;
            if node.starts_with(b"SNOD") {
                self.symbol_node(node, names, obj, out)?;
                continue;
            }
            if !node.starts_with(b"TREE") {
                return Err(self.err(obj, format!("no B-tree node (TREE/SNOD) at address {a}")));
            }
            let mut c = Cur::new(&node[4..]);
            let bad = || self.err(obj, format!("truncated B-tree node at {a}"));
            let kind = c.u8().ok_or_else(bad)?;
            if kind != 0 {
                return Err(self.err(
                    obj,
                    format!("B-tree node at {a} is of type {kind}, not a group's"),
                ));
            }
            let _level = c.u8().ok_or_else(bad)?;
            let entries = c.u16().ok_or_else(bad)? as usize;
            c.skip(2 * self.so).ok_or_else(bad)?;
            for _ in 0..entries {
                c.skip(self.sl).ok_or_else(bad)?; // key
                let child = c.uint(self.so).ok_or_else(bad)?;
                // Children of all nodes, visited or not: bounded too (nodes
                // that overlap in the file could name many).
                pushed += 1;
                if pushed > MAX_BTREE_NODES * 4 {
                    return Err(self.err(obj, "a B-tree with too many children"));
                }
                stack.push(child);
            }
        }
        Ok(())
    }

    fn symbol_node(
        &self,
        node: &'a [u8],
        names: &'a [u8],
        obj: &str,
        out: &mut Vec<(String, u64)>,
    ) -> Result<()> {
        let mut c = Cur::new(node);
        let bad = || self.err(obj, "truncated symbol table node");
        c.skip(4).ok_or_else(bad)?;
        let version = c.u8().ok_or_else(bad)?;
        if version != 1 {
            return Err(self.err(obj, format!("symbol table node version {version}")));
        }
        c.skip(1).ok_or_else(bad)?;
        let n = c.u16().ok_or_else(bad)? as usize;
        for _ in 0..n {
            let name_off = c.uint(self.so).ok_or_else(bad)?;
            let header = c.uint(self.so).ok_or_else(bad)?;
            let cache = c.u32().ok_or_else(bad)?;
            c.skip(4 + 16).ok_or_else(bad)?;
            if cache == 2 {
                return Err(self.err(obj, "a soft link (only hard links are read)"));
            }
            let name = usize::try_from(name_off)
                .ok()
                .and_then(|o| names.get(o..))
                .ok_or_else(|| self.err(obj, "a link name lies outside the local heap"))?;
            let end = name
                .iter()
                .position(|&b| b == 0)
                .ok_or_else(|| self.err(obj, "a link name in the local heap is not terminated"))?;
            out.push((String::from_utf8_lossy(&name[..end]).into_owned(), header));
            if out.len() > MAX_LINKS {
                return Err(self.err(obj, format!("more than {MAX_LINKS} links")));
            }
        }
        Ok(())
    }

    /// The object at `path` (`a/b/c`, relative to the root), or an error
    /// naming the first component that is missing.
    pub(crate) fn lookup(&self, path: &str) -> Result<u64> {
        let mut addr = self.root;
        let mut here = String::new();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            let links = self.links(addr, &here)?;
            let Some((_, a)) = links.into_iter().find(|(n, _)| n == part) else {
                return Err(Error::MissingTensor {
                    tensor: format!("{here}/{part}"),
                    source_name: self.path.display().to_string(),
                });
            };
            here.push('/');
            here.push_str(part);
            addr = a;
        }
        Ok(addr)
    }

    /// Whether `path` names an object.
    pub(crate) fn exists(&self, path: &str) -> Result<bool> {
        match self.lookup(path) {
            Ok(_) => Ok(true),
            Err(Error::MissingTensor { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The names of the links of the group at `path`, in the file's order.
    pub(crate) fn children(&self, path: &str) -> Result<Vec<String>> {
        let a = self.lookup(path)?;
        Ok(self.links(a, path)?.into_iter().map(|(n, _)| n).collect())
    }

    /// The strings of attribute `name` of the object at `path` (one for a
    /// scalar), `None` if it has no such attribute.
    pub(crate) fn attr_strings(&self, path: &str, name: &str) -> Result<Option<Vec<String>>> {
        let addr = self.lookup(path)?;
        let msgs = self.messages(addr, path)?;
        let mut dense = false;
        for m in &msgs {
            if m.kind == 0x15 {
                let mut c = Cur::new(m.data);
                c.skip(1);
                let flags = c.u8().unwrap_or(0);
                if flags & 1 != 0 {
                    c.skip(2);
                }
                if let Some(heap) = c.uint(self.so) {
                    dense |= !undefined(heap, self.so);
                }
            }
            if m.kind != 0x0C {
                continue;
            }
            let (aname, dt, dims, data) = self.attribute(m.data, path)?;
            if aname != name {
                continue;
            }
            let what = format!("{path} attribute `{name}`");
            let n = checked_elements(&dims, &what)?;
            if n > MAX_STRINGS {
                return Err(self.err(path, format!("attribute `{name}` holds {n} strings")));
            }
            return self.strings(&dt, n, data, &what).map(Some);
        }
        if dense {
            return Err(self.err(
                path,
                format!("attribute `{name}` may be in dense attribute storage (a fractal heap), which is not supported"),
            ));
        }
        Ok(None)
    }

    /// `n` strings of datatype `dt` from an attribute's data.
    fn strings(&self, dt: &Dtype, n: usize, data: &'a [u8], what: &str) -> Result<Vec<String>> {
        let mut out = Vec::new();
        match *dt {
            Dtype::FixedStr { size } => {
                let need = n.checked_mul(size).filter(|&k| k <= data.len());
                if need.is_none() {
                    return Err(err(
                        self.path,
                        format!("{what}: {n} strings of {size} bytes do not fit its data"),
                    ));
                }
                for k in 0..n {
                    let s = &data[k * size..(k + 1) * size];
                    let end = s.iter().position(|&b| b == 0).unwrap_or(size);
                    out.push(String::from_utf8_lossy(&s[..end]).trim_end().to_string());
                }
            }
            Dtype::VlenStr => {
                let el = 4 + self.so + 4;
                if n.checked_mul(el).is_none_or(|k| k > data.len()) {
                    return Err(err(
                        self.path,
                        format!("{what}: {n} string references do not fit its data"),
                    ));
                }
                for k in 0..n {
                    let mut c = Cur::new(&data[k * el..(k + 1) * el]);
                    let len = c.u32().unwrap_or(0) as u64;
                    let coll = c.uint(self.so).unwrap_or(0);
                    let idx = c.u32().unwrap_or(0);
                    out.push(self.global_heap_string(coll, idx, len, what)?);
                }
            }
            other => {
                return Err(err(
                    self.path,
                    format!("{what} is {}, not a string", other.describe()),
                ));
            }
        }
        Ok(out)
    }

    /// Object `idx` of the global heap collection at `addr`, `len` bytes.
    fn global_heap_string(&self, addr: u64, idx: u32, len: u64, what: &str) -> Result<String> {
        if len == 0 {
            return Ok(String::new());
        }
        let head = self.at(addr, 8 + self.sl as u64, what, "global heap collection")?;
        if !head.starts_with(b"GCOL") {
            return Err(err(
                self.path,
                format!("{what}: no global heap collection (GCOL) at address {addr}"),
            ));
        }
        let size = Cur::new(&head[8..]).uint(self.sl).unwrap_or(0);
        let coll = self.at(addr, size, what, "global heap collection")?;
        let mut c = Cur::new(coll);
        c.skip(8 + self.sl);
        while c.rest().len() >= 8 + self.sl {
            let i = c.u16().unwrap_or(0);
            c.skip(6);
            let osize = c.uint(self.sl).unwrap_or(0);
            if i == 0 {
                break; // free space: the end of the objects
            }
            let padded = osize.checked_add(7).map(|v| v & !7);
            let body = padded
                .and_then(|p| usize::try_from(p).ok())
                .and_then(|p| c.take(p).or_else(|| c.take(c.rest().len())));
            let Some(body) = body else { break };
            if u32::from(i) == idx {
                let n = usize::try_from(len.min(osize)).unwrap_or(usize::MAX);
                let s = body.get(..n).ok_or_else(|| {
                    err(
                        self.path,
                        format!("{what}: global heap object {idx} is truncated"),
                    )
                })?;
                return Ok(String::from_utf8_lossy(s).into_owned());
            }
        }
        Err(err(
            self.path,
            format!("{what}: global heap object {idx} not found at {addr}"),
        ))
    }

    /// An attribute message: (name, datatype, dims, data).
    fn attribute(
        &self,
        data: &'a [u8],
        obj: &str,
    ) -> Result<(String, Dtype, Vec<usize>, &'a [u8])> {
        let bad = || self.err(obj, "truncated attribute message");
        let mut c = Cur::new(data);
        let version = c.u8().ok_or_else(bad)?;
        let flags = c.u8().ok_or_else(bad)?;
        let nsize = c.u16().ok_or_else(bad)? as usize;
        let dsize = c.u16().ok_or_else(bad)? as usize;
        let ssize = c.u16().ok_or_else(bad)? as usize;
        let pad = |n: usize| if version == 1 { n.div_ceil(8) * 8 } else { n };
        match version {
            1 | 2 => {}
            3 => {
                c.skip(1).ok_or_else(bad)?;
            }
            v => return Err(self.err(obj, format!("attribute message version {v}"))),
        }
        if version > 1 && flags & 3 != 0 {
            return Err(self.err(obj, "an attribute with a shared datatype or dataspace"));
        }
        let name = c.take(pad(nsize)).ok_or_else(bad)?;
        let name = &name[..nsize.min(name.len())];
        let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
        let name = String::from_utf8_lossy(&name[..end]).into_owned();
        let dt = self.dtype(c.take(pad(dsize)).ok_or_else(bad)?, obj)?;
        let dims = self.dataspace(c.take(pad(ssize)).ok_or_else(bad)?, obj)?;
        Ok((name, dt, dims, c.rest()))
    }

    fn dtype(&self, d: &[u8], obj: &str) -> Result<Dtype> {
        let bad = || self.err(obj, "truncated datatype message");
        let mut c = Cur::new(d);
        let cv = c.u8().ok_or_else(bad)?;
        let bits = c.take(3).ok_or_else(bad)?;
        let size = c.u32().ok_or_else(bad)? as usize;
        let class = cv & 0x0f;
        Ok(match class {
            1 => {
                let be = bits[0] & 1 != 0;
                // IEEE layout: precision, exponent and mantissa as h5py writes.
                let mut p = Cur::new(c.rest());
                let props = (p.u16(), p.u16(), p.u8(), p.u8(), p.u8(), p.u8(), p.u32());
                let ieee = match size {
                    2 => (
                        Some(0),
                        Some(16),
                        Some(10),
                        Some(5),
                        Some(0),
                        Some(10),
                        Some(15),
                    ),
                    4 => (
                        Some(0),
                        Some(32),
                        Some(23),
                        Some(8),
                        Some(0),
                        Some(23),
                        Some(127),
                    ),
                    8 => (
                        Some(0),
                        Some(64),
                        Some(52),
                        Some(11),
                        Some(0),
                        Some(52),
                        Some(1023),
                    ),
                    _ => return Ok(Dtype::Other { class, size }),
                };
                if props != ieee || bits[0] & 0x40 != 0 {
                    return Err(self.err(obj, format!("a float{} that is not IEEE 754", size * 8)));
                }
                Dtype::Float { size, be }
            }
            3 => Dtype::FixedStr { size },
            9 if bits[0] & 0x0f == 1 => Dtype::VlenStr,
            _ => Dtype::Other { class, size },
        })
    }

    fn dataspace(&self, d: &[u8], obj: &str) -> Result<Vec<usize>> {
        let bad = || self.err(obj, "truncated dataspace message");
        let mut c = Cur::new(d);
        let version = c.u8().ok_or_else(bad)?;
        let rank = c.u8().ok_or_else(bad)? as usize;
        let _flags = c.u8().ok_or_else(bad)?;
        match version {
            1 => c.skip(5).ok_or_else(bad)?,
            2 => {
                let kind = c.u8().ok_or_else(bad)?;
                if kind == 2 {
                    return Ok(vec![0]); // null dataspace: no elements
                }
            }
            v => return Err(self.err(obj, format!("dataspace message version {v}"))),
        }
        if rank > MAX_RANK {
            return Err(self.err(
                obj,
                format!("a dataspace of rank {rank} (at most {MAX_RANK})"),
            ));
        }
        let mut dims = Vec::with_capacity(rank);
        for _ in 0..rank {
            let d = c.uint(self.sl).ok_or_else(bad)?;
            dims.push(usize::try_from(d).unwrap_or(usize::MAX));
        }
        Ok(dims)
    }

    /// The float dataset at `path`, as f32 (float16 and float64 converted).
    pub(crate) fn dataset(&self, path: &str) -> Result<Tensor> {
        let addr = self.lookup(path)?;
        let msgs = self.messages(addr, path)?;
        let find = |k: u16| msgs.iter().find(|m| m.kind == k);
        let (Some(dtm), Some(dsm), Some(lay)) = (find(0x03), find(0x01), find(0x08)) else {
            return Err(self.err(path, "not a dataset (no datatype, dataspace or layout)"));
        };
        for m in [dtm, dsm] {
            if m.flags & 0x02 != 0 {
                return Err(self.err(
                    path,
                    "a shared datatype or dataspace (committed types are not read)",
                ));
            }
        }
        if let Some(f) = find(0x0B)
            && f.data.get(1).is_some_and(|&n| n > 0)
        {
            return Err(self.err(
                path,
                "a filtered (compressed) dataset: save without compression",
            ));
        }
        let dt = self.dtype(dtm.data, path)?;
        let Dtype::Float { size, be } = dt else {
            return Err(Error::Dtype {
                tensor: path.to_string(),
                path: self.path.to_path_buf(),
                dtype: dt.describe(),
            });
        };
        let dims = self.dataspace(dsm.data, path)?;
        let n = checked_elements(&dims, &format!("dataset {path}"))?;
        let nbytes = (n as u64) * size as u64;
        let mut c = Cur::new(lay.data);
        let bad = || self.err(path, "truncated layout message");
        let version = c.u8().ok_or_else(bad)?;
        if !(3..=4).contains(&version) {
            return Err(self.err(
                path,
                format!("data layout message version {version} (3 and 4 are read)"),
            ));
        }
        let raw: &[u8] = match c.u8().ok_or_else(bad)? {
            0 => {
                let len = c.u16().ok_or_else(bad)? as usize;
                c.take(len).ok_or_else(bad)?
            }
            1 => {
                let a = c.uint(self.so).ok_or_else(bad)?;
                let len = c.uint(self.sl).ok_or_else(bad)?;
                if n == 0 {
                    &[]
                } else {
                    if len < nbytes {
                        return Err(self.err(
                            path,
                            format!(
                                "holds {len} bytes; its shape {} needs {nbytes}",
                                shape_str(&dims)
                            ),
                        ));
                    }
                    self.at(a, nbytes, path, "dataset data")?
                }
            }
            2 => {
                return Err(self.err(
                    path,
                    "a chunked dataset (Keras writes weights contiguous; chunking is not read)",
                ));
            }
            k => return Err(self.err(path, format!("data layout class {k}"))),
        };
        if (raw.len() as u64) < nbytes {
            return Err(self.err(
                path,
                format!(
                    "holds {} bytes; its shape {} needs {nbytes}",
                    raw.len(),
                    shape_str(&dims)
                ),
            ));
        }
        let mut data = try_filled(
            n,
            0f32,
            &format!("dataset {path} in {}", self.path.display()),
        )?;
        for (k, v) in data.iter_mut().enumerate() {
            let s = &raw[k * size..(k + 1) * size];
            let word = |s: &[u8]| -> u64 {
                if be {
                    s.iter().fold(0u64, |a, &x| (a << 8) | x as u64)
                } else {
                    s.iter().rev().fold(0u64, |a, &x| (a << 8) | x as u64)
                }
            };
            let w = word(s);
            *v = match size {
                2 => super::half::f16_to_f32(w as u16),
                4 => f32::from_bits(w as u32),
                _ => f64::from_bits(w) as f32,
            };
        }
        Tensor::new(dims, data)
    }
}

fn check_sizes(path: &Path, so: usize, sl: usize) -> Result<()> {
    if ![2, 4, 8].contains(&so) || ![2, 4, 8].contains(&sl) {
        return Err(err(
            path,
            format!("sizes of offsets {so} and lengths {sl} (2, 4 or 8)"),
        ));
    }
    Ok(())
}

fn show_obj(obj: &str) -> &str {
    if obj.is_empty() { "/" } else { obj }
}

fn err(path: &Path, reason: impl ToString) -> Error {
    Error::Format {
        path: path.to_path_buf(),
        format: "HDF5",
        reason: reason.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Files h5py wrote with the newest format (superblock 3, object
    /// header 2, link messages; its group of 40 links is dense storage, a
    /// clear error), with a 512-byte user block and with the default
    /// (superblock 0, symbol tables, a B-tree of 40 links):
    /// tools/make_keras_goldens.py, `h5_variants`.
    #[test]
    fn reads_what_h5py_writes_in_every_format() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/keras/h5_variants");
        let want: Vec<f32> = (0..24).map(|i| i as f32 / 7.0).collect();
        for name in ["latest.h5", "userblock.h5", "earliest.h5"] {
            let path = dir.join(name);
            let bytes = std::fs::read(&path).unwrap();
            assert!(is_hdf5(&bytes), "{name}");
            let h = H5::open(&bytes, &path).unwrap();
            for ds in ["f32", "f64", "be"] {
                let t = h.dataset(&format!("a/b/{ds}")).unwrap();
                assert_eq!(t.shape, [4, 6], "{name} {ds}");
                assert_eq!(t.data, want, "{name} {ds}");
            }
            let t = h.dataset("a/b/f16").unwrap();
            for (g, w) in t.data.iter().zip(&want) {
                assert!((g - w).abs() < 2e-3, "{name} f16 {g} {w}");
            }
            assert_eq!(h.dataset("a/b/compact").unwrap().data, want[..6], "{name}");
            let e = h.dataset("a/b/chunked").unwrap_err().to_string();
            assert!(e.contains("chunked") && e.contains("a/b/chunked"), "{e}");
            let e = h.dataset("a/b/ints").unwrap_err();
            assert!(matches!(e, Error::Dtype { .. }), "{e:?}");
            assert!(matches!(
                h.dataset("a/nope"),
                Err(Error::MissingTensor { .. })
            ));
            let e = h.dataset("a/b").unwrap_err().to_string();
            assert!(e.contains("not a dataset"), "{e}");
            assert_eq!(
                h.attr_strings("a/b", "names").unwrap().unwrap(),
                ["x", "yy", "zzz"],
                "{name}"
            );
            assert_eq!(h.attr_strings("a/b", "fixed").unwrap().unwrap(), ["hello"]);
            assert_eq!(h.attr_strings("a/b", "absent").unwrap(), None);
            if name == "latest.h5" {
                // More than 8 links in the newest format: a fractal heap.
                let e = h.children("many").unwrap_err().to_string();
                assert!(e.contains("dense link storage"), "{e}");
                continue;
            }
            let mut kids = h.children("many").unwrap();
            kids.sort();
            let want_kids: Vec<String> = (0..40).map(|i| format!("g{i:02}")).collect();
            assert_eq!(kids, want_kids, "{name}");
        }
    }

    /// Every prefix of a file and every single-byte change is an error or
    /// a value, never a panic (the hostile suites do the rest).
    #[test]
    fn truncations_and_flips_never_panic() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/keras/h5_variants/latest.h5");
        let bytes = std::fs::read(&path).unwrap();
        let walk = |b: &[u8]| {
            if let Ok(h) = H5::open(b, &path) {
                let _ = h.dataset("a/b/f32");
                let _ = h.attr_strings("a/b", "names");
                let _ = h.children("many");
            }
        };
        for n in (0..bytes.len()).step_by(7) {
            walk(&bytes[..n]);
        }
        let mut b = bytes.clone();
        for i in (0..b.len()).step_by(3) {
            let old = b[i];
            for v in [0u8, 0xff, old ^ 0x10] {
                b[i] = v;
                walk(&b);
            }
            b[i] = old;
        }
    }
}
