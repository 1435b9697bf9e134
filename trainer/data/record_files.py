"""Sharded TFRecord datasets on disk: the folder's layout and its metadata.

Layout of a folder written by ``python -m trainer.convert``::

    metadata.json                            what the files hold (below)
    train-00000-of-00004.tfrecord ...        the training split, balanced shards
    validation-00000-of-00001.tfrecord ...   the validation split (every choice reads it)
    test-00000-of-00001.tfrecord ...         the test split (reported, never used to choose)

Folders written by earlier versions name the test split ``eval`` and have no
validation split; they are read with the test split under its new name, and
need ``--validation_files`` (or a new conversion) for the validation split.

Every record is a ``tf.train.Example`` (``example_codec``). ``metadata.json``
records ``feature_shape``, ``image_shape``, ``feature_dtype``, ``task``,
``num_classes``, ``class_names`` (original labels when they are not
``0..C-1``), the examples and bytes of every file, and the training split's
per-feature ``statistics`` (mean, std) with the ``normalization`` the model
folds in (``mean``/``scale``). No TensorFlow here.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import math
import os

import numpy as np

from trainer.errors import DataError
from trainer.files import is_regular_file, write_atomically

METADATA = "metadata.json"


FORMAT = "scratch-trainer.tfrecord.v1"


SPLITS = ("train", "validation", "test")


# How ``x`` holds the features: raw values, or an image file's bytes (``encoded``:
# JPEG, PNG, GIF or BMP, decoded and resized to ``image_shape`` as it is read).
FEATURE_DTYPES = ("uint8", "float32", "encoded")


def shard_name(split: str, index: int, count: int) -> str:
    return f"{split}-{index:05d}-of-{count:05d}.tfrecord"


def write_metadata(folder: str, metadata: dict) -> None:
    write_atomically(os.path.join(folder, METADATA), json.dumps(metadata, indent=1) + "\n")


# -- reading -------------------------------------------------------------------------
def _problem(path: str, text: str) -> DataError:
    return DataError(f"{path}: {text}")


def read_metadata(data_dir: str) -> dict:
    """Reads and checks ``<data_dir>/metadata.json``.

    Raises:
      DataError: missing, unreadable, or not what the converter writes.
    """
    path = os.path.join(data_dir, METADATA)
    try:
        if os.path.exists(path) and not is_regular_file(path):
            raise _problem(path, "not a regular file")
        with open(path, encoding="utf-8") as handle:
            metadata = json.load(handle)
    except FileNotFoundError:
        raise DataError(
            f"--data_dir={data_dir}: no {METADATA}; convert data with python -m trainer.convert "
            "(an interrupted conversion leaves no folder), or give --train_files and "
            "--validation_files"
        ) from None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as error:
        raise _problem(path, f"cannot read ({' '.join(str(error).split())[:120]})") from None
    _check_metadata(path, metadata)
    return metadata


def _is_int(value, low: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _check_metadata(path: str, metadata) -> None:
    def require(condition, text):
        if not condition:
            raise _problem(path, text + "; convert the data again")

    require(isinstance(metadata, dict), "not a JSON object")
    require(metadata.get("format") == FORMAT, f"format is not {FORMAT!r}")
    shape = metadata.get("feature_shape")
    require(
        isinstance(shape, list) and 1 <= len(shape) <= 3 and all(_is_int(d, 1) for d in shape),
        "feature_shape must be a list of 1 to 3 sizes >= 1",
    )
    image = metadata.get("image_shape")
    require(
        image is None
        or (isinstance(image, list) and len(image) == 3 and all(_is_int(d, 1) for d in image)
            and math.prod(image) == math.prod(shape)),
        "image_shape must be null or [H, W, C] with H*W*C features",
    )  # fmt: skip
    require(
        metadata.get("feature_dtype") in FEATURE_DTYPES,
        "feature_dtype must be uint8, float32 or encoded",
    )
    require(
        metadata["feature_dtype"] != "encoded" or image is not None,
        "encoded images need an image_shape",
    )
    task = metadata.get("task")
    require(task in ("classification", "regression"), "task must be classification or regression")
    classes = metadata.get("num_classes")
    if task == "classification":
        require(_is_int(classes, 2), "num_classes must be an integer >= 2")
    names = metadata.get("class_names")
    if names is not None:
        require(
            isinstance(names, list)
            and len(names) == classes
            and ({type(n) for n in names} in ({str}, {int}))
            and len(set(names)) == len(names),
            "class_names must be num_classes distinct labels",
        )
    splits = metadata.get("splits")
    require(isinstance(splits, dict) and "train" in splits, "splits must hold train")
    if "eval" in splits and "test" not in splits:  # an earlier version's name
        splits["test"] = splits.pop("eval")
    for split in (name for name in SPLITS if name in splits):
        files = splits[split].get("files") if isinstance(splits[split], dict) else None
        require(isinstance(files, dict) and files, f"splits.{split}.files must list the files")
        for name, facts in files.items():
            require(
                isinstance(name, str) and os.path.basename(name) == name and name.strip("."),
                f"splits.{split}.files: {name!r} is not a file name",
            )
            require(
                isinstance(facts, dict)
                and _is_int(facts.get("examples"))
                and _is_int(facts.get("bytes")),
                f"splits.{split}.files.{name}: needs examples and bytes counts",
            )
        require(
            sum(f["examples"] for f in files.values()) >= 1, f"splits.{split} holds no examples"
        )
    size = math.prod(shape)
    normalization = metadata.get("normalization")
    require(isinstance(normalization, dict), "normalization must give mean and scale")
    for key in ("mean", "scale"):
        values = normalization.get(key)
        require(
            isinstance(values, list)
            and len(values) == size
            and all(isinstance(v, int | float) and not isinstance(v, bool) for v in values),
            f"normalization.{key} must list {size} numbers",
        )
        array = np.asarray(values, np.float64)
        require(np.all(np.isfinite(array)), f"normalization.{key} must be finite")
        if key == "scale":
            require(np.all(array > 0), "normalization.scale must be > 0")


def glob_files(pattern: str, flag: str) -> list[str]:
    files = sorted(path for path in glob.glob(pattern) if os.path.isfile(path))
    if not files:
        raise DataError(f"{flag}={pattern}: matches no file")
    return files


class Split:
    """One split's files and example counts."""

    def __init__(self, files: list[str], counts: list[int]):
        self.files = files
        self.counts = counts

    @property
    def examples(self) -> int:
        return int(sum(self.counts))


