//! `<run-dir>/run.json` and `<run-dir>/schedule.yaml`: how a run was made, written by rank 0 at
//! start, so every checkpoint directory says where it came from and eval-sweep can rebuild the
//! same network without the original command line. `<run-dir>/done.json` marks a finished run.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

pub const RUN_INFO: &str = "run.json";
pub const SCHEDULE_COPY: &str = "schedule.yaml";
pub const DONE: &str = "done.json";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunInfo {
    /// The trainer's command line.
    pub command: Vec<String>,
    pub schedule_name: String,
    pub data_root: PathBuf,
    pub world_size: usize,
    pub train_images: u64,
    pub num_classes: u32,
    pub total_steps: u64,
    /// The resolved plan (`trainer plan --json` of this run).
    pub plan: serde_json::Value,
}

/// Written when the trainer's last step is done (and its checkpoint saved).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Done {
    pub final_step: u64,
    pub train_seconds: f64,
}

/// Writes `path` through a temporary name, so a reader never sees half a file.
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    std::fs::write(&tmp, contents).with_context(|| format!("{}: write failed", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("{}: rename to {} failed", tmp.display(), path.display()))
}

pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut text = serde_json::to_vec_pretty(value).expect("plain struct serialises");
    text.push(b'\n');
    write_atomic(path, &text)
}

pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    serde_json::from_slice(&text).with_context(|| format!("{}: not valid", path.display()))
}
