//! The pipeline end to end on shards written here: full, labelled, deterministic batches for
//! two ranks; corrupt JPEGs skipped and named; a damaged frame stopped with file and offset;
//! prompt shutdown; evaluation covering every record once.

mod common;

use std::collections::HashSet;
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use dawnrun_data::{Batch, EvalConfig, EvalPipeline, TrainPipeline};
use dawnrun_records::shard_set::count_records;

fn eval_config(
    files: Vec<std::path::PathBuf>,
    batch_size: usize,
    image_px: u32,
    crop_fraction: f64,
    decode_threads: usize,
    rect: bool,
) -> EvalConfig {
    EvalConfig {
        files,
        batch_size,
        image_px,
        crop: dawnrun_data::EvalCrop::Central {
            fraction: crop_fraction,
        },
        decode_threads,
        rect,
        max_image_pixels: dawnrun_data::DEFAULT_MAX_IMAGE_PIXELS,
        num_classes: CLASSES as u32,
    }
}

fn eval_all(config: EvalConfig) -> Vec<Batch> {
    EvalPipeline::start(config)
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn take(pipeline: &mut TrainPipeline, n: usize) -> Vec<Batch> {
    (0..n).map(|_| pipeline.next().unwrap()).collect()
}

#[test]
fn both_ranks_get_full_labelled_batches_for_several_epochs() {
    let dir = tempfile::tempdir().unwrap();
    let (files, written) = write_shards(dir.path(), 4, 12, &[]);
    assert_eq!(count_records(&files).unwrap(), written.len() as u64);
    let batches_per_epoch = 48 / (4 * 2);
    for rank in 0..2 {
        let mut pipeline =
            TrainPipeline::start(train_config(files.clone(), rank, 2, batches_per_epoch)).unwrap();
        for batch in take(&mut pipeline, 3 * batches_per_epoch as usize) {
            assert_eq!((batch.n, batch.height, batch.width), (4, 24, 24));
            assert_eq!(batch.images.len(), 4 * 24 * 24 * 3);
            assert_eq!(batch.labels.len(), 4);
            assert!(batch.filenames.is_none());
            assert_labels_match_pixels(&batch);
        }
        // The batcher may already have decoded the prefetched batches too.
        let stats = pipeline.stats();
        assert!(
            stats.images_decoded >= 3 * 6 * 4,
            "{}",
            stats.images_decoded
        );
        assert!(stats.skipped.is_empty());
    }
}

#[test]
fn fewer_files_than_ranks_interleave_records() {
    let dir = tempfile::tempdir().unwrap();
    let (files, _) = write_shards(dir.path(), 1, 20, &[]);
    for rank in 0..3 {
        let mut pipeline = TrainPipeline::start(train_config(files.clone(), rank, 3, 1)).unwrap();
        for batch in take(&mut pipeline, 4) {
            assert_eq!(batch.n, 4);
            assert_labels_match_pixels(&batch);
        }
    }
}

#[test]
fn same_seed_gives_identical_batches_whatever_the_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    let (files, _) = write_shards(dir.path(), 4, 10, &[]);
    for rank in 0..2 {
        let config = train_config(files.clone(), rank, 2, 5);
        let a = take(&mut TrainPipeline::start(config.clone()).unwrap(), 12);
        let b = take(
            &mut TrainPipeline::start(dawnrun_data::TrainConfig {
                decode_threads: 3,
                ..config.clone()
            })
            .unwrap(),
            12,
        );
        assert_eq!(a, b, "rank {rank}: two runs differ");
        let other = take(
            &mut TrainPipeline::start(dawnrun_data::TrainConfig {
                seed: 43,
                ..config.clone()
            })
            .unwrap(),
            12,
        );
        assert_ne!(a, other, "rank {rank}: the seed changes nothing");
        assert_ne!(a[..5], a[5..10], "rank {rank}: epochs 0 and 1 are the same");
    }
}

#[test]
fn skip_batches_equals_dropping_the_first_batches() {
    let dir = tempfile::tempdir().unwrap();
    let (files, _) = write_shards(dir.path(), 4, 10, &[]);
    let config = train_config(files, 1, 2, 5);
    let all = take(&mut TrainPipeline::start(config.clone()).unwrap(), 9);
    for k in 1..5u64 {
        let resumed = dawnrun_data::TrainConfig {
            skip_batches: k,
            ..config.clone()
        };
        let rest = take(&mut TrainPipeline::start(resumed).unwrap(), 9 - k as usize);
        assert_eq!(rest, all[k as usize..], "skip {k}");
    }
    // Resuming at a later epoch.
    let later = dawnrun_data::TrainConfig {
        start_epoch: 1,
        skip_batches: 2,
        ..config.clone()
    };
    assert_eq!(
        take(&mut TrainPipeline::start(later).unwrap(), 2),
        all[7..9]
    );
}

