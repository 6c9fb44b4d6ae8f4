//! The objective and the batch metrics: softmax cross-entropy on one-hot labels (label smoothing
//! applied to the one-hot; the sparse op has no gradient registered in the C API), L2 weight decay
//! over the kernels (BN and bias only if asked), and top-k hits.
use super::layers::LayerKind;
use super::tf::{self, Var};
use tensorflow::{ops, DataType, Output, Scope, Status};

/// Per-example cross-entropy. `logits`: [N, K] f32, `labels`: [N] i32 (0-based) -> [N] f32.
/// With smoothing s the target is `(1 - s) * one_hot + s / K`.
pub(crate) fn cross_entropy(
    scope: &mut Scope,
    logits: Output,
    labels: Output,
    num_classes: u32,
    smoothing: f32,
) -> Result<Output, Status> {
    let k = num_classes as f32;
    let depth = ops::constant(num_classes as i32, scope)?;
    let on = tf::const_f32(scope, &[1.0 - smoothing + smoothing / k])?;
    let off = tf::const_f32(scope, &[smoothing / k])?;
    let targets = ops::one_hot(labels, depth, on, off, scope)?; // [N, K] f32
    let xent = ops::softmax_cross_entropy_with_logits(logits, targets, scope)?;
    Ok(xent.output(0)) // output 1 is the backprop, used only by TF's gradient
}

/// Mean over axis 0 of a [N] tensor -> scalar.
pub(crate) fn mean(scope: &mut Scope, x: Output) -> Result<Output, Status> {
    let axis = tf::const_i32(scope, &[0])?;
    Ok(ops::mean(x, axis, scope)?.into())
}

/// Sum over axis 0 of a [N] tensor -> scalar.
pub(crate) fn sum(scope: &mut Scope, x: Output) -> Result<Output, Status> {
    let axis = tf::const_i32(scope, &[0])?;
    Ok(ops::sum(x, axis, scope)?.into())
}

/// `sum(0.5 * w^2)` over the decayed variables (as `tf.nn.l2_loss`), a scalar f32: conv and dense
/// kernels always, BN gamma/beta if `decay_bn`, biases if `decay_bias`.
pub(crate) fn l2_penalty(
    scope: &mut Scope,
    trainable: &[(Var, LayerKind)],
    decay_bn: bool,
    decay_bias: bool,
) -> Result<Output, Status> {
    let mut terms = Vec::new();
    for (var, kind) in trainable {
        let decayed = match kind {
            LayerKind::Kernel => true,
            LayerKind::Bias => decay_bias,
            LayerKind::BnGamma | LayerKind::BnBeta => decay_bn,
        };
        if decayed {
            terms.push(ops::l2_loss(var.read.clone(), scope)?.into());
        }
    }
    Ok(ops::AddN::new().build_instance(terms, scope)?.sum())
}

/// 1.0 where the label is among the top `k` logits, else 0.0. `logits`: [N, K] f32,
/// `labels`: [N] i32 -> [N] f32. (InTopKV2 wants int32 targets; ties count as hits.)
pub(crate) fn in_top_k(
    scope: &mut Scope,
    logits: Output,
    labels: Output,
    k: i32,
) -> Result<Output, Status> {
    let k = ops::constant(k, scope)?;
    let hit = ops::in_top_kv2(logits, labels, k, scope)?;
    Ok(ops::Cast::new()
        .DstT(DataType::Float)
        .build(hit, scope)?
        .into())
}
