"""Reference for `pipeline-bench`: the tf.data input pipeline on the same TFRecord shards.

--mode train (the training input, as TensorFlow's official ResNet pipeline builds it):
  list_files(<records>/<prefix>-*) -> interleave(TFRecordDataset) -> shuffle -> repeat ->
  map(parse_single_example [image/encoded, image/class/label] -> extract_jpeg_shape ->
      sample_distorted_bounding_box(area [0.08, 1], aspect [3/4, 4/3], 100 attempts,
      use_image_if_no_bounding_boxes) -> decode_and_crop_jpeg (or, with --crop-op
      decode_then_crop, decode_jpeg then crop_to_bounding_box) -> resize bilinear to px ->
      random_flip_left_right -> cast uint8, num_parallel_calls=threads)
  -> batch(drop_remainder) -> prefetch.
  decode_and_crop_jpeg is the default because TF's official models and the NVIDIA/aws-samples
  pipelines use it: libjpeg skips the rows outside the crop, which makes it the strongest reference.
--mode decode (the limit): same reading and parsing, then bare decode_jpeg of the whole image; each
  element is reduced to one number so variable-sized images can be batched.
tf.data gets a private thread pool of --threads threads and max_intra_op_parallelism 1 (the
official pipeline's setting), so both sides use the same cores. After a warm-up (--warmup seconds),
images are counted over --seconds of wall time. Prints {"images_per_s": x, "images": n, "seconds": s}.
"""
import argparse
import glob
import json
import os
import time

import tensorflow as tf

MIN_AREA = 0.08
ASPECT = (3.0 / 4.0, 4.0 / 3.0)
SHUFFLE_BUFFER = 1024


def parse(record):
    features = tf.io.parse_single_example(record, {
        "image/encoded": tf.io.FixedLenFeature([], tf.string),
        "image/class/label": tf.io.FixedLenFeature([], tf.int64, default_value=-1),
    })
    return features["image/encoded"], tf.cast(features["image/class/label"], tf.int32)


def sample_box(shape):
    """Random crop box over an image of shape [h, w, c]: (offset_y, offset_x, h, w).

    min_object_covered is 0 (TF's official pipeline uses 0.1, which with the whole-image box
    raises the lower area bound to 0.1): the area range alone is [0.08, 1], as ours.
    """
    whole = tf.constant([0.0, 0.0, 1.0, 1.0], dtype=tf.float32, shape=[1, 1, 4])
    begin, size, _ = tf.image.sample_distorted_bounding_box(
        shape, bounding_boxes=whole, min_object_covered=0.0, aspect_ratio_range=ASPECT,
        area_range=(MIN_AREA, 1.0), max_attempts=100, use_image_if_no_bounding_boxes=True)
    offset_y, offset_x, _ = tf.unstack(begin)
    height, width, _ = tf.unstack(size)
    return offset_y, offset_x, height, width


def make_train_map(px, crop_op):
    def preprocess(record):
        encoded, label = parse(record)
        if crop_op == "decode_and_crop":
            offset_y, offset_x, height, width = sample_box(tf.image.extract_jpeg_shape(encoded))
            window = tf.stack([offset_y, offset_x, height, width])
            image = tf.image.decode_and_crop_jpeg(encoded, window, channels=3)
        else:
            image = tf.io.decode_jpeg(encoded, channels=3)
            offset_y, offset_x, height, width = sample_box(tf.shape(image))
            image = tf.image.crop_to_bounding_box(image, offset_y, offset_x, height, width)
        image = tf.image.resize(image, [px, px], method=tf.image.ResizeMethod.BILINEAR)
        image = tf.image.random_flip_left_right(image)
        image = tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)
        return image, label
    return preprocess


def decode_only(record):
    encoded, label = parse(record)
    image = tf.io.decode_jpeg(encoded, channels=3)
    return tf.reduce_sum(tf.cast(image[0, 0], tf.int32)), label


def build(args):
    files = sorted(glob.glob(os.path.join(args.records, args.prefix + "-*")))
    if not files:
        raise SystemExit("error: %s: no %s-* shards" % (args.records, args.prefix))
    ds = tf.data.Dataset.from_tensor_slices(files).shuffle(len(files), seed=1)
    ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(len(files), 8),
                       num_parallel_calls=args.threads, deterministic=False)
    ds = ds.shuffle(SHUFFLE_BUFFER, seed=2).repeat()
    fn = make_train_map(args.px, args.crop_op) if args.mode == "train" else decode_only
    ds = ds.map(fn, num_parallel_calls=args.threads, deterministic=False)
    ds = ds.batch(args.batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.threading.private_threadpool_size = args.threads
    options.threading.max_intra_op_parallelism = 1
    options.deterministic = False
    return ds.with_options(options)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", required=True)
    ap.add_argument("--prefix", default="train")
    ap.add_argument("--px", type=int, default=128)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--mode", choices=["train", "decode"], default="train")
    ap.add_argument("--crop-op", choices=["decode_and_crop", "decode_then_crop"], default="decode_and_crop")
    args = ap.parse_args()

    batches = iter(build(args))
    warm_end = time.perf_counter() + args.warmup
    while time.perf_counter() < warm_end:
        next(batches)
    images = 0
    start = time.perf_counter()
    end = start + args.seconds
    while True:
        images_batch, _ = next(batches)
        images += int(images_batch.shape[0])
        now = time.perf_counter()
        if now >= end:
            break
    seconds = now - start
    print(json.dumps({"images_per_s": images / seconds, "images": images, "seconds": seconds,
                      "mode": args.mode, "px": args.px, "crop_op": args.crop_op}))


if __name__ == "__main__":
    main()
