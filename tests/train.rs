//! The trainer as a user runs it, one process: a real run on synthetic records whose loss falls,
//! resume after a failure, the plan command, and bad schedules refused before any work.

mod common;
use common::*;

const P32: &str = r#"{epoch: [0, 6], lr: [0.05, 0.2], lr_method: linear, batch_size: 16, image_size: 32, data_dir: "48", min_scale: 0.35}"#;
const P48: &str = r#"{epoch: [6, 9], lr: [0.1, 0.01], lr_method: exp, batch_size: 8, image_size: 48, data_dir: "64", min_scale: 0.35}"#;

#[test]
fn depth18_loss_falls_and_train_accuracy_rises_across_two_phases() {
    let tmp = tempdir();
    let sched = schedule(
        tmp.path(),
        "learn",
        "  log_every_steps: 8\n  checkpoint_every_steps: 1000\n",
        &[P32, P48],
    );
    let run_dir = tmp.path().join("run");
    let mut c = command(&bin("trainer"));
    c.arg(&sched).arg("--run-dir").arg(&run_dir);
    let out = ok(c);
    let log = text(&out.stderr);
    // 256 images: 16 steps per epoch at batch 16, 32 at batch 8 -> 96 + 96 steps.
    assert!(
        log.contains("phase 1: epochs 6-9, steps 96..192, 48 px, batch 8/rank"),
        "{log}"
    );
    let rows = metrics(&run_dir);
    assert_eq!(rows.last().unwrap()["step"], 192);
    let loss = |r: &serde_json::Value| r["loss"].as_f64().unwrap();
    let first: f64 = rows[..3].iter().map(loss).sum::<f64>() / 3.0;
    let last: f64 = rows[rows.len() - 4..].iter().map(loss).sum::<f64>() / 4.0;
    assert!(last < 0.6 * first, "loss {first:.3} -> {last:.3}\n{log}");
    let top1: f64 = rows[rows.len() - 4..]
        .iter()
        .map(|r| r["top1"].as_f64().unwrap())
        .sum::<f64>()
        / 4.0;
    assert!(top1 > 0.6, "train top-1 {top1:.3} (chance is 0.25)\n{log}");
    // Phase sizes and batches as planned.
    assert!(rows
        .iter()
        .any(|r| r["image_px"] == 32 && r["batch_per_rank"] == 16));
    assert!(rows
        .iter()
        .any(|r| r["image_px"] == 48 && r["batch_per_rank"] == 8));

    // The final checkpoint is there and TensorBoard's reader sees our scalars.
    assert!(run_dir.join("checkpoints/ckpt-192.index").exists());
    assert!(run_dir.join("done.json").exists());
    let script = r#"
import glob, json, sys
import tensorflow as tf
tags = {}
for path in glob.glob(sys.argv[1] + "/events.out.tfevents.*"):
    for e in tf.compat.v1.train.summary_iterator(path):
        for v in e.summary.value:
            tags.setdefault(v.tag, []).append((e.step, v.simple_value))
print(json.dumps({k: v[-1] for k, v in tags.items()}))
"#;
    let mut c = command(&python());
    c.arg("-c").arg(script).arg(&run_dir);
    let out = ok(c);
    let last: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(last["loss"][0], 192);
    assert_eq!(last["image_size"][1], 48.0);
    for tag in [
        "total_loss",
        "learning_rate",
        "images_per_sec",
        "train_top5",
    ] {
        assert!(last.get(tag).is_some(), "no {tag} in the events: {last}");
    }
}

