"""Reads a TFRecord file of tf.Examples with TensorFlow: read_generic.py FILE

For each record, dumps every feature twice: as TensorFlow's proto parser sees it
(tf.train.Example) and as tf.io.parse_single_example returns it (VarLenFeature of the stored
kind). Bytes are hex strings. Prints one JSON list on stdout.
"""
import json
import sys

import tensorflow as tf

DTYPES = {"bytes_list": tf.string, "float_list": tf.float32, "int64_list": tf.int64}


def plain(kind, values):
    if kind == "bytes_list":
        return [bytes(v).hex() for v in values]
    return [float(v) if kind == "float_list" else int(v) for v in values]


def main():
    out = []
    for serialized in tf.data.TFRecordDataset(sys.argv[1]):
        example = tf.train.Example.FromString(serialized.numpy())
        proto, spec = {}, {}
        for key, feature in example.features.feature.items():
            kind = feature.WhichOneof("kind")
            if kind is None:
                proto[key] = {"kind": None, "values": []}
                continue
            proto[key] = {"kind": kind, "values": plain(kind, getattr(feature, kind).value)}
            spec[key] = tf.io.VarLenFeature(DTYPES[kind])
        try:
            parsed = tf.io.parse_single_example(serialized, spec)
        except BaseException:
            for key in spec:  # name the feature TensorFlow rejects
                try:
                    tf.io.parse_single_example(serialized, {key: spec[key]})
                except BaseException as e:
                    print(f"parse_single_example rejects {key!r}: {type(e).__name__}", file=sys.stderr)
            raise
        parsed = {k: {"kind": proto[k]["kind"], "values": plain(proto[k]["kind"], v.values.numpy())}
                  for k, v in parsed.items()}
        out.append({"proto": proto, "parsed": parsed})
    print(json.dumps(out))


if __name__ == "__main__":
    main()
