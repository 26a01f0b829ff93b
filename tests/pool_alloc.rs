//! No allocation per step: a warm stream pool stepping changing subsets,
//! and a warm batcher serving blocking submits from several threads,
//! allocate nothing at all (single-threaded model), counted by a global
//! allocator over every thread of the process.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use lstm_kernels::rng::SplitMix64;
use lstm_kernels::{
    Batcher, BatcherConfig, BatcherStats, Lstm, LstmConfig, LstmWeights, Peephole, StreamPool,
};

struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged, only counting calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The tests of this file run one at a time: [`count`] sees every thread.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn count(f: impl FnOnce()) -> usize {
    let before = ALLOCS.load(Ordering::SeqCst);
    f();
    ALLOCS.load(Ordering::SeqCst) - before
}

fn model(threads: usize) -> Lstm {
    let cfg = LstmConfig::new(24, 40)
        .with_head(8)
        .with_peephole(Peephole::Matrix);
    Lstm::new(cfg, LstmWeights::random(&cfg, 1).unwrap())
        .unwrap()
        .with_threads(threads)
        .unwrap()
        .with_parallel_threshold(0.0)
}

#[test]
fn pool_steps_do_not_allocate() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for threads in [1, 2] {
        let mut pool = StreamPool::new(model(threads), 32).unwrap();
        let ids: Vec<_> = (0..32).map(|_| pool.open().unwrap()).collect();
        let xs = SplitMix64::new(2).vec_uniform(32 * 24, -1.0, 1.0);
        let mut ys = vec![0.0f32; 32 * 8];
        // Subsets that change every step: rows swap.
        let subsets: Vec<Vec<_>> = (0..50)
            .map(|s| {
                ids.iter()
                    .enumerate()
                    .filter(|(i, _)| (i * 7 + s * 3) % 5 < 3)
                    .map(|(_, &id)| id)
                    .collect()
            })
            .collect();
        let mut run = |pool: &mut StreamPool| {
            for ids in &subsets {
                let k = ids.len();
                pool.step(ids, &xs[..k * 24], &mut ys[..k * 8]).unwrap();
            }
        };
        run(&mut pool); // warm up
        let swaps = pool.rows_swapped();
        // The fewest of three counts: the test harness's own thread may
        // allocate during one (it counts every thread); a step that
        // allocates does so in all three.
        let n = (0..3).map(|_| count(|| run(&mut pool))).min().unwrap_or(0);
        println!("{threads} thread(s): 50 steps {n} allocations");
        assert!(pool.rows_swapped() > swaps, "the subsets did not move rows");
        if threads == 1 {
            assert_eq!(n, 0, "a warm pool step allocated");
        } else {
            // Not per step (the driver collected its chunks' jobs into a
            // Vec per call, so per step, before): rayon's bookkeeping may
            // allocate now and then.
            assert!(n < 10, "{n} allocations in 50 steps");
        }
    }
}

/// A new pool's first steps allocate nothing either, whatever their
/// batch size (up to the capacity), on the f32 kernels and the reduced
/// precisions': `StreamPool::new` sizes the kernels' scratch for all of
/// its rows, so a batcher's batch that beats its largest so far does not
/// allocate mid-service. (Two threads: only rayon's own bookkeeping.)
#[test]
fn a_new_pool_steps_any_batch_size_without_allocating() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let plain = LstmConfig::new(24, 40);
    let base = Lstm::new(plain, LstmWeights::random(&plain, 3).unwrap())
        .unwrap()
        .with_threads(1)
        .unwrap()
        .with_parallel_threshold(0.0);
    let mut models = vec![model(1), model(2), base.clone().with_threads(2).unwrap()];
    for k in Lstm::bf16_kernels() {
        models.push(base.clone().with_bf16_kernel(k).unwrap());
    }
    for k in Lstm::int8_kernels() {
        models.push(base.clone().with_int8_kernel(k).unwrap());
    }
    for m in models {
        let name = format!("{} on {} thread(s)", m.kernel_name(), m.threads());
        let threads = m.threads();
        let p = m.config().n_output();
        let xs = SplitMix64::new(2).vec_uniform(48 * 24, -1.0, 1.0);
        let mut ys = vec![0.0f32; 48 * p];
        // The fewest of three new pools' counts (the harness's own thread
        // may allocate during one; a step that allocates does in all).
        let n = (0..3)
            .map(|_| {
                let mut pool = StreamPool::new(m.clone(), 48).unwrap();
                let ids: Vec<_> = (0..48).map(|_| pool.open().unwrap()).collect();
                count(|| {
                    for k in [1, 3, 16, 17, 33, 48] {
                        pool.step(&ids[..k], &xs[..k * 24], &mut ys[..k * p])
                            .unwrap();
                    }
                })
            })
            .min()
            .unwrap_or(0);
        println!("{name}: 6 first steps, {n} allocations");
        if threads == 1 {
            assert_eq!(n, 0, "{name}: a new pool's step allocated");
        } else {
            assert!(n < 6 * 8, "{name}: {n} allocations in 6 steps");
        }
    }
}

