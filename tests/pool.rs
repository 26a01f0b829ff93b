//! Stream pools and the batcher: every stream's outputs and final state
//! must be bitwise those of running that stream alone (batch 1) through
//! `Lstm::forward`, whatever the schedule of opens, closes, resets, state
//! moves and steps over subsets, the batch composition, the client
//! threads and the model's thread count; and bad ids, closed streams,
//! full pools and queues, wrong lengths and shutdowns are clean errors
//! that leave the other streams alone.

mod common;

use std::sync::mpsc;
use std::time::Duration;

use common::{bits, config, same_bits};
use lstm_kernels::rng::SplitMix64;
use lstm_kernels::{
    Backpressure, Batcher, BatcherConfig, Error, Isa, Lstm, LstmConfig, LstmStack, LstmWeights,
    Merge, Peephole, Shutdown, StackLayer, StreamId, StreamPool,
};
use proptest::prelude::*;

/// What one stream went through since its record began (its open, reset
/// or state write): the starting state, its frames and its outputs.
#[derive(Clone, Debug)]
struct Record {
    id: StreamId,
    c0: Vec<f32>,
    m0: Vec<f32>,
    xs: Vec<f32>,
    ys: Vec<f32>,
}

impl Record {
    fn new(id: StreamId, (lc, lm): (usize, usize)) -> Record {
        Record {
            id,
            c0: vec![0.0; lc],
            m0: vec![0.0; lm],
            xs: Vec::new(),
            ys: Vec::new(),
        }
    }
}

/// The stream alone: `forward` over its frames at batch 1 from its
/// starting state; returns (outputs, final c, final m).
fn alone(model: &Lstm, r: &Record) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut st = model.state_from(1, &r.c0, &r.m0).unwrap();
    let mut y = vec![f32::NAN; r.ys.len()];
    if !r.xs.is_empty() {
        model.forward(&mut st, &r.xs, &mut y).unwrap();
    }
    (y, st.c().to_vec(), st.m().to_vec())
}

/// Checks a record against the stream alone, and the pool's state of
/// the stream (`c`, `m`) against its final state.
fn check(model: &Lstm, r: &Record, c: &[f32], m: &[f32]) -> Result<(), String> {
    let (y, ac, am) = alone(model, r);
    let what = format!(
        "{} after {} frames",
        r.id,
        r.xs.len() / model.config().n_input
    );
    same_bits(&format!("{what}: y"), &r.ys, &y)?;
    same_bits(&format!("{what}: c"), c, &ac)?;
    same_bits(&format!("{what}: m"), m, &am)
}

fn arb_model() -> impl Strategy<Value = (LstmConfig, u64)> {
    let any_cfg = (
        1usize..=12,
        1usize..=24,
        any::<bool>(),
        any::<bool>(),
        1usize..=24,
    )
        .prop_map(|(n, h, head, peep, p)| config(n, h, head.then_some(p.min(h)), peep));
    let seed = config(7, 5, Some(3), true);
    (prop_oneof![any_cfg, Just(seed)], any::<u64>())
}

