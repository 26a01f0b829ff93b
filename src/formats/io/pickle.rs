//! A restricted unpickler: it reads the pickles `torch.save` writes for a
//! state dict and nothing else, and it never runs anything. The file's
//! opcodes drive a small stack machine over plain values (None, bools,
//! ints, floats, strings, bytes, tuples, lists, dicts); the only Python
//! globals it knows are `collections.OrderedDict`, the tensor rebuilders of
//! `torch._utils` and the `torch.*Storage` types, and the only callables
//! it "calls" (REDUCE) are those, by building the value they would build.
//! Storages come in through persistent ids (BINPERSID) as
//! `('storage', torch.FloatStorage, key, location, numel[, view])`. Any
//! other global, opcode or call is an error naming it.
//!
//! Bounded by construction: values live in one flat arena (no recursion,
//! no reference counting, so neither a deep nest nor a cycle can overflow
//! the stack when built or dropped); the arena, the container cells, the
//! stack, the marks and the memo have fixed limits; every length read from
//! the file is checked against the bytes that remain before anything is
//! allocated; memo keys index a map, never a vector sized by the file.

use std::collections::HashMap;

/// The most values (objects) one pickle may create.
pub const MAX_PICKLE_OBJECTS: usize = 1 << 20;

/// The most container cells (tuple, list and dict items, tensor dimensions)
/// one pickle may create: what bounds memory when the memo hands out one
/// object many times.
const MAX_CELLS: usize = 1 << 22;

/// The deepest the machine's stack (and its mark stack) may get.
const MAX_STACK: usize = 1 << 20;

/// The most dimensions of a tensor (numpy's own limit).
const MAX_DIMS: usize = 64;

/// The longest module or name line of a GLOBAL opcode.
const MAX_GLOBAL_LINE: usize = 1024;

/// The element types of `torch.*Storage`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum StorageKind {
    F32,
    F64,
    F16,
    Bf16,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
    C64,
    C128,
}

impl StorageKind {
    fn from_class(name: &str) -> Option<StorageKind> {
        Some(match name {
            "FloatStorage" => StorageKind::F32,
            "DoubleStorage" => StorageKind::F64,
            "HalfStorage" => StorageKind::F16,
            "BFloat16Storage" => StorageKind::Bf16,
            "LongStorage" => StorageKind::I64,
            "IntStorage" => StorageKind::I32,
            "ShortStorage" => StorageKind::I16,
            "CharStorage" => StorageKind::I8,
            "ByteStorage" => StorageKind::U8,
            "BoolStorage" => StorageKind::Bool,
            "ComplexFloatStorage" => StorageKind::C64,
            "ComplexDoubleStorage" => StorageKind::C128,
            _ => return None,
        })
    }

    /// Bytes per element.
    pub(super) fn size(self) -> usize {
        match self {
            StorageKind::I8 | StorageKind::U8 | StorageKind::Bool => 1,
            StorageKind::F16 | StorageKind::Bf16 | StorageKind::I16 => 2,
            StorageKind::F32 | StorageKind::I32 => 4,
            StorageKind::F64 | StorageKind::I64 | StorageKind::C64 => 8,
            StorageKind::C128 => 16,
        }
    }

    /// The torch dtype's name (`float32`, `int64`, …).
    pub(super) fn dtype(self) -> &'static str {
        match self {
            StorageKind::F32 => "float32",
            StorageKind::F64 => "float64",
            StorageKind::F16 => "float16",
            StorageKind::Bf16 => "bfloat16",
            StorageKind::I64 => "int64",
            StorageKind::I32 => "int32",
            StorageKind::I16 => "int16",
            StorageKind::I8 => "int8",
            StorageKind::U8 => "uint8",
            StorageKind::Bool => "bool",
            StorageKind::C64 => "complex64",
            StorageKind::C128 => "complex128",
        }
    }

    /// Whether tensors of this kind are read (as f32).
    pub(super) fn is_float(self) -> bool {
        matches!(
            self,
            StorageKind::F32 | StorageKind::F64 | StorageKind::F16 | StorageKind::Bf16
        )
    }
}

/// The Python globals the unpickler knows.
#[derive(Clone, Copy, Debug)]
enum Global {
    OrderedDict,
    RebuildTensorV2,
    RebuildTensor,
    RebuildParameter,
    RebuildParameterWithState,
    Storage(StorageKind),
}

/// A storage a persistent id names.
#[derive(Clone, Debug)]
pub(super) struct StorageRef {
    /// Its element type.
    pub kind: StorageKind,
    /// Its key: the member `data/<key>` of a zip save, or the key of the
    /// legacy format's storage list.
    pub key: String,
    /// Its element count as the pickle declares it.
    pub numel: u64,
}

