"""Datasets: readers with checks, train/eval splits, and tf.data pipelines.

Readers return raw features exactly as in the files (pixels 0..255 for MNIST,
0..16 for digits, a CSV's feature columns) plus the feature scaling fitted on
the training set;
the model applies that scaling itself (``models.Normalization``), so exported
models take raw features too.

Bad input stops here, before anything is built or trained: every reader raises
``DataError`` with one line naming the flag or the file and the problem (for a
CSV, the file line, counting the header as line 1, and the column), e.g.
``train.csv line 7, column 'pixel3': 'abc' is not a number``. Values that are
not finite in float32 (``nan``, ``inf``, ``1e39``) are refused, and arrays are
checked against the memory available before they are allocated.

The training pipeline is *stateless*: the order of epoch ``e`` is a shuffle
seeded by ``(seed, e)``, so the batch at any global step follows from the seed
and the step alone, and a resumed run continues with exactly the batches an
uninterrupted run would have seen.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import math
import os
import struct
import zlib

import numpy as np

from models import choices as model_choices
from trainer import tabular
from trainer.config import DATASETS, IN_MEMORY_DATASETS, Config
from trainer.tabular import DataError, human_bytes  # defined there, re-exported

IMAGE_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions
LABEL_MAGIC = 0x00000801  # unsigned bytes, 1 dimension
MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "eval_images": "t10k-images-idx3-ubyte",
    "eval_labels": "t10k-labels-idx1-ubyte",
}
FLOAT32_MAX = float(np.finfo(np.float32).max)  # ~3.4e38
_CHUNK = 1 << 24  # bytes read at a time when only counting or skipping


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


# -- memory ----------------------------------------------------------------------
def _read_int(path: str) -> int | None:
    try:
        with open(path) as handle:
            return int(handle.read().strip())
    except (OSError, ValueError):  # missing, or "max" (no limit)
        return None


def available_memory() -> int | None:
    """Bytes this process can still allocate, or ``None`` if unknown.

    ``MemAvailable`` from ``/proc/meminfo`` (else the physical memory), capped
    by a cgroup (container) memory limit and by ``ulimit -v``.
    """
    candidates = []
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    candidates.append(int(line.split()[1]) * 1024)
                    break
    except (OSError, ValueError, IndexError):
        pass
    if not candidates:
        with contextlib.suppress(AttributeError, OSError, ValueError):
            candidates.append(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    for limit_path in (
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ):
        limit = _read_int(limit_path)
        if limit is not None and limit > 0:
            candidates.append(limit)
    with contextlib.suppress(ImportError, OSError, ValueError):
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)  # ulimit -v
        if soft != resource.RLIM_INFINITY:
            used = 0  # the address space this process already holds
            with open("/proc/self/status") as handle:
                for line in handle:
                    if line.startswith("VmSize:"):
                        used = int(line.split()[1]) * 1024
            candidates.append(max(0, soft - used))
    return min(candidates) if candidates else None


def check_memory(nbytes: int, what: str, label: str) -> None:
    """Raises ``DataError`` naming ``label`` if ``nbytes`` cannot be allocated."""
    available = available_memory()
    if available is not None and nbytes > available:
        raise DataError(
            f"{label}: needs {human_bytes(nbytes)} of memory for {what}; "
            f"at most {human_bytes(available)} is available"
        )


# -- train/eval split ----------------------------------------------------------------
def _standard_scaling(x_train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x_train)
    return scaler.mean_.astype(np.float32), scaler.scale_.astype(np.float32)


def _split_indices(y, n: int, eval_fraction: float, seed: int, source: str):
    """Holds out ``ceil(eval_fraction * n)`` of ``n`` examples for eval (as scikit-learn does).

    The split is stratified by class when every class can be on both sides;
    otherwise (regression, a single class, a tiny dataset, or a class with one
    example) it is a plain seeded shuffle, in which a class left with no
    training example swaps one of its eval examples for a training example of
    a class that has others there (if there are at least as many training
    examples as classes): every class is then learnt.

    Args:
      y: int64 ``[n]`` class ids, or ``None`` for regression targets.
      source: names the data in messages, e.g. the CSV's path.

    Returns:
      ``(train_indices, eval_indices, note)``; ``note`` is ``""`` or says for
      the log why a classification split is not stratified.

    Raises:
      DataError: the split would leave no train or no eval example.
    """
    from sklearn.model_selection import train_test_split

    flag = f"--eval_fraction={eval_fraction}"
    if n < 2:
        raise DataError(f"{source}: holds {n} example; needs at least 2 to hold some out for eval")
    if not 0 < eval_fraction < 1:
        raise DataError(f"{flag}: must be in (0, 1)")
    n_eval = math.ceil(eval_fraction * n)
    n_train = n - n_eval
    if n_train < 1 or n_eval < 1:
        highest = math.floor((n - 1) / n * 10_000) / 10_000
        raise DataError(
            f"{flag}: splitting the {n} examples of {source} leaves {n_train} train / "
            f"{n_eval} eval examples; for {n} examples use an --eval_fraction in "
            f"(0, {highest:g}], which keeps at least 1 on each side"
        )
    stratify, note = False, ""
    if y is not None:
        counts = np.bincount(y)
        classes = int(np.count_nonzero(counts))
        if classes > 1:
            stratify = counts[counts > 0].min() >= 2 and min(n_train, n_eval) >= classes
            if not stratify:
                note = f" (not stratified: too few examples for {classes} classes)"
    # An integer test_size: the same split as the fraction, without a second rounding.
    train, held_out = train_test_split(
        np.arange(n), test_size=n_eval, random_state=seed, stratify=y if stratify else None
    )
    if y is not None and not stratify and n_train >= int(np.count_nonzero(np.bincount(y))):
        train, held_out = _cover_classes(y, train, held_out)
    return train, held_out, note


def _cover_classes(y, train, held_out):
    """Swaps the first eval example of each class missing from ``train`` with the
    last training example of a class that has others there (deterministic; a
    no-op when every class has a training example)."""
    counts = np.bincount(y[train], minlength=len(np.bincount(y)))
    missing = np.flatnonzero((counts == 0) & (np.bincount(y) > 0))
    if not missing.size:
        return train, held_out
    train, held_out = train.copy(), held_out.copy()
    for label in missing:
        out = int(np.flatnonzero(y[held_out] == label)[0])
        into = int(np.flatnonzero(counts[y[train]] >= 2)[-1])
        counts[y[train[into]]] -= 1
        counts[label] += 1
        train[into], held_out[out] = held_out[out], train[into]
    return train, held_out


def _split(x, y, eval_fraction: float, seed: int, source: str):
    """``_split_indices`` applied: ``(x_train, x_eval, y_train, y_eval, note)``.

    Args:
      x: ``[n, D]`` features.
      y: int64 ``[n]`` class ids (a single class: a plain seeded split).
    """
    train, held_out, note = _split_indices(y, len(x), eval_fraction, seed, source)
    return x[train], x[held_out], y[train], y[held_out], note


def load_digits(config: Config) -> Arrays:
    """scikit-learn's bundled 8x8 digits: 1797 images, 64 features in 0..16."""
    from sklearn import datasets

    digits = datasets.load_digits()
    x = digits.data.astype(np.float32)
    y = digits.target.astype(np.int64)
    x_train, x_eval, y_train, y_eval, note = _split(
        x, y, config.eval_fraction, config.seed, "the digits dataset"
    )
    mean, scale = _standard_scaling(x_train)
    return Arrays(
        x_train, y_train, x_eval, y_eval, 10, mean, scale,
        f"digits: {len(x_train)} train / {len(x_eval)} eval, 64 features{note}", (8, 8, 1),
    )  # fmt: skip


