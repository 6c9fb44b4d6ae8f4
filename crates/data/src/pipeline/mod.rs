//! The input pipeline: shard files -> reader thread -> decode workers -> batcher -> consumer.
//! Threads and bounded crossbeam channels, in the shape of burn's multithreaded loader: a
//! message enum (`BatcherMsg`) whose `Error` variant carries a stage's failure to the consumer,
//! seeds derived per item, and a `Drop` that stops and joins every thread.
//!
//! Data flow and ordering:
//! 1. The reader reads this rank's records ([`crate::epoch_share`]) and numbers them: key
//!    `(epoch, seq)`, `seq` counting from 0 in each epoch in shuffle-buffer output order. It sends
//!    raw record bytes (bounded queue), so parsing and decoding run in parallel on the workers.
//! 2. Each worker parses the tf.Example, decodes, crops, resizes and flips one image. The crop and
//!    flip draw from a generator seeded by (seed, epoch, rank, seq): which thread decodes an image
//!    never changes its pixels.
//! 3. The batcher puts results back in key order (a reorder buffer) and fills batches with the
//!    next successful images in that order. Batches therefore depend only on (files, seed, epoch,
//!    rank, skip_batches), never on thread timing. The workers write each image straight into
//!    its place in a batch buffer (`slots.rs`); the batcher copies pixels only from a skip to the
//!    end of that epoch.
//!    Reader -> worker and worker -> batcher messages carry up to 8 items (`reader::CHUNK`), so
//!    a sleeping thread is woken about once per 8 images, not per image.
//! 4. A JPEG that does not decode is skipped, counted and named ([`PipelineStats::skipped`]); the
//!    batcher asks the reader for one more record of that epoch (a spare, read past the epoch's
//!    share in reading order), so batches stay full and every epoch still has exactly
//!    `batches_per_epoch` batches. The reader only moves to the next epoch when the batcher says
//!    the epoch is complete, a short pause once per epoch that the prefetched batches cover.
//!    An epoch that skips more images than it trains on stops the pipeline
//!    ([`PipelineError::TooManySkipped`]): on records where nothing decodes, spares would be
//!    read without end.
//! 5. Damage to the container (a record frame failing its CRC, an Example without an image or a
//!    label) stops the pipeline: the error travels in key order, after the batches before it,
//!    and names the file and byte offset.
//!
//! Shutdown (drop of a pipeline, in this order):
//! 1. drop the stop sender: every blocking send/receive in every thread also waits on the stop
//!    channel, so all of them wake up and return;
//! 2. drop the consumer's end of the output queue;
//! 3. join the reader, the workers and the batcher. No thread is detached; none can stay blocked.
//!
//! Resume inside an epoch: `skip_batches = k` drops the first `k * batch_size` records of the
//! start epoch's sequence before decoding. It equals dropping the first `k` batches exactly when
//! no JPEG in those batches was skipped as corrupt (each skipped one shifts the stream by one).

mod batcher;
mod reader;
mod slots;
mod worker;

pub use worker::panic_is_caught;

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError};

use crate::batch::Batch;
use crate::epoch_share::EpochShareError;

/// Records held by the shuffle buffer when a config does not say otherwise.
pub const DEFAULT_SHUFFLE_BUFFER: usize = 2048;

