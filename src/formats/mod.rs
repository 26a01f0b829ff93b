//! File formats: tensors in and out of `.npy`/`.npz`/`.safetensors`
//! ([`io`]) and other frameworks' weights mapped to the canonical layout
//! ([`import`]). Nothing here is needed to run a model built in memory.

pub mod import;
pub mod io;
mod onnx_proto;
