//! The register-blocked microkernel: `MR` rows × one panel (4 vectors).
//! Each ISA picks its variant and panel layout in `engine::isa` (`Arch`).
//!
//! Contract of [`tile`]: for each row `r < MR`, accumulates
//! `acc[r][v] += Σ_{kk<k} a[r][kk] · panel[kk][v]` where `panel` points at a
//! packed panel body (`k` rows of 4 vectors, see `engine::packing`). It reads
//! `a[r][0..k]` and `panel[0 .. k·4·LANES]`, writes only `acc`, and assumes
//! nothing about alignment. It never reads the output, so outputs may hold
//! NaN on entry.

use super::simd::Simd;

/// Software prefetches of a tile call: `dist` panel rows ahead in the
/// panel being read (into L1; 0: none), and `lines` 64-byte lines per
/// panel row from `ahead` on (into L2; 0: none) — a share of the panel the
/// next tiles will read, fetched while this one computes.
#[derive(Clone, Copy)]
pub(crate) struct Prefetch {
    pub(crate) dist: usize,
    pub(crate) ahead: *const f32,
    pub(crate) lines: usize,
}

impl Prefetch {
    pub(crate) fn near(dist: usize) -> Prefetch {
        Prefetch {
            dist,
            ahead: std::ptr::null(),
            lines: 0,
        }
    }
}

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
    pf: Prefetch,
) {
    // Three copies of the loop, so that none tests in its body for
    // prefetches it does not make.
    // SAFETY: forwarded from the caller.
    unsafe {
        if pf.lines > 0 {
            tile_loop::<S, MR, true, true>(k, a, panel, acc, pf)
        } else if pf.dist == 0 {
            tile_loop::<S, MR, false, false>(k, a, panel, acc, pf)
        } else {
            tile_loop::<S, MR, true, false>(k, a, panel, acc, pf)
        }
    }
}

/// [`tile`]'s loop: prefetching `pf.dist` rows ahead when `PF` (the
/// current row when `pf.dist` is 0), and `pf.lines` lines from `pf.ahead`
/// per row when `AHEAD` (three copies, so that a loop without the next
/// panel's prefetches has no test for them in its body).
///
/// # Safety
/// As [`tile`].
#[inline(always)]
unsafe fn tile_loop<S: Simd, const MR: usize, const PF: bool, const AHEAD: bool>(
    k: usize,
    a: &[*const f32; MR],
    panel: *const f32,
    acc: &mut Acc<S, MR>,
    pf: Prefetch,
) {
    let step = 4 * S::LANES;
    // SAFETY: the caller guarantees the reads are in bounds and the ISA.
    unsafe {
        for kk in 0..k {
            let bp = panel.add(kk * step);
            if PF {
                // The panel row `pf.dist` rows ahead, one prefetch per 64-byte
                // line (a row is 4 vectors).
                let q = bp.wrapping_add(pf.dist * step);
                for v in 0..4 {
                    prefetch(q.wrapping_add(v * S::LANES));
                }
            }
            if AHEAD {
                for j in 0..pf.lines {
                    prefetch_l2(pf.ahead.wrapping_add((kk * pf.lines + j) * LINE_FLOATS));
                }
            }
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

/// Floats per 64-byte cache line (the unit of [`Prefetch::lines`]).
pub(crate) const LINE_FLOATS: usize = 16;

/// Hints the core to fetch the line holding `p` into L1.
#[inline(always)]
fn prefetch(p: *const f32) {
    #[cfg(target_arch = "x86_64")]
    prefetch_hint::<{ std::arch::x86_64::_MM_HINT_T0 }>(p);
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Hints the core to fetch the line holding `p` into L2.
#[inline(always)]
fn prefetch_l2(p: *const f32) {
    #[cfg(target_arch = "x86_64")]
    prefetch_hint::<{ std::arch::x86_64::_MM_HINT_T1 }>(p);
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// A prefetch with hint `HINT`. Never faults, for any address (prefetches
/// past the panel's end are harmless).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn prefetch_hint<const HINT: i32>(p: *const f32) {
    // SAFETY: a prefetch has no architectural effect and cannot fault;
    // SSE is baseline on x86-64.
    unsafe { std::arch::x86_64::_mm_prefetch::<HINT>(p.cast()) }
}

/// [`tile`] over a split panel body (see `engine::packing`): two passes, gate
/// vectors 0–1 then 2–3, each streaming its contiguous half, with `MR × 2`
/// accumulators live instead of `MR × 4`. With 16 registers (AVX2) this
/// fits 6 rows — 12 independent FMA chains, more than the 8 (2 pipes × 4
/// cycles) that keep both FMA pipes busy, where one pass fits only 2 rows
/// (exactly 8, no slack). Same contract as [`tile`], except that `panel`
/// points at a split body of `k` rows.
///
/// # Safety
/// As [`tile`].
#[inline(always)]
pub(crate) unsafe fn tile_halves<S: Simd, const MR: usize>(
    k: usize,
    half_rows: usize,
    a: &[*const f32; MR],
    panel: *const f32,
    acc: &mut Acc<S, MR>,
) {
    let l = S::LANES;
    // SAFETY: the caller guarantees the reads are in bounds (each half is
    // k rows of 2 vectors) and the ISA.
    unsafe {
        for half in 0..2 {
            let v0 = 2 * half;
            let mut c: [[S::V; 2]; MR] = [[S::splat(0.0); 2]; MR];
            for r in 0..MR {
                c[r] = [acc[r][v0], acc[r][v0 + 1]];
            }
            let mut bp = panel.add(half * half_rows * 2 * l);
            for kk in 0..k {
                // 32 rows (2 KiB on AVX2) ahead: large panels outgrow L1
                // (distance measured, see the README's tuning table).
                prefetch(bp.wrapping_add(32 * 2 * l));
                let b0 = S::load(bp);
                let b1 = S::load(bp.add(l));
                for r in 0..MR {
                    let av = S::splat(*a[r].add(kk));
                    c[r][0] = S::fmadd(av, b0, c[r][0]);
                    c[r][1] = S::fmadd(av, b1, c[r][1]);
                }
                bp = bp.add(2 * l);
            }
            for r in 0..MR {
                acc[r][v0] = c[r][0];
                acc[r][v0 + 1] = c[r][1];
            }
        }
    }
}
