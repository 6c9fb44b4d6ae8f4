"""`make bench`: run every side-by-side comparison and write the one results table.

Flow (each step appends samples to <results>/samples.jsonl as it goes, so a crash keeps what ran):
  1. data: the default synthetic set and a larger generated set (make-synthetic; the pillow
     stand-in bench/py/make_folder.py if that binary is missing, said in the header);
  2. records: build-records vs build_records_tf.py vs reading the input files (page cache warm);
  3. input pipeline at 128 px (160 records) and 224 px (320 records), on the synthetic set and on
     a photo-like set (bench/py/make_photos.py): pipeline-bench vs tf.data, train mode and bare
     whole-image decode (both sides read and parse the same records), and libjpeg-turbo's own
     tjbench decode rate of the same JPEG files (full size and 1/2 scale) as the limit;
  4. training step: trainer bench vs the Keras step, with the pipeline and on a pre-made batch,
     ResNet-18 and ResNet-50, fp32 and bf16 (the trainer at np 1 takes its one-run step);
  5. all-reduce: ours (hierarchical, the default) and the flat ring, each vs MPI_Allreduce, at
     np 2, 4, 8 for 1M and 25.6M floats (the three interleaved in one job);
  6. scaling: trainer bench images/s at np 2 vs np 1 (mpirun binds each rank to its own core),
     np 2 vs two independent np 1 trainers pinned one per core (the limit without communication),
     and at np 2 with the all-reduce overlapped with backward vs not.
Before the first section and after each (after each net and precision in the train section) the
box's own speed is probed (bench/py/box_speed.py on every core at once) for the header.
Both sides of a comparison run alternately (ours first in even repetitions, the reference first in
odd ones) and table.py takes medians. A missing command of ours becomes "n/a (missing: cmd)" in
its row; a failing one becomes "error: ..." with the stderr tail in <results>/bench.log. Nothing
here stops the whole run except a broken reference side, which is a bug of this folder.
"""
import argparse
import contextlib
import datetime
import json
import os
import platform
import queue
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import table  # noqa: E402

MB = 1e6
# Every section of the bench, in the order it runs (`--only` picks some).
ONLY_ALL = "records,pipeline,train,allreduce,scaling"
FLOATS = [("1M", 1_000_000), ("25.6M", 25_600_000)]


class Missing(Exception):
    """Our command does not exist yet, or is a stub that printed no JSON."""


class Failed(Exception):
    """The command ran and failed; the message holds the exit code and the stderr tail."""


def is_missing_output(out, err):
    """True when a failed command of ours says it does not know the subcommand or a flag."""
    text = (out + err).lower()
    clap_words = ("unrecognized subcommand", "unexpected argument", "unrecognized option",
                  "not implemented", "unknown option")
    return any(w in text for w in clap_words)


def json_lines(text):
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            try:
                found.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return found


def our_exe(cmd, bin_dir):
    """The binary of ours in `bin_dir` that cmd runs (directly or behind mpirun or taskset), or
    None."""
    return next((c for c in cmd if c.startswith(bin_dir + os.sep)), None)


USAGE_PATHS = {"trainer": "np 2", "lockstep": "np 2 in lockstep", "np1": "np 1", "pair": "the pair"}


def usage_note(used):
    """One note line from the scaling rows' `usage_per_step` answers: per path, the medians over
    turns and ranks of the turn's mean step (wall time, as the CPU time is a turn's mean), the
    CPU time a rank used in it (all its threads; a rank bound to one core uses at most the step),
    its minor page faults and involuntary context switches. A row that moves between runs can
    then be read: faults where a process maps and unmaps its tensors each step, CPU short of the
    wall time or many involuntary switches where a core was shared with something else."""
    parts = []
    for path, name in USAGE_PATHS.items():
        u = used.get(path) or []
        if not u:
            continue

        def med(key):
            return statistics.median(x.get(key) or 0.0 for x in u)
        parts.append("%s %.0f ms CPU in a %.0f ms step, %.0f minor faults, %.0f involuntary switches" % (
            name, 1000 * med("cpu_s"), 1000 * med("step_s"), med("minor_faults"), med("involuntary_switches")))
    return ("- scaling, what a rank's process used per step (medians over turns and ranks, getrusage "
            "through `usage_per_step`): " + "; ".join(parts))


