//! Shared by the root package's integration tests: the real binaries, a tiny synthetic dataset
//! with its records (made once per test binary by the real make-synthetic and build-records),
//! schedules written for it, and `mpirun` with a time limit so a hung job fails the test.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The name of a test process's scratch folder in the system temp dir, before its pid.
const SCRATCH_PREFIX: &str = "dawnrun-test-";
static SCRATCH: OnceLock<PathBuf> = OnceLock::new();

/// This test binary's own folder for what its tests share (the fixture, trained runs):
/// `<tmp>/dawnrun-test-<pid>`. A few hundred MB per binary, so it goes when the process exits,
/// and a folder left by one that was killed (its pid no longer alive) goes when the next starts.
pub fn scratch() -> &'static Path {
    SCRATCH.get_or_init(|| {
        remove_scratch_of_dead_processes();
        let dir = std::env::temp_dir().join(format!("{SCRATCH_PREFIX}{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // SAFETY: registers a plain `extern "C" fn` that takes nothing; libtest leaves `main`
        // (or calls `exit` on a failure), which runs it.
        let registered = unsafe { libc::atexit(remove_scratch) };
        assert_eq!(registered, 0, "atexit failed");
        dir
    })
}

extern "C" fn remove_scratch() {
    if let Some(dir) = SCRATCH.get() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

fn remove_scratch_of_dead_processes() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(SCRATCH_PREFIX))
            .and_then(|p| p.parse::<libc::pid_t>().ok())
        else {
            continue;
        };
        // SAFETY: signal 0 only asks whether the process exists.
        let gone = unsafe { libc::kill(pid, 0) } == -1
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        if gone {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// A binary of this package (trainer, eval-sweep).
pub fn bin(name: &str) -> PathBuf {
    let trainer = PathBuf::from(env!("CARGO_BIN_EXE_trainer"));
    trainer.with_file_name(name)
}

/// A binary of another workspace package (make-synthetic, build-records): built by
/// `cargo build --workspace` (which `make test` runs first) into the same folder.
pub fn tool(name: &str) -> PathBuf {
    let path = bin(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --release --workspace` (or `make test`) first",
        path.display()
    );
    path
}

pub fn command(program: &Path) -> Command {
    let mut c = Command::new(program);
    c.env("TF_CPP_MIN_LOG_LEVEL", "2")
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("OMPI_MCA_rmaps_base_oversubscribe", "1")
        .env_remove("DAWNRUN_FAIL_AT_STEP")
        .env_remove("DAWNRUN_FREEZE_AT_STEP")
        .env_remove("DAWNRUN_FREEZE_IN_ALLREDUCE_AT_STEP")
        .env_remove("DAWNRUN_FREEZE_AT_CHECKPOINT")
        .env_remove("DAWNRUN_NAN_STATE_AT_STEP")
        .env_remove("DAWNRUN_KILL_AT_STEP")
        .env_remove("DAWNRUN_DECODE_PANIC_MARKER")
        .env_remove("DAWNRUN_FAIL_RANK");
    c
}

/// `timeout 300 mpirun -np N --oversubscribe <program> <args>`.
pub fn mpirun(np: usize, program: &Path) -> Command {
    let mut c = command(Path::new("timeout"));
    c.args([
        "300",
        "mpirun",
        "-np",
        &np.to_string(),
        "--oversubscribe",
        "--bind-to",
        "none",
    ])
    .arg(program);
    c
}

/// Trains one single-process run of `phase` (schedule `name`, run keys `extra_run`) in a fresh
/// folder of this process's [`scratch`] and returns its run directory.
pub fn train_run(name: &str, extra_run: &str, phase: &str) -> PathBuf {
    let dir = scratch().join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let sched = schedule(&dir, name, extra_run, &[phase]);
    let mut c = command(&bin("trainer"));
    c.arg(&sched).arg("--run-dir").arg(dir.join("run"));
    ok(c);
    dir.join("run")
}

/// A copy of `run` in `tmp/run` without any evaluation results.
pub fn unevaluated_copy(run: &Path, tmp: &Path) -> PathBuf {
    let dst = tmp.join("run");
    let out = std::process::Command::new("cp")
        .arg("-r")
        .arg(run)
        .arg(&dst)
        .output()
        .unwrap();
    assert!(out.status.success());
    for f in ["eval", "eval.tsv", "eval.jsonl", "eval.png"] {
        let _ = std::fs::remove_dir_all(dst.join(f));
        let _ = std::fs::remove_file(dst.join(f));
    }
    dst
}

/// `trainer SCHEDULE --run-dir RUN_DIR` under `mpirun -np NP`; add flags and env to taste.
pub fn trainer_mpirun(np: usize, schedule: &Path, run_dir: &Path) -> Command {
    let mut c = mpirun(np, &bin("trainer"));
    c.arg(schedule).arg("--run-dir").arg(run_dir);
    c
}

pub fn run(mut cmd: Command) -> Output {
    cmd.output().expect("spawn")
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `cmd` and panics with its output unless it succeeded.
pub fn ok(cmd: Command) -> Output {
    let desc = format!("{cmd:?}");
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{desc} failed ({})\nstdout:\n{}\nstderr:\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    out
}

pub const CLASSES: usize = 4;
pub const TRAIN_PER_CLASS: usize = 64;

/// `<fixture>/records/{48,64}/{train,validation}-*`: 4 classes, 256 train and 64 validation
/// images, made once per test binary in its [`scratch`] folder.
pub fn fixture() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = scratch().join("fixture");
        let mut c = command(&tool("make-synthetic"));
        c.arg("--out")
            .arg(dir.join("images"))
            .args(["--classes", &CLASSES.to_string()])
            .args(["--train-per-class", &TRAIN_PER_CLASS.to_string()])
            .args(["--val-per-class", "16", "--sizes", "48,64", "--seed", "7"]);
        ok(c);
        for size in ["48", "64"] {
            let mut c = command(&tool("build-records"));
            c.arg("--input")
                .arg(dir.join("images").join(size))
                .arg("--output")
                .arg(dir.join("records").join(size))
                .args(["--train-shards", "4", "--validation-shards", "2"]);
            ok(c);
        }
        dir
    })
}

/// A schedule for the fixture: ResNet-18, fp32, `phases` as YAML flow items.
pub fn schedule(dir: &Path, name: &str, extra_run: &str, phases: &[&str]) -> PathBuf {
    let mut text = format!(
        "run:\n  name: {name}\n  data_root: {}\n  depth: 18\n  precision: fp32\n  weight_decay: 1.0e-4\n  seed: 3\n{extra_run}eval:\n  data_dir: \"48\"\n  image_size: 32\n  batch_size: 32\nphases:\n",
        fixture().join("records").display()
    );
    for p in phases {
        text.push_str(&format!("  - {p}\n"));
    }
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// The rows of a JSON-lines file.
pub fn json_rows(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The rows of `<run>/metrics.jsonl`.
pub fn metrics(run_dir: &Path) -> Vec<serde_json::Value> {
    json_rows(&run_dir.join("metrics.jsonl"))
}

pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("DAWNRUN_PYTHON") {
        return PathBuf::from(p);
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(".deps/venv/bin/python");
    assert!(p.exists(), "{} is missing: run `make setup`", p.display());
    p
}

pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// `jpeg` with the 16 code-length counts of its first Huffman table set to 255: damage inside a
/// well-formed file, which only decoding finds ("Bogus Huffman table definition" in libjpeg,
/// TensorFlow's decoder and ours alike). A file cut short is refused by build-records instead.
pub fn break_huffman_table(jpeg: &[u8]) -> Vec<u8> {
    let dht = jpeg
        .windows(2)
        .position(|w| w == [0xFF, 0xC4])
        .expect("a Huffman table");
    let mut broken = jpeg.to_vec();
    // FF C4, the length (2 bytes), the table class and id (1 byte), then the counts.
    broken[dht + 5..dht + 21].fill(0xFF);
    broken
}

pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// `build-records` of `images` (the fixture's layout) into `out`, 4 training shards and 2
/// validation shards.
pub fn build_records(images: &Path, out: &Path) {
    let mut c = command(&tool("build-records"));
    c.arg("--input").arg(images).arg("--output").arg(out).args([
        "--train-shards",
        "4",
        "--validation-shards",
        "2",
    ]);
    ok(c);
}

/// The files of `dir`, sorted by path.
pub fn sorted_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}
