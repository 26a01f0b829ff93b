//! A pool of independent streams over one model: each stream is one row of
//! the pool's state matrices, and a step over any subset of the open
//! streams runs as one batch through the kernels.
//!
//! Open streams are kept compacted in rows `0..len()` (a close moves the
//! last open row into the hole). A step over a subset of k streams first
//! swaps rows so that those k streams hold rows `0..k` — a swap moves one
//! stream's `c` and `m` rows, and happens only for a stream that sits
//! beyond row k, so a step over the same streams as the step before moves
//! nothing — then gathers the k input frames into row order, runs the
//! model on the state's first k rows (no copy of the state in or out) and
//! scatters the k outputs back into the caller's order. Ids carry a
//! generation: a closed stream's id, or another pool's, is an error, never
//! another stream's state.

use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::error::{Error, Result, check_len, try_filled, try_zeros};
use crate::model::{Lstm, LstmState};
use crate::seq::stack::LstmStack;

/// Tags that tell one pool's ids from another's.
static NEXT_POOL_TAG: AtomicU32 = AtomicU32::new(1);

/// `row_of` of a slot with no open stream.
const FREE: u32 = u32::MAX;

/// One stream of a [`StreamPool`] (or of the [`Batcher`](crate::Batcher)
/// running it): its slot and the slot's generation, and the pool it
/// belongs to. Copy it freely; once the stream is closed every copy is
/// refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StreamId {
    pool: u32,
    slot: u32,
    generation: u32,
}

impl StreamId {
    /// The stream's slot: a number below the pool's capacity, unique among
    /// the open streams (a closed stream's slot is reused, with a new
    /// generation). Handy to index per-stream data of the caller's.
    pub fn slot(self) -> usize {
        self.slot as usize
    }

    /// How many streams used this slot before this one.
    pub fn generation(self) -> u32 {
        self.generation
    }

    /// The tag of the pool the stream belongs to.
    pub(crate) fn pool_tag(self) -> u32 {
        self.pool
    }

    /// An id of pool `tag` that no open stream has (generations of open
    /// streams are below `u32::MAX`), to fill unused records.
    pub(crate) fn placeholder(tag: u32) -> Self {
        StreamId {
            pool: tag,
            slot: 0,
            generation: u32::MAX,
        }
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "stream {} (generation {}) of pool {}",
            self.slot, self.generation, self.pool
        )
    }
}

/// Up to `capacity` streams over one model (an [`Lstm`] cell or a
/// unidirectional [`LstmStack`]), each with its own state, stepped
/// together: see the [module docs](crate::pool) for how.
///
/// ```
/// use lstm_kernels::{Lstm, LstmConfig, LstmWeights, StreamPool};
/// let cfg = LstmConfig::new(7, 5).with_head(3);
/// let model = Lstm::new(cfg, LstmWeights::random(&cfg, 42)?)?;
/// let mut pool = StreamPool::new(model, 100)?;
/// let (a, b) = (pool.open()?, pool.open()?);
/// let mut out = [0.0f32; 2 * 3];
/// pool.step(&[b, a], &[0.5; 2 * 7], &mut out)?; // both streams, one batch
/// pool.step(&[a], &[0.5; 7], &mut out[..3])?; // `b` does not advance
/// pool.close(b)?;
/// assert!(pool.step(&[b], &[0.5; 7], &mut out[..3]).is_err()); // closed
/// # Ok::<(), lstm_kernels::Error>(())
/// ```
///
/// A clone is a pool of its own, with every stream's state copied: its
/// streams keep their slots and generations but get ids of the clone
/// (`clone.streams()` lists them in the order of `pool.streams()`), so
/// an id of one pool is refused by the other, however the two go on.
#[derive(Debug)]
pub struct StreamPool {
    tag: u32,
    cells: Vec<Lstm>,
    /// One state per layer, `capacity` rows each; rows `0..open` hold the
    /// open streams.
    states: Vec<LstmState>,
    capacity: usize,
    open: usize,
    /// Per slot: its generation.
    generations: Vec<u32>,
    /// Per slot: the row of its open stream, or [`FREE`].
    row_of: Vec<u32>,
    /// Per row below `open`: the slot of the stream in it.
    slot_at: Vec<u32>,
    /// Free slots, the next one to hand out last.
    free: Vec<u32>,
    /// Per slot: the last step that included it (duplicate check).
    mark: Vec<u64>,
    epoch: u64,
    /// The step's inputs in row order, `[capacity, n_in]`.
    x: Vec<f32>,
    /// Layer outputs in row order (two, alternating between layers).
    y: [Vec<f32>; 2],
    swaps: u64,
}

