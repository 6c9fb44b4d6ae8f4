//! Layers of the ResNet graph: convolution, FusedBatchNormV3, dense, and their initialisers,
//! each in its own named sub-scope so node names follow the Rust call path
//! (`resnet/stage2/block1/conv2/kernel`). [`Net`] collects the variables as they are made: their
//! creation order is the flat gradient layout and the state order, so it must not depend on
//! anything but the config.
use super::tf::{self, Var};
use super::{DataFormat, ModelConfig, Precision};
use tensorflow::{ops, DataType, Operation, Output, Scope, Status, Tensor};

/// Keras' truncated-normal correction: the stddev of a unit normal truncated at 2 sigma is
/// 0.8796..., so the sampler's stddev is divided by it to hit the wanted variance.
const TRUNCATED_NORMAL_STD: f32 = 0.879_625_7;

/// What a trainable variable is, to choose which ones weight decay applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LayerKind {
    Kernel,
    Bias,
    BnGamma,
    BnBeta,
}

/// The network under construction: config, mode, and every variable made so far.
pub(crate) struct Net {
    pub cfg: ModelConfig,
    /// Training mode: batch statistics in batch norm (plus moving-average updates).
    pub training: bool,
    /// Compute dtype of convolutions and activations.
    pub cdt: DataType,
    pub trainable: Vec<(Var, LayerKind)>,
    /// Batch-norm moving mean and variance, in creation order (mean, variance per layer).
    pub moving: Vec<Var>,
    /// One assign per moving statistic; run with each training step.
    pub bn_updates: Vec<Operation>,
    /// Per-variable op seed (`seed2`), from 1 so (seed, seed2) is never (0, 0) = "random".
    next_seed2: i64,
}

impl Net {
    /// What inference needs: the trainables, then the batch-norm moving statistics (the
    /// variables an evaluation graph and an export restore from a training checkpoint).
    pub fn inference_vars(&self) -> Vec<&Var> {
        self.trainable
            .iter()
            .map(|(v, _)| v)
            .chain(self.moving.iter())
            .collect()
    }

    pub fn new(cfg: &ModelConfig, training: bool) -> Net {
        let cdt = match cfg.precision {
            Precision::Fp32 => DataType::Float,
            Precision::Bf16 => DataType::BFloat16,
            Precision::Fp16 => DataType::Half,
        };
        Net {
            cfg: cfg.clone(),
            training,
            cdt,
            trainable: Vec::new(),
            moving: Vec::new(),
            bn_updates: Vec::new(),
            next_seed2: 1,
        }
    }

    fn nchw(&self) -> bool {
        self.cfg.data_format == DataFormat::Nchw
    }

