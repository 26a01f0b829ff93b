//! A small vector trait and its instruction-set instances.
//!
//! Each ISA is a zero-sized type implementing [`Simd`]; hot kernels are
//! generic `#[inline(always)]` bodies over the trait, compiled inside the
//! ISA's `#[target_feature]` entry (`Arch::vectorize` in `engine::isa`).
//! The rule that keeps this fast: **every** function between the entry and
//! the intrinsics is `#[inline(always)]`; a non-inlined generic helper
//! would be compiled without the features and call the intrinsics out of
//! line.
//!
//! * [`Avx512`]: `__m512`, 16 lanes, needs AVX-512F.
//! * [`Avx2`]: `__m256`, 8 lanes, needs AVX2 and FMA.
//! * [`Portable`]: `wide::f32x8`, 8 lanes, any target.
//!
//! Operations only the register-resident small kernels use live in their
//! own traits, compiled only when a generated kernel needs them.

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(lstm_kernels_small)]
mod lane;
mod portable;
#[cfg(lstm_kernels_batch)]
mod strided;

#[cfg(target_arch = "x86_64")]
pub(crate) use avx2::Avx2;
#[cfg(target_arch = "x86_64")]
pub(crate) use avx512::Avx512;
#[cfg(lstm_kernels_small)]
pub(crate) use lane::LaneSplat;
pub(crate) use portable::Portable;
#[cfg(lstm_kernels_batch)]
pub(crate) use strided::Strided;

/// Vector operations the kernels and activations are written in.
///
/// # Safety
/// Every method requires that the CPU supports the instance's ISA; methods
/// taking pointers require them valid for `LANES` floats (or `n`, for the
/// partial ones).
pub(crate) trait Simd: Copy + Send + Sync + 'static {
    /// f32 lanes per vector.
    const LANES: usize;
    /// The vector type.
    type V: Copy;

    /// All lanes `x`.
    ///
    /// # Safety
    /// The CPU supports the ISA.
    unsafe fn splat(x: f32) -> Self::V;
    /// Unaligned load of `LANES` floats.
    ///
    /// # Safety
    /// The CPU supports the ISA; `p` is valid for `LANES` reads.
    unsafe fn load(p: *const f32) -> Self::V;
    /// Unaligned store of `LANES` floats.
    ///
    /// # Safety
    /// The CPU supports the ISA; `p` is valid for `LANES` writes.
    unsafe fn store(p: *mut f32, v: Self::V);
    /// Loads `n < LANES` floats, other lanes 0; reads nothing past `p + n`.
    ///
    /// # Safety
    /// The CPU supports the ISA; `p` is valid for `n` reads.
    unsafe fn load_partial(p: *const f32, n: usize) -> Self::V;
    /// Stores the first `n < LANES` lanes; writes nothing past `p + n`.
    ///
    /// # Safety
    /// The CPU supports the ISA; `p` is valid for `n` writes.
    unsafe fn store_partial(p: *mut f32, v: Self::V, n: usize);
    /// `a + b`.
    ///
    /// # Safety
    /// The CPU supports the ISA.
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V;
    /// `a - b`.
    ///
    /// # Safety
    /// The CPU supports the ISA.
    unsafe fn sub(a: Self::V, b: Self::V) -> Self::V;
    /// `a · b`.
    ///
    /// # Safety
    /// The CPU supports the ISA.
    unsafe fn mul(a: Self::V, b: Self::V) -> Self::V;
    /// `a / b` (correctly rounded).
    ///
    /// # Safety
    /// The CPU supports the ISA.
    unsafe fn div(a: Self::V, b: Self::V) -> Self::V;
    /// `a · b + c`, fused where the ISA has FMA.
    ///
    /// # Safety
    /// The CPU supports the ISA.
    unsafe fn fmadd(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    /// `min(hi, max(lo, x))`, returning NaN for a NaN `x`.
    ///
    /// # Safety
    /// The CPU supports the ISA.
    unsafe fn clamp(x: Self::V, lo: f32, hi: f32) -> Self::V;
    /// Lanes as an array (tests, tails).
    ///
    /// # Safety
    /// The CPU supports the ISA.
    unsafe fn to_array(v: Self::V) -> [f32; 16];
}

#[cfg(test)]
pub(crate) mod tests {
    use crate::engine::isa::{Arch, Isa, Supported, WithArch};

    /// Special f32 values every elementwise test covers: signed zeros and
    /// infinities, quiet and signalling NaNs of both signs, the smallest
    /// and largest subnormals and normals, the extremes.
    pub(crate) fn special_values() -> Vec<f32> {
        vec![
            0.0,
            -0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            -f32::NAN,
            f32::from_bits(0x7fc0_0001),
            f32::from_bits(0x7f80_0001), // signalling NaN
            f32::from_bits(0xffc0_1234),
            f32::from_bits(1),
            -f32::from_bits(1),
            f32::from_bits(0x007f_ffff),
            f32::MIN_POSITIVE,
            -f32::MIN_POSITIVE,
            f32::MAX,
            f32::MIN,
        ]
    }

    /// Special and ordinary inputs for the elementwise operations.
    fn inputs() -> Vec<f32> {
        let mut v = special_values();
        v.extend((-40..=40).map(|i| i as f32 * 0.37));
        v
    }

    /// Runs `clamp` (the operation with NaN and ±0 cases) and returns the
    /// ISA that ran and every lane that differs from the scalar definition.
    struct ClampOps;

    impl WithArch for ClampOps {
        type Output = (Isa, Vec<String>);
        #[inline(always)]
        unsafe fn run<A: Arch>(self) -> (Isa, Vec<String>) {
            let same = |a: f32, b: f32| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan());
            let mut bad = Vec::new();
            for x in inputs() {
                // SAFETY: inside A's entry; the arrays hold 16 ≥ LANES floats.
                let got = unsafe {
                    let xv = A::splat(x);
                    [
                        A::to_array(A::clamp(xv, -2.5, 2.5))[0],
                        A::to_array(A::clamp(xv, -1.0, 3.0))[0],
                    ]
                };
                let clamp = |lo: f32, hi: f32| if x.is_nan() { x } else { x.clamp(lo, hi) };
                let want = [clamp(-2.5, 2.5), clamp(-1.0, 3.0)];
                for (k, (g, w)) in got.iter().zip(want).enumerate() {
                    // ±0 may come out of a clamp as either zero.
                    let zero = *g == 0.0 && w == 0.0;
                    if !same(*g, w) && !zero {
                        bad.push(format!(
                            "{}: op {k} at x = {x:e}: {g:e}, want {w:e}",
                            A::ISA
                        ));
                    }
                }
            }
            (A::ISA, bad)
        }
    }

    #[test]
    fn clamp_matches_its_scalar_definition_on_every_isa() {
        for isa in Supported::all() {
            let (ran, bad) = isa.dispatch(ClampOps);
            assert_eq!(ran, isa.isa(), "the {} path did not run", isa.isa());
            assert!(bad.is_empty(), "{}", bad.join("\n"));
        }
    }
}
