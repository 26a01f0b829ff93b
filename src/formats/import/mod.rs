//! Weights from the frameworks users train in, mapped to this crate's
//! canonical layout with exactly their semantics:
//!
//! * [`pytorch`]: an `nn.LSTM` (layer 0) or `nn.LSTMCell` state dict saved
//!   with safetensors: `weight_ih_l0 [4H, in]`, `weight_hh_l0 [4H, R]`,
//!   `bias_ih_l0`, `bias_hh_l0 [4H]` (summed), `weight_hr_l0 [R, H]` with
//!   `proj_size`; gate order i, f, g, o (= ours). An optional key prefix.
//! * [`keras`]: a Keras `LSTM` layer's weights in `.npz`: `kernel [in, 4U]`,
//!   `recurrent_kernel [U, 4U]`, `bias [4U]`; gate order i, f, c, o.
//! * [`tf`]: `tf.compat.v1` `LSTMCell` variables in `.npz`: `kernel
//!   [in + rec, 4U]` and `bias [4U]` in gate order i, j (= c̃), f, o;
//!   optional `w_i_diag`, `w_f_diag`, `w_o_diag [U]` and
//!   `projection/kernel [U, P]`; `forget_bias`, `cell_clip` and `proj_clip`
//!   are settings of the cell, passed in [`TfOptions`].
//!
//! * [`onnx`]: an `.onnx` model with one `LSTM` node (initializers `W`,
//!   `R`, optional `B`, `P`; gate order i, o, f, c; peephole order i, o, f;
//!   attributes `hidden_size`, `clip`, `input_forget`; forward direction,
//!   default activations), decoded with `prost`.
//!
//! Every error names the file and the missing or misshapen tensor.

use std::path::Path;

use crate::config::{LstmConfig, Peephole};
use crate::error::{Error, Result, shape_str};
use crate::io::{Tensor, TensorFile, read_tensors};
use crate::weights::LstmWeights;

fn shape_err(file: &TensorFile, name: &str, expected: String, got: &[usize]) -> Error {
    Error::Shape {
        tensor: format!("{name} in {}", file.path.display()),
        expected,
        got: shape_str(got),
    }
}

/// A 2-D tensor's `(rows, cols)`, or an error naming it.
fn dims2(file: &TensorFile, name: &str, t: &Tensor) -> Result<(usize, usize)> {
    match t.shape.as_slice() {
        [a, b] => Ok((*a, *b)),
        other => Err(shape_err(file, name, "a matrix".into(), other)),
    }
}

fn expect(file: &TensorFile, name: &str, t: &Tensor, shape: &[usize]) -> Result<()> {
    if t.shape == shape {
        Ok(())
    } else {
        Err(shape_err(file, name, shape_str(shape), &t.shape))
    }
}

/// Rejects tensors the loader did not use (a typo would otherwise be
/// silently ignored).
fn no_leftovers(file: &TensorFile, used: &[String], what: &str) -> Result<()> {
    match file.tensors.keys().find(|k| !used.contains(k)) {
        Some(extra) => Err(Error::UnexpectedTensor {
            tensor: extra.clone(),
            why: format!("not part of a {what} in {}", file.path.display()),
        }),
        None => Ok(()),
    }
}

/// Fills the canonical gate matrix from per-row, per-gate lookups:
/// `src(row, gate, unit)` for `rows` rows.
fn fill_gates(
    w: &mut LstmWeights,
    cols: usize,
    h: usize,
    row0: usize,
    rows: usize,
    src: impl Fn(usize, usize, usize) -> f32,
) {
    for r in 0..rows {
        for g in 0..4 {
            for j in 0..h {
                w.gates[(row0 + r) * cols + g * h + j] = src(r, g, j);
            }
        }
    }
}

