//! Every error path of the public API and the file loaders: the right
//! `Error` variant, a message naming the culprit, and never a panic.
//! (The `lstm` binary's error messages are in tests/cli.rs: this file does
//! not run the binary.)

mod common;

use std::path::Path;

use common::golden;
use lstm_kernels::{Error, Lstm, LstmConfig, LstmWeights, Peephole, io};
use proptest::prelude::*;

fn seed_cfg() -> LstmConfig {
    LstmConfig::new(7, 5)
        .with_head(3)
        .with_peephole(Peephole::Matrix)
}

#[test]
fn bad_configs() {
    let cases = [
        (LstmConfig::new(0, 5), "n_input"),
        (LstmConfig::new(7, 0), "n_hidden"),
        (LstmConfig::new(7, 5).with_head(0), "head"),
        (LstmConfig::new(7, 5).with_head(6), "larger than n_hidden"),
        (LstmConfig::new(7, usize::MAX / 2), "exceeds the limit"),
        (LstmConfig::new(usize::MAX, 3), "exceeds the limit"),
        (LstmConfig::new(3, 1 << 40), "exceeds the limit"),
        (
            LstmConfig::new(7, 5).with_head(3).with_projection(4),
            "head and a projection",
        ),
        (LstmConfig::new(7, 5).with_projection(0), "projection size"),
        (
            LstmConfig::new(7, 5).with_proj_clip(1.0),
            "proj_clip needs a projection",
        ),
        (
            LstmConfig::new(7, 5).with_cell_clip(0.0),
            "cell_clip must be",
        ),
        (LstmConfig::new(7, 5).with_clip(f32::NAN), "clip must be"),
        (
            LstmConfig::new(7, 5).with_forget_bias(f32::INFINITY),
            "forget_bias",
        ),
        (
            LstmConfig::new(7, 5)
                .with_peephole(Peephole::Matrix)
                .with_clip(1.0),
            "matrix peephole",
        ),
        (
            LstmConfig::new(7, 5)
                .with_peephole(Peephole::Matrix)
                .with_input_forget(true),
            "matrix peephole",
        ),
    ];
    for (cfg, needle) in cases {
        let e = cfg.validate().unwrap_err();
        assert!(matches!(e, Error::Config(_)), "{cfg:?}: {e:?}");
        assert!(
            e.to_string().contains(needle),
            "{cfg:?}: `{e}` lacks `{needle}`"
        );
        // Model construction validates too.
        assert!(Lstm::new(cfg, LstmWeights::zeros(&LstmConfig::new(1, 1)).unwrap()).is_err());
    }
}

#[test]
fn weights_that_do_not_fit_the_config() {
    let cfg = seed_cfg();
    let mut w = LstmWeights::random(&cfg, 1).unwrap();
    w.gates.pop();
    let e = Lstm::new(cfg, w).unwrap_err().to_string();
    assert!(e.contains("gates") && e.contains("[12, 20]"), "{e}");

    let mut w = LstmWeights::random(&cfg, 1).unwrap();
    w.v_o = None;
    assert!(
        matches!(Lstm::new(cfg, w), Err(Error::MissingTensor { tensor, .. }) if tensor == "v_o")
    );

    let w = LstmWeights::random(&cfg, 1).unwrap();
    assert!(matches!(
        Lstm::new(LstmConfig::new(7, 5), w),
        Err(Error::UnexpectedTensor { .. })
    ));
}

