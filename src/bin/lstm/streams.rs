//! `lstm bench --streams N`: N live streams served by the `Batcher` to K
//! client threads, against (a) one pre-assembled batch of N through
//! `step` (the ceiling) and (b) one `step` call per stream, interleaved in
//! rounds; medians of the rounds.
//!
//! Each client drives N/K streams in a closed loop: a stream sends its
//! next frame a random delay (its think time, uniform in [0, think_us],
//! 200 µs unless `--think-us` says otherwise) after its last
//! output came back, so at most one frame per stream is in flight and the
//! offered load follows what the batcher serves. A client sleeps until
//! its next frame is due, or until 60 µs before and then yields until it
//! is (a timed sleep ends up to the kernel's timer slack, 50 µs, late; a
//! frame woken by the network would not be). A client submits the
//! frames that are due together through a `Client` (or, with
//! `--per-frame`, each with `submit_async` and its own `Pending`).

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use lstm_kernels::error::{Error, Result};
use lstm_kernels::rng::SplitMix64;
use lstm_kernels::{Batcher, BatcherConfig, Lstm, Pending, StreamId, StreamPool};

/// A client waits for a frame due this soon by yielding (see
/// `batch_client`).
const SPIN: Duration = Duration::from_micros(60);

/// The longest a client sleeps or waits before it looks at `stop` again:
/// a think time longer than the measured window ends with it.
const NAP: Duration = Duration::from_millis(10);

/// Yields the thread until `t` (for a frame due within [`SPIN`]).
fn yield_until(t: Instant) {
    while Instant::now() < t {
        std::thread::yield_now();
    }
}

/// Rounds of the three measurements, interleaved.
const ROUNDS: usize = 3;

/// What the streams bench needs besides the model.
pub struct StreamArgs {
    pub streams: usize,
    pub clients: usize,
    pub max_wait_us: u64,
    pub think_us: u64,
    /// 0: all streams.
    pub max_batch: usize,
    pub per_frame: bool,
    /// The batcher's catch-up steps (`BatcherConfig::catch_up`).
    pub catch_up: bool,
    pub seconds: f64,
    pub json: bool,
}

/// One round of the batcher: throughput, step figures, latencies (µs).
struct Served {
    frames_per_s: f64,
    mean_batch: f64,
    step_us: f64,
    /// The fraction of steps that were catch-up steps.
    catch_up_share: f64,
    /// Client-observed (submit call to the client seeing the output).
    latencies_us: Vec<f64>,
    /// Server-side (submit to the output ready, stamped by the worker).
    server_us: Vec<f64>,
    swaps_per_step: f64,
}

