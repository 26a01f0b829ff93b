//! The seed exercise's next step: a character-level language model —
//! embedding → stacked LSTM → linear → softmax sampling — generating text
//! one character at a time through the same kernels, for one prompt or a
//! batch of prompts at once.
//!
//! The model file is a PyTorch state dict saved with safetensors:
//! `embedding.weight [V, E]`, `lstm.*` (an `nn.LSTM`, see
//! [`crate::import::pytorch_stack`]), `fc.weight [V, H]`, `fc.bias [V]`,
//! and `vocab [V]`: each token's Unicode code point as a float.
//! `tools/train_charlm.py` trains the shipped one ([`CharLm::shipped`]).

use std::path::Path;

use crate::error::{Error, Result, checked_elements, shape_str, try_filled, try_zeros};
use crate::import;
use crate::io::{TensorFile, read_tensors, safetensors_from_bytes};
use crate::rng::SplitMix64;
use crate::seq::pool::StreamPool;
use crate::stack::{LstmStack, SeqOptions};

/// The shipped model: trained on the Book of Genesis (KJV).
/// The most characters a model's vocabulary may have (a larger `vocab` is
/// an error before any tensor is read).
pub const MAX_VOCAB: usize = 65_536;

const SHIPPED: &[u8] = include_bytes!("../../models/charlm-genesis.safetensors");

/// How to pick the next character.
#[derive(Clone, Copy, Debug)]
pub struct Sampling {
    /// Softmax temperature; `0` means greedy (argmax).
    pub temperature: f32,
    /// Keep only the `k` most likely characters (`None`: all).
    pub top_k: Option<usize>,
    /// Seed of the sampler.
    pub seed: u64,
}

/// A character-level LSTM language model.
#[derive(Clone, Debug)]
pub struct CharLm {
    vocab: Vec<char>,
    emb: Vec<f32>,
    e: usize,
    stack: LstmStack,
    /// `fc.weight` transposed, `[H, V]`, in f64 (the logits accumulate
    /// in f64 along contiguous rows, which vectorises).
    fc_wt: Vec<f64>,
    fc_b: Vec<f32>,
}

