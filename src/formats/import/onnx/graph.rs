//! The graph walk: every node is evaluated once, in topological order
//! (Kahn's algorithm, iterative; a cycle is an error), over abstract
//! values:
//!
//! * constants — initializers, `Constant` nodes, and everything computed
//!   from them by the ops folded here (Slice, Concat, Transpose, Reshape,
//!   Gather, Unsqueeze, Squeeze, Cast, Identity, Split, ConstantOfShape,
//!   Expand, and integer/float Add, Sub, Mul, Div);
//! * shapes — `Shape` of the sequence, with its time and batch axes kept
//!   symbolic, and the integer arithmetic exporters do on them;
//! * the sequence — the graph input and the LSTM outputs, as a symbolic
//!   layout: the axes (time, batch, or a static size) and, for the static
//!   part, which layer, direction and unit each feature is. The glue
//!   between LSTM nodes (Transpose, Squeeze, Unsqueeze, Reshape, Slice,
//!   Split, Gather, Concat, Identity) moves features around; an LSTM node
//!   accepts its input only if it is exactly `[T, B, features]` (or
//!   `[B, T, …]` with `layout = 1`) with the previous layer's features in
//!   PyTorch's order (forward units, then reverse);
//! * zeros of a run-time shape (the initial states exporters build with
//!   `ConstantOfShape`/`Expand`), other run-time values (graph inputs such
//!   as initial states and lengths), the LSTMs' state outputs, and
//!   "unmapped" values: the result of an op the walk does not know, which
//!   is an error (naming the node and op) only where it is used.

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

use super::tensor::{
    self, Const, Data, Source, axis, broadcast_map, select_map, slice_indices, take, transpose_map,
};
use crate::error::{Error, Result, checked_elements, shape_str, try_filled};
use crate::formats::onnx_proto::{self as pb, AttributeProto, GraphProto, NodeProto, TensorProto};

/// A symbolic axis: a graph input's first two axes (time and batch, in
/// some order) and its feature axis, whose sizes are known only at run
/// time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AxisId {
    In(usize, u8),
    Feat(usize),
}

/// An axis of the sequence: symbolic or of a static size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ax {
    Dyn(AxisId),
    S(usize),
}

/// Which output feature a static position holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Feat {
    layer: u32,
    dir: u32,
    unit: u32,
}

/// The static positions of the graph input (its features are one opaque
/// symbolic axis).
const INPUT_FEAT: Feat = Feat {
    layer: u32::MAX,
    dir: 0,
    unit: 0,
};

/// The sequence, symbolically: its axes and, over the static axes in
/// row-major order, the feature each position holds.
#[derive(Clone, Debug, PartialEq)]
struct Sym {
    axes: Vec<Ax>,
    feats: Rc<Vec<Feat>>,
}

impl Sym {
    fn static_shape(&self) -> Vec<usize> {
        self.axes
            .iter()
            .filter_map(|a| match a {
                Ax::S(s) => Some(*s),
                Ax::Dyn(_) => None,
            })
            .collect()
    }

    /// Derived from a graph input alone (no LSTM output in it).
    fn is_input(&self) -> bool {
        self.axes
            .iter()
            .any(|a| matches!(a, Ax::Dyn(AxisId::Feat(_))))
    }

    fn describe(&self) -> String {
        let parts: Vec<String> = self
            .axes
            .iter()
            .map(|a| match a {
                Ax::S(s) => s.to_string(),
                Ax::Dyn(AxisId::In(_, 0)) => "dim0".into(),
                Ax::Dyn(AxisId::In(_, _)) => "dim1".into(),
                Ax::Dyn(AxisId::Feat(_)) => "features".into(),
            })
            .collect();
        format!("[{}]", parts.join(", "))
    }
}

/// A dimension inside a shape value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dim {
    K(i64),
    A(AxisId),
}

/// What an unmapped value came from.
#[derive(Debug)]
struct Cause {
    node: String,
    op: String,
    why: String,
}

impl Cause {
    fn say(&self) -> String {
        format!("node {} ({}) {}", self.node, self.op, self.why)
    }
}

/// An abstract value.
#[derive(Clone, Debug)]
enum Val {
    Const(Rc<Const>),
    /// An integer vector (or scalar) of dimensions, some symbolic.
    Shape(Vec<Dim>, bool),
    Seq(Sym),
    /// Zeros of a run-time shape (known symbolically when it was built
    /// from a shape value).
    Zeros(Option<Vec<Dim>>),
    Runtime(Option<Rc<Cause>>),
    StateOut,
    Unmapped(Rc<Cause>),
    Undefined,
}

/// The constant inputs of one LSTM node, for the caller to map.
pub(super) struct LstmConsts {
    pub w: Rc<Const>,
    pub r: Rc<Const>,
    pub b: Option<Rc<Const>>,
    pub p: Option<Rc<Const>>,
    /// A `DynamicQuantizeLSTM`'s int8 weights (`w` and `r` then hold them
    /// dequantized).
    pub quant: Option<Quant>,
}

/// The int8 weights of a `DynamicQuantizeLSTM` node, in the LSTM node's
/// layout (`[D, 4H, n]` and `[D, 4H, H]`), with one scale per direction
/// and gate column (`[D, 4H]`).
pub(super) struct Quant {
    pub w: Vec<i8>,
    pub r: Vec<i8>,
    pub w_scale: Vec<f32>,
    pub r_scale: Vec<f32>,
}

/// Whether `node` is an LSTM this importer maps: ONNX's `LSTM`, or ONNX
/// Runtime's `DynamicQuantizeLSTM` (int8 weights).
fn is_lstm(node: &NodeProto) -> bool {
    (node.op_type == "LSTM" && matches!(node.domain.as_str(), "" | "ai.onnx")) || is_dq_lstm(node)
}

fn is_dq_lstm(node: &NodeProto) -> bool {
    node.op_type == "DynamicQuantizeLSTM" && node.domain == "com.microsoft"
}

/// What the caller found in an LSTM node.
pub(super) struct LstmShape {
    pub dirs: usize,
    pub hidden: usize,
    pub input: usize,
    pub layout_batch_first: bool,
}

/// The result of the walk.
pub(super) struct Walked {
    /// The LSTM nodes of the chain, first layer first (node indices).
    pub layers: Vec<usize>,
    pub batch_first: bool,
    pub input: String,
    pub output: String,
}

struct LayerInfo {
    node: usize,
    label: String,
    dirs: usize,
    hidden: usize,
    y: Sym,
}

/// `node #3` or `` node `name` ``.
pub(super) fn label(i: usize, node: &NodeProto) -> String {
    if node.name.is_empty() {
        format!("#{i}")
    } else {
        format!("`{}`", node.name)
    }
}

fn attr<'n>(node: &'n NodeProto, name: &str) -> Option<&'n AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

fn ints_of(v: &Option<Val>) -> Option<Vec<i64>> {
    match v {
        Some(Val::Const(c)) => c.ints().map(<[i64]>::to_vec),
        _ => None,
    }
}

struct Walk<'a> {
    src: &'a Source<'a>,
    inits: HashMap<&'a str, &'a TensorProto>,
    vals: HashMap<&'a str, Val>,
    /// Elements the folder may still produce.
    budget: usize,
    layers: Vec<LayerInfo>,
    /// Graph input index, time axis, batch axis.
    seq: Option<(usize, AxisId, AxisId)>,
    declared_features: Vec<Option<usize>>,
}

