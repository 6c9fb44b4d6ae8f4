//! Ring all-reduce (sum) over MPI point-to-point: how gradient bytes move between ranks.
//!
//! The protocol, for N ranks, rank r, buffer split into N chunks by [`chunk_bounds`]
//! (all arithmetic mod N; `next` = r+1, `prev` = r-1):
//!
//! 1. Reduce-scatter, steps k = 0 .. N-2: send chunk (r-k) to `next` while receiving chunk
//!    (r-k-1) from `prev` (one `MPI_Sendrecv`, so no ordering of sends and receives can
//!    deadlock); add the received values into our own copy of that chunk, in `f32`.
//!    After step k, chunk c on rank c+k+1 holds x_c + x_{c+1} + ... + x_{c+k+1}, added in exactly
//!    that order: the order is fixed by the ring, not by timing.
//! 2. After N-1 steps rank r owns chunk (r+1): the complete sum, computed by that one rank only.
//!    With fp16 on the wire the owner rounds its chunk to f16 too, so it holds what the others
//!    will decode.
//! 3. All-gather, steps k = 0 .. N-2: send chunk (r+1-k) to `next` while receiving chunk (r-k)
//!    from `prev`, and overwrite our copy with it.
//! 4. Every chunk was computed once and copied everywhere, so every rank ends with BITWISE
//!    identical buffers. Each rank sent 2(N-1)/N of the buffer (the "bus" bytes).
//!
//! N = 1 is a no-op. Chunks of a buffer shorter than N are empty and cost one empty message.
//! Every rank must call with the same length (the fusion plan guarantees it); a message of the
//! wrong size is an error naming the peer and the step.

use std::ops::Range;

use mpi::point_to_point::send_receive_into_with_tags;
use mpi::topology::{Communicator, SimpleCommunicator};
use mpi::traits::*;

use crate::wire::{F16Wire, F32Wire, WireFormat};
use crate::world::World;
use dawnrun_schedule::Compression;

/// MPI tag of ring messages; distinct from the stall check's so the two never match each other.
pub(crate) const RING_TAG: i32 = 0x5249;

/// Errors of one ring all-reduce. Any of them leaves the other ranks mid-protocol: the binary
/// must abort the world ([`World::fail`]).
#[derive(Debug, thiserror::Error)]
pub enum RingError {
    #[error("rank {rank}: ring chunk of {len} elements exceeds MPI's count limit {max} (buffer {total}, {size} ranks)")]
    ChunkTooLarge {
        rank: usize,
        len: usize,
        max: usize,
        total: usize,
        size: usize,
    },
    #[error("rank {rank}: ring {phase} step {step}: received {got} elements from rank {peer}, expected {expected} (do all ranks reduce buffers of the same length?)")]
    ShortMessage {
        rank: usize,
        peer: usize,
        phase: &'static str,
        step: usize,
        got: usize,
        expected: usize,
    },
}

/// Splits `len` elements into `n` contiguous chunks, in order.
///
/// Invariants (tested): exactly `n` ranges (none for `n = 0`), they tile `0..len` without gaps or
/// overlap, and sizes differ by at most one (the first `len % n` chunks are one longer).
/// For `len < n` the last `n - len` chunks are empty.
pub fn chunk_bounds(len: usize, n: usize) -> Vec<Range<usize>> {
    (0..n).map(|i| chunk_of(len, n, i)).collect()
}

/// Chunk `i` of [`chunk_bounds`]`(len, n)` alone, without the others: empty for `i >= n`.
pub fn chunk_of(len: usize, n: usize, i: usize) -> Range<usize> {
    if i >= n {
        return len..len;
    }
    let (base, extra) = (len / n, len % n);
    let start = i * base + i.min(extra);
    start..start + base + usize::from(i < extra)
}

/// Reduce-scatter step `step` on rank `r` of `n`: (chunk sent to r+1, chunk received from r-1).
fn reduce_scatter_chunks(r: usize, n: usize, step: usize) -> (usize, usize) {
    ((r + n - step) % n, (r + 2 * n - step - 1) % n)
}

/// The chunk rank `r` holds fully reduced after reduce-scatter.
fn owned_chunk(r: usize, n: usize) -> usize {
    (r + 1) % n
}

/// All-gather step `step` on rank `r` of `n`: (chunk sent to r+1, chunk received from r-1).
fn all_gather_chunks(r: usize, n: usize, step: usize) -> (usize, usize) {
    ((r + 1 + n - step) % n, (r + n - step) % n)
}

/// Scratch buffers reused across calls, so a training step allocates nothing.
#[derive(Debug, Default)]
pub struct Ring {
    recv_f32: Vec<f32>,
    send_f16: Vec<u16>,
    recv_f16: Vec<u16>,
    decoded: Vec<f32>,
}

