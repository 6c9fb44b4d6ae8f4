//! Record index: where each record of a shard starts, so readers can split a shard between
//! workers and seek straight to a record.
//!
//! Built from the headers only ([`framing::scan`]), saved in DALI's `tfrecord2idx` text format,
//! one `"<offset> <size>\n"` line per record, where size is the whole framed record (12-byte
//! header + data + 4-byte CRC). An index is a cache: [`RecordIndex::load`] rejects one whose end
//! does not match its record file's size, so a rewritten shard is never read through a stale
//! index.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::atomic::{self, AtomicError};
use crate::framing::{self, Record, HEADER_LEN};

/// Errors of the index layer; each names the index or record file and, when parsing, the line.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error(transparent)]
    Framing(#[from] framing::FramingError),
    #[error(transparent)]
    Save(#[from] AtomicError),
    #[error("{}: {action}", .path.display())]
    Io {
        path: PathBuf,
        action: &'static str,
        source: io::Error,
    },
    #[error("{}:{line}: expected \"<offset> <size>\" with increasing, non-overlapping records, found {text:?}", .path.display())]
    Parse {
        path: PathBuf,
        line: usize,
        text: String,
    },
    #[error(
        "{}: stale index for {}: records end at byte {index_end}, file has {file_len} bytes",
        .idx.display(), .records.display()
    )]
    Stale {
        idx: PathBuf,
        records: PathBuf,
        index_end: u64,
        file_len: u64,
    },
    #[error("{}: record {index} out of range (index holds {len})", .path.display())]
    OutOfRange {
        path: PathBuf,
        index: usize,
        len: usize,
    },
}

/// The records of one file: `entries[i] = (offset, framed_len)` of record `i`, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordIndex {
    /// The record file this index describes.
    pub path: PathBuf,
    /// `(offset, framed_len)` per record; framed_len includes header and CRCs.
    pub entries: Vec<(u64, u64)>,
}

/// Where an index for `records` goes by default: `<records>.idx` beside it.
pub fn default_index_path(records: impl AsRef<Path>) -> PathBuf {
    let mut name = records.as_ref().as_os_str().to_owned();
    name.push(".idx");
    PathBuf::from(name)
}

