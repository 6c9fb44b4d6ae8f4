//! `trainer export RUN_DIR [--step N | --best] --out DIR`: one checkpoint of a run as a
//! TensorFlow SavedModel (inference graph, fp32 weights, JPEG and uint8 signatures, the synset
//! list as `assets/synsets.txt`).
//!
//! Atomic: everything is written into a temporary sibling `.<name>.partial-<host>-<pid>` and
//! renamed to `--out` only once complete; on failure the temporary folder is removed. A killed
//! export can leave only that dot-folder, never a folder at `--out`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use dawnrun_records::{atomic, event::hostname, manifest};
use dawnrun_schedule::Schedule;

use crate::checkpoint;
use crate::eval::report::CheckpointResult;
use crate::model::{ExportGraph, ExportSpec, ModelConfig, SYNSETS_FILE};
use crate::run_dir::{self, RunDir, RunInfo};

#[derive(Args, Debug, Clone)]
pub struct ExportArgs {
    /// The trainer's run directory (holds run.json, schedule.yaml, checkpoints/).
    run_dir: PathBuf,
    /// Export the checkpoint of this step [default: the newest complete checkpoint].
    #[arg(long, conflicts_with = "best")]
    step: Option<u64>,
    /// Export the checkpoint with the best top-5 in the run's eval.jsonl (run eval-sweep first).
    #[arg(long)]
    best: bool,
    /// The SavedModel folder to create; must not exist or be empty.
    #[arg(long)]
    out: PathBuf,
    /// Folder holding the validation records' data dir (for the synset list); overrides the
    /// run's data root.
    #[arg(long)]
    data: Option<PathBuf>,
}

pub fn main(args: ExportArgs) -> Result<()> {
    let run_dir = RunDir::new(&args.run_dir);
    let info_path = run_dir.run_info();
    if !info_path.exists() {
        bail!(
            "{}: not a training run directory (no {})",
            args.run_dir.display(),
            info_path.display()
        );
    }
    check_out(&args.out)?;
    let info: RunInfo = run_dir::read_json(&info_path)?;
    let schedule = Schedule::load(run_dir.schedule_copy())?;
    let ev = &schedule.eval;
    let (step, prefix) = choose(&run_dir, &args)?;
    let data_root = args.data.clone().unwrap_or_else(|| info.data_root.clone());
    let val_dir = data_root.join(&ev.data_dir);
    let synsets = match manifest::read_in(&val_dir)
        .with_context(|| format!("{}: reading build-records' manifest", val_dir.display()))?
    {
        Some(m) => m.synsets().to_vec(),
        None => bail!(
            "{}: no build-records manifest, so no synset list for the export (give --data)",
            val_dir.display()
        ),
    };
    if synsets.len() != info.num_classes as usize {
        bail!(
            "{}: {} synsets, but the run's network has {} classes",
            val_dir.display(),
            synsets.len(),
            info.num_classes
        );
    }
    let model = ModelConfig::from_run(&schedule.run, info.num_classes);
    let spec = ExportSpec {
        image_px: ev.image_size.height as u32,
        crop: super::eval_sweep::eval_crop(ev),
    };
    let tmp = temporary_sibling(&args.out)?;
    // On disk before the rename: TensorFlow's own writer does not sync the variables it saves,
    // and a power cut must not leave a complete-looking --out with empty weights.
    let result =
        write_export(&model, &spec, &prefix, &synsets, &tmp).and_then(|()| sync_tree(&tmp));
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e.context(format!("exporting {}", prefix.display())));
    }
    // An empty --out folder is replaced; rename refuses a non-empty one.
    if args.out.is_dir() {
        std::fs::remove_dir(&args.out)
            .with_context(|| format!("{}: cannot replace the empty folder", args.out.display()))?;
    }
    std::fs::rename(&tmp, &args.out).with_context(|| {
        let _ = std::fs::remove_dir_all(&tmp);
        format!("renaming {} to {}", tmp.display(), args.out.display())
    })?;
    if let Some(parent) = args.out.parent() {
        if let Ok(d) = std::fs::File::open(if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        }) {
            let _ = d.sync_all();
        }
    }
    say!(
        "exported {} (step {step}, {}x{} px, {} classes) to {}",
        prefix.display(),
        spec.image_px,
        spec.image_px,
        info.num_classes,
        args.out.display()
    );
    Ok(())
}

/// `--out` must be absent or an empty folder.
fn check_out(out: &Path) -> Result<()> {
    match std::fs::read_dir(out) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("{}: cannot use as --out", out.display())),
        Ok(mut entries) => {
            if entries.next().is_some() {
                bail!(
                    "{}: --out exists and is not empty; give a new or empty folder (nothing was written)",
                    out.display()
                );
            }
            Ok(())
        }
    }
}

