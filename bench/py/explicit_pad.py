"""Strided convolutions with the padding inside `Conv2D` (`padding: EXPLICIT`) against `Pad` +
`VALID`, as dawnrun and the Keras reference build them: forward and both gradients of each of
ResNet-18's strided convolutions alone (batch 32, 128 px), in a `tf.function`, alternated.

    python bench/py/explicit_pad.py [bf16]

Prints per shape the median milliseconds of each form, the ratio (> 1: explicit padding faster)
and the largest difference between the two forms' outputs and gradients on the same input.
"""
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

# (batch, height, width, channels in, channels out, kernel): stages 2-4's first 3x3, the stem.
SHAPES = [(32, 32, 32, 64, 128, 3), (32, 16, 16, 128, 256, 3), (32, 8, 8, 256, 512, 3), (32, 128, 128, 3, 64, 7)]


def make(explicit, shape, dtype):
    n, h, w, c, co, k = shape
    rng = np.random.default_rng(0)
    x = tf.cast(tf.constant(rng.standard_normal((n, h, w, c), dtype=np.float32)), dtype)
    kernel = tf.Variable(rng.standard_normal((k, k, c, co), dtype=np.float32) * 0.05)
    before, after = (k - 1) // 2, k - 1 - (k - 1) // 2
    pads = [[0, 0], [before, after], [before, after], [0, 0]]

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            tape.watch(x)
            wk = tf.cast(kernel, dtype)
            if explicit:
                y = tf.nn.conv2d(x, wk, 2, pads)
            else:
                y = tf.nn.conv2d(tf.pad(x, pads), wk, 2, "VALID")
            loss = tf.reduce_sum(tf.square(tf.cast(y, tf.float32)))
        return (y,) + tuple(tape.gradient(loss, [x, kernel]))

    return step


def main():
    dtype = tf.bfloat16 if sys.argv[1:] == ["bf16"] else tf.float32
    for shape in SHAPES:
        forms = [make(False, shape, dtype), make(True, shape, dtype)]
        outs = [f() for f in forms]
        diff = max(float(tf.reduce_max(tf.abs(tf.cast(a, tf.float32) - tf.cast(b, tf.float32))))
                   for a, b in zip(*outs))
        times = [[], []]
        for r in range(8):
            for i in ((0, 1) if r % 2 == 0 else (1, 0)):
                start = time.perf_counter()
                for _ in range(5):
                    forms[i]()
                times[i].append((time.perf_counter() - start) / 5)
        pad, explicit = (statistics.median(t) for t in times)
        print("%-28s Pad+VALID %7.2f ms  EXPLICIT %7.2f ms  %.3fx  max diff %.3g"
              % (shape, pad * 1e3, explicit * 1e3, pad / explicit, diff))


if __name__ == "__main__":
    main()
