//! The training loop, one process per rank:
//!
//! 1. build the graph; rank 0 initialises it or restores the newest complete checkpoint, then
//!    broadcasts every variable and the position (step, training seconds) so all ranks start
//!    bitwise identical;
//! 2. per phase: start this rank's pipeline at the phase's data, size and batch, at the exact
//!    data position of the current step;
//! 3. per step: next batch -> gradients -> all-reduce -> finiteness check -> apply at the
//!    plan's lr -> log -> checkpoint (rank 0) when due.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use dawnrun_data::pipeline::{TrainConfig, TrainPipeline, DEFAULT_SHUFFLE_BUFFER};
use dawnrun_data::Batch;
use dawnrun_dist::allreduce::{Allreducer, Method};
use dawnrun_dist::stall::StallCheck;
use dawnrun_dist::timeline::{Phase as Lane, Timeline};
use dawnrun_dist::wire::Compression;
use dawnrun_dist::World;
use dawnrun_schedule::{PhasePlan, Plan};

use super::log::{StepLog, StepRecord};
use super::loss_scale::{all_finite, LossScale, Verdict};
use crate::checkpoint::{self, CheckpointMeta};
use crate::dataset::shard_files;
use crate::model::{BatchRef, ModelConfig, StepOutput, TrainGraph};
use crate::runinfo::{self, Done};

