//! Property tests: the public API against the scalar `f64` reference.
//!
//! The tolerance is not a fixed epsilon. `reference::forward_with_bound`
//! derives, per output element, how far a correct `f32` implementation can
//! be from the exact result: `γ_K·Σ|terms|` for every dot product of K terms
//! (`γ_K = K·u/(1−K·u)`, `u = 2⁻²⁴`), the documented activation error
//! (`ACTIVATION_MAX_ABS_ERROR` = 1e-6) with the slopes of σ (≤ 1/4) and tanh
//! (≤ 1), and the propagation of earlier errors through `c` and `m` from
//! step to step. A correct implementation can never exceed it; a wrong
//! weight, gate order or missing term does (see `bound_detects_errors`).

mod common;

use common::{Case, Runs, bits, check_run, check_stepwise, config, on_threads};
use lstm_kernels::{Isa, Lstm, LstmConfig, LstmWeights, Peephole, Precision};
use proptest::prelude::*;

/// Runs `f` on the case's model under every ISA this CPU has, checking that
/// the ISA's kernel really ran.
fn on_every_isa(
    case: &Case,
    mut f: impl FnMut(Isa, &Lstm) -> Result<(), TestCaseError>,
) -> Result<(), TestCaseError> {
    for isa in Isa::all_available() {
        let model = case.model().with_isa(isa).unwrap();
        prop_assert_eq!(model.isa(), isa);
        // The model `f` gets runs `isa`'s kernel: counted on this thread,
        // where a single-threaded model runs (the process-wide counter
        // also counts the other tests running meanwhile).
        let runs = Runs::start(isa);
        case.run_forward(&model);
        prop_assert!(
            runs.kernel_on_this_thread() > 0,
            "the {} kernel did not run",
            isa
        );
        f(isa, &model)?;
    }
    Ok(())
}

fn arb_case() -> impl Strategy<Value = Case> {
    (
        1usize..=40,
        1usize..=40,
        any::<bool>(),
        any::<bool>(),
        1usize..=17,
        1usize..=6,
        any::<u64>(),
        prop_oneof![Just(1.0f32), Just(4.0f32)],
    )
        .prop_flat_map(|(n, h, has_head, peep, b, t, seed, scale)| {
            let head = if has_head {
                (1..=h).prop_map(Some).boxed()
            } else {
                Just(None).boxed()
            };
            head.prop_map(move |head| Case::new(config(n, h, head, peep), b, t, seed, scale))
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, ..ProptestConfig::default() })]

    #[test]
    fn forward_matches_reference(case in arb_case()) {
        on_every_isa(&case, |isa, model| {
            check_run(&case, &case.run_forward(model)).map_err(|e| TestCaseError::fail(format!("{isa}: {e}")))
        })?;
    }

    #[test]
    fn step_by_step_matches_reference(case in arb_case()) {
        on_every_isa(&case, |isa, model| {
            check_run(&case, &case.run_steps(model)).map_err(|e| TestCaseError::fail(format!("{isa}: {e}")))?;
            // And each step within its own one-step bound, from the
            // kernel's state before it: the whole-run bound compounds with
            // worst-case slopes and is loose by the last steps.
            check_stepwise(&case, model, Precision::F32)
                .map(|_| ())
                .map_err(|e| TestCaseError::fail(format!("{isa}: {e}")))
        })?;
    }

    #[test]
    fn threads_give_identical_bits(case in arb_case(), threads in 2usize..=5) {
        on_every_isa(&case, |isa, model| {
            let one = case.run_forward(model);
            let runs = Runs::start(isa);
            let many = case.run_forward(&on_threads(model, threads));
            // Row blocks are at most 6 rows, so B > 6 must have been split.
            if case.batch > 6 {
                prop_assert!(runs.kernel() >= 2, "batch {} ran as one chunk", case.batch);
            }
            prop_assert_eq!(bits(&one.0), bits(&many.0));
            prop_assert_eq!(bits(&one.1), bits(&many.1));
            prop_assert_eq!(bits(&one.2), bits(&many.2));
            Ok(())
        })?;
    }
}

/// Edge shapes, deterministic: 1, primes and sizes around vector widths,
/// on every ISA this CPU has (each checked to have run).
#[test]
fn edge_shapes() {
    let dims = [
        1usize, 2, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 129,
    ];
    for isa in Isa::all_available() {
        let runs = Runs::start(isa);
        for (k, &h) in dims.iter().enumerate() {
            let n = dims[(k * 5 + 3) % dims.len()];
            for &b in &[1usize, 2, 3, 4, 5, 6, 7, 13, 37] {
                for (head, peep) in [(None, false), (Some(h.div_ceil(2)), true)] {
                    let case = Case::new(config(n, h, head, peep), b, 3, (k * 31 + b) as u64, 1.0);
                    let model = case.model().with_isa(isa).unwrap();
                    assert_eq!(model.isa(), isa);
                    check_run(&case, &case.run_forward(&model))
                        .unwrap_or_else(|e| panic!("{isa}: n={n} h={h} b={b}: {e}"));
                }
            }
        }
        assert!(runs.kernel() > 0, "the {isa} kernels did not run");
    }
}

