//! Which rank evaluates which checkpoint: checkpoint i (in step order) on rank i % N, as the
//! 106-minute run spread its 40 checkpoints over 8 GPUs.

/// Indices into the step-sorted checkpoint list that `rank` of `world_size` ranks evaluates.
pub fn assigned(count: usize, rank: usize, world_size: usize) -> Vec<usize> {
    (0..count)
        .filter(|i| i % world_size.max(1) == rank)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_checkpoint_goes_to_exactly_one_rank() {
        for world_size in 1..=9 {
            for count in 0..30 {
                let mut seen = vec![0; count];
                for rank in 0..world_size {
                    for i in assigned(count, rank, world_size) {
                        seen[i] += 1;
                    }
                }
                assert!(
                    seen.iter().all(|&c| c == 1),
                    "world_size {world_size} count {count}"
                );
            }
        }
    }

    #[test]
    fn ranks_take_round_robin_turns() {
        assert_eq!(assigned(7, 1, 3), vec![1, 4]);
        assert_eq!(assigned(2, 2, 3), Vec::<usize>::new());
    }
}
