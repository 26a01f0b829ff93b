//! The blocked body: one batch chunk through a whole sequence. The input
//! part `x·W_x + b` of a block of steps is one GEMM into scratch; then per
//! step the recurrent gate GEMM `m·W_h` with the fused cell epilogue, the
//! matrix peephole GEMM `c·v_o` (or the projection) and the head GEMM.
//! Where a block would be one step and the plan fuses (`Job::fused`), each
//! gate tile computes `b + x·W_x + m·W_h` itself instead, the same
//! products in the same order.
//! Generic over the ISA and the dimensions; everything is
//! `#[inline(always)]`, so it compiles inside the ISA's entry.

mod tiles;

use tiles::{fused_tile, gate_tile, head_tile, input_tile, peephole_tile, proj_tile};

use super::isa::Arch;
use super::job::Job;
use super::layout::{Dims, Shape};
use super::plan::{Balanced, KBlocks};

/// Calls `$f::<$S, MR>(args..)` for the run-time row count `$nr ≤ 6`.
macro_rules! with_mr {
    ($nr:expr, $f:ident::<$S:ty, $D:ty>($($arg:expr),*)) => {
        match $nr {
            1 => $f::<$S, $D, 1>($($arg),*),
            2 => $f::<$S, $D, 2>($($arg),*),
            3 => $f::<$S, $D, 3>($($arg),*),
            4 => $f::<$S, $D, 4>($($arg),*),
            5 => $f::<$S, $D, 5>($($arg),*),
            _ => $f::<$S, $D, 6>($($arg),*),
        }
    };
}

/// Runs `$body` for the row blocks `($r0, $nr)` of `$rows` rows: parts of
/// at most `S::MR` rows, balanced (see [`Balanced`]); the second form also
/// names each block's index `$b` and the number of blocks `$nb`. A macro,
/// not a closure, so that `$body` is compiled inside the ISA wrapper.
macro_rules! row_blocks {
    ($S:ty, $rows:expr, |$r0:ident, $nr:ident| $body:expr) => {
        row_blocks!($S, $rows, |$r0, $nr, _b, _nb| $body)
    };
    ($S:ty, $rows:expr, |$r0:ident, $nr:ident, $b:ident, $nb:ident| $body:expr) => {{
        let blocks = Balanced::new($rows, <$S as Arch>::MR);
        let $nb = blocks.len();
        for ($b, ($r0, $nr)) in blocks.enumerate() {
            $body;
        }
    }};
}

/// The whole sequence for one chunk (see the module docs).
///
/// # Safety
/// Runs inside an entry whose features include `S`'s; `job` was built by
/// `driver::forward` for a model packed in `S`'s lanes and layout (all
/// buffers sized and disjoint as documented on [`Job`]).
#[inline(always)]
pub(crate) unsafe fn run<S: Arch, D: Dims>(job: &Job) {
    let pk = job.packed;
    let d = Shape::of::<S, D>(pk);
    let rows = job.rows;
    let mut t0 = 0;
    // SAFETY: every tile call stays within the buffers `driver::forward` checked.
    // With a hidden-unit split, parts write disjoint units (their panels)
    // and read other parts' results only after a barrier.
    unsafe {
        let fused = job.fused();
        while t0 < job.steps {
            let nt = if fused { 1 } else { job.tb.min(job.steps - t0) };
            // Each part only ever reads its own panels' columns of xw, so
            // no barrier is needed after the input GEMM.
            let input_panels = if fused {
                0..0
            } else {
                job.share(d.gate_panels)
            };
            for p in input_panels {
                for kb in KBlocks::new(d.n_in, job.kc) {
                    row_blocks!(S, nt * rows, |q0, nr| with_mr!(
                        nr,
                        input_tile::<S, D>(job, t0, q0, p, kb)
                    ));
                }
            }
            for s in 0..nt {
                let t = t0 + s;
                let (m_cur, m_next) = step_m(job, &d, t);
                let gates = job.share(d.gate_panels);
                if fused {
                    // Groups of panels that stay in L2 while every row
                    // block of the chunk runs through them (whole K: no
                    // K blocks).
                    let mut g0 = gates.start;
                    while g0 < gates.end {
                        let g1 = (g0 + job.group).min(gates.end);
                        row_blocks!(S, rows, |r0, nr, b, _nb| with_mr!(
                            nr,
                            fused_tile::<S, D>(job, t, (r0, b), g0..g1, m_cur, m_next)
                        ));
                        g0 = g1;
                    }
                } else {
                    for p in gates.clone() {
                        for kb in KBlocks::new(d.r, job.kc) {
                            row_blocks!(S, rows, |r0, nr, b, nb| with_mr!(
                                nr,
                                gate_tile::<S, D>(job, s, (r0, b, nb), p, m_cur, m_next, kb)
                            ));
                        }
                    }
                }
                if d.peephole {
                    job.sync(); // the peephole reads every unit of the new c
                    for q in job.share(d.wide_panels) {
                        row_blocks!(S, rows, |r0, nr| with_mr!(
                            nr,
                            peephole_tile::<S, D>(job, r0, q, m_next)
                        ));
                    }
                }
                if d.proj {
                    // Never split (see `Plan`): every unit of m is here.
                    for q in 0..d.proj_panels {
                        row_blocks!(S, rows, |r0, nr| with_mr!(
                            nr,
                            proj_tile::<S, D>(job, r0, q, m_next)
                        ));
                    }
                }
                // Without a head the output is m (or r): the tiles wrote it.
                if d.head {
                    job.sync(); // the head reads every unit of the new m
                    for q in job.share(d.head_panels) {
                        row_blocks!(S, rows, |r0, nr| with_mr!(
                            nr,
                            head_tile::<S, D>(job, t, r0, q, m_next)
                        ));
                    }
                }
                job.sync(); // the next step reads every unit of m and c
            }
            t0 += nt;
        }
        if job.part == 0 && job.steps > 0 {
            // The state's m is the last step's (`step_m`), copied once
            // every part has written its units (the loop ends at a barrier).
            let (_, m_last) = step_m(job, &d, job.steps - 1);
            if m_last != job.m {
                std::ptr::copy_nonoverlapping(m_last, job.m, rows * d.r);
            }
        }
    }
}

/// Where step `t` reads `m` (`m_cur`) and writes the new one (`m_next`),
/// both `[rows, R]` with rows of `R` floats. Without a head the output is
/// `m` itself, so step `t` writes straight into the job's rows of output
/// step `t` (same layout) and reads step `t − 1`'s there, the first step
/// the state's; with a head, steps alternate between the state's `m` and
/// the `m_alt` scratch. Either way the last step's `m_next` ends up in
/// the state (`run` copies it there unless it is the state already).
///
/// # Safety
/// `job` was built by `driver::forward`, `t < job.steps`.
#[inline(always)]
unsafe fn step_m(job: &Job, d: &Shape, t: usize) -> (*mut f32, *mut f32) {
    // SAFETY: out holds [steps, batch, R] without a head (n_out = R) and
    // the job's rows row0..row0+rows of every step are its own.
    unsafe {
        if d.head {
            return if t.is_multiple_of(2) {
                (job.m, job.m_alt)
            } else {
                (job.m_alt, job.m)
            };
        }
        let out_m = |t: usize| job.out.add((t * job.batch + job.row0) * d.r);
        let cur = if t == 0 { job.m } else { out_m(t - 1) };
        (cur, out_m(t))
    }
}
