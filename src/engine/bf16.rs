//! Reduced precision, bf16 (issue 14, first part): weights rounded to
//! bf16 once (round to nearest even), the GEMM operands `x` and `m` rounded
//! to bf16 as they enter it, products accumulated in f32; the cell state
//! `c`, the bias, the peepholes and the whole epilogue stay f32.
//!
//! One concatenated GEMM per step, `[x_t | m] · [W_x ; W_h]` with
//! K = n_in + H padded to a multiple of 32. The weights are packed into
//! 1 KiB blocks of 16 k-pairs × 16 hidden units — each `u32` holds the bf16
//! weights of `k = 2p` (low half) and `2p + 1` (high half) of one unit,
//! which is both the AMX B-tile layout and `vdpbf16ps`'s operand layout —
//! ordered `[unit block][k chunk of 32][gate i, f, c̃, o]`, so one unit
//! block's four gates come out of one pass and the epilogue updates the
//! cell of those 16 units at once.
//!
//! Kernels ([`Bf16Kernel`]): AMX-BF16 tiles (16 rows × 16 units per
//! gate, four accumulator tiles), AVX512-BF16 `vdpbf16ps` (4 rows × 4 gate
//! vectors in registers), and a portable scalar path (correct everywhere,
//! not fast). Rows are independent in all three, so results do not depend
//! on how the batch is cut across threads.

#[cfg(target_arch = "x86_64")]
use super::lowp::amx as tiles_cfg;
use super::lowp::{Chunk, Epi, GATE_ROW, ROWS, UNITS, carve, epilogue, words_for};
#[cfg(target_arch = "x86_64")]
use super::simd::Avx512;
use super::simd::{Portable, Simd};
use crate::config::LstmConfig;
use crate::error::{Result, try_filled};
use crate::weights::LstmWeights;

/// K per chunk: 16 pairs, one AMX A-tile row of 64 bytes.
const KCHUNK: usize = 32;
/// `u32`s per packed block: 16 pairs × 16 units.
const BLOCK: usize = 256;

/// The environment variable that forces a bf16 kernel (`amx`,
/// `avx512bf16`, `portable`), for tests and benches.
pub const BF16_KERNEL_ENV: &str = "LSTM_KERNELS_BF16";

/// Which bf16 GEMM runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Bf16Kernel {
    /// AMX-BF16 tiles (`tdpbf16ps`).
    Amx,
    /// AVX512-BF16 `vdpbf16ps`.
    Avx512Bf16,
    /// Scalar, for CPUs without either.
    Portable,
}

impl super::lowp::KernelSet for Bf16Kernel {
    const ALL: [Bf16Kernel; 3] = [
        Bf16Kernel::Amx,
        Bf16Kernel::Avx512Bf16,
        Bf16Kernel::Portable,
    ];

    const ENV: &'static str = BF16_KERNEL_ENV;
    const PRECISION: &'static str = "bf16";

    /// The kernel's name (what `Lstm::kernel_name` reports).
    fn name(self) -> &'static str {
        match self {
            Bf16Kernel::Amx => "bf16_amx_16x16",
            Bf16Kernel::Avx512Bf16 => "bf16_avx512bf16_4x64",
            Bf16Kernel::Portable => "bf16_portable",
        }
    }

    fn short(self) -> &'static str {
        match self {
            Bf16Kernel::Amx => "amx",
            Bf16Kernel::Avx512Bf16 => "avx512bf16",
            Bf16Kernel::Portable => "portable",
        }
    }

    /// Whether this CPU (and OS, for AMX) can run it.
    fn available(self) -> bool {
        match self {
            Bf16Kernel::Amx => avx512bf16() && super::lowp::amx_ready(super::lowp::AMX_BF16),
            Bf16Kernel::Avx512Bf16 => avx512bf16(),
            Bf16Kernel::Portable => true,
        }
    }

    fn needs(self) -> &'static str {
        match self {
            Bf16Kernel::Amx => "AMX-BF16 (and the kernel's permission for tile data)",
            _ => "AVX512-BF16",
        }
    }
}

