//! All-reduce among the ranks of one host through a shared-memory segment (`shm.rs`):
//! how gradient bytes move between ranks on one host.
//!
//! Why not the ring on one host: every ring step is a message through MPI's shared-memory
//! transport (copied into the receive buffer, then read again by the addition) and a
//! synchronisation, 2(N-1) of each per call. Here the buffer goes in rounds of at most
//! [`ROUND`] elements per rank; per round, with the round's elements split into N chunks
//! ([`chunk_bounds`]):
//!
//! 1. every rank copies the round's elements, except its own chunk, into its slot; barrier;
//! 2. rank r sums chunk r: its own values plus the other slots' chunk r, added in the order
//!    r+1, r+2, ... (mod N), a cache-sized piece at a time, dividing in the pass of the last
//!    addition when a mean is asked (as the ring does); the result goes into its slot, in the
//!    same pass unless the caller changes the chunk first (the ring across hosts, fp16
//!    rounding); barrier;
//! 3. every rank copies every other chunk from its owner's slot (past the caches, for large
//!    calls on a host with more ranks than CPUs: [`STREAM_FROM`]).
//!
//! Rounds alternate between two sets of slots, so step 3 needs no barrier after it: a slot set
//! is refilled two rounds later, after the next round's first barrier, which nobody passes
//! before everyone finished copying. Per rank that is about 3(N-1)/N + 1/N buffer lengths copied
//! or added, at user-space memcpy speed, and two synchronisations per round that sleep instead
//! of spin. Each chunk is computed by one rank and copied everywhere, so all ranks end with
//! bitwise identical buffers, and the order of additions is fixed by the layout, not by timing.
//! At 2 ranks with f32 on the wire the result equals the ring's bit for bit (one addition,
//! commutative, then the same division).
#![allow(unsafe_code)]

use std::ops::Range;
use std::sync::Arc;

use mpi::collective::{CommunicatorCollectives, Root};
use mpi::topology::{Communicator, SimpleCommunicator};

use crate::copy::{copy_floats, stream_floats};
use crate::ring::chunk_bounds;
use crate::shm::{self, Segment};
use crate::sum;
use crate::world::broadcast_bytes_on;

/// Elements per rank per round: each rank's two slots are this long (4 MiB each), so a host's
/// segment is N x 8 MiB in `/dev/shm` however large the fusion buffers are. 4 MiB slots beat
/// 8 MiB by 5-15% at 25.6M floats on a CPU with 2 MiB of L2 per core (np 2-8, BENCHMARKS.md);
/// 2 MiB and 0.5 MiB were no better, or worse at np 2 (more barriers per call).
pub const ROUND: usize = 1 << 20;

/// From this many elements (32 MiB) on, a call's last step streams the reduced chunks into the
/// caller's buffer past the caches ([`stream_floats`]), on a host with more ranks than CPUs.
/// There the ranks take turns on each core, every turn evicts the others' freshly written lines
/// (written back, after being read to be written), and nothing reads the buffer before the call
/// returns. Measured (`allreduce-check`, 8 ranks on 2 CPUs): 10M floats 7-13% and 25.6M floats
/// 3-10% faster, 4M floats within the noise. With a CPU per rank (2 ranks on 2 CPUs) streaming
/// lost 7-23% at 4M and 10M floats and tied at 25.6M, so it stays off there (BENCHMARKS.md,
/// "Streaming the copy back").
const STREAM_FROM: usize = 8 << 20;

/// Elements summed per pass: 64 KiB of each of the N-1 slots, plus ours, stays in cache.
const PIECE: usize = 16 * 1024;

/// What [`Node::all_reduce`] runs on this rank's reduced chunk before the others copy it.
pub(crate) type Between<'a, E> = &'a mut dyn FnMut(&mut [f32]) -> Result<(), E>;

/// Errors of making the host's segment (this rank's view).
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("node rank {rank}: shared memory segment {name} ({bytes} bytes; is /dev/shm large enough? containers: --shm-size or --ipc=host): {source}")]
    Segment {
        rank: usize,
        name: String,
        bytes: usize,
        source: std::io::Error,
    },
    #[error("node rank {rank}: node rank 0 could not make the shared memory segment")]
    Creator { rank: usize },
    #[error(
        "node rank {rank}: {size} ranks on one host; the shared memory segment has room for {}",
        shm::MAX_RANKS
    )]
    TooMany { rank: usize, size: usize },
}

