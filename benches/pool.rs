//! `cargo bench --bench pool`: one step of a `StreamPool` alone (no
//! batcher, no threads around it), against
//! * `step` on one pre-assembled batch of the same rows (the ceiling),
//! * the pool over every stream (no rows move),
//! * the pool over a different random half of the streams each step
//!   (rows swap so that the half is a prefix: the design kept),
//! * the same halves by gather/scatter: each stream's `c` and `m` copied
//!   into a dense batch state and back around every step (the other
//!   design: what a service writes by hand).

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use lstm_kernels::rng::SplitMix64;
use lstm_kernels::{Lstm, LstmConfig, LstmWeights, Peephole, StreamId, StreamPool};

fn pool_step(c: &mut Criterion) {
    let shapes = [
        (
            "seed_7x5h3p",
            LstmConfig::new(7, 5)
                .with_head(3)
                .with_peephole(Peephole::Matrix),
            1000,
        ),
        ("h256", LstmConfig::new(256, 256), 256),
    ];
    for (name, cfg, n) in shapes {
        let model = Lstm::new(cfg, LstmWeights::random(&cfg, 7).unwrap()).unwrap();
        let (ni, p, h) = (cfg.n_input, cfg.n_output(), cfg.n_hidden);
        let xs = SplitMix64::new(1).vec_uniform(n * ni, -1.0, 1.0);
        let mut ys = vec![0.0f32; n * p];
        let mut g = c.benchmark_group(format!("pool_step/{name}/{n}_streams"));
        g.sample_size(20);
        g.throughput(Throughput::Elements(n as u64));
        let mut st = model.new_state(n).unwrap();
        g.bench_function("ceiling_step_all", |b| {
            b.iter(|| model.step(&mut st, black_box(&xs), &mut ys).unwrap())
        });
        let mut pool = StreamPool::new(model.clone(), n).unwrap();
        let ids: Vec<StreamId> = (0..n).map(|_| pool.open().unwrap()).collect();
        g.bench_function("pool_all", |b| {
            b.iter(|| pool.step(&ids, black_box(&xs), &mut ys).unwrap())
        });
        // Eight random halves, stepped in turn.
        let mut rng = SplitMix64::new(2);
        let halves: Vec<Vec<usize>> = (0..8)
            .map(|_| {
                let mut v: Vec<usize> = (0..n).collect();
                for i in (1..n).rev() {
                    v.swap(i, rng.next_u64() as usize % (i + 1));
                }
                v.truncate(n / 2);
                v
            })
            .collect();
        let half_ids: Vec<Vec<StreamId>> = halves
            .iter()
            .map(|hv| hv.iter().map(|&i| ids[i]).collect())
            .collect();
        g.throughput(Throughput::Elements((n / 2) as u64));
        let k = n / 2;
        let (mut turn, mut steps) = (0, 0u64);
        let swapped = pool.rows_swapped();
        g.bench_function(BenchmarkId::new("pool_random_half", "swap"), |b| {
            b.iter(|| {
                turn = (turn + 1) % 8;
                steps += 1;
                pool.step(&half_ids[turn], &xs[..k * ni], &mut ys[..k * p])
                    .unwrap()
            })
        });
        println!(
            "{name}: {:.1} rows swapped per half step",
            (pool.rows_swapped() - swapped) as f64 / steps.max(1) as f64
        );
        let (mut cs, mut ms) = (vec![0.0f32; n * h], vec![0.0f32; n * h]);
        let mut dense = model.new_state(k).unwrap();
        g.bench_function(
            BenchmarkId::new("pool_random_half", "gather_scatter"),
            |b| {
                b.iter(|| {
                    turn = (turn + 1) % 8;
                    let hv = &halves[turn];
                    for (r, &i) in hv.iter().enumerate() {
                        dense.c_mut()[r * h..(r + 1) * h].copy_from_slice(&cs[i * h..(i + 1) * h]);
                        dense.m_mut()[r * h..(r + 1) * h].copy_from_slice(&ms[i * h..(i + 1) * h]);
                    }
                    model
                        .step(&mut dense, &xs[..k * ni], &mut ys[..k * p])
                        .unwrap();
                    for (r, &i) in hv.iter().enumerate() {
                        cs[i * h..(i + 1) * h].copy_from_slice(&dense.c()[r * h..(r + 1) * h]);
                        ms[i * h..(i + 1) * h].copy_from_slice(&dense.m()[r * h..(r + 1) * h]);
                    }
                })
            },
        );
        let mut small = model.new_state(k).unwrap();
        g.bench_function(
            BenchmarkId::new("pool_random_half", "ceiling_step_half"),
            |b| {
                b.iter(|| {
                    model
                        .step(&mut small, black_box(&xs[..k * ni]), &mut ys[..k * p])
                        .unwrap()
                })
            },
        );
        g.finish();
    }
}

criterion_group!(benches, pool_step);
criterion_main!(benches);
