//! `trainer bench`: the trainer's step time against the same graph on a pre-made batch, for
//! `make bench`. The difference is the framework overhead the trainer adds around TensorFlow:
//! waiting for the input pipeline, the gradient round trip to the host, the all-reduce.
//!
//! Both loops call the training loop's own `update` (gradients -> all-reduce -> verdict ->
//! apply); the trainer's loop also takes its batches from the real pipeline over `--records`. Under mpirun every rank runs it
//! and rank 0 prints the result; `images_per_s` is then the global rate.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use dawnrun_data::pipeline::{TrainConfig, TrainPipeline, DEFAULT_SHUFFLE_BUFFER};
use dawnrun_dist::World;
use dawnrun_records::shard_set::{count_records, list_shards};
use dawnrun_schedule::{Allreduce, DataFormat, Precision};

use crate::model::{BatchRef, ModelConfig, TrainGraph};
use crate::train::log::StepLog;
use crate::train::step::{update, Replicas};

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[arg(long, default_value_t = 18)]
    depth: u32,
    #[arg(long, default_value_t = 10)]
    classes: u32,
    #[arg(long, default_value_t = 128)]
    px: u32,
    /// Images per rank per step.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    #[arg(long, default_value_t = 20)]
    steps: usize,
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    #[arg(long, value_enum, default_value_t = Precision::Fp32)]
    precision: Precision,
    /// Records folder with `<prefix>-*` shards for the trainer's path (else only the bare graph).
    #[arg(long)]
    records: Option<PathBuf>,
    #[arg(long, default_value = "train")]
    prefix: String,
    #[arg(long)]
    decode_threads: Option<usize>,
    #[arg(long, value_enum, default_value_t = Allreduce::Hierarchical)]
    allreduce: Allreduce,
    /// Fusion buffer size in MiB (the schedule's `distributed.fusion_threshold_mb`).
    #[arg(long, default_value_t = 64.0)]
    fusion_mb: f64,
    /// All-reduce each fusion group while backward runs (`distributed.overlap`).
    #[arg(long)]
    overlap: bool,
    /// TensorFlow inter-op threads (`run.inter_op_threads`; 0: its default).
    #[arg(long, default_value_t = 0)]
    inter_op_threads: u32,
    #[arg(long)]
    json: bool,
    /// Also write the training graph's GraphDef to this file and its step's node names to
    /// `<file>.json`, for `bench/py/profile_step.py`.
    #[arg(long)]
    graph_def: Option<PathBuf>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    v[v.len() / 2]
}

pub fn run(args: &BenchArgs, world: &World) -> Result<()> {
    let mut cfg = ModelConfig::new(args.depth, args.classes);
    cfg.precision = args.precision;
    cfg.data_format = DataFormat::Nhwc;
    cfg.inter_op_threads = args.inter_op_threads;
    let mut graph = TrainGraph::build(&cfg)?;
    graph.init()?;
    if let Some(path) = &args.graph_def {
        let (def, nodes) = graph.graph_def()?;
        std::fs::write(path, def).with_context(|| format!("writing {}", path.display()))?;
        let names = path.with_extension("json");
        std::fs::write(&names, serde_json::to_string_pretty(&nodes)?)
            .with_context(|| format!("writing {}", names.display()))?;
    }
    let fusion_bytes = (args.fusion_mb * 1024.0 * 1024.0) as usize;
    let mut replicas = Replicas::with_defaults(world, args.allreduce, fusion_bytes, &graph)?;
    if args.overlap {
        replicas.enable_overlap(&mut graph)?;
    }
    let log = StepLog::silent();
    let px = args.px as usize;
    let n = args.batch;

    // The bare graph: one pre-made batch, fed again and again, through the trainer's update.
    let images: Vec<u8> = (0..n * px * px * 3)
        .map(|i| (i * 7919 % 251) as u8)
        .collect();
    let labels: Vec<i32> = (0..n).map(|i| (i as u32 % args.classes) as i32).collect();
    let premade = BatchRef {
        images: &images,
        labels: &labels,
        n,
        height: px,
        width: px,
    };
    let mut step = 0u64;
    let mut premade_times = Vec::new();
    for i in 0..args.warmup + args.steps {
        let t = Instant::now();
        update(&mut graph, &mut replicas, &premade, step, 0.01, &log)?;
        step += 1;
        if i >= args.warmup {
            premade_times.push(t.elapsed().as_secs_f64());
        }
    }

    // The trainer's path: batches from the pipeline, the same update.
    let mut trainer_times = Vec::new();
    if let Some(dir) = &args.records {
        let files = list_shards(dir, &args.prefix)?;
        let total = count_records(&files)?;
        let mut pipeline = TrainPipeline::start(TrainConfig {
            files,
            rank: world.rank() as u64,
            world: world.size() as u64,
            batch_size: n,
            image_px: args.px,
            min_scale: 0.08,
            seed: 1,
            start_epoch: 0,
            skip_batches: 0,
            batches_per_epoch: (total / (n * world.size()) as u64).max(1),
            decode_threads: super::decode_threads(args.decode_threads, world),
            prefetch_batches: 2,
            shuffle_buffer: DEFAULT_SHUFFLE_BUFFER,
            max_image_pixels: dawnrun_data::decode::DEFAULT_MAX_IMAGE_PIXELS,
            num_classes: args.classes,
        })?;
        for i in 0..args.warmup + args.steps {
            let t = Instant::now();
            let batch = pipeline.next()?;
            update(
                &mut graph,
                &mut replicas,
                &BatchRef::from(&batch),
                step,
                0.01,
                &log,
            )?;
            step += 1;
            pipeline.give_back(batch);
            if i >= args.warmup {
                trainer_times.push(t.elapsed().as_secs_f64());
            }
        }
    }
    world.barrier();
    if world.rank() != 0 {
        return Ok(());
    }
    let premade_s = median(premade_times);
    let trainer_s = if trainer_times.is_empty() {
        f64::NAN
    } else {
        median(trainer_times)
    };
    let global = (n * world.size()) as f64;
    let result = serde_json::json!({
        "np": world.size(),
        "overlap": args.overlap,
        "inter_op_threads": args.inter_op_threads,
        "allreduce_hidden_pct": replicas.overlap.as_ref().map(|o| {
            let total = (o.hidden + o.exposed).as_secs_f64();
            if total > 0.0 { 100.0 * o.hidden.as_secs_f64() / total } else { 0.0 }
        }),
        "fusion_mb": args.fusion_mb,
        "depth": args.depth,
        "px": args.px,
        "batch_per_rank": n,
        "precision": args.precision,
        "params": graph.num_params(),
        "step_s_median": if trainer_s.is_nan() { serde_json::Value::Null } else { trainer_s.into() },
        "premade_step_s_median": premade_s,
        "images_per_s": global / if trainer_s.is_nan() { premade_s } else { trainer_s },
        "premade_images_per_s": global / premade_s,
        "overhead_pct": if trainer_s.is_nan() { serde_json::Value::Null } else { ((trainer_s - premade_s) / premade_s * 100.0).into() },
    });
    if args.json {
        println!("{result}");
    } else {
        println!("{}", serde_json::to_string_pretty(&result)?);
    }
    Ok(())
}