pub fn bench(model: Lstm, a: &StreamArgs) -> Result<()> {
    let (n, k) = (a.streams, a.clients);
    if n == 0 || k == 0 || k > n {
        return Err(Error::Invalid(format!(
            "--streams and --clients must be at least 1, with no more clients than streams (got {n} streams, {k} clients)"
        )));
    }
    for (flag, v) in [("--max-wait-us", a.max_wait_us), ("--think-us", a.think_us)] {
        if v > 10_000_000 {
            return Err(Error::Invalid(format!(
                "{flag} must be at most 10000000, got {v}"
            )));
        }
    }
    let cfg = *model.config();
    let mut xs = lstm_kernels::error::try_zeros(
        lstm_kernels::error::checked_elements(&[n, cfg.n_input], "the streams' frames")?,
        "the streams' frames",
    )?;
    SplitMix64::new(11).fill_uniform(&mut xs, -1.0, 1.0);
    // Budget per round: 20% ceiling, 20% per stream, 60% served.
    let per_round = a.seconds.max(0.0) / ROUNDS as f64;
    let (mut ceiling, mut per_stream, mut served) = (Vec::new(), Vec::new(), Vec::new());
    // One call per stream on one thread too: a batch of one row splits
    // its hidden units over the threads, which can be slower.
    let single = model.clone().with_threads(1)?;
    let mut per_stream_1t = Vec::new();
    let mut ceiling_step_us = Vec::new();
    let steal_before = crate::steal::now();
    for _ in 0..ROUNDS {
        let (fps, step_us) = run_ceiling(&model, n, &xs, 0.2 * per_round)?;
        ceiling.push(fps);
        ceiling_step_us.push(step_us);
        per_stream.push(run_per_stream(&model, n, &xs, 0.1 * per_round)?);
        per_stream_1t.push(run_per_stream(&single, n, &xs, 0.1 * per_round)?);
        served.push(run_served(&model, a, &xs, 0.6 * per_round)?);
    }
    let steal = crate::steal::share(steal_before, crate::steal::now());
    let med = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let frames_per_s = med(&mut served.iter().map(|s| s.frames_per_s).collect());
    let mean_batch = med(&mut served.iter().map(|s| s.mean_batch).collect());
    let step_us = med(&mut served.iter().map(|s| s.step_us).collect());
    let catch_up_share = med(&mut served.iter().map(|s| s.catch_up_share).collect());
    let swaps = med(&mut served.iter().map(|s| s.swaps_per_step).collect());
    let sorted = |f: fn(&Served) -> &Vec<f64>| {
        let mut v: Vec<f64> = served.iter().flat_map(|s| f(s).clone()).collect();
        v.sort_by(f64::total_cmp);
        v
    };
    let (lat, srv) = (sorted(|s| &s.latencies_us), sorted(|s| &s.server_us));
    let pct = |v: &[f64], p: f64| {
        if v.is_empty() {
            f64::NAN
        } else {
            v[((v.len() - 1) as f64 * p).round() as usize]
        }
    };
    let (p50, p99, max) = (pct(&srv, 0.5), pct(&srv, 0.99), pct(&srv, 1.0));
    let (c50, c99, cmax) = (pct(&lat, 0.5), pct(&lat, 0.99), pct(&lat, 1.0));
    // Per frame: from the output ready to the client handling it.
    let mut handoff: Vec<f64> = served
        .iter()
        .flat_map(|s| s.latencies_us.iter().zip(&s.server_us).map(|(c, w)| c - w))
        .collect();
    handoff.sort_by(f64::total_cmp);
    let (h50, h99) = (pct(&handoff, 0.5), pct(&handoff, 0.99));
    let ceiling_fps = med(&mut ceiling);
    let per_stream_model = med(&mut per_stream);
    let per_stream_1 = med(&mut per_stream_1t);
    // The baseline is the faster of the two.
    let per_stream_fps = per_stream_model.max(per_stream_1);
    let ceiling_step = med(&mut ceiling_step_us);
    // The latency target: `max_wait` + two (batcher) step times.
    let p99_target = a.max_wait_us as f64 + 2.0 * step_us;
    if a.json {
        let v = serde_json::json!({
            "isa": model.isa_name(),
            "kernel": model.kernels_for_batch(n)?.join("+"),
            "input": cfg.n_input,
            "hidden": cfg.n_hidden,
            "head": cfg.head,
            "peephole": cfg.peephole.name(),
            "streams": n,
            "clients": k,
            "max_wait_us": a.max_wait_us,
            "think_us": a.think_us,
            "max_batch": if a.max_batch == 0 { n } else { a.max_batch.min(n) },
            "submit": if a.per_frame { "per_frame" } else { "client" },
            "catch_up": a.catch_up,
            "catch_up_step_share": catch_up_share,
            "threads": model.threads(),
            "rounds": ROUNDS,
            "frames_per_s": frames_per_s,
            "ceiling_frames_per_s": ceiling_fps,
            "per_stream_frames_per_s": per_stream_fps,
            "per_stream_model_threads_frames_per_s": per_stream_model,
            "per_stream_1_thread_frames_per_s": per_stream_1,
            "of_ceiling": frames_per_s / ceiling_fps,
            "vs_per_stream": frames_per_s / per_stream_fps,
            "mean_batch": mean_batch,
            "step_us": step_us,
            "ceiling_step_us": ceiling_step,
            "rows_swapped_per_step": swaps,
            "latency_samples": lat.len(),
            "p50_us": p50,
            "p99_us": p99,
            "max_us": max,
            "p99_target_us": p99_target,
            "p99_within_target": p99 <= p99_target,
            "client_p50_us": c50,
            "client_p99_us": c99,
            "handoff_p50_us": h50,
            "handoff_p99_us": h99,
            "client_max_us": cmax,
            "cpu_steal": steal,
        });
        outln!("{v}");
    } else {
        outln!(
            "isa {} | {n} streams, {k} clients ({}), max wait {} µs, think ≤ {} µs, n_in={} H={} threads={} ({ROUNDS} rounds, medians)",
            model.isa_name(),
            if a.per_frame {
                "a Pending per frame"
            } else {
                "Client"
            },
            a.max_wait_us,
            a.think_us,
            cfg.n_input,
            cfg.n_hidden,
            model.threads()
        );
        outln!(
            "batcher    {frames_per_s:.0} frames/s  ({:.1}% of the ceiling, {:.1}× one call per stream)  mean batch {mean_batch:.1}  step {step_us:.1} µs  {swaps:.1} rows swapped/step{}",
            100.0 * frames_per_s / ceiling_fps,
            frames_per_s / per_stream_fps,
            if a.catch_up {
                format!("  {:.0}% catch-up steps", 100.0 * catch_up_share)
            } else {
                String::new()
            }
        );
        outln!(
            "ceiling    {ceiling_fps:.0} frames/s  (one batch of {n}: {ceiling_step:.1} µs/step)"
        );
        outln!(
            "per stream {per_stream_fps:.0} frames/s  (one step call per stream: {per_stream_model:.0} on {} threads, {per_stream_1:.0} on 1)",
            model.threads()
        );
        outln!(
            "latency    p50 {p50:.0} µs  p99 {p99:.0} µs  max {max:.0} µs  (submit to output ready; {} frames; p99 {} max wait + 2 steps = {p99_target:.0} µs)",
            srv.len(),
            if p99 <= p99_target { "within" } else { "over" }
        );
        outln!(
            "  as seen  p50 {c50:.0} µs  p99 {c99:.0} µs  max {cmax:.0} µs  (by the client threads; output ready to client: p50 {h50:.0} µs, p99 {h99:.0} µs)"
        );
        outln!(
            "{} of the machine's CPU time over the rounds (given to other guests: a run above a few % is disturbed)",
            crate::steal::text(steal)
        );
    }
    Ok(())
}

