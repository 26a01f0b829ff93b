//! Issue 16, item 3: whole Keras models as Keras saves them — `.keras`
//! (Keras 3) and legacy `.h5` (tf-keras) — written with Keras' own outputs
//! by tools/make_keras_goldens.py (keras 3.15, tf-keras 2.21): one LSTM,
//! a stack with a Dropout between, two Bidirectional layers, no bias
//! (under tests/golden/sequences/keras_*, where tests/sequences.rs also
//! checks them against the derived error bound), `go_backwards`, an LSTM
//! followed by a summed Bidirectional that returns its last output only,
//! and Embedding → LSTM → Dense (under tests/golden/keras/). Every case
//! loads from its path and from its bytes, the two saved forms give the
//! same weights bit for bit, and on every ISA the run is within twice the
//! derived bound of Keras, whose outputs must themselves lie within that
//! bound of the exact f64 result (`common::stack_ref`: the bound carried
//! through the layers, go_backwards, sum merges and the final output
//! included); the
//! error cases (relu, hard_sigmoid, a Dense between LSTMs, merge "mul", a
//! weights-only file) are errors that name what is wrong.

mod common;

use std::path::{Path, PathBuf};

use common::golden;
use common::stack_ref::{exact_sample, sum_bound};
use lstm_kernels::import::{self, KerasModel};
use lstm_kernels::{Error, Isa, LstmStack, Merge, StackLayer, io};

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

/// The exact result of every sample of a case, in the golden layouts,
/// with its derived bound (see `common::stack_ref`): `y` (`[B, T, w]`, or
/// `[B, w]` when the last layer returns its final output only), and the
/// final `c` and `m` of every (layer, direction), `[L·D, B, ·]`.
struct Exact {
    y: Vec<f64>,
    y_err: Vec<f64>,
    c: Vec<f64>,
    c_err: Vec<f64>,
    m: Vec<f64>,
    m_err: Vec<f64>,
}

fn exact(dir: &Path, model: &KerasModel) -> Exact {
    assert!(model.batch_first(), "the goldens are batch-first");
    let x = io::read_npy(dir.join("x.npy")).unwrap();
    let (b, t, n) = (x.shape[0], x.shape[1], x.shape[2]);
    let (c0, m0) = golden::read_state(dir.join("state_in.npz"));
    let stack = model.stack();
    let w = model.output_size();
    // (layer, direction) -> offset of its [B, ·] block in the state files.
    let mut blocks = Vec::new();
    let (mut oc, mut om) = (0, 0);
    for layer in stack.layers() {
        let dirs = if layer.backward.is_some() { 2 } else { 1 };
        let mut per_dir = Vec::new();
        for d in 0..dirs {
            let cell = if d == 0 {
                &layer.forward
            } else {
                layer.backward.as_ref().unwrap()
            };
            let (h, r) = (cell.config().n_hidden, cell.config().n_recurrent());
            per_dir.push((oc, om, h, r));
            oc += b * h;
            om += b * r;
        }
        blocks.push(per_dir);
    }
    let out_len = if model.return_sequences() { t * w } else { w };
    let mut e = Exact {
        y: vec![0.0; b * out_len],
        y_err: vec![0.0; b * out_len],
        c: vec![0.0; oc],
        c_err: vec![0.0; oc],
        m: vec![0.0; om],
        m_err: vec![0.0; om],
    };
    for i in 0..b {
        // go_backwards: the layers see the sample's steps reversed.
        let xi: Vec<f64> = (0..t)
            .flat_map(|s| {
                let s = if model.reverse_input() { t - 1 - s } else { s };
                x.data[(i * t + s) * n..(i * t + s + 1) * n]
                    .iter()
                    .map(|&v| v as f64)
                    .collect::<Vec<_>>()
            })
            .collect();
        let init = |k: usize, d: usize| {
            let (oc, om, h, r) = blocks[k][d];
            (
                c0.data[oc + i * h..oc + (i + 1) * h].to_vec(),
                m0.data[om + i * r..om + (i + 1) * r].to_vec(),
            )
        };
        let (y, ye, finals) = exact_sample(stack, model.merge(), &xi, t, &init);
        let mut l = 0;
        for per_dir in &blocks {
            for &(oc, om, h, r) in per_dir {
                let (c, ce, m, me) = &finals[l];
                e.c[oc + i * h..oc + (i + 1) * h].copy_from_slice(c);
                e.c_err[oc + i * h..oc + (i + 1) * h].copy_from_slice(ce);
                e.m[om + i * r..om + (i + 1) * r].copy_from_slice(m);
                e.m_err[om + i * r..om + (i + 1) * r].copy_from_slice(me);
                l += 1;
            }
        }
        let out = i * out_len..(i + 1) * out_len;
        if model.return_sequences() {
            e.y[out.clone()].copy_from_slice(&y);
            e.y_err[out].copy_from_slice(&ye);
        } else {
            // The last layer's final output: its directions' final m,
            // concatenated or summed.
            let last = finals.len() - blocks.last().unwrap().len();
            let (_, _, fm, fe) = &finals[last];
            match (finals.get(last + 1), model.merge()) {
                (None, _) => {
                    e.y[out.clone()].copy_from_slice(fm);
                    e.y_err[out].copy_from_slice(fe);
                }
                (Some((_, _, rm, re)), Merge::Concat) => {
                    e.y[out.clone()].copy_from_slice(&[&fm[..], &rm[..]].concat());
                    e.y_err[out].copy_from_slice(&[&fe[..], &re[..]].concat());
                }
                (Some((_, _, rm, re)), Merge::Sum) => {
                    for j in 0..w {
                        let s = fm[j] + rm[j];
                        e.y[i * out_len + j] = s;
                        e.y_err[i * out_len + j] = sum_bound(s, fe[j], re[j]);
                    }
                }
            }
        }
    }
    e
}

