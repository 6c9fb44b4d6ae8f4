//! The MPI world: initialisation, who we are, rank-0 broadcast, config agreement, failing loudly.
//!
//! Built once in `bin/` (`World::init`) and passed down by reference; the only owner of MPI's
//! lifetime (dropping it calls `MPI_Finalize`). Works under `mpirun` and as a plain single
//! process (Open MPI's singleton mode: rank 0 of 1).
//!
//! Process-wide state, and why it exists:
//! - MPI itself is initialised once per process (an MPI rule, not ours): a second
//!   [`World::init`] is an error.
//! - [`World::install_abort_on_panic`] sets the panic hook. A panic on one rank otherwise leaves
//!   every other rank waiting in a collective forever (Open MPI does not notice a dead peer by itself); the hook turns it into
//!   `MPI_Abort`, which makes `mpirun` end the whole job. It is set once, at start, by `bin/`.
//!
//! A returned error is the caller's to turn into an abort: [`World::fail`].

use mpi::collective::{CommunicatorCollectives, Root};
use mpi::datatype::{Equivalence, PartitionMut};
use mpi::environment::Universe;
use mpi::point_to_point::{Destination, Source};
use mpi::topology::{Communicator, SimpleCommunicator};
use mpi::Threading;

/// Exit code of a rank that returned an error (as every dawnrun binary's `error:` exit).
pub const ERROR_EXIT_CODE: i32 = 2;
/// Exit code of a rank that panicked (Rust's own panic exit code).
pub const PANIC_EXIT_CODE: i32 = 101;

/// Bytes attached for `MPI_Bsend`: the stall check's 8-byte readiness messages (a rank can be at
/// most one step ahead of rank 0, so a few are buffered) and the rendezvous' (one to every other
/// rank per beat), so it grows with the world: each message takes 8 bytes plus MPI's overhead
/// (under a hundred bytes) until it is sent.
const BSEND_BUFFER_BYTES: usize = 64 * 1024;
const BSEND_BYTES_PER_RANK: usize = 1024;

/// The tag of [`World::broadcast_idle`]'s messages, and how long a waiting rank sleeps between
/// looks for one: 1 ms at first, doubling up to 16 ms (about 60 wake-ups a second on a core
/// another process is being timed on; the first step after a wait starts up to 16 ms late).
const IDLE_TAG: i32 = 0x4944;
const IDLE_POLL_FIRST: std::time::Duration = std::time::Duration::from_millis(1);
const IDLE_POLL_LAST: std::time::Duration = std::time::Duration::from_millis(16);

/// Broadcasts go in pieces of at most this many elements (MPI counts are C `int`).
const MAX_PIECE: usize = 1 << 30;

/// Errors of the world's collectives. Collective arguments that every rank knows (root, lengths
/// after the length broadcast) are checked identically on every rank, so all ranks return the
/// same error together instead of one rank leaving the others waiting.
#[derive(Debug, thiserror::Error)]
pub enum WorldError {
    #[error("MPI is already initialised in this process; World::init may run once")]
    AlreadyInitialised,
    #[error("MPI provides thread level {provided:?}; dawnrun needs at least Funneled (MPI on the main thread, other threads beside it)")]
    ThreadLevel { provided: Threading },
    #[error("rank {rank}: {what}: root rank {root} is outside the world of {size} ranks")]
    BadRoot {
        rank: usize,
        what: &'static str,
        root: usize,
        size: usize,
    },
    #[error("rank {rank}: gather: {total} bytes over all ranks exceed MPI's count limit {max}")]
    GatherTooLarge {
        rank: usize,
        total: usize,
        max: usize,
    },
    #[error("{what} differs between ranks: ranks {ranks:?} disagree with rank 0 (world of {size} ranks)")]
    Mismatch {
        what: String,
        ranks: Vec<usize>,
        size: usize,
    },
}

/// One process's view of the MPI world. See the module docs for lifetime and global state.
pub struct World {
    comm: SimpleCommunicator,
    rank: usize,
    size: usize,
    local_rank: usize,
    local_size: usize,
    cpu_sharers: usize,
    cpu_affinity: usize,
    hostname: String,
    // Last field: dropped after the communicator handle; its Drop calls MPI_Finalize.
    _universe: Universe,
}

impl std::fmt::Debug for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("World")
            .field("rank", &self.rank)
            .field("size", &self.size)
            .field("local_rank", &self.local_rank)
            .field("local_size", &self.local_size)
            .field("cpu_sharers", &self.cpu_sharers)
            .field("cpu_affinity", &self.cpu_affinity)
            .field("hostname", &self.hostname)
            .finish()
    }
}

