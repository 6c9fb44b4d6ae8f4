"""The index DALI's tfrecord2idx would write, computed independently: tfrecord2idx.py FILE

Walks the file reading each u64 length and skipping length + 8 bytes (length CRC, data CRC);
prints "offset size" lines, size being the whole framed record, exactly as DALI does.
"""
import os
import struct
import sys


def main():
    path = sys.argv[1]
    size = os.path.getsize(path)
    lines = []
    with open(path, "rb") as f:
        offset = 0
        while offset < size:
            (length,) = struct.unpack("<Q", f.read(8))
            f.seek(offset + 8 + 4 + length + 4)
            lines.append(f"{offset} {f.tell() - offset}")
            offset = f.tell()
    sys.stdout.write("".join(line + "\n" for line in lines))


if __name__ == "__main__":
    main()
