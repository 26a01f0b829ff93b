//! Whole Keras models as Keras saves them: `model.save("m.keras")` (Keras 3
//! or tf-keras: a zip of `config.json` and `model.weights.h5`) and the
//! legacy `model.save("m.h5")` of tf-keras (one HDF5 file: a
//! `model_config` attribute and a `model_weights` group). The config says
//! what the weights mean; the LSTM layers become an [`LstmStack`].
//!
//! What is read from each `LSTM` (or `Bidirectional(LSTM)`) layer's config:
//! `units`, `activation` and `recurrent_activation` (only `tanh` and
//! `sigmoid` run: anything else is an error naming the layer — never run
//! as tanh), `use_bias`, `return_sequences`, `go_backwards` (first LSTM
//! layer only: the input is reversed in time, as Keras does, and the
//! output stays in that order), `time_major` (tf-keras; otherwise Keras is
//! batch-first), the `Bidirectional` `merge_mode` (`concat` and `sum`, the
//! merges [`LstmStack`] has). `unit_forget_bias`, initializers,
//! regularizers, constraints and dropout only matter in training.
//!
//! Layers around the LSTMs (`InputLayer`, `Embedding`, `Masking`,
//! `Dense`, …) are not run: [`KerasModel::notes`] lists them. Between two
//! LSTM layers only layers that are the identity at inference (`Dropout`
//! and its kin) are allowed; anything else there is an error, since the
//! LSTMs then are not one stack. A weights-only `.weights.h5` is refused:
//! it has no config to say the activations, directions and order.

use std::io::Read;
use std::path::Path;

use serde_json::Value;

use super::{LoadOptions, build_cell};
use crate::config::LstmConfig;
use crate::error::{Error, Result, shape_str, try_filled};
use crate::io::Tensor;
use crate::io::hdf5::{H5, is_hdf5};
use crate::weights::LstmWeights;
use crate::{LstmStack, Merge, SeqOptions, StackLayer, StackState};

/// The largest `config.json` (or `model_config` attribute) read.
pub const MAX_KERAS_CONFIG_BYTES: u64 = 64 << 20;

/// Layers that are the identity at inference: allowed between LSTMs.
const IDENTITY_AT_INFERENCE: [&str; 6] = [
    "Dropout",
    "SpatialDropout1D",
    "GaussianDropout",
    "GaussianNoise",
    "AlphaDropout",
    "ActivityRegularization",
];

/// The LSTM layers of a Keras model, as a stack, with how Keras runs them.
#[derive(Clone, Debug)]
pub struct KerasModel {
    stack: LstmStack,
    merge: Merge,
    batch_first: bool,
    reverse_input: bool,
    return_sequences: bool,
    layers: Vec<String>,
    notes: Vec<String>,
}

impl KerasModel {
    /// The LSTM layers (each `Bidirectional` one layer with a reverse cell).
    pub fn stack(&self) -> &LstmStack {
        &self.stack
    }

    /// The stack, with settings changed (threads, precision).
    pub fn map_stack(mut self, f: impl FnOnce(LstmStack) -> Result<LstmStack>) -> Result<Self> {
        self.stack = f(self.stack)?;
        Ok(self)
    }

    /// How a `Bidirectional` layer merges its directions.
    pub fn merge(&self) -> Merge {
        self.merge
    }

    /// Inputs and outputs are `[B, T, ·]` (Keras' default; `false` for a
    /// tf-keras `time_major=True` model: `[T, B, ·]`).
    pub fn batch_first(&self) -> bool {
        self.batch_first
    }

    /// The first LSTM layer has `go_backwards=True`: [`forward`](Self::forward)
    /// reverses the input in time and leaves the output in that order.
    pub fn reverse_input(&self) -> bool {
        self.reverse_input
    }

    /// The last LSTM layer returns the whole sequence (else its last
    /// output only: `[B, width]`).
    pub fn return_sequences(&self) -> bool {
        self.return_sequences
    }

    /// The names of the LSTM layers, in order.
    pub fn layer_names(&self) -> &[String] {
        &self.layers
    }

