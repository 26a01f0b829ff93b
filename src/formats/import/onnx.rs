//! ONNX models with one `LSTM` node: initializers `W R B P` (gate order
//! i, o, f, c reordered), `hidden_size`, `clip`, `input_forget`, forward or
//! bidirectional; anything else the node asks for is an error.

use std::path::Path;

use super::{LoadOptions, build_cell, fill_gates};
use crate::config::{LstmConfig, Peephole};
use crate::error::{Error, Result, shape_str};
use crate::io::Tensor;
use crate::weights::LstmWeights;

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
    let item = match t.data_type {
        FLOAT => 4,
        DOUBLE => 8,
        _ => 1,
    };
    if !t.raw_data.len().is_multiple_of(item) {
        return Err(onnx_err(
            path,
            format!(
                "tensor `{}`: raw_data holds {} bytes, not a whole number of {item}-byte values",
                t.name,
                t.raw_data.len()
            ),
        ));
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
    onnx_stack_with(path, LoadOptions::default())
}

/// [`onnx_stack`] with [`LoadOptions`].
pub fn onnx_stack_with(path: impl AsRef<Path>, opts: LoadOptions) -> Result<crate::LstmStack> {
    let path = path.as_ref();
    let mut cells = onnx_cells(path)?.into_iter();
    let Some((cf, wf)) = cells.next() else {
        return Err(onnx_err(path, "the LSTM node has no direction"));
    };
    let backward = cells
        .next()
        .map(|(c, w)| build_cell(c, w, opts, path, "reverse direction"))
        .transpose()?;
    let layer = crate::StackLayer {
        forward: build_cell(cf, wf, opts, path, "forward direction")?,
        backward,
    };
    crate::LstmStack::new(vec![layer], crate::Merge::Concat)
}

/// Each direction's cell of the node (1 or 2).
fn onnx_cells(path: &Path) -> Result<Vec<(LstmConfig, LstmWeights)>> {
    use prost::Message;
    let _nearest = crate::engine::NearestGuard::new(); // bias sums round to nearest

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
    // 4·h and the shapes below are computed unchecked: held to the tensor
    // limit first (a larger cell is refused by the config anyway).
    if h > crate::MAX_TENSOR_ELEMENTS / 4 {
        return Err(onnx_err(
            path,
            format!(
                "hidden_size {h} exceeds the limit ({} elements per gate matrix)",
                crate::MAX_TENSOR_ELEMENTS
            ),
        ));
    }
    // Attributes: each at most once, and only those this importer reads
    // (another one changes what the node computes).
    const KNOWN: [&str; 6] = [
        "hidden_size",
        "direction",
        "layout",
        "activations",
        "clip",
        "input_forget",
    ];
    let mut seen = std::collections::HashSet::new();
    for a in &node.attribute {
        if !seen.insert(a.name.as_str()) {
            return Err(onnx_err(
                path,
                format!("attribute `{}` is given twice", a.name),
            ));
        }
        if !KNOWN.contains(&a.name.as_str()) {
            return Err(Error::Unsupported(format!(
                "{}: LSTM attribute `{}` is not supported",
                path.display(),
                a.name
            )));
        }
    }

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
    // sequence_lens, initial_h and initial_c as graph inputs are given at
    // run time (the state and lengths of a call; --state-in, --seq-lens).
    // As constants (initializers) they would change what the model computes
    // and are not read: refused rather than ignored.
    for (k, what) in [(4, "sequence_lens"), (5, "initial_h"), (6, "initial_c")] {
        if let Some(name) = input(k)
            && graph.initializer.iter().any(|t| &t.name == name)
        {
            return Err(Error::Unsupported(format!(
                "{}: the LSTM node's {what} is a constant (`{name}`); constant initial states and lengths are not supported (pass them at run time: --state-in, --seq-lens)",
                path.display()
            )));
        }
    }
    if node.input.len() > 8 {
        return Err(onnx_err(
            path,
            format!("the LSTM node has {} inputs (at most 8)", node.input.len()),
        ));
    }
    // A name given to two initializers is ambiguous.
    let mut seen = std::collections::HashSet::new();
    if let Some(t) = graph
        .initializer
        .iter()
        .find(|t| !seen.insert(t.name.as_str()))
    {
        return Err(onnx_err(
            path,
            format!("initializer `{}` is given twice", t.name),
        ));
    }
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
        let mut w = LstmWeights::zeros(&cfg)?;
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
