//! `eval-sweep RUN_DIR`: evaluates a run's checkpoints (checkpoint i on rank i % N under
//! mpirun) and writes the DAWNBench table, the plot and the time to the target top-5.
//! argv -> `SweepConfig` -> `eval::sweep`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use dawnrun_data::EvalCrop;
use dawnrun_dist::{rendezvous, World};
use dawnrun_schedule::{CropMode, Schedule};

use super::data_facts;
use crate::checkpoint;
use crate::eval::{self, sweep::read_exclude, SweepConfig};
use crate::model::ModelConfig;
use crate::run_dir::{self, LockHolder, Role, RunDir, RunInfo};

#[derive(Parser, Debug)]
#[command(
    name = "eval-sweep",
    about = "Evaluate every checkpoint of a training run on the validation set (checkpoint i on rank i % N) and report the time to the target top-5."
)]
pub struct EvalSweepArgs {
    /// The trainer's run directory (holds run.json, schedule.yaml, checkpoints/).
    run_dir: PathBuf,
    /// Folder holding the validation shards' data dirs; overrides the run's data root.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Target top-5 accuracy in percent [default: the schedule's eval.target_top5].
    #[arg(long)]
    target_top5: Option<f64>,
    /// Evaluate checkpoints as they land beside a live run; exit after its final checkpoint.
    #[arg(long)]
    watch: bool,
    /// File of validation image names to leave out (one per line), e.g. DAWNBench's blacklist.
    #[arg(long)]
    exclude: Option<PathBuf>,
    /// Rectangular validation (batches grouped by aspect ratio) [default: the schedule's rect_val].
    #[arg(long)]
    rect: bool,
    /// Validation images per batch [default: the schedule's eval.batch_size].
    #[arg(long, value_parser = at_least_one)]
    batch_size: Option<usize>,
    /// JPEG decode threads per rank [default: the CPUs this rank may use over the host's ranks that share them].
    #[arg(long)]
    decode_threads: Option<usize>,
    /// Seconds between looks for new checkpoints with --watch.
    #[arg(long, default_value_t = 5.0, value_parser = seconds)]
    poll_s: f64,
    /// With --watch, stop (and fail) when no new checkpoint appeared for this many seconds and
    /// the trainer wrote no done.json.
    #[arg(long, default_value_t = 3600.0, value_parser = seconds)]
    idle_timeout_s: f64,
    /// End the job when a rank shows no progress for this many seconds, naming it (a frozen
    /// rank); 0: never. It must exceed one batch's evaluation and --poll-s.
    #[arg(long, default_value_t = 600.0, value_parser = seconds)]
    stall_shutdown_s: f64,
    /// Place the graph on GPU <local rank> (a GPU build of libtensorflow is needed).
    #[arg(long)]
    gpu: bool,
}

