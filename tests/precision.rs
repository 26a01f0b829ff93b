//! Reduced precision (issue 14): every bf16 and int8 kernel this CPU has,
//! against the f64 reference within the precision's error bound
//! (`ErrorModel::for_precision`: bf16 operands rounded, f32 accumulation;
//! int8 weights and operands quantized, exact i32 sums), bitwise identical
//! across thread counts, with proof of which kernel ran; the variants the
//! reduced precisions do not compute are errors; and each bound is tight
//! enough to catch a wrong weight.

mod common;

use common::{Case, check_run_in, check_stepwise_against, on_threads, same_bits};
use lstm_kernels::diagnostics::{bf16_runs_on_this_thread, int8_runs_on_this_thread};
use lstm_kernels::reference::ErrorModel;
use lstm_kernels::{Error, Lstm, LstmConfig, Peephole, Precision};
use proptest::prelude::*;

/// Configs bf16 and int8 compute: plain, diagonal peepholes, forget bias, clips,
/// coupled gates.
fn arb_case() -> impl Strategy<Value = Case> {
    (
        (1usize..=40, 1usize..=40, any::<bool>(), any::<bool>()),
        (
            prop::option::of(0.05f32..3.0),
            prop::option::of(0.05f32..3.0),
            any::<bool>(),
        ),
        (
            1usize..=37,
            1usize..=5,
            any::<u64>(),
            prop_oneof![Just(1.0f32), Just(4.0f32)],
        ),
    )
        .prop_map(
            |((n, h, diag, fb), (cell_clip, clip, coupled), (b, t, seed, scale))| {
                let mut cfg = LstmConfig::new(n, h);
                if diag {
                    cfg = cfg.with_peephole(Peephole::Diagonal);
                }
                if fb {
                    cfg = cfg.with_forget_bias(1.0);
                }
                if let Some(c) = cell_clip {
                    cfg = cfg.with_cell_clip(c);
                }
                if let Some(c) = clip {
                    cfg = cfg.with_clip(c).with_input_forget(coupled);
                }
                Case::new(cfg, b, t, seed, scale)
            },
        )
}

/// `(y, c, m)` of a run.
type Run = (Vec<f32>, Vec<f32>, Vec<f32>);

const REDUCED: [Precision; 2] = [Precision::Bf16, Precision::Int8];

/// The kernels of `p` this CPU has.
fn kernels(p: Precision) -> Vec<&'static str> {
    match p {
        Precision::Bf16 => Lstm::bf16_kernels(),
        _ => Lstm::int8_kernels(),
    }
}

/// `model` in precision `p` on kernel `k`.
fn on_kernel(model: Lstm, p: Precision, k: &str) -> Result<Lstm, Error> {
    match p {
        Precision::Bf16 => model.with_bf16_kernel(k),
        _ => model.with_int8_kernel(k),
    }
}

/// Runs of kernel `k` on the calling thread, where the single-threaded
/// models of these tests run (other tests running meanwhile do not count).
fn runs(p: Precision, k: &str) -> u64 {
    match p {
        Precision::Bf16 => bf16_runs_on_this_thread(k),
        _ => int8_runs_on_this_thread(k),
    }
}

/// Runs `case` on kernel `k` of precision `p`; checks the bound and that
/// `k` ran.
fn check_kernel(case: &Case, p: Precision, k: &str) -> Result<Run, String> {
    let model = on_kernel(case.model(), p, k).map_err(|e| e.to_string())?;
    assert_eq!(model.kernel_name(), k);
    assert_eq!(model.precision(), p);
    let before = runs(p, k);
    let run = case.run_forward(&model);
    if runs(p, k) == before {
        return Err(format!("{k} did not run"));
    }
    check_run_in(case, &run, p).map_err(|e| format!("{k}: {e}"))?;
    Ok(run)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn reduced_kernels_match_the_reference_within_their_bound(case in arb_case()) {
        for p in REDUCED {
            for k in kernels(p) {
                check_kernel(&case, p, k).map_err(TestCaseError::fail)?;
            }
        }
    }

    #[test]
    fn reduced_precision_is_bitwise_identical_across_thread_counts(case in arb_case()) {
        for p in REDUCED {
            for k in kernels(p) {
                let one = check_kernel(&case, p, k).map_err(TestCaseError::fail)?;
                let model = on_kernel(case.model(), p, k).unwrap();
                for threads in [2, 3] {
                    let run = case.run_forward(&on_threads(&model, threads));
                    same_bits(&format!("{k} y, {threads} threads"), &run.0, &one.0).map_err(TestCaseError::fail)?;
                    same_bits(&format!("{k} c, {threads} threads"), &run.1, &one.1).map_err(TestCaseError::fail)?;
                }
            }
        }
    }
}

