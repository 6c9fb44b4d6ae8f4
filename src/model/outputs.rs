//! What a training step hands back to the host: the metrics, the gradients as the tensor the
//! graph made, and the fetch helpers both step forms (`graph.rs`, `overlap.rs`) share.
use super::ModelError;
use tensorflow::{Output, SessionRunArgs, Tensor, TensorType};

/// The batch metrics of one step (means over the batch; over all ranks once all-reduced).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepMetrics {
    /// Mean cross-entropy over the batch (with label smoothing).
    pub loss: f32,
    /// `loss + weight_decay * l2`.
    pub total_loss: f32,
    /// Fraction of the batch whose label is the arg-max / among the top 5 logits.
    pub top1: f32,
    pub top5: f32,
}

/// d total_loss / d w, flat in [`TrainGraph::trainable`](super::TrainGraph::trainable) order, UNSCALED (loss scale divided
/// out), averaged over this rank's batch. May hold inf/NaN when the scaled backward pass
/// overflowed: the caller checks. It is the tensor the graph produced, reduced in place on the
/// host and fed back to [`TrainGraph::apply`](super::TrainGraph::apply) as it is: 44 MB (ResNet-18) to 102 MB (ResNet-50)
/// are never copied between the two session runs.
pub struct Gradients(pub(super) Tensor<f32>);

impl Gradients {
    /// A zeroed buffer of `len` floats, to be filled group by group (overlapped steps).
    pub fn zeros(len: usize) -> Gradients {
        Gradients(Tensor::new(&[len as u64]))
    }

    /// Gradients made on the host (tests, tools): a copy of `values`.
    pub fn from_host(values: &[f32]) -> Result<Gradients, ModelError> {
        Tensor::new(&[values.len() as u64])
            .with_values(values)
            .map(Gradients)
            .map_err(|source| ModelError::Run {
                what: "copying gradients",
                source: source.into(),
            })
    }
}

impl std::fmt::Debug for Gradients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Gradients({} floats)", self.len())
    }
}

impl std::ops::Deref for Gradients {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.0
    }
}

impl std::ops::DerefMut for Gradients {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut self.0
    }
}

/// What the gradient run of a step returns to the host.
#[derive(Debug)]
pub struct StepOutput {
    pub grads: Gradients,
    pub metrics: StepMetrics,
}

/// What the one-run step ([`TrainGraph::fused_step`](super::TrainGraph::fused_step)) returns.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FusedOutput {
    pub metrics: StepMetrics,
    /// The loss and every gradient were finite, so the update was applied.
    pub applied: bool,
}

pub(super) fn fetch_scalar<T: TensorType + Copy>(
    args: &mut SessionRunArgs,
    token: tensorflow::FetchToken,
    what: &'static str,
) -> Result<T, ModelError> {
    let t = args.fetch::<T>(token).map_err(|source| ModelError::Run {
        what,
        source: source.into(),
    })?;
    Ok(t[0])
}

pub(super) fn request_metrics(
    args: &mut SessionRunArgs,
    outputs: [&Output; 4],
) -> [tensorflow::FetchToken; 4] {
    outputs.map(|o| request(args, o))
}

pub(super) fn fetch_metrics(
    args: &mut SessionRunArgs,
    [l, t, t1, t5]: [tensorflow::FetchToken; 4],
) -> Result<StepMetrics, ModelError> {
    Ok(StepMetrics {
        loss: fetch_scalar(args, l, "fetching loss")?,
        total_loss: fetch_scalar(args, t, "fetching total_loss")?,
        top1: fetch_scalar(args, t1, "fetching top1")?,
        top5: fetch_scalar(args, t5, "fetching top5")?,
    })
}

pub(super) fn request(args: &mut SessionRunArgs, out: &Output) -> tensorflow::FetchToken {
    args.request_fetch(&out.operation, out.index)
}
