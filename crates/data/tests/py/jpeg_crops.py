"""The decoder corpus with TensorFlow's crops: jpeg_crops.py OUTDIR

Makes JPEGs of the kinds real image sets hold, with PIL and many encoder settings: baseline and
progressive; 4:2:0, 4:2:2 and 4:4:4; grayscale (baseline and progressive); CMYK (Adobe,
inverted, as Photoshop and PIL write it); restart markers (every 1-2 MCUs and every MCU row);
optimised Huffman tables; EXIF; qualities 50-100; odd sizes (1x1, 1 px wide or high, sides not
multiples of 8 or 16) and larger ones. The pictures are photo-like (bench/py/make_photos.py's
`photo`).

For each file it picks crop boxes (the whole image, random-resized crops, boxes on the edges,
and boxes at least 2x, 4x and 8x the output size, which the crop path decodes at 1/2, 1/4, 1/8
scale) and an output size, and runs TensorFlow on each: `tf.image.decode_and_crop_jpeg` of the
box, then `tf.image.resize` bilinear to the output size, rounded to uint8. Where the box is more
than 2x the output in a direction, the reference resize is `antialias=True` (bilinear widened to
the scale, an area average): a two-tap resize then samples a few source pixels out of many and
aliases, and no decoder can be compared with that. The plain two-tap result is written too
("tf_plain"), for information. Writes the files and the raw TensorFlow pixels to OUTDIR and
prints a JSON list of
{"path", "name", "crops": [{"x", "y", "w", "h", "out_w", "out_h", "tf", "tf_plain"}]}.
"""
import io
import json
import os
import sys

import numpy as np
from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "..", "..", "bench", "py"))
import tensorflow as tf  # noqa: E402
from make_photos import photo  # noqa: E402


def encode(img, **opts):
    out = io.BytesIO()
    img.save(out, "JPEG", **opts)
    return out.getvalue()


def exif_bytes():
    exif = Image.Exif()
    exif[0x010F] = "dawnrun test camera"  # Make
    exif[0x0112] = 1  # Orientation
    return exif.tobytes()


def files():
    """(name, bytes) for every kind of JPEG in the corpus."""
    rng = np.random.default_rng(11)
    sizes = [(500, 375), (375, 500), (427, 320), (213, 160), (161, 120), (97, 61), (33, 17),
             (17, 33), (640, 480)]
    n = 0
    for w, h in sizes:
        pic = photo(rng, w, h)
        for sub, sub_name in ((2, "420"), (1, "422"), (0, "444")):
            for q in (50, 75, 90, 100) if (w, h) == (500, 375) else (90,):
                n += 1
                yield "%dx%d_%s_q%d" % (w, h, sub_name, q), encode(pic, quality=q, subsampling=sub)
            yield "%dx%d_%s_prog" % (w, h, sub_name), encode(pic, quality=85, subsampling=sub,
                                                            progressive=True)
        yield "%dx%d_gray" % (w, h), encode(pic.convert("L"), quality=90)
        yield "%dx%d_gray_prog" % (w, h), encode(pic.convert("L"), quality=90, progressive=True)
        yield "%dx%d_cmyk" % (w, h), encode(pic.convert("CMYK"), quality=92)
        yield "%dx%d_restart" % (w, h), encode(pic, quality=90, restart_marker_blocks=2)
        yield "%dx%d_restart_rows" % (w, h), encode(pic, quality=90, subsampling=0,
                                                    restart_marker_rows=1)
        yield "%dx%d_optimized_exif" % (w, h), encode(pic, quality=80, optimize=True,
                                                      exif=exif_bytes())
    for w, h in [(1, 1), (1, 40), (40, 1), (2, 3), (15, 9), (9, 15)]:
        pic = photo(rng, w, h)
        yield "%dx%d_420" % (w, h), encode(pic, quality=90)
        yield "%dx%d_444_prog" % (w, h), encode(pic, quality=90, subsampling=0, progressive=True)
        yield "%dx%d_gray" % (w, h), encode(pic.convert("L"), quality=90)


def boxes(rng, w, h):
    """(x, y, bw, bh, out_w, out_h) crop boxes and output sizes for a w x h image."""
    out = []
    small = max(1, min(w, h) // 3)
    out.append((0, 0, w, h, min(32, w), min(32, h)))
    out.append((0, 0, w, h, 24, 24))
    # Random-resized crops, as the training pipeline draws them.
    for _ in range(4):
        for _ in range(100):
            area = rng.uniform(0.08, 1.0) * w * h
            aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
            bw, bh = int(round(np.sqrt(area * aspect))), int(round(np.sqrt(area / aspect)))
            if 1 <= bw <= w and 1 <= bh <= h:
                x, y = int(rng.integers(0, w - bw + 1)), int(rng.integers(0, h - bh + 1))
                o = int(rng.choice([16, 32, 64]))
                out.append((x, y, bw, bh, o, o))
                break
    # Boxes on the right and bottom edges.
    out.append((w - small, h - small, small, small, 16, 16))
    out.append((w - small, 0, small, h, 16, 16))
    # Boxes 2x, 4x, 8x the output size (the scaled decodes).
    for f in (2, 4, 8):
        o = min(w, h) // f
        if o >= 4:
            bw, bh = o * f + int(rng.integers(0, max(1, w - o * f) // 2 + 1)), o * f
            bw = min(bw, w)
            x = int(rng.integers(0, w - bw + 1))
            y = int(rng.integers(0, h - bh + 1))
            out.append((x, y, bw, bh, o, o))
    return out


def main():
    outdir = sys.argv[1]
    rng = np.random.default_rng(5)
    listing = []
    for name, data in files():
        path = os.path.join(outdir, name + ".jpg")
        with open(path, "wb") as f:
            f.write(data)
        shape = tf.image.extract_jpeg_shape(data).numpy()
        h, w = int(shape[0]), int(shape[1])
        crops = []
        for k, (x, y, bw, bh, ow, oh) in enumerate(boxes(rng, w, h)):
            crop = tf.image.decode_and_crop_jpeg(data, [y, x, bh, bw], channels=3)
            entry = {"x": x, "y": y, "w": bw, "h": bh, "out_w": ow, "out_h": oh}
            shrinks = bw > 2 * ow or bh > 2 * oh
            for key, antialias in (("tf", shrinks), ("tf_plain", False)):
                img = tf.image.resize(crop, [oh, ow], method=tf.image.ResizeMethod.BILINEAR,
                                      antialias=antialias)
                img = tf.cast(tf.clip_by_value(tf.round(img), 0.0, 255.0), tf.uint8).numpy()
                raw = os.path.join(outdir, "%s.crop%d.%s.rgb" % (name, k, key))
                with open(raw, "wb") as f:
                    f.write(img.tobytes())
                entry[key] = raw
            crops.append(entry)
        listing.append({"path": path, "name": name, "crops": crops})
    json.dump(listing, sys.stdout)


if __name__ == "__main__":
    main()