/// One host's ranks and their shared segment.
pub(crate) struct Node {
    rank: usize,
    size: usize,
    segment: Arc<Segment>,
    /// World rank of each rank of the host, by host rank.
    world_ranks: Vec<usize>,
    /// The slot set the next round uses (0 or 1), carried across calls.
    set: usize,
    /// The host is one of several: `between` is the ring across hosts, marked in the segment
    /// while this rank is in it (a rank frozen there is then not taken for one stuck here).
    cross_hosts: bool,
    /// Calls of at least this many elements stream their last step ([`STREAM_FROM`] on a host
    /// with more ranks than CPUs, else never).
    stream_from: usize,
}

impl Node {
    /// Collective over `comm` (the ranks of one host): node rank 0 makes the segment, the others
    /// map it, then its name is removed. `Err` is this rank's verdict only; the caller agrees on
    /// one over the world.
    pub(crate) fn new(comm: &SimpleCommunicator, world_rank: usize) -> Result<Node, NodeError> {
        let rank = comm.rank() as usize;
        let size = comm.size() as usize;
        let mut world_ranks = vec![0u64; size];
        comm.all_gather_into(&(world_rank as u64), &mut world_ranks[..]);
        if size > shm::MAX_RANKS {
            return Err(NodeError::TooMany { rank, size });
        }
        let mut name = if rank == 0 {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            format!("/{}{}-{nanos}", shm::NAME_PREFIX, std::process::id()).into_bytes()
        } else {
            Vec::new()
        };
        let made = if rank == 0 {
            Some(Segment::create(
                &String::from_utf8_lossy(&name),
                2 * size,
                ROUND,
            ))
        } else {
            None
        };
        let mut created = u8::from(matches!(made, Some(Ok(_))));
        comm.process_at_rank(0).broadcast_into(&mut created);
        broadcast_bytes_on(comm, &mut name, 0);
        let name = String::from_utf8_lossy(&name).into_owned();
        let bytes = 2 * size * ROUND * std::mem::size_of::<f32>();
        let mine = match made {
            Some(made) => Some(made),
            None if created == 1 => Some(Segment::open(&name, 2 * size, ROUND)),
            None => None,
        };
        // Everyone has mapped it (or failed to): the name can go.
        comm.barrier();
        if rank == 0 && created == 1 {
            let _ = shm::unlink(&name);
        }
        let segment =
            mine.ok_or(NodeError::Creator { rank })?
                .map_err(|source| NodeError::Segment {
                    rank,
                    name,
                    bytes,
                    source,
                })?;
        Ok(Node {
            rank,
            size,
            segment: Arc::new(segment),
            world_ranks: world_ranks.into_iter().map(|r| r as usize).collect(),
            cross_hosts: false,
            set: 0,
            stream_from: if size > online_cpus() {
                STREAM_FROM
            } else {
                usize::MAX
            },
        })
    }

    pub(crate) fn size(&self) -> usize {
        self.size
    }

    /// Says whether `between` will be the ring across hosts (see [`HostBoard`]).
    pub(crate) fn set_cross_hosts(&mut self, cross_hosts: bool) {
        self.cross_hosts = cross_hosts;
    }

    /// A view of the host's barrier counts for the stall watchdog, which may run on another
    /// thread while this rank waits in a barrier.
    pub(crate) fn board(&self) -> HostBoard {
        HostBoard {
            segment: Arc::clone(&self.segment),
            world_ranks: self.world_ranks.clone(),
        }
    }

    /// Replaces `data` with its sum over the host's ranks, divided by `divisor` if given.
    /// `between`, if any, gets this rank's reduced chunk of each round before the others copy
    /// it (the ring across hosts, fp16 rounding); an error from it is returned at once (the
    /// binary then aborts the job). Without it the summing pass also writes the result into our
    /// slot, saving a pass over the chunk. Collective: every rank of the host calls it with the
    /// same length.
    pub(crate) fn all_reduce<E>(
        &mut self,
        data: &mut [f32],
        divisor: Option<f32>,
        mut between: Option<Between<'_, E>>,
    ) -> Result<(), E> {
        let (n, r) = (self.size, self.rank);
        let ranks = n as u32;
        let round = self.segment.slot_len();
        let copy_back = if data.len() >= self.stream_from {
            stream_floats
        } else {
            copy_floats
        };
        for part in data.chunks_mut(round) {
            let slot = |rank: usize| self.slot_of(rank);
            let chunks = chunk_bounds(part.len(), n);
            let mine = chunks[r].clone();
            for range in [0..mine.start, mine.end..part.len()] {
                // SAFETY: our slot of this set; the others read it only after the barrier below,
                // and their last reads of it (two rounds ago) ended before the previous round's
                // first barrier.
                let ours = unsafe { self.segment.slot_mut(slot(r), range.clone()) };
                copy_floats(ours, &part[range]);
            }
            self.segment.barrier(ranks, r);
            // SAFETY: chunk `mine` of our slot: the others read only their own chunks of it
            // until the next barrier, and this one only after it.
            let ours = unsafe { self.segment.slot_mut(slot(r), mine.clone()) };
            match between.as_mut() {
                None => self.sum_chunk(part, mine.clone(), divisor, Some(ours)),
                Some(between) => {
                    self.sum_chunk(part, mine.clone(), divisor, None);
                    self.segment.set_across(r, self.cross_hosts);
                    between(&mut part[mine.clone()])?;
                    self.segment.set_across(r, false);
                    copy_floats(ours, &part[mine]);
                }
            }
            self.segment.barrier(ranks, r);
            for k in 1..n {
                let p = (r + k) % n;
                let c = chunks[p].clone();
                // SAFETY: rank p wrote chunk c of its slot before the barrier above and writes
                // this set again only after the next round's first barrier.
                copy_back(&mut part[c.clone()], unsafe {
                    self.segment.slot(slot(p), c)
                });
            }
            self.set ^= 1;
        }
        Ok(())
    }

