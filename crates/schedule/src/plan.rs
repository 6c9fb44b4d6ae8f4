//! The per-step plan: a checked [`Schedule`] laid out on a world size and a train image count.
//!
//! Second stage of the flow (YAML -> Schedule -> [`Plan`] -> trainer). Pure arithmetic, no I/O:
//! which phase runs step s, at which lr, epoch, batch and size, and when to checkpoint. Only
//! `Plan` crosses into the training loop.
//!
//! Step counting: one epoch of a phase is
//! `floor(train_images / (batch_per_rank * world_size))` steps (a partial last batch is
//! dropped), and a phase runs `floor(steps_per_epoch * (epoch_end - epoch_start))` steps; with
//! whole epochs (every reference schedule) the floor changes nothing, with fractional epochs it
//! drops the partial step. Phases follow each other without gaps, so phase i's `first_step` is
//! the sum of the earlier phases' steps.
//!
//! `step` is the global 0-based optimizer step, equal to the number of steps already taken.

use std::path::PathBuf;

use serde::Serialize;

use crate::file::{DistributedSettings, EvalSettings, LrMethod, RunSettings, Schedule};
use crate::spans::Location;

/// A schedule that cannot be laid out on this world size and data set.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("world size must be at least 1 rank, got 0")]
    NoRanks,
    /// The schedule was changed after loading (e.g. a command-line override) and no longer
    /// passes the loader's checks.
    #[error(transparent)]
    Schedule(#[from] crate::file::ScheduleError),
    #[error(
        "{}:{location}: phases[{phase}].batch_size: a global batch of {global_batch} ({batch_per_rank} per rank x {world_size} ranks) \
         is more than the {train_images} training images, so an epoch has no full step; lower batch_size or use fewer ranks",
        .path.display()
    )]
    BatchTooLarge {
        path: PathBuf,
        location: Location,
        phase: usize,
        batch_per_rank: u32,
        world_size: u32,
        global_batch: u64,
        train_images: u64,
    },
    #[error(
        "{}:{location}: phases[{phase}].epoch: {epochs} epochs at {steps_per_epoch} steps per epoch is less than one step",
        .path.display()
    )]
    EmptyPhase {
        path: PathBuf,
        location: Location,
        phase: usize,
        epochs: f64,
        steps_per_epoch: u64,
    },
    #[error("step {step} is past the end of the plan ({total_steps} steps)")]
    StepPastEnd { step: u64, total_steps: u64 },
}

/// One phase laid out in steps. Steps `first_step..end_step` belong to it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PhasePlan {
    /// Position in the schedule's `phases` list.
    pub index: usize,
    pub epoch_start: f64,
    pub epoch_end: f64,
    /// lr at `first_step` ...
    pub lr_start: f64,
    /// ... and the value the ramp reaches at `end_step` (the next phase's first step).
    pub lr_end: f64,
    pub method: LrMethod,
    /// Images per rank per step.
    pub batch_per_rank: u32,
    /// batch_per_rank x world size.
    pub global_batch: u64,
    /// Square training crop side, pixels.
    pub image_px: u32,
    /// Folder under the run's data root.
    pub data_dir: String,
    pub prefix: String,
    /// Lower bound of the random crop area fraction.
    pub min_scale: f64,
    /// floor(train_images / global_batch) >= 1.
    pub steps_per_epoch: u64,
    pub first_step: u64,
    /// Exclusive; > first_step.
    pub end_step: u64,
}

impl PhasePlan {
    /// Number of steps in this phase (>= 1).
    pub fn steps(&self) -> u64 {
        self.end_step - self.first_step
    }

    /// The phase's last step (inclusive).
    pub fn last_step(&self) -> u64 {
        self.end_step - 1
    }

    pub fn contains(&self, step: u64) -> bool {
        (self.first_step..self.end_step).contains(&step)
    }