fn avx512bf16() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bf16")
            && std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// `x` rounded to bf16, to nearest even (NaN stays NaN).
pub(crate) fn to_bf16(x: f32) -> u16 {
    let b = x.to_bits();
    if x.is_nan() {
        ((b >> 16) | 0x40) as u16
    } else {
        ((b + 0x7fff + ((b >> 16) & 1)) >> 16) as u16
    }
}

/// The f32 value of a bf16.
pub(crate) fn from_bf16(v: u16) -> f32 {
    f32::from_bits((v as u32) << 16)
}

/// A model's weights packed for the bf16 kernels (see the module docs).
#[derive(Clone, Debug)]
pub(crate) struct Bf16Packed {
    pub(crate) kernel: Bf16Kernel,
    n_in: usize,
    h: usize,
    /// K padded to a multiple of [`KCHUNK`].
    kp: usize,
    /// Unit blocks.
    ub: usize,
    /// `[ub][kp / 32][4][16 pairs][16 units]`.
    tiles: Vec<u32>,
    epi: Epi,
}

impl Bf16Packed {
    /// Checks that `cfg` has only what the bf16 path computes, and packs.
    pub(crate) fn build(cfg: &LstmConfig, w: &LstmWeights, kernel: Bf16Kernel) -> Result<Self> {
        super::lowp::check_supported(cfg, "bf16")?;
        let (n, h) = (cfg.n_input, cfg.n_hidden);
        let k = n + h;
        let kp = k.div_ceil(KCHUNK) * KCHUNK;
        let kc = kp / KCHUNK;
        let ub = h.div_ceil(UNITS);
        let cols = 4 * h;
        let mut tiles = try_filled::<u32>(ub * kc * 4 * BLOCK, 0, "bf16 packed weights")?;
        let weight = |kk: usize, col: usize| -> f32 {
            if kk < k {
                w.gates[kk * cols + col]
            } else {
                0.0
            }
        };
        for u in 0..ub {
            for c in 0..kc {
                for g in 0..4 {
                    let block = &mut tiles[((u * kc + c) * 4 + g) * BLOCK..][..BLOCK];
                    for p in 0..16 {
                        for j in 0..UNITS {
                            let unit = u * UNITS + j;
                            if unit >= h {
                                continue;
                            }
                            let kk = c * KCHUNK + 2 * p;
                            let lo = to_bf16(weight(kk, g * h + unit)) as u32;
                            let hi = to_bf16(weight(kk + 1, g * h + unit)) as u32;
                            block[p * UNITS + j] = (hi << 16) | lo;
                        }
                    }
                }
            }
        }
        Ok(Bf16Packed {
            kernel,
            n_in: n,
            h,
            kp,
            ub,
            tiles,
            epi: Epi::build(cfg, w)?,
        })
    }

    /// Bytes of packed weights.
    pub(crate) fn bytes(&self) -> usize {
        self.tiles.len() * 4
    }
}

impl super::lowp::Engine for Bf16Packed {
    fn dims(&self) -> (usize, usize) {
        (self.n_in, self.h)
    }

    fn scratch_words(&self, rows: usize) -> usize {
        let rows_pad = rows.div_ceil(ROWS).max(1) * ROWS;
        words_for::<u16>(rows_pad * self.kp)
            + words_for::<f32>(self.kp)
            + words_for::<f32>(rows_pad * GATE_ROW)
    }

    unsafe fn run_chunk(&self, ch: Chunk, scratch: &mut [u64]) -> Result<()> {
        // SAFETY: forwarded (the trait's contract).
        unsafe { run_chunk(self, ch, scratch) }
    }
}