/// Everything a run needs, validated by `bin/trainer` before any work.
pub struct RunConfig {
    pub plan: Plan,
    pub model: ModelConfig,
    pub data_root: PathBuf,
    pub run_dir: PathBuf,
    /// Stop after this many steps in total (the run resumes later from its checkpoint).
    pub max_steps: Option<u64>,
    pub resume: bool,
    pub loss_scale: LossScale,
    pub allreduce: Method,
    pub compression: Compression,
    pub fusion_threshold_bytes: usize,
    pub stall_warning: Duration,
    pub timeline: Option<PathBuf>,
    pub decode_threads: usize,
    /// Test hook (`DAWNRUN_FAIL_AT_STEP` in bin/): this rank fails when reaching this step.
    pub fail_at_step: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct RunSummary {
    pub first_step: u64,
    pub final_step: u64,
    pub train_seconds: f64,
    pub last_loss: f32,
    pub skipped_images: usize,
}

/// Where the run stands; what rank 0 broadcasts after restoring.
#[derive(Debug, Clone, Copy)]
struct Position {
    step: u64,
    train_seconds: f64,
}

pub fn run(cfg: RunConfig, world: &World) -> Result<RunSummary> {
    let rank = world.rank();
    let lead = rank == 0;
    let plan = &cfg.plan;
    let ckpt_dir = cfg.run_dir.join("checkpoints");
    let end_step = cfg
        .max_steps
        .map_or(plan.total_steps(), |m| m.min(plan.total_steps()));

    // 1. Graph, initial state, and the same state everywhere.
    let mut graph = TrainGraph::build(&cfg.model).context("building the training graph")?;
    graph.init().context("initialising variables")?;
    let mut position = Position {
        step: 0,
        train_seconds: 0.0,
    };
    if lead {
        position = restore_or_start(&mut graph, &ckpt_dir, cfg.resume, plan)?;
    }
    broadcast_state(world, &mut graph, &mut position)?;
    let first_step = position.step;

    let timeline = match &cfg.timeline {
        Some(path) => {
            let path = per_rank_path(path, rank, world.size());
            Some(Timeline::create(&path, rank).with_context(|| format!("{}", path.display()))?)
        }
        None => None,
    };
    let lens: Vec<usize> = graph.trainable().iter().map(|v| v.len).collect();
    let allreducer = Allreducer::new(
        cfg.allreduce,
        cfg.compression,
        cfg.fusion_threshold_bytes,
        &lens,
    )?;
    let stall = StallCheck::new(world, cfg.stall_warning);
    let log = if lead {
        StepLog::create(&cfg.run_dir, end_step, first_step)?
    } else {
        StepLog::silent()
    };
    log.note(&format!(
        "rank 0 of {}: ResNet-{} ({} params, {} classes), steps {}..{} of {}, {} fusion buffer(s), all-reduce {:?}",
        world.size(),
        cfg.model.depth,
        graph.num_params(),
        cfg.model.num_classes,
        first_step,
        end_step,
        plan.total_steps(),
        allreducer.plan().groups().len(),
        cfg.allreduce,
    ));

    let mut exchange = Exchange {
        world,
        allreducer,
        stall,
        timeline,
        loss_scale: cfg.loss_scale.clone(),
    };
    let mut step = first_step;
    let mut last_loss = f32::NAN;
    let mut skipped_images = 0;
    let started = Instant::now();
    let train_seconds = |since: Instant| position.train_seconds + since.elapsed().as_secs_f64();

    // 2. Phases.
    for phase in plan.phases_from(step) {
        if step >= end_step {
            break;
        }
        log.note(&phase_line(phase, world.size()));
        let mut pipeline = start_pipeline(&cfg, phase, step, world)?;
        let mut window = Window::new();

        // 3. Steps.
        while step < phase.end_step && step < end_step {
            if cfg.fail_at_step == Some(step) {
                bail!("step {step}: failing on purpose (DAWNRUN_FAIL_AT_STEP)");
            }
            let wait = Instant::now();
            let batch = {
                let _s = span(&exchange.timeline, Lane::InputWait, "next batch");
                pipeline
                    .next()
                    .with_context(|| format!("step {step}: input pipeline"))?
            };
            window.input_wait += wait.elapsed();
            let lr = plan.lr_at(step);
            let out = update(&mut graph, &mut exchange, &batch, step, lr, &log)?;
            step += 1;
            last_loss = out.loss;
            window.images += batch.n * world.size();
            log.tick(step);

            if step.is_multiple_of(plan.run.log_every_steps.max(1)) || step == end_step {
                log.step(StepRecord {
                    step,
                    epoch: plan.epoch_at(step),
                    images_per_s: window.images as f64 / window.start.elapsed().as_secs_f64(),
                    loss: out.loss,
                    total_loss: out.total_loss,
                    lr,
                    batch_per_rank: phase.batch_per_rank as usize,
                    global_batch: phase.global_batch as usize,
                    image_px: phase.image_px as usize,
                    top1: out.top1,
                    top5: out.top5,
                    loss_scale: exchange.loss_scale.scale(),
                    input_wait: window.input_wait.as_secs_f64()
                        / window.start.elapsed().as_secs_f64(),
                    elapsed_s: train_seconds(started),
                });
                window = Window::new();
            }
            if lead && (plan.checkpoint_due(step) || step == end_step) {
                let meta = CheckpointMeta {
                    step,
                    epoch: plan.epoch_at(step),
                    train_seconds: train_seconds(started),
                };
                log.flush();
                let prefix = graph
                    .save(&ckpt_dir, &meta)
                    .with_context(|| format!("step {step}: saving a checkpoint"))?;
                log.note(&format!("checkpoint {}", prefix.display()));
            }
        }
        let stats = pipeline.stats();
        for s in &stats.skipped {
            log.note(&format!(
                "skipped an undecodable JPEG: {}: byte {}: {}",
                s.file.display(),
                s.offset,
                s.cause
            ));
        }
        skipped_images += stats.skipped.len();
    }

    check_replicas_agree(world, &mut graph)?;
    let summary = RunSummary {
        first_step,
        final_step: step,
        train_seconds: train_seconds(started),
        last_loss,
        skipped_images,
    };
    if let Some(t) = exchange.timeline {
        t.finish().context("closing the timeline")?;
    }
    if lead {
        log.note(&format!(
            "done: step {} of {}, {:.1} s of training, {} image(s) skipped",
            step,
            plan.total_steps(),
            summary.train_seconds,
            skipped_images
        ));
        log.finish()?;
        if step == plan.total_steps() || Some(step) == cfg.max_steps {
            runinfo::write_json(
                &cfg.run_dir.join(runinfo::DONE),
                &Done {
                    final_step: step,
                    train_seconds: summary.train_seconds,
                },
            )?;
        }
    }
    Ok(summary)
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

/// What a step needs besides the graph: the other ranks and the loss scaler.
struct Exchange<'w> {
    world: &'w World,
    allreducer: Allreducer,
    stall: StallCheck,
    timeline: Option<Timeline>,
    loss_scale: LossScale,
}

/// A timeline span for `lane` (nothing when no timeline was asked for).
fn span<'t>(
    timeline: &'t Option<Timeline>,
    lane: Lane,
    name: &'static str,
) -> Option<dawnrun_dist::timeline::Span<'t>> {
    timeline.as_ref().map(|t| t.span(lane, name))
}

