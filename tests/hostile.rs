//! Issue 17, findings 2, 3 (npy), 4 and 7, and the npz-duplicate and
//! one-line-error items: hostile `.npy`/`.npz` files are clean errors, fast
//! and within a memory budget. The global allocator below refuses any
//! allocation past 512 MiB of live bytes: a fallible reservation
//! (`try_reserve`) then fails cleanly, an infallible one aborts this test
//! binary — an over-allocation fails the test, never the machine. No test
//! times itself: a parser gone slow shows as a slow test.
//!
//! Zip archives are written by hand here (so two members may share a name
//! and a directory may lie about a size), deflate streams too (fixed
//! Huffman codes: zeros as 258-byte matches, so a 1 GiB member takes 6.8 MB
//! and no time to build).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use lstm_kernels::error::MAX_MESSAGE_PART_CHARS;
use lstm_kernels::{Error, import, io};

// ---------------------------------------------------------------------------
// A global allocator with a budget, and a per-thread peak.

const BUDGET: usize = 512 << 20;
static LIVE: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Bytes allocated minus freed on this thread, and its high-water mark
    /// (const-initialised without destructors: no allocation of their own).
    static HERE: Cell<(isize, isize)> = const { Cell::new((0, 0)) };
}

fn note(delta: isize) {
    let _ = HERE.try_with(|h| {
        let (live, peak) = h.get();
        let live = live + delta;
        h.set((live, peak.max(live)));
    });
}

struct Budget;

// SAFETY: every call is forwarded to `System` with the caller's layout and
// pointer unchanged; the counters only decide whether to forward at all
// (returning null is how an allocator reports failure).
unsafe impl GlobalAlloc for Budget {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size() > BUDGET {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            return std::ptr::null_mut();
        }
        // SAFETY: the caller's layout contract is passed on unchanged.
        let p = unsafe { System.alloc(layout) };
        if p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        } else {
            note(layout.size() as isize);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        note(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old = layout.size();
        if new_size > old
            && LIVE.fetch_add(new_size - old, Ordering::Relaxed) + (new_size - old) > BUDGET
        {
            LIVE.fetch_sub(new_size - old, Ordering::Relaxed);
            return std::ptr::null_mut();
        }
        // SAFETY: `ptr` came from `System` with `layout`; `new_size` is the
        // caller's, under the caller's contract.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if new_size > old {
            if p.is_null() {
                LIVE.fetch_sub(new_size - old, Ordering::Relaxed);
            } else {
                note((new_size - old) as isize);
            }
        } else if !p.is_null() {
            LIVE.fetch_sub(old - new_size, Ordering::Relaxed);
            note(-((old - new_size) as isize));
        }
        p
    }
}

#[global_allocator]
static ALLOC: Budget = Budget;

/// Runs `f` and returns its result and the most bytes this thread held
/// beyond what it held before.
fn peak_of<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let start = HERE.with(|h| {
        let (live, _) = h.get();
        h.set((live, live));
        live
    });
    let out = f();
    let peak = HERE.with(|h| h.get().1);
    (out, (peak - start).max(0) as usize)
}

// ---------------------------------------------------------------------------
// Hand-made npy, deflate and zip bytes.

/// An npy file: `\x93NUMPY`, version `major`.0, the header text as given
/// (padded to 64 bytes with spaces and a newline when `pad`), then `data`.
fn npy_raw(major: u8, dict: &str, pad: bool, data: &[u8]) -> Vec<u8> {
    let pre = if major == 1 { 10 } else { 12 };
    let mut text = dict.to_string();
    if pad {
        while !(pre + text.len() + 1).is_multiple_of(64) {
            text.push(' ');
        }
        text.push('\n');
    }
    let mut v = b"\x93NUMPY".to_vec();
    v.extend([major, 0]);
    if major == 1 {
        v.extend((text.len() as u16).to_le_bytes());
    } else {
        v.extend((text.len() as u32).to_le_bytes());
    }
    v.extend(text.as_bytes());
    v.extend(data);
    v
}

/// A little-endian float32 C-order npy of `shape`, with `data` as bytes.
fn npy_f32(shape: &str, data: &[f32]) -> Vec<u8> {
    let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    npy_raw(
        1,
        &format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}"),
        true,
        &bytes,
    )
}

fn crc32(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0xEDB8_8320
            } else {
                c >> 1
            };
        }
    }
    !c
}

/// A deflate bit stream (LSB first) with the fixed Huffman codes.
#[derive(Default)]
struct Bits {
    out: Vec<u8>,
    acc: u64,
    n: u32,
}

impl Bits {
    fn put(&mut self, v: u32, bits: u32) {
        self.acc |= u64::from(v) << self.n;
        self.n += bits;
        while self.n >= 8 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.n -= 8;
        }
    }

    /// A Huffman code, most significant bit first.
    fn code(&mut self, code: u32, len: u32) {
        let rev = (0..len).fold(0, |r, i| r | (((code >> i) & 1) << (len - 1 - i)));
        self.put(rev, len);
    }

    fn literal(&mut self, b: u8) {
        let b = u32::from(b);
        if b < 144 {
            self.code(0x30 + b, 8);
        } else {
            self.code(0x190 + b - 144, 9);
        }
    }
}

/// A raw deflate stream of `prefix` (as literals) then `zeros` zero bytes
/// (as length-258, distance-1 matches).
fn deflate(prefix: &[u8], zeros: usize) -> Vec<u8> {
    let mut b = Bits::default();
    b.put(1, 1); // last block
    b.put(1, 2); // fixed Huffman codes
    for &c in prefix {
        b.literal(c);
    }
    let mut left = zeros;
    if left > 0 {
        b.literal(0);
        left -= 1;
    }
    while left >= 258 {
        b.code(0xC5, 8); // length 258 (code 285)
        b.code(0, 5); // distance 1
        left -= 258;
    }
    for _ in 0..left {
        b.literal(0);
    }
    b.code(0, 7); // end of block
    if b.n > 0 {
        b.out.push(b.acc as u8);
    }
    b.out
}

/// One zip member as written: name, method (0 stored, 8 deflated), the
/// bytes stored, and the uncompressed size and CRC the directory gives.
struct Member {
    name: String,
    method: u16,
    payload: Vec<u8>,
    size: u32,
    crc: u32,
}

impl Member {
    fn stored(name: &str, bytes: Vec<u8>) -> Member {
        Member {
            name: name.into(),
            method: 0,
            size: bytes.len() as u32,
            crc: crc32(&bytes),
            payload: bytes,
        }
    }

    fn deflated(name: &str, bytes: &[u8]) -> Member {
        Member {
            name: name.into(),
            method: 8,
            payload: deflate(bytes, 0),
            size: bytes.len() as u32,
            crc: crc32(bytes),
        }
    }

    /// `prefix` then `zeros` zero bytes, deflated; the directory tells the
    /// true size (the CRC is left 0: computing it over a GiB would take
    /// longer than the test, and a reader that gets that far has failed).
    fn bomb(name: &str, prefix: &[u8], zeros: usize) -> Member {
        Member {
            name: name.into(),
            method: 8,
            payload: deflate(prefix, zeros),
            size: (prefix.len() + zeros) as u32,
            crc: 0,
        }
    }

    /// The same member with the directory claiming `size` bytes.
    fn claiming(mut self, size: usize) -> Member {
        self.size = size as u32;
        self
    }
}

