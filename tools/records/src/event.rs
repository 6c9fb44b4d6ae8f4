//! TensorBoard event files: the trainer's scalars (loss, lr, img/s, top-5), readable by
//! TensorBoard and `tf.compat.v1.train.summary_iterator`.
//!
//! An event file is TFRecord framing ([`crate::framing`]) around serialized `tensorflow.Event`
//! protos. The first record carries `file_version = "brain.Event:2"`; then one Event per scalar.
//! Only the fields scalars need are modelled; TensorBoard ignores the rest's absence.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use prost::Message;

use crate::framing::{self, RecordWriter};

/// What the first record of an event file declares.
pub const FILE_VERSION: &str = "brain.Event:2";

/// `tensorflow.Event` (the fields scalars use).
#[derive(Clone, PartialEq, Message)]
pub struct Event {
    /// Seconds since the Unix epoch.
    #[prost(double, tag = "1")]
    pub wall_time: f64,
    /// Global step the event belongs to.
    #[prost(int64, tag = "2")]
    pub step: i64,
    #[prost(oneof = "What", tags = "3, 5, 7")]
    pub what: Option<What>,
}

/// The oneof `what` inside [`Event`].
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum What {
    #[prost(string, tag = "3")]
    FileVersion(String),
    #[prost(message, tag = "5")]
    Summary(Summary),
    /// Tag 7: 6 is the deprecated `log_message`.
    #[prost(message, tag = "7")]
    SessionLog(SessionLog),
}

/// `tensorflow.SessionLog`: only its status is written.
#[derive(Clone, PartialEq, Message)]
pub struct SessionLog {
    /// `SessionLog.SessionStatus`: 1 is `START`.
    #[prost(int32, tag = "1")]
    pub status: i32,
}

/// `SessionLog.START`.
pub const SESSION_START: i32 = 1;

/// `tensorflow.Summary`.
#[derive(Clone, PartialEq, Message)]
pub struct Summary {
    #[prost(message, repeated, tag = "1")]
    pub value: Vec<Value>,
}

/// `tensorflow.Summary.Value`. `simple_value` sits in a oneof in TF's proto, so presence matters:
/// an `Option` makes prost write a 0.0 (a plain proto3 float would be skipped, and TensorBoard
/// would drop that point).
#[derive(Clone, PartialEq, Message)]
pub struct Value {
    #[prost(string, tag = "1")]
    pub tag: String,
    #[prost(float, optional, tag = "2")]
    pub simple_value: Option<f32>,
}

/// Errors writing events; framing errors already name the file and offset.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error(transparent)]
    Framing(#[from] framing::FramingError),
    #[error("{}: cannot create event directory", .dir.display())]
    CreateDir {
        dir: PathBuf,
        source: std::io::Error,
    },
}

/// Appends scalar events to `events.out.tfevents.<unix secs>.<hostname>` in a directory.
///
/// Writes go through a buffer; call [`EventWriter::flush`] for TensorBoard to see them
/// (the trainer does so at each log line) and [`EventWriter::finish`] at the end.
pub struct EventWriter {
    records: RecordWriter,
}