/// One optimizer step on `batch`: gradients -> readiness report -> all-reduce -> finiteness
/// verdict -> apply at `lr` (or skip, under dynamic loss scaling).
fn update(
    graph: &mut TrainGraph,
    ex: &mut Exchange,
    batch: &Batch,
    step: u64,
    lr: f64,
    log: &StepLog,
) -> Result<StepOutput> {
    let batch_ref = BatchRef::from(batch);
    let mut out = {
        let _s = span(&ex.timeline, Lane::Compute, "gradients");
        graph
            .gradients(&batch_ref, ex.loss_scale.scale())
            .with_context(|| format!("step {step}: forward/backward"))?
    };
    {
        let _s = span(&ex.timeline, Lane::Negotiate, "ready");
        ex.stall.ready(ex.world, step);
    }
    ex.allreducer
        .average(ex.world, &mut out.grads, ex.timeline.as_ref())
        .with_context(|| format!("step {step}: all-reduce"))?;
    // Every rank holds the same averaged gradients, so every rank reaches the same verdict.
    let finite = out.loss.is_finite() && all_finite(&out.grads);
    match ex.loss_scale.update(finite) {
        Verdict::Apply => {
            let _s = span(&ex.timeline, Lane::Update, "apply");
            graph
                .apply(&out.grads, lr as f32)
                .with_context(|| format!("step {step}: applying gradients"))?;
        }
        Verdict::Skip => log.note(&format!(
            "step {step}: non-finite gradients, update skipped, loss scale now {}",
            ex.loss_scale.scale()
        )),
        Verdict::Fatal => bail!(
            "step {step}: the loss ({}) or its gradients are not finite with loss scale {}; \
             lower the lr or use `loss_scale: dynamic`",
            out.loss,
            ex.loss_scale.scale()
        ),
    }
    Ok(out)
}

/// Step-line averages since the last log line.
struct Window {
    start: Instant,
    images: usize,
    input_wait: Duration,
}

impl Window {
    fn new() -> Self {
        Window {
            start: Instant::now(),
            images: 0,
            input_wait: Duration::ZERO,
        }
    }
}

/// Rank 0: the newest complete checkpoint when resuming, else a fresh start. A fresh start into
/// a run directory that already holds checkpoints is refused, so nothing is overwritten.
fn restore_or_start(
    graph: &mut TrainGraph,
    ckpt_dir: &std::path::Path,
    resume: bool,
    plan: &Plan,
) -> Result<Position> {
    let latest = checkpoint::latest_complete(ckpt_dir)
        .with_context(|| format!("{}: listing checkpoints", ckpt_dir.display()))?;
    match (latest, resume) {
        (Some((_, prefix)), true) => {
            let meta = graph
                .restore(&prefix)
                .with_context(|| format!("resuming from {}", prefix.display()))?;
            eprintln!(
                "rank 0: resuming from {} (step {}, epoch {:.2}, {:.1} s trained)",
                prefix.display(),
                meta.step,
                meta.epoch,
                meta.train_seconds
            );
            // A checkpoint from another world size: the epoch is what both plans share.
            let step = if (plan.epoch_at(meta.step) - meta.epoch).abs() < 1e-6 {
                meta.step
            } else {
                let step = plan.step_at_epoch(meta.epoch);
                eprintln!(
                    "rank 0: the checkpoint was made at another world size: epoch {:.4} is step {step} here",
                    meta.epoch
                );
                step
            };
            Ok(Position {
                step,
                train_seconds: meta.train_seconds,
            })
        }
        (None, true) => {
            eprintln!(
                "rank 0: --resume: no complete checkpoint in {}, starting at step 0",
                ckpt_dir.display()
            );
            Ok(Position {
                step: 0,
                train_seconds: 0.0,
            })
        }
        (Some((step, _)), false) => bail!(
            "{} already holds checkpoints (newest: step {step}); pass --resume to continue that run, \
             or choose another --run-dir",
            ckpt_dir.display()
        ),
        (None, false) => Ok(Position {
            step: 0,
            train_seconds: 0.0,
        }),
    }
}

