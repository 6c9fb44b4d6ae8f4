//! pipeline -> feeder -> step: a thread per phase that takes each batch from the input pipeline,
//! copies it into the graph's input tensors ([`Feed`], from the graph's [`FeedPool`]) and gives
//! the pipeline its buffer back, one batch ahead of the step. The copy (38.5 MB at 224 px and
//! batch 256) then runs while the previous step computes instead of between steps, as a prefetch
//! to the device does in tf.data and DALI; the step starts on tensors that are ready.
//!
//! One thread and a first-in first-out channel keep the pipeline's order: batch k of the phase
//! is step k's, as without the feeder. The channel holds nothing (a rendezvous), so the feeder
//! fills at most one batch ahead. At the end of a phase that batch is dropped, as the pipeline's
//! own prefetched batches are.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;

use anyhow::{anyhow, Result};
use dawnrun_data::pipeline::{PipelineStop, SkippedImage, TrainPipeline};

use crate::model::{BatchRef, Feed, FeedPool};

/// One step's input, ready to run.
pub struct Filled {
    pub feed: Feed,
    /// Images the pipeline skipped as undecodable since the batch before, in order.
    pub skipped: Vec<SkippedImage>,
}

/// The feeding thread of one phase and the channel it hands batches over.
pub struct Feeder {
    /// `None` only while dropping: dropping it first is what stops the thread.
    batches: Option<Receiver<Result<Filled>>>,
    /// Stops the pipeline the thread may be waiting on.
    stop: PipelineStop,
    thread: Option<JoinHandle<()>>,
}

impl Feeder {
    /// Starts feeding `pipeline`'s batches into tensors from `pool`, labels checked against
    /// `num_classes`.
    pub fn start(pipeline: TrainPipeline, pool: FeedPool, num_classes: u32) -> Result<Feeder> {
        let (tx, rx) = sync_channel(0);
        let stop = pipeline.stopper();
        let thread = std::thread::Builder::new()
            .name("feeder".into())
            .spawn(move || feed(pipeline, pool, num_classes, tx))
            .map_err(|e| anyhow!("starting the feeder thread: {e}"))?;
        Ok(Feeder {
            batches: Some(rx),
            stop,
            thread: Some(thread),
        })
    }

    /// The next step's input; waits while the pipeline has none.
    pub fn next_batch(&mut self) -> Result<Filled> {
        let rx = self.batches.as_ref().expect("taken only in drop");
        match rx.recv() {
            Ok(filled) => filled,
            Err(_) => Err(anyhow!(
                "the feeder thread stopped without a batch or an error"
            )),
        }
    }
}

impl Drop for Feeder {
    /// Closes the channel, which ends the thread at its next hand-over, and stops the pipeline,
    /// which ends a wait for a batch at once instead of after the batch is made (an error exit
    /// reaches `MPI_Abort` sooner); then waits for the thread, which drops the pipeline and so
    /// joins the pipeline's threads.
    fn drop(&mut self) {
        drop(self.batches.take());
        self.stop.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The thread: batch, fill, hand over, until the step side hangs up or the pipeline fails (the
/// error is handed over, then the thread ends).
fn feed(
    mut pipeline: TrainPipeline,
    pool: FeedPool,
    num_classes: u32,
    tx: SyncSender<Result<Filled>>,
) {
    let mut reported = 0;
    loop {
        let filled = pipeline
            .next()
            .map_err(anyhow::Error::from)
            .and_then(|batch| {
                let feed = pool.fill(&BatchRef::from(&batch), num_classes);
                // The feed has its own copy: the buffer can carry a later batch.
                pipeline.give_back(batch);
                let skipped = pipeline.skipped_since(reported);
                reported += skipped.len();
                Ok(Filled {
                    feed: feed?,
                    skipped,
                })
            });
        let failed = filled.is_err();
        if tx.send(filled).is_err() || failed {
            return;
        }
    }
}
