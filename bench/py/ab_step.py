"""Interleaved A/B of one training step: variants of dawnrun's graph and the Keras reference.

    trainer bench --depth 18 --precision bf16 --steps 1 --warmup 0 --graph-def /tmp/r18.pb
    python bench/py/ab_step.py --graph-def /tmp/r18.pb --depth 18 --precision bf16 \
        keras ours ours:inter=1 ours:env=TF_ONEDNN_USE_SYSTEM_ALLOCATOR=1

Why: one `make bench` row takes the median of a few steps from 3 process pairs, and the same
row moves by 5-10% between runs. Here every variant runs in rounds, one process at a time,
the order reversed every other round, and the step times of all rounds are pooled: 4 rounds of
8 steps put the same code within about 1-2% of itself.

A variant is `keras` or `ours`, then options separated by ':':
  inter=N / intra=N   the session's inter-op / intra-op threads (ours only)
  relu-output         ReluGrad reads the ReLU's output instead of its input, which lets
                      TensorFlow fuse batch norm and ReLU as Keras' graph does (ours only;
                      the trainer's graph does this itself since src/model/rewrite.rs)
  no-unscale          the per-gradient loss-scale division bypassed (ours only; loss scale 1;
                      the trainer's graph leaves it out itself at a static scale of 1 since
                      ModelConfig::loss_scaling, so this only applies to older GraphDefs
                      and stops with an error on a graph without it)
  no-gate             the one-run update applied as each gradient arrives, not gated on the
                      finite check of all of them (ours only)
  no-l2-value         the total loss is the cross-entropy alone: nothing fetched needs the L2
                      penalty's value, so TensorFlow prunes the L2Loss ops; its gradient,
                      wd * w, stays (ours only; the same updates)
  no-wd               the weight-decay gradient is not added to the kernels' gradients
                      (ours only; NOT the same math: an upper bound of what it costs)
  no-sum              the finite check reads the losses only, not a sum per gradient
                      (ours only; an upper bound of what the check costs)
  nospin              the session's `disable_thread_spinning` (ours only)
  static              the session's `optimize_for_static_graph` (ours only)
  input-first / filter-first
                      each convolution's two gradients run one after the other, the input's
                      (or the filter's) first, instead of side by side (ours only)
  env=NAME=VALUE      an environment variable for that process (either side)
  def=PATH            another GraphDef than --graph-def (ours only), e.g. one dumped by an
                      older trainer build, to compare two versions of the graph
Prints one line per variant: pooled median seconds per step and the ratio to the first variant
(> 1: faster than the first).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time


HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def rewrite(graph_def, options):
    """Applies the graph options of a variant to our GraphDef in place."""
    nodes = list(graph_def.node)
    if "relu-output" in options:
        relu_of = {n.input[0]: n.name for n in nodes if n.op == "Relu"}
        for n in nodes:
            if n.op == "ReluGrad" and n.input[1] in relu_of:
                n.input[1] = relu_of[n.input[1]]
    if "no-unscale" in options:
        bypass = {n.name: n.input[0] for n in nodes if n.op == "Mul" and n.name.startswith("unscale/")}
        if not bypass:
            sys.exit("no-unscale: this GraphDef has no loss-scale division (a trainer graph at a "
                     "static scale of 1 leaves it out since ModelConfig::loss_scaling)")
        for n in nodes:
            for i, x in enumerate(n.input):
                if x in bypass:
                    n.input[i] = bypass[x]
    by_name = {n.name: n for n in nodes}
    if "no-l2-value" in options:
        total = next(n for n in nodes if n.name.endswith("total_loss"))
        total.op = "Identity"
        del total.input[1:]
    if "no-wd" in options:
        # AddN(wd * w, filter or dense gradient) -> the gradient alone.
        for n in nodes:
            if n.op == "AddN" and n.name.startswith("gradients/") and len(n.input) == 2:
                kinds = [by_name[x.split(":")[0]].op for x in n.input]
                if kinds[0] == "Mul" and kinds[1] in ("Conv2DBackpropFilter", "MatMul"):
                    n.op = "Identity"
                    del n.input[0]
                    del n.attr["N"]
    if "no-sum" in options:
        check = by_name["fused/AddN"]
        keep = [x for x in check.input if not x.startswith("fused/Sum")]
        del check.input[:]
        check.input.extend(keep)
        check.attr["N"].i = len(keep)
    for first, then in (("Conv2DBackpropInput", "Conv2DBackpropFilter"), ("Conv2DBackpropFilter", "Conv2DBackpropInput")):
        if "%s-first" % first[len("Conv2DBackprop"):].lower() in options:
            by_grad = {n.input[2]: n.name for n in nodes if n.op == first}
            for n in nodes:
                if n.op == then and n.input[2] in by_grad:
                    n.input.append("^" + by_grad[n.input[2]])
    if "no-gate" in options:
        taken = {n.name + ":1": n.input[0] for n in nodes if n.op == "Switch" and n.name.startswith("fused/")}
        for n in nodes:
            for i, x in enumerate(n.input):
                if x in taken:
                    n.input[i] = taken[x]


def serve(args, variant):
    """Worker: builds the variant's step, warms it up, then times `n` steps per line read."""
    import tensorflow as tf
    import profile_step

    side, *options = variant.split(":")
    images, labels = profile_step.random_batch(args)
    if side == "keras":
        step = profile_step.keras_step(args, images, labels)
    else:
        tf.compat.v1.disable_eager_execution()
        config = tf.compat.v1.ConfigProto(allow_soft_placement=True)
        config.experimental.disable_thread_spinning = "nospin" in options
        config.experimental.optimize_for_static_graph = "static" in options
        for o in options:
            if o.startswith("inter="):
                config.inter_op_parallelism_threads = int(o[len("inter="):])
            if o.startswith("intra="):
                config.intra_op_parallelism_threads = int(o[len("intra="):])
        step = profile_step.ours_step(args, images, labels, edit=lambda g: rewrite(g, options), config=config)
    for _ in range(args.warmup):
        step()
    print("ready", flush=True)
    for line in sys.stdin:
        times = []
        for _ in range(int(line)):
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
        print(json.dumps(times), flush=True)


