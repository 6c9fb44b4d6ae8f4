//! Human and machine views of a [`Plan`], for `trainer plan`.
//!
//! Last stage of this crate: formats only, no arithmetic of its own (every number comes from
//! `Plan`/`PhasePlan` methods, so the table, the JSON and the trainer can never disagree).
//! The JSON field names are an interface (`phases`, `at`; `step`, `epoch`, `lr`, `batch_size`,
//! `image_size`): tests and scripts read them, so they do not change.

use std::fmt::Write as _;

use serde_json::{json, Value};

use crate::file::LrMethod;
use crate::plan::{Plan, PlanError, StepInfo};

fn method_name(method: LrMethod) -> &'static str {
    match method {
        LrMethod::Linear => "linear",
        LrMethod::Exp => "exp",
    }
}

/// The phase table: one row per phase, with a header line naming the run and the layout.
pub fn render_table(plan: &Plan) -> String {
    let mut rows = vec![[
        "phase",
        "epochs",
        "first step",
        "last step",
        "steps",
        "batch/rank",
        "global batch",
        "image size",
        "data dir",
        "lr start -> end",
        "method",
    ]
    .map(String::from)];
    for p in &plan.phases {
        rows.push([
            p.index.to_string(),
            format!("{}-{}", p.epoch_start, p.epoch_end),
            p.first_step.to_string(),
            p.last_step().to_string(),
            p.steps().to_string(),
            p.batch_per_rank.to_string(),
            p.global_batch.to_string(),
            format!("{0}x{0}", p.image_px),
            format!("{}/{}", p.data_dir, p.prefix),
            format!("{} -> {}", p.lr_start, p.lr_end),
            method_name(p.method).to_string(),
        ]);
    }
    let mut widths = [0usize; 11];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = format!(
        "{}: {} ranks, {} train images, {} steps, checkpoint every {} steps\n",
        plan.name,
        plan.world_size,
        plan.train_images,
        plan.total_steps(),
        plan.checkpoint_every_steps
    );
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:>w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// One line per requested step: `step`, `epoch`, `lr`, `batch_size`, `image_size`.
pub fn render_at(plan: &Plan, steps: &[u64]) -> Result<String, PlanError> {
    let mut out = String::new();
    for &step in steps {
        let s = plan.at(step)?;
        writeln!(
            out,
            "step {}  epoch {:.4}  lr {:.6}  batch_size {}  image_size {}  phase {}",
            s.step, s.epoch, s.lr, s.batch_size, s.image_size, s.phase
        )
        .expect("writing to a String cannot fail");
    }
    Ok(out)
}

/// `{"phases": [...], "at": [...]}`. Each phase carries `index`, `epochs` [start, end],
/// `epoch_start`, `epoch_end`, `first_step`, `last_step`, `end_step` (exclusive), `steps`,
/// `steps_per_epoch`, `batch_size` (per rank), `global_batch`, `image_size`, `data_dir`,
/// `prefix`, `min_scale`, `lr_start`, `lr_end`, `lr_method`. Each `at` entry carries `step`,
/// `epoch`, `lr`, `batch_size` (per rank), `image_size` and `phase`. Refuses steps past the end.
pub fn to_json(plan: &Plan, at: &[u64]) -> Result<Value, PlanError> {
    let phases: Vec<Value> = plan
        .phases
        .iter()
        .map(|p| {
            json!({
                "index": p.index,
                "epochs": [p.epoch_start, p.epoch_end],
                "epoch_start": p.epoch_start,
                "epoch_end": p.epoch_end,
                "first_step": p.first_step,
                "last_step": p.last_step(),
                "end_step": p.end_step,
                "steps": p.steps(),
                "steps_per_epoch": p.steps_per_epoch,
                "batch_size": p.batch_per_rank,
                "global_batch": p.global_batch,
                "image_size": p.image_px,
                "data_dir": p.data_dir,
                "prefix": p.prefix,
                "min_scale": p.min_scale,
                "lr_start": p.lr_start,
                "lr_end": p.lr_end,
                "lr_method": method_name(p.method),
            })
        })
        .collect();
    let at = at
        .iter()
        .map(|&step| plan.at(step).map(|s| step_json(&s)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(json!({
        "name": plan.name,
        "world_size": plan.world_size,
        "train_images": plan.train_images,
        "total_steps": plan.total_steps(),
        "phases": phases,
        "at": at,
    }))
}

fn step_json(s: &StepInfo) -> Value {
    json!({
        "step": s.step,
        "epoch": s.epoch,
        "lr": s.lr,
        "batch_size": s.batch_size,
        "image_size": s.image_size,
        "phase": s.phase,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Schedule;

    fn plan() -> Plan {
        let text = "phases:\n  - {epoch: [0, 2], lr: [1.0, 2.0], lr_method: linear, batch_size: 10, image_size: 64, data_dir: '160'}\n  - {epoch: [2, 3], lr: [0.5, 0.05], lr_method: exp, batch_size: 5, image_size: [96, 96], data_dir: '320'}\n";
        Schedule::from_str(text, "runs/small.yaml")
            .unwrap()
            .plan(2, 1000)
            .unwrap()
    }

    #[test]
    fn table_lists_every_phase_with_its_steps() {
        let table = render_table(&plan());
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[0],
            "small: 2 ranks, 1000 train images, 200 steps, checkpoint every 625 steps"
        );
        assert!(lines[1].contains("first step") && lines[1].contains("lr start -> end"));
        let cells: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(
            cells,
            [
                "0",
                "0-2",
                "0",
                "99",
                "100",
                "10",
                "20",
                "64x64",
                "160/train",
                "1",
                "->",
                "2",
                "linear"
            ]
        );
        let cells: Vec<&str> = lines[3].split_whitespace().collect();
        assert_eq!(
            cells,
            [
                "1",
                "2-3",
                "100",
                "199",
                "100",
                "5",
                "10",
                "96x96",
                "320/train",
                "0.5",
                "->",
                "0.05",
                "exp"
            ]
        );
        assert_eq!(lines.len(), 4);
    }

    #[test]
    fn json_has_the_agreed_field_names() {
        let v = to_json(&plan(), &[0, 50, 100, 200]).unwrap();
        let phase = &v["phases"][1];
        assert_eq!(phase["first_step"], 100);
        assert_eq!(phase["last_step"], 199);
        assert_eq!(phase["global_batch"], 10);
        assert_eq!(phase["image_size"], 96);
        assert_eq!(phase["lr_method"], "exp");
        assert_eq!(phase["epochs"], json!([2.0, 3.0]));
        let at = v["at"].as_array().unwrap();
        assert_eq!(at.len(), 4);
        assert_eq!(
            at[1],
            json!({"step": 50, "epoch": 1.0, "lr": 1.5, "batch_size": 10, "image_size": 64, "phase": 0})
        );
        assert_eq!(at[2]["lr"], 0.5);
        assert_eq!(at[2]["image_size"], 96);
        assert_eq!(at[3]["epoch"], 3.0);
        assert!(matches!(
            to_json(&plan(), &[201]),
            Err(PlanError::StepPastEnd {
                step: 201,
                total_steps: 200
            })
        ));
    }

    #[test]
    fn at_lines_carry_the_five_fields() {
        let text = render_at(&plan(), &[150]).unwrap();
        assert_eq!(
            text,
            format!(
                "step 150  epoch 2.5000  lr {:.6}  batch_size 5  image_size 96  phase 1\n",
                (0.5f64 * 0.05).sqrt()
            )
        );
    }
}
