"""Rewrites a dawnrun checkpoint with every value of one variable set to NaN, as a diverged run
would have saved it: a fixture for the tests that a non-finite checkpoint is named and passed
over. Writes the new files beside the old ones, then moves them into place.
Usage: poison_checkpoint.py PREFIX NAME"""
import os
import sys

import numpy as np
import tensorflow as tf

prefix, poisoned = sys.argv[1], sys.argv[2]
reader = tf.train.load_checkpoint(prefix)
names = sorted(reader.get_variable_to_shape_map())
if poisoned not in names:
    sys.exit("%s: no variable %s" % (prefix, poisoned))
tensors = []
for name in names:
    value = reader.get_tensor(name)
    if name == poisoned:
        value = np.full_like(value, np.nan)
    tensors.append(tf.constant(value))
staged = prefix + "-poisoned"
tf.raw_ops.SaveV2(prefix=staged, tensor_names=names, shape_and_slices=[""] * len(names),
                  tensors=tensors)
for suffix in (".data-00000-of-00001", ".index"):
    os.replace(staged + suffix, prefix + suffix)
