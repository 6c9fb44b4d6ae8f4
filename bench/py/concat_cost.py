"""What concatenating the gradients into one flat vector costs, apart from the rest of a step.

    taskset -c 0 python bench/py/concat_cost.py            # TF_ENABLE_ONEDNN_OPTS as set

Times TensorFlow concatenating float tensors of ResNet-18's variable sizes (62 tensors,
11,181,642 floats, 44.7 MB) into one vector, as the trainer's gradients run does before the
all-reduce, against returning the same tensors as they are. One intra-op and one inter-op
thread (one core per rank, as in the np 2 rows); the two sides alternate, `--calls` calls per
timing, `--rounds` rounds. Prints ms per call of each side per round, then one JSON line.
"""
import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf  # noqa: E402


def resnet18_sizes(classes=10):
    """The float counts of ResNet-18's trainable variables (kernels, BN gamma/beta, dense)."""
    sizes = [7 * 7 * 3 * 64, 64, 64]
    c_in = 64
    for c in (64, 128, 256, 512):
        for block in range(2):
            first = block == 0 and c != 64
            sizes += [3 * 3 * (c_in if block == 0 else c) * c, c, c, 3 * 3 * c * c, c, c]
            if first:
                sizes += [c_in * c, c, c]
        c_in = c
    return sizes + [512 * classes, classes]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    sizes = resnet18_sizes()
    parts = [tf.Variable(tf.random.normal([n])) for n in sizes]

    @tf.function
    def concatenated():
        return tf.concat([tf.reshape(p, [-1]) for p in parts], 0)

    @tf.function
    def as_they_are():
        return [tf.identity(p) for p in parts]

    sides = {"concat": concatenated, "separate": as_they_are}
    for f in sides.values():
        f()
    ms = {name: [] for name in sides}
    for r in range(args.rounds):
        for name in (list(sides) if r % 2 == 0 else list(reversed(sides))):
            start = time.perf_counter()
            for _ in range(args.calls):
                sides[name]()
            ms[name].append((time.perf_counter() - start) / args.calls * 1000)
        print("round %d: concat %.2f ms, separate %.2f ms" % (r, ms["concat"][-1], ms["separate"][-1]))
    print(json.dumps({"tensors": len(sizes), "floats": sum(sizes),
                      "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS"), "ms": ms}))


if __name__ == "__main__":
    main()
