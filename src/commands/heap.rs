//! glibc malloc's settings for a process that frees and reallocates the same large tensors
//! every step.
//!
//! TensorFlow's CPU tensors come from `malloc`. glibc gives each thread an arena; an arena
//! whose first heap is full puts a large tensor (ResNet's 9.4 MB 3x3x512x512 filters and their
//! gradients) on a second 64 MB heap, and when a `free` leaves that heap empty, glibc unmaps
//! it whole. The next step maps a new one and faults every page of it in again. Whether a
//! process falls into that cycle depends on which arena each TensorFlow thread happened to
//! get and what else lives there, and it stays in it for life. Measured on the EPYC box
//! (ResNet-18 fp32, batch 32, 128 px, one core): 4 of 19 processes took 3,200-20,700 page
//! faults a step (up to 30-40 ms of kernel time, 2-3% of the step); the others took none. At
//! np > 1 one such rank slows every rank.
//!
//! The fix is the allocator keeping what it was given, as TensorFlow's own BFC allocator does
//! on a GPU:
//! - `M_TOP_PAD` of 64 MB, a whole heap. glibc deletes an empty heap only when the heap before
//!   it still has `pad` bytes of room, and trims a heap's free top only beyond `pad`: with a
//!   whole heap as the pad, neither happens;
//! - `M_TRIM_THRESHOLD` at its largest: the main arena (grown with `brk`) never gives back
//!   its free top either;
//! - `M_MMAP_THRESHOLD` at glibc's ceiling of 32 MB. Setting either of the two above turns off
//!   glibc's sliding threshold, which otherwise climbs to the size of the largest freed block
//!   (up to that same ceiling); without it every block above 128 KB would get its own mapping.
//!   Blocks of 32 MB and more still do, and are unmapped at each `free`, as before.
//!
//! The cost: a process keeps its peak heap until it exits, which a training process reaches
//! in its first steps anyway; and each new heap is made writable in full (64 MB of address
//! space; pages become resident only when written), which counts against
//! `vm.overcommit_memory=2` or `RLIMIT_DATA` where those are set.
//!
//! Unsafe code: the `mallopt` calls, and `getrusage` and `prctl` in the test.
#![allow(unsafe_code)]

/// Applies the settings above to this process's glibc `malloc` (64-bit Linux; a no-op
/// elsewhere). Call in `main` before any thread starts: `mallopt` is not thread-safe. If
/// glibc refuses the threshold, nothing is changed, since the other two alone would pin the
/// threshold at 128 KB.
pub(crate) fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu", target_pointer_width = "64"))]
    {
        // SAFETY: mallopt only sets allocator parameters and has no memory effect on blocks
        // already handed out; it is called before the process starts any thread.
        let set = |param, value| unsafe { libc::mallopt(param, value) } == 1;
        if !set(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) {
            say!(
                "warning: glibc refused an mmap threshold of 32 MB; its malloc keeps its defaults"
            );
            return;
        }
        set(libc::M_TRIM_THRESHOLD, libc::c_int::MAX);
        set(libc::M_TOP_PAD, HEAP_SIZE);
    }
}

/// glibc's largest mmap threshold on 64-bit targets (`DEFAULT_MMAP_THRESHOLD_MAX`).
#[cfg(all(target_os = "linux", target_env = "gnu", target_pointer_width = "64"))]
const MMAP_THRESHOLD: libc::c_int = 32 << 20;

/// The size of a non-main arena's heap (`HEAP_MAX_SIZE`, twice the threshold above).
#[cfg(all(target_os = "linux", target_env = "gnu", target_pointer_width = "64"))]
const HEAP_SIZE: libc::c_int = 64 << 20;

#[cfg(all(
    test,
    target_os = "linux",
    target_env = "gnu",
    target_pointer_width = "64"
))]
mod tests {
    use std::process::Command;

    /// ResNet's largest filter, 3x3x512x512 floats.
    const BLOCK: usize = 9_437_184;

    fn page_size() -> usize {
        // SAFETY: sysconf reads a constant of the system.
        (unsafe { libc::sysconf(libc::_SC_PAGESIZE) }) as usize
    }

    /// Page faults of one thread that fills its arena's first heap with blocks it keeps, then
    /// 8 times allocates, writes and frees a `BLOCK`, as a TensorFlow thread does each step;
    /// returns the faults of the last 6 rounds.
    fn faults_of_a_step_loop() -> i64 {
        std::thread::spawn(|| {
            let minflt = || {
                // SAFETY: getrusage writes only the struct it is given; RUSAGE_THREAD cannot
                // fail for the calling thread.
                let mut u: libc::rusage = unsafe { std::mem::zeroed() };
                unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut u) };
                u.ru_minflt
            };
            // A freed large block lifts glibc's default threshold, as TensorFlow's first steps do.
            drop(std::hint::black_box(vec![1u8; 16 << 20]));
            let kept: Vec<Vec<u8>> = (0..60).map(|_| vec![1u8; 1 << 20]).collect();
            let mut before = 0;
            for round in 0..8 {
                if round == 2 {
                    before = minflt();
                }
                let block = vec![1u8; BLOCK];
                std::hint::black_box(&block);
            }
            drop(kept);
            minflt() - before
        })
        .join()
        .unwrap()
    }

    /// The child side of the test below: runs the loop in a fresh process, with or without
    /// the settings, and prints its faults. Only run by that test.
    #[test]
    #[ignore]
    fn heap_child() {
        let Ok(mode) = std::env::var("DAWNRUN_HEAP_CHILD") else {
            return;
        };
        // Transparent huge pages, where the system uses them for every mapping, would fault a
        // block in with a few large pages instead of one fault per page.
        // SAFETY: prctl with PR_SET_THP_DISABLE only sets a flag of this process.
        unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
        if mode == "keep" {
            super::keep_freed_memory();
        }
        println!("faults={}", faults_of_a_step_loop());
    }

    fn child_faults(mode: &str) -> i64 {
        let mut child = Command::new(std::env::current_exe().unwrap());
        child
            .args([
                "--exact",
                "commands::heap::tests::heap_child",
                "--ignored",
                "--nocapture",
            ])
            .env("DAWNRUN_HEAP_CHILD", mode);
        // The allocator as glibc sets it up by default, whatever this process was given.
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy().into_owned();
            if name.starts_with("MALLOC_") || name == "GLIBC_TUNABLES" || name == "LD_PRELOAD" {
                child.env_remove(name);
            }
        }
        let out = child.output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "child {mode}: {text}");
        // libtest may print the test's name on the same line first.
        text.split("faults=")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("child {mode} printed no count: {text}"))
            .parse()
            .unwrap()
    }

    #[test]
    fn a_freed_block_is_reused_without_page_faults() {
        let pages = (BLOCK / page_size()) as i64;
        // Without the settings glibc unmaps the second heap at each free: every round faults
        // the block's pages in again (2,305 a round with 4 KB pages: the block and the heap's
        // header). The control shows the loop reproduces that here.
        let default = child_faults("default");
        assert!(
            default >= 6 * pages,
            "without the settings: {default} faults in 6 rounds of {pages} pages"
        );
        let kept = child_faults("keep");
        assert!(
            kept < pages / 10,
            "with the settings: {kept} faults in 6 rounds of {pages} pages"
        );
    }
}
