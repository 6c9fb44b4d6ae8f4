//! The command lines: `trainer` (train, plan, bench, gradcheck, export) and `eval-sweep`. Each
//! subcommand is a module; the binaries in `src/bin/` only call [`trainer_main`] or
//! [`eval_sweep_main`]. This is the one place that reads argv and the environment, picks exit
//! codes, and wraps MPI entry points so an error on any rank ends the whole job.

mod bench;
mod data_facts;
mod eval_sweep;
mod export;
mod gradcheck;
mod heap;
mod plan;
mod train;
mod usage;

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use dawnrun_dist::World;
use dawnrun_schedule::Precision;

#[derive(Parser, Debug)]
#[command(
    name = "trainer",
    about = "Train ResNet on TFRecord shards following a YAML schedule (one process per rank under mpirun).",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct TrainerCli {
    #[command(subcommand)]
    command: Option<TrainerCommand>,
    /// `trainer SCHEDULE ...` is short for `trainer train SCHEDULE ...`.
    #[command(flatten)]
    train: train::TrainArgs,
}

#[derive(Subcommand, Debug)]
enum TrainerCommand {
    /// Train (the default: `trainer SCHEDULE` is `trainer train SCHEDULE`).
    Train(train::TrainArgs),
    /// Print the phase table of a schedule laid out on N ranks.
    Plan(plan::PlanArgs),
    /// Time the trainer's step against the same step on a pre-made batch (for `make bench`).
    Bench(bench::BenchArgs),
    /// Under mpirun: compare the all-reduced gradient with the mean of per-batch gradients.
    Gradcheck(gradcheck::GradcheckArgs),
    /// Write one checkpoint of a run as a TensorFlow SavedModel (JPEG and uint8 signatures).
    Export(export::ExportArgs),
}

/// `trainer`'s `main`.
pub fn trainer_main() -> ExitCode {
    tensorflow_env();
    heap::keep_freed_memory();
    let cli = TrainerCli::parse();
    exit_code(match cli.command {
        None => train::main(cli.train),
        Some(TrainerCommand::Train(args)) => train::main(args),
        Some(TrainerCommand::Plan(args)) => plan::main(args),
        Some(TrainerCommand::Bench(args)) => under_mpi(|world| bench::run(&args, world)),
        Some(TrainerCommand::Gradcheck(args)) => under_mpi(|world| gradcheck::run(&args, world)),
        Some(TrainerCommand::Export(args)) => export::main(args),
    })
}

/// `eval-sweep`'s `main`.
pub fn eval_sweep_main() -> ExitCode {
    tensorflow_env();
    heap::keep_freed_memory();
    let args = eval_sweep::EvalSweepArgs::parse();
    exit_code(under_mpi(|world| eval_sweep::run(&args, world)))
}