#[test]
fn wrong_shapes_at_run_time() {
    let cfg = seed_cfg();
    let model = Lstm::new(cfg, LstmWeights::random(&cfg, 1).unwrap()).unwrap();
    let mut st = model.new_state(4).unwrap();
    let mut out = vec![0.0; 4 * 3];
    let e = model
        .step(&mut st, &[0.0; 27], &mut out)
        .unwrap_err()
        .to_string();
    assert!(e.contains("`x`") && e.contains("[4, 7]"), "{e}");
    let e = model
        .step(&mut st, &[0.0; 28], &mut [0.0; 11])
        .unwrap_err()
        .to_string();
    assert!(e.contains("output") && e.contains("[4, 3]"), "{e}");
    let e = model
        .forward(&mut st, &[0.0; 29], &mut out)
        .unwrap_err()
        .to_string();
    assert!(e.contains("xs") && e.contains("multiple of 28"), "{e}");
    let e = model
        .forward(&mut st, &[0.0; 56], &mut out)
        .unwrap_err()
        .to_string();
    assert!(e.contains("output") && e.contains("[2, 4, 3]"), "{e}");
    // T = 0 is a valid empty sequence.
    model.forward(&mut st, &[], &mut []).unwrap();

    assert!(model.new_state(0).is_err());
    assert!(model.new_state(usize::MAX / 4).is_err());
    let e = model
        .state_from(4, &[0.0; 20], &[0.0; 19])
        .unwrap_err()
        .to_string();
    assert!(e.contains("state m") && e.contains("[4, 5]"), "{e}");

    // A state made for another model.
    let other = Lstm::new(
        LstmConfig::new(7, 6),
        LstmWeights::random(&LstmConfig::new(7, 6), 1).unwrap(),
    )
    .unwrap();
    let mut foreign = other.new_state(4).unwrap();
    let e = model
        .step(&mut foreign, &[0.0; 28], &mut out)
        .unwrap_err()
        .to_string();
    assert!(e.contains("another model"), "{e}");
}

#[test]
fn missing_and_unknown_tensors() {
    let tmp = tempfile::tempdir().unwrap();
    let full = io::read_npz(golden::file("seed", "weights.npz")).unwrap();
    for drop in ["w_i", "u_f", "b_c", "u_o", "b_o"] {
        let arrays: Vec<(&str, &[usize], &[f32])> = full
            .names()
            .filter(|k| *k != drop)
            .map(|k| {
                let t = full.get(k).unwrap();
                (k, t.shape.as_slice(), t.data.as_slice())
            })
            .collect();
        for ext in ["npz", "safetensors"] {
            let p = tmp.path().join(format!("w.{ext}"));
            io::write_tensors(&p, &arrays).unwrap();
            match io::load_seed_weights(&p) {
                Err(Error::MissingTensor {
                    tensor,
                    source_name,
                }) => {
                    assert_eq!(tensor, drop);
                    assert!(source_name.contains("w."), "{source_name}");
                }
                other => panic!("dropping {drop}: {other:?}"),
            }
        }
    }
    // b_h without w_h, a misshapen tensor, an unknown name.
    let mut arrays: Vec<(&str, &[usize], &[f32])> = full
        .names()
        .filter(|k| *k != "w_h")
        .map(|k| {
            let t = full.get(k).unwrap();
            (k, t.shape.as_slice(), t.data.as_slice())
        })
        .collect();
    let p = tmp.path().join("w.npz");
    io::write_npz(&p, &arrays).unwrap();
    assert!(
        io::load_seed_weights(&p)
            .unwrap_err()
            .to_string()
            .contains("w_h")
    );
    let bad = vec![0.0f32; 6];
    arrays.retain(|(k, _, _)| *k != "b_h");
    arrays.retain(|(k, _, _)| *k != "u_i");
    arrays.push(("u_i", &[2, 3], &bad));
    io::write_npz(&p, &arrays).unwrap();
    let e = io::load_seed_weights(&p).unwrap_err().to_string();
    assert!(
        e.contains("u_i") && e.contains("[2, 3]") && e.contains("[5, 5]"),
        "{e}"
    );
    arrays.retain(|(k, _, _)| *k != "u_i");
    let ui = full.get("u_i").unwrap();
    arrays.push(("u_i", &ui.shape, &ui.data));
    arrays.push(("w_x", &[1], &bad[..1]));
    io::write_npz(&p, &arrays).unwrap();
    assert!(
        matches!(io::load_seed_weights(&p), Err(Error::UnexpectedTensor { tensor, .. }) if tensor == "w_x")
    );
}

/// A hand-made `.npy` of `n` zeros of `elem` bytes, with an arbitrary
/// dtype string.
fn npy_with_dtype(descr: &str, n: usize, elem: usize) -> Vec<u8> {
    golden::npy_bytes(descr, n, &vec![0u8; n * elem])
}

