//! The model API, in the order a user builds it: [`config`] (sizes and
//! variants) → [`weights`] (canonical layout) → [`Lstm`] (the immutable,
//! packed model) → [`LstmState`] (per caller) → `step` / `forward`.

pub mod config;
pub(crate) mod lstm;
pub mod weights;

pub use lstm::{Lstm, LstmState, Precision, max_threads};
