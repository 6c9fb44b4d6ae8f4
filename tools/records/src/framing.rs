//! TFRecord framing: the container every shard, index and event file is made of.
//!
//! A record on disk is, in order:
//!
//! 1. `len`: u64 little-endian, the number of data bytes;
//! 2. the masked CRC-32C of those 8 length bytes (u32 LE);
//! 3. `len` data bytes (a serialized tf.Example or Event; this module does not look inside);
//! 4. the masked CRC-32C of the data (u32 LE).
//!
//! So a record takes `len + 16` bytes ([`framed_len`]). This module owns the bytes between
//! records; what the data means belongs to [`crate::example`], [`crate::imagenet`] and
//! [`crate::event`]. Damage to the frame is container damage: the reader stops with an error
//! naming the file, the byte offset of the damaged record and which check failed, never
//! skipping silently past it. A file that ends exactly between records ends cleanly.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::atomic::{AtomicError, AtomicFile};
use crate::crc::masked_crc32c;

/// Bytes before the data: the u64 length and its masked CRC.
pub const HEADER_LEN: u64 = 12;
/// Bytes after the data: its masked CRC.
pub const FOOTER_LEN: u64 = 4;
/// I/O buffer size for readers and writers: big enough that a 100 KB JPEG record is a handful of
/// system calls, small enough that many open shards cost little memory.
const BUF_BYTES: usize = 256 * 1024;
/// Largest up-front allocation for one record's data from a source of unknown size; longer
/// records grow the buffer as bytes actually arrive, so a lying length cannot ask for
/// terabytes. A file's reader also knows the file's size: a length reaching past the end is
/// refused as truncation before anything is allocated.
const MAX_PREALLOC: u64 = 64 << 20;

/// Bytes a record with `data_len` data bytes occupies on disk (header + data + footer).
pub fn framed_len(data_len: u64) -> u64 {
    HEADER_LEN + data_len + FOOTER_LEN
}

/// Appends one framed record holding `data` to `out` (for in-memory use and tests; files go
/// through [`RecordWriter`]).
pub fn encode_record(data: &[u8], out: &mut Vec<u8>) {
    let header = encode_header(data.len() as u64);
    out.extend_from_slice(&header);
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc32c(data).to_le_bytes());
}

fn encode_header(data_len: u64) -> [u8; HEADER_LEN as usize] {
    let len_bytes = data_len.to_le_bytes();
    let mut header = [0u8; HEADER_LEN as usize];
    header[..8].copy_from_slice(&len_bytes);
    header[8..].copy_from_slice(&masked_crc32c(&len_bytes).to_le_bytes());
    header
}

/// Which integrity check a damaged record failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// The masked CRC of the 8 length bytes does not match (a flipped bit in the length or in
    /// its CRC).
    LengthCrc,
    /// The masked CRC of the data does not match (a flipped bit in the data or in its CRC).
    DataCrc,
    /// The file ends inside the 12-byte header.
    TruncatedHeader,
    /// The file ends inside the data or its CRC.
    TruncatedData,
}