fn zip_bytes(members: &[Member]) -> Vec<u8> {
    let (mut out, mut dir) = (Vec::new(), Vec::new());
    let u16le = |v: &mut Vec<u8>, x: u16| v.extend(x.to_le_bytes());
    let u32le = |v: &mut Vec<u8>, x: u32| v.extend(x.to_le_bytes());
    for m in members {
        let offset = out.len() as u32;
        u32le(&mut out, 0x0403_4b50);
        u16le(&mut out, 20); // version needed
        u16le(&mut out, 0); // flags
        u16le(&mut out, m.method);
        u16le(&mut out, 0); // time
        u16le(&mut out, 0x21); // date: 1980-01-01
        u32le(&mut out, m.crc);
        u32le(&mut out, m.payload.len() as u32);
        u32le(&mut out, m.size);
        u16le(&mut out, m.name.len() as u16);
        u16le(&mut out, 0); // extra
        out.extend(m.name.as_bytes());
        out.extend(&m.payload);

        u32le(&mut dir, 0x0201_4b50);
        u16le(&mut dir, 20); // made by
        u16le(&mut dir, 20); // needed
        u16le(&mut dir, 0);
        u16le(&mut dir, m.method);
        u16le(&mut dir, 0);
        u16le(&mut dir, 0x21);
        u32le(&mut dir, m.crc);
        u32le(&mut dir, m.payload.len() as u32);
        u32le(&mut dir, m.size);
        u16le(&mut dir, m.name.len() as u16);
        u16le(&mut dir, 0); // extra
        u16le(&mut dir, 0); // comment
        u16le(&mut dir, 0); // disk
        u16le(&mut dir, 0); // internal attributes
        u32le(&mut dir, 0); // external attributes
        u32le(&mut dir, offset);
        dir.extend(m.name.as_bytes());
    }
    let dir_offset = out.len() as u32;
    out.extend(&dir);
    u32le(&mut out, 0x0605_4b50);
    u16le(&mut out, 0);
    u16le(&mut out, 0);
    u16le(&mut out, members.len() as u16);
    u16le(&mut out, members.len() as u16);
    u32le(&mut out, dir.len() as u32);
    u32le(&mut out, dir_offset);
    u16le(&mut out, 0);
    out
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// The error's message, which must be one line and short.
fn message<T: std::fmt::Debug>(r: Result<T, Error>) -> String {
    let e = r.unwrap_err().to_string();
    assert!(!e.contains('\n') && !e.contains('\r'), "not one line: {e}");
    assert!(
        e.chars().count() <= 4 * MAX_MESSAGE_PART_CHARS,
        "{} characters",
        e.chars().count()
    );
    e
}

/// A small PyTorch nn.LSTM layer 0 (3 inputs, hidden 2) as npz members
/// under `lstm.`.
fn pytorch_members() -> Vec<Member> {
    let vals = |n: usize, k: f32| (0..n).map(|i| (i as f32 * 0.37 + k).sin()).collect();
    let arrays: [(&str, Vec<usize>, Vec<f32>); 4] = [
        ("weight_ih_l0", vec![8, 3], vals(24, 0.1)),
        ("weight_hh_l0", vec![8, 2], vals(16, 0.2)),
        ("bias_ih_l0", vec![8], vals(8, 0.3)),
        ("bias_hh_l0", vec![8], vals(8, 0.4)),
    ];
    arrays
        .iter()
        .map(|(n, s, d)| {
            Member::stored(&format!("lstm.{n}.npy"), io::npy_file_bytes(s, d).unwrap())
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Headers: time, depth, size.

/// Finding 2: a `shape` list nested 22 deep took `py_literal` ~30 s (×4
/// per two levels: 2 s at 18); now an error after one pass over the
/// header, naming the file and the array. Nested tuples likewise.
#[test]
fn a_nested_shape_is_an_error_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    for shape in [
        format!("{}1{}", "[".repeat(22), "]".repeat(22)),
        format!("({}1{},)", "[".repeat(22), "]".repeat(22)),
        nested_tuple(22),
    ] {
        let dict = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}}}");
        let p = write(tmp.path(), "deep.npy", &npy_raw(1, &dict, true, &[0; 4]));
        let e = message(io::read_npy(&p));
        assert!(
            e.contains("'shape'") && e.contains("deep.npy") && e.contains("`deep`"),
            "{e}"
        );
    }
}

/// `((…(2,),…),)`, `depth` tuples deep.
fn nested_tuple(depth: usize) -> String {
    format!("{}2,{})", "(".repeat(depth), "),".repeat(depth - 1))
}

/// Finding 2: a tuple nested 5,000 deep (15 KB) overflowed the stack; a
/// list as deep never finished.
#[test]
fn a_tuple_nested_5000_deep_is_an_error_not_a_stack_overflow() {
    let tmp = tempfile::tempdir().unwrap();
    for shape in [
        nested_tuple(5000),
        format!("{}1{}", "[".repeat(5000), "]".repeat(5000)),
    ] {
        let dict = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}}}");
        let p = write(tmp.path(), "x.npy", &npy_raw(1, &dict, true, &[0; 8]));
        let e = message(io::read_npy(&p));
        assert!(e.contains("'shape'"), "{e}");
        // The same inside an npz member: the archive fails to open.
        let z = write(
            tmp.path(),
            "w.npz",
            &zip_bytes(&[Member::stored("w_i.npy", npy_raw(1, &dict, true, &[0; 8]))]),
        );
        let e = message(io::read_npz(&z).map(drop));
        assert!(e.contains("'shape'") && e.contains("`w_i`"), "{e}");
    }
}

/// Finding 3: `[2^32, 2^32, 7]` with no body aborted on an 80 GiB
/// allocation; a shape whose bytes fit in memory but not in the file is
/// compared with the file before anything is allocated.
#[test]
fn shapes_larger_than_the_file_are_errors_before_allocation() {
    let tmp = tempfile::tempdir().unwrap();
    let p = write(
        tmp.path(),
        "x.npy",
        &npy_f32(&format!("({}, {}, 7)", 1u64 << 32, 1u64 << 32), &[]),
    );
    let e = message(io::read_npy(&p));
    assert!(e.contains("more elements than memory"), "{e}");
    // Beyond the per-tensor limit (28 TiB): refused from the header.
    std::fs::write(
        &p,
        npy_f32(&format!("({}, {}, 7)", 1u64 << 20, 1u64 << 20), &[1.0, 2.0]),
    )
    .unwrap();
    let e = message(io::read_npy(&p));
    assert!(e.contains("exceeds the limit"), "{e}");
    // 256 MiB declared (within the limit), 8 bytes there.
    std::fs::write(&p, npy_f32(&format!("({}, 64)", 1u64 << 20), &[1.0, 2.0])).unwrap();
    let (r, peak) = peak_of(|| io::read_npy(&p));
    let e = message(r);
    assert!(
        e.contains("truncated") && e.contains("8 bytes of data"),
        "{e}"
    );
    assert!(peak < 1 << 20, "{peak} bytes held");
    // The same for sequence lengths.
    std::fs::write(
        &p,
        npy_raw(
            1,
            &format!(
                "{{'descr': '<i8', 'fortran_order': False, 'shape': ({},), }}",
                1u64 << 30
            ),
            true,
            &[0; 16],
        ),
    )
    .unwrap();
    assert!(message(io::read_npy_lengths(&p)).contains("truncated"));
}

/// A file that really holds more data than memory can take (here: over
/// the 512 MiB budget, a sparse 1 GiB file) is an `Error::Alloc`, not an
/// abort.
#[test]
fn an_array_beyond_memory_is_an_alloc_error() {
    let tmp = tempfile::tempdir().unwrap();
    let p = write(
        tmp.path(),
        "big.npy",
        &npy_f32(&format!("({},)", 1u64 << 28), &[]),
    );
    let f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
    f.set_len(std::fs::metadata(&p).unwrap().len() + (1 << 30))
        .unwrap();
    match io::read_npy(&p) {
        Err(e @ Error::Alloc { .. }) => {
            let m = e.to_string();
            assert!(
                m.contains("cannot allocate 1073741824 bytes") && m.contains("`big`"),
                "{m}"
            );
        }
        other => panic!("{:?}", other.map(|t| t.shape)),
    }
}

/// Finding 3: `--weights /dev/zero` (no extension: sniffed, then read as
/// safetensors) read until allocation failed; a file that is not a regular
/// one is now read only after its header length and header check out.
#[test]
fn an_endless_device_is_an_error_at_once() {
    let zero = Path::new("/dev/zero");
    if !zero.exists() {
        return;
    }
    let (r, peak) = peak_of(|| io::read_tensors(zero).map(drop));
    let e = message(r);
    assert!(e.contains("/dev/zero") && e.contains("header"), "{e}");
    assert!(peak < 1 << 20, "{peak} bytes held");
    let e = message(io::read_npy(zero));
    assert!(e.contains("/dev/zero"), "{e}");
}

/// Issue 17 review: a pipe carrying a valid safetensors header followed by
/// endless zeros was read until memory ran out; now no further than the
/// header's data offsets (then an error: more data than declared). The same
/// for an npy whose shape is beyond the per-tensor limit.
#[cfg(unix)]
#[test]
fn pipes_are_read_no_further_than_their_headers_say() {
    use std::io::Write;
    let tmp = tempfile::tempdir().unwrap();
    let fifo = tmp.path().join("w.safetensors");
    let ok = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(ok.success());
    let header = br#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#;
    let writer = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            let mut f = std::fs::OpenOptions::new().write(true).open(fifo).unwrap();
            let _ = f.write_all(&(header.len() as u64).to_le_bytes());
            let _ = f.write_all(header);
            // Endless zeros, until the reader closes the pipe (the write
            // fails then; at most 64 MiB, so a broken reader cannot hang).
            let zeros = vec![0u8; 1 << 16];
            for _ in 0..1024 {
                if f.write_all(&zeros).is_err() {
                    break;
                }
            }
        })
    };
    let (r, peak) = peak_of(|| io::read_safetensors(&fifo).map(drop));
    let e = message(r);
    assert!(e.contains("w.safetensors"), "{e}");
    assert!(peak < 1 << 20, "{peak} bytes held");
    writer.join().unwrap();
    // An npy shape beyond the limit is refused from its header.
    let p = write(
        tmp.path(),
        "big.npy",
        &npy_f32(&format!("({}, 4)", 1u64 << 30), &[]),
    );
    assert!(message(io::read_npy(&p)).contains("exceeds the limit"));
}

