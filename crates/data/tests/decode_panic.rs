//! A panic in the decode path becomes one more skipped image naming its shard and offset, and
//! `panic_is_caught()` tells a process-wide panic hook (the trainer's aborts the MPI job) that
//! this panic will be caught. Alone in its test binary: it installs a panic hook.

mod common;

use std::sync::Mutex;

use dawnrun_data::{panic_is_caught, EvalConfig, EvalPipeline};
use dawnrun_records::{ImageRecord, RecordWriter};

/// What the hook saw: (thread name, panic_is_caught() inside the hook).
static SEEN: Mutex<Vec<(String, bool)>> = Mutex::new(Vec::new());

const MARK: &[u8] = b"dawnrun: panic here";

/// `jpeg` with a COM segment holding `MARK` after SOI: still a valid JPEG.
fn marked(jpeg: &[u8]) -> Vec<u8> {
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xFE]);
    out.extend_from_slice(&(MARK.len() as u16 + 2).to_be_bytes());
    out.extend_from_slice(MARK);
    out.extend_from_slice(&jpeg[2..]);
    out
}

#[test]
fn an_injected_decoder_panic_is_a_counted_skip_and_the_hook_sees_it_caught() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("validation-00000-of-00001");
    let mut writer = RecordWriter::create(&path).unwrap();
    let mut offsets = Vec::new();
    for i in 0..6i64 {
        let plain = common::jpeg(40, 32, i % 5);
        let encoded = if i == 3 { marked(&plain) } else { plain };
        let record = ImageRecord {
            encoded,
            height: 32,
            width: 40,
            label: i % 5 + 1,
            filename: format!("img{i}.JPEG"),
            ..Default::default()
        };
        offsets.push(writer.write(&record.to_bytes()).unwrap());
    }
    writer.finish().unwrap();
    // The marked JPEG decodes normally when the hook is off.
    assert!(common::worker_decode(&marked(&common::jpeg(40, 32, 0)), u64::MAX).is_ok());

    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {
        let name = std::thread::current().name().unwrap_or("").to_string();
        SEEN.lock().unwrap().push((name, panic_is_caught()));
    }));
    dawnrun_data::decode::arm_decode_panic(Some(MARK));
    let mut pipeline = EvalPipeline::start(EvalConfig {
        files: vec![path.clone()],
        batch_size: 4,
        image_px: 16,
        crop: dawnrun_data::EvalCrop::Central { fraction: 0.875 },
        decode_threads: 2,
        rect: false,
        max_image_pixels: dawnrun_data::DEFAULT_MAX_IMAGE_PIXELS,
        num_classes: 5,
    })
    .unwrap();
    let n: usize = pipeline.by_ref().map(|b| b.unwrap().n).sum();
    let stats = pipeline.stats();
    dawnrun_data::decode::arm_decode_panic(None);
    // A panic outside a decode worker is not caught by one.
    let outside = std::panic::catch_unwind(|| panic!("on the test thread"));
    std::panic::set_hook(previous);

    assert!(outside.is_err());
    assert_eq!(n, 5);
    assert_eq!(stats.skipped.len(), 1);
    let skipped = &stats.skipped[0];
    assert_eq!((&skipped.file, skipped.offset), (&path, offsets[3]));
    assert!(
        skipped
            .cause
            .contains("decoder panicked: injected decoder panic"),
        "{}",
        skipped.cause
    );
    let seen = SEEN.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen[0].0.starts_with("dawnrun-dec-"), "{seen:?}");
    assert!(seen[0].1, "inside the worker's catch_unwind: {seen:?}");
    assert!(!seen[1].1, "on the test thread: {seen:?}");
    assert!(!panic_is_caught());
}
