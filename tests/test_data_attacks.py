"""Adversarial input to the data readers and the exported model.

Every kind of bad input must end in one ``DataError`` line naming the flag or
the file (and for a CSV the line, counting the header as line 1, and the
column), never a traceback, a NumPy warning or a silently wrong result. Most
tests call ``trainer.data.load`` in-process; two run the command line to check
the end-to-end one-line error.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import warnings

import numpy as np
import pytest

from trainer import resources
from trainer.data import arrays as arrays_lib
from trainer.data import mnist
from trainer.errors import DataError

from datafiles import idx_bytes, write_csv, write_file, write_gz_bytes, write_idx, write_mnist
from helpers import assert_one_line_error, cli, config


def _load(tmp_path, **overrides):
    """``data.load`` with warnings turned into errors: none may escape a reader."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return arrays_lib.load(config(tmp_path / "run", **overrides))


def _load_csv(tmp_path, content, **overrides):
    path = write_file(str(tmp_path / "train.csv"), content)
    return _load(tmp_path, dataset="csv", csv_path=path, **overrides)


def _raises(message: str):
    """``pytest.raises(DataError)`` whose message holds ``message`` literally."""
    return pytest.raises(DataError, match=re.escape(message))


# -- 1, 2: train/eval splits ------------------------------------------------------
@pytest.mark.parametrize(
    "dataset, fraction, n_train, n_eval, highest",
    [("digits", 0.99999, 0, 1797, "0.9994"), ("csv", 0.96, 0, 20, "0.95")],
)
def test_split_leaving_no_train_example_names_the_working_range(
    tmp_path, dataset, fraction, n_train, n_eval, highest
):
    csv_path = write_csv(str(tmp_path / "small.csv"), n=20, features=4)
    with pytest.raises(DataError) as raised:
        _load(tmp_path, dataset=dataset, csv_path=csv_path, test_fraction=fraction)
    message = str(raised.value)
    assert message.startswith(f"--test_fraction={fraction}: "), message
    assert f"leaves {n_train} train / {n_eval} test examples" in message, message
    assert f"(0, {highest}]" in message and "\n" not in message, message


@pytest.mark.parametrize("fraction, n_train, n_eval", [(0.001, 1795, 2), (0.998, 3, 1794)])
def test_extreme_eval_fractions_leaving_one_example_a_side_work(
    tmp_path, fraction, n_train, n_eval
):
    arrays = _load(tmp_path, test_fraction=fraction)
    assert (len(arrays.x_train) + len(arrays.x_validation), len(arrays.x_test)) == (n_train, n_eval)
    assert "not stratified" in arrays.describe()


def test_highest_eval_fraction_in_the_message_works(tmp_path):
    # 1 training example is a valid test split, but leaves no validation split.
    with pytest.raises(DataError, match="holds 1 example; needs at least 2 .* lower --test_f"):
        _load(tmp_path, test_fraction=0.9994)
    arrays = _load(tmp_path, test_fraction=0.9988)
    assert (len(arrays.x_train), len(arrays.x_validation)) == (1, 1)


def test_tiny_csv_with_more_classes_than_eval_rows_trains(tmp_path):
    from helpers import train

    path = write_csv(str(tmp_path / "tiny.csv"), n=20, features=4)
    arrays = _load(tmp_path, dataset="csv", csv_path=path)
    assert (len(arrays.x_train), len(arrays.x_validation), len(arrays.x_test)) == (14, 2, 4)
    results = train(tmp_path / "run", dataset="csv", csv_path=path, train_steps=3)
    assert results["global_step"] == 3 and results["validation_examples"] == 2, results
    assert results["test_examples"] == 4, results


def test_csv_with_a_class_seen_once_splits_unstratified(tmp_path):
    rows = [f"{i % 2},{i},{i}" for i in range(40)] + ["7,1,1"]
    for seed in range(5):
        arrays = _load_csv(tmp_path, "label,a,b\n" + "\n".join(rows) + "\n", seed=seed)
        assert len(arrays.x_train) + len(arrays.x_validation) + len(arrays.x_test) == 41
        assert "not stratified" in arrays.describe()
        # Whatever the seed, 7's only row is a training row: every class is learnt.
        assert arrays.class_names == (0, 1, 7) and 2 in arrays.y_train


