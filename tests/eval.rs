//! eval-sweep on the checkpoints of a real tiny run: every checkpoint evaluated exactly once at
//! any world size, the DAWNBench table, incremental reuse, identical numbers on re-evaluation,
//! damaged checkpoints (and one whose data file is lost) skipped and named, a shortened
//! validation shard refused, `--watch` beside a live trainer.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

const PHASE: &str = r#"{epoch: [0, 4], lr: [0.05, 0.01], lr_method: exp, batch_size: 16, image_size: 32, data_dir: "48", min_scale: 0.35}"#;
const EXTRA: &str = "  log_every_steps: 8\n  checkpoint_every_steps: 16\n";

/// A finished 64-step run with checkpoints at 16, 32, 48, 64 (made once per test binary).
fn trained() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| train_run("evalrun", EXTRA, PHASE))
}

/// A copy of the trained run without any evaluation results.
fn fresh_copy(tmp: &Path) -> PathBuf {
    unevaluated_copy(trained(), tmp)
}

fn rows(run: &Path) -> Vec<serde_json::Value> {
    json_rows(&run.join("eval.jsonl"))
}

/// `tests/py/rewrite_checkpoint.py`: variable `name` of the checkpoint at `prefix` rewritten
/// (`how`: `nan` or `bump`).
fn rewrite_checkpoint(prefix: &Path, name: &str, how: &str) {
    let mut c = command(&python());
    c.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/rewrite_checkpoint.py"))
        .arg(prefix)
        .args([name, how]);
    ok(c);
}

/// `eval-sweep RUN ARGS...`, which must fail with exit code 2; returns its stderr.
fn refused(run: &Path, args: &[&str]) -> String {
    let mut c = command(&bin("eval-sweep"));
    c.arg(run).args(args);
    let out = common::run(c);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    err
}

#[test]
fn every_checkpoint_is_evaluated_exactly_once_on_1_2_and_3_ranks() {
    let mut first: Option<Vec<serde_json::Value>> = None;
    for np in [1usize, 2, 3] {
        let tmp = tempdir();
        let run = fresh_copy(tmp.path());
        let mut c = mpirun(np, &bin("eval-sweep"));
        c.arg(&run);
        let out = ok(c);
        let stdout = text(&out.stdout);
        let stderr = text(&out.stderr);
        assert!(
            stdout.contains("4 checkpoint(s): 4 evaluated now, 0 from earlier sweeps, 0 failed"),
            "np {np}\n{stdout}\n{stderr}"
        );
        // Checkpoint i (by step) went to rank i % np.
        for (i, step) in [16, 32, 48, 64].iter().enumerate() {
            let line = format!(
                "rank {}: {}/checkpoints/ckpt-{step}:",
                i % np,
                run.display()
            );
            assert!(stderr.contains(&line), "np {np}: no `{line}` in\n{stderr}");
        }
        assert!(stdout.contains("64 validation images scored per checkpoint (no exclude list)"));
        let tsv = std::fs::read_to_string(run.join("eval.tsv")).unwrap();
        let lines: Vec<&str> = tsv.lines().collect();
        assert_eq!(lines[0], "epoch\thours\ttop1Accuracy\ttop5Accuracy");
        assert_eq!(lines.len(), 5);
        let epochs: Vec<f64> = lines[1..]
            .iter()
            .map(|l| l.split('\t').next().unwrap().parse().unwrap())
            .collect();
        assert_eq!(epochs, [1.0, 2.0, 3.0, 4.0]);
        assert!(std::fs::metadata(run.join("eval.png")).unwrap().len() > 1000);
        // The same checkpoint evaluated again (other ranks, other run) gives identical numbers.
        let now = rows(&run);
        let key = |r: &serde_json::Value| {
            (
                r["step"].clone(),
                r["top1"].clone(),
                r["top5"].clone(),
                r["loss"].clone(),
            )
        };
        match &first {
            None => first = Some(now),
            Some(f) => assert_eq!(
                f.iter().map(key).collect::<Vec<_>>(),
                now.iter().map(key).collect::<Vec<_>>(),
                "np {np}"
            ),
        }
    }
    let f = first.unwrap();
    // Far above chance (25%) after four epochs of 4 classes.
    assert!(f.last().unwrap()["top1"].as_f64().unwrap() > 40.0, "{f:?}");
}