/// Walks `graph` (see the module docs); `on_lstm` maps each LSTM node of
/// the chain (attributes and constant inputs) and says its sizes.
pub(super) fn walk(
    src: &Source,
    graph: &GraphProto,
    model_bytes: usize,
    on_lstm: &mut dyn FnMut(usize, &NodeProto, LstmConsts) -> Result<LstmShape>,
) -> Result<Walked> {
    let mut inits = HashMap::new();
    for t in &graph.initializer {
        if inits.insert(t.name.as_str(), t).is_some() {
            return Err(src.err(format!("initializer `{}` is given twice", t.name)));
        }
    }
    let mut w = Walk {
        src,
        inits,
        vals: HashMap::new(),
        budget: (1usize << 24).saturating_add(model_bytes.saturating_mul(4)),
        layers: Vec::new(),
        seq: None,
        declared_features: Vec::new(),
    };
    // Graph inputs (older files list the initializers among them too).
    for (g, vi) in graph.input.iter().enumerate() {
        let tt = vi.r#type.as_ref().and_then(|t| t.tensor_type.as_ref());
        let dims = tt.and_then(|t| t.shape.as_ref()).map(|s| &s.dim);
        let float = tt.is_none_or(|t| {
            matches!(
                t.elem_type,
                0 | pb::FLOAT | pb::DOUBLE | pb::FLOAT16 | pb::BFLOAT16
            )
        });
        w.declared_features.push(
            dims.and_then(|d| d.get(2))
                .and_then(|d| d.dim_value)
                .and_then(|v| usize::try_from(v).ok()),
        );
        if w.inits.contains_key(vi.name.as_str()) {
            continue;
        }
        let val = if float && dims.is_none_or(|d| d.len() == 3) {
            Val::Seq(Sym {
                axes: vec![
                    Ax::Dyn(AxisId::In(g, 0)),
                    Ax::Dyn(AxisId::In(g, 1)),
                    Ax::Dyn(AxisId::Feat(g)),
                ],
                feats: Rc::new(vec![INPUT_FEAT]),
            })
        } else {
            Val::Runtime(None)
        };
        w.vals.insert(vi.name.as_str(), val);
    }
    // Producers, and the order (Kahn's algorithm).
    let nodes = &graph.node;
    let mut producer: HashMap<&str, usize> = HashMap::new();
    for (i, n) in nodes.iter().enumerate() {
        for o in n.output.iter().filter(|o| !o.is_empty()) {
            if w.inits.contains_key(o.as_str()) || w.vals.contains_key(o.as_str()) {
                return Err(src.err(format!(
                    "node {} ({}) writes `{o}`, which is an initializer or graph input",
                    label(i, n),
                    n.op_type
                )));
            }
            if let Some(j) = producer.insert(o.as_str(), i) {
                return Err(src.err(format!(
                    "value `{o}` is written by two nodes ({} and {})",
                    label(j, &nodes[j]),
                    label(i, n)
                )));
            }
        }
    }
    let mut consumers: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    let mut indeg = vec![0usize; nodes.len()];
    for (i, n) in nodes.iter().enumerate() {
        for inp in n.input.iter().filter(|s| !s.is_empty()) {
            if let Some(&p) = producer.get(inp.as_str()) {
                consumers[p].push(i);
                indeg[i] += 1;
            } else if !w.inits.contains_key(inp.as_str())
                && !w.vals.contains_key(inp.as_str())
                && !is_lstm(n)
            {
                return Err(src.err(format!(
                    "node {} ({}) reads `{inp}`, which no node, initializer or graph input provides",
                    label(i, n),
                    n.op_type
                )));
            }
        }
    }
    let mut queue: VecDeque<usize> = (0..nodes.len()).filter(|&i| indeg[i] == 0).collect();
    let mut done = 0;
    while let Some(i) = queue.pop_front() {
        done += 1;
        let node = &nodes[i];
        let outs = if is_lstm(node) {
            w.lstm(i, node, on_lstm)?
        } else {
            w.eval(i, node)?
        };
        for (name, v) in node.output.iter().zip(outs) {
            if !name.is_empty() {
                w.vals.insert(name.as_str(), v);
            }
        }
        for &c in &consumers[i] {
            indeg[c] -= 1;
            if indeg[c] == 0 {
                queue.push_back(c);
            }
        }
    }
    if done < nodes.len() {
        let (i, n) = nodes
            .iter()
            .enumerate()
            .find(|&(i, _)| indeg[i] > 0)
            .expect("a node is left");
        return Err(src.err(format!(
            "the graph has a cycle (through node {} ({}))",
            label(i, n),
            n.op_type
        )));
    }
    w.finish(graph)
}

impl<'a> Walk<'a> {
    fn val(&mut self, name: &'a str) -> Result<Option<Val>> {
        if name.is_empty() {
            return Ok(None);
        }
        if let Some(v) = self.vals.get(name) {
            return Ok(Some(v.clone()));
        }
        match self.inits.get(name) {
            Some(t) => {
                let c = tensor::read_tensor(self.src, t)?;
                // Folding may compute a few times the constant data read.
                self.budget = self.budget.saturating_add(c.data.len().saturating_mul(4));
                let v = Val::Const(Rc::new(c));
                self.vals.insert(name, v.clone());
                Ok(Some(v))
            }
            None => Ok(Some(Val::Undefined)),
        }
    }

    /// Charges `n` folded elements against the budget.
    fn charge(&mut self, n: usize, i: usize, node: &NodeProto) -> Result<()> {
        self.budget = self.budget.checked_sub(n).ok_or_else(|| {
            self.src.err(format!(
                "node {} ({}): the constant subgraphs compute more elements than the model's size allows",
                label(i, node),
                node.op_type
            ))
        })?;
        Ok(())
    }

    /// Charges the index lists of `shape`'s axes (one entry per index of
    /// each axis) before they are built: a tensor with no elements may
    /// still claim a 2⁴⁰-long axis, and every Slice, Split, Gather or
    /// Transpose lists its input's axes however little it selects.
    fn charge_axes(&mut self, shape: &[usize], i: usize, node: &NodeProto) -> Result<()> {
        let n = shape.iter().fold(0usize, |a, &d| a.saturating_add(d));
        self.charge(n, i, node)
    }

    /// A folded constant (its elements were charged before it was built).
    fn konst(&mut self, c: Const, _i: usize, _node: &NodeProto) -> Result<Val> {
        Ok(Val::Const(Rc::new(c)))
    }

    /// Charges the elements of `lists` (a selection) before it is built.
    fn charge_lists(&mut self, lists: &[Vec<usize>], i: usize, node: &NodeProto) -> Result<()> {
        let dims: Vec<usize> = lists.iter().map(Vec::len).collect();
        let n = checked_elements(&dims, "a folded selection").map_err(|e| self.bad(i, node, e))?;
        self.charge(n, i, node)
    }

    fn bad(&self, i: usize, node: &NodeProto, why: impl std::fmt::Display) -> Error {
        self.src
            .err(format!("node {} ({}): {why}", label(i, node), node.op_type))
    }

    fn eval(&mut self, i: usize, node: &'a NodeProto) -> Result<Vec<Val>> {
        let mut ins = Vec::with_capacity(node.input.len());
        for name in &node.input {
            ins.push(self.val(name)?);
        }
        let n_out = node.output.len();
        if let Some(Some(Val::Unmapped(c))) =
            ins.iter().find(|v| matches!(v, Some(Val::Unmapped(_))))
        {
            return Ok(vec![Val::Unmapped(c.clone()); n_out]);
        }
        let known = matches!(node.domain.as_str(), "" | "ai.onnx");
        if known && let Some(outs) = self.try_eval(i, node, &ins)? {
            if outs.len() != n_out {
                return Err(self.bad(i, node, format!("has {n_out} outputs")));
            }
            return Ok(outs);
        }
        let cause = |why: &str| {
            Rc::new(Cause {
                node: label(i, node),
                op: if node.domain.is_empty() {
                    node.op_type.clone()
                } else {
                    format!("{}::{}", node.domain, node.op_type)
                },
                why: why.to_string(),
            })
        };
        let present: Vec<&Val> = ins.iter().flatten().collect();
        let v = if present
            .iter()
            .any(|v| matches!(v, Val::Seq(s) if !s.is_input()))
        {
            Val::Unmapped(cause("cannot be mapped onto an LSTM stack"))
        } else if present.iter().any(|v| matches!(v, Val::StateOut)) {
            Val::StateOut
        } else if present.iter().all(|v| matches!(v, Val::Const(_))) {
            Val::Unmapped(cause("cannot be folded into a constant"))
        } else {
            Val::Runtime(Some(cause("is computed at run time")))
        };
        Ok(vec![v; n_out])
    }

