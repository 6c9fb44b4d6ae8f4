//! pipeline -> feeder -> graph for the validation set: a thread takes each batch from the
//! evaluation pipeline, drops the excluded images, copies the rest into the graph's input tensors
//! and gives the pipeline its buffer back, one batch ahead of the graph, as the trainer's feeder
//! does (`train/feeder.rs`). The copy (38.5 MB at 224 px and batch 256, 63.7 MB at 288 px) then
//! runs while the previous batch computes, instead of between batches.
//!
//! A rendezvous channel keeps the pipeline's order and holds nothing: the thread fills at most one
//! batch ahead. Scoped, so the exclusion list is borrowed, and nothing outlives the checkpoint.

use std::collections::HashSet;
use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

use anyhow::{anyhow, Context, Result};
use dawnrun_data::pipeline::EvalPipeline;
use dawnrun_data::{Batch, PipelineStats};

use crate::model::{BatchRef, Feed, FeedPool};

/// Calls `each` on every batch of `pipeline`, less the images named in `exclude`, filled into
/// tensors from `pool` (labels checked against `num_classes`) on a thread one batch ahead.
/// Returns the pipeline's stats after its last batch. The first error, of the pipeline or of
/// `each`, stops the pipeline at once and is returned.
pub fn feed_ahead(
    pipeline: EvalPipeline,
    pool: FeedPool,
    num_classes: u32,
    exclude: Option<&HashSet<String>>,
    each: impl FnMut(&Feed) -> Result<()>,
) -> Result<PipelineStats> {
    let stop = pipeline.stopper();
    let (tx, rx) = sync_channel(0);
    std::thread::scope(|s| {
        let filler = std::thread::Builder::new()
            .name("eval feeder".into())
            .spawn_scoped(s, move || fill(pipeline, &pool, num_classes, exclude, tx))
            .map_err(|e| anyhow!("starting the validation feeder thread: {e}"))?;
        let consumed = consume(rx, each);
        if consumed.is_err() {
            // Ends a wait for the next batch at once; the thread's next send fails and it ends.
            stop.stop();
        }
        let stats = filler
            .join()
            .map_err(|_| anyhow!("the validation feeder thread panicked"))?;
        consumed.map(|()| stats)
    })
}

/// The graph's side: every filled batch in order, until the thread ends or `each` fails. Takes
/// the receiver, so the channel is closed when this returns.
fn consume(rx: Receiver<Result<Feed>>, mut each: impl FnMut(&Feed) -> Result<()>) -> Result<()> {
    for filled in rx {
        each(&filled?)?;
    }
    Ok(())
}

/// The thread: batch, exclude, fill, hand over, until the pipeline ends or fails (the error is
/// handed over) or the graph's side hangs up.
fn fill(
    mut pipeline: EvalPipeline,
    pool: &FeedPool,
    num_classes: u32,
    exclude: Option<&HashSet<String>>,
    tx: SyncSender<Result<Feed>>,
) -> PipelineStats {
    while let Some(batch) = pipeline.next() {
        let filled = match batch {
            Err(e) => Err(anyhow::Error::from(e).context("validation input")),
            Ok(batch) => {
                let batch = match exclude {
                    Some(names) => without_excluded(batch, names),
                    None => batch,
                };
                if batch.n == 0 {
                    continue;
                }
                let feed = pool
                    .fill(&BatchRef::from(&batch), num_classes)
                    .context("validation input");
                // The feed has its own copy: the buffer can carry a later batch.
                pipeline.give_back(batch);
                feed
            }
        };
        let failed = filled.is_err();
        if tx.send(filled).is_err() || failed {
            break;
        }
    }
    pipeline.stats()
}

/// Whether the exclude list `names` holds the image's file name or its base name.
pub fn is_excluded(filename: &str, names: &HashSet<String>) -> bool {
    names.contains(filename)
        || Path::new(filename)
            .file_name()
            .is_some_and(|b| names.contains(&*b.to_string_lossy()))
}

/// The batch less the images whose file name (or base name) is in `names`.
fn without_excluded(batch: Batch, names: &HashSet<String>) -> Batch {
    let Some(filenames) = &batch.filenames else {
        return batch;
    };
    let excluded = |f: &String| is_excluded(f, names);
    if !filenames.iter().any(excluded) {
        return batch;
    }
    let per = batch.image_bytes();
    let mut out = Batch {
        images: Vec::with_capacity(batch.images.len()),
        labels: Vec::new(),
        n: 0,
        height: batch.height,
        width: batch.width,
        filenames: Some(Vec::new()),
    };
    for (i, f) in filenames.iter().enumerate() {
        if excluded(f) {
            continue;
        }
        out.images
            .extend_from_slice(&batch.images[i * per..(i + 1) * per]);
        out.labels.push(batch.labels[i]);
        out.filenames.as_mut().expect("set above").push(f.clone());
        out.n += 1;
    }
    out
}
