//! A streaming service on the `Batcher`: many live streams (say, audio
//! feature frames from many users), each delivering one frame at a time
//! from its own connection thread, joining and leaving whenever they like;
//! one worker batches whatever frames are waiting and runs them as one
//! step. A stream that moves to another server takes its state along.
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
    let frames = AtomicU64::new(0);
    let waited_us = AtomicU64::new(0);
    let start = Instant::now();
    std::thread::scope(|s| {
        for c in 0..connections {
            let (batcher, frames, waited_us) = (&batcher, &frames, &waited_us);
            s.spawn(move || -> Result<(), Error> {
                let mut rng = SplitMix64::new(c as u64);
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
                    // One frame of every live session, all in flight at
                    // once; then collect the outputs.
                    let pending = live
                        .iter()
                        .map(|&(id, _)| {
                            let frame = rng.vec_uniform(40, -1.0, 1.0);
                            batcher.submit_async(id, &frame)
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    for mut p in pending {
                        // A real service would .await this in its async
                        // handler; here, poll until it is there.
                        let out = loop {
                            if let Some(r) = p.try_get() {
                                break r?;
                            }
                            std::thread::sleep(Duration::from_micros(50));
                        };
                        assert_eq!(out.len(), 16);
                        let us = p.latency().unwrap_or_default().as_micros() as u64;
                        waited_us.fetch_add(us, Ordering::Relaxed);
                        frames.fetch_add(1, Ordering::Relaxed);
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
    let n = frames.load(Ordering::Relaxed);
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
