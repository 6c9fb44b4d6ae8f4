"""Reference for `trainer bench`: one Keras training step of ResNet v1.5 in a tf.function.

The same network and update as dawnrun's graph (ResNet v1.5, the same preprocessing constants), built with Keras layers:
  - ResNet v1.5: stride 2 on the bottleneck's 3x3 (on the first 3x3 of a basic block); basic
    blocks for depth 18/34, bottlenecks for 50/101/152; NHWC; no conv biases; strided convs pad
    explicitly then run VALID, as TensorFlow's official ResNet does.
  - batch norm momentum 0.9, epsilon 1e-4 (Keras picks the fused kernel); last BN gamma of each
    residual block starts at zero; conv kernels variance scaling (scale 1, fan-in); final dense
    normal(0, 0.01) with zero bias; global average pooling.
  - uint8 images in, cast and normalised in the graph with mean [121, 115, 100], std [70, 68, 71].
  - loss: softmax cross-entropy on one-hot labels + 2e-4 x sum of l2_loss over conv and dense
    kernels only (no BN, no biases); SGD momentum 0.9.
  - --precision bf16: Keras mixed_bfloat16 policy (bf16 compute, fp32 variables, fp32 logits).
  - jit_compile=False: XLA is off, like the graph dawnrun builds through the C API.
The batch is random uint8 images and labels made once and held in tensors, fed every step (as a
pre-made batch; `trainer bench` fills its input tensors once too). Each step waits for its loss, so the timing covers the whole update.
Prints {"step_s_median": s, "images_per_s": batch / s, "params": trainable parameter count}.
With --serve (as `trainer bench --serve`): after the warm-up it prints {"ready": true, "params":
N}, then for each stdin line `premade K` runs K steps and prints {"path": "premade", "step_s":
[seconds...]}. With --records as well, `tfdata K` runs K steps fed by tf.data from those train
shards (pipeline_tf.py's training input: decode_and_crop_jpeg, bilinear resize, flip, 2 threads),
the batch taken inside the step's tf.function as Keras' fit does: the same work as the trainer's
path, which decodes its own input.
"""
import argparse
import json
import statistics
import sys
import time

import numpy as np
import tensorflow as tf

MEAN = [121.0, 115.0, 100.0]
STD = [70.0, 68.0, 71.0]
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-4
WEIGHT_DECAY = 2e-4
LAYOUTS = {18: ("basic", [2, 2, 2, 2]), 34: ("basic", [3, 4, 6, 3]), 50: ("bottleneck", [3, 4, 6, 3]),
           101: ("bottleneck", [3, 4, 23, 3]), 152: ("bottleneck", [3, 8, 36, 3])}
L = tf.keras.layers


