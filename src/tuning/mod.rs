//! Per-CPU plans: how the f32 engine blocks and spreads its work on this
//! machine. A [`PlanRules`] holds the knobs — the K block of the gate and
//! input GEMMs, the most rows per chunk, the hoisted input-GEMM block and
//! how two or more threads share a batch — none of which changes a
//! result: every plan computes every sum in the same order, so outputs are
//! bitwise identical across plans (and across thread counts, as always).
//!
//! Plans are chosen in one of two ways ([`Tuning`]):
//! * **heuristic** (the default): from facts about the CPU read at run
//!   time ([`CpuFacts`]: vendor, family/model, L1d and L2 sizes, whether
//!   512-bit FMAs issue at full rate);
//! * **measured**: [`Tuning::Measure`] times candidate plans on the real
//!   shape (well under 2 s) and keeps the fastest, like FFTW's wisdom.
//!   `lstm tune` does the same and writes a [`PlanFile`] keyed by CPU
//!   model and shape, which `Lstm::with_plan_file` or the environment
//!   variable [`PLANS_ENV`] loads, so a service tunes once per machine
//!   type.

mod cpu;
mod file;
pub(crate) mod measure;

pub use measure::{TUNE_BUDGET, TuneReport};

pub use cpu::CpuFacts;
pub use file::{PlanEntry, PlanFile, PlanKey};

use std::fmt;

use crate::engine::Isa;
use crate::error::{Error, Result};

/// The environment variable naming a plan file every model loads at
/// construction. A file that cannot be read or parsed is ignored with a
/// warning on stderr (the heuristic plan runs); `Lstm::with_plan_file`
/// returns the error instead.
pub const PLANS_ENV: &str = "LSTM_KERNELS_PLANS";

/// Most K rows per block a plan may name (larger is "whole K" anyway).
pub const MAX_KC: usize = 1 << 16;
/// Most rows per chunk a plan may name.
pub const MAX_CHUNK_ROWS: usize = 1 << 16;
/// Largest prefetch distance a plan may name, in panel rows.
pub const MAX_PREFETCH: usize = 1024;
/// Largest hoisted input-GEMM block a plan may name, in floats (64 MiB).
pub const MAX_HOIST_FLOATS: usize = 1 << 24;

/// How two or more threads share one call's batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Partition {
    /// By rows, except a batch of one register block, whose hidden units
    /// are split (the engine's long-standing rule).
    #[default]
    Auto,
    /// Always by rows (chunks of samples).
    Rows,
    /// By hidden units whenever the model allows it (no projection, not a
    /// register-resident small cell): every thread runs every row on its
    /// share of the units, meeting the others at a barrier each step.
    Units,
}

impl Partition {
    /// The name in plan files and `Display`.
    pub fn name(self) -> &'static str {
        match self {
            Partition::Auto => "auto",
            Partition::Rows => "rows",
            Partition::Units => "units",
        }
    }
}

impl std::str::FromStr for Partition {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(Partition::Auto),
            "rows" => Ok(Partition::Rows),
            "units" => Ok(Partition::Units),
            o => Err(Error::Invalid(format!(
                "unknown partition `{o}` (expected auto, rows or units)"
            ))),
        }
    }
}

/// The knobs of a plan (see the module docs). Results never depend on them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PlanRules {
    /// K rows per block of the gate and input GEMMs; 0 = the whole K. A
    /// block keeps its slice of a weight panel in L1 across the row blocks.
    pub kc: usize,
    /// Most rows per chunk: larger batches run as several chunks, one after
    /// another on each thread, so a step's input-GEMM results stay in L2.
    pub chunk_rows: usize,
    /// Hoisted input-GEMM block, in floats (the steps whose `x·W_x + b` are
    /// computed at once). Models whose weights are streamed from memory
    /// hoist at least 8 MiB whatever this says.
    pub hoist: usize,
    /// How threads share a batch.
    pub partition: Partition,
    /// Software prefetch distance of the AVX-512 microkernel, in panel
    /// rows ahead (0: none; the AVX2 microkernel always prefetches 32).
    pub prefetch: usize,
    /// Whether the recurrent gate GEMM fetches the next weight panel into
    /// L2 while the current one's later row blocks run (blocks 2 onwards
    /// each fetch an equal share; only with three or more row blocks), so
    /// that the next panel's first block does not wait on memory. Worth it
    /// where `W_h` is streamed from beyond L2 every step.
    pub ahead: bool,
    /// Whether a call whose hoisted input-GEMM block would be one step
    /// (every `step()` call, and long sequences whose block is one step)
    /// runs fused tiles instead: each tile adds `x·W_x` and `m·W_h` to the
    /// bias in registers and applies the epilogue, with no input GEMM into
    /// scratch and back, and the row blocks run through groups of panels
    /// that stay in L2. The same products in the same order: the same bits.
    pub fuse: bool,
}

