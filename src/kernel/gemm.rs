//! The register-blocked microkernel: `MR` rows × one panel (4 vectors).
//!
//! Contract of [`tile`]: for each row `r < MR`, accumulates
//! `acc[r][v] += Σ_{kk<k} a[r][kk] · panel[kk][v]` where `panel` points at a
//! packed panel body (`k` rows of 4 vectors, see `crate::pack`). It reads
//! `a[r][0..k]` and `panel[0 .. k·4·LANES]`, writes only `acc`, and assumes
//! nothing about alignment. It never reads the output, so outputs may hold
//! NaN on entry.

use crate::simd::Simd;

/// Accumulators of one tile: `MR` rows × 4 vectors.
pub(crate) type Acc<S, const MR: usize> = [[<S as Simd>::V; 4]; MR];

/// See the module docs.
///
/// # Safety
/// The CPU supports `S`; every `a[r]` is valid for `k` reads and `panel`
/// for `k · 4 · S::LANES` reads.
#[inline(always)]
pub(crate) unsafe fn tile<S: Simd, const MR: usize>(
    k: usize,
    a: &[*const f32; MR],
    panel: *const f32,
    acc: &mut Acc<S, MR>,
) {
    let step = 4 * S::LANES;
    // SAFETY: the caller guarantees the reads are in bounds and the ISA.
    unsafe {
        for kk in 0..k {
            let bp = panel.add(kk * step);
            let b = [
                S::load(bp),
                S::load(bp.add(S::LANES)),
                S::load(bp.add(2 * S::LANES)),
                S::load(bp.add(3 * S::LANES)),
            ];
            for r in 0..MR {
                let av = S::splat(*a[r].add(kk));
                for v in 0..4 {
                    acc[r][v] = S::fmadd(av, b[v], acc[r][v]);
                }
            }
        }
    }
}
