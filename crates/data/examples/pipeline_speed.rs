//! Pipeline images/s against bare JPEG decode of the same images (the limit), at the two
//! training sizes of the reference run: 128 px crops from the 160-pixel tree and 224 px crops
//! from the 320-pixel tree. Speed lives here, not in tests.
//!
//!     cargo run --release -p dawnrun-data --example pipeline_speed -- [IMAGES] [THREADS]
//!
//! The JPEGs are synthetic (smooth gradients plus noise, quality 90) at the trees' typical
//! shapes, 213x160 and 427x320; real photos decode at a similar rate per pixel.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use dawnrun_data::{Preprocessor, TrainConfig, TrainPipeline};
use dawnrun_records::{ImageRecord, RecordWriter};
use image::{ImageEncoder, RgbImage};

/// Passes over the image set per measurement: long enough that the 10 ms CPU-time ticks are a
/// rounding error.
const PASSES: usize = 4;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn photo_like(width: u32, height: u32, seed: u32) -> Vec<u8> {
    let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    let img = RgbImage::from_fn(width, height, |x, y| {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let noise = (state % 48) as i32 - 24;
        let base = |v: u32, span: u32, off: u32| ((v * 200 / span + off) % 256) as i32;
        let c = |v: i32| (v + noise).clamp(0, 255) as u8;
        image::Rgb([
            c(base(x, width, seed % 50)),
            c(base(y, height, 30)),
            c(base(x + y, width + height, 90)),
        ])
    });
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
        .write_image(img.as_raw(), width, height, image::ExtendedColorType::Rgb8)
        .expect("encoding to memory cannot fail");
    out
}

/// Writes `jpegs` into 4 shards under `dir`.
fn write_shards(
    dir: &Path,
    jpegs: &[Vec<u8>],
    (w, h): (u32, u32),
) -> Result<Vec<PathBuf>, Box<dyn std::error::Error>> {
    let mut files = Vec::new();
    for (f, chunk) in jpegs.chunks(jpegs.len().div_ceil(4)).enumerate() {
        let path = dir.join(dawnrun_records::shards::shard_name("train", f, 4));
        let mut writer = RecordWriter::create(&path)?;
        for (i, jpeg) in chunk.iter().enumerate() {
            let record = ImageRecord {
                encoded: jpeg.clone(),
                height: h.into(),
                width: w.into(),
                label: (i % 10 + 1) as i64,
                ..Default::default()
            };
            writer.write(&record.to_bytes())?;
        }
        writer.finish()?;
        files.push(path);
    }
    Ok(files)
}

/// CPU seconds this process has used so far, all threads (utime + stime from /proc/self/stat,
/// in clock ticks of 1/100 s). Images per CPU second stay meaningful when other work shares the
/// cores; wall-clock rates do not.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// A measured run: images, wall seconds, CPU seconds.
#[derive(Clone, Copy, Default)]
struct Rate {
    wall: f64,
    per_cpu: f64,
}

impl Rate {
    fn measure(images: usize, f: impl FnOnce()) -> Self {
        let (start, cpu) = (Instant::now(), cpu_seconds());
        f();
        let (wall, cpu) = (start.elapsed().as_secs_f64(), cpu_seconds() - cpu);
        Self {
            wall: images as f64 / wall,
            per_cpu: images as f64 / cpu.max(0.01),
        }
    }

    fn best(self, other: Self) -> Self {
        Self {
            wall: self.wall.max(other.wall),
            per_cpu: self.per_cpu.max(other.per_cpu),
        }
    }
}

/// Bare decode of every JPEG, `passes` times, on `threads` threads.
fn bare_decode(jpegs: &[Vec<u8>], threads: usize, passes: usize) -> Rate {
    Rate::measure(jpegs.len() * passes, || {
        (0..passes).for_each(|_| decode_all(jpegs, threads))
    })
}

fn decode_all(jpegs: &[Vec<u8>], threads: usize) {
    std::thread::scope(|s| {
        for part in jpegs.chunks(jpegs.len().div_ceil(threads)) {
            s.spawn(move || {
                let mut pre = Preprocessor::new();
                for jpeg in part {
                    pre.decode(jpeg).expect("synthetic JPEGs decode");
                }
            });
        }
    });
}