#[test]
fn a_second_sweep_reuses_results_and_an_exclude_list_changes_the_count() {
    let tmp = tempdir();
    let run = fresh_copy(tmp.path());
    let mut c = command(&bin("eval-sweep"));
    c.arg(&run);
    ok(c);
    let mut c = command(&bin("eval-sweep"));
    c.arg(&run);
    let out = ok(c);
    assert!(
        text(&out.stdout).contains("0 evaluated now, 4 from earlier sweeps"),
        "{}",
        text(&out.stdout)
    );

    // Leave out two validation images by name: a new setting, so everything is evaluated again.
    let names = tmp.path().join("exclude.txt");
    let synset_dir = std::fs::read_dir(fixture().join("images/48/validation"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let files: Vec<String> = sorted_files(&synset_dir)
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    std::fs::write(&names, format!("# blacklist\n{}\n{}\n", files[0], files[1])).unwrap();
    let mut c = command(&bin("eval-sweep"));
    c.arg(&run)
        .arg("--exclude")
        .arg(&names)
        .args(["--target-top5", "99.9"]);
    let out = ok(c);
    let stdout = text(&out.stdout);
    assert!(stdout.contains("4 evaluated now"), "{stdout}");
    assert!(
        stdout.contains("62 validation images scored per checkpoint (2 name(s) excluded by"),
        "{stdout}"
    );
}

#[test]
fn an_undecodable_validation_image_is_a_miss_unless_excluded() {
    // The fixture's images with one validation JPEG broken inside (build-records keeps it).
    let tmp = tempdir();
    let images = tmp.path().join("images").join("48");
    copy_tree(&fixture().join("images").join("48"), &images);
    let synset_dir = std::fs::read_dir(images.join("validation"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let files = sorted_files(&synset_dir);
    let bytes = std::fs::read(&files[0]).unwrap();
    std::fs::write(&files[0], break_huffman_table(&bytes)).unwrap();
    let records = tmp.path().join("records");
    build_records(&images, &records.join("48"));
    let run = fresh_copy(tmp.path());
    let sweep = |exclude: Option<&Path>| {
        let mut c = command(&bin("eval-sweep"));
        c.arg(&run).arg("--data").arg(&records);
        if let Some(list) = exclude {
            c.arg("--exclude").arg(list);
        }
        let out = ok(c);
        (rows(&run), text(&out.stderr))
    };

    // Scored against all 64: the broken image is named and counts as a miss.
    let (missed, err) = sweep(None);
    assert!(
        err.contains("skipped an undecodable validation JPEG") && err.contains("record at byte"),
        "{err}"
    );
    for r in &missed {
        assert_eq!(
            (r["images"].as_u64(), r["skipped_images"].as_u64()),
            (Some(63), Some(1)),
            "{r}"
        );
    }

    // Excluded by name, it leaves the count instead: the same hits over 63.
    let names = tmp.path().join("exclude.txt");
    let name = files[0].file_name().unwrap().to_string_lossy().into_owned();
    std::fs::write(&names, format!("{name}\n")).unwrap();
    let (excluded, err) = sweep(Some(&names));
    assert!(
        !err.contains("skipped an undecodable validation JPEG"),
        "{err}"
    );
    assert_eq!(excluded.len(), missed.len());
    for (m, e) in missed.iter().zip(&excluded) {
        assert_eq!(
            (e["images"].as_u64(), e["skipped_images"].as_u64()),
            (Some(63), Some(0)),
            "{e}"
        );
        for key in ["top1", "top5"] {
            let hits_of_64 = m[key].as_f64().unwrap() * 64.0 / 100.0;
            let hits_of_63 = e[key].as_f64().unwrap() * 63.0 / 100.0;
            assert!((hits_of_64 - hits_of_63).abs() < 1e-6, "{key}: {m} vs {e}");
        }
    }
}

/// eval-sweep on `run`, where one checkpoint of four cannot be evaluated: the report of the
/// other three is written and the exit code says one failed. Returns its stdout.
fn sweep_with_one_failure(run: &Path) -> String {
    let mut c = command(&bin("eval-sweep"));
    c.arg(run);
    let out = run_(c);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(rows(run).len(), 3);
    assert!(
        err.contains("1 of 4 checkpoint(s) could not be evaluated"),
        "{err}"
    );
    text(&out.stdout)
}

#[test]
fn a_damaged_checkpoint_is_named_skipped_and_fails_the_sweep() {
    let tmp = tempdir();
    let run = fresh_copy(tmp.path());
    let data = run.join("checkpoints/ckpt-32.data-00000-of-00001");
    let len = std::fs::metadata(&data).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&data).unwrap();
    f.set_len(len / 2).unwrap();
    let stdout = sweep_with_one_failure(&run);
    assert!(
        stdout.contains("3 checkpoint(s): 3 evaluated now, 0 from earlier sweeps, 1 failed"),
        "{stdout}"
    );
    assert!(
        stdout.contains("failed: ") && stdout.contains("ckpt-32"),
        "{stdout}"
    );
}

#[test]
fn a_checkpoint_whose_data_file_is_lost_is_named_and_fails_the_sweep() {
    let tmp = tempdir();
    let run = fresh_copy(tmp.path());
    std::fs::remove_file(run.join("checkpoints/ckpt-48.data-00000-of-00001")).unwrap();
    let stdout = sweep_with_one_failure(&run);
    assert!(
        stdout.contains("ckpt-48: its index is there but its data file"),
        "{stdout}"
    );
}

#[test]
fn validation_records_of_another_class_count_are_refused() {
    let tmp = tempdir();
    let run = fresh_copy(tmp.path());
    let info_path = run.join("run.json");
    let mut info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&info_path).unwrap()).unwrap();
    info["num_classes"] = 7.into();
    std::fs::write(&info_path, info.to_string()).unwrap();
    let err = refused(&run, &[]);
    assert!(
        err.contains("have 4 classes but the run's network has 7"),
        "{err}"
    );
}

#[test]
fn a_validation_shard_cut_at_a_record_boundary_is_refused_naming_it() {
    // Cut after its first record, the shard passes every CRC: only the manifest's size shows
    // that the validation set shrank.
    let tmp = tempdir();
    let run = fresh_copy(tmp.path());
    let data = tmp.path().join("records");
    let (from, to) = (fixture().join("records").join("48"), data.join("48"));
    std::fs::create_dir_all(&to).unwrap();
    for e in std::fs::read_dir(&from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
    let shard = to.join("validation-00001-of-00002");
    let bytes = std::fs::read(&shard).unwrap();
    let first = 16 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    std::fs::write(&shard, &bytes[..first]).unwrap();
    let mut c = command(&bin("eval-sweep"));
    c.arg(&run).arg("--data").arg(&data);
    let out = run_(c);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!(
            "{}: {first} bytes, but build-records wrote",
            shard.display()
        )),
        "{err}"
    );
    assert!(!run.join("eval.jsonl").exists(), "{err}");
}

