//! dawnrun: the trainer and the evaluator. Data flows one way:
//! records (dawnrun-records) -> pipeline (dawnrun-data) -> batches -> graph (model) ->
//! gradients -> all-reduce (dawnrun-dist) -> update (train) -> checkpoint -> eval.
//! The modules below are declared in that order; each imports only modules above it
//! (`tools/check-layering.sh` enforces it). `checkpoint` is the one declared ahead of its place
//! in the flow: it is the file format that both the training loop (which writes) and eval (which
//! reads) use, so it sits above both. `self_signal`, first, is outside the flow: the one action
//! the trainer's and eval-sweep's test hooks share. `docs/ARCHITECTURE.md` has the whole picture.
#![deny(unsafe_code)]

/// `say!`: `eprintln!` in one `write` call, so two ranks' lines never interleave under `mpirun`
/// (`dawnrun_dist::say`). Every line a rank prints goes through it.
#[macro_use]
extern crate dawnrun_dist;

// The signal a process sends itself in a test hook (trainer and eval-sweep).
pub mod self_signal;

// Every path under `runs/<name>`: the place the later stages write to.
pub mod run_dir;

// The ResNet graph, gradients and optimizer, and the save/restore ops (TensorFlow).
pub mod model;

// Checkpoint files: names, listing, completeness, atomic save and restore.
pub mod checkpoint;

// The training loop: batches -> gradients -> all-reduce -> update -> checkpoint.
pub mod train;

// The offline checkpoint sweep and the DAWNBench report.
pub mod eval;

// The command lines of `trainer` (train, plan, bench, gradcheck, export) and `eval-sweep`.
pub mod commands;