/// Loads a PyTorch `nn.LSTM` (layer 0, unidirectional) or `nn.LSTMCell`
/// state dict from `.safetensors` (or `.npz`), keys optionally behind
/// `prefix` (e.g. `lstm.`). For more layers or both directions use
/// [`pytorch_stack`].
pub fn pytorch(path: impl AsRef<Path>, prefix: &str) -> Result<(LstmConfig, LstmWeights)> {
    let file = read_tensors(path)?;
    // nn.LSTM names its tensors `..._l0`; nn.LSTMCell has no suffix.
    let suffix = if file.tensors.contains_key(&format!("{prefix}weight_ih_l0")) {
        "_l0"
    } else {
        ""
    };
    let (cfg, w, used) = pytorch_cell(&file, prefix, suffix)?;
    // Other layers or directions: refuse instead of silently running layer 0.
    if let Some(k) = file.tensors.keys().find(|k| {
        !used.contains(k) && k.starts_with(prefix) && (k.contains("_l1") || k.contains("_reverse"))
    }) {
        return Err(Error::Unsupported(format!(
            "{}: `{k}`: this loads layer 0, forward direction, only; use pytorch_stack (lstm run handles it)",
            file.path.display()
        )));
    }
    Ok((cfg, w))
}

/// Loads every layer and direction of a PyTorch `nn.LSTM` state dict
/// (`weight_ih_l{k}`, `..._l{k}_reverse`, `weight_hr_l{k}` with
/// `proj_size`) as an [`LstmStack`](crate::LstmStack) with PyTorch's
/// concatenation of directions.
pub fn pytorch_stack(path: impl AsRef<Path>, prefix: &str) -> Result<crate::LstmStack> {
    pytorch_stack_from(&read_tensors(path)?, prefix)
}

/// [`pytorch_stack`] from tensors already read (other keys, outside
/// `prefix`, are left to the caller).
pub fn pytorch_stack_from(file: &TensorFile, prefix: &str) -> Result<crate::LstmStack> {
    let mut layers = Vec::new();
    let mut used = Vec::new();
    for k in 0.. {
        let suffix = format!("_l{k}");
        if !file
            .tensors
            .contains_key(&format!("{prefix}weight_ih{suffix}"))
        {
            if k == 0 {
                return Err(Error::MissingTensor {
                    tensor: format!("{prefix}weight_ih_l0"),
                    source_name: file.path.display().to_string(),
                });
            }
            break;
        }
        let (cfg, w, u) = pytorch_cell(file, prefix, &suffix)?;
        used.extend(u);
        let forward = crate::Lstm::new(cfg, w)?;
        let rev = format!("{suffix}_reverse");
        let backward = if file
            .tensors
            .contains_key(&format!("{prefix}weight_ih{rev}"))
        {
            let (cfg, w, u) = pytorch_cell(file, prefix, &rev)?;
            used.extend(u);
            Some(crate::Lstm::new(cfg, w)?)
        } else {
            None
        };
        layers.push(crate::StackLayer { forward, backward });
    }
    if let Some(k) = file
        .tensors
        .keys()
        .find(|k| !used.contains(k) && k.starts_with(prefix))
    {
        return Err(Error::UnexpectedTensor {
            tensor: k.clone(),
            why: format!(
                "not part of the nn.LSTM layers found in {}",
                file.path.display()
            ),
        });
    }
    if layers.iter().any(|l| l.backward.is_some()) != layers.iter().all(|l| l.backward.is_some()) {
        return Err(Error::Config(format!(
            "{}: some layers have a reverse direction and some do not",
            file.path.display()
        )));
    }
    crate::LstmStack::new(layers, crate::Merge::Concat)
}

