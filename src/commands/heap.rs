//! glibc malloc's settings for a process that frees and reallocates the same large tensors
//! every step.
//!
//! TensorFlow's CPU tensors come from `malloc`. glibc gives each thread an arena; an arena
//! whose first heap is full puts a large tensor (ResNet's 9.4 MB 3x3x512x512 filters and their
//! gradients) on a second 64 MB heap, and when that heap is empty again, `free` unmaps it
//! whole. The next step maps a new one and faults every page of it in again. Whether a
//! process falls into that cycle depends on which arena each TensorFlow thread happened to
//! get and what else lives there, and it stays in it for life. Measured on the EPYC box
//! (ResNet-18 fp32, batch 32, 128 px, one core): about 1 process in 5 took 20,500 page faults
//! a step, 30-40 ms of kernel time and 2-3% of its step; the others took none. At np > 1 one
//! such rank slows every rank.
//!
//! The fix is the allocator keeping what it was given, as TensorFlow's own BFC allocator does
//! on a GPU:
//! - `M_TOP_PAD` of 64 MB, a whole heap: `free` then never unmaps an empty heap (glibc keeps
//!   one when the space it would give back is below the pad);
//! - `M_TRIM_THRESHOLD` at its largest: freed space at a heap's top is never handed back;
//! - `M_MMAP_THRESHOLD` at glibc's ceiling of 32 MB. Setting either of the two above turns off
//!   glibc's sliding threshold, which otherwise climbs to the size of the largest freed block
//!   (up to that same ceiling); without it every block above 128 KB would get its own mapping.
//!
//! The cost: a process keeps its peak heap until it exits, which a training process reaches
//! in its first steps anyway.
//!
//! Unsafe code: the `mallopt` calls, and `getrusage` in the test.
#![allow(unsafe_code)]

/// Applies the settings above to this process's glibc `malloc`; a no-op with another C
/// library. Call first thing in `main`: blocks allocated before keep their old treatment.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only sets allocator parameters; it is thread-safe (it takes each
        // arena's lock) and has no memory effect on blocks already handed out.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
            libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX);
            libc::mallopt(libc::M_TOP_PAD, HEAP_SIZE);
        }
    }
}

/// glibc's largest mmap threshold on 64-bit targets (`DEFAULT_MMAP_THRESHOLD_MAX`).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 32 << 20;

/// The size of a non-main arena's heap (`HEAP_MAX_SIZE`, twice the threshold above).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const HEAP_SIZE: libc::c_int = 64 << 20;

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use std::process::Command;

    /// Page faults of one thread that fills its arena's first heap with blocks it keeps, then
    /// 8 times allocates, writes and frees a 9.4 MB block (ResNet's largest filter), as a
    /// TensorFlow thread does each step; returns the faults of the last 6 rounds.
    fn faults_of_a_step_loop() -> i64 {
        std::thread::spawn(|| {
            let minflt = || {
                // SAFETY: getrusage writes the struct it is given.
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
                let block = vec![1u8; 9_437_184];
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
        if mode == "keep" {
            super::keep_freed_memory();
        }
        println!("faults={}", faults_of_a_step_loop());
    }

    fn child_faults(mode: &str) -> i64 {
        let out = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "commands::heap::tests::heap_child",
                "--ignored",
                "--nocapture",
            ])
            .env("DAWNRUN_HEAP_CHILD", mode)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "child {mode}: {text}");
        text.lines()
            .find_map(|l| l.strip_prefix("faults="))
            .unwrap_or_else(|| panic!("child {mode} printed no count: {text}"))
            .parse()
            .unwrap()
    }

    #[test]
    fn a_freed_block_is_reused_without_page_faults() {
        // Without the settings glibc unmaps the second heap at each free: every round faults
        // the block's 2,304 pages in again. The control shows the loop reproduces that here.
        let default = child_faults("default");
        assert!(default > 6 * 2000, "without the settings: {default} faults");
        let kept = child_faults("keep");
        assert!(kept < 100, "with the settings: {kept} faults");
    }
}
