//! The trainer under a real `mpirun`: identical replicas at np 2-4 (oversubscribed on this
//! 2-core box), the all-reduced gradient against its definition, one failing rank ending the
//! job, ranks with different configurations refused, resume at another world size.

mod common;
use common::*;

const TINY: &str = r#"{epoch: [0, 1], lr: [0.05, 0.1], lr_method: linear, batch_size: 8, image_size: 32, data_dir: "48"}"#;

fn tiny_schedule(dir: &std::path::Path) -> std::path::PathBuf {
    schedule(
        dir,
        "tiny",
        "  log_every_steps: 2\n  checkpoint_every_steps: 4\n",
        &[TINY],
    )
}

#[test]
fn every_rank_ends_with_identical_weights_and_its_share_of_cores_at_np_2_3_and_4() {
    let tmp = tempdir();
    let sched = tiny_schedule(tmp.path());
    for np in [2usize, 3, 4] {
        let run_dir = tmp.path().join(format!("np{np}"));
        let mut c = trainer_mpirun(np, &sched, &run_dir);
        c.args(["--max-steps", "6"]);
        let out = ok(c);
        let log = text(&out.stderr);
        assert!(
            log.contains(&format!("all {np} ranks hold identical weights")),
            "np {np}:\n{log}"
        );
        // Global batch and steps follow the world size: 256 images / (8 x np) per epoch.
        let steps_per_epoch = 256 / (8 * np);
        assert!(
            log.contains(&format!(
                "steps 0..{steps_per_epoch}, 32 px, batch 8/rank x {np} = {}",
                8 * np
            )),
            "np {np}:\n{log}"
        );
        // Unbound (`--bind-to none`), every rank may run on this process's CPUs: it decodes
        // on its share of them.
        let cpus = std::thread::available_parallelism().unwrap().get();
        let threads = (cpus / np).max(1);
        assert!(
            log.contains(&format!(", {threads} decode thread(s)")),
            "np {np}:\n{log}"
        );
        // Only rank 0 writes.
        assert!(run_dir.join("checkpoints/ckpt-6.index").exists());
        assert_eq!(metrics(&run_dir).last().unwrap()["global_batch"], 8 * np);
    }
}

#[test]
fn mpi_allreduce_also_keeps_replicas_identical() {
    let tmp = tempdir();
    let sched = tiny_schedule(tmp.path());
    let mut c = trainer_mpirun(2, &sched, &tmp.path().join("run"));
    c.args(["--max-steps", "3", "--allreduce", "mpi"]);
    let out = ok(c);
    assert!(text(&out.stderr).contains("all 2 ranks hold identical weights"));
}

#[test]
fn two_rank_gradient_equals_the_mean_of_the_single_batch_gradients() {
    // The last run takes the overlapped path with 1 MiB groups (11 of them).
    for (np, overlap) in [(2usize, false), (3, false), (2, true)] {
        let mut c = mpirun(np, &bin("trainer"));
        c.args(["gradcheck", "--depth", "18", "--px", "32", "--batch", "4"]);
        if overlap {
            c.args(["--overlap", "--fusion-mb", "1"]);
        }
        let out = ok(c);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["np"], np);
        assert!(v["max_abs_grad"].as_f64().unwrap() > 1e-4, "{v}");
        assert!(v["relative_error"].as_f64().unwrap() < 1e-5, "{v}");
    }
}

