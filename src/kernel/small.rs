//! The register-resident kernels for small cells, used by specialized
//! (generated) kernels when the hidden size fits one vector (`H ≤ LANES`).
//!
//! Two layouts, chosen per call by the number of rows:
//!
//! * **Gates in lanes** ([`run_lanes`], below [`BATCH_MIN_ROWS`] rows): a
//!   sample's gate pre-activations are 4 vectors (one per gate, a unit per
//!   lane); groups of up to 3 samples run the whole sequence with `c` and `m`
//!   in registers (`m`'s lanes broadcast by permutes). One sample's step is
//!   a chain of two matrix–vector products and two activations: latency.
//! * **Batch in lanes** ([`run_batch`]): a vector holds one quantity for
//!   up to `LANES` samples, so each weight is a scalar broadcast and every
//!   gate of every unit is an independent FMA chain: throughput. Only the
//!   recurrence runs step by step; the input projections and the head are
//!   computed per block of steps with (step, sample) pairs dense in lanes.
//!
//! The generated code wraps each in its own `#[target_feature]` function
//! (`cell_7x5h3p__avx512`, `batch_7x5h3p__avx512`); `kernel::run_job`
//! picks one per chunk.
//!
//! Contract of both: the same as `cell::run` (reads `xs`, the chunk's
//! `c` and `m`; writes `out`, `c`, `m`), but without scratch. Every sum is
//! taken in the same order as the generic kernel (bias, inputs, recurrent
//! terms; peephole after), so results are bitwise identical to it.

// Stage-major loops index several per-row arrays by the same row.
#![allow(clippy::needless_range_loop)]
// Only generated kernels call these bodies: a shape list without a small
// cell (`LSTM_KERNELS_SHAPES=only:…`) leaves them unused, and build.rs
// says so with these cfgs (see `codegen::cfgs`).
#![cfg_attr(not(lstm_kernels_small), allow(dead_code))]

use super::cell::Job;
use super::{Balanced, Dims, KernelIsa, Shape};
use crate::activation::{sigmoid, tanh};
use crate::simd::Simd;

/// Rows (of a thread's chunk) from which the batch-in-lanes layout runs.
pub(crate) const BATCH_MIN_ROWS: usize = 5;
/// Most inputs the batch-in-lanes layout takes (its stack buffer).
#[cfg_attr(not(lstm_kernels_batch), allow(dead_code))]
pub(crate) const BATCH_MAX_IN: usize = 32;
/// Most hidden units of a small kernel.
#[cfg_attr(not(lstm_kernels_batch), allow(dead_code))]
const MAX_H: usize = 16;

/// Gates in lanes (see the module docs): groups of up to 3 samples.
///
/// # Safety
/// The CPU supports `S`; `job` was built by `kernel::forward` for a model
/// with `H ≤ S::LANES`, not split by hidden units.
#[inline(always)]
pub(crate) unsafe fn run_lanes<S: KernelIsa, D: Dims>(job: &Job) {
    // Balanced groups of at most GROUP rows (4 rows: 2, 2). Three
    // interleaved rows measured fastest (in a build where this layout also
    // ran B=10: 518 ns/step vs 561 with groups of 2, 654 of 5, 649 of 8):
    // enough independent chains to hide the activations' latency without
    // spilling registers.
    const GROUP: usize = 3;
    for (r0, nr) in Balanced::new(job.rows, GROUP) {
        // SAFETY: forwarded from the caller; rows r0..r0+nr are the job's.
        unsafe {
            match nr {
                1 => group::<S, D, 1>(job, r0),
                2 => group::<S, D, 2>(job, r0),
                _ => group::<S, D, 3>(job, r0),
            }
        }
    }
}

