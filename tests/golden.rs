//! Golden cases written by `tools/make_golden.py`: an independent float64
//! numpy implementation of the seed's equations, on weights and inputs saved
//! from numpy (see tests/golden/README.md). Checked through the library here
//! and through `lstm run --format seed` in tests/cli.rs.
//!
//! Tolerance: the issue asks for agreement "within ~1e-5"; we assert both
//! that and the derived per-element bound of `reference::forward_with_bound`
//! (which is usually tighter).

mod common;

use std::path::Path;

use common::golden::{self, NUMPY_CASES, assert_close_to_numpy, numpy_expected};
use lstm_kernels::reference::{self, ErrorModel, RefState};
use lstm_kernels::{Lstm, LstmWeights, io};

fn initial_state(dir: &Path, batch: usize, h: usize) -> (Vec<f32>, Vec<f32>) {
    let path = dir.join("state_in.npz");
    if path.exists() {
        let (c, m) = golden::read_state(&path);
        (c.data, m.data)
    } else {
        (vec![0.0; batch * h], vec![0.0; batch * h])
    }
}

#[test]
fn library_matches_numpy_for_both_weight_formats() {
    for case in NUMPY_CASES {
        let dir = golden::dir(case);
        for file in ["weights.npz", "weights.safetensors"] {
            let (cfg, seed) = io::load_seed_weights(dir.join(file)).unwrap();
            let x = io::read_npy(dir.join("x.npy")).unwrap();
            let batch = x.shape[x.shape.len() - 2];
            let (c0, m0) = initial_state(&dir, batch, cfg.n_hidden);
            let model = Lstm::new(cfg, LstmWeights::from_seed(&cfg, &seed).unwrap()).unwrap();
            let mut st = model.state_from(batch, &c0, &m0).unwrap();
            let mut y = vec![f32::NAN; x.data.len() / cfg.n_input * cfg.n_output()];
            model.forward(&mut st, &x.data, &mut y).unwrap();

            // Our own reference agrees with numpy to f64 precision...
            let mut rst = RefState::from_f32(batch, &c0, &m0);
            let b = reference::forward_with_bound(
                &cfg,
                &seed,
                &x.data,
                &mut rst,
                ErrorModel::default(),
            );
            let (_, ey, ec, em) = numpy_expected(case);
            for (r, e) in b.y.iter().zip(&ey) {
                assert!((r - e).abs() < 1e-12, "{case}: reference {r} vs numpy {e}");
            }
            // ...and the f32 model is within 1e-5 and the derived bound.
            let what = format!("{case}/{file}");
            assert_close_to_numpy(&format!("{what} y"), &y, &ey, Some(&b.y_err));
            assert_close_to_numpy(&format!("{what} c"), st.c(), &ec, Some(&b.c_err));
            assert_close_to_numpy(&format!("{what} m"), st.m(), &em, Some(&b.m_err));
        }
    }
}
