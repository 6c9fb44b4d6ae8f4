//! dawnrun-schedule: a YAML schedule file -> a checked [`Schedule`] -> a per-step [`Plan`].
//!
//! The first link of the flow: the trainer reads a schedule, lays it out on its world size and
//! train image count, and from then on asks the plan which phase, lr, epoch, batch and image
//! size each step has and whether a checkpoint is due. Pure: no TensorFlow, no MPI, no data.
//! The only serde_yaml user in the project ([`load`]).
//!
//! Modules, in flow order:
//! - [`file`](mod@file): the types: serde structs mirroring the YAML, [`ScheduleError`], [`Warning`]
//! - [`load`]: YAML text -> [`Schedule`] ([`Schedule::load`], [`Schedule::from_str`]): parse,
//!   record positions, run the checks
//! - [`spans`]: line/column of every YAML node, for errors found after deserialisation
//! - [`check`]: validation run by the loader (gaps, overlaps, ranges) and warnings
//! - [`plan`]: steps per phase, lr/epoch at a step, checkpoints (pure, unit-tested)
//! - [`render`]: the `trainer plan` table and JSON
//!
//! # The format
//! A schedule mirrors the 106-minute run's `training_strategy` list: one
//! `phases:` item per dict, same keys, plus optional blocks for the run's other settings.
//! Every key below is optional unless marked required; defaults are in brackets.
//!
//! With the `clap` feature, [`Allreduce`] and [`Precision`] derive `clap::ValueEnum` with the
//! YAML spellings (`hierarchical`, `ring`, `mpi`; `fp32`, `bf16`, `fp16`), for command-line
//! overrides.
//!
//! ```yaml
//! run:
//!   name: 106min                # [file stem] runs/<name>
//!   data_root: data/records     # [data/records] holds <data_dir>/<prefix>-* shards
//!   depth: 50                   # [50] 18 | 34 | 50 | 101 | 152
//!   data_format: NHWC           # [NHWC] NHWC | NCHW
//!   momentum: 0.9               # [0.9]
//!   nesterov: true              # [true]
//!   weight_decay: 2.0e-4        # [2e-4] L2
//!   decay_bn: false             # [false] decay batch-norm gamma/beta
//!   decay_bias: true            # [true] decay biases (only the final dense layer has one)
//!   zero_init_last_bn_gamma: true  # [true]
//!   label_smoothing: 0.0        # [0]
//!   precision: fp16             # [fp32] fp32 | bf16 | fp16
//!   loss_scale: 256             # [1] a positive number or `dynamic`
//!   initial_loss_scale: 32768   # [32768] where `dynamic` starts
//!   checkpoint_every_steps: 625 # [625] and after the last step
//!   log_every_steps: 625        # [625]
//!   seed: 0                     # [0]
//!   max_image_pixels: 100000000 # [100000000] JPEGs claiming more pixels are skipped unread
//!   inter_op_threads: 0         # [0] TensorFlow's inter-op threads; 0: its default (cores)
//! eval:
//!   data_dir: "320"             # ["320"]
//!   prefix: validation          # [validation]
//!   image_size: 288             # [224] int or [h, w] (square)
//!   crop_mode: central          # [central] central | short_side
//!   crop_fraction: 0.8          # [0.8] central: fraction of height and width kept
//!   resize_ratio: 1.14          # [1.14] short_side: short side -> image_size x ratio
//!   rect_val: false             # [false]
//!   batch_size: 250             # [250]
//!   target_top5: 93             # [93] percent
//! distributed:
//!   allreduce: hierarchical     # [hierarchical] hierarchical | ring | mpi
//!   fusion_threshold_mb: 64     # [64]
//!   compression: none           # [none] none | fp16
//!   stall_warning_s: 60         # [60] warn when a rank is this late to a step
//!   stall_shutdown_s: 600       # [600] end the job when a rank is this late; 0: never
//!   overlap: false              # [false] all-reduce each fusion group while backward runs
//! phases:                       # required, contiguous, first starts at epoch 0
//!   - {epoch: [0, 6], lr: [1.0, 2.0], lr_method: linear, batch_size: 740,
//!      image_size: [128, 128], data_dir: "160", prefix: train, min_scale: 0.08}
//! ```
//! In a phase, `epoch`, `lr`, `lr_method` (linear | exp), `batch_size` (per rank),
//! `image_size` and `data_dir` are required; `prefix` (default `train`) and `min_scale` (default 0.08) are not.
//! Every `image_size` (phases and eval) is at least 32, ResNet's total stride.
#![deny(unsafe_code)]

pub mod check;
pub mod file;
pub mod load;
pub mod plan;
pub mod render;
pub mod spans;

pub use file::{
    Allreduce, Compression, CropMode, DataFormat, DistributedSettings, EvalSettings, ImageSize,
    LossScale, LrMethod, Phase, Precision, RunSettings, Schedule, ScheduleError, Warning,
};
pub use plan::{interpolate, phase_steps, PhasePlan, Plan, PlanError, StepInfo};
pub use render::{render_at, render_table, to_json};
pub use spans::Location;

#[cfg(test)]
mod tests {
    /// The format example in this crate's docs is a valid schedule.
    #[test]
    fn the_documented_example_loads() {
        let doc: String = include_str!("lib.rs")
            .lines()
            .filter_map(|l| l.strip_prefix("//!"))
            .map(|l| l.strip_prefix(' ').unwrap_or(l))
            .skip_while(|l| *l != "```yaml")
            .skip(1)
            .take_while(|l| *l != "```")
            .map(|l| format!("{l}\n"))
            .collect();
        assert!(doc.contains("phases:"), "example not found");
        let s = crate::Schedule::from_str(&doc, "lib.rs").unwrap();
        assert_eq!(s.name(), "106min");
        assert!(s.warnings().is_empty());
        assert_eq!(s.plan(8, 1_281_167).unwrap().total_steps(), 1296);
    }
}
