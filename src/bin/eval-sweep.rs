//! `eval-sweep RUN_DIR`: evaluates a run's checkpoints (checkpoint i on rank i % N under
//! mpirun) and writes the DAWNBench table, the plot and the time to the target top-5.
//! argv -> `SweepConfig` -> `eval::sweep`; an error on any rank ends the whole MPI job.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use dawnrun::dataset::{self, shard_files};
use dawnrun::eval::{self, sweep::read_exclude, SweepConfig};
use dawnrun::runinfo::{self, RunInfo};
use dawnrun::settings;
use dawnrun_dist::World;
use dawnrun_schedule::{CropMode, Schedule};

#[derive(Parser, Debug)]
#[command(
    name = "eval-sweep",
    about = "Evaluate every checkpoint of a training run on the validation set (checkpoint i on rank i % N) and report the time to the target top-5."
)]
struct Args {
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
    #[arg(long)]
    batch_size: Option<usize>,
    /// JPEG decode threads per rank [default: cores / ranks on this host].
    #[arg(long)]
    decode_threads: Option<usize>,
    /// Seconds between looks for new checkpoints with --watch.
    #[arg(long, default_value_t = 5.0)]
    poll_s: f64,
    /// With --watch, stop when no new checkpoint appeared for this many seconds.
    #[arg(long, default_value_t = 3600.0)]
    idle_timeout_s: f64,
    /// Place the graph on GPU <local rank> (a GPU build of libtensorflow is needed).
    #[arg(long)]
    gpu: bool,
}

fn main() -> ExitCode {
    dawnrun::process::quiet_tensorflow_logs();
    let args = Args::parse();
    match dawnrun::process::under_mpi(|world| run(&args, world)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(args: &Args, world: &World) -> Result<()> {
    let run_dir = &args.run_dir;
    let info_path = run_dir.join(runinfo::RUN_INFO);
    if !info_path.exists() {
        bail!(
            "{}: not a training run directory (no {}); give the trainer's --run-dir",
            run_dir.display(),
            runinfo::RUN_INFO
        );
    }
    let info: RunInfo = runinfo::read_json(&info_path)?;
    let schedule = Schedule::load(run_dir.join(runinfo::SCHEDULE_COPY))?;
    let ev = &schedule.eval;
    let data_root = args.data.clone().unwrap_or_else(|| info.data_root.clone());
    let val_dir = data_root.join(&ev.data_dir);
    let files = shard_files(&val_dir, &ev.prefix)?;
    if let Some(classes) = dataset::num_classes(&val_dir)? {
        if classes != info.num_classes {
            bail!(
                "{}: the validation records have {classes} classes but the run's network has {} \
                 (records of another dataset?)",
                val_dir.display(),
                info.num_classes
            );
        }
    }
    if !run_dir.join("checkpoints").exists() && !args.watch {
        bail!("{}: no checkpoints/ folder", run_dir.display());
    }
    let mut model = settings::model_config(&schedule.run, info.num_classes);
    if args.gpu {
        model.device = Some(format!("/device:GPU:{}", world.local_rank()));
    }
    let crop_fraction = match ev.crop_mode {
        CropMode::Central => ev.crop_fraction,
        // Resize the short side to size x ratio, then crop size: a central 1/ratio.
        CropMode::ShortSide => 1.0 / ev.resize_ratio,
    };
    let exclude = match &args.exclude {
        Some(p) => Some((p.clone(), read_exclude(p)?)),
        None => None,
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cfg = SweepConfig {
        run_dir: run_dir.clone(),
        model,
        files,
        batch_size: args.batch_size.unwrap_or(ev.batch_size.max(1) as usize),
        image_px: ev.image_size.height as u32,
        crop_fraction,
        rect: args.rect || ev.rect_val,
        decode_threads: args
            .decode_threads
            .unwrap_or_else(|| (cores / world.local_size().max(1)).max(1)),
        exclude,
        target_top5: args.target_top5.unwrap_or(ev.target_top5),
        watch: args.watch,
        poll: Duration::from_secs_f64(args.poll_s.max(0.1)),
        idle_timeout: Duration::from_secs_f64(args.idle_timeout_s),
    };
    if world.rank() == 0
        && !args.watch
        && dawnrun::checkpoint::list(&run_dir.join("checkpoints"))?.is_empty()
    {
        bail!(
            "{}: no complete checkpoints to evaluate",
            run_dir.join("checkpoints").display()
        );
    }
    eval::sweep(&cfg, world).with_context(|| format!("sweeping {}", run_dir.display()))
}
