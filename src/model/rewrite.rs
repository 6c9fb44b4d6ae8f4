//! GraphDef rewrites applied after the C API has built the gradients, so that Grappler's
//! remapper fuses every batch norm with its ReLU, as it does in a Keras graph.
//!
//! 1. Every `ReluGrad` reads its ReLU's output instead of its input. TensorFlow's C++ gradient
//!    for `Relu` (the one `TF_AddGradients` uses) passes the ReLU's input; Python's passes the
//!    output. Both give the same bits (`y > 0` exactly when `x > 0`), but with the input the
//!    batch-norm output has a second consumer and cannot be fused with the ReLU. Measured with
//!    `bench/py/ab_step.py` (see BENCHMARKS.md).
//! 2. Every `Rank` of a tensor whose rank is known becomes a constant. The C++ gradient of `Pad`
//!    takes `Rank(x)`; Grappler turns that into a constant with a control edge from `x`, and a
//!    ReLU with a control edge is not fused. Python's `tf.rank` returns the constant itself. In
//!    ResNet-50 this is the ReLU before each strided 3x3 convolution's padding (3 of 33 pairs).
//!
//! The GraphDef is read and written with prost. Only node names, op types and inputs are looked
//! at, and a `Rank` node's attributes replaced; every other field (attributes, versions, the
//! function library, debug info) is carried as its encoded bytes, so nothing else changes.
use std::collections::HashMap;

use prost::Message;
use tensorflow::{Graph, Operation, Output, Status};

/// Finds handles made in one graph in another that holds the same node names: the graph the
/// session runs is imported from the rewritten GraphDef after every handle was made.
pub(crate) struct Rebind<'a>(pub &'a Graph);

impl Rebind<'_> {
    pub(crate) fn op(&self, op: &Operation) -> Result<Operation, Status> {
        self.0.operation_by_name_required(&op.name()?)
    }

    pub(crate) fn out(&self, out: &Output) -> Result<Output, Status> {
        Ok(Output {
            operation: self.op(&out.operation)?,
            index: out.index,
        })
    }
}

/// `tensorflow.GraphDef`, other fields kept encoded (field numbers from graph.proto).
#[derive(Clone, PartialEq, Message)]
struct GraphDef {
    #[prost(message, repeated, tag = "1")]
    node: Vec<NodeDef>,
    #[prost(bytes = "vec", optional, tag = "2")]
    library: Option<Vec<u8>>,
    #[prost(int32, tag = "3")]
    version: i32,
    #[prost(bytes = "vec", optional, tag = "4")]
    versions: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "5")]
    debug_info: Option<Vec<u8>>,
}

/// `tensorflow.NodeDef` (node_def.proto); attribute values stay encoded `AttrValue`s.
#[derive(Clone, PartialEq, Message)]
struct NodeDef {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(string, tag = "2")]
    op: String,
    #[prost(string, repeated, tag = "3")]
    input: Vec<String>,
    #[prost(string, tag = "4")]
    device: String,
    #[prost(btree_map = "string, bytes", tag = "5")]
    attr: std::collections::BTreeMap<String, Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "6")]
    experimental_debug_info: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "7")]
    experimental_type: Option<Vec<u8>>,
}

/// The two cases of `tensorflow.AttrValue` (attr_value.proto) a `Const` needs.
#[derive(Clone, PartialEq, Message)]
struct AttrValue {
    #[prost(int32, optional, tag = "6")]
    r#type: Option<i32>,
    #[prost(message, optional, tag = "8")]
    tensor: Option<TensorProto>,
}

/// `tensorflow.TensorProto` (tensor.proto), int32 values only.
#[derive(Clone, PartialEq, Message)]
struct TensorProto {
    #[prost(int32, tag = "1")]
    dtype: i32,
    #[prost(message, optional, tag = "2")]
    tensor_shape: Option<TensorShapeProto>,
    #[prost(int32, repeated, tag = "7")]
    int_val: Vec<i32>,
}

/// `tensorflow.TensorShapeProto` (tensor_shape.proto); no dimensions: a scalar.
#[derive(Clone, PartialEq, Message)]
struct TensorShapeProto {}

/// What [`for_fusion`] changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rewritten {
    pub relu_grads: usize,
    pub ranks: usize,
}

/// Rewrites the serialised GraphDef `def`: each `ReluGrad` whose features input is some `Relu`'s
/// input reads that `Relu` instead, and each `Rank` node named in `known_ranks` becomes an int32
/// constant of that value (its control inputs kept). Returns the new GraphDef and the counts.
pub(crate) fn for_fusion(
    def: &[u8],
    known_ranks: &HashMap<String, i32>,
) -> Result<(Vec<u8>, Rewritten), Status> {
    let mut graph = GraphDef::decode(def).map_err(|e| {
        Status::new_set_lossy(
            tensorflow::Code::Internal,
            &format!("reading the GraphDef: {e}"),
        )
    })?;
    let changed = Rewritten {
        relu_grads: point_relu_grads_at_outputs(&mut graph.node),
        ranks: ranks_to_constants(&mut graph.node, known_ranks),
    };
    Ok((graph.encode_to_vec(), changed))
}

/// `Rank` nodes of `graph` whose input has a static rank, with that rank: the input to
/// [`for_fusion`].
pub(crate) fn known_ranks(graph: &Graph) -> Result<HashMap<String, i32>, Status> {
    let mut ranks = HashMap::new();
    for op in graph.operation_iter() {
        if op.op_type()? == "Rank" && op.num_inputs() == 1 {
            let (input, index) = op.input(0);
            let dims = graph.num_dims(Output {
                operation: input,
                index: index as i32,
            })?;
            if dims >= 0 {
                ranks.insert(op.name()?, dims);
            }
        }
    }
    Ok(ranks)
}

