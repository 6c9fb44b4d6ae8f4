"""Tests of bench/table.py on fake samples: medians, ratio direction, missing and failed sides.

Run: .deps/venv/bin/python -m unittest discover -s bench/tests
"""
import json
import os
import random
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import table  # noqa: E402


def sample(row, kind, side, **kw):
    d = {"row": row, "what": "what " + row, "unit": "u", "kind": kind, "side": side}
    d.update(kw)
    return d


class TableTest(unittest.TestCase):
    def test_median_is_taken_per_side_for_any_order_and_count(self):
        rng = random.Random(1)
        for n in range(1, 12):
            ours = [rng.uniform(1, 100) for _ in range(n)]
            ref = [rng.uniform(1, 100) for _ in range(n + 1)]
            samples = [sample("r", "rate", "ours", value=v) for v in ours]
            samples += [sample("r", "rate", "reference", value=v) for v in ref]
            rng.shuffle(samples)
            (s,) = table.summarise(table.collect(samples))
            self.assertAlmostEqual(s["ours"], sorted(ours)[(n - 1) // 2] if n % 2 else
                                   (sorted(ours)[n // 2 - 1] + sorted(ours)[n // 2]) / 2)
            self.assertEqual(len(s["reference_samples"]), n + 1)

    def test_ratio_above_one_means_ours_wins_for_rates_and_times(self):
        samples = [sample("rate", "rate", "ours", value=200), sample("rate", "rate", "reference", value=100),
                   sample("time", "time", "ours", value=0.5), sample("time", "time", "reference", value=1.0),
                   sample("slow", "time", "ours", value=2.0), sample("slow", "time", "reference", value=1.0)]
        got = {s["row"]: s["ratio"] for s in table.summarise(table.collect(samples))}
        self.assertAlmostEqual(got["rate"], 2.0)
        self.assertAlmostEqual(got["time"], 2.0)
        self.assertAlmostEqual(got["slow"], 0.5)

    def test_overhead_is_a_percentage_of_the_reference(self):
        samples = [sample("o", "overhead", "ours", value=1.1), sample("o", "overhead", "reference", value=1.0)]
        (s,) = table.summarise(table.collect(samples))
        self.assertAlmostEqual(s["ratio"], 0.1)
        self.assertEqual(s["cells"][3], "+10.0%")

    def test_missing_side_prints_na_with_the_command_and_no_ratio(self):
        samples = [sample("m", "rate", "ours", missing="target/release/pipeline-bench"),
                   sample("m", "rate", "reference", value=5.0)]
        (s,) = table.summarise(table.collect(samples))
        self.assertEqual(s["cells"][1], "n/a (missing: target/release/pipeline-bench)")
        self.assertEqual(s["cells"][2], "5.00")
        self.assertEqual(s["cells"][3], "—")

    def test_failed_runs_are_counted_and_an_all_failed_side_shows_the_error(self):
        samples = [sample("e", "rate", "ours", error="exit 2: boom | bad"),
                   sample("e", "rate", "reference", value=3.0), sample("e", "rate", "reference", error="x")]
        (s,) = table.summarise(table.collect(samples))
        self.assertTrue(s["cells"][1].startswith("error: exit 2: boom / bad"))
        self.assertEqual(s["cells"][2], "3.00 (1 failed)")

    def test_rows_keep_first_seen_order_and_markdown_has_one_line_each(self):
        samples = [sample(r, "rate", side, value=1.0) for r in ("b", "a", "c") for side in ("ours", "reference")]
        summary = table.summarise(table.collect(samples))
        self.assertEqual([s["row"] for s in summary], ["b", "a", "c"])
        lines = table.markdown(summary).strip().split("\n")
        self.assertEqual(lines[0], "| what | ours | reference | ratio | unit |")
        self.assertEqual(len(lines), 5)
        self.assertEqual(lines[2], "| what b | 1.00 | 1.00 | 1.00x | u |")

    def test_bad_kind_is_refused(self):
        with self.assertRaises(ValueError):
            table.collect([sample("x", "speed", "ours", value=1)])

    def test_cli_writes_markdown_and_json(self):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "s.jsonl")
            with open(path, "w") as f:
                for s in (sample("r", "time", "ours", value=1.0), sample("r", "time", "reference", value=3.0)):
                    f.write(json.dumps(s) + "\n")
            header = os.path.join(d, "h.md")
            with open(header, "w") as f:
                f.write("# Bench\n")
            md, js = os.path.join(d, "t.md"), os.path.join(d, "t.json")
            devnull = open(os.devnull, "w")
            old, sys.stdout = sys.stdout, devnull
            try:
                table.main([path, "--md", md, "--json", js, "--header", header])
            finally:
                sys.stdout = old
                devnull.close()
            with open(md) as f:
                self.assertTrue(f.read().startswith("# Bench\n\n| what |"))
            with open(js) as f:
                self.assertAlmostEqual(json.load(f)["rows"][0]["ratio"], 3.0)


if __name__ == "__main__":
    unittest.main()
