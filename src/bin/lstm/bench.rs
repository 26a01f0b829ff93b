//! `lstm bench`: forward throughput at one shape, as a table row or JSON.

use std::time::{Duration, Instant};

use clap::Args;
use lstm_kernels::error::{Error, Result, checked_elements, try_zeros};
use lstm_kernels::rng::SplitMix64;
use lstm_kernels::{
    Isa, KernelChoice, Lstm, LstmConfig, LstmWeights, Peephole, PlanRules, Precision, Tuning,
    diagnostics, fma_peak_gflops, kernel_l1_gflops, tuning::CpuFacts,
};

/// The model `lstm bench` and `lstm tune` build (random weights): its
/// shape, variant, threads and instruction set.
#[derive(Args, Debug)]
pub struct ModelArgs {
    /// Input features n_in.
    #[arg(long, default_value_t = 256)]
    pub input: usize,
    /// Hidden units H.
    #[arg(long, default_value_t = 256)]
    pub hidden: usize,
    /// Output head size P (default: no head).
    #[arg(long)]
    pub head: Option<usize>,
    /// Peepholes: none, matrix (the seed's) or diagonal.
    #[arg(long, default_value = "none")]
    pub peephole: Peephole,
    /// Recurrent projection size (r = m·W_p recurs).
    #[arg(long)]
    pub projection: Option<usize>,
    /// Threads (0 = one per core).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Instruction set: auto (the best this CPU has, or LSTM_KERNELS_ISA),
    /// avx512, avx2 or portable.
    #[arg(long, default_value = "auto")]
    pub isa: String,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Batch size B.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    #[command(flatten)]
    model: ModelArgs,
    /// Timesteps per forward call T.
    #[arg(long, default_value_t = 32)]
    steps: usize,
    /// Seconds to spend measuring (after one warm-up call).
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// Kernel: auto (a generated, shape-specialized one if it exists, else
    /// generic), generic, or specialized (an error if none exists).
    #[arg(long, default_value = "auto")]
    kernel: KernelChoice,
    /// Arithmetic of the gate GEMM: f32, bf16 (AMX, AVX512-BF16 or portable;
    /// `LSTM_KERNELS_BF16` forces one) or int8 (AMX, AVX512-VNNI or
    /// portable; `LSTM_KERNELS_INT8` forces one).
    #[arg(long, default_value = "f32")]
    precision: Precision,
    /// Fill inputs and state with subnormal numbers (denormal slow-path check).
    #[arg(long, conflicts_with = "streams")]
    subnormal: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// How the plan is chosen: heuristic (from the CPU's facts) or measure
    /// (time candidate plans for this batch first: under 2 s, unless one
    /// step of the batch takes longer than a fraction of that).
    #[arg(long, default_value = "heuristic")]
    tuning: String,
    /// Load plans from this file (written by `lstm tune --out`).
    #[arg(long)]
    plans: Option<std::path::PathBuf>,
    /// Force a plan: `kc=128,chunk=64,hoist=65536,partition=units`
    /// (knobs not named keep their defaults).
    #[arg(long)]
    plan: Option<PlanRules>,
    /// Also time this plan against the model's own, in alternating calls
    /// of one process (after the usual measurement, for as long again),
    /// and report the paired speed ratio: robust on a noisy machine, where
    /// separate runs differ by more than most plans do.
    #[arg(long, conflicts_with = "streams")]
    versus: Option<PlanRules>,
    /// Serve this many live streams through the batcher instead (see
    /// README, "Serving streams"); compares with one batch of them through
    /// `step` and with one `step` call per stream.
    #[arg(long)]
    streams: Option<usize>,
    /// With --streams: client threads, each driving streams/clients streams.
    #[arg(long, default_value_t = 16, requires = "streams")]
    clients: usize,
    /// With --streams: the batcher's max_wait, in microseconds (the
    /// library's default).
    #[arg(long, default_value_t = 500, requires = "streams")]
    max_wait_us: u64,
    /// With --streams: a stream's think time, the delay before it sends its
    /// next frame after its last output came back, is uniform in
    /// [0, think_us] (the same load whatever --max-wait-us is).
    #[arg(long, default_value_t = 200, requires = "streams")]
    think_us: u64,
    /// With --streams: the batcher's max_batch (default: all streams).
    #[arg(long, requires = "streams")]
    max_batch: Option<usize>,
    /// With --streams: clients submit and collect each frame on its own
    /// (`submit_async` and a `Pending` per frame) instead of through a
    /// `Client` (many frames per call, one wake-up per step).
    #[arg(long, requires = "streams")]
    per_frame: bool,
    /// With --streams: the batcher runs the frames that came during a step
    /// right after it, in a catch-up step (`BatcherConfig::catch_up`).
    #[arg(long, requires = "streams")]
    catch_up: bool,
}

