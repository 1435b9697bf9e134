"""``python -m trainer.convert``: datasets -> sharded TFRecord files for streaming.

    python -m trainer.convert --source=mnist --data_dir=mnist/ --output_dir=data/mnist
    python -m trainer.convert --source=csv --csv_path=iris.csv --label_column=species \\
        --output_dir=data/iris --num_shards=4
    python -m trainer.convert --source=npz --npz_path=mnist.npz --output_dir=data/mnist-npz
    python -m trainer.convert --source=images --data_dir=photos/ --output_dir=data/photos

then ``python -m trainer.main --dataset=tfrecord --data_dir=data/mnist``.

Sources are read in chunks, never whole, into three splits: training,
validation (every choice a run makes reads it) and test (reported, never used
to choose). MNIST IDX files (``train-*`` become the train and validation
splits, ``--validation_fraction`` of them stratified and seeded, ``t10k-*`` the
test split, pixels kept as uint8 and scaled
by 255 in the model as with ``--dataset=mnist``); any CSV (a header, a label
column named by ``--label_column``, numeric feature columns; class names,
class ids, or with ``--task=regression`` numeric targets), split exactly as
``--dataset=csv`` splits it (``--test_fraction``, ``--validation_fraction``, ``--seed``),
features stored as float32 and standardized in the model with the training
split's statistics; a NumPy ``.npz`` holding ``x_train``/``y_train`` with
``x_test``/``y_test`` (or ``x_eval``/``y_eval``), or ``x``/``y`` to split
(the validation split is held out of the training arrays); a folder of images in
a sub-folder per class, split as ``--dataset=images`` splits it (the same flags),
each file's encoded bytes kept (decoded and resized to ``image_shape`` when read).

The statistics (per-feature mean and standard deviation of the training split)
are computed in the same streaming pass that writes the files. Everything is
written into a hidden temporary folder that is renamed to ``--output_dir``
when complete, so an interrupted conversion leaves nothing that looks like a
dataset; a conversion killed outright (SIGKILL) leaves a hidden
``.tmp-convert-<host>.<pid>.*`` folder that the next conversion beside it
removes once that process is gone. Exit status: 0 done, 2 bad input (one
line naming the file, row and column where there is one), 128 + N stopped by
signal N.
"""

from __future__ import annotations

import os
import time
import types
import zipfile

import numpy as np
from absl import app, flags, logging

from trainer import files
from trainer.cli import (
    Interrupted,
    end_on_signals,
    exit_now,
    fail,
    fail_interrupted,
    no_positional_arguments,
)
from trainer.cli import parse_flags as _parse_flags
from trainer.data import csv_table, record_files, record_writer, splits
from trainer.data.arrays import image_shape_of
from trainer.errors import UsageError, one_line

SOURCES = ("mnist", "csv", "npz", "images")
TASKS = ("classification", "regression")
_ROWS = 4096  # examples read and written at a time
MAX_SHARDS = 1024  # files written at once, each an open file


def define_flags() -> None:
    """Defines the converter's flags (only when it runs as the program, so that
    importing this module beside the trainer's flags defines nothing)."""
    flags.DEFINE_enum("source", None, SOURCES, "What to convert.")
    flags.DEFINE_string(
        "data_dir",
        None,
        "--source=mnist: folder with the MNIST IDX files; --source=images: folder of images in "
        "a sub-folder per class (as --dataset=images reads it).",
    )
    flags.DEFINE_string(
        "image_size", None, "--source=images: HEIGHT,WIDTH (default: the images' own)."
    )
    flags.DEFINE_integer("channels", 0, "--source=images: 1 or 3 (0: as stored).")
    flags.DEFINE_enum(
        "bad_images", "stop", ("stop", "skip"), "--source=images: stop at a bad file, or skip it."
    )
    flags.DEFINE_string("csv_path", None, "--source=csv: the CSV file (header row first).")
    flags.DEFINE_string("npz_path", None, "--source=npz: the NumPy .npz file.")
    flags.DEFINE_string("output_dir", None, "New (or empty) folder for the TFRecord files.")
    flags.DEFINE_integer(
        "num_shards",
        4,
        "Files per split (fewer when a split has fewer examples).",
        lower_bound=1,
        upper_bound=MAX_SHARDS,
    )
    flags.DEFINE_string("label_column", "label", "--source=csv: the column holding the labels.")
    flags.DEFINE_enum(
        "task",
        "classification",
        TASKS,
        "--source=csv|npz: labels are classes or regression targets.",
    )
    flags.DEFINE_float(
        "test_fraction",
        _OPTIONS["test_fraction"],
        "Share held out as the test split when the source is one split.",
    )
    flags.DEFINE_alias("eval_fraction", "test_fraction")
    flags.DEFINE_float(
        "validation_fraction",
        _OPTIONS["validation_fraction"],
        "Share of the training examples held out for validation.",
    )
    flags.DEFINE_integer(
        "seed",
        0,
        "Seed of the splits (as for training: the same rows go where they go there).",
        lower_bound=0,
    )
    flags.DEFINE_boolean("tf_verbose", False, "Show TensorFlow's C++ start-up messages.")


