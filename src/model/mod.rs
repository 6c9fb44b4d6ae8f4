//! batch -> graph -> gradients: the ResNet v1.5 TensorFlow graph, built from Rust.
//!
//! Place in the flow: `train/` hands a batch (uint8 images, 0-based labels) to a [`TrainGraph`],
//! gets the *unscaled* gradients back as one flat `Vec<f32>` in [`TrainGraph::trainable`] order,
//! all-reduces them elsewhere (`dist`), and feeds them to [`TrainGraph::apply`]. `eval/` uses an
//! [`EvalGraph`] (same node names, inference-mode batch norm) restored from a checkpoint.
//! This module knows shapes only: no files (it writes a checkpoint bundle where `checkpoint` tells
//! it to), no shards, no ranks. TensorFlow types never leave it.
//!
//! Shape legend used in comments throughout `model/`:
//! N batch, H/W image or feature height/width, C channels, K classes, P trainable floats,
//! S state floats (trainables + batch-norm moving statistics + momentum slots).
//! `[N, H, W, 3] u8` is a tensor shape and dtype; `cdt` is the compute dtype (f32, bf16 or f16).
//!
//! Files: `tf.rs` crate workarounds, `layers.rs` conv / batch norm / dense, `resnet.rs` the
//! network, `loss.rs` cross-entropy, L2 and top-k, `optim.rs` flat gradients and momentum, `rewrite.rs` the ReLU-gradient GraphDef rewrite,
//! `saver.rs` the SaveV2/RestoreV2 ops, `train_graph.rs` and `eval_graph.rs` the two graphs with
//! their sessions, `graph.rs` what both build the same way (batch placeholders, device, session),
//! `feed.rs` the batch as reusable input tensors, `outputs.rs` what a step returns, `overlap.rs` the gradient queues that let the all-reduce
//! overlap backward,
//! `export.rs` the inference graph as a SavedModel, `device.rs` the `--gpu` device check.
mod device;
mod eval_graph;
mod export;
mod feed;
mod graph;
mod layers;
mod loss;
mod optim;
mod outputs;
mod overlap;
mod resnet;
mod rewrite;
mod saver;
pub(crate) mod tf;
mod train_graph;

pub use device::{check_device, cpu_runs_bf16, device_list};
pub use eval_graph::{EvalGraph, EvalOutput};
pub use export::{ExportGraph, ExportSpec, SYNSETS_FILE};
pub use feed::{AsFeed, BatchRef, Feed, FeedPool};
pub use outputs::{FusedOutput, Gradients, StepMetrics, StepOutput};
pub use overlap::{Backward, GroupReader};
pub use train_graph::{StepNodes, TrainGraph, VarInfo};

use std::path::{Path, PathBuf};

use dawnrun_schedule::{LossScale, RunSettings};

/// Per-channel RGB mean on the 0-255 scale, subtracted in the graph: the ImageNet means used by the 106-minute run.
pub const RGB_MEAN: [f32; 3] = [121.0, 115.0, 100.0];
/// Per-channel RGB standard deviation on the 0-255 scale, as the 106-minute run divided by.
pub const RGB_STD: [f32; 3] = [70.0, 68.0, 71.0];

/// Memory layout of activations inside the graph (input is always NHWC uint8): NHWC is the
/// CPU layout, NCHW the cuDNN-preferred one (it only builds on a CPU: TensorFlow lacks some NCHW
/// CPU kernels).
pub use dawnrun_schedule::DataFormat;
/// Compute dtype of convolutions and activations; variables stay fp32 ("master weights").
pub use dawnrun_schedule::Precision;

/// Training progress stored in a checkpoint beside the variables.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CheckpointMeta {
    /// Global 0-based optimizer step count at save time (the number of applied steps).
    pub step: u64,
    /// Fractional epoch at save time.
    pub epoch: f64,
    /// Training wall-clock seconds so far (excluding evaluation and start-up).
    pub train_seconds: f64,
    /// The loss scale at save time, and the run of finite steps dynamic scaling has counted
    /// towards its next growth: a resumed run continues with them.
    pub loss_scale: f64,
    pub loss_scale_good_steps: u64,
}

