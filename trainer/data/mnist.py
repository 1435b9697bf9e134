"""``--dataset=mnist``: the published MNIST IDX files (``.gz`` or not), read
byte for byte with every header and size checked; t10k is the eval set.

The IDX readers are shared with the converter (``iter_idx`` streams a file in
chunks).
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib

import numpy as np

from trainer import resources
from trainer.data.arrays import Arrays, image_shape_of
from trainer.errors import DataError

IMAGE_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions


LABEL_MAGIC = 0x00000801  # unsigned bytes, 1 dimension


MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "eval_images": "t10k-images-idx3-ubyte",
    "eval_labels": "t10k-labels-idx1-ubyte",
}


_CHUNK = 1 << 24  # bytes read at a time when only counting or skipping


# -- MNIST IDX files ---------------------------------------------------------
def _candidates(data_dir: str, stem: str) -> list[str]:
    names = [stem, stem.replace("-idx", ".idx")]
    return [os.path.join(data_dir, name + suffix) for name in names for suffix in ("", ".gz")]


def find_file(data_dir: str, stem: str) -> str:
    for path in _candidates(data_dir, stem):
        if os.path.isfile(path):
            return path
    for path in _candidates(data_dir, stem):
        if os.path.exists(path):
            raise DataError(f"{path}: not a regular file (a folder?); expected an IDX file")
    raise DataError(f"--data_dir={data_dir}: missing {stem} (or {stem}.gz)")


def check_data_dir(data_dir: str | None) -> None:
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
    elif payload * bytes_per_value > (resources.available_memory() or math.inf):
        # Tell a truncated file from a real one too big, without holding it.
        size = header + _count_rest(handle)
        if size != expected:
            raise wrong_size(size)
    shape = " x ".join(map(str, dims))
    resources.check_memory(payload * bytes_per_value, f"its {kind} ({shape} values)", path)
    body = handle.read(payload)
    if len(body) < payload:
        raise wrong_size(header + len(body))
    extra = _count_rest(handle)
    if extra:
        raise wrong_size(expected + extra)
    return np.frombuffer(body, np.uint8).reshape(dims)


def _mnist_pair(data_dir: str, images_stem: str, labels_stem: str):
    """Returns ``(x float32 [n, rows*cols], y int64 [n], images_path, (rows, cols))``."""
    images_path = find_file(data_dir, images_stem)
    labels_path = find_file(data_dir, labels_stem)
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


def load(config) -> Arrays:
    """The published MNIST IDX files in ``--data_dir``; t10k is the test split."""
    check_data_dir(config.data_dir)
    x_train, y_train, train_path, train_shape = _mnist_pair(
        config.data_dir, MNIST_FILES["train_images"], MNIST_FILES["train_labels"]
    )
    x_test, y_test, eval_path, eval_shape = _mnist_pair(
        config.data_dir, MNIST_FILES["eval_images"], MNIST_FILES["eval_labels"]
    )
    if train_shape != eval_shape:
        raise DataError(
            f"{eval_path}: images are {'x'.join(map(str, eval_shape))} pixels, but the "
            f"training images in {train_path} are {'x'.join(map(str, train_shape))}"
        )
    return Arrays(
        x_train, y_train, x_test, y_test, 10, *_pixel_scaling(x_train.shape[1]),
        f"mnist: {x_train.shape[1]} pixels", image_shape_of(train_shape),
        splits=f"test: the {os.path.basename(eval_path)} file",
    )  # fmt: skip


def _pixel_scaling(size: int):
    # Pixels are scaled to [0, 1] by a fixed 255: per-pixel statistics blow up
    # the rare border pixels that are almost always 0 in the training set.
    return np.zeros(size, np.float32), np.full(size, 255.0, np.float32)
