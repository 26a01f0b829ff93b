//! The dimensions a kernel runs with: compile-time constants for a
//! generated kernel ([`Dims`]), or the packed model's for the generic one
//! ([`Runtime`]); [`Shape`] resolves either into the sizes the loops use.

use super::packed::Packed;
use super::simd::Simd;

/// Compile-time dimensions of a specialized kernel (a type the generator
/// writes), or [`Runtime`] for the generic kernel, which reads them from `Packed`.
/// Kernels resolve them through [`Shape::of`], which folds to constants
/// when `KNOWN`.
pub(crate) trait Dims: Copy + 'static {
    /// Whether the constants below hold (else: read the packed model).
    const KNOWN: bool;
    const N_IN: usize = 0;
    const H: usize = 0;
    /// Head size, 0 for none.
    const HEAD: usize = 0;
    const PEEPHOLE: bool = false;
}

/// The generic kernel's dimensions: whatever the model has.
#[derive(Clone, Copy)]
pub(crate) struct Runtime;

impl Dims for Runtime {
    const KNOWN: bool = false;
}

/// Dimensions as a kernel uses them (constants when `D::KNOWN`; the
/// variants' switches are always off for generated kernels).
#[derive(Clone, Copy)]
pub(crate) struct Shape {
    pub(crate) n_in: usize,
    pub(crate) h: usize,
    /// Recurrent size: the projection size, or `h`.
    pub(crate) r: usize,
    pub(crate) diag: bool,
    pub(crate) proj: bool,
    pub(crate) proj_panels: usize,
    pub(crate) cell_clip: Option<f32>,
    pub(crate) proj_clip: Option<f32>,
    pub(crate) clip: Option<f32>,
    pub(crate) input_forget: bool,
    pub(crate) n_out: usize,
    pub(crate) hp: usize,
    pub(crate) hw: usize,
    pub(crate) peephole: bool,
    pub(crate) head: bool,
    pub(crate) gate_panels: usize,
    pub(crate) wide_panels: usize,
    pub(crate) head_panels: usize,
}

impl Shape {
    #[inline(always)]
    pub(crate) fn of<S: Simd, D: Dims>(pk: &Packed) -> Shape {
        let u = S::LANES;
        let (n_in, h, n_out, peephole, head) = if D::KNOWN {
            (
                D::N_IN,
                D::H,
                if D::HEAD > 0 { D::HEAD } else { D::H },
                D::PEEPHOLE,
                D::HEAD > 0,
            )
        } else {
            (pk.n_in, pk.h, pk.n_out, pk.vo.is_some(), pk.head.is_some())
        };
        let gate_panels = h.div_ceil(u);
        let hp = gate_panels * u;
        let v = if D::KNOWN {
            Variants::default()
        } else {
            pk.variants
        };
        let r = if v.proj { pk.r } else { h };
        Shape {
            n_in,
            h,
            r,
            diag: v.diag,
            proj: v.proj,
            proj_panels: r.div_ceil(4 * u),
            cell_clip: v.cell_clip,
            proj_clip: v.proj_clip,
            clip: v.clip,
            input_forget: v.input_forget,
            n_out,
            hp,
            hw: hp.max(h.div_ceil(4 * u) * 4 * u),
            peephole,
            head,
            gate_panels,
            wide_panels: h.div_ceil(4 * u),
            head_panels: n_out.div_ceil(4 * u),
        }
    }
}

/// The variants' run-time switches (all off for the seed's cell).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Variants {
    pub(crate) diag: bool,
    pub(crate) proj: bool,
    pub(crate) cell_clip: Option<f32>,
    pub(crate) proj_clip: Option<f32>,
    pub(crate) clip: Option<f32>,
    pub(crate) input_forget: bool,
}
