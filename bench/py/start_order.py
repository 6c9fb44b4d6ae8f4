"""By hand (not part of `make bench`): how the step rows' processes differ from each other, the
measurements behind `--step-pairs` (BENCHMARKS.md, "Which process starts first").

    python bench/py/start_order.py sequential [--side keras]   # N processes one after another
    python bench/py/start_order.py twins [--second-first]      # two of ours side by side
    python bench/py/start_order.py pairs                       # ours vs Keras, start order alternating
    python bench/py/start_order.py turns                       # a turn after our own turn vs after the other's
    python bench/py/start_order.py sched-idle --records R      # pipeline threads under SCHED_IDLE or not
    python bench/py/start_order.py same-work --records R       # trainer vs Keras fed by tf.data

Every process is a `--serve` one, as in the harness; a turn is `--k` steps on the pre-made batch
(the pipeline-fed path for `sched-idle`) and gives the median of its steps.
"""
import argparse
import contextlib
import os
import statistics
import sys

from ab_nice import PIPELINE_THREADS, ROOT, session
from harness import Failed, Missing, Served


def commands(a):
    common = ["--depth", a.depth, "--classes", "10", "--px", "128", "--batch", "32",
              "--warmup", "3", "--precision", a.precision]
    ours = [os.path.join(ROOT, "target/release/trainer"), "bench", *common, "--json", "--serve"]
    keras = [os.path.join(ROOT, ".deps/venv/bin/python"),
             os.path.join(ROOT, "bench/py/train_step_tf.py"), *common, "--serve"]
    if a.records:
        ours += ["--records", a.records]
        keras += ["--records", a.records]
    return ours, keras


def turn(p, a, path="premade"):
    return statistics.median(p.steps(path, a.k))


def alternate(a, first, second):
    """`a.rounds` rounds of one turn each, `first` opening the even rounds; the two lists of turns."""
    times = ([], [])
    for i in range(a.rounds):
        for j in ((0, 1) if i % 2 == 0 else (1, 0)):
            times[j].append(turn((first, second)[j], a))
    return times


@contextlib.contextmanager
def pair(s, i, ours, keras):
    """The i-th pair of processes, ours started first when i is even: (ours, Keras')."""
    ours_first = i % 2 == 0
    with Served(s, ours if ours_first else keras, ours_first) as p, \
            Served(s, keras if ours_first else ours, not ours_first) as q:
        yield (p, q) if ours_first else (q, p)


