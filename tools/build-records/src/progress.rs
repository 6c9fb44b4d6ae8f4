//! Progress while shards are written: an `indicatif` bar (images/s, ETA) when stderr is a
//! terminal, otherwise one plain line every few seconds (logs, CI, pipes).
//!
//! Shared by all shard writers through `&Progress`; counters are atomics so writers never wait
//! on each other, and only the plain-line timestamp takes a lock, at most once per line.

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Seconds between plain progress lines.
const PLAIN_EVERY: Duration = Duration::from_secs(5);

pub struct Progress {
    bar: Option<ProgressBar>,
    total_images: u64,
    images: AtomicU64,
    input_bytes: AtomicU64,
    started: Instant,
    last_line: Mutex<Instant>,
}

impl Progress {
    /// `total_images`: files that will be read (those of kept shards excluded).
    pub fn new(total_images: u64) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total_images);
            bar.set_style(
                ProgressStyle::with_template(
                    "{elapsed_precise} [{bar:40}] {pos}/{len} images, {per_sec}, ETA {eta}",
                )
                .expect("the template is a valid indicatif template")
                .progress_chars("=> "),
            );
            bar
        });
        let now = Instant::now();
        Progress {
            bar,
            total_images,
            images: AtomicU64::new(0),
            input_bytes: AtomicU64::new(0),
            started: now,
            last_line: Mutex::new(now),
        }
    }

    /// Counts `images` files (of `bytes` input bytes) as done.
    pub fn inc(&self, images: u64, bytes: u64) {
        let done = self.images.fetch_add(images, Ordering::Relaxed) + images;
        self.input_bytes.fetch_add(bytes, Ordering::Relaxed);
        if let Some(bar) = &self.bar {
            bar.inc(images);
            return;
        }
        let Ok(mut last) = self.last_line.try_lock() else {
            return;
        };
        if last.elapsed() < PLAIN_EVERY {
            return;
        }
        *last = Instant::now();
        let elapsed_s = self.started.elapsed().as_secs_f64();
        let rate = done as f64 / elapsed_s.max(1e-9);
        let eta_s = self.total_images.saturating_sub(done) as f64 / rate.max(1e-9);
        eprintln!(
            "build-records: {done}/{} images, {rate:.0} images/s, {:.1} MB read, ETA {eta_s:.0} s",
            self.total_images,
            self.input_bytes.load(Ordering::Relaxed) as f64 / 1e6
        );
    }

    /// Removes the bar (the summary follows on stdout).
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }

    /// Input bytes read so far.
    pub fn input_bytes(&self) -> u64 {
        self.input_bytes.load(Ordering::Relaxed)
    }
}
