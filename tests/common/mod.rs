//! Shared helpers for the integration tests: random cases, the comparison
//! against the scalar reference with its derived error bound, bitwise
//! comparison, and the crate's kernel-selection and run-counter API.
//!
//! How the helpers are split, and who includes what:
//!
//! - `common/mod.rs` (this file) and `common/golden.rs` (paths and readers
//!   of the data in tests/golden/): a test file takes both with `mod common;`
//!   (`common::golden::…`). Neither runs the `lstm` binary, so a test file
//!   that only includes these builds without the `cli` feature.
//! - `common/cli.rs`: the `lstm` binary (`lstm()` -> `Command`, run and
//!   capture). It uses `env!("CARGO_BIN_EXE_lstm")`, which Cargo defines
//!   only for tests that can run the binary, so it is deliberately NOT
//!   declared here. A test file that runs the binary includes it itself,
//!   `#[path = "common/cli.rs"] mod cli;`, and must have
//!   `required-features = ["cli"]` in Cargo.toml. Today that is tests/cli.rs
//!   alone; keep every test that runs the binary there.
//!
//! The calls of the crate's kernel-choice and counter API (`KernelChoice`,
//! `kernel_runs`, `specialized_runs`, `small_batch_runs`,
//! `specialized_kernels`, `specialized_shapes`, `config_from_shape_tag`)
//! live here only, in [`Runs`] and the functions after it, so that renaming
//! one of them is a one-line change for the tests.
#![allow(dead_code)]

#[cfg(feature = "formats")]
pub mod golden;
pub mod stack_ref;

use lstm_kernels::reference::{self, Bounded, ErrorModel, RefState};
use lstm_kernels::rng::SplitMix64;
use lstm_kernels::{Isa, KernelChoice, Lstm, LstmConfig, LstmWeights, Peephole, Precision};

/// One random test case: config, weights, inputs and a starting state.
#[derive(Clone, Debug)]
pub struct Case {
    pub cfg: LstmConfig,
    pub weights: LstmWeights,
    pub batch: usize,
    pub steps: usize,
    pub xs: Vec<f32>,
    pub c0: Vec<f32>,
    pub m0: Vec<f32>,
}

impl Case {
    /// Weights PyTorch-style times `scale` (scale > 1 drives the gates into
    /// saturation), inputs uniform in [-2, 2), state uniform in [-1, 1).
    pub fn new(cfg: LstmConfig, batch: usize, steps: usize, seed: u64, scale: f32) -> Case {
        let mut weights = LstmWeights::random(&cfg, seed).unwrap();
        for t in [&mut weights.gates, &mut weights.bias].into_iter().chain(
            [&mut weights.v_o, &mut weights.w_h, &mut weights.b_h]
                .into_iter()
                .flatten(),
        ) {
            t.iter_mut().for_each(|v| *v *= scale);
        }
        let mut rng = SplitMix64::new(seed ^ 0xDEAD_BEEF);
        let h = cfg.n_hidden;
        Case {
            xs: rng.vec_uniform(steps * batch * cfg.n_input, -2.0, 2.0),
            c0: rng.vec_uniform(batch * h, -1.0, 1.0),
            m0: rng.vec_uniform(batch * cfg.n_recurrent(), -1.0, 1.0),
            cfg,
            weights,
            batch,
            steps,
        }
    }

    pub fn model(&self) -> Lstm {
        Lstm::new(self.cfg, self.weights.clone()).expect("valid case")
    }

    /// The reference outputs and bounds for this case.
    pub fn reference(&self) -> (Bounded, RefState) {
        self.reference_in(Precision::F32)
    }

    /// The reference outputs and the bounds of a model in `precision`.
    pub fn reference_in(&self, precision: Precision) -> (Bounded, RefState) {
        let seed = self.weights.to_seed(&self.cfg).expect("valid case");
        let mut st = RefState::from_f32(self.batch, &self.c0, &self.m0);
        let b = reference::forward_with_bound(
            &self.cfg,
            &seed,
            &self.xs,
            &mut st,
            ErrorModel::for_precision(precision),
        );
        (b, st)
    }

