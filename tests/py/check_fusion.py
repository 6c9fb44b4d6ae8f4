"""Runs one step of the training graph `trainer bench --graph-def FILE` wrote, in Python TensorFlow
with oneDNN, and prints as one JSON object how Grappler rewrote its batch-norm + ReLU pairs:
`pairs` (ReLUs that read a batch norm in the graph as built), `fused` (batch norms that became
one op with their activation), `unfused` (ReLUs still reading a batch norm after Grappler).
Usage: check_fusion.py GRAPHDEF PX BATCH CLASSES"""
import json
import os
import sys

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

path, px, batch, classes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
tf.compat.v1.disable_eager_execution()
with open(os.path.splitext(path)[0] + ".json") as f:
    names = json.load(f)
graph_def = tf.compat.v1.GraphDef()
with open(path, "rb") as f:
    graph_def.ParseFromString(f.read())


def base(name):
    return name.lstrip("^").split(":")[0]


def pairs_in(nodes):
    """ReLUs (any kernel name) whose data input is a batch-norm node (any kernel name)."""
    by_name = {n.name: n for n in nodes}
    return [n.name for n in nodes
            if n.op.endswith("Relu") and n.input and "FusedBatchNorm" in by_name[base(n.input[0])].op]


graph = tf.Graph()
with graph.as_default():
    tf.compat.v1.import_graph_def(graph_def, name="")
sess = tf.compat.v1.Session(graph=graph)
sess.run(names["init"])
rng = np.random.default_rng(0)
feed = {
    names["images"] + ":0": rng.integers(0, 256, (batch, px, px, 3), dtype=np.uint8),
    names["labels"] + ":0": rng.integers(0, classes, (batch,), dtype=np.int32),
    names["loss_scale"] + ":0": 1.0,
    names["learning_rate"] + ":0": 0.01,
}
meta = tf.compat.v1.RunMetadata()
sess.run([names["loss"], names["finite"], names["bn_update"], names["fused_apply"]], feed,
         options=tf.compat.v1.RunOptions(output_partition_graphs=True), run_metadata=meta)
ran = [n for g in meta.partition_graphs for n in g.node]
print(json.dumps({
    "pairs": len(pairs_in(graph_def.node)),
    "fused": sum(1 for n in ran if n.op.endswith("FusedBatchNormEx")),
    "unfused": pairs_in(ran),
}))
