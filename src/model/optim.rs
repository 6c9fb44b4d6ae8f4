//! Flat host buffers <-> per-variable tensors, and the momentum update.
//!
//! Why not the crate's `Optimizer` trait: our gradients leave the graph (they are all-reduced
//! over MPI on the host) and come back as one flat `[P]` f32 feed, so the update is
//! "split the feed, apply momentum per variable", built once here. The crate ships plain gradient
//! descent and Adadelta only; TF's own `ApplyMomentum` kernel (with `use_nesterov`) does the
//! math:  accum = momentum * accum + g;  var -= lr * accum  (Nesterov:
//! var -= lr * (g + momentum * accum)). Weight decay is already in `g` (it is part of the loss).
use super::tf::{self, Var};
use tensorflow::{ops, DataType, Operation, Output, Scope, Status};

/// Concatenates tensors, each flattened, into one [sum of sizes] vector (the host layout).
pub(crate) fn flat_concat(scope: &mut Scope, parts: &[Output]) -> Result<Output, Status> {
    let minus_one = tf::const_i32(scope, &[-1])?;
    let mut flat = parts
        .iter()
        .map(|p| Ok(ops::reshape(p.clone(), minus_one.clone(), scope)?.into()))
        .collect::<Result<Vec<Output>, Status>>()?;
    if flat.len() == 1 {
        // ConcatV2 wants at least two inputs.
        return Ok(flat.remove(0));
    }
    let axis = ops::constant(0i32, scope)?;
    Ok(ops::ConcatV2::new()
        .build_instance(flat, axis.into(), scope)?
        .output())
}

/// Splits a flat [sum of sizes] vector into tensors shaped like `vars` (inverse of
/// [`flat_concat`] of their reads).
///
/// One `Slice` per variable rather than one `SplitV`: TensorFlow's CPU `Slice` of a vector
/// hands out a view of its input, no copy, when the slice's start and length are multiples of
/// 64 bytes (16 floats). Every ResNet variable is, but the last one (the classifier's bias),
/// and each one's start follows from the lengths before it. `SplitV` of a vector always
/// copies, a pass over the whole 45 MB (ResNet-18) in every apply run above one rank: the
/// apply run took 18.6-19.1 ms a step with it and 8.7-14.3 ms without (np 2 timelines,
/// BENCHMARKS.md).
pub(crate) fn split_flat(
    scope: &mut Scope,
    flat: Output,
    vars: &[&Var],
) -> Result<Vec<Output>, Status> {
    let mut offset = 0i64;
    vars.iter()
        .map(|v| {
            let len = v.len() as i64;
            let begin = tf::const_i64(scope, &[offset])?;
            let size = tf::const_i64(scope, &[len])?;
            offset += len;
            let part = ops::slice(flat.clone(), begin, size, scope)?;
            let shape = tf::const_i64(scope, &v.shape)?;
            Ok(ops::reshape(part, shape, scope)?.into())
        })
        .collect()
}

/// One zero-initialised momentum slot per trainable variable, named `<var name>/Momentum` (as
/// Python's momentum optimizer names its slots). `root` must be an unnamed (root-level) scope:
/// the slot's name is given in full, which also keeps it from being uniquified to `_1`.
pub(crate) fn slots(root: &mut Scope, trainable: &[&Var]) -> Result<Vec<Var>, Status> {
    trainable
        .iter()
        .map(|v| {
            let shape = v.shape.clone();
            tf::variable(
                root,
                &format!("{}/Momentum", v.name),
                &shape,
                DataType::Float,
                |sc| {
                    let dims = tf::const_i64(sc, &shape)?;
                    let zero = tf::const_f32(sc, &[0.0])?;
                    Ok(ops::fill(dims, zero, sc)?.into())
                },
            )
        })
        .collect()
}

/// `ApplyMomentum` for each (variable, slot, gradient); returns one op grouping them.
pub(crate) fn apply_momentum(
    scope: &mut Scope,
    vars: &[&Var],
    slots: &[Var],
    grads: &[Output],
    lr: Output,
    momentum: f32,
    nesterov: bool,
) -> Result<Operation, Status> {
    let momentum = tf::const_f32(scope, &[momentum])?;
    let mut updates = Vec::with_capacity(vars.len());
    for ((var, slot), grad) in vars.iter().zip(slots).zip(grads) {
        let op = ops::ApplyMomentum::new().use_nesterov(nesterov).build(
            var.output(),
            slot.output(),
            lr.clone(),
            grad.clone(),
            momentum.clone(),
            scope,
        )?;
        updates.push(op);
    }
    tf::group(scope, "apply", &updates)
}

/// A bool scalar: every element of `scalars` and of every tensor in `tensors` is finite.
/// Checked on each tensor's sum, which is NaN or inf when any element is (one vectorised pass;
/// `All(IsFinite)` over bools cost 3x more). Finite elements whose sum exceeds f32::MAX (3.4e38)
/// count as non-finite too: a gradient that large is an overflow for any purpose.
pub(crate) fn all_finite(
    scope: &mut Scope,
    scalars: &[Output],
    tensors: &[Output],
) -> Result<Output, Status> {
    let flat = tf::const_i32(scope, &[-1])?;
    let axis = tf::const_i32(scope, &[0])?;
    let mut sums = scalars.to_vec();
    for t in tensors {
        let v = ops::reshape(t.clone(), flat.clone(), scope)?;
        sums.push(ops::sum(v, axis.clone(), scope)?.into());
    }
    let total = ops::AddN::new().build_instance(sums, scope)?.sum();
    Ok(ops::is_finite(total, scope)?.into())
}

/// Each tensor passed on only when `pred` is true (`Switch`'s true output): when it is false the
/// consumers do not run at all, as in a `tf.cond` branch.
pub(crate) fn gate(
    scope: &mut Scope,
    tensors: &[Output],
    pred: Output,
) -> Result<Vec<Output>, Status> {
    tensors
        .iter()
        .map(|t| {
            Ok(ops::Switch::new()
                .build_instance(t.clone(), pred.clone(), scope)?
                .output_true())
        })
        .collect()
}