/// (a): one batch of all streams, one step at a time. Frames/s and µs
/// per step.
fn run_ceiling(model: &Lstm, n: usize, xs: &[f32], secs: f64) -> Result<(f64, f64)> {
    let mut st = model.new_state(n)?;
    let mut ys = vec![0.0f32; n * model.config().n_output()];
    model.step(&mut st, xs, &mut ys)?; // warm up
    let (start, mut steps) = (Instant::now(), 0u64);
    while steps < 3 || start.elapsed().as_secs_f64() < secs {
        model.step(&mut st, xs, &mut ys)?;
        steps += 1;
    }
    let t = start.elapsed().as_secs_f64();
    Ok((n as f64 * steps as f64 / t, t / steps as f64 * 1e6))
}

/// (b): one `step` call per stream, the best way without a pool: one
/// batch-1 state (one scratch, warm in cache) into which each stream's
/// `c` and `m` are copied for its step and out of which they are copied
/// back. (A batch-1 state per stream is slower still: a thousand
/// scratches do not stay in cache.)
fn run_per_stream(model: &Lstm, n: usize, xs: &[f32], secs: f64) -> Result<f64> {
    let cfg = model.config();
    let (ni, p, h, r) = (cfg.n_input, cfg.n_output(), cfg.n_hidden, cfg.n_recurrent());
    let (mut cs, mut ms) = (vec![0.0f32; n * h], vec![0.0f32; n * r]);
    let mut st = model.new_state(1)?;
    let mut y = vec![0.0f32; p];
    let (start, mut frames) = (Instant::now(), 0u64);
    let mut i = 0;
    while frames < 3 * n as u64 || start.elapsed().as_secs_f64() < secs {
        st.c_mut().copy_from_slice(&cs[i * h..(i + 1) * h]);
        st.m_mut().copy_from_slice(&ms[i * r..(i + 1) * r]);
        model.step(&mut st, &xs[i * ni..(i + 1) * ni], &mut y)?;
        cs[i * h..(i + 1) * h].copy_from_slice(st.c());
        ms[i * r..(i + 1) * r].copy_from_slice(st.m());
        i = (i + 1) % n;
        frames += 1;
    }
    Ok(frames as f64 / start.elapsed().as_secs_f64())
}

