//! Validation of a deserialised [`Schedule`]: everything serde cannot see from one value alone.
//!
//! Runs inside [`Schedule::from_str`], so no schedule leaves the loader unchecked. Each
//! refusal is a [`ScheduleError::Invalid`] positioned at the offending node (via
//! [`crate::spans`]); the first problem in file order wins. Legal-but-suspicious settings come
//! back as [`Warning`]s. Errors are the file module's [`ScheduleError`]: checking is part of
//! reading the file, not a separate concern with its own failure kinds.

use crate::file::{CropMode, LossScale, LrMethod, Precision, Schedule, ScheduleError, Warning};

/// Depths with a ResNet definition (basic blocks for 18/34, bottlenecks above).
pub const DEPTHS: [u32; 5] = [18, 34, 50, 101, 152];

/// Smallest image side: ResNet halves the resolution five times (total stride 32).
pub const MIN_IMAGE_PX: i64 = 32;

type Check = Result<(), ScheduleError>;

/// Check every field and the relations between phases; return the warnings.
pub(crate) fn check(s: &Schedule) -> Result<Vec<Warning>, ScheduleError> {
    check_run(s)?;
    check_eval(s)?;
    check_distributed(s)?;
    check_phases(s)?;
    Ok(warnings(s))
}

fn check_run(s: &Schedule) -> Check {
    let run = &s.run;
    if let Some(name) = &run.name {
        // "." and ".." would put the run's files in runs/ itself or in the checkout.
        if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\\']) {
            return Err(s.invalid(
                "run.name",
                format!("{name:?} is not usable as a folder name under runs/"),
            ));
        }
    }
    if run.data_root.as_os_str().is_empty() {
        return Err(s.invalid(
            "run.data_root",
            "must name a folder, got an empty string".into(),
        ));
    }
    if !DEPTHS.contains(&run.depth) {
        return Err(s.invalid(
            "run.depth",
            format!("ResNet depth must be one of {DEPTHS:?}, got {}", run.depth),
        ));
    }
    in_range(s, "run.momentum", run.momentum, Range::FractionBelowOne)?;
    in_range(s, "run.weight_decay", run.weight_decay, Range::NonNegative)?;
    in_range(
        s,
        "run.label_smoothing",
        run.label_smoothing,
        Range::FractionBelowOne,
    )?;
    if let LossScale::Static(scale) = run.loss_scale {
        if !(scale.is_finite() && scale > 0.0) {
            return Err(s.invalid(
                "run.loss_scale",
                format!("must be a positive number or `dynamic`, got {scale}"),
            ));
        }
    }
    if !(run.initial_loss_scale.is_finite() && run.initial_loss_scale > 0.0) {
        return Err(s.invalid(
            "run.initial_loss_scale",
            format!("must be a positive number, got {}", run.initial_loss_scale),
        ));
    }
    positive_steps(s, "run.checkpoint_every_steps", run.checkpoint_every_steps)?;
    positive_steps(s, "run.log_every_steps", run.log_every_steps)?;
    if run.max_image_pixels == 0 {
        return Err(s.invalid(
            "run.max_image_pixels",
            "must be at least 1 pixel (it is the largest width x height a JPEG may claim)".into(),
        ));
    }
    Ok(())
}

fn check_eval(s: &Schedule) -> Check {
    let eval = &s.eval;
    non_empty(s, "eval.data_dir", &eval.data_dir)?;
    non_empty(s, "eval.prefix", &eval.prefix)?;
    image_px(s, "eval.image_size", eval.image_size)?;
    in_range(
        s,
        "eval.crop_fraction",
        eval.crop_fraction,
        Range::FractionAboveZero,
    )?;
    if !(eval.resize_ratio.is_finite() && eval.resize_ratio >= 1.0) {
        return Err(s.invalid(
            "eval.resize_ratio",
            format!("must be >= 1 (the short side is resized to image_size x ratio before the crop), got {}", eval.resize_ratio),
        ));
    }
    positive_count(
        s,
        "eval.batch_size",
        eval.batch_size,
        "images per eval batch",
    )?;
    in_range(s, "eval.target_top5", eval.target_top5, Range::Percent)
}

fn check_distributed(s: &Schedule) -> Check {
    let d = &s.distributed;
    in_range(
        s,
        "distributed.fusion_threshold_mb",
        d.fusion_threshold_mb,
        Range::NonNegative,
    )?;
    in_range(
        s,
        "distributed.stall_warning_s",
        d.stall_warning_s,
        Range::PositiveSeconds,
    )?;
    in_range(
        s,
        "distributed.stall_shutdown_s",
        d.stall_shutdown_s,
        Range::Seconds,
    )
}

