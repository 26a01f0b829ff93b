//! Stacked and bidirectional sequence models with per-sequence lengths and
//! both layouts. The stack must give, bit for bit, what running each sample
//! alone through each layer's cells (batch 1, its own length, the reverse
//! cell over its own reversed steps) gives — the single cells themselves
//! are proven against the reference elsewhere; here the sequencing is.

use lstm_kernels::rng::SplitMix64;
use lstm_kernels::{
    Lstm, LstmConfig, LstmStack, LstmWeights, Merge, Peephole, SeqOptions, StackLayer,
};
use proptest::prelude::*;

fn cell(n: usize, h: usize, proj: Option<usize>, seed: u64) -> Lstm {
    let mut cfg = LstmConfig::new(n, h);
    if let Some(p) = proj {
        cfg = cfg.with_projection(p);
    }
    if seed.is_multiple_of(3) {
        cfg = cfg.with_peephole(Peephole::Diagonal);
    }
    Lstm::new(cfg, LstmWeights::random(&cfg, seed).unwrap()).unwrap()
}

/// One sample alone through one direction: `x` is `[len, n]`; returns
/// `[len, p]` in time order and the final (c, m).
fn alone(
    model: &Lstm,
    x: &[f32],
    len: usize,
    reverse: bool,
    c0: &[f32],
    m0: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (n, p) = (model.config().n_input, model.config().n_output());
    let mut st = model.state_from(1, c0, m0).unwrap();
    let xs: Vec<f32> = if reverse {
        (0..len)
            .rev()
            .flat_map(|t| x[t * n..(t + 1) * n].to_vec())
            .collect()
    } else {
        x[..len * n].to_vec()
    };
    let mut y = vec![0.0; len * p];
    model.forward(&mut st, &xs, &mut y).unwrap();
    if reverse {
        y = (0..len)
            .rev()
            .flat_map(|t| y[t * p..(t + 1) * p].to_vec())
            .collect();
    }
    (y, st.c().to_vec(), st.m().to_vec())
}

#[derive(Debug, Clone)]
struct Spec {
    n: usize,
    hs: Vec<(usize, Option<usize>)>,
    bidir: bool,
    merge: Merge,
    b: usize,
    t: usize,
    lens: Option<Vec<usize>>,
    batch_first: bool,
    seed: u64,
}

fn arb_spec() -> impl Strategy<Value = Spec> {
    (
        1usize..=9,
        // A projection is at most the hidden size.
        prop::collection::vec(
            (1usize..=20, prop::option::of(1usize..=8)).prop_map(|(h, p)| (h, p.map(|p| p.min(h)))),
            1..=3,
        ),
        any::<bool>(),
        any::<bool>(),
        1usize..=7,
        1usize..=6,
        any::<bool>(),
        any::<bool>(),
        any::<u64>(),
    )
        .prop_flat_map(|(n, hs, bidir, sum, b, t, has_lens, batch_first, seed)| {
            let lens = if has_lens {
                prop::collection::vec(0usize..=t, b).prop_map(Some).boxed()
            } else {
                Just(None).boxed()
            };
            lens.prop_map(move |lens| Spec {
                n,
                hs: hs.clone(),
                bidir,
                merge: if sum { Merge::Sum } else { Merge::Concat },
                b,
                t,
                lens,
                batch_first,
                seed,
            })
        })
}

