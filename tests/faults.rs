//! What goes wrong in a long multi-rank run, through the real binaries: a frozen rank (before
//! and inside the all-reduce), a rank killed with SIGKILL, a second trainer on the same run directory, a full disk, a missing
//! later-phase data folder, a shard cut short at a record boundary, records where no JPEG
//! decodes. Each must end in a named error or a clean resume, never in a hang or a silent
//! success.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const P1: &str = r#"{epoch: [0, 2], lr: [0.05, 0.1], lr_method: linear, batch_size: 8, image_size: 32, data_dir: "48"}"#;

fn faults_schedule(dir: &Path, name: &str, extra: &str, phases: &[&str]) -> PathBuf {
    let extra = format!("  log_every_steps: 2\n  checkpoint_every_steps: 4\n{extra}");
    schedule(dir, name, &extra, phases)
}

/// Runs `cmd`; a command still running after `limit` is killed and the test fails: a hang is
/// the very thing these tests exist to catch.
fn run_bounded(mut cmd: Command, limit: Duration) -> Output {
    let desc = format!("{cmd:?}");
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let start = Instant::now();
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "{desc} still ran after {limit:?}: it hung\nstderr:\n{}",
                text(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The file names in `run_dir/checkpoints`, sorted (none if the folder is missing).
fn checkpoint_files(run_dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(run_dir.join("checkpoints"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn complete_checkpoints(run_dir: &Path) -> Vec<String> {
    checkpoint_files(run_dir)
        .into_iter()
        .filter(|n| n.starts_with("ckpt-") && n.ends_with(".index"))
        .collect()
}

/// A 2-rank job of the faults schedule `name` (`extra`: more schedule keys) whose rank `rank`
/// injects the test hook `hook` (`DAWNRUN_..._AT_STEP`) at `step`, bounded to 4 minutes.
struct FaultJob {
    sched: PathBuf,
    run_dir: PathBuf,
    out: Output,
    err: String,
}

fn fault_job(tmp: &Path, name: &str, extra: &str, rank: usize, hook: &str, step: u64) -> FaultJob {
    let sched = faults_schedule(tmp, name, extra, &[P1]);
    let run_dir = tmp.join("run");
    let mut c = trainer_mpirun(2, &sched, &run_dir);
    c.env("DAWNRUN_FAIL_RANK", rank.to_string())
        .env(hook, step.to_string());
    let out = run_bounded(c, Duration::from_secs(240));
    let err = text(&out.stderr);
    FaultJob {
        sched,
        run_dir,
        out,
        err,
    }
}

#[test]
fn a_frozen_rank_ends_the_job_naming_it_the_step_and_the_wait() {
    let tmp = tempdir();
    let stall = "distributed:\n  stall_warning_s: 1\n  stall_shutdown_s: 4\n";
    // SIGSTOP: rank 1 never errors, never exits; only the stall shutdown can end the job.
    let job = fault_job(tmp.path(), "frozen", stall, 1, "DAWNRUN_FREEZE_AT_STEP", 5);
    let err = &job.err;
    assert!(!job.out.status.success(), "{err}");
    assert!(err.contains("freezing") || err.contains("SIGSTOP"), "{err}");
    assert!(
        err.contains("stall shutdown: ranks [1] have not reached step 5 after 4 s"),
        "{err}"
    );
    // The checkpoint due at step 4 landed before the freeze.
    assert_eq!(complete_checkpoints(&job.run_dir), ["ckpt-4.index"]);
}

#[test]
fn a_rank_frozen_inside_the_all_reduce_is_named_by_the_rank_waiting_for_it() {
    // Rank 1 stops after telling rank 0 it reached step 5, so rank 0's stall check passes and
    // rank 0 waits in the host's all-reduce barrier: its watchdog (after 4 s + 2 s of grace)
    // must end the job and name rank 1 from the barrier's arrival counts.
    let tmp = tempdir();
    let stall = "distributed:\n  stall_warning_s: 1\n  stall_shutdown_s: 4\n";
    let hook = "DAWNRUN_FREEZE_IN_ALLREDUCE_AT_STEP";
    let job = fault_job(tmp.path(), "frozen-in", stall, 1, hook, 5);
    let err = &job.err;
    assert!(!job.out.status.success(), "{err}");
    assert!(err.contains("rank 1: step 5: sending SIGSTOP"), "{err}");
    assert!(!err.contains("have not reached step 5"), "{err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("rank 0: stall shutdown: no progress for "))
        .unwrap_or_else(|| panic!("rank 0's watchdog said nothing\n{err}"));
    assert!(
        line.contains(" s at step 5 (this rank waits in `allreduce`)"),
        "{err}"
    );
    assert!(
        line.contains("on this host, ranks [1] never reached the all-reduce's barrier"),
        "{err}"
    );
    assert_eq!(complete_checkpoints(&job.run_dir), ["ckpt-4.index"]);
}

#[test]
fn a_rank_killed_with_sigkill_ends_the_job_and_the_run_resumes_to_the_end() {
    let tmp = tempdir();
    let job = fault_job(tmp.path(), "killed", "", 1, "DAWNRUN_KILL_AT_STEP", 10);
    let (sched, run_dir) = (&job.sched, &job.run_dir);
    assert!(!job.out.status.success(), "{}", job.err);
    assert!(!run_dir.join("done.json").exists());
    assert_eq!(
        complete_checkpoints(run_dir),
        ["ckpt-4.index", "ckpt-8.index"]
    );

    let mut c = trainer_mpirun(2, sched, run_dir);
    c.arg("--resume");
    let out = run_bounded(c, Duration::from_secs(240));
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("resuming from") && err.contains("ckpt-8"),
        "{err}"
    );
    // 256 images, batch 8 x 2 ranks: 16 steps per epoch, 32 in all.
    assert!(run_dir.join("done.json").exists());
    assert!(complete_checkpoints(run_dir).contains(&"ckpt-32.index".to_string()));
}

#[test]
fn a_second_trainer_on_a_run_directory_is_refused_naming_the_first() {
    let tmp = tempdir();
    let sched = faults_schedule(tmp.path(), "twice", "", &[P1]);
    let run_dir = tmp.path().join("run");
    // The first trainer freezes itself at step 6, holding the directory.
    let mut first = command(&bin("trainer"));
    first
        .arg(&sched)
        .arg("--run-dir")
        .arg(&run_dir)
        .env("DAWNRUN_FREEZE_AT_STEP", "6")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut first = first.spawn().expect("spawn");
    let start = Instant::now();
    while !complete_checkpoints(&run_dir).contains(&"ckpt-4.index".to_string()) {
        assert!(start.elapsed() < Duration::from_secs(120), "no checkpoint");
        std::thread::sleep(Duration::from_millis(100));
    }
    for resume in [false, true] {
        let mut c = trainer(&sched, &run_dir);
        if resume {
            c.arg("--resume");
        }
        let out = run_bounded(c, Duration::from_secs(120));
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains("is in use by a trainer"), "{err}");
        assert!(err.contains(&format!("PID {}", first.id())), "{err}");
    }
    let metrics_before = std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap();
    // kill -9 releases the lock with the process: a resume then runs to the end.
    first.kill().unwrap();
    first.wait().unwrap();
    let mut c = trainer(&sched, &run_dir);
    c.arg("--resume");
    let out = run_bounded(c, Duration::from_secs(240));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let metrics_after = std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap();
    assert!(metrics_after.starts_with(&metrics_before));
    let steps: Vec<u64> = metrics(&run_dir)
        .iter()
        .map(|r| r["step"].as_u64().unwrap())
        .collect();
    // Steps 2 and 4 from the first trainer, then 6.. from the resume: no step logged twice.
    assert!(steps.windows(2).all(|w| w[0] < w[1]), "{steps:?}");
    // 256 images at batch 8 on one rank: 32 steps per epoch, 64 in all.
    assert_eq!(steps.last(), Some(&64));
}

#[test]
fn a_full_disk_says_the_checkpoint_was_not_written_and_leaves_no_partial_files() {
    let tmp = tempdir();
    let sched = faults_schedule(tmp.path(), "full", "", &[P1]);
    let mount = tmp.path().join("small");
    std::fs::create_dir_all(&mount).unwrap();
    // 8 MiB holds the logs but not a ResNet-18 checkpoint (about 90 MB with momentum).
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"])
        .arg(&mount)
        .status()
        .expect("mount");
    assert!(
        status.success(),
        "mounting a tmpfs needs root (CI and this box run as root)"
    );
    let run_dir = mount.join("run");
    let c = trainer(&sched, &run_dir);
    let out = run_bounded(c, Duration::from_secs(240));
    let err = text(&out.stderr);
    let leftovers = checkpoint_files(&run_dir);
    let _ = Command::new("umount").arg(&mount).status();
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("checkpoint ckpt-4 was not written"), "{err}");
    assert!(err.contains("No space left on device"), "{err}");
    assert!(!err.contains("report_tensor_allocations_upon_oom"), "{err}");
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_missing_later_phase_folder_is_refused_before_step_0() {
    let tmp = tempdir();
    let later = r#"{epoch: [2, 3], lr: [0.1, 0.01], lr_method: exp, batch_size: 8, image_size: 32, data_dir: "absent"}"#;
    let sched = faults_schedule(tmp.path(), "later", "", &[P1, later]);
    let run_dir = tmp.path().join("run");
    let c = trainer_mpirun(2, &sched, &run_dir);
    let out = run_bounded(c, Duration::from_secs(240));
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("absent"), "{err}");
    assert!(!err.contains("step 0:"), "{err}");
    assert!(complete_checkpoints(&run_dir).is_empty());
    assert!(!run_dir.join("metrics.jsonl").exists());
}

#[test]
fn a_shard_cut_at_a_record_boundary_is_refused_naming_it() {
    let tmp = tempdir();
    let records = tmp.path().join("records");
    for size in ["48", "64"] {
        let dst = records.join(size);
        std::fs::create_dir_all(&dst).unwrap();
        for e in std::fs::read_dir(fixture().join("records").join(size)).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
        }
    }
    // Cut train shard 2 after its first record: every CRC still checks out.
    let shard = records.join("48").join("train-00002-of-00004");
    let bytes = std::fs::read(&shard).unwrap();
    let first_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    std::fs::write(&shard, &bytes[..8 + 4 + first_len + 4]).unwrap();
    let _ = std::fs::remove_file(shard.with_extension("idx"));
    let sched = faults_schedule(tmp.path(), "cut", "", &[P1]);
    let run_dir = tmp.path().join("run");
    let mut c = trainer(&sched, &run_dir);
    c.arg("--data").arg(&records);
    let out = run_bounded(c, Duration::from_secs(240));
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("train-00002-of-00004"), "{err}");
    assert!(err.contains("cut short"), "{err}");
    assert!(complete_checkpoints(&run_dir).is_empty());
}

/// `trainer SCHEDULE --run-dir RUN_DIR` in one process; add flags and env to taste.
fn trainer(schedule: &Path, run_dir: &Path) -> Command {
    let mut c = command(&bin("trainer"));
    c.arg(schedule).arg("--run-dir").arg(run_dir);
    c
}

#[test]
fn damaged_and_panicking_jpegs_are_skipped_named_and_counted_over_all_ranks() {
    let tmp = tempdir();
    let images = tmp.path().join("images").join("48");
    copy_tree(&fixture().join("images").join("48"), &images);
    let class_dir = images.join("train").join("n01000000");
    let files = sorted_files(&class_dir);
    // One JPEG with a broken Huffman table (TensorFlow's decode_jpeg refuses it) ...
    let bytes = std::fs::read(&files[0]).unwrap();
    std::fs::write(&files[0], break_huffman_table(&bytes)).unwrap();
    // ... and one whose comment segment trips the injected decoder panic.
    let bytes = std::fs::read(&files[1]).unwrap();
    let marker = b"dawnrun-panic";
    let mut marked = bytes[..2].to_vec();
    marked.extend_from_slice(&[0xFF, 0xFE, 0, (marker.len() + 2) as u8]);
    marked.extend_from_slice(marker);
    marked.extend_from_slice(&bytes[2..]);
    std::fs::write(&files[1], marked).unwrap();
    let records = tmp.path().join("records");
    build_records(&images, &records.join("48"));

    let sched = faults_schedule(tmp.path(), "bad-jpegs", "", &[P1]);
    let run_dir = tmp.path().join("run");
    let mut c = trainer_mpirun(2, &sched, &run_dir);
    c.arg("--data")
        .arg(&records)
        .env("DAWNRUN_DECODE_PANIC_MARKER", "dawnrun-panic");
    let out = run_bounded(c, Duration::from_secs(240));
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    let named: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("skipped an undecodable JPEG") && l.contains("train-0000"))
        .collect();
    assert!(
        named.iter().any(|l| l.contains("injected decoder panic")),
        "{err}"
    );
    assert!(
        named.iter().any(|l| !l.contains("injected decoder panic")),
        "{err}"
    );
    assert!(named.iter().all(|l| l.contains("record at byte")), "{err}");
    assert!(
        !err.contains("panic:"),
        "a caught decoder panic must not reach the abort hook\n{err}"
    );
    // Two epochs: each bad image is met once per epoch, by whichever rank reads its shard.
    let done: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("done.json")).unwrap()).unwrap();
    assert_eq!(
        done["skipped_images"].as_u64(),
        Some(named.len() as u64),
        "{err}"
    );
    // 256 images, 2 ranks of batch 8: every record is read each epoch, so each bad image is
    // met once an epoch (the seeded record order puts neither where a spare, read from the
    // start of the share again, would meet it twice): 4. A count that took in batches decoded
    // ahead of the last step would be higher.
    assert_eq!(named.len(), 4, "{err}");
    assert_eq!(done["planned_steps"], done["final_step"], "{done}");
    let last = metrics(&run_dir).pop().unwrap();
    assert_eq!(last["skipped_images"], done["skipped_images"]);
}

