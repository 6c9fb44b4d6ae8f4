//! What a training run tells the world, written by rank 0 only: the step line on stderr (the
//! 106-minute run's fields, so the two logs sit side by side), the same as JSON lines in
//! `<run-dir>/metrics.jsonl`, and TensorBoard scalars in `<run-dir>/events.out.tfevents.*`.
//!
//! Files are written by a thread of their own behind a channel, so a slow disk never stalls the
//! step loop (and with it the all-reduce of every other rank).

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use crossbeam_channel::{Receiver, Sender};
use dawnrun_records::event::EventWriter;
use dawnrun_schedule::{PhasePlan, Plan};
use serde::{Deserialize, Serialize};

use crate::model::StepMetrics;
use crate::run_dir::RunDir;

/// One logged step. `images_per_s` is the sum over ranks (global batch / step time).
#[derive(Debug, Clone, Serialize)]
pub struct StepRecord {
    pub step: u64,
    pub epoch: f64,
    pub images_per_s: f64,
    pub loss: f32,
    pub total_loss: f32,
    pub lr: f64,
    pub batch_per_rank: usize,
    pub global_batch: usize,
    pub image_px: usize,
    pub top1: f32,
    pub top5: f32,
    pub loss_scale: f32,
    /// Fraction of the interval's wall time spent waiting for the input pipeline.
    pub input_wait: f64,
    /// Images skipped as undecodable so far, summed over all ranks.
    pub skipped_images: u64,
    pub elapsed_s: f64,
}

/// The counts after a step that are not the graph's output.
#[derive(Debug, Clone, Copy)]
pub struct Tally {
    /// Images trained on in this step, over all ranks.
    pub images: usize,
    pub loss_scale: f32,
    /// Images skipped so far, over all ranks.
    pub skipped_images: u64,
    /// Training seconds so far.
    pub elapsed_s: f64,
}

impl StepRecord {
    /// The step line, fields as in the 106-minute run's log.
    pub fn line(&self) -> String {
        format!(
            "step {:>7}  epoch {:>6.2}  img/s {:>8.1}  loss {:.4}  total_loss {:.4}  lr {:.5}  bs {:>4}  sz {:>3}  top5 {:.3}  wait {:>3.0}%  time {}",
            self.step,
            self.epoch,
            self.images_per_s,
            self.loss,
            self.total_loss,
            self.lr,
            self.batch_per_rank,
            self.image_px,
            self.top5,
            self.input_wait * 100.0,
            hms(self.elapsed_s)
        )
    }
}