/// One cell (`suffix` = `_l{k}`, `_l{k}_reverse` or empty) of a PyTorch
/// state dict; returns the keys it used.
fn pytorch_cell(
    file: &TensorFile,
    prefix: &str,
    suffix: &str,
) -> Result<(LstmConfig, LstmWeights, Vec<String>)> {
    let key = |n: &str| format!("{prefix}{n}{suffix}");
    let (w_ih, w_hh) = (file.get(&key("weight_ih"))?, file.get(&key("weight_hh"))?);
    let (g4, n) = dims2(file, &key("weight_ih"), w_ih)?;
    if g4 % 4 != 0 || g4 == 0 {
        return Err(shape_err(
            file,
            &key("weight_ih"),
            "[4·hidden, input]".into(),
            &w_ih.shape,
        ));
    }
    let h = g4 / 4;
    let w_hr = file.tensors.get(&key("weight_hr"));
    let r = match w_hr {
        Some(t) => {
            let (r, _) = dims2(file, &key("weight_hr"), t)?;
            expect(file, &key("weight_hr"), t, &[r, h])?;
            r
        }
        None => h,
    };
    expect(file, &key("weight_hh"), w_hh, &[4 * h, r])?;
    let mut cfg = LstmConfig::new(n, h);
    if w_hr.is_some() {
        cfg = cfg.with_projection(r);
    }
    cfg.validate()?;
    let mut w = LstmWeights::zeros(&cfg);
    let cols = 4 * h;
    // Same gate order (i, f, g, o); transpose [4H, k] → [k, 4H].
    fill_gates(&mut w, cols, h, 0, n, |k, g, j| {
        w_ih.data[(g * h + j) * n + k]
    });
    fill_gates(&mut w, cols, h, n, r, |k, g, j| {
        w_hh.data[(g * h + j) * r + k]
    });
    let mut used = vec![key("weight_ih"), key("weight_hh")];
    for b in ["bias_ih", "bias_hh"] {
        if let Some(t) = file.tensors.get(&key(b)) {
            expect(file, &key(b), t, &[4 * h])?;
            for (acc, v) in w.bias.iter_mut().zip(&t.data) {
                *acc += v;
            }
            used.push(key(b));
        }
    }
    if let (Some(t), Some(wp)) = (w_hr, w.w_p.as_mut()) {
        // weight_hr is [R, H]; w_p is [H, R].
        for i in 0..h {
            for k in 0..r {
                wp[i * r + k] = t.data[k * h + i];
            }
        }
        used.push(key("weight_hr"));
    }
    Ok((cfg, w, used))
}

/// Loads a Keras `LSTM` layer's weights from `.npz` (`kernel`,
/// `recurrent_kernel`, `bias`; an optional key prefix).
pub fn keras(path: impl AsRef<Path>, prefix: &str) -> Result<(LstmConfig, LstmWeights)> {
    let file = read_tensors(path)?;
    let key = |n: &str| format!("{prefix}{n}");
    let (k, rk) = (
        file.get(&key("kernel"))?,
        file.get(&key("recurrent_kernel"))?,
    );
    let (n, g4) = dims2(&file, &key("kernel"), k)?;
    if g4 % 4 != 0 || g4 == 0 {
        return Err(shape_err(
            &file,
            &key("kernel"),
            "[input, 4·units]".into(),
            &k.shape,
        ));
    }
    let h = g4 / 4;
    expect(&file, &key("recurrent_kernel"), rk, &[h, 4 * h])?;
    let cfg = LstmConfig::new(n, h);
    cfg.validate()?;
    let mut w = LstmWeights::zeros(&cfg);
    // Same gate order (i, f, c, o) and orientation: a plain copy.
    w.gates[..n * 4 * h].copy_from_slice(&k.data);
    w.gates[n * 4 * h..].copy_from_slice(&rk.data);
    let mut used = vec![key("kernel"), key("recurrent_kernel")];
    if let Some(b) = file.tensors.get(&key("bias")) {
        expect(&file, &key("bias"), b, &[4 * h])?;
        w.bias.copy_from_slice(&b.data);
        used.push(key("bias"));
    }
    no_leftovers(&file, &used, "Keras LSTM layer")?;
    Ok((cfg, w))
}

/// The `tf.compat.v1.nn.rnn_cell.LSTMCell` settings that are not weights.
#[derive(Clone, Copy, Debug)]
pub struct TfOptions {
    /// `forget_bias` (TF's default: 1.0).
    pub forget_bias: f32,
    /// `cell_clip`.
    pub cell_clip: Option<f32>,
    /// `proj_clip`.
    pub proj_clip: Option<f32>,
}

impl Default for TfOptions {
    fn default() -> Self {
        TfOptions {
            forget_bias: 1.0,
            cell_clip: None,
            proj_clip: None,
        }
    }
}

