//! make-synthetic through the real binary, each test in a fresh temporary folder.

use image::GenericImageView;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const MAKE_SYNTHETIC: &str = env!("CARGO_BIN_EXE_make-synthetic");

fn make(out: &Path, extra: &[&str]) -> Output {
    let output = Command::new(MAKE_SYNTHETIC)
        .args(["--out", out.to_str().unwrap()])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

const SMALL: [&str; 8] = [
    "--classes",
    "3",
    "--train-per-class",
    "4",
    "--val-per-class",
    "2",
    "--sizes",
    "32,64",
];

/// Every file under `dir`, by path relative to it, with its bytes.
fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                files.insert(
                    p.strip_prefix(dir).unwrap().to_path_buf(),
                    fs::read(&p).unwrap(),
                );
            }
        }
    }
    files
}

#[test]
fn writes_the_imagefolder_layout_with_synsets_and_metadata() {
    let tmp = tempfile::tempdir().unwrap();
    make(tmp.path(), &SMALL);
    let synsets: Vec<String> = fs::read_to_string(tmp.path().join("synsets.txt"))
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(synsets.len(), 3);
    let mut sorted = synsets.clone();
    sorted.sort();
    assert_eq!(synsets, sorted);
    let metadata = fs::read_to_string(tmp.path().join("metadata.txt")).unwrap();
    for (line, synset) in metadata.lines().zip(&synsets) {
        let (s, text) = line.split_once('\t').unwrap();
        assert_eq!(s, synset);
        assert!(!text.is_empty());
    }
    for size in [32u32, 64] {
        for (split, per_class) in [("train", 4), ("validation", 2)] {
            for synset in &synsets {
                let dir = tmp.path().join(size.to_string()).join(split).join(synset);
                for i in 0..per_class {
                    let img = image::open(dir.join(format!("{synset}_{i}.JPEG"))).unwrap();
                    let (w, h) = img.dimensions();
                    assert_eq!(w.min(h), size, "{split}/{synset}_{i}");
                }
                assert_eq!(fs::read_dir(&dir).unwrap().count(), per_class);
            }
        }
    }
}

#[test]
fn both_sizes_show_the_same_picture() {
    let tmp = tempfile::tempdir().unwrap();
    make(tmp.path(), &SMALL);
    let synset = fs::read_to_string(tmp.path().join("synsets.txt"))
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .to_string();
    for i in 0..4 {
        let rel = format!("train/{synset}/{synset}_{i}.JPEG");
        let small = image::open(tmp.path().join("32").join(&rel))
            .unwrap()
            .to_rgb8();
        let large = image::open(tmp.path().join("64").join(&rel))
            .unwrap()
            .to_rgb8();
        assert_eq!(
            (large.width() as f32 / small.width() as f32 * 10.0).round(),
            20.0
        );
        let down = image::imageops::resize(
            &large,
            small.width(),
            small.height(),
            image::imageops::FilterType::Triangle,
        );
        let diff: f64 = down
            .as_raw()
            .iter()
            .zip(small.as_raw())
            .map(|(a, b)| f64::from(a.abs_diff(*b)))
            .sum::<f64>()
            / small.as_raw().len() as f64;
        assert!(diff < 12.0, "{rel}: mean abs difference {diff}");
        // And another image is really another picture.
        let other = image::open(
            tmp.path()
                .join("32")
                .join(format!("train/{synset}/{synset}_{}.JPEG", (i + 1) % 4)),
        )
        .unwrap()
        .to_rgb8();
        if other.dimensions() == small.dimensions() {
            assert_ne!(other.as_raw(), small.as_raw());
        }
    }
}

#[test]
fn same_seed_same_bytes_other_seed_other_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        tmp.path().join("a"),
        tmp.path().join("b"),
        tmp.path().join("c"),
    );
    make(&a, &SMALL);
    make(&b, &SMALL);
    make(&c, &[&SMALL[..], &["--seed", "5"]].concat());
    let (ta, tb, tc) = (tree(&a), tree(&b), tree(&c));
    assert_eq!(ta, tb);
    assert_eq!(ta.keys().collect::<Vec<_>>(), tc.keys().collect::<Vec<_>>());
    assert_ne!(ta, tc);
}

#[test]
fn odd_files_are_a_png_a_cmyk_jpeg_a_cut_jpeg_and_text() {
    let tmp = tempfile::tempdir().unwrap();
    make(tmp.path(), &[&SMALL[..], &["--odd-files"]].concat());
    let synset = fs::read_to_string(tmp.path().join("synsets.txt"))
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .to_string();
    let dir = tmp.path().join("32/train").join(&synset);
    let png = fs::read(dir.join(format!("{synset}_odd_png.JPEG"))).unwrap();
    assert_eq!(image::guess_format(&png).unwrap(), image::ImageFormat::Png);
    let cmyk = fs::read(dir.join(format!("{synset}_odd_cmyk.JPEG"))).unwrap();
    // SOF0 with 4 components.
    let sof = cmyk.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
    assert_eq!(cmyk[sof + 9], 4);
    assert!(image::load_from_memory(&cmyk).is_ok());
    let cut = fs::read(dir.join(format!("{synset}_odd_cut.JPEG"))).unwrap();
    // Cut inside its image data: a scan has started and no end-of-image marker follows.
    let sos = cut.windows(2).position(|w| w == [0xFF, 0xDA]).unwrap();
    let scan_header = usize::from(u16::from_be_bytes([cut[sos + 2], cut[sos + 3]]));
    assert!(
        cut.len() > sos + 2 + scan_header,
        "cut inside the scan header"
    );
    assert!(!cut[sos..].windows(2).any(|w| w == [0xFF, 0xD9]));
    let text = fs::read(dir.join(format!("{synset}_odd_text.JPEG"))).unwrap();
    assert!(image::guess_format(&text).is_err());
}

#[test]
fn bad_arguments_give_a_one_line_error() {
    let tmp = tempfile::tempdir().unwrap();
    for args in [
        &["--classes", "0"][..],
        &["--classes", "500"],
        &["--sizes", "8"],
        &["--train-per-class", "0"],
    ] {
        let out = Command::new(MAKE_SYNTHETIC)
            .args(["--out", tmp.path().to_str().unwrap()])
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.starts_with("error: "), "{stderr}");
    }
}
