//! The public model: an immutable [`Lstm`] built once from a config and
//! weights (`Send + Sync`, shareable across threads), and a per-caller
//! [`LstmState`] holding `c`, `m` and the scratch a step needs, so that
//! stepping never allocates.

use std::sync::Arc;

use crate::config::LstmConfig;
use crate::engine::KernelSet;
use crate::engine::bf16::{Bf16Kernel, Bf16Packed};
use crate::engine::int8::{Int8Kernel, Int8Packed};
use crate::engine::{
    self, AlignedBuf, DEFAULT_MIN_PARALLEL_FLOPS, Isa, KernelChoice, Packed, Parallel, StateBufs,
    Supported, Threads,
};
use crate::error::{Error, Result, check_len, try_zeros};
use crate::tuning::measure::{self, TuneReport};
use crate::tuning::{
    CpuFacts, ModelPlan, PLANS_ENV, PlanEntry, PlanFile, PlanKey, PlanRules, PlanSource, Plans,
    Tuning,
};
use crate::weights::Int8Gates;
use crate::weights::LstmWeights;

/// An LSTM cell ready to run: validated config and weights, and how many
/// threads to spread a batch over.
///
/// ```
/// use lstm_kernels::{Lstm, LstmConfig, LstmWeights, Peephole};
/// let cfg = LstmConfig::new(7, 5).with_head(3).with_peephole(Peephole::Matrix);
/// let model = Lstm::new(cfg, LstmWeights::random(&cfg, 42)?)?;
/// let mut state = model.new_state(10)?;          // batch of 10, zeros
/// let xs = vec![0.5f32; 4 * 10 * 7];              // [T=4, B=10, n_in=7]
/// let mut ys = vec![0.0f32; 4 * 10 * 3];          // [T, B, n_out=3]
/// model.forward(&mut state, &xs, &mut ys)?;
/// assert!(ys.iter().all(|y| y.abs() < 1.0));      // h = tanh(..)
/// # Ok::<(), lstm_kernels::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Lstm {
    config: LstmConfig,
    weights: LstmWeights,
    packed: Packed,
    threads: usize,
    pool: Option<Arc<Threads>>,
    min_parallel_flops: f64,
    kernel_choice: KernelChoice,
    precision: Precision,
    /// The reduced-precision packing, with precision bf16 or int8.
    lowp: Option<Arc<LowPacked>>,
    /// Int8 gates given as they are ([`Lstm::with_int8_gates`]): the int8
    /// weights of every int8 packing.
    int8_gates: Option<Arc<Int8Gates>>,
    /// Measured or loaded plans (the heuristic one otherwise).
    plans: Arc<Plans>,
}

/// A reduced-precision packing of the weights.
#[derive(Debug)]
enum LowPacked {
    Bf16(Bf16Packed),
    Int8(Int8Packed),
}

impl LowPacked {
    fn kernel_name(&self) -> &'static str {
        match self {
            LowPacked::Bf16(b) => b.kernel.name(),
            LowPacked::Int8(b) => b.kernel.name(),
        }
    }

    fn bytes(&self) -> usize {
        match self {
            LowPacked::Bf16(b) => b.bytes(),
            LowPacked::Int8(b) => b.bytes(),
        }
    }
}

/// The arithmetic a model runs in. The cell state `c`, the bias, the
/// peepholes and the activations are always f32; the precision is that of
/// the gate GEMM's operands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Precision {
    /// f32 weights and operands (the default).
    #[default]
    F32,
    /// bf16 weights (rounded to nearest even at pack time), `x` and `m`
    /// rounded to bf16 as they enter the GEMM, f32 accumulation: AMX-BF16
    /// tiles where the CPU has them, else AVX512-BF16, else a portable
    /// scalar path. The error bound: [`crate::reference::ErrorModel::for_precision`].
    Bf16,
    /// int8 weights (symmetric per gate column, separately for the input
    /// and recurrent rows), `x` and `m` quantized per row and step to int8
    /// (symmetric), exact i32 accumulation, f32 dequantization and
    /// epilogue: AMX-INT8 tiles where the CPU has them, else AVX512-VNNI,
    /// else a portable scalar path. The error bound:
    /// [`crate::reference::ErrorModel::for_precision`].
    Int8,
}

