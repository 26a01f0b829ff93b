//! Broadcast of one lane, for the gates-in-lanes small kernels (a
//! sample's `m` stays in a register and its units are broadcast from it).

use super::Simd;

/// Every lane = lane `k` of a vector, without a memory round trip.
pub(crate) trait LaneSplat: Simd {
    /// # Safety
    /// The CPU supports the ISA; `k < LANES`.
    unsafe fn lane_splat(v: Self::V, k: usize) -> Self::V;
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::super::{Avx2, Avx512};
    use super::LaneSplat;

    impl LaneSplat for Avx512 {
        #[inline(always)]
        unsafe fn lane_splat(v: __m512, k: usize) -> __m512 {
            // SAFETY: the caller guarantees AVX-512F.
            unsafe { _mm512_permutexvar_ps(_mm512_set1_epi32(k as i32), v) }
        }
    }

    impl LaneSplat for Avx2 {
        #[inline(always)]
        unsafe fn lane_splat(v: __m256, k: usize) -> __m256 {
            // SAFETY: the caller guarantees AVX2.
            unsafe { _mm256_permutevar8x32_ps(v, _mm256_set1_epi32(k as i32)) }
        }
    }
}

impl LaneSplat for super::Portable {
    #[inline(always)]
    unsafe fn lane_splat(v: wide::f32x8, k: usize) -> wide::f32x8 {
        wide::f32x8::splat(v.to_array()[k & 7])
    }
}