impl World {
    /// Initialises MPI (thread level Funneled: only the main thread calls MPI; the timeline
    /// and data pipeline threads never do) and learns rank, size and the node-local rank.
    ///
    /// The local rank comes from splitting the world by shared memory (`MPI_Comm_split_type`
    /// with `MPI_COMM_TYPE_SHARED`): ranks on one host are numbered 0..local_size, so a GPU
    /// machine picks GPU `local_rank`.
    pub fn init() -> Result<World, WorldError> {
        let (mut universe, provided) = mpi::initialize_with_threading(Threading::Funneled)
            .ok_or(WorldError::AlreadyInitialised)?;
        if provided < Threading::Funneled {
            return Err(WorldError::ThreadLevel { provided });
        }
        let ranks = to_usize(universe.world().size());
        universe.set_buffer_size(BSEND_BUFFER_BYTES + BSEND_BYTES_PER_RANK * ranks);
        let comm = universe.world();
        let rank = to_usize(comm.rank());
        let size = to_usize(comm.size());
        let cpu_affinity;
        let (local_rank, local_size, cpu_sharers) = {
            // Freed at the end of this block, long before MPI_Finalize.
            let local = comm.split_shared(comm.rank());
            let mine = crate::cpus::allowed();
            let mut all = vec![[0u64; 16]; to_usize(local.size())];
            local.all_gather_into(&mine[..], &mut all.as_flattened_mut()[..]);
            let sharers = crate::cpus::sharers(&mine, &all);
            cpu_affinity = crate::cpus::count(&mine);
            (to_usize(local.rank()), to_usize(local.size()), sharers)
        };
        let hostname = mpi::environment::processor_name()
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        Ok(World {
            comm,
            rank,
            size,
            local_rank,
            local_size,
            cpu_sharers,
            cpu_affinity,
            hostname,
            _universe: universe,
        })
    }

    /// This process's rank, 0-based.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Number of ranks (1 without mpirun).
    pub fn size(&self) -> usize {
        self.size
    }

    /// Rank among the ranks on this host (shared-memory split); the GPU to use.
    pub fn local_rank(&self) -> usize {
        self.local_rank
    }

    /// Number of ranks on this host.
    pub fn local_size(&self) -> usize {
        self.local_size
    }

    /// How many ranks of this host may run on this rank's CPUs, itself included: 1 when each
    /// rank is bound to its own cores, the host's rank count when none is bound (see
    /// [`crate::cpus`]).
    pub fn cpu_sharers(&self) -> usize {
        self.cpu_sharers
    }

    /// The number of CPUs this rank's affinity mask allows; 0 when it could not be read.
    pub fn cpu_affinity(&self) -> usize {
        self.cpu_affinity
    }

    /// MPI's processor name (the host name under Open MPI).
    pub fn hostname(&self) -> &str {
        &self.hostname
    }

    pub(crate) fn comm(&self) -> &SimpleCommunicator {
        &self.comm
    }

    fn check_root(&self, what: &'static str, root: usize) -> Result<i32, WorldError> {
        if root < self.size {
            Ok(root as i32)
        } else {
            Err(WorldError::BadRoot {
                rank: self.rank,
                what,
                root,
                size: self.size,
            })
        }
    }

    /// Replaces `bytes` on every rank with root's: the length goes first, so other ranks may pass
    /// any vector (it is resized).
    pub fn broadcast_bytes(&self, bytes: &mut Vec<u8>, root: usize) -> Result<(), WorldError> {
        let root = self.check_root("broadcast_bytes", root)?;
        broadcast_bytes_on(&self.comm, bytes, root);
        Ok(())
    }

    /// Replaces `bytes` on every rank with rank 0's, for ranks that may wait minutes for them
    /// (a `trainer bench --serve` job between requests). The others look for the message now and
    /// then and sleep in between: `MPI_Bcast` would keep their cores busy polling, and the bench
    /// times another process on those cores meanwhile. `bytes` must fit MPI's attached send
    /// buffer: short messages, a few hundred bytes.
    pub fn broadcast_idle(&self, bytes: &mut Vec<u8>) {
        if self.rank == 0 {
            for r in 1..self.size {
                self.comm
                    .process_at_rank(r as i32)
                    .buffered_send_with_tag(&bytes[..], IDLE_TAG);
            }
            return;
        }
        let root = self.comm.process_at_rank(0);
        let mut nap = IDLE_POLL_FIRST;
        loop {
            if let Some((message, status)) = root.immediate_matched_probe_with_tag(IDLE_TAG) {
                let len = status.count(u8::equivalent_datatype());
                bytes.resize(len.max(0) as usize, 0);
                message.matched_receive_into(&mut bytes[..]);
                return;
            }
            std::thread::sleep(nap);
            nap = (nap * 2).min(IDLE_POLL_LAST);
        }
    }

