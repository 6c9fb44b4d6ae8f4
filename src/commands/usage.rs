//! What this process has used of the machine so far, all threads together (`getrusage`): CPU
//! time, page faults and context switches. `trainer bench --serve` reports the difference over
//! each request, so a bench row that moves can be told apart: page faults from a process that
//! maps and unmaps its tensors (as in `heap.rs`), involuntary switches and CPU time short of the
//! wall time from a core shared with something else.
//!
//! Unsafe code: the one `getrusage` call.
#![allow(unsafe_code)]

use std::time::Duration;

/// Counters of this process since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Usage {
    /// User plus system CPU time of every thread.
    pub cpu: Duration,
    /// Page faults served without I/O (a page mapped or zeroed on first touch).
    pub minor_faults: u64,
    /// Times a thread was descheduled while it could still run (its core wanted elsewhere).
    pub involuntary_switches: u64,
}

impl Usage {
    /// This process's counters now; all zero where `getrusage` fails (it cannot for `RUSAGE_SELF`).
    pub(crate) fn now() -> Usage {
        // SAFETY: getrusage only writes the struct it is given, which is plain data.
        let mut u: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: as above; RUSAGE_SELF is always a valid `who`.
        if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
            return Usage::default();
        }
        let time = |t: libc::timeval| {
            Duration::new(t.tv_sec.max(0) as u64, (t.tv_usec.max(0) as u32) * 1000)
        };
        Usage {
            cpu: time(u.ru_utime) + time(u.ru_stime),
            minor_faults: u.ru_minflt.max(0) as u64,
            involuntary_switches: u.ru_nivcsw.max(0) as u64,
        }
    }

    /// What was used between `earlier` and `self`, per step over `steps` steps, as
    /// `[CPU seconds, minor faults, involuntary switches]`. Pure.
    pub(crate) fn per_step_since(&self, earlier: &Usage, steps: usize) -> [f64; 3] {
        let n = steps.max(1) as f64;
        [
            self.cpu.saturating_sub(earlier.cpu).as_secs_f64() / n,
            self.minor_faults.saturating_sub(earlier.minor_faults) as f64 / n,
            self.involuntary_switches
                .saturating_sub(earlier.involuntary_switches) as f64
                / n,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::Usage;
    use std::time::Duration;

    #[test]
    fn the_counters_see_this_process_work_and_touch_new_pages() {
        let before = Usage::now();
        // About 20 ms of CPU, then 16 MB of fresh pages written (mapped by malloc on its own:
        // above its mmap threshold, so each page faults in on first touch).
        let spin = std::time::Instant::now();
        let mut x = 0u64;
        while spin.elapsed() < Duration::from_millis(20) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let mut pages = vec![0u8; 16 << 20];
        for p in pages.iter_mut().step_by(4096) {
            *p = 1;
        }
        std::hint::black_box(&pages);
        let after = Usage::now();
        let [cpu, faults, _] = after.per_step_since(&before, 1);
        assert!(cpu >= 0.015, "cpu {cpu}");
        assert!(faults >= 2000.0, "faults {faults}");
        let [cpu2, faults2, _] = after.per_step_since(&before, 4);
        assert_eq!((cpu2 * 4.0, faults2 * 4.0), (cpu, faults));
        assert_eq!(before.per_step_since(&after, 1), [0.0, 0.0, 0.0]);
    }
}