# -- MNIST IDX files ---------------------------------------------------------
def _candidates(data_dir: str, stem: str) -> list[str]:
    names = [stem, stem.replace("-idx", ".idx")]
    return [os.path.join(data_dir, name + suffix) for name in names for suffix in ("", ".gz")]


def _find(data_dir: str, stem: str) -> str:
    for path in _candidates(data_dir, stem):
        if os.path.isfile(path):
            return path
    for path in _candidates(data_dir, stem):
        if os.path.exists(path):
            raise DataError(f"{path}: not a regular file (a folder?); expected an IDX file")
    raise DataError(f"--data_dir={data_dir}: missing {stem} (or {stem}.gz)")


def _check_data_dir(data_dir: str | None) -> None:
    if not data_dir:
        raise DataError("--data_dir: required with --dataset=mnist (the IDX files)")
    if not os.path.isdir(data_dir):
        raise DataError(f"--data_dir={data_dir}: no such folder")
    paths = [path for stem in MNIST_FILES.values() for path in _candidates(data_dir, stem)]
    if not any(os.path.exists(path) for path in paths):
        raise DataError(
            f"--data_dir={data_dir}: holds none of the MNIST files "
            f"({', '.join(MNIST_FILES.values())}, each optionally .gz)"
        )


def _count_rest(handle) -> int:
    """Reads ``handle`` to its end in bounded memory; returns the bytes left."""
    total = 0
    while chunk := handle.read(_CHUNK):
        total += len(chunk)
    return total


