"""The stem convolution (7x7 stride 2 on 3 channels, batch 32, 128 px) against the same function
as space-to-depth (2x2 blocks: a 4x4 stride-1 convolution on 12 channels, the kernel zero-padded
to 8x8 and regrouped): forward plus filter gradient, timed in a tf.function, three times each.
BENCHMARKS.md, "Looking for a margin over Keras".

    python bench/py/stem_s2d.py [bf16]
"""
import time, numpy as np, tensorflow as tf, sys
dt = tf.bfloat16 if len(sys.argv) > 1 and sys.argv[1] == "bf16" else tf.float32
x = tf.constant(np.random.rand(32, 128, 128, 3).astype(np.float32), dtype=dt)
w = tf.Variable(np.random.rand(7, 7, 3, 64).astype(np.float32) * 0.1)
dy = tf.constant(np.random.rand(32, 64, 64, 64).astype(np.float32), dtype=dt)
@tf.function
def plain():
    with tf.GradientTape() as t:
        xp = tf.pad(x, [[0,0],[3,3],[3,3],[0,0]])
        y = tf.nn.conv2d(xp, tf.cast(w, dt), 2, "VALID")
        l = tf.reduce_sum(tf.cast(y * dy, tf.float32))
    return y, t.gradient(l, w)
@tf.function
def s2d():
    with tf.GradientTape() as t:
        xp = tf.pad(x, [[0,0],[3,3],[3,3],[0,0]])
        xs = tf.nn.space_to_depth(xp, 2)
        k = tf.pad(w, [[0,1],[0,1],[0,0],[0,0]])
        k = tf.reshape(k, [4, 2, 4, 2, 3, 64])
        k = tf.transpose(k, [0, 2, 1, 3, 4, 5])
        k = tf.reshape(k, [4, 4, 12, 64])
        y = tf.nn.conv2d(xs, tf.cast(k, dt), 1, "VALID")
        l = tf.reduce_sum(tf.cast(y * dy, tf.float32))
    return y, t.gradient(l, w)
a, ga = plain(); b, gb = s2d()
print("max |y diff|", float(tf.reduce_max(tf.abs(tf.cast(a, tf.float32) - tf.cast(b, tf.float32)))), "max |g diff|", float(tf.reduce_max(tf.abs(ga - gb))), float(tf.reduce_max(tf.abs(ga))))
for f in (plain, s2d) * 3:
    for _ in range(3): f()
    ts = []
    for _ in range(15):
        s = time.perf_counter(); y, g = f(); g.numpy(); ts.append(time.perf_counter() - s)
    print(f.__name__, "%.2f ms" % (1000 * np.median(ts)))