/// Batch in lanes (see the module docs): groups of up to `B::LANES`
/// samples; a group that fits `S`'s narrower vector uses it. `S` is the
/// vector the model is packed for.
///
/// # Safety
/// The CPU supports `S` and `B`; `job` was built by `kernel::forward` for
/// a model with `H ≤ S::LANES` and `n_in ≤ BATCH_MAX_IN`, not split by
/// hidden units.
#[inline(always)]
#[cfg_attr(not(lstm_kernels_batch), allow(dead_code))]
pub(crate) unsafe fn run_batch<S: KernelIsa, B: Simd, D: Dims>(job: &Job) {
    // On this Zen 5 512-bit FMAs issue at half rate: 8 rows took 162 ns
    // per step in 256-bit vectors, 252 in 512-bit. Groups of 9–11 rows as
    // 8 rows in 256-bit vectors with the rest interleaved step by step in
    // the gates-in-lanes layout measured slower (10 rows: 218–225 ns vs
    // 194; 11: 245 vs 199): the batch group's ~1000 instructions a step
    // fill the out-of-order window, so the small group's chain does not
    // overlap them.
    for (r0, nr) in Balanced::new(job.rows, B::LANES) {
        // SAFETY: forwarded from the caller; rows r0..r0+nr are the job's.
        unsafe {
            if nr <= S::LANES {
                group_batch::<S, S, D>(job, r0, nr)
            } else {
                group_batch::<S, B, D>(job, r0, nr)
            }
        };
    }
}

/// Floats in each of the batch layout's buffers of inputs (then outputs)
/// and of `m` (8 KiB each).
#[cfg_attr(not(lstm_kernels_batch), allow(dead_code))]
const BUF: usize = 2048;
/// Floats in its buffer of input projections (16 KiB).
#[cfg_attr(not(lstm_kernels_batch), allow(dead_code))]
const ZBUF: usize = 4096;
/// Most steps per block.
#[cfg_attr(not(lstm_kernels_batch), allow(dead_code))]
const MAX_BLOCK: usize = 32;

