//! Sequence models: stacked and bidirectional LSTMs over padded batches
//! with per-sequence lengths, time-major or batch-first.
//!
//! Semantics follow PyTorch's `nn.LSTM` with a `PackedSequence`: layer
//! k's output feeds layer k+1; a bidirectional layer runs a forward and a
//! reverse cell and concatenates (or sums) their outputs; with `seq_lens`,
//! padded steps output zeros, each sample's final state is that of its last
//! valid step, and the reverse direction starts at each sample's own end.
//!
//! Every direction runs through the same fused kernels. Samples are
//! ordered by length (longest first) so that the samples still active at a
//! step are a prefix of the batch, and runs of steps with the same active
//! count go to the kernels as one sequence (hoisted input GEMM and all).
//! Buffers live in [`StackState`] and only grow: no allocation per step.

use crate::error::{Error, Result, check_len};
use crate::model::{Lstm, LstmState};

/// How a bidirectional layer combines its two directions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Merge {
    /// `[forward | reverse]` along the feature axis (PyTorch, Keras default).
    #[default]
    Concat,
    /// `forward + reverse`.
    Sum,
}

/// Options of one [`LstmStack::forward`] call.
#[derive(Clone, Copy, Debug, Default)]
pub struct SeqOptions<'a> {
    /// `xs` is `[B, T, n_in]` and `out` `[B, T, width]` (else time-major
    /// `[T, B, …]`).
    pub batch_first: bool,
    /// Valid steps per sample (each ≤ T); `None`: all T.
    pub seq_lens: Option<&'a [usize]>,
}

/// One layer: a forward cell and, for a bidirectional layer, a reverse one.
#[derive(Clone, Debug)]
pub struct StackLayer {
    /// The forward-direction cell.
    pub forward: Lstm,
    /// The reverse-direction cell, if bidirectional: the same `n_input`
    /// and `n_output` as `forward` (its hidden size and variants may
    /// differ).
    pub backward: Option<Lstm>,
}

/// A stack of (optionally bidirectional) LSTM layers.
#[derive(Clone, Debug)]
pub struct LstmStack {
    layers: Vec<StackLayer>,
    merge: Merge,
    min_parallel_flops: f64,
}

/// Per-caller state of an [`LstmStack`]: each layer's and direction's
/// [`LstmState`], plus the buffers a call needs.
#[derive(Clone, Debug)]
pub struct StackState {
    batch: usize,
    states: Vec<(LstmState, Option<LstmState>)>,
    bufs: [Vec<f32>; 6],
    order: Vec<usize>,
}

impl StackState {
    /// Batch size.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// The states of layer `k`: forward and (bidirectional) reverse.
    pub fn layer(&self, k: usize) -> Option<(&LstmState, Option<&LstmState>)> {
        self.states.get(k).map(|(f, b)| (f, b.as_ref()))
    }

    /// Mutable states of layer `k` (e.g. to set an initial state).
    pub fn layer_mut(&mut self, k: usize) -> Option<(&mut LstmState, Option<&mut LstmState>)> {
        self.states.get_mut(k).map(|(f, b)| (f, b.as_mut()))
    }
}

/// `v`'s first `n` values, growing it (zero-filled) if needed; memory the
/// system refuses is an [`Error::Alloc`].
fn grow(v: &mut Vec<f32>, n: usize) -> Result<&mut [f32]> {
    if v.len() < n {
        v.try_reserve_exact(n - v.len()).map_err(|_| Error::Alloc {
            what: "stack sequence buffer".into(),
            bytes: n.saturating_mul(4),
        })?;
        v.resize(n, 0.0);
    }
    Ok(&mut v[..n])
}

impl LstmStack {
    /// Builds a stack; checks that each reverse cell matches its forward
    /// cell and that each layer's input size is the previous layer's width.
    pub fn new(layers: Vec<StackLayer>, merge: Merge) -> Result<Self> {
        if layers.is_empty() {
            return Err(Error::Config("a stack needs at least one layer".into()));
        }
        let stack = LstmStack {
            layers,
            merge,
            min_parallel_flops: 4e6,
        };
        for (k, l) in stack.layers.iter().enumerate() {
            let f = l.forward.config();
            if let Some(b) = &l.backward {
                let b = b.config();
                if (b.n_input, b.n_output()) != (f.n_input, f.n_output()) {
                    return Err(Error::Config(format!(
                        "layer {k}: the reverse cell ({} → {}) does not match the forward cell ({} → {})",
                        b.n_input,
                        b.n_output(),
                        f.n_input,
                        f.n_output()
                    )));
                }
            }
            if k > 0 {
                let want = stack.layer_width(k - 1);
                if f.n_input != want {
                    return Err(Error::Config(format!(
                        "layer {k} takes {} inputs but layer {} outputs {want}",
                        f.n_input,
                        k - 1
                    )));
                }
            }
        }
        Ok(stack)
    }

