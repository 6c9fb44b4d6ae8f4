//! make-synthetic: the embedded default dataset, so `make demo` trains without ImageNet.
//!
//! Writes an ImageNet-shaped ImageFolder tree, the same layout as the fast.ai "imagenet-sz" sets:
//! `<out>/<size>/{train,validation}/<synset>/<synset>_<i>.JPEG` for each `--sizes` entry (short
//! side in pixels), plus `<out>/synsets.txt` (sorted synsets, one a line) and
//! `<out>/metadata.txt` (`<synset>\t<text>`, as ImageNet's synset-to-words file).
//!
//! Every image is a pure function of (seed, split, class, index): its scene is sampled from its
//! own ChaCha generator, drawn once at the largest size and resized down for the others, so the
//! same picture appears in every size tree and the output bytes do not depend on thread count.
#![deny(unsafe_code)]

mod classes;
mod cmyk;
mod scene;

use anyhow::{bail, Context, Result};
use clap::Parser;
use classes::{class_specs, ClassSpec, MAX_CLASSES};
use image::codecs::jpeg::JpegEncoder;
use image::imageops::FilterType;
use image::{ImageFormat, RgbImage};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use scene::Scene;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Write a small, learnable, ImageNet-shaped JPEG dataset"
)]
struct Args {
    /// Output folder (created if missing; existing files with the same names are overwritten).
    #[arg(long)]
    out: PathBuf,
    /// Number of classes (at most 192 distinct shape x palette x texture recipes).
    #[arg(long, default_value_t = 10)]
    classes: usize,
    /// Training images per class.
    #[arg(long, default_value_t = 260)]
    train_per_class: usize,
    /// Validation images per class.
    #[arg(long, default_value_t = 50)]
    val_per_class: usize,
    /// Seed of every image's generator.
    #[arg(long, default_value_t = 2018)]
    seed: u64,
    /// Short sides in pixels, one tree per size, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "160,320")]
    sizes: Vec<u32>,
    /// JPEG quality 1..=100.
    #[arg(long, default_value_t = 90)]
    quality: u8,
    /// Also write, in each size's train/FIRST_SYNSET/, a PNG named .JPEG, a CMYK JPEG, a JPEG cut
    /// short and a text file named .JPEG (the awkward files build-records must re-encode or skip).
    #[arg(long)]
    odd_files: bool,
}