fn check_phases(s: &Schedule) -> Check {
    if s.phases.is_empty() {
        return Err(s.invalid(
            "phases",
            "the schedule has no phases; give at least one".into(),
        ));
    }
    for (i, phase) in s.phases.iter().enumerate() {
        let field = |name: &str| format!("phases[{i}].{name}");
        let [start, end] = phase.epoch;
        if !(start.is_finite() && end.is_finite()) {
            return Err(s.invalid(
                &field("epoch"),
                format!("epochs must be finite numbers, got [{start}, {end}]"),
            ));
        }
        if end < start {
            return Err(s.invalid(
                &field("epoch"),
                format!("reversed range [{start}, {end}]: the phase ends before it starts; write [{end}, {start}]?"),
            ));
        }
        if i == 0 && start != 0.0 {
            return Err(s.invalid(
                &field("epoch[0]"),
                format!("the first phase starts at epoch {start}; it must start at 0"),
            ));
        }
        if i > 0 {
            let previous_end = s.phases[i - 1].epoch[1];
            if start != previous_end {
                let kind = if start > previous_end {
                    "a gap"
                } else {
                    "an overlap"
                };
                return Err(s.invalid(
                    &field("epoch[0]"),
                    format!("phase {i} starts at epoch {start} but phase {} ends at {previous_end}: {kind} between phases", i - 1),
                ));
            }
        }
        if end <= start {
            return Err(s.invalid(
                &field("epoch[1]"),
                format!("the phase ends at epoch {end}, not after its start {start}"),
            ));
        }
        let [lr0, lr1] = phase.lr;
        if !(lr0.is_finite() && lr1.is_finite() && lr0 >= 0.0 && lr1 >= 0.0) {
            return Err(s.invalid(
                &field("lr"),
                format!("learning rates must be finite and >= 0, got [{lr0}, {lr1}]"),
            ));
        }
        if phase.lr_method == LrMethod::Exp && (lr0 <= 0.0 || lr1 <= 0.0) {
            return Err(s.invalid(
                &field("lr"),
                format!("lr_method exp needs both ends > 0 (lr = lr0 * (lr1/lr0)^t), got [{lr0}, {lr1}]"),
            ));
        }
        positive_count(
            s,
            &field("batch_size"),
            phase.batch_size,
            "images per rank per step",
        )?;
        image_px(s, &field("image_size"), phase.image_size)?;
        non_empty(s, &field("data_dir"), &phase.data_dir)?;
        non_empty(s, &field("prefix"), &phase.prefix)?;
        in_range(
            s,
            &field("min_scale"),
            phase.min_scale,
            Range::FractionAboveZero,
        )?;
    }
    Ok(())
}

fn warnings(s: &Schedule) -> Vec<Warning> {
    let mut out = Vec::new();
    if s.run.precision == Precision::Fp16 && s.run.loss_scale == LossScale::Static(1.0) {
        out.push(s.warning(
            "run.loss_scale",
            "fp16 without loss scaling: small gradients underflow to zero; set loss_scale (e.g. 256) or `dynamic`".into(),
        ));
    }
    if s.eval.crop_mode == CropMode::ShortSide && s.eval.crop_fraction != 0.8 {
        out.push(s.warning(
            "eval.crop_fraction",
            "is ignored with crop_mode short_side (resize_ratio applies)".into(),
        ));
    }
    out
}

/// An allowed interval for a real-valued setting, as told to the user.
#[derive(Clone, Copy)]
enum Range {
    /// [0, inf)
    NonNegative,
    /// [0, 1)
    FractionBelowOne,
    /// (0, 1]
    FractionAboveZero,
    /// (0, 100]
    Percent,
    /// (0, a year]: a duration the trainer turns into a `Duration` and adds a grace to.
    PositiveSeconds,
    /// [0, a year]
    Seconds,
}

/// The longest duration a schedule may give (eval-sweep's flags have the same bound).
const YEAR_S: f64 = 365.0 * 86400.0;

impl Range {
    fn contains(self, v: f64) -> bool {
        v.is_finite()
            && match self {
                Range::NonNegative => v >= 0.0,
                Range::FractionBelowOne => (0.0..1.0).contains(&v),
                Range::FractionAboveZero => v > 0.0 && v <= 1.0,
                Range::Percent => v > 0.0 && v <= 100.0,
                Range::PositiveSeconds => v > 0.0 && v <= YEAR_S,
                Range::Seconds => (0.0..=YEAR_S).contains(&v),
            }
    }

