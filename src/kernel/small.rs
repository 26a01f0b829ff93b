//! The register-resident kernel for small cells, used by specialized
//! (generated) kernels when the hidden size fits one vector (`H ≤ LANES`).
//!
//! Contract of [`run`]: the same as `cell::run` (reads `xs`, the chunk's
//! `c` and `m`; writes `out`, `c`, `m`), but without scratch: groups of up
//! to 3 samples run the whole sequence with `c` in registers and `m` in registers
//! (lanes broadcast by permutes, no memory round trip). Every sum is taken in the same
//! order as the generic kernel (bias, inputs, recurrent terms; peephole
//! after), so results are bitwise identical to it.

// Stage-major loops index several per-row arrays by the same row.
#![allow(clippy::needless_range_loop)]

use super::cell::Job;
use super::{Dims, KernelIsa, Shape};
use crate::activation::{sigmoid, tanh};

/// See the module docs.
///
/// # Safety
/// The CPU supports `S`; `job` was built by `kernel::forward` for a model
/// with `H ≤ S::LANES`, not split by hidden units.
#[inline(always)]
pub(crate) unsafe fn run<S: KernelIsa, D: Dims>(job: &Job) {
    // Balanced groups of at most GROUP rows (10 rows: 3, 3, 2, 2). Three
    // interleaved rows measured fastest (B=10: 518 ns/step vs 561 with 2,
    // 654 with 5, 649 with 8): enough independent chains to hide the
    // activations' latency without spilling registers.
    const GROUP: usize = 3;
    let groups = job.rows.div_ceil(GROUP);
    let mut r0 = 0;
    for gi in 0..groups {
        let nr = job.rows / groups + usize::from(gi < job.rows % groups);
        // SAFETY: forwarded from the caller; rows r0..r0+nr are the job's.
        unsafe {
            match nr {
                1 => group::<S, D, 1>(job, r0),
                2 => group::<S, D, 2>(job, r0),
                _ => group::<S, D, 3>(job, r0),
            }
        }
        r0 += nr;
    }
}

#[inline(always)]
unsafe fn group<S: KernelIsa, D: Dims, const R: usize>(job: &Job, r0: usize) {
    let pk = job.packed;
    let d = Shape::of::<S, D>(pk);
    let (l, n, h, p) = (S::LANES, d.n_in, d.h, d.n_out);
    debug_assert!(h <= l && l <= 16);
    // SAFETY: single panels (H ≤ LANES) hold bias + n rows (wx), h rows
    // (wh, vo) and bias + h rows (head) of 4 vectors; xs/out/c/m are sized
    // as `kernel::forward` checked; the stack arrays hold 16 ≥ LANES floats.
    unsafe {
        let wx = pk.wx.panel(0).as_ptr();
        let wh = pk.wh.panel(0).as_ptr();
        let vo = pk.vo.as_ref().map(|v| v.panel(0).as_ptr());
        let hd = pk.head.as_ref().map(|v| v.panel(0).as_ptr());
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
