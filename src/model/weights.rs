//! Weights in two layouts:
//!
//! * [`SeedWeights`] — the seed exercise's per-gate tensors under their own
//!   names (`w_i u_i b_i w_f … v_o b_o w_h b_h`), row-vector orientation.
//!   The file formats and the scalar reference use this layout.
//! * [`LstmWeights`] — the canonical layout every engine packs from: one
//!   concatenated gate matrix `[n_input + n_hidden, 4·H]` (rows: the input
//!   features, then the recurrent `m` features; column block `g·H..(g+1)·H`
//!   holds gate `g` in the order of [`GATE_ORDER`] = i, f, c̃, o — PyTorch's
//!   i, f, g, o), one bias `[4·H]` in the same order, and the optional
//!   peephole `v_o [H, H]` and head `w_h [H, P]`, `b_h [P]`.
//!
//! All matrices are row-major `f32`.

use crate::config::{LstmConfig, Peephole};
use crate::error::{Error, Result, check_len, try_filled, try_zeros};
use crate::rng::SplitMix64;

/// The order of the gate blocks in the concatenated matrix and bias:
/// input gate, forget gate, candidate cell (c̃, PyTorch's `g`), output gate.
pub const GATE_ORDER: [&str; 4] = ["i", "f", "c", "o"];

/// Canonical weights: see the module docs for the layout.
///
/// ```
/// use lstm_kernels::{LstmConfig, LstmWeights, Peephole};
/// let cfg = LstmConfig::new(7, 5).with_head(3).with_peephole(Peephole::Matrix);
/// let w = LstmWeights::random(&cfg, 42).unwrap();
/// assert_eq!(w.gates.len(), (7 + 5) * 4 * 5);
/// assert_eq!(w.v_o.as_ref().map(|v| v.len()), Some(25));
/// w.validate(&cfg).unwrap();
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct LstmWeights {
    /// `[n_input + n_hidden, 4·H]`, row-major, gate blocks in [`GATE_ORDER`].
    pub gates: Vec<f32>,
    /// `[4·H]`, gate blocks in [`GATE_ORDER`].
    pub bias: Vec<f32>,
    /// `[H, H]` output-gate peephole on the new `c` (with [`Peephole::Matrix`]).
    pub v_o: Option<Vec<f32>>,
    /// `[H, P]` output head weights (with a head of size `P`).
    pub w_h: Option<Vec<f32>>,
    /// `[P]` output head bias.
    pub b_h: Option<Vec<f32>>,
    /// `[3, H]` diagonal peepholes `w_ci, w_cf, w_co` (with
    /// [`Peephole::Diagonal`]).
    pub peep_diag: Option<Vec<f32>>,
    /// `[H, R]` projection `W_p` (with a projection of size R).
    pub w_p: Option<Vec<f32>>,
}

impl LstmWeights {
    /// All-zero weights shaped for `config` (fill the fields afterwards).
    /// The config is validated first; memory the system refuses is an
    /// [`Error::Alloc`], never an abort.
    pub fn zeros(config: &LstmConfig) -> Result<Self> {
        config.validate()?;
        let h = config.n_hidden;
        let opt = |on: bool, len: usize, what: &str| on.then(|| try_zeros(len, what)).transpose();
        Ok(LstmWeights {
            gates: try_zeros(config.gate_rows() * config.gate_cols(), "weights gates")?,
            bias: try_zeros(config.gate_cols(), "weights bias")?,
            v_o: opt(config.peephole == Peephole::Matrix, h * h, "weights v_o")?,
            w_h: opt(config.head.is_some(), h * config.n_output(), "weights w_h")?,
            b_h: opt(config.head.is_some(), config.n_output(), "weights b_h")?,
            peep_diag: opt(
                config.peephole == Peephole::Diagonal,
                3 * h,
                "weights peep_diag",
            )?,
            w_p: opt(
                config.projection.is_some(),
                h * config.n_recurrent(),
                "weights w_p",
            )?,
        })
    }

    /// Seeded random weights, PyTorch-style: every weight and bias uniform in
    /// `[-1/√H, 1/√H)`. The same seed always gives the same weights. Errors
    /// as [`LstmWeights::zeros`].
    pub fn random(config: &LstmConfig, seed: u64) -> Result<Self> {
        let _nearest = crate::engine::NearestGuard::new();
        let mut rng = SplitMix64::new(seed);
        let k = 1.0 / (config.n_hidden as f32).sqrt();
        let mut w = LstmWeights::zeros(config)?;
        rng.fill_uniform(&mut w.gates, -k, k);
        rng.fill_uniform(&mut w.bias, -k, k);
        for t in [
            &mut w.v_o,
            &mut w.w_h,
            &mut w.b_h,
            &mut w.peep_diag,
            &mut w.w_p,
        ]
        .into_iter()
        .flatten()
        {
            rng.fill_uniform(t, -k, k);
        }
        Ok(w)
    }