    /// The `data_format` attribute string.
    pub fn format(&self) -> &'static str {
        if self.nchw() {
            "NCHW"
        } else {
            "NHWC"
        }
    }

    /// Axes of H and W in an activation tensor.
    pub fn spatial_axes(&self) -> [i32; 2] {
        if self.nchw() {
            [2, 3]
        } else {
            [1, 2]
        }
    }

    fn seeds(&mut self) -> (i64, i64) {
        let s2 = self.next_seed2;
        self.next_seed2 += 1;
        ((self.cfg.seed & (i64::MAX as u64)) as i64, s2)
    }

    /// Casts an fp32 tensor to the compute dtype (identity for fp32). `Cast` has a gradient, so
    /// fp32 master weights get fp32 gradients.
    pub fn to_compute(&self, scope: &mut Scope, x: Output) -> Result<Output, Status> {
        cast(scope, x, DataType::Float, self.cdt)
    }

    /// Casts a compute-dtype tensor back to fp32 (identity for fp32).
    pub fn to_f32(&self, scope: &mut Scope, x: Output) -> Result<Output, Status> {
        cast(scope, x, self.cdt, DataType::Float)
    }

    /// Convolution `k x k`, `stride`, no bias. Stride 1 pads SAME; stride > 1 pads explicitly by
    /// (k-1)/2 before and the rest after, then VALID, so the padding does not depend on the input
    /// size (as the reference ResNet's `conv2d_fixed_padding`).
    /// Init: variance scaling, fan-in, scale 1.0, truncated normal (stddev sqrt(1/fan_in)/0.8796).
    /// `x`: [N, H, W, cin] cdt (or NCHW) -> [N, H/stride, W/stride, cout] cdt.
    #[allow(clippy::too_many_arguments)]
    pub fn conv(
        &mut self,
        scope: &mut Scope,
        name: &str,
        x: Output,
        cin: i64,
        cout: i64,
        k: i64,
        stride: i64,
    ) -> Result<Output, Status> {
        let mut s = scope.new_sub_scope(name);
        let fan_in = (k * k * cin) as f32;
        let std = (1.0 / fan_in).sqrt() / TRUNCATED_NORMAL_STD;
        let shape = [k, k, cin, cout];
        let seeds = self.seeds();
        let kernel = tf::variable(&mut s, "kernel", &shape, DataType::Float, |sc| {
            random_normal(sc, &shape, std, seeds, true)
        })?;
        let w = self.to_compute(&mut s, kernel.read.clone())?; // [k, k, cin, cout] cdt
        self.trainable.push((kernel, LayerKind::Kernel));
        let (x, padding) = if stride > 1 {
            let before = (k - 1) / 2;
            let after = k - 1 - before;
            let pads: [i32; 8] = if self.nchw() {
                [
                    0,
                    0,
                    0,
                    0,
                    before as i32,
                    after as i32,
                    before as i32,
                    after as i32,
                ]
            } else {
                [
                    0,
                    0,
                    before as i32,
                    after as i32,
                    before as i32,
                    after as i32,
                    0,
                    0,
                ]
            };
            let pads = ops::constant(Tensor::new(&[4, 2]).with_values(&pads)?, &mut s)?;
            (ops::pad(x, pads, &mut s)?.into(), "VALID")
        } else {
            (x, "SAME")
        };
        let strides = if self.nchw() {
            vec![1, 1, stride, stride]
        } else {
            vec![1, stride, stride, 1]
        };
        let y = ops::Conv2D::new()
            .strides(strides)
            .padding(padding)
            .data_format(self.format())
            .build(x, w, &mut s)?;
        Ok(y.into())
    }

    /// FusedBatchNormV3 with x and y in the compute dtype and scale/offset/statistics in fp32
    /// (its `T`/`U` attributes). Training mode normalises with the batch statistics and
    /// registers assigns `moving = decay * moving + (1 - decay) * batch`; inference mode uses the
    /// moving statistics. `zero_gamma` starts gamma at 0 (last BN of a residual block).
    pub fn batch_norm(
        &mut self,
        scope: &mut Scope,
        name: &str,
        x: Output,
        channels: i64,
        zero_gamma: bool,
    ) -> Result<Output, Status> {
        let mut s = scope.new_sub_scope(name);
        let c = [channels];
        let gamma_init = if zero_gamma { 0.0 } else { 1.0 };
        let gamma = tf::variable(&mut s, "gamma", &c, DataType::Float, |sc| {
            fill(sc, &c, gamma_init)
        })?;
        let beta = tf::variable(&mut s, "beta", &c, DataType::Float, |sc| fill(sc, &c, 0.0))?;
        let mean = tf::variable(&mut s, "moving_mean", &c, DataType::Float, |sc| {
            fill(sc, &c, 0.0)
        })?;
        let var = tf::variable(&mut s, "moving_variance", &c, DataType::Float, |sc| {
            fill(sc, &c, 1.0)
        })?;
        let bn = ops::FusedBatchNormV3::new()
            .T(self.cdt)
            .U(DataType::Float)
            .epsilon(self.cfg.bn_epsilon)
            .data_format(self.format())
            .is_training(self.training);
        let y = if self.training {
            // In training mode the mean/variance inputs are unused; TF wants them empty.
            let empty: Output = ops::constant(Tensor::<f32>::new(&[0]), &mut s)?.into();
            let op = bn.build(
                x,
                gamma.read.clone(),
                beta.read.clone(),
                empty.clone(),
                empty,
                &mut s,
            )?;
            let mut u = s.new_sub_scope("update");
            let decay = self.cfg.bn_decay;
            for (stat, batch) in [(&mean, op.output(1)), (&var, op.output(2))] {
                let keep = ops::mul(stat.read.clone(), tf::const_f32(&mut u, &[decay])?, &mut u)?;
                let take = ops::mul(batch, tf::const_f32(&mut u, &[1.0 - decay])?, &mut u)?;
                let new = ops::add_v2(keep, take, &mut u)?;
                self.bn_updates
                    .push(ops::assign(stat.output(), new, &mut u)?);
            }
            op.output(0)
        } else {
            let op = bn.build(
                x,
                gamma.read.clone(),
                beta.read.clone(),
                mean.read.clone(),
                var.read.clone(),
                &mut s,
            )?;
            op.output(0)
        };
        self.trainable.push((gamma, LayerKind::BnGamma));
        self.trainable.push((beta, LayerKind::BnBeta));
        self.moving.push(mean);
        self.moving.push(var);
        Ok(y)
    }

    /// Dense layer in fp32: kernel normal(0, 0.01), bias zeros. `x`: [N, cin] f32 -> [N, K] f32.
    pub fn dense(
        &mut self,
        scope: &mut Scope,
        name: &str,
        x: Output,
        cin: i64,
        cout: i64,
    ) -> Result<Output, Status> {
        let mut s = scope.new_sub_scope(name);
        let shape = [cin, cout];
        let seeds = self.seeds();
        let kernel = tf::variable(&mut s, "kernel", &shape, DataType::Float, |sc| {
            random_normal(sc, &shape, 0.01, seeds, false)
        })?;
        let bias = tf::variable(&mut s, "bias", &[cout], DataType::Float, |sc| {
            fill(sc, &[cout], 0.0)
        })?;
        let y = ops::mat_mul(x, kernel.read.clone(), &mut s)?;
        let y = ops::bias_add(y, bias.read.clone(), &mut s)?;
        self.trainable.push((kernel, LayerKind::Kernel));
        self.trainable.push((bias, LayerKind::Bias));
        Ok(y.into())
    }
}

