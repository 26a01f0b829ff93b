//! The plain engine: straightforward loops over the canonical concatenated
//! layout, `f32` throughout. Correct for every shape; no SIMD intrinsics and
//! no packing (the compiler auto-vectorises the row updates).
//!
//! Contract of [`step_rows`]: for each of the `rows` samples it reads one
//! input row, the sample's `c`/`m` (length H each) and writes the new `c`,
//! `m` and the output row (length `n_out`). `gates` is scratch of at least
//! `4·H` floats; its contents on entry are ignored (it may hold NaN).

use crate::config::LstmConfig;
use crate::weights::LstmWeights;

#[inline]
fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + (-z).exp())
}

/// `acc[j] += a · w[j]` over the whole slice.
#[inline]
fn axpy(acc: &mut [f32], a: f32, w: &[f32]) {
    for (s, &wj) in acc.iter_mut().zip(w) {
        *s += a * wj;
    }
}

/// One sample through one step (see the module contract).
pub(crate) fn step_row(
    cfg: &LstmConfig,
    w: &LstmWeights,
    x: &[f32],
    c: &mut [f32],
    m: &mut [f32],
    gates: &mut [f32],
    out: &mut [f32],
) {
    let (n, h) = (cfg.n_input, cfg.n_hidden);
    let cols = 4 * h;
    let gates = &mut gates[..cols];
    gates.copy_from_slice(&w.bias);
    for (k, &xk) in x.iter().enumerate() {
        axpy(gates, xk, &w.gates[k * cols..(k + 1) * cols]);
    }
    for (k, &mk) in m.iter().enumerate() {
        axpy(gates, mk, &w.gates[(n + k) * cols..(n + k + 1) * cols]);
    }
    let (ifg, o_pre) = gates.split_at_mut(3 * h);
    for j in 0..h {
        let i = sigmoid(ifg[j]);
        let f = sigmoid(ifg[h + j]);
        let g = ifg[2 * h + j].tanh();
        c[j] = f * c[j] + i * g;
    }
    if let Some(v) = &w.v_o {
        for (k, &ck) in c.iter().enumerate() {
            axpy(o_pre, ck, &v[k * h..(k + 1) * h]);
        }
    }
    for j in 0..h {
        m[j] = sigmoid(o_pre[j]) * c[j].tanh();
    }
    match (&w.w_h, &w.b_h) {
        (Some(wh), Some(bh)) => {
            let p = bh.len();
            out.copy_from_slice(bh);
            for (k, &mk) in m.iter().enumerate() {
                axpy(out, mk, &wh[k * p..(k + 1) * p]);
            }
            for v in out.iter_mut() {
                *v = v.tanh();
            }
        }
        _ => out.copy_from_slice(m),
    }
}
