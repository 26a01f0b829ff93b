//! Bitwise fingerprints of every kernel path: one line per (shape or
//! variant, ISA, kernel choice, batch, threads, entry point) with a hash of
//! the outputs and the final `c` and `m` bits. Run it before and after a
//! change that must not alter results, and diff the two outputs:
//!
//! ```sh
//! cargo run --release --example fingerprint > before.txt
//! # ... change ...
//! cargo run --release --example fingerprint > after.txt && diff before.txt after.txt
//! ```
//!
//! Results depend only on the kernel, the ISA and the plan, so the lines
//! are comparable between builds on the same CPU (and, for a forced ISA,
//! between CPUs with the same plan).

use lstm_kernels::rng::SplitMix64;
use lstm_kernels::{Isa, KernelChoice, Lstm, LstmConfig, LstmWeights, Peephole};

/// FNV-1a over the bits of every float.
fn hash(parts: &[&[f32]]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for p in parts {
        for v in *p {
            for b in v.to_bits().to_le_bytes() {
                h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
            }
        }
    }
    h
}

fn cases() -> Vec<(String, LstmConfig)> {
    let mut v: Vec<(String, LstmConfig)> = Vec::new();
    for tag in lstm_kernels::specialized_shapes() {
        if let Ok(cfg) = lstm_kernels::config_from_shape_tag(&tag) {
            v.push((format!("shape:{tag}"), cfg));
        }
    }
    let base = |n, h| LstmConfig::new(n, h);
    let more = [
        ("odd:13x37", base(13, 37)),
        (
            "odd:33x17h9p",
            base(33, 17).with_head(9).with_peephole(Peephole::Matrix),
        ),
        ("diag:40x48", base(40, 48).with_peephole(Peephole::Diagonal)),
        (
            "proj:24x40r12",
            base(24, 40).with_projection(12).with_proj_clip(0.5),
        ),
        (
            "proj:16x33r20diag",
            base(16, 33)
                .with_projection(20)
                .with_peephole(Peephole::Diagonal),
        ),
        ("forget:20x24", base(20, 24).with_forget_bias(1.0)),
        ("cellclip:20x24", base(20, 24).with_cell_clip(0.7)),
        (
            "clip:20x24",
            base(20, 24).with_clip(1.5).with_input_forget(true),
        ),
        (
            "clipdiag:9x19",
            base(9, 19).with_clip(0.9).with_peephole(Peephole::Diagonal),
        ),
        ("big:256x256", base(256, 256)),
        (
            "big:300x280h100p",
            base(300, 280)
                .with_head(100)
                .with_peephole(Peephole::Matrix),
        ),
        ("streamed:1024x1024", base(1024, 1024)),
    ];
    v.extend(more.into_iter().map(|(n, c)| (n.to_string(), c)));
    v
}

fn main() {
    for (name, cfg) in cases() {
        let weights = LstmWeights::random(&cfg, 7).unwrap();
        let h = cfg.n_hidden;
        let (batches, steps): (&[usize], usize) = if h >= 1000 {
            (&[1, 4], 2)
        } else if h >= 256 {
            (&[1, 7, 70], 3)
        } else {
            (&[1, 2, 3, 5, 7, 9, 13, 16, 17, 40], 37)
        };
        for isa in Isa::all_available() {
            for choice in [KernelChoice::Generic, KernelChoice::Specialized] {
                let Ok(model) = Lstm::new(cfg, weights.clone())
                    .and_then(|m| m.with_isa(isa))
                    .and_then(|m| m.with_kernel(choice))
                else {
                    continue;
                };
                for &b in batches {
                    let mut rng = SplitMix64::new((b * 1000 + h) as u64);
                    let xs = rng.vec_uniform(steps * b * cfg.n_input, -2.0, 2.0);
                    let c0 = rng.vec_uniform(b * h, -1.0, 1.0);
                    let m0 = rng.vec_uniform(b * cfg.n_recurrent(), -1.0, 1.0);
                    for threads in [1, 2] {
                        let m = model
                            .clone()
                            .with_threads(threads)
                            .unwrap()
                            .with_parallel_threshold(0.0);
                        let mut st = m.state_from(b, &c0, &m0).unwrap();
                        let mut ys = vec![f32::NAN; steps * b * cfg.n_output()];
                        m.forward(&mut st, &xs, &mut ys).unwrap();
                        let fwd = hash(&[&ys, st.c(), st.m()]);
                        // step() one step at a time.
                        let mut st = m.state_from(b, &c0, &m0).unwrap();
                        let per = b * cfg.n_input;
                        let out = b * cfg.n_output();
                        let mut ys2 = vec![f32::NAN; steps * out];
                        for t in 0..steps {
                            m.step(
                                &mut st,
                                &xs[t * per..(t + 1) * per],
                                &mut ys2[t * out..(t + 1) * out],
                            )
                            .unwrap();
                        }
                        let stp = hash(&[&ys2, st.c(), st.m()]);
                        println!(
                            "{name:<22} {isa:<8} {choice:<11?} b={b:<3} t={threads} forward {fwd:016x} step {stp:016x}"
                        );
                    }
                }
            }
        }
    }
}
