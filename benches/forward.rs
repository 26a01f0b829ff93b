//! `cargo bench`: forward over a sequence, per shape, for
//! * `lstm-kernels` on every ISA this CPU has (1 thread, and 2 threads for
//!   the B=64 shape),
//! * what a Rust user would write with a GEMM crate: ndarray's `dot`
//!   (matrixmultiply inside) for one concatenated `[x m]·W` per step, then
//!   scalar gate math,
//! * the scalar `f64` reference (small shapes only: it is very slow);
//! * generated shape-specialized kernels vs the generic kernel, for every
//!   shape build.rs specialized (`specialized_<shape>` groups);
//! * the reduced precisions (`lstm-kernels/<kernel>` rows: every bf16 and
//!   int8 kernel this CPU has but the portable ones) on the shapes they
//!   compute, 1 thread and 2 for B=64.
//!
//! Criterion's throughput is set to FLOPs, so its "elem/s" are FLOP/s. At
//! the end a summary prints GFLOP/s and the fraction of the measured FMA
//! peak (`fma_peak_gflops`) for the same runs.

use std::hint::black_box;
use std::time::Instant;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use lstm_kernels::reference::{self, RefState};
use lstm_kernels::rng::SplitMix64;
use lstm_kernels::{
    Isa, KernelChoice, Lstm, LstmConfig, LstmWeights, Peephole, fma_peak_gflops, specialized_shapes,
};
use ndarray::{Array2, ArrayView2, s};

const STEPS: usize = 16;

struct Shape {
    name: &'static str,
    cfg: LstmConfig,
    batch: usize,
}

fn shapes() -> Vec<Shape> {
    let std = |n, h| LstmConfig::new(n, h);
    vec![
        Shape {
            name: "seed_7x5h3p_b10",
            cfg: std(7, 5).with_head(3).with_peephole(Peephole::Matrix),
            batch: 10,
        },
        Shape {
            name: "h64_b16",
            cfg: std(64, 64),
            batch: 16,
        },
        Shape {
            name: "h256_b1",
            cfg: std(256, 256),
            batch: 1,
        },
        Shape {
            name: "h256_b16",
            cfg: std(256, 256),
            batch: 16,
        },
        Shape {
            name: "h256_b64",
            cfg: std(256, 256),
            batch: 64,
        },
        Shape {
            name: "h512_b64",
            cfg: std(512, 512),
            batch: 64,
        },
        Shape {
            name: "h512_b64_seed_cell",
            cfg: std(512, 512).with_head(256).with_peephole(Peephole::Matrix),
            batch: 64,
        },
    ]
}

/// One concatenated GEMM per step with ndarray, then scalar gate math
/// (standard cell: no peephole, no head).
struct GemmCrateLstm {
    w: Array2<f32>,
    bias: Vec<f32>,
    h: usize,
    n: usize,
}

impl GemmCrateLstm {
    fn new(cfg: &LstmConfig, w: &LstmWeights) -> Self {
        let w2 =
            Array2::from_shape_vec((cfg.gate_rows(), cfg.gate_cols()), w.gates.clone()).unwrap();
        GemmCrateLstm {
            w: w2,
            bias: w.bias.clone(),
            h: cfg.n_hidden,
            n: cfg.n_input,
        }
    }

    fn forward(
        &self,
        xm: &mut Array2<f32>,
        c: &mut [f32],
        xs: &[f32],
        out: &mut [f32],
        batch: usize,
    ) {
        let (n, h) = (self.n, self.h);
        let sig = |z: f32| 1.0 / (1.0 + (-z).exp());
        for t in 0..xs.len() / (batch * n) {
            let x = ArrayView2::from_shape((batch, n), &xs[t * batch * n..(t + 1) * batch * n])
                .unwrap();
            xm.slice_mut(s![.., ..n]).assign(&x);
            let gates = xm.dot(&self.w);
            for b in 0..batch {
                let g = gates.row(b);
                for j in 0..h {
                    let i = sig(g[j] + self.bias[j]);
                    let f = sig(g[h + j] + self.bias[h + j]);
                    let cc = (g[2 * h + j] + self.bias[2 * h + j]).tanh();
                    let o = sig(g[3 * h + j] + self.bias[3 * h + j]);
                    let cn = f * c[b * h + j] + i * cc;
                    c[b * h + j] = cn;
                    let m = o * cn.tanh();
                    xm[(b, n + j)] = m;
                    out[(t * batch + b) * h + j] = m;
                }
            }
        }
    }
}