impl Clone for StreamPool {
    fn clone(&self) -> Self {
        StreamPool {
            tag: NEXT_POOL_TAG.fetch_add(1, Ordering::Relaxed),
            cells: self.cells.clone(),
            states: self.states.clone(),
            capacity: self.capacity,
            open: self.open,
            generations: self.generations.clone(),
            row_of: self.row_of.clone(),
            slot_at: self.slot_at.clone(),
            free: self.free.clone(),
            mark: self.mark.clone(),
            epoch: self.epoch,
            x: self.x.clone(),
            y: self.y.clone(),
            swaps: self.swaps,
        }
    }
}

impl StreamPool {
    /// A pool of `capacity` streams over `model` (which keeps its
    /// threads, ISA, kernel and precision). Allocates every buffer a step
    /// needs here, the kernels' scratch for a step of all `capacity`
    /// streams included, so stepping does not allocate.
    pub fn new(model: Lstm, capacity: usize) -> Result<Self> {
        Self::from_cells(vec![model], capacity)
    }

    /// A pool over a stack: a step runs every layer in turn on the same
    /// rows. Only unidirectional stacks stream (a reverse direction needs
    /// the whole sequence first): a bidirectional layer is an
    /// [`Error::Config`].
    pub fn from_stack(stack: &LstmStack, capacity: usize) -> Result<Self> {
        let mut cells = Vec::with_capacity(stack.layers().len());
        for (k, layer) in stack.layers().iter().enumerate() {
            if layer.backward.is_some() {
                return Err(Error::Config(format!(
                    "layer {k} is bidirectional: a stream pool steps one frame at a time, which a reverse direction cannot"
                )));
            }
            cells.push(layer.forward.clone());
        }
        Self::from_cells(cells, capacity)
    }

    fn from_cells(cells: Vec<Lstm>, capacity: usize) -> Result<Self> {
        if capacity == 0 || capacity >= FREE as usize {
            return Err(Error::Invalid(format!(
                "a stream pool's capacity must be from 1 to {}, got {capacity}",
                FREE - 1
            )));
        }
        let states = cells
            .iter()
            .map(|c| {
                let mut st = c.new_state(capacity)?;
                c.reserve_step_scratch(&mut st)?;
                Ok(st)
            })
            .collect::<Result<Vec<_>>>()?;
        let n_in = cells[0].config().n_input;
        let widest = cells
            .iter()
            .map(|c| c.config().n_output())
            .max()
            .unwrap_or(0);
        let y0 = try_zeros(capacity * widest, "stream pool outputs")?;
        let y1 = if cells.len() > 1 {
            y0.clone()
        } else {
            Vec::new()
        };
        Ok(StreamPool {
            tag: NEXT_POOL_TAG.fetch_add(1, Ordering::Relaxed),
            states,
            capacity,
            open: 0,
            generations: try_filled(capacity, 0, "stream pool slots")?,
            row_of: try_filled(capacity, FREE, "stream pool slots")?,
            slot_at: try_filled(capacity, 0, "stream pool rows")?,
            free: (0..capacity as u32).rev().collect(),
            mark: try_filled(capacity, 0, "stream pool slots")?,
            epoch: 0,
            x: try_zeros(capacity * n_in, "stream pool inputs")?,
            y: [y0, y1],
            swaps: 0,
            cells,
        })
    }

    /// The most streams open at once.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Streams open now.
    pub fn len(&self) -> usize {
        self.open
    }