    /// Index in the segment of `rank`'s slot in the current round's set.
    fn slot_of(&self, rank: usize) -> usize {
        self.set * self.size + rank
    }

    /// Step 2 of a round: `part[mine]` += every other slot's `mine`, in the order r+1, r+2, ...
    /// With `publish` (chunk `mine` of our slot), the last addition stores each result there
    /// too, in the same pass.
    fn sum_chunk(
        &self,
        part: &mut [f32],
        mine: Range<usize>,
        divisor: Option<f32>,
        mut publish: Option<&mut [f32]>,
    ) {
        let (n, r) = (self.size, self.rank);
        for start in mine.clone().step_by(PIECE) {
            let piece = start..(start + PIECE).min(mine.end);
            let dst = &mut part[piece.clone()];
            for k in 1..n {
                // SAFETY: chunk `mine` of the other slots was written before the barrier that
                // preceded this call; their owners write only their own chunks until the next.
                let src = unsafe { self.segment.slot(self.slot_of((r + k) % n), piece.clone()) };
                let last = k == n - 1;
                let q = divisor.filter(|_| last);
                match publish.as_deref_mut().filter(|_| last) {
                    None => sum::add(dst, src, q),
                    Some(out) => {
                        let out = &mut out[piece.start - mine.start..piece.end - mine.start];
                        sum::add_and_store(dst, src, q, out);
                    }
                }
            }
        }
    }
}

/// Where the ranks of one host are in the node protocol, read from the shared segment: what lets
/// a rank stuck in a host barrier name the rank it waits for. Cheap to keep: one atomic add per
/// barrier.
#[derive(Clone)]
pub struct HostBoard {
    segment: Arc<Segment>,
    world_ranks: Vec<usize>,
}

impl std::fmt::Debug for HostBoard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostBoard")
            .field("world_ranks", &self.world_ranks)
            .finish()
    }
}

impl HostBoard {
    /// The host's ranks (world ranks) now behind in its barriers.
    pub fn laggards(&self) -> Laggards {
        laggards(
            &self.segment.arrivals(self.world_ranks.len()),
            &self.world_ranks,
        )
    }
}

/// Ranks of a host that have entered fewer of its barriers than the rank furthest on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Laggards {
    /// Behind, and not in the ring across hosts: frozen, or far behind, on this host.
    pub stuck: Vec<usize>,
    /// Behind while in the ring across hosts: waiting on another host, not stuck here.
    pub across: Vec<usize>,
}

/// [`Laggards`] from each host rank's (barriers entered, in the ring across hosts), naming
/// them by `world_ranks`. Pure.
pub fn laggards(arrivals: &[(u64, bool)], world_ranks: &[usize]) -> Laggards {
    let furthest = arrivals.iter().map(|&(n, _)| n).max().unwrap_or(0);
    let mut out = Laggards::default();
    for (&(entered, across), &rank) in arrivals.iter().zip(world_ranks) {
        if entered < furthest {
            if across {
                out.across.push(rank);
            } else {
                out.stuck.push(rank);
            }
        }
    }
    out
}

