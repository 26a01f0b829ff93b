//! Continuous batching: many threads submit frames of streams; one worker
//! thread, which owns the [`StreamPool`], gathers the waiting frames into a
//! batch and runs it as one step.
//!
//! The rules, in the order the worker applies them:
//!
//! * A batch holds at most one frame per stream, its oldest; a stream's
//!   next frame goes into a later step, so every stream sees its frames in
//!   the order they were submitted.
//! * Streams are served first come, first served: a batch takes the
//!   streams whose frames have waited longest, at most `max_batch` of them.
//! * A batch runs as soon as `max_batch` streams are ready; or as soon as
//!   every stream the previous step served (and still open) has its next
//!   frame waiting — in a closed loop those are the streams about to come
//!   back, and waiting for them merges them into one batch with the
//!   streams that waited during that step; or at the latest `max_wait`
//!   after the later of its oldest frame's arrival and the moment the
//!   last of the previous step's results was collected (counted at most
//!   one step time after that step's end); and when no stream is
//!   expected back (after an idle spell, or pipelined streams whose next
//!   frames already wait) it runs at once.
//! * With [`BatcherConfig::catch_up`] (off by default), frames that
//!   waited through a step (they came while it ran) run
//!   right after it in a catch-up step of their own, without waiting for
//!   the streams it served: in a closed loop they are the streams that
//!   just missed it, and would otherwise wait a whole step more. The next
//!   batch then waits for the streams of both steps (its wait counted
//!   from the later of the two). At most one catch-up step follows a
//!   main step. So a frame that came during a main step has its output
//!   within that step's rest plus the catch-up step, and any other within
//!   `max_wait` + two step times, while catch-up steps take at most half a
//!   main step (a frame that came during a longer one can wait twice its
//!   length instead of a main step) and the streams waiting fit in one
//!   batch. Without catch-up steps, a frame that came during a step can
//!   wait `max_wait` + three step times.
//! * Stream control (open, close, reset, reading and writing a state) runs
//!   on the worker between two steps, without waiting for a batch to be
//!   due: a close or reset takes effect before that stream's frames still
//!   waiting (a closed stream's waiting frames fail).
//!
//! Frames come one at a time ([`Batcher::submit`], [`Batcher::submit_async`]
//! and a [`Pending`] per frame) or many at once from a [`Client`], for a
//! thread that drives many streams: one lock per submit; after a step, the
//! worker copies a client's outputs from the pool's rows straight into the
//! client's own mailbox (not under the queue's lock, which the step's
//! bookkeeping holds only briefly) and wakes it once; the client swaps the
//! mailbox's buffers out. Frames wait in a bounded queue
//! (`BatcherConfig::queue` frames waiting to run; a frame leaves it when
//! its step takes it, whether or not its result has been collected); when
//! it is full, a submit waits for room or fails with [`Error::Busy`]
//! ([`Backpressure`]). Locks are held only to move frames and results in
//! and out of the queue, never while the kernels run; a warm batcher does
//! not allocate per step or per frame (`submit_into`, [`Client`]).

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{Error, Result, check_len, try_zeros};
use crate::seq::pool::{StreamId, StreamPool};

/// What a submit does when the queue is full.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Backpressure {
    /// Wait until the worker takes waiting frames into a step, which
    /// frees their places in the queue (the default).
    #[default]
    Block,
    /// Return [`Error::Busy`] at once.
    Busy,
}

/// What [`Batcher::shutdown`] does with frames still waiting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shutdown {
    /// Run every frame already accepted, then stop.
    Drain,
    /// Fail every frame not yet running with [`Error::Shutdown`] (the
    /// step already running completes), then stop.
    Fail,
}

/// How a [`Batcher`] forms batches.
#[derive(Clone, Copy, Debug)]
pub struct BatcherConfig {
    /// The most streams one step runs; 0 (the default) means the pool's
    /// capacity.
    pub max_batch: usize,
    /// How long a batch waits for more frames (default 500 µs): for the
    /// streams the previous step served, counted from when the last of
    /// its results was collected (at most one step time after the step's
    /// end) or from the batch's oldest frame, if later (see the module
    /// docs). Closed-loop streams are all in every batch when it is a
    /// little above their think time plus the hand-over of a step's
    /// results: at H=256 with 1,000 streams thinking up to 200 µs, 500 µs
    /// served more frames than 200 µs, with a lower p99 latency (for a
    /// tiny cell whose step is shorter than the hand-over, slightly fewer;
    /// see the README, "Serving streams"). A wait too long for an
    /// `Instant` (`Duration::MAX`) means none: a batch then runs when it
    /// is full or the awaited streams are all back.
    pub max_wait: Duration,
    /// The most frames waiting to run, across all streams; 0 (the
    /// default) means twice the pool's capacity.
    pub queue: usize,
    /// What a submit does when the queue is full.
    pub backpressure: Backpressure,
    /// Whether frames that came while a step ran run right after it in a
    /// catch-up step of their own (default off; see the module docs): a
    /// bound of about `max_wait` + two step times on every frame's
    /// latency, rather than three for frames that came during a step, for
    /// some throughput (the catch-up steps are small and run while the
    /// clients handle the last step's results).
    pub catch_up: bool,
}

impl Default for BatcherConfig {
    fn default() -> Self {
        BatcherConfig {
            max_batch: 0,
            max_wait: Duration::from_micros(500),
            queue: 0,
            backpressure: Backpressure::Block,
            catch_up: false,
        }
    }
}

impl BatcherConfig {
    /// The defaults (see the fields).
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets [`BatcherConfig::max_batch`].
    pub fn with_max_batch(mut self, n: usize) -> Self {
        self.max_batch = n;
        self
    }
    /// Sets [`BatcherConfig::max_wait`].
    pub fn with_max_wait(mut self, wait: Duration) -> Self {
        self.max_wait = wait;
        self
    }
    /// Sets [`BatcherConfig::queue`].
    pub fn with_queue(mut self, frames: usize) -> Self {
        self.queue = frames;
        self
    }
    /// Sets [`BatcherConfig::backpressure`].
    pub fn with_backpressure(mut self, b: Backpressure) -> Self {
        self.backpressure = b;
        self
    }
    /// Sets [`BatcherConfig::catch_up`].
    pub fn with_catch_up(mut self, on: bool) -> Self {
        self.catch_up = on;
        self
    }
}

/// Counters of a [`Batcher`] since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct BatcherStats {
    /// Steps run.
    pub steps: u64,
    /// Frames run (the sum of the batch sizes).
    pub frames: u64,
    /// Frames failed (closed stream, shutdown, a failed step).
    pub failed: u64,
    /// The largest batch.
    pub largest_batch: usize,
    /// Catch-up steps run (counted in `steps` too).
    pub catch_ups: u64,
    /// Time spent in the pool's steps (the kernels and the row moves).
    pub step_time: Duration,
}

impl BatcherStats {
    /// Frames per step.
    pub fn mean_batch(&self) -> f64 {
        self.frames as f64 / self.steps.max(1) as f64
    }
}

/// "No ticket": the end of a stream's list of waiting frames.
const NONE: u32 = u32::MAX;

enum Status {
    Free,
    Queued,
    Running,
    Done,
    Failed(Error),
}

/// One accepted frame, from its submit until its result is collected (a
/// `Pending`'s) or delivered (a [`Client`]'s, freed when its step ends):
/// where it is, and its result once it has one. The frame and output
/// values live in the queue's `xs`/`ys` (a client's output goes to its
/// mailbox instead).
struct Ticket {
    status: Status,
    id: StreamId,
    /// The stream's next waiting frame.
    next: u32,
    arrived: Instant,
    /// Its place among all frames accepted (the queue's `accepted` when
    /// it came).
    seq: u64,
    /// When its step ended (or it failed).
    finished: Instant,
    waker: Option<Waker>,
    /// The [`Client`] that submitted it (its index), or [`NONE`].
    client: u32,
    /// The [`Pending`] or [`Client`] was dropped: free the ticket when
    /// done.
    abandoned: bool,
}

/// A stream control operation, run by the worker between steps.
enum Op {
    Open,
    Close(StreamId),
    Reset(StreamId),
    Read(StreamId),
    Write(StreamId, Vec<f32>, Vec<f32>),
}

enum Reply {
    Id(StreamId),
    Done,
    State(Vec<f32>, Vec<f32>),
}

/// Where the worker puts a control operation's result.
#[derive(Default)]
struct OneShot {
    result: Mutex<Option<Result<Reply>>>,
    cv: Condvar,
}

