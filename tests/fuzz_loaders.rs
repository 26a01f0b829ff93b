//! Fuzzing every file loader (issue 17), on stable Rust with proptest: each
//! loader gets the committed golden files it reads, plus hostile seeds
//! (deeply nested and oversized npy headers, a zip bomb), mutated — bytes
//! flipped, length fields overwritten with extreme values, cuts, inserted
//! runs, hostile fragments spliced in — and must return `Ok` or a one-line,
//! bounded `Err`: never a panic, an abort (the binary runs under a 1 GiB
//! allocation budget, tests/common/budget.rs) or a hang.
//!
//! CI runs a short pass (`LSTM_FUZZ_CASES`, default 256 cases per loader);
//! a long run is documented in the README:
//! `LSTM_FUZZ_CASES=20000 cargo test --release --test fuzz_loaders`.

#[path = "common/budget.rs"]
mod budget;

use std::io::Write;
use std::path::{Path, PathBuf};

use lstm_kernels::charlm::CharLm;
use lstm_kernels::{Error, import, io};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

/// The longest error message a loader may print (a 1e6-dimension header
/// once produced 3 MB).
const MAX_ERROR_CHARS: usize = 2048;

fn golden(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(rel)
}

fn cases() -> u32 {
    std::env::var("LSTM_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

/// An npy file: `header` as the dict (padded), then `body`.
fn npy(header: &str, body: &[u8]) -> Vec<u8> {
    let mut h = header.to_string();
    while !(10 + h.len() + 1).is_multiple_of(64) {
        h.push(' ');
    }
    h.push('\n');
    let mut v = b"\x93NUMPY\x01\x00".to_vec();
    v.extend_from_slice(&(h.len() as u16).to_le_bytes());
    v.extend_from_slice(h.as_bytes());
    v.extend_from_slice(body);
    v
}

/// Hostile seeds every npy-based loader also starts from.
fn hostile_npy() -> Vec<Vec<u8>> {
    let nested = |d: usize| {
        format!(
            "{{'descr': '<f4', 'fortran_order': False, 'shape': {}1{}, }}",
            "(".repeat(d),
            ",)".repeat(d)
        )
    };
    vec![
        npy(&nested(22), &[0; 16]),
        npy(&nested(3000), &[0; 16]),
        npy(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296, 7), }",
            &[],
        ),
        npy(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (9223372036854775810, 2, 7), }",
            &[0; 112],
        ),
        npy(
            &format!(
                "{{'descr': '<f4', 'fortran_order': False, 'shape': ({}), }}",
                "1, ".repeat(20_000)
            ),
            &[0; 4],
        ),
        npy(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (7,), }",
            &[0; 28],
        ),
    ]
}

/// An npz (stored or deflated members) from `(name, bytes)`.
fn npz(members: &[(&str, &[u8])], deflate: bool) -> Vec<u8> {
    let mut buf = std::io::Cursor::new(Vec::new());
    let mut z = zip::ZipWriter::new(&mut buf);
    let method = if deflate {
        zip::CompressionMethod::Deflated
    } else {
        zip::CompressionMethod::Stored
    };
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(method)
        .large_file(false);
    for (name, bytes) in members {
        z.start_file(*name, opts).unwrap();
        z.write_all(bytes).unwrap();
    }
    z.finish().unwrap();
    buf.into_inner()
}

/// A deflated member declaring 2 floats whose payload inflates to 64 MiB,
/// beside a valid seed weight file's members.
fn bomb_npz(base: &Path) -> Vec<u8> {
    let mut body = npy(
        "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }",
        &[],
    );
    body.resize(64 << 20, 0);
    let mut members: Vec<(String, Vec<u8>)> = Vec::new();
    let mut zr = zip::ZipArchive::new(std::fs::File::open(base).unwrap()).unwrap();
    for i in 0..zr.len() {
        let mut e = zr.by_index(i).unwrap();
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut v).unwrap();
        members.push((e.name().unwrap().to_string(), v));
    }
    members.push(("bomb.npy".into(), body));
    let refs: Vec<(&str, &[u8])> = members
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_slice()))
        .collect();
    npz(&refs, true)
}

