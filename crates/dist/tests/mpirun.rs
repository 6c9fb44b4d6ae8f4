//! Multi-rank tests: spawn `mpirun` on the built `allreduce-check` binary (MPI initialises once
//! per process, so every world is a fresh job). Each run has a `timeout`, so a hang fails the test
//! instead of hanging the suite, and runs in a fresh temp dir.

use std::path::Path;
use std::process::{Command, Output};

use dawnrun_dist::hierarchical::RANKS_PER_NODE_ENV;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_allreduce-check");

/// `timeout SECS mpirun -np NP --oversubscribe allreduce-check ARGS` in a fresh temp dir.
fn mpirun_in(dir: &Path, np: usize, secs: u32, args: &[&str]) -> Output {
    mpirun_with(dir, np, secs, None, args)
}

/// As [`mpirun_in`], with `DAWNRUN_RANKS_PER_NODE` set to `per_node` for every rank.
fn mpirun_with(dir: &Path, np: usize, secs: u32, per_node: Option<usize>, args: &[&str]) -> Output {
    let np = np.to_string();
    let secs = secs.to_string();
    let mut cmd_args = vec![secs.as_str(), "mpirun", "-np", &np, "--oversubscribe"];
    if per_node.is_some() {
        cmd_args.extend(["-x", RANKS_PER_NODE_ENV]);
    }
    cmd_args.push(BIN);
    cmd_args.extend_from_slice(args);
    let mut cmd = command_line("timeout", &cmd_args, dir);
    if let Some(k) = per_node {
        cmd.env(RANKS_PER_NODE_ENV, k.to_string());
    }
    run(cmd, "timeout")
}

fn command(program: &str, args: &[&str], dir: &Path) -> Output {
    run(command_line(program, args, dir), program)
}

fn command_line(program: &str, args: &[&str], dir: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(dir)
        .env_remove(RANKS_PER_NODE_ENV)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1");
    cmd
}

fn run(mut cmd: Command, program: &str) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {program} (Open MPI installed? `make setup`): {e}"))
}

