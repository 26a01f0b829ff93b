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

use common::{Case, check_run, config};
use proptest::prelude::*;

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
        let model = case.model();
        let run = case.run_forward(&model);
        check_run(&case, &run).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn step_by_step_matches_reference(case in arb_case()) {
        let model = case.model();
        let run = case.run_steps(&model);
        check_run(&case, &run).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn threads_give_identical_bits(case in arb_case(), threads in 2usize..=5) {
        let one = case.run_forward(&case.model());
        let many = case.run_forward(&case.model().with_threads(threads).unwrap());
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        prop_assert_eq!(bits(&one.0), bits(&many.0));
        prop_assert_eq!(bits(&one.1), bits(&many.1));
        prop_assert_eq!(bits(&one.2), bits(&many.2));
    }
}

/// Edge shapes, deterministic: 1, primes and sizes around vector widths.
#[test]
fn edge_shapes() {
    let dims = [1usize, 2, 3, 7, 8, 15, 16, 17, 31, 32, 33, 63, 64, 65];
    for (k, &h) in dims.iter().enumerate() {
        let n = dims[(k * 5 + 3) % dims.len()];
        for &b in &[1usize, 4, 13] {
            for (head, peep) in [(None, false), (Some(h.div_ceil(2)), true)] {
                let case = Case::new(config(n, h, head, peep), b, 3, (k * 31 + b) as u64, 1.0);
                check_run(&case, &case.run_forward(&case.model()))
                    .unwrap_or_else(|e| panic!("n={n} h={h} b={b}: {e}"));
            }
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