#[test]
fn batcher_does_not_allocate_once_warm() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let conf = BatcherConfig::new().with_max_wait(Duration::from_micros(100));
    let batcher = Batcher::new(StreamPool::new(model(1), 16).unwrap(), conf).unwrap();
    let ids: Vec<_> = (0..16).map(|_| batcher.open().unwrap()).collect();
    let clients = 4;
    let serve = |rounds: usize| {
        std::thread::scope(|s| {
            for c in 0..clients {
                let (batcher, ids) = (&batcher, &ids);
                s.spawn(move || {
                    let x = [0.25f32; 24];
                    let mut y = [0.0f32; 8];
                    for r in 0..rounds {
                        let id = ids[(c * 4 + r) % 16];
                        batcher.submit_into(id, &x, &mut y).unwrap();
                    }
                });
            }
        })
    };
    serve(200); // warm up (threads' wakers, tickets)
    // The client threads of `serve` are new threads (spawning allocates):
    // count what happens inside them, after their start.
    let before = batcher.stats();
    let barrier = std::sync::Barrier::new(clients + 1);
    let n = std::thread::scope(|s| {
        let hs: Vec<_> = (0..clients)
            .map(|c| {
                let (batcher, ids, barrier) = (&batcher, &ids, &barrier);
                s.spawn(move || {
                    let x = [0.25f32; 24];
                    let mut y = [0.0f32; 8];
                    // Warm this thread's waker, then wait for the count.
                    batcher.submit_into(ids[c], &x, &mut y).unwrap();
                    barrier.wait();
                    for r in 0..300 {
                        let id = ids[(c * 4 + r) % 16];
                        batcher.submit_into(id, &x, &mut y).unwrap();
                    }
                    barrier.wait();
                })
            })
            .collect();
        barrier.wait();
        let start = ALLOCS.load(Ordering::SeqCst);
        barrier.wait();
        let n = ALLOCS.load(Ordering::SeqCst) - start;
        for h in hs {
            h.join().unwrap();
        }
        n
    });
    let after = batcher.stats();
    println!(
        "batcher: {} steps, {} frames, {n} allocations",
        after.steps - before.steps,
        after.frames - before.frames
    );
    assert!(after.steps - before.steps >= 300 * clients as u64 / 16);
    assert_eq!(n, 0, "a warm batcher allocated");
}

/// A warm `Client` on a batcher over 16 streams: round `r` submits the
/// ids `doubled[first..first + n]` for `(first, n) = pick(r)`, where
/// `doubled` lists the 16 streams twice, and collects every result. After
/// 100 warm-up rounds, the fewest allocations of three runs of 100 rounds,
/// and the batcher's stats before and after them.
fn warm_client_allocations(
    conf: BatcherConfig,
    pick: impl Fn(usize) -> (usize, usize),
) -> (usize, BatcherStats, BatcherStats) {
    let batcher = Batcher::new(StreamPool::new(model(1), 16).unwrap(), conf).unwrap();
    let ids: Vec<_> = (0..16).map(|_| batcher.open().unwrap()).collect();
    let doubled: Vec<_> = ids.iter().chain(&ids).copied().collect();
    let mut cl = batcher.client().unwrap();
    let xs = vec![0.25f32; 32 * 24];
    let mut sum = 0.0f32;
    let mut serve = |rounds: usize| {
        for r in 0..rounds {
            let (first, n) = pick(r);
            cl.submit(&doubled[first..first + n], &xs[..n * 24])
                .unwrap();
            while cl.outstanding() > 0 {
                for out in cl.wait(None) {
                    sum += out.output.unwrap()[0];
                }
            }
        }
    };
    serve(100); // warm up
    let before = batcher.stats();
    let n = (0..3).map(|_| count(|| serve(100))).min().unwrap_or(0);
    let after = batcher.stats();
    assert!(sum.is_finite());
    (n, before, after)
}

/// A warm `Client` (batched submits and collects) allocates nothing,
/// neither does the worker serving it.
#[test]
fn client_does_not_allocate_once_warm() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let conf = BatcherConfig::new().with_max_wait(Duration::from_micros(100));
    // A changing subset of up to 16 streams per call.
    let (n, before, after) = warm_client_allocations(conf, |r| {
        let k = 1 + (r * 7) % 16;
        ((r * 5) % (17 - k), k)
    });
    println!(
        "client: {} steps, {} frames, {n} allocations",
        after.steps - before.steps,
        after.frames - before.frames
    );
    assert!(after.steps - before.steps >= 300);
    assert_eq!(n, 0, "a warm client allocated");
}

/// Catch-up steps (`BatcherConfig::catch_up`) allocate nothing either:
/// each call sends every stream a frame and some a second one, which
/// waits through the step and runs in a catch-up step.
#[test]
fn catch_up_steps_do_not_allocate_once_warm() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let conf = BatcherConfig::new()
        .with_max_wait(Duration::from_micros(100))
        .with_catch_up(true);
    // All 16 streams from `first` on (wrapping), the first k twice.
    let (n, before, after) = warm_client_allocations(conf, |r| {
        let k = 1 + (r * 7) % 15;
        ((r * 5) % (16 - k), 16 + k)
    });
    println!(
        "catch-up: {} steps ({} catch-ups), {} frames, {n} allocations",
        after.steps - before.steps,
        after.catch_ups - before.catch_ups,
        after.frames - before.frames
    );
    assert!(after.catch_ups - before.catch_ups >= 100, "{after:?}");
    assert_eq!(n, 0, "a warm batcher with catch-up steps allocated");
}