    /// What was not run or not read (layers around the LSTMs, masking),
    /// one line each.
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// The width of one output: the stack's.
    pub fn output_size(&self) -> usize {
        self.stack.output_size()
    }

    /// Runs the model as Keras does: `xs` is `[B, T, n]` (`[T, B, n]` for a
    /// time-major model), `B` = the state's batch; `out` is the same layout
    /// with the output width, or `[B, width]` when the last layer does not
    /// return sequences (its final output: the concatenated, or summed,
    /// last states of its directions). `seq_lens` have PyTorch
    /// `PackedSequence` semantics (see [`SeqOptions`]), refused with
    /// `go_backwards`.
    pub fn forward(
        &self,
        st: &mut StackState,
        xs: &[f32],
        out: &mut [f32],
        seq_lens: Option<&[usize]>,
    ) -> Result<()> {
        let (b, n, w) = (st.batch(), self.stack.input_size(), self.output_size());
        let t = if b == 0 || n == 0 {
            0
        } else {
            xs.len() / (b * n)
        };
        if t == 0 || t * b * n != xs.len() {
            return Err(Error::Shape {
                tensor: "x".into(),
                expected: format!("[B = {b}, T ≥ 1, {n}]"),
                got: format!("{} values", xs.len()),
            });
        }
        let opts = SeqOptions {
            batch_first: self.batch_first,
            seq_lens,
        };
        let flipped;
        let xs = if self.reverse_input {
            if seq_lens.is_some() {
                return Err(Error::Unsupported(
                    "sequence lengths with go_backwards (Keras reverses the padded sequence)"
                        .into(),
                ));
            }
            let mut v = try_filled(xs.len(), 0f32, "the reversed input")?;
            for s in 0..t {
                for i in 0..b {
                    let (src, dst) = if self.batch_first {
                        ((i * t + s) * n, (i * t + (t - 1 - s)) * n)
                    } else {
                        ((s * b + i) * n, ((t - 1 - s) * b + i) * n)
                    };
                    v[dst..dst + n].copy_from_slice(&xs[src..src + n]);
                }
            }
            flipped = v;
            &flipped[..]
        } else {
            xs
        };
        if self.return_sequences {
            return self.stack.forward(st, xs, out, opts);
        }
        if out.len() != b * w {
            return Err(Error::Shape {
                tensor: "out".into(),
                expected: shape_str(&[b, w]),
                got: format!("{} values", out.len()),
            });
        }
        let mut y = try_filled(t * b * w, 0f32, "the output sequence")?;
        self.stack.forward(st, xs, &mut y, opts)?;
        let last = self.stack.layers().len() - 1;
        let (f, r) = st.layer(last).expect("the last layer has a state");
        let p = self.stack.layers()[last].forward.config().n_output();
        for i in 0..b {
            let fm = &f.m()[i * p..(i + 1) * p];
            let row = &mut out[i * w..(i + 1) * w];
            match (r, self.merge) {
                (Some(r), Merge::Concat) => {
                    row[..p].copy_from_slice(fm);
                    row[p..].copy_from_slice(&r.m()[i * p..(i + 1) * p]);
                }
                (Some(r), Merge::Sum) => {
                    for (o, (a, c)) in row.iter_mut().zip(fm.iter().zip(&r.m()[i * p..])) {
                        *o = a + c;
                    }
                }
                (None, _) => row.copy_from_slice(fm),
            }
        }
        Ok(())
    }
}

/// Loads a Keras model saved as `.keras` (Keras 3 or tf-keras) or as a
/// legacy tf-keras `.h5`, told apart by content; see the module docs.
pub fn keras_model(path: impl AsRef<Path>) -> Result<KerasModel> {
    keras_model_with(path, LoadOptions::default())
}

/// [`keras_model`] with [`LoadOptions`].
pub fn keras_model_with(path: impl AsRef<Path>, opts: LoadOptions) -> Result<KerasModel> {
    let path = path.as_ref();
    let bytes = crate::io::read_whole(path)?;
    keras_model_from_bytes_with(&bytes, path, opts)
}

