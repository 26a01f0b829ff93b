//! The scalar reference: the seed's equations, written out directly on the
//! separate per-gate matrices of [`SeedWeights`], accumulating in `f64`.
//!
//! ```text
//! i = σ(x·w_i + m·u_i + b_i)          f = σ(x·w_f + m·u_f + b_f)
//! c = f⊙c + i⊙tanh(x·w_c + m·u_c + b_c)
//! o = σ(x·w_o + m·u_o + c·v_o + b_o)  (v_o on the NEW c; absent: no term)
//! m = o⊙tanh(c)                       (m recurs)
//! h = tanh(m·w_h + b_h)               (head; absent: the output is m)
//! ```
//!
//! This module is the oracle every fast path is tested against, so it is
//! deliberately independent of the concatenated and packed layouts and of
//! any SIMD code. It is slow and allocates freely.
//!
//! [`forward_with_bound`] also propagates a first-order bound on how far an
//! `f32` implementation may be from these exact values (see [`ErrorModel`]);
//! tests use it as their tolerance.

// Index loops over hidden units mirror the equations (`x_j` for unit j).
#![allow(clippy::needless_range_loop)]

use crate::config::LstmConfig;
use crate::weights::SeedWeights;

/// Reference state for a batch: `c` (`[batch, H]`) and the recurrent `m`
/// (`[batch, R]`, R = projection size or H), in `f64`.
#[derive(Clone, Debug, PartialEq)]
pub struct RefState {
    /// Batch size.
    pub batch: usize,
    /// Cell state `c`, `[batch, H]`.
    pub c: Vec<f64>,
    /// Recurrent output `m` (or `r` with a projection), `[batch, R]`.
    pub m: Vec<f64>,
}

impl RefState {
    /// Zero state.
    pub fn zeros(config: &LstmConfig, batch: usize) -> Self {
        RefState {
            batch,
            c: vec![0.0; batch * config.n_hidden],
            m: vec![0.0; batch * config.n_recurrent()],
        }
    }

    /// State from `f32` values (`c` `[batch, H]`, `m` `[batch, R]`).
    pub fn from_f32(batch: usize, c: &[f32], m: &[f32]) -> Self {
        RefState {
            batch,
            c: c.iter().map(|&v| v as f64).collect(),
            m: m.iter().map(|&v| v as f64).collect(),
        }
    }
}

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

/// `Σ_k a_k · W[k, j]` for a row-major `W` with `cols` columns.
fn dot_col(a: &[f64], w: &[f32], cols: usize, j: usize) -> f64 {
    a.iter()
        .enumerate()
        .map(|(k, &ak)| ak * w[k * cols + j] as f64)
        .sum()
}

/// Everything one sample's step computed, kept for the error bound.
struct RowTrace {
    i: Vec<f64>,
    f: Vec<f64>,
    g: Vec<f64>,
    o: Vec<f64>,
    c: Vec<f64>,
    m: Vec<f64>,
    /// What recurs: `r = m·W_p` with a projection, else `m`.
    r: Vec<f64>,
    h: Option<Vec<f64>>,
}

