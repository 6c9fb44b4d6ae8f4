"""Photo-like JPEGs in the imagenet-sz layout, for the pipeline benchmark's second data set.

    make_photos.py --out DIR [--classes 10] [--train-per-class 150] [--val-per-class 10]
                   [--sizes 160,320] [--seed 7]

Writes DIR/<size>/{train,validation}/<synset>/<synset>_<i>.JPEG for each short side in --sizes,
the same picture at every size. Where make-synthetic draws flat-coloured learnable shapes (all
4:2:0, quality 90, baseline), these look more like camera photos to a JPEG decoder: smooth
lighting over the whole frame, objects with soft and hard edges, fine texture and sensor noise;
aspect ratios from 3:4 to 16:9 (mostly 4:3 and 3:2); and a mix of encoder settings drawn per
image: quality 60-95, 4:2:0 (70%) / 4:2:2 (15%) / 4:4:4 (15%) chroma subsampling, 15%
progressive, 5% grayscale, 30% with optimised Huffman tables. Deterministic for a seed.

`photo(rng, width, height)` is also used by the decoder tests' corpus
(crates/data/tests/py/jpeg_crops.py).
"""
import argparse
import io
import os

import numpy as np
from PIL import Image

ASPECTS = [(4, 3)] * 4 + [(3, 2)] * 3 + [(3, 4)] * 2 + [(16, 9), (1, 1), (2, 3)]


def photo(rng, width, height):
    """An RGB PIL image of `width` x `height` that decodes like a photo (numpy Generator rng)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    u, v = x / max(width, 1), y / max(height, 1)
    img = np.zeros((height, width, 3), np.float32)
    # Lighting: a few broad waves per channel around a base colour.
    base = rng.uniform(40, 200, 3)
    for c in range(3):
        img[..., c] = base[c]
        for _ in range(3):
            fx, fy = rng.uniform(0.2, 2.5, 2)
            phase = rng.uniform(0, 2 * np.pi)
            img[..., c] += rng.uniform(10, 35) * np.sin(2 * np.pi * (fx * u + fy * v) + phase)
    # Objects: ellipses and rectangles, some with soft edges.
    for _ in range(int(rng.integers(3, 8))):
        cx, cy = rng.uniform(0, 1, 2)
        rx, ry = rng.uniform(0.05, 0.35, 2)
        colour = rng.uniform(0, 255, 3)
        if rng.random() < 0.6:
            d = ((u - cx) / rx) ** 2 + ((v - cy) / ry) ** 2
        else:
            d = np.maximum(np.abs(u - cx) / rx, np.abs(v - cy) / ry) ** 2
        softness = rng.choice([0.02, 0.1, 0.4])
        alpha = np.clip((1.0 - d) / softness, 0.0, 1.0)[..., None] * rng.uniform(0.5, 1.0)
        img = img * (1 - alpha) + colour * alpha
    # Texture (foliage, fabric) and sensor noise.
    fx, fy = rng.uniform(0.05, 0.25, 2) * min(width, height)
    texture = np.sin(2 * np.pi * (fx * u + rng.uniform(0, 1))) * np.sin(2 * np.pi * (fy * v))
    img += rng.uniform(2, 10) * texture[..., None]
    img += rng.normal(0, rng.uniform(1, 4), img.shape)
    return Image.fromarray(np.clip(img + 0.5, 0, 255).astype(np.uint8), "RGB")


def encoder_settings(rng):
    """JPEG save options and the colour mode, drawn like a mixed photo collection."""
    r = rng.random()
    subsampling = 2 if r < 0.70 else (1 if r < 0.85 else 0)
    opts = {"quality": int(rng.integers(60, 96)), "subsampling": subsampling}
    if rng.random() < 0.15:
        opts["progressive"] = True
    if rng.random() < 0.30:
        opts["optimize"] = True
    mode = "L" if rng.random() < 0.05 else "RGB"
    return mode, opts


def encode(img, mode, opts):
    if mode != img.mode:
        img = img.convert(mode)
    if mode == "L":
        opts = {k: v for k, v in opts.items() if k != "subsampling"}
    out = io.BytesIO()
    img.save(out, "JPEG", **opts)
    return out.getvalue()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--train-per-class", type=int, default=150)
    ap.add_argument("--val-per-class", type=int, default=10)
    ap.add_argument("--sizes", default="160,320")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    synsets = ["n%08d" % (1000 + c) for c in range(args.classes)]
    count = 0
    for split, per_class in (("train", args.train_per_class), ("validation", args.val_per_class)):
        for c, synset in enumerate(synsets):
            for i in range(per_class):
                rng = np.random.default_rng([args.seed, split == "train", c, i])
                aw, ah = ASPECTS[int(rng.integers(len(ASPECTS)))]
                mode, opts = encoder_settings(rng)
                big = max(sizes)
                w, h = (big * aw // ah, big) if aw >= ah else (big, big * ah // aw)
                picture = photo(rng, w, h)
                for size in sizes:
                    sw, sh = (size * aw // ah, size) if aw >= ah else (size, size * ah // aw)
                    img = picture if (sw, sh) == (w, h) else picture.resize((sw, sh), Image.BILINEAR)
                    folder = os.path.join(args.out, str(size), split, synset)
                    os.makedirs(folder, exist_ok=True)
                    with open(os.path.join(folder, "%s_%d.JPEG" % (synset, i)), "wb") as f:
                        f.write(encode(img, mode, opts))
                count += 1
    with open(os.path.join(args.out, "synsets.txt"), "w") as f:
        f.write("".join(s + "\n" for s in synsets))
    print("wrote %d pictures x %d sizes to %s" % (count, len(sizes), args.out))


if __name__ == "__main__":
    main()