fn mpirun(np: usize, args: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    mpirun_in(dir.path(), np, 120, args)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The JSON lines rank 0 printed; fails with both streams if the run failed.
fn json_lines(out: &Output) -> Vec<Value> {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Every method line is ok, within tolerance, and (for ours) bitwise identical across ranks;
/// `hosts` is the hierarchical method's expected (hosts, ranks per host).
fn assert_checks_pass(
    lines: &[Value],
    np: usize,
    floats: usize,
    compression: &str,
    hosts: Option<(usize, usize)>,
) {
    let methods: Vec<&str> = lines
        .iter()
        .map(|l| l["method"].as_str().unwrap())
        .collect();
    assert_eq!(methods, ["hierarchical", "ring", "mpi"], "{lines:?}");
    for line in lines {
        assert_eq!(line["np"], np);
        let local: Vec<usize> = (0..np).collect();
        assert_eq!(
            line["local_ranks"],
            serde_json::json!(local),
            "one host: local rank = rank"
        );
        assert_eq!(line["floats"], floats);
        let diff = line["max_abs_diff"].as_f64().unwrap();
        assert!(diff <= line["tolerance"].as_f64().unwrap(), "{line}");
        assert_eq!(line["ok"], true, "{line}");
    }
    let mpi = &lines[2];
    for ours in &lines[..2] {
        assert_eq!(ours["compression"], compression);
        assert_eq!(ours["identical_across_ranks"], true, "{ours}");
        let vs_mpi = ours["max_abs_diff_vs_mpi"].as_f64().unwrap();
        let tol = ours["tolerance"].as_f64().unwrap() + mpi["tolerance"].as_f64().unwrap();
        assert!(
            vs_mpi <= tol,
            "{} vs MPI_Allreduce: {vs_mpi} > {tol}",
            ours["method"]
        );
    }
    let layout = (&lines[0]["hosts"], &lines[0]["ranks_per_host"]);
    match hosts {
        Some((h, l)) => assert_eq!(layout, (&Value::from(h), &Value::from(l)), "{}", lines[0]),
        None => assert_eq!(layout, (&Value::Null, &Value::Null), "{}", lines[0]),
    }
}

/// One host holding every rank: what the hierarchical method reports outside tests.
fn one_host(np: usize) -> Option<(usize, usize)> {
    (np > 1).then_some((1, np))
}

#[test]
fn our_methods_match_mpi_allreduce_and_are_identical_on_every_rank() {
    // 200,003 floats: chunks under 512 KiB, copied back into a buffer 16 bytes into its page,
    // where the host all-reduce copies backwards in blocks (node.rs `copy_floats`).
    for np in [2usize, 3, 4] {
        for floats in [1usize, 3, 200_003, 1_000_003] {
            let f = floats.to_string();
            let out = mpirun(np, &["--floats", &f, "--iters", "2", "--json"]);
            assert_checks_pass(&json_lines(&out), np, floats, "none", one_host(np));
        }
    }
}

#[test]
fn a_call_large_enough_to_stream_its_copy_back_matches_mpi_allreduce() {
    // Over node.rs `STREAM_FROM` (8 Mi floats): with more ranks than CPUs (4 ranks here on a
    // 2-CPU machine) the last step of each round streams into the caller's buffer.
    let floats = (8usize << 20) + 3;
    let f = floats.to_string();
    let out = mpirun(4, &["--floats", &f, "--iters", "2", "--json"]);
    assert_checks_pass(&json_lines(&out), 4, floats, "none", one_host(4));
}

#[test]
fn fp16_compression_stays_within_fp16_tolerance_and_identical() {
    for np in [2usize, 3, 4] {
        for floats in [1usize, 3, 1_000_003] {
            let f = floats.to_string();
            let out = mpirun(
                np,
                &[
                    "--floats",
                    &f,
                    "--iters",
                    "2",
                    "--compression",
                    "fp16",
                    "--json",
                ],
            );
            assert_checks_pass(&json_lines(&out), np, floats, "fp16", one_host(np));
        }
    }
}

#[test]
fn many_small_fusion_buffers_give_the_same_checks() {
    // 0.25 MiB threshold over 1000003 floats in 37 tensors: ~16 buffers, uneven tensor sizes.
    let out = mpirun(
        3,
        &[
            "--floats",
            "1000003",
            "--tensors",
            "37",
            "--threshold-mb",
            "0.25",
            "--iters",
            "2",
            "--json",
        ],
    );
    assert_checks_pass(&json_lines(&out), 3, 1_000_003, "none", one_host(3));
}

/// The job ended by itself (not by `timeout`, exit 124) with a failure code, and stderr says
/// `expected`. Without MPI_Abort the other ranks would wait in the all-reduce until `timeout`
/// kills them; 60 s is far more than the job needs to end.
fn assert_job_aborted(np: usize, args: &[&str], expected: &str) {
    let dir = tempfile::tempdir().unwrap();
    let out = mpirun_in(dir.path(), np, 60, args);
    let stderr = text(&out.stderr);
    let code = out.status.code();
    assert!(
        code.is_some() && code != Some(0) && code != Some(124),
        "exit {code:?}\n{stderr}"
    );
    assert!(
        stderr.contains(expected),
        "stderr lacks {expected:?}:\n{stderr}"
    );
}

#[test]
fn a_failing_rank_ends_a_four_rank_job_with_its_message() {
    assert_job_aborted(
        4,
        &["--fail-rank", "2", "--iters", "6"],
        "rank 2: error: injected failure on rank 2",
    );
}

#[test]
fn a_panicking_rank_ends_the_job_through_the_panic_hook() {
    assert_job_aborted(
        3,
        &["--panic-rank", "1", "--iters", "4"],
        "rank 1: panic: injected panic on rank 1",
    );
}

#[test]
fn a_rank_killed_while_the_others_wait_in_the_shared_memory_barrier_ends_the_job() {
    // The others sleep in the node all-reduce's futex barrier for the dead rank; mpirun must
    // notice the death and end them (no hang: `timeout` would give exit 124).
    assert_job_aborted(
        4,
        &[
            "--kill-rank",
            "2",
            "--iters",
            "6",
            "--method",
            "hierarchical",
        ],
        "signal 9",
    );
}

#[test]
fn rank_zero_warns_about_a_late_rank_and_the_job_still_succeeds() {
    let out = mpirun(
        3,
        &[
            "--floats",
            "1000",
            "--iters",
            "2",
            "--method",
            "ring",
            "--sleep-rank",
            "2",
            "--sleep-s",
            "2.5",
            "--stall-warning-s",
            "1",
        ],
    );
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("rank 0: stall: ranks [2] have not reached step 1 for "),
        "{stderr}"
    );
}

#[test]
fn ranks_with_different_arguments_are_refused_naming_the_odd_rank() {
    // MPMD launch: rank 0 and 1 get --floats 10, rank 2 gets --floats 11.
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "120",
        "mpirun",
        "--oversubscribe",
        "-np",
        "2",
        BIN,
        "--floats",
        "10",
        ":",
        "-np",
        "1",
        BIN,
        "--floats",
        "11",
    ];
    let out = command("timeout", &args, dir.path());
    let stderr = text(&out.stderr);
    assert!(
        !out.status.success() && out.status.code() != Some(124),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "allreduce-check arguments differs between ranks: ranks [2] disagree with rank 0"
        ),
        "{stderr}"
    );
}

