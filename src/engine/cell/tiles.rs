//! The tiles of the blocked body: each runs the microkernel over one
//! register block of rows and one panel, then its epilogue in registers.
//! Every tile reads and writes only within the buffers the driver sized
//! (see `engine::job::Job`).
//!
//! Safety contract of every tile: it runs inside an entry whose features
//! include `S`'s; `job` was built by `driver::forward` for a model packed
//! in `S`'s lanes and layout; its rows (`r0..r0+MR`, or `q0..q0+MR` of a
//! time block) are the job's, and its panel index is in range.

use crate::engine::activation::{sigmoid, tanh};
use crate::engine::isa::Arch;
use crate::engine::job::Job;
use crate::engine::layout::{Dims, Shape};
use crate::engine::microkernel::{Acc, LINE_FLOATS, Prefetch};
use crate::engine::simd::Simd;

/// Pointers to rows `r0..r0+MR` of a row-major matrix at `base` with
/// rows of `stride` floats (the `a` operand of a tile).
#[inline(always)]
fn row_ptrs<const MR: usize>(base: *const f32, r0: usize, stride: usize) -> [*const f32; MR] {
    std::array::from_fn(|r| base.wrapping_add((r0 + r) * stride))
}

/// Loads `n ≤ LANES` floats (the rest zero).
///
/// # Safety
/// The CPU supports `S`; `p` is valid for `n` reads.
#[inline(always)]
unsafe fn load_n<S: Simd>(p: *const f32, n: usize) -> S::V {
    // SAFETY: the caller guarantees `p` is valid for `n` reads.
    unsafe {
        if n == S::LANES {
            S::load(p)
        } else {
            S::load_partial(p, n)
        }
    }
}

/// Loads 4 consecutive vectors.
///
/// # Safety
/// The CPU supports `S`; `p` is valid for `4 · LANES` reads.
#[inline(always)]
unsafe fn load4<S: Simd>(p: *const f32) -> [S::V; 4] {
    let l = S::LANES;
    // SAFETY: the caller guarantees `p` is valid for 4·LANES reads.
    unsafe {
        [
            S::load(p),
            S::load(p.add(l)),
            S::load(p.add(2 * l)),
            S::load(p.add(3 * l)),
        ]
    }
}

/// Stores the first `n ≤ LANES` lanes.
///
/// # Safety
/// The CPU supports `S`; `p` is valid for `n` writes.
#[inline(always)]
unsafe fn store_n<S: Simd>(p: *mut f32, v: S::V, n: usize) {
    // SAFETY: the caller guarantees `p` is valid for `n` writes.
    unsafe {
        if n == S::LANES {
            S::store(p, v)
        } else {
            S::store_partial(p, v, n)
        }
    }
}

/// Input GEMM tile: rows `q0..q0+MR` of the time block (row `q` is sample
/// `q % rows` at step `t0 + q / rows`), panel `p`: `xw = bias + x·W_x`.
///
/// # Safety
/// The module's tile contract.
#[inline(always)]
pub(super) unsafe fn input_tile<S: Arch, D: Dims, const MR: usize>(
    job: &Job,
    t0: usize,
    q0: usize,
    p: usize,
    (k0, k1): (usize, usize),
) {
    let pk = job.packed;
    let d = Shape::of::<S, D>(pk);
    let l = S::LANES;
    // SAFETY: `driver::forward` checked that xs holds every (t, sample) row and xw
    // every (q, panel) tile; the panel holds a bias row and n_in rows.
    unsafe {
        let panel = pk.wx.panel(p).as_ptr();
        let mut a = [std::ptr::null::<f32>(); MR];
        for (r, ar) in a.iter_mut().enumerate() {
            let q = q0 + r;
            *ar = job
                .xs
                .add(((t0 + q / job.rows) * job.batch + job.row0 + q % job.rows) * d.n_in);
        }
        let dst = |r: usize| job.xw.add((q0 + r) * 4 * d.hp + p * 4 * l);
        // The first K block starts from the bias, later ones from the
        // partial sums the previous block stored (exact: f32 in, f32 out).
        let mut acc: Acc<S, MR> = if k0 == 0 {
            [load4::<S>(panel); MR]
        } else {
            std::array::from_fn(|r| load4::<S>(dst(r)))
        };
        S::tile_range::<MR>(
            d.n_in,
            k0,
            k1,
            &a,
            panel.add(4 * l),
            &mut acc,
            near::<S>(job, k1 - k0, q0 == 0),
        );
        for (r, acc_r) in acc.iter().enumerate() {
            let dst = dst(r);
            for (v, &x) in acc_r.iter().enumerate() {
                S::store(dst.add(v * l), x);
            }
        }
    }
}

