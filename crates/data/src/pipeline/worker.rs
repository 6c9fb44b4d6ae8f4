//! A decode worker: record bytes -> (label, pixels), or a skip notice for an undecodable JPEG,
//! or a fatal error for a record whose Example is broken. Runs `decode_threads` times.

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};
use dawnrun_records::imagenet::{decode_for_training, ImageRecord};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::reader::{Job, Key, ReaderMsg, Task};
use super::slots::{Claim, Slots};
use super::{send_or_stop, Clock, PipelineError, SkippedImage, Stage, StopSignal, Tick};
use crate::crop::{eval_crop, sample_crop};
use crate::decode::{Placement, Preprocessor};

/// Worker -> batcher.
pub(super) struct Done {
    pub key: Key,
    pub outcome: Outcome,
}

/// One decoded image: its pixels are in the slot `claim` holds; its 0-based class, and
/// (evaluation) its file name.
pub(super) struct Image {
    pub claim: Claim,
    pub label: i32,
    pub filename: Option<String>,
}

pub(super) enum Outcome {
    Image(Image),
    Skipped(SkippedImage),
    Fatal(Stage, PipelineError),
    End,
}

/// What every worker checks on every record, from the pipeline's config.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    /// Images whose JPEG header claims more pixels are skipped before decoding.
    pub max_pixels: u64,
    /// Stored (1-based) labels must lie in `1..=num_classes`.
    pub num_classes: u32,
}

thread_local! {
    /// True while this thread runs inside [`guarded_decode`]'s `catch_unwind`.
    static IN_GUARDED_DECODE: Cell<bool> = const { Cell::new(false) };
}

/// True only on a thread that is currently inside a decode worker's `catch_unwind` region, where
/// a panic becomes one more skipped image. A process-wide panic hook (the trainer's, which
/// aborts the MPI job) calls this first and lets such a panic unwind to the worker instead.
/// False on every other thread, and on a worker thread between images.
pub fn panic_is_caught() -> bool {
    IN_GUARDED_DECODE.with(Cell::get)
}

/// Sets the flag for its lifetime; resets it on drop, which runs after the panic hook when
/// a panic unwinds through it.
struct CaughtRegion;

impl CaughtRegion {
    fn enter() -> Self {
        IN_GUARDED_DECODE.with(|f| f.set(true));
        CaughtRegion
    }
}

impl Drop for CaughtRegion {
    fn drop(&mut self) {
        IN_GUARDED_DECODE.with(|f| f.set(false));
    }
}

/// What a worker reuses from image to image: the decoder state (its buffers only grow), the
/// batch buffers it writes into, and the stage clock it reports to.
struct Kit {
    pre: Preprocessor,
    slots: Arc<Slots>,
    clock: Arc<Clock>,
}

pub(super) fn run(
    files: Arc<[PathBuf]>,
    limits: Limits,
    (tasks, slots): (Receiver<Vec<ReaderMsg>>, Arc<Slots>),
    results: Sender<Vec<Done>>,
    stop: StopSignal,
    clock: Arc<Clock>,
) {
    let mut kit = Kit {
        pre: Preprocessor::new().with_max_pixels(limits.max_pixels),
        slots,
        clock,
    };
    loop {
        let chunk = crossbeam_channel::select! {
            recv(tasks) -> chunk => match chunk {
                Ok(chunk) => chunk,
                Err(_) => return,
            },
            recv(stop.0) -> _ => return,
        };
        let mut done = Vec::with_capacity(chunk.len());
        for msg in chunk {
            done.push(match msg {
                ReaderMsg::Task(task) => Done {
                    key: task.key,
                    outcome: timed(&mut kit, &files, limits, task),
                },
                ReaderMsg::Fatal(key, e) => Done {
                    key,
                    outcome: Outcome::Fatal(Stage::Reader, e),
                },
                ReaderMsg::End(key) => Done {
                    key,
                    outcome: Outcome::End,
                },
            });
        }
        // The chunk's results go together: one wake-up of the batcher (see `reader::CHUNK`).
        if !send_or_stop(&results, done, &stop) {
            return;
        }
    }
}

/// [`process`], its decode and resize time added to the stage clock.
fn timed(kit: &mut Kit, files: &[PathBuf], limits: Limits, task: Task) -> Outcome {
    let before = kit.pre.times();
    let outcome = process(kit, files, limits, task);
    let after = kit.pre.times();
    kit.clock
        .add(Tick::Decode, after.decode.saturating_sub(before.decode));
    kit.clock
        .add(Tick::Resize, after.resize.saturating_sub(before.resize));
    outcome
}

