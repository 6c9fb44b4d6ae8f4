//! A pipeline stopped from another thread than its consumer's. Alone in its own test binary (its
//! own process), as `shutdown.rs`, so that counting threads is not disturbed by other tests.

mod common;

use common::*;
use dawnrun_data::TrainPipeline;

/// A pipeline consumed on a thread of its own is stopped from another one through its stop
/// handle: the consumer's `next` ends in `Stopped` (after any batches already made), and
/// dropping the pipeline on that thread joins every thread it started.
#[test]
fn a_stop_handle_ends_a_consumer_on_another_thread() {
    let dir = tempfile::tempdir().unwrap();
    let (files, _) = write_shards(dir.path(), 2, 10, &[]);
    let mut pipeline = TrainPipeline::start(train_config(files, 0, 1, 5)).unwrap();
    pipeline.next().unwrap();
    let stop = pipeline.stopper();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let consumer = std::thread::spawn(move || {
        let end = loop {
            if let Err(e) = pipeline.next() {
                break e;
            }
        };
        drop(pipeline);
        done_tx.send(end.to_string()).unwrap();
    });
    stop.stop();
    // A hang guard, not a timing: the consumer must end at all.
    let end = done_rx
        .recv_timeout(std::time::Duration::from_secs(120))
        .expect("the consumer ended");
    consumer.join().unwrap();
    assert!(end.contains("stopped"), "{end}");
    assert_eq!(pipeline_threads(), Vec::<String>::new(), "threads left");
}
