"""Write a small ImageFolder tree of JPEGs with pillow.

The bench's stand-in for `make-synthetic` when that binary is missing, and the data of the
harness's own tests. Layout matches make-synthetic: <out>/<size>/{train,validation}/<synset>/
<synset>_<i>.JPEG, short side = size, aspect ratio varied in [3/4, 4/3]. Deterministic from --seed.
The pictures (a coloured box and an ellipse on noise) only need to be real JPEGs of realistic size.
"""
import argparse
import json
import os
import time

import numpy as np
from PIL import Image, ImageDraw


def draw(rng, width, height, class_index):
    noise = rng.integers(0, 255, size=(height, width, 3), dtype=np.uint8)
    img = Image.fromarray(noise)
    pen = ImageDraw.Draw(img)
    hue = (class_index * 53) % 256
    for _ in range(3):
        x0, y0 = int(rng.integers(0, width // 2)), int(rng.integers(0, height // 2))
        x1, y1 = x0 + int(rng.integers(8, width // 2)), y0 + int(rng.integers(8, height // 2))
        colour = (hue, int(rng.integers(0, 255)), 255 - hue)
        if class_index % 2:
            pen.ellipse([x0, y0, x1, y1], fill=colour)
        else:
            pen.rectangle([x0, y0, x1, y1], fill=colour)
    return img


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", required=True)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--train-per-class", type=int, default=260)
    ap.add_argument("--val-per-class", type=int, default=50)
    ap.add_argument("--sizes", default="160,320")
    ap.add_argument("--seed", type=int, default=2018)
    ap.add_argument("--quality", type=int, default=90)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    start = time.perf_counter()
    count = 0
    synsets = ["n%08d" % (1000000 + 7 * c) for c in range(args.classes)]
    for split, per_class in (("train", args.train_per_class), ("validation", args.val_per_class)):
        for c, synset in enumerate(synsets):
            for i in range(per_class):
                rng = np.random.default_rng([args.seed, len(split), c, i])
                aspect = float(rng.uniform(0.75, 4.0 / 3.0))
                big = max(sizes)
                w, h = (int(big * aspect), big) if aspect >= 1 else (big, int(big / aspect))
                img = draw(rng, w, h, c)
                for size in sizes:
                    folder = os.path.join(args.out, str(size), split, synset)
                    os.makedirs(folder, exist_ok=True)
                    scale = size / big
                    small = img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR)
                    small.save(os.path.join(folder, "%s_%d.JPEG" % (synset, i)), "JPEG", quality=args.quality)
                    count += 1
    with open(os.path.join(args.out, "synsets.txt"), "w") as f:
        f.write("".join(s + "\n" for s in synsets))
    print(json.dumps({"images": count, "seconds": time.perf_counter() - start}))


if __name__ == "__main__":
    main()
