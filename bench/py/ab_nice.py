"""A/B by hand (not part of `make bench`): does lowering the pipeline threads' priority speed up
the trainer's step?

Two served trainers (`trainer bench --serve`) and a served Keras step (`train_step_tf.py
--serve`) stay up at once. In trainer B the pipeline's threads (named `dawnrun-dec*`,
`dawnrun-reader`, `dawnrun-batch*`) are reniced from outside to `--nice`; trainer A keeps nice 0.
Each round asks for K pipeline-fed steps from A, Keras and B, plus K pre-made-batch steps from A,
the order reversed every other round. Prints each round and the medians of Keras / A and
Keras / B (> 1: the trainer is faster than Keras).

    python bench/py/ab_nice.py --records R --precision fp32 --nice 19 --rounds 10
"""
import argparse
import os
import statistics
import sys
import types

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "bench"))
from harness import Failed, Missing, Served  # noqa: E402  (the step rows' own `--serve` client)

PIPELINE_THREADS = ("dawnrun-dec", "dawnrun-reader", "dawnrun-batch")


def session(timeout):
    """What `Served` uses of the harness: its log (stderr here), timeout, root, binaries' folder
    and command names."""
    return types.SimpleNamespace(log=sys.stderr, args=types.SimpleNamespace(timeout=timeout),
                                 root=ROOT, bin=os.path.join(ROOT, "target", "release"),
                                 contract=lambda cmd: cmd[0])


def renice_pipeline(pid, nice):
    for tid in os.listdir("/proc/%d/task" % pid):
        with open("/proc/%d/task/%s/comm" % (pid, tid)) as f:
            name = f.read().strip()
        if name.startswith(PIPELINE_THREADS):
            os.setpriority(os.PRIO_PROCESS, int(tid), nice)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", required=True, help="a records folder with train shards")
    ap.add_argument("--depth", default="18")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--nice", type=int, default=19)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--k", type=int, default=5, help="steps per turn")
    ap.add_argument("--timeout", type=float, default=600, help="seconds to wait for any answer")
    a = ap.parse_args()
    common = ["--depth", a.depth, "--classes", "10", "--px", "128", "--batch", "32",
              "--warmup", "3", "--precision", a.precision]
    ours = [os.path.join(ROOT, "target/release/trainer"), "bench", *common,
            "--records", a.records, "--json", "--serve"]
    keras = [os.path.join(ROOT, ".deps/venv/bin/python"),
             os.path.join(ROOT, "bench/py/train_step_tf.py"), *common, "--serve"]
    s = session(a.timeout)
    with Served(s, ours, True) as A, Served(s, ours, True) as B, Served(s, keras, False) as K:
        renice_pipeline(B.proc.pid, a.nice)
        rounds = []
        for i in range(a.rounds):
            turns = [(A, "trainer", "A"), (K, "premade", "K"), (B, "trainer", "B"),
                     (A, "premade", "A premade")]
            if i % 2:
                turns.reverse()
            got = {name: statistics.median(p.steps(path, a.k)) for p, path, name in turns}
            rounds.append(got)
            print(i, {k: round(v, 4) for k, v in got.items()}, flush=True)
    med = lambda key: statistics.median(r[key] for r in rounds)
    per_round = lambda key: statistics.median(r["K"] / r[key] for r in rounds)
    print("Keras / A (nice 0): %.4f of medians, %.4f per-round median" % (med("K") / med("A"), per_round("A")))
    print("Keras / B (nice %d): %.4f of medians, %.4f per-round median" % (a.nice, med("K") / med("B"), per_round("B")))
    print("Keras / A on a pre-made batch: %.4f" % (med("K") / med("A premade")))

if __name__ == "__main__":
    try:
        main()
    except (Failed, Missing) as e:
        sys.exit("ab_nice: %s" % e)
