//! Issue 17: sizes from callers are checked before anything is allocated,
//! and an allocation the system refuses is an error, never an abort.
//!
//! This test binary runs under an allocation budget: a global allocator
//! that refuses (returns null) once more than 1 GiB is live
//! (tests/common/budget.rs). An
//! infallible allocation beyond it aborts the process, so an oversized
//! buffer fails this test rather than the machine; a fallible one
//! (`try_reserve`) must come back as [`Error::Alloc`].

#[path = "common/budget.rs"]
mod budget;

use lstm_kernels::{Error, Lstm, LstmConfig, LstmWeights, MAX_TENSOR_ELEMENTS, Peephole};

/// Finding 3: `validate` accepted (2^20, 2^20), whose gate matrix is 2^43
/// elements, and `zeros`/`random` then aborted on the allocation. Every
/// tensor is now held to [`MAX_TENSOR_ELEMENTS`], with checked products.
#[test]
fn sizes_beyond_the_limit_are_config_errors() {
    let huge = [
        LstmConfig::new(1 << 20, 1 << 20),
        LstmConfig::new(usize::MAX, 1),
        LstmConfig::new(1, usize::MAX / 2),
        LstmConfig::new(8, 1 << 24).with_peephole(Peephole::Matrix),
        LstmConfig::new(8, 1 << 17).with_head(1 << 17),
        // The gate matrix exactly one row past the limit.
        LstmConfig::new(MAX_TENSOR_ELEMENTS / 64 - 15, 16),
    ];
    for cfg in huge {
        let e = cfg.validate().unwrap_err();
        assert!(
            matches!(e, Error::Config(_)) && e.to_string().contains("limit"),
            "{cfg:?}: {e}"
        );
        assert!(matches!(LstmWeights::zeros(&cfg), Err(Error::Config(_))));
        assert!(matches!(
            LstmWeights::random(&cfg, 1),
            Err(Error::Config(_))
        ));
    }
    // Exactly at the limit is a valid config (its allocation is another
    // matter, see below).
    LstmConfig::new(MAX_TENSOR_ELEMENTS / 64 - 16, 16)
        .validate()
        .unwrap();
    // A projection larger than the hidden size is not a projection.
    let e = LstmConfig::new(4, 8)
        .with_projection(9)
        .validate()
        .unwrap_err();
    assert!(e.to_string().contains("projection size 9"), "{e}");
}

/// Finding 3: `new_state(2^40)` aborted. Batches are held to the same
/// limit, and states within it that the system cannot give are
/// `Error::Alloc`.
#[test]
fn batch_sizes_are_checked_and_allocated_fallibly() {
    let cfg = LstmConfig::new(3, 8);
    let model = Lstm::new(cfg, LstmWeights::random(&cfg, 1).unwrap()).unwrap();
    for batch in [1usize << 40, usize::MAX, MAX_TENSOR_ELEMENTS / 32 + 1] {
        let e = model.new_state(batch).unwrap_err();
        assert!(e.to_string().contains("limit"), "batch {batch}: {e}");
        // Asking which kernels such a call runs is the same error (it
        // divided by zero, or planned 2^64 chunks, before).
        let e = model.kernels_for_batch(batch).unwrap_err();
        assert!(e.to_string().contains("limit"), "batch {batch}: {e}");
    }
    let e = model.kernels_for_batch(0).unwrap_err();
    assert!(e.to_string().contains("at least 1"), "{e}");
    assert_eq!(model.kernels_for_batch(3).unwrap(), ["generic"]);
    // Quantizing for a config whose sizes overflow is a config error, not
    // an index out of bounds after a wrapped length check.
    let huge = LstmConfig::new(1, (1 << 62) + 1);
    let w = LstmWeights::random(&LstmConfig::new(1, 1), 1).unwrap();
    let e = lstm_kernels::Int8Gates::quantize(&huge, &w).unwrap_err();
    assert!(e.to_string().contains("limit"), "{e}");
    // Within the limit (2^26 × 32 = 2^31) but 2 GiB for `c`: over the
    // budget, so the allocation is refused and must come back as an error.
    let e = model.new_state(MAX_TENSOR_ELEMENTS / 32).unwrap_err();
    assert!(
        matches!(&e, Error::Alloc { what, bytes } if what == "state c" && *bytes == 1 << 31),
        "{e}"
    );
}

/// An allocation refused while building weights is an error naming the
/// tensor: a gate matrix of exactly 2^31 elements (8 GiB) is a valid size,
/// far over the budget.
#[test]
fn refused_weight_allocations_are_errors() {
    let cfg = LstmConfig::new(MAX_TENSOR_ELEMENTS / 64 - 16, 16);
    for w in [LstmWeights::zeros(&cfg), LstmWeights::random(&cfg, 1)] {
        let e = w.unwrap_err();
        assert!(
            matches!(&e, Error::Alloc { what, .. } if what == "weights gates"),
            "{e}"
        );
        assert!(e.to_string().contains("8589934592 bytes"), "{e}");
    }
}

