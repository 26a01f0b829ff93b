//! Reduced precision, int8 (issue 14, second part): weights quantized once
//! to int8, symmetric per output column and per operand (one scale for the
//! input rows `W_x` of a gate column, one for its recurrent rows `W_h`);
//! the GEMM operands `x_t` and `m` quantized dynamically, per row and per
//! step, symmetric int8 (one scale for the row's `x`, one for its `m`);
//! products accumulated exactly in i32; the cell state `c`, the bias, the
//! peepholes and the whole epilogue stay f32.
//!
//! Quantization (the contract [`crate::reference::ErrorModel`] bounds):
//! * weights: `s = fl(max|w| / 127)`, `q = round(w / s)` (to nearest even,
//!   clamped to ±127), so `|q·s − w| ≤ s/2`;
//! * operands: `s_a = fl(max|a| / 127)`, `q_a = round(a · fl(127 / max|a|))`,
//!   so `|q_a·s_a − a| ≤ (1/2 + 2⁻¹²)·s_a`; a row part holding NaN or ±∞
//!   gets a NaN scale (the outputs of that row are NaN, as in f32).
//!
//! The kernels multiply unsigned by signed bytes (`vpdpbusd`, `tdpbusd`),
//! so an operand enters as `q_a + 128`; the `128·Σq` that adds per column is
//! precomputed at pack time and subtracted in i32 before the dequantization
//! `(acc_x·s_x·s_wx + acc_m·s_m·s_wm)`. Each operand part is at most
//! [`MAX_K_PART`] long, so no i32 sum can overflow.
//!
//! Layout: the weights in 1 KiB blocks of 16 k-quads × 16 hidden units
//! (each `u32` holds four consecutive k of one unit — the AMX B-tile layout
//! and `vpdpbusd`'s operand layout), ordered `[unit block][k chunk of 64:
//! the x chunks, then the m chunks][gate i, f, c̃, o]`; the operands of a
//! step in 1 KiB tiles `[row block of 16][k chunk][16 rows][64 bytes]`.
//!
//! Kernels ([`Int8Kernel`]): AMX-INT8 tiles, AVX512-VNNI `vpdpbusd` (4 rows
//! × 4 gate vectors in registers), and a portable scalar path (correct
//! everywhere, not fast). Rows are independent in all three, so results do
//! not depend on how the batch is cut across threads.

#[cfg(target_arch = "x86_64")]
use super::lowp::amx as tiles_cfg;
use super::lowp::{Chunk, Epi, GATE_ROW, ROWS, UNITS, carve, epilogue, words_for};
#[cfg(target_arch = "x86_64")]
use super::simd::Avx512;
use super::simd::{Portable, Simd};
use crate::config::LstmConfig;
use crate::error::{Error, Result, try_filled};
use crate::weights::{Int8Gates, LstmWeights};

/// K per chunk: 16 quads, one AMX A-tile row of 64 bytes.
const KCHUNK: usize = 64;
/// `u32`s per packed block: 16 quads × 16 units.
const BLOCK: usize = 256;
/// Bytes of one operand tile: 16 rows × 64.
const ATILE: usize = ROWS * KCHUNK;
/// i32 accumulators per row of a unit block: 2 parts × 4 gates × 16.
const ACC_ROW: usize = 2 * GATE_ROW;

/// The longest operand part (`n_in`, or H) int8 runs: the i32 sums of
/// `(q_a + 128)·q_w ≤ 255·128` over 65,536 terms stay below 2³¹ (a given
/// weight may be −128).
pub const MAX_K_PART: usize = 65_536;

/// The environment variable that forces an int8 kernel (`amx`,
/// `avx512vnni`, `portable`), for tests and benches.
pub const INT8_KERNEL_ENV: &str = "LSTM_KERNELS_INT8";

/// Which int8 GEMM runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Int8Kernel {
    /// AMX-INT8 tiles (`tdpbusd`).
    Amx,
    /// AVX512-VNNI `vpdpbusd`.
    Avx512Vnni,
    /// Scalar, for CPUs without either.
    Portable,
}