def ratios(num, den):
    return " ".join("%.3f" % (x / y) for x, y in zip(num, den))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("mode", choices=["sequential", "twins", "pairs", "turns", "sched-idle", "same-work"])
    ap.add_argument("--depth", default="18")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--records", help="a records folder with train shards (sched-idle, same-work)")
    ap.add_argument("--side", choices=["ours", "keras"], default="ours", help="sequential: whose processes")
    ap.add_argument("--second-first", action="store_true", help="twins: start the second process first")
    ap.add_argument("--processes", type=int, default=5, help="sequential: processes; twins, pairs: pairs")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--k", type=int, default=5, help="steps per turn")
    ap.add_argument("--timeout", type=float, default=600, help="seconds to wait for any answer")
    a = ap.parse_args()
    ours, keras = commands(a)
    s = session(a.timeout)
    if a.mode == "sequential":
        for i in range(a.processes):
            with Served(s, ours if a.side == "ours" else keras, a.side == "ours") as p:
                t = [turn(p, a) for _ in range(a.rounds)]
            print("process %d: median %.4f  turns %s" % (i, statistics.median(t), " ".join("%.3f" % x for x in t)))
    elif a.mode == "twins":
        for i in range(a.processes):
            with Served(s, ours, True) as p, Served(s, ours, True) as q:
                # The turn order stays: A opens the even rounds. A is the one started first
                # unless --second-first.
                A, B = (q, p) if a.second_first else (p, q)
                ta, tb = alternate(a, A, B)
            print("pair %d: A %.4f B %.4f  A/B per round %s" % (
                i, statistics.median(ta), statistics.median(tb), ratios(ta, tb)))
    elif a.mode == "pairs":
        pooled = {True: [], False: []}
        for i in range(a.processes):
            ours_first = i % 2 == 0
            with pair(s, i, ours, keras) as (us, ref):
                to, tk = alternate(a, us, ref)
            pooled[ours_first] += [k / o for o, k in zip(to, tk)]
            print("pair %d (%s started first): Keras / ours %.3f  per round %s" % (
                i, "ours" if ours_first else "Keras", statistics.median(tk) / statistics.median(to), ratios(tk, to)))
        for f in (True, False):
            print("ours started first = %s: median of the rounds' Keras / ours %.3f over %d" % (
                f, statistics.median(pooled[f]), len(pooled[f])))
    elif a.mode == "turns":
        # A takes two turns a round, one right after B's and, from the second round on, one right
        # after its own.
        with Served(s, ours, True) as A, Served(s, ours, True) as B:
            after, prev = {"A": [], "B": []}, None
            for i in range(a.rounds):
                for p in (A, B, A):
                    steps = p.steps("premade", a.k)
                    if p is A and prev is not None:
                        after["A" if prev is A else "B"].append(steps)
                    prev = p
        for name, ts in after.items():
            print("A after %s: %2d turns, first step median %.4f, turn median median %.4f" % (
                name, len(ts), statistics.median(t[0] for t in ts), statistics.median(statistics.median(t) for t in ts)))
    elif a.mode == "same-work":
        # Each side decodes its own input: the trainer's path against Keras fed by tf.data; Keras
        # on the pre-made batch as well, to tie the figures to the bench's rows.
        if not a.records:
            ap.error("same-work needs --records")
        got = {"trainer": [], "tfdata": [], "premade": []}
        for i in range(a.processes):
            with pair(s, i, ours, keras) as (us, ref):
                turns = [(us, "trainer"), (ref, "tfdata"), (ref, "premade")]
                for r in range(a.rounds):
                    for proc, path in (turns if r % 2 == 0 else turns[::-1]):
                        got[path].append(turn(proc, a, path))
            print("pair %d (%s started first) done" % (i, "ours" if i % 2 == 0 else "Keras"), flush=True)
        for path in ("tfdata", "premade"):
            r = [k / o for o, k in zip(got["trainer"], got[path])]
            print("Keras %-7s / trainer: median of the rounds %.3f over %d (%s)" % (
                path, statistics.median(r), len(r), " ".join("%.2f" % x for x in r)))
        print("medians: trainer %.4f, Keras tfdata %.4f, Keras premade %.4f s/step" % tuple(
            statistics.median(got[p]) for p in ("trainer", "tfdata", "premade")))
    else:
        if not a.records:
            ap.error("sched-idle needs --records")
        with Served(s, ours, True) as p:
            def policy(idle):
                for tid in os.listdir("/proc/%d/task" % p.proc.pid):
                    with open("/proc/%d/task/%s/comm" % (p.proc.pid, tid)) as f:
                        if f.read().strip().startswith(PIPELINE_THREADS):
                            os.sched_setscheduler(int(tid), os.SCHED_IDLE if idle else os.SCHED_OTHER,
                                                  os.sched_param(0))
            got = {"premade": [], "normal": [], "idle": []}
            names = list(got)
            for i in range(a.rounds):
                order = names[i % 3:] + names[:i % 3]
                for name in (order if i % 2 == 0 else order[::-1]):
                    policy(name == "idle")
                    got[name].append(turn(p, a, "premade" if name == "premade" else "trainer"))
        for name in ("normal", "idle"):
            r = [x / y - 1 for x, y in zip(got[name], got["premade"])]
            print("%-6s overhead over the pre-made batch: median %+.2f%%, rounds %s" % (
                name, 100 * statistics.median(r), " ".join("%+.1f" % (100 * x) for x in r)))


if __name__ == "__main__":
    try:
        main()
    except (Failed, Missing) as e:
        sys.exit("start_order: %s" % e)