/// [`keras_model`] from a file's bytes; `name` names them in messages.
pub fn keras_model_from_bytes(bytes: &[u8], name: impl AsRef<Path>) -> Result<KerasModel> {
    keras_model_from_bytes_with(bytes, name, LoadOptions::default())
}

/// Whether `bytes` look like a Keras model file this module reads: a zip
/// holding `config.json`, or an HDF5 file.
pub fn is_keras_model(bytes: &[u8]) -> bool {
    if is_hdf5(bytes) {
        return true;
    }
    bytes.starts_with(b"PK")
        && zip::ZipArchive::new(std::io::Cursor::new(bytes))
            .is_ok_and(|z| z.index_for_name("config.json").is_some())
}

/// [`keras_model_from_bytes`] with [`LoadOptions`].
pub fn keras_model_from_bytes_with(
    bytes: &[u8],
    name: impl AsRef<Path>,
    opts: LoadOptions,
) -> Result<KerasModel> {
    let path = name.as_ref();
    if is_hdf5(bytes) {
        return from_legacy_h5(bytes, path, opts);
    }
    if !bytes.starts_with(b"PK") {
        return Err(fmt_err(
            path,
            "neither a .keras zip (config.json + model.weights.h5) nor an HDF5 .h5 file",
        ));
    }
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes))
        .map_err(|e| fmt_err(path, format!("not a zip: {e}")))?;
    let config = member(&mut zip, path, "config.json", MAX_KERAS_CONFIG_BYTES)?;
    let config = parse_json(&config, path, "config.json")?;
    let weights = member(
        &mut zip,
        path,
        "model.weights.h5",
        crate::io::MAX_PIPE_DATA_BYTES,
    )?;
    let wpath = path.join("model.weights.h5");
    let h5 = H5::open(&weights, &wpath)?;
    let layers = parse_model(&config, path)?;
    build(&layers, &Weights::V3(&h5), path, opts)
}

/// A zip member's bytes, at most `limit`, read fallibly.
fn member(
    zip: &mut zip::ZipArchive<std::io::Cursor<&[u8]>>,
    path: &Path,
    name: &str,
    limit: u64,
) -> Result<Vec<u8>> {
    let dir_start = zip.central_directory_start();
    let f = zip.by_name(name).map_err(|_| {
        fmt_err(
            path,
            format!("no `{name}` in the zip (a .keras file holds config.json and model.weights.h5; an .npz of weights loads with --format keras-npz)"),
        )
    })?;
    let size = f.size();
    if let Some(why) = crate::io::zip_member_claim(
        size,
        f.compressed_size(),
        f.compression(),
        f.header_start(),
        dir_start,
    ) {
        return Err(fmt_err(path, format!("`{name}`: {why}")));
    }
    if size > limit {
        return Err(fmt_err(
            path,
            format!("`{name}` declares {size} bytes (at most {limit})"),
        ));
    }
    let mut v = Vec::new();
    v.try_reserve_exact(size as usize)
        .map_err(|_| Error::Alloc {
            what: format!("{name} in {}", path.display()),
            bytes: size as usize,
        })?;
    f.take(limit)
        .read_to_end(&mut v)
        .map_err(|e| fmt_err(path, format!("`{name}`: {e}")))?;
    Ok(v)
}

fn parse_json(bytes: &[u8], path: &Path, what: &str) -> Result<Value> {
    serde_json::from_slice(bytes).map_err(|e| fmt_err(path, format!("{what}: not valid JSON: {e}")))
}

fn fmt_err(path: &Path, reason: impl ToString) -> Error {
    Error::Format {
        path: path.to_path_buf(),
        format: "Keras",
        reason: reason.to_string(),
    }
}

