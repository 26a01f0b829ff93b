//! `lstm demo`: the seed exercise, then a speed table.

use indicatif::{ProgressBar, ProgressStyle};
use lstm_kernels::error::Result;
use lstm_kernels::reference::{self, RefState};
use lstm_kernels::rng::SplitMix64;
use lstm_kernels::{Lstm, LstmConfig, LstmWeights, Peephole};

use crate::bench::{measure, setup};

fn print_matrix(name: &str, rows: usize, cols: usize, v: &[f32]) {
    outln!("{name} [{rows}x{cols}] =");
    for r in 0..rows {
        let row: Vec<String> = v[r * cols..(r + 1) * cols]
            .iter()
            .map(|x| format!("{x:>8.4}"))
            .collect();
        outln!("  [{}]", row.join(" "));
    }
}

pub fn demo() -> Result<()> {
    // The seed: 7 features, 10 samples, 5 hidden units, 3 outputs, the
    // matrix peephole v_o and the tanh head w_h.
    let (n_features, batch, n_hidden, n_output) = (7, 10, 5, 3);
    let cfg = LstmConfig::new(n_features, n_hidden)
        .with_head(n_output)
        .with_peephole(Peephole::Matrix);
    let model = Lstm::new(cfg, LstmWeights::random(&cfg, 2026)?)?;
    let x = SplitMix64::new(238).vec_uniform(batch * n_features, 0.0, 1.0); // like np.random.random
    let mut state = model.new_state(batch)?;
    let mut h = vec![0.0f32; batch * n_output];
    model.step(&mut state, &x, &mut h)?;
    outln!(
        "The seed exercise: one LSTM step, {n_features} features, {batch} samples, {n_hidden} hidden units, {n_output} outputs"
    );
    outln!("(seeded weights U(-1/sqrt(H), 1/sqrt(H)), zero initial c and m)\n");
    print_matrix("x", batch, n_features, &x);
    print_matrix("c", batch, n_hidden, state.c());
    print_matrix("m", batch, n_hidden, state.m());
    print_matrix("h", batch, n_output, &h);

    // Speed: this crate vs the scalar f64 reference, forward over T steps.
    let shapes: [(&str, LstmConfig, usize); 4] = [
        ("seed 7->5 (peephole, head 3)", cfg, 10),
        ("64->64", LstmConfig::new(64, 64), 16),
        ("128->128", LstmConfig::new(128, 128), 32),
        ("256->256", LstmConfig::new(256, 256), 64),
    ];
    let steps = 8;
    let seconds = 0.6;
    let bar = ProgressBar::new(2 * shapes.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} {msg}").expect("valid template"),
    );
    let mut rows = Vec::new();
    for (name, cfg, b) in shapes {
        bar.set_message(format!("{name}, B={b}"));
        let (model, xs) = setup(cfg, b, steps, 1)?;
        let mut st = model.new_state(b)?;
        let mut ys = vec![0.0f32; steps * b * cfg.n_output()];
        let fast = measure(seconds, || {
            model.forward(&mut st, &xs, &mut ys).expect("sizes checked")
        });
        bar.inc(1);
        let seed = model.weights().to_seed(&cfg)?;
        let mut rst = RefState::zeros(&cfg, b);
        let slow = measure(seconds, || {
            reference::forward(&cfg, &seed, &xs, &mut rst);
        });
        bar.inc(1);
        rows.push((
            name,
            model.kernel_name(),
            b,
            fast.sample_steps_per_s(b, steps),
            slow.sample_steps_per_s(b, steps),
            cfg.flops_per_sample_step(),
        ));
    }
    bar.finish_and_clear();
    outln!(
        "\nforward over T={steps} steps, 1 thread, {} (sample-steps/s, median)",
        model.isa_name()
    );
    outln!(
        "{:<30} {:>4} {:<22} {:>14} {:>12} {:>9} {:>9}",
        "shape",
        "B",
        "kernel",
        "lstm-kernels",
        "reference",
        "speedup",
        "GFLOP/s"
    );
    for (name, kernel, b, fast, slow, flops) in rows {
        outln!(
            "{name:<30} {b:>4} {kernel:<22} {fast:>14.0} {slow:>12.0} {:>8.1}x {:>9.2}",
            fast / slow,
            fast * flops / 1e9
        );
    }
    Ok(())
}