/// Finding 3: an npy v2 `header_len` near 4 GiB was allocated before the
/// (short) header was read.
#[test]
fn a_huge_header_length_is_an_error_before_allocation() {
    let tmp = tempfile::tempdir().unwrap();
    let mut bytes = b"\x93NUMPY\x02\x00".to_vec();
    bytes.extend(0xFFFF_FFF0u32.to_le_bytes());
    bytes.extend(b"{'descr': '<f4'");
    let p = write(tmp.path(), "x.npy", &bytes);
    let (r, peak) = peak_of(|| io::read_npy(&p));
    let e = message(r);
    assert!(e.contains("4294967280") && e.contains("65536"), "{e}");
    assert!(peak < 1 << 20, "{peak} bytes held");
}

/// Finding 7: `[2^63+2, 2, 7]` over 28 floats wrapped around to 28
/// elements: the run exited 0 and wrote a lying header. Now an error.
#[test]
fn a_shape_product_that_overflows_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let data: Vec<f32> = (0..28).map(|i| i as f32).collect();
    let p = write(
        tmp.path(),
        "x.npy",
        &npy_f32(&format!("({}, 2, 7)", (1u64 << 63) + 2), &data),
    );
    let e = message(io::read_npy(&p));
    assert!(
        e.contains("x.npy") && e.contains("`x`") && e.contains("9223372036854775810"),
        "{e}"
    );
}

/// Bytes after the data were ignored (plain files and npz members).
#[test]
fn bytes_after_the_data_are_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let data: Vec<f32> = (0..7).map(|i| i as f32).collect();
    let p = write(tmp.path(), "x.npy", &npy_f32("(2, 3)", &data));
    let e = message(io::read_npy(&p));
    assert!(e.contains("4 bytes after"), "{e}");
    let z = write(
        tmp.path(),
        "w.npz",
        &zip_bytes(&[Member::deflated("x.npy", &npy_f32("(2, 3)", &data))]),
    );
    let e = message(io::read_npz(&z).and_then(|f| f.get("x").cloned()));
    assert!(e.contains("4 bytes after") && e.contains("`x`"), "{e}");
}

/// The README promises one-line errors: the parser's were multi-line
/// dumps, and a 1e6-dimension header made a 3 MB message.
#[test]
fn errors_are_one_short_line() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cases = vec![
        "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3x)}".to_string(),
        "{'descr': '<f4',\n 'fortran_order': False,\n 'shape': (2,\n 3), 'what': 1}".into(),
        "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,)}".into(),
        "{'descr': '<f4', 'fortran_order': False, 'shape': (2,)} trailing".into(),
    ];
    // A million dimensions (3 MB): over the header cap.
    cases.push(format!(
        "{{'descr': '<f4', 'fortran_order': False, 'shape': ({}), }}",
        "1, ".repeat(1_000_000)
    ));
    // Ten thousand (30 KB, under the cap): over the dimension cap.
    cases.push(format!(
        "{{'descr': '<f4', 'fortran_order': False, 'shape': ({}), }}",
        "1, ".repeat(10_000)
    ));
    for dict in &cases {
        let p = write(tmp.path(), "x.npy", &npy_raw(2, dict, true, &[0; 24]));
        let e = message(io::read_npy(&p));
        assert!(e.contains("x.npy") && e.contains("`x`"), "{e}");
    }
    // A shape error about a 100,000-dimension tensor (safetensors allows
    // it): the message shows 16 dimensions and the count.
    let dims = vec![1usize; 100_000];
    let p = tmp.path().join("w.safetensors");
    io::write_safetensors(&p, &[("w_i", &dims, &[0.5])]).unwrap();
    let e = message(io::load_seed_weights(&p));
    assert!(e.contains("100000 dimensions"), "{e}");
    // Any part of any message is capped, and newlines become spaces.
    let e = Error::Invalid(format!("a\nb{}", "x".repeat(100_000))).to_string();
    assert!(!e.contains('\n') && e.chars().count() < MAX_MESSAGE_PART_CHARS + 30);
    // Cut in the middle: the start and the end survive.
    assert!(
        e.contains('…') && e.starts_with("invalid argument: a b"),
        "{e}"
    );
}

// ---------------------------------------------------------------------------
// npz: bombs, laziness, duplicates.

/// Finding 4: a member whose header declares 100 floats but whose stream
/// inflates to 256 MiB. With the directory telling the truth the sizes
/// disagree before anything is inflated; with the directory lying too,
/// reading stops one byte past the 400 declared.
#[test]
fn a_member_inflating_past_its_declared_size_is_an_error_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let header = npy_f32("(100,)", &[]);
    let zeros = 256 << 20;
    for (lies, member) in [
        (false, Member::bomb("x.npy", &header, zeros)),
        (
            true,
            Member::bomb("x.npy", &header, zeros).claiming(header.len() + 400),
        ),
    ] {
        let p = write(tmp.path(), "bomb.npz", &zip_bytes(&[member]));
        let f = io::read_npz(&p).unwrap();
        assert_eq!(f.shape("x").unwrap(), [100]);
        let (r, peak) = peak_of(|| f.get("x").cloned());
        let e = message(r);
        assert!(e.contains("`x`") && e.contains("bomb.npz"), "{e}");
        if lies {
            assert!(e.contains("larger than") || e.contains("more bytes"), "{e}");
        } else {
            assert!(e.contains("bytes after"), "{e}");
        }
        assert!(peak < 4 << 20, "{peak} bytes held");
    }
}

/// Finding 4: members the format never reads are never inflated: a 1 GiB
/// bomb beside PyTorch weights (outside the prefix) or seed weights, and an
/// int64 counter the format never reads, cost nothing (and over the
/// 512 MiB budget, inflating the bomb would fail the test).
#[test]
fn members_the_format_does_not_read_are_never_inflated() {
    let tmp = tempfile::tempdir().unwrap();
    let gib = 1usize << 30;
    let bomb_header = npy_f32(&format!("({},)", gib / 4), &[]);
    let mut members = pytorch_members();
    members.push(Member::bomb("other.big.npy", &bomb_header, gib));
    members.push(Member::stored(
        "bn.num_batches_tracked.npy",
        npy_raw(
            1,
            "{'descr': '<i8', 'fortran_order': False, 'shape': (), }",
            true,
            &7i64.to_le_bytes(),
        ),
    ));
    let p = write(tmp.path(), "w.npz", &zip_bytes(&members));
    let (stack, peak) = peak_of(|| import::pytorch_stack(&p, "lstm.").unwrap());
    assert_eq!((stack.input_size(), stack.output_size()), (3, 2));
    assert!(peak < 16 << 20, "{peak} bytes held");
    let (r, peak) = peak_of(|| import::pytorch(&p, "lstm."));
    r.unwrap();
    assert!(peak < 16 << 20, "{peak} bytes held");
    // Asked for, the int64 member is a dtype error naming it.
    let f = io::read_npz(&p).unwrap();
    assert_eq!(f.dtype("bn.num_batches_tracked").unwrap(), "<i8");
    assert!(matches!(
        f.get("bn.num_batches_tracked"),
        Err(Error::Dtype { tensor, .. }) if tensor == "bn.num_batches_tracked"
    ));

    // Seed weights with the bomb under an unknown name: the name is the
    // error, nothing is inflated.
    let seed =
        io::read_npz(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/seed/weights.npz"))
            .unwrap();
    let mut members: Vec<Member> = seed
        .names()
        .map(|n| {
            let t = seed.get(n).unwrap();
            Member::stored(
                &format!("{n}.npy"),
                io::npy_file_bytes(&t.shape, &t.data).unwrap(),
            )
        })
        .collect();
    members.push(Member::bomb("zz.npy", &bomb_header, gib));
    let p = write(tmp.path(), "seed.npz", &zip_bytes(&members));
    let (r, peak) = peak_of(|| io::load_seed_weights(&p));
    assert!(
        matches!(&r, Err(Error::UnexpectedTensor { tensor, .. }) if tensor == "zz"),
        "{r:?}"
    );
    assert!(peak < 16 << 20, "{peak} bytes held");
    // A bomb under a seed name whose header shape is wrong: the shape is
    // the error, from the header, before any data is read.
    members.pop();
    members.retain(|m| m.name != "v_o.npy");
    members.push(Member::bomb("v_o.npy", &bomb_header, gib));
    let p = write(tmp.path(), "seed.npz", &zip_bytes(&members));
    let (r, peak) = peak_of(|| io::load_seed_weights(&p));
    assert!(
        matches!(&r, Err(Error::Shape { tensor, .. }) if tensor == "v_o"),
        "{r:?}"
    );
    assert!(peak < 16 << 20, "{peak} bytes held");
}

/// A directory that claims more than deflate can produce from the
/// compressed bytes (1032:1) is an error before the output is allocated.
#[test]
fn a_directory_claiming_an_impossible_size_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let header = npy_f32(&format!("({},)", 1u64 << 28), &[]);
    let member = Member::bomb("x.npy", &header, 1000).claiming(header.len() + (1 << 30));
    let p = write(tmp.path(), "w.npz", &zip_bytes(&[member]));
    let f = io::read_npz(&p).unwrap();
    let (r, peak) = peak_of(|| f.get("x").cloned());
    let e = message(r);
    assert!(e.contains("can inflate to"), "{e}");
    assert!(peak < 1 << 20, "{peak} bytes held");
}