/// A legacy tf-keras `.h5`: the config in the root's `model_config`.
fn from_legacy_h5(bytes: &[u8], path: &Path, opts: LoadOptions) -> Result<KerasModel> {
    let h5 = H5::open(bytes, path)?;
    let Some(cfg) = h5.attr_strings("", "model_config")? else {
        let hint = if h5.exists("layers")? {
            "a weights-only file (model.save_weights / .weights.h5): it holds no config, so \
             the activations, directions and layer order are unknown; save the whole model \
             (model.save(\"m.keras\")) and load that"
        } else {
            "no `model_config` attribute: not a Keras model file"
        };
        return Err(fmt_err(path, hint));
    };
    let text = cfg.concat();
    if text.len() as u64 > MAX_KERAS_CONFIG_BYTES {
        return Err(fmt_err(path, "model_config is too large"));
    }
    let config = parse_json(text.as_bytes(), path, "model_config")?;
    let layers = parse_model(&config, path)?;
    build(&layers, &Weights::Legacy(&h5), path, opts)
}

/// Settings of one LSTM (one direction).
#[derive(Clone, Debug)]
struct LstmSpec {
    name: String,
    units: usize,
    use_bias: bool,
    return_sequences: bool,
    go_backwards: bool,
    time_major: bool,
}

#[derive(Clone, Debug)]
enum Kind {
    Lstm(LstmSpec),
    Bidi {
        fwd: LstmSpec,
        bwd: LstmSpec,
        merge: Merge,
    },
    Other,
}

#[derive(Clone, Debug)]
struct Layer {
    name: String,
    class: String,
    kind: Kind,
}

fn str_of<'v>(v: &'v Value, key: &str) -> Option<&'v str> {
    v.get(key).and_then(Value::as_str)
}

/// The model's layers, in order, checked to be a chain.
fn parse_model(config: &Value, path: &Path) -> Result<Vec<Layer>> {
    let class = str_of(config, "class_name").unwrap_or("?");
    if !matches!(class, "Sequential" | "Functional" | "Model") {
        return Err(fmt_err(
            path,
            format!(
                "a model of class `{class}`: only Sequential and Functional models list their layers in the config (a subclassed model does not)"
            ),
        ));
    }
    let list = config
        .get("config")
        .and_then(|c| c.get("layers"))
        .and_then(Value::as_array)
        .ok_or_else(|| fmt_err(path, "the config has no `config.layers` list"))?;
    let mut out: Vec<Layer> = Vec::new();
    for l in list {
        let lclass = str_of(l, "class_name").unwrap_or("?").to_string();
        let c = l.get("config").unwrap_or(&Value::Null);
        let name = str_of(c, "name")
            .or_else(|| str_of(l, "name"))
            .unwrap_or("?")
            .to_string();
        let what = |s: &str| format!("layer `{name}` ({lclass}): {s}");
        let kind = match lclass.as_str() {
            "LSTM" => Kind::Lstm(lstm_spec(c, &name, path)?),
            "Bidirectional" => {
                let inner = c
                    .get("layer")
                    .ok_or_else(|| fmt_err(path, what("no wrapped `layer` in its config")))?;
                let iclass = str_of(inner, "class_name").unwrap_or("?");
                if iclass != "LSTM" {
                    return Err(Error::Unsupported(format!(
                        "{}: {}",
                        path.display(),
                        what(&format!("wraps a {iclass}; only LSTM layers run"))
                    )));
                }
                let icfg = inner.get("config").unwrap_or(&Value::Null);
                let fwd = lstm_spec(icfg, &name, path)?;
                if fwd.go_backwards {
                    return Err(Error::Unsupported(format!(
                        "{}: {}",
                        path.display(),
                        what("its wrapped LSTM has go_backwards=True")
                    )));
                }
                let bwd = match c.get("backward_layer") {
                    Some(b) if !b.is_null() => {
                        let bcls = str_of(b, "class_name").unwrap_or("?");
                        if bcls != "LSTM" {
                            return Err(Error::Unsupported(format!(
                                "{}: {}",
                                path.display(),
                                what(&format!("its backward layer is a {bcls}"))
                            )));
                        }
                        lstm_spec(b.get("config").unwrap_or(&Value::Null), &name, path)?
                    }
                    _ => fwd.clone(),
                };
                let merge = match c.get("merge_mode").and_then(Value::as_str) {
                    Some("concat") => Merge::Concat,
                    Some("sum") => Merge::Sum,
                    other => {
                        return Err(Error::Unsupported(format!(
                            "{}: {}",
                            path.display(),
                            what(&format!(
                                "merge_mode {}: LstmStack merges by concat or sum only",
                                other.map_or("None".into(), |m| format!("\"{m}\""))
                            ))
                        )));
                    }
                };
                if bwd.units != fwd.units || bwd.use_bias != fwd.use_bias {
                    return Err(Error::Unsupported(format!(
                        "{}: {}",
                        path.display(),
                        what(
                            "its backward layer differs from the forward one in units or use_bias"
                        )
                    )));
                }
                Kind::Bidi { fwd, bwd, merge }
            }
            "Sequential" | "Functional" | "Model" => {
                return Err(Error::Unsupported(format!(
                    "{}: {}",
                    path.display(),
                    what("a nested model; save the model whose layers are the LSTMs")
                )));
            }
            _ => Kind::Other,
        };
        out.push(Layer {
            name,
            class: lclass,
            kind,
        });
    }
    if class != "Sequential" {
        check_chain(list, &out, path)?;
    }
    Ok(out)
}

