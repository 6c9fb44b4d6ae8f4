//! Seeded mutation suite for the decode path the workers call (`Preprocessor::run` with a pixel
//! limit): thousands of damaged JPEGs (bit flips, truncations, random bytes, insertions, lying
//! segment lengths and frame sizes). Each must end `Ok` or in a `DecodeError` with a non-empty
//! message; none may panic (a panic is caught here only to count it, and the count must be
//! zero) and none may make a single allocation beyond what the pixel limit allows.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use common::worker_decode;
use image::ImageEncoder;

struct Counting;

static ARMED: AtomicBool = AtomicBool::new(false);
static LARGEST: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if ARMED.load(Ordering::Relaxed) {
            LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        }
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if ARMED.load(Ordering::Relaxed) {
            LARGEST.fetch_max(new_size, Ordering::Relaxed);
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn largest_allocation<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.store(0, Ordering::SeqCst);
    ARMED.store(true, Ordering::SeqCst);
    let out = f();
    ARMED.store(false, Ordering::SeqCst);
    (out, LARGEST.load(Ordering::SeqCst))
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn seeds() -> Vec<Vec<u8>> {
    let mut out = vec![
        common::jpeg(64, 48, 1),
        common::jpeg(33, 17, 3),
        common::jpeg(8, 8, 0),
    ];
    let gray = image::GrayImage::from_fn(40, 30, |x, y| image::Luma([(x * 5 + y * 3) as u8]));
    let mut g = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut g, 80)
        .write_image(gray.as_raw(), 40, 30, image::ExtendedColorType::L8)
        .unwrap();
    out.push(g);
    out
}

/// Offset of the SOF0 segment's marker.
fn sof(jpeg: &[u8]) -> usize {
    jpeg.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap()
}

/// The pixel limit used by the suite, and the largest single allocation it may cause: the RGB
/// image and zune's per-component planes at the limit, plus slack for tables and scratch.
const LIMIT: u64 = 1 << 20;
const ALLOC_BOUND: usize = 4 * (LIMIT as usize) * 3 + (1 << 20);

fn mutate(rng: &mut Rng, clean: &[u8]) -> (Vec<u8>, &'static str) {
    let mut b = clean.to_vec();
    match rng.below(7) {
        0 => {
            for _ in 0..1 + rng.below(8) {
                let i = rng.below(b.len());
                b[i] ^= 1 << rng.below(8);
            }
            (b, "bit flips")
        }
        1 => {
            b.truncate(rng.below(b.len()));
            (b, "truncation")
        }
        2 => {
            let at = rng.below(b.len());
            let end = (at + 1 + rng.below(32)).min(b.len());
            for x in &mut b[at..end] {
                *x = rng.next() as u8;
            }
            (b, "random bytes")
        }
        3 => {
            let at = rng.below(b.len());
            let junk: Vec<u8> = (0..1 + rng.below(40)).map(|_| rng.next() as u8).collect();
            b.splice(at..at, junk);
            (b, "insertion")
        }
        4 => {
            // A lying frame size: huge, zero, or random.
            let s = sof(&b);
            let (h, w): (u16, u16) = match rng.below(4) {
                0 => (u16::MAX, u16::MAX),
                1 => (0, rng.next() as u16),
                2 => (16384, 16384),
                _ => (rng.next() as u16, rng.next() as u16),
            };
            b[s + 5..s + 7].copy_from_slice(&h.to_be_bytes());
            b[s + 7..s + 9].copy_from_slice(&w.to_be_bytes());
            (b, "lying frame size")
        }
        5 => {
            // A lying segment length on a random marker segment.
            let markers: Vec<usize> = (2..b.len() - 3)
                .filter(|&i| b[i] == 0xFF && (0xC0..=0xFE).contains(&b[i + 1]) && b[i + 1] != 0xD9)
                .collect();
            let at = markers[rng.below(markers.len())];
            let lie = rng.next() as u16 >> rng.below(16);
            b[at + 2..at + 4].copy_from_slice(&lie.to_be_bytes());
            (b, "lying segment length")
        }
        _ => {
            // Whole random file behind a valid SOI.
            let mut r = vec![0xFF, 0xD8];
            r.extend((0..rng.below(400)).map(|_| rng.next() as u8));
            (r, "random after SOI")
        }
    }
}

#[test]
fn damaged_jpegs_end_in_named_errors_without_panics_or_big_allocations() {
    let mut rng = Rng(0x5EED_0003);
    let (mut ok, mut errors, mut panics) = (0usize, 0usize, Vec::new());
    for clean in seeds() {
        for i in 0..1500 {
            let (bytes, kind) = mutate(&mut rng, &clean);
            let (result, largest) = largest_allocation(|| {
                catch_unwind(AssertUnwindSafe(|| worker_decode(&bytes, LIMIT)))
            });
            assert!(
                largest <= ALLOC_BOUND,
                "case {i} ({kind}): one allocation of {largest} bytes"
            );
            match result {
                Ok(Ok(())) => ok += 1,
                Ok(Err(e)) => {
                    assert!(!e.to_string().is_empty(), "case {i} ({kind})");
                    errors += 1;
                }
                Err(_) => panics.push(format!("case {i} ({kind})")),
            }
        }
    }
    eprintln!(
        "decode mutations: {ok} decoded, {errors} refused, {} panics",
        panics.len()
    );
    assert!(panics.is_empty(), "the decoder panicked on: {panics:?}");
    assert!(errors > 2000, "{errors}");
}

#[test]
fn a_forged_16384_square_header_is_skipped_without_allocating() {
    let mut jpeg = common::jpeg(64, 48, 2);
    let s = sof(&jpeg);
    jpeg[s + 5..s + 7].copy_from_slice(&16384u16.to_be_bytes());
    jpeg[s + 7..s + 9].copy_from_slice(&16384u16.to_be_bytes());
    let (result, largest) =
        largest_allocation(|| worker_decode(&jpeg, dawnrun_data::DEFAULT_MAX_IMAGE_PIXELS));
    let e = result.unwrap_err();
    assert!(
        matches!(e, dawnrun_data::DecodeError::TooLarge { .. }),
        "{e}"
    );
    assert_eq!(
        e.to_string(),
        "JPEG header says 16384x16384 = 268435456 pixels, above the limit of 100000000 (run.max_image_pixels)"
    );
    assert!(largest < 1 << 20, "allocated {largest} bytes");
    // Below the limit the same check lets a real image through.
    let fine = common::jpeg(64, 48, 2);
    worker_decode(&fine, 64 * 48).unwrap();
    assert!(matches!(
        worker_decode(&fine, 64 * 48 - 1),
        Err(dawnrun_data::DecodeError::TooLarge { .. })
    ));
}
