//! Gradient averaging for one training step: the fusion plan, then the mean over ranks: ours
//! (the hierarchical all-reduce, by default, or the flat ring; both divide by N in the pass of
//! their last addition), or `MPI_Allreduce` (for comparison) followed by a divide by N. What the
//! trainer calls.
//!
//! The trainer holds all gradients as ONE flat `f32` vector in a fixed order, so each fusion
//! group is a contiguous range of it and both methods sum it in place (the ring by design,
//! `MPI_Allreduce` with `MPI_IN_PLACE`): "memcpy in/out" of Horovod's fusion buffer has nothing
//! to do here.
//!
//! Timeline spans per group, lane `allreduce`: `hierarchical mean`, `ring mean`, or
//! `MPI_Allreduce` and `divide by N`.

use crate::fusion::FusionPlan;
use crate::hierarchical::{Hierarchical, HierarchicalError};
use crate::node::HostBoard;
use crate::ring::{Ring, RingError};
use crate::timeline::{timed, Lane, Timeline};
use crate::world::World;
use dawnrun_schedule::{Allreduce, Compression};

/// Errors of gradient averaging. Any error after communication started leaves other ranks
/// waiting: the binary aborts the world ([`World::fail`]).
#[derive(Debug, thiserror::Error)]
pub enum AllreduceError {
    #[error("fp16 compression needs one of our methods (hierarchical or ring): MPI_Allreduce cannot sum f16 on the wire")]
    Fp16NeedsRing,
    #[error("rank {rank}: gradient vector has {given} elements, the tensor lengths add up to {expected}")]
    Length {
        rank: usize,
        given: usize,
        expected: usize,
    },
    #[error("rank {rank}: fusion group {group} of {groups}: hierarchical all-reduce")]
    Hierarchical {
        rank: usize,
        group: usize,
        groups: usize,
        source: HierarchicalError,
    },
    #[error("rank {rank}: fusion group {group} of {groups}")]
    Ring {
        rank: usize,
        group: usize,
        groups: usize,
        source: RingError,
    },
}

/// Averages gradients over ranks; holds the plan and reusable buffers.
#[derive(Debug)]
pub struct Allreducer {
    method: Allreduce,
    compression: Compression,
    plan: FusionPlan,
    ring: Ring,
    hierarchical: Hierarchical,
}

impl Allreducer {
    /// `tensor_lens`: element count of every gradient tensor in the trainer's flat order;
    /// `threshold_bytes`: fusion buffer limit in bytes of `f32` (default 64 MiB in the schedule).
    pub fn new(
        method: Allreduce,
        compression: Compression,
        threshold_bytes: usize,
        tensor_lens: &[usize],
    ) -> Result<Allreducer, AllreduceError> {
        if method == Allreduce::Mpi && compression == Compression::Fp16 {
            return Err(AllreduceError::Fp16NeedsRing);
        }
        Ok(Allreducer {
            method,
            compression,
            plan: FusionPlan::new(tensor_lens, threshold_bytes),
            ring: Ring::new(),
            hierarchical: Hierarchical::new(),
        })
    }

    pub fn method(&self) -> Allreduce {
        self.method
    }

    pub fn compression(&self) -> Compression {
        self.compression
    }

    pub fn plan(&self) -> &FusionPlan {
        &self.plan
    }

    /// Whether [`Allreducer::average`] leaves the same bits on every rank: true for ours (each
    /// element is reduced by one rank and copied; with fp16 on the wire the owner rounds as the
    /// receivers decode), not promised by `MPI_Allreduce`.
    pub fn identical_everywhere(&self) -> bool {
        self.method != Allreduce::Mpi
    }

    /// The hierarchical method's (hosts, ranks per host) once it has run; `None` for the other
    /// methods, before its route is chosen, or where it fell back to the flat ring.
    pub fn layout(&self) -> Option<(usize, usize)> {
        match self.method {
            Allreduce::Hierarchical => self.hierarchical.layout(),
            _ => None,
        }
    }

