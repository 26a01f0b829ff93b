//! Vectorised σ and tanh for the fused epilogues.
//!
//! Method: one rational function, `tanh(x) ≈ x·P(x²)/Q(x²)` on
//! `|x| ≤ A = 9.5`, `P` and `Q` of degree 4 (a weighted least-squares
//! minimax fit of `tanh` by `tools/fit_tanh.py`; approximation error
//! 4.7e-8). `P` and `Q` are evaluated by Estrin's scheme, so the whole
//! function is one short dependency chain (a clamp, two multiplies, two
//! levels of FMA, a multiply, a divide, a clamp): latency, not throughput,
//! bounds small cells, whose every step waits on two activations.
//!
//! * `tanh(x)`: `x` clamped to `[−A, A]` (where `1 − tanh < 1.2e-8`), the
//!   result to `[−1, 1]` (needed: unclamped, the f32 evaluation reaches
//!   1 + 2 ulp, at x = 8.5627; σ's reaches ½ + 2 ulp at 16.7459 — an
//!   exhaustive AVX-512 sweep of `[0, A]` and `[0, 2A]`). The function is
//!   odd, so no sign handling: ±0 stay ±0.
//! * `σ(x) = ½ + ½·tanh(x/2)`, the same function with its coefficients
//!   rescaled by powers of two (exact): `x` clamped to `[−2A, 2A]`,
//!   `½·tanh(x/2)` to `[−½, ½]`; `σ(0) = ½`, `σ(±∞) ∈ {0, 1}` exactly.
//!
//! Both propagate NaN (the clamps keep it). The maximum absolute error over
//! a sweep of all f32 (the tests) is a few 1e-7 on every ISA path —
//! rounding in `P` and `Q` dominates — under
//! [`crate::ACTIVATION_MAX_ABS_ERROR`] (1e-6); the README records the
//! measured figures and the alternatives that measured slower (exp-based,
//! divide-free piecewise polynomials).

use super::simd::Simd;

/// Clamp point `A` of `|x|` for tanh.
const A: f32 = 9.5;
/// tanh: `P(x²)` coefficients, `x⁰` first (`tools/fit_tanh.py`).
const TANH_P: [f32; 5] = [
    0.999_999_8,
    0.133_415_45,
    0.003_449_158_3,
    1.986_217_8e-5,
    1.235_207e-8,
];
/// tanh: `Q(x²)` coefficients.
const TANH_Q: [f32; 5] = [
    1.0,
    0.466_748_2,
    0.025_699_181,
    0.000_321_045_14,
    7.359_300_3e-7,
];
/// σ: `P(x²)` of `½·tanh(x/2)`: `TANH_P[k] / (4·4ᵏ)`.
const SIGMOID_P: [f32; 5] = [
    0.249_999_96,
    0.008_338_465,
    5.389_31e-5,
    7.758_663_4e-8,
    1.206_256_9e-11,
];
/// σ: `Q(x²)` of `½·tanh(x/2)`: `TANH_Q[k] / 4ᵏ`.
const SIGMOID_Q: [f32; 5] = [
    1.0,
    0.116_687_05,
    0.001_606_198_8,
    5.016_330_3e-6,
    2.874_726_7e-9,
];

/// `c₀ + c₁s + c₂s² + c₃s³ + c₄s⁴` by Estrin's scheme (`s2 = s²`).
///
/// # Safety
/// The CPU supports `S`.
#[inline(always)]
unsafe fn estrin<S: Simd>(c: &[f32; 5], s: S::V, s2: S::V) -> S::V {
    // SAFETY: the caller guarantees the ISA.
    unsafe {
        let lo = S::fmadd(S::splat(c[1]), s, S::splat(c[0]));
        let hi = S::fmadd(S::splat(c[3]), s, S::splat(c[2]));
        let hi = S::fmadd(S::splat(c[4]), s2, hi);
        S::fmadd(s2, hi, lo)
    }
}

/// `clamp(x·P(x²)/Q(x²), −out, out)` for `x` clamped to `[−lim, lim]`. A
/// NaN `x` flows through every operation (the clamps keep it), so no
/// separate NaN test is needed.
///
/// # Safety
/// The CPU supports `S`.
#[inline(always)]
unsafe fn rational<S: Simd>(x: S::V, p: &[f32; 5], q: &[f32; 5], lim: f32, out: f32) -> S::V {
    // SAFETY: the caller guarantees the ISA.
    unsafe {
        let x = S::clamp(x, -lim, lim);
        let s = S::mul(x, x);
        let s2 = S::mul(s, s);
        let n = estrin::<S>(p, s, s2);
        let d = estrin::<S>(q, s, s2);
        S::clamp(S::div(S::mul(x, n), d), -out, out)
    }
}

