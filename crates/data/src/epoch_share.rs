//! Which records this rank reads in an epoch, and in what order. Pure: generic over where the
//! records come from, so the same code runs in the reader thread (records from files) and in the
//! tests (record numbers), and is deterministic for (seed, epoch, rank).
//!
//! The rule, per epoch `e`:
//! 1. Shuffle the shard file list with a generator seeded by (seed, e) only, so every rank
//!    computes the same order.
//! 2. If there are at least as many files as ranks, deal them: shuffled file `i` goes to rank
//!    `i % world_size`; the rank reads its files in that order, every record of each. Otherwise
//!    (fewer files than ranks, e.g. small test sets) every rank reads all files in the shuffled
//!    order and keeps record `j` of that sequence when `j % world_size == rank`.
//! 3. The rank's sequence goes through a shuffle buffer seeded by (seed, e, rank).
//!
//! Every rank must deliver exactly `batches_per_epoch` batches per epoch (the trainer's steps
//! are `floor(total_images / (batch x world_size))` and all ranks meet in every all-reduce), i.e.
//! `needed = batches_per_epoch x batch` records. A rank whose share is longer drops its tail
//! (the dropped remainder); a rank whose share is shorter (unequal shard sizes when dealing)
//! wraps: it continues with the start of its own list, so it sees a few of its records twice
//! that epoch. Shares never overlap between ranks within one pass, so the union of the ranks'
//! records covers every image at most once, and exactly once up to the dropped remainder when
//! every share is at least `needed` long (always true when interleaving, and when dealing
//! equal-sized shards).

use std::collections::VecDeque;

use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::seed::{rng_for, Stream};

/// Bad arguments to [`EpochShare::new`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EpochShareError {
    #[error("world size is 0: need at least one rank")]
    NoRanks,
    #[error("rank {rank} is outside the world of {world_size} ranks")]
    RankOutOfWorld { rank: u64, world_size: u64 },
    #[error("no shard files to read (rank {rank} of {world_size})")]
    NoFiles { rank: u64, world_size: u64 },
}

/// This rank's share of one epoch: the files it reads, in order, and which records of that
/// sequence it keeps (`j % stride == phase`, `j` counting records across its files from 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpochShare {
    /// Indices into the caller's file list, in reading order.
    pub files: Vec<usize>,
    /// 1 when dealing files; `world_size` when interleaving records.
    pub stride: u64,
    /// 0 when dealing files; `rank` when interleaving records.
    pub phase: u64,
}

impl EpochShare {
    /// Computes the share of `rank` (0-based, `< world_size`) among `num_files` files for `epoch`.
    pub fn new(
        num_files: usize,
        world_size: u64,
        rank: u64,
        seed: u64,
        epoch: u64,
    ) -> Result<Self, EpochShareError> {
        if world_size == 0 {
            return Err(EpochShareError::NoRanks);
        }
        if rank >= world_size {
            return Err(EpochShareError::RankOutOfWorld { rank, world_size });
        }
        if num_files == 0 {
            return Err(EpochShareError::NoFiles { rank, world_size });
        }
        let mut order: Vec<usize> = (0..num_files).collect();
        order.shuffle(&mut rng_for(Stream::FileOrder, &[seed, epoch]));
        if num_files as u64 >= world_size {
            let files = order
                .into_iter()
                .enumerate()
                .filter(|(i, _)| *i as u64 % world_size == rank)
                .map(|(_, f)| f);
            Ok(Self {
                files: files.collect(),
                stride: 1,
                phase: 0,
            })
        } else {
            Ok(Self {
                files: order,
                stride: world_size,
                phase: rank,
            })
        }
    }

    /// Whether the `j`-th record of a pass over `files` belongs to this rank.
    pub fn keeps(&self, j: u64) -> bool {
        j % self.stride == self.phase
    }
}

/// This rank's records for one epoch as an endless stream: its share's records in order, then
/// the share again from the start (wrapping), and so on. `open(file_index)` is called lazily,
/// once per file per pass. Ends (`None`) only after an error (yielded once) or when a whole
/// pass kept no record (the rank has nothing to read: the caller reports that).
pub struct RankRecords<F, I> {
    share: EpochShare,
    open: F,
    current: Option<I>,
    next_file: usize,
    j: u64,
    kept_this_pass: bool,
    done: bool,
}

impl<T, E, I, F> RankRecords<F, I>
where
    I: Iterator<Item = Result<T, E>>,
    F: FnMut(usize) -> Result<I, E>,
{
    pub fn new(share: EpochShare, open: F) -> Self {
        Self {
            share,
            open,
            current: None,
            next_file: 0,
            j: 0,
            kept_this_pass: false,
            done: false,
        }
    }
}

