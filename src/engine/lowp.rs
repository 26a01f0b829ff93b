//! What the reduced-precision engines (`bf16`, `int8`) share: the packed
//! f32 epilogue parameters and the fused epilogue itself (bias, peepholes,
//! activations, the cell update — always f32), the per-chunk view of a
//! call, the parallel driver, and AMX's tile set-up.
//!
//! Both engines run one concatenated GEMM per step in blocks of
//! [`ROWS`] rows × [`UNITS`] hidden units × four gates; the GEMM leaves f32
//! gate pre-activations `g[row][gate][unit]` (64 floats per row) for the
//! epilogue of that unit block.

use super::activation::{sigmoid, tanh};
use super::simd::Simd;
use crate::config::{LstmConfig, Peephole};
use crate::error::{Error, Result, try_filled};
use crate::weights::LstmWeights;

/// Hidden units per block (one AVX-512 vector, one AMX tile's columns).
pub(crate) const UNITS: usize = 16;
/// Rows per AMX tile (and per row block of every kernel).
pub(crate) const ROWS: usize = 16;
/// Floats of gate pre-activations per row of a unit block: 4 gates × 16.
pub(crate) const GATE_ROW: usize = 4 * UNITS;

/// A reduced precision's set of kernels: three, fastest first (AMX, a
/// vector extension, portable), chosen once per model.
pub(crate) trait KernelSet: Copy + PartialEq + Sized + 'static {
    /// Every kernel, fastest first; the last is the portable one.
    const ALL: [Self; 3];
    /// The environment variable that forces one.
    const ENV: &'static str;
    /// `bf16` or `int8`.
    const PRECISION: &'static str;
    /// The kernel's name (what `Lstm::kernel_name` reports).
    fn name(self) -> &'static str;
    /// Its short name (`amx`, …), as the environment variable takes it.
    fn short(self) -> &'static str;
    /// Whether this CPU (and OS, for AMX) can run it.
    fn available(self) -> bool;
    /// What it needs, for the error when it is unavailable.
    fn needs(self) -> &'static str;

    /// The fastest available, or the one [`KernelSet::ENV`] forces (an
    /// error if it is unknown or unavailable).
    fn choose() -> Result<Self> {
        match std::env::var(Self::ENV) {
            Ok(v) if !v.is_empty() => Self::from_name(&v),
            Err(std::env::VarError::NotUnicode(v)) => Err(Error::Unsupported(format!(
                "{}={v:?} is not a kernel name (not valid UTF-8)",
                Self::ENV
            ))),
            _ => Ok(Self::ALL
                .into_iter()
                .find(|k| k.available())
                .unwrap_or(Self::ALL[2])),
        }
    }

    /// The kernel with this short or full name, if this CPU can run it.
    fn from_name(name: &str) -> Result<Self> {
        let k = Self::ALL
            .into_iter()
            .find(|k| k.short() == name || k.name() == name)
            .ok_or_else(|| {
                let shorts: Vec<&str> = Self::ALL.iter().map(|k| k.short()).collect();
                Error::Unsupported(format!(
                    "unknown {} kernel `{name}` (expected {})",
                    Self::PRECISION,
                    shorts.join(", ")
                ))
            })?;
        if !k.available() {
            return Err(Error::Unsupported(format!(
                "{} kernel `{name}` needs {}, which this CPU or OS does not give",
                Self::PRECISION,
                k.needs()
            )));
        }
        Ok(k)
    }
}

/// A reduced-precision packing that runs chunks of rows ([`forward`]).
pub(crate) trait Engine: Sync {
    /// `(n_in, H)`.
    fn dims(&self) -> (usize, usize);
    /// Scratch words a chunk of `rows` rows needs.
    fn scratch_words(&self, rows: usize) -> usize;
    /// Runs one chunk through every step.
    ///
    /// # Safety
    /// The packing's kernel is available on this CPU (checked when the
    /// model was built); the chunk contract of [`forward`]; `scratch` holds
    /// `scratch_words(ch.rows)` words.
    unsafe fn run_chunk(&self, ch: Chunk, scratch: &mut [u64]) -> Result<()>;
}

/// Refuses the variants the reduced precisions do not compute yet.
pub(crate) fn check_supported(cfg: &LstmConfig, precision: &str) -> Result<()> {
    let unsupported = |what: &str| {
        Err(Error::Config(format!(
            "precision {precision} does not support {what} yet (it runs in f32)"
        )))
    };
    if cfg.peephole == Peephole::Matrix {
        return unsupported("the matrix peephole v_o");
    }
    if cfg.projection.is_some() {
        return unsupported("a projection");
    }
    if cfg.head.is_some() {
        return unsupported("an output head");
    }
    Ok(())
}

