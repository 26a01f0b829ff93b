//! Sequence models built on [`crate::Lstm`]: stacked and bidirectional
//! layers over padded batches with per-sample lengths; a pool of live
//! streams stepped together, and the batching front end that serves them
//! to many threads.

pub mod batcher;
pub mod pool;
pub mod stack;
