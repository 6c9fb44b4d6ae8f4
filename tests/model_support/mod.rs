//! Shared by the `model_*` integration tests: a learnable synthetic dataset, batches, and a lock
//! so TensorFlow-heavy tests in one binary take the 2 cores in turn.
#![allow(dead_code)]
use dawnrun::model::BatchRef;
use std::sync::{Mutex, MutexGuard};

static TF_CORES: Mutex<()> = Mutex::new(());

/// Serialises TF sessions within a test binary (each would otherwise use every core).
pub fn cores() -> MutexGuard<'static, ()> {
    TF_CORES.lock().unwrap_or_else(|e| e.into_inner())
}

/// Owned batch: [n, side, side, 3] u8 + [n] labels.
pub struct Batch {
    pub images: Vec<u8>,
    pub labels: Vec<i32>,
    pub n: usize,
    pub side: usize,
}

impl Batch {
    pub fn view(&self) -> BatchRef<'_> {
        BatchRef {
            images: &self.images,
            labels: &self.labels,
            n: self.n,
            height: self.side,
            width: self.side,
        }
    }
}

/// xorshift64*: a tiny deterministic generator so the data is fixed without extra crates.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Class colours (RGB), one per class, up to 10.
const PALETTE: [[u8; 3]; 10] = [
    [230, 25, 75],
    [60, 180, 75],
    [255, 225, 25],
    [0, 130, 200],
    [245, 130, 48],
    [145, 30, 180],
    [70, 240, 240],
    [240, 50, 230],
    [250, 190, 190],
    [0, 128, 128],
];

/// A batch of `n` images `side` x `side`: grey noisy background with one square blob in the
/// class colour at a random place, also noisy. Labels cycle through `classes` from `first`.
pub fn blobs(n: usize, side: usize, classes: usize, rng: &mut Rng) -> Batch {
    let mut images = vec![0u8; n * side * side * 3];
    let mut labels = Vec::with_capacity(n);
    let blob = side / 2;
    for i in 0..n {
        let class = rng.below(classes as u64) as usize;
        labels.push(class as i32);
        let (x0, y0) = (
            rng.below((side - blob) as u64) as usize,
            rng.below((side - blob) as u64) as usize,
        );
        let img = &mut images[i * side * side * 3..(i + 1) * side * side * 3];
        for y in 0..side {
            for x in 0..side {
                let inside = (x0..x0 + blob).contains(&x) && (y0..y0 + blob).contains(&y);
                for c in 0..3 {
                    let base = if inside {
                        PALETTE[class][c] as i64
                    } else {
                        120
                    };
                    let noise = rng.below(61) as i64 - 30;
                    img[(y * side + x) * 3 + c] = (base + noise).clamp(0, 255) as u8;
                }
            }
        }
    }
    Batch {
        images,
        labels,
        n,
        side,
    }
}

/// The Python with TensorFlow: $DAWNRUN_PYTHON, else `<workspace>/.deps/venv/bin/python`.
/// Missing is a failure, never a skip.
pub fn python() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("DAWNRUN_PYTHON") {
        return p.into();
    }
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".deps/venv/bin/python");
    assert!(
        p.exists(),
        "no Python TensorFlow at {} and DAWNRUN_PYTHON unset: run `make setup`",
        p.display()
    );
    p
}
