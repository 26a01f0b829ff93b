//! The shape-specialized kernels: the table the generator
//! (`codegen/`, run by build.rs) writes, the kernel bodies a row can name,
//! and [`entry`], the function every row (and the generic kernel) points
//! at. A model uses a row when its shape, variant and ISA match one;
//! otherwise the generic kernel runs.

use std::marker::PhantomData;

use super::cell;
use super::isa::{Arch, Isa, WithArch};
use super::job::{Job, KernelFn};
use super::layout::Dims;
use super::packing::{PackFormat, PanelLayout};
use crate::config::{LstmConfig, Peephole};

/// The environment variable a dependent crate sets to add shapes at build
/// time (the generator's grammar: `<n_in>x<hidden>[h<head>][p]`, comma
/// separated, `only:` to drop the defaults).
pub(crate) const SHAPES_ENV: &str = "LSTM_KERNELS_SHAPES";

/// What a kernel body is (and the first word of its name).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BodyKind {
    /// `cell::run`: register-blocked GEMM tiles with the fused epilogue.
    Blocked,
    /// `small::lanes`: register-resident, a sample's gates across lanes.
    Lanes,
    /// `small::batch`: register-resident, samples across lanes.
    Batch,
}

/// A kernel body: the loop nest that runs a chunk through the sequence,
/// in vectors `S` (the packing's), inside the entry of ISA `A`.
pub(crate) trait KernelBody<A: Arch, S: Arch>: 'static {
    const KIND: BodyKind;

    /// Runs `job` with dimensions `D`.
    ///
    /// # Safety
    /// Runs inside `A::vectorize`, whose features include `S`'s; `job` was
    /// built by the driver for a model packed in [`format_of::<S>`] whose
    /// dimensions are `D`'s (both checked by [`entry`]).
    unsafe fn run<D: Dims>(job: &Job);
}

/// The packing a body reads in vectors `S`: the blocked microkernel's own
/// layout; plain panels for the register-resident bodies.
pub(crate) const fn format_of<S: Arch>(kind: BodyKind) -> PackFormat {
    PackFormat {
        lanes: S::LANES,
        layout: match kind {
            BodyKind::Blocked => S::LAYOUT,
            BodyKind::Lanes | BodyKind::Batch => PanelLayout::Plain,
        },
    }
}

/// The blocked body: any shape, any variant.
pub(crate) struct Blocked;

impl<A: Arch, S: Arch> KernelBody<A, S> for Blocked {
    const KIND: BodyKind = BodyKind::Blocked;
    #[inline(always)]
    unsafe fn run<D: Dims>(job: &Job) {
        // SAFETY: forwarded from the caller.
        unsafe { cell::run::<S, D>(job) }
    }
}

/// `K`'s body for `A` in vectors `S` with dimensions `D`, as work for
/// `A`'s entry.
struct Call<'a, 'j, A, S, D, K>(&'a Job<'j>, Types<(A, S, D, K)>);

/// A zero-sized stand-in for type parameters a value does not hold.
type Types<T> = PhantomData<fn() -> T>;

impl<A0: Arch, S: Arch, D: Dims, K: KernelBody<A0, S>> WithArch for Call<'_, '_, A0, S, D, K> {
    type Output = ();
    #[inline(always)]
    unsafe fn run<A: Arch>(self) {
        // SAFETY: inside A's entry (A = A0, see `entry`); `entry` checked
        // the packing and shape.
        unsafe { K::run::<D>(self.0) }
    }
}

