//! The run directory, `runs/<name>/` by default: the one place that spells the names of what a
//! run leaves behind. The trainer (rank 0) writes it, eval-sweep reads it and adds its report;
//! every other module asks a [`RunDir`] for a path instead of joining a file name itself.
//!
//! ```text
//! runs/<name>/
//!   trainer.lock                     held by the one trainer writing here (LockHolder inside)
//!   eval.lock                        held by the one eval-sweep writing its report here
//!   run.json  schedule.yaml          how the run was made (RunInfo, the schedule as given)
//!   checkpoints/ckpt-<step>.*        TensorFlow checkpoints (names owned by `checkpoint`)
//!   metrics.jsonl  events.out.tfevents.*   the step log and its TensorBoard copy
//!   done.json                        written after the last step (Done)
//!   eval/ckpt-<step>.json            eval-sweep's per-checkpoint cache
//!   eval.tsv  eval.jsonl  eval.png   eval-sweep's report
//! ```
//! Every file is written whole or not at all (`dawnrun_records::atomic`), except the two logs,
//! which are appended to line by line.

use std::path::{Path, PathBuf};

use std::io::{Read, Seek, SeekFrom, Write};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// Paths under one run directory. Cheap to clone; owns no handle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunDir {
    root: PathBuf,
}

impl RunDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        RunDir { root: root.into() }
    }

    /// The default for a schedule named `name`: `runs/<name>`.
    pub fn for_schedule(name: &str) -> Self {
        RunDir::new(Path::new("runs").join(name))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The lock file of `role`: `trainer.lock` or `eval.lock`.
    pub fn lock_file(&self, role: Role) -> PathBuf {
        self.root.join(role.lock_name())
    }

    /// Takes the run directory for one process of `role`: an advisory lock on its lock file that
    /// the OS releases when the process ends however it ends (kill -9 leaves no stale lock). A
    /// second one is refused at once with the holder's host, PID and start time. The roles do
    /// not exclude each other: eval-sweep `--watch` runs beside the trainer.
    pub fn lock(&self, role: Role, holder: &LockHolder) -> Result<RunLock> {
        let path = self.lock_file(role);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("{}: cannot open", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                let who = serde_json::from_str::<LockHolder>(&text)
                    .map_or_else(|_| "another process".to_string(), |h| h.describe(role));
                bail!(
                    "{} is in use by {who}; {}",
                    self.root.display(),
                    role.advice()
                );
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("{}: cannot lock", path.display()))
            }
        }
        let mut text = serde_json::to_vec_pretty(holder).context("serialising the lock holder")?;
        text.push(b'\n');
        file.set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)).map(|_| ()))
            .and_then(|()| file.write_all(&text))
            .and_then(|()| file.sync_all())
            .with_context(|| format!("{}: cannot write", path.display()))?;
        Ok(RunLock { _file: file })
    }

    /// `run.json`: the command line, world size, data facts and the resolved plan.
    pub fn run_info(&self) -> PathBuf {
        self.root.join("run.json")
    }

    /// `schedule.yaml`: the schedule exactly as the trainer read it.
    pub fn schedule_copy(&self) -> PathBuf {
        self.root.join("schedule.yaml")
    }

    /// `done.json`: present once the last step's checkpoint is written.
    pub fn done(&self) -> PathBuf {
        self.root.join("done.json")
    }

    /// `checkpoints/`: the folder of TensorFlow checkpoints.
    pub fn checkpoints(&self) -> PathBuf {
        self.root.join("checkpoints")
    }

    /// `metrics.jsonl`: one JSON object per logged step.
    pub fn metrics(&self) -> PathBuf {
        self.root.join("metrics.jsonl")
    }

    /// The folder TensorBoard reads `events.out.tfevents.*` from (the run directory itself).
    pub fn events_dir(&self) -> &Path {
        &self.root
    }

    /// `eval/`: eval-sweep's cache, one file per evaluated checkpoint.
    pub fn eval_cache_dir(&self) -> PathBuf {
        self.root.join("eval")
    }

    /// `eval/ckpt-<step>.json`.
    pub fn eval_cache(&self, step: u64) -> PathBuf {
        self.eval_cache_dir().join(format!("ckpt-{step}.json"))
    }

    /// `eval.tsv`: DAWNBench's table.
    pub fn eval_table(&self) -> PathBuf {
        self.root.join("eval.tsv")
    }

    /// `eval.jsonl`: one result per checkpoint.
    pub fn eval_results(&self) -> PathBuf {
        self.root.join("eval.jsonl")
    }

    /// `eval.png`: accuracy against training hours.
    pub fn eval_plot(&self) -> PathBuf {
        self.root.join("eval.png")
    }
}

/// `run.json`: how a run was made, written by rank 0 at start, so eval-sweep can rebuild the
/// same network without the original command line.
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

/// What holds a run directory's lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The trainer writing checkpoints and logs.
    Trainer,
    /// The eval-sweep writing the report (and the cache).
    Sweep,
}