/// Errors of the framing layer. Every variant names the file; those about a record give the byte
/// offset where that record starts (its length field), so `read_record_at(path, offset)`
/// revisits it.
#[derive(Debug, thiserror::Error)]
pub enum FramingError {
    #[error("{}: cannot open", .path.display())]
    Open { path: PathBuf, source: io::Error },
    #[error("{}: cannot create", .path.display())]
    Create { path: PathBuf, source: io::Error },
    #[error("{}: byte {offset}: read failed", .path.display())]
    Read {
        path: PathBuf,
        offset: u64,
        source: io::Error,
    },
    #[error("{}: byte {offset}: write failed", .path.display())]
    Write {
        path: PathBuf,
        offset: u64,
        source: io::Error,
    },
    #[error("{}: flush/fsync failed after {bytes} bytes", .path.display())]
    Sync {
        path: PathBuf,
        bytes: u64,
        source: io::Error,
    },
    #[error("{}: byte {offset}: cannot seek", .path.display())]
    Seek {
        path: PathBuf,
        offset: u64,
        source: io::Error,
    },
    #[error(
        "{}: byte {offset}: record length CRC mismatch (stored {stored:#010x}, computed {computed:#010x}): damaged length header",
        .path.display()
    )]
    LengthCrc {
        path: PathBuf,
        offset: u64,
        stored: u32,
        computed: u32,
    },
    #[error(
        "{}: byte {offset}: record data CRC mismatch over {len} bytes (stored {stored:#010x}, computed {computed:#010x}): damaged record data",
        .path.display()
    )]
    DataCrc {
        path: PathBuf,
        offset: u64,
        len: u64,
        stored: u32,
        computed: u32,
    },
    #[error(
        "{}: byte {offset}: truncated record header ({got} of 12 bytes before end of file)",
        .path.display()
    )]
    TruncatedHeader {
        path: PathBuf,
        offset: u64,
        got: u64,
    },
    #[error(
        "{}: byte {offset}: truncated record (length says {len} data bytes + 4 CRC bytes, only {got} present)",
        .path.display()
    )]
    TruncatedData {
        path: PathBuf,
        offset: u64,
        len: u64,
        got: u64,
    },
    #[error("{}: byte {offset}: no record there (end of file)", .path.display())]
    NoRecordAt { path: PathBuf, offset: u64 },
    /// Creating or committing the temporary of [`RecordWriter::create_atomic`].
    #[error(transparent)]
    Atomic(#[from] AtomicError),
}

impl FramingError {
    /// Which integrity check failed, if this error is about a damaged record.
    pub fn check(&self) -> Option<Check> {
        match self {
            FramingError::LengthCrc { .. } => Some(Check::LengthCrc),
            FramingError::DataCrc { .. } => Some(Check::DataCrc),
            FramingError::TruncatedHeader { .. } => Some(Check::TruncatedHeader),
            FramingError::TruncatedData { .. } => Some(Check::TruncatedData),
            _ => None,
        }
    }

    /// The byte offset the error is about, when there is one.
    pub fn offset(&self) -> Option<u64> {
        match self {
            FramingError::Read { offset, .. }
            | FramingError::Write { offset, .. }
            | FramingError::Seek { offset, .. }
            | FramingError::LengthCrc { offset, .. }
            | FramingError::DataCrc { offset, .. }
            | FramingError::TruncatedHeader { offset, .. }
            | FramingError::TruncatedData { offset, .. }
            | FramingError::NoRecordAt { offset, .. } => Some(*offset),
            FramingError::Open { .. }
            | FramingError::Create { .. }
            | FramingError::Sync { .. }
            | FramingError::Atomic(_) => None,
        }
    }
}

/// One record as read: where its frame starts in the file and its data bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Byte offset of the record's length field from the start of the file.
    pub offset: u64,
    /// The record's payload (CRCs already checked unless disabled).
    pub data: Vec<u8>,
}

/// Reads records one after another, checking both CRCs by default.
///
/// `R` is any byte source; [`RecordReader::open`] gives a buffered file. Offsets count from
/// where the source was when handed over (0 for a file). After an error the iterator yields
/// nothing more: a frame error leaves no trustworthy position to resume from.
pub struct RecordReader<R = BufReader<File>> {
    inner: R,
    path: PathBuf,
    /// Offset of the next byte `inner` will yield.
    pos: u64,
    check_data_crc: bool,
    failed: bool,
    /// The source's total length when known (a file): bounds every allocation.
    source_len: Option<u64>,
}

impl RecordReader<BufReader<File>> {
    /// Opens a TFRecord file for reading from its first record.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, FramingError> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|source| FramingError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        let len = file.metadata().map_err(|source| FramingError::Read {
            path: path.to_path_buf(),
            offset: 0,
            source,
        })?;
        let mut reader = Self::from_reader(BufReader::with_capacity(BUF_BYTES, file), path);
        // Only regular files have a length that bounds what can be read.
        if len.is_file() {
            reader.source_len = Some(len.len());
        }
        Ok(reader)
    }
}