/// A functional model must be a chain: each layer fed by the one before.
fn check_chain(list: &[Value], layers: &[Layer], path: &Path) -> Result<()> {
    for (k, (l, spec)) in list.iter().zip(layers).enumerate().skip(1) {
        let mut inbound = Vec::new();
        if let Some(n) = l.get("inbound_nodes") {
            inbound_names(n, &mut inbound, 0);
        }
        inbound.dedup();
        let prev = &layers[k - 1].name;
        if inbound.len() != 1 || &inbound[0] != prev {
            return Err(Error::Unsupported(format!(
                "{}: layer `{}` ({}) takes its input from {:?}, not from the layer before it (`{prev}`): only a chain of layers is read",
                path.display(),
                spec.name,
                spec.class,
                inbound
            )));
        }
    }
    Ok(())
}

/// The layer names an `inbound_nodes` entry refers to: Keras 3's
/// `keras_history: [name, node, tensor]` and tf-keras' `[name, node,
/// tensor, kwargs]` lists.
fn inbound_names(v: &Value, out: &mut Vec<String>, depth: usize) {
    if depth > 16 {
        return;
    }
    match v {
        Value::Object(m) => {
            if let Some(Value::Array(h)) = m.get("keras_history")
                && let Some(Value::String(s)) = h.first()
            {
                out.push(s.clone());
                return;
            }
            for x in m.values() {
                inbound_names(x, out, depth + 1);
            }
        }
        Value::Array(a) => {
            if let [Value::String(s), Value::Number(_), Value::Number(_), ..] = a.as_slice() {
                out.push(s.clone());
                return;
            }
            for x in a {
                inbound_names(x, out, depth + 1);
            }
        }
        _ => {}
    }
}

/// An activation's name: `"tanh"`, or a serialized function's.
fn activation_name(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Object(m) => match m.get("config") {
            Some(Value::String(s)) => Some(s.clone()),
            _ => m
                .get("class_name")
                .and_then(Value::as_str)
                .map(str::to_string),
        },
        _ => None,
    }
}

fn lstm_spec(c: &Value, layer: &str, path: &Path) -> Result<LstmSpec> {
    let name = str_of(c, "name").unwrap_or(layer).to_string();
    let bad = |s: String| fmt_err(path, format!("LSTM layer `{name}`: {s}"));
    let units = c
        .get("units")
        .and_then(Value::as_u64)
        .filter(|&u| u > 0 && u <= (crate::MAX_TENSOR_ELEMENTS / 4) as u64)
        .ok_or_else(|| {
            bad(format!(
                "`units` {} is not an integer in 1..={}",
                c.get("units").map_or("(none)".into(), |v| v.to_string()),
                crate::MAX_TENSOR_ELEMENTS / 4
            ))
        })? as usize;
    for (key, want) in [("activation", "tanh"), ("recurrent_activation", "sigmoid")] {
        let got = activation_name(c.get(key)).unwrap_or_else(|| want.to_string());
        if got != want {
            return Err(Error::Unsupported(format!(
                "{}: LSTM layer `{name}`: {key}=\"{got}\": the engine runs {want} there only (activation tanh, recurrent_activation sigmoid); nothing was run",
                path.display()
            )));
        }
    }
    let flag = |k: &str, default: bool| c.get(k).and_then(Value::as_bool).unwrap_or(default);
    Ok(LstmSpec {
        name,
        units,
        use_bias: flag("use_bias", true),
        return_sequences: flag("return_sequences", false),
        go_backwards: flag("go_backwards", false),
        time_major: flag("time_major", false),
    })
}

