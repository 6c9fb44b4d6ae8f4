//! `cargo run --release -p dawnrun-schedule --example plan -- SCHEDULE NP TRAIN_IMAGES [STEP...]`:
//! the phase table and the state at the given steps; what `trainer plan` prints, without the
//! trainer's TensorFlow and MPI.

use std::process::ExitCode;

use anyhow::Context;

fn run() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [path, np, images, steps @ ..] = args.as_slice() else {
        anyhow::bail!("usage: plan SCHEDULE NP TRAIN_IMAGES [STEP...]");
    };
    let np: u32 = np
        .parse()
        .with_context(|| format!("NP {np:?} is not a number"))?;
    let images: u64 = images
        .parse()
        .with_context(|| format!("TRAIN_IMAGES {images:?} is not a number"))?;
    let steps = steps
        .iter()
        .map(|s| {
            s.parse::<u64>()
                .with_context(|| format!("STEP {s:?} is not a number"))
        })
        .collect::<anyhow::Result<Vec<u64>>>()?;
    let schedule = dawnrun_schedule::Schedule::load(path)?;
    for warning in schedule.warnings() {
        eprintln!("warning: {warning}");
    }
    let plan = schedule.plan(np, images)?;
    print!("{}", dawnrun_schedule::render_table(&plan));
    print!("{}", dawnrun_schedule::render_at(&plan, &steps)?);
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