/// Wakes a client for one of its streams: notes which, unparks it.
struct StreamWake {
    client: Arc<ClientWake>,
    index: usize,
}

struct ClientWake {
    done: Mutex<Vec<usize>>,
    thread: std::thread::Thread,
}

impl Wake for StreamWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.client
            .done
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(self.index);
        self.client.thread.unpark();
    }
}

/// (c): the batcher, K clients in closed loops.
fn run_served(model: &Lstm, a: &StreamArgs, xs: &[f32], secs: f64) -> Result<Served> {
    let (n, k) = (a.streams, a.clients);
    let max_wait = Duration::from_micros(a.max_wait_us);
    let think = Duration::from_micros(a.think_us);
    let pool = StreamPool::new(model.clone(), n)?;
    let batcher = Batcher::new(
        pool,
        BatcherConfig::new()
            .with_max_wait(max_wait)
            .with_max_batch(a.max_batch)
            .with_catch_up(a.catch_up),
    )?;
    let ids = (0..n)
        .map(|_| batcher.open())
        .collect::<Result<Vec<StreamId>>>()?;
    let ni = model.config().n_input;
    let stop = AtomicBool::new(false);
    // Warm-up, then the measured window.
    let warm = Duration::from_secs_f64((0.1 * secs).min(0.3));
    let window = Duration::from_secs_f64(secs.max(0.05));
    let t0 = Instant::now();
    let ((latencies, server), before, t_start, after, t_end) = std::thread::scope(|s| {
        let mut handles = Vec::with_capacity(k);
        for c in 0..k {
            // Client c drives streams c, c + k, c + 2k, …
            let mine: Vec<usize> = (c..n).step_by(k).collect();
            let (batcher, ids, stop) = (&batcher, &ids, &stop);
            let per_frame = a.per_frame;
            let started = std::thread::Builder::new()
                .name(format!("bench-client-{c}"))
                .spawn_scoped(s, move || {
                    if per_frame {
                        client(batcher, ids, &mine, xs, ni, think, stop, t0 + warm, c)
                    } else {
                        batch_client(batcher, ids, &mine, xs, ni, think, stop, t0 + warm, c)
                    }
                });
            match started {
                Ok(h) => handles.push(h),
                Err(e) => {
                    // The clients started stop, and the scope joins them.
                    stop.store(true, Ordering::Relaxed);
                    return Err(Error::Invalid(format!(
                        "cannot start bench client thread {} of {k} (--clients): {e}",
                        c + 1
                    )));
                }
            }
        }
        std::thread::sleep(warm);
        let (before, t_start) = (batcher.stats(), Instant::now());
        std::thread::sleep(window);
        let (after, t_end) = (batcher.stats(), Instant::now());
        stop.store(true, Ordering::Relaxed);
        let (mut lat, mut srv) = (Vec::new(), Vec::new());
        for h in handles {
            match h.join() {
                Ok(r) => {
                    let (l, s) = r?;
                    lat.extend(l);
                    srv.extend(s);
                }
                Err(_) => return Err(Error::Invalid("a bench client panicked".into())),
            }
        }
        Ok(((lat, srv), before, t_start, after, t_end))
    })?;
    let pool = batcher.shutdown(lstm_kernels::Shutdown::Drain)?;
    let steps = (after.steps - before.steps).max(1);
    let frames = after.frames - before.frames;
    let total_steps = after.steps.max(1);
    Ok(Served {
        frames_per_s: frames as f64 / (t_end - t_start).as_secs_f64(),
        mean_batch: frames as f64 / steps as f64,
        step_us: (after.step_time - before.step_time).as_secs_f64() / steps as f64 * 1e6,
        catch_up_share: (after.catch_ups - before.catch_ups) as f64 / steps as f64,
        latencies_us: latencies,
        server_us: server,
        swaps_per_step: pool.rows_swapped() as f64 / total_steps as f64,
    })
}