FLAGS = flags.FLAGS


# -- MNIST ---------------------------------------------------------------------------
def convert_mnist(opts, folder: str) -> dict:
    from trainer.data import mnist

    data_dir = opts.data_dir
    mnist.check_data_dir(data_dir)
    paths = {key: mnist.find_file(data_dir, stem) for key, stem in mnist.MNIST_FILES.items()}
    dims = {key: mnist.idx_dims(path, _magic(key)) for key, path in paths.items()}
    for split in ("train", "eval"):  # mnist's "eval" files (t10k) are the test split
        mnist.check_mnist_counts(
            paths[f"{split}_images"], dims[f"{split}_images"][0],
            paths[f"{split}_labels"], dims[f"{split}_labels"][0],
        )  # fmt: skip
    if dims["train_images"][1:] != dims["eval_images"][1:]:
        raise UsageError(f"{paths['eval_images']}: images differ in size from the training ones")
    shape = list(dims["train_images"][1:])
    size = int(np.prod(shape))
    train_labels = mnist.read_idx(paths["train_labels"], mnist.LABEL_MAGIC, bytes_per_value=9)
    mnist.check_mnist_labels(train_labels, paths["train_labels"], 0, len(train_labels))
    _, held, _ = splits.split_indices(
        train_labels.astype(np.int64), len(train_labels), opts.validation_fraction, opts.seed,
        "the training split of mnist", "validation",
    )  # fmt: skip
    code = {"train": splits.codes(len(train_labels), [], held)}
    code["eval"] = np.full(dims["eval_labels"][0], 2, np.int8)
    counts = _counts(np.concatenate(list(code.values())))
    writer = record_writer.DatasetWriter(folder, counts, opts.num_shards, "uint8", False, size)
    for split in ("train", "eval"):
        start = 0
        images = mnist.iter_idx(paths[f"{split}_images"], mnist.IMAGE_MAGIC, _ROWS)
        labels = mnist.iter_idx(paths[f"{split}_labels"], mnist.LABEL_MAGIC, _ROWS)
        total = dims[f"{split}_labels"][0]
        for x, y in zip(images, labels, strict=True):
            mnist.check_mnist_labels(y, paths[f"{split}_labels"], start, total)
            _route(writer, code[split], start, x, y.astype(np.int64))
            start += len(x)
    return writer.metadata(
        source="mnist", feature_shape=[size], image_shape=list(image_shape_of(shape)),
        feature_dtype="uint8", task="classification", num_classes=10, class_names=None,
        pixels=True, validation_fraction=opts.validation_fraction, seed=opts.seed,
    )  # fmt: skip


def _counts(code: np.ndarray) -> dict:
    """``{split: examples}`` of the splits that have some."""
    found = np.bincount(code, minlength=3)
    return {name: int(found[i]) for i, name in enumerate(splits.NAMES) if found[i]}


def _route(writer, code: np.ndarray, start: int, x, y) -> None:
    """Writes a chunk of examples ``start..`` to their splits (``code``: every example's)."""
    ids = np.arange(start, start + len(x))
    chunk = code[start : start + len(x)]
    for i, name in enumerate(splits.NAMES):
        mask = chunk == i
        if mask.any():
            writer.write(name, x[mask], y[mask], ids[mask])


