//! `lstm`: the command-line front end of lstm-kernels.
//!
//! * `lstm` / `lstm demo` — the seed exercise and a speed table;
//! * `lstm run` — run a cell on weights and inputs from files;
//! * `lstm bench` — throughput of `forward` at a given shape, or of many
//!   live streams served by the batcher (`--streams`).

/// `println!` that exits quietly when stdout is closed (`lstm … | head`)
/// instead of panicking.
macro_rules! outln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        if writeln!(std::io::stdout(), $($t)*).is_err() {
            std::process::exit(0);
        }
    }};
}

/// `print!` with the same behaviour as [`outln!`].
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        if write!(std::io::stdout(), $($t)*).is_err() {
            std::process::exit(0);
        }
    }};
}

/// `eprintln!` that never panics: a closed stderr loses the message, not
/// the exit status.
macro_rules! errln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($t)*);
    }};
}

mod bench;
mod demo;
mod generate;
mod run;
mod steal;
mod streams;
mod tune;

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
    /// Time candidate plans for one shape on this machine and keep the
    /// fastest (optionally in a plan file).
    Tune(tune::TuneArgs),
    /// Generate text with a character-level LSTM language model.
    Generate(generate::GenerateArgs),
    /// Print the source of the shape-specialized kernels build.rs generated
    /// (or, with --shapes, what it would generate for that list).
    Codegen {
        /// A shape list in the LSTM_KERNELS_SHAPES grammar, e.g. "7x5h3p,40x128".
        #[arg(long)]
        shapes: Option<String>,
        /// Only list the generated kernels' names.
        #[arg(long)]
        list: bool,
    },
}

fn main() {
    // Usage errors print one line too (clap's own are several, with hints);
    // help and version print as usual.
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                e.exit();
            }
            // The message is the lines before the usage and tips.
            let text = e.render().to_string();
            let words: Vec<&str> = text
                .lines()
                .take_while(|l| !l.trim().is_empty() && !l.starts_with("Usage:"))
                .map(str::trim)
                .collect();
            errln!("lstm: {} (see lstm --help)", words.join(" "));
            std::process::exit(1);
        }
    };
    // An interrupted write leaves its old output intact (outputs are staged
    // and renamed); this removes the half-written temporary files too.
    // 130 = 128 + SIGINT, the shell's convention for an interrupted run.
    let _ = ctrlc::set_handler(|| {
        lstm_kernels::io::remove_pending_files();
        // Not `eprintln!`: it panics when stderr is a closed pipe, and the
        // exit below would never run (nor any later Ctrl-C's).
        let _ = std::io::Write::write_all(&mut std::io::stderr(), b"lstm: interrupted\n");
        std::process::exit(130);
    });
    let result = match cli.command.unwrap_or(Command::Demo) {
        Command::Demo => demo::demo(),
        Command::Run(args) => run::run(&args),
        Command::Bench(args) => bench::bench(&args),
        Command::Tune(args) => tune::tune(&args),
        Command::Generate(args) => generate::generate(&args),
        Command::Codegen { shapes, list } => codegen(shapes.as_deref(), list),
    };
    if let Err(e) = result {
        errln!("lstm: error: {e}");
        std::process::exit(1);
    }
}

fn codegen(shapes: Option<&str>, list: bool) -> lstm_kernels::Result<()> {
    match (shapes, list) {
        (None, false) => out!("{}", lstm_kernels::generated_source()),
        (None, true) => {
            for name in lstm_kernels::specialized_kernels() {
                outln!("{name}");
            }
        }
        (Some(s), list) => {
            // What build.rs would generate for this list (the generator's
            // own grammar and errors): the file, or with --list its
            // kernels' names.
            let shapes =
                lstm_kernels_codegen::shape_list(s).map_err(lstm_kernels::Error::Invalid)?;
            if list {
                for k in lstm_kernels_codegen::kernels(&shapes) {
                    outln!("{}", k.name());
                }
            } else {
                out!("{}", lstm_kernels_codegen::GeneratedFile(&shapes));
            }
        }
    }
    Ok(())
}
