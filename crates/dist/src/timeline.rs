//! Timeline: a Chrome-trace JSON file of each step's phases on this rank, for finding the
//! bottleneck (open in `chrome://tracing` or Perfetto).
//!
//! Format: the trace format's JSON array, `[ ... ]`, one event per line: one complete
//! (`"ph":"X"`) event per span, `pid` = rank, `tid` = the phase's lane ([`Lane`]), `ts`/`dur` in
//! microseconds. `ts` counts from the Unix epoch (wall clock at creation plus a monotonic
//! offset), so files of different ranks on synchronised hosts line up when loaded side by side.
//!
//! Why the array and not `{"traceEvents": [...]}`: a rank ended by `MPI_Abort` or kill -9 never
//! writes the closing `]`, and the array form is the one trace viewers read without it (they drop
//! a trailing comma and close the array). Each line goes to the buffer whole, so the file always
//! ends at a line. The traces of the runs one most wants to read stay readable.
//!
//! Spans are timed on the caller's thread (two `Instant::now()` calls) and handed to a writer
//! thread through an unbounded channel: a slow disk never stalls the all-reduce.
//! [`Timeline::finish`] (or Drop) closes the channel, joins the writer and closes the JSON array.

use std::borrow::Cow;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{unbounded, Receiver, Sender};
use serde_json::json;

/// Errors writing the timeline file.
#[derive(Debug, thiserror::Error)]
pub enum TimelineError {
    #[error("timeline {}: cannot write", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("timeline {}: writer thread panicked", .path.display())]
    WriterPanicked { path: PathBuf },
}

/// One lane (`tid`) per phase of a training step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// Waiting for the next batch from the input pipeline.
    InputWait,
    /// Forward and backward pass (gradients to host).
    Compute,
    /// Readiness negotiation with rank 0 (stall check).
    Negotiate,
    /// Moving and summing gradient bytes between ranks, and the divide by N.
    Allreduce,
    /// Applying the averaged gradients.
    Update,
}

impl Lane {
    /// All lanes, in trace order.
    pub const ALL: [Lane; 5] = [
        Lane::InputWait,
        Lane::Compute,
        Lane::Negotiate,
        Lane::Allreduce,
        Lane::Update,
    ];

    /// The lane name shown by the trace viewer (and the event category).
    pub fn name(self) -> &'static str {
        match self {
            Lane::InputWait => "input wait",
            Lane::Compute => "compute",
            Lane::Negotiate => "negotiate",
            Lane::Allreduce => "allreduce",
            Lane::Update => "update",
        }
    }

    /// This lane's position in [`Lane::ALL`].
    pub fn index(self) -> usize {
        self.tid()
    }

    fn tid(self) -> usize {
        Lane::ALL
            .iter()
            .position(|&p| p == self)
            .expect("every lane is in ALL")
    }
}

struct Event {
    lane: Lane,
    name: Cow<'static, str>,
    start_us: f64,
    dur_us: f64,
}

/// Handle to one rank's timeline file. Pass `Option<&Timeline>` down to what should be timed.
pub struct Timeline {
    tx: Option<Sender<Event>>,
    writer: Option<JoinHandle<Result<(), TimelineError>>>,
    origin: Instant,
    origin_unix_us: f64,
    path: PathBuf,
}

impl Timeline {
    /// Creates (truncates) `path` and starts the writer thread. `rank` becomes the trace `pid`.
    pub fn create(path: &Path, rank: usize) -> Result<Timeline, TimelineError> {
        let io = |source| TimelineError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::create(path).map_err(io)?;
        let (tx, rx) = unbounded();
        let thread_path = path.to_path_buf();
        let writer = std::thread::Builder::new()
            .name(format!("timeline-rank{rank}"))
            .spawn(move || {
                write_events(BufWriter::new(file), rank, rx).map_err(|source| TimelineError::Io {
                    path: thread_path,
                    source,
                })
            })
            .map_err(io)?;
        let origin_unix_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64() * 1e6);
        Ok(Timeline {
            tx: Some(tx),
            writer: Some(writer),
            origin: Instant::now(),
            origin_unix_us,
            path: path.to_path_buf(),
        })
    }

    /// Starts a span that ends when the returned guard is dropped (or [`Span::end`] is called).
    pub fn span(&self, lane: Lane, name: impl Into<Cow<'static, str>>) -> Span<'_> {
        Span {
            timeline: self,
            lane,
            name: Some(name.into()),
            start: Instant::now(),
        }
    }

    fn record(&self, lane: Lane, name: Cow<'static, str>, start: Instant, end: Instant) {
        let start_us = self.origin_unix_us + start.duration_since(self.origin).as_secs_f64() * 1e6;
        let dur_us = end.duration_since(start).as_secs_f64() * 1e6;
        if let Some(tx) = &self.tx {
            // A send fails only if the writer died; its error surfaces in finish().
            let _ = tx.send(Event {
                lane,
                name,
                start_us,
                dur_us,
            });
        }
    }

    /// Writes the remaining events, closes the JSON array and the file.
    pub fn finish(mut self) -> Result<(), TimelineError> {
        self.close()
    }

    fn close(&mut self) -> Result<(), TimelineError> {
        drop(self.tx.take());
        match self.writer.take() {
            Some(writer) => writer.join().map_err(|_| TimelineError::WriterPanicked {
                path: self.path.clone(),
            })?,
            None => Ok(()),
        }
    }
}

