//! `trainer gradcheck`: checks data parallelism against its definition. Under `mpirun -np N`
//! each rank computes the gradient of its own batch and the ranks average them with the real
//! all-reduce; rank 0 then computes all N batches' gradients itself, one after another, and
//! compares their mean with the all-reduced result. Prints one JSON line on rank 0 and fails
//! when they disagree beyond float tolerance.

use anyhow::{bail, Result};
use clap::Args;
use dawnrun_dist::World;
use dawnrun_schedule::Allreduce;

use crate::model::{BatchRef, ModelConfig, TrainGraph};
use crate::train::step::{average_gradients, Replicas};

#[derive(Args, Debug)]
pub struct GradcheckArgs {
    #[arg(long, default_value_t = 18)]
    depth: u32,
    #[arg(long, default_value_t = 10)]
    classes: u32,
    #[arg(long, default_value_t = 32)]
    px: usize,
    /// Images per rank.
    #[arg(long, default_value_t = 4)]
    batch: usize,
    #[arg(long, value_enum, default_value_t = Allreduce::Hierarchical)]
    allreduce: Allreduce,
    /// Fusion buffer size in MiB (smaller: more groups).
    #[arg(long, default_value_t = 64.0)]
    fusion_mb: f64,
    /// All-reduce each fusion group while backward runs (`distributed.overlap`).
    #[arg(long)]
    overlap: bool,
    /// Largest relative error (max |a - b| / max |b|) accepted.
    #[arg(long, default_value_t = 1e-4)]
    tolerance: f64,
}

fn view<'a>(batch: &'a (Vec<u8>, Vec<i32>), args: &GradcheckArgs) -> BatchRef<'a> {
    BatchRef {
        images: &batch.0,
        labels: &batch.1,
        n: args.batch,
        height: args.px,
        width: args.px,
    }
}

/// Rank `r`'s batch: pseudo-random pixels and labels that depend only on `r`.
fn batch_of(rank: usize, args: &GradcheckArgs) -> (Vec<u8>, Vec<i32>) {
    let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ (rank as u64 + 1).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let images = (0..args.batch * args.px * args.px * 3)
        .map(|_| next() as u8)
        .collect();
    let labels = (0..args.batch)
        .map(|_| (next() % args.classes as u64) as i32)
        .collect();
    (images, labels)
}

pub fn run(args: &GradcheckArgs, world: &World) -> Result<()> {
    let cfg = ModelConfig::new(args.depth, args.classes);
    let mut graph = TrainGraph::build(&cfg)?;
    graph.init()?;
    // Same weights everywhere, as the trainer guarantees by its broadcast.
    let mut state = graph.state_to_host()?;
    world.broadcast_f32(&mut state, 0)?;
    graph.state_from_host(&state)?;

    let fusion_bytes = (args.fusion_mb * 1024.0 * 1024.0) as usize;
    let mut replicas = Replicas::with_defaults(world, args.allreduce, fusion_bytes, &graph)?;
    if args.overlap {
        replicas.enable_overlap(&mut graph)?;
    }
    let own = batch_of(world.rank(), args);
    // The trainer's own first half of a step: gradients, readiness, all-reduce.
    let reduced = average_gradients(&mut graph, &mut replicas, &view(&own, args), 0)?.grads;
    if world.rank() != 0 {
        world.barrier();
        return Ok(());
    }
    let mut mean = vec![0.0f64; reduced.len()];
    for r in 0..world.size() {
        let batch = batch_of(r, args);
        for (m, g) in mean
            .iter_mut()
            .zip(graph.gradients(&view(&batch, args), 1.0)?.grads.iter())
        {
            *m += f64::from(*g);
        }
    }
    let n = world.size() as f64;
    let (mut max_diff, mut max_abs) = (0.0f64, 0.0f64);
    for (m, g) in mean.iter().zip(reduced.iter()) {
        let m = m / n;
        max_diff = max_diff.max((m - f64::from(*g)).abs());
        max_abs = max_abs.max(m.abs());
    }
    let rel = max_diff / max_abs.max(f64::MIN_POSITIVE);
    println!(
        "{}",
        serde_json::json!({
            "np": world.size(),
            "params": reduced.len(),
            "max_abs_diff": max_diff,
            "max_abs_grad": max_abs,
            "relative_error": rel,
            "allreduce": args.allreduce,
        })
    );
    world.barrier();
    if rel.is_nan() || rel > args.tolerance {
        bail!(
            "the all-reduced gradient differs from the mean of the per-batch gradients: relative error {rel:.3e} > {}",
            args.tolerance
        );
    }
    Ok(())
}