impl RecordIndex {
    /// Indexes `path` by reading record headers (length CRCs checked, data CRCs not).
    pub fn build(path: impl AsRef<Path>) -> Result<Self, IndexError> {
        let path = path.as_ref();
        Ok(RecordIndex {
            path: path.to_path_buf(),
            entries: framing::scan(path)?,
        })
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when the file holds no records.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes of the record file covered (its expected length).
    pub fn end(&self) -> u64 {
        self.entries.last().map_or(0, |&(o, l)| o + l)
    }

    /// Reads record `i` (both CRCs checked).
    pub fn read(&self, i: usize) -> Result<Record, IndexError> {
        let &(offset, _) = self.entries.get(i).ok_or_else(|| IndexError::OutOfRange {
            path: self.path.clone(),
            index: i,
            len: self.len(),
        })?;
        Ok(framing::read_record_at(&self.path, offset)?)
    }

    /// Writes the index in tfrecord2idx format to `idx_path`, atomically ([`atomic::write`]).
    pub fn save(&self, idx_path: impl AsRef<Path>) -> Result<(), IndexError> {
        let mut text = String::with_capacity(self.entries.len() * 16);
        for &(offset, len) in &self.entries {
            text.push_str(&format!("{offset} {len}\n"));
        }
        Ok(atomic::write(idx_path.as_ref(), text.as_bytes())?)
    }

    /// Reads an index saved by [`RecordIndex::save`] or DALI's tfrecord2idx for the record file
    /// `records`, checking that the lines are well formed, that each record starts where the
    /// one before ended, and that the last ends exactly at the end of `records`.
    pub fn load(idx_path: impl AsRef<Path>, records: impl AsRef<Path>) -> Result<Self, IndexError> {
        let (idx_path, records) = (idx_path.as_ref(), records.as_ref());
        let text = fs::read_to_string(idx_path).map_err(|source| IndexError::Io {
            path: idx_path.to_path_buf(),
            action: "cannot read index",
            source,
        })?;
        let mut entries = Vec::new();
        let mut expected_offset = 0;
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let parse_error = || IndexError::Parse {
                path: idx_path.to_path_buf(),
                line: i + 1,
                text: line.to_owned(),
            };
            let mut words = line.split_whitespace();
            let (Some(offset), Some(len), None) = (words.next(), words.next(), words.next()) else {
                return Err(parse_error());
            };
            let offset: u64 = offset.parse().map_err(|_| parse_error())?;
            let len: u64 = len.parse().map_err(|_| parse_error())?;
            // A record file has no gaps: each record starts where the one before ended.
            if offset != expected_offset || len < HEADER_LEN + framing::FOOTER_LEN {
                return Err(parse_error());
            }
            expected_offset = offset.checked_add(len).ok_or_else(parse_error)?;
            entries.push((offset, len));
        }
        let index = RecordIndex {
            path: records.to_path_buf(),
            entries,
        };
        let file_len = fs::metadata(records)
            .map_err(|source| IndexError::Io {
                path: records.to_path_buf(),
                action: "cannot stat record file",
                source,
            })?
            .len();
        if index.end() != file_len {
            return Err(IndexError::Stale {
                idx: idx_path.to_path_buf(),
                records: records.to_path_buf(),
                index_end: index.end(),
                file_len,
            });
        }
        Ok(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framing::{framed_len, RecordWriter};

    fn write(path: &Path, n: usize, seed: usize) -> Vec<Vec<u8>> {
        let records: Vec<Vec<u8>> = (0..n)
            .map(|i| vec![(i + seed) as u8; (i * 37 + seed * 11) % 1500])
            .collect();
        let mut w = RecordWriter::create(path).unwrap();
        for r in &records {
            w.write(r).unwrap();
        }
        w.finish().unwrap();
        records
    }

    #[test]
    fn build_save_load_read_many_sizes() {
        let dir = tempfile::tempdir().unwrap();
        for (seed, n) in [0usize, 1, 2, 7, 50, 300].into_iter().enumerate() {
            let path = dir.path().join(format!("shard{seed}"));
            let records = write(&path, n, seed);
            let index = RecordIndex::build(&path).unwrap();
            assert_eq!(index.len(), n);
            assert_eq!(index.is_empty(), n == 0);
            assert_eq!(index.end(), fs::metadata(&path).unwrap().len());
            let idx = default_index_path(&path);
            index.save(&idx).unwrap();
            let text = fs::read_to_string(&idx).unwrap();
            assert_eq!(text.lines().count(), n);
            if n > 0 {
                assert_eq!(
                    text.lines().next().unwrap(),
                    format!("0 {}", framed_len(records[0].len() as u64))
                );
            }
            let loaded = RecordIndex::load(&idx, &path).unwrap();
            assert_eq!(loaded, index);
            for (i, want) in records.iter().enumerate() {
                let rec = loaded.read(i).unwrap();
                assert_eq!(&rec.data, want);
                assert_eq!(rec.offset, loaded.entries[i].0);
            }
            assert!(matches!(loaded.read(n), Err(IndexError::OutOfRange { .. })));
        }
    }

    #[test]
    fn default_index_path_appends_idx() {
        assert_eq!(
            default_index_path("/d/train-00000-of-01024"),
            PathBuf::from("/d/train-00000-of-01024.idx")
        );
    }

    #[test]
    fn load_rejects_bad_lines_with_line_number() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r");
        write(&path, 3, 1);
        let idx = dir.path().join("r.idx");
        for (text, line) in [
            ("0 16\nx 4\n", 2),
            ("0\n", 1),
            ("0 16 7\n", 1),
            ("0 3\n", 1),
            ("0 100\n50 100\n", 2),
            // A gap would make the count of records (the epoch's size) wrong.
            ("0 16\n20 16\n", 2),
            ("8 16\n", 1),
        ] {
            fs::write(&idx, text).unwrap();
            match RecordIndex::load(&idx, &path) {
                Err(IndexError::Parse { line: l, .. }) => assert_eq!(l, line, "{text:?}"),
                other => panic!("{text:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn load_rejects_stale_index() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r");
        write(&path, 3, 1);
        let idx = dir.path().join("r.idx");
        RecordIndex::build(&path).unwrap().save(&idx).unwrap();
        write(&path, 4, 1);
        let err = RecordIndex::load(&idx, &path).unwrap_err();
        assert!(matches!(err, IndexError::Stale { .. }), "{err}");
        assert!(err.to_string().contains("stale index"));
    }
}