    /// Replaces `values` with root's. Every rank must pass the same length (e.g. the same model);
    /// use [`World::check_same`] on the shapes first if that is in doubt.
    pub fn broadcast_f32(&self, values: &mut [f32], root: usize) -> Result<(), WorldError> {
        let root_process = self
            .comm
            .process_at_rank(self.check_root("broadcast_f32", root)?);
        for piece in values.chunks_mut(MAX_PIECE) {
            root_process.broadcast_into(piece);
        }
        Ok(())
    }

    /// The ranks whose `bytes` differ from rank 0's (compared by [`fingerprint`]); the same list
    /// on every rank.
    pub fn ranks_differing(&self, bytes: &[u8]) -> Vec<usize> {
        let mine = fingerprint(bytes);
        let mut all = vec![0u64; self.size];
        self.comm.all_gather_into(&mine, &mut all[..]);
        (0..self.size).filter(|&r| all[r] != all[0]).collect()
    }

    /// Refuses to go on unless every rank passed the same `bytes`; `what` names them in the error
    /// ("schedule", "data index"). Every rank gets the same verdict.
    pub fn check_same(&self, what: &str, bytes: &[u8]) -> Result<(), WorldError> {
        let ranks = self.ranks_differing(bytes);
        if ranks.is_empty() {
            Ok(())
        } else {
            Err(WorldError::Mismatch {
                what: what.to_string(),
                ranks,
                size: self.size,
            })
        }
    }

    /// Gathers every rank's `bytes` to rank 0: `Some(per-rank bytes)` on rank 0, `None` elsewhere.
    pub fn gather_bytes(&self, bytes: &[u8]) -> Result<Option<Vec<Vec<u8>>>, WorldError> {
        let mut lens = vec![0u64; self.size];
        self.comm
            .all_gather_into(&(bytes.len() as u64), &mut lens[..]);
        let total: u64 = lens.iter().sum();
        let max = i32::MAX as usize;
        if total > max as u64 {
            return Err(WorldError::GatherTooLarge {
                rank: self.rank,
                total: to_usize(total),
                max,
            });
        }
        let root = self.comm.process_at_rank(0);
        if self.rank != 0 {
            root.gather_varcount_into(bytes);
            return Ok(None);
        }
        let counts: Vec<i32> = lens.iter().map(|&l| l as i32).collect();
        let displs: Vec<i32> = counts
            .iter()
            .scan(0i32, |at, &c| {
                let d = *at;
                *at += c;
                Some(d)
            })
            .collect();
        let mut all = vec![0u8; total as usize];
        {
            let mut partition = PartitionMut::new(&mut all[..], &counts[..], &displs[..]);
            root.gather_varcount_into_root(bytes, &mut partition);
        }
        let per_rank = counts
            .iter()
            .zip(&displs)
            .map(|(&c, &d)| all[d as usize..(d + c) as usize].to_vec())
            .collect();
        Ok(Some(per_rank))
    }

    /// Sums `values` element-wise over all ranks, in place (`MPI_Allreduce`, f64). For the few
    /// per-step scalars (loss, skip counts), not for gradients: the result may differ in the last
    /// bit between ranks, but a non-finite input makes the sum non-finite on every rank.
    pub fn sum_f64(&self, values: &mut [f64]) {
        if self.size == 1 {
            return;
        }
        crate::in_place::sum_in_place(&self.comm, values);
    }

    /// Sums `data` element-wise over all ranks with one `MPI_Allreduce(MPI_IN_PLACE)`: the
    /// library's own all-reduce, the `mpi` method's work and the bench's reference.
    pub fn mpi_sum_f32(&self, data: &mut [f32]) {
        if self.size > 1 {
            crate::in_place::sum_in_place(&self.comm, data);
        }
    }

    /// Waits until every rank is here.
    pub fn barrier(&self) {
        self.comm.barrier();
    }

    /// Ends the whole job now (`MPI_Abort` on the world): `mpirun` kills every rank and exits
    /// with `code`. Use after printing why.
    /// One process alone (no mpirun) simply exits: nobody waits, and it spares the user Open
    /// MPI's abort banner.
    pub fn abort(&self, code: i32) -> ! {
        if self.size == 1 {
            std::process::exit(code);
        }
        self.comm.abort(code)
    }

