//! The `lstm` binary, for the tests that run it.
//!
//! Not declared in common/mod.rs: `env!("CARGO_BIN_EXE_lstm")` exists only
//! for tests that can run the binary. A test file that runs it includes this
//! file itself, `#[path = "common/cli.rs"] mod cli;`, and needs
//! `required-features = ["cli"]` in Cargo.toml (see common/mod.rs).
#![allow(dead_code)]

use std::process::{Command, Output};

/// A command running the `lstm` binary of this build.
pub fn lstm() -> Command {
    Command::new(env!("CARGO_BIN_EXE_lstm"))
}

/// Runs `cmd` to the end, capturing its stdout and stderr.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("{cmd:?}: cannot run: {e}"))
}

/// Runs `cmd` and asserts that it succeeded (its stderr in the message).
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = run(cmd);
    assert!(out.status.success(), "{cmd:?} failed: {}", stderr(&out));
    out
}

/// Runs `cmd`, asserts that it failed, and returns its stderr.
pub fn run_err(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(!out.status.success(), "{cmd:?} succeeded");
    stderr(&out)
}

/// A run's stderr as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}
