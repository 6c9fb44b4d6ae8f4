//! The offline evaluation of a run's checkpoints, as the 106-minute run did it after training:
//! every checkpoint on the whole validation set, checkpoint i on rank i % N.
//!
//! 1. every rank lists the complete checkpoints (an `.index` file means complete: the trainer
//!    renames it into place last) and takes its own;
//! 2. a checkpoint already evaluated with the same data and settings is read back from
//!    `<run>/eval/ckpt-<step>.json` instead of evaluated again;
//! 3. with `--watch`, ranks poll for new checkpoints until the trainer writes `done.json` and
//!    every checkpoint up to its final step is evaluated;
//! 4. the results go to rank 0, which writes eval.tsv, eval.jsonl, eval.png and the verdict.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use dawnrun_data::pipeline::{EvalConfig, EvalPipeline};
use dawnrun_data::Batch;
use dawnrun_dist::World;
use serde::{Deserialize, Serialize};

use super::assign::assigned;
use super::report::{self, CheckpointResult};
use crate::checkpoint;
use crate::model::{BatchRef, EvalGraph, ModelConfig};
use crate::run_dir::{self, Done, RunDir};

pub struct SweepConfig {
    pub run_dir: RunDir,
    pub model: ModelConfig,
    /// Validation shards, every record evaluated once per checkpoint.
    pub files: Vec<PathBuf>,
    pub batch_size: usize,
    pub image_px: u32,
    pub crop: dawnrun_data::EvalCrop,
    pub rect: bool,
    /// Larger JPEGs are skipped before decoding (decompression bombs).
    pub max_image_pixels: u64,
    pub decode_threads: usize,
    /// `image/filename`s (or their base names) to leave out.
    pub exclude: Option<(PathBuf, HashSet<String>)>,
    pub target_top5: f64,
    pub watch: bool,
    pub poll: Duration,
    /// `--watch` gives up when no new checkpoint appeared for this long.
    pub idle_timeout: Duration,
}

/// What a cached result must match to be reused: the data, the preprocessing, the exclusions.
fn settings_key(cfg: &SweepConfig) -> String {
    let mut files: Vec<String> = cfg
        .files
        .iter()
        .map(|f| {
            let len = std::fs::metadata(f).map(|m| m.len()).unwrap_or(0);
            format!("{}:{len}", f.display())
        })
        .collect();
    files.sort();
    let mut excluded: Vec<&String> = cfg.exclude.iter().flat_map(|(_, s)| s.iter()).collect();
    excluded.sort();
    let text = format!(
        "{files:?}|{}|{}|{:?}|{}|{:?}|{:?}",
        cfg.batch_size, cfg.image_px, cfg.crop, cfg.rect, excluded, cfg.model.precision
    );
    format!("{:016x}", dawnrun_dist::fingerprint(text.as_bytes()))
}

#[derive(Debug, Serialize, Deserialize)]
struct Cached {
    settings: String,
    result: CheckpointResult,
}

/// One rank's outcome: its results and the checkpoints it could not evaluate.
#[derive(Debug, Default, Serialize, Deserialize)]
struct RankOutcome {
    results: Vec<CheckpointResult>,
    failed: Vec<(String, String)>,
    evaluated: usize,
    cached: usize,
}