/// The entry of every kernel ([`KernelFn`]): checks that the model is
/// packed as the body reads it, for `A`, and with `D`'s dimensions — the
/// invariants the body's memory accesses rest on — then runs the body
/// compiled with `A`'s target features.
///
/// # Safety
/// `job` was built by `driver::forward`.
pub(crate) unsafe fn entry<A: Arch, S: Arch, D: Dims, K: KernelBody<A, S>>(job: &Job) {
    let pk = job.packed;
    assert_eq!(pk.kernel.isa.isa(), A::ISA, "kernel entry: ISA");
    assert_eq!(
        pk.format(),
        format_of::<S>(K::KIND),
        "kernel entry: packing"
    );
    assert!(
        !D::KNOWN
            || (pk.n_in == D::N_IN
                && pk.h == D::H
                && pk.n_out == if D::HEAD > 0 { D::HEAD } else { D::H }
                && pk.head.is_some() == (D::HEAD > 0)
                && pk.vo.is_some() == D::PEEPHOLE
                && pk.r == D::H
                && pk.diag.is_none()),
        "kernel entry: model shape"
    );
    // SAFETY: the model's kernel ISA is a `Supported` (checked available
    // when the model was built) and equals `A`'s.
    unsafe { A::vectorize(Call::<A, S, D, K>(job, PhantomData)) }
}

/// One kernel: a row of the generated table (or the generic kernel's,
/// with run-time dimensions).
#[derive(Debug)]
pub(crate) struct KernelRow {
    /// `<body>_<shape>__<isa>_f32x<lanes>`, e.g. `lanes_7x5h3p__avx512_f32x8`.
    pub(crate) name: &'static str,
    /// The ISA whose entry it runs in.
    pub(crate) isa: Isa,
    pub(crate) n_in: usize,
    pub(crate) hidden: usize,
    pub(crate) head: Option<usize>,
    pub(crate) peephole: bool,
    pub(crate) body: BodyKind,
    /// What it reads; the batch vector of a `Batch` body is the ISA's own.
    pub(crate) format: PackFormat,
    /// f32 lanes of the vectors it computes in.
    pub(crate) lanes: usize,
    pub(crate) run: KernelFn,
}

impl KernelRow {
    /// The row of body `K` in vectors `S` with dimensions `D`, dispatched
    /// on `A` (a `Batch` body computes in `A`'s vectors).
    pub(crate) const fn new<A: Arch, S: Arch, D: Dims, K: KernelBody<A, S>>(
        name: &'static str,
    ) -> KernelRow {
        KernelRow {
            name,
            isa: A::ISA,
            n_in: D::N_IN,
            hidden: D::H,
            head: if D::HEAD > 0 { Some(D::HEAD) } else { None },
            peephole: D::PEEPHOLE,
            body: K::KIND,
            format: format_of::<S>(K::KIND),
            lanes: match K::KIND {
                BodyKind::Batch => A::LANES,
                BodyKind::Blocked | BodyKind::Lanes => S::LANES,
            },
            run: entry::<A, S, D, K>,
        }
    }

    /// The shape tag, as in the generator's list: `7x5h3p`.
    pub(crate) fn tag(&self) -> String {
        let mut t = format!("{}x{}", self.n_in, self.hidden);
        if let Some(p) = self.head {
            t += &format!("h{p}");
        }
        if self.peephole {
            t.push('p');
        }
        t
    }

    /// The name its fields imply (a test checks the generator's names).
    #[cfg(test)]
    fn expected_name(&self) -> String {
        let body = match self.body {
            BodyKind::Blocked => "blocked",
            BodyKind::Lanes => "lanes",
            BodyKind::Batch => "batch",
        };
        format!("{body}_{}__{}_f32x{}", self.tag(), self.isa, self.lanes)
    }

    /// Release checks of what the small bodies' stack buffers rest on.
    fn check(&self) {
        if self.body != BodyKind::Blocked {
            assert!(
                self.hidden <= self.format.lanes && self.lanes <= 16,
                "{}: a small body needs H within one vector",
                self.name
            );
        }
        if self.body == BodyKind::Batch {
            assert!(
                self.n_in <= SMALL_BATCH_MAX_IN,
                "{}: more inputs than the batch layout's buffer",
                self.name
            );
        }
    }
}

/// The generated table (`GENERATED_X86`, `GENERATED_PORTABLE`), the
/// `Dims` types its rows name, and the constants the generator shares with
/// the kernels.
mod generated {
    include!(concat!(env!("OUT_DIR"), "/kernels.rs"));
}