impl OneShot {
    fn put(&self, r: Result<Reply>) {
        *lock(&self.result) = Some(r);
        self.cv.notify_one();
    }
}

struct Queue {
    tickets: Vec<Ticket>,
    /// Frames, `[tickets, n_in]`, and outputs, `[tickets, n_out]`, by
    /// ticket. Tickets are made as needed and reused: they number the
    /// most frames ever accepted and not yet finished (or, for a
    /// `Pending`, collected) at once.
    xs: Vec<f32>,
    ys: Vec<f32>,
    free: Vec<u32>,
    /// Frames waiting to run (at most `Shared::queue`).
    waiting: usize,
    /// Per slot: the first and last of the stream's waiting frames.
    head: Vec<u32>,
    tail: Vec<u32>,
    /// Per slot: a frame of the stream is in the step running now.
    in_flight: Vec<bool>,
    /// Per slot: the stream is in `ready`.
    in_ready: Vec<bool>,
    /// Streams with a frame waiting and none running, oldest first.
    ready: VecDeque<u32>,
    /// Steps ended so far, plus one (stamps below are step numbers).
    step_no: u64,
    /// When the last step ended, and how long it took.
    step_end: Instant,
    step_took: Duration,
    /// Per slot: `await_no` if the last main step or the catch-up step
    /// after it served the stream and it has not sent its next frame yet
    /// (the worker waits for these).
    awaited: Vec<u64>,
    /// How many slots are awaited.
    awaited_n: usize,
    /// The `step_no` after the last main step (a step that is not a
    /// catch-up), which `awaited` marks refer to.
    await_no: u64,
    /// When the last main step ended and how long it took, and when its
    /// bookkeeping ended (frames that came before then waited through it).
    main_end: Instant,
    main_took: Duration,
    main_cut: Instant,
    /// The clients' mailboxes, by client index (`None`: free).
    clients: Vec<Option<Arc<Mailbox>>>,
    client_free: Vec<u32>,
    /// Per client: the step that last woke it.
    client_woken: Vec<u64>,
    /// Per slot: the generation of its open stream (what the pool says,
    /// published by the worker), to refuse closed ids at submit.
    open: Vec<Option<u32>>,
    controls: VecDeque<(Op, Arc<OneShot>)>,
    stopping: Option<Shutdown>,
    worker_idle: bool,
    space_waiters: usize,
    /// Frames accepted so far (numbers them: `Ticket::seq`).
    accepted: u64,
    stats: BatcherStats,
}

struct Shared {
    q: Mutex<Queue>,
    /// The worker waits here for work.
    work: Condvar,
    /// Submitters wait here for room in the queue.
    space: Condvar,
    pool_tag: u32,
    capacity: usize,
    n_in: usize,
    n_out: usize,
    state_len: (usize, usize),
    max_batch: usize,
    max_wait: Duration,
    catch_up: bool,
    queue: usize,
    backpressure: Backpressure,
    /// When results of the last cohort were last taken (by a `Pending` or
    /// a [`Client`]; the step's end until one is), in ns since `epoch`: an
    /// atomic, as clients take from their own mailbox without the queue's
    /// lock.
    last_take: AtomicU64,
    epoch: Instant,
    /// The deliveries of the last cohort not taken yet.
    untaken: Takers,
}

/// Counts the deliveries of the last cohort's results (a cohort: a main
/// step and its catch-up step, if any; a delivery: a step's results into
/// one client mailbox, or one `Pending`'s result) not taken yet. One word
/// holds the cohort (the low 32 bits of its main step's `step_no`) in its
/// high half and the count in its low half, so that a late take of an
/// older cohort's results can never count for a newer one.
struct Takers(AtomicU64);

impl Takers {
    /// Cohort `cohort`'s main step made `n` deliveries.
    fn start(&self, cohort: u64, n: usize) {
        let n = u32::try_from(n).unwrap_or(u32::MAX) as u64;
        self.0
            .store((cohort as u32 as u64) << 32 | n, Ordering::Release);
    }

    /// Cohort `cohort`'s catch-up step made `n` more deliveries.
    fn add(&self, cohort: u64, n: usize) {
        let cohort = cohort as u32 as u64;
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        let _ = self
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                Some(match w >> 32 == cohort {
                    true => cohort << 32 | (w as u32).saturating_add(n) as u64,
                    false => cohort << 32 | n as u64,
                })
            });
    }

    /// Whether `cohort` is the last one and has deliveries not taken.
    fn counts(&self, cohort: u64) -> bool {
        let w = self.0.load(Ordering::Acquire);
        w >> 32 == cohort as u32 as u64 && w as u32 > 0
    }

    /// `n` deliveries of cohort `cohort` were taken: `None` if they were
    /// not the last cohort's (or every delivery was counted already), else
    /// whether they were the last of them.
    fn take(&self, cohort: u64, n: u32) -> Option<bool> {
        let cohort = cohort as u32 as u64;
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                (w >> 32 == cohort && w as u32 > 0).then(|| w - n.min(w as u32) as u64)
            })
            .ok()
            .map(|w| w as u32 <= n)
    }

    /// How many takers of the last step have not taken their results.
    fn left(&self) -> u32 {
        self.0.load(Ordering::Acquire) as u32
    }
}

impl Shared {
    fn since_epoch(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.epoch).as_nanos() as u64
    }

    fn last_take(&self) -> Instant {
        self.epoch + Duration::from_nanos(self.last_take.load(Ordering::Acquire))
    }

    /// `n` deliveries of cohort `cohort` were taken now: true if they were
    /// the last cohort's, and the last of them (the worker's wait may end
    /// sooner: wake it). The take's time is published before the count,
    /// so that a worker seeing the count at 0 sees the time too.
    fn taken_now(&self, cohort: u64, n: u32) -> bool {
        if n == 0 || !self.untaken.counts(cohort) {
            return false;
        }
        self.last_take
            .fetch_max(self.since_epoch(Instant::now()), Ordering::Release);
        self.untaken.take(cohort, n) == Some(true)
    }

    /// When the last cohort's results were all taken, if they were (or one
    /// step time after its steps' ends, if some are still out: a taker that
    /// is slow to collect does not make its streams miss the next batch).
    fn handed(&self, q: &Queue) -> Instant {
        // (After a catch-up step, the later of its cap and the main step's.)
        let cap = (q.main_end + q.main_took).max(q.step_end + q.step_took);
        match self.untaken.left() {
            0 => self.last_take().min(cap),
            _ => cap,
        }
    }
}

/// A mutex's guard, whether or not a thread panicked holding it (every
/// update of the queue leaves it consistent before anything can panic).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Continuous batching over a [`StreamPool`] for many threads: see the
/// [module docs](crate::batcher) for the rules. `Send + Sync`: share it (an `Arc`,
/// or scoped threads) and call it from any thread.
///
/// ```
/// use lstm_kernels::{Batcher, BatcherConfig, Lstm, LstmConfig, LstmWeights, StreamPool};
/// let cfg = LstmConfig::new(7, 5).with_head(3);
/// let model = Lstm::new(cfg, LstmWeights::random(&cfg, 42)?)?;
/// let batcher = Batcher::new(StreamPool::new(model, 64)?, BatcherConfig::new())?;
/// let id = batcher.open()?;
/// let y = batcher.submit(id, &[0.5; 7])?; // blocks until its step ran
/// let pending = batcher.submit_async(id, &[0.25; 7])?; // or a handle
/// let y2 = pending.wait()?; // (also a std Future)
/// assert_eq!((y.len(), y2.len()), (3, 3));
/// let pool = batcher.shutdown(lstm_kernels::Shutdown::Drain)?; // the pool back
/// assert_eq!(pool.len(), 1);
/// # Ok::<(), lstm_kernels::Error>(())
/// ```
pub struct Batcher {
    shared: Arc<Shared>,
    worker: Mutex<Option<JoinHandle<Option<StreamPool>>>>,
}

impl fmt::Debug for Batcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batcher")
            .field("capacity", &self.shared.capacity)
            .field("max_batch", &self.shared.max_batch)
            .field("max_wait", &self.shared.max_wait)
            .field("backpressure", &self.shared.backpressure)
            .finish_non_exhaustive()
    }
}