/// Fragments spliced into files: nesting, huge numbers, non-UTF-8, the
/// magic of other formats.
const FRAGMENTS: &[&[u8]] = &[
    b"((((((((((((((((((((((((((((((((",
    b"18446744073709551615, ",
    b"9223372036854775807",
    b"'descr': '>f8', ",
    b"'fortran_order': True, ",
    b"1e309",
    b"\xff\xfe\xfd\x00\x80",
    b"PK\x03\x04",
    b"\x93NUMPY\x02\x00\xff\xff\xff\xff",
    b"{\"__metadata__\":{\"a\":[[[[[[[[",
    b"\"dtype\":\"F64\",\"shape\":[4294967296,4294967296]",
];

#[derive(Clone, Debug)]
enum Mutation {
    /// XOR a byte at a fraction of the length.
    Flip(f64, u8),
    /// Overwrite 2, 4 or 8 bytes with an extreme little-endian value
    /// (length fields: npy header_len, zip sizes, safetensors' header size,
    /// protobuf varints).
    Extreme(f64, usize, u64),
    /// Cut the file at a fraction of its length.
    Truncate(f64),
    /// Insert bytes.
    Insert(f64, Vec<u8>),
    /// Splice in one of [`FRAGMENTS`].
    Fragment(f64, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let at = 0.0..1.0f64;
    prop_oneof![
        4 => (at.clone(), 1..=255u8).prop_map(|(p, b)| Mutation::Flip(p, b)),
        2 => (
            at.clone(),
            prop::sample::select(vec![2usize, 4, 8]),
            prop::sample::select(vec![
                0u64,
                1,
                0x7f,
                0xff,
                0xffff,
                0x7fff_ffff,
                0xffff_ffff,
                1 << 40,
                u64::MAX / 2,
                u64::MAX
            ])
        )
            .prop_map(|(p, w, v)| Mutation::Extreme(p, w, v)),
        1 => at.clone().prop_map(Mutation::Truncate),
        1 => (at.clone(), prop::collection::vec(any::<u8>(), 1..24))
            .prop_map(|(p, v)| Mutation::Insert(p, v)),
        2 => (at, 0..FRAGMENTS.len()).prop_map(|(p, i)| Mutation::Fragment(p, i)),
    ]
}

fn apply(mut data: Vec<u8>, muts: &[Mutation]) -> Vec<u8> {
    let pos = |f: f64, len: usize| ((f * len as f64) as usize).min(len);
    for m in muts {
        match m {
            Mutation::Flip(f, b) => {
                if !data.is_empty() {
                    let i = pos(*f, data.len() - 1);
                    data[i] ^= b;
                }
            }
            Mutation::Extreme(f, w, v) => {
                let i = pos(*f, data.len().saturating_sub(*w));
                let bytes = v.to_le_bytes();
                for (k, b) in bytes[..*w].iter().enumerate() {
                    if let Some(d) = data.get_mut(i + k) {
                        *d = *b;
                    }
                }
            }
            Mutation::Truncate(f) => {
                let i = pos(*f, data.len());
                data.truncate(i);
            }
            Mutation::Insert(f, v) => {
                let i = pos(*f, data.len());
                data.splice(i..i, v.iter().copied());
            }
            Mutation::Fragment(f, k) => {
                let i = pos(*f, data.len());
                data.splice(i..i, FRAGMENTS[*k].iter().copied());
            }
        }
    }
    data
}

type Load = fn(&Path) -> Result<(), Error>;

/// Fuzzes `load` on mutations of `seeds`, each written to a file named
/// `file_name` (its extension picks the format where the loader looks).
fn fuzz(what: &str, file_name: &str, seeds: Vec<Vec<u8>>, load: Load) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(file_name);
    // Every seed itself first.
    for s in &seeds {
        std::fs::write(&path, s).unwrap();
        check(what, &path, load);
    }
    let mut runner = TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (0..seeds.len(), prop::collection::vec(mutation(), 1..6));
    runner
        .run(&strategy, |(k, muts)| {
            std::fs::write(&path, apply(seeds[k].clone(), &muts)).unwrap();
            check(what, &path, load);
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{what}: {e}"));
}

/// One load: `Ok`, or an error of one bounded line (a panic fails the
/// proptest case and is shrunk).
fn check(what: &str, path: &Path, load: Load) {
    if let Err(e) = load(path) {
        let msg = e.to_string();
        assert!(
            !msg.contains('\n') && msg.chars().count() <= MAX_ERROR_CHARS,
            "{what}: error of {} lines, {} chars: {:.300}",
            msg.lines().count(),
            msg.chars().count(),
            msg
        );
    }
}

fn read(rel: &str) -> Vec<u8> {
    std::fs::read(golden(rel)).unwrap()
}

fn with_hostile(mut seeds: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    seeds.extend(hostile_npy());
    seeds
}

#[test]
fn fuzz_npy() {
    let seeds = with_hostile(vec![
        read("seed/x.npy"),
        read("seed/expected_y.npy"),
        read("single_step/x.npy"),
    ]);
    fuzz("npy", "x.npy", seeds, |p| io::read_npy(p).map(drop));
}

#[test]
fn fuzz_npy_lengths() {
    let lens = npy(
        "{'descr': '<i8', 'fortran_order': False, 'shape': (3,), }",
        &[
            3, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0,
        ],
    );
    fuzz("lengths", "lens.npy", with_hostile(vec![lens]), |p| {
        io::read_npy_lengths(p).map(drop)
    });
}

#[test]
fn fuzz_npz() {
    let seeds = vec![
        read("seed/weights.npz"),
        read("seed/state_in.npz"),
        read("frameworks/tf_cell/weights.npz"),
        npz(&[("a.npy", &hostile_npy()[0])], true),
        npz(
            &[("a.npy", &hostile_npy()[2]), ("b.npy", &hostile_npy()[5])],
            false,
        ),
    ];
    fuzz("npz", "t.npz", seeds, |p| io::read_npz(p).map(drop));
}

#[test]
fn fuzz_seed_weights() {
    let base = golden("seed/weights.npz");
    let seeds = vec![
        read("seed/weights.npz"),
        read("peephole_only/weights.npz"),
        bomb_npz(&base),
    ];
    fuzz("seed npz", "w.npz", seeds, |p| {
        io::load_seed_weights(p).map(drop)
    });
    let seeds = vec![
        read("seed/weights.safetensors"),
        read("plain/weights.safetensors"),
    ];
    fuzz("seed safetensors", "w.safetensors", seeds, |p| {
        io::load_seed_weights(p).map(drop)
    });
}

#[test]
fn fuzz_safetensors() {
    let seeds = vec![
        read("seed/weights.safetensors"),
        read("frameworks/torch_cell/weights.safetensors"),
    ];
    fuzz("safetensors", "t.safetensors", seeds, |p| {
        io::read_safetensors(p).map(drop)
    });
}

#[test]
fn fuzz_framework_importers() {
    fuzz(
        "pytorch",
        "w.safetensors",
        vec![
            read("frameworks/torch_cell/weights.safetensors"),
            read("frameworks/torch_proj/weights.safetensors"),
        ],
        |p| import::pytorch(p, "lstm.").map(drop),
    );
    fuzz(
        "pytorch stack",
        "w.safetensors",
        vec![
            read("frameworks/torch_lstm/weights.safetensors"),
            read("sequences/torch_2layer_bidir_lens/weights.safetensors"),
        ],
        |p| import::pytorch_stack(p, "lstm.").map(drop),
    );
    fuzz(
        "keras",
        "w.npz",
        vec![read("frameworks/keras_lstm/weights.npz")],
        |p| import::keras(p, "").map(drop),
    );
    fuzz(
        "tf",
        "w.npz",
        vec![
            read("frameworks/tf_cell/weights.npz"),
            read("frameworks/tf_peep_proj_clip/weights.npz"),
        ],
        |p| import::tf(p, "", import::TfOptions::default()).map(drop),
    );
}

/// Reads a tensor file and every tensor in it (each read on demand).
fn read_all(p: &Path) -> Result<(), Error> {
    let f = io::read_tensors(p)?;
    for k in f.names() {
        f.get(k)?;
    }
    Ok(())
}

/// The members of a golden zip `torch.save` file.
fn zip_members(rel: &str) -> Vec<(String, Vec<u8>)> {
    let mut z = zip::ZipArchive::new(std::fs::File::open(golden(rel)).unwrap()).unwrap();
    (0..z.len())
        .map(|i| {
            let mut f = z.by_index(i).unwrap();
            let mut v = Vec::new();
            std::io::Read::read_to_end(&mut f, &mut v).unwrap();
            (f.name().unwrap().to_string(), v)
        })
        .collect()
}

/// Issue 16: `torch.save` files, zip and legacy, as whole files (zip
/// mutations mostly hit the container; legacy ones the pickles and the
/// storage list), through the tensor reader and the PyTorch importers.
#[test]
fn fuzz_torch_save_files() {
    let seeds = vec![
        read("frameworks/torch_pt_lstm/weights.pt"),
        read("frameworks/torch_pt_views/weights.pt"),
        read("frameworks/torch_pt_bn_prefix/weights.pt"),
        read("frameworks/torch_pt_bf16/weights.pt"),
        read("frameworks/torch_pt_legacy/weights.pt"),
        read("bad_torch/full_model.pt"),
    ];
    fuzz("torch.save", "m.pt", seeds.clone(), read_all);
    fuzz("torch.save pytorch", "m.pt", seeds.clone(), |p| {
        import::pytorch(p, "lstm").map(drop)
    });
    fuzz("torch.save stack", "m.pt", seeds, |p| {
        import::pytorch_stack(p, "").map(drop)
    });
}

/// Issue 16: the unpickler itself: a zip save's `data.pkl` mutated, then
/// zipped again with the storages of `torch_pt_lstm` (so the zip's CRC
/// never hides the mutation), read from bytes, every tensor read.
#[test]
fn fuzz_torch_pickles() {
    let pkl = |rel: &str| {
        zip_members(rel)
            .into_iter()
            .find(|(n, _)| n.ends_with("data.pkl"))
            .unwrap()
            .1
    };
    let seeds = vec![
        pkl("frameworks/torch_pt_lstm/weights.pt"),
        pkl("frameworks/torch_pt_views/weights.pt"),
        pkl("frameworks/torch_pt_bn_prefix/weights.pt"),
    ];
    fuzz("torch pickle", "data.pkl", seeds, |p| {
        let pkl = std::fs::read(p).unwrap();
        let members = zip_members("frameworks/torch_pt_lstm/weights.pt");
        let members: Vec<(&str, &[u8])> = members
            .iter()
            .map(|(n, b)| {
                let b: &[u8] = if n.ends_with("data.pkl") { &pkl } else { b };
                (n.as_str(), b)
            })
            .collect();
        let f = io::read_tensors_from_bytes(&npz(&members, false), "m.pt")?;
        for k in f.names() {
            f.get(k)?;
        }
        Ok(())
    });
}

#[test]
fn fuzz_onnx() {
    let seeds = vec![
        read("frameworks/onnx_plain/weights.onnx"),
        read("frameworks/onnx_peep_clip_coupled/weights.onnx"),
        read("sequences/onnx_bidir_lens/weights.onnx"),
        read("bad_onnx/two_lstm_nodes.onnx"),
        // Issue 16: exporters' graphs (stacks, glue, folded constants) and
        // hostile ones.
        read("sequences/onnx_export_torch_2layer_op14/weights.onnx"),
        read("sequences/onnx_export_torch_bidir2_op17/weights.onnx"),
        read("sequences/onnx_export_tf2onnx_stack/weights.onnx"),
        read("sequences/onnx_export_tf2onnx_bidir/weights.onnx"),
        read("bad_onnx/fold_reshape_bad.onnx"),
        read("bad_onnx/fold_over_budget.onnx"),
        read("bad_onnx/chain_size_mismatch.onnx"),
        read("bad_onnx/mixed_layout.onnx"),
    ];
    fuzz("onnx", "m.onnx", seeds.clone(), |p| {
        import::onnx(p).map(drop)
    });
    fuzz("onnx stack", "m.onnx", seeds.clone(), |p| {
        import::onnx_stack(p).map(drop)
    });
    fuzz("onnx model", "m.onnx", seeds, |p| {
        import::onnx_model(p).map(drop)
    });
}

/// Models with external data, mutated (locations, offsets, lengths
/// included), loaded from bytes against the directory holding the real
/// data file: errors or loads, never a read outside that directory.
#[test]
fn fuzz_onnx_external_data() {
    let seeds = vec![
        read("sequences/onnx_export_torch_dynamo_bf/weights.onnx"),
        read("sequences/onnx_export_torch_2layer_bf_op17_ext/weights.onnx"),
        read("bad_onnx/ext_beyond.onnx"),
    ];
    fuzz("onnx external data", "m.onnx", seeds, |p| {
        let bytes = std::fs::read(p).unwrap();
        let base = golden("sequences/onnx_export_torch_dynamo_bf");
        import::onnx_model_from_bytes(&bytes, Some(&base), import::LoadOptions::default()).map(drop)
    });
}

#[test]
fn fuzz_charlm_model() {
    let shipped = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("models/charlm-genesis.safetensors"),
    )
    .unwrap();
    fuzz("charlm", "m.safetensors", vec![shipped], |p| {
        CharLm::load(p).map(drop)
    });
}

/// Issue 16, item 3: Keras model files. Legacy `.h5` files and h5py's
/// other layouts as whole files through the Keras loader; the
/// `model.weights.h5` of a `.keras` file mutated and zipped again with its
/// `config.json` (so the zip's CRC never hides the mutation); and
/// `config.json` itself mutated.
/// A member of a golden zip.
#[cfg(feature = "keras")]
fn member(rel: &str, name: &str) -> Vec<u8> {
    zip_members(rel)
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap()
        .1
}

/// A `.keras` zip of a config and weights.
#[cfg(feature = "keras")]
fn rezip(config: &[u8], weights: &[u8]) -> Vec<u8> {
    npz(
        &[("config.json", config), ("model.weights.h5", weights)],
        false,
    )
}

#[cfg(feature = "keras")]
#[test]
fn fuzz_keras_files() {
    let h5_seeds = vec![
        read("sequences/keras_bidir2/model.h5"),
        read("keras/lstm_bidir_sum_last/model.h5"),
        read("keras/h5_variants/latest.h5"),
        read("keras/h5_variants/userblock.h5"),
    ];
    fuzz("keras .h5", "m.h5", h5_seeds, |p| {
        import::keras_model(p).map(drop)
    });
    fuzz(
        "keras model.weights.h5",
        "model.weights.h5",
        vec![
            member("sequences/keras_bidir2/model.keras", "model.weights.h5"),
            member("keras/lstm_bidir_sum_last/model.keras", "model.weights.h5"),
        ],
        |p| {
            let w = std::fs::read(p).unwrap();
            let c = member("sequences/keras_bidir2/model.keras", "config.json");
            let c2 = member("keras/lstm_bidir_sum_last/model.keras", "config.json");
            import::keras_model_from_bytes(&rezip(&c, &w), "m.keras")?;
            import::keras_model_from_bytes(&rezip(&c2, &w), "m.keras").map(drop)
        },
    );
    fuzz(
        "keras config.json",
        "config.json",
        vec![
            member("sequences/keras_bidir2/model.keras", "config.json"),
            member("keras/embed_lstm_dense/model.keras", "config.json"),
        ],
        |p| {
            let c = std::fs::read(p).unwrap();
            let w = member("sequences/keras_bidir2/model.keras", "model.weights.h5");
            import::keras_model_from_bytes(&rezip(&c, &w), "m.keras").map(drop)
        },
    );
}