def read_idx(path: str, magic: int, bytes_per_value: int = 1) -> np.ndarray:
    """Reads one IDX file (optionally ``.gz``) byte for byte as published.

    Checks the magic number (data type ``0x08`` unsigned byte, and the number of
    dimensions), that every dimension is at least 1, that the file holds exactly
    the bytes its header promises, and that they fit in memory (counting
    ``bytes_per_value`` bytes for each value, e.g. 5 with a float32 copy to come)
    before reading them.

    Returns:
      uint8 array of the header's dimensions, e.g. ``[n, 28, 28]`` or ``[n]``.

    Raises:
      DataError: naming ``path``: unreadable, corrupt gzip, or a bad IDX file.
    """
    try:
        with gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb") as handle:
            return _read_idx(handle, path, magic, bytes_per_value)
    except (gzip.BadGzipFile, zlib.error, EOFError) as error:
        detail = " ".join(str(error).split()) or type(error).__name__
        raise DataError(f"{path}: corrupt or truncated gzip file ({detail})") from None
    except OSError as error:
        raise DataError(f"{path}: cannot read ({error.strerror or error})") from None


def _idx_header(handle, path: str, magic: int) -> tuple[tuple[int, ...], int]:
    """Reads and checks an IDX header; returns ``(dims, header bytes)``."""
    kind = "images" if magic == IMAGE_MAGIC else "labels"
    data = handle.read(4)
    if len(data) < 4:
        raise DataError(f"{path}: truncated IDX file ({len(data)} bytes, no header)")
    (found,) = struct.unpack(">I", data)
    if found != magic:
        raise DataError(
            f"{path}: wrong magic number 0x{found:08x}, expected 0x{magic:08x} for IDX {kind}"
        )
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    data += handle.read(4 * ndim)
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX header ({len(data)} of {header} bytes)")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    if min(dims) == 0:
        raise DataError(
            f"{path}: IDX dimensions {list(dims)} hold no {kind}; every dimension must be >= 1"
        )
    return dims, header


def _idx_size_error(path: str, dims, size: int, expected: int) -> DataError:
    problem = "truncated" if size < expected else "has trailing bytes"
    size_text = f"{size} bytes" + (" (uncompressed)" if path.endswith(".gz") else "")
    return DataError(f"{path}: {problem}: {size_text}, but dimensions {list(dims)} need {expected}")


