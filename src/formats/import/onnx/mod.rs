//! ONNX models as exporters write them: one or several `LSTM` nodes
//! chained into a stack (PyTorch `nn.LSTM(num_layers > 1)` through
//! `torch.onnx.export`, tf2onnx stacks and `Bidirectional` layers), with
//! the glue between them (Transpose, Squeeze, Unsqueeze, Reshape, Slice,
//! Split, Gather, Concat, Identity, and the shape arithmetic of dynamic
//! axes) understood, including the batch-first layout an exporter encodes
//! as Transposes around the LSTMs (or `layout = 1`); weights computed by
//! constant subgraphs over initializers folded at load time; external data
//! resolved next to the model. Each node: `W R B P` (gate order i, o, f, c
//! reordered; peepholes i, o, f), `hidden_size`, `clip`, `input_forget`,
//! forward or bidirectional, default activations (listed once per
//! direction or not at all); anything else a node asks for, and any node
//! the importer cannot map on the way from the graph input to its output,
//! is an error naming the node and op. See [`graph`] for the walk.

use std::path::Path;

use super::{LoadOptions, build_cell, fill_gates};
use crate::config::{LstmConfig, Peephole};
use crate::error::{Error, Result, shape_str};
use crate::weights::LstmWeights;

mod graph;
mod tensor;

use graph::{LstmConsts, LstmShape};
use tensor::{Const, Data, Source};

/// An ONNX model's LSTM stack and the layout its graph declares.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct OnnxModel {
    /// The LSTM layers, directions concatenated (PyTorch's layout).
    pub stack: crate::LstmStack,
    /// The graph takes `[B, T, n]` and gives `[B, T, ·]` (the exporter's
    /// Transposes around the LSTMs, or `layout = 1`); else time-major
    /// `[T, B, ·]`.
    pub batch_first: bool,
    /// The graph input holding the sequence.
    pub input: String,
    /// The graph output holding the last layer's output.
    pub output: String,
}

impl OnnxModel {
    /// [`SeqOptions`](crate::SeqOptions) with this graph's layout (and no
    /// lengths).
    pub fn seq_options(&self) -> crate::SeqOptions<'static> {
        crate::SeqOptions {
            batch_first: self.batch_first,
            seq_lens: None,
        }
    }
}

/// Per layer, each direction's cell (with its int8 gates for a
/// `DynamicQuantizeLSTM`).
type Cells = Vec<Vec<Cell>>;
type Cell = (LstmConfig, LstmWeights, Option<crate::Int8Gates>);

struct Parsed {
    layers: Cells,
    batch_first: bool,
    input: String,
    output: String,
}

/// Loads a one-layer, forward, time-major ONNX model (see the module
/// docs) as a cell. More layers, a bidirectional node or a batch-first
/// graph: [`onnx_model`].
pub fn onnx(path: impl AsRef<Path>) -> Result<(LstmConfig, LstmWeights)> {
    let path = path.as_ref();
    single(parse_file(path)?, path)
}

/// [`onnx`] from the bytes of a model; `base_dir` is where its external
/// data lies (`None`: a model with external data is an error saying so).
pub fn onnx_from_bytes(bytes: &[u8], base_dir: Option<&Path>) -> Result<(LstmConfig, LstmWeights)> {
    let name = Path::new("<ONNX bytes>");
    single(
        parse(
            bytes,
            &Source {
                name,
                base: base_dir,
            },
        )?,
        name,
    )
}

fn single(p: Parsed, name: &Path) -> Result<(LstmConfig, LstmWeights)> {
    let hint = "load it with import::onnx_model (lstm run does)";
    if p.layers.len() != 1 {
        return Err(Error::Unsupported(format!(
            "{}: {} LSTM layers; {hint}",
            name.display(),
            p.layers.len()
        )));
    }
    if p.batch_first {
        return Err(Error::Unsupported(format!(
            "{}: the graph is batch-first ([B, T, n]); {hint}, which reports the layout",
            name.display()
        )));
    }
    let mut cells = p.layers.into_iter().next().expect("one layer");
    if cells.len() != 1 {
        return Err(Error::Unsupported(format!(
            "{}: a bidirectional LSTM node; {hint}",
            name.display()
        )));
    }
    match cells.remove(0) {
        (_, _, Some(_)) => Err(Error::Unsupported(format!(
            "{}: a DynamicQuantizeLSTM node (int8 weights); {hint}, which runs it in int8",
            name.display()
        ))),
        (c, w, None) => Ok((c, w)),
    }
}

