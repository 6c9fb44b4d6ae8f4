//! `eval-batches`: the evaluation pipeline's square images for the first records of some
//! shards, with each record's JPEG bytes, as one JSON object. For tests that compare another
//! implementation's preprocessing (the exported SavedModel's) with ours, pixel for pixel.
//!
//!   eval-batches --px 32 --crop central:0.8|short_side:1.14 --limit 16 FILE...

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Parser;
use dawnrun_data::{EvalConfig, EvalCrop, EvalPipeline};
use dawnrun_records::imagenet::ImageRecord;
use dawnrun_records::RecordReader;

#[derive(Parser, Debug)]
#[command(
    name = "eval-batches",
    about = "Dump the evaluation pipeline's images as JSON."
)]
struct Args {
    /// Output side in pixels.
    #[arg(long)]
    px: u32,
    /// `central:<fraction>` or `short_side:<resize ratio>`.
    #[arg(long)]
    crop: String,
    /// Images to dump (from the start of the first file).
    #[arg(long, default_value_t = 16)]
    limit: usize,
    /// Shard files, read in order.
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

fn parse_crop(s: &str) -> Result<EvalCrop> {
    let (mode, value) = s.split_once(':').context("--crop wants mode:value")?;
    let value: f64 = value.parse().context("--crop value")?;
    Ok(match mode {
        "central" => EvalCrop::Central { fraction: value },
        "short_side" => EvalCrop::ShortSide {
            resize_ratio: value,
        },
        _ => bail!("--crop mode {mode:?}: central or short_side"),
    })
}

fn run(args: Args) -> Result<()> {
    let crop = parse_crop(&args.crop)?;
    let mut jpegs = Vec::new();
    'files: for f in &args.files {
        for record in RecordReader::open(f)? {
            if jpegs.len() == args.limit {
                break 'files;
            }
            let r = ImageRecord::from_bytes(&record?.data)?;
            jpegs.push(r.encoded);
        }
    }
    let pipeline = EvalPipeline::start(EvalConfig {
        files: args.files.clone(),
        batch_size: 1,
        image_px: args.px,
        crop,
        decode_threads: 1,
        rect: false,
        max_image_pixels: dawnrun_data::DEFAULT_MAX_IMAGE_PIXELS,
        // Labels are not checked here: the tool dumps pixels of any records.
        num_classes: i32::MAX as u32,
    })?;
    let mut images = Vec::new();
    for (batch, jpeg) in pipeline.zip(jpegs) {
        let batch = batch?;
        let hex: String = jpeg.iter().map(|b| format!("{b:02x}")).collect();
        images.push(serde_json::json!({
            "jpeg_hex": hex,
            "width": batch.width,
            "height": batch.height,
            "pixels": batch.images,
        }));
    }
    println!("{}", serde_json::json!({ "images": images }));
    Ok(())
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
