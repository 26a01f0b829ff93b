//! The generated, shape-specialized kernels (build.rs + src/codegen.rs):
//! every one of them, on every ISA this CPU has, against the scalar
//! reference (derived bound) and bitwise against the generic kernel, with
//! proof that the specialized path really ran; and the build-time shape
//! list's error handling. (`lstm codegen` is tested in tests/cli.rs.)

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{Case, check_run, config};
use lstm_kernels::{
    Isa, KernelChoice, kernel_runs, small_batch_runs, specialized_kernels, specialized_runs,
    specialized_shapes,
};

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
                let name = format!("cell_{tag}__{isa}");
                assert_eq!(special.kernel_name(), name);
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
        m.kernel_name().starts_with("cell_7x5h3p__"),
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

/// The build script of this very build, found beside the test binaries.
fn build_script() -> PathBuf {
    // This test runs as target/<profile>/deps/specialized-<hash>; the build
    // scripts are in target/<profile>/build (found without the `lstm`
    // binary, so that this file needs no `cli` feature).
    let exe = std::env::current_exe().unwrap();
    let build = exe.parent().unwrap().parent().unwrap().join("build");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&build)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("build-script-build"))
        .filter(|p| {
            p.exists()
                && p.parent()
                    .unwrap()
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("lstm-kernels-")
        })
        .collect();
    found.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
    found.pop().expect("build script binary")
}

#[test]
fn bad_shape_list_fails_the_build_with_a_message() {
    let script = build_script();
    let out_dir = tempfile::tempdir().unwrap();
    let run = |shapes: &str| {
        Command::new(&script)
            .env("OUT_DIR", out_dir.path())
            .env("LSTM_KERNELS_SHAPES", shapes)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap()
    };
    for (bad, needle) in [
        ("7x5h3p,zz", "bad shape `zz`"),
        ("7x5h9", "head is larger than hidden"),
        ("7x0", "hidden must be"),
    ] {
        let out = run(bad);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{bad}: build script succeeded");
        assert!(
            err.contains("LSTM_KERNELS_SHAPES") && err.contains(needle),
            "{bad}: {err}"
        );
    }
    let out = run("40x128, 3x2h1");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let src = std::fs::read_to_string(out_dir.path().join("kernels.rs")).unwrap();
    for name in [
        "cell_40x128__avx512",
        "cell_3x2h1__portable",
        "cell_7x5h3p__avx2",
    ] {
        assert!(src.contains(&format!("fn {name}(")), "{name} missing");
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("cargo:rerun-if-env-changed=LSTM_KERNELS_SHAPES"));
    assert!(stdout.contains("cargo:rerun-if-changed=src/codegen.rs"));
}