def _magic(key: str) -> int:
    from trainer.data import mnist

    return mnist.IMAGE_MAGIC if key.endswith("images") else mnist.LABEL_MAGIC


def _required_file(path, flag: str, source: str, kind: str, empty_ok: bool = True) -> str:
    """``path`` when it names a regular file (``kind``, in messages); a one-line
    ``DataError`` when it is missing, a folder, a FIFO, a device (``/dev/null``)
    or, unless ``empty_ok``, empty."""
    if not path:
        raise UsageError(f"--{flag}: required with --source={source}")
    files.check_input_file(path, f"--{flag}={path}", kind, empty_ok=empty_ok)
    return path


# -- CSV -----------------------------------------------------------------------------
def convert_csv(opts, folder: str) -> dict:
    from trainer.data import tabular

    path = _required_file(opts.csv_path, "csv_path", "csv", "CSV file")
    regression = opts.task == "regression"
    label_column = opts.label_column
    columns = tabular.read_header(path, label_column)
    size = len(columns) - 1
    # Pass 1: the labels alone, for the vocabulary and the split (as --dataset=csv splits).
    texts, lines = [], []
    for chunk in tabular.iter_chunks(path, columns, label_column, rows=_ROWS):
        texts.append(chunk.labels)
        lines.append(chunk.lines)
    if not texts:
        raise UsageError(f"{path}: no data rows, only a header")
    texts, lines = np.concatenate(texts), np.concatenate(lines)
    if regression:
        labels = tabular.targets(texts, lines, path=path, column=label_column)
        vocabulary = None
    else:
        vocabulary = tabular.class_vocabulary(texts, lines, path=path, column=label_column)
        csv_table.check_plausible_classes(vocabulary, len(texts), path, label_column)
        labels = tabular.encode(texts, vocabulary, lines, path=path, column=label_column)
    code = _csv_splits(opts, labels, vocabulary, path, lines, label_column)
    writer = record_writer.DatasetWriter(
        folder, _counts(code), opts.num_shards, "float32", regression, size
    )
    # Pass 2: the features, routed to their split; statistics on the way.
    start = 0
    for chunk in tabular.iter_chunks(path, columns, label_column, rows=_ROWS):
        _route(writer, code, start, chunk.features, labels[start : start + len(chunk.features)])
        start += len(chunk.features)
    names = _class_names(vocabulary)
    return writer.metadata(
        source="csv", csv_path=os.path.abspath(path), label_column=label_column,
        feature_columns=[c for c in columns if c != label_column], feature_shape=[size],
        image_shape=_image(size), feature_dtype="float32",
        task="regression" if regression else "classification",
        num_classes=0 if regression else len(vocabulary), class_names=names,
        test_fraction=opts.test_fraction, validation_fraction=opts.validation_fraction,
        seed=opts.seed,
    )  # fmt: skip


def _csv_splits(opts, labels, vocabulary, path, lines, label_column) -> np.ndarray:
    """Every row's split (``splits.codes``): those ``--dataset=csv`` makes of the same file."""
    classes = None if vocabulary is None else labels
    train, held_out, _ = splits.split_indices(
        classes, len(labels), opts.test_fraction, opts.seed, path
    )
    if vocabulary is not None:
        csv_table.check_classes(vocabulary, labels, train, held_out, lines, path, label_column)
    train, validation, test, _ = splits.three_way(
        classes, len(labels), opts.test_fraction, opts.validation_fraction, opts.seed, path
    )
    return splits.codes(len(labels), test, validation)


def _class_names(vocabulary):
    if vocabulary is None or list(vocabulary) == list(range(len(vocabulary))):
        return None
    return [v if isinstance(v, str) else int(v) for v in vocabulary]


def _image(size: int):
    shape = image_shape_of((size,))
    return list(shape) if shape else None