    /// What a binary does with an error from `run()` under MPI: prints
    /// `rank R: error: <whole cause chain>` to stderr and aborts the world with exit code 2,
    /// so no other rank is left waiting in a collective (one failure ends the whole job).
    pub fn fail(&self, err: &anyhow::Error) -> ! {
        crate::say!("rank {}: error: {:#}", self.rank, err);
        self.abort(ERROR_EXIT_CODE)
    }

    /// Installs the process-wide panic hook: print `rank R: panic: <message> at <file:line>` and
    /// `MPI_Abort` the world with exit code 101, so a panic on one rank ends the job instead of
    /// hanging it. Call once, right after [`World::init`], from `bin/`. A panic after MPI is
    /// finalised falls through to the previous hook.
    ///
    /// The hook may run on a non-main thread (a pipeline worker). Calling `MPI_Abort` there is
    /// outside what thread level Funneled promises, but it is the only way to end the job from
    /// that point, and Open MPI 4.1 honours it (killing the job is all we ask of it).
    ///
    /// `caught()` is asked first: when it says the panicking thread will catch the panic itself
    /// (a JPEG decode worker turns a decoder panic into a skipped image), the hook stays silent:
    /// the worker names the image and the panic's message when it skips it.
    pub fn install_abort_on_panic(&self, caught: fn() -> bool) {
        let rank = self.rank;
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if caught() {
                return;
            }
            let message = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(non-string panic payload)".to_string());
            let location = info
                .location()
                .map(|l| format!(" at {}:{}", l.file(), l.line()))
                .unwrap_or_default();
            crate::say!("rank {rank}: panic: {message}{location}");
            if mpi::environment::is_initialized() && !mpi::environment::is_finalized() {
                let world = SimpleCommunicator::world();
                if world.size() == 1 {
                    std::process::exit(PANIC_EXIT_CODE);
                }
                world.abort(PANIC_EXIT_CODE);
            }
            previous(info);
        }));
    }
}

/// [`World::broadcast_bytes`] over any communicator (a host's, in the hierarchical all-reduce):
/// the length first, then the bytes in pieces MPI can count. `root` must be a rank of `comm`.
pub(crate) fn broadcast_bytes_on(comm: &SimpleCommunicator, bytes: &mut Vec<u8>, root: i32) {
    let root_process = comm.process_at_rank(root);
    let mut len = bytes.len() as u64;
    root_process.broadcast_into(&mut len);
    bytes.resize(to_usize(len), 0);
    for piece in bytes.chunks_mut(MAX_PIECE) {
        root_process.broadcast_into(piece);
    }
}

/// Ranks and sizes from MPI are non-negative `int`s.
fn to_usize<T: TryInto<usize>>(v: T) -> usize {
    v.try_into()
        .unwrap_or_else(|_| panic!("MPI returned a negative rank, size or count"))
}

/// 64-bit FNV-1a of `bytes`: a cheap fingerprint for comparing configs and results across ranks
/// (not cryptographic; equal inputs give equal outputs on every rank and platform).
pub fn fingerprint(bytes: &[u8]) -> u64 {
    fnv1a(bytes.iter().copied())
}

/// [`fingerprint`] of the little-endian bytes of `values`: equal iff bitwise equal (up to hash
/// collisions), so `-0.0` and `0.0`, or two NaN payloads, differ.
pub fn fingerprint_f32(values: &[f32]) -> u64 {
    fnv1a(values.iter().flat_map(|v| v.to_le_bytes()))
}

fn fnv1a(bytes: impl Iterator<Item = u8>) -> u64 {
    bytes.fold(0xcbf2_9ce4_8422_2325u64, |hash, b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_matches_fnv1a_reference_values() {
        // Published FNV-1a 64 test vectors.
        assert_eq!(fingerprint(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fingerprint(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fingerprint(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn fingerprint_f32_hashes_the_bit_patterns() {
        for n in 0..50 {
            let values: Vec<f32> = (0..n).map(|i| i as f32 * 0.37 - 3.0).collect();
            let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            assert_eq!(fingerprint_f32(&values), fingerprint(&bytes));
        }
        assert_ne!(fingerprint_f32(&[0.0]), fingerprint_f32(&[-0.0]));
    }

    #[test]
    fn fingerprint_tells_one_bit_apart() {
        let base: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
        let h = fingerprint(&base);
        for i in (0..base.len()).step_by(97) {
            for bit in 0..8 {
                let mut changed = base.clone();
                changed[i] ^= 1 << bit;
                assert_ne!(fingerprint(&changed), h, "byte {i} bit {bit}");
            }
        }
    }
}
