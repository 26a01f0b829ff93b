//! No allocation per step: a counting global allocator shows that a
//! `forward` over many steps allocates exactly as often as over one step
//! (and, once the state's scratch has grown, a single-threaded call does
//! not allocate at all; with threads, the calling thread does not either,
//! and only rayon's bookkeeping may, now and then; a hidden-unit split
//! runs on the model's team of helper threads, and allocates nothing).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use lstm_kernels::{Isa, Lstm, LstmConfig, LstmState, LstmWeights, Peephole};

struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Allocations made by this thread (const-initialised: no allocation).
    static MINE: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

fn note_alloc() {
    ALLOCS.fetch_add(1, Ordering::Relaxed);
    let _ = MINE.try_with(|c| c.set(c.get() + 1));
}

// SAFETY: forwards to the system allocator unchanged, only counting calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_alloc();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_alloc();
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations by every thread of the process while `f` runs (other
/// tests' threads included, so only used with a generous bound).
/// The tests of this file run one at a time: [`count`] sees every thread.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn count(f: &mut dyn FnMut()) -> usize {
    let before = ALLOCS.load(Ordering::SeqCst);
    f();
    ALLOCS.load(Ordering::SeqCst) - before
}

/// [`count`], the fewest of three runs of `f`: the test harness's own
/// threads allocate now and then (another test finishing: its captured
/// output, its result), which a single count takes for `f`'s under load
/// (a CI run saw 16 in a 100-step call and 2 in a 1-step one); an `f` that
/// allocates does so in all three.
fn count_least(f: &mut dyn FnMut()) -> usize {
    (0..3).map(|_| count(f)).min().unwrap_or(0)
}

/// Allocations by the calling thread while `f` runs (exact).
fn count_mine(f: &mut dyn FnMut()) -> usize {
    let before = MINE.with(|c| c.get());
    f();
    MINE.with(|c| c.get()) - before
}

/// `steps` calls of `model.step`, one per step of `xs` (`[T, batch,
/// n_in]`), each writing its output to the front of `ys`.
fn step_each(model: &Lstm, st: &mut LstmState, xs: &[f32], ys: &mut [f32], steps: usize) {
    let (b, n, p) = (
        st.batch(),
        model.config().n_input,
        model.config().n_output(),
    );
    for t in 0..steps {
        model
            .step(st, &xs[t * b * n..(t + 1) * b * n], &mut ys[..b * p])
            .unwrap();
    }
}

#[test]
fn forward_does_not_allocate_per_step() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let cfg = LstmConfig::new(24, 40)
        .with_head(8)
        .with_peephole(Peephole::Matrix);
    for isa in Isa::all_available() {
        for threads in [1, 2] {
            let model = Lstm::new(cfg, LstmWeights::random(&cfg, 1).unwrap())
                .unwrap()
                .with_isa(isa)
                .unwrap()
                .with_threads(threads)
                .unwrap()
                .with_parallel_threshold(0.0);
            let batch = 13;
            let mut st = model.new_state(batch).unwrap();
            let long = 200;
            let xs = vec![0.25f32; long * batch * 24];
            let mut ys = vec![0.0f32; long * batch * 8];
            // Warm up: the scratch grows to its size for this batch.
            model.forward(&mut st, &xs, &mut ys).unwrap();
            // One thread: every allocation would be on this thread, counted
            // exactly; with a pool, count the whole process.
            let counter = if threads == 1 {
                count_mine
            } else {
                count_least
            };
            let one = counter(&mut || {
                model
                    .forward(&mut st, &xs[..batch * 24], &mut ys[..batch * 8])
                    .unwrap()
            });
            let many = counter(&mut || model.forward(&mut st, &xs, &mut ys).unwrap());
            let mut fifty_steps = || step_each(&model, &mut st, &xs, &mut ys, 50);
            let steps = counter(&mut fifty_steps);
            println!(
                "{isa}, {threads} thread(s): 1 step {one} allocations, {long} steps {many}, 50 × step() {steps}"
            );
            // With a thread pool, rayon's own bookkeeping allocates a few
            // times per call (how many depends on scheduling); per step it
            // would be ≥ 200.
            assert!(
                many <= one + 8,
                "{isa}/{threads}: {many} allocations for {long} steps vs {one} for 1"
            );
            if threads == 1 {
                assert_eq!(many, 0, "{isa}: single-threaded forward allocated");
                assert_eq!(steps, 0, "{isa}: step() allocated");
            } else {
                // The driver itself allocates nothing per call either: the
                // calling thread hands the chunks to rayon without
                // collecting them (it allocated a Vec of jobs per call,
                // so per step() before). rayon may allocate now and then.
                let mine = count_mine(&mut fifty_steps);
                assert!(
                    mine < 10,
                    "{isa}: {mine} allocations on the calling thread in 50 two-thread steps"
                );
            }
        }
    }
}

