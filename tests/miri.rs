//! The kernels' pointer arithmetic on the portable path, small enough to
//! run under Miri (`.ci/run` does when a nightly toolchain with Miri is
//! installed: `cargo +nightly miri test --no-default-features --features
//! diagnostics --test miri`; the tests on two threads with
//! `MIRIFLAGS=-Zmiri-tree-borrows`, see below). Every body runs — the generic blocked kernel
//! with each variant, a hidden-unit split, chunking over threads, and the
//! generated blocked, gates-in-lanes and batch-in-lanes kernels — with
//! partial register blocks and, for the batch layout, more steps than one
//! block of its buffers; results are checked against the reference too.
//! Without Miri it is an ordinary (fast) test.

mod common;

use common::{Case, Runs, check_stepwise, config, same_bits};
use lstm_kernels::{Isa, KernelChoice, Lstm, LstmConfig, Peephole, Precision};

/// Runs `case` on the portable path with `threads` (chunked from any
/// size) and `choice`, checking against the reference.
fn run(case: &Case, threads: usize, choice: KernelChoice) -> Lstm {
    let model = case
        .model()
        .with_isa(Isa::Portable)
        .unwrap()
        .with_kernel(choice)
        .unwrap()
        .with_threads(threads)
        .unwrap()
        .with_parallel_threshold(0.0);
    let what = format!("{:?} b={} t={threads}", case.cfg, case.batch);
    // step() against the reference step by step (the batch layout's runs
    // are too long for a whole-run bound), and forward bitwise the same.
    let (c, m) = check_stepwise(case, &model, Precision::F32)
        .unwrap_or_else(|e| panic!("{what} step(): {e}"));
    let fwd = case.run_forward(&model);
    let steps = case.run_steps(&model);
    for (part, got, want) in [
        ("y", &fwd.0, &steps.0),
        ("c", &fwd.1, &c),
        ("m", &fwd.2, &m),
    ] {
        same_bits(&format!("{what}: forward vs step() {part}"), got, want)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    model
}

/// Every variant of the generic kernel (3 inputs, 5 units).
fn variants() -> [LstmConfig; 6] {
    let base = || LstmConfig::new(3, 5);
    [
        base(),
        base().with_head(3).with_peephole(Peephole::Matrix),
        base().with_peephole(Peephole::Diagonal),
        base().with_projection(3).with_proj_clip(0.5),
        base().with_clip(0.8).with_input_forget(true),
        base().with_cell_clip(0.3).with_forget_bias(1.0),
    ]
}

#[test]
fn generic_kernel_with_every_variant() {
    for cfg in variants() {
        // 3 rows: a partial register block (the portable MR is 2).
        for batch in [1, 3] {
            run(&Case::new(cfg, batch, 2, 11, 2.0), 1, KernelChoice::Generic);
        }
    }
}

// The tests on two threads go through rayon, whose crossbeam-epoch breaks
// Stacked Borrows and leaves its workers' bags at exit (not this crate's
// code): `.ci/run` runs them under Miri with Tree Borrows and without the
// leak check, the rest with Stacked Borrows and the leak check.

#[test]
fn chunks_on_two_threads() {
    for cfg in variants() {
        run(&Case::new(cfg, 3, 2, 11, 2.0), 2, KernelChoice::Generic);
    }
}

#[test]
fn hidden_unit_split_over_two_threads() {
    // One row block, 5 gate panels of 8 lanes: split by hidden units, with
    // the matrix peephole and head (every barrier phase).
    let cfg = config(2, 33, Some(9), true);
    let case = Case::new(cfg, 1, 2, 5, 1.0);
    run(&case, 2, KernelChoice::Generic);
}

#[test]
fn generated_kernels_every_body() {
    let runs = Runs::start(Isa::Portable);
    // The seed's cell: gates in lanes below 5 rows, batch in lanes from 5,
    // over more steps than one block of the batch layout (32).
    for (batch, steps) in [(1, 3), (2, 3), (5, 34), (7, 3)] {
        let case = Case::new(config(7, 5, Some(3), true), batch, steps, 3, 2.0);
        run(&case, 1, KernelChoice::Specialized);
    }
    // Plain output (no head), and a blocked generated kernel.
    run(
        &Case::new(config(24, 8, None, false), 6, 2, 4, 2.0),
        1,
        KernelChoice::Specialized,
    );
    run(
        &Case::new(config(64, 64, None, false), 3, 1, 9, 1.0),
        1,
        KernelChoice::Specialized,
    );
    assert!(runs.kernel() > 0, "the portable path did not run");
    assert!(runs.specialized() > 0, "no generated kernel ran");
    assert!(
        runs.small_batch() > 0,
        "the batch-in-lanes layout did not run"
    );
}

/// The bf16 engine's pointer arithmetic (chunk pointers into the inputs and
/// outputs, the state pointers, the operand blocks) on its portable kernel:
/// 17 rows (a full 16-row block and one more), diagonal peepholes, checked
/// against the reference within the bf16 bound.
#[test]
fn bf16_portable_kernel() {
    let cfg = LstmConfig::new(3, 5).with_peephole(Peephole::Diagonal);
    let case = Case::new(cfg, 17, 2, 5, 2.0);
    let model = case.model().with_bf16_kernel("portable").unwrap();
    let run = case.run_forward(&model);
    common::check_run_in(&case, &run, lstm_kernels::Precision::Bf16).unwrap();
}

/// The same on two threads (chunks of 32 rows and 1): under Tree Borrows
/// with the other rayon tests (see above).
#[test]
fn bf16_portable_two_threads() {
    let case = Case::new(LstmConfig::new(3, 5), 33, 2, 6, 2.0);
    let model = case
        .model()
        .with_bf16_kernel("portable")
        .unwrap()
        .with_threads(2)
        .unwrap()
        .with_parallel_threshold(0.0);
    let run = case.run_forward(&model);
    common::check_run_in(&case, &run, lstm_kernels::Precision::Bf16).unwrap();
}

/// The int8 engine's portable kernel likewise (quantized operand tiles,
/// the scratch arena carved per chunk, the sums): 17 rows, 65 inputs (two
/// 64-k chunks), checked against the reference within the int8 bound.
#[test]
fn int8_portable_kernel() {
    let cfg = LstmConfig::new(65, 5).with_peephole(Peephole::Diagonal);
    let case = Case::new(cfg, 17, 2, 5, 2.0);
    let model = case.model().with_int8_kernel("portable").unwrap();
    let run = case.run_forward(&model);
    common::check_run_in(&case, &run, lstm_kernels::Precision::Int8).unwrap();
}

/// The same on two threads (chunks of 32 rows and 1, each with its own
/// slice of the scratch arena): under Tree Borrows.
#[test]
fn int8_portable_two_threads() {
    let case = Case::new(LstmConfig::new(3, 5), 33, 2, 6, 2.0);
    let model = case
        .model()
        .with_int8_kernel("portable")
        .unwrap()
        .with_threads(2)
        .unwrap()
        .with_parallel_threshold(0.0);
    let run = case.run_forward(&model);
    common::check_run_in(&case, &run, lstm_kernels::Precision::Int8).unwrap();
}