/// The epilogue's f32 parameters, packed per unit block.
#[derive(Clone, Debug)]
pub(crate) struct Epi {
    pub(crate) h: usize,
    /// Unit blocks.
    pub(crate) ub: usize,
    /// `[ub][4][16]`, the forget bias folded in.
    bias: Vec<f32>,
    /// `[ub][3][16]` diagonal peepholes.
    diag: Option<Vec<f32>>,
    clip: Option<f32>,
    cell_clip: Option<f32>,
    input_forget: bool,
}

impl Epi {
    pub(crate) fn build(cfg: &LstmConfig, w: &LstmWeights) -> Result<Self> {
        let h = cfg.n_hidden;
        let ub = h.div_ceil(UNITS);
        let mut bias = try_filled::<f32>(ub * 4 * UNITS, 0.0, "reduced-precision bias")?;
        for u in 0..ub {
            for g in 0..4 {
                for j in 0..UNITS.min(h - u * UNITS) {
                    let fb = if g == 1 { cfg.forget_bias } else { 0.0 };
                    bias[(u * 4 + g) * UNITS + j] = w.bias[g * h + u * UNITS + j] + fb;
                }
            }
        }
        let diag = match &w.peep_diag {
            Some(d) => {
                let mut v = try_filled::<f32>(ub * 3 * UNITS, 0.0, "reduced-precision peepholes")?;
                for u in 0..ub {
                    for g in 0..3 {
                        for j in 0..UNITS.min(h - u * UNITS) {
                            v[(u * 3 + g) * UNITS + j] = d[g * h + u * UNITS + j];
                        }
                    }
                }
                Some(v)
            }
            None => None,
        };
        Ok(Epi {
            h,
            ub,
            bias,
            diag,
            clip: cfg.clip,
            cell_clip: cfg.cell_clip,
            input_forget: cfg.input_forget,
        })
    }
}

/// One chunk of rows through every step: its slices of the state, and raw
/// pointers into the inputs and outputs (rows of other chunks interleave
/// with its rows there).
pub(crate) struct Chunk<'a> {
    pub(crate) c: &'a mut [f32],
    pub(crate) m: &'a mut [f32],
    /// `xs` (`[steps, batch, n_in]`) at this chunk's first row of step 0.
    pub(crate) xs: *const f32,
    /// `out` (`[steps, batch, H]`) at this chunk's first row of step 0.
    pub(crate) out: *mut f32,
    /// Rows in the chunk.
    pub(crate) rows: usize,
    /// Rows per step in `xs` and `out` (the whole batch).
    pub(crate) batch: usize,
    pub(crate) steps: usize,
}

// SAFETY: a chunk's raw pointers address only its own rows of the caller's
// `xs` (read) and `out` (written); chunks of one call are disjoint, and the
// call outlives every chunk (they run inside it).
unsafe impl Send for Chunk<'_> {}

impl Chunk<'_> {
    /// Checks, in release builds, that the state slices hold the chunk's
    /// rows (everything the kernels write through `State` rests on it).
    pub(crate) fn state(&mut self, h: usize) -> State {
        assert!(
            self.c.len() >= self.rows * h && self.m.len() >= self.rows * h,
            "reduced-precision chunk state"
        );
        State {
            c: self.c.as_mut_ptr(),
            m: self.m.as_mut_ptr(),
        }
    }

    /// Row `r` of `xs` at step `t`.
    ///
    /// # Safety
    /// `r < rows`, `t < steps` and `n` is the model's n_in (the driver's
    /// contract for the pointer).
    #[inline(always)]
    pub(crate) unsafe fn x_row(&self, t: usize, r: usize, n: usize) -> &[f32] {
        // SAFETY: the caller's contract.
        unsafe { std::slice::from_raw_parts(self.xs.add((t * self.batch + r) * n), n) }
    }
}

/// The chunk's `c` and `m` (`rows × H` each), as pointers.
#[derive(Clone, Copy)]
pub(crate) struct State {
    pub(crate) c: *mut f32,
    pub(crate) m: *mut f32,
}

impl State {
    /// Row `r` of `m`.
    ///
    /// # Safety
    /// `r` is a row of the chunk the state came from; no `&mut` to it is
    /// alive.
    #[inline(always)]
    pub(crate) unsafe fn m_row(&self, r: usize, h: usize) -> &[f32] {
        // SAFETY: the caller's contract.
        unsafe { std::slice::from_raw_parts(self.m.add(r * h), h) }
    }
}

