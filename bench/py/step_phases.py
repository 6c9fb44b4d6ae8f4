"""Where a multi-rank step's time goes, from the timelines `trainer bench --timeline T` (or
`trainer train --timeline T`) wrote: one Chrome trace per rank, `T.rank0.json`, `T.rank1.json`, ...

For each rank: each phase's spans (count, median ms, share of the rank's traced time, from its
first span's start to its last one's end, idle gaps between requests included); and the wait:
a step of synchronous SGD ends for every rank when the slowest rank's gradients are done, so
each rank waits, step by step, from the end of its own compute span (`gradients`; `backward`
with `--overlap`; at np 1 the one `fused step`, with nothing to wait for) to the latest one's.
The waits compare timestamps across ranks, so they hold for ranks on one host (or on hosts
whose clocks agree).

    python bench/py/step_phases.py /tmp/t.json            # reads /tmp/t.rank*.json (or /tmp/t.json at np 1)

Prints a human summary, then one JSON line.
"""
import argparse
import glob
import json
import os
import statistics


COMPUTE = ("gradients", "backward", "fused step")


def rank_files(base):
    """`trace.json` -> [`trace.rank0.json`, `trace.rank1.json`, ...] in rank order, else [base]."""
    stem, ext = os.path.splitext(base)
    ranked = {}
    for p in glob.glob("%s.rank*%s" % (glob.escape(stem), glob.escape(ext))):
        middle = p[len(stem) + len(".rank"):len(p) - len(ext)]
        if middle.isdigit():
            ranked[int(middle)] = p
    if ranked and sorted(ranked) != list(range(len(ranked))):
        raise SystemExit("%s: ranks %s, not 0..N-1" % (base, sorted(ranked)))
    return [ranked[r] for r in sorted(ranked)] or [base]


def spans(path):
    """The complete events of one rank's timeline: a JSON array, closed here if the rank was
    killed before it could close it (as trace viewers do: drop a trailing comma, add the `]`).
    Files of the older `{"traceEvents": [...]}` form are read too."""
    with open(path) as f:
        text = f.read().rstrip()
    if text.startswith("["):
        if not text.endswith("]"):
            text = text.rstrip(",") + "]"
        events = json.loads(text)
    else:
        events = json.loads(text)["traceEvents"]
    return [e for e in events if e.get("ph") == "X"]


def summary(ranks):
    """ranks: one list of complete events per rank. Returns the per-rank phases and waits."""
    names = [n for n in COMPUTE if all(any(e["name"] == n for e in r) for r in ranks)]
    if not names:
        raise SystemExit("no compute spans (%s) in every rank's timeline" % ", ".join(COMPUTE))
    grads = [[e for e in r if e["name"] == names[0]] for r in ranks]
    steps = min(len(g) for g in grads)
    ends = [[g[i]["ts"] + g[i]["dur"] for g in grads] for i in range(steps)]
    out = []
    for k, r in enumerate(ranks):
        wall = (max(e["ts"] + e["dur"] for e in r) - min(e["ts"] for e in r)) / 1000.0
        phases = {}
        for name in sorted(set(e["name"] for e in r)):
            ms = [e["dur"] / 1000.0 for e in r if e["name"] == name]
            phases[name] = {"count": len(ms), "median_ms": statistics.median(ms),
                            "share_pct": 100.0 * sum(ms) / wall}
        waits = [(max(e) - e[k]) / 1000.0 for e in ends]
        g = [e["dur"] / 1000.0 for e in grads[k]]
        out.append({
            "rank": k,
            "wall_ms": wall,
            "phases": phases,
            "compute_sd_ms": statistics.pstdev(g) if len(g) > 1 else 0.0,
            "wait_ms_mean": statistics.mean(waits) if waits else 0.0,
            "wait_share_pct": 100.0 * sum(waits) / wall,
        })
    starts = [e["ts"] for e in grads[0]]
    step_ms = [(b - a) / 1000.0 for a, b in zip(starts, starts[1:])]
    return {"steps": steps, "compute_span": names[0],
            "step_ms_median": statistics.median(step_ms) if step_ms else None, "ranks": out}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("timeline", help="the path given to --timeline")
    args = ap.parse_args()
    files = rank_files(args.timeline)
    s = summary([spans(p) for p in files])
    s["files"] = files
    print("%d steps (by their %s spans), median step %s ms" % (s["steps"], s["compute_span"], "%.1f" % s["step_ms_median"] if s["step_ms_median"] else "-"))
    for r in s["ranks"]:
        parts = ", ".join("%s %d x %.1f ms (%.1f%%)" % (n, p["count"], p["median_ms"], p["share_pct"])
                          for n, p in r["phases"].items())
        print("rank %d: %s; compute sd %.1f ms; waits for the slowest rank %.1f ms a step (%.1f%%)" % (
            r["rank"], parts, r["compute_sd_ms"], r["wait_ms_mean"], r["wait_share_pct"]))
    print(json.dumps(s))


if __name__ == "__main__":
    main()