/// The L1 prefetches of a tile over `kk` rows of a panel: the plan's
/// distance for the first row block, which streams the slice in; none for
/// the later ones when the slice fits in L1 (they find it there; see
/// `Job::l1_slice`).
#[inline(always)]
fn near<S: Arch>(job: &Job, kk: usize, first: bool) -> Prefetch {
    if !first && kk * 4 * S::LANES * 4 <= job.l1_slice {
        Prefetch::near(0)
    } else {
        Prefetch::near(job.pf)
    }
}

/// The prefetches of row block `b` of `nb` over rows `k0..k1` of a `W_h`
/// panel whose next panel's body is at `next`: with `job.ahead` and three
/// or more blocks, blocks after the first (which streams this panel) fetch
/// that next panel's rows `k0..k1` into L2, each block an equal share of
/// at most two lines per panel row, so that the first block of the next
/// panel finds them there instead of waiting on memory. (With one or two
/// blocks the fetches crowd the demand misses; measured slower.) Prefetches
/// never fault, so `next` may point past the last panel.
#[inline(always)]
fn ahead<S: Arch>(
    job: &Job,
    next: *const f32,
    k0: usize,
    k1: usize,
    b: usize,
    nb: usize,
) -> Prefetch {
    let mut pf = near::<S>(job, k1 - k0, b == 0);
    if !job.ahead || nb < 3 {
        return pf;
    }
    let kk = k1 - k0;
    let per_row = (4 * S::LANES).div_ceil(LINE_FLOATS);
    let q = per_row.div_ceil(nb - 1);
    if b == 0 || (b - 1) * q >= per_row {
        return pf;
    }
    pf.ahead = next.wrapping_add(k0 * 4 * S::LANES + (b - 1) * q * kk * LINE_FLOATS);
    pf.lines = q;
    pf
}

/// Gate tile: samples `r0..r0+MR` (row block `b` of `nb`), hidden units of
/// panel `p`, step `s` of the time block. Accumulators start from `xw`, add `m_cur·W_h`, then the
/// fused epilogue: `c = σ(f)·c + σ(i)·tanh(c̃)`, and either
/// `m_next = σ(o)·tanh(c)` or (matrix peephole) `o_pre = o`.
///
/// # Safety
/// The module's tile contract.
#[inline(always)]
pub(super) unsafe fn gate_tile<S: Arch, D: Dims, const MR: usize>(
    job: &Job,
    s: usize,
    (r0, b, nb): (usize, usize, usize),
    p: usize,
    m_cur: *const f32,
    m_next: *mut f32,
    (k0, k1): (usize, usize),
) {
    let pk = job.packed;
    let d = Shape::of::<S, D>(pk);
    let (l, rr) = (S::LANES, d.r);
    // SAFETY: rows r0..r0+MR < job.rows; c is [rows, H], m buffers
    // [rows, R], m_full [rows, H], xw [tb, rows, 4hp], o_pre [rows, hw ≥ hp],
    // diag [3][hp]; units j0..j0+n < H.
    unsafe {
        let a = row_ptrs::<MR>(m_cur, r0, rr);
        let xw = |r: usize| job.xw.add((s * job.rows + r0 + r) * 4 * d.hp + p * 4 * l);
        let mut acc: Acc<S, MR> = std::array::from_fn(|r| load4::<S>(xw(r)));
        let body = pk.wh.panel(p).as_ptr();
        let pf = ahead::<S>(job, body.wrapping_add(pk.wh.panel_len()), k0, k1, b, nb);
        S::tile_range::<MR>(rr, k0, k1, &a, body, &mut acc, pf);
        if k1 < rr {
            // Not the last K block: keep the partial sums in xw (exact).
            for (r, acc_r) in acc.iter().enumerate() {
                for (v, &x) in acc_r.iter().enumerate() {
                    S::store(xw(r).add(v * l), x);
                }
            }
            return;
        }
        epilogue::<S, D, MR>(job, r0, p, &acc, m_next);
    }
}