impl Batcher {
    /// Starts the worker thread, which takes `pool` (streams already open
    /// in it stay open). Every buffer is allocated here.
    pub fn new(pool: StreamPool, config: BatcherConfig) -> Result<Self> {
        let capacity = pool.capacity();
        let max_batch = match config.max_batch {
            0 => capacity,
            n => n.min(capacity),
        };
        let queue = match config.queue {
            0 => capacity.saturating_mul(2),
            n => n,
        };
        // Tickets for the queue and a batch's worth of results.
        let tickets = queue.saturating_add(max_batch);
        if tickets >= NONE as usize / 2 {
            return Err(Error::Invalid(format!(
                "a batcher's queue must hold fewer than {} frames, got {queue}",
                NONE / 2 - max_batch as u32
            )));
        }
        let (n_in, n_out) = (pool.n_input(), pool.n_output());
        let mut open = vec![None; capacity];
        for id in pool.streams() {
            open[id.slot()] = Some(id.generation());
        }
        let now = Instant::now();
        let pool_tag = pool.tag();
        let alloc_error = |what: &str, each: usize| Error::Alloc {
            what: what.into(),
            bytes: tickets.saturating_mul(each),
        };
        let mut ticket_list = Vec::new();
        ticket_list
            .try_reserve_exact(tickets)
            .map_err(|_| alloc_error("the batcher's tickets", std::mem::size_of::<Ticket>()))?;
        ticket_list.extend((0..tickets).map(|_| Ticket::free(pool_tag, now)));
        let mut free = crate::error::try_filled(tickets, 0u32, "the batcher's free tickets")?;
        for (i, f) in free.iter_mut().enumerate() {
            *f = (tickets - 1 - i) as u32;
        }
        // The worker's list of `Pending`s to wake after a step.
        let mut wake = Vec::new();
        wake.try_reserve_exact(queue)
            .map_err(|_| alloc_error("the batcher's wakers", std::mem::size_of::<Waker>()))?;
        let q = Queue {
            tickets: ticket_list,
            xs: try_zeros(
                crate::error::checked_elements(&[tickets, n_in], "the batcher's frames")?,
                "batcher frames",
            )?,
            ys: try_zeros(
                crate::error::checked_elements(&[tickets, n_out], "the batcher's outputs")?,
                "batcher outputs",
            )?,
            free,
            waiting: 0,
            head: vec![NONE; capacity],
            tail: vec![NONE; capacity],
            in_flight: vec![false; capacity],
            in_ready: vec![false; capacity],
            ready: VecDeque::with_capacity(capacity),
            step_no: 1,
            step_end: now,
            step_took: Duration::ZERO,
            awaited: vec![0; capacity],
            awaited_n: 0,
            await_no: 1,
            main_end: now,
            main_took: Duration::ZERO,
            main_cut: now,
            clients: Vec::new(),
            client_free: Vec::new(),
            client_woken: Vec::new(),
            open,
            controls: VecDeque::with_capacity(16),
            stopping: None,
            worker_idle: false,
            space_waiters: 0,
            accepted: 0,
            stats: BatcherStats::default(),
        };
        let shared = Arc::new(Shared {
            q: Mutex::new(q),
            work: Condvar::new(),
            space: Condvar::new(),
            pool_tag,
            capacity,
            n_in,
            n_out,
            state_len: pool.state_len(),
            max_batch,
            max_wait: config.max_wait,
            catch_up: config.catch_up,
            queue,
            backpressure: config.backpressure,
            last_take: AtomicU64::new(0),
            epoch: now,
            untaken: Takers(AtomicU64::new(0)),
        });
        let worker_shared = Arc::clone(&shared);
        let worker = std::thread::Builder::new()
            .name("lstm-batcher".into())
            .spawn(move || Worker::new(worker_shared, pool, wake).run())
            .map_err(|e| Error::Invalid(format!("cannot start the batcher's worker: {e}")))?;
        Ok(Batcher {
            shared,
            worker: Mutex::new(Some(worker)),
        })
    }

    /// Values in one input frame.
    pub fn n_input(&self) -> usize {
        self.shared.n_in
    }

    /// Values in one output frame.
    pub fn n_output(&self) -> usize {
        self.shared.n_out
    }

    /// The pool's capacity (streams open at once).
    pub fn capacity(&self) -> usize {
        self.shared.capacity
    }

    /// The counters so far.
    pub fn stats(&self) -> BatcherStats {
        lock(&self.shared.q).stats
    }

    /// Opens a stream (zero state); a full pool is an [`Error::Busy`].
    pub fn open(&self) -> Result<StreamId> {
        match self.control(Op::Open)? {
            Reply::Id(id) => Ok(id),
            _ => Err(Error::Invalid("the worker answered open wrongly".into())),
        }
    }

    /// Closes a stream; its frames still waiting fail, one per step as
    /// they come up (a stream opened next may get the same slot: its
    /// first frame then runs after those have failed, a step later for
    /// each; its results are its own either way).
    pub fn close(&self, id: StreamId) -> Result<()> {
        self.control(Op::Close(id)).map(|_| ())
    }

    /// Sets a stream's state to zero (before its frames still waiting).
    pub fn reset(&self, id: StreamId) -> Result<()> {
        self.control(Op::Reset(id)).map(|_| ())
    }

    /// Copies a stream's state out: see [`StreamPool::read_state`].
    pub fn read_state(&self, id: StreamId, c: &mut [f32], m: &mut [f32]) -> Result<()> {
        let (lc, lm) = self.shared.state_len;
        check_len("stream state c", c.len(), &[lc])?;
        check_len("stream state m", m.len(), &[lm])?;
        match self.control(Op::Read(id))? {
            Reply::State(sc, sm) => {
                c.copy_from_slice(&sc);
                m.copy_from_slice(&sm);
                Ok(())
            }
            _ => Err(Error::Invalid("the worker answered read wrongly".into())),
        }
    }

    /// Sets a stream's state: see [`StreamPool::write_state`].
    pub fn write_state(&self, id: StreamId, c: &[f32], m: &[f32]) -> Result<()> {
        let (lc, lm) = self.shared.state_len;
        check_len("stream state c", c.len(), &[lc])?;
        check_len("stream state m", m.len(), &[lm])?;
        self.control(Op::Write(id, c.to_vec(), m.to_vec()))
            .map(|_| ())
    }