/// A graph whose state can be written to and read from a TensorFlow tensor bundle. `checkpoint`
/// drives it: it picks the prefix, and makes the write atomic.
pub trait Checkpointable {
    /// Writes all state and `meta` at `prefix` (`<prefix>.index`, `<prefix>.data-00000-of-00001`).
    fn write_bundle(&self, prefix: &Path, meta: &CheckpointMeta) -> Result<(), ModelError>;
    /// Restores this graph's variables from the bundle at `prefix`; returns its progress.
    fn read_bundle(&mut self, prefix: &Path) -> Result<CheckpointMeta, ModelError>;
}

/// Everything that shapes the graph. The learning rate and the loss scale's value are not here:
/// they are fed each step (only whether the loss is scaled at all shapes the graph).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// 18 | 34 (basic blocks) or 50 | 101 | 152 (bottlenecks).
    pub depth: u32,
    pub num_classes: u32,
    pub data_format: DataFormat,
    pub precision: Precision,
    /// L2 coefficient on `0.5 * sum(w^2)` (as `tf.nn.l2_loss`) of every conv/dense kernel.
    pub weight_decay: f32,
    /// Also decay batch-norm gamma and beta.
    pub decay_bn: bool,
    /// Also decay the final dense layer's bias.
    pub decay_bias: bool,
    /// Targets become `(1 - s) * one_hot + s / K`.
    pub label_smoothing: f32,
    pub momentum: f32,
    pub nesterov: bool,
    /// Start the last batch-norm gamma of each residual block at 0 (the block starts as identity).
    pub zero_init_last_bn_gamma: bool,
    /// moving = decay * moving + (1 - decay) * batch statistic.
    pub bn_decay: f32,
    pub bn_epsilon: f32,
    /// e.g. `/device:GPU:0`; `None` leaves placement to TensorFlow.
    pub device: Option<String>,
    /// Seeds every initialiser, so all ranks start from the same weights even before broadcast.
    pub seed: u64,
    /// The session's inter-op thread pool size; 0 is TensorFlow's default (one per core).
    pub inter_op_threads: u32,
    /// Differentiate `total_loss * loss_scale` and divide the gradients by the scale again.
    /// Off, the graph does neither and accepts only a scale of 1: a run at a static scale of 1
    /// (fp32, bf16) saves a pass over every gradient, and the gradients are the same bits.
    pub loss_scaling: bool,
}

impl ModelConfig {
    /// The 106-minute run's settings (momentum 0.9, L2 2e-4, BN decay 0.9, epsilon 1e-4) for `depth` and `num_classes`.
    pub fn new(depth: u32, num_classes: u32) -> Self {
        ModelConfig {
            depth,
            num_classes,
            data_format: DataFormat::Nhwc,
            precision: Precision::Fp32,
            weight_decay: 2e-4,
            decay_bn: false,
            decay_bias: false,
            label_smoothing: 0.0,
            momentum: 0.9,
            nesterov: false,
            zero_init_last_bn_gamma: true,
            bn_decay: 0.9,
            bn_epsilon: 1e-4,
            device: None,
            seed: 0,
            inter_op_threads: 0,
            loss_scaling: false,
        }
    }

    /// The network and optimiser a schedule's `run:` block asks for, so the trainer and
    /// eval-sweep build the very same network from one schedule.
    pub fn from_run(r: &RunSettings, num_classes: u32) -> Self {
        ModelConfig {
            data_format: r.data_format,
            precision: r.precision,
            weight_decay: r.weight_decay as f32,
            decay_bn: r.decay_bn,
            decay_bias: r.decay_bias,
            label_smoothing: r.label_smoothing as f32,
            momentum: r.momentum as f32,
            nesterov: r.nesterov,
            zero_init_last_bn_gamma: r.zero_init_last_bn_gamma,
            seed: r.seed,
            inter_op_threads: r.inter_op_threads,
            loss_scaling: r.loss_scale != LossScale::Static(1.0),
            ..ModelConfig::new(r.depth, num_classes)
        }
    }