/// Loads an ONNX model's chain of `LSTM` nodes (see the module docs) as a
/// stack, with the layout its graph declares.
pub fn onnx_model(path: impl AsRef<Path>) -> Result<OnnxModel> {
    onnx_model_with(path, LoadOptions::default())
}

/// [`onnx_model`] with [`LoadOptions`].
pub fn onnx_model_with(path: impl AsRef<Path>, opts: LoadOptions) -> Result<OnnxModel> {
    let path = path.as_ref();
    build(parse_file(path)?, opts, path)
}

/// [`onnx_model_with`] from the bytes of a model; `base_dir` is where its
/// external data lies (`None`: a model with external data is an error
/// saying so).
pub fn onnx_model_from_bytes(
    bytes: &[u8],
    base_dir: Option<&Path>,
    opts: LoadOptions,
) -> Result<OnnxModel> {
    let name = Path::new("<ONNX bytes>");
    build(
        parse(
            bytes,
            &Source {
                name,
                base: base_dir,
            },
        )?,
        opts,
        name,
    )
}

/// Loads an ONNX model's chain of `LSTM` nodes as an
/// [`LstmStack`](crate::LstmStack) (directions concatenated, as PyTorch
/// lays them out) for time-major input `[T, B, n]`. A batch-first graph is
/// an error pointing to [`onnx_model`], which reports the layout.
pub fn onnx_stack(path: impl AsRef<Path>) -> Result<crate::LstmStack> {
    onnx_stack_with(path, LoadOptions::default())
}

/// [`onnx_stack`] with [`LoadOptions`].
pub fn onnx_stack_with(path: impl AsRef<Path>, opts: LoadOptions) -> Result<crate::LstmStack> {
    time_major(onnx_model_with(path.as_ref(), opts)?, path.as_ref())
}

/// [`onnx_stack_with`] from the bytes of a model (see
/// [`onnx_model_from_bytes`] for `base_dir`).
pub fn onnx_stack_from_bytes(
    bytes: &[u8],
    base_dir: Option<&Path>,
    opts: LoadOptions,
) -> Result<crate::LstmStack> {
    time_major(
        onnx_model_from_bytes(bytes, base_dir, opts)?,
        Path::new("<ONNX bytes>"),
    )
}

fn time_major(m: OnnxModel, name: &Path) -> Result<crate::LstmStack> {
    if m.batch_first {
        return Err(Error::Unsupported(format!(
            "{}: the graph is batch-first ([B, T, n]); load it with import::onnx_model, which reports the layout (lstm run uses it)",
            name.display()
        )));
    }
    Ok(m.stack)
}

fn build(p: Parsed, opts: LoadOptions, name: &Path) -> Result<OnnxModel> {
    // Layers may differ in size and direction (Keras: Bidirectional, then
    // LSTM); LstmStack checks that each takes the previous one's width.
    let n_layers = p.layers.len();
    let mut layers = Vec::with_capacity(n_layers);
    for (k, cells) in p.layers.into_iter().enumerate() {
        let mut it = cells.into_iter();
        let (cf, wf, qf) = it.next().expect("a direction");
        let at = |d: &str| {
            if n_layers == 1 {
                format!("{d} direction")
            } else {
                format!("layer {k} {d} direction")
            }
        };
        // A DynamicQuantizeLSTM's cells run its int8 weights as they are.
        let int8 = |cell: crate::Lstm, q: Option<crate::Int8Gates>| match q {
            Some(q) => cell.with_int8_gates(&q),
            None => Ok(cell),
        };
        let forward = int8(build_cell(cf, wf, opts, name, &at("forward"))?, qf)?;
        let backward = it
            .next()
            .map(|(c, w, q)| int8(build_cell(c, w, opts, name, &at("reverse"))?, q))
            .transpose()?;
        layers.push(crate::StackLayer { forward, backward });
    }
    Ok(OnnxModel {
        stack: crate::LstmStack::new(layers, crate::Merge::Concat)?,
        batch_first: p.batch_first,
        input: p.input,
        output: p.output,
    })
}