/// Batch in lanes: samples `r0..r0+nr` (`nr ≤ B::LANES`), the whole
/// sequence. Weights are read as scalars from the panels packed for `S`.
///
/// Steps run in blocks, and only the recurrence runs step by step, one
/// vector per quantity of the group's rows. What does not recur is done
/// for a whole block at once with its (step, row) pairs packed densely
/// across lanes, so a group of 10 rows does not pay for 16 lanes there:
/// before the steps, the input projections `b + x·W_x` of every pair;
/// after them, the head `tanh(b_h + m·w_h)` of every pair, from the `m`s
/// the steps stored. The inputs are transposed to `[feature][pair]` and
/// the outputs back to `[step, row, feature]` by scalar copies: on this
/// Zen 5, per-step gathers and scatters were 65 of 258 ns per step for 16
/// rows of the seed's cell.
#[inline(always)]
#[cfg_attr(not(lstm_kernels_batch), allow(dead_code))]
unsafe fn group_batch<S: KernelIsa, B: Simd, D: Dims>(job: &Job, r0: usize, nr: usize) {
    let pk = job.packed;
    let d = Shape::of::<S, D>(pk);
    let (l, n, h, p) = (S::LANES, d.n_in, d.h, d.n_out);
    let bl = B::LANES;
    debug_assert!(nr <= bl && n <= BATCH_MAX_IN && h <= MAX_H && p <= MAX_H);
    // Steps per block (no more than the call has, so that a one-step call
    // zeroes little): every buffer holds rows of `stride` floats, a
    // block's pairs plus two vectors of slack (a step's vector covers
    // bl ≥ nr lanes from its first pair, and the projections are computed
    // that far, a vector at a time): n rows of inputs, 4h of projections,
    // h of `m`, p of outputs.
    let block = MAX_BLOCK
        .min(job.steps.max(1))
        .min((BUF / n - 2 * bl) / nr)
        .min((ZBUF / (4 * h) - 2 * bl) / nr)
        .min((BUF / h.max(p) - 2 * bl) / nr);
    let stride = block * nr + 2 * bl;
    // The inputs are dead once projected, so the outputs reuse their
    // buffer: the stack frame is small enough that a one-step call does
    // not pay for it (with 80 KiB of buffers a one-step call of 8 rows
    // took 461 ns instead of 351).
    let mut xy = std::mem::MaybeUninit::<[f32; BUF]>::uninit();
    let mut zx = std::mem::MaybeUninit::<[f32; ZBUF]>::uninit();
    let mut mt = std::mem::MaybeUninit::<[f32; BUF]>::uninit();
    let xt = xy.as_mut_ptr().cast::<f32>();
    let yt = xt;
    let zx = zx.as_mut_ptr().cast::<f32>();
    let mt = mt.as_mut_ptr().cast::<f32>();
    // SAFETY: single panels (H ≤ S::LANES) hold bias + n rows (wx), h rows
    // (wh, vo) and bias + h rows (head) of 4·l floats, unit u of gate g at
    // g·l + u; xs/out/c/m are sized as `kernel::forward` checked and rows
    // r0..r0+nr are the job's; gathers and scatters touch only their first
    // nr lanes. By `block`, every buffer access (a vector from pair
    // q < pairs − nr + bl ≤ block·nr + bl) stays within its row of
    // `stride`. `xt` and `mt` are zeroed first, and the projections are
    // computed up to pair pairs − nr + bl, as far as the steps read them,
    // so every lane read is initialised: lanes past a block's pairs hold
    // stale or zero values, which reach `zx` and `yt` only at pairs ≥ the
    // block's and lanes ≥ nr, never copied out. `yt` is `xt`'s buffer: a
    // block's outputs are written after its inputs were projected and
    // copied out before the next block's inputs come in.
    unsafe {
        let wx = pk.wx.panel(0).as_ptr();
        let wh = pk.wh.panel(0).as_ptr();
        let vo = pk.vo.as_ref().map(|v| v.panel(0).as_ptr());
        let hd = pk.head.as_ref().map(|v| v.panel(0).as_ptr());
        let w = |ptr: *const f32, i: usize| B::splat(*ptr.add(i));
        std::ptr::write_bytes(xt, 0, n * stride);
        std::ptr::write_bytes(mt, 0, h * stride);
        let mut c = [B::splat(0.0); MAX_H];
        let mut m = [B::splat(0.0); MAX_H];
        for u in 0..h {
            c[u] = B::gather(job.c.add(r0 * h + u), h, nr);
            m[u] = B::gather(job.m.add(r0 * h + u), h, nr);
        }
        // Row `j` of step `t` in the batch-wide arrays.
        let at = |t: usize, j: usize| t * job.batch + job.row0 + r0 + j;
        let mut x = [B::splat(0.0); BATCH_MAX_IN];
        let mut acc = [B::splat(0.0); 4 * MAX_H];
        let mut o = [B::splat(0.0); MAX_H];
        let mut b0 = 0;
        while b0 < job.steps {
            let b1 = job.steps.min(b0 + block);
            let pairs = (b1 - b0) * nr;
            // Inputs as [feature][pair], pair = (t − b0)·nr + j.
            for t in b0..b1 {
                for j in 0..nr {
                    let src = job.xs.add(at(t, j) * n);
                    let q = (t - b0) * nr + j;
                    for k in 0..n {
                        *xt.add(k * stride + q) = *src.add(k);
                    }
                }
            }
            // Input projections b + x·W_x of every pair, bl pairs a vector
            // (up to the last step's last lane): per gate unit, the bias and
            // then the inputs in order (the generic kernel's order).
            for q0 in (0..pairs - nr + bl).step_by(bl) {
                for k in 0..n {
                    x[k] = B::load(xt.add(k * stride + q0));
                }
                for g in 0..4 {
                    for u in 0..h {
                        let col = g * l + u;
                        let mut a = w(wx, col);
                        for k in 0..n {
                            a = B::fmadd(x[k], w(wx, (1 + k) * 4 * l + col), a);
                        }
                        B::store(zx.add((g * h + u) * stride + q0), a);
                    }
                }
            }
            for t in b0..b1 {
                let q = (t - b0) * nr;
                // Then the recurrent terms: 4H independent chains of h
                // FMAs, each a register.
                for gu in 0..4 * h {
                    let (g, u) = (gu / h, gu % h);
                    let mut a = B::load(zx.add(gu * stride + q));
                    for k in 0..h {
                        a = B::fmadd(m[k], w(wh, k * 4 * l + g * l + u), a);
                    }
                    acc[gu] = a;
                }
                for u in 0..h {
                    let i = sigmoid::<B>(acc[u]);
                    let f = sigmoid::<B>(acc[h + u]);
                    c[u] = B::fmadd(f, c[u], B::mul(i, tanh::<B>(acc[2 * h + u])));
                    o[u] = acc[3 * h + u];
                }
                if let Some(vo) = vo {
                    for u in 0..h {
                        let mut a = o[u];
                        for k in 0..h {
                            a = B::fmadd(c[k], w(vo, k * 4 * l + u), a);
                        }
                        o[u] = a;
                    }
                }
                // m as [unit][pair]: the lanes past nr land on the next
                // step's pairs (overwritten by it) or the slack.
                for u in 0..h {
                    m[u] = B::mul(sigmoid::<B>(o[u]), tanh::<B>(c[u]));
                    B::store(mt.add(u * stride + q), m[u]);
                }
            }
            // Outputs of every pair: the head, bl pairs a vector (bias,
            // then the units in order, as the generic kernel sums), or m.
            let y = match hd {
                Some(hd) => {
                    for q0 in (0..pairs).step_by(bl) {
                        for u in 0..h {
                            x[u] = B::load(mt.add(u * stride + q0));
                        }
                        for j in 0..p {
                            let mut a = w(hd, j);
                            for k in 0..h {
                                a = B::fmadd(x[k], w(hd, (1 + k) * 4 * l + j), a);
                            }
                            B::store(yt.add(j * stride + q0), tanh::<B>(a));
                        }
                    }
                    yt
                }
                None => mt,
            };
            for t in b0..b1 {
                for j in 0..nr {
                    let dst = job.out.add(at(t, j) * p);
                    let q = (t - b0) * nr + j;
                    for k in 0..p {
                        *dst.add(k) = *y.add(k * stride + q);
                    }
                }
            }
            b0 = b1;
        }
        for u in 0..h {
            B::scatter(job.c.add(r0 * h + u), h, nr, c[u]);
            B::scatter(job.m.add(r0 * h + u), h, nr, m[u]);
        }
    }
}

