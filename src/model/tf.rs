//! Every workaround for a `tensorflow` crate (0.21, TF 2.13 C API) problem, each with its bug
//! written down, so the rest of `model/` and `checkpoint/` builds graphs without tripping on them.
//!
//! Known problems wrapped here:
//! 1. `Graph::add_gradients(.., dx = Some(..))` is a use-after-free in tensorflow 0.21.0 (the C
//!    array of `dx` outputs is dropped before TF reads it; segfault). [`gradients`] always passes
//!    `dx = None` (TF then seeds with ones); loss scaling multiplies `y` instead.
//! 2. An op applied straight to a ref variable's output (`VariableV2:0`, dtype `float_ref`) crashed
//!    inside TF's C++ gradient code (seen with `Square`). [`variable`] therefore gives every
//!    variable one `Identity` read (`<name>/read`, as Python TF1 does); every consumer, and the
//!    gradient `x`, is that read, never the ref.
//! 3. The generated builders for list-typed ops are wrong for `SaveV2` (its `tensors` list is added
//!    as a single input), `QueueEnqueueV2` (the same) and `RestoreV2` (only output 0 is exposed).
//!    [`save_v2`], [`queue_enqueue`] and [`restore_v2`] build them by hand through
//!    `Graph::new_operation`.
//! 4. `Variable::builder()` names its `Assign` and `Const` nodes from the scope's op name and
//!    exposes no read; [`variable`] builds `VariableV2`, `<name>/read` and `<name>/Assign` itself
//!    so node names (checkpoint keys: a file format others read) are exactly what we write.
use tensorflow::{ops, DataType, Operation, Output, Scope, Status};

/// A ref variable (`VariableV2`) with its single read and its initialiser.
#[derive(Debug, Clone)]
pub(crate) struct Var {
    /// Full node name, e.g. `resnet/stage1/block0/conv1/kernel`; also the checkpoint key.
    pub name: String,
    /// The `VariableV2` op: the target of `Assign` / `ApplyMomentum` / `SaveV2` inputs.
    pub var: Operation,
    /// `Identity` of the variable (`<name>/read`): the only output other ops consume.
    pub read: Output,
    /// `Assign(var, initial value)`, named `<name>/Assign`.
    pub init: Operation,
    /// Static shape; every variable here is fully defined.
    pub shape: Vec<i64>,
    pub dtype: DataType,
}

impl Var {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product::<i64>() as usize
    }

    pub fn output(&self) -> Output {
        self.var.clone().into()
    }
}

/// Builds `VariableV2` named exactly `<scope>/<name>`, its `<name>/read` Identity and a
/// `<name>/Assign` initialiser from the value `initial` builds in scope `<name>/Initializer`.
pub(crate) fn variable(
    scope: &mut Scope,
    name: &str,
    shape: &[i64],
    dtype: DataType,
    initial: impl FnOnce(&mut Scope) -> Result<Output, Status>,
) -> Result<Var, Status> {
    // The generated builder goes through the scope, so the node gets the scope's device.
    let var = ops::VariableV2::new()
        .dtype(dtype)
        .shape(shape)
        .build(&mut scope.with_op_name(name))?;
    let full = var.name()?;
    let inner = scope.new_sub_scope(name);
    let initial = initial(&mut inner.new_sub_scope("Initializer"))?;
    let read = ops::Identity::new().build(var.clone(), &mut inner.with_op_name("read"))?;
    let init = ops::Assign::new().validate_shape(true).build(
        var.clone(),
        initial,
        &mut inner.with_op_name("Assign"),
    )?;
    Ok(Var {
        name: full,
        var,
        read: read.into(),
        init,
        shape: shape.to_vec(),
        dtype,
    })
}