impl Default for PlanRules {
    /// The engine's defaults before per-CPU plans (tuned on a Zen 5).
    fn default() -> Self {
        PlanRules {
            kc: 0,
            chunk_rows: 64,
            hoist: 1 << 16,
            partition: Partition::Auto,
            prefetch: 0,
            ahead: false,
            fuse: false,
        }
    }
}

impl PlanRules {
    /// An error naming the knob out of range.
    pub fn check(&self) -> Result<()> {
        let bad = |what: &str, v: usize, lo: usize, hi: usize| {
            Err(Error::Invalid(format!(
                "plan: {what} = {v} is out of range ({lo}..={hi})"
            )))
        };
        if self.kc > MAX_KC {
            return bad("kc", self.kc, 0, MAX_KC);
        }
        if self.chunk_rows == 0 || self.chunk_rows > MAX_CHUNK_ROWS {
            return bad("chunk", self.chunk_rows, 1, MAX_CHUNK_ROWS);
        }
        if self.hoist == 0 || self.hoist > MAX_HOIST_FLOATS {
            return bad("hoist", self.hoist, 1, MAX_HOIST_FLOATS);
        }
        if self.prefetch > MAX_PREFETCH {
            return bad("prefetch", self.prefetch, 0, MAX_PREFETCH);
        }
        Ok(())
    }