def iter_idx(path: str, magic: int, rows: int = 4096):
    """Streams an IDX file (optionally ``.gz``) in chunks of ``rows`` items, with
    the checks of ``read_idx``, in memory bounded by the chunk.

    Yields:
      uint8 arrays ``[k, *dims[1:]]``, ``k <= rows``.
    """
    try:
        with gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb") as handle:
            dims, header = _idx_header(handle, path, magic)
            item = math.prod(dims[1:])
            expected = header + math.prod(dims)
            done = 0
            while done < dims[0]:
                count = min(rows, dims[0] - done)
                body = handle.read(count * item)
                if len(body) < count * item:
                    raise _idx_size_error(path, dims, header + done * item + len(body), expected)
                yield np.frombuffer(body, np.uint8).reshape(count, *dims[1:])
                done += count
            extra = _count_rest(handle)
            if extra:
                raise _idx_size_error(path, dims, expected + extra, expected)
    except (gzip.BadGzipFile, zlib.error, EOFError) as error:
        detail = " ".join(str(error).split()) or type(error).__name__
        raise DataError(f"{path}: corrupt or truncated gzip file ({detail})") from None
    except OSError as error:
        raise DataError(f"{path}: cannot read ({error.strerror or error})") from None


def idx_dims(path: str, magic: int) -> tuple[int, ...]:
    """The dimensions in an IDX file's header (reads the header only)."""
    try:
        with gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb") as handle:
            return _idx_header(handle, path, magic)[0]
    except (gzip.BadGzipFile, zlib.error, EOFError) as error:
        detail = " ".join(str(error).split()) or type(error).__name__
        raise DataError(f"{path}: corrupt or truncated gzip file ({detail})") from None
    except OSError as error:
        raise DataError(f"{path}: cannot read ({error.strerror or error})") from None


def _read_idx(handle, path: str, magic: int, bytes_per_value: int) -> np.ndarray:
    gz = path.endswith(".gz")
    kind = "images" if magic == IMAGE_MAGIC else "labels"
    dims, header = _idx_header(handle, path, magic)
    payload = math.prod(dims)
    expected = header + payload

    def wrong_size(size: int) -> DataError:
        return _idx_size_error(path, dims, size, expected)

    if not gz:
        size = os.fstat(handle.fileno()).st_size
        if size != expected:
            raise wrong_size(size)
    elif payload * bytes_per_value > (available_memory() or math.inf):
        # Tell a truncated file from a real one too big, without holding it.
        size = header + _count_rest(handle)
        if size != expected:
            raise wrong_size(size)
    shape = " x ".join(map(str, dims))
    check_memory(payload * bytes_per_value, f"its {kind} ({shape} values)", path)
    body = handle.read(payload)
    if len(body) < payload:
        raise wrong_size(header + len(body))
    extra = _count_rest(handle)
    if extra:
        raise wrong_size(expected + extra)
    return np.frombuffer(body, np.uint8).reshape(dims)


def _mnist_pair(data_dir: str, images_stem: str, labels_stem: str):
    """Returns ``(x float32 [n, rows*cols], y int64 [n], images_path, (rows, cols))``."""
    images_path = _find(data_dir, images_stem)
    labels_path = _find(data_dir, labels_stem)
    images = read_idx(images_path, IMAGE_MAGIC, bytes_per_value=5)  # uint8 + float32
    labels = read_idx(labels_path, LABEL_MAGIC, bytes_per_value=9)  # uint8 + int64
    check_mnist_counts(images_path, len(images), labels_path, len(labels))
    check_mnist_labels(labels, labels_path, 0, len(labels))
    x = images.reshape(len(images), -1).astype(np.float32)
    return x, labels.astype(np.int64), images_path, tuple(images.shape[1:])


def check_mnist_counts(images_path: str, images: int, labels_path: str, labels: int) -> None:
    """Raises ``DataError`` unless an IDX pair holds as many images as labels."""
    if images != labels:
        raise DataError(f"{images_path}: {images} images but {labels_path} has {labels} labels")