pub fn sweep(cfg: &SweepConfig, world: &World) -> Result<()> {
    let ckpt_dir = cfg.run_dir.checkpoints();
    let key = settings_key(cfg);
    let cache_dir = cfg.run_dir.eval_cache_dir();
    std::fs::create_dir_all(&cache_dir)
        .with_context(|| format!("{}: cannot create", cache_dir.display()))?;
    let mut graph = EvalGraph::build(&cfg.model).context("building the evaluation graph")?;
    let mut outcome = RankOutcome::default();
    let mut handled: HashSet<u64> = HashSet::new();
    let mut last_new = Instant::now();
    loop {
        let all = checkpoint::list(&ckpt_dir)
            .with_context(|| format!("{}: listing checkpoints", ckpt_dir.display()))?;
        let mine = assigned(all.len(), world.rank(), world.size());
        let mut progressed = false;
        for i in mine {
            let (step, prefix) = &all[i];
            if !handled.insert(*step) {
                continue;
            }
            progressed = true;
            match evaluate_cached(cfg, &key, &mut graph, *step, prefix, &mut outcome) {
                Ok(r) => {
                    say!(
                        "rank {}: {}: top-1 {:.2}%  top-5 {:.2}%  loss {:.4}  ({} images)",
                        world.rank(),
                        prefix.display(),
                        r.top1,
                        r.top5,
                        r.loss,
                        r.images
                    );
                    outcome.results.push(r);
                }
                Err(e) => {
                    say!(
                        "rank {}: skipping {}: {e:#}",
                        world.rank(),
                        prefix.display()
                    );
                    outcome
                        .failed
                        .push((prefix.display().to_string(), format!("{e:#}")));
                }
            }
        }
        if !cfg.watch {
            break;
        }
        if progressed {
            last_new = Instant::now();
        }
        // Done when the trainer has finished and every checkpoint up to its last step was seen.
        let done_path = cfg.run_dir.done();
        if done_path.exists() {
            let done: Done = run_dir::read_json(&done_path)?;
            let all = checkpoint::list(&ckpt_dir)?;
            let final_seen = all.iter().any(|(s, _)| *s == done.final_step);
            let mine_left = assigned(all.len(), world.rank(), world.size())
                .into_iter()
                .any(|i| !handled.contains(&all[i].0));
            if final_seen && !mine_left {
                break;
            }
        }
        if last_new.elapsed() > cfg.idle_timeout {
            say!(
                "rank {}: --watch: no new checkpoint for {:.0} s and no done.json; stopping",
                world.rank(),
                cfg.idle_timeout.as_secs_f64()
            );
            break;
        }
        std::thread::sleep(cfg.poll);
    }

    // 4. Everything to rank 0.
    let bytes = serde_json::to_vec(&outcome).expect("plain struct serialises");
    let gathered = world
        .gather_bytes(&bytes)
        .context("gathering results on rank 0")?;
    let Some(parts) = gathered else {
        return Ok(());
    };
    let mut by_step: BTreeMap<u64, CheckpointResult> = BTreeMap::new();
    let mut failed = Vec::new();
    let (mut evaluated, mut cached) = (0, 0);
    for part in parts {
        let o: RankOutcome = serde_json::from_slice(&part).context("a rank's results")?;
        evaluated += o.evaluated;
        cached += o.cached;
        failed.extend(o.failed);
        for r in o.results {
            by_step.insert(r.step, r);
        }
    }
    for (step, prefix) in checkpoint::missing_data(&ckpt_dir)? {
        // A data file lost after a rank evaluated or failed on it is counted there already.
        let name = prefix.display().to_string();
        if by_step.contains_key(&step) || failed.iter().any(|(f, _)| *f == name) {
            continue;
        }
        failed.push((
            name,
            format!(
                "its index is there but its data file {} is missing (a save renames the data \
                 into place first, so it was lost afterwards)",
                checkpoint::data_path(&prefix).display()
            ),
        ));
    }
    let results: Vec<CheckpointResult> = by_step.into_values().collect();
    write_report(cfg, &results)?;
    print!("{}", report::table(&results));
    let images = results.first().map_or(0, |r| r.images);
    let skipped = results.first().map_or(0, |r| r.skipped_images);
    println!(
        "{} checkpoint(s): {evaluated} evaluated now, {cached} from earlier sweeps, {} failed; {images} validation images scored per checkpoint{}; {skipped} skipped as undecodable (counted as misses)",
        results.len(),
        failed.len(),
        match &cfg.exclude {
            Some((path, names)) => format!(
                " ({} name(s) excluded by {})",
                names.len(),
                path.display()
            ),
            None => " (no exclude list)".to_string(),
        }
    );
    for (ckpt, why) in &failed {
        println!("failed: {ckpt}: {why}");
    }
    println!("{}", report::verdict(&results, cfg.target_top5));
    println!(
        "wrote {}, {} and {}",
        cfg.run_dir.eval_table().display(),
        cfg.run_dir.eval_results().display(),
        cfg.run_dir.eval_plot().display()
    );
    if !failed.is_empty() {
        bail!(
            "{} of {} checkpoint(s) could not be evaluated (named above); the report covers the rest",
            failed.len(),
            failed.len() + results.len()
        );
    }
    Ok(())
}

fn write_report(cfg: &SweepConfig, results: &[CheckpointResult]) -> Result<()> {
    run_dir::write_file(&cfg.run_dir.eval_table(), report::tsv(results).as_bytes())?;
    run_dir::write_file(
        &cfg.run_dir.eval_results(),
        report::jsonl(results).as_bytes(),
    )?;
    let title = format!(
        "{}: validation accuracy per checkpoint",
        cfg.run_dir
            .root()
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
    );
    super::plot::draw(&cfg.run_dir.eval_plot(), results, cfg.target_top5, &title)
}