pub(crate) fn relu(scope: &mut Scope, x: Output) -> Result<Output, Status> {
    Ok(ops::relu(x, scope)?.into())
}

/// `Cast` from `from` to `to`, or `x` itself when they agree (fp32 graphs carry no casts).
fn cast(scope: &mut Scope, x: Output, from: DataType, to: DataType) -> Result<Output, Status> {
    if from == to {
        return Ok(x);
    }
    Ok(ops::Cast::new().DstT(to).build(x, scope)?.into())
}

/// `TruncatedNormal(shape) * std` (`truncated`) or `RandomStandardNormal(shape) * std`, seeded.
fn random_normal(
    scope: &mut Scope,
    shape: &[i64],
    std: f32,
    (seed, seed2): (i64, i64),
    truncated: bool,
) -> Result<Output, Status> {
    let dims = tf::const_i64(scope, shape)?;
    let z = if truncated {
        ops::TruncatedNormal::new()
            .dtype(DataType::Float)
            .seed(seed)
            .seed2(seed2)
            .build(dims, scope)?
    } else {
        ops::RandomStandardNormal::new()
            .dtype(DataType::Float)
            .seed(seed)
            .seed2(seed2)
            .build(dims, scope)?
    };
    let std = tf::const_f32(scope, &[std])?;
    Ok(ops::mul(z, std, scope)?.into())
}

/// A constant-filled f32 tensor of `shape`.
fn fill(scope: &mut Scope, shape: &[i64], value: f32) -> Result<Output, Status> {
    let dims = tf::const_i64(scope, shape)?;
    let v = tf::const_f32(scope, &[value])?;
    Ok(ops::fill(dims, v, scope)?.into())
}