fn parse_file(path: &Path) -> Result<Parsed> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    parse(
        &bytes,
        &Source {
            name: path,
            base: Some(base),
        },
    )
}

fn parse(bytes: &[u8], src: &Source) -> Result<Parsed> {
    use prost::Message;
    let _nearest = crate::engine::NearestGuard::new(); // bias sums round to nearest
    let model = crate::formats::onnx_proto::ModelProto::decode(bytes).map_err(|e| src.err(e))?;
    let graph = model
        .graph
        .ok_or_else(|| src.err("the model has no graph"))?;
    let mut cells: Vec<(usize, Vec<Cell>)> = Vec::new();
    let walked = graph::walk(src, &graph, bytes.len(), &mut |i, node, consts| {
        let (shape, c) = lstm_cells(src, i, node, consts)?;
        cells.push((i, c));
        Ok(shape)
    })?;
    // The walk's chain, in order (every LSTM node it met is in it).
    let mut layers = Vec::with_capacity(walked.layers.len());
    for node in &walked.layers {
        let k = cells
            .iter()
            .position(|(i, _)| i == node)
            .expect("the walk mapped every layer");
        layers.push(std::mem::take(&mut cells[k].1));
    }
    Ok(Parsed {
        layers,
        batch_first: walked.batch_first,
        input: walked.input,
        output: walked.output,
    })
}