/// Fused tile of a one-step block (no hoisted input GEMM): samples
/// `r0..r0+MR` (row block `b`) at step `t`, the hidden units of each panel
/// in `panels`, one after another while the rows' `x` and `m` stay in L1.
/// Each panel's accumulators start from the bias and add `x_t·W_x`, then
/// `m_cur·W_h`: the products of the input tile and the gate tile in the
/// same order, so the same bits, without the round trip through `xw`. Then
/// the fused epilogue.
///
/// # Safety
/// The module's tile contract; `panels` are in range.
#[inline(always)]
pub(super) unsafe fn fused_tile<S: Arch, D: Dims, const MR: usize>(
    job: &Job,
    t: usize,
    (r0, b): (usize, usize),
    panels: std::ops::Range<usize>,
    m_cur: *const f32,
    m_next: *mut f32,
) {
    let pk = job.packed;
    let d = Shape::of::<S, D>(pk);
    let (l, rr) = (S::LANES, d.r);
    // A group of several panels evicts each from L1 before the next row
    // block reads it: every block prefetches then.
    let first = b == 0 || panels.len() > 1;
    // SAFETY: xs holds every (t, sample) row; each W_x panel a bias row and
    // n_in rows, each W_h panel R rows; m_cur rows are [R].
    unsafe {
        let x = row_ptrs::<MR>(
            job.xs.wrapping_add((t * job.batch + job.row0) * d.n_in),
            r0,
            d.n_in,
        );
        let a = row_ptrs::<MR>(m_cur, r0, rr);
        for p in panels {
            let wx = pk.wx.panel(p).as_ptr();
            let mut acc: Acc<S, MR> = [load4::<S>(wx); MR];
            let body = wx.add(4 * l);
            S::tile_range::<MR>(
                d.n_in,
                0,
                d.n_in,
                &x,
                body,
                &mut acc,
                near::<S>(job, d.n_in, first),
            );
            let body = pk.wh.panel(p).as_ptr();
            S::tile_range::<MR>(rr, 0, rr, &a, body, &mut acc, near::<S>(job, rr, first));
            epilogue::<S, D, MR>(job, r0, p, &acc, m_next);
        }
    }
}

/// The fused epilogue of a gate tile's accumulators `acc` (the gates'
/// pre-activations of samples `r0..r0+MR`, units of panel `p`):
/// `c = σ(f)·c + σ(i)·tanh(c̃)`, and either `m_next = σ(o)·tanh(c)` or
/// (matrix peephole) `o_pre = o`.
///
/// # Safety
/// The module's tile contract.
#[inline(always)]
unsafe fn epilogue<S: Arch, D: Dims, const MR: usize>(
    job: &Job,
    r0: usize,
    p: usize,
    acc: &Acc<S, MR>,
    m_next: *mut f32,
) {
    let pk = job.packed;
    let d = Shape::of::<S, D>(pk);
    let (l, h) = (S::LANES, d.h);
    // SAFETY: rows r0..r0+MR < job.rows; c is [rows, H], m buffers
    // [rows, R], m_full [rows, H], o_pre [rows, hw ≥ hp], diag [3][hp];
    // units j0..j0+n < H.
    unsafe {
        let j0 = p * l;
        let n = l.min(h - j0);
        // Without a projection m goes straight to m_next (R = H).
        let m_dst = if d.proj { job.m_full } else { m_next };
        let diag = match (&pk.diag, d.diag) {
            (Some(dg), true) => {
                let b = dg.as_slice().as_ptr().add(j0);
                Some([S::load(b), S::load(b.add(d.hp)), S::load(b.add(2 * d.hp))])
            }
            _ => None,
        };
        for (r, g) in acc.iter().enumerate() {
            let row = r0 + r;
            let cp = job.c.add(row * h + j0);
            let c_old = load_n::<S>(cp, n);
            let (mut zi, mut zf) = (g[0], g[1]);
            if let Some(dg) = diag {
                zi = S::fmadd(dg[0], c_old, zi);
                zf = S::fmadd(dg[1], c_old, zf);
            }
            let i = sigmoid::<S>(act_in::<S>(zi, d.clip));
            let f = if d.input_forget {
                S::sub(S::splat(1.0), i)
            } else {
                sigmoid::<S>(act_in::<S>(zf, d.clip))
            };
            let mut c_new = S::fmadd(f, c_old, S::mul(i, tanh::<S>(act_in::<S>(g[2], d.clip))));
            if let Some(t) = d.cell_clip {
                c_new = S::clamp(c_new, -t, t);
            }
            store_n::<S>(cp, c_new, n);
            if d.peephole {
                S::store(job.o_pre.add(row * d.hw + j0), g[3]);
            } else {
                let zo = match diag {
                    Some(dg) => S::fmadd(dg[2], c_new, g[3]),
                    None => g[3],
                };
                let m = S::mul(sigmoid::<S>(act_in::<S>(zo, d.clip)), tanh::<S>(c_new));
                store_n::<S>(m_dst.add(row * h + j0), m, n);
            }
        }
    }
}

/// ONNX `clip`: clamps a gate activation's input when set (as onnxruntime
/// does: the gates' pre-activations, after bias and peepholes; never the
/// cell state entering `tanh(c)`).
///
/// # Safety
/// The CPU supports `S`.
#[inline(always)]
unsafe fn act_in<S: Simd>(z: S::V, clip: Option<f32>) -> S::V {
    // SAFETY: the caller guarantees the ISA.
    unsafe {
        match clip {
            Some(t) => S::clamp(z, -t, t),
            None => z,
        }
    }
}