    /// Checks every tensor's presence and size against `config`.
    pub fn validate(&self, config: &LstmConfig) -> Result<()> {
        config.validate()?;
        let h = config.n_hidden;
        check_len(
            "gates",
            self.gates.len(),
            &[config.gate_rows(), config.gate_cols()],
        )?;
        check_len("bias", self.bias.len(), &[config.gate_cols()])?;
        shared_optionals(
            config,
            self.v_o.as_deref(),
            self.w_h.as_deref(),
            self.b_h.as_deref(),
            self.w_p.as_deref(),
        )?;
        let diag = (config.peephole == Peephole::Diagonal).then_some([3, h]);
        optional(
            "peep_diag",
            diag.as_ref().map(|d| d.as_slice()),
            self.peep_diag.as_deref(),
            "the config has no diagonal peephole",
        )?;
        if !config.allow_non_finite_weights {
            self.check_finite(config)?;
        }
        Ok(())
    }

    /// The first NaN or infinite weight, named in the seed's terms
    /// (`u_f[2, 3]` is recurrent row 2, unit 3 of the forget gate).
    fn check_finite(&self, config: &LstmConfig) -> Result<()> {
        let (n, h) = (config.n_input, config.n_hidden);
        let first_bad = |t: &[f32]| t.iter().position(|v| !v.is_finite());
        let report = |name: String, v: f32| {
            Err(Error::Invalid(format!(
                "weight {name} is {v}; non-finite weights are rejected (allow them with LstmConfig::with_non_finite_weights(true), --allow-non-finite-weights on the command line)"
            )))
        };
        if let Some(k) = first_bad(&self.gates) {
            let (row, col) = (k / (4 * h), k % (4 * h));
            let (gate, unit) = (GATE_ORDER[col / h], col % h);
            let name = if row < n {
                format!("w_{gate}[{row}, {unit}]")
            } else {
                format!("u_{gate}[{}, {unit}]", row - n)
            };
            return report(name, self.gates[k]);
        }
        if let Some(k) = first_bad(&self.bias) {
            return report(format!("b_{}[{}]", GATE_ORDER[k / h], k % h), self.bias[k]);
        }
        if let Some(d) = &self.peep_diag
            && let Some(k) = first_bad(d)
        {
            let name = ["w_ci", "w_cf", "w_co"][k / h];
            return report(format!("{name}[{}]", k % h), d[k]);
        }
        for (name, t, cols) in [
            ("v_o", &self.v_o, h),
            ("w_h", &self.w_h, config.n_output()),
            ("b_h", &self.b_h, 0),
            ("w_p", &self.w_p, config.n_recurrent()),
        ] {
            if let Some(t) = t
                && let Some(k) = first_bad(t)
            {
                let at = match k.checked_div(cols) {
                    Some(row) => format!("{row}, {}", k % cols),
                    None => format!("{k}"),
                };
                return report(format!("{name}[{at}]"), t[k]);
            }
        }
        Ok(())
    }

    /// Builds canonical weights from the seed's per-gate tensors.
    pub fn from_seed(config: &LstmConfig, seed: &SeedWeights) -> Result<Self> {
        seed.validate(config)?;
        let (n, h) = (config.n_input, config.n_hidden);
        let cols = config.gate_cols();
        let mut w = LstmWeights::zeros(config)?;
        let per_gate = seed.gate_tensors();
        for (g, (wx, u, b)) in per_gate.iter().enumerate() {
            for r in 0..n {
                w.gates[r * cols + g * h..r * cols + (g + 1) * h]
                    .copy_from_slice(&wx[r * h..(r + 1) * h]);
            }
            for r in 0..h {
                let row = n + r;
                w.gates[row * cols + g * h..row * cols + (g + 1) * h]
                    .copy_from_slice(&u[r * h..(r + 1) * h]);
            }
            w.bias[g * h..(g + 1) * h].copy_from_slice(b);
        }
        w.v_o.clone_from(&seed.v_o);
        w.w_h.clone_from(&seed.w_h);
        w.b_h.clone_from(&seed.b_h);
        w.peep_diag = match (&seed.w_ci, &seed.w_cf, &seed.w_co) {
            (Some(i), Some(f), Some(o)) => Some([i.as_slice(), f, o].concat()),
            _ => None,
        };
        w.w_p.clone_from(&seed.w_p);
        Ok(w)
    }

