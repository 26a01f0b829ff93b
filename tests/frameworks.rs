//! Weights, inputs and outputs from the real frameworks (PyTorch nn.LSTM
//! with and without proj_size, nn.LSTMCell; Keras LSTM; tf.compat.v1
//! LSTMCell plain and with diagonal peepholes, projection, forget_bias,
//! cell_clip and proj_clip; ONNX LSTM run by onnxruntime, plain and with
//! peepholes, clip and input_forget), written by
//! tools/make_framework_goldens.py; PyTorch `torch.save` files (zip and
//! legacy formats, fp16, bf16, strided views, a BatchNorm beside the LSTM)
//! written by tools/make_torch_goldens.py.
//!
//! Tolerance, derived: `reference::forward_with_bound` bounds how far any
//! correct f32 implementation with activation error ≤ 1e-6 can be from the
//! exact result. The framework is such an implementation (its σ/tanh are
//! within a few ulp), so the exact reference must lie within that bound of
//! the framework's numbers — this checks that the semantics (gate order,
//! bias handling, peepholes, clips, projection) are the framework's — and
//! our kernels, within the bound on the other side, are within twice the
//! bound of the framework, on every ISA.

mod common;

use std::path::Path;

use common::golden;
use lstm_kernels::import::{self, TfOptions};
use lstm_kernels::reference::{self, ErrorModel, RefState};
use lstm_kernels::{Isa, Lstm, LstmConfig, LstmWeights, io};

/// The derived check of one case's model (see the module docs): the exact
/// reference within the bound of the framework's numbers, ours within
/// twice it, on each of `isas`.
fn check_case(case: &str, dir: &Path, cfg: LstmConfig, w: &LstmWeights, isas: &[Isa]) {
    let x = io::read_npy(dir.join("x.npy")).unwrap();
    let (c0, m0) = golden::read_state(dir.join("state_in.npz"));
    let (c0, m0) = (&c0.data, &m0.data);
    let batch = x.shape[x.shape.len() - 2];
    let want_y = io::read_npy(dir.join("expected_y.npy")).unwrap().data;
    let (want_c, want_m) = golden::read_state(dir.join("expected_state.npz"));
    let (want_c, want_m) = (&want_c.data, &want_m.data);

    // The exact reference is within the bound of the framework.
    let seed = w.to_seed(&cfg).unwrap();
    let mut rst = RefState::from_f32(batch, c0, m0);
    let b = reference::forward_with_bound(&cfg, &seed, &x.data, &mut rst, ErrorModel::default());
    let close = |what: &str, got: &[f32], want: &[f32], exact: &[f64], bound: &[f64]| {
        assert_eq!(got.len(), want.len(), "{case} {what}: length");
        for k in 0..got.len() {
            let fw_vs_exact = (want[k] as f64 - exact[k]).abs();
            assert!(
                fw_vs_exact <= bound[k],
                "{case} {what}[{k}]: framework {} vs exact {} differ by {fw_vs_exact:e} > bound {:e}: semantics differ",
                want[k],
                exact[k],
                bound[k]
            );
            let ours = (got[k] as f64 - want[k] as f64).abs();
            assert!(
                ours <= 2.0 * bound[k],
                "{case} {what}[{k}]: ours {} vs framework {}: {ours:e} > 2×{:e}",
                got[k],
                want[k],
                bound[k]
            );
        }
    };
    for &isa in isas {
        let model = Lstm::new(cfg, w.clone()).unwrap().with_isa(isa).unwrap();
        let mut st = model.state_from(batch, c0, m0).unwrap();
        let mut y = vec![f32::NAN; want_y.len()];
        model.forward(&mut st, &x.data, &mut y).unwrap();
        close(&format!("{isa} y"), &y, &want_y, &b.y, &b.y_err);
        close(&format!("{isa} c"), st.c(), want_c, &rst.c, &b.c_err);
        close(&format!("{isa} m"), st.m(), want_m, &rst.m, &b.m_err);
    }
}

#[test]
fn every_framework_case_matches_on_every_isa() {
    let cases = golden::framework_cases();
    assert!(cases.len() >= 8, "golden cases missing: {cases:?}");
    for case in &cases {
        let dir = golden::framework(case);
        let (cfg, w) = golden::load_framework(&dir);
        check_case(case, &dir, cfg, &w, &Isa::all_available());
        println!("{case}: {cfg:?} matches");
    }
}

