//! A POSIX shared-memory segment mapped by every rank of one host: a header holding a barrier,
//! then one slot of `f32`s per rank. What [`node`](crate::node) moves gradients through.
//!
//! Why our own barrier: Open MPI's blocking collectives spin, and with more ranks than cores
//! (or beside the input pipeline's threads) spinning ranks take the cores the working ranks
//! need. This one spins briefly, then sleeps in the kernel (`futex` on the shared word) until the
//! last rank arrives and wakes everyone.
//!
//! Unsafe code: mapping, the futex calls, and handing out slots. Nothing here knows who may
//! write a slot when; [`Segment::slot`] and [`Segment::slot_mut`] are `unsafe` and their callers
//! follow the protocol in `node.rs`, where barriers separate every write from the reads of it.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::ops::Range;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Bytes before the first slot: the barrier's two words, each on its own cache line, then each
/// rank's arrival count and "in the ring across hosts" flag.
const HEADER: usize = 4096;

/// Ranks per host the header has words for. Hosts with more fall back to the flat ring.
pub(crate) const MAX_RANKS: usize = 240;

/// Looks at the barrier word this many times before sleeping on it.
const SPINS: u32 = 100;

/// Where Linux keeps POSIX shared-memory names.
const SHM_DIR: &str = "/dev/shm";

/// How every segment name the trainer makes begins; the creator's pid follows:
/// `/dawnrun-<pid>-<anything>`. [`sweep_stale`] relies on that shape.
pub(crate) const NAME_PREFIX: &str = "dawnrun-";

#[repr(C)]
struct Header {
    arrived: AtomicU32,
    _pad: [u8; 60],
    generation: AtomicU32,
    _pad2: [u8; 60],
    /// Barriers each rank has entered: a rank whose count is below another's has not reached
    /// the barrier the other waits in. Read only to name a frozen rank (see [`Segment::arrivals`]).
    entered: [AtomicU64; MAX_RANKS],
    /// Nonzero while the rank is in the ring across hosts, between two barriers.
    across: [AtomicU32; MAX_RANKS],
}

const _: () = assert!(std::mem::size_of::<Header>() <= HEADER);

/// One mapping of a named segment; unmapped on drop. The name is unlinked by its creator as soon
/// as every rank has mapped it, so a `kill -9` after that leaves nothing in `/dev/shm`; one in
/// the moment between creating and unlinking (at the trainer's setup) leaves the segment, until
/// the next job on the host removes it ([`sweep_stale`]).
pub(crate) struct Segment {
    base: *mut u8,
    bytes: usize,
    slots: usize,
    slot_len: usize,
}

// SAFETY: the mapping is plain memory shared with other processes; the barrier words are atomics,
// and the slots are only reached through the `unsafe` accessors below.
unsafe impl Send for Segment {}
// SAFETY: as for `Send`: a thread of this process (the stall watchdog) reads only the header's
// atomics; the slots' protocol between processes covers threads alike.
unsafe impl Sync for Segment {}

impl Segment {
    /// Creates `name` (must not exist) with `slots` slots of `slot_len` f32s, reserving its
    /// memory now so that a full `/dev/shm` is an error here, not a SIGBUS later.
    pub(crate) fn create(name: &str, slots: usize, slot_len: usize) -> io::Result<Segment> {
        let bytes = HEADER + slots * slot_len * std::mem::size_of::<f32>();
        let fd = shm_open(name, libc::O_CREAT | libc::O_EXCL | libc::O_RDWR)?;
        // SAFETY: `fd` is an open descriptor we own; both calls only take integers.
        let reserved = unsafe {
            if libc::ftruncate(fd, bytes as libc::off_t) != 0 {
                Err(io::Error::last_os_error())
            } else {
                match libc::posix_fallocate(fd, 0, bytes as libc::off_t) {
                    0 => Ok(()),
                    e => Err(io::Error::from_raw_os_error(e)),
                }
            }
        };
        let mapped = reserved.and_then(|()| map(fd, bytes));
        // SAFETY: we own `fd`; the mapping (if any) stays valid after the close.
        unsafe { libc::close(fd) };
        match mapped {
            Ok(base) => Ok(Segment {
                base,
                bytes,
                slots,
                slot_len,
            }),
            Err(e) => {
                let _ = unlink(name);
                Err(e)
            }
        }
    }

    /// Maps the existing `name`, made by [`Segment::create`] with the same shape.
    pub(crate) fn open(name: &str, slots: usize, slot_len: usize) -> io::Result<Segment> {
        let bytes = HEADER + slots * slot_len * std::mem::size_of::<f32>();
        let fd = shm_open(name, libc::O_RDWR)?;
        let mapped = map(fd, bytes);
        // SAFETY: as in `create`.
        unsafe { libc::close(fd) };
        Ok(Segment {
            base: mapped?,
            bytes,
            slots,
            slot_len,
        })
    }

    pub(crate) fn slot_len(&self) -> usize {
        self.slot_len
    }

