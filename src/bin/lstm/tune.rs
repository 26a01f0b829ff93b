//! `lstm tune`: times candidate plans for one shape on this machine, prints
//! every timing and the fastest, and (with `--out`) records the fastest in
//! a plan file keyed by this CPU's model name and the shape.

use std::path::Path;

use clap::Args;
use lstm_kernels::error::Result;
use lstm_kernels::tuning::{CpuFacts, PlanFile};

#[derive(Args, Debug)]
pub struct TuneArgs {
    /// Batch size B the service runs.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    #[command(flatten)]
    model: crate::bench::ModelArgs,
    /// Add (or replace) the fastest plan in this plan file (created if
    /// missing; load it with `LSTM_KERNELS_PLANS`, `Lstm::with_plan_file`
    /// or `lstm bench --plans`).
    #[arg(long)]
    out: Option<std::path::PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// The plans already in `--out`: a regular file's (an empty or blank one
/// holds none); none for a path with nothing there yet, or one that is not
/// a regular file (`/dev/stdout`, a FIFO: written to, never read).
fn existing_plans(path: &Path) -> Result<PlanFile> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => PlanFile::load(path),
        _ => Ok(PlanFile::default()),
    }
}

/// An advisory lock on the directory the plan file is renamed into
/// (`io::rename_dir`: that of `path`'s final target, as the atomic writer
/// resolves it), held while a plan file is read, merged and replaced, so
/// that tunes running at once into one file keep each other's entries
/// (without it the last rename wins). Waiting for it says so. `None` for
/// a device (written through, nothing to merge) or where the directory
/// cannot be opened or locked: the write goes ahead.
fn lock_dir(path: &Path) -> Option<std::fs::File> {
    let dir = lstm_kernels::io::rename_dir(path)?;
    let f = std::fs::File::open(&dir).ok()?;
    match f.try_lock() {
        Ok(()) => Some(f),
        Err(std::fs::TryLockError::WouldBlock) => {
            errln!(
                "lstm tune: waiting for the lock on {} (another lstm tune writing there)",
                dir.display()
            );
            f.lock().ok()?;
            Some(f)
        }
        Err(_) => None,
    }
}

pub fn tune(a: &TuneArgs) -> Result<()> {
    if a.batch == 0 {
        return Err(lstm_kernels::Error::Invalid(
            "--batch must be at least 1".into(),
        ));
    }
    // `--out` is checked before the tuning, which takes seconds: it must be
    // replaceable, and an existing plan file must read.
    if let Some(path) = &a.out {
        lstm_kernels::io::check_replaceable(path)?;
        existing_plans(path)?;
    }
    let model = crate::bench::random_model(&a.model)?;
    let report = model.tune(a.batch)?;
    let entry = model.plan_entry(a.batch, report.chosen);
    if let Some(path) = &a.out {
        let _lock = lock_dir(path);
        let mut file = existing_plans(path)?;
        file.insert(entry.clone());
        file.save(path)?;
    }
    let cpu = CpuFacts::get();
    let heur = report.ns_per_step(&report.heuristic).unwrap_or(f64::NAN);
    let best = report.ns_per_step(&report.chosen).unwrap_or(f64::NAN);
    if a.json {
        let cands: Vec<serde_json::Value> = report
            .candidates
            .iter()
            .map(|(r, ns)| serde_json::json!({"plan": r.to_string(), "ns_per_step": ns}))
            .collect();
        outln!(
            "{}",
            serde_json::json!({
                "cpu": cpu.model_name,
                "family": cpu.family,
                "model": cpu.model,
                "l1d_bytes": cpu.l1d_bytes,
                "l2_bytes": cpu.l2_bytes,
                "full_rate_512": cpu.full_rate_512,
                "isa": model.isa_name(),
                "batch": a.batch,
                "threads": model.threads(),
                "steps": report.steps,
                "confirm_steps": report.confirm_steps,
                "heuristic": report.heuristic.to_string(),
                "heuristic_ns_per_step": heur,
                "chosen": report.chosen.to_string(),
                "chosen_ns_per_step": best,
                "candidates": cands,
                "elapsed_s": report.elapsed.as_secs_f64(),
            })
        );
    } else {
        outln!(
            "{} (family {} model {}, L1d {} KiB, L2 {} KiB, 512-bit FMA {:.2}x AVX2: {}), isa {}, B={} n_in={} H={} threads={}",
            cpu.model_name,
            cpu.family,
            cpu.model,
            cpu.l1d_bytes >> 10,
            cpu.l2_bytes >> 10,
            cpu.fma_512_ratio,
            if cpu.full_rate_512 {
                "full rate"
            } else {
                "half rate"
            },
            model.isa_name(),
            a.batch,
            a.model.input,
            a.model.hidden,
            model.threads()
        );
        let mut c = report.candidates.clone();
        c.sort_by(|x, y| x.1.total_cmp(&y.1));
        for (r, ns) in &c {
            let tag = match (*r == report.chosen, *r == report.heuristic) {
                (true, true) => "  <- chosen, heuristic",
                (true, false) => "  <- chosen",
                (false, true) => "  <- heuristic",
                _ => "",
            };
            outln!("  {:>12.0} ns/step  {r}{tag}", ns);
        }
        let confirm = match report.confirm_steps {
            0 => "no head-to-head".to_string(),
            n => format!("{n} in the head-to-head"),
        };
        outln!(
            "chosen: {} ({:.3}x the heuristic's speed; {} candidates in {:.2} s, {} steps per call, {confirm})",
            report.chosen,
            heur / best,
            report.candidates.len(),
            report.elapsed.as_secs_f64(),
            report.steps,
        );
        if let Some(p) = &a.out {
            outln!("written to {}", p.display());
        }
    }
    Ok(())
}
