//! The schedule file's types: serde structs that mirror the YAML, their serde impls, and the
//! error type. Loading (YAML text -> checked [`Schedule`]) is in [`crate::load`].
//!
//! Every field's default lives in one `impl Default` per block, and each field's `///` says it.
//!
//! Defaults follow the 106-minute run's settings, except `precision` (fp32 runs
//! anywhere) and `loss_scale` (1, i.e. none, which only fp16 needs).

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use crate::spans::{Location, SourceMap};

/// A refused schedule file. Every variant names the file; content errors also the line,
/// column and field.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error("{}: cannot read schedule", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not UTF-8 text; `location` is the first invalid byte (its column counted in
    /// characters of the valid text before it).
    #[error("{}:{location}: not UTF-8 text: invalid byte {byte:#04x} at byte offset {offset}", .path.display())]
    NotUtf8 {
        path: PathBuf,
        location: Location,
        offset: usize,
        byte: u8,
    },
    /// Raised by serde_yaml: bad syntax, unknown key, missing key, wrong type, unknown variant.
    #[error("{}:{location}: {message}", .path.display())]
    Syntax {
        path: PathBuf,
        location: Location,
        message: String,
    },
    /// Raised by [`crate::check`] on values serde accepted.
    #[error("{}:{location}: {field}: {message}", .path.display())]
    Invalid {
        path: PathBuf,
        location: Location,
        field: String,
        message: String,
    },
}

/// Something legal but probably unintended (e.g. fp16 without loss scaling). Loading still
/// succeeds; the caller decides whether to print it.
#[derive(Debug, Clone, PartialEq)]
pub struct Warning {
    pub path: PathBuf,
    pub location: Location,
    pub field: String,
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {}: {}",
            self.path.display(),
            self.location,
            self.field,
            self.message
        )
    }
}

/// A whole schedule file: run settings, evaluation, distribution, and the phases.
///
/// Field names are the YAML keys; unknown keys are refused. `run`, `eval` and `distributed`
/// may be omitted (all defaults); `phases` is required.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    #[serde(default)]
    pub run: RunSettings,
    #[serde(default)]
    pub eval: EvalSettings,
    #[serde(default)]
    pub distributed: DistributedSettings,
    /// In training order; contiguous in epochs, the first starting at 0.
    pub phases: Vec<Phase>,
    /// Where this schedule came from; filled by the loader, not part of the YAML.
    #[serde(skip)]
    pub(crate) origin: Origin,
}

/// What the loader knows besides the values: the file, positions, warnings, resolved name.
#[derive(Debug, Clone, Default)]
pub(crate) struct Origin {
    pub(crate) path: PathBuf,
    pub(crate) source_map: SourceMap,
    pub(crate) warnings: Vec<Warning>,
    pub(crate) name: String,
}

/// Run-wide training settings (YAML block `run:`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunSettings {
    /// Run name, used for `runs/<name>`. Default: the schedule file's stem (`106min`).
    pub name: Option<String>,
    /// Folder holding `<data_dir>/<prefix>-*` shards. Default `data/records`.
    pub data_root: PathBuf,
    /// ResNet depth: 18, 34, 50, 101 or 152. Default 50.
    pub depth: u32,
    /// Activation layout. Default `NHWC` (the CPU layout); `NCHW` for GPUs.
    pub data_format: DataFormat,
    /// SGD momentum. Default 0.9.
    pub momentum: f64,
    /// Nesterov momentum. Default true (as in the aws-samples trainer).
    pub nesterov: bool,
    /// L2 weight decay coefficient. Default 2e-4.
    pub weight_decay: f64,
    /// Whether batch-norm gamma/beta are decayed. Default false.
    pub decay_bn: bool,
    /// Whether biases (the final dense layer's) are decayed. Default true: the reference run
    /// decays every trainable variable except batch norm's.
    pub decay_bias: bool,
    /// Initialise the last BN gamma of every residual block to zero. Default true.
    pub zero_init_last_bn_gamma: bool,
    /// Label smoothing epsilon in [0, 1). Default 0.
    pub label_smoothing: f64,
    /// Compute precision; master weights stay fp32. Default `fp32`.
    pub precision: Precision,
    /// Loss scale: a positive number (static) or `dynamic`. Default 1 (no scaling).
    pub loss_scale: LossScale,
    /// Where `dynamic` loss scaling starts (it halves on overflow, doubles after 2000 finite
    /// steps). Default 32768 (2^15), as TensorFlow's and Apex's dynamic scalers.
    pub initial_loss_scale: f64,
    /// Save a checkpoint after every this many steps, and after the last. Default 625.
    pub checkpoint_every_steps: u64,
    /// Print a step line every this many steps. Default 625 (the reference run's log).
    pub log_every_steps: u64,
    /// Master seed for weights and data order. Default 0.
    pub seed: u64,
    /// A JPEG whose header claims more pixels than this is skipped (named in the log) before
    /// any memory is allocated for it: a guard against decompression bombs. Default 100,000,000.
    pub max_image_pixels: u64,
    /// TensorFlow's inter-op thread pool size (ops run side by side). Default 0: TensorFlow's
    /// own choice, one per core. With `distributed.overlap` on a machine with few cores, more
    /// threads let the gradient ops off the critical path run early (BENCHMARKS.md).
    pub inter_op_threads: u32,
}

