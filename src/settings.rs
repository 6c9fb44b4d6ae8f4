//! Schedule settings -> the typed configs of the model, the loss scaler and the all-reduce. Kept
//! in one place so the trainer and eval-sweep build the very same network from a schedule.

use dawnrun_dist::{allreduce::Method, Compression};
use dawnrun_schedule::{DistributedSettings, RunSettings};

use crate::model::{self, ModelConfig};
use crate::train::loss_scale::LossScale;

/// The network and optimiser a schedule's `run:` block asks for.
pub fn model_config(r: &RunSettings, num_classes: u32) -> ModelConfig {
    let mut m = ModelConfig::new(r.depth, num_classes);
    m.data_format = match r.data_format {
        dawnrun_schedule::DataFormat::Nhwc => model::DataFormat::Nhwc,
        dawnrun_schedule::DataFormat::Nchw => model::DataFormat::Nchw,
    };
    m.precision = match r.precision {
        dawnrun_schedule::Precision::Fp32 => model::Precision::Fp32,
        dawnrun_schedule::Precision::Bf16 => model::Precision::Bf16,
        dawnrun_schedule::Precision::Fp16 => model::Precision::Fp16,
    };
    m.weight_decay = r.weight_decay as f32;
    m.decay_bn = r.decay_bn;
    m.decay_bias = r.decay_bias;
    m.label_smoothing = r.label_smoothing as f32;
    m.momentum = r.momentum as f32;
    m.nesterov = r.nesterov;
    m.zero_init_last_bn_gamma = r.zero_init_last_bn_gamma;
    m.seed = r.seed;
    m
}

pub fn loss_scale(r: &RunSettings) -> LossScale {
    match r.loss_scale {
        dawnrun_schedule::LossScale::Static(s) => LossScale::Static(s as f32),
        dawnrun_schedule::LossScale::Dynamic => LossScale::dynamic(),
    }
}

pub fn allreduce(d: &DistributedSettings) -> Method {
    match d.allreduce {
        dawnrun_schedule::Allreduce::Ring => Method::Ring,
        dawnrun_schedule::Allreduce::Mpi => Method::Mpi,
    }
}

pub fn compression(d: &DistributedSettings) -> Compression {
    match d.compression {
        dawnrun_schedule::Compression::None => Compression::None,
        dawnrun_schedule::Compression::Fp16 => Compression::Fp16,
    }
}