    /// The heuristic plan for a model with `k` = max(n_in, recurrent size)
    /// rows per weight panel, `lanes` f32 lanes per vector, on `cpu`.
    ///
    /// The rules, measured with `lstm bench --plan` A/B runs (see the
    /// README's per-CPU table). Where 512-bit FMAs issue at full rate
    /// (Intel Xeons, Zen 5 EPYC) the microkernel needs two panel loads per
    /// cycle, so:
    /// * it prefetches the panel 8 rows (2 KiB) ahead: +6–11% on an Intel
    ///   Xeon model 167 at H = 256–1024 (32 rows: +3–10%, 16: +3–7%); not
    ///   on AMD parts (Zen 5 with full-rate 512-bit FMAs, family 26
    ///   model 2), whose hardware prefetchers keep up: there no prefetch
    ///   was faster on 5 of the 6 issue-13 rows (`lstm bench --versus
    ///   prefetch=0,…`, 1 thread: B = 1 H = 256 +10.1%, 710 of 719 pairs
    ///   faster; B = 64 H = 256 +1.8%; H = 512 B = 64 +1.3%, B = 256
    ///   +1.0%; B = 32 H = 1024 +0.4%) and ~1% slower on B = 16 H = 256
    ///   (prefetch=8 1.008× and 1.012× in two runs); 2 threads within
    ///   −0…+1%;
    /// * the hoisted input-GEMM block is half of L2 (1 MiB of a 2 MiB L2),
    ///   a further +1–4%;
    /// * no K blocking: with the prefetch, K blocks of 128 rows were within
    ///   noise at H ≤ 512 and cost 7% at H = 1024 (the measured mode still
    ///   tries them);
    /// * where `W_h` (`wh_bytes`) is larger than half of L2, so that each
    ///   step reads it from L3 or memory again, the next `W_h` panel is
    ///   fetched ahead into L2 ([`PlanRules::ahead`]). On the model 167
    ///   (2 MiB L2), 1 thread: +3.6% at B = 32, H = 1024 (median of 16
    ///   interleaved runs, 14 faster); at H = 512, B = 64 7 of 8 runs
    ///   faster (+1–6%), B = 256 8 of 8 (+2–13%). At H = 256 (`W_h` 1 MiB)
    ///   it is not used: B = 16 was slower in 7 of 8 runs (up to 5%), and
    ///   B = 64 within noise. (Fetching the input GEMM's panels ahead too
    ///   cost 3–8% at H = 256–512; it does not.)
    /// * where the gate weights (`gate_bytes`, `W_x` and `W_h`) are
    ///   streamed from memory (over 16 MiB), two or more threads split the
    ///   hidden units ([`Partition::Units`]) whatever the batch: by rows,
    ///   every core reads all of `W_h` every step; by units, its share.
    ///   B = 32, H = 1024, 2 threads: units faster than rows in 6 of 6
    ///   interleaved runs (+2–16%), B = 12 5 of 5 (+4–13%), B = 128 within
    ///   noise; at H = 512 (not streamed) units were 3–8% slower.
    /// * where `W_h` fits in half of L2 (the same test), one-step blocks
    ///   run fused tiles ([`PlanRules::fuse`]). On the model 167,
    ///   `step()`-sized calls (T = 1), `lstm bench --versus` (alternating
    ///   pairs in one process, median speed ratio): H = 256 B = 1000 +7%
    ///   on 1 thread and +8% on 2 (146 of 150 and 185 of 185 pairs
    ///   faster), B = 64 +4%, B = 16 and 1 within noise. Where `W_h`
    ///   outgrows it, fused tiles lose the next-panel fetches: H = 512
    ///   B = 6, 256 within noise, H = 1024 B = 64 −4% (8 of 113 pairs
    ///   faster).
    ///
    /// Elsewhere (half-rate 512-bit FMAs as on Zen 4 and some Zen 5 hosts,
    /// or no AVX-512) the defaults stay, as measured on such a Zen 5, but
    /// for one rule:
    /// * where 512-bit FMAs are not full rate, the SIMD paths (AVX-512 and
    ///   AVX2) fuse one-step blocks whatever the size of `W_h` (nothing is
    ///   fetched ahead there to lose). On a Zen 4 EPYC (family 25 model
    ///   17, 1 MiB L2), `lstm bench --steps 1 --versus fuse=1` (paired):
    ///   AVX-512, 1 thread, H = 256: B = 1 +0.2% (within noise), B = 16
    ///   +1.3%, 64 +1.7%, 250 +4.7%, 1000 +4.2% (84 of 92 pairs faster);
    ///   2 threads B = 16 +2.1%, 250 +4.1%, 1000 +6.1% and +6.3%; H = 512
    ///   B = 64 +1.6%, B = 256 +2.4% (1 thread) and +3.1% (2); H = 1024
    ///   B = 32 +1.9%; AVX2 B = 1000 2 threads +9.4%, B = 64 +2.6%;
    ///   whole sequences (T = 32) within noise. Variants at H = 256, 2
    ///   threads: diagonal and matrix peepholes +5% at B = 1000, within
    ///   noise at B = 64; a projection (128) within noise; **a head
    ///   (128) at B = 1000 −1.6% (2 threads) and −1.8% (1 thread), fused
    ///   faster in only 40% of pairs** (+0.8% at B = 64), left to the
    ///   measured mode. The portable kernel does not fuse: fused, it was
    ///   19% slower (B = 64 and 1000).
    ///
    /// `k` is the panel's rows, for rules that depend on it (none today).
    pub fn heuristic(
        cpu: &CpuFacts,
        k: usize,
        isa: Isa,
        wh_bytes: usize,
        gate_bytes: usize,
    ) -> PlanRules {
        let _ = k;
        let mut r = PlanRules::default();
        if !cpu.full_rate_512 && isa != Isa::Portable {
            r.fuse = true;
        }
        if cpu.full_rate_512 && isa == Isa::Avx512 {
            r.prefetch = if cpu.vendor == "AuthenticAMD" { 0 } else { 8 };
            r.hoist = (cpu.l2_bytes / 2 / 4).clamp(1 << 14, 1 << 20);
            r.ahead = wh_bytes > cpu.l2_bytes / 2;
            r.fuse = !r.ahead;
            if gate_bytes > crate::engine::STREAMED_WEIGHTS {
                r.partition = Partition::Units;
            }
        }
        r
    }
}

