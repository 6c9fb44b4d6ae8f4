//! Stall check (Horovod's): before each all-reduce every rank tells rank 0 "I reached step s";
//! rank 0 waits for all of them and, while some are missing for longer than the warning time,
//! says which ones:
//!
//! `rank 0: stall: ranks [2, 3] have not reached step 118 for 61 s`
//!
//! Without it a lagging rank (slow disk, dead data worker, swap) shows only as everybody's
//! all-reduce taking forever. It warns and keeps waiting until the shutdown time (Horovod's stall
//! shutdown, `distributed.stall_shutdown_s`): then rank 0 ends the job, naming the ranks that
//! never arrived. A frozen rank (stopped, a hung NFS read, a stuck driver) never errors and never
//! exits, so nothing else would end the job: the GPUs of every other rank would sit idle.
//!
//! Rank 0 can only name late ranks while it waits in [`StallCheck::ready`]. Every rank also runs
//! a [`Watchdog`]: a thread that needs nothing from the other ranks, and ends the job when its
//! own rank has made no progress for the shutdown time plus a grace period (rank 0 frozen, or a
//! rank frozen after its readiness report, inside the all-reduce).
//!
//! Cost: one 8-byte `MPI_Bsend` per rank per step (buffered send: it returns at once, whatever
//! rank 0 is doing) and on rank 0 a poll loop that ends as soon as the last report arrives. The
//! all-reduce cannot finish before the last rank arrives anyway, so the critical path grows by
//! one small message. Reports use their own MPI tag, so they never match ring messages.
//!
//! [`StallBook`] is the pure bookkeeping (unit-tested); [`StallCheck`] does the messaging.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mpi::point_to_point::{Destination, Source};
use mpi::topology::Communicator;

use crate::node::{HostBoard, Laggards};
use crate::timeline::Lane;
use crate::world::World;

/// Exit code of a job ended by the stall shutdown.
pub const STALL_EXIT_CODE: i32 = 3;

/// Rank 0 gave up waiting for late ranks.
#[derive(Debug, thiserror::Error)]
#[error(
    "stall shutdown: ranks {late:?} have not reached step {step} after {} s \
     (distributed.stall_shutdown_s); a rank is frozen or far behind",
    .waited.as_secs()
)]
pub struct StallError {
    pub late: Vec<usize>,
    pub step: u64,
    pub waited: Duration,
}

/// MPI tag of readiness reports.
const STALL_TAG: i32 = 0x5354;

/// Poll loop: spin (yielding) this long before sleeping between probes.
const SPIN: Duration = Duration::from_micros(200);
const SLEEP: Duration = Duration::from_micros(500);

/// Rank 0's record of the last step each rank reported. Pure.
#[derive(Debug, Clone)]
pub struct StallBook {
    /// `reached[r]` = highest step rank r reported, `None` before its first report.
    reached: Vec<Option<u64>>,
}

impl StallBook {
    /// A book for `size` ranks, nobody reported yet.
    pub fn new(size: usize) -> StallBook {
        StallBook {
            reached: vec![None; size],
        }
    }

    /// Rank `rank` reached `step`. Out-of-range ranks are ignored; steps never go backwards.
    pub fn record(&mut self, rank: usize, step: u64) {
        if let Some(slot) = self.reached.get_mut(rank) {
            *slot = Some(slot.map_or(step, |s| s.max(step)));
        }
    }

    /// Ranks other than rank 0 that have not yet reported `step` (rank 0 is the one asking).
    pub fn late(&self, step: u64) -> Vec<usize> {
        (1..self.reached.len())
            .filter(|&r| self.reached[r].is_none_or(|s| s < step))
            .collect()
    }

    /// The warning line for `late` ranks at `step` after `waited`.
    pub fn warning(late: &[usize], step: u64, waited: Duration) -> String {
        format!(
            "rank 0: stall: ranks {late:?} have not reached step {step} for {} s",
            waited.as_secs()
        )
    }
}

/// When rank 0 prints warnings while waiting: first after `warn_after`, then again every
/// `warn_after` while still waiting. Pure: the caller brings the clock.
#[derive(Debug, Clone)]
pub struct WarnClock {
    warn_after: Duration,
    next_warning: Duration,
}

impl WarnClock {
    pub fn new(warn_after: Duration) -> WarnClock {
        WarnClock {
            warn_after,
            next_warning: warn_after,
        }
    }

