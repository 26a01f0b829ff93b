//! [`Simd`] on `wide::f32x8`: 8 lanes, any target; as fast as the build's
//! target features allow (SSE2 by default on x86-64).

use wide::f32x8;

use super::Simd;

/// Portable instance (8 lanes, `wide`).
#[derive(Clone, Copy, Debug)]
pub struct Portable;

// SAFETY (all methods): no CPU feature is needed; pointer methods rely on
// the caller's guarantee of validity for 8 (or n) floats.
impl Simd for Portable {
    const LANES: usize = 8;
    type V = f32x8;

    #[inline(always)]
    unsafe fn splat(x: f32) -> f32x8 {
        f32x8::splat(x)
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> f32x8 {
        // SAFETY: `p` is valid for 8 reads; read_unaligned has no alignment need.
        f32x8::from(unsafe { p.cast::<[f32; 8]>().read_unaligned() })
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: f32x8) {
        // SAFETY: `p` is valid for 8 writes.
        unsafe { p.cast::<[f32; 8]>().write_unaligned(v.to_array()) }
    }
    #[inline(always)]
    unsafe fn load_partial(p: *const f32, n: usize) -> f32x8 {
        let mut a = [0.0f32; 8];
        // SAFETY: `p` is valid for `n ≤ 8` reads.
        unsafe { std::ptr::copy_nonoverlapping(p, a.as_mut_ptr(), n.min(8)) };
        f32x8::from(a)
    }
    #[inline(always)]
    unsafe fn store_partial(p: *mut f32, v: f32x8, n: usize) {
        let a = v.to_array();
        // SAFETY: `p` is valid for `n ≤ 8` writes.
        unsafe { std::ptr::copy_nonoverlapping(a.as_ptr(), p, n.min(8)) }
    }
    #[inline(always)]
    unsafe fn add(a: f32x8, b: f32x8) -> f32x8 {
        a + b
    }
    #[inline(always)]
    unsafe fn sub(a: f32x8, b: f32x8) -> f32x8 {
        a - b
    }
    #[inline(always)]
    unsafe fn mul(a: f32x8, b: f32x8) -> f32x8 {
        a * b
    }
    #[inline(always)]
    unsafe fn div(a: f32x8, b: f32x8) -> f32x8 {
        a / b
    }
    #[inline(always)]
    unsafe fn fmadd(a: f32x8, b: f32x8, c: f32x8) -> f32x8 {
        a.mul_add(b, c)
    }
    #[inline(always)]
    unsafe fn clamp(x: f32x8, lo: f32, hi: f32) -> f32x8 {
        // Vector min/max (whose NaN behaviour is the target's), then the
        // NaN lanes of `x` put back. (A per-lane `f32::clamp` made the
        // portable activations 2–3× slower.)
        let c = f32x8::splat(hi).fast_min(f32x8::splat(lo).fast_max(x));
        x.is_nan().select(x, c)
    }
    #[inline(always)]
    unsafe fn to_array(v: f32x8) -> [f32; 16] {
        let mut a = [0.0; 16];
        a[..8].copy_from_slice(&v.to_array());
        a
    }
}