impl fmt::Display for PlanRules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "kc={} chunk={} hoist={} partition={} prefetch={} ahead={} fuse={}",
            self.kc,
            self.chunk_rows,
            self.hoist,
            self.partition.name(),
            self.prefetch,
            u8::from(self.ahead),
            u8::from(self.fuse)
        )
    }
}

impl std::str::FromStr for PlanRules {
    type Err = Error;
    /// `kc=128,chunk=64,hoist=65536,partition=units,prefetch=16,ahead=1,fuse=1` (commas or spaces;
    /// knobs not named keep their defaults), or `default`.
    fn from_str(s: &str) -> Result<Self> {
        let mut r = PlanRules::default();
        for tok in s
            .split([',', ' '])
            .filter(|t| !t.is_empty() && *t != "default")
        {
            let (k, v) = tok
                .split_once('=')
                .ok_or_else(|| Error::Invalid(format!("plan: `{tok}` is not knob=value")))?;
            let num = || {
                v.parse::<usize>()
                    .map_err(|_| Error::Invalid(format!("plan: `{tok}` is not a number")))
            };
            match k {
                "kc" => r.kc = num()?,
                "chunk" => r.chunk_rows = num()?,
                "hoist" => r.hoist = num()?,
                "partition" => r.partition = v.parse()?,
                "prefetch" => r.prefetch = num()?,
                "ahead" | "fuse" => {
                    let on = match v {
                        "0" => false,
                        "1" => true,
                        _ => {
                            return Err(Error::Invalid(format!("plan: `{tok}`: {k} is 0 or 1")));
                        }
                    };
                    if k == "ahead" {
                        r.ahead = on;
                    } else {
                        r.fuse = on;
                    }
                }
                _ => {
                    return Err(Error::Invalid(format!(
                        "plan: unknown knob `{k}` (expected kc, chunk, hoist, partition, prefetch, ahead or fuse)"
                    )));
                }
            }
        }
        r.check()?;
        Ok(r)
    }
}

/// How a model chooses its plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Tuning {
    /// From the CPU's facts ([`PlanRules::heuristic`]).
    #[default]
    Heuristic,
    /// Time the candidates on this shape with `batch` rows (and the
    /// model's threads) and keep the fastest; well under 2 s.
    Measure {
        /// The batch size the service runs.
        batch: usize,
    },
}

/// Where a model's plan came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlanSource {
    /// [`PlanRules::heuristic`].
    Heuristic,
    /// [`Tuning::Measure`] at this batch size.
    Measured {
        /// The batch it was timed at.
        batch: usize,
    },
    /// [`crate::Lstm::with_plan_rules`].
    Given,
    /// An entry of a plan file.
    File {
        /// The file it was read from.
        path: String,
    },
}

impl PlanSource {
    /// `heuristic`, `measured` or `file` (the `tuning` field of
    /// `lstm bench --json`).
    pub fn name(&self) -> &'static str {
        match self {
            PlanSource::Heuristic => "heuristic",
            PlanSource::Measured { .. } => "measured",
            PlanSource::Given => "given",
            PlanSource::File { .. } => "file",
        }
    }
}

/// The plan a model runs ([`crate::Lstm::plan`]): its rules, where they
/// came from, and the CPU they were chosen for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelPlan {
    /// The knobs.
    pub rules: PlanRules,
    /// Heuristic, measured or from a file.
    pub source: PlanSource,
    /// The CPU's model name.
    pub cpu: String,
}

impl fmt::Display for ModelPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}", self.rules, self.source.name())?;
        match &self.source {
            PlanSource::Heuristic | PlanSource::Given => {}
            PlanSource::Measured { batch } => write!(f, " at batch {batch}")?,
            PlanSource::File { path } => write!(f, " {path}")?,
        }
        write!(f, ", {})", self.cpu)
    }
}