    /// Runs `op` on the worker and waits for its result.
    fn control(&self, op: Op) -> Result<Reply> {
        let shot = Arc::new(OneShot::default());
        {
            let mut q = lock(&self.shared.q);
            if q.stopping.is_some() {
                return Err(shut_down());
            }
            q.controls.push_back((op, Arc::clone(&shot)));
            if q.worker_idle {
                self.shared.work.notify_one();
            }
        }
        let mut r = lock(&shot.result);
        loop {
            if let Some(r) = r.take() {
                return r;
            }
            r = shot.cv.wait(r).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Submits one frame of stream `id` and waits for its output.
    pub fn submit(&self, id: StreamId, frame: &[f32]) -> Result<Vec<f32>> {
        self.submit_async(id, frame)?.wait()
    }

    /// [`Batcher::submit`] into `out` (`n_output` values): allocates
    /// nothing.
    pub fn submit_into(&self, id: StreamId, frame: &[f32], out: &mut [f32]) -> Result<()> {
        check_len("output", out.len(), &[self.shared.n_out])?;
        self.submit_async(id, frame)?.wait_into(out)
    }

    /// Submits one frame of stream `id` and returns at once with a handle
    /// to its output ([`Pending::wait`], [`Pending::try_get`], or `.await`
    /// it: it is a [`Future`]). With [`Backpressure::Block`] a full queue
    /// makes this wait for room; with [`Backpressure::Busy`] it never
    /// waits. Checked here: the frame's length (an [`Error::Shape`]), the
    /// id (an [`Error::Invalid`] for another pool's or a closed stream).
    /// NaN and infinite values are accepted as [`crate::Lstm::forward`]
    /// accepts them: they reach only this stream's outputs and state.
    pub fn submit_async(&self, id: StreamId, frame: &[f32]) -> Result<Pending> {
        let sh = &*self.shared;
        check_len("frame", frame.len(), &[sh.n_in])?;
        let slot = id.slot();
        if id.pool_tag() != sh.pool_tag || slot >= sh.capacity {
            return Err(Error::Invalid(format!(
                "{id} does not belong to this batcher's pool"
            )));
        }
        let mut q = lock(&sh.q);
        let t = loop {
            if q.stopping.is_some() {
                return Err(shut_down());
            }
            if q.open[slot] != Some(id.generation()) {
                return Err(Error::Invalid(format!("{id} is closed")));
            }
            if q.waiting < sh.queue {
                break new_ticket(sh, &mut q)?;
            }
            q = wait_for_room(sh, q)?;
        };
        if enqueue(sh, &mut q, t, id, frame, NONE) {
            sh.work.notify_one();
        }
        drop(q);
        Ok(Pending {
            shared: Arc::clone(&self.shared),
            ticket: t as u32,
            taken: false,
            latency: None,
        })
    }

    /// Stops the worker and returns the pool (with every stream's state,
    /// for migration): `Drain` runs the frames already accepted first,
    /// `Fail` fails them. Submits and control calls from now on fail with
    /// [`Error::Shutdown`]; every [`Pending`] gets a result. A second
    /// shutdown is an [`Error::Shutdown`]. Dropping a batcher shuts it down
    /// with `Fail`.
    pub fn shutdown(&self, mode: Shutdown) -> Result<StreamPool> {
        {
            let mut q = lock(&self.shared.q);
            if q.stopping.is_none() {
                q.stopping = Some(mode);
            }
            self.shared.work.notify_one();
            self.shared.space.notify_all();
        }
        let handle = lock(&self.worker).take();
        match handle {
            None => Err(Error::Shutdown("the batcher was already shut down".into())),
            Some(h) => {
                h.join().ok().flatten().ok_or_else(|| {
                    Error::Shutdown("the batcher's worker stopped with a panic".into())
                })
            }
        }
    }
}

impl Drop for Batcher {
    fn drop(&mut self) {
        let _ = self.shutdown(Shutdown::Fail);
    }
}

fn shut_down() -> Error {
    Error::Shutdown("the batcher is shutting down or stopped".into())
}

impl Ticket {
    fn free(pool_tag: u32, now: Instant) -> Ticket {
        Ticket {
            status: Status::Free,
            id: StreamId::placeholder(pool_tag),
            next: NONE,
            arrived: now,
            seq: 0,
            finished: now,
            waker: None,
            client: NONE,
            abandoned: false,
        }
    }
}

/// A free ticket: a reused one, or a new one (more results are
/// uncollected than ever before).
fn new_ticket(sh: &Shared, q: &mut Queue) -> Result<usize> {
    if let Some(t) = q.free.pop() {
        return Ok(t as usize);
    }
    let t = q.tickets.len();
    if t >= NONE as usize - 1 {
        return Err(Error::Busy(format!(
            "{t} results are waiting to be collected"
        )));
    }
    let alloc = |what: &str, bytes: usize| Error::Alloc {
        what: what.into(),
        bytes,
    };
    q.tickets
        .try_reserve(1)
        .map_err(|_| alloc("a batcher ticket", std::mem::size_of::<Ticket>()))?;
    q.xs.try_reserve(sh.n_in)
        .map_err(|_| alloc("a batcher frame", 4 * sh.n_in))?;
    q.ys.try_reserve(sh.n_out)
        .map_err(|_| alloc("a batcher output", 4 * sh.n_out))?;
    q.tickets.push(Ticket::free(sh.pool_tag, Instant::now()));
    q.xs.resize(q.xs.len() + sh.n_in, 0.0);
    q.ys.resize(q.ys.len() + sh.n_out, 0.0);
    Ok(t)
}

/// Frees ticket `t` (its result collected, or its handle dropped).
fn free_ticket(q: &mut Queue, t: usize) {
    let tk = &mut q.tickets[t];
    tk.status = Status::Free;
    tk.waker = None;
    tk.client = NONE;
    tk.abandoned = false;
    q.free.push(t as u32);
}

/// The queue is full: waits for room ([`Backpressure::Block`]) or fails.
fn wait_for_room<'a>(
    sh: &'a Shared,
    mut q: MutexGuard<'a, Queue>,
) -> Result<MutexGuard<'a, Queue>> {
    match sh.backpressure {
        Backpressure::Busy => Err(Error::Busy(format!(
            "the batcher's queue is full ({} frames waiting)",
            sh.queue
        ))),
        Backpressure::Block => {
            q.space_waiters += 1;
            q = sh.space.wait(q).unwrap_or_else(|e| e.into_inner());
            q.space_waiters -= 1;
            Ok(q)
        }
    }
}

/// Queues `frame` of stream `id` (checked open) as ticket `t`, for
/// `client` (or [`NONE`]). True if the worker must be woken: it sleeps
/// until a first frame, a full batch, or the last awaited stream.
fn enqueue(sh: &Shared, q: &mut Queue, t: usize, id: StreamId, frame: &[f32], client: u32) -> bool {
    let slot = id.slot();
    q.waiting += 1;
    q.accepted += 1;
    q.xs[t * sh.n_in..(t + 1) * sh.n_in].copy_from_slice(frame);
    let now = Instant::now();
    q.tickets[t] = Ticket {
        status: Status::Queued,
        id,
        next: NONE,
        arrived: now,
        seq: q.accepted,
        finished: now,
        waker: None,
        client,
        abandoned: false,
    };
    match q.tail[slot] {
        NONE => q.head[slot] = t as u32,
        last => q.tickets[last as usize].next = t as u32,
    }
    q.tail[slot] = t as u32;
    let mut wake = false;
    if !q.in_flight[slot] && !q.in_ready[slot] {
        q.in_ready[slot] = true;
        q.ready.push_back(slot as u32);
        wake = q.ready.len() == 1 || q.ready.len() >= sh.max_batch;
    }
    if q.awaited[slot] == q.await_no {
        q.awaited[slot] = 0;
        q.awaited_n -= 1;
        wake |= q.awaited_n == 0;
    }
    wake && q.worker_idle
}

/// Unparks a thread: the waker of the blocking waits.
struct ThreadWaker(std::thread::Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

thread_local! {
    /// This thread's waker for blocking waits (made once per thread).
    static PARKER: Waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
}

/// The output of one submitted frame, to come: [`Pending::wait`] blocks
/// for it, [`Pending::try_get`] does not, and as a [`Future`] it can be
/// awaited by any executor (it needs no runtime: the worker wakes the
/// task's waker). Dropping it gives the result up.
pub struct Pending {
    shared: Arc<Shared>,
    ticket: u32,
    taken: bool,
    latency: Option<Duration>,
}

impl fmt::Debug for Pending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pending")
            .field("ticket", &self.ticket)
            .field("taken", &self.taken)
            .finish()
    }
}

impl Pending {
    /// Whether the result is there (a step ran the frame, or it failed).
    pub fn is_ready(&self) -> bool {
        let q = lock(&self.shared.q);
        !self.taken
            && matches!(
                q.tickets[self.ticket as usize].status,
                Status::Done | Status::Failed(_)
            )
    }

    /// Takes the result into `out` if it is there; `waker` (if any) is
    /// woken when it comes otherwise.
    fn take(&mut self, out: &mut OutBuf<'_>, waker: Option<&Waker>) -> Option<Result<()>> {
        if self.taken {
            return Some(Err(Error::Invalid(
                "this frame's result was already taken".into(),
            )));
        }
        let sh = &*self.shared;
        let mut q = lock(&sh.q);
        let q = &mut *q;
        let t = self.ticket as usize;
        let result = match &mut q.tickets[t].status {
            Status::Done => {
                let y = &q.ys[t * sh.n_out..(t + 1) * sh.n_out];
                match out {
                    OutBuf::Slice(s) => s.copy_from_slice(y),
                    OutBuf::Vec(v) => {
                        v.clear();
                        v.extend_from_slice(y);
                    }
                }
                Ok(())
            }
            Status::Failed(e) => Err(std::mem::replace(e, Error::Invalid(String::new()))),
            _ => {
                if let Some(w) = waker {
                    let tk = &mut q.tickets[t];
                    if !tk.waker.as_ref().is_some_and(|old| old.will_wake(w)) {
                        tk.waker = Some(w.clone());
                    }
                }
                return None;
            }
        };
        self.taken = true;
        let tk = &q.tickets[t];
        self.latency = Some(tk.finished.saturating_duration_since(tk.arrived));
        // (The last cohort's results finished at its main step's end or
        // later.)
        if tk.finished >= q.main_end && sh.taken_now(q.await_no, 1) && q.worker_idle {
            sh.work.notify_one();
        }
        free_ticket(q, t);
        Some(result)
    }

    /// Once the result has been taken (by `try_get` or a poll; `wait`
    /// consumes the handle): the time from the submit to the output being
    /// ready, as the worker stamped it — the service's latency, without
    /// the time the caller took to look.
    pub fn latency(&self) -> Option<Duration> {
        self.latency
    }