    fn header(&self) -> &Header {
        // SAFETY: the mapping starts with HEADER zeroed bytes (a fresh segment), page aligned,
        // and lives as long as `self`; AtomicU32 has u32's layout.
        unsafe { &*self.base.cast::<Header>() }
    }

    /// Start of elements `range` of slot `slot`.
    fn elements(&self, slot: usize, range: &Range<usize>) -> *mut f32 {
        assert!(slot < self.slots, "slot {slot} of {}", self.slots);
        assert!(
            range.start <= range.end && range.end <= self.slot_len,
            "elements {range:?} of a slot of {}",
            self.slot_len
        );
        // SAFETY: in bounds of the mapping by the asserts and the size computed at creation.
        unsafe {
            self.base
                .add(HEADER)
                .cast::<f32>()
                .add(slot * self.slot_len + range.start)
        }
    }

    /// Elements `range` of slot `slot`, to read.
    ///
    /// # Safety
    /// No process may write those elements while the returned slice lives (in `node.rs`: a
    /// barrier lies between every write of a slot's range and the reads of it).
    pub(crate) unsafe fn slot(&self, slot: usize, range: Range<usize>) -> &[f32] {
        std::slice::from_raw_parts(self.elements(slot, &range), range.len())
    }

    /// Elements `range` of slot `slot`, to write.
    ///
    /// # Safety
    /// No other process may read or write those elements while the returned slice lives.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn slot_mut(&self, slot: usize, range: Range<usize>) -> &mut [f32] {
        std::slice::from_raw_parts_mut(self.elements(slot, &range), range.len())
    }

    /// Returns once all `ranks` mappers of the segment have called it (a sense-reversing
    /// barrier: the last to arrive resets the count and bumps the generation). Every write to a
    /// slot before it is visible to every read after it. `me` is the caller's rank on the host.
    pub(crate) fn barrier(&self, ranks: u32, me: usize) {
        let h = self.header();
        h.entered[me].fetch_add(1, Ordering::Relaxed);
        let generation = h.generation.load(Ordering::Acquire);
        if h.arrived.fetch_add(1, Ordering::AcqRel) + 1 == ranks {
            h.arrived.store(0, Ordering::Relaxed);
            h.generation
                .store(generation.wrapping_add(1), Ordering::Release);
            futex_wake_all(&h.generation);
            return;
        }
        let mut spins = 0;
        while h.generation.load(Ordering::Acquire) == generation {
            if spins < SPINS {
                spins += 1;
                std::hint::spin_loop();
            } else {
                futex_wait(&h.generation, generation);
            }
        }
    }
}

impl Segment {
    /// Marks rank `me` as in (`true`) or out of the ring across hosts.
    pub(crate) fn set_across(&self, me: usize, across: bool) {
        self.header().across[me].store(u32::from(across), Ordering::Relaxed);
    }

    /// Each of the first `ranks` ranks' barrier count and whether it is in the ring across
    /// hosts, as of now (a snapshot of words that may be changing: for diagnostics only).
    pub(crate) fn arrivals(&self, ranks: usize) -> Vec<(u64, bool)> {
        let h = self.header();
        (0..ranks.min(MAX_RANKS))
            .map(|r| {
                (
                    h.entered[r].load(Ordering::Relaxed),
                    h.across[r].load(Ordering::Relaxed) != 0,
                )
            })
            .collect()
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `map`; no slice of it outlives `self`
        // (they borrow it).
        unsafe { libc::munmap(self.base.cast(), self.bytes) };
    }
}

/// Removes the segments of jobs killed between making and unlinking their segment (see
/// [`Segment`]): names of our shape whose creator pid no longer exists. Returns each removed
/// file name with its size in bytes. A pid that exists, or that we may not signal, keeps its
/// segment: only "no such process" counts as gone. Ranks of one job racing to remove the same
/// name are fine: the loser's `ENOENT` is ignored. Where `/dev/shm` is shared with another PID
/// namespace, a live creator there looks gone; removing its name before its peers mapped it
/// makes that job fall back to the flat ring with a warning, nothing worse.
pub(crate) fn sweep_stale() -> Vec<(String, u64)> {
    let Ok(dir) = std::fs::read_dir(SHM_DIR) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for entry in dir.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = creator_pid(&file) else {
            continue;
        };
        if process_exists(pid) {
            continue;
        }
        let bytes = entry.metadata().map(|m| m.len()).unwrap_or(0);
        if unlink(&format!("/{file}")).is_ok() {
            removed.push((file, bytes));
        }
    }
    removed
}

/// The creator pid in a `/dev/shm` file name of our shape (`dawnrun-<pid>-...`).
fn creator_pid(file: &str) -> Option<libc::pid_t> {
    let (pid, _) = file.strip_prefix(NAME_PREFIX)?.split_once('-')?;
    pid.parse().ok().filter(|&p: &libc::pid_t| p > 0)
}

