//! all-reduced gradients -> update. The only module that holds the pipeline (`dawnrun-data`),
//! the graph (`model`) and the all-reduce (`dawnrun-dist`) at once; it speaks dawnrun types.
//!
//! - [`run`]: the training loop
//! - [`loss_scale`]: static and dynamic loss scaling (pure)
//! - [`log`]: the step line, metrics.jsonl and TensorBoard events (rank 0)

pub mod log;
pub mod loss_scale;
pub mod run;

pub use run::{run, RunConfig, RunSummary};
