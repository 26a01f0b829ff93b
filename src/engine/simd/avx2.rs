//! [`Simd`] on AVX2 + FMA: `__m256`, 8 lanes, `vmaskmov` partial access.

use std::arch::x86_64::*;

use super::Simd;

/// AVX2 + FMA instance (8 lanes).
#[derive(Clone, Copy, Debug)]
pub struct Avx2;

/// Lanes `< n` have their sign bit set (the `vmaskmovps` mask).
///
/// # Safety
/// The CPU supports AVX2.
#[inline(always)]
pub(super) unsafe fn mask(n: usize) -> __m256i {
    // SAFETY: the caller guarantees AVX2.
    unsafe {
        _mm256_cmpgt_epi32(
            _mm256_set1_epi32(n as i32),
            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
        )
    }
}

// SAFETY (all methods): the trait contract makes the caller guarantee AVX2
// and FMA and pointer validity; each body is one or a few intrinsics.
impl Simd for Avx2 {
    const LANES: usize = 8;
    type V = __m256;

    #[inline(always)]
    unsafe fn splat(x: f32) -> __m256 {
        // SAFETY: see the impl comment.
        unsafe { _mm256_set1_ps(x) }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m256 {
        // SAFETY: see the impl comment.
        unsafe { _mm256_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: __m256) {
        // SAFETY: see the impl comment.
        unsafe { _mm256_storeu_ps(p, v) }
    }
    #[inline(always)]
    unsafe fn load_partial(p: *const f32, n: usize) -> __m256 {
        // SAFETY: vmaskmovps does not access (or fault on) masked-off lanes.
        unsafe { _mm256_maskload_ps(p, mask(n)) }
    }
    #[inline(always)]
    unsafe fn store_partial(p: *mut f32, v: __m256, n: usize) {
        // SAFETY: vmaskmovps does not write masked-off lanes.
        unsafe { _mm256_maskstore_ps(p, mask(n), v) }
    }
    #[inline(always)]
    unsafe fn add(a: __m256, b: __m256) -> __m256 {
        // SAFETY: see the impl comment.
        unsafe { _mm256_add_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn sub(a: __m256, b: __m256) -> __m256 {
        // SAFETY: see the impl comment.
        unsafe { _mm256_sub_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn mul(a: __m256, b: __m256) -> __m256 {
        // SAFETY: see the impl comment.
        unsafe { _mm256_mul_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn div(a: __m256, b: __m256) -> __m256 {
        // SAFETY: see the impl comment.
        unsafe { _mm256_div_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn fmadd(a: __m256, b: __m256, c: __m256) -> __m256 {
        // SAFETY: see the impl comment.
        unsafe { _mm256_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    unsafe fn clamp(x: __m256, lo: f32, hi: f32) -> __m256 {
        // SAFETY: see the impl comment. vmaxps/vminps return the second
        // operand when either is NaN, so `x` last keeps a NaN.
        unsafe { _mm256_min_ps(_mm256_set1_ps(hi), _mm256_max_ps(_mm256_set1_ps(lo), x)) }
    }
    #[inline(always)]
    unsafe fn to_array(v: __m256) -> [f32; 16] {
        let mut a = [0.0; 16];
        // SAFETY: `a` holds at least 8 floats.
        unsafe { _mm256_storeu_ps(a.as_mut_ptr(), v) };
        a
    }
}