/// Two members of one name: the last won silently. Now an error naming it.
#[test]
fn duplicate_members_are_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let a = || Member::stored("w_i.npy", npy_f32("(2,)", &[1.0, 2.0]));
    let p = write(
        tmp.path(),
        "w.npz",
        &zip_bytes(&[a(), Member::stored("b.npy", npy_f32("(1,)", &[0.0])), a()]),
    );
    let e = message(io::read_npz(&p).map(drop));
    assert!(e.contains("`w_i`") && e.contains("two members"), "{e}");
    let p = write(
        tmp.path(),
        "w.npz",
        &zip_bytes(&[a(), Member::stored("w_i", npy_f32("(2,)", &[1.0, 2.0]))]),
    );
    let e = message(io::read_npz(&p).map(drop));
    assert!(e.contains("`w_i`") && e.contains("two members"), "{e}");
}

// ---------------------------------------------------------------------------
// Valid files still read, bit for bit.

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn valid_files_read_bit_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    // Awkward values: signed zero, subnormal, infinities, a NaN payload.
    let data: Vec<f32> = vec![
        1.5,
        -0.0,
        f32::from_bits(1),
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::from_bits(0x7fc0_1234),
        std::f32::consts::PI,
        -1e-30,
        3.0e38,
        0.1,
        -7.25,
        42.0,
    ];
    let shape = [3usize, 4];
    // The crate's own writer, read back.
    let p = tmp.path().join("x.npy");
    io::write_npy(&p, &shape, &data).unwrap();
    let t = io::read_npy(&p).unwrap();
    assert_eq!(
        (t.shape.as_slice(), bits(&t.data)),
        (&shape[..], bits(&data))
    );
    let written = std::fs::read(&p).unwrap();

    let le = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
    let dict = |descr: &str, fortran: bool, shape: &str| {
        let f = if fortran { "True" } else { "False" };
        format!("{{'descr': '{descr}', 'fortran_order': {f}, 'shape': {shape}, }}")
    };
    // Fortran order: column-major bytes of the same matrix.
    let mut fort = Vec::new();
    for j in 0..4 {
        for i in 0..3 {
            fort.push(data[i * 4 + j]);
        }
    }
    // float64 of exactly representable values, both byte orders.
    let f64le: Vec<u8> = data
        .iter()
        .flat_map(|&x| (x as f64).to_le_bytes())
        .collect();
    let f64be: Vec<u8> = data
        .iter()
        .flat_map(|&x| (x as f64).to_be_bytes())
        .collect();
    let f32be: Vec<u8> = data.iter().flat_map(|x| x.to_be_bytes()).collect();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "fortran",
            npy_raw(1, &dict("<f4", true, "(3, 4)"), true, &le(&fort)),
        ),
        (
            "v2",
            npy_raw(2, &dict("<f4", false, "(3, 4)"), true, &le(&data)),
        ),
        (
            "v3",
            npy_raw(3, &dict("<f4", false, "(3, 4)"), true, &le(&data)),
        ),
        (
            "f8",
            npy_raw(1, &dict("<f8", false, "(3, 4)"), true, &f64le),
        ),
        (
            "f8be",
            npy_raw(1, &dict(">f8", false, "(3, 4)"), true, &f64be),
        ),
        (
            "f4be",
            npy_raw(1, &dict(">f4", false, "(3, 4)"), true, &f32be),
        ),
        (
            "native",
            npy_raw(1, &dict("=f4", false, "(3, 4)"), true, &le(&data)),
        ),
        (
            "quotes",
            npy_raw(
                1,
                "{\"shape\": (3,4), \"descr\": \"<f4\", \"fortran_order\": False}",
                false,
                &le(&data),
            ),
        ),
    ];
    for (name, bytes) in &cases {
        let p = write(tmp.path(), &format!("{name}.npy"), bytes);
        let t = io::read_npy(&p).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(t.shape, shape, "{name}");
        // NaN payloads survive f32 → f64 → f32 too.
        assert_eq!(bits(&t.data), bits(&data), "{name}");
    }
    // 0-d and empty arrays.
    let p = write(tmp.path(), "s.npy", &npy_f32("()", &[2.5]));
    assert_eq!(
        io::read_npy(&p).unwrap(),
        io::Tensor::new(vec![], vec![2.5]).unwrap()
    );
    let p = write(tmp.path(), "e.npy", &npy_f32("(0, 5)", &[]));
    assert_eq!(io::read_npy(&p).unwrap().shape, [0, 5]);

    // npz: the crate's writer, and hand-made stored and deflated members
    // (the bytes the crate wrote, and a Fortran one).
    let p = tmp.path().join("w.npz");
    io::write_npz(&p, &[("a", &shape, &data)]).unwrap();
    assert_eq!(
        bits(&io::read_npz(&p).unwrap().get("a").unwrap().data),
        bits(&data)
    );
    let p = write(
        tmp.path(),
        "h.npz",
        &zip_bytes(&[
            Member::stored("a.npy", written.clone()),
            Member::deflated("b.npy", &written),
            Member::deflated("dir/c.npy", &cases[0].1),
        ]),
    );
    let mut f = io::read_npz(&p).unwrap();
    assert_eq!(f.names().collect::<Vec<_>>(), ["a", "b", "dir/c"]);
    assert_eq!(f.shape("b").unwrap(), shape);
    for n in ["a", "b", "dir/c"] {
        assert_eq!(bits(&f.get(n).unwrap().data), bits(&data), "{n}");
    }
    assert_eq!(bits(&f.take("b").unwrap().data), bits(&data));
    assert!(!f.contains("b") && f.contains("a"));

    // Lengths: every integer dtype.
    for (descr, bytes) in [
        (
            "<i8",
            [3i64, 0, 9]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect::<Vec<u8>>(),
        ),
        (
            "<i4",
            [3i32, 0, 9].iter().flat_map(|v| v.to_le_bytes()).collect(),
        ),
        (
            "<u8",
            [3u64, 0, 9].iter().flat_map(|v| v.to_le_bytes()).collect(),
        ),
        (
            "<u4",
            [3u32, 0, 9].iter().flat_map(|v| v.to_le_bytes()).collect(),
        ),
        (
            ">i8",
            [3i64, 0, 9].iter().flat_map(|v| v.to_be_bytes()).collect(),
        ),
        (
            "<f8",
            [3f64, 0., 9.]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
    ] {
        let p = write(
            tmp.path(),
            "l.npy",
            &npy_raw(1, &dict(descr, false, "(3,)"), true, &bytes),
        );
        assert_eq!(io::read_npy_lengths(&p).unwrap(), [3, 0, 9], "{descr}");
    }
}

/// A `TensorFile` can be shared across threads (the archive is behind a
/// lock; each tensor is read once).
#[test]
fn tensor_files_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<io::TensorFile>();
    let tmp = tempfile::tempdir().unwrap();
    let p = write(tmp.path(), "w.npz", &zip_bytes(&pytorch_members()));
    let f = io::read_npz(&p).unwrap();
    let got: Vec<Vec<u32>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4)
            .map(|_| s.spawn(|| bits(&f.get("lstm.weight_ih_l0").unwrap().data)))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(got.windows(2).all(|w| w[0] == w[1]));
}

// ---------------------------------------------------------------------------
// torch.save files (issue 16): a restricted unpickler over hostile pickles,
// storages that do not hold their tensors, truncations.

/// A protocol-2 pickle, written op by op.
struct Pk(Vec<u8>);

impl Pk {
    fn new() -> Pk {
        Pk(vec![0x80, 2])
    }
    fn op(mut self, b: &[u8]) -> Pk {
        self.0.extend_from_slice(b);
        self
    }
    fn s(self, v: &str) -> Pk {
        let mut p = self.op(b"X").op(&(v.len() as u32).to_le_bytes());
        p.0.extend_from_slice(v.as_bytes());
        p
    }
    fn int(self, v: u64) -> Pk {
        self.op(b"\x8a\x08").op(&v.to_le_bytes())
    }
    fn global(self, module: &str, name: &str) -> Pk {
        self.op(format!("c{module}\n{name}\n").as_bytes())
    }
    fn ints(self, v: &[u64]) -> Pk {
        let mut p = self.op(b"(");
        for &d in v {
            p = p.int(d);
        }
        p.op(b"t")
    }
    /// `_rebuild_tensor_v2(('storage', FloatStorage, key, 'cpu', numel),
    /// offset, shape, stride, False, OrderedDict())`.
    fn tensor(self, key: &str, numel: u64, offset: u64, shape: &[u64], stride: &[u64]) -> Pk {
        self.global("torch._utils", "_rebuild_tensor_v2")
            .op(b"((")
            .s("storage")
            .global("torch", "FloatStorage")
            .s(key)
            .s("cpu")
            .int(numel)
            .op(b"tQ")
            .int(offset)
            .ints(shape)
            .ints(stride)
            .op(b"\x89")
            .global("collections", "OrderedDict")
            .op(b")Rt")
            .op(b"R")
    }
    fn done(self) -> Vec<u8> {
        self.op(b".").0
    }
}