#[inline(always)]
unsafe fn group<S: KernelIsa, D: Dims, const R: usize>(job: &Job, r0: usize) {
    let pk = job.packed;
    let d = Shape::of::<S, D>(pk);
    let (l, n, h) = (S::LANES, d.n_in, d.h);
    debug_assert!(h <= l && l <= 16);
    // SAFETY: single panels (H ≤ LANES) hold bias + n rows (wx), h rows
    // (wh, vo) and bias + h rows (head) of 4 vectors; xs/out/c/m are sized
    // as `kernel::forward` checked; the stack arrays hold 16 ≥ LANES floats.
    unsafe {
        let wx = pk.wx.panel(0).as_ptr();
        let wh = pk.wh.panel(0).as_ptr();
        let vo = pk.vo.as_ref().map(|v| v.panel(0).as_ptr());
        let row = |r: usize, k: usize| wx.add((1 + k) * 4 * l + r * l);
        let mut c = [S::splat(0.0); R];
        let mut m = [S::splat(0.0); R];
        for r in 0..R {
            let s = r0 + r;
            c[r] = if h == l {
                S::load(job.c.add(s * h))
            } else {
                S::load_partial(job.c.add(s * h), h)
            };
            m[r] = if h == l {
                S::load(job.m.add(s * h))
            } else {
                S::load_partial(job.m.add(s * h), h)
            };
        }
        let bias = [
            S::load(wx),
            S::load(wx.add(l)),
            S::load(wx.add(2 * l)),
            S::load(wx.add(3 * l)),
        ];
        for t in 0..job.steps {
            let mut acc = [bias; R];
            for (r, acc_r) in acc.iter_mut().enumerate() {
                let x = job.xs.add((t * job.batch + job.row0 + r0 + r) * n);
                for k in 0..n {
                    let xk = S::splat(*x.add(k));
                    for (g, a) in acc_r.iter_mut().enumerate() {
                        *a = S::fmadd(xk, S::load(row(g, k)), *a);
                    }
                }
            }
            for k in 0..h {
                let w = wh.add(k * 4 * l);
                let wv = [
                    S::load(w),
                    S::load(w.add(l)),
                    S::load(w.add(2 * l)),
                    S::load(w.add(3 * l)),
                ];
                for r in 0..R {
                    let mk = S::lane_splat(m[r], k);
                    for g in 0..4 {
                        acc[r][g] = S::fmadd(mk, wv[g], acc[r][g]);
                    }
                }
            }
            // One sample: the previous step's output, placed after this
            // step's recurrent sums. Both wait for the same m, and the core
            // issues older instructions first, so the chain that bounds the
            // step now goes first: 52 → 41 ns per step for the seed's cell.
            // (With 2–3 samples their chains overlap anyway, and deferring
            // measured slower: 93 → 106 ns at 3.)
            if R == 1 && t > 0 {
                emit::<S, D, R>(job, r0, t - 1, &m);
            }
            // Stage by stage across the R rows (not row by row), so that the
            // rows' independent dependency chains overlap in the core's
            // out-of-order window.
            let mut i = [S::splat(0.0); R];
            let mut f = [S::splat(0.0); R];
            let mut g = [S::splat(0.0); R];
            let mut o = [S::splat(0.0); R];
            for r in 0..R {
                i[r] = sigmoid::<S>(acc[r][0]);
                f[r] = sigmoid::<S>(acc[r][1]);
                g[r] = tanh::<S>(acc[r][2]);
                o[r] = acc[r][3];
            }
            for r in 0..R {
                c[r] = S::fmadd(f[r], c[r], S::mul(i[r], g[r]));
            }
            if let Some(vo) = vo {
                for k in 0..h {
                    let w = S::load(vo.add(k * 4 * l));
                    for r in 0..R {
                        o[r] = S::fmadd(S::lane_splat(c[r], k), w, o[r]);
                    }
                }
            }
            for r in 0..R {
                m[r] = S::mul(sigmoid::<S>(o[r]), tanh::<S>(c[r]));
            }
            if R > 1 {
                emit::<S, D, R>(job, r0, t, &m);
            }
        }
        if R == 1 && job.steps > 0 {
            emit::<S, D, R>(job, r0, job.steps - 1, &m);
        }
        for r in 0..R {
            let s = r0 + r;
            if h == l {
                S::store(job.c.add(s * h), c[r])
            } else {
                S::store_partial(job.c.add(s * h), c[r], h)
            }
            if h == l {
                S::store(job.m.add(s * h), m[r])
            } else {
                S::store_partial(job.m.add(s * h), m[r], h)
            }
        }
    }
}