impl Role {
    /// Its lock file's name in the run directory.
    fn lock_name(self) -> &'static str {
        match self {
            Role::Trainer => "trainer.lock",
            Role::Sweep => "eval.lock",
        }
    }

    /// What holds the lock, for the refusal message.
    fn holder(self) -> &'static str {
        match self {
            Role::Trainer => "a trainer",
            Role::Sweep => "an eval-sweep",
        }
    }

    /// What a second one should do instead.
    fn advice(self) -> &'static str {
        match self {
            Role::Trainer => {
                "one trainer per run directory: wait for it, stop it, or choose another --run-dir"
            }
            Role::Sweep => {
                "one eval-sweep per run directory, so that reports do not mix: wait for it or \
                 stop it"
            }
        }
    }
}

/// Who holds a run directory: what its lock file says, for the message a second one gets.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LockHolder {
    pub host: String,
    pub pid: u32,
    /// Seconds since the Unix epoch.
    pub started_unix_s: u64,
    pub command: Vec<String>,
}

impl LockHolder {
    /// This process, now.
    pub fn this_process(host: &str) -> Self {
        LockHolder {
            host: host.to_string(),
            pid: std::process::id(),
            started_unix_s: unix_now(),
            command: std::env::args().collect(),
        }
    }

    fn describe(&self, role: Role) -> String {
        let ago = unix_now().saturating_sub(self.started_unix_s);
        format!(
            "{} (PID {} on host {}, started {ago} s ago at Unix time {}: `{}`)",
            role.holder(),
            self.pid,
            self.host,
            self.started_unix_s,
            self.command.join(" ")
        )
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The held lock of a run directory; released when dropped or when the process ends.
#[derive(Debug)]
pub struct RunLock {
    _file: std::fs::File,
}

/// `done.json`: the trainer's last step is done and its checkpoint saved.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Done {
    pub final_step: u64,
    /// The plan's steps: more than `final_step` when `--max-steps` ended the run early (a
    /// `--resume` continues it), so the file alone says whether the run is complete.
    #[serde(default)]
    pub planned_steps: u64,
    pub train_seconds: f64,
    /// Images skipped as undecodable by this trainer process (since its start or resume), summed
    /// over all ranks.
    #[serde(default)]
    pub skipped_images: u64,
}

/// Writes `value` as pretty JSON, whole or not at all.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut text = serde_json::to_vec_pretty(value).context("serialising JSON")?;
    text.push(b'\n');
    write_file(path, &text)
}

/// Writes `bytes` to `path` through a temporary name (never a half-written file).
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    Ok(dawnrun_records::atomic::write(path, bytes)?)
}

/// Files that belong together, replaced as a set (see `atomic::write_set`).
pub fn write_files(files: &[(&Path, &[u8])]) -> Result<()> {
    Ok(dawnrun_records::atomic::write_set(files)?)
}

pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    serde_json::from_slice(&text).with_context(|| format!("{}: not valid", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_lies_under_the_root_with_its_documented_name() {
        let d = RunDir::new("/r/x");
        assert_eq!(d.run_info(), Path::new("/r/x/run.json"));
        assert_eq!(d.schedule_copy(), Path::new("/r/x/schedule.yaml"));
        assert_eq!(d.done(), Path::new("/r/x/done.json"));
        assert_eq!(d.checkpoints(), Path::new("/r/x/checkpoints"));
        assert_eq!(d.metrics(), Path::new("/r/x/metrics.jsonl"));
        assert_eq!(d.events_dir(), Path::new("/r/x"));
        assert_eq!(d.eval_cache(625), Path::new("/r/x/eval/ckpt-625.json"));
        assert_eq!(d.eval_table(), Path::new("/r/x/eval.tsv"));
        assert_eq!(d.eval_results(), Path::new("/r/x/eval.jsonl"));
        assert_eq!(d.eval_plot(), Path::new("/r/x/eval.png"));
        assert_eq!(RunDir::for_schedule("demo").root(), Path::new("runs/demo"));
    }

    #[test]
    fn a_second_lock_is_refused_naming_the_holder_and_freed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let d = RunDir::new(dir.path());
        let take = |role, host| d.lock(role, &LockHolder::this_process(host));
        let refusal = |role| format!("{:#}", take(role, "hostB").unwrap_err());
        let first = take(Role::Trainer, "hostA").unwrap();
        let err = refusal(Role::Trainer);
        assert!(err.contains("in use by a trainer"), "{err}");
        assert!(
            err.contains(&format!("PID {}", std::process::id())),
            "{err}"
        );
        assert!(err.contains("host hostA"), "{err}");
        // A sweep beside the trainer is fine; a second sweep is not.
        let sweep = take(Role::Sweep, "hostA").unwrap();
        let err = refusal(Role::Sweep);
        assert!(err.contains("in use by an eval-sweep"), "{err}");
        drop((first, sweep));
        let _again = take(Role::Trainer, "hostB").unwrap();
    }

    #[test]
    fn json_round_trips_through_the_atomic_writer() {
        let dir = tempfile::tempdir().unwrap();
        let d = RunDir::new(dir.path());
        let done = Done {
            final_step: 7,
            planned_steps: 9,
            train_seconds: 1.5,
            skipped_images: 2,
        };
        write_json(&d.done(), &done).unwrap();
        let back: Done = read_json(&d.done()).unwrap();
        assert_eq!(
            (back.final_step, back.planned_steps, back.train_seconds),
            (7, 9, 1.5)
        );
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("done.json")]);
    }
}