/// One sample through one step, straight from the equations (with the
/// variants: diagonal peepholes, forget bias, ONNX clip, coupled gates,
/// cell clip, projection).
fn step_row(
    cfg: &LstmConfig,
    w: &SeedWeights,
    x: &[f64],
    c_prev: &[f64],
    r_prev: &[f64],
) -> RowTrace {
    let h = cfg.n_hidden;
    let gate = |wx: &[f32], u: &[f32], b: &[f32], j: usize| {
        dot_col(x, wx, h, j) + dot_col(r_prev, u, h, j) + b[j] as f64
    };
    // ONNX `clip` bounds the gates' pre-activations (after bias and
    // peepholes), as onnxruntime does; not the state entering tanh(c).
    let act_in = |z: f64| cfg.clip.map_or(z, |t| z.clamp(-t as f64, t as f64));
    let diag =
        |d: &Option<Vec<f32>>, j: usize, c: &[f64]| d.as_ref().map_or(0.0, |d| d[j] as f64 * c[j]);
    let fb = cfg.forget_bias as f64;
    let i: Vec<f64> = (0..h)
        .map(|j| {
            sigmoid(act_in(
                gate(&w.w_i, &w.u_i, &w.b_i, j) + diag(&w.w_ci, j, c_prev),
            ))
        })
        .collect();
    let f: Vec<f64> = (0..h)
        .map(|j| {
            if cfg.input_forget {
                1.0 - i[j]
            } else {
                sigmoid(act_in(
                    gate(&w.w_f, &w.u_f, &w.b_f, j) + fb + diag(&w.w_cf, j, c_prev),
                ))
            }
        })
        .collect();
    let g: Vec<f64> = (0..h)
        .map(|j| act_in(gate(&w.w_c, &w.u_c, &w.b_c, j)).tanh())
        .collect();
    let c: Vec<f64> = (0..h)
        .map(|j| {
            let c = f[j] * c_prev[j] + i[j] * g[j];
            cfg.cell_clip.map_or(c, |t| c.clamp(-t as f64, t as f64))
        })
        .collect();
    let o: Vec<f64> = (0..h)
        .map(|j| {
            let peep = w.v_o.as_ref().map_or(0.0, |v| dot_col(&c, v, h, j)) + diag(&w.w_co, j, &c);
            sigmoid(act_in(gate(&w.w_o, &w.u_o, &w.b_o, j) + peep))
        })
        .collect();
    let m: Vec<f64> = (0..h).map(|j| o[j] * c[j].tanh()).collect();
    let r = match (&w.w_p, cfg.projection) {
        (Some(wp), Some(rr)) => (0..rr)
            .map(|j| {
                let v = dot_col(&m, wp, rr, j);
                cfg.proj_clip.map_or(v, |t| v.clamp(-t as f64, t as f64))
            })
            .collect(),
        _ => m.clone(),
    };
    let head = match (&w.w_h, &w.b_h, cfg.head) {
        (Some(wh), Some(bh), Some(p)) => Some(
            (0..p)
                .map(|j| (dot_col(&m, wh, p, j) + bh[j] as f64).tanh())
                .collect(),
        ),
        _ => None,
    };
    RowTrace {
        i,
        f,
        g,
        o,
        c,
        m,
        r,
        h: head,
    }
}

/// Runs a time-major sequence `xs` (`[T, batch, n_in]`, T inferred) through
/// the cell, updating `state`; returns the outputs `[T, batch, n_out]`.
///
/// Panics if the slice lengths do not fit `config` and `state.batch`
/// (the reference is a test oracle, not a public entry point for data).
pub fn forward(config: &LstmConfig, w: &SeedWeights, xs: &[f32], state: &mut RefState) -> Vec<f64> {
    let xs: Vec<f64> = xs.iter().map(|&v| v as f64).collect();
    forward_impl(config, w, &xs, None, state, None).0
}

/// The error model of an implementation, for [`forward_with_bound`].
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct ErrorModel {
    /// Largest absolute error of the implementation's `σ` and `tanh` for an
    /// exactly given `f32` argument (the crate documents 1e-6:
    /// [`crate::ACTIVATION_MAX_ABS_ERROR`]).
    pub activation: f64,
    /// Relative error of one product term of the gate GEMM from rounding
    /// its two operands before multiplying: 0 in f32; in bf16 (unit
    /// roundoff `u_b = 2⁻⁸`, both the weight and the operand rounded)
    /// `(1 + u_b)² − 1 = 2u_b + u_b²`. A term `w·a` whose operand `a`
    /// already errs by `e` then errs by this times `|w|·(|a| + e)` more,
    /// and the f32 sum of the rounded products by `γ_K` times their
    /// magnitudes, at most `(1 + this)` times the unrounded ones.
    pub operand_rounding: f64,
    /// The int8 quantization of the gate GEMM (see
    /// [`crate::Precision::Int8`]): each weight column part (its input rows
    /// `W_x`, its recurrent rows `W_h`) with scale `s_w = fl(max|w|/127)`,
    /// each operand row part (`x`, `m`) with `s_a = fl(max|a|/127)`. A term
    /// then errs by `|w|·δa + δw·(|a| + e + δa)` beyond the operand's own
    /// error `e`, with `δw = s_w/2` and `δa = (1/2 + 2⁻¹²)·s_a`, where `s_a`
    /// is bounded from the exact operands plus their error bounds; the
    /// i32 sums are exact, and the dequantization's few f32 roundings are
    /// covered by the γ term over the (inflated) magnitudes.
    pub int8_quantization: bool,
}

impl Default for ErrorModel {
    fn default() -> Self {
        ErrorModel::for_precision(crate::Precision::F32)
    }
}

