"""The harness end to end against a fake build tree: stub and fake commands of ours.

A fake root holds target/release/allreduce-check (a shell script printing the contract's JSON on
rank 0 only) and a stub trainer that prints nothing; make-synthetic and build-records are absent,
so the pillow stand-in and build_records_tf.py are used. Needs mpirun. About a minute.
"""
import json
import os
import re
import signal
import stat
import subprocess
import sys
import tempfile
import time
import unittest

BENCH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")

FAKE_ALLREDUCE = """#!/bin/sh
[ "${OMPI_COMM_WORLD_RANK:-0}" = 0 ] || exit 0
echo '{"method":"hierarchical","np":2,"floats":1,"seconds_median":0.25,"bus_gbps":8.0,"max_abs_diff":0.0,"identical_across_ranks":true,"hosts":1,"ranks_per_host":2}'
echo '{"method":"ring","np":2,"floats":1,"seconds_median":0.5,"bus_gbps":4.0,"max_abs_diff":0.0,"identical_across_ranks":true}'
echo '{"method":"mpi","np":2,"floats":1,"seconds_median":1.0,"bus_gbps":2.0,"max_abs_diff":0.0,"identical_across_ranks":true}'
"""


# A trainer whose `bench --serve` answers with fixed step times (pre-made 0.5 s, fed 0.7 s,
# lockstep 0.6 s; fed 0.64 s with --overlap, which also reports a hidden share), each rank using
# 90% of the step in CPU time (`usage_per_step`), and logs each request; any other call prints
# nothing (a stub: its rows read "missing"). Under mpirun only rank 0 serves, as the real one
# answers only there.
FAKE_TRAINER = """#!%s
import json, os, sys
if "--serve" not in sys.argv or os.environ.get("OMPI_COMM_WORLD_RANK", "0") != "0":
    sys.exit(0)
log = open(sys.argv[0] + ".requests", "a")
log.write("start\\n")
log.flush()
print(json.dumps({"ready": True, "params": 11181642}), flush=True)
overlap = "--overlap" in sys.argv
for line in sys.stdin:
    path, k = line.split()
    log.write(path + ("+overlap" if overlap else "") + "\\n")
    log.flush()
    step = {"premade": 0.5, "lockstep": 0.6}.get(path, 0.64 if overlap else 0.7)
    answer = {"path": path, "step_s": [step] * int(k)}
    ranks = int(os.environ.get("OMPI_COMM_WORLD_SIZE", "1"))
    answer["usage_per_step"] = [{"cpu_s": 0.9 * step, "minor_faults": 3.0 if path == "lockstep" else 1.0,
                                 "involuntary_switches": 20.0}] * ranks
    if overlap:
        answer["allreduce_hidden_pct"] = 40.0
    print(json.dumps(answer), flush=True)
""" % sys.executable


def read(path):
    with open(path) as f:
        return f.read()


def write_exe(path, text):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR)


