//! Cell configuration: sizes and the variant switches. Validated once;
//! everything downstream may rely on a validated config's sizes and on its
//! element counts fitting in `usize`.

use crate::error::{Error, Result};

/// The most elements any one tensor may have: a weight matrix, a state, or
/// a step's widest per-batch buffer (2³¹ elements, 8 GiB of `f32`).
/// [`LstmConfig::validate`] rejects sizes beyond it, so a model's buffers
/// always have sizes that can exist; allocation within it may still fail,
/// and then returns [`Error::Alloc`](crate::Error::Alloc).
pub const MAX_TENSOR_ELEMENTS: usize = 1 << 31;

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
    /// Diagonal peepholes (TF, ONNX, oneDNN): `i` and `f` add `w_ci⊙c_{t−1}`
    /// and `w_cf⊙c_{t−1}`, `o` adds `w_co⊙c_t`.
    Diagonal,
}

impl Peephole {
    /// Name used on the command line and in JSON (`none`, `matrix`).
    pub fn name(self) -> &'static str {
        match self {
            Peephole::None => "none",
            Peephole::Matrix => "matrix",
            Peephole::Diagonal => "diagonal",
        }
    }
}

impl std::str::FromStr for Peephole {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "none" => Ok(Peephole::None),
            "matrix" => Ok(Peephole::Matrix),
            "diagonal" => Ok(Peephole::Diagonal),
            other => Err(Error::Invalid(format!(
                "unknown peephole kind `{other}` (expected `none`, `matrix` or `diagonal`)"
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
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct LstmConfig {
    /// Number of input features (`n_in`).
    pub n_input: usize,
    /// Number of hidden units (`H`); the sizes of `c` and `m`.
    pub n_hidden: usize,
    /// Size of the output head `h = tanh(m·w_h + b_h)`, at most `n_hidden`.
    /// `None`: no head, the output is `m`.
    pub head: Option<usize>,
    /// The peephole connections.
    pub peephole: Peephole,
    /// Recurrent projection size (TF `num_proj`, PyTorch `proj_size`):
    /// `r = m·W_p` (no bias) recurs instead of `m` and is the output.
    pub projection: Option<usize>,
    /// Added to the forget gate's pre-activation at run time (TF
    /// `LSTMCell`'s `forget_bias`); 0 by default.
    pub forget_bias: f32,
    /// TF `cell_clip`: `c` is clamped to `[−clip, clip]` after the update
    /// and the clamped value carries on.
    pub cell_clip: Option<f32>,
    /// TF `proj_clip`: `r` is clamped to `[−clip, clip]`.
    pub proj_clip: Option<f32>,
    /// ONNX `clip`: the gates' pre-activations (the inputs of their σ/tanh,
    /// after bias and peepholes) are clamped to `[−clip, clip]`, as
    /// onnxruntime does; the state `c`, and the `tanh(c)` in `m = o⊙tanh(c)`,
    /// are not.
    pub clip: Option<f32>,
    /// ONNX `input_forget`: the forget gate is `1 − i` (its weights are
    /// ignored).
    pub input_forget: bool,
    /// Accept NaN or infinite weights. Off by default: a model whose
    /// weights hold one is an error naming the tensor and index (one NaN
    /// in a recurrent matrix turns every output NaN).
    pub allow_non_finite_weights: bool,
}

impl LstmConfig {
    /// A standard cell: no peephole, no head (the output is `m`).
    pub fn new(n_input: usize, n_hidden: usize) -> Self {
        LstmConfig {
            n_input,
            n_hidden,
            head: None,
            peephole: Peephole::None,
            projection: None,
            forget_bias: 0.0,
            cell_clip: None,
            proj_clip: None,
            clip: None,
            input_forget: false,
            allow_non_finite_weights: false,
        }
    }

    /// Adds a recurrent projection of size `p` (`r = m·W_p` recurs).
    pub fn with_projection(mut self, p: usize) -> Self {
        self.projection = Some(p);
        self
    }

    /// Sets the run-time forget bias (TF `forget_bias`).
    pub fn with_forget_bias(mut self, b: f32) -> Self {
        self.forget_bias = b;
        self
    }

    /// Sets TF's `cell_clip`.
    pub fn with_cell_clip(mut self, clip: f32) -> Self {
        self.cell_clip = Some(clip);
        self
    }

    /// Sets TF's `proj_clip` (needs a projection).
    pub fn with_proj_clip(mut self, clip: f32) -> Self {
        self.proj_clip = Some(clip);
        self
    }

    /// Sets ONNX's `clip` (activation inputs).
    pub fn with_clip(mut self, clip: f32) -> Self {
        self.clip = Some(clip);
        self
    }

    /// Sets ONNX's `input_forget` (coupled input and forget gates).
    pub fn with_input_forget(mut self, on: bool) -> Self {
        self.input_forget = on;
        self
    }

    /// Accepts (`true`) or rejects (`false`, the default) weights that are
    /// NaN or infinite; see [`LstmConfig::allow_non_finite_weights`].
    pub fn with_non_finite_weights(mut self, allow: bool) -> Self {
        self.allow_non_finite_weights = allow;
        self
    }

    /// Size of the recurrent state fed back: the projection size, or H.
    pub fn n_recurrent(&self) -> usize {
        self.projection.unwrap_or(self.n_hidden)
    }

    /// Whether only the standard cell's switches are set (no diagonal
    /// peephole, projection, forget bias, clips or coupled gates); the
    /// seed's matrix peephole and head are allowed.
    pub fn is_seed_family(&self) -> bool {
        self.peephole != Peephole::Diagonal
            && self.projection.is_none()
            && self.forget_bias == 0.0
            && self.cell_clip.is_none()
            && self.proj_clip.is_none()
            && self.clip.is_none()
            && !self.input_forget
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

    /// Width of one output row: the head size, else the projection size,
    /// else `n_hidden`.
    pub fn n_output(&self) -> usize {
        self.head.unwrap_or(self.n_recurrent())
    }

    /// Rows of the concatenated gate matrix: `n_input + n_recurrent`.
    pub fn gate_rows(&self) -> usize {
        // Saturating: an unvalidated config must not panic here.
        self.n_input.saturating_add(self.n_recurrent())
    }

    /// Columns of the concatenated gate matrix: `4 * n_hidden`.
    pub fn gate_cols(&self) -> usize {
        self.n_hidden.saturating_mul(4)
    }

    /// Floating-point operations for one sample through one step, counting a
    /// multiply-add as 2: `2·(n_in+R)·4H` for the gates (R = projection or
    /// H), `+ 2·H·H` for the matrix peephole, `+ 2·H·R` for a projection,
    /// `+ 2·H·P` for a head of size P. Activations and the element-wise
    /// update are not counted.
    pub fn flops_per_sample_step(&self) -> f64 {
        let (n, h, r) = (
            self.n_input as f64,
            self.n_hidden as f64,
            self.n_recurrent() as f64,
        );
        let mut f = 2.0 * (n + r) * 4.0 * h;
        if self.projection.is_some() {
            f += 2.0 * h * r;
        }
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
        if let Some(p) = self.projection {
            if p == 0 {
                return Err(Error::Config("projection size must be at least 1".into()));
            }
            if p > self.n_hidden {
                return Err(Error::Config(format!(
                    "projection size {p} is larger than n_hidden {} (a projection reduces the recurrent state)",
                    self.n_hidden
                )));
            }
            if self.head.is_some() {
                return Err(Error::Config(
                    "a head and a projection together are not supported (with a projection the output is r)".into(),
                ));
            }
        }
        if self.proj_clip.is_some() && self.projection.is_none() {
            return Err(Error::Config("proj_clip needs a projection".into()));
        }
        for (name, v) in [
            ("cell_clip", self.cell_clip),
            ("proj_clip", self.proj_clip),
            ("clip", self.clip),
        ] {
            if let Some(v) = v
                && !(v.is_finite() && v > 0.0)
            {
                return Err(Error::Config(format!(
                    "{name} must be a positive finite number, got {v}"
                )));
            }
        }
        if !self.forget_bias.is_finite() {
            return Err(Error::Config(format!(
                "forget_bias must be finite, got {}",
                self.forget_bias
            )));
        }
        if self.peephole == Peephole::Matrix && (self.clip.is_some() || self.input_forget) {
            return Err(Error::Config(
                "the matrix peephole does not combine with ONNX clip or input_forget (ONNX has no matrix peephole)".into(),
            ));
        }
        self.check_sizes()?;
        Ok(())
    }

    /// Every weight tensor's element count, computed with checked
    /// arithmetic, within [`MAX_TENSOR_ELEMENTS`].
    fn check_sizes(&self) -> Result<()> {
        let too_large = |what: &str, dims: String| {
            Error::Config(format!(
                "sizes n_input={} n_hidden={}: {what} {dims} exceeds the limit of {MAX_TENSOR_ELEMENTS} elements per tensor",
                self.n_input, self.n_hidden
            ))
        };
        let (n, h) = (self.n_input, self.n_hidden);
        let r = self.n_recurrent();
        let mut tensors = vec![("the gate matrix", n.checked_add(r), h.checked_mul(4))];
        if self.peephole == Peephole::Matrix {
            tensors.push(("the peephole v_o", Some(h), Some(h)));
        }
        if let Some(p) = self.head {
            tensors.push(("the head w_h", Some(h), Some(p)));
        }
        if let Some(p) = self.projection {
            tensors.push(("the projection w_p", Some(h), Some(p)));
        }
        for (what, rows, cols) in tensors {
            let dims = format!(
                "[{}, {}]",
                rows.map_or("overflow".into(), |v| v.to_string()),
                cols.map_or("overflow".into(), |v| v.to_string())
            );
            match rows.zip(cols).and_then(|(a, b)| a.checked_mul(b)) {
                Some(e) if e <= MAX_TENSOR_ELEMENTS => {}
                _ => return Err(too_large(what, dims)),
            }
        }
        Ok(())
    }

    /// Checks a batch size against this config: nonzero, and the widest
    /// per-step buffer (`batch × max(4H, n_in, n_output)`) within
    /// [`MAX_TENSOR_ELEMENTS`].
    pub(crate) fn validate_batch(&self, batch: usize) -> Result<()> {
        if batch == 0 {
            return Err(Error::Invalid("batch size must be at least 1".into()));
        }
        let widest = self.gate_cols().max(self.n_input).max(self.n_output());
        match batch.checked_mul(widest) {
            Some(n) if n <= MAX_TENSOR_ELEMENTS => Ok(()),
            _ => Err(Error::Invalid(format!(
                "batch size {batch} is too large: a step's widest buffer, {batch} × {widest}, exceeds the limit of {MAX_TENSOR_ELEMENTS} elements"
            ))),
        }
    }
}
