//! What gets generated: one [`Kernel`] per shape, ISA entry and body,
//! decided here (which body fits a shape, which vector it computes in) and
//! named for what runs.

use std::fmt;

use crate::SMALL_BATCH_MAX_IN;
use crate::shape::Shape;

/// An ISA entry of the crate (its `Isa` enum and vector types; a unit test
/// in the crate compares this table with the runtime's).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    Avx512,
    Avx2,
    Portable,
}

impl Isa {
    /// Every ISA, in the runtime's order.
    pub const ALL: [Isa; 3] = [Isa::Avx512, Isa::Avx2, Isa::Portable];

    /// The name in kernel names and `LSTM_KERNELS_ISA`.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Avx512 => "avx512",
            Isa::Avx2 => "avx2",
            Isa::Portable => "portable",
        }
    }

    /// The crate's vector type for it.
    pub fn rust_type(self) -> &'static str {
        match self {
            Isa::Avx512 => "Avx512",
            Isa::Avx2 => "Avx2",
            Isa::Portable => "Portable",
        }
    }

    /// f32 lanes per vector.
    pub fn lanes(self) -> usize {
        match self {
            Isa::Avx512 => 16,
            Isa::Avx2 | Isa::Portable => 8,
        }
    }

    /// Whether its types exist only on x86-64.
    pub fn x86(self) -> bool {
        self != Isa::Portable
    }
}

/// A kernel body of the crate (`registry::BodyKind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Body {
    /// Register-blocked GEMM tiles with the fused epilogue: any shape.
    Blocked,
    /// Register-resident, a sample's gates across lanes (H ≤ lanes).
    Lanes,
    /// Register-resident, samples across lanes (H ≤ lanes, few inputs).
    Batch,
}

impl Body {
    /// The first word of the kernel's name.
    pub fn name(self) -> &'static str {
        match self {
            Body::Blocked => "blocked",
            Body::Lanes => "lanes",
            Body::Batch => "batch",
        }
    }

    /// The crate's body type.
    pub fn rust_type(self) -> &'static str {
        match self {
            Body::Blocked => "Blocked",
            Body::Lanes => "Lanes",
            Body::Batch => "Batch",
        }
    }
}

/// One generated kernel: a body for a shape, in vectors of `vector`'s
/// type, running in `isa`'s entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kernel {
    pub shape: Shape,
    pub isa: Isa,
    /// The vector type the model is packed for.
    pub vector: Isa,
    pub body: Body,
}

impl Kernel {
    /// The lanes of the vectors it computes in: the packing vector's, but
    /// a batch body's groups use the ISA's own (widest) vectors.
    pub fn lanes(&self) -> usize {
        match self.body {
            Body::Batch => self.isa.lanes(),
            Body::Blocked | Body::Lanes => self.vector.lanes(),
        }
    }

    /// `<body>_<shape>__<isa>_f32x<lanes>`, e.g. `lanes_7x5h3p__avx512_f32x8`.
    pub fn name(&self) -> String {
        format!(
            "{}_{}__{}_f32x{}",
            self.body.name(),
            self.shape,
            self.isa.name(),
            self.lanes()
        )
    }

    /// The name of the shape's `Dims` type: `Dims7X5H3P`.
    pub fn dims_type(shape: &Shape) -> String {
        format!("Dims{}", shape.to_string().to_uppercase())
    }
}

/// The table row, as the crate's `KernelRow::new` call (wrapped the way
/// rustfmt wraps it when it is too long for one line).
impl fmt::Display for Kernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let call = format!(
            "KernelRow::new::<{}, {}, {}, {}>",
            self.isa.rust_type(),
            self.vector.rust_type(),
            Kernel::dims_type(&self.shape),
            self.body.rust_type()
        );
        let name = self.name();
        if 4 + call.len() + name.len() + 5 <= 100 {
            writeln!(f, "    {call}(\"{name}\"),")
        } else {
            writeln!(f, "    {call}(")?;
            writeln!(f, "        \"{name}\",")?;
            writeln!(f, "    ),")
        }
    }
}

/// Every kernel of `shapes`: for each shape and ISA, the blocked body, or
/// for a cell whose hidden units fit one vector the gates-in-lanes body
/// and (with at most [`SMALL_BATCH_MAX_IN`] inputs) the batch-in-lanes one.
/// A small cell that fits 8 lanes computes in 256-bit vectors even on
/// the AVX-512 entry: half-empty 512-bit vectors only cost.
pub fn kernels(shapes: &[Shape]) -> Vec<Kernel> {
    let mut out = Vec::new();
    for &shape in shapes {
        for isa in Isa::ALL {
            if shape.hidden > isa.lanes() {
                out.push(Kernel {
                    shape,
                    isa,
                    vector: isa,
                    body: Body::Blocked,
                });
                continue;
            }
            let vector = if isa == Isa::Avx512 && shape.hidden <= Isa::Avx2.lanes() {
                Isa::Avx2
            } else {
                isa
            };
            let small = |body| Kernel {
                shape,
                isa,
                vector,
                body,
            };
            out.push(small(Body::Lanes));
            if shape.n_in <= SMALL_BATCH_MAX_IN {
                out.push(small(Body::Batch));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shape_list;

    #[test]
    fn names_say_what_runs() {
        let names: Vec<String> = kernels(&shape_list("only:7x5h3p,7x12,40x8,64x64").unwrap())
            .iter()
            .map(Kernel::name)
            .collect();
        for want in [
            // 5 units on AVX-512: 256-bit vectors; the batch layout's groups
            // use the entry's 512-bit ones.
            "lanes_7x5h3p__avx512_f32x8",
            "batch_7x5h3p__avx512_f32x16",
            "lanes_7x5h3p__avx2_f32x8",
            "batch_7x5h3p__portable_f32x8",
            // 12 units: one vector on AVX-512 only.
            "lanes_7x12__avx512_f32x16",
            "blocked_7x12__avx2_f32x8",
            // 40 inputs: no batch layout.
            "lanes_40x8__avx2_f32x8",
            "blocked_64x64__avx512_f32x16",
            "blocked_64x64__portable_f32x8",
        ] {
            assert!(names.iter().any(|n| n == want), "{want} in {names:?}");
        }
        assert!(!names.iter().any(|n| n.starts_with("batch_40x8")));
        assert_eq!(names.len(), 6 + 4 + 3 + 3, "{names:?}");
    }

    #[test]
    fn long_rows_wrap_as_rustfmt_does() {
        let k = kernels(&shape_list("only:65536x65536h65536p").unwrap())[0];
        let row = k.to_string();
        assert!(
            row.lines().count() == 3 && row.lines().all(|l| l.len() <= 100),
            "{row}"
        );
        let short = kernels(&shape_list("only:512x512").unwrap())[0].to_string();
        assert_eq!(short.lines().count(), 1, "{short}");
    }
}