/// Projection tile: `r = m·W_p` (no bias), clamped by `proj_clip`, into
/// `m_next` for samples `r0..r0+MR` and outputs of wide panel `q`.
///
/// # Safety
/// The module's tile contract.
#[inline(always)]
pub(super) unsafe fn proj_tile<S: Arch, D: Dims, const MR: usize>(
    job: &Job,
    r0: usize,
    q: usize,
    m_next: *mut f32,
) {
    let pk = job.packed;
    let d = Shape::of::<S, D>(pk);
    let (l, h, rr) = (S::LANES, d.h, d.r);
    let Some(wp) = pk.proj.as_ref() else { return };
    // SAFETY: m_full rows are [H], m_next rows [R]; the panel holds H rows.
    unsafe {
        let a = row_ptrs::<MR>(job.m_full, r0, h);
        let mut acc: Acc<S, MR> = [[S::splat(0.0); 4]; MR];
        S::tile::<MR>(
            h,
            &a,
            wp.panel(q).as_ptr(),
            &mut acc,
            Prefetch::near(job.pf),
        );
        for (r, y) in acc.iter().enumerate() {
            for (v, &yv) in y.iter().enumerate() {
                let j0 = q * 4 * l + v * l;
                if j0 >= rr {
                    break;
                }
                let yv = match d.proj_clip {
                    Some(t) => S::clamp(yv, -t, t),
                    None => yv,
                };
                store_n::<S>(m_next.add((r0 + r) * rr + j0), yv, l.min(rr - j0));
            }
        }
    }
}

/// Peephole tile: `o = σ(o_pre + c·v_o)`, `m_next = o·tanh(c)` for samples
/// `r0..r0+MR` and the 4·LANES units of wide panel `q`.
///
/// # Safety
/// The module's tile contract.
#[inline(always)]
pub(super) unsafe fn peephole_tile<S: Arch, D: Dims, const MR: usize>(
    job: &Job,
    r0: usize,
    q: usize,
    m_next: *mut f32,
) {
    let pk = job.packed;
    let d = Shape::of::<S, D>(pk);
    let (l, h) = (S::LANES, d.h);
    let Some(vo) = pk.vo.as_ref() else { return };
    // SAFETY: as in `gate_tile`; o_pre rows are hw ≥ (q+1)·4·LANES long.
    unsafe {
        let a = row_ptrs::<MR>(job.c, r0, h);
        let mut acc: Acc<S, MR> = [[S::splat(0.0); 4]; MR];
        for (r, acc_r) in acc.iter_mut().enumerate() {
            *acc_r = load4::<S>(job.o_pre.add((r0 + r) * d.hw + q * 4 * l));
        }
        S::tile::<MR>(
            h,
            &a,
            vo.panel(q).as_ptr(),
            &mut acc,
            Prefetch::near(job.pf),
        );
        for (r, o) in acc.iter().enumerate() {
            let row = r0 + r;
            for (v, &ov) in o.iter().enumerate() {
                let j0 = q * 4 * l + v * l;
                if j0 >= h {
                    break;
                }
                let n = l.min(h - j0);
                let c = load_n::<S>(job.c.add(row * h + j0), n);
                let m = S::mul(sigmoid::<S>(act_in::<S>(ov, d.clip)), tanh::<S>(c));
                // With a projection m goes to m_full (stride H) first.
                let m_dst = if d.proj { job.m_full } else { m_next };
                store_n::<S>(m_dst.add(row * h + j0), m, n);
            }
        }
    }
}

/// Head tile: `h = tanh(b_h + m·w_h)` into the output rows of step `t`.
///
/// # Safety
/// The module's tile contract.
#[inline(always)]
pub(super) unsafe fn head_tile<S: Arch, D: Dims, const MR: usize>(
    job: &Job,
    t: usize,
    r0: usize,
    q: usize,
    m_next: *const f32,
) {
    let pk = job.packed;
    let d = Shape::of::<S, D>(pk);
    let (l, h, p_out) = (S::LANES, d.h, d.n_out);
    let Some(wh) = pk.head.as_ref() else { return };
    // SAFETY: out holds [T, batch, n_out]; the head panel a bias row and H rows.
    unsafe {
        let panel = wh.panel(q).as_ptr();
        let a = row_ptrs::<MR>(m_next, r0, h);
        let bias = load4::<S>(panel);
        let mut acc: Acc<S, MR> = [bias; MR];
        S::tile::<MR>(h, &a, panel.add(4 * l), &mut acc, Prefetch::near(job.pf));
        for (r, y) in acc.iter().enumerate() {
            let out = job.out.add((t * job.batch + job.row0 + r0 + r) * p_out);
            for (v, &yv) in y.iter().enumerate() {
                let j0 = q * 4 * l + v * l;
                if j0 >= p_out {
                    break;
                }
                store_n::<S>(out.add(j0), tanh::<S>(yv), l.min(p_out - j0));
            }
        }
    }
}
