//! `build-records.json`: how the shards in a folder were made, and which are complete.
//!
//! build-records writes it into its output folder before the first shard and rewrites it
//! (atomically, [`crate::atomic::write`]) as shards complete, so after a kill it lists every
//! shard that was finished before the last rewrite. A rerun keeps a shard only if the manifest
//! lists it AND the file has the listed size AND a full read (both CRCs of every record) finds
//! the listed record count; anything else is rewritten. A manifest whose configuration differs
//! from the current one means the folder holds another build: refused unless `--force`.
//!
//! The configuration holds only what changes shard bytes (seed, splits, shard counts, the label
//! list, texts, boxes and a digest of the input file list); not the input path or thread count,
//! so a moved input tree or another machine resumes the same build.
//!
//! Readers other than build-records (the trainer) use [`read_in`] and the typed getters, e.g.
//! [`Manifest::synsets`] for the class list.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use crate::atomic::{self, AtomicError};

/// File name of the manifest inside a records folder.
pub const MANIFEST_FILE: &str = "build-records.json";

/// Bumped when the meaning of any field or the record contents change.
pub const FORMAT_VERSION: u32 = 1;

/// Errors reading and writing the manifest; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{}: cannot read", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not a build-records manifest", .path.display())]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error(transparent)]
    Write(#[from] AtomicError),
}

/// One split's part of the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitConfig {
    pub name: String,
    pub shards: usize,
    /// Input files listed (before skips).
    pub files: usize,
    /// FNV-1a 64 (hex) over every listed `<synset>/<file>` and its size, in listing order.
    pub inputs_digest: String,
}

/// Everything that determines the shard bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    pub format_version: u32,
    pub seed: u64,
    pub splits: Vec<SplitConfig>,
    /// Label order: label = position + 1.
    pub synsets: Vec<String>,
    /// FNV-1a 64 (hex) of the synset texts and boxes used ("none" when not given).
    pub metadata_digest: String,
    pub bboxes_digest: String,
}

impl Config {
    /// A one-line description of the first field that differs, for the refusal message.
    pub fn first_difference(&self, other: &Config) -> Option<String> {
        let here_there =
            |what: &str, a: String, b: String| Some(format!("{what}: {a} there, {b} here"));
        if self.format_version != other.format_version {
            return here_there(
                "format version",
                self.format_version.to_string(),
                other.format_version.to_string(),
            );
        }
        if self.seed != other.seed {
            return here_there("seed", self.seed.to_string(), other.seed.to_string());
        }
        let names = |c: &Config| {
            c.splits
                .iter()
                .map(|s| s.name.clone())
                .collect::<Vec<_>>()
                .join(",")
        };
        if names(self) != names(other) {
            return here_there("splits", names(self), names(other));
        }
        for (a, b) in self.splits.iter().zip(&other.splits) {
            if a.shards != b.shards {
                return here_there(
                    &format!("{} shards", a.name),
                    a.shards.to_string(),
                    b.shards.to_string(),
                );
            }
            if a.files != b.files || a.inputs_digest != b.inputs_digest {
                return here_there(
                    &format!("{} input files", a.name),
                    format!("{} (digest {})", a.files, a.inputs_digest),
                    format!("{} (digest {})", b.files, b.inputs_digest),
                );
            }
        }
        if self.synsets != other.synsets {
            return here_there(
                "synset list",
                format!("{} synsets", self.synsets.len()),
                format!("{} synsets (or another order)", other.synsets.len()),
            );
        }
        if self.metadata_digest != other.metadata_digest {
            return here_there(
                "metadata",
                self.metadata_digest.clone(),
                other.metadata_digest.clone(),
            );
        }
        if self.bboxes_digest != other.bboxes_digest {
            return here_there(
                "bounding boxes",
                self.bboxes_digest.clone(),
                other.bboxes_digest.clone(),
            );
        }
        None
    }
}

/// A file named in a shard's notes: `<split>/<synset>/<file>` and what happened to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Note {
    pub file: String,
    pub reason: String,
}

/// A completed shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardEntry {
    pub records: u64,
    pub bytes: u64,
    /// Files converted to RGB JPEG (PNG content, CMYK JPEGs).
    pub reencoded: Vec<Note>,
    /// Files not stored, with why.
    pub skipped: Vec<Note>,
}