/// Gates in lanes: the output of step `t` for samples `r0..r0+R` from
/// their `m`: the head `tanh(b_h + m·w_h)`, or `m` itself.
///
/// # Safety
/// As [`group`].
#[inline(always)]
unsafe fn emit<S: KernelIsa, D: Dims, const R: usize>(
    job: &Job,
    r0: usize,
    t: usize,
    m: &[S::V; R],
) {
    let pk = job.packed;
    let d = Shape::of::<S, D>(pk);
    let (l, h, p) = (S::LANES, d.h, d.n_out);
    // SAFETY: as in `group`: the head panel holds bias + h rows of 4·l
    // floats; out rows of step t are in bounds.
    unsafe {
        let hd = pk.head.as_ref().map(|v| v.panel(0).as_ptr());
        match hd {
            Some(hd) => {
                let mut y = [S::load(hd); R];
                for k in 0..h {
                    let w = S::load(hd.add((1 + k) * 4 * l));
                    for r in 0..R {
                        y[r] = S::fmadd(S::lane_splat(m[r], k), w, y[r]);
                    }
                }
                for r in 0..R {
                    let out = job.out.add((t * job.batch + job.row0 + r0 + r) * p);
                    let y = tanh::<S>(y[r]);
                    if p == l {
                        S::store(out, y)
                    } else {
                        S::store_partial(out, y, p)
                    }
                }
            }
            None => {
                for r in 0..R {
                    let out = job.out.add((t * job.batch + job.row0 + r0 + r) * p);
                    if h == l {
                        S::store(out, m[r])
                    } else {
                        S::store_partial(out, m[r], h)
                    }
                }
            }
        }
    }
}
