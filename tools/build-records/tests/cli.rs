//! build-records through the real binary, on input trees written by the real make-synthetic, in
//! a fresh temporary folder per test; Python TensorFlow reads what we wrote.
//!
//! make-synthetic belongs to another package, so `CARGO_BIN_EXE_make-synthetic` is not set here:
//! it is taken from the same target folder (`cargo build --release --workspace` puts it there)
//! and a test fails with the command to run when it is missing.

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BUILD_RECORDS: &str = env!("CARGO_BIN_EXE_build-records");

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn make_synthetic_bin() -> PathBuf {
    // Test binaries live in target/<profile>/deps/; binaries in target/<profile>/.
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("make-synthetic");
    assert!(
        bin.is_file(),
        "{} is missing: run `cargo build --release -p make-synthetic` (or `make build`) first",
        bin.display()
    );
    bin
}

fn python() -> PathBuf {
    let python = std::env::var_os("DAWNRUN_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".deps/venv/bin/python"));
    assert!(
        python.is_file(),
        "{} not found: run `make setup`",
        python.display()
    );
    python
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    if !out.status.success() {
        panic!(
            "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

/// Writes a synthetic input under `dir/data` (4 classes, 12 + 3 images each, 64 px) and returns
/// `dir/data/64`, the ImageFolder root.
fn synthetic_input(dir: &Path, odd_files: bool) -> PathBuf {
    let data = dir.join("data");
    let mut cmd = Command::new(make_synthetic_bin());
    cmd.args(["--out", data.to_str().unwrap()]).args([
        "--classes",
        "4",
        "--train-per-class",
        "12",
        "--val-per-class",
        "3",
        "--sizes",
        "64",
    ]);
    if odd_files {
        cmd.arg("--odd-files");
    }
    run(&mut cmd);
    data.join("64")
}

fn build(input: &Path, output: &Path, extra: &[&str]) -> Output {
    run(Command::new(BUILD_RECORDS)
        .args([
            "--input",
            input.to_str().unwrap(),
            "--output",
            output.to_str().unwrap(),
        ])
        .args(["--train-shards", "5", "--validation-shards", "2"])
        .args(extra))
}

fn build_failing(input: &Path, output: &Path, extra: &[&str]) -> String {
    let out = Command::new(BUILD_RECORDS)
        .args([
            "--input",
            input.to_str().unwrap(),
            "--output",
            output.to_str().unwrap(),
        ])
        .args(extra)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "want one line, got: {stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    stderr
}

/// Every file in `dir` with its bytes, by name.
fn contents(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().into_string().unwrap(),
                fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

fn shard(out: &Path, name: &str) -> PathBuf {
    out.join(name)
}

#[test]
fn python_tensorflow_reads_every_record_with_the_right_labels() {
    let tmp = tempfile::tempdir().unwrap();
    let input = synthetic_input(tmp.path(), true);
    let data = input.parent().unwrap();
    // Boxes for two train files, one with two boxes.
    let boxes = tmp.path().join("boxes.csv");
    fs::write(
        &boxes,
        "n01007919_3.JPEG,0.1,0.2,0.5,0.75\nn01007919_3.JPEG,0,0,1,1\nn01015838_0.JPEG,0.25,0.25,0.5,0.5\n",
    )
    .unwrap();
    let out = tmp.path().join("records");
    let summary = build(
        &input,
        &out,
        &[
            "--metadata",
            data.join("metadata.txt").to_str().unwrap(),
            "--bboxes",
            boxes.to_str().unwrap(),
        ],
    );
    let stdout = String::from_utf8_lossy(&summary.stdout);
    assert!(stdout.contains("train: 50 images in 5 shards"), "{stdout}");
    assert!(
        stdout.contains("validation: 12 images in 2 shards"),
        "{stdout}"
    );
    assert!(stdout.contains("re-encoded as RGB JPEG: 2"), "{stdout}");
    assert!(stdout.contains("n01000000_odd_png.JPEG: PNG"), "{stdout}");
    assert!(
        stdout.contains("n01000000_odd_cmyk.JPEG: CMYK JPEG"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "skipped: 2\n  train/n01000000/n01000000_odd_cut.JPEG: damaged JPEG: cut short: "
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("\n  train/n01000000/n01000000_odd_text.JPEG: not an image"),
        "{stdout}"
    );
    // The cut JPEG is skipped because TensorFlow's own decoder refuses it.
    let cut = input.join("train/n01000000/n01000000_odd_cut.JPEG");
    let refused = run(Command::new(python()).args([
        "-c",
        "import sys, tensorflow as tf\n\
         try:\n    tf.io.decode_jpeg(open(sys.argv[1], 'rb').read())\n\
         except tf.errors.InvalidArgumentError:\n    print('refused')",
        cut.to_str().unwrap(),
    ]));
    assert_eq!(String::from_utf8_lossy(&refused.stdout).trim(), "refused");

    // What Python must find: every input file except the text one, under its folder's synset.
    let synsets: Vec<String> = fs::read_to_string(data.join("synsets.txt"))
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    let texts: BTreeMap<String, String> = fs::read_to_string(data.join("metadata.txt"))
        .unwrap()
        .lines()
        .map(|l| {
            let (s, t) = l.split_once('\t').unwrap();
            (s.to_string(), t.to_string())
        })
        .collect();
    let mut splits = serde_json::Map::new();
    for split in ["train", "validation"] {
        let mut files = serde_json::Map::new();
        for synset in &synsets {
            for e in fs::read_dir(input.join(split).join(synset)).unwrap() {
                let name = e.unwrap().file_name().into_string().unwrap();
                if !name.ends_with("_odd_text.JPEG") && !name.ends_with("_odd_cut.JPEG") {
                    files.insert(name, json!(synset));
                }
            }
        }
        splits.insert(split.into(), Value::Object(files));
    }
    let want = json!({
        "synsets": synsets,
        "texts": texts,
        "splits": splits,
        "bboxes": {
            "n01007919_3.JPEG": [[0.1, 0.2, 0.5, 0.75], [0.0, 0.0, 1.0, 1.0]],
            "n01015838_0.JPEG": [[0.25, 0.25, 0.5, 0.5]],
        },
    });
    let want_path = tmp.path().join("want.json");
    fs::write(&want_path, want.to_string()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/read_records.py");
    let read = run(Command::new(python()).arg(script).arg(&out).arg(&want_path));
    let counts: Value = serde_json::from_slice(&read.stdout).unwrap();
    assert_eq!(counts, json!({"train": 50, "validation": 12}));
}

#[test]
fn same_seed_gives_identical_bytes_and_another_seed_reorders() {
    let tmp = tempfile::tempdir().unwrap();
    let input = synthetic_input(tmp.path(), true);
    let (a, b, c) = (
        tmp.path().join("a"),
        tmp.path().join("b"),
        tmp.path().join("c"),
    );
    build(&input, &a, &["--threads", "1"]);
    build(&input, &b, &["--threads", "2"]);
    build(&input, &c, &["--seed", "7"]);
    let (ca, cb, cc) = (contents(&a), contents(&b), contents(&c));
    assert_eq!(ca.len(), 5 + 2 + 1);
    assert_eq!(ca, cb, "same seed, different thread counts: outputs differ");
    let name = "train-00000-of-00005";
    assert_ne!(
        ca[name], cc[name],
        "another seed should put other files in shard 0"
    );
}

#[test]
fn resume_rewrites_damaged_shards_and_keeps_good_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let input = synthetic_input(tmp.path(), false);
    let clean = tmp.path().join("clean");
    build(&input, &clean, &[]);
    let out = tmp.path().join("out");
    build(&input, &out, &[]);

    // A killed run: one shard never renamed (missing, its temporary left, as is one of the
    // manifest's), one cut short, one with a flipped byte (same size, only the CRC tells).
    fs::remove_file(shard(&out, "train-00001-of-00005")).unwrap();
    fs::write(out.join(".train-00001-of-00005.a1B2c3.tmp"), b"partial").unwrap();
    fs::write(out.join(".build-records.json.Zz9Yy8.tmp"), b"{").unwrap();
    let cut = shard(&out, "train-00002-of-00005");
    let len = fs::metadata(&cut).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&cut)
        .unwrap()
        .set_len(len - 100)
        .unwrap();
    let flipped = shard(&out, "validation-00001-of-00002");
    let mut bytes = fs::read(&flipped).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    fs::write(&flipped, bytes).unwrap();

    let good = [
        "train-00000-of-00005",
        "train-00003-of-00005",
        "train-00004-of-00005",
        "validation-00000-of-00002",
    ];
    let identity = |name: &str| {
        let m = fs::metadata(shard(&out, name)).unwrap();
        (m.ino(), m.mtime(), m.mtime_nsec())
    };
    let before: Vec<_> = good.iter().map(|n| identity(n)).collect();

    let resumed = build(&input, &out, &[]);
    let stdout = String::from_utf8_lossy(&resumed.stdout);
    let stderr = String::from_utf8_lossy(&resumed.stderr);
    assert!(
        stdout.contains("train: 48 images in 5 shards (2 written, 3 kept)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("validation: 12 images in 2 shards (1 written, 1 kept)"),
        "{stdout}"
    );
    assert!(
        stderr.contains("rewriting train-00002-of-00005"),
        "{stderr}"
    );
    assert!(
        stderr.contains("rewriting validation-00001-of-00002"),
        "{stderr}"
    );
    let after: Vec<_> = good.iter().map(|n| identity(n)).collect();
    assert_eq!(before, after, "good shards were rewritten");
    assert_eq!(
        contents(&clean),
        contents(&out),
        "resumed output differs from a clean run"
    );
}

#[test]
fn other_configuration_is_refused_unless_forced() {
    let tmp = tempfile::tempdir().unwrap();
    let input = synthetic_input(tmp.path(), false);
    let out = tmp.path().join("out");
    build(&input, &out, &[]);
    let err = build_failing(
        &input,
        &out,
        &["--train-shards", "3", "--validation-shards", "2"],
    );
    assert!(
        err.contains("another configuration (train shards: 5 there, 3 here)")
            && err.contains("--force"),
        "{err}"
    );
    let err = build_failing(
        &input,
        &out,
        &[
            "--train-shards",
            "5",
            "--validation-shards",
            "2",
            "--seed",
            "1",
        ],
    );
    assert!(err.contains("seed: 12345 there, 1 here"), "{err}");

    run(Command::new(BUILD_RECORDS)
        .args([
            "--input",
            input.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
        ])
        .args(["--train-shards", "3", "--validation-shards", "2", "--force"]));
    let names: Vec<String> = contents(&out).into_keys().collect();
    assert!(names.iter().all(|n| !n.ends_with("-of-00005")), "{names:?}");
    assert_eq!(names.iter().filter(|n| n.ends_with("-of-00003")).count(), 3);

    // Shard files without a manifest are someone else's too.
    let foreign = tmp.path().join("foreign");
    fs::create_dir(&foreign).unwrap();
    fs::write(foreign.join("train-00000-of-00001"), b"").unwrap();
    let err = build_failing(&input, &foreign, &[]);
    assert!(err.contains("no build-records.json"), "{err}");
}

#[test]
fn an_empty_synset_folder_stays_a_class_and_is_named() {
    // Dropped, it would move every later synset's label down by one.
    let tmp = tempfile::tempdir().unwrap();
    let input = synthetic_input(tmp.path(), false);
    fs::create_dir_all(input.join("train/n00000001")).unwrap();
    let out = tmp.path().join("out");
    let o = build(&input, &out, &[]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("5 classes"), "{stdout}");
    assert!(
        stdout.contains("train/n00000001") && stdout.contains("holds no images"),
        "{stdout}"
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(out.join("build-records.json")).unwrap()).unwrap();
    let synsets = manifest["config"]["synsets"].as_array().unwrap();
    assert_eq!(synsets.len(), 5, "{manifest}");
    assert_eq!(synsets[0], "n00000001", "{manifest}");
}

#[test]
fn bad_inputs_give_a_one_line_error() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");

    let err = build_failing(&tmp.path().join("nope"), &out, &[]);
    assert!(err.contains("nope does not exist"), "{err}");

    let empty = tmp.path().join("empty");
    fs::create_dir_all(empty.join("train/n1")).unwrap();
    fs::create_dir_all(empty.join("validation")).unwrap();
    let err = build_failing(&empty, &out, &[]);
    assert!(err.contains("train: holds no images"), "{err}");

    let input = synthetic_input(tmp.path(), false);
    let no_val = tmp.path().join("no_val");
    fs::create_dir_all(&no_val).unwrap();
    fs::rename(input.join("train"), no_val.join("train")).unwrap();
    let err = build_failing(&no_val, &out, &[]);
    assert!(err.contains("validation: no such folder"), "{err}");

    // A validation synset that train lacks is named.
    let extra = input.join("validation/n09999999");
    fs::create_dir_all(&extra).unwrap();
    fs::copy(
        no_val.join("train/n01000000/n01000000_0.JPEG"),
        extra.join("x.JPEG"),
    )
    .unwrap();
    fs::rename(no_val.join("train"), input.join("train")).unwrap();
    let err = build_failing(&input, &out, &[]);
    assert!(
        err.contains("1 synset folder(s) not in the label list from") && err.contains("n09999999"),
        "{err}"
    );
    fs::remove_dir_all(&extra).unwrap();

    // A synsets file that lacks a synset of the tree.
    let synsets = tmp.path().join("synsets.txt");
    fs::write(&synsets, "n01000000\nn01007919\n").unwrap();
    let err = build_failing(&input, &out, &["--synsets", synsets.to_str().unwrap()]);
    assert!(
        err.contains("n01015838") && err.contains("synsets.txt"),
        "{err}"
    );

    // An unreadable file (a dangling link; permissions do not stop root).
    let link = input.join("train/n01000000/broken.JPEG");
    std::os::unix::fs::symlink(tmp.path().join("gone"), &link).unwrap();
    let err = build_failing(&input, &out, &[]);
    assert!(
        err.contains("broken.JPEG") && err.contains("No such file"),
        "{err}"
    );
    fs::remove_file(&link).unwrap();

    // A bad box file names its line.
    let boxes = tmp.path().join("boxes.csv");
    fs::write(&boxes, "a.JPEG,0,0,1,1\nb.JPEG,0.5,0.5,0.2,0.9\n").unwrap();
    let err = build_failing(&input, &out, &["--bboxes", boxes.to_str().unwrap()]);
    assert!(err.contains("boxes.csv:2:"), "{err}");

    // None of the failures left shards behind.
    assert!(!out.exists() || contents(&out).keys().all(|n| !n.contains("-of-")));
}
