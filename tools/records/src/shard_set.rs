//! A set of shard files: names `<prefix>-<index>-of-<count>`, e.g. `train-00000-of-01024`, as
//! `build_imagenet_data.py` names them; finding a complete, consistent set in a folder
//! ([`list_shards`]); counting its records ([`count_records`]). build-records writes these
//! names; the input pipeline and the trainer find and size the set before reading anything.

use std::path::{Path, PathBuf};

use crate::framing::{self, FramingError};
use crate::index::{default_index_path, RecordIndex};

/// Errors finding shards; each names the directory and prefix.
#[derive(Debug, thiserror::Error)]
pub enum ShardSetError {
    #[error("{}: cannot list shards", .dir.display())]
    ReadDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: no shards named {prefix}-NNNNN-of-NNNNN", .dir.display())]
    NoShards { dir: PathBuf, prefix: String },
    #[error(
        "{}: shards {prefix}-*-of-* disagree on the count ({counts:?}): shards from different runs are mixed",
        .dir.display()
    )]
    CountsDisagree {
        dir: PathBuf,
        prefix: String,
        counts: Vec<usize>,
    },
    #[error(
        "{}: {} of {count} shards missing, first: {first_missing}",
        .dir.display(), .missing
    )]
    Incomplete {
        dir: PathBuf,
        count: usize,
        missing: usize,
        first_missing: String,
    },
}

/// A parsed shard file name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardName {
    pub prefix: String,
    /// 0-based shard number, `< count`.
    pub index: usize,
    pub count: usize,
}

/// `shard_name("train", 0, 1024) == "train-00000-of-01024"`: index and count zero-padded to 5
/// digits, or to the count's width when it has more, so names sort in index order.
pub fn shard_name(prefix: &str, index: usize, count: usize) -> String {
    let width = count.to_string().len().max(5);
    format!("{prefix}-{index:0width$}-of-{count:05}")
}