/// Where the weights are: Keras 3's `layers/<lstm, lstm_1…>/cell/vars/0…`
/// or legacy `model_weights/<layer>/` by `weight_names`.
enum Weights<'a, 'b> {
    V3(&'b H5<'a>),
    Legacy(&'b H5<'a>),
}

/// Kernel, recurrent kernel and bias (if any) of one direction.
type CellTensors = (Tensor, Tensor, Option<Tensor>);

impl Weights<'_, '_> {
    /// The tensors of the LSTM layer `layer` (config name), the `index`-th
    /// layer of its class (Keras 3 names the groups by class: `lstm`,
    /// `lstm_1`, …), direction `dir` ("" for a plain LSTM, else
    /// "forward"/"backward").
    fn cell(&self, layer: &Layer, index: usize, dir: &str, use_bias: bool) -> Result<CellTensors> {
        match self {
            Weights::V3(h5) => {
                let snake = if layer.class == "LSTM" {
                    "lstm"
                } else {
                    "bidirectional"
                };
                let key = if index == 0 {
                    format!("layers/{snake}")
                } else {
                    format!("layers/{snake}_{index}")
                };
                // Keras 3 records the layer's name: check it is this one.
                if let Some(n) = h5
                    .attr_strings(&format!("{key}/vars"), "name")
                    .ok()
                    .flatten()
                    && n.first().is_some_and(|n| n != &layer.name)
                {
                    return Err(fmt_err(
                        Path::new(""),
                        format!(
                            "weights group {key} belongs to layer `{}`, but the config's {} layer number {index} is `{}`",
                            n[0], layer.class, layer.name
                        ),
                    ));
                }
                let base = if dir.is_empty() {
                    format!("{key}/cell/vars")
                } else {
                    format!("{key}/{dir}_layer/cell/vars")
                };
                let names = h5.children(&base)?;
                let want = if use_bias { 3 } else { 2 };
                if names.len() != want {
                    return Err(Error::UnexpectedTensor {
                        tensor: base,
                        why: format!(
                            "layer `{}` has {} weights there, expected {want} (kernel, recurrent_kernel{})",
                            layer.name,
                            names.len(),
                            if use_bias { ", bias" } else { "" }
                        ),
                    });
                }
                let k = h5.dataset(&format!("{base}/0"))?;
                let r = h5.dataset(&format!("{base}/1"))?;
                let b = if use_bias {
                    Some(h5.dataset(&format!("{base}/2"))?)
                } else {
                    None
                };
                Ok((k, r, b))
            }
            Weights::Legacy(h5) => {
                let group = format!("model_weights/{}", layer.name);
                let names = h5.attr_strings(&group, "weight_names")?.ok_or_else(|| {
                    Error::MissingTensor {
                        tensor: format!("{group} (attribute weight_names)"),
                        source_name: "the legacy .h5 file".into(),
                    }
                })?;
                let mine: Vec<&String> = names
                    .iter()
                    .filter(|n| {
                        dir.is_empty() || n.split('/').any(|p| p.starts_with(&format!("{dir}_")))
                    })
                    .collect();
                let find = |suffix: &str| {
                    mine.iter().find(|n| {
                        let last = n.rsplit('/').next().unwrap_or("");
                        last.split(':').next() == Some(suffix)
                    })
                };
                let want = if use_bias { 3 } else { 2 };
                if mine.len() != want {
                    return Err(Error::UnexpectedTensor {
                        tensor: format!("{group} {dir}"),
                        why: format!(
                            "layer `{}` lists {} weights {mine:?}, expected {want}",
                            layer.name,
                            mine.len()
                        ),
                    });
                }
                let get = |s: &str| -> Result<Tensor> {
                    let n = find(s).ok_or_else(|| Error::MissingTensor {
                        tensor: format!("{group}/…/{s}"),
                        source_name: format!("weight_names {mine:?}"),
                    })?;
                    h5.dataset(&format!("{group}/{n}"))
                };
                let k = get("kernel")?;
                let r = get("recurrent_kernel")?;
                let b = if use_bias { Some(get("bias")?) } else { None };
                Ok((k, r, b))
            }
        }
    }
}

