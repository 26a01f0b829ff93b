//! The data in tests/golden/ (see tests/golden/README.md): paths, the case
//! lists, the readers the suites share, and hand-made `.npy` bytes.

use std::path::{Path, PathBuf};

use lstm_kernels::import::{self, TfOptions};
use lstm_kernels::{Lstm, LstmConfig, LstmStack, LstmWeights, SeqOptions, io};

/// tests/golden/`case`: the numpy cases of `tools/make_golden.py`
/// ([`NUMPY_CASES`]), `bad_onnx`, `charlm`, ….
pub fn dir(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(case)
}

/// tests/golden/`case`/`name`.
pub fn file(case: &str, name: &str) -> PathBuf {
    dir(case).join(name)
}

/// tests/golden/frameworks/`case` (tools/make_framework_goldens.py).
pub fn framework(case: &str) -> PathBuf {
    dir("frameworks").join(case)
}

/// tests/golden/sequences/`case` (tools/make_framework_goldens.py).
pub fn sequence(case: &str) -> PathBuf {
    dir("sequences").join(case)
}

/// The cases under tests/golden/frameworks, sorted.
pub fn framework_cases() -> Vec<String> {
    cases(&dir("frameworks"))
}

/// The cases under tests/golden/sequences, sorted.
pub fn sequence_cases() -> Vec<String> {
    cases(&dir("sequences"))
}

/// The subdirectories of `group` that hold a case (a `meta.json`), sorted.
fn cases(group: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(group)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("meta.json").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// The `c` and `m` arrays of a state file (`state_in.npz`,
/// `expected_state.npz`, what `lstm run --state-out` wrote).
pub fn read_state(path: impl AsRef<Path>) -> (io::Tensor, io::Tensor) {
    let f = io::read_npz(path).unwrap();
    (f.get("c").unwrap().clone(), f.get("m").unwrap().clone())
}

/// A framework or sequence case's `meta.json`.
pub fn meta(case_dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(case_dir.join("meta.json")).unwrap()).unwrap()
}

/// A framework case's weight file, whichever format it is in.
pub fn weights_file(case_dir: &Path) -> PathBuf {
    [
        "weights.safetensors",
        "weights.onnx",
        "weights.npz",
        "weights.pt",
        "weights.pth",
        "weights.bin",
    ]
    .iter()
    .map(|f| case_dir.join(f))
    .find(|p| p.exists())
    .unwrap()
}

/// The cases of `tools/make_golden.py`: the seed's equations in float64
/// numpy.
pub const NUMPY_CASES: [&str; 4] = ["seed", "plain", "single_step", "peephole_only"];

/// Reads a float64 C-order array exactly (our `io` converts to f32):
/// numpy's own `<f8` goldens, parsed here by hand.
fn read_f64(mut reader: impl std::io::Read) -> (Vec<usize>, Vec<f64>) {
    let mut bytes = Vec::new();
    reader.read_to_end(&mut bytes).unwrap();
    assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
    let len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(&bytes[10..10 + len]).unwrap();
    assert!(
        header.contains("'descr': '<f8'") && header.contains("'fortran_order': False"),
        "{header}"
    );
    let dims = header.split("'shape': (").nth(1).unwrap();
    let shape: Vec<usize> = dims[..dims.find(')').unwrap()]
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| d.parse().unwrap())
        .collect();
    let data: Vec<f64> = bytes[10 + len..]
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(data.len(), shape.iter().product::<usize>(), "{header}");
    (shape, data)
}

/// A numpy case's expected results in float64: (shape of y, y, c, m).
pub fn numpy_expected(case: &str) -> (Vec<usize>, Vec<f64>, Vec<f64>, Vec<f64>) {
    let (shape, y) = read_f64(std::fs::File::open(dir(case).join("expected_y.npy")).unwrap());
    let mut zip =
        zip::ZipArchive::new(std::fs::File::open(dir(case).join("expected_state.npz")).unwrap())
            .unwrap();
    let (_, c) = read_f64(zip.by_name("c.npy").unwrap());
    let (_, m) = read_f64(zip.by_name("m.npy").unwrap());
    (shape, y, c, m)
}