/// Overlapping the all-reduce with backward changes when the sums happen, not what they are: a
/// 2-rank run with overlap (1 MiB fusion groups, so many groups in flight) logs the same losses,
/// bit for bit, as the same run without it.
#[test]
fn an_overlapped_run_matches_the_plain_run_step_for_step() {
    let tmp = tempdir();
    let mut losses = Vec::new();
    for overlap in [false, true] {
        let name = format!("overlap_{overlap}");
        let extra = format!(
            "  log_every_steps: 1\n  checkpoint_every_steps: 100\ndistributed:\n  fusion_threshold_mb: 1\n  overlap: {overlap}\n"
        );
        let sched = schedule(tmp.path(), &name, &extra, &[TINY]);
        let run_dir = tmp.path().join(&name);
        let mut c = trainer_mpirun(2, &sched, &run_dir);
        c.args(["--max-steps", "5"]);
        let out = ok(c);
        let err = text(&out.stderr);
        assert!(err.contains("all 2 ranks hold identical weights"), "{err}");
        assert_eq!(err.contains("overlapped with backward"), overlap, "{err}");
        let rows = metrics(&run_dir);
        let seen: Vec<(u64, f64)> = rows
            .iter()
            .map(|r| {
                (
                    r["step"].as_u64().unwrap(),
                    r["total_loss"].as_f64().unwrap(),
                )
            })
            .collect();
        assert_eq!(seen.len(), 5, "{seen:?}");
        losses.push(seen);
    }
    assert_eq!(losses[0], losses[1]);
}

/// The finite check of the averaged gradients is shared: each rank looks at its own share of
/// them and the ranks add up their answers. A NaN in the last gradient lies in the last rank's
/// share alone, yet rank 0 logs the skipped step and every rank skips it (the replicas would
/// differ otherwise), with the overlapped step too; with `MPI_Allreduce`, which does not promise
/// the same bits everywhere, every rank checks all of them.
#[test]
fn a_nan_in_one_ranks_share_of_the_gradients_skips_the_step_on_every_rank() {
    let tmp = tempdir();
    for (np, overlap, method) in [
        (3usize, false, "hierarchical"),
        (2, true, "hierarchical"),
        (2, false, "mpi"),
    ] {
        let name = format!("nan_np{np}_{overlap}_{method}");
        let extra = format!(
            "  loss_scale: dynamic\n  initial_loss_scale: 1024\n  log_every_steps: 1\n  checkpoint_every_steps: 1\ndistributed:\n  fusion_threshold_mb: 1\n  overlap: {overlap}\n"
        );
        let sched = schedule(tmp.path(), &name, &extra, &[TINY]);
        let run_dir = tmp.path().join(&name);
        let mut c = trainer_mpirun(np, &sched, &run_dir);
        c.args(["--max-steps", "3", "--allreduce", method])
            .env("DAWNRUN_NAN_GRADIENT_AT_STEP", "1");
        let out = ok(c);
        let err = text(&out.stderr);
        assert!(
            err.contains("step 1: non-finite gradients, update skipped, loss scale now 512"),
            "np {np}: {err}"
        );
        assert!(!err.contains("step 0: non-finite") && !err.contains("step 2: non-finite"));
        assert!(
            err.contains(&format!("all {np} ranks hold identical weights")),
            "np {np}: {err}"
        );
        let scales: Vec<f64> = metrics(&run_dir)
            .iter()
            .map(|r| r["loss_scale"].as_f64().unwrap())
            .collect();
        assert_eq!(scales, [1024.0, 512.0, 512.0], "np {np}");
    }
}

#[test]
fn one_failing_rank_ends_a_four_rank_job_promptly_with_its_message() {
    let tmp = tempdir();
    let sched = tiny_schedule(tmp.path());
    let mut c = trainer_mpirun(4, &sched, &tmp.path().join("run"));
    c.env("DAWNRUN_FAIL_RANK", "2")
        .env("DAWNRUN_FAIL_AT_STEP", "2");
    ends_with_the_failure(c, 2);
}

/// Runs the job and checks it failed by itself (not by `timeout`, which exits 124) with
/// `rank`'s injected error; returns stderr.
fn ends_with_the_failure(c: std::process::Command, rank: usize) -> String {
    let out = run(c);
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert_ne!(out.status.code(), Some(124), "the job hung:\n{err}");
    let want = format!("rank {rank}: error: step 2: failing on purpose");
    assert!(err.contains(&want), "{err}");
    err
}