fn inputs(sh: &Shape) -> Vec<f32> {
    SplitMix64::new(5).vec_uniform(STEPS * sh.batch * sh.cfg.n_input, -1.0, 1.0)
}

fn model(sh: &Shape, isa: Isa, threads: usize) -> Lstm {
    Lstm::new(sh.cfg, LstmWeights::random(&sh.cfg, 1).unwrap())
        .unwrap()
        .with_isa(isa)
        .unwrap()
        .with_threads(threads)
        .unwrap()
}

fn bench(c: &mut Criterion) {
    for sh in shapes() {
        let flops = sh.cfg.flops_per_sample_step() * (sh.batch * STEPS) as f64;
        let mut g = c.benchmark_group(sh.name);
        g.throughput(Throughput::Elements(flops as u64));
        g.sample_size(10);
        g.warm_up_time(std::time::Duration::from_secs(1));
        g.measurement_time(std::time::Duration::from_secs(2));
        let xs = inputs(&sh);
        let mut ys = vec![0.0f32; STEPS * sh.batch * sh.cfg.n_output()];
        for isa in Isa::all_available() {
            for threads in [1, 2] {
                if threads == 2 && sh.batch < 64 {
                    continue;
                }
                let m = model(&sh, isa, threads);
                let mut st = m.new_state(sh.batch).unwrap();
                g.bench_function(
                    BenchmarkId::new(format!("lstm-kernels/{isa}"), format!("{threads}t")),
                    |b| b.iter(|| m.forward(&mut st, black_box(&xs), &mut ys).unwrap()),
                );
            }
        }
        if sh.cfg.head.is_none() && sh.cfg.peephole != Peephole::Matrix {
            let reduced = Lstm::bf16_kernels()
                .into_iter()
                .chain(Lstm::int8_kernels())
                .filter(|k| !k.ends_with("_portable"));
            for k in reduced {
                for threads in [1, 2] {
                    if threads == 2 && sh.batch < 64 {
                        continue;
                    }
                    let m = model(&sh, Isa::detect(), threads);
                    let m = if k.starts_with("bf16") {
                        m.with_bf16_kernel(k)
                    } else {
                        m.with_int8_kernel(k)
                    }
                    .unwrap();
                    let mut st = m.new_state(sh.batch).unwrap();
                    g.bench_function(
                        BenchmarkId::new(format!("lstm-kernels/{k}"), format!("{threads}t")),
                        |b| b.iter(|| m.forward(&mut st, black_box(&xs), &mut ys).unwrap()),
                    );
                }
            }
        }
        if sh.cfg.head.is_none() && sh.cfg.peephole == Peephole::None {
            let gl = GemmCrateLstm::new(&sh.cfg, &LstmWeights::random(&sh.cfg, 1).unwrap());
            let mut xm = Array2::zeros((sh.batch, sh.cfg.gate_rows()));
            let mut cst = vec![0.0f32; sh.batch * sh.cfg.n_hidden];
            g.bench_function("ndarray-gemm+scalar", |b| {
                b.iter(|| gl.forward(&mut xm, &mut cst, black_box(&xs), &mut ys, sh.batch))
            });
        }
        if sh.cfg.n_hidden <= 64 {
            let seed = LstmWeights::random(&sh.cfg, 1)
                .unwrap()
                .to_seed(&sh.cfg)
                .unwrap();
            let mut rst = RefState::zeros(&sh.cfg, sh.batch);
            g.bench_function("reference-f64", |b| {
                b.iter(|| reference::forward(&sh.cfg, &seed, black_box(&xs), &mut rst))
            });
        }
        g.finish();
    }
    specialized(c);
    stacks(c);
    summary();
}

