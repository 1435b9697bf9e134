"""``--dataset=images``: a folder of image files, one sub-folder per class, streamed.

The layout is the one ``keras.utils.image_dataset_from_directory`` reads:
``DIR/<class>/...`` (the splits are made as for the other sources: a seeded,
stratified ``--test_fraction``, then ``--validation_fraction`` of the rest), or
``DIR/train/<class>/...`` with ``DIR/test/<class>/...`` and optionally
``DIR/validation/<class>/...`` read as given splits. Class names are the
sub-folders' names, sorted; every non-hidden file below a class folder (in
sub-folders too) is one of its images, whatever its name.

Opening the folder lists it once and decodes every file once (in parallel,
through ``tf.data``) for its size and channels and a hash of its bytes: a file
that is empty, not an image, truncated or undecodable is named before training,
and stops the run (``--bad_images=stop``) or is left out and counted
(``--bad_images=skip``). The hashes, names, classes and splits make the
fingerprint that guards a resume. Training then streams: each epoch's order is a
stateless shuffle of the training files by ``(seed, epoch)``, files are read and
decoded in parallel by ``tf.data`` (``image_codec.decode``: resized to
``--image_size`` when given, else every image must have the same size), so
memory holds the list of names and a few batches, never the images.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import stat

import numpy as np
from absl import logging

from trainer.data import DataSource
from trainer.data import splits as splits_lib
from trainer.errors import DataError, one_line

SPLIT_FOLDERS = ("train", "validation", "test")
_SCAN_BATCH = 256


def parse_size(text: str | None) -> tuple[int, int] | None:
    """``"32,32"`` (or ``"32"``) -> ``(32, 32)``; None for None; ValueError otherwise."""
    if text is None:
        return None
    parts = [p.strip() for p in str(text).split(",")]
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2:
        raise ValueError("must be HEIGHT,WIDTH, e.g. 32,32")
    try:
        sizes = tuple(int(p) for p in parts)
    except ValueError:
        raise ValueError("must be HEIGHT,WIDTH in whole pixels, e.g. 32,32") from None
    if not all(1 <= s <= 16384 for s in sizes):
        raise ValueError("sizes must be from 1 to 16384 pixels")
    return sizes


def _visible(names) -> list[str]:
    return sorted(n for n in names if not n.startswith("."))


def _class_folders(folder: str) -> list[str]:
    try:
        entries = _visible(os.listdir(folder))
    except OSError as error:
        raise DataError(f"{folder}: cannot list the folder ({error.strerror})") from None
    return [n for n in entries if os.path.isdir(os.path.join(folder, n))]


def _files_of(folder: str) -> list[str]:
    """Every non-hidden file below ``folder``, sorted (links to folders not followed)."""
    found = []
    for root, dirs, files in os.walk(folder, onerror=_walk_error):
        dirs[:] = _visible(dirs)
        found += [os.path.join(root, name) for name in _visible(files)]
    return found


def _walk_error(error: OSError):
    raise DataError(f"{error.filename}: cannot list the folder ({error.strerror})")


class Listing:
    """The files of a folder: ``paths`` (str ``[n]``), ``labels`` (int64 ``[n]``),
    ``given`` (split name -> indices of the folders the layout gives),
    ``class_names``, ``root``."""

    def __init__(self, root: str):
        self.root = root
        self.paths: list[str] = []
        self.labels: list[int] = []
        self.given: dict[str, list[int]] = {}
        layout = [s for s in SPLIT_FOLDERS if os.path.isdir(os.path.join(root, s))]
        if layout and "train" not in layout:
            raise DataError(
                f"--data_dir={root}: has {'/'.join(layout)}/ but no train/ (give the training "
                "images in train/<class>/, or put the class folders directly in the folder)"
            )
        top = os.path.join(root, "train") if layout else root
        self.class_names = tuple(_class_folders(top))
        if len(self.class_names) < 2:
            raise DataError(
                f"--data_dir={top}: needs a sub-folder per class (at least 2), found "
                f"{len(self.class_names)}"
            )
        for split in layout or [None]:
            self._add(os.path.join(root, split) if split else root, split)

    def _add(self, folder: str, split: str | None) -> None:
        known = set(self.class_names)
        for name in _class_folders(folder):
            if name not in known:
                raise DataError(
                    f"{os.path.join(folder, name)}: a class the training folder does not have"
                )
        start = len(self.paths)
        for label, name in enumerate(self.class_names):
            path = os.path.join(folder, name)
            if not os.path.isdir(path):
                continue
            files = _files_of(path)
            if not files and split in (None, "train"):
                raise DataError(f"{path}: a class folder that holds no image")
            self.paths += files
            self.labels += [label] * len(files)
        if split:
            self.given[split] = list(range(start, len(self.paths)))


def _precheck(path: str) -> str | None:
    """Why a file cannot be an image without opening it (None if it may be one)."""
    try:
        info = os.stat(path)
    except OSError as error:
        return f"cannot read it ({error.strerror})"
    if not stat.S_ISREG(info.st_mode):
        return "not a regular file"
    if info.st_size == 0:
        return "an empty file"
    if not os.access(path, os.R_OK):
        return "cannot read it (permission denied)"
    return None


def _decode_problem(error) -> str:
    text = one_line(error, limit=100_000)
    if "unknown image file format" in text.lower():
        return "not a JPEG, PNG, GIF or BMP image"
    # TensorFlow's own words, without the function and op it names
    text = re.sub(r"\{\{function_node [^}]*\}\}\s*|\s*\[Op:[^\]]*\]|\s*name:\s*$", "", text).strip()
    return f"truncated or undecodable image ({text[:160]})"


@contextlib.contextmanager
def _c_messages_hidden():
    """Standard error (file descriptor 2) sent to /dev/null: libjpeg prints lines
    of its own ("Improper call to JPEG library in state 201") on a truncated file,
    which the scan names itself."""
    import sys

    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def _scan(paths: list[str]) -> tuple[np.ndarray, dict[int, str]]:
    """``(facts int64 [n, 4], {index: problem})``: each readable image's height,
    width, stored channels and hash (``image_codec.facts``), decoded in parallel;
    a batch that fails is decoded again one file at a time to name the file."""
    import tensorflow as tf

    from trainer.data import image_codec

    facts = np.zeros((len(paths), 4), np.int64)
    bad = {i: p for i, p in ((i, _precheck(path)) for i, path in enumerate(paths)) if p}
    todo = [i for i in range(len(paths)) if i not in bad]

    def read(path):
        return image_codec.facts(tf.io.read_file(path))

    position = 0
    while position < len(todo):
        chunk = todo[position:]
        names = tf.constant([paths[i] for i in chunk])
        dataset = (
            tf.data.Dataset.from_tensor_slices(names)
            .map(read, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .batch(_SCAN_BATCH)
        )
        try:
            for batch in dataset:
                values = batch.numpy()
                facts[chunk[: len(values)]] = values
                chunk = chunk[len(values) :]
                position += len(values)
        except tf.errors.OpError:
            for index in chunk[:_SCAN_BATCH]:  # the failing batch, one by one
                position += 1
                try:
                    facts[index] = read(tf.constant(paths[index])).numpy()
                except tf.errors.OpError as error:
                    bad[index] = _decode_problem(error)
                    break
    return facts, bad


def _one_value(values: np.ndarray, paths, what: str, flag: str, example: str):
    """The value every kept image shares, or a DataError naming two that differ."""
    first = values[0]
    unequal = values != first
    differ = np.flatnonzero(np.any(unequal, axis=-1) if values.ndim > 1 else unequal)
    if differ.size:
        other = int(differ[0])

        def show(v):
            return "x".join(map(str, np.atleast_1d(v)))

        raise DataError(
            f"the images have different {what} ({paths[0]}: {show(first)}, {paths[other]}: "
            f"{show(values[other])}); give {flag}, e.g. {example}"
        )
    return first


class ImageFolderSource(DataSource):
    """Images in class folders, streamed (see the module docstring). Made with
    ``ImageFolderSource.open(config)``."""

    @classmethod
    def open(cls, config) -> ImageFolderSource:
        """Lists and checks the folder (every file decoded once).

        Raises:
          DataError: naming the folder, the file or the flag.
        """
        listing = Listing(config.data_dir)
        paths = listing.paths
        with _c_messages_hidden():
            facts, bad = _scan(paths)
        if bad:
            first = min(bad)
            if config.bad_images == "stop":
                count = f"; {len(bad)} of {len(paths)} files are not readable images"
                more = count if len(bad) > 1 else ""
                them = "them" if len(bad) > 1 else "it"
                raise DataError(
                    f"{paths[first]}: {bad[first]}{more} (remove {them}, or give "
                    f"--bad_images=skip to train without {them})"
                )
            logging.warning(
                "skipped %d of %d files that are not readable images (--bad_images=skip), "
                "the first: %s (%s)", len(bad), len(paths), paths[first], bad[first],
            )  # fmt: skip
        return cls(config, listing, facts, bad)

    def __init__(self, config, listing: Listing, facts: np.ndarray, bad: dict[int, str]):
        keep = np.array([i for i in range(len(listing.paths)) if i not in bad], np.int64)
        self.root = listing.root
        self.paths = [listing.paths[i] for i in keep]
        self.labels = np.asarray(listing.labels, np.int64)[keep]
        self.skipped = len(bad)
        self.class_names = listing.class_names
        self.num_classes = len(self.class_names)
        facts = facts[keep]
        counts = np.bincount(self.labels, minlength=self.num_classes)
        if not len(keep) or counts.min() == 0:
            empty = self.class_names[int(np.argmin(counts))]
            raise DataError(f"--data_dir={self.root}: class folder {empty!r} holds no image")
        size = image_size_flag(config)
        if size is None:
            shared = _one_value(
                facts[:, :2], self.paths, "sizes", "--image_size=HEIGHT,WIDTH", "--image_size=64,64"
            )
            size = (int(shared[0]), int(shared[1]))
        channels = config.channels or int(
            _one_value(facts[:, 2], self.paths, "channels", "--channels=1|3", "--channels=3")
        )
        self.size, self.channels = size, channels
        self.image_shape = self.encoded_images = (*size, channels)
        self.input_shape = (math.prod(self.image_shape),)
        self.feature_mean = np.zeros(self.input_shape, np.float32)
        self.feature_scale = np.full(self.input_shape, 255.0, np.float32)
        self._split(config, listing, keep)
        self.fingerprint = self._fingerprint(facts)
        self.description = (
            f"images {self.root}: {self.num_train} train / {self.num_validation} validation / "
            f"{self.num_test} test images of {'x'.join(map(str, self.image_shape))}, "
            f"{self.num_classes} classes (decoded as streamed"
            + (f"; {self.skipped} bad files skipped)" if self.skipped else ")")
        )

    def _split(self, config, listing: Listing, keep: np.ndarray) -> None:
        """The three splits as indices into ``self.paths``."""
        new_index = {int(old): new for new, old in enumerate(keep)}

        def kept(indices):
            return np.array([new_index[i] for i in indices if i in new_index], np.int64)

        seed, root = config.seed, self.root
        if not listing.given:
            train, validation, test, notes = splits_lib.three_way(
                self.labels, len(self.paths), config.test_fraction,
                config.validation_fraction, seed, root,
            )  # fmt: skip
            test_fraction, validation_fraction = config.test_fraction, config.validation_fraction
            self.splits = "; ".join([
                splits_lib.describe("test", test_fraction, seed, True, notes[0], "the images"),
                splits_lib.describe("validation", validation_fraction, seed, True, notes[1],
                                    "the other images"),
            ])  # fmt: skip
        else:
            train = kept(listing.given["train"])
            test = kept(listing.given.get("test", []))
            made = "test: the folder test/" if "test" in listing.given else "no test split"
            if "validation" in listing.given:
                validation = kept(listing.given["validation"])
                made = f"validation: the folder validation/; {made}"
            else:
                part, held, note = splits_lib.split_indices(
                    self.labels[train], len(train), config.validation_fraction, seed,
                    os.path.join(root, "train"), "validation",
                )  # fmt: skip
                train, validation = train[part], train[held]
                how = splits_lib.describe(
                    "validation", config.validation_fraction, seed, True, note, "train/"
                )
                made = f"{how}; {made}"
            if not len(train) or not len(validation):
                raise DataError(f"--data_dir={root}: the training or validation split is empty")
            self.splits = made
        self.indices = {"train": train, "validation": validation, "test": test}
        self.num_train, self.num_validation, self.num_test = (
            len(train),
            len(validation),
            len(test),
        )

    def _fingerprint(self, facts: np.ndarray) -> str:
        digest = hashlib.sha256()
        digest.update(json.dumps([self.image_shape, self.class_names]).encode())
        for split, indices in self.indices.items():
            digest.update(split.encode())
            for i in indices:
                name = os.path.relpath(self.paths[i], self.root)
                digest.update(f"{name}\0{self.labels[i]}\0{facts[i, 3]}\n".encode())
        return digest.hexdigest()[:16]

    # -- streams -----------------------------------------------------------------------
    def as_images(self) -> ImageFolderSource:
        return self.image_view()

    def _loader(self):
        """``index (int64) -> (x float32 input_shape, y int64)``: reads and decodes a file."""
        import tensorflow as tf

        from trainer.data import image_codec

        paths, labels = tf.constant(self.paths), tf.constant(self.labels)
        shape = list(self.input_shape)

        def load(index):
            image = image_codec.decode(
                tf.io.read_file(tf.gather(paths, index)), self.size, self.channels
            )
            return tf.reshape(image, shape), tf.gather(labels, index)

        return load

    def _train_dataset(self, context, global_batch_size: int, seed: int, start_step: int):
        import tensorflow as tf

        pipelines, index = context.num_input_pipelines, context.input_pipeline_id
        train = self.indices["train"]
        count = (len(train) - index + pipelines - 1) // pipelines
        per_replica = context.get_per_replica_batch_size(global_batch_size)
        per_step = global_batch_size // pipelines
        if count < per_step:
            raise DataError(
                f"--batch_size={global_batch_size}: input pipeline {index} holds only {count} "
                f"training images, fewer than the {per_step} it must feed each step"
            )
        start_epoch, offset = divmod(start_step * per_step, count)
        order = tf.constant(train)

        def epoch_indices(epoch):
            shuffled = tf.random.experimental.stateless_shuffle(
                order, seed=tf.stack([tf.constant(seed, tf.int64), epoch])
            )
            skip = tf.where(tf.equal(epoch, start_epoch), tf.constant(offset, tf.int64), 0)
            return tf.data.Dataset.from_tensor_slices(shuffled[index::pipelines]).skip(skip)

        return (
            tf.data.Dataset.range(start_epoch, 2**62)
            .flat_map(epoch_indices)
            .map(self._loader(), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .batch(per_replica, drop_remainder=True)
            .prefetch(tf.data.AUTOTUNE)
        )

    def train_iterator(self, strategy, global_batch_size, seed, start_step):
        distributed = strategy.distribute_datasets_from_function(
            lambda context: self._train_dataset(context, global_batch_size, seed, start_step)
        )
        return iter(distributed)

    def _whole(self, split: str, strategy, global_batch_size: int):
        import tensorflow as tf

        per_replica = max(1, global_batch_size // strategy.num_replicas_in_sync)
        indices = self.indices[split]

        def make(context):
            pipelines, index = context.num_input_pipelines, context.input_pipeline_id
            return (
                tf.data.Dataset.from_tensor_slices(indices[index::pipelines])
                .map(self._loader(), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
                .batch(per_replica)
                .prefetch(2)
            )

        return strategy.distribute_datasets_from_function(make)

    def validation_dataset(self, strategy, global_batch_size=2048):
        return self._whole("validation", strategy, global_batch_size)

    def test_dataset(self, strategy, global_batch_size=2048):
        return self._whole("test", strategy, global_batch_size)

    def sample(self, count=256):
        import tensorflow as tf

        first = np.sort(self.indices["train"])[:count]
        batches = tf.data.Dataset.from_tensor_slices(first).map(self._loader()).batch(count)
        for x, y in batches:
            return x.numpy(), y.numpy()
        return np.zeros((0, *self.input_shape), np.float32), np.zeros((0,), np.int64)

    def pipeline(self, global_batch_size: int, seed: int = 0):
        """The training dataset of a single pipeline (benchmarks, tests)."""
        import tensorflow as tf

        return self._train_dataset(tf.distribute.InputContext(1, 0, 1), global_batch_size, seed, 0)


def image_size_flag(config) -> tuple[int, int] | None:
    """``--image_size`` as ``(height, width)``, or None (the images' own)."""
    try:
        return parse_size(config.image_size)
    except ValueError as error:
        raise DataError(f"--image_size={config.image_size}: {error}") from None
