"""Reads a dawnrun checkpoint with Python TensorFlow and prints what it holds as one JSON object:
variable shapes and dtypes, the progress scalars, whether every float tensor is finite, and a few
values to compare with Rust's view.
Usage: read_checkpoint.py PREFIX NAME...   (NAME: variables whose values to print in full)"""
import json
import sys

import numpy as np
import tensorflow as tf

prefix, wanted = sys.argv[1], sys.argv[2:]
reader = tf.train.load_checkpoint(prefix)
shapes = reader.get_variable_to_shape_map()
dtypes = reader.get_variable_to_dtype_map()
print(json.dumps({
    "shapes": {k: [int(d) for d in v] for k, v in shapes.items()},
    "dtypes": {k: v.name for k, v in dtypes.items()},
    "global_step": int(reader.get_tensor("global_step")),
    "epoch": float(reader.get_tensor("dawnrun/epoch")),
    "train_seconds": float(reader.get_tensor("dawnrun/train_seconds")),
    "loss_scale": float(reader.get_tensor("dawnrun/loss_scale")),
    "loss_scale_good_steps": int(reader.get_tensor("dawnrun/loss_scale_good_steps")),
    "all_finite": bool(all(np.isfinite(reader.get_tensor(k)).all()
                           for k, d in dtypes.items() if d.is_floating)),
    "values": {k: reader.get_tensor(k).reshape(-1).astype("float64").tolist() for k in wanted},
}))
