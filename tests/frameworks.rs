//! Weights, inputs and outputs from the real frameworks (PyTorch nn.LSTM
//! with and without proj_size, nn.LSTMCell; Keras LSTM; tf.compat.v1
//! LSTMCell plain and with diagonal peepholes, projection, forget_bias,
//! cell_clip and proj_clip; ONNX LSTM run by onnxruntime, plain and with
//! peepholes, clip and input_forget), written by
//! tools/make_framework_goldens.py.
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

/// A case's model, read by the importer of its framework.
fn load(dir: &Path) -> (LstmConfig, LstmWeights) {
    let m = golden::meta(dir);
    let prefix = m["prefix"].as_str().unwrap_or("");
    let path = golden::weights_file(dir);
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

#[test]
fn every_framework_case_matches_on_every_isa() {
    let cases = golden::framework_cases();
    assert!(cases.len() >= 8, "golden cases missing: {cases:?}");
    for case in &cases {
        let dir = golden::framework(case);
        let (cfg, w) = load(&dir);
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
        let b =
            reference::forward_with_bound(&cfg, &seed, &x.data, &mut rst, ErrorModel::default());
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
        for isa in Isa::all_available() {
            let model = Lstm::new(cfg, w.clone()).unwrap().with_isa(isa).unwrap();
            let mut st = model.state_from(batch, c0, m0).unwrap();
            let mut y = vec![f32::NAN; want_y.len()];
            model.forward(&mut st, &x.data, &mut y).unwrap();
            close(&format!("{isa} y"), &y, &want_y, &b.y, &b.y_err);
            close(&format!("{isa} c"), st.c(), want_c, &rst.c, &b.c_err);
            close(&format!("{isa} m"), st.m(), want_m, &rst.m, &b.m_err);
        }
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
