#!/usr/bin/env python3
"""Runs every test binary of the workspace and the Python tests, two at a time (`make test`).

Why not plain `cargo test`: it runs the test binaries one after another, and most of ours spend
part of their time waiting (mpirun start-up, a rank's stall timer, TensorFlow loading a graph),
so one binary keeps about 1.3 of this machine's 2 cores busy. Two at once fill the gap. Each
binary still runs its own tests one at a time (`--test-threads=1`), as cargo would be told to,
and every test keeps its own scratch folder, shared-memory names and temp dirs (pid-named), so
two binaries never share state.

The binaries come from `cargo test --no-run` (already built by `make build`); each runs in its
package's folder, as cargo runs it. The slow ones start first so the two lanes end together.
Output is printed per binary when it finishes; the exit status is non-zero if any failed.
"""

import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Test binaries (labels as `test_binaries` makes them) that took 30 s or more in a CI run,
# slowest first; the rest follow in the order cargo lists them.
SLOW_FIRST = [
    "dawnrun/test/faults", "dawnrun/test/mpi", "dawnrun/test/train", "dawnrun/test/model_graph",
    "dawnrun/test/precision", "dawnrun/test/eval", "dawnrun/test/export", "dist/test/mpirun",
]


def test_binaries():
    """(label, executable, package folder) for every test target cargo built in release."""
    listing = subprocess.run(
        [
            "cargo", "test", "--release", "--workspace", "--no-run",
            "--message-format=json-render-diagnostics",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
    )
    if listing.returncode != 0:
        sys.exit(f"run-tests: `cargo test --no-run` failed (exit {listing.returncode}); see above")
    found = []
    for line in listing.stdout.decode().splitlines():
        msg = json.loads(line)
        if msg.get("reason") != "compiler-artifact" or not msg.get("profile", {}).get("test"):
            continue
        if not msg.get("executable"):
            continue
        package = Path(msg["manifest_path"]).parent
        target = msg["target"]
        kind = "lib" if "lib" in target["kind"] else target["kind"][0]
        label = f"{package.name if package != ROOT else 'dawnrun'}/{kind}/{target['name']}"
        found.append((label, msg["executable"], package))
    rank = {label: i for i, label in enumerate(SLOW_FIRST)}
    found.sort(key=lambda f: rank.get(f[0], len(SLOW_FIRST)))
    return found


def run_all(work, jobs):
    """Runs each (label, argv, folder, extra env) of `work`, `jobs` at a time, printing each
    one's output as it ends; returns the labels of those that exited non-zero."""
    lock = threading.Lock()
    failed = []

    def run(item):
        label, argv, cwd, extra_env = item
        start = time.monotonic()
        proc = subprocess.run(
            argv,
            cwd=cwd,
            env={**os.environ, **extra_env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        took = time.monotonic() - start
        verdict = "ok" if proc.returncode == 0 else f"FAILED (exit {proc.returncode})"
        with lock:
            sys.stdout.write(f"\n==== {label}: {verdict} in {took:.0f} s\n")
            sys.stdout.write(proc.stdout.decode(errors="replace"))
            sys.stdout.flush()
            if proc.returncode != 0:
                failed.append(label)

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        list(pool.map(run, work))
    return failed


def main():
    jobs = os.environ.get("DAWNRUN_TEST_JOBS", "2")
    if not jobs.isdigit() or int(jobs) < 1:
        sys.exit(f"run-tests: DAWNRUN_TEST_JOBS must be a whole number >= 1, not {jobs!r}")
    jobs = int(jobs)
    python = os.environ.get("DAWNRUN_PYTHON", str(ROOT / ".deps/venv/bin/python"))
    work = [
        (label, [exe, "--test-threads=1"], pkg, {"CARGO_MANIFEST_DIR": str(pkg)})
        for label, exe, pkg in test_binaries()
    ]
    # The Python tests load TensorFlow and Keras: slow, so they go right after the slowest.
    work.insert(
        min(2, len(work)),
        ("python bench/tests", [python, "-m", "unittest", "discover", "-s", "bench/tests"], ROOT, {}),
    )
    # Doc tests are compiled when run, so they stay with cargo.
    work.append(
        ("doc tests", ["cargo", "test", "--release", "--workspace", "--doc", "-q"], ROOT, {}),
    )
    print(f"run-tests: {len(work)} test binaries, {jobs} at a time", flush=True)
    failed = run_all(work, jobs)
    if failed:
        print(f"\nrun-tests: {len(failed)} of {len(work)} FAILED: {', '.join(failed)}")
        return 1
    print(f"\nrun-tests: all {len(work)} passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