/// Runs a random schedule on a pool over `model`; checks every stream
/// whenever its record ends (close, reset, state write) and at the end.
fn run_schedule(model: &Lstm, capacity: usize, ops: &[(u8, u64)]) -> Result<(), String> {
    let mut pool = StreamPool::new(model.clone(), capacity).map_err(|e| e.to_string())?;
    let (n, p) = (model.config().n_input, model.config().n_output());
    let lens = pool.state_len();
    let mut recs: Vec<Record> = Vec::new();
    let (mut c, mut m) = (vec![0.0; lens.0], vec![0.0; lens.1]);
    let finish = |pool: &StreamPool, r: &Record, c: &mut [f32], m: &mut [f32]| {
        pool.read_state(r.id, c, m).map_err(|e| e.to_string())?;
        check(model, r, c, m)
    };
    for &(op, seed) in ops {
        let mut rng = SplitMix64::new(seed);
        let pick = |k: usize| (seed >> 8) as usize % k.max(1);
        match op % 12 {
            0 | 1 => match pool.open() {
                Ok(id) => recs.push(Record::new(id, lens)),
                Err(Error::Busy(_)) if recs.len() == capacity => {}
                Err(e) => return Err(format!("open: {e}")),
            },
            2 if !recs.is_empty() => {
                let r = recs.swap_remove(pick(recs.len()));
                finish(&pool, &r, &mut c, &mut m)?;
                pool.close(r.id).map_err(|e| e.to_string())?;
                if pool.is_open(r.id)
                    || pool.step(&[r.id], &vec![0.0; n], &mut vec![0.0; p]).is_ok()
                {
                    return Err(format!("{} still steps after close", r.id));
                }
            }
            3 if !recs.is_empty() => {
                let i = pick(recs.len());
                finish(&pool, &recs[i], &mut c, &mut m)?;
                pool.reset(recs[i].id).map_err(|e| e.to_string())?;
                recs[i] = Record::new(recs[i].id, lens);
            }
            // Migration: stream a's state into stream b, whose record
            // starts again from it.
            4 if recs.len() >= 2 => {
                let (a, b) = (pick(recs.len()), (pick(recs.len()) + 1) % recs.len());
                if a != b {
                    finish(&pool, &recs[b], &mut c, &mut m)?;
                    pool.read_state(recs[a].id, &mut c, &mut m)
                        .map_err(|e| e.to_string())?;
                    pool.write_state(recs[b].id, &c, &m)
                        .map_err(|e| e.to_string())?;
                    recs[b] = Record {
                        c0: c.clone(),
                        m0: m.clone(),
                        ..Record::new(recs[b].id, lens)
                    };
                }
            }
            _ if !recs.is_empty() => {
                // A random subset in a random order.
                let mut order: Vec<usize> = (0..recs.len()).collect();
                for i in (1..order.len()).rev() {
                    order.swap(i, rng.next_u64() as usize % (i + 1));
                }
                let k = 1 + rng.next_u64() as usize % recs.len();
                let ids: Vec<StreamId> = order[..k].iter().map(|&i| recs[i].id).collect();
                let x = rng.vec_uniform(k * n, -2.0, 2.0);
                let mut y = vec![f32::NAN; k * p];
                pool.step(&ids, &x, &mut y)
                    .map_err(|e| format!("step: {e}"))?;
                for (j, &i) in order[..k].iter().enumerate() {
                    recs[i].xs.extend_from_slice(&x[j * n..(j + 1) * n]);
                    recs[i].ys.extend_from_slice(&y[j * p..(j + 1) * p]);
                }
            }
            _ => {}
        }
    }
    for r in &recs {
        finish(&pool, r, &mut c, &mut m)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// The pool alone, on every ISA and on 1 and 2 threads.
    #[test]
    fn pool_streams_match_forward_alone(
        (cfg, wseed) in arb_model(),
        capacity in 1usize..=12,
        ops in prop::collection::vec((any::<u8>(), any::<u64>()), 1..60),
    ) {
        let base = Lstm::new(cfg, LstmWeights::random(&cfg, wseed).unwrap()).unwrap();
        for isa in Isa::all_available() {
            for threads in [1, 2] {
                let model = common::on_threads(&base.clone().with_isa(isa).unwrap(), threads);
                run_schedule(&model, capacity, &ops)
                    .map_err(|e| TestCaseError::fail(format!("{isa}, {threads} threads: {e}")))?;
            }
        }
    }
}

/// The shapes with generated kernels (the seed cell's two bodies switch
/// at 5 rows; `blocked_64x64`), at capacities where steps cover from 1 to
/// 40 rows, and a hidden-unit split (1 row on 2 threads).
#[test]
fn pool_on_generated_kernels_and_wide_batches() {
    let mut rng = SplitMix64::new(5);
    for cfg in [
        config(7, 5, Some(3), true),
        config(64, 64, None, false),
        config(33, 129, Some(50), true),
    ] {
        let base = Lstm::new(cfg, LstmWeights::random(&cfg, 3).unwrap()).unwrap();
        let ops: Vec<(u8, u64)> = (0..120)
            .map(|i| {
                let op = if i < 40 { 0 } else { rng.next_u64() as u8 };
                (op, rng.next_u64())
            })
            .collect();
        for threads in [1, 2] {
            let model = common::on_threads(&base, threads);
            run_schedule(&model, 40, &ops).unwrap_or_else(|e| panic!("{threads} threads: {e}"));
        }
    }
}

/// Reduced precision too: a pool over a bf16 or int8 model (every kernel
/// this CPU has) gives each stream bitwise its run alone — the
/// reduced-precision rows are independent of the batch they run in.
#[test]
fn pool_on_reduced_precision_kernels() {
    let mut rng = SplitMix64::new(9);
    let cfg = config(20, 24, None, false).with_peephole(lstm_kernels::Peephole::Diagonal);
    let base = Lstm::new(cfg, LstmWeights::random(&cfg, 4).unwrap()).unwrap();
    let ops: Vec<(u8, u64)> = (0..80)
        .map(|i| {
            let op = if i < 30 { 0 } else { rng.next_u64() as u8 };
            (op, rng.next_u64())
        })
        .collect();
    let kernels = Lstm::bf16_kernels()
        .into_iter()
        .map(|k| base.clone().with_bf16_kernel(k).unwrap())
        .chain(
            Lstm::int8_kernels()
                .into_iter()
                .map(|k| base.clone().with_int8_kernel(k).unwrap()),
        );
    for model in kernels {
        for threads in [1, 2] {
            let m = common::on_threads(&model, threads);
            run_schedule(&m, 33, &ops)
                .unwrap_or_else(|e| panic!("{} on {threads} threads: {e}", model.kernel_name()));
        }
    }
}

/// A unidirectional stack steps through every layer: bitwise the stack's
/// own `forward` of each stream alone; a bidirectional one is refused.
#[test]
fn stack_pool_matches_stack_forward_alone() {
    let cell = |n: usize, h: usize, seed: u64, proj: Option<usize>| {
        let mut cfg = LstmConfig::new(n, h).with_peephole(Peephole::Diagonal);
        if let Some(r) = proj {
            cfg = cfg.with_projection(r);
        }
        Lstm::new(cfg, LstmWeights::random(&cfg, seed).unwrap()).unwrap()
    };
    let layers = vec![
        StackLayer {
            forward: cell(6, 11, 1, Some(4)),
            backward: None,
        },
        StackLayer {
            forward: cell(4, 9, 2, None),
            backward: None,
        },
        StackLayer {
            forward: cell(9, 5, 3, None),
            backward: None,
        },
    ];
    let stack = LstmStack::new(layers, Merge::Concat)
        .unwrap()
        .with_threads(2)
        .unwrap();
    let mut pool = StreamPool::from_stack(&stack, 8).unwrap();
    assert_eq!(pool.state_len(), (11 + 9 + 5, 4 + 9 + 5));
    let ids: Vec<StreamId> = (0..6).map(|_| pool.open().unwrap()).collect();
    let (n, p, steps) = (6, 5, 9);
    let mut rng = SplitMix64::new(9);
    let mut xs = vec![Vec::new(); ids.len()];
    let mut ys = vec![Vec::new(); ids.len()];
    for _ in 0..steps * 2 {
        // Streams still short of `steps` frames, a random half of them.
        let active: Vec<usize> = (0..ids.len())
            .filter(|&i| xs[i].len() < steps * n && rng.next_u64().is_multiple_of(2))
            .collect();
        let x = rng.vec_uniform(active.len() * n, -1.0, 1.0);
        let mut y = vec![0.0; active.len() * p];
        let sel: Vec<StreamId> = active.iter().map(|&i| ids[i]).collect();
        pool.step(&sel, &x, &mut y).unwrap();
        for (j, &i) in active.iter().enumerate() {
            xs[i].extend_from_slice(&x[j * n..(j + 1) * n]);
            ys[i].extend_from_slice(&y[j * p..(j + 1) * p]);
        }
    }
    for i in 0..ids.len() {
        let t = xs[i].len() / n;
        let mut st = stack.new_state(1).unwrap();
        let mut want = vec![0.0; t * p];
        stack
            .forward(&mut st, &xs[i], &mut want, Default::default())
            .unwrap();
        assert_eq!(bits(&ys[i]), bits(&want), "stream {i}, {t} steps");
        let (mut c, mut m) = (vec![0.0; 25], vec![0.0; 18]);
        pool.read_state(ids[i], &mut c, &mut m).unwrap();
        let (first, last) = (st.layer(0).unwrap().0, st.layer(2).unwrap().0);
        assert_eq!(
            bits(&c[..11]),
            bits(first.c()),
            "stream {i}: first layer's c"
        );
        assert_eq!(
            bits(&m[..4]),
            bits(first.m()),
            "stream {i}: first layer's m"
        );
        assert_eq!(bits(&c[20..]), bits(last.c()), "stream {i}: last layer's c");
        assert_eq!(bits(&m[13..]), bits(last.m()), "stream {i}: last layer's m");
    }
    let bidir = LstmStack::new(
        vec![StackLayer {
            forward: cell(6, 4, 1, None),
            backward: Some(cell(6, 4, 2, None)),
        }],
        Merge::Concat,
    )
    .unwrap();
    let err = StreamPool::from_stack(&bidir, 4).unwrap_err();
    assert!(
        matches!(err, Error::Config(_)) && err.to_string().contains("bidirectional"),
        "{err}"
    );
}

fn seed_model(threads: usize) -> Lstm {
    let cfg = config(7, 5, Some(3), true);
    common::on_threads(
        &Lstm::new(cfg, LstmWeights::random(&cfg, 42).unwrap()).unwrap(),
        threads,
    )
}

/// Bad ids, duplicates, wrong lengths, a full pool: errors naming what
/// was wrong, and no stream moves.
#[test]
fn pool_errors_are_clean_and_harmless() {
    let model = seed_model(1);
    let mut pool = StreamPool::new(model.clone(), 3).unwrap();
    let mut other = StreamPool::new(model.clone(), 3).unwrap();
    let (a, b) = (pool.open().unwrap(), pool.open().unwrap());
    let foreign = other.open().unwrap();
    assert_eq!(a.slot(), foreign.slot(), "same slot, other pool");
    let x = [0.5f32; 7];
    let mut y = [0.0f32; 3];
    let snapshot = |pool: &StreamPool| {
        let (mut c, mut m) = (vec![0.0; 10], vec![0.0; 10]);
        for id in [a, b] {
            pool.read_state(id, &mut c[..5], &mut m[..5]).unwrap();
        }
        pool.read_state(a, &mut c[5..], &mut m[5..]).unwrap();
        (bits(&c), bits(&m))
    };
    pool.step(&[a, b], &[0.3; 14], &mut [0.0; 6]).unwrap();
    let before = snapshot(&pool);
    let msg = |e: Error| e.to_string();
    let e = msg(pool
        .step(&[a, foreign], &[0.5; 14], &mut [0.0; 6])
        .unwrap_err());
    assert!(
        e.contains("ids[1]") && e.contains("does not belong to this pool"),
        "{e}"
    );
    let e = msg(pool
        .step(&[a, b, a], &[0.5; 21], &mut [0.0; 9])
        .unwrap_err());
    assert!(e.contains("ids[2]") && e.contains("twice"), "{e}");
    let e = msg(pool.step(&[a], &[0.5; 6], &mut y).unwrap_err());
    assert!(e.contains("`x`") && e.contains("6 elements"), "{e}");
    let e = msg(pool.step(&[a], &x, &mut [0.0; 4]).unwrap_err());
    assert!(e.contains("`output`"), "{e}");
    let e = msg(pool
        .read_state(a, &mut [0.0; 4], &mut [0.0; 5])
        .unwrap_err());
    assert!(e.contains("stream state c"), "{e}");
    assert_eq!(snapshot(&pool), before, "a failed call moved a stream");
    // Closed and stale ids: the slot is reused with a new generation.
    pool.close(b).unwrap();
    let e = msg(pool.close(b).unwrap_err());
    assert!(e.contains("is closed"), "{e}");
    let c = pool.open().unwrap();
    assert_eq!(c.slot(), b.slot());
    assert_ne!(c, b);
    for r in [
        pool.step(&[b], &x, &mut y),
        pool.reset(b),
        pool.read_state(b, &mut [0.0; 5], &mut [0.0; 5]),
        pool.write_state(b, &[0.0; 5], &[0.0; 5]),
    ] {
        let e = msg(r.unwrap_err());
        assert!(e.contains(&b.to_string()) && e.contains("closed"), "{e}");
    }
    // c starts at zero, not at b's state.
    let (mut cc, mut cm) = ([1.0f32; 5], [1.0f32; 5]);
    pool.read_state(c, &mut cc, &mut cm).unwrap();
    assert_eq!(bits(&cc), bits(&[0.0; 5]));
    let _d = pool.open().unwrap();
    let e = pool.open().unwrap_err();
    assert!(
        matches!(e, Error::Busy(_)) && e.to_string().contains("all 3 streams"),
        "{e}"
    );
    assert!(matches!(StreamPool::new(model, 0), Err(Error::Invalid(_))));
}

/// A NaN frame reaches only its own stream, as in `forward`.
#[test]
fn a_nan_frame_poisons_only_its_stream() {
    let model = seed_model(1);
    let mut pool = StreamPool::new(model.clone(), 4).unwrap();
    let (a, b) = (pool.open().unwrap(), pool.open().unwrap());
    let mut ra = Record::new(a, (5, 5));
    let mut rb = Record::new(b, (5, 5));
    let mut rng = SplitMix64::new(1);
    for t in 0..5 {
        let mut x = rng.vec_uniform(14, -1.0, 1.0);
        if t == 2 {
            x[3] = f32::NAN;
        }
        let mut y = vec![0.0; 6];
        pool.step(&[a, b], &x, &mut y).unwrap();
        ra.xs.extend_from_slice(&x[..7]);
        ra.ys.extend_from_slice(&y[..3]);
        rb.xs.extend_from_slice(&x[7..]);
        rb.ys.extend_from_slice(&y[3..]);
    }
    assert!(ra.ys[6..].iter().all(|v| v.is_nan()), "{:?}", ra.ys);
    let (mut c, mut m) = (vec![0.0; 5], vec![0.0; 5]);
    pool.read_state(b, &mut c, &mut m).unwrap();
    check(&model, &rb, &c, &m).unwrap();
    assert!(rb.ys.iter().all(|v| v.is_finite()));
}

/// One client's work on a batcher: open streams, submit frames (blocking,
/// or several outstanding per stream), close and reopen; returns its
/// records (closed ones checked by the caller too).
fn client(
    batcher: &Batcher,
    model: &Lstm,
    seed: u64,
    streams: usize,
    frames: usize,
) -> Result<(), String> {
    let (n, p) = (batcher.n_input(), batcher.n_output());
    let lens = (model.config().n_hidden, model.config().n_recurrent());
    let mut rng = SplitMix64::new(seed);
    let mut recs: Vec<Record> = (0..streams)
        .map(|_| batcher.open().map(|id| Record::new(id, lens)))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("open: {e}"))?;
    let verify = |r: &Record| -> Result<(), String> {
        let (mut c, mut m) = (vec![0.0; lens.0], vec![0.0; lens.1]);
        batcher
            .read_state(r.id, &mut c, &mut m)
            .map_err(|e| e.to_string())?;
        check(model, r, &c, &m)
    };
    for _ in 0..frames {
        let i = rng.next_u64() as usize % recs.len();
        match rng.next_u64() % 8 {
            // A burst of up to 3 frames of one stream, outstanding at once:
            // they must run in successive steps, in order.
            0..=3 => {
                let k = 1 + rng.next_u64() as usize % 3;
                let xs = rng.vec_uniform(k * n, -2.0, 2.0);
                let pend: Vec<_> = (0..k)
                    .map(|j| batcher.submit_async(recs[i].id, &xs[j * n..(j + 1) * n]))
                    .collect::<Result<_, _>>()
                    .map_err(|e| format!("submit_async: {e}"))?;
                for (j, pd) in pend.into_iter().enumerate() {
                    let y = pd.wait().map_err(|e| format!("wait: {e}"))?;
                    recs[i].xs.extend_from_slice(&xs[j * n..(j + 1) * n]);
                    recs[i].ys.extend_from_slice(&y);
                }
            }
            4..=6 => {
                let x = rng.vec_uniform(n, -2.0, 2.0);
                let mut y = vec![f32::NAN; p];
                batcher
                    .submit_into(recs[i].id, &x, &mut y)
                    .map_err(|e| format!("submit: {e}"))?;
                recs[i].xs.extend_from_slice(&x);
                recs[i].ys.extend_from_slice(&y);
            }
            _ => {
                verify(&recs[i])?;
                let old = recs[i].id;
                batcher.close(old).map_err(|e| format!("close: {e}"))?;
                let e = batcher.submit(old, &vec![0.0; n]).unwrap_err();
                if !e.to_string().contains("closed") {
                    return Err(format!("a closed stream's submit: {e}"));
                }
                let id = batcher.open().map_err(|e| format!("reopen: {e}"))?;
                recs[i] = Record::new(id, lens);
            }
        }
    }
    for r in &recs {
        verify(r)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    /// The batcher with several client threads, every batch composition
    /// its timing makes, small queues (backpressure) and both thread
    /// counts: bitwise each stream alone.
    #[test]
    fn batcher_streams_match_forward_alone(
        (cfg, wseed) in arb_model(),
        threads in 1usize..=2,
        clients in 2usize..=4,
        streams in 1usize..=4,
        max_batch in 1usize..=16,
        max_wait_us in 0u64..300,
        queue in 1usize..=8,
        catch_up in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let model = common::on_threads(
            &Lstm::new(cfg, LstmWeights::random(&cfg, wseed).unwrap()).unwrap(),
            threads,
        );
        let pool = StreamPool::new(model.clone(), clients * streams).unwrap();
        let conf = BatcherConfig::new()
            .with_max_batch(max_batch)
            .with_max_wait(Duration::from_micros(max_wait_us))
            .with_catch_up(catch_up)
            .with_queue(queue.max(3));
        let batcher = Batcher::new(pool, conf).unwrap();
        let results: Vec<Result<(), String>> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..clients)
                .map(|c| {
                    let (b, m) = (&batcher, &model);
                    s.spawn(move || client(b, m, seed ^ c as u64, streams, 30))
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for r in results {
            r.map_err(TestCaseError::fail)?;
        }
        let stats = batcher.stats();
        prop_assert!(stats.largest_batch <= max_batch);
        prop_assert!(stats.frames > 0);
        let pool = batcher.shutdown(Shutdown::Drain).unwrap();
        prop_assert_eq!(pool.len(), clients * streams);
    }
}

/// A std `Future` with no runtime: a minimal executor that parks the
/// thread until the batcher's worker wakes it.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake, Waker};
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

#[test]
fn pending_frames_are_futures() {
    let model = seed_model(1);
    let batcher = Batcher::new(
        StreamPool::new(model.clone(), 4).unwrap(),
        BatcherConfig::new(),
    )
    .unwrap();
    let id = batcher.open().unwrap();
    let xs: Vec<f32> = SplitMix64::new(3).vec_uniform(4 * 7, -1.0, 1.0);
    let ys = block_on(async {
        let mut ys = Vec::new();
        for t in 0..4 {
            ys.extend(batcher.submit_async(id, &xs[t * 7..(t + 1) * 7])?.await?);
        }
        Ok::<_, Error>(ys)
    })
    .unwrap();
    let r = Record {
        ys,
        xs,
        ..Record::new(id, (5, 5))
    };
    let (mut c, mut m) = (vec![0.0; 5], vec![0.0; 5]);
    batcher.read_state(id, &mut c, &mut m).unwrap();
    check(&model, &r, &c, &m).unwrap();
    // try_get: None until the step ran, then the result, once.
    let mut p = batcher.submit_async(id, &[0.1; 7]).unwrap();
    let got = loop {
        if let Some(r) = p.try_get() {
            break r;
        }
        std::thread::yield_now();
    };
    assert_eq!(got.unwrap().len(), 3);
    assert!(p.try_get().unwrap().is_err(), "a result taken twice");
}

/// Bad ids, closed streams, full queues, wrong lengths: clear errors,
/// and the other streams' frames still run.
#[test]
fn batcher_errors_are_clean_and_harmless() {
    let model = seed_model(1);
    let batcher = Batcher::new(
        StreamPool::new(model.clone(), 3).unwrap(),
        BatcherConfig::new(),
    )
    .unwrap();
    let other = Batcher::new(
        StreamPool::new(model.clone(), 3).unwrap(),
        BatcherConfig::new(),
    )
    .unwrap();
    let (a, b) = (batcher.open().unwrap(), batcher.open().unwrap());
    let foreign = other.open().unwrap();
    let msg = |r: Result<Vec<f32>, Error>| r.unwrap_err().to_string();
    let e = msg(batcher.submit(foreign, &[0.0; 7]));
    assert!(e.contains("does not belong"), "{e}");
    let e = msg(batcher.submit(a, &[0.0; 8]));
    assert!(e.contains("`frame`") && e.contains("8 elements"), "{e}");
    let e = batcher
        .submit_into(a, &[0.0; 7], &mut [0.0; 2])
        .unwrap_err()
        .to_string();
    assert!(e.contains("`output`"), "{e}");
    // The queue holds 2 frames waiting to run. The last step served s2,
    // so the worker waits (30 s) for s2's next frame; two frames of s1
    // cannot fill a batch of 2: a third frame is refused.
    let slow = BatcherConfig::new()
        .with_queue(2)
        .with_max_batch(2)
        .with_max_wait(Duration::from_secs(30))
        .with_backpressure(Backpressure::Busy);
    let busy = Batcher::new(StreamPool::new(model.clone(), 3).unwrap(), slow).unwrap();
    let (s1, s2) = (busy.open().unwrap(), busy.open().unwrap());
    let y0 = busy.submit(s2, &[0.3; 7]).unwrap();
    let q1 = busy.submit_async(s1, &[0.1; 7]).unwrap();
    let q2 = busy.submit_async(s1, &[0.2; 7]).unwrap();
    let e = busy.submit_async(s2, &[0.3; 7]).unwrap_err();
    assert!(
        matches!(e, Error::Busy(_)) && e.to_string().contains("queue is full"),
        "{e}"
    );
    assert!(!q1.is_ready(), "s1 ran before s2 came back or 30 s passed");
    // Draining runs both, at once (not after the 30 s).
    let t0 = std::time::Instant::now();
    busy.shutdown(Shutdown::Drain).unwrap();
    assert_eq!(y0.len(), 3);
    let (z1, z2) = (q1.wait().unwrap(), q2.wait().unwrap());
    let r = Record {
        xs: [[0.1f32; 7], [0.2; 7]].concat(),
        ys: [z1, z2].concat(),
        ..Record::new(s1, (5, 5))
    };
    assert_eq!(bits(&r.ys), bits(&alone(&model, &r).0));
    assert!(
        t0.elapsed() < Duration::from_secs(20),
        "drain waited for max_wait"
    );
    let p1 = batcher.submit_async(a, &[0.1; 7]).unwrap();
    let p2 = batcher.submit_async(b, &[0.2; 7]).unwrap();
    let (y1, y2) = (p1.wait().unwrap(), p2.wait().unwrap());
    // A dropped handle's frame still runs, in order; its room comes back.
    drop(batcher.submit_async(a, &[0.3; 7]).unwrap());
    drop(batcher.submit_async(b, &[0.4; 7]).unwrap());
    let _ = batcher.submit(a, &[0.3; 7]).unwrap();
    // Close: later submits and control calls are refused; b is untouched.
    batcher.close(a).unwrap();
    let e = msg(batcher.submit(a, &[0.0; 7]));
    assert!(e.contains(&a.to_string()) && e.contains("closed"), "{e}");
    assert!(batcher.reset(a).unwrap_err().to_string().contains("closed"));
    assert!(batcher.close(a).is_err());
    // b ran 0.2 (y2), 0.4 (its handle dropped: run, output given up)
    // and now 0.5: bitwise b alone over the three.
    let y5 = batcher.submit(b, &[0.5; 7]).unwrap();
    let r = Record {
        xs: [[0.2f32; 7], [0.4; 7], [0.5; 7]].concat(),
        ys: [y2.clone(), vec![0.0; 3], y5.clone()].concat(),
        ..Record::new(b, (5, 5))
    };
    let (want, ac, am) = alone(&model, &r);
    let (mut c, mut m) = (vec![0.0; 5], vec![0.0; 5]);
    batcher.read_state(b, &mut c, &mut m).unwrap();
    assert_eq!(bits(&c), bits(&ac));
    assert_eq!(bits(&m), bits(&am));
    assert_eq!(bits(&y2), bits(&want[..3]));
    assert_eq!(bits(&y5), bits(&want[6..]));
    assert_eq!(y1.len(), 3);
    // A full pool.
    let _c = batcher.open().unwrap();
    let _d = batcher.open().unwrap();
    assert!(matches!(batcher.open(), Err(Error::Busy(_))));
    // Shut down: everything refused, a second shutdown too.
    let pool = batcher.shutdown(Shutdown::Fail).unwrap();
    assert_eq!(pool.len(), 3);
    assert!(matches!(
        batcher.submit(b, &[0.0; 7]),
        Err(Error::Shutdown(_))
    ));
    assert!(matches!(batcher.open(), Err(Error::Shutdown(_))));
    assert!(matches!(
        batcher.shutdown(Shutdown::Drain),
        Err(Error::Shutdown(_))
    ));
}

/// Shutdowns racing submits (blocked on a full queue, outstanding, or
/// just arriving) and control calls: every call returns — a result or
/// `Error::Shutdown` — and with `Drain` every accepted frame runs.
#[test]
fn shutdown_racing_submits_does_not_deadlock() {
    let (done_tx, done_rx) = mpsc::channel();
    let watchdog = std::thread::spawn(move || {
        for round in 0..24u64 {
            let mode = if round % 2 == 0 {
                Shutdown::Drain
            } else {
                Shutdown::Fail
            };
            let model = seed_model(1 + (round % 3 == 0) as usize);
            let conf = BatcherConfig::new()
                .with_queue(4)
                .with_max_batch(3)
                .with_max_wait(Duration::from_micros(50 * (round % 4)));
            let batcher = Batcher::new(StreamPool::new(model, 16).unwrap(), conf).unwrap();
            let ids: Vec<StreamId> = (0..8).map(|_| batcher.open().unwrap()).collect();
            let (ok, shut) = std::thread::scope(|s| {
                let hs: Vec<_> = (0..6)
                    .map(|c| {
                        let (batcher, ids) = (&batcher, &ids);
                        s.spawn(move || {
                            let (mut ok, mut shut) = (0, 0);
                            let mut count = |r: Result<Vec<f32>, Error>| match r {
                                Ok(_) => ok += 1,
                                Err(Error::Shutdown(_)) => shut += 1,
                                Err(e) => panic!("unexpected error: {e}"),
                            };
                            for i in 0..200 {
                                let id = ids[(c + i) % ids.len()];
                                match i % 4 {
                                    0 => count(batcher.submit(id, &[0.1; 7])),
                                    1 => {
                                        let p: Vec<_> = (0..3)
                                            .filter_map(|_| {
                                                batcher.submit_async(id, &[0.2; 7]).ok()
                                            })
                                            .collect();
                                        for p in p {
                                            count(p.wait());
                                        }
                                    }
                                    2 => drop(batcher.submit_async(id, &[0.3; 7])),
                                    _ => match batcher.reset(id) {
                                        Ok(()) | Err(Error::Shutdown(_)) => {}
                                        Err(e) => panic!("unexpected error: {e}"),
                                    },
                                }
                            }
                            (ok, shut)
                        })
                    })
                    .chain((0..2).map(|c| {
                        // Clients: batched submits (blocking for room)
                        // and collects, racing the shutdown too.
                        let (batcher, ids) = (&batcher, &ids);
                        s.spawn(move || {
                            let (mut ok, mut shut) = (0, 0);
                            let mut cl = match batcher.client() {
                                Ok(cl) => cl,
                                Err(Error::Shutdown(_)) => return (0, 1),
                                Err(e) => panic!("unexpected error: {e}"),
                            };
                            for i in 0..150 {
                                let pick = [ids[(c + i) % 8], ids[(c + 3 * i) % 8], ids[c]];
                                match cl.submit(&pick, &[0.4; 21]) {
                                    Ok(()) => {}
                                    Err(Error::Shutdown(_)) => shut += 1,
                                    Err(e) => panic!("unexpected error: {e}"),
                                }
                                let block = i % 3 != 0;
                                let ready = if block { cl.wait(None) } else { cl.collect() };
                                for r in ready {
                                    match r.output {
                                        Ok(_) => ok += 1,
                                        Err(Error::Shutdown(_)) => shut += 1,
                                        Err(e) => panic!("unexpected error: {e}"),
                                    }
                                }
                            }
                            while cl.outstanding() > 0 {
                                for r in cl.wait(None) {
                                    match r.output {
                                        Ok(_) => ok += 1,
                                        Err(Error::Shutdown(_)) => shut += 1,
                                        Err(e) => panic!("unexpected error: {e}"),
                                    }
                                }
                            }
                            (ok, shut)
                        })
                    }))
                    .collect();
                std::thread::sleep(Duration::from_micros(200 * round));
                let pool = batcher.shutdown(mode).unwrap();
                assert_eq!(pool.len(), 8);
                hs.into_iter().fold((0, 0), |(a, b), h| {
                    let (o, s) = h.join().unwrap();
                    (a + o, b + s)
                })
            });
            let stats = batcher.stats();
            if mode == Shutdown::Drain {
                // Only submits refused at the door failed.
                assert_eq!(stats.failed, 0, "round {round}: drained frames failed");
            }
            assert!(ok + shut > 0);
        }
        done_tx.send(()).unwrap();
    });
    match done_rx.recv_timeout(Duration::from_secs(120)) {
        Ok(()) => watchdog.join().unwrap(),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            // The rounds' thread panicked: show why.
            watchdog.join().unwrap();
        }
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("deadlock: a shutdown round hung"),
    }
}

/// The batching rule: a frame runs at once when no stream is expected
/// back; after a step, the worker waits (here up to 10 s) for the streams
/// it served, and runs as soon as the last of them sent its next frame or
/// was closed; control calls run meanwhile without forcing the batch.
#[test]
fn batches_wait_for_the_streams_the_last_step_served() {
    let model = seed_model(1);
    let conf = BatcherConfig::new().with_max_wait(Duration::from_secs(10));
    let batcher = Batcher::new(StreamPool::new(model, 8).unwrap(), conf).unwrap();
    let (a, b, c) = (
        batcher.open().unwrap(),
        batcher.open().unwrap(),
        batcher.open().unwrap(),
    );
    let t0 = std::time::Instant::now();
    // Nothing awaited: a's frame runs at once.
    batcher.submit(a, &[0.1; 7]).unwrap();
    assert!(t0.elapsed() < Duration::from_secs(5), "a lone frame waited");
    // The last step served a: b's frame waits for a's next one.
    let pb = batcher.submit_async(b, &[0.2; 7]).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert!(!pb.is_ready(), "b ran before a came back");
    // A control call runs while the batch waits, and does not start it.
    batcher.reset(c).unwrap();
    assert!(!pb.is_ready(), "a control call started the waiting batch");
    let steps = batcher.stats().steps;
    let pa = batcher.submit_async(a, &[0.3; 7]).unwrap();
    let (_, _) = (pa.wait().unwrap(), pb.wait().unwrap());
    let s = batcher.stats();
    assert_eq!((s.steps - steps, s.largest_batch), (1, 2), "{s:?}");
    // Both are awaited now; closing b leaves a alone to wait for.
    let pa = batcher.submit_async(a, &[0.4; 7]).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert!(!pa.is_ready(), "a ran before b came back");
    batcher.close(b).unwrap();
    pa.wait().unwrap();
    // The last step served a. A frame of c waits for a; c is closed,
    // then a: the batch (only c's frame) runs at once, and c's frame
    // fails as closed, with no step of zero rows.
    let pc = batcher.submit_async(c, &[0.5; 7]).unwrap();
    batcher.close(c).unwrap();
    assert!(!pc.is_ready(), "c's frame ran before a came back");
    batcher.close(a).unwrap();
    let e = pc.wait().unwrap_err().to_string();
    assert!(e.contains("closed before its frame ran"), "{e}");
    assert!(t0.elapsed() < Duration::from_secs(5), "waited for max_wait");
    let s = batcher.stats();
    assert_eq!(s.failed, 1, "{s:?}");
    let pool = batcher.shutdown(Shutdown::Drain).unwrap();
    assert!(pool.is_empty());
}

/// The catch-up rule (`BatcherConfig::catch_up`): frames that waited
/// through a step run right after it, without waiting for the streams it
/// served; the streams of both steps are then awaited together. Off, such
/// frames wait for the next batch.
#[test]
fn frames_that_waited_through_a_step_catch_up() {
    let conf = BatcherConfig::new().with_max_wait(Duration::from_secs(10));
    // Off (the default): b's second frame waits with the others for a.
    let batcher = Batcher::new(StreamPool::new(seed_model(1), 8).unwrap(), conf).unwrap();
    let (a, b) = (batcher.open().unwrap(), batcher.open().unwrap());
    let mut cl = batcher.client().unwrap();
    cl.submit(&[a], &[0.1; 7]).unwrap();
    cl.wait(None).for_each(|r| assert!(r.output.is_ok()));
    cl.submit(&[b, b], &[0.2; 14]).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    cl.submit(&[a], &[0.3; 7]).unwrap();
    while cl.outstanding() > 1 {
        cl.wait(None).for_each(|r| assert!(r.output.is_ok()));
    }
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(
        cl.outstanding(),
        1,
        "b's second frame ran before a came back"
    );
    cl.submit(&[a], &[0.4; 7]).unwrap();
    while cl.outstanding() > 0 {
        cl.wait(None).for_each(|r| assert!(r.output.is_ok()));
    }
    let s = batcher.stats();
    assert_eq!((s.steps, s.catch_ups), (3, 0), "{s:?}");
    drop(cl);
    batcher.shutdown(Shutdown::Drain).unwrap();

    let conf = conf.with_catch_up(true);
    let batcher = Batcher::new(StreamPool::new(seed_model(1), 8).unwrap(), conf).unwrap();
    let (a, b, c) = (
        batcher.open().unwrap(),
        batcher.open().unwrap(),
        batcher.open().unwrap(),
    );
    let t0 = std::time::Instant::now();
    let mut cl = batcher.client().unwrap();
    // Step 1: a alone (nothing awaited); a is awaited after it.
    cl.submit(&[a], &[0.1; 7]).unwrap();
    while cl.outstanding() > 0 {
        cl.wait(None).for_each(|r| assert!(r.output.is_ok()));
    }
    // Two frames of b wait for a; a's next frame starts step 2 (b's
    // first frame and a's). b's second frame waited through step 2: it
    // runs at once after it (step 3), though a is awaited again.
    cl.submit(&[b, b], &[0.2; 14]).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(cl.outstanding(), 2, "b ran before a came back");
    cl.submit(&[a], &[0.3; 7]).unwrap();
    while cl.outstanding() > 0 {
        cl.wait(None).for_each(|r| assert!(r.output.is_ok()));
    }
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "b's second frame waited for a"
    );
    let s = batcher.stats();
    assert_eq!((s.steps, s.largest_batch, s.catch_ups), (3, 2, 1), "{s:?}");
    // a (step 2) and b (step 3) are both awaited: c's frame waits for
    // both, and runs with them.
    let pc = batcher.submit_async(c, &[0.4; 7]).unwrap();
    cl.submit(&[a], &[0.5; 7]).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    assert!(!pc.is_ready(), "c ran before b came back");
    cl.submit(&[b], &[0.6; 7]).unwrap();
    pc.wait().unwrap();
    while cl.outstanding() > 0 {
        cl.wait(None).for_each(|r| assert!(r.output.is_ok()));
    }
    let s = batcher.stats();
    assert_eq!((s.steps, s.largest_batch, s.catch_ups), (4, 3, 1), "{s:?}");
    assert!(t0.elapsed() < Duration::from_secs(5), "waited for max_wait");
    drop(cl);
    batcher.shutdown(Shutdown::Drain).unwrap();
}

