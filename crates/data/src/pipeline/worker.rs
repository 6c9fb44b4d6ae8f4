//! A decode worker: record bytes -> (label, pixels), or a skip notice for an undecodable JPEG,
//! or a fatal error for a record whose Example is broken. Runs `decode_threads` times.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use dawnrun_records::imagenet::{decode_for_training, ImageRecord};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::reader::{Job, Key, ReaderMsg, Task};
use super::{send_or_stop, PipelineError, SkippedImage, Stage, StopSignal};
use crate::crop::{eval_crop, sample_crop};
use crate::decode::{Placement, Preprocessor};

/// Worker -> batcher.
pub(super) struct Done {
    pub key: Key,
    pub outcome: Outcome,
}

/// One decoded image: `[height, width, 3]` u8 pixels, its 0-based class, and (evaluation) its
/// file name.
pub(super) struct Image {
    pub pixels: Vec<u8>,
    pub label: i32,
    pub filename: Option<String>,
    pub width: u32,
    pub height: u32,
}

pub(super) enum Outcome {
    Image(Image),
    Skipped(SkippedImage),
    Fatal(Stage, PipelineError),
    End,
}

pub(super) fn run(
    files: Arc<[PathBuf]>,
    tasks: Receiver<ReaderMsg>,
    results: Sender<Done>,
    stop: StopSignal,
) {
    let mut pre = Preprocessor::new();
    loop {
        let msg = crossbeam_channel::select! {
            recv(tasks) -> msg => match msg {
                Ok(msg) => msg,
                Err(_) => return,
            },
            recv(stop.0) -> _ => return,
        };
        let done = match msg {
            ReaderMsg::Task(task) => Done {
                key: task.key,
                outcome: guarded(&mut pre, &files, task),
            },
            ReaderMsg::Fatal(key, e) => Done {
                key,
                outcome: Outcome::Fatal(Stage::Reader, e),
            },
            ReaderMsg::End(key) => Done {
                key,
                outcome: Outcome::End,
            },
        };
        if !send_or_stop(&results, done, &stop) {
            return;
        }
    }
}

/// [`process`], with a decoder panic turned into a skipped image: a JPEG crafted to crash a
/// decoder is per-image damage like any other. (Under the trainer, whose panic hook aborts the
/// MPI job, the hook runs first; this guard matters for the tools and the tests.)
fn guarded(pre: &mut Preprocessor, files: &[PathBuf], task: Task) -> Outcome {
    let (file, offset) = (task.file, task.offset);
    match catch_unwind(AssertUnwindSafe(|| process(pre, files, task))) {
        Ok(outcome) => outcome,
        Err(panic) => {
            *pre = Preprocessor::new();
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned());
            let cause = format!("decoder panicked: {}", what.unwrap_or_default());
            Outcome::Skipped(SkippedImage {
                file: files[file].clone(),
                offset,
                cause,
            })
        }
    }
}

/// The record's 1-based label as a 0-based class, or the error naming the record.
fn class_of(label: i64, path: &Path, offset: u64) -> Result<i32, PipelineError> {
    match i32::try_from(label) {
        Ok(l) if l >= 1 => Ok(l - 1),
        _ => Err(PipelineError::Label {
            path: path.to_path_buf(),
            offset,
            label,
        }),
    }
}

fn process(pre: &mut Preprocessor, files: &[PathBuf], task: Task) -> Outcome {
    let at = (files[task.file].as_path(), task.offset);
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
            let (jpeg, label) = match decode_for_training(&task.data) {
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
            render(pre, jpeg, (label, None), (image_px, image_px), place, at)
        }
        Job::Eval {
            crop,
            width,
            height,
        } => {
            let record = match ImageRecord::from_bytes(&task.data) {
                Ok(r) => r,
                Err(e) => return bad_example(e),
            };
            let place = |w, h| Placement {
                crop: eval_crop(w, h, crop, width, height),
                flip: false,
            };
            let labelled = (record.label, Some(record.filename.clone()));
            render(pre, &record.encoded, labelled, (width, height), place, at)
        }
    }
}

/// Decodes and resizes one image to `width x height`; `(label, filename)` ride along.
fn render(
    pre: &mut Preprocessor,
    jpeg: &[u8],
    (label, filename): (i64, Option<String>),
    (width, height): (u32, u32),
    place: impl FnOnce(u32, u32) -> Placement,
    (path, offset): (&Path, u64),
) -> Outcome {
    let label = match class_of(label, path, offset) {
        Ok(label) => label,
        Err(e) => return Outcome::Fatal(Stage::Decode, e),
    };
    let mut pixels = vec![0u8; width as usize * height as usize * 3];
    match pre.run(jpeg, width, height, &mut pixels, place) {
        Ok(()) => Outcome::Image(Image {
            pixels,
            label,
            filename,
            width,
            height,
        }),
        Err(e) => Outcome::Skipped(SkippedImage {
            file: path.to_path_buf(),
            offset,
            cause: e.to_string(),
        }),
    }
}