    fn text(self) -> &'static str {
        match self {
            Range::NonNegative => "[0, inf)",
            Range::FractionBelowOne => "[0, 1)",
            Range::FractionAboveZero => "(0, 1]",
            Range::Percent => "(0, 100] percent",
            Range::PositiveSeconds => "(0, 31536000] seconds",
            Range::Seconds => "[0, 31536000] seconds",
        }
    }
}

/// `v` is finite and inside `range`.
fn in_range(s: &Schedule, field: &str, v: f64, range: Range) -> Check {
    if range.contains(v) {
        Ok(())
    } else {
        Err(s.invalid(field, format!("must be in {}, got {v}", range.text())))
    }
}

fn positive_count(s: &Schedule, field: &str, v: i64, what: &str) -> Check {
    if v > 0 && v <= i64::from(u32::MAX) {
        Ok(())
    } else {
        Err(s.invalid(
            field,
            format!("must be a positive number of {what}, got {v}"),
        ))
    }
}

fn positive_steps(s: &Schedule, field: &str, v: u64) -> Check {
    if v > 0 {
        Ok(())
    } else {
        Err(s.invalid(field, "must be at least 1 step".into()))
    }
}

fn image_px(s: &Schedule, field: &str, size: crate::file::ImageSize) -> Check {
    if size.height != size.width {
        return Err(s.invalid(
            field,
            format!(
                "[{}, {}] is not square; only square sizes are supported for now",
                size.height, size.width
            ),
        ));
    }
    if size.height <= 0 || size.height > 65_535 {
        return Err(s.invalid(
            field,
            format!(
                "must be a positive number of pixels (at most 65535), got {}",
                size.height
            ),
        ));
    }
    if size.height < MIN_IMAGE_PX {
        return Err(s.invalid(
            field,
            format!(
                "{} pixels is below {MIN_IMAGE_PX}, ResNet's total stride: the last stage would have no pixels",
                size.height
            ),
        ));
    }
    Ok(())
}

