//! Instruction sets. [`Isa`] names them (detection, `LSTM_KERNELS_ISA`);
//! [`Arch`] is what a vector type must provide to run the kernels: its
//! `#[target_feature]` entry, register block and panel layout; and
//! [`Supported::dispatch`] is the one place where a run-time ISA becomes a
//! compiled one.
//!
//! The entry follows pulp/gemm-common: `A::vectorize(work)` is a
//! `#[target_feature]` function generic over the work, whose
//! `#[inline(always)]` body (and everything it calls, all
//! `#[inline(always)]`) is therefore compiled with the ISA's features.

use super::microkernel::{self, Acc};
use super::packing::PanelLayout;
#[cfg(target_arch = "x86_64")]
use super::simd::{Avx2, Avx512};
use super::simd::{Portable, Simd};
use crate::error::{Error, Result};

/// An instruction-set path of the kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Isa {
    /// AVX-512F, 16 lanes.
    Avx512 = 0,
    /// AVX2 + FMA, 8 lanes.
    Avx2 = 1,
    /// `wide`, 8 lanes, any CPU.
    Portable = 2,
}

/// The environment variable that forces an ISA (`avx512`, `avx2`,
/// `portable`; empty or `auto` = detect).
pub const ISA_ENV: &str = "LSTM_KERNELS_ISA";

impl Isa {
    /// Every ISA, best first.
    pub const ALL: [Isa; 3] = [Isa::Avx512, Isa::Avx2, Isa::Portable];

    /// Name used on the command line, in JSON and in `LSTM_KERNELS_ISA`.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Avx512 => "avx512",
            Isa::Avx2 => "avx2",
            Isa::Portable => "portable",
        }
    }

    /// f32 lanes per vector (a unit test checks these against the vector
    /// types and the generator's table).
    pub fn lanes(self) -> usize {
        match self {
            Isa::Avx512 => 16,
            Isa::Avx2 | Isa::Portable => 8,
        }
    }

    /// Whether this CPU can run it: every target feature its entry enables.
    pub fn available(self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => Avx512::available(),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => Avx2::available(),
            Isa::Portable => Portable::available(),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// The best ISA this CPU has.
    pub fn detect() -> Isa {
        Isa::ALL
            .into_iter()
            .find(|i| i.available())
            .unwrap_or(Isa::Portable)
    }

    /// Every ISA this CPU has, best first.
    pub fn all_available() -> Vec<Isa> {
        Isa::ALL.into_iter().filter(|i| i.available()).collect()
    }

    /// The ISA forced by `LSTM_KERNELS_ISA`, if any: `Ok(None)` when unset,
    /// empty or `auto`; an error for an unknown name or one this CPU lacks.
    pub fn from_env() -> std::result::Result<Option<Isa>, String> {
        match std::env::var(ISA_ENV) {
            Ok(v) if !v.is_empty() && v != "auto" => {
                let isa: Isa = v.parse().map_err(|e| format!("{ISA_ENV}: {e}"))?;
                if isa.available() {
                    Ok(Some(isa))
                } else {
                    Err(format!("{ISA_ENV}={v}: this CPU does not support {v}"))
                }
            }
            Err(std::env::VarError::NotUnicode(v)) => Err(format!(
                "{ISA_ENV}={v:?} is not an ISA name (not valid UTF-8)"
            )),
            _ => Ok(None),
        }
    }
}

impl std::str::FromStr for Isa {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Isa, String> {
        Isa::ALL.into_iter().find(|i| i.name() == s).ok_or_else(|| {
            format!("unknown instruction set `{s}` (expected avx512, avx2 or portable)")
        })
    }
}

impl std::fmt::Display for Isa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// An [`Isa`] this CPU has been checked to run: the only way to reach
/// [`Supported::dispatch`], so no kernel runs on an ISA that was not
/// checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Supported(Isa);

impl Supported {
    /// `isa`, if this CPU runs it.
    pub(crate) fn new(isa: Isa) -> Result<Supported> {
        if isa.available() {
            Ok(Supported(isa))
        } else {
            Err(Error::Unsupported(format!(
                "instruction set `{}` is not available on this CPU",
                isa.name()
            )))
        }
    }

    /// Every ISA this CPU runs, best first.
    #[cfg(test)]
    pub(crate) fn all() -> impl Iterator<Item = Supported> {
        Isa::all_available().into_iter().map(Supported)
    }

    pub(crate) fn isa(self) -> Isa {
        self.0
    }