/// `h:mm:ss`, the way the reference logs print elapsed time.
pub fn hms(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    format!("{}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
}

enum LogMsg {
    Step(StepRecord),
    /// Flush, then answer (a dropped answer: the writer stopped on an error).
    Flush(Sender<()>),
}

/// Averages since the last logged step.
struct Window {
    start: Instant,
    images: usize,
    input_wait: Duration,
}

impl Window {
    fn new() -> Self {
        Window {
            start: Instant::now(),
            images: 0,
            input_wait: Duration::ZERO,
        }
    }
}

/// Rank 0's logger. Other ranks hold `StepLog::silent()`.
pub struct StepLog {
    tx: Option<Sender<LogMsg>>,
    writer: Option<JoinHandle<Result<()>>>,
    bar: Option<indicatif::ProgressBar>,
    /// The plan (epochs, lr, logging interval) and the run's last step.
    plan: Option<(Plan, u64)>,
    window: Window,
}

impl StepLog {
    pub fn silent() -> Self {
        StepLog {
            tx: None,
            writer: None,
            bar: None,
            plan: None,
            window: Window::new(),
        }
    }

    /// Opens `metrics.jsonl` (appending, so a resumed run keeps its history, less the records
    /// it will write again) and a new TensorBoard event file in `run_dir`. The run logs steps
    /// `first_step..end_step` of `plan`; the progress bar is shown only when stderr is a terminal
    /// (under mpirun it is not).
    pub fn create(run_dir: &RunDir, plan: &Plan, first_step: u64, end_step: u64) -> Result<Self> {
        let metrics_path = run_dir.metrics();
        let run_dir = run_dir.events_dir();
        let metrics = open_metrics(&metrics_path, plan.epoch_at(first_step))?;
        let mut events = EventWriter::create(run_dir).with_context(|| {
            format!(
                "{}: cannot create a TensorBoard event file",
                run_dir.display()
            )
        })?;
        if first_step > 0 {
            // TensorBoard drops the earlier files' points from this step on: the steps an
            // earlier run logged after its last checkpoint are logged again by this one.
            events
                .session_start(first_step as i64 + 1)
                .context("TensorBoard event write failed")?;
        }
        let (tx, rx) = crossbeam_channel::bounded(1024);
        let path = metrics_path.clone();
        let writer = std::thread::Builder::new()
            .name("step-log".into())
            .spawn(move || write_loop(rx, BufWriter::new(metrics), path, events))
            .context("cannot start the log writer thread")?;
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(end_step);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:40} {pos}/{len} steps  {per_sec}  eta {eta}",
                )
                .expect("static template is valid"),
            );
            bar.set_position(first_step);
            bar
        });
        Ok(StepLog {
            tx: Some(tx),
            writer: Some(writer),
            bar,
            plan: Some((plan.clone(), end_step)),
            window: Window::new(),
        })
    }

    /// A phase begins: its line, and fresh averages.
    pub fn start_phase(&mut self, p: &PhasePlan, world_size: usize) {
        self.window = Window::new();
        self.note(&format!(
            "phase {}: epochs {}-{}, steps {}..{}, {} px, batch {}/rank x {} = {}, lr {} -> {} ({:?}), data {}/{}",
            p.index, p.epoch_start, p.epoch_end, p.first_step, p.end_step, p.image_px,
            p.batch_per_rank, world_size, p.global_batch, p.lr_start, p.lr_end, p.method, p.data_dir,
            p.prefix
        ));
    }

    /// Time spent waiting for the input pipeline (the step line reports its share).
    pub fn waited(&mut self, wait: Duration) {
        self.window.input_wait += wait;
    }

    /// After each step: `steps_done` steps are applied, `images` were trained on over all ranks.
    /// On the plan's logging steps (and the last) it prints the step line and writes the record.
    pub fn after_step(&mut self, steps_done: u64, phase: &PhasePlan, out: &StepMetrics, t: Tally) {
        self.window.images += t.images;
        if let Some(bar) = &self.bar {
            bar.set_position(steps_done);
        }
        let Some((plan, end_step)) = &self.plan else {
            return;
        };
        let every = plan.run.log_every_steps.max(1);
        if !(steps_done.is_multiple_of(every) || steps_done == *end_step) {
            return;
        }
        let seconds = self.window.start.elapsed().as_secs_f64();
        let record = StepRecord {
            step: steps_done,
            epoch: plan.epoch_at(steps_done),
            images_per_s: self.window.images as f64 / seconds,
            loss: out.loss,
            total_loss: out.total_loss,
            lr: plan.lr_at(steps_done - 1),
            batch_per_rank: phase.batch_per_rank as usize,
            global_batch: phase.global_batch as usize,
            image_px: phase.image_px as usize,
            top1: out.top1,
            top5: out.top5,
            loss_scale: t.loss_scale,
            input_wait: self.window.input_wait.as_secs_f64() / seconds,
            skipped_images: t.skipped_images,
            elapsed_s: t.elapsed_s,
        };
        self.window = Window::new();
        self.write(record);
    }

    /// Prints the step line and queues the record for the files.
    fn write(&self, record: StepRecord) {
        let Some(tx) = &self.tx else { return };
        match &self.bar {
            Some(bar) => bar.println(record.line()),
            None => say!("{}", record.line()),
        }
        // The writer only stops on an I/O error, which `finish` reports.
        let _ = tx.send(LogMsg::Step(record));
    }

    /// A plain message on rank 0's log (phase changes, checkpoints).
    pub fn note(&self, text: &str) {
        if self.tx.is_none() {
            return;
        }
        match &self.bar {
            Some(bar) => bar.println(text),
            None => say!("{text}"),
        }
    }

    /// Has the writer hand what it has to the OS, and waits for it (before a checkpoint, so a
    /// killed run's logs never lag behind its newest checkpoint). A stopped writer has already
    /// said why; `finish` reports it.
    pub fn flush(&self) {
        if let Some(tx) = &self.tx {
            let (done, flushed) = crossbeam_channel::bounded(1);
            if tx.send(LogMsg::Flush(done)).is_ok() {
                let _ = flushed.recv();
            }
        }
    }

    /// Closes the files and reports any write error.
    pub fn finish(mut self) -> Result<()> {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        drop(self.tx.take());
        match self.writer.take() {
            Some(handle) => handle
                .join()
                .map_err(|_| anyhow::anyhow!("the log writer thread panicked"))?,
            None => Ok(()),
        }
    }
}

impl Drop for StepLog {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(handle) = self.writer.take() {
            let _ = handle.join();
        }
    }
}

/// Writes until the channel closes. A write error (a full disk) is printed when it happens, not
/// only when the run ends, and the writer stops; `finish` returns the same error.
fn write_loop(
    rx: Receiver<LogMsg>,
    metrics: BufWriter<File>,
    path: PathBuf,
    events: EventWriter,
) -> Result<()> {
    let result = write_records(&rx, metrics, path, events);
    if let Err(e) = &result {
        say!("rank 0: warning: the step log stops here: {e:#}");
        // Keep draining, so the step loop never blocks on a full channel.
        for _ in rx {}
    }
    result
}

