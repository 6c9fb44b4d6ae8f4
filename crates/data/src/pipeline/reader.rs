//! The reader thread: this rank's records in pipeline order, as raw bytes with their keys.
//! Training follows [`crate::epoch_share`] epoch after epoch and answers the batcher's requests for
//! spare records; evaluation reads every record once (sorted by aspect ratio for `rect`).

use std::path::PathBuf;
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use dawnrun_records::framing::{self, RecordReader};

use super::{send_or_stop, Clock, EvalConfig, PipelineError, StopSignal, Tick, TrainConfig};
use crate::crop::{batch_aspect, rect_shape, CropSpec, EvalCrop};
use crate::epoch_share::{EpochShare, RankRecords, ShuffleBuffer};
use crate::seed::{derive_seed, rng_for, Stream};

/// `(epoch, seq)`: an item's place in the delivered order. Evaluation uses epoch 0.
pub(super) type Key = (u64, u64);

/// How a worker turns one record into pixels.
#[derive(Debug, Clone, Copy)]
pub(super) enum Job {
    /// Random-resized crop and flip drawn from a generator seeded by `augment_seed`.
    Train {
        spec: CropSpec,
        image_px: u32,
        augment_seed: u64,
    },
    /// The evaluation window ([`crate::crop::eval_crop`]) resized to `width` x `height`.
    Eval {
        crop: EvalCrop,
        width: u32,
        height: u32,
    },
}

pub(super) struct Task {
    pub key: Key,
    /// Index into the pipeline's file list.
    pub file: usize,
    /// Byte offset of the record's frame in that file.
    pub offset: u64,
    /// The record's data: a serialized tf.Example.
    pub data: Vec<u8>,
    pub job: Job,
}

/// Reader -> workers. `Fatal` and `End` pass through the workers untouched so they reach the
/// batcher in key order, after every item before them.
pub(super) enum ReaderMsg {
    Task(Task),
    Fatal(Key, PipelineError),
    End(Key),
}

/// Messages per send, reader -> workers and worker -> batcher. Each message sent to a thread
/// that sleeps on its channel costs a futex wake-up; per image, those took about a tenth of the
/// pipeline's CPU time on 2 cores (a `perf` profile). In chunks, one wake-up serves 8 images.
pub(super) const CHUNK: usize = 8;

/// The reader's end of the task queue: collects messages and sends them [`CHUNK`] at a time.
/// Whatever it holds is sent before the reader waits on anything the workers must do first.
struct Outbox<'a> {
    tx: &'a Sender<Vec<ReaderMsg>>,
    stop: &'a StopSignal,
    held: Vec<ReaderMsg>,
}

impl<'a> Outbox<'a> {
    fn new(tx: &'a Sender<Vec<ReaderMsg>>, stop: &'a StopSignal) -> Self {
        Outbox {
            tx,
            stop,
            held: Vec::with_capacity(CHUNK),
        }
    }

    /// Queues `msg`; sends the chunk when it is full or `msg` ends the stream (`Fatal`, `End`).
    /// `false` when the pipeline is stopping.
    fn push(&mut self, msg: ReaderMsg) -> bool {
        let last = !matches!(msg, ReaderMsg::Task(_));
        self.held.push(msg);
        if last || self.held.len() >= CHUNK {
            self.flush()
        } else {
            true
        }
    }

    /// Sends what is held; `false` when the pipeline is stopping.
    fn flush(&mut self) -> bool {
        if self.held.is_empty() {
            return true;
        }
        let chunk = std::mem::replace(&mut self.held, Vec::with_capacity(CHUNK));
        send_or_stop(self.tx, chunk, self.stop)
    }
}

/// Batcher -> reader (training only).
pub(super) enum Request {
    /// An image of `epoch` was skipped: read one more record of that epoch.
    More { epoch: u64 },
    /// `epoch` has all its batches: move on to the next epoch.
    EpochDone { epoch: u64 },
}

pub(super) enum Plan {
    Train(TrainConfig),
    Eval(EvalConfig),
}

pub(super) fn run(
    plan: Plan,
    files: Arc<[PathBuf]>,
    tasks: Sender<Vec<ReaderMsg>>,
    requests: Receiver<Request>,
    stop: StopSignal,
    clock: Arc<Clock>,
) {
    let mut out = Outbox::new(&tasks, &stop);
    match plan {
        Plan::Train(config) => train(&config, &files, &mut out, &requests, &clock),
        Plan::Eval(config) if config.rect => eval_rect(&config, &files, &mut out),
        Plan::Eval(config) => eval_in_order(&config, &files, &mut out),
    }
}

