//! Issue 16, item 3: whole Keras models as Keras saves them — `.keras`
//! (Keras 3) and legacy `.h5` (tf-keras) — written with Keras' own outputs
//! by tools/make_keras_goldens.py (keras 3.15, tf-keras 2.21): one LSTM,
//! a stack with a Dropout between, two Bidirectional layers, no bias
//! (under tests/golden/sequences/keras_*, where tests/sequences.rs also
//! checks them against the derived error bound), `go_backwards`, an LSTM
//! followed by a summed Bidirectional that returns its last output only,
//! and Embedding → LSTM → Dense (under tests/golden/keras/). Every case
//! loads from its path and from its bytes, the two saved forms give the
//! same weights bit for bit, and the run is within 5e-5 of Keras; the
//! error cases (relu, hard_sigmoid, a Dense between LSTMs, merge "mul", a
//! weights-only file) are errors that name what is wrong.

mod common;

use std::path::{Path, PathBuf};

use common::golden;
use lstm_kernels::import::{self, KerasModel};
use lstm_kernels::{Error, io};

/// Every case with Keras' outputs: (directory, name).
fn cases() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = golden::sequence_cases()
        .into_iter()
        .filter(|c| c.starts_with("keras_"))
        .map(|c| golden::sequence(&c))
        .collect();
    for c in keras_dirs() {
        if golden::dir("keras").join(&c).join("x.npy").exists() {
            v.push(golden::dir("keras").join(c));
        }
    }
    v
}

fn keras_dirs() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(golden::dir("keras"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("meta.json").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn same_weights(a: &KerasModel, b: &KerasModel, what: &str) {
    let (a, b) = (a.stack().layers(), b.stack().layers());
    assert_eq!(a.len(), b.len(), "{what}");
    for (la, lb) in a.iter().zip(b) {
        assert_eq!(la.forward.weights(), lb.forward.weights(), "{what}");
        assert_eq!(
            la.backward.as_ref().map(|m| m.weights()),
            lb.backward.as_ref().map(|m| m.weights()),
            "{what}"
        );
    }
}

fn within_5e5(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (k, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= 5e-5, "{what}[{k}]: {g} vs Keras {w}");
    }
}

/// Runs `model` on the case's input and initial state: (y, c, m) in the
/// golden layouts.
fn run(dir: &Path, model: &KerasModel) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let x = io::read_npy(dir.join("x.npy")).unwrap();
    let b = x.shape[0];
    let (c0, m0) = golden::read_state(dir.join("state_in.npz"));
    let mut st = model.stack().new_state(b).unwrap();
    let mut l = 0;
    for k in 0..model.stack().layers().len() {
        let (f, r) = st.layer_mut(k).unwrap();
        for s in std::iter::once(f).chain(r) {
            let (hc, hm) = (s.c().len(), s.m().len());
            s.c_mut().copy_from_slice(&c0.data[l * hc..(l + 1) * hc]);
            s.m_mut().copy_from_slice(&m0.data[l * hm..(l + 1) * hm]);
            l += 1;
        }
    }
    let want_len = io::read_npy(dir.join("expected_y.npy")).unwrap().data.len();
    let mut y = vec![f32::NAN; want_len];
    model.forward(&mut st, &x.data, &mut y, None).unwrap();
    let (mut c, mut m) = (Vec::new(), Vec::new());
    for k in 0..model.stack().layers().len() {
        let (f, r) = st.layer(k).unwrap();
        for s in std::iter::once(f).chain(r) {
            c.extend_from_slice(s.c());
            m.extend_from_slice(s.m());
        }
    }
    (y, c, m)
}