#[test]
fn a_failed_run_resumes_at_the_same_step_lr_and_data_as_an_uninterrupted_one() {
    let tmp = tempdir();
    let phases = [
        r#"{epoch: [0, 2], lr: [0.05, 0.1], lr_method: linear, batch_size: 16, image_size: 32, data_dir: "48"}"#,
        r#"{epoch: [2, 3], lr: [0.1, 0.01], lr_method: exp, batch_size: 16, image_size: 32, data_dir: "64"}"#,
    ];
    let extra = "  log_every_steps: 1\n  checkpoint_every_steps: 10\n";
    let sched = schedule(tmp.path(), "resume", extra, &phases);
    let whole = tmp.path().join("whole");
    let mut c = command(&bin("trainer"));
    c.arg(&sched).arg("--run-dir").arg(&whole);
    ok(c);

    // Interrupted at step 27: the last checkpoint is ckpt-20.
    let parts = tmp.path().join("parts");
    let mut c = command(&bin("trainer"));
    c.arg(&sched)
        .arg("--run-dir")
        .arg(&parts)
        .env("DAWNRUN_FAIL_AT_STEP", "27");
    let out = run(c);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("step 27: failing on purpose"), "{err}");
    assert!(!parts.join("done.json").exists());

    // Without --resume the run directory is not overwritten.
    let mut c = command(&bin("trainer"));
    c.arg(&sched).arg("--run-dir").arg(&parts);
    let out = run(c);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("pass --resume"),
        "{}",
        text(&out.stderr)
    );

    // A process killed while writing leaves half a line; the resume must not append to it.
    let log_path = parts.join("metrics.jsonl");
    let before = std::fs::read_to_string(&log_path).unwrap();
    assert_eq!(before.lines().count(), 27, "{before}");
    std::fs::write(&log_path, format!("{before}{{\"step\":28,\"epo")).unwrap();

    let mut c = command(&bin("trainer"));
    c.arg(&sched).arg("--run-dir").arg(&parts).arg("--resume");
    let out = ok(c);
    let err = text(&out.stderr);
    assert!(err.contains("resuming from"), "{err}");
    // Steps 21-27 were logged after ckpt-20: the resume logs them again, once.
    assert!(
        err.contains("metrics.jsonl: cut 7 record(s) past epoch")
            && err.contains("and an unfinished last line"),
        "{err}"
    );

    let a = metrics(&whole);
    let b = metrics(&parts);
    let steps: Vec<u64> = b.iter().map(|r| r["step"].as_u64().unwrap()).collect();
    assert_eq!(steps, (1..=48).collect::<Vec<u64>>());
    // The first 20 rows are the interrupted run's, as they were.
    let kept: String = before.lines().take(20).map(|l| format!("{l}\n")).collect();
    assert!(std::fs::read_to_string(&log_path)
        .unwrap()
        .starts_with(&kept));
    // TensorBoard drops the first run's points past step 20 too (the resume's START event).
    let script = r#"
import json, sys
from tensorboard.backend.event_processing import event_accumulator as ea
acc = ea.EventAccumulator(sys.argv[1], size_guidance={ea.SCALARS: 0})
acc.Reload()
print(json.dumps([e.step for e in acc.Scalars("loss")]))
"#;
    let mut c = command(&python());
    c.arg("-c").arg(script).arg(&parts);
    let seen: Vec<u64> = serde_json::from_slice(&ok(c).stdout).unwrap();
    assert_eq!(seen, (1..=48).collect::<Vec<u64>>());

    // The resumed rows match the uninterrupted run step for step.
    let resumed: Vec<&serde_json::Value> = b.iter().skip(20).collect();
    assert_eq!(resumed[0]["step"], 21);
    for r in resumed {
        let step = r["step"].as_u64().unwrap();
        let w = &a[step as usize - 1];
        assert_eq!(w["step"], step);
        assert_eq!(w["lr"], r["lr"], "lr at step {step}");
        assert_eq!(w["epoch"], r["epoch"], "epoch at step {step}");
        assert_eq!(w["image_px"], r["image_px"]);
        // Same weights and the same batch give the same loss (up to float reassociation).
        let (lw, lr) = (w["loss"].as_f64().unwrap(), r["loss"].as_f64().unwrap());
        assert!(
            (lw - lr).abs() <= 1e-3 * lw.abs().max(1.0),
            "loss at step {step}: {lw} vs {lr}"
        );
    }
}

#[test]
fn plan_prints_the_106min_phases_as_json() {
    let mut c = command(&bin("trainer"));
    c.args([
        "plan",
        "schedules/106min.yaml",
        "--np",
        "8",
        "--train-images",
        "1281167",
    ])
    .args(["--at", "0,15000", "--json"])
    .current_dir(env!("CARGO_MANIFEST_DIR"));
    let out = ok(c);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let phases = v["phases"].as_array().unwrap();
    assert_eq!(phases.len(), 5);
    let firsts: Vec<u64> = phases
        .iter()
        .map(|p| p["first_step"].as_u64().unwrap())
        .collect();
    assert_eq!(firsts, [0, 1296, 4536, 11411, 14679]);
    assert_eq!(phases[4]["image_size"], 288);
    let at = &v["at"][1];
    for key in ["step", "epoch", "lr", "batch_size", "image_size"] {
        assert!(at.get(key).is_some(), "no {key} in {at}");
    }
    assert_eq!(at["batch_size"], 128);
    let epoch = at["epoch"].as_f64().unwrap();
    assert!(
        (36.2..36.3).contains(&epoch),
        "epoch at step 15000: {epoch}"
    );
}