/// `x` rounded to bf16 (to nearest, ties to even), as an f32: how the
/// bf16 kernels round their GEMM operands (finite `x`).
fn bf16(x: f32) -> f32 {
    let b = x.to_bits();
    f32::from_bits((b + 0x7fff + ((b >> 16) & 1)) & 0xffff_0000)
}

/// The bf16 oracle: every step of `model` (on a bf16 kernel), one `step()`
/// call each from the kernel's own f32 state, against the exact result of
/// that step with the GEMM operands rounded to bf16 as the kernel rounds
/// them (the gate weights once, `x` and `m` as they enter the GEMM; the
/// bias, peepholes, `c` and the epilogue stay f32), within the **f32**
/// bound of that rounded problem: bf16 products are exact in f32, so all
/// that is left is f32 accumulation (any order; products and partial sums
/// flushed below 2⁻¹²⁶ included, though not operands flushed on input,
/// which these cases never have), the f32 epilogue and the activations'
/// error. Several
/// hundred times tighter than the bound that treats the rounding as error
/// (`ErrorModel::for_precision(Bf16)`), so it checks the rounding itself:
/// the mode, which operands, and every weight to the last bf16 bit.
fn check_bf16_oracle(case: &Case, model: &Lstm) -> Result<(), String> {
    check_bf16_oracle_rounding(case, model, bf16)
}

/// [`check_bf16_oracle`] with the operands `x` and `m` rounded by `round`.
fn check_bf16_oracle_rounding(
    case: &Case,
    model: &Lstm,
    round: fn(f32) -> f32,
) -> Result<(), String> {
    let mut rounded = case.weights.clone();
    rounded.gates.iter_mut().for_each(|w| *w = bf16(*w));
    check_stepwise_against(
        case,
        model,
        &rounded,
        ErrorModel::for_precision(Precision::F32),
        &|row| row.iter().map(|&v| round(v)).collect(),
    )
    .map(|_| ())
}

/// One operand row part quantized as the int8 kernels quantize it (see
/// `engine::int8`): `s = fl(max|a|/127)`, `q = round(a·fl(127/max|a|))` to
/// nearest even (`round` here), and back as `fl(q·s)`; all zeros stay zero.
fn int8_row(row: &[f32], round: fn(f32) -> f32) -> Vec<f32> {
    let amax = row.iter().fold(0f32, |m, v| m.max(v.abs()));
    if amax == 0.0 {
        return vec![0.0; row.len()];
    }
    let (inv, s) = (127.0 / amax, amax / 127.0);
    row.iter()
        .map(|&v| round(v * inv).clamp(-127.0, 127.0) * s)
        .collect()
}