/// The decoder's run on one JPEG, with a panic inside it turned into an error like any other
/// undecodable image: a JPEG crafted to crash a decoder is per-image damage. Only this call is
/// guarded, so a bug in our own parsing or batch bookkeeping still ends the run. While it runs,
/// [`panic_is_caught`] is true on this thread, so a process-wide panic hook (the trainer's
/// aborts the MPI job) can tell this panic will be caught and leave it alone.
fn guarded_decode(
    pre: &mut Preprocessor,
    jpeg: &[u8],
    (width, height): (u32, u32),
    out: &mut [u8],
    place: impl FnOnce(u32, u32) -> Placement,
) -> Result<(), String> {
    let result = {
        let _region = CaughtRegion::enter();
        catch_unwind(AssertUnwindSafe(|| {
            pre.run(jpeg, width, height, out, place)
        }))
    };
    match result {
        Ok(decoded) => decoded.map_err(|e| e.to_string()),
        Err(panic) => {
            // The decoder state may be half-way through an image: start a fresh one.
            *pre = Preprocessor::new().with_max_pixels(pre.max_pixels());
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned());
            Err(format!("decoder panicked: {}", what.unwrap_or_default()))
        }
    }
}

/// The record's 1-based label as a 0-based class, or the error naming the record, the label as
/// stored and the class range.
fn class_of(label: i64, num_classes: u32, path: &Path, offset: u64) -> Result<i32, PipelineError> {
    if label >= 1 && label <= i64::from(num_classes) {
        // num_classes <= i32::MAX is checked when the pipeline starts.
        Ok(label as i32 - 1)
    } else {
        Err(PipelineError::Label {
            path: path.to_path_buf(),
            offset,
            label,
            num_classes,
        })
    }
}

fn process(kit: &mut Kit, files: &[PathBuf], limits: Limits, task: Task) -> Outcome {
    let at = (files[task.file].as_path(), task.offset);
    let key = task.key;
    let bad_example = |source| {
        let e = PipelineError::Example {
            path: at.0.to_path_buf(),
            offset: at.1,
            source,
        };
        Outcome::Fatal(Stage::Decode, e)
    };
    match task.job {
        Job::Train {
            spec,
            image_px,
            augment_seed,
        } => {
            let parsing = Instant::now();
            let parsed = decode_for_training(&task.data);
            kit.clock.add(Tick::Parse, parsing.elapsed());
            let (jpeg, label) = match parsed {
                Ok(v) => v,
                Err(e) => return bad_example(e),
            };
            let mut rng = ChaCha8Rng::seed_from_u64(augment_seed);
            let place = |w, h| {
                let crop = sample_crop(&mut rng, w, h, &spec);
                Placement {
                    crop,
                    flip: rng.gen_bool(0.5),
                }
            };
            let labelled = (label, limits.num_classes, None);
            render(kit, key, jpeg, labelled, (image_px, image_px), place, at)
        }
        Job::Eval {
            crop,
            width,
            height,
        } => {
            let parsing = Instant::now();
            let parsed = ImageRecord::from_bytes(&task.data);
            kit.clock.add(Tick::Parse, parsing.elapsed());
            let record = match parsed {
                Ok(r) => r,
                Err(e) => return bad_example(e),
            };
            let place = |w, h| Placement {
                crop: eval_crop(w, h, crop, width, height),
                flip: false,
            };
            let labelled = (
                record.label,
                limits.num_classes,
                Some(record.filename.clone()),
            );
            render(
                kit,
                key,
                &record.encoded,
                labelled,
                (width, height),
                place,
                at,
            )
        }
    }
}

/// Decodes and resizes one image to `width x height` straight into its slot of the batch
/// buffer; `(label, filename)` ride along, the label checked against `num_classes` first.
fn render(
    kit: &mut Kit,
    key: Key,
    jpeg: &[u8],
    (label, num_classes, filename): (i64, u32, Option<String>),
    (width, height): (u32, u32),
    place: impl FnOnce(u32, u32) -> Placement,
    (path, offset): (&Path, u64),
) -> Outcome {
    let label = match class_of(label, num_classes, path, offset) {
        Ok(label) => label,
        Err(e) => return Outcome::Fatal(Stage::Decode, e),
    };
    let mut claim = match kit.slots.claim(key, width, height) {
        Ok(claim) => claim,
        Err(why) => {
            let what = format!("item {key:?}: {why}");
            return Outcome::Fatal(Stage::Decode, PipelineError::Internal { what });
        }
    };
    match guarded_decode(&mut kit.pre, jpeg, (width, height), claim.pixels(), place) {
        Ok(()) => Outcome::Image(Image {
            claim,
            label,
            filename,
        }),
        Err(cause) => Outcome::Skipped(SkippedImage {
            file: path.to_path_buf(),
            offset,
            cause,
            filename,
        }),
    }
}
