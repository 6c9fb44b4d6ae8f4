//! The `inspect-records` binary, run for real in a fresh temp dir per test.

use std::path::Path;
use std::process::{Command, Output};

use dawnrun_records::framing::{framed_len, RecordWriter, HEADER_LEN};
use dawnrun_records::imagenet::ImageRecord;
use dawnrun_records::index::{default_index_path, RecordIndex};

fn inspect(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_inspect-records"));
    for a in args {
        cmd.arg(a);
    }
    cmd.output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn image(i: i64) -> ImageRecord {
    ImageRecord {
        encoded: (0..300).map(|b| (b * i) as u8).collect(),
        height: 48,
        width: 64,
        label: 7 + i,
        synset: "n01440764".into(),
        text: "tench".into(),
        filename: format!("n01440764_{i}.JPEG"),
        bboxes: vec![],
    }
}

/// Writes `n` ImageRecords; returns their data lengths.
fn write_images(path: &Path, n: i64) -> Vec<u64> {
    let mut w = RecordWriter::create(path).unwrap();
    let lens = (0..n)
        .map(|i| {
            let data = image(i).to_bytes();
            w.write(&data).unwrap();
            data.len() as u64
        })
        .collect();
    w.finish().unwrap();
    lens
}

#[test]
fn damaged_file_exits_2_naming_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good");
    let bad = dir.path().join("bad");
    write_images(&good, 3);
    let lens = write_images(&bad, 3);
    let second = framed_len(lens[0]);
    let mut bytes = std::fs::read(&bad).unwrap();
    bytes[(second + HEADER_LEN + 10) as usize] ^= 0x40;
    std::fs::write(&bad, &bytes).unwrap();

    let out = inspect(&[&good, &bad]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{}: byte {second}: record data CRC mismatch",
            bad.display()
        )),
        "{stderr}"
    );
    assert!(stderr.contains("1 of 2 files damaged"), "{stderr}");
    // The good file was still checked and reported.
    assert!(text(&out.stdout).contains(&format!("{}: 3 records", good.display())));
}

#[test]
fn truncated_and_missing_files_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let cut = dir.path().join("cut");
    let lens = write_images(&cut, 2);
    let bytes = std::fs::read(&cut).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() - 3]).unwrap();
    let out = inspect(&[&cut]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    let second = framed_len(lens[0]);
    assert!(
        stderr.contains(&format!(
            "{}: byte {second}: truncated record",
            cut.display()
        )),
        "{stderr}"
    );

    let missing = dir.path().join("missing");
    let out = inspect(&[&missing]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("missing: cannot open"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn counts_shows_and_indexes() {
    let dir = tempfile::tempdir().unwrap();
    let shard = dir.path().join("train-00000-of-00001");
    let lens = write_images(&shard, 4);
    let total: u64 = lens.iter().map(|&l| framed_len(l)).sum();

    let out = inspect(&[&"--show", &"2", &"--index", &shard]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(&format!("{}: 4 records, {total} bytes", shard.display())),
        "{stdout}"
    );
    assert!(stdout.contains("record 1 at byte"), "{stdout}");
    assert!(!stdout.contains("record 2 at byte"), "{stdout}");
    assert!(stdout.contains("image/class/label: int64 [8]"), "{stdout}");
    assert!(
        stdout.contains("image/class/synset: bytes [\"n01440764\"]"),
        "{stdout}"
    );
    assert!(
        stdout.contains("image/encoded: bytes [<300 bytes: 00 01 02"),
        "{stdout}"
    );
    assert!(
        stdout.contains("image/object/bbox/xmin: float[0] []"),
        "{stdout}"
    );

    let index = RecordIndex::load(default_index_path(&shard), &shard).unwrap();
    assert_eq!(index, RecordIndex::build(&shard).unwrap());

    let idx_dir = dir.path().join("idx");
    let out = inspect(&[&"--index-dir", &idx_dir, &shard]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let idx = idx_dir.join("train-00000-of-00001.idx");
    assert_eq!(RecordIndex::load(&idx, &shard).unwrap().len(), 4);
}