/// The int8 oracle: every step of `model` (on an int8 kernel, with the
/// int8 `gates`), one `step()` call each from the kernel's own f32 state,
/// against the exact step of the quantized problem: the dequantized gate
/// weights, `x` and `m` quantized per row as they enter the GEMM (`round`
/// to an integer), under the **f32** bound. The kernel's i32 sums are exact,
/// so what is left is f32 arithmetic. Per term, relative to `Σ|w·a|`: the
/// oracle's own rounding of `q·s` for the weight and the operand (2 unit
/// roundoffs), the kernel's two dequantization multiplies of each part
/// (2), and its i32 → f32 conversion of the sum (exact up to 2²⁴, so none
/// in these tests, 1 beyond): at most 5, covered by `(1 + u)⁶ − 1` as the
/// model's per-term operand error. The additions that join the parts and
/// the bias are what the reference's γ term over the sum covers (the
/// kernel's own sums being exact leave it otherwise unused). Then the f32
/// epilogue and the activations' error. About 10⁵ times tighter than
/// the int8 bound (`ErrorModel::for_precision(Int8)`, which counts the
/// quantization as error), so it checks the quantization itself: every
/// weight's integer and scale, the operands' scales and rounding mode.
fn check_int8_oracle(
    case: &Case,
    model: &Lstm,
    gates: &lstm_kernels::Int8Gates,
    round: fn(f32) -> f32,
) -> Result<(), String> {
    let mut quantized = case.weights.clone();
    quantized.gates = gates.dequantize(&case.cfg).map_err(|e| e.to_string())?;
    let mut errors = ErrorModel::for_precision(Precision::F32);
    errors.operand_rounding = (1.0 + 2f64.powi(-24)).powi(6) - 1.0;
    check_stepwise_against(case, model, &quantized, errors, &|row| int8_row(row, round)).map(|_| ())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, failure_persistence: None, ..ProptestConfig::default() })]

    /// Every bf16 kernel against the bf16 oracle, on every variant bf16
    /// computes, step by step.
    #[test]
    fn bf16_kernels_match_the_bf16_oracle(case in arb_case()) {
        for k in kernels(Precision::Bf16) {
            let model = on_kernel(case.model(), Precision::Bf16, k).unwrap();
            let before = runs(Precision::Bf16, k);
            check_bf16_oracle(&case, &model).map_err(|e| TestCaseError::fail(format!("{k}: {e}")))?;
            prop_assert!(runs(Precision::Bf16, k) >= before + case.steps as u64, "{} did not run", k);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, failure_persistence: None, ..ProptestConfig::default() })]

    /// Every int8 kernel against the int8 oracle, on every variant int8
    /// computes, step by step.
    #[test]
    fn int8_kernels_match_the_int8_oracle(case in arb_case()) {
        let gates = lstm_kernels::Int8Gates::quantize(&case.cfg, &case.weights).unwrap();
        for k in kernels(Precision::Int8) {
            let model = on_kernel(case.model(), Precision::Int8, k).unwrap();
            let before = runs(Precision::Int8, k);
            check_int8_oracle(&case, &model, &gates, f32::round_ties_even)
                .map_err(|e| TestCaseError::fail(format!("{k}: {e}")))?;
            prop_assert!(runs(Precision::Int8, k) >= before + case.steps as u64, "{} did not run", k);
        }
    }
}

/// The int8 oracle has teeth: one weight's integer moved by one (given as
/// int8 gates, the oracle keeping the original ones) fails it on every
/// int8 kernel, and so does an oracle that rounds the operands toward zero
/// instead of to nearest. The moved gates pass against themselves, so each
/// kernel runs the int8 gates it was given (`with_int8_kernel` keeps them).
#[test]
fn the_int8_oracle_catches_one_int8_step() {
    use lstm_kernels::Int8Gates;
    let case = Case::new(LstmConfig::new(24, 32), 8, 3, 5, 1.0);
    let gates = Int8Gates::quantize(&case.cfg, &case.weights).unwrap();
    for k in kernels(Precision::Int8) {
        let model = on_kernel(case.model(), Precision::Int8, k).unwrap();
        check_int8_oracle(&case, &model, &gates, f32::round_ties_even)
            .unwrap_or_else(|e| panic!("{k}: {e}"));
        let mut moved = gates.clone();
        let i = (0..moved.q.len())
            .find(|&i| moved.q[i].abs() < 100)
            .unwrap();
        moved.q[i] += 1;
        let model = on_kernel(
            case.model().with_int8_gates(&moved).unwrap(),
            Precision::Int8,
            k,
        )
        .unwrap();
        assert!(
            check_int8_oracle(&case, &model, &gates, f32::round_ties_even).is_err(),
            "{k}: a weight one int8 step off passed"
        );
        // (And the kernel runs the gates it was given.)
        check_int8_oracle(&case, &model, &moved, f32::round_ties_even)
            .unwrap_or_else(|e| panic!("{k}, given gates: {e}"));
        let model = on_kernel(case.model(), Precision::Int8, k).unwrap();
        assert!(
            check_int8_oracle(&case, &model, &gates, f32::trunc).is_err(),
            "{k}: the oracle cannot tell rounding to nearest from truncation"
        );
    }
}

