//! checkpoint -> top-1/top-5 -> DAWNBench table, time to target, plot; `--watch` beside a live run.
//!
//! - [`assign`] -- checkpoint i -> rank i % N (pure)
//! - [`sweep`](mod@sweep) -- evaluate a run's checkpoints, cache results, gather on rank 0
//! - [`feeder`] -- validation batches filled into the graph's tensors one batch ahead
//! - [`report`] -- eval.tsv / eval.jsonl / time to target (pure)
//! - [`plot`] -- eval.png

pub mod assign;
pub mod feeder;
pub mod plot;
pub mod report;
pub mod sweep;

pub use sweep::{sweep, SweepConfig};