type Sent = Vec<std::collections::VecDeque<Vec<f32>>>;

/// Takes a client's results (waiting for one if `block`): each goes to
/// its stream's record with the oldest frame sent and not answered.
fn take_results(
    cl: &mut lstm_kernels::Client,
    recs: &mut [Record],
    sent: &mut Sent,
    closed: &[StreamId],
    block: bool,
) -> Result<(), String> {
    let ready = if block {
        cl.wait(Some(Duration::from_secs(30)))
    } else {
        cl.collect()
    };
    for r in ready {
        if let Some(i) = recs.iter().position(|rec| rec.id == r.id) {
            let x = sent[i].pop_front().ok_or("a result nobody sent")?;
            let y = r.output.map_err(|e| format!("{}: {e}", r.id))?;
            recs[i].xs.extend_from_slice(&x);
            recs[i].ys.extend_from_slice(y);
        } else if !closed.contains(&r.id) {
            return Err(format!("a result for {} nobody sent", r.id));
        }
        // A closed stream's last frame ran before the close or failed.
    }
    Ok(())
}

/// Streams driven through `Client`s (many frames per call, several
/// outstanding per stream, duplicates in one call, closes with frames
/// still waiting): bitwise each stream alone, results in order.
fn client_driver(
    batcher: &Batcher,
    model: &Lstm,
    seed: u64,
    streams: usize,
    calls: usize,
) -> Result<(), String> {
    let n = batcher.n_input();
    let lens = (model.config().n_hidden, model.config().n_recurrent());
    let mut rng = SplitMix64::new(seed);
    let mut cl = batcher.client().map_err(|e| format!("client: {e}"))?;
    let mut recs: Vec<Record> = (0..streams)
        .map(|_| batcher.open().map(|id| Record::new(id, lens)))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("open: {e}"))?;
    // Per record: the frames sent and not yet answered, oldest first.
    let mut sent: Sent = vec![Default::default(); streams];
    let mut closed: Vec<StreamId> = Vec::new();
    for _ in 0..calls {
        match rng.next_u64() % 8 {
            0..=5 => {
                // Up to 2 streams × up to 2 frames each, in one call.
                let k = 1 + rng.next_u64() as usize % 4;
                let pick: Vec<usize> = (0..k)
                    .map(|_| rng.next_u64() as usize % recs.len())
                    .collect();
                let ids: Vec<StreamId> = pick.iter().map(|&i| recs[i].id).collect();
                let xs = rng.vec_uniform(k * n, -2.0, 2.0);
                cl.submit(&ids, &xs).map_err(|e| format!("submit: {e}"))?;
                for (j, &i) in pick.iter().enumerate() {
                    sent[i].push_back(xs[j * n..(j + 1) * n].to_vec());
                }
                let block = rng.next_u64().is_multiple_of(2);
                take_results(&mut cl, &mut recs, &mut sent, &closed, block)?;
            }
            6 => {
                while cl.outstanding() > 0 {
                    take_results(&mut cl, &mut recs, &mut sent, &closed, true)?;
                }
            }
            _ => {
                // Close a stream with its frames maybe still waiting;
                // check what ran of it, open another in its place.
                while cl.outstanding() > 0 {
                    take_results(&mut cl, &mut recs, &mut sent, &closed, true)?;
                }
                let i = rng.next_u64() as usize % recs.len();
                let (mut c, mut m) = (vec![0.0; lens.0], vec![0.0; lens.1]);
                batcher
                    .read_state(recs[i].id, &mut c, &mut m)
                    .map_err(|e| e.to_string())?;
                check(model, &recs[i], &c, &m)?;
                let old = recs[i].id;
                // One more frame, then the close: it runs or fails.
                cl.submit(&[old], &rng.vec_uniform(n, -1.0, 1.0))
                    .map_err(|e| format!("submit: {e}"))?;
                batcher.close(old).map_err(|e| format!("close: {e}"))?;
                closed.push(old);
                // With an open stream first: the call names the closed one.
                let other = recs[(i + 1) % recs.len()].id;
                let (ids, at) = if other == old {
                    (vec![old], "ids[0]")
                } else {
                    (vec![other, old], "ids[1]")
                };
                match cl.submit(&ids, &vec![0.0; ids.len() * n]) {
                    Err(e) if e.to_string().contains(at) && e.to_string().contains("closed") => {}
                    other => return Err(format!("a closed stream's submit: {other:?}")),
                }
                let id = batcher.open().map_err(|e| format!("reopen: {e}"))?;
                recs[i] = Record::new(id, lens);
            }
        }
    }
    while cl.outstanding() > 0 {
        take_results(&mut cl, &mut recs, &mut sent, &closed, true)?;
    }
    for (i, r) in recs.iter().enumerate() {
        if !sent[i].is_empty() {
            return Err(format!("{}: {} frames unanswered", r.id, sent[i].len()));
        }
        let (mut c, mut m) = (vec![0.0; lens.0], vec![0.0; lens.1]);
        batcher
            .read_state(r.id, &mut c, &mut m)
            .map_err(|e| e.to_string())?;
        check(model, r, &c, &m)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    /// `Client`s on several threads, next to per-frame submitters, every
    /// batch composition their timing makes, small queues (blocking for
    /// room): bitwise each stream alone.
    #[test]
    fn client_streams_match_forward_alone(
        (cfg, wseed) in arb_model(),
        threads in 1usize..=2,
        clients in 1usize..=3,
        streams in 1usize..=4,
        max_batch in 1usize..=16,
        max_wait_us in 0u64..300,
        queue in 4usize..=12,
        catch_up in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let model = common::on_threads(
            &Lstm::new(cfg, LstmWeights::random(&cfg, wseed).unwrap()).unwrap(),
            threads,
        );
        let pool = StreamPool::new(model.clone(), (clients + 1) * streams).unwrap();
        let conf = BatcherConfig::new()
            .with_max_batch(max_batch)
            .with_max_wait(Duration::from_micros(max_wait_us))
            .with_catch_up(catch_up)
            .with_queue(queue);
        let batcher = Batcher::new(pool, conf).unwrap();
        let results: Vec<Result<(), String>> = std::thread::scope(|s| {
            let mut hs: Vec<_> = (0..clients)
                .map(|c| {
                    let (b, m) = (&batcher, &model);
                    s.spawn(move || client_driver(b, m, seed ^ c as u64, streams, 30))
                })
                .collect();
            let (b, m) = (&batcher, &model);
            hs.push(s.spawn(move || client(b, m, !seed, streams, 20)));
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for r in results {
            r.map_err(TestCaseError::fail)?;
        }
        prop_assert!(batcher.stats().largest_batch <= max_batch);
        batcher.shutdown(Shutdown::Drain).unwrap();
    }
}

/// A `Client`'s submit is all or none: a wrong length, a foreign or
/// closed id, no room for all of them (Busy), more than the queue holds,
/// a shutdown; nothing of a refused call runs. `wait` with nothing
/// outstanding returns at once; after a shutdown, outstanding frames fail.
#[test]
fn client_errors_are_clean_and_harmless() {
    let model = seed_model(1);
    let conf = BatcherConfig::new()
        .with_queue(3)
        .with_max_wait(Duration::from_secs(30))
        .with_backpressure(Backpressure::Busy);
    let batcher = Batcher::new(StreamPool::new(model.clone(), 4).unwrap(), conf).unwrap();
    let other = Batcher::new(
        StreamPool::new(model.clone(), 4).unwrap(),
        BatcherConfig::new(),
    )
    .unwrap();
    let (a, b, c) = (
        batcher.open().unwrap(),
        batcher.open().unwrap(),
        batcher.open().unwrap(),
    );
    let foreign = other.open().unwrap();
    let mut cl = batcher.client().unwrap();
    let t0 = std::time::Instant::now();
    assert_eq!(cl.wait(None).count(), 0, "nothing outstanding");
    assert_eq!(cl.collect().count(), 0);
    let msg = |r: Result<(), Error>| r.unwrap_err().to_string();
    let e = msg(cl.submit(&[a, b], &[0.0; 7]));
    assert!(e.contains("`frames`") && e.contains("7 elements"), "{e}");
    let e = msg(cl.submit(&[a, foreign], &[0.0; 14]));
    assert!(e.contains("ids[1]") && e.contains("does not belong"), "{e}");
    let e = msg(cl.submit(&[a, b, c, a], &[0.0; 28]));
    assert!(e.contains("4 frames") && e.contains("queue holds 3"), "{e}");
    assert_eq!(cl.outstanding(), 0);
    // One frame of each, one call: they run in one step, in order.
    let xs = SplitMix64::new(4).vec_uniform(3 * 7, -1.0, 1.0);
    cl.submit(&[a, b, c], &xs).unwrap();
    let mut got = Vec::new();
    while cl.outstanding() > 0 {
        for r in cl.wait(Some(Duration::from_secs(20))) {
            got.push((r.id, r.output.unwrap().to_vec()));
        }
    }
    assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), vec![a, b, c]);
    for (i, (id, y)) in got.iter().enumerate() {
        let r = Record {
            xs: xs[i * 7..(i + 1) * 7].to_vec(),
            ys: y.clone(),
            ..Record::new(*id, (5, 5))
        };
        assert_eq!(bits(&r.ys), bits(&alone(&model, &r).0), "{id}");
    }
    // Now a, b, c are awaited (30 s): two frames of a wait in the queue.
    cl.submit(&[a, a], &[0.5; 14]).unwrap();
    let before = bits(&{
        let (mut c0, mut m0) = (vec![0.0; 5], vec![0.0; 5]);
        batcher.read_state(b, &mut c0, &mut m0).unwrap();
        [c0, m0].concat()
    });
    let e = cl.submit(&[b, c], &[0.1; 14]).unwrap_err();
    assert!(matches!(e, Error::Busy(_)), "{e}");
    batcher.close(c).unwrap();
    let e = msg(cl.submit(&[b, c], &[0.1; 14]));
    assert!(e.contains("ids[1]") && e.contains("closed"), "{e}");
    // Nothing of the refused calls ran: b has not moved.
    let (mut c0, mut m0) = (vec![0.0; 5], vec![0.0; 5]);
    batcher.read_state(b, &mut c0, &mut m0).unwrap();
    assert_eq!(bits(&[c0, m0].concat()), before);
    assert_eq!(cl.outstanding(), 2);
    assert!(t0.elapsed() < Duration::from_secs(20));
    // Shutdown with Fail: a's frame waiting fails (the first may have run
    // when c's close released the wait); later submits are refused.
    batcher.shutdown(Shutdown::Fail).unwrap();
    let mut results = Vec::new();
    while cl.outstanding() > 0 {
        for r in cl.wait(Some(Duration::from_secs(20))) {
            results.push(r.output.map(|y| y.len()).map_err(|e| e.to_string()));
        }
    }
    assert_eq!(results.len(), 2);
    for r in &results {
        assert!(
            matches!(r, Ok(3)) || r.as_ref().is_err_and(|e| e.contains("shutting down")),
            "{r:?}"
        );
    }
    assert!(matches!(
        cl.submit(&[a], &[0.0; 7]),
        Err(Error::Shutdown(_))
    ));
    assert!(matches!(batcher.client(), Err(Error::Shutdown(_))));
    // A dropped client with frames outstanding frees its results.
    let mut cl2 = other.client().unwrap();
    cl2.submit(&[foreign, foreign], &[0.2; 14]).unwrap();
    drop(cl2);
    let y = other.submit(foreign, &[0.3; 7]).unwrap();
    assert_eq!(y.len(), 3);
}

