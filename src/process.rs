//! Process-level setup shared by the `trainer` and `eval-sweep` binaries.

use anyhow::{Context, Result};
use dawnrun_dist::World;

/// Sets `TF_CPP_MIN_LOG_LEVEL=2` (warnings and errors only) unless the user chose a level.
/// TensorFlow reads it when it first logs, which is after `main` starts for everything but one
/// line printed by a static initializer while the library loads ("oneDNN custom operations are
/// on"); the Makefile exports the variable so that line goes too.
pub fn quiet_tensorflow_logs() {
    if std::env::var_os("TF_CPP_MIN_LOG_LEVEL").is_none() {
        std::env::set_var("TF_CPP_MIN_LOG_LEVEL", "2");
    }
}

/// Initialises MPI (or a world of one without mpirun), installs the abort-on-panic hook and runs
/// `f`. An error on any rank ends the whole job (`World::fail` prints `rank R: error: ...` and
/// calls MPI_Abort), so no rank is left waiting in a collective for one that has given up.
pub fn under_mpi(f: impl FnOnce(&World) -> Result<()>) -> Result<()> {
    let world = World::init().context("MPI")?;
    world.install_abort_on_panic();
    match f(&world) {
        Ok(()) => Ok(()),
        Err(e) => world.fail(&e),
    }
}
