//! Strided loads and stores, for the batch-in-lanes small kernels (one
//! vector holds a quantity of several samples, whose rows are `stride`
//! floats apart).

use super::Simd;

/// Gathers and scatters over `n ≤ LANES` rows `stride` floats apart.
pub(crate) trait Strided: Simd {
    /// Lane `i < min(n, LANES)` = `*p.add(i · stride)`, other lanes 0 (read
    /// nothing); `LANES · stride` must fit in an `i32`.
    ///
    /// # Safety
    /// The CPU supports the ISA; every address read is valid.
    unsafe fn gather(p: *const f32, stride: usize, n: usize) -> Self::V;
    /// `*p.add(i · stride) = v[i]` for `i < min(n, LANES)` (writes nothing
    /// else); `LANES · stride` must fit in an `i32`.
    ///
    /// # Safety
    /// The CPU supports the ISA; every address written is valid.
    unsafe fn scatter(p: *mut f32, stride: usize, n: usize, v: Self::V);
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::super::{Avx2, Avx512, avx2::mask};
    use super::Strided;

    impl Strided for Avx512 {
        #[inline(always)]
        unsafe fn gather(p: *const f32, stride: usize, n: usize) -> __m512 {
            // SAFETY: the caller guarantees AVX-512F and the addresses; masked-off lanes read nothing.
            unsafe {
                let idx = _mm512_mullo_epi32(
                    _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                    _mm512_set1_epi32(stride as i32),
                );
                let k: __mmask16 = if n >= 16 { 0xffff } else { (1u16 << n) - 1 };
                _mm512_mask_i32gather_ps::<4>(_mm512_setzero_ps(), k, idx, p.cast())
            }
        }
        #[inline(always)]
        unsafe fn scatter(p: *mut f32, stride: usize, n: usize, v: __m512) {
            // SAFETY: the caller guarantees AVX-512F and the addresses; masked-off lanes write nothing.
            unsafe {
                let idx = _mm512_mullo_epi32(
                    _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                    _mm512_set1_epi32(stride as i32),
                );
                let k: __mmask16 = if n >= 16 { 0xffff } else { (1u16 << n) - 1 };
                _mm512_mask_i32scatter_ps::<4>(p.cast(), k, idx, v)
            }
        }
    }

    impl Strided for Avx2 {
        #[inline(always)]
        unsafe fn gather(p: *const f32, stride: usize, n: usize) -> __m256 {
            // SAFETY: the caller guarantees AVX2 and the addresses; masked-off lanes read nothing.
            unsafe {
                let idx = _mm256_mullo_epi32(
                    _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                    _mm256_set1_epi32(stride as i32),
                );
                let k = _mm256_castsi256_ps(mask(n.min(8)));
                _mm256_mask_i32gather_ps::<4>(_mm256_setzero_ps(), p, idx, k)
            }
        }
        #[inline(always)]
        unsafe fn scatter(p: *mut f32, stride: usize, n: usize, v: __m256) {
            let mut a = [0.0f32; 8];
            // SAFETY: the caller guarantees AVX2 and the addresses; `a` holds 8 floats, and the caller
            // guarantees the `n ≤ 8` strided writes.
            unsafe {
                _mm256_storeu_ps(a.as_mut_ptr(), v);
                for (i, &x) in a.iter().enumerate().take(n) {
                    *p.add(i * stride) = x;
                }
            }
        }
    }
}

impl Strided for super::Portable {
    #[inline(always)]
    unsafe fn gather(p: *const f32, stride: usize, n: usize) -> wide::f32x8 {
        let mut a = [0.0f32; 8];
        for (i, x) in a.iter_mut().enumerate().take(n) {
            // SAFETY: the caller guarantees `p + i·stride` valid for `i < n`.
            *x = unsafe { *p.add(i * stride) };
        }
        wide::f32x8::from(a)
    }
    #[inline(always)]
    unsafe fn scatter(p: *mut f32, stride: usize, n: usize, v: wide::f32x8) {
        for (i, &x) in v.to_array().iter().enumerate().take(n) {
            // SAFETY: the caller guarantees `p + i·stride` valid for `i < n`.
            unsafe { *p.add(i * stride) = x };
        }
    }
}