impl<R: Read> RecordReader<R> {
    /// Wraps any reader; `name` stands for it in error messages (a path, or e.g. `"<stdin>"`).
    pub fn from_reader(inner: R, name: impl Into<PathBuf>) -> Self {
        Self {
            inner,
            path: name.into(),
            pos: 0,
            check_data_crc: true,
            failed: false,
            source_len: None,
        }
    }

    /// Turns the data CRC check on (the default) or off. The length CRC is always checked: it is
    /// 8 bytes and guards every allocation and seek.
    pub fn with_data_crc_check(mut self, on: bool) -> Self {
        self.check_data_crc = on;
        self
    }

    /// The file (or name) errors refer to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Byte offset where the next record is expected.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Reads the next record. `Ok(None)` at a clean end of file (exactly between records).
    pub fn next_record(&mut self) -> Result<Option<Record>, FramingError> {
        let mut data = Vec::new();
        Ok(self
            .next_into(&mut data)?
            .map(|offset| Record { offset, data }))
    }

    /// Reads the next record's data into `buf` (cleared first, capacity reused) and returns the
    /// record's offset; `Ok(None)` at a clean end of file. The allocation-free path for hot loops.
    pub fn next_into(&mut self, buf: &mut Vec<u8>) -> Result<Option<u64>, FramingError> {
        let offset = self.pos;
        let result = self.read_frame(offset, buf);
        if result.is_err() {
            self.failed = true;
        }
        result
    }

    fn read_frame(&mut self, offset: u64, buf: &mut Vec<u8>) -> Result<Option<u64>, FramingError> {
        let mut header = [0u8; HEADER_LEN as usize];
        let got = self.read_full(&mut header, offset)?;
        if got == 0 {
            return Ok(None);
        }
        if got < header.len() {
            return Err(FramingError::TruncatedHeader {
                path: self.path.clone(),
                offset,
                got: got as u64,
            });
        }
        let len = check_header(&header, &self.path, offset)?;
        let present = self
            .source_len
            .map_or(u64::MAX, |total| total.saturating_sub(self.pos));
        if len.saturating_add(FOOTER_LEN) > present {
            // A length (with a valid CRC) reaching past the end of the file: truncated, or
            // lying. Refused before allocating anything for it.
            return Err(FramingError::TruncatedData {
                path: self.path.clone(),
                offset,
                len,
                got: present,
            });
        }

        buf.clear();
        buf.reserve(len.min(MAX_PREALLOC) as usize);
        let got_data = (&mut self.inner)
            .take(len)
            .read_to_end(buf)
            .map_err(|source| FramingError::Read {
                path: self.path.clone(),
                offset,
                source,
            })? as u64;
        self.pos += got_data;
        let mut footer = [0u8; FOOTER_LEN as usize];
        let got_footer = if got_data == len {
            self.read_full(&mut footer, offset)? as u64
        } else {
            0
        };
        if got_data < len || got_footer < FOOTER_LEN {
            return Err(FramingError::TruncatedData {
                path: self.path.clone(),
                offset,
                len,
                got: got_data + got_footer,
            });
        }
        if self.check_data_crc {
            let stored = u32::from_le_bytes(footer);
            let computed = masked_crc32c(buf);
            if stored != computed {
                return Err(FramingError::DataCrc {
                    path: self.path.clone(),
                    offset,
                    len,
                    stored,
                    computed,
                });
            }
        }
        Ok(Some(offset))
    }

    /// Fills `buf` unless the source ends first; returns how many bytes arrived.
    fn read_full(&mut self, buf: &mut [u8], record_offset: u64) -> Result<usize, FramingError> {
        let mut n = 0;
        while n < buf.len() {
            match self.inner.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(FramingError::Read {
                        path: self.path.clone(),
                        offset: record_offset,
                        source,
                    })
                }
            }
        }
        self.pos += n as u64;
        Ok(n)
    }
}

