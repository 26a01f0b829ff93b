//! Packing: weights rearranged once, at model construction, into the panels
//! the microkernels stream.
//!
//! A *panel* is `rows × 4` SIMD vectors of `U` lanes each, contiguous and
//! 64-byte aligned: for every row `k`, the four vectors of that row follow
//! each other. What the four vectors hold depends on the panel kind:
//!
//! * gate panels (`[n_in or H] × 4H` gate weights): panel `p` covers hidden
//!   units `p·U .. p·U+U`, and vector `g` of each row holds gate `g`
//!   (i, f, c̃, o) of those units — so a tile's accumulators hold all four
//!   gates of the same units and the epilogue can update the cell in
//!   registers. An optional bias row comes first, so accumulators start
//!   from it.
//! * wide panels (`v_o`, `w_h`): panel `p` covers output columns
//!   `p·4U .. p·4U+4U`, vector `v` holding columns `p·4U + v·U ..`.
//!
//! Columns past the end of the matrix are zero, so kernels always run full
//! width and only mask their final stores.
//!
//! *Split* panels ([`PanelLayout::Split`], for the AVX2 microkernel) store
//! the body — the rows after the bias row — as two contiguous halves
//! instead: vectors 0–1 of every row, then vectors 2–3 of every row, so a
//! microkernel that makes one pass per half streams contiguous memory.
//!
//! Which lanes and layout a model is packed in is the kernel's decision
//! ([`PackFormat`], from the kernel chosen in `engine::packed`); kernels
//! check it on entry.

use crate::error::{Result, try_filled};

/// How a panel's body (the rows after the bias row) is laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PanelLayout {
    /// Row after row, the 4 vectors of a row together.
    Plain,
    /// Vectors 0–1 of every row, then vectors 2–3 of every row.
    Split,
}

/// What a kernel reads: panels of vectors of `lanes` floats in `layout`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PackFormat {
    pub(crate) lanes: usize,
    pub(crate) layout: PanelLayout,
}

/// One 64-byte-aligned block of 16 floats (the allocation unit).
#[derive(Clone, Copy, Debug)]
#[repr(C, align(64))]
struct Block([f32; 16]);

/// A zero-initialised, 64-byte-aligned float buffer.
#[derive(Clone, Debug)]
pub(crate) struct AlignedBuf {
    blocks: Vec<Block>,
    len: usize,
}

impl AlignedBuf {
    pub(crate) fn zeros(len: usize) -> Self {
        AlignedBuf {
            blocks: vec![Block([0.0; 16]); len.div_ceil(16)],
            len,
        }
    }

    /// As [`AlignedBuf::zeros`], but memory the system refuses is an
    /// [`Error::Alloc`] naming `what` instead of an abort.
    pub(crate) fn try_zeros(len: usize, what: &str) -> Result<Self> {
        let blocks = try_filled(len.div_ceil(16), Block([0.0; 16]), what)?;
        Ok(AlignedBuf { blocks, len })
    }

    pub(crate) fn as_slice(&self) -> &[f32] {
        // SAFETY: `Block` is `repr(C)` around `[f32; 16]` with no padding
        // (64 bytes, align 64), so `blocks` is `16 · blocks.len() ≥ len`
        // contiguous, initialised f32s.
        unsafe { std::slice::from_raw_parts(self.blocks.as_ptr().cast::<f32>(), self.len) }
    }

    pub(crate) fn as_mut_slice(&mut self) -> &mut [f32] {
        // SAFETY: as in `as_slice`, and `&mut self` makes the borrow unique.
        unsafe { std::slice::from_raw_parts_mut(self.blocks.as_mut_ptr().cast::<f32>(), self.len) }
    }
}

/// Which columns the four vectors of a panel row hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PanelKind {
    /// Vector `g` = gate `g` of units `p·U..`; the source has `4·H` columns.
    Gates {
        /// Hidden units H.
        h: usize,
    },
    /// Vector `v` = columns `p·4U + v·U ..`; the source has `cols` columns.
    Wide {
        /// Columns of the source matrix.
        cols: usize,
    },
}

/// A packed matrix: `n_panels` panels of `rows` (plus a bias row when
/// `has_bias`) × `4·U` floats.
#[derive(Clone, Debug)]
pub(crate) struct Panels {
    /// Lanes per vector and body layout.
    pub(crate) format: PackFormat,
    /// Reduction length K (rows of the source matrix).
    pub(crate) k: usize,
    /// Whether each panel starts with a bias row.
    pub(crate) has_bias: bool,
    /// Number of panels.
    pub(crate) n_panels: usize,
    data: AlignedBuf,
}

