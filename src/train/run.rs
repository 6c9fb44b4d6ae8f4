//! The training loop, one process per rank: setup (`setup.rs`), then per phase a pipeline at
//! the phase's data, size and batch with its feeder (`feeder.rs`), and per step: next batch ->
//! update (`step.rs`) -> log -> checkpoint (rank 0) when due. At the end every rank checks that the replicas agree.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use dawnrun_dist::timeline::Lane;
use dawnrun_dist::World;

use dawnrun_data::pipeline::SkippedImage;

use super::feeder::Feeder;
use super::hooks::{inject, poison};
use super::log::Tally;
use super::setup::{start_pipeline, RunConfig, Trainer};
use super::step::update;
use crate::checkpoint::{self, CheckpointMeta};
use crate::model::TrainGraph;
use crate::run_dir::{self, Done};

#[derive(Debug, Clone)]
pub struct RunSummary {
    pub first_step: u64,
    pub final_step: u64,
    pub train_seconds: f64,
    pub last_loss: f32,
    /// Images skipped as undecodable, summed over all ranks.
    pub skipped_images: u64,
}

pub fn run(cfg: RunConfig, world: &World) -> Result<RunSummary> {
    let plan = &cfg.plan;
    let mut t = Trainer::setup(&cfg, world)?;
    let (mut step, mut last_loss) = (t.first_step, f32::NAN);
    for phase in plan.phases_from(step) {
        if step >= t.end_step {
            break;
        }
        t.log.start_phase(phase, world.size());
        let pipeline = start_pipeline(&cfg, phase, step, world)?;
        let mut feeder = Feeder::start(pipeline, t.graph.feed_pool(), cfg.model.num_classes)?;
        while step < phase.end_step.min(t.end_step) {
            inject(cfg.test_fault, step, world.rank())?;
            let wait = Instant::now();
            let input = {
                let _s = t.replicas.enter(step, Lane::InputWait, "next batch");
                feeder
                    .next_batch()
                    .with_context(|| format!("step {step}: input pipeline"))?
            };
            t.log.waited(wait.elapsed());
            t.replicas.skipped_here += report_skips(&input.skipped, world.rank());
            let lr = plan.lr_at(step);
            let out = update(&mut t.graph, &mut t.replicas, &input.feed, step, lr, &t.log)?;
            step += 1;
            last_loss = out.loss;
            let seconds = t.train_seconds();
            let tally = Tally {
                images: input.feed.len() * world.size(),
                loss_scale: t.replicas.scaler.scale(),
                skipped_images: t.replicas.skipped_everywhere,
                elapsed_s: seconds,
            };
            t.log.after_step(step, phase, &out, tally);
            if plan.checkpoint_due(step) || step == t.end_step {
                poison(cfg.test_fault, step, &mut t.graph)?;
                save_checkpoint(&t, &cfg, step, seconds, last_loss)?;
            }
        }
    }
    check_replicas_agree(world, &mut t.graph)?;
    let summary = RunSummary {
        first_step: t.first_step,
        final_step: step,
        train_seconds: t.train_seconds(),
        last_loss,
        skipped_images: t.replicas.skipped_everywhere,
    };
    finish(t, &cfg, &summary)?;
    Ok(summary)
}

/// The state after `step` steps, with its epoch, training seconds and loss scale, written by
/// rank 0 while the other ranks wait: no rank can fail and end the job half-way through a
/// write (a failed write removes its temporary files and says the checkpoint was not written).
/// The logs are flushed first, so they never lag behind a checkpoint.
fn save_checkpoint(
    t: &Trainer,
    cfg: &RunConfig,
    step: u64,
    train_seconds: f64,
    last_loss: f32,
) -> Result<()> {
    let world = t.replicas.world;
    if world.rank() == 0 {
        let (scale, good_steps) = t.replicas.scaler.state();
        let meta = CheckpointMeta {
            step,
            epoch: cfg.plan.epoch_at(step),
            train_seconds,
            loss_scale: f64::from(scale),
            loss_scale_good_steps: u64::from(good_steps),
        };
        t.log.flush();
        // A finite loss can still come with an update that overflowed the weights (a huge lr):
        // the next step would find it, but this checkpoint would keep it.
        if !t.graph.state_is_finite()? {
            bail!(
                "step {step}: training diverged: the state after this step (weights, batch-norm \
                 moving statistics or momentum) is not finite, though the loss before the update \
                 was {}. Checkpoint ckpt-{step} is not written: resume from the last one with a \
                 lower lr or a longer warm-up",
                last_loss
            );
        }
        let prefix = checkpoint::save(&t.graph, &cfg.run_dir.checkpoints(), &meta)
            .with_context(|| format!("step {step}: checkpoint ckpt-{step} was not written"))?;
        t.log.note(&format!("checkpoint {}", prefix.display()));
    }
    if let Some(w) = &t.replicas.watchdog {
        w.mark(step, Lane::Update);
    }
    world.barrier();
    Ok(())
}

/// Names, on this rank's stderr, the images its pipeline skipped before this batch (whichever
/// rank meets a bad image names it); returns how many.
fn report_skips(skipped: &[SkippedImage], rank: usize) -> u64 {
    for s in skipped {
        say!(
            "rank {rank}: skipped an undecodable JPEG: {}: record at byte {}: {}",
            s.file.display(),
            s.offset,
            s.cause
        );
    }
    skipped.len() as u64
}

/// Closes the timeline and, on rank 0, the logs; marks a finished run with `done.json`.
fn finish(mut t: Trainer, cfg: &RunConfig, summary: &RunSummary) -> Result<()> {
    t.replicas.finish_timeline()?;
    if t.replicas.world.rank() != 0 {
        return Ok(());
    }
    let (step, total) = (summary.final_step, cfg.plan.total_steps());
    t.log.note(&format!(
        "done: step {step} of {total}, {:.1} s of training, {} image(s) skipped",
        summary.train_seconds, summary.skipped_images
    ));
    t.log.finish()?;
    if step == total || Some(step) == cfg.max_steps {
        let done = Done {
            final_step: step,
            planned_steps: total,
            train_seconds: summary.train_seconds,
            skipped_images: summary.skipped_images,
        };
        run_dir::write_json(&cfg.run_dir.done(), &done)?;
    }
    Ok(())
}

/// Data parallelism's invariant: every rank ends with the same weights (batch-norm moving
/// statistics excepted: they stay local, as in Horovod). Checked once at the end, so a drift
/// is an error instead of a silently wrong checkpoint.
fn check_replicas_agree(world: &World, graph: &mut TrainGraph) -> Result<()> {
    let state = graph.state_to_host().context("reading the final weights")?;
    let weights = &state[..graph.num_params()];
    let fingerprint = dawnrun_dist::fingerprint_f32(weights);
    let differing = world.ranks_differing(&fingerprint.to_le_bytes());
    if !differing.is_empty() {
        bail!("the weights of ranks {differing:?} differ from rank 0's: the replicas drifted");
    }
    if world.rank() == 0 && world.size() > 1 {
        say!(
            "all {} ranks hold identical weights (fingerprint {fingerprint:016x})",
            world.size()
        );
    }
    Ok(())
}