#[test]
fn wrong_dtypes() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("x.npy");
    std::fs::write(&p, npy_with_dtype("<i4", 3, 4)).unwrap();
    match io::read_npy(&p) {
        Err(Error::Dtype { dtype, .. }) => assert!(dtype.contains("i4"), "{dtype}"),
        other => panic!("{other:?}"),
    }
    // float64 is accepted and converted.
    std::fs::write(&p, npy_with_dtype("<f8", 3, 8)).unwrap();
    assert_eq!(io::read_npy(&p).unwrap().data, vec![0.0; 3]);

    let data = [0u8; 12];
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::I32, vec![3], &data).unwrap();
    let bytes = safetensors::serialize([("w_i", view)], None).unwrap();
    let p = tmp.path().join("w.safetensors");
    std::fs::write(&p, bytes).unwrap();
    assert!(
        matches!(io::load_seed_weights(&p), Err(Error::Dtype { tensor, .. }) if tensor == "w_i")
    );
}

fn load_any(path: &Path) -> Result<(), Error> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("npy") => io::read_npy(path).map(drop),
        _ => io::load_seed_weights(path).map(drop),
    }
}

#[test]
fn every_truncation_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    for (case, file) in [
        ("seed", "weights.npz"),
        ("seed", "weights.safetensors"),
        ("single_step", "weights.npz"),
        ("seed", "x.npy"),
    ] {
        let bytes = std::fs::read(golden::file(case, file)).unwrap();
        let p = tmp.path().join(file);
        for len in 0..bytes.len() {
            std::fs::write(&p, &bytes[..len]).unwrap();
            assert!(
                load_any(&p).is_err(),
                "{case}/{file} truncated to {len} bytes loaded"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Random byte corruption: an error or a successful load, never a panic.
    #[test]
    fn corrupt_files_never_panic(
        which in 0usize..3,
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let (case, file) = [("seed", "weights.npz"), ("seed", "weights.safetensors"), ("seed", "x.npy")][which];
        let mut bytes = std::fs::read(golden::file(case, file)).unwrap();
        for (i, b) in edits {
            let k = i.index(bytes.len());
            bytes[k] = b;
        }
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join(file);
        std::fs::write(&p, &bytes).unwrap();
        let _ = load_any(&p);
    }
}

#[test]
fn nonexistent_file_names_the_path() {
    let e = io::load_seed_weights("/nonexistent/w.npz")
        .unwrap_err()
        .to_string();
    assert!(e.contains("/nonexistent/w.npz"), "{e}");
}

/// Every framework loader: each truncation of its weight file is an error,
/// and random corruption is an error or a load, never a panic.
#[test]
fn framework_loaders_reject_truncated_files() {
    let tmp = tempfile::tempdir().unwrap();
    for (case, file, format) in [
        ("torch_proj", "weights.safetensors", "pytorch"),
        ("keras_lstm", "weights.npz", "keras"),
        ("tf_peep_proj_clip", "weights.npz", "tf"),
    ] {
        let bytes = std::fs::read(golden::framework(case).join(file)).unwrap();
        let p = tmp.path().join(file);
        for len in (0..bytes.len()).step_by(7) {
            std::fs::write(&p, &bytes[..len]).unwrap();
            assert!(
                load_framework(format, &p).is_err(),
                "{case} truncated to {len} bytes loaded"
            );
        }
    }
}

fn load_framework(format: &str, p: &Path) -> Result<(), Error> {
    use lstm_kernels::import;
    match format {
        "pytorch" => import::pytorch(p, "lstm.").map(drop),
        "keras" => import::keras(p, "").map(drop),
        "onnx" => import::onnx(p).map(drop),
        _ => import::tf(p, "", import::TfOptions::default()).map(drop),
    }
}

/// ONNX (protobuf) has no length header: a cut that only drops trailing
/// fields after the graph (opset_import) still decodes. Every truncation
/// must then be an error or give exactly the full file's weights.
#[test]
fn onnx_truncations_error_or_load_the_same_weights() {
    use lstm_kernels::import;
    let full_path = golden::framework("onnx_peep_clip_coupled").join("weights.onnx");
    let full = import::onnx(&full_path).unwrap();
    let bytes = std::fs::read(&full_path).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("m.onnx");
    let mut errors = 0;
    for len in 0..bytes.len() {
        std::fs::write(&p, &bytes[..len]).unwrap();
        match import::onnx(&p) {
            Ok(w) => assert_eq!(
                w, full,
                "a truncation to {len} bytes loaded different weights"
            ),
            Err(_) => errors += 1,
        }
    }
    assert!(
        errors > bytes.len() * 9 / 10,
        "only {errors} of {} truncations failed",
        bytes.len()
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn corrupt_framework_files_never_panic(
        which in 0usize..4,
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let (case, file, format) = [
            ("torch_proj", "weights.safetensors", "pytorch"),
            ("keras_lstm", "weights.npz", "keras"),
            ("tf_peep_proj_clip", "weights.npz", "tf"),
            ("onnx_peep_clip_coupled", "weights.onnx", "onnx"),
        ][which];
        let mut bytes = std::fs::read(golden::framework(case).join(file)).unwrap();
        for (i, b) in edits {
            let k = i.index(bytes.len());
            bytes[k] = b;
        }
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join(file);
        std::fs::write(&p, &bytes).unwrap();
        let _ = load_framework(format, &p);
    }
}

#[test]
fn framework_loaders_name_missing_and_misshapen_tensors() {
    use lstm_kernels::import;
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("w.npz");
    let k = vec![0.0f32; 7 * 24];
    let b = vec![0.0f32; 24];
    let d = vec![0.0f32; 6];
    io::write_npz(
        &p,
        &[
            ("kernel", &[7, 24], &k),
            ("bias", &[24], &b),
            ("w_i_diag", &[6], &d),
        ],
    )
    .unwrap();
    let e = import::tf(&p, "", import::TfOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("w_f_diag"), "{e}");
    io::write_npz(&p, &[("kernel", &[7, 24], &k), ("bias", &[23], &b[..23])]).unwrap();
    let e = import::tf(&p, "", import::TfOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("bias") && e.contains("[24]"), "{e}");
    io::write_npz(
        &p,
        &[
            ("kernel", &[7, 24], &k),
            ("recurrent_kernel", &[6, 24], &k[..144]),
        ],
    )
    .unwrap();
    assert!(import::keras(&p, "").is_ok());
    io::write_npz(
        &p,
        &[
            ("kernel", &[7, 24], &k),
            ("recurrent_kernel", &[5, 24], &k[..120]),
        ],
    )
    .unwrap();
    let e = import::keras(&p, "").unwrap_err().to_string();
    assert!(
        e.contains("recurrent_kernel") && e.contains("[6, 24]"),
        "{e}"
    );
    io::write_npz(
        &p,
        &[
            ("kernel", &[7, 24], &k),
            ("recurrent_kernel", &[6, 24], &k[..144]),
            ("extra", &[1], &b[..1]),
        ],
    )
    .unwrap();
    assert!(
        matches!(import::keras(&p, ""), Err(Error::UnexpectedTensor { tensor, .. }) if tensor == "extra")
    );
    let st = tmp.path().join("w.safetensors");
    io::write_safetensors(&st, &[("weight_ih_l0", &[24, 7], &k)]).unwrap();
    let e = import::pytorch(&st, "").unwrap_err().to_string();
    assert!(e.contains("weight_hh_l0"), "{e}");
    io::write_safetensors(
        &st,
        &[
            ("weight_ih_l0", &[24, 7], &k),
            ("weight_hh_l0", &[24, 6], &k[..144]),
            ("weight_ih_l1", &[24, 6], &k[..144]),
        ],
    )
    .unwrap();
    let e = import::pytorch(&st, "").unwrap_err().to_string();
    assert!(e.contains("layer 0"), "{e}");
}

/// Crafted ONNX models (`tools/make_bad_onnx.py`), each one way off a valid
/// forward LSTM: every one is an error that names what is wrong, for both
/// the single-layer and the stack importer.
#[test]
fn bad_onnx_models_are_errors() {
    let dir = golden::dir("bad_onnx");
    let cases = [
        ("w_not_initializer", "must be a constant"),
        ("direction_reverse", "direction `reverse`"),
        ("custom_activations", "Relu"),
        ("hidden_size_zero", "hidden_size 0"),
        ("wrong_w_shape", "W in"),
        // Issue 16: several LSTM nodes load as a stack when they are one
        // chain; two reading the same input are not.
        ("two_lstm_nodes", "not one chain"),
        ("no_lstm_node", "no LSTM node"),
        ("int_weights", "data type"),
        // Issue 17: two bytes of a partial float were dropped silently.
        ("raw_data_partial", "not a whole number of 4-byte values"),
        // Issue 17 review: refused rather than ignored (or overflowing).
        ("initial_h_constant", "initial_h is a constant"),
        ("duplicate_initializer", "initializer `W` is given twice"),
        (
            "duplicate_attribute",
            "attribute `hidden_size` is given twice",
        ),
        ("unknown_attribute", "`activation_alpha` is not supported"),
        ("hidden_size_huge", "exceeds the limit"),
        // Issue 16: external data, constant folding, chains of LSTMs.
        (
            "ext_dotdot",
            "not a relative path inside the model's directory",
        ),
        (
            "ext_absolute",
            "not a relative path inside the model's directory",
        ),
        ("ext_beyond", "offset 48 + length 64 is beyond the end"),
        (
            "ext_huge_length",
            "is beyond the end of `ext_data.bin` (64 bytes)",
        ),
        ("ext_offset_huge", "is beyond the end"),
        (
            "ext_missing",
            "external data `no_such_file.bin`: cannot open",
        ),
        ("fold_huge_dims", "exceeds the limit"),
        ("fold_over_budget", "node `big` (ConstantOfShape)"),
        (
            "fold_reshape_bad",
            "node `reshape_bad` (Reshape): cannot reshape [1, 8, 3]",
        ),
        ("fold_unknown_op", "node `mm` (MatMul) cannot be folded"),
        ("fold_cycle", "cycle"),
        (
            "fold_gather_out_of_range",
            "node `gather` (Gather): index 7 is out of range",
        ),
        (
            "chain_size_mismatch",
            "LSTM node `lstm2` takes 3 inputs, but the previous LSTM node `lstm1` outputs 2",
        ),
        ("chain_unknown_op", "node `relu` (Relu) cannot be mapped"),
        ("chain_unsqueezed", "has layout [dim0, 1, dim1, 2]"),
        ("chain_swapped_axes", "has layout [dim1, dim0, 2]"),
        ("chain_from_state", "another LSTM's final state"),
        (
            "output_head",
            "node `head_matmul` (MatMul) cannot be mapped",
        ),
        ("mixed_layout", "one layout for both"),
        ("bidir_relu", "\"Relu\""),
    ];
    for (name, want) in cases {
        let path = dir.join(format!("{name}.onnx"));
        assert!(path.exists(), "{}", path.display());
        let e = lstm_kernels::import::onnx(&path).unwrap_err().to_string();
        assert!(
            e.contains(want) && e.contains(name),
            "{name}: `{e}` should name the file and say `{want}`"
        );
        let e = lstm_kernels::import::onnx_stack(&path)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(want),
            "{name} (stack): `{e}` should say `{want}`"
        );
    }
}

/// Issue 17: a NaN weight in a loaded stack is an error naming the file,
/// the cell and the weight (one NaN turned every output NaN), unless the
/// loader is told to accept it.
#[test]
fn non_finite_weights_in_a_loaded_stack_are_named() {
    use lstm_kernels::import::{self, LoadOptions};
    let src = golden::dir("sequences/torch_2layer_bidir_lens").join("weights.safetensors");
    let file = io::read_tensors(&src).unwrap();
    let names: Vec<String> = file.names().map(str::to_string).collect();
    let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = names
        .iter()
        .map(|n| {
            let t = file.get(n).unwrap();
            (n.clone(), t.shape.clone(), t.data.clone())
        })
        .collect();
    let poisoned = tensors
        .iter_mut()
        .find(|(n, _, _)| n == "lstm.weight_hh_l1_reverse")
        .expect("layer 1 has a reverse direction");
    poisoned.2[5] = f32::NAN;
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("nan.safetensors");
    let arrays: Vec<(&str, &[usize], &[f32])> = tensors
        .iter()
        .map(|(n, s, d)| (n.as_str(), s.as_slice(), d.as_slice()))
        .collect();
    io::write_safetensors(&path, &arrays).unwrap();
    let e = import::pytorch_stack(&path, "lstm.")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("nan.safetensors") && e.contains("layer 1 reverse") && e.contains("is NaN"),
        "{e}"
    );
    let file = io::read_tensors(&path).unwrap();
    let opts = LoadOptions::default().with_non_finite_weights(true);
    import::pytorch_stack_from_with(&file, "lstm.", opts).unwrap();
}

/// Issue 16, item 4, in every tensor file type: a state dict with an
/// int64 counter beside the LSTM (BatchNorm's `num_batches_tracked`)
/// loads, the counter unread; `lstm` and `lstm.` both work as prefixes;
/// without the prefix, the error lists the matching key and the prefix.
#[test]
fn pytorch_state_dicts_ignore_other_tensors_and_suggest_the_prefix() {
    use lstm_kernels::import;
    let tmp = tempfile::tempdir().unwrap();
    let w_ih: Vec<f32> = (0..24).map(|i| (i as f32 * 0.1).sin()).collect();
    let w_hh: Vec<f32> = (0..16).map(|i| (i as f32 * 0.2).cos()).collect();
    let f32_bytes = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
    let count = 7i64.to_le_bytes().to_vec();
    // safetensors, with an I64 tensor.
    let (a, b) = (f32_bytes(&w_ih), f32_bytes(&w_hh));
    let views = vec![
        (
            "lstm.weight_ih_l0",
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![8, 3], &a).unwrap(),
        ),
        (
            "lstm.weight_hh_l0",
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![8, 2], &b).unwrap(),
        ),
        (
            "bn.num_batches_tracked",
            safetensors::tensor::TensorView::new(safetensors::Dtype::I64, vec![], &count).unwrap(),
        ),
    ];
    let st = tmp.path().join("m.safetensors");
    std::fs::write(&st, safetensors::serialize(views, None).unwrap()).unwrap();
    // npz, with an <i8 member.
    let npz = tmp.path().join("m.npz");
    {
        use std::io::Write;
        let mut z = zip::ZipWriter::new(std::fs::File::create(&npz).unwrap());
        let opts = zip::write::SimpleFileOptions::default();
        for (name, bytes) in [
            (
                "lstm.weight_ih_l0.npy",
                io::npy_file_bytes(&[8, 3], &w_ih).unwrap(),
            ),
            (
                "lstm.weight_hh_l0.npy",
                io::npy_file_bytes(&[8, 2], &w_hh).unwrap(),
            ),
            (
                "bn.num_batches_tracked.npy",
                golden::npy_bytes("<i8", 1, &count),
            ),
        ] {
            z.start_file(name, opts).unwrap();
            z.write_all(&bytes).unwrap();
        }
        z.finish().unwrap();
    }
    for path in [&st, &npz] {
        let (cfg, _) = import::pytorch(path, "lstm").unwrap();
        assert_eq!((cfg.n_input, cfg.n_hidden), (3, 2));
        assert!(import::pytorch(path, "lstm.").is_ok());
        assert!(import::pytorch_stack(path, "lstm").is_ok());
        let file = io::read_tensors(path).unwrap();
        assert!(matches!(
            file.get("bn.num_batches_tracked"),
            Err(Error::Dtype { .. })
        ));
        for bad in ["", "lstm.lstm."] {
            let e = import::pytorch_stack(path, bad).unwrap_err().to_string();
            assert!(
                e.contains("`lstm.weight_ih_l0`") && e.contains("--prefix lstm."),
                "{e}"
            );
        }
    }
    // No LSTM at all: the message says what was looked for.
    io::write_safetensors(&st, &[("fc.weight", &[2, 3], &w_ih[..6])]).unwrap();
    let e = import::pytorch(&st, "").unwrap_err().to_string();
    assert!(
        e.contains("no key ends in weight_ih_l0") && e.contains("`fc.weight`"),
        "{e}"
    );
}

