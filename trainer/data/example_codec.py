"""The ``tf.train.Example`` records of this project's TFRecord files, encoded by hand.

``serialize`` writes, field by field, the bytes ``tf.train.Example(...)
.SerializeToString()`` gives for the same features (``tests/test_records.py``
checks it against the protobuf library), many times faster than building the
message in Python (docs/benchmarks.md); the converter writes every record
through it. Reading goes through TensorFlow's own ``tf.io.parse_example``.

A record has three features: ``x`` (bytes: the raw feature values,
little-endian), ``y`` (int64 class id, or float target) and ``id`` (int64).
"""

from __future__ import annotations

import struct


# -- writing -----------------------------------------------------------------------
def varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # int64 two's complement, as protobuf encodes negatives
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def field(tag: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (``tag`` = field number << 3 | 2)."""
    return bytes([tag]) + varint(len(payload)) + payload


def _entry(key: bytes, feature: bytes) -> bytes:
    return field(0x0A, field(0x0A, key) + field(0x12, feature))


_X_KEY, _Y_KEY, _ID_KEY = b"x", b"y", b"id"
_FLOAT = struct.Struct("<f")


def serialize(x_bytes: bytes, label, example_id: int, regression: bool) -> bytes:
    """One ``tf.train.Example`` as bytes (see the module docstring)."""
    x = field(0x0A, field(0x0A, x_bytes))  # Feature.bytes_list(BytesList.value)
    if regression:
        y = field(0x12, field(0x0A, _FLOAT.pack(float(label))))  # float_list, packed
    else:
        y = field(0x1A, field(0x0A, varint(int(label))))  # int64_list, packed
    ident = field(0x1A, field(0x0A, varint(int(example_id))))
    features = _entry(_X_KEY, x) + _entry(_Y_KEY, y) + _entry(_ID_KEY, ident)
    return field(0x0A, features)
