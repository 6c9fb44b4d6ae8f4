//! update -> checkpoint -> eval: the training state on disk in TensorFlow's checkpoint format
//! (the V2 "tensor bundle": `<prefix>.index` + `<prefix>.data-00000-of-00001`), readable by
//! Python's `tf.train.load_checkpoint`. This module knows the files: their names, which are
//! complete, and the order that makes a write atomic. The graph (`model`) runs the SaveV2 /
//! RestoreV2 ops on whatever prefix it is given.
//!
//! A checkpoint of step S lives at the prefix `<dir>/ckpt-S` and holds every state variable under
//! its graph node name (`resnet/stage1/block0/conv1/kernel`, its `.../Momentum` slot, batch-norm
//! `moving_mean`/`moving_variance`) plus the scalars `global_step` (int64), `dawnrun/epoch`
//! (double) and `dawnrun/train_seconds` (double).
//!
//! Atomic write, in this order (so a present `.index` means a complete checkpoint):
//! 1. the graph writes both files under a temporary prefix `<dir>/.ckpt-S.tmp<pid>`;
//! 2. the data file is flushed to disk and renamed to its final name;
//! 3. the index file is flushed and renamed LAST; then the directory is flushed.
//!
//! A crash leaves at worst a temporary prefix or an orphan data file, which [`list`] ignores.

use std::path::{Path, PathBuf};

use dawnrun_records::atomic::{self, AtomicError};

pub use crate::model::CheckpointMeta;
use crate::model::{Checkpointable, ModelError};

/// Checkpoint errors; each names the file or prefix involved.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{}: {what}", .path.display())]
    Io {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: checkpoint is missing or incomplete (no such file)", .path.display())]
    Missing { path: PathBuf },
    #[error("{}: writing checkpoint", .prefix.display())]
    Save {
        prefix: PathBuf,
        #[source]
        source: ModelError,
    },
    #[error("{}: moving checkpoint files into place", .prefix.display())]
    Commit {
        prefix: PathBuf,
        #[source]
        source: AtomicError,
    },
    #[error(
        "{}: checkpoint data file is truncated (shorter than {}.index says)",
        .data.display(), .prefix.display()
    )]
    Truncated {
        prefix: PathBuf,
        data: PathBuf,
        #[source]
        source: ModelError,
    },
    #[error(
        "{}: cannot restore checkpoint (files {}.index and {})",
        .prefix.display(), .prefix.display(), .data.display()
    )]
    Restore {
        prefix: PathBuf,
        data: PathBuf,
        #[source]
        source: ModelError,
    },
}

/// Writes `graph`'s state and `meta` at `<dir>/ckpt-<meta.step>`, atomically (module doc);
/// returns the prefix.
pub fn save(
    graph: &impl Checkpointable,
    dir: &Path,
    meta: &CheckpointMeta,
) -> Result<PathBuf, CheckpointError> {
    std::fs::create_dir_all(dir).map_err(|source| CheckpointError::Io {
        path: dir.to_path_buf(),
        what: "creating checkpoint directory",
        source,
    })?;
    let prefix = prefix_for(dir, meta.step);
    let tmp = dir.join(format!(".ckpt-{}.tmp{}", meta.step, std::process::id()));
    let tmp_stem = format!(".ckpt-{}.tmp", meta.step);
    if let Err(source) = graph.write_bundle(&tmp, meta) {
        remove_temps(dir, |name| name.starts_with(&tmp_stem));
        return Err(CheckpointError::Save {
            prefix: tmp.clone(),
            source,
        });
    }
    // Data first, index last: a visible `.index` means the pair is complete.
    for (from, to) in [
        (data_path(&tmp), data_path(&prefix)),
        (index_path(&tmp), index_path(&prefix)),
    ] {
        if let Err(source) = atomic::commit_rename(&from, &to) {
            // A full disk often shows itself only at the fsync. Nothing of this save stays: its
            // temporary files, and a data file already renamed whose index never followed.
            remove_temps(dir, |name| name.starts_with(&tmp_stem));
            if !index_path(&prefix).exists() {
                let _ = std::fs::remove_file(data_path(&prefix));
            }
            return Err(CheckpointError::Commit { prefix, source });
        }
    }
    Ok(prefix)
}

