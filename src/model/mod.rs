//! batch -> graph -> gradients: the ResNet v1.5 TensorFlow graph, built from Rust.
//!
//! Place in the flow: `train/` hands a batch (uint8 images, 0-based labels) to a [`TrainGraph`],
//! gets the *unscaled* gradients back as one flat `Vec<f32>` in [`TrainGraph::trainable`] order,
//! all-reduces them elsewhere (`dist`), and feeds them to [`TrainGraph::apply`]. `eval/` uses an
//! [`EvalGraph`] (same node names, inference-mode batch norm) restored from a checkpoint.
//! This module knows shapes only: no files besides checkpoints (through `checkpoint`), no shards,
//! no ranks. TensorFlow types never leave it or `checkpoint`.
//!
//! Shape legend used in comments throughout `model/`:
//! N batch, H/W image or feature height/width, C channels, K classes, P trainable floats,
//! S state floats (trainables + batch-norm moving statistics + momentum slots).
//! `[N, H, W, 3] u8` is a tensor shape and dtype; `cdt` is the compute dtype (f32, bf16 or f16).
//!
//! Files: `tf.rs` crate workarounds, `layers.rs` conv / batch norm / dense, `resnet.rs` the
//! network, `loss.rs` cross-entropy, L2 and top-k, `optim.rs` flat gradients and momentum,
//! `graph.rs` the two graphs with their sessions.
mod graph;
mod layers;
mod loss;
mod optim;
mod resnet;
pub(crate) mod tf;

pub use graph::{BatchRef, EvalGraph, EvalOutput, StepOutput, TrainGraph, VarInfo};

/// Per-channel RGB mean on the 0-255 scale, subtracted in the graph (reference.md §3).
pub const RGB_MEAN: [f32; 3] = [121.0, 115.0, 100.0];
/// Per-channel RGB standard deviation on the 0-255 scale (reference.md §3).
pub const RGB_STD: [f32; 3] = [70.0, 68.0, 71.0];

/// Memory layout of activations inside the graph. Input is always NHWC uint8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataFormat {
    /// The CPU layout; the only one TF's CPU kernels fully support.
    Nhwc,
    /// The cuDNN-preferred layout; only builds on CPU (TF lacks some NCHW CPU kernels).
    Nchw,
}

/// Compute dtype of convolutions and activations. Variables are always fp32 ("master weights").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    Fp32,
    /// Runs at fp32 speed on CPUs with AVX512_BF16 (reference.md §6).
    Bf16,
    /// For GPUs; about 35x slower than fp32 on this CPU (reference.md §6).
    Fp16,
}

/// Everything that shapes the graph. Learning rate and loss scale are not here: they are fed
/// each step.
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
}

impl ModelConfig {
    /// The reference run's settings (reference.md §1, §3) for `depth` and `num_classes`.
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
        }
    }

    /// Checks ranges before any graph is built (the graph builders call it too).
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |why: String| Err(Error::Config(why));
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
pub enum Error {
    #[error("invalid model config: {0}")]
    Config(String),
    #[error("building the graph ({what}): {source}")]
    Build {
        what: String,
        #[source]
        source: tensorflow::Status,
    },
    #[error("running {what}: {source}")]
    Run {
        what: &'static str,
        #[source]
        source: tensorflow::Status,
    },
    #[error("{what}: {detail}")]
    Input { what: &'static str, detail: String },
}

/// Adds the stage name to a TF build error.
pub(crate) trait BuildContext<T> {
    fn building(self, what: &str) -> Result<T, Error>;
}

impl<T> BuildContext<T> for Result<T, tensorflow::Status> {
    fn building(self, what: &str) -> Result<T, Error> {
        self.map_err(|source| Error::Build {
            what: what.to_string(),
            source,
        })
    }
}