    /// lr at `step`, interpolated per step (not per epoch: both reference schedules ramp batch
    /// by batch) with t = (step - first_step) / (end_step - first_step), clamped to [0, 1].
    pub fn lr_at(&self, step: u64) -> f64 {
        let t = (step.saturating_sub(self.first_step) as f64 / self.steps() as f64).min(1.0);
        interpolate(self.method, self.lr_start, self.lr_end, t)
    }

    /// Fractional epoch reached after `step` steps: epoch_start + (step - first_step) /
    /// steps_per_epoch. Not clamped: past `end_step` it keeps counting at this phase's rate.
    pub fn epoch_at(&self, step: u64) -> f64 {
        let done = step.saturating_sub(self.first_step) as f64;
        self.epoch_start + done / self.steps_per_epoch as f64
    }
}

/// lr at fraction `t` in [0, 1] of a ramp from `lr0` to `lr1`.
pub fn interpolate(method: LrMethod, lr0: f64, lr1: f64, t: f64) -> f64 {
    match method {
        LrMethod::Linear => lr0 + (lr1 - lr0) * t,
        LrMethod::Exp => lr0 * (lr1 / lr0).powf(t),
    }
}

/// Everything the trainer needs to know at one step.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepInfo {
    pub step: u64,
    pub epoch: f64,
    pub lr: f64,
    /// Per rank, as in the schedule.
    pub batch_size: u32,
    pub image_size: u32,
    /// Index of the phase that runs this step.
    pub phase: usize,
}

/// A schedule laid out on `world_size` ranks and `train_images` images. Immutable.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub name: String,
    /// The schedule file this plan came from.
    pub source: PathBuf,
    pub world_size: u32,
    pub train_images: u64,
    pub checkpoint_every_steps: u64,
    /// Non-empty and contiguous: `phases[i].end_step == phases[i + 1].first_step`, `phases[0].first_step == 0`.
    pub phases: Vec<PhasePlan>,
    pub run: RunSettings,
    pub eval: EvalSettings,
    pub distributed: DistributedSettings,
}

impl Schedule {
    /// Lay the phases out in steps for `world_size` ranks over `train_images` images.
    pub fn plan(&self, world_size: u32, train_images: u64) -> Result<Plan, PlanError> {
        if world_size == 0 {
            return Err(PlanError::NoRanks);
        }
        // Fields are public, so a caller may have edited them since loading: check again.
        crate::check::check(self)?;
        let mut phases = Vec::with_capacity(self.phases.len());
        let mut first_step = 0u64;
        for (index, phase) in self.phases.iter().enumerate() {
            // Checked just above: batch in 1..=u32::MAX, size square in 1..=65535.
            let batch_per_rank = u32::try_from(phase.batch_size).expect("checked batch_size");
            let image_px = u32::try_from(phase.image_size.height).expect("checked image_size");
            let global_batch = u64::from(batch_per_rank) * u64::from(world_size);
            let steps_per_epoch = train_images / global_batch;
            if steps_per_epoch == 0 {
                return Err(PlanError::BatchTooLarge {
                    path: self.path().to_path_buf(),
                    location: self.locate(&format!("phases[{index}].batch_size")),
                    phase: index,
                    batch_per_rank,
                    world_size,
                    global_batch,
                    train_images,
                });
            }
            let [epoch_start, epoch_end] = phase.epoch;
            let steps = phase_steps(steps_per_epoch, epoch_end - epoch_start);
            if steps == 0 {
                return Err(PlanError::EmptyPhase {
                    path: self.path().to_path_buf(),
                    location: self.locate(&format!("phases[{index}].epoch")),
                    phase: index,
                    epochs: epoch_end - epoch_start,
                    steps_per_epoch,
                });
            }
            phases.push(PhasePlan {
                index,
                epoch_start,
                epoch_end,
                lr_start: phase.lr[0],
                lr_end: phase.lr[1],
                method: phase.lr_method,
                batch_per_rank,
                global_batch,
                image_px,
                data_dir: phase.data_dir.clone(),
                prefix: phase.prefix.clone(),
                min_scale: phase.min_scale,
                steps_per_epoch,
                first_step,
                end_step: first_step + steps,
            });
            first_step += steps;
        }
        Ok(Plan {
            name: self.name().to_string(),
            source: self.path().to_path_buf(),
            world_size,
            train_images,
            checkpoint_every_steps: self.run.checkpoint_every_steps,
            phases,
            run: self.run.clone(),
            eval: self.eval.clone(),
            distributed: self.distributed.clone(),
        })
    }
}

