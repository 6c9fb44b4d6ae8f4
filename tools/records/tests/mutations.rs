//! Seeded mutation suite for the container layers: thousands of damaged shard files (bit flips,
//! truncations, lying length fields with valid CRCs, random bytes, insertions) through
//! `RecordReader`, and damaged tf.Example bytes through both Example parsers. Every case must end
//! `Ok` or in an error whose message is non-empty (for the reader: names the file and a byte
//! offset); none may panic (no `catch_unwind` here: a panic fails the test), and none may make a
//! single allocation larger than a bound derived from the file size.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use dawnrun_records::framing::{encode_record, FramingError, HEADER_LEN};
use dawnrun_records::imagenet::decode_for_training;
use dawnrun_records::{BBox, ImageRecord, RecordReader};

/// Records the largest single allocation while armed.
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

/// The largest single allocation made by `f`.
fn largest_allocation<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.store(0, Ordering::SeqCst);
    ARMED.store(true, Ordering::SeqCst);
    let out = f();
    ARMED.store(false, Ordering::SeqCst);
    (out, LARGEST.load(Ordering::SeqCst))
}

/// xorshift64*: the suite's only randomness, seeded.
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

fn sample_records(rng: &mut Rng) -> Vec<Vec<u8>> {
    (0..4)
        .map(|i| {
            let len = 50 + rng.below(3000);
            ImageRecord {
                encoded: (0..len).map(|_| rng.next() as u8).collect(),
                height: 100 + i,
                width: 80 + i,
                label: 1 + i,
                synset: format!("n{i:08}"),
                text: "a class".into(),
                filename: format!("img{i}.JPEG"),
                bboxes: vec![BBox {
                    xmin: 0.1,
                    ymin: 0.2,
                    xmax: 0.8,
                    ymax: 0.9,
                }],
            }
            .to_bytes()
        })
        .collect()
}

/// The framing's masked CRC-32C, so a lying length can carry a valid length CRC and get past
/// the first check.
fn masked_crc(bytes: &[u8]) -> u32 {
    dawnrun_records::crc::masked_crc32c(bytes)
}

/// Byte offsets where each record's frame starts.
fn frame_starts(records: &[Vec<u8>]) -> Vec<usize> {
    let mut at = 0;
    records
        .iter()
        .map(|r| {
            let start = at;
            at += r.len() + 16;
            start
        })
        .collect()
}

/// One mutation of the framed file `clean`; returns a label for messages.
fn mutate(rng: &mut Rng, clean: &[u8], starts: &[usize]) -> (Vec<u8>, &'static str) {
    let mut bytes = clean.to_vec();
    let kind = rng.below(6);
    let label = match kind {
        0 => {
            for _ in 0..1 + rng.below(4) {
                let i = rng.below(bytes.len());
                bytes[i] ^= 1 << rng.below(8);
            }
            "bit flips"
        }
        1 => {
            bytes.truncate(rng.below(bytes.len()));
            "truncation"
        }
        2 | 3 => {
            // A lying length field whose CRC is valid: huge, a little long, or short.
            let start = starts[rng.below(starts.len())];
            let real = u64::from_le_bytes(bytes[start..start + 8].try_into().unwrap());
            let lie = match rng.below(5) {
                0 => u64::MAX,
                1 => 1 << 40,
                2 => real + 1 + rng.below(100) as u64,
                3 => real.saturating_sub(1 + rng.below(50) as u64),
                _ => rng.next() >> rng.below(64),
            };
            bytes[start..start + 8].copy_from_slice(&lie.to_le_bytes());
            let crc = masked_crc(&lie.to_le_bytes());
            bytes[start + 8..start + 12].copy_from_slice(&crc.to_le_bytes());
            "lying length"
        }
        4 => {
            let at = rng.below(bytes.len());
            let end = (at + 1 + rng.below(64)).min(bytes.len());
            for b in &mut bytes[at..end] {
                *b = rng.next() as u8;
            }
            "random bytes"
        }
        _ => {
            let at = rng.below(bytes.len());
            let junk: Vec<u8> = (0..1 + rng.below(40)).map(|_| rng.next() as u8).collect();
            bytes.splice(at..at, junk);
            "insertion"
        }
    };
    (bytes, label)
}

fn check_reader_error(e: &FramingError, path: &Path, case: &str) {
    let msg = e.to_string();
    assert!(!msg.is_empty(), "{case}: empty message");
    assert!(
        msg.starts_with(&path.display().to_string()),
        "{case}: {msg:?} does not name the file"
    );
    assert!(e.offset().is_some(), "{case}: {msg:?} names no offset");
    assert!(msg.contains("byte "), "{case}: {msg:?} names no offset");
}