/// float16 `.npy` (`<f2`, either byte order) is read as f32, exactly.
#[test]
fn float16_npy_is_converted() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("h.npy");
    // 1.0, -2.0, 65504, the smallest subnormal.
    let le: Vec<u8> = [0x3c00u16, 0xc000, 0x7bff, 0x0001]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    std::fs::write(&p, golden::npy_bytes("<f2", 4, &le)).unwrap();
    assert_eq!(
        io::read_npy(&p).unwrap().data,
        [1.0, -2.0, 65504.0, 5.960_464_5e-8]
    );
    let be: Vec<u8> = [0x3c00u16, 0xc000]
        .iter()
        .flat_map(|v| v.to_be_bytes())
        .collect();
    std::fs::write(&p, golden::npy_bytes(">f2", 2, &be)).unwrap();
    assert_eq!(io::read_npy(&p).unwrap().data, [1.0, -2.0]);
}

/// Issue 16: a batch-first graph (here an LSTM node with `layout = 1`)
/// loads with its layout reported; the loaders that hand back a model for
/// time-major input refuse it rather than run it in the wrong layout.
#[test]
fn batch_first_onnx_graphs_report_their_layout() {
    use lstm_kernels::import;
    let p = golden::dir("bad_onnx").join("layout_batch_first.onnx");
    let m = import::onnx_model(&p).unwrap();
    assert!(m.batch_first && m.seq_options().batch_first);
    assert_eq!((m.input.as_str(), m.output.as_str()), ("X", "Y"));
    for e in [import::onnx(&p).map(drop), import::onnx_stack(&p).map(drop)] {
        let e = e.unwrap_err().to_string();
        assert!(e.contains("batch-first") && e.contains("onnx_model"), "{e}");
    }
    // A time-major export loads through all three.
    let t = golden::dir("sequences/onnx_export_torch_2layer_op14").join("weights.onnx");
    assert!(!import::onnx_model(&t).unwrap().batch_first);
    assert_eq!(import::onnx_stack(&t).unwrap().layers().len(), 2);
    let e = import::onnx(&t).unwrap_err().to_string();
    assert!(e.contains("2 LSTM layers"), "{e}");
}

