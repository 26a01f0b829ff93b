//! Generates the shape-specialized kernel table into `$OUT_DIR/kernels.rs`
//! (see codegen/, whose `build_script` holds the logic and its tests).
//! Shapes: the defaults plus `LSTM_KERNELS_SHAPES`.

use lstm_kernels_codegen::{SHAPES_ENV, build_script};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    // A list that is not UTF-8 is malformed too: an error, not the defaults.
    let shapes = match std::env::var(SHAPES_ENV) {
        Ok(v) => Some(v),
        Err(std::env::VarError::NotPresent) => None,
        Err(std::env::VarError::NotUnicode(v)) => {
            eprintln!("error: {SHAPES_ENV}={v:?} is not valid UTF-8");
            std::process::exit(1);
        }
    };
    let out = match build_script(shapes.as_deref()) {
        Ok(out) => out,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    let dir = std::path::PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    if let Err(e) = std::fs::write(dir.join("kernels.rs"), &out.source) {
        eprintln!("error: writing {}: {e}", dir.join("kernels.rs").display());
        std::process::exit(1);
    }
    for d in out.directives {
        println!("{d}");
    }
}