/// A zip `torch.save` file: `archive/data.pkl`, `archive/byteorder` and
/// `archive/data/<key>` for each storage.
fn torch_zip(pkl: Vec<u8>, storages: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut m = vec![
        Member::stored("archive/data.pkl", pkl),
        Member::stored("archive/byteorder", b"little".to_vec()),
    ];
    for (k, b) in storages {
        m.push(Member::stored(&format!("archive/data/{k}"), b.clone()));
    }
    zip_bytes(&m)
}

fn floats(n: usize) -> Vec<u8> {
    (0..n)
        .flat_map(|i| (i as f32 + 0.5).to_le_bytes())
        .collect()
}

/// `{name: tensor}` from `Pk::tensor`'s arguments.
fn one_tensor(key: &str, numel: u64, offset: u64, shape: &[u64], stride: &[u64]) -> Vec<u8> {
    Pk::new()
        .op(b"}(")
        .s("w")
        .tensor(key, numel, offset, shape, stride)
        .op(b"u")
        .done()
}

/// The members of a golden zip save: (name, bytes).
fn zip_members(path: &Path) -> Vec<(String, Vec<u8>)> {
    let mut z = zip::ZipArchive::new(std::fs::File::open(path).unwrap()).unwrap();
    (0..z.len())
        .map(|i| {
            let mut f = z.by_index(i).unwrap();
            let mut v = Vec::new();
            std::io::Read::read_to_end(&mut f, &mut v).unwrap();
            (f.name().unwrap().to_string(), v)
        })
        .collect()
}

fn golden_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(rel)
}

/// Every prefix of a legacy save, of a zip save, and of a zip save's
/// `data.pkl` (re-zipped with its storages): an error or, for a prefix
/// that is a whole valid file, the tensors; never a panic.
#[test]
fn torch_files_truncated_at_every_byte_are_errors() {
    for rel in [
        "frameworks/torch_pt_legacy/weights.pt",
        "frameworks/torch_pt_lstm/weights.pt",
    ] {
        let bytes = std::fs::read(golden_file(rel)).unwrap();
        for cut in 0..bytes.len() {
            let r = io::read_tensors_from_bytes(&bytes[..cut], "cut.pt");
            assert!(r.is_err(), "{rel} cut at {cut} loaded");
            message(r);
        }
        assert!(io::read_tensors_from_bytes(&bytes, "whole.pt").is_ok());
    }
    let members = zip_members(&golden_file("frameworks/torch_pt_lstm/weights.pt"));
    let (pkl_name, pkl) = members
        .iter()
        .find(|(n, _)| n.ends_with("data.pkl"))
        .unwrap();
    for cut in 0..pkl.len() {
        let m: Vec<Member> = members
            .iter()
            .map(|(n, b)| {
                let b = if n == pkl_name {
                    b[..cut].to_vec()
                } else {
                    b.clone()
                };
                Member::stored(n, b)
            })
            .collect();
        let r = io::read_tensors_from_bytes(&zip_bytes(&m), "m.pt");
        let e = message(r);
        assert!(e.contains("data.pkl") && e.contains("m.pt"), "{e}");
    }
}

/// Globals other than a state dict's, and opcodes a state dict's pickle
/// never has, are refused by name before anything else happens.
#[test]
fn unexpected_opcodes_and_globals_are_refused_by_name() {
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            Pk::new()
                .global("os", "system")
                .s("echo hi")
                .op(b"\x85R")
                .done(),
            "`os.system`",
        ),
        (Pk::new().global("posix", "system").done(), "`posix.system`"),
        (
            Pk::new().global("builtins", "eval").done(),
            "`builtins.eval`",
        ),
        (
            Pk::new().global("builtins", "getattr").done(),
            "`builtins.getattr`",
        ),
        (
            Pk::new().global("subprocess", "Popen").done(),
            "`subprocess.Popen`",
        ),
        (Pk::new().global("torch", "load").done(), "`torch.load`"),
        (
            Pk::new().global("torch._utils", "_rebuild_qtensor").done(),
            "`torch._utils._rebuild_qtensor`",
        ),
        // STACK_GLOBAL (protocol 4), from strings.
        (
            b"\x80\x04\x8c\x08builtins\x8c\x04exec\x93.".to_vec(),
            "`builtins.exec`",
        ),
        // Whole models: the advice to save the state dict.
        (
            Pk::new()
                .global("torch.nn.modules.rnn", "LSTM")
                .op(b")\x81")
                .done(),
            "model.state_dict()",
        ),
        (
            Pk::new().global("__main__", "Net").done(),
            "model.state_dict()",
        ),
        // Opcodes that build arbitrary objects.
        (Pk::new().op(b"(ios\nsystem\n").done(), "INST"),
        (
            Pk::new()
                .global("collections", "OrderedDict")
                .op(b")\x81")
                .done(),
            "NEWOBJ",
        ),
        (
            Pk::new()
                .op(b"(")
                .global("collections", "OrderedDict")
                .op(b"o")
                .done(),
            "OBJ",
        ),
        (Pk::new().op(b"\x82\x01").done(), "EXT1"),
        (Pk::new().op(b"\x83\x01\x00").done(), "EXT2"),
        (Pk::new().op(b"Pstorage\n").done(), "PERSID"),
        (Pk::new().op(b"I1\n").done(), "INT"),
        (Pk::new().op(b"\x8f").done(), "EMPTY_SET"),
        (Pk::new().op(b"\x97").done(), "NEXT_BUFFER"),
        (Pk::new().op(b"\xff").done(), "unknown opcode"),
        // Calls of what is not a known callable.
        (Pk::new().s("os").op(b")R").done(), "REDUCE"),
        (
            Pk::new().global("torch", "FloatStorage").op(b")R").done(),
            "storage",
        ),
        // BUILD on anything but an OrderedDict.
        (Pk::new().op(b"]}b").done(), "BUILD"),
        // A persistent id that is not a storage.
        (Pk::new().s("x").op(b"\x85Q").done(), "persistent id"),
    ];
    for (pkl, want) in cases {
        let e = io::read_tensors_from_bytes(&torch_zip(pkl.clone(), &[]), "evil.pt").unwrap_err();
        let m = e.to_string();
        assert!(m.contains(want) && m.contains("evil.pt"), "{want}: {m}");
        assert!(!m.contains('\n'));
        // Malformed calls are corrupt files; the rest is refused content.
        if !["REDUCE", "persistent id"].contains(&want) {
            assert!(m.contains("nothing was run"), "{m}");
        }
    }
    // A legacy save refuses the same way.
    let mut legacy = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19\x2e".to_vec();
    legacy.extend(Pk::new().op(b"M\xe9\x03").done());
    legacy.extend(Pk::new().op(b"}").done());
    legacy.extend(Pk::new().global("os", "system").done());
    let m = message(io::read_tensors_from_bytes(&legacy, "old.pt"));
    assert!(m.contains("`os.system`") && m.contains("old.pt"), "{m}");
}

/// Storages that do not hold what the tensor record says: errors naming
/// the tensor when it is read, before any allocation of the declared size;
/// the other tensors of the file still load.
#[test]
fn storages_that_do_not_hold_their_tensors_are_errors() {
    let check = |pkl: Vec<u8>, storages: &[(&str, Vec<u8>)], want: &str| {
        let f = io::read_tensors_from_bytes(&torch_zip(pkl, storages), "s.pt").unwrap();
        let (r, peak) = peak_of(|| f.get("w").map(drop));
        let m = message(r);
        assert!(m.contains(want) && m.contains("`w`"), "{want}: {m}");
        assert!(peak < 1 << 20, "{want}: {peak} bytes");
    };
    // The storage member is missing.
    check(one_tensor("0", 4, 0, &[4], &[1]), &[], "archive/data/0");
    // Shape, offset or stride reach past the storage.
    check(
        one_tensor("0", 4, 0, &[5], &[1]),
        &[("0", floats(4))],
        "reach past",
    );
    check(
        one_tensor("0", 4, 3, &[2], &[1]),
        &[("0", floats(4))],
        "reach past",
    );
    check(
        one_tensor("0", 4, 0, &[2], &[1000]),
        &[("0", floats(4))],
        "reach past",
    );
    check(
        one_tensor("0", 4, 1 << 62, &[2], &[1]),
        &[("0", floats(4))],
        "reach past",
    );
    // The member is smaller or larger than the record's numel.
    check(
        one_tensor("0", 4, 0, &[4], &[1]),
        &[("0", floats(2))],
        "has 8 bytes",
    );
    check(
        one_tensor("0", 4, 0, &[4], &[1]),
        &[("0", floats(5))],
        "has 20 bytes",
    );
    // A huge declared numel: the member's size disagrees, nothing allocated.
    check(
        one_tensor("0", 1 << 62, 0, &[1 << 31, 1 << 31], &[1 << 31, 1]),
        &[("0", floats(4))],
        "exceeds the limit",
    );
    check(
        one_tensor("0", 1 << 62, 0, &[4], &[1]),
        &[("0", floats(4))],
        "has 16 bytes",
    );
    check(
        one_tensor("0", u64::MAX / 2, 0, &[4], &[1]),
        &[("0", floats(4))],
        "elements need",
    );
    // Dimensions past the limit are an error when the file is opened.
    let dims = vec![1u64; 65];
    let m = message(io::read_tensors_from_bytes(
        &torch_zip(one_tensor("0", 1, 0, &dims, &dims), &[("0", floats(1))]),
        "d.pt",
    ));
    assert!(m.contains("65 dimensions"), "{m}");
    // A missing storage fails only the tensor that needs it.
    let pkl = Pk::new()
        .op(b"}(")
        .s("a")
        .tensor("0", 2, 0, &[2], &[1])
        .s("b")
        .tensor("1", 2, 0, &[2], &[1])
        .op(b"u")
        .done();
    let f = io::read_tensors_from_bytes(&torch_zip(pkl, &[("0", floats(2))]), "p.pt").unwrap();
    assert_eq!(f.get("a").unwrap().data, [0.5, 1.5]);
    assert!(message(f.get("b")).contains("archive/data/1"));
    // Stride 0 (an expanded tensor) and a storage offset are read right.
    let f = io::read_tensors_from_bytes(
        &torch_zip(one_tensor("0", 4, 1, &[2, 3], &[2, 0]), &[("0", floats(4))]),
        "v.pt",
    )
    .unwrap();
    assert_eq!(f.get("w").unwrap().data, [1.5, 1.5, 1.5, 3.5, 3.5, 3.5]);
}

