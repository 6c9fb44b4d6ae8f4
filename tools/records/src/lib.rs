//! dawnrun-records: the one format library, TensorFlow-free, shared by the tools and the trainer.
//!
//! Framing (length + masked CRC-32C, data + masked CRC-32C) is separate from the typed
//! tf.Example layer, the writer and the index, as in TensorFlow's own record_reader/writer.
//! Modules in data-flow order:
//!
//! - [`crc`]: masked CRC-32C, the checksum of every frame (pure).
//! - [`framing`]: `RecordReader` / `RecordWriter` / `scan`: bytes <-> records, damage reported
//!   with file, byte offset and the failed check.
//! - [`example`]: tf.Example protos (prost derive) with a builder and typed getters.
//! - [`imagenet`]: `ImageRecord` <-> tf.Example with the keys of `build_imagenet_data.py`, and
//!   the zero-copy `decode_for_training` for the input pipeline.
//! - [`index`]: `RecordIndex`, per-file record offsets in DALI's tfrecord2idx text format.
//! - [`shard_set`]: `train-00000-of-01024` names, finding a complete shard set, counting its
//!   records.
//! - [`atomic`]: replacing a file atomically (temporary `.<name>.<random>.tmp`, fsync, rename,
//!   fsync the directory); shards, indexes and the manifest are written through it.
//! - [`manifest`]: `build-records.json`, how a records folder was built and its shards' sizes.
//! - [`event`]: TensorBoard event files (scalars), framed as records.
//!
//! Every module has one error enum. Messages name the file and byte offset (or the feature key)
//! but do not repeat their `source()`: print them with the chain (anyhow's `{:#}`).
#![deny(unsafe_code)]

pub mod atomic;
pub mod crc;
pub mod event;
pub mod example;
pub mod framing;
pub mod imagenet;
pub mod index;
pub mod manifest;
pub mod shard_set;
#[cfg(test)]
mod testutil;

pub use example::Example;
pub use framing::{read_record_at, Record, RecordReader, RecordWriter};
pub use imagenet::{BBox, ImageRecord};
pub use index::RecordIndex;
pub use manifest::Manifest;
