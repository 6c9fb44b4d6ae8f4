//! dawnrun-dist: gradients -> all-reduce. The only user of MPI; it sees `&mut [f32]`, never a tensor.
//!
//! Flow, per training step (Horovod's split into *negotiate*, *pack* and *move*, each in its own
//! module, with one [`Timeline`] handle timing every phase):
//!
//! 1. [`stall`]     — negotiate: every rank tells rank 0 it reached step `s`; rank 0 warns about
//!    late ranks (Horovod's stall check).
//! 2. [`fusion`]    — pack: which consecutive gradient tensors share one buffer (threshold).
//! 3. move: [`hierarchical`] (the default) — within a host through a shared-memory segment
//!    (`node`, over `shm`), across hosts a ring; [`ring`] — the flat ring over MPI
//!    point-to-point. Both are bitwise identical on every rank; [`wire`] optionally halves the
//!    bytes on the ring's wire (fp16); [`sum`] is the addition (and division) both run.
//! 4. [`allreduce`] — glue: plan + mean (ours divide inside; `MPI_Allreduce` + divide by N).
//!
//! Beside the step: [`rendezvous`], where ranks with uneven shares of work meet (eval-sweep),
//! telling a slow rank from a frozen one.
//!
//! [`world`] owns MPI itself (initialisation, ranks, broadcast, config check, abort on error);
//! `in_place` is its one call the `mpi` crate lacks (`MPI_Allreduce` with `MPI_IN_PLACE`); [`say`](mod@say)
//! writes a rank's stderr line in one call, so ranks' lines never interleave; [`copy`] copies
//! gradient buffers without the slow case of `memcpy` at some relative alignments.
//!
//! Global state: exactly two process-wide things exist, both inherent to MPI and both documented
//! where they are made: MPI's own initialisation ([`World::init`], once per process) and the panic
//! hook ([`World::install_abort_on_panic`]). Everything else is passed down as arguments.
#![deny(unsafe_code)]

pub mod allreduce;
pub mod copy;
pub mod cpus;
pub mod fusion;
pub mod hierarchical;
mod in_place;
mod node;
pub mod rendezvous;
pub mod ring;
pub mod say;
mod shm;
pub mod stall;
pub mod sum;
pub mod timeline;
pub mod wire;
pub mod world;

pub use allreduce::{AllreduceError, Allreducer};
pub use copy::copy_floats;
pub use fusion::FusionPlan;
pub use hierarchical::{Hierarchical, HierarchicalError};
pub use node::{HostBoard, Laggards};
pub use rendezvous::{Rendezvous, Silent};
pub use ring::{chunk_bounds, chunk_of, Ring, RingError};
pub use stall::{StallBook, StallCheck, StallError, Watchdog, STALL_EXIT_CODE};
pub use timeline::{Lane, Timeline, TimelineError};
pub use world::{fingerprint, fingerprint_f32, World, WorldError};
