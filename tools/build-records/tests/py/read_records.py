"""Reads build-records shards with Python TensorFlow, as an ImageNet input pipeline would.

Usage: read_records.py <records dir> <expectations.json>

expectations.json (written by the Rust test):
  {"synsets": [label order], "texts": {synset: text},
   "splits": {split: {file name: synset}}, "bboxes": {file name: [[xmin, ymin, xmax, ymax], ...]}}

Every record must parse with the build_imagenet_data feature spec, its JPEG must decode with
tf.io.decode_jpeg to (height, width, 3) as stored, its label must be the synset's 1-based
position, and each split must hold exactly the expected files, once each. Prints one JSON line
of per-split counts on success; exits 1 with the first problem otherwise.
"""
import glob
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf  # noqa: E402

FEATURES = {
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


def fail(message):
    print(f"read_records.py: {message}", file=sys.stderr)
    sys.exit(1)


def check_split(records_dir, split, expected, want):
    shards = sorted(glob.glob(os.path.join(records_dir, f"{split}-*-of-*")))
    shards = [s for s in shards if not s.endswith(".tmp")]
    if not shards:
        fail(f"no {split} shards in {records_dir}")
    seen = {}
    for serialized in tf.data.TFRecordDataset(shards):
        ex = tf.io.parse_single_example(serialized, FEATURES)
        name = ex["image/filename"].numpy().decode()
        synset = ex["image/class/synset"].numpy().decode()
        where = f"{split} record {name!r}"
        if name in seen:
            fail(f"{where}: stored twice")
        seen[name] = synset
        if name not in expected:
            fail(f"{where}: not an expected file")
        if synset != expected[name]:
            fail(f"{where}: synset {synset}, expected {expected[name]}")
        label = int(ex["image/class/label"])
        if label != want["synsets"].index(synset) + 1:
            fail(f"{where}: label {label} for {synset}, expected {want['synsets'].index(synset) + 1}")
        text = ex["image/class/text"].numpy().decode()
        if text != want["texts"].get(synset, ""):
            fail(f"{where}: text {text!r}")
        for key, value in [("image/colorspace", b"RGB"), ("image/format", b"JPEG")]:
            if ex[key].numpy() != value:
                fail(f"{where}: {key} = {ex[key].numpy()!r}")
        if int(ex["image/channels"]) != 3:
            fail(f"{where}: channels {int(ex['image/channels'])}")
        image = tf.io.decode_jpeg(ex["image/encoded"], channels=3)
        shape = tuple(image.shape)
        stored = (int(ex["image/height"]), int(ex["image/width"]), 3)
        if shape != stored:
            fail(f"{where}: decoded shape {shape}, record says {stored}")
        boxes = [
            tf.sparse.to_dense(ex[f"image/object/bbox/{k}"]).numpy().tolist()
            for k in ("xmin", "ymin", "xmax", "ymax")
        ]
        got = [list(b) for b in zip(*boxes)]
        want_boxes = want["bboxes"].get(name, [])
        if len(got) != len(want_boxes) or any(
            abs(a - b) > 1e-6 for g, w in zip(got, want_boxes) for a, b in zip(g, w)
        ):
            fail(f"{where}: boxes {got}, expected {want_boxes}")
        box_labels = tf.sparse.to_dense(ex["image/object/bbox/label"]).numpy().tolist()
        if box_labels != [label] * len(want_boxes):
            fail(f"{where}: box labels {box_labels}")
    missing = sorted(set(expected) - set(seen))
    if missing:
        fail(f"{split}: {len(missing)} expected files missing, first {missing[0]}")
    return len(seen)


def main():
    if len(sys.argv) != 3:
        fail("usage: read_records.py <records dir> <expectations.json>")
    records_dir, expectations = sys.argv[1], sys.argv[2]
    with open(expectations) as f:
        want = json.load(f)
    counts = {
        split: check_split(records_dir, split, expected, want)
        for split, expected in want["splits"].items()
    }
    print(json.dumps(counts, sort_keys=True))


if __name__ == "__main__":
    main()