# -- NumPy .npz ------------------------------------------------------------------------
class _NpyMember:
    """One array of an .npz read in row chunks from the zip, never whole."""

    def __init__(self, archive: zipfile.ZipFile, name: str, path: str):
        self.label = f"{path}[{name[:-4]}]"
        self.handle = archive.open(name)
        try:
            version = np.lib.format.read_magic(self.handle)
            header = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            self.shape, fortran, self.dtype = header(self.handle)
        except ValueError as error:
            raise UsageError(f"{self.label}: not a NumPy array ({error})") from None
        if fortran and len(self.shape) > 1:
            raise UsageError(
                f"{self.label}: Fortran-ordered; save it C-ordered (np.ascontiguousarray)"
            )
        if self.dtype.hasobject:
            raise UsageError(f"{self.label}: holds Python objects; save numbers")
        if not self.shape or self.shape[0] < 1:
            raise UsageError(f"{self.label}: holds no examples (shape {list(self.shape)})")
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize

    def chunks(self, rows: int):
        done = 0
        while done < self.shape[0]:
            count = min(rows, self.shape[0] - done)
            body = self.handle.read(count * self.row_bytes)
            if len(body) < count * self.row_bytes:
                raise UsageError(
                    f"{self.label}: truncated (the array header promises {self.shape[0]} rows)"
                )
            yield np.frombuffer(body, self.dtype).reshape(count, *self.shape[1:])
            done += count


def convert_npz(opts, folder: str) -> dict:
    path = _required_file(opts.npz_path, "npz_path", "npz", "NumPy .npz file", empty_ok=False)
    try:
        archive = zipfile.ZipFile(path)
        names = set(archive.namelist())
    except (zipfile.BadZipFile, OSError) as error:
        raise UsageError(f"{path}: not a NumPy .npz file ({error})") from None
    with archive:
        return _convert_npz(opts, folder, path, archive, names)


def _npz_pairs(path: str, names: set) -> dict:
    """``{split: (x array name, y array name)}`` of an archive's members."""
    for eval_name in ("test", "eval"):
        wanted = {"x_train.npy", "y_train.npy", f"x_{eval_name}.npy", f"y_{eval_name}.npy"}
        if wanted <= names:
            return {"train": ("x_train", "y_train"), "eval": (f"x_{eval_name}", f"y_{eval_name}")}
    if {"x.npy", "y.npy"} <= names:
        return {"all": ("x", "y")}
    shown = ", ".join(sorted(n[:-4] for n in names)) or "nothing"
    raise UsageError(
        f"{path}: needs arrays x_train, y_train, x_test, y_test (or x_eval, y_eval), or x "
        f"and y; it holds {shown}"
    )


def _npz_labels_and_shape(archive, path, pairs, regression):
    """``(labels per split, one example's shape)``, checked against the features."""
    labels, shapes = {}, {}
    for split, (x_name, y_name) in pairs.items():
        y_member = _NpyMember(archive, y_name + ".npy", path)
        x_member = _NpyMember(archive, x_name + ".npy", path)
        if x_member.shape[0] != y_member.shape[0] or len(y_member.shape) != 1:
            raise UsageError(
                f"{path}: {x_name} holds {x_member.shape[0]} examples but {y_name} has shape "
                f"{list(y_member.shape)}; expected [{x_member.shape[0]}]"
            )
        y = np.concatenate(list(y_member.chunks(1 << 20)))
        labels[split] = _npz_labels(y, regression, f"{path}[{y_name}]")
        shapes[split] = x_member.shape[1:]
    if len(set(shapes.values())) > 1:
        raise UsageError(
            f"{path}: train and eval examples differ in shape "
            f"({', '.join(str(list(s)) for s in shapes.values())})"
        )
    return labels, list(next(iter(shapes.values()))) or [1]


def _write_npz_split(writer, member, split, labels, dtype, size, code) -> None:
    """One array's examples in chunks, routed to their splits by ``code``
    (``splits.codes`` of the array's examples)."""
    start = 0
    for x in member.chunks(_ROWS):
        x = x.reshape(len(x), size)
        if dtype == "float32":
            with np.errstate(over="ignore", invalid="ignore"):
                x = x.astype(np.float32)
            bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
            if bad.size:
                raise UsageError(
                    f"{member.label}: example {start + int(bad[0])} holds a value that is "
                    "not a finite float32 number"
                )
        _route(writer, code, start, x, labels[split][start : start + len(x)])
        start += len(x)