impl Precision {
    /// `f32`, `bf16` or `int8`.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::Int8 => "int8",
        }
    }
}

impl std::str::FromStr for Precision {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "f32" => Ok(Precision::F32),
            "bf16" => Ok(Precision::Bf16),
            "int8" => Ok(Precision::Int8),
            other => Err(Error::Invalid(format!(
                "unknown precision `{other}` (expected f32, bf16 or int8)"
            ))),
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Per-caller state for one batch: `c` (`[batch, H]`) and the recurrent
/// `m` (`[batch, R]`, R = projection size or H) plus scratch. Create it with [`Lstm::new_state`] or [`Lstm::state_from`].
#[derive(Clone, Debug)]
pub struct LstmState {
    batch: usize,
    n_hidden: usize,
    n_recurrent: usize,
    c: Vec<f32>,
    m: Vec<f32>,
    /// Kernel scratch (hoisted input GEMM, peephole pre-activations, the
    /// second `m` buffer); grows on first use, then is reused.
    scratch: AlignedBuf,
    /// The reduced-precision engines' scratch (operands, sums), per chunk;
    /// grows on first use, then is reused.
    lowp_scratch: Vec<u64>,
}

impl LstmState {
    /// Batch size.
    pub fn batch(&self) -> usize {
        self.batch
    }
    /// Hidden size H.
    pub fn n_hidden(&self) -> usize {
        self.n_hidden
    }
    /// Cell state `c`, `[batch, H]` row-major.
    pub fn c(&self) -> &[f32] {
        &self.c
    }
    /// Size of the recurrent state R (projection size, or H).
    pub fn n_recurrent(&self) -> usize {
        self.n_recurrent
    }
    /// Recurrent output `m` (`r` with a projection), `[batch, R]` row-major.
    pub fn m(&self) -> &[f32] {
        &self.m
    }
    /// Mutable `c` (same layout), e.g. to set a sample's state.
    pub fn c_mut(&mut self) -> &mut [f32] {
        &mut self.c
    }
    /// Mutable `m` (same layout).
    pub fn m_mut(&mut self) -> &mut [f32] {
        &mut self.m
    }
    /// Resets `c` and `m` to zero.
    pub fn reset(&mut self) {
        self.c.fill(0.0);
        self.m.fill(0.0);
    }
}

/// Threads per core [`Lstm::with_threads`] accepts at most.
const THREADS_PER_CORE: usize = 4;

/// The cores this process may use.
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The most threads a model may use: 4 per core this process may use
/// (oversubscribing further only slows a call down).
pub fn max_threads() -> usize {
    THREADS_PER_CORE * cores()
}

/// A pool of `threads` threads (0: one per core; at most [`max_threads`]),
/// or none for one thread, and the thread count.
pub(crate) fn thread_pool(threads: usize) -> Result<(Option<Arc<Threads>>, usize)> {
    let n = if threads == 0 { cores() } else { threads };
    let limit = max_threads();
    if n > limit {
        return Err(Error::Invalid(format!(
            "threads: {n} is more than the limit of {limit} ({THREADS_PER_CORE} per core on {} cores)",
            cores()
        )));
    }
    let pool = if n > 1 {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .map_err(|e| Error::Invalid(format!("cannot start {n} threads: {e}")))?;
        // The split's helpers: the calling thread runs one part.
        Some(Arc::new(Threads::new(pool)))
    } else {
        None
    };
    Ok((pool, n))
}

impl Lstm {
    /// Validates `weights` against `config`, picks the instruction set
    /// (the best this CPU has, or the one forced by `LSTM_KERNELS_ISA`) and
    /// packs the weights for it. Single-threaded; see [`Lstm::with_threads`].
    pub fn new(config: LstmConfig, weights: LstmWeights) -> Result<Self> {
        weights.validate(&config)?;
        let isa = Isa::from_env()
            .map_err(Error::Unsupported)?
            .unwrap_or_else(Isa::detect);
        let packed = Packed::build(&config, &weights, Supported::new(isa)?, KernelChoice::Auto)?;
        // Read the CPU facts (and run the FMA probe) once per process, here
        // rather than in the first call.
        CpuFacts::get();
        Ok(Lstm {
            config,
            weights,
            packed,
            threads: 1,
            pool: None,
            min_parallel_flops: DEFAULT_MIN_PARALLEL_FLOPS,
            kernel_choice: KernelChoice::Auto,
            precision: Precision::F32,
            lowp: None,
            int8_gates: None,
            plans: Arc::new(Plans::default()),
        }
        .with_env_plans())
    }