/// One LSTM node's attributes and constants, mapped to cells (one per
/// direction).
fn lstm_cells(
    src: &Source,
    i: usize,
    node: &crate::formats::onnx_proto::NodeProto,
    c: LstmConsts,
) -> Result<(LstmShape, Vec<Cell>)> {
    let lab = graph::label(i, node);
    let attr = |name: &str| node.attribute.iter().find(|a| a.name == name);
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
            return Err(src.err(format!(
                "LSTM node {lab}: attribute `{}` is given twice",
                a.name
            )));
        }
        if !KNOWN.contains(&a.name.as_str()) {
            return Err(src.unsupported(format!(
                "LSTM node {lab}: attribute `{}` is not supported",
                a.name
            )));
        }
    }
    let hidden = attr("hidden_size")
        .map(|a| a.i)
        .ok_or_else(|| src.err(format!("LSTM node {lab} has no hidden_size attribute")))?;
    let h = usize::try_from(hidden)
        .ok()
        .filter(|&h| h > 0)
        .ok_or_else(|| {
            src.err(format!(
                "LSTM node {lab}: hidden_size {hidden} is not positive"
            ))
        })?;
    // 4·h and the shapes below are computed unchecked: held to the tensor
    // limit first (a larger cell is refused by the config anyway).
    if h > crate::MAX_TENSOR_ELEMENTS / 4 {
        return Err(src.err(format!(
            "LSTM node {lab}: hidden_size {h} exceeds the limit ({} elements per gate matrix)",
            crate::MAX_TENSOR_ELEMENTS
        )));
    }
    let dirs = match attr("direction")
        .map(|d| String::from_utf8_lossy(&d.s).into_owned())
        .as_deref()
    {
        None | Some("forward") => 1,
        Some("bidirectional") => 2,
        Some(d) => {
            return Err(src.unsupported(format!(
                "LSTM node {lab}: direction `{d}`: forward and bidirectional are supported"
            )));
        }
    };
    let layout_batch_first = match attr("layout").map(|a| a.i) {
        None | Some(0) => false,
        Some(1) => true,
        Some(v) => {
            return Err(src.err(format!("LSTM node {lab}: layout={v} (0 or 1 expected)")));
        }
    };
    if let Some(a) = attr("activations") {
        let acts: Vec<String> = a
            .strings
            .iter()
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect();
        // The defaults, listed once per direction (tf2onnx writes them).
        let default = ["Sigmoid", "Tanh", "Tanh"];
        let ok = acts.len() == 3 * dirs && acts.chunks(3).all(|c| c == default);
        if !ok {
            return Err(src.unsupported(format!(
                "LSTM node {lab}: activations {acts:?}: only the defaults Sigmoid, Tanh, Tanh (once per direction) are supported"
            )));
        }
    }
    let named = |n: &str| format!("{n} in {}", src.name.display());
    let f32s = |t: &Const| match &t.data {
        Data::F32(v) => v.clone(),
        Data::I64(_) => Vec::new(), // checked by the walk
    };
    let (w_t, r_t) = (&c.w, &c.r);
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
    let check = |t: &Const, name: &str, shape: &[usize]| -> Result<()> {
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
    check(r_t, "R", &[dirs, 4 * h, h])?;
    if let Some(b) = &c.b {
        check(b, "B", &[dirs, 8 * h])?;
    }
    if let Some(p) = &c.p {
        check(p, "P", &[dirs, 3 * h])?;
    }
    let mut cfg = LstmConfig::new(n, h);
    if let Some(c) = attr("clip") {
        cfg = cfg.with_clip(c.f);
    }
    if attr("input_forget").is_some_and(|a| a.i != 0) {
        cfg = cfg.with_input_forget(true);
    }
    if c.p.is_some() {
        cfg = cfg.with_peephole(Peephole::Diagonal);
    }
    cfg.validate()?;
    let (w_d, r_d) = (f32s(w_t), f32s(r_t));
    let b_d = c.b.as_deref().map(f32s);
    let p_d = c.p.as_deref().map(f32s);
    // ONNX gate order i, o, f, c; ours i, f, c, o.
    const ONNX_GATE: [usize; 4] = [0, 2, 3, 1];
    let cols = 4 * h;
    let mut cells = Vec::with_capacity(dirs);
    for d in 0..dirs {
        let mut w = LstmWeights::zeros(&cfg)?;
        let (wd, rd) = (&w_d[d * 4 * h * n..], &r_d[d * 4 * h * h..]);
        fill_gates(&mut w, cols, h, 0, n, |k, g, j| {
            wd[(ONNX_GATE[g] * h + j) * n + k]
        });
        fill_gates(&mut w, cols, h, n, h, |k, g, j| {
            rd[(ONNX_GATE[g] * h + j) * h + k]
        });
        if let Some(b) = &b_d {
            let bd = &b[d * 8 * h..];
            for (g, &og) in ONNX_GATE.iter().enumerate() {
                for j in 0..h {
                    w.bias[g * h + j] = bd[og * h + j] + bd[4 * h + og * h + j];
                }
            }
        }
        if let (Some(p), Some(dg)) = (&p_d, w.peep_diag.as_mut()) {
            // ONNX peepholes i, o, f; ours i, f, o.
            let pd = &p[d * 3 * h..];
            dg[..h].copy_from_slice(&pd[..h]);
            dg[h..2 * h].copy_from_slice(&pd[2 * h..3 * h]);
            dg[2 * h..].copy_from_slice(&pd[h..2 * h]);
        }
        let q = c.quant.as_ref().map(|q| -> Result<crate::Int8Gates> {
            // Every value is the file's: start from zeros, not from a
            // quantization of the dequantized weights.
            let mut g = crate::Int8Gates {
                q: crate::error::try_filled(w.gates.len(), 0i8, "int8 gates")?,
                scale_x: crate::error::try_filled(cols, 0f32, "int8 scales")?,
                scale_h: crate::error::try_filled(cols, 0f32, "int8 scales")?,
            };
            let (wq, rq) = (&q.w[d * 4 * h * n..], &q.r[d * 4 * h * h..]);
            for k in 0..n + h {
                for (gate, &og) in ONNX_GATE.iter().enumerate() {
                    for j in 0..h {
                        g.q[k * cols + gate * h + j] = if k < n {
                            wq[(og * h + j) * n + k]
                        } else {
                            rq[(og * h + j) * h + k - n]
                        };
                    }
                }
            }
            for (gate, &og) in ONNX_GATE.iter().enumerate() {
                for j in 0..h {
                    g.scale_x[gate * h + j] = q.w_scale[d * cols + og * h + j];
                    g.scale_h[gate * h + j] = q.r_scale[d * cols + og * h + j];
                }
            }
            Ok(g)
        });
        cells.push((cfg, w, q.transpose()?));
    }
    Ok((
        LstmShape {
            dirs,
            hidden: h,
            input: n,
            layout_batch_first,
        },
        cells,
    ))
}