/// d(y)/d(x_i) for each x, with `dx = None` (bug 1 above). Fails, naming the input, when some x
/// does not reach `y` (a variable the loss does not use would silently get no update).
pub(crate) fn gradients(
    scope: &mut Scope,
    y: &Output,
    xs: &[Output],
    names: &[String],
) -> Result<Vec<Output>, Status> {
    let grads =
        scope
            .graph_mut()
            .add_gradients(Some("gradients"), std::slice::from_ref(y), xs, None)?;
    grads
        .into_iter()
        .zip(names)
        .map(|(g, name)| {
            g.ok_or_else(|| {
                Status::new_set_lossy(
                    tensorflow::Code::InvalidArgument,
                    &format!("no gradient reaches variable {name}"),
                )
            })
        })
        .collect()
}

/// `SaveV2(prefix, names, slices, tensors)` with a real input list (bug 3 above).
pub(crate) fn save_v2(
    scope: &mut Scope,
    prefix: Output,
    names: Output,
    slices: Output,
    tensors: &[Output],
    dtypes: &[DataType],
) -> Result<Operation, Status> {
    let name = scope.get_unique_name_for_op("SaveV2");
    let mut g = scope.graph_mut();
    let mut nd = g.new_operation("SaveV2", &name)?;
    nd.add_input(prefix);
    nd.add_input(names);
    nd.add_input(slices);
    nd.add_input_list(tensors);
    nd.set_attr_type_list("dtypes", dtypes)?;
    nd.finish()
}

/// `QueueEnqueueV2(queue, [value])`: its `components` is a list input (bug 3 above).
pub(crate) fn queue_enqueue(
    scope: &mut Scope,
    queue: Output,
    value: Output,
) -> Result<Operation, Status> {
    let name = scope.get_unique_name_for_op("QueueEnqueueV2");
    let mut g = scope.graph_mut();
    let mut nd = g.new_operation("QueueEnqueueV2", &name)?;
    nd.add_input(queue);
    nd.add_input_list(&[value]);
    nd.set_attr_type_list("Tcomponents", &[DataType::Float])?;
    nd.finish()
}

/// `RestoreV2(prefix, names, slices)`; returns the op and one output per restored tensor
/// (bug 3 above).
pub(crate) fn restore_v2(
    scope: &mut Scope,
    prefix: Output,
    names: Output,
    slices: Output,
    dtypes: &[DataType],
) -> Result<(Operation, Vec<Output>), Status> {
    let name = scope.get_unique_name_for_op("RestoreV2");
    let op = {
        let mut g = scope.graph_mut();
        let mut nd = g.new_operation("RestoreV2", &name)?;
        nd.add_input(prefix);
        nd.add_input(names);
        nd.add_input(slices);
        nd.set_attr_type_list("dtypes", dtypes)?;
        nd.finish()?
    };
    let outs = (0..dtypes.len())
        .map(|i| op.output(i))
        .collect::<Vec<Output>>();
    Ok((op, outs))
}

/// A `NoOp` that runs after all of `ops`: one target for a group of assigns.
pub(crate) fn group(
    scope: &mut Scope,
    name: &str,
    deps: &[Operation],
) -> Result<Operation, Status> {
    let mut b = ops::NoOp::new();
    for op in deps {
        b = b.add_control_input(op.clone());
    }
    b.build(&mut scope.with_op_name(name))
}

/// A scalar or vector constant of f32.
pub(crate) fn const_f32(scope: &mut Scope, values: &[f32]) -> Result<Output, Status> {
    let op = if values.len() == 1 {
        ops::constant(values[0], scope)?
    } else {
        ops::constant(values, scope)?
    };
    Ok(op.into())
}

/// A vector constant of i32 (axes, shapes, permutations).
pub(crate) fn const_i32(scope: &mut Scope, values: &[i32]) -> Result<Output, Status> {
    Ok(ops::constant(values, scope)?.into())
}

/// A vector constant of i64 (shapes, split sizes).
pub(crate) fn const_i64(scope: &mut Scope, values: &[i64]) -> Result<Output, Status> {
    Ok(ops::constant(values, scope)?.into())
}
