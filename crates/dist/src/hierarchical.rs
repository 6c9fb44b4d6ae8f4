//! The hierarchical all-reduce, dawnrun's default: within a host the ranks meet in shared memory
//! (`node.rs`); across hosts a ring ([`ring`](crate::ring)) runs between the ranks
//! with the same node rank, each on the chunk it reduced. The shape of Horovod's hierarchical
//! all-reduce and of NCCL's, with host memory in place of NVLink.
//!
//! Per round of the node all-reduce, N ranks on H hosts of L ranks each:
//! 1. node reduce-scatter: node rank l sums chunk l over its host (single host: and divides by
//!    N in the same pass);
//! 2. (H > 1) ring all-reduce of chunk l among the H ranks with node rank l, dividing by N;
//!    with fp16 compression the chunk travels in 16 bits there. On one host fp16 compression
//!    has no wire to shrink; the mean is still rounded to fp16, as the ring's receivers see it;
//! 3. node all-gather: every rank copies every other chunk from the rank on its host that owns
//!    it.
//!
//! Every element is computed by one rank and copied, so results are bitwise identical on every
//! rank, and sums run in an order fixed by the layout, not by timing.
//!
//! The route is chosen once, collectively, at [`Hierarchical::connect`] (the trainer calls it at
//! setup) or else on the first call: where any host cannot make its
//! shared segment (a small `/dev/shm`, as in a default Docker container) or hosts carry
//! different numbers of ranks, every rank falls back to the flat ring, and says why.
//!
//! `DAWNRUN_RANKS_PER_NODE=K` (a test hook) treats every K consecutive ranks of a host as one
//! host, so the cross-host ring can be exercised on one machine.

use mpi::collective::{CommunicatorCollectives, Root, SystemOperation};
use mpi::topology::{Color, Communicator, SimpleCommunicator};

use crate::node::{Between, HostBoard, Node};
use crate::ring::{Ring, RingError};
use crate::shm;
use crate::wire::{F16Wire, WireFormat};
use crate::world::World;
use dawnrun_schedule::Compression;

/// The environment variable of the test hook in the module docs.
pub const RANKS_PER_NODE_ENV: &str = "DAWNRUN_RANKS_PER_NODE";

/// Errors of one hierarchical call: the ring (across hosts, or the fallback) failed.
#[derive(Debug, thiserror::Error)]
pub enum HierarchicalError {
    #[error("ring across hosts")]
    Cross(#[source] RingError),
    #[error("flat ring (fallback)")]
    Flat(#[source] RingError),
    #[error(
        "an earlier call failed midway, leaving the host's barrier out of step; the job must end"
    )]
    Broken,
}

/// How this world's gradients travel; decided at `connect` or on the first call.
enum Route {
    Hosts {
        node: Node,
        cross: SimpleCommunicator,
    },
    FlatRing,
    /// A call failed between two barriers of the node protocol: the other ranks of the host
    /// wait in it, so no later call may start one (the binary aborts the job on the error).
    Broken,
}

/// The hierarchical all-reduce's state: communicators and scratch, kept across steps.
#[derive(Default)]
pub struct Hierarchical {
    route: Option<Route>,
    ring: Ring,
    f16: Vec<u16>,
}

impl std::fmt::Debug for Hierarchical {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hierarchical")
            .field("chosen", &self.route.is_some())
            .field("layout", &self.layout())
            .finish()
    }
}

impl Hierarchical {
    pub fn new() -> Hierarchical {
        Hierarchical::default()
    }