def test_one_row_csv_cannot_be_split(tmp_path):
    with _raises("train.csv: holds 1 example; needs at least 2"):
        _load_csv(tmp_path, "label,a\n1,2\n")


# -- 3, 4, 11: MNIST IDX files -------------------------------------------------------
def _mnist(tmp_path, gz=False):
    folder = tmp_path / "mnist"
    return str(folder), write_mnist(str(folder), gz=gz, n_train=200)


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize(
    "role, shape",
    [
        ("train_images", (5, 0, 0)),
        ("train_images", (5, 28, 0)),
        ("eval_images", (0, 28, 28)),
        ("train_labels", (0,)),
    ],
)
def test_idx_with_a_zero_size_dimension_is_named(tmp_path, role, shape, gz):
    folder, paths = _mnist(tmp_path, gz)
    write_idx(paths[role].removesuffix(".gz"), np.zeros(shape), gz=gz)
    kind = "labels" if "labels" in role else "images"
    with _raises(f"{paths[role]}: IDX dimensions {list(shape)} hold no {kind}"):
        _load(tmp_path, dataset="mnist", data_dir=folder)


@pytest.mark.parametrize("gz", [False, True])
def test_idx_promising_more_than_it_holds_is_truncated_not_out_of_memory(tmp_path, gz):
    folder, paths = _mnist(tmp_path, gz)
    header = bytearray(idx_bytes(np.zeros((3, 4, 4))))
    header[4:8] = (2**32 - 1).to_bytes(4, "big")  # 4 billion images of 4x4
    if gz:
        write_gz_bytes(paths["train_images"], bytes(header))
    else:
        write_file(paths["train_images"], bytes(header))
    with _raises(f"{paths['train_images']}: truncated: 64 bytes"):
        _load(tmp_path, dataset="mnist", data_dir=folder)


def test_eval_images_must_have_the_training_image_shape(tmp_path):
    folder, paths = _mnist(tmp_path)
    count = len(mnist.read_idx(paths["eval_labels"], mnist.LABEL_MAGIC))
    write_idx(paths["eval_images"], np.zeros((count, 14, 56)))  # 784 pixels too
    message = (
        f"{paths['eval_images']}: images are 14x56 pixels, but the training images in "
        f"{paths['train_images']} are 28x28"
    )
    with _raises(message):
        _load(tmp_path, dataset="mnist", data_dir=folder)


