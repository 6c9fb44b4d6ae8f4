"""Where the wall time of one step of our graph goes: a FULL_TRACE of the trainer's one-run step,
bucketed by the millisecond (how many ops run in each), the stretches with at most one op, and
the longest ops. BENCHMARKS.md, "Looking for a margin over Keras".

    trainer bench --depth 18 --steps 1 --warmup 0 --graph-def /tmp/r18.pb
    python bench/py/step_occupancy.py /tmp/r18.pb 18
"""
import sys, os, json
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import numpy as np, tensorflow as tf, profile_step, argparse
tf.compat.v1.disable_eager_execution()
a = argparse.Namespace(graph_def=sys.argv[1], depth=int(sys.argv[2]), classes=10, px=128, batch=32, precision="fp32", two_runs=False)
names = json.load(open(os.path.splitext(a.graph_def)[0] + ".json"))
gd = tf.compat.v1.GraphDef(); gd.ParseFromString(open(a.graph_def, "rb").read())
g = tf.Graph()
with g.as_default(): tf.compat.v1.import_graph_def(gd, name="")
sess = tf.compat.v1.Session(graph=g)
sess.run(names["init"])
imgs, labels = profile_step.random_batch(a)
feed = {names["images"] + ":0": imgs, names["labels"] + ":0": labels, names["loss_scale"] + ":0": 1.0, names["learning_rate"] + ":0": 0.01}
fetch = [names["loss"], names["finite"], names["bn_update"], names["fused_apply"]]
for _ in range(3): sess.run(fetch, feed)
opts = tf.compat.v1.RunOptions(trace_level=tf.compat.v1.RunOptions.FULL_TRACE)
for rep in range(3):
    md = tf.compat.v1.RunMetadata()
    sess.run(fetch, feed, options=opts, run_metadata=md)
    ev = []
    for dev in md.step_stats.dev_stats:
        for n in dev.node_stats:
            s = n.all_start_micros; e = s + n.all_end_rel_micros
            ev.append((s, e, n.node_name, n.timeline_label.split("=")[-1][:40] if n.timeline_label else ""))
    t0 = min(s for s, _, _, _ in ev); t1 = max(e for _, e, _, _ in ev)
    # occupancy in 1 ms buckets: number of non-trivial ops running
    T = t1 - t0; bins = np.zeros(T // 1000 + 1)
    for s, e, nm, _ in ev:
        for b in range((s - t0) // 1000, (e - t0) // 1000 + 1): bins[b] += 1
    idle = (bins == 0).sum(); one = (bins == 1).sum()
    print("wall %.1f ms  buckets idle %d  one-op %d  >=2 %d" % (T / 1000, idle, one, (bins >= 2).sum()))
    # where are the one-op stretches? print segments longer than 3ms with the op
    seg = []
    cur = None
    for i, c in enumerate(bins):
        if c <= 1:
            cur = cur or [i, i]; cur[1] = i
        else:
            if cur and cur[1] - cur[0] >= 3: seg.append(tuple(cur))
            cur = None
    if cur and cur[1]-cur[0] >= 3: seg.append(tuple(cur))
    if rep == 2:
        for a0, b0 in seg:
            ops = sorted({nm for s, e, nm, _ in ev if (s - t0)//1000 <= b0 and (e - t0)//1000 >= a0 and e - s > 500})
            print("  %4d-%4d ms: %s" % (a0, b0, ", ".join(ops)[:200]))
agg = {}
for s, e, nm, _ in ev:
    agg[nm] = agg.get(nm, 0) + (e - s)
top = sorted(agg.items(), key=lambda x: -x[1])
for nm, d in top[:12]: print("%7.1f ms  %s" % (d / 1000, nm))
stem = [(nm, d) for nm, d in agg.items() if "stem" in nm or nm.endswith("_19") or "Pad" in nm or "Slice" in nm]
for nm, d in sorted(stem, key=lambda x: -x[1])[:20]: print("  stem/pad %6.1f ms  %s" % (d / 1000, nm))
