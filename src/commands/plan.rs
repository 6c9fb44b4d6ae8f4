//! `trainer plan SCHEDULE --np N [--at S1,S2] [--json]`: the phase table of a schedule laid out
//! on N ranks, without training.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use dawnrun_schedule::Schedule;

use super::data_facts::{self, DataFacts};

#[derive(Args, Debug)]
pub struct PlanArgs {
    schedule: PathBuf,
    /// World size (ranks).
    #[arg(long, default_value_t = 1)]
    np: u32,
    #[command(flatten)]
    data_facts: DataFacts,
    /// Folder holding the shards (to count images); overrides the schedule's `data_root`.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Steps to describe, comma-separated.
    #[arg(long, value_delimiter = ',')]
    at: Vec<u64>,
    /// One JSON object with `phases` and `at` arrays.
    #[arg(long)]
    json: bool,
}

pub fn main(args: PlanArgs) -> Result<()> {
    let schedule = Schedule::load(&args.schedule)?;
    let data_root = args
        .data
        .clone()
        .unwrap_or_else(|| schedule.run.data_root.clone());
    let train_images = match args.data_facts.train_images {
        Some(n) => n,
        None => data_facts::count_train_images(&schedule, &data_root)
            .context("pass --train-images N to plan without records")?,
    };
    let plan = schedule
        .plan(args.np, train_images)
        .with_context(|| format!("{}", args.schedule.display()))?;
    if args.json {
        let json = dawnrun_schedule::to_json(&plan, &args.at)?;
        println!("{}", serde_json::to_string_pretty(&json)?);
        return Ok(());
    }
    println!(
        "{}: {} ranks, {} training images, {} steps",
        plan.name,
        args.np,
        train_images,
        plan.total_steps()
    );
    print!("{}", dawnrun_schedule::render_table(&plan));
    if !args.at.is_empty() {
        print!("{}", dawnrun_schedule::render_at(&plan, &args.at)?);
    }
    Ok(())
}