/// Timing of repeated forward calls.
pub struct Measurement {
    /// Median seconds per forward call.
    pub median_s: f64,
    /// Number of timed calls.
    pub repeats: usize,
}

impl Measurement {
    pub fn sample_steps_per_s(&self, batch: usize, steps: usize) -> f64 {
        (batch * steps) as f64 / self.median_s
    }
}

/// Times `call` repeatedly for about `seconds` (at least 3 calls, after one
/// untimed warm-up) and returns the median.
pub fn measure(seconds: f64, mut call: impl FnMut()) -> Measurement {
    call();
    let budget = Duration::from_secs_f64(seconds.max(0.0));
    let start = Instant::now();
    let mut times = Vec::new();
    while times.len() < 3 || (start.elapsed() < budget && times.len() < 100_000) {
        let t = Instant::now();
        call();
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Measurement {
        median_s: times[times.len() / 2],
        repeats: times.len(),
    }
}

/// Timing of two calls in alternating pairs (see [`measure_pair`]).
pub struct Paired {
    /// Median seconds per call of each.
    pub median_s: [f64; 2],
    /// Per pair, the first call's time over the second's (the second's
    /// speed relative to the first), sorted.
    pub ratios: Vec<f64>,
}

impl Paired {
    /// The `q` quantile of the ratios (0.5: the median).
    pub fn ratio_quantile(&self, q: f64) -> f64 {
        let i = ((self.ratios.len() - 1) as f64 * q).round() as usize;
        self.ratios[i]
    }

    /// Pairs in which the second call was the faster.
    pub fn second_faster(&self) -> usize {
        self.ratios.iter().filter(|&&r| r > 1.0).count()
    }
}

/// Times `a` and `b` in pairs for about `seconds` (at least 5 pairs, after
/// one untimed warm-up call of each), the order alternating from pair to
/// pair, so that both see the same machine: what a noisy neighbour or the
/// process's memory layout does to one does it to the other.
pub fn measure_pair(seconds: f64, mut a: impl FnMut(), mut b: impl FnMut()) -> Paired {
    a();
    b();
    let budget = Duration::from_secs_f64(seconds.max(0.0));
    let start = Instant::now();
    let (mut ta, mut tb) = (Vec::new(), Vec::new());
    let time = |f: &mut dyn FnMut(), v: &mut Vec<f64>| {
        let t = Instant::now();
        f();
        v.push(t.elapsed().as_secs_f64());
    };
    while ta.len() < 5 || (start.elapsed() < budget && ta.len() < 100_000) {
        if ta.len() % 2 == 0 {
            time(&mut a, &mut ta);
            time(&mut b, &mut tb);
        } else {
            time(&mut b, &mut tb);
            time(&mut a, &mut ta);
        }
    }
    let mut ratios: Vec<f64> = ta.iter().zip(&tb).map(|(x, y)| x / y).collect();
    ratios.sort_by(f64::total_cmp);
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    Paired {
        median_s: [median(&mut ta), median(&mut tb)],
        ratios,
    }
}

/// A model with seeded random weights and random inputs `[T, B, n_in]`.
pub fn setup(
    cfg: LstmConfig,
    batch: usize,
    steps: usize,
    threads: usize,
) -> Result<(Lstm, Vec<f32>)> {
    let model = Lstm::new(cfg, LstmWeights::random(&cfg, 7)?)?.with_threads(threads)?;
    setup_inputs(model, batch, steps)
}

/// Random inputs `[T, B, n_in]` for `model`.
pub fn setup_inputs(model: Lstm, batch: usize, steps: usize) -> Result<(Lstm, Vec<f32>)> {
    let cfg = *model.config();
    model.new_state(batch)?; // validates the batch size
    // The inputs [T, B, n_in], and the outputs bench allocates later.
    let n = checked_elements(&[steps, batch, cfg.n_input], "the bench inputs")?;
    checked_elements(&[steps, batch, cfg.n_output()], "the bench outputs")?;
    let mut xs = try_zeros(n, "bench inputs")?;
    SplitMix64::new(11).fill_uniform(&mut xs, -1.0, 1.0);
    Ok((model, xs))
}

/// A model of the given shape with seeded random weights on `threads`
/// threads and ISA `isa` (`auto` or a name): what `bench` and `tune` time.
pub fn random_model(a: &ModelArgs) -> Result<Lstm> {
    let mut cfg = LstmConfig::new(a.input, a.hidden).with_peephole(a.peephole);
    if let Some(p) = a.head {
        cfg = cfg.with_head(p);
    }
    if let Some(p) = a.projection {
        cfg = cfg.with_projection(p);
    }
    let model = Lstm::new(cfg, LstmWeights::random(&cfg, 7)?)?.with_threads(a.threads)?;
    if a.isa == "auto" {
        return Ok(model);
    }
    let isa: Isa = a.isa.parse().map_err(Error::Unsupported)?;
    model.with_isa(isa)
}

pub fn bench(a: &BenchArgs) -> Result<()> {
    if a.steps == 0 {
        return Err(Error::Invalid("--steps must be at least 1".into()));
    }
    if a.batch == 0 {
        return Err(Error::Invalid("--batch must be at least 1".into()));
    }
    // A day at most: `Duration` cannot hold every f64 (1e308 panicked).
    if !(a.seconds.is_finite() && (0.0..=86_400.0).contains(&a.seconds)) {
        return Err(Error::Invalid(format!(
            "--seconds must be a number from 0 to 86400, got {:?}",
            a.seconds
        )));
    }
    let mut model = random_model(&a.model)?;
    let cfg = *model.config();
    model = model.with_kernel(a.kernel)?;
    if let Some(p) = &a.plans {
        model = model.with_plan_file(p)?;
    }
    model = match a.tuning.as_str() {
        "heuristic" => model,
        "measure" => model.with_tuning(Tuning::Measure { batch: a.batch })?,
        o => {
            return Err(Error::Invalid(format!(
                "--tuning `{o}` (expected heuristic or measure)"
            )));
        }
    };
    if let Some(r) = a.plan {
        model = model.with_plan_rules(r)?;
    }
    model = model.with_precision(a.precision)?;
    if a.versus.is_some() && a.precision != Precision::F32 {
        return Err(Error::Invalid(format!(
            "--versus compares plans of the f32 engine; the {} engine does not use plans",
            a.precision
        )));
    }
    if let Some(streams) = a.streams {
        let args = crate::streams::StreamArgs {
            streams,
            clients: a.clients,
            max_wait_us: a.max_wait_us,
            think_us: a.think_us,
            max_batch: a.max_batch.unwrap_or(0),
            per_frame: a.per_frame,
            catch_up: a.catch_up,
            seconds: a.seconds,
            json: a.json,
        };
        return crate::streams::bench(model, &args);
    }
    let (model, mut xs) = setup_inputs(model, a.batch, a.steps)?;
    let mut state = model.new_state(a.batch)?;
    if a.subnormal {
        // Tiny inputs and a tiny state: x·W, c and m are all subnormal.
        let tiny = f32::from_bits(0x0000_4000);
        xs.iter_mut().for_each(|v| *v *= tiny);
        state.c_mut().iter_mut().for_each(|v| *v = tiny);
        state.m_mut().iter_mut().for_each(|v| *v = tiny);
    }
    let runs_before: Vec<u64> = Isa::ALL
        .iter()
        .map(|&i| diagnostics::kernel_runs(i))
        .collect();
    let mut ys = try_zeros(a.steps * a.batch * cfg.n_output(), "bench outputs")?;
    let mut failure = None;
    let steal_before = crate::steal::now();
    let m = measure(a.seconds, || {
        if let Err(e) = model.forward(&mut state, &xs, &mut ys) {
            failure = Some(e);
        }
    });
    if let Some(e) = failure {
        return Err(e);
    }
    let runs: serde_json::Map<String, serde_json::Value> = Isa::ALL
        .iter()
        .zip(&runs_before)
        .map(|(&i, &b)| {
            (
                i.name().to_string(),
                serde_json::Value::from(diagnostics::kernel_runs(i) - b),
            )
        })
        .collect();
    let versus = match a.versus {
        Some(rules) => {
            let other = model.clone().with_plan_rules(rules)?;
            let mut state_b = other.new_state(a.batch)?;
            state_b.c_mut().copy_from_slice(state.c());
            state_b.m_mut().copy_from_slice(state.m());
            let mut ys_b = try_zeros(ys.len(), "bench outputs")?;
            let (mut fa, mut fb) = (None, None);
            let p = measure_pair(
                a.seconds,
                || {
                    if let Err(e) = model.forward(&mut state, &xs, &mut ys) {
                        fa = Some(e);
                    }
                },
                || {
                    if let Err(e) = other.forward(&mut state_b, &xs, &mut ys_b) {
                        fb = Some(e);
                    }
                },
            );
            if let Some(e) = fa.or(fb) {
                return Err(e);
            }
            Some((other.plan_for(a.batch).rules, p))
        }
        None => None,
    };
    // Over the measurement and the paired one.
    let steal = crate::steal::share(steal_before, crate::steal::now());
    let sps = m.sample_steps_per_s(a.batch, a.steps);
    let gflops = sps * cfg.flops_per_sample_step() / 1e9;
    let ns_per_step = m.median_s / a.steps as f64 * 1e9;
    // Fraction of the per-core peak of the ISA that ran, times the threads.
    let peak = fma_peak_gflops(model.isa()).unwrap_or(f64::NAN);
    let peak_fraction = gflops / (peak * model.threads() as f64);
    // What the f32 blocked microkernel reaches with its operands in L1
    // (about the most any of its GEMMs can), and the fraction of it this
    // run reached: only where the kernels that ran are built on it (not the
    // small cells' `lanes_`/`batch_` bodies).
    // The kernels that ran: a small cell's chunks of 5+ rows run its
    // batch-in-lanes variant.
    let kernels = model.kernels_for_batch(a.batch)?;
    let blocked = kernels
        .iter()
        .all(|k| *k == "generic" || k.starts_with("blocked_"));
    let kernel_l1 = (model.precision() == Precision::F32 && blocked)
        .then(|| kernel_l1_gflops(model.isa()))
        .flatten();
    let kernel_l1_fraction = kernel_l1.map(|k| gflops / (k * model.threads() as f64));
    let kernel = kernels.join("+");
    let plan = model.plan_for(a.batch);
    if a.json {
        let mut v = serde_json::json!({
            "isa": model.isa_name(),
            "kernel": kernel,
            "precision": model.precision().name(),
            "bf16_runs": diagnostics::bf16_runs(model.kernel_name()),
            "int8_runs": diagnostics::int8_runs(model.kernel_name()),
            "batch": a.batch,
            "input": a.model.input,
            "hidden": a.model.hidden,
            "head": a.model.head,
            "peephole": a.model.peephole.name(),
            "projection": a.model.projection,
            "steps": a.steps,
            "threads": model.threads(),
            "sample_steps_per_s": sps,
            "gflops": gflops,
            "ns_per_step": ns_per_step,
            "median_s": m.median_s,
            "repeats": m.repeats,
            "subnormal": a.subnormal,
            "kernel_runs": runs,
            "fma_peak_gflops": peak,
            "peak_fraction": peak_fraction,
            "kernel_l1_gflops": kernel_l1,
            "kernel_l1_fraction": kernel_l1_fraction,
            "cpu": CpuFacts::get().model_name,
            "plan": plan.rules.to_string(),
            "tuning": plan.source.name(),
            "cpu_steal": steal,
        });
        if let Some((rules, p)) = &versus {
            let per_s = |s: f64| (a.batch * a.steps) as f64 / s;
            v["versus"] = serde_json::json!({
                "plan": rules.to_string(),
                "pairs": p.ratios.len(),
                "sample_steps_per_s": per_s(p.median_s[0]),
                "versus_sample_steps_per_s": per_s(p.median_s[1]),
                "speedup_median": p.ratio_quantile(0.5),
                "speedup_p25": p.ratio_quantile(0.25),
                "speedup_p75": p.ratio_quantile(0.75),
                "versus_faster_pairs": p.second_faster(),
            });
        }
        outln!("{v}");
    } else {
        outln!(
            "isa {} kernel {} precision {} | B={} n_in={} H={} head={} peephole={} T={} threads={}",
            model.isa_name(),
            kernel,
            model.precision(),
            a.batch,
            a.model.input,
            a.model.hidden,
            a.model.head.map_or("none".to_string(), |p| p.to_string()),
            a.model.peephole.name(),
            a.steps,
            model.threads()
        );
        outln!(
            "{:.0} sample-steps/s  {:.2} GFLOP/s  {:.1}% of peak ({:.1} GFLOP/s × {} threads)  {:.0} ns/step  (median of {} calls)",
            sps,
            gflops,
            100.0 * peak_fraction,
            peak,
            model.threads(),
            ns_per_step,
            m.repeats
        );
        if let (Some(k), Some(f)) = (kernel_l1, kernel_l1_fraction) {
            outln!(
                "{:.1}% of the microkernel's rate on L1-resident operands ({:.1} GFLOP/s per core, {:.1}% of peak)",
                100.0 * f,
                k,
                100.0 * k / peak
            );
        }
        outln!("plan {plan}");
        outln!(
            "{} of the machine's CPU time during the run (given to other guests: a run above a few % is disturbed)",
            crate::steal::text(steal)
        );
        if let Some((rules, p)) = &versus {
            let per_s = |s: f64| (a.batch * a.steps) as f64 / s;
            outln!(
                "versus {rules}: {:.0} against {:.0} sample-steps/s (medians of {} alternating pairs); its speed over the plan's: median {:.3}, quartiles {:.3}–{:.3}; faster in {} of {} pairs",
                per_s(p.median_s[1]),
                per_s(p.median_s[0]),
                p.ratios.len(),
                p.ratio_quantile(0.5),
                p.ratio_quantile(0.25),
                p.ratio_quantile(0.75),
                p.second_faster(),
                p.ratios.len()
            );
        }
    }
    Ok(())
}