    /// Runs `model.forward` with NaN-prefilled output; returns (y, c, m).
    pub fn run_forward(&self, model: &Lstm) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let mut st = model
            .state_from(self.batch, &self.c0, &self.m0)
            .expect("state");
        let mut y = vec![f32::NAN; self.steps * self.batch * self.cfg.n_output()];
        model.forward(&mut st, &self.xs, &mut y).expect("forward");
        (y, st.c().to_vec(), st.m().to_vec())
    }

    /// Runs `model.step` T times; returns (y, c, m).
    pub fn run_steps(&self, model: &Lstm) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let mut st = model
            .state_from(self.batch, &self.c0, &self.m0)
            .expect("state");
        let (b, n, p) = (self.batch, self.cfg.n_input, self.cfg.n_output());
        let mut y = vec![f32::NAN; self.steps * b * p];
        for t in 0..self.steps {
            model
                .step(
                    &mut st,
                    &self.xs[t * b * n..(t + 1) * b * n],
                    &mut y[t * b * p..(t + 1) * b * p],
                )
                .expect("step");
        }
        (y, st.c().to_vec(), st.m().to_vec())
    }
}

/// Checks `got` against `want ± bound` element by element; returns a
/// description of the first violation.
pub fn within(what: &str, got: &[f32], want: &[f64], bound: &[f64]) -> Result<(), String> {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (k, ((&g, &w), &e)) in got.iter().zip(want).zip(bound).enumerate() {
        let err = (g as f64 - w).abs();
        // The bound compounds over steps (worst-case slopes); over a long
        // run it can overflow, and a NaN or infinite bound would pass
        // anything: such a run is checked step by step instead
        // (`check_stepwise`).
        if !e.is_finite() {
            return Err(format!(
                "{what}[{k}]: the bound is {e} (too many steps for a whole-run bound; use check_stepwise)"
            ));
        }
        // A NaN result is a failure too.
        if err.is_nan() || err > e {
            return Err(format!(
                "{what}[{k}]: got {g}, want {w}, |err| {err:.3e} > bound {e:.3e}"
            ));
        }
    }
    Ok(())
}

/// Checks a full run (outputs and final state) against the reference.
pub fn check_run(case: &Case, run: &(Vec<f32>, Vec<f32>, Vec<f32>)) -> Result<(), String> {
    check_run_in(case, run, Precision::F32)
}

/// [`check_run`] within the bound of a model in `precision`.
pub fn check_run_in(
    case: &Case,
    run: &(Vec<f32>, Vec<f32>, Vec<f32>),
    precision: Precision,
) -> Result<(), String> {
    let (b, st) = case.reference_in(precision);
    within("y", &run.0, &b.y, &b.y_err)?;
    within("c", &run.1, &st.c, &b.c_err)?;
    within("m", &run.2, &st.m, &b.m_err)
}

/// Checks `model` (in `precision`) step by step with `step`: each step
/// from the kernel's own `f32` state before it, against the reference's
/// one-step bound. Unlike the whole-run bound, which compounds with
/// worst-case slopes over the steps (and overflows after a few tens of
/// them), each step's bound stays as tight as the first's, so a long run
/// is checked everywhere. Returns the final (c, m).
pub fn check_stepwise(
    case: &Case,
    model: &Lstm,
    precision: Precision,
) -> Result<(Vec<f32>, Vec<f32>), String> {
    check_stepwise_against(
        case,
        model,
        &case.weights,
        ErrorModel::for_precision(precision),
        &|row| row.to_vec(),
    )
}

/// [`check_stepwise`] against the reference of other `weights` under
/// `errors`, its GEMM operands passed through `round` first, one row at a
/// time (a sample's `x`, then its `m`; the reduced-precision oracles: the
/// weights and operands rounded or quantized as the kernel does, under the
/// f32 bound).
pub fn check_stepwise_against(
    case: &Case,
    model: &Lstm,
    weights: &LstmWeights,
    errors: ErrorModel,
    round: &dyn Fn(&[f32]) -> Vec<f32>,
) -> Result<(Vec<f32>, Vec<f32>), String> {
    let seed = weights.to_seed(&case.cfg).map_err(|e| e.to_string())?;
    let mut st = model
        .state_from(case.batch, &case.c0, &case.m0)
        .map_err(|e| e.to_string())?;
    let (b, n, p) = (case.batch, case.cfg.n_input, case.cfg.n_output());
    let mut y = vec![f32::NAN; b * p];
    for t in 0..case.steps {
        let x = &case.xs[t * b * n..(t + 1) * b * n];
        let x_r: Vec<f32> = x.chunks(n).flat_map(round).collect();
        let m_r: Vec<f32> = st.m().chunks(st.m().len() / b).flat_map(round).collect();
        let mut rst = RefState::from_f32(b, st.c(), &m_r);
        let bound = reference::forward_with_bound(&case.cfg, &seed, &x_r, &mut rst, errors);
        y.fill(f32::NAN);
        model.step(&mut st, x, &mut y).map_err(|e| e.to_string())?;
        within(&format!("step {t} y"), &y, &bound.y, &bound.y_err)?;
        within(&format!("step {t} c"), st.c(), &rst.c, &bound.c_err)?;
        within(&format!("step {t} m"), st.m(), &rst.m, &bound.m_err)?;
    }
    Ok((st.c().to_vec(), st.m().to_vec()))
}

