//! Test data: small TFRecord shards of JPEGs written with dawnrun-records and `image`, in a
//! fresh temp dir per test. Each class has its own red level (constant over the image, so it
//! survives any crop or flip) while green and blue are gradients (so crops and flips change the
//! pixels and determinism tests can fail).
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use dawnrun_data::Batch;
use dawnrun_records::{ImageRecord, RecordWriter};
use image::{ImageEncoder, RgbImage};

pub const CLASSES: i64 = 5;

/// Red level of 0-based class `c`.
pub fn red_of(class: i64) -> u8 {
    (20 + 50 * class) as u8
}

/// The class whose red level is nearest the image's mean red.
pub fn class_from_pixels(pixels: &[u8]) -> i32 {
    let reds: Vec<f64> = pixels.chunks_exact(3).map(|p| f64::from(p[0])).collect();
    let mean = reds.iter().sum::<f64>() / reds.len() as f64;
    (0..CLASSES)
        .min_by_key(|&c| (mean - f64::from(red_of(c))).abs() as i64)
        .unwrap() as i32
}

pub fn jpeg(width: u32, height: u32, class: i64) -> Vec<u8> {
    let img = RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([
            red_of(class),
            (x * 255 / width) as u8,
            (y * 255 / height) as u8,
        ])
    });
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 92)
        .write_image(img.as_raw(), width, height, image::ExtendedColorType::Rgb8)
        .unwrap();
    out
}

/// One written record: where it is and what it holds.
#[derive(Debug, Clone)]
pub struct Written {
    pub file: PathBuf,
    pub offset: u64,
    pub filename: String,
    /// 1-based, as stored.
    pub label: i64,
}

/// Writes `files` shards of `per_file` images each; `corrupt` lists (file, record) whose JPEG
/// bytes are replaced by garbage (the record itself stays well-framed).
pub fn write_shards(
    dir: &Path,
    files: usize,
    per_file: usize,
    corrupt: &[(usize, usize)],
) -> (Vec<PathBuf>, Vec<Written>) {
    let sizes = [(48, 36), (36, 48), (64, 40), (40, 40), (57, 43)];
    let mut paths = Vec::new();
    let mut written = Vec::new();
    for f in 0..files {
        let path = dir.join(dawnrun_records::shard_set::shard_name("train", f, files));
        let mut writer = RecordWriter::create(&path).unwrap();
        for i in 0..per_file {
            let n = f * per_file + i;
            let class = (n as i64 * 7 + 3) % CLASSES;
            let (w, h) = sizes[n % sizes.len()];
            let encoded = if corrupt.contains(&(f, i)) {
                b"definitely not a JPEG".to_vec()
            } else {
                jpeg(w, h, class)
            };
            let filename = format!("img-{f}-{i}.JPEG");
            let record = ImageRecord {
                encoded,
                height: i64::from(h),
                width: i64::from(w),
                label: class + 1,
                synset: format!("n{class:08}"),
                filename: filename.clone(),
                ..Default::default()
            };
            let offset = writer.write(&record.to_bytes()).unwrap();
            written.push(Written {
                file: path.clone(),
                offset,
                filename,
                label: class + 1,
            });
        }
        writer.finish().unwrap();
        paths.push(path);
    }
    (paths, written)
}

/// Every image's pixels say the same class as its label.
pub fn assert_labels_match_pixels(batch: &Batch) {
    for i in 0..batch.n {
        assert_eq!(
            class_from_pixels(batch.image(i)),
            batch.labels[i],
            "image {i} of the batch"
        );
    }
}

pub fn train_config(
    files: Vec<PathBuf>,
    rank: u64,
    world_size: u64,
    batches_per_epoch: u64,
) -> dawnrun_data::TrainConfig {
    dawnrun_data::TrainConfig {
        files,
        rank,
        world_size,
        batch_size: 4,
        image_px: 24,
        min_scale: 0.25,
        seed: 42,
        start_epoch: 0,
        skip_batches: 0,
        batches_per_epoch,
        decode_threads: 2,
        prefetch_batches: 2,
        shuffle_buffer: 8,
        max_image_pixels: dawnrun_data::DEFAULT_MAX_IMAGE_PIXELS,
        num_classes: CLASSES as u32,
    }
}

/// The venv Python with TensorFlow and PIL: `$DAWNRUN_PYTHON`, else
/// `<workspace>/.deps/venv/bin/python`. Missing Python fails the test: the comparison with
/// TensorFlow is never skipped silently.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("DAWNRUN_PYTHON") {
        return PathBuf::from(p);
    }
    let fallback = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.deps/venv/bin/python");
    assert!(
        fallback.exists(),
        "no Python with TensorFlow: set DAWNRUN_PYTHON or run `make setup` (looked for {})",
        fallback.display()
    );
    fallback
}

/// Runs `tests/py/<script>` with `args`, asserts success and parses its stdout as JSON.
pub fn run_py(script: &str, args: &[&std::ffi::OsStr]) -> serde_json::Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/py")
        .join(script);
    let out = std::process::Command::new(python())
        .arg(&path)
        .args(args)
        .env("TF_CPP_MIN_LOG_LEVEL", "3")
        .output()
        .unwrap_or_else(|e| panic!("cannot run python {script}: {e} (run `make setup`)"));
    assert!(
        out.status.success(),
        "{script} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("{script}: stdout is not JSON ({e}): {stdout}"))
}

/// Decodes `jpeg` the way a decode worker does (the whole image resized to 16x16) with the
/// given pixel limit.
pub fn worker_decode(jpeg: &[u8], max_pixels: u64) -> Result<(), dawnrun_data::DecodeError> {
    let mut pre = dawnrun_data::Preprocessor::new().with_max_pixels(max_pixels);
    let mut out = vec![0u8; 16 * 16 * 3];
    pre.run(jpeg, 16, 16, &mut out, |w, h| dawnrun_data::Placement {
        crop: dawnrun_data::CropBox::full(w, h),
        flip: false,
    })
}

/// `e` and its sources joined with ": ", as the binaries print an error (anyhow's `{:#}`).
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Names of this process's threads that belong to a pipeline (count them only in a test binary
/// of one test: other tests' pipelines would show up too).
pub fn pipeline_threads() -> Vec<String> {
    let mut names = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let comm = std::fs::read_to_string(task.unwrap().path().join("comm")).unwrap_or_default();
        if comm.starts_with("dawnrun-") {
            names.push(comm.trim().to_string());
        }
    }
    names
}
