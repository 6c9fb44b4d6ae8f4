"""The box's own speed: a fixed float32 matrix product on one core, for the bench's header.

Usage: box_speed.py [--size N] [--blocks K] [--repeats R]

Multiplies two N x N float32 matrices K times per block, R blocks, and prints
{"gflops": the blocks' median rate, "gflops_blocks": [each block's rate]}. The caller pins the
process to a core (taskset) and runs one per core at once, so the figure moves with what the
bench's timed rows meet and the harness can neither see in /proc/stat nor in the load average:
a slower host clock, a neighbour VM on the same physical cores, memory bandwidth shared
with other tenants. numpy's BLAS runs on one thread here (set before numpy loads).
"""
import argparse
import json
import os
import statistics
import time

os.environ["OPENBLAS_NUM_THREADS"] = "1"
os.environ["OMP_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"
import numpy as np  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=768)
    ap.add_argument("--blocks", type=int, default=8, help="products per timed block")
    ap.add_argument("--repeats", type=int, default=5, help="timed blocks (after one untimed)")
    args = ap.parse_args()
    rng = np.random.default_rng(1)
    a = rng.standard_normal((args.size, args.size), dtype=np.float32)
    b = rng.standard_normal((args.size, args.size), dtype=np.float32)
    out = np.empty_like(a)
    flop = 2.0 * args.size ** 3 * args.blocks
    rates = []
    for i in range(args.repeats + 1):
        t0 = time.perf_counter()
        for _ in range(args.blocks):
            np.matmul(a, b, out=out)
        dt = time.perf_counter() - t0
        if i:  # the first block warms caches and the BLAS kernel choice
            rates.append(flop / dt / 1e9)
    print(json.dumps({"gflops": statistics.median(rates), "gflops_blocks": rates}))


if __name__ == "__main__":
    main()