def conv(x, filters, kernel, stride, name):
    init = tf.keras.initializers.VarianceScaling(scale=1.0, mode="fan_in", distribution="truncated_normal")
    if stride > 1:
        pad = kernel - 1
        x = L.ZeroPadding2D(((pad // 2, pad - pad // 2), (pad // 2, pad - pad // 2)), name=name + "_pad")(x)
    return L.Conv2D(filters, kernel, strides=stride, padding="valid" if stride > 1 else "same",
                    use_bias=False, kernel_initializer=init, name=name)(x)


def bn(x, name, zero_gamma=False):
    return L.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name,
                                gamma_initializer="zeros" if zero_gamma else "ones")(x)


def block(x, kind, filters, stride, name):
    out_filters = filters * 4 if kind == "bottleneck" else filters
    shortcut = x
    if stride != 1 or x.shape[-1] != out_filters:
        shortcut = bn(conv(x, out_filters, 1, stride, name + "_proj"), name + "_proj_bn")
    if kind == "basic":
        y = L.ReLU()(bn(conv(x, filters, 3, stride, name + "_conv1"), name + "_bn1"))
        y = bn(conv(y, filters, 3, 1, name + "_conv2"), name + "_bn2", zero_gamma=True)
    else:
        y = L.ReLU()(bn(conv(x, filters, 1, 1, name + "_conv1"), name + "_bn1"))
        y = L.ReLU()(bn(conv(y, filters, 3, stride, name + "_conv2"), name + "_bn2"))
        y = bn(conv(y, out_filters, 1, 1, name + "_conv3"), name + "_bn3", zero_gamma=True)
    return L.ReLU()(L.Add()([y, shortcut]))


def resnet(depth, classes, px):
    kind, counts = LAYOUTS[depth]
    images = L.Input(shape=(px, px, 3), dtype=tf.uint8, name="images")
    x = L.Lambda(lambda t: (tf.cast(t, tf.float32) - MEAN) / STD, name="normalise")(images)
    x = L.ReLU()(bn(conv(x, 64, 7, 2, "stem_conv"), "stem_bn"))
    x = L.MaxPooling2D(3, 2, padding="same")(x)
    for stage, count in enumerate(counts):
        for i in range(count):
            stride = 2 if (i == 0 and stage > 0) else 1
            x = block(x, kind, 64 * 2 ** stage, stride, "stage%d_block%d" % (stage + 1, i + 1))
    x = L.GlobalAveragePooling2D()(x)
    logits = L.Dense(classes, kernel_initializer=tf.keras.initializers.RandomNormal(stddev=0.01),
                     name="fc")(x)
    logits = L.Activation("linear", dtype="float32")(logits)
    return tf.keras.Model(images, logits)


def make_train_step(model, classes):
    """The Keras step: forward, loss with L2 on kernels, backward, SGD momentum, in a tf.function."""
    kernels = [v for v in model.trainable_variables if "kernel" in v.name]
    optimizer = tf.keras.optimizers.SGD(learning_rate=0.1, momentum=0.9)

    @tf.function(jit_compile=False)
    def train_step(images, labels):
        with tf.GradientTape() as tape:
            logits = model(images, training=True)
            one_hot = tf.one_hot(labels, classes)
            cross_entropy = tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(one_hot, logits))
            l2 = WEIGHT_DECAY * tf.add_n([tf.nn.l2_loss(tf.cast(k, tf.float32)) for k in kernels])
            loss = cross_entropy + l2
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    return train_step


def serve(steps, warmup, params):
    """Warm up every path, say ready (a JSON line with the parameter count), then time `PATH K`
    requests from stdin until it closes. `steps`: {path name: step function}."""
    for step in steps.values():
        for _ in range(warmup):
            step()
    print(json.dumps({"ready": True, "params": params}), flush=True)
    for line in sys.stdin:
        words = line.split()
        if len(words) != 2 or words[0] not in steps or not words[1].isdigit():
            raise SystemExit("error: request %r: expected `%s K`" % (line.strip(), " K` or `".join(steps)))
        times = []
        for _ in range(int(words[1])):
            start = time.perf_counter()
            loss = steps[words[0]]()
            times.append(time.perf_counter() - start)
        if not np.isfinite(loss):
            raise SystemExit("error: loss is %r" % loss)
        print(json.dumps({"path": words[0], "step_s": times}), flush=True)


def tfdata_step(train_step, args):
    """A step fed by tf.data from `args.records`, the batch taken inside the tf.function."""
    import pipeline_tf

    data = argparse.Namespace(records=args.records, prefix="train", px=args.px, batch=args.batch,
                              threads=2, mode="train", crop_op="decode_and_crop")
    iterator = iter(pipeline_tf.build(data))

    @tf.function(jit_compile=False)
    def fed(it):
        images, labels = next(it)
        return train_step(images, labels - 1)  # records hold 1-based labels, as ours reads them

    return lambda: float(fed(iterator))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--depth", type=int, choices=sorted(LAYOUTS), default=18)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--px", type=int, default=128)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--params-only", action="store_true", help="build, print the count, no steps")
    ap.add_argument("--serve", action="store_true", help="time steps on request from stdin")
    ap.add_argument("--records", help="with --serve: train shards for the `tfdata` path")
    args = ap.parse_args()

    if args.precision == "bf16":
        tf.keras.mixed_precision.set_global_policy("mixed_bfloat16")
    model = resnet(args.depth, args.classes, args.px)
    params = int(sum(np.prod(v.shape) for v in model.trainable_variables))
    if args.params_only:
        print(json.dumps({"params": params}))
        return
    train_step = make_train_step(model, args.classes)

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(args.batch, args.px, args.px, 3), dtype=np.uint8)
    labels = rng.integers(0, args.classes, size=(args.batch,), dtype=np.int32)
    # Held as host tensors, made once: dawnrun's pre-made path also fills its input tensors once
    # (on a GPU machine both sides still copy the batch to the device each step).
    with tf.device("/CPU:0"):
        images, labels = tf.constant(images), tf.constant(labels)
    if args.serve:
        steps = {"premade": lambda: float(train_step(images, labels))}
        if args.records:
            steps["tfdata"] = tfdata_step(train_step, args)
        serve(steps, args.warmup, params)
        return
    times = []
    for step in range(args.warmup + args.steps):
        start = time.perf_counter()
        loss = float(train_step(images, labels))
        if step >= args.warmup:
            times.append(time.perf_counter() - start)
    if not np.isfinite(loss):
        raise SystemExit("error: loss is %r after %d steps" % (loss, args.warmup + args.steps))
    median = statistics.median(times)
    print(json.dumps({"step_s_median": median, "images_per_s": args.batch / median, "params": params,
                      "depth": args.depth, "px": args.px, "batch": args.batch, "precision": args.precision,
                      "jit_compile": False, "loss": loss}))


if __name__ == "__main__":
    main()
