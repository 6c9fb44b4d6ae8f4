//! The batcher thread: puts worker results back in key order and assembles batches, so batch
//! contents never depend on which worker finished first. Training fills each batch with the next
//! `batch_size` decoded images and counts batches per epoch; evaluation groups records by
//! position (`seq / batch_size`) and flushes the last, partial batch at the end.
//!
//! The reorder buffer is not capped: it holds what the workers finished while an earlier key
//! was still being decoded, which is bounded in practice by one slow image's decode time times
//! the pipeline's throughput. Capping it would need credit from the batcher to the reader; the
//! batcher must keep receiving to get the key it waits for, so simply not receiving could
//! deadlock.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};

use super::reader::{Key, Request};
use super::worker::{Done, Image, Outcome};
use super::{send_or_stop, BatcherMsg, PipelineError, Shared, Stage, StopSignal, Tick};
use crate::batch::Batch;

pub(super) enum Batching {
    Train {
        batch_size: usize,
        batches_per_epoch: u64,
        start_epoch: u64,
        skip_batches: u64,
    },
    Eval {
        batch_size: usize,
    },
}

pub(super) struct Batcher {
    mode: Batching,
    shared: Arc<Shared>,
    requests: Sender<Request>,
    output: Sender<BatcherMsg>,
    /// Pixel buffers go back to the workers here once copied into a batch.
    free: Sender<Vec<u8>>,
    stop: StopSignal,
}

/// A batch being filled.
#[derive(Default)]
struct Filling {
    images: Vec<u8>,
    labels: Vec<i32>,
    filenames: Vec<String>,
    shape: (u32, u32),
    group: u64,
}

impl Filling {
    /// Copies `image` into the batch (sized for `capacity` images on its first image, so a
    /// batch allocates once) and returns its pixel buffer for reuse.
    fn add(&mut self, image: Image, capacity: usize) -> Vec<u8> {
        if self.images.is_empty() {
            self.images.reserve_exact(image.pixels.len() * capacity);
        }
        self.shape = (image.width, image.height);
        self.images.extend_from_slice(&image.pixels);
        self.labels.push(image.label);
        self.filenames.extend(image.filename);
        image.pixels
    }

    fn take(&mut self, with_filenames: bool) -> Batch {
        let (width, height) = self.shape;
        let labels = std::mem::take(&mut self.labels);
        let filenames = std::mem::take(&mut self.filenames);
        Batch {
            images: std::mem::take(&mut self.images),
            n: labels.len(),
            labels,
            height: height as usize,
            width: width as usize,
            filenames: with_filenames.then_some(filenames),
        }
    }
}

/// What to do after handling one in-order outcome.
enum Next {
    Continue,
    Quit,
}

impl Batcher {
    pub(super) fn new(
        mode: Batching,
        shared: Arc<Shared>,
        requests: Sender<Request>,
        output: Sender<BatcherMsg>,
        free: Sender<Vec<u8>>,
        stop: StopSignal,
    ) -> Self {
        Self {
            mode,
            shared,
            requests,
            output,
            free,
            stop,
        }
    }

    /// Hands a copied image's buffer back to the workers (they may all be gone: then it drops).
    fn recycle(&self, pixels: Vec<u8>) {
        let _ = self.free.send(pixels);
    }

    pub(super) fn run(self, results: Receiver<Done>) {
        let (mut key, mut batches_left) = match self.mode {
            Batching::Train {
                batch_size,
                batches_per_epoch,
                start_epoch,
                skip_batches,
                ..
            } => (
                (start_epoch, skip_batches * batch_size as u64),
                batches_per_epoch - skip_batches,
            ),
            Batching::Eval { .. } => ((0, 0), 0),
        };
        let mut pending: BTreeMap<Key, Outcome> = BTreeMap::new();
        let mut filling = Filling::default();
        loop {
            while let Some(outcome) = pending.remove(&key) {
                let seq = key.1;
                key.1 += 1;
                let handling = Instant::now();
                let next = self.handle(outcome, seq, &mut filling, &mut key, &mut batches_left);
                self.shared.clock.add(Tick::Batch, handling.elapsed());
                if let Next::Quit = next {
                    return;
                }
            }
            crossbeam_channel::select! {
                recv(results) -> done => match done {
                    Ok(done) => {
                        if let (Outcome::Skipped(_), Batching::Train { .. }) = (&done.outcome, &self.mode) {
                            // Ask for the replacement now, not when this key's turn comes.
                            // The reader may be gone after an error: nothing to do then.
                            let _ = self.requests.send(Request::More { epoch: done.key.0 });
                        }
                        pending.insert(done.key, done.outcome);
                    }
                    Err(_) => {
                        let stopped = PipelineError::Stopped { stage: Stage::Decode };
                        send_or_stop(&self.output, BatcherMsg::Error(Stage::Batcher, stopped), &self.stop);
                        return;
                    }
                },
                recv(self.stop.0) -> _ => return,
            }
        }
    }

    /// Handles the outcome at `seq` (keys arrive strictly in order); may emit a batch and, in
    /// training, move `key` to the next epoch.
    fn handle(
        &self,
        outcome: Outcome,
        seq: u64,
        filling: &mut Filling,
        key: &mut Key,
        batches_left: &mut u64,
    ) -> Next {
        match (outcome, &self.mode) {
            (
                Outcome::Image(image),
                Batching::Train {
                    batch_size,
                    batches_per_epoch,
                    ..
                },
            ) => {
                self.shared.decoded.fetch_add(1, Ordering::Relaxed);
                let pixels = filling.add(image, *batch_size);
                self.recycle(pixels);
                if filling.labels.len() < *batch_size {
                    return Next::Continue;
                }
                if !send_or_stop(
                    &self.output,
                    BatcherMsg::Batch(filling.take(false)),
                    &self.stop,
                ) {
                    return Next::Quit;
                }
                *batches_left -= 1;
                if *batches_left == 0 {
                    let _ = self.requests.send(Request::EpochDone { epoch: key.0 });
                    *key = (key.0 + 1, 0);
                    *batches_left = *batches_per_epoch;
                }
                Next::Continue
            }
            (Outcome::Image(image), Batching::Eval { batch_size }) => {
                self.shared.decoded.fetch_add(1, Ordering::Relaxed);
                let group = seq / *batch_size as u64;
                if !filling.labels.is_empty() && group != filling.group && !self.emit(filling) {
                    return Next::Quit;
                }
                filling.group = group;
                let pixels = filling.add(image, *batch_size);
                self.recycle(pixels);
                Next::Continue
            }
            (Outcome::Skipped(skipped), _) => {
                if let Ok(mut list) = self.shared.skipped.lock() {
                    list.push(skipped);
                }
                Next::Continue
            }
            (Outcome::Fatal(stage, e), _) => {
                send_or_stop(&self.output, BatcherMsg::Error(stage, e), &self.stop);
                Next::Quit
            }
            (Outcome::End, _) => {
                if !filling.labels.is_empty() && !self.emit(filling) {
                    return Next::Quit;
                }
                send_or_stop(&self.output, BatcherMsg::Done, &self.stop);
                Next::Quit
            }
        }
    }

    /// Sends the evaluation batch being filled; `false` when the pipeline is stopping.
    fn emit(&self, filling: &mut Filling) -> bool {
        send_or_stop(
            &self.output,
            BatcherMsg::Batch(filling.take(true)),
            &self.stop,
        )
    }
}
