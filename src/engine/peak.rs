//! The per-core FMA peak of an ISA path, measured the way
//! `shared/tools/fma-peak` does: 12 independent FMA chains, so the FMA
//! latency is hidden and only throughput counts. Benchmarks report their
//! GFLOP/s as a fraction of it.
//!
//! [`kernel_l1_gflops`] measures the engine's own blocked microkernel with
//! its operands in L1: about the most any GEMM built on it can reach on
//! this core, loads and all (the FMA peak counts FMAs alone).

use std::time::Instant;

use super::isa::{Arch, Isa, Supported, WithArch};
use super::microkernel::{Acc, Prefetch};

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

/// Measures this core's f32 FMA peak in GFLOP/s on `isa` (about 0.2 s):
/// the best of three runs, so that a run the OS interrupted (a shared
/// machine) does not lower it. Returns `None` if the CPU lacks the ISA.
pub fn fma_peak_gflops(isa: Isa) -> Option<f64> {
    let isa = Supported::new(isa).ok()?;
    std::hint::black_box(isa.dispatch(Chains(100_000)));
    let iters = 7_000_000;
    (0..3)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(isa.dispatch(Chains(std::hint::black_box(iters))));
            let s = t.elapsed().as_secs_f64();
            iters as f64 * 12.0 * isa.isa().lanes() as f64 * 2.0 / s / 1e9
        })
        .reduce(f64::max)
}

/// K rows of the L1 probe's panel: 96 rows of 4 vectors are 24 KiB on
/// AVX-512 (12 KiB on AVX2), half a 48 KiB L1d, with room for the rows of A.
const L1_K: usize = 96;

/// `calls` calls of the blocked microkernel over one L1-resident panel body
/// of [`L1_K`] rows and `A::MR` rows of A (each `L1_K` floats).
struct L1Tiles<'a> {
    calls: usize,
    panel: &'a [f32],
    a: &'a [f32],
}

impl WithArch for L1Tiles<'_> {
    /// A sum of the accumulators (so that nothing is optimized away), and
    /// the rows per call (`A::MR`).
    type Output = (f32, usize);
    #[inline(always)]
    unsafe fn run<A: Arch>(self) -> (f32, usize) {
        // Every ISA's register block has 1 to 6 rows (checked at compile
        // time), so the match below runs exactly `A::MR` rows.
        const { assert!(A::MR >= 1 && A::MR <= 6) };
        // SAFETY: inside A's entry; `tiles` checks the buffer sizes.
        unsafe {
            match A::MR {
                1 => self.tiles::<A, 1>(),
                2 => self.tiles::<A, 2>(),
                3 => self.tiles::<A, 3>(),
                4 => self.tiles::<A, 4>(),
                5 => self.tiles::<A, 5>(),
                _ => self.tiles::<A, 6>(),
            }
        }
    }
}

impl L1Tiles<'_> {
    /// # Safety
    /// Inside A's entry.
    #[inline(always)]
    unsafe fn tiles<A: Arch, const MR: usize>(&self) -> (f32, usize) {
        // Checked in release builds: the microkernel reads `L1_K` floats of
        // each row of A and `L1_K · 4 · LANES` floats of the panel.
        assert!(self.a.len() >= MR * L1_K && self.panel.len() >= L1_K * 4 * A::LANES);
        let rows: [*const f32; MR] = std::array::from_fn(|r| self.a[r * L1_K..].as_ptr());
        // SAFETY: inside A's entry.
        let mut acc: Acc<A, MR> = [[unsafe { A::splat(0.0) }; 4]; MR];
        for _ in 0..self.calls {
            // SAFETY: inside A's entry; the reads are in bounds (asserted
            // above: a plain body and a split one, two halves of `L1_K`
            // rows of 2 vectors, both read `L1_K · 4 · LANES` floats). The
            // panel is not packed in A's layout; only where each value
            // lands would differ, which neither the bounds nor the timing
            // depend on.
            unsafe {
                A::tile::<MR>(
                    L1_K,
                    &rows,
                    self.panel.as_ptr(),
                    &mut acc,
                    Prefetch::near(0),
                );
            }
            // The accumulators go through memory once per call, as a
            // tile's do (loaded from `xw`, stored by the epilogue).
            std::hint::black_box(&mut acc);
        }
        // SAFETY: inside A's entry.
        let mut sum = unsafe { A::splat(0.0) };
        for row in acc {
            for v in row {
                // SAFETY: inside A's entry.
                sum = unsafe { A::add(sum, v) };
            }
        }
        // SAFETY: inside A's entry.
        (unsafe { A::to_array(sum)[0] }, MR)
    }
}