impl<R: Read + Seek> RecordReader<R> {
    /// Moves to `offset`, which must be the start of a record (from a [`Record`] or an index);
    /// a wrong offset shows up as a length CRC error on the next read. Clears a previous error.
    pub fn seek(&mut self, offset: u64) -> Result<(), FramingError> {
        self.inner
            .seek(SeekFrom::Start(offset))
            .map_err(|source| FramingError::Seek {
                path: self.path.clone(),
                offset,
                source,
            })?;
        self.pos = offset;
        self.failed = false;
        Ok(())
    }
}

impl<R: Read> Iterator for RecordReader<R> {
    type Item = Result<Record, FramingError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        self.next_record().transpose()
    }
}

/// Checks the length CRC of a 12-byte header and returns the data length.
fn check_header(
    header: &[u8; HEADER_LEN as usize],
    path: &Path,
    offset: u64,
) -> Result<u64, FramingError> {
    let len_bytes: [u8; 8] = header[..8].try_into().expect("header holds 8 length bytes");
    let crc_bytes: [u8; 4] = header[8..].try_into().expect("header holds 4 CRC bytes");
    let stored = u32::from_le_bytes(crc_bytes);
    let computed = masked_crc32c(&len_bytes);
    if stored != computed {
        return Err(FramingError::LengthCrc {
            path: path.to_path_buf(),
            offset,
            stored,
            computed,
        });
    }
    Ok(u64::from_le_bytes(len_bytes))
}

/// Reads the one record whose frame starts at `offset` (from an index or an earlier read),
/// checking both CRCs.
pub fn read_record_at(path: impl AsRef<Path>, offset: u64) -> Result<Record, FramingError> {
    let path = path.as_ref();
    let mut reader = RecordReader::open(path)?;
    reader.seek(offset)?;
    reader
        .next_record()?
        .ok_or_else(|| FramingError::NoRecordAt {
            path: path.to_path_buf(),
            offset,
        })
}

/// Where one record sits in a file: `(offset, framed_len)`, the frame's first byte and its whole
/// length including header and footer (DALI's tfrecord2idx convention).
pub type Span = (u64, u64);