/// With overlap on, the other rank waits in two places a dead peer never answers (its own
/// backward thread, and the ring): the job must still end with the failing rank's message.
#[test]
fn a_failing_rank_ends_an_overlapped_job_too() {
    let tmp = tempdir();
    let extra = "  log_every_steps: 1\ndistributed:\n  fusion_threshold_mb: 1\n  overlap: true\n";
    let sched = schedule(tmp.path(), "overlapfail", extra, &[TINY]);
    let mut c = trainer_mpirun(2, &sched, &tmp.path().join("run"));
    c.env("DAWNRUN_FAIL_RANK", "1")
        .env("DAWNRUN_FAIL_AT_STEP", "2");
    let err = ends_with_the_failure(c, 1);
    assert!(err.contains("overlapped with backward"), "{err}");
}

#[test]
fn ranks_with_different_schedules_are_refused_at_start() {
    let tmp = tempdir();
    let a = tiny_schedule(tmp.path());
    let b = schedule(
        tmp.path(),
        "other",
        "  log_every_steps: 2\n  checkpoint_every_steps: 4\n",
        &[
            r#"{epoch: [0, 1], lr: [0.05, 0.2], lr_method: linear, batch_size: 8, image_size: 32, data_dir: "48"}"#,
        ],
    );
    let run_dir = tmp.path().join("run");
    let mut c = command(std::path::Path::new("timeout"));
    c.args(["300", "mpirun", "--oversubscribe", "-np", "1"])
        .arg(bin("trainer"))
        .arg(&a)
        .arg("--run-dir")
        .arg(&run_dir)
        .args([":", "-np", "1"])
        .arg(bin("trainer"))
        .arg(&b)
        .arg("--run-dir")
        .arg(&run_dir);
    let out = run(c);
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert_ne!(out.status.code(), Some(124), "hung:\n{err}");
    assert!(err.contains("ranks disagree on the configuration"), "{err}");
}

#[test]
fn a_two_rank_run_resumes_on_one_rank_at_the_same_epoch() {
    let tmp = tempdir();
    let sched = tiny_schedule(tmp.path());
    let run_dir = tmp.path().join("run");
    let mut c = trainer_mpirun(2, &sched, &run_dir);
    c.args(["--max-steps", "8"]);
    ok(c);
    // np 2: 16 steps per epoch, so ckpt-8 is epoch 0.5; np 1 has 32 steps per epoch: step 16.
    let mut c = command(&bin("trainer"));
    c.arg(&sched).arg("--run-dir").arg(&run_dir).arg("--resume");
    let out = ok(c);
    let err = text(&out.stderr);
    assert!(err.contains("epoch 0.5000 is step 16 here"), "{err}");
    let rows = metrics(&run_dir);
    let last = rows.last().unwrap();
    assert_eq!(last["step"], 32);
    assert_eq!(last["epoch"], 1.0);
}

#[test]
fn timeline_writes_a_chrome_trace_per_rank_with_every_step_phase() {
    let tmp = tempdir();
    let sched = tiny_schedule(tmp.path());
    let trace = tmp.path().join("trace.json");
    let mut c = trainer_mpirun(2, &sched, &tmp.path().join("run"));
    c.args(["--max-steps", "3", "--timeline"]).arg(&trace);
    ok(c);
    for rank in 0..2 {
        let path = tmp.path().join(format!("trace.rank{rank}.json"));
        let text = std::fs::read_to_string(&path).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let events = v.as_array().unwrap();
        let names: std::collections::HashSet<String> = events
            .iter()
            .filter_map(|e| e["cat"].as_str().map(String::from))
            .collect();
        for phase in ["input wait", "compute", "negotiate", "allreduce", "update"] {
            assert!(
                names.contains(phase),
                "rank {rank}: no `{phase}` in {names:?}"
            );
        }
        assert!(events
            .iter()
            .all(|e| e["pid"] == rank || e["pid"].is_null()));
    }
}
