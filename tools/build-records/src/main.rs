//! build-records: ImageFolder trees -> sharded TFRecord files of tf.Example, as TensorFlow's
//! `build_imagenet_data.py` writes them (same feature keys, shard names and 1-based labels).
//!
//! The flow, one module per stage:
//! 1. `inputs`: list `<input>/<split>/<synset>/*`, fix the label order, read metadata and boxes;
//! 2. `assign`: sort, shuffle with a fixed seed, cut into even shard ranges;
//! 3. `prepare_output` with `dawnrun_records::manifest`: refuse a folder holding another build;
//!    find shards already complete;
//! 4. `shard_writer` (+ `jpeg`): write the remaining shards in parallel, each under a temporary
//!    name renamed when complete, re-encoding PNG/CMYK and skipping non-images;
//! 5. print the summary.
//!
//! Per-file problems (not an image, damaged header) skip the file and are reported at the end;
//! anything that makes the output wrong or incomplete (missing input, unreadable file, a folder
//! of another build) stops with `error: ...` and exit code 2.
#![deny(unsafe_code)]

mod assign;
mod inputs;
mod jpeg;
mod progress;
mod shard_writer;

use anyhow::{bail, Context, Result};
use clap::Parser;
use dawnrun_records::atomic;
use dawnrun_records::manifest::{
    self, Config, Manifest, Note, ShardEntry, SplitConfig, FORMAT_VERSION, MANIFEST_FILE,
};
use dawnrun_records::shard_set::{parse_shard_name, shard_name};
use inputs::{InputFile, SplitListing};
use progress::Progress;
use rayon::prelude::*;
use shard_writer::{Labelling, ShardJob};
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Convert <input>/{train,validation}/<synset>/*.JPEG into TFRecord shards of tf.Example"
)]
struct Args {
    /// Input folder holding one folder per split, each holding one folder per synset.
    #[arg(long)]
    input: PathBuf,
    /// Output folder for the shards and build-records.json (created if missing).
    #[arg(long)]
    output: PathBuf,
    /// Shards for the `train` split.
    #[arg(long, default_value_t = 1024)]
    train_shards: usize,
    /// Shards for every other split (`validation`).
    #[arg(long, default_value_t = 128)]
    validation_shards: usize,
    /// Worker threads; 0 = one per core.
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Seed of the file shuffle; the same seed and input give the same bytes.
    #[arg(long, default_value_t = 12345)]
    seed: u64,
    /// Synset list, one per line, in label order (default: the sorted train synsets).
    #[arg(long)]
    synsets: Option<PathBuf>,
    /// `<synset>\t<text>` lines for `image/class/text`.
    #[arg(long)]
    metadata: Option<PathBuf>,
    /// Box CSV: `<file name>,xmin,ymin,xmax,ymax` (relative coordinates), several lines per file.
    #[arg(long)]
    bboxes: Option<PathBuf>,
    /// Splits to build, comma separated (folder names under --input).
    #[arg(long, value_delimiter = ',', default_value = "train,validation")]
    splits: Vec<String>,
    /// Replace shards of another configuration found in --output instead of refusing.
    #[arg(long)]
    force: bool,
}

/// Validated settings (kept apart from the CLI struct).
struct Settings {
    input: PathBuf,
    output: PathBuf,
    /// (split, shard count), in build order.
    splits: Vec<(String, usize)>,
    threads: usize,
    seed: u64,
    synsets: Option<PathBuf>,
    metadata: Option<PathBuf>,
    bboxes: Option<PathBuf>,
    force: bool,
}

impl Settings {
    fn from_args(args: Args) -> Result<Settings> {
        let mut splits = Vec::new();
        for split in &args.splits {
            let split = split.trim();
            if split.is_empty() || split.contains(['/', '\\']) || split.starts_with('.') {
                bail!("--splits: {split:?} is not a folder name");
            }
            if splits.iter().any(|(s, _)| s == split) {
                bail!("--splits: {split} is listed twice");
            }
            let shards = if split == "train" {
                args.train_shards
            } else {
                args.validation_shards
            };
            if shards == 0 {
                bail!(
                    "--{}-shards must be at least 1",
                    if split == "train" {
                        "train"
                    } else {
                        "validation"
                    }
                );
            }
            splits.push((split.to_string(), shards));
        }
        if splits.is_empty() {
            bail!("--splits is empty");
        }
        Ok(Settings {
            input: args.input,
            output: args.output,
            splits,
            threads: args.threads,
            seed: args.seed,
            synsets: args.synsets,
            metadata: args.metadata,
            bboxes: args.bboxes,
            force: args.force,
        })
    }
}

/// Seconds between manifest rewrites while shards complete (a kill loses at most this much
/// bookkeeping; those shards are then rewritten, with identical bytes).
const MANIFEST_EVERY: Duration = Duration::from_secs(1);

/// Everything known before any shard is written.
struct Plan {
    listings: Vec<(String, SplitListing)>,
    labelling: Labelling,
    config: Config,
}

fn plan(settings: &Settings) -> Result<Plan> {
    let mut listings = Vec::new();
    for (split, _) in &settings.splits {
        listings.push((split.clone(), inputs::list_split(&settings.input, split)?));
    }
    let synsets_file = match &settings.synsets {
        Some(path) => Some((path.as_path(), inputs::read_synsets_file(path)?)),
        None => None,
    };
    let order = inputs::label_order(synsets_file, &listings)?;
    let texts = match &settings.metadata {
        Some(path) => inputs::read_metadata(path)?,
        None => HashMap::new(),
    };
    let bboxes = match &settings.bboxes {
        Some(path) => inputs::read_bboxes(path)?,
        None => HashMap::new(),
    };
    let metadata_digest = match &settings.metadata {
        None => "none".to_string(),
        Some(_) => {
            let used: Vec<String> = order
                .iter()
                .map(|s| format!("{s}\t{}", texts.get(s).map_or("", String::as_str)))
                .collect();
            manifest::digest(used.iter().map(|s| s.as_bytes()))
        }
    };
    let bboxes_digest = match &settings.bboxes {
        None => "none".to_string(),
        Some(_) => {
            let mut lines: Vec<String> = bboxes
                .iter()
                .flat_map(|(f, bs)| {
                    bs.iter()
                        .map(move |b| format!("{f},{},{},{},{}", b.xmin, b.ymin, b.xmax, b.ymax))
                })
                .collect();
            lines.sort();
            manifest::digest(lines.iter().map(|s| s.as_bytes()))
        }
    };
    let splits = settings
        .splits
        .iter()
        .zip(&listings)
        .map(|((name, shards), (_, listing))| {
            let parts: Vec<String> = listing
                .files
                .iter()
                .map(|f| format!("{}\t{}", f.rel, f.size_bytes))
                .collect();
            SplitConfig {
                name: name.clone(),
                shards: *shards,
                files: listing.files.len(),
                inputs_digest: manifest::digest(parts.iter().map(|s| s.as_bytes())),
            }
        })
        .collect();
    let config = Config {
        format_version: FORMAT_VERSION,
        seed: settings.seed,
        splits,
        synsets: order.clone(),
        metadata_digest,
        bboxes_digest,
    };
    Ok(Plan {
        listings,
        labelling: Labelling {
            labels: inputs::labels(&order),
            texts,
            bboxes,
        },
        config,
    })
}

/// Shard jobs of every split: the sorted listing shuffled with the seed, cut into even ranges.
fn shard_jobs<'a>(
    settings: &Settings,
    listings: &'a [(String, SplitListing)],
) -> Vec<ShardJob<'a>> {
    let mut jobs = Vec::new();
    for ((_, shards), (split, listing)) in settings.splits.iter().zip(listings) {
        let mut order: Vec<&InputFile> = listing.files.iter().collect();
        assign::shuffle(&mut order, settings.seed, assign::split_stream(split));
        for (index, range) in assign::shard_ranges(order.len(), *shards)
            .into_iter()
            .enumerate()
        {
            jobs.push(ShardJob {
                split: split.as_str(),
                name: shard_name(split, index, *shards),
                files: order[range].to_vec(),
            });
        }
    }
    jobs
}

/// Checks the output folder against `config`; returns the entries of shards a previous run of
/// the same configuration completed. Removes leftover temporary files.
fn prepare_output(
    output: &Path,
    config: &Config,
    force: bool,
) -> Result<BTreeMap<String, ShardEntry>> {
    fs::create_dir_all(output)
        .with_context(|| format!("creating output folder {}", output.display()))?;
    let manifest_path = output.join(MANIFEST_FILE);
    let mut shard_files = Vec::new();
    for entry in fs::read_dir(output).with_context(|| format!("listing {}", output.display()))? {
        let entry = entry.with_context(|| format!("listing {}", output.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        // Temporaries (`.<shard>.<random>.tmp`) never parse as shard names.
        if parse_shard_name(&name).is_some() {
            shard_files.push(entry.path());
        }
    }
    let previous = match manifest::load(&manifest_path) {
        Ok(previous) => previous,
        Err(err) if force => {
            eprintln!(
                "build-records: warning: --force: ignoring {:#}",
                anyhow::Error::from(err)
            );
            None
        }
        Err(err) => return Err(err).context("use --force to replace that folder's shards"),
    };
    let conflict = match &previous {
        Some(m) => m.config.first_difference(config),
        None if !shard_files.is_empty() => Some(format!(
            "{} shard files but no {MANIFEST_FILE}",
            shard_files.len()
        )),
        None => None,
    };
    let mut kept = BTreeMap::new();
    match (conflict, previous) {
        (Some(diff), _) if !force => bail!(
            "{} holds shards from another configuration ({diff}); use --force to replace them or choose another --output",
            output.display()
        ),
        (Some(diff), _) => {
            eprintln!("build-records: --force: removing {} shards of another configuration ({diff})", shard_files.len());
            for path in &shard_files {
                fs::remove_file(path).with_context(|| format!("removing {}", path.display()))?;
            }
            if manifest_path.exists() {
                fs::remove_file(&manifest_path).with_context(|| format!("removing {}", manifest_path.display()))?;
            }
        }
        (None, Some(previous)) => kept = previous.shards,
        (None, None) => {}
    }
    // Shards and manifests a killed run was writing.
    atomic::remove_stale_temps(output)?;
    Ok(kept)
}

/// Totals for the summary.
#[derive(Default)]
struct SplitTotals {
    records: u64,
    bytes: u64,
    shards_written: usize,
    shards_kept: usize,
}

fn run() -> Result<()> {
    let settings = Settings::from_args(Args::parse())?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(settings.threads)
        .build()
        .context("starting worker threads")?;
    pool.install(|| build(&settings))
}

fn build(settings: &Settings) -> Result<()> {
    let started = Instant::now();
    let plan = plan(settings)?;
    let jobs = shard_jobs(settings, &plan.listings);
    let previous = prepare_output(&settings.output, &plan.config, settings.force)?;

    // Keep shards a previous run completed, after a full read; rewrite everything else.
    let keep: Vec<Option<ShardEntry>> = jobs
        .par_iter()
        .map(|job| {
            let entry = previous.get(&job.name)?;
            match shard_writer::verify_shard(&settings.output.join(&job.name), entry) {
                Ok(()) => Some(entry.clone()),
                Err(why) => {
                    eprintln!("build-records: rewriting {}: {why}", job.name);
                    None
                }
            }
        })
        .collect();
    let mut manifest = Manifest {
        tool: format!("build-records {}", env!("CARGO_PKG_VERSION")),
        input: settings.input.display().to_string(),
        config: plan.config.clone(),
        shards: BTreeMap::new(),
    };
    for (job, entry) in jobs.iter().zip(&keep) {
        if let Some(entry) = entry {
            manifest.shards.insert(job.name.clone(), entry.clone());
        }
    }
    let manifest_path = settings.output.join(MANIFEST_FILE);
    manifest::save(&manifest_path, &manifest)?;

    let to_write: Vec<&ShardJob> = jobs
        .iter()
        .zip(&keep)
        .filter(|(_, k)| k.is_none())
        .map(|(j, _)| j)
        .collect();
    let progress = Progress::new(to_write.iter().map(|j| j.files.len() as u64).sum());
    let shared = Mutex::new((manifest, Instant::now()));
    let written = to_write.par_iter().try_for_each(|job| -> Result<()> {
        let entry = shard_writer::write_shard(job, &plan.labelling, &settings.output, &progress)?;
        let mut guard = shared
            .lock()
            .expect("no thread panics while holding the manifest lock");
        let (manifest, last_save) = &mut *guard;
        manifest.shards.insert(job.name.clone(), entry);
        if last_save.elapsed() >= MANIFEST_EVERY {
            manifest::save(&manifest_path, manifest)?;
            *last_save = Instant::now();
        }
        Ok(())
    });
    progress.finish();
    let (manifest, _) = shared
        .into_inner()
        .expect("no thread panicked while holding the manifest lock");
    // Saved even after an error, so the shards that did complete are kept by the next run.
    let saved = manifest::save(&manifest_path, &manifest);
    written?;
    saved?;

    let kept_names: Vec<&str> = jobs
        .iter()
        .zip(&keep)
        .filter(|(_, k)| k.is_some())
        .map(|(j, _)| j.name.as_str())
        .collect();
    print_summary(
        settings,
        &plan,
        &jobs,
        &manifest,
        &kept_names,
        progress.input_bytes(),
        started.elapsed(),
    );
    Ok(())
}

fn print_summary(
    settings: &Settings,
    plan: &Plan,
    jobs: &[ShardJob],
    manifest: &Manifest,
    kept: &[&str],
    input_bytes: u64,
    elapsed: Duration,
) {
    let mut totals: BTreeMap<&str, SplitTotals> = BTreeMap::new();
    let mut reencoded: Vec<&Note> = Vec::new();
    let mut skipped: Vec<Note> = Vec::new();
    let mut written_records = 0;
    for job in jobs {
        let entry = &manifest.shards[&job.name];
        let t = totals.entry(job.split).or_default();
        t.records += entry.records;
        t.bytes += entry.bytes;
        if kept.contains(&job.name.as_str()) {
            t.shards_kept += 1;
        } else {
            t.shards_written += 1;
            written_records += entry.records;
        }
        reencoded.extend(&entry.reencoded);
        skipped.extend(entry.skipped.iter().cloned());
    }
    for (split, listing) in &plan.listings {
        skipped.extend(listing.skipped.iter().map(|(rel, reason)| Note {
            file: format!("{split}/{rel}"),
            reason: reason.clone(),
        }));
    }
    let elapsed_s = elapsed.as_secs_f64();
    let mut all_records = 0;
    let mut all_bytes = 0;
    for (split, _) in &settings.splits {
        let t = &totals[split.as_str()];
        all_records += t.records;
        all_bytes += t.bytes;
        println!(
            "{split}: {} images in {} shards ({} written, {} kept), {:.1} MB",
            t.records,
            t.shards_written + t.shards_kept,
            t.shards_written,
            t.shards_kept,
            t.bytes as f64 / 1e6
        );
    }
    println!(
        "{} classes; {all_records} images, {:.1} MB in {}; {written_records} images written in {elapsed_s:.1} s: {:.0} images/s, {:.1} MB/s read",
        plan.config.synsets.len(),
        all_bytes as f64 / 1e6,
        settings.output.display(),
        written_records as f64 / elapsed_s.max(1e-9),
        input_bytes as f64 / 1e6 / elapsed_s.max(1e-9),
    );
    print_notes(
        "re-encoded as RGB JPEG",
        &reencoded.into_iter().cloned().collect::<Vec<_>>(),
    );
    print_notes("skipped", &skipped);
}

/// At most this many files are named per list; the manifest holds them all.
const NAMED_FILES: usize = 10;

fn print_notes(what: &str, notes: &[Note]) {
    println!("{what}: {}", notes.len());
    for note in notes.iter().take(NAMED_FILES) {
        println!("  {}: {}", note.file, note.reason);
    }
    if notes.len() > NAMED_FILES {
        println!(
            "  ... and {} more (all listed in {MANIFEST_FILE})",
            notes.len() - NAMED_FILES
        );
    }
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
