//! End-to-end effect of reduced precision (issue 14): the shipped
//! character model's cross-entropy over the Book of Genesis, in f32 and in
//! bf16 and int8 on every kernel this CPU has, and how often the greedy
//! next character agrees with f32's.
//!
//! `cargo run --release --example precision_accuracy [-- CHUNKS [--all]]`
//! (`--all` adds the portable kernels, which are slow).

use std::time::Instant;

use lstm_kernels::Lstm;
use lstm_kernels::charlm::CharLm;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let chunks: usize = std::env::args().nth(1).map_or(Ok(64), |a| a.parse())?;
    let all = std::env::args().any(|a| a == "--all");
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tools/data/genesis.txt"
    ))?;
    let f32_model = CharLm::shipped()?;
    // Only characters the model knows.
    let text: String = text
        .chars()
        .filter(|&c| f32_model.vocab().contains(&c))
        .collect();
    let t = Instant::now();
    let (bits, greedy) = f32_model.evaluate(&text, chunks)?;
    println!(
        "f32                    {bits:.4} bits/char  ({} predictions, {:.2} s)",
        greedy.len(),
        t.elapsed().as_secs_f64()
    );
    let kernels = Lstm::bf16_kernels()
        .into_iter()
        .chain(Lstm::int8_kernels())
        .filter(|k| all || !k.ends_with("_portable"));
    for kernel in kernels {
        let model = if kernel.starts_with("bf16") {
            f32_model.clone().with_bf16_kernel(kernel)?
        } else {
            f32_model.clone().with_int8_kernel(kernel)?
        };
        let t = Instant::now();
        let (b, g) = model.evaluate(&text, chunks)?;
        let agree = g.iter().zip(&greedy).filter(|(a, b)| a == b).count();
        println!(
            "{kernel:<22} {b:.4} bits/char  (Δ {:+.4}; greedy agrees with f32 at {:.2}%, {:.2} s)",
            b - bits,
            100.0 * agree as f64 / greedy.len() as f64,
            t.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
