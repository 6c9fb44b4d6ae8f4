//! `trainer`: one process per rank under MPI (or alone).
//!
//!   trainer SCHEDULE [--data DIR] [--run-dir DIR] [--max-steps N] [--resume] ...
//!   trainer plan SCHEDULE --np N [--train-images M] [--at S1,S2] [--json]
//!   trainer bench --depth 18 --px 128 --batch 32 ... (step time, for `make bench`)
//!
//! argv -> validated `RunConfig` -> `train::run`. This file alone reads the environment, installs
//! the abort-on-panic hook and picks exit codes; an error on any rank ends the whole MPI job.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser};
use dawnrun::dataset;
use dawnrun::runinfo::{self, RunInfo};
use dawnrun::settings;
use dawnrun::train::{self, RunConfig};
use dawnrun_dist::{allreduce::Method, World};
use dawnrun_schedule::Schedule;

#[derive(Parser, Debug)]
#[command(
    name = "trainer",
    about = "Train ResNet on TFRecord shards following a YAML schedule (one process per rank under mpirun).",
    after_help = "Other forms:\n  trainer plan SCHEDULE --np N [--train-images M] [--at S1,S2] [--json]\n  trainer bench [--depth 18 --px 128 --batch 32 --steps 20 ...]\n  trainer gradcheck [--depth 18 --px 32 --batch 4]   (under mpirun: all-reduce vs. its definition)"
)]
struct TrainArgs {
    /// The schedule (YAML), e.g. schedules/106min.yaml.
    schedule: PathBuf,
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
    /// Override the schedule's all-reduce: ring (ours) or mpi (MPI_Allreduce).
    #[arg(long)]
    allreduce: Option<String>,
    /// JPEG decode threads per rank [default: cores / ranks on this host, at least 1].
    #[arg(long)]
    decode_threads: Option<usize>,
    /// Place the graph on GPU <local rank> (a GPU build of libtensorflow is needed).
    #[arg(long)]
    gpu: bool,
}

#[derive(Args, Debug)]
struct DataFacts {
    /// Training images per epoch [default: counted from the first phase's records].
    #[arg(long)]
    train_images: Option<u64>,
    /// Classes [default: from build-records' manifest beside the records, else 1000].
    #[arg(long)]
    num_classes: Option<u32>,
}

