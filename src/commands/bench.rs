//! `trainer bench`: the trainer's step time against the same graph on a pre-made batch, for
//! `make bench`. The difference is the framework overhead the trainer adds around TensorFlow:
//! waiting for the input pipeline, the gradient round trip to the host, the all-reduce.
//!
//! Both loops call the training loop's own `update` (gradients -> all-reduce -> verdict ->
//! apply); the trainer's loop also takes its batches from the real pipeline over `--records`.
//! Under mpirun every rank runs it and rank 0 prints the result; `images_per_s` is then the
//! global rate. With `--serve` the job stays up and times runs of either path on request, so
//! `make bench` can interleave it with the Keras reference, or np 2 with np 1, a few steps at a
//! time.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use dawnrun_data::pipeline::{TrainConfig, TrainPipeline, DEFAULT_SHUFFLE_BUFFER};
use dawnrun_dist::timeline::Lane;
use dawnrun_dist::World;
use dawnrun_records::shard_set::{count_records, list_shards};
use dawnrun_schedule::{Allreduce, DataFormat, Precision};

use super::usage::Usage;
use crate::model::{BatchRef, Feed, ModelConfig, TrainGraph};
use crate::train::feeder::Feeder;
use crate::train::log::StepLog;
use crate::train::setup::open_timeline;
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
    /// Tensor layout of the graph (the schedule's `run.data_format`).
    #[arg(long, value_enum, default_value_t = DataFormat::Nhwc)]
    data_format: DataFormat,
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
    /// Stay up for interleaved timing (`bench/harness.py`'s step and scaling rows): after the
    /// warm-up of both paths print `{"ready": true, "params": N}`, then for each stdin line
    /// `premade K`, `trainer K` or `lockstep K` (the trainer's input, no gradient exchange) run
    /// K steps of that path and print their times as JSON (rank 0's, at every rank count) and
    /// each rank's CPU seconds, minor page faults and involuntary context switches per step
    /// (`usage_per_step`), with `--overlap` also the share of those steps' all-reduce that
    /// backward hid.
    #[arg(long)]
    serve: bool,
    /// Also write the training graph's GraphDef to this file and its step's node names to
    /// `<file>.json`, for `bench/py/profile_step.py`.
    #[arg(long)]
    graph_def: Option<PathBuf>,
    /// Write a Chrome-trace timeline of every step's phases to this file (`.rankN` inserted
    /// before the extension above np 1), as `trainer train --timeline` does; the trainer's
    /// path waits for its batches in the input lane.
    #[arg(long)]
    timeline: Option<PathBuf>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    v[v.len() / 2]
}