/// The fused epilogue for rows `r0..r0+nr` of the chunk and unit block
/// `u`: bias, peepholes, activations, the cell update, `m` and the output.
/// `g` holds the rows' gate pre-activations, [`GATE_ROW`] floats per row.
///
/// # Safety
/// Inside an entry with `S`'s features; rows and step within the chunk.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn epilogue<S: Simd>(
    pk: &Epi,
    ch: &Chunk,
    st: State,
    g: &[f32],
    t: usize,
    r0: usize,
    nr: usize,
    u: usize,
) {
    let h = pk.h;
    let l = S::LANES;
    assert!(g.len() >= nr * GATE_ROW && u < pk.ub, "epilogue bounds");
    let act_in = |z: S::V| match pk.clip {
        // SAFETY: inside S's entry.
        Some(t) => unsafe { S::clamp(z, -t, t) },
        None => z,
    };
    // SAFETY: every pointer below stays within the chunk's rows of c, m
    // and out, within the packed bias/peepholes, and within g; partial
    // loads and stores cover only the n valid units.
    unsafe {
        for v0 in (0..UNITS).step_by(l) {
            let j0 = u * UNITS + v0;
            if j0 >= h {
                break;
            }
            let n = l.min(h - j0);
            let bias = pk.bias.as_ptr().add(u * 4 * UNITS + v0);
            let b = [
                S::load(bias),
                S::load(bias.add(UNITS)),
                S::load(bias.add(2 * UNITS)),
                S::load(bias.add(3 * UNITS)),
            ];
            let diag = pk.diag.as_ref().map(|d| {
                let p = d.as_ptr().add(u * 3 * UNITS + v0);
                [S::load(p), S::load(p.add(UNITS)), S::load(p.add(2 * UNITS))]
            });
            for r in 0..nr {
                let row = r0 + r;
                let gp = g.as_ptr().add(r * GATE_ROW + v0);
                let z = |k: usize| S::add(S::load(gp.add(k * UNITS)), b[k]);
                let cp = st.c.add(row * h + j0);
                let c_old = if n == l {
                    S::load(cp)
                } else {
                    S::load_partial(cp, n)
                };
                let (mut zi, mut zf) = (z(0), z(1));
                if let Some(dg) = diag {
                    zi = S::fmadd(dg[0], c_old, zi);
                    zf = S::fmadd(dg[1], c_old, zf);
                }
                let i = sigmoid::<S>(act_in(zi));
                let f = if pk.input_forget {
                    S::sub(S::splat(1.0), i)
                } else {
                    sigmoid::<S>(act_in(zf))
                };
                let mut c_new = S::fmadd(f, c_old, S::mul(i, tanh::<S>(act_in(z(2)))));
                if let Some(t) = pk.cell_clip {
                    c_new = S::clamp(c_new, -t, t);
                }
                let zo = match diag {
                    Some(dg) => S::fmadd(dg[2], c_new, z(3)),
                    None => z(3),
                };
                let m = S::mul(sigmoid::<S>(act_in(zo)), tanh::<S>(c_new));
                let mp = st.m.add(row * h + j0);
                let op = ch.out.add((t * ch.batch + row) * h + j0);
                if n == l {
                    S::store(cp, c_new);
                    S::store(mp, m);
                    S::store(op, m);
                } else {
                    S::store_partial(cp, c_new, n);
                    S::store_partial(mp, m, n);
                    S::store_partial(op, m, n);
                }
            }
        }
    }
}

/// Plain data a scratch arena can be carved into: every bit pattern is a
/// valid value, size divides 8, alignment at most 8.
pub(crate) trait Pod: Copy {}
impl Pod for u8 {}
impl Pod for u16 {}
impl Pod for i32 {}
impl Pod for f32 {}

/// `u64` words that hold `n` values of `T`.
pub(crate) fn words_for<T: Pod>(n: usize) -> usize {
    (n * std::mem::size_of::<T>()).div_ceil(8)
}