#[test]
fn timeline_files_are_chrome_traces_with_one_pid_per_rank() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let out = mpirun_in(
        dir.path(),
        2,
        120,
        &[
            "--floats",
            "1000",
            "--iters",
            "3",
            "--json",
            "--timeline",
            d,
        ],
    );
    json_lines(&out);
    for rank in 0..2 {
        let path = dir.path().join(format!("timeline-rank{rank}.json"));
        let trace: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let spans: Vec<&Value> = trace
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["ph"] == "X")
            .collect();
        assert!(spans.iter().all(|e| e["pid"] == rank));
        let count = |cat: &str| spans.iter().filter(|e| e["cat"] == cat).count();
        assert_eq!(count("negotiate"), 9, "3 iterations x 3 methods");
        // Per iteration: one span each for ours (they divide inside), MPI's sum and divide by N.
        assert_eq!(
            count("allreduce"),
            12,
            "3 iterations x (1 hierarchical + 1 ring + 2 MPI spans)"
        );
        let names = |name: &str| spans.iter().filter(|e| e["name"] == name).count();
        assert_eq!(
            (
                names("hierarchical mean"),
                names("ring mean"),
                names("MPI_Allreduce"),
                names("divide by N")
            ),
            (3, 3, 3, 3)
        );
    }
}

#[test]
fn a_single_process_without_mpirun_works() {
    let dir = tempfile::tempdir().unwrap();
    let out = command(
        BIN,
        &["--floats", "1000", "--iters", "2", "--json"],
        dir.path(),
    );
    let lines = json_lines(&out);
    assert_checks_pass(&lines, 1, 1000, "none", None);
    assert_eq!(
        lines[0]["max_abs_diff"], 0.0,
        "one rank: the mean is the data itself"
    );
}

#[test]
fn hierarchical_across_hosts_matches_mpi_allreduce_in_several_rounds() {
    // DAWNRUN_RANKS_PER_NODE splits one machine into hosts of K ranks, so the ring across hosts
    // runs; 5000003 floats take three rounds of the node all-reduce (2M elements per rank each).
    for (np, per_node) in [(4usize, 2usize), (6, 3), (6, 2)] {
        for compression in ["none", "fp16"] {
            let dir = tempfile::tempdir().unwrap();
            let args = [
                "--floats",
                "5000003",
                "--iters",
                "2",
                "--compression",
                compression,
                "--json",
            ];
            let out = mpirun_with(dir.path(), np, 180, Some(per_node), &args);
            let hosts = Some((np / per_node, per_node));
            assert_checks_pass(&json_lines(&out), np, 5_000_003, compression, hosts);
        }
    }
}