/// A tensor as `_rebuild_tensor_v2` would build it: a view of a storage.
#[derive(Clone, Debug)]
pub(super) struct TensorRec {
    /// The storage it views.
    pub storage: StorageRef,
    /// The storage offset, in elements.
    pub offset: u64,
    /// The shape.
    pub shape: Vec<usize>,
    /// The strides, in elements.
    pub stride: Vec<usize>,
}

/// One value of the arena; containers hold arena indices.
#[derive(Debug)]
enum Obj {
    None,
    Bool(bool),
    Int(i64),
    /// An integer beyond 64 bits (its value is never needed).
    BigInt,
    Float,
    Str(String),
    Bytes,
    Tuple(Vec<usize>),
    List(Vec<usize>),
    Dict(Vec<(usize, usize)>),
    Global(Global),
    Storage(StorageRef),
    Tensor(Box<TensorRec>),
}

impl Obj {
    /// What it is, for messages.
    fn kind(&self) -> &'static str {
        match self {
            Obj::None => "None",
            Obj::Bool(_) => "a bool",
            Obj::Int(_) | Obj::BigInt => "an int",
            Obj::Float => "a float",
            Obj::Str(_) => "a string",
            Obj::Bytes => "bytes",
            Obj::Tuple(_) => "a tuple",
            Obj::List(_) => "a list",
            Obj::Dict(_) => "a dict",
            Obj::Global(_) => "a global",
            Obj::Storage(_) => "a storage",
            Obj::Tensor(_) => "a tensor",
        }
    }
}

/// Why a pickle was not read: malformed (a corrupt file), or refused (it
/// is well formed but holds something other than a state dict).
#[derive(Debug)]
pub(super) enum Fail {
    /// The bytes are not a valid pickle of a state dict.
    Format(String),
    /// A global or construct that a state dict does not contain.
    Refused(String),
}

type R<T> = std::result::Result<T, Fail>;

fn bad<T>(msg: impl Into<String>) -> R<T> {
    Err(Fail::Format(msg.into()))
}

/// A parsed pickle: the arena and the value STOP returned.
pub(super) struct Pickle {
    objs: Vec<Obj>,
    root: usize,
}

/// The name of an opcode, for messages.
fn opname(op: u8) -> &'static str {
    match op {
        b'(' => "MARK",
        b'.' => "STOP",
        b'0' => "POP",
        b'1' => "POP_MARK",
        b'2' => "DUP",
        b'F' => "FLOAT",
        b'I' => "INT",
        b'J' => "BININT",
        b'K' => "BININT1",
        b'L' => "LONG",
        b'M' => "BININT2",
        b'N' => "NONE",
        b'P' => "PERSID",
        b'Q' => "BINPERSID",
        b'R' => "REDUCE",
        b'S' => "STRING",
        b'T' => "BINSTRING",
        b'U' => "SHORT_BINSTRING",
        b'V' => "UNICODE",
        b'X' => "BINUNICODE",
        b'a' => "APPEND",
        b'b' => "BUILD",
        b'c' => "GLOBAL",
        b'd' => "DICT",
        b'}' => "EMPTY_DICT",
        b'e' => "APPENDS",
        b'g' => "GET",
        b'h' => "BINGET",
        b'i' => "INST",
        b'j' => "LONG_BINGET",
        b'l' => "LIST",
        b']' => "EMPTY_LIST",
        b'o' => "OBJ",
        b'p' => "PUT",
        b'q' => "BINPUT",
        b'r' => "LONG_BINPUT",
        b's' => "SETITEM",
        b't' => "TUPLE",
        b')' => "EMPTY_TUPLE",
        b'u' => "SETITEMS",
        b'G' => "BINFLOAT",
        0x80 => "PROTO",
        0x81 => "NEWOBJ",
        0x82 => "EXT1",
        0x83 => "EXT2",
        0x84 => "EXT4",
        0x85 => "TUPLE1",
        0x86 => "TUPLE2",
        0x87 => "TUPLE3",
        0x88 => "NEWTRUE",
        0x89 => "NEWFALSE",
        0x8a => "LONG1",
        0x8b => "LONG4",
        b'B' => "BINBYTES",
        b'C' => "SHORT_BINBYTES",
        0x8c => "SHORT_BINUNICODE",
        0x8d => "BINUNICODE8",
        0x8e => "BINBYTES8",
        0x8f => "EMPTY_SET",
        0x90 => "ADDITEMS",
        0x91 => "FROZENSET",
        0x92 => "NEWOBJ_EX",
        0x93 => "STACK_GLOBAL",
        0x94 => "MEMOIZE",
        0x95 => "FRAME",
        0x96 => "BYTEARRAY8",
        0x97 => "NEXT_BUFFER",
        0x98 => "READONLY_BUFFER",
        _ => "an unknown opcode",
    }
}