    /// The ops known here; `None`: not for these inputs (the caller
    /// classifies the result).
    fn try_eval(
        &mut self,
        i: usize,
        node: &NodeProto,
        ins: &[Option<Val>],
    ) -> Result<Option<Vec<Val>>> {
        let x = ins.first().cloned().flatten();
        let one = |v: Val| Ok(Some(vec![v]));
        let ai = |name: &str, default: i64| attr(node, name).map_or(default, |a| a.i);
        match node.op_type.as_str() {
            "Constant" => {
                let c = self.constant(i, node)?;
                self.budget = self.budget.saturating_add(c.data.len().saturating_mul(4));
                one(self.konst(c, i, node)?)
            }
            "Identity" => Ok(x.map(|v| vec![v])),
            "Cast" => {
                let to = ai("to", 0);
                let float = matches!(to as i32, pb::FLOAT | pb::DOUBLE);
                let int = matches!(to as i32, pb::INT64 | pb::INT32);
                match x {
                    Some(Val::Const(c)) => match (&c.data, float, int) {
                        (Data::F32(_), true, _) => one(Val::Const(c)),
                        (Data::I64(v), _, true) => {
                            if to as i32 == pb::INT32
                                && v.iter().any(|&e| i32::try_from(e).is_err())
                            {
                                return Ok(None);
                            }
                            one(Val::Const(c))
                        }
                        (Data::I64(v), true, _) => {
                            self.charge(v.len(), i, node)?;
                            let c = Const {
                                shape: c.shape.clone(),
                                data: Data::F32(v.iter().map(|&e| e as f32).collect()),
                            };
                            one(self.konst(c, i, node)?)
                        }
                        _ => Ok(None),
                    },
                    Some(v @ Val::Shape(..)) if int => one(v),
                    Some(v @ Val::Seq(_)) if to as i32 == pb::FLOAT => one(v),
                    Some(z @ Val::Zeros(_)) => one(z),
                    _ => Ok(None),
                }
            }
            "Shape" => {
                let dims: Vec<Dim> = match &x {
                    Some(Val::Const(c)) => c.shape.iter().map(|&d| Dim::K(d as i64)).collect(),
                    Some(Val::Seq(s)) => s
                        .axes
                        .iter()
                        .map(|a| match a {
                            Ax::S(s) => Dim::K(*s as i64),
                            Ax::Dyn(id) => Dim::A(*id),
                        })
                        .collect(),
                    Some(Val::Zeros(Some(d))) => d.clone(),
                    _ => return Ok(None),
                };
                let r = dims.len();
                let clamp = |v: i64| {
                    let v = if v < 0 { v + r as i64 } else { v };
                    v.clamp(0, r as i64) as usize
                };
                let start = clamp(ai("start", 0));
                let end = attr(node, "end").map_or(r, |a| clamp(a.i));
                let dims = dims[start..end.max(start)].to_vec();
                one(self.shape_val(dims, false, i, node)?)
            }
            "Transpose" => {
                let perm = |rank: usize| -> Result<Vec<usize>> {
                    let p: Vec<usize> = match attr(node, "perm") {
                        Some(a) => a
                            .ints
                            .iter()
                            .map(|&v| usize::try_from(v).unwrap_or(usize::MAX))
                            .collect(),
                        None => (0..rank).rev().collect(),
                    };
                    let mut seen = vec![false; rank];
                    if p.len() != rank
                        || p.iter()
                            .any(|&v| v >= rank || std::mem::replace(&mut seen[v], true))
                    {
                        return Err(self.bad(
                            i,
                            node,
                            format!("perm {p:?} is not a permutation of {rank} axes"),
                        ));
                    }
                    Ok(p)
                };
                match x {
                    Some(Val::Const(c)) => {
                        let p = perm(c.shape.len())?;
                        self.charge(c.data.len(), i, node)?;
                        self.charge_axes(&c.shape, i, node)?;
                        let (shape, map) = transpose_map(&c.shape, &p, "a folded Transpose")?;
                        let data = c.data.take(&map, "a folded Transpose")?;
                        one(self.konst(Const { shape, data }, i, node)?)
                    }
                    Some(Val::Seq(s)) => {
                        let p = perm(s.axes.len())?;
                        self.charge(s.feats.len(), i, node)?;
                        let axes: Vec<Ax> = p.iter().map(|&a| s.axes[a]).collect();
                        // The static axes' own permutation.
                        let st_index: Vec<Option<usize>> = s
                            .axes
                            .iter()
                            .scan(0, |k, a| {
                                Some(match a {
                                    Ax::S(_) => {
                                        *k += 1;
                                        Some(*k - 1)
                                    }
                                    Ax::Dyn(_) => None,
                                })
                            })
                            .collect();
                        let sp: Vec<usize> = p.iter().filter_map(|&a| st_index[a]).collect();
                        let st = s.static_shape();
                        self.charge_axes(&st, i, node)?;
                        let (_, map) = transpose_map(&st, &sp, "a Transpose")?;
                        let feats = take(&s.feats, &map, "a Transpose")?;
                        one(Val::Seq(Sym {
                            axes,
                            feats: Rc::new(feats),
                        }))
                    }
                    Some(Val::Zeros(d)) => {
                        let d = d.and_then(|d| {
                            let p = perm(d.len()).ok()?;
                            Some(p.iter().map(|&a| d[a]).collect())
                        });
                        one(Val::Zeros(d))
                    }
                    _ => Ok(None),
                }
            }
            "Squeeze" | "Unsqueeze" => {
                let axes = match (ins.get(1), attr(node, "axes")) {
                    (Some(Some(_)), _) => match ints_of(&ins[1]) {
                        Some(a) => Some(a),
                        None => return Ok(None),
                    },
                    (_, Some(a)) => Some(a.ints.clone()),
                    _ => None,
                };
                let squeeze = node.op_type == "Squeeze";
                if !squeeze && axes.is_none() {
                    return Err(self.bad(i, node, "has no axes"));
                }
                match x {
                    Some(Val::Const(c)) => {
                        let shape = self.squeeze_shape(
                            &c.shape.iter().map(|&d| Some(d)).collect::<Vec<_>>(),
                            axes.as_deref(),
                            squeeze,
                            i,
                            node,
                        )?;
                        self.charge(c.data.len(), i, node)?;
                        match shape {
                            Some(s) => one(Val::Const(Rc::new(Const {
                                shape: s.into_iter().map(|d| d.unwrap_or(1)).collect(),
                                data: c.data.clone(),
                            }))),
                            None => Ok(None),
                        }
                    }
                    Some(Val::Seq(s)) => {
                        let Some(axes) = axes else { return Ok(None) };
                        let dims: Vec<Option<usize>> = s
                            .axes
                            .iter()
                            .map(|a| match a {
                                Ax::S(v) => Some(*v),
                                Ax::Dyn(_) => None,
                            })
                            .collect();
                        let Some(_) = self.squeeze_shape(&dims, Some(&axes), squeeze, i, node)?
                        else {
                            return Ok(None);
                        };
                        let mut out = s.axes.clone();
                        if squeeze {
                            let mut idx: Vec<usize> =
                                axes.iter().filter_map(|&a| axis(a, out.len())).collect();
                            idx.sort_unstable();
                            idx.dedup();
                            for a in idx.into_iter().rev() {
                                out.remove(a);
                            }
                        } else {
                            let r = out.len() + axes.len();
                            let mut idx: Vec<usize> =
                                axes.iter().filter_map(|&a| axis(a, r)).collect();
                            idx.sort_unstable();
                            for a in idx {
                                out.insert(a, Ax::S(1));
                            }
                        }
                        one(Val::Seq(Sym {
                            axes: out,
                            feats: s.feats.clone(),
                        }))
                    }
                    Some(Val::Shape(d, scalar)) => {
                        let ok = match axes.as_deref() {
                            Some([0]) | Some([-1]) => true,
                            None => squeeze,
                            _ => false,
                        };
                        match (squeeze, scalar, d.len()) {
                            (true, false, 1) if ok => one(Val::Shape(d, true)),
                            (false, true, _) if ok => one(Val::Shape(d, false)),
                            _ => Ok(None),
                        }
                    }
                    Some(Val::Zeros(d)) => one(Val::Zeros(
                        d.and_then(|d| squeeze_dims(&d, axes.as_deref(), squeeze)),
                    )),
                    _ => Ok(None),
                }
            }
            "Reshape" => {
                if ai("allowzero", 0) != 0 {
                    return Ok(None);
                }
                let target: Vec<Dim> = match ins.get(1).cloned().flatten() {
                    Some(Val::Const(c)) => match c.ints() {
                        Some(v) => v.iter().map(|&e| Dim::K(e)).collect(),
                        None => return Err(self.bad(i, node, "the shape is not integers")),
                    },
                    Some(Val::Shape(d, _)) => d,
                    _ => return Ok(None),
                };
                match x {
                    Some(Val::Const(c)) => {
                        let shape = self.reshape_const(&c.shape, &target, i, node)?;
                        self.charge(c.data.len(), i, node)?;
                        one(Val::Const(Rc::new(Const {
                            shape,
                            data: c.data.clone(),
                        })))
                    }
                    Some(Val::Seq(s)) => Ok(reshape_sym(&s, &target).map(|s| vec![Val::Seq(s)])),
                    Some(Val::Shape(d, _)) => {
                        let n = d.len() as i64;
                        match target.as_slice() {
                            [] if n == 1 => one(Val::Shape(d, true)),
                            [Dim::K(k)] if *k == -1 || *k == n => one(Val::Shape(d, false)),
                            _ => Ok(None),
                        }
                    }
                    Some(Val::Zeros(_)) => one(Val::Zeros(None)),
                    _ => Ok(None),
                }
            }
            "Slice" => {
                let (starts, ends, axes, steps) = if node.input.len() >= 3 {
                    let get = |k: usize| ins.get(k).cloned().flatten();
                    let (Some(s), Some(e)) = (ints_of(&get(1)), ints_of(&get(2))) else {
                        return Ok(None);
                    };
                    let a = match get(3) {
                        None => None,
                        v => match ints_of(&v) {
                            Some(a) => Some(a),
                            None => return Ok(None),
                        },
                    };
                    let st = match get(4) {
                        None => None,
                        v => match ints_of(&v) {
                            Some(a) => Some(a),
                            None => return Ok(None),
                        },
                    };
                    (s, e, a, st)
                } else {
                    let l = |n: &str| attr(node, n).map(|a| a.ints.clone());
                    match (l("starts"), l("ends")) {
                        (Some(s), Some(e)) => (s, e, l("axes"), None),
                        _ => return Err(self.bad(i, node, "has no starts or ends")),
                    }
                };
                let k = starts.len();
                let axes = axes.unwrap_or_else(|| (0..k as i64).collect());
                let steps = steps.unwrap_or_else(|| vec![1; k]);
                if ends.len() != k || axes.len() != k || steps.len() != k {
                    return Err(self.bad(i, node, "starts, ends, axes and steps differ in length"));
                }
                let specs: Vec<(i64, i64, i64, i64)> = (0..k)
                    .map(|j| (axes[j], starts[j], ends[j], steps[j]))
                    .collect();
                self.slice(i, node, x, &specs)
            }
            "Gather" => {
                let Some(Val::Const(idx)) = ins.get(1).cloned().flatten() else {
                    return Ok(None);
                };
                let Data::I64(iv) = &idx.data else {
                    return Err(self.bad(i, node, "the indices are not integers"));
                };
                let ax = ai("axis", 0);
                if let Some(Val::Const(c)) = &x {
                    self.charge_axes(&c.shape, i, node)?;
                }
                let sel = |dim: usize| -> Result<Vec<usize>> {
                    iv.iter()
                        .map(|&e| {
                            let v = if e < 0 { e + dim as i64 } else { e };
                            usize::try_from(v).ok().filter(|&v| v < dim).ok_or_else(|| {
                                self.bad(i, node, format!("index {e} is out of range for {dim}"))
                            })
                        })
                        .collect()
                };
                match x {
                    Some(Val::Const(c)) => {
                        let a = axis(ax, c.shape.len()).ok_or_else(|| {
                            self.bad(i, node, format!("axis {ax} is out of range"))
                        })?;
                        let mut lists: Vec<Vec<usize>> =
                            c.shape.iter().map(|&d| (0..d).collect()).collect();
                        lists[a] = sel(c.shape[a])?;
                        self.charge_lists(&lists, i, node)?;
                        let (_, map) = select_map(&c.shape, &lists, "a folded Gather")?;
                        let mut shape = c.shape[..a].to_vec();
                        shape.extend(&idx.shape);
                        shape.extend(&c.shape[a + 1..]);
                        let data = c.data.take(&map, "a folded Gather")?;
                        one(self.konst(Const { shape, data }, i, node)?)
                    }
                    Some(Val::Shape(d, false))
                        if axis(ax, 1) == Some(0) && idx.shape.len() <= 1 =>
                    {
                        let s = sel(d.len())?;
                        let dims = s.iter().map(|&k| d[k]).collect();
                        one(self.shape_val(dims, idx.shape.is_empty(), i, node)?)
                    }
                    Some(Val::Seq(s)) if idx.shape.len() <= 1 => {
                        let Some(a) = axis(ax, s.axes.len()) else {
                            return Ok(None);
                        };
                        let Ax::S(dim) = s.axes[a] else {
                            return Ok(None);
                        };
                        let picked = sel(dim)?;
                        let n = picked.len();
                        let Some(out) = self.select_sym(&s, &[(a, picked)], i, node)? else {
                            return Ok(None);
                        };
                        let mut out = out;
                        if idx.shape.is_empty() {
                            out.axes.remove(a);
                        } else {
                            out.axes[a] = Ax::S(n);
                        }
                        one(Val::Seq(out))
                    }
                    Some(Val::Zeros(_)) => one(Val::Zeros(None)),
                    _ => Ok(None),
                }
            }
            "Concat" => {
                let ax = ai("axis", 0);
                let vals: Vec<Val> = match ins.iter().cloned().collect::<Option<Vec<Val>>>() {
                    Some(v) if !v.is_empty() => v,
                    _ => return Ok(None),
                };
                self.concat(i, node, &vals, ax)
            }
            "Split" => self.split(i, node, x, ins),
            "ConstantOfShape" => {
                let value = match attr(node, "value").and_then(|a| a.t.as_ref()) {
                    Some(t) => tensor::read_tensor(self.src, t)?,
                    None => Const {
                        shape: vec![1],
                        data: Data::F32(vec![0.0]),
                    },
                };
                if value.data.len() != 1 {
                    return Err(self.bad(i, node, "value is not one element"));
                }
                match x {
                    Some(Val::Const(c)) => {
                        let Some(dims) = c.ints() else {
                            return Err(self.bad(i, node, "the shape is not integers"));
                        };
                        let shape = dims
                            .iter()
                            .map(|&d| usize::try_from(d).ok())
                            .collect::<Option<Vec<usize>>>()
                            .ok_or_else(|| self.bad(i, node, "a dimension is negative"))?;
                        let n = checked_elements(&shape, "a ConstantOfShape")
                            .map_err(|e| self.bad(i, node, e))?;
                        self.charge(n, i, node)?;
                        let data = match value.data {
                            Data::F32(v) => Data::F32(try_filled(n, v[0], "a ConstantOfShape")?),
                            Data::I64(v) => Data::I64(try_filled(n, v[0], "a ConstantOfShape")?),
                        };
                        one(Val::Const(Rc::new(Const { shape, data })))
                    }
                    Some(Val::Shape(d, false)) if value.data.all_zero() => one(Val::Zeros(Some(d))),
                    Some(Val::Shape(..)) if value.data.all_zero() => one(Val::Zeros(None)),
                    _ => Ok(None),
                }
            }
            "Expand" => {
                let shape = ins.get(1).cloned().flatten();
                match (x, shape) {
                    (Some(Val::Const(c)), Some(Val::Const(s))) => {
                        let Some(dims) = s.ints() else {
                            return Err(self.bad(i, node, "the shape is not integers"));
                        };
                        let dims: Vec<usize> = dims
                            .iter()
                            .map(|&d| usize::try_from(d).ok())
                            .collect::<Option<_>>()
                            .ok_or_else(|| self.bad(i, node, "a dimension is negative"))?;
                        let out = broadcast(&c.shape, &dims)
                            .ok_or_else(|| self.bad(i, node, "the shapes do not broadcast"))?;
                        let n = checked_elements(&out, "an Expand")
                            .map_err(|e| self.bad(i, node, e))?;
                        self.charge(n, i, node)?;
                        self.charge_axes(&out, i, node)?;
                        let map = broadcast_map(&c.shape, &out, "an Expand")?;
                        let data = c.data.take(&map, "an Expand")?;
                        one(Val::Const(Rc::new(Const { shape: out, data })))
                    }
                    (Some(Val::Const(c)), Some(Val::Shape(d, false))) if c.data.all_zero() => {
                        // A scalar (or all-ones shape) expands to exactly `d`.
                        let exact = c.shape.len() <= d.len() && c.shape.iter().all(|&k| k == 1);
                        one(Val::Zeros(exact.then_some(d)))
                    }
                    (Some(Val::Zeros(_)), _) => one(Val::Zeros(None)),
                    _ => Ok(None),
                }
            }
            "Add" | "Sub" | "Mul" | "Div" => {
                let (Some(a), Some(b)) = (x, ins.get(1).cloned().flatten()) else {
                    return Ok(None);
                };
                self.arith(i, node, a, b)
            }
            _ => Ok(None),
        }
    }