fn non_empty(s: &Schedule, field: &str, v: &str) -> Check {
    if v.is_empty() {
        Err(s.invalid(field, "must not be empty".into()))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::{Schedule, ScheduleError};

    const PHASES: &str = "phases:
  - epoch: [0, 6]
    lr: [1.0, 2.0]
    lr_method: linear
    batch_size: 740
    image_size: [128, 128]
    data_dir: \"160\"
  - {epoch: [6, 21], lr: [2.0, 0.45], lr_method: exp, batch_size: 740, image_size: 128, data_dir: \"160\"}
";

    /// Apply `edit` to the valid text, load it, return the error message.
    fn refuse(edit: impl Fn(&str) -> String) -> String {
        let text = edit(PHASES);
        match Schedule::from_str(&text, "s.yaml") {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(e) => e.to_string(),
        }
    }

    fn starts(message: &str, prefix: &str) {
        assert!(
            message.starts_with(prefix),
            "{message:?} does not start with {prefix:?}"
        );
    }

    #[test]
    fn the_unedited_text_loads() {
        let s = Schedule::from_str(PHASES, "dir/s.yaml").unwrap();
        assert_eq!(s.name(), "s");
        assert_eq!(s.phases[1].min_scale, 0.08);
        assert_eq!(s.phases[1].prefix, "train");
        assert!(s.warnings().is_empty());
    }

    #[test]
    fn unknown_keys_are_refused_with_their_line() {
        starts(
            &refuse(|t| t.replace("    lr_method: linear", "    lr_methd: linear")),
            "s.yaml:4:5: phases[0]: unknown field `lr_methd`",
        );
        starts(
            &refuse(|t| format!("run:\n  depht: 18\n{t}")),
            "s.yaml:2:3: run: unknown field `depht`",
        );
        starts(
            &refuse(|t| format!("{t}extra: 1\n")),
            "s.yaml:9:1: unknown field `extra`",
        );
        let e = refuse(|t| t.replace("data_dir: \"160\"}", "data_dir: \"160\", min_scal: 0.5}"));
        starts(&e, "s.yaml:8:106: phases[1]: unknown field `min_scal`");
    }

    #[test]
    fn a_key_given_twice_is_refused_at_its_second_line() {
        let e = refuse(|t| {
            t.replace(
                "    batch_size: 740\n",
                "    batch_size: 740\n    lr: [0.1, 0.2]\n",
            )
        });
        assert_eq!(e, "s.yaml:6:5: phases[0].lr: given twice (first at line 3)");
        let e = refuse(|t| t.replace("data_dir: \"160\"}", "data_dir: \"160\", epoch: [6, 7]}"));
        starts(
            &e,
            "s.yaml:8:106: phases[1].epoch: given twice (first at line 8)",
        );
    }

    #[test]
    fn an_lr_method_typo_names_the_field_and_choices() {
        let e = refuse(|t| t.replace("lr_method: exp", "lr_method: expo"));
        starts(&e, "s.yaml:8:");
        assert!(
            e.contains("phases[1].lr_method: unknown variant `expo`, expected `linear` or `exp`"),
            "{e}"
        );
    }

    #[test]
    fn gaps_and_overlaps_name_both_phases() {
        let e = refuse(|t| t.replace("epoch: [6, 21]", "epoch: [7, 21]"));
        assert_eq!(e, "s.yaml:8:14: phases[1].epoch[0]: phase 1 starts at epoch 7 but phase 0 ends at 6: a gap between phases");
        let e = refuse(|t| t.replace("epoch: [6, 21]", "epoch: [5, 21]"));
        assert!(
            e.ends_with(
                "phase 1 starts at epoch 5 but phase 0 ends at 6: an overlap between phases"
            ),
            "{e}"
        );
    }

    #[test]
    fn first_phase_must_start_at_zero() {
        let e = refuse(|t| t.replace("epoch: [0, 6]", "epoch: [1, 6]"));
        assert_eq!(e, "s.yaml:2:13: phases[0].epoch[0]: the first phase starts at epoch 1; it must start at 0");
    }

    #[test]
    fn end_not_after_start_is_refused() {
        let e = refuse(|t| t.replace("epoch: [6, 21]", "epoch: [6, 6]"));
        assert_eq!(
            e,
            "s.yaml:8:17: phases[1].epoch[1]: the phase ends at epoch 6, not after its start 6"
        );
    }

    #[test]
    fn zero_and_negative_batches_and_sizes_are_refused() {
        for bad in ["0", "-5"] {
            let e = refuse(|t| t.replacen("batch_size: 740", &format!("batch_size: {bad}"), 1));
            assert_eq!(e, format!("s.yaml:5:5: phases[0].batch_size: must be a positive number of images per rank per step, got {bad}"));
            let e = refuse(|t| t.replace("image_size: 128,", &format!("image_size: {bad},")));
            starts(
                &e,
                "s.yaml:8:72: phases[1].image_size: must be a positive number of pixels",
            );
        }
        let e = refuse(|t| t.replace("[128, 128]", "[128, 96]"));
        assert_eq!(e, "s.yaml:6:5: phases[0].image_size: [128, 96] is not square; only square sizes are supported for now");
        let e = refuse(|t| t.replace("[128, 128]", "[128, 128, 3]"));
        starts(&e, "s.yaml:6:17: phases[0].image_size: invalid length 3");
    }

    #[test]
    fn a_reversed_epoch_range_is_called_reversed_not_a_gap() {
        let e = refuse(|t| t.replace("epoch: [6, 21]", "epoch: [5, 3]"));
        assert_eq!(e, "s.yaml:8:6: phases[1].epoch: reversed range [5, 3]: the phase ends before it starts; write [3, 5]?");
        let e = refuse(|t| t.replace("epoch: [6, 21]", "epoch: [21, 6]"));
        assert!(e.contains("phases[1].epoch: reversed range [21, 6]"), "{e}");
        let e = refuse(|t| t.replace("epoch: [0, 6]", "epoch: [6, 0]"));
        assert_eq!(e, "s.yaml:2:5: phases[0].epoch: reversed range [6, 0]: the phase ends before it starts; write [0, 6]?");
    }

    #[test]
    fn image_sizes_below_resnets_stride_are_refused_at_their_line() {
        let e = refuse(|t| t.replace("image_size: 128,", "image_size: 7,"));
        assert_eq!(e, "s.yaml:8:72: phases[1].image_size: 7 pixels is below 32, ResNet's total stride: the last stage would have no pixels");
        let e = refuse(|t| t.replace("[128, 128]", "[31, 31]"));
        starts(
            &e,
            "s.yaml:6:5: phases[0].image_size: 31 pixels is below 32",
        );
        let e = refuse(|t| format!("eval:\n  batch_size: 10\n  image_size: 7\n{t}"));
        starts(&e, "s.yaml:3:3: eval.image_size: 7 pixels is below 32");
        Schedule::from_str(
            &format!(
                "eval: {{image_size: 32}}\n{}",
                PHASES.replace("image_size: 128,", "image_size: 32,")
            ),
            "s.yaml",
        )
        .unwrap();
    }

    #[test]
    fn max_image_pixels_and_stall_shutdown_are_read_and_checked() {
        let s = Schedule::from_str(PHASES, "s.yaml").unwrap();
        assert_eq!(s.run.max_image_pixels, 100_000_000);
        assert_eq!(s.distributed.stall_shutdown_s, 600.0);
        let s = Schedule::from_str(
            &format!("run: {{max_image_pixels: 5000}}\ndistributed:\n  stall_warning_s: 30\n  stall_shutdown_s: 0\n{PHASES}"),
            "s.yaml",
        )
        .unwrap();
        assert_eq!(s.run.max_image_pixels, 5000);
        assert_eq!(s.distributed.stall_shutdown_s, 0.0);
        starts(
            &refuse(|t| format!("run:\n  seed: 1\n  max_image_pixels: 0\n{t}")),
            "s.yaml:3:3: run.max_image_pixels: must be at least 1 pixel",
        );
        starts(
            &refuse(|t| format!("run:\n  max_image_pixels: -4\n{t}")),
            "s.yaml:2:21: run.max_image_pixels: invalid type: integer `-4`",
        );
        starts(
            &refuse(|t| format!("distributed:\n  stall_shutdown_s: -1\n{t}")),
            "s.yaml:2:3: distributed.stall_shutdown_s: must be in [0, 31536000] seconds, got -1",
        );
        // Past a year the trainer's Duration arithmetic would overflow: refused here instead.
        starts(
            &refuse(|t| format!("distributed:\n  stall_shutdown_s: 1e20\n{t}")),
            "s.yaml:2:3: distributed.stall_shutdown_s: must be in [0, 31536000] seconds, got 100000000000000000000",
        );
        starts(
            &refuse(|t| format!("distributed:\n  stall_warning_s: 4e7\n{t}")),
            "s.yaml:2:3: distributed.stall_warning_s: must be in (0, 31536000] seconds, got 40000000",
        );
        for name in [".", ".."] {
            starts(
                &refuse(|t| format!("run:\n  name: \"{name}\"\n{t}")),
                "s.yaml:2:3: run.name:",
            );
        }
    }

    #[test]
    fn a_non_utf8_file_names_the_line_and_column_of_the_bad_byte() {
        let dir =
            std::env::temp_dir().join(format!("dawnrun-schedule-utf8-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad.yaml");
        let mut bytes = b"run:\n  name: caf\xc3\xa9\n  seed: \xff1\n".to_vec();
        bytes.extend_from_slice(PHASES.as_bytes());
        std::fs::write(&path, &bytes).unwrap();
        let e = Schedule::load(&path).unwrap_err();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(matches!(e, ScheduleError::NotUtf8 { .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            format!(
                "{}:3:9: not UTF-8 text: invalid byte 0xff at byte offset 27",
                path.display()
            )
        );
    }

    #[test]
    fn exp_needs_positive_lr_and_lr_cannot_be_negative() {
        let e = refuse(|t| t.replace("lr: [2.0, 0.45]", "lr: [2.0, 0.0]"));
        assert_eq!(e, "s.yaml:8:22: phases[1].lr: lr_method exp needs both ends > 0 (lr = lr0 * (lr1/lr0)^t), got [2, 0]");
        let e = refuse(|t| t.replace("lr: [1.0, 2.0]", "lr: [-1.0, 2.0]"));
        assert_eq!(
            e,
            "s.yaml:3:5: phases[0].lr: learning rates must be finite and >= 0, got [-1, 2]"
        );
        // A linear ramp down to zero is fine.
        Schedule::from_str(
            &PHASES.replace("lr: [1.0, 2.0]", "lr: [1.0, 0.0]"),
            "s.yaml",
        )
        .unwrap();
    }

    #[test]
    fn min_scale_outside_0_1_is_refused() {
        for bad in ["0", "-0.1", "1.5"] {
            let e = refuse(|t| {
                t.replace(
                    "data_dir: \"160\"}",
                    &format!("data_dir: \"160\", min_scale: {bad}}}"),
                )
            });
            starts(
                &e,
                &format!(
                    "s.yaml:8:106: phases[1].min_scale: must be in (0, 1], got {}",
                    bad.parse::<f64>().unwrap()
                ),
            );
        }
        Schedule::from_str(
            &PHASES.replace("data_dir: \"160\"}", "data_dir: \"160\", min_scale: 1}"),
            "s.yaml",
        )
        .unwrap();
    }

    #[test]
    fn run_settings_are_range_checked_at_their_line() {
        let cases = [
            ("run:\n  seed: 3\n  depth: 19\n", "s.yaml:3:3: run.depth: ResNet depth must be one of [18, 34, 50, 101, 152], got 19"),
            ("run:\n  momentum: 1.0\n", "s.yaml:2:3: run.momentum: must be in [0, 1), got 1"),
            ("run:\n  loss_scale: 0\n", "s.yaml:2:3: run.loss_scale: must be a positive number or `dynamic`, got 0"),
            ("run:\n  initial_loss_scale: -2\n", "s.yaml:2:3: run.initial_loss_scale: must be a positive number, got -2"),
            ("run:\n  loss_scale: dynamc\n", "s.yaml:2:15: run.loss_scale: invalid value: string \"dynamc\", expected a positive number or `dynamic`"),
            ("run:\n  precision: fp8\n", "s.yaml:2:14: run.precision: unknown variant `fp8`"),
            ("run:\n  checkpoint_every_steps: 0\n", "s.yaml:2:3: run.checkpoint_every_steps: must be at least 1 step"),
            ("eval: {crop_fraction: 1.2}\n", "s.yaml:1:8: eval.crop_fraction: must be in (0, 1], got 1.2"),
            ("eval: {resize_ratio: 0.9}\n", "s.yaml:1:8: eval.resize_ratio: must be >= 1"),
            ("distributed: {allreduce: nccl}\n", "s.yaml:1:26: distributed.allreduce: unknown variant `nccl`"),
        ];
        for (head, expected) in cases {
            starts(&refuse(|t| format!("{head}{t}")), expected);
        }
        starts(
            &refuse(|_| "run: {}\n".to_string()),
            "s.yaml:1:1: missing field `phases`",
        );
        starts(
            &refuse(|_| "phases: []\n".to_string()),
            "s.yaml:1:1: phases: the schedule has no phases",
        );
    }

    #[test]
    fn loss_scale_takes_numbers_and_dynamic() {
        for (text, expected) in [
            ("256", crate::LossScale::Static(256.0)),
            ("0.5", crate::LossScale::Static(0.5)),
            ("dynamic", crate::LossScale::Dynamic),
        ] {
            let s = Schedule::from_str(&format!("run: {{loss_scale: {text}}}\n{PHASES}"), "s.yaml")
                .unwrap();
            assert_eq!(s.run.loss_scale, expected);
        }
    }

    #[test]
    fn fp16_without_loss_scaling_warns_but_loads() {
        let s =
            Schedule::from_str(&format!("run:\n  precision: fp16\n{PHASES}"), "s.yaml").unwrap();
        assert_eq!(s.warnings().len(), 1);
        let w = s.warnings()[0].to_string();
        assert!(
            w.starts_with("s.yaml:1:1: run.loss_scale: fp16 without loss scaling"),
            "{w}"
        );
        for scale in ["256", "dynamic"] {
            let s = Schedule::from_str(
                &format!("run:\n  precision: fp16\n  loss_scale: {scale}\n{PHASES}"),
                "s.yaml",
            )
            .unwrap();
            assert!(s.warnings().is_empty());
        }
    }

    #[test]
    fn a_missing_file_names_the_path() {
        let e = Schedule::load("/nonexistent/dir/x.yaml").unwrap_err();
        assert!(matches!(e, ScheduleError::Read { .. }));
        assert_eq!(
            e.to_string(),
            "/nonexistent/dir/x.yaml: cannot read schedule"
        );
        // The cause is the error's source, not repeated in its message.
        let source = std::error::Error::source(&e).unwrap().to_string();
        assert!(source.contains("No such file"), "{source}");
    }

    #[test]
    fn syntax_errors_carry_a_position() {
        let e = refuse(|t| t.replace("lr: [1.0, 2.0]", "lr: [1.0, 2.0"));
        assert!(e.starts_with("s.yaml:"), "{e}");
        assert!(!e.starts_with("s.yaml:1:1:"), "{e}");
    }
}