/// Resolves a GLOBAL: the few a state dict uses, else a refusal naming it
/// (with the advice to save a `state_dict` when it looks like a class).
fn resolve_global(module: &str, name: &str) -> R<Global> {
    let g = match (module, name) {
        ("collections", "OrderedDict") => Some(Global::OrderedDict),
        ("torch._utils", "_rebuild_tensor_v2") => Some(Global::RebuildTensorV2),
        ("torch._utils", "_rebuild_tensor") => Some(Global::RebuildTensor),
        ("torch._utils", "_rebuild_parameter") => Some(Global::RebuildParameter),
        ("torch._utils", "_rebuild_parameter_with_state") => {
            Some(Global::RebuildParameterWithState)
        }
        ("torch", n) => StorageKind::from_class(n).map(Global::Storage),
        _ => None,
    };
    if let Some(g) = g {
        return Ok(g);
    }
    let full = format!("{module}.{name}");
    // Standard-library modules: their classes are not a user's model.
    const STDLIB: [&str; 16] = [
        "builtins",
        "os",
        "posix",
        "nt",
        "sys",
        "subprocess",
        "shutil",
        "socket",
        "importlib",
        "runpy",
        "pickle",
        "io",
        "codecs",
        "functools",
        "operator",
        "types",
    ];
    let class_like = name.chars().next().is_some_and(char::is_uppercase);
    let stdlib = STDLIB.contains(&module.split('.').next().unwrap_or(module));
    if module == "__main__" || module.starts_with("torch.nn.") || (class_like && !stdlib) {
        Err(Fail::Refused(format!(
            "it holds a pickled `{full}` (a whole model: torch.save(model)), not a state dict: \
             save torch.save(model.state_dict(), path) instead"
        )))
    } else {
        Err(Fail::Refused(format!(
            "its pickle refers to the Python global `{full}`, which a state dict does not hold"
        )))
    }
}

/// The machine: the bytes, the arena, the stack, the marks and the memo.
struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    objs: Vec<Obj>,
    cells: usize,
    stack: Vec<usize>,
    marks: Vec<usize>,
    memo: HashMap<u32, usize>,
}