/// Rank 0's variables and position to every rank: the run starts only when all hold the same.
fn broadcast_state(world: &World, graph: &mut TrainGraph, position: &mut Position) -> Result<()> {
    if world.size() <= 1 {
        return Ok(());
    }
    let mut state = if world.rank() == 0 {
        graph
            .state_to_host()
            .context("reading variables to broadcast")?
    } else {
        vec![0.0; graph.state_len()]
    };
    world
        .broadcast_f32(&mut state, 0)
        .context("broadcasting the initial variables")?;
    if world.rank() != 0 {
        graph
            .state_from_host(&state)
            .context("loading the broadcast variables")?;
    }
    let mut pos = [position.step as f64, position.train_seconds];
    let mut bytes: Vec<u8> = pos.iter().flat_map(|v| v.to_le_bytes()).collect();
    world
        .broadcast_bytes(&mut bytes, 0)
        .context("broadcasting the start position")?;
    for (i, chunk) in bytes.chunks_exact(8).enumerate().take(2) {
        pos[i] = f64::from_le_bytes(chunk.try_into().expect("8-byte chunk"));
    }
    position.step = pos[0] as u64;
    position.train_seconds = pos[1];
    Ok(())
}

/// This rank's pipeline for `phase`, positioned at `step` (so a resumed run sees the same data).
fn start_pipeline(
    cfg: &RunConfig,
    phase: &PhasePlan,
    step: u64,
    world: &World,
) -> Result<TrainPipeline> {
    let dir = cfg.data_root.join(&phase.data_dir);
    let files = shard_files(&dir, &phase.prefix)?;
    let done_in_phase = step - phase.first_step;
    let epoch_offset = done_in_phase / phase.steps_per_epoch;
    let config = TrainConfig {
        files,
        rank: world.rank() as u64,
        world: world.size() as u64,
        batch_size: phase.batch_per_rank as usize,
        image_px: phase.image_px,
        min_scale: phase.min_scale,
        seed: cfg.plan.run.seed,
        start_epoch: phase.epoch_start.floor() as u64 + epoch_offset,
        skip_batches: done_in_phase % phase.steps_per_epoch,
        batches_per_epoch: phase.steps_per_epoch,
        decode_threads: cfg.decode_threads,
        prefetch_batches: 2,
        shuffle_buffer: DEFAULT_SHUFFLE_BUFFER,
    };
    TrainPipeline::start(config).with_context(|| {
        format!(
            "phase {}: starting the input pipeline on {}",
            phase.index,
            dir.display()
        )
    })
}

fn phase_line(p: &PhasePlan, world: usize) -> String {
    format!(
        "phase {}: epochs {}-{}, steps {}..{}, {} px, batch {}/rank x {} = {}, lr {} -> {} ({:?}), data {}/{}",
        p.index,
        p.epoch_start,
        p.epoch_end,
        p.first_step,
        p.end_step,
        p.image_px,
        p.batch_per_rank,
        world,
        p.global_batch,
        p.lr_start,
        p.lr_end,
        p.method,
        p.data_dir,
        p.prefix
    )
}

/// `trace.json` -> `trace.rank3.json` when there are several ranks.
fn per_rank_path(path: &std::path::Path, rank: usize, world: usize) -> PathBuf {
    if world <= 1 {
        return path.to_path_buf();
    }
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ext = path
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    path.with_file_name(format!("{stem}.rank{rank}{ext}"))
}