/// Loads `tf.compat.v1` `LSTMCell` variables from `.npz`: `kernel`,
/// `bias`, optional `w_i_diag w_f_diag w_o_diag` (all three: peepholes)
/// and `projection/kernel` (names may carry a scope prefix, e.g.
/// `rnn/lstm_cell/`).
pub fn tf(
    path: impl AsRef<Path>,
    prefix: &str,
    opts: TfOptions,
) -> Result<(LstmConfig, LstmWeights)> {
    let file = read_tensors(path)?;
    let key = |n: &str| format!("{prefix}{n}");
    let (k, b) = (file.get(&key("kernel"))?, file.get(&key("bias"))?);
    let (rows, g4) = dims2(&file, &key("kernel"), k)?;
    if g4 % 4 != 0 || g4 == 0 {
        return Err(shape_err(
            &file,
            &key("kernel"),
            "[input + recurrent, 4·units]".into(),
            &k.shape,
        ));
    }
    let h = g4 / 4;
    expect(&file, &key("bias"), b, &[4 * h])?;
    let proj = file.tensors.get(&key("projection/kernel"));
    let r = match proj {
        Some(p) => {
            let (ph, pr) = dims2(&file, &key("projection/kernel"), p)?;
            expect(&file, &key("projection/kernel"), p, &[h, pr])?;
            let _ = ph;
            pr
        }
        None => h,
    };
    if rows <= r {
        return Err(shape_err(
            &file,
            &key("kernel"),
            format!("[input + {r}, {g4}] with input ≥ 1"),
            &k.shape,
        ));
    }
    let n = rows - r;
    let mut cfg = LstmConfig::new(n, h).with_forget_bias(opts.forget_bias);
    if proj.is_some() {
        cfg = cfg.with_projection(r);
    }
    if let Some(c) = opts.cell_clip {
        cfg = cfg.with_cell_clip(c);
    }
    if let Some(c) = opts.proj_clip {
        cfg = cfg.with_proj_clip(c);
    }
    let diag_names = ["w_i_diag", "w_f_diag", "w_o_diag"].map(key);
    let diag_present = diag_names
        .iter()
        .filter(|n| file.tensors.contains_key(*n))
        .count();
    if diag_present == 3 {
        cfg = cfg.with_peephole(Peephole::Diagonal);
    } else if diag_present > 0 {
        let missing = diag_names
            .iter()
            .find(|n| !file.tensors.contains_key(*n))
            .expect("one is missing");
        return Err(Error::MissingTensor {
            tensor: missing.clone(),
            source_name: format!(
                "{} (peepholes need all three diagonals)",
                file.path.display()
            ),
        });
    }
    cfg.validate()?;
    let mut w = LstmWeights::zeros(&cfg);
    // TF's gate order is i, j (= c̃), f, o; ours i, f, c̃, o.
    const TF_GATE: [usize; 4] = [0, 2, 1, 3];
    fill_gates(&mut w, 4 * h, h, 0, rows, |row, g, j| {
        k.data[row * 4 * h + TF_GATE[g] * h + j]
    });
    for (g, &tg) in TF_GATE.iter().enumerate() {
        w.bias[g * h..(g + 1) * h].copy_from_slice(&b.data[tg * h..(tg + 1) * h]);
    }

    let mut used = vec![key("kernel"), key("bias")];
    if let Some(d) = w.peep_diag.as_mut() {
        // Ours: [w_ci, w_cf, w_co].
        for (g, name) in diag_names.iter().enumerate() {
            let t = file.get(name)?;
            expect(&file, name, t, &[h])?;
            d[g * h..(g + 1) * h].copy_from_slice(&t.data);
            used.push(name.clone());
        }
    }
    if let (Some(p), Some(wp)) = (proj, w.w_p.as_mut()) {
        wp.copy_from_slice(&p.data);
        used.push(key("projection/kernel"));
    }
    no_leftovers(&file, &used, "TF LSTMCell")?;
    Ok((cfg, w))
}

fn onnx_err(path: &Path, reason: impl ToString) -> Error {
    Error::Format {
        path: path.to_path_buf(),
        format: "onnx",
        reason: reason.to_string(),
    }
}

