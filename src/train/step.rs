//! One optimizer step, the protocol every rank follows in lockstep:
//!
//! 1. gradients: forward + backward of this rank's batch; unscaled flat gradients to the host;
//! 2. ready: tell rank 0 this rank reached the step (the stall check);
//! 3. all-reduce: average the gradients over ranks (bitwise identical everywhere with our methods),
//!    and sum the few per-step scalars (loss, batch accuracy, skipped images, the finite checks
//!    of step 4) in one small `MPI_Allreduce`;
//! 4. verdict: finite or not, decided by the loss scaler on the shared loss and the averaged
//!    gradients, so every rank applies or skips the same step. The averaged gradients are the
//!    same bits on every rank, so each rank checks only its own 1/N share of them and the
//!    answers ride on step 3's small `MPI_Allreduce`: a pass over 1/N of the gradients instead
//!    of all of them, on the step's critical path (5 ms for ResNet-50's 102 MB on one core here);
//! 5. apply: momentum update at this step's learning rate.
//!
//! At one rank there is nothing to average: the whole step is one session run
//! ([`TrainGraph::fused_step`]) with the finite check and the update inside the graph, and the
//! gradients never come to the host.
//!
//! The training loop, `trainer bench` and `trainer gradcheck` all call these functions, so what
//! is timed and checked is the step that trains.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use dawnrun_dist::stall::StallCheck;
use dawnrun_dist::timeline::{Lane, Span, Timeline};
use dawnrun_dist::{Allreducer, Watchdog, World};
use dawnrun_schedule::{Allreduce, Compression};

use super::hooks::{freeze_in_allreduce, nan_gradient, TestFault};
use super::log::StepLog;
use super::loss_scale::{all_finite, LossScaler, Verdict};
use crate::model::{AsFeed, Gradients, StepMetrics, TrainGraph};

/// What a step needs besides the graph: the other ranks, the timeline and the loss scaler.
pub struct Replicas<'w> {
    pub world: &'w World,
    pub allreducer: Allreducer,
    pub stall: StallCheck,
    /// Ends the job when this rank stops making progress (`None`: stall shutdown off).
    pub watchdog: Option<Watchdog>,
    pub timeline: Option<Timeline>,
    pub scaler: LossScaler,
    /// Images this rank's pipelines skipped so far (the loop keeps it current) ...
    pub skipped_here: u64,
    /// ... and the sum over all ranks, as of the last step.
    pub skipped_everywhere: u64,
    /// Overlap the all-reduce with backward (see [`Replicas::enable_overlap`]); holds the flat
    /// gradient buffer between steps.
    pub overlap: Option<Overlap>,
    /// The test hook this rank injects into its step, if any (see [`TestFault`]).
    pub test_fault: Option<TestFault>,
}

/// The state of overlapped steps: on, and the reusable gradient buffer when no step holds it.
pub struct Overlap {
    buffer: Option<Gradients>,
    /// All-reduce time spent while backward was still running (hidden) and after it ended
    /// (exposed), summed over steps: what the overlap bought.
    pub hidden: Duration,
    pub exposed: Duration,
}

impl<'w> Replicas<'w> {
    /// The step's defaults for `graph`, as `trainer bench` and `trainer gradcheck` measure it:
    /// fp32 on the wire, fusion buffers of `fusion_bytes`, a 60 s stall warning, no stall
    /// shutdown, no timeline, loss scale 1.
    pub fn with_defaults(
        world: &'w World,
        method: Allreduce,
        fusion_bytes: usize,
        graph: &TrainGraph,
    ) -> Result<Self> {
        let lens: Vec<usize> = graph.trainable().iter().map(|v| v.len).collect();
        Ok(Replicas {
            world,
            allreducer: Allreducer::new(method, Compression::None, fusion_bytes, &lens)?,
            stall: StallCheck::new(world, Duration::from_secs(60), None),
            watchdog: None,
            timeline: None,
            scaler: LossScaler::Static(1.0),
            skipped_here: 0,
            skipped_everywhere: 0,
            overlap: None,
            test_fault: None,
        })
    }

