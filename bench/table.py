"""Turn the harness's samples into the one results table (markdown and JSON).

Input: a JSON-lines file, one sample per line, written as the runs happen:
  {"row": id, "what": text, "unit": text, "kind": "rate"|"time"|"overhead",
   "side": "ours"|"reference", "value": number}
  or the same with "missing": "<command>" or "error": "<message>" instead of "value".
Rows keep the order of their first sample. Each side's cell is the median of its values.
The ratio is always "how many times better ours is", so > 1 means ours wins:
  rate (images/s, GB/s): ours / reference;   time (s/step): reference / ours;
  overhead: (ours - reference) / reference, shown as a percentage (ours = with the real input,
  reference = the same graph on a pre-made batch), where smaller is better.

Samples whose "extra" carries a "round" (one alternation, both sides measured in it) are also
read in pairs: the ratio of each round, the median of those ratios, and a distribution-free
interval for that median from order statistics (the sign test's interval; its exact binomial
coverage is printed, about 95% where the rounds allow). A row whose interval holds 1.0 is at
parity: the run cannot tell the two sides apart, whichever side its medians favour. A row whose
samples carry a "target" (a ratio it must reach, e.g. 1.9 for np 2 against np 1) is read against
that target instead of 1.0: it meets it, misses it, or the run cannot tell.
"""
import argparse
import json
import math
import statistics
import sys

KINDS = ("rate", "time", "overhead")


