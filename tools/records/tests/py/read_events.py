"""Reads a TensorBoard event file with TensorFlow: read_events.py FILE

Prints a JSON list, one entry per event: {"step", "wall_time", "file_version"} or
{"step", "wall_time", "values": [[tag, simple_value, which_oneof]]}.
"""
import json
import sys

import tensorflow as tf


def main():
    out = []
    for event in tf.compat.v1.train.summary_iterator(sys.argv[1]):
        entry = {"step": event.step, "wall_time": event.wall_time}
        what = event.WhichOneof("what")
        if what == "file_version":
            entry["file_version"] = event.file_version
        elif what == "summary":
            entry["values"] = [[v.tag, v.simple_value, v.WhichOneof("value")]
                               for v in event.summary.value]
        out.append(entry)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