/// A float tensor of an ONNX initializer (float or double; raw or typed).
fn onnx_tensor(path: &Path, t: &crate::formats::onnx_proto::TensorProto) -> Result<Tensor> {
    use crate::formats::onnx_proto::{DOUBLE, FLOAT};
    let shape: Vec<usize> = t
        .dims
        .iter()
        .map(|&d| {
            usize::try_from(d).map_err(|_| {
                onnx_err(
                    path,
                    format!("tensor `{}` has a negative dimension", t.name),
                )
            })
        })
        .collect::<Result<_>>()?;
    if t.data_location != 0 {
        return Err(Error::Unsupported(format!(
            "{}: tensor `{}` uses external data",
            path.display(),
            t.name
        )));
    }
    let data: Vec<f32> = match t.data_type {
        FLOAT if !t.raw_data.is_empty() => t
            .raw_data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        FLOAT => t.float_data.clone(),
        DOUBLE if !t.raw_data.is_empty() => t
            .raw_data
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().expect("chunks_exact(8)")) as f32)
            .collect(),
        DOUBLE => t.double_data.iter().map(|&v| v as f32).collect(),
        other => {
            return Err(Error::Dtype {
                tensor: t.name.clone(),
                path: path.to_path_buf(),
                dtype: format!("ONNX data type {other}"),
            });
        }
    };
    let n: usize = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| onnx_err(path, format!("tensor `{}` is too large", t.name)))?;
    if data.len() != n {
        return Err(onnx_err(
            path,
            format!(
                "tensor `{}` holds {} values, its shape {} needs {n}",
                t.name,
                data.len(),
                shape_str(&shape)
            ),
        ));
    }
    Ok(Tensor { shape, data })
}

/// Loads the single `LSTM` node of an `.onnx` model (see the module docs),
/// forward direction. A bidirectional node: [`onnx_stack`].
pub fn onnx(path: impl AsRef<Path>) -> Result<(LstmConfig, LstmWeights)> {
    let path = path.as_ref();
    let mut cells = onnx_cells(path)?;
    if cells.len() != 1 {
        return Err(Error::Unsupported(format!(
            "{}: a bidirectional LSTM node; load it with onnx_stack (lstm run does)",
            path.display()
        )));
    }
    Ok(cells.remove(0))
}

/// Loads an `.onnx` model's `LSTM` node, forward or bidirectional, as a
/// one-layer [`LstmStack`](crate::LstmStack) (directions concatenated, as
/// PyTorch lays them out).
pub fn onnx_stack(path: impl AsRef<Path>) -> Result<crate::LstmStack> {
    let mut cells = onnx_cells(path.as_ref())?.into_iter();
    let (cf, wf) = cells.next().expect("at least one direction");
    let backward = cells
        .next()
        .map(|(c, w)| crate::Lstm::new(c, w))
        .transpose()?;
    let layer = crate::StackLayer {
        forward: crate::Lstm::new(cf, wf)?,
        backward,
    };
    crate::LstmStack::new(vec![layer], crate::Merge::Concat)
}

