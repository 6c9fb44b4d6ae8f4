//! dawnrun: the trainer and the evaluator. Data flows one way:
//! records (dawnrun-records) -> pipeline (dawnrun-data) -> graph (model) -> gradients ->
//! all-reduce (dawnrun-dist) -> update (train) -> checkpoint -> eval.
//! The modules below are declared in that order.
#![deny(unsafe_code)]

/// Image and class counts of a records folder (what the plan needs before training).
pub mod dataset;

/// The ResNet graph, gradients and optimizer (TensorFlow).
pub mod model;

/// Schedule settings -> model, loss-scale and all-reduce configs.
pub mod settings;

/// The training loop: batches -> gradients -> all-reduce -> update.
pub mod train;

/// TensorFlow-format checkpoints, written atomically.
pub mod checkpoint;

/// What a run directory records about its run.
pub mod runinfo;

/// The offline checkpoint sweep and the DAWNBench report.
pub mod eval;

/// `trainer gradcheck`: the all-reduce against its definition.
pub mod gradcheck;

/// `trainer bench`: step time against the bare graph.
pub mod bench;

/// Process-level setup of the binaries.
pub mod process;
