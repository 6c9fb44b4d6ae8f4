//! A meeting point for ranks whose shares of work differ in length, that can tell a slow rank
//! from a frozen one: what `eval-sweep` waits in after each rank evaluated its checkpoints.
//!
//! A plain barrier (or a gather) cannot: the rank that finished first waits as long for a peer
//! that still evaluates ten checkpoints as for one that was stopped, so a time limit on the wait
//! either ends honest sweeps or never ends a frozen one. Here every rank, while working, tells
//! every other rank so about once a second ([`Rendezvous::beat`]); a rank waiting in
//! [`Rendezvous::meet`] gives up only on ranks it has heard nothing from for the limit, and
//! names them.
//!
//! Messages are 8-byte buffered sends (`MPI_Bsend`, as the stall check's) on their own tags, so
//! they never match another message; each rank takes in what it was sent whenever it beats or
//! waits, so nothing piles up.

use std::time::{Duration, Instant};

use mpi::point_to_point::{Destination, Source};
use mpi::topology::Communicator;

use crate::world::World;

/// The MPI tag of both kinds of message: "still working" (`round << 1`) and "reached meeting
/// `round`" (`round << 1 | 1`). One tag keeps each sender's messages in order (MPI's rule for
/// one tag), so a rank that takes in the last arrival has taken every beat before it: none is
/// left unreceived when the job ends.
const TAG: i32 = 0x4842;

/// How often a working rank says so.
const BEAT_EVERY: Duration = Duration::from_secs(1);

/// The shortest limit that cannot take a working rank for a silent one: three beats.
pub const MIN_LIMIT: Duration = Duration::from_secs(3 * BEAT_EVERY.as_secs());

/// The ranks a waiting rank gave up on.
#[derive(Debug, thiserror::Error)]
#[error(
    "rank {rank}: ranks {silent:?} sent no sign of progress for {} s (the limit) before \
     meeting the others: frozen or far behind",
    .limit.as_secs()
)]
pub struct Silent {
    pub rank: usize,
    pub silent: Vec<usize>,
    pub limit: Duration,
}

/// When this rank last heard from each rank, and the last meeting each has reached. Pure.
#[derive(Debug, Clone)]
pub struct Hearing {
    heard: Vec<Instant>,
    met: Vec<u64>,
}

impl Hearing {
    /// `size` ranks, all heard from `now`, none at any meeting yet.
    pub fn new(size: usize, now: Instant) -> Hearing {
        Hearing {
            heard: vec![now; size],
            met: vec![0; size],
        }
    }

    /// Rank `rank` said it is working (`met` = `None`) or reached meeting `met`, at `now`.
    pub fn record(&mut self, rank: usize, met: Option<u64>, now: Instant) {
        if rank < self.heard.len() {
            self.heard[rank] = self.heard[rank].max(now);
            if let Some(m) = met {
                self.met[rank] = self.met[rank].max(m);
            }
        }
    }

    /// Everyone counts as heard from `now` (all just passed a collective together).
    pub fn all_heard(&mut self, now: Instant) {
        self.heard.iter_mut().for_each(|h| *h = now);
    }

    /// Ranks other than `me` that have not reached meeting `round`.
    pub fn missing(&self, round: u64, me: usize) -> Vec<usize> {
        (0..self.met.len())
            .filter(|&r| r != me && self.met[r] < round)
            .collect()
    }

    /// Of the ranks missing from meeting `round`, those silent for longer than `limit` at `now`.
    pub fn silent(&self, round: u64, me: usize, limit: Duration, now: Instant) -> Vec<usize> {
        self.missing(round, me)
            .into_iter()
            .filter(|&r| now.saturating_duration_since(self.heard[r]) > limit)
            .collect()
    }
}

/// One per job; every rank calls [`Rendezvous::meet`] the same number of times.
#[derive(Debug)]
pub struct Rendezvous {
    limit: Option<Duration>,
    hearing: Hearing,
    round: u64,
    last_beat: Instant,
}

