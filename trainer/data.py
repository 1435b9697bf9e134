"""Datasets: readers with checks, train/eval splits, and tf.data pipelines.

Readers return raw features exactly as in the files (pixels 0..255 for MNIST
and CSV, 0..16 for digits) plus the feature scaling fitted on the training set;
the model applies that scaling itself (``models.Normalization``), so exported
models take raw features too.

The training pipeline is *stateless*: the order of epoch ``e`` is a shuffle
seeded by ``(seed, e)``, so the batch at any global step follows from the seed
and the step alone, and a resumed run continues with exactly the batches an
uninterrupted run would have seen.
"""

from __future__ import annotations

import dataclasses
import gzip
import math
import os
import struct

import numpy as np

from trainer.config import Config, UsageError

IMAGE_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions
LABEL_MAGIC = 0x00000801  # unsigned bytes, 1 dimension
MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "eval_images": "t10k-images-idx3-ubyte",
    "eval_labels": "t10k-labels-idx1-ubyte",
}


class DataError(UsageError):
    """A missing or malformed data file; the message names the file."""


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
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_eval: np.ndarray
    y_eval: np.ndarray
    num_classes: int
    feature_mean: np.ndarray
    feature_scale: np.ndarray
    description: str

    @property
    def input_size(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def num_outputs(self) -> int:
        return self.num_classes if self.num_classes else 1


def _standard_scaling(x_train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x_train)
    return scaler.mean_.astype(np.float32), scaler.scale_.astype(np.float32)


def _split(x, y, eval_fraction, seed, stratify=True):
    from sklearn.model_selection import train_test_split

    counts = np.bincount(y) if stratify else None
    can_stratify = stratify and counts is not None and np.all(counts[counts > 0] >= 2)
    return train_test_split(
        x, y, test_size=eval_fraction, random_state=seed, stratify=y if can_stratify else None
    )


def load_digits(config: Config) -> Arrays:
    """scikit-learn's bundled 8x8 digits: 1797 images, 64 features in 0..16."""
    from sklearn import datasets

    digits = datasets.load_digits()
    x = digits.data.astype(np.float32)
    y = digits.target.astype(np.int64)
    x_train, x_eval, y_train, y_eval = _split(x, y, config.eval_fraction, config.seed)
    mean, scale = _standard_scaling(x_train)
    return Arrays(
        x_train, y_train, x_eval, y_eval, 10, mean, scale,
        f"digits: {len(x_train)} train / {len(x_eval)} eval, 64 features",
    )  # fmt: skip


# -- MNIST IDX files ---------------------------------------------------------
def _find(data_dir: str, stem: str) -> str:
    candidates = [stem, stem.replace("-idx", ".idx")]
    for name in candidates:
        for suffix in ("", ".gz"):
            path = os.path.join(data_dir, name + suffix)
            if os.path.isfile(path):
                return path
    raise DataError(f"--data_dir={data_dir}: missing {stem} (or {stem}.gz)")


def _read_bytes(path: str) -> bytes:
    try:
        if path.endswith(".gz"):
            with gzip.open(path, "rb") as handle:
                return handle.read()
        with open(path, "rb") as handle:
            return handle.read()
    except (OSError, EOFError) as error:
        raise DataError(f"{path}: cannot read ({error})") from None


def read_idx(path: str, magic: int) -> np.ndarray:
    """Reads one IDX file byte for byte as published.

    Checks the magic number (data type ``0x08`` unsigned byte, and the number of
    dimensions), that the file holds exactly the bytes its header promises.

    Returns:
      uint8 array of the header's dimensions, e.g. ``[n, 28, 28]`` or ``[n]``.
    """
    data = _read_bytes(path)
    if len(data) < 4:
        raise DataError(f"{path}: truncated IDX file ({len(data)} bytes, no header)")
    (found,) = struct.unpack(">I", data[:4])
    if found != magic:
        kind = "images" if magic == IMAGE_MAGIC else "labels"
        raise DataError(
            f"{path}: wrong magic number 0x{found:08x}, expected 0x{magic:08x} for IDX {kind}"
        )
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX header ({len(data)} of {header} bytes)")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    expected = header + math.prod(dims)
    if len(data) != expected:
        problem = "truncated" if len(data) < expected else "has trailing bytes"
        raise DataError(
            f"{path}: {problem}: {len(data)} bytes, but dimensions {list(dims)} need {expected}"
        )
    return np.frombuffer(data, np.uint8, offset=header).reshape(dims)


def _mnist_pair(data_dir: str, images_stem: str, labels_stem: str):
    images_path = _find(data_dir, images_stem)
    labels_path = _find(data_dir, labels_stem)
    images = read_idx(images_path, IMAGE_MAGIC)
    labels = read_idx(labels_path, LABEL_MAGIC)
    if len(images) != len(labels):
        raise DataError(
            f"{images_path}: {len(images)} images but {labels_path} has {len(labels)} labels"
        )
    if len(images) == 0:
        raise DataError(f"{images_path}: holds no images")
    if labels.max() > 9:
        raise DataError(f"{labels_path}: label {int(labels.max())} outside 0..9")
    x = images.reshape(len(images), -1).astype(np.float32)
    return x, labels.astype(np.int64)


def load_mnist(config: Config) -> Arrays:
    """The published MNIST IDX files in ``--data_dir``; t10k is the eval set."""
    x_train, y_train = _mnist_pair(
        config.data_dir, MNIST_FILES["train_images"], MNIST_FILES["train_labels"]
    )
    x_eval, y_eval = _mnist_pair(
        config.data_dir, MNIST_FILES["eval_images"], MNIST_FILES["eval_labels"]
    )
    if x_train.shape[1] != x_eval.shape[1]:
        raise DataError(
            f"--data_dir={config.data_dir}: train images have {x_train.shape[1]} pixels, "
            f"t10k images {x_eval.shape[1]}"
        )
    return Arrays(
        x_train, y_train, x_eval, y_eval, 10, *_pixel_scaling(x_train.shape[1]),
        f"mnist: {len(x_train)} train / {len(x_eval)} eval, {x_train.shape[1]} pixels",
    )  # fmt: skip


def _pixel_scaling(size: int):
    # Pixels are scaled to [0, 1] by a fixed 255: per-pixel statistics blow up
    # the rare border pixels that are almost always 0 in the training set.
    return np.zeros(size, np.float32), np.full(size, 255.0, np.float32)


# -- Kaggle digit-recognizer CSV ------------------------------------------------
def load_csv(config: Config) -> Arrays:
    """A CSV with a header, a ``label`` column and one column per pixel."""
    path = config.csv_path
    try:
        with open(path) as handle:
            header = handle.readline().strip().split(",")
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: cannot read ({error})") from None
    columns = [c.strip().strip('"') for c in header]
    if "label" not in columns:
        raise DataError(f"{path}: no 'label' column in the header row")
    if len(columns) < 2:
        raise DataError(f"{path}: needs a label column and at least one feature column")
    try:
        table = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float64, ndmin=2)
    except ValueError as error:
        message = " ".join(str(error).split())
        raise DataError(f"{path}: {message} (counting data rows from 0)") from None
    if table.shape[0] == 0:
        raise DataError(f"{path}: no data rows")
    if table.shape[1] != len(columns):
        raise DataError(f"{path}: header has {len(columns)} columns, rows have {table.shape[1]}")
    if not np.all(np.isfinite(table)):
        row = int(np.argwhere(~np.isfinite(table))[0][0])
        raise DataError(f"{path}: non-finite value in data row {row}")
    label_index = columns.index("label")
    labels = table[:, label_index]
    bad = np.flatnonzero((labels != np.round(labels)) | (labels < 0) | (labels > 9))
    if bad.size:
        raise DataError(f"{path}: label {labels[bad[0]]:g} in data row {bad[0]} outside 0..9")
    x = np.delete(table, label_index, axis=1).astype(np.float32)
    y = labels.astype(np.int64)
    if len(x) < 2:
        raise DataError(f"{path}: needs at least 2 rows to hold some out for eval")
    x_train, x_eval, y_train, y_eval = _split(x, y, config.eval_fraction, config.seed)
    return Arrays(
        x_train, y_train, x_eval, y_eval, 10, *_pixel_scaling(x.shape[1]),
        f"csv {path}: {len(x_train)} train / {len(x_eval)} eval, {x.shape[1]} features",
    )  # fmt: skip


