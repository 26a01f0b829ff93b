//! Generates the shape-specialized kernels (see src/codegen.rs) into
//! `$OUT_DIR/kernels.rs`. Shapes: the defaults plus `LSTM_KERNELS_SHAPES`.

#[path = "src/codegen.rs"]
#[allow(dead_code)]
mod codegen;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src/codegen.rs");
    println!("cargo:rerun-if-env-changed={}", codegen::SHAPES_ENV);
    let extra = std::env::var(codegen::SHAPES_ENV).unwrap_or_default();
    let shapes = match codegen::shape_list(&extra) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {}={extra:?}: {e}", codegen::SHAPES_ENV);
            std::process::exit(1);
        }
    };
    let out_dir =
        std::path::PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let path = out_dir.join("kernels.rs");
    std::fs::write(&path, codegen::generate(&shapes)).expect("write kernels.rs");
    for cfg in codegen::CFGS {
        println!("cargo:rustc-check-cfg=cfg({cfg})");
    }
    for cfg in codegen::cfgs(&shapes) {
        println!("cargo:rustc-cfg={cfg}");
    }
    // Format it for review when rustfmt is at hand (it ships with rustup);
    // the generator's own layout is readable without it.
    let _ =
        std::process::Command::new(std::env::var("RUSTFMT").unwrap_or_else(|_| "rustfmt".into()))
            .args(["--edition", "2024"])
            .arg(&path)
            .status();
}