impl ErrorModel {
    /// The model of this crate's kernels in `precision`.
    pub fn for_precision(precision: crate::Precision) -> Self {
        let u_b = 2f64.powi(-8);
        ErrorModel {
            activation: crate::ACTIVATION_MAX_ABS_ERROR as f64,
            operand_rounding: match precision {
                crate::Precision::Bf16 => 2.0 * u_b + u_b * u_b,
                _ => 0.0,
            },
            int8_quantization: precision == crate::Precision::Int8,
        }
    }
}

/// Reference outputs with per-element error bounds.
#[derive(Clone, Debug)]
pub struct Bounded {
    /// Exact outputs `[T, batch, n_out]`.
    pub y: Vec<f64>,
    /// Bound on `|y_f32 - y|` per element.
    pub y_err: Vec<f64>,
    /// Bound on the final `|c_f32 - c|` per element, `[batch, H]`.
    pub c_err: Vec<f64>,
    /// Bound on the final `|m_f32 - m|` per element, `[batch, R]` (R the
    /// projection size with a projection, else H).
    pub m_err: Vec<f64>,
}

/// Like [`forward`], and also bounds, element by element, how far any
/// correct `f32` implementation may be from the exact result, assuming the
/// starting state is exact.
///
/// The bound is a first-order forward error analysis that follows the data:
/// * a dot product of `n` terms (any order, with or without FMA) errs by at
///   most `γ_n · Σ|aₖ·bₖ|`, `γ_n = n·u/(1−n·u)`, `u = 2⁻²⁴`, plus
///   `Σ|W|·(error already in the operand)`; a flushed subnormal adds
///   `≤ 2⁻¹²⁶` per term;
/// * `σ` has slope ≤ 1/4 and `tanh` slope ≤ 1, so their output errs by the
///   slope times the input error plus the activation error of the model;
/// * products and the cell update add the operands' errors times the other
///   operand's magnitude (magnitudes inflated by the errors, so second-order
///   terms are covered) plus two roundings.
///
/// Errors then flow through `c` and `m` to the next step, so the bound grows
/// with T exactly as much as the recurrence amplifies it.
pub fn forward_with_bound(
    config: &LstmConfig,
    w: &SeedWeights,
    xs: &[f32],
    state: &mut RefState,
    model: ErrorModel,
) -> Bounded {
    let xs: Vec<f64> = xs.iter().map(|&v| v as f64).collect();
    forward_with_bound_f64(config, w, &xs, None, state, model)
}

/// [`forward_with_bound`] for inputs that are themselves results: exact
/// `f64` inputs `xs` that an `f32` implementation only has to within
/// `xs_err` (element by element) — e.g. the previous layer of a stack. The
/// input error enters each gate as `Σ|w_k|·xs_err_k`.
pub fn forward_with_bound_f64(
    config: &LstmConfig,
    w: &SeedWeights,
    xs: &[f64],
    xs_err: Option<&[f64]>,
    state: &mut RefState,
    model: ErrorModel,
) -> Bounded {
    let (y, b) = forward_impl(config, w, xs, xs_err, state, Some(model));
    let (y_err, c_err, m_err) = b.expect("bound requested");
    Bounded {
        y,
        y_err,
        c_err,
        m_err,
    }
}

type Bounds = (Vec<f64>, Vec<f64>, Vec<f64>);

fn forward_impl(
    cfg: &LstmConfig,
    w: &SeedWeights,
    xs: &[f64],
    xs_err: Option<&[f64]>,
    st: &mut RefState,
    model: Option<ErrorModel>,
) -> (Vec<f64>, Option<Bounds>) {
    let (n, h, p, b, rr) = (
        cfg.n_input,
        cfg.n_hidden,
        cfg.n_output(),
        st.batch,
        cfg.n_recurrent(),
    );
    assert!(xs.len().is_multiple_of(b * n), "xs is not [T, {b}, {n}]");
    let steps = xs.len() / (b * n);
    let mut y = vec![0.0; steps * b * p];
    let mut y_err = vec![0.0; steps * b * p];
    let mut c_err = vec![0.0; b * h];
    let mut m_err = vec![0.0; b * rr];
    for t in 0..steps {
        for r in 0..b {
            let x = &xs[(t * b + r) * n..(t * b + r + 1) * n];
            let ex = xs_err.map(|e| &e[(t * b + r) * n..(t * b + r + 1) * n]);
            let (cs, ms) = (r * h..(r + 1) * h, r * rr..(r + 1) * rr);
            let tr = step_row(cfg, w, x, &st.c[cs.clone()], &st.m[ms.clone()]);
            if let Some(model) = model {
                let prev = Prev {
                    x,
                    ex,
                    c: &st.c[cs.clone()],
                    m: &st.m[ms.clone()],
                    ec: &c_err[cs.clone()],
                    em: &m_err[ms.clone()],
                };
                let (ec, em, eh) = propagate(cfg, w, &prev, &tr, model);
                c_err[cs.clone()].copy_from_slice(&ec);
                m_err[ms.clone()].copy_from_slice(&em); // the recurrent state's bound
                y_err[(t * b + r) * p..(t * b + r + 1) * p]
                    .copy_from_slice(eh.as_ref().unwrap_or(&em));
            }
            st.c[cs].copy_from_slice(&tr.c);
            st.m[ms].copy_from_slice(&tr.r);
            y[(t * b + r) * p..(t * b + r + 1) * p].copy_from_slice(tr.h.as_ref().unwrap_or(&tr.r));
        }
    }
    (y, model.map(|_| (y_err, c_err, m_err)))
}