impl<'a> Machine<'a> {
    fn take(&mut self, n: usize, what: &str) -> R<&'a [u8]> {
        let rest = self.data.len() - self.pos;
        if n > rest {
            return bad(format!(
                "truncated: {what} at byte {} needs {n} bytes, {rest} remain",
                self.pos
            ));
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn u8(&mut self, what: &str) -> R<u8> {
        Ok(self.take(1, what)?[0])
    }

    fn le<const N: usize>(&mut self, what: &str) -> R<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, what)?);
        Ok(a)
    }

    /// A length field of `N` bytes, as usize (checked against the bytes
    /// that remain by [`take`](Self::take) before use).
    fn len<const N: usize>(&mut self, what: &str) -> R<usize> {
        let b: [u8; N] = self.le(what)?;
        let mut a = [0u8; 8];
        a[..N].copy_from_slice(&b);
        let n = u64::from_le_bytes(a);
        usize::try_from(n).or_else(|_| bad(format!("{what} declares {n} bytes")))
    }

    /// A newline-terminated line of at most [`MAX_GLOBAL_LINE`] bytes.
    fn line(&mut self, what: &str) -> R<String> {
        let rest = &self.data[self.pos..];
        let limit = rest.len().min(MAX_GLOBAL_LINE + 1);
        let Some(n) = rest[..limit].iter().position(|&c| c == b'\n') else {
            return bad(format!(
                "{what} at byte {}: no newline within {MAX_GLOBAL_LINE} bytes",
                self.pos
            ));
        };
        let s = std::str::from_utf8(&rest[..n])
            .map_err(|_| Fail::Format(format!("{what} at byte {} is not UTF-8", self.pos)))?
            .to_string();
        self.pos += n + 1;
        Ok(s)
    }

    fn new_obj(&mut self, o: Obj) -> R<usize> {
        if self.objs.len() >= MAX_PICKLE_OBJECTS {
            return bad(format!(
                "more than {MAX_PICKLE_OBJECTS} objects (a state dict has a few per tensor)"
            ));
        }
        self.objs.push(o);
        Ok(self.objs.len() - 1)
    }

    fn cells(&mut self, n: usize) -> R<()> {
        self.cells = self.cells.saturating_add(n);
        if self.cells > MAX_CELLS {
            return bad(format!("more than {MAX_CELLS} container items"));
        }
        Ok(())
    }

    fn push(&mut self, i: usize) -> R<()> {
        if self.stack.len() >= MAX_STACK {
            return bad(format!("the stack grows past {MAX_STACK} items"));
        }
        self.stack.push(i);
        Ok(())
    }

    fn push_new(&mut self, o: Obj) -> R<()> {
        let i = self.new_obj(o)?;
        self.push(i)
    }

    /// Pops one value; an error if the stack is empty or its top is a mark.
    fn pop(&mut self, op: u8) -> R<usize> {
        if self.marks.last() == Some(&self.stack.len()) {
            return bad(format!("{} at byte {} pops a mark", opname(op), self.pos));
        }
        self.stack.pop().ok_or_else(|| {
            Fail::Format(format!(
                "{} at byte {}: the stack is empty",
                opname(op),
                self.pos
            ))
        })
    }

    fn top(&self, op: u8) -> R<usize> {
        if self.marks.last() == Some(&self.stack.len()) {
            return bad(format!(
                "{} at byte {}: a mark is on top",
                opname(op),
                self.pos
            ));
        }
        self.stack.last().copied().ok_or_else(|| {
            Fail::Format(format!(
                "{} at byte {}: the stack is empty",
                opname(op),
                self.pos
            ))
        })
    }

    /// The values above the last mark, popped with the mark.
    fn pop_mark(&mut self, op: u8) -> R<Vec<usize>> {
        let Some(m) = self.marks.pop() else {
            return bad(format!(
                "{} at byte {} without a MARK",
                opname(op),
                self.pos
            ));
        };
        Ok(self.stack.split_off(m))
    }

    fn string(&mut self, n: usize, what: &str) -> R<()> {
        let b = self.take(n, what)?;
        let s = std::str::from_utf8(b)
            .map_err(|_| Fail::Format(format!("{what} ending at byte {} is not UTF-8", self.pos)))?
            .to_string();
        self.push_new(Obj::Str(s))
    }

    /// A Python 2 `str` (bytes): decoded as Latin-1, as Python 3 reads
    /// pickles with `encoding='latin1'`.
    fn latin1(&mut self, n: usize, what: &str) -> R<()> {
        let b = self.take(n, what)?;
        let s: String = b.iter().map(|&c| char::from(c)).collect();
        self.push_new(Obj::Str(s))
    }

    fn int(&mut self, bytes: &[u8]) -> R<()> {
        if bytes.len() > 8 {
            return self.push_new(Obj::BigInt);
        }
        let fill = if bytes.last().is_some_and(|&b| b & 0x80 != 0) {
            0xff
        } else {
            0
        };
        let mut a = [fill; 8];
        a[..bytes.len()].copy_from_slice(bytes);
        self.push_new(Obj::Int(i64::from_le_bytes(a)))
    }

    fn memo_put(&mut self, key: u32) -> R<()> {
        let v = self.top(b'q')?;
        if self.memo.len() >= MAX_PICKLE_OBJECTS && !self.memo.contains_key(&key) {
            return bad(format!("more than {MAX_PICKLE_OBJECTS} memo entries"));
        }
        self.memo.insert(key, v);
        Ok(())
    }

    fn memo_get(&mut self, key: u32) -> R<()> {
        let v = *self.memo.get(&key).ok_or_else(|| {
            Fail::Format(format!(
                "memo key {key} at byte {} was never stored",
                self.pos
            ))
        })?;
        self.push(v)
    }

    fn append(&mut self, target: usize, items: Vec<usize>, op: u8) -> R<()> {
        self.cells(items.len())?;
        match &mut self.objs[target] {
            Obj::List(v) => {
                v.extend(items);
                Ok(())
            }
            other => bad(format!(
                "{} at byte {} on {}",
                opname(op),
                self.pos,
                other.kind()
            )),
        }
    }

    fn set_items(&mut self, target: usize, items: Vec<usize>, op: u8) -> R<()> {
        if !items.len().is_multiple_of(2) {
            return bad(format!(
                "{} at byte {}: an odd number of items",
                opname(op),
                self.pos
            ));
        }
        self.cells(items.len())?;
        let pos = self.pos;
        match &mut self.objs[target] {
            Obj::Dict(d) => {
                d.extend(items.chunks_exact(2).map(|p| (p[0], p[1])));
                Ok(())
            }
            other => bad(format!("{} at byte {pos} on {}", opname(op), other.kind())),
        }
    }

    fn tuple(&mut self, items: Vec<usize>) -> R<()> {
        self.cells(items.len())?;
        self.push_new(Obj::Tuple(items))
    }

    fn int_of(&self, i: usize, what: &str) -> R<i64> {
        match &self.objs[i] {
            Obj::Int(v) => Ok(*v),
            Obj::Bool(b) => Ok(i64::from(*b)),
            other => bad(format!("{what} is {}, not an int", other.kind())),
        }
    }

    fn dims(&self, i: usize, what: &str) -> R<Vec<usize>> {
        let Obj::Tuple(items) = &self.objs[i] else {
            return bad(format!("{what} is {}, not a tuple", self.objs[i].kind()));
        };
        if items.len() > MAX_DIMS {
            return bad(format!(
                "{what} has {} dimensions (at most {MAX_DIMS})",
                items.len()
            ));
        }
        items
            .iter()
            .map(|&d| {
                let v = self.int_of(d, what)?;
                usize::try_from(v).or_else(|_| bad(format!("{what} holds {v}")))
            })
            .collect()
    }

    /// `BINPERSID`: `('storage', torch.XStorage, key, location, numel)`,
    /// plus `view_metadata` (None) in the legacy format.
    fn persistent(&mut self, pid: usize) -> R<()> {
        let Obj::Tuple(t) = &self.objs[pid] else {
            return bad(format!(
                "a persistent id at byte {} is {}, not a tuple",
                self.pos,
                self.objs[pid].kind()
            ));
        };
        let t = t.clone();
        if !(5..=6).contains(&t.len()) {
            return bad(format!(
                "a persistent id at byte {} has {} fields; a storage's has 5 (6 in the legacy format)",
                self.pos,
                t.len()
            ));
        }
        match &self.objs[t[0]] {
            Obj::Str(s) if s == "storage" => {}
            other => {
                return bad(format!(
                    "a persistent id at byte {} is not a storage (its tag is {})",
                    self.pos,
                    other.kind()
                ));
            }
        }
        let Obj::Global(Global::Storage(kind)) = self.objs[t[1]] else {
            return bad(format!(
                "a persistent id at byte {} has {} where a torch storage type belongs",
                self.pos,
                self.objs[t[1]].kind()
            ));
        };
        let key = match &self.objs[t[2]] {
            Obj::Str(s) => s.clone(),
            other => return bad(format!("a storage key is {}, not a string", other.kind())),
        };
        let numel = self.int_of(t[4], "a storage's numel")?;
        let numel =
            u64::try_from(numel).or_else(|_| bad(format!("storage `{key}` has numel {numel}")))?;
        if let Some(&v) = t.get(5)
            && !matches!(self.objs[v], Obj::None)
        {
            return Err(Fail::Refused(format!(
                "storage `{key}` is a view of another storage (a legacy-format feature not supported); \
                 re-save the file with a current torch.save"
            )));
        }
        self.push_new(Obj::Storage(StorageRef { kind, key, numel }))
    }

    /// REDUCE: `callable(*args)` for the callables a state dict uses.
    fn reduce(&mut self, f: usize, args: usize) -> R<()> {
        let Obj::Global(g) = self.objs[f] else {
            return bad(format!(
                "REDUCE at byte {} calls {}, not a known global",
                self.pos,
                self.objs[f].kind()
            ));
        };
        let Obj::Tuple(a) = &self.objs[args] else {
            return bad(format!(
                "REDUCE at byte {}: the arguments are {}, not a tuple",
                self.pos,
                self.objs[args].kind()
            ));
        };
        let a = a.clone();
        match g {
            Global::OrderedDict => {
                if !a.is_empty() {
                    return bad("OrderedDict called with arguments (pickle passes none)");
                }
                self.push_new(Obj::Dict(Vec::new()))
            }
            Global::RebuildTensorV2 | Global::RebuildTensor => {
                if !(4..=7).contains(&a.len()) {
                    return bad(format!(
                        "_rebuild_tensor at byte {} with {} arguments",
                        self.pos,
                        a.len()
                    ));
                }
                let Obj::Storage(storage) = &self.objs[a[0]] else {
                    return bad(format!(
                        "_rebuild_tensor at byte {} over {}, not a storage",
                        self.pos,
                        self.objs[a[0]].kind()
                    ));
                };
                let storage = storage.clone();
                let offset = self.int_of(a[1], "a storage offset")?;
                let offset =
                    u64::try_from(offset).or_else(|_| bad(format!("storage offset {offset}")))?;
                let shape = self.dims(a[2], "a tensor's size")?;
                let stride = self.dims(a[3], "a tensor's stride")?;
                if shape.len() != stride.len() {
                    return bad(format!(
                        "a tensor with {} dimensions and {} strides",
                        shape.len(),
                        stride.len()
                    ));
                }
                self.cells(2 * shape.len())?;
                self.push_new(Obj::Tensor(Box::new(TensorRec {
                    storage,
                    offset,
                    shape,
                    stride,
                })))
            }
            Global::RebuildParameter | Global::RebuildParameterWithState => {
                match a.first().map(|&t| &self.objs[t]) {
                    Some(Obj::Tensor(_)) => self.push(a[0]),
                    _ => bad(format!(
                        "_rebuild_parameter at byte {} without a tensor",
                        self.pos
                    )),
                }
            }
            Global::Storage(k) => Err(Fail::Refused(format!(
                "its pickle constructs a torch storage ({}) directly",
                k.dtype()
            ))),
        }
    }

    fn run(&mut self) -> R<usize> {
        loop {
            let at = self.pos;
            let op = self.u8("an opcode")?;
            match op {
                0x80 => {
                    let v = self.u8("PROTO")?;
                    if !(2..=5).contains(&v) {
                        return bad(format!("pickle protocol {v} (2 to 5 are read)"));
                    }
                }
                0x95 => {
                    self.take(8, "FRAME")?;
                }
                b'.' => {
                    let v = self.pop(op)?;
                    return Ok(v);
                }
                b'(' => {
                    if self.marks.len() >= MAX_STACK {
                        return bad(format!("more than {MAX_STACK} open marks"));
                    }
                    self.marks.push(self.stack.len());
                }
                b'0' => {
                    if self.marks.last() == Some(&self.stack.len()) {
                        self.marks.pop();
                    } else {
                        self.pop(op)?;
                    }
                }
                b'1' => {
                    self.pop_mark(op)?;
                }
                b'2' => {
                    let v = self.top(op)?;
                    self.push(v)?;
                }
                b'}' => self.push_new(Obj::Dict(Vec::new()))?,
                b']' => self.push_new(Obj::List(Vec::new()))?,
                b')' => self.push_new(Obj::Tuple(Vec::new()))?,
                b't' => {
                    let items = self.pop_mark(op)?;
                    self.tuple(items)?;
                }
                0x85..=0x87 => {
                    let n = usize::from(op - 0x84);
                    let mut items = vec![0; n];
                    for k in (0..n).rev() {
                        items[k] = self.pop(op)?;
                    }
                    self.tuple(items)?;
                }
                b'l' => {
                    let items = self.pop_mark(op)?;
                    self.cells(items.len())?;
                    self.push_new(Obj::List(items))?;
                }
                b'd' => {
                    let items = self.pop_mark(op)?;
                    let d = self.new_obj(Obj::Dict(Vec::new()))?;
                    self.set_items(d, items, op)?;
                    self.push(d)?;
                }
                b'a' => {
                    let v = self.pop(op)?;
                    let l = self.top(op)?;
                    self.append(l, vec![v], op)?;
                }
                b'e' => {
                    let items = self.pop_mark(op)?;
                    let l = self.top(op)?;
                    self.append(l, items, op)?;
                }
                b's' => {
                    let v = self.pop(op)?;
                    let k = self.pop(op)?;
                    let d = self.top(op)?;
                    self.set_items(d, vec![k, v], op)?;
                }
                b'u' => {
                    let items = self.pop_mark(op)?;
                    let d = self.top(op)?;
                    self.set_items(d, items, op)?;
                }
                b'N' => self.push_new(Obj::None)?,
                0x88 => self.push_new(Obj::Bool(true))?,
                0x89 => self.push_new(Obj::Bool(false))?,
                b'J' => {
                    let b: [u8; 4] = self.le("BININT")?;
                    self.push_new(Obj::Int(i64::from(i32::from_le_bytes(b))))?;
                }
                b'K' => {
                    let b = self.u8("BININT1")?;
                    self.push_new(Obj::Int(i64::from(b)))?;
                }
                b'M' => {
                    let b: [u8; 2] = self.le("BININT2")?;
                    self.push_new(Obj::Int(i64::from(u16::from_le_bytes(b))))?;
                }
                0x8a => {
                    let n = usize::from(self.u8("LONG1")?);
                    let b = self.take(n, "LONG1")?;
                    self.int(b)?;
                }
                0x8b => {
                    let n = self.len::<4>("LONG4")?;
                    let b = self.take(n, "LONG4")?;
                    self.int(b)?;
                }
                b'G' => {
                    self.take(8, "BINFLOAT")?;
                    self.push_new(Obj::Float)?;
                }
                0x8c => {
                    let n = usize::from(self.u8("SHORT_BINUNICODE")?);
                    self.string(n, "SHORT_BINUNICODE")?;
                }
                b'X' => {
                    let n = self.len::<4>("BINUNICODE")?;
                    self.string(n, "BINUNICODE")?;
                }
                0x8d => {
                    let n = self.len::<8>("BINUNICODE8")?;
                    self.string(n, "BINUNICODE8")?;
                }
                b'U' => {
                    let n = usize::from(self.u8("SHORT_BINSTRING")?);
                    self.latin1(n, "SHORT_BINSTRING")?;
                }
                b'T' => {
                    let n = self.len::<4>("BINSTRING")?;
                    self.latin1(n, "BINSTRING")?;
                }
                b'C' | b'B' | 0x8e => {
                    let n = match op {
                        b'C' => usize::from(self.u8("SHORT_BINBYTES")?),
                        b'B' => self.len::<4>("BINBYTES")?,
                        _ => self.len::<8>("BINBYTES8")?,
                    };
                    self.take(n, opname(op))?;
                    self.push_new(Obj::Bytes)?;
                }
                b'q' => {
                    let k = self.u8("BINPUT")?;
                    self.memo_put(u32::from(k))?;
                }
                b'r' => {
                    let k: [u8; 4] = self.le("LONG_BINPUT")?;
                    self.memo_put(u32::from_le_bytes(k))?;
                }
                0x94 => {
                    let k =
                        u32::try_from(self.memo.len()).or_else(|_| bad("too many memo entries"))?;
                    self.memo_put(k)?;
                }
                b'h' => {
                    let k = self.u8("BINGET")?;
                    self.memo_get(u32::from(k))?;
                }
                b'j' => {
                    let k: [u8; 4] = self.le("LONG_BINGET")?;
                    self.memo_get(u32::from_le_bytes(k))?;
                }
                b'c' => {
                    let module = self.line("GLOBAL")?;
                    let name = self.line("GLOBAL")?;
                    let g = resolve_global(&module, &name)?;
                    self.push_new(Obj::Global(g))?;
                }
                0x93 => {
                    let name = self.pop(op)?;
                    let module = self.pop(op)?;
                    let (Obj::Str(m), Obj::Str(n)) = (&self.objs[module], &self.objs[name]) else {
                        return bad(format!("STACK_GLOBAL at byte {at} without two strings"));
                    };
                    let g = resolve_global(m, n)?;
                    self.push_new(Obj::Global(g))?;
                }
                b'R' => {
                    let args = self.pop(op)?;
                    let f = self.pop(op)?;
                    self.reduce(f, args)?;
                }
                b'b' => {
                    // OrderedDict's state (a state dict's `_metadata`):
                    // attributes this reader does not need.
                    let _state = self.pop(op)?;
                    let target = self.top(op)?;
                    if !matches!(self.objs[target], Obj::Dict(_)) {
                        return Err(Fail::Refused(format!(
                            "BUILD at byte {at} sets the state of {} (only an OrderedDict's is read)",
                            self.objs[target].kind()
                        )));
                    }
                }
                b'Q' => {
                    let pid = self.pop(op)?;
                    self.persistent(pid)?;
                }
                other => {
                    return Err(Fail::Refused(format!(
                        "opcode {} (0x{other:02x}) at byte {at} is not part of a state dict's pickle",
                        opname(other)
                    )));
                }
            }
        }
    }
}

