//! A model's weights packed for the kernel chosen to run it. The kernel is
//! chosen first — a generated one for this shape and ISA, or the generic
//! one — and its [`PackFormat`] decides how every matrix is packed, so the
//! layout is always the one the kernel reads (each kernel checks it on
//! entry).

use super::isa::{Supported, WithArch};
use super::job::KernelFn;
use super::layout::{Runtime, Variants};
use super::packing::{AlignedBuf, PackFormat, PanelKind, Panels};
use super::registry::{self, Blocked, BodyKind, KernelRow};
use super::tuning::BATCH_MIN_ROWS;
use crate::config::{LstmConfig, Peephole};
use crate::error::{Error, Result};
use crate::weights::LstmWeights;

/// Which kernel a model runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum KernelChoice {
    /// A generated, shape-specialized kernel when one matches, else generic.
    #[default]
    Auto,
    /// The generic kernel (any shape).
    Generic,
    /// A generated kernel; an error if none matches the model.
    Specialized,
}

impl std::str::FromStr for KernelChoice {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(KernelChoice::Auto),
            "generic" => Ok(KernelChoice::Generic),
            "specialized" => Ok(KernelChoice::Specialized),
            other => Err(Error::Invalid(format!(
                "unknown kernel `{other}` (expected auto, generic or specialized)"
            ))),
        }
    }
}

/// The kernel a model runs, chosen once at construction.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Kernel {
    /// `generic`, or the generated kernel's name.
    pub(crate) name: &'static str,
    pub(crate) isa: Supported,
    /// How the weights must be packed for it.
    pub(crate) format: PackFormat,
    /// Rows per register block of the ISA's blocked microkernel: the unit
    /// the planner splits batches in.
    pub(crate) mr: usize,
    pub(crate) run: KernelFn,
    /// A register-resident small kernel: never split by hidden units.
    pub(crate) small: bool,
    /// A small kernel's batch-in-lanes variant (name, entry), for chunks
    /// of at least `tuning::BATCH_MIN_ROWS` rows.
    pub(crate) batch: Option<(&'static str, KernelFn)>,
    /// A generated kernel (not the generic one).
    pub(crate) generated: bool,
}

impl Kernel {
    /// The kernel a chunk of `rows` rows runs (name, entry, whether it is
    /// the batch-in-lanes variant): a small kernel's batch-in-lanes variant
    /// from `tuning::BATCH_MIN_ROWS` rows, else the kernel itself.
    pub(crate) fn for_rows(&self, rows: usize) -> (&'static str, KernelFn, bool) {
        match self.batch {
            Some((name, run)) if rows >= BATCH_MIN_ROWS => (name, run, true),
            _ => (self.name, self.run, false),
        }
    }
}

/// The generic kernel of an ISA: the blocked body with run-time
/// dimensions, in the ISA's own vectors and layout — the row the generated
/// table would have for a shape it cannot know — and the ISA's register
/// block.
struct Generic;

impl WithArch for Generic {
    type Output = (KernelRow, usize);
    #[inline(always)]
    unsafe fn run<A: super::isa::Arch>(self) -> Self::Output {
        (KernelRow::new::<A, A, Runtime, Blocked>("generic"), A::MR)
    }
}

impl Kernel {
    /// `Auto` takes a generated kernel when the shape, variant and ISA
    /// match; `Specialized` requires one.
    pub(crate) fn choose(cfg: &LstmConfig, isa: Supported, choice: KernelChoice) -> Result<Kernel> {
        let found = match choice {
            KernelChoice::Generic => None,
            KernelChoice::Auto => registry::find(cfg, isa.isa()),
            KernelChoice::Specialized => Some(registry::find(cfg, isa.isa()).ok_or_else(|| {
                Error::Unsupported(format!(
                    "no specialized kernel for n_in={} hidden={} head={} peephole={} on {} (generated shapes: {}; add one with {} at build time)",
                    cfg.n_input,
                    cfg.n_hidden,
                    cfg.head.map_or("none".into(), |p| p.to_string()),
                    cfg.peephole.name(),
                    isa.isa(),
                    registry::specialized_shapes().join(", "),
                    registry::SHAPES_ENV
                ))
            })?),
        };
        let (generic, mr) = isa.dispatch(Generic);
        Ok(match found {
            Some((main, batch)) => Kernel {
                name: main.name,
                isa,
                format: main.format,
                mr,
                run: main.run,
                small: main.body == BodyKind::Lanes,
                batch: batch.map(|b| (b.name, b.run)),
                generated: true,
            },
            None => Kernel {
                name: generic.name,
                isa,
                format: generic.format,
                mr,
                run: generic.run,
                small: false,
                batch: None,
                generated: false,
            },
        })
    }
}