impl Drop for Timeline {
    /// Closes the file like [`Timeline::finish`]; an error here can only be dropped, so call
    /// `finish` where it matters.
    fn drop(&mut self) {
        let _ = self.close();
    }
}

/// A running span; records itself on drop.
pub struct Span<'a> {
    timeline: &'a Timeline,
    lane: Lane,
    name: Option<Cow<'static, str>>,
    start: Instant,
}

impl Span<'_> {
    /// Ends the span now (same as dropping it).
    pub fn end(self) {}
}

impl Drop for Span<'_> {
    fn drop(&mut self) {
        if let Some(name) = self.name.take() {
            self.timeline
                .record(self.lane, name, self.start, Instant::now());
        }
    }
}

/// Times `f` as a span when a timeline is given; otherwise just runs it.
pub fn timed<T>(
    timeline: Option<&Timeline>,
    lane: Lane,
    name: &'static str,
    f: impl FnOnce() -> T,
) -> T {
    let _span = timeline.map(|t| t.span(lane, name));
    f()
}

fn write_events(mut out: BufWriter<File>, rank: usize, rx: Receiver<Event>) -> std::io::Result<()> {
    out.write_all(b"[\n")?;
    let mut first = true;
    let mut put = |out: &mut BufWriter<File>, value: serde_json::Value| -> std::io::Result<()> {
        // Separator and event in one write: the buffer only ever passes whole events on.
        let mut line = if first { Vec::new() } else { b",\n".to_vec() };
        first = false;
        serde_json::to_writer(&mut line, &value).map_err(std::io::Error::other)?;
        out.write_all(&line)
    };
    put(
        &mut out,
        json!({"name": "process_name", "ph": "M", "pid": rank, "args": {"name": format!("rank {rank}")}}),
    )?;
    for lane in Lane::ALL {
        put(
            &mut out,
            json!({"name": "thread_name", "ph": "M", "pid": rank, "tid": lane.tid(), "args": {"name": lane.name()}}),
        )?;
    }
    for e in rx {
        put(
            &mut out,
            json!({
                "name": e.name, "cat": e.lane.name(), "ph": "X",
                "ts": e.start_us, "dur": e.dur_us, "pid": rank, "tid": e.lane.tid(),
            }),
        )?;
    }
    out.write_all(b"\n]\n")?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_become_valid_chrome_trace_json_with_rank_and_lanes() {
        let dir = tempfile::tempdir().unwrap();
        for n_spans in [0usize, 1, 7, 500] {
            let path = dir.path().join(format!("t{n_spans}.json"));
            let timeline = Timeline::create(&path, 3).unwrap();
            for i in 0..n_spans {
                let lane = Lane::ALL[i % Lane::ALL.len()];
                let _s = timeline.span(lane, format!("step {i}"));
            }
            timed(Some(&timeline), Lane::Update, "apply", || ());
            timeline.finish().unwrap();
            let text = std::fs::read_to_string(&path).unwrap();
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            let events = v.as_array().unwrap();
            let spans: Vec<_> = events.iter().filter(|e| e["ph"] == "X").collect();
            assert_eq!(spans.len(), n_spans + 1);
            for e in &spans {
                assert_eq!(e["pid"], 3);
                assert!(e["dur"].as_f64().unwrap() >= 0.0);
                let lane = e["tid"].as_u64().unwrap() as usize;
                assert_eq!(e["cat"], Lane::ALL[lane].name());
            }
            let names = events.iter().filter(|e| e["name"] == "thread_name").count();
            assert_eq!(names, Lane::ALL.len());
        }
    }

    #[test]
    fn drop_closes_the_array_too() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.json");
        {
            let timeline = Timeline::create(&path, 0).unwrap();
            timeline.span(Lane::Compute, "fwd").end();
        }
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(v.as_array().unwrap().len(), 1 + Lane::ALL.len() + 1);
    }

    /// What a viewer does with a file whose writer was killed: drop the trailing comma and
    /// close the array.
    fn close_cut(text: &str) -> String {
        let body = text.trim_end().trim_end_matches(',');
        if body.ends_with(']') {
            body.to_string()
        } else {
            format!("{body}]")
        }
    }

    #[test]
    fn a_file_cut_at_any_line_reads_as_its_events_so_far() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.json");
        let timeline = Timeline::create(&path, 1).unwrap();
        for i in 0..40 {
            timeline.span(Lane::Compute, format!("step {i}")).end();
        }
        timeline.finish().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.split_inclusive('\n').collect();
        // "[", the metadata, the 40 spans, "]".
        assert_eq!(lines.len(), 1 + 1 + Lane::ALL.len() + 40 + 1);
        for kept in 1..lines.len() {
            let cut = close_cut(&lines[..kept].concat());
            let v: serde_json::Value = serde_json::from_str(&cut)
                .unwrap_or_else(|e| panic!("cut after {kept} lines: {e}: {cut}"));
            assert_eq!(v.as_array().unwrap().len(), kept - 1, "{cut}");
        }
    }

    #[test]
    fn unwritable_path_is_an_error_naming_it() {
        let err = Timeline::create(Path::new("/nonexistent-dir/t.json"), 0)
            .err()
            .unwrap();
        assert!(
            err.to_string()
                .starts_with("timeline /nonexistent-dir/t.json:"),
            "{err}"
        );
    }
}