impl super::lowp::KernelSet for Int8Kernel {
    const ALL: [Int8Kernel; 3] = [
        Int8Kernel::Amx,
        Int8Kernel::Avx512Vnni,
        Int8Kernel::Portable,
    ];

    const ENV: &'static str = INT8_KERNEL_ENV;
    const PRECISION: &'static str = "int8";

    /// The kernel's name (what `Lstm::kernel_name` reports).
    fn name(self) -> &'static str {
        match self {
            Int8Kernel::Amx => "int8_amx_16x16",
            Int8Kernel::Avx512Vnni => "int8_avx512vnni_4x64",
            Int8Kernel::Portable => "int8_portable",
        }
    }

    fn short(self) -> &'static str {
        match self {
            Int8Kernel::Amx => "amx",
            Int8Kernel::Avx512Vnni => "avx512vnni",
            Int8Kernel::Portable => "portable",
        }
    }

    /// Whether this CPU (and OS, for AMX) can run it.
    fn available(self) -> bool {
        match self {
            Int8Kernel::Amx => avx512vnni() && super::lowp::amx_ready(super::lowp::AMX_INT8),
            Int8Kernel::Avx512Vnni => avx512vnni(),
            Int8Kernel::Portable => true,
        }
    }

    fn needs(self) -> &'static str {
        match self {
            Int8Kernel::Amx => "AMX-INT8 (and the kernel's permission for tile data)",
            _ => "AVX512-VNNI",
        }
    }
}

fn avx512vnni() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vnni")
            && std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// The int8 scale of values whose largest magnitude is `max_abs`:
/// `fl(max_abs / 127)` (operands; the weights' in [`Int8Gates::quantize`]).
pub(crate) fn scale_of(max_abs: f32) -> f32 {
    max_abs / 127.0
}

/// A model's weights packed for the int8 kernels (see the module docs).
#[derive(Clone, Debug)]
pub(crate) struct Int8Packed {
    pub(crate) kernel: Int8Kernel,
    n_in: usize,
    h: usize,
    /// k chunks of the x part, then of the m part.
    cx: usize,
    cm: usize,
    /// `[ub][cx + cm][4][16 quads][16 units]`, four i8 per u32.
    tiles: Vec<u32>,
    /// `[ub][2 parts][4][16]` weight scales.
    wscale: Vec<f32>,
    /// `[ub][2 parts][4][16]`: `128·Σ_k q_w`, the `+128` of the operands.
    comp: Vec<i32>,
    epi: Epi,
}

impl Int8Packed {
    /// Checks that `cfg` has only what the int8 path computes, quantizes
    /// the gates ([`Int8Gates::quantize`]) and packs.
    pub(crate) fn build(cfg: &LstmConfig, w: &LstmWeights, kernel: Int8Kernel) -> Result<Self> {
        // Refuse unsupported variants before quantizing anything.
        super::lowp::check_supported(cfg, "int8")?;
        Int8Packed::from_gates(cfg, w, &Int8Gates::quantize(cfg, w)?, kernel)
    }

