//! PyTorch nn.LSTM stacks (2–3 layers, bidirectional, proj_size,
//! PackedSequence lengths, batch_first) and ONNX bidirectional LSTM nodes
//! run by onnxruntime (sequence_lens, peepholes), written by
//! tools/make_framework_goldens.py (torch 2.5.1, onnxruntime); ONNX
//! models as the exporters write them (`onnx_export_*`: torch.onnx.export
//! legacy and dynamo, tf2onnx; stacks, bidirectional, batch-first graphs,
//! external data, folded-constant weights), run by onnxruntime, written by
//! tools/make_onnx_export_goldens.py — the layout of an ONNX case is the
//! one the importer finds in the graph, checked against the exporter's;
//! and Keras models (`keras_*`: one LSTM, no bias, two layers with a
//! Dropout between, two Bidirectional layers) saved by Keras 3, written by
//! tools/make_keras_goldens.py (feature `keras`).
//!
//! Tolerance, derived: for every sample on its own, the exact f64
//! reference runs layer by layer (the reverse direction over the sample's
//! own reversed steps), and `reference::forward_with_bound_f64` carries the
//! error bound through the layers (each layer's output bound becomes the
//! next layer's input error). PyTorch's numbers must lie within that bound
//! of the exact result, and ours, on every ISA, within twice it; padded
//! steps must be exactly zero.

mod common;

use std::path::Path;

use common::golden;
use common::stack_ref::exact_sample;
use lstm_kernels::{Isa, LstmStack, Merge, SeqOptions, io};

fn read_lens(path: &Path) -> Option<Vec<usize>> {
    path.exists().then(|| io::read_npy_lengths(path).unwrap())
}

