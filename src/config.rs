//! Cell configuration: sizes and the variant switches. Validated once;
//! everything downstream may rely on a validated config's sizes and on its
//! element counts fitting in `usize`.

use crate::error::{Error, Result};

/// The output-gate peephole of the cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Peephole {
    /// No peephole: `o = σ(x·w_o + m·u_o + b_o)`.
    #[default]
    None,
    /// The seed's full `[H, H]` matrix on the *new* cell state:
    /// `o = σ(x·w_o + m·u_o + c·v_o + b_o)`.
    Matrix,
}

impl Peephole {
    /// Name used on the command line and in JSON (`none`, `matrix`).
    pub fn name(self) -> &'static str {
        match self {
            Peephole::None => "none",
            Peephole::Matrix => "matrix",
        }
    }
}

impl std::str::FromStr for Peephole {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "none" => Ok(Peephole::None),
            "matrix" => Ok(Peephole::Matrix),
            other => Err(Error::Invalid(format!(
                "unknown peephole kind `{other}` (expected `none` or `matrix`)"
            ))),
        }
    }
}

/// Sizes and variant switches of one LSTM cell.
///
/// Build it with [`LstmConfig::new`] and the `with_*` methods; it is checked
/// by [`LstmConfig::validate`] (which model construction calls).
///
/// ```
/// use lstm_kernels::{LstmConfig, Peephole};
/// // The seed exercise: 7 features, 5 hidden units, 3 outputs, matrix peephole.
/// let cfg = LstmConfig::new(7, 5).with_head(3).with_peephole(Peephole::Matrix);
/// assert!(cfg.validate().is_ok());
/// assert_eq!(cfg.n_output(), 3);
/// assert!(LstmConfig::new(7, 5).with_head(6).validate().is_err()); // head > hidden
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct LstmConfig {
    /// Number of input features (`n_in`).
    pub n_input: usize,
    /// Number of hidden units (`H`); the sizes of `c` and `m`.
    pub n_hidden: usize,
    /// Size of the output head `h = tanh(m·w_h + b_h)`, at most `n_hidden`.
    /// `None`: no head, the output is `m`.
    pub head: Option<usize>,
    /// The output-gate peephole.
    pub peephole: Peephole,
}

impl LstmConfig {
    /// A standard cell: no peephole, no head (the output is `m`).
    pub fn new(n_input: usize, n_hidden: usize) -> Self {
        LstmConfig {
            n_input,
            n_hidden,
            head: None,
            peephole: Peephole::None,
        }
    }

    /// Adds the output head `h = tanh(m·w_h + b_h)` with `n_output` units.
    pub fn with_head(mut self, n_output: usize) -> Self {
        self.head = Some(n_output);
        self
    }

    /// Sets the output-gate peephole kind.
    pub fn with_peephole(mut self, peephole: Peephole) -> Self {
        self.peephole = peephole;
        self
    }

    /// Width of one output row: the head size, or `n_hidden` without a head.
    pub fn n_output(&self) -> usize {
        self.head.unwrap_or(self.n_hidden)
    }

    /// Rows of the concatenated gate matrix: `n_input + n_hidden`.
    pub fn gate_rows(&self) -> usize {
        self.n_input + self.n_hidden
    }

    /// Columns of the concatenated gate matrix: `4 * n_hidden`.
    pub fn gate_cols(&self) -> usize {
        4 * self.n_hidden
    }

    /// Floating-point operations for one sample through one step, counting a
    /// multiply-add as 2: `2·(n_in+H)·4H` for the gates, `+ 2·H·H` for the
    /// matrix peephole, `+ 2·H·P` for a head of size P. Activations and the
    /// element-wise update are not counted.
    pub fn flops_per_sample_step(&self) -> f64 {
        let (n, h) = (self.n_input as f64, self.n_hidden as f64);
        let mut f = 2.0 * (n + h) * 4.0 * h;
        if self.peephole == Peephole::Matrix {
            f += 2.0 * h * h;
        }
        if let Some(p) = self.head {
            f += 2.0 * h * p as f64;
        }
        f
    }

    /// Checks the sizes: nonzero, head ≤ hidden, and every tensor's element
    /// count (and byte count) fits in `usize`/`isize`.
    pub fn validate(&self) -> Result<()> {
        if self.n_input == 0 {
            return Err(Error::Config("n_input must be at least 1".into()));
        }
        if self.n_hidden == 0 {
            return Err(Error::Config("n_hidden must be at least 1".into()));
        }
        if let Some(p) = self.head {
            if p == 0 {
                return Err(Error::Config(
                    "head size (n_output) must be at least 1".into(),
                ));
            }
            if p > self.n_hidden {
                return Err(Error::Config(format!(
                    "head size (n_output) {p} is larger than n_hidden {}",
                    self.n_hidden
                )));
            }
        }
        let overflow = || {
            Error::Config(format!(
                "sizes n_input={} n_hidden={} are too large: the weight tensors would not fit in memory addresses",
                self.n_input, self.n_hidden
            ))
        };
        let limit = (isize::MAX as usize) / std::mem::size_of::<f64>();
        let rows = self
            .n_input
            .checked_add(self.n_hidden)
            .ok_or_else(overflow)?;
        let cols = self.n_hidden.checked_mul(4).ok_or_else(overflow)?;
        let gates = rows.checked_mul(cols).ok_or_else(overflow)?;
        let hh = self
            .n_hidden
            .checked_mul(self.n_hidden)
            .ok_or_else(overflow)?;
        if gates > limit || hh > limit {
            return Err(overflow());
        }
        Ok(())
    }

    /// Checks a batch size against this config: nonzero, and `batch × 4H`
    /// (the widest per-step buffer) fits.
    pub(crate) fn validate_batch(&self, batch: usize) -> Result<()> {
        if batch == 0 {
            return Err(Error::Invalid("batch size must be at least 1".into()));
        }
        let limit = (isize::MAX as usize) / std::mem::size_of::<f64>();
        let widest = self.gate_cols().max(self.n_input).max(self.n_output());
        match batch.checked_mul(widest) {
            Some(n) if n <= limit => Ok(()),
            _ => Err(Error::Invalid(format!(
                "batch size {batch} is too large for n_hidden {}",
                self.n_hidden
            ))),
        }
    }
}
