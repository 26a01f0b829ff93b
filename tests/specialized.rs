//! The generated, shape-specialized kernels (build.rs + src/codegen.rs):
//! every one of them, on every ISA this CPU has, against the scalar
//! reference (derived bound) and bitwise against the generic kernel, with
//! proof that the specialized path really ran; and the build-time shape
//! list's error handling. (`lstm codegen` is tested in tests/cli.rs.)

mod common;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::process::Command;

use common::{
    Case, Runs, check_run, config, generated_kernels, generated_shapes, generic_kernel, on_threads,
    same_bits, shape_config, specialized_kernel,
};
use lstm_kernels::Isa;

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
                let name = format!("cell_{tag}__{isa}");
                // Small cells (H within one vector, ≤ 32 inputs) switch to
                // the batch-in-lanes layout from 5 rows on.
                let batch_in_lanes = h <= isa.lanes() && n <= 32 && b >= 5;
                let failed = catch_unwind(AssertUnwindSafe(|| {
                    check_kernel(&case, isa, &name, batch_in_lanes)
                }))
                .unwrap_or_else(|panic| vec![format!("panicked: {}", panic_text(&*panic))]);
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
    assert!(checked >= generated_kernels().len().min(1));
    println!(
        "checked {checked} (kernel, batch) pairs over {} generated kernels",
        generated_kernels().len()
    );
}

/// Every check of the generated kernel `name` on `case` under `isa`; returns
/// what failed (empty: all passed). Forward within the reference bound,
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
    if special.kernel_name() != name {
        failed.push(format!("kernel_name() is `{}`", special.kernel_name()));
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
    if let Err(e) = check_run(case, &got) {
        failed.push(e);
    }
    // Same sums in the same order: bitwise equal to generic.
    let want = case.run_forward(&generic);
    // step() and threads go through the same kernel.
    let steps = case.run_steps(&special);
    let threaded = case.run_forward(&on_threads(&special, 2));
    for (what, got, want) in [
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
    let e = specialized_kernel(m).unwrap_err().to_string();
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