pub fn run(args: &EvalSweepArgs, world: &World) -> Result<()> {
    let stall_shutdown =
        (args.stall_shutdown_s > 0.0).then(|| Duration::from_secs_f64(args.stall_shutdown_s));
    if stall_shutdown.is_some_and(|s| s < rendezvous::MIN_LIMIT) {
        bail!(
            "--stall-shutdown-s {}: give 0 (never) or at least {} s (a working rank says so once \
             a second)",
            args.stall_shutdown_s,
            rendezvous::MIN_LIMIT.as_secs()
        );
    }
    if stall_shutdown.is_some() && args.watch && args.poll_s >= args.stall_shutdown_s {
        bail!(
            "--poll-s ({}) must be below --stall-shutdown-s ({}): the ranks sleep that long between looks",
            args.poll_s,
            args.stall_shutdown_s
        );
    }
    let run_dir = RunDir::new(&args.run_dir);
    let info_path = run_dir.run_info();
    if !info_path.exists() {
        bail!(
            "{}: not a training run directory (no {}); give the trainer's --run-dir",
            args.run_dir.display(),
            info_path.display()
        );
    }
    let info: RunInfo = run_dir::read_json(&info_path)?;
    let schedule = Schedule::load(run_dir.schedule_copy())?;
    let ev = &schedule.eval;
    let data_root = args.data.clone().unwrap_or_else(|| info.data_root.clone());
    let val_dir = data_root.join(&ev.data_dir);
    let (files, val_manifest) = data_facts::checked_shards(&val_dir, &ev.prefix)?;
    if let Some(m) = &val_manifest {
        let classes = data_facts::class_count(&val_dir, m)?;
        if classes != info.num_classes {
            bail!(
                "{}: the validation records have {classes} classes but the run's network has {} \
                 (records of another dataset?)",
                val_dir.display(),
                info.num_classes
            );
        }
    }
    let ckpt_dir = run_dir.checkpoints();
    if !ckpt_dir.exists() && !args.watch {
        bail!("{}: no such folder", ckpt_dir.display());
    }
    let mut model = ModelConfig::from_run(&schedule.run, info.num_classes);
    model.device = super::gpu_device(args.gpu, world);
    let set_by = format!(
        "{}:{}: run.precision",
        schedule.path().display(),
        schedule.locate("run.precision")
    );
    super::check_device(model.device.as_deref(), model.precision, &set_by, world)?;
    let crop = eval_crop(ev);
    let exclude = match &args.exclude {
        Some(p) => Some((p.clone(), read_exclude(p)?)),
        None => None,
    };
    let cfg = SweepConfig {
        run_dir,
        model,
        files,
        batch_size: args.batch_size.unwrap_or(ev.batch_size.max(1) as usize),
        image_px: ev.image_size.height as u32,
        crop,
        rect: args.rect || ev.rect_val,
        max_image_pixels: schedule.run.max_image_pixels,
        decode_threads: super::decode_threads(args.decode_threads, world),
        exclude,
        target_top5: args.target_top5.unwrap_or(ev.target_top5),
        watch: args.watch,
        poll: Duration::from_secs_f64(args.poll_s.max(0.1)),
        idle_timeout: Duration::from_secs_f64(args.idle_timeout_s),
        stall_shutdown,
        freeze_at: std::env::var("DAWNRUN_FREEZE_AT_CHECKPOINT")
            .ok()
            .and_then(|v| v.parse().ok()),
    };
    if world.rank() == 0 && !args.watch && checkpoint::list(&ckpt_dir)?.is_empty() {
        bail!(
            "{}: no complete checkpoints to evaluate",
            ckpt_dir.display()
        );
    }
    // Rank 0 writes the report: one sweep at a time per run directory, so two never mix theirs.
    let _lock = (world.rank() == 0)
        .then(|| {
            cfg.run_dir
                .lock(Role::Sweep, &LockHolder::this_process(world.hostname()))
        })
        .transpose()?;
    eval::sweep(&cfg, world).with_context(|| format!("sweeping {}", args.run_dir.display()))
}

/// A number of seconds: finite, not negative, at most a year (clap's error otherwise).
fn seconds(text: &str) -> Result<f64, String> {
    let s: f64 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number"))?;
    if !(0.0..=365.0 * 86400.0).contains(&s) {
        return Err(format!("{text} seconds: give 0 to 31536000"));
    }
    Ok(s)
}

fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("`{text}`: give a whole number of at least 1")),
    }
}

/// The schedule's evaluation crop as the pipeline's [`EvalCrop`] (eval-sweep and `trainer
/// export` frame images the same way).
pub(super) fn eval_crop(ev: &dawnrun_schedule::EvalSettings) -> EvalCrop {
    match ev.crop_mode {
        CropMode::Central => EvalCrop::Central {
            fraction: ev.crop_fraction,
        },
        CropMode::ShortSide => EvalCrop::ShortSide {
            resize_ratio: ev.resize_ratio,
        },
    }
}