    /// Runs the model in `precision` (see [`Precision`]); the weights are
    /// converted once, here, from the f32 weights (which the model keeps:
    /// `Precision::F32` returns to exactly the f32 model), except that
    /// int8 runs the int8 gates given by [`Lstm::with_int8_gates`] if any. bf16 and int8
    /// pick the fastest kernel this CPU has (or the one
    /// `LSTM_KERNELS_BF16=amx|avx512bf16|portable` /
    /// `LSTM_KERNELS_INT8=amx|avx512vnni|portable` forces). Variants the
    /// reduced precisions do not compute yet (the matrix peephole, a
    /// projection, a head) are an [`Error::Config`] naming them.
    pub fn with_precision(mut self, precision: Precision) -> Result<Self> {
        match precision {
            Precision::F32 => self.lowp = None,
            Precision::Bf16 => {
                let kernel = Bf16Kernel::choose()?;
                let pk = Bf16Packed::build(&self.config, &self.weights, kernel)?;
                self.lowp = Some(Arc::new(LowPacked::Bf16(pk)));
            }
            Precision::Int8 => {
                let kernel = Int8Kernel::choose()?;
                let pk = self.int8_packed(kernel)?;
                self.lowp = Some(Arc::new(LowPacked::Int8(pk)));
            }
        }
        self.precision = precision;
        Ok(self)
    }

    /// Runs the model in bf16 on the kernel named `kernel` (`amx`,
    /// `avx512bf16`, `portable`, or a full name as [`Lstm::kernel_name`]
    /// gives it); an error if this CPU cannot run it. For tests and
    /// benchmarks that compare the kernels.
    pub fn with_bf16_kernel(mut self, kernel: &str) -> Result<Self> {
        let kernel = Bf16Kernel::from_name(kernel)?;
        let pk = Bf16Packed::build(&self.config, &self.weights, kernel)?;
        self.lowp = Some(Arc::new(LowPacked::Bf16(pk)));
        self.precision = Precision::Bf16;
        Ok(self)
    }

    /// Runs the model in int8 on the kernel named `kernel` (`amx`,
    /// `avx512vnni`, `portable`, or a full name as [`Lstm::kernel_name`]
    /// gives it); an error if this CPU cannot run it. For tests and
    /// benchmarks that compare the kernels. Int8 gates given before
    /// ([`Lstm::with_int8_gates`]) are the weights it runs; otherwise the
    /// model's f32 gates quantized.
    pub fn with_int8_kernel(mut self, kernel: &str) -> Result<Self> {
        let kernel = Int8Kernel::from_name(kernel)?;
        let pk = self.int8_packed(kernel)?;
        self.lowp = Some(Arc::new(LowPacked::Int8(pk)));
        self.precision = Precision::Int8;
        Ok(self)
    }

    /// The model's int8 weights packed for `kernel`: the int8 gates given
    /// ([`Lstm::with_int8_gates`]), or else its f32 gates quantized.
    fn int8_packed(&self, kernel: Int8Kernel) -> Result<Int8Packed> {
        match &self.int8_gates {
            Some(g) => Int8Packed::from_gates(&self.config, &self.weights, g, kernel),
            None => Int8Packed::build(&self.config, &self.weights, kernel),
        }
    }

