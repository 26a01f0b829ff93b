//! The threads of a hidden-unit split: the calling thread runs part 0 and
//! a team of helper threads, started once with the model's pool, run the
//! others, all at once (the parts meet at barriers, so every part must be
//! running). Unlike rayon's `broadcast`, a call allocates nothing: the
//! job is a reference to the caller's closure, which the caller keeps
//! alive until every helper is done with it.
//!
//! Helpers spin briefly after each call (the next step of a stream usually
//! follows within microseconds), then sleep on a condition variable. One
//! call at a time: a call that finds the team busy (two threads stepping
//! models that share a pool at once) waits for it — running its parts
//! next to the other call's would put two threads on each core, spinning
//! at barriers. The team is started by the first split call of its pool.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A model's threads: its rayon pool (chunks of a batch) and the team of
/// its hidden-unit splits, started by the first split.
#[derive(Debug)]
pub(crate) struct Threads {
    pub(crate) pool: rayon::ThreadPool,
    team: OnceLock<Team>,
}

impl Threads {
    pub(crate) fn new(pool: rayon::ThreadPool) -> Threads {
        Threads {
            pool,
            team: OnceLock::new(),
        }
    }

    /// The split team: one helper per pool thread but one (the caller
    /// runs a part).
    pub(crate) fn team(&self) -> &Team {
        self.team
            .get_or_init(|| Team::new(self.pool.current_num_threads().saturating_sub(1)))
    }
}

std::thread_local! {
    /// Set while this thread runs a part of a team's call.
    static IN_PART: Cell<bool> = const { Cell::new(false) };
}

/// Marks the running thread as inside a part until dropped.
struct InPart(bool);

impl InPart {
    fn enter() -> InPart {
        InPart(IN_PART.with(|c| c.replace(true)))
    }
}

impl Drop for InPart {
    fn drop(&mut self) {
        IN_PART.with(|c| c.set(self.0));
    }
}

/// A call's job with its lifetime erased (see [`Team::run`]).
#[derive(Clone, Copy)]
struct JobRef {
    f: *const (dyn Fn(usize) + Sync + 'static),
    parts: usize,
}

// SAFETY: the closure behind `f` is `Sync`, and `Team::run` keeps it alive
// until every helper that read the reference is done with it.
unsafe impl Send for JobRef {}

struct Shared {
    /// The current call's job (`None` between calls).
    job: Mutex<Option<JobRef>>,
    /// Woken when `generation` moves or `stop` is set.
    wake: Condvar,
    /// Bumped (under `job`'s lock) by each call.
    generation: AtomicU64,
    /// Helpers done with the current call's part.
    done: AtomicUsize,
    /// A helper's part panicked in the current call.
    panicked: AtomicBool,
    stop: AtomicBool,
}

/// How long a helper spins for the next call before it sleeps.
const SPIN: Duration = Duration::from_micros(100);

/// See the module docs.
pub(crate) struct Team {
    shared: Arc<Shared>,
    helpers: Vec<JoinHandle<()>>,
    /// Held for a call.
    busy: Mutex<()>,
}

impl std::fmt::Debug for Team {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Team({} helpers)", self.helpers.len())
    }
}

impl Team {
    /// A team of up to `helpers` threads (fewer if the system refuses to
    /// start them: [`Team::run`] then declines splits that need more).
    pub(crate) fn new(helpers: usize) -> Team {
        let shared = Arc::new(Shared {
            job: Mutex::new(None),
            wake: Condvar::new(),
            generation: AtomicU64::new(0),
            done: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            stop: AtomicBool::new(false),
        });
        let helpers = (0..helpers)
            .map_while(|i| {
                let s = Arc::clone(&shared);
                std::thread::Builder::new()
                    .name(format!("lstm-split-{}", i + 1))
                    .spawn(move || helper(&s, i + 1))
                    .ok()
            })
            .collect();
        Team {
            shared,
            helpers,
            busy: Mutex::new(()),
        }
    }

