//! Gates in lanes: a sample's four gate pre-activations are 4 vectors
//! (one per gate, a unit per lane); groups of up to 3 samples run the whole
//! sequence with `c` and `m` in registers (`m`'s lanes broadcast by
//! permutes). One sample's step is a chain of two matrix–vector products
//! and two activations: this layout is about latency.

// Stage-major loops index several per-row arrays by the same row.
#![allow(clippy::needless_range_loop)]

use crate::engine::activation::{sigmoid, tanh};
use crate::engine::isa::Arch;
use crate::engine::job::Job;
use crate::engine::layout::{Dims, Shape};
use crate::engine::plan::Balanced;
use crate::engine::simd::LaneSplat;

/// Gates in lanes (see the module docs): groups of up to 3 samples.
///
/// A sample's state and gates are one vector each, which this checks (in
/// release builds too: every load and store rests on it).
///
/// # Safety
/// Runs inside an entry whose features include `S`'s; `job` was built by
/// `driver::forward` for a model packed in `S`'s lanes (plain panels), not
/// split by hidden units.
#[inline(always)]
pub(super) unsafe fn run<S: Arch + LaneSplat, D: Dims>(job: &Job) {
    let d = Shape::of::<S, D>(job.packed);
    assert!(
        d.h <= S::LANES && d.n_out <= d.h && S::LANES <= 16 && job.parts == 1,
        "gates-in-lanes kernel: shape outside one vector"
    );
    // Balanced groups of at most GROUP rows (4 rows: 2, 2). Three
    // interleaved rows measured fastest: enough independent chains to hide
    // the activations' latency without spilling registers.
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

/// Samples `r0..r0+R` through the whole sequence.
///
/// # Safety
/// As [`run`], which checked the shape; rows `r0..r0+R` are the job's.
#[inline(always)]
unsafe fn group<S: Arch + LaneSplat, D: Dims, const R: usize>(job: &Job, r0: usize) {
    let pk = job.packed;
    let d = Shape::of::<S, D>(pk);
    let (l, n, h) = (S::LANES, d.n_in, d.h);
    debug_assert!(h <= l && l <= 16, "checked by `run`");
    // SAFETY: single panels (H ≤ LANES) hold bias + n rows (wx), h rows
    // (wh, vo) and bias + h rows (head) of 4 vectors; xs/out/c/m are sized
    // as `driver::forward` checked; the stack arrays hold 16 ≥ LANES floats.
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
            // step goes first. (With 2–3 samples their chains overlap
            // anyway, and deferring measured slower.)
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
unsafe fn emit<S: Arch + LaneSplat, D: Dims, const R: usize>(
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