/// The previous step's exact values and error bounds for one sample.
struct Prev<'a> {
    x: &'a [f64],
    /// Error of the inputs themselves (a stack's earlier layer), if any.
    ex: Option<&'a [f64]>,
    c: &'a [f64],
    m: &'a [f64],
    ec: &'a [f64],
    em: &'a [f64],
}

/// `γ_n` for f32 plus the f64 reference's own `γ_n` (negligible but honest).
fn gamma(n: usize) -> f64 {
    let g = |u: f64| n as f64 * u / (1.0 - n as f64 * u);
    g(2f64.powi(-24)) + g(2f64.powi(-53))
}

/// Per-term absolute error allowed for flushing a subnormal to zero.
const FLUSH: f64 = 1.2e-38;

/// Error of a dot product `Σ aₖ W[k,j]` whose operand `a` errs by `ea`:
/// returns `(Σ (|aₖ|+eaₖ)|Wₖⱼ|, Σ |Wₖⱼ| eaₖ)`.
fn dot_mag(a: &[f64], ea: Option<&[f64]>, wt: &[f32], cols: usize, j: usize) -> (f64, f64) {
    let mut mag = 0.0;
    let mut prop = 0.0;
    for (k, &ak) in a.iter().enumerate() {
        let wk = (wt[k * cols + j] as f64).abs();
        let e = ea.map_or(0.0, |ea| ea[k]);
        mag += (ak.abs() + e) * wk;
        prop += wk * e;
    }
    (mag, prop)
}

/// The int8 quantization error of `Σ_k a_k·w[k][j]` (see
/// [`ErrorModel::int8_quantization`]): operands `a` erring by `ea`, weights
/// `wt` (`[K, cols]`).
fn int8_term(a: &[f64], ea: Option<&[f64]>, wt: &[f32], cols: usize, j: usize) -> f64 {
    let e = |k: usize| ea.map_or(0.0, |ea| ea[k]);
    let w_max = (0..a.len()).fold(0.0f32, |m, k| m.max(wt[k * cols + j].abs()));
    // The kernel's scales, computed in f32: s_w exactly as packed; s_a from
    // the largest operand the kernel can hold, rounded up by one ulp.
    let s_w = (w_max / 127.0) as f64;
    let a_max = (0..a.len()).fold(0.0f64, |m, k| m.max(a[k].abs() + e(k)));
    let s_a = a_max / 127.0 * (1.0 + 2f64.powi(-23));
    let (dw, da) = (0.5 * s_w, (0.5 + 2f64.powi(-12)) * s_a);
    (0..a.len())
        .map(|k| (wt[k * cols + j] as f64).abs() * da + dw * (a[k].abs() + e(k) + da))
        .sum()
}