    /// Packs int8 gates as given (bias and peepholes from `w`).
    pub(crate) fn from_gates(
        cfg: &LstmConfig,
        w: &LstmWeights,
        gates: &Int8Gates,
        kernel: Int8Kernel,
    ) -> Result<Self> {
        super::lowp::check_supported(cfg, "int8")?;
        gates.check(cfg)?;
        let (n, h) = (cfg.n_input, cfg.n_hidden);
        for (what, k) in [("inputs", n), ("hidden units", h)] {
            if k > MAX_K_PART {
                return Err(Error::Config(format!(
                    "precision int8 runs at most {MAX_K_PART} {what} (its i32 sums would overflow); this model has {k}"
                )));
            }
        }
        let (cx, cm) = (n.div_ceil(KCHUNK), h.div_ceil(KCHUNK));
        let nch = cx + cm;
        let ub = h.div_ceil(UNITS);
        let cols = 4 * h;
        let mut tiles = try_filled::<u32>(ub * nch * 4 * BLOCK, 0, "int8 packed weights")?;
        let mut wscale = try_filled::<f32>(ub * 2 * GATE_ROW, 0.0, "int8 weight scales")?;
        let mut comp = try_filled::<i32>(ub * 2 * GATE_ROW, 0, "int8 compensation")?;
        // (first row, rows, first chunk, scales) of each part.
        let parts = [(0, n, 0, &gates.scale_x), (n, h, cx, &gates.scale_h)];
        for u in 0..ub {
            for (part, &(k0, len, c0, scales)) in parts.iter().enumerate() {
                for g in 0..4 {
                    for j in 0..UNITS.min(h - u * UNITS) {
                        let col = g * h + u * UNITS + j;
                        let mut sum = 0i32;
                        for k in 0..len {
                            let q = gates.q[(k0 + k) * cols + col];
                            sum += q as i32;
                            let (c, kk) = (c0 + k / KCHUNK, k % KCHUNK);
                            let at = ((u * nch + c) * 4 + g) * BLOCK + (kk / 4) * UNITS + j;
                            tiles[at] |= (q as u8 as u32) << (8 * (kk % 4));
                        }
                        let at = (u * 2 + part) * GATE_ROW + g * UNITS + j;
                        wscale[at] = scales[col];
                        comp[at] = 128 * sum;
                    }
                }
            }
        }
        Ok(Int8Packed {
            kernel,
            n_in: n,
            h,
            cx,
            cm,
            tiles,
            wscale,
            comp,
            epi: Epi::build(cfg, w)?,
        })
    }

    /// Bytes of packed weights.
    pub(crate) fn bytes(&self) -> usize {
        self.tiles.len() * 4
    }

    fn chunks(&self) -> usize {
        self.cx + self.cm
    }
}

/// Per-chunk buffers.
struct Bufs<'a> {
    /// `[row block][chunk][16 rows][64]` operands of one step, `q + 128`.
    a: &'a mut [u8],
    /// `[rows_pad][2]` operand scales (x, m) of one step.
    scales: &'a mut [f32],
    /// `[rows_pad][2 parts][4 gates][16 units]` i32 sums of one unit block.
    acc: &'a mut [i32],
    /// `[rows_pad][4 gates][16 units]` f32 gate pre-activations.
    g: &'a mut [f32],
}

impl super::lowp::Engine for Int8Packed {
    fn dims(&self) -> (usize, usize) {
        (self.n_in, self.h)
    }