/// Logistic sigmoid (see the module docs).
///
/// # Safety
/// The CPU supports `S`.
#[inline(always)]
pub(crate) unsafe fn sigmoid<S: Simd>(x: S::V) -> S::V {
    // SAFETY: the caller guarantees the ISA.
    unsafe {
        let t = rational::<S>(x, &SIGMOID_P, &SIGMOID_Q, 2.0 * A, 0.5);
        S::add(t, S::splat(0.5))
    }
}

/// Hyperbolic tangent (see the module docs).
///
/// # Safety
/// The CPU supports `S`.
#[inline(always)]
pub(crate) unsafe fn tanh<S: Simd>(x: S::V) -> S::V {
    // SAFETY: the caller guarantees the ISA.
    unsafe { rational::<S>(x, &TANH_P, &TANH_Q, A, 1.0) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::isa::{Arch, Isa, Supported, WithArch};

    /// Evaluates σ (`sig`) or tanh on every point, full vectors and a
    /// partial tail, and says which ISA ran.
    struct Eval<'a> {
        xs: &'a [f32],
        sig: bool,
    }

    impl WithArch for Eval<'_> {
        type Output = (Isa, Vec<f32>);
        #[inline(always)]
        unsafe fn run<A: Arch>(self) -> (Isa, Vec<f32>) {
            let l = A::LANES;
            let mut out = vec![f32::NAN; self.xs.len()];
            for (chunk, dst) in self.xs.chunks(l).zip(out.chunks_mut(l)) {
                // SAFETY: inside A's entry; `chunk`/`dst` hold
                // `chunk.len() ≤ LANES` floats.
                unsafe {
                    let n = chunk.len();
                    let v = if n == l {
                        A::load(chunk.as_ptr())
                    } else {
                        A::load_partial(chunk.as_ptr(), n)
                    };
                    let y = if self.sig {
                        sigmoid::<A>(v)
                    } else {
                        tanh::<A>(v)
                    };
                    if n == l {
                        A::store(dst.as_mut_ptr(), y)
                    } else {
                        A::store_partial(dst.as_mut_ptr(), y, n)
                    }
                }
            }
            (A::ISA, out)
        }
    }

    fn eval(isa: Isa, xs: &[f32], sig: bool) -> Vec<f32> {
        let (ran, out) = Supported::new(isa).unwrap().dispatch(Eval { xs, sig });
        assert_eq!(ran, isa, "the {isa} path did not run");
        out
    }

    fn sig64(x: f64) -> f64 {
        1.0 / (1.0 + (-x).exp())
    }

    /// ≥ 10⁷ points: every 512th bit pattern (both signs, all finite and
    /// non-finite), a dense grid over [−20, 20], and the special values.
    fn sweep_points() -> Vec<f32> {
        let mut xs: Vec<f32> = (0..(1u64 << 32))
            .step_by(512)
            .map(|b| f32::from_bits(b as u32))
            .collect();
        xs.extend((0..2_000_001).map(|i| -20.0 + i as f32 * 2e-5));
        let mut specials = crate::engine::simd::tests::special_values();
        // Saturation edges: tanh rounds to 1.0 in f32 from about 8.3178,
        // σ from about 16.6355; σ underflows below about −103.97.
        let edges = [87.0, 88.8, 9.0, 8.317_766, 16.635_532, -103.97];
        specials.extend(edges.iter().flat_map(|&x| [x, -x]));
        for s in specials {
            xs.push(s);
            xs.push(f32::from_bits(s.to_bits().wrapping_add(1)));
            xs.push(f32::from_bits(s.to_bits().wrapping_sub(1)));
        }
        xs
    }

    fn check(
        isa: Isa,
        xs: &[f32],
        ys: &[f32],
        f: fn(f64) -> f64,
        lo: f32,
        name: &str,
    ) -> (f64, f32) {
        let mut worst = (0.0, 0.0);
        for (&x, &y) in xs.iter().zip(ys) {
            if x.is_nan() {
                assert!(y.is_nan(), "{isa}: {name}(NaN) = {y}");
                continue;
            }
            assert!(
                (lo..=1.0).contains(&y),
                "{isa}: {name}({x}) = {y} out of range"
            );
            let err = (y as f64 - f(x as f64)).abs();
            if err > worst.0 {
                worst = (err, x);
            }
        }
        worst
    }

    #[test]
    fn max_abs_error_below_documented_bound_on_every_isa() {
        let xs = sweep_points();
        assert!(xs.len() >= 10_000_000);
        for isa in Isa::all_available() {
            let (es, xs_w) = check(isa, &xs, &eval(isa, &xs, true), sig64, 0.0, "sigmoid");
            let (et, xt_w) = check(isa, &xs, &eval(isa, &xs, false), f64::tanh, -1.0, "tanh");
            println!("{isa}: sigmoid max abs err {es:.3e} at {xs_w}; tanh {et:.3e} at {xt_w}");
            assert!(
                es <= crate::ACTIVATION_MAX_ABS_ERROR as f64,
                "{isa}: sigmoid err {es} at {xs_w}"
            );
            assert!(
                et <= crate::ACTIVATION_MAX_ABS_ERROR as f64,
                "{isa}: tanh err {et} at {xt_w}"
            );
        }
    }

    #[test]
    fn exact_values_and_signs() {
        let pts = [
            0.0f32,
            -0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            1e-30,
            -1e-30,
        ];
        for isa in Isa::all_available() {
            let t = eval(isa, &pts, false);
            let s = eval(isa, &pts, true);
            assert_eq!(t[0].to_bits(), 0.0f32.to_bits(), "{isa}: tanh(+0)");
            assert_eq!(
                t[1].to_bits(),
                (-0.0f32).to_bits(),
                "{isa}: tanh(-0) must be -0"
            );
            assert_eq!((t[2], t[3]), (1.0, -1.0), "{isa}: tanh(±inf)");
            assert!(t[4] >= 0.0 && t[5] <= 0.0, "{isa}: tanh keeps the sign");
            assert_eq!(s[0], 0.5, "{isa}: sigmoid(0)");
            assert_eq!(s[2], 1.0, "{isa}: sigmoid(inf)");
            assert!(s[3] < 1e-37, "{isa}: sigmoid(-inf)");
        }
    }

    /// A partial load of `n` floats from between guard values, σ, and a
    /// partial store between guard values: returns the loaded lanes and
    /// the output buffer (guards included), and which ISA ran.
    struct Guarded {
        n: usize,
    }

    const GUARD: f32 = -7.0;

    impl WithArch for Guarded {
        type Output = (Isa, Vec<f32>, Vec<f32>);
        #[inline(always)]
        unsafe fn run<A: Arch>(self) -> (Isa, Vec<f32>, Vec<f32>) {
            let l = A::LANES;
            let mut src = vec![GUARD; 3 * l];
            for i in 0..self.n {
                src[l + i] = i as f32 * 0.25;
            }
            let mut out = vec![GUARD; 3 * l];
            // SAFETY: inside A's entry; `src[l..]` and `out[l..]` hold 2l
            // floats, at least the n ≤ l accessed.
            let loaded = unsafe {
                let v = A::load_partial(src.as_ptr().add(l), self.n);
                A::store_partial(out.as_mut_ptr().add(l), sigmoid::<A>(v), self.n);
                A::to_array(v)[..l].to_vec()
            };
            (A::ISA, loaded, out)
        }
    }

    /// Masked loads read nothing past `n` (the lanes beyond are zero, not
    /// the guard values after them) and masked stores write nothing past
    /// `n` (the guards on both sides survive), for every `n < LANES`.
    #[test]
    fn partial_access_stays_in_bounds() {
        for isa in Isa::all_available() {
            let l = isa.lanes();
            for n in 1..l {
                let (ran, loaded, out) = Supported::new(isa).unwrap().dispatch(Guarded { n });
                assert_eq!(ran, isa, "the {isa} path did not run");
                for (i, &v) in loaded.iter().enumerate() {
                    let want = if i < n { i as f32 * 0.25 } else { 0.0 };
                    assert_eq!(v, want, "{isa} n={n}: lane {i} loaded {v}");
                }
                assert!(
                    out[..l].iter().chain(&out[l + n..]).all(|&g| g == GUARD),
                    "{isa} n={n}: a store went past its {n} floats: {out:?}"
                );
                assert!(
                    out[l..l + n].iter().all(|y| (0.5..1.0).contains(y)),
                    "{isa} n={n}: {:?}",
                    &out[l..l + n]
                );
            }
        }
    }
}
