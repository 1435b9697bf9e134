"""``--dataset=tfrecord``: sharded TFRecord files read as a stream.

The training stream (``RecordSource.train_iterator``) never holds more than
one shuffle window and a few batches: each input pipeline (one per worker)
reads its own files, in an order shuffled per epoch by ``(seed, epoch)``,
through a deterministic parallel interleave, then permutes each window of
``--shuffle_buffer`` records with a stateless shuffle seeded by ``(seed,
epoch, pipeline, window)``, then batches, parses and prefetches in
parallel. The position of global step ``s`` is derived from the step (example
``s * examples_per_step`` of the endless sequence of epochs), so a resumed run
skips (unparsed) records to where it stopped and continues with exactly the
batches it would have seen.

The validation and test splits are read whole at each evaluation; a folder
with no test split has none (the run says so). Files made elsewhere
(``--train_files``, ``--validation_files`` and optionally ``--test_files``
without a metadata.json) must use the same ``y`` feature and ``x`` as either raw uint8
bytes or a float list; they are scanned once at start (counts, classes,
statistics).
"""

from __future__ import annotations

import math
import os

import numpy as np
from absl import logging

from trainer.data import DataSource
from trainer.data.arrays import image_shape_of
from trainer.data.record_files import (
    METADATA,
    SPLITS,
    Split,
    fingerprint,
    glob_files,
    read_metadata,
)
from trainer.errors import DataError, one_line

_CYCLE = 8  # files read at once by one pipeline (fixed: the order must not depend on the machine)


_READ_BUFFER = 1 << 20  # bytes buffered per open file


def _moments_scaling(moments) -> dict:
    """``{"mean", "scale"}`` of one column's ``tabular.Moments`` (its population std)."""
    std = float(moments.std[0]) if moments.count else 0.0
    return {"mean": float(moments.mean[0]), "scale": std if std > 0 else 1.0}


def _target_scaling(normalization) -> tuple[float, float]:
    """A regression's ``(mean, scale)`` from metadata's ``target_normalization``;
    ``(0, 1)`` when absent (folders converted before targets were standardized)
    or degenerate."""
    if not isinstance(normalization, dict):
        return 0.0, 1.0
    mean, scale = normalization.get("mean"), normalization.get("scale")
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (mean, scale))
    if not numbers or not (math.isfinite(mean) and math.isfinite(scale) and scale > 0):
        return 0.0, 1.0
    return float(mean), float(scale)


