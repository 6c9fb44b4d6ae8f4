//! update -> checkpoint -> eval: the training state in TensorFlow's checkpoint format (the V2
//! "tensor bundle": `<prefix>.index` + `<prefix>.data-00000-of-00001`), readable by Python's
//! `tf.train.load_checkpoint`.
//!
//! A checkpoint of step S lives at the prefix `<dir>/ckpt-S` and holds every state variable under
//! its graph node name (`resnet/stage1/block0/conv1/kernel`, its `.../Momentum` slot, batch-norm
//! `moving_mean`/`moving_variance`) plus the scalars `global_step` (int64), `dawnrun/epoch`
//! (double) and `dawnrun/train_seconds` (double).
//!
//! Atomic write, in this order (so a present `.index` means a complete checkpoint):
//! 1. SaveV2 writes both files under a temporary prefix `<dir>/.ckpt-S.tmp<pid>`;
//! 2. the data file is flushed to disk and renamed to its final name;
//! 3. the index file is flushed and renamed LAST; then the directory is flushed.
//!
//! A crash leaves at worst a temporary prefix or an orphan data file, which [`list`] ignores.
//! The SaveV2/RestoreV2 ops (`saver.rs`) live under the node scope `checkpoint/`, never `save`
//! (the crate's `CheckpointMaker` and `SavedModelBuilder` both claim that name).
mod saver;

pub(crate) use saver::Saver;

use std::path::{Path, PathBuf};

/// Training progress stored beside the variables.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CheckpointMeta {
    /// Global 0-based optimizer step count at save time (the number of applied steps).
    pub step: u64,
    /// Fractional epoch at save time.
    pub epoch: f64,
    /// Training wall-clock seconds so far (excluding evaluation and start-up).
    pub train_seconds: f64,
}

/// Checkpoint errors; each names the file or prefix involved.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {what}: {source}", .path.display())]
    Io {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: checkpoint is missing or incomplete (no such file)", .path.display())]
    Missing { path: PathBuf },
    #[error("{}: writing checkpoint: {source}", .prefix.display())]
    Save {
        prefix: PathBuf,
        #[source]
        source: tensorflow::Status,
    },
    #[error(
        "{}: checkpoint data file is truncated (shorter than {}.index says): {source}",
        .data.display(), .prefix.display()
    )]
    Truncated {
        prefix: PathBuf,
        data: PathBuf,
        #[source]
        source: tensorflow::Status,
    },
    #[error(
        "{}: cannot restore checkpoint (files {}.index and {}): {source}",
        .prefix.display(), .prefix.display(), .data.display()
    )]
    Restore {
        prefix: PathBuf,
        data: PathBuf,
        #[source]
        source: tensorflow::Status,
    },
    #[error("{}: checkpoint path is not valid UTF-8", .path.display())]
    NotUtf8 { path: PathBuf },
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
pub fn list(dir: &Path) -> Result<Vec<(u64, PathBuf)>, Error> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(Error::Io {
                path: dir.to_path_buf(),
                what: "listing checkpoints",
                source,
            })
        }
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| Error::Io {
            path: dir.to_path_buf(),
            what: "listing checkpoints",
            source,
        })?;
        let name = entry.file_name();
        let Some(step) = name.to_str().and_then(step_of_index) else {
            continue;
        };
        let prefix = prefix_for(dir, step);
        if data_path(&prefix).is_file() {
            found.push((step, prefix));
        }
    }
    found.sort();
    Ok(found)
}

/// The newest complete checkpoint in `dir`, if any.
pub fn latest_complete(dir: &Path) -> Result<Option<(u64, PathBuf)>, Error> {
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
