//! Sequence models built on [`crate::Lstm`]: stacked and bidirectional
//! layers over padded batches with per-sample lengths.

pub mod stack;