/// Runs one chunk on `pk.kernel`.
///
/// # Safety
/// `pk.kernel` is available on this CPU (checked when the model was
/// built); `ch.c` and `ch.m` hold `rows × H`; `ch.xs` is valid for reads of
/// `n_in` floats at row `(t·batch + r)`, and `ch.out` for writes of `H` floats
/// there, for every step `t < steps` and row `r < rows`.
unsafe fn run_chunk(pk: &Bf16Packed, ch: Chunk, scratch: &mut [u64]) -> Result<()> {
    let rows_pad = ch.rows.div_ceil(ROWS).max(1) * ROWS;
    let (a, rest) = carve::<u16>(scratch, rows_pad * pk.kp);
    let (stage, rest) = carve::<f32>(rest, pk.kp);
    let (g, _) = carve::<f32>(rest, rows_pad * GATE_ROW);
    // The pad beyond n_in + H must be zero (the arena holds whatever an
    // earlier call left).
    stage.fill(0.0);
    let bufs = Bufs { a, stage, g };
    // SAFETY: the kernel is available (the caller's contract); the rest is
    // forwarded.
    let ran = unsafe {
        match pk.kernel {
            #[cfg(target_arch = "x86_64")]
            Bf16Kernel::Amx | Bf16Kernel::Avx512Bf16 => run_avx512(pk, ch, bufs),
            _ => body::<Portable>(pk, ch, bufs),
        }
    };
    // The kernel whose GEMM really ran (not merely the one configured).
    if let Some(k) = ran {
        super::diagnostics::record_bf16(k as usize);
    }
    Ok(())
}

struct Bufs<'a> {
    /// `[rows_pad][kp]` bf16 operands of one step.
    a: &'a mut [u16],
    /// One row of f32 operands before rounding.
    stage: &'a mut [f32],
    /// `[rows_pad][4 gates][16 units]` f32 gate pre-activations of one unit
    /// block (the other kernels use the first 16 rows).
    g: &'a mut [f32],
}

/// [`body`] under AVX-512F + AVX512-BF16 (the AMX kernel's epilogue and
/// conversions are AVX-512 too).
///
/// # Safety
/// As [`run_chunk`]; the CPU has these features.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16,avx2,fma")]
unsafe fn run_avx512(pk: &Bf16Packed, ch: Chunk, bufs: Bufs) -> Option<Bf16Kernel> {
    // SAFETY: forwarded.
    unsafe { body::<Avx512>(pk, ch, bufs) }
}