impl CharLm {
    /// Loads a model file (see the module docs).
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        Self::from_tensors(&read_tensors(path)?)
    }

    /// The model shipped inside the crate.
    pub fn shipped() -> Result<Self> {
        Self::from_tensors(&safetensors_from_bytes(
            SHIPPED,
            Path::new("<shipped charlm-genesis.safetensors>"),
        )?)
    }

    fn from_tensors(file: &TensorFile) -> Result<Self> {
        let stack = import::pytorch_stack_from(file, "lstm.")?;
        // Shapes first (from the headers), so that no tensor is read whose
        // size is wrong or beyond a character vocabulary's.
        let (e, h) = (stack.input_size(), stack.output_size());
        let v = match file.shape("vocab")? {
            [v] if (1..=MAX_VOCAB).contains(v) => *v,
            other => {
                return Err(Error::Shape {
                    tensor: format!("vocab in {}", file.path().display()),
                    expected: format!("[V] with 1 ≤ V ≤ {MAX_VOCAB}"),
                    got: shape_str(other),
                });
            }
        };
        for (name, want) in [
            ("embedding.weight", vec![v, e]),
            ("fc.weight", vec![v, h]),
            ("fc.bias", vec![v]),
        ] {
            let got = file.shape(name)?;
            if got != want.as_slice() {
                return Err(shape_err(file, name, &want, got));
            }
        }
        let vocab_t = file.get("vocab")?;
        let vocab = vocab_t
            .data
            .iter()
            .map(|&c| char::from_u32(c as u32).filter(|_| c >= 0.0 && c.fract() == 0.0))
            .collect::<Option<Vec<char>>>()
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "{}: `vocab` holds a value that is not a character",
                    file.path().display()
                ))
            })?;
        // Shapes checked above.
        let emb = file.get("embedding.weight")?;
        let (fw, fb) = (file.get("fc.weight")?, file.get("fc.bias")?);
        let mut fc_wt = try_filled(h * v, 0.0f64, "the output layer")?;
        for j in 0..v {
            for k in 0..h {
                fc_wt[k * v + j] = fw.data[j * h + k] as f64;
            }
        }
        Ok(CharLm {
            vocab,
            emb: emb.data.clone(),
            e,
            stack,
            fc_wt,
            fc_b: fb.data.clone(),
        })
    }

    /// The characters the model knows.
    pub fn vocab(&self) -> &[char] {
        &self.vocab
    }

    /// The LSTM stack inside.
    pub fn stack(&self) -> &LstmStack {
        &self.stack
    }

    fn token(&self, c: char) -> Result<usize> {
        self.vocab.iter().position(|&v| v == c).ok_or_else(|| {
            Error::Invalid(format!(
                "the prompt has {c:?}, which the model's vocabulary lacks"
            ))
        })
    }

    /// Continues every prompt by `length` characters, all prompts as one
    /// batch through the kernels: each prompt is a stream of a
    /// [`StreamPool`](crate::StreamPool) over the stack (so the stack must
    /// be unidirectional). `on_char(i, c)` sees each new character of
    /// prompt `i` as it is made (for streaming). Returns the continuations
    /// (without the prompts).
    pub fn generate(
        &self,
        prompts: &[&str],
        length: usize,
        sampling: Sampling,
        mut on_char: impl FnMut(usize, char),
    ) -> Result<Vec<String>> {
        // Logits and sampling round to nearest whatever the caller set.
        let _nearest = crate::engine::NearestGuard::new();
        let b = prompts.len();
        if b == 0 {
            return Err(Error::Invalid("no prompt".into()));
        }
        if !(sampling.temperature >= 0.0 && sampling.temperature.is_finite()) {
            return Err(Error::Invalid(format!(
                "temperature must be ≥ 0, got {}",
                sampling.temperature
            )));
        }
        if sampling.top_k == Some(0) {
            return Err(Error::Invalid("top-k must be at least 1".into()));
        }
        let toks: Vec<Vec<usize>> = prompts
            .iter()
            .map(|p| p.chars().map(|c| self.token(c)).collect::<Result<Vec<_>>>())
            .collect::<Result<_>>()?;
        if let Some(i) = toks.iter().position(|t| t.is_empty()) {
            return Err(Error::Invalid(format!("prompt {i} is empty")));
        }
        let (e, v, h) = (self.e, self.vocab.len(), self.stack.output_size());
        let t = toks.iter().map(Vec::len).max().unwrap_or(0);
        let lens: Vec<usize> = toks.iter().map(Vec::len).collect();
        // Every buffer below is at most b·max(e, h) or b·length values.
        checked_elements(&[b, e.max(h)], "the step buffers")?;
        checked_elements(&[b, length], "the generated text (prompts × length)")?;
        // Each prompt is a stream of a pool: the prompts run one
        // character per step, each step over the streams whose prompt has
        // not ended yet, and then every stream one step per character.
        let mut pool = StreamPool::from_stack(&self.stack, b)?;
        let ids = (0..b).map(|_| pool.open()).collect::<Result<Vec<_>>>()?;
        let mut xs = try_zeros(b * e, "prompt inputs")?;
        let mut ys = try_zeros(b * h, "prompt outputs")?;
        let (mut act, mut sel) = (Vec::with_capacity(b), Vec::with_capacity(b));
        // Each prompt's last output.
        let mut last = try_zeros(b * h, "the last outputs")?;
        // (`s` indexes each active prompt's characters, not one slice.)
        #[allow(clippy::needless_range_loop)]
        for s in 0..t {
            act.clear();
            act.extend((0..b).filter(|&i| lens[i] > s));
            sel.clear();
            sel.extend(act.iter().map(|&i| ids[i]));
            for (j, &i) in act.iter().enumerate() {
                let k = toks[i][s];
                xs[j * e..(j + 1) * e].copy_from_slice(&self.emb[k * e..(k + 1) * e]);
            }
            let k = act.len();
            pool.step(&sel, &xs[..k * e], &mut ys[..k * h])?;
            for (j, &i) in act.iter().enumerate() {
                if lens[i] == s + 1 {
                    last[i * h..(i + 1) * h].copy_from_slice(&ys[j * h..(j + 1) * h]);
                }
            }
        }
        let mut rng = SplitMix64::new(sampling.seed);
        let mut logits = vec![0.0f32; v];
        let mut acc = vec![0.0f64; v];
        let mut scratch = PickScratch {
            w: vec![0.0; v],
            sorted: vec![0.0; v],
        };
        let mut x1 = vec![0.0f32; b * e];
        let mut outs = Vec::new();
        for _ in 0..b {
            let mut s = String::new();
            s.try_reserve(length).map_err(|_| Error::Alloc {
                what: "generated text".into(),
                bytes: length,
            })?;
            outs.push(s);
        }
        for step in 0..length {
            for i in 0..b {
                self.logits(&last[i * h..(i + 1) * h], &mut acc, &mut logits);
                let k = pick(&mut logits, sampling, &mut rng, &mut scratch);
                let c = self.vocab[k];
                outs[i].push(c);
                on_char(i, c);
                x1[i * e..(i + 1) * e].copy_from_slice(&self.emb[k * e..(k + 1) * e]);
            }
            if step + 1 < length {
                pool.step(&ids, &x1, &mut last)?;
            }
        }
        Ok(outs)
    }

    /// `fc.weight · y + fc.bias`, accumulated in f64 (closer to exact than
    /// PyTorch's f32, so greedy choices agree unless two logits tie to
    /// within f32 rounding).
    /// The same model with its LSTM layers in `precision` (see
    /// [`crate::Precision`]; the embedding and the output layer stay f32).
    pub fn with_precision(mut self, precision: crate::Precision) -> Result<Self> {
        self.stack = self.stack.with_precision(precision)?;
        Ok(self)
    }

    /// The same model with its LSTM layers in bf16 on the kernel named
    /// `kernel` (see [`crate::Lstm::with_bf16_kernel`]).
    pub fn with_bf16_kernel(mut self, kernel: &str) -> Result<Self> {
        self.stack = self.stack.with_bf16_kernel(kernel)?;
        Ok(self)
    }

    /// The same model with its LSTM layers in int8 on the kernel named
    /// `kernel` (see [`crate::Lstm::with_int8_kernel`]).
    pub fn with_int8_kernel(mut self, kernel: &str) -> Result<Self> {
        self.stack = self.stack.with_int8_kernel(kernel)?;
        Ok(self)
    }

    /// How well the model predicts `text`: the text is cut into `chunks`
    /// equal pieces run as one batch, and every character after a piece's
    /// first is predicted from the ones before it. Returns the mean
    /// cross-entropy in bits per character and the greedy (most likely)
    /// prediction at each of those positions, in order.
    pub fn evaluate(&self, text: &str, chunks: usize) -> Result<(f64, Vec<char>)> {
        let _nearest = crate::engine::NearestGuard::new();
        let toks: Vec<usize> = text.chars().map(|c| self.token(c)).collect::<Result<_>>()?;
        let b = chunks.max(1);
        let t = toks.len() / b;
        if t < 2 {
            return Err(Error::Invalid(format!(
                "a text of {} characters is too short for {b} pieces",
                toks.len()
            )));
        }
        let (e, v, h) = (self.e, self.vocab.len(), self.stack.output_size());
        let mut xs = try_zeros(
            checked_elements(&[t, b, e], "the evaluation inputs")?,
            "evaluation inputs",
        )?;
        for i in 0..b {
            for s in 0..t {
                let k = toks[i * t + s];
                xs[(s * b + i) * e..(s * b + i + 1) * e]
                    .copy_from_slice(&self.emb[k * e..(k + 1) * e]);
            }
        }
        let mut ys = try_zeros(
            checked_elements(&[t, b, h], "the evaluation outputs")?,
            "evaluation outputs",
        )?;
        let mut st = self.stack.new_state(b)?;
        self.stack
            .forward(&mut st, &xs, &mut ys, SeqOptions::default())?;
        let (mut acc, mut logits) = (vec![0.0f64; v], vec![0.0f32; v]);
        let (mut bits, mut n) = (0.0f64, 0usize);
        let mut greedy = Vec::with_capacity(b * (t - 1));
        for i in 0..b {
            for s in 0..t - 1 {
                self.logits(
                    &ys[(s * b + i) * h..(s * b + i + 1) * h],
                    &mut acc,
                    &mut logits,
                );
                let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
                let lse = max
                    + logits
                        .iter()
                        .map(|&l| (l as f64 - max).exp())
                        .sum::<f64>()
                        .ln();
                let next = toks[i * t + s + 1];
                bits += (lse - logits[next] as f64) / std::f64::consts::LN_2;
                n += 1;
                let arg = (0..v).fold(0, |a, j| if logits[j] > logits[a] { j } else { a });
                greedy.push(self.vocab[arg]);
            }
        }
        Ok((bits / n as f64, greedy))
    }

    fn logits(&self, y: &[f32], acc: &mut [f64], out: &mut [f32]) {
        let v = out.len();
        for (a, &b) in acc.iter_mut().zip(&self.fc_b) {
            *a = b as f64;
        }
        for (k, &yk) in y.iter().enumerate() {
            let yk = yk as f64;
            for (a, &w) in acc.iter_mut().zip(&self.fc_wt[k * v..(k + 1) * v]) {
                *a += yk * w;
            }
        }
        for (o, &a) in out.iter_mut().zip(acc.iter()) {
            *o = a as f32;
        }
    }
}