    /// A shape value, as a constant when every dimension is known.
    fn shape_val(
        &mut self,
        dims: Vec<Dim>,
        scalar: bool,
        i: usize,
        node: &NodeProto,
    ) -> Result<Val> {
        if dims.iter().all(|d| matches!(d, Dim::K(_))) {
            let v: Vec<i64> = dims
                .iter()
                .map(|d| match d {
                    Dim::K(k) => *k,
                    Dim::A(_) => 0,
                })
                .collect();
            let shape = if scalar { vec![] } else { vec![v.len()] };
            return self.konst(
                Const {
                    shape,
                    data: Data::I64(v),
                },
                i,
                node,
            );
        }
        Ok(Val::Shape(dims, scalar))
    }

    fn constant(&self, i: usize, node: &NodeProto) -> Result<Const> {
        let a = match node.attribute.as_slice() {
            [a] => a,
            _ => return Err(self.bad(i, node, "needs exactly one attribute")),
        };
        Ok(match a.name.as_str() {
            "value" => match &a.t {
                Some(t) => tensor::read_tensor(self.src, t)?,
                None => return Err(self.bad(i, node, "value holds no tensor")),
            },
            "value_float" => Const {
                shape: vec![],
                data: Data::F32(vec![a.f]),
            },
            "value_floats" => Const {
                shape: vec![a.floats.len()],
                data: Data::F32(a.floats.clone()),
            },
            "value_int" => Const {
                shape: vec![],
                data: Data::I64(vec![a.i]),
            },
            "value_ints" => Const {
                shape: vec![a.ints.len()],
                data: Data::I64(a.ints.clone()),
            },
            other => {
                return Err(self.src.unsupported(format!(
                    "node {} (Constant): attribute `{other}` is not supported",
                    label(i, node)
                )));
            }
        })
    }

    /// The shape after Squeeze/Unsqueeze of `axes` (`None` dims are
    /// symbolic); `None` when a symbolic axis would be squeezed.
    fn squeeze_shape(
        &self,
        dims: &[Option<usize>],
        axes: Option<&[i64]>,
        squeeze: bool,
        i: usize,
        node: &NodeProto,
    ) -> Result<Option<Vec<Option<usize>>>> {
        let r = dims.len();
        if squeeze {
            let Some(axes) = axes else {
                if dims.iter().any(Option::is_none) {
                    return Ok(None);
                }
                return Ok(Some(
                    dims.iter().copied().filter(|&d| d != Some(1)).collect(),
                ));
            };
            let mut drop = vec![false; r];
            for &a in axes {
                let k = axis(a, r)
                    .ok_or_else(|| self.bad(i, node, format!("axis {a} is out of range")))?;
                match dims[k] {
                    Some(1) => drop[k] = true,
                    None => return Ok(None),
                    Some(d) => {
                        return Err(self.bad(i, node, format!("axis {a} has size {d}, not 1")));
                    }
                }
            }
            Ok(Some(
                dims.iter()
                    .zip(drop)
                    .filter(|(_, d)| !d)
                    .map(|(&v, _)| v)
                    .collect(),
            ))
        } else {
            let axes = axes.unwrap_or(&[]);
            let out_r = r + axes.len();
            let mut ins = vec![false; out_r];
            for &a in axes {
                let k = axis(a, out_r)
                    .ok_or_else(|| self.bad(i, node, format!("axis {a} is out of range")))?;
                if std::mem::replace(&mut ins[k], true) {
                    return Err(self.bad(i, node, format!("axis {a} is given twice")));
                }
            }
            let mut src = dims.iter();
            Ok(Some(
                ins.iter()
                    .map(|&new| {
                        if new {
                            Some(1)
                        } else {
                            *src.next().unwrap_or(&Some(1))
                        }
                    })
                    .collect(),
            ))
        }
    }