def turn_order(turns, i):
    """The turns of round i: every order of three sides in six rounds (rotated every two rounds,
    reversed every other round), so each side takes each place, and follows each other side,
    equally often."""
    rotated = turns[(i // 2) % len(turns):] + turns[:(i // 2) % len(turns)]
    return rotated if i % 2 == 0 else list(reversed(rotated))


class Served:
    """A `--serve` process (or mpirun job) of one side of the step or scaling rows: started,
    warmed up (its JSON `ready` line), asked for runs of steps, closed on exit. Failures raise
    Missing or Failed."""

    def __init__(self, bench, cmd, ours, env=None):
        self.bench, self.cmd, self.ours, self.env = bench, cmd, ours, env
        self.lines = queue.Queue()

    def __enter__(self):
        b = self.bench
        exe = our_exe(self.cmd, b.bin) if self.ours else None
        if exe and not os.path.exists(exe):
            raise Missing(os.path.relpath(exe, b.root))
        b.log.write("$ %s (serving)\n" % " ".join(self.cmd))
        b.log.flush()
        self.err = tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen(self.cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.err,
                                     text=True, env=self.env)
        threading.Thread(target=self._read, daemon=True).start()
        try:
            ready = self._next()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        self.params = ready.get("params")
        return self

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def _next(self):
        """The next JSON line; Missing/Failed if the process ends or stays silent too long."""
        while True:
            try:
                line = self.lines.get(timeout=self.bench.args.timeout)
            except queue.Empty:
                raise Failed("no answer within %ss" % self.bench.args.timeout)
            if line is None:
                self.proc.wait()
                self.err.seek(0)
                err = self.err.read()
                self.bench.log.write(err[-4000:] + "(exit %d)\n" % self.proc.returncode)
                if self.ours and is_missing_output("", err):
                    raise Missing(self.bench.contract(self.cmd))
                tail = (err.strip().splitlines() or ["(no stderr)"])[-1]
                raise Failed("exit %s: %s" % (self.proc.returncode, tail))
            found = json_lines(line)
            if found:
                return found[0]

    def ask(self, path, k):
        """Request k steps of `path` without waiting for them (see `answer`)."""
        try:
            self.proc.stdin.write("%s %d\n" % (path, k))
            self.proc.stdin.flush()
        except OSError:
            pass  # it has ended: _next says how

    def answer(self):
        """The step times of the last request (its whole answer stays in `last`)."""
        self.last = self._next()
        return self.last["step_s"]

    def steps(self, path, k):
        self.ask(path, k)
        return self.answer()

    def __exit__(self, *exc):
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            # SIGTERM first: mpirun then ends its ranks, which a SIGKILL would leave running.
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.err.close()
        return False


class Bench:
    def __init__(self, args):
        self.args = args
        self.root = args.root
        self.bin = os.path.join(self.root, "target", "release")
        self.py = sys.executable
        self.quick = args.quick
        self.reps = 1 if args.quick else args.reps
        self.step_rounds = 2 if args.quick else args.step_rounds
        self.step_pairs = max(1, min(self.step_rounds, 2 if args.quick else args.step_pairs))
        self.work = args.work or tempfile.mkdtemp(prefix="dawnrun-bench-")
        self.results = args.results
        os.makedirs(self.results, exist_ok=True)
        self.samples_path = os.path.join(self.results, "samples.jsonl")
        open(self.samples_path, "w").close()
        self.log = open(os.path.join(self.results, "bench.log"), "w")
        self.notes = []
        self.load_at_start = os.getloadavg()[0]
        # The commit the binaries were built from: read now, since a commit made while the bench
        # runs would otherwise name code it did not measure.
        self.commit = source_commit(self.root)
        self.cpu_at_start = cpu_clock()
        self.rows = {}
        self.params = {}
        self.missing = set()
        self.rates = {}
        self.speeds = []  # (when, the box's GFLOP/s or None): see probe_speed

    def probe_speed(self, when):
        """Time bench/py/box_speed.py on every core at once and keep the sum for the header: the
        box's own speed between sections, which /proc/stat's busy and stolen time do not show (one
        run here found every step 23-62% slower 40 minutes after a quiet full run)."""
        cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        cmd = [self.py, self.script("box_speed.py")]
        procs = []
        try:
            for c in cores:
                procs.append(subprocess.Popen(["taskset", "-c", str(c)] + cmd, stdout=subprocess.PIPE,
                                              stderr=subprocess.DEVNULL, text=True))
            outs = [p.communicate(timeout=120)[0] for p in procs]
            total = sum(json.loads(o.strip().splitlines()[-1])["gflops"] for o in outs) if outs else None
        except (OSError, ValueError, KeyError, IndexError, subprocess.TimeoutExpired) as e:
            for p in procs:  # a probe that failed to start or hung leaves none of the others running
                if p.poll() is None:
                    p.kill()
                    p.wait()
            self.say("box speed probe %s failed: %s" % (when, e))
            total = None
        self.speeds.append((when, total))
        if total is not None:
            self.say("box speed %s: %.1f GFLOP/s over %d cores" % (when, total, len(cores)))

    # ---- running commands -------------------------------------------------------------------
    def say(self, msg):
        line = "[bench %s] %s" % (time.strftime("%H:%M:%S"), msg)
        print(line, file=sys.stderr, flush=True)
        self.log.write(line + "\n")
        self.log.flush()

    def run(self, cmd, timeout=None):
        """Run cmd; returns (stdout, wall seconds). Raises Missing or Failed."""
        exe = our_exe(cmd, self.bin) or cmd[0]
        if exe.startswith(self.bin) and not os.path.exists(exe):
            raise Missing(os.path.relpath(exe, self.root))
        self.log.write("$ %s\n" % " ".join(cmd))
        self.log.flush()
        start = time.perf_counter()
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout or self.args.timeout)
        except subprocess.TimeoutExpired:
            raise Failed("timed out after %ss" % (timeout or self.args.timeout))
        seconds = time.perf_counter() - start
        self.log.write(p.stdout[-4000:] + p.stderr[-4000:] + "(exit %d, %.2f s)\n" % (p.returncode, seconds))
        self.log.flush()
        if p.returncode != 0:
            if exe.startswith(self.bin) and is_missing_output(p.stdout, p.stderr):
                raise Missing(self.contract(cmd))
            tail = (p.stderr.strip().splitlines() or ["(no stderr)"])[-1]
            raise Failed("exit %d: %s" % (p.returncode, tail))
        return p.stdout, seconds

    def contract(self, cmd):
        """Short name of one of our commands for 'n/a (missing: ...)': binary + subcommand."""
        words = [os.path.relpath(c, self.root) if c.startswith(self.bin) else c for c in cmd]
        words = words[next((i for i, w in enumerate(words) if w.startswith("target/")), 0):]
        keep = [words[0]] + [w for w in words[1:2] if not w.startswith("-")]
        return " ".join(keep)

    def run_json(self, cmd, ours, timeout=None):
        """The JSON lines cmd printed on stdout; a command of ours that prints none is a stub."""
        out, _ = self.run(cmd, timeout)
        objs = json_lines(out)
        if not objs:
            if ours:
                raise Missing(self.contract(cmd))
            raise Failed("no JSON line in output of %s" % os.path.basename(cmd[1]))
        return objs

    def exe(self, name):
        return os.path.join(self.bin, name)

    def script(self, name):
        return os.path.join(HERE, "py", name)

    def define(self, row, what, unit, kind, target=None):
        """Register a row's label once; samples then name only the row id. `target`: the ratio
        the row must reach, where that is not 1.0 (table.py reads the row against it)."""
        self.rows[row] = (what, unit, kind, target)
        return row

    def sample(self, row, side, value=None, missing=None, error=None, extra=None):
        what, unit, kind, target = self.rows[row]
        s = {"row": row, "what": what, "unit": unit, "kind": kind, "side": side}
        if target is not None:
            s["target"] = target
        if value is not None:
            s["value"] = value
        elif missing:
            s["missing"] = missing
            self.missing.add(missing)
        else:
            s["error"] = error or "no value"
        if extra:
            s["extra"] = extra
        with open(self.samples_path, "a") as f:
            f.write(json.dumps(s) + "\n")

    def measure(self, targets, fn, round_no=None):
        """Run fn() -> {(row, side): value or (value, extra)}; on Missing/Failed mark every target.
        `round_no` tags each value with its alternation, so table.py can pair the two sides."""
        try:
            values = fn()
        except (Missing, Failed) as e:
            self.mark(targets, e)
            return
        for (row, side), v in values.items():
            value, extra = v if isinstance(v, tuple) else (v, None)
            if round_no is not None:
                extra = dict(extra or {}, round=round_no)
            self.sample(row, side, value=value, extra=extra)

    def mark(self, targets, e):
        """Every (row, side) in targets gets the Missing or Failed `e` instead of a value."""
        key = "missing" if isinstance(e, Missing) else "error"
        self.say("%s: %s (rows %s)" % (key, e, sorted({r for r, _ in targets})))
        for row, side in targets:
            self.sample(row, side, **{key: str(e)})

    def alternate(self, runs, reps=None):
        """runs: [(targets, fn)] measured reps (default: --reps) times, the order reversed in
        odd repetitions."""
        for rep in range(self.reps if reps is None else reps):
            for targets, fn in (runs if rep % 2 == 0 else list(reversed(runs))):
                self.measure(targets, fn, round_no=rep)

    # ---- 1. data ----------------------------------------------------------------------------
    def make_data(self, name, extra_args):
        out = os.path.join(self.work, name)
        cmd = [self.exe("make-synthetic"), "--out", out] + extra_args
        try:
            _, seconds = self.run(cmd)
            if not os.path.isdir(os.path.join(out, "160", "train")):
                raise Missing("target/release/make-synthetic")
            made_by = "make-synthetic"
        except (Missing, Failed) as e:
            self.say("make-synthetic unusable (%s): using bench/py/make_folder.py" % e)
            if isinstance(e, Missing):
                self.missing.add(str(e))
            shutil.rmtree(out, ignore_errors=True)
            _, seconds = self.run([self.py, self.script("make_folder.py"), "--out", out] + extra_args)
            made_by = "bench/py/make_folder.py (make-synthetic missing)"
        info = {}
        for size in sorted(os.listdir(out)):
            tree = os.path.join(out, size)
            if not (size.isdigit() and os.path.isdir(tree)):
                continue
            count = nbytes = 0
            for dirpath, _, names in os.walk(tree):
                for n in names:
                    count += 1
                    nbytes += os.path.getsize(os.path.join(dirpath, n))
            info[size] = (count, nbytes)
        desc = ", ".join("%s px tree %d files %.1f MB" % (s, c, b / MB) for s, (c, b) in info.items())
        self.notes.append("- data `%s`: `%s` (%s) by %s in %.1f s" % (
            name, " ".join(extra_args) or "(defaults)", desc, made_by, seconds))
        self.say("data %s: %s" % (name, desc))
        return out, info

    def make_photos(self, per_class):
        """The photo-like set (bench/py/make_photos.py): 10 classes, 160 and 320 px trees."""
        out = os.path.join(self.work, "photos")
        shutil.rmtree(out, ignore_errors=True)
        _, seconds = self.run([self.py, self.script("make_photos.py"), "--out", out, "--train-per-class",
                               str(per_class), "--val-per-class", "5"])
        desc = []
        for size in ("160", "320"):
            paths = [os.path.join(d, n) for d, _, ns in os.walk(os.path.join(out, size)) for n in ns]
            desc.append("%s px tree %d files %.1f MB" % (size, len(paths), sum(map(os.path.getsize, paths)) / MB))
        self.notes.append("- data `photos`: `bench/py/make_photos.py --train-per-class %d --val-per-class 5` (%s; "
                          "quality 60-95, 4:2:0/4:2:2/4:4:4, 15%% progressive, 5%% grayscale) in %.1f s"
                          % (per_class, ", ".join(desc), seconds))
        return out

    # ---- 2. records -------------------------------------------------------------------------
    def records_rows(self, label, tree, train_shards, val_shards, n_files):
        tf_row = self.define("records/%s/tf" % label,
                             "records: build-records vs build_records_tf.py, %s (%d images)" % (label, n_files),
                             "images/s", "rate")
        io_row = self.define("records/%s/io" % label,
                             "records: build-records vs reading the input files (I/O limit), %s" % label,
                             "MB/s of input", "rate")
        in_bytes = sum(os.path.getsize(os.path.join(d, n)) for d, _, ns in os.walk(tree) for n in ns)
        out_dir = os.path.join(self.work, "rec-bench")
        shards = ["--train-shards", str(train_shards), "--validation-shards", str(val_shards)]

        def ours():
            shutil.rmtree(out_dir, ignore_errors=True)
            _, seconds = self.run([self.exe("build-records"), "--input", tree, "--output", out_dir] + shards)
            if not (os.path.isdir(out_dir) and any(n.startswith("train-") for n in os.listdir(out_dir))):
                raise Missing("target/release/build-records")
            return {(tf_row, "ours"): n_files / seconds, (io_row, "ours"): in_bytes / MB / seconds}

        def reference():
            shutil.rmtree(out_dir, ignore_errors=True)
            r = self.run_json([self.py, self.script("build_records_tf.py"), "--input", tree, "--output", out_dir,
                               "--threads", "2"] + shards, ours=False)[-1]
            return {(tf_row, "reference"): r["images"] / r["seconds"]}

        def limit():
            r = self.run_json([self.py, self.script("read_files.py"), "--input", tree, "--threads", "2"],
                              ours=False)[-1]
            return {(io_row, "reference"): r["bytes"] / MB / r["seconds"]}

        self.run([self.py, self.script("read_files.py"), "--input", tree])  # warm the page cache
        self.alternate([([(tf_row, "ours"), (io_row, "ours")], ours),
                        ([(tf_row, "reference")], reference),
                        ([(io_row, "reference")], limit)])
        shutil.rmtree(out_dir, ignore_errors=True)

    def prepare_records(self, tree, name):
        """Records of one tree for the later rows: ours if build-records works, else the reference's."""
        out_dir = os.path.join(self.work, name)
        shards = ["--train-shards", "8", "--validation-shards", "2"]
        try:
            self.run([self.exe("build-records"), "--input", tree, "--output", out_dir] + shards)
            if os.path.isdir(out_dir) and any(n.startswith("train-") for n in os.listdir(out_dir)):
                return out_dir, "build-records"
        except (Missing, Failed) as e:
            self.say("build-records unusable for %s (%s): using build_records_tf.py" % (name, e))
        shutil.rmtree(out_dir, ignore_errors=True)
        self.run([self.py, self.script("build_records_tf.py"), "--input", tree, "--output", out_dir] + shards)
        return out_dir, "build_records_tf.py"

    # ---- 3. input pipeline ------------------------------------------------------------------
    def pipeline_rows(self, records, px, data="synthetic", prefix="pipe"):
        """Rows for one data set at one size; `prefix` keeps the synthetic rows' ids as they were."""
        unit = "images/s (2 threads)"
        on = "" if data == "synthetic" else " (%s)" % data
        train_row = self.define("%s/%d/train" % (prefix, px),
                                "pipeline %d px%s: decode+crop+resize+flip, pipeline-bench vs tf.data" % (px, on),
                                unit, "rate")
        decode_row = self.define("%s/%d/decode" % (prefix, px),
                                 "bare whole-image JPEG decode of the %d px rows' records%s, records read and "
                                 "parsed on both sides: ours (libjpeg-turbo) vs tf.data" % (px, on), unit, "rate")
        limit_row = self.define("%s/%d/limit" % (prefix, px),
                                "pipeline %d px%s (ours column) vs our own bare whole-image decode (reference column)"
                                % (px, on), unit, "rate")
        common = ["--records", records, "--prefix", "train", "--px", str(px), "--batch", "64", "--threads", "2",
                  "--seconds", str(self.args.pipeline_seconds)]

        def ours(mode):
            def go():
                out = self.run_json([self.exe("pipeline-bench")] + common + ["--mode", mode, "--json"],
                                    ours=True)[-1]
                v = out["images_per_s"]
                # Our train rate is also the limit row's ours side; our decode rate its reference side.
                if mode == "train":
                    self.rates.setdefault((prefix, px), []).append(v)
                    return {(train_row, "ours"): (v, {"stages_us_per_image": out.get("stages_us_per_image")}),
                            (limit_row, "ours"): v}
                return {(decode_row, "ours"): v, (limit_row, "reference"): v}
            targets = ([(train_row, "ours"), (limit_row, "ours")] if mode == "train"
                       else [(decode_row, "ours"), (limit_row, "reference")])
            return targets, go

        def reference(mode):
            row = train_row if mode == "train" else decode_row

            def go():
                v = self.run_json([self.py, self.script("pipeline_tf.py")] + common + ["--mode", mode],
                                  ours=False)[-1]["images_per_s"]
                return {(row, "reference"): v}
            return [(row, "reference")], go

        # One alternation over all four, so the limit row's two sides (our train and decode runs)
        # are measured next to each other in every repetition, as the tf.data rows' sides are.
        self.alternate([ours("train"), ours("decode"), reference("train"), reference("decode")])

    def tjbench_rows(self, tree, px, data="synthetic", prefix="pipe"):
        """The decode limit: libjpeg-turbo's tjbench (single-threaded) on a sample of the same JPEG
        files, full size and 1/2 scale, as images/s x 2 cores. Ours: the pipeline's median rate."""
        unit = "images/s (2 threads)"
        on = "" if data == "synthetic" else " (%s)" % data
        rows = {}
        for scale in ("1/1", "1/2"):
            rows[scale] = self.define(
                "%s/%d/tjbench%s" % (prefix, px, "" if scale == "1/1" else "-half"),
                "pipeline %d px%s (ours column) vs tjbench decode of the same JPEGs at %s scale, "
                "1 thread x 2 (reference column)" % (px, on, scale), unit, "rate")
        tj = shutil.which("tjbench")
        files = sorted(os.path.join(d, n) for d, _, ns in os.walk(os.path.join(tree, "train")) for n in ns)
        if not tj or not files:
            for row in rows.values():
                self.sample(row, "reference", error="tjbench not installed (Debian libjpeg-turbo-progs)")
            return
        sample = files[::max(1, len(files) // self.args.tjbench_files)][:self.args.tjbench_files]
        for scale, row in rows.items():
            seconds = 0.0
            for f in sample:
                cmd = [tj, f, "-benchtime", str(self.args.tjbench_seconds), "-warmup", "0.1", "-quiet"]
                if scale != "1/1":
                    cmd += ["-scale", scale]
                try:
                    out, _ = self.run(cmd)
                except Failed as e:
                    self.sample(row, "reference", error=str(e))
                    break
                mpix = float(out.strip().splitlines()[-1].split()[-1])
                w, h = [int(v) for v in out.strip().splitlines()[-1].split()[4:6]]
                seconds += w * h / (mpix * 1e6)
            else:
                self.sample(row, "reference", value=2 * len(sample) / seconds,
                            extra={"files": len(sample), "tool": "tjbench %s" % scale})
            if (prefix, px) in self.rates:
                self.sample(row, "ours", value=statistics.median(self.rates[(prefix, px)]))

    # ---- 4. training step -------------------------------------------------------------------
    def trainer_cmd(self, records, precision, np_ranks=None, depth=18):
        a = self.args
        cmd = [self.exe("trainer"), "bench", "--depth", str(depth), "--classes", str(a.classes),
               "--px", "128", "--batch", "32", "--steps", str(a.steps),
               "--warmup", str(a.warmup),
               "--precision", precision, "--records", records, "--json"]
        if np_ranks:
            cmd = ["mpirun", "-np", str(np_ranks), "--oversubscribe"] + cmd
        return cmd

    def train_rows(self, records, precision, depth):
        """Both sides stay up (`--serve`) and take turns in short runs of steps, so each round
        gives both the same few seconds of the machine, whose speed drifts by up to ~10% over
        minutes (a 5-process alternation still split 3:2 across such a drift). One sample per
        side per round: the median of that round's steps. The rounds are shared out over
        `--step-pairs` pairs of processes, started one pair after another."""
        a = self.args
        rounds, k = self.step_rounds, self.steps_per_round(depth)
        # The rounds are spread over several pairs of processes: one process's speed stays 1-5%
        # off another's of the same code for its whole life, so one pair per row put that luck
        # into the row.
        per_pair = max(1, -(-rounds // self.step_pairs))
        pairs = -(-rounds // per_pair)
        net = "ResNet-%d %s, %d classes, 128 px, batch 32, %d rounds x %d steps over %d process pair%s" % (
            depth, precision, a.classes, rounds, k, pairs, "" if pairs == 1 else "s")
        key = "train/r%d/%s" % (depth, precision)
        step_row = self.define(key + "/step",
                               "train step %s: trainer at np 1 (fed by its pipeline) vs Keras tf.function on "
                               "the pre-made batch (DIFFERENT WORK: only ours decodes its input)"
                               % net, "s/step", "time")
        same_row = self.define(key + "/same-work",
                               "train step %s: trainer at np 1 vs Keras tf.function fed by tf.data from the "
                               "same records (both decode, crop, resize and flip their input on the same "
                               "cores)" % net, "s/step", "time")
        premade_row = self.define(key + "/premade",
                                  "train step %s, pre-made batch: our graph vs Keras" % net, "s/step", "time")
        over_row = self.define(key + "/overhead",
                               "trainer step ResNet-%d %s (ours column) vs our graph on a pre-made batch"
                               % (depth, precision), "s/step", "overhead")
        ours = self.trainer_cmd(records, precision, depth=depth) + ["--serve"]
        reference = [self.py, self.script("train_step_tf.py"), "--depth", str(depth), "--classes",
                     str(a.classes), "--px", "128", "--batch", "32", "--warmup", str(a.warmup),
                     "--precision", precision, "--serve", "--records", records]
        targets = [(r, side) for r in (step_row, same_row, premade_row, over_row)
                   for side in ("ours", "reference")]
        # Where TensorFlow's own default is its Eigen kernels (no oneDNN on this CPU), also time
        # Keras as a user gets it without setting anything: a fourth turn in the same rounds.
        default_row = None
        if depth == 18 and os.environ.get("TF_ENABLE_ONEDNN_OPTS") == "1" and not self.tf_default_onednn():
            default_row = self.define(
                key + "/step-tf-default",
                "train step %s: trainer at np 1 vs Keras at TensorFlow's default kernels on this CPU "
                "(DIFFERENT WORK: Eigen kernels on the Keras side, oneDNN on ours)" % net, "s/step", "time")
            targets += [(default_row, "ours"), (default_row, "reference")]

        def serve_pair(first_round):
            """One pair of processes (with the Keras-at-default one where needed), its share of
            the rounds. Which side starts first alternates between pairs: a process started
            first ran 1-2% slower than its twin started second, whatever it was."""
            default_env = dict(os.environ)
            default_env.pop("TF_ENABLE_ONEDNN_OPTS", None)
            pair = first_round // per_pair
            with contextlib.ExitStack() as stack:
                starts = [("ours", ours, None), ("reference", reference, None)]
                if pair % 2:
                    starts.reverse()
                if default_row:
                    starts.append(("plain", reference, default_env))
                served = {name: stack.enter_context(Served(self, cmd, ours=name == "ours", env=env))
                          for name, cmd, env in starts}
                us, ref, plain = served["ours"], served["reference"], served.get("plain")
                self.check_params((depth, precision), "ours", us.params)
                self.check_params((depth, precision), "reference", ref.params)
                for i in range(first_round, min(first_round + per_pair, rounds)):
                    turns = [(us, "premade"), (ref, "premade"), (us, "trainer"), (ref, "tfdata")]
                    turns += [(plain, "premade")] if plain else []
                    got = {}
                    for side, path in (turns if i % 2 == 0 else list(reversed(turns))):
                        got[(id(side), path)] = statistics.median(side.steps(path, k))
                    mine = lambda path: got[(id(us), path)]
                    values = {(step_row, "ours"): mine("trainer"),
                              (premade_row, "ours"): mine("premade"),
                              (over_row, "ours"): mine("trainer"),
                              (over_row, "reference"): mine("premade"),
                              (step_row, "reference"): got[(id(ref), "premade")],
                              (same_row, "ours"): mine("trainer"),
                              (same_row, "reference"): got[(id(ref), "tfdata")],
                              (premade_row, "reference"): got[(id(ref), "premade")]}
                    if plain:
                        values[(default_row, "ours")] = mine("trainer")
                        values[(default_row, "reference")] = got[(id(plain), "premade")]
                    for (row, side), v in values.items():
                        self.sample(row, side, value=v, extra={"pair": pair, "round": i})

        def go():
            for first in range(0, rounds, per_pair):
                serve_pair(first)

        try:
            go()
        except (Missing, Failed) as e:
            self.mark(targets, e)

    def tf_default_onednn(self):
        """Whether TensorFlow turns its oneDNN kernels on by itself on this CPU (asked once)."""
        if not hasattr(self, "_tf_default_onednn"):
            env = dict(os.environ)
            env.pop("TF_ENABLE_ONEDNN_OPTS", None)
            probe = "from tensorflow.python.util import _pywrap_util_port as p; print(p.IsMklEnabled())"
            out = subprocess.run([self.py, "-c", probe], env=env, capture_output=True, text=True)
            self._tf_default_onednn = out.stdout.strip().endswith("True")
            self.notes.append("- TensorFlow's own default on this CPU: oneDNN kernels %s" % (
                "on" if self._tf_default_onednn else "off (Eigen)"))
        return self._tf_default_onednn

    def steps_per_round(self, depth):
        """Timed steps per side per round of the step rows: a few seconds of work."""
        if self.quick:
            return 3
        return 5 if depth == 18 else 3

    def check_params(self, precision, side, params):
        seen = self.params.setdefault(precision, {})
        seen[side] = params
        if len(seen) == 2 and len(set(seen.values())) != 1:
            note = "- WARNING: trainable parameters differ at %s (%s): not the same net" % (precision, seen)
            if note not in self.notes:
                self.say(note)
                self.notes.append(note)

    # ---- 5. all-reduce ----------------------------------------------------------------------
    def allreduce_rows(self):
        for np_ranks in ([2] if self.quick else [2, 4, 8]):
            for label, floats in FLOATS:
                rows = {
                    "hierarchical": self.define(
                        "allreduce/%d/%s" % (np_ranks, label),
                        "all-reduce np %d, %s floats: ours (hierarchical) vs MPI_Allreduce" % (np_ranks, label),
                        "GB/s bus", "rate"),
                    "ring": self.define(
                        "ring/%d/%s" % (np_ranks, label),
                        "all-reduce np %d, %s floats: flat ring vs MPI_Allreduce" % (np_ranks, label),
                        "GB/s bus", "rate"),
                }
                # 1M floats take about a millisecond: 200 iterations per method keep one
                # scheduler hiccup from deciding the job's median (20 did, at e2bc7a8).
                iters = 200 if floats < 10_000_000 else (3 if self.quick else 5)
                cmd = ["mpirun", "-np", str(np_ranks), "--oversubscribe", self.exe("allreduce-check"),
                       "--floats", str(floats), "--iters", str(iters),
                       "--method", "hierarchical,ring,mpi", "--json"]
                # The three methods run inside one job, interleaved (ABC CBA ...): that is the
                # alternation. MPI's one run is the reference of both rows.
                targets = [(row, side) for row in rows.values() for side in ("ours", "reference")]
                for rep in range(self.reps):
                    self.measure(targets, self.allreduce_once(rows, cmd), round_no=rep)

    def allreduce_once(self, rows, cmd):
        def go():
            by_method = {o.get("method"): o for o in self.run_json(cmd, ours=True)}
            if not {"hierarchical", "ring", "mpi"} <= by_method.keys():
                raise Failed("methods in output: %s" % sorted(str(k) for k in by_method))
            values = {}
            for method, row in rows.items():
                for side, name in (("ours", method), ("reference", "mpi")):
                    o = by_method[name]
                    if o.get("identical_across_ranks") is False:
                        note = "- WARNING: %s results NOT identical across ranks (%s)" % (name, row)
                        if note not in self.notes:
                            self.notes.append(note)
                    extra = {k: o.get(k) for k in ("seconds_median", "max_abs_diff", "identical_across_ranks",
                                                   "hosts", "ranks_per_host")}
                    values[(row, side)] = (o["bus_gbps"], extra)
            return values
        return go

    # ---- 6. scaling -------------------------------------------------------------------------
    def served_rounds(self, sets_wanted):
        """The served scaling rows' plan: (rounds, sets of processes, rounds per set, steps per
        turn); QUICK: 2 rounds in one set."""
        rounds = 2 if self.quick else max(1, self.args.scaling_rounds)
        sets = max(1, min(rounds, 1 if self.quick else sets_wanted))
        per_set = -(-rounds // sets)
        return rounds, -(-rounds // per_set), per_set, self.steps_per_round(18)

    def over_sets(self, targets, plan, serve_set):
        """serve_set(n, rounds of set n) for every set of `plan`; a missing or failed process
        marks every target."""
        rounds, sets, per_set, _ = plan
        try:
            for n in range(sets):
                serve_set(n, range(n * per_set, min((n + 1) * per_set, rounds)))
        except (Missing, Failed) as e:
            self.mark(targets, e)

    def scaling_rows(self, records):
        """np 2 against np 1, and against two independent np 1 trainers, the three served side
        by side: one `mpirun -np 2` job and two single trainers pinned to core 0 and core 1 stay
        up, and each round they take turns of a few steps: the np 2 job, one single trainer
        alone (np 1), both single trainers at once (the pair), in every order by turns
        (`turn_order`). Run as separate processes minutes apart, one np 1 run's images/s spanned 8-18% on
        the EPYC box and the row's five alternations 1.47-2.06x: a turn here meets the same
        moments of the machine as the other two. The rounds are spread over several sets of
        processes, each set starting them in another order, as the step rows do."""
        plan = self.served_rounds(self.args.scaling_sets)
        rounds, sets, _, k = plan
        how = "%d rounds x %d steps over %d process set%s, the sides taking turns" % (
            rounds, k, sets, "" if sets == 1 else "s")
        row = self.define("scale/np2", "trainer images/s at np 2 (ours column) vs np 1 (reference column), "
                          "fp32, batch 32 per rank, each rank on its own core; %s" % how,
                          "images/s (global)", "rate", target=1.9)
        limit = self.define("scale/limit", "trainer images/s at np 2 (ours column) vs two independent np 1 "
                            "trainers at once, one per core (reference column: scaling without any "
                            "communication, this machine's limit); %s" % how, "images/s (global)", "rate")
        exchange = self.define("scale/exchange", "trainer images/s at np 2 (ours column) vs the same np 2 job "
                               "stepping in lockstep without exchanging gradients (reference column: each rank "
                               "applies its own in one session run, the ranks meet in one small MPI_Allreduce a "
                               "step; DIFFERENT WORK: the reference averages nothing): what the all-reduce, the "
                               "second session run and the finite check cost; same processes, %s" % how,
                               "images/s (global)", "rate")
        lockstep = self.define("scale/lockstep", "np 2 job stepping in lockstep without exchanging gradients "
                               "(ours column) vs two independent np 1 trainers at once (reference column): what "
                               "waiting for the slower rank each step costs on this machine, and any difference "
                               "between the processes; %s" % how, "images/s (global)", "rate")
        # mpirun binds each of the 2 ranks to its own core, as taskset pins the single trainers.
        job = self.trainer_cmd(records, "fp32", 2) + ["--serve"]
        solo = [["taskset", "-c", str(core)] + self.trainer_cmd(records, "fp32") + ["--serve"]
                for core in (0, 1)]
        targets = [(r, side) for r in (row, limit, exchange, lockstep) for side in ("ours", "reference")]

        def rate(times, ranks):
            return 32 * ranks / statistics.median(times)

        # What each process used per step in each turn (`usage_per_step`), by path.
        used = {path: [] for path in USAGE_PATHS}

        def note_usage(path, proc):
            steps = proc.last["step_s"]
            mean_step = sum(steps) / len(steps)
            for u in proc.last.get("usage_per_step") or []:
                used[path].append(dict(u, step_s=mean_step))

        def serve_set(n, set_rounds):
            with contextlib.ExitStack() as stack:
                # Each set starts the three in another order (a process started first can stay
                # a little slower for its whole life).
                starts = [("job", job), ("solo0", solo[0]), ("solo1", solo[1])]
                starts = starts[n % 3:] + starts[:n % 3]
                served = {name: stack.enter_context(Served(self, cmd, ours=True)) for name, cmd in starts}
                for i in set_rounds:
                    # np 1 is the trainer on core 0 in two rounds, on core 1 in the next two:
                    # over 12 rounds each core meets each of turn_order's six orders once.
                    alone = (i // 2) % 2
                    got = {}

                    def turn_job():
                        # Our step and the lockstep reference back to back in the same processes,
                        # first one then the other by rounds.
                        for path in (("trainer", "lockstep") if i % 2 == 0 else ("lockstep", "trainer")):
                            got[path] = rate(served["job"].steps(path, k), 2)
                            note_usage(path, served["job"])

                    def turn_alone():
                        got["np1"] = rate(served["solo%d" % alone].steps("trainer", k), 1)
                        note_usage("np1", served["solo%d" % alone])

                    def turn_pair():
                        for c in (0, 1):
                            served["solo%d" % c].ask("trainer", k)
                        got["pair"] = sum(rate(served["solo%d" % c].answer(), 1) for c in (0, 1))
                        for c in (0, 1):
                            note_usage("pair", served["solo%d" % c])

                    for t in turn_order([turn_job, turn_alone, turn_pair], i):
                        t()
                    extra = {"set": n, "round": i, "np1_core": alone}
                    for (r, side), v in {(row, "ours"): got["trainer"], (row, "reference"): got["np1"],
                                         (limit, "ours"): got["trainer"], (limit, "reference"): got["pair"],
                                         (exchange, "ours"): got["trainer"], (exchange, "reference"): got["lockstep"],
                                         (lockstep, "ours"): got["lockstep"],
                                         (lockstep, "reference"): got["pair"]}.items():
                        self.sample(r, side, value=v, extra=extra)

        self.over_sets(targets, plan, serve_set)
        if any(used.values()):
            self.notes.append(usage_note(used))
        self.overlap_row(records)

    def overlap_row(self, records):
        """Overlap against no overlap, served side by side as the scaling rows are: two np 2
        jobs up at once, taking turns of a few steps, the first one first in even rounds (while
        one steps, the other's ranks sleep in their request broadcast). Separate 20-step jobs
        spread 25.5-34.6 images/s on the same side here and read 1.18x where this read 0.93x by
        hand (BENCHMARKS.md)."""
        plan = self.served_rounds(2)
        rounds, sets, _, k = plan
        over = self.define("scale/overlap", "trainer images/s at np 2, fp32, 4 MiB fusion groups: all-reduce "
                           "overlapped with backward, 6 TF inter-op threads (ours column) vs after backward, "
                           "TF's default threads (reference column); two np 2 jobs served side by side, "
                           "%d rounds x %d steps over %d process set%s, the sides taking turns" % (
                               rounds, k, sets, "" if sets == 1 else "s"), "images/s (global)", "rate")
        base = self.trainer_cmd(records, "fp32", 2) + ["--fusion-mb", "4", "--serve"]
        cmds = {"ours": base + ["--overlap", "--inter-op-threads", "6"], "reference": base}
        targets = [(over, side) for side in ("ours", "reference")]

        def serve_set(n, set_rounds):
            with contextlib.ExitStack() as stack:
                order = ("ours", "reference") if n % 2 == 0 else ("reference", "ours")
                served = {side: stack.enter_context(Served(self, cmds[side], ours=True)) for side in order}
                for i in set_rounds:
                    for side in (order if i % 2 == 0 else order[::-1]):
                        times = served[side].steps("trainer", k)
                        extra = {"set": n, "round": i}
                        hidden = served[side].last.get("allreduce_hidden_pct")
                        if hidden is not None:
                            extra["allreduce_hidden_pct"] = hidden
                        self.sample(over, side, value=64 / statistics.median(times), extra=extra)

        self.over_sets(targets, plan, serve_set)

    # ---- header and table -------------------------------------------------------------------
    def command(self):
        """How to repeat this run: `make bench`, or `bash bench/run.sh --only ...` for a part."""
        quick = "QUICK=1 " if self.quick else ""
        if self.args.only != ONLY_ALL:
            return "%sbash bench/run.sh --only %s" % (quick, self.args.only)
        return quick + "make bench"

    def write_table(self, started):
        cpu = "unknown CPU"
        try:
            with open("/proc/cpuinfo") as f:
                cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
        except (OSError, StopIteration):
            pass
        mode = ("QUICK (1 repetition)" if self.quick else
                "full (%d repetitions; the train step rows %d and the scaling rows %d interleaved rounds; "
                "medians)" % (self.reps, self.step_rounds, self.args.scaling_rounds))
        lines = [
            "# dawnrun bench, %s" % started.strftime("%Y-%m-%d %H:%M"),
            "",
            "- machine: %d cores, %s (%s), %s; commit %s" % (os.cpu_count(), cpu, vector_isa(),
                                                             platform.platform(), self.commit),
            "- TensorFlow's oneDNN CPU kernels: TF_ENABLE_ONEDNN_OPTS=%s for every process unless a row "
            "says otherwise" % os.environ.get("TF_ENABLE_ONEDNN_OPTS", "(unset: TensorFlow's default)"),
            "- mode: %s; wall time %.1f min; command: `%s`" % (
                mode, (time.time() - started.timestamp()) / 60, self.command()),
            "- 1-minute load average %.1f at start, %.1f at end (above ~2 other work shared the cores: "
            "treat the numbers as noisy)" % (self.load_at_start, os.getloadavg()[0]),
            cpu_line(foreign_cpu(self.cpu_at_start, cpu_clock())),
            speed_line(self.speeds),
            "- ratio > 1 means ours is better: rates ours/reference, times reference/ours; overhead in %.",
        ] + self.notes
        if self.missing:
            lines.append("- missing commands of ours: %s" % ", ".join(sorted(self.missing)))
        header_path = os.path.join(self.results, "header.md")
        with open(header_path, "w") as f:
            f.write("\n".join(lines) + "\n")
        md = os.path.join(self.results, "latest.md")
        js = os.path.join(self.results, "latest.json")
        table.main([self.samples_path, "--md", md, "--json", js, "--header", header_path])
        self.say("table written to %s and %s" % (md, js))
        self.log.close()


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=os.path.dirname(HERE))
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--scaling-rounds", type=int, default=12,
                    help="rounds of the scaling rows (np 2 / np 1 / independent pair, taking turns)")
    ap.add_argument("--scaling-sets", type=int, default=3,
                    help="sets of serving processes the scaling rounds are spread over")
    ap.add_argument("--step-rounds", type=int, default=12, help="interleaved rounds of the train step rows")
    ap.add_argument("--step-pairs", type=int, default=4,
                    help="pairs of processes (ours, Keras) the step rows' rounds are spread over")
    ap.add_argument("--work", help="scratch folder (default: a new temp dir, removed at the end)")
    ap.add_argument("--results", default=os.path.join(HERE, "results"))
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--only", default=ONLY_ALL,
                    help="comma-separated sections to run")
    args = ap.parse_args(argv)
    args.pipeline_seconds = 3 if args.quick else 6
    args.tjbench_files, args.tjbench_seconds = (6, 0.2) if args.quick else (16, 0.3)
    args.depths, args.classes = ([18] if args.quick else [18, 50]), 10
    # Timed steps per run of the scaling rows (fewer than 20 made them swing by 5-10% between
    # runs of the same code); warm-up steps of every trainer and Keras process.
    args.steps, args.warmup = (5, 2) if args.quick else (20, 3)
    args.precisions = ["fp32"] if args.quick else ["fp32", "bf16"]
    if "bf16" in args.precisions and not cpu_runs_bf16():
        args.precisions.remove("bf16")
        args.bf16_note = ("- no bf16 rows: this CPU has no AVX-512, and TensorFlow 2.13 runs bf16 "
                          "on a CPU only with it, for Keras as for us (both refuse)")
    return args


def source_commit(root):
    """HEAD's short hash, with "+ uncommitted changes" when tracked files differ from it."""
    git = lambda *a: subprocess.run(["git", "-C", root] + list(a), capture_output=True,
                                    text=True).stdout.strip()
    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    if git("status", "--porcelain", "--untracked-files=no"):
        commit += " + uncommitted changes"
    return commit


def cpu_clock():
    """CPU seconds so far: (busy on the whole machine, stolen by the hypervisor, used by this
    process and its waited-for descendants), or None where /proc/stat is absent."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(t) for t in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    hz = os.sysconf("SC_CLK_TCK")
    # user nice system idle iowait irq softirq steal ...: busy is all but idle, iowait and steal.
    busy = sum(ticks[:8]) - ticks[3] - ticks[4] - ticks[7]
    own = sum(getattr(resource.getrusage(who), f) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
              for f in ("ru_utime", "ru_stime"))
    return busy / hz, ticks[7] / hz, own


def foreign_cpu(start, end):
    """What ran besides the bench between two `cpu_clock()` readings: (CPU seconds busy outside
    the bench, seconds stolen, the machine's busy seconds), or None if either reading is."""
    if start is None or end is None:
        return None
    busy, steal, own = (b - a for a, b in zip(start, end))
    return max(0.0, busy - own), steal, busy


def cpu_line(foreign):
    """The header's line on other work: the load average only samples the ends of the run, this
    counts every CPU second of it. Children killed without a wait count as foreign (overstated)."""
    if foreign is None:
        return "- CPU time outside the bench: unknown (no /proc/stat)"
    other, steal, busy = foreign
    share = 100.0 * other / busy if busy > 0 else 0.0
    return ("- CPU time outside the bench's own processes during the run: %.0f s of %.0f s busy (%.1f%%; "
            "above ~5%%, other work shared the cores), %.0f s stolen by the hypervisor" % (other, busy, share, steal))


def speed_line(speeds):
    """The header's line on the box's own speed: each probe's GFLOP/s (a fixed one-thread float32
    matrix product on every core at once) and the slowest as a share of the fastest."""
    known = [(when, g) for when, g in speeds if g is not None]
    if not known:
        return "- the box's own speed: not measured (box_speed.py probe failed or not run)"
    low, high = min(g for _, g in known), max(g for _, g in known)
    verdict = ("within the probe's own spread" if low >= 0.8 * high else
               "the box itself changed speed during the run: compare ratios within a section, not seconds across sections")
    return ("- the box's own speed (bench/py/box_speed.py: a one-thread float32 matrix product on every core at "
            "once, GFLOP/s): %s; slowest %.0f%% of fastest (%s)" % (
                ", ".join("%s %.1f" % (when, g) for when, g in known), 100.0 * low / high, verdict))


def cpu_flags():
    """The first CPU's feature flags from /proc/cpuinfo (None where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((set(l.split(":", 1)[1].split()) for l in f if l.startswith("flags")), None)
    except OSError:
        return None


def cpu_runs_bf16():
    """TensorFlow 2.13's test for its oneDNN bf16 CPU kernels: the avx512f flag."""
    flags = cpu_flags()
    return flags is None or "avx512f" in flags  # not Linux: let the rows run and say what fails


def vector_isa():
    """What decides the TensorFlow kernels' speed here, for the table's machine line."""
    flags = cpu_flags() or set()
    if "avx512_bf16" in flags:
        return "AVX-512 with AVX512_BF16"
    if "avx512f" in flags:
        return "AVX-512"
    return "AVX2, no AVX-512" if "avx2" in flags else "no AVX2"


def exit_on_signal(signum, _frame):
    """SIGTERM or SIGHUP ends the run the way Ctrl-C does: through `main`'s `finally`, which
    writes the table of the rows done so far and removes the work folder (hundreds of MB)."""
    raise SystemExit(128 + signum)


def main(argv=None):
    args = parse_args(argv)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, exit_on_signal)
    started = datetime.datetime.now()
    bench = Bench(args)
    only = set(args.only.split(","))
    if getattr(args, "bf16_note", None) and "train" in only:
        bench.notes.append(args.bf16_note)
        bench.say(args.bf16_note[2:])
    keep_work = bool(args.work)
    try:
        bench.probe_speed("start")
        synth, synth_info = bench.make_data("synth", [])
        if "records" in only:
            n160 = synth_info["160"][0]
            bench.records_rows("synthetic 160 px", os.path.join(synth, "160"), 8, 2, n160)
            if not args.quick:
                large, large_info = bench.make_data(
                    "large", ["--classes", "20", "--train-per-class", "600", "--val-per-class", "50",
                              "--sizes", "160"])
                bench.records_rows("larger 160 px", os.path.join(large, "160"), 32, 4, large_info["160"][0])
                shutil.rmtree(large, ignore_errors=True)
            bench.probe_speed("after records")
        if only & {"pipeline", "train", "scaling"}:
            rec160, by160 = bench.prepare_records(os.path.join(synth, "160"), "rec160")
            bench.notes.append("- records for the pipeline and trainer rows written by %s" % by160)
        if "pipeline" in only:
            bench.pipeline_rows(rec160, 128)
            bench.tjbench_rows(os.path.join(synth, "160"), 128)
            rec320, _ = bench.prepare_records(os.path.join(synth, "320"), "rec320")
            bench.pipeline_rows(rec320, 224)
            bench.tjbench_rows(os.path.join(synth, "320"), 224)
            photos = bench.make_photos(40 if args.quick else 100)
            for size, px in (("160", 128), ("320", 224)):
                rec, _ = bench.prepare_records(os.path.join(photos, size), "photos%s" % size)
                bench.pipeline_rows(rec, px, "photo-like", "photos")
                bench.tjbench_rows(os.path.join(photos, size), px, "photo-like", "photos")
            bench.probe_speed("after pipeline")
        if "train" in only:
            for depth in args.depths:
                for precision in args.precisions:
                    bench.train_rows(rec160, precision, depth)
                    bench.probe_speed("after train R%d %s" % (depth, precision))
        if "allreduce" in only:
            bench.allreduce_rows()
            bench.probe_speed("after allreduce")
        if "scaling" in only:
            bench.scaling_rows(rec160)
            bench.probe_speed("after scaling")
    finally:
        bench.write_table(started)
        if not keep_work:
            shutil.rmtree(bench.work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