    /// Checks ranges before any graph is built (the graph builders call it too).
    pub fn validate(&self) -> Result<(), ModelError> {
        let bad = |why: String| Err(ModelError::Config(why));
        if !matches!(self.depth, 18 | 34 | 50 | 101 | 152) {
            return bad(format!(
                "depth {} (expected 18, 34, 50, 101 or 152)",
                self.depth
            ));
        }
        if self.num_classes < 2 {
            return bad(format!(
                "num_classes {} (need at least 2)",
                self.num_classes
            ));
        }
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return bad(format!(
                "label_smoothing {} (need 0 <= s < 1)",
                self.label_smoothing
            ));
        }
        if !(0.0..1.0).contains(&self.bn_decay) || self.bn_epsilon <= 0.0 {
            return bad(format!(
                "bn_decay {} / bn_epsilon {} (need 0 <= decay < 1, epsilon > 0)",
                self.bn_decay, self.bn_epsilon
            ));
        }
        if !(self.weight_decay >= 0.0 && self.momentum >= 0.0) {
            return bad(format!(
                "weight_decay {} / momentum {} (need >= 0)",
                self.weight_decay, self.momentum
            ));
        }
        Ok(())
    }
}

/// Errors of graph building and running. Each names the stage (and, where known, the node).
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("invalid model config: {0}")]
    Config(String),
    #[error("building the graph ({what})")]
    Build {
        what: String,
        #[source]
        source: TfStatus,
    },
    #[error("running {what}")]
    Run {
        what: &'static str,
        #[source]
        source: TfStatus,
    },
    #[error("{what}: {detail}")]
    Input { what: &'static str, detail: String },
    #[error("the checkpoint data file ends early (shorter than its index says)")]
    BundleTruncated {
        #[source]
        source: TfStatus,
    },
    #[error("{0}")]
    Device(String),
    #[error("{}: checkpoint path is not valid UTF-8", .0.display())]
    NotUtf8(PathBuf),
}

/// A TensorFlow status as a cause: its code and message, without the hint TensorFlow appends
/// to every resource-exhausted error (about listing tensor allocations on out-of-memory), which
/// is misleading when the resource is the disk.
#[derive(Debug)]
pub struct TfStatus(pub tensorflow::Status);

impl From<tensorflow::Status> for TfStatus {
    fn from(s: tensorflow::Status) -> Self {
        TfStatus(s)
    }
}

impl std::fmt::Display for TfStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&without_oom_hint(&self.0.to_string()))
    }
}

impl std::error::Error for TfStatus {}

/// `message` up to TensorFlow's out-of-memory hint, trimmed.
fn without_oom_hint(message: &str) -> String {
    let cut = message
        .find("Hint: If you want to see a list of allocated tensors")
        .unwrap_or(message.len());
    message[..cut].trim_end().to_string()
}

/// Adds the stage name to a TF build error.
pub(crate) trait BuildContext<T> {
    fn building(self, what: &str) -> Result<T, ModelError>;
}

impl<T> BuildContext<T> for Result<T, tensorflow::Status> {
    fn building(self, what: &str) -> Result<T, ModelError> {
        self.map_err(|source| ModelError::Build {
            what: what.to_string(),
            source: source.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::without_oom_hint;

    #[test]
    fn the_out_of_memory_hint_is_cut_from_a_disk_error() {
        let tf = "RESOURCE_EXHAUSTED: runs/x/.ckpt-5.tmp1.data-00000-of-00001; No space left on device\n\t [[{{node checkpoint/SaveV2}}]]\nHint: If you want to see a list of allocated tensors when OOM happens, add report_tensor_allocations_upon_oom to RunOptions for current allocation info.";
        let clean = without_oom_hint(tf);
        assert!(clean.ends_with("[[{{node checkpoint/SaveV2}}]]"), "{clean}");
        assert!(clean.contains("No space left on device"));
        assert_eq!(without_oom_hint("plain"), "plain");
    }
}
