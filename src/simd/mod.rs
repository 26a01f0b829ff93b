//! A small vector trait and its instruction-set instances.
//!
//! Each ISA is a zero-sized type implementing [`Simd`]; hot kernels are
//! generic `#[inline(always)]` bodies over the trait, instantiated by thin
//! `#[target_feature]` wrappers (see `kernel/mod.rs`). The rule that keeps
//! this fast: **every** function between the wrapper and the intrinsics is
//! `#[inline(always)]`, so all of it is compiled inside the wrapper, with
//! its features; a non-inlined generic helper would be compiled without
//! them and call the intrinsics out of line.
//!
//! * [`Avx512`]: `__m512`, 16 lanes, needs AVX-512F.
//! * [`Avx2`]: `__m256`, 8 lanes, needs AVX2 and FMA.
//! * [`Portable`]: `wide::f32x8`, 8 lanes, any target.
//!
//! [`Isa`] names them, detects the best one and reads `LSTM_KERNELS_ISA`.

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod portable;

#[cfg(target_arch = "x86_64")]
pub use avx2::Avx2;
#[cfg(target_arch = "x86_64")]
pub use avx512::Avx512;
pub use portable::Portable;

/// Vector operations the kernels and activations are written in.
///
/// # Safety
/// Every method requires that the CPU supports the instance's ISA; methods
/// taking pointers require them valid for `LANES` floats (or `n`, for the
/// partial ones).
pub trait Simd: Copy + Send + Sync + 'static {
    /// f32 lanes per vector.
    const LANES: usize;
    /// Name (`avx512`, `avx2`, `portable`); tests use it to prove which
    /// instance ran.
    #[cfg_attr(not(test), allow(dead_code))]
    const NAME: &'static str;
    /// The vector type.
    type V: Copy;

    /// All lanes `x`.
    unsafe fn splat(x: f32) -> Self::V;
    /// Unaligned load of `LANES` floats.
    unsafe fn load(p: *const f32) -> Self::V;
    /// Unaligned store of `LANES` floats.
    unsafe fn store(p: *mut f32, v: Self::V);
    /// Loads `n < LANES` floats, other lanes 0; reads nothing past `p + n`.
    unsafe fn load_partial(p: *const f32, n: usize) -> Self::V;
    /// Stores the first `n < LANES` lanes; writes nothing past `p + n`.
    unsafe fn store_partial(p: *mut f32, v: Self::V, n: usize);
    /// `a + b`.
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V;
    /// `a - b`.
    unsafe fn sub(a: Self::V, b: Self::V) -> Self::V;
    /// `a · b`.
    unsafe fn mul(a: Self::V, b: Self::V) -> Self::V;
    /// `a / b` (correctly rounded).
    unsafe fn div(a: Self::V, b: Self::V) -> Self::V;
    /// `a · b + c`, fused where the ISA has FMA.
    unsafe fn fmadd(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    /// `min(hi, max(lo, x))`, returning NaN for a NaN `x`.
    unsafe fn clamp(x: Self::V, lo: f32, hi: f32) -> Self::V;
    /// Lane `i < min(n, LANES)` = `*p.add(i · stride)`, other lanes 0 (read
    /// nothing); `LANES · stride` must fit in an `i32`.
    #[cfg_attr(not(lstm_kernels_batch), allow(dead_code))]
    unsafe fn gather(p: *const f32, stride: usize, n: usize) -> Self::V;
    /// `*p.add(i · stride) = v[i]` for `i < min(n, LANES)` (writes nothing
    /// else); `LANES · stride` must fit in an `i32`.
    #[cfg_attr(not(lstm_kernels_batch), allow(dead_code))]
    unsafe fn scatter(p: *mut f32, stride: usize, n: usize, v: Self::V);
    /// Every lane = lane `k` of `v` (`k < LANES`), without a memory round trip.
    #[cfg_attr(not(lstm_kernels_small), allow(dead_code))]
    unsafe fn lane_splat(v: Self::V, k: usize) -> Self::V;
    /// Lanes as an array (tests, tails).
    unsafe fn to_array(v: Self::V) -> [f32; 16];
}

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

    /// f32 lanes per vector.
    pub fn lanes(self) -> usize {
        match self {
            Isa::Avx512 => 16,
            Isa::Avx2 | Isa::Portable => 8,
        }
    }

    /// Whether this CPU can run it.
    pub fn available(self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => std::arch::is_x86_feature_detected!("avx512f"),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            Isa::Portable => true,
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
    pub fn from_env() -> Result<Option<Isa>, String> {
        match std::env::var(ISA_ENV) {
            Ok(v) if !v.is_empty() && v != "auto" => {
                let isa: Isa = v.parse().map_err(|e| format!("{ISA_ENV}: {e}"))?;
                if isa.available() {
                    Ok(Some(isa))
                } else {
                    Err(format!("{ISA_ENV}={v}: this CPU does not support {v}"))
                }
            }
            _ => Ok(None),
        }
    }
}

