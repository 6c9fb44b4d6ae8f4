//! Dropping a pipeline joins every thread it started. Alone in its own test binary (its own
//! process) so that counting threads is not disturbed by other tests.

mod common;

use common::*;
use dawnrun_data::TrainPipeline;

#[test]
fn drop_joins_every_pipeline_thread() {
    let dir = tempfile::tempdir().unwrap();
    let (files, _) = write_shards(dir.path(), 2, 10, &[]);
    let mut pipeline = TrainPipeline::start(train_config(files, 0, 1, 5)).unwrap();
    pipeline.next().unwrap();
    // A worker the scheduler has not run yet has no name yet: give them time to appear.
    let mut running = pipeline_threads();
    for _ in 0..500 {
        if running.len() == 4 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
        running = pipeline_threads();
    }
    running.sort();
    let expected = [
        "dawnrun-batcher",
        "dawnrun-dec-0",
        "dawnrun-dec-1",
        "dawnrun-reader",
    ];
    assert_eq!(running, expected, "reader, two workers, batcher");
    drop(pipeline);
    assert_eq!(
        pipeline_threads(),
        Vec::<String>::new(),
        "threads left after drop"
    );
}
