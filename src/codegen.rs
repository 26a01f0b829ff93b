//! The generator of shape-specialized kernels. `build.rs` includes this
//! file (`#[path]`) and writes its output to `$OUT_DIR/kernels.rs`; the crate
//! compiles it as a module too, for its unit tests and `lstm codegen`. It
//! is self-contained: std only, no crate types.
//!
//! Shapes come from [`DEFAULT_SHAPES`] plus `LSTM_KERNELS_SHAPES`, a
//! comma-separated list of `<n_in>x<hidden>[h<head>][p]` (`p`: the seed's
//! matrix peephole), e.g. `7x5h3p,256x256,40x128`. A list starting with
//! `only:` replaces the defaults (`only:` alone: no specialized kernels).
//!
//! Each shape gets one [`DimsSpec`] (its dimensions as constants) and one
//! [`KernelSpec`] per ISA (a `#[target_feature]` wrapper named like
//! `cell_7x5h3p__avx512`); one table lists them all.

use std::fmt::Write;

/// Shapes specialized by default: the seed's cell, H = 64…512 with
/// input = hidden, and one small cell without head or peephole (24 → 8,
/// so that the register-resident kernels' plain-output path is built and
/// tested too).
pub const DEFAULT_SHAPES: &str = "7x5h3p,24x8,64x64,128x128,256x256,512x512";

/// The environment variable a dependent crate sets to add shapes.
pub const SHAPES_ENV: &str = "LSTM_KERNELS_SHAPES";

/// Most inputs of a small cell that gets a batch-in-lanes kernel too
/// (`kernel::small::BATCH_MAX_IN`, its stack buffer).
pub const SMALL_BATCH_MAX_IN: usize = 32;

/// Largest dimension accepted in a shape (keeps generated code sane).
pub const MAX_DIM: usize = 1 << 16;

/// One specialized shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShapeSpec {
    pub n_in: usize,
    pub hidden: usize,
    pub head: Option<usize>,
    pub peephole: bool,
}

impl ShapeSpec {
    /// The shape's tag, as written in the list: `7x5h3p`.
    pub fn tag(&self) -> String {
        let mut t = format!("{}x{}", self.n_in, self.hidden);
        if let Some(p) = self.head {
            write!(t, "h{p}").unwrap();
        }
        if self.peephole {
            t.push('p');
        }
        t
    }

    /// Parses one `<n_in>x<hidden>[h<head>][p]`.
    pub fn parse(s: &str) -> Result<ShapeSpec, String> {
        let bad = |why: &str| {
            format!(
                "bad shape `{s}`: {why} (expected <n_in>x<hidden>[h<head>][p], e.g. 7x5h3p or 256x256)"
            )
        };
        let (body, peephole) = match s.strip_suffix('p') {
            Some(b) => (b, true),
            None => (s, false),
        };
        let (dims, head) = match body.split_once('h') {
            Some((d, h)) => (d, Some(h)),
            None => (body, None),
        };
        let (n, h) = dims
            .split_once('x')
            .ok_or_else(|| bad("no `x` between n_in and hidden"))?;
        let num = |v: &str, what: &str| -> Result<usize, String> {
            let x: usize = v
                .parse()
                .map_err(|_| bad(&format!("{what} `{v}` is not a number")))?;
            if x == 0 || x > MAX_DIM {
                return Err(bad(&format!("{what} must be in 1..={MAX_DIM}")));
            }
            Ok(x)
        };
        let shape = ShapeSpec {
            n_in: num(n, "n_in")?,
            hidden: num(h, "hidden")?,
            head: head.map(|p| num(p, "head")).transpose()?,
            peephole,
        };
        if shape.head.is_some_and(|p| p > shape.hidden) {
            return Err(bad("head is larger than hidden"));
        }
        Ok(shape)
    }
}

/// The shapes to specialize: the defaults plus `extra` (the value of
/// `LSTM_KERNELS_SHAPES`), without duplicates, in order.
pub fn shape_list(extra: &str) -> Result<Vec<ShapeSpec>, String> {
    let extra = extra.trim();
    let (base, extra) = match extra.strip_prefix("only:") {
        Some(rest) => ("", rest),
        None => (DEFAULT_SHAPES, extra),
    };
    let mut out: Vec<ShapeSpec> = Vec::new();
    for item in base.split(',').chain(extra.split(',')) {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let s = ShapeSpec::parse(item)?;
        if !out.contains(&s) {
            out.push(s);
        }
    }
    Ok(out)
}

