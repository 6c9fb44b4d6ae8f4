//! dawnrun: the trainer and the evaluator. Data flows one way:
//! records (dawnrun-records) -> pipeline (dawnrun-data) -> graph (model) -> gradients ->
//! all-reduce (dawnrun-dist) -> update (train) -> checkpoint -> eval.
#![deny(unsafe_code)]
pub mod checkpoint;
pub mod model;