/// A 2-layer bidirectional stack (H=256, B=32, T=32): the two directions
/// of each layer sequentially vs on two threads.
fn stacks(c: &mut Criterion) {
    use lstm_kernels::{LstmStack, Merge, SeqOptions, StackLayer};
    let (b, t, h) = (32usize, 32usize, 256usize);
    let cell = |n: usize, seed: u64| {
        let cfg = LstmConfig::new(n, h);
        Lstm::new(cfg, LstmWeights::random(&cfg, seed).unwrap()).unwrap()
    };
    let layers = || {
        vec![
            StackLayer {
                forward: cell(h, 1),
                backward: Some(cell(h, 2)),
            },
            StackLayer {
                forward: cell(2 * h, 3),
                backward: Some(cell(2 * h, 4)),
            },
        ]
    };
    let flops = (b * t) as f64
        * 2.0
        * (LstmConfig::new(h, h).flops_per_sample_step()
            + LstmConfig::new(2 * h, h).flops_per_sample_step());
    let xs = SplitMix64::new(3).vec_uniform(t * b * h, -1.0, 1.0);
    let mut ys = vec![0.0f32; t * b * 2 * h];
    let mut g = c.benchmark_group("stack_bidir_2x256_b32");
    g.throughput(Throughput::Elements(flops as u64));
    g.sample_size(10);
    g.warm_up_time(std::time::Duration::from_secs(1));
    g.measurement_time(std::time::Duration::from_secs(3));
    for (name, threshold) in [("sequential", f64::INFINITY), ("directions_parallel", 0.0)] {
        let stack = LstmStack::new(layers(), Merge::Concat)
            .unwrap()
            .with_parallel_threshold(threshold);
        let mut st = stack.new_state(b).unwrap();
        g.bench_function(name, |bch| {
            bch.iter(|| {
                stack
                    .forward(&mut st, black_box(&xs), &mut ys, SeqOptions::default())
                    .unwrap()
            })
        });
    }
    g.finish();
}

/// Generated (shape-specialized) kernels vs the generic kernel, for every
/// shape build.rs specialized, on the best ISA, at B = 1, 4, 16 (and 64).
fn specialized(c: &mut Criterion) {
    for tag in specialized_shapes() {
        let cfg = lstm_kernels::config_from_shape_tag(&tag).unwrap();
        let (n, h) = (cfg.n_input, cfg.n_hidden);
        let steps = if h <= 128 { 256 } else { 16 };
        let batches: &[usize] = if h <= 128 {
            &[1, 4, 10, 16]
        } else {
            &[1, 16, 64]
        };
        let mut g = c.benchmark_group(format!("specialized_{tag}"));
        g.sample_size(10);
        g.warm_up_time(std::time::Duration::from_secs(1));
        g.measurement_time(std::time::Duration::from_secs(2));
        for &b in batches {
            g.throughput(Throughput::Elements(
                (cfg.flops_per_sample_step() * (b * steps) as f64) as u64,
            ));
            let xs = SplitMix64::new(5).vec_uniform(steps * b * n, -1.0, 1.0);
            let mut ys = vec![0.0f32; steps * b * cfg.n_output()];
            for choice in [KernelChoice::Generic, KernelChoice::Specialized] {
                let m = Lstm::new(cfg, LstmWeights::random(&cfg, 1).unwrap())
                    .unwrap()
                    .with_kernel(choice)
                    .unwrap();
                let mut st = m.new_state(b).unwrap();
                g.bench_function(
                    BenchmarkId::new(format!("{choice:?}"), format!("b{b}")),
                    |bch| bch.iter(|| m.forward(&mut st, black_box(&xs), &mut ys).unwrap()),
                );
            }
        }
        g.finish();
    }
}

/// GFLOP/s and fraction of the FMA peak, timed here directly (median of 7).
fn summary() {
    println!(
        "\nsummary: lstm-kernels forward, T={STEPS}, GFLOP/s and fraction of the per-core FMA peak × threads"
    );
    let peaks: Vec<(Isa, f64)> = Isa::all_available()
        .into_iter()
        .map(|i| (i, fma_peak_gflops(i).unwrap()))
        .collect();
    for (isa, p) in &peaks {
        println!("  {isa} FMA peak: {p:.1} GFLOP/s per core");
    }
    for sh in shapes() {
        let xs = inputs(&sh);
        let mut ys = vec![0.0f32; STEPS * sh.batch * sh.cfg.n_output()];
        for &(isa, peak) in &peaks {
            let m = model(&sh, isa, 1);
            let mut st = m.new_state(sh.batch).unwrap();
            let mut times: Vec<f64> = (0..7)
                .map(|_| {
                    let t = Instant::now();
                    m.forward(&mut st, &xs, &mut ys).unwrap();
                    t.elapsed().as_secs_f64()
                })
                .collect();
            times.sort_by(f64::total_cmp);
            let gf = sh.cfg.flops_per_sample_step() * (sh.batch * STEPS) as f64 / times[3] / 1e9;
            println!(
                "  {:<22} {isa:<8} {gf:>7.2} GFLOP/s  {:>5.1}% of peak",
                sh.name,
                100.0 * gf / peak
            );
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