    /// The output, if the frame has run (or its error); `None` if not yet.
    pub fn try_get(&mut self) -> Option<Result<Vec<f32>>> {
        let mut v = Vec::new();
        self.take(&mut OutBuf::Vec(&mut v), None)
            .map(|r| r.map(|()| v))
    }

    /// Blocks until the frame has run; returns its output.
    pub fn wait(self) -> Result<Vec<f32>> {
        let mut v = Vec::with_capacity(self.shared.n_out);
        self.wait_buf(OutBuf::Vec(&mut v)).map(|()| v)
    }

    /// [`Pending::wait`] into `out` (`n_output` values): allocates
    /// nothing.
    pub fn wait_into(self, out: &mut [f32]) -> Result<()> {
        check_len("output", out.len(), &[self.shared.n_out])?;
        self.wait_buf(OutBuf::Slice(out))
    }

    fn wait_buf(mut self, mut out: OutBuf<'_>) -> Result<()> {
        PARKER.with(|waker| {
            loop {
                if let Some(r) = self.take(&mut out, Some(waker)) {
                    return r;
                }
                // Woken by the worker (or spuriously: take again).
                std::thread::park();
            }
        })
    }
}

enum OutBuf<'a> {
    Slice(&'a mut [f32]),
    Vec(&'a mut Vec<f32>),
}

impl Future for Pending {
    type Output = Result<Vec<f32>>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let mut v = Vec::new();
        match this.take(&mut OutBuf::Vec(&mut v), Some(cx.waker())) {
            Some(r) => Poll::Ready(r.map(|()| v)),
            None => Poll::Pending,
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if self.taken {
            return;
        }
        let sh = &*self.shared;
        let mut q = lock(&sh.q);
        let t = self.ticket as usize;
        match q.tickets[t].status {
            Status::Done | Status::Failed(_) => {
                // A result of the last step given up counts as taken.
                let last = q.tickets[t].finished >= q.main_end;
                if last && sh.taken_now(q.await_no, 1) && q.worker_idle {
                    sh.work.notify_one();
                }
                free_ticket(&mut q, t)
            }
            _ => {
                q.tickets[t].abandoned = true;
                q.tickets[t].waker = None;
            }
        }
    }
}

/// Where the worker puts a [`Client`]'s results, under the mailbox's own
/// lock (not the queue's): after a step, each client's outputs are copied
/// from the pool's rows into its mailbox, and the client is woken once its
/// own are in. The client swaps the buffers out (no copy, no allocation
/// once warm).
#[derive(Default)]
struct Mailbox {
    inbox: Mutex<Inbox>,
    cv: Condvar,
}

#[derive(Default)]
struct Inbox {
    /// The cohort (see `Takers`) of the last results put here, and how
    /// many of its steps put results here that were not taken yet.
    cohort: u64,
    units: u32,
    taken: Vec<Taken>,
    /// `n_output` values per entry of `taken` (zeros for a failed frame).
    ys: Vec<f32>,
}

impl Mailbox {
    /// Adds one result (`y` for a frame that ran); the caller wakes the
    /// client when it has added all of this step's.
    fn put(inbox: &mut Inbox, taken: Taken, y: Option<&[f32]>, n_out: usize) {
        match y {
            Some(y) => inbox.ys.extend_from_slice(y),
            None => inbox.ys.resize(inbox.ys.len() + n_out, 0.0),
        }
        inbox.taken.push(taken);
    }
}

/// Room for `need` results (`n_out` values each) in `mailbox` and in a
/// client's buffers swapped with it (`taken`, `ys`): its results are at
/// most its frames outstanding, so the worker never allocates for them.
fn reserve(
    mailbox: &Mailbox,
    taken: &mut Vec<Taken>,
    ys: &mut Vec<f32>,
    need: usize,
    n_out: usize,
) -> Result<()> {
    let alloc = |what: &str, bytes: usize| Error::Alloc {
        what: what.into(),
        bytes,
    };
    let values = need.saturating_mul(n_out);
    let mut guard = lock(&mailbox.inbox);
    let inbox = &mut *guard;
    for (t, y) in [(&mut inbox.taken, &mut inbox.ys), (taken, ys)] {
        t.try_reserve(need.saturating_sub(t.len())).map_err(|_| {
            alloc(
                "a client's results",
                need.saturating_mul(std::mem::size_of::<Taken>()),
            )
        })?;
        y.try_reserve(values.saturating_sub(y.len()))
            .map_err(|_| alloc("a client's outputs", values.saturating_mul(4)))?;
    }
    Ok(())
}

/// One frame's result taken by a [`Client`].
struct Taken {
    id: StreamId,
    error: Option<Error>,
    latency: Duration,
}

/// A handle for a thread that drives many streams of a [`Batcher`]:
/// [`Client::submit`] queues a frame for each of many streams under one
/// lock (the queue's), and [`Client::wait`] (or [`Client::collect`]) takes
/// every result that is ready from the client's own mailbox, where the
/// worker puts them after each step (no copy to take them, and not the
/// queue's lock), woken once per step rather than once per frame. The same rules hold as for frames submitted one by one (a
/// stream may have several frames outstanding; they run in order). Its
/// buffers are reused: a warm client allocates nothing. Dropping it gives
/// up the results not yet collected (their frames still run).
///
/// ```
/// use lstm_kernels::{Batcher, BatcherConfig, Lstm, LstmConfig, LstmWeights, StreamPool};
/// let cfg = LstmConfig::new(7, 5).with_head(3);
/// let model = Lstm::new(cfg, LstmWeights::random(&cfg, 42)?)?;
/// let batcher = Batcher::new(StreamPool::new(model, 64)?, BatcherConfig::new())?;
/// let ids = [batcher.open()?, batcher.open()?];
/// let mut client = batcher.client()?;
/// client.submit(&ids, &[0.5; 2 * 7])?; // one frame of each, one call
/// let mut got = 0;
/// while client.outstanding() > 0 {
///     for r in client.wait(None) {
///         assert_eq!(r.output?.len(), 3);
///         got += 1;
///     }
/// }
/// assert_eq!(got, 2);
/// # Ok::<(), lstm_kernels::Error>(())
/// ```
pub struct Client {
    shared: Arc<Shared>,
    index: u32,
    mailbox: Arc<Mailbox>,
    /// Frames submitted and not yet collected.
    outstanding: usize,
    /// Tickets of a submit in progress.
    fresh: Vec<u32>,
    /// The last collect's results and their outputs (`n_output` each).
    taken: Vec<Taken>,
    ys: Vec<f32>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("index", &self.index)
            .field("outstanding", &self.outstanding)
            .finish_non_exhaustive()
    }
}

impl Batcher {
    /// A [`Client`]: batched submits and collects for one thread driving
    /// many streams.
    pub fn client(&self) -> Result<Client> {
        let mailbox = Arc::new(Mailbox::default());
        let mut q = lock(&self.shared.q);
        if q.stopping.is_some() {
            return Err(shut_down());
        }
        let index = match q.client_free.pop() {
            Some(i) => {
                q.clients[i as usize] = Some(Arc::clone(&mailbox));
                i
            }
            None => {
                let i = q.clients.len();
                if i >= NONE as usize {
                    return Err(Error::Busy(format!("{i} clients are open")));
                }
                q.clients.push(Some(Arc::clone(&mailbox)));
                q.client_woken.push(0);
                i as u32
            }
        };
        Ok(Client {
            shared: Arc::clone(&self.shared),
            index,
            mailbox,
            outstanding: 0,
            fresh: Vec::new(),
            taken: Vec::new(),
            ys: Vec::new(),
        })
    }
}

impl Client {
    /// Frames submitted whose results have not been collected yet.
    pub fn outstanding(&self) -> usize {
        self.outstanding
    }

