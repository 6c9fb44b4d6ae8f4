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

    def test_median_interval_takes_the_order_statistics_of_the_sign_test(self):
        # n = 12: P(B(12, 1/2) <= 2) = 79/4096, so the 3rd and 10th values, 96.1% coverage;
        # one more step in (4th and 9th) would cover only 85.4%.
        low, high, coverage = table.median_interval(list(range(12, 0, -1)))
        self.assertEqual((low, high), (3, 10))
        self.assertAlmostEqual(coverage, 1 - 2 * 79 / 4096)
        # n = 5 cannot reach 95%: the extremes, 1 - 2/32.
        self.assertEqual(table.median_interval([5, 1, 4, 2, 3]), (1, 5, 1 - 2 / 32))
        self.assertIsNone(table.median_interval([1.0]))

    def test_paired_reading_pairs_the_sides_by_round_and_says_which_side_is_ahead(self):
        def rounds(ours, ref, kind="time", row="p"):
            out = [sample(row, kind, "ours", value=v, extra={"round": i}) for i, v in enumerate(ours)]
            out += [sample(row, kind, "reference", value=v, extra={"round": i}) for i, v in enumerate(ref)]
            return out
        # Both sides drift together: the medians are equal but ours is faster in every round.
        ours = [1.0 + 0.1 * i for i in range(8)]
        ahead = rounds(ours, [x * 1.02 for x in ours], row="ahead")
        behind = rounds(ours, [x * 0.97 for x in ours], row="behind")
        mixed = rounds(ours, [x * (1.03 if i % 2 else 0.97) for i, x in enumerate(ours)], row="mixed")
        # A round with one side only (it failed) is left out, not paired with another round's.
        lone = rounds([1.0] * 6, [1.1] * 6, row="lone") + [sample("lone", "time", "ours", value=9.0,
                                                                   extra={"round": 6})]
        got = {s["row"]: s["paired"] for s in table.summarise(table.collect(ahead + behind + mixed + lone))}
        self.assertEqual(got["ahead"]["reading"], "ours ahead")
        self.assertAlmostEqual(got["ahead"]["median"], 1.02)
        self.assertEqual(got["ahead"]["ahead"], 8)
        self.assertEqual(got["behind"]["reading"], "ours behind")
        self.assertEqual(got["mixed"]["reading"], "parity")
        self.assertEqual(got["lone"]["rounds"], 6)
        self.assertAlmostEqual(got["lone"]["median"], 1.1)

    def test_a_row_with_a_target_is_read_against_it_not_against_1(self):
        def rounds(ours, ref, row, target):
            return [sample(row, "rate", side, value=v, extra={"round": i}, target=target)
                    for i in range(len(ours)) for side, v in (("ours", ours[i]), ("reference", ref[i]))]
        ref = [10.0 + i for i in range(8)]
        # Ahead of the other side in every round (about 1.8x), so "ours ahead" against 1.0, but
        # short of a 1.9x target in every round.
        short = rounds([1.8 * x for x in ref], ref, "short", 1.9)
        met = rounds([1.95 * x for x in ref], ref, "met", 1.9)
        mixed = rounds([x * (1.95 if i % 2 else 1.85) for i, x in enumerate(ref)], ref, "mixed", 1.9)
        summary = table.summarise(table.collect(short + met + mixed))
        got = {s["row"]: s["paired"] for s in summary}
        self.assertEqual(got["short"]["reading"], "misses 1.9x")
        self.assertEqual(got["short"]["ahead"], 0)
        self.assertEqual(got["met"]["reading"], "meets 1.9x")
        self.assertEqual(got["mixed"]["reading"], "cannot tell vs 1.9x")
        self.assertEqual(got["mixed"]["ahead"], 4)
        self.assertIn("0 of 8 | misses 1.9x |", table.markdown(summary))

    def test_paired_table_lists_only_rows_with_enough_rounds(self):
        samples = [sample("many", "rate", side, value=v, extra={"round": i})
                   for i in range(6) for side, v in (("ours", 2.0 + i), ("reference", 1.0 + i))]
        samples += [sample("few", "rate", side, value=1.0, extra={"round": i})
                    for i in range(3) for side in ("ours", "reference")]
        samples += [sample("none", "rate", side, value=1.0) for side in ("ours", "reference")]
        summary = table.summarise(table.collect(samples))
        self.assertIsNone(summary[2]["paired"])
        text = table.markdown(summary)
        paired_lines = [l for l in text.split("\n") if l.startswith("| what many")]
        self.assertEqual(len(paired_lines), 2)  # the main row and its paired row
        self.assertIn("| 6 | ", paired_lines[1])
        self.assertIn("6 of 6 | ours ahead |", paired_lines[1])
        self.assertNotIn("| what few | 3 |", text)

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