/// Flushes every file and folder under `dir` (and `dir`) to disk.
fn sync_tree(dir: &Path) -> Result<()> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("{}: cannot list", dir.display()))?;
    for entry in entries {
        let path = entry
            .with_context(|| format!("{}: cannot list", dir.display()))?
            .path();
        if path.is_dir() {
            sync_tree(&path)?;
        } else {
            std::fs::File::open(&path)
                .and_then(|f| f.sync_all())
                .with_context(|| format!("{}: cannot sync to disk", path.display()))?;
        }
    }
    Ok(atomic::sync_dir(dir)?)
}

/// `.<name>.partial-<host>-<pid>` beside `out`, created empty.
fn temporary_sibling(out: &Path) -> Result<PathBuf> {
    let name = out
        .file_name()
        .with_context(|| format!("{}: --out needs a folder name", out.display()))?;
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent)
        .with_context(|| format!("{}: cannot create", parent.display()))?;
    let stem = format!(".{}.partial-{}-", name.to_string_lossy(), hostname());
    remove_dead_partials(&parent, &stem);
    let tmp = parent.join(format!("{stem}{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir(&tmp).with_context(|| format!("{}: cannot create", tmp.display()))?;
    Ok(tmp)
}

/// Removes `<stem><pid>` folders in `dir` whose exporting process is gone (a killed export's
/// leftovers); one of a live export is left alone. The stem names this host: a pid means
/// nothing on another one, so other hosts' folders are theirs to remove.
fn remove_dead_partials(dir: &Path, stem: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix(stem).and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new("/proc").join(pid.to_string()).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// The checkpoint to export: `--step`, `--best` (eval.jsonl), or the newest complete one.
fn choose(run_dir: &RunDir, args: &ExportArgs) -> Result<(u64, PathBuf)> {
    let dir = run_dir.checkpoints();
    let all = checkpoint::list(&dir)?;
    let want = if args.best {
        let path = run_dir.eval_results();
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "{}: cannot read (run eval-sweep first for --best)",
                path.display()
            )
        })?;
        let mut best: Option<CheckpointResult> = None;
        for (i, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let r: CheckpointResult = serde_json::from_str(line)
                .with_context(|| format!("{}: line {}", path.display(), i + 1))?;
            // Ties go to the earlier checkpoint.
            if best.as_ref().is_none_or(|b| r.top5 > b.top5) {
                best = Some(r);
            }
        }
        let best = best.with_context(|| format!("{}: no results", path.display()))?;
        say!(
            "best top-5 in {}: step {} ({:.2}% top-5, {:.2}% top-1)",
            path.display(),
            best.step,
            best.top5,
            best.top1
        );
        Some(best.step)
    } else {
        args.step
    };
    match want {
        Some(step) => all.into_iter().find(|(s, _)| *s == step).with_context(|| {
            format!(
                "{}: no complete checkpoint for step {step} (have: {})",
                dir.display(),
                steps(&dir)
            )
        }),
        None => {
            // The newest checkpoint is what "the latest" means: one whose data file was lost
            // must be named, not passed over for an older one.
            let newest_complete = all.last().map(|(s, _)| *s);
            if let Some((step, prefix)) = checkpoint::missing_data(&dir)?
                .into_iter()
                .rfind(|(s, _)| newest_complete.is_none_or(|c| *s > c))
            {
                bail!(
                    "{}: the newest checkpoint, step {step}, has its index but not its data file \
                     {} (lost after it was saved); give --step for an older one (have: {})",
                    prefix.display(),
                    checkpoint::data_path(&prefix).display(),
                    steps(&dir)
                );
            }
            all.into_iter()
                .next_back()
                .with_context(|| format!("{}: no complete checkpoints", dir.display()))
        }
    }
}

fn steps(dir: &Path) -> String {
    match checkpoint::list(dir) {
        Ok(list) if !list.is_empty() => list
            .iter()
            .map(|(s, _)| s.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        _ => "none".to_string(),
    }
}

/// Builds the graph, restores `prefix`, and writes the SavedModel into the empty `dir`.
fn write_export(
    model: &ModelConfig,
    spec: &ExportSpec,
    prefix: &Path,
    synsets: &[String],
    dir: &Path,
) -> Result<()> {
    let mut graph = ExportGraph::build(model, spec).context("building the export graph")?;
    checkpoint::restore(&mut graph, prefix)?;
    let variables = dir.join("variables");
    std::fs::create_dir(&variables)
        .with_context(|| format!("{}: cannot create", variables.display()))?;
    let proto = graph.save(dir)?;
    let assets = dir.join("assets");
    std::fs::create_dir(&assets).with_context(|| format!("{}: cannot create", assets.display()))?;
    let mut list = synsets.join("\n");
    list.push('\n');
    run_dir::write_file(&assets.join(SYNSETS_FILE), list.as_bytes())?;
    // saved_model.pb last: a folder without it is not a SavedModel.
    run_dir::write_file(&dir.join("saved_model.pb"), &proto)?;
    Ok(())
}
