//! Batch in lanes: a vector holds one quantity for up to `LANES` samples,
//! so each weight is a scalar broadcast and every gate of every unit is an
//! independent FMA chain: this layout is about throughput. Only the
//! recurrence runs step by step; the input projections and the head are
//! computed per block of steps with (step, sample) pairs dense in lanes.

// Stage-major loops index several per-row arrays by the same row.
#![allow(clippy::needless_range_loop)]

use crate::engine::activation::{sigmoid, tanh};
use crate::engine::isa::Arch;
use crate::engine::job::Job;
use crate::engine::layout::{Dims, Shape};
use crate::engine::plan::Balanced;
use crate::engine::registry::SMALL_BATCH_MAX_IN;
use crate::engine::simd::Strided;

/// Batch in lanes (see the module docs): groups of up to `B::LANES`
/// samples; a group that fits `S`'s narrower vector uses it. `S` is the
/// vector the model is packed for.
///
/// The stack buffers below are sized for these limits, which this checks
/// (in release builds too: the buffers' bounds rest on them).
///
/// # Safety
/// Runs inside an entry whose features include `S`'s and `B`'s; `job` was
/// built by `driver::forward` for a model packed in `S`'s lanes (plain
/// panels), not split by hidden units.
#[inline(always)]
pub(super) unsafe fn run<S: Arch + Strided, B: Arch + Strided, D: Dims>(job: &Job) {
    let d = Shape::of::<S, D>(job.packed);
    assert!(
        d.n_in <= BATCH_MAX_IN
            && d.h <= S::LANES
            && d.h <= MAX_H
            && d.n_out <= d.h
            && S::LANES <= B::LANES
            && B::LANES <= MAX_H
            && job.parts == 1,
        "batch-in-lanes kernel: shape outside its buffers"
    );
    // Groups wider than `S` use `B`'s vectors. (Groups of 9–11 rows as 8
    // rows of `S` plus the rest in the gates-in-lanes layout measured
    // slower: the batch group's ~1000 instructions a step fill the
    // out-of-order window, so the small group's chain does not overlap.)
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

/// Most inputs (the generator emits a batch kernel only up to this many).
const BATCH_MAX_IN: usize = SMALL_BATCH_MAX_IN;
/// Most hidden units (and lanes) of a small kernel.
const MAX_H: usize = 16;

/// Floats in each of the batch layout's buffers of inputs (then outputs)
/// and of `m` (8 KiB each).
const BUF: usize = 2048;
/// Floats in its buffer of input projections (16 KiB).
const ZBUF: usize = 4096;
/// Most steps per block.
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
/// the outputs back to `[step, row, feature]` by scalar copies (cheaper
/// than per-step gathers and scatters).
///
/// # Safety
/// As [`run`], which checked the shape against the buffers; rows
/// `r0..r0+nr` are the job's, `nr ≤ B::LANES`.
#[inline(always)]
unsafe fn group_batch<S: Arch, B: Strided, D: Dims>(job: &Job, r0: usize, nr: usize) {
    let pk = job.packed;
    let d = Shape::of::<S, D>(pk);
    let (l, n, h, p) = (S::LANES, d.n_in, d.h, d.n_out);
    let bl = B::LANES;
    // `run` checked the shape against the buffers; `Balanced` gives
    // groups of at most `B::LANES` rows.
    debug_assert!(nr <= bl);
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
    // g·l + u; xs/out/c/m are sized as `driver::forward` checked and rows
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
