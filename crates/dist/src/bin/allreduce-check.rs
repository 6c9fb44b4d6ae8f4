//! allreduce-check: runs our all-reduces (hierarchical, ring) and MPI_Allreduce on deterministic
//! per-rank data, checks each against the exact mean (computed in f64 on every rank), checks that
//! our results are bitwise identical on every rank, and prints one line per method on rank 0.
//!
//! `mpirun -np 4 allreduce-check --floats 1000000 --method hierarchical,ring,mpi --json`
//! JSON fields: `seconds_median` is rank 0's median over `--iters` (each after a barrier);
//! `bus_gbps` = 2(N-1)/N x f32 bytes / time (f32 bytes even with fp16 on the wire, so the two
//! compare as the same work); `max_abs_diff` is against the exact mean over all ranks;
//! `identical_across_ranks` compares a hash of every rank's result bits (`fingerprint`: rank 0's
//! hash, to compare methods); `hosts` and `ranks_per_host` say how the hierarchical method split
//! the world (null: it fell back to the ring). With several methods the iterations interleave
//! them, reversing their order every iteration (ABC CBA ...); all reduce a buffer in place
//! (`MPI_Allreduce` with `MPI_IN_PLACE`), the copy of the input outside the timed region.
//! Used by the test suite and `make bench`. Exit codes: 0 ok, 1 a check failed, 2 an error
//! (under mpirun: `rank R: error: ...` and MPI_Abort, so the whole job ends).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use dawnrun_dist::{chunk_bounds, fingerprint_f32, Allreducer, Lane, StallCheck, Timeline, World};
use dawnrun_schedule::{Allreduce, Compression};
use serde_json::json;

#[derive(Debug, Parser)]
#[command(
    about = "Check and time our all-reduces (hierarchical, ring) against MPI_Allreduce (run under mpirun)"
)]
struct Args {
    /// Gradient length in f32 elements.
    #[arg(long, default_value_t = 1_000_000)]
    floats: usize,
    /// Timed repetitions per method (the median is reported).
    #[arg(long, default_value_t = 5)]
    iters: usize,
    /// Methods to run, comma-separated: `hierarchical`, `ring`, `mpi`.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "hierarchical,ring,mpi"
    )]
    method: Vec<Allreduce>,
    /// Wire compression for our methods: `none` or `fp16` (MPI_Allreduce always sums f32).
    #[arg(long, value_enum, default_value_t = Compression::None)]
    compression: Compression,
    /// Fusion buffer threshold in MiB.
    #[arg(long, default_value_t = 64.0)]
    threshold_mb: f64,
    /// The gradient is split into this many tensors (fused per the threshold).
    #[arg(long, default_value_t = 16)]
    tensors: usize,
    /// One JSON object per line instead of text.
    #[arg(long)]
    json: bool,
    /// Write a Chrome-trace timeline per rank to DIR/timeline-rankN.json (N: the rank).
    #[arg(long, value_name = "DIR")]
    timeline: Option<std::path::PathBuf>,
    /// Rank 0 warns about ranks that are this late to an all-reduce.
    #[arg(long, default_value_t = 60.0)]
    stall_warning_s: f64,
    /// Test hook: this rank returns an error in the middle of the run.
    #[arg(long, value_name = "R")]
    fail_rank: Option<usize>,
    /// Test hook: this rank panics in the middle of the run.
    #[arg(long, value_name = "R")]
    panic_rank: Option<usize>,
    /// Test hook: this rank sends itself SIGKILL just before its all-reduce in the middle of the
    /// run, when the others are already inside theirs.
    #[arg(long, value_name = "R")]
    kill_rank: Option<usize>,
    /// Test hook: this rank sleeps `--sleep-s` before its second iteration (trips the stall check).
    #[arg(long, value_name = "R")]
    sleep_rank: Option<usize>,
    #[arg(long, default_value_t = 0.0)]
    sleep_s: f64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let world = match World::init() {
        Ok(world) => world,
        Err(e) => {
            dawnrun_dist::say!("error: {:#}", anyhow::Error::from(e));
            return ExitCode::from(2);
        }
    };
    world.install_abort_on_panic(|| false);
    match run(&world, &args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => world.fail(&e),
    }
}

/// Per-method outcome on this rank.
struct Outcome {
    method: Allreduce,
    result: Vec<f32>,
    seconds: Vec<f64>,
    /// The hierarchical method's (hosts, ranks per host), unless it fell back to the ring.
    layout: Option<(usize, usize)>,
}