/// floor(steps_per_epoch * epochs). The product is rounded to 1e-9 first so that e.g.
/// 0.1 + 0.2 epochs does not lose a step to binary fractions.
pub fn phase_steps(steps_per_epoch: u64, epochs: f64) -> u64 {
    let exact = steps_per_epoch as f64 * epochs;
    let rounded = (exact * 1e9).round() / 1e9;
    rounded.floor().max(0.0) as u64
}

impl Plan {
    /// Steps in the whole run.
    pub fn total_steps(&self) -> u64 {
        self.phases.last().map_or(0, |p| p.end_step)
    }

    /// The phase that runs step `step`; None at or past [`Plan::total_steps`].
    pub fn phase_at(&self, step: u64) -> Option<&PhasePlan> {
        let i = self.phases.partition_point(|p| p.end_step <= step);
        self.phases.get(i)
    }

    /// The phase for `step`, or the last phase for steps at or past the end.
    fn phase_or_last(&self, step: u64) -> &PhasePlan {
        self.phase_at(step)
            .unwrap_or_else(|| self.phases.last().expect("a plan has at least one phase"))
    }

    /// Phases still (partly) to run when `step` steps are done, in order.
    pub fn phases_from(&self, step: u64) -> impl Iterator<Item = &PhasePlan> {
        self.phases.iter().filter(move |p| p.end_step > step)
    }

    /// lr for step `step`; at or past the end, the last phase's `lr_end`.
    pub fn lr_at(&self, step: u64) -> f64 {
        self.phase_or_last(step).lr_at(step)
    }

    /// Fractional epoch after `step` steps (at `total_steps()`, the last phase's end, less any
    /// step dropped by flooring fractional epochs).
    pub fn epoch_at(&self, step: u64) -> f64 {
        self.phase_or_last(step).epoch_at(step)
    }

    /// The step count that reaches `epoch` on this plan: how a checkpoint made at another world
    /// size is resumed (its epoch is what both plans share; steps per epoch differ). Rounded to
    /// the nearest step, clamped to the plan.
    pub fn step_at_epoch(&self, epoch: f64) -> u64 {
        let phase = self
            .phases
            .iter()
            .find(|p| epoch < p.epoch_end)
            .unwrap_or_else(|| self.phases.last().expect("a plan has at least one phase"));
        let into = ((epoch - phase.epoch_start).max(0.0) * phase.steps_per_epoch as f64).round();
        (phase.first_step + into as u64).min(phase.end_step)
    }

    /// Whether a checkpoint is written once `step` steps are done: every
    /// `checkpoint_every_steps`, and after the final step.
    pub fn checkpoint_due(&self, step: u64) -> bool {
        step > 0 && (step.is_multiple_of(self.checkpoint_every_steps) || step == self.total_steps())
    }

