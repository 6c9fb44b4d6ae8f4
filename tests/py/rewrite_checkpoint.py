"""Rewrites a dawnrun checkpoint in place with one variable changed: every value NaN (`nan`, as
a diverged run would have saved it) or its first value plus one (`bump`: other weights under the
same step, as a run restarted into the same folder writes). A fixture for eval-sweep's tests.
Writes the new files beside the old ones, then moves them into place.
Usage: rewrite_checkpoint.py PREFIX NAME nan|bump"""
import os
import sys

import numpy as np
import tensorflow as tf

prefix, changed, how = sys.argv[1], sys.argv[2], sys.argv[3]
if how not in ("nan", "bump"):
    sys.exit("give nan or bump, not %s" % how)
reader = tf.train.load_checkpoint(prefix)
names = sorted(reader.get_variable_to_shape_map())
if changed not in names:
    sys.exit("%s: no variable %s" % (prefix, changed))
tensors = []
for name in names:
    value = reader.get_tensor(name)
    if name == changed:
        if how == "nan":
            value = np.full_like(value, np.nan)
        else:
            value = value.copy()
            value.flat[0] += 1
    tensors.append(tf.constant(value))
staged = prefix + "-rewritten"
tf.raw_ops.SaveV2(prefix=staged, tensor_names=names, shape_and_slices=[""] * len(names),
                  tensors=tensors)
for suffix in (".data-00000-of-00001", ".index"):
    os.replace(staged + suffix, prefix + suffix)