    /// Runs `f(part)` for every part `0..parts` at once: part 0 on the
    /// calling thread, the others on helpers; returns when all are done,
    /// after waiting for another thread's call if there is one. `false`
    /// (and nothing run) if the team has too few helpers or the calling
    /// thread is itself running a part (a split inside a split would wait
    /// for itself).
    pub(crate) fn run(&self, parts: usize, f: &(dyn Fn(usize) + Sync)) -> bool {
        if parts == 0 || parts - 1 > self.helpers.len() || IN_PART.with(|c| c.get()) {
            return false;
        }
        let busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        crate::engine::diagnostics::record_split();
        let s = &*self.shared;
        let erased: *const (dyn Fn(usize) + Sync + '_) = f;
        // SAFETY: only the lifetime changes (same fat-pointer layout). The
        // pointer is dereferenced only by helpers between this publication
        // and the wait below (`Finish`), which does not return — not even
        // by unwinding from part 0 — before every helper that runs a part
        // is done with it; the job is cleared before `run` returns, so no
        // later reader sees it.
        let f_static: *const (dyn Fn(usize) + Sync + 'static) =
            unsafe { std::mem::transmute(erased) };
        {
            let mut job = s.job.lock().unwrap_or_else(|e| e.into_inner());
            *job = Some(JobRef { f: f_static, parts });
            s.done.store(0, Ordering::Relaxed);
            s.panicked.store(false, Ordering::Relaxed);
            s.generation.fetch_add(1, Ordering::Release);
        }
        s.wake.notify_all();
        /// Waits for the helpers' parts when dropped (also while part 0
        /// unwinds), then clears the job (the team is freed after it).
        struct Finish<'a> {
            team: &'a Team,
            helpers: usize,
        }
        impl Drop for Finish<'_> {
            fn drop(&mut self) {
                let s = &*self.team.shared;
                let start = Instant::now();
                while s.done.load(Ordering::Acquire) < self.helpers {
                    if start.elapsed() < SPIN {
                        std::hint::spin_loop();
                    } else {
                        std::thread::yield_now();
                    }
                }
                *s.job.lock().unwrap_or_else(|e| e.into_inner()) = None;
            }
        }
        let finish = Finish {
            team: self,
            helpers: parts - 1,
        };
        {
            let _part = InPart::enter();
            f(0);
        }
        drop(finish);
        drop(busy);
        assert!(
            !s.panicked.load(Ordering::Acquire),
            "a part of a hidden-unit split panicked"
        );
        true
    }
}

/// Helper `idx`'s loop: runs part `idx` of each call that has that many
/// parts.
fn helper(s: &Shared, idx: usize) {
    let mut seen = 0u64;
    loop {
        // Spin for the next call, then sleep until it comes.
        let start = Instant::now();
        while s.generation.load(Ordering::Acquire) == seen
            && !s.stop.load(Ordering::Acquire)
            && start.elapsed() < SPIN
        {
            std::hint::spin_loop();
        }
        let job = {
            let mut job = s.job.lock().unwrap_or_else(|e| e.into_inner());
            while s.generation.load(Ordering::Acquire) == seen && !s.stop.load(Ordering::Acquire) {
                job = s.wake.wait(job).unwrap_or_else(|e| e.into_inner());
            }
            if s.stop.load(Ordering::Acquire) {
                return;
            }
            seen = s.generation.load(Ordering::Acquire);
            *job
        };
        let Some(job) = job else { continue };
        if idx >= job.parts {
            continue;
        }
        // SAFETY: `Team::run` keeps the closure alive until this helper's
        // `done` below (see there).
        let f = unsafe { &*job.f };
        let part = InPart::enter();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(idx)));
        drop(part);
        if r.is_err() {
            s.panicked.store(true, Ordering::Release);
        }
        s.done.fetch_add(1, Ordering::AcqRel);
    }
}