    /// Step, epoch, lr, batch and size at `step` (0..=total_steps; at total_steps, the state
    /// after the last step).
    pub fn at(&self, step: u64) -> Result<StepInfo, PlanError> {
        let total_steps = self.total_steps();
        if step > total_steps {
            return Err(PlanError::StepPastEnd { step, total_steps });
        }
        let phase = self.phase_or_last(step);
        Ok(StepInfo {
            step,
            epoch: phase.epoch_at(step),
            lr: phase.lr_at(step),
            batch_size: phase.batch_per_rank,
            image_size: phase.image_px,
            phase: phase.index,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IMAGENET_TRAIN: u64 = 1_281_167;

    #[test]
    fn step_at_epoch_inverts_epoch_at_and_maps_between_world_sizes() {
        let s = shipped("106min");
        for np in [1u32, 2, 4, 8] {
            let plan = s.plan(np, IMAGENET_TRAIN).unwrap();
            for step in (0..plan.total_steps()).step_by(97) {
                assert_eq!(
                    plan.step_at_epoch(plan.epoch_at(step)),
                    step,
                    "np {np} step {step}"
                );
            }
        }
        let (p8, p4) = (
            s.plan(8, IMAGENET_TRAIN).unwrap(),
            s.plan(4, IMAGENET_TRAIN).unwrap(),
        );
        // Epoch 6 starts phase 1 on both, whatever the step numbers.
        assert_eq!(p8.step_at_epoch(6.0), p8.phases[1].first_step);
        assert_eq!(p4.step_at_epoch(6.0), p4.phases[1].first_step);
        assert_eq!(p4.step_at_epoch(1e9), p4.total_steps());
    }

    fn schedule(text: &str) -> Schedule {
        Schedule::from_str(text, "test.yaml").unwrap()
    }

    fn shipped(name: &str) -> Schedule {
        let path = format!("{}/../../schedules/{name}.yaml", env!("CARGO_MANIFEST_DIR"));
        Schedule::load(path).unwrap()
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 * a.abs().max(b.abs()).max(1.0)
    }

    #[test]
    fn plan_106min_on_8_ranks_matches_hand_counts() {
        let plan = shipped("106min").plan(8, IMAGENET_TRAIN).unwrap();
        // 1281167 / 5920 = 216.4; / 2048 = 625.6; / 1568 = 817.1; / 1024 = 1251.1
        let expected: [(u64, u64, u64, u64); 5] = [
            (216, 0, 1296, 5920),
            (216, 1296, 4536, 5920),
            (625, 4536, 11411, 2048),
            (817, 11411, 14679, 1568),
            (1251, 14679, 19683, 1024),
        ];
        assert_eq!(plan.phases.len(), 5);
        for (phase, (spe, first, end, global)) in plan.phases.iter().zip(expected) {
            assert_eq!(
                (
                    phase.steps_per_epoch,
                    phase.first_step,
                    phase.end_step,
                    phase.global_batch
                ),
                (spe, first, end, global)
            );
        }
        assert_eq!(plan.total_steps(), 19683);
        // The run reached 93% top-5 at step 15000, "epoch 36.2".
        let at = plan.at(15000).unwrap();
        assert_eq!((at.phase, at.batch_size, at.image_size), (4, 128, 288));
        assert!((36.2..36.3).contains(&at.epoch), "epoch {}", at.epoch);
        // One epoch of the 224-px phase is 625 steps: the run's checkpoint interval.
        assert!(
            plan.checkpoint_due(625) && plan.checkpoint_due(15000) && !plan.checkpoint_due(15001)
        );
        assert!(
            plan.checkpoint_due(19683),
            "the final step is always checkpointed"
        );
    }

    #[test]
    fn every_shipped_schedule_loads_and_plans() {
        for (name, ranks, images) in [
            ("106min", 8, IMAGENET_TRAIN),
            ("imagenet18", 8, IMAGENET_TRAIN),
            ("demo", 2, 2600),
        ] {
            let s = shipped(name);
            assert!(s.warnings().is_empty(), "{name}: {:?}", s.warnings());
            assert_eq!(s.name(), name);
            for np in 1..=ranks {
                let plan = s.plan(np, images).unwrap();
                assert_eq!(
                    plan.phases.last().unwrap().epoch_end,
                    s.phases.last().unwrap().epoch[1]
                );
                for pair in plan.phases.windows(2) {
                    assert_eq!(pair[0].end_step, pair[1].first_step);
                    assert_eq!(pair[0].epoch_end, pair[1].epoch_start);
                }
            }
        }
    }

    #[test]
    fn imagenet18_has_the_faithful_phase_details() {
        let plan = shipped("imagenet18").plan(8, IMAGENET_TRAIN).unwrap();
        let sizes: Vec<u32> = plan.phases.iter().map(|p| p.image_px).collect();
        assert_eq!(sizes, [128, 128, 224, 224, 288]);
        let min_scales: Vec<f64> = plan.phases.iter().map(|p| p.min_scale).collect();
        assert_eq!(min_scales, [0.08, 0.08, 0.087, 0.087, 0.5]);
        assert_eq!(plan.phases.last().unwrap().epoch_end, 28.0);
        assert!(plan.eval.rect_val);
        assert_eq!(plan.run.loss_scale, crate::LossScale::Static(1024.0));
    }

    #[test]
    fn linear_and_exp_formulas_at_0_half_1() {
        for (lr0, lr1) in [
            (1.0, 2.0),
            (2.0, 0.45),
            (0.45, 0.02),
            (0.004, 0.002),
            (3.0, 3.0),
        ] {
            assert!(close(interpolate(LrMethod::Linear, lr0, lr1, 0.0), lr0));
            assert!(close(
                interpolate(LrMethod::Linear, lr0, lr1, 0.5),
                (lr0 + lr1) / 2.0
            ));
            assert!(close(interpolate(LrMethod::Linear, lr0, lr1, 1.0), lr1));
            assert!(close(interpolate(LrMethod::Exp, lr0, lr1, 0.0), lr0));
            assert!(close(
                interpolate(LrMethod::Exp, lr0, lr1, 0.5),
                (lr0 * lr1).sqrt()
            ));
            assert!(close(interpolate(LrMethod::Exp, lr0, lr1, 1.0), lr1));
        }
    }

    #[test]
    fn exp_lr_is_monotone_over_every_step() {
        let plan = shipped("106min").plan(8, IMAGENET_TRAIN).unwrap();
        for phase in plan.phases.iter().filter(|p| p.method == LrMethod::Exp) {
            let mut previous = f64::INFINITY;
            for step in phase.first_step..phase.end_step {
                let lr = plan.lr_at(step);
                assert!(
                    lr < previous && lr > phase.lr_end,
                    "phase {} step {step}: {lr}",
                    phase.index
                );
                previous = lr;
            }
        }
    }

    #[test]
    fn boundary_steps_switch_phase_and_lr() {
        let plan = shipped("106min").plan(8, IMAGENET_TRAIN).unwrap();
        for pair in plan.phases.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            assert_eq!(plan.phase_at(a.last_step()).unwrap().index, a.index);
            assert_eq!(plan.phase_at(b.first_step).unwrap().index, b.index);
            assert!(close(plan.lr_at(b.first_step), b.lr_start));
            assert!(close(plan.epoch_at(b.first_step), b.epoch_start));
            // The ramp of phase a ends where phase b starts (true of the 106-min schedule).
            assert!(close(a.lr_at(a.end_step), b.lr_start));
        }
        assert!(plan.phase_at(plan.total_steps()).is_none());
        assert!(close(plan.lr_at(plan.total_steps()), 0.002));
        assert!(close(plan.epoch_at(plan.total_steps()), 40.0));
        assert!(plan.at(plan.total_steps()).is_ok());
        assert!(matches!(
            plan.at(plan.total_steps() + 1),
            Err(PlanError::StepPastEnd { .. })
        ));
    }

    #[test]
    fn steps_per_phase_follow_the_formula_for_many_sizes() {
        let s = schedule("phases:\n  - {epoch: [0, 3], lr: [0.1, 0.2], lr_method: linear, batch_size: 32, image_size: 64, data_dir: d}\n  - {epoch: [3, 4.5], lr: [0.2, 0.01], lr_method: exp, batch_size: 7, image_size: 96, data_dir: d}\n");
        for np in 1..9u32 {
            for images in [256u64, 1000, 2600, 12_345, 99_999] {
                let plan = s.plan(np, images).unwrap();
                let spe0 = images / (32 * u64::from(np));
                let spe1 = images / (7 * u64::from(np));
                assert_eq!(plan.phases[0].steps(), spe0 * 3);
                assert_eq!(plan.phases[1].steps(), (spe1 as f64 * 1.5).floor() as u64);
                assert_eq!(plan.total_steps(), spe0 * 3 + plan.phases[1].steps());
                for step in 0..plan.total_steps() {
                    let phase = plan.phase_at(step).unwrap();
                    assert!(phase.contains(step));
                    let info = plan.at(step).unwrap();
                    assert!(info.epoch >= phase.epoch_start && info.epoch < phase.epoch_end);
                }
            }
        }
    }

    #[test]
    fn fractional_epochs_floor_the_product() {
        assert_eq!(phase_steps(216, 0.5), 108);
        assert_eq!(phase_steps(625, 0.3), 187);
        assert_eq!(phase_steps(10, 0.1 + 0.2), 3);
        assert_eq!(phase_steps(3, 1.0 / 3.0), 1);
    }

    #[test]
    fn batch_larger_than_the_data_names_the_phase_line() {
        let text = "phases:\n  - {epoch: [0, 1], lr: [0.1, 0.2], lr_method: linear, batch_size: 32, image_size: 64, data_dir: d}\n  - epoch: [1, 2]\n    lr: [0.1, 0.2]\n    lr_method: linear\n    batch_size: 512\n    image_size: 64\n    data_dir: d\n";
        let err = schedule(text).plan(2, 1000).unwrap_err();
        assert!(
            matches!(
                err,
                PlanError::BatchTooLarge {
                    phase: 1,
                    global_batch: 1024,
                    ..
                }
            ),
            "{err}"
        );
        assert!(
            err.to_string()
                .starts_with("test.yaml:6:5: phases[1].batch_size: a global batch of 1024"),
            "{err}"
        );
    }

    #[test]
    fn a_phase_shorter_than_one_step_is_refused() {
        let s = schedule("phases:\n  - {epoch: [0, 0.001], lr: [0.1, 0.2], lr_method: linear, batch_size: 32, image_size: 64, data_dir: d}\n");
        let err = s.plan(1, 3200).unwrap_err();
        assert!(
            matches!(
                err,
                PlanError::EmptyPhase {
                    phase: 0,
                    steps_per_epoch: 100,
                    ..
                }
            ),
            "{err}"
        );
        assert!(matches!(s.plan(0, 3200), Err(PlanError::NoRanks)));
    }

    #[test]
    fn edits_after_loading_are_checked_again() {
        let mut s = schedule("phases:\n  - {epoch: [0, 1], lr: [0.1, 0.2], lr_method: linear, batch_size: 32, image_size: 64, data_dir: d}\n");
        s.phases[0].batch_size = -1;
        let err = s.plan(1, 3200).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("test.yaml:2:56: phases[0].batch_size: must be a positive"),
            "{err}"
        );
    }

    #[test]
    fn checkpoints_every_n_and_at_the_end() {
        let s = schedule("run: {checkpoint_every_steps: 7}\nphases:\n  - {epoch: [0, 1], lr: [0.1, 0.2], lr_method: linear, batch_size: 10, image_size: 64, data_dir: d}\n");
        let plan = s.plan(1, 250).unwrap();
        let due: Vec<u64> = (0..=plan.total_steps())
            .filter(|&s| plan.checkpoint_due(s))
            .collect();
        assert_eq!(due, [7, 14, 21, 25]);
    }
}