/// The oracle has teeth: one gate weight moved to the next bf16 value (a
/// relative change of at most 2⁻⁷) fails it on every bf16 kernel, and so
/// does an oracle that rounds `x` and `m` by truncation instead of to
/// nearest.
#[test]
fn the_bf16_oracle_catches_one_bf16_ulp() {
    let case = Case::new(LstmConfig::new(24, 32), 8, 3, 5, 1.0);
    for k in kernels(Precision::Bf16) {
        let model = on_kernel(case.model(), Precision::Bf16, k).unwrap();
        check_bf16_oracle(&case, &model).unwrap_or_else(|e| panic!("{k}: {e}"));
        let mut bad = case.clone();
        let w = bf16(bad.weights.gates[40]);
        bad.weights.gates[40] = f32::from_bits(w.to_bits() + 0x1_0000);
        let model = on_kernel(bad.model(), Precision::Bf16, k).unwrap();
        assert!(
            check_bf16_oracle(&case, &model).is_err(),
            "{k}: a weight one bf16 ulp off passed"
        );
        let model = on_kernel(case.model(), Precision::Bf16, k).unwrap();
        let truncate = |x: f32| f32::from_bits(x.to_bits() & 0xffff_0000);
        assert!(
            check_bf16_oracle_rounding(&case, &model, truncate).is_err(),
            "{k}: the oracle cannot tell rounding to nearest from truncation"
        );
    }
}

/// Edge shapes around the 16-row and 16-unit blocks and the 32-k (bf16)
/// and 64-k (int8) chunks.
#[test]
fn reduced_precision_edge_shapes() {
    for p in REDUCED {
        for k in kernels(p) {
            for (n, h, b) in [
                (1, 1, 1),
                (31, 1, 15),
                (1, 31, 16),
                (16, 16, 17),
                (17, 15, 33),
                (64, 48, 31),
                (63, 65, 4),
                (65, 64, 3),
                (3, 97, 2),
                (129, 17, 1),
            ] {
                let case = Case::new(LstmConfig::new(n, h), b, 3, (n * 1000 + h) as u64, 4.0);
                check_kernel(&case, p, k).unwrap_or_else(|e| panic!("{n}x{h} batch {b}: {e}"));
            }
        }
    }
}

/// Each bound is not vacuous: it is below what one weight changed by 0.5
/// (about three times the weights' scale, 1/√32) does, and the reduced
/// results really differ from f32 ones (operands are rounded).
#[test]
fn reduced_bounds_catch_a_wrong_weight() {
    let cfg = LstmConfig::new(24, 32);
    let case = Case::new(cfg, 8, 4, 5, 1.0);
    for p in REDUCED {
        for k in kernels(p) {
            let run = check_kernel(&case, p, k).unwrap();
            let f32_run = case.run_forward(&case.model());
            assert!(run.0 != f32_run.0, "{k}: {p} gave the f32 results");
            let mut bad = case.clone();
            bad.weights.gates[40] += 0.5;
            let run = bad.run_forward(&on_kernel(bad.model(), p, k).unwrap());
            assert!(
                check_run_in(&case, &run, p).is_err(),
                "{k}: a weight off by 0.5 passed"
            );
        }
    }
}

/// int8 gives a row whose input holds NaN NaN outputs (as f32 does), and
/// the other rows their usual results.
#[test]
fn int8_non_finite_inputs_poison_only_their_row() {
    let case = Case::new(LstmConfig::new(20, 24), 5, 2, 9, 1.0);
    for k in kernels(Precision::Int8) {
        let mut bad = case.clone();
        bad.xs[2 * 20 + 3] = f32::NAN; // step 0, row 2
        let model = on_kernel(bad.model(), Precision::Int8, k).unwrap();
        let before = runs(Precision::Int8, k);
        let (y, _, _) = bad.run_forward(&model);
        assert!(runs(Precision::Int8, k) > before, "{k} did not run");
        let (want, _, _) = case.run_forward(&on_kernel(case.model(), Precision::Int8, k).unwrap());
        for t in 0..2 {
            for r in 0..5 {
                let row = &y[(t * 5 + r) * 24..(t * 5 + r + 1) * 24];
                if r == 2 {
                    assert!(row.iter().all(|v| v.is_nan()), "{k}: t{t} row {r}");
                } else {
                    same_bits(
                        &format!("{k} t{t} r{r}"),
                        row,
                        &want[(t * 5 + r) * 24..(t * 5 + r + 1) * 24],
                    )
                    .unwrap();
                }
            }
        }
    }
}