/// The check has teeth: a wrong forget bias, or a dropped peephole, puts
/// the exact reference outside the bound of TF's numbers.
#[test]
fn wrong_semantics_are_caught() {
    let dir = golden::framework("tf_peep_proj_clip");
    let x = io::read_npy(dir.join("x.npy")).unwrap();
    let (c0, m0) = golden::read_state(dir.join("state_in.npz"));
    let want = io::read_npy(dir.join("expected_y.npy")).unwrap().data;
    let batch = x.shape[1];
    let deviates = |fb: f32, drop_peep: bool| {
        let opts = TfOptions {
            forget_bias: fb,
            cell_clip: Some(0.8),
            proj_clip: Some(0.3),
        };
        let (cfg, mut w) = import::tf(golden::weights_file(&dir), "", opts).unwrap();
        if drop_peep {
            w.peep_diag.as_mut().unwrap().fill(0.0);
        }
        let seed = w.to_seed(&cfg).unwrap();
        let mut rst = RefState::from_f32(batch, &c0.data, &m0.data);
        let b =
            reference::forward_with_bound(&cfg, &seed, &x.data, &mut rst, ErrorModel::default());
        want.iter()
            .zip(&b.y)
            .zip(&b.y_err)
            .any(|((&f, &e), &bound)| (f as f64 - e).abs() > bound)
    };
    assert!(!deviates(0.5, false), "the right settings must match");
    assert!(deviates(1.0, false), "a wrong forget_bias went unnoticed");
    assert!(deviates(0.5, true), "dropped peepholes went unnoticed");
}

/// The `torch.save` cases (tools/make_torch_goldens.py).
const TORCH_CASES: [&str; 8] = [
    "torch_pt_lstm",
    "torch_pt_proj",
    "torch_pt_cell",
    "torch_pt_bn_prefix",
    "torch_pt_fp16",
    "torch_pt_bf16",
    "torch_pt_legacy",
    "torch_pt_views",
];

/// Issue 16: every `torch.save` case loads from its path and from its
/// bytes (`pytorch_from_bytes`) to the same weights, and the model read
/// from the bytes passes the derived check against PyTorch's own outputs
/// on every ISA (`check_case`).
#[test]
fn torch_save_files_load_from_paths_and_bytes() {
    for case in TORCH_CASES {
        let dir = golden::framework(case);
        let prefix = golden::meta(&dir)["prefix"].as_str().unwrap().to_string();
        let path = golden::weights_file(&dir);
        let (cfg, w) = import::pytorch(&path, &prefix).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let (cfg2, w2) = import::pytorch_from_bytes(&bytes, "in-memory.pt", &prefix).unwrap();
        assert_eq!((cfg, &w), (cfg2, &w2), "{case}: path and bytes differ");
        check_case(case, &dir, cfg2, &w2, &Isa::all_available());
    }
    // The 2-layer bidirectional stack, from bytes too.
    let dir = golden::sequence("torch_pt_2layer_bidir");
    let bytes = std::fs::read(dir.join("weights.pt")).unwrap();
    let stack = import::pytorch_stack_from_bytes(&bytes, "m.pt", "lstm").unwrap();
    assert_eq!(stack.layers().len(), 2);
    assert!(stack.layers().iter().all(|l| l.backward.is_some()));
}

/// fp16 and bf16 weights are converted to f32 exactly, whichever file
/// holds them: `torch.save`, numpy `<f2` in an npz, safetensors F16/BF16
/// all give the same bits; the dtype is reported as the file spells it.
#[test]
fn half_precision_weights_are_the_same_in_every_format() {
    let bits = |f: &io::TensorFile, k: &str| -> Vec<u32> {
        f.get(k).unwrap().data.iter().map(|v| v.to_bits()).collect()
    };
    for (case, others) in [
        (
            "torch_pt_fp16",
            &["weights_f16.npz", "weights_f16.safetensors"][..],
        ),
        ("torch_pt_bf16", &["weights_bf16.safetensors"][..]),
    ] {
        let dir = golden::framework(case);
        let pt = io::read_tensors(dir.join("weights.pt")).unwrap();
        assert_eq!(pt.len(), 4, "{case}");
        let want = if case.ends_with("fp16") {
            "float16"
        } else {
            "bfloat16"
        };
        assert_eq!(pt.dtype("weight_ih_l0").unwrap(), want);
        for other in others {
            let f = io::read_tensors(dir.join(other)).unwrap();
            assert_eq!(
                f.names().collect::<Vec<_>>(),
                pt.names().collect::<Vec<_>>()
            );
            for k in pt.names() {
                assert_eq!(
                    f.get(k).unwrap().shape,
                    pt.get(k).unwrap().shape,
                    "{case} {other} {k}"
                );
                assert_eq!(bits(&f, k), bits(&pt, k), "{case} {other} {k}");
            }
        }
    }
}