/// The chunk's steps: operands rounded into `a`, then per row block of 16
/// and unit block of 16 the GEMM into `g` and the epilogue.
///
/// # Safety
/// As [`run_chunk`]; runs inside an entry with `S`'s features (and
/// AVX512-BF16 when `pk.kernel` is not portable).
#[inline(always)]
unsafe fn body<S: Simd>(pk: &Bf16Packed, mut ch: Chunk, bufs: Bufs) -> Option<Bf16Kernel> {
    // Which GEMM ran (for the diagnostics' run counters).
    let mut ran = None;
    let (n, h, kp) = (pk.n_in, pk.h, pk.kp);
    let rows = ch.rows;
    // Every access to the state below goes through these two pointers.
    let st = ch.state(h);
    #[cfg(target_arch = "x86_64")]
    let amx = pk.kernel == Bf16Kernel::Amx;
    #[cfg(target_arch = "x86_64")]
    if amx {
        // SAFETY: AMX is available (the caller's contract); the config is
        // 64 bytes, read by `ldtilecfg`.
        unsafe { tiles_cfg::configure() };
    }
    for t in 0..ch.steps {
        // Operands: [x_t | m], rounded to bf16, zero-padded to kp.
        for r in 0..rows {
            // SAFETY: row r of step t is within xs (the caller's contract);
            // row r of m is within the chunk's rows × H.
            let (x, m) = unsafe { (ch.x_row(t, r, n), st.m_row(r, h)) };
            // AMX reads 16 × 32 operand tiles: contiguous 1 KiB each.
            let (base, stride) = if cfg!(target_arch = "x86_64") && pk.kernel == Bf16Kernel::Amx {
                ((r / ROWS) * ROWS * kp + (r % ROWS) * KCHUNK, ROWS * KCHUNK)
            } else {
                (r * kp, KCHUNK)
            };
            #[cfg(target_arch = "x86_64")]
            if pk.kernel != Bf16Kernel::Portable {
                // SAFETY: inside the AVX512-BF16 entry (non-portable kernels
                // run in `run_avx512`).
                unsafe { avx512_round_parts(x, m, &mut bufs.a[base..], kp / KCHUNK, stride) };
                continue;
            }
            bufs.stage[..n].copy_from_slice(x);
            bufs.stage[n..n + h].copy_from_slice(m);
            round_row(bufs.stage, &mut bufs.a[base..], stride);
        }
        let nblocks = rows.div_ceil(ROWS);
        #[cfg(target_arch = "x86_64")]
        if amx {
            // Per unit block and gate pair, every pair of row blocks: the
            // weights of one unit block's gate pair (kp/32 × 2 KiB) are
            // read from L2 once and stay in L1 for the other row blocks.
            // 2 × 2 accumulator tiles: each tile load feeds two
            // tdpbf16ps. Then the epilogue of the unit block, all rows.
            for u in 0..pk.ub {
                let tiles = &pk.tiles[u * (kp / KCHUNK) * 4 * BLOCK..][..(kp / KCHUNK) * 4 * BLOCK];
                for pair in [0usize, 2] {
                    let mut rb = 0;
                    while rb < nblocks {
                        let a_blocks = &bufs.a[rb * ROWS * kp..];
                        let g = &mut bufs.g[rb * ROWS * 4 * UNITS..];
                        // SAFETY: AMX configured above; a holds rows_pad
                        // (a multiple of 16) rows of kp bf16 and g as many
                        // rows of 64 floats; one block left over runs alone.
                        unsafe {
                            if nblocks - rb >= 2 {
                                amx::gemm2(a_blocks, tiles, kp, g, &[pair]);
                            } else {
                                amx::gemm_pair(a_blocks, tiles, kp, g, pair);
                            }
                        }
                        ran = Some(Bf16Kernel::Amx);
                        rb += 2;
                    }
                }
                // SAFETY: the chunk's rows; step t within out.
                unsafe { epilogue::<S>(&pk.epi, &ch, st, bufs.g, t, 0, rows, u) };
            }
            continue;
        }
        for rb in 0..nblocks {
            let r0 = rb * ROWS;
            let nr = ROWS.min(rows - r0);
            let a_block = &bufs.a[r0 * kp..(rb + 1) * ROWS * kp];
            for u in 0..pk.ub {
                let tiles = &pk.tiles[u * (kp / KCHUNK) * 4 * BLOCK..][..(kp / KCHUNK) * 4 * BLOCK];
                ran = Some(match pk.kernel {
                    #[cfg(target_arch = "x86_64")]
                    Bf16Kernel::Avx512Bf16 => {
                        // SAFETY: inside the AVX512-BF16 entry.
                        unsafe { dp::gemm(a_block, tiles, kp, nr, bufs.g) };
                        Bf16Kernel::Avx512Bf16
                    }
                    _ => {
                        scalar_gemm(a_block, tiles, kp, nr, bufs.g);
                        Bf16Kernel::Portable
                    }
                });
                // SAFETY: rows r0 .. r0 + nr of the chunk; the output row of
                // step t is within out (the caller's contract).
                unsafe { epilogue::<S>(&pk.epi, &ch, st, bufs.g, t, r0, nr, u) };
            }
        }
    }
    #[cfg(target_arch = "x86_64")]
    if amx {
        // SAFETY: releases the tile state configured above.
        unsafe { tiles_cfg::release() };
    }
    ran
}

/// Rounds one staged row to bf16 (the pad beyond n_in + H stays zero).
#[inline(always)]
fn round_row(stage: &[f32], out: &mut [u16], stride: usize) {
    assert!(out.len() >= (stage.len() / KCHUNK - 1) * stride + KCHUNK);
    for (i, s) in stage.chunks_exact(KCHUNK).enumerate() {
        for (o, &v) in out[i * stride..i * stride + KCHUNK].iter_mut().zip(s) {
            *o = to_bf16(v);
        }
    }
}

