"""Writes TFRecord files with TensorFlow's own writer: write_records.py OUTDIR JPEG

OUTDIR/raw.tfrecord: raw payloads; payload i is bytes((i * 31 + j) % 251 for j in range(n_i)).
OUTDIR/examples.tfrecord: tf.train.Examples with every feature kind, then one ImageNet Example
built like build_imagenet_data.py around the JPEG file given.
Prints a JSON description of what was written.
"""
import json
import sys

import tensorflow as tf

SIZES = [0, 1, 2, 100, 65536, 1 << 20, 7]


def payload(i, n):
    return bytes((i * 31 + j) % 251 for j in range(n))


def feature(kind, values):
    if kind == "bytes":
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))
    if kind == "float":
        return tf.train.Feature(float_list=tf.train.FloatList(value=values))
    return tf.train.Feature(int64_list=tf.train.Int64List(value=values))


def generic_features(i):
    """Example i's features: key -> (kind, values), every kind, with and without values."""
    return {
        "b": ("bytes", [b"x" * i, "\u00e9t\u00e9".encode()]),
        "b/empty": ("bytes", []),
        "f": ("float", [0.5 * i, -1.25, 3.0e38]),
        "f/empty": ("float", []),
        "i": ("int64", [i, -(2 ** 63), 2 ** 63 - 1]),
        "i/empty": ("int64", []),
    }


def main():
    out, jpeg_path = sys.argv[1], sys.argv[2]
    with tf.io.TFRecordWriter(f"{out}/raw.tfrecord") as w:
        for i, n in enumerate(SIZES):
            w.write(payload(i, n))

    generic = [tf.train.Example(features=tf.train.Features(
        feature={k: feature(kind, v) for k, (kind, v) in generic_features(i).items()}))
        for i in range(3)]
    with open(jpeg_path, "rb") as f:
        jpeg = f.read()
    shape = tf.io.decode_jpeg(jpeg).shape
    imagenet = tf.train.Example(features=tf.train.Features(feature={
        "image/height": feature("int64", [shape[0]]),
        "image/width": feature("int64", [shape[1]]),
        "image/colorspace": feature("bytes", [b"RGB"]),
        "image/channels": feature("int64", [3]),
        "image/class/label": feature("int64", [417]),
        "image/class/synset": feature("bytes", [b"n02690373"]),
        "image/class/text": feature("bytes", [b"airliner"]),
        "image/object/bbox/xmin": feature("float", [0.25]),
        "image/object/bbox/xmax": feature("float", [0.75]),
        "image/object/bbox/ymin": feature("float", [0.125]),
        "image/object/bbox/ymax": feature("float", [0.5]),
        "image/object/bbox/label": feature("int64", [417]),
        "image/format": feature("bytes", [b"JPEG"]),
        "image/filename": feature("bytes", [b"n02690373_1.JPEG"]),
        "image/encoded": feature("bytes", [jpeg]),
    }))
    with tf.io.TFRecordWriter(f"{out}/examples.tfrecord") as w:
        for ex in generic + [imagenet]:
            w.write(ex.SerializeToString())
    print(json.dumps({
        "raw_sizes": SIZES,
        "generic": [{k: {"kind": f"{kind}_list", "values": [v.hex() if isinstance(v, bytes) else v
                                                   for v in vals]}
                     for k, (kind, vals) in generic_features(i).items()} for i in range(3)],
        "imagenet": {"height": int(shape[0]), "width": int(shape[1]), "label": 417,
                     "encoded_len": len(jpeg)},
    }))


if __name__ == "__main__":
    main()