class RecordSource(DataSource):
    """Sharded TFRecord files read as a stream (see the module docstring).

    Made with ``RecordSource.open(config)``.
    """

    def __init__(self, *, splits, input_shape, image_shape, feature_dtype, x_kind,
                 num_classes, class_names, mean, scale, fingerprint, description,
                 shuffle_buffer, target=(0.0, 1.0)):  # fmt: skip
        self.split_files = splits  # {"train", "validation", "test"?: Split}
        self.train = splits["train"]
        self.input_shape = tuple(int(d) for d in input_shape)
        self.image_shape = tuple(image_shape) if image_shape else None
        self.feature_dtype = feature_dtype
        if feature_dtype == "encoded":
            self.encoded_images = self.image_shape
        # "bytes" (raw values or, feature_dtype "encoded", an image file) or "floats"
        self.x_kind = x_kind
        self.num_classes = int(num_classes)
        self.class_names = tuple(class_names) if class_names else None
        self.num_train = self.train.examples
        self.num_validation = splits["validation"].examples
        self.num_test = splits["test"].examples if "test" in splits else 0
        self.splits = "validation and test: the files of their own splits"
        self.feature_mean = np.asarray(mean, np.float32).reshape(self.input_shape)
        self.feature_scale = np.asarray(scale, np.float32).reshape(self.input_shape)
        self.target_mean, self.target_scale = (float(v) for v in target)
        self.fingerprint = fingerprint
        self.description = description
        self.shuffle_buffer = int(shuffle_buffer)

    # -- opening ----------------------------------------------------------------
    @classmethod
    def open(cls, config) -> RecordSource:
        """Checks the files and their metadata; reads no more than a record per file
        (files made elsewhere are scanned once).

        Raises:
          DataError: naming the flag or the file.
        """
        if config.data_dir:
            return cls._from_metadata(config)
        if not config.validation_files:
            raise DataError(
                "--validation_files: required with --train_files when --data_dir is not given "
                "(the validation split that the run's choices read)"
            )
        return cls._scanned(config)

    @classmethod
    def _from_metadata(cls, config) -> RecordSource:
        data_dir = config.data_dir
        metadata = read_metadata(data_dir)
        metadata_path = os.path.join(data_dir, METADATA)
        splits = {}
        for split in SPLITS:
            flag = getattr(config, f"{split}_files")
            if split not in metadata["splits"]:
                if flag:  # files of a split the folder lacks: counted once opened
                    files = glob_files(flag, f"--{split}_files")
                    splits[split] = Split(files, [None] * len(files))
                elif split == "validation":
                    raise DataError(
                        f"{metadata_path}: has no validation split (converted by an earlier "
                        "version); convert the data again, or give --validation_files"
                    )
                continue
            listed = metadata["splits"][split]["files"]
            if flag:
                files = glob_files(flag, f"--{split}_files")
                unknown = [f for f in files if os.path.basename(f) not in listed]
                if unknown:
                    raise DataError(f"{unknown[0]}: not a {split} file listed in {metadata_path}")
            else:
                files = [os.path.join(data_dir, name) for name in sorted(listed)]
            for path in files:
                facts = listed[os.path.basename(path)]
                try:
                    size = os.stat(path).st_size
                except FileNotFoundError:
                    raise DataError(
                        f"{path}: missing (listed in {metadata_path}); convert the data again"
                    ) from None
                if size != facts["bytes"]:
                    raise DataError(
                        f"{path}: {size} bytes, but {metadata_path} says {facts['bytes']} "
                        "(truncated or changed); convert the data again"
                    )
            counts = [listed[os.path.basename(f)]["examples"] for f in files]
            splits[split] = Split(files, counts)
        shape = tuple(metadata["feature_shape"])
        image = metadata["image_shape"]
        input_shape = (math.prod(shape),)
        regression = metadata["task"] == "regression"
        source = cls(
            splits=splits,
            input_shape=input_shape,
            image_shape=image,
            feature_dtype=metadata["feature_dtype"],
            x_kind="bytes",
            num_classes=0 if regression else metadata["num_classes"],
            class_names=metadata.get("class_names"),
            mean=metadata["normalization"]["mean"],
            scale=metadata["normalization"]["scale"],
            fingerprint=fingerprint(splits, metadata),
            description="",
            shuffle_buffer=config.shuffle_buffer,
            target=_target_scaling(metadata.get("target_normalization")),
        )
        source._check_first_records()
        for split in splits.values():
            if None in split.counts:
                split.counts = [source._count_records(path) for path in split.files]
        source.num_validation = splits["validation"].examples
        source.num_test = splits["test"].examples if "test" in splits else 0
        source.description = source._describe(data_dir)
        return source

    def _count_records(self, path: str) -> int:
        import tensorflow as tf

        try:
            return int(
                tf.data.TFRecordDataset(path, buffer_size=_READ_BUFFER).reduce(
                    0, lambda n, _: n + 1
                )
            )
        except tf.errors.OpError as error:
            raise DataError(f"{path}: {read_problem(error)}") from None

    @classmethod
    def _scanned(cls, config) -> RecordSource:
        import tensorflow as tf

        from trainer.data import tabular

        given = {
            split: glob_files(getattr(config, f"{split}_files"), f"--{split}_files")
            for split in SPLITS
            if getattr(config, f"{split}_files")
        }
        train_files = given["train"]
        x_kind, size, regression = _schema(train_files[0])
        probe = cls(
            splits={split: Split(files, [0] * len(files)) for split, files in given.items()},
            input_shape=(size,), image_shape=None,
            feature_dtype="uint8" if x_kind == "bytes" else "float32", x_kind=x_kind,
            num_classes=0 if regression else 2, class_names=None,
            mean=np.zeros(size), scale=np.ones(size), fingerprint="", description="",
            shuffle_buffer=config.shuffle_buffer,
        )  # fmt: skip
        probe._check_first_records()
        moments, targets = tabular.Moments(size), tabular.Moments(1)
        counts, highest = {}, -1
        for split, files in given.items():
            counts[split] = []
            for path in files:
                count = 0
                dataset = tf.data.TFRecordDataset(path, buffer_size=_READ_BUFFER).batch(4096)
                try:
                    for batch in dataset.map(probe._parse):
                        x, y = batch[0].numpy(), batch[1].numpy()
                        count += len(x)
                        if split == "train":
                            moments.update(x.reshape(len(x), -1).astype(np.float64))
                            if regression:
                                targets.update(y.reshape(-1, 1).astype(np.float64))
                        if not regression and len(y):
                            if y.min() < 0:
                                raise DataError(f"{path}: class id {int(y.min())} is negative")
                            highest = max(highest, int(y.max()))
                except tf.errors.OpError as error:
                    raise DataError(f"{path}: {read_problem(error)}") from None
                counts[split].append(count)
        for split in given:
            if not sum(counts[split]):
                flag = f"--{split}_files={getattr(config, f'{split}_files')}"
                raise DataError(f"{flag}: the files hold no example")
        if not regression and highest < 1:
            raise DataError(f"--train_files={config.train_files}: fewer than 2 classes")
        mean, scale = moments.standardization()
        splits = {split: Split(files, counts[split]) for split, files in given.items()}

        source = cls(
            splits=splits, input_shape=(size,),
            image_shape=image_shape_of((size,)), feature_dtype=probe.feature_dtype, x_kind=x_kind,
            num_classes=0 if regression else highest + 1, class_names=None, mean=mean,
            scale=scale, fingerprint=fingerprint(splits, {"mean": mean.tolist()}),
            description="", shuffle_buffer=config.shuffle_buffer,
            target=_target_scaling(_moments_scaling(targets) if regression else None),
        )  # fmt: skip
        source.description = source._describe(os.path.dirname(train_files[0]))
        return source

    def _describe(self, where: str) -> str:
        task = f"{self.num_classes} classes" if self.num_classes else "regression"
        counts = " / ".join(
            f"{split.examples} {name} in {len(split.files)} files"
            for name, split in self.split_files.items()
        )
        test = "" if "test" in self.split_files else "; no test split"
        if self.feature_dtype == "encoded":
            features = f"{'x'.join(map(str, self.image_shape))} images (encoded files)"
        else:
            features = f"{self.input_size} {self.feature_dtype} features"
        return (
            f"tfrecord {where}: {counts}{test}; {features}, {task} (streamed; shuffle window "
            f"{self.shuffle_buffer})"
        )

    def _check_first_records(self) -> None:
        """Parses the first record of every file, so a file of another kind is
        named now rather than failing mid-run."""
        import tensorflow as tf

        for path in (path for split in self.split_files.values() for path in split.files):
            try:
                records = list(
                    tf.data.TFRecordDataset(path, buffer_size=_READ_BUFFER)
                    .take(1)
                    .batch(1)
                    .map(self._parse)
                )
            except tf.errors.OpError as error:
                raise DataError(f"{path}: {read_problem(error)}") from None
            if not records and os.path.getsize(path):
                raise DataError(f"{path}: not a TFRecord file")

    # -- parsing ---------------------------------------------------------------
    def _parse(self, serialized):
        """Serialized examples ``[B]`` -> ``(x float32 [B, *input_shape], y [B])``."""
        import tensorflow as tf

        y_spec = tf.io.FixedLenFeature([], tf.float32 if not self.num_classes else tf.int64)
        if self.x_kind == "bytes":
            spec = {"x": tf.io.FixedLenFeature([], tf.string), "y": y_spec}
            features = tf.io.parse_example(serialized, spec)
            if self.feature_dtype == "encoded":  # image files' bytes
                from trainer.data import image_codec

                height, width, channels = self.image_shape
                x = image_codec.decode_batch(features["x"], (height, width), channels)
            else:
                x = tf.io.decode_raw(features["x"], tf.dtypes.as_dtype(self.feature_dtype))
                x = tf.cast(x, tf.float32)
        else:
            spec = {"x": tf.io.FixedLenFeature([self.input_size], tf.float32), "y": y_spec}
            features = tf.io.parse_example(serialized, spec)
            x = features["x"]
        x = tf.reshape(x, [-1, *self.input_shape])
        y = features["y"]
        if not self.num_classes:  # a regression's targets, standardized
            y = (y - self.target_mean) / self.target_scale
        return x, y

    def _parse_training(self, serialized):
        """``_parse`` with the labels checked against ``num_classes``: under XLA
        the loss's kernel returns NaN for a label out of range instead of
        failing, so the check comes first (in the words of that kernel's message)."""
        import tensorflow as tf

        x, y = self._parse(serialized)
        if not self.num_classes:
            return x, y
        bad = tf.logical_or(y < 0, y >= self.num_classes)
        value = tf.gather(y, tf.argmax(tf.cast(bad, tf.int32)))
        message = tf.strings.format(
            "Received a label value of {} which is outside the valid range of [0, {})",
            (value, self.num_classes),
        )
        with tf.control_dependencies([tf.debugging.Assert(~tf.reduce_any(bad), [message])]):
            return x, tf.identity(y)

    # -- the DataSource interface ---------------------------------------------------
    def as_images(self) -> RecordSource:
        if self.image_shape is None:
            raise DataError(
                f"{self.description.split(':')[0]}: its {self.input_size} features are not an "
                "image, so convolutional models cannot take them; use a flat model (--model=mlp)"
            )
        return self.image_view()

    def _assignment(self, split: Split, pipelines: int, index: int, log: bool):
        """This pipeline's files, example count per epoch, and whether it shards by data."""
        if pipelines <= 1:
            return split.files, split.examples, False
        if len(split.files) >= pipelines:
            mine = list(range(index, len(split.files), pipelines))
            files = [split.files[i] for i in mine]
            if log:
                logging.info(
                    "input pipeline %d of %d reads %d of %d files: %s",
                    index, pipelines, len(files), len(split.files),
                    ", ".join(os.path.basename(f) for f in files),
                )  # fmt: skip
            return files, sum(split.counts[i] for i in mine), False
        if log:
            logging.warning(
                "only %d file(s) for %d workers: every worker reads all of them and keeps "
                "every %d-th example (write at least %d shards to give each worker its own files)",
                len(split.files), pipelines, pipelines, pipelines,
            )  # fmt: skip
        n = split.examples
        return split.files, (n - index + pipelines - 1) // pipelines, True

    def _epoch(self, files, seed: int, start_epoch: int, offset: int, shard, pipeline: int):
        """A function ``epoch (int64 scalar) -> dataset`` of one pipeline's raw records."""
        import tensorflow as tf

        names = tf.constant(files)
        buffer = self.shuffle_buffer

        def epoch_records(epoch):
            order = tf.random.experimental.stateless_shuffle(
                tf.range(len(files), dtype=tf.int64),
                seed=tf.stack([tf.constant(seed, tf.int64), epoch]),
            )
            records = tf.data.Dataset.from_tensor_slices(tf.gather(names, order)).interleave(
                lambda path: tf.data.TFRecordDataset(path, buffer_size=_READ_BUFFER),
                cycle_length=min(len(files), _CYCLE),
                block_length=1,
                num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=True,
            )
            if shard is not None:
                records = records.shard(*shard)
            # A window shuffle: each run of ``buffer`` records is permuted by a
            # stateless shuffle seeded by (seed, epoch, pipeline, window), so the
            # order follows from the seed and the position alone (Dataset.shuffle's
            # seeds cannot be tensors under every global seed).
            mixed = (tf.constant(seed, tf.int64) * 1_000_003 + epoch) * 4099 + pipeline

            def permute(index, window):
                order = tf.random.experimental.stateless_shuffle(
                    tf.range(tf.shape(window, out_type=tf.int64)[0]),
                    seed=tf.stack([mixed, index]),
                )
                return tf.gather(window, order)

            records = records.batch(buffer).enumerate().map(permute).unbatch()
            skip = tf.where(tf.equal(epoch, start_epoch), tf.constant(offset, tf.int64), 0)
            return records.skip(skip)

        return epoch_records

    def _train_dataset(self, context, global_batch_size: int, seed: int, start_step: int):
        import tensorflow as tf

        pipelines, index = context.num_input_pipelines, context.input_pipeline_id
        files, count, by_data = self._assignment(self.train, pipelines, index, log=True)
        per_replica = context.get_per_replica_batch_size(global_batch_size)
        per_step = global_batch_size // pipelines  # what this pipeline feeds each step
        if count < per_step:
            raise DataError(
                f"--batch_size={global_batch_size}: input pipeline {index} holds only {count} "
                f"training examples, fewer than the {per_step} it must feed each step"
            )
        start_epoch, offset = divmod(start_step * per_step, count)
        epoch_records = self._epoch(
            files, seed, start_epoch, offset, (pipelines, index) if by_data else None, index
        )
        return (
            tf.data.Dataset.range(start_epoch, 2**62)
            .flat_map(epoch_records)
            .batch(per_replica, drop_remainder=True)
            .map(self._parse_training, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .prefetch(tf.data.AUTOTUNE)
        )

    def train_iterator(self, strategy, global_batch_size, seed, start_step):
        if start_step:
            logging.info(
                "resuming the TFRecord stream at step %d: skipping to its position "
                "(records are read, not parsed)",
                start_step,
            )
        distributed = strategy.distribute_datasets_from_function(
            lambda context: self._train_dataset(context, global_batch_size, seed, start_step)
        )
        return iter(distributed)

    def validation_dataset(self, strategy, global_batch_size=2048):
        return self._whole(self.split_files["validation"], strategy, global_batch_size)

    def test_dataset(self, strategy, global_batch_size=2048):
        return self._whole(self.split_files["test"], strategy, global_batch_size)

    def _whole(self, split, strategy, global_batch_size):
        import tensorflow as tf

        per_replica = max(1, global_batch_size // strategy.num_replicas_in_sync)

        def make(context):
            pipelines, index = context.num_input_pipelines, context.input_pipeline_id
            files, _, by_data = self._assignment(split, pipelines, index, log=False)
            records = tf.data.TFRecordDataset(files, buffer_size=_READ_BUFFER)
            if by_data:
                records = records.shard(pipelines, index)
            return (
                records.batch(per_replica)
                .map(self._parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
                .prefetch(2)
            )

        return strategy.distribute_datasets_from_function(make)

    def sample(self, count=256):
        import tensorflow as tf

        records = tf.data.TFRecordDataset(self.train.files).take(count).batch(count)
        for x, y in records.map(self._parse):
            return x.numpy(), y.numpy()
        return np.zeros((0, *self.input_shape), np.float32), np.zeros((0,), np.int64)

    def pipeline(self, global_batch_size: int, seed: int = 0):
        """The training dataset of a single pipeline (benchmarks, tests)."""
        import tensorflow as tf

        context = tf.distribute.InputContext(1, 0, 1)
        return self._train_dataset(context, global_batch_size, seed, 0)


def _schema(path: str) -> tuple[str, int, bool]:
    """``(x kind, D, regression)`` from the first record of a file made elsewhere."""
    import tensorflow as tf

    try:
        first = next(iter(tf.data.TFRecordDataset(path).take(1)), None)
    except tf.errors.OpError as error:
        raise DataError(f"{path}: {read_problem(error)}") from None
    if first is None:
        raise DataError(f"{path}: holds no record")
    example = tf.train.Example()
    try:
        example.ParseFromString(first.numpy())
    except Exception:
        raise DataError(f"{path}: the first record is not a tf.train.Example") from None
    feature = example.features.feature
    if "x" not in feature or "y" not in feature:
        raise DataError(
            f"{path}: records need features 'x' (raw uint8 bytes or a float list) and 'y' "
            f"(int64 class id or float target); found {', '.join(sorted(feature)) or 'none'}"
        )
    x, y = feature["x"], feature["y"]
    if x.HasField("bytes_list") and len(x.bytes_list.value) == 1:
        kind, size = "bytes", len(x.bytes_list.value[0])
    elif x.HasField("float_list"):
        kind, size = "floats", len(x.float_list.value)
    else:
        raise DataError(f"{path}: feature 'x' must be one bytes value or a float list")
    if size < 1:
        raise DataError(f"{path}: feature 'x' is empty")
    if y.HasField("int64_list") and len(y.int64_list.value) == 1:
        regression = False
    elif y.HasField("float_list") and len(y.float_list.value) == 1:
        regression = True
    else:
        raise DataError(f"{path}: feature 'y' must be one int64 class id or one float target")
    return kind, size, regression


def read_problem(error) -> str:
    text = one_line(error, limit=200)
    if "corrupted record" in text.lower() or "truncated record" in text.lower():
        return f"corrupt or truncated TFRecord file ({text})"
    return f"cannot read its records as this dataset's examples ({text})"