def timed_round(args, variant):
    """One process of `variant`: start, warm up, time `args.steps` steps, stop."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
    for o in variant.split(":")[1:]:
        if o.startswith("env="):
            name, value = o[len("env="):].split("=", 1)
            env[name] = value
    graph_def = next((o[len("def="):] for o in variant.split(":")[1:] if o.startswith("def=")), args.graph_def)
    cmd = [sys.executable, os.path.abspath(__file__), "--serve", variant, "--graph-def", graph_def]
    for name in ("depth", "classes", "px", "batch", "precision", "warmup"):
        cmd += ["--" + name, str(getattr(args, name))]
    proc = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        if proc.stdout.readline().strip() != "ready":
            raise SystemExit("variant %s did not start" % variant)
        proc.stdin.write("%d\n" % args.steps)
        proc.stdin.flush()
        return json.loads(proc.stdout.readline())
    finally:
        proc.stdin.close()
        proc.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("variants", nargs="*")
    ap.add_argument("--graph-def", required=True, help="written by `trainer bench --graph-def`")
    ap.add_argument("--depth", type=int, default=18)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--px", type=int, default=128)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--steps", type=int, default=8, help="timed steps per variant per round")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--serve", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(args, args.serve)
        return
    if not args.variants:
        ap.error("name at least one variant")
    pooled = {v: [] for v in args.variants}
    for r in range(args.rounds):
        for v in (args.variants if r % 2 == 0 else args.variants[::-1]):
            pooled[v] += timed_round(args, v)
    first = statistics.median(pooled[args.variants[0]])
    for v in args.variants:
        m = statistics.median(pooled[v])
        print("%-40s %.4f s/step  %.3fx  (%d steps)" % (v, m, first / m, len(pooled[v])))


if __name__ == "__main__":
    main()