/// One sample's error bounds for the step traced in `tr`; returns the bounds
/// on the new `c`, the new recurrent state (`m`, or `r` with a projection)
/// and (with a head) `h`. Clamps (cell clip, ONNX clip, proj clip) are
/// 1-Lipschitz, so they never increase an error and need no term.
fn propagate(
    cfg: &LstmConfig,
    w: &SeedWeights,
    prev: &Prev,
    tr: &RowTrace,
    model: ErrorModel,
) -> (Vec<f64>, Vec<f64>, Option<Vec<f64>>) {
    let (n, h, rr) = (cfg.n_input, cfg.n_hidden, cfg.n_recurrent());
    let act = model.activation;
    let u = 2f64.powi(-24);
    // Pre-activation error of gate (wx, u, b) at unit j, with `extra_terms`
    // more terms (peepholes, forget bias) counted in `extra_mag`/`extra_prop`.
    let pre = |wx: &[f32],
               uu: &[f32],
               b: &[f32],
               j: usize,
               extra_terms: usize,
               extra_mag: f64,
               extra_prop: f64| {
        let (mx, px) = dot_mag(prev.x, prev.ex, wx, h, j);
        let (mm, pm) = dot_mag(prev.m, Some(prev.em), uu, h, j);
        let terms = n + rr + 1 + extra_terms;
        let mag = mx + mm + (b[j] as f64).abs() + extra_mag;
        let q = model.operand_rounding;
        let quant = if model.int8_quantization {
            int8_term(prev.x, prev.ex, wx, h, j) + int8_term(prev.m, Some(prev.em), uu, h, j)
        } else {
            0.0
        };
        gamma(terms) * (mag * (1.0 + q) + quant)
            + q * (mx + mm)
            + quant
            + pm
            + px
            + extra_prop
            + terms as f64 * FLUSH
    };
    // A diagonal peephole term d[j]·c[j] with c erring by ec: (terms, magnitude, propagated).
    let diag = |d: &Option<Vec<f32>>, j: usize, c: f64, ec: f64| match d {
        Some(d) => (
            1,
            (d[j] as f64).abs() * (c.abs() + ec),
            (d[j] as f64).abs() * ec,
        ),
        None => (0, 0.0, 0.0),
    };
    let fb = (cfg.forget_bias != 0.0) as usize;
    let mut ec = vec![0.0; h];
    let mut em = vec![0.0; h];
    for j in 0..h {
        let (cp, ecp) = (prev.c[j].abs(), prev.ec[j]);
        let (ti, mi, pi) = diag(&w.w_ci, j, cp, ecp);
        let ei = pre(&w.w_i, &w.u_i, &w.b_i, j, ti, mi, pi) / 4.0 + act;
        let ef = if cfg.input_forget {
            ei + u
        } else {
            let (tf, mf, pf) = diag(&w.w_cf, j, cp, ecp);
            pre(
                &w.w_f,
                &w.u_f,
                &w.b_f,
                j,
                tf + fb,
                mf + cfg.forget_bias.abs() as f64,
                pf,
            ) / 4.0
                + act
        };
        let eg = pre(&w.w_c, &w.u_c, &w.b_c, j, 0, 0.0, 0.0) + act;
        let (i, f, g) = (tr.i[j].abs(), tr.f[j].abs(), tr.g[j].abs());
        let fc = (f + ef) * (cp + ecp);
        let ig = (i + ei) * (g + eg);
        ec[j] =
            ef * cp + (f + ef) * ecp + ei * g + (i + ei) * eg + 2.0 * u * (fc + ig) + 2.0 * FLUSH;
    }
    for j in 0..h {
        let (mut terms, mut mag, mut prop) = (0, 0.0, 0.0);
        if let Some(v) = &w.v_o {
            let (m2, p2) = dot_mag(&tr.c, Some(&ec), v, h, j);
            (terms, mag, prop) = (h, m2, p2);
        }
        let (td, md, pd) = diag(&w.w_co, j, tr.c[j].abs(), ec[j]);
        let eo = pre(&w.w_o, &w.u_o, &w.b_o, j, terms + td, mag + md, prop + pd) / 4.0 + act;
        let etc = ec[j] + act;
        let (o, tc) = (tr.o[j].abs(), tr.c[j].tanh().abs());
        em[j] = eo * tc + (o + eo) * etc + u * (o + eo) * (tc + etc) + FLUSH;
    }
    let er = match (&w.w_p, cfg.projection) {
        (Some(wp), Some(_)) => (0..rr)
            .map(|j| {
                let (mag, prop) = dot_mag(&tr.m, Some(&em), wp, rr, j);
                gamma(h) * mag + prop + h as f64 * FLUSH
            })
            .collect(),
        _ => em.clone(),
    };
    let eh = match (&w.w_h, &w.b_h, &tr.h) {
        (Some(wh), Some(bh), Some(hv)) => {
            let p = hv.len();
            Some(
                (0..p)
                    .map(|j| {
                        let (mag, prop) = dot_mag(&tr.m, Some(&em), wh, p, j);
                        let terms = h + 1;
                        gamma(terms) * (mag + (bh[j] as f64).abs())
                            + prop
                            + terms as f64 * FLUSH
                            + act
                    })
                    .collect(),
            )
        }
        _ => None,
    };
    (ec, er, eh)
}