#[test]
fn pytorch_stacks_match_on_every_isa() {
    let cases = golden::sequence_cases();
    assert!(cases.len() >= 15, "{cases:?}");
    for case in &cases {
        let dir = golden::sequence(case);
        let meta = golden::meta(&dir);
        let batch_first = meta["batch_first"].as_bool().unwrap();
        let x = io::read_npy(dir.join("x.npy")).unwrap();
        let (b, t) = if batch_first {
            (x.shape[0], x.shape[1])
        } else {
            (x.shape[1], x.shape[0])
        };
        let lens = read_lens(&dir.join("seq_lens.npy"));
        let want_y = io::read_npy(dir.join("expected_y.npy")).unwrap().data;
        // Graphs that build their own (zero) initial state and do not
        // output the final one have no state files.
        let state_in = dir.join("state_in.npz");
        let state_in = state_in.exists().then(|| golden::read_state(state_in));
        let want_state = dir.join("expected_state.npz");
        let want_state = want_state.exists().then(|| golden::read_state(want_state));
        // Keras model files (tools/make_keras_goldens.py) need the `keras`
        // feature; their `.h5` twins are checked by tests/keras.rs.
        if meta["format"] == "keras" && !cfg!(feature = "keras") {
            continue;
        }
        let (base, _) = golden::load_sequence(&dir);
        let dirs = if base.layers()[0].backward.is_some() {
            2
        } else {
            1
        };
        let n = base.input_size();
        let w = base.output_size();
        let sizes = |k: usize| {
            let c = base.layers()[k].forward.config();
            (c.n_hidden, c.n_recurrent())
        };
        let init = |k: usize, d: usize, i: usize| {
            let l = k * dirs + d;
            let (h, r) = sizes(k);
            match &state_in {
                Some((c0, m0)) => (
                    c0.data[(l * b + i) * h..(l * b + i + 1) * h].to_vec(),
                    m0.data[(l * b + i) * r..(l * b + i + 1) * r].to_vec(),
                ),
                None => (vec![0.0; h], vec![0.0; r]),
            }
        };
        // Exact results and bounds per sample.
        let mut exact = Vec::new();
        for i in 0..b {
            let len = lens.as_ref().map_or(t, |l| l[i]);
            let xi: Vec<f64> = (0..t)
                .flat_map(|s| {
                    let at = if batch_first {
                        (i * t + s) * n
                    } else {
                        (s * b + i) * n
                    };
                    x.data[at..at + n]
                        .iter()
                        .map(|&v| v as f64)
                        .collect::<Vec<_>>()
                })
                .collect();
            exact.push(exact_sample(&base, Merge::Concat, &xi, len, &|k, d| {
                init(k, d, i)
            }));
        }
        let idx = |i: usize, s: usize| {
            if batch_first {
                (i * t + s) * w
            } else {
                (s * b + i) * w
            }
        };
        // PyTorch itself lies within the bound of the exact result.
        for (i, (y, e, _)) in exact.iter().enumerate() {
            let len = lens.as_ref().map_or(t, |l| l[i]);
            for s in 0..len {
                for j in 0..w {
                    let fw = want_y[idx(i, s) + j] as f64;
                    assert!(
                        (fw - y[s * w + j]).abs() <= e[s * w + j],
                        "{case}: torch y[{i},{s},{j}] {fw} vs exact {} (bound {:e}): semantics differ",
                        y[s * w + j],
                        e[s * w + j]
                    );
                }
            }
        }
        for isa in Isa::all_available() {
            let layers = base
                .layers()
                .iter()
                .map(|l| lstm_kernels::StackLayer {
                    forward: l.forward.clone().with_isa(isa).unwrap(),
                    backward: l.backward.clone().map(|m| m.with_isa(isa).unwrap()),
                })
                .collect();
            let stack = LstmStack::new(layers, Merge::Concat).unwrap();
            let mut st = stack.new_state(b).unwrap();
            if let Some((c0, m0)) = &state_in {
                let (mut c, mut m) = (c0.data.clone(), m0.data.clone());
                golden::stack_state_blocks(&mut st, &mut c, &mut m, true);
            }
            let mut out = vec![f32::NAN; t * b * w];
            stack
                .forward(
                    &mut st,
                    &x.data,
                    &mut out,
                    SeqOptions {
                        batch_first,
                        seq_lens: lens.as_deref(),
                    },
                )
                .unwrap();
            for (i, (y, e, finals)) in exact.iter().enumerate() {
                let len = lens.as_ref().map_or(t, |l| l[i]);
                for s in 0..t {
                    for j in 0..w {
                        let (ours, fw) = (out[idx(i, s) + j] as f64, want_y[idx(i, s) + j] as f64);
                        if s < len {
                            assert!(
                                (ours - fw).abs() <= 2.0 * e[s * w + j],
                                "{case} {isa}: y[{i},{s},{j}] ours {ours} torch {fw} > 2×{:e}",
                                e[s * w + j]
                            );
                            let _ = y;
                        } else {
                            assert_eq!(ours, 0.0, "{case} {isa}: padded y[{i},{s},{j}]");
                            assert_eq!(fw, 0.0);
                        }
                    }
                }
                // Final states, PyTorch layout [L*D, B, ·].
                let Some((want_c, want_m)) = &want_state else {
                    continue;
                };
                let (want_c, want_m) = (&want_c.data, &want_m.data);
                for k in 0..stack.layers().len() {
                    let (h, r) = sizes(k);
                    let (f, bk) = st.layer(k).unwrap();
                    for (d, s) in std::iter::once(f).chain(bk).enumerate() {
                        let l = k * dirs + d;
                        let (_, ce, _, me) = &finals[l];
                        for (what, got, want, n, bound) in [
                            ("c_n", s.c(), &want_c[..], h, &ce[..]),
                            ("h_n", s.m(), &want_m[..], r, &me[..]),
                        ] {
                            for j in 0..n {
                                let (ours, fw) =
                                    (got[i * n + j] as f64, want[(l * b + i) * n + j] as f64);
                                assert!(
                                    (ours - fw).abs() <= 2.0 * bound[j],
                                    "{case} {isa}: {what}[{l},{i},{j}] {ours} vs {fw}"
                                );
                            }
                        }
                    }
                }
            }
        }
        println!("{case}: ok");
    }
}
