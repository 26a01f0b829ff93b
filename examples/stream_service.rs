//! A streaming service on the `Batcher`: many live streams (say, audio
//! feature frames from many users), joining and leaving whenever they
//! like, served by a few connection threads; each thread sends one frame
//! of each of its live sessions in one call through its `Client` and
//! collects the outputs (woken once per step, not once per frame); one
//! worker batches whatever frames are waiting and runs them as one step.
//! A stream that moves to another server takes its state along.
//!
//! ```sh
//! cargo run --release --example stream_service
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use lstm_kernels::rng::SplitMix64;
use lstm_kernels::{
    Backpressure, Batcher, BatcherConfig, Error, Lstm, LstmConfig, LstmWeights, Shutdown,
    StreamPool,
};

fn main() -> Result<(), Error> {
    // 40 features in, 128 hidden units, 16 outputs per frame.
    let cfg = LstmConfig::new(40, 128).with_head(16);
    let model = Lstm::new(cfg, LstmWeights::random(&cfg, 1)?)?.with_threads(2)?;
    let batcher = Batcher::new(
        StreamPool::new(model, 512)?,
        BatcherConfig::new()
            .with_max_wait(Duration::from_micros(500))
            .with_backpressure(Backpressure::Block),
    )?;
    let connections = 8;
    let sessions_per_connection = 100;
    let frames_done = AtomicU64::new(0);
    let waited_us = AtomicU64::new(0);
    let start = Instant::now();
    std::thread::scope(|s| {
        for c in 0..connections {
            let (batcher, frames_done, waited_us) = (&batcher, &frames_done, &waited_us);
            s.spawn(move || -> Result<(), Error> {
                let mut rng = SplitMix64::new(c as u64);
                let mut client = batcher.client()?;
                let mut ids = Vec::new();
                // Each connection serves sessions one after another, 8 at
                // a time: open, stream 20–80 frames, close.
                let mut live = Vec::new();
                let mut started = 0;
                while started < sessions_per_connection || !live.is_empty() {
                    while live.len() < 8 && started < sessions_per_connection {
                        let frames_left = 20 + rng.next_u64() % 60;
                        live.push((batcher.open()?, frames_left));
                        started += 1;
                    }
                    // One frame of every live session, in one call; then
                    // collect the outputs as their steps end.
                    ids.clear();
                    ids.extend(live.iter().map(|&(id, _)| id));
                    let frames = rng.vec_uniform(ids.len() * 40, -1.0, 1.0);
                    client.submit(&ids, &frames)?;
                    while client.outstanding() > 0 {
                        for r in client.wait(None) {
                            assert_eq!(r.output?.len(), 16);
                            waited_us.fetch_add(r.latency.as_micros() as u64, Ordering::Relaxed);
                            frames_done.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    for (id, left) in &mut live {
                        *left -= 1;
                        if *left == 0 {
                            batcher.close(*id)?;
                        }
                    }
                    live.retain(|&(_, left)| left > 0);
                }
                Ok(())
            });
        }
    });
    let secs = start.elapsed().as_secs_f64();
    let stats = batcher.stats();
    let n = frames_done.load(Ordering::Relaxed);
    println!(
        "{n} frames of {} sessions in {secs:.2} s: {:.0} frames/s, {} steps, mean batch {:.1}, mean latency {:.0} µs",
        connections * sessions_per_connection,
        n as f64 / secs,
        stats.steps,
        stats.mean_batch(),
        waited_us.load(Ordering::Relaxed) as f64 / n.max(1) as f64
    );

    // Migration: a stream's state moves to another server's batcher.
    let id = batcher.open()?;
    batcher.submit(id, &[0.5; 40])?;
    let (mut c, mut m) = (vec![0.0; 128], vec![0.0; 128]);
    batcher.read_state(id, &mut c, &mut m)?;
    let other = Batcher::new(StreamPool::new(batcher_model()?, 16)?, BatcherConfig::new())?;
    let moved = other.open()?;
    other.write_state(moved, &c, &m)?;
    let here = batcher.submit(id, &[0.25; 40])?;
    let there = other.submit(moved, &[0.25; 40])?;
    assert_eq!(here, there, "the moved stream continues exactly");
    println!("a stream moved to another batcher continues bit for bit");
    let pool = batcher.shutdown(Shutdown::Drain)?;
    println!("shut down with {} stream(s) still open", pool.len());
    Ok(())
}

/// The same model (same weights) for the second server.
fn batcher_model() -> Result<Lstm, Error> {
    let cfg = LstmConfig::new(40, 128).with_head(16);
    Lstm::new(cfg, LstmWeights::random(&cfg, 1)?)
}
