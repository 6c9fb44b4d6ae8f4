"""Reads ImageNet shards the way TensorFlow's ResNet input functions do: read_imagenet.py FILE...

Parses each record with the build_imagenet_data.py feature spec, decodes the JPEG, and prints a
JSON list of what it found (labels, synsets, sizes, decoded shape, boxes).
"""
import json
import sys

import tensorflow as tf

SPEC = {
    "image/encoded": tf.io.FixedLenFeature([], tf.string, default_value=""),
    "image/height": tf.io.FixedLenFeature([], tf.int64, default_value=-1),
    "image/width": tf.io.FixedLenFeature([], tf.int64, default_value=-1),
    "image/colorspace": tf.io.FixedLenFeature([], tf.string, default_value=""),
    "image/channels": tf.io.FixedLenFeature([], tf.int64, default_value=-1),
    "image/class/label": tf.io.FixedLenFeature([], tf.int64, default_value=-1),
    "image/class/synset": tf.io.FixedLenFeature([], tf.string, default_value=""),
    "image/class/text": tf.io.FixedLenFeature([], tf.string, default_value=""),
    "image/format": tf.io.FixedLenFeature([], tf.string, default_value=""),
    "image/filename": tf.io.FixedLenFeature([], tf.string, default_value=""),
    "image/object/bbox/xmin": tf.io.VarLenFeature(tf.float32),
    "image/object/bbox/ymin": tf.io.VarLenFeature(tf.float32),
    "image/object/bbox/xmax": tf.io.VarLenFeature(tf.float32),
    "image/object/bbox/ymax": tf.io.VarLenFeature(tf.float32),
    "image/object/bbox/label": tf.io.VarLenFeature(tf.int64),
}


def main():
    out = []
    for serialized in tf.data.TFRecordDataset(sys.argv[1:]):
        f = tf.io.parse_single_example(serialized, SPEC)
        image = tf.io.decode_jpeg(f["image/encoded"], channels=3)
        text = lambda k: f[k].numpy().decode()
        boxes = [[float(v) for v in f[f"image/object/bbox/{c}"].values.numpy()]
                 for c in ("xmin", "ymin", "xmax", "ymax")]
        out.append({
            "label": int(f["image/class/label"]),
            "synset": text("image/class/synset"),
            "text": text("image/class/text"),
            "filename": text("image/filename"),
            "format": text("image/format"),
            "colorspace": text("image/colorspace"),
            "channels": int(f["image/channels"]),
            "height": int(f["image/height"]),
            "width": int(f["image/width"]),
            "decoded_shape": [int(d) for d in image.shape],
            "encoded_len": len(f["image/encoded"].numpy()),
            "boxes": [list(b) for b in zip(*boxes)],
            "box_labels": [int(v) for v in f["image/object/bbox/label"].values.numpy()],
        })
    print(json.dumps(out))


if __name__ == "__main__":
    main()