fn build(spec: &Spec) -> LstmStack {
    let mut layers = Vec::new();
    let mut width = spec.n;
    for (k, &(h, proj)) in spec.hs.iter().enumerate() {
        // With Sum both directions must have the same width: fine, same cell sizes.
        let f = cell(width, h, proj, spec.seed.wrapping_add(k as u64 * 2));
        // In half the cases the reverse cell has one hidden unit more (and
        // a projection to the same output width): each direction's state
        // is its own cell's.
        let (bh, bproj) = if (spec.seed / 2).is_multiple_of(2) {
            (h, proj)
        } else {
            (h + 1, Some(proj.unwrap_or(h)))
        };
        let b = spec
            .bidir
            .then(|| cell(width, bh, bproj, spec.seed.wrapping_add(k as u64 * 2 + 1)));
        let p = proj.unwrap_or(h);
        width = if spec.bidir && spec.merge == Merge::Concat {
            2 * p
        } else {
            p
        };
        layers.push(StackLayer {
            forward: f,
            backward: b,
        });
    }
    // Half the cases run the two directions of a layer on two threads.
    let threshold = if spec.seed.is_multiple_of(2) {
        0.0
    } else {
        f64::INFINITY
    };
    LstmStack::new(layers, spec.merge)
        .unwrap()
        .with_parallel_threshold(threshold)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn stack_equals_samples_run_alone(spec in arb_spec()) {
        let stack = build(&spec);
        let (b, t, n) = (spec.b, spec.t, spec.n);
        let mut rng = SplitMix64::new(spec.seed ^ 1);
        let xs_tm = rng.vec_uniform(t * b * n, -2.0, 2.0); // time-major
        let mut st = stack.new_state(b).unwrap();
        // Random initial states for every layer and direction.
        let mut inits = Vec::new();
        for k in 0..spec.hs.len() {
            let (f, bk) = st.layer_mut(k).unwrap();
            let (fc, fm) = (rng.vec_uniform(f.c().len(), -1.0, 1.0), rng.vec_uniform(f.m().len(), -1.0, 1.0));
            f.c_mut().copy_from_slice(&fc);
            f.m_mut().copy_from_slice(&fm);
            let bs = bk.map(|s| {
                let (bc, bm) = (rng.vec_uniform(s.c().len(), -1.0, 1.0), rng.vec_uniform(s.m().len(), -1.0, 1.0));
                s.c_mut().copy_from_slice(&bc);
                s.m_mut().copy_from_slice(&bm);
                (bc, bm)
            });
            inits.push(((fc, fm), bs));
        }
        let w = stack.output_size();
        let xs = if spec.batch_first {
            (0..b).flat_map(|i| (0..t).flat_map(move |s| (0..n).map(move |j| (s, i, j)))).map(|(s, i, j)| xs_tm[(s * b + i) * n + j]).collect()
        } else {
            xs_tm.clone()
        };
        let mut out = vec![f32::NAN; t * b * w];
        stack.forward(&mut st, &xs, &mut out, SeqOptions { batch_first: spec.batch_first, seq_lens: spec.lens.as_deref() }).unwrap();

        for i in 0..b {
            let len = spec.lens.as_ref().map_or(t, |l| l[i]);
            let mut x: Vec<f32> = (0..len).flat_map(|s| xs_tm[(s * b + i) * n..(s * b + i + 1) * n].to_vec()).collect();
            for (k, layer) in stack.layers().iter().enumerate() {
                let ((fc, fm), bs) = &inits[k];
                let (h, r) = (layer.forward.config().n_hidden, layer.forward.config().n_recurrent());
                let (yf, cf, mf) = alone(&layer.forward, &x, len, false, &fc[i * h..(i + 1) * h], &fm[i * r..(i + 1) * r]);
                let (sf, sb) = st.layer(k).unwrap();
                prop_assert_eq!(&sf.c()[i * h..(i + 1) * h], &cf[..], "layer {} fwd c of sample {}", k, i);
                prop_assert_eq!(&sf.m()[i * r..(i + 1) * r], &mf[..], "layer {} fwd m of sample {}", k, i);
                x = match (&layer.backward, bs, sb) {
                    (Some(bm), Some((bc0, bm0)), Some(sb)) => {
                        let (h, r) = (bm.config().n_hidden, bm.config().n_recurrent());
                        let (yb, cb, mb) = alone(bm, &x, len, true, &bc0[i * h..(i + 1) * h], &bm0[i * r..(i + 1) * r]);
                        prop_assert_eq!(&sb.c()[i * h..(i + 1) * h], &cb[..], "layer {} rev c", k);
                        prop_assert_eq!(&sb.m()[i * r..(i + 1) * r], &mb[..], "layer {} rev m", k);
                        let p = layer.forward.config().n_output();
                        (0..len).flat_map(|s| {
                            let (f, bk) = (&yf[s * p..(s + 1) * p], &yb[s * p..(s + 1) * p]);
                            match spec.merge {
                                Merge::Concat => [f, bk].concat(),
                                Merge::Sum => f.iter().zip(bk).map(|(a, c)| a + c).collect(),
                            }
                        }).collect()
                    }
                    _ => yf,
                };
            }
            for s in 0..t {
                let got = if spec.batch_first { &out[(i * t + s) * w..(i * t + s + 1) * w] } else { &out[(s * b + i) * w..(s * b + i + 1) * w] };
                if s < len {
                    prop_assert_eq!(got, &x[s * w..(s + 1) * w], "sample {} step {}", i, s);
                } else {
                    prop_assert!(got.iter().all(|&v| v == 0.0), "padded step {} of sample {} is not zero", s, i);
                }
            }
        }
    }
}