impl Default for RunSettings {
    fn default() -> Self {
        RunSettings {
            name: None,
            data_root: PathBuf::from("data/records"),
            depth: 50,
            data_format: DataFormat::Nhwc,
            momentum: 0.9,
            nesterov: true,
            weight_decay: 2e-4,
            decay_bn: false,
            decay_bias: true,
            zero_init_last_bn_gamma: true,
            label_smoothing: 0.0,
            precision: Precision::Fp32,
            loss_scale: LossScale::Static(1.0),
            initial_loss_scale: 32768.0,
            checkpoint_every_steps: 625,
            log_every_steps: 625,
            seed: 0,
            max_image_pixels: 100_000_000,
            inter_op_threads: 0,
        }
    }
}

/// Offline evaluation settings (YAML block `eval:`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalSettings {
    /// Folder under `data_root` with the validation shards. Default `320`.
    pub data_dir: String,
    /// Shard name prefix. Default `validation`.
    pub prefix: String,
    /// Square side in pixels fed to the network. Default 224.
    pub image_size: ImageSize,
    /// How the eval image is cut. Default `central`.
    pub crop_mode: CropMode,
    /// `central`: fraction of height and of width kept around the centre. Default 0.8.
    pub crop_fraction: f64,
    /// `short_side`: the short side is resized to `image_size * resize_ratio`, then an
    /// `image_size` square is cut from the centre. Default 1.14 (fast.ai).
    pub resize_ratio: f64,
    /// Rectangular validation (fast.ai): batches of similar aspect, no square crop. Default false.
    pub rect_val: bool,
    /// Images per eval batch. Default 250 (divides the 50,000 ImageNet validation images).
    pub batch_size: i64,
    /// Target top-5 accuracy in percent, for time-to-target. Default 93.
    pub target_top5: f64,
}

impl Default for EvalSettings {
    fn default() -> Self {
        EvalSettings {
            data_dir: "320".to_string(),
            prefix: "validation".to_string(),
            image_size: ImageSize::square(224),
            crop_mode: CropMode::Central,
            crop_fraction: 0.8,
            resize_ratio: 1.14,
            rect_val: false,
            batch_size: 250,
            target_top5: 93.0,
        }
    }
}

/// Gradient all-reduce settings (YAML block `distributed:`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DistributedSettings {
    /// Which all-reduce moves the bytes. Default `hierarchical` (ours: shared memory within a
    /// host, the ring between hosts); `ring` is our flat ring; `mpi` is MPI_Allreduce.
    pub allreduce: Allreduce,
    /// Gradients are packed into buffers of at most this many MiB. Default 64.
    pub fusion_threshold_mb: f64,
    /// Wire format of gradients. Default `none` (fp32).
    pub compression: Compression,
    /// Warn when a rank waits this long in a collective. Default 60 s.
    pub stall_warning_s: f64,
    /// End the job when a rank has not reached a step for this long (Horovod's stall
    /// shutdown). Default 600 s; 0 turns it off.
    pub stall_shutdown_s: f64,
    /// All-reduce each fusion group as soon as backward has made it, while backward goes on
    /// (Horovod's overlap). Default false: on this 2-core machine it measured no faster
    /// (BENCHMARKS.md); on a GPU server it hides the all-reduce behind backward.
    pub overlap: bool,
}

impl Default for DistributedSettings {
    fn default() -> Self {
        DistributedSettings {
            allreduce: Allreduce::default(),
            fusion_threshold_mb: 64.0,
            compression: Compression::default(),
            stall_warning_s: 60.0,
            stall_shutdown_s: 600.0,
            overlap: false,
        }
    }
}