/// What the training pipeline reads and produces. Rank and world size are plain numbers (no MPI).
#[derive(Debug, Clone)]
pub struct TrainConfig {
    /// Every shard file of the phase's data (all ranks get the same list; dealing is ours).
    pub files: Vec<PathBuf>,
    pub rank: u64,
    pub world_size: u64,
    /// Images per batch on this rank.
    pub batch_size: usize,
    /// Output side in pixels (square crops).
    pub image_px: u32,
    /// Lower bound of the crop's area fraction (0.08 in the reference).
    pub min_scale: f64,
    pub seed: u64,
    /// First epoch to produce (0-based).
    pub start_epoch: u64,
    /// Batches of `start_epoch` already consumed before a resume.
    pub skip_batches: u64,
    /// `floor(total_images / (batch_size * world_size))`, the same on every rank.
    pub batches_per_epoch: u64,
    pub decode_threads: usize,
    /// Finished batches queued ahead of the consumer.
    pub prefetch_batches: usize,
    /// Records held by the shuffle buffer ([`DEFAULT_SHUFFLE_BUFFER`]); memory is about this
    /// many encoded JPEGs.
    pub shuffle_buffer: usize,
    /// JPEGs whose header claims more pixels are skipped before any allocation (the schedule's
    /// `run.max_image_pixels`; [`crate::decode::DEFAULT_MAX_IMAGE_PIXELS`]).
    pub max_image_pixels: u64,
    /// Classes of the network: a record whose stored (1-based) label is outside
    /// `1..=num_classes` stops the pipeline with [`PipelineError::Label`].
    pub num_classes: u32,
}

/// What the evaluation pipeline reads and produces.
#[derive(Debug, Clone)]
pub struct EvalConfig {
    /// Validation shards, read in this order, every record once.
    pub files: Vec<PathBuf>,
    /// Images per batch; the last batch may be smaller.
    pub batch_size: usize,
    /// Output side in pixels (the short side when `rect`).
    pub image_px: u32,
    /// Which window of each image is kept ([`crate::crop::eval_crop`] states the rule).
    pub crop: crate::crop::EvalCrop,
    pub decode_threads: usize,
    /// Rectangular validation (fast.ai's imagenet18): records sorted by aspect ratio, each
    /// batch resized to one shape of its own whose short side is `image_px`
    /// ([`crate::crop::rect_shape`] and [`crate::crop::batch_aspect`] give imagenet18's rule).
    pub rect: bool,
    /// As [`TrainConfig::max_image_pixels`].
    pub max_image_pixels: u64,
    /// As [`TrainConfig::num_classes`].
    pub num_classes: u32,
}

/// The stage a pipeline error came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Reader,
    Decode,
    Batcher,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::Reader => "reader",
            Stage::Decode => "decode",
            Stage::Batcher => "batcher",
        })
    }
}

/// Errors of the pipeline. Each names the file and byte offset when one is involved.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("pipeline config: {what}")]
    Config { what: String },
    #[error(transparent)]
    Shards(#[from] EpochShareError),
    #[error(transparent)]
    Records(#[from] dawnrun_records::framing::FramingError),
    #[error(transparent)]
    Index(#[from] dawnrun_records::index::IndexError),
    #[error("{}: byte {offset}: bad tf.Example", .path.display())]
    Example {
        path: PathBuf,
        offset: u64,
        source: dawnrun_records::imagenet::ImagenetError,
    },
    /// Not a per-image skip: a label outside the network's classes means the records were made
    /// for another class list.
    #[error("{}: byte {offset}: label {label} (as stored, 1-based) outside the network's classes 1..={num_classes}: these records do not belong to this network", .path.display())]
    Label {
        path: PathBuf,
        offset: u64,
        /// As stored in `image/class/label` (1-based).
        label: i64,
        num_classes: u32,
    },
    /// Records where (nearly) nothing decodes: skipping would read spares without end.
    #[error(
        "epoch {epoch}: {skipped} undecodable JPEGs skipped in this rank's share (a record met \
         again as a spare counts again), more than the epoch's {trains_on} images; the last: {}: \
         record at byte {}: {}. These records are damaged beyond skipping: rebuild them with \
         build-records",
        .last.file.display(), .last.offset, .last.cause
    )]
    TooManySkipped {
        epoch: u64,
        skipped: u64,
        trains_on: u64,
        last: SkippedImage,
    },
    #[error("rank {rank}: epoch {epoch}: its {files} shard file(s) hold no records")]
    NoRecords { rank: u64, epoch: u64, files: usize },
    #[error("cannot start the {stage} thread")]
    Spawn {
        stage: Stage,
        source: std::io::Error,
    },
    #[error("{stage} stage")]
    InStage {
        stage: Stage,
        source: Box<PipelineError>,
    },
    #[error("the {stage} stage stopped without a message (a thread panicked?)")]
    Stopped { stage: Stage },
    /// A broken invariant of the pipeline itself, reported instead of a panic.
    #[error("internal pipeline error: {what}")]
    Internal { what: String },
}

