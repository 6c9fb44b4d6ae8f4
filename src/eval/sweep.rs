//! The offline evaluation of a run's checkpoints, as the 106-minute run did it after training:
//! every checkpoint on the whole validation set, checkpoint i on rank i % N.
//!
//! 1. rank 0 lists the complete checkpoints (an `.index` file means complete: the trainer
//!    renames it into place last) and reads `done.json`, and every rank takes that one look, so
//!    all ranks agree on who evaluates what and on when to stop even while a trainer writes;
//!    of the checkpoints no round has handled yet, the i-th goes to rank i % N;
//! 2. a checkpoint already evaluated with the same data, settings and checkpoint files (its
//!    index's fingerprint) is read back from `<run>/eval/ckpt-<step>.json` instead;
//! 3. the ranks meet ([`Rendezvous`]): a rank that finished its share waits for the others as
//!    long as they show progress, and ends the job naming any that went silent (frozen) for
//!    `--stall-shutdown-s`;
//! 4. with `--watch`, rounds repeat every `--poll-s` until the trainer writes `done.json`, or
//!    until no new checkpoint came for `--idle-timeout-s` (then the sweep fails: the run did not
//!    finish);
//! 5. the results go to rank 0, which writes eval.tsv, eval.jsonl, eval.png and the verdict.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use dawnrun_data::pipeline::{EvalConfig, EvalPipeline};
use dawnrun_dist::stall::watchdog_grace;
use dawnrun_dist::{Lane, Rendezvous, Watchdog, World};
use serde::{Deserialize, Serialize};

use super::assign::assigned;
use super::feeder::{feed_ahead, is_excluded};
use super::report::{self, CheckpointResult};
use crate::checkpoint;
use crate::model::{EvalGraph, ModelConfig};
use crate::run_dir::{self, Done, RunDir};
use crate::self_signal::signal_self;

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
    /// End the job when a rank shows no progress for this long (`None`: never).
    pub stall_shutdown: Option<Duration>,
    /// Test hook: the rank given this checkpoint stops itself (SIGSTOP) before evaluating it.
    pub freeze_at: Option<u64>,
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
    /// [`checkpoint_identity`] of the files evaluated: a checkpoint written again under the same
    /// step (a run restarted from scratch, a resume on more ranks) is evaluated again.
    identity: String,
    result: CheckpointResult,
}

/// What tells one checkpoint's files from another's under the same name: a fingerprint of its
/// index (which holds every tensor's checksum) and the data file's length.
fn checkpoint_identity(prefix: &Path) -> Result<String> {
    let index = checkpoint::index_path(prefix);
    let bytes =
        std::fs::read(&index).with_context(|| format!("{}: cannot read", index.display()))?;
    let data = checkpoint::data_path(prefix);
    let len = std::fs::metadata(&data)
        .with_context(|| format!("{}: cannot read", data.display()))?
        .len();
    Ok(format!("{:016x}:{len}", dawnrun_dist::fingerprint(&bytes)))
}

/// What rank 0 saw in the run directory at the start of a round; every rank takes the same.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Look {
    /// Complete checkpoints (step, prefix), by step.
    checkpoints: Vec<(u64, PathBuf)>,
    /// The trainer wrote `done.json`: every checkpoint it will write is in `checkpoints`.
    finished: bool,
    /// `--watch`: no new checkpoint for the idle timeout, and no `done.json`.
    idle: bool,
}