impl Rendezvous {
    /// `limit`: how long a waiting rank tolerates silence from a rank that has not arrived
    /// (`None`: forever).
    pub fn new(world: &World, limit: Option<Duration>) -> Rendezvous {
        let now = Instant::now();
        Rendezvous {
            limit,
            hearing: Hearing::new(world.size(), now),
            round: 0,
            last_beat: now,
        }
    }

    /// This rank is working: at most once per second, tells every other rank so. Cheap enough
    /// to call per batch.
    pub fn beat(&mut self, world: &World) {
        if world.size() <= 1 || self.last_beat.elapsed() < BEAT_EVERY {
            return;
        }
        self.last_beat = Instant::now();
        send_to_others(world, self.round << 1);
        self.take_in(world);
    }

    /// Everyone counts as heard from now: call after a collective every rank has passed.
    pub fn all_heard(&mut self) {
        self.hearing.all_heard(Instant::now());
    }

    /// Returns once every rank has called `meet` as often as this one; fails naming the ranks
    /// not there yet that were silent for longer than the limit. `waiting` runs between looks
    /// (the caller marks its watchdog there: waiting here is progress). One process: at once.
    pub fn meet(&mut self, world: &World, mut waiting: impl FnMut()) -> Result<(), Silent> {
        self.round += 1;
        let (rank, round) = (world.rank(), self.round);
        if world.size() <= 1 {
            return Ok(());
        }
        send_to_others(world, round << 1 | 1);
        loop {
            self.take_in(world);
            if self.hearing.missing(round, rank).is_empty() {
                self.hearing.all_heard(Instant::now());
                return Ok(());
            }
            if let Some(limit) = self.limit {
                let silent = self.hearing.silent(round, rank, limit, Instant::now());
                if !silent.is_empty() {
                    return Err(Silent {
                        rank,
                        silent,
                        limit,
                    });
                }
            }
            waiting();
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Records every beat and arrival sent to this rank so far.
    fn take_in(&mut self, world: &World) {
        let comm = world.comm();
        while let Some((message, status)) = comm.any_process().immediate_matched_probe_with_tag(TAG)
        {
            let (value, _) = message.matched_receive::<u64>();
            let from = status.source_rank() as usize;
            let met = (value & 1 == 1).then_some(value >> 1);
            self.hearing.record(from, met, Instant::now());
        }
    }
}

fn send_to_others(world: &World, value: u64) {
    let comm = world.comm();
    for r in (0..world.size()).filter(|&r| r != world.rank()) {
        comm.process_at_rank(r as i32)
            .buffered_send_with_tag(&value, TAG);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ranks_both_missing_and_silent_past_the_limit_are_given_up_on() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut h = Hearing::new(4, t0);
        // Rank 1 reached meeting 1; rank 2 still works and beat at 5 s; rank 3 said nothing.
        h.record(1, Some(1), t0 + s(1));
        h.record(2, None, t0 + s(5));
        assert_eq!(h.missing(1, 0), [2, 3]);
        assert_eq!(h.silent(1, 0, s(4), t0 + s(6)), [3]);
        assert_eq!(h.silent(1, 0, s(4), t0 + s(10)), [2, 3]);
        assert!(h.silent(1, 0, s(10), t0 + s(10)).is_empty());
        // A rank never counts itself (rank 0, asking above, has not met either); an arrival is
        // a sign of life too.
        assert_eq!(h.missing(1, 3), [0, 2]);
        h.record(3, Some(1), t0 + s(7));
        assert_eq!(h.silent(1, 0, s(4), t0 + s(10)), [2]);
        // After a collective everyone is heard from anew; meetings never go backwards.
        h.all_heard(t0 + s(20));
        assert!(h.silent(2, 0, s(4), t0 + s(21)).is_empty());
        h.record(1, Some(0), t0 + s(21));
        assert_eq!(h.missing(1, 0), [2]);
        // Out-of-range ranks are ignored.
        h.record(9, Some(5), t0);
    }
}
