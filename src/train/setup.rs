//! Everything before the first step of a run, on every rank:
//!
//! 1. build the graph; rank 0 initialises it or restores the newest complete checkpoint, then
//!    broadcasts every variable and the position (step, training seconds), so all ranks start
//!    bitwise identical;
//! 2. the all-reduce, stall check, timeline and loss scaler ([`Replicas`]);
//! 3. rank 0's step log; and, per phase, this rank's pipeline positioned at the exact data of the
//!    current step (so a resumed run sees the same batches).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use dawnrun_data::pipeline::{TrainConfig, TrainPipeline, DEFAULT_SHUFFLE_BUFFER};
use dawnrun_dist::stall::{watchdog_grace, StallCheck, Watchdog};
use dawnrun_dist::timeline::Timeline;
use dawnrun_dist::{Allreducer, World};
use dawnrun_records::shard_set::list_shards;
use dawnrun_schedule::{Allreduce, Compression, PhasePlan, Plan};

use super::hooks::TestFault;
use super::log::StepLog;
use super::loss_scale::LossScaler;
use super::step::Replicas;
use crate::checkpoint;
use crate::model::{ModelConfig, TrainGraph};
use crate::run_dir::RunDir;

/// Everything a run needs, validated by `trainer` before any work.
pub struct RunConfig {
    pub plan: Plan,
    pub model: ModelConfig,
    pub data_root: PathBuf,
    pub run_dir: RunDir,
    /// Stop after this many steps in total (the run resumes later from its checkpoint).
    pub max_steps: Option<u64>,
    pub resume: bool,
    pub loss_scale: LossScaler,
    pub allreduce: Allreduce,
    pub compression: Compression,
    pub fusion_threshold_bytes: usize,
    pub stall_warning: Duration,
    /// End the job when a rank has not reached a step for this long (`None`: never).
    pub stall_shutdown: Option<Duration>,
    /// All-reduce each fusion group while backward still runs (more than one rank only).
    pub overlap: bool,
    pub timeline: Option<PathBuf>,
    pub decode_threads: usize,
    /// Test hook: a fault this rank injects into itself.
    pub test_fault: Option<TestFault>,
}

/// A run ready for its first step: what the loop in `run.rs` drives.
pub struct Trainer<'w> {
    pub graph: TrainGraph,
    pub replicas: Replicas<'w>,
    pub log: StepLog,
    /// The first step this process runs, and the step after its last.
    pub first_step: u64,
    pub end_step: u64,
    /// Training seconds before this process started (from the checkpoint).
    trained_before: f64,
    started: Instant,
}

