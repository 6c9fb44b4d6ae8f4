//! Gradients leaving the graph while backward still runs, so the all-reduce of the last layers
//! overlaps the backward pass of the first ones (Horovod's overlap, without a custom op).
//!
//! One FIFO queue per fusion group holds that group's gradients as one flat f32 vector. A step
//! is then two concurrent session runs: [`Backward`] (forward, backward, batch-norm statistics,
//! and one enqueue per group, each firing as soon as its group's gradients exist) on a worker
//! thread, and [`GroupReader::take`] on the caller's thread, which blocks until the group it
//! asks for is enqueued. The caller takes the groups in a fixed order (last layers first) so
//! every rank all-reduces the same group at the same time.
use super::feed::Fed;
use super::outputs::{fetch_metrics, request_metrics, Gradients, StepMetrics};
use super::tf;
use super::ModelError;
use std::ops::Range;
use tensorflow::{
    ops, DataType, Operation, Output, Scope, Session, SessionRunArgs, Status, Tensor,
};

/// The queue ops of every group, built once.
pub(crate) struct GradientQueues {
    /// Element range of each group in the flat gradient layout.
    elems: Vec<Range<usize>>,
    /// One enqueue per group, grouped into one target.
    pub(crate) enqueue_all: Operation,
    dequeue: Vec<Output>,
    close_all: Operation,
}

impl GradientQueues {
    /// Queues for `groups` (ranges of variable indices, in order, covering `grads`); `lens` are
    /// the variables' element counts.
    pub(crate) fn build(
        scope: &mut Scope,
        grads: &[Output],
        lens: &[usize],
        groups: &[Range<usize>],
    ) -> Result<GradientQueues, Status> {
        let mut enqueues = Vec::with_capacity(groups.len());
        let mut closes = Vec::with_capacity(groups.len());
        let mut dequeue = Vec::with_capacity(groups.len());
        let mut elems = Vec::with_capacity(groups.len());
        let mut at = 0;
        for (i, vars) in groups.iter().enumerate() {
            let mut s = scope.new_sub_scope(&format!("group{i}"));
            let len: usize = lens[vars.clone()].iter().sum();
            elems.push(at..at + len);
            at += len;
            let queue = ops::FIFOQueueV2::new()
                .component_types(vec![DataType::Float])
                .capacity(1)
                .build(&mut s)?;
            let flat = super::optim::flat_concat(&mut s, &grads[vars.clone()])?;
            enqueues.push(tf::queue_enqueue(&mut s, queue.clone().into(), flat)?);
            dequeue.push(
                ops::QueueDequeueV2::new()
                    .component_types(vec![DataType::Float])
                    .build(queue.clone(), &mut s)?
                    .into(),
            );
            closes.push(
                ops::QueueCloseV2::new()
                    .cancel_pending_enqueues(true)
                    .build(queue, &mut s)?,
            );
        }
        Ok(GradientQueues {
            elems,
            enqueue_all: tf::group(scope, "enqueue", &enqueues)?,
            dequeue,
            close_all: tf::group(scope, "close", &closes)?,
        })
    }
}

/// The first half of an overlapped step: run it on a worker thread.
pub struct Backward<'g> {
    pub(crate) session: &'g Session,
    pub(crate) loss_scale: (Operation, Tensor<f32>),
    /// The image and label placeholders, and what they are fed.
    pub(crate) inputs: (Operation, Operation),
    pub(crate) feed: Fed<'g>,
    pub(crate) metrics: [&'g Output; 4],
    pub(crate) targets: [&'g Operation; 2],
    pub(crate) queues: &'g GradientQueues,
}

impl Backward<'_> {
    /// Forward + backward + batch-norm statistics; every group is enqueued as it is ready.
    /// On failure the queues are closed, so a reader waiting in [`GroupReader::take`] gets an
    /// error instead of waiting for ever.
    pub fn run(self) -> Result<StepMetrics, ModelError> {
        let mut args = SessionRunArgs::new();
        self.feed.add_to(&mut args, &self.inputs.0, &self.inputs.1);
        args.add_feed(&self.loss_scale.0, 0, &self.loss_scale.1);
        let tokens = request_metrics(&mut args, self.metrics);
        for t in self.targets {
            args.add_target(t);
        }
        if let Err(source) = self.session.run(&mut args) {
            let mut close = SessionRunArgs::new();
            close.add_target(&self.queues.close_all);
            // The step has failed already; a failure to close adds nothing to report.
            let _ = self.session.run(&mut close);
            return Err(ModelError::Run {
                what: "overlapped backward",
                source: source.into(),
            });
        }
        fetch_metrics(&mut args, tokens)
    }
}

/// The second half: takes each group's gradients out of its queue.
pub struct GroupReader<'g> {
    pub(crate) session: &'g Session,
    pub(crate) queues: &'g GradientQueues,
}

impl GroupReader<'_> {
    /// Number of groups.
    pub fn groups(&self) -> usize {
        self.queues.elems.len()
    }

    /// Element range of group `g` in the flat gradient layout.
    pub fn elems(&self, g: usize) -> Range<usize> {
        self.queues.elems[g].clone()
    }

    /// Waits until group `g`'s gradients are computed, and copies them into their range of
    /// `into` (the whole flat gradient buffer) with `copy(dst, src)`: the caller's, so the
    /// all-reduce's alignment-aware copy can be used without the model depending on it.
    pub fn take(
        &self,
        g: usize,
        into: &mut Gradients,
        copy: fn(&mut [f32], &[f32]),
    ) -> Result<(), ModelError> {
        let mut args = SessionRunArgs::new();
        let token = args.request_fetch(&self.queues.dequeue[g].operation, 0);
        self.session
            .run(&mut args)
            .map_err(|source| ModelError::Run {
                what: "taking a gradient group",
                source: source.into(),
            })?;
        let t = args.fetch::<f32>(token).map_err(|source| ModelError::Run {
            what: "fetching a gradient group",
            source: source.into(),
        })?;
        copy(&mut into[self.elems(g)], &t);
        Ok(())
    }
}