/// Issue 16, item 4: a state dict with a BatchNorm beside the LSTM loads
/// under `lstm` or `lstm.`; its int64 `num_batches_tracked` is listed with
/// its dtype, never read unless asked for (then a dtype error); and
/// without the prefix the error names the key and the prefix to use.
#[test]
fn other_modules_and_int_tensors_are_ignored() {
    let dir = golden::framework("torch_pt_bn_prefix");
    let path = golden::weights_file(&dir);
    let file = io::read_tensors(&path).unwrap();
    assert_eq!(file.dtype("bn.num_batches_tracked").unwrap(), "int64");
    assert_eq!(
        file.shape("bn.num_batches_tracked").unwrap(),
        &[] as &[usize]
    );
    let e = file.get("bn.num_batches_tracked").unwrap_err().to_string();
    assert!(
        e.contains("int64") && e.contains("num_batches_tracked"),
        "{e}"
    );
    let a = import::pytorch_from(&file, "lstm").unwrap();
    let b = import::pytorch(&path, "lstm.").unwrap();
    assert_eq!(a, b);
    assert_eq!(import::pytorch_prefix(&file, "lstm").unwrap(), "lstm.");
    import::pytorch_stack_from(&file, "lstm").unwrap();
    for bad in ["", "lstm_", "model."] {
        let e = import::pytorch(&path, bad).unwrap_err();
        assert!(
            matches!(e, lstm_kernels::Error::MissingTensor { .. }),
            "{e:?}"
        );
        let e = e.to_string();
        assert!(
            e.contains("lstm.weight_ih_l0") && e.contains("--prefix lstm."),
            "{e}"
        );
    }
}

/// `torch.save(model)` pickles the model's classes: refused (nothing is
/// run) with an error that says to save the state dict.
#[test]
fn whole_model_pickles_say_to_save_the_state_dict() {
    for (file, class) in [
        ("full_model.pt", "__main__.FullNet"),
        ("lstm_module.pt", "torch.nn.modules.rnn.LSTM"),
    ] {
        let path = golden::file("bad_torch", file);
        let e = io::read_tensors(&path).unwrap_err();
        assert!(matches!(e, lstm_kernels::Error::Unsupported(_)), "{e:?}");
        let e = e.to_string();
        assert!(
            e.contains(class) && e.contains("model.state_dict()") && e.contains(file),
            "{e}"
        );
        let e = import::pytorch(&path, "").unwrap_err().to_string();
        assert!(e.contains("state_dict"), "{e}");
    }
}