#[test]
fn records_where_no_jpeg_decodes_end_the_job_with_a_named_error() {
    // Every training JPEG with a broken Huffman table: build-records keeps them (it reads only
    // the frame header and the end marker), the decoder refuses each. Skipping alone would read
    // spares without end.
    let tmp = tempdir();
    let images = tmp.path().join("images").join("48");
    copy_tree(&fixture().join("images").join("48"), &images);
    for class in std::fs::read_dir(images.join("train")).unwrap() {
        for file in std::fs::read_dir(class.unwrap().path()).unwrap() {
            let path = file.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            std::fs::write(&path, break_huffman_table(&bytes)).unwrap();
        }
    }
    let records = tmp.path().join("records");
    build_records(&images, &records.join("48"));

    let sched = faults_schedule(tmp.path(), "no-jpeg-decodes", "", &[P1]);
    let run_dir = tmp.path().join("run");
    let mut c = trainer_mpirun(2, &sched, &run_dir);
    c.arg("--data").arg(&records);
    let out = run_bounded(c, Duration::from_secs(240));
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("error:"), "{err}");
    assert!(
        err.contains("undecodable JPEGs skipped in this rank's share"),
        "{err}"
    );
    assert!(
        err.contains("train-0000") && err.contains("record at byte"),
        "{err}"
    );
    assert!(err.contains("rebuild them with build-records"), "{err}");
    assert!(!run_dir.join("done.json").exists(), "{err}");
}

