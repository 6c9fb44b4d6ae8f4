//! Bad input in a whole pipeline: an out-of-range label stops it with the record's file, byte
//! offset, stored label and class range; an image above the pixel limit is skipped and named.

mod common;

use common::*;
use dawnrun_data::{EvalConfig, EvalPipeline, PipelineError, TrainPipeline};

fn eval(files: Vec<std::path::PathBuf>, max_image_pixels: u64, num_classes: u32) -> EvalConfig {
    EvalConfig {
        files,
        batch_size: 4,
        image_px: 16,
        crop: dawnrun_data::EvalCrop::Central { fraction: 0.875 },
        decode_threads: 2,
        rect: false,
        max_image_pixels,
        num_classes,
    }
}

#[test]
fn a_label_outside_the_classes_stops_evaluation_naming_the_record() {
    let dir = tempfile::tempdir().unwrap();
    let (files, written) = write_shards(dir.path(), 2, 6, &[]);
    // Labels run 1..=5; a 3-class network meets label 4 or 5 first in file order.
    let first = written.iter().find(|w| w.label > 3).unwrap();
    let results: Vec<_> = EvalPipeline::start(eval(files, u64::MAX, 3))
        .unwrap()
        .collect();
    let e = results.last().unwrap().as_ref().unwrap_err();
    let PipelineError::InStage { source, .. } = e else {
        panic!("{e:?}")
    };
    assert!(
        matches!(**source, PipelineError::Label { label, num_classes: 3, .. } if label == first.label)
    );
    let message = chain(e);
    let want = format!(
        "decode stage: {}: byte {}: label {} (as stored, 1-based) outside the network's classes 1..=3",
        first.file.display(),
        first.offset,
        first.label
    );
    assert!(message.starts_with(&want), "{message}\nwant {want}");
    // The cause is printed once.
    assert_eq!(message.matches("label ").count(), 1, "{message}");
}

#[test]
fn a_label_outside_the_classes_stops_training_too() {
    let dir = tempfile::tempdir().unwrap();
    let (files, _) = write_shards(dir.path(), 2, 6, &[]);
    let config = dawnrun_data::TrainConfig {
        num_classes: 2,
        ..train_config(files, 0, 1, 3)
    };
    let mut pipeline = TrainPipeline::start(config).unwrap();
    let e = (0..3).find_map(|_| pipeline.next().err()).unwrap();
    assert!(
        chain(&e).contains("outside the network's classes 1..=2"),
        "{e}"
    );
    let zero = dawnrun_data::TrainConfig {
        num_classes: 0,
        ..train_config(vec!["x".into()], 0, 1, 3)
    };
    assert!(matches!(
        TrainPipeline::start(zero),
        Err(PipelineError::Config { .. })
    ));
}

#[test]
fn images_above_the_pixel_limit_are_skipped_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let (files, written) = write_shards(dir.path(), 1, 5, &[]);
    // Sizes 48x36, 36x48, 64x40, 40x40, 57x43: a limit of 1728 keeps the first two and the 4th.
    let mut pipeline = EvalPipeline::start(eval(files, 48 * 36, CLASSES as u32)).unwrap();
    let n: usize = pipeline.by_ref().map(|b| b.unwrap().n).sum();
    assert_eq!(n, 3);
    let skipped = pipeline.stats().skipped;
    let named: Vec<_> = skipped.iter().map(|s| (&s.file, s.offset)).collect();
    assert_eq!(
        named,
        [2, 4]
            .iter()
            .map(|&i| (&written[i].file, written[i].offset))
            .collect::<Vec<_>>()
    );
    assert!(
        skipped[0].cause.contains("above the limit of 1728"),
        "{}",
        skipped[0].cause
    );
}