/// The first rewrite on decoded nodes (see [`for_fusion`]).
fn point_relu_grads_at_outputs(nodes: &mut [NodeDef]) -> usize {
    let relu_of: HashMap<String, String> = nodes
        .iter()
        .filter(|n| n.op == "Relu" && !n.input.is_empty())
        .map(|n| (tensor_name(&n.input[0]), n.name.clone()))
        .collect();
    let mut changed = 0;
    for n in nodes.iter_mut().filter(|n| n.op == "ReluGrad") {
        if let Some(relu) = n.input.get(1).and_then(|f| relu_of.get(&tensor_name(f))) {
            n.input[1] = relu.clone();
            changed += 1;
        }
    }
    changed
}

/// The second rewrite on decoded nodes (see [`for_fusion`]).
fn ranks_to_constants(nodes: &mut [NodeDef], known_ranks: &HashMap<String, i32>) -> usize {
    let mut changed = 0;
    for n in nodes.iter_mut().filter(|n| n.op == "Rank") {
        if let Some(&rank) = known_ranks.get(&n.name) {
            n.op = "Const".into();
            n.input.retain(|i| i.starts_with('^'));
            n.attr = int32_scalar_attrs(rank);
            changed += 1;
        }
    }
    changed
}

/// `DataType::DT_INT32` in types.proto.
const DT_INT32: i32 = 3;

/// The attributes of a `Const` node holding the int32 scalar `value`.
fn int32_scalar_attrs(value: i32) -> std::collections::BTreeMap<String, Vec<u8>> {
    let dtype = AttrValue {
        r#type: Some(DT_INT32),
        tensor: None,
    };
    let tensor = AttrValue {
        r#type: None,
        tensor: Some(TensorProto {
            dtype: DT_INT32,
            tensor_shape: Some(TensorShapeProto {}),
            int_val: vec![value],
        }),
    };
    [
        ("dtype".to_string(), dtype.encode_to_vec()),
        ("value".to_string(), tensor.encode_to_vec()),
    ]
    .into()
}

/// An input string as `node:index`, so `x` and `x:0` compare equal.
fn tensor_name(input: &str) -> String {
    if input.contains(':') {
        input.to_string()
    } else {
        format!("{input}:0")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, op: &str, input: &[&str]) -> NodeDef {
        NodeDef {
            name: name.into(),
            op: op.into(),
            input: input.iter().map(|s| s.to_string()).collect(),
            device: "/device:CPU:0".into(),
            attr: [("T".to_string(), vec![0x30, 0x01])].into(),
            ..Default::default()
        }
    }

    #[test]
    fn relu_grads_read_their_relus_output_and_nothing_else_changes() {
        let graph = GraphDef {
            node: vec![
                node("bn", "FusedBatchNormV3", &["x", "g", "b", "m", "v"]),
                node("relu", "Relu", &["bn"]),
                node("relu2", "Relu", &["conv:1"]),
                node("gradients/ReluGrad", "ReluGrad", &["up", "bn:0"]),
                node(
                    "gradients/ReluGrad_1",
                    "ReluGrad",
                    &["up2", "conv:1", "^dep"],
                ),
                // Features that no Relu reads stay as they are.
                node("gradients/ReluGrad_2", "ReluGrad", &["up3", "other"]),
            ],
            library: Some(vec![1, 2, 3]),
            version: 0,
            versions: Some(vec![0x08, 0x9b, 0x0a]),
            debug_info: None,
        };
        let (bytes, changed) = for_fusion(&graph.encode_to_vec(), &HashMap::new()).unwrap();
        assert_eq!(
            changed,
            Rewritten {
                relu_grads: 2,
                ranks: 0
            }
        );
        let back = GraphDef::decode(bytes.as_slice()).unwrap();
        let inputs = |i: usize| back.node[i].input.clone();
        assert_eq!(inputs(3), ["up", "relu"]);
        assert_eq!(inputs(4), ["up2", "relu2", "^dep"]);
        assert_eq!(inputs(5), ["up3", "other"]);
        // Everything but those two inputs round-trips unchanged.
        let mut expected = graph.clone();
        expected.node[3].input[1] = "relu".into();
        expected.node[4].input[1] = "relu2".into();
        assert_eq!(back, expected);
    }

    #[test]
    fn known_ranks_become_int32_constants_keeping_only_control_inputs() {
        let graph = GraphDef {
            node: vec![
                node("relu", "Relu", &["bn"]),
                node("gradients/Rank", "Rank", &["relu", "^dep"]),
                // A rank the caller does not know stays an op.
                node("gradients/Rank_1", "Rank", &["dynamic"]),
            ],
            ..Default::default()
        };
        let ranks = [("gradients/Rank".to_string(), 4)].into();
        let (bytes, changed) = for_fusion(&graph.encode_to_vec(), &ranks).unwrap();
        assert_eq!(
            changed,
            Rewritten {
                relu_grads: 0,
                ranks: 1
            }
        );
        let back = GraphDef::decode(bytes.as_slice()).unwrap();
        let c = &back.node[1];
        assert_eq!(
            (c.op.as_str(), c.input.clone()),
            ("Const", vec!["^dep".to_string()])
        );
        assert_eq!(c.device, "/device:CPU:0");
        let attr = |k: &str| AttrValue::decode(c.attr[k].as_slice()).unwrap();
        assert_eq!(attr("dtype").r#type, Some(DT_INT32));
        let t = attr("value").tensor.unwrap();
        assert_eq!((t.dtype, t.int_val), (DT_INT32, vec![4]));
        assert_eq!(t.tensor_shape, Some(TensorShapeProto {}));
        assert_eq!(back.node[2], graph.node[2]);
        assert_eq!(back.node[0], graph.node[0]);
    }
}
