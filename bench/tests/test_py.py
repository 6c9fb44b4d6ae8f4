"""The Python references run for real on tiny data (venv TensorFlow; about a minute in all).

Run: TF_CPP_MIN_LOG_LEVEL=2 .deps/venv/bin/python -m unittest discover -s bench/tests
"""
import json
import os
import subprocess
import sys
import tempfile
import unittest

PY_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "py")


def run(script, *args):
    p = subprocess.run([sys.executable, os.path.join(PY_DIR, script)] + list(args), capture_output=True, text=True,
                       env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    if p.returncode != 0:
        raise AssertionError("%s failed: %s" % (script, p.stderr[-2000:]))
    return json.loads(p.stdout.strip().splitlines()[-1])


class ReferencesTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.folder = os.path.join(cls.tmp.name, "synth")
        made = run("make_folder.py", "--out", cls.folder, "--classes", "3", "--train-per-class", "12",
                   "--val-per-class", "4", "--sizes", "64,96")
        assert made["images"] == 2 * 3 * 16
        cls.records = os.path.join(cls.tmp.name, "records")
        cls.built = run("build_records_tf.py", "--input", os.path.join(cls.folder, "96"), "--output", cls.records,
                        "--train-shards", "3", "--validation-shards", "2", "--threads", "2")

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def test_build_records_writes_every_image_with_the_imagenet_features(self):
        import tensorflow as tf
        self.assertEqual(self.built["images"], 48)
        names = sorted(os.listdir(self.records))
        self.assertEqual(names, ["train-00000-of-00003", "train-00001-of-00003", "train-00002-of-00003",
                                 "validation-00000-of-00002", "validation-00001-of-00002"])
        self.assertEqual(self.built["bytes"], sum(os.path.getsize(os.path.join(self.records, n)) for n in names))
        synsets = sorted(os.listdir(os.path.join(self.folder, "96", "train")))
        seen = 0
        for record in tf.data.TFRecordDataset([os.path.join(self.records, n) for n in names]):
            f = tf.train.Example.FromString(record.numpy()).features.feature
            synset = f["image/class/synset"].bytes_list.value[0].decode()
            self.assertEqual(f["image/class/label"].int64_list.value[0], synsets.index(synset) + 1)
            image = tf.io.decode_jpeg(f["image/encoded"].bytes_list.value[0])
            self.assertEqual(f["image/height"].int64_list.value[0], image.shape[0])
            self.assertEqual(f["image/width"].int64_list.value[0], image.shape[1])
            self.assertEqual(min(image.shape[:2]), 96)
            self.assertTrue(f["image/filename"].bytes_list.value[0].decode().startswith(synset))
            self.assertEqual(f["image/format"].bytes_list.value[0], b"JPEG")
            seen += 1
        self.assertEqual(seen, 48)

    def test_build_records_is_reproducible(self):
        again = os.path.join(self.tmp.name, "again")
        run("build_records_tf.py", "--input", os.path.join(self.folder, "96"), "--output", again,
            "--train-shards", "3", "--validation-shards", "2", "--threads", "1")
        for name in os.listdir(self.records):
            with open(os.path.join(self.records, name), "rb") as a, open(os.path.join(again, name), "rb") as b:
                self.assertEqual(a.read(), b.read(), name)

    def test_pipeline_counts_images_in_both_modes_and_both_crop_ops(self):
        for extra in (["--mode", "train"], ["--mode", "decode"], ["--crop-op", "decode_then_crop"]):
            r = run("pipeline_tf.py", "--records", self.records, "--px", "32", "--batch", "8", "--seconds", "0.5",
                    "--warmup", "0.2", *extra)
            self.assertGreater(r["images"], 0, extra)
            self.assertEqual(r["images"] % 8, 0)

    def test_resnet50_has_the_reference_parameter_count(self):
        self.assertEqual(run("train_step_tf.py", "--depth", "50", "--classes", "1000", "--params-only")["params"],
                         25557032)

    def test_train_step_runs_and_reports_a_finite_step_time(self):
        r = run("train_step_tf.py", "--depth", "18", "--classes", "5", "--px", "32", "--batch", "4", "--steps", "2",
                "--warmup", "1")
        self.assertGreater(r["step_s_median"], 0)
        self.assertAlmostEqual(r["images_per_s"], 4 / r["step_s_median"])

    def test_read_files_reads_every_byte(self):
        tree = os.path.join(self.folder, "64")
        total = sum(os.path.getsize(os.path.join(d, n)) for d, _, ns in os.walk(tree) for n in ns)
        r = run("read_files.py", "--input", tree)
        self.assertEqual((r["images"], r["bytes"]), (48, total))


class ProfileStepTest(unittest.TestCase):
    def test_concurrency_counts_one_and_overlapping_spans_apart(self):
        sys.path.insert(0, PY_DIR)
        import profile_step
        ms = 10 ** 9  # ps per ms
        # 0-5 one, 5-10 two, 10-12 three, 12-15 one, 15-20 none, 20-21 one.
        spans = [(0, 12 * ms), (5 * ms, 15 * ms), (10 * ms, 12 * ms), (20 * ms, 21 * ms)]
        got = profile_step.concurrency_ms(spans)
        self.assertAlmostEqual(got["one"], 5 + 3 + 1)
        self.assertAlmostEqual(got["two_plus"], 5 + 2)
        self.assertEqual(profile_step.concurrency_ms([]), {"one": 0.0, "two_plus": 0.0})


class StepPhasesTest(unittest.TestCase):
    def test_each_rank_waits_from_its_gradients_end_to_the_slowest_ranks(self):
        def step(ts, grad_ms, then_ms):
            return [{"ph": "X", "name": "gradients", "ts": ts, "dur": grad_ms * 1000},
                    {"ph": "X", "name": "hierarchical mean", "ts": ts + grad_ms * 1000, "dur": then_ms * 1000}]
        # Two steps 100 ms apart: rank 1's gradients end 10 ms after rank 0's in the first,
        # rank 0's 30 ms after rank 1's in the second.
        r0 = step(0, 80, 15) + step(100000, 90, 5)
        r1 = step(0, 90, 5) + step(100000, 60, 35)
        with tempfile.TemporaryDirectory() as d:
            # Rank 0's file as a killed rank leaves it (the array never closed, a trailing
            # comma), rank 1's whole.
            events0 = [{"ph": "M", "name": "process_name"}] + r0
            with open(os.path.join(d, "t.rank0.json"), "w") as f:
                f.write("[\n" + ",\n".join(json.dumps(e) for e in events0) + ",\n")
            with open(os.path.join(d, "t.rank1.json"), "w") as f:
                json.dump([{"ph": "M", "name": "process_name"}] + r1, f)
            got = run("step_phases.py", os.path.join(d, "t.json"))
        self.assertEqual(got["steps"], 2)
        self.assertEqual(got["step_ms_median"], 100.0)
        w0, w1 = got["ranks"]
        self.assertAlmostEqual(w0["wait_ms_mean"], (10 + 0) / 2)
        self.assertAlmostEqual(w1["wait_ms_mean"], (0 + 30) / 2)
        self.assertAlmostEqual(w1["wait_share_pct"], 100 * 30 / 195)
        self.assertEqual(w0["phases"]["gradients"]["count"], 2)
        self.assertAlmostEqual(w0["phases"]["gradients"]["median_ms"], 85.0)
        self.assertAlmostEqual(w0["phases"]["hierarchical mean"]["share_pct"], 100 * 20 / 195)
        self.assertEqual(got["compute_span"], "gradients")

    def test_one_rank_steps_by_its_fused_step_and_waits_for_nobody(self):
        events = [{"ph": "X", "name": "fused step", "ts": t, "dur": 90000} for t in (0, 100000, 200000)]
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "t.json")
            with open(path, "w") as f:
                # The form timelines had before 2026-12-04 is still read.
                json.dump({"traceEvents": events}, f)
            got = run("step_phases.py", path)
        self.assertEqual((got["steps"], got["compute_span"], got["step_ms_median"]), (3, "fused step", 100.0))
        self.assertEqual(got["ranks"][0]["wait_ms_mean"], 0.0)


if __name__ == "__main__":
    unittest.main()
