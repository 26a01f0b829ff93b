//! Applications built on the engine and the file formats; each is a
//! library module so that the CLI, tests and benches share one code path.

pub mod charlm;
