//! Shared helpers for the integration tests: random cases and the
//! comparison against the scalar reference with its derived error bound.
#![allow(dead_code)]

use lstm_kernels::reference::{self, Bounded, ErrorModel, RefState};
use lstm_kernels::rng::SplitMix64;
use lstm_kernels::{Lstm, LstmConfig, LstmWeights, Peephole};

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
        let mut weights = LstmWeights::random(&cfg, seed);
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
        let seed = self.weights.to_seed(&self.cfg).expect("valid case");
        let mut st = RefState::from_f32(self.batch, &self.c0, &self.m0);
        let b = reference::forward_with_bound(
            &self.cfg,
            &seed,
            &self.xs,
            &mut st,
            ErrorModel::default(),
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
    let (b, st) = case.reference();
    within("y", &run.0, &b.y, &b.y_err)?;
    within("c", &run.1, &st.c, &b.c_err)?;
    within("m", &run.2, &st.m, &b.m_err)
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