    /// Replaces `data` with its mean over all ranks. Collective: every rank calls it with a
    /// buffer of the same length at the same time.
    pub fn average(
        &mut self,
        world: &World,
        data: &mut [f32],
        compression: Compression,
    ) -> Result<(), HierarchicalError> {
        let n = world.size();
        if n <= 1 {
            return Ok(());
        }
        self.connect(world);
        let divisor = n as f32;
        let result = match self.route.as_mut() {
            Some(Route::Hosts { node, cross }) => {
                let hosts = cross.size();
                let (ring, f16) = (&mut self.ring, &mut self.f16);
                let mut across = |chunk: &mut [f32]| {
                    ring.reduce_over(cross, chunk, compression, Some(divisor))
                        .map_err(HierarchicalError::Cross)
                };
                let mut rounding = |chunk: &mut [f32]| {
                    F16Wire::quantize(chunk, f16);
                    Ok(())
                };
                let between: Option<Between<'_, HierarchicalError>> = if hosts > 1 {
                    Some(&mut across)
                } else if compression == Compression::Fp16 {
                    Some(&mut rounding)
                } else {
                    None
                };
                node.all_reduce(data, (hosts == 1).then_some(divisor), between)
            }
            Some(Route::Broken) => Err(HierarchicalError::Broken),
            _ => self
                .ring
                .average(world, data, compression)
                .map_err(HierarchicalError::Flat),
        };
        if result.is_err() && matches!(self.route, Some(Route::Hosts { .. })) {
            self.route = Some(Route::Broken);
        }
        result
    }

    /// Chooses the route now, if no call has yet (collective: every rank calls it at once), so
    /// that [`Hierarchical::board`] is known before the first step. One process: nothing to do.
    pub fn connect(&mut self, world: &World) {
        if world.size() > 1 && self.route.is_none() {
            self.route = Some(choose_route(world));
        }
    }

    /// The host's barrier counts, where the route goes through shared memory.
    pub fn board(&self) -> Option<HostBoard> {
        match &self.route {
            Some(Route::Hosts { node, .. }) => Some(node.board()),
            _ => None,
        }
    }

    /// (hosts, ranks per host) when the route goes through shared memory on each host; `None`
    /// before the route is chosen, with one rank, or after falling back to the flat ring.
    pub fn layout(&self) -> Option<(usize, usize)> {
        match &self.route {
            Some(Route::Hosts { node, cross }) => Some((cross.size() as usize, node.size())),
            _ => None,
        }
    }
}

/// Splits the world into hosts, makes each host's segment, and agrees on one route over the world.
fn choose_route(world: &World) -> Route {
    let comm = world.comm();
    let mut node_comm = comm.split_shared(comm.rank());
    // Rank 0's value for every rank: a hook seen by some ranks only would split some
    // communicators and not others, and the collectives would no longer match.
    let mut hook = ranks_per_node_hook().unwrap_or(0) as u64;
    comm.process_at_rank(0).broadcast_into(&mut hook);
    if let Some(k) = Some(hook as usize).filter(|&k| k > 0) {
        let color = Color::with_value((node_comm.rank() as usize / k) as i32);
        if let Some(split) = node_comm.split_by_color(color) {
            node_comm = split;
        }
    }
    let node_rank = node_comm.rank();
    let node_size = node_comm.size();
    // Every decision below is taken on world-wide values, so all ranks take the same route.
    let max_over_world = |mine: &[i32]| {
        let mut all = vec![0i32; mine.len()];
        comm.all_reduce_into(mine, &mut all[..], SystemOperation::max());
        all
    };
    let sizes = max_over_world(&[node_size, -node_size]);
    let (largest, smallest) = (sizes[0], -sizes[1]);
    if largest == 1 {
        // One rank per host: the ring across hosts is the flat ring.
        return Route::FlatRing;
    }
    if largest != smallest {
        if world.rank() == 0 {
            fall_back(
                world,
                &format!("hosts carry between {smallest} and {largest} ranks"),
            );
        }
        return Route::FlatRing;
    }
    if node_rank == 0 {
        for (file, bytes) in shm::sweep_stale() {
            crate::say!(
                "rank {}: removed /dev/shm/{file} ({:.1} MiB), left by a job killed while making it \
                 (its pid is gone)",
                world.rank(),
                bytes as f64 / (1 << 20) as f64
            );
        }
    }
    let verdict = Node::new(&node_comm, world.rank());
    let any_failed = max_over_world(&[i32::from(verdict.is_err())])[0] == 1;
    match verdict {
        Ok(mut node) if !any_failed => {
            let cross = comm
                .split_by_color(Color::with_value(node_rank))
                .expect("a defined colour always yields a communicator");
            node.set_cross_hosts(cross.size() > 1);
            Route::Hosts { node, cross }
        }
        Err(e) => {
            fall_back(world, &e.to_string());
            Route::FlatRing
        }
        Ok(_) => {
            if world.rank() == 0 {
                fall_back(world, "a host could not make its shared memory segment");
            }
            Route::FlatRing
        }
    }
}

fn fall_back(world: &World, reason: &str) {
    crate::say!(
        "rank {}: warning: hierarchical all-reduce unavailable ({reason}); using the flat ring",
        world.rank()
    );
}

/// `DAWNRUN_RANKS_PER_NODE`, when set to a positive integer.
fn ranks_per_node_hook() -> Option<usize> {
    std::env::var(RANKS_PER_NODE_ENV)
        .ok()?
        .parse()
        .ok()
        .filter(|&k: &usize| k > 0)
}