/// An ISA path as the generated code names it.
#[derive(Clone, Copy, Debug)]
pub struct IsaSpec {
    /// `avx512`, `avx2`, `portable` (the suffix of kernel names).
    pub name: &'static str,
    /// The `Isa` variant and the `Simd` type.
    pub variant: &'static str,
    /// `#[target_feature(enable = ...)]`, none for portable.
    pub feature: Option<&'static str>,
    pub lanes: usize,
}

/// Every ISA path.
pub const ISAS: [IsaSpec; 3] = [
    IsaSpec {
        name: "avx512",
        variant: "Avx512",
        feature: Some("avx512f"),
        lanes: 16,
    },
    IsaSpec {
        name: "avx2",
        variant: "Avx2",
        feature: Some("avx2,fma"),
        lanes: 8,
    },
    IsaSpec {
        name: "portable",
        variant: "Portable",
        feature: None,
        lanes: 8,
    },
];

/// A shape's dimensions as a `Dims` type.
pub struct DimsSpec(pub ShapeSpec);

impl DimsSpec {
    pub fn type_name(&self) -> String {
        format!("Dims{}", self.0.tag().to_uppercase())
    }

    pub fn write(&self, out: &mut String) {
        let s = &self.0;
        let head = s.head.map_or("none".to_string(), |p| p.to_string());
        let peep = if s.peephole { "matrix" } else { "none" };
        writeln!(
            out,
            "/// {} → {} hidden units, head {head}, peephole {peep}.",
            s.n_in, s.hidden
        )
        .unwrap();
        writeln!(out, "#[derive(Clone, Copy)]").unwrap();
        writeln!(out, "pub(crate) struct {};", self.type_name()).unwrap();
        writeln!(out).unwrap();
        writeln!(out, "impl Dims for {} {{", self.type_name()).unwrap();
        writeln!(out, "    const KNOWN: bool = true;").unwrap();
        writeln!(out, "    const N_IN: usize = {};", s.n_in).unwrap();
        writeln!(out, "    const H: usize = {};", s.hidden).unwrap();
        writeln!(out, "    const HEAD: usize = {};", s.head.unwrap_or(0)).unwrap();
        writeln!(out, "    const PEEPHOLE: bool = {};", s.peephole).unwrap();
        writeln!(out, "}}").unwrap();
        writeln!(out).unwrap();
    }
}

/// One kernel: a shape on an ISA path.
pub struct KernelSpec {
    pub shape: ShapeSpec,
    pub isa: IsaSpec,
}

impl KernelSpec {
    /// `cell_7x5h3p__avx512`.
    pub fn name(&self) -> String {
        format!("cell_{}__{}", self.shape.tag(), self.isa.name)
    }