/// One client through a [`Client`](lstm_kernels::Client): its streams in closed loops until
/// `stop`, the frames due at once submitted in one call, the outputs of a
/// step collected in one call; returns the latencies (µs: as the client
/// saw them, and as the worker stamped them) of frames sent after `from`.
#[allow(clippy::too_many_arguments)]
fn batch_client(
    batcher: &Batcher,
    ids: &[StreamId],
    mine: &[usize],
    xs: &[f32],
    ni: usize,
    think: Duration,
    stop: &AtomicBool,
    from: Instant,
    seed: usize,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let mut cl = batcher.client()?;
    // Slot -> index into `mine`.
    let mut local = vec![usize::MAX; batcher.capacity()];
    for (i, &s) in mine.iter().enumerate() {
        local[ids[s].slot()] = i;
    }
    let mut rng = SplitMix64::new(seed as u64 + 1);
    let delay = |rng: &mut SplitMix64| think.mul_f64(rng.next_f32() as f64);
    let now = Instant::now();
    let mut next: Vec<Option<Instant>> = mine.iter().map(|_| Some(now + delay(&mut rng))).collect();
    let mut sent = vec![now; mine.len()];
    let (mut due_ids, mut due_xs) = (
        Vec::with_capacity(mine.len()),
        Vec::with_capacity(mine.len() * ni),
    );
    let mut lat = (Vec::with_capacity(1 << 16), Vec::with_capacity(1 << 16));
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        // Frames due, in one call.
        let now = Instant::now();
        let mut soonest: Option<Instant> = None;
        for (i, &s) in mine.iter().enumerate() {
            match next[i] {
                Some(t) if t <= now && !stopping => {
                    next[i] = None;
                    sent[i] = now;
                    due_ids.push(ids[s]);
                    due_xs.extend_from_slice(&xs[s * ni..(s + 1) * ni]);
                }
                Some(t) if !stopping => soonest = Some(soonest.map_or(t, |u| u.min(t))),
                _ => {}
            }
        }
        if !due_ids.is_empty() {
            cl.submit(&due_ids, &due_xs)?;
            due_ids.clear();
            due_xs.clear();
        }
        if stopping && cl.outstanding() == 0 {
            return Ok(lat);
        }
        // Outputs, or the next frame's time (at most `NAP` away, so that
        // a long think time does not outlast `stop`).
        let timeout = match soonest {
            Some(t) => Some(t.saturating_duration_since(Instant::now()).min(NAP)),
            None if stopping => Some(Duration::from_millis(1)),
            None => None,
        };
        // A frame due within `SPIN` is waited for by yielding, not by a
        // timed sleep, which the kernel ends up to its timer slack (50 µs
        // by default) late: a stream's frame leaves on time, as one woken
        // by the network would.
        let (timeout, spin) = match timeout {
            Some(t) if t <= SPIN => (Some(Duration::ZERO), Some(t)),
            Some(t) => (Some(t - SPIN), None),
            None => (None, None),
        };
        if let Some(t) = spin {
            yield_until(Instant::now() + t);
        }
        if cl.outstanding() == 0 {
            // Nothing to collect (`wait` would return at once).
            std::thread::sleep(timeout.unwrap_or_default());
            continue;
        }
        let ready = cl.wait(timeout);
        let now = Instant::now();
        for r in ready {
            r.output?;
            let i = local[r.id.slot()];
            if sent[i] >= from {
                lat.0.push((now - sent[i]).as_secs_f64() * 1e6);
                lat.1.push(r.latency.as_secs_f64() * 1e6);
            }
            next[i] = Some(now + delay(&mut rng));
        }
    }
}