    /// Work per call (FLOPs of one direction over the whole sequence)
    /// from which the two directions of a bidirectional layer run on two
    /// threads of rayon's global pool; default 4e6. `f64::INFINITY` keeps
    /// them sequential; `0.0` always splits (tests).
    pub fn with_parallel_threshold(mut self, flops: f64) -> Self {
        self.min_parallel_flops = flops;
        self
    }

    /// Spreads every layer's batch over `threads` threads (0 = one per
    /// core, at most [`max_threads`](crate::max_threads)): one pool for the
    /// whole stack, whatever its depth (each layer building its own
    /// multiplied the threads by the layers).
    pub fn with_threads(self, threads: usize) -> Result<Self> {
        let (pool, n) = crate::model::lstm::thread_pool(threads)?;
        self.map_cells(|cell| Ok(cell.with_pool(pool.clone(), n)))
    }

    /// Every layer (both directions) in `precision`; see
    /// [`Lstm::with_precision`](crate::Lstm::with_precision).
    pub fn with_precision(self, precision: crate::Precision) -> Result<Self> {
        self.map_cells(|cell| cell.with_precision(precision))
    }

    /// Every layer in bf16 on the kernel named `kernel`; see
    /// [`Lstm::with_bf16_kernel`](crate::Lstm::with_bf16_kernel).
    pub fn with_bf16_kernel(self, kernel: &str) -> Result<Self> {
        self.map_cells(|cell| cell.with_bf16_kernel(kernel))
    }

    /// Every layer in int8 on the kernel named `kernel`; see
    /// [`Lstm::with_int8_kernel`](crate::Lstm::with_int8_kernel).
    pub fn with_int8_kernel(self, kernel: &str) -> Result<Self> {
        self.map_cells(|cell| cell.with_int8_kernel(kernel))
    }

    /// The stack with `f` applied to every cell (both directions).
    fn map_cells(mut self, f: impl Fn(Lstm) -> Result<Lstm>) -> Result<Self> {
        for layer in &mut self.layers {
            layer.forward = f(layer.forward.clone())?;
            layer.backward = layer.backward.take().map(&f).transpose()?;
        }
        Ok(self)
    }

    /// The layers.
    pub fn layers(&self) -> &[StackLayer] {
        &self.layers
    }

    /// Input features of the first layer.
    pub fn input_size(&self) -> usize {
        self.layers[0].forward.config().n_input
    }

    /// Output width of layer `k`.
    fn layer_width(&self, k: usize) -> usize {
        let l = &self.layers[k];
        let p = l.forward.config().n_output();
        match (&l.backward, self.merge) {
            (Some(_), Merge::Concat) => 2 * p,
            _ => p,
        }
    }

    /// Output width of the stack.
    pub fn output_size(&self) -> usize {
        self.layer_width(self.layers.len() - 1)
    }