/// Time-major with per-sample lengths.
fn lens(seq_lens: &[usize]) -> SeqOptions<'_> {
    SeqOptions {
        seq_lens: Some(seq_lens),
        ..Default::default()
    }
}

#[test]
fn bad_stacks_and_inputs_are_errors() {
    let l0 = StackLayer {
        forward: cell(4, 6, None, 1),
        backward: Some(cell(4, 6, None, 2)),
    };
    let wrong = StackLayer {
        forward: cell(6, 5, None, 3),
        backward: None,
    };
    let e = LstmStack::new(vec![l0.clone(), wrong], Merge::Concat)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("layer 1 takes 6 inputs but layer 0 outputs 12"),
        "{e}"
    );
    let bad_rev = StackLayer {
        forward: cell(4, 6, None, 1),
        backward: Some(cell(4, 7, None, 2)),
    };
    assert!(
        LstmStack::new(vec![bad_rev], Merge::Sum)
            .unwrap_err()
            .to_string()
            .contains("reverse cell")
    );
    assert!(LstmStack::new(vec![], Merge::Sum).is_err());
    let stack = LstmStack::new(vec![l0], Merge::Concat).unwrap();
    let mut st = stack.new_state(2).unwrap();
    let xs = vec![0.0; 3 * 2 * 4];
    let mut out = vec![0.0; 3 * 2 * 12];
    let e = stack
        .forward(&mut st, &xs, &mut out, lens(&[1, 4]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("seq_lens[1] = 4"), "{e}");
    assert!(stack.forward(&mut st, &xs, &mut out, lens(&[1])).is_err());
    assert!(
        stack
            .forward(&mut st, &xs[..5], &mut out, SeqOptions::default())
            .is_err()
    );
    assert!(
        stack
            .forward(&mut st, &xs, &mut out[..7], SeqOptions::default())
            .is_err()
    );
    stack
        .forward(&mut st, &xs, &mut out, lens(&[0, 3]))
        .unwrap();
}

/// The review of issue 17: a state made for another stack (or a layer's
/// state replaced through `layer_mut` by one of another batch) panicked or
/// ran silently; it is an error naming the layer.
#[test]
fn a_state_from_another_stack_is_an_error() {
    let stack_of = |h: usize| {
        LstmStack::new(
            vec![StackLayer {
                forward: cell(3, h, None, 1),
                backward: None,
            }],
            Merge::Concat,
        )
        .unwrap()
    };
    let (a, b) = (stack_of(8), stack_of(16));
    let xs = vec![0.5; 2 * 3 * 3];
    for (model, other) in [(&b, &a), (&a, &b)] {
        let mut st = other.new_state(3).unwrap();
        let mut y = vec![0.0; 2 * 3 * model.output_size()];
        let e = model
            .forward(&mut st, &xs, &mut y, SeqOptions::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("layer 0") && e.contains("another stack"), "{e}");
    }
    let mut st = a.new_state(3).unwrap();
    let one = a.layers()[0].forward.new_state(1).unwrap();
    *st.layer_mut(0).unwrap().0 = one;
    let mut y = vec![0.0; 2 * 3 * 8];
    let e = a
        .forward(&mut st, &xs, &mut y, SeqOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("batch 1"), "{e}");
    // A bidirectional layer whose reverse cell is larger (H=8 against 6,
    // the same output width through a head): the reverse state is checked
    // against the reverse cell, so the forward cell's state put there is
    // an error, not a slice out of range in a kernel.
    let fwd = Lstm::new(
        LstmConfig::new(3, 6).with_head(4),
        LstmWeights::random(&LstmConfig::new(3, 6).with_head(4), 2).unwrap(),
    )
    .unwrap();
    let rev = Lstm::new(
        LstmConfig::new(3, 8).with_head(4),
        LstmWeights::random(&LstmConfig::new(3, 8).with_head(4), 3).unwrap(),
    )
    .unwrap();
    let bi = LstmStack::new(
        vec![StackLayer {
            forward: fwd.clone(),
            backward: Some(rev),
        }],
        Merge::Sum,
    )
    .unwrap();
    let mut st = bi.new_state(2).unwrap();
    let mut y = vec![0.0; 2 * 2 * 4];
    bi.forward(&mut st, &xs[..2 * 2 * 3], &mut y, SeqOptions::default())
        .unwrap();
    *st.layer_mut(0).unwrap().1.unwrap() = fwd.new_state(2).unwrap();
    let e = bi
        .forward(&mut st, &xs[..2 * 2 * 3], &mut y, SeqOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("layer 0") && e.contains("another stack"), "{e}");
}