/// One client, a `Pending` per frame: its streams in closed loops until
/// `stop`; returns the latencies (µs, submit to output) of frames sent
/// after `from`.
#[allow(clippy::too_many_arguments)]
fn client(
    batcher: &Batcher,
    ids: &[StreamId],
    mine: &[usize],
    xs: &[f32],
    ni: usize,
    think: Duration,
    stop: &AtomicBool,
    from: Instant,
    seed: usize,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let wake = Arc::new(ClientWake {
        done: Mutex::new(Vec::with_capacity(mine.len())),
        thread: std::thread::current(),
    });
    let wakers: Vec<Waker> = (0..mine.len())
        .map(|index| {
            Waker::from(Arc::new(StreamWake {
                client: Arc::clone(&wake),
                index,
            }))
        })
        .collect();
    let mut rng = SplitMix64::new(seed as u64 + 1);
    let delay = |rng: &mut SplitMix64| think.mul_f64(rng.next_f32() as f64);
    let now = Instant::now();
    let mut next: Vec<Option<Instant>> = mine.iter().map(|_| Some(now + delay(&mut rng))).collect();
    let mut out: Vec<Option<(Pending, Instant)>> = mine.iter().map(|_| None).collect();
    let mut lat = (Vec::with_capacity(1 << 16), Vec::with_capacity(1 << 16));
    let mut done = Vec::with_capacity(mine.len());
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        // Outputs that came back.
        std::mem::swap(
            &mut done,
            &mut *wake.done.lock().unwrap_or_else(|e| e.into_inner()),
        );
        for &i in &done {
            poll(
                &mut out[i],
                &wakers[i],
                &mut next[i],
                &mut lat,
                from,
                &mut rng,
                delay,
            )?;
        }
        done.clear();
        if stopping && out.iter().all(Option::is_none) {
            return Ok(lat);
        }
        // Frames due.
        let now = Instant::now();
        let mut soonest: Option<Instant> = None;
        for (i, &s) in mine.iter().enumerate() {
            match next[i] {
                Some(t) if t <= now && !stopping => {
                    next[i] = None;
                    let p = batcher.submit_async(ids[s], &xs[s * ni..(s + 1) * ni])?;
                    out[i] = Some((p, now));
                    // Register the waker (or take an output already there).
                    poll(
                        &mut out[i],
                        &wakers[i],
                        &mut next[i],
                        &mut lat,
                        from,
                        &mut rng,
                        delay,
                    )?;
                }
                _ => {}
            }
        }
        // The next frame due, among every stream: one whose output came
        // back at its submit has its next frame scheduled already.
        if !stopping {
            soonest = next.iter().flatten().min().copied();
        }
        match soonest {
            Some(t) if t.saturating_duration_since(Instant::now()) <= SPIN => {
                // As in `batch_client`: due soon, yield until then.
                yield_until(t);
            }
            Some(t) => std::thread::park_timeout(
                t.saturating_duration_since(Instant::now())
                    .saturating_sub(SPIN)
                    .min(NAP),
            ),
            None if stopping => std::thread::park_timeout(Duration::from_millis(1)),
            // Every stream has a frame out: its waker unparks this thread
            // (and `stop` is seen within `NAP`).
            None => std::thread::park_timeout(NAP),
        }
    }
}

/// Polls stream `i`'s outstanding frame; when done, records its latency
/// and schedules the stream's next frame.
fn poll(
    out: &mut Option<(Pending, Instant)>,
    waker: &Waker,
    next: &mut Option<Instant>,
    lat: &mut (Vec<f64>, Vec<f64>),
    from: Instant,
    rng: &mut SplitMix64,
    delay: impl Fn(&mut SplitMix64) -> Duration,
) -> Result<()> {
    let Some((p, sent)) = out else {
        return Ok(());
    };
    let mut cx = Context::from_waker(waker);
    if let Poll::Ready(r) = std::pin::Pin::new(&mut *p).poll(&mut cx) {
        r?;
        let now = Instant::now();
        if *sent >= from {
            lat.0.push((now - *sent).as_secs_f64() * 1e6);
            let server = p.latency().unwrap_or_default();
            lat.1.push(server.as_secs_f64() * 1e6);
        }
        *out = None;
        *next = Some(now + delay(rng));
    }
    Ok(())
}
