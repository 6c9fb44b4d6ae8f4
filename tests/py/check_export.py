"""Loads a dawnrun SavedModel with TensorFlow alone (no dawnrun code), runs both signatures, and
scores serving_default on validation TFRecords fed as raw JPEG bytes.

usage: check_export.py EXPORT_DIR RECORD_FILE... [--pixels PIXELS_FILE]
Prints one JSON object: top1/top5 in percent, image count, the synsets, and (with --pixels, a
file written by the data crate's `eval-batches` tool) the mean absolute difference between the
export's decoded+cropped images and the pipeline's.
"""
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np
import tensorflow as tf


def records(files):
    feats = {
        "image/encoded": tf.io.FixedLenFeature([], tf.string),
        "image/class/label": tf.io.FixedLenFeature([], tf.int64),
        "image/filename": tf.io.FixedLenFeature([], tf.string),
    }
    ds = tf.data.TFRecordDataset(files).map(lambda r: tf.io.parse_single_example(r, feats))
    return ds.batch(32)


def main():
    args = sys.argv[1:]
    pixels = None
    if "--pixels" in args:
        i = args.index("--pixels")
        pixels = args[i + 1]
        del args[i : i + 2]
    export, files = args[0], args[1:]
    model = tf.saved_model.load(export)
    serve = model.signatures["serving_default"]
    by_images = model.signatures["images"]
    top1 = top5 = n = 0
    first = None
    for batch in records(files):
        out = serve(jpegs=batch["image/encoded"])
        classes = out["classes"].numpy()
        probs = out["probabilities"].numpy()
        assert classes.shape[0] == probs.shape[0]
        assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-4)
        labels = batch["image/class/label"].numpy() - 1  # 1-based records -> 0-based classes
        top1 += int((classes[:, 0] == labels).sum())
        top5 += int((classes == labels[:, None]).any(axis=1).sum())
        n += len(labels)
        if first is None:
            first = batch
    # The images signature on uint8 input of the evaluation size.
    size = None
    dummy = np.zeros((2, 32, 32, 3), np.uint8)
    out = by_images(images=tf.constant(dummy))
    assert out["probabilities"].shape[0] == 2 and out["classes"].shape[0] == 2
    result = {
        "top1": 100.0 * top1 / n,
        "top5": 100.0 * top5 / n,
        "images": n,
        "classes_shape": list(out["classes"].shape),
        "signatures": sorted(model.signatures.keys()),
    }
    with open(os.path.join(export, "assets", "synsets.txt")) as f:
        result["synsets"] = f.read().split()
    if pixels:
        result["pixels"] = compare_pixels(model, pixels)
    print(json.dumps(result))


def compare_pixels(model, path):
    """Mean absolute difference between the export's preprocessing (the `images` default that
    serving_default computes) and the pipeline's crops of the same JPEGs."""
    with open(path) as f:
        dump = json.load(f)
    diffs = []
    # The graph's preprocessing alone: prune serving/jpegs -> images.
    fn = model.prune("serving/jpegs:0", "images:0")
    for item in dump["images"]:
        jpeg = bytes.fromhex(item["jpeg_hex"])
        ours = np.array(item["pixels"], np.float32).reshape(item["height"], item["width"], 3)
        theirs = fn(tf.constant([jpeg])).numpy()[0].astype(np.float32)
        diffs.append(float(np.abs(ours - theirs).mean()))
    return {"mean_abs_diff": float(np.mean(diffs)), "max_image_diff": float(np.max(diffs)), "n": len(diffs)}


if __name__ == "__main__":
    main()
