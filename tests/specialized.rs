//! The generated, shape-specialized kernels (build.rs + src/codegen.rs):
//! every one of them, on every ISA this CPU has, against the scalar
//! reference (derived bound) and bitwise against the generic kernel, with
//! proof that the specialized path really ran; and the build-time shape
//! list's error handling.

mod common;

use std::process::Command;

use common::{Case, check_run, config};
use lstm_kernels::diagnostics::{kernel_runs, small_batch_runs, specialized_runs};
use lstm_kernels::{Isa, KernelChoice, specialized_kernels, specialized_shapes};

#[test]
fn every_generated_kernel_matches_the_reference_and_the_generic_kernel() {
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    let shapes = specialized_shapes();
    assert!(
        shapes.iter().any(|s| s == "7x5h3p"),
        "the seed's cell is in the default list: {shapes:?} (this suite needs the defaults: \
         a LSTM_KERNELS_SHAPES starting with `only:` removes them)"
    );
    let mut ran = 0;
    for tag in &shapes {
        let cfg = lstm_kernels::config_from_shape_tag(tag).unwrap();
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
                let generic = case
                    .model()
                    .with_isa(isa)
                    .unwrap()
                    .with_kernel(KernelChoice::Generic)
                    .unwrap();
                let special = case
                    .model()
                    .with_isa(isa)
                    .unwrap()
                    .with_kernel(KernelChoice::Specialized)
                    .unwrap();
                // Named for what runs: `<body>_<shape>__<isa>_f32x<lanes>`.
                let name = special.kernel_name();
                assert!(
                    name.contains(&format!("_{tag}__{isa}_f32x"))
                        && specialized_kernels().contains(&name),
                    "{name}"
                );
                assert_eq!(generic.kernel_name(), "generic");
                let (before, isa_before) = (specialized_runs(), kernel_runs(isa));
                let batch_before = small_batch_runs();
                let got = case.run_forward(&special);
                assert!(
                    specialized_runs() > before && kernel_runs(isa) > isa_before,
                    "{name} did not run"
                );
                // Small cells (H within one vector, ≤ 32 inputs) switch to
                // the batch-in-lanes layout from 5 rows on.
                let batch = h <= isa.lanes() && n <= 32 && b >= 5;
                assert_eq!(
                    small_batch_runs() > batch_before,
                    batch,
                    "{name} b={b}: batch-in-lanes layout ran: expected {batch}"
                );
                let names = special.kernels_for_batch(b);
                assert_eq!(
                    names.len() == 1 && names[0].starts_with("batch_"),
                    batch,
                    "{name} b={b}: kernels_for_batch says {names:?}"
                );
                check_run(&case, &got).unwrap_or_else(|e| panic!("{name} b={b}: {e}"));
                // Same sums in the same order: bitwise equal to generic.
                let want = case.run_forward(&generic);
                assert_eq!(
                    bits(&got.0),
                    bits(&want.0),
                    "{name} b={b}: outputs differ from generic"
                );
                assert_eq!(
                    bits(&got.1),
                    bits(&want.1),
                    "{name} b={b}: c differs from generic"
                );
                assert_eq!(
                    bits(&got.2),
                    bits(&want.2),
                    "{name} b={b}: m differs from generic"
                );
                // step() and threads go through the same kernel.
                let steps = case.run_steps(&special);
                assert_eq!(bits(&steps.0), bits(&want.0), "{name} b={b}: step()");
                let threaded = case.run_forward(
                    &special
                        .clone()
                        .with_threads(2)
                        .unwrap()
                        .with_parallel_threshold(0.0),
                );
                assert_eq!(bits(&threaded.0), bits(&want.0), "{name} b={b}: 2 threads");
                ran += 1;
            }
        }
    }
    assert!(ran >= specialized_kernels().len().min(1));
    println!(
        "checked {ran} (kernel, batch) pairs over {} generated kernels",
        specialized_kernels().len()
    );
}

#[test]
fn auto_picks_specialized_only_for_matching_shapes() {
    let seed = config(7, 5, Some(3), true);
    let m = lstm_kernels::Lstm::new(seed, lstm_kernels::LstmWeights::random(&seed, 1)).unwrap();
    assert!(
        m.kernel_name().starts_with("lanes_7x5h3p__"),
        "{} (the seed's cell is a default shape; an `only:` list removes it)",
        m.kernel_name()
    );
    // Same sizes, other variant: no match.
    let plain = config(7, 5, Some(3), false);
    let m = lstm_kernels::Lstm::new(plain, lstm_kernels::LstmWeights::random(&plain, 1)).unwrap();
    assert_eq!(m.kernel_name(), "generic");
    let e = m
        .with_kernel(KernelChoice::Specialized)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("no specialized kernel") && e.contains("7x5h3p"),
        "{e}"
    );
}

/// The build script wrote exactly the committed snapshot of the default
/// list (the generator's own tests compare the generator with it).
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

#[test]
fn lstm_codegen_dumps_the_source() {
    let out = Command::new(env!("CARGO_BIN_EXE_lstm"))
        .arg("codegen")
        .output()
        .unwrap();
    assert!(out.status.success());
    let src = String::from_utf8(out.stdout).unwrap();
    assert!(src.starts_with("// @generated by lstm-kernels-codegen"));
    for name in specialized_kernels() {
        assert!(src.contains(&format!("\"{name}\"")), "{name}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_lstm"))
        .args(["codegen", "--shapes", "only:9x9"])
        .output()
        .unwrap();
    let src = String::from_utf8_lossy(&out.stdout);
    assert!(
        src.contains("\"blocked_9x9__avx2_f32x8\"") && src.contains("\"lanes_9x9__avx512_f32x16\"")
    );
    let out = Command::new(env!("CARGO_BIN_EXE_lstm"))
        .args(["codegen", "--shapes", "9y9"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad shape `9y9`"));
}
