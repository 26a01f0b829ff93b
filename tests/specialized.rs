//! The generated, shape-specialized kernels (build.rs + src/codegen.rs):
//! every one of them, on every ISA this CPU has, against the scalar
//! reference (derived bound) and bitwise against the generic kernel, with
//! proof that the specialized path really ran; and the build-time shape
//! list's error handling. (`lstm codegen` is tested in tests/cli.rs.)

mod common;

use std::panic::{AssertUnwindSafe, catch_unwind};

use common::{
    Case, Runs, check_stepwise, config, generated_kernels, generated_shapes, generic_kernel,
    on_threads, same_bits, shape_config, specialized_kernel,
};
use lstm_kernels::{Isa, Precision};

/// Every generated kernel, on every ISA this CPU has, over batches around
/// its row groups: a failure does not stop the sweep; all of them are
/// listed at the end.
#[test]
fn every_generated_kernel_matches_the_reference_and_the_generic_kernel() {
    let shapes = generated_shapes();
    assert!(
        shapes.iter().any(|s| s == "7x5h3p"),
        "the seed's cell is in the default list: {shapes:?} (this suite needs the defaults: \
         a LSTM_KERNELS_SHAPES starting with `only:` removes them)"
    );
    let mut failures: Vec<String> = Vec::new();
    let mut checked = 0;
    // (name part, batch-in-lanes) of every check that passed: the kernel
    // it proved ran.
    let mut proven: Vec<(String, bool)> = Vec::new();
    for tag in &shapes {
        let cfg = match shape_config(tag) {
            Ok(cfg) => cfg,
            Err(e) => {
                failures.push(format!("shape {tag}: no config: {e}"));
                continue;
            }
        };
        let (n, h, head, peep) = (
            cfg.n_input,
            cfg.n_hidden,
            cfg.head,
            cfg.peephole == lstm_kernels::Peephole::Matrix,
        );
        // Batches around the row groups; fewer for the big shapes (the f64
        // reference is slow).
        let batches: &[usize] = if h <= 128 {
            &[1, 2, 4, 5, 6, 7, 8, 9, 13, 16, 17]
        } else {
            &[1, 7]
        };
        // Small cells: 70 steps, so that the batch-in-lanes layout runs
        // several blocks of steps (at most 32 each; 17 for 10 rows of the
        // seed's cell, 3 for 16 rows of 24x8), the last one partial.
        let steps = if h <= 16 { 70 } else { 3 };
        for &b in batches {
            let case = Case::new(config(n, h, head, peep), b, steps, (n * 31 + b) as u64, 2.0);
            for isa in Isa::all_available() {
                // Named for what runs: `<body>_<shape>__<isa>_f32x<lanes>`.
                let name = format!("_{tag}__{isa}_f32x");
                // Small cells (H within one vector, ≤ 32 inputs) switch to
                // the batch-in-lanes layout from 5 rows on.
                let batch_in_lanes = h <= isa.lanes() && n <= 32 && b >= 5;
                let failed = catch_unwind(AssertUnwindSafe(|| {
                    check_kernel(&case, isa, &name, batch_in_lanes)
                }))
                .unwrap_or_else(|panic| vec![format!("panicked: {}", panic_text(&*panic))]);
                if failed.is_empty() {
                    proven.push((name.clone(), batch_in_lanes));
                }
                failures.extend(
                    failed
                        .into_iter()
                        .map(|what| format!("{name} (isa {isa}, batch {b}): {what}")),
                );
                checked += 1;
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures over {checked} (kernel, batch) pairs:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // Every generated kernel of an ISA this CPU has was proven to run (the
    // `batch_` bodies by the batch-in-lanes cases, the others by the rest).
    let isas: Vec<String> = Isa::all_available()
        .iter()
        .map(|i| format!("__{i}_"))
        .collect();
    let runnable: Vec<&str> = generated_kernels()
        .into_iter()
        .filter(|k| isas.iter().any(|i| k.contains(i.as_str())))
        .collect();
    let unproven: Vec<&&str> = runnable
        .iter()
        .filter(|k| {
            !proven
                .iter()
                .any(|(part, lanes)| k.contains(part.as_str()) && k.starts_with("batch_") == *lanes)
        })
        .collect();
    assert!(
        unproven.is_empty(),
        "generated kernels no check proved to run: {unproven:?}"
    );
    assert!(
        !runnable.is_empty(),
        "no generated kernel for this CPU's ISAs: {:?}",
        generated_kernels()
    );
    println!(
        "checked {checked} (kernel, batch) pairs over {} generated kernels",
        generated_kernels().len()
    );
}

/// Every check of the generated kernel whose name contains `name` on
/// `case` under `isa`; returns what failed (empty: all passed). Forward within the reference bound,
/// bitwise equal to the generic kernel (outputs, c, m), and so are step()
/// and 2 threads; the counters prove that the generated kernel, on `isa`,
/// ran, and in the batch-in-lanes layout exactly when `batch_in_lanes`.
fn check_kernel(case: &Case, isa: Isa, name: &str, batch_in_lanes: bool) -> Vec<String> {
    let mut failed = Vec::new();
    let generic = generic_kernel(case.model().with_isa(isa).unwrap()).unwrap();
    let special = match specialized_kernel(case.model().with_isa(isa).unwrap()) {
        Ok(m) => m,
        Err(e) => return vec![format!("no specialized model: {e}")],
    };
    if !special.kernel_name().contains(name)
        || !generated_kernels().contains(&special.kernel_name())
    {
        failed.push(format!("kernel_name() is `{}`", special.kernel_name()));
    }
    // What a call of this batch runs, as the model reports it.
    let ran = special.kernels_for_batch(case.batch).unwrap();
    if (ran.len() == 1 && ran[0].starts_with("batch_")) != batch_in_lanes {
        failed.push(format!("kernels_for_batch() says {ran:?}"));
    }
    if generic.kernel_name() != "generic" {
        failed.push(format!(
            "the generic model's kernel_name() is `{}`",
            generic.kernel_name()
        ));
    }
    let runs = Runs::start(isa);
    let got = case.run_forward(&special);
    if !(runs.specialized() > 0 && runs.kernel() > 0) {
        failed.push("did not run".to_string());
    }
    if (runs.small_batch() > 0) != batch_in_lanes {
        failed.push(format!(
            "batch-in-lanes layout ran: expected {batch_in_lanes}"
        ));
    }
    // Against the reference step by step (70 steps for the small cells:
    // a whole-run bound compounds past any use by then); forward's
    // outputs are bitwise those of step() (below).
    if let Err(e) = check_stepwise(case, &special, Precision::F32) {
        failed.push(e);
    }
    // Same sums in the same order: bitwise equal to generic.
    let want = case.run_forward(&generic);
    // step() and threads go through the same kernel.
    let steps = case.run_steps(&special);
    let threaded = case.run_forward(&on_threads(&special, 2));
    for (what, got, want) in [
        ("outputs vs step()", &got.0, &steps.0),
        ("outputs vs generic", &got.0, &want.0),
        ("c vs generic", &got.1, &want.1),
        ("m vs generic", &got.2, &want.2),
        ("step() outputs vs generic", &steps.0, &want.0),
        ("2 threads' outputs vs generic", &threaded.0, &want.0),
    ] {
        if let Err(e) = same_bits(what, got, want) {
            failed.push(e);
        }
    }
    failed
}

/// The message of a caught panic.
fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_string()
    }
}

#[test]
fn auto_picks_specialized_only_for_matching_shapes() {
    let seed = config(7, 5, Some(3), true);
    let m = lstm_kernels::Lstm::new(seed, lstm_kernels::LstmWeights::random(&seed, 1).unwrap())
        .unwrap();
    assert!(
        m.kernel_name().starts_with("lanes_7x5h3p__"),
        "{} (the seed's cell is a default shape; an `only:` list removes it)",
        m.kernel_name()
    );
    // Same sizes, other variant: no match.
    let plain = config(7, 5, Some(3), false);
    let m = lstm_kernels::Lstm::new(plain, lstm_kernels::LstmWeights::random(&plain, 1).unwrap())
        .unwrap();
    assert_eq!(m.kernel_name(), "generic");
    let e = specialized_kernel(m).unwrap_err().to_string();
    assert!(
        e.contains("no specialized kernel") && e.contains("7x5h3p"),
        "{e}"
    );
}

/// The build script wrote exactly the committed snapshot of the default
/// list (the generator's own tests compare the generator with it; its
/// build-script logic is unit-tested there too).
#[test]
fn built_kernels_are_the_committed_snapshot() {
    if option_env!("LSTM_KERNELS_SHAPES").is_some() {
        return; // a custom list: nothing to compare with
    }
    assert!(
        lstm_kernels::generated_source() == include_str!("snapshots/kernels.rs"),
        "the generated kernels differ from tests/snapshots/kernels.rs"
    );
}