impl<T, E, I, F> Iterator for RankRecords<F, I>
where
    I: Iterator<Item = Result<T, E>>,
    F: FnMut(usize) -> Result<I, E>,
{
    type Item = Result<T, E>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            let Some(records) = self.current.as_mut() else {
                if self.next_file == self.share.files.len() {
                    // End of a pass: wrap, unless the pass found nothing (it never will).
                    if !self.kept_this_pass {
                        self.done = true;
                        return None;
                    }
                    (self.next_file, self.j, self.kept_this_pass) = (0, 0, false);
                }
                let file = self.share.files[self.next_file];
                self.next_file += 1;
                match (self.open)(file) {
                    Ok(records) => self.current = Some(records),
                    Err(e) => {
                        self.done = true;
                        return Some(Err(e));
                    }
                }
                continue;
            };
            match records.next() {
                None => self.current = None,
                Some(Err(e)) => {
                    self.done = true;
                    return Some(Err(e));
                }
                Some(Ok(record)) => {
                    let j = self.j;
                    self.j += 1;
                    if self.share.keeps(j) {
                        self.kept_this_pass = true;
                        return Some(Ok(record));
                    }
                }
            }
        }
        None
    }
}

/// A shuffle buffer over the first `needed` items of `source`, then the source's further items
/// unshuffled. The first `needed` outputs are therefore a permutation of the first `needed`
/// inputs (exact coverage); later outputs are spares that replace images the decoder had to
/// skip, taken in reading order. Holds at most `capacity` items (at least 1).
pub struct ShuffleBuffer<S: Iterator> {
    source: S,
    needed: u64,
    taken: u64,
    buffer: VecDeque<S::Item>,
    capacity: usize,
    rng: ChaCha8Rng,
}

impl<T, E, S: Iterator<Item = Result<T, E>>> ShuffleBuffer<S> {
    pub fn new(source: S, needed: u64, capacity: usize, rng: ChaCha8Rng) -> Self {
        let capacity = capacity.max(1);
        Self {
            source,
            needed,
            taken: 0,
            buffer: VecDeque::with_capacity(capacity),
            capacity,
            rng,
        }
    }
}

impl<T, E, S: Iterator<Item = Result<T, E>>> Iterator for ShuffleBuffer<S> {
    type Item = Result<T, E>;

