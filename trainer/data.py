"""Datasets: readers with checks, train/eval splits, and tf.data pipelines.

Readers return raw features exactly as in the files (pixels 0..255 for MNIST
and CSV, 0..16 for digits) plus the feature scaling fitted on the training set;
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
import csv
import dataclasses
import gzip
import math
import os
import re
import struct
import warnings
import zlib

import numpy as np

from models import choices as model_choices
from trainer.config import DATASETS, Config, UsageError

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
_MAX_HEADER = 1 << 26  # a CSV header row longer than this is not a header


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
      image_shape: ``(H, W, C)`` when the ``D`` features are an image's pixels
        in row-major order (``D == H * W * C``), else ``None``.
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
def human_bytes(count: float) -> str:
    """``3.1e12`` -> ``"3.1 TB"`` (decimal units)."""
    if count < 1000:
        return f"{int(count)} bytes"
    for unit in ("kB", "MB", "GB", "TB", "PB"):
        count /= 1000
        if count < 1000 or unit == "PB":
            return f"{count:.1f} {unit}"
    raise AssertionError("unreachable")


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


def _split(x, y, eval_fraction: float, seed: int, source: str):
    """Holds out ``ceil(eval_fraction * n)`` examples for eval (as scikit-learn does).

    The split is stratified by class when every class can be on both sides;
    otherwise (a tiny dataset, or a class with one example) it is a plain
    seeded shuffle.

    Args:
      x: ``[n, D]`` features.
      y: int64 ``[n]`` class ids.
      source: names the data in messages, e.g. the CSV's path.

    Returns:
      ``(x_train, x_eval, y_train, y_eval, note)``; ``note`` is ``""`` or says
      for the log why the split is not stratified.

    Raises:
      DataError: the split would leave no train or no eval example.
    """
    from sklearn.model_selection import train_test_split

    n = len(x)
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
    counts = np.bincount(y)
    classes = int(np.count_nonzero(counts))
    stratify = counts[counts > 0].min() >= 2 and min(n_train, n_eval) >= classes
    # An integer test_size: the same split as the fraction, without a second rounding.
    x_train, x_eval, y_train, y_eval = train_test_split(
        x, y, test_size=n_eval, random_state=seed, stratify=y if stratify else None
    )
    note = "" if stratify else f" (not stratified: too few examples for {classes} classes)"
    return x_train, x_eval, y_train, y_eval, note


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


def _read_idx(handle, path: str, magic: int, bytes_per_value: int) -> np.ndarray:
    gz = path.endswith(".gz")
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
    payload = math.prod(dims)
    expected = header + payload

    def wrong_size(size: int) -> DataError:
        problem = "truncated" if size < expected else "has trailing bytes"
        size_text = f"{size} bytes" + (" (uncompressed)" if gz else "")
        return DataError(
            f"{path}: {problem}: {size_text}, but dimensions {list(dims)} need {expected}"
        )

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
    if len(images) != len(labels):
        raise DataError(
            f"{images_path}: {len(images)} images but {labels_path} has {len(labels)} labels"
        )
    bad = np.flatnonzero(labels > 9)
    if bad.size:
        raise DataError(
            f"{labels_path}: label {int(labels[bad[0]])} outside 0..9 "
            f"(label {bad[0]} of {len(labels)}, counting from 0)"
        )
    x = images.reshape(len(images), -1).astype(np.float32)
    return x, labels.astype(np.int64), images_path, tuple(images.shape[1:])


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


# -- Kaggle digit-recognizer CSV ------------------------------------------------
class _BadLine(Exception):
    def __init__(self, line: int, problem: str):
        super().__init__(problem)
        self.line = line
        self.problem = problem


def _not_utf8(raw: bytes, error: UnicodeDecodeError) -> str:
    return (
        f"not UTF-8 text (byte 0x{raw[error.start]:02x} at byte {error.start + 1} of the line); "
        "save the CSV as UTF-8"
    )


def _csv_header(path: str) -> list[str]:
    """The column names of line 1: BOM, quotes and surrounding spaces removed."""
    try:
        with open(path, "rb") as handle:
            raw = handle.readline(_MAX_HEADER)
    except OSError as error:
        raise DataError(f"{path}: cannot read ({error.strerror or error})") from None
    if not raw:
        raise DataError(f"{path}: empty file; expected a header row such as label,pixel0,...")
    if len(raw) >= _MAX_HEADER and not raw.endswith(b"\n"):
        raise DataError(f"{path} line 1: longer than {human_bytes(_MAX_HEADER)}; not a CSV header")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise DataError(f"{path} line 1: {_not_utf8(raw, error)}") from None
    try:
        header = next(csv.reader([text], skipinitialspace=True), [])
    except csv.Error as error:
        raise DataError(f"{path} line 1: {error}") from None
    columns = [name.strip().strip('"').strip() for name in header]
    if not any(columns):
        raise DataError(f"{path} line 1: empty; expected a header row such as label,pixel0,...")
    if "label" not in columns:
        shown = ",".join(columns[:4]) + (",..." if len(columns) > 4 else "")
        raise DataError(f"{path}: no 'label' column in the header row (line 1: {shown})")
    if columns.count("label") > 1:
        raise DataError(f"{path} line 1: {columns.count('label')} columns are named 'label'")
    if len(columns) < 2:
        raise DataError(f"{path}: needs a label column and at least one feature column")
    return columns


def _count_lines(path: str) -> int:
    count, last = 0, b"\n"
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            count += chunk.count(b"\n")
            last = chunk[-1:]
    return count + (last != b"\n")


def _cell_problem(cell: str, is_label: bool) -> str | None:
    """What is wrong with one CSV cell, or ``None`` (as ``np.loadtxt`` parses numbers)."""
    text = cell.strip()
    if not text:
        return "empty cell (a missing value)"
    try:
        # float() also takes "1_000" and non-ASCII digits, which loadtxt does not.
        value = float(text) if text.isascii() and "_" not in text else None
    except ValueError:
        value = None
    if value is None:
        return f"{text!r} is not a number"
    if is_label:
        if not (math.isfinite(value) and value == round(value) and 0 <= value <= 9):
            return f"label {text} is not a class id (a whole number in 0..9)"
    elif not (math.isfinite(value) and abs(value) <= FLOAT32_MAX):
        return f"{text} is not a finite float32 number (features must be finite, |x| <= 3.4e38)"
    return None


def find_csv_problem(path: str, columns: list[str], first_record: int = 0) -> str | None:
    """Re-reads the CSV at ``path`` to locate its first problem, in file order.

    Slow (Python, cell by cell): only called once a fast read has failed.
    Records (data rows) before ``first_record``, counted from 0 without blank
    lines as ``np.loadtxt`` counts rows, are only checked for their encoding.

    Returns:
      ``"<path> line N[, column 'name']: problem"`` (the header is line 1), or
      ``None`` if no problem is found.
    """
    width = len(columns)
    label_index = columns.index("label")

    def lines():
        with open(path, "rb") as handle:
            for number, raw in enumerate(handle, 1):
                try:
                    yield raw.decode("utf-8-sig" if number == 1 else "utf-8")
                except UnicodeDecodeError as error:
                    raise _BadLine(number, _not_utf8(raw, error)) from None

    reader = csv.reader(lines())
    record_index = 0
    try:
        next(reader, None)  # the header
        previous = reader.line_num
        for record in reader:
            line, previous = previous + 1, reader.line_num
            if not record:  # a blank line, skipped like np.loadtxt does
                continue
            if record_index >= first_record:
                if len(record) != width:
                    return (
                        f"{path} line {line}: {len(record)} cell{'s' * (len(record) != 1)}, "
                        f"but the header has {width} columns"
                    )
                for index, cell in enumerate(record):
                    problem = _cell_problem(cell, index == label_index)
                    if problem:
                        return f"{path} line {line}, column {columns[index]!r}: {problem}"
            record_index += 1
    except _BadLine as bad:
        return f"{path} line {bad.line}: {bad.problem}"
    except csv.Error as error:
        return f"{path} line {reader.line_num}: {error}"
    except OSError as error:
        return f"{path}: cannot read ({error.strerror or error})"
    return None


def load_csv(config: Config) -> Arrays:
    """A CSV with a header, a ``label`` column (0..9) and one column per pixel.

    UTF-8 (a byte order mark is fine), comma-separated, header names and
    numbers optionally quoted and padded with spaces; blank lines are skipped.
    """
    path = config.csv_path
    if not path:
        raise DataError("--csv_path: required with --dataset=csv")
    if os.path.isdir(path):
        raise DataError(f"{path}: is a folder, not a CSV file")
    if not os.path.exists(path):
        raise DataError(f"--csv_path={path}: no such file")
    columns = _csv_header(path)
    label_index = columns.index("label")
    width = len(columns)
    try:
        rows = _count_lines(path) - 1  # at most; blank lines are not rows
    except OSError as error:
        raise DataError(f"{path}: cannot read ({error.strerror or error})") from None
    if rows < 1:
        raise DataError(f"{path}: no data rows, only a header")
    # float64 table, float32 features and a bool mask: 13 bytes per cell.
    check_memory(rows * width * 13, f"up to {rows} rows x {width} columns", path)
    try:
        with open(path, encoding="utf-8-sig") as handle, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "input contained no data"
            table = np.loadtxt(
                handle, delimiter=",", skiprows=1, dtype=np.float64, ndmin=2,
                comments=None, quotechar='"',
            )  # fmt: skip
    except ValueError as error:  # includes UnicodeDecodeError
        message = " ".join(str(error).split())
        # loadtxt's "at row R" (0- or 1-based) lets the slow re-read skip checks up to there.
        found = re.search(r" at row (\d+)", message)
        start = max(0, int(found.group(1)) - 2) if found else 0
        problem = find_csv_problem(path, columns, first_record=start)
        if problem is None and start:
            problem = find_csv_problem(path, columns)
        raise DataError(problem or f"{path}: {message}") from None
    except OSError as error:
        raise DataError(f"{path}: cannot read ({error.strerror or error})") from None
    if table.shape[0] == 0:
        raise DataError(f"{path}: no data rows, only a header and blank lines")
    if table.shape[1] != width:
        raise DataError(
            find_csv_problem(path, columns)
            or f"{path}: header has {width} columns, rows have {table.shape[1]}"
        )
    labels = table[:, label_index]
    x = np.empty((len(table), width - 1), np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        # Values beyond float32's range become inf here and are refused below.
        x[:, :label_index] = table[:, :label_index]
        x[:, label_index:] = table[:, label_index + 1 :]
        good_labels = np.isfinite(labels) & (labels == np.round(labels))
        good_labels &= (labels >= 0) & (labels <= 9)
    bad = np.flatnonzero(~(good_labels & np.isfinite(x).all(axis=1)))
    if bad.size:
        row = int(bad[0])
        raise DataError(
            find_csv_problem(path, columns, first_record=row)
            or f"{path}: a label outside 0..9 or a value not finite in float32 in data row {row}"
        )
    y = labels.astype(np.int64)
    del table, labels
    x_train, x_eval, y_train, y_eval, note = _split(x, y, config.eval_fraction, config.seed, path)
    return Arrays(
        x_train, y_train, x_eval, y_eval, 10, *_pixel_scaling(x.shape[1]),
        f"csv {path}: {len(x_train)} train / {len(x_eval)} eval, {x.shape[1]} features{note}",
        _image_shape((x.shape[1],)),
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
model_choices.check_registry("dataset loader", LOADERS, DATASETS)


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
