"""``--dataset=csv``: any CSV with a header row, a label column and numeric
features (the format and its checks are ``tabular``'s), held in memory."""

from __future__ import annotations

import numpy as np

from trainer import files, resources
from trainer.data import tabular
from trainer.data.arrays import Arrays, image_shape_of
from trainer.data.splits import describe, split_indices
from trainer.errors import DataError

# -- any CSV (the Kaggle digit-recognizer layout is one) ------------------------------
_CONVERT_HINT = "convert it with python -m trainer.convert --source=csv to stream it"


def _read(path: str, label_column: str, flag: str, columns=None):
    """A CSV's raw features and label texts: ``(x float32 [n, D], texts [n], lines [n],
    columns)``; with ``columns``, the file must have exactly those.

    Raises:
      DataError: naming the file, the line or the column.
    """
    # Missing, a folder, a FIFO (reading would block), a device (/dev/null): said so.
    files.check_input_file(path, f"--{flag}={path}", "CSV file")
    found = tabular.read_header(path, label_column)
    if columns is not None and found != columns:
        raise DataError(
            f"--{flag}={path}: its columns ({', '.join(found)}) differ from the training "
            f"CSV's ({', '.join(columns)}); every split needs the same columns in the same order"
        )
    width = len(found)
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
    for chunk in tabular.iter_chunks(path, found, label_column):
        if count + len(chunk) > rows:
            raise DataError(f"{path}: grew while being read; read it again")
        x[count : count + len(chunk)] = chunk.features
        count += len(chunk)
        texts.append(chunk.labels)
        lines.append(chunk.lines)
    return x[:count], np.concatenate(texts), np.concatenate(lines), found


# More distinct whole-number labels than this, with fewer rows a label than
# _FEW_ROWS, are regression targets, not classes (diabetes: 214 over 442 rows).
_MANY_CLASSES = 20
_FEW_ROWS = 5


def check_plausible_classes(vocabulary, rows: int, path: str, column: str) -> None:
    """Refuses numeric labels that look like regression targets under classification."""
    if not vocabulary or isinstance(vocabulary[0], str):
        return
    count = len(vocabulary)
    if count > _MANY_CLASSES and rows < _FEW_ROWS * count:
        raise DataError(
            f"{path}, column {column!r}: {count} distinct numbers over {rows} rows "
            f"({rows / count:.1f} rows a class) look like regression targets, not classes; "
            "pass --loss=mse to fit them"
        )


def load(config) -> Arrays:
    """A CSV with a header row, a label column (``--label_column``) and numeric features.

    The format and its checks are ``trainer.tabular``'s. With ``--loss=mse`` the
    labels are regression targets (float32); otherwise they are classes: whole
    numbers or names (``tabular.class_vocabulary``, read from the training
    file), with ``class_names`` holding them unless they are simply ``0..C-1``.
    The test split is ``--test_csv_path`` when given, else ``--test_fraction``
    of the rows; the validation split ``--validation_csv_path`` when given (else
    held out later, by ``arrays.with_validation``). Features stay raw; their
    standardisation (``tabular.Moments`` over the training rows) is fitted
    once the splits are made.
    """
    path, label_column = config.csv_path, config.label_column
    if not path:
        raise DataError("--csv_path: required with --dataset=csv")
    x, texts, lines, columns = _read(path, label_column, "csv_path")
    where = {"path": path, "column": label_column}
    if config.loss == "mse":
        vocabulary = None
        y = tabular.targets(texts, lines, **where)
    else:
        vocabulary = tabular.class_vocabulary(texts, lines, **where)
        check_plausible_classes(vocabulary, len(texts), path, label_column)
        y = tabular.encode(texts, vocabulary, lines, **where)
    del texts
    given = {}
    for split in ("test", "validation"):
        other = getattr(config, f"{split}_csv_path")
        if other:
            given[split] = _labelled(other, label_column, f"{split}_csv_path", columns, vocabulary)
    if "test" in given:
        (x_test, y_test), x_train, y_train = given["test"], x, y
        splits = f"test: the rows of {config.test_csv_path}"
    else:
        train, held_out, note = split_indices(
            None if vocabulary is None else y, len(x), config.test_fraction, config.seed, path
        )
        if vocabulary is not None:
            check_classes(vocabulary, y, train, held_out, lines, path, label_column)
        x_train, x_test, y_train, y_test = x[train], x[held_out], y[train], y[held_out]
        splits = describe(
            "test", config.test_fraction, config.seed, vocabulary is not None, note,
            f"the {len(x)} rows",
        )  # fmt: skip
    del x
    x_val, y_val = given.get("validation", (None, None))
    if x_val is not None:
        splits += f"; validation: the rows of {config.validation_csv_path}"
    size = x_train.shape[1]
    if vocabulary is None:
        task, class_names = "regression", None
    else:
        task = tabular.describe_classes(vocabulary)
        class_names = None if vocabulary == tuple(range(len(vocabulary))) else vocabulary
    return Arrays(
        x_train, y_train, x_test, y_test, len(vocabulary or ()), None, None,
        f"csv {path}: {size} features; label column {label_column!r}: {task}",
        image_shape_of((size,)), class_names, x_val, y_val, splits,
        fit_scaling=lambda rows: tabular.Moments(rows.shape[1]).update(rows).standardization(),
    )  # fmt: skip


def _labelled(path, label_column, flag, columns, vocabulary):
    """Another split's CSV (same columns): ``(x float32 [n, D], y [n])``, its labels
    read as the training file's (targets, or its classes)."""
    x, texts, lines, _ = _read(path, label_column, flag, columns)
    where = {"path": path, "column": label_column}
    if vocabulary is None:
        return x, tabular.targets(texts, lines, **where)
    return x, tabular.encode(texts, vocabulary, lines, **where)


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
        "lower --test_fraction)"
    )
