//! The two facts about the records that a plan needs before training: how many training images
//! (the step count depends on it) and how many classes (the network's last layer). Flags win;
//! otherwise they come from the first phase's records and build-records' manifest.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use dawnrun_records::manifest;
use dawnrun_records::shard_set::{count_records, list_shards};
use dawnrun_schedule::Schedule;

#[derive(Args, Debug, Clone)]
pub struct DataFacts {
    /// Training images per epoch [default: counted from the first phase's records].
    #[arg(long)]
    pub train_images: Option<u64>,
    /// Classes [default: from build-records' manifest beside the records, else 1000].
    #[arg(long)]
    pub num_classes: Option<u32>,
}

/// (training images, classes), from the flags or from the records under `data_root`.
pub fn resolve(schedule: &Schedule, data_root: &Path, given: &DataFacts) -> Result<(u64, u32)> {
    let train_images = match given.train_images {
        Some(n) => n,
        None => count_train_images(schedule, data_root)?,
    };
    let num_classes = match given.num_classes {
        Some(n) => n,
        None => {
            let dir = data_root.join(&first_phase(schedule)?.data_dir);
            match classes_in(&dir)? {
                Some(n) => n,
                None => {
                    say!(
                        "warning: {}: no build-records manifest; assuming 1000 classes (pass --num-classes)",
                        dir.display()
                    );
                    1000
                }
            }
        }
    };
    Ok((train_images, num_classes))
}

/// What can be checked about the records before step 0, for every phase and not only the
/// first (a missing folder for the 224 px phases would otherwise surface an hour into the run):
/// each phase's folder holds a complete shard set; each shard has the size build-records'
/// manifest recorded (a shard cut short at a record boundary passes every CRC and would
/// silently shrink the epoch); every folder's manifest lists the same classes, and so does the
/// evaluation folder's when it is present.
pub fn check_all_phases(schedule: &Schedule, data_root: &Path) -> Result<()> {
    let mut classes: Option<(PathBuf, Vec<String>)> = None;
    let mut dirs: Vec<(PathBuf, &str, bool)> = schedule
        .phases
        .iter()
        .map(|p| (data_root.join(&p.data_dir), p.prefix.as_str(), true))
        .collect();
    let eval_dir = data_root.join(&schedule.eval.data_dir);
    dirs.push((
        eval_dir.clone(),
        schedule.eval.prefix.as_str(),
        eval_dir.is_dir(),
    ));
    for (dir, prefix, required) in dirs {
        if !required {
            continue;
        }
        let (_, Some(m)) = checked_shards(&dir, prefix)? else {
            continue;
        };
        match &classes {
            None => classes = Some((dir.clone(), m.synsets().to_vec())),
            Some((first, synsets)) if synsets.as_slice() != m.synsets() => bail!(
                "{} lists {} classes and {} lists {}, or in another order: every phase must use \
                 records of the same classes",
                first.display(),
                synsets.len(),
                dir.display(),
                m.synsets().len()
            ),
            Some(_) => {}
        }
    }
    Ok(())
}

/// The `prefix` shards in `dir`, a complete set, each of the size build-records' manifest
/// recorded when the folder has one (a shard cut short at a record boundary passes every CRC
/// and would silently shrink an epoch or a validation set); with that manifest.
pub fn checked_shards(
    dir: &Path,
    prefix: &str,
) -> Result<(Vec<PathBuf>, Option<manifest::Manifest>)> {
    let files = list_shards(dir, prefix)?;
    let Some(m) = manifest::read_in(dir)? else {
        return Ok((files, None));
    };
    for file in &files {
        let name = file.file_name().map(|n| n.to_string_lossy().into_owned());
        let Some(want) = name.as_deref().and_then(|n| m.shard_bytes(n)) else {
            continue;
        };
        let have = std::fs::metadata(file)
            .with_context(|| format!("{}: cannot read its size", file.display()))?
            .len();
        if have != want {
            bail!(
                "{}: {have} bytes, but build-records wrote {want} (manifest {}): the shard was \
                 cut short or changed; rebuild it with build-records",
                file.display(),
                dir.join(manifest::MANIFEST_FILE).display()
            );
        }
    }
    Ok((files, Some(m)))
}

/// Records in the first phase's training shards.
pub fn count_train_images(schedule: &Schedule, data_root: &Path) -> Result<u64> {
    let first = first_phase(schedule)?;
    let dir = data_root.join(&first.data_dir);
    let files = list_shards(&dir, &first.prefix)?;
    count_records(&files)
        .with_context(|| format!("{}: counting `{}` records", dir.display(), first.prefix))
}

/// Classes of the records in `dir`: the synset list of build-records' manifest; `None` when the
/// folder has no manifest (records made by another tool).
pub fn classes_in(dir: &Path) -> Result<Option<u32>> {
    manifest::read_in(dir)?
        .map(|m| class_count(dir, &m))
        .transpose()
}

/// Classes listed by `m`, the manifest of the records in `dir`.
pub fn class_count(dir: &Path, m: &manifest::Manifest) -> Result<u32> {
    if m.synsets().is_empty() {
        bail!(
            "{}: the build-records manifest lists no synsets",
            dir.display()
        );
    }
    Ok(m.synsets().len() as u32)
}

fn first_phase(schedule: &Schedule) -> Result<&dawnrun_schedule::Phase> {
    schedule
        .phases
        .first()
        .context("the schedule has no phases")
}