def _convert_npz(opts, folder, path, archive, names) -> dict:
    regression = opts.task == "regression"
    pairs = _npz_pairs(path, names)
    labels, shape = _npz_labels_and_shape(archive, path, pairs, regression)
    size = int(np.prod(shape))
    x_dtype = _NpyMember(archive, next(iter(pairs.values()))[0] + ".npy", path).dtype
    dtype = "uint8" if x_dtype == np.uint8 else "float32"
    vocabulary = None
    if not regression:
        vocabulary = tuple(int(v) for v in np.unique(np.concatenate(list(labels.values()))))
        for split in labels:
            labels[split] = np.searchsorted(np.asarray(vocabulary), labels[split]).astype(np.int64)
    code = _npz_splits(opts, labels, regression, path)
    writer = record_writer.DatasetWriter(
        folder, _counts(np.concatenate(list(code.values()))), opts.num_shards, dtype, regression,
        size,
    )  # fmt: skip
    for split, (x_name, _) in pairs.items():
        member = _NpyMember(archive, x_name + ".npy", path)
        _write_npz_split(writer, member, split, labels, dtype, size, code[split])
    image = [*shape, 1] if len(shape) == 2 else (shape if len(shape) == 3 else _image(size))
    return writer.metadata(
        source="npz", npz_path=os.path.abspath(path), feature_shape=[size],
        image_shape=image, feature_dtype=dtype,
        task="regression" if regression else "classification",
        num_classes=0 if regression else len(vocabulary), class_names=_class_names(vocabulary),
        pixels=dtype == "uint8",
    )  # fmt: skip


def _npz_splits(opts, labels: dict, regression: bool, path: str) -> dict:
    """``{array pair: splits.codes of its examples}``: ``all`` split three ways as
    ``--dataset=csv`` splits a table; ``train`` (validation held out) and ``eval``."""
    if "all" in labels:
        y = labels["all"]
        _, validation, test, _ = splits.three_way(
            None if regression else y, len(y), opts.test_fraction, opts.validation_fraction,
            opts.seed, path,
        )  # fmt: skip
        return {"all": splits.codes(len(y), test, validation)}
    y = labels["train"]
    _, held, _ = splits.split_indices(
        None if regression else y, len(y), opts.validation_fraction, opts.seed,
        f"the training split of {path}", "validation",
    )  # fmt: skip
    return {
        "train": splits.codes(len(y), [], held),
        "eval": np.full(len(labels["eval"]), 2, np.int8),
    }


def _npz_labels(y: np.ndarray, regression: bool, label: str) -> np.ndarray:
    if regression:
        if not np.issubdtype(y.dtype, np.number):
            raise UsageError(f"{label}: regression targets must be numbers")
        with np.errstate(over="ignore", invalid="ignore"):
            y = y.astype(np.float32)
        bad = np.flatnonzero(~np.isfinite(y))
        if bad.size:
            raise UsageError(f"{label}: target {int(bad[0])} is not a finite float32 number")
        return y
    if not np.issubdtype(y.dtype, np.integer):
        if (
            np.issubdtype(y.dtype, np.floating)
            and np.all(np.isfinite(y))
            and np.all(y == np.round(y))
        ):
            return y.astype(np.int64)
        raise UsageError(f"{label}: class labels must be whole numbers (or pass --task=regression)")
    return y.astype(np.int64)


# -- image folders -----------------------------------------------------------------------
def convert_images(opts, folder: str) -> dict:
    """The splits ``--dataset=images`` makes of the folder (the same flags, the same
    files), each file's bytes kept as they are: decoded and resized when read."""
    from trainer.data.image_folder import ImageFolderSource

    if not opts.data_dir:
        raise UsageError("--data_dir: required with --source=images")
    if not os.path.isdir(opts.data_dir):
        raise UsageError(f"--data_dir={opts.data_dir}: no such folder")
    settings = types.SimpleNamespace(
        **{name: getattr(opts, name) for name in (
            "data_dir", "image_size", "channels", "bad_images", "test_fraction",
            "validation_fraction", "seed")},
    )  # fmt: skip
    source = ImageFolderSource.open(settings)
    counts = {name: len(source.indices[name]) for name in splits.NAMES if len(source.indices[name])}
    size = int(np.prod(source.image_shape))
    writer = record_writer.DatasetWriter(folder, counts, opts.num_shards, "encoded", False, size)
    for name in counts:
        indices = np.sort(source.indices[name])
        for start in range(0, len(indices), _ROWS):
            chunk = indices[start : start + _ROWS]
            contents = []
            for index in chunk:
                with open(source.paths[index], "rb") as handle:
                    contents.append(handle.read())
            writer.writers[name].write_encoded(contents, source.labels[chunk], chunk)
    return writer.metadata(
        source="images", data_dir=os.path.abspath(opts.data_dir),
        feature_shape=list(source.image_shape), image_shape=list(source.image_shape),
        feature_dtype="encoded", task="classification", num_classes=source.num_classes,
        class_names=list(source.class_names), pixels=True, splits_made=source.splits,
        test_fraction=opts.test_fraction, validation_fraction=opts.validation_fraction,
        seed=opts.seed,
    )  # fmt: skip


