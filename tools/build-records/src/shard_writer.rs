//! One shard: read its files, turn each into a tf.Example, write them under a temporary name,
//! rename when complete; and the check that decides whether an existing shard is kept.
//!
//! Protocol for one shard (the rename is the commit point), through
//! [`RecordWriter::create_atomic`] and so [`dawnrun_records::atomic`]:
//! 1. create a temporary `.<name>.<random>.tmp` beside `<name>`;
//! 2. append one record per stored file, in the shard's assigned order;
//! 3. flush and fsync, rename the temporary to `<name>`, fsync the folder;
//! 4. on any error the temporary is removed and the error reported; `<name>` is never a partial
//!    file. A temporary left by a killed run is removed by the next run before it writes.

use crate::inputs::InputFile;
use crate::jpeg::{prepare, Prepared};
use crate::progress::Progress;
use anyhow::{Context, Result};
use dawnrun_records::manifest::{Note, ShardEntry};
use dawnrun_records::{BBox, ImageRecord, RecordReader, RecordWriter};
use std::collections::HashMap;
use std::fs;
use std::path::Path;

/// What every shard needs besides its own files.
pub struct Labelling {
    /// synset -> 1-based label.
    pub labels: HashMap<String, i64>,
    /// synset -> human text ("" when unknown).
    pub texts: HashMap<String, String>,
    /// file base name -> boxes.
    pub bboxes: HashMap<String, Vec<BBox>>,
}

/// One shard to write: its file name and its files in record order.
pub struct ShardJob<'a> {
    pub split: &'a str,
    pub name: String,
    pub files: Vec<&'a InputFile>,
}

/// Writes `job` into `out_dir` following the module's protocol; returns its manifest entry.
pub fn write_shard(
    job: &ShardJob,
    labelling: &Labelling,
    out_dir: &Path,
    progress: &Progress,
) -> Result<ShardEntry> {
    let mut writer = RecordWriter::create_atomic(out_dir.join(&job.name))?;
    let mut entry = ShardEntry {
        records: 0,
        bytes: 0,
        reencoded: Vec::new(),
        skipped: Vec::new(),
    };
    for file in &job.files {
        let bytes =
            fs::read(&file.path).with_context(|| format!("reading {}", file.path.display()))?;
        let note = |reason: String| Note {
            file: format!("{}/{}", job.split, file.rel),
            reason,
        };
        match prepare(bytes) {
            Prepared::Skip(reason) => entry.skipped.push(note(reason)),
            Prepared::Ready {
                encoded,
                width,
                height,
                reencoded_from,
            } => {
                if let Some(what) = reencoded_from {
                    entry.reencoded.push(note(what));
                }
                let filename = file
                    .path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let record = ImageRecord {
                    encoded,
                    height: i64::from(height),
                    width: i64::from(width),
                    label: *labelling
                        .labels
                        .get(&file.synset)
                        .expect("label_order checked every listed synset has a label"),
                    synset: file.synset.clone(),
                    text: labelling
                        .texts
                        .get(&file.synset)
                        .cloned()
                        .unwrap_or_default(),
                    bboxes: labelling.bboxes.get(&filename).cloned().unwrap_or_default(),
                    filename,
                };
                writer.write(&record.to_bytes())?;
                entry.records += 1;
            }
        }
        progress.inc(1, file.size_bytes);
    }
    entry.bytes = writer.finish()?;
    Ok(entry)
}

/// Why an existing shard cannot be kept, or `Ok` when it matches `entry` completely: the size
/// agrees and a full read (both CRCs of every record) finds exactly `entry.records` records.
pub fn verify_shard(path: &Path, entry: &ShardEntry) -> Result<(), String> {
    let size = match fs::metadata(path) {
        Ok(meta) => meta.len(),
        Err(err) => return Err(format!("cannot stat: {err}")),
    };
    if size != entry.bytes {
        return Err(format!("{size} bytes, manifest says {}", entry.bytes));
    }
    let mut reader = RecordReader::open(path).map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let mut records = 0;
    while reader
        .next_into(&mut buf)
        .map_err(|e| e.to_string())?
        .is_some()
    {
        records += 1;
    }
    if records != entry.records {
        return Err(format!(
            "{records} records, manifest says {}",
            entry.records
        ));
    }
    Ok(())
}