/// Lists every record's span by reading only the 12-byte headers and seeking over the data:
/// counting a shard costs a few bytes per record. Checks each length CRC and that the last
/// record fits in the file; does NOT check data CRCs (use [`RecordReader`] for that).
pub fn scan(path: impl AsRef<Path>) -> Result<Vec<Span>, FramingError> {
    let path = path.as_ref();
    let file = File::open(path).map_err(|source| FramingError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let file_len = file
        .metadata()
        .map_err(|source| FramingError::Read {
            path: path.to_path_buf(),
            offset: 0,
            source,
        })?
        .len();
    // Small buffer: we read 12 bytes per record and skip the rest.
    let mut reader = RecordReader::from_reader(BufReader::with_capacity(4096, file), path);
    let mut spans = Vec::new();
    let mut header = [0u8; HEADER_LEN as usize];
    while reader.pos < file_len {
        let offset = reader.pos;
        let got = reader.read_full(&mut header, offset)?;
        if got < header.len() {
            return Err(FramingError::TruncatedHeader {
                path: path.to_path_buf(),
                offset,
                got: got as u64,
            });
        }
        let len = check_header(&header, path, offset)?;
        let framed = framed_len(len);
        let present = file_len - offset;
        if framed > present {
            return Err(FramingError::TruncatedData {
                path: path.to_path_buf(),
                offset,
                len,
                got: present - HEADER_LEN,
            });
        }
        let skip = (len + FOOTER_LEN) as i64;
        reader
            .inner
            .seek_relative(skip)
            .map_err(|source| FramingError::Seek {
                path: path.to_path_buf(),
                offset: offset + HEADER_LEN,
                source,
            })?;
        reader.pos = offset + framed;
        spans.push((offset, framed));
    }
    Ok(spans)
}

/// Number of records in a file, by [`scan`] (headers only).
pub fn count_records(path: impl AsRef<Path>) -> Result<u64, FramingError> {
    Ok(scan(path)?.len() as u64)
}

/// Writes framed records to a file through a buffer.
///
/// Dropping a writer from [`RecordWriter::create`] without [`RecordWriter::finish`] may lose
/// buffered records. Writers of shards use [`RecordWriter::create_atomic`] instead: the records
/// go to a temporary file that `finish` renames over the final path, so a partial file never
/// has the final name.
pub struct RecordWriter {
    inner: Sink,
    path: PathBuf,
    bytes_written: u64,
}

/// Where a [`RecordWriter`]'s bytes go.
enum Sink {
    Plain(BufWriter<File>),
    Atomic(AtomicFile),
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sink::Plain(w) => w.write(buf),
            Sink::Atomic(w) => w.write(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Sink::Plain(w) => w.write_all(buf),
            Sink::Atomic(w) => w.write_all(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::Plain(w) => w.flush(),
            Sink::Atomic(w) => w.flush(),
        }
    }
}

impl RecordWriter {
    /// Creates (or truncates) `path`.
    pub fn create(path: impl AsRef<Path>) -> Result<Self, FramingError> {
        let path = path.as_ref();
        let file = File::create(path).map_err(|source| FramingError::Create {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Self {
            inner: Sink::Plain(BufWriter::with_capacity(BUF_BYTES, file)),
            path: path.to_path_buf(),
            bytes_written: 0,
        })
    }

    /// Starts records that replace `path` only when [`RecordWriter::finish`] succeeds: they are
    /// written to a temporary beside it ([`crate::atomic`]), removed if the writer is dropped
    /// unfinished or `finish` fails.
    pub fn create_atomic(path: impl AsRef<Path>) -> Result<Self, FramingError> {
        let path = path.as_ref();
        Ok(Self {
            inner: Sink::Atomic(AtomicFile::with_capacity(path, BUF_BYTES)?),
            path: path.to_path_buf(),
            bytes_written: 0,
        })
    }

    /// The file being written (for [`RecordWriter::create_atomic`], the final path).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record and returns the byte offset where its frame starts.
    pub fn write(&mut self, data: &[u8]) -> Result<u64, FramingError> {
        let offset = self.bytes_written;
        let header = encode_header(data.len() as u64);
        let footer = masked_crc32c(data).to_le_bytes();
        let result = self
            .inner
            .write_all(&header)
            .and_then(|()| self.inner.write_all(data))
            .and_then(|()| self.inner.write_all(&footer));
        result.map_err(|source| FramingError::Write {
            path: self.path.clone(),
            offset,
            source,
        })?;
        self.bytes_written += framed_len(data.len() as u64);
        Ok(offset)
    }

    /// Bytes of framed records handed to the writer so far (the file's length after `finish`).
    pub fn bytes_written(&self) -> u64 {
        self.bytes_written
    }

    /// Pushes buffered records to the OS (no fsync): readers of the file see them (for
    /// [`RecordWriter::create_atomic`], readers of the temporary).
    pub fn flush(&mut self) -> Result<(), FramingError> {
        self.inner.flush().map_err(|source| FramingError::Sync {
            path: self.path.clone(),
            bytes: self.bytes_written,
            source,
        })
    }

    /// Flushes and fsyncs the file (and, for [`RecordWriter::create_atomic`], renames it into
    /// place and fsyncs the directory); returns the total bytes written.
    pub fn finish(mut self) -> Result<u64, FramingError> {
        self.flush()?;
        match self.inner {
            Sink::Plain(file) => {
                file.get_ref()
                    .sync_all()
                    .map_err(|source| FramingError::Sync {
                        path: self.path.clone(),
                        bytes: self.bytes_written,
                        source,
                    })?
            }
            Sink::Atomic(file) => file.commit()?,
        }
        Ok(self.bytes_written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Lcg;
    use std::io::Cursor;

    /// Deterministic pseudo-random payloads of varied sizes, including empty.
    fn payloads(seed: u64, n: usize) -> Vec<Vec<u8>> {
        let mut rng = Lcg::new(seed);
        (0..n)
            .map(|i| {
                let len = match i % 5 {
                    0 => 0,
                    1 => 1,
                    2 => 100,
                    3 => 4097,
                    _ => (rng.next() % 70_000) as usize,
                };
                rng.bytes(len)
            })
            .collect()
    }

    fn write_file(dir: &Path, name: &str, records: &[Vec<u8>]) -> PathBuf {
        let path = dir.join(name);
        let mut w = RecordWriter::create(&path).unwrap();
        for r in records {
            w.write(r).unwrap();
        }
        let total = w.finish().unwrap();
        assert_eq!(total, std::fs::metadata(&path).unwrap().len());
        path
    }

    fn read_all(path: &Path) -> Result<Vec<Record>, FramingError> {
        RecordReader::open(path)?.collect()
    }

    #[test]
    fn round_trip_many_seeds() {
        let dir = tempfile::tempdir().unwrap();
        for seed in 0..8 {
            let records = payloads(seed, 1 + seed as usize * 3);
            let path = write_file(dir.path(), &format!("r{seed}"), &records);
            let read = read_all(&path).unwrap();
            assert_eq!(read.len(), records.len());
            let mut offset = 0;
            for (got, want) in read.iter().zip(&records) {
                assert_eq!(got.offset, offset);
                assert_eq!(&got.data, want);
                offset += framed_len(want.len() as u64);
            }
            let spans = scan(&path).unwrap();
            let expected: Vec<Span> = read
                .iter()
                .map(|r| (r.offset, framed_len(r.data.len() as u64)))
                .collect();
            assert_eq!(spans, expected);
            assert_eq!(count_records(&path).unwrap(), records.len() as u64);
        }
    }

    #[test]
    fn encode_record_matches_writer_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let records = payloads(3, 7);
        let path = write_file(dir.path(), "w", &records);
        let mut mem = Vec::new();
        for r in &records {
            encode_record(r, &mut mem);
        }
        assert_eq!(std::fs::read(&path).unwrap(), mem);
    }

    #[test]
    fn empty_file_is_clean_eof() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_file(dir.path(), "empty", &[]);
        assert!(read_all(&path).unwrap().is_empty());
        assert!(scan(&path).unwrap().is_empty());
    }

    /// Flips one bit at each interesting position of the second record and checks the error
    /// names the file, the second record's offset and the right check.
    #[test]
    fn flipped_byte_gives_right_check_and_offset() {
        let records = payloads(11, 3);
        let records = vec![b"first".to_vec(), records[2].clone(), b"third".to_vec()];
        let mut clean = Vec::new();
        for r in &records {
            encode_record(r, &mut clean);
        }
        let second = framed_len(5);
        let data_len = records[1].len() as u64;
        let cases = [
            (second, Check::LengthCrc),                           // length, low byte
            (second + 7, Check::LengthCrc),                       // length, high byte
            (second + 8, Check::LengthCrc),                       // length CRC
            (second + 11, Check::LengthCrc),                      // length CRC
            (second + HEADER_LEN, Check::DataCrc),                // first data byte
            (second + HEADER_LEN + data_len - 1, Check::DataCrc), // last data byte
            (second + HEADER_LEN + data_len, Check::DataCrc),     // data CRC
            (second + HEADER_LEN + data_len + 3, Check::DataCrc), // data CRC
        ];
        for (bit, (pos, check)) in cases.iter().enumerate() {
            let mut bytes = clean.clone();
            bytes[*pos as usize] ^= 1 << (bit % 8);
            let mut reader = RecordReader::from_reader(Cursor::new(bytes), "damaged.tfrecord");
            let first = reader.next_record().unwrap().unwrap();
            assert_eq!(first.data, b"first");
            let err = reader.next_record().unwrap_err();
            assert_eq!(err.check(), Some(*check), "byte {pos}: {err}");
            assert_eq!(err.offset(), Some(second), "byte {pos}: {err}");
            let msg = err.to_string();
            assert!(
                msg.starts_with(&format!("damaged.tfrecord: byte {second}: ")),
                "{msg}"
            );
            // The iterator stops after the error.
            assert!(reader.next().is_none());
        }
    }

    #[test]
    fn data_crc_check_can_be_disabled() {
        let mut bytes = Vec::new();
        encode_record(b"hello", &mut bytes);
        bytes[HEADER_LEN as usize] ^= 0x20;
        let mut reader =
            RecordReader::from_reader(Cursor::new(bytes), "x").with_data_crc_check(false);
        assert_eq!(reader.next_record().unwrap().unwrap().data, b"Hello");
    }

    #[test]
    fn truncated_last_record_is_an_error_at_every_cut() {
        let dir = tempfile::tempdir().unwrap();
        let records = vec![b"abc".to_vec(), vec![7u8; 40]];
        let mut clean = Vec::new();
        for r in &records {
            encode_record(r, &mut clean);
        }
        let second = framed_len(3);
        for cut in (second + 1)..(clean.len() as u64) {
            let path = dir.path().join(format!("cut{cut}"));
            std::fs::write(&path, &clean[..cut as usize]).unwrap();
            let want = if cut - second < HEADER_LEN {
                Check::TruncatedHeader
            } else {
                Check::TruncatedData
            };
            for err in [read_all(&path).unwrap_err(), scan(&path).unwrap_err()] {
                assert_eq!(err.check(), Some(want), "cut {cut}: {err}");
                assert_eq!(err.offset(), Some(second), "cut {cut}");
                assert!(err.to_string().contains(&path.display().to_string()));
            }
        }
        // Cut exactly between records: clean.
        let path = dir.path().join("between");
        std::fs::write(&path, &clean[..second as usize]).unwrap();
        assert_eq!(read_all(&path).unwrap().len(), 1);
    }

    #[test]
    fn seek_and_read_record_at() {
        let dir = tempfile::tempdir().unwrap();
        let records = payloads(5, 12);
        let path = write_file(dir.path(), "s", &records);
        let spans = scan(&path).unwrap();
        for (i, (offset, _)) in spans.iter().enumerate().rev() {
            let rec = read_record_at(&path, *offset).unwrap();
            assert_eq!(rec.offset, *offset);
            assert_eq!(rec.data, records[i]);
        }
        let mut reader = RecordReader::open(&path).unwrap();
        reader.seek(spans[4].0).unwrap();
        let rest: Vec<Record> = reader.by_ref().map(Result::unwrap).collect();
        assert_eq!(rest.len(), records.len() - 4);
        let end = std::fs::metadata(&path).unwrap().len();
        let err = read_record_at(&path, end).unwrap_err();
        assert!(matches!(err, FramingError::NoRecordAt { .. }), "{err}");
        // Not a record boundary: the length CRC catches it.
        let err = read_record_at(&path, spans[1].0 + 1).unwrap_err();
        assert_eq!(err.check(), Some(Check::LengthCrc));
    }

    #[test]
    fn next_into_reuses_buffer() {
        let mut bytes = Vec::new();
        for r in payloads(9, 6) {
            encode_record(&r, &mut bytes);
        }
        let mut reader = RecordReader::from_reader(Cursor::new(&bytes), "mem");
        let mut buf = Vec::new();
        let mut n = 0;
        while let Some(_offset) = reader.next_into(&mut buf).unwrap() {
            n += 1;
        }
        assert_eq!(n, 6);
        assert_eq!(reader.position(), bytes.len() as u64);
    }
}
