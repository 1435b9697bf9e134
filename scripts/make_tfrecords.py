"""Writes a large synthetic image dataset as sharded TFRecords, for memory and
input-speed measurements (nothing of it is committed).

    python scripts/make_tfrecords.py --output_dir=/tmp/synth2g --gigabytes=2

Images are ``--shape`` uint8 pixels (default 28x28, MNIST-like): each class
has its own random template, and every example is its class's template plus
noise, so a network can learn it. The files are the converter's format
(``python -m trainer.convert``), written the same way (a temporary folder
renamed when complete, ``metadata.json`` with the streamed statistics), then
train with ``python -m trainer.main --dataset=tfrecord --data_dir=...``.
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
from absl import app, flags

from trainer.cli import fail
from trainer.config import UsageError
from trainer.data import record_files, record_writer

flags.DEFINE_string("output_dir", None, "New (or empty) folder for the files.")
flags.DEFINE_float("gigabytes", 2.0, "Size of the training files to write (decimal GB).")
flags.DEFINE_integer(
    "eval_examples", 10_000, "Examples in each of the validation and test splits.", lower_bound=1
)
flags.DEFINE_integer("num_shards", 16, "Files per split.", lower_bound=1)
flags.DEFINE_list("shape", ["28", "28"], "Image height,width (one channel).")
flags.DEFINE_integer("classes", 10, "Number of classes.", lower_bound=2)
flags.DEFINE_integer("seed", 0, "Seed of the templates and noise.")
FLAGS = flags.FLAGS

_CHUNK = 8192
_RECORD_OVERHEAD = 60  # bytes a record adds beside its pixels (measured on these files)


def main(argv) -> None:
    del argv
    if not FLAGS.output_dir:
        fail("--output_dir: required")
    try:
        shape = [int(v) for v in FLAGS.shape]
    except ValueError:
        fail(f"--shape={','.join(FLAGS.shape)}: give height,width as integers")
    if len(shape) != 2 or min(shape) < 1:
        fail(f"--shape={','.join(FLAGS.shape)}: give height,width >= 1")
    size = int(np.prod(shape))
    train = max(1, int(FLAGS.gigabytes * 1e9 / (size + _RECORD_OVERHEAD)))
    rng = np.random.default_rng(FLAGS.seed)
    templates = rng.integers(0, 256, size=(FLAGS.classes, size)).astype(np.int16)
    started = time.time()
    try:
        with record_writer.output_folder(FLAGS.output_dir) as folder:
            counts = {
                "train": train,
                "validation": FLAGS.eval_examples,
                "test": FLAGS.eval_examples,
            }
            writer = record_writer.DatasetWriter(
                folder, counts, FLAGS.num_shards, "uint8", False, size
            )
            for split, total in counts.items():
                for start in range(0, total, _CHUNK):
                    count = min(_CHUNK, total - start)
                    y = rng.integers(0, FLAGS.classes, size=count)
                    noise = rng.integers(-60, 61, size=(count, size), dtype=np.int16)
                    x = np.clip(templates[y] + noise, 0, 255).astype(np.uint8)
                    writer.write(split, x, y, np.arange(start, start + count))
            record_files.write_metadata(
                folder,
                writer.metadata(
                    source="synthetic", feature_shape=[size], image_shape=[*shape, 1],
                    feature_dtype="uint8", task="classification", num_classes=FLAGS.classes,
                    class_names=None, pixels=True,
                ),
            )  # fmt: skip
    except UsageError as error:
        fail(error)
    total_bytes = sum(
        os.path.getsize(os.path.join(FLAGS.output_dir, name))
        for name in os.listdir(FLAGS.output_dir)
        if name.startswith("train-")
    )
    print(
        f"wrote {train} train + {FLAGS.eval_examples} validation + as many test examples to "
        f"{FLAGS.output_dir}: "
        f"training files {total_bytes / 1e9:.2f} GB, in memory as float32 "
        f"{train * size * 4 / 1e9:.2f} GB ({time.time() - started:.0f}s)"
    )


if __name__ == "__main__":
    app.run(main)