/// Removes what crashed saves left in `dir`: the temporary `.ckpt-<step>.tmp<pid>*` files of
/// this module and TensorFlow's (6-75 MB each for ResNet-18 and -50). Returns how many. Only
/// the one trainer that holds the run directory's lock may call it.
pub fn remove_stale_temps(dir: &Path) -> usize {
    remove_temps(dir, |name| {
        name.starts_with(".ckpt-") && name.contains(".tmp") || atomic::is_temp_name(name)
    })
}

fn remove_temps(dir: &Path, matches: impl Fn(&str) -> bool) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| e.file_name().to_str().is_some_and(&matches))
        .filter(|e| std::fs::remove_file(e.path()).is_ok())
        .count()
}

/// Restores `graph` from the checkpoint at `prefix`; returns its progress scalars.
pub fn restore(
    graph: &mut impl Checkpointable,
    prefix: &Path,
) -> Result<CheckpointMeta, CheckpointError> {
    for path in [index_path(prefix), data_path(prefix)] {
        if !path.is_file() {
            return Err(CheckpointError::Missing { path });
        }
    }
    graph.read_bundle(prefix).map_err(|source| {
        let (prefix, data) = (prefix.to_path_buf(), data_path(prefix));
        match source {
            ModelError::BundleTruncated { .. } => CheckpointError::Truncated {
                prefix,
                data,
                source,
            },
            _ => CheckpointError::Restore {
                prefix,
                data,
                source,
            },
        }
    })
}

/// `<dir>/ckpt-<step>`.
pub fn prefix_for(dir: &Path, step: u64) -> PathBuf {
    dir.join(format!("ckpt-{step}"))
}

/// `<prefix>.index`.
pub fn index_path(prefix: &Path) -> PathBuf {
    with_suffix(prefix, ".index")
}

/// `<prefix>.data-00000-of-00001` (we always write one shard).
pub fn data_path(prefix: &Path) -> PathBuf {
    with_suffix(prefix, ".data-00000-of-00001")
}