    /// No stream is open.
    pub fn is_empty(&self) -> bool {
        self.open == 0
    }

    /// Values in one input frame (the first layer's `n_in`).
    pub fn n_input(&self) -> usize {
        self.cells[0].config().n_input
    }

    /// Values in one output frame (the last layer's `n_out`).
    pub fn n_output(&self) -> usize {
        self.cells[self.cells.len() - 1].config().n_output()
    }

    /// The cells a step runs, first layer first.
    pub fn cells(&self) -> &[Lstm] {
        &self.cells
    }

    /// The lengths of one stream's state as [`StreamPool::read_state`]
    /// gives it: (`c`, `m`) values, every layer's in turn.
    pub fn state_len(&self) -> (usize, usize) {
        self.cells.iter().fold((0, 0), |(c, m), cell| {
            let cfg = cell.config();
            (c + cfg.n_hidden, m + cfg.n_recurrent())
        })
    }

    /// The tag its ids carry.
    pub(crate) fn tag(&self) -> u32 {
        self.tag
    }

    /// How many state rows steps have swapped so far (each moves one
    /// stream's `c` and `m` in every layer): what stepping subsets costs
    /// beyond the kernels.
    pub fn rows_swapped(&self) -> u64 {
        self.swaps
    }

    /// Opens a stream with a zero state. A full pool is an
    /// [`Error::Busy`].
    pub fn open(&mut self) -> Result<StreamId> {
        let slot = self.free.pop().ok_or_else(|| {
            Error::Busy(format!(
                "the stream pool is full: all {} streams are open",
                self.capacity
            ))
        })?;
        let row = self.open;
        self.open += 1;
        self.row_of[slot as usize] = row as u32;
        self.slot_at[row] = slot;
        self.zero_row(row);
        Ok(StreamId {
            pool: self.tag,
            slot,
            generation: self.generations[slot as usize],
        })
    }

    /// Whether `id` is one of this pool's open streams.
    pub fn is_open(&self, id: StreamId) -> bool {
        self.check(id).is_ok()
    }