fn run_(c: std::process::Command) -> std::process::Output {
    common::run(c)
}

#[test]
fn no_checkpoints_is_a_clear_error() {
    let tmp = tempdir();
    let run = fresh_copy(tmp.path());
    for e in std::fs::read_dir(run.join("checkpoints")).unwrap() {
        std::fs::remove_file(e.unwrap().path()).unwrap();
    }
    let err = refused(&run, &[]);
    assert!(err.contains("no complete checkpoints to evaluate"), "{err}");
}

#[test]
fn watch_evaluates_every_checkpoint_of_a_live_run() {
    let tmp = tempdir();
    let sched = schedule(tmp.path(), "live", EXTRA, &[PHASE]);
    let run = tmp.path().join("live");
    let mut c = command(&bin("trainer"));
    c.arg(&sched).arg("--run-dir").arg(&run);
    c.stderr(std::process::Stdio::null());
    let mut trainer = c.spawn().unwrap();
    // The watcher may start before the trainer has written run.json.
    for _ in 0..600 {
        if run.join("run.json").exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let mut w = mpirun(2, &bin("eval-sweep"));
    w.arg(&run)
        .args(["--watch", "--poll-s", "0.5", "--idle-timeout-s", "240"]);
    let out = ok(w);
    assert!(trainer.wait().unwrap().success());
    let stdout = text(&out.stdout);
    let steps: Vec<u64> = rows(&run)
        .iter()
        .map(|r| r["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, [16, 32, 48, 64], "{stdout}\n{}", text(&out.stderr));
}

#[test]
fn a_frozen_rank_ends_the_sweep_named_by_the_rank_waiting_for_it() {
    // Rank 1 stops itself (SIGSTOP) as it takes ckpt-32; rank 0 evaluates 16 and 48, then
    // waits for rank 1, hears nothing from it for 3 s, and ends the job naming it.
    let tmp = tempdir();
    let run = fresh_copy(tmp.path());
    let mut c = mpirun(2, &bin("eval-sweep"));
    c.arg(&run)
        .args(["--stall-shutdown-s", "3"])
        .env("DAWNRUN_FREEZE_AT_CHECKPOINT", "32");
    let out = run_(c);
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert_ne!(out.status.code(), Some(124), "timed out: it hung\n{err}");
    assert!(
        err.lines()
            .any(|l| l.starts_with("rank 1: ") && l.contains("ckpt-32: sending SIGSTOP")),
        "{err}"
    );
    assert!(
        err.contains("rank 0: ranks [1] sent no sign of progress for 3 s"),
        "{err}"
    );
    assert!(
        !run.join("eval.tsv").exists(),
        "no report from a broken sweep"
    );
}

#[test]
fn watch_on_a_run_that_stopped_without_done_json_ends_failing_with_the_report() {
    let tmp = tempdir();
    let run = fresh_copy(tmp.path());
    std::fs::remove_file(run.join("done.json")).unwrap();
    let mut c = mpirun(2, &bin("eval-sweep"));
    c.arg(&run)
        .args(["--watch", "--poll-s", "0.5", "--idle-timeout-s", "2"]);
    let out = run_(c);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--watch: no new checkpoint for 2 s (--idle-timeout-s) and no done.json"),
        "{err}"
    );
    assert!(
        err.contains("the report covers the 4 checkpoint(s) seen"),
        "{err}"
    );
    assert_eq!(rows(&run).len(), 4);
}

#[test]
fn a_checkpoint_written_again_under_its_step_is_evaluated_again() {
    // A run restarted from scratch into the same folder writes ckpt-32 anew: the result cached
    // for the old files must not stand for the new ones.
    let tmp = tempdir();
    let run = fresh_copy(tmp.path());
    let mut c = command(&bin("eval-sweep"));
    c.arg(&run);
    ok(c);
    let before = rows(&run);
    rewrite_checkpoint(&run.join("checkpoints/ckpt-32"), "resnet/fc/bias", "bump");
    let mut c = command(&bin("eval-sweep"));
    c.arg(&run);
    let out = ok(c);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("4 checkpoint(s): 1 evaluated now, 3 from earlier sweeps, 0 failed"),
        "{stdout}"
    );
    // Its loss moved with its weights; the others' rows are the cached ones.
    let after = rows(&run);
    assert_ne!(after[1]["loss"], before[1]["loss"]);
    for i in [0, 2, 3] {
        assert_eq!(after[i], before[i]);
    }
}

#[test]
fn a_checkpoint_with_non_finite_weights_is_named_and_the_others_reported() {
    let tmp = tempdir();
    let run = fresh_copy(tmp.path());
    rewrite_checkpoint(&run.join("checkpoints/ckpt-48"), "resnet/fc/bias", "nan");
    let stdout = sweep_with_one_failure(&run);
    assert!(
        stdout.contains("ckpt-48: the validation loss is NaN: the weights are not finite"),
        "{stdout}"
    );
}

#[test]
fn numbers_out_of_range_are_refused_before_any_work() {
    let tmp = tempdir();
    let run = fresh_copy(tmp.path());
    for (flag, value) in [
        ("--idle-timeout-s", "-1"),
        ("--poll-s", "nan"),
        ("--stall-shutdown-s", "1e300"),
        ("--stall-shutdown-s", "0.5"),
        ("--batch-size", "0"),
    ] {
        let err = refused(&run, &[&format!("{flag}={value}")]);
        assert!(err.contains(flag) && !err.contains("panic"), "{err}");
    }
    assert!(!run.join("eval.tsv").exists());
}

#[test]
fn a_second_sweep_of_a_run_is_refused_while_one_writes_its_report() {
    let tmp = tempdir();
    let run = fresh_copy(tmp.path());
    // The first sweep stops itself as it takes ckpt-16, holding the run's eval.lock.
    let mut first = command(&bin("eval-sweep"));
    first
        .arg(&run)
        .env("DAWNRUN_FREEZE_AT_CHECKPOINT", "16")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut first = first.spawn().unwrap();
    let stat = format!("/proc/{}/stat", first.id());
    let start = std::time::Instant::now();
    // State `T`: it stopped itself, after taking the lock (taken before any evaluation).
    while !std::fs::read_to_string(&stat).is_ok_and(|s| s.contains(") T ")) {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(120),
            "never stopped"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let err = refused(&run, &[]);
    first.kill().unwrap();
    first.wait().unwrap();
    assert!(
        err.contains(&format!("is in use by an eval-sweep (PID {}", first.id())),
        "{err}"
    );
    // Its lock went with it: a sweep now runs to the end.
    let mut c = command(&bin("eval-sweep"));
    c.arg(&run);
    ok(c);
    assert_eq!(rows(&run).len(), 4);
}

/// The feeder `eval-sweep` evaluates through (`src/eval/feeder.rs`): every batch of the
/// validation pipeline in the pipeline's own order, less the excluded images, with the
/// pipeline's stats at the end; and an error of the graph's side ends it at once, returned as
/// it was, with the pipeline stopped (the call returns instead of hanging).
#[test]
fn the_validation_feeder_keeps_the_pipelines_order_and_stops_at_an_error() {
    use dawnrun::eval::feeder::feed_ahead;
    use dawnrun::model::FeedPool;
    use dawnrun_data::pipeline::{EvalConfig, EvalPipeline};
    use dawnrun_data::EvalCrop;
    use std::collections::HashSet;

    let dir = fixture().join("records").join("48");
    let files = dawnrun_records::shard_set::list_shards(&dir, "validation").unwrap();
    let config = || EvalConfig {
        files: files.clone(),
        batch_size: 5,
        image_px: 24,
        crop: EvalCrop::Central { fraction: 0.875 },
        decode_threads: 2,
        rect: false,
        max_image_pixels: dawnrun_data::DEFAULT_MAX_IMAGE_PIXELS,
        num_classes: CLASSES as u32,
    };
    let mut direct: Vec<(String, i32)> = Vec::new();
    for batch in EvalPipeline::start(config()).unwrap() {
        let batch = batch.unwrap();
        let names = batch
            .filenames
            .clone()
            .expect("validation batches name their images");
        direct.extend(names.into_iter().zip(batch.labels.iter().copied()));
    }
    assert_eq!(direct.len(), CLASSES * 16);

    // Three images out, from the first two batches: the rest keep their order.
    let exclude: HashSet<String> = [1, 7, 8].iter().map(|&i| direct[i].0.clone()).collect();
    let mut fed: Vec<i32> = Vec::new();
    let stats = feed_ahead(
        EvalPipeline::start(config()).unwrap(),
        FeedPool::default(),
        CLASSES as u32,
        Some(&exclude),
        |feed| {
            fed.extend_from_slice(feed.labels());
            Ok(())
        },
    )
    .unwrap();
    let expected: Vec<i32> = direct
        .iter()
        .filter(|(name, _)| !exclude.contains(name))
        .map(|&(_, label)| label)
        .collect();
    assert_eq!(fed, expected);
    assert_eq!(stats.skipped.len(), 0);

    let mut batches = 0;
    let err = feed_ahead(
        EvalPipeline::start(config()).unwrap(),
        FeedPool::default(),
        CLASSES as u32,
        None,
        |_| {
            batches += 1;
            anyhow::ensure!(batches < 3, "the graph failed on batch {batches}");
            Ok(())
        },
    )
    .unwrap_err();
    assert_eq!(err.to_string(), "the graph failed on batch 3");
    assert_eq!(batches, 3, "no batch after the error");
}
