"""``--dataset=csv``: any CSV with a header row, a label column and numeric
features (the format and its checks are ``tabular``'s), held in memory."""

from __future__ import annotations

import os

import numpy as np

from trainer import resources
from trainer.data import tabular
from trainer.data.arrays import Arrays, image_shape_of
from trainer.data.splits import split_indices
from trainer.errors import DataError

# -- any CSV (the Kaggle digit-recognizer layout is one) ------------------------------
_CONVERT_HINT = "convert it with python -m trainer.convert --source=csv to stream it"


def load(config) -> Arrays:
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
        resources.check_memory(rows * width * 13, f"up to {rows} rows x {width} columns", path)
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
    train, held_out, note = split_indices(
        None if vocabulary is None else y, count, config.eval_fraction, config.seed, path
    )
    if vocabulary is not None:
        check_classes(vocabulary, y, train, held_out, lines, path, label_column)
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
        image_shape_of((size,)), class_names,
    )  # fmt: skip


def check_classes(vocabulary, y, train, held_out, lines, path: str, column: str) -> None:
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