    /// Runs the model in int8 with these gate weights as they are (for
    /// weights a framework already quantized; see [`Int8Gates`]), on the
    /// kernel [`Lstm::with_precision`] would choose. The bias and
    /// peepholes are the model's; its f32 gates stay what `Precision::F32`
    /// runs, so build the model from [`Int8Gates::dequantize`] for the two
    /// to agree. The gates become the model's int8 weights: every int8
    /// path ([`Lstm::with_precision`]`(Int8)`, [`Lstm::with_int8_kernel`])
    /// runs them, also after a detour through f32 or bf16 (the model keeps
    /// a copy, `(n_in + R)·4H` bytes and the scales). An error if the
    /// shapes do not fit the config or a scale is negative or not finite.
    pub fn with_int8_gates(mut self, gates: &Int8Gates) -> Result<Self> {
        let kernel = Int8Kernel::choose()?;
        let pk = Int8Packed::from_gates(&self.config, &self.weights, gates, kernel)?;
        self.lowp = Some(Arc::new(LowPacked::Int8(pk)));
        self.int8_gates = Some(Arc::new(gates.clone()));
        self.precision = Precision::Int8;
        Ok(self)
    }

    /// The int8 kernels this CPU can run, fastest first.
    pub fn int8_kernels() -> Vec<&'static str> {
        Int8Kernel::ALL
            .into_iter()
            .filter(|k| k.available())
            .map(Int8Kernel::name)
            .collect()
    }