/// Rounds the row `[x | m]`, zero-padded to `chunks` chunks of 32, to bf16
/// straight from `x` and `m` (no staging copy): chunk `i` goes to
/// `out[i·stride..][..32]`.
///
/// # Safety
/// Inside an AVX-512F + AVX512-BF16 entry.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn avx512_round_parts(x: &[f32], m: &[f32], out: &mut [u16], chunks: usize, stride: usize) {
    use std::arch::x86_64::*;
    let (n, h) = (x.len(), m.len());
    assert!(
        chunks * KCHUNK >= n + h && chunks >= 1 && out.len() >= (chunks - 1) * stride + KCHUNK,
        "bf16 operand bounds"
    );
    // Lanes i of the 16 at k that fall in [lo, hi).
    let lanes = |k: usize, lo: usize, hi: usize| -> __mmask16 {
        let a = lo.saturating_sub(k).min(16);
        let b = hi.saturating_sub(k).min(16);
        (((1u32 << b) - 1) & !((1u32 << a) - 1)) as u16
    };
    // SAFETY: every load is masked to lanes whose index lies in x (first
    // mask) or m (second); masked-off lanes are not accessed, so the
    // (wrapping) base pointers may lie outside the slices. Stores write 32
    // bf16 of chunk i within out (asserted above).
    unsafe {
        let half = |k: usize| {
            let v = _mm512_maskz_loadu_ps(lanes(k, 0, n), x.as_ptr().wrapping_add(k));
            _mm512_mask_loadu_ps(
                v,
                lanes(k, n, n + h),
                m.as_ptr().wrapping_add(k).wrapping_sub(n),
            )
        };
        for i in 0..chunks {
            let k = i * KCHUNK;
            let v = _mm512_cvtne2ps_pbh(half(k + 16), half(k));
            _mm512_storeu_si512(
                out.as_mut_ptr().add(i * stride).cast(),
                std::mem::transmute::<__m512bh, __m512i>(v),
            );
        }
    }
}

/// The pair `p` of k-chunk `c` of a bf16 row, as the `u32` the kernels
/// broadcast.
#[inline(always)]
fn pair(row: &[u16], c: usize, p: usize) -> (f32, f32) {
    let k = c * KCHUNK + 2 * p;
    (from_bf16(row[k]), from_bf16(row[k + 1]))
}

/// The scalar GEMM: `g[r][gate][j] = Σ_k a[r][k] · W[k][gate, unit]`, with
/// bf16 products (exact in f32) summed pair by pair in f32.
fn scalar_gemm(a: &[u16], tiles: &[u32], kp: usize, nr: usize, g: &mut [f32]) {
    let kc = kp / KCHUNK;
    for r in 0..nr {
        let row = &a[r * kp..(r + 1) * kp];
        for gate in 0..4 {
            for j in 0..UNITS {
                let mut acc = 0.0f32;
                for c in 0..kc {
                    let block = &tiles[(c * 4 + gate) * BLOCK..][..BLOCK];
                    for p in 0..16 {
                        let (a0, a1) = pair(row, c, p);
                        let wv = block[p * UNITS + j];
                        acc += a0 * from_bf16(wv as u16);
                        acc += a1 * from_bf16((wv >> 16) as u16);
                    }
                }
                g[(r * 4 + gate) * UNITS + j] = acc;
            }
        }
    }
}

/// The AVX512-BF16 GEMM: 4 rows × the four gates of 16 units in 16
/// registers, one `vdpbf16ps` per (row, gate, k-pair).
#[cfg(target_arch = "x86_64")]
mod dp {
    use std::arch::x86_64::*;

    use super::{BLOCK, KCHUNK, UNITS};

    /// `g[r][gate][j]` for the `nr ≤ 16` rows of `a` (16 rows of `kp`
    /// bf16) against one unit block's `tiles`.
    ///
    /// # Safety
    /// Inside an AVX-512F + AVX512-BF16 entry; `a` holds 16 × kp values,
    /// `tiles` kp/32 × 4 blocks, `g` 16 × 64.
    #[inline(always)]
    pub(super) unsafe fn gemm(a: &[u16], tiles: &[u32], kp: usize, nr: usize, g: &mut [f32]) {
        assert!(a.len() >= 16 * kp && tiles.len() >= kp / KCHUNK * 4 * BLOCK && g.len() >= 16 * 64);
        let mut r0 = 0;
        while r0 < nr {
            // SAFETY: rows r0..r0+4 ≤ 16 (a is 16 rows, padded), the
            // function's contract for the rest.
            unsafe {
                rows4(
                    a.as_ptr().add(r0 * kp),
                    tiles.as_ptr(),
                    kp,
                    g.as_mut_ptr().add(r0 * 64),
                )
            };
            r0 += 4;
        }
    }

