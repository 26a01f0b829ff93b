//! The per-core FMA peak of an ISA path, measured the way
//! `shared/tools/fma-peak` does: 12 independent FMA chains, so the FMA
//! latency is hidden and only throughput counts. Benchmarks report their
//! GFLOP/s as a fraction of it.

use std::time::Instant;

#[cfg(target_arch = "x86_64")]
use crate::simd::{Avx2, Avx512};
use crate::simd::{Isa, Portable, Simd};

#[inline(always)]
unsafe fn chains<S: Simd>(iters: usize) -> f32 {
    // SAFETY: the wrapper guarantees the ISA.
    unsafe {
        let b = S::splat(1.000_000_1);
        let c = S::splat(1e-7);
        let mut a = [S::splat(0.0); 12];
        for (i, v) in a.iter_mut().enumerate() {
            *v = S::splat(i as f32);
        }
        for _ in 0..iters {
            for v in a.iter_mut() {
                *v = S::fmadd(*v, b, c);
            }
        }
        let mut sum = S::splat(0.0);
        for v in a {
            sum = S::add(sum, v);
        }
        S::to_array(sum)[0]
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn chains_avx512(iters: usize) -> f32 {
    // SAFETY: called only when AVX-512F is available.
    unsafe { chains::<Avx512>(iters) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn chains_avx2(iters: usize) -> f32 {
    // SAFETY: called only when AVX2 and FMA are available.
    unsafe { chains::<Avx2>(iters) }
}

/// Measures this core's f32 FMA peak in GFLOP/s on `isa` (about 0.2 s).
/// Returns `None` if the CPU lacks the ISA.
pub fn fma_peak_gflops(isa: Isa) -> Option<f64> {
    if !isa.available() {
        return None;
    }
    let run = |iters: usize| -> f32 {
        match isa {
            // SAFETY: availability was checked above.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { chains_avx512(iters) },
            // SAFETY: availability was checked above.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { chains_avx2(iters) },
            // SAFETY: the portable path needs no CPU feature.
            _ => unsafe { chains::<Portable>(iters) },
        }
    };
    std::hint::black_box(run(100_000));
    let iters = 20_000_000;
    let t = Instant::now();
    std::hint::black_box(run(std::hint::black_box(iters)));
    let s = t.elapsed().as_secs_f64();
    Some(iters as f64 * 12.0 * isa.lanes() as f64 * 2.0 / s / 1e9)
}