impl Ring {
    pub fn new() -> Ring {
        Ring::default()
    }

    /// Sums `data` element-wise over all ranks, in place, by the protocol in the module docs.
    /// Afterwards `data` is bitwise identical on every rank.
    pub fn sum(
        &mut self,
        world: &World,
        data: &mut [f32],
        compression: Compression,
    ) -> Result<(), RingError> {
        self.reduce(world, data, compression, None)
    }

    /// The mean instead of the sum: each rank divides the chunk it owns by N in the same pass
    /// as its last addition into it, so the all-gather delivers means and no rank makes
    /// another pass over the buffer. With the f32 wire
    /// the bits equal the sum divided by N afterwards (the same division, done once by the
    /// owner); with fp16 the mean is what gets rounded to 16 bits, not the sum.
    pub fn average(
        &mut self,
        world: &World,
        data: &mut [f32],
        compression: Compression,
    ) -> Result<(), RingError> {
        let divisor = world.size() as f32;
        self.reduce(world, data, compression, Some(divisor))
    }

    fn reduce(
        &mut self,
        world: &World,
        data: &mut [f32],
        compression: Compression,
        divisor: Option<f32>,
    ) -> Result<(), RingError> {
        self.reduce_over(world.comm(), data, compression, divisor)
    }

    /// The sum over the ranks of `comm`, each element divided by `divisor` if one is given:
    /// the hierarchical all-reduce's step across nodes, whose mean is over the whole world.
    pub(crate) fn reduce_over(
        &mut self,
        comm: &SimpleCommunicator,
        data: &mut [f32],
        compression: Compression,
        divisor: Option<f32>,
    ) -> Result<(), RingError> {
        match compression {
            Compression::None => ring_sum::<F32Wire>(
                comm,
                data,
                divisor,
                &mut self.recv_f32,
                &mut Vec::new(),
                &mut self.decoded,
            ),
            Compression::Fp16 => ring_sum::<F16Wire>(
                comm,
                data,
                divisor,
                &mut self.recv_f16,
                &mut self.send_f16,
                &mut self.decoded,
            ),
        }
    }
}

fn ring_sum<W: WireFormat>(
    comm: &SimpleCommunicator,
    data: &mut [f32],
    divisor: Option<f32>,
    recv: &mut Vec<W::Elem>,
    send_buf: &mut Vec<W::Elem>,
    tmp: &mut Vec<f32>,
) -> Result<(), RingError> {
    let n = comm.size() as usize;
    let r = comm.rank() as usize;
    if n <= 1 {
        return Ok(());
    }
    let chunks = chunk_bounds(data.len(), n);
    let max_chunk = chunks[0].len(); // the first chunk is the longest
    let max_count = i32::MAX as usize;
    if max_chunk > max_count {
        return Err(RingError::ChunkTooLarge {
            rank: r,
            len: max_chunk,
            max: max_count,
            total: data.len(),
            size: n,
        });
    }
    recv.resize(max_chunk, W::Elem::default());

    let next = comm.process_at_rank(((r + 1) % n) as i32);
    let prev_rank = (r + n - 1) % n;
    let prev = comm.process_at_rank(prev_rank as i32);
    let exchange = |phase: &'static str, step: usize, out: &[W::Elem], into: &mut [W::Elem]| {
        let status = send_receive_into_with_tags(out, &next, RING_TAG, into, &prev, RING_TAG);
        let got =
            usize::try_from(status.count(W::Elem::equivalent_datatype())).unwrap_or(usize::MAX);
        if got == into.len() {
            Ok(())
        } else {
            Err(RingError::ShortMessage {
                rank: r,
                peer: prev_rank,
                phase,
                step,
                got,
                expected: into.len(),
            })
        }
    };

    // Step 1: reduce-scatter.
    for step in 0..n - 1 {
        let (send, receive) = reduce_scatter_chunks(r, n, step);
        let (send_c, recv_c) = (&chunks[send], chunks[receive].clone());
        let out = W::outgoing(&data[send_c.clone()], send_buf);
        let into = &mut recv[..recv_c.len()];
        exchange("reduce-scatter", step, out, into)?;
        // The last step adds into the chunk this rank owns: divide there for a mean.
        let divide = divisor.filter(|_| step == n - 2);
        W::accumulate(into, &mut data[recv_c], tmp, divide);
    }
    // Step 2: the owned chunk (already a mean, if asked) becomes exactly what travels.
    W::quantize(&mut data[chunks[owned_chunk(r, n)].clone()], send_buf);
    // Step 3: all-gather.
    for step in 0..n - 1 {
        let (send, receive) = all_gather_chunks(r, n, step);
        let (send_c, recv_c) = (chunks[send].clone(), chunks[receive].clone());
        let (src, dst) = disjoint(data, send_c, recv_c.clone());
        let out = W::outgoing(src, send_buf);
        match W::receive_into(dst) {
            Some(into) => exchange("all-gather", step, out, into)?,
            None => {
                let into = &mut recv[..recv_c.len()];
                exchange("all-gather", step, out, into)?;
                W::overwrite(into, &mut data[recv_c]);
            }
        }
    }
    Ok(())
}

