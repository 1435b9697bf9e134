"""The data: the one interface the outer loop sees (``DataSource``), and the table
of sources (``SOURCES``) that the flags, the configuration and the run read.

Nothing here imports TensorFlow (the flags take their choices from the table
before it starts); each source's module loads on first use. A source's training
stream is a function of the seed and the global step alone: the batch of step
``s`` is the same whether the run started at step 0 or was resumed at step
``s``, which is what makes ``--deterministic`` resumes bit-identical.

Adding a source: its module (returning ``arrays.Arrays`` for data held in
memory, or a ``DataSource`` that streams) and one entry in ``SOURCES``;
``sources.open_source`` opens the one a configuration names.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os

import numpy as np

from models.registry import Entry, Registry


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
      num_train, num_validation, num_test: examples in the three splits
        (``num_test`` may be 0: no test split).
      splits: how the validation and test splits were made (one line).
      feature_mean, feature_scale: float32 arrays of ``input_shape``: the
        model computes ``(x - mean) / scale`` from raw features.
      target_mean, target_scale: a regression's training targets' mean and
        standard deviation: the training, validation and test streams hold
        ``(y - mean) / scale`` (``(0, 1)`` for classes, whose ids are as given).
      fingerprint: a short string that changes when the training data do.
      encoded_images: ``(H, W, C)`` when the examples are decoded from image
        files (``image_codec.decode``), so the SavedModel can take such files too.
    """

    description: str
    input_shape: tuple[int, ...]
    image_shape: tuple[int, int, int] | None
    num_classes: int
    class_names: tuple | None
    num_train: int
    num_validation: int
    num_test: int
    splits: str
    feature_mean: np.ndarray
    feature_scale: np.ndarray
    target_mean: float = 0.0
    target_scale: float = 1.0
    fingerprint: str
    encoded_images: tuple[int, int, int] | None = None

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

    def image_view(self) -> DataSource:
        """A shallow copy whose examples, feature mean and scale are shaped
        ``image_shape`` (for streams, whose parsing reshapes to ``input_shape``)."""
        images = copy.copy(self)
        images.input_shape = tuple(self.image_shape)
        images.feature_mean = self.feature_mean.reshape(images.input_shape)
        images.feature_scale = self.feature_scale.reshape(images.input_shape)
        return images

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

    def validation_dataset(self, strategy, global_batch_size: int = 2048):
        """The whole validation split once, distributed over ``strategy`` (the last
        batch may be smaller): what every choice of the run (best checkpoint, early
        stopping, reduce-on-plateau, a sweep's ranking) reads."""
        raise NotImplementedError

    def test_dataset(self, strategy, global_batch_size: int = 2048):
        """The whole test split once, like ``validation_dataset``: reported at the
        end, never used to choose."""
        raise NotImplementedError

    def sample(self, count: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """The first ``count`` training examples in file order: raw features
        ``[n, *input_shape]`` float32 and labels ``[n]`` (``n <= count``)."""
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class Source(Entry):
    """One ``--dataset``, an entry like those of ``models.registry``.

    Attributes:
      name: the flag's value.
      target: ``"module:function"``: ``function(config)`` returns ``arrays.Arrays``
        (held in memory) or, for a stream, a ``DataSource``.
      doc: one line for help and README.
      task: ``classification``, ``regression``, or ``metadata`` (the files say).
      streaming: read as a stream of files, never whole into memory.
      needs: groups of flags; one flag of each group must be given.
      paths: ``{flag: "folder" | "file"}`` that must exist when given.
    """

    task: str = "classification"
    streaming: bool = False
    needs: tuple[tuple[str, ...], ...] = ()
    paths: dict = dataclasses.field(default_factory=dict)

    def is_regression(self, settings) -> bool:
        """Whether these settings' data are a regression (their default loss is mse)."""
        if self.task != "metadata":
            return self.task == "regression"
        data_dir = settings.get("data_dir")
        if not data_dir:
            return False
        try:
            with open(os.path.join(data_dir, "metadata.json"), encoding="utf-8") as handle:
                metadata = json.load(handle)
        except (OSError, ValueError, RecursionError):
            return False  # reported with its file when the data are read
        return isinstance(metadata, dict) and metadata.get("task") == "regression"


SOURCES: Registry[Source] = Registry(
    "dataset",
    [
        Source("digits", "trainer.data.digits:load", "scikit-learn's bundled 8x8 digits"),
        Source(
            "mnist",
            "trainer.data.mnist:load",
            "the MNIST IDX files in --data_dir (.gz or not)",
            needs=(("data_dir",),),
            paths={"data_dir": "folder"},
        ),
        Source(
            "csv",
            "trainer.data.csv_table:load",
            "a CSV file (--csv_path) with a header row and a --label_column",
            needs=(("csv_path",),),
            paths={"csv_path": "file"},
        ),
        Source("sin", "trainer.data.synthetic:load_sin", "the notebook's sin(x)", "regression"),
        Source(
            "synthetic",
            "trainer.data.synthetic:load_synthetic",
            "Gaussian features labelled by a random linear teacher",
        ),
        Source(
            "tfrecord",
            "trainer.data.record_source:RecordSource.open",
            "sharded TFRecord files streamed from disk, made by python -m trainer.convert",
            "metadata",
            streaming=True,
            needs=(("data_dir", "train_files"),),
            paths={"data_dir": "folder"},
        ),
        Source(
            "images",
            "trainer.data.image_folder:ImageFolderSource.open",
            "JPEG/PNG/GIF/BMP files in a sub-folder per class of --data_dir, streamed",
            streaming=True,
            needs=(("data_dir",),),
            paths={"data_dir": "folder"},
        ),
    ],
)
DATASETS = SOURCES.names