    fn reshape_const(
        &self,
        shape: &[usize],
        target: &[Dim],
        i: usize,
        node: &NodeProto,
    ) -> Result<Vec<usize>> {
        let n: usize = shape.iter().product();
        let mut out = Vec::with_capacity(target.len().min(64));
        let mut infer = None;
        for (k, d) in target.iter().enumerate() {
            match *d {
                Dim::K(0) => out.push(*shape.get(k).ok_or_else(|| {
                    self.bad(
                        i,
                        node,
                        format!("shape entry {k} copies a dimension the input lacks"),
                    )
                })?),
                Dim::K(-1) if infer.is_none() => {
                    infer = Some(k);
                    out.push(1);
                }
                Dim::K(v) if v > 0 => out.push(usize::try_from(v).unwrap_or(usize::MAX)),
                _ => {
                    return Err(self.bad(
                        i,
                        node,
                        format!("shape {target:?} is not a valid target"),
                    ));
                }
            }
        }
        let known = out
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| self.bad(i, node, "the shape overflows"))?;
        if let Some(k) = infer {
            if known == 0 || !n.is_multiple_of(known) {
                return Err(self.bad(
                    i,
                    node,
                    format!("cannot reshape {} to {target:?}", shape_str(shape)),
                ));
            }
            out[k] = n / known;
        } else if known != n {
            return Err(self.bad(
                i,
                node,
                format!(
                    "cannot reshape {} ({n} elements) to {}",
                    shape_str(shape),
                    shape_str(&out)
                ),
            ));
        }
        Ok(out)
    }

    /// The sequence with `lists` selected along static axes.
    fn select_sym(
        &mut self,
        s: &Sym,
        lists: &[(usize, Vec<usize>)],
        i: usize,
        node: &NodeProto,
    ) -> Result<Option<Sym>> {
        let st = s.static_shape();
        self.charge_axes(&st, i, node)?;
        let mut per: Vec<Vec<usize>> = st.iter().map(|&d| (0..d).collect()).collect();
        let mut axes = s.axes.clone();
        for (a, l) in lists {
            let Ax::S(_) = s.axes[*a] else {
                return Ok(None);
            };
            let k = s.axes[..*a]
                .iter()
                .filter(|x| matches!(x, Ax::S(_)))
                .count();
            per[k] = l.clone();
            axes[*a] = Ax::S(l.len());
        }
        self.charge_lists(&per, i, node)?;
        let (_, map) = select_map(&st, &per, "a sequence selection")?;
        Ok(Some(Sym {
            axes,
            feats: Rc::new(take(&s.feats, &map, "a sequence selection")?),
        }))
    }

    fn slice(
        &mut self,
        i: usize,
        node: &NodeProto,
        x: Option<Val>,
        specs: &[(i64, i64, i64, i64)],
    ) -> Result<Option<Vec<Val>>> {
        let one = |v: Val| Ok(Some(vec![v]));
        if let Some(Val::Const(c)) = &x {
            self.charge_axes(&c.shape, i, node)?;
        }
        let bad_step = || self.bad(i, node, "a step is 0");
        match x {
            Some(Val::Const(c)) => {
                let mut lists: Vec<Vec<usize>> =
                    c.shape.iter().map(|&d| (0..d).collect()).collect();
                for &(a, s, e, st) in specs {
                    let k = axis(a, c.shape.len())
                        .ok_or_else(|| self.bad(i, node, format!("axis {a} is out of range")))?;
                    lists[k] = slice_indices(c.shape[k], s, e, st).ok_or_else(bad_step)?;
                }
                self.charge_lists(&lists, i, node)?;
                let (shape, map) = select_map(&c.shape, &lists, "a folded Slice")?;
                let data = c.data.take(&map, "a folded Slice")?;
                one(self.konst(Const { shape, data }, i, node)?)
            }
            Some(Val::Shape(d, false)) => {
                let mut idx: Vec<usize> = (0..d.len()).collect();
                for &(a, s, e, st) in specs {
                    if axis(a, 1) != Some(0) {
                        return Ok(None);
                    }
                    idx = slice_indices(d.len(), s, e, st).ok_or_else(bad_step)?;
                }
                let dims = idx.iter().map(|&k| d[k]).collect();
                one(self.shape_val(dims, false, i, node)?)
            }
            Some(Val::Seq(s)) => {
                let mut lists = Vec::new();
                for &(a, st0, e, st) in specs {
                    let Some(k) = axis(a, s.axes.len()) else {
                        return Err(self.bad(i, node, format!("axis {a} is out of range")));
                    };
                    match s.axes[k] {
                        Ax::S(d) => {
                            lists.push((k, slice_indices(d, st0, e, st).ok_or_else(bad_step)?))
                        }
                        // The whole of a run-time axis is a no-op.
                        Ax::Dyn(_) if st0 == 0 && st == 1 && e >= i64::MAX / 2 => {}
                        Ax::Dyn(_) => return Ok(None),
                    }
                }
                Ok(self
                    .select_sym(&s, &lists, i, node)?
                    .map(|s| vec![Val::Seq(s)]))
            }
            Some(Val::Zeros(d)) => {
                let d = d.and_then(|mut d| {
                    for &(a, s0, e, st) in specs {
                        let k = axis(a, d.len())?;
                        d[k] = match d[k] {
                            Dim::K(n) => {
                                Dim::K(slice_indices(usize::try_from(n).ok()?, s0, e, st)?.len()
                                    as i64)
                            }
                            Dim::A(x) if s0 == 0 && st == 1 && e >= i64::MAX / 2 => Dim::A(x),
                            Dim::A(_) => return None,
                        };
                    }
                    Some(d)
                });
                one(Val::Zeros(d))
            }
            _ => Ok(None),
        }
    }

    fn concat(
        &mut self,
        i: usize,
        node: &NodeProto,
        vals: &[Val],
        ax: i64,
    ) -> Result<Option<Vec<Val>>> {
        let one = |v: Val| Ok(Some(vec![v]));
        if vals.iter().all(|v| matches!(v, Val::Const(_))) {
            let cs: Vec<&Rc<Const>> = vals
                .iter()
                .filter_map(|v| match v {
                    Val::Const(c) => Some(c),
                    _ => None,
                })
                .collect();
            let r = cs[0].shape.len();
            let a = axis(ax, r)
                .ok_or_else(|| self.bad(i, node, format!("axis {ax} is out of range")))?;
            for c in &cs {
                let same = c.shape.len() == r
                    && c.shape
                        .iter()
                        .zip(&cs[0].shape)
                        .enumerate()
                        .all(|(k, (x, y))| k == a || x == y);
                if !same {
                    return Err(self.bad(
                        i,
                        node,
                        format!(
                            "inputs of shapes {} and {} do not concatenate",
                            shape_str(&cs[0].shape),
                            shape_str(&c.shape)
                        ),
                    ));
                }
            }
            let what = "a folded Concat";
            let n = cs
                .iter()
                .fold(0usize, |a, c| a.saturating_add(c.data.len()));
            self.charge(n, i, node)?;
            let c = match &cs[0].data {
                Data::F32(_) => {
                    let parts: Option<Vec<(&[usize], &[f32])>> = cs
                        .iter()
                        .map(|c| match &c.data {
                            Data::F32(v) => Some((c.shape.as_slice(), v.as_slice())),
                            _ => None,
                        })
                        .collect();
                    let parts = parts.ok_or_else(|| self.bad(i, node, "inputs differ in type"))?;
                    let (shape, v) = tensor::concat(&parts, a, what)?;
                    Const {
                        shape,
                        data: Data::F32(v),
                    }
                }
                Data::I64(_) => {
                    let parts: Option<Vec<(&[usize], &[i64])>> = cs
                        .iter()
                        .map(|c| match &c.data {
                            Data::I64(v) => Some((c.shape.as_slice(), v.as_slice())),
                            _ => None,
                        })
                        .collect();
                    let parts = parts.ok_or_else(|| self.bad(i, node, "inputs differ in type"))?;
                    let (shape, v) = tensor::concat(&parts, a, what)?;
                    Const {
                        shape,
                        data: Data::I64(v),
                    }
                }
            };
            return one(self.konst(c, i, node)?);
        }
        if vals.iter().any(|v| matches!(v, Val::Shape(..))) {
            let mut dims = Vec::new();
            for v in vals {
                match v {
                    Val::Shape(d, false) => dims.extend_from_slice(d),
                    Val::Const(c) if c.shape.len() == 1 && c.ints().is_some() => {
                        dims.extend(c.ints().unwrap_or(&[]).iter().map(|&k| Dim::K(k)))
                    }
                    _ => return Ok(None),
                }
            }
            return one(self.shape_val(dims, false, i, node)?);
        }
        if vals.iter().all(|v| matches!(v, Val::Seq(_))) {
            let ss: Vec<&Sym> = vals
                .iter()
                .filter_map(|v| match v {
                    Val::Seq(s) => Some(s),
                    _ => None,
                })
                .collect();
            let r = ss[0].axes.len();
            let Some(a) = axis(ax, r) else {
                return Ok(None);
            };
            let mut total = 0usize;
            for s in &ss {
                if s.axes.len() != r
                    || s.axes
                        .iter()
                        .zip(&ss[0].axes)
                        .enumerate()
                        .any(|(k, (x, y))| k != a && x != y)
                {
                    return Ok(None);
                }
                let Ax::S(d) = s.axes[a] else { return Ok(None) };
                total = total.saturating_add(d);
            }
            let k = ss[0].axes[..a]
                .iter()
                .filter(|x| matches!(x, Ax::S(_)))
                .count();
            let shapes: Vec<Vec<usize>> = ss.iter().map(|s| s.static_shape()).collect();
            let parts: Vec<(&[usize], &[Feat])> = shapes
                .iter()
                .zip(&ss)
                .map(|(sh, s)| (sh.as_slice(), s.feats.as_slice()))
                .collect();
            let n = ss
                .iter()
                .fold(0usize, |a, s| a.saturating_add(s.feats.len()));
            self.charge(n, i, node)?;
            let (_, feats) = tensor::concat(&parts, k, "a sequence Concat")?;
            let mut axes = ss[0].axes.clone();
            axes[a] = Ax::S(total);
            return one(Val::Seq(Sym {
                axes,
                feats: Rc::new(feats),
            }));
        }
        if vals.iter().all(|v| match v {
            Val::Zeros(_) => true,
            Val::Const(c) => c.data.all_zero(),
            _ => false,
        }) {
            return one(Val::Zeros(None));
        }
        Ok(None)
    }

    fn split(
        &mut self,
        i: usize,
        node: &NodeProto,
        x: Option<Val>,
        ins: &[Option<Val>],
    ) -> Result<Option<Vec<Val>>> {
        let n_out = node.output.len();
        let ax = attr(node, "axis").map_or(0, |a| a.i);
        let given = match ins.get(1) {
            Some(Some(_)) => match ints_of(&ins[1]) {
                Some(v) => Some(v),
                None => return Ok(None),
            },
            _ => attr(node, "split").map(|a| a.ints.clone()),
        };
        match &x {
            Some(Val::Const(c)) => self.charge_axes(&c.shape, i, node)?,
            Some(Val::Seq(s)) => self.charge_axes(&s.static_shape(), i, node)?,
            _ => {}
        }
        let sizes = |dim: usize| -> Result<Vec<usize>> {
            match &given {
                Some(v) => {
                    let s: Option<Vec<usize>> =
                        v.iter().map(|&e| usize::try_from(e).ok()).collect();
                    match s {
                        Some(s)
                            if s.len() == n_out
                                && s.iter().try_fold(0usize, |a, &b| a.checked_add(b))
                                    == Some(dim) =>
                        {
                            Ok(s)
                        }
                        _ => Err(self.bad(
                            i,
                            node,
                            format!("split {v:?} does not divide {dim} into {n_out}"),
                        )),
                    }
                }
                None => {
                    if n_out == 0 {
                        return Err(self.bad(i, node, "has no outputs"));
                    }
                    let chunk = dim.div_ceil(n_out);
                    Ok((0..n_out)
                        .map(|k| chunk.min(dim.saturating_sub(k * chunk)))
                        .collect())
                }
            }
        };
        let ranges = |dim: usize| -> Result<Vec<Vec<usize>>> {
            let mut at = 0;
            Ok(sizes(dim)?
                .into_iter()
                .map(|s| {
                    let r = (at..at + s).collect();
                    at += s;
                    r
                })
                .collect())
        };
        match x {
            Some(Val::Const(c)) => {
                let a = axis(ax, c.shape.len())
                    .ok_or_else(|| self.bad(i, node, format!("axis {ax} is out of range")))?;
                let mut outs = Vec::new();
                let rs = ranges(c.shape[a])?;
                self.charge(c.data.len(), i, node)?;
                for r in rs {
                    self.charge_axes(&c.shape, i, node)?;
                    let mut lists: Vec<Vec<usize>> =
                        c.shape.iter().map(|&d| (0..d).collect()).collect();
                    lists[a] = r;
                    let (shape, map) = select_map(&c.shape, &lists, "a folded Split")?;
                    let data = c.data.take(&map, "a folded Split")?;
                    outs.push(self.konst(Const { shape, data }, i, node)?);
                }
                Ok(Some(outs))
            }
            Some(Val::Seq(s)) => {
                let Some(a) = axis(ax, s.axes.len()) else {
                    return Ok(None);
                };
                let Ax::S(d) = s.axes[a] else { return Ok(None) };
                let mut outs = Vec::new();
                let rs = ranges(d)?;
                for r in rs {
                    match self.select_sym(&s, &[(a, r)], i, node)? {
                        Some(o) => outs.push(Val::Seq(o)),
                        None => return Ok(None),
                    }
                }
                Ok(Some(outs))
            }
            Some(Val::Zeros(_)) => Ok(Some(vec![Val::Zeros(None); n_out])),
            _ => Ok(None),
        }
    }

    fn arith(&mut self, i: usize, node: &NodeProto, a: Val, b: Val) -> Result<Option<Vec<Val>>> {
        let op = node.op_type.as_str();
        match (&a, &b) {
            (Val::Const(x), Val::Const(y)) => {
                let out = broadcast(&x.shape, &y.shape).ok_or_else(|| {
                    self.bad(
                        i,
                        node,
                        format!(
                            "shapes {} and {} do not broadcast",
                            shape_str(&x.shape),
                            shape_str(&y.shape)
                        ),
                    )
                })?;
                let n = checked_elements(&out, "an arithmetic node")
                    .map_err(|e| self.bad(i, node, e))?;
                self.charge(n, i, node)?;
                self.charge_axes(&out, i, node)?;
                self.charge_axes(&out, i, node)?;
                let (mx, my) = (
                    broadcast_map(&x.shape, &out, "an arithmetic node")?,
                    broadcast_map(&y.shape, &out, "an arithmetic node")?,
                );
                let data = match (&x.data, &y.data) {
                    (Data::F32(p), Data::F32(q)) => Data::F32(
                        mx.iter()
                            .zip(&my)
                            .map(|(&s, &t)| {
                                let (u, v) = (p[s], q[t]);
                                match op {
                                    "Add" => u + v,
                                    "Sub" => u - v,
                                    "Mul" => u * v,
                                    _ => u / v,
                                }
                            })
                            .collect(),
                    ),
                    (Data::I64(p), Data::I64(q)) => {
                        let mut v = Vec::new();
                        v.try_reserve_exact(n).map_err(|_| Error::Alloc {
                            what: "an arithmetic node".into(),
                            bytes: n.saturating_mul(8),
                        })?;
                        for (&s, &t) in mx.iter().zip(&my) {
                            let (u, w) = (p[s], q[t]);
                            let r = match op {
                                "Add" => u.checked_add(w),
                                "Sub" => u.checked_sub(w),
                                "Mul" => u.checked_mul(w),
                                _ => u.checked_div(w),
                            };
                            v.push(r.ok_or_else(|| {
                                self.bad(
                                    i,
                                    node,
                                    format!("{u} {op} {w} overflows or divides by zero"),
                                )
                            })?);
                        }
                        Data::I64(v)
                    }
                    _ => return Err(self.bad(i, node, "inputs differ in type")),
                };
                Ok(Some(vec![Val::Const(Rc::new(Const { shape: out, data }))]))
            }
            (Val::Shape(..), _) | (_, Val::Shape(..)) => {
                let dims = |v: &Val| -> Option<(Vec<Dim>, bool)> {
                    match v {
                        Val::Shape(d, s) => Some((d.clone(), *s)),
                        Val::Const(c) => c
                            .ints()
                            .map(|k| (k.iter().map(|&e| Dim::K(e)).collect(), c.shape.is_empty())),
                        _ => None,
                    }
                };
                let (Some((p, ps)), Some((q, qs))) = (dims(&a), dims(&b)) else {
                    return Ok(None);
                };
                let n = p.len().max(q.len());
                if (p.len() != n && p.len() != 1) || (q.len() != n && q.len() != 1) {
                    return Ok(None);
                }
                let mut out = Vec::with_capacity(n);
                for k in 0..n {
                    let (u, w) = (p[k.min(p.len() - 1)], q[k.min(q.len() - 1)]);
                    out.push(match (u, w, op) {
                        (Dim::K(u), Dim::K(w), _) => {
                            let r = match op {
                                "Add" => u.checked_add(w),
                                "Sub" => u.checked_sub(w),
                                "Mul" => u.checked_mul(w),
                                _ => u.checked_div(w),
                            };
                            match r {
                                Some(r) => Dim::K(r),
                                None => return Ok(None),
                            }
                        }
                        (Dim::A(x), Dim::K(1), "Mul" | "Div") | (Dim::K(1), Dim::A(x), "Mul") => {
                            Dim::A(x)
                        }
                        (Dim::A(x), Dim::K(0), "Add" | "Sub") | (Dim::K(0), Dim::A(x), "Add") => {
                            Dim::A(x)
                        }
                        _ => return Ok(None),
                    });
                }
                Ok(Some(vec![self.shape_val(out, ps && qs, i, node)?]))
            }
            _ => Ok(None),
        }
    }

    /// An LSTM node: its inputs checked, mapped by `on_lstm`, linked to
    /// the chain; outputs Y (symbolic) and the two state outputs.
    fn lstm(
        &mut self,
        i: usize,
        node: &'a NodeProto,
        on_lstm: &mut dyn FnMut(usize, &NodeProto, LstmConsts) -> Result<LstmShape>,
    ) -> Result<Vec<Val>> {
        let lab = label(i, node);
        let src = self.src;
        let dq = is_dq_lstm(node);
        let max_in = if dq { 12 } else { 8 };
        if node.input.len() > max_in {
            return Err(src.err(format!(
                "{} node {lab} has {} inputs (at most {max_in})",
                node.op_type,
                node.input.len()
            )));
        }
        let mut ins = Vec::with_capacity(max_in);
        for k in 0..max_in {
            ins.push(match node.input.get(k) {
                Some(n) => self.val(n)?,
                None => None,
            });
        }
        let in_name = |k: usize| node.input.get(k).map(String::as_str).unwrap_or("");
        let cause_of = |v: &Val| {
            match v {
            Val::Unmapped(c) | Val::Runtime(Some(c)) => format!(": it comes from {}", c.say()),
            Val::StateOut => ": it comes from another LSTM's final state (encoder–decoder graphs are not supported)".into(),
            _ => String::new(),
        }
        };
        // Run-time inputs: lengths and initial states.
        for (k, what) in [(4, "sequence_lens"), (5, "initial_h"), (6, "initial_c")] {
            let Some(v) = &ins[k] else { continue };
            let ok = match v {
                Val::Zeros(_) => k != 4,
                Val::Const(c) => {
                    if k != 4 && c.data.all_zero() {
                        true
                    } else {
                        return Err(src.unsupported(format!(
                            "the LSTM node {lab}'s {what} is a constant (`{}`); constant initial states and lengths are not supported (pass them at run time: --state-in, --seq-lens)",
                            in_name(k)
                        )));
                    }
                }
                Val::Runtime(_) => true,
                Val::Seq(s) => s.is_input(),
                _ => false,
            };
            if !ok {
                return Err(src.unsupported(format!(
                    "the LSTM node {lab}'s {what} (`{}`) is not a graph input or zeros{}",
                    in_name(k),
                    cause_of(v)
                )));
            }
        }
        // Weights: constants.
        let konst_as = |k: usize, what: &str, int: bool| -> Result<Option<Rc<Const>>> {
            let Some(v) = &ins[k] else { return Ok(None) };
            let name = in_name(k);
            match v {
                Val::Const(c) => match c.data {
                    Data::F32(_) if !int => Ok(Some(c.clone())),
                    Data::I64(_) if int => Ok(Some(c.clone())),
                    Data::F32(_) => Err(Error::Dtype {
                        tensor: format!("{what} (`{name}`) of LSTM node {lab}"),
                        path: src.name.to_path_buf(),
                        dtype: "float (an integer type was expected)".into(),
                    }),
                    Data::I64(_) => Err(Error::Dtype {
                        tensor: format!("{what} (`{name}`) of LSTM node {lab}"),
                        path: src.name.to_path_buf(),
                        dtype: "an ONNX integer data type".into(),
                    }),
                },
                Val::Undefined | Val::Runtime(None) => Err(Error::MissingTensor {
                    tensor: if name == what {
                        what.to_string()
                    } else {
                        format!("{what} (named `{name}`)")
                    },
                    source_name: format!(
                        "{}'s initializers and constant subgraphs (it must be a constant)",
                        src.name.display()
                    ),
                }),
                other => Err(src.unsupported(format!(
                    "{what} (`{name}`) of LSTM node {lab} is not a constant{}",
                    cause_of(other)
                ))),
            }
        };
        let konst = |k: usize, what: &str| konst_as(k, what, false);
        let need = |v: Option<Rc<Const>>, what: &str| {
            v.ok_or_else(|| Error::MissingTensor {
                tensor: what.to_string(),
                source_name: format!("{} (LSTM node {lab} input)", src.name.display()),
            })
        };
        let (w, r, quant) = if dq {
            let wq = need(konst_as(1, "W", true)?, "W")?;
            let rq = need(konst_as(2, "R", true)?, "R")?;
            let ws = need(konst(8, "W_scale")?, "W_scale")?;
            let rs = need(konst(10, "R_scale")?, "R_scale")?;
            let wz = konst_as(9, "W_zero_point", true)?;
            let rz = konst_as(11, "R_zero_point", true)?;
            let (w, r, q) =
                dequantize_dq(src, &lab, &wq, &rq, &ws, &rs, wz.as_deref(), rz.as_deref())?;
            (w, r, Some(q))
        } else {
            (need(konst(1, "W")?, "W")?, need(konst(2, "R")?, "R")?, None)
        };
        let b = konst(3, "B")?;
        let p = konst(7, "P")?;
        // X: the sequence.
        let x = match &ins[0] {
            Some(Val::Seq(s)) => s.clone(),
            Some(other) => {
                return Err(src.unsupported(format!(
                    "the input X (`{}`) of LSTM node {lab} is not the graph's sequence{}",
                    in_name(0),
                    cause_of(other)
                )));
            }
            None => return Err(src.err(format!("LSTM node {lab} has no input X"))),
        };
        let shape = on_lstm(i, node, LstmConsts { w, r, b, p, quant })?;
        let (d, h) = (shape.dirs, shape.hidden);
        let layout_err = || {
            src.unsupported(format!(
                "the input X of LSTM node {lab} has layout {}, which is not the graph input or the previous LSTM's output as [time, batch, features]{}",
                x.describe(),
                if shape.layout_batch_first { " (layout=1: [batch, time, features])" } else { "" }
            ))
        };
        let [a0, a1, f] = x.axes.as_slice() else {
            return Err(layout_err());
        };
        let (Ax::Dyn(a0), Ax::Dyn(a1)) = (*a0, *a1) else {
            return Err(layout_err());
        };
        let (t_ax, b_ax) = if shape.layout_batch_first {
            (a1, a0)
        } else {
            (a0, a1)
        };
        match *f {
            Ax::Dyn(AxisId::Feat(g)) => {
                if let Some(first) = self.layers.first() {
                    return Err(src.unsupported(format!(
                        "LSTM nodes {} and {lab} both read the graph input: the LSTM nodes are not one chain",
                        first.label
                    )));
                }
                let ok = matches!((t_ax, b_ax), (AxisId::In(gt, _), AxisId::In(gb, _)) if gt == g && gb == g && t_ax != b_ax);
                if !ok {
                    return Err(layout_err());
                }
                if let Some(Some(n)) = self.declared_features.get(g)
                    && *n != shape.input
                {
                    return Err(Error::Shape {
                        tensor: format!("W of LSTM node {lab} in {}", src.name.display()),
                        expected: format!("input size {n} (the graph input's last dimension)"),
                        got: format!("input size {}", shape.input),
                    });
                }
                self.seq = Some((g, t_ax, b_ax));
            }
            Ax::S(width) => {
                let Some(prev) = self.layers.last() else {
                    return Err(layout_err());
                };
                let Some((_, t0, b0)) = self.seq else {
                    return Err(layout_err());
                };
                let k = self.layers.len() as u32 - 1;
                let canonical = x.feats.len() == width
                    && width == prev.dirs * prev.hidden
                    && x.feats.iter().enumerate().all(|(j, f)| {
                        *f == Feat {
                            layer: k,
                            dir: (j / prev.hidden) as u32,
                            unit: (j % prev.hidden) as u32,
                        }
                    });
                if !canonical {
                    return Err(src.unsupported(format!(
                        "the input X of LSTM node {lab} is not the output of the previous LSTM node {} (directions concatenated): the LSTM nodes are not one chain",
                        prev.label
                    )));
                }
                if (t_ax, b_ax) != (t0, b0) {
                    return Err(layout_err());
                }
                if shape.input != width {
                    return Err(Error::Config(format!(
                        "{}: LSTM node {lab} takes {} inputs, but the previous LSTM node {} outputs {width}",
                        src.name.display(),
                        shape.input,
                        prev.label
                    )));
                }
            }
            _ => return Err(layout_err()),
        }
        // Y: [T, D, B, H] (layout 1: [B, T, D, H]).
        let layer = self.layers.len() as u32;
        let n = checked_elements(&[d, h], "an LSTM output")?;
        self.charge(n, i, node)?;
        let mut feats = try_filled(n, INPUT_FEAT, "an LSTM output")?;
        for (j, f) in feats.iter_mut().enumerate() {
            *f = Feat {
                layer,
                dir: (j / h) as u32,
                unit: (j % h) as u32,
            };
        }
        let axes = if shape.layout_batch_first {
            vec![Ax::Dyn(b_ax), Ax::Dyn(t_ax), Ax::S(d), Ax::S(h)]
        } else {
            vec![Ax::Dyn(t_ax), Ax::S(d), Ax::Dyn(b_ax), Ax::S(h)]
        };
        let y = Sym {
            axes,
            feats: Rc::new(feats),
        };
        self.layers.push(LayerInfo {
            node: i,
            label: lab,
            dirs: d,
            hidden: h,
            y: y.clone(),
        });
        Ok(vec![Val::Seq(y), Val::StateOut, Val::StateOut])
    }

    fn finish(mut self, graph: &'a GraphProto) -> Result<Walked> {
        let src = self.src;
        let Some(last) = self.layers.last() else {
            return Err(src.err("the graph has no LSTM node"));
        };
        let (g, t_ax, b_ax) = self.seq.expect("a first layer sets the sequence");
        let k = self.layers.len() as u32 - 1;
        let width = last.dirs * last.hidden;
        let last_label = last.label.clone();
        let mut main: Option<(&str, bool)> = None;
        for o in &graph.output {
            let v = match self.vals.get(o.name.as_str()) {
                Some(v) => v.clone(),
                None => match self.val(o.name.as_str())? {
                    Some(v) => v,
                    None => continue,
                },
            };
            let last = self.layers.last().expect("checked");
            match v {
                Val::Seq(s) => {
                    let canonical = s.feats.len() == width
                        && s.feats.iter().enumerate().all(|(j, f)| {
                            *f == Feat {
                                layer: k,
                                dir: (j / last.hidden) as u32,
                                unit: (j % last.hidden) as u32,
                            }
                        });
                    let bf = match s.axes.as_slice() {
                        _ if s == last.y => Some(matches!(s.axes[0], Ax::Dyn(a) if a == b_ax)),
                        [Ax::Dyn(x), Ax::Dyn(y), Ax::S(w)] if canonical && *w == width => {
                            if (*x, *y) == (t_ax, b_ax) {
                                Some(false)
                            } else if (*x, *y) == (b_ax, t_ax) {
                                Some(true)
                            } else {
                                None
                            }
                        }
                        _ => None,
                    };
                    let Some(bf) = bf else {
                        return Err(src.unsupported(format!(
                            "graph output `{}` (layout {}) is not the last LSTM node {}'s output as [time, batch, features], [batch, time, features] or its Y",
                            o.name,
                            s.describe(),
                            last.label
                        )));
                    };
                    if let Some((other, _)) = main {
                        return Err(src.unsupported(format!(
                            "graph outputs `{other}` and `{}` are both the LSTM output; one is supported",
                            o.name
                        )));
                    }
                    main = Some((o.name.as_str(), bf));
                }
                Val::Unmapped(c) => {
                    return Err(src.unsupported(format!(
                        "graph output `{}` cannot be computed: {}",
                        o.name,
                        c.say()
                    )));
                }
                // Final states, constants and pass-through inputs.
                _ => {}
            }
        }
        let Some((output, out_bf)) = main else {
            return Err(src.unsupported(format!(
                "no graph output is the last LSTM node {last_label}'s output Y"
            )));
        };
        let in_bf = matches!(t_ax, AxisId::In(_, 1));
        if in_bf != out_bf {
            let say = |bf: bool| if bf { "batch-first" } else { "time-major" };
            return Err(src.unsupported(format!(
                "the graph input is {} but its output `{output}` is {}; one layout for both is supported",
                say(in_bf),
                say(out_bf)
            )));
        }
        Ok(Walked {
            layers: self.layers.iter().map(|l| l.node).collect(),
            batch_first: in_bf,
            input: graph
                .input
                .get(g)
                .map(|v| v.name.clone())
                .unwrap_or_default(),
            output: output.to_string(),
        })
    }
}

