//! Loading a schedule: YAML text -> [`Schedule`], with the source positions of every node and
//! every check run before it is returned.
//!
//! First stage of the flow (YAML -> [`Schedule`] -> [`crate::Plan`]). The only serde_yaml user
//! in the project. Loading validates everything ([`crate::check`]) before returning, so a bad
//! file is refused before any work starts, with `file:line:column: field: sentence`.

use std::path::Path;

use crate::check;
use crate::file::{Origin, Schedule, ScheduleError};
use crate::spans::{Location, SourceMap};

impl Schedule {
    /// Read, parse and check the schedule at `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<Schedule, ScheduleError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| ScheduleError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let text = utf8(&bytes, path)?;
        Schedule::from_str(text, path)
    }

    /// Parse and check `text`; `path` is only used in messages and for the default name.
    #[allow(clippy::should_implement_trait)] // FromStr has no room for the path
    pub fn from_str(text: &str, path: impl AsRef<Path>) -> Result<Schedule, ScheduleError> {
        let path = path.as_ref();
        let mut schedule: Schedule =
            serde_yaml::from_str(text).map_err(|e| syntax_error(path, text, &e))?;
        let name = match &schedule.run.name {
            Some(name) => name.clone(),
            None => path.file_stem().map_or_else(
                || "schedule".to_string(),
                |s| s.to_string_lossy().into_owned(),
            ),
        };
        schedule.origin = Origin {
            path: path.to_path_buf(),
            source_map: SourceMap::build(text),
            warnings: Vec::new(),
            name,
        };
        schedule.origin.warnings = check::check(&schedule)?;
        Ok(schedule)
    }
}

/// `bytes` as text, or [`ScheduleError::NotUtf8`] at the line and column of the first byte
/// that is not UTF-8.
fn utf8<'a>(bytes: &'a [u8], path: &Path) -> Result<&'a str, ScheduleError> {
    std::str::from_utf8(bytes).map_err(|e| {
        let offset = e.valid_up_to();
        // Everything before `offset` is valid UTF-8.
        let before = std::str::from_utf8(&bytes[..offset]).unwrap_or_default();
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        ScheduleError::NotUtf8 {
            path: path.to_path_buf(),
            location: Location {
                line: before.matches('\n').count() + 1,
                column: before[line_start..].chars().count() + 1,
            },
            offset,
            byte: bytes[offset],
        }
    })
}

/// serde_yaml's message ends in " at line L column C"; the location moves to the front. A key
/// given twice is reported at its second place, which serde_yaml does not know.
fn syntax_error(path: &Path, text: &str, error: &serde_yaml::Error) -> ScheduleError {
    let full = error.to_string();
    let (location, message) = match error.location() {
        Some(l) => {
            let location = Location {
                line: l.line(),
                column: l.column(),
            };
            let suffix = format!(" at line {} column {}", l.line(), l.column());
            let message = full.strip_suffix(&suffix).unwrap_or(&full).to_string();
            (location, message)
        }
        None => (Location::START, full),
    };
    if let Some(key) = repeated_key_in(&message) {
        if let Some((path_of_key, first, again)) = SourceMap::build(text).repeated_key() {
            if path_of_key.rsplit(['.', '[']).next() == Some(key) {
                return ScheduleError::Syntax {
                    path: path.to_path_buf(),
                    location: again,
                    message: format!("{path_of_key}: given twice (first at line {})", first.line),
                };
            }
        }
    }
    ScheduleError::Syntax {
        path: path.to_path_buf(),
        location,
        message,
    }
}