/// Rank 0's look, given to every rank. `growth`: the highest step seen and when it last grew
/// (rank 0's, for the idle timeout; a count could stand still while old checkpoints go).
fn share_look(
    cfg: &SweepConfig,
    world: &World,
    growth: &mut (Option<u64>, Instant),
) -> Result<Look> {
    let mut bytes = Vec::new();
    if world.rank() == 0 {
        // done.json first: it is written after the final checkpoint, so a listing taken after
        // it holds every checkpoint of a finished run.
        let done_path = cfg.run_dir.done();
        let finished = done_path.exists();
        if finished {
            let _: Done = run_dir::read_json(&done_path)?;
        }
        let dir = cfg.run_dir.checkpoints();
        let checkpoints = checkpoint::list(&dir)
            .with_context(|| format!("{}: listing checkpoints", dir.display()))?;
        let newest = checkpoints.last().map(|(step, _)| *step);
        if newest > growth.0 {
            *growth = (newest, Instant::now());
        }
        let look = Look {
            idle: cfg.watch && !finished && growth.1.elapsed() > cfg.idle_timeout,
            checkpoints,
            finished,
        };
        bytes = serde_json::to_vec(&look).expect("plain struct serialises");
    }
    world.broadcast_bytes(&mut bytes, 0)?;
    serde_json::from_slice(&bytes).context("rank 0's look at the run")
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
    let mut growth = (None, Instant::now());
    let mut meeting = Rendezvous::new(world, cfg.stall_shutdown);
    // A frozen rank 0 leaves the others in the next look's broadcast: their watchdogs end it.
    let watchdog = cfg
        .stall_shutdown
        .map(|limit| Watchdog::start(world, limit + watchdog_grace(limit), ("round", 0), None));
    let mark = |round: u64, lane: Lane| {
        if let Some(w) = &watchdog {
            w.mark(round, lane);
        }
    };
    let mut idle_stop = false;
    for round in 1u64.. {
        mark(round, Lane::Negotiate);
        let look = share_look(cfg, world, &mut growth)?;
        meeting.all_heard();
        let pending: Vec<&(u64, PathBuf)> = look
            .checkpoints
            .iter()
            .filter(|(step, _)| !handled.contains(step))
            .collect();
        for i in assigned(pending.len(), world.rank(), world.size()) {
            let (step, prefix) = pending[i];
            if cfg.freeze_at == Some(*step) {
                signal_self(
                    "STOP",
                    &format!("rank {}: {}", world.rank(), prefix.display()),
                )?;
            }
            let mut beat = || {
                meeting.beat(world);
                mark(round, Lane::Compute);
            };
            match evaluate_cached(
                cfg,
                &key,
                &mut graph,
                (*step, prefix),
                &mut outcome,
                &mut beat,
            ) {
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
        handled.extend(pending.iter().map(|(step, _)| *step));
        meeting.meet(world, || mark(round, Lane::Negotiate))?;
        if !cfg.watch || look.finished {
            break;
        }
        if look.idle {
            idle_stop = true;
            break;
        }
        mark(round, Lane::Negotiate);
        std::thread::sleep(cfg.poll);
    }
    // 5. Everything to rank 0.
    let bytes = serde_json::to_vec(&outcome).expect("plain struct serialises");
    let gathered = world
        .gather_bytes(&bytes)
        .context("gathering results on rank 0")?;
    drop(watchdog);
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
    if idle_stop {
        bail!(
            "--watch: no new checkpoint for {:.0} s (--idle-timeout-s) and no done.json: the \
             run did not finish (is its trainer still running?); the report covers the {} \
             checkpoint(s) seen",
            cfg.idle_timeout.as_secs_f64(),
            results.len()
        );
    }
    if !failed.is_empty() {
        bail!(
            "{} of {} checkpoint(s) could not be evaluated (named above); the report covers the rest",
            failed.len(),
            failed.len() + results.len()
        );
    }
    Ok(())
}

/// The table, the results and the plot are made in memory and replaced as one set: a sweep that
/// fails on the way never leaves a new table beside an old plot.
fn write_report(cfg: &SweepConfig, results: &[CheckpointResult]) -> Result<()> {
    let title = format!(
        "{}: validation accuracy per checkpoint",
        cfg.run_dir
            .root()
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
    );
    let png = super::plot::render(results, cfg.target_top5, &title)?;
    let (tsv, jsonl) = (report::tsv(results), report::jsonl(results));
    run_dir::write_files(&[
        (&cfg.run_dir.eval_table(), tsv.as_bytes()),
        (&cfg.run_dir.eval_results(), jsonl.as_bytes()),
        (&cfg.run_dir.eval_plot(), &png),
    ])
}

/// `beat` is called per batch: this rank is making progress.
fn evaluate_cached(
    cfg: &SweepConfig,
    key: &str,
    graph: &mut EvalGraph,
    (step, prefix): (u64, &Path),
    outcome: &mut RankOutcome,
    beat: &mut dyn FnMut(),
) -> Result<CheckpointResult> {
    let identity = checkpoint_identity(prefix)?;
    let path = cfg.run_dir.eval_cache(step);
    if let Ok(c) = run_dir::read_json::<Cached>(&path) {
        if c.settings == key
            && c.identity == identity
            && c.result.checkpoint == prefix.display().to_string()
        {
            outcome.cached += 1;
            return Ok(c.result);
        }
    }
    let result = evaluate(cfg, graph, prefix, beat)?;
    outcome.evaluated += 1;
    let cached = Cached {
        settings: key.to_string(),
        identity,
        result: result.clone(),
    };
    // The cache only saves a later sweep the work: a full disk must not throw the result away.
    if let Err(e) = run_dir::write_json(&path, &cached) {
        say!(
            "warning: {}: the result is not cached (a later sweep evaluates it again): {e:#}",
            prefix.display()
        );
    }
    Ok(result)
}

fn evaluate(
    cfg: &SweepConfig,
    graph: &mut EvalGraph,
    prefix: &Path,
    beat: &mut dyn FnMut(),
) -> Result<CheckpointResult> {
    beat();
    let meta = checkpoint::restore(graph, prefix)
        .with_context(|| format!("{}: cannot restore", prefix.display()))?;
    let pipeline = EvalPipeline::start(EvalConfig {
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
    let exclude = cfg.exclude.as_ref().map(|(_, names)| names);
    let pool = graph.feed_pool();
    let stats = feed_ahead(pipeline, pool, cfg.model.num_classes, exclude, |feed| {
        let out = graph
            .evaluate(feed)
            .with_context(|| format!("{}: evaluating", prefix.display()))?;
        top1 += out.correct_top1;
        top5 += out.correct_top5;
        loss += out.loss_sum;
        n += out.n;
        beat();
        Ok(())
    })?;
    // Each image the decoder refused is named here and counted as a miss, unless excluded.
    let skips: Vec<_> = stats
        .skipped
        .into_iter()
        .filter(|s| match (exclude, &s.filename) {
            (Some(names), Some(f)) => !is_excluded(f, names),
            _ => true,
        })
        .collect();
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
    let loss = loss / n as f64;
    if !loss.is_finite() {
        bail!("the validation loss is {loss}: the weights are not finite (a diverged run?)");
    }
    let pct = |c: usize| 100.0 * c as f64 / (n + skips.len()) as f64;
    Ok(CheckpointResult {
        step: meta.step,
        epoch: meta.epoch,
        hours: meta.train_seconds / 3600.0,
        top1: pct(top1),
        top5: pct(top5),
        loss,
        images: n as u64,
        skipped_images: skips.len() as u64,
        checkpoint: prefix.display().to_string(),
    })
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