    /// Runs `work` compiled for this ISA: the crate's one dispatch site.
    pub(crate) fn dispatch<W: WithArch>(self, work: W) -> W::Output {
        match self.0 {
            // SAFETY: a `Supported` is only made after `available()`.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { Avx512::vectorize(work) },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { Avx2::vectorize(work) },
            // SAFETY: the portable path needs no CPU feature.
            _ => unsafe { Portable::vectorize(work) },
        }
    }
}

/// Work generic over the ISA, run inside an ISA's feature context by
/// [`Arch::vectorize`]. Implementations mark `run` `#[inline(always)]`.
pub(crate) trait WithArch {
    type Output;
    /// # Safety
    /// Called only from `A::vectorize` (the CPU supports `A`).
    unsafe fn run<A: Arch>(self) -> Self::Output;
}

/// A vector type the kernels are instantiated for, with what the blocked
/// microkernel needs to know about it. The panel layout belongs here, next
/// to the microkernel that reads it: packing asks the kernel for it.
pub(crate) trait Arch: Simd {
    /// The ISA whose features `vectorize` enables.
    const ISA: Isa;
    /// Rows per register block of the blocked microkernel (its
    /// accumulators are `MR × 4` vectors).
    const MR: usize;
    /// How the blocked microkernel wants its panels laid out.
    const LAYOUT: PanelLayout;
    /// Whether this CPU has every target feature `vectorize` enables.
    fn available() -> bool;

    /// Runs `work` compiled with this ISA's target features.
    ///
    /// # Safety
    /// The CPU supports the ISA ([`Arch::available`]).
    unsafe fn vectorize<W: WithArch>(work: W) -> W::Output;

    /// The blocked microkernel on this ISA ([`microkernel::tile`]'s
    /// contract, over panels in [`Arch::LAYOUT`]).
    ///
    /// # Safety
    /// As [`microkernel::tile`].
    #[inline(always)]
    unsafe fn tile<const MR: usize>(
        k: usize,
        a: &[*const f32; MR],
        panel: *const f32,
        acc: &mut Acc<Self, MR>,
        pf: microkernel::Prefetch,
    ) {
        // SAFETY: forwarded from the caller.
        unsafe { microkernel::tile::<Self, MR>(k, a, panel, acc, pf) }
    }

    /// [`Arch::tile`] over rows `k0..k1` of a panel body of `k` rows (a
    /// K block): `a` points at column 0 of each row, `panel` at the body;
    /// `pf` are the software prefetches ([`microkernel::Prefetch`]).
    ///
    /// # Safety
    /// As [`microkernel::tile`] for the whole body; `k0 ≤ k1 ≤ k`.
    #[inline(always)]
    unsafe fn tile_range<const MR: usize>(
        k: usize,
        k0: usize,
        k1: usize,
        a: &[*const f32; MR],
        panel: *const f32,
        acc: &mut Acc<Self, MR>,
        pf: microkernel::Prefetch,
    ) {
        let _ = k;
        let a: [*const f32; MR] = std::array::from_fn(|r| a[r].wrapping_add(k0));
        // SAFETY: rows k0..k1 of every `a[r]` and of the body are in bounds.
        unsafe { Self::tile::<MR>(k1 - k0, &a, panel.add(k0 * 4 * Self::LANES), acc, pf) }
    }
}