/// Runs the pickle that starts at `data[start..]`; returns it and the
/// offset just past its STOP.
pub(super) fn parse(data: &[u8], start: usize) -> std::result::Result<(Pickle, usize), Fail> {
    let mut m = Machine {
        data,
        pos: start,
        objs: Vec::new(),
        cells: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
    };
    let root = m.run()?;
    Ok((Pickle { objs: m.objs, root }, m.pos))
}

/// The most nested dicts followed when naming tensors (`a.b.c`).
const MAX_NESTING: usize = 16;

/// The longest tensor name built from nested keys.
const MAX_NAME_CHARS: usize = 4096;

impl Pickle {
    /// The root's integer value, if it is an int.
    pub(super) fn root_int(&self) -> Option<i64> {
        match self.objs[self.root] {
            Obj::Int(v) => Some(v),
            _ => None,
        }
    }

    /// Whether the root is an integer beyond 64 bits (the legacy
    /// format's magic number; its bytes were checked by the caller).
    pub(super) fn root_is_big_int(&self) -> bool {
        matches!(self.objs[self.root], Obj::BigInt)
    }

    /// Whether the root is a dict whose `key` is `False` (the legacy
    /// format's `sys_info['little_endian']`).
    pub(super) fn root_dict_false(&self, key: &str) -> bool {
        let Obj::Dict(d) = &self.objs[self.root] else {
            return false;
        };
        d.iter().any(|&(k, v)| {
            matches!(&self.objs[k], Obj::Str(s) if s == key)
                && matches!(self.objs[v], Obj::Bool(false))
        })
    }