    /// Splits canonical weights back into the seed's per-gate tensors.
    pub fn to_seed(&self, config: &LstmConfig) -> Result<SeedWeights> {
        self.validate(config)?;
        let (n, h, rr) = (config.n_input, config.n_hidden, config.n_recurrent());
        let cols = config.gate_cols();
        let block = |g: usize, rows: std::ops::Range<usize>| -> Vec<f32> {
            rows.flat_map(|r| {
                self.gates[r * cols + g * h..r * cols + (g + 1) * h]
                    .iter()
                    .copied()
            })
            .collect()
        };
        let bias = |g: usize| self.bias[g * h..(g + 1) * h].to_vec();
        Ok(SeedWeights {
            w_i: block(0, 0..n),
            u_i: block(0, n..n + rr),
            b_i: bias(0),
            w_f: block(1, 0..n),
            u_f: block(1, n..n + rr),
            b_f: bias(1),
            w_c: block(2, 0..n),
            u_c: block(2, n..n + rr),
            b_c: bias(2),
            w_o: block(3, 0..n),
            u_o: block(3, n..n + rr),
            b_o: bias(3),
            v_o: self.v_o.clone(),
            w_h: self.w_h.clone(),
            b_h: self.b_h.clone(),
            w_ci: self.peep_diag.as_ref().map(|d| d[..h].to_vec()),
            w_cf: self.peep_diag.as_ref().map(|d| d[h..2 * h].to_vec()),
            w_co: self.peep_diag.as_ref().map(|d| d[2 * h..].to_vec()),
            w_p: self.w_p.clone(),
        })
    }
}

/// The seed exercise's tensors, one per name, row-vector orientation:
/// `w_* [n_in, H]`, `u_* [R, H]` (R = projection size, else H), `b_* [H]`,
/// `v_o [H, H]`, `w_h [H, P]`, `b_h [P]`; all row-major. The variants add
/// the diagonal peepholes `w_ci w_cf w_co [H]` and the projection
/// `w_p [H, R]`.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
#[allow(missing_docs)]
pub struct SeedWeights {
    pub w_i: Vec<f32>,
    pub u_i: Vec<f32>,
    pub b_i: Vec<f32>,
    pub w_f: Vec<f32>,
    pub u_f: Vec<f32>,
    pub b_f: Vec<f32>,
    pub w_c: Vec<f32>,
    pub u_c: Vec<f32>,
    pub b_c: Vec<f32>,
    pub w_o: Vec<f32>,
    pub u_o: Vec<f32>,
    pub b_o: Vec<f32>,
    pub v_o: Option<Vec<f32>>,
    pub w_h: Option<Vec<f32>>,
    pub b_h: Option<Vec<f32>>,
    pub w_ci: Option<Vec<f32>>,
    pub w_cf: Option<Vec<f32>>,
    pub w_co: Option<Vec<f32>>,
    pub w_p: Option<Vec<f32>>,
}

/// The seed's tensor names, in the order the seed lists them.
pub const SEED_NAMES: [&str; 15] = [
    "w_i", "u_i", "b_i", "w_f", "u_f", "b_f", "w_c", "u_c", "b_c", "w_o", "u_o", "v_o", "b_o",
    "w_h", "b_h",
];

impl SeedWeights {
    /// `(w, u, b)` per gate in [`GATE_ORDER`].
    pub(crate) fn gate_tensors(&self) -> [(&[f32], &[f32], &[f32]); 4] {
        [
            (&self.w_i, &self.u_i, &self.b_i),
            (&self.w_f, &self.u_f, &self.b_f),
            (&self.w_c, &self.u_c, &self.b_c),
            (&self.w_o, &self.u_o, &self.b_o),
        ]
    }

    /// Checks every tensor's presence and size against `config`.
    pub fn validate(&self, config: &LstmConfig) -> Result<()> {
        config.validate()?;
        let (n, h, rr) = (config.n_input, config.n_hidden, config.n_recurrent());
        for (g, (w, u, b)) in self.gate_tensors().iter().enumerate() {
            let gate = GATE_ORDER[g];
            check_len(&format!("w_{gate}"), w.len(), &[n, h])?;
            check_len(&format!("u_{gate}"), u.len(), &[rr, h])?;
            check_len(&format!("b_{gate}"), b.len(), &[h])?;
        }
        shared_optionals(
            config,
            self.v_o.as_deref(),
            self.w_h.as_deref(),
            self.b_h.as_deref(),
            self.w_p.as_deref(),
        )?;
        let diag = (config.peephole == Peephole::Diagonal).then_some([h]);
        for (name, t) in [
            ("w_ci", &self.w_ci),
            ("w_cf", &self.w_cf),
            ("w_co", &self.w_co),
        ] {
            optional(
                name,
                diag.as_ref().map(|d| d.as_slice()),
                t.as_deref(),
                "the config has no diagonal peephole",
            )?;
        }
        Ok(())
    }
}