/// Batches above 64 rows run as several chunks, one after another on one
/// thread (cache blocking): still within the bound, and bitwise equal to
/// the same batch on 2 threads (other chunks).
#[test]
fn large_batches_run_in_chunks_exactly() {
    for (n, h, head, peep) in [(9, 17, None, false), (12, 33, Some(5), true)] {
        let case = Case::new(config(n, h, head, peep), 130, 3, 77, 1.0);
        for isa in Isa::all_available() {
            let model = case.model().with_isa(isa).unwrap();
            let runs = Runs::start(isa);
            let one = case.run_forward(&model);
            assert!(
                runs.kernel() >= 3,
                "{isa}: 130 rows must run as at least 3 chunks"
            );
            check_run(&case, &one).unwrap_or_else(|e| panic!("{isa} h={h}: {e}"));
            let two = case.run_forward(&on_threads(&model, 2));
            assert_eq!(bits(&one.0), bits(&two.0), "{isa} h={h}: 2 threads");
            assert_eq!(bits(&one.1), bits(&two.1), "{isa} h={h}: c");
        }
    }
}

/// The bound is tight enough to catch real mistakes: a single weight off by
/// 1e-3, or the output gate using the old c instead of the new one, fails.
#[test]
fn bound_detects_errors() {
    let case = Case::new(config(7, 5, Some(3), true), 10, 6, 11, 1.0);
    assert!(check_run(&case, &case.run_forward(&case.model())).is_ok());

    let mut bad = case.clone();
    bad.weights.gates[3 * 20 + 2] += 1e-3;
    let run = bad.run_forward(&bad.model());
    assert!(
        check_run(&case, &run).is_err(),
        "a 1e-3 weight change went unnoticed"
    );

    let mut bad = case.clone();
    if let Some(v) = bad.weights.v_o.as_mut() {
        v[7] += 1e-3;
    }
    let run = bad.run_forward(&bad.model());
    assert!(
        check_run(&case, &run).is_err(),
        "a 1e-3 peephole change went unnoticed"
    );

    // And the bound is small next to the 1e-3 changes above: after 6 steps
    // it is a few 1e-5, most of it the 1e-6 activation allowance propagated.
    let (b, _) = case.reference();
    let worst = b.y_err.iter().cloned().fold(0.0, f64::max);
    assert!(worst < 1e-4, "bound {worst} is too loose to be useful");
}

/// The ISA named by `LSTM_KERNELS_ISA` (CI runs this file once per ISA) is
/// the one models pick up, and its kernel is the one that runs.
#[test]
fn forced_isa_really_runs() {
    let cfg = LstmConfig::new(9, 20).with_head(5);
    let model = Lstm::new(cfg, LstmWeights::random(&cfg, 3).unwrap()).unwrap();
    match Isa::from_env().unwrap() {
        Some(forced) => assert_eq!(model.isa(), forced),
        None => assert_eq!(model.isa(), Isa::detect()),
    }
    let isa = model.isa();
    let runs = Runs::start(isa);
    let mut st = model.new_state(3).unwrap();
    model.step(&mut st, &[0.5; 27], &mut [0.0; 15]).unwrap();
    assert!(runs.kernel() > 0, "{isa} did not run");
    println!("ran the {isa} kernel");
}

/// Subnormal inputs, weights and states give the same results as zeros would
/// (flushed) and never a NaN.
#[test]
fn subnormals_are_harmless() {
    let tiny = f32::from_bits(1);
    let mut case = Case::new(config(16, 24, None, true), 7, 4, 5, 1.0);
    case.xs.iter_mut().step_by(3).for_each(|v| *v = tiny);
    case.c0.iter_mut().for_each(|v| *v *= 1e-39);
    case.m0.iter_mut().for_each(|v| *v *= 1e-39);
    for isa in Isa::all_available() {
        let runs = Runs::start(isa);
        let run = case.run_forward(&case.model().with_isa(isa).unwrap());
        assert!(
            runs.kernel_on_this_thread() > 0,
            "the {isa} kernel did not run"
        );
        check_run(&case, &run).unwrap_or_else(|e| panic!("{isa}: {e}"));
    }
}