fn process_exists(pid: libc::pid_t) -> bool {
    // SAFETY: signal 0 only checks that the pid exists and may be signalled; nothing is sent.
    let ok = unsafe { libc::kill(pid, 0) } == 0;
    ok || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// Removes `name` from the namespace; mappings stay valid.
pub(crate) fn unlink(name: &str) -> io::Result<()> {
    let c = c_name(name)?;
    // SAFETY: `c` is a valid NUL-terminated string.
    if unsafe { libc::shm_unlink(c.as_ptr()) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn c_name(name: &str) -> io::Result<CString> {
    CString::new(name).map_err(|_| io::Error::other("segment name holds a NUL byte"))
}

fn shm_open(name: &str, flags: libc::c_int) -> io::Result<libc::c_int> {
    let c = c_name(name)?;
    // SAFETY: `c` is a valid NUL-terminated string; the result is checked.
    let fd = unsafe { libc::shm_open(c.as_ptr(), flags, 0o600) };
    if fd < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(fd)
    }
}

fn map(fd: libc::c_int, bytes: usize) -> io::Result<*mut u8> {
    // SAFETY: a fresh shared mapping of `bytes` of an open descriptor; the result is checked.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            bytes,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        Err(io::Error::last_os_error())
    } else {
        Ok(base.cast())
    }
}

/// Sleeps while `word` holds `expected` (or for at most 100 ms: the caller looks again).
fn futex_wait(word: &AtomicU32, expected: u32) {
    let timeout = libc::timespec {
        tv_sec: 0,
        tv_nsec: 100_000_000,
    };
    // SAFETY: `word` is a live, aligned u32 in shared memory (hence no FUTEX_PRIVATE_FLAG);
    // the kernel only reads it. Spurious returns are fine: the caller loops.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            &timeout as *const libc::timespec,
        );
    }
}

fn futex_wake_all(word: &AtomicU32) {
    // SAFETY: as in `futex_wait`; waking has no memory effect besides the waiters returning.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, i32::MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_segment_is_shared_between_two_mappings_and_the_barrier_lets_one_thread_through() {
        let name = format!("/dawnrun-test-{}", std::process::id());
        let a = Segment::create(&name, 2, 8).unwrap();
        let b = Segment::open(&name, 2, 8).unwrap();
        unlink(&name).unwrap();
        assert!(Segment::open(&name, 2, 8).is_err(), "unlinked");
        // SAFETY: one thread, no concurrent access.
        unsafe { a.slot_mut(1, 0..8)[3] = 7.5 };
        assert_eq!(unsafe { b.slot(1, 3..4) }, [7.5]);
        // Two threads, two mappings, many barriers: each round both must see the other's write.
        let rounds = 200;
        let t = std::thread::spawn(move || {
            for i in 0..rounds {
                unsafe { b.slot_mut(0, 0..1)[0] = i as f32 };
                b.barrier(2, 1);
                assert_eq!(unsafe { b.slot(1, 0..1)[0] }, i as f32);
                b.barrier(2, 1);
            }
        });
        for i in 0..rounds {
            unsafe { a.slot_mut(1, 0..1)[0] = i as f32 };
            a.barrier(2, 0);
            assert_eq!(unsafe { a.slot(0, 0..1)[0] }, i as f32);
            a.barrier(2, 0);
        }
        t.join().unwrap();
        // Both entered every barrier; nobody is in a ring across hosts.
        assert_eq!(a.arrivals(2), [(2 * rounds, false); 2]);
        a.set_across(1, true);
        assert_eq!(a.arrivals(2)[1], (2 * rounds, true));
    }

    #[test]
    fn only_names_of_our_shape_carry_a_creator_pid() {
        assert_eq!(creator_pid("dawnrun-4242-123456789"), Some(4242));
        assert_eq!(creator_pid("dawnrun-7-x"), Some(7));
        assert_eq!(creator_pid("dawnrun-test-4242"), None);
        assert_eq!(creator_pid("dawnrun-0-1"), None);
        assert_eq!(creator_pid("dawnrun-4242"), None);
        assert_eq!(creator_pid("other-4242-1"), None);
        assert_eq!(creator_pid("sem.dawnrun-4242-1"), None);
    }

    #[test]
    fn the_sweep_removes_a_dead_creators_segment_and_keeps_a_live_ones() {
        // A pid that existed and is gone: a child we started and reaped.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let stale = format!("/{NAME_PREFIX}{dead}-1");
        let live = format!("/{NAME_PREFIX}{}-2", std::process::id());
        drop(Segment::create(&stale, 1, 4).unwrap());
        drop(Segment::create(&live, 1, 4).unwrap());
        let removed = sweep_stale();
        let exists = |name: &str| std::path::Path::new(SHM_DIR).join(&name[1..]).exists();
        let live_kept = exists(&live);
        let _ = unlink(&live);
        let _ = unlink(&stale);
        assert!(
            removed
                .iter()
                .any(|(f, bytes)| *f == stale[1..] && *bytes > 0),
            "{removed:?}"
        );
        assert!(live_kept, "a live creator's segment was removed");
    }

    #[test]
    fn creating_an_existing_name_fails() {
        let name = format!("/dawnrun-test-excl-{}", std::process::id());
        let _a = Segment::create(&name, 1, 4).unwrap();
        assert!(Segment::create(&name, 1, 4).is_err());
        unlink(&name).unwrap();
    }
}
