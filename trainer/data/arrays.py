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
    """A dataset in memory, in three splits: training, validation (every choice
    a run makes reads it) and test (reported, never used to choose).

    Attributes:
      x_train: float32 ``[n_train, D]`` raw features.
      y_train: int64 ``[n_train]`` class ids, or float32 ``[n_train]`` targets.
      x_test: float32 ``[n_test, D]`` (``n_test`` may be 0: no test split).
      y_test: like ``y_train``, ``[n_test]``.
      num_classes: number of classes; 0 for regression.
      feature_mean: float32 ``[D]``, subtracted from raw features.
      feature_scale: float32 ``[D]``, divides the centred features.
      description: one line for the log (what the data are; ``describe()``
        adds the splits).
      image_shape: ``(H, W, C)`` when the ``D`` features are an image's pixels
        in row-major order (``D == H * W * C``), else ``None``.
      class_names: the original label of each class id ``0..C-1`` (all
        strings, or all integers) when the labels are not simply ``0..C-1``;
        else ``None``.
      x_validation, y_validation: like the test split; ``None`` until
        ``with_validation`` holds it out of the training split (when the data
        do not bring their own).
      splits: how the test and validation splits were made, e.g.
        ``test: t10k; validation: 10% of the training examples, ...``.
      fit_scaling: ``fit_scaling(x_train) -> (mean, scale)`` when the feature
        scaling is fitted on the training split (refitted once validation is
        held out of it); ``None`` for a fixed scaling.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    feature_mean: np.ndarray | None
    feature_scale: np.ndarray | None
    description: str
    image_shape: tuple[int, int, int] | None = None
    class_names: tuple | None = None
    x_validation: np.ndarray | None = None
    y_validation: np.ndarray | None = None
    splits: str = ""
    fit_scaling: object = None

    def describe(self) -> str:
        """The log's line: what the data are, the sizes of the splits and how they were made."""
        counts = (
            f"{len(self.x_train)} train / {len(self.x_validation)} validation / "
            f"{len(self.x_test) or 'no'} test examples"
        )
        return f"{self.description}; {counts} ({self.splits})"

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
            x_validation=self.x_validation.reshape(-1, *shape),
            x_test=self.x_test.reshape(-1, *shape),
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
    """A short hash of the three splits: what a resumed run must train and choose on."""
    digest = hashlib.blake2b(digest_size=8)
    splits = (arrays.x_train, arrays.y_train, arrays.x_validation, arrays.y_validation)
    for array in (*splits, arrays.x_test, arrays.y_test):
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
        self.description = arrays.describe()
        self.splits = arrays.splits
        self.input_shape = arrays.input_shape
        self.image_shape = arrays.image_shape
        self.num_classes = arrays.num_classes
        self.class_names = arrays.class_names
        self.num_train = len(arrays.x_train)
        self.num_validation = len(arrays.x_validation)
        self.num_test = len(arrays.x_test)
        self.feature_mean = arrays.feature_mean
        self.feature_scale = arrays.feature_scale
        self.target_mean, self.target_scale = target_scaling(arrays)
        self.fingerprint = fingerprint

    def as_images(self) -> ArraySource:
        return ArraySource(self.arrays.as_images(), self.fingerprint)

    def train_iterator(self, strategy, global_batch_size, seed, start_step):
        from trainer.data import pipeline

        x, y = self.arrays.x_train, self._targets(self.arrays.y_train)
        if pipeline.gathers_in_graph(strategy):
            from trainer.data.memory_batches import MemoryBatches

            logging.info("input: batches gathered in the compiled loop from memory")
            return MemoryBatches(x, y, global_batch_size, seed, start_step)
        logging.info(
            "input: tf.data from memory, split over %d replicas", strategy.num_replicas_in_sync
        )
        dataset = pipeline.train_dataset(x, y, global_batch_size, seed, start_step=start_step)
        return iter(strategy.experimental_distribute_dataset(dataset))

    def validation_dataset(self, strategy, global_batch_size=2048):
        a = self.arrays
        y = self._targets(a.y_validation)
        return _distributed(a.x_validation, y, strategy, global_batch_size)

    def test_dataset(self, strategy, global_batch_size=2048):
        a = self.arrays
        return _distributed(a.x_test, self._targets(a.y_test), strategy, global_batch_size)

    def _targets(self, y: np.ndarray) -> np.ndarray:
        """Labels as the network learns them: class ids, or standardized targets."""
        if self.num_classes:
            return y
        return ((y - self.target_mean) / self.target_scale).astype(np.float32)

    def sample(self, count=256):
        return self.arrays.x_train[:count], self._targets(self.arrays.y_train[:count])


def target_scaling(arrays: Arrays) -> tuple[float, float]:
    """A regression's ``(mean, scale)`` of the training targets (population standard
    deviation; 1 for constant targets); ``(0, 1)`` for classes."""
    if arrays.num_classes or not len(arrays.y_train):
        return 0.0, 1.0
    y = arrays.y_train.astype(np.float64)
    scale = float(np.std(y))
    return float(np.mean(y)), scale if scale > 0 and math.isfinite(scale) else 1.0


def _distributed(x, y, strategy, global_batch_size):
    from trainer.data import pipeline

    dataset = pipeline.eval_dataset(x, y, global_batch_size)
    return strategy.experimental_distribute_dataset(dataset)


def with_validation(arrays: Arrays, fraction: float, seed: int) -> Arrays:
    """``arrays`` with a validation split: its own, or ``ceil(fraction * n_train)``
    training examples held out (stratified by class, ``seed`` as scikit-learn's
    ``random_state``), and the feature scaling fitted on what is left.

    Raises:
      DataError: too few training examples to hold some out.
    """
    from trainer.data import splits

    x_train, y_train, how = arrays.x_train, arrays.y_train, arrays.splits
    x_val, y_val = arrays.x_validation, arrays.y_validation
    if x_val is None:
        name = arrays.description.split(":")[0]
        x_train, x_val, y_train, y_val, note = splits.split(
            x_train, y_train, fraction, seed, f"the training split of {name}", "validation"
        )
        done = splits.describe(
            "validation", fraction, seed, bool(arrays.num_classes), note,
            "the training examples",
        )  # fmt: skip
        how = f"{how}; {done}" if how else done
    mean, scale = arrays.feature_mean, arrays.feature_scale
    if arrays.fit_scaling is not None:
        mean, scale = arrays.fit_scaling(x_train)
    return dataclasses.replace(
        arrays, x_train=x_train, y_train=y_train, x_validation=x_val, y_validation=y_val,
        feature_mean=mean, feature_scale=scale, splits=how, fit_scaling=None,
    )  # fmt: skip


def load(config) -> Arrays:
    """The arrays of ``config.dataset``, a source held in memory (``trainer.data.SOURCES``),
    in its three splits (``with_validation``).

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
        loaded = source.load()(config)
        return with_validation(loaded, config.validation_fraction, config.seed)
    except MemoryError:
        available = resources.available_memory()
        limit = f" (at most {resources.human_bytes(available)} is available)" if available else ""
        raise DataError(
            f"--dataset={config.dataset}: ran out of memory while loading the data{limit}"
        ) from None
