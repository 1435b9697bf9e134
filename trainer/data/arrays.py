"""A dataset held in memory (``Arrays``) and its ``DataSource`` (``ArraySource``).

Loaders return raw features exactly as in the files (pixels 0..255 for MNIST,
0..16 for digits, a CSV's feature columns) plus the feature scaling fitted on
the training set; the model applies that scaling itself
(``models.layers.Normalization``), so exported models take raw features too.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math

import numpy as np
from absl import logging

from trainer import resources
from trainer.data import DataSource
from trainer.errors import DataError


@dataclasses.dataclass(frozen=True)
class Arrays:
    """A dataset in memory.

    Attributes:
      x_train: float32 ``[n_train, D]`` raw features.
      y_train: int64 ``[n_train]`` class ids, or float32 ``[n_train]`` targets.
      x_eval: float32 ``[n_eval, D]``.
      y_eval: like ``y_train``, ``[n_eval]``.
      num_classes: number of classes; 0 for regression.
      feature_mean: float32 ``[D]``, subtracted from raw features.
      feature_scale: float32 ``[D]``, divides the centred features.
      description: one line for the log.
      image_shape: ``(H, W, C)`` when the ``D`` features are an image's pixels
        in row-major order (``D == H * W * C``), else ``None``.
      class_names: the original label of each class id ``0..C-1`` (all
        strings, or all integers) when the labels are not simply ``0..C-1``;
        else ``None``.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_eval: np.ndarray
    y_eval: np.ndarray
    num_classes: int
    feature_mean: np.ndarray
    feature_scale: np.ndarray
    description: str
    image_shape: tuple[int, int, int] | None = None
    class_names: tuple | None = None

    @property
    def input_size(self) -> int:
        """Raw values per example, ``D`` (``H * W * C`` for images)."""
        return int(np.prod(self.x_train.shape[1:], dtype=np.int64))

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One example's shape as the arrays hold it: ``(D,)`` or ``(H, W, C)``."""
        return tuple(int(d) for d in self.x_train.shape[1:])

    def as_images(self) -> Arrays:
        """The same data with examples shaped ``[H, W, C]`` (a view, no copy).

        Raises:
          DataError: the dataset's features are not an image.
        """
        if self.image_shape is None:
            raise DataError(
                f"{self.description.split(':')[0]}: its {self.input_size} features are not "
                "an image, so convolutional models cannot take them; use a flat model "
                "(--model=mlp) or image data (digits, mnist, or a square number of features)"
            )
        shape = tuple(self.image_shape)
        return dataclasses.replace(
            self,
            x_train=self.x_train.reshape(-1, *shape),
            x_eval=self.x_eval.reshape(-1, *shape),
            feature_mean=self.feature_mean.reshape(shape),
            feature_scale=self.feature_scale.reshape(shape),
        )

    @property
    def num_outputs(self) -> int:
        return self.num_classes if self.num_classes else 1


def image_shape_of(dims) -> tuple[int, int, int] | None:
    """IDX image dimensions ``(rows, cols)`` -> ``(rows, cols, 1)``; a feature
    count that is a square number -> a square one-channel image."""
    dims = tuple(int(d) for d in dims)
    if len(dims) == 1:
        side = math.isqrt(dims[0])
        return (side, side, 1) if side > 1 and side * side == dims[0] else None
    if len(dims) == 2:
        return (*dims, 1)
    if len(dims) == 3:
        return dims
    return None


def fingerprint_arrays(arrays: Arrays) -> str:
    """A short hash of the train and eval arrays: what a resumed run must train on."""
    digest = hashlib.blake2b(digest_size=8)
    for array in (arrays.x_train, arrays.y_train, arrays.x_eval, arrays.y_eval):
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype}{array.shape}".encode())
        digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()


class ArraySource(DataSource):
    """A dataset held in memory (``Arrays``).

    On one replica the training batches are gathered inside the compiled loop
    (``memory_batches.MemoryBatches``); several replicas take ``tf.data``'s
    split of the same batches (``pipeline.train_dataset``).
    """

    def __init__(self, arrays: Arrays, fingerprint: str):
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
        from trainer.data import pipeline

        x, y = self.arrays.x_train, self.arrays.y_train
        if pipeline.gathers_in_graph(strategy):
            from trainer.data.memory_batches import MemoryBatches

            logging.info("input: batches gathered in the compiled loop from memory")
            return MemoryBatches(x, y, global_batch_size, seed, start_step)
        logging.info(
            "input: tf.data from memory, split over %d replicas", strategy.num_replicas_in_sync
        )
        dataset = pipeline.train_dataset(x, y, global_batch_size, seed, start_step=start_step)
        return iter(strategy.experimental_distribute_dataset(dataset))

    def eval_dataset(self, strategy, global_batch_size=2048):
        from trainer.data import pipeline

        dataset = pipeline.eval_dataset(self.arrays.x_eval, self.arrays.y_eval, global_batch_size)
        return strategy.experimental_distribute_dataset(dataset)

    def sample(self, count=256):
        return self.arrays.x_train[:count], self.arrays.y_train[:count]


def load(config) -> Arrays:
    """The arrays of ``config.dataset``, a source held in memory (``trainer.data.SOURCES``).

    Raises:
      DataError: naming a bad file or flag, an unknown or streamed dataset, or
        running out of memory while loading.
    """
    from trainer.data import DATASETS, SOURCES

    if config.dataset not in SOURCES:
        raise DataError(f"--dataset={config.dataset}: unknown; choose one of {', '.join(DATASETS)}")
    source = SOURCES.get(config.dataset)
    if source.streaming:
        raise DataError(f"--dataset={config.dataset}: streamed, not held in memory")
    try:
        return source.load()(config)
    except MemoryError:
        available = resources.available_memory()
        limit = f" (at most {resources.human_bytes(available)} is available)" if available else ""
        raise DataError(
            f"--dataset={config.dataset}: ran out of memory while loading the data{limit}"
        ) from None