/// Pickles built to exhaust memory or the stack: nesting, marks, memo
/// keys, memo fan-out, lengths beyond the file. Errors (or, for a deep but
/// finite nest, a clean refusal of the root), fast and within a bounded
/// peak of memory.
#[test]
fn pickles_cannot_exhaust_memory_or_the_stack() {
    let cases: Vec<(Vec<u8>, &str)> = vec![
        // A list nested 300,000 deep: built and dropped without recursion.
        (
            Pk::new()
                .op(&vec![b']'; 300_000])
                .op(&vec![b'a'; 299_999])
                .done(),
            "a list, not a state dict",
        ),
        // A dict nested 300,000 deep as the root: named down to 16 levels.
        (
            Pk::new()
                .op(b"}")
                .op(&b"X\x01\x00\x00\x00k}".repeat(300_000))
                .op(&vec![b's'; 300_000])
                .done(),
            "",
        ),
        // More open marks than the stack allows.
        (
            Pk::new().op(&vec![b'('; (1 << 20) + 1]).done(),
            "open marks",
        ),
        // One memo entry pushed past the stack limit.
        (
            Pk::new()
                .op(b"]q\x00")
                .op(&b"h\x00".repeat((1 << 20) + 1))
                .done(),
            "stack grows past",
        ),
        // The same list appended to another, over and over: container
        // cells are bounded.
        (
            Pk::new()
                .op(b"]q\x00]")
                .op(&[b"(".as_slice(), &b"h\x00".repeat(1 << 19), b"e"]
                    .concat()
                    .repeat(9))
                .done(),
            "container items",
        ),
        // More memo entries than objects allow (keys up to 2^32 - 1 are
        // map keys, never vector indices).
        (
            {
                let mut p = Pk::new().op(b"]");
                for k in 0u32..(1 << 20) + 1 {
                    p = p.op(b"r").op(&k.wrapping_mul(4099).to_le_bytes());
                }
                p.done()
            },
            "memo entries",
        ),
        (
            Pk::new().op(b"]r\xff\xff\xff\xffj\xff\xff\xff\xff").done(),
            "a list",
        ),
        (
            Pk::new().op(b"j\xfe\xff\xff\xff").done(),
            "memo key 4294967294",
        ),
        // Lengths beyond the file.
        (
            Pk::new().op(b"\x8d").op(&(1u64 << 62).to_le_bytes()).done(),
            "truncated",
        ),
        (Pk::new().op(b"X\xff\xff\xff\xff").done(), "truncated"),
        (Pk::new().op(b"\x8b\xff\xff\xff\x7f").done(), "truncated"),
        (
            Pk::new().op(b"\x8e").op(&u64::MAX.to_le_bytes()).done(),
            "BINBYTES8",
        ),
        (Pk::new().op(b"cos").done(), "no newline"),
        // Objects past the limit.
        (Pk::new().op(&vec![b'N'; (1 << 20) + 1]).done(), "objects"),
    ];
    for (pkl, want) in cases {
        let z = torch_zip(pkl, &[]);
        let (r, peak) = peak_of(|| io::read_tensors_from_bytes(&z, "big.pt").map(|f| f.len()));
        match r {
            Ok(n) => assert!(want.is_empty() && n == 0, "{want}: loaded {n} tensors"),
            Err(e) => {
                let m = e.to_string();
                assert!(!want.is_empty() && m.contains(want), "{want}: {m}");
            }
        }
        assert!(peak < 200 << 20, "{want}: peak {peak} bytes");
    }
}

// ---------------------------------------------------------------------------
// ONNX graphs (issue 16): external data, constant folding, graph walks.

fn bad_onnx(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/bad_onnx")
        .join(name)
}

fn export_case(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/sequences")
        .join(name)
}

/// External data reached through a symbolic link that leads out of the
/// model's directory is refused; a link that stays inside is followed.
#[test]
fn onnx_external_data_may_not_leave_the_model_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("model");
    std::fs::create_dir(&dir).unwrap();
    let model = dir.join("m.onnx");
    std::fs::copy(bad_onnx("ext_symlink.onnx"), &model).unwrap();
    // R is [1, 8, 2] floats: 64 bytes.
    std::fs::write(tmp.path().join("outside.bin"), [0u8; 64]).unwrap();
    std::os::unix::fs::symlink("../outside.bin", dir.join("ext_symlink.bin")).unwrap();
    let e = message(import::onnx(&model));
    assert!(
        e.contains("leads outside the model's directory") && e.contains("`R`"),
        "{e}"
    );
    std::fs::remove_file(dir.join("ext_symlink.bin")).unwrap();
    std::fs::write(dir.join("inside.bin"), [0u8; 64]).unwrap();
    std::os::unix::fs::symlink("inside.bin", dir.join("ext_symlink.bin")).unwrap();
    let (_, w) = import::onnx(&model).unwrap();
    // Gate rows: the 3 inputs, then the 2 recurrent ones (R), 8 columns.
    assert!(
        w.gates[3 * 8..].iter().all(|&v| v == 0.0),
        "R read as zeros"
    );
    assert!(w.gates[..3 * 8].iter().any(|&v| v != 0.0));
}

/// Lengths, offsets and folded shapes that would need huge buffers are
/// errors before anything of that size is allocated.
#[test]
fn onnx_huge_declarations_are_errors_before_allocation() {
    for (name, want) in [
        ("ext_huge_length.onnx", "beyond the end"),
        ("ext_offset_huge.onnx", "beyond the end"),
        ("fold_huge_dims.onnx", "exceeds the limit"),
        (
            "fold_over_budget.onnx",
            "more elements than the model's size allows",
        ),
    ] {
        let (r, peak) = peak_of(|| import::onnx(bad_onnx(name)));
        let e = message(r);
        assert!(e.contains(want), "{name}: {e}");
        assert!(peak < 4 << 20, "{name}: {peak} bytes held");
    }
}

/// Loading from bytes: external data needs the directory it lies in.
#[test]
fn onnx_from_bytes_needs_a_directory_for_external_data() {
    let dir = export_case("onnx_export_torch_dynamo_bf");
    let bytes = std::fs::read(dir.join("weights.onnx")).unwrap();
    let opts = import::LoadOptions::default();
    let e = message(import::onnx_model_from_bytes(&bytes, None, opts));
    assert!(
        e.contains("uses external data") && e.contains("base_dir"),
        "{e}"
    );
    let m = import::onnx_model_from_bytes(&bytes, Some(&dir), opts).unwrap();
    let f = import::onnx_model(dir.join("weights.onnx")).unwrap();
    assert!(m.batch_first && f.batch_first);
    assert_eq!(
        m.stack.layers()[0].forward.weights(),
        f.stack.layers()[0].forward.weights()
    );
    // A model without external data loads from bytes alone, the same.
    let plain = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/frameworks/onnx_plain/weights.onnx");
    let from_bytes = import::onnx_from_bytes(&std::fs::read(&plain).unwrap(), None).unwrap();
    assert_eq!(from_bytes, import::onnx(&plain).unwrap());
    let bi = export_case("onnx_export_torch_bidir2_op17").join("weights.onnx");
    let s = import::onnx_stack_from_bytes(&std::fs::read(&bi).unwrap(), None, opts).unwrap();
    assert_eq!(s.layers().len(), 2);
}