/// A model's plans: the heuristic one, and measured or loaded entries for
/// this model's CPU, ISA and shape at given batch sizes and thread counts.
#[derive(Clone, Debug, Default)]
pub(crate) struct Plans {
    /// Rules forced by `Lstm::with_plan_rules` (every call).
    pub(crate) given: Option<PlanRules>,
    pub(crate) entries: Vec<(PlanEntry, PlanSource)>,
}

impl Plans {
    /// The entry a call of `batch` rows on `threads` threads uses: the one
    /// for exactly that batch, else the nearest batch (by ratio) with the
    /// same threads; none if no entry has those threads.
    pub(crate) fn entry_for(
        &self,
        batch: usize,
        threads: usize,
    ) -> Option<&(PlanEntry, PlanSource)> {
        let dist = |b: usize| {
            let (a, b) = (batch.max(1) as f64, b.max(1) as f64);
            (a / b).ln().abs()
        };
        self.entries
            .iter()
            .filter(|(e, _)| e.key.threads == threads)
            .min_by(|(x, _), (y, _)| dist(x.key.batch).total_cmp(&dist(y.key.batch)))
    }

    /// Adds (or replaces) an entry.
    pub(crate) fn insert(&mut self, entry: PlanEntry, source: PlanSource) {
        self.entries.retain(|(e, _)| e.key != entry.key);
        self.entries.push((entry, source));
    }
}

#[cfg(test)]
mod tests {
    use super::{CpuFacts, Isa, Partition, PlanRules};

    fn cpu(full_rate_512: bool) -> CpuFacts {
        CpuFacts {
            vendor: "GenuineIntel".into(),
            family: 6,
            model: 167,
            model_name: "test".into(),
            l1d_bytes: 48 << 10,
            l2_bytes: 2 << 20,
            full_rate_512,
            fma_512_ratio: if full_rate_512 { 1.9 } else { 1.0 },
        }
    }

    /// The heuristic's rules where 512-bit FMAs are full rate: `W_h` within
    /// half of L2 fuses one-step blocks, beyond it fetches the next panel
    /// ahead instead; streamed weights split units. Elsewhere the defaults,
    /// but for fused one-step blocks on the SIMD paths.
    #[test]
    fn the_heuristic_plan_follows_the_cpu_and_the_weights() {
        let mib = 1 << 20;
        let small = PlanRules::heuristic(&cpu(true), 256, Isa::Avx512, mib, 2 * mib);
        assert!(small.fuse && !small.ahead && small.prefetch == 8);
        assert_eq!(small.hoist, mib / 4);
        let large = PlanRules::heuristic(&cpu(true), 512, Isa::Avx512, 4 * mib, 8 * mib);
        assert!(!large.fuse && large.ahead);
        assert_eq!(large.partition, Partition::Auto);
        let streamed = PlanRules::heuristic(&cpu(true), 1024, Isa::Avx512, 16 * mib, 32 * mib);
        assert_eq!(streamed.partition, Partition::Units);
        let amd = CpuFacts {
            vendor: "AuthenticAMD".into(),
            family: 26,
            model: 2,
            ..cpu(true)
        };
        let on_amd = PlanRules::heuristic(&amd, 512, Isa::Avx512, 4 * mib, 8 * mib);
        assert_eq!(
            on_amd,
            PlanRules {
                prefetch: 0,
                ..large
            }
        );
        // Full-rate CPUs' AVX2 and portable paths: the defaults.
        for isa in [Isa::Avx2, Isa::Portable] {
            assert_eq!(
                PlanRules::heuristic(&cpu(true), 256, isa, mib, 2 * mib),
                PlanRules::default()
            );
        }
        // Elsewhere the SIMD paths fuse one-step blocks (also where `W_h`
        // outgrows L2); the portable kernel does not.
        for isa in [Isa::Avx512, Isa::Avx2] {
            for wh in [mib, 16 * mib] {
                assert_eq!(
                    PlanRules::heuristic(&cpu(false), 256, isa, wh, 2 * wh),
                    PlanRules {
                        fuse: true,
                        ..PlanRules::default()
                    }
                );
            }
        }
        assert_eq!(
            PlanRules::heuristic(&cpu(false), 256, Isa::Portable, mib, 2 * mib),
            PlanRules::default()
        );
    }
}