#[test]
fn corrupt_jpeg_is_skipped_counted_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let (files, written) = write_shards(dir.path(), 2, 10, &[(1, 3)]);
    let bad = written
        .iter()
        .find(|w| w.filename == "img-1-3.JPEG")
        .unwrap();
    // One rank, 20 records, batch 4: 5 batches per epoch, one image short without a spare.
    let mut pipeline = TrainPipeline::start(train_config(files, 0, 1, 5)).unwrap();
    for batch in take(&mut pipeline, 5) {
        assert_eq!(batch.n, 4);
        assert_labels_match_pixels(&batch);
    }
    // Prefetching may already have reached the next epoch, which meets the bad JPEG again.
    let stats = pipeline.stats();
    assert!(matches!(stats.skipped.len(), 1 | 2), "{:?}", stats.skipped);
    for skipped in &stats.skipped {
        assert_eq!((&skipped.file, skipped.offset), (&bad.file, bad.offset));
        assert!(skipped.cause.contains("JPEG"), "{}", skipped.cause);
    }
    assert!(stats.images_decoded >= 20);
    // What the consumer is told covers the batches it took, not the ones prefetched past them.
    assert_eq!(pipeline.skipped_since(0).len(), 1);
    // The next epoch meets it again and still fills its batches.
    for batch in take(&mut pipeline, 5) {
        assert_eq!(batch.n, 4);
    }
    assert!(pipeline.stats().skipped.len() >= 2);
    assert_eq!(pipeline.skipped_since(0).len(), 2);
    assert_eq!(pipeline.skipped_since(1).len(), 1);
}

#[test]
fn records_where_nothing_decodes_stop_the_pipeline_naming_the_last_one() {
    // Every JPEG garbage: without a limit each skip asks for a spare, which is skipped too,
    // without end (and with a growing list of skipped images).
    let dir = tempfile::tempdir().unwrap();
    let all: Vec<(usize, usize)> = (0..2).flat_map(|f| (0..10).map(move |i| (f, i))).collect();
    let (files, written) = write_shards(dir.path(), 2, 10, &all);
    returns("a pipeline over undecodable records", move || {
        // One rank, batch 4, 5 batches: the epoch trains on 20 images.
        let mut pipeline = TrainPipeline::start(train_config(files, 0, 1, 5)).unwrap();
        let error = pipeline.next().expect_err("no image decodes");
        let message = chain(&error);
        assert!(
            message.contains("epoch 0: 21 undecodable JPEGs skipped"),
            "{message}"
        );
        assert!(message.contains("the epoch's 20 images"), "{message}");
        assert!(
            written.iter().any(|w| message.contains(&format!(
                "{}: record at byte {}",
                w.file.display(),
                w.offset
            ))),
            "{message}"
        );
        assert!(message.contains("build-records"), "{message}");
        assert!(pipeline.next().is_err(), "a stopped pipeline stays stopped");
        assert!(pipeline.stats().skipped.len() <= 20);
    });
}

#[test]
fn an_epoch_may_skip_up_to_as_many_images_as_it_trains_on() {
    // 20 records, the even ones garbage, batch 2 for 5 batches: the epoch trains on 10 images
    // and skips all 10 bad records to find them, exactly the limit (one more stops it: the test
    // above).
    let dir = tempfile::tempdir().unwrap();
    let bad: Vec<(usize, usize)> = (0..2)
        .flat_map(|f| (0..10).filter(|i| i % 2 == 0).map(move |i| (f, i)))
        .collect();
    let (files, _) = write_shards(dir.path(), 2, 10, &bad);
    let config = dawnrun_data::TrainConfig {
        batch_size: 2,
        ..train_config(files, 0, 1, 5)
    };
    let mut pipeline = TrainPipeline::start(config).unwrap();
    for batch in take(&mut pipeline, 5) {
        assert_eq!(batch.n, 2);
        assert_labels_match_pixels(&batch);
    }
    assert_eq!(pipeline.skipped_since(0).len(), 10);
}