/// Issue 14: ONNX Runtime's `DynamicQuantizeLSTM` (int8 weights as
/// `quantize_dynamic(weight_type=QInt8)` writes them, one scale per tensor
/// or per channel; tools/make_dq_goldens.py) loads as an int8 model that
/// runs the file's own int8 weights: every cell reports an int8 kernel,
/// its outputs are within the int8 bound of the exact reference over the
/// dequantized weights (both directions), and with one scale per tensor
/// they differ from the same weights quantized again per column (so the
/// file's quantization is what runs). `lstm_kernels::import::onnx` (one
/// cell, f32) refuses it and says what to use.
#[test]
fn dynamic_quantize_lstm_runs_its_own_int8_weights() {
    use lstm_kernels::Precision;
    for case in ["onnx_dq_tensor", "onnx_dq_channel"] {
        let dir = golden::dir("quantized").join(case);
        let model = import::onnx_model(dir.join("weights.onnx")).unwrap();
        assert!(!model.batch_first);
        let x = io::read_npy(dir.join("x.npy")).unwrap();
        let (t, b, n) = (x.shape[0], x.shape[1], x.shape[2]);
        let layer = &model.stack.layers()[0];
        let cells: Vec<&Lstm> = std::iter::once(&layer.forward)
            .chain(layer.backward.as_ref())
            .collect();
        for (d, cell) in cells.iter().enumerate() {
            assert_eq!(cell.precision(), Precision::Int8, "{case}");
            assert!(cell.kernel_name().starts_with("int8_"), "{case}");
            // The direction's input order: reversed in time backwards.
            let xs: Vec<f32> = (0..t)
                .flat_map(|s| {
                    let s = if d == 0 { s } else { t - 1 - s };
                    x.data[s * b * n..(s + 1) * b * n].to_vec()
                })
                .collect();
            let cfg = *cell.config();
            let h = cfg.n_hidden;
            let run = |m: &Lstm| {
                let mut st = m.new_state(b).unwrap();
                let mut y = vec![f32::NAN; t * b * h];
                m.forward(&mut st, &xs, &mut y).unwrap();
                y
            };
            let y = run(cell);
            let seed = cell.weights().to_seed(&cfg).unwrap();
            let mut rst = RefState::zeros(&cfg, b);
            let bound = reference::forward_with_bound(
                &cfg,
                &seed,
                &xs,
                &mut rst,
                ErrorModel::for_precision(Precision::Int8),
            );
            for (k, &yk) in y.iter().enumerate() {
                let e = (yk as f64 - bound.y[k]).abs();
                assert!(
                    e <= bound.y_err[k],
                    "{case} dir {d} y[{k}]: {yk} vs exact {}: {e:e} > {:e}",
                    bound.y[k],
                    bound.y_err[k]
                );
            }
            // The file's int8 weights stay the cell's through a switch of
            // precision, and they are not its f32 weights quantized again.
            let again = run(&(*cell)
                .clone()
                .with_precision(Precision::F32)
                .and_then(|m| m.with_precision(Precision::Int8))
                .unwrap());
            assert!(y == again, "{case}: the file's int8 weights were replaced");
            let requantized = Lstm::new(cfg, cell.weights().clone())
                .and_then(|m| m.with_precision(Precision::Int8))
                .unwrap();
            if case == "onnx_dq_tensor" {
                assert!(
                    y != run(&requantized),
                    "{case}: the file's int8 weights were quantized again"
                );
            }
        }
        // Against onnxruntime itself (which quantizes its activations its
        // own way: per tensor, asymmetric): reported, not asserted.
        let want = io::read_npy(dir.join("expected_y.npy")).unwrap().data;
        let mut st = model.stack.new_state(b).unwrap();
        let mut y = vec![f32::NAN; want.len()];
        model
            .stack
            .forward(&mut st, &x.data, &mut y, model.seq_options())
            .unwrap();
        let diff = y
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        println!("{case}: max |ours - onnxruntime| = {diff:e}");
        let e = import::onnx(dir.join("weights.onnx"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("onnx_model"), "{e}");
        if cells.len() == 1 {
            assert!(e.contains("DynamicQuantizeLSTM"), "{e}");
        }
    }
}

/// Issue 16 item 6: the one-layer Keras and TF `.npz` loaders take bytes
/// too, giving exactly what the path gives.
#[test]
fn keras_and_tf_npz_load_from_bytes() {
    let dir = golden::framework("keras_lstm");
    let p = golden::weights_file(&dir);
    let bytes = std::fs::read(&p).unwrap();
    let (c1, w1) = import::keras(&p, "").unwrap();
    let (c2, w2) = import::keras_from_bytes(&bytes, &p, "").unwrap();
    assert_eq!((c1, &w1.gates, &w1.bias), (c2, &w2.gates, &w2.bias));
    let dir = golden::framework("tf_cell");
    let p = golden::weights_file(&dir);
    let bytes = std::fs::read(&p).unwrap();
    let opts = || TfOptions {
        forget_bias: 1.0,
        cell_clip: None,
        proj_clip: None,
    };
    let (c1, w1) = import::tf(&p, "", opts()).unwrap();
    let (c2, w2) = import::tf_from_bytes(&bytes, &p, "", opts()).unwrap();
    assert_eq!((c1, &w1.gates, &w1.bias), (c2, &w2.gates, &w2.bias));
    // Truncated bytes are an error, not a panic.
    assert!(import::tf_from_bytes(&bytes[..bytes.len() / 2], &p, "", opts()).is_err());
}
