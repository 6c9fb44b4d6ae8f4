//! Process-level setup shared by the `trainer` and `eval-sweep` binaries.

/// Sets `TF_CPP_MIN_LOG_LEVEL=2` (warnings and errors only) unless the user chose a level.
/// TensorFlow reads it when it first logs, which is after `main` starts for everything but one
/// line printed by a static initializer while the library loads ("oneDNN custom operations are
/// on"); the Makefile exports the variable so that line goes too.
pub fn quiet_tensorflow_logs() {
    if std::env::var_os("TF_CPP_MIN_LOG_LEVEL").is_none() {
        std::env::set_var("TF_CPP_MIN_LOG_LEVEL", "2");
    }
}