    #[inline(always)]
    unsafe fn rows4(a: *const u16, tiles: *const u32, kp: usize, g: *mut f32) {
        // SAFETY: the caller's bounds (4 rows of kp bf16, kp/32 × 4 blocks,
        // 4 × 64 floats of g).
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); 4]; 4];
            let pairs = a.cast::<u32>();
            for c in 0..kp / KCHUNK {
                for p in 0..16 {
                    let bp = tiles.add(c * 4 * BLOCK + p * UNITS);
                    let b: [__m512bh; 4] = std::array::from_fn(|gate| {
                        std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(
                            bp.add(gate * BLOCK).cast(),
                        ))
                    });
                    for (r, acc_r) in acc.iter_mut().enumerate() {
                        let av = std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(
                            *pairs.add(r * kp / 2 + c * 16 + p) as i32,
                        ));
                        for gate in 0..4 {
                            acc_r[gate] = _mm512_dpbf16_ps(acc_r[gate], av, b[gate]);
                        }
                    }
                }
            }
            for (r, acc_r) in acc.iter().enumerate() {
                for (gate, &v) in acc_r.iter().enumerate() {
                    _mm512_storeu_ps(g.add(r * 64 + gate * UNITS), v);
                }
            }
        }
    }
}

/// The AMX-BF16 GEMM: tiles 0–3 accumulate the four gates (16 rows × 16
/// units), tile 4 holds 16 rows × 32 k of the operands, tiles 5–7 the
/// weight blocks.
#[cfg(target_arch = "x86_64")]
mod amx {
    use std::arch::asm;

    use super::{BLOCK, KCHUNK};

    /// One row block (16 rows of `a`), gate pair `pair`: tiles 0–1.
    ///
    /// # Safety
    /// Tiles configured by [`configure`] on this thread; `a` holds one
    /// block of 16 rows × kp operands in 1 KiB tiles, `tiles` kp/32 × 4
    /// blocks, `g` 16 × 64 floats.
    #[inline(always)]
    pub(super) unsafe fn gemm_pair(
        a: &[u16],
        tiles: &[u32],
        kp: usize,
        g: &mut [f32],
        pair: usize,
    ) {
        assert!(a.len() >= 16 * kp && tiles.len() >= kp / KCHUNK * 4 * BLOCK && g.len() >= 16 * 64);
        // SAFETY: every tile load reads one contiguous 1 KiB block of a or
        // tiles; the stores write 16 rows of 64 bytes at stride 256 in g.
        unsafe {
            asm!("tilezero tmm0", "tilezero tmm1", options(nostack, nomem));
            for c in 0..kp / KCHUNK {
                let bp = tiles.as_ptr().add((c * 4 + pair) * BLOCK);
                asm!(
                    "tileloadd tmm4, [{a} + {sa}*1]",
                    "tileloadd tmm6, [{b0} + {sb}*1]",
                    "tdpbf16ps tmm0, tmm4, tmm6",
                    "tileloadd tmm7, [{b1} + {sb}*1]",
                    "tdpbf16ps tmm1, tmm4, tmm7",
                    a = in(reg) a.as_ptr().add(c * 16 * KCHUNK),
                    sa = in(reg) 64usize,
                    b0 = in(reg) bp,
                    b1 = in(reg) bp.add(BLOCK),
                    sb = in(reg) 64usize,
                    options(nostack, readonly),
                );
            }
            let gp = g.as_mut_ptr().add(pair * 16);
            asm!(
                "tilestored [{g0} + {s}*1], tmm0",
                "tilestored [{g1} + {s}*1], tmm1",
                g0 = in(reg) gp,
                g1 = in(reg) gp.add(16),
                s = in(reg) 256usize,
                options(nostack),
            );
        }
    }