def check_mnist_labels(labels: np.ndarray, path: str, first: int, total: int) -> None:
    """Raises ``DataError`` naming the first label outside 0..9 of ``labels``, the
    items ``first..`` of the ``total`` in the IDX file at ``path``."""
    bad = np.flatnonzero(labels > 9)
    if bad.size:
        raise DataError(
            f"{path}: label {int(labels[bad[0]])} outside 0..9 "
            f"(label {first + int(bad[0])} of {total}, counting from 0)"
        )


def load_mnist(config: Config) -> Arrays:
    """The published MNIST IDX files in ``--data_dir``; t10k is the eval set."""
    _check_data_dir(config.data_dir)
    x_train, y_train, train_path, train_shape = _mnist_pair(
        config.data_dir, MNIST_FILES["train_images"], MNIST_FILES["train_labels"]
    )
    x_eval, y_eval, eval_path, eval_shape = _mnist_pair(
        config.data_dir, MNIST_FILES["eval_images"], MNIST_FILES["eval_labels"]
    )
    if train_shape != eval_shape:
        raise DataError(
            f"{eval_path}: images are {'x'.join(map(str, eval_shape))} pixels, but the "
            f"training images in {train_path} are {'x'.join(map(str, train_shape))}"
        )
    return Arrays(
        x_train, y_train, x_eval, y_eval, 10, *_pixel_scaling(x_train.shape[1]),
        f"mnist: {len(x_train)} train / {len(x_eval)} eval, {x_train.shape[1]} pixels",
        _image_shape(train_shape),
    )  # fmt: skip


def _image_shape(dims) -> tuple[int, int, int] | None:
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


def _pixel_scaling(size: int):
    # Pixels are scaled to [0, 1] by a fixed 255: per-pixel statistics blow up
    # the rare border pixels that are almost always 0 in the training set.
    return np.zeros(size, np.float32), np.full(size, 255.0, np.float32)


# -- any CSV (the Kaggle digit-recognizer layout is one) ------------------------------
_CONVERT_HINT = "convert it with python -m trainer.convert --source=csv to stream it"


def load_csv(config: Config) -> Arrays:
    """A CSV with a header row, a label column (``--label_column``) and numeric features.

    The format and its checks are ``trainer.tabular``'s. With ``--loss=mse`` the
    labels are regression targets (float32); otherwise they are classes: whole
    numbers or names (``tabular.class_vocabulary``), with ``class_names``
    holding them unless they are simply ``0..C-1``. Features stay raw; their
    standardisation (``tabular.Moments`` over the training rows) goes in
    ``feature_mean`` and ``feature_scale``.
    """
    path = config.csv_path
    label_column = config.label_column
    if not path:
        raise DataError("--csv_path: required with --dataset=csv")
    if os.path.isdir(path):
        raise DataError(f"{path}: is a folder, not a CSV file")
    if not os.path.exists(path):
        raise DataError(f"--csv_path={path}: no such file")
    columns = tabular.read_header(path, label_column)
    width = len(columns)
    rows = tabular.count_lines(path) - 1  # at most; blank lines are not rows
    if rows < 1:
        raise DataError(f"{path}: no data rows, only a header")
    # float32 features read, then split into copies (8 bytes a cell), the labels and
    # the chunk being parsed: about 13 bytes a cell.
    try:
        check_memory(rows * width * 13, f"up to {rows} rows x {width} columns", path)
    except DataError as error:
        raise DataError(f"{error}; {_CONVERT_HINT}") from None
    x = np.empty((rows, width - 1), np.float32)
    texts, lines = [], []
    count = 0
    for chunk in tabular.iter_chunks(path, columns, label_column):
        if count + len(chunk) > rows:
            raise DataError(f"{path}: grew while being read; read it again")
        x[count : count + len(chunk)] = chunk.features
        count += len(chunk)
        texts.append(chunk.labels)
        lines.append(chunk.lines)
    x = x[:count]
    texts, lines = np.concatenate(texts), np.concatenate(lines)
    where = {"path": path, "column": label_column}
    if config.loss == "mse":
        vocabulary = None
        y = tabular.targets(texts, lines, **where)
    else:
        vocabulary = tabular.class_vocabulary(texts, lines, **where)
        y = tabular.encode(texts, vocabulary, lines, **where)
    del texts
    train, held_out, note = _split_indices(
        None if vocabulary is None else y, count, config.eval_fraction, config.seed, path
    )
    if vocabulary is not None:
        _check_classes(vocabulary, y, train, held_out, lines, path, label_column)
    x_train, x_eval, y_train, y_eval = x[train], x[held_out], y[train], y[held_out]
    del x
    size = x_train.shape[1]
    mean, scale = tabular.Moments(size).update(x_train).standardization()
    if vocabulary is None:
        task, class_names = "regression", None
    else:
        task = tabular.describe_classes(vocabulary)
        class_names = None if vocabulary == tuple(range(len(vocabulary))) else vocabulary
    return Arrays(
        x_train, y_train, x_eval, y_eval, len(vocabulary or ()), mean, scale,
        f"csv {path}: {len(x_train)} train / {len(x_eval)} eval, {size} features; "
        f"label column {label_column!r}: {task}{note}",
        _image_shape((size,)), class_names,
    )  # fmt: skip