    /// The bf16 kernels this CPU can run, fastest first.
    pub fn bf16_kernels() -> Vec<&'static str> {
        Bf16Kernel::ALL
            .into_iter()
            .filter(|k| k.available())
            .map(Bf16Kernel::name)
            .collect()
    }

    /// The precision the model runs in.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Sets the work per step (gate FLOPs for the whole batch) below which a
    /// call stays on one thread; default 2e6. `0.0` always uses every
    /// thread (tests do this to exercise chunking on small shapes).
    pub fn with_parallel_threshold(mut self, flops: f64) -> Self {
        self.min_parallel_flops = flops;
        self
    }

    /// Re-packs the model for `isa`; an error if this CPU lacks it.
    pub fn with_isa(mut self, isa: Isa) -> Result<Self> {
        let choice = self.kernel_choice;
        self.packed = Packed::build(&self.config, &self.weights, Supported::new(isa)?, choice)?;
        Ok(self)
    }

    /// Chooses the kernel: `Auto` (default) runs a generated,
    /// shape-specialized kernel when build.rs made one for this shape,
    /// variant and ISA; `Generic` always runs the generic one;
    /// `Specialized` is an error when none exists.
    pub fn with_kernel(mut self, choice: KernelChoice) -> Result<Self> {
        let isa = self.packed.kernel.isa;
        self.packed = Packed::build(&self.config, &self.weights, isa, choice)?;
        self.kernel_choice = choice;
        Ok(self)
    }

    /// Chooses how the plan is made (see [`Tuning`]): `Heuristic` drops
    /// measured and loaded plans; `Measure { batch }` times candidate plans
    /// for `batch` rows on this model's threads (well under 2 s) and keeps
    /// the fastest for calls of about that batch. Results never depend on
    /// the plan.
    pub fn with_tuning(mut self, tuning: Tuning) -> Result<Self> {
        match tuning {
            Tuning::Heuristic => {
                self.plans = Arc::new(Plans::default());
            }
            Tuning::Measure { batch } => {
                let report = self.tune(batch)?;
                let entry = self.plan_entry(batch, report.chosen);
                Arc::make_mut(&mut self.plans).insert(entry, PlanSource::Measured { batch });
            }
        }
        Ok(self)
    }

    /// Times candidate plans for `batch` rows on this model's threads and
    /// reports every timing and the fastest (what [`Tuning::Measure`] and
    /// `lstm tune` run). The model is not changed.
    pub fn tune(&self, batch: usize) -> Result<TuneReport> {
        if self.lowp.is_some() {
            return Err(Error::Unsupported(
                "plans tune the f32 engine; tune before with_precision".into(),
            ));
        }
        measure::tune(self, batch, self.heuristic_rules())
    }

    /// The plan-file entry for `rules` measured at `batch` rows on this
    /// model (its CPU, ISA, shape and threads).
    pub fn plan_entry(&self, batch: usize, rules: PlanRules) -> PlanEntry {
        PlanEntry {
            key: self.plan_key(batch, self.threads),
            rules,
        }
    }

    fn plan_key(&self, batch: usize, threads: usize) -> PlanKey {
        let c = &self.config;
        PlanKey {
            cpu: CpuFacts::get().model_name.clone(),
            isa: self.isa(),
            n_in: c.n_input,
            hidden: c.n_hidden,
            recurrent: c.n_recurrent(),
            head: c.head.unwrap_or(0),
            peephole: c.peephole.name().to_string(),
            batch,
            threads,
        }
    }

    /// Loads a plan file's entries for this CPU, ISA and shape (any batch
    /// and thread count; a call uses the entry for its threads and the
    /// nearest batch). Entries for other CPUs or shapes are not used. An
    /// unreadable or corrupt file is an error naming it; the model is then
    /// unchanged.
    pub fn with_plan_file(mut self, path: impl AsRef<std::path::Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = PlanFile::load(path)?;
        let mine = self.plan_key(0, 0);
        let plans = Arc::make_mut(&mut self.plans);
        for e in file.entries {
            let shape = PlanKey {
                batch: 0,
                threads: 0,
                ..e.key.clone()
            };
            if shape == mine {
                let source = PlanSource::File {
                    path: path.display().to_string(),
                };
                plans.insert(e, source);
            }
        }
        Ok(self)
    }

    /// Runs every call with `rules` (checked), whatever the batch: for
    /// tests and benchmarks comparing plans.
    pub fn with_plan_rules(mut self, rules: PlanRules) -> Result<Self> {
        rules.check()?;
        Arc::make_mut(&mut self.plans).given = Some(rules);
        Ok(self)
    }

    /// Loads the plan file [`PLANS_ENV`] names, if set; a file that cannot
    /// be read or parsed is reported on stderr (once per process) and
    /// ignored.
    fn with_env_plans(self) -> Self {
        let Some(path) = std::env::var_os(PLANS_ENV).filter(|p| !p.is_empty()) else {
            return self;
        };
        let fallback = self.clone();
        match self.with_plan_file(&path) {
            Ok(m) => m,
            Err(e) => {
                static WARNED: std::sync::Once = std::sync::Once::new();
                WARNED.call_once(|| {
                    // Not `eprintln!`, which panics on a closed stderr.
                    use std::io::Write as _;
                    let _ = writeln!(
                        std::io::stderr(),
                        "lstm-kernels: {PLANS_ENV}: {e}; using the heuristic plans"
                    );
                });
                fallback
            }
        }
    }

    /// The heuristic plan for this model on this CPU.
    fn heuristic_rules(&self) -> PlanRules {
        let c = &self.config;
        let k = c.n_input.max(c.n_recurrent());
        let wh_bytes = 16usize
            .saturating_mul(c.n_recurrent())
            .saturating_mul(c.n_hidden);
        let gate_bytes = 16usize
            .saturating_mul(c.n_input.saturating_add(c.n_recurrent()))
            .saturating_mul(c.n_hidden);
        PlanRules::heuristic(CpuFacts::get(), k, self.isa(), wh_bytes, gate_bytes)
    }

    /// The rules a call of `batch` rows runs with (no allocation).
    fn rules_for(&self, batch: usize) -> PlanRules {
        if let Some(r) = self.plans.given {
            return r;
        }
        match self.plans.entry_for(batch, self.threads) {
            Some((e, _)) => e.rules,
            None => self.heuristic_rules(),
        }
    }

    /// The plan a call of `batch` rows runs with, and where it came from.
    pub fn plan_for(&self, batch: usize) -> ModelPlan {
        let cpu = CpuFacts::get().model_name.clone();
        if let Some(rules) = self.plans.given {
            return ModelPlan {
                rules,
                source: PlanSource::Given,
                cpu,
            };
        }
        match self.plans.entry_for(batch, self.threads) {
            Some((e, src)) => ModelPlan {
                rules: e.rules,
                source: src.clone(),
                cpu,
            },
            None => ModelPlan {
                rules: self.heuristic_rules(),
                source: PlanSource::Heuristic,
                cpu,
            },
        }
    }

    /// The model's plan: the one measured (or loaded) for its threads, at
    /// the batch it was measured at, or else the heuristic one. A call
    /// uses [`Lstm::plan_for`] its batch.
    pub fn plan(&self) -> ModelPlan {
        let tuned = self
            .plans
            .entries
            .iter()
            .find(|(e, _)| e.key.threads == self.threads)
            .map(|(e, _)| e.key.batch);
        self.plan_for(tuned.unwrap_or(64))
    }

    /// Runs `xs` like [`Lstm::forward`] but with `rules` (for the measured
    /// mode).
    pub(crate) fn forward_with_rules(
        &self,
        state: &mut LstmState,
        xs: &[f32],
        out: &mut [f32],
        rules: &PlanRules,
    ) -> Result<()> {
        self.check_state(state)?;
        let (h, r) = (self.config.n_hidden, self.config.n_recurrent());
        let rows = state.batch;
        let steps = xs.len() / (rows * self.config.n_input).max(1);
        check_len("xs", xs.len(), &[steps, rows, self.config.n_input])?;
        check_len("output", out.len(), &[steps, rows, self.config.n_output()])?;
        let bufs = StateBufs {
            c: &mut state.c[..rows * h],
            m: &mut state.m[..rows * r],
            scratch: &mut state.scratch,
        };
        let par = Parallel {
            rules: *rules,
            ..self.parallel(rows)
        };
        engine::forward(&self.packed, par, bufs, xs, out, rows, steps)
    }

    /// The instruction set the kernels run with.
    pub fn isa(&self) -> Isa {
        self.packed.kernel.isa.isa()
    }

    /// Bytes of the packed weights the kernels run: the bf16 or int8
    /// packing at those precisions, else the f32 one. Not counted: the f32
    /// packing a bf16/int8 model keeps (so that
    /// `with_precision(Precision::F32)` returns to it), the canonical
    /// weights ([`Lstm::weights`]), and the copy of int8 gates given by
    /// [`Lstm::with_int8_gates`].
    pub fn packed_bytes(&self) -> usize {
        match &self.lowp {
            Some(b) => b.bytes(),
            None => self.packed.bytes(),
        }
    }

    /// Spreads the batch over `threads` threads (its own pool); `0` means one
    /// per available core. Results are identical for every thread count.
    ///
    /// At most [`max_threads`] (4 per core): more is an error, returned
    /// before any thread is started.
    pub fn with_threads(self, threads: usize) -> Result<Self> {
        let (pool, n) = thread_pool(threads)?;
        Ok(self.with_pool(pool, n))
    }

    /// Runs on `pool` (`threads` threads, or none): models of one stack
    /// share one pool.
    pub(crate) fn with_pool(mut self, pool: Option<Arc<Threads>>, threads: usize) -> Self {
        self.pool = pool;
        self.threads = threads;
        self
    }

    /// The configuration.
    pub fn config(&self) -> &LstmConfig {
        &self.config
    }

    /// The canonical weights the model was built from.
    pub fn weights(&self) -> &LstmWeights {
        &self.weights
    }

    /// Number of threads a call may use.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Name of the kernel that runs the cell: `generic` (packed panels,
    /// any shape) or a generated one, named for what runs:
    /// `<body>_<shape>__<isa>_f32x<lanes>`, e.g. `blocked_64x64__avx512_f32x16`
    /// or `lanes_7x5h3p__avx512_f32x8`. A small cell's kernel has a
    /// batch-in-lanes variant for chunks of 5 or more rows
    /// ([`Lstm::kernels_for_batch`] says which runs).
    pub fn kernel_name(&self) -> &'static str {
        match &self.lowp {
            Some(b) => b.kernel_name(),
            None => self.packed.kernel.name,
        }
    }

    /// The kernels a call with `batch` rows runs (one name per distinct
    /// kernel, in chunk order): [`Lstm::kernel_name`], or its
    /// batch-in-lanes variant for the chunks large enough for it. A batch
    /// that no call could run (0, or too large, as for
    /// [`Lstm::new_state`]) is an error.
    pub fn kernels_for_batch(&self, batch: usize) -> Result<Vec<&'static str>> {
        self.config.validate_batch(batch)?;
        if let Some(b) = &self.lowp {
            return Ok(vec![b.kernel_name()]);
        }
        let par = self.parallel(batch);
        Ok(engine::kernels_for_batch(&self.packed, par, batch))
    }

    /// Name of the instruction set the kernel uses.
    pub fn isa_name(&self) -> &'static str {
        self.isa().name()
    }

    /// A zero state for `batch` samples.
    pub fn new_state(&self, batch: usize) -> Result<LstmState> {
        self.config.validate_batch(batch)?;
        let (h, r) = (self.config.n_hidden, self.config.n_recurrent());
        Ok(LstmState {
            batch,
            n_hidden: h,
            n_recurrent: r,
            c: try_zeros(batch * h, "state c")?,
            m: try_zeros(batch * r, "state m")?,
            scratch: AlignedBuf::zeros(0),
            lowp_scratch: Vec::new(),
        })
    }

    /// Sizes `state`'s scratch for one-step calls of any batch up to its
    /// own, so that they never allocate (the scratch otherwise grows on
    /// the first call that needs more; a [`crate::StreamPool`] steps
    /// batches of any size up to its capacity).
    pub(crate) fn reserve_step_scratch(&self, state: &mut LstmState) -> Result<()> {
        let rows = state.batch;
        let too_large = || {
            Error::Invalid(format!(
                "the kernels' scratch for a step of {rows} rows is too large"
            ))
        };
        match &self.lowp {
            Some(b) => {
                let threads = self.threads.max(1);
                let need = match &**b {
                    LowPacked::Bf16(b) => engine::lowp_one_step_scratch_bound(b, threads, rows),
                    LowPacked::Int8(b) => engine::lowp_one_step_scratch_bound(b, threads, rows),
                }
                .ok_or_else(too_large)?;
                let s = &mut state.lowp_scratch;
                if s.len() < need {
                    s.try_reserve_exact(need - s.len())
                        .map_err(|_| Error::Alloc {
                            what: "reduced-precision scratch".into(),
                            bytes: need.saturating_mul(8),
                        })?;
                    s.resize(need, 0);
                }
            }
            None => {
                let need =
                    engine::one_step_scratch_bound(&self.packed, rows).ok_or_else(too_large)?;
                if state.scratch.as_slice().len() < need {
                    state.scratch = AlignedBuf::try_zeros(need, "step scratch")?;
                }
            }
        }
        Ok(())
    }

    /// A state for `batch` samples starting from `c` (`[batch, H]`) and `m`
    /// (`[batch, R]`).
    pub fn state_from(&self, batch: usize, c: &[f32], m: &[f32]) -> Result<LstmState> {
        let mut s = self.new_state(batch)?;
        let h = self.config.n_hidden;
        check_len("state c", c.len(), &[batch, h])?;
        check_len("state m", m.len(), &[batch, self.config.n_recurrent()])?;
        s.c.copy_from_slice(c);
        s.m.copy_from_slice(m);
        Ok(s)
    }

    fn check_state(&self, state: &LstmState) -> Result<()> {
        if state.n_hidden != self.config.n_hidden || state.n_recurrent != self.config.n_recurrent()
        {
            return Err(Error::Shape {
                tensor: "state".into(),
                expected: format!("[{}, {}]", state.batch, self.config.n_hidden),
                got: format!(
                    "[{}, {}] (a state made for another model)",
                    state.batch, state.n_hidden
                ),
            });
        }
        Ok(())
    }

    /// One timestep for the batch: `x` is `[batch, n_in]`, `out` receives
    /// `[batch, n_out]`; `state` is updated.
    pub fn step(&self, state: &mut LstmState, x: &[f32], out: &mut [f32]) -> Result<()> {
        self.check_state(state)?;
        check_len("x", x.len(), &[state.batch, self.config.n_input])?;
        check_len("output", out.len(), &[state.batch, self.config.n_output()])?;
        self.run(state, x, out, 1)
    }

    /// A time-major sequence: `xs` is `[T, batch, n_in]` (T is inferred from
    /// its length), `out` receives `[T, batch, n_out]`; `state` carries over
    /// from step to step and holds the final state afterwards.
    pub fn forward(&self, state: &mut LstmState, xs: &[f32], out: &mut [f32]) -> Result<()> {
        self.check_state(state)?;
        let (b, n, p) = (state.batch, self.config.n_input, self.config.n_output());
        let row = b * n;
        if !xs.len().is_multiple_of(row) {
            return Err(Error::Shape {
                tensor: "xs".into(),
                expected: format!("[T, {b}, {n}] (a multiple of {row} elements)"),
                got: format!("{} elements", xs.len()),
            });
        }
        let steps = xs.len() / row;
        check_len("output", out.len(), &[steps, b, p])?;
        self.run(state, xs, out, steps)
    }

    /// Runs `steps` steps for the first `rows` samples of `state` only
    /// (`xs` is `[steps, rows, n_in]`, `out` `[steps, rows, n_out]`): the
    /// sequence driver's way to run the samples still active.
    pub(crate) fn forward_prefix(
        &self,
        state: &mut LstmState,
        rows: usize,
        xs: &[f32],
        out: &mut [f32],
    ) -> Result<()> {
        let (h, r) = (self.config.n_hidden, self.config.n_recurrent());
        let steps = xs.len() / (rows * self.config.n_input);
        debug_assert!(rows <= state.batch && out.len() == steps * rows * self.config.n_output());
        self.run_rows(state, rows, h, r, xs, out, steps)
    }

    /// Runs `steps` steps through the kernels (lengths already checked).
    fn run(&self, state: &mut LstmState, xs: &[f32], out: &mut [f32], steps: usize) -> Result<()> {
        let (h, r) = (self.config.n_hidden, self.config.n_recurrent());
        self.run_rows(state, state.batch, h, r, xs, out, steps)
    }

    #[allow(clippy::too_many_arguments)]
    fn run_rows(
        &self,
        state: &mut LstmState,
        rows: usize,
        h: usize,
        r: usize,
        xs: &[f32],
        out: &mut [f32],
        steps: usize,
    ) -> Result<()> {
        if let Some(b) = &self.lowp {
            let (c, m) = (&mut state.c[..rows * h], &mut state.m[..rows * r]);
            let (par, s) = (self.parallel(rows), &mut state.lowp_scratch);
            return match &**b {
                LowPacked::Bf16(b) => engine::lowp_forward(b, par, s, c, m, xs, out, rows, steps),
                LowPacked::Int8(b) => engine::lowp_forward(b, par, s, c, m, xs, out, rows, steps),
            };
        }
        let bufs = StateBufs {
            c: &mut state.c[..rows * h],
            m: &mut state.m[..rows * r],
            scratch: &mut state.scratch,
        };
        engine::forward(
            &self.packed,
            self.parallel(rows),
            bufs,
            xs,
            out,
            rows,
            steps,
        )
    }

    fn parallel(&self, batch: usize) -> Parallel<'_> {
        Parallel {
            pool: self.pool.as_deref().map(|t| &t.pool),
            split_team: self.pool.as_deref(),
            threads: self.threads,
            min_flops: self.min_parallel_flops,
            rules: self.rules_for(batch),
        }
    }
}