/// All the shapes of a config family, for sweeps.
pub fn config(n: usize, h: usize, head: Option<usize>, peephole: bool) -> LstmConfig {
    let mut cfg = LstmConfig::new(n, h);
    if let Some(p) = head {
        cfg = cfg.with_head(p);
    }
    if peephole {
        cfg = cfg.with_peephole(Peephole::Matrix);
    }
    cfg
}

/// The bit patterns of `v`, for comparisons that must be exact (and that
/// tell -0.0 from 0.0 and compare NaNs).
pub fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Checks that `got` and `want` are bitwise equal; on a difference, says
/// where the first one is and how many elements differ.
pub fn same_bits(what: &str, got: &[f32], want: &[f32]) -> Result<(), String> {
    if got.len() != want.len() {
        return Err(format!("{what}: length {} vs {}", got.len(), want.len()));
    }
    let (g, w) = (bits(got), bits(want));
    match g.iter().zip(&w).position(|(a, b)| a != b) {
        None => Ok(()),
        Some(k) => Err(format!(
            "{what}: not bitwise equal: [{k}] {} vs {} ({} of {} elements differ)",
            got[k],
            want[k],
            g.iter().zip(&w).filter(|(a, b)| a != b).count(),
            got.len()
        )),
    }
}

/// `model` on `threads` threads, splitting even the smallest job.
pub fn on_threads(model: &Lstm, threads: usize) -> Lstm {
    model
        .clone()
        .with_threads(threads)
        .unwrap()
        .with_parallel_threshold(0.0)
}

/// The crate's run counters, read at `start`: what ran since then. The
/// counters are per process, so other tests running meanwhile can only add
/// to them (tests ask "ran at least …").
#[derive(Clone, Copy, Debug)]
pub struct Runs {
    isa: Isa,
    mine: u64,
    kernel: u64,
    specialized: u64,
    small_batch: u64,
}

impl Runs {
    pub fn start(isa: Isa) -> Runs {
        Runs {
            isa,
            mine: lstm_kernels::diagnostics::kernel_runs_on_this_thread(isa),
            kernel: lstm_kernels::diagnostics::kernel_runs(isa),
            specialized: lstm_kernels::diagnostics::specialized_runs(),
            small_batch: lstm_kernels::diagnostics::small_batch_runs(),
        }
    }

    /// Chunk runs of `isa`'s kernel entry on the calling thread since
    /// `start` (exact for a single-threaded model's calls, which run on
    /// it: tests running meanwhile do not count).
    pub fn kernel_on_this_thread(&self) -> u64 {
        lstm_kernels::diagnostics::kernel_runs_on_this_thread(self.isa) - self.mine
    }

    /// Chunk runs of `isa`'s kernel entry since `start`.
    pub fn kernel(&self) -> u64 {
        Runs::start(self.isa).kernel.saturating_sub(self.kernel)
    }

    /// Chunk runs of generated (specialized) kernels since `start`.
    pub fn specialized(&self) -> u64 {
        Runs::start(self.isa)
            .specialized
            .saturating_sub(self.specialized)
    }

    /// Chunk runs of the small generated kernels' batch-in-lanes layout
    /// since `start`.
    pub fn small_batch(&self) -> u64 {
        Runs::start(self.isa)
            .small_batch
            .saturating_sub(self.small_batch)
    }
}

/// `model` forced onto the generic kernel.
pub fn generic_kernel(model: Lstm) -> lstm_kernels::Result<Lstm> {
    model.with_kernel(KernelChoice::Generic)
}

/// `model` forced onto its generated kernel (an error if none matches).
pub fn specialized_kernel(model: Lstm) -> lstm_kernels::Result<Lstm> {
    model.with_kernel(KernelChoice::Specialized)
}

/// The shape tags build.rs generated kernels for (`7x5h3p`, …).
pub fn generated_shapes() -> Vec<String> {
    lstm_kernels::specialized_shapes()
}

/// The names of all generated kernels (`cell_7x5h3p__avx2`, …).
pub fn generated_kernels() -> Vec<&'static str> {
    lstm_kernels::specialized_kernels()
}

/// The config of a shape tag (`7x5h3p`).
pub fn shape_config(tag: &str) -> Result<LstmConfig, String> {
    lstm_kernels::config_from_shape_tag(tag)
}