/// Opens file `f` as an iterator of `(f, record)` that ends early once the pipeline stops, so
/// a reader filling its shuffle buffer notices a drop within one record.
fn open_tagged(
    files: &[PathBuf],
    f: usize,
    stop: &StopSignal,
) -> Result<
    impl Iterator<Item = Result<(usize, framing::Record), framing::FramingError>>,
    framing::FramingError,
> {
    let stop = stop.clone();
    let reader = RecordReader::open(&files[f])?;
    Ok(reader
        .take_while(move |_| !stop.is_set())
        .map(move |record| record.map(|r| (f, r))))
}

/// Training: per epoch, this rank's share through the shuffle buffer; the first
/// `skip_batches * batch_size` records of the start epoch are read but not sent.
fn train(
    config: &TrainConfig,
    files: &[PathBuf],
    out: &mut Outbox,
    requests: &Receiver<Request>,
    clock: &Clock,
) {
    let stop = out.stop;
    let spec = CropSpec::train(config.min_scale);
    let batch = config.batch_size as u64;
    let needed = config.batches_per_epoch * batch;
    for epoch in config.start_epoch.. {
        let share = match EpochShare::new(
            files.len(),
            config.world_size,
            config.rank,
            config.seed,
            epoch,
        ) {
            Ok(share) => share,
            Err(e) => {
                out.push(ReaderMsg::Fatal((epoch, 0), e.into()));
                return;
            }
        };
        let records = RankRecords::new(share, |f| open_tagged(files, f, stop));
        let rng = rng_for(Stream::Shuffle, &[config.seed, epoch, config.rank]);
        let mut stream = ShuffleBuffer::new(records, needed, config.shuffle_buffer, rng);
        let first = if epoch == config.start_epoch {
            config.skip_batches * batch
        } else {
            0
        };
        let mut target = needed;
        let mut seq = 0;
        loop {
            // Requests for spares may arrive while this epoch is still being read.
            let mut epoch_done = false;
            loop {
                match requests.try_recv() {
                    Ok(request) => epoch_done |= apply(request, epoch, &mut target),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return,
                }
            }
            if epoch_done {
                break;
            }
            if seq < target {
                // An error while skipping must still reach the batcher, which starts at `first`.
                let fatal_key = (epoch, seq.max(first));
                let reading = std::time::Instant::now();
                let item = stream.next();
                clock.add(Tick::Read, reading.elapsed());
                if stop.is_set() {
                    return;
                }
                let msg = match item {
                    Some(Ok((file, record))) => {
                        let augment_seed =
                            derive_seed(Stream::Augment, &[config.seed, epoch, config.rank, seq]);
                        let job = Job::Train {
                            spec,
                            image_px: config.image_px,
                            augment_seed,
                        };
                        ReaderMsg::Task(Task {
                            key: (epoch, seq),
                            file,
                            offset: record.offset,
                            data: record.data,
                            job,
                        })
                    }
                    Some(Err(e)) => ReaderMsg::Fatal(fatal_key, e.into()),
                    None => {
                        let e = PipelineError::NoRecords {
                            rank: config.rank,
                            epoch,
                            files: files.len(),
                        };
                        ReaderMsg::Fatal(fatal_key, e)
                    }
                };
                let fatal = matches!(msg, ReaderMsg::Fatal(..));
                if fatal {
                    out.push(msg);
                    return;
                }
                // Records before `first` were delivered before the resume: read, not sent.
                if seq >= first && !out.push(msg) {
                    return;
                }
                seq += 1;
                continue;
            }
            // Everything asked for is read: send it, then wait for a spare request or the
            // epoch's end (which need the workers to finish what is sent).
            if !out.flush() {
                return;
            }
            crossbeam_channel::select! {
                recv(requests) -> request => match request {
                    Ok(request) => {
                        if apply(request, epoch, &mut target) {
                            break;
                        }
                    }
                    Err(_) => return,
                },
                recv(stop.0) -> _ => return,
            }
        }
    }
}

/// Applies a batcher request to the reading of `epoch`; `true` when that epoch is complete.
fn apply(request: Request, epoch: u64, target: &mut u64) -> bool {
    match request {
        Request::More { epoch: e } if e == epoch => *target += 1,
        Request::EpochDone { epoch: e } => return e == epoch,
        Request::More { .. } => {}
    }
    false
}