/// Each direction's cell of the node (1 or 2).
fn onnx_cells(path: &Path) -> Result<Vec<(LstmConfig, LstmWeights)>> {
    use prost::Message;
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let model = crate::formats::onnx_proto::ModelProto::decode(bytes.as_slice())
        .map_err(|e| onnx_err(path, e))?;
    let graph = model
        .graph
        .ok_or_else(|| onnx_err(path, "the model has no graph"))?;
    let lstms: Vec<_> = graph.node.iter().filter(|n| n.op_type == "LSTM").collect();
    let node = match lstms.as_slice() {
        [n] => *n,
        [] => return Err(onnx_err(path, "the graph has no LSTM node")),
        _ => {
            return Err(Error::Unsupported(format!(
                "{}: {} LSTM nodes; one is supported",
                path.display(),
                lstms.len()
            )));
        }
    };
    let attr = |name: &str| node.attribute.iter().find(|a| a.name == name);
    let hidden = attr("hidden_size")
        .map(|a| a.i)
        .ok_or_else(|| onnx_err(path, "the LSTM node has no hidden_size attribute"))?;
    let h = usize::try_from(hidden)
        .ok()
        .filter(|&h| h > 0)
        .ok_or_else(|| onnx_err(path, format!("hidden_size {hidden} is not positive")))?;
    let dirs = match attr("direction")
        .map(|d| String::from_utf8_lossy(&d.s).into_owned())
        .as_deref()
    {
        None | Some("forward") => 1,
        Some("bidirectional") => 2,
        Some(d) => {
            return Err(Error::Unsupported(format!(
                "{}: direction `{d}`: forward and bidirectional are supported",
                path.display()
            )));
        }
    };
    if attr("layout").is_some_and(|a| a.i != 0) {
        return Err(Error::Unsupported(format!(
            "{}: layout=1 (batch-first) is not supported yet",
            path.display()
        )));
    }
    if let Some(a) = attr("activations") {
        let acts: Vec<String> = a
            .strings
            .iter()
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect();
        if acts != ["Sigmoid", "Tanh", "Tanh"] {
            return Err(Error::Unsupported(format!(
                "{}: activations {acts:?}: only the defaults Sigmoid, Tanh, Tanh are supported",
                path.display()
            )));
        }
    }
    // Initializers by the node's input names: X, W, R, B, sequence_lens,
    // initial_h, initial_c, P.
    let input = |k: usize| node.input.get(k).filter(|s| !s.is_empty());
    let init = |k: usize, what: &str| -> Result<Option<Tensor>> {
        let Some(name) = input(k) else {
            return Ok(None);
        };
        match graph.initializer.iter().find(|t| &t.name == name) {
            Some(t) => onnx_tensor(path, t).map(Some),
            None => Err(Error::MissingTensor {
                tensor: if name == what {
                    what.to_string()
                } else {
                    format!("{what} (named `{name}`)")
                },
                source_name: format!("{}'s initializers (it must be a constant)", path.display()),
            }),
        }
    };
    let need = |t: Option<Tensor>, what: &str| {
        t.ok_or_else(|| Error::MissingTensor {
            tensor: what.to_string(),
            source_name: format!("{} (LSTM node input)", path.display()),
        })
    };
    let w_t = need(init(1, "W")?, "W")?;
    let r_t = need(init(2, "R")?, "R")?;
    let b_t = init(3, "B")?;
    let p_t = init(7, "P")?;
    let named = |n: &str| format!("{n} in {}", path.display());
    let n = match w_t.shape.as_slice() {
        [d, g4, n] if *d == dirs && *g4 == 4 * h => *n,
        other => {
            return Err(Error::Shape {
                tensor: named("W"),
                expected: format!("[{dirs}, {}, input_size]", 4 * h),
                got: shape_str(other),
            });
        }
    };
    let check = |t: &Tensor, name: &str, shape: &[usize]| -> Result<()> {
        if t.shape == shape {
            Ok(())
        } else {
            Err(Error::Shape {
                tensor: named(name),
                expected: shape_str(shape),
                got: shape_str(&t.shape),
            })
        }
    };
    check(&r_t, "R", &[dirs, 4 * h, h])?;
    if let Some(b) = &b_t {
        check(b, "B", &[dirs, 8 * h])?;
    }
    if let Some(p) = &p_t {
        check(p, "P", &[dirs, 3 * h])?;
    }
    let mut cfg = LstmConfig::new(n, h);
    if let Some(c) = attr("clip") {
        cfg = cfg.with_clip(c.f);
    }
    if attr("input_forget").is_some_and(|a| a.i != 0) {
        cfg = cfg.with_input_forget(true);
    }
    if p_t.is_some() {
        cfg = cfg.with_peephole(Peephole::Diagonal);
    }
    cfg.validate()?;
    // ONNX gate order i, o, f, c; ours i, f, c, o.
    const ONNX_GATE: [usize; 4] = [0, 2, 3, 1];
    let cols = 4 * h;
    let mut cells = Vec::with_capacity(dirs);
    for d in 0..dirs {
        let mut w = LstmWeights::zeros(&cfg);
        let (wd, rd) = (&w_t.data[d * 4 * h * n..], &r_t.data[d * 4 * h * h..]);
        fill_gates(&mut w, cols, h, 0, n, |k, g, j| {
            wd[(ONNX_GATE[g] * h + j) * n + k]
        });
        fill_gates(&mut w, cols, h, n, h, |k, g, j| {
            rd[(ONNX_GATE[g] * h + j) * h + k]
        });
        if let Some(b) = &b_t {
            let bd = &b.data[d * 8 * h..];
            for (g, &og) in ONNX_GATE.iter().enumerate() {
                for j in 0..h {
                    w.bias[g * h + j] = bd[og * h + j] + bd[4 * h + og * h + j];
                }
            }
        }
        if let (Some(p), Some(dg)) = (&p_t, w.peep_diag.as_mut()) {
            // ONNX peepholes i, o, f; ours i, f, o.
            let pd = &p.data[d * 3 * h..];
            dg[..h].copy_from_slice(&pd[..h]);
            dg[h..2 * h].copy_from_slice(&pd[2 * h..3 * h]);
            dg[2 * h..].copy_from_slice(&pd[h..2 * h]);
        }
        cells.push((cfg, w));
    }
    Ok(cells)
}
