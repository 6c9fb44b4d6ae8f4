//! A GraphDef rewrite applied after the C API has built the gradients: every `ReluGrad` reads
//! its ReLU's output instead of its input.
//!
//! Why: TensorFlow's C++ gradient for `Relu` (the one `TF_AddGradients` uses) passes the ReLU's
//! input to `ReluGrad`; Python's passes the output. Both give the same bits (`y > 0` exactly when
//! `x > 0`), but with the input the batch-norm output has a second consumer, so Grappler's
//! remapper cannot fuse batch norm and ReLU into one op the way it does in a Keras graph. Measured
//! with `bench/py/ab_step.py` (see BENCHMARKS.md).
//!
//! The GraphDef is read and written with prost. Only node names, op types and inputs are looked
//! at; every other field (attributes, versions, the function library, debug info) is carried as
//! its encoded bytes, so nothing else changes.
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

/// Rewrites the serialised GraphDef `def` so that each `ReluGrad` whose features input is some
/// `Relu`'s input reads that `Relu` instead. Returns the new GraphDef and how many `ReluGrad`s
/// changed.
pub(crate) fn relu_grads_read_outputs(def: &[u8]) -> Result<(Vec<u8>, usize), Status> {
    let mut graph = GraphDef::decode(def).map_err(|e| {
        Status::new_set_lossy(
            tensorflow::Code::Internal,
            &format!("reading the GraphDef: {e}"),
        )
    })?;
    let changed = point_relu_grads_at_outputs(&mut graph.node);
    Ok((graph.encode_to_vec(), changed))
}

/// The rewrite on decoded nodes (see [`relu_grads_read_outputs`]).
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
        let (bytes, changed) = relu_grads_read_outputs(&graph.encode_to_vec()).unwrap();
        assert_eq!(changed, 2);
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
}