/// Squeeze (of `axes`, all 1) or Unsqueeze of a symbolic shape.
fn squeeze_dims(d: &[Dim], axes: Option<&[i64]>, squeeze: bool) -> Option<Vec<Dim>> {
    let axes = axes?;
    if squeeze {
        let idx: Vec<usize> = axes
            .iter()
            .map(|&a| axis(a, d.len()))
            .collect::<Option<_>>()?;
        if idx.iter().any(|&k| d[k] != Dim::K(1)) {
            return None;
        }
        Some(
            d.iter()
                .enumerate()
                .filter(|(k, _)| !idx.contains(k))
                .map(|(_, &v)| v)
                .collect(),
        )
    } else {
        let r = d.len() + axes.len();
        let idx: Vec<usize> = axes.iter().map(|&a| axis(a, r)).collect::<Option<_>>()?;
        let mut src = d.iter();
        (0..r)
            .map(|k| {
                if idx.contains(&k) {
                    Some(Dim::K(1))
                } else {
                    src.next().copied()
                }
            })
            .collect()
    }
}

/// numpy broadcasting of two shapes.
fn broadcast(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let r = a.len().max(b.len());
    (0..r)
        .map(|k| {
            let x = if k + a.len() >= r {
                a[k + a.len() - r]
            } else {
                1
            };
            let y = if k + b.len() >= r {
                b[k + b.len() - r]
            } else {
                1
            };
            match (x, y) {
                (x, y) if x == y => Some(x),
                (1, y) => Some(y),
                (x, 1) => Some(x),
                _ => None,
            }
        })
        .collect()
}