/// 0 on success; otherwise the error with its chain of causes, and 2.
fn exit_code(result: Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            say!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// TensorFlow's settings that must be in the environment before the library loads, each
/// unless the user chose it:
/// - `TF_CPP_MIN_LOG_LEVEL=2`: warnings and errors only;
/// - `TF_ENABLE_ONEDNN_OPTS=1`: TensorFlow's oneDNN CPU kernels. TensorFlow 2.13 turns them on
///   by itself only on CPUs with AVX-512 VNNI/BF16 or AMX; on an AVX2 EPYC they train ResNet-18
///   ~1.4x faster than its default Eigen kernels (BENCHMARKS.md), and only they run NCHW
///   pooling on a CPU. GPU kernels are not affected.
///
/// The library reads both in a static initializer, before `main`, so a binary that had to set
/// one re-executes itself once with them (same pid, before MPI starts); if that exec fails it
/// carries on with TensorFlow's defaults.
fn tensorflow_env() {
    let mut changed = false;
    for (name, value) in [
        ("TF_CPP_MIN_LOG_LEVEL", "2"),
        ("TF_ENABLE_ONEDNN_OPTS", "1"),
    ] {
        if std::env::var_os(name).is_none() {
            std::env::set_var(name, value);
            changed = true;
        }
    }
    if changed {
        use std::os::unix::process::CommandExt;
        let mut args = std::env::args_os();
        let argv0 = args.next().unwrap_or_default();
        let err = std::process::Command::new("/proc/self/exe")
            .arg0(argv0)
            .args(args)
            .exec();
        say!("warning: re-executing with TensorFlow's settings failed ({err}); using its defaults");
    }
}

/// Initialises MPI (or a world of one without mpirun), installs the abort-on-panic hook and runs
/// `f`. An error on any rank ends the whole job (`World::fail` prints `rank R: error: ...` and
/// calls MPI_Abort), so no rank is left waiting in a collective for one that has given up.
fn under_mpi(f: impl FnOnce(&World) -> Result<()>) -> Result<()> {
    let world = World::init().context("MPI")?;
    // A JPEG decoder panic in a pipeline worker becomes a skipped image, not the job's end.
    world.install_abort_on_panic(dawnrun_data::panic_is_caught);
    match f(&world) {
        Ok(()) => Ok(()),
        Err(e) => world.fail(&e),
    }
}

/// JPEG decode threads per rank: as asked, else this rank's CPUs shared by the host's ranks
/// that may run on them too.
fn decode_threads(asked: Option<usize>, world: &World) -> usize {
    let usable = std::thread::available_parallelism().map_or(1, |n| n.get());
    asked.unwrap_or_else(|| {
        decode_share(
            usable,
            world.cpu_affinity(),
            world.cpu_sharers(),
            world.local_size(),
        )
    })
}

/// A rank's decode threads, at least 1. Pure. `usable` is what `available_parallelism` gives:
/// the `affinity` mask's CPUs (0: not known), or fewer where a container's CPU quota caps
/// them. Those CPUs are shared by `sharers` ranks (Open MPI binds a rank to a core at np <= 2,
/// to a socket above that: dividing by all of the host's ranks, as dawnrun once did, left half
/// of a 2-socket host idle). A quota caps the whole container, so it is divided by all of the
/// host's `local_ranks`.
pub(crate) fn decode_share(
    usable: usize,
    affinity: usize,
    sharers: usize,
    local_ranks: usize,
) -> usize {
    let mut share = usable / sharers.max(1);
    if affinity > 0 && usable < affinity {
        share = share.min(usable / local_ranks.max(1));
    }
    share.max(1)
}

/// Stops with a clear message when TensorFlow does not list the device asked for, or the
/// device cannot run `precision` (`set_by`: the schedule line or flag that chose it); rank 0
/// prints where the first convolution runs.
fn check_device(
    device: Option<&str>,
    precision: Precision,
    set_by: &str,
    world: &World,
) -> Result<()> {
    let line = crate::model::check_device(device, precision, set_by)
        .with_context(|| format!("rank {}", world.rank()))?;
    if world.rank() == 0 {
        say!("{line}");
    }
    Ok(())
}

/// `--gpu`: the GPU of this rank's index on its host.
fn gpu_device(gpu: bool, world: &World) -> Option<String> {
    gpu.then(|| format!("/device:GPU:{}", world.local_rank()))
}

#[cfg(test)]
mod tests {
    use super::decode_share;

    #[test]
    fn decode_share_fits_each_way_mpirun_binds() {
        // (usable, affinity, sharers, ranks on the host) -> threads.
        // 2-core box: np 1 and np 2 bound to a core each.
        assert_eq!(decode_share(1, 1, 1, 2), 1);
        // Unbound (`--bind-to none`): 64 cores shared by 8 ranks.
        assert_eq!(decode_share(64, 64, 8, 8), 8);
        // Bound to one of 2 sockets of 32 cores, 4 ranks on each: 8, not 32 / 8.
        assert_eq!(decode_share(32, 32, 4, 8), 8);
        // A container with a quota of 4 CPUs on a 64-CPU host, 4 unbound ranks: 1 each.
        assert_eq!(decode_share(4, 64, 4, 4), 1);
        // A quota of 8 CPUs, 8 ranks bound to 2 sockets: the quota is shared by all 8.
        assert_eq!(decode_share(8, 32, 4, 8), 1);
        // The mask unknown: the usable CPUs over the ranks sharing them.
        assert_eq!(decode_share(16, 0, 8, 8), 2);
        // More ranks than cores: still one thread.
        assert_eq!(decode_share(2, 2, 8, 8), 1);
    }
}
