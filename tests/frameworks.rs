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

use std::path::{Path, PathBuf};
use std::process::Command;

use lstm_kernels::import::{self, TfOptions};
use lstm_kernels::reference::{self, ErrorModel, RefState};
use lstm_kernels::{Isa, Lstm, LstmConfig, LstmWeights, io};

fn dir(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/frameworks")
        .join(case)
}

fn cases() -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/frameworks"))
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.path().join("meta.json").exists())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
    v.sort();
    v
}

fn meta(case: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir(case).join("meta.json")).unwrap()).unwrap()
}

fn weights_file(case: &str) -> PathBuf {
    ["weights.safetensors", "weights.onnx", "weights.npz"]
        .iter()
        .map(|f| dir(case).join(f))
        .find(|p| p.exists())
        .unwrap()
}

fn load(case: &str) -> (LstmConfig, LstmWeights) {
    let m = meta(case);
    let prefix = m["prefix"].as_str().unwrap_or("");
    let path = weights_file(case);
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
    let cases = cases();
    assert!(cases.len() >= 8, "golden cases missing: {cases:?}");
    for case in &cases {
        let (cfg, w) = load(case);
        let x = io::read_npy(dir(case).join("x.npy")).unwrap();
        let st_in = io::read_npz(dir(case).join("state_in.npz")).unwrap();
        let (c0, m0) = (&st_in.get("c").unwrap().data, &st_in.get("m").unwrap().data);
        let batch = x.shape[x.shape.len() - 2];
        let want_y = io::read_npy(dir(case).join("expected_y.npy")).unwrap().data;
        let want_st = io::read_npz(dir(case).join("expected_state.npz")).unwrap();
        let (want_c, want_m) = (
            &want_st.get("c").unwrap().data,
            &want_st.get("m").unwrap().data,
        );

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

#[test]
fn lstm_run_reads_every_format() {
    let tmp = tempfile::tempdir().unwrap();
    for case in cases() {
        let m = meta(&case);
        let y_path = tmp.path().join(format!("{case}.npy"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_lstm"));
        cmd.args([
            "run",
            "--format",
            m["format"].as_str().unwrap(),
            "--prefix",
            m["prefix"].as_str().unwrap(),
            "--weights",
        ])
        .arg(weights_file(&case))
        .arg("--input")
        .arg(dir(&case).join("x.npy"))
        .arg("--state-in")
        .arg(dir(&case).join("state_in.npz"))
        .arg("--output")
        .arg(&y_path);
        if m["format"] == "tf" {
            cmd.args(["--forget-bias", &m["forget_bias"].to_string()]);
            if let Some(c) = m["cell_clip"].as_f64() {
                cmd.args(["--cell-clip", &c.to_string()]);
            }
            if let Some(c) = m["proj_clip"].as_f64() {
                cmd.args(["--proj-clip", &c.to_string()]);
            }
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{case}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let y = io::read_npy(&y_path).unwrap();
        let want = io::read_npy(dir(&case).join("expected_y.npy")).unwrap();
        assert_eq!(y.shape, want.shape, "{case}");
        let worst = y
            .data
            .iter()
            .zip(&want.data)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        // The per-element derived check is above; here the CLI path must
        // give the library's numbers (≈1e-6 of the framework's).
        assert!(
            worst < 1e-5,
            "{case}: CLI output differs from the framework by {worst}"
        );
    }
}

/// The check has teeth: a wrong forget bias, or a dropped peephole, puts
/// the exact reference outside the bound of TF's numbers.
#[test]
fn wrong_semantics_are_caught() {
    let case = "tf_peep_proj_clip";
    let x = io::read_npy(dir(case).join("x.npy")).unwrap();
    let st_in = io::read_npz(dir(case).join("state_in.npz")).unwrap();
    let want = io::read_npy(dir(case).join("expected_y.npy")).unwrap().data;
    let batch = x.shape[1];
    let deviates = |fb: f32, drop_peep: bool| {
        let opts = TfOptions {
            forget_bias: fb,
            cell_clip: Some(0.8),
            proj_clip: Some(0.3),
        };
        let (cfg, mut w) = import::tf(weights_file(case), "", opts).unwrap();
        if drop_peep {
            w.peep_diag.as_mut().unwrap().fill(0.0);
        }
        let seed = w.to_seed(&cfg).unwrap();
        let mut rst = RefState::from_f32(
            batch,
            &st_in.get("c").unwrap().data,
            &st_in.get("m").unwrap().data,
        );
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