/// Checks the optional tensors both layouts name alike (matrix peephole
/// `v_o`, head `w_h`, `b_h`, projection `w_p`) against the config: present
/// with the right size exactly when the config has them.
fn shared_optionals(
    config: &LstmConfig,
    v_o: Option<&[f32]>,
    w_h: Option<&[f32]>,
    b_h: Option<&[f32]>,
    w_p: Option<&[f32]>,
) -> Result<()> {
    let h = config.n_hidden;
    let proj = config.projection.map(|r| [h, r]);
    optional(
        "w_p",
        proj.as_ref().map(|d| d.as_slice()),
        w_p,
        "the config has no projection",
    )?;
    let matrix = (config.peephole == Peephole::Matrix).then_some([h, h]);
    optional(
        "v_o",
        matrix.as_ref().map(|d| d.as_slice()),
        v_o,
        "the config has no matrix peephole",
    )?;
    let (wh, bh) = (config.head.map(|p| [h, p]), config.head.map(|p| [p]));
    optional(
        "w_h",
        wh.as_ref().map(|d| d.as_slice()),
        w_h,
        "the config has no head",
    )?;
    optional(
        "b_h",
        bh.as_ref().map(|d| d.as_slice()),
        b_h,
        "the config has no head",
    )
}

/// Checks an optional tensor: required with `shape` when the config has it,
/// absent otherwise.
fn optional(name: &str, shape: Option<&[usize]>, t: Option<&[f32]>, why_not: &str) -> Result<()> {
    match (shape, t) {
        (Some(sh), Some(t)) => check_len(name, t.len(), sh),
        (Some(_), None) => Err(missing(name)),
        (None, Some(_)) => Err(unexpected(name, why_not)),
        (None, None) => Ok(()),
    }
}

fn missing(tensor: &str) -> Error {
    Error::MissingTensor {
        tensor: tensor.to_string(),
        source_name: "the weights".to_string(),
    }
}