#[test]
fn a_bad_schedule_is_refused_with_its_line_before_any_work() {
    let tmp = tempdir();
    let path = tmp.path().join("bad.yaml");
    let run_dir = tmp.path().join("run");
    // The trainer's stderr for a schedule of `yaml`, which it must refuse with exit 2.
    let refused = |yaml: &str| {
        std::fs::write(&path, yaml).unwrap();
        let mut c = command(&bin("trainer"));
        c.arg(&path).arg("--run-dir").arg(&run_dir);
        let out = run(c);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(!err.contains("panicked"), "{err}");
        err
    };
    let phase = "{epoch: [0, 1], lr: [0.1, 0.2], lr_method: linear, batch_size: 8, image_size: 32, data_dir: \"48\"}";

    let err = refused(&format!(
        "run:\n  depth: 18\n  momentun: 0.9\nphases:\n  - {phase}\n"
    ));
    assert!(err.contains("bad.yaml:3:"), "{err}");
    assert!(err.contains("momentun"), "{err}");
    assert!(!run_dir.exists());

    let err = refused(
        "phases:\n  - {epoch: [0, 2], lr: [0.1, 0.2], lr_method: linear, batch_size: 8, image_size: 32, data_dir: \"48\"}\n  - {epoch: [3, 4], lr: [0.1, 0.2], lr_method: exponential, batch_size: 8, image_size: 32, data_dir: \"48\"}\n",
    );
    assert!(err.contains("bad.yaml:3:"), "{err}");

    // A key given twice: the second place, not the mapping's start.
    let err = refused(&format!(
        "run:\n  depth: 18\n  seed: 3\n  depth: 50\nphases:\n  - {phase}\n"
    ));
    assert!(
        err.contains("bad.yaml:4:3: run.depth: given twice (first at line 2)"),
        "{err}"
    );
}

/// bf16 on the CPU: where TensorFlow has kernels for it (AVX-512) a short run trains; elsewhere
/// the trainer refuses before step 0, naming the schedule line and the reason.
#[test]
fn bf16_trains_where_the_cpu_runs_it_and_is_refused_with_its_line_elsewhere() {
    let tmp = tempdir();
    let sched = schedule(tmp.path(), "half", "", &[P32]);
    let text = std::fs::read_to_string(&sched).unwrap();
    std::fs::write(&sched, text.replace("precision: fp32", "precision: bf16")).unwrap();
    let run_dir = tmp.path().join("run");
    let mut c = command(&bin("trainer"));
    c.arg(&sched)
        .arg("--run-dir")
        .arg(&run_dir)
        .args(["--max-steps", "3"]);
    let out = run(c);
    let err = common::text(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    if dawnrun::model::cpu_runs_bf16() {
        assert!(out.status.success(), "{err}");
        let done: serde_json::Value =
            serde_json::from_slice(&std::fs::read(run_dir.join("done.json")).unwrap()).unwrap();
        assert_eq!(done["final_step"], 3, "{err}");
        // --max-steps ended it early: the file says so.
        assert!(done["planned_steps"].as_u64().unwrap() > 3, "{done}");
    } else {
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(
            err.contains("half.yaml:5:3: run.precision: bf16 needs a GPU or a CPU with AVX-512"),
            "{err}"
        );
        assert!(!run_dir.join("checkpoints").exists(), "{err}");
    }
}

#[test]
fn missing_records_name_the_folder() {
    let tmp = tempdir();
    let sched = tmp.path().join("s.yaml");
    std::fs::write(
        &sched,
        format!(
            "run:\n  data_root: {}\n  depth: 18\nphases:\n  - {{epoch: [0, 1], lr: [0.1, 0.2], lr_method: linear, batch_size: 8, image_size: 32, data_dir: \"160\"}}\n",
            tmp.path().join("nowhere").display()
        ),
    )
    .unwrap();
    let mut c = command(&bin("trainer"));
    c.arg(&sched).arg("--run-dir").arg(tmp.path().join("run"));
    let out = run(c);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("nowhere/160"), "{err}");
}