    /// The body it instantiates: the register-resident `small::run` when
    /// the hidden units fit one vector, else the blocked `cell::run`.
    pub fn body(&self) -> &'static str {
        if self.shape.hidden <= self.isa.lanes {
            "small"
        } else {
            "cell"
        }
    }

    /// The vector type and its lanes. A small cell that fits 8 lanes uses
    /// 256-bit vectors even on the AVX-512 path (AVX-512 implies AVX2+FMA):
    /// half-empty 512-bit vectors only cost (AVX2 ran the seed 1.33× faster).
    pub fn simd(&self) -> (&'static str, usize) {
        if self.body() == "small" && self.isa.name == "avx512" && self.shape.hidden <= 8 {
            ("Avx2", 8)
        } else {
            (self.isa.variant, self.isa.lanes)
        }
    }

    /// The batch-in-lanes wrapper's name (`batch_7x5h3p__avx512`), for
    /// small bodies with at most [`SMALL_BATCH_MAX_IN`] inputs.
    pub fn batch_name(&self) -> Option<String> {
        (self.body() == "small" && self.shape.n_in <= SMALL_BATCH_MAX_IN)
            .then(|| format!("batch_{}__{}", self.shape.tag(), self.isa.name))
    }

    pub fn write(&self, out: &mut String) {
        let dims = DimsSpec(self.shape).type_name();
        let (name, body, (v, _)) = (self.name(), self.body(), self.simd());
        if body == "small" {
            self.write_fn(
                out,
                &name,
                "register-resident, gates in lanes",
                &format!("small::run_lanes::<{v}, {dims}>"),
            );
            if let Some(batch) = self.batch_name() {
                // The batch vector is the ISA's own (16 lanes on AVX-512).
                self.write_fn(
                    out,
                    &batch,
                    "register-resident, batch in lanes",
                    &format!("small::run_batch::<{v}, {}, {dims}>", self.isa.variant),
                );
            }
        } else {
            self.write_fn(
                out,
                &name,
                "blocked, constant trip counts",
                &format!("cell::run::<{v}, {dims}>"),
            );
        }
    }

    /// One `#[target_feature]` wrapper `name` calling `call(job)`.
    fn write_fn(&self, out: &mut String, name: &str, what: &str, call: &str) {
        let v = self.simd().0;
        writeln!(
            out,
            "/// `{}` on {}: {what}.",
            self.shape.tag(),
            self.isa.name
        )
        .unwrap();
        writeln!(out, "///").unwrap();
        writeln!(out, "/// # Safety").unwrap();
        writeln!(
            out,
            "/// The CPU supports {}; `job` comes from `kernel::forward` for this shape.",
            self.isa.name
        )
        .unwrap();
        match self.isa.feature {
            Some(f) => {
                // AVX-512 implies AVX2 and FMA; say so for an Avx2 body.
                let f = if v == "Avx2" && f == "avx512f" {
                    "avx512f,avx2,fma"
                } else {
                    f
                };
                writeln!(
                    out,
                    "#[cfg_attr(target_arch = \"x86_64\", target_feature(enable = \"{f}\"))]"
                )
                .unwrap();
                writeln!(out, "unsafe fn {name}(job: &Job) {{").unwrap();
                writeln!(out, "    #[cfg(target_arch = \"x86_64\")]").unwrap();
                writeln!(
                    out,
                    "    // SAFETY: the table entry is only used when {} is available.",
                    self.isa.name
                )
                .unwrap();
                writeln!(out, "    unsafe {{").unwrap();
                writeln!(out, "        {call}(job)").unwrap();
                writeln!(out, "    }}").unwrap();
                writeln!(out, "    #[cfg(not(target_arch = \"x86_64\"))]").unwrap();
                writeln!(out, "    let _ = job;").unwrap();
                writeln!(out, "}}").unwrap();
            }
            None => {
                writeln!(out, "unsafe fn {name}(job: &Job) {{").unwrap();
                writeln!(
                    out,
                    "    // SAFETY: the portable path needs no CPU feature."
                )
                .unwrap();
                writeln!(out, "    unsafe {{ {call}(job) }}").unwrap();
                writeln!(out, "}}").unwrap();
            }
        }
        writeln!(out).unwrap();
    }

    pub fn write_entry(&self, out: &mut String) {
        let s = &self.shape;
        writeln!(out, "    Specialized {{").unwrap();
        writeln!(out, "        name: \"{}\",", self.name()).unwrap();
        writeln!(out, "        n_in: {},", s.n_in).unwrap();
        writeln!(out, "        hidden: {},", s.hidden).unwrap();
        writeln!(out, "        head: {:?},", s.head).unwrap();
        writeln!(out, "        peephole: {},", s.peephole).unwrap();
        writeln!(out, "        isa: Isa::{},", self.isa.variant).unwrap();
        writeln!(out, "        small: {},", self.body() == "small").unwrap();
        writeln!(out, "        lanes: {},", self.simd().1).unwrap();
        writeln!(out, "        run: {},", self.name()).unwrap();
        match self.batch_name() {
            Some(b) => writeln!(out, "        batch: Some({b}),").unwrap(),
            None => writeln!(out, "        batch: None,").unwrap(),
        }
        writeln!(out, "    }},").unwrap();
    }
}

/// Every kernel of `shapes`: each shape on each ISA path.
fn kernels(shapes: &[ShapeSpec]) -> Vec<KernelSpec> {
    shapes
        .iter()
        .flat_map(|&shape| ISAS.iter().map(move |&isa| KernelSpec { shape, isa }))
        .collect()
}