    /// Queues one frame for each of `ids` (`frames`: `[ids.len(), n_input]`,
    /// in the order of `ids`; a stream may appear more than once, its
    /// frames then run in that order) and returns at once. All or none:
    /// a wrong length, an id of another pool or a closed stream, a
    /// shutdown, or (with [`Backpressure::Busy`]) a queue without room for
    /// all of them is an error and queues nothing. With
    /// [`Backpressure::Block`] it waits until there is room for all; more
    /// frames than the queue holds is an [`Error::Invalid`]. Room for the
    /// results of every frame outstanding (waiting, running, or finished and
    /// not collected) is reserved here, so that a step never allocates for
    /// them; a failed reservation is an [`Error::Alloc`].
    pub fn submit(&mut self, ids: &[StreamId], frames: &[f32]) -> Result<()> {
        let sh = &*self.shared;
        let k = ids.len();
        check_len("frames", frames.len(), &[k, sh.n_in])?;
        if k == 0 {
            return Ok(());
        }
        if k > sh.queue {
            return Err(Error::Invalid(format!(
                "{k} frames in one submit, but the batcher's queue holds {}",
                sh.queue
            )));
        }
        for (i, id) in ids.iter().enumerate() {
            if id.pool_tag() != sh.pool_tag || id.slot() >= sh.capacity {
                return Err(Error::Invalid(format!(
                    "ids[{i}]: {id} does not belong to this batcher's pool"
                )));
            }
        }
        let need = self.outstanding.saturating_add(k);
        reserve(&self.mailbox, &mut self.taken, &mut self.ys, need, sh.n_out)?;
        let mut q = lock(&sh.q);
        loop {
            if q.stopping.is_some() {
                return Err(shut_down());
            }
            for (i, id) in ids.iter().enumerate() {
                if q.open[id.slot()] != Some(id.generation()) {
                    return Err(Error::Invalid(format!("ids[{i}]: {id} is closed")));
                }
            }
            if q.waiting + k <= sh.queue {
                break;
            }
            q = wait_for_room(sh, q)?;
        }
        // Every ticket first, so that a failure queues nothing.
        self.fresh.clear();
        for _ in 0..k {
            match new_ticket(sh, &mut q) {
                Ok(t) => self.fresh.push(t as u32),
                Err(e) => {
                    for &t in &self.fresh {
                        q.free.push(t);
                    }
                    return Err(e);
                }
            }
        }
        let mut wake = false;
        for (i, (&id, &t)) in ids.iter().zip(&self.fresh).enumerate() {
            let frame = &frames[i * sh.n_in..(i + 1) * sh.n_in];
            wake |= enqueue(sh, &mut q, t as usize, id, frame, self.index);
        }
        self.outstanding += k;
        if wake {
            sh.work.notify_one();
        }
        Ok(())
    }

    /// Takes every result that is ready now (never blocks).
    pub fn collect(&mut self) -> Outputs<'_> {
        self.take(None);
        self.ready()
    }

    /// Waits until at least one result is ready (or `timeout` has passed,
    /// or nothing is outstanding), then takes every result that is ready.
    pub fn wait(&mut self, timeout: Option<Duration>) -> Outputs<'_> {
        // A timeout past what an `Instant` holds is no timeout.
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        self.take(Some(deadline));
        self.ready()
    }

    fn ready(&mut self) -> Outputs<'_> {
        Outputs {
            taken: self.taken.iter_mut(),
            ys: &self.ys,
            n_out: self.shared.n_out,
        }
    }

    /// Swaps the finished frames' results out of the mailbox, first
    /// waiting for some (`wait`: until the deadline, or for ever if that
    /// is `None`) if there are none and frames are outstanding.
    fn take(&mut self, wait: Option<Option<Instant>>) {
        self.taken.clear();
        self.ys.clear();
        let mut inbox = lock(&self.mailbox.inbox);
        if let Some(deadline) = wait {
            while inbox.taken.is_empty() && self.outstanding > 0 {
                inbox = match deadline {
                    None => self
                        .mailbox
                        .cv
                        .wait(inbox)
                        .unwrap_or_else(|e| e.into_inner()),
                    Some(d) => {
                        let now = Instant::now();
                        if now >= d {
                            break;
                        }
                        self.mailbox
                            .cv
                            .wait_timeout(inbox, d - now)
                            .unwrap_or_else(|e| e.into_inner())
                            .0
                    }
                };
            }
        }
        std::mem::swap(&mut inbox.taken, &mut self.taken);
        std::mem::swap(&mut inbox.ys, &mut self.ys);
        let (cohort, units) = (inbox.cohort, std::mem::take(&mut inbox.units));
        drop(inbox);
        let n = self.taken.len();
        if n > 0 {
            // More results than frames outstanding cannot be: the worker
            // delivers each of this client's tickets once.
            self.outstanding = self.outstanding.saturating_sub(n);
            // A take of the last step's results counts for the deadline;
            // the last of them wakes the worker if it waits.
            let sh = &*self.shared;
            if sh.taken_now(cohort, units) {
                let q = lock(&sh.q);
                if q.worker_idle {
                    sh.work.notify_one();
                }
            }
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        // Results of the last step left in the mailbox count as taken.
        let (cohort, units) = {
            let inbox = lock(&self.mailbox.inbox);
            (inbox.cohort, inbox.units)
        };
        let last = self.shared.taken_now(cohort, units);
        let mut guard = lock(&self.shared.q);
        let q = &mut *guard;
        if last && q.worker_idle {
            self.shared.work.notify_one();
        }
        if self.outstanding > 0 {
            // Its frames still to run: their results go nowhere. (A
            // client's finished frames hold no ticket: their results are
            // in its mailbox, dropped with it.)
            for tk in q.tickets.iter_mut() {
                if tk.client == self.index && matches!(tk.status, Status::Queued | Status::Running)
                {
                    tk.abandoned = true;
                    tk.client = NONE;
                }
            }
        }
        q.clients[self.index as usize] = None;
        q.client_free.push(self.index);
    }
}

/// The results a [`Client`] took: an iterator of [`Collected`], in the
/// order their steps ran (so a stream's outputs come in its frames'
/// order).
pub struct Outputs<'a> {
    taken: std::slice::IterMut<'a, Taken>,
    ys: &'a [f32],
    n_out: usize,
}

impl fmt::Debug for Outputs<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Outputs")
            .field("left", &self.taken.len())
            .finish_non_exhaustive()
    }
}

/// One frame's result from [`Client::wait`] or [`Client::collect`].
#[derive(Debug)]
pub struct Collected<'a> {
    /// The frame's stream.
    pub id: StreamId,
    /// Its output (`n_output` values), or why it failed (its stream was
    /// closed first, the batcher shut down, the step failed).
    pub output: Result<&'a [f32]>,
    /// From the submit to the output being ready, stamped by the worker.
    pub latency: Duration,
}

impl<'a> Iterator for Outputs<'a> {
    type Item = Collected<'a>;
    fn next(&mut self) -> Option<Collected<'a>> {
        let t = self.taken.next()?;
        let (y, rest) = self.ys.split_at(self.n_out);
        self.ys = rest;
        Some(Collected {
            id: t.id,
            output: match t.error.take() {
                None => Ok(y),
                Some(e) => Err(e),
            },
            latency: t.latency,
        })
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        self.taken.size_hint()
    }
}

impl ExactSizeIterator for Outputs<'_> {}

/// The worker thread: owns the pool; forms batches, runs them, and
/// resolves every ticket and control call it accepted, also when it
/// stops (see its `Drop`).
struct Worker {
    shared: Arc<Shared>,
    pool: Option<StreamPool>,
    tickets: Vec<u32>,
    ids: Vec<StreamId>,
    /// The ids of the batch still open when it runs.
    open_ids: Vec<StreamId>,
    /// Per batch row: whether its stream was open when the step ran.
    ok: Vec<bool>,
    controls: VecDeque<(Op, Arc<OneShot>)>,
    /// Control calls run, their answers not yet given.
    answers: Vec<(Arc<OneShot>, Result<Reply>)>,
    wake: Vec<Waker>,
    /// The clients with results after a step (each once, by index), and
    /// the results for them.
    boxes: Vec<(u32, Arc<Mailbox>)>,
    deliveries: Vec<Delivery>,
    /// The batch taken is a catch-up step (see `Due::CatchUp`).
    catch_up: bool,
}

/// One result for a [`Client`], to be put in its mailbox after the step
/// (with no queue lock held).
struct Delivery {
    client: u32,
    /// The frame's batch row.
    row: u32,
    taken: Taken,
}

impl Worker {
    fn new(shared: Arc<Shared>, pool: StreamPool, wake: Vec<Waker>) -> Self {
        let b = shared.max_batch;
        Worker {
            tickets: Vec::with_capacity(b),
            ids: Vec::with_capacity(b),
            open_ids: Vec::with_capacity(b),
            ok: Vec::with_capacity(b),
            controls: VecDeque::with_capacity(16),
            answers: Vec::with_capacity(16),
            wake,
            boxes: Vec::new(),
            deliveries: Vec::with_capacity(b),
            catch_up: false,
            pool: Some(pool),
            shared,
        }
    }