#[test]
fn hosts_of_different_sizes_fall_back_to_the_flat_ring_and_say_so() {
    let dir = tempfile::tempdir().unwrap();
    let out = mpirun_with(
        dir.path(),
        3,
        120,
        Some(2),
        &["--floats", "1001", "--iters", "2", "--json"],
    );
    let lines = json_lines(&out);
    assert_checks_pass(&lines, 3, 1001, "none", None);
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("rank 0: warning: hierarchical all-reduce unavailable (hosts carry between 1 and 2 ranks); using the flat ring"),
        "{stderr}"
    );
    assert_eq!(
        lines[0]["fingerprint"], lines[1]["fingerprint"],
        "the fallback is the ring itself"
    );
}

#[test]
fn at_two_ranks_hierarchical_and_ring_give_the_same_bits() {
    // One addition per element (commutative) and the same division: with f32 on the wire (the
    // default) the trainer's 2-rank results do not depend on the method. With fp16 they differ:
    // the ring rounds the partner's values before adding, the hierarchical method only the mean.
    for floats in ["7", "1000003", "4194305"] {
        let lines = json_lines(&mpirun(2, &["--floats", floats, "--iters", "1", "--json"]));
        assert_eq!(lines[0]["method"], "hierarchical");
        assert_eq!(lines[1]["method"], "ring");
        assert_eq!(
            lines[0]["fingerprint"], lines[1]["fingerprint"],
            "{floats} floats"
        );
    }
}

#[test]
fn a_dev_shm_too_small_for_the_segment_falls_back_to_the_flat_ring_naming_it() {
    // A private mount namespace with an 8 MB /dev/shm, as in a container started without
    // --shm-size; the segment needs 2 x 4 MiB per rank (24 MiB at np 3). Needs root (as the netns tests do):
    // without it `unshare` fails and so does the test.
    let dir = tempfile::tempdir().unwrap();
    let script = format!(
        "mount -t tmpfs -o size=8m tmpfs /dev/shm && \
         mpirun -np 3 --oversubscribe {BIN} --floats 1001 --iters 2 --json"
    );
    let out = command(
        "timeout",
        &["120", "unshare", "-m", "sh", "-c", &script],
        dir.path(),
    );
    let lines = json_lines(&out);
    assert_checks_pass(&lines, 3, 1001, "none", None);
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("rank 0: warning: hierarchical all-reduce unavailable (node rank 0: shared memory segment /dawnrun-")
            && stderr.contains("is /dev/shm large enough?")
            && stderr.contains("No space left on device"),
        "{stderr}"
    );
}

#[test]
fn a_segment_left_by_a_killed_job_is_removed_by_the_next_job_and_a_live_one_kept() {
    // A job SIGKILLed between making its segment and unlinking it leaves the name in /dev/shm.
    // In a private /dev/shm (root, as above), so no concurrent test sweeps these files first:
    // one file named for a pid that is gone, one for the live shell running the job.
    let mut child = Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let script = format!(
        "mount -t tmpfs -o size=64m tmpfs /dev/shm && \
         head -c 1048576 /dev/zero > /dev/shm/dawnrun-{dead}-1 && \
         head -c 4096 /dev/zero > /dev/shm/dawnrun-$$-2 && \
         mpirun -np 2 --oversubscribe {BIN} --floats 1001 --iters 2 --json && \
         echo left: $(ls /dev/shm) >&2"
    );
    let out = command(
        "timeout",
        &["120", "unshare", "-m", "sh", "-c", &script],
        dir.path(),
    );
    let lines = json_lines(&out);
    assert_checks_pass(&lines, 2, 1001, "none", one_host(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "rank 0: removed /dev/shm/dawnrun-{dead}-1 (1.0 MiB), left by a job killed"
        )),
        "{stderr}"
    );
    let left = stderr
        .lines()
        .find(|l| l.starts_with("left:"))
        .unwrap_or("");
    assert!(
        left.contains("dawnrun-") && !left.contains(&format!("dawnrun-{dead}-")),
        "the live file stays, the stale one goes: {stderr}"
    );
}
