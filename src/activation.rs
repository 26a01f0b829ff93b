//! Vectorised σ and tanh for the fused epilogues.
//!
//! Method: `exp` by Cody–Waite range reduction (`x = n·ln2 + r`,
//! `|r| ≤ ln2/2`, ln2 split in a short high part and a low part), a degree-6
//! polynomial for `e^r` (Cephes `expf` coefficients, relative error ≈ 2
//! ulp) and `2ⁿ` applied by [`Simd::scale2`]. Then
//!
//! * `σ(x) = 1 / (1 + e^{−x})`, with `x` clamped to `[−87, 87]` (σ is then
//!   within 2e-38 of 0 or 1, so saturating is exact to far below the bound);
//! * `tanh(x) = sign(x) · (1 − e) / (1 + e)`, `e = e^{−2|x|}`, `|x|` clamped
//!   to 9 (where `1 − tanh < 3.1e-8`). The form has no cancellation beyond
//!   one ulp of 1, i.e. ≤ 6e-8 absolute near 0, and keeps the sign of ±0.
//!
//! Both propagate NaN. Measured maximum absolute error over a sweep of all
//! f32 (see the tests): well under [`crate::ACTIVATION_MAX_ABS_ERROR`]
//! (1e-6) on every ISA path.

use crate::simd::Simd;

const LOG2E: f32 = std::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
const P0: f32 = 1.987_569_1e-4;
const P1: f32 = 1.398_199_9e-3;
const P2: f32 = 8.333_452e-3;
const P3: f32 = 4.166_579_6e-2;
const P4: f32 = 1.666_666_5e-1;
const P5: f32 = 0.5; // Cephes 5.0000001201e-1 rounds to 0.5 in f32

/// `e^x` for `x` in `[−87.3, 87.3]` (NaN in, NaN out).
#[inline(always)]
unsafe fn exp_reduced<S: Simd>(x: S::V) -> S::V {
    // SAFETY: the caller guarantees the ISA.
    unsafe {
        let n = S::round(S::mul(x, S::splat(LOG2E)));
        let r = S::fmadd(n, S::splat(-LN2_HI), x);
        let r = S::fmadd(n, S::splat(-LN2_LO), r);
        let mut p = S::splat(P0);
        for c in [P1, P2, P3, P4, P5] {
            p = S::fmadd(p, r, S::splat(c));
        }
        let r2 = S::mul(r, r);
        let p = S::add(S::fmadd(p, r2, r), S::splat(1.0));
        S::scale2(p, n)
    }
}

/// Logistic sigmoid `1 / (1 + e^{−x})` (see the module docs).
///
/// # Safety
/// The CPU supports `S`.
#[inline(always)]
pub(crate) unsafe fn sigmoid<S: Simd>(x: S::V) -> S::V {
    // SAFETY: the caller guarantees the ISA.
    unsafe {
        let z = S::clamp(x, -87.0, 87.0);
        let e = exp_reduced::<S>(S::sub(S::splat(0.0), z));
        S::keep_nan(x, S::div(S::splat(1.0), S::add(S::splat(1.0), e)))
    }
}

/// Hyperbolic tangent (see the module docs).
///
/// # Safety
/// The CPU supports `S`.
#[inline(always)]
pub(crate) unsafe fn tanh<S: Simd>(x: S::V) -> S::V {
    // SAFETY: the caller guarantees the ISA.
    unsafe {
        let a = S::clamp(S::abs(x), 0.0, 9.0);
        let e = exp_reduced::<S>(S::mul(a, S::splat(-2.0)));
        let one = S::splat(1.0);
        let t = S::div(S::sub(one, e), S::add(one, e));
        S::keep_nan(x, S::or_sign(t, x))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simd::{Isa, Portable};

    /// Evaluates σ (`sig`) or tanh on every point, full vectors and a
    /// partial tail, recording which ISA ran.
    #[inline(always)]
    unsafe fn eval_body<S: Simd>(xs: &[f32], sig: bool, ran: &mut &'static str) -> Vec<f32> {
        *ran = S::NAME;
        let l = S::LANES;
        let mut out = vec![f32::NAN; xs.len()];
        for (chunk, dst) in xs.chunks(l).zip(out.chunks_mut(l)) {
            // SAFETY: the wrapper guarantees the ISA; `chunk`/`dst` hold
            // `chunk.len() ≤ LANES` floats.
            unsafe {
                let n = chunk.len();
                let v = if n == l {
                    S::load(chunk.as_ptr())
                } else {
                    S::load_partial(chunk.as_ptr(), n)
                };
                let y = if sig { sigmoid::<S>(v) } else { tanh::<S>(v) };
                if n == l {
                    S::store(dst.as_mut_ptr(), y)
                } else {
                    S::store_partial(dst.as_mut_ptr(), y, n)
                }
            }
        }
        out
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn eval_avx512(xs: &[f32], sig: bool, ran: &mut &'static str) -> Vec<f32> {
        // SAFETY: called only when AVX-512F is available.
        unsafe { eval_body::<crate::simd::Avx512>(xs, sig, ran) }
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn eval_avx2(xs: &[f32], sig: bool, ran: &mut &'static str) -> Vec<f32> {
        // SAFETY: called only when AVX2 and FMA are available.
        unsafe { eval_body::<crate::simd::Avx2>(xs, sig, ran) }
    }

    fn eval(isa: Isa, xs: &[f32], sig: bool) -> Vec<f32> {
        assert!(isa.available());
        let mut ran = "";
        let out = match isa {
            // SAFETY: `isa.available()` was checked.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { eval_avx512(xs, sig, &mut ran) },
            // SAFETY: `isa.available()` was checked.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { eval_avx2(xs, sig, &mut ran) },
            // SAFETY: the portable path needs no CPU feature.
            _ => unsafe { eval_body::<Portable>(xs, sig, &mut ran) },
        };
        assert_eq!(ran, isa.name(), "the {isa} path did not run");
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
        let specials = [
            0.0,
            -0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            -f32::NAN,
            f32::from_bits(0x7fc0_0001),
            f32::from_bits(0x7f80_0001), // signalling NaN
            f32::from_bits(1),
            -f32::from_bits(1),
            f32::from_bits(0x007f_ffff),
            f32::MIN_POSITIVE,
            -f32::MIN_POSITIVE,
            f32::MAX,
            f32::MIN,
            87.0,
            -87.0,
            88.8,
            -88.8,
            9.0,
            -9.0,
            8.317_766, // tanh rounds to 1.0 in f32 from about here
            -8.317_766,
            16.635_532, // σ(x) rounds to 1.0 in f32 from about here
            -103.97,    // σ(x) underflows f32 below about here
        ];
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

    #[test]
    fn partial_access_stays_in_bounds() {
        for isa in Isa::all_available() {
            for n in 1..isa.lanes() {
                // Guard values around the n live floats must survive.
                let xs: Vec<f32> = (0..n).map(|i| i as f32 * 0.25).collect();
                let ys = eval(isa, &xs, true);
                assert_eq!(ys.len(), n);
                assert!(
                    ys.iter().all(|y| (0.5..1.0).contains(y)),
                    "{isa} n={n}: {ys:?}"
                );
            }
        }
    }
}