/// `python tests/py/read_checkpoint.py PREFIX` as JSON.
fn read_checkpoint(prefix: &Path) -> serde_json::Value {
    let mut c = command(&python());
    c.arg(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/py/read_checkpoint.py"
    ))
    .arg(prefix);
    serde_json::from_slice(&ok(c).stdout).unwrap()
}

#[test]
fn a_resume_keeps_the_loss_scale_cleans_up_and_refuses_other_data() {
    let tmp = tempdir();
    let sched = faults_schedule(tmp.path(), "scale", "  loss_scale: dynamic\n", &[P1]);
    let run_dir = tmp.path().join("run");
    let mut c = trainer(&sched, &run_dir);
    c.args(["--max-steps", "8"]);
    ok(c);
    let at8 = read_checkpoint(&run_dir.join("checkpoints/ckpt-8"));
    assert_eq!(at8["loss_scale"], 32768.0);
    assert_eq!(at8["loss_scale_good_steps"], 8);

    // What a crash during a save leaves behind.
    let stale = run_dir.join("checkpoints/.ckpt-12.tmp4242.data-00000-of-00001");
    std::fs::write(&stale, vec![0u8; 4096]).unwrap();

    // Records of another size: the plan's steps would not match the checkpoints.
    let mut c = trainer(&sched, &run_dir);
    c.arg("--resume").args(["--train-images", "200"]);
    let out = run(c);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("was made with 256 training images"), "{err}");

    let mut c = trainer(&sched, &run_dir);
    c.arg("--resume").args(["--max-steps", "16"]);
    let out = ok(c);
    let err = text(&out.stderr);
    assert!(err.contains("removed 1 temporary file(s)"), "{err}");
    assert!(!stale.exists());
    // The run of good steps went on from 8 instead of restarting at 0.
    let at16 = read_checkpoint(&run_dir.join("checkpoints/ckpt-16"));
    assert_eq!(at16["loss_scale_good_steps"], 16);

    // The newest checkpoint's data file lost (its index is written last, so only damage does
    // this): named, not passed over for ckpt-16.
    let ckpts = run_dir.join("checkpoints");
    std::fs::copy(ckpts.join("ckpt-16.index"), ckpts.join("ckpt-20.index")).unwrap();
    let mut c = trainer(&sched, &run_dir);
    c.arg("--resume").args(["--max-steps", "24"]);
    let out = run(c);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("(step 20) has its index but not its data file"),
        "{err}"
    );
    assert!(
        err.contains("to resume from") && err.contains("ckpt-16"),
        "{err}"
    );
    assert!(!ckpts.join("ckpt-24.index").exists(), "{err}");
    // Refused before anything changed: the finished part's done.json is still there.
    assert!(run_dir.join("done.json").exists(), "{err}");

    // A fresh start beside nothing but that lost checkpoint is refused too: it would later
    // resume into it.
    let other = tmp.path().join("other");
    std::fs::create_dir_all(other.join("checkpoints")).unwrap();
    std::fs::copy(
        ckpts.join("ckpt-20.index"),
        other.join("checkpoints/ckpt-20.index"),
    )
    .unwrap();
    let c = trainer(&sched, &other);
    let out = run(c);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("whose data file is lost (step 20"), "{err}");

    // A resume that goes on past the earlier stop takes back its done.json, so
    // `eval-sweep --watch` does not stop beside it; failing later leaves none.
    std::fs::remove_file(ckpts.join("ckpt-20.index")).unwrap();
    let mut c = trainer(&sched, &run_dir);
    c.arg("--resume").env("DAWNRUN_FAIL_AT_STEP", "18");
    let out = run(c);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("failing on purpose"), "{err}");
    assert!(!run_dir.join("done.json").exists(), "{err}");
}

