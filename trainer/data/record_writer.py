"""Writing sharded TFRecord datasets: balanced shards, the training split's
statistics in the same pass, and a folder that appears only when complete."""

from __future__ import annotations

import contextlib
import os

import numpy as np

from trainer import files
from trainer.data import example_codec
from trainer.data.record_files import FORMAT, shard_name
from trainer.errors import DataError


class ShardedWriter:
    """Writes one split into ``num_shards`` files, examples dealt round-robin
    (shard sizes differ by at most one example).

    Args:
      folder: where the files go (the converter's private temporary folder).
      split: ``train`` or ``eval``.
      num_shards: files to write (>= 1).
      feature_dtype: ``uint8`` or ``float32``: how ``x`` is stored (``encoded``:
        image files' bytes, written with ``write_encoded``).
      regression: ``y`` is a float target rather than a class id.
    """

    def __init__(self, folder: str, split: str, num_shards: int, feature_dtype: str, regression):
        import tensorflow as tf

        self.folder = folder
        self.names = [shard_name(split, i, num_shards) for i in range(num_shards)]
        self.counts = [0] * num_shards
        encoded = feature_dtype == "encoded"
        self.dtype = None if encoded else np.dtype(feature_dtype).newbyteorder("<")
        self.regression = bool(regression)
        self._next = 0
        self._writers = [tf.io.TFRecordWriter(os.path.join(folder, n)) for n in self.names]

    def write(self, x: np.ndarray, y: np.ndarray, ids: np.ndarray) -> None:
        """Writes examples ``x`` ``[k, ...]`` (D values each), labels ``y`` ``[k]``
        and their ids ``[k]``."""
        x = np.ascontiguousarray(x.reshape(len(x), -1), dtype=self.dtype)
        self.write_encoded([row.tobytes() for row in x], y, ids)

    def write_encoded(self, contents: list[bytes], y: np.ndarray, ids: np.ndarray) -> None:
        """Writes each example's ``x`` as the bytes given (raw values, or an image
        file's bytes as they are), with labels and ids ``[k]``, round-robin."""
        for data, label, example_id in zip(contents, y, ids, strict=True):
            shard = self._next
            record = example_codec.serialize(data, label, example_id, self.regression)
            self._writers[shard].write(record)
            self.counts[shard] += 1
            self._next = (shard + 1) % len(self._writers)

    def close(self) -> dict:
        """Closes the files; returns ``{file name: {"examples": n, "bytes": size}}``."""
        for writer in self._writers:
            writer.close()
        return {
            name: {"examples": count, "bytes": os.path.getsize(os.path.join(self.folder, name))}
            for name, count in zip(self.names, self.counts, strict=True)
        }


class DatasetWriter:
    """Writes a dataset folder's files: both splits' shards, the training split's
    statistics (one streaming pass), and the metadata.

    Args:
      folder: where the files go (``output_folder``'s temporary folder).
      counts: ``{split: examples}`` to come (caps the shards), e.g.
        ``{"train": n, "validation": v, "test": t}``.
      num_shards: files per split.
      dtype: ``uint8`` or ``float32``, how features are stored.
      regression: labels are float targets rather than class ids.
      size: features per example, ``D``.
    """

    def __init__(self, folder, counts: dict, num_shards: int, dtype: str, regression: bool, size):
        from trainer.data import tabular

        self.writers = {
            split: ShardedWriter(folder, split, max(1, min(num_shards, count)), dtype, regression)
            for split, count in counts.items()
        }
        self.moments = tabular.Moments(size)
        self.regression = bool(regression)
        self.targets = tabular.Moments(1)  # a regression's training targets

    def write(self, split: str, x: np.ndarray, y: np.ndarray, ids: np.ndarray) -> None:
        if not len(x):
            return
        if split == "train":
            self.moments.update(x.reshape(len(x), -1).astype(np.float64))
            if self.regression:
                self.targets.update(np.asarray(y, np.float64).reshape(-1, 1))
        self.writers[split].write(x, y, ids)

    def metadata(self, **facts) -> dict:
        """Closes the files; returns metadata.json's content: ``facts`` (with
        ``pixels=True``, a fixed scaling by 255 as for MNIST) and the splits,
        statistics and normalization."""
        statistics = None  # none for encoded images (never decoded here)
        if self.moments.count:
            statistics = {"mean": self.moments.mean.tolist(), "std": self.moments.std.tolist()}
        if facts.pop("pixels", False):  # as --dataset=mnist scales: a fixed 255
            width = len(self.moments.mean)
            normalization = {"mean": [0.0] * width, "scale": [255.0] * width}
        else:
            center, scale = self.moments.standardization()
            normalization = {"mean": center.tolist(), "scale": scale.tolist()}
        splits = {}
        for split, writer in self.writers.items():
            files = writer.close()
            splits[split] = {
                "examples": sum(f["examples"] for f in files.values()),
                "files": files,
            }
        metadata = {
            "format": FORMAT,
            **facts,
            "splits": splits,
            "statistics": statistics,
            "normalization": normalization,
        }
        if self.regression and self.targets.count:
            # The targets are standardized with these in training; the model undoes it.
            std = float(self.targets.std[0])
            metadata["target_normalization"] = {
                "mean": float(self.targets.mean[0]),
                "scale": std if std > 0 else 1.0,
            }
        return metadata


TEMPORARY_PREFIX = ".tmp-convert-"


@contextlib.contextmanager
def output_folder(output_dir: str):
    """Yields a hidden temporary folder beside ``output_dir`` that becomes
    ``output_dir`` in one rename once the block succeeds.

    A conversion that fails or is stopped by a signal it can catch removes its
    folder; one killed outright (SIGKILL) leaves a ``.tmp-convert-<host>.<pid>.*``
    folder that the next conversion beside it removes (one log line each),
    its process being gone (``files.remove_dead_leftovers``). A live
    conversion's folder is never touched.

    Raises:
      DataError: ``output_dir`` exists and is not an empty folder, or its
        parent cannot be written.
    """
    output_dir = os.path.abspath(output_dir)
    label = f"--output_dir={output_dir}"
    if os.path.lexists(output_dir):
        if os.path.islink(output_dir) or not os.path.isdir(output_dir):
            raise DataError(f"{label}: exists and is not a folder")
        if os.listdir(output_dir):
            raise DataError(f"{label}: is not empty; converted files go to a new or empty folder")
    parent = os.path.dirname(output_dir)
    try:
        os.makedirs(parent, exist_ok=True)
        files.remove_dead_leftovers(parent, TEMPORARY_PREFIX)
        stack = contextlib.ExitStack()
        temporary = stack.enter_context(files.private_folder(parent, TEMPORARY_PREFIX))
    except OSError as error:
        raise DataError(f"{label}: cannot write there ({error.strerror or error})") from None
    with stack:  # removes the folder unless it was renamed into place
        yield temporary
        os.chmod(temporary, 0o755)
        os.replace(temporary, output_dir)  # onto a missing or empty folder: atomic