    /// [`gemm_pair`] for two row blocks (`a` holds 32 rows) and the gate pairs
    /// `pairs` (0 = i, f; 2 = c̃, o): per gate pair,
    /// accumulators (rows 0–15, gate 0), (0–15, gate 1), (16–31, gate 0),
    /// (16–31, gate 1) in tiles 0–3, operands in 4–5, weights in 6–7, so
    /// every tile load feeds two `tdpbf16ps`. `g` receives 32 rows.
    ///
    /// # Safety
    /// As [`gemm_pair`], with `a` holding two blocks and `g` 32 × 64.
    #[inline(always)]
    pub(super) unsafe fn gemm2(
        a: &[u16],
        tiles: &[u32],
        kp: usize,
        g: &mut [f32],
        pairs: &[usize],
    ) {
        assert!(a.len() >= 32 * kp && tiles.len() >= kp / KCHUNK * 4 * BLOCK && g.len() >= 32 * 64);
        // Operand tiles are contiguous 1 KiB blocks (see `body`).
        let a_stride = 64usize;
        // SAFETY: tile loads read contiguous 1 KiB blocks within a (two
        // 16-row blocks) and tiles; stores write 16
        // rows of 64 bytes at stride 256 within g's 32 × 256 bytes.
        unsafe {
            for &pair in pairs {
                asm!(
                    "tilezero tmm0",
                    "tilezero tmm1",
                    "tilezero tmm2",
                    "tilezero tmm3",
                    options(nostack, nomem)
                );
                for c in 0..kp / KCHUNK {
                    let a0 = a.as_ptr().add(c * 16 * KCHUNK);
                    let bp = tiles.as_ptr().add((c * 4 + pair) * BLOCK);
                    asm!(
                        "tileloadd tmm4, [{a0} + {sa}*1]",
                        "tileloadd tmm6, [{b0} + {sb}*1]",
                        "tdpbf16ps tmm0, tmm4, tmm6",
                        "tileloadd tmm5, [{a1} + {sa}*1]",
                        "tdpbf16ps tmm2, tmm5, tmm6",
                        "tileloadd tmm7, [{b1} + {sb}*1]",
                        "tdpbf16ps tmm1, tmm4, tmm7",
                        "tdpbf16ps tmm3, tmm5, tmm7",
                        a0 = in(reg) a0,
                        a1 = in(reg) a0.add(16 * kp),
                        sa = in(reg) a_stride,
                        b0 = in(reg) bp,
                        b1 = in(reg) bp.add(BLOCK),
                        sb = in(reg) 64usize,
                        options(nostack, readonly),
                    );
                }
                let gp = g.as_mut_ptr().add(pair * 16);
                asm!(
                    "tilestored [{g0} + {s}*1], tmm0",
                    "tilestored [{g1} + {s}*1], tmm1",
                    "tilestored [{g2} + {s}*1], tmm2",
                    "tilestored [{g3} + {s}*1], tmm3",
                    g0 = in(reg) gp,
                    g1 = in(reg) gp.add(16),
                    g2 = in(reg) gp.add(16 * 64),
                    g3 = in(reg) gp.add(16 * 64 + 16),
                    s = in(reg) 256usize,
                    options(nostack),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_rounding_is_to_nearest_even() {
        assert_eq!(to_bf16(1.0), 0x3f80);
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties to even (1).
        assert_eq!(to_bf16(1.0 + 2f32.powi(-8)), 0x3f80);
        // 1 + 3·2^-8 is halfway between 1 + 2^-7 and 1 + 2^-6: to even.
        assert_eq!(to_bf16(1.0 + 3.0 * 2f32.powi(-8)), 0x3f82);
        assert_eq!(to_bf16(1.0 + 2f32.powi(-8) + 2f32.powi(-20)), 0x3f81);
        assert_eq!(from_bf16(to_bf16(-2.5)), -2.5);
        assert!(from_bf16(to_bf16(f32::NAN)).is_nan());
        assert_eq!(from_bf16(to_bf16(f32::INFINITY)), f32::INFINITY);
        assert_eq!(from_bf16(to_bf16(f32::MAX)), f32::INFINITY);
    }
}