impl Panels {
    /// Packs the `k × cols` row-major `src` (columns mapped by `kind`), with
    /// `bias` (one value per source column) as a leading row if given, in
    /// `format`.
    pub(crate) fn pack(
        src: &[f32],
        k: usize,
        kind: PanelKind,
        bias: Option<&[f32]>,
        format: PackFormat,
    ) -> Result<Self> {
        let u = format.lanes;
        let halves = format.layout == PanelLayout::Split;
        let (cols, n_panels) = match kind {
            PanelKind::Gates { h } => (4 * h, h.div_ceil(u)),
            PanelKind::Wide { cols } => (cols, cols.div_ceil(4 * u)),
        };
        assert_eq!(src.len(), k * cols, "packing: source shape");
        let rows = k + usize::from(bias.is_some());
        let panel_len = rows * 4 * u;
        let mut data = AlignedBuf::try_zeros(n_panels * panel_len, "packed weights")?;
        let out = data.as_mut_slice();
        let col_of = |p: usize, v: usize, l: usize| -> Option<usize> {
            match kind {
                PanelKind::Gates { h } => (p * u + l < h).then_some(v * h + p * u + l),
                PanelKind::Wide { cols } => {
                    (p * 4 * u + v * u + l < cols).then_some(p * 4 * u + v * u + l)
                }
            }
        };
        for p in 0..n_panels {
            for row in 0..rows {
                for v in 0..4 {
                    for l in 0..u {
                        let Some(col) = col_of(p, v, l) else { continue };
                        let value = match (bias, row) {
                            (Some(b), 0) => b[col],
                            (Some(_), r) => src[(r - 1) * cols + col],
                            (None, r) => src[r * cols + col],
                        };
                        let at = match (bias, row) {
                            (Some(_), 0) => v * u + l,
                            _ => {
                                let front = if bias.is_some() { 4 * u } else { 0 };
                                let r = row - usize::from(bias.is_some());
                                if halves {
                                    front + (v / 2) * k * 2 * u + r * 2 * u + (v % 2) * u + l
                                } else {
                                    front + r * 4 * u + v * u + l
                                }
                            }
                        };
                        out[p * panel_len + at] = value;
                    }
                }
            }
        }
        Ok(Panels {
            format,
            k,
            has_bias: bias.is_some(),
            n_panels,
            data,
        })
    }

    /// Floats per panel.
    pub(crate) fn panel_len(&self) -> usize {
        (self.k + usize::from(self.has_bias)) * 4 * self.format.lanes
    }

    /// Panel `p` (bias row first if any).
    pub(crate) fn panel(&self, p: usize) -> &[f32] {
        let n = self.panel_len();
        &self.data.as_slice()[p * n..(p + 1) * n]
    }

    /// Bytes of packed data.
    pub(crate) fn bytes(&self) -> usize {
        self.data.as_slice().len() * 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fmt(lanes: usize, layout: PanelLayout) -> PackFormat {
        PackFormat { lanes, layout }
    }

    #[test]
    fn gate_panels_interleave_gates_of_the_same_units() {
        // k = 2 rows, h = 3 units, U = 2 lanes → 2 panels, the last half empty.
        let h = 3;
        let src: Vec<f32> = (0..2 * 4 * h).map(|v| v as f32 + 1.0).collect();
        let bias: Vec<f32> = (0..4 * h).map(|v| -(v as f32) - 1.0).collect();
        let p = Panels::pack(
            &src,
            2,
            PanelKind::Gates { h },
            Some(&bias),
            fmt(2, PanelLayout::Plain),
        )
        .unwrap();
        assert_eq!(p.n_panels, 2);
        assert_eq!(p.panel_len(), 3 * 8);
        let p0 = p.panel(0);
        // Bias row: gate g, unit l → bias[g·h + l].
        assert_eq!(
            &p0[..8],
            &[-1.0, -2.0, -4.0, -5.0, -7.0, -8.0, -10.0, -11.0]
        );
        // Row 1 (source row 0): src[0][g·h + l].
        assert_eq!(&p0[8..16], &[1.0, 2.0, 4.0, 5.0, 7.0, 8.0, 10.0, 11.0]);
        // Panel 1 holds unit 2 and zero padding.
        let p1 = p.panel(1);
        assert_eq!(&p1[16..24], &[15.0, 0.0, 18.0, 0.0, 21.0, 0.0, 24.0, 0.0]);
        assert_eq!(p.panel(0).as_ptr() as usize % 64, 0);
    }

    #[test]
    fn wide_panels_cover_consecutive_columns() {
        let cols = 5;
        let src: Vec<f32> = (0..3 * cols).map(|v| v as f32).collect();
        let p = Panels::pack(
            &src,
            3,
            PanelKind::Wide { cols },
            None,
            fmt(1, PanelLayout::Plain),
        )
        .unwrap();
        assert_eq!(p.n_panels, 2);
        assert_eq!(&p.panel(0)[4..8], &[5.0, 6.0, 7.0, 8.0]);
        assert_eq!(&p.panel(1)[4..8], &[9.0, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn split_panels_store_each_half_contiguously() {
        // k = 3 rows, h = 2 units, U = 2 lanes: 1 panel of bias + 3 rows.
        let h = 2;
        let src: Vec<f32> = (0..3 * 4 * h).map(|v| v as f32 + 1.0).collect();
        let bias: Vec<f32> = (0..4 * h).map(|v| -(v as f32) - 1.0).collect();
        let plain = Panels::pack(
            &src,
            3,
            PanelKind::Gates { h },
            Some(&bias),
            fmt(2, PanelLayout::Plain),
        )
        .unwrap();
        let split = Panels::pack(
            &src,
            3,
            PanelKind::Gates { h },
            Some(&bias),
            fmt(2, PanelLayout::Split),
        )
        .unwrap();
        let (a, b) = (plain.panel(0), split.panel(0));
        assert_eq!(&a[..8], &b[..8], "the bias row is not split");
        for r in 0..3 {
            for v in 0..4 {
                for l in 0..2 {
                    let want = a[8 + r * 8 + v * 2 + l];
                    let got = b[8 + (v / 2) * 3 * 4 + r * 4 + (v % 2) * 2 + l];
                    assert_eq!(got, want, "row {r} vector {v} lane {l}");
                }
            }
        }
    }
}
