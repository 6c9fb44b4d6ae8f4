//! The training loop, one process per rank: setup (`setup.rs`), then per phase a pipeline at
//! the phase's data, size and batch, and per step: next batch -> update (`step.rs`) -> log ->
//! checkpoint (rank 0) when due. At the end every rank checks that the replicas agree.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use dawnrun_dist::timeline::Lane;
use dawnrun_dist::World;

use super::setup::{start_pipeline, RunConfig, Trainer};
use super::step::update;
use crate::checkpoint::{self, CheckpointMeta};
use crate::model::{BatchRef, TrainGraph};
use crate::run_dir::{self, Done};

#[derive(Debug, Clone)]
pub struct RunSummary {
    pub first_step: u64,
    pub final_step: u64,
    pub train_seconds: f64,
    pub last_loss: f32,
    pub skipped_images: usize,
}

pub fn run(cfg: RunConfig, world: &World) -> Result<RunSummary> {
    let plan = &cfg.plan;
    let mut t = Trainer::setup(&cfg, world)?;
    let (mut step, mut last_loss, mut skipped_images) = (t.first_step, f32::NAN, 0);
    for phase in plan.phases_from(step) {
        if step >= t.end_step {
            break;
        }
        t.log.start_phase(phase, world.size());
        let mut pipeline = start_pipeline(&cfg, phase, step, world)?;
        while step < phase.end_step.min(t.end_step) {
            if cfg.fail_at_step == Some(step) {
                bail!("step {step}: failing on purpose (DAWNRUN_FAIL_AT_STEP)");
            }
            let wait = Instant::now();
            let batch = {
                let _s = t.replicas.span(Lane::InputWait, "next batch");
                pipeline
                    .next()
                    .with_context(|| format!("step {step}: input pipeline"))?
            };
            t.log.waited(wait.elapsed());
            let batch = BatchRef::from(&batch);
            let lr = plan.lr_at(step);
            let out = update(&mut t.graph, &mut t.replicas, &batch, step, lr, &t.log)?;
            step += 1;
            last_loss = out.loss;
            let (scale, seconds) = (t.replicas.scaler.scale(), t.train_seconds());
            t.log
                .after_step(step, phase, &out, batch.n * world.size(), scale, seconds);
            if world.rank() == 0 && (plan.checkpoint_due(step) || step == t.end_step) {
                save_checkpoint(&t, &cfg, step, seconds)?;
            }
        }
        for s in &pipeline.stats().skipped {
            let (file, offset, cause) = (s.file.display(), s.offset, &s.cause);
            t.log.note(&format!(
                "skipped an undecodable JPEG: {file}: byte {offset}: {cause}"
            ));
            skipped_images += 1;
        }
    }
    check_replicas_agree(world, &mut t.graph)?;
    let summary = RunSummary {
        first_step: t.first_step,
        final_step: step,
        train_seconds: t.train_seconds(),
        last_loss,
        skipped_images,
    };
    finish(t, &cfg, &summary)?;
    Ok(summary)
}

/// Rank 0: the state after `step` steps, with its epoch and training seconds. The logs are
/// flushed first, so they never lag behind a checkpoint.
fn save_checkpoint(t: &Trainer, cfg: &RunConfig, step: u64, train_seconds: f64) -> Result<()> {
    let meta = CheckpointMeta {
        step,
        epoch: cfg.plan.epoch_at(step),
        train_seconds,
    };
    t.log.flush();
    let prefix = checkpoint::save(&t.graph, &cfg.run_dir.checkpoints(), &meta)
        .with_context(|| format!("step {step}: saving a checkpoint"))?;
    t.log.note(&format!("checkpoint {}", prefix.display()));
    Ok(())
}

/// Closes the timeline and, on rank 0, the logs; marks a finished run with `done.json`.
fn finish(t: Trainer, cfg: &RunConfig, summary: &RunSummary) -> Result<()> {
    if let Some(timeline) = t.replicas.timeline {
        timeline.finish().context("closing the timeline")?;
    }
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
            train_seconds: summary.train_seconds,
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
        eprintln!(
            "all {} ranks hold identical weights (fingerprint {fingerprint:016x})",
            world.size()
        );
    }
    Ok(())
}