/// A batch split by hidden units (one row block on two threads: the
/// latency-bound case of one stream) allocates nothing in any thread: its
/// parts run on the caller and the model's team, not through rayon's
/// `broadcast` (which allocated its bookkeeping every call).
#[test]
fn hidden_unit_splits_do_not_allocate() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let cfg = LstmConfig::new(64, 128);
    for isa in Isa::all_available() {
        for rules in ["partition=units", "partition=units,fuse=1"] {
            let model = Lstm::new(cfg, LstmWeights::random(&cfg, 1).unwrap())
                .unwrap()
                .with_isa(isa)
                .unwrap()
                .with_threads(2)
                .unwrap()
                .with_parallel_threshold(0.0)
                .with_plan_rules(rules.parse().unwrap())
                .unwrap();
            let batch = 3;
            let mut st = model.new_state(batch).unwrap();
            let xs = vec![0.25f32; 50 * batch * 64];
            let mut ys = vec![0.0f32; 50 * batch * 128];
            let mut fifty_steps = || step_each(&model, &mut st, &xs, &mut ys, 50);
            // Warm up (the scratch, the team's start), and prove that every
            // step is a split run by the team.
            let before = lstm_kernels::diagnostics::split_runs_on_this_thread();
            fifty_steps();
            let splits = lstm_kernels::diagnostics::split_runs_on_this_thread() - before;
            assert_eq!(splits, 50, "{isa} {rules}: not every step was a split");
            let steps = count_least(&mut fifty_steps);
            let whole = count_least(&mut || model.forward(&mut st, &xs, &mut ys).unwrap());
            println!(
                "{isa} {rules}: 50 split step() calls {steps} allocations, one 50-step call {whole}"
            );
            assert_eq!(steps, 0, "{isa} {rules}: split steps allocated");
            assert_eq!(whole, 0, "{isa} {rules}: a split forward allocated");
        }
    }
}

/// bf16 and int8 too, on every kernel this CPU has: the operand and sum
/// buffers live in the state and grow once.
#[test]
fn reduced_precision_does_not_allocate_per_step() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let cfg = LstmConfig::new(24, 40).with_peephole(Peephole::Diagonal);
    let kernels = Lstm::bf16_kernels()
        .into_iter()
        .map(|k| (k, true))
        .chain(Lstm::int8_kernels().into_iter().map(|k| (k, false)));
    for (k, bf16) in kernels {
        for threads in [1, 2] {
            let model = Lstm::new(cfg, LstmWeights::random(&cfg, 1).unwrap())
                .unwrap()
                .with_threads(threads)
                .unwrap()
                .with_parallel_threshold(0.0);
            let model = if bf16 {
                model.with_bf16_kernel(k)
            } else {
                model.with_int8_kernel(k)
            }
            .unwrap();
            let batch = 37;
            let mut st = model.new_state(batch).unwrap();
            let long = 100;
            let xs = vec![0.25f32; long * batch * 24];
            let mut ys = vec![0.0f32; long * batch * 40];
            model.forward(&mut st, &xs, &mut ys).unwrap();
            let counter = if threads == 1 {
                count_mine
            } else {
                count_least
            };
            let one = counter(&mut || {
                model
                    .forward(&mut st, &xs[..batch * 24], &mut ys[..batch * 40])
                    .unwrap()
            });
            let many = counter(&mut || model.forward(&mut st, &xs, &mut ys).unwrap());
            let steps = counter(&mut || step_each(&model, &mut st, &xs, &mut ys, 50));
            println!(
                "{k}, {threads} thread(s): 1 step {one}, {long} steps {many}, 50 × step() {steps}"
            );
            assert!(
                many <= one + 8,
                "{k}/{threads}: {many} for {long} steps vs {one} for 1"
            );
            if threads == 1 {
                assert_eq!(many, 0, "{k}: single-threaded forward allocated");
                assert_eq!(steps, 0, "{k}: step() allocated");
            } else {
                assert!(
                    steps < 50,
                    "{k}/{threads}: step() allocates every step ({steps} in 50)"
                );
            }
        }
    }
}

/// Sequence models too: once its buffers have grown, a stacked,
/// bidirectional model over ragged (reordered) lengths does not allocate.
#[test]
fn stacks_do_not_allocate_per_step() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    use lstm_kernels::{LstmStack, Merge, SeqOptions, StackLayer};
    let cell = |n: usize, seed: u64| {
        let cfg = LstmConfig::new(n, 12).with_projection(5);
        Lstm::new(cfg, LstmWeights::random(&cfg, seed).unwrap()).unwrap()
    };
    let layers = vec![
        StackLayer {
            forward: cell(7, 1),
            backward: Some(cell(7, 2)),
        },
        StackLayer {
            forward: cell(10, 3),
            backward: Some(cell(10, 4)),
        },
    ];
    let stack = LstmStack::new(layers, Merge::Concat).unwrap();
    let b = 5;
    let mut st = stack.new_state(b).unwrap();
    let run = |st: &mut lstm_kernels::StackState, t: usize| {
        let xs = vec![0.1f32; t * b * 7];
        let mut out = vec![0.0f32; t * b * 10];
        // Ascending lengths: the driver must reorder the samples.
        let lens: Vec<usize> = (0..b).map(|i| t - (b - 1 - i) * t / (2 * b)).collect();
        // Allocate the inputs before counting.
        let before = MINE.with(|c| c.get());
        stack
            .forward(
                st,
                &xs,
                &mut out,
                SeqOptions {
                    batch_first: true,
                    seq_lens: Some(&lens),
                },
            )
            .unwrap();
        MINE.with(|c| c.get()) - before
    };
    run(&mut st, 200); // warm up: buffers grow to their size
    let short = run(&mut st, 20);
    let long = run(&mut st, 200);
    println!("stack: 20 steps {short} allocations, 200 steps {long}");
    assert_eq!(short, long, "allocations grow with the number of steps");
    assert_eq!(long, 0, "a warmed-up stack call allocated");
}
