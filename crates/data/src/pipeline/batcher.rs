//! The batcher thread: puts worker results back in key order and assembles batches, so batch
//! contents never depend on which worker finished first. Training fills each batch with the next
//! `batch_size` decoded images and counts batches per epoch; evaluation groups records by
//! position (`seq / batch_size`) and flushes the last, partial batch at the end. The pixels are
//! already where they belong ([`super::slots`]): the batcher only moves an image when an earlier
//! one was skipped, and hands each batch's buffer on as it is.
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
use super::slots::{Place, Slots};
use super::worker::{Done, Image, Outcome};
use super::{
    send_or_stop, BatcherMsg, PipelineError, Shared, SkippedImage, Stage, StopSignal, Tick,
};
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

impl Batching {
    pub(super) fn batch_size(&self) -> usize {
        match self {
            Batching::Train { batch_size, .. } | Batching::Eval { batch_size } => *batch_size,
        }
    }
}

pub(super) struct Batcher {
    mode: Batching,
    shared: Arc<Shared>,
    requests: Sender<Request>,
    output: Sender<BatcherMsg>,
    /// The buffers the workers decode into; batches are taken out of it.
    slots: Arc<Slots>,
    stop: StopSignal,
}

/// The batch being filled: its labels (and names) and how many images it has. The pixels are
/// already in its slab.
#[derive(Default)]
struct Filling {
    labels: Vec<i32>,
    filenames: Vec<String>,
    /// Training: images placed so far in the epoch (the next one's position). Evaluation:
    /// the group being filled.
    next: u64,
    /// Training: images of this epoch skipped as undecodable so far.
    skipped: u64,
}

impl Filling {
    /// The batch of `group`'s first `labels.len()` images; `None` if its slab is gone (a
    /// broken invariant, reported as an error by the caller).
    fn take(&mut self, slots: &Slots, group: Key, with_filenames: bool) -> Option<Batch> {
        let labels = std::mem::take(&mut self.labels);
        let filenames = std::mem::take(&mut self.filenames);
        let slab = slots.take(group)?;
        let (width, height) = slab.shape();
        Some(Batch {
            images: slab.into_pixels(labels.len()),
            n: labels.len(),
            labels,
            height: height as usize,
            width: width as usize,
            filenames: with_filenames.then_some(filenames),
        })
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
        slots: Arc<Slots>,
        stop: StopSignal,
    ) -> Self {
        Self {
            mode,
            shared,
            requests,
            output,
            slots,
            stop,
        }
    }

