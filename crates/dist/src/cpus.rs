//! Which CPUs this process may run on, and how many ranks of its host share them: what a rank's
//! share of the host's cores for its own threads (JPEG decoding) is.
//!
//! The affinity mask alone misleads: Open MPI binds each rank to one core at np <= 2, but to a
//! whole socket or NUMA node above that, where the node's ranks all run on the same CPUs; and
//! unbound, every rank's mask is all the CPUs the host (or its container's cpuset) allows.
//! Counting the ranks whose masks meet this one's gives the right divisor in each case.
//! `/proc/cpuinfo` would not: inside a container it lists the whole machine.

/// CPUs as a bitmap of 1024 (glibc's `CPU_SETSIZE`); all zero means "not known".
pub type CpuSet = [u64; 16];

/// This process's allowed CPUs, from `Cpus_allowed_list` in `/proc/self/status` (proc(5));
/// all zero where that cannot be read.
pub fn allowed() -> CpuSet {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .and_then(|list| parse_cpu_list(list.trim()))
        })
        .unwrap_or([0; 16])
}

/// The kernel's CPU list format, e.g. `0-3,8,10-11`. CPUs past 1023 are left out (a rank
/// bound only to such CPUs reads as "not known", and shares with everyone). Pure.
pub fn parse_cpu_list(list: &str) -> Option<CpuSet> {
    let mut set = [0u64; 16];
    for part in list.split(',').filter(|p| !p.is_empty()) {
        let (first, last) = match part.split_once('-') {
            Some((a, b)) => (a.parse::<usize>().ok()?, b.parse::<usize>().ok()?),
            None => {
                let cpu = part.parse::<usize>().ok()?;
                (cpu, cpu)
            }
        };
        for cpu in first..=last.min(1023) {
            set[cpu / 64] |= 1 << (cpu % 64);
        }
    }
    Some(set)
}

/// The number of CPUs in `set` (0: not known). Pure.
pub fn count(set: &CpuSet) -> usize {
    set.iter().map(|w| w.count_ones() as usize).sum()
}

/// How many of `all` (every local rank's set, this one's included) share a CPU with `mine`.
/// An unknown set counts as sharing with everyone: when this rank's own set is unknown, its
/// CPUs are divided by all of the host's ranks. Pure.
pub fn sharers(mine: &CpuSet, all: &[CpuSet]) -> usize {
    let unknown = |s: &CpuSet| s.iter().all(|&w| w == 0);
    all.iter()
        .filter(|s| unknown(s) || unknown(mine) || s.iter().zip(mine).any(|(a, b)| a & b != 0))
        .count()
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(list: &str) -> CpuSet {
        parse_cpu_list(list).unwrap()
    }

    #[test]
    fn count_is_the_number_of_cpus() {
        assert_eq!(count(&set("0-3,8,10-11")), 7);
        assert_eq!(count(&set("64-127")), 64);
        assert_eq!(count(&[0; 16]), 0);
    }

    #[test]
    fn cpu_lists_parse_as_the_kernel_writes_them() {
        assert_eq!(set("0")[0], 1);
        assert_eq!(set("0-3,8,10-11")[0], 0b1101_0000_1111);
        assert_eq!(set("64-65")[1], 0b11);
        assert_eq!(set("1023")[15], 1 << 63);
        assert_eq!(set("")[0], 0);
        assert!(parse_cpu_list("0-x").is_none());
        assert!(parse_cpu_list("a").is_none());
    }

    #[test]
    fn sharers_count_the_ranks_on_the_same_cpus_for_each_binding() {
        // Bound to a core each: nobody shares.
        let cores: Vec<CpuSet> = (0..8).map(|c| set(&c.to_string())).collect();
        assert_eq!(sharers(&cores[3], &cores), 1);
        // Bound to one of two 32-core sockets, 4 ranks on each.
        let sockets: Vec<CpuSet> = (0..8)
            .map(|r| set(if r % 2 == 0 { "0-31" } else { "32-63" }))
            .collect();
        assert_eq!(sharers(&sockets[0], &sockets), 4);
        // Unbound: every rank on the whole host.
        let host = vec![set("0-63"); 8];
        assert_eq!(sharers(&host[0], &host), 8);
        // Three ranks over two sockets: two share one.
        let uneven = [set("0-31"), set("32-63"), set("0-31")];
        assert_eq!(sharers(&uneven[0], &uneven), 2);
        assert_eq!(sharers(&uneven[1], &uneven), 1);
        // One rank's set unknown: it may share with anyone.
        let partly = [set("0"), [0; 16], set("1")];
        assert_eq!(sharers(&partly[0], &partly), 2);
        assert_eq!(sharers(&partly[1], &partly), 3);
    }
}