/// Asserts that `got` is within 1e-5 of numpy's `want` (the issue's
/// "within ~1e-5"), and within the derived `bound` when one is given.
pub fn assert_close_to_numpy(what: &str, got: &[f32], want: &[f64], bound: Option<&[f64]>) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (k, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g as f64 - w).abs();
        assert!(
            err <= 1e-5,
            "{what}[{k}]: got {g}, numpy {w}, |err| {err:e} > 1e-5"
        );
        if let Some(b) = bound {
            assert!(
                err <= b[k],
                "{what}[{k}]: |err| {err:e} > derived bound {:e}",
                b[k]
            );
        }
    }
}

/// A hand-made version 1.0 `.npy` of `n` elements of dtype `descr`
/// (`<i4`, `<f8`, …), shape `(n,)`; `data` is the raw little-endian
/// payload.
pub fn npy_bytes(descr: &str, n: usize, data: &[u8]) -> Vec<u8> {
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': ({n},), }}");
    while !(10 + header.len() + 1).is_multiple_of(64) {
        header.push(' ');
    }
    header.push('\n');
    let mut v = b"\x93NUMPY\x01\x00".to_vec();
    v.extend((header.len() as u16).to_le_bytes());
    v.extend(header.as_bytes());
    v.extend(data);
    v
}

/// A framework case's model, read by the importer of its format with the
/// options its `meta.json` records.
pub fn load_framework(dir: &Path) -> (LstmConfig, LstmWeights) {
    let m = meta(dir);
    let prefix = m["prefix"].as_str().unwrap_or("");
    let path = weights_file(dir);
    match m["format"].as_str().unwrap() {
        "pytorch" => import::pytorch(&path, prefix).unwrap(),
        "keras" => import::keras(&path, prefix).unwrap(),
        "tf" => {
            let opts = TfOptions {
                forget_bias: m["forget_bias"].as_f64().unwrap() as f32,
                cell_clip: m["cell_clip"].as_f64().map(|v| v as f32),
                proj_clip: m["proj_clip"].as_f64().map(|v| v as f32),
            };
            import::tf(&path, prefix, opts).unwrap()
        }
        "onnx" => import::onnx(&path).unwrap(),
        other => panic!("unknown format {other}"),
    }
}

/// What the library computes for a framework case with its defaults (the
/// ISA it picks, the heuristic plan): `y` and the final `c`, `m`.
pub fn library_framework_run(dir: &Path) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (cfg, w) = load_framework(dir);
    let x = io::read_npy(dir.join("x.npy")).unwrap();
    let (c0, m0) = read_state(dir.join("state_in.npz"));
    let batch = x.shape[x.shape.len() - 2];
    let model = Lstm::new(cfg, w).unwrap();
    let mut st = model.state_from(batch, &c0.data, &m0.data).unwrap();
    let mut y = vec![f32::NAN; x.data.len() / cfg.n_input * cfg.n_output()];
    model.forward(&mut st, &x.data, &mut y).unwrap();
    (y, st.c().to_vec(), st.m().to_vec())
}

/// A sequence case's stack, read as `lstm run` reads it, and whether its
/// inputs are batch-first.
pub fn load_sequence(dir: &Path) -> (LstmStack, bool) {
    let m = meta(dir);
    let batch_first = m["batch_first"].as_bool().unwrap();
    let stack = match m["format"].as_str().unwrap() {
        "onnx" => {
            let m = import::onnx_model(dir.join("weights.onnx")).unwrap();
            assert_eq!(
                m.batch_first,
                batch_first,
                "{}: the layout found in the graph",
                dir.display()
            );
            m.stack
        }
        #[cfg(feature = "keras")]
        "keras" => import::keras_model(dir.join("model.keras"))
            .unwrap()
            .stack()
            .clone(),
        #[cfg(not(feature = "keras"))]
        "keras" => panic!("a Keras case needs the `keras` feature"),
        _ => import::pytorch_stack(weights_file(dir), m["prefix"].as_str().unwrap_or("")).unwrap(),
    };
    (stack, batch_first)
}