/// Decode + random crop + resize + flip on one thread without the pipeline around it: the
/// per-image work alone, to separate resize cost from pipeline overhead.
fn bare_preprocess(jpegs: &[Vec<u8>], px: u32, passes: usize) -> Rate {
    use rand::{Rng, SeedableRng};
    let mut pre = Preprocessor::new();
    let mut out = vec![0u8; (px * px * 3) as usize];
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let spec = dawnrun_data::CropSpec::train(0.08);
    Rate::measure(jpegs.len() * passes, || {
        for jpeg in jpegs.iter().cycle().take(jpegs.len() * passes) {
            pre.run(jpeg, px, px, &mut out, |w, h| {
                let crop = dawnrun_data::sample_crop(&mut rng, w, h, &spec);
                dawnrun_data::Placement {
                    crop,
                    flip: rng.gen_bool(0.5),
                }
            })
            .expect("synthetic JPEGs decode");
        }
    })
}

/// The full pipeline (decode + crop + resize + flip + batching) over `epochs`.
fn pipeline(
    files: Vec<PathBuf>,
    images: usize,
    px: u32,
    threads: usize,
    epochs: u64,
) -> Result<Rate, Box<dyn std::error::Error>> {
    let batch_size = 64;
    let batches_per_epoch = (images / batch_size) as u64;
    let config = TrainConfig {
        files,
        rank: 0,
        world: 1,
        batch_size,
        image_px: px,
        min_scale: 0.08,
        seed: 1,
        start_epoch: 0,
        skip_batches: 0,
        batches_per_epoch,
        decode_threads: threads,
        prefetch_batches: 2,
        shuffle_buffer: 512,
    };
    let mut pipeline = TrainPipeline::start(config)?;
    pipeline.next()?; // warm-up: the shuffle buffer fills once
    let n = epochs * batches_per_epoch - 1;
    let mut result = Ok(());
    let rate = Rate::measure(n as usize * batch_size, || {
        result = (0..n).try_for_each(|_| pipeline.next().map(drop));
    });
    result?;
    Ok(rate)
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let images: usize = args.get(1).map_or(Ok(1024), |s| s.parse())?;
    let threads: usize = args.get(2).map_or(Ok(2), |s| s.parse())?;
    println!("images/s wall clock, and images per CPU-second of the whole process in brackets");
    println!("| out px | source | JPEG KB | bare decode 1 thr | bare decode {threads} thr | decode+crop+resize 1 thr | pipeline 1 thr | pipeline {threads} thr | pipeline / bare per CPU-s |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for (px, shape) in [(128u32, (213u32, 160u32)), (224, (427, 320))] {
        let jpegs: Vec<Vec<u8>> = (0..images as u32)
            .map(|i| photo_like(shape.0, shape.1, i))
            .collect();
        let kb = jpegs.iter().map(Vec::len).sum::<usize>() as f64 / jpegs.len() as f64 / 1024.0;
        let dir = tempfile::tempdir()?;
        let files = write_shards(dir.path(), &jpegs, shape)?;
        // Best of three, measurements interleaved: other work on the machine only slows runs
        // down, so the fastest run is the closest to the code's own speed.
        let mut best = [Rate::default(); 5];
        for _ in 0..3 {
            best[0] = best[0].best(bare_decode(&jpegs, 1, PASSES));
            best[1] = best[1].best(bare_decode(&jpegs, threads, PASSES));
            best[2] = best[2].best(pipeline(files.clone(), images, px, 1, PASSES as u64)?);
            best[3] = best[3].best(pipeline(files.clone(), images, px, threads, PASSES as u64)?);
            best[4] = best[4].best(bare_preprocess(&jpegs, px, PASSES));
        }
        let cell = |r: Rate| format!("{:.0} ({:.0})", r.wall, r.per_cpu);
        println!(
            "| {px} | {}x{} | {kb:.1} | {} | {} | {} | {} | {} | {:.2} |",
            shape.0,
            shape.1,
            cell(best[0]),
            cell(best[1]),
            cell(best[4]),
            cell(best[2]),
            cell(best[3]),
            best[3].per_cpu / best[1].per_cpu,
        );
    }
    Ok(())
}
