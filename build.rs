//! Generates the shape-specialized kernel table into `$OUT_DIR/kernels.rs`
//! (see codegen/, whose `build_script` holds the logic and its tests).
//! Shapes: the defaults plus `LSTM_KERNELS_SHAPES`.

use lstm_kernels_codegen::{SHAPES_ENV, build_script};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let shapes = std::env::var(SHAPES_ENV).ok();
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