    /// True if a warning is due after `waited`; then the next one is `warn_after` later.
    pub fn due(&mut self, waited: Duration) -> bool {
        if waited < self.next_warning {
            return false;
        }
        while self.next_warning <= waited {
            self.next_warning += self.warn_after.max(Duration::from_millis(1));
        }
        true
    }
}

/// The stall check's messaging; one per run, called once per step.
#[derive(Debug)]
pub struct StallCheck {
    warn_after: Duration,
    shutdown_after: Option<Duration>,
    book: StallBook,
}

impl StallCheck {
    /// `warn_after`: how long rank 0 waits for a late rank before the first warning
    /// (Horovod's default is 60 s); `shutdown_after`: when it gives up (`None`: never).
    pub fn new(
        world: &World,
        warn_after: Duration,
        shutdown_after: Option<Duration>,
    ) -> StallCheck {
        StallCheck {
            warn_after,
            shutdown_after,
            book: StallBook::new(world.size()),
        }
    }

    /// Call on every rank just before step `step`'s all-reduce. Ranks > 0 send their report and
    /// return at once; rank 0 returns when every rank has reported `step`, printing a warning to
    /// stderr each `warn_after` until then, and fails after `shutdown_after` (the caller ends the
    /// job with the error). One process: returns at once.
    pub fn ready(&mut self, world: &World, step: u64) -> Result<(), StallError> {
        let comm = world.comm();
        if world.size() <= 1 {
            return Ok(());
        }
        if world.rank() != 0 {
            comm.process_at_rank(0)
                .buffered_send_with_tag(&step, STALL_TAG);
            return Ok(());
        }
        let start = Instant::now();
        let mut clock = WarnClock::new(self.warn_after);
        loop {
            while let Some((message, status)) = comm
                .any_process()
                .immediate_matched_probe_with_tag(STALL_TAG)
            {
                let (reported, _) = message.matched_receive::<u64>();
                self.book.record(status.source_rank() as usize, reported);
            }
            let late = self.book.late(step);
            if late.is_empty() {
                return Ok(());
            }
            let waited = start.elapsed();
            if self.shutdown_after.is_some_and(|limit| waited >= limit) {
                return Err(StallError { late, step, waited });
            }
            if clock.due(waited) {
                crate::say!("{}", StallBook::warning(&late, step, waited));
            }
            if waited < SPIN {
                std::thread::yield_now();
            } else {
                std::thread::sleep(SLEEP);
            }
        }
    }
}

/// What the watchdog thread reads: the step and lane of this rank's last progress, and when.
#[derive(Debug)]
struct Progress {
    origin: Instant,
    /// Milliseconds since `origin` of the last mark.
    at_ms: AtomicU64,
    step: AtomicU64,
    lane: AtomicUsize,
    stop: AtomicBool,
}

/// The grace a watchdog adds to the shutdown time, so that rank 0's [`StallCheck::ready`], which
/// can name the late ranks, normally ends the job first.
pub fn watchdog_grace(shutdown_after: Duration) -> Duration {
    (shutdown_after / 10).clamp(Duration::from_secs(2), Duration::from_secs(60))
}

/// Whether a rank that last made progress `since` ago has stalled past `limit`. Pure.
pub fn stalled(since: Duration, limit: Duration) -> bool {
    since > limit
}

/// A thread per rank that ends the whole job when this rank makes no progress for `limit`.
/// Progress is a [`Watchdog::mark`] call (the trainer marks every lane of every step); stopping
/// is dropping it. It needs nothing from the other ranks, so a frozen peer cannot stop it.
pub struct Watchdog {
    progress: Arc<Progress>,
    thread: Option<JoinHandle<()>>,
}