def _check_classes(vocabulary, y, train, held_out, lines, path: str, column: str) -> None:
    """Raises ``DataError`` unless there are 2 classes or more, each with training rows."""
    if len(vocabulary) < 2:
        raise DataError(
            f"{path}, column {column!r}: every row has the label {vocabulary[0]!r}; a "
            "classifier needs at least 2 classes (for regression targets pass --loss=mse)"
        )
    trained = np.zeros(len(vocabulary), bool)
    trained[y[train]] = True
    if trained.all():
        return
    # _split_indices gives every class a training row when it can: it could not.
    missing = held_out[~trained[y[held_out]]]
    row = int(missing[np.argmin(lines[missing])])
    raise DataError(
        tabular.unseen_label_message(vocabulary[y[row]], lines[row], path=path, column=column)
        + f" ({len(train)} training rows cannot hold all {len(vocabulary)} classes; "
        "lower --eval_fraction)"
    )


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
    n, d, c = config.synthetic_examples, config.synthetic_features, config.synthetic_classes
    for name, value, least in (
        ("synthetic_examples", n, 1),
        ("synthetic_features", d, 1),
        ("synthetic_classes", c, 2),
    ):
        if value < least:
            raise DataError(f"--{name}={value}: must be >= {least}")
    n_eval = max(1, n // 8)
    total = n + n_eval
    # Drawn in float64 then cast (12 bytes a value), for the features and the
    # teacher's logits alike.
    check_memory(
        12 * (total * d + d * c + total * c),
        f"the features ({total} examples x {d} features)",
        f"--synthetic_examples={n} --synthetic_features={d}",
    )
    rng = np.random.default_rng(config.seed)
    x = rng.normal(size=(total, d)).astype(np.float32)
    teacher = rng.normal(size=(d, c)).astype(np.float32)
    y = np.argmax(x @ teacher, axis=1).astype(np.int64)
    return Arrays(
        x[:n], y[:n], x[n:], y[n:], c, np.zeros(d, np.float32), np.ones(d, np.float32),
        f"synthetic: {n} train / {n_eval} eval, {d} features, {c} classes", _image_shape((d,)),
    )  # fmt: skip


LOADERS = {
    "digits": load_digits,
    "mnist": load_mnist,
    "csv": load_csv,
    "sin": load_sin,
    "synthetic": load_synthetic,
}
model_choices.check_registry("dataset loader", LOADERS, IN_MEMORY_DATASETS)


def load(config: Config) -> Arrays:
    """Loads ``config.dataset``; raises ``DataError`` naming a bad file or flag."""
    loader = LOADERS.get(config.dataset)
    if loader is None:
        raise DataError(f"--dataset={config.dataset}: unknown; choose one of {', '.join(DATASETS)}")
    try:
        return loader(config)
    except MemoryError:
        available = available_memory()
        limit = f" (at most {human_bytes(available)} is available)" if available else ""
        raise DataError(
            f"--dataset={config.dataset}: ran out of memory while loading the data{limit}"
        ) from None


# -- tf.data pipelines -------------------------------------------------------------
def effective_batch_size(batch_size: int, num_train: int) -> int:
    """A batch larger than the training set is full-batch gradient descent."""
    return min(batch_size, num_train)


# MemoryBatches caches the order of this many examples (int64 indices: 2 MiB),
# in whole epochs, at least two and at most MAX_CACHED_EPOCHS.
CACHED_EXAMPLES = 1 << 18
MAX_CACHED_EPOCHS = 256


def _epoch_order(num_examples: int, seed: int, epoch):
    """The order of epoch ``epoch`` (an int64 tensor): a permutation of
    ``0..num_examples-1`` seeded by ``(seed, epoch)``, shared by ``train_dataset``
    and ``MemoryBatches`` so that their batches agree."""
    import tensorflow as tf

    return tf.random.experimental.stateless_shuffle(
        tf.range(num_examples, dtype=tf.int64),
        seed=tf.stack([tf.constant(seed, tf.int64), epoch]),
    )


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
        order = _epoch_order(n, seed, epoch)
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


def gathers_in_graph(strategy) -> bool:
    """Whether an in-memory source hands ``strategy`` its batches as ``MemoryBatches``.

    Only for one replica: ``strategy.run`` gives every replica the whole of a
    plain tensor, so several replicas need ``experimental_distribute_dataset``'s
    split of a ``tf.data`` pipeline (``train_dataset``); a TPU takes its input
    from the host's pipeline too.
    """
    import tensorflow as tf

    return strategy.num_replicas_in_sync == 1 and not isinstance(
        strategy, tf.distribute.TPUStrategy
    )


class MemoryBatches:
    """``train_dataset``'s batches, gathered inside the compiled training loop.

    An iterator for one replica: each ``next()``, called while the loop is
    traced, adds three gathers (of the cached epoch order, features, labels) to the
    step, where a ``tf.data`` iterator adds an ``IteratorGetNext`` fed by
    its pipeline's threads, which compete with the step for the CPU (measured
    3% of wall time on 784-100-10 at batch 128 and 10% at batch 512 on 2 CPU
    cores, 1% on the deep network: a throwaway paired A/B; see
    docs/benchmarks.md for the benchmark's own figure).

    The batches are ``train_dataset``'s by construction: the same stateless
    shuffle of each epoch, the same positions ``s*B .. s*B+B-1`` of their
    endless sequence, so resuming at ``start_step`` continues the exact order.
    State, in variables on the host CPU with the data: ``position`` (batches
    handed out), ``epoch`` and ``order``, the permutations of ``epochs_cached``
    epochs from ``epoch`` on (``[epochs_cached * n]``, at least two: a batch
    spans at most two epochs), refreshed in the step when a batch begins past
    the last but one. Small sets cache several epochs (``cached_examples``
    indices in all, at most ``MAX_CACHED_EPOCHS``), so that a window of
    ``next_prepared`` batches (``steps_prepared``) spans many steps: each
    window costs the XLA loop a call of its own. A new object is traced
    anew (the loop captures its variables). It follows the ``PreparedBatches``
    protocol (``models.training.reads_in_xla``): with ``prepare`` run in graph
    mode, ``next_prepared`` reads the cached epoch's batches inside XLA; and
    the ``Rewindable`` one (``models.training.rewinds``): ``rewind`` sets
    ``position`` back, and the epoch's order follows from the seed.

    Yields:
      ``(x [B, *feature_shape], y [B])`` as ``train_dataset`` does.
    """

    def __init__(
        self,
        x,
        y,
        batch_size: int,
        seed: int,
        start_step: int = 0,
        cached_examples: int = CACHED_EXAMPLES,
    ):
        import tensorflow as tf

        self.num_examples = n = len(x)
        self.batch_size = effective_batch_size(batch_size, n)
        self.seed = int(seed)
        self.epochs_cached = max(2, min(MAX_CACHED_EPOCHS, -(-int(cached_examples) // n)))
        with tf.device("/cpu:0"):
            self.features = tf.constant(x)
            self.targets = tf.constant(y)
            self.position = tf.Variable(int(start_step), dtype=tf.int64, trainable=False)
            # No epoch cached yet: the cached range ends before epoch 0.
            self.epoch = tf.Variable(-self.epochs_cached, dtype=tf.int64, trainable=False)
            self.order = tf.Variable(tf.zeros([self.epochs_cached * n], tf.int64), trainable=False)

    def __iter__(self):
        return self

    def rewind_point(self) -> int:
        """The next batch's number, for ``rewind``."""
        return int(self.position.numpy())

    def rewind(self, point: int) -> None:
        """Hands out the batches from ``point`` (a ``rewind_point``) again."""
        self.position.assign(point)

    def _next_epoch(self):
        """The epoch of the next batch's first example (an int64 tensor)."""
        return self.position * self.batch_size // self.num_examples

    def _cached(self, epoch):
        """Whether batches that begin in ``epoch`` lie in the cached order."""
        import tensorflow as tf

        return tf.logical_and(epoch >= self.epoch, epoch <= self.epoch + self.epochs_cached - 2)

    def prepare(self):
        """Caches the order of the next batch's epoch and the ones after, unless
        cached already (a graph-mode conditional: the shuffle has no XLA kernel)."""
        import tensorflow as tf

        n, seed = self.num_examples, self.seed
        with tf.device("/cpu:0"):
            epoch = self._next_epoch()

            def refresh():
                epochs = epoch + tf.range(self.epochs_cached, dtype=tf.int64)
                orders = tf.map_fn(
                    lambda e: _epoch_order(n, seed, e), epochs, fn_output_signature=tf.int64
                )
                self.order.assign(tf.reshape(orders, [-1]))
                self.epoch.assign(epoch)

            tf.cond(self._cached(epoch), lambda: None, refresh)

    def steps_prepared(self):
        """How many batches from the next one on begin in the cached epochs but
        the last (an int64 tensor, >= 1 after ``prepare``): ``next_prepared``
        can read them all, since a batch of at most ``n`` examples ends within
        the epoch after its first."""
        import tensorflow as tf

        with tf.device("/cpu:0"):
            n = self.num_examples
            last = ((self.epoch + self.epochs_cached - 1) * n - 1) // self.batch_size
            return tf.maximum(last - self.position + 1, 0) * tf.cast(
                self._cached(self._next_epoch()), tf.int64
            )

    def next_prepared(self):
        """The next batch from the cached order (XLA-compilable: three
        gathers); valid for ``steps_prepared()`` batches after ``prepare``."""
        import tensorflow as tf

        with tf.device("/cpu:0"):
            offset = self.position * self.batch_size - self.epoch * self.num_examples
            # A gather, not tf.slice: XLA takes a slice's start as a compile-time
            # constant, which recompiled the loop for every value of ``position``.
            positions = offset + tf.range(self.batch_size, dtype=tf.int64)
            indices = tf.gather(self.order, positions)
            self.position.assign_add(1)
            return tf.gather(self.features, indices), tf.gather(self.targets, indices)

    def __next__(self):
        self.prepare()
        return self.next_prepared()  # after the conditional (automatic control dependencies)


def eval_dataset(x, y, batch_size: int = 2048):
    """The whole eval set in order, in batches (the last may be smaller)."""
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size).prefetch(1)