impl std::str::FromStr for Isa {
    type Err = String;
    fn from_str(s: &str) -> Result<Isa, String> {
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

/// Flushes subnormal results and inputs to zero (MXCSR FTZ and DAZ) while
/// alive, restoring the previous mode on drop. MXCSR is per thread: each
/// worker thread makes its own guard. A no-op off x86-64.
pub(crate) struct DenormalGuard {
    #[cfg(target_arch = "x86_64")]
    saved: u32,
}

#[cfg(target_arch = "x86_64")]
const FTZ_DAZ: u32 = (1 << 15) | (1 << 6);

impl DenormalGuard {
    pub(crate) fn new() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            let mut saved: u32 = 0;
            // SAFETY: stmxcsr/ldmxcsr only read and write the calling
            // thread's MXCSR; setting FTZ and DAZ changes no other state and
            // every x86-64 CPU has SSE.
            unsafe {
                std::arch::asm!("stmxcsr [{}]", in(reg) &mut saved, options(nostack));
                let new = saved | FTZ_DAZ;
                std::arch::asm!("ldmxcsr [{}]", in(reg) &new, options(nostack, readonly));
            }
            DenormalGuard { saved }
        }
        #[cfg(not(target_arch = "x86_64"))]
        DenormalGuard {}
    }
}

impl Drop for DenormalGuard {
    fn drop(&mut self) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: restores the MXCSR value read in `new` on this thread.
        unsafe {
            std::arch::asm!("ldmxcsr [{}]", in(reg) &self.saved, options(nostack, readonly));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denormal_guard_flushes_and_restores() {
        let tiny = std::hint::black_box(1e-30f32);
        let scale = std::hint::black_box(1e-10f32);
        assert!(tiny * scale > 0.0, "subnormal product without the guard");
        {
            let _g = DenormalGuard::new();
            #[cfg(target_arch = "x86_64")]
            assert_eq!(
                std::hint::black_box(tiny) * std::hint::black_box(scale),
                0.0
            );
        }
        assert!(std::hint::black_box(tiny) * std::hint::black_box(scale) > 0.0);
    }

    /// Special and ordinary inputs for the elementwise operations.
    fn inputs() -> Vec<f32> {
        let mut v = vec![
            0.0,
            -0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            -f32::NAN,
            f32::from_bits(0x7f80_0001), // signalling NaN
            f32::from_bits(0xffc0_1234),
            f32::from_bits(1),
            -f32::from_bits(1),
            f32::MAX,
            f32::MIN,
        ];
        v.extend((-40..=40).map(|i| i as f32 * 0.37));
        v
    }

    /// Runs `clamp` (the operation with NaN and ±0 cases) on `S` and returns
    /// every lane that differs from the scalar definition.
    #[inline(always)]
    unsafe fn ops_body<S: Simd>(ran: &mut &'static str) -> Vec<String> {
        *ran = S::NAME;
        let xs = inputs();
        let same = |a: f32, b: f32| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan());
        let mut bad = Vec::new();
        for &x in &xs {
            // SAFETY: the wrapper guarantees the ISA; the arrays hold
            // 16 ≥ LANES floats.
            let got = unsafe {
                let xv = S::splat(x);
                [
                    S::to_array(S::clamp(xv, -2.5, 2.5))[0],
                    S::to_array(S::clamp(xv, -1.0, 3.0))[0],
                ]
            };
            let clamp = |lo: f32, hi: f32| if x.is_nan() { x } else { x.clamp(lo, hi) };
            let want = [clamp(-2.5, 2.5), clamp(-1.0, 3.0)];
            for (k, (g, w)) in got.iter().zip(want).enumerate() {
                // ±0 may come out of a clamp as either zero.
                let zero = *g == 0.0 && w == 0.0;
                if !same(*g, w) && !zero {
                    bad.push(format!(
                        "{}: op {k} at x = {x:e}: {g:e}, want {w:e}",
                        S::NAME
                    ));
                }
            }
        }
        bad
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn ops_avx512(ran: &mut &'static str) -> Vec<String> {
        // SAFETY: called only when AVX-512F is available.
        unsafe { ops_body::<Avx512>(ran) }
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn ops_avx2(ran: &mut &'static str) -> Vec<String> {
        // SAFETY: called only when AVX2 and FMA are available.
        unsafe { ops_body::<Avx2>(ran) }
    }

    #[test]
    fn clamp_matches_its_scalar_definition_on_every_isa() {
        for isa in Isa::all_available() {
            let mut ran = "";
            let bad = match isa {
                // SAFETY: `all_available` checked the CPU.
                #[cfg(target_arch = "x86_64")]
                Isa::Avx512 => unsafe { ops_avx512(&mut ran) },
                // SAFETY: as above.
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 => unsafe { ops_avx2(&mut ran) },
                // SAFETY: the portable path needs no CPU feature.
                _ => unsafe { ops_body::<Portable>(&mut ran) },
            };
            assert_eq!(ran, isa.name(), "the {isa} path did not run");
            assert!(bad.is_empty(), "{}", bad.join("\n"));
        }
    }

    #[test]
    fn isa_names_parse() {
        for isa in Isa::ALL {
            assert_eq!(isa.name().parse::<Isa>().unwrap(), isa);
        }
        assert!("sse9".parse::<Isa>().unwrap_err().contains("sse9"));
        assert!(Isa::Portable.available());
        assert_eq!(Isa::all_available()[0], Isa::detect());
    }
}