fn now_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// This machine's name, safe inside a file name (TensorBoard shows it in event file names;
/// `trainer export` marks its temporary folders with it); "localhost" if unknown.
pub fn hostname() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().replace(['/', '\\'], "_"))
        .find(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

impl EventWriter {
    /// Creates `dir` if needed and a new event file in it, starting with the file-version
    /// record. Never overwrites: a second writer in the same second gets a `.1`, `.2`... suffix.
    pub fn create(dir: impl AsRef<Path>) -> Result<Self, EventError> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|source| EventError::CreateDir {
            dir: dir.to_path_buf(),
            source,
        })?;
        let wall_time = now_s();
        let base = format!("events.out.tfevents.{}.{}", wall_time as u64, hostname());
        let mut path = dir.join(&base);
        let mut n = 0;
        while path.exists() {
            n += 1;
            path = dir.join(format!("{base}.{n}"));
        }
        let mut writer = EventWriter {
            records: RecordWriter::create(&path)?,
        };
        writer.write_event(&Event {
            wall_time,
            step: 0,
            what: Some(What::FileVersion(FILE_VERSION.to_owned())),
        })?;
        Ok(writer)
    }

    /// The event file being written.
    pub fn path(&self) -> &Path {
        self.records.path()
    }

    /// Appends any Event.
    pub fn write_event(&mut self, event: &Event) -> Result<(), EventError> {
        self.records.write(&event.encode_to_vec())?;
        Ok(())
    }

    /// Marks a restart at `step`, as TensorFlow's own writers do: TensorBoard then drops the
    /// points at `step` and later that earlier event files of the run hold (its "orphaned
    /// data"), so a resumed run's curves do not double back.
    pub fn session_start(&mut self, step: i64) -> Result<(), EventError> {
        self.write_event(&Event {
            wall_time: now_s(),
            step,
            what: Some(What::SessionLog(SessionLog {
                status: SESSION_START,
            })),
        })
    }

    /// Appends one scalar point `tag` = `value` at global step `step`, stamped now.
    pub fn scalar(&mut self, tag: &str, step: i64, value: f32) -> Result<(), EventError> {
        self.write_event(&Event {
            wall_time: now_s(),
            step,
            what: Some(What::Summary(Summary {
                value: vec![Value {
                    tag: tag.to_owned(),
                    simple_value: Some(value),
                }],
            })),
        })
    }

    /// Makes everything written so far visible to readers (no fsync).
    pub fn flush(&mut self) -> Result<(), EventError> {
        Ok(self.records.flush()?)
    }

    /// Flushes and fsyncs; the file is complete.
    pub fn finish(self) -> Result<(), EventError> {
        self.records.finish()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framing::RecordReader;

    fn read_events(path: &Path) -> Vec<Event> {
        RecordReader::open(path)
            .unwrap()
            .map(|r| Event::decode(&r.unwrap().data[..]).unwrap())
            .collect()
    }

    #[test]
    fn writes_version_then_scalars_including_zero() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = EventWriter::create(dir.path().join("run/events")).unwrap();
        let path = w.path().to_path_buf();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        assert!(name.starts_with("events.out.tfevents."), "{name}");
        for step in 0..50 {
            w.scalar("loss", step, 10.0 / (step + 1) as f32).unwrap();
            w.scalar("lr", step, 0.0).unwrap();
        }
        w.flush().unwrap();
        let events = read_events(&path);
        assert_eq!(events.len(), 101);
        assert_eq!(events[0].what, Some(What::FileVersion(FILE_VERSION.into())));
        for step in 0..50 {
            let loss = &events[1 + 2 * step];
            assert_eq!(loss.step, step as i64);
            let Some(What::Summary(s)) = &loss.what else {
                panic!()
            };
            assert_eq!(s.value[0].tag, "loss");
            assert_eq!(s.value[0].simple_value, Some(10.0 / (step + 1) as f32));
            let lr = Event::decode(&*events[2 + 2 * step].encode_to_vec()).unwrap();
            let Some(What::Summary(s)) = &lr.what else {
                panic!()
            };
            assert_eq!(s.value[0].simple_value, Some(0.0));
        }
        w.finish().unwrap();
    }

    #[test]
    fn second_writer_same_second_gets_its_own_file() {
        let dir = tempfile::tempdir().unwrap();
        let a = EventWriter::create(dir.path()).unwrap();
        let b = EventWriter::create(dir.path()).unwrap();
        assert_ne!(a.path(), b.path());
        a.finish().unwrap();
        b.finish().unwrap();
    }

    #[test]
    fn zero_scalar_is_on_the_wire() {
        let v = Value {
            tag: "t".into(),
            simple_value: Some(0.0),
        };
        // tag 1 "t", then field 2 fixed32 0.0.
        assert_eq!(v.encode_to_vec(), vec![0x0a, 1, b't', 0x15, 0, 0, 0, 0]);
    }
}
