//! dawnrun: the trainer and the evaluator. Data flows one way:
//! records (dawnrun-records) -> pipeline (dawnrun-data) -> graph (model) -> gradients ->
//! all-reduce (dawnrun-dist) -> update (train) -> checkpoint -> eval.
//!
//! - [`dataset`]: image and class counts of a records folder
//! - [`model`]: the ResNet graph, gradients, optimizer (TensorFlow)
//! - [`checkpoint`]: TensorFlow-format checkpoints, atomically
//! - [`settings`]: schedule settings -> model, loss-scale and all-reduce configs
//! - [`train`]: the training loop
//! - [`runinfo`]: what a run directory records about its run
//! - [`eval`]: the offline checkpoint sweep and the DAWNBench report
//! - [`process`]: process-level setup of the binaries
//! - [`gradcheck`]: `trainer gradcheck`, the all-reduce against its definition
//! - [`bench`]: `trainer bench`, step time against the bare graph
#![deny(unsafe_code)]
pub mod bench;
pub mod checkpoint;
pub mod dataset;
pub mod eval;
pub mod gradcheck;
pub mod model;
pub mod process;
pub mod runinfo;
pub mod settings;
pub mod train;
