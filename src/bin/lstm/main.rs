//! `lstm`: the command-line front end of lstm-kernels.
//!
//! * `lstm` / `lstm demo` — the seed exercise and a speed table;
//! * `lstm run` — run a cell on weights and inputs from files;
//! * `lstm bench` — throughput of `forward` at a given shape.

mod bench;
mod demo;
mod run;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "lstm",
    version,
    about = "Fast LSTM cells on the CPU (lstm-kernels)"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// The seed exercise (7 features, batch 10, 5 hidden, 3 outputs) and a
    /// speed table against the scalar reference. The default command.
    Demo,
    /// Run the cell on weights and inputs from files.
    Run(run::RunArgs),
    /// Measure forward throughput at one shape.
    Bench(bench::BenchArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command.unwrap_or(Command::Demo) {
        Command::Demo => demo::demo(),
        Command::Run(args) => run::run(&args),
        Command::Bench(args) => bench::bench(&args),
    };
    if let Err(e) = result {
        eprintln!("lstm: error: {e}");
        std::process::exit(1);
    }
}