/// Splits `n` values of `T` off the front of `arena`; returns them and the
/// rest. Panics (release builds too) if the arena is too short
/// (`split_at_mut`'s bound check).
pub(crate) fn carve<T: Pod>(arena: &mut [u64], n: usize) -> (&mut [T], &mut [u64]) {
    const { assert!(std::mem::align_of::<T>() <= 8 && 8 % std::mem::size_of::<T>() == 0) };
    let (head, rest) = arena.split_at_mut(words_for::<T>(n));
    // SAFETY: `head` is `words_for::<T>(n)` words, at least `n` values of
    // `T` (size dividing 8), at an 8-byte-aligned address (align of T ≤ 8,
    // checked at compile time above); `T: Pod` is a plain integer or float
    // type, so any bytes there are a valid value; the borrow of `head` is
    // unique and lives as long as the result.
    let mid = unsafe { std::slice::from_raw_parts_mut(head.as_mut_ptr().cast::<T>(), n) };
    (mid, rest)
}

/// The most scratch words a one-step call of [`forward`] with any batch
/// up to `rows` on up to `threads` threads can need: at most `threads`
/// chunks, none of more than `rows` rows rounded up to whole blocks.
/// `None` if it overflows.
pub(crate) fn one_step_scratch_bound<E: Engine>(
    pk: &E,
    threads: usize,
    rows: usize,
) -> Option<usize> {
    let per = rows.div_ceil(ROWS).max(1).checked_mul(ROWS)?;
    threads.max(1).checked_mul(pk.scratch_words(per))
}

/// Runs `steps` steps of a `batch`: `xs` is `[steps, batch, n_in]`, `out`
/// `[steps, batch, H]`; `c` and `m` (`[batch, H]`) are updated by
/// `run_chunk`. The batch is cut into chunks of whole [`ROWS`]-row blocks,
/// one per thread; rows never interact, so the result is the same for
/// every thread count. Each chunk gets `pk.scratch_words(rows_per_chunk)`
/// words of `scratch`, which grows (fallibly) only when a call needs more than any
/// call before it: in steady state a call does not allocate.
///
/// The chunk contract [`Engine::run_chunk`] may rely on: a chunk's `c` and
/// `m` hold its `rows × H`, and its `xs`/`out` pointers are valid for its
/// rows of every step (`n_in` and `H` floats) — which this function
/// establishes from the sizes it checks.
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward<E: Engine>(
    pk: &E,
    par: super::Parallel,
    scratch: &mut Vec<u64>,
    c: &mut [f32],
    m: &mut [f32],
    xs: &[f32],
    out: &mut [f32],
    batch: usize,
    steps: usize,
) -> Result<()> {
    let (n, h) = pk.dims();
    assert!(
        c.len() == batch * h
            && m.len() == batch * h
            && xs.len() == steps * batch * n
            && out.len() == steps * batch * h,
        "reduced-precision forward: buffer sizes"
    );
    if steps == 0 || batch == 0 {
        return Ok(());
    }
    let flops = batch as f64 * 8.0 * (n + h) as f64 * h as f64;
    let pool = par
        .pool()
        .filter(|_| flops >= par.min_flops && par.threads > 1);
    let threads = pool.map_or(1, |_| par.threads);
    let per = batch.div_ceil(threads).div_ceil(ROWS) * ROWS;
    let nchunks = batch.div_ceil(per);
    let per_words = pk.scratch_words(per);
    let need = crate::error::checked_elements(&[nchunks, per_words], "reduced-precision scratch")?;
    if scratch.len() < need {
        scratch
            .try_reserve_exact(need - scratch.len())
            .map_err(|_| crate::error::Error::Alloc {
                what: "reduced-precision scratch".into(),
                bytes: need.saturating_mul(8),
            })?;
        scratch.resize(need, 0);
    }
    let io = Io {
        xs: xs.as_ptr(),
        out: out.as_mut_ptr(),
    };
    let run = |(k, ((c, m), s)): ChunkParts| {
        let _fp = super::fp_env::DenormalGuard::new();
        let ch = Chunk {
            rows: c.len() / h,
            // Row k·per of step 0; later steps are batch rows further on.
            xs: io.xs().wrapping_add(k * per * n),
            out: io.out().wrapping_add(k * per * h),
            c,
            m,
            batch,
            steps,
        };
        // SAFETY: the kernel was checked available when the model was
        // built (the only way to get a packing); the chunk holds its own
        // rows (sizes asserted above) and per_words ≥ scratch_words(rows)
        // words (rows ≤ per).
        unsafe { pk.run_chunk(ch, s) }
    };
    let scratch = &mut scratch[..need];
    match pool {
        Some(pool) if nchunks > 1 => pool.install(|| {
            use rayon::prelude::*;
            c.par_chunks_mut(per * h)
                .zip(m.par_chunks_mut(per * h))
                .zip(scratch.par_chunks_mut(per_words))
                .enumerate()
                .try_for_each(run)
        }),
        _ => c
            .chunks_mut(per * h)
            .zip(m.chunks_mut(per * h))
            .zip(scratch.chunks_mut(per_words))
            .enumerate()
            .try_for_each(run),
    }
}