fn unexpected(tensor: &str, why: &str) -> Error {
    Error::UnexpectedTensor {
        tensor: tensor.to_string(),
        why: why.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_round_trip() {
        let cfg = LstmConfig::new(7, 5)
            .with_head(3)
            .with_peephole(Peephole::Matrix);
        let w = LstmWeights::random(&cfg, 1).unwrap();
        let s = w.to_seed(&cfg).unwrap();
        // u_f[2][3] is the recurrent row n_in+2, column H+3 of the concatenation.
        assert_eq!(s.u_f[2 * 5 + 3], w.gates[(7 + 2) * 20 + 5 + 3]);
        assert_eq!(s.b_o[4], w.bias[15 + 4]);
        assert_eq!(LstmWeights::from_seed(&cfg, &s).unwrap(), w);
    }

    #[test]
    fn validate_names_the_tensor() {
        let cfg = LstmConfig::new(3, 2).with_head(2);
        let mut w = LstmWeights::random(&cfg, 1).unwrap();
        w.b_h = None;
        assert!(w.validate(&cfg).unwrap_err().to_string().contains("b_h"));
        let mut s = LstmWeights::random(&cfg, 1).unwrap().to_seed(&cfg).unwrap();
        s.u_c.pop();
        let e = LstmWeights::from_seed(&cfg, &s).unwrap_err().to_string();
        assert!(e.contains("u_c") && e.contains("[2, 2]"), "{e}");
        s = LstmWeights::random(&cfg, 1).unwrap().to_seed(&cfg).unwrap();
        s.v_o = Some(vec![0.0; 4]);
        assert!(matches!(
            LstmWeights::from_seed(&cfg, &s),
            Err(Error::UnexpectedTensor { .. })
        ));
    }
}

/// Gate weights quantized to int8 the way [`crate::Precision::Int8`]
/// runs them: symmetric, one scale per gate column for its input rows and
/// one for its recurrent rows. [`Int8Gates::quantize`] makes them from f32
/// weights (what `with_precision(Int8)` does); a quantizing framework's
/// own int8 weights (ONNX Runtime's `DynamicQuantizeLSTM`, say) can be
/// given as they are with [`crate::Lstm::with_int8_gates`], so they run
/// without being quantized a second time.
#[derive(Clone, Debug, PartialEq)]
pub struct Int8Gates {
    /// `[n_in + H, 4H]` in the layout of [`LstmWeights::gates`] (rows: the
    /// inputs, then `m`; column blocks i, f, c̃, o).
    pub q: Vec<i8>,
    /// `[4H]`: each column's scale for its input rows.
    pub scale_x: Vec<f32>,
    /// `[4H]`: each column's scale for its recurrent rows.
    pub scale_h: Vec<f32>,
}

impl Int8Gates {
    /// Quantizes `w.gates`: per column and part, `s = fl(max|w| / 127)` and
    /// `q = round(w / s)` (to nearest even, in f64, clamped to ±127); an
    /// all-zero part gets scale 0. Only configs without a projection have
    /// int8 gates (the recurrent rows are H).
    pub fn quantize(cfg: &LstmConfig, w: &LstmWeights) -> Result<Self> {
        // The sizes below are then within the tensor limit (no overflow).
        cfg.validate()?;
        let (n, h) = (cfg.n_input, cfg.n_hidden);
        let cols = 4 * h;
        if cfg.projection.is_some() || w.gates.len() != (n + h) * cols {
            return Err(Error::Config(
                "int8 gates need a config without a projection and gates of [n_in + H, 4H]".into(),
            ));
        }
        // A non-finite weight (allowed with `with_non_finite_weights`) has
        // no int8 value: a NaN would quantize to 0 and an infinity make its
        // column's scale infinite, unlike the f32 and bf16 results.
        if let Some(i) = w.gates.iter().position(|v| !v.is_finite()) {
            return Err(Error::Invalid(format!(
                "int8 gates need finite weights: gates[{}, {}] = {}",
                i / cols,
                i % cols,
                w.gates[i]
            )));
        }
        let mut q = try_filled::<i8>((n + h) * cols, 0, "int8 gates")?;
        let mut scale_x = try_filled::<f32>(cols, 0.0, "int8 scales")?;
        let mut scale_h = try_filled::<f32>(cols, 0.0, "int8 scales")?;
        for (k0, len, scales) in [(0, n, &mut scale_x), (n, h, &mut scale_h)] {
            for (col, scale) in scales.iter_mut().enumerate() {
                let wk = |k: usize| w.gates[(k0 + k) * cols + col];
                let amax = (0..len).fold(0.0f32, |a, k| a.max(wk(k).abs()));
                let s = amax / 127.0;
                *scale = s;
                if s > 0.0 {
                    for k in 0..len {
                        q[(k0 + k) * cols + col] = (wk(k) as f64 / s as f64)
                            .round_ties_even()
                            .clamp(-127.0, 127.0)
                            as i8;
                    }
                }
            }
        }
        Ok(Int8Gates {
            q,
            scale_x,
            scale_h,
        })
    }

    /// The f32 gate weights these stand for, `q · s` per element (rounded
    /// to f32), in the layout of [`LstmWeights::gates`].
    pub fn dequantize(&self, cfg: &LstmConfig) -> Result<Vec<f32>> {
        self.check(cfg)?;
        let (n, cols) = (cfg.n_input, 4 * cfg.n_hidden);
        let mut w = try_filled::<f32>(self.q.len(), 0.0, "dequantized gates")?;
        for (i, (w, &q)) in w.iter_mut().zip(&self.q).enumerate() {
            let (k, col) = (i / cols, i % cols);
            let s = if k < n {
                self.scale_x[col]
            } else {
                self.scale_h[col]
            };
            *w = q as f32 * s;
        }
        Ok(w)
    }

    /// Checks the shapes against `cfg` and that every scale is finite and
    /// not negative.
    pub fn check(&self, cfg: &LstmConfig) -> Result<()> {
        cfg.validate()?;
        let (n, h) = (cfg.n_input, cfg.n_hidden);
        if cfg.projection.is_some() {
            return Err(Error::Config(
                "int8 gates do not support a projection".into(),
            ));
        }
        let cols = 4 * h;
        check_len("int8 gates q", self.q.len(), &[n + h, cols])?;
        check_len("int8 gates scale_x", self.scale_x.len(), &[cols])?;
        check_len("int8 gates scale_h", self.scale_h.len(), &[cols])?;
        for (what, v) in [("scale_x", &self.scale_x), ("scale_h", &self.scale_h)] {
            if let Some(i) = v.iter().position(|s| !(s.is_finite() && *s >= 0.0)) {
                return Err(Error::Invalid(format!(
                    "int8 gates {what}[{i}] = {}: scales must be finite and ≥ 0",
                    v[i]
                )));
            }
        }
        Ok(())
    }
}
