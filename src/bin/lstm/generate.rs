//! `lstm generate`: character-level text generation, streamed.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use lstm_kernels::charlm::{CharLm, Sampling};
use lstm_kernels::error::{Error, Result};

#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// Model file (.safetensors, see README); default: the shipped model
    /// trained on the Book of Genesis.
    #[arg(long)]
    model: Option<PathBuf>,
    /// The text to continue.
    #[arg(long, default_value = "In the beginning")]
    prompt: String,
    /// Characters to generate.
    #[arg(long, default_value_t = 300)]
    length: usize,
    /// Softmax temperature (0 = greedy).
    #[arg(long, default_value_t = 0.8)]
    temperature: f32,
    /// Sampler seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Sample only among the k most likely characters.
    #[arg(long)]
    top_k: Option<usize>,
    /// Arithmetic of the LSTM layers: f32 (default), bf16 or int8.
    #[arg(long, default_value = "f32")]
    precision: lstm_kernels::Precision,
    /// Generate for this many copies of the prompt at once (one batch;
    /// 1 to 65536).
    #[arg(long, default_value_t = 1)]
    batch: usize,
}

/// The most prompts one `generate` call runs as a batch (a million made
/// the buffers of every step outgrow memory).
const MAX_BATCH: usize = 65_536;

pub fn generate(a: &GenerateArgs) -> Result<()> {
    let model = match &a.model {
        Some(p) => CharLm::load(p)?,
        None => CharLm::shipped()?,
    }
    .with_precision(a.precision)?;
    let sampling = Sampling {
        temperature: a.temperature,
        top_k: a.top_k,
        seed: a.seed,
    };
    if !(1..=MAX_BATCH).contains(&a.batch) {
        return Err(Error::Invalid(format!(
            "--batch must be from 1 to {MAX_BATCH}, got {}",
            a.batch
        )));
    }
    let prompts: Vec<&str> = vec![a.prompt.as_str(); a.batch];
    let start = Instant::now();
    let stream = a.batch <= 1;
    // The prompt is printed with the first new character, once the model
    // has accepted it (a character it does not know, or a bad sampling
    // setting, is an error with nothing printed).
    let mut shown = false;
    let outs = model.generate(&prompts, a.length, sampling, |_, c| {
        if stream {
            if !shown {
                out!("{}", a.prompt);
                shown = true;
            }
            out!("{c}");
            let _ = std::io::stdout().flush();
        }
    })?;
    let secs = start.elapsed().as_secs_f64();
    if stream {
        if !shown {
            out!("{}", a.prompt);
        }
        outln!();
    } else {
        for (i, o) in outs.iter().enumerate() {
            outln!("[{i}] {}{o}", a.prompt);
        }
    }
    let chars = a.length * prompts.len();
    errln!(
        "[{chars} characters in {secs:.3} s: {:.0} characters/s, batch {}]",
        chars as f64 / secs,
        prompts.len()
    );
    Ok(())
}