    /// The root as a list of strings (the legacy format's storage keys).
    pub(super) fn root_strings(&self) -> R<Vec<&str>> {
        let Obj::List(items) = &self.objs[self.root] else {
            return bad(format!(
                "the storage key list is {}",
                self.objs[self.root].kind()
            ));
        };
        items
            .iter()
            .map(|&i| match &self.objs[i] {
                Obj::Str(s) => Ok(s.as_str()),
                other => bad(format!("a storage key is {}", other.kind())),
            })
            .collect()
    }

    /// Every storage a persistent id named.
    pub(super) fn storages(&self) -> impl Iterator<Item = &StorageRef> {
        self.objs.iter().filter_map(|o| match o {
            Obj::Storage(s) => Some(s),
            _ => None,
        })
    }

    /// The state dict's tensors by name. The root must be a dict; nested
    /// dicts (a checkpoint `{'model': state_dict, 'epoch': 3}`) name their
    /// tensors `model.lstm.weight_ih_l0`; values that are not tensors or
    /// dicts (ints, lists, strings) are skipped. Iterative, at most
    /// [`MAX_NESTING`] dicts deep, each dict visited once.
    pub(super) fn tensors(&self) -> R<Vec<(String, TensorRec)>> {
        match &self.objs[self.root] {
            Obj::Dict(_) => {}
            Obj::Tensor(_) => {
                return Err(Fail::Refused(
                    "it holds a single tensor, not a state dict (a dict of named tensors)".into(),
                ));
            }
            other => {
                return Err(Fail::Refused(format!(
                    "it holds {}, not a state dict (a dict of named tensors)",
                    other.kind()
                )));
            }
        }
        let mut out = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut work = vec![(self.root, String::new(), 0usize)];
        let mut name_bytes = 0usize;
        while let Some((d, prefix, depth)) = work.pop() {
            if !seen.insert(d) {
                continue;
            }
            let Obj::Dict(items) = &self.objs[d] else {
                continue;
            };
            for &(k, v) in items {
                let key = match &self.objs[k] {
                    Obj::Str(s) => s.clone(),
                    Obj::Int(i) => i.to_string(),
                    _ => continue,
                };
                let name = format!("{prefix}{key}");
                if name.len() > MAX_NAME_CHARS {
                    return bad(format!("a tensor name of {} bytes", name.len()));
                }
                name_bytes += name.len();
                if name_bytes > MAX_CELLS * 16 {
                    return bad("the tensor names are too long in total");
                }
                match &self.objs[v] {
                    Obj::Tensor(t) => out.push((name, (**t).clone())),
                    Obj::Dict(_) if depth < MAX_NESTING => work.push((v, name + ".", depth + 1)),
                    _ => {}
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fails(data: &[u8]) -> String {
        match parse(data, 0) {
            Err(Fail::Format(m) | Fail::Refused(m)) => m,
            Ok(_) => panic!("accepted {data:?}"),
        }
    }

    #[test]
    fn small_pickles() {
        // {'a': 1} as protocol 2.
        let (p, end) = parse(b"\x80\x02}q\x00X\x01\x00\x00\x00aq\x01K\x01s.", 0).unwrap();
        assert_eq!(end, 17);
        assert!(p.tensors().unwrap().is_empty());
        // A nested list a million deep is fine to build and drop.
        let mut deep = b"\x80\x02".to_vec();
        for _ in 0..100_000 {
            deep.extend_from_slice(b"]");
        }
        deep.extend(std::iter::repeat_n(b'a', 99_999));
        deep.push(b'.');
        let (p, _) = parse(&deep, 0).unwrap();
        assert!(p.tensors().is_err());
        // A list appended to itself (a cycle): built, refused as a root.
        let (p, _) = parse(b"\x80\x02]q\x00h\x00a.", 0).unwrap();
        assert!(p.tensors().is_err());
    }

    #[test]
    fn refusals_name_what() {
        assert!(fails(b"\x80\x02cos\nsystem\nq\x00.").contains("`os.system`"));
        assert!(fails(b"\x80\x02cbuiltins\neval\n.").contains("`builtins.eval`"));
        let m = fails(b"\x80\x02c__main__\nNet\n)\x81.");
        assert!(
            m.contains("`__main__.Net`") && m.contains("state_dict()"),
            "{m}"
        );
        assert!(fails(b"\x80\x02(i__main__\nX\n.").contains("INST"));
        assert!(fails(b"\x80\x02\x82\x01.").contains("EXT1"));
        assert!(fails(b"\x80\x02X\xff\xff\xff\x7fab.").contains("truncated"));
        assert!(fails(b"\x80\x02h\x05.").contains("memo key 5"));
        assert!(fails(b"\x80\x02.").contains("empty"));
        assert!(fails(b"\x80\x02(.").contains("mark"));
        assert!(fails(b"\x80\x09.").contains("protocol 9"));
    }
}
