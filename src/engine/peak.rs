//! The per-core FMA peak of an ISA path, measured the way
//! `shared/tools/fma-peak` does: 12 independent FMA chains, so the FMA
//! latency is hidden and only throughput counts. Benchmarks report their
//! GFLOP/s as a fraction of it.

use std::time::Instant;

use super::isa::{Arch, Isa, Supported, WithArch};

/// `iters` rounds of 12 independent FMA chains.
struct Chains(usize);

impl WithArch for Chains {
    type Output = f32;
    #[inline(always)]
    unsafe fn run<A: Arch>(self) -> f32 {
        // SAFETY: inside A's entry.
        unsafe {
            let b = A::splat(1.000_000_1);
            let c = A::splat(1e-7);
            let mut a = [A::splat(0.0); 12];
            for (i, v) in a.iter_mut().enumerate() {
                *v = A::splat(i as f32);
            }
            for _ in 0..self.0 {
                for v in a.iter_mut() {
                    *v = A::fmadd(*v, b, c);
                }
            }
            let mut sum = A::splat(0.0);
            for v in a {
                sum = A::add(sum, v);
            }
            A::to_array(sum)[0]
        }
    }
}

/// Measures this core's f32 FMA peak in GFLOP/s on `isa` (about 0.2 s).
/// Returns `None` if the CPU lacks the ISA.
pub fn fma_peak_gflops(isa: Isa) -> Option<f64> {
    let isa = Supported::new(isa).ok()?;
    std::hint::black_box(isa.dispatch(Chains(100_000)));
    let iters = 20_000_000;
    let t = Instant::now();
    std::hint::black_box(isa.dispatch(Chains(std::hint::black_box(iters))));
    let s = t.elapsed().as_secs_f64();
    Some(iters as f64 * 12.0 * isa.isa().lanes() as f64 * 2.0 / s / 1e9)
}

/// The ratio of the AVX-512 to the AVX2 FMA throughput on this core, from
/// a probe of about 2 ms (best of 3 short runs each): about 2 where 512-bit
/// FMAs issue at full rate, about 1 where they issue at half rate. 0 if
/// the CPU lacks either ISA.
pub fn fma_rate_probe() -> f64 {
    let (Ok(a), Ok(b)) = (Supported::new(Isa::Avx512), Supported::new(Isa::Avx2)) else {
        return 0.0;
    };
    let rate = |isa: Supported| {
        std::hint::black_box(isa.dispatch(Chains(2_000)));
        (0..3)
            .map(|_| {
                let iters = 40_000;
                let t = Instant::now();
                std::hint::black_box(isa.dispatch(Chains(std::hint::black_box(iters))));
                iters as f64 * isa.isa().lanes() as f64 / t.elapsed().as_secs_f64().max(1e-9)
            })
            .fold(0.0, f64::max)
    };
    rate(a) / rate(b)
}
