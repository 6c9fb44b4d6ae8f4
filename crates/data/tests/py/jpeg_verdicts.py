"""Damaged and valid JPEGs with TensorFlow's verdict on each: jpeg_verdicts.py OUTDIR

Makes valid JPEGs with PIL (baseline, progressive, restart markers, grayscale, CMYK, EXIF,
4:2:0 and 4:4:4, odd sizes, trailing bytes after EOI) and damaged copies of each (truncated at
several fractions, garbage bytes in the middle of the entropy-coded data, EOI removed, flipped
bytes), writes them to OUTDIR, runs `tf.io.decode_jpeg` on every file and prints a JSON list of
{"path", "kind", "tf_ok", "tf_error"} on stdout. PIL's own verdict (`load()` raising) is
recorded as "pil_ok" for the reader's information only; TensorFlow's is the contract.
"""
import io
import json
import os
import random
import sys

from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf  # noqa: E402


def picture(mode, width, height, seed):
    rng = random.Random(seed)
    img = Image.new("RGB", (width, height))
    # Smooth gradients plus noise: realistic entropy data, not trivially flat.
    img.putdata([((x * 3 + rng.randrange(40)) % 256, (y * 2 + rng.randrange(40)) % 256,
                  (x + y + rng.randrange(40)) % 256)
                 for y in range(height) for x in range(width)])
    return img if mode == "RGB" else img.convert(mode)


def encode(img, **opts):
    out = io.BytesIO()
    img.save(out, "JPEG", **opts)
    return out.getvalue()


def exif_bytes():
    exif = Image.Exif()
    exif[0x010F] = "dawnrun test camera"  # Make
    exif[0x0112] = 1  # Orientation
    return exif.tobytes()


def valid_files():
    yield "baseline", encode(picture("RGB", 96, 64, 1), quality=90)
    yield "baseline_444", encode(picture("RGB", 80, 48, 2), quality=95, subsampling=0)
    yield "baseline_odd", encode(picture("RGB", 37, 23, 3), quality=85)
    yield "progressive", encode(picture("RGB", 96, 72, 4), quality=90, progressive=True)
    yield "restart", encode(picture("RGB", 128, 64, 5), quality=90, restart_marker_blocks=2)
    yield "restart_rows", encode(picture("RGB", 64, 96, 6), quality=90, restart_marker_rows=1)
    yield "grayscale", encode(picture("L", 72, 40, 7), quality=90)
    yield "grayscale_prog", encode(picture("L", 50, 50, 8), quality=90, progressive=True)
    yield "cmyk", encode(picture("CMYK", 48, 40, 9), quality=90)
    yield "exif", encode(picture("RGB", 64, 48, 10), quality=90, exif=exif_bytes())
    yield "optimized", encode(picture("RGB", 64, 64, 11), quality=75, optimize=True)
    yield "tiny", encode(picture("RGB", 1, 1, 12), quality=90)


def entropy_start(data):
    """Offset just after the first SOS segment's header."""
    i = 2
    while i + 4 <= len(data):
        marker = data[i + 1]
        length = (data[i + 2] << 8) | data[i + 3]
        if marker == 0xDA:
            return i + 2 + length
        i += 2 + length
    raise ValueError("no SOS")


def damaged(name, data, seed):
    rng = random.Random(seed)
    start = entropy_start(data)
    end = len(data) - 2  # the EOI marker
    for frac in (0.4, 0.9):
        yield f"{name}.trunc{int(frac * 100)}", data[:int(len(data) * frac)]
    yield f"{name}.no_eoi", data[:end]
    yield f"{name}.trunc_last_byte", data[:-1]
    mid = (start + end) // 2
    if end - start > 16:
        # Garbage inserted into the middle of the entropy-coded data (no 0xFF, so no marker).
        garbage = bytes(rng.randrange(0, 0xFF) for _ in range(24))
        yield f"{name}.garbage_insert", data[:mid] + garbage + data[mid:]
        # Garbage overwriting the middle of the entropy-coded data.
        over = bytes(rng.randrange(0, 0xFF) for _ in range(min(24, (end - start) // 3)))
        yield f"{name}.garbage_overwrite", data[:mid] + over + data[mid + len(over):]
        # Random bytes of any value, 0xFF included: stray markers inside the scan.
        wild = bytes(rng.randrange(0, 256) for _ in range(32))
        yield f"{name}.garbage_any", data[:mid] + wild + data[mid:]
    yield f"{name}.trailing", data + b"\x00" * 7 + b"trailing bytes after EOI"


def tf_verdict(data):
    try:
        tf.io.decode_jpeg(data, channels=3).numpy()
        return True, ""
    except Exception as e:  # InvalidArgumentError and friends
        return False, str(e).strip().splitlines()[0][:200]


def pil_verdict(data):
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
        return True
    except Exception:
        return False


def main():
    out = sys.argv[1]
    files = []
    for seed, (name, data) in enumerate(valid_files()):
        files.append((name, "valid", data))
        for dname, ddata in damaged(name, data, seed):
            files.append((dname, dname.split(".", 1)[1], ddata))
    made = []
    for name, kind, data in files:
        path = os.path.join(out, name + ".jpg")
        with open(path, "wb") as f:
            f.write(data)
        ok, err = tf_verdict(data)
        made.append({"path": path, "kind": kind, "tf_ok": ok, "tf_error": err,
                     "pil_ok": pil_verdict(data)})
    print(json.dumps(made))


if __name__ == "__main__":
    main()