/// `data[a]` to read and `data[b]` to write at once; the ranges must not overlap (the ring
/// never sends the chunk it receives in the same step).
fn disjoint(data: &mut [f32], a: Range<usize>, b: Range<usize>) -> (&[f32], &mut [f32]) {
    assert!(
        a.end <= b.start || b.end <= a.start,
        "{a:?} and {b:?} overlap"
    );
    if a.start < b.start {
        let (lo, hi) = data.split_at_mut(b.start);
        (&lo[a], &mut hi[..b.end - b.start])
    } else {
        let (lo, hi) = data.split_at_mut(a.start);
        (&hi[..a.end - a.start], &mut lo[b])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_tile_the_buffer_for_any_length_and_world_size() {
        let lens = (0..=70).chain([97, 1000, 1_000_003, 25_600_000]);
        for len in lens {
            for n in 1..=17 {
                let chunks = chunk_bounds(len, n);
                assert_eq!(chunks.len(), n, "len {len} n {n}");
                let mut at = 0;
                for c in &chunks {
                    assert_eq!(c.start, at, "contiguous, disjoint: len {len} n {n}");
                    at = c.end;
                }
                assert_eq!(at, len, "covers: len {len} n {n}");
                let min = chunks.iter().map(|c| c.len()).min().unwrap();
                let max = chunks.iter().map(|c| c.len()).max().unwrap();
                assert!(max - min <= 1, "balanced: len {len} n {n}");
                assert_eq!(chunks[0].len(), max, "first chunk is the longest");
                if len < n {
                    assert_eq!(chunks.iter().filter(|c| c.is_empty()).count(), n - len);
                }
            }
        }
    }

    #[test]
    fn chunks_of_nothing() {
        assert!(chunk_bounds(5, 0).is_empty());
        assert_eq!(chunk_bounds(0, 3), vec![0..0, 0..0, 0..0]);
        assert_eq!(chunk_bounds(3, 1), vec![0..3]);
        assert_eq!(chunk_of(3, 2, 2), 3..3, "a chunk beyond the n is empty");
        assert_eq!(chunk_of(3, 0, 0), 3..3);
    }

    #[test]
    fn ring_schedule_reduces_each_chunk_once_and_delivers_it_everywhere() {
        // Play the schedule ring_sum follows for many N, tracking per rank and chunk the set of
        // ranks whose values it holds summed (a bit mask). Each step, every rank must receive
        // exactly the chunk its predecessor sends.
        for n in 2..=12usize {
            let all = (1u64 << n) - 1;
            let mut held: Vec<Vec<u64>> = (0..n).map(|r| vec![1u64 << r; n]).collect();
            for step in 0..n - 1 {
                let before = held.clone();
                for (r, mine) in held.iter_mut().enumerate() {
                    let prev = (r + n - 1) % n;
                    let (prev_sends, _) = reduce_scatter_chunks(prev, n, step);
                    let (_, receive) = reduce_scatter_chunks(r, n, step);
                    assert_eq!(
                        prev_sends, receive,
                        "reduce-scatter n {n} step {step} rank {r}"
                    );
                    let incoming = before[prev][prev_sends];
                    assert_eq!(mine[receive] & incoming, 0, "no value added twice");
                    mine[receive] |= incoming;
                }
            }
            for (r, mine) in held.iter().enumerate() {
                assert_eq!(
                    mine[owned_chunk(r, n)],
                    all,
                    "n {n}: rank {r} owns a complete sum"
                );
            }
            for step in 0..n - 1 {
                let before = held.clone();
                for (r, mine) in held.iter_mut().enumerate() {
                    let prev = (r + n - 1) % n;
                    let (prev_sends, _) = all_gather_chunks(prev, n, step);
                    let (_, receive) = all_gather_chunks(r, n, step);
                    assert_eq!(prev_sends, receive, "all-gather n {n} step {step} rank {r}");
                    assert_eq!(
                        before[prev][prev_sends], all,
                        "only complete sums travel in all-gather"
                    );
                    mine[receive] = before[prev][prev_sends];
                }
            }
            assert!(
                held.iter().all(|mine| mine.iter().all(|&c| c == all)),
                "n {n}"
            );
        }
    }
}
