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
    if job.fused() {
        diagnostics::record_fused();
    }
    // SAFETY: `forward` built the job for this packed model; the kernel's
    // entry checks that the model is packed as it reads.
    unsafe { run(job) }
}

/// The base pointers of a call's mutable buffers, from which each chunk's
/// job takes its own regions (see `forward`).
struct Bufs {
    scratch: *mut f32,
    c: *mut f32,
    m: *mut f32,
    out: *mut f32,
}

// SAFETY: shared by the chunks' jobs of one call, each of which writes
// only its own regions of these buffers (disjoint, checked in `forward`);
// the pointers are only offset, never written through, here.
unsafe impl Sync for Bufs {}

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
    /// The pool's threads, whose team runs a hidden-unit split.
    pub(crate) split_team: Option<&'a super::Threads>,
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
    // Chunk k's buffers, found from k alone (so that the chunks can be
    // handed to rayon without collecting them): every chunk before the
    // last has `plan.per` rows, so chunk k's scratch starts at k times the
    // scratch of `per` rows, and its rows of c and m at k·per.
    let scratch = st.scratch.as_mut_slice();
    let stride: usize = plan.chunk_scratch(pk, plan.per).iter().sum();
    let lens = (scratch.len(), st.c.len(), st.m.len());
    let bufs = Bufs {
        scratch: scratch.as_mut_ptr(),
        c: st.c.as_mut_ptr(),
        m: st.m.as_mut_ptr(),
        out: out.as_mut_ptr(),
    };
    let make_job = |k: usize| {
        let bufs = &bufs;
        let rows = plan.rows(batch, k);
        let [n_xw, n_op, n_ma, n_mf] = plan.chunk_scratch(pk, rows);
        let (s0, c0, m0) = (k * stride, k * plan.per * h, k * plan.per * pk.r);
        // Memory safety rests on these (release) checks: the chunk's
        // regions lie inside their buffers, and its scratch within its own
        // stride (so no two chunks' regions overlap; c and m rows are
        // disjoint by construction, chunk k owns rows k·per..k·per+rows).
        let n_scratch = n_xw + n_op + n_ma + n_mf;
        assert!(k < plan.chunks && rows <= plan.per && n_scratch <= stride);
        assert!(s0 + n_scratch <= lens.0 && c0 + rows * h <= lens.1 && m0 + rows * pk.r <= lens.2);
        // SAFETY: every offset is within its buffer (asserted above), and
        // the buffers outlive the jobs (they run before `forward` returns).
        let (xw, o_pre, m_alt, m_full, ck, mk) = unsafe {
            let s = bufs.scratch.add(s0);
            (
                s,
                s.add(n_xw),
                s.add(n_xw + n_op),
                s.add(n_xw + n_op + n_ma),
                bufs.c.add(c0),
                bufs.m.add(m0),
            )
        };
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
            group: plan.group,
            xs: xs.as_ptr(),
            out: bufs.out,
            c: ck,
            m: mk,
            m_alt,
            o_pre,
            xw,
            m_full,
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
            // separates phases with the barrier. The team runs every part at
            // once (the caller part 0, a helper each of the others), without
            // allocating, after any other call it is running; where it
            // cannot (too few helpers started, or a split inside a part),
            // `broadcast` runs exactly one part on each of the pool's
            // `split` threads at once. Either way the barrier cannot
            // deadlock.
            let part = |p: usize| {
                // A panicking part must not leave the others at the barrier.
                let _poison = barrier.poison_on_panic();
                run_job(&Job {
                    part: p,
                    parts: plan.split,
                    barrier: Some(&barrier),
                    ..shared.job()
                })
            };
            if !par
                .split_team
                .is_some_and(|t| t.team().run(plan.split, &part))
            {
                pool.broadcast(|ctx| part(ctx.index()));
            }
        }
        Some(pool) if plan.chunks > 1 => {
            // Each worker builds its chunks' jobs: nothing is allocated.
            pool.install(|| {
                use rayon::prelude::*;
                (0..plan.chunks)
                    .into_par_iter()
                    .for_each(|k| run_job(&make_job(k).0));
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