#[test]
fn keras_files_match_keras() {
    let cases = cases();
    assert!(cases.len() >= 7, "{cases:?}");
    for dir in &cases {
        let case = dir.file_name().unwrap().to_string_lossy().into_owned();
        let k3 = import::keras_model(dir.join("model.keras")).unwrap();
        let h5 = import::keras_model(dir.join("model.h5")).unwrap();
        same_weights(&k3, &h5, &format!("{case}: .keras vs .h5"));
        for file in ["model.keras", "model.h5"] {
            let bytes = std::fs::read(dir.join(file)).unwrap();
            let from_bytes = import::keras_model_from_bytes(&bytes, file).unwrap();
            same_weights(&k3, &from_bytes, &format!("{case}: {file} path vs bytes"));
        }
        assert_eq!(k3.layer_names(), h5.layer_names(), "{case}");
        assert!(k3.batch_first(), "{case}: Keras is batch-first");
        let want_y = io::read_npy(dir.join("expected_y.npy")).unwrap().data;
        let (want_c, want_m) = golden::read_state(dir.join("expected_state.npz"));
        for (form, model) in [("keras", &k3), ("h5", &h5)] {
            let (y, c, m) = run(dir, model);
            within_5e5(&format!("{case} {form} y"), &y, &want_y);
            within_5e5(&format!("{case} {form} c"), &c, &want_c.data);
            within_5e5(&format!("{case} {form} m"), &m, &want_m.data);
        }
        println!("{case}: {:?} notes {:?}", k3.layer_names(), k3.notes());
    }
}

/// What each case must have understood from the config.
#[test]
fn configs_are_read() {
    let k =
        |p: &str| import::keras_model(golden::dir("keras").join(p).join("model.keras")).unwrap();
    let m = k("go_backwards");
    assert!(m.reverse_input() && m.return_sequences());
    let m = k("lstm_bidir_sum_last");
    assert_eq!(m.merge(), lstm_kernels::Merge::Sum);
    assert!(!m.return_sequences());
    assert_eq!(m.stack().layers().len(), 2);
    assert!(m.stack().layers()[1].backward.is_some());
    let m = k("embed_lstm_dense");
    assert!(!m.return_sequences());
    let notes = m.notes().join("\n");
    assert!(
        notes.contains("embed0") && notes.contains("Embedding") && notes.contains("dense2"),
        "{notes}"
    );
    let s = import::keras_model(golden::sequence("keras_stack2_dropout").join("model.h5")).unwrap();
    assert!(s.notes().join(" ").contains("Dropout"), "{:?}", s.notes());
    assert_eq!(s.stack().layers().len(), 2);
}

/// Activations the engine does not run, a Dense between LSTMs, merge
/// "mul" and a weights-only file: errors naming the layer and setting —
/// never run as if they were the defaults.
#[test]
fn unsupported_models_are_clear_errors() {
    for case in keras_dirs().iter().filter(|c| c.starts_with("bad_")) {
        let dir = golden::dir("keras").join(case);
        let meta = golden::meta(&dir);
        let words: Vec<&str> = meta["error"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w.as_str().unwrap())
            .collect();
        let files: Vec<PathBuf> = ["model.keras", "model.h5", "model.weights.h5"]
            .iter()
            .map(|f| dir.join(f))
            .filter(|p| p.exists())
            .collect();
        assert!(!files.is_empty(), "{case}");
        for f in files {
            let e = import::keras_model(&f).unwrap_err();
            let msg = e.to_string();
            for w in &words {
                assert!(
                    msg.contains(w),
                    "{case} {}: `{w}` not in: {msg}",
                    f.display()
                );
            }
            assert!(
                matches!(e, Error::Unsupported(_) | Error::Format { .. }),
                "{e:?}"
            );
        }
    }
}

/// A zip that is not a `.keras` file, and an npz, are told apart from
/// model files.
#[test]
fn not_keras_files() {
    let npz = std::fs::read(golden::framework("keras_lstm").join("weights.npz")).unwrap();
    assert!(!import::is_keras_model(&npz));
    let e = import::keras_model_from_bytes(&npz, "w.npz")
        .unwrap_err()
        .to_string();
    assert!(e.contains("config.json"), "{e}");
    let k = std::fs::read(golden::sequence("keras_lstm_seq").join("model.keras")).unwrap();
    assert!(import::is_keras_model(&k));
    let e = import::keras_model_from_bytes(b"hello", "x")
        .unwrap_err()
        .to_string();
    assert!(e.contains("neither"), "{e}");
}