fn shape_err(file: &TensorFile, name: &str, want: &[usize], got: &[usize]) -> Error {
    Error::Shape {
        tensor: format!("{name} in {}", file.path().display()),
        expected: shape_str(want),
        got: shape_str(got),
    }
}

/// Buffers of [`pick`], allocated once per `generate` call.
struct PickScratch {
    w: Vec<f64>,
    sorted: Vec<f32>,
}

/// Greedy (temperature 0: the first maximum, like `torch.argmax`) or a
/// draw from `softmax(logits / T)` restricted to the top k.
fn pick(logits: &mut [f32], s: Sampling, rng: &mut SplitMix64, scratch: &mut PickScratch) -> usize {
    let argmax = |l: &[f32]| {
        l.iter()
            .enumerate()
            .fold(0, |best, (i, &x)| if x > l[best] { i } else { best })
    };
    if s.temperature == 0.0 {
        return argmax(logits);
    }
    if let Some(k) = s.top_k.filter(|&k| k < logits.len()) {
        let sorted = &mut scratch.sorted;
        sorted.copy_from_slice(logits);
        sorted.sort_unstable_by(|a, b| b.total_cmp(a));
        let cut = sorted[k - 1];
        let mut kept = 0;
        for l in logits.iter_mut() {
            // Keep exactly k (ties at the cut beyond k are dropped).
            if *l >= cut && kept < k {
                kept += 1;
            } else {
                *l = f32::NEG_INFINITY;
            }
        }
    }
    let m = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let w = &mut scratch.w;
    for (wi, &l) in w.iter_mut().zip(logits.iter()) {
        *wi = (((l - m) / s.temperature) as f64).exp();
    }
    let total: f64 = w.iter().sum();
    let mut u = rng.next_f32() as f64 * total;
    for (i, &wi) in w.iter().enumerate() {
        if u < wi {
            return i;
        }
        u -= wi;
    }
    argmax(logits)
}
