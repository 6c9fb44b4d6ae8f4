"""Op-by-op profile of one training step: dawnrun's graph against the Keras reference.

    trainer bench --depth 18 --steps 1 --warmup 0 --graph-def /tmp/r18.pb      # dump our graph
    python bench/py/profile_step.py --graph-def /tmp/r18.pb --depth 18 [--precision bf16]

Our side imports the GraphDef the trainer built (the very nodes it runs) into a TF1 session and
runs the trainer's step: at one rank one session run (forward, backward, batch-norm statistics and
the gated momentum update); with `--two-runs` the multi-rank protocol (gradients to the host, then
an apply run). The Keras side is bench/py/train_step_tf.py's
tf.function. Both run under TensorFlow's profiler (the same kernels, the same executor); the
events of the traced steps are summed by op type and by node.

Prints one JSON object: per side the median step seconds outside the profiler, the traced
per-op-type busy time and how long one convolution, and two or more, ran at once; then the op
types whose busy time differs most (ms per step, ours minus Keras). Busy time is summed over the
executor's threads, so it can exceed the wall time.
"""
import argparse
import collections
import glob
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def traced_op_times(run_step, steps, logdir):
    """{op type: ms per step} and {node: ms per step} over `steps` traced calls of run_step."""
    import tensorflow as tf
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    tf.profiler.experimental.start(logdir)
    for _ in range(steps):
        run_step()
    tf.profiler.experimental.stop()
    by_type, by_node = collections.Counter(), collections.Counter()
    convolutions = []  # (start, end) in ps of every convolution op, forward or gradient
    for path in glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True):
        space = xplane_pb2.XSpace()
        with open(path, "rb") as f:
            space.ParseFromString(f.read())
        for plane in space.planes:
            for line in plane.lines:
                for ev in line.events:
                    md = plane.event_metadata[ev.metadata_id]
                    # Op events are named "node:OpType" with the op type as display name.
                    if not md.display_name or ":" not in md.name:
                        continue
                    ms = ev.duration_ps / 1e9 / steps
                    op_type = normalise(md.display_name)
                    by_type[op_type] += ms
                    by_node[md.name] += ms
                    if op_type.startswith("Conv2D"):
                        start = line.timestamp_ns * 1000 + ev.offset_ps
                        convolutions.append((start, start + ev.duration_ps))
    return by_type, by_node, {k: v / steps for k, v in concurrency_ms(convolutions).items()}


def concurrency_ms(spans):
    """{"one": ms, "two_plus": ms}: how long exactly one, and two or more, of `spans` (start, end
    in ps) ran at once. Two convolutions side by side on 2 cores stretch each other's busy time,
    which the per-type sums count on both."""
    edges = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    out = {"one": 0.0, "two_plus": 0.0}
    running, last = 0, None
    for t, change in edges:
        if running == 1:
            out["one"] += (t - last) / 1e9
        elif running >= 2:
            out["two_plus"] += (t - last) / 1e9
        running, last = running + change, t
    return out


def normalise(op_type):
    """oneDNN renames kernels (_MklNativeConv2D, _MklFusedBatchNormV3): fold them to TF's names."""
    for prefix in ("_MklNative", "_MklLayoutDependent", "_Mkl"):
        if op_type.startswith(prefix):
            return op_type[len(prefix):]
    return op_type