/// Parses `<prefix>-<index>-of-<count>` (both numbers at least 5 digits, `index < count`).
/// `None` for anything else, e.g. `train-00000-of-01024.idx` or `.tmp` files.
pub fn parse_shard_name(name: &str) -> Option<ShardName> {
    let (head, count) = name.rsplit_once("-of-")?;
    let (prefix, index) = head.rsplit_once('-')?;
    let number = |s: &str| -> Option<usize> {
        if s.len() < 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    let (index, count) = (number(index)?, number(count)?);
    if prefix.is_empty() || index >= count {
        return None;
    }
    Some(ShardName {
        prefix: prefix.to_owned(),
        index,
        count,
    })
}

/// True for names that are work in progress, never shards: `*.tmp` and dot files (which
/// includes every [`crate::atomic`] temporary, `.<name>.<random>.tmp`).
fn is_temporary(name: &str) -> bool {
    name.starts_with('.') || name.ends_with(".tmp")
}

/// All shards `<prefix>-*-of-<count>` in `dir`, sorted by index. Errors if the directory cannot
/// be read, holds none, mixes counts, or lacks any index below the count. Ignores temporary
/// files and files of other prefixes.
pub fn list_shards(dir: impl AsRef<Path>, prefix: &str) -> Result<Vec<PathBuf>, ShardSetError> {
    let dir = dir.as_ref();
    let read_dir_err = |source| ShardSetError::ReadDir {
        dir: dir.to_path_buf(),
        source,
    };
    let mut found: Vec<(ShardName, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_dir_err)? {
        let entry = entry.map_err(read_dir_err)?;
        let file_name = entry.file_name();
        let Some(name) = file_name.to_str() else {
            continue;
        };
        if is_temporary(name) {
            continue;
        }
        match parse_shard_name(name) {
            Some(shard) if shard.prefix == prefix => found.push((shard, entry.path())),
            _ => {}
        }
    }
    if found.is_empty() {
        return Err(ShardSetError::NoShards {
            dir: dir.to_path_buf(),
            prefix: prefix.to_owned(),
        });
    }
    let mut counts: Vec<usize> = found.iter().map(|(s, _)| s.count).collect();
    counts.sort_unstable();
    counts.dedup();
    if counts.len() > 1 {
        return Err(ShardSetError::CountsDisagree {
            dir: dir.to_path_buf(),
            prefix: prefix.to_owned(),
            counts,
        });
    }
    let count = counts[0];
    found.sort_by_key(|(s, _)| s.index);
    let mut present = vec![false; count];
    for (s, _) in &found {
        present[s.index] = true;
    }
    let missing: Vec<usize> = (0..count).filter(|&i| !present[i]).collect();
    if let Some(&first) = missing.first() {
        return Err(ShardSetError::Incomplete {
            dir: dir.to_path_buf(),
            count,
            missing: missing.len(),
            first_missing: shard_name(prefix, first, count),
        });
    }
    Ok(found.into_iter().map(|(_, p)| p).collect())
}

/// Records in `files`, from each file's `.idx` index ([`default_index_path`]) when present and
/// current, else by scanning record headers (a few bytes per record, no data read).
pub fn count_records(files: &[PathBuf]) -> Result<u64, FramingError> {
    let mut total = 0;
    for file in files {
        total += match RecordIndex::load(default_index_path(file), file) {
            Ok(index) => index.len() as u64,
            Err(_) => framing::count_records(file)?,
        };
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(shard_name("train", 0, 1024), "train-00000-of-01024");
        assert_eq!(
            shard_name("validation", 127, 128),
            "validation-00127-of-00128"
        );
        assert_eq!(shard_name("x", 5, 123_456), "x-000005-of-123456");
        for prefix in ["train", "validation", "my-data", "a"] {
            for count in [1, 2, 4, 128, 1024, 99_999, 100_000] {
                for index in [0, count / 2, count - 1] {
                    let name = shard_name(prefix, index, count);
                    assert_eq!(
                        parse_shard_name(&name),
                        Some(ShardName {
                            prefix: prefix.into(),
                            index,
                            count
                        }),
                        "{name}"
                    );
                }
            }
        }
    }

    #[test]
    fn parse_rejects_non_shards() {
        for name in [
            "train-00000-of-01024.idx",
            "train-00000-of-01024.tmp",
            "train-0000-of-01024",
            "train-01024-of-01024",
            "-00000-of-00001",
            "train-00000-of-0000x",
            "train",
            "README",
        ] {
            assert_eq!(parse_shard_name(name), None, "{name}");
        }
    }

    fn touch(dir: &Path, names: &[&str]) {
        for n in names {
            std::fs::write(dir.join(n), b"").unwrap();
        }
    }

    #[test]
    fn lists_sorted_ignoring_temps_and_other_prefixes() {
        let dir = tempfile::tempdir().unwrap();
        let names: Vec<String> = (0..4).rev().map(|i| shard_name("train", i, 4)).collect();
        touch(
            dir.path(),
            &names.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        touch(
            dir.path(),
            &[
                ".train-00000-of-00008",
                "train-00001-of-00008.tmp",
                "train-00000-of-00004.idx",
                "validation-00000-of-00002",
            ],
        );
        let list = list_shards(dir.path(), "train").unwrap();
        let got: Vec<String> = list
            .iter()
            .map(|p| p.file_name().unwrap().to_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            got,
            (0..4)
                .map(|i| shard_name("train", i, 4))
                .collect::<Vec<_>>()
        );
        // validation is incomplete (only 0 of 2).
        let err = list_shards(dir.path(), "validation").unwrap_err();
        assert!(
            matches!(err, ShardSetError::Incomplete { missing: 1, .. }),
            "{err}"
        );
        assert!(
            err.to_string().contains("validation-00001-of-00002"),
            "{err}"
        );
    }

    #[test]
    fn mixed_counts_and_missing_dir_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        touch(
            dir.path(),
            &["train-00000-of-00004", "train-00000-of-00008"],
        );
        let err = list_shards(dir.path(), "train").unwrap_err();
        assert!(
            matches!(&err, ShardSetError::CountsDisagree { counts, .. } if counts == &[4, 8]),
            "{err}"
        );
        let err = list_shards(dir.path(), "validation").unwrap_err();
        assert!(matches!(err, ShardSetError::NoShards { .. }), "{err}");
        let err = list_shards(dir.path().join("nope"), "train").unwrap_err();
        assert!(matches!(err, ShardSetError::ReadDir { .. }));
        assert!(err.to_string().contains("nope"));
    }

    #[test]
    fn counts_records_with_and_without_an_index() {
        let dir = tempfile::tempdir().unwrap();
        let files: Vec<PathBuf> = (0..3)
            .map(|i| dir.path().join(shard_name("train", i, 3)))
            .collect();
        for (i, file) in files.iter().enumerate() {
            let mut w = crate::RecordWriter::create(file).unwrap();
            for r in 0..(i + 2) {
                w.write(&[r as u8; 10]).unwrap();
            }
            w.finish().unwrap();
        }
        assert_eq!(count_records(&files).unwrap(), 2 + 3 + 4);
        RecordIndex::build(&files[1])
            .unwrap()
            .save(default_index_path(&files[1]))
            .unwrap();
        assert_eq!(count_records(&files).unwrap(), 2 + 3 + 4);
        let err = count_records(&[dir.path().join("missing")]).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
    }
}