/// Keras' number within the bound of the exact one (else the semantics
/// differ), ours within twice it.
fn check(what: &str, ours: &[f32], keras: &[f32], exact: &[f64], bound: &[f64]) {
    assert_eq!(ours.len(), keras.len(), "{what}: length");
    assert_eq!(exact.len(), keras.len(), "{what}: exact length");
    for k in 0..ours.len() {
        let fw = keras[k] as f64;
        assert!(
            (fw - exact[k]).abs() <= bound[k],
            "{what}[{k}]: Keras {fw} vs exact {} (bound {:e}): semantics differ",
            exact[k],
            bound[k]
        );
        let o = ours[k] as f64;
        assert!(
            (o - fw).abs() <= 2.0 * bound[k],
            "{what}[{k}]: ours {o} vs Keras {fw}: more than 2×{:e} apart",
            bound[k]
        );
    }
}

/// The model with every cell on `isa`.
fn on_isa(model: &KerasModel, isa: Isa) -> KerasModel {
    model
        .clone()
        .map_stack(|s| {
            let layers = s
                .layers()
                .iter()
                .map(|l| StackLayer {
                    forward: l.forward.clone().with_isa(isa).unwrap(),
                    backward: l.backward.clone().map(|m| m.with_isa(isa).unwrap()),
                })
                .collect();
            LstmStack::new(layers, model.merge())
        })
        .unwrap()
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
        let e = exact(dir, &k3);
        for (form, model) in [("keras", &k3), ("h5", &h5)] {
            for isa in Isa::all_available() {
                let (y, c, m) = golden::run_keras(dir, &on_isa(model, isa));
                let at = format!("{case} {form} {isa}");
                check(&format!("{at} y"), &y, &want_y, &e.y, &e.y_err);
                check(&format!("{at} c"), &c, &want_c.data, &e.c, &e.c_err);
                check(&format!("{at} m"), &m, &want_m.data, &e.m, &e.m_err);
            }
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
