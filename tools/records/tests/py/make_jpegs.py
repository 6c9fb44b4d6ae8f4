"""Writes small real JPEGs for the interop tests: make_jpegs.py OUTDIR W1xH1 W2xH2 ...

Prints a JSON list of {"path", "width", "height"} on stdout.
"""
import json
import sys

from PIL import Image


def main():
    out, sizes = sys.argv[1], sys.argv[2:]
    made = []
    for i, size in enumerate(sizes):
        width, height = (int(v) for v in size.split("x"))
        img = Image.new("RGB", (width, height))
        # A gradient, so the JPEG is not trivially flat.
        img.putdata([((x * 7 + i * 40) % 256, (y * 5) % 256, (x + y) % 256)
                     for y in range(height) for x in range(width)])
        path = f"{out}/img{i}.jpg"
        img.save(path, "JPEG", quality=90)
        made.append({"path": path, "width": width, "height": height})
    print(json.dumps(made))


if __name__ == "__main__":
    main()