# -- sin(x) regression and synthetic data ----------------------------------------
def load_sin(config: Config) -> Arrays:
    """The notebook's regression: y = sin(x) for x in [0, 2 pi]."""
    rng = np.random.default_rng(config.seed)
    x_train = np.linspace(0, 2 * np.pi, 1000, dtype=np.float32)[:, None]
    x_eval = rng.uniform(0, 2 * np.pi, size=(200, 1)).astype(np.float32)
    y_train = np.sin(x_train[:, 0]).astype(np.float32)
    y_eval = np.sin(x_eval[:, 0]).astype(np.float32)
    mean, scale = _standard_scaling(x_train)
    return Arrays(
        x_train, y_train, x_eval, y_eval, 0, mean, scale,
        "sin: 1000 train / 200 eval points on [0, 2pi]",
    )  # fmt: skip


def load_synthetic(config: Config) -> Arrays:
    """Gaussian features labelled by a random linear teacher (learnable)."""
    rng = np.random.default_rng(config.seed)
    n, d, c = config.synthetic_examples, config.synthetic_features, config.synthetic_classes
    n_eval = max(1, n // 8)
    x = rng.normal(size=(n + n_eval, d)).astype(np.float32)
    teacher = rng.normal(size=(d, c)).astype(np.float32)
    y = np.argmax(x @ teacher, axis=1).astype(np.int64)
    return Arrays(
        x[:n], y[:n], x[n:], y[n:], c, np.zeros(d, np.float32), np.ones(d, np.float32),
        f"synthetic: {n} train / {n_eval} eval, {d} features, {c} classes",
    )  # fmt: skip


LOADERS = {
    "digits": load_digits,
    "mnist": load_mnist,
    "csv": load_csv,
    "sin": load_sin,
    "synthetic": load_synthetic,
}


def load(config: Config) -> Arrays:
    """Loads ``config.dataset``; raises ``DataError`` naming a bad file."""
    return LOADERS[config.dataset](config)


# -- tf.data pipelines -------------------------------------------------------------
def effective_batch_size(batch_size: int, num_train: int) -> int:
    """A batch larger than the training set is full-batch gradient descent."""
    return min(batch_size, num_train)


def train_dataset(x, y, batch_size: int, seed: int, start_step: int = 0):
    """Shuffled, repeated, batched (``drop_remainder``) and prefetched.

    The batch at global step ``s`` holds positions ``s*B .. s*B+B-1`` of the
    endless sequence made of one seeded permutation per epoch, so starting at
    ``start_step`` resumes the exact order.

    Returns:
      A ``tf.data.Dataset`` of ``(x [B, D] float32, y [B])``.
    """
    import tensorflow as tf

    n = len(x)
    batch_size = effective_batch_size(batch_size, n)
    first = start_step * batch_size
    start_epoch, offset = divmod(first, n)
    features = tf.constant(x)
    targets = tf.constant(y)

    def epoch_order(epoch):
        order = tf.random.experimental.stateless_shuffle(
            tf.range(n, dtype=tf.int64), seed=tf.stack([tf.constant(seed, tf.int64), epoch])
        )
        # The resumed epoch starts where the interrupted run was within it.
        return order[tf.where(tf.equal(epoch, start_epoch), offset, 0) :]

    def gather(indices):
        return tf.gather(features, indices), tf.gather(targets, indices)

    return (
        tf.data.Dataset.range(start_epoch, 2**62)
        .map(epoch_order)
        # rebatch slices whole epochs into batches without handling examples
        # one by one (unbatch + batch cost ~2x more CPU per example).
        .rebatch(batch_size, drop_remainder=True)
        .map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .prefetch(tf.data.AUTOTUNE)
    )


def eval_dataset(x, y, batch_size: int = 2048):
    """The whole eval set in order, in batches (the last may be smaller)."""
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size).prefetch(1)