    fn next(&mut self) -> Option<Self::Item> {
        while self.buffer.len() < self.capacity && self.taken < self.needed {
            match self.source.next() {
                Some(Ok(item)) => {
                    self.buffer.push_back(Ok(item));
                    self.taken += 1;
                }
                // Errors are not shuffled: they surface at once.
                Some(Err(e)) => return Some(Err(e)),
                None => {
                    // The source ran dry early; drain what we hold, then report its end.
                    self.needed = self.taken;
                    break;
                }
            }
        }
        if self.buffer.is_empty() {
            return self.source.next();
        }
        let i = self.rng.gen_range(0..self.buffer.len());
        self.buffer.swap_remove_back(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    type Item = (usize, u64);

    /// This rank's first `needed` records of the epoch, from files of the given sizes.
    fn epoch_items(
        counts: &[u64],
        world_size: u64,
        rank: u64,
        seed: u64,
        epoch: u64,
        needed: u64,
    ) -> Vec<Item> {
        let share = EpochShare::new(counts.len(), world_size, rank, seed, epoch).unwrap();
        let open = |f: usize| Ok::<_, ()>((0..counts[f]).map(move |j| Ok((f, j))));
        let records = RankRecords::new(share, open);
        let rng = rng_for(Stream::Shuffle, &[seed, epoch, rank]);
        let buffered = ShuffleBuffer::new(records, needed, 16, rng);
        buffered.take(needed as usize).map(Result::unwrap).collect()
    }

    #[test]
    fn union_of_ranks_covers_every_image_once_up_to_the_remainder() {
        let layouts: [&[u64]; 5] = [
            &[10, 10, 10, 10],
            &[7],
            &[5, 5, 5],
            &[9, 9, 9, 9, 9, 9, 9, 9],
            &[3, 4],
        ];
        for seed in 0..40u64 {
            for counts in layouts {
                for world_size in [1u64, 2, 3, 4, 8] {
                    let total: u64 = counts.iter().sum();
                    let batch = 1 + seed % 3;
                    let per_rank = total / (batch * world_size) * batch;
                    let equal_shares = (counts.len() as u64) < world_size
                        || ((counts.len() as u64).is_multiple_of(world_size)
                            && counts.iter().all(|&c| c == counts[0]));
                    let mut union = HashSet::new();
                    for rank in 0..world_size {
                        let items = epoch_items(counts, world_size, rank, seed, seed % 5, per_rank);
                        assert_eq!(items.len() as u64, per_rank);
                        let mine: HashSet<Item> = items.iter().copied().collect();
                        for item in &mine {
                            assert!(item.1 < counts[item.0], "{item:?} does not exist");
                            assert!(union.insert(*item), "{item:?} read by two ranks");
                        }
                        if equal_shares {
                            assert_eq!(mine.len(), items.len(), "no repeats when shares suffice");
                        }
                    }
                    if equal_shares {
                        assert_eq!(union.len() as u64, world_size * per_rank);
                        assert!(
                            total - (union.len() as u64) < world_size * batch,
                            "dropped remainder only"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn short_shares_wrap_to_fill_the_epoch() {
        // 3 files for 2 ranks: rank 1 gets one file of 4 but needs 6.
        let items = epoch_items(&[4, 4, 4], 2, 1, 0, 0, 6);
        assert_eq!(items.len(), 6);
        let distinct: HashSet<Item> = items.iter().copied().collect();
        assert!(
            distinct.len() < 6,
            "rank with the short share repeats records"
        );
    }

    #[test]
    fn same_seed_epoch_rank_gives_the_same_sequence_and_epochs_differ() {
        let counts = [50, 50, 50, 50];
        for seed in 0..30u64 {
            for rank in 0..2u64 {
                let a = epoch_items(&counts, 2, rank, seed, 3, 96);
                assert_eq!(a, epoch_items(&counts, 2, rank, seed, 3, 96));
                assert_ne!(a, epoch_items(&counts, 2, rank, seed, 4, 96));
            }
        }
    }

    #[test]
    fn file_order_is_identical_on_every_rank() {
        for seed in 0..100u64 {
            let world_size = 3;
            let mut dealt = Vec::new();
            for rank in 0..world_size {
                dealt.extend(
                    EpochShare::new(10, world_size, rank, seed, 1)
                        .unwrap()
                        .files,
                );
            }
            dealt.sort();
            assert_eq!(
                dealt,
                (0..10).collect::<Vec<_>>(),
                "each file goes to exactly one rank"
            );
        }
    }

    #[test]
    fn bad_arguments_are_refused() {
        assert_eq!(
            EpochShare::new(3, 0, 0, 0, 0),
            Err(EpochShareError::NoRanks)
        );
        assert_eq!(
            EpochShare::new(3, 2, 2, 0, 0),
            Err(EpochShareError::RankOutOfWorld {
                rank: 2,
                world_size: 2
            })
        );
        assert_eq!(
            EpochShare::new(0, 2, 1, 0, 0),
            Err(EpochShareError::NoFiles {
                rank: 1,
                world_size: 2
            })
        );
    }

    #[test]
    fn empty_share_ends_instead_of_spinning() {
        // Two empty files: a pass keeps nothing, so the stream ends.
        let share = EpochShare::new(2, 1, 0, 0, 0).unwrap();
        let open = |_f: usize| Ok::<_, ()>(std::iter::empty::<Result<Item, ()>>());
        assert_eq!(RankRecords::new(share, open).count(), 0);
    }

    #[test]
    fn errors_surface_once_and_end_the_stream() {
        let share = EpochShare::new(2, 1, 0, 0, 0).unwrap();
        let open =
            |f: usize| Ok::<_, String>(vec![Ok((f, 0)), Err(format!("bad {f}"))].into_iter());
        let out: Vec<_> = RankRecords::new(share, open).collect();
        assert_eq!(out.len(), 2);
        assert!(out[1].is_err());
    }

    #[test]
    fn shuffle_buffer_permutes_the_window_then_passes_spares_in_order() {
        for seed in 0..200u64 {
            let source = (0..100u64).map(Ok::<_, ()>);
            let rng = rng_for(Stream::Shuffle, &[seed]);
            let out: Vec<u64> = ShuffleBuffer::new(source, 60, 8, rng)
                .map(Result::unwrap)
                .collect();
            let mut window = out[..60].to_vec();
            window.sort();
            assert_eq!(window, (0..60).collect::<Vec<_>>());
            assert_eq!(out[60..], (60..100).collect::<Vec<_>>());
            assert_ne!(
                out[..60],
                (0..60).collect::<Vec<_>>()[..],
                "seed {seed} did not shuffle"
            );
        }
    }
}