/// One cell's config and weights from Keras' tensors (same gate order, i,
/// f, c, o, and orientation as ours: a checked copy).
fn cell_weights(
    (k, r, b): CellTensors,
    spec: &LstmSpec,
    n_in: Option<usize>,
    path: &Path,
) -> Result<(LstmConfig, LstmWeights)> {
    let u = spec.units;
    let name = &spec.name;
    let shape_err = |t: &str, want: String, got: &[usize]| Error::Shape {
        tensor: format!("{t} of LSTM layer `{name}` in {}", path.display()),
        expected: want,
        got: shape_str(got),
    };
    let n = match k.shape.as_slice() {
        [n, g] if *g == 4 * u && n_in.is_none_or(|w| w == *n) => *n,
        got => {
            let rows = n_in.map_or("input".to_string(), |w| w.to_string());
            return Err(shape_err("kernel", format!("[{rows}, {}]", 4 * u), got));
        }
    };
    if r.shape != [u, 4 * u] {
        return Err(shape_err(
            "recurrent_kernel",
            shape_str(&[u, 4 * u]),
            &r.shape,
        ));
    }
    let cfg = LstmConfig::new(n, u);
    cfg.validate()?;
    let mut w = LstmWeights::zeros(&cfg)?;
    w.gates[..n * 4 * u].copy_from_slice(&k.data);
    w.gates[n * 4 * u..].copy_from_slice(&r.data);
    if let Some(b) = b {
        if b.shape != [4 * u] {
            return Err(shape_err("bias", shape_str(&[4 * u]), &b.shape));
        }
        w.bias.copy_from_slice(&b.data);
    }
    Ok((cfg, w))
}

