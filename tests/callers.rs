//! What a caller's context must not change: calls from inside rayon pools
//! (issue 17, finding 1) — a model with its own threads, called from the
//! items of a `par_iter` on the global pool or on another pool, must
//! neither recurse (entering the model's pool from a foreign worker made
//! that worker run queued items — more calls — while it waited, until the
//! stack overflowed) nor change a result; the thread's rounding mode
//! (finding 8); absurd thread counts (finding 5).

mod common;

use common::{Case, bits, config};
use lstm_kernels::Lstm;
use rayon::prelude::*;

/// Runs `case` on `model` from `items` items of a parallel iterator in
/// `pool` (the global pool when `None`); every result must equal `want`.
fn nested(model: &Lstm, case: &Case, items: usize, pool: Option<&rayon::ThreadPool>, want: &[u32]) {
    let run = || {
        (0..items).into_par_iter().for_each(|i| {
            let (y, _, _) = case.run_forward(model);
            assert_eq!(bits(&y), want, "item {i}: a nested call changed the result");
        })
    };
    match pool {
        Some(p) => p.install(run),
        None => run(),
    }
}

#[test]
fn calls_from_rayon_items_neither_recurse_nor_change_results() {
    // Large enough per step that the model would use its threads
    // (threshold 0), small enough for 10,000 calls.
    let case = Case::new(config(8, 24, Some(5), true), 13, 3, 17, 1.0);
    let want = bits(&case.run_forward(&case.model()).0);
    for threads in [2, 3, 4] {
        let model = case
            .model()
            .with_threads(threads)
            .unwrap()
            .with_parallel_threshold(0.0);
        nested(&model, &case, 10_000, None, &want);
        let other = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        nested(&model, &case, 2_000, Some(&other), &want);
    }
}

#[test]
fn a_hidden_unit_split_model_nests_too() {
    // One row block: the model would split its hidden units over threads
    // (a broadcast with a barrier) if it entered its pool.
    let case = Case::new(config(16, 96, None, false), 1, 2, 5, 1.0);
    let want = bits(&case.run_forward(&case.model()).0);
    let model = case
        .model()
        .with_threads(2)
        .unwrap()
        .with_parallel_threshold(0.0);
    nested(&model, &case, 2_000, None, &want);
}

/// The caller's rounding mode (issue 17, finding 8): a thread that set
/// MXCSR to round toward zero gets the same results as one that did not,
/// and keeps its mode afterwards.
#[cfg(all(target_arch = "x86_64", not(miri)))]
#[test]
fn the_callers_rounding_mode_does_not_leak_into_the_kernels() {
    fn mxcsr() -> u32 {
        let mut v = 0u32;
        // SAFETY: reads this thread's MXCSR into `v`.
        unsafe { std::arch::asm!("stmxcsr [{}]", in(reg) &mut v, options(nostack)) };
        v
    }
    fn set_mxcsr(v: u32) {
        // SAFETY: writes this thread's MXCSR (a valid value read from it,
        // with only the rounding-control bits changed).
        unsafe { std::arch::asm!("ldmxcsr [{}]", in(reg) &v, options(nostack, readonly)) };
    }
    let case = Case::new(config(8, 24, Some(5), true), 7, 4, 23, 2.0);
    for isa in lstm_kernels::Isa::all_available() {
        let model = case.model().with_isa(isa).unwrap();
        let want = bits(&case.run_forward(&model).0);
        let saved = mxcsr();
        for rc in [1u32, 2, 3] {
            // Round down, up, toward zero.
            set_mxcsr((saved & !(0b11 << 13)) | (rc << 13));
            let got = bits(&case.run_forward(&model).0);
            let after = mxcsr();
            set_mxcsr(saved);
            assert_eq!(got, want, "{isa}: rounding mode {rc} changed the result");
            assert_eq!(
                (after >> 13) & 0b11,
                rc,
                "{isa}: the caller's mode was not restored"
            );
        }
    }
    // Outside the kernels too (the review of issue 17): random weights and
    // a stack's sum of directions.
    use lstm_kernels::{LstmConfig, LstmStack, LstmWeights, Merge, SeqOptions, StackLayer};
    let cfg = LstmConfig::new(5, 6);
    let cell =
        |seed| lstm_kernels::Lstm::new(cfg, LstmWeights::random(&cfg, seed).unwrap()).unwrap();
    let stack = LstmStack::new(
        vec![StackLayer {
            forward: cell(1),
            backward: Some(cell(2)),
        }],
        Merge::Sum,
    )
    .unwrap();
    let xs: Vec<f32> = (0..4 * 3 * 5).map(|k| (k as f32 * 0.37).sin()).collect();
    let run = || {
        let w = bits(&LstmWeights::random(&cfg, 7).unwrap().gates);
        let mut st = stack.new_state(3).unwrap();
        let mut y = vec![0.0; 4 * 3 * 6];
        stack
            .forward(&mut st, &xs, &mut y, SeqOptions::default())
            .unwrap();
        (w, bits(&y))
    };
    let want = run();
    let saved = mxcsr();
    for rc in [1u32, 2, 3] {
        set_mxcsr((saved & !(0b11 << 13)) | (rc << 13));
        let got = run();
        set_mxcsr(saved);
        assert!(
            got.0 == want.0,
            "rounding mode {rc} changed LstmWeights::random"
        );
        assert!(
            got.1 == want.1,
            "rounding mode {rc} changed a Merge::Sum stack"
        );
    }
}

/// A stack's layers share one pool (the review of issue 17: a 500-layer
/// stack started a pool per cell, ~8,000 threads with `--threads 8`).
#[cfg(target_os = "linux")]
#[test]
fn a_deep_stack_starts_one_pool() {
    use lstm_kernels::{LstmConfig, LstmStack, LstmWeights, Merge, StackLayer};
    let threads_now = || std::fs::read_dir("/proc/self/task").unwrap().count();
    let cfg = LstmConfig::new(2, 2);
    let cell = || lstm_kernels::Lstm::new(cfg, LstmWeights::random(&cfg, 1).unwrap()).unwrap();
    let layers = (0..60)
        .map(|_| StackLayer {
            forward: cell(),
            backward: Some(cell()),
        })
        .collect();
    let stack = LstmStack::new(layers, Merge::Sum).unwrap();
    let before = threads_now();
    let stack = stack.with_threads(2).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(50));
    let started = threads_now().saturating_sub(before);
    // Two for the pool; other tests of this binary may start a few too.
    assert!(
        started < 40,
        "{started} threads for a 60-layer stack on 2 threads"
    );
    assert!(stack.layers().iter().all(|l| l.forward.threads() == 2));
}

/// Thread counts (issue 17, finding 5): beyond the documented limit, an
/// error naming it, at once — not thousands of threads started first.
#[test]
fn thread_counts_beyond_the_limit_are_errors() {
    let case = Case::new(config(3, 4, None, false), 1, 1, 1, 1.0);
    let limit = lstm_kernels::max_threads();
    assert!(limit >= 4, "{limit}");
    for n in [limit + 1, 1_000_000, usize::MAX] {
        let t = std::time::Instant::now();
        let e = case.model().with_threads(n).unwrap_err().to_string();
        assert!(
            e.contains(&limit.to_string()) && e.contains("threads"),
            "{n}: {e}"
        );
        assert!(
            t.elapsed().as_secs_f64() < 1.0,
            "{n}: took {:?}",
            t.elapsed()
        );
    }
    assert_eq!(case.model().with_threads(limit).unwrap().threads(), limit);
}
