//! all-reduced gradients -> update: the training loop. The only module that holds the pipeline
//! (`dawnrun-data`), the graph (`model`) and the all-reduce (`dawnrun-dist`) at once.
//!
//! - [`setup`]: graph, restore or start, broadcast, pipelines, the step log (before step 0)
//! - [`feeder`]: the thread that fills the graph's input tensors one batch ahead of the step
//! - [`step`]: one optimizer step (gradients -> all-reduce -> verdict -> apply), shared with
//!   `trainer bench` and `trainer gradcheck`
//! - [`run`](mod@run): the loop: next batch -> update -> log -> checkpoint
//! - [`loss_scale`]: static and dynamic loss scaling (pure)
//! - [`hooks`]: faults the process tests inject (frozen, killed, failing, poisoned ranks)
//! - [`log`]: the step line, metrics.jsonl and TensorBoard events (rank 0)

pub mod feeder;
pub mod hooks;
pub mod log;
pub mod loss_scale;
pub mod run;
pub mod setup;
pub mod step;

pub use run::{run, RunSummary};
pub use setup::RunConfig;
