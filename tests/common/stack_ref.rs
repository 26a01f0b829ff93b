//! The exact f64 result of one sample through a whole `LstmStack`, with
//! the error bound carried through the layers: each layer's output bound
//! becomes the next layer's input error (`reference::forward_with_bound_f64`),
//! the reverse direction runs over the sample's own reversed steps, and a
//! `Merge::Sum` adds the two directions' bounds plus the rounding of the f32
//! sum. Used by tests/sequences.rs (PyTorch, ONNX, Keras stacks) and
//! tests/keras.rs (whole Keras models).

use lstm_kernels::reference::{self, ErrorModel, RefState};
use lstm_kernels::{Lstm, LstmStack, Merge};

/// The final (c, c bound, m, m bound) of every (layer, direction), in the
/// order layer 0 forward, layer 0 reverse, layer 1 forward, ...
pub type Finals = Vec<(Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>)>;

/// The f32 rounding of a sum `s` of two values within `ea` and `eb` of
/// their exact results: the bound of the computed sum.
pub fn sum_bound(s: f64, ea: f64, eb: f64) -> f64 {
    ea + eb + (s.abs() + ea + eb) * f64::from(f32::EPSILON) / 2.0
}

/// Runs one sample (`x` is `[len, n_in]`, its valid steps) through
/// `stack`, whose bidirectional layers merge by `merge`; `init(k, d)` is
/// layer `k` direction `d`'s initial (c, m). Returns the exact output
/// sequence `[len, width]`, its bound, and the final states.
pub fn exact_sample(
    stack: &LstmStack,
    merge: Merge,
    x: &[f64],
    len: usize,
    init: &dyn Fn(usize, usize) -> (Vec<f32>, Vec<f32>),
) -> (Vec<f64>, Vec<f64>, Finals) {
    let model = ErrorModel::default();
    let (mut xin, mut ein) = (
        x[..len * stack.input_size()].to_vec(),
        vec![0.0; len * stack.input_size()],
    );
    let mut finals = Vec::new();
    for (k, layer) in stack.layers().iter().enumerate() {
        let cfg = *layer.forward.config();
        let n = cfg.n_input;
        let p = cfg.n_output();
        let run = |lstm: &Lstm, d: usize, rev: bool, finals: &mut Finals| {
            let seed = lstm.weights().to_seed(lstm.config()).unwrap();
            let order: Vec<usize> = if rev {
                (0..len).rev().collect()
            } else {
                (0..len).collect()
            };
            let xs: Vec<f64> = order
                .iter()
                .flat_map(|&t| xin[t * n..(t + 1) * n].to_vec())
                .collect();
            let es: Vec<f64> = order
                .iter()
                .flat_map(|&t| ein[t * n..(t + 1) * n].to_vec())
                .collect();
            let (c0, m0) = init(k, d);
            let mut st = RefState::from_f32(1, &c0, &m0);
            let b = reference::forward_with_bound_f64(
                lstm.config(),
                &seed,
                &xs,
                Some(&es),
                &mut st,
                model,
            );
            finals.push((st.c.clone(), b.c_err.clone(), st.m.clone(), b.m_err.clone()));
            let mut y = vec![0.0; len * p];
            let mut e = vec![0.0; len * p];
            for (s, &t) in order.iter().enumerate() {
                y[t * p..(t + 1) * p].copy_from_slice(&b.y[s * p..(s + 1) * p]);
                e[t * p..(t + 1) * p].copy_from_slice(&b.y_err[s * p..(s + 1) * p]);
            }
            (y, e)
        };
        let (yf, ef) = run(&layer.forward, 0, false, &mut finals);
        (xin, ein) = match &layer.backward {
            Some(bm) => {
                let (yb, eb) = run(bm, 1, true, &mut finals);
                match merge {
                    Merge::Concat => {
                        let cat = |a: &[f64], b: &[f64]| {
                            (0..len)
                                .flat_map(|t| {
                                    [&a[t * p..(t + 1) * p], &b[t * p..(t + 1) * p]].concat()
                                })
                                .collect::<Vec<f64>>()
                        };
                        (cat(&yf, &yb), cat(&ef, &eb))
                    }
                    Merge::Sum => {
                        let y: Vec<f64> = yf.iter().zip(&yb).map(|(a, b)| a + b).collect();
                        let e = (0..y.len())
                            .map(|j| sum_bound(y[j], ef[j], eb[j]))
                            .collect();
                        (y, e)
                    }
                }
            }
            None => (yf, ef),
        };
    }
    (xin, ein, finals)
}