/// Implements the feature-dependent half of [`Arch`] from one list of
/// target features, so that the `#[target_feature]` entry and the
/// run-time check cannot disagree.
macro_rules! features {
    ([$($f:tt),*]) => {
        fn available() -> bool {
            true $(&& std::arch::is_x86_feature_detected!($f))*
        }

        /// # Safety
        /// The CPU has every feature enabled here ([`Arch::available`]).
        #[inline]
        $(#[target_feature(enable = $f)])*
        unsafe fn vectorize<W: WithArch>(work: W) -> W::Output {
            // SAFETY: the caller guarantees the features enabled here.
            unsafe { work.run::<Self>() }
        }
    };
}

#[cfg(target_arch = "x86_64")]
impl Arch for Avx512 {
    const ISA: Isa = Isa::Avx512;
    // 6 × 4 zmm accumulators + 4 weight vectors + 1 broadcast ≤ 32 registers.
    const MR: usize = 6;
    const LAYOUT: PanelLayout = PanelLayout::Plain;
    // AVX-512F implies AVX2 and FMA; naming them lets 256-bit bodies
    // (small cells) run inside this entry.
    features!(["avx512f", "avx2", "fma"]);
}

#[cfg(target_arch = "x86_64")]
impl Arch for Avx2 {
    const ISA: Isa = Isa::Avx2;
    // Two passes over split panels (`microkernel::tile_halves`): 6 rows × 2
    // ymm accumulators + 2 weight vectors + 1 broadcast ≤ 16 registers, 12
    // FMA chains (one pass of 4 vectors fits only 2 rows: 8 chains).
    const MR: usize = 6;
    const LAYOUT: PanelLayout = PanelLayout::Split;
    features!(["avx2", "fma"]);

    // 15 of 16 ymm registers are live in the loop: inlined into a fused
    // kernel, whatever the epilogue keeps live around it can make the
    // register allocator spill an accumulator, so the loop is a function
    // of its own, called through an opaque pointer (rustc inlines a
    // `#[inline(never)]` one anyway). One indirect call per tile.
    #[inline(always)]
    unsafe fn tile<const MR: usize>(
        k: usize,
        a: &[*const f32; MR],
        panel: *const f32,
        acc: &mut Acc<Self, MR>,
        pf: microkernel::Prefetch,
    ) {
        // SAFETY: forwarded from the caller.
        unsafe { Self::tile_range::<MR>(k, 0, k, a, panel, acc, pf) }
    }

    #[inline(always)]
    unsafe fn tile_range<const MR: usize>(
        k: usize,
        k0: usize,
        k1: usize,
        a: &[*const f32; MR],
        panel: *const f32,
        acc: &mut Acc<Self, MR>,
        pf: microkernel::Prefetch,
    ) {
        // The split-panel loop prefetches at its own measured distance.
        let _ = pf;
        let f: unsafe fn(usize, usize, &[*const f32; MR], *const f32, &mut Acc<Avx2, MR>) =
            std::hint::black_box(tile_avx2::<MR>);
        let a: [*const f32; MR] = std::array::from_fn(|r| a[r].wrapping_add(k0));
        // SAFETY: forwarded from the caller, who runs inside AVX2's entry;
        // each half of a split body is `k` rows of 2 vectors, and rows
        // k0..k1 of both halves are in bounds.
        unsafe { f(k1 - k0, k, &a, panel.add(k0 * 2 * Self::LANES), acc) }
    }
}

/// [`microkernel::tile_halves`] on AVX2, compiled once per `MR`, not inlined.
///
/// # Safety
/// As [`microkernel::tile`], over split panels; the CPU supports AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2", enable = "fma")]
#[inline(never)]
unsafe fn tile_avx2<const MR: usize>(
    k: usize,
    half_rows: usize,
    a: &[*const f32; MR],
    panel: *const f32,
    acc: &mut Acc<Avx2, MR>,
) {
    // SAFETY: forwarded from the caller.
    unsafe { microkernel::tile_halves::<Avx2, MR>(k, half_rows, a, panel, acc) }
}

impl Arch for Portable {
    const ISA: Isa = Isa::Portable;
    const MR: usize = 2;
    const LAYOUT: PanelLayout = PanelLayout::Plain;

    fn available() -> bool {
        true
    }

    #[inline(always)]
    unsafe fn vectorize<W: WithArch>(work: W) -> W::Output {
        // SAFETY: the portable path needs no CPU feature.
        unsafe { work.run::<Self>() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isa_names_parse() {
        for isa in Isa::ALL {
            assert_eq!(isa.name().parse::<Isa>().unwrap(), isa);
        }
        assert!("sse9".parse::<Isa>().unwrap_err().contains("sse9"));
        assert!(Isa::Portable.available());
        assert_eq!(Isa::all_available()[0], Isa::detect());
    }

    /// The ISA and lanes of the `Arch` that runs.
    struct Describe;

    impl WithArch for Describe {
        type Output = (Isa, usize);
        #[inline(always)]
        unsafe fn run<A: Arch>(self) -> (Isa, usize) {
            (A::ISA, A::LANES)
        }
    }

    #[test]
    fn dispatch_runs_the_isa_it_names_with_its_lanes() {
        for s in Supported::all() {
            let (isa, lanes) = s.dispatch(Describe);
            assert_eq!(isa, s.isa(), "dispatch ran another ISA");
            assert_eq!(lanes, s.isa().lanes(), "{}: lanes", s.isa());
        }
        for isa in Isa::ALL {
            assert_eq!(Supported::new(isa).is_ok(), isa.available(), "{isa}");
        }
    }
}
