//! `trainer SCHEDULE [--data DIR] [--run-dir DIR] [--max-steps N] [--resume] ...`: argv ->
//! validated [`RunConfig`] -> [`crate::train::run`], one process per rank.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use dawnrun_dist::World;
use dawnrun_schedule::{Allreduce, Schedule};

use super::data_facts::{self, DataFacts};
use crate::checkpoint;
use crate::model::ModelConfig;
use crate::run_dir::{self, LockHolder, Role, RunDir, RunInfo};
use crate::train::hooks::TestFault;
use crate::train::loss_scale::LossScaler;
use crate::train::{self, RunConfig};

#[derive(Args, Debug, Clone)]
pub struct TrainArgs {
    /// The schedule (YAML), e.g. schedules/106min.yaml.
    #[arg(required = true)]
    schedule: Option<PathBuf>,
    /// Folder holding `<data_dir>/<prefix>-*` shards; overrides the schedule's `data_root`.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Where checkpoints, logs and events go [default: runs/<schedule name>].
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// Stop after this many steps in total (resume later with --resume).
    #[arg(long)]
    max_steps: Option<u64>,
    /// Continue from the newest complete checkpoint in the run directory.
    #[arg(long)]
    resume: bool,
    #[command(flatten)]
    data_facts: DataFacts,
    /// Write a Chrome-trace timeline of every step's phases (one file per rank).
    #[arg(long)]
    timeline: Option<PathBuf>,
    /// Override the schedule's all-reduce: hierarchical or ring (ours), or mpi (MPI_Allreduce).
    #[arg(long, value_enum)]
    allreduce: Option<Allreduce>,
    /// JPEG decode threads per rank [default: the CPUs this rank may use over the host's ranks that share them].
    #[arg(long)]
    decode_threads: Option<usize>,
    /// Place the graph on GPU <local rank> (a GPU build of libtensorflow is needed).
    #[arg(long)]
    gpu: bool,
}

pub fn main(args: TrainArgs) -> Result<()> {
    let schedule = args.schedule.clone().context("missing SCHEDULE")?;
    super::under_mpi(|world| train(&args, &schedule, world))
}

fn train(args: &TrainArgs, schedule_path: &Path, world: &World) -> Result<()> {
    arm_decode_panic_hook();
    let schedule = Schedule::load(schedule_path)?;
    if world.rank() == 0 {
        for w in schedule.warnings() {
            say!("warning: {w}");
        }
    }
    let data_root = args
        .data
        .clone()
        .unwrap_or_else(|| schedule.run.data_root.clone());
    // Rank 0 checks every phase's records and reads the facts, and broadcasts them, so every
    // rank plans with the same numbers; a problem ends the job before step 0.
    let (train_images, num_classes) = share_from_root(world, || {
        data_facts::check_all_phases(&schedule, &data_root)?;
        data_facts::resolve(&schedule, &data_root, &args.data_facts)
    })?;
    let plan = schedule
        .plan(world.size() as u32, train_images)
        .with_context(|| format!("{}", schedule_path.display()))?;
    let schedule_text = std::fs::read(schedule_path)
        .with_context(|| format!("{}: cannot read", schedule_path.display()))?;
    let mut fingerprint = schedule_text.clone();
    fingerprint.extend_from_slice(
        format!("|{train_images}|{num_classes}|{:?}", args.max_steps).as_bytes(),
    );
    world
        .check_same("schedule and data", &fingerprint)
        .context("ranks disagree on the configuration; every rank must run the same command")?;

    let run_dir = match &args.run_dir {
        Some(dir) => RunDir::new(dir),
        None => RunDir::for_schedule(&plan.name),
    };
    let mut model = ModelConfig::from_run(&plan.run, num_classes);
    model.device = super::gpu_device(args.gpu, world);
    let set_by = format!(
        "{}:{}: run.precision",
        schedule_path.display(),
        schedule.locate("run.precision")
    );
    super::check_device(model.device.as_deref(), model.precision, &set_by, world)?;
    // Rank 0 takes the run directory before writing anything in it, and holds it to the end.
    let _lock = if world.rank() == 0 {
        let ckpt_dir = run_dir.checkpoints();
        std::fs::create_dir_all(&ckpt_dir)
            .with_context(|| format!("{}: cannot create", ckpt_dir.display()))?;
        let lock = run_dir.lock(Role::Trainer, &LockHolder::this_process(world.hostname()))?;
        if args.resume {
            check_same_data(&run_dir, train_images, num_classes)?;
        }
        let removed = checkpoint::remove_stale_temps(&ckpt_dir)
            + checkpoint::remove_stale_temps(run_dir.root());
        if removed > 0 {
            say!("rank 0: removed {removed} temporary file(s) left by an interrupted run");
        }
        run_dir::write_file(&run_dir.schedule_copy(), &schedule_text)?;
        let info = RunInfo {
            command: std::env::args().collect(),
            schedule_name: plan.name.clone(),
            data_root: data_root.clone(),
            world_size: world.size(),
            train_images,
            num_classes,
            total_steps: plan.total_steps(),
            plan: dawnrun_schedule::to_json(&plan, &[])?,
        };
        run_dir::write_json(&run_dir.run_info(), &info)?;
        Some(lock)
    } else {
        None
    };
    let distributed = &schedule.distributed;
    let summary = train::run(
        RunConfig {
            model,
            data_root,
            run_dir,
            max_steps: args.max_steps,
            resume: args.resume,
            loss_scale: LossScaler::new(plan.run.loss_scale, plan.run.initial_loss_scale),
            allreduce: args.allreduce.unwrap_or(distributed.allreduce),
            compression: distributed.compression,
            fusion_threshold_bytes: (distributed.fusion_threshold_mb * 1024.0 * 1024.0) as usize,
            stall_warning: Duration::from_secs_f64(distributed.stall_warning_s),
            stall_shutdown: (distributed.stall_shutdown_s > 0.0)
                .then(|| Duration::from_secs_f64(distributed.stall_shutdown_s)),
            overlap: distributed.overlap,
            timeline: args.timeline.clone(),
            decode_threads: super::decode_threads(args.decode_threads, world),
            test_fault: test_fault(world.rank()),
            plan,
        },
        world,
    )?;
    world.barrier();
    if world.rank() == 0 {
        say!(
            "trained steps {}..{} in {:.1} s; last loss {:.4}",
            summary.first_step,
            summary.final_step,
            summary.train_seconds,
            summary.last_loss
        );
    }
    Ok(())
}