/// The `use` lines for exactly what `kernels` call, so that any shape list
/// (`only:` alone, or no small cell) compiles without unused imports.
fn write_uses(kernels: &[KernelSpec], out: &mut String) {
    let mut uses = Vec::new();
    if !kernels.is_empty() {
        uses.push("super::Dims");
    }
    if kernels.iter().any(|k| k.body() == "cell") {
        uses.push("super::cell");
    }
    if kernels.iter().any(|k| k.body() == "small") {
        uses.push("super::small");
    }
    for u in uses {
        writeln!(out, "use {u};").unwrap();
    }
    // The vector types the calls name (`Avx2`/`Avx512` only on x86_64),
    // sorted and without duplicates.
    let vs: std::collections::BTreeSet<&str> = kernels
        .iter()
        .flat_map(|k| [Some(k.simd().0), k.batch_name().map(|_| k.isa.variant)])
        .flatten()
        .collect();
    let x86: Vec<&str> = vs.iter().copied().filter(|&v| v != "Portable").collect();
    if !x86.is_empty() {
        writeln!(out, "#[cfg(target_arch = \"x86_64\")]").unwrap();
        match x86.as_slice() {
            [one] => writeln!(out, "use crate::simd::{one};").unwrap(),
            _ => writeln!(out, "use crate::simd::{{{}}};", x86.join(", ")).unwrap(),
        }
    }
    if vs.contains(&"Portable") {
        writeln!(out, "use crate::simd::Portable;").unwrap();
    }
    writeln!(out).unwrap();
}

/// The `--cfg` flags build.rs sets for `shapes`, so that the bodies no
/// generated kernel uses are allowed to be dead code (and only then):
/// `lstm_kernels_small` when a register-resident kernel exists,
/// `lstm_kernels_batch` when one has a batch-in-lanes wrapper too.
pub const CFGS: [&str; 2] = ["lstm_kernels_small", "lstm_kernels_batch"];

/// The subset of [`CFGS`] that `shapes` enable.
pub fn cfgs(shapes: &[ShapeSpec]) -> Vec<&'static str> {
    let ks = kernels(shapes);
    let mut out = Vec::new();
    if ks.iter().any(|k| k.body() == "small") {
        out.push(CFGS[0]);
    }
    if ks.iter().any(|k| k.batch_name().is_some()) {
        out.push(CFGS[1]);
    }
    out
}