/// The host's online CPUs (not this process's affinity: `mpirun` may bind each rank to one).
fn online_cpus() -> usize {
    // SAFETY: sysconf only reads a system value.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    usize::try_from(n).unwrap_or(1).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rank r's value at i: magnitudes far apart, so the order of additions shows in the bits.
    fn value(r: usize, i: usize) -> f32 {
        let x = ((i * 7919 + r * 104_729) % 1000) as f32 / 997.0 - 0.5;
        x * [1.0, 3.0e-4, 7.0e3, 0.11, 1.9e-2][r % 5]
    }

    /// The documented order for element i owned by rank `owner`: its own value, then
    /// owner+1, owner+2, ... (mod n), dividing in the last addition.
    fn expected(n: usize, owner: usize, i: usize, divisor: Option<f32>) -> f32 {
        let mut acc = value(owner, i);
        for k in 1..n {
            let v = value((owner + k) % n, i);
            acc = match divisor.filter(|_| k == n - 1) {
                Some(q) => (acc + v) / q,
                None => acc + v,
            };
        }
        acc
    }

    /// Elements per slot in these tests: small, so a call takes many rounds (the slot sets
    /// alternate within and across calls) and the test needs little of `/dev/shm`.
    const TEST_ROUND: usize = 1000;

    /// `n` threads, each with its own mapping of one segment, as ranks of a host; every thread
    /// reduces `lens` in turn.
    fn run_host(
        n: usize,
        lens: &[usize],
        divisor: Option<f32>,
        stream_from: usize,
    ) -> Vec<Vec<Vec<f32>>> {
        let name = format!("/dawnrun-test-node-{}-{n}", std::process::id());
        let first = Segment::create(&name, 2 * n, TEST_ROUND).unwrap();
        let mut segments = vec![first];
        for _ in 1..n {
            segments.push(Segment::open(&name, 2 * n, TEST_ROUND).unwrap());
        }
        shm::unlink(&name).unwrap();
        let threads: Vec<_> = segments
            .into_iter()
            .enumerate()
            .map(|(rank, segment)| {
                let lens = lens.to_vec();
                std::thread::spawn(move || {
                    let mut node = Node {
                        rank,
                        size: n,
                        segment: Arc::new(segment),
                        world_ranks: (0..n).collect(),
                        cross_hosts: false,
                        set: 0,
                        stream_from,
                    };
                    lens.iter()
                        .map(|&len| {
                            let mut data: Vec<f32> = (0..len).map(|i| value(rank, i)).collect();
                            node.all_reduce::<()>(&mut data, divisor, None).unwrap();
                            data
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    }

    #[test]
    fn every_rank_gets_the_same_bits_summed_in_the_documented_order() {
        // Lengths: shorter than the ranks, one round exactly, and many rounds with a short last.
        let lens = [2, TEST_ROUND, 7 * TEST_ROUND + TEST_ROUND / 2 + 3];
        // Streamed copies back from the longest length on, and plain ones always.
        let cases = [
            (2, Some(2.0), usize::MAX),
            (3, None, lens[2]),
            (5, Some(5.0), 0),
        ];
        for (n, divisor, stream_from) in cases {
            let results = run_host(n, &lens, divisor, stream_from);
            for (call, &len) in lens.iter().enumerate() {
                let want: Vec<f32> = data_rounds(len)
                    .flat_map(|(start, part)| {
                        chunk_bounds(part, n)
                            .into_iter()
                            .enumerate()
                            .flat_map(move |(owner, c)| {
                                c.map(move |i| expected(n, owner, start + i, divisor))
                            })
                    })
                    .collect();
                for (rank, per_call) in results.iter().enumerate() {
                    let got = &per_call[call];
                    assert!(
                        got.iter()
                            .zip(&want)
                            .all(|(a, b)| a.to_bits() == b.to_bits()),
                        "n {n} len {len} rank {rank}"
                    );
                }
            }
        }
    }

    #[test]
    fn laggards_are_the_ranks_behind_the_furthest_and_those_in_the_cross_ring_are_told_apart() {
        let ranks = [4, 5, 6, 7];
        // Rank 5 froze before the barrier the others wait in.
        let frozen = [(10, false), (9, false), (10, false), (10, false)];
        assert_eq!(
            laggards(&frozen, &ranks),
            Laggards {
                stuck: vec![5],
                across: vec![]
            }
        );
        // Ranks 4 and 6 wait on their rings across hosts; rank 7 froze; 5 waits in the barrier.
        let mixed = [(9, true), (10, false), (9, true), (9, false)];
        assert_eq!(
            laggards(&mixed, &ranks),
            Laggards {
                stuck: vec![7],
                across: vec![4, 6]
            }
        );
        // All level: nobody is behind (the wait is elsewhere, or not yet begun).
        assert_eq!(laggards(&[(3, false); 4], &ranks), Laggards::default());
        assert_eq!(laggards(&[], &[]), Laggards::default());
    }

    /// (start, length) of each round of a buffer of `len`.
    fn data_rounds(len: usize) -> impl Iterator<Item = (usize, usize)> {
        (0..len)
            .step_by(TEST_ROUND)
            .map(move |start| (start, TEST_ROUND.min(len - start)))
    }
}