/// Returns whether every check passed (the same verdict on every rank).
fn run(world: &World, args: &Args) -> Result<bool> {
    let rank = world.rank();
    world
        .check_same("allreduce-check arguments", format!("{args:?}").as_bytes())
        .context("refusing to start")?;
    if args.iters == 0 || args.tensors == 0 {
        bail!("--iters and --tensors must be at least 1");
    }
    let mut methods = args.method.clone();
    methods.sort_by_key(|&m| m as u8);
    methods.dedup();
    let tensor_lens: Vec<usize> = chunk_bounds(args.floats, args.tensors)
        .iter()
        .map(|c| c.len())
        .collect();
    let threshold_bytes = (args.threshold_mb * 1024.0 * 1024.0) as usize;
    let timeline = match &args.timeline {
        Some(dir) => Some(Timeline::create(
            &dir.join(format!("timeline-rank{rank}.json")),
            rank,
        )?),
        None => None,
    };
    let mut stall = StallCheck::new(world, Duration::from_secs_f64(args.stall_warning_s), None);

    check_broadcasts(world)?;
    let input: Vec<f32> = (0..args.floats).map(|i| value(rank, i)).collect();
    // Every method gets its own reducer and buffer; the iterations interleave the methods and
    // alternate which goes first (ABBA), so drift on a shared machine falls on both alike.
    let mut outcomes = methods
        .iter()
        .map(|&method| {
            let compression = compression_of(method, args.compression);
            let reducer = Allreducer::new(method, compression, threshold_bytes, &tensor_lens)?;
            Ok((
                reducer,
                Outcome {
                    method,
                    result: input.clone(),
                    seconds: Vec::with_capacity(args.iters),
                    layout: None,
                },
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut step = 0u64;
    for iter in 0..args.iters {
        let order: Vec<usize> = if iter % 2 == 0 {
            (0..outcomes.len()).collect()
        } else {
            (0..outcomes.len()).rev().collect()
        };
        for i in order {
            let (reducer, outcome) = &mut outcomes[i];
            let (method, work) = (outcome.method, &mut outcome.result);
            // Outside the timed region: both methods reduce a buffer in place.
            work.copy_from_slice(&input);
            if args.fail_rank == Some(rank) && i == 0 && iter == args.iters / 2 {
                bail!(
                    "injected failure on rank {rank} at {method:?} iteration {iter} (--fail-rank)"
                );
            }
            if args.panic_rank == Some(rank) && i == 0 && iter == args.iters / 2 {
                panic!(
                    "injected panic on rank {rank} at {method:?} iteration {iter} (--panic-rank)"
                );
            }
            if args.sleep_rank == Some(rank) && iter == 1 && i == 0 {
                std::thread::sleep(Duration::from_secs_f64(args.sleep_s));
            }
            {
                let _span = timeline
                    .as_ref()
                    .map(|t| t.span(Lane::Negotiate, "stall check"));
                stall.ready(world, step)?;
            }
            world.barrier();
            if args.kill_rank == Some(rank) && i == 0 && iter == args.iters / 2 {
                kill_myself();
            }
            let start = Instant::now();
            reducer
                .average(world, work, timeline.as_ref())
                .with_context(|| format!("{method:?} all-reduce, iteration {iter}"))?;
            outcome.seconds.push(start.elapsed().as_secs_f64());
            step += 1;
        }
    }
    let outcomes: Vec<Outcome> = outcomes
        .into_iter()
        .map(|(reducer, o)| Outcome {
            layout: reducer.layout(),
            ..o
        })
        .collect();
    if let Some(t) = timeline {
        t.finish()?;
    }
    report(world, args, &outcomes)
}

/// SIGKILL to this process, as `kill -9` from outside would send it.
fn kill_myself() {
    let pid = std::process::id().to_string();
    let status = std::process::Command::new("kill")
        .args(["-KILL", &pid])
        .status();
    // Only reached if `kill` could not run.
    panic!("--kill-rank: kill -KILL {pid} did not kill this process: {status:?}");
}

/// Startup self-check of the rank-0 broadcasts the trainer relies on: afterwards every rank must
/// hold rank 0's bytes (of a length only rank 0 knew) and rank 0's floats.
fn check_broadcasts(world: &World) -> Result<()> {
    let rank = world.rank();
    let mut bytes = if rank == 0 {
        b"variables from rank 0 ".repeat(1 + world.size())
    } else {
        vec![rank as u8; 3]
    };
    world.broadcast_bytes(&mut bytes, 0)?;
    world
        .check_same("broadcast_bytes result", &bytes)
        .context("broadcast self-check")?;
    let mut floats: Vec<f32> = (0..1001).map(|i| value(rank, i)).collect();
    world.broadcast_f32(&mut floats, 0)?;
    let bits: Vec<u8> = floats.iter().flat_map(|v| v.to_le_bytes()).collect();
    world
        .check_same("broadcast_f32 result", &bits)
        .context("broadcast self-check")?;
    Ok(())
}

/// Deterministic data of `rank` at index `i`, in [-1, 1): splitmix64 of (rank, i).
fn value(rank: usize, i: usize) -> f32 {
    let mut z = ((rank as u64) << 40 ^ i as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 40) as f32 / (1u64 << 23) as f32 - 1.0
}

/// Bound on |computed mean - exact mean| for n ranks of values in [-1, 1): n-1 roundings of
/// partial sums of magnitude <= n, divided by n (plus slack); fp16 rounds each hop to 11 bits.
/// Our methods carry the chosen compression; `MPI_Allreduce` always sums f32.
fn compression_of(method: Allreduce, asked: Compression) -> Compression {
    match method {
        Allreduce::Mpi => Compression::None,
        _ => asked,
    }
}

fn tolerance(n: usize, compression: Compression) -> f64 {
    let unit = match compression {
        Compression::None => 2f64.powi(-23),
        Compression::Fp16 => 2f64.powi(-10),
    };
    (n as f64 + 1.0) * unit
}

fn max_abs_diff(a: &[f32], b: impl Iterator<Item = f64>) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, y)| (f64::from(x) - y).abs())
        .fold(0.0, f64::max)
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

/// max |result - exact mean| per outcome, in one pass (the exact mean costs n values per element).
fn diffs_from_exact_mean(n: usize, outcomes: &[Outcome]) -> Vec<f64> {
    let len = outcomes.first().map_or(0, |o| o.result.len());
    let mut diffs = vec![0.0f64; outcomes.len()];
    for i in 0..len {
        let exact = (0..n).map(|r| f64::from(value(r, i))).sum::<f64>() / n as f64;
        for (d, o) in diffs.iter_mut().zip(outcomes) {
            *d = d.max((f64::from(o.result[i]) - exact).abs());
        }
    }
    diffs
}

/// Compares results, gathers per-rank facts to rank 0, prints, and agrees on a verdict.
fn report(world: &World, args: &Args, outcomes: &[Outcome]) -> Result<bool> {
    let n = world.size();
    let diffs = diffs_from_exact_mean(n, outcomes);
    let mpi_result = outcomes
        .iter()
        .find(|o| o.method == Allreduce::Mpi)
        .map(|o| &o.result);
    // Node-local ranks from the shared-memory split, in world rank order (on one host: 0..n).
    let local_ranks: Vec<usize> = world
        .gather_bytes(&(world.local_rank() as u64).to_le_bytes())?
        .unwrap_or_default()
        .iter()
        .map(|b| u64::from_le_bytes(b[..].try_into().expect("8 bytes per rank")) as usize)
        .collect();
    let mut ok = true;
    let mut lines = Vec::new();
    for (o, &local_diff) in outcomes.iter().zip(&diffs) {
        let ours = o.method != Allreduce::Mpi;
        let compression = compression_of(o.method, args.compression);
        let local_vs_mpi = match mpi_result {
            Some(m) if ours => max_abs_diff(&o.result, m.iter().map(|&v| f64::from(v))),
            _ => 0.0,
        };
        let mut facts = fingerprint_f32(&o.result).to_le_bytes().to_vec();
        facts.extend(local_diff.to_le_bytes());
        facts.extend(local_vs_mpi.to_le_bytes());
        let Some(all) = world.gather_bytes(&facts)? else {
            continue;
        };
        let field = |bytes: &[u8], k: usize| -> [u8; 8] {
            bytes[8 * k..8 * k + 8]
                .try_into()
                .expect("24 bytes per rank")
        };
        let hashes: Vec<u64> = all
            .iter()
            .map(|b| u64::from_le_bytes(field(b, 0)))
            .collect();
        let diff = all
            .iter()
            .map(|b| f64::from_le_bytes(field(b, 1)))
            .fold(0.0, f64::max);
        let vs_mpi = all
            .iter()
            .map(|b| f64::from_le_bytes(field(b, 2)))
            .fold(0.0, f64::max);
        let identical = hashes.iter().all(|&h| h == hashes[0]);
        let tol = tolerance(n, compression);
        let secs = median(&o.seconds);
        let bytes = (args.floats * 4) as f64;
        let bus_gbps = if secs > 0.0 {
            2.0 * (n as f64 - 1.0) / n as f64 * bytes / secs / 1e9
        } else {
            0.0
        };
        let method_ok = diff <= tol
            && (!ours || identical)
            && (mpi_result.is_none() || !ours || vs_mpi <= tol + tolerance(n, Compression::None));
        ok &= method_ok;
        let method = o.method.to_string();
        let compression_name = match compression {
            Compression::None => "none",
            Compression::Fp16 => "fp16",
        };
        lines.push(if args.json {
            json!({
                "method": method, "compression": compression_name, "np": n, "floats": args.floats,
                "iters": args.iters, "seconds_median": secs, "bus_gbps": bus_gbps,
                "max_abs_diff": diff, "tolerance": tol,
                "max_abs_diff_vs_mpi": if ours && mpi_result.is_some() { Some(vs_mpi) } else { None },
                "hosts": o.layout.map(|l| l.0), "ranks_per_host": o.layout.map(|l| l.1),
                "identical_across_ranks": identical, "ok": method_ok,
                "fingerprint": format!("{:016x}", hashes[0]),
                "local_ranks": local_ranks,
            })
            .to_string()
        } else {
            format!(
                "{method:<12} {compression_name:<4} np {n} floats {} median {secs:.6} s bus {bus_gbps:.3} GB/s \
                 max|diff| {diff:.3e} (tol {tol:.1e}) identical {identical} {}",
                args.floats,
                if method_ok { "ok" } else { "FAILED" }
            )
        });
    }
    for line in &lines {
        println!("{line}");
    }
    let mut verdict = vec![u8::from(ok)];
    world.broadcast_bytes(&mut verdict, 0)?;
    Ok(verdict == [1])
}