#[test]
fn skipped_images_move_every_later_one_down_across_batches() {
    // The same shards twice, the second with three JPEGs replaced by garbage. An image's crop
    // and flip follow its key, not its place in a batch, so the damaged run must deliver the
    // clean run's images in the same order with exactly the damaged ones left out (then spares).
    let (clean_dir, bad_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (clean, _) = write_shards(clean_dir.path(), 2, 10, &[]);
    let (bad, _) = write_shards(bad_dir.path(), 2, 10, &[(0, 1), (0, 6), (1, 2)]);
    let images = |files| -> Vec<(i32, Vec<u8>)> {
        let config = dawnrun_data::TrainConfig {
            decode_threads: 3,
            ..train_config(files, 0, 1, 5)
        };
        let batches = take(&mut TrainPipeline::start(config).unwrap(), 5);
        batches
            .iter()
            .flat_map(|b| (0..b.n).map(move |i| (b.labels[i], b.image(i).to_vec())))
            .collect()
    };
    let (want, got) = (images(clean), images(bad));
    assert_eq!((want.len(), got.len()), (20, 20));
    let kept = &got[..17];
    let mut left_out = Vec::new();
    let mut next = 0;
    for (i, image) in want.iter().enumerate() {
        if next < kept.len() && *image == kept[next] {
            next += 1;
        } else {
            left_out.push(i);
        }
    }
    assert_eq!(
        next, 17,
        "the damaged run is not the clean one minus three images"
    );
    assert_eq!(left_out.len(), 3, "left out: {left_out:?}");
    assert!(
        left_out[0] < 12,
        "the shift never crossed a batch boundary: {left_out:?}"
    );
}

#[test]
fn damaged_record_frame_stops_with_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let (files, written) = write_shards(dir.path(), 2, 6, &[]);
    let target = &written[8]; // file 1, record 2
    let mut bytes = std::fs::read(&target.file).unwrap();
    bytes[target.offset as usize + 12 + 20] ^= 0x40; // inside the record's data
    std::fs::write(&target.file, bytes).unwrap();

    let mut pipeline = TrainPipeline::start(train_config(files, 0, 1, 3)).unwrap();
    let error = (0..10)
        .find_map(|_| pipeline.next().err())
        .expect("the damaged record must stop the pipeline");
    let message = chain(&error);
    assert!(
        message.contains(&target.file.display().to_string()),
        "{message}"
    );
    assert!(
        message.contains(&format!("byte {}", target.offset)),
        "{message}"
    );
    assert!(message.contains("CRC"), "{message}");
    assert!(pipeline.next().is_err(), "a stopped pipeline stays stopped");
}

#[test]
fn damaged_frame_inside_the_skipped_part_still_stops_the_resume() {
    let dir = tempfile::tempdir().unwrap();
    let (files, written) = write_shards(dir.path(), 2, 6, &[]);
    // Damage the first record of both files: whichever is read first fails at once, while the
    // reader is still skipping the batches delivered before the resume.
    for w in written.iter().filter(|w| w.offset == 0) {
        let mut bytes = std::fs::read(&w.file).unwrap();
        bytes[12 + 5] ^= 0x01;
        std::fs::write(&w.file, bytes).unwrap();
    }
    let config = dawnrun_data::TrainConfig {
        skip_batches: 2,
        ..train_config(files, 0, 1, 3)
    };
    returns("a resume over a damaged record", move || {
        let message = chain(&TrainPipeline::start(config).unwrap().next().unwrap_err());
        assert!(message.contains("byte 0"), "{message}");
    });
}

/// Runs `f` on another thread and fails if it has not returned within a minute: turns a hang
/// into a failure instead of a stuck test run. (Not a speed check: correct code takes ms.)
fn returns(what: &str, f: impl FnOnce() + Send + 'static) {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)));
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(Ok(())) => {}
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Err(_) => panic!("{what} hangs"),
    }
}

#[test]
fn dropping_the_pipeline_returns_at_any_point() {
    let dir = tempfile::tempdir().unwrap();
    let (files, _) = write_shards(dir.path(), 4, 25, &[]);
    let config = dawnrun_data::TrainConfig {
        shuffle_buffer: 64,
        ..train_config(files.clone(), 0, 1, 25)
    };
    for taken in [0usize, 1, 7, 30] {
        let config = config.clone();
        returns(&format!("drop after {taken} batches"), move || {
            let mut pipeline = TrainPipeline::start(config).unwrap();
            take(&mut pipeline, taken);
            // Let the queues fill so every thread is blocked on a full channel.
            std::thread::sleep(Duration::from_millis(50));
            drop(pipeline);
        });
    }
    returns("drop of an evaluation half-way", move || {
        let config = eval_config(files, 3, 16, 0.8, 2, false);
        let mut eval = EvalPipeline::start(config).unwrap();
        eval.next().unwrap().unwrap();
        drop(eval);
    });
}

#[test]
fn evaluation_covers_every_record_once_in_file_order() {
    let dir = tempfile::tempdir().unwrap();
    let (files, written) = write_shards(dir.path(), 3, 7, &[]);
    let config = eval_config(files, 4, 20, 0.8, 2, false);
    let batches = eval_all(config);
    assert_eq!(
        batches.iter().map(|b| b.n).collect::<Vec<_>>(),
        [4, 4, 4, 4, 4, 1],
        "last batch partial"
    );
    let mut names = Vec::new();
    for batch in &batches {
        assert_eq!((batch.height, batch.width), (20, 20));
        assert_labels_match_pixels(batch);
        names.extend(batch.filenames.clone().unwrap());
    }
    let expected: Vec<String> = written.iter().map(|w| w.filename.clone()).collect();
    assert_eq!(names, expected);
}