/// Small batches split their hidden units across threads (with a barrier
/// between phases): bitwise the same as one thread, and correct, for every
/// variant and ISA.
#[test]
fn hidden_unit_split_is_exact() {
    for (head, peep) in [
        (None, false),
        (None, true),
        (Some(50), false),
        (Some(129), true),
    ] {
        for b in [1usize, 2, 5] {
            let case = Case::new(config(33, 129, head, peep), b, 5, b as u64, 1.0);
            for isa in Isa::all_available() {
                let model = case.model().with_isa(isa).unwrap();
                let one = case.run_forward(&model);
                check_run(&case, &one).unwrap_or_else(|e| panic!("{isa}: {e}"));
                for threads in [2, 3] {
                    let runs = Runs::start(isa);
                    let split = on_threads(&model, threads);
                    let many = case.run_forward(&split);
                    // (≥: other tests in this process may run the same ISA meanwhile)
                    assert!(
                        runs.kernel() >= threads as u64,
                        "{isa}: not split over {threads} threads"
                    );
                    assert_eq!(
                        bits(&one.0),
                        bits(&many.0),
                        "{isa} {threads}t head={head:?} peep={peep} b={b}: y"
                    );
                    assert_eq!(bits(&one.1), bits(&many.1), "{isa} {threads}t: c");
                    assert_eq!(bits(&one.2), bits(&many.2), "{isa} {threads}t: m");
                    let steps = case.run_steps(&split);
                    assert_eq!(
                        bits(&one.0),
                        bits(&steps.0),
                        "{isa} {threads}t: step() vs forward()"
                    );
                }
            }
        }
    }
}

/// Random variant configs: diagonal or matrix peephole, projection (with
/// proj_clip), forget bias, cell clip, ONNX clip, coupled gates.
fn arb_variant_case() -> impl Strategy<Value = Case> {
    (
        (
            1usize..=24,
            1usize..=40,
            0usize..3,
            prop::option::of(1usize..=44),
            any::<bool>(),
        ),
        (
            prop::option::of(0.05f32..3.0),
            prop::option::of(0.05f32..3.0),
            prop::option::of(0.05f32..3.0),
            any::<bool>(),
        ),
        (
            1usize..=9,
            1usize..=5,
            any::<u64>(),
            prop_oneof![Just(1.0f32), Just(4.0f32)],
        ),
    )
        .prop_map(
            |(
                (n, h, peep, proj, fb),
                (cell_clip, proj_clip, clip, coupled),
                (b, t, seed, scale),
            )| {
                let mut cfg = LstmConfig::new(n, h)
                    .with_peephole([Peephole::None, Peephole::Diagonal, Peephole::Matrix][peep]);
                if let Some(p) = proj {
                    // At most the hidden size (a larger one is refused).
                    cfg = cfg.with_projection(p.min(h));
                    if let Some(c) = proj_clip {
                        cfg = cfg.with_proj_clip(c);
                    }
                }
                if fb {
                    cfg = cfg.with_forget_bias(1.0);
                }
                if let Some(c) = cell_clip {
                    cfg = cfg.with_cell_clip(c);
                }
                // ONNX clip and coupled gates do not combine with the matrix peephole.
                if peep != 2 {
                    if let Some(c) = clip {
                        cfg = cfg.with_clip(c);
                    }
                    cfg = cfg.with_input_forget(coupled);
                }
                Case::new(cfg, b, t, seed, scale)
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 160, ..ProptestConfig::default() })]

    #[test]
    fn variants_match_reference(case in arb_variant_case()) {
        on_every_isa(&case, |isa, model| {
            check_run(&case, &case.run_forward(model)).map_err(|e| TestCaseError::fail(format!("{isa} {:?}: {e}", case.cfg)))?;
            check_run(&case, &case.run_steps(model)).map_err(|e| TestCaseError::fail(format!("{isa} step(): {e}")))
        })?;
    }

    #[test]
    fn variants_identical_bits_over_threads(case in arb_variant_case(), threads in 2usize..=3) {
        on_every_isa(&case, |_, model| {
            let one = case.run_forward(model);
            let many = case.run_forward(&on_threads(model, threads));
            prop_assert_eq!(bits(&one.0), bits(&many.0));
            prop_assert_eq!(bits(&one.1), bits(&many.1));
            prop_assert_eq!(bits(&one.2), bits(&many.2));
            Ok(())
        })?;
    }
}

/// Each variant really changes the result (the kernels do not ignore a
/// switch), and the reference agrees with the kernels on each.
#[test]
fn every_variant_switch_matters() {
    let base = LstmConfig::new(6, 20);
    let variants = [
        base.with_peephole(Peephole::Diagonal),
        base.with_projection(7),
        base.with_projection(7).with_proj_clip(0.05),
        base.with_forget_bias(1.0),
        base.with_cell_clip(0.1),
        base.with_clip(0.2),
        base.with_input_forget(true),
    ];
    let plain = Case::new(base, 3, 4, 9, 3.0);
    let y0 = plain.run_forward(&plain.model()).0;
    for cfg in variants {
        let mut case = Case::new(cfg, 3, 4, 9, 3.0);
        // Same shared weights as the plain case where shapes agree.
        if cfg.projection.is_none() {
            case.weights.gates.clone_from(&plain.weights.gates);
            case.weights.bias.clone_from(&plain.weights.bias);
        }
        let run = case.run_forward(&case.model());
        check_run(&case, &run).unwrap_or_else(|e| panic!("{cfg:?}: {e}"));
        if cfg.projection.is_none() {
            assert_ne!(run.0, y0, "{cfg:?} changed nothing");
        }
    }
}