    /// The open streams, in no particular order.
    pub fn streams(&self) -> impl Iterator<Item = StreamId> + '_ {
        self.slot_at[..self.open].iter().map(|&slot| StreamId {
            pool: self.tag,
            slot,
            generation: self.generations[slot as usize],
        })
    }

    /// Closes a stream; its id (and every copy) is refused from now on.
    pub fn close(&mut self, id: StreamId) -> Result<()> {
        let slot = self.check(id)?;
        let row = self.row_of[slot] as usize;
        let last = self.open - 1;
        if row != last {
            self.copy_row(last, row);
            let moved = self.slot_at[last];
            self.slot_at[row] = moved;
            self.row_of[moved as usize] = row as u32;
        }
        self.row_of[slot] = FREE;
        self.open = last;
        // A slot whose generations are used up is retired rather than
        // ever handing out an id that equals an old one.
        if let Some(g) = self.generations[slot]
            .checked_add(1)
            .filter(|&g| g < u32::MAX)
        {
            self.generations[slot] = g;
            self.free.push(slot as u32);
        }
        Ok(())
    }

    /// Sets a stream's state back to zero.
    pub fn reset(&mut self, id: StreamId) -> Result<()> {
        let slot = self.check(id)?;
        self.zero_row(self.row_of[slot] as usize);
        Ok(())
    }

    /// Copies a stream's state out (checkpointing, migration): `c` and `m`
    /// are [`StreamPool::state_len`] long, each layer's values in turn
    /// (`c`: H, `m`: R = projection size or H, per layer).
    pub fn read_state(&self, id: StreamId, c: &mut [f32], m: &mut [f32]) -> Result<()> {
        let slot = self.check(id)?;
        let (lc, lm) = self.state_len();
        check_len("stream state c", c.len(), &[lc])?;
        check_len("stream state m", m.len(), &[lm])?;
        let row = self.row_of[slot] as usize;
        let (mut oc, mut om) = (0, 0);
        for st in &self.states {
            let (h, r) = (st.n_hidden(), st.n_recurrent());
            c[oc..oc + h].copy_from_slice(&st.c()[row * h..(row + 1) * h]);
            m[om..om + r].copy_from_slice(&st.m()[row * r..(row + 1) * r]);
            (oc, om) = (oc + h, om + r);
        }
        Ok(())
    }

    /// Sets a stream's state (the layout of [`StreamPool::read_state`]).
    pub fn write_state(&mut self, id: StreamId, c: &[f32], m: &[f32]) -> Result<()> {
        let slot = self.check(id)?;
        let (lc, lm) = self.state_len();
        check_len("stream state c", c.len(), &[lc])?;
        check_len("stream state m", m.len(), &[lm])?;
        let row = self.row_of[slot] as usize;
        let (mut oc, mut om) = (0, 0);
        for st in &mut self.states {
            let (h, r) = (st.n_hidden(), st.n_recurrent());
            st.c_mut()[row * h..(row + 1) * h].copy_from_slice(&c[oc..oc + h]);
            st.m_mut()[row * r..(row + 1) * r].copy_from_slice(&m[om..om + r]);
            (oc, om) = (oc + h, om + r);
        }
        Ok(())
    }

    /// One step of the streams `ids` (each at most once, in any order):
    /// `x` holds their frames, `[ids.len(), n_in]` in the order of `ids`,
    /// and `out` receives their outputs, `[ids.len(), n_out]`, in the same
    /// order. The other open streams do not advance. The ids are checked
    /// before anything changes: on an error no stream has moved.
    ///
    /// Each stream's outputs are bitwise those of running it alone through
    /// [`Lstm::forward`], whatever the other streams of its steps.
    pub fn step(&mut self, ids: &[StreamId], x: &[f32], out: &mut [f32]) -> Result<()> {
        let (n, p, k) = (self.n_input(), self.n_output(), ids.len());
        check_len("x", x.len(), &[k, n])?;
        check_len("output", out.len(), &[k, p])?;
        if k == 0 {
            return Ok(());
        }
        self.begin(ids)?;
        for (i, id) in ids.iter().enumerate() {
            let row = self.row_of[id.slot as usize] as usize;
            self.x[row * n..(row + 1) * n].copy_from_slice(&x[i * n..(i + 1) * n]);
        }
        let last = self.run(k)?;
        for (i, id) in ids.iter().enumerate() {
            let row = self.row_of[id.slot as usize] as usize;
            out[i * p..(i + 1) * p].copy_from_slice(&self.y[last][row * p..(row + 1) * p]);
        }
        Ok(())
    }

    /// The first part of a step: checks `ids` (each open, at most once)
    /// and swaps their rows to `0..ids.len()`; then [`Self::input_mut`]
    /// takes each one's frame, [`Self::run`] runs the step and
    /// [`Self::output`] gives each one's output. On an error nothing has
    /// changed.
    pub(crate) fn begin(&mut self, ids: &[StreamId]) -> Result<()> {
        let k = ids.len();
        self.epoch += 1;
        for (i, &id) in ids.iter().enumerate() {
            let slot = self
                .check(id)
                .map_err(|e| Error::Invalid(format!("ids[{i}]: {}", error_text(e))))?;
            if self.mark[slot] == self.epoch {
                return Err(Error::Invalid(format!(
                    "ids[{i}]: {id} is stepped twice in one step"
                )));
            }
            self.mark[slot] = self.epoch;
        }
        // The k streams into rows 0..k: each one beyond swaps with a row
        // below k that holds a stream not stepped now (there are exactly
        // as many such rows as streams beyond).
        let mut hole = 0;
        for &id in ids {
            let row = self.row_of[id.slot as usize] as usize;
            if row >= k {
                while self.mark[self.slot_at[hole] as usize] == self.epoch {
                    hole += 1;
                }
                self.swap_rows(row, hole);
                hole += 1;
            }
        }
        Ok(())
    }

    /// After [`Self::begin`]: where open stream `id`'s input frame goes
    /// (`None` for a stream not open).
    pub(crate) fn input_mut(&mut self, id: StreamId) -> Option<&mut [f32]> {
        let n = self.n_input();
        let row = self.check(id).ok().map(|slot| self.row_of[slot] as usize)?;
        self.x.get_mut(row * n..(row + 1) * n)
    }

    /// After [`Self::run`] returned `last`: open stream `id`'s output.
    pub(crate) fn output(&self, last: usize, id: StreamId) -> Option<&[f32]> {
        let p = self.n_output();
        let row = self.check(id).ok().map(|slot| self.row_of[slot] as usize)?;
        self.y.get(last)?.get(row * p..(row + 1) * p)
    }

    /// Runs every layer on rows `0..k` (inputs in `self.x`); returns which
    /// of `self.y` holds the last layer's outputs.
    pub(crate) fn run(&mut self, k: usize) -> Result<usize> {
        let StreamPool {
            cells,
            states,
            x,
            y: [y0, y1],
            ..
        } = self;
        for (l, (cell, st)) in cells.iter().zip(states.iter_mut()).enumerate() {
            let (n, p) = (cell.config().n_input, cell.config().n_output());
            let (src, dst): (&[f32], &mut [f32]) = match l {
                0 => (&x[..k * n], &mut y0[..k * p]),
                l if l % 2 == 1 => (&y0[..k * n], &mut y1[..k * p]),
                _ => (&y1[..k * n], &mut y0[..k * p]),
            };
            cell.forward_prefix(st, k, src, dst)?;
        }
        Ok((cells.len() - 1) % 2)
    }

    /// The slot of `id`, if it is an open stream of this pool.
    fn check(&self, id: StreamId) -> Result<usize> {
        let slot = id.slot as usize;
        if id.pool != self.tag || slot >= self.capacity {
            return Err(Error::Invalid(format!(
                "{id} does not belong to this pool (pool {})",
                self.tag
            )));
        }
        if self.row_of[slot] == FREE || self.generations[slot] != id.generation {
            return Err(Error::Invalid(format!("{id} is closed")));
        }
        Ok(slot)
    }

    fn zero_row(&mut self, row: usize) {
        for st in &mut self.states {
            let (h, r) = (st.n_hidden(), st.n_recurrent());
            st.c_mut()[row * h..(row + 1) * h].fill(0.0);
            st.m_mut()[row * r..(row + 1) * r].fill(0.0);
        }
    }

    /// Row `from`'s state onto row `to` (every layer).
    fn copy_row(&mut self, from: usize, to: usize) {
        for st in &mut self.states {
            let (h, r) = (st.n_hidden(), st.n_recurrent());
            st.c_mut().copy_within(from * h..(from + 1) * h, to * h);
            st.m_mut().copy_within(from * r..(from + 1) * r, to * r);
        }
    }

    /// Exchanges rows `a > b` (state in every layer, and the maps).
    fn swap_rows(&mut self, a: usize, b: usize) {
        debug_assert!(a > b);
        for st in &mut self.states {
            let (h, r) = (st.n_hidden(), st.n_recurrent());
            swap_in(st.c_mut(), h, a, b);
            swap_in(st.m_mut(), r, a, b);
        }
        let (sa, sb) = (self.slot_at[a], self.slot_at[b]);
        self.slot_at.swap(a, b);
        self.row_of[sa as usize] = b as u32;
        self.row_of[sb as usize] = a as u32;
        self.swaps += 1;
    }
}

/// Swaps rows `a > b` of width `w` in `buf`.
fn swap_in(buf: &mut [f32], w: usize, a: usize, b: usize) {
    let (lo, hi) = buf.split_at_mut(a * w);
    lo[b * w..(b + 1) * w].swap_with_slice(&mut hi[..w]);
}

/// An error's message without the kind prefix `Display` adds.
fn error_text(e: Error) -> String {
    match e {
        Error::Invalid(s) => s,
        other => other.to_string(),
    }
}
