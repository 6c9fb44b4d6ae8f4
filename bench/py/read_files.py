"""The I/O limit for `build-records`: read every input file once and throw the bytes away.

Walks <input>/{train,validation}/<synset>/* and reads each file whole with --threads threads
(Python's file reads release the GIL). The page cache is warmed first by one untimed pass, so the
figure is the cost of opening and reading already cached files: the most any converter could reach
on this machine without skipping work. Prints {"images": n, "bytes": b, "seconds": s}.
"""
import argparse
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor


def list_files(root):
    files = []
    for split in ("train", "validation"):
        split_dir = os.path.join(root, split)
        if not os.path.isdir(split_dir):
            continue
        for synset in sorted(os.listdir(split_dir)):
            folder = os.path.join(split_dir, synset)
            files.extend(os.path.join(folder, n) for n in sorted(os.listdir(folder)))
    return files


def read_all(paths):
    total = 0
    for p in paths:
        with open(p, "rb") as f:
            total += len(f.read())
    return total


def timed_pass(files, threads):
    start = time.perf_counter()
    parts = [files[i::threads] for i in range(threads)]
    with ThreadPoolExecutor(threads) as pool:
        total = sum(pool.map(read_all, parts))
    return total, time.perf_counter() - start


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", required=True)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    start = time.perf_counter()
    files = list_files(args.input)
    listing = time.perf_counter() - start
    timed_pass(files, args.threads)  # warm the page cache
    total, seconds = timed_pass(files, args.threads)
    print(json.dumps({"images": len(files), "bytes": total, "seconds": seconds + listing}))


if __name__ == "__main__":
    main()