#[test]
fn a_label_beyond_the_networks_classes_names_its_record() {
    let tmp = tempdir();
    let sched = faults_schedule(tmp.path(), "labels", "", &[P1]);
    let mut c = command(&bin("trainer"));
    c.arg(&sched)
        .arg("--run-dir")
        .arg(tmp.path().join("run"))
        .args(["--num-classes", "3"]);
    let out = run_bounded(c, Duration::from_secs(240));
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("label 4 (as stored, 1-based)"), "{err}");
    assert!(err.contains("train-0000") && err.contains("byte "), "{err}");
}

#[test]
fn a_diverging_run_stops_at_once_and_saves_nothing_after_the_divergence() {
    // lr 1e30 with dynamic loss scaling: the first update sends the weights far out and the
    // next forward pass gives a NaN loss. Halving the loss scale cannot mend a forward pass, so
    // the run must stop there, not skip 31 steps and finish "done" with NaN weights.
    let tmp = tempdir();
    let p = r#"{epoch: [0, 2], lr: [1.0e30, 1.0e30], lr_method: linear, batch_size: 8, image_size: 32, data_dir: "48"}"#;
    let extra = "  loss_scale: dynamic\n  checkpoint_every_steps: 1\n";
    let sched = schedule(tmp.path(), "diverge", extra, &[p]);
    let run_dir = tmp.path().join("run");
    let mut c = trainer_mpirun(2, &sched, &run_dir);
    c.args(["--max-steps", "12"]);
    let out = run_bounded(c, Duration::from_secs(240));
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(!err.contains("update skipped"), "{err}");
    assert!(!run_dir.join("done.json").exists(), "{err}");
    let named = err
        .find(": training diverged: the loss is")
        .unwrap_or_else(|| panic!("no divergence named\n{err}"));
    let at: u64 = err[..named]
        .rsplit("step ")
        .next()
        .unwrap()
        .parse()
        .unwrap();
    // A checkpoint every step: those before the divergence exist (their weights huge but
    // finite) and hold finite values only; none at or after it.
    let written = complete_checkpoints(&run_dir);
    assert!(!written.is_empty() && at > 0, "{written:?}\n{err}");
    for name in &written {
        let step: u64 = name["ckpt-".len()..name.len() - ".index".len()]
            .parse()
            .unwrap();
        assert!(
            step <= at,
            "{name} after the divergence at step {at}\n{err}"
        );
        let prefix = run_dir
            .join("checkpoints")
            .join(name.trim_end_matches(".index"));
        assert_eq!(
            read_checkpoint(&prefix)["all_finite"],
            true,
            "{name}\n{err}"
        );
    }
}

#[test]
fn a_checkpoint_whose_state_is_not_finite_is_not_written() {
    // A NaN in rank 0's momentum (an update that overflowed) just before the save after step
    // 8: the loss before it was finite, so only the check of the state can catch it; ckpt-4,
    // saved before, stays.
    let tmp = tempdir();
    let job = fault_job(
        tmp.path(),
        "nan-state",
        "",
        0,
        "DAWNRUN_NAN_STATE_AT_STEP",
        8,
    );
    let err = &job.err;
    assert!(!job.out.status.success(), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        err.contains("step 8: training diverged: the state after this step"),
        "{err}"
    );
    assert!(err.contains("Checkpoint ckpt-8 is not written"), "{err}");
    let left = checkpoint_files(&job.run_dir);
    assert!(left.iter().all(|n| n.starts_with("ckpt-4.")), "{left:?}");
    assert_eq!(complete_checkpoints(&job.run_dir), ["ckpt-4.index"]);
}