/// A client dropped with frames outstanding: they still run, in order,
/// their results go nowhere, and a new client (which may take the dropped
/// one's index) gets its own results only, bitwise right.
#[test]
fn a_dropped_clients_results_never_reach_another_client() {
    let model = seed_model(1);
    let batcher = Batcher::new(
        StreamPool::new(model.clone(), 4).unwrap(),
        BatcherConfig::new(),
    )
    .unwrap();
    let (s, t) = (batcher.open().unwrap(), batcher.open().unwrap());
    let (mut rs, mut rt) = (Record::new(s, (5, 5)), Record::new(t, (5, 5)));
    let mut rng = SplitMix64::new(9);
    for round in 0..20 {
        let mut a = batcher.client().unwrap();
        let xs = rng.vec_uniform(3 * 7, -1.0, 1.0);
        a.submit(&[s, s, s], &xs).unwrap();
        rs.xs.extend_from_slice(&xs);
        drop(a);
        let mut b = batcher.client().unwrap();
        let x = rng.vec_uniform(7, -1.0, 1.0);
        b.submit(&[t], &x).unwrap();
        rt.xs.extend_from_slice(&x);
        let mut got = Vec::new();
        while b.outstanding() > 0 {
            for r in b.wait(None) {
                got.push(r.id);
                rt.ys.extend_from_slice(r.output.unwrap());
            }
        }
        // A stream's frames run in order: once this one is back, the
        // dropped client's three have run.
        let x = rng.vec_uniform(7, -1.0, 1.0);
        let y = batcher.submit(s, &x).unwrap();
        rs.xs.extend_from_slice(&x);
        got.extend(b.collect().map(|r| r.id));
        assert_eq!(got, vec![t], "round {round}: only b's own result");
        // s's outputs of the dropped frames are unknown here: check s by
        // its state and its last output.
        let whole = Record {
            xs: rs.xs.clone(),
            ys: vec![0.0; rs.xs.len() / 7 * 3],
            ..Record::new(s, (5, 5))
        };
        let (ys, c, m) = alone(&model, &whole);
        assert_eq!(
            bits(&y),
            bits(&ys[ys.len() - 3..]),
            "round {round}: s's output"
        );
        let (mut c0, mut m0) = (vec![0.0; 5], vec![0.0; 5]);
        batcher.read_state(s, &mut c0, &mut m0).unwrap();
        assert_eq!(
            bits(&[c0, m0].concat()),
            bits(&[c, m].concat()),
            "round {round}: s's state"
        );
    }
    let (mut c, mut m) = (vec![0.0; 5], vec![0.0; 5]);
    batcher.read_state(t, &mut c, &mut m).unwrap();
    check(&model, &rt, &c, &m).unwrap();
}