    /// Sets up the hierarchical method's route now rather than at the first step (collective:
    /// every rank calls it at once); other methods have nothing to set up.
    pub fn connect(&mut self, world: &World) {
        if self.method == Allreduce::Hierarchical {
            self.hierarchical.connect(world);
        }
    }

    /// Where this host's ranks are in the hierarchical all-reduce, once connected through
    /// shared memory: what the stall watchdog reads to name a rank frozen inside it.
    pub fn host_board(&self) -> Option<HostBoard> {
        match self.method {
            Allreduce::Hierarchical => self.hierarchical.board(),
            _ => None,
        }
    }

    /// Replaces `grads` with the mean over all ranks, group by group in plan order. With
    /// our methods the result is bitwise identical on every rank. One process: no-op.
    pub fn average(
        &mut self,
        world: &World,
        grads: &mut [f32],
        timeline: Option<&Timeline>,
    ) -> Result<(), AllreduceError> {
        let expected = self.plan.total_elems();
        if grads.len() != expected {
            return Err(AllreduceError::Length {
                rank: world.rank(),
                given: grads.len(),
                expected,
            });
        }
        let n = world.size();
        if n <= 1 {
            return Ok(());
        }
        for group in 0..self.plan.groups().len() {
            let elems = self.plan.groups()[group].elems.clone();
            self.average_group(world, group, &mut grads[elems], timeline)?;
        }
        Ok(())
    }

    /// Replaces `data`, fusion group `group`'s range of the flat gradients, with its mean over
    /// all ranks. Every rank must call it for the same group at the same time; [`average`]
    /// is this for each group in plan order.
    ///
    /// [`average`]: Allreducer::average
    pub fn average_group(
        &mut self,
        world: &World,
        group: usize,
        data: &mut [f32],
        timeline: Option<&Timeline>,
    ) -> Result<(), AllreduceError> {
        let groups = self.plan.groups().len();
        let expected = self.plan.groups().get(group).map(|g| g.elems.len());
        if expected != Some(data.len()) {
            return Err(AllreduceError::Length {
                rank: world.rank(),
                given: data.len(),
                expected: expected.unwrap_or(0),
            });
        }
        let n = world.size();
        if n <= 1 {
            return Ok(());
        }
        match self.method {
            Allreduce::Hierarchical => {
                timed(timeline, Lane::Allreduce, "hierarchical mean", || {
                    self.hierarchical.average(world, data, self.compression)
                })
                .map_err(|source| AllreduceError::Hierarchical {
                    rank: world.rank(),
                    group,
                    groups,
                    source,
                })?
            }
            // The ring divides inside: each rank its own chunk, in the same pass as that chunk's
            // last reduce-scatter addition.
            Allreduce::Ring => timed(timeline, Lane::Allreduce, "ring mean", || {
                self.ring.average(world, data, self.compression)
            })
            .map_err(|source| AllreduceError::Ring {
                rank: world.rank(),
                group,
                groups,
                source,
            })?,
            Allreduce::Mpi => {
                timed(timeline, Lane::Allreduce, "MPI_Allreduce", || {
                    world.mpi_sum_f32(data)
                });
                let divisor = n as f32;
                timed(timeline, Lane::Allreduce, "divide by N", || {
                    data.iter_mut().for_each(|v| *v /= divisor)
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mpi_with_fp16_is_refused_at_construction() {
        let err = Allreducer::new(Allreduce::Mpi, Compression::Fp16, 64, &[4]).unwrap_err();
        assert!(err
            .to_string()
            .contains("fp16 compression needs one of our methods"));
        assert!(Allreducer::new(Allreduce::Ring, Compression::Fp16, 64, &[4]).is_ok());
        assert!(Allreducer::new(Allreduce::Hierarchical, Compression::Fp16, 64, &[4]).is_ok());
    }
}