    pub(super) fn run(self, results: Receiver<Vec<Done>>) {
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
        let mut filling = Filling {
            next: key.1,
            ..Filling::default()
        };
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
                recv(results) -> chunk => match chunk {
                    Ok(chunk) => for done in chunk {
                        if let (Outcome::Skipped(_), Batching::Train { .. }) = (&done.outcome, &self.mode) {
                            // Ask for the replacement now, not when this key's turn comes.
                            // The reader may be gone after an error: nothing to do then.
                            let _ = self.requests.send(Request::More { epoch: done.key.0 });
                        }
                        pending.insert(done.key, done.outcome);
                    },
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
                // Every skip so far in this epoch moves this image one place down.
                let to = self.slots.place(key.0, filling.next);
                if !self.place(image, self.slots.place(key.0, seq), to, filling) {
                    return Next::Quit;
                }
                filling.next += 1;
                if filling.labels.len() < *batch_size {
                    return Next::Continue;
                }
                if !self.emit(filling, to.group, false) {
                    return Next::Quit;
                }
                *batches_left -= 1;
                if *batches_left == 0 {
                    let _ = self.requests.send(Request::EpochDone { epoch: key.0 });
                    *key = (key.0 + 1, 0);
                    *batches_left = *batches_per_epoch;
                    filling.next = 0;
                    filling.skipped = 0;
                    self.slots.forget_before(*key);
                }
                Next::Continue
            }
            (Outcome::Image(image), Batching::Eval { .. }) => {
                self.shared.decoded.fetch_add(1, Ordering::Relaxed);
                let from = self.slots.place(0, seq);
                if from.group.1 != filling.next {
                    // A new group: the previous one is complete. Groups in between had only
                    // skipped images: their buffers go back to the pool.
                    if !self.flush_eval(filling) {
                        return Next::Quit;
                    }
                    filling.next = from.group.1;
                    self.slots.forget_before(from.group);
                }
                // Skipped images of this group move the later ones down.
                let to = Place {
                    group: from.group,
                    slot: filling.labels.len(),
                };
                if self.place(image, from, to, filling) {
                    Next::Continue
                } else {
                    Next::Quit
                }
            }
            (
                Outcome::Skipped(skipped),
                Batching::Train {
                    batch_size,
                    batches_per_epoch,
                    ..
                },
            ) => {
                // Each skip asks the reader for a spare, so records where (nearly) nothing
                // decodes would be read, skipped and listed without end: stop once an epoch has
                // skipped more images than it trains on.
                filling.skipped += 1;
                let trains_on = batches_per_epoch * *batch_size as u64;
                if filling.skipped > trains_on {
                    let e = PipelineError::TooManySkipped {
                        epoch: key.0,
                        skipped: filling.skipped,
                        trains_on,
                        last: skipped,
                    };
                    send_or_stop(
                        &self.output,
                        BatcherMsg::Error(Stage::Batcher, e),
                        &self.stop,
                    );
                    return Next::Quit;
                }
                self.note_skipped(skipped);
                Next::Continue
            }
            (Outcome::Skipped(skipped), Batching::Eval { .. }) => {
                self.note_skipped(skipped);
                Next::Continue
            }
            (Outcome::Fatal(stage, e), _) => {
                send_or_stop(&self.output, BatcherMsg::Error(stage, e), &self.stop);
                Next::Quit
            }
            (Outcome::End, _) => {
                if !self.flush_eval(filling) {
                    return Next::Quit;
                }
                send_or_stop(&self.output, BatcherMsg::Done, &self.stop);
                Next::Quit
            }
        }
    }

    /// Puts `image`, written at `from`, at `to` (moving its pixels when an earlier image was
    /// skipped) and records its label; `false` after reporting a broken invariant.
    #[allow(unsafe_code)]
    fn place(&self, image: Image, from: Place, to: Place, filling: &mut Filling) -> bool {
        // SAFETY: `from` is this image's own slot and `to` the slot of an earlier key, both
        // already received here, so no worker writes either; `image`'s claim is not used again.
        let moved = unsafe { self.slots.move_down(from, to) };
        drop(image.claim);
        if let Err(why) = moved {
            return self.internal(format!("moving {from:?} to {to:?}: {why}"));
        }
        filling.labels.push(image.label);
        filling.filenames.extend(image.filename);
        true
    }

    fn note_skipped(&self, skipped: SkippedImage) {
        if let Ok(mut list) = self.shared.skipped.lock() {
            list.push(skipped);
        }
    }

    /// Evaluation: sends the group being filled, if it has images.
    fn flush_eval(&self, filling: &mut Filling) -> bool {
        filling.labels.is_empty() || self.emit(filling, (0, filling.next), true)
    }

    /// Reports a broken invariant to the consumer; always `false` (quit).
    fn internal(&self, what: String) -> bool {
        let e = PipelineError::Internal { what };
        send_or_stop(
            &self.output,
            BatcherMsg::Error(Stage::Batcher, e),
            &self.stop,
        );
        false
    }

    /// Sends `group`'s batch; `false` when the pipeline is stopping (or its slab is gone).
    fn emit(&self, filling: &mut Filling, group: Key, with_filenames: bool) -> bool {
        match filling.take(&self.slots, group, with_filenames) {
            Some(batch) => {
                // Keys arrive in order: every skip before this batch's last image is listed.
                let skips = self.shared.skipped.lock().map_or(0, |s| s.len());
                send_or_stop(&self.output, BatcherMsg::Batch(batch, skips), &self.stop)
            }
            None => self.internal(format!("the slab of group {group:?} is gone")),
        }
    }
}