/// Wakes by panicking: a user's broken waker.
struct Boom;

impl std::task::Wake for Boom {
    fn wake(self: std::sync::Arc<Self>) {
        panic!("a user's waker panics");
    }
}

/// A `Pending`'s waker that panics (user code, on the worker) stops the
/// worker, but no one waits for ever: a `Client` whose frame ran in the
/// same step gets its result or an error, later calls get
/// `Error::Shutdown`. A `wait` timeout too long for an `Instant` is no
/// timeout, not a panic.
#[test]
fn a_panicking_waker_leaves_no_client_waiting() {
    use std::future::Future;
    use std::task::{Context, Poll, Waker};
    let model = seed_model(1);
    let batcher = Batcher::new(
        StreamPool::new(model, 4).unwrap(),
        BatcherConfig::new()
            .with_max_batch(2)
            .with_max_wait(Duration::from_secs(5)),
    )
    .unwrap();
    let (a, b) = (batcher.open().unwrap(), batcher.open().unwrap());
    let mut client = batcher.client().unwrap();
    client.submit(&[a, b], &[0.1; 14]).unwrap();
    while client.outstanding() > 0 {
        for r in client.wait(Some(Duration::MAX)) {
            r.output.unwrap();
        }
    }
    // Both streams awaited: the next batch runs when both are back.
    let mut p = batcher.submit_async(a, &[0.2; 7]).unwrap();
    let w = Waker::from(std::sync::Arc::new(Boom));
    assert!(matches!(
        std::pin::Pin::new(&mut p).poll(&mut Context::from_waker(&w)),
        Poll::Pending
    ));
    client.submit(&[b], &[0.3; 7]).unwrap();
    let t0 = std::time::Instant::now();
    let mut got = Vec::new();
    while client.outstanding() > 0 && t0.elapsed() < Duration::from_secs(20) {
        for r in client.wait(Some(Duration::from_secs(1))) {
            got.push(r.output.map(|y| y.len()).map_err(|e| e.to_string()));
        }
    }
    assert_eq!(
        client.outstanding(),
        0,
        "the client waits for ever: {got:?}"
    );
    assert_eq!(got.len(), 1);
    assert!(
        matches!(got[0], Ok(3)) || got[0].as_ref().is_err_and(|e| e.contains("stopped")),
        "{got:?}"
    );
    // The worker is gone (or going): a submit is refused, or accepted
    // and then failed; calls fail cleanly.
    match client.submit(&[b], &[0.3; 7]) {
        Err(Error::Shutdown(_)) => {}
        Ok(()) => {
            let r: Vec<_> = client
                .wait(Some(Duration::from_secs(20)))
                .map(|r| r.output.map(<[f32]>::len))
                .collect();
            assert!(matches!(r[..], [Err(Error::Shutdown(_))]), "{r:?}");
        }
        Err(e) => panic!("unexpected error: {e}"),
    }
    assert!(matches!(batcher.open(), Err(Error::Shutdown(_))));
}