/// One JPEG the pipeline could not decode and skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedImage {
    pub file: PathBuf,
    /// Byte offset of the record's frame in `file` (`read_record_at(file, offset)` finds it).
    pub offset: u64,
    pub cause: String,
    /// The record's `image/filename` (evaluation reads it; training does not), so that an
    /// excluded image that does not decode is not counted as a miss.
    pub filename: Option<String>,
}

/// Counters for logs and benchmarks.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PipelineStats {
    /// Images decoded and delivered in batches.
    pub images_decoded: u64,
    /// JPEGs skipped as undecodable, in delivery order.
    pub skipped: Vec<SkippedImage>,
    /// Time `next()` spent blocked waiting for a batch: the graph waiting on the CPU pipeline.
    pub consumer_wait: Duration,
    /// Where the pipeline's threads spent their time (training; evaluation fills all but
    /// `read`).
    pub stages: StageTimes,
}

/// Busy time per stage, summed over the threads of that stage (with N decode workers, parse +
/// decode + resize can add up to N x the wall time). `pipeline-bench` prints it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StageTimes {
    /// Reader thread: reading record frames (CRC checked) through the shuffle buffer.
    pub read: Duration,
    /// Workers: parsing the tf.Example.
    pub parse: Duration,
    /// Workers: JPEG header, entropy decoding, IDCT and colour conversion of the crop's region.
    pub decode: Duration,
    /// Workers: the bilinear resize of the crop into the image's slot, and the flip.
    pub resize: Duration,
    /// Batcher: reordering, moving images down after a skip, handing batches over.
    pub batch: Duration,
}

/// The stage clocks the threads add to, in nanoseconds.
#[derive(Default)]
pub(crate) struct Clock {
    read: AtomicU64,
    parse: AtomicU64,
    decode: AtomicU64,
    resize: AtomicU64,
    batch: AtomicU64,
}

/// Which of [`Clock`]'s counters.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Tick {
    Read,
    Parse,
    Decode,
    Resize,
    Batch,
}

impl Clock {
    pub(crate) fn add(&self, tick: Tick, d: Duration) {
        let counter = match tick {
            Tick::Read => &self.read,
            Tick::Parse => &self.parse,
            Tick::Decode => &self.decode,
            Tick::Resize => &self.resize,
            Tick::Batch => &self.batch,
        };
        counter.fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }

    fn times(&self) -> StageTimes {
        let get = |c: &AtomicU64| Duration::from_nanos(c.load(Ordering::Relaxed));
        StageTimes {
            read: get(&self.read),
            parse: get(&self.parse),
            decode: get(&self.decode),
            resize: get(&self.resize),
            batch: get(&self.batch),
        }
    }
}

/// What the batcher hands to the consumer.
enum BatcherMsg {
    /// A batch, and how many images the pipeline had skipped when it made it: the skips that
    /// belong to the batches handed out so far, not to those prefetched past them.
    Batch(Batch, usize),
    Error(Stage, PipelineError),
    /// Evaluation only: every record delivered.
    Done,
}

/// Counters the batcher updates and `stats()` reads.
#[derive(Default)]
struct Shared {
    decoded: AtomicU64,
    skipped: Mutex<Vec<SkippedImage>>,
    clock: Arc<Clock>,
}

/// Becomes "set" when the pipeline's stop sender is dropped; every blocking channel operation
/// selects on it too.
#[derive(Clone)]
struct StopSignal(Receiver<()>);

impl StopSignal {
    fn is_set(&self) -> bool {
        matches!(self.0.try_recv(), Err(TryRecvError::Disconnected))
    }
}