fn evaluate_cached(
    cfg: &SweepConfig,
    key: &str,
    graph: &mut EvalGraph,
    step: u64,
    prefix: &Path,
    outcome: &mut RankOutcome,
) -> Result<CheckpointResult> {
    let path = cfg.run_dir.eval_cache(step);
    if let Ok(c) = run_dir::read_json::<Cached>(&path) {
        if c.settings == key && c.result.checkpoint == prefix.display().to_string() {
            outcome.cached += 1;
            return Ok(c.result);
        }
    }
    let result = evaluate(cfg, graph, prefix)?;
    outcome.evaluated += 1;
    run_dir::write_json(
        &path,
        &Cached {
            settings: key.to_string(),
            result: result.clone(),
        },
    )?;
    Ok(result)
}

fn evaluate(cfg: &SweepConfig, graph: &mut EvalGraph, prefix: &Path) -> Result<CheckpointResult> {
    let meta = checkpoint::restore(graph, prefix)
        .with_context(|| format!("{}: cannot restore", prefix.display()))?;
    let mut pipeline = EvalPipeline::start(EvalConfig {
        files: cfg.files.clone(),
        batch_size: cfg.batch_size,
        image_px: cfg.image_px,
        crop: cfg.crop,
        decode_threads: cfg.decode_threads,
        rect: cfg.rect,
        max_image_pixels: cfg.max_image_pixels,
        num_classes: cfg.model.num_classes,
    })?;
    let (mut top1, mut top5, mut loss, mut n) = (0usize, 0usize, 0.0f64, 0usize);
    while let Some(batch) = pipeline.next() {
        let batch = batch.context("validation input")?;
        let batch = match &cfg.exclude {
            Some((_, names)) => without_excluded(batch, names),
            None => batch,
        };
        if batch.n == 0 {
            continue;
        }
        let out = graph
            .evaluate(&BatchRef::from(&batch))
            .with_context(|| format!("{}: evaluating", prefix.display()))?;
        top1 += out.correct_top1;
        top5 += out.correct_top5;
        loss += out.loss_sum;
        n += out.n;
        pipeline.give_back(batch);
    }
    // Each image the decoder refused is named here and counted as a miss.
    let skips = pipeline.stats().skipped;
    for s in &skips {
        say!(
            "{}: skipped an undecodable validation JPEG: {}: record at byte {}: {}",
            prefix.display(),
            s.file.display(),
            s.offset,
            s.cause
        );
    }
    if n == 0 {
        bail!("no validation images left to score");
    }
    let pct = |c: usize| 100.0 * c as f64 / (n + skips.len()) as f64;
    Ok(CheckpointResult {
        step: meta.step,
        epoch: meta.epoch,
        hours: meta.train_seconds / 3600.0,
        top1: pct(top1),
        top5: pct(top5),
        loss: loss / n as f64,
        images: n as u64,
        skipped_images: skips.len() as u64,
        checkpoint: prefix.display().to_string(),
    })
}

/// The batch less the images whose file name (or base name) is in `names`.
fn without_excluded(batch: Batch, names: &HashSet<String>) -> Batch {
    let Some(filenames) = &batch.filenames else {
        return batch;
    };
    let excluded = |f: &String| {
        names.contains(f)
            || Path::new(f)
                .file_name()
                .is_some_and(|b| names.contains(&*b.to_string_lossy()))
    };
    if !filenames.iter().any(excluded) {
        return batch;
    }
    let per = batch.image_bytes();
    let mut out = Batch {
        images: Vec::with_capacity(batch.images.len()),
        labels: Vec::new(),
        n: 0,
        height: batch.height,
        width: batch.width,
        filenames: Some(Vec::new()),
    };
    for (i, f) in filenames.iter().enumerate() {
        if excluded(f) {
            continue;
        }
        out.images
            .extend_from_slice(&batch.images[i * per..(i + 1) * per]);
        out.labels.push(batch.labels[i]);
        out.filenames.as_mut().expect("set above").push(f.clone());
        out.n += 1;
    }
    out
}

/// Reads an exclude list: one file name per line; blank lines and `#` comments ignored.
pub fn read_exclude(path: &Path) -> Result<HashSet<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read the exclude list", path.display()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect())
}