impl Drop for Team {
    fn drop(&mut self) {
        {
            let _job = self.shared.job.lock().unwrap_or_else(|e| e.into_inner());
            self.shared.stop.store(true, Ordering::Release);
        }
        self.shared.wake.notify_all();
        for h in self.helpers.drain(..) {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Team;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Every part runs once per call, at the same time (a barrier between
    /// them would otherwise hang), call after call; a busy team declines.
    #[test]
    fn every_part_runs_once_and_at_once() {
        let team = Team::new(3);
        for parts in [1, 2, 3, 4, 2] {
            let ran: Vec<AtomicUsize> = (0..4).map(|_| AtomicUsize::new(0)).collect();
            let barrier = std::sync::Barrier::new(parts);
            assert!(team.run(parts, &|p| {
                barrier.wait();
                ran[p].fetch_add(1, Ordering::Relaxed);
            }));
            for (p, r) in ran.iter().enumerate() {
                assert_eq!(
                    r.load(Ordering::Relaxed),
                    usize::from(p < parts),
                    "part {p}"
                );
            }
        }
        assert!(!team.run(5, &|_| {}), "more parts than helpers + 1");
        // A call from inside a part declines (on the caller's part and on
        // a helper's).
        let inner = AtomicUsize::new(0);
        assert!(team.run(2, &|_| {
            if !team.run(2, &|_| {}) {
                inner.fetch_add(1, Ordering::Relaxed);
            }
        }));
        assert_eq!(inner.load(Ordering::Relaxed), 2);
        // Calls from several threads at once wait for each other.
        let total = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..3 {
                s.spawn(|| {
                    for _ in 0..50 {
                        let b = std::sync::Barrier::new(3);
                        assert!(team.run(3, &|_| {
                            b.wait();
                            total.fetch_add(1, Ordering::Relaxed);
                        }));
                    }
                });
            }
        });
        assert_eq!(total.load(Ordering::Relaxed), 3 * 50 * 3);
        // After a sleep the helpers wake for the next call.
        std::thread::sleep(std::time::Duration::from_millis(5));
        let n = AtomicUsize::new(0);
        assert!(team.run(4, &|_| {
            n.fetch_add(1, Ordering::Relaxed);
        }));
        assert_eq!(n.load(Ordering::Relaxed), 4);
    }

    /// A helper's panic reaches the caller, and the team still works.
    #[test]
    fn a_panicking_part_reaches_the_caller() {
        let team = Team::new(1);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            team.run(2, &|p| {
                if p == 1 {
                    panic!("part 1");
                }
            })
        }));
        assert!(r.is_err());
        assert!(team.run(2, &|_| {}));
    }

    /// A part that panics before a barrier the others wait at (as the
    /// driver's parts do between phases) poisons it: the call panics in
    /// its caller instead of hanging, whichever part panicked, and the
    /// team still works afterwards.
    #[test]
    fn a_panic_before_a_barrier_does_not_hang_the_others() {
        // On a thread of its own, so that a hang fails the test.
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            panic_then_work();
            let _ = done.send(());
        });
        finished
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("a split with a panicking part hung (or failed)");
    }

    /// The guard poisons for a panic that starts while it is held, not
    /// for one its thread was already unwinding from when it was made (a
    /// split call from a `Drop` during a panic runs normally).
    #[test]
    fn only_a_panic_inside_the_guard_poisons() {
        use crate::engine::job::SpinBarrier;
        struct SplitInDrop<'a>(&'a SpinBarrier);
        impl Drop for SplitInDrop<'_> {
            fn drop(&mut self) {
                let _poison = self.0.poison_on_panic();
            }
        }
        let quiet = SpinBarrier::new(1);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _d = SplitInDrop(&quiet);
            panic!("outer");
        }));
        assert!(r.is_err() && !quiet.is_poisoned());
        let hit = SpinBarrier::new(1);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _poison = hit.poison_on_panic();
            panic!("inner");
        }));
        assert!(r.is_err() && hit.is_poisoned());
    }

    fn panic_then_work() {
        use crate::engine::job::SpinBarrier;
        let team = Team::new(2);
        for bad in 0..3 {
            let barrier = SpinBarrier::new(3);
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                team.run(3, &|p| {
                    let _poison = barrier.poison_on_panic();
                    if p == bad {
                        panic!("part {p}");
                    }
                    barrier.wait();
                    barrier.wait();
                })
            }));
            assert!(r.is_err(), "part {bad}'s panic was lost");
        }
        let barrier = SpinBarrier::new(3);
        let n = AtomicUsize::new(0);
        assert!(team.run(3, &|_| {
            let _poison = barrier.poison_on_panic();
            barrier.wait();
            n.fetch_add(1, Ordering::Relaxed);
        }));
        assert_eq!(n.load(Ordering::Relaxed), 3);
    }
}