/// The graph the trainer runs lets Grappler fuse every batch norm with the ReLU after it, as
/// in a Keras graph (`src/model/rewrite.rs`): `trainer bench --graph-def` on ResNet-18 and
/// ResNet-50, one step of it in Python TensorFlow with oneDNN, the ops that actually ran.
/// ResNet-50 has a ReLU before each strided 3x3 convolution's padding, which a `Rank` in the
/// padding's gradient used to keep unfused.
#[test]
fn every_batch_norm_and_relu_pair_is_fused_in_the_graph_tensorflow_runs() {
    let tmp = common::tempdir();
    // (depth, pairs): the stem's, then per block the ones not followed by the residual add.
    for (depth, pairs) in [(18, 1 + 8), (50, 1 + 2 * 16)] {
        let def = tmp.path().join(format!("r{depth}.pb"));
        let mut c = common::command(&common::bin("trainer"));
        c.args(["bench", "--depth", &depth.to_string(), "--classes", "4"])
            .args([
                "--px", "32", "--batch", "2", "--steps", "1", "--warmup", "0",
            ])
            .arg("--graph-def")
            .arg(&def);
        common::ok(c);
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/check_fusion.py");
        let mut c = common::command(&common::python());
        c.arg(script).arg(&def).args(["32", "2", "4"]);
        let out = common::ok(c);
        let stdout = common::text(&out.stdout);
        let got: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
        assert_eq!(got["pairs"], pairs, "ResNet-{depth}: {got}");
        assert_eq!(got["fused"], pairs, "ResNet-{depth}: {got}");
        assert_eq!(
            got["unfused"],
            serde_json::json!([]),
            "ResNet-{depth}: {got}"
        );
    }
}