fn build(
    layers: &[Layer],
    weights: &Weights,
    path: &Path,
    opts: LoadOptions,
) -> Result<KerasModel> {
    let is_lstm = |l: &Layer| !matches!(l.kind, Kind::Other);
    let first = layers.iter().position(is_lstm).ok_or_else(|| {
        Error::Unsupported(format!(
            "{}: the model has no LSTM layer (layers: {})",
            path.display(),
            layers
                .iter()
                .map(|l| format!("{} ({})", l.name, l.class))
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })?;
    let last = layers.iter().rposition(is_lstm).unwrap_or(first);
    let mut notes = Vec::new();
    for l in &layers[..first] {
        if l.class == "InputLayer" {
            continue;
        }
        let extra = if l.class == "Masking" {
            " (Keras skips the masked steps; give right-padded batches their lengths with --seq-lens instead)"
        } else {
            ""
        };
        notes.push(format!(
            "layer `{}` ({}) before the LSTMs is not run: the input must be what it feeds the first LSTM{extra}",
            l.name, l.class
        ));
    }
    for l in &layers[first..=last] {
        if !is_lstm(l) {
            if IDENTITY_AT_INFERENCE.contains(&l.class.as_str()) {
                notes.push(format!(
                    "layer `{}` ({}) between the LSTMs is the identity at inference",
                    l.name, l.class
                ));
            } else {
                return Err(Error::Unsupported(format!(
                    "{}: layer `{}` ({}) sits between LSTM layers: the LSTMs are not one stack; nothing was run",
                    path.display(),
                    l.name,
                    l.class
                )));
            }
        }
    }
    for l in &layers[last + 1..] {
        notes.push(format!(
            "layer `{}` ({}) after the LSTMs is not run: the output is the last LSTM layer's",
            l.name, l.class
        ));
    }

    let mut stack_layers = Vec::new();
    let mut names = Vec::new();
    let (mut n_lstm, mut n_bidi) = (0, 0);
    let mut merge = None;
    let mut time_major = None;
    let mut n_in = None;
    let lstms: Vec<&Layer> = layers[first..=last].iter().filter(|l| is_lstm(l)).collect();
    let mut reverse_input = false;
    let mut return_sequences = true;
    for (k, l) in lstms.iter().enumerate() {
        let at_end = k + 1 == lstms.len();
        let (fwd_spec, built) = match &l.kind {
            Kind::Lstm(s) => {
                let t = weights
                    .cell(l, n_lstm, "", s.use_bias)
                    .map_err(|e| in_file(e, path))?;
                n_lstm += 1;
                let (cfg, w) = cell_weights(t, s, n_in, path)?;
                let fwd = build_cell(cfg, w, opts, path, &format!("layer `{}`", l.name))?;
                if s.go_backwards {
                    if k > 0 {
                        return Err(Error::Unsupported(format!(
                            "{}: LSTM layer `{}` has go_backwards=True but is not the first LSTM layer (only the first may reverse its input)",
                            path.display(),
                            l.name
                        )));
                    }
                    reverse_input = true;
                }
                (
                    s,
                    StackLayer {
                        forward: fwd,
                        backward: None,
                    },
                )
            }
            Kind::Bidi { fwd, bwd, merge: m } => {
                if merge.is_some_and(|x| x != *m) {
                    return Err(Error::Unsupported(format!(
                        "{}: Bidirectional layers with different merge modes",
                        path.display()
                    )));
                }
                merge = Some(*m);
                let tf = weights
                    .cell(l, n_bidi, "forward", fwd.use_bias)
                    .map_err(|e| in_file(e, path))?;
                let tb = weights
                    .cell(l, n_bidi, "backward", bwd.use_bias)
                    .map_err(|e| in_file(e, path))?;
                n_bidi += 1;
                let (cf, wf) = cell_weights(tf, fwd, n_in, path)?;
                let (cb, wb) = cell_weights(tb, bwd, n_in, path)?;
                let f = build_cell(cf, wf, opts, path, &format!("layer `{}` forward", l.name))?;
                let b = build_cell(cb, wb, opts, path, &format!("layer `{}` backward", l.name))?;
                (
                    fwd,
                    StackLayer {
                        forward: f,
                        backward: Some(b),
                    },
                )
            }
            Kind::Other => continue, // filtered above
        };
        if time_major.is_some_and(|t| t != fwd_spec.time_major) {
            return Err(Error::Unsupported(format!(
                "{}: LSTM layers differ in time_major",
                path.display()
            )));
        }
        time_major = Some(fwd_spec.time_major);
        if !fwd_spec.return_sequences && !at_end {
            return Err(Error::Unsupported(format!(
                "{}: LSTM layer `{}` has return_sequences=False but another LSTM layer follows it",
                path.display(),
                l.name
            )));
        }
        return_sequences = fwd_spec.return_sequences;
        let width = {
            let p = built.forward.config().n_output();
            match (&built.backward, merge.unwrap_or(Merge::Concat)) {
                (Some(_), Merge::Concat) => 2 * p,
                _ => p,
            }
        };
        n_in = Some(width);
        names.push(l.name.clone());
        stack_layers.push(built);
    }
    let merge = merge.unwrap_or(Merge::Concat);
    let stack = LstmStack::new(stack_layers, merge)?;
    Ok(KerasModel {
        stack,
        merge,
        batch_first: !time_major.unwrap_or(false),
        reverse_input,
        return_sequences,
        layers: names,
        notes,
    })
}

/// A missing-tensor error from the HDF5 reader, said to be in `path`.
fn in_file(e: Error, path: &Path) -> Error {
    match e {
        Error::MissingTensor { tensor, .. } => Error::MissingTensor {
            tensor,
            source_name: path.display().to_string(),
        },
        Error::Format {
            path: p,
            format,
            reason,
        } if p.as_os_str().is_empty() => Error::Format {
            path: path.to_path_buf(),
            format,
            reason,
        },
        e => e,
    }
}