fn eval_job(config: &EvalConfig, width: u32, height: u32) -> Job {
    Job::Eval {
        crop: config.crop,
        width,
        height,
    }
}

/// Evaluation in file order: every record of every file, then `End`.
fn eval_in_order(config: &EvalConfig, files: &[PathBuf], out: &mut Outbox) {
    let stop = out.stop;
    let job = eval_job(config, config.image_px, config.image_px);
    let mut seq = 0;
    for f in 0..files.len() {
        let records = match open_tagged(files, f, stop) {
            Ok(records) => records,
            Err(e) => {
                out.push(ReaderMsg::Fatal((0, seq), e.into()));
                return;
            }
        };
        for record in records {
            let msg = match record {
                Ok((file, r)) => ReaderMsg::Task(Task {
                    key: (0, seq),
                    file,
                    offset: r.offset,
                    data: r.data,
                    job,
                }),
                Err(e) => ReaderMsg::Fatal((0, seq), e.into()),
            };
            let fatal = matches!(msg, ReaderMsg::Fatal(..));
            if !out.push(msg) || fatal {
                return;
            }
            seq += 1;
        }
        if stop.is_set() {
            return;
        }
    }
    out.push(ReaderMsg::End((0, seq)));
}

/// Rectangular evaluation: pass 1 reads every record's JPEG header for its aspect ratio
/// (rounded to 5 decimals), sorts by it (ties keep file order) and gives each run of
/// `batch_size` the shape of imagenet18's rule (mean aspect of the run, [`rect_shape`]); pass 2
/// reads the records in that order by offset. Reads the set twice; only validation sets use it.
fn eval_rect(config: &EvalConfig, files: &[PathBuf], out: &mut Outbox) {
    let stop = out.stop;
    let mut entries: Vec<(usize, u64, f64)> = Vec::new();
    for f in 0..files.len() {
        let records = match open_tagged(files, f, stop) {
            Ok(records) => records,
            Err(e) => {
                out.push(ReaderMsg::Fatal((0, 0), e.into()));
                return;
            }
        };
        for record in records {
            match record {
                Ok((file, r)) => {
                    // An unreadable image sorts as square; its worker reports it properly.
                    let aspect = dawnrun_records::imagenet::decode_for_training(&r.data)
                        .ok()
                        .and_then(|(jpeg, _)| crate::jpeg_header::jpeg_size(jpeg).ok())
                        .map_or(1.0, |(w, h)| {
                            (f64::from(w) / f64::from(h) * 1e5).round() / 1e5
                        });
                    entries.push((file, r.offset, aspect));
                }
                Err(e) => {
                    out.push(ReaderMsg::Fatal((0, 0), e.into()));
                    return;
                }
            }
        }
        if stop.is_set() {
            return;
        }
    }
    entries.sort_by(|a, b| a.2.total_cmp(&b.2));
    let mut readers: Vec<Option<RecordReader>> = (0..files.len()).map(|_| None).collect();
    let mut seq = 0;
    for group in entries.chunks(config.batch_size.max(1)) {
        let aspects: Vec<f64> = group.iter().map(|e| e.2).collect();
        let (width, height) = rect_shape(config.image_px, batch_aspect(&aspects));
        for &(file, offset, _) in group {
            let msg = match read_at(&mut readers, files, file, offset) {
                Ok(data) => ReaderMsg::Task(Task {
                    key: (0, seq),
                    file,
                    offset,
                    data,
                    job: eval_job(config, width, height),
                }),
                Err(e) => ReaderMsg::Fatal((0, seq), e),
            };
            let fatal = matches!(msg, ReaderMsg::Fatal(..));
            if !out.push(msg) || fatal {
                return;
            }
            seq += 1;
        }
    }
    out.push(ReaderMsg::End((0, seq)));
}

/// Reads the record at `offset` of file `file`, keeping one open reader per file.
fn read_at(
    readers: &mut [Option<RecordReader>],
    files: &[PathBuf],
    file: usize,
    offset: u64,
) -> Result<Vec<u8>, PipelineError> {
    let reader = match &mut readers[file] {
        Some(reader) => reader,
        slot => slot.insert(RecordReader::open(&files[file])?),
    };
    reader.seek(offset)?;
    match reader.next_record()? {
        Some(record) => Ok(record.data),
        None => Err(framing::FramingError::NoRecordAt {
            path: files[file].clone(),
            offset,
        }
        .into()),
    }
}