@pytest.mark.parametrize(
    "damage, problem",
    [
        (lambda b: b[: len(b) // 2], "corrupt or truncated gzip file (Compressed file ended"),
        (lambda b: b[:20] + b"\0" * 10 + b[30:], "corrupt or truncated gzip file (Error -3"),
        (lambda b: b"plain bytes", "corrupt or truncated gzip file (Not a gzipped file"),
        (
            lambda b: b[:-8] + bytes([b[-8] ^ 0xFF]) + b[-7:],
            "corrupt or truncated gzip file (CRC check failed",
        ),
    ],
    ids=["truncated", "corrupt-stream", "not-gzip", "crc"],
)
def test_corrupt_gzip_is_named(tmp_path, damage, problem):
    folder, paths = _mnist(tmp_path, gz=True)
    path = paths["train_labels"]
    with open(path, "rb") as handle:
        content = handle.read()
    write_file(path, damage(content))
    with _raises(f"{path}: {problem}"):
        _load(tmp_path, dataset="mnist", data_dir=folder)


def test_label_file_with_a_label_above_9_names_its_position(tmp_path):
    folder, paths = _mnist(tmp_path)
    labels = mnist.read_idx(paths["train_labels"], mnist.LABEL_MAGIC).copy()
    labels[17] = 10
    write_idx(paths["train_labels"], labels)
    with _raises(f"{paths['train_labels']}: label 10 outside 0..9 (label 17 of 200"):
        _load(tmp_path, dataset="mnist", data_dir=folder)


def test_data_dir_problems(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with _raises(f"--data_dir={empty}: holds none of the MNIST files"):
        _load(tmp_path, dataset="mnist", data_dir=str(empty))
    with _raises(f"--data_dir={tmp_path / 'nowhere'}: no such folder"):
        _load(tmp_path, dataset="mnist", data_dir=str(tmp_path / "nowhere"))
    with _raises("--data_dir: required with --dataset=mnist"):
        _load(tmp_path, dataset="mnist", data_dir=None)
    folder, paths = _mnist(tmp_path)
    os.remove(paths["train_labels"])
    os.mkdir(paths["train_labels"])
    with _raises(f"{paths['train_labels']}: not a regular file"):
        _load(tmp_path, dataset="mnist", data_dir=folder)


# -- 5: CSV encodings and header forms -----------------------------------------------
def test_csv_with_bom_quoted_header_spaces_crlf_and_blank_lines(tmp_path):
    # Labels quoted or padded with spaces are the same classes (1 and 2: ids 0 and 1).
    content = (
        '\ufeff"label" , "pixel0",pixel1 \r\n1, 2 ,"3"\r\n\r\n2,4.5,6\r\n\n"1",2,3\r\n 2 ,4.5,6\r\n'
    )
    arrays = _load_csv(tmp_path, content, test_fraction=0.5)
    rows = sorted(
        (y, x)
        for split in ("train", "validation", "test")
        for y, x in zip(getattr(arrays, f"y_{split}"), getattr(arrays, f"x_{split}").tolist())
    )
    assert rows == [(0, [2.0, 3.0]), (0, [2.0, 3.0]), (1, [4.5, 6.0]), (1, [4.5, 6.0])]
    assert arrays.class_names == (1, 2) and arrays.num_classes == 2
    assert arrays.x_train.dtype == np.float32 and arrays.y_train.dtype == np.int64


def test_csv_label_column_may_be_anywhere(tmp_path):
    content = "a,label,b\n10,1,11\n20,2,21\n30,1,31\n40,2,41\n"
    arrays = _load_csv(tmp_path, content, test_fraction=0.5)
    rows = sorted(
        zip(
            np.r_[arrays.y_train, arrays.y_validation, arrays.y_test].tolist(),
            np.r_[arrays.x_train, arrays.x_validation, arrays.x_test].tolist(),
        )
    )
    assert rows == [(0, [10.0, 11.0]), (0, [30.0, 31.0]), (1, [20.0, 21.0]), (1, [40.0, 41.0])]
    assert arrays.class_names == (1, 2)


# -- 6, 7, 8, 11: CSV errors name the line and the column -------------------------------
HEADER = "label,pixel0,pixel1\n"


@pytest.mark.parametrize(
    "body, message",
    [
        ("1,2,3\n4,abc,6\n", "line 3, column 'pixel0': 'abc' is not a number"),
        ("1,2,3\n\n\n4,5,abc\n", "line 5, column 'pixel1': 'abc' is not a number"),
        ("1,2,3\n4,5,1e39\n", "line 3, column 'pixel1': 1e39 is not a finite float32 number"),
        ("1,2,3\n4,5,-1e39\n", "line 3, column 'pixel1': -1e39 is not a finite float32"),
        ("1,nan,3\n", "line 2, column 'pixel0': nan is not a finite float32 number"),
        ("1,2,3\n1,inf,3\n", "line 3, column 'pixel0': inf is not a finite float32 number"),
        ("1,2,-Infinity\n", "line 2, column 'pixel1': -Infinity is not a finite float32"),
        ("1,2,1e400\n", "line 2, column 'pixel1': 1e400 is not a finite float32 number"),
        ("1,2,3\n4,,6\n", "line 3, column 'pixel0': empty cell (a missing value)"),
        ("1,2,3\n4,5, \n", "line 3, column 'pixel1': empty cell (a missing value)"),
        ("1,2,3\n4,5\n", "line 3: 2 cells, but the header has 3 columns"),
        ("1,2,3\n4,5,6,7\n", "line 3: 4 cells, but the header has 3 columns"),
        ("1,2\n3,4\n", "line 2: 2 cells, but the header has 3 columns"),
        ("1,2,3,\n", "line 2: 4 cells, but the header has 3 columns"),
        ("1,2,3\n   \n", "line 3: 1 cell, but the header has 3 columns"),
        # Any whole number or name is a class, but it must have a training row:
        # 1 of these 2 rows is held out for eval.
        ("1,2,3\n12,5,6\n", "line 3, column 'label': label 12 does not occur in the training"),
        ("1,2,3\n-1,5,6\n", "line 3, column 'label': label -1 does not occur in the training"),
        ("1,2,3\nx,5,6\n", "line 3, column 'label': label 'x' does not occur in the training"),
        ("1,2,3\n1.5,5,6\n", "line 3, column 'label': label 1.5 is not a class (a whole number"),
        ("nan,5,6\n", "line 2, column 'label': label nan is not a class (a whole number or"),
        ("1e39,5,6\n", "line 2, column 'label': label 1e39 is not a class: whole-number labels"),
        ("1,2,3\n,5,6\n", "line 3, column 'label': empty cell (a missing value)"),
        ("1,2,3\n  ,5,6\n", "line 3, column 'label': empty cell (a missing value)"),
        ("1,2#3,4\n", "line 2, column 'pixel0': '2#3' is not a number"),  # no comments
        ("1,1_000,4\n", "line 2, column 'pixel0': '1_000' is not a number"),
        ("1,0x10,4\n", "line 2, column 'pixel0': '0x10' is not a number"),
        # of nearby problems of either kind, the first in file order is named
        ("1,2,3\n1,2,1e39\n1,x,3\n", "line 3, column 'pixel1': 1e39 is not a finite"),
        ("1,2,3\n1,x,3\n1,2,1e39\n", "line 3, column 'pixel0': 'x' is not a number"),
    ],
)
def test_csv_errors_name_the_line_and_column(tmp_path, body, message):
    with _raises(f"train.csv {message}") as raised:
        _load_csv(tmp_path, HEADER + body)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(
    "body, message",
    [
        ("1,2,3\nx,5,6\n", "line 3, column 'label': 'x' is not a number (a regression target)"),
        ("1,2,3\n1e39,5,6\n", "line 3, column 'label': 1e39 is not a finite float32 number"),
        ("1,2,3\nnan,5,6\n", "line 3, column 'label': nan is not a finite float32 number"),
        ("1,2,3\n,5,6\n", "line 3, column 'label': empty cell (a missing value)"),
    ],
)
def test_csv_regression_targets_must_be_finite_numbers(tmp_path, body, message):
    with _raises(f"train.csv {message}") as raised:
        _load_csv(tmp_path, HEADER + body, loss="mse")
    assert "\n" not in str(raised.value)


def test_csv_error_deep_in_a_large_file_names_its_line(tmp_path):
    rows = [f"{i % 10}," + ",".join(["7"] * 50) for i in range(3000)]
    rows[2500] = rows[2500][:-1] + "oops"
    header = "label," + ",".join(f"p{i}" for i in range(50)) + "\n"
    with _raises("train.csv line 2502, column 'p49': 'oops' is not a number"):
        _load_csv(tmp_path, header + "\n".join(rows) + "\n")
    rows[2500] = rows[2500][:-4] + "1e39"
    with _raises("train.csv line 2502, column 'p49': 1e39 is not a finite float32 number"):
        _load_csv(tmp_path, header + "\n".join(rows) + "\n")


def test_largest_float32_is_accepted(tmp_path):
    body = "1,3.4028234e38,-3.4e38\n2,0,1e-50\n1,-3.4028234e38,3.4e38\n2,1,1\n"
    arrays = _load_csv(tmp_path, HEADER + body, test_fraction=0.5)
    assert np.all(np.isfinite(np.r_[arrays.x_train, arrays.x_test]))
    # The standardisation of such columns is finite too (statistics in float64).
    assert np.all(np.isfinite(arrays.feature_mean)) and np.all(arrays.feature_scale > 0)
    assert np.all(np.isfinite(arrays.feature_scale))


@pytest.mark.parametrize(
    "content, message",
    [
        (HEADER, "train.csv: no data rows, only a header"),
        (HEADER.rstrip("\n"), "train.csv: no data rows, only a header"),
        (HEADER + "\n\n", "train.csv: no data rows, only a header and blank lines"),
        ("", "train.csv: empty file"),
        ("\n1,2\n", "train.csv line 1: empty; expected a header row"),
        ("pixel0,pixel1\n1,2\n", "train.csv: no 'label' column in the header row"),
        ("label\n1\n", "train.csv: needs a label column and at least one feature column"),
        ("label,a,label\n1,2,3\n", "train.csv line 1: 2 columns are named 'label'"),
        (b"lab\xffel,a\n1,2\n", "train.csv line 1: not UTF-8 text (byte 0xff at byte 4"),
        (HEADER.encode() + b"1,2,3\n1,\xe9,3\n", "train.csv line 3: not UTF-8 text (byte 0xe9"),
    ],
)
def test_csv_file_level_problems(tmp_path, content, message):
    with _raises(message):
        _load_csv(tmp_path, content)


def test_csv_path_problems(tmp_path):
    with _raises(f"{tmp_path}: is a folder, not a CSV file"):
        _load(tmp_path, dataset="csv", csv_path=str(tmp_path))
    with _raises(f"--csv_path={tmp_path / 'no.csv'}: no such file"):
        _load(tmp_path, dataset="csv", csv_path=str(tmp_path / "no.csv"))
    with _raises("--csv_path: required with --dataset=csv"):
        _load(tmp_path, dataset="csv", csv_path=None)


@contextlib.contextmanager
def _no_hang(seconds: int = 30):
    """Fails the test instead of hanging (reading a FIFO would wait for a writer)."""

    def hung(signum, frame):
        raise AssertionError(f"still reading after {seconds} s")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _not_csv_files(tmp_path) -> dict:
    """``{path: what the error says}`` of paths that are not CSV files."""
    fifo = str(tmp_path / "pipe.csv")
    os.mkfifo(fifo)
    return {
        str(tmp_path): "is a folder, not a CSV file",
        os.devnull: "is not a regular file (a character device)",
        "/dev/zero": "is not a regular file (a character device)",
        fifo: "is not a regular file (a FIFO)",
        str(tmp_path / "no.csv"): "no such file",
    }


@pytest.mark.parametrize("flag", ["csv_path", "test_csv_path", "validation_csv_path"])
def test_csv_paths_that_are_not_files_say_what_they_are(tmp_path, flag):
    train_csv = write_csv(str(tmp_path / "train.csv"), n=40, features=4)
    for path, problem in _not_csv_files(tmp_path).items():
        paths = {"csv_path": train_csv, flag: path}
        with _no_hang(), _raises(f"--{flag}={path}: {problem}"):
            _load(tmp_path, dataset="csv", **paths)


def test_csv_reader_refuses_a_fifo_without_waiting(tmp_path):
    from trainer.data import tabular

    fifo = str(tmp_path / "pipe.csv")
    os.mkfifo(fifo)
    with _no_hang():
        for read in (tabular.read_header, tabular.count_lines):
            with _raises(f"{fifo}: is not a regular file (a FIFO)"):
                read(fifo)
        with _raises(f"{fifo}: is not a regular file (a FIFO)"):
            list(tabular.iter_chunks(fifo, ["label", "a"], "label"))


def test_converter_paths_that_are_not_files_say_what_they_are(tmp_path):
    import types

    from trainer import convert

    def converting(source, **paths):
        opts = types.SimpleNamespace(source=source, output_dir=str(tmp_path / "out"), **paths)
        return convert.convert(opts)

    for path, problem in _not_csv_files(tmp_path).items():
        with _no_hang(), _raises(f"--csv_path={path}: {problem}"):
            converting("csv", csv_path=path)
        problem = problem.replace("a CSV file", "a NumPy .npz file")
        with _no_hang(), _raises(f"--npz_path={path}: {problem}"):
            converting("npz", npz_path=path)
    empty = write_file(str(tmp_path / "empty.npz"), b"")
    with _raises(f"--npz_path={empty}: is empty"):
        converting("npz", npz_path=empty)
    assert sorted(os.listdir(tmp_path)) == ["empty.npz", "pipe.csv"]  # no leftover


@pytest.mark.parametrize(
    "flag",
    ["test_csv_path", "csv_path"],
)
def test_not_a_csv_file_is_a_one_line_usage_error(tmp_path, flag):
    train_csv = write_csv(str(tmp_path / "train.csv"), n=40, features=4)
    paths = {"csv_path": train_csv, flag: os.devnull}
    result = cli(
        "--dataset=csv", *(f"--{name}={path}" for name, path in paths.items()),
        f"--model_dir={tmp_path / 'run'}",
    )  # fmt: skip
    assert_one_line_error(result, f"--{flag}={os.devnull}: is not a regular file")
    assert result.returncode == 2


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_csv(tmp_path):
    path = write_csv(str(tmp_path / "secret.csv"))
    os.chmod(path, 0)
    with _raises(f"{path}: cannot read (Permission denied)"):
        _load(tmp_path, dataset="csv", csv_path=path)


def test_header_only_csv_is_one_line_without_warnings(tmp_path):
    path = write_file(str(tmp_path / "header.csv"), "label,pixel0,pixel1\n")
    result = cli("--dataset=csv", f"--csv_path={path}", f"--model_dir={tmp_path / 'run'}")
    assert_one_line_error(result, path, "no data rows")
    assert "Warning" not in result.stderr, result.stderr
    assert result.returncode == 2


# -- 9: memory ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "flags, needs",
    [
        ({"synthetic_examples": 10**9}, "needs 11.9 TB of memory for the features"),
        ({"synthetic_features": 10**9}, "needs 123.0 TB of memory for the features"),
    ],
)
def test_synthetic_data_too_big_is_refused_before_allocating(tmp_path, flags, needs):
    with pytest.raises(DataError) as raised:
        _load(tmp_path, dataset="synthetic", **flags)
    message = str(raised.value)
    assert message.startswith("--synthetic_examples="), message
    assert needs in message and re.search(r"at most [\d.]+ [kMGTP]B is available", message)


def test_huge_synthetic_run_is_a_one_line_error(tmp_path):
    result = cli(
        "--dataset=synthetic", "--synthetic_examples=1000000000", f"--model_dir={tmp_path}/run"
    )
    assert_one_line_error(result, "--synthetic_examples=1000000000", "TB of memory", "available")
    assert result.returncode == 2


def test_files_too_big_for_memory_are_refused_before_reading(tmp_path, monkeypatch):
    folder, paths = _mnist(tmp_path)
    csv_path = write_csv(str(tmp_path / "train.csv"), n=100, features=16)
    monkeypatch.setattr(resources, "available_memory", lambda: 1000)
    with _raises(f"{paths['train_images']}: needs 784.0 kB of memory for its images"):
        _load(tmp_path, dataset="mnist", data_dir=folder)
    with _raises(f"{csv_path}: needs 22.1 kB of memory for up to 100 rows x 17 columns"):
        _load(tmp_path, dataset="csv", csv_path=csv_path)


def test_running_out_of_memory_anyway_is_a_data_error(tmp_path, monkeypatch):
    def exhausted(config):
        raise MemoryError

    from trainer.data import digits

    monkeypatch.setattr(digits, "load", exhausted)
    with _raises("--dataset=digits: ran out of memory while loading the data"):
        _load(tmp_path, dataset="digits")


def test_memory_helpers():
    assert resources.human_bytes(999) == "999 bytes"
    assert resources.human_bytes(3.1e12) == "3.1 TB"
    available = resources.available_memory()
    assert available is None or available > 0


def test_unknown_dataset(tmp_path):
    with _raises("--dataset=imagenet: unknown; choose one of digits, mnist"):
        _load(tmp_path, dataset="imagenet")


# -- 10: the exported model refuses NaN and Inf ---------------------------------------------
def test_exported_model_refuses_nan_and_inf(tmp_path):
    import tensorflow as tf

    from models import zoo
    from trainer import export

    model = zoo.mlp(4, (5,), 3, normalization=(np.zeros(4), np.ones(4)))
    path = export.export_model(model, str(tmp_path / "export"), 4, classification=True)
    serve = tf.saved_model.load(path).signatures[export.SIGNATURE_KEY]
    good = np.ones((2, 4), np.float32)
    assert serve(x=tf.constant(good))["classes"].shape == (2,)
    for bad_value in (np.nan, np.inf, -np.inf):
        bad = good.copy()
        bad[1, 2] = bad_value
        with pytest.raises(tf.errors.InvalidArgumentError, match="x holds NaN or Inf"):
            serve(x=tf.constant(bad))


def test_exported_model_refuses_outputs_that_overflow(tmp_path):
    import tensorflow as tf

    from models import zoo
    from trainer import export

    # A tiny feature scale blows finite raw features up to Inf inside the model.
    model = zoo.mlp(2, (3,), 1, activation="linear", normalization=(np.zeros(2), np.full(2, 1e-30)))
    path = export.export_model(model, str(tmp_path / "export"), 2, classification=False)
    serve = tf.saved_model.load(path).signatures[export.SIGNATURE_KEY]
    with pytest.raises(tf.errors.InvalidArgumentError, match="outputs overflowed"):
        serve(x=tf.constant(np.full((1, 2), 1e10, np.float32)))