/// A clone is a pool of its own: the original's ids are refused there
/// (and the clone's in the original), however the two go on — the
/// reviewer's case: each closes a stream and opens another in its slot.
/// The clone's own ids (same slots and generations, in the same order)
/// step its copies of the states, which match the original's bit for bit.
#[test]
fn a_cloned_pool_refuses_the_originals_ids() {
    let model = seed_model(1);
    let mut p = StreamPool::new(model, 3).unwrap();
    let (a, b) = (p.open().unwrap(), p.open().unwrap());
    p.step(&[a, b], &[0.3; 14], &mut [0.0; 6]).unwrap();
    let mut q = p.clone();
    let qs: Vec<StreamId> = q.streams().collect();
    let ps: Vec<StreamId> = p.streams().collect();
    assert_eq!(qs.len(), 2);
    for (x, y) in ps.iter().zip(&qs) {
        assert_eq!((x.slot(), x.generation()), (y.slot(), y.generation()));
        assert_ne!(x, y);
    }
    let (mut y1, mut y2) = ([0.0f32; 3], [0.0f32; 3]);
    let e = q.step(&[a], &[0.5; 7], &mut y1).unwrap_err().to_string();
    assert!(e.contains("does not belong to this pool"), "{e}");
    let e = p
        .step(&[qs[0]], &[0.5; 7], &mut y1)
        .unwrap_err()
        .to_string();
    assert!(e.contains("does not belong to this pool"), "{e}");
    // Both close a stream and open another in its slot.
    p.close(a).unwrap();
    let qa = qs[ps.iter().position(|&x| x == a).unwrap()];
    q.close(qa).unwrap();
    let (p_new, q_new) = (p.open().unwrap(), q.open().unwrap());
    assert_eq!(
        (p_new.slot(), p_new.generation()),
        (q_new.slot(), q_new.generation())
    );
    assert!(q.step(&[p_new], &[0.5; 7], &mut y1).is_err());
    assert!(p.step(&[q_new], &[0.5; 7], &mut y1).is_err());
    // The clone's copy of b runs as b does.
    let qb = qs[ps.iter().position(|&x| x == b).unwrap()];
    p.step(&[b], &[0.7; 7], &mut y1).unwrap();
    q.step(&[qb], &[0.7; 7], &mut y2).unwrap();
    assert_eq!(bits(&y1), bits(&y2));
}