impl Watchdog {
    /// Starts the thread; progress counts from now, at `step` (`unit` names what is counted in
    /// its message: `step`, `round`). With `board` (the all-reduce goes through this host's
    /// shared memory) it names the host's ranks that a stuck barrier waits for.
    pub fn start(
        world: &World,
        limit: Duration,
        (unit, step): (&'static str, u64),
        board: Option<HostBoard>,
    ) -> Watchdog {
        let progress = Arc::new(Progress {
            origin: Instant::now(),
            at_ms: AtomicU64::new(0),
            step: AtomicU64::new(step),
            lane: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
        });
        let (rank, size) = (world.rank(), world.size());
        let seen = Arc::clone(&progress);
        let poll = (limit / 20).clamp(Duration::from_millis(50), Duration::from_secs(1));
        let thread = std::thread::Builder::new()
            .name("stall-watchdog".into())
            .spawn(move || loop {
                std::thread::sleep(poll);
                if seen.stop.load(Ordering::Acquire) {
                    return;
                }
                let now = seen.origin.elapsed();
                let since =
                    now.saturating_sub(Duration::from_millis(seen.at_ms.load(Ordering::Acquire)));
                if stalled(since, limit) {
                    let lane = Lane::ALL[seen.lane.load(Ordering::Acquire) % Lane::ALL.len()];
                    let stuck = Stuck {
                        rank,
                        size,
                        since,
                        at: (unit, seen.step.load(Ordering::Acquire)),
                        lane,
                    };
                    let laggards = board.as_ref().map(HostBoard::laggards);
                    crate::say!("{}", stuck.message(laggards.as_ref()));
                    end_job(size);
                }
            })
            .expect("spawning the stall watchdog thread");
        Watchdog {
            progress,
            thread: Some(thread),
        }
    }

    /// This rank is at `step`, in `lane`, now. Three relaxed-cost atomic stores.
    pub fn mark(&self, step: u64, lane: Lane) {
        let p = &self.progress;
        p.step.store(step, Ordering::Release);
        p.lane.store(lane.index(), Ordering::Release);
        p.at_ms
            .store(p.origin.elapsed().as_millis() as u64, Ordering::Release);
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.progress.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What a watchdog knows when it fires.
#[derive(Debug, Clone, Copy)]
struct Stuck {
    rank: usize,
    size: usize,
    since: Duration,
    /// What was counted (`step`, `round`) and where this rank got to.
    at: (&'static str, u64),
    lane: Lane,
}

impl Stuck {
    /// The line a firing watchdog prints; `laggards`, where known, names the host's ranks that
    /// the all-reduce waits for. Pure.
    fn message(&self, laggards: Option<&Laggards>) -> String {
        let Stuck {
            rank,
            size,
            since,
            at: (unit, step),
            lane,
        } = *self;
        let head = format!(
            "rank {rank}: stall shutdown: no progress for {} s at {unit} {step}",
            since.as_secs(),
        );
        // Stuck in its own work, not waiting on the others: this rank is the one.
        if matches!(lane, Lane::Compute | Lane::InputWait) {
            return format!(
                "{head} (this rank is stuck in its own `{}`: a hung device or read?): ending the job",
                lane.name()
            );
        }
        let head = format!("{head} (this rank waits in `{}`)", lane.name());
        let culprit = match laggards {
            // A rank that was stopped and then woken (as `mpirun` does to end the job).
            Some(l) if l.stuck.contains(&rank) => {
                "this rank itself is behind the others of its host: it was stopped or is far \
                 behind"
                    .to_string()
            }
            Some(l) if !l.stuck.is_empty() => format!(
                "on this host, ranks {:?} never reached the all-reduce's barrier that the others \
                 wait in: frozen or far behind",
                l.stuck
            ),
            Some(l) if !l.across.is_empty() => format!(
                "on this host, ranks {:?} are in the ring across hosts: one of them, or its \
                 partner on another host, is frozen or far behind",
                l.across
            ),
            _ => format!("a rank of {size} is frozen or far behind"),
        };
        format!("{head}; {culprit}: ending the job")
    }
}

/// Ends the job from the watchdog thread: `MPI_Abort` (outside the Funneled thread level, as the
/// panic hook does; Open MPI honours it), and a hard exit should even that not return.
fn end_job(size: usize) -> ! {
    std::thread::spawn(|| {
        std::thread::sleep(Duration::from_secs(20));
        std::process::abort();
    });
    if size > 1 && mpi::environment::is_initialized() && !mpi::environment::is_finalized() {
        use mpi::topology::SimpleCommunicator;
        SimpleCommunicator::world().abort(STALL_EXIT_CODE)
    }
    std::process::exit(STALL_EXIT_CODE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_firing_watchdog_names_the_hosts_stuck_ranks_else_those_waiting_across_hosts() {
        let stuck = Stuck {
            rank: 0,
            size: 4,
            since: Duration::from_secs(6),
            at: ("step", 5),
            lane: Lane::Allreduce,
        };
        let head = "rank 0: stall shutdown: no progress for 6 s at step 5 (this rank waits in `allreduce`); ";
        let frozen = Laggards {
            stuck: vec![1],
            across: vec![3],
        };
        assert_eq!(
            stuck.message(Some(&frozen)),
            format!(
                "{head}on this host, ranks [1] never reached the all-reduce's barrier that the \
                 others wait in: frozen or far behind: ending the job"
            )
        );
        let elsewhere = Laggards {
            stuck: vec![],
            across: vec![2, 3],
        };
        assert!(stuck
            .message(Some(&elsewhere))
            .ends_with("ranks [2, 3] are in the ring across hosts: one of them, or its partner on another host, is frozen or far behind: ending the job"));
        let woken = Stuck { rank: 1, ..stuck };
        assert!(woken
            .message(Some(&frozen))
            .ends_with("this rank itself is behind the others of its host: it was stopped or is far behind: ending the job"));
        let unknown = format!("{head}a rank of 4 is frozen or far behind: ending the job");
        let own = Stuck {
            lane: Lane::Compute,
            at: ("round", 3),
            ..stuck
        };
        assert_eq!(
            own.message(Some(&frozen)),
            "rank 0: stall shutdown: no progress for 6 s at round 3 (this rank is stuck in its \
             own `compute`: a hung device or read?): ending the job"
        );
        assert_eq!(stuck.message(Some(&Laggards::default())), unknown);
        assert_eq!(stuck.message(None), unknown);
    }

    #[test]
    fn late_lists_ranks_below_the_step_in_order() {
        for size in 1..10usize {
            for step in 0..5u64 {
                let mut book = StallBook::new(size);
                assert_eq!(
                    book.late(step),
                    (1..size).collect::<Vec<_>>(),
                    "nobody reported yet"
                );
                for r in 0..size {
                    // Even ranks reach the step, odd ranks are one behind (step 0: never reported).
                    if r % 2 == 0 {
                        book.record(r, step);
                    } else if step > 0 {
                        book.record(r, step - 1);
                    }
                }
                let expected: Vec<usize> = (1..size).filter(|r| r % 2 == 1).collect();
                assert_eq!(book.late(step), expected, "size {size} step {step}");
                for r in 0..size {
                    book.record(r, step + 3);
                }
                assert!(book.late(step).is_empty());
            }
        }
    }

    #[test]
    fn steps_never_go_backwards_and_bad_ranks_are_ignored() {
        let mut book = StallBook::new(3);
        book.record(1, 10);
        book.record(1, 4);
        book.record(2, 10);
        book.record(99, 10);
        assert!(book.late(10).is_empty());
        assert_eq!(book.late(11), vec![1, 2]);
    }

    #[test]
    fn a_watchdog_fires_only_past_its_limit_and_its_grace_is_bounded() {
        let limit = Duration::from_secs(10);
        assert!(!stalled(Duration::from_secs(10), limit));
        assert!(stalled(Duration::from_millis(10_001), limit));
        assert_eq!(
            watchdog_grace(Duration::from_secs(5)),
            Duration::from_secs(2)
        );
        assert_eq!(
            watchdog_grace(Duration::from_secs(600)),
            Duration::from_secs(60)
        );
        assert_eq!(
            watchdog_grace(Duration::from_secs(100)),
            Duration::from_secs(10)
        );
    }

    #[test]
    fn the_shutdown_message_names_ranks_step_and_wait() {
        let e = StallError {
            late: vec![1],
            step: 22,
            waited: Duration::from_millis(600_400),
        };
        let text = e.to_string();
        assert!(
            text.contains("ranks [1] have not reached step 22 after 600 s"),
            "{text}"
        );
    }

    #[test]
    fn warning_reads_like_horovods() {
        let line = StallBook::warning(&[2, 3], 118, Duration::from_millis(61_400));
        assert_eq!(
            line,
            "rank 0: stall: ranks [2, 3] have not reached step 118 for 61 s"
        );
    }

    #[test]
    fn warnings_come_once_per_interval() {
        for secs in 1..20u64 {
            let every = Duration::from_secs(secs);
            let mut clock = WarnClock::new(every);
            let mut count = 0;
            let mut t = Duration::ZERO;
            while t < every * 5 + every / 2 {
                if clock.due(t) {
                    count += 1;
                }
                t += Duration::from_millis(100);
            }
            assert_eq!(count, 5, "warn every {secs} s over 5.5 intervals");
        }
        // A long gap in polling gives one warning, not a burst.
        let mut clock = WarnClock::new(Duration::from_secs(1));
        assert!(clock.due(Duration::from_secs(10)));
        assert!(!clock.due(Duration::from_millis(10_500)));
        assert!(clock.due(Duration::from_secs(11)));
    }
}