    fn scratch_words(&self, rows: usize) -> usize {
        let rows_pad = rows.div_ceil(ROWS).max(1) * ROWS;
        words_for::<u8>(rows_pad * self.chunks() * KCHUNK)
            + words_for::<f32>(rows_pad * 2)
            + words_for::<i32>(rows_pad * ACC_ROW)
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
/// built); the chunk contract of [`super::lowp::forward`].
unsafe fn run_chunk(pk: &Int8Packed, ch: Chunk, scratch: &mut [u64]) -> Result<()> {
    let rows_pad = ch.rows.div_ceil(ROWS).max(1) * ROWS;
    let (a, rest) = carve::<u8>(scratch, rows_pad * pk.chunks() * KCHUNK);
    let (scales, rest) = carve::<f32>(rest, rows_pad * 2);
    let (acc, rest) = carve::<i32>(rest, rows_pad * ACC_ROW);
    let (g, _) = carve::<f32>(rest, rows_pad * GATE_ROW);
    // Every byte the quantization does not write (rows beyond the chunk's
    // in its last block) only feeds sums that are never read.
    let bufs = Bufs { a, scales, acc, g };
    // SAFETY: the kernel is available (the caller's contract); the rest is
    // forwarded.
    let ran = unsafe {
        match pk.kernel {
            #[cfg(target_arch = "x86_64")]
            Int8Kernel::Amx | Int8Kernel::Avx512Vnni => run_avx512(pk, ch, bufs),
            _ => body::<Portable>(pk, ch, bufs),
        }
    };
    // The kernel whose GEMM really ran (not merely the one configured).
    if let Some(k) = ran {
        super::diagnostics::record_int8(k as usize);
    }
    Ok(())
}

/// [`body`] under AVX-512F/BW + AVX512-VNNI (the AMX kernel's
/// quantization and epilogue are AVX-512 too).
///
/// # Safety
/// As [`run_chunk`]; the CPU has these features.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma")]
unsafe fn run_avx512(pk: &Int8Packed, ch: Chunk, bufs: Bufs) -> Option<Int8Kernel> {
    // SAFETY: forwarded.
    unsafe { body::<Avx512>(pk, ch, bufs) }
}

/// The chunk's steps: operands quantized into `a`, then per unit block the
/// GEMM into `acc`, the dequantization into `g` and the epilogue.
///
/// # Safety
/// As [`run_chunk`]; runs inside an entry with `S`'s features (and
/// AVX512-VNNI when `pk.kernel` is not portable).
#[inline(always)]
unsafe fn body<S: Simd>(pk: &Int8Packed, mut ch: Chunk, bufs: Bufs) -> Option<Int8Kernel> {
    // Which GEMM ran (for the diagnostics' run counters).
    let mut ran = None;
    let (n, h, nch) = (pk.n_in, pk.h, pk.chunks());
    let rows = ch.rows;
    let st = ch.state(h);
    let nblocks = rows.div_ceil(ROWS);
    assert!(
        bufs.a.len() >= nblocks * nch * ATILE
            && bufs.scales.len() >= nblocks * ROWS * 2
            && bufs.acc.len() >= nblocks * ROWS * ACC_ROW
            && bufs.g.len() >= nblocks * ROWS * GATE_ROW,
        "int8 buffers"
    );
    let simd = pk.kernel != Int8Kernel::Portable;
    #[cfg(target_arch = "x86_64")]
    let amx = pk.kernel == Int8Kernel::Amx;
    #[cfg(target_arch = "x86_64")]
    if amx {
        // SAFETY: AMX is available (the caller's contract).
        unsafe { tiles_cfg::configure() };
    }
    let per_unit = nch * 4 * BLOCK;
    for t in 0..ch.steps {
        for r in 0..rows {
            let base = ((r / ROWS) * nch * ROWS + r % ROWS) * KCHUNK;
            // SAFETY: row r < rows of step t < steps (the chunk contract);
            // m's row r is not borrowed mutably while this one lives.
            let (x, m) = unsafe { (ch.x_row(t, r, n), st.m_row(r, h)) };
            bufs.scales[2 * r] = quantize(simd, x, &mut bufs.a[base..], pk.cx);
            let base_m = base + pk.cx * ATILE;
            bufs.scales[2 * r + 1] = quantize(simd, m, &mut bufs.a[base_m..], pk.cm);
        }
        #[cfg(target_arch = "x86_64")]
        if amx {
            for u in 0..pk.epi.ub {
                let tiles = &pk.tiles[u * per_unit..][..per_unit];
                for pair in [0usize, 2] {
                    for (part, c0, c1) in [(0, 0, pk.cx), (1, pk.cx, nch)] {
                        let mut rb = 0;
                        while rb < nblocks {
                            let a = &bufs.a[rb * nch * ATILE..];
                            let acc = &mut bufs.acc[rb * ROWS * ACC_ROW..];
                            let two = nblocks - rb >= 2;
                            // SAFETY: AMX configured above; a holds the
                            // row blocks' nch tiles each, acc their rows.
                            unsafe { amx::gemm(a, tiles, nch, c0, c1, acc, part, pair, two) };
                            ran = Some(Int8Kernel::Amx);
                            rb += 2;
                        }
                    }
                }
                dequantize(pk, u, bufs.acc, bufs.scales, bufs.g, 0, rows);
                // SAFETY: the chunk's rows; step t within out.
                unsafe { epilogue::<S>(&pk.epi, &ch, st, bufs.g, t, 0, rows, u) };
            }
            continue;
        }
        for rb in 0..nblocks {
            let r0 = rb * ROWS;
            let nr = ROWS.min(rows - r0);
            let a = &bufs.a[rb * nch * ATILE..(rb + 1) * nch * ATILE];
            for u in 0..pk.epi.ub {
                let tiles = &pk.tiles[u * per_unit..][..per_unit];
                let acc = &mut bufs.acc[..ROWS * ACC_ROW];
                for (part, c0, c1) in [(0, 0, pk.cx), (1, pk.cx, nch)] {
                    ran = Some(match pk.kernel {
                        #[cfg(target_arch = "x86_64")]
                        Int8Kernel::Avx512Vnni => {
                            // SAFETY: inside the AVX512-VNNI entry.
                            unsafe { vnni::gemm(a, tiles, c0, c1, nr, acc, part) };
                            Int8Kernel::Avx512Vnni
                        }
                        _ => {
                            scalar_gemm(a, tiles, c0, c1, nr, acc, part);
                            Int8Kernel::Portable
                        }
                    });
                }
                dequantize(pk, u, acc, &bufs.scales[r0 * 2..], bufs.g, 0, nr);
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

/// Quantizes one operand part (`vals`) into `chunks` chunks of 64 bytes at
/// stride [`ATILE`] in `out` (`q + 128`; the pad stays 128, i.e. zero) and
/// returns its scale (NaN when a value is not finite, 0 for all zeros).
#[inline(always)]
fn quantize(simd: bool, vals: &[f32], out: &mut [u8], chunks: usize) -> f32 {
    assert!(
        vals.len() <= chunks * KCHUNK
            && (chunks == 0 || out.len() >= (chunks - 1) * ATILE + KCHUNK),
        "int8 quantize bounds"
    );
    let (amax, finite) = abs_max(simd, vals);
    if !finite {
        return f32::NAN;
    }
    if amax == 0.0 {
        for c in 0..chunks {
            out[c * ATILE..c * ATILE + KCHUNK].fill(128);
        }
        return 0.0;
    }
    let inv = 127.0 / amax;
    #[cfg(target_arch = "x86_64")]
    if simd {
        // SAFETY: only reached inside the AVX-512 entry (non-portable
        // kernels run in `run_avx512`); the bounds are asserted above and
        // every load is masked to the values present.
        unsafe {
            use std::arch::x86_64::*;
            let vinv = _mm512_set1_ps(inv);
            let bias = _mm512_set1_epi32(128);
            for c in 0..chunks {
                for q in 0..4 {
                    let k = c * KCHUNK + q * 16;
                    let left = vals.len().saturating_sub(k).min(16);
                    let mask: __mmask16 = ((1u32 << left) - 1) as u16;
                    let v = _mm512_maskz_loadu_ps(mask, vals.as_ptr().wrapping_add(k));
                    let i = _mm512_cvt_roundps_epi32::<
                        { _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC },
                    >(_mm512_mul_ps(v, vinv));
                    let b = _mm512_cvtusepi32_epi8(_mm512_add_epi32(i, bias));
                    _mm_storeu_si128(out.as_mut_ptr().add(c * ATILE + q * 16).cast(), b);
                }
            }
        }
        return scale_of(amax);
    }
    let _ = simd;
    for c in 0..chunks {
        let o = &mut out[c * ATILE..c * ATILE + KCHUNK];
        for (kk, o) in o.iter_mut().enumerate() {
            let v = vals.get(c * KCHUNK + kk).copied().unwrap_or(0.0);
            let q = (v * inv).round_ties_even().clamp(-127.0, 127.0) as i32;
            *o = (q + 128) as u8;
        }
    }
    scale_of(amax)
}

/// The largest `|v|` of `vals`, and whether all are finite.
#[inline(always)]
fn abs_max(simd: bool, vals: &[f32]) -> (f32, bool) {
    #[cfg(target_arch = "x86_64")]
    if simd {
        // SAFETY: only reached inside the AVX-512 entry; every load is
        // masked to the values present.
        unsafe {
            use std::arch::x86_64::*;
            let mut vmax = _mm512_setzero_ps();
            let mut bad: __mmask16 = 0;
            for k in (0..vals.len()).step_by(16) {
                let left = (vals.len() - k).min(16);
                let mask: __mmask16 = ((1u32 << left) - 1) as u16;
                let v = _mm512_maskz_loadu_ps(mask, vals.as_ptr().add(k));
                vmax = _mm512_max_ps(vmax, _mm512_abs_ps(v));
                // v − v is NaN exactly when v is NaN or ±∞.
                let d = _mm512_sub_ps(v, v);
                bad |= _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(d, d);
            }
            return (_mm512_reduce_max_ps(vmax), bad == 0);
        }
    }
    let _ = simd;
    vals.iter().fold((0.0f32, true), |(m, f), &v| {
        (m.max(v.abs()), f && v.is_finite())
    })
}

/// `g[r][gate][j] = (acc_x − comp_x)·s_x·s_wx + (acc_m − comp_m)·s_m·s_wm`
/// for rows `r0..r0 + nr` of `acc`/`scales` (into rows from 0 of `g`).
#[inline(always)]
fn dequantize(
    pk: &Int8Packed,
    u: usize,
    acc: &[i32],
    scales: &[f32],
    g: &mut [f32],
    r0: usize,
    nr: usize,
) {
    let ws = &pk.wscale[u * 2 * GATE_ROW..][..2 * GATE_ROW];
    let comp = &pk.comp[u * 2 * GATE_ROW..][..2 * GATE_ROW];
    for r in 0..nr {
        let (sx, sm) = (scales[2 * (r0 + r)], scales[2 * (r0 + r) + 1]);
        let a = &acc[(r0 + r) * ACC_ROW..][..ACC_ROW];
        let out = &mut g[r * GATE_ROW..][..GATE_ROW];
        for k in 0..GATE_ROW {
            let dx = (a[k] - comp[k]) as f32 * (sx * ws[k]);
            let dm = (a[GATE_ROW + k] - comp[GATE_ROW + k]) as f32 * (sm * ws[GATE_ROW + k]);
            out[k] = dx + dm;
        }
    }
}

/// The scalar GEMM over chunks `c0..c1` into part `part` of `acc`
/// (`[row][part][gate][unit]`), for the `nr` rows of one row block.
fn scalar_gemm(
    a: &[u8],
    tiles: &[u32],
    c0: usize,
    c1: usize,
    nr: usize,
    acc: &mut [i32],
    part: usize,
) {
    for r in 0..nr {
        for gate in 0..4 {
            for j in 0..UNITS {
                let mut s = 0i32;
                for c in c0..c1 {
                    let row = &a[c * ATILE + r * KCHUNK..][..KCHUNK];
                    let block = &tiles[(c * 4 + gate) * BLOCK..][..BLOCK];
                    for p in 0..16 {
                        let wv = block[p * UNITS + j];
                        for b in 0..4 {
                            let wq = (wv >> (8 * b)) as u8 as i8 as i32;
                            s += row[4 * p + b] as i32 * wq;
                        }
                    }
                }
                acc[r * ACC_ROW + part * GATE_ROW + gate * UNITS + j] = s;
            }
        }
    }
}

/// The AVX512-VNNI GEMM: 4 rows × the four gates of 16 units in 16
/// registers, one `vpdpbusd` per (row, gate, k-quad).
#[cfg(target_arch = "x86_64")]
mod vnni {
    use std::arch::x86_64::*;

    use super::{ACC_ROW, ATILE, BLOCK, GATE_ROW, KCHUNK, UNITS};

    /// Part `part` of `acc` for the `nr ≤ 16` rows of one row block of
    /// `a` against one unit block's `tiles`, chunks `c0..c1`.
    ///
    /// # Safety
    /// Inside an AVX-512F + AVX512-VNNI entry.
    #[inline(always)]
    pub(super) unsafe fn gemm(
        a: &[u8],
        tiles: &[u32],
        c0: usize,
        c1: usize,
        nr: usize,
        acc: &mut [i32],
        part: usize,
    ) {
        assert!(
            a.len() >= c1 * ATILE
                && tiles.len() >= c1 * 4 * BLOCK
                && acc.len() >= 16 * ACC_ROW
                && nr <= 16,
            "int8 vnni bounds"
        );
        let mut r0 = 0;
        while r0 < nr {
            // SAFETY: rows r0..r0+4 ≤ 16 of the block (a is padded to 16
            // rows), chunks below c1, acc rows below 16: asserted above.
            unsafe {
                rows4(
                    a.as_ptr().add(r0 * KCHUNK),
                    tiles.as_ptr(),
                    c0,
                    c1,
                    acc.as_mut_ptr().add(r0 * ACC_ROW + part * GATE_ROW),
                )
            };
            r0 += 4;
        }
    }

    #[inline(always)]
    unsafe fn rows4(a: *const u8, tiles: *const u32, c0: usize, c1: usize, acc: *mut i32) {
        // SAFETY: the caller's bounds (4 rows of every chunk below c1 at
        // stride 64 within a tile, c1 × 4 blocks, 4 rows of acc).
        unsafe {
            let mut s = [[_mm512_setzero_si512(); 4]; 4];
            for c in c0..c1 {
                let ap = a.add(c * ATILE).cast::<i32>();
                for p in 0..16 {
                    let bp = tiles.add(c * 4 * BLOCK + p * UNITS);
                    let b: [__m512i; 4] =
                        std::array::from_fn(|gate| _mm512_loadu_si512(bp.add(gate * BLOCK).cast()));
                    for (r, s_r) in s.iter_mut().enumerate() {
                        let av = _mm512_set1_epi32(ap.add(r * KCHUNK / 4 + p).read_unaligned());
                        for gate in 0..4 {
                            s_r[gate] = _mm512_dpbusd_epi32(s_r[gate], av, b[gate]);
                        }
                    }
                }
            }
            for (r, s_r) in s.iter().enumerate() {
                for (gate, &v) in s_r.iter().enumerate() {
                    _mm512_storeu_si512(acc.add(r * ACC_ROW + gate * UNITS).cast(), v);
                }
            }
        }
    }
}

/// The AMX-INT8 GEMM: accumulators (rows 0–15 | 16–31) × (two gates) in
/// tiles 0–3, operands in 4–5, weights in 6–7, so every tile load feeds two
/// `tdpbusd`.
#[cfg(target_arch = "x86_64")]
mod amx {
    use std::arch::asm;

    use super::{ACC_ROW, ATILE, BLOCK, GATE_ROW, ROWS, UNITS};

    /// Part `part`, gates `pair` and `pair + 1`, chunks `c0..c1`, for one
    /// row block of `a` (two if `two`) into `acc`.
    ///
    /// # Safety
    /// Tiles configured on this thread; `a` holds one (two) row blocks of
    /// `nch` operand tiles, `acc` 16 (32) rows.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn gemm(
        a: &[u8],
        tiles: &[u32],
        nch: usize,
        c0: usize,
        c1: usize,
        acc: &mut [i32],
        part: usize,
        pair: usize,
        two: bool,
    ) {
        let blocks = if two { 2 } else { 1 };
        assert!(
            a.len() >= blocks * nch * ATILE
                && c1 <= nch
                && tiles.len() >= nch * 4 * BLOCK
                && acc.len() >= blocks * ROWS * ACC_ROW
                && pair <= 2,
            "int8 amx bounds"
        );
        let stride = 64usize;
        let out_stride = ACC_ROW * 4;
        // SAFETY: tile loads read contiguous 1 KiB blocks of a (within the
        // row blocks) and of tiles (chunks below c1 ≤ nch); stores write
        // 16 rows of 64 bytes at stride 512 within acc's rows.
        unsafe {
            asm!(
                "tilezero tmm0",
                "tilezero tmm1",
                "tilezero tmm2",
                "tilezero tmm3",
                options(nostack, nomem)
            );
            for c in c0..c1 {
                let a0 = a.as_ptr().add(c * ATILE);
                let bp = tiles.as_ptr().add((c * 4 + pair) * BLOCK);
                if two {
                    asm!(
                        "tileloadd tmm4, [{a0} + {s}*1]",
                        "tileloadd tmm6, [{b0} + {s}*1]",
                        "tdpbusd tmm0, tmm4, tmm6",
                        "tileloadd tmm5, [{a1} + {s}*1]",
                        "tdpbusd tmm2, tmm5, tmm6",
                        "tileloadd tmm7, [{b1} + {s}*1]",
                        "tdpbusd tmm1, tmm4, tmm7",
                        "tdpbusd tmm3, tmm5, tmm7",
                        a0 = in(reg) a0,
                        a1 = in(reg) a0.add(nch * ATILE),
                        b0 = in(reg) bp,
                        b1 = in(reg) bp.add(BLOCK),
                        s = in(reg) stride,
                        options(nostack, readonly),
                    );
                } else {
                    asm!(
                        "tileloadd tmm4, [{a0} + {s}*1]",
                        "tileloadd tmm6, [{b0} + {s}*1]",
                        "tdpbusd tmm0, tmm4, tmm6",
                        "tileloadd tmm7, [{b1} + {s}*1]",
                        "tdpbusd tmm1, tmm4, tmm7",
                        a0 = in(reg) a0,
                        b0 = in(reg) bp,
                        b1 = in(reg) bp.add(BLOCK),
                        s = in(reg) stride,
                        options(nostack, readonly),
                    );
                }
            }
            let gp = acc.as_mut_ptr().add(part * GATE_ROW + pair * UNITS);
            asm!(
                "tilestored [{g0} + {s}*1], tmm0",
                "tilestored [{g1} + {s}*1], tmm1",
                g0 = in(reg) gp,
                g1 = in(reg) gp.add(UNITS),
                s = in(reg) out_stride,
                options(nostack),
            );
            if two {
                asm!(
                    "tilestored [{g2} + {s}*1], tmm2",
                    "tilestored [{g3} + {s}*1], tmm3",
                    g2 = in(reg) gp.add(ROWS * ACC_ROW),
                    g3 = in(reg) gp.add(ROWS * ACC_ROW + UNITS),
                    s = in(reg) out_stride,
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
    fn operand_quantization_is_within_half_a_step() {
        let vals: Vec<f32> = (0..150)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.173)
            .collect();
        let mut out = vec![0u8; 3 * ATILE];
        let s = quantize(false, &vals, &mut out, 3);
        let amax = vals.iter().fold(0.0f32, |a, v| a.max(v.abs()));
        assert_eq!(s, amax / 127.0);
        for (k, &v) in vals.iter().enumerate() {
            let q = out[(k / KCHUNK) * ATILE + k % KCHUNK] as i32 - 128;
            let err = (q as f64 * s as f64 - v as f64).abs();
            assert!(err <= (0.5 + 2f64.powi(-12)) * s as f64, "{k}: {v} -> {q}");
        }
        // The pad of the last chunk is zero.
        assert!(
            out[2 * ATILE + 150 - 128..2 * ATILE + KCHUNK]
                .iter()
                .all(|&b| b == 128)
        );
        assert!(quantize(false, &[1.0, f32::NAN], &mut out, 3).is_nan());
        assert_eq!(quantize(false, &[0.0; 5], &mut out, 3), 0.0);
    }
}