pub fn run(args: &BenchArgs, world: &World) -> Result<()> {
    super::check_device(None, args.precision, "--precision", world)?;
    let mut cfg = ModelConfig::new(args.depth, args.classes);
    cfg.precision = args.precision;
    cfg.data_format = args.data_format;
    cfg.inter_op_threads = args.inter_op_threads;
    // fp16 schedules scale the loss (a static scale of 1 in fp16 draws a schedule warning), so
    // an fp16 bench times the scaled graph, fed a scale of 1.
    cfg.loss_scaling = args.precision == Precision::Fp16;
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
    if let Some(path) = &args.timeline {
        replicas.timeline = Some(open_timeline(path, world)?);
    }
    let px = args.px as usize;
    let n = args.batch;
    // The bare graph: one pre-made batch, fed again and again, through the trainer's update.
    let images: Vec<u8> = (0..n * px * px * 3)
        .map(|i| (i * 7919 % 251) as u8)
        .collect();
    let labels: Vec<i32> = (0..n).map(|i| (i as u32 % args.classes) as i32).collect();
    // In the graph's input tensors once, as the Keras reference holds its batch in a tensor.
    let premade = graph.feed_pool().fill(
        &BatchRef {
            images: &images,
            labels: &labels,
            n,
            height: px,
            width: px,
        },
        args.classes,
    )?;
    let mut stepper = Stepper {
        graph: &mut graph,
        replicas: &mut replicas,
        log: StepLog::silent(),
        step: 0,
        premade,
        feeder: None,
    };
    if args.serve {
        serve(args, world, &mut stepper)?;
        return stepper.replicas.finish_timeline();
    }
    stepper.premade(args.warmup)?;
    let premade_times = stepper.premade(args.steps)?;
    // The trainer's path: batches from the pipeline, the same update.
    let mut trainer_times = Vec::new();
    if args.records.is_some() {
        stepper.start_feeder(args, world)?;
        stepper.fed(args.warmup)?;
        trainer_times = stepper.fed(args.steps)?;
    }
    let Stepper {
        graph,
        replicas,
        feeder,
        ..
    } = stepper;
    drop(feeder);
    replicas.finish_timeline()?;
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
        "allreduce_hidden_pct": replicas.overlap.as_ref().map(|o| hidden_pct(o.hidden, o.exposed)),
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

/// The two timed paths over one graph: the pre-made batch, and batches from the pipeline.
struct Stepper<'a, 'w> {
    graph: &'a mut TrainGraph,
    replicas: &'a mut Replicas<'w>,
    log: StepLog,
    step: u64,
    premade: Feed,
    /// The trainer's input: the pipeline over `--records` and its feeder.
    feeder: Option<Feeder>,
}

impl Stepper<'_, '_> {
    /// Starts the trainer's input, if `--records` names the data.
    fn start_feeder(&mut self, args: &BenchArgs, world: &World) -> Result<()> {
        if let Some(pipeline) = start_pipeline(args, world)? {
            let pool = self.graph.feed_pool();
            self.feeder = Some(Feeder::start(pipeline, pool, args.classes)?);
        }
        Ok(())
    }

    /// `k` steps on the pre-made batch; the seconds of each.
    fn premade(&mut self, k: usize) -> Result<Vec<f64>> {
        let mut times = Vec::with_capacity(k);
        for _ in 0..k {
            let t = Instant::now();
            update(
                self.graph,
                self.replicas,
                &self.premade,
                self.step,
                0.01,
                &self.log,
            )?;
            self.step += 1;
            times.push(t.elapsed().as_secs_f64());
        }
        Ok(times)
    }

    /// `k` steps fed by the pipeline, each timed from asking for its batch to the update's end.
    fn fed(&mut self, k: usize) -> Result<Vec<f64>> {
        self.fed_steps(k, false)
    }

    /// `k` steps fed by the pipeline in which the ranks exchange no gradients: each applies its
    /// own in one session run (the one-rank step) and they meet only in one small
    /// `MPI_Allreduce` a step, so they still wait for each other every step. The scaling rows'
    /// reference: our step against this, in the same processes, is what the gradient exchange
    /// costs (all-reduce, second session run, finite check); this against two independent
    /// trainers is what lockstep itself costs on the machine. The replicas drift apart, so it
    /// is for timing only.
    fn lockstep(&mut self, k: usize) -> Result<Vec<f64>> {
        self.fed_steps(k, true)
    }

    fn fed_steps(&mut self, k: usize, lockstep: bool) -> Result<Vec<f64>> {
        let Some(feeder) = self.feeder.as_mut() else {
            anyhow::bail!("no pipeline: `trainer bench` needs --records for the trainer's path");
        };
        let mut times = Vec::with_capacity(k);
        for _ in 0..k {
            let t = Instant::now();
            let input = {
                let _s = self
                    .replicas
                    .enter(self.step, Lane::InputWait, "next batch");
                feeder.next_batch()?
            };
            if lockstep {
                let ex = &mut *self.replicas;
                let out = {
                    let _s = ex.enter(self.step, Lane::Compute, "lockstep step");
                    self.graph
                        .fused_step(&input.feed, ex.scaler.scale(), 0.01)?
                };
                let _s = ex.enter(self.step, Lane::Negotiate, "lockstep meet");
                ex.world.sum_f64(&mut [f64::from(out.metrics.loss)]);
            } else {
                update(
                    self.graph,
                    self.replicas,
                    &input.feed,
                    self.step,
                    0.01,
                    &self.log,
                )?;
            }
            self.step += 1;
            times.push(t.elapsed().as_secs_f64());
        }
        Ok(times)
    }
}

fn start_pipeline(args: &BenchArgs, world: &World) -> Result<Option<TrainPipeline>> {
    let Some(dir) = &args.records else {
        return Ok(None);
    };
    let files = list_shards(dir, &args.prefix)?;
    let total = count_records(&files)?;
    let n = args.batch;
    Ok(Some(TrainPipeline::start(TrainConfig {
        files,
        rank: world.rank() as u64,
        world_size: world.size() as u64,
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
    })?))
}

/// Serve mode: both paths warmed up, then timed on request. A harness that keeps this process
/// and the reference's alive and alternates short runs of steps between them gives both sides
/// the same moments of the machine (its speed drifts by ~10% over minutes). Under mpirun rank 0
/// reads the requests (mpirun gives stdin to rank 0 only), passes each on to the other ranks
/// without keeping their cores busy while they wait, and alone answers; every rank runs the
/// steps, in lockstep as in training.
fn serve(args: &BenchArgs, world: &World, stepper: &mut Stepper) -> Result<()> {
    use std::io::{BufRead, Write};

    stepper.premade(args.warmup)?;
    stepper.start_feeder(args, world)?;
    if stepper.feeder.is_some() {
        stepper.fed(args.warmup)?;
    }
    let mut out = std::io::stdout().lock();
    let mut requests = std::io::stdin().lock().lines();
    if world.rank() == 0 {
        let ready = serde_json::json!({ "ready": true, "params": stepper.graph.num_params() });
        writeln!(out, "{ready}")?;
        out.flush()?;
    }
    loop {
        // Empty: stdin has ended and so does every rank.
        let mut request = Vec::new();
        if world.rank() == 0 {
            if let Some(line) = requests.next() {
                let line = line.context("reading a request on stdin")?;
                // Passed on as parsed: short, whatever padding the line had.
                let (path, k) = parse_request(&line)?;
                request = format!("{} {k}", path.name()).into_bytes();
            }
        }
        world.broadcast_idle(&mut request);
        if request.is_empty() {
            return Ok(());
        }
        let (path, k) = parse_request(&String::from_utf8_lossy(&request))?;
        let before = stepper
            .replicas
            .overlap
            .as_ref()
            .map(|o| (o.hidden, o.exposed));
        let used_before = Usage::now();
        let times = match path {
            Path::Premade => stepper.premade(k)?,
            Path::Trainer => stepper.fed(k)?,
            Path::Lockstep => stepper.lockstep(k)?,
        };
        let used = Usage::now().per_step_since(&used_before, k);
        let used: Vec<u8> = used.iter().flat_map(|v| v.to_le_bytes()).collect();
        let used_by_rank = world.gather_bytes(&used)?;
        if let Some(used_by_rank) = used_by_rank {
            let mut answer = serde_json::json!({
                "path": path.name(),
                "step_s": times,
                "usage_per_step": usage_json(&used_by_rank),
            });
            // With --overlap: how much of these steps' all-reduce ran while backward did (none
            // for lockstep steps, which all-reduce nothing).
            let after = stepper
                .replicas
                .overlap
                .as_ref()
                .map(|o| (o.hidden, o.exposed));
            if let (Some((h0, e0)), Some((h1, e1))) = (before, after) {
                if h1 + e1 > h0 + e0 {
                    answer["allreduce_hidden_pct"] = hidden_pct(h1 - h0, e1 - e0).into();
                }
            }
            writeln!(out, "{answer}")?;
            out.flush()?;
        }
    }
}

/// Each rank's [`Usage::per_step_since`] (three little-endian f64s, as gathered) as JSON.
fn usage_json(by_rank: &[Vec<u8>]) -> serde_json::Value {
    by_rank
        .iter()
        .map(|bytes| {
            let v: Vec<f64> = bytes
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().expect("chunks of 8")))
                .collect();
            serde_json::json!({
                "cpu_s": v.first(),
                "minor_faults": v.get(1),
                "involuntary_switches": v.get(2),
            })
        })
        .collect()
}