    /// From now on steps at more than one rank take each fusion group's gradients as soon as
    /// backward has made them and all-reduce it while backward goes on (last layers first), as
    /// Horovod does. The sums are the same bits as without overlap: the groups are the fusion
    /// plan's. At one rank there is nothing to overlap and the one-run step stays.
    pub fn enable_overlap(&mut self, graph: &mut TrainGraph) -> Result<()> {
        if self.world.size() > 1 && self.overlap.is_none() {
            let groups: Vec<_> = self
                .allreducer
                .plan()
                .groups()
                .iter()
                .map(|g| g.tensors.clone())
                .collect();
            graph.enable_overlap(&groups)?;
            self.overlap = Some(Overlap {
                buffer: None,
                hidden: Duration::ZERO,
                exposed: Duration::ZERO,
            });
        }
        Ok(())
    }

    /// Closes the timeline file, if any, reporting a write error that dropping it would hide.
    pub fn finish_timeline(&mut self) -> Result<()> {
        match self.timeline.take() {
            Some(t) => t.finish().context("closing the timeline"),
            None => Ok(()),
        }
    }

    /// Marks progress (`step`, `lane`) for the watchdog and opens a timeline span for `lane`.
    pub fn enter(&self, step: u64, lane: Lane, name: &'static str) -> Option<Span<'_>> {
        if let Some(w) = &self.watchdog {
            w.mark(step, lane);
        }
        self.timeline.as_ref().map(|t| t.span(lane, name))
    }
}

/// Steps 1-3's result on every rank.
pub struct Averaged {
    /// The mean of all ranks' gradients (the same bits everywhere with our all-reduces).
    pub grads: Gradients,
    /// The loss, total loss and batch accuracy: means over all ranks' batches.
    pub metrics: StepMetrics,
    /// Every averaged gradient is finite (all ranks agree on it).
    pub finite: bool,
}

/// Steps 1-3: this rank's gradients, averaged over all ranks, with the metrics' means and the
/// shared finite check. The batch-norm moving statistics are updated too (they stay local to
/// each rank, as in Horovod).
pub fn average_gradients(
    graph: &mut TrainGraph,
    ex: &mut Replicas,
    batch: &impl AsFeed,
    step: u64,
) -> Result<Averaged> {
    if ex.overlap.is_some() {
        return overlapped_gradients(graph, ex, batch, step);
    }
    let mut out = {
        let _s = ex.enter(step, Lane::Compute, "gradients");
        graph
            .gradients(batch, ex.scaler.scale())
            .with_context(|| format!("step {step}: forward/backward"))?
    };
    ready(
        &mut ex.stall,
        ex.world,
        ex.watchdog.as_ref(),
        ex.timeline.as_ref(),
        step,
    )?;
    if let Some(w) = &ex.watchdog {
        w.mark(step, Lane::Allreduce);
    }
    freeze_in_allreduce(ex.test_fault, step, ex.world.rank())?;
    ex.allreducer
        .average(ex.world, &mut out.grads, ex.timeline.as_ref())
        .with_context(|| format!("step {step}: all-reduce"))?;
    Ok(shared(ex, step, out.grads, out.metrics))
}

/// The end of steps 1-3 on either path: the test hook, then the metrics and the finite checks
/// shared over ranks.
fn shared(
    ex: &mut Replicas,
    step: u64,
    mut grads: Gradients,
    mut metrics: StepMetrics,
) -> Averaged {
    nan_gradient(ex.test_fault, step, &mut grads);
    let finite = share_metrics(ex, &mut metrics, &grads);
    Averaged {
        grads,
        metrics,
        finite,
    }
}

/// Step 2: this rank reached `step` (rank 0 warns about, or ends the job over, late ranks).
/// Takes the parts it needs, not the whole `Replicas`, so the overlapped step can call it while
/// its worker thread borrows the timeline.
fn ready(
    stall: &mut StallCheck,
    world: &World,
    watchdog: Option<&Watchdog>,
    timeline: Option<&Timeline>,
    step: u64,
) -> Result<()> {
    if let Some(w) = watchdog {
        w.mark(step, Lane::Negotiate);
    }
    let _s = timeline.map(|t| t.span(Lane::Negotiate, "ready"));
    Ok(stall.ready(world, step)?)
}

/// The metrics, skip counts and finite checks summed over ranks in one small `MPI_Allreduce`;
/// the metrics become means. Returns whether every averaged gradient is finite: each rank
/// checks its share of `grads` ([`check_share`]), the whole of it where the all-reduce does not
/// promise the same bits everywhere.
fn share_metrics(ex: &mut Replicas, m: &mut StepMetrics, grads: &[f32]) -> bool {
    let (rank, size) = (ex.world.rank(), ex.world.size());
    let share = if ex.allreducer.identical_everywhere() {
        check_share(grads.len(), rank, size)
    } else {
        0..grads.len()
    };
    let mut shared = [
        f64::from(m.loss),
        f64::from(m.total_loss),
        f64::from(m.top1),
        f64::from(m.top5),
        ex.skipped_here as f64,
        f64::from(u8::from(!all_finite(&grads[share]))),
    ];
    ex.world.sum_f64(&mut shared);
    let n = size as f64;
    m.loss = (shared[0] / n) as f32;
    m.total_loss = (shared[1] / n) as f32;
    m.top1 = (shared[2] / n) as f32;
    m.top5 = (shared[3] / n) as f32;
    ex.skipped_everywhere = shared[4].round() as u64;
    shared[5] == 0.0
}

/// The part of `len` averaged gradients that rank `rank` of `size` checks for finiteness: the
/// ranks' parts tile `0..len`.
fn check_share(len: usize, rank: usize, size: usize) -> std::ops::Range<usize> {
    dawnrun_dist::chunk_of(len, size.max(1), rank)
}

/// Steps 1-3 with the all-reduce overlapping backward: backward runs on a worker thread and
/// enqueues each fusion group as it is made; this thread (the one that talks MPI) takes the
/// groups last first and all-reduces each at once.
fn overlapped_gradients(
    graph: &mut TrainGraph,
    ex: &mut Replicas,
    batch: &impl AsFeed,
    step: u64,
) -> Result<Averaged> {
    let mut grads = ex
        .overlap
        .as_mut()
        .and_then(|o| o.buffer.take())
        .unwrap_or_else(|| Gradients::zeros(graph.num_params()));
    if let Some(w) = &ex.watchdog {
        w.mark(step, Lane::Compute);
    }
    let (backward, reader) = graph
        .overlapped(batch, ex.scaler.scale())
        .with_context(|| format!("step {step}: forward/backward"))?;
    let Replicas {
        world,
        allreducer,
        stall,
        watchdog,
        timeline,
        test_fault,
        ..
    } = ex;
    let test_fault = *test_fault;
    let (world, timeline, watchdog) = (*world, timeline.as_ref(), watchdog.as_ref());
    let mark = |lane| {
        if let Some(w) = watchdog {
            w.mark(step, lane);
        }
    };
    let (mut hidden, mut exposed) = (Duration::ZERO, Duration::ZERO);
    let (metrics, reduced) = std::thread::scope(|s| {
        let worker = s.spawn(move || {
            let _s = timeline.map(|t| t.span(Lane::Compute, "backward"));
            backward.run()
        });
        let reduced = (|| -> Result<()> {
            ready(stall, world, watchdog, timeline, step)?;
            freeze_in_allreduce(test_fault, step, world.rank())?;
            for g in (0..reader.groups()).rev() {
                mark(Lane::Compute);
                reader.take(g, &mut grads, dawnrun_dist::copy_floats)?;
                mark(Lane::Allreduce);
                let elems = reader.elems(g);
                let (start, behind) = (Instant::now(), !worker.is_finished());
                allreducer.average_group(world, g, &mut grads[elems], timeline)?;
                // A group counts as hidden when backward was still running as it started.
                *(if behind { &mut hidden } else { &mut exposed }) += start.elapsed();
            }
            Ok(())
        })();
        (worker.join(), reduced)
    });
    let metrics = match metrics {
        Ok(m) => m.with_context(|| format!("step {step}: forward/backward"))?,
        Err(_) => bail!("step {step}: the backward thread panicked"),
    };
    reduced.with_context(|| format!("step {step}: overlapped all-reduce"))?;
    if let Some(o) = &mut ex.overlap {
        o.hidden += hidden;
        o.exposed += exposed;
    }
    Ok(shared(ex, step, grads, metrics))
}

/// The whole step on `batch` at learning rate `lr`: steps 1-5 above (one session run at one
/// rank). A skipped step (dynamic loss scaling) is noted on `log`. Returns the step's metrics,
/// averaged over ranks.
pub fn update(
    graph: &mut TrainGraph,
    ex: &mut Replicas,
    batch: &impl AsFeed,
    step: u64,
    lr: f64,
    log: &StepLog,
) -> Result<StepMetrics> {
    let (metrics, finite) = if ex.world.size() == 1 {
        ex.skipped_everywhere = ex.skipped_here;
        let _s = ex.enter(step, Lane::Compute, "fused step");
        let out = graph
            .fused_step(batch, ex.scaler.scale(), lr as f32)
            .with_context(|| format!("step {step}: forward/backward/apply"))?;
        (out.metrics, out.applied)
    } else {
        let out = average_gradients(graph, ex, batch, step)?;
        // The loss is the mean over ranks and the gradients' check is shared: a non-finite
        // value on any rank is seen by all, so every rank reaches the same verdict.
        let m = &out.metrics;
        let finite = m.loss.is_finite() && m.total_loss.is_finite() && out.finite;
        if finite {
            let _s = ex.enter(step, Lane::Update, "apply");
            graph
                .apply(&out.grads, lr as f32)
                .with_context(|| format!("step {step}: applying gradients"))?;
        }
        if let Some(o) = &mut ex.overlap {
            o.buffer = Some(out.grads);
        }
        (out.metrics, finite)
    };
    // Both losses are means over ranks here, so every rank reaches the same verdict.
    let loss_finite = metrics.loss.is_finite() && metrics.total_loss.is_finite();
    match ex.scaler.update(loss_finite, finite) {
        Verdict::Apply => {}
        Verdict::Skip => log.note(&format!(
            "step {step}: non-finite gradients, update skipped, loss scale now {}",
            ex.scaler.scale()
        )),
        Verdict::Fatal => bail!(
            "step {step}: the gradients are not finite with loss scale {} (the loss is {}); \
             lower the lr, or use `loss_scale: dynamic` if it is static",
            ex.scaler.scale(),
            metrics.loss
        ),
        Verdict::Diverged => bail!(
            "step {step}: training diverged: the loss is {} (total loss {}); \
             loss scaling cannot help, it scales only backward. Nothing from this step on is \
             saved: resume from the last checkpoint with a lower lr or a longer warm-up",
            metrics.loss,
            metrics.total_loss
        ),
    }
    Ok(metrics)
}

#[cfg(test)]
mod tests {
    use super::check_share;

    #[test]
    fn the_ranks_checks_tile_the_gradients() {
        for len in [0usize, 1, 7, 1000, 11_181_642] {
            for size in 1..=9 {
                let shares: Vec<_> = (0..size).map(|r| check_share(len, r, size)).collect();
                assert_eq!(shares[0].start, 0);
                assert_eq!(shares[size - 1].end, len);
                assert!(shares.windows(2).all(|w| w[0].end == w[1].start));
                let (min, max) = shares.iter().fold((usize::MAX, 0), |(lo, hi), r| {
                    (lo.min(r.len()), hi.max(r.len()))
                });
                assert!(max - min <= 1, "len {len} size {size}");
            }
        }
        assert!(
            check_share(10, 3, 2).is_empty(),
            "a rank beyond the world checks nothing"
        );
    }
}