/// One phase: a range of epochs with one batch size, image size, data folder and lr ramp.
/// Mirrors one dict of the 106-minute run's `training_strategy`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Phase {
    /// `[start, end)` in epochs; fractional epochs are allowed.
    pub epoch: [f64; 2],
    /// lr at the phase's first step and at its end.
    pub lr: [f64; 2],
    /// How lr moves from `lr[0]` to `lr[1]`.
    pub lr_method: LrMethod,
    /// Images per rank per step (global batch = this x world size).
    pub batch_size: i64,
    /// Training crop size: an int, or `[h, w]` (square only, for now).
    pub image_size: ImageSize,
    /// Folder under `data_root`, e.g. `"160"`.
    pub data_dir: String,
    /// Shard name prefix. Default `train`.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// Lower bound of the random crop's area fraction, in (0, 1]. Default 0.08.
    #[serde(default = "default_min_scale")]
    pub min_scale: f64,
}

fn default_prefix() -> String {
    "train".to_string()
}

/// The random crop keeps an area fraction in [0.08, 1] unless a phase raises the lower bound.
fn default_min_scale() -> f64 {
    0.08
}

/// lr interpolation within a phase, t in [0, 1] over the phase's steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LrMethod {
    /// lr0 + (lr1 - lr0) * t
    Linear,
    /// lr0 * (lr1 / lr0) ^ t; both ends must be > 0.
    Exp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum DataFormat {
    #[serde(rename = "NHWC")]
    #[cfg_attr(feature = "clap", value(name = "NHWC"))]
    Nhwc,
    #[serde(rename = "NCHW")]
    #[cfg_attr(feature = "clap", value(name = "NCHW"))]
    Nchw,
}

/// Compute precision (`run.precision`, the trainer's `--precision`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[cfg_attr(feature = "clap", value(name = "fp32"))]
    Fp32,
    /// bfloat16 compute with fp32 weights. On a CPU, TensorFlow 2.13 runs it only with
    /// AVX-512; with AVX512_BF16 it measured 1.6-1.7x the speed of fp32 for ResNet
    /// (BENCHMARKS.md).
    #[cfg_attr(feature = "clap", value(name = "bf16"))]
    Bf16,
    /// float16 compute; for GPUs (about 35x slower than fp32 on the AVX-512 CPU where it was
    /// measured). Wants loss scaling.
    #[cfg_attr(feature = "clap", value(name = "fp16"))]
    Fp16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CropMode {
    /// Keep `crop_fraction` of height and width around the centre, resize to `image_size`.
    Central,
    /// Resize the short side to `image_size * resize_ratio`, cut a centred square.
    ShortSide,
}

/// Which all-reduce moves the gradients (`distributed.allreduce`, the trainer's `--allreduce`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Allreduce {
    /// Ours: within a host the ranks meet in a shared-memory segment, across hosts a ring on
    /// each rank's chunk; the flat ring where a host cannot make the segment.
    #[default]
    #[cfg_attr(feature = "clap", value(name = "hierarchical"))]
    Hierarchical,
    /// Ours: a ring over MPI point-to-point messages between all ranks.
    #[cfg_attr(feature = "clap", value(name = "ring"))]
    Ring,
    /// `MPI_Allreduce`.
    #[cfg_attr(feature = "clap", value(name = "mpi"))]
    Mpi,
}

impl fmt::Display for Allreduce {
    /// The YAML spelling: `hierarchical`, `ring` or `mpi`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Allreduce::Hierarchical => "hierarchical",
            Allreduce::Ring => "ring",
            Allreduce::Mpi => "mpi",
        })
    }
}

/// Wire format of gradients in the all-reduce (`distributed.compression`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// fp32 as computed.
    #[default]
    #[cfg_attr(feature = "clap", value(name = "none"))]
    None,
    /// Halved to fp16 on the wire.
    #[cfg_attr(feature = "clap", value(name = "fp16"))]
    Fp16,
}

/// Static loss scale (gradients are computed on loss x scale, then divided back) or dynamic
/// (halve on non-finite gradients, grow after a run of good steps).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LossScale {
    Static(f64),
    Dynamic,
}

impl Serialize for LossScale {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            LossScale::Static(scale) => serializer.serialize_f64(*scale),
            LossScale::Dynamic => serializer.serialize_str("dynamic"),
        }
    }
}

