//! Tensor fusion: which consecutive gradient tensors share one all-reduce buffer.
//!
//! Many small all-reduces cost one latency each; one huge one needs one huge buffer. Horovod
//! packs tensors into a fusion buffer up to a threshold (default here 64 MiB) and all-reduces
//! once per buffer. The plan is pure arithmetic over tensor lengths, made once at start, and the
//! same on every rank because every rank holds the same model.
//!
//! The trainer keeps all gradients in ONE flat `f32` vector in a fixed order, so a group is a
//! contiguous element range of that vector and the all-reduce works on it in place (no copy).
//!
//! This module never talks to MPI.

use std::ops::Range;

/// Bytes per gradient element (`f32`); the threshold is in bytes of `f32` gradients.
pub const ELEM_BYTES: usize = 4;

/// One fusion buffer: a run of consecutive tensors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// Indices into the tensor list.
    pub tensors: Range<usize>,
    /// Element range in the flat gradient vector (all tensors concatenated in order).
    pub elems: Range<usize>,
}

/// Consecutive tensors grouped into buffers of at most `threshold_bytes`.
///
/// Invariants (tested): groups are in tensor order, cover every tensor exactly once, and a
/// group either fits the threshold or holds exactly one tensor that alone exceeds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FusionPlan {
    groups: Vec<Group>,
    threshold_bytes: usize,
}

impl FusionPlan {
    /// Groups greedily in order: a tensor joins the open group if the group stays within
    /// `threshold_bytes`, otherwise it opens the next one. Zero-length tensors join whatever is
    /// open. `threshold_bytes = 0` gives one group per tensor.
    pub fn new(tensor_lens: &[usize], threshold_bytes: usize) -> FusionPlan {
        let mut groups: Vec<Group> = Vec::new();
        let mut start_tensor = 0;
        let mut start_elem = 0;
        let mut elem = 0;
        for (i, &len) in tensor_lens.iter().enumerate() {
            let open_bytes = (elem - start_elem) * ELEM_BYTES;
            let joins = i == start_tensor || open_bytes + len * ELEM_BYTES <= threshold_bytes;
            if !joins {
                groups.push(Group {
                    tensors: start_tensor..i,
                    elems: start_elem..elem,
                });
                start_tensor = i;
                start_elem = elem;
            }
            elem += len;
        }
        if start_tensor < tensor_lens.len() {
            groups.push(Group {
                tensors: start_tensor..tensor_lens.len(),
                elems: start_elem..elem,
            });
        }
        FusionPlan {
            groups,
            threshold_bytes,
        }
    }

    /// The groups, in order.
    pub fn groups(&self) -> &[Group] {
        &self.groups
    }

    /// Total elements over all tensors (the flat gradient length).
    pub fn total_elems(&self) -> usize {
        self.groups.last().map_or(0, |g| g.elems.end)
    }

    /// The threshold the plan was made with, in bytes.
    pub fn threshold_bytes(&self) -> usize {
        self.threshold_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tensor lengths from a small LCG: many tiny ones, some big ones, some zero.
    fn lens(seed: u64, n: usize) -> Vec<usize> {
        let mut x = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                match (x >> 60) % 4 {
                    0 => 0,
                    1 => (x >> 33) as usize % 16,
                    2 => (x >> 33) as usize % 1000,
                    _ => (x >> 33) as usize % 100_000,
                }
            })
            .collect()
    }

    #[test]
    fn groups_keep_order_cover_everything_and_respect_the_threshold() {
        for seed in 0..200 {
            let lens = lens(seed, (seed % 50) as usize);
            for &threshold in &[0usize, 4, 1000, 4096, 64 * 1024, 1 << 20, usize::MAX / 8] {
                let plan = FusionPlan::new(&lens, threshold);
                let mut next_tensor = 0;
                let mut next_elem = 0;
                for g in plan.groups() {
                    assert_eq!(g.tensors.start, next_tensor, "order kept, no gaps");
                    assert_eq!(g.elems.start, next_elem);
                    assert!(!g.tensors.is_empty(), "no empty groups");
                    let elems: usize = lens[g.tensors.clone()].iter().sum();
                    assert_eq!(g.elems.len(), elems);
                    let bytes = elems * ELEM_BYTES;
                    if bytes > threshold {
                        // Only a single tensor that alone exceeds the threshold (plus zero-length
                        // neighbours) may overflow it.
                        let big: Vec<_> =
                            lens[g.tensors.clone()].iter().filter(|&&l| l > 0).collect();
                        assert_eq!(big.len(), 1, "oversized group {g:?} holds one real tensor");
                    }
                    next_tensor = g.tensors.end;
                    next_elem = g.elems.end;
                }
                assert_eq!(next_tensor, lens.len());
                assert_eq!(plan.total_elems(), lens.iter().sum::<usize>());
            }
        }
    }

    #[test]
    fn greedy_grouping_matches_a_worked_example() {
        // threshold 40 bytes = 10 floats: [3,4] fit (7), +5 would be 12 -> new group; 25 alone.
        let plan = FusionPlan::new(&[3, 4, 5, 25, 1, 2], 40);
        let tensors: Vec<_> = plan.groups().iter().map(|g| g.tensors.clone()).collect();
        assert_eq!(tensors, vec![0..2, 2..3, 3..4, 4..6]);
        let elems: Vec<_> = plan.groups().iter().map(|g| g.elems.clone()).collect();
        assert_eq!(elems, vec![0..7, 7..12, 12..37, 37..40]);
    }

    #[test]
    fn threshold_zero_gives_one_group_per_tensor_and_empty_input_no_groups() {
        let plan = FusionPlan::new(&[1, 2, 3], 0);
        assert_eq!(plan.groups().len(), 3);
        assert!(FusionPlan::new(&[], 64).groups().is_empty());
        assert_eq!(FusionPlan::new(&[], 64).total_elems(), 0);
    }
}
