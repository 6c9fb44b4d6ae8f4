//! dawnrun-records: the one format library, TensorFlow-free, shared by the tools and the trainer.
//!
//! Framing (length + masked CRC-32C, data + masked CRC-32C) is separate from the typed
//! tf.Example layer, the writer and the index, as in TensorFlow's own record_reader/writer.
//!
//! PLANNED API (contract for the other crates; the owner of this crate fills it in):
//! - `crc::{mask, unmask, masked_crc32c}`                                             (pure)
//! - `framing::{RecordReader, RecordWriter}`: `RecordReader::open(path)`,
//!   `next_record(&mut self) -> Result<Option<Record>, Error>` where `Record { offset: u64, data: Vec<u8> }`,
//!   `RecordReader::seek(offset)`; `read_record_at(path, offset)`; `RecordWriter::create(path)`,
//!   `write(&[u8])`, `finish()` (flush + fsync). Errors name the file, the byte offset and the check.
//! - `example::{Example, Features, Feature, BytesList, FloatList, Int64List}` (prost derive) with
//!   typed helpers (`Example::builder()...`, `get_int64(key)`, `get_bytes(key)`, `get_str(key)`, ...).
//! - `imagenet::ImageRecord` {encoded, height, width, label (1-based), synset, text, filename,
//!   bboxes} <-> tf.Example with the exact keys of build_imagenet_data.py (`KEY_*` consts).
//! - `index::RecordIndex` (offsets and lengths of every record in a file, DALI tfrecord2idx text
//!   format "offset length\n"), `build(path)`, `save`, `load`.
//! - `shards::{shard_name, parse_shard_name, list_shards}`: "train-00000-of-01024".
//! - `event::{Event, Summary, EventWriter}`: TensorBoard event files (scalars), framed as records.
#![deny(unsafe_code)]