def timed(run_step, warmup, steps):
    for _ in range(warmup):
        run_step()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        run_step()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def random_batch(args):
    """The uint8 images and labels both sides train on, the same every run."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(args.batch, args.px, args.px, 3), dtype=np.uint8)
    labels = rng.integers(0, args.classes, size=(args.batch,), dtype=np.int32)
    return images, labels


def ours_step(args, images, labels, edit=None, config=None):
    """Our step on the GraphDef at args.graph_def; `edit(graph_def)` may change it before the
    import, `config` replaces the session's ConfigProto (`bench/py/ab_step.py` uses both)."""
    import tensorflow as tf

    with open(os.path.splitext(args.graph_def)[0] + ".json") as f:
        names = json.load(f)
    graph_def = tf.compat.v1.GraphDef()
    with open(args.graph_def, "rb") as f:
        graph_def.ParseFromString(f.read())
    if edit:
        edit(graph_def)
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(graph_def, name="")
    sess = tf.compat.v1.Session(graph=graph, config=config or tf.compat.v1.ConfigProto(allow_soft_placement=True))
    sess.run(names["init"])
    feed = {names["images"] + ":0": images, names["labels"] + ":0": labels, names["loss_scale"] + ":0": 1.0}

    def step():
        if not getattr(args, "two_runs", False):
            feed[names["learning_rate"] + ":0"] = 0.01
            sess.run([names["loss"], names["finite"], names["bn_update"], names["fused_apply"]], feed)
            return
        grads, _, _ = sess.run([names["gradients"], names["loss"], names["bn_update"]], feed)
        sess.run(names["apply"], {names["flat_gradients_in"] + ":0": grads, names["learning_rate"] + ":0": 0.01})

    return step


def keras_step(args, images, labels):
    import tensorflow as tf
    import train_step_tf as ref

    if args.precision == "bf16":
        tf.keras.mixed_precision.set_global_policy("mixed_bfloat16")
    model = ref.resnet(args.depth, args.classes, args.px)
    train_step = ref.make_train_step(model, args.classes)
    return lambda: float(train_step(images, labels))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--graph-def", required=True, help="written by `trainer bench --graph-def`")
    ap.add_argument("--side", choices=["ours", "keras", "both"], default="both")
    ap.add_argument("--depth", type=int, default=18)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--px", type=int, default=128)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--steps", type=int, default=5, help="timed and traced steps per side")
    ap.add_argument("--top", type=int, default=8)
    ap.add_argument("--two-runs", action="store_true", help="our multi-rank step (gradients, then apply)")
    args = ap.parse_args()

    if args.side == "both":
        # One process per side: Keras' global policy and the TF1 session must not meet.
        import subprocess
        sides = {}
        for side in ("ours", "keras"):
            cmd = [sys.executable] + sys.argv + ["--side", side]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            sides[side] = json.loads(out.strip().splitlines()[-1])
        report(args, sides)
        return

    import tensorflow as tf

    if args.side == "ours":
        tf.compat.v1.disable_eager_execution()
    images, labels = random_batch(args)
    step = ours_step(args, images, labels) if args.side == "ours" else keras_step(args, images, labels)
    median = timed(step, 3, args.steps)
    with tempfile.TemporaryDirectory() as logdir:
        by_type, by_node, convolutions = traced_op_times(step, args.steps, logdir)
    print(json.dumps({"step_s_median": median, "by_type": by_type, "convolutions_running_ms": convolutions,
                      "top_nodes": by_node.most_common(args.top)}))


def report(args, sides):
    ours, keras = sides["ours"], sides["keras"]
    types = set(ours["by_type"]) | set(keras["by_type"])
    diffs = sorted(((ours["by_type"].get(t, 0.0) - keras["by_type"].get(t, 0.0), t) for t in types),
                   key=lambda d: -abs(d[0]))
    out = {
        "net": "ResNet-%d %s %d px batch %d" % (args.depth, args.precision, args.px, args.batch),
        "step_s_median": {"ours": ours["step_s_median"], "keras": keras["step_s_median"]},
        "busy_ms_per_step": {"ours": sum(ours["by_type"].values()), "keras": sum(keras["by_type"].values())},
        "convolutions_running_ms_per_step": {"ours": ours["convolutions_running_ms"],
                                             "keras": keras["convolutions_running_ms"]},
        "largest_differences_ms": [
            {"op": t, "ours_ms": round(ours["by_type"].get(t, 0.0), 2), "keras_ms": round(keras["by_type"].get(t, 0.0), 2),
             "diff_ms": round(d, 2)} for d, t in diffs[:args.top]],
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