/// What bf16 and int8 do not compute yet is a config error naming it; f32
/// stays f32.
#[test]
fn unsupported_precisions_and_variants_are_errors() {
    let base = LstmConfig::new(4, 8);
    for (cfg, what) in [
        (base.with_peephole(Peephole::Matrix), "matrix peephole"),
        (base.with_projection(4), "projection"),
        (base.with_head(3), "head"),
    ] {
        for p in REDUCED {
            let m = Case::new(cfg, 1, 1, 1, 1.0).model();
            let e = m.with_precision(p).unwrap_err();
            assert!(
                matches!(e, Error::Config(_))
                    && e.to_string().contains(what)
                    && e.to_string().contains(p.name()),
                "{e}"
            );
        }
    }
    let case = Case::new(base, 3, 2, 1, 1.0);
    let m = case.model();
    for p in REDUCED {
        let f = m
            .clone()
            .with_precision(p)
            .unwrap()
            .with_precision(Precision::F32)
            .unwrap();
        assert_eq!(f.precision(), Precision::F32);
        assert_eq!(f.kernel_name(), m.kernel_name());
        same_bits(
            "back to f32",
            &case.run_forward(&f).0,
            &case.run_forward(&m).0,
        )
        .unwrap();
    }
    assert!(Lstm::bf16_kernels().contains(&"bf16_portable"));
    assert!(Lstm::int8_kernels().contains(&"int8_portable"));
    assert!(m.clone().with_bf16_kernel("nonsense").is_err());
    assert!(m.with_int8_kernel("avx512bf16").is_err());
}

/// Int8 gates given as they are (a framework's own quantization) run
/// exactly as the model's own int8: `with_int8_gates(quantize(w))` is
/// bitwise `with_precision(Int8)`; a model built from other int8 gates
/// (scales not from the weights' maxima, a −128) is within the int8 bound
/// of its dequantized f32 weights; bad gates are errors naming the tensor.
#[test]
fn int8_gates_given_as_they_are() {
    use lstm_kernels::Int8Gates;
    let cfg = LstmConfig::new(19, 21).with_peephole(Peephole::Diagonal);
    let case = Case::new(cfg, 6, 3, 11, 1.0);
    let gates = Int8Gates::quantize(&cfg, &case.weights).unwrap();
    let own = case.run_forward(&case.model().with_precision(Precision::Int8).unwrap());
    let given = case.run_forward(&case.model().with_int8_gates(&gates).unwrap());
    same_bits("given gates y", &given.0, &own.0).unwrap();
    same_bits("given gates c", &given.1, &own.1).unwrap();

    // Other gates: halve every scale's range use, put a −128 in.
    let mut other = gates.clone();
    for (i, q) in other.q.iter_mut().enumerate() {
        *q = if i == 7 { -128 } else { *q / 2 };
    }
    for s in other.scale_x.iter_mut().chain(other.scale_h.iter_mut()) {
        *s *= 1.75;
    }
    let mut deq = case.clone();
    deq.weights.gates = other.dequantize(&cfg).unwrap();
    let run = deq.run_forward(&deq.model().with_int8_gates(&other).unwrap());
    check_run_in(&deq, &run, Precision::Int8).unwrap();
    // The given gates stay the model's int8 weights through a detour to
    // f32 and back (what `lstm run --precision int8` does to an ONNX
    // DynamicQuantizeLSTM), not the f32 gates re-quantized.
    let back = deq
        .model()
        .with_int8_gates(&other)
        .and_then(|m| m.with_precision(Precision::F32))
        .and_then(|m| m.with_precision(Precision::Int8))
        .unwrap();
    let again = deq.run_forward(&back);
    same_bits("given gates after f32 y", &again.0, &run.0).unwrap();
    same_bits("given gates after f32 c", &again.1, &run.1).unwrap();
    // And they are not the f32 results of the dequantized weights.
    assert!(run.0 != deq.run_forward(&deq.model()).0);

    let m = case.model();
    let mut short = gates.clone();
    short.q.pop();
    let e = m.clone().with_int8_gates(&short).unwrap_err();
    assert!(e.to_string().contains("int8 gates q"), "{e}");
    let mut neg = gates.clone();
    neg.scale_h[3] = -1.0;
    let e = m.clone().with_int8_gates(&neg).unwrap_err();
    assert!(e.to_string().contains("scale_h[3]"), "{e}");
    let mut nan = gates;
    nan.scale_x[0] = f32::NAN;
    assert!(m.with_int8_gates(&nan).is_err());
}