#[test]
fn damaged_shards_end_in_named_errors_without_panics_or_big_allocations() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("train-00000-of-00001");
    let mut rng = Rng(0x5EED_0001);
    let mut counts = [0usize; 2];
    for round in 0..6 {
        let records = sample_records(&mut rng);
        let mut clean = Vec::new();
        for r in &records {
            encode_record(r, &mut clean);
        }
        let starts = frame_starts(&records);
        for i in 0..500 {
            let (bytes, kind) = mutate(&mut rng, &clean, &starts);
            let case = format!("round {round} case {i} ({kind})");
            std::fs::write(&path, &bytes).unwrap();
            let (outcome, largest) = largest_allocation(|| {
                let mut reader = RecordReader::open(&path).unwrap();
                let mut got = Vec::new();
                loop {
                    match reader.next_record() {
                        Ok(Some(r)) => {
                            // Both Example parsers on whatever the reader hands out (data CRCs
                            // can pass on data that was not damaged).
                            if let Err(e) = ImageRecord::from_bytes(&r.data) {
                                assert!(!e.to_string().is_empty(), "{case}");
                            }
                            if let Err(e) = decode_for_training(&r.data) {
                                assert!(!e.to_string().is_empty(), "{case}");
                            }
                            got.push(r);
                        }
                        Ok(None) => return Ok(got),
                        Err(e) => return Err(e),
                    }
                }
            });
            // The reader's 256 KiB buffer, plus at most the file's size (twice, for a Vec's
            // growth) for one record.
            let bound = 256 * 1024 + 2 * bytes.len() + 4096;
            assert!(
                largest <= bound,
                "{case}: allocated {largest} bytes at once for a {}-byte file",
                bytes.len()
            );
            match outcome {
                Ok(_) => counts[0] += 1,
                Err(e) => {
                    check_reader_error(&e, &path, &case);
                    counts[1] += 1;
                }
            }
        }
    }
    assert_eq!(counts.iter().sum::<usize>(), 3000);
    assert!(counts[1] > 2000, "{counts:?}");
}

#[test]
fn a_lying_length_is_refused_before_allocating() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lie");
    let mut bytes = Vec::new();
    encode_record(b"a small record", &mut bytes);
    for lie in [u64::MAX, 1 << 40, 64 << 20, 1 << 30] {
        bytes[..8].copy_from_slice(&lie.to_le_bytes());
        bytes[8..12].copy_from_slice(&masked_crc(&lie.to_le_bytes()).to_le_bytes());
        std::fs::write(&path, &bytes).unwrap();
        let (result, largest) = largest_allocation(|| RecordReader::open(&path)?.next_record());
        let e = result.unwrap_err();
        assert_eq!(e.offset(), Some(0));
        assert!(e.to_string().contains("truncated record"), "{e}");
        assert!(largest <= 256 * 1024 + 4096, "{lie}: allocated {largest}");
    }
    // A reader of unknown size (not a file) still caps its up-front allocation.
    let (result, largest) = largest_allocation(|| {
        RecordReader::from_reader(std::io::Cursor::new(bytes.clone()), "<memory>").next_record()
    });
    assert!(result.is_err());
    assert!(largest <= (64 << 20) + 4096, "allocated {largest}");
    assert!(bytes.len() as u64 > HEADER_LEN);
}

#[test]
fn damaged_examples_end_in_named_errors_without_panics() {
    let mut rng = Rng(0x5EED_0002);
    let mut errors = 0;
    for round in 0..4 {
        let records = sample_records(&mut rng);
        for (r, clean) in records.iter().enumerate() {
            for i in 0..1000 {
                let mut bytes = clean.clone();
                match rng.below(4) {
                    0 => {
                        for _ in 0..1 + rng.below(3) {
                            let at = rng.below(bytes.len());
                            bytes[at] ^= 1 << rng.below(8);
                        }
                    }
                    1 => bytes.truncate(rng.below(bytes.len())),
                    2 => {
                        let at = rng.below(bytes.len());
                        bytes[at] = 0xFF;
                        if at + 1 < bytes.len() {
                            bytes[at + 1] = rng.next() as u8 | 0x80;
                        }
                    }
                    _ => {
                        let at = rng.below(bytes.len());
                        let end = (at + 1 + rng.below(16)).min(bytes.len());
                        for b in &mut bytes[at..end] {
                            *b = rng.next() as u8;
                        }
                    }
                }
                let case = format!("round {round} record {r} case {i}");
                let (a, b) = largest_allocation(|| {
                    (
                        ImageRecord::from_bytes(&bytes).map(|_| ()),
                        decode_for_training(&bytes).map(|_| ()),
                    )
                })
                .0;
                for e in [a.err(), b.err()].into_iter().flatten() {
                    assert!(!e.to_string().is_empty(), "{case}");
                    errors += 1;
                }
            }
        }
    }
    assert!(errors > 1000, "{errors}");
}