/// Measures, in GFLOP/s, the engine's blocked microkernel for `isa` (the
/// one every f32 GEMM of a step runs: `MR` rows × 4 vectors) with its
/// panel and its rows of A in L1 (about 0.2 s): about the most a GEMM built
/// on it can reach on this core (a GEMM with a longer K per tile can do a
/// little better). Divided by [`fma_peak_gflops`] it says what the
/// core loses to loads, broadcasts and loop overhead alone, before any
/// cache miss. Returns `None` if the CPU lacks the ISA.
pub fn kernel_l1_gflops(isa: Isa) -> Option<f64> {
    let isa = Supported::new(isa).ok()?;
    let lanes = isa.isa().lanes();
    let panel = vec![1e-3f32; L1_K * 4 * lanes];
    let a = vec![1e-3f32; 6 * L1_K];
    let probe = |calls| L1Tiles {
        calls,
        panel: &panel,
        a: &a,
    };
    // A warm-up that sizes the timed runs.
    let t = Instant::now();
    let (_, mr) = std::hint::black_box(isa.dispatch(probe(std::hint::black_box(2_000))));
    let per_call = t.elapsed().as_secs_f64().max(1e-9) / 2_000.0;
    // Three runs of about 0.07 s, the best one (as the FMA peak).
    let calls = ((0.07 / per_call) as usize).clamp(1_000, 100_000_000);
    let flops_per_call = 2.0 * (mr * L1_K * 4 * lanes) as f64;
    (0..3)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(isa.dispatch(probe(std::hint::black_box(calls))));
            let s = t.elapsed().as_secs_f64();
            calls as f64 * flops_per_call / s / 1e9
        })
        .reduce(f64::max)
}

/// The ratio of the AVX-512 to the AVX2 FMA throughput on this core, from
/// a probe of about 2 ms (the best of 7 interleaved short runs each; up to
/// three times as long on a disturbed machine): about 2 where 512-bit FMAs
/// issue at full rate, about 1 where they issue at half rate. 0 if the CPU
/// lacks either ISA.
pub fn fma_rate_probe() -> f64 {
    let (Ok(a), Ok(b)) = (Supported::new(Isa::Avx512), Supported::new(Isa::Avx2)) else {
        return 0.0;
    };
    let run = |isa: Supported| {
        let iters = 40_000;
        let t = Instant::now();
        std::hint::black_box(isa.dispatch(Chains(std::hint::black_box(iters))));
        iters as f64 * isa.isa().lanes() as f64 / t.elapsed().as_secs_f64().max(1e-9)
    };
    // The 512-bit units' power-up first (their first microseconds run
    // slower), then 7 interleaved pairs, the best run of each ISA: a
    // preempted run (a shared VM) lowers one sample, not one ISA's whole
    // share of the probe. A ratio between the two rates' clusters (about 1
    // at half rate, 1.8–2 at full rate) means the probe was disturbed: it
    // runs again, at most twice more, keeping the highest ratio.
    std::hint::black_box(a.dispatch(Chains(20_000)));
    std::hint::black_box(b.dispatch(Chains(2_000)));
    let mut ratio: f64 = 0.0;
    for _attempt in 0..3 {
        let (mut ra, mut rb) = (0.0f64, 0.0f64);
        for _ in 0..7 {
            ra = ra.max(run(a));
            rb = rb.max(run(b));
        }
        ratio = ratio.max(ra / rb);
        if !(1.15..1.5).contains(&ratio) {
            break;
        }
    }
    ratio
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The probe really runs its `calls × MR × 4 × LANES × L1_K` FMAs on
    /// every ISA this CPU has: each accumulator lane ends at
    /// `calls · L1_K · a · b`, and the probe returns the sum over the
    /// `MR × 4` accumulators of lane 0.
    #[test]
    fn l1_probe_does_its_work_on_every_isa() {
        let (a_val, b_val) = (0.5f32, 0.25f32);
        for isa in Supported::all() {
            let lanes = isa.isa().lanes();
            let panel = vec![b_val; L1_K * 4 * lanes];
            let a = vec![a_val; 6 * L1_K];
            let calls = 3;
            let (sum, mr) = isa.dispatch(L1Tiles {
                calls,
                panel: &panel,
                a: &a,
            });
            // Every partial sum is a multiple of 1/8 of at most 864, far
            // below 2^21: exact.
            let want = (mr * 4 * calls * L1_K) as f32 * a_val * b_val;
            assert_eq!(sum, want, "{:?}", isa.isa());
            let rows = match isa.isa() {
                Isa::Portable => 2,
                _ => 6,
            };
            assert_eq!(mr, rows, "{:?}", isa.isa());
            let g = kernel_l1_gflops(isa.isa()).expect("supported");
            assert!(g.is_finite() && g > 0.0, "{:?}: {g}", isa.isa());
        }
    }
}