/// Issue 16: a Keras `Bidirectional` layer's weights in one `.npz` (both
/// directions' keys): each direction loads with its `--prefix`, the other
/// direction's keys are not this layer's business; without a prefix the
/// error lists the layers to choose from; a typo under the prefix is
/// still an error.
#[test]
fn keras_npz_of_a_bidirectional_layer_loads_by_direction() {
    use lstm_kernels::import;
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("bidir.npz");
    let (n, u) = (3, 4);
    let k: Vec<f32> = (0..n * 4 * u).map(|i| i as f32 * 0.01).collect();
    let rk: Vec<f32> = (0..u * 4 * u).map(|i| i as f32 * -0.01).collect();
    let b: Vec<f32> = vec![0.5; 4 * u];
    let names: Vec<String> = ["forward_lstm", "backward_lstm"]
        .iter()
        .flat_map(|d| ["kernel", "recurrent_kernel", "bias"].map(|t| format!("{d}/lstm_cell/{t}")))
        .collect();
    let (sk, srk, sb) = ([n, 4 * u], [u, 4 * u], [4 * u]);
    let arrays: Vec<(&str, &[usize], &[f32])> = names
        .iter()
        .enumerate()
        .map(|(i, name)| match i % 3 {
            0 => (name.as_str(), &sk[..], &k[..]),
            1 => (name.as_str(), &srk[..], &rk[..]),
            _ => (name.as_str(), &sb[..], &b[..]),
        })
        .collect();
    io::write_npz(&p, &arrays).unwrap();
    for d in ["forward_lstm", "backward_lstm"] {
        let (cfg, w) = import::keras(&p, &format!("{d}/lstm_cell/")).unwrap();
        assert_eq!((cfg.n_input, cfg.n_hidden), (n, u));
        assert_eq!(&w.gates[..k.len()], &k[..]);
    }
    let e = import::keras(&p, "").unwrap_err().to_string();
    assert!(
        e.contains("forward_lstm/lstm_cell/")
            && e.contains("backward_lstm/lstm_cell/")
            && e.contains("--prefix"),
        "{e}"
    );
    let typo = tmp.path().join("typo.npz");
    io::write_npz(
        &typo,
        &[
            ("l/kernel", &[n, 4 * u], &k),
            ("l/recurrent_kernel", &[u, 4 * u], &rk),
            ("l/bais", &[4 * u], &b),
        ],
    )
    .unwrap();
    let e = import::keras(&typo, "l/").unwrap_err().to_string();
    assert!(e.contains("l/bais"), "{e}");
}

/// Sequence-length files: a dtype that is not read names the ones that
/// are (it listed only the float types, though int64 is the usual one),
/// and a length too large to be one says so.
#[test]
fn sequence_length_files_say_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("lens.npy");
    std::fs::write(&p, golden::npy_bytes("|u1", 2, &[1, 2])).unwrap();
    let e = io::read_npy_lengths(&p).unwrap_err().to_string();
    assert!(e.contains("|u1") && e.contains("int64"), "{e}");
    let huge = (u64::MAX as f64).to_le_bytes();
    std::fs::write(&p, golden::npy_bytes("<f8", 1, &huge)).unwrap();
    let e = io::read_npy_lengths(&p).unwrap_err().to_string();
    assert!(e.contains("too large"), "{e}");
    let lens: Vec<u8> = [3i64, 1].iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(&p, golden::npy_bytes("<i8", 2, &lens)).unwrap();
    assert_eq!(io::read_npy_lengths(&p).unwrap(), vec![3, 1]);
}
