//! `pipeline-bench`: images/s of the training pipeline (decode, random-resized crop, resize,
//! flip, batched) or of bare JPEG decode of the same records, over a timed window after a
//! warm-up. One JSON line for `make bench`.
//!
//!   pipeline-bench --records DIR [--prefix train] --px 128 --batch 64 --threads 2 --seconds 10 --mode train|decode [--decoder turbo|zune] --json
//!
//! Train mode also reports where the time went inside the window (`stages`: busy time per
//! stage, summed over threads, in microseconds per delivered image; on stderr as a table).
//! Decode mode reads the records the way the pipeline and tf.data do: each thread walks its
//! share of the shard files (record framing + CRC, tf.Example parse) over and over, and decodes
//! every JPEG whole at full size; the page cache holds the files after the warm-up.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use dawnrun_data::pipeline::DEFAULT_SHUFFLE_BUFFER;
use dawnrun_data::{Preprocessor, TrainConfig, TrainPipeline};
use dawnrun_records::imagenet::decode_for_training;
use dawnrun_records::shard_set::{count_records, list_shards};
use dawnrun_records::RecordReader;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum BenchMode {
    /// The training pipeline: the trainer's batches.
    Train,
    /// Bare JPEG decode to RGB of the same images: the limit.
    Decode,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Decoder {
    Turbo,
    Zune,
}

#[derive(Parser, Debug)]
#[command(
    name = "pipeline-bench",
    about = "Measure the input pipeline's images/s (or bare decode's)."
)]
struct Args {
    #[arg(long)]
    records: PathBuf,
    #[arg(long, default_value = "train")]
    prefix: String,
    #[arg(long, default_value_t = 128)]
    px: u32,
    #[arg(long, default_value_t = 64)]
    batch: usize,
    #[arg(long, default_value_t = 2)]
    threads: usize,
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    #[arg(long, value_enum, default_value = "train")]
    mode: BenchMode,
    /// Decoder of `--mode decode`: libjpeg-turbo (the pipeline's) or zune-jpeg (the one before).
    #[arg(long, value_enum, default_value = "turbo")]
    decoder: Decoder,
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Args) -> Result<()> {
    let files = list_shards(&args.records, &args.prefix).with_context(|| {
        format!(
            "{}: listing `{}` shards",
            args.records.display(),
            args.prefix
        )
    })?;
    if files.is_empty() {
        bail!("{}: no `{}` shards", args.records.display(), args.prefix);
    }
    let (rate, stages) = match args.mode {
        BenchMode::Train => train_rate(&args, files)?,
        BenchMode::Decode => (decode_rate(&args, &files)?, serde_json::Value::Null),
    };
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "images_per_s": rate,
                "mode": format!("{:?}", args.mode).to_lowercase(),
                "decoder": match args.mode {
                    BenchMode::Train => "turbo-crop".to_string(),
                    BenchMode::Decode => format!("{:?}", args.decoder).to_lowercase(),
                },
                "px": args.px,
                "threads": args.threads,
                "stages_us_per_image": stages,
            })
        );
    } else {
        println!("{rate:.1} images/s");
    }
    Ok(())
}

fn train_rate(args: &Args, files: Vec<PathBuf>) -> Result<(f64, serde_json::Value)> {
    let total = count_records(&files)?;
    let mut pipeline = TrainPipeline::start(TrainConfig {
        files,
        rank: 0,
        world_size: 1,
        batch_size: args.batch,
        image_px: args.px,
        min_scale: 0.08,
        seed: 1,
        start_epoch: 0,
        skip_batches: 0,
        batches_per_epoch: (total / args.batch as u64).max(1),
        decode_threads: args.threads,
        prefetch_batches: 2,
        shuffle_buffer: DEFAULT_SHUFFLE_BUFFER,
        max_image_pixels: dawnrun_data::DEFAULT_MAX_IMAGE_PIXELS,
        // A throughput benchmark: any stored label is accepted.
        num_classes: i32::MAX as u32,
    })?;
    let warm = Instant::now();
    while warm.elapsed().as_secs_f64() < args.warmup {
        let batch = pipeline.next()?;
        pipeline.give_back(batch);
    }
    let before = pipeline.stats().stages;
    let start = Instant::now();
    let mut images = 0usize;
    while start.elapsed().as_secs_f64() < args.seconds {
        let batch = pipeline.next()?;
        images += batch.n;
        // As the trainer does once the batch is in its tensor.
        pipeline.give_back(batch);
    }
    let elapsed = start.elapsed().as_secs_f64();
    let after = pipeline.stats().stages;
    let per_image =
        |a: Duration, b: Duration| a.saturating_sub(b).as_secs_f64() * 1e6 / images.max(1) as f64;
    let rows = [
        ("read", per_image(after.read, before.read)),
        ("parse", per_image(after.parse, before.parse)),
        ("decode", per_image(after.decode, before.decode)),
        ("resize+flip", per_image(after.resize, before.resize)),
        ("batch", per_image(after.batch, before.batch)),
    ];
    let wall = elapsed * 1e6 / images.max(1) as f64;
    eprintln!(
        "where the time goes ({} decode threads; busy us per image, summed over threads; wall {:.0} us per image x {} threads = {:.0} us of thread time):",
        args.threads,
        wall,
        args.threads,
        wall * args.threads as f64
    );
    for (name, us) in rows {
        eprintln!("  {name:<12} {us:8.1} us");
    }
    let stages: serde_json::Map<String, serde_json::Value> = rows
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::json!(v)))
        .collect();
    Ok((images as f64 / elapsed, serde_json::Value::Object(stages)))
}

fn decode_rate(args: &Args, files: &[PathBuf]) -> Result<f64> {
    let files: Arc<[PathBuf]> = files.to_vec().into();
    let threads = args.threads.max(1);
    let counting = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let decoder = args.decoder;
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let (files, counting, stop, count) =
                (files.clone(), counting.clone(), stop.clone(), count.clone());
            std::thread::spawn(move || -> Result<()> {
                let mut pre = Preprocessor::new();
                // Thread t reads files t, t + threads, ... (all of them when fewer files than
                // threads), round and round.
                let mine: Vec<&PathBuf> = if files.len() >= threads {
                    files.iter().skip(t).step_by(threads).collect()
                } else {
                    files.iter().collect()
                };
                'outer: loop {
                    for file in &mine {
                        let mut reader = RecordReader::open(file)?;
                        while let Some(record) = reader.next_record()? {
                            if stop.load(Ordering::Relaxed) {
                                break 'outer;
                            }
                            let (jpeg, _) =
                                decode_for_training(&record.data).with_context(|| {
                                    format!("{}: byte {}", file.display(), record.offset)
                                })?;
                            match decoder {
                                Decoder::Turbo => pre.decode(jpeg)?,
                                Decoder::Zune => pre.decode_zune(jpeg)?,
                            };
                            if counting.load(Ordering::Relaxed) {
                                count.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                }
                Ok(())
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(args.warmup));
    counting.store(true, Ordering::Relaxed);
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(args.seconds));
    let images = count.load(Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join()
            .map_err(|_| anyhow::anyhow!("a decode thread panicked"))??;
    }
    Ok(images as f64 / elapsed)
}