CONVERTERS = {
    "mnist": convert_mnist,
    "csv": convert_csv,
    "npz": convert_npz,
    "images": convert_images,
}


_PATHS = ("data_dir", "csv_path", "npz_path", "output_dir")
# Every flag but the paths, with the defaults of an object that lacks it.
_OPTIONS = {"source": None, "num_shards": 4, "label_column": "label", "task": "classification",
            "test_fraction": 0.2, "validation_fraction": 0.1, "seed": 0, "image_size": None,
            "channels": 0, "bad_images": "stop"}  # fmt: skip


def convert(opts) -> dict:
    """Runs the conversion ``opts`` asks for (the flags, or any object with an
    attribute per flag); returns the metadata written. ``~`` in a path is expanded
    (the shell leaves ``--flag=~/x`` alone)."""
    opts = types.SimpleNamespace(
        **{name: getattr(opts, name, default) for name, default in _OPTIONS.items()},
        **{name: os.path.expanduser(getattr(opts, name, None) or "") or None for name in _PATHS},
    )
    if not opts.source:
        raise UsageError(f"--source: required ({', '.join(SOURCES)})")
    if not opts.output_dir:
        raise UsageError("--output_dir: required (a new or empty folder)")
    if not 1 <= opts.num_shards <= MAX_SHARDS:
        raise UsageError(f"--num_shards={opts.num_shards}: must be in 1..{MAX_SHARDS}")
    for name in ("test_fraction", "validation_fraction"):
        if not 0 < getattr(opts, name) < 1:
            raise UsageError(f"--{name}={getattr(opts, name)}: must be in (0, 1)")
    output_dir = opts.output_dir
    started = time.time()
    with record_writer.output_folder(output_dir) as folder:
        metadata = CONVERTERS[opts.source](opts, folder)
        for split in splits.NAMES:
            if split == "test" and opts.source == "images" and split not in metadata["splits"]:
                continue  # a folder with train/ and validation/ only: no test split
            if not metadata["splits"].get(split, {}).get("examples"):
                raise UsageError(f"--source={opts.source}: the {split} split holds no example")
        record_files.write_metadata(folder, metadata)
    written = metadata["splits"]
    logging.info(
        "wrote %s: %s (%.1fs)",
        output_dir,
        ", ".join(
            f"{written[s]['examples']} {s} examples in {len(written[s]['files'])} files"
            for s in splits.NAMES
            if s in written
        ),
        time.time() - started,
    )
    print(f"train with: python -m trainer.main --dataset=tfrecord --data_dir={output_dir}")
    return metadata


def main(argv) -> None:
    no_positional_arguments(argv)
    logging.get_absl_handler().use_absl_log_file = False
    try:
        with end_on_signals():
            from trainer import runtime

            runtime.import_tensorflow(verbose=FLAGS.tf_verbose)
            convert(FLAGS)
    except UsageError as error:
        fail(error)
    except Interrupted as interrupted:
        fail_interrupted(interrupted, "stopped; nothing was written to --output_dir")
    except MemoryError:
        fail("out of memory while converting")
    except OSError as error:
        fail(
            f"cannot write the TFRecord files ({error.strerror or error}); nothing was "
            "written to --output_dir"
        )
    except Exception as error:  # TensorFlow's writers raise their own errors: one line
        fail(f"conversion failed ({one_line(error)}); nothing was written to --output_dir", 1)
    exit_now(0)


def run_main() -> None:
    define_flags()
    app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
    run_main()