impl<'w> Trainer<'w> {
    pub fn setup(cfg: &RunConfig, world: &'w World) -> Result<Trainer<'w>> {
        let plan = &cfg.plan;
        let end_step = cfg
            .max_steps
            .map_or(plan.total_steps(), |m| m.min(plan.total_steps()));
        let mut graph = TrainGraph::build(&cfg.model).context("building the training graph")?;
        graph.init().context("initialising variables")?;
        let mut position = Position::default();
        if world.rank() == 0 {
            position = restore_or_start(&mut graph, &cfg.run_dir.checkpoints(), cfg.resume, plan)?;
            // An earlier trainer's `done.json` (a `--max-steps` stop) no longer holds once this
            // one continues the run: `eval-sweep --watch` would stop beside it.
            let done = cfg.run_dir.done();
            if done.exists() {
                std::fs::remove_file(&done)
                    .with_context(|| format!("{}: cannot remove", done.display()))?;
            }
        }
        broadcast_state(world, &mut graph, &mut position)?;

        let timeline = cfg
            .timeline
            .as_deref()
            .map(|path| open_timeline(path, world))
            .transpose()?;
        let lens: Vec<usize> = graph.trainable().iter().map(|v| v.len).collect();
        let mut allreducer = Allreducer::new(
            cfg.allreduce,
            cfg.compression,
            cfg.fusion_threshold_bytes,
            &lens,
        )?;
        // Before the watchdog starts, so that it can see this host's barriers.
        allreducer.connect(world);
        let log = if world.rank() == 0 {
            StepLog::create(&cfg.run_dir, plan, position.step, end_step)?
        } else {
            StepLog::silent()
        };
        log.note(&format!(
            "rank 0 of {}: ResNet-{} ({} params, {} classes), steps {}..{} of {}, {} fusion buffer(s), all-reduce {:?}{}, {} decode thread(s)",
            world.size(),
            cfg.model.depth,
            graph.num_params(),
            cfg.model.num_classes,
            position.step,
            end_step,
            plan.total_steps(),
            allreducer.plan().groups().len(),
            cfg.allreduce,
            if cfg.overlap && world.size() > 1 {
                ", overlapped with backward"
            } else {
                ""
            },
            cfg.decode_threads,
        ));
        let mut scaler = cfg.loss_scale.clone();
        if position.step > 0 {
            scaler.resume(position.loss_scale as f32, position.good_steps as u32);
        }
        let watchdog = cfg.stall_shutdown.map(|limit| {
            let limit = limit + watchdog_grace(limit);
            Watchdog::start(
                world,
                limit,
                ("step", position.step),
                allreducer.host_board(),
            )
        });
        let mut replicas = Replicas {
            world,
            allreducer,
            stall: StallCheck::new(world, cfg.stall_warning, cfg.stall_shutdown),
            watchdog,
            timeline,
            scaler,
            skipped_here: 0,
            skipped_everywhere: 0,
            overlap: None,
            test_fault: cfg.test_fault,
        };
        if cfg.overlap {
            replicas.enable_overlap(&mut graph)?;
        }
        Ok(Trainer {
            graph,
            replicas,
            log,
            first_step: position.step,
            end_step,
            trained_before: position.train_seconds,
            started: Instant::now(),
        })
    }

    /// Training seconds so far, across resumes.
    pub fn train_seconds(&self) -> f64 {
        self.trained_before + self.started.elapsed().as_secs_f64()
    }
}

/// Where the run stands; what rank 0 broadcasts after restoring.
#[derive(Debug, Clone, Copy, Default)]
struct Position {
    step: u64,
    train_seconds: f64,
    /// The loss scaler's state at the checkpoint (unused on a fresh start).
    loss_scale: f64,
    good_steps: u64,
}

/// Rank 0: the newest complete checkpoint when resuming, else a fresh start. A fresh start into
/// a run directory that already holds checkpoints is refused, so nothing is overwritten.
fn restore_or_start(
    graph: &mut TrainGraph,
    ckpt_dir: &Path,
    resume: bool,
    plan: &Plan,
) -> Result<Position> {
    let latest = checkpoint::latest_complete(ckpt_dir)
        .with_context(|| format!("{}: listing checkpoints", ckpt_dir.display()))?;
    if let Some((step, prefix)) = checkpoint::missing_data(ckpt_dir)?.pop() {
        // Resuming from an older checkpoint without a word would repeat steps silently, and a
        // fresh start beside a lost checkpoint would later resume into it.
        if !resume && latest.is_none() {
            bail!(
                "{} holds the index of a checkpoint whose data file is lost (step {step}, {}); \
                 remove it or choose another --run-dir",
                ckpt_dir.display(),
                checkpoint::data_path(&prefix).display()
            );
        }
        if resume && latest.as_ref().is_none_or(|(s, _)| *s < step) {
            bail!(
                "{}: the newest checkpoint (step {step}) has its index but not its data file {}; \
                 move {}.index aside to resume from {}",
                ckpt_dir.display(),
                checkpoint::data_path(&prefix).display(),
                prefix.display(),
                latest.as_ref().map_or_else(
                    || "the start (no complete checkpoint is left)".to_string(),
                    |(_, p)| p.display().to_string()
                )
            );
        }
    }
    match (latest, resume) {
        (Some((_, prefix)), true) => {
            let meta = checkpoint::restore(graph, &prefix)
                .with_context(|| format!("resuming from {}", prefix.display()))?;
            say!(
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
                say!(
                    "rank 0: the checkpoint was made at another world size: epoch {:.4} is step {step} here",
                    meta.epoch
                );
                step
            };
            Ok(Position {
                step,
                train_seconds: meta.train_seconds,
                loss_scale: meta.loss_scale,
                good_steps: meta.loss_scale_good_steps,
            })
        }
        (None, true) => {
            say!(
                "rank 0: --resume: no complete checkpoint in {}, starting at step 0",
                ckpt_dir.display()
            );
            Ok(Position::default())
        }
        (Some((step, _)), false) => bail!(
            "{} already holds checkpoints (newest: step {step}); pass --resume to continue that run, \
             or choose another --run-dir",
            ckpt_dir.display()
        ),
        (None, false) => Ok(Position::default()),
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
    let mut pos = [
        position.step as f64,
        position.train_seconds,
        position.loss_scale,
        position.good_steps as f64,
    ];
    let mut bytes: Vec<u8> = pos.iter().flat_map(|v| v.to_le_bytes()).collect();
    world
        .broadcast_bytes(&mut bytes, 0)
        .context("broadcasting the start position")?;
    for (i, chunk) in bytes.chunks_exact(8).enumerate().take(pos.len()) {
        pos[i] = f64::from_le_bytes(chunk.try_into().expect("8-byte chunk"));
    }
    position.step = pos[0] as u64;
    position.train_seconds = pos[1];
    position.loss_scale = pos[2];
    position.good_steps = pos[3] as u64;
    Ok(())
}

/// This rank's pipeline for `phase`, positioned at `step` (so a resumed run sees the same data).
pub fn start_pipeline(
    cfg: &RunConfig,
    phase: &PhasePlan,
    step: u64,
    world: &World,
) -> Result<TrainPipeline> {
    let dir = cfg.data_root.join(&phase.data_dir);
    let files = list_shards(&dir, &phase.prefix)?;
    let done_in_phase = step - phase.first_step;
    let epoch_offset = done_in_phase / phase.steps_per_epoch;
    let config = TrainConfig {
        files,
        rank: world.rank() as u64,
        world_size: world.size() as u64,
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
        max_image_pixels: cfg.plan.run.max_image_pixels,
        num_classes: cfg.model.num_classes,
    };
    TrainPipeline::start(config).with_context(|| {
        format!(
            "phase {}: starting the input pipeline on {}",
            phase.index,
            dir.display()
        )
    })
}

/// This rank's `--timeline` file (`trace.json` is `trace.rank3.json` at rank 3 of several), for
/// `trainer train` and `trainer bench`. The error names the file.
pub(crate) fn open_timeline(path: &Path, world: &World) -> Result<Timeline> {
    let path = per_rank_path(path, world.rank(), world.size());
    Ok(Timeline::create(&path, world.rank())?)
}

/// `trace.json` -> `trace.rank3.json` when there are several ranks.
fn per_rank_path(path: &Path, rank: usize, world_size: usize) -> PathBuf {
    if world_size <= 1 {
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