/// `trainer bench --serve` (what `make bench` uses for the step rows): warms up both paths, says
/// ready with the parameter count, answers each request with that many step times from the
/// real graph and pipeline, refuses a bad request by name, and ends cleanly when stdin closes.
#[test]
fn bench_serve_times_both_paths_on_request_and_names_a_bad_request() {
    use std::io::{BufRead, BufReader, Write};
    use std::process::Stdio;

    let records = common::fixture().join("records").join("48");
    let start = || {
        let mut c = common::command(&common::bin("trainer"));
        c.args([
            "bench",
            "--depth",
            "18",
            "--classes",
            "4",
            "--px",
            "32",
            "--batch",
            "4",
        ])
        .args(["--warmup", "1", "--serve", "--records"])
        .arg(&records)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = c.spawn().expect("starting trainer bench --serve");
        let out = BufReader::new(child.stdout.take().unwrap());
        (child, out.lines())
    };
    let json = |line: Option<std::io::Result<String>>| -> serde_json::Value {
        serde_json::from_str(&line.expect("a line").expect("readable")).expect("JSON")
    };

    let (mut child, mut lines) = start();
    let ready = json(lines.next());
    assert_eq!(ready["ready"], true);
    assert_eq!(ready["params"], 11_178_564u64, "ResNet-18, 4 classes");
    let mut stdin = child.stdin.take().unwrap();
    for (path, k) in [("premade", 2), ("trainer", 3), ("premade", 1)] {
        writeln!(stdin, "{path} {k}").unwrap();
        let answer = json(lines.next());
        assert_eq!(answer["path"], path);
        let times = answer["step_s"].as_array().unwrap();
        assert_eq!(times.len(), k);
        assert!(times.iter().all(|t| t.as_f64().unwrap() > 0.0), "{answer}");
        assert!(answer.get("allreduce_hidden_pct").is_none(), "{answer}");
    }
    drop(stdin);
    assert!(child.wait().unwrap().success());

    let (mut child, mut lines) = start();
    json(lines.next());
    writeln!(child.stdin.as_mut().unwrap(), "premade many").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let err = common::text(&out.stderr);
    assert!(
        err.contains("\"premade many\": expected `premade K`, `trainer K` or `lockstep K`"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

/// `trainer bench --serve` under mpirun (what `make bench`'s scaling rows use): rank 0 reads the
/// requests and passes them on, every rank runs the steps, only rank 0 answers (one line per
/// request), and stdin's end ends the whole job. A bad request ends every rank, not only rank 0.
/// With `--overlap` (the overlap row) each answer also says how much of the all-reduce was hidden.
#[test]
fn bench_serve_at_two_ranks_answers_once_per_request_and_ends_together() {
    use std::io::{BufRead, BufReader, Write};
    use std::process::Stdio;

    let records = common::fixture().join("records").join("48");
    let tmp = common::tempdir();
    let trace = tmp.path().join("trace.json");
    let start = |more: &[&str]| {
        let mut c = common::mpirun(2, &common::bin("trainer"));
        c.args(["bench", "--depth", "18", "--classes", "4", "--px", "32"])
            .args(["--batch", "4", "--warmup", "1", "--serve", "--records"])
            .arg(&records)
            .args(more)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c.spawn()
            .expect("starting mpirun -np 2 trainer bench --serve")
    };

    let mut child = start(&["--timeline", trace.to_str().unwrap()]);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut json = || -> serde_json::Value {
        let line = lines.next().expect("a line").expect("readable");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"))
    };
    assert_eq!(json()["ready"], true);
    let mut stdin = child.stdin.take().unwrap();
    for (path, k) in [
        ("trainer", 2),
        ("premade", 3),
        ("lockstep", 2),
        ("trainer", 1),
    ] {
        writeln!(stdin, "{path} {k}").unwrap();
        let answer = json();
        assert_eq!(answer["path"], path, "{answer}");
        let times = answer["step_s"].as_array().unwrap();
        assert_eq!(times.len(), k, "{answer}");
        assert!(times.iter().all(|t| t.as_f64().unwrap() > 0.0), "{answer}");
        assert!(answer.get("allreduce_hidden_pct").is_none(), "{answer}");
    }
    drop(stdin);
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(
        rest.iter().all(|l| !l.starts_with('{')),
        "a second answer: {rest:?}"
    );
    // --timeline: each rank traced every step it ran, the warm-up of both paths (1 each) and
    // the 6 asked for, each through the step's phases, and the 2 lockstep steps apart.
    for rank in 0..2 {
        let path = tmp.path().join(format!("trace.rank{rank}.json"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
        let trace: serde_json::Value = serde_json::from_str(&text).unwrap();
        let spans = trace.as_array().unwrap();
        let count = |name: &str| spans.iter().filter(|e| e["name"] == name).count();
        assert_eq!(count("gradients"), 8, "rank {rank}: {text}");
        assert_eq!(count("apply"), 8, "rank {rank}: {text}");
        assert_eq!(count("hierarchical mean"), 8, "rank {rank}: {text}");
        // The lockstep reference: each rank's own one-run step, then a meeting, no all-reduce.
        assert_eq!(count("lockstep step"), 2, "rank {rank}: {text}");
        assert_eq!(count("lockstep meet"), 2, "rank {rank}: {text}");
    }

    let mut child = start(&["--overlap", "--fusion-mb", "0.01"]);
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert!(line.contains("\"ready\":true"), "{line}");
    writeln!(child.stdin.as_mut().unwrap(), "trainer 2").unwrap();
    line.clear();
    stdout.read_line(&mut line).unwrap();
    let answer: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(
        answer["step_s"].as_array().map(Vec::len),
        Some(2),
        "{answer}"
    );
    let hidden = answer["allreduce_hidden_pct"].as_f64();
    assert!(
        hidden.is_some_and(|h| (0.0..=100.0).contains(&h)),
        "{answer}"
    );
    // Lockstep steps all-reduce nothing, so they report no share.
    writeln!(child.stdin.as_mut().unwrap(), "lockstep 1").unwrap();
    line.clear();
    stdout.read_line(&mut line).unwrap();
    let answer: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(answer["path"], "lockstep", "{answer}");
    assert!(answer.get("allreduce_hidden_pct").is_none(), "{answer}");
    writeln!(child.stdin.as_mut().unwrap(), "trainer 0").unwrap();
    let out = child.wait_with_output().unwrap();
    let err = common::text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    // Not `timeout`'s 124: the job ended on the error, rank 1 included.
    assert_ne!(out.status.code(), Some(124), "{err}");
    assert!(
        err.contains("\"trainer 0\": expected `premade K`, `trainer K` or `lockstep K`"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}