/// A `max_wait` too long for an `Instant` (`Duration::MAX`: "wait until
/// the batch is full") is no deadline, not a panic of the worker: with
/// one of two awaited streams back, the batch waits for the other; when
/// it comes both run; a draining shutdown runs what waits and hands the
/// pool back.
#[test]
fn a_max_wait_beyond_an_instant_means_no_deadline() {
    let batcher = Batcher::new(
        StreamPool::new(seed_model(1), 4).unwrap(),
        BatcherConfig::new().with_max_wait(Duration::MAX),
    )
    .unwrap();
    let (a, b) = (batcher.open().unwrap(), batcher.open().unwrap());
    let mut client = batcher.client().unwrap();
    client.submit(&[a, b], &[0.1; 14]).unwrap();
    while client.outstanding() > 0 {
        for r in client.wait(None) {
            r.output.unwrap();
        }
    }
    // Only a comes back: its batch waits for b (no deadline).
    let pa = batcher.submit_async(a, &[0.2; 7]).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert!(!pa.is_ready(), "the batch ran without b");
    let pb = batcher.submit_async(b, &[0.3; 7]).unwrap();
    assert_eq!(pa.wait().unwrap().len(), 3);
    assert_eq!(pb.wait().unwrap().len(), 3);
    assert_eq!(batcher.stats().steps, 2);
    // Again only a; a draining shutdown runs it and returns the pool.
    let pa = batcher.submit_async(a, &[0.4; 7]).unwrap();
    let pool = batcher.shutdown(Shutdown::Drain).unwrap();
    assert_eq!(pa.wait().unwrap().len(), 3);
    assert_eq!(pool.len(), 2);
}