#[test]
fn rectangular_evaluation_groups_by_aspect_and_covers_every_record() {
    let dir = tempfile::tempdir().unwrap();
    let (files, written) = write_shards(dir.path(), 2, 9, &[]);
    let config = eval_config(files, 4, 16, 0.875, 2, true);
    let batches = eval_all(config);
    let mut names = HashSet::new();
    let mut aspects = Vec::new();
    for batch in &batches {
        assert_eq!(batch.height.min(batch.width), 16, "short side is image_px");
        assert_eq!(batch.images.len(), batch.n * batch.height * batch.width * 3);
        assert_labels_match_pixels(batch);
        aspects.push(batch.width as f64 / batch.height as f64);
        for name in batch.filenames.clone().unwrap() {
            assert!(names.insert(name), "a record came twice");
        }
    }
    assert_eq!(names.len(), written.len());
    assert!(
        aspects.windows(2).all(|w| w[0] <= w[1]),
        "batches sorted by aspect: {aspects:?}"
    );
    assert!(
        aspects.first() < aspects.last(),
        "shapes differ between batches: {aspects:?}"
    );
}

#[test]
fn evaluation_skips_and_names_a_corrupt_jpeg() {
    let dir = tempfile::tempdir().unwrap();
    let (files, written) = write_shards(dir.path(), 1, 6, &[(0, 2)]);
    let config = eval_config(files, 3, 12, 0.8, 1, false);
    let mut eval = EvalPipeline::start(config).unwrap();
    let sizes: Vec<usize> = eval.by_ref().map(|b| b.unwrap().n).collect();
    assert_eq!(sizes, [2, 3]);
    let skipped = eval.stats().skipped;
    assert_eq!(skipped.len(), 1);
    assert_eq!(
        (skipped[0].file.clone(), skipped[0].offset),
        (written[2].file.clone(), written[2].offset)
    );
}

#[test]
fn evaluation_drops_a_batch_whose_every_image_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let (files, written) = write_shards(dir.path(), 1, 7, &[(0, 2), (0, 3)]);
    for threads in [1, 3] {
        let config = eval_config(files.clone(), 2, 12, 0.8, threads, false);
        let mut eval = EvalPipeline::start(config).unwrap();
        let batches: Vec<Batch> = eval.by_ref().map(Result::unwrap).collect();
        let names: Vec<Vec<String>> = batches
            .iter()
            .map(|b| b.filenames.clone().unwrap())
            .collect();
        let want = |i: &[usize]| -> Vec<String> {
            i.iter().map(|&i| written[i].filename.clone()).collect()
        };
        assert_eq!(
            names,
            [want(&[0, 1]), want(&[4, 5]), want(&[6])],
            "{threads} threads"
        );
        for batch in &batches {
            assert_labels_match_pixels(batch);
        }
        assert_eq!(eval.stats().skipped.len(), 2);
    }
}

#[test]
fn bad_configs_are_refused_before_any_thread_starts() {
    let dir = tempfile::tempdir().unwrap();
    let (files, _) = write_shards(dir.path(), 2, 2, &[]);
    let good = train_config(files, 0, 2, 1);
    for (what, config) in [
        (
            "rank outside the world",
            dawnrun_data::TrainConfig {
                rank: 2,
                ..good.clone()
            },
        ),
        (
            "world size 0",
            dawnrun_data::TrainConfig {
                world_size: 0,
                ..good.clone()
            },
        ),
        (
            "no files",
            dawnrun_data::TrainConfig {
                files: vec![],
                ..good.clone()
            },
        ),
        (
            "skip past epoch",
            dawnrun_data::TrainConfig {
                skip_batches: 1,
                ..good.clone()
            },
        ),
        (
            "zero batch",
            dawnrun_data::TrainConfig {
                batch_size: 0,
                ..good.clone()
            },
        ),
        (
            "min_scale 0",
            dawnrun_data::TrainConfig {
                min_scale: 0.0,
                ..good.clone()
            },
        ),
    ] {
        assert!(TrainPipeline::start(config).is_err(), "{what} accepted");
    }
}

#[test]
fn missing_file_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("train-00000-of-00001");
    let mut pipeline = TrainPipeline::start(train_config(vec![missing.clone()], 0, 1, 1)).unwrap();
    let message = chain(&pipeline.next().unwrap_err());
    assert!(
        message.contains(&missing.display().to_string()),
        "{message}"
    );
}