#[derive(Parser, Debug)]
#[command(
    name = "trainer plan",
    about = "Print the phase table of a schedule laid out on N ranks."
)]
struct PlanArgs {
    schedule: PathBuf,
    /// World size (ranks).
    #[arg(long, default_value_t = 1)]
    np: u32,
    #[command(flatten)]
    data_facts: DataFacts,
    /// Folder holding the shards (to count images); overrides the schedule's `data_root`.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Steps to describe, comma-separated.
    #[arg(long, value_delimiter = ',')]
    at: Vec<u64>,
    /// One JSON object with `phases` and `at` arrays.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    dawnrun::process::quiet_tensorflow_logs();
    let argv: Vec<String> = std::env::args().collect();
    let result = match argv.get(1).map(String::as_str) {
        Some("plan") => plan_main(PlanArgs::parse_from(
            std::iter::once("trainer plan".to_string()).chain(argv[2..].iter().cloned()),
        )),
        Some("bench") => dawnrun::bench::main(&argv[2..]),
        Some("gradcheck") => dawnrun::gradcheck::main(&argv[2..]),
        _ => return train_main(TrainArgs::parse_from(&argv), argv),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn plan_main(args: PlanArgs) -> Result<()> {
    let schedule = load_schedule(&args.schedule)?;
    let data_root = args
        .data
        .clone()
        .unwrap_or_else(|| schedule.run.data_root.clone());
    let train_images = match args.data_facts.train_images {
        Some(n) => n,
        None => count_train_images(&schedule, &data_root)
            .context("pass --train-images N to plan without records")?,
    };
    let plan = schedule
        .plan(args.np, train_images)
        .with_context(|| format!("{}", args.schedule.display()))?;
    if args.json {
        let json = dawnrun_schedule::to_json(&plan, &args.at)?;
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        println!(
            "{}: {} ranks, {} training images, {} steps",
            plan.name,
            args.np,
            train_images,
            plan.total_steps()
        );
        print!("{}", dawnrun_schedule::render_table(&plan));
        if !args.at.is_empty() {
            print!("{}", dawnrun_schedule::render_at(&plan, &args.at)?);
        }
    }
    Ok(())
}

/// Under MPI an error must end every rank, not just this one: `World::fail` aborts the job.
fn train_main(args: TrainArgs, argv: Vec<String>) -> ExitCode {
    match dawnrun::process::under_mpi(|world| train(&args, argv, world)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn train(args: &TrainArgs, argv: Vec<String>, world: &World) -> Result<()> {
    let schedule = load_schedule(&args.schedule)?;
    if world.rank() == 0 {
        for w in schedule.warnings() {
            eprintln!("warning: {w}");
        }
    }
    let data_root = args
        .data
        .clone()
        .unwrap_or_else(|| schedule.run.data_root.clone());
    // Rank 0 reads the facts and broadcasts them, so every rank plans with the same numbers.
    let facts = share_from_root(world, || {
        data_facts(&schedule, &data_root, &args.data_facts)
    })?;
    let (train_images, num_classes) = facts;
    let plan = schedule
        .plan(world.size() as u32, train_images)
        .with_context(|| format!("{}", args.schedule.display()))?;
    let schedule_text = std::fs::read(&args.schedule)
        .with_context(|| format!("{}: cannot read", args.schedule.display()))?;
    let mut fingerprint = schedule_text.clone();
    fingerprint.extend_from_slice(
        format!("|{train_images}|{num_classes}|{:?}", args.max_steps).as_bytes(),
    );
    world
        .check_same("schedule and data", &fingerprint)
        .context("ranks disagree on the configuration; every rank must run the same command")?;

    let run_dir = args
        .run_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("runs").join(&plan.name));
    let allreduce = match &args.allreduce {
        Some(m) => m.parse::<Method>()?,
        None => settings::allreduce(&schedule.distributed),
    };
    let mut model = settings::model_config(&plan.run, num_classes);
    if args.gpu {
        model.device = Some(format!("/device:GPU:{}", world.local_rank()));
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let decode_threads = args
        .decode_threads
        .unwrap_or_else(|| (cores / world.local_size().max(1)).max(1));
    let (fail_rank, fail_step) = fail_hook();
    let fail_at_step = match fail_rank {
        Some(r) if r == world.rank() => fail_step,
        None => fail_step,
        _ => None,
    };

    if world.rank() == 0 {
        std::fs::create_dir_all(run_dir.join("checkpoints"))
            .with_context(|| format!("{}: cannot create", run_dir.display()))?;
        runinfo::write_atomic(&run_dir.join(runinfo::SCHEDULE_COPY), &schedule_text)?;
        runinfo::write_json(
            &run_dir.join(runinfo::RUN_INFO),
            &RunInfo {
                command: argv,
                schedule_name: plan.name.clone(),
                data_root: data_root.clone(),
                world_size: world.size(),
                train_images,
                num_classes,
                total_steps: plan.total_steps(),
                plan: dawnrun_schedule::to_json(&plan, &[])?,
            },
        )?;
    }
    let summary = train::run(
        RunConfig {
            model,
            data_root,
            run_dir,
            max_steps: args.max_steps,
            resume: args.resume,
            loss_scale: settings::loss_scale(&plan.run),
            allreduce,
            compression: settings::compression(&schedule.distributed),
            fusion_threshold_bytes: (schedule.distributed.fusion_threshold_mb * 1024.0 * 1024.0)
                as usize,
            stall_warning: Duration::from_secs_f64(schedule.distributed.stall_warning_s),
            timeline: args.timeline.clone(),
            decode_threads,
            fail_at_step,
            plan,
        },
        world,
    )?;
    world.barrier();
    if world.rank() == 0 {
        eprintln!(
            "trained steps {}..{} in {:.1} s; last loss {:.4}",
            summary.first_step, summary.final_step, summary.train_seconds, summary.last_loss
        );
    }
    Ok(())
}

/// The test hook: `DAWNRUN_FAIL_AT_STEP=S` makes the trainer fail at step S, on the rank named
/// by `DAWNRUN_FAIL_RANK` (every rank when unset).
fn fail_hook() -> (Option<usize>, Option<u64>) {
    let num = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    (
        num("DAWNRUN_FAIL_RANK").map(|r| r as usize),
        num("DAWNRUN_FAIL_AT_STEP"),
    )
}

fn load_schedule(path: &std::path::Path) -> Result<Schedule> {
    Ok(Schedule::load(path)?)
}

/// The training image count and class count, from flags or from the records.
fn data_facts(
    schedule: &Schedule,
    data_root: &std::path::Path,
    given: &DataFacts,
) -> Result<(u64, u32)> {
    let train_images = match given.train_images {
        Some(n) => n,
        None => count_train_images(schedule, data_root)?,
    };
    let num_classes = match given.num_classes {
        Some(n) => n,
        None => {
            let first = &schedule.phases[0];
            let dir = data_root.join(&first.data_dir);
            match dataset::num_classes(&dir)? {
                Some(n) => n,
                None => {
                    eprintln!(
                        "warning: {}: no build-records manifest; assuming 1000 classes (pass --num-classes)",
                        dir.display()
                    );
                    1000
                }
            }
        }
    };
    Ok((train_images, num_classes))
}

fn count_train_images(schedule: &Schedule, data_root: &std::path::Path) -> Result<u64> {
    let first = schedule
        .phases
        .first()
        .context("the schedule has no phases")?;
    dataset::count_images(&data_root.join(&first.data_dir), &first.prefix)
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