def load(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def collect(samples):
    """Group samples into rows, in first-seen order."""
    rows = {}
    for s in samples:
        if s.get("kind") not in KINDS or s.get("side") not in ("ours", "reference"):
            raise ValueError("bad sample (kind/side): %r" % (s,))
        row = rows.setdefault(s["row"], {
            "row": s["row"], "what": s["what"], "unit": s["unit"], "kind": s["kind"],
            "ours": {"values": [], "missing": None, "errors": []},
            "reference": {"values": [], "missing": None, "errors": []},
            "raw": [], "target": s.get("target"),
        })
        row["raw"].append(s)
        side = row[s["side"]]
        if "value" in s and s["value"] is not None:
            side["values"].append(float(s["value"]))
        elif s.get("missing"):
            side["missing"] = s["missing"]
        else:
            side["errors"].append(s.get("error", "no value"))
    return list(rows.values())


def ratio(kind, ours, reference):
    """Better-is-bigger ratio (see module doc); None when a side is absent or zero."""
    if ours is None or reference is None:
        return None
    if kind == "rate":
        return ours / reference if reference > 0 else None
    if kind == "time":
        return reference / ours if ours > 0 else None
    return (ours - reference) / reference if reference > 0 else None


def median_interval(values, level=0.95):
    """Distribution-free interval for the median of `values`: (low, high, coverage), the k-th
    smallest and k-th largest with the largest k whose binomial coverage 1 - 2 P(B(n, 1/2) < k)
    is still >= `level`; with too few values for that, (min, max) and its smaller coverage.
    None for fewer than 2 values."""
    x = sorted(values)
    n = len(x)
    if n < 2:
        return None
    tail = lambda k: sum(math.comb(n, i) for i in range(k)) / 2.0 ** n  # P(B < k)
    k = 1
    while k + 1 <= n // 2 and 1 - 2 * tail(k + 1) >= level:
        k += 1
    return x[k - 1], x[n - k], 1 - 2 * tail(k)


def paired(kind, samples, target=None):
    """Per-round ratios of a row from its raw samples (see module doc), or None when fewer than
    two rounds have a value on both sides, and for overhead rows (not a ratio). `target` is the
    ratio the row must reach (None: 1.0, where the two sides are level)."""
    if kind == "overhead":
        return None
    by_round = {}
    for s in samples:
        r = (s.get("extra") or {}).get("round")
        if r is not None and s.get("value") is not None:
            by_round.setdefault(r, {}).setdefault(s["side"], float(s["value"]))
    ratios = [ratio(kind, v["ours"], v["reference"]) for _, v in sorted(by_round.items())
              if "ours" in v and "reference" in v]
    ratios = [r for r in ratios if r is not None]
    if len(ratios) < 2:
        return None
    low, high, coverage = median_interval(ratios)
    bar = 1.0 if target is None else target
    if target is None:
        reading = "ours ahead" if low > bar else ("ours behind" if high < bar else "parity")
    else:
        reading = ("meets %gx" % bar if low > bar else
                   ("misses %gx" % bar if high < bar else "cannot tell vs %gx" % bar))
    return {"rounds": len(ratios), "ratios": ratios, "median": statistics.median(ratios),
            "low": low, "high": high, "coverage": coverage, "target": target,
            "ahead": sum(r > bar for r in ratios), "reading": reading}


def fmt_number(x):
    if x is None:
        return "—"
    a = abs(x)
    if a >= 100:
        return "%.0f" % x
    if a >= 10:
        return "%.1f" % x
    if a >= 1:
        return "%.2f" % x
    return "%.3g" % x


def fmt_ratio(kind, r):
    if r is None:
        return "—"
    if kind == "overhead":
        return "%+.1f%%" % (100.0 * r)
    return "%.2fx" % r


def side_cell(side, median):
    if median is not None:
        cell = fmt_number(median)
        if side["errors"]:
            cell += " (%d failed)" % len(side["errors"])
        return cell
    if side["missing"]:
        return "n/a (missing: %s)" % side["missing"]
    if side["errors"]:
        return "error: %s" % side["errors"][-1][:60].replace("|", "/").replace("\n", " ")
    return "—"


def summarise(rows):
    out = []
    for row in rows:
        medians = {k: (statistics.median(row[k]["values"]) if row[k]["values"] else None)
                   for k in ("ours", "reference")}
        r = ratio(row["kind"], medians["ours"], medians["reference"])
        out.append({
            "row": row["row"], "what": row["what"], "unit": row["unit"], "kind": row["kind"],
            "ours": medians["ours"], "reference": medians["reference"], "ratio": r,
            "ours_samples": row["ours"]["values"], "reference_samples": row["reference"]["values"],
            "ours_missing": row["ours"]["missing"], "reference_missing": row["reference"]["missing"],
            "ours_errors": row["ours"]["errors"], "reference_errors": row["reference"]["errors"],
            "paired": paired(row["kind"], row["raw"], row["target"]),
            "cells": [row["what"], side_cell(row["ours"], medians["ours"]),
                      side_cell(row["reference"], medians["reference"]),
                      fmt_ratio(row["kind"], r), row["unit"]],
        })
    return out


def markdown(summary):
    lines = ["| what | ours | reference | ratio | unit |", "|---|---:|---:|---:|---|"]
    for s in summary:
        lines.append("| " + " | ".join(c.replace("|", "/") for c in s["cells"]) + " |")
    lines += paired_markdown(summary)
    return "\n".join(lines) + "\n"


def paired_markdown(summary, min_rounds=5):
    """The second table: rows with at least `min_rounds` paired rounds (fewer give an interval
    too wide to read)."""
    rows = [s for s in summary if s.get("paired") and s["paired"]["rounds"] >= min_rounds]
    if not rows:
        return []
    lines = ["", "Paired rounds (> 1: ours better; the interval is for the median of the per-round "
             "ratios, distribution-free; it holds 1.0 = parity; a row with a target is read "
             "against it instead):", "",
             "| what | rounds | median ratio | interval | coverage | rounds above 1.0 or the target | reading |",
             "|---|---:|---:|---|---:|---:|---|"]
    for s in rows:
        p = s["paired"]
        lines.append("| %s | %d | %.3f | %.3f - %.3f | %.1f%% | %d of %d | %s |" % (
            s["what"].replace("|", "/"), p["rounds"], p["median"], p["low"], p["high"],
            100 * p["coverage"], p["ahead"], p["rounds"], p["reading"]))
    return lines


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("samples")
    ap.add_argument("--md", help="write the markdown table (with --header text above it) here")
    ap.add_argument("--json", help="write rows with medians and raw samples here")
    ap.add_argument("--header", default="", help="file whose text goes above the table")
    args = ap.parse_args(argv)
    summary = summarise(collect(load(args.samples)))
    table = markdown(summary)
    header = ""
    if args.header:
        with open(args.header) as f:
            header = f.read()
    if args.md:
        with open(args.md, "w") as f:
            f.write(header + ("\n" if header else "") + table)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"header": header, "rows": summary}, f, indent=1)
    sys.stdout.write(table)


if __name__ == "__main__":
    main()