    /// A zero state for `batch` samples.
    pub fn new_state(&self, batch: usize) -> Result<StackState> {
        let states = self
            .layers
            .iter()
            .map(|l| {
                Ok((
                    l.forward.new_state(batch)?,
                    l.backward
                        .as_ref()
                        .map(|b| b.new_state(batch))
                        .transpose()?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(StackState {
            batch,
            states,
            bufs: Default::default(),
            order: Vec::with_capacity(batch),
        })
    }

    /// Runs the sequence `xs` through every layer; `out` receives the last
    /// layer's outputs (zeros at padded steps); the state holds each layer's
    /// and direction's final state.
    pub fn forward(
        &self,
        st: &mut StackState,
        xs: &[f32],
        out: &mut [f32],
        opts: SeqOptions,
    ) -> Result<()> {
        // The merge (a sum) and the copies run here, outside the kernels'
        // own guard: rounding to nearest whatever the caller set.
        let _nearest = crate::engine::NearestGuard::new();
        if st.states.len() != self.layers.len() {
            return Err(Error::Invalid(
                "the state was made for another stack".into(),
            ));
        }
        // Each layer's state must fit its cells and the stack's batch (a
        // state from another stack, or one replaced through `layer_mut`).
        for (k, (layer, (sf, sb))) in self.layers.iter().zip(&st.states).enumerate() {
            let dirs = [
                (Some(&layer.forward), Some(sf)),
                (layer.backward.as_ref(), sb.as_ref()),
            ];
            if layer.backward.is_some() != sb.is_some() {
                return Err(Error::Invalid(format!(
                    "the state of layer {k} was made for another stack (directions differ)"
                )));
            }
            // Each direction's state against its own cell (their hidden
            // sizes may differ).
            for (cell, s) in dirs.into_iter().filter_map(|(c, s)| Some((c?, s?))) {
                let cfg = cell.config();
                if s.batch() != st.batch
                    || s.n_hidden() != cfg.n_hidden
                    || s.n_recurrent() != cfg.n_recurrent()
                {
                    return Err(Error::Shape {
                        tensor: format!("state of layer {k}"),
                        expected: format!(
                            "batch {}, [{}, {}] (c), [{}, {}] (m)",
                            st.batch,
                            st.batch,
                            cfg.n_hidden,
                            st.batch,
                            cfg.n_recurrent()
                        ),
                        got: format!(
                            "batch {}, [{}, {}], [{}, {}] (a state made for another stack)",
                            s.batch(),
                            s.batch(),
                            s.n_hidden(),
                            s.batch(),
                            s.n_recurrent()
                        ),
                    });
                }
            }
        }
        let (b, n) = (st.batch, self.input_size());
        if !xs.len().is_multiple_of(b * n) {
            return Err(Error::Shape {
                tensor: "xs".into(),
                expected: format!("[T, {b}, {n}] or [{b}, T, {n}]"),
                got: format!("{} elements", xs.len()),
            });
        }
        let t = xs.len() / (b * n);
        let w_out = self.output_size();
        check_len("output", out.len(), &[t, b, w_out])?;
        if let Some(lens) = opts.seq_lens {
            check_len("seq_lens", lens.len(), &[b])?;
            if let Some((i, &l)) = lens.iter().enumerate().find(|&(_, &l)| l > t) {
                return Err(Error::Invalid(format!(
                    "seq_lens[{i}] = {l} is longer than the sequence ({t} steps)"
                )));
            }
        }
        // Samples longest first (stable), so active samples are a prefix.
        st.order.clear();
        st.order.extend(0..b);
        if let Some(lens) = opts.seq_lens {
            st.order.sort_by_key(|&i| std::cmp::Reverse(lens[i]));
        }
        let lens_of = |i: usize| opts.seq_lens.map_or(t, |l| l[i]);
        let [cur, next, xg, xg_b, yg, yb] = &mut st.bufs;
        // Layer input, time-major.
        let cur_in = grow(cur, t * b * n)?;
        if opts.batch_first {
            swap_outer(xs, cur_in, b, t, n);
        } else {
            cur_in.copy_from_slice(xs);
        }
        let mut width = n;
        for (k, layer) in self.layers.iter().enumerate() {
            let p = layer.forward.config().n_output();
            let lw = self.layer_width(k);
            let (sf, sb) = &mut st.states[k];
            let input = &cur[..t * b * width];
            let out_l = grow(next, t * b * lw)?;
            match (&layer.backward, sb) {
                (Some(bm), Some(sb)) => {
                    let (y_f, y_b) = (grow(yg, t * b * p)?, grow(yb, t * b * p)?);
                    let order = &st.order;
                    let mut fwd = || {
                        run_direction(
                            &layer.forward,
                            sf,
                            input,
                            t,
                            b,
                            width,
                            order,
                            &lens_of,
                            false,
                            xg,
                            y_f,
                        )
                    };
                    let mut bwd = || {
                        run_direction(bm, sb, input, t, b, width, order, &lens_of, true, xg_b, y_b)
                    };
                    // The two directions are independent: on two threads
                    // when there is enough work to pay for it.
                    let flops = (t * b) as f64 * layer.forward.config().flops_per_sample_step();
                    if flops >= self.min_parallel_flops && rayon::current_num_threads() > 1 {
                        let (a, b) = rayon::join(fwd, bwd);
                        a.and(b)?;
                    } else {
                        fwd()?;
                        bwd()?;
                    }
                    let (y_f, y_b) = (&yg[..t * b * p], &yb[..t * b * p]);
                    for r in 0..t * b {
                        let (f, bk) = (&y_f[r * p..(r + 1) * p], &y_b[r * p..(r + 1) * p]);
                        match self.merge {
                            Merge::Concat => {
                                out_l[r * lw..r * lw + p].copy_from_slice(f);
                                out_l[r * lw + p..(r + 1) * lw].copy_from_slice(bk);
                            }
                            Merge::Sum => {
                                for ((o, &a), &c) in
                                    out_l[r * lw..(r + 1) * lw].iter_mut().zip(f).zip(bk)
                                {
                                    *o = a + c;
                                }
                            }
                        }
                    }
                }
                _ => {
                    let y_f = grow(yg, t * b * p)?;
                    run_direction(
                        &layer.forward,
                        sf,
                        input,
                        t,
                        b,
                        width,
                        &st.order,
                        &lens_of,
                        false,
                        xg,
                        y_f,
                    )?;
                    out_l.copy_from_slice(y_f);
                }
            }
            std::mem::swap(cur, next);
            width = lw;
        }
        let res = &cur[..t * b * w_out];
        if opts.batch_first {
            swap_outer(res, out, t, b, w_out);
        } else {
            out.copy_from_slice(res);
        }
        Ok(())
    }
}

/// Copies `src` `[a, b, w]` to `dst` `[b, a, w]` (batch-first ↔
/// time-major).
fn swap_outer(src: &[f32], dst: &mut [f32], a: usize, b: usize, w: usize) {
    for i in 0..a {
        for j in 0..b {
            dst[(j * a + i) * w..(j * a + i + 1) * w]
                .copy_from_slice(&src[(i * b + j) * w..(i * b + j + 1) * w]);
        }
    }
}

/// One direction of one layer over the (sorted) batch: `x` is `[t, b, n]`
/// time-major in the original sample order, `y` receives `[t, b, p]`
/// (zeros at padded steps). The state's rows are permuted into `order`
/// for the call and back afterwards.
#[allow(clippy::too_many_arguments)]
fn run_direction(
    model: &Lstm,
    st: &mut LstmState,
    x: &[f32],
    t: usize,
    b: usize,
    n: usize,
    order: &[usize],
    lens: &(dyn Fn(usize) -> usize + Sync),
    reverse: bool,
    xg: &mut Vec<f32>,
    y: &mut [f32],
) -> Result<()> {
    let p = model.config().n_output();
    y.fill(0.0);
    permute_rows(st, order, false, xg)?;
    let run = run_segments(model, st, x, (t, b, n, p), order, lens, reverse, xg, y);
    // Back to the caller's order even after an error (`xg` already holds
    // the capacity this needs, so it cannot fail a second time).
    permute_rows(st, order, true, xg)?;
    run
}

/// The body of [`run_direction`], on the permuted state.
#[allow(clippy::too_many_arguments)]
fn run_segments(
    model: &Lstm,
    st: &mut LstmState,
    x: &[f32],
    (t, b, n, p): (usize, usize, usize, usize),
    order: &[usize],
    lens: &(dyn Fn(usize) -> usize + Sync),
    reverse: bool,
    xg: &mut Vec<f32>,
    y: &mut [f32],
) -> Result<()> {
    let active = |s: usize| order.iter().take_while(|&&i| lens(i) > s).count();
    let mut s0 = 0;
    while s0 < t {
        let rows = active(s0);
        if rows == 0 {
            break;
        }
        let mut s1 = s0 + 1;
        while s1 < t && active(s1) == rows {
            s1 += 1;
        }
        // Gather the segment's inputs: step s of sample order[i] is time
        // s (forward) or len−1−s (reverse).
        let seg = s1 - s0;
        let need = seg * rows * n + seg * rows * p;
        let buf = grow(xg, need)?;
        let (xs, ys) = buf.split_at_mut(seg * rows * n);
        let time = |smp: usize, s: usize| {
            if reverse {
                lens(smp) - 1 - (s0 + s)
            } else {
                s0 + s
            }
        };
        for s in 0..seg {
            for (i, &smp) in order[..rows].iter().enumerate() {
                let tt = time(smp, s);
                xs[(s * rows + i) * n..(s * rows + i + 1) * n]
                    .copy_from_slice(&x[(tt * b + smp) * n..(tt * b + smp + 1) * n]);
            }
        }
        model.forward_prefix(st, rows, xs, ys)?;
        for s in 0..seg {
            for (i, &smp) in order[..rows].iter().enumerate() {
                let tt = time(smp, s);
                y[(tt * b + smp) * p..(tt * b + smp + 1) * p]
                    .copy_from_slice(&ys[(s * rows + i) * p..(s * rows + i + 1) * p]);
            }
        }
        s0 = s1;
    }
    Ok(())
}

/// Reorders the state's rows: row i ← row order[i] (or back, `inverse`),
/// through `tmp` (a buffer that only grows).
fn permute_rows(
    st: &mut LstmState,
    order: &[usize],
    inverse: bool,
    tmp: &mut Vec<f32>,
) -> Result<()> {
    if order.iter().enumerate().all(|(i, &o)| i == o) {
        return Ok(());
    }
    let (h, r) = (st.n_hidden(), st.n_recurrent());
    // Reserve for the larger of the two first, so that neither permutation
    // happens unless both can.
    grow(tmp, st.c().len().max(st.m().len()))?;
    permute(st.c_mut(), h, order, inverse, tmp)?;
    permute(st.m_mut(), r, order, inverse, tmp)
}

fn permute(
    buf: &mut [f32],
    w: usize,
    order: &[usize],
    inverse: bool,
    tmp: &mut Vec<f32>,
) -> Result<()> {
    let old = grow(tmp, buf.len())?;
    old.copy_from_slice(buf);
    for (i, &o) in order.iter().enumerate() {
        let (dst, src) = if inverse { (o, i) } else { (i, o) };
        buf[dst * w..(dst + 1) * w].copy_from_slice(&old[src * w..(src + 1) * w]);
    }
    Ok(())
}