/// `--resume` continues a run only on the data it was planned for: the step numbers and the
/// epoch of every checkpoint depend on the training image count. (Another world size is fine:
/// the checkpoint's epoch maps to a step of the new plan.)
fn check_same_data(run_dir: &RunDir, train_images: u64, num_classes: u32) -> Result<()> {
    let path = run_dir.run_info();
    if !path.exists() {
        return Ok(());
    }
    let before: RunInfo = run_dir::read_json(&path)?;
    if before.train_images != train_images || before.num_classes != num_classes {
        bail!(
            "--resume: {} was made with {} training images and {} classes; the records now give \
             {train_images} images and {num_classes} classes. Resume on the same data (or pass \
             --train-images/--num-classes as before), or start a new --run-dir",
            path.display(),
            before.train_images,
            before.num_classes
        );
    }
    Ok(())
}

/// Test hook `DAWNRUN_DECODE_PANIC_MARKER=text`: decoding a JPEG that holds `text` panics, as a
/// decoder bug would, so the tests can show that such a panic is one more skipped image.
fn arm_decode_panic_hook() {
    if let Some(marker) = std::env::var_os("DAWNRUN_DECODE_PANIC_MARKER") {
        dawnrun_data::decode::arm_decode_panic(Some(marker.as_encoded_bytes()));
    }
}

/// The test hooks: `DAWNRUN_FAIL_AT_STEP=S` makes the trainer fail at step S,
/// `DAWNRUN_FREEZE_AT_STEP=S` / `DAWNRUN_KILL_AT_STEP=S` make it stop / kill itself there,
/// `DAWNRUN_FREEZE_IN_ALLREDUCE_AT_STEP=S` stop itself inside step S's all-reduce, and
/// `DAWNRUN_NAN_STATE_AT_STEP=S` puts a NaN into its state before the checkpoint after S steps,
/// on the rank named by `DAWNRUN_FAIL_RANK` (every rank when unset).
/// `DAWNRUN_NAN_GRADIENT_AT_STEP=S` puts a NaN into step S's averaged gradients on every rank.
fn test_fault(rank: usize) -> Option<TestFault> {
    let num = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    // On every rank whatever DAWNRUN_FAIL_RANK says: the averaged gradients are the same on all.
    if let Some(step) = num("DAWNRUN_NAN_GRADIENT_AT_STEP") {
        return Some(TestFault::NanGradientAt(step));
    }
    match num("DAWNRUN_FAIL_RANK") {
        Some(r) if r as usize != rank => None,
        _ => num("DAWNRUN_FAIL_AT_STEP")
            .map(TestFault::FailAt)
            .or_else(|| num("DAWNRUN_FREEZE_AT_STEP").map(TestFault::FreezeAt))
            .or_else(|| {
                num("DAWNRUN_FREEZE_IN_ALLREDUCE_AT_STEP").map(TestFault::FreezeInAllreduceAt)
            })
            .or_else(|| num("DAWNRUN_KILL_AT_STEP").map(TestFault::KillAt))
            .or_else(|| num("DAWNRUN_NAN_STATE_AT_STEP").map(TestFault::NanStateAt)),
    }
}

/// Runs `f` on rank 0 and gives its result to every rank (an error on rank 0 becomes an error
/// everywhere, so the job ends with rank 0's message).
fn share_from_root(world: &World, f: impl FnOnce() -> Result<(u64, u32)>) -> Result<(u64, u32)> {
    if world.size() == 1 {
        return f();
    }
    let mut bytes = Vec::new();
    if world.rank() == 0 {
        let (a, b) = f()?;
        bytes.extend_from_slice(&a.to_le_bytes());
        bytes.extend_from_slice(&b.to_le_bytes());
    }
    world.broadcast_bytes(&mut bytes, 0)?;
    if bytes.len() != 12 {
        bail!("rank {}: malformed data facts from rank 0", world.rank());
    }
    Ok((
        u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")),
        u32::from_le_bytes(bytes[8..].try_into().expect("4 bytes")),
    ))
}