/// Validated run parameters (the CLI struct is kept apart from what the work needs).
struct Plan {
    out: PathBuf,
    classes: Vec<ClassSpec>,
    splits: [(&'static str, usize); 2],
    seed: u64,
    /// Short sides, largest first (the drawing size).
    sizes: Vec<u32>,
    quality: u8,
    odd_files: bool,
}

impl Plan {
    fn from_args(args: Args) -> Result<Plan> {
        if args.classes == 0 || args.classes > MAX_CLASSES {
            bail!("--classes {}: must be in 1..={MAX_CLASSES}", args.classes);
        }
        if args.train_per_class == 0 {
            bail!("--train-per-class must be at least 1");
        }
        let mut sizes = args.sizes.clone();
        sizes.sort_unstable_by(|a, b| b.cmp(a));
        sizes.dedup();
        if sizes.is_empty() || sizes.iter().any(|&s| !(16..=4096).contains(&s)) {
            bail!(
                "--sizes {:?}: each size must be in 16..=4096 pixels",
                args.sizes
            );
        }
        if !(1..=100).contains(&args.quality) {
            bail!("--quality {}: must be in 1..=100", args.quality);
        }
        Ok(Plan {
            out: args.out,
            classes: class_specs(args.classes),
            splits: [
                ("train", args.train_per_class),
                ("validation", args.val_per_class),
            ],
            seed: args.seed,
            sizes,
            quality: args.quality,
            odd_files: args.odd_files,
        })
    }
}

/// One image to make: which split, class and index within the class.
#[derive(Clone, Copy)]
struct Job {
    split_id: u64,
    split: &'static str,
    class: usize,
    index: usize,
}

/// The image's generator seed: SplitMix64 finalisers over (seed, split, class, index), so
/// neighbouring indices get unrelated streams.
fn image_seed(seed: u64, split_id: u64, class: usize, index: usize) -> u64 {
    let mix = |mut z: u64| {
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut h = mix(seed.wrapping_add(0x9E37_79B9_7F4A_7C15));
    for part in [split_id, class as u64, index as u64] {
        h = mix(h ^ part.wrapping_add(0x9E37_79B9_7F4A_7C15));
    }
    h
}

fn encode_jpeg(img: &RgbImage, quality: u8) -> Result<Vec<u8>> {
    let mut bytes = Vec::with_capacity(img.as_raw().len() / 6);
    JpegEncoder::new_with_quality(&mut bytes, quality)
        .encode_image(img)
        .context("encoding JPEG")?;
    Ok(bytes)
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

fn class_dir(plan: &Plan, size: u32, split: &str, class: &ClassSpec) -> PathBuf {
    plan.out
        .join(size.to_string())
        .join(split)
        .join(&class.synset)
}

/// Draw one image at the largest size, then resize and write it for every size. Returns bytes written.
fn make_image(plan: &Plan, job: Job) -> Result<u64> {
    let class = &plan.classes[job.class];
    let mut rng =
        ChaCha8Rng::seed_from_u64(image_seed(plan.seed, job.split_id, job.class, job.index));
    let scene = Scene::sample(class, &mut rng);
    let base = scene.draw(plan.sizes[0]);
    let name = format!("{}_{}.JPEG", class.synset, job.index);
    let mut written = 0;
    for &size in &plan.sizes {
        let img = if size == plan.sizes[0] {
            base.clone()
        } else {
            let (w, h) = scene.dimensions(size);
            image::imageops::resize(&base, w, h, FilterType::Triangle)
        };
        let bytes = encode_jpeg(&img, plan.quality)?;
        write_file(&class_dir(plan, size, job.split, class).join(&name), &bytes)?;
        written += bytes.len() as u64;
    }
    Ok(written)
}

/// The awkward files of `--odd-files`, in each size's `train/<first synset>/`.
fn make_odd_files(plan: &Plan) -> Result<()> {
    let class = &plan.classes[0];
    let mut rng = ChaCha8Rng::seed_from_u64(image_seed(plan.seed, 99, 0, 0));
    let scene = Scene::sample(class, &mut rng);
    for &size in &plan.sizes {
        let img = scene.draw(size);
        let dir = class_dir(plan, size, "train", class);
        let mut png = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut png), ImageFormat::Png)
            .context("encoding PNG")?;
        write_file(&dir.join(format!("{}_odd_png.JPEG", class.synset)), &png)?;
        write_file(
            &dir.join(format!("{}_odd_cmyk.JPEG", class.synset)),
            &cmyk::encode_cmyk_mosaic(&img),
        )?;
        // A JPEG cut halfway through its image data, as a partial download leaves it: the
        // headers whole, no end-of-image marker.
        let whole = encode_jpeg(&img, plan.quality)?;
        let scan = whole
            .windows(2)
            .rposition(|w| w == [0xFF, 0xDA])
            .context("no start-of-scan marker in the encoded JPEG")?;
        write_file(
            &dir.join(format!("{}_odd_cut.JPEG", class.synset)),
            &whole[..scan + (whole.len() - scan) / 2],
        )?;
        write_file(
            &dir.join(format!("{}_odd_text.JPEG", class.synset)),
            b"this is not an image, just text saved under an image name\n",
        )?;
    }
    Ok(())
}

fn run() -> Result<()> {
    let plan = Plan::from_args(Args::parse())?;
    let started = Instant::now();
    for &size in &plan.sizes {
        for (split, _) in plan.splits {
            for class in &plan.classes {
                let dir = class_dir(&plan, size, split, class);
                fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            }
        }
    }
    let synsets: String = plan
        .classes
        .iter()
        .map(|c| format!("{}\n", c.synset))
        .collect();
    write_file(&plan.out.join("synsets.txt"), synsets.as_bytes())?;
    let metadata: String = plan
        .classes
        .iter()
        .map(|c| format!("{}\t{}\n", c.synset, c.text()))
        .collect();
    write_file(&plan.out.join("metadata.txt"), metadata.as_bytes())?;

    let mut jobs = Vec::new();
    for (split_id, (split, per_class)) in plan.splits.into_iter().enumerate() {
        for class in 0..plan.classes.len() {
            for index in 0..per_class {
                jobs.push(Job {
                    split_id: split_id as u64,
                    split,
                    class,
                    index,
                });
            }
        }
    }
    let bytes: u64 = jobs
        .par_iter()
        .map(|&job| make_image(&plan, job))
        .try_reduce(|| 0, |a, b| Ok(a + b))?;
    if plan.odd_files {
        make_odd_files(&plan)?;
    }
    let elapsed_s = started.elapsed().as_secs_f64();
    eprintln!(
        "make-synthetic: {} classes, {} train + {} validation images per class, sizes {:?}, \
         {:.1} MB in {:.1} s ({:.0} images/s) -> {}",
        plan.classes.len(),
        plan.splits[0].1,
        plan.splits[1].1,
        plan.sizes,
        bytes as f64 / 1e6,
        elapsed_s,
        jobs.len() as f64 / elapsed_s.max(1e-9),
        plan.out.display()
    );
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn image_seeds_differ_across_every_coordinate() {
        let mut seen = HashSet::new();
        for seed in 0..4 {
            for split in 0..2 {
                for class in 0..10 {
                    for index in 0..50 {
                        assert!(seen.insert(image_seed(seed, split, class, index)));
                    }
                }
            }
        }
    }
}