/// The key of serde_yaml's "duplicate field `K`" (a struct) or "duplicate entry with key
/// "K"" (a map) message; None for every other message, even one quoting the word.
fn repeated_key_in(message: &str) -> Option<&str> {
    fn quoted(rest: &str, close: char) -> Option<&str> {
        rest.split_once(close).map(|(key, _)| key)
    }
    if let Some((_, rest)) = message.split_once("duplicate field `") {
        return quoted(rest, '`');
    }
    let (_, rest) = message.split_once("duplicate entry with key \"")?;
    quoted(rest, '"')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::file::*;
    use std::path::PathBuf;

    fn shipped(name: &str) -> Schedule {
        Schedule::load(format!(
            "{}/../../schedules/{name}.yaml",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    #[test]
    fn only_serde_yamls_duplicate_messages_name_a_repeated_key() {
        assert_eq!(
            repeated_key_in("run: duplicate field `depth`"),
            Some("depth")
        );
        assert_eq!(repeated_key_in("duplicate entry with key \"a\""), Some("a"));
        assert_eq!(
            repeated_key_in("run: unknown field `duplicate_lr`, expected"),
            None
        );
        assert_eq!(repeated_key_in("unknown variant `duplicate`"), None);
    }

    #[test]
    fn shipped_schedules_round_trip_through_yaml() {
        for name in ["106min", "imagenet18", "demo"] {
            let s = shipped(name);
            let text = serde_yaml::to_string(&s).unwrap();
            let again = Schedule::from_str(&text, format!("{name}.yaml")).unwrap();
            assert_eq!(serde_yaml::to_string(&again).unwrap(), text, "{name}");
            assert_eq!(again.name(), name);
        }
    }

    #[test]
    fn the_106min_file_has_the_106_minute_runs_phases() {
        let s = shipped("106min");
        type Row<'a> = ([f64; 2], [f64; 2], LrMethod, i64, i64, &'a str);
        let phases: Vec<Row> = s
            .phases
            .iter()
            .map(|p| {
                (
                    p.epoch,
                    p.lr,
                    p.lr_method,
                    p.batch_size,
                    p.image_size.height,
                    p.data_dir.as_str(),
                )
            })
            .collect();
        use LrMethod::{Exp, Linear};
        assert_eq!(
            phases,
            [
                ([0.0, 6.0], [1.0, 2.0], Linear, 740, 128, "160"),
                ([6.0, 21.0], [2.0, 0.45], Linear, 740, 128, "160"),
                ([21.0, 32.0], [0.45, 0.02], Exp, 256, 224, "320"),
                ([32.0, 36.0], [0.02, 0.004], Exp, 196, 224, "320"),
                ([36.0, 40.0], [0.004, 0.002], Exp, 128, 288, "320"),
            ]
        );
        assert!(s
            .phases
            .iter()
            .all(|p| p.prefix == "train" && p.min_scale == 0.08));
        let r = &s.run;
        assert_eq!(
            (r.depth, r.momentum, r.weight_decay, r.decay_bn),
            (50, 0.9, 2e-4, false)
        );
        assert_eq!(
            (r.precision, r.loss_scale),
            (Precision::Fp16, LossScale::Static(256.0))
        );
        assert_eq!(
            (
                r.checkpoint_every_steps,
                r.zero_init_last_bn_gamma,
                r.label_smoothing
            ),
            (625, true, 0.0)
        );
        assert_eq!(
            (
                s.eval.image_size.height,
                s.eval.crop_mode,
                s.eval.crop_fraction
            ),
            (288, CropMode::Central, 0.8)
        );
    }

    #[test]
    fn omitted_blocks_take_the_documented_defaults() {
        let s = Schedule::from_str(
            "phases:\n  - {epoch: [0, 1], lr: [0.1, 0.1], lr_method: linear, batch_size: 8, image_size: 32, data_dir: d}\n",
            "x/my-run.yaml",
        )
        .unwrap();
        assert_eq!(s.name(), "my-run");
        assert_eq!(s.path(), Path::new("x/my-run.yaml"));
        let r = &s.run;
        assert_eq!(r.data_root, PathBuf::from("data/records"));
        assert_eq!(
            (r.depth, r.data_format, r.precision, r.loss_scale),
            (
                50,
                DataFormat::Nhwc,
                Precision::Fp32,
                LossScale::Static(1.0)
            )
        );
        assert_eq!(
            (
                r.nesterov,
                r.decay_bn,
                r.decay_bias,
                r.checkpoint_every_steps,
                r.seed,
                r.max_image_pixels
            ),
            (true, false, true, 625, 0, 100_000_000)
        );
        let e = &s.eval;
        assert_eq!(
            (
                e.data_dir.as_str(),
                e.prefix.as_str(),
                e.image_size,
                e.crop_fraction
            ),
            ("320", "validation", ImageSize::square(224), 0.8)
        );
        assert_eq!(
            (e.rect_val, e.batch_size, e.target_top5),
            (false, 250, 93.0)
        );
        let d = &s.distributed;
        assert_eq!(
            (
                d.allreduce,
                d.fusion_threshold_mb,
                d.compression,
                d.stall_warning_s,
                d.stall_shutdown_s
            ),
            (
                Allreduce::Hierarchical,
                64.0,
                Compression::None,
                60.0,
                600.0
            )
        );
    }
}