/// Puts a state file's `[L·D, B, ·]` blocks (layer-major, forward then
/// reverse) into `st`, or reads them back out of it with `put = false`.
pub fn stack_state_blocks(
    st: &mut lstm_kernels::StackState,
    c: &mut [f32],
    m: &mut [f32],
    put: bool,
) {
    let (mut oc, mut om) = (0, 0);
    for k in 0.. {
        let Some((f, r)) = st.layer_mut(k) else {
            break;
        };
        for s in std::iter::once(f).chain(r) {
            let (hc, hm) = (s.c().len(), s.m().len());
            if put {
                s.c_mut().copy_from_slice(&c[oc..oc + hc]);
                s.m_mut().copy_from_slice(&m[om..om + hm]);
            } else {
                c[oc..oc + hc].copy_from_slice(s.c());
                m[om..om + hm].copy_from_slice(s.m());
            }
            oc += hc;
            om += hm;
        }
    }
    assert_eq!((oc, om), (c.len(), m.len()), "state blocks");
}

/// `y`, and the final `(c, m)` of a case with state files.
pub type SequenceRun = (Vec<f32>, Option<(Vec<f32>, Vec<f32>)>);

/// What the library computes for a sequence case with its defaults: `y`
/// and, when the case has state files, the final `c` and `m` in their
/// layout.
pub fn library_sequence_run(dir: &Path) -> SequenceRun {
    let (stack, batch_first) = load_sequence(dir);
    let x = io::read_npy(dir.join("x.npy")).unwrap();
    let b = if batch_first { x.shape[0] } else { x.shape[1] };
    let lens = dir.join("seq_lens.npy");
    let lens = lens.exists().then(|| io::read_npy_lengths(&lens).unwrap());
    let mut st = stack.new_state(b).unwrap();
    let state_in = dir.join("state_in.npz");
    let state = state_in.exists().then(|| read_state(&state_in));
    if let Some((c0, m0)) = &state {
        let (mut c, mut m) = (c0.data.clone(), m0.data.clone());
        stack_state_blocks(&mut st, &mut c, &mut m, true);
    }
    let n = stack.input_size();
    let mut y = vec![f32::NAN; x.data.len() / n * stack.output_size()];
    let opts = SeqOptions {
        batch_first,
        seq_lens: lens.as_deref(),
    };
    stack.forward(&mut st, &x.data, &mut y, opts).unwrap();
    let finals = state.map(|(c0, m0)| {
        let (mut c, mut m) = (vec![0.0; c0.data.len()], vec![0.0; m0.data.len()]);
        stack_state_blocks(&mut st, &mut c, &mut m, false);
        (c, m)
    });
    (y, finals)
}

/// Runs a Keras case's `model` on its input and initial state: (y, c, m)
/// in the golden layouts.
#[cfg(feature = "keras")]
pub fn run_keras(dir: &Path, model: &import::KerasModel) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let x = io::read_npy(dir.join("x.npy")).unwrap();
    let b = x.shape[0];
    let (c0, m0) = read_state(dir.join("state_in.npz"));
    let mut st = model.stack().new_state(b).unwrap();
    let (mut c, mut m) = (c0.data.clone(), m0.data.clone());
    stack_state_blocks(&mut st, &mut c, &mut m, true);
    let want_len = io::read_npy(dir.join("expected_y.npy")).unwrap().data.len();
    let mut y = vec![f32::NAN; want_len];
    model.forward(&mut st, &x.data, &mut y, None).unwrap();
    stack_state_blocks(&mut st, &mut c, &mut m, false);
    (y, c, m)
}
