"""The one narrow interface between the outer loop and the data.

The controller, ``trainer.inspect`` and the scripts see a dataset only as a
``DataSource``: a few facts (example shape, classes, sizes, the feature
scaling the model folds in, a fingerprint) and two factories, one making the
training iterator for a start step and one the eval dataset. Whether the
examples sit in memory (``ArraySource``) or stream from sharded TFRecord files
(``trainer.records.RecordSource``) is the source's business; like Orbit's
``Controller``, the loop knows nothing about data.

A source's training stream is a function of the seed and the global step
alone: the batch of step ``s`` is the same whether the run started at step 0
or was resumed at step ``s``, which is what makes ``--deterministic`` resumes
bit-identical.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from absl import logging

from trainer import data as data_lib
from trainer.config import Config


class DataSource:
    """What the outer loop may know about a dataset.

    Attributes:
      description: one line for the log.
      input_shape: one example's shape as the model takes it, ``(D,)`` or
        ``(H, W, C)``.
      image_shape: ``(H, W, C)`` when the features are an image, else ``None``.
      num_classes: number of classes; 0 for regression.
      class_names: the original label of each class id, or ``None`` when the
        labels are the ids ``0..C-1``.
      num_train, num_eval: examples in the training and eval splits.
      feature_mean, feature_scale: float32 arrays of ``input_shape``: the
        model computes ``(x - mean) / scale`` from raw features.
      fingerprint: a short string that changes when the training data do.
    """

    description: str
    input_shape: tuple[int, ...]
    image_shape: tuple[int, int, int] | None
    num_classes: int
    class_names: tuple | None
    num_train: int
    num_eval: int
    feature_mean: np.ndarray
    feature_scale: np.ndarray
    fingerprint: str

    @property
    def input_size(self) -> int:
        """Raw values per example, ``D``."""
        return int(np.prod(self.input_shape, dtype=np.int64))

    @property
    def num_outputs(self) -> int:
        return self.num_classes if self.num_classes else 1

    def as_images(self) -> DataSource:
        """The same source with examples shaped ``image_shape``.

        Raises:
          DataError: the features are not an image.
        """
        raise NotImplementedError

    def train_iterator(self, strategy, global_batch_size: int, seed: int, start_step: int):
        """An endless iterator of per-replica ``(x, y)`` batches from ``start_step`` on.

        Args:
          strategy: the ``tf.distribute.Strategy`` the steps run under.
          global_batch_size: examples per step over all replicas.
          seed: orders the examples (the same seed, the same order).
          start_step: the global step already trained; the first batch is that
            of step ``start_step + 1``.
        """
        raise NotImplementedError

    def eval_dataset(self, strategy, global_batch_size: int = 2048):
        """The whole eval split once, distributed over ``strategy`` (the last batch
        may be smaller)."""
        raise NotImplementedError

    def sample(self, count: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """The first ``count`` training examples in file order: raw features
        ``[n, *input_shape]`` float32 and labels ``[n]`` (``n <= count``)."""
        raise NotImplementedError


class ArraySource(DataSource):
    """A dataset held in memory (``data.Arrays``)."""

    def __init__(self, arrays: data_lib.Arrays, fingerprint: str):
        self.arrays = arrays
        self.description = arrays.description
        self.input_shape = arrays.input_shape
        self.image_shape = arrays.image_shape
        self.num_classes = arrays.num_classes
        self.class_names = arrays.class_names
        self.num_train = len(arrays.x_train)
        self.num_eval = len(arrays.x_eval)
        self.feature_mean = arrays.feature_mean
        self.feature_scale = arrays.feature_scale
        self.fingerprint = fingerprint

    def as_images(self) -> ArraySource:
        return ArraySource(self.arrays.as_images(), self.fingerprint)

    def train_iterator(self, strategy, global_batch_size, seed, start_step):
        x, y = self.arrays.x_train, self.arrays.y_train
        if data_lib.gathers_in_graph(strategy):
            logging.info("input: batches gathered in the compiled loop from memory")
            return data_lib.MemoryBatches(x, y, global_batch_size, seed, start_step)
        logging.info(
            "input: tf.data from memory, split over %d replicas", strategy.num_replicas_in_sync
        )
        dataset = data_lib.train_dataset(x, y, global_batch_size, seed, start_step=start_step)
        return iter(strategy.experimental_distribute_dataset(dataset))

    def eval_dataset(self, strategy, global_batch_size=2048):
        dataset = data_lib.eval_dataset(self.arrays.x_eval, self.arrays.y_eval, global_batch_size)
        return strategy.experimental_distribute_dataset(dataset)

    def sample(self, count=256):
        return self.arrays.x_train[:count], self.arrays.y_train[:count]


def fingerprint_arrays(arrays: data_lib.Arrays) -> str:
    """A short hash of the train and eval arrays: what a resumed run must train on."""
    import hashlib

    digest = hashlib.blake2b(digest_size=8)
    for array in (arrays.x_train, arrays.y_train, arrays.x_eval, arrays.y_eval):
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype}{array.shape}".encode())
        digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()


def open_source(config: Config) -> DataSource:
    """The data of ``config.dataset``: TFRecords stream, the rest load into memory.

    Raises:
      DataError: naming a bad file or flag.
    """
    if config.dataset == "tfrecord":
        from trainer import records

        return records.RecordSource.open(config)
    arrays = data_lib.load(config)
    return ArraySource(arrays, fingerprint_arrays(arrays))


def replace_facts(config: Config, source: DataSource) -> Config:
    """``config`` with the facts of the data filled in (written to config.json)."""
    names = source.class_names
    return dataclasses.replace(
        config,
        input_size=source.input_size,
        input_shape=tuple(source.input_shape),
        num_classes=source.num_classes,
        class_names=tuple(names) if names is not None else None,
        data_fingerprint=source.fingerprint,
    )