/// The threads and channels common to both pipelines.
struct Engine {
    output: Option<Receiver<BatcherMsg>>,
    slots: Arc<slots::Slots>,
    /// Dropping the sender is the stop signal; shared with [`PipelineStop`] handles.
    stop: PipelineStop,
    threads: Vec<JoinHandle<()>>,
    shared: Arc<Shared>,
    waited: Duration,
    finished: bool,
    /// Skips up to the last batch handed to the consumer ([`BatcherMsg::Batch`]).
    delivered_skips: usize,
}

impl Engine {
    /// Blocks for the next message; `None` after the evaluation's end.
    fn next(&mut self) -> Option<Result<Batch, PipelineError>> {
        if self.finished {
            return None;
        }
        let output = self.output.as_ref().expect("output is only taken by drop");
        let start = Instant::now();
        let msg = output.recv();
        self.waited += start.elapsed();
        match msg {
            Ok(BatcherMsg::Batch(batch, skips)) => {
                self.delivered_skips = skips;
                Some(Ok(batch))
            }
            Ok(BatcherMsg::Done) => {
                self.finished = true;
                None
            }
            Ok(BatcherMsg::Error(stage, source)) => {
                self.finished = true;
                Some(Err(PipelineError::InStage {
                    stage,
                    source: Box::new(source),
                }))
            }
            Err(_) => {
                self.finished = true;
                Some(Err(PipelineError::Stopped {
                    stage: Stage::Batcher,
                }))
            }
        }
    }

    fn give_back(&self, batch: Batch) {
        self.slots.give_back(batch.images);
    }

    fn skipped_since(&self, seen: usize) -> Vec<SkippedImage> {
        self.shared
            .skipped
            .lock()
            .map(|s| {
                s.get(seen..self.delivered_skips.min(s.len()))
                    .unwrap_or_default()
                    .to_vec()
            })
            .unwrap_or_default()
    }

    fn stats(&self) -> PipelineStats {
        PipelineStats {
            images_decoded: self.shared.decoded.load(Ordering::Relaxed),
            skipped: self
                .shared
                .skipped
                .lock()
                .map(|s| s.clone())
                .unwrap_or_default(),
            consumer_wait: self.waited,
            stages: self.shared.clock.times(),
        }
    }
}

impl Drop for Engine {
    /// The shutdown protocol of the module doc: stop, drop the output, join everything.
    fn drop(&mut self) {
        self.stop.stop();
        drop(self.output.take());
        for thread in self.threads.drain(..) {
            // A panicked thread has nothing left to clean up; its panic was already printed.
            let _ = thread.join();
        }
    }
}

/// Stops a pipeline from another thread than the one that owns it: its threads wind down and a
/// `next` waiting on them returns [`PipelineError::Stopped`]. Dropping the pipeline still joins
/// them. Clones stop the same pipeline.
#[derive(Clone)]
pub struct PipelineStop(Arc<Mutex<Option<Sender<()>>>>);

impl PipelineStop {
    pub fn stop(&self) {
        if let Ok(mut sender) = self.0.lock() {
            drop(sender.take());
        }
    }
}

/// Sends `msg` unless the pipeline is stopping; `false` means: return, nobody is listening.
fn send_or_stop<T>(tx: &Sender<T>, msg: T, stop: &StopSignal) -> bool {
    crossbeam_channel::select! {
        send(tx, msg) -> sent => sent.is_ok(),
        recv(stop.0) -> _ => false,
    }
}

fn spawn(
    stage: Stage,
    name: &str,
    body: impl FnOnce() + Send + 'static,
) -> Result<JoinHandle<()>, PipelineError> {
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(body)
        .map_err(|source| PipelineError::Spawn { stage, source })
}