/// The whole file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// `"build-records <version>"`.
    pub tool: String,
    /// Informational: where the input was read last.
    pub input: String,
    pub config: Config,
    /// Completed shards by file name.
    pub shards: BTreeMap<String, ShardEntry>,
}

impl Manifest {
    /// The label order: label = position + 1, so the class count is the length.
    pub fn synsets(&self) -> &[String] {
        &self.config.synsets
    }

    /// The entry of the completed shard with this file name (e.g. `train-00000-of-01024`).
    pub fn shard(&self, file_name: &str) -> Option<&ShardEntry> {
        self.shards.get(file_name)
    }

    /// The byte size the completed shard with this file name has, `None` when not listed.
    pub fn shard_bytes(&self, file_name: &str) -> Option<u64> {
        self.shard(file_name).map(|entry| entry.bytes)
    }
}

/// Reads `path`; `Ok(None)` when it does not exist.
pub fn load(path: &Path) -> Result<Option<Manifest>, ManifestError> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(ManifestError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|source| ManifestError::Json {
            path: path.to_path_buf(),
            source,
        })
}

/// Reads `dir/build-records.json`; `Ok(None)` when the folder has none.
pub fn read_in(dir: &Path) -> Result<Option<Manifest>, ManifestError> {
    load(&dir.join(MANIFEST_FILE))
}

/// Writes `manifest` to `path` atomically ([`atomic::write`]), as pretty JSON with a final
/// newline.
pub fn save(path: &Path, manifest: &Manifest) -> Result<(), ManifestError> {
    let mut text = serde_json::to_string_pretty(manifest).expect("manifest types always serialize");
    text.push('\n');
    Ok(atomic::write(path, text.as_bytes())?)
}

/// FNV-1a 64 as 16 hex digits: a stable digest (unlike std's hasher) for change detection.
pub fn digest<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> String {
    let mut h = 0xcbf2_9ce4_8422_2325_u64;
    for part in parts {
        for &b in part {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        // Separator, so ["ab", "c"] and ["a", "bc"] differ.
        h = (h ^ 0xff).wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config {
            format_version: FORMAT_VERSION,
            seed: 1,
            splits: vec![SplitConfig {
                name: "train".into(),
                shards: 4,
                files: 10,
                inputs_digest: "ab".into(),
            }],
            synsets: vec!["n1".into()],
            metadata_digest: "none".into(),
            bboxes_digest: "none".into(),
        }
    }

    #[test]
    fn round_trips_and_names_the_first_difference() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(MANIFEST_FILE);
        assert!(load(&path).unwrap().is_none());
        let mut m = Manifest {
            tool: "t".into(),
            input: "in".into(),
            config: config(),
            shards: BTreeMap::new(),
        };
        m.shards.insert(
            "train-00000-of-00004".into(),
            ShardEntry {
                records: 3,
                bytes: 99,
                reencoded: vec![],
                skipped: vec![],
            },
        );
        save(&path, &m).unwrap();
        assert_eq!(load(&path).unwrap().unwrap(), m);
        let read = read_in(dir.path()).unwrap().unwrap();
        assert_eq!(read.synsets(), ["n1"]);
        assert_eq!(read.shard_bytes("train-00000-of-00004"), Some(99));
        assert_eq!(read.shard_bytes("train-00001-of-00004"), None);
        assert!(read_in(&dir.path().join("elsewhere")).unwrap().is_none());
        // Only the manifest: the temporary of the atomic write is gone.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);

        assert_eq!(config().first_difference(&config()), None);
        let mut other = config();
        other.splits[0].shards = 8;
        assert_eq!(
            config().first_difference(&other).unwrap(),
            "train shards: 4 there, 8 here"
        );
        other = config();
        other.seed = 2;
        assert!(config()
            .first_difference(&other)
            .unwrap()
            .starts_with("seed"));
    }

    #[test]
    fn garbage_manifest_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(MANIFEST_FILE);
        fs::write(&path, "{not json").unwrap();
        assert!(load(&path).unwrap_err().to_string().contains(MANIFEST_FILE));
    }

    #[test]
    fn digest_separates_parts() {
        assert_ne!(digest([&b"ab"[..], b"c"]), digest([&b"a"[..], b"bc"]));
        assert_eq!(digest([&b"x"[..]]), digest([&b"x"[..]]));
    }
}