/// The share of the all-reduce's time that ran while backward was still running, in %.
fn hidden_pct(hidden: Duration, exposed: Duration) -> f64 {
    let total = (hidden + exposed).as_secs_f64();
    if total > 0.0 {
        100.0 * hidden.as_secs_f64() / total
    } else {
        0.0
    }
}

/// The timed paths a serve request names.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Path {
    Premade,
    Trainer,
    /// The trainer's input, but no gradient exchange (see `Stepper::lockstep`).
    Lockstep,
}

impl Path {
    fn name(self) -> &'static str {
        match self {
            Path::Premade => "premade",
            Path::Trainer => "trainer",
            Path::Lockstep => "lockstep",
        }
    }
}

/// A serve request: `premade K`, `trainer K` or `lockstep K`, K > 0 steps.
fn parse_request(line: &str) -> Result<(Path, usize)> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let k = match words[..] {
        [_, k] => k.parse::<usize>().ok().filter(|&k| k > 0),
        _ => None,
    };
    match (words.first().copied(), k) {
        (Some("premade"), Some(k)) => Ok((Path::Premade, k)),
        (Some("trainer"), Some(k)) => Ok((Path::Trainer, k)),
        (Some("lockstep"), Some(k)) => Ok((Path::Lockstep, k)),
        _ => anyhow::bail!(
            "request {line:?}: expected `premade K`, `trainer K` or `lockstep K` (K > 0)"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_name_a_path_and_a_positive_step_count() {
        assert_eq!(parse_request("premade 5").unwrap(), (Path::Premade, 5));
        assert_eq!(parse_request(" trainer  3 ").unwrap(), (Path::Trainer, 3));
        assert_eq!(parse_request("lockstep 2").unwrap(), (Path::Lockstep, 2));
        for bad in [
            "premade many",
            "trainer 0",
            "trainer",
            "fed 2",
            "premade 2 3",
            "lockstep -1",
            "",
        ] {
            let err = parse_request(bad).unwrap_err().to_string();
            assert!(
                err.contains("expected `premade K`, `trainer K` or `lockstep K`"),
                "{bad}: {err}"
            );
        }
    }
}