HASHED_WHOLE = 1 << 28  # files up to 256 MiB are hashed whole in the fingerprint
SAMPLE_BYTES, SAMPLES = 1 << 16, 64  # larger ones: 64 blocks of 64 KiB, ends included


def fingerprint(splits: dict, metadata: dict) -> str:
    """A short digest of the splits: each file's name, example count, size and
    contents (whole up to ``HASHED_WHOLE``; beyond, ``SAMPLES`` evenly spaced
    blocks, the first and last among them, so a start reads at most 4 MiB a file),
    and the normalization statistics."""
    digest = hashlib.blake2b(digest_size=8)
    for split in (name for name in SPLITS if name in splits):
        for path, count in zip(splits[split].files, splits[split].counts, strict=True):
            digest.update(f"{split}/{os.path.basename(path)}:{count}:".encode())
            with contextlib.suppress(OSError), open(path, "rb") as handle:
                size = os.fstat(handle.fileno()).st_size
                digest.update(str(size).encode())
                if size <= HASHED_WHOLE:
                    while block := handle.read(1 << 20):
                        digest.update(block)
                    continue
                for k in range(SAMPLES):
                    handle.seek((size - SAMPLE_BYTES) * k // (SAMPLES - 1))
                    digest.update(handle.read(SAMPLE_BYTES))
    digest.update(json.dumps(metadata.get("normalization", metadata), sort_keys=True).encode())
    return digest.hexdigest()
