//! Batched text generation with the shipped character-level model:
//! characters per second for N = 1, 8, 64 prompts at once (criterion's
//! "elem/s" are characters/s).

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use lstm_kernels::charlm::{CharLm, Sampling};

const LENGTH: usize = 64;

fn bench(c: &mut Criterion) {
    let model = CharLm::shipped().unwrap();
    let mut g = c.benchmark_group("generate");
    g.sample_size(10);
    g.warm_up_time(std::time::Duration::from_secs(1));
    g.measurement_time(std::time::Duration::from_secs(3));
    for n in [1usize, 8, 64] {
        let prompts = vec!["And God said"; n];
        g.throughput(Throughput::Elements((n * LENGTH) as u64));
        g.bench_function(BenchmarkId::new("chars", n), |b| {
            b.iter(|| {
                let s = Sampling {
                    temperature: 0.8,
                    top_k: None,
                    seed: 1,
                };
                black_box(
                    model
                        .generate(black_box(&prompts), LENGTH, s, |_, _| {})
                        .unwrap(),
                )
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
