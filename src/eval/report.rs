//! The DAWNBench answer: per-checkpoint accuracies as `eval.tsv` (DAWNBench's columns) and
//! `eval.jsonl`, and the time to the target top-5. Pure functions over `CheckpointResult`s, so the
//! time-to-target logic is tested on crafted results.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// One evaluated checkpoint. Accuracies are percentages (DAWNBench reports 93.0, not 0.93).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointResult {
    pub step: u64,
    pub epoch: f64,
    /// Training wall-clock hours when the checkpoint was written.
    pub hours: f64,
    pub top1: f64,
    pub top5: f64,
    pub loss: f64,
    /// Validation images scored; top-1/top-5 are over these plus the skipped ones.
    pub images: u64,
    /// Validation images skipped as undecodable, counted as misses (so a damaged file can
    /// never raise the accuracy) and named on stderr by the rank that met them.
    #[serde(default)]
    pub skipped_images: u64,
    pub checkpoint: String,
}

/// The first checkpoint (by step) whose top-5 reaches `target`, or the best one when none does.
#[derive(Debug, Clone, PartialEq)]
pub enum TimeToTarget<'a> {
    Reached(&'a CheckpointResult),
    NotReached { best: Option<&'a CheckpointResult> },
}

/// `results` must be sorted by step (the sweep gathers them into a map keyed by step).
pub fn time_to_target(results: &[CheckpointResult], target_top5: f64) -> TimeToTarget<'_> {
    match results.iter().find(|r| r.top5 >= target_top5) {
        Some(r) => TimeToTarget::Reached(r),
        None => TimeToTarget::NotReached {
            best: results
                .iter()
                .max_by(|a, b| a.top5.total_cmp(&b.top5).then(b.step.cmp(&a.step))),
        },
    }
}

/// DAWNBench's table: a header `epoch hours top1Accuracy top5Accuracy` (tab-separated), one row
/// per checkpoint.
pub fn tsv(results: &[CheckpointResult]) -> String {
    let mut out = String::from("epoch\thours\ttop1Accuracy\ttop5Accuracy\n");
    for r in results {
        let _ = writeln!(
            out,
            "{:.2}\t{:.4}\t{:.2}\t{:.2}",
            r.epoch, r.hours, r.top1, r.top5
        );
    }
    out
}

pub fn jsonl(results: &[CheckpointResult]) -> String {
    results
        .iter()
        .map(|r| serde_json::to_string(r).expect("plain struct serialises") + "\n")
        .collect()
}

/// The human-readable table printed at the end of a sweep.
pub fn table(results: &[CheckpointResult]) -> String {
    let mut out = format!(
        "{:>8} {:>7} {:>8} {:>7} {:>7} {:>8}\n",
        "step", "epoch", "hours", "top1", "top5", "loss"
    );
    for r in results {
        let _ = writeln!(
            out,
            "{:>8} {:>7.2} {:>8.4} {:>7.2} {:>7.2} {:>8.4}",
            r.step, r.epoch, r.hours, r.top1, r.top5, r.loss
        );
    }
    out
}

/// One sentence for the end of the report.
pub fn verdict(results: &[CheckpointResult], target_top5: f64) -> String {
    match time_to_target(results, target_top5) {
        TimeToTarget::Reached(r) => format!(
            "time to {target_top5}% top-5: {:.4} h ({:.0} s) at step {}, epoch {:.2} (top-1 {:.2}%, top-5 {:.2}%)",
            r.hours,
            r.hours * 3600.0,
            r.step,
            r.epoch,
            r.top1,
            r.top5
        ),
        TimeToTarget::NotReached { best: Some(b) } => format!(
            "no checkpoint reached {target_top5}% top-5; the best is step {} (epoch {:.2}, {:.4} h): top-1 {:.2}%, top-5 {:.2}%",
            b.step, b.epoch, b.hours, b.top1, b.top5
        ),
        TimeToTarget::NotReached { best: None } => "no checkpoint was evaluated".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(step: u64, top5: f64) -> CheckpointResult {
        CheckpointResult {
            step,
            epoch: step as f64 / 100.0,
            hours: step as f64 / 1000.0,
            top1: top5 - 20.0,
            top5,
            loss: 1.0,
            images: 500,
            skipped_images: 0,
            checkpoint: format!("ckpt-{step}"),
        }
    }

    #[test]
    fn first_checkpoint_at_target_wins_even_if_later_ones_are_better() {
        let rs = vec![
            result(100, 80.0),
            result(200, 93.0),
            result(300, 92.5),
            result(400, 95.0),
        ];
        assert_eq!(time_to_target(&rs, 93.0), TimeToTarget::Reached(&rs[1]));
    }

    #[test]
    fn no_checkpoint_at_target_reports_the_best_earliest() {
        let rs = vec![result(100, 80.0), result(200, 91.0), result(300, 91.0)];
        assert_eq!(
            time_to_target(&rs, 93.0),
            TimeToTarget::NotReached { best: Some(&rs[1]) }
        );
        assert_eq!(
            time_to_target(&[], 93.0),
            TimeToTarget::NotReached { best: None }
        );
        assert!(
            verdict(&rs, 93.0).starts_with("no checkpoint reached 93% top-5; the best is step 200")
        );
    }

    #[test]
    fn tsv_has_dawnbench_header_and_sorted_rows() {
        let mut rs = vec![result(300, 90.0), result(100, 50.0), result(200, 70.0)];
        rs.sort_by_key(|r| r.step);
        let text = tsv(&rs);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "epoch\thours\ttop1Accuracy\ttop5Accuracy");
        assert_eq!(lines[1], "1.00\t0.1000\t30.00\t50.00");
        assert_eq!(lines.len(), 4);
        let epochs: Vec<f64> = lines[1..]
            .iter()
            .map(|l| l.split('\t').next().unwrap().parse().unwrap())
            .collect();
        assert!(epochs.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn jsonl_round_trips() {
        let rs = vec![result(100, 50.0), result(200, 70.0)];
        let back: Vec<CheckpointResult> = jsonl(&rs)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(back, rs);
    }
}