/// Chunk k's `(k, ((c, m), scratch))`, as the zipped iterators give it.
type ChunkParts<'a> = (usize, ((&'a mut [f32], &'a mut [f32]), &'a mut [u64]));

/// The call's input and output, shared by the chunks.
#[derive(Clone, Copy)]
struct Io {
    xs: *const f32,
    out: *mut f32,
}

// SAFETY: chunk k only ever offsets these pointers to its own rows (see
// `forward`): reads of `xs` are shared, writes to `out` disjoint, and the
// call that owns both outlives every chunk.
unsafe impl Sync for Io {}

impl Io {
    // Methods, so that closures capture the whole (Sync) `Io`, not its
    // pointer fields.
    fn xs(&self) -> *const f32 {
        self.xs
    }
    fn out(&self) -> *mut f32 {
        self.out
    }
}

/// CPUID.(EAX=7, ECX=0):EDX bits: AMX-BF16 22, AMX-TILE 24, AMX-INT8 25.
#[cfg(target_arch = "x86_64")]
pub(crate) fn amx_feature(bit: u32) -> bool {
    let leaf = std::arch::x86_64::__cpuid_count(7, 0);
    leaf.edx & (1 << 24) != 0 && leaf.edx & (1 << bit) != 0
}

/// AMX-BF16's CPUID bit, for [`amx_ready`].
pub(crate) const AMX_BF16: u32 = 22;
/// AMX-INT8's CPUID bit, for [`amx_ready`].
pub(crate) const AMX_INT8: u32 = 25;

/// Whether the CPU has AMX-TILE and the AMX feature `bit`, and Linux
/// granted this process the tile data state (`arch_prctl(ARCH_REQ_XCOMP_PERM,
/// XFEATURE_XTILEDATA)`, asked once). A refusal means no AMX, not an
/// error: the vector kernels run instead.
pub(crate) fn amx_ready(bit: u32) -> bool {
    static PERMITTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    {
        if !amx_feature(bit) {
            return false;
        }
        *PERMITTED.get_or_init(|| {
            const SYS_ARCH_PRCTL: i64 = 158;
            const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
            const XFEATURE_XTILEDATA: i64 = 18;
            let ret: i64;
            // SAFETY: the arch_prctl system call with these arguments only
            // changes which extended states the kernel lets this process
            // use; it touches no memory of ours. `syscall` clobbers rcx
            // and r11.
            unsafe {
                std::arch::asm!(
                    "syscall",
                    inlateout("rax") SYS_ARCH_PRCTL => ret,
                    in("rdi") ARCH_REQ_XCOMP_PERM,
                    in("rsi") XFEATURE_XTILEDATA,
                    lateout("rcx") _,
                    lateout("r11") _,
                    options(nostack),
                );
            }
            ret == 0
        })
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
    {
        let _ = (bit, &PERMITTED);
        false
    }
}

/// AMX tile set-up shared by the bf16 and int8 kernels: palette 1, eight
/// tiles of 16 rows × 64 bytes.
#[cfg(target_arch = "x86_64")]
pub(crate) mod amx {
    use std::arch::asm;

    #[repr(C, align(64))]
    struct TileConfig([u8; 64]);

    const CONFIG: TileConfig = {
        let mut c = [0u8; 64];
        c[0] = 1;
        let mut t = 0;
        while t < 8 {
            c[16 + 2 * t] = 64; // colsb, little-endian u16
            c[48 + t] = 16; // rows
            t += 1;
        }
        TileConfig(c)
    };

    /// Loads the tile configuration on this thread.
    ///
    /// # Safety
    /// The CPU has AMX-TILE and the process may use tile data.
    pub(crate) unsafe fn configure() {
        // SAFETY: reads the 64-byte config; the caller's contract.
        unsafe { asm!("ldtilecfg [{0}]", in(reg) CONFIG.0.as_ptr(), options(nostack, readonly)) };
    }

    /// Releases the tile state on this thread.
    ///
    /// # Safety
    /// After [`configure`] on this thread.
    pub(crate) unsafe fn release() {
        // SAFETY: the caller's contract.
        unsafe { asm!("tilerelease", options(nostack, nomem)) };
    }
}