/// Reshape of the sequence: the symbolic axes must come through in order,
/// each on its own (copied with 0, inferred with −1, or named by a shape
/// computed from the sequence), and the static sizes between them must
/// multiply out; row-major order keeps the features where they were.
fn reshape_sym(s: &Sym, target: &[Dim]) -> Option<Sym> {
    let mut out: Vec<Option<Ax>> = Vec::with_capacity(target.len().min(64));
    let mut infer = None;
    for (k, d) in target.iter().enumerate() {
        out.push(match *d {
            Dim::K(0) => Some(*s.axes.get(k)?),
            Dim::K(-1) if infer.is_none() => {
                infer = Some(k);
                None
            }
            Dim::K(v) if v > 0 => Some(Ax::S(usize::try_from(v).ok()?)),
            Dim::A(id) => Some(Ax::Dyn(id)),
            _ => return None,
        });
    }
    let dyns = |axes: &mut dyn Iterator<Item = Ax>| -> Vec<AxisId> {
        axes.filter_map(|a| match a {
            Ax::Dyn(id) => Some(id),
            Ax::S(_) => None,
        })
        .collect()
    };
    let in_dyn = dyns(&mut s.axes.iter().copied());
    if let Some(k) = infer {
        let known = dyns(&mut out.iter().flatten().copied());
        if known.len() + 1 == in_dyn.len() {
            // −1 stands for the one symbolic axis not named.
            let before = out[..k]
                .iter()
                .flatten()
                .filter(|a| matches!(a, Ax::Dyn(_)))
                .count();
            out[k] = Some(Ax::Dyn(in_dyn[before]));
        } else {
            let total: usize = s.static_shape().iter().product();
            let named: usize = out
                .iter()
                .flatten()
                .filter_map(|a| match a {
                    Ax::S(v) => Some(*v),
                    Ax::Dyn(_) => None,
                })
                .try_fold(1usize, |a, b| a.checked_mul(b))?;
            if named == 0 || !total.is_multiple_of(named) {
                return None;
            }
            out[k] = Some(Ax::S(total / named));
        }
    }
    let out: Vec<Ax> = out.into_iter().collect::<Option<_>>()?;
    // Same symbolic axes in the same order, same static products between.
    let segments = |axes: &[Ax]| -> Option<(Vec<AxisId>, Vec<usize>)> {
        let mut ids = Vec::new();
        let mut seg = vec![1usize];
        for a in axes {
            match a {
                Ax::Dyn(id) => {
                    ids.push(*id);
                    seg.push(1);
                }
                Ax::S(v) => {
                    let last = seg.last_mut()?;
                    *last = last.checked_mul(*v)?;
                }
            }
        }
        Some((ids, seg))
    };
    if segments(&s.axes)? != segments(&out)? {
        return None;
    }
    Some(Sym {
        axes: out,
        feats: s.feats.clone(),
    })
}