/// Starts reader, workers and batcher for `plan`; on a spawn failure, the threads already
/// started are stopped and joined by the partially built engine's drop.
fn start_engine(
    files: Arc<[PathBuf]>,
    limits: worker::Limits,
    decode_threads: usize,
    queue: usize,
    prefetch: usize,
    reader: reader::Plan,
    batching: batcher::Batching,
) -> Result<Engine, PipelineError> {
    let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
    let stop = StopSignal(stop_rx);
    // Both queues carry chunks of `CHUNK` items; `queue` counts items.
    let chunks = queue.div_ceil(reader::CHUNK).max(2);
    let (task_tx, task_rx) = crossbeam_channel::bounded(chunks);
    let (result_tx, result_rx) = crossbeam_channel::bounded(chunks);
    let (request_tx, request_rx) = crossbeam_channel::unbounded();
    let (output_tx, output_rx) = crossbeam_channel::bounded(prefetch.max(1));
    // Workers decode into the batch buffers; the batcher takes the batches out.
    let slots = Arc::new(slots::Slots::new(batching.batch_size()));
    let shared = Arc::new(Shared::default());
    let clock = shared.clock.clone();
    let mut engine = Engine {
        delivered_skips: 0,
        output: Some(output_rx),
        slots: slots.clone(),
        stop: PipelineStop(Arc::new(Mutex::new(Some(stop_tx)))),
        threads: Vec::new(),
        shared: shared.clone(),
        waited: Duration::ZERO,
        finished: false,
    };

    let (f, s, c) = (files.clone(), stop.clone(), clock.clone());
    engine
        .threads
        .push(spawn(Stage::Reader, "dawnrun-reader", move || {
            reader::run(reader, f, task_tx, request_rx, s, c)
        })?);
    for i in 0..decode_threads.max(1) {
        let (f, s, tasks, results) = (
            files.clone(),
            stop.clone(),
            task_rx.clone(),
            result_tx.clone(),
        );
        let (slots, c) = (slots.clone(), clock.clone());
        engine.threads.push(spawn(
            Stage::Decode,
            &format!("dawnrun-dec-{i}"),
            move || worker::run(f, limits, (tasks, slots), results, s, c),
        )?);
    }
    drop((task_rx, result_tx));
    let batcher = batcher::Batcher::new(batching, shared, request_tx, output_tx, slots, stop);
    engine
        .threads
        .push(spawn(Stage::Batcher, "dawnrun-batcher", move || {
            batcher.run(result_rx)
        })?);
    Ok(engine)
}

/// The per-record checks of both configs, validated.
fn limits(max_pixels: u64, num_classes: u32) -> Result<worker::Limits, PipelineError> {
    if max_pixels == 0 || num_classes == 0 || num_classes > i32::MAX as u32 {
        return Err(PipelineError::Config {
            what: format!(
                "max_image_pixels ({max_pixels}) and num_classes ({num_classes}) must be at least 1, num_classes at most 2^31-1"
            ),
        });
    }
    Ok(worker::Limits {
        max_pixels,
        num_classes,
    })
}

/// Training batches for one rank, endlessly: epoch after epoch, each exactly
/// `batches_per_epoch` batches of `batch_size` square `image_px` images.
pub struct TrainPipeline {
    engine: Engine,
}