/// `model` with `nodes` (input, output) Identity nodes appended to its
/// graph (a repeated embedded message merges into the first).
fn with_identity_nodes(model: &[u8], nodes: impl Iterator<Item = (String, String)>) -> Vec<u8> {
    let mut graph = Vec::new();
    for (i, o) in nodes {
        pb::bytes(&mut graph, 1, &pb::node("Identity", &[&i], &[&o], &[]));
    }
    let mut out = model.to_vec();
    pb::bytes(&mut out, 7, &graph);
    out
}

/// A chain of 200,000 nodes is walked without recursion (no stack
/// overflow) and in linear time; a cycle of as many is an error.
#[test]
fn onnx_long_chains_and_cycles_are_walked_iteratively() {
    const N: usize = 200_000;
    let plain = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/frameworks/onnx_plain/weights.onnx");
    let bytes = std::fs::read(&plain).unwrap();
    let want = import::onnx(&plain).unwrap();
    let chain = with_identity_nodes(
        &bytes,
        (0..N).map(|k| {
            let i = if k == 0 {
                "W".to_string()
            } else {
                format!("c{k}")
            };
            (i, format!("c{}", k + 1))
        }),
    );
    let t = std::time::Instant::now();
    assert_eq!(import::onnx_from_bytes(&chain, None).unwrap(), want);
    assert!(t.elapsed().as_secs() < 20, "{:?}", t.elapsed());
    let cycle = with_identity_nodes(
        &bytes,
        (0..N).map(|k| (format!("c{k}"), format!("c{}", (k + 1) % N))),
    );
    let e = message(import::onnx_from_bytes(&cycle, None));
    assert!(e.contains("cycle"), "{e}");
}

// ---------------------------------------------------------------------------
// Issue 16, item 3: Keras model files and the crate's HDF5 reader.

/// Every occurrence of `pat` in `b`.
#[cfg(feature = "keras")]
fn find_all(b: &[u8], pat: &[u8]) -> Vec<usize> {
    (0..b.len().saturating_sub(pat.len()))
        .filter(|&i| &b[i..i + pat.len()] == pat)
        .collect()
}

/// A legacy `.h5` cut at every byte: an error, one line, and no more
/// memory than a few copies of the file.
#[cfg(feature = "keras")]
#[test]
fn keras_files_truncated_at_every_byte_are_errors() {
    for rel in [
        "sequences/keras_lstm_seq/model.h5",
        "sequences/keras_lstm_seq/model.keras",
    ] {
        let bytes = std::fs::read(golden_file(rel)).unwrap();
        for n in 0..bytes.len() {
            let (r, peak) = peak_of(|| import::keras_model_from_bytes(&bytes[..n], "m.h5"));
            message(r);
            assert!(
                peak < 8 * bytes.len() + (1 << 20),
                "{rel} cut at {n}: {peak} bytes"
            );
        }
    }
}

/// Addresses pointing outside the file, back into the structure that
/// holds them (cycles) or at the wrong structure; huge dimensions; a
/// wrong datatype: errors naming what was wrong, never a panic, a read
/// outside the file or a large allocation.
#[cfg(feature = "keras")]
#[test]
fn hdf5_files_with_bad_offsets_sizes_and_types_are_errors() {
    let good = std::fs::read(golden_file("sequences/keras_lstm_seq/model.h5")).unwrap();
    let len = good.len() as u64;
    // A mutation in a structure the loader never visits (another group's
    // B-tree) may leave a loadable file: Ok is allowed, an error must be
    // one short line; most must be errors.
    let errors = std::cell::Cell::new(0);
    let load = |b: &[u8]| {
        let (r, peak) = peak_of(|| import::keras_model_from_bytes(b, "m.h5"));
        assert!(peak < 8 * b.len() + (1 << 20), "{peak} bytes");
        if r.is_err() {
            errors.set(errors.get() + 1);
        }
        r.map(drop)
    };
    let message = |r: Result<(), Error>| match r {
        Ok(()) => "HDF5 (loaded)".to_string(),
        Err(e) => message(Err::<(), _>(e)),
    };
    let put = |b: &mut Vec<u8>, at: usize, v: u64| b[at..at + 8].copy_from_slice(&v.to_le_bytes());
    let mut cases = 0;
    // B-tree nodes: the first child (after the signature, type, level,
    // entries, two siblings and the first key) pointing at the node
    // itself, beyond the file, at the last byte.
    for at in find_all(&good, b"TREE") {
        for v in [at as u64, len, len - 1, u64::MAX - 1, 1 << 62] {
            let mut b = good.clone();
            put(&mut b, at + 32, v);
            let e = message(load(&b));
            assert!(e.contains("HDF5") || e.contains("Keras"), "{e}");
            cases += 1;
        }
    }
    // Symbol table entries: the object header address of the first link.
    for at in find_all(&good, b"SNOD") {
        for v in [at as u64, len + 8, u64::MAX - 1, 0] {
            let mut b = good.clone();
            put(&mut b, at + 16, v);
            message(load(&b));
            cases += 1;
        }
    }
    // Local heaps: the data segment beyond the file, or huge.
    for at in find_all(&good, b"HEAP") {
        let mut b = good.clone();
        put(&mut b, at + 8, u64::MAX / 2);
        message(load(&b));
        let mut b = good.clone();
        put(&mut b, at + 24, len);
        message(load(&b));
        cases += 2;
    }
    // Global heap collections (the config string): a huge size.
    for at in find_all(&good, b"GCOL") {
        let mut b = good.clone();
        put(&mut b, at + 8, u64::MAX - 7);
        let e = message(load(&b));
        assert!(
            e.contains("outside the file") || e.contains("global heap"),
            "{e}"
        );
        cases += 1;
    }
    assert!(cases >= 10, "{cases} cases: the structures were not found");
    assert!(
        errors.get() * 3 >= cases * 2,
        "{} errors of {cases}",
        errors.get()
    );
    // The kernel's dimensions [4, 24]: astronomically large, or just larger
    // than the file: an error before any allocation.
    let dims: Vec<u8> = [4u64, 24].iter().flat_map(|d| d.to_le_bytes()).collect();
    let at = find_all(&good, &dims);
    assert!(!at.is_empty());
    // (Every occurrence at once: the maximum dimensions repeat them.)
    for (d0, d1) in [(1u64 << 62, 1u64 << 62), (1 << 30, 24), (4, 1 << 40)] {
        let mut b = good.clone();
        for &a in &at {
            put(&mut b, a, d0);
            put(&mut b, a + 8, d1);
        }
        let e = message(load(&b));
        assert!(
            e.contains("exceeds") || e.contains("outside the file") || e.contains("needs"),
            "{e}"
        );
    }
    // float32 datatype messages (class 1, version 1, little-endian IEEE,
    // size 4) made integers: a dtype error naming the dataset.
    let f32_type = [0x11u8, 0x20, 0x1f, 0x00, 0x04, 0x00, 0x00, 0x00];
    let at = find_all(&good, &f32_type);
    assert!(!at.is_empty());
    let mut b = good.clone();
    for &a in &at {
        b[a] = 0x10;
    }
    let e = message(load(&b));
    assert!(e.contains("integer") && e.contains("kernel"), "{e}");
    // Continuation messages (type 0x10, 16 bytes) pointing back at
    // themselves or outside.
    for a in find_all(&good, &[0x10, 0x00, 0x10, 0x00]) {
        for v in [(a - 16) as u64, len] {
            let mut b = good.clone();
            put(&mut b, a + 8, v);
            let _ = load(&b); // may even still be a valid file
        }
    }
}

/// `.keras` zips with a bad `config.json`: not JSON, nested too deep, no
/// layers, absurd units, a huge declared size: errors naming the file and
/// what was wrong.
#[cfg(feature = "keras")]
#[test]
fn keras_zips_with_bad_configs_are_errors() {
    let path = golden_file("sequences/keras_lstm_seq/model.keras");
    let mut z = zip::ZipArchive::new(std::fs::File::open(path).unwrap()).unwrap();
    let mut weights = Vec::new();
    std::io::Read::read_to_end(&mut z.by_name("model.weights.h5").unwrap(), &mut weights).unwrap();
    let mut config = String::new();
    std::io::Read::read_to_string(&mut z.by_name("config.json").unwrap(), &mut config).unwrap();
    let keras = |c: &str| {
        zip_bytes(&[
            Member::stored("config.json", c.as_bytes().to_vec()),
            Member::stored("model.weights.h5", weights.clone()),
        ])
    };
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    for (c, words) in [
        ("{not json", &["config.json", "JSON"][..]),
        (deep.as_str(), &["JSON"][..]),
        (
            r#"{"class_name": "Sequential", "config": {}}"#,
            &["layers"][..],
        ),
        (
            r#"{"class_name": "MyModel", "config": {}}"#,
            &["MyModel", "subclassed"][..],
        ),
        (
            &config.replace("\"units\": 6", "\"units\": 100000000000000"),
            &["units", "100000000000000"][..],
        ),
        (
            &config.replace("\"units\": 6", "\"units\": -6"),
            &["units"][..],
        ),
        (
            &config.replace("\"units\": 6", "\"units\": 5"),
            &["kernel", "20"][..],
        ),
        (
            &config.replace("\"LSTM\"", "\"GRU\""),
            &["no LSTM layer", "GRU"][..],
        ),
    ] {
        let e = message(import::keras_model_from_bytes(&keras(c), "m.keras"));
        for w in words {
            assert!(e.contains(w), "`{w}` not in {e}");
        }
        assert!(e.contains("m.keras"), "{e}");
    }
    // A config member inflating to more than MAX_KERAS_CONFIG_BYTES, and
    // a file without one.
    let bomb = zip_bytes(&[
        Member::bomb("config.json", b"{", 100 << 20),
        Member::stored("model.weights.h5", weights.clone()),
    ]);
    let (r, peak) = peak_of(|| import::keras_model_from_bytes(&bomb, "m.keras"));
    let e = message(r);
    assert!(e.contains("config.json") && e.contains("at most"), "{e}");
    assert!(peak < 16 << 20, "{peak}");
    let e = message(import::keras_model_from_bytes(
        &zip_bytes(&[Member::stored("model.weights.h5", weights.clone())]),
        "m.keras",
    ));
    assert!(e.contains("config.json"), "{e}");
}

