//! The parallel driver: [`forward`] checks the buffers, plans the call,
//! cuts the state and scratch into chunks, and runs each chunk's job on
//! the model's kernel — on the caller's thread, on the model's rayon pool,
//! or as the parts of a hidden-unit split meeting at a barrier.

use super::diagnostics;
use super::fp_env::DenormalGuard;
use super::job::{Job, SpinBarrier};
use super::packed::Packed;
use super::packing::AlignedBuf;
use super::plan::Plan;
use crate::error::Result;

/// Mutable state of a batch, as slices the driver splits among chunks.
pub(crate) struct StateBufs<'a> {
    pub(crate) c: &'a mut [f32],
    pub(crate) m: &'a mut [f32],
    pub(crate) scratch: &'a mut AlignedBuf,
}

/// Runs one chunk on the model's kernel (the batch-in-lanes variant of a
/// small one for chunks of enough rows), with subnormals flushed.
fn run_job(job: &Job) {
    let _denormals = DenormalGuard::new();
    let k = &job.packed.kernel;
    let (_, run, batch) = k.for_rows(job.rows);
    diagnostics::record(k.isa.isa(), k.generated, batch);
    // SAFETY: `forward` built the job for this packed model; the kernel's
    // entry checks that the model is packed as it reads.
    unsafe { run(job) }
}

/// A chunk's job, sendable to a worker thread.
struct SendJob<'a>(Job<'a>);

// SAFETY: a job's mutable regions (its rows of c, m, m_alt, o_pre, xw, and
// its samples' rows of the output) are disjoint from every other job's;
// `xs` and the packed weights are only read.
unsafe impl Send for SendJob<'_> {}

impl<'a> SendJob<'a> {
    fn job(&self) -> Job<'a> {
        self.0
    }
}

// SAFETY: shared only for a hidden-unit split, whose parts write disjoint
// units and synchronise through `SpinBarrier` before reading each other's.
unsafe impl Sync for SendJob<'_> {}

/// How a call may use threads.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Parallel<'a> {
    pub(crate) pool: Option<&'a rayon::ThreadPool>,
    pub(crate) threads: usize,
    /// Gate FLOPs per step below which a call stays on one thread.
    pub(crate) min_flops: f64,
    /// The plan's knobs for this call (results never depend on them).
    pub(crate) rules: crate::tuning::PlanRules,
}

impl<'a> Parallel<'a> {
    /// The pool a call may use: the model's, unless the caller is a worker
    /// of another rayon pool. Entering the model's pool from there makes
    /// the caller's thread wait by running its own pool's queued work —
    /// often more calls of this model, each waiting the same way — a
    /// recursion that overflows the stack. Such a call runs on the calling
    /// thread instead (results do not depend on the threads); its caller's
    /// pool is already spreading the work.
    pub(crate) fn pool(&self) -> Option<&'a rayon::ThreadPool> {
        self.pool.filter(|pool| {
            rayon::current_thread_index().is_none() || pool.current_thread_index().is_some()
        })
    }

    /// The plan of a call with `batch` rows and `steps` steps.
    fn plan(&self, pk: &Packed, batch: usize, steps: usize) -> Plan {
        let threads = if self.pool().is_some() {
            self.threads
        } else {
            1
        };
        Plan::new(pk, batch, steps, threads, self.min_flops, &self.rules)
    }
}

/// The kernels `forward` runs for `batch` rows, one name per distinct
/// kernel in chunk order (see `Kernel::for_rows`).
pub(crate) fn kernels_for_batch(pk: &Packed, par: Parallel, batch: usize) -> Vec<&'static str> {
    let plan = par.plan(pk, batch, 1);
    let mut names = Vec::new();
    for c in 0..plan.chunks {
        let (name, _, _) = pk.kernel.for_rows(plan.rows(batch, c));
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

/// Runs `steps` steps of a `batch`: `xs` is `[steps, batch, n_in]`, `out`
/// `[steps, batch, n_out]`; `st.c`, `st.m` are `[batch, H]` and `[batch, R]`
/// and updated. Lengths were checked by the caller (`Lstm`); they are
/// asserted here too, as the safety boundary of the kernels.
pub(crate) fn forward(
    pk: &Packed,
    par: Parallel,
    st: StateBufs,
    xs: &[f32],
    out: &mut [f32],
    batch: usize,
    steps: usize,
) -> Result<()> {
    if steps == 0 {
        return Ok(());
    }
    let h = pk.h;
    assert!(xs.len() == steps * batch * pk.n_in && out.len() == steps * batch * pk.n_out);
    assert!(st.c.len() == batch * h && st.m.len() == batch * pk.r);
    let pool = par.pool();
    let plan = par.plan(pk, batch, steps);
    let need = plan.scratch_len(pk, batch);
    if st.scratch.as_slice().len() < need {
        *st.scratch = AlignedBuf::try_zeros(need, "step scratch")?;
    }
    let mut scratch = st.scratch.as_mut_slice();
    let (mut c, mut m) = (st.c, st.m);
    let out_ptr = out.as_mut_ptr();
    let mut make_job = |k: usize| {
        let rows = plan.rows(batch, k);
        let [n_xw, n_op, n_ma, n_mf] = plan.chunk_scratch(pk, rows);
        let (xw, rest) = std::mem::take(&mut scratch).split_at_mut(n_xw);
        let (o_pre, rest) = rest.split_at_mut(n_op);
        let (m_alt, rest) = rest.split_at_mut(n_ma);
        let (m_full, rest) = rest.split_at_mut(n_mf);
        scratch = rest;
        let (ck, c_rest) = std::mem::take(&mut c).split_at_mut(rows * h);
        let (mk, m_rest) = std::mem::take(&mut m).split_at_mut(rows * pk.r);
        (c, m) = (c_rest, m_rest);
        SendJob(Job {
            packed: pk,
            rows,
            batch,
            row0: k * plan.per,
            steps,
            tb: plan.tb,
            kc: plan.kc,
            pf: plan.pf,
            ahead: plan.ahead,
            l1_slice: plan.l1_slice,
            xs: xs.as_ptr(),
            out: out_ptr,
            c: ck.as_mut_ptr(),
            m: mk.as_mut_ptr(),
            m_alt: m_alt.as_mut_ptr(),
            o_pre: o_pre.as_mut_ptr(),
            xw: xw.as_mut_ptr(),
            m_full: m_full.as_mut_ptr(),
            part: 0,
            parts: 1,
            barrier: None,
        })
    };
    match pool {
        Some(pool) if plan.split > 1 => {
            let barrier = SpinBarrier::new(plan.split);
            let shared = make_job(0);
            // SAFETY-relevant: every part gets the same buffers; `cell::run`
            // confines each part's writes to its own panels' units and
            // separates phases with the barrier. `broadcast` runs exactly
            // one part on each of the pool's `split` threads at once, so the
            // barrier cannot deadlock.
            pool.broadcast(|ctx| {
                run_job(&Job {
                    part: ctx.index(),
                    parts: plan.split,
                    barrier: Some(&barrier),
                    ..shared.job()
                })
            });
        }
        Some(pool) if plan.chunks > 1 => {
            // One small Vec per call (not per step) to hand chunks to rayon.
            let jobs: Vec<SendJob> = (0..plan.chunks).map(&mut make_job).collect();
            pool.install(|| {
                use rayon::prelude::*;
                jobs.into_par_iter().for_each(|j| run_job(&j.0));
            });
        }
        _ => {
            for k in 0..plan.chunks {
                run_job(&make_job(k).0);
            }
        }
    }
    Ok(())
}