class HarnessTest(unittest.TestCase):
    def test_fake_commands_give_ratios_and_stubs_give_na_rows(self):
        with tempfile.TemporaryDirectory() as root:
            bin_dir = os.path.join(root, "target", "release")
            os.makedirs(bin_dir)
            write_exe(os.path.join(bin_dir, "allreduce-check"), FAKE_ALLREDUCE)
            write_exe(os.path.join(bin_dir, "trainer"), FAKE_TRAINER)
            results = os.path.join(root, "results")
            env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", OMPI_ALLOW_RUN_AS_ROOT="1",
                       OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMPI_MCA_rmaps_base_oversubscribe="1",
                       TF_ENABLE_ONEDNN_OPTS="1")
            p = subprocess.run([sys.executable, os.path.join(BENCH, "harness.py"), "--root", root, "--quick",
                                "--only", "train,allreduce,scaling", "--results", results],
                               capture_output=True, text=True, env=env)
            self.assertEqual(p.returncode, 0, p.stderr[-3000:])
            rows = {r["row"]: r for r in json.loads(read(os.path.join(results, "latest.json")))["rows"]}
            samples = [json.loads(l) for l in read(os.path.join(results, "samples.jsonl")).splitlines()]
            for label in ("1M", "25.6M"):
                r = rows["allreduce/2/%s" % label]
                self.assertEqual((r["ours"], r["reference"]), (8.0, 2.0))
                self.assertAlmostEqual(r["ratio"], 4.0)
                r = rows["ring/2/%s" % label]
                self.assertEqual((r["ours"], r["reference"]), (4.0, 2.0))
                self.assertAlmostEqual(r["ratio"], 2.0)
            # The step rows: both sides up at once, turns alternating (QUICK: 2 rounds of 3 steps),
            # the Keras reference really run; one round for each of 2 pairs of processes, ours
            # started first in the first pair and second in the other. Then the scaling rows: an
            # np 2 job and two single trainers up at once (3 starts), 2 rounds of a turn each for
            # the job (our step and the lockstep reference) and one single trainer and a turn of
            # both single trainers (8 trainer requests, 2 lockstep). Last the overlap row: two
            # np 2 jobs, with and without overlap, up at once, 2 rounds of a turn each, the job
            # with overlap first in the first round and second in the other.
            requests = read(os.path.join(bin_dir, "trainer.requests")).split()
            self.assertEqual(requests[:6], ["start", "premade", "trainer", "start", "trainer", "premade"])
            self.assertEqual(sorted(requests[6:-6]), ["lockstep"] * 2 + ["start"] * 3 + ["trainer"] * 8)
            self.assertEqual(requests[-6:], ["start", "start", "trainer+overlap", "trainer", "trainer",
                                             "trainer+overlap"])
            started = [line for line in read(os.path.join(results, "bench.log")).splitlines()
                       if line.endswith("(serving)")]
            # Where TensorFlow's own default on this CPU is Eigen (no AVX-512), each pair also
            # starts Keras at that default, last: the step-tf-default row. The harness probes
            # TensorFlow for it once and says which in the header.
            header = read(os.path.join(results, "header.md"))
            self.assertIn("TensorFlow's own default on this CPU: oneDNN kernels", header)
            # The box's own speed, probed at the start and after each section that ran (the train
            # section after each net and precision): real numbers from box_speed.py.
            speed = next(l for l in header.splitlines() if l.startswith("- the box's own speed"))
            probes = re.findall(r"(start|after [\w ]+?) (\d+\.\d)", speed)
            self.assertEqual([w for w, _ in probes], ["start", "after train R18 fp32", "after allreduce",
                                                      "after scaling"], speed)
            self.assertTrue(all(float(g) > 0 for _, g in probes), speed)
            plain = [True] if "oneDNN kernels off" in header else []
            self.assertEqual(["train_step_tf.py" in line for line in started],
                             [False, True] + plain + [True, False] + plain + [False] * 5)
            self.assertEqual([line.split()[1] for line in started[-5:]],
                             ["mpirun", "taskset", "taskset", "mpirun", "mpirun"])
            self.assertEqual(["--overlap" in line for line in started[-2:]], [True, False])
            self.assertEqual("train/r18/fp32/step-tf-default" in rows, bool(plain))
            # Fed steps of 0.7 s: np 2 moves 64 images a step, np 1 32, the pair 2 x 32.
            scale, limit = rows["scale/np2"], rows["scale/limit"]
            self.assertAlmostEqual(scale["ours"], 64 / 0.7)
            self.assertAlmostEqual(scale["reference"], 32 / 0.7)
            self.assertAlmostEqual(scale["ratio"], 2.0)
            self.assertAlmostEqual(limit["ratio"], 1.0)
            # Lockstep steps of 0.6 s: the exchange costs 0.1 s of 0.7, lockstep gains on the pair.
            exchange, lockstep = rows["scale/exchange"], rows["scale/lockstep"]
            self.assertAlmostEqual(exchange["ours"], 64 / 0.7)
            self.assertAlmostEqual(exchange["reference"], 64 / 0.6)
            self.assertAlmostEqual(exchange["ratio"], 0.6 / 0.7)
            self.assertAlmostEqual(lockstep["ours"], 64 / 0.6)
            self.assertAlmostEqual(lockstep["reference"], 64 / 0.7)
            self.assertEqual(exchange["paired"]["rounds"], 2)
            self.assertEqual(scale["paired"]["rounds"], 2)
            self.assertEqual(sorted((x["side"], x["extra"]["round"], x["extra"]["np1_core"]) for x in samples
                                    if x["row"] == "scale/np2"),
                             [("ours", 0, 0), ("ours", 1, 0), ("reference", 0, 0), ("reference", 1, 0)])
            # Overlapped steps of 0.64 s against 0.7 s, paired by round, the hidden share kept.
            over = rows["scale/overlap"]
            self.assertAlmostEqual(over["ours"], 64 / 0.64)
            self.assertAlmostEqual(over["reference"], 64 / 0.7)
            self.assertAlmostEqual(over["ratio"], 0.7 / 0.64)
            self.assertEqual(over["paired"]["rounds"], 2)
            self.assertEqual(sorted((x["side"], x["extra"].get("allreduce_hidden_pct")) for x in samples
                                    if x["row"] == "scale/overlap"),
                             [("ours", 40.0), ("ours", 40.0), ("reference", None), ("reference", None)])
            premade, step = rows["train/r18/fp32/premade"], rows["train/r18/fp32/step"]
            self.assertEqual((premade["ours"], step["ours"]), (0.5, 0.7))
            self.assertGreater(premade["reference"], 0)
            self.assertEqual(premade["reference"], step["reference"])
            # Keras fed by tf.data from the same records: its own turn, timed for real.
            same = rows["train/r18/fp32/same-work"]
            self.assertEqual(same["ours"], 0.7)
            self.assertGreater(same["reference"], 0)
            self.assertAlmostEqual(rows["train/r18/fp32/overhead"]["ratio"], 0.4)
            self.assertEqual(sum(1 for x in samples if x["row"] == "train/r18/fp32/premade"), 4)
            self.assertEqual(sum(1 for x in samples if x["row"] == "train/r18/fp32/same-work"), 4)
            # Each sample names its round, so table.py pairs the two sides of the same round.
            self.assertEqual(sorted((x["side"], x["extra"]["round"]) for x in samples
                                    if x["row"] == "train/r18/fp32/premade"),
                             [("ours", 0), ("ours", 1), ("reference", 0), ("reference", 1)])
            self.assertEqual(rows["train/r18/fp32/premade"]["paired"]["rounds"], 2)
            self.assertEqual({x["extra"]["round"] for x in samples if x["row"] == "allreduce/2/1M"}, {0})
            # np 2 vs np 1 is read against the 1.9x, the other rows against 1.0.
            self.assertEqual({x.get("target") for x in samples if x["row"] == "scale/np2"}, {1.9})
            self.assertEqual({x.get("target") for x in samples if x["row"] != "scale/np2"}, {None})
            md = read(os.path.join(results, "latest.md"))
            self.assertIn("| all-reduce np 2, 25.6M floats: ours (hierarchical) vs MPI_Allreduce | 8.00 | 2.00 | 4.00x "
                          "| GB/s bus |", md)
            self.assertIn("| all-reduce np 2, 25.6M floats: flat ring vs MPI_Allreduce | 4.00 | 2.00 | 2.00x | GB/s bus |",
                          md)
            # The header says how to repeat the run, sections included.
            self.assertIn("command: `QUICK=1 bash bench/run.sh --only train,allreduce,scaling`", md)
            self.assertIn("make-synthetic missing", md)
            # Every trainer row is served now, so the fake trainer answers them all.
            self.assertIn("- missing commands of ours: target/release/make-synthetic\n", md)
            self.assertIn(md.split("\n\n| what")[1][:10], p.stdout)
            self.assertRegex(md, r"- CPU time outside the bench's own processes during the run: \d+ s of \d+ s busy")
            # What each path's processes used per step, from their answers.
            self.assertIn("np 2 630 ms CPU in a 700 ms step, 1 minor faults, 20 involuntary switches; "
                          "np 2 in lockstep 540 ms CPU in a 600 ms step, 3 minor faults", md)

    def test_scaling_turns_take_every_order_and_place_equally_often(self):
        sys.path.insert(0, BENCH)
        import harness
        orders = ["".join(harness.turn_order(list("JAP"), i)) for i in range(12)]
        self.assertEqual(orders[:6], ["JAP", "PAJ", "APJ", "JPA", "PJA", "AJP"])
        self.assertEqual(orders[6:], orders[:6])
        for side in "JAP":
            self.assertEqual([sum(o[place] == side for o in orders) for place in range(3)], [4, 4, 4])
        follows = [o[n:n + 2] for o in orders for n in range(2)]
        self.assertEqual({f: follows.count(f) for f in set(follows)},
                         {a + b: 4 for a in "JAP" for b in "JAP" if a != b})
        bin_dir = os.path.join(os.sep, "r", "target", "release")
        self.assertEqual(harness.our_exe(["mpirun", "-np", "2", os.path.join(bin_dir, "trainer"), "bench"], bin_dir),
                         os.path.join(bin_dir, "trainer"))
        self.assertIsNone(harness.our_exe(["python", "x.py"], bin_dir))

    def test_foreign_cpu_is_the_machines_busy_time_less_the_benchs_own(self):
        sys.path.insert(0, BENCH)
        import harness
        self.assertEqual(harness.foreign_cpu((100.0, 1.0, 10.0), (190.0, 4.0, 70.0)), (30.0, 3.0, 90.0))
        # Our own count can run ahead of the machine's coarser ticks: never a negative share.
        self.assertEqual(harness.foreign_cpu((0.0, 0.0, 0.0), (5.0, 0.0, 5.5)), (0.0, 0.0, 5.0))
        self.assertIsNone(harness.foreign_cpu(None, (1.0, 0.0, 1.0)))
        self.assertIn("30 s of 90 s busy (33.3%", harness.cpu_line((30.0, 3.0, 90.0)))
        before = harness.cpu_clock()
        deadline = time.time() + 0.5
        while time.time() < deadline:
            pass
        _, _, busy = harness.foreign_cpu(before, harness.cpu_clock())
        self.assertGreaterEqual(busy, 0.3)  # this process spun for half a second

    def test_the_speed_line_gives_each_probe_and_flags_a_box_that_changed_speed(self):
        sys.path.insert(0, BENCH)
        import harness
        line = harness.speed_line([("start", 50.0), ("after train R18 fp32", None), ("after scaling", 45.0)])
        self.assertIn("start 50.0, after scaling 45.0; slowest 90% of fastest (within the probe's own spread)", line)
        self.assertNotIn("after train", line)  # a failed probe is left out, not shown as 0
        line = harness.speed_line([("start", 50.0), ("after train R18 fp32", 30.0)])
        self.assertIn("slowest 60% of fastest (the box itself changed speed during the run", line)
        self.assertIn("not measured", harness.speed_line([("start", None)]))
        self.assertIn("not measured", harness.speed_line([]))

    def test_the_header_names_the_commit_and_says_when_the_tree_differs(self):
        sys.path.insert(0, BENCH)
        import harness
        with tempfile.TemporaryDirectory() as repo:
            self.assertEqual(harness.source_commit(repo), "unknown")  # not a git checkout
            git = lambda *a: subprocess.run(["git", "-C", repo, "-c", "user.name=t", "-c", "user.email=t@t"]
                                            + list(a), check=True, capture_output=True, text=True).stdout
            git("init", "-q")
            with open(os.path.join(repo, "f"), "w") as f:
                f.write("a\n")
            git("add", "f")
            git("commit", "-qm", "one")
            head = git("rev-parse", "--short", "HEAD").strip()
            self.assertEqual(harness.source_commit(repo), head)
            with open(os.path.join(repo, "new"), "w") as f:
                f.write("untracked files are not the measured code\n")
            self.assertEqual(harness.source_commit(repo), head)
            with open(os.path.join(repo, "f"), "w") as f:
                f.write("b\n")
            self.assertEqual(harness.source_commit(repo), head + " + uncommitted changes")

    def test_sigterm_writes_the_table_and_removes_the_work_folder(self):
        with tempfile.TemporaryDirectory() as root:
            tmp = os.path.join(root, "tmp")
            os.makedirs(os.path.join(root, "target", "release"))
            os.makedirs(tmp)
            results = os.path.join(root, "results")
            env = dict(os.environ, TMPDIR=tmp, TF_CPP_MIN_LOG_LEVEL="2")
            p = subprocess.Popen([sys.executable, os.path.join(BENCH, "harness.py"), "--root", root, "--quick",
                                  "--only", "records", "--results", results],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
            # Wait until the synthetic images are being written into the work folder.
            deadline = time.monotonic() + 120
            work = []
            while time.monotonic() < deadline and p.poll() is None:
                work = [os.path.join(tmp, d) for d in os.listdir(tmp) if d.startswith("dawnrun-bench-")]
                if work and any(files for _, _, files in os.walk(work[0])):
                    break
                time.sleep(0.1)
            self.assertTrue(work, "no work folder appeared")
            self.assertIsNone(p.poll(), "the harness ended before it was signalled")
            p.terminate()
            out, err = p.communicate(timeout=60)
            self.assertEqual(p.returncode, 128 + signal.SIGTERM, err[-3000:])
            self.assertFalse(os.path.exists(work[0]), "the work folder was left behind")
            self.assertTrue(os.path.exists(os.path.join(results, "latest.md")), err[-3000:])


if __name__ == "__main__":
    unittest.main()