// ---------------------------------------------------------------------------
// Zip members whose directory entry claims more than the archive holds, and
// ONNX graphs whose constants claim huge axes (a review's findings).

/// A stored member whose directory entry claims 1 GiB while holding 16
/// bytes (a 535-byte `torch.save` file) was sized and zero-filled from
/// the claim before reading failed; now an error at once, naming the lie.
#[test]
fn a_stored_member_claiming_more_than_it_holds_is_an_error_before_allocation() {
    let tmp = tempfile::tempdir().unwrap();
    let numel: u64 = 1 << 28;
    let pkl = one_tensor("0", numel, 0, &[numel], &[1]);
    let members = vec![
        Member::stored("archive/data.pkl", pkl),
        Member::stored("archive/byteorder", b"little".to_vec()),
        Member::stored("archive/data/0", floats(4)).claiming((numel * 4) as usize),
    ];
    let p = write(tmp.path(), "w.pt", &zip_bytes(&members));
    let f = io::read_tensors(&p).unwrap();
    let (r, peak) = peak_of(|| f.get("w").cloned());
    let e = message(r);
    assert!(e.contains("stored (uncompressed) in 16 bytes"), "{e}");
    assert!(peak < 1 << 20, "{peak} bytes held");
    // The same lie in an .npz member.
    let n: usize = 1 << 26;
    let header = npy_f32(&format!("({n},)"), &[]);
    let m = Member::stored("x.npy", header.clone()).claiming(header.len() + 4 * n);
    let p = write(tmp.path(), "w.npz", &zip_bytes(&[m]));
    let f = io::read_npz(&p).unwrap();
    let (r, peak) = peak_of(|| f.get("x").cloned());
    let e = message(r);
    assert!(e.contains("stored (uncompressed)"), "{e}");
    assert!(peak < 1 << 20, "{peak} bytes held");
}

/// Protobuf field writers for hand-made ONNX nodes.
mod pb {
    pub fn varint(out: &mut Vec<u8>, mut v: u64) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }
    pub fn bytes(out: &mut Vec<u8>, field: u32, b: &[u8]) {
        varint(out, (u64::from(field) << 3) | 2);
        varint(out, b.len() as u64);
        out.extend_from_slice(b);
    }
    pub fn int(out: &mut Vec<u8>, field: u32, v: u64) {
        varint(out, u64::from(field) << 3);
        varint(out, v);
    }
    /// A float `TensorProto` named `name` with `dims` and no data.
    pub fn empty_tensor(name: &str, dims: &[u64]) -> Vec<u8> {
        let mut t = Vec::new();
        for &d in dims {
            int(&mut t, 1, d);
        }
        int(&mut t, 2, 1);
        bytes(&mut t, 8, name.as_bytes());
        t
    }
    /// An `ints` attribute.
    pub fn ints(name: &str, v: &[u64]) -> Vec<u8> {
        let mut a = Vec::new();
        bytes(&mut a, 1, name.as_bytes());
        for &x in v {
            int(&mut a, 8, x);
        }
        int(&mut a, 20, 7);
        a
    }
    /// An `int` attribute.
    pub fn int_attr(name: &str, i: u64) -> Vec<u8> {
        let mut a = Vec::new();
        bytes(&mut a, 1, name.as_bytes());
        int(&mut a, 3, i);
        int(&mut a, 20, 2);
        a
    }
    pub fn node(op: &str, ins: &[&str], outs: &[&str], attrs: &[Vec<u8>]) -> Vec<u8> {
        let mut n = Vec::new();
        for i in ins {
            bytes(&mut n, 1, i.as_bytes());
        }
        for o in outs {
            bytes(&mut n, 2, o.as_bytes());
        }
        bytes(&mut n, 4, op.as_bytes());
        for a in attrs {
            bytes(&mut n, 5, a);
        }
        n
    }
}

/// The golden plain ONNX model with `inits` and `nodes` merged into its
/// graph (a repeated graph field merges into the first).
fn onnx_with(inits: &[Vec<u8>], nodes: &[Vec<u8>]) -> Vec<u8> {
    let plain = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/frameworks/onnx_plain/weights.onnx");
    let mut out = std::fs::read(plain).unwrap();
    let mut g = Vec::new();
    for n in nodes {
        pb::bytes(&mut g, 1, n);
    }
    for t in inits {
        pb::bytes(&mut g, 5, t);
    }
    pb::bytes(&mut out, 7, &g);
    out
}

fn onnx_error(bytes: &[u8]) -> String {
    match import::onnx_model_from_bytes(bytes, None, Default::default()) {
        Ok(_) => "loaded".into(),
        Err(e) => e.to_string(),
    }
}

/// A constant with no elements may still claim a 2⁴⁰-long axis (its
/// element count, 0, passes every check): folding a Transpose, Gather or
/// Slice of it listed every index of that axis — an 8 TiB allocation, an
/// abort. The axes' index lists are charged against the folder's budget
/// now: each is an error naming the node, within the memory budget.
#[test]
fn onnx_constants_with_empty_but_huge_axes_are_errors() {
    const HUGE: u64 = 1 << 40;
    let shape = pb::ints("value_ints", &[0, HUGE]);
    let cases = [
        (
            "Transpose",
            onnx_with(
                &[pb::empty_tensor("Z", &[0, HUGE])],
                &[pb::node("Transpose", &["Z"], &["Zt"], &[])],
            ),
        ),
        (
            "Gather",
            onnx_with(
                &[pb::empty_tensor("Z", &[1, 0, HUGE])],
                &[
                    pb::node("Constant", &[], &["I"], &[pb::ints("value_ints", &[0])]),
                    pb::node("Gather", &["Z", "I"], &["Zg"], &[]),
                ],
            ),
        ),
        (
            "Slice",
            onnx_with(
                &[],
                &[
                    pb::node("Constant", &[], &["S"], std::slice::from_ref(&shape)),
                    pb::node("ConstantOfShape", &["S"], &["C"], &[]),
                    pb::node(
                        "Slice",
                        &["C"],
                        &["D"],
                        &[pb::ints("starts", &[0]), pb::ints("ends", &[1])],
                    ),
                ],
            ),
        ),
        (
            "Split",
            onnx_with(
                &[],
                &[
                    pb::node("Constant", &[], &["S"], &[shape]),
                    pb::node("ConstantOfShape", &["S"], &["C"], &[]),
                    pb::node("Split", &["C"], &["a", "b"], &[pb::int_attr("axis", 1)]),
                ],
            ),
        ),
    ];
    for (op, bytes) in cases {
        let (e, peak) = peak_of(|| onnx_error(&bytes));
        assert!(
            e.contains(&format!("({op})"))
                && e.contains("more elements than the model's size allows"),
            "{op}: {e}"
        );
        assert!(peak < 64 << 20, "{op}: {peak} bytes held");
    }
}

/// A Split of a 200,000-element constant into 20,000 outputs listed the
/// input's axes again for every output (charged only for the output): 32
/// s of folding from a 300 KB file. Each output's lists are charged now,
/// so the folder stops at its budget, an error.
#[test]
fn onnx_folding_work_is_charged_per_node_and_output() {
    let n = 20_000;
    let outs: Vec<String> = (0..n).map(|k| format!("o{k}")).collect();
    let outs: Vec<&str> = outs.iter().map(String::as_str).collect();
    let bytes = onnx_with(
        &[],
        &[
            pb::node(
                "Constant",
                &[],
                &["S"],
                &[pb::ints("value_ints", &[1, 200_000])],
            ),
            pb::node("ConstantOfShape", &["S"], &["C"], &[]),
            pb::node("Split", &["C"], &outs, &[pb::int_attr("axis", 0)]),
        ],
    );
    let e = onnx_error(&bytes);
    assert!(
        e.contains("(Split)") && e.contains("more elements than the model's size allows"),
        "{e}"
    );
}