use generated::GENERATED_PORTABLE;
#[cfg(target_arch = "x86_64")]
use generated::GENERATED_X86;
#[cfg(test)]
use generated::GENERATOR_ISAS;
pub(crate) use generated::SMALL_BATCH_MAX_IN;

/// The generated source, for review (`lstm codegen`).
pub(crate) const SOURCE: &str = include_str!(concat!(env!("OUT_DIR"), "/kernels.rs"));

/// Every generated row, x86 ones first.
fn rows() -> impl Iterator<Item = &'static KernelRow> {
    #[cfg(target_arch = "x86_64")]
    let x86 = GENERATED_X86.iter();
    #[cfg(not(target_arch = "x86_64"))]
    let x86 = [].iter();
    x86.chain(GENERATED_PORTABLE.iter())
}

/// The generated kernels for this model on `isa`: the main one and, for a
/// small cell, its batch-in-lanes variant.
pub(crate) fn find(
    cfg: &LstmConfig,
    isa: Isa,
) -> Option<(&'static KernelRow, Option<&'static KernelRow>)> {
    if !cfg.is_seed_family() {
        return None;
    }
    let matches = |k: &&KernelRow| {
        k.isa == isa
            && k.n_in == cfg.n_input
            && k.hidden == cfg.n_hidden
            && k.head == cfg.head
            && k.peephole == (cfg.peephole == Peephole::Matrix)
    };
    let main = rows().filter(matches).find(|k| k.body != BodyKind::Batch)?;
    let batch = rows().filter(matches).find(|k| k.body == BodyKind::Batch);
    main.check();
    if let Some(b) = batch {
        b.check();
        assert_eq!(
            b.format, main.format,
            "{}: packing differs from {}",
            b.name, main.name
        );
    }
    Some((main, batch))
}

/// The shapes build.rs generated kernels for (tags like `7x5h3p`).
pub fn specialized_shapes() -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    for k in rows() {
        let tag = k.tag();
        if !v.contains(&tag) {
            v.push(tag);
        }
    }
    v
}

/// Names of every generated kernel.
pub fn specialized_kernels() -> Vec<&'static str> {
    rows().map(|k| k.name).collect()
}

/// The generated source of the specialized kernels (for review).
pub fn generated_source() -> &'static str {
    SOURCE
}

/// The configuration of a generated shape (a tag from
/// [`specialized_shapes`], e.g. `7x5h3p`), or an error naming the shapes
/// there are.
pub fn config_from_shape_tag(tag: &str) -> Result<LstmConfig, String> {
    let k = rows().find(|k| k.tag() == tag).ok_or_else(|| {
        format!(
            "no generated kernel for shape `{tag}` (generated: {})",
            specialized_shapes().join(", ")
        )
    })?;
    let mut cfg = LstmConfig::new(k.n_in, k.hidden);
    if let Some(p) = k.head {
        cfg = cfg.with_head(p);
    }
    if k.peephole {
        cfg = cfg.with_peephole(Peephole::Matrix);
    }
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generator_isa_table_equals_the_runtime_one() {
        let runtime: Vec<(&str, usize)> = Isa::ALL.iter().map(|i| (i.name(), i.lanes())).collect();
        assert_eq!(GENERATOR_ISAS.to_vec(), runtime);
    }

    #[test]
    fn every_row_is_consistent() {
        for k in rows() {
            assert_eq!(k.name, k.expected_name(), "row name misstates what runs");
            k.check();
            let cfg = config_from_shape_tag(&k.tag()).unwrap();
            let (main, batch) = find(&cfg, k.isa).expect("every row is found");
            assert!(std::ptr::eq(main, k) || batch.is_some_and(|b| std::ptr::eq(b, k)));
        }
        assert!(
            config_from_shape_tag("3x3x3")
                .unwrap_err()
                .contains("generated:")
        );
    }
}
