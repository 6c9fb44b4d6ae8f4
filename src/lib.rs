//! dawnrun: the trainer and the evaluator. Data flows one way:
//! records (dawnrun-records) -> pipeline (dawnrun-data) -> batches -> graph (model) ->
//! gradients -> all-reduce (dawnrun-dist) -> update (train) -> checkpoint -> eval.
//! The modules below are declared in that order; each imports only modules above it
//! (`tools/check-layering.sh` enforces it). `docs/ARCHITECTURE.md` has the whole picture.
#![deny(unsafe_code)]

/// `eprintln!` in one `write` call. Rust's stderr is unbuffered, so `eprintln!` writes each
/// piece of the format separately, and under `mpirun` the pieces of two ranks' lines interleave
/// (`rank rank 1: ... 0: ...`). Every line a rank prints goes through this.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let mut line = format!($($arg)*);
        line.push('\n');
        // Nothing useful can be done when stderr itself is gone.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }};
}

/// Every path under `runs/<name>`: the place the later stages write to.
pub mod run_dir;

/// The ResNet graph, gradients and optimizer, and the save/restore ops (TensorFlow).
pub mod model;

/// Checkpoint files: names, listing, completeness, atomic save and restore.
pub mod checkpoint;

/// The training loop: batches -> gradients -> all-reduce -> update -> checkpoint.
pub mod train;

/// The offline checkpoint sweep and the DAWNBench report.
pub mod eval;

/// The command lines of `trainer` (train, plan, bench, gradcheck) and `eval-sweep`.
pub mod commands;