/// Weights packed for one kernel.
#[derive(Clone, Debug)]
pub(crate) struct Packed {
    pub(crate) kernel: Kernel,
    pub(crate) n_in: usize,
    pub(crate) h: usize,
    /// Recurrent size (projection size, or h).
    pub(crate) r: usize,
    pub(crate) variants: Variants,
    /// Diagonal peepholes `[3][hp]` (i, f, o), zero-padded per unit.
    pub(crate) diag: Option<AlignedBuf>,
    /// Projection `W_p` as wide panels over the R outputs.
    pub(crate) proj: Option<Panels>,
    pub(crate) n_out: usize,
    /// Hidden units padded to whole gate panels.
    pub(crate) hp: usize,
    /// Hidden units padded to whole wide panels (≥ hp): `o_pre` row length.
    pub(crate) hw: usize,
    /// Input gate weights with the bias row.
    pub(crate) wx: Panels,
    /// Recurrent gate weights.
    pub(crate) wh: Panels,
    pub(crate) vo: Option<Panels>,
    pub(crate) head: Option<Panels>,
}

impl Packed {
    /// Chooses the kernel (see [`KernelChoice`]) and packs the weights in
    /// the format it reads. `w` has been validated against `cfg`.
    pub(crate) fn build(
        cfg: &LstmConfig,
        w: &LstmWeights,
        isa: Supported,
        choice: KernelChoice,
    ) -> Result<Packed> {
        let kernel = Kernel::choose(cfg, isa, choice)?;
        let format = kernel.format;
        let u = format.lanes;
        let (n, h, r) = (cfg.n_input, cfg.n_hidden, cfg.n_recurrent());
        let cols = 4 * h;
        // The run-time forget bias is folded into the packed bias (one more
        // term of the same sum; the error bound counts it).
        let mut bias = w.bias.clone();
        bias[h..2 * h]
            .iter_mut()
            .for_each(|b| *b += cfg.forget_bias);
        let pack = |src: &[f32], k: usize, kind: PanelKind, bias: Option<&[f32]>| {
            Panels::pack(src, k, kind, bias, format)
        };
        let wx = pack(&w.gates[..n * cols], n, PanelKind::Gates { h }, Some(&bias))?;
        let wh = pack(&w.gates[n * cols..], r, PanelKind::Gates { h }, None)?;
        let hp = wh.n_panels * u;
        let diag = w
            .peep_diag
            .as_ref()
            .map(|d| {
                let mut buf = AlignedBuf::try_zeros(3 * hp, "packed peepholes")?;
                let out = buf.as_mut_slice();
                for g in 0..3 {
                    out[g * hp..g * hp + h].copy_from_slice(&d[g * h..(g + 1) * h]);
                }
                Ok::<_, Error>(buf)
            })
            .transpose()?;
        let proj = match (cfg.projection, &w.w_p) {
            (Some(r), Some(wp)) => Some(pack(wp, h, PanelKind::Wide { cols: r }, None)?),
            _ => None,
        };
        let variants = Variants {
            diag: diag.is_some(),
            proj: proj.is_some(),
            cell_clip: cfg.cell_clip,
            proj_clip: cfg.proj_clip,
            clip: cfg.clip,
            input_forget: cfg.input_forget,
        };
        let vo = match (cfg.peephole, &w.v_o) {
            (Peephole::Matrix, Some(v)) => Some(pack(v, h, PanelKind::Wide { cols: h }, None)?),
            _ => None,
        };
        let head = match (&w.w_h, &w.b_h) {
            (Some(wh), Some(bh)) => {
                Some(pack(wh, h, PanelKind::Wide { cols: bh.len() }, Some(bh))?)
            }
            _ => None,
        };
        Ok(Packed {
            kernel,
            n_in: n,
            h,
            r,
            variants,
            diag,
            proj,
            n_out: cfg.n_output(),
            hp,
            hw: hp.max(h.div_ceil(4 * u) * 4 * u),
            wx,
            wh,
            vo,
            head,
        })
    }

    /// The packing every matrix of this model is in.
    pub(crate) fn format(&self) -> PackFormat {
        self.kernel.format
    }

    /// Bytes of packed weights.
    pub(crate) fn bytes(&self) -> usize {
        self.wx.bytes()
            + self.wh.bytes()
            + self.vo.as_ref().map_or(0, Panels::bytes)
            + self.head.as_ref().map_or(0, Panels::bytes)
    }
}