/// The whole generated file for `shapes`.
pub fn generate(shapes: &[ShapeSpec]) -> String {
    let mut out = String::new();
    out.push_str("// Auto-generated by build.rs (src/codegen.rs). Do not edit.\n");
    let kernels = kernels(shapes);
    let list = |items: Vec<String>| match items.is_empty() {
        true => "(none)".to_string(),
        false => items.join(", "),
    };
    let tags = shapes.iter().map(ShapeSpec::tag).collect();
    writeln!(out, "// Shapes: {}", list(tags)).unwrap();
    let cfgs = cfgs(shapes).into_iter().map(String::from).collect();
    writeln!(out, "// Cfgs build.rs sets: {}", list(cfgs)).unwrap();
    out.push_str("// Every kernel is a `#[target_feature]` wrapper instantiating a generic body\n");
    out.push_str("// with the shape's dimensions as constants; `SPECIALIZED` lists them.\n\n");
    write_uses(&kernels, &mut out);
    for s in shapes {
        DimsSpec(*s).write(&mut out);
    }
    for k in &kernels {
        k.write(&mut out);
    }
    writeln!(
        out,
        "/// Every generated kernel, for dispatch by shape and ISA."
    )
    .unwrap();
    writeln!(out, "pub(crate) static SPECIALIZED: &[Specialized] = &[").unwrap();
    for k in &kernels {
        k.write_entry(&mut out);
    }
    writeln!(out, "];").unwrap();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_grammar() {
        let s = ShapeSpec::parse("7x5h3p").unwrap();
        assert_eq!(
            s,
            ShapeSpec {
                n_in: 7,
                hidden: 5,
                head: Some(3),
                peephole: true
            }
        );
        assert_eq!(s.tag(), "7x5h3p");
        assert_eq!(ShapeSpec::parse("40x128").unwrap().tag(), "40x128");
        assert_eq!(ShapeSpec::parse("9x9p").unwrap().head, None);
        for (bad, why) in [
            ("7", "no `x`"),
            ("x5", "n_in"),
            ("7x", "hidden"),
            ("7x5h", "head"),
            ("7x5h6", "larger"),
            ("0x5", "1..="),
            ("7x5q", "not a number"),
            ("7x5hp", "head"),
        ] {
            let e = ShapeSpec::parse(bad).unwrap_err();
            assert!(e.contains(why) && e.contains(bad), "{bad}: {e}");
        }
    }

    #[test]
    fn list_adds_to_defaults_and_only_replaces() {
        let d = shape_list("").unwrap();
        assert_eq!(d.len(), 6);
        let more = shape_list(" 40x128 , 7x5h3p,").unwrap();
        assert_eq!(more.len(), 7, "duplicates are dropped");
        assert_eq!(more[6].tag(), "40x128");
        assert_eq!(shape_list("only:").unwrap().len(), 0);
        assert_eq!(
            shape_list("only:3x4").unwrap(),
            vec![ShapeSpec::parse("3x4").unwrap()]
        );
        assert!(
            shape_list("7x5,bad")
                .unwrap_err()
                .contains("bad shape `bad`")
        );
    }

    #[test]
    fn generated_code_names_and_lists_every_kernel() {
        let shapes = shape_list("only:7x5h3p,64x64").unwrap();
        let src = generate(&shapes);
        assert!(src.starts_with("// Auto-generated by build.rs (src/codegen.rs)"));
        for name in [
            "cell_7x5h3p__avx512",
            "cell_7x5h3p__avx2",
            "cell_7x5h3p__portable",
            "cell_64x64__avx512",
        ] {
            assert!(
                src.contains(&format!("unsafe fn {name}(job: &Job)")),
                "{name}"
            );
            assert!(
                src.contains(&format!("run: {name},")),
                "{name} in the table"
            );
        }
        assert!(
            src.contains("small::run_lanes::<Avx2, Dims7X5H3P>")
                && src.contains("small::run_batch::<Avx2, Avx512, Dims7X5H3P>")
                && src.contains("batch: Some(batch_7x5h3p__avx512),"),
            "8-lane vectors for a 5-unit cell on AVX-512"
        );
        assert!(src.contains("avx512f,avx2,fma"));
        assert!(src.contains("cell::run::<Avx2, Dims64X64>"));
        assert!(src.contains("const HEAD: usize = 3;"));
        assert_eq!(src.matches("Specialized {").count(), 6);
    }

    #[test]
    fn imports_and_cfgs_follow_the_list() {
        // What the generated file imports and which bodies build.rs marks
        // as used, per kind of list (so that `only:` builds warn nothing).
        let case = |list: &str| {
            let shapes = shape_list(list).unwrap();
            let src = generate(&shapes);
            let uses: Vec<String> = src
                .lines()
                .filter(|l| l.starts_with("use "))
                .map(str::to_string)
                .collect();
            (uses, cfgs(&shapes))
        };
        let (uses, c) = case("only:");
        assert!(uses.is_empty() && c.is_empty(), "{uses:?} {c:?}");
        let (uses, c) = case("only:256x256");
        assert_eq!(
            uses,
            [
                "use super::Dims;",
                "use super::cell;",
                "use crate::simd::{Avx2, Avx512};",
                "use crate::simd::Portable;"
            ]
        );
        assert!(c.is_empty());
        // 40 inputs: register-resident, but too many for the batch layout.
        let (uses, c) = case("only:40x8");
        assert_eq!(
            uses,
            [
                "use super::Dims;",
                "use super::small;",
                "use crate::simd::Avx2;",
                "use crate::simd::Portable;"
            ]
        );
        assert_eq!(c, ["lstm_kernels_small"]);
        // 5 units: small on every path; 12 units: small on AVX-512 only.
        let (uses, c) = case("only:7x5h3p,7x12");
        assert!(uses.contains(&"use super::cell;".to_string()), "{uses:?}");
        assert!(uses.contains(&"use super::small;".to_string()));
        assert_eq!(c, CFGS);
        assert!(generate(&shape_list("only:").unwrap()).contains("// Cfgs build.rs sets: (none)"));
    }
}
