//! Facts about a records folder that the trainer needs before it can plan: how many training
//! images (the step count depends on it) and how many classes (the network's last layer).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use dawnrun_records::shards::list_shards;

/// The manifest build-records writes beside its shards.
const MANIFEST: &str = "build-records.json";

/// Every `<prefix>-*-of-*` shard in `dir`, sorted; an error when there are none.
pub fn shard_files(dir: &Path, prefix: &str) -> Result<Vec<PathBuf>> {
    let files = list_shards(dir, prefix)
        .with_context(|| format!("{}: cannot list `{prefix}` shards", dir.display()))?;
    if files.is_empty() {
        bail!(
            "{}: no `{prefix}-NNNNN-of-NNNNN` shards (build them with build-records)",
            dir.display()
        );
    }
    Ok(files)
}

/// Records in the `prefix` shards of `dir` (from `.idx` files when present, else by scanning
/// record headers: a few bytes per record).
pub fn count_images(dir: &Path, prefix: &str) -> Result<u64> {
    let files = shard_files(dir, prefix)?;
    dawnrun_data::pipeline::count_records(&files)
        .with_context(|| format!("{}: counting `{prefix}` records", dir.display()))
}

/// Classes of the records in `dir`: the synset list of build-records' manifest. `None` when
/// the folder has no manifest (records made by another tool).
pub fn num_classes(dir: &Path) -> Result<Option<u32>> {
    let path = dir.join(MANIFEST);
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("{}: cannot read", path.display())),
    };
    let manifest: serde_json::Value = serde_json::from_slice(&text)
        .with_context(|| format!("{}: not a build-records manifest", path.display()))?;
    match manifest["config"]["synsets"].as_array() {
        Some(synsets) if !synsets.is_empty() => Ok(Some(synsets.len() as u32)),
        _ => bail!("{}: no synset list under config.synsets", path.display()),
    }
}