impl TrainPipeline {
    /// Validates `config` and starts the threads; the first batch arrives on the first `next`.
    pub fn start(config: TrainConfig) -> Result<Self, PipelineError> {
        let bad = |what: String| Err(PipelineError::Config { what });
        if config.files.is_empty() {
            return bad(format!("rank {}: no shard files given", config.rank));
        }
        if config.batch_size == 0 || config.image_px == 0 || config.batches_per_epoch == 0 {
            return bad(format!(
                "batch_size {}, image_px {} and batches_per_epoch {} must all be at least 1",
                config.batch_size, config.image_px, config.batches_per_epoch
            ));
        }
        if config.skip_batches >= config.batches_per_epoch {
            return bad(format!(
                "skip_batches {} must be below batches_per_epoch {}",
                config.skip_batches, config.batches_per_epoch
            ));
        }
        if !(config.min_scale > 0.0 && config.min_scale <= 1.0) {
            return bad(format!("min_scale {} must lie in (0, 1]", config.min_scale));
        }
        let limits = limits(config.max_image_pixels, config.num_classes)?;
        // Fail on a bad rank or world size here, not in the reader thread.
        crate::epoch_share::EpochShare::new(
            config.files.len(),
            config.world_size,
            config.rank,
            config.seed,
            config.start_epoch,
        )?;
        let files: Arc<[PathBuf]> = config.files.clone().into();
        let queue = config.batch_size.max(4 * config.decode_threads.max(1));
        let batching = batcher::Batching::Train {
            batch_size: config.batch_size,
            batches_per_epoch: config.batches_per_epoch,
            start_epoch: config.start_epoch,
            skip_batches: config.skip_batches,
        };
        let (threads, prefetch) = (config.decode_threads, config.prefetch_batches);
        let engine = start_engine(
            files,
            limits,
            threads,
            queue,
            prefetch,
            reader::Plan::Train(config),
            batching,
        )?;
        Ok(Self { engine })
    }

    /// The next batch, blocking until it is ready. After an error the pipeline is finished and
    /// every further call returns an error.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Batch, PipelineError> {
        self.engine.next().unwrap_or(Err(PipelineError::Stopped {
            stage: Stage::Batcher,
        }))
    }

    pub fn stats(&self) -> PipelineStats {
        self.engine.stats()
    }

    /// Returns a batch the consumer is done with, so a later batch reuses its buffer instead
    /// of a fresh one that must be zeroed and faulted in (optional: dropping it is correct too).
    pub fn give_back(&self, batch: Batch) {
        self.engine.give_back(batch);
    }

    /// The images skipped after the first `seen` (in delivery order) up to the last batch
    /// `next` returned: what the trainer has not reported yet, without copying the whole list
    /// every step, and without the skips of batches prefetched but not yet trained on.
    pub fn skipped_since(&self, seen: usize) -> Vec<SkippedImage> {
        self.engine.skipped_since(seen)
    }

    /// A handle that stops this pipeline from another thread (one that is waiting in `next`
    /// included), for a consumer that runs the pipeline on a thread of its own.
    pub fn stopper(&self) -> PipelineStop {
        self.engine.stop.clone()
    }
}

/// Evaluation batches: every record once, in file order (or aspect order with `rect`), centre
/// crop, `filenames` attached; the last batch may be partial. An iterator that ends after the
/// last batch, or after the first error.
pub struct EvalPipeline {
    engine: Engine,
}

impl EvalPipeline {
    /// As [`TrainPipeline::give_back`].
    pub fn give_back(&self, batch: Batch) {
        self.engine.give_back(batch);
    }

    pub fn start(config: EvalConfig) -> Result<Self, PipelineError> {
        if config.files.is_empty() || config.batch_size == 0 || config.image_px == 0 {
            return Err(PipelineError::Config {
                what: format!(
                    "evaluation needs files ({} given), batch_size >= 1 ({}) and image_px >= 1 ({})",
                    config.files.len(),
                    config.batch_size,
                    config.image_px
                ),
            });
        }
        let limits = limits(config.max_image_pixels, config.num_classes)?;
        let files: Arc<[PathBuf]> = config.files.clone().into();
        let queue = config.batch_size.max(4 * config.decode_threads.max(1));
        let batching = batcher::Batching::Eval {
            batch_size: config.batch_size,
        };
        let engine = start_engine(
            files,
            limits,
            config.decode_threads,
            queue,
            2,
            reader::Plan::Eval(config),
            batching,
        )?;
        Ok(Self { engine })
    }

    pub fn stats(&self) -> PipelineStats {
        self.engine.stats()
    }

    /// As [`TrainPipeline::stopper`].
    pub fn stopper(&self) -> PipelineStop {
        self.engine.stop.clone()
    }
}

impl Iterator for EvalPipeline {
    type Item = Result<Batch, PipelineError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.engine.next()
    }
}