fn with_suffix(prefix: &Path, suffix: &str) -> PathBuf {
    let mut s = prefix.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

/// The step of a file name `ckpt-<step>.index`, if it is one.
fn step_of_index(file_name: &str) -> Option<u64> {
    let step = file_name.strip_prefix("ckpt-")?.strip_suffix(".index")?;
    if step.is_empty() || !step.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    step.parse().ok()
}

/// Complete checkpoints in `dir` (an index file and its data file both present), sorted by
/// step. A missing directory has none.
pub fn list(dir: &Path) -> Result<Vec<(u64, PathBuf)>, CheckpointError> {
    Ok(indexes(dir)?
        .into_iter()
        .filter_map(|(step, prefix, complete)| complete.then_some((step, prefix)))
        .collect())
}

/// Checkpoints in `dir` whose index file has no data file, sorted by step. A save never leaves
/// this state (the data file is renamed into place before the index), so the data was lost
/// afterwards: callers name these rather than pass over them in silence.
pub fn missing_data(dir: &Path) -> Result<Vec<(u64, PathBuf)>, CheckpointError> {
    Ok(indexes(dir)?
        .into_iter()
        .filter_map(|(step, prefix, complete)| (!complete).then_some((step, prefix)))
        .collect())
}

/// Every `ckpt-<step>.index` in `dir` as (step, prefix, whether its data file is there), sorted
/// by step. The data file is looked for when its index is seen, in one pass: a save finishing
/// meanwhile renamed its data before its index, so it never looks incomplete here.
fn indexes(dir: &Path) -> Result<Vec<(u64, PathBuf, bool)>, CheckpointError> {
    let io = |source| CheckpointError::Io {
        path: dir.to_path_buf(),
        what: "listing checkpoints",
        source,
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(io(source)),
    };
    let mut found = Vec::new();
    for entry in entries {
        let name = entry.map_err(io)?.file_name();
        let Some(step) = name.to_str().and_then(step_of_index) else {
            continue;
        };
        let prefix = prefix_for(dir, step);
        let complete = data_path(&prefix).is_file();
        found.push((step, prefix, complete));
    }
    found.sort();
    Ok(found)
}

/// The newest complete checkpoint in `dir`, if any.
pub fn latest_complete(dir: &Path) -> Result<Option<(u64, PathBuf)>, CheckpointError> {
    Ok(list(dir)?.pop())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_of_index_accepts_only_ckpt_step_index() {
        for step in [0u64, 1, 9, 625, 15000, u64::MAX] {
            assert_eq!(step_of_index(&format!("ckpt-{step}.index")), Some(step));
        }
        for bad in [
            "ckpt-.index",
            "ckpt-12.data-00000-of-00001",
            "ckpt-1a.index",
            "ckpt--1.index",
            ".ckpt-3.tmp99.index",
            "ckpt-12.index.tmp",
            "xckpt-1.index",
            "ckpt-99999999999999999999999.index",
        ] {
            assert_eq!(step_of_index(bad), None, "{bad}");
        }
    }

    #[test]
    fn list_ignores_incomplete_and_sorts_numerically() {
        let dir = tempfile::tempdir().unwrap();
        let touch = |name: &str| std::fs::write(dir.path().join(name), b"x").unwrap();
        for step in [10u64, 2, 100] {
            touch(&format!("ckpt-{step}.index"));
            touch(&format!("ckpt-{step}.data-00000-of-00001"));
        }
        touch("ckpt-50.data-00000-of-00001"); // index not yet renamed: incomplete
        touch("ckpt-60.index"); // data missing: damaged
        touch(".ckpt-70.tmp1.index");
        let steps: Vec<u64> = list(dir.path())
            .unwrap()
            .into_iter()
            .map(|(s, _)| s)
            .collect();
        assert_eq!(steps, vec![2, 10, 100]);
        let (step, prefix) = latest_complete(dir.path()).unwrap().unwrap();
        assert_eq!((step, prefix), (100, dir.path().join("ckpt-100")));
        assert!(list(&dir.path().join("absent")).unwrap().is_empty());
        // The index without its data is named apart; the save in progress (data only) is not.
        let lost = missing_data(dir.path()).unwrap();
        assert_eq!(lost, vec![(60, dir.path().join("ckpt-60"))]);
        assert!(missing_data(&dir.path().join("absent")).unwrap().is_empty());
    }

    #[test]
    fn stale_temporaries_are_removed_and_checkpoints_kept() {
        let dir = tempfile::tempdir().unwrap();
        let touch = |name: &str| std::fs::write(dir.path().join(name), b"x").unwrap();
        for name in [
            ".ckpt-5.tmp123.index",
            ".ckpt-5.tmp123.data-00000-of-00001",
            ".ckpt-5.tmp123.data-00000-of-00001.tempstate99",
            "ckpt-4.index",
            "ckpt-4.data-00000-of-00001",
        ] {
            touch(name);
        }
        assert_eq!(remove_stale_temps(dir.path()), 3);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["ckpt-4.data-00000-of-00001", "ckpt-4.index"]);
        assert_eq!(remove_stale_temps(&dir.path().join("absent")), 0);
    }

    #[test]
    fn file_names_follow_the_tensor_bundle_layout() {
        let p = prefix_for(Path::new("/r/checkpoints"), 625);
        assert_eq!(index_path(&p), Path::new("/r/checkpoints/ckpt-625.index"));
        assert_eq!(
            data_path(&p),
            Path::new("/r/checkpoints/ckpt-625.data-00000-of-00001")
        );
    }
}