fn write_records(
    rx: &Receiver<LogMsg>,
    mut metrics: BufWriter<File>,
    path: PathBuf,
    mut events: EventWriter,
) -> Result<()> {
    let ctx = || format!("{}: write failed", path.display());
    for msg in rx {
        match msg {
            LogMsg::Step(r) => {
                // One write per whole line: the buffer then only ever hands whole lines on.
                let mut line = serde_json::to_vec(&r).expect("plain struct serialises");
                line.push(b'\n');
                metrics.write_all(&line).with_context(ctx)?;
                let step = r.step as i64;
                for (tag, value) in [
                    ("loss", r.loss),
                    ("total_loss", r.total_loss),
                    ("learning_rate", r.lr as f32),
                    ("images_per_sec", r.images_per_s as f32),
                    ("train_top1", r.top1),
                    ("train_top5", r.top5),
                    ("batch_size", r.batch_per_rank as f32),
                    ("image_size", r.image_px as f32),
                    ("epoch", r.epoch as f32),
                    ("loss_scale", r.loss_scale),
                    ("skipped_images", r.skipped_images as f32),
                ] {
                    events
                        .scalar(tag, step, value)
                        .context("TensorBoard event write failed")?;
                }
            }
            LogMsg::Flush(done) => {
                metrics.flush().with_context(ctx)?;
                events.flush().context("TensorBoard event flush failed")?;
                let _ = done.send(());
            }
        }
    }
    metrics.flush().with_context(ctx)?;
    events.flush().context("TensorBoard event flush failed")?;
    Ok(())
}

/// Opens `metrics.jsonl` for appending, first cutting what this run will write again: the
/// records past `epoch` (an earlier run logged them after its last checkpoint, and this run
/// repeats those steps) and an unfinished last line (a process killed mid-write). The epoch, not
/// the step, marks the cut: a resume at another world size numbers its steps anew.
fn open_metrics(path: &Path, epoch: f64) -> Result<File> {
    let mut file = OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(path)
        .with_context(|| format!("{}: cannot open for appending", path.display()))?;
    // Read through the handle that will append, so the text cut is the file's.
    let mut text = Vec::new();
    file.read_to_end(&mut text)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    let (keep, dropped) = metrics_to_keep(&text, epoch);
    if keep < text.len() {
        file.set_len(keep as u64)
            .with_context(|| format!("{}: cannot truncate", path.display()))?;
        let mut cut = Vec::new();
        if dropped > 0 {
            cut.push(format!(
                "{dropped} record(s) past epoch {epoch:.4} (logged after the checkpoint; this run \
                 logs those steps again)"
            ));
        }
        if !text.ends_with(b"\n") {
            cut.push("an unfinished last line".to_string());
        }
        say!("rank 0: {}: cut {}", path.display(), cut.join(" and "));
    }
    Ok(file)
}

/// How many bytes of a `metrics.jsonl` to keep before appending from `epoch` on, and how many
/// whole records that drops. Lines that are not our records are kept (they are not ours to
/// judge); the cut is at the first record past `epoch`, or at an unfinished last line.
fn metrics_to_keep(text: &[u8], epoch: f64) -> (usize, usize) {
    #[derive(Deserialize)]
    struct Logged {
        epoch: f64,
    }
    let mut start = 0;
    while let Some(len) = text[start..].iter().position(|&b| b == b'\n') {
        let line = &text[start..start + len];
        let past = serde_json::from_slice::<Logged>(line).is_ok_and(|r| r.epoch > epoch + 1e-9);
        if past {
            break;
        }
        start += len + 1;
    }
    let dropped = text[start..].iter().filter(|&&b| b == b'\n').count();
    (start, dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resume_cuts_the_records_past_its_epoch_and_an_unfinished_line() {
        let rec = |e: f64| format!("{{\"step\":{},\"epoch\":{e},\"loss\":1.0}}\n", e * 10.0);
        let whole = format!("{}{}{}{}", rec(0.1), rec(0.2), rec(0.3), rec(0.4));
        // Up to the checkpoint's epoch everything stays; past it, whole records go.
        assert_eq!(metrics_to_keep(whole.as_bytes(), 0.4), (whole.len(), 0));
        let upto = rec(0.1).len() + rec(0.2).len();
        assert_eq!(metrics_to_keep(whole.as_bytes(), 0.2), (upto, 2));
        assert_eq!(metrics_to_keep(whole.as_bytes(), 0.0), (0, 4));
        // A line cut by a kill is dropped even at the last epoch.
        let cut = format!("{}{{\"step\":5,\"ep", &whole);
        assert_eq!(metrics_to_keep(cut.as_bytes(), 0.4), (whole.len(), 0));
        assert_eq!(
            metrics_to_keep(cut.as_bytes(), 0.3),
            (whole.len() - rec(0.4).len(), 1)
        );
        // A line that is not a record is kept; the first record past the epoch still cuts.
        let odd = format!("{}not json\n{}", rec(0.1), rec(0.5));
        assert_eq!(
            metrics_to_keep(odd.as_bytes(), 0.2),
            (rec(0.1).len() + "not json\n".len(), 1)
        );
        assert_eq!(metrics_to_keep(b"", 0.0), (0, 0));
    }

    #[test]
    fn elapsed_time_prints_as_hours_minutes_seconds() {
        assert_eq!(hms(0.0), "0:00:00");
        assert_eq!(hms(6273.32), "1:44:33");
        assert_eq!(hms(59.6), "0:01:00");
    }
}
