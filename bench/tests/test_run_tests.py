"""Tests of tools/run-tests.py, the runner behind `make test`: a failing test binary must make it
fail, whatever runs beside it, or CI would pass on a broken test.

Run: .deps/venv/bin/python -m unittest discover -s bench/tests
"""
import contextlib
import importlib.util
import io
import os
import tempfile
import unittest

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
_spec = importlib.util.spec_from_file_location(
    "run_tests", os.path.join(ROOT, "tools", "run-tests.py"))
run_tests = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(run_tests)


class RunAllTest(unittest.TestCase):
    def run_all(self, work, jobs):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            failed = run_tests.run_all(work, jobs)
        return failed, out.getvalue()

    def test_failures_are_named_and_passes_are_not_at_any_parallelism(self):
        work = [
            ("passes", ["sh", "-c", "echo fine"], ROOT, {}),
            ("exits 3", ["sh", "-c", "echo broken; exit 3"], ROOT, {}),
            ("killed", ["sh", "-c", "kill -9 $$"], ROOT, {}),
            ("passes too", ["true"], ROOT, {}),
        ]
        for jobs in (1, 2, 4):
            failed, out = self.run_all(work, jobs)
            self.assertEqual(sorted(failed), ["exits 3", "killed"], out)
            self.assertIn("==== exits 3: FAILED (exit 3)", out)
            self.assertIn("broken", out)
            self.assertIn("==== passes: ok", out)
            self.assertIn("fine", out)

    def test_each_job_runs_in_its_folder_with_its_environment(self):
        with tempfile.TemporaryDirectory() as d:
            check = 'test "$(pwd -P)" = "%s" && test "$CARGO_MANIFEST_DIR" = "%s"' % (
                os.path.realpath(d), d)
            work = [
                ("right", ["sh", "-c", check], d, {"CARGO_MANIFEST_DIR": d}),
                ("wrong folder", ["sh", "-c", check], ROOT, {"CARGO_MANIFEST_DIR": d}),
            ]
            failed, out = self.run_all(work, 2)
            self.assertEqual(failed, ["wrong folder"], out)


if __name__ == "__main__":
    unittest.main()
