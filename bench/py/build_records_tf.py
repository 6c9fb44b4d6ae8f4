"""Reference for `build-records`: what TensorFlow's build_imagenet_data.py does, in TF 2.

Our own rewrite of that script's behaviour (not its code), so the bench compares like with like:
  1. synsets = sorted sub-folders of <input>/train; label = 1-based position (0 is background);
     validation must use the same synsets.
  2. every split's file list is shuffled with a fixed seed (12345, as the original) before sharding.
  3. each image's bytes are read whole; PNGs disguised as JPEG and JPEGs TensorFlow cannot decode
     as RGB are re-encoded to RGB JPEG; every image is decoded with tf.io.decode_jpeg to learn its
     height and width (the original does the same through a session-backed ImageCoder).
  4. a tf.train.Example with the feature keys of TensorFlow's build_imagenet_data.py is written
     through tf.io.TFRecordWriter to <output>/<split>-00000-of-0000N.
  5. shards are split into contiguous ranges, one range per thread, as the original does.
Prints one JSON line: {"images": n, "bytes": output bytes, "seconds": wall time of steps 1-5,
"reencoded": k, "skipped": s}. The time excludes interpreter start-up and `import tensorflow`.
"""
import argparse
import json
import os
import random
import threading
import time

import tensorflow as tf

PNG_MAGIC = b"\x89PNG"
SHUFFLE_SEED = 12345


def list_split(input_dir, split, synsets):
    """(path, synset, label) for every file of one split, in sorted order."""
    files = []
    for label, synset in enumerate(synsets, start=1):
        folder = os.path.join(input_dir, split, synset)
        if not os.path.isdir(folder):
            continue
        for name in sorted(os.listdir(folder)):
            files.append((os.path.join(folder, name), synset, label))
    return files


def read_metadata(path):
    texts = {}
    if path and os.path.exists(path):
        with open(path) as f:
            for line in f:
                parts = line.rstrip("\n").split("\t", 1)
                if len(parts) == 2:
                    texts[parts[0]] = parts[1]
    return texts


def int64_feature(values):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=values))


def float_feature(values):
    return tf.train.Feature(float_list=tf.train.FloatList(value=values))


def bytes_feature(values):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))


def process_image(path):
    """(jpeg bytes, height, width, reencoded) or None when the file is not a decodable image."""
    with open(path, "rb") as f:
        data = f.read()
    reencoded = False
    try:
        if data.startswith(PNG_MAGIC):
            raise ValueError("PNG saved as JPEG")
        image = tf.io.decode_jpeg(data, channels=3)
    except (tf.errors.InvalidArgumentError, ValueError):
        try:
            image = tf.io.decode_image(data, channels=3, expand_animations=False)
        except tf.errors.InvalidArgumentError:
            return None
        data = tf.io.encode_jpeg(image, format="rgb", quality=100).numpy()
        reencoded = True
    height, width = int(image.shape[0]), int(image.shape[1])
    return data, height, width, reencoded


def make_example(path, synset, label, text, data, height, width):
    feature = {
        "image/height": int64_feature([height]),
        "image/width": int64_feature([width]),
        "image/colorspace": bytes_feature([b"RGB"]),
        "image/channels": int64_feature([3]),
        "image/class/label": int64_feature([label]),
        "image/class/synset": bytes_feature([synset.encode()]),
        "image/class/text": bytes_feature([text.encode()]),
        "image/object/bbox/xmin": float_feature([]),
        "image/object/bbox/xmax": float_feature([]),
        "image/object/bbox/ymin": float_feature([]),
        "image/object/bbox/ymax": float_feature([]),
        "image/object/bbox/label": int64_feature([]),
        "image/format": bytes_feature([b"JPEG"]),
        "image/filename": bytes_feature([os.path.basename(path).encode()]),
        "image/encoded": bytes_feature([data]),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature))


def write_shards(files, split, shard_ids, num_shards, output_dir, texts, counts, lock):
    """One thread's work: the shards in shard_ids, each a contiguous slice of files."""
    bounds = [len(files) * s // num_shards for s in range(num_shards + 1)]
    done = reencoded = skipped = 0
    for shard in shard_ids:
        name = "%s-%05d-of-%05d" % (split, shard, num_shards)
        with tf.io.TFRecordWriter(os.path.join(output_dir, name)) as writer:
            for path, synset, label in files[bounds[shard]:bounds[shard + 1]]:
                result = process_image(path)
                if result is None:
                    skipped += 1
                    continue
                data, height, width, was_reencoded = result
                reencoded += was_reencoded
                example = make_example(path, synset, label, texts.get(synset, ""), data, height, width)
                writer.write(example.SerializeToString())
                done += 1
    with lock:
        counts["images"] += done
        counts["reencoded"] += reencoded
        counts["skipped"] += skipped


def process_split(input_dir, output_dir, split, synsets, num_shards, threads, texts, counts):
    files = list_split(input_dir, split, synsets)
    if not files:
        return
    random.Random(SHUFFLE_SEED).shuffle(files)
    threads = max(1, min(threads, num_shards))
    ranges = [list(range(num_shards * t // threads, num_shards * (t + 1) // threads)) for t in range(threads)]
    lock = threading.Lock()
    workers = [
        threading.Thread(target=write_shards, args=(files, split, ids, num_shards, output_dir, texts, counts, lock))
        for ids in ranges
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", required=True, help="ImageFolder root holding train/ and validation/")
    ap.add_argument("--output", required=True)
    ap.add_argument("--train-shards", type=int, default=1024)
    ap.add_argument("--validation-shards", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--metadata", default=None, help="synset<TAB>text file (default: <input>/../metadata.txt)")
    args = ap.parse_args()

    start = time.perf_counter()
    train_dir = os.path.join(args.input, "train")
    if not os.path.isdir(train_dir):
        raise SystemExit("error: %s: no train/ folder" % args.input)
    synsets = sorted(d for d in os.listdir(train_dir) if os.path.isdir(os.path.join(train_dir, d)))
    metadata = args.metadata or os.path.join(os.path.dirname(os.path.abspath(args.input)), "metadata.txt")
    texts = read_metadata(metadata)
    os.makedirs(args.output, exist_ok=True)
    counts = {"images": 0, "reencoded": 0, "skipped": 0}
    for split, shards in (("validation", args.validation_shards), ("train", args.train_shards)):
        process_split(args.input, args.output, split, synsets, shards, args.threads, texts, counts)
    seconds = time.perf_counter() - start
    out_bytes = sum(
        os.path.getsize(os.path.join(args.output, n))
        for n in os.listdir(args.output)
        if n.startswith(("train-", "validation-"))
    )
    print(json.dumps({"images": counts["images"], "bytes": out_bytes, "seconds": seconds,
                      "reencoded": counts["reencoded"], "skipped": counts["skipped"]}))


if __name__ == "__main__":
    main()