/// Wakes by setting a flag.
struct Flag(std::sync::atomic::AtomicBool);

impl std::task::Wake for Flag {
    fn wake(self: std::sync::Arc<Self>) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A `Pending`'s waker that panics (user code, run on the worker) leaves
/// no other `Pending` of the same step unwoken: whichever order the
/// worker wakes them in, the two flag wakers around the panicking one are
/// both called (by the worker, or as it stops).
#[test]
fn a_panicking_waker_leaves_no_other_pending_unwoken() {
    use std::future::Future;
    use std::sync::Arc;
    use std::task::{Context, Poll, Waker};
    let batcher = Batcher::new(
        StreamPool::new(seed_model(1), 4).unwrap(),
        BatcherConfig::new().with_max_wait(Duration::from_secs(5)),
    )
    .unwrap();
    let ids: Vec<_> = (0..4).map(|_| batcher.open().unwrap()).collect();
    let mut client = batcher.client().unwrap();
    client.submit(&ids, &[0.1; 28]).unwrap();
    while client.outstanding() > 0 {
        for r in client.wait(None) {
            r.output.unwrap();
        }
    }
    // All four awaited: the next batch runs when all four are back, so
    // the first three are polled (their wakers registered) before it.
    let flags = [Arc::new(Flag(false.into())), Arc::new(Flag(false.into()))];
    let wakers = [
        Waker::from(Arc::clone(&flags[0])),
        Waker::from(Arc::new(Boom)),
        Waker::from(Arc::clone(&flags[1])),
    ];
    let mut pending: Vec<_> = ids
        .iter()
        .zip(&wakers)
        .map(|(&id, w)| {
            let mut p = batcher.submit_async(id, &[0.2; 7]).unwrap();
            assert!(matches!(
                std::pin::Pin::new(&mut p).poll(&mut Context::from_waker(w)),
                Poll::Pending
            ));
            p
        })
        .collect();
    pending.push(batcher.submit_async(ids[3], &[0.2; 7]).unwrap());
    let woken = || {
        flags
            .iter()
            .all(|f| f.0.load(std::sync::atomic::Ordering::SeqCst))
    };
    let t0 = std::time::Instant::now();
    while !woken() && t0.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(woken(), "a Pending's waker was never called");
    // Their results are there (the step ran) or an error (the worker
    // stopped before handing them over): never a wait for ever.
    for p in pending.drain(..) {
        if let Err(e) = p.wait() {
            assert!(matches!(e, Error::Shutdown(_)), "{e}");
        }
    }
}
