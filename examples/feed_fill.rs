//! What putting one batch into the graph's input tensors costs on the host, for BENCHMARKS.md's
//! cost model: a new tensor per batch (what every step did before the feeder: the `tensorflow`
//! crate zeroes a new tensor, then the pixels are copied in) against refilling a pooled one (what
//! the feeder thread now does, off the step's path). Alternated, 15 rounds, medians.
//!
//! `cargo run --release --example feed_fill`

use std::time::Instant;

use dawnrun::model::{BatchRef, FeedPool};
use tensorflow::Tensor;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    println!("| batch x px | MB | new tensor per batch (ms) | pooled tensor refilled (ms) |");
    println!("|---|---:|---:|---:|");
    for (n, px) in [
        (32usize, 128usize),
        (740, 128),
        (256, 224),
        (196, 224),
        (128, 288),
    ] {
        let images: Vec<u8> = (0..n * px * px * 3)
            .map(|i| (i * 7919 % 251) as u8)
            .collect();
        let labels: Vec<i32> = (0..n).map(|i| (i % 1000) as i32).collect();
        let batch = BatchRef {
            images: &images,
            labels: &labels,
            n,
            height: px,
            width: px,
        };
        let dims = [n as u64, px as u64, px as u64, 3];
        let pool = FeedPool::default();
        drop(pool.fill(&batch, 1000).expect("a valid batch"));
        let (mut fresh, mut pooled) = (Vec::new(), Vec::new());
        for round in 0..15 {
            for side in [round % 2, 1 - round % 2] {
                // Each side's tensors are dropped inside the timing, as a step drops its feed.
                let t = Instant::now();
                if side == 0 {
                    let img = Tensor::<u8>::new(&dims)
                        .with_values(&images)
                        .expect("sizes agree");
                    let lab = Tensor::<i32>::new(&[n as u64])
                        .with_values(&labels)
                        .expect("sizes agree");
                    std::hint::black_box((&img, &lab));
                } else {
                    let feed = pool.fill(&batch, 1000).expect("a valid batch");
                    std::hint::black_box(&feed);
                }
                let ms = t.elapsed().as_secs_f64() * 1e3;
                if side == 0 {
                    fresh.push(ms)
                } else {
                    pooled.push(ms)
                }
            }
        }
        println!(
            "| {n} x {px} | {:.1} | {:.2} | {:.2} |",
            images.len() as f64 / 1e6,
            median(fresh),
            median(pooled)
        );
    }
}