/// The "accepted silently": one NaN in `u_i` turned every output
/// NaN. Non-finite weights are an error naming the tensor (in the seed's
/// terms) and index, unless the config opts in.
#[test]
fn non_finite_weights_are_named_unless_allowed() {
    let (n, h, p) = (3, 4, 2);
    let cfg = LstmConfig::new(n, h)
        .with_head(p)
        .with_peephole(Peephole::Matrix);
    let cols = 4 * h;
    type Poison = fn(&mut LstmWeights);
    let cases: [(&str, Poison, &str); 6] = [
        // u_i[2, 1]: recurrent row 2, gate i (block 0), unit 1.
        ("u_i[2, 1]", |w| w.gates[(3 + 2) * 16 + 1] = f32::NAN, "NaN"),
        // w_o[0, 3]: input row 0, gate o (block 3), unit 3.
        ("w_o[0, 3]", |w| w.gates[3 * 4 + 3] = f32::INFINITY, "inf"),
        ("b_f[2]", |w| w.bias[4 + 2] = f32::NEG_INFINITY, "-inf"),
        (
            "v_o[1, 2]",
            |w| w.v_o.as_mut().unwrap()[4 + 2] = f32::NAN,
            "NaN",
        ),
        (
            "w_h[3, 1]",
            |w| w.w_h.as_mut().unwrap()[3 * 2 + 1] = f32::NAN,
            "NaN",
        ),
        ("b_h[0]", |w| w.b_h.as_mut().unwrap()[0] = f32::NAN, "NaN"),
    ];
    assert_eq!(cols, 16);
    for (name, poison, shown) in cases {
        let mut w = LstmWeights::random(&cfg, 1).unwrap();
        poison(&mut w);
        let e = Lstm::new(cfg, w.clone()).unwrap_err().to_string();
        assert!(
            e.contains(&format!("weight {name} is {shown}"))
                && e.contains("with_non_finite_weights"),
            "{name}: {e}"
        );
        // Opted in: the model builds and runs (a NaN propagates; an
        // infinity may saturate a sigmoid to a finite output).
        let allowed = cfg.with_non_finite_weights(true);
        let model = Lstm::new(allowed, w).unwrap();
        let mut st = model.new_state(1).unwrap();
        let mut y = vec![0.0; 2 * p];
        model.forward(&mut st, &[0.5; 2 * 3], &mut y).unwrap();
        if shown == "NaN" {
            assert!(y.iter().any(|v| v.is_nan()), "{name}: {y:?}");
        }
    }
    // Diagonal peepholes are named per gate.
    let cfg = LstmConfig::new(n, h).with_peephole(Peephole::Diagonal);
    let mut w = LstmWeights::random(&cfg, 1).unwrap();
    w.peep_diag.as_mut().unwrap()[h + 3] = f32::NAN;
    let e = Lstm::new(cfg, w).unwrap_err().to_string();
    assert!(e.contains("weight w_cf[3] is NaN"), "{e}");
    // Allowed non-finite weights have no int8 value (a NaN quantized to 0
    // and ran as a finite model): int8 refuses them, naming the weight;
    // bf16 keeps the NaN, as f32 does.
    let cfg = LstmConfig::new(4, 17).with_non_finite_weights(true);
    let mut w = LstmWeights::random(&cfg, 1).unwrap();
    w.gates[5] = f32::NAN;
    let model = Lstm::new(cfg, w.clone()).unwrap();
    let e = model
        .clone()
        .with_precision(lstm_kernels::Precision::Int8)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("finite") && e.contains("gates[0, 5] = NaN"),
        "{e}"
    );
    let e = lstm_kernels::Int8Gates::quantize(&cfg, &w)
        .unwrap_err()
        .to_string();
    assert!(e.contains("gates[0, 5] = NaN"), "{e}");
    let bf16 = model.with_precision(lstm_kernels::Precision::Bf16).unwrap();
    let mut st = bf16.new_state(1).unwrap();
    let mut y = vec![0.0; 17];
    bf16.forward(&mut st, &[0.5; 4], &mut y).unwrap();
    assert!(y[5].is_nan(), "{y:?}");
}

/// A review's finding: a batcher's queue of 2^30 frames (within the
/// ticket limit) built its tickets with an infallible allocation and
/// aborted the process; over the budget, it is now `Error::Alloc`.
#[test]
fn a_huge_batcher_queue_is_an_alloc_error() {
    use lstm_kernels::{Batcher, BatcherConfig, StreamPool};
    let cfg = LstmConfig::new(3, 8);
    let model = Lstm::new(cfg, LstmWeights::random(&cfg, 1).unwrap()).unwrap();
    let pool = StreamPool::new(model, 4).unwrap();
    match Batcher::new(pool, BatcherConfig::new().with_queue(1 << 30)) {
        Err(e @ Error::Alloc { .. }) => assert!(e.to_string().contains("batcher"), "{e}"),
        Err(e) => panic!("not an allocation error: {e}"),
        Ok(_) => panic!("a queue of 2^30 frames was allocated within a 1 GiB budget"),
    }
}