    fn run(mut self) -> Option<StreamPool> {
        while self.next_batch() {
            self.run_controls();
            if !self.tickets.is_empty() {
                self.step();
            }
        }
        // Whatever is left fails (in `drop`), and the pool goes back.
        self.pool.take()
    }

    /// Waits for work and takes it out of the queue: the control calls,
    /// and a batch if one is due. False when it is time to stop.
    fn next_batch(&mut self) -> bool {
        let sh = Arc::clone(&self.shared);
        let mut q = lock(&sh.q);
        let due = loop {
            if q.stopping == Some(Shutdown::Fail) {
                return false;
            }
            let due = batch_due(&sh, &q);
            if !q.controls.is_empty() || matches!(due, Due::Now | Due::CatchUp) {
                break due;
            }
            if q.stopping == Some(Shutdown::Drain) && matches!(due, Due::Nothing) {
                return false;
            }
            q.worker_idle = true;
            q = match due {
                Due::At(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    sh.work
                        .wait_timeout(q, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
                _ => sh.work.wait(q).unwrap_or_else(|e| e.into_inner()),
            };
            q.worker_idle = false;
        };
        let q = &mut *q;
        std::mem::swap(&mut self.controls, &mut q.controls);
        self.catch_up = match due {
            Due::Now => false,
            Due::CatchUp => true,
            _ => return true,
        };
        while self.tickets.len() < sh.max_batch {
            // A catch-up step takes the frames that waited through the
            // last main step (a prefix of `ready`: they became ready before
            // it ended, every later frame after).
            let Some(&s) = q.ready.front() else { break };
            let s = s as usize;
            if self.catch_up && q.tickets[q.head[s] as usize].arrived >= q.main_cut {
                break;
            }
            q.ready.pop_front();
            q.in_ready[s] = false;
            let t = q.head[s] as usize;
            q.head[s] = q.tickets[t].next;
            if q.head[s] == NONE {
                q.tail[s] = NONE;
            }
            q.in_flight[s] = true;
            q.waiting -= 1;
            q.tickets[t].status = Status::Running;
            self.tickets.push(t as u32);
            self.ids.push(q.tickets[t].id);
        }
        if q.space_waiters > 0 && !self.tickets.is_empty() {
            sh.space.notify_all();
        }
        true
    }

    /// Runs the control calls taken (no lock held), publishes which
    /// streams are open, then answers them.
    fn run_controls(&mut self) {
        if self.controls.is_empty() {
            return;
        }
        let Some(pool) = self.pool.as_mut() else {
            return;
        };
        let mut changed: Vec<(usize, Option<u32>)> = Vec::new();
        // One at a time, the answers kept in the worker: should a pool
        // operation panic, `drop` answers every call taken.
        while let Some((op, shot)) = self.controls.pop_front() {
            let r = match op {
                Op::Open => pool.open().map(|id| {
                    changed.push((id.slot(), Some(id.generation())));
                    Reply::Id(id)
                }),
                Op::Close(id) => pool.close(id).map(|()| {
                    changed.push((id.slot(), None));
                    Reply::Done
                }),
                Op::Reset(id) => pool.reset(id).map(|()| Reply::Done),
                Op::Read(id) => {
                    let (lc, lm) = pool.state_len();
                    let (mut c, mut m) = (vec![0.0; lc], vec![0.0; lm]);
                    pool.read_state(id, &mut c, &mut m)
                        .map(|()| Reply::State(c, m))
                }
                Op::Write(id, c, m) => pool.write_state(id, &c, &m).map(|()| Reply::Done),
            };
            self.answers.push((shot, r));
        }
        if !changed.is_empty() {
            let mut q = lock(&self.shared.q);
            for (slot, g) in changed {
                q.open[slot] = g;
                if q.awaited[slot] == q.await_no {
                    q.awaited[slot] = 0;
                    q.awaited_n -= 1;
                }
            }
        }
        for (shot, r) in self.answers.drain(..) {
            shot.put(r);
        }
    }

    /// Runs the batch taken and hands the results back: the frames go
    /// from the queue straight into the pool's rows (under the queue's
    /// lock); the kernels run with no lock held; then, under the lock, the
    /// tickets' bookkeeping and the outputs of `Pending` frames into the
    /// queue's `ys`; after it, a [`Client`]'s outputs from the pool's rows
    /// straight into its mailbox.
    fn step(&mut self) {
        let Some(pool) = self.pool.as_mut() else {
            return;
        };
        let sh = &*self.shared;
        let (n, p) = (sh.n_in, sh.n_out);
        let b = self.tickets.len();
        // A stream closed since its frame was accepted fails that frame;
        // the others run.
        self.ok.clear();
        self.open_ids.clear();
        for i in 0..b {
            let ok = pool.is_open(self.ids[i]);
            self.ok.push(ok);
            if ok {
                self.open_ids.push(self.ids[i]);
            }
        }
        let k = self.open_ids.len();
        let start = Instant::now();
        let begun = pool.begin(&self.open_ids);
        if begun.is_ok() {
            let q = lock(&sh.q);
            for i in (0..b).filter(|&i| self.ok[i]) {
                let t = self.tickets[i] as usize;
                if let Some(row) = pool.input_mut(self.ids[i]) {
                    row.copy_from_slice(&q.xs[t * n..(t + 1) * n]);
                }
            }
        }
        // Which of the pool's output buffers holds the outputs.
        let result = match k {
            0 => begun.map(|()| 0),
            _ => begun.and_then(|()| pool.run(k)),
        };
        let finished = Instant::now();
        let took = finished - start;
        let mut guard = lock(&sh.q);
        let q = &mut *guard;
        q.stats.steps += 1;
        q.stats.step_time += took;
        q.stats.largest_batch = q.stats.largest_batch.max(k);
        // The streams served now are awaited until they send again; after
        // a catch-up step, as well as those the main step before it served.
        q.step_no += 1;
        q.step_end = finished;
        q.step_took = took;
        if self.catch_up {
            q.stats.catch_ups += 1;
        } else {
            (q.main_end, q.main_took) = (finished, took);
            q.await_no = q.step_no;
            q.awaited_n = 0;
        }
        // `Pending`s that will take a result of this step.
        let mut pendings = 0;
        for i in 0..b {
            let t = self.tickets[i] as usize;
            let tk = &mut q.tickets[t];
            let s = tk.id.slot();
            let client = tk.client;
            let to_client = client != NONE && !tk.abandoned;
            pendings += usize::from(client == NONE && !tk.abandoned);
            tk.status = if !self.ok[i] {
                q.stats.failed += 1;
                Status::Failed(Error::Invalid(format!(
                    "{} was closed before its frame ran",
                    tk.id
                )))
            } else {
                let y = result.as_ref().ok().and_then(|&l| pool.output(l, tk.id));
                match (&result, y) {
                    (Ok(_), Some(y)) => {
                        q.stats.frames += 1;
                        // A client's output goes straight from the pool's
                        // row to its mailbox, after the lock.
                        if !to_client {
                            q.ys[t * p..(t + 1) * p].copy_from_slice(y);
                        }
                        Status::Done
                    }
                    (Ok(_), None) => {
                        q.stats.failed += 1;
                        Status::Failed(Error::Invalid(format!("{} has no output row", tk.id)))
                    }
                    (Err(e), _) => {
                        q.stats.failed += 1;
                        Status::Failed(Error::Invalid(format!("the step failed: {e}")))
                    }
                }
            };
            let tk = &mut q.tickets[t];
            tk.finished = finished;
            if tk.abandoned {
                free_ticket(q, t);
            } else if let Some(w) = tk.waker.take() {
                self.wake.push(w);
            } else if to_client {
                let error = match &mut tk.status {
                    Status::Failed(e) => Some(std::mem::replace(e, Error::Invalid(String::new()))),
                    _ => None,
                };
                self.deliveries.push(Delivery {
                    client,
                    row: i as u32,
                    taken: Taken {
                        id: tk.id,
                        error,
                        latency: finished.saturating_duration_since(tk.arrived),
                    },
                });
                free_ticket(q, t);
                let c = client as usize;
                if q.client_woken[c] != q.step_no {
                    q.client_woken[c] = q.step_no;
                    if let Some(mailbox) = &q.clients[c] {
                        self.boxes.push((client, Arc::clone(mailbox)));
                    }
                }
            }
            q.in_flight[s] = false;
            if q.head[s] != NONE {
                if !q.in_ready[s] {
                    q.in_ready[s] = true;
                    q.ready.push_back(s as u32);
                }
            } else if self.ok[i] && q.awaited[s] != q.await_no {
                q.awaited[s] = q.await_no;
                q.awaited_n += 1;
            }
        }
        let deliveries = self.boxes.len() + pendings;
        if self.catch_up {
            sh.last_take
                .fetch_max(sh.since_epoch(finished), Ordering::Release);
            sh.untaken.add(q.await_no, deliveries);
        } else {
            sh.last_take
                .store(sh.since_epoch(finished), Ordering::Release);
            sh.untaken.start(q.await_no, deliveries);
            // Every frame in the queue now waited through the step (no
            // submit could come in while the bookkeeping held the lock):
            // the catch-up step's, a prefix of `ready`.
            q.main_cut = Instant::now();
        }
        let cohort = q.await_no;
        drop(guard);
        // Each client's results, client by client (from the last), each
        // client woken as soon as its own are in (the first start their
        // next frames while the others' are copied); what is left in
        // `deliveries` and `boxes` is what is not handed over yet (see
        // `drop`). Then the `Pending` wakers (user code, which may panic:
        // by then every client has its results).
        self.deliveries.sort_unstable_by_key(|d| (d.client, d.row));
        self.boxes.sort_unstable_by_key(|b| b.0);
        while let Some((client, mailbox)) = self.boxes.pop() {
            let from = self.deliveries.partition_point(|d| d.client < client);
            let mut inbox = lock(&mailbox.inbox);
            for d in self.deliveries.drain(from..) {
                let y = match (&d.taken.error, &result) {
                    (None, Ok(l)) => pool.output(*l, d.taken.id),
                    _ => None,
                };
                Mailbox::put(&mut inbox, d.taken, y, p);
            }
            if inbox.cohort != cohort {
                (inbox.cohort, inbox.units) = (cohort, 0);
            }
            inbox.units = inbox.units.saturating_add(1);
            drop(inbox);
            mailbox.cv.notify_one();
        }
        self.deliveries.clear();
        // One at a time: if a waker panics, the ones not yet called stay
        // in `wake` for `drop`, which calls them.
        while let Some(w) = self.wake.pop() {
            w.wake();
        }
        self.tickets.clear();
        self.ids.clear();
    }
}

/// When the next batch runs (see the module docs' rules).
enum Due {
    /// No frame waits.
    Nothing,
    Now,
    /// Now, only the frames that waited through the last main step: they
    /// run while the streams it served are on their way back, rather than
    /// a whole step later with them (see the module docs).
    CatchUp,
    /// At this time, unless the batch fills or the awaited streams come
    /// back first (a submit wakes the worker then).
    At(Instant),
    /// When the batch fills or the awaited streams come back (`max_wait`
    /// reaches beyond what an `Instant` can hold).
    Unbounded,
}

fn batch_due(sh: &Shared, q: &Queue) -> Due {
    let Some(&s) = q.ready.front() else {
        return Due::Nothing;
    };
    if q.ready.len() >= sh.max_batch || q.stopping.is_some() || q.awaited_n == 0 {
        return Due::Now;
    }
    let oldest = q.tickets[q.head[s as usize] as usize].arrived;
    // (A catch-up step ran after the last main step if the step number
    // moved on from the main step's.)
    let caught_up = q.step_no != q.await_no;
    if sh.catch_up && !caught_up && oldest < q.main_cut {
        return Due::CatchUp;
    }
    // The awaited streams' clients had their outputs at the last take,
    // counted at most one step time (the last step's) after its end.
    let handed = sh.handed(q);
    // A `max_wait` too long for an `Instant` is no deadline at all.
    match oldest.max(handed).checked_add(sh.max_wait) {
        Some(deadline) if Instant::now() >= deadline => Due::Now,
        Some(deadline) => Due::At(deadline),
        None => Due::Unbounded,
    }
}

impl Drop for Worker {
    /// Resolves everything still accepted with [`Error::Shutdown`] — also
    /// if the worker panicked, so that no caller waits forever.
    fn drop(&mut self) {
        let sh = Arc::clone(&self.shared);
        let mut guard = lock(&sh.q);
        let q = &mut *guard;
        if q.stopping.is_none() {
            q.stopping = Some(Shutdown::Fail);
        }
        let mut wake = std::mem::take(&mut self.wake);
        // Clients' results of a step whose hand-over did not finish (the
        // worker panicked after the step): they fail, first, in row order.
        let mut failed: Vec<(Arc<Mailbox>, Taken)> = Vec::new();
        self.deliveries.sort_unstable_by_key(|d| d.row);
        for d in self.deliveries.drain(..) {
            if let Some((_, mailbox)) = self.boxes.iter().find(|b| b.0 == d.client) {
                let taken = Taken {
                    error: Some(Error::Shutdown(
                        "the batcher's worker stopped before handing this result over".into(),
                    )),
                    ..d.taken
                };
                failed.push((Arc::clone(mailbox), taken));
            }
        }
        self.boxes.clear();
        // Then the clients' frames still waiting or running, in the order
        // they were accepted (so each stream's in its own order).
        let mut pending: Vec<(u64, Arc<Mailbox>, Taken)> = Vec::new();
        for t in 0..q.tickets.len() {
            if matches!(q.tickets[t].status, Status::Queued | Status::Running) {
                q.stats.failed += 1;
                q.tickets[t].status = Status::Failed(shut_down());
                let client = q.tickets[t].client as usize;
                if q.tickets[t].abandoned {
                    free_ticket(q, t);
                } else if let Some(w) = q.tickets[t].waker.take() {
                    wake.push(w);
                } else if let Some(Some(mailbox)) = q.clients.get(client) {
                    let tk = &q.tickets[t];
                    let taken = Taken {
                        id: tk.id,
                        error: Some(shut_down()),
                        latency: Instant::now().saturating_duration_since(tk.arrived),
                    };
                    pending.push((tk.seq, Arc::clone(mailbox), taken));
                    free_ticket(q, t);
                }
            }
        }
        pending.sort_unstable_by_key(|p| p.0);
        failed.extend(pending.into_iter().map(|(_, m, t)| (m, t)));
        q.ready.clear();
        q.waiting = 0;
        q.head.fill(NONE);
        q.tail.fill(NONE);
        let controls: Vec<_> = q
            .controls
            .drain(..)
            .chain(self.controls.drain(..))
            .map(|(_, shot)| shot)
            .chain(self.answers.drain(..).map(|(shot, _)| shot))
            .collect();
        sh.space.notify_all();
        drop(guard);
        for shot in controls {
            shot.put(Err(shut_down()));
        }
        for (mailbox, taken) in failed {
            Mailbox::put(&mut lock(&mailbox.inbox), taken, None, sh.n_out);
            mailbox.cv.notify_one();
        }
        // User code last (a waker may panic).
        for w in wake {
            w.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Takes count only for the last cohort, and the last one says so; a
    /// catch-up step adds to its cohort's count; a later cohort's start
    /// forgets the earlier's.
    #[test]
    fn takers_count_the_last_cohorts_takes_only() {
        let t = Takers(AtomicU64::new(0));
        assert_eq!((t.left(), t.take(0, 1)), (0, None), "no step yet");
        t.start(5, 2);
        assert!(t.counts(5) && !t.counts(4));
        assert_eq!(
            (t.take(4, 1), t.left()),
            (None, 2),
            "an older cohort's take"
        );
        assert_eq!((t.take(5, 1), t.left()), (Some(false), 1));
        t.add(5, 2); // its catch-up step
        assert_eq!(
            (t.take(5, 2), t.left()),
            (Some(false), 1),
            "two deliveries at once"
        );
        assert_eq!(
            (t.take(5, 3), t.left()),
            (Some(true), 0),
            "more than are left"
        );
        assert_eq!(
            (t.take(5, 1), t.left()),
            (None, 0),
            "more takes than deliveries"
        );
        assert!(!t.counts(5));
        t.add(6, 1); // a catch-up of a cohort not started: starts it
        assert_eq!((t.take(5, 1), t.take(6, 1)), (None, Some(true)));
        t.start(7, 1);
        assert_eq!(t.take(6, 1), None, "cohort 6's take after cohort 7 started");
        // Cohorts are compared modulo 2^32, counts saturate.
        t.start((7 << 32) | 9, usize::MAX);
        t.add(9, 5);
        assert_eq!((t.take(9, 1), t.left()), (Some(false), u32::MAX - 1));
        assert_eq!(t.take(10, 1), None);
    }
}