/// A `DynamicQuantizeLSTM`'s weights: `W` `[D, n, 4H]` and `R` `[D, H, 4H]`
/// int8 with scales per direction (`[D]`) or per direction and column
/// (`[D, 4H]`) and zero points that must be 0 (symmetric, as
/// `quantize_dynamic(weight_type=QInt8)` writes them). Returns them
/// dequantized in the LSTM node's layout, and as int8.
#[allow(clippy::too_many_arguments)]
fn dequantize_dq(
    src: &Source,
    lab: &str,
    wq: &Const,
    rq: &Const,
    ws: &Const,
    rs: &Const,
    wz: Option<&Const>,
    rz: Option<&Const>,
) -> Result<(Rc<Const>, Rc<Const>, Quant)> {
    let ints = |c: &Const| match &c.data {
        Data::I64(v) => v.clone(),
        Data::F32(_) => Vec::new(),
    };
    let floats = |c: &Const| match &c.data {
        Data::F32(v) => v.clone(),
        Data::I64(_) => Vec::new(),
    };
    let (d, n, g4) = match wq.shape.as_slice() {
        [d, n, g4] if g4 % 4 == 0 && *g4 > 0 => (*d, *n, *g4),
        other => {
            return Err(Error::Shape {
                tensor: format!(
                    "W of DynamicQuantizeLSTM node {lab} in {}",
                    src.name.display()
                ),
                expected: "[num_directions, input_size, 4·hidden_size]".into(),
                got: shape_str(other),
            });
        }
    };
    let h = g4 / 4;
    if rq.shape != [d, h, g4] {
        return Err(Error::Shape {
            tensor: format!(
                "R of DynamicQuantizeLSTM node {lab} in {}",
                src.name.display()
            ),
            expected: shape_str(&[d, h, g4]),
            got: shape_str(&rq.shape),
        });
    }
    for (what, z) in [("W_zero_point", wz), ("R_zero_point", rz)] {
        if let Some(z) = z
            && !z.data.all_zero()
        {
            return Err(src.unsupported(format!(
                "DynamicQuantizeLSTM node {lab}: {what} is not 0; only symmetric int8 weights run as they are (quantize with weight_type=QInt8)"
            )));
        }
    }
    // Scales per [D, 4H].
    let scales = |c: &Const, what: &str| -> Result<Vec<f32>> {
        let v = floats(c);
        let per_dir = c.shape.as_slice() == [d] || (d == 1 && c.shape.is_empty());
        if !(per_dir || c.shape.as_slice() == [d, g4]) {
            return Err(Error::Shape {
                tensor: format!(
                    "{what} of DynamicQuantizeLSTM node {lab} in {}",
                    src.name.display()
                ),
                expected: format!("{} or {}", shape_str(&[d]), shape_str(&[d, g4])),
                got: shape_str(&c.shape),
            });
        }
        let mut out = try_filled(d * g4, 0f32, what)?;
        for (k, o) in out.iter_mut().enumerate() {
            *o = if per_dir { v[k / g4] } else { v[k] };
        }
        Ok(out)
    };
    let (w_scale, r_scale) = (scales(ws, "W_scale")?, scales(rs, "R_scale")?);
    // [D, k, 4H] → [D, 4H, k], as i8 (checked) and dequantized.
    let relayout = |c: &Const, k: usize, sc: &[f32], what: &str| -> Result<(Vec<i8>, Vec<f32>)> {
        let v = ints(c);
        let mut q = try_filled(d * g4 * k, 0i8, what)?;
        let mut f = try_filled(d * g4 * k, 0f32, what)?;
        for dd in 0..d {
            for kk in 0..k {
                for col in 0..g4 {
                    let x = v[(dd * k + kk) * g4 + col];
                    let x = i8::try_from(x).map_err(|_| {
                        src.err(format!(
                            "{what} of DynamicQuantizeLSTM node {lab}: value {x} is not int8"
                        ))
                    })?;
                    let at = (dd * g4 + col) * k + kk;
                    q[at] = x;
                    f[at] = x as f32 * sc[dd * g4 + col];
                }
            }
        }
        Ok((q, f))
    };
    let (w8, wf) = relayout(wq, n, &w_scale, "W")?;
    let (r8, rf) = relayout(rq, h, &r_scale, "R")?;
    Ok((
        Rc::new(Const {
            shape: vec![d, g4, n],
            data: Data::F32(wf),
        }),
        Rc::new(Const {
            shape: vec![d, g4, h],
            data: Data::F32(rf),
        }),
        Quant {
            w: w8,
            r: r8,
            w_scale,
            r_scale,
        },
    ))
}