impl<'de> Deserialize<'de> for LossScale {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct LossScaleVisitor;
        impl Visitor<'_> for LossScaleVisitor {
            type Value = LossScale;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a positive number or `dynamic`")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<LossScale, E> {
                Ok(LossScale::Static(v as f64))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<LossScale, E> {
                Ok(LossScale::Static(v as f64))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<LossScale, E> {
                Ok(LossScale::Static(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<LossScale, E> {
                match v {
                    "dynamic" => Ok(LossScale::Dynamic),
                    other => Err(E::invalid_value(de::Unexpected::Str(other), &self)),
                }
            }
        }
        deserializer.deserialize_any(LossScaleVisitor)
    }
}

/// An image size as written: `224` or `[224, 224]`. Kept signed so that the checker, not
/// serde, refuses zero and negative sizes with a position and a sentence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageSize {
    pub height: i64,
    pub width: i64,
}

impl ImageSize {
    pub fn square(px: i64) -> ImageSize {
        ImageSize {
            height: px,
            width: px,
        }
    }
}

impl Serialize for ImageSize {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.height == self.width {
            serializer.serialize_i64(self.height)
        } else {
            [self.height, self.width].serialize(serializer)
        }
    }
}

impl<'de> Deserialize<'de> for ImageSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SizeVisitor;
        impl<'de> Visitor<'de> for SizeVisitor {
            type Value = ImageSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an integer or [height, width]")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ImageSize, E> {
                Ok(ImageSize::square(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ImageSize, E> {
                i64::try_from(v)
                    .map(ImageSize::square)
                    .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ImageSize, A::Error> {
                let height = seq
                    .next_element::<i64>()?
                    .ok_or_else(|| de::Error::invalid_length(0, &self))?;
                let width = seq
                    .next_element::<i64>()?
                    .ok_or_else(|| de::Error::invalid_length(1, &self))?;
                if seq.next_element::<de::IgnoredAny>()?.is_some() {
                    return Err(de::Error::invalid_length(3, &self));
                }
                Ok(ImageSize { height, width })
            }
        }
        deserializer.deserialize_any(SizeVisitor)
    }
}

impl Schedule {
    /// The run name: `run.name`, else the file stem.
    pub fn name(&self) -> &str {
        &self.origin.name
    }

    /// The file this schedule was read from (or the path given to [`Schedule::from_str`]).
    pub fn path(&self) -> &Path {
        &self.origin.path
    }

    /// Legal but suspicious settings found while loading.
    pub fn warnings(&self) -> &[Warning] {
        &self.origin.warnings
    }

    /// Where the node at dotted `field` path (e.g. `phases[2].lr`) starts in the file.
    pub fn locate(&self, field: &str) -> Location {
        self.origin.source_map.locate(field)
    }

    /// An [`ScheduleError::Invalid`] about `field`, positioned in this file.
    pub(crate) fn invalid(&self, field: &str, message: String) -> ScheduleError {
        ScheduleError::Invalid {
            path: self.origin.path.clone(),
            location: self.locate(field),
            field: field.to_string(),
            message,
        }
    }

    /// A [`Warning`] about `field`, positioned in this file.
    pub(crate) fn warning(&self, field: &str, message: String) -> Warning {
        Warning {
            path: self.origin.path.clone(),
            location: self.locate(field),
            field: field.to_string(),
            message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allreduce_and_compression_default_and_print_as_in_yaml() {
        assert_eq!(Allreduce::default(), Allreduce::Hierarchical);
        assert_eq!(Compression::default(), Compression::None);
        for a in [Allreduce::Hierarchical, Allreduce::Ring, Allreduce::Mpi] {
            let yaml = serde_yaml::to_string(&a).unwrap();
            assert_eq!(yaml.trim(), a.to_string());
        }
    }

    #[cfg(feature = "clap")]
    #[test]
    fn clap_value_names_are_the_yaml_spellings() {
        use clap::ValueEnum;
        fn names<T: ValueEnum + Serialize>() {
            for v in T::value_variants() {
                let name = v.to_possible_value().unwrap().get_name().to_string();
                assert_eq!(serde_yaml::to_string(v).unwrap().trim(), name);
                assert!(T::from_str(&name, false).is_ok(), "{name}");
            }
        }
        names::<Allreduce>();
        names::<Precision>();
        assert_eq!(
            Precision::value_variants()
                .iter()
                .map(|p| p.to_possible_value().unwrap().get_name().to_string())
                .collect::<Vec<_>>(),
            ["fp32", "bf16", "fp16"]
        );
    }
}
