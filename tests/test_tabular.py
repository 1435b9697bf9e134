"""Any CSV: trainer/tabular.py (header, streamed chunks, labels, statistics) and
``data.load_csv`` on top of it. NumPy only: nothing here trains."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest

from trainer import resources
from trainer.config import Config
from trainer.data import arrays as arrays_lib
from trainer.data import splits, tabular
from trainer.errors import DataError

from datafiles import write_csv, write_file
from helpers import ROOT

SPECIES = ("setosa", "versicolor", "virginica")


def _species_csv(tmp_path, per_class=8, label_column="species"):
    """An iris-like CSV: 4 measurements and a species name, the label column third."""
    rng = np.random.default_rng(0)
    lines = [f"sepal_length,sepal_width,{label_column},petal_length,petal_width"]
    for i in range(per_class * 3):
        name = SPECIES[i % 3]
        a, b, c, d = rng.normal(size=4).round(2) + i % 3
        lines.append(f"{a},{b},{name},{c},{d}")
    return write_file(str(tmp_path / "iris.csv"), "\n".join(lines) + "\n")


def _load(path, **overrides):
    return arrays_lib.load(Config(dataset="csv", csv_path=str(path), **overrides))


def _raises(message: str):
    return pytest.raises(DataError, match=re.escape(message))


def _read(path, label_column="label", **options):
    """All chunks of a CSV joined: ``(features, labels, lines, number of chunks)``."""
    columns = tabular.read_header(path, label_column)
    chunks = list(tabular.iter_chunks(path, columns, label_column, **options))
    return (
        np.concatenate([c.features for c in chunks]),
        np.concatenate([c.labels for c in chunks]),
        np.concatenate([c.lines for c in chunks]),
        len(chunks),
    )


# -- data.load_csv ------------------------------------------------------------------
def test_string_labels_are_classes_with_names(tmp_path):
    path = _species_csv(tmp_path)
    arrays = _load(path, label_column="species", test_fraction=0.25)
    assert arrays.class_names == SPECIES and arrays.num_classes == 3
    assert arrays.x_train.shape == (16, 4) and arrays.x_validation.shape == (2, 4)
    assert arrays.x_test.shape == (6, 4) and arrays.y_train.dtype == np.int64
    assert np.bincount(arrays.y_test).tolist() == [2, 2, 2]  # stratified
    # Ids follow the names: the i-th row of the file is species i % 3.
    x, labels, _, _ = _read(path, "species")
    for features, label in zip(arrays.x_train, arrays.y_train):
        row = int(np.flatnonzero((x == features).all(axis=1))[0])
        assert SPECIES[label] == labels[row]
    assert "4 features; label column 'species': 3 classes ('setosa', 'versicolor'" in (
        arrays.description
    )


def test_integer_labels_beyond_9_and_negative_are_classes(tmp_path):
    rows = [f"{label},{i},{i % 3}" for i in range(30) for label in [(-1, 3, 12)[i % 3]]]
    path = write_csv(str(tmp_path / "ints.csv"), features=2, rows=rows)
    arrays = _load(path, test_fraction=0.2)
    assert arrays.class_names == (-1, 3, 12) and arrays.num_classes == 3
    # x[:, 0] is the row number i, whose label is (-1, 3, 12)[i % 3]: class id i % 3.
    for x, y in ((arrays.x_train, arrays.y_train), (arrays.x_test, arrays.y_test)):
        np.testing.assert_array_equal(y, x[:, 0].astype(np.int64) % 3)
    assert "3 classes (-1, 3, 12)" in arrays.description


def test_regression_targets_with_mse(tmp_path):
    rows = [f"{i * 0.5 - 3},{i},{i * i}" for i in range(20)]
    path = write_csv(str(tmp_path / "reg.csv"), features=2, rows=rows)
    arrays = _load(path, loss="mse", test_fraction=0.25)
    assert arrays.num_classes == 0 and arrays.class_names is None and arrays.num_outputs == 1
    assert arrays.y_train.dtype == np.float32 and len(arrays.y_test) == 5
    for x, y in ((arrays.x_train, arrays.y_train), (arrays.x_test, arrays.y_test)):
        np.testing.assert_array_equal(y, x[:, 0] * 0.5 - 3)
    assert arrays.description.endswith("label column 'label': regression")


def test_label_column_flag_names_the_label(tmp_path):
    path = _species_csv(tmp_path, label_column="kind")
    arrays = _load(path, label_column="kind")
    assert arrays.class_names == SPECIES and arrays.input_size == 4
    with _raises(f"{path}: no 'label' column in the header row (line 1: sepal_length,"):
        _load(path)


def test_features_are_standardised_over_the_training_rows(tmp_path):
    path = _species_csv(tmp_path)
    arrays = _load(path, label_column="species")
    np.testing.assert_allclose(arrays.feature_mean, arrays.x_train.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(arrays.feature_scale, arrays.x_train.std(axis=0), rtol=1e-5)
    assert arrays.image_shape == (2, 2, 1)  # 4 features: a square number


@pytest.mark.parametrize(
    "content, message",
    [
        ("species,a,b\n", "iris.csv: no data rows, only a header"),
        ("a,b,c\n1,2,3\n", "iris.csv: no 'species' column in the header row (line 1: a,b,c); "),
        ("species,a,b\nx,1,abc\n", "iris.csv line 2, column 'b': 'abc' is not a number"),
        ("species,a,b\nx,1,2\ny,,2\n", "iris.csv line 3, column 'a': empty cell (a missing"),
        ("species,a,b\nx,1,2\ny,1\n", "iris.csv line 3: 2 cells, but the header has 3 columns"),
        ("species,a,b\n1,1,2\n1.5,1,2\n", "iris.csv line 3, column 'species': label 1.5 is not a"),
        # One row per class and 1 training row: 2 classes cannot both be learnt.
        ("species,a,b\nx,1,2\ny,1,2\n", "iris.csv line 3, column 'species': label 'y' does not"),
        ("species,a,b\nx,1,2\nx,3,4\n", "iris.csv, column 'species': every row has the label 'x'"),
    ],
)
def test_bad_csv_is_one_line_naming_file_line_and_column(tmp_path, content, message):
    path = write_file(str(tmp_path / "iris.csv"), content)
    with _raises(message) as raised:
        _load(path, label_column="species", test_fraction=0.5)
    assert "\n" not in str(raised.value)


def test_label_unseen_in_training_names_its_line(tmp_path):
    rows = ["a,1,1", "a,2,2", "b,3,3", "c,4,4", "c,5,5"]
    path = write_file(str(tmp_path / "t.csv"), "label,x,y\n" + "\n".join(rows) + "\n")
    # 5 rows, 3 eval: 2 training rows cannot hold 3 classes.
    with _raises("t.csv line ") as raised:
        _load(path, test_fraction=0.6)
    message = str(raised.value)
    assert "column 'label': label '" in message and "does not occur in the training rows" in message
    assert "2 training rows cannot hold all 3 classes" in message


def test_memory_check_hints_at_the_converter(tmp_path, monkeypatch):
    path = write_csv(str(tmp_path / "big.csv"), n=50, features=4)
    monkeypatch.setattr(resources, "available_memory", lambda: 100)
    with _raises("; convert it with python -m trainer.convert --source=csv to stream it"):
        _load(path)


def test_unstratified_split_gives_every_class_a_training_row():
    # 10 classes of 2 rows, 4 held out: too few to stratify.
    y = np.repeat(np.arange(10), 2)
    for seed in range(40):
        train, held_out, note = splits.split_indices(y, 20, 0.2, seed, "tiny")
        assert "not stratified" in note and len(held_out) == 4
        assert sorted(set(y[train].tolist())) == list(range(10)), seed
        assert sorted([*train, *held_out]) == list(range(20))
    # Regression: a plain split of the same size; a single class splits alike.
    _, plain_eval, _ = splits.split_indices(None, 20, 0.2, 3, "tiny")
    _, one_eval, _ = splits.split_indices(np.zeros(20, np.int64), 20, 0.2, 3, "tiny")
    np.testing.assert_array_equal(plain_eval, one_eval)
    assert len(plain_eval) == 4


def test_data_error_is_re_exported():
    assert DataError is DataError


def test_tabular_does_not_import_tensorflow():
    code = "import sys, trainer.data.tabular; assert 'tensorflow' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


# -- tabular: header and chunks ------------------------------------------------------------
def test_read_header_strips_bom_quotes_and_spaces(tmp_path):
    path = write_file(str(tmp_path / "h.csv"), '\ufeff"a" , "species",c \n1,x,2\n')
    assert tabular.read_header(path, "species") == ["a", "species", "c"]
    with _raises("h.csv: no 'label' column in the header row (line 1: a,species,c); name"):
        tabular.read_header(path)
    path = write_file(str(tmp_path / "d.csv"), "y,a,y\n")
    with _raises("d.csv line 1: 2 columns are named 'y'"):
        tabular.read_header(path, "y")


def test_chunks_hold_features_labels_and_file_lines(tmp_path):
    content = 'a,label,b\n1,x,2\n\n3, y ,4\r\n5,"z,w",6\n'
    path = write_file(str(tmp_path / "c.csv"), content)
    x, labels, lines, _ = _read(path)
    np.testing.assert_array_equal(x, [[1, 2], [3, 4], [5, 6]])
    assert x.dtype == np.float32 and lines.dtype == np.int64
    assert labels.tolist() == ["x", "y", "z,w"] and lines.tolist() == [2, 4, 5]


@pytest.mark.parametrize("kind", ["integers", "decimals", "exponents", "quoted", "r_style"])
def test_reading_in_many_chunks_equals_one_read(tmp_path, kind):
    rng = np.random.default_rng(1)
    values = rng.normal(scale=1000, size=(300, 5))
    cells = {
        "integers": lambda v: str(int(v)),
        "decimals": lambda v: f"{v:.4f}",  # the vectorised path
        "exponents": lambda v: f"{v:.6e}",  # np.loadtxt's path
        "quoted": lambda v: f'"{v:.3f}"',
        "r_style": lambda v: f"{v:.2f}",  # and quoted labels, as R's write.csv writes
    }[kind]
    label = '"c{}"' if kind == "r_style" else "c{}"
    rows = [",".join([label.format(i % 4), *map(cells, row)]) for i, row in enumerate(values)]
    rows[7:7] = [""]  # a blank line
    path = write_file(str(tmp_path / "m.csv"), "label,a,b,c,d,e\n" + "\n".join(rows) + "\n")
    one = _read(path)
    assert one[3] == 1
    for options in ({"rows": 7}, {"max_bytes": 200}, {"rows": 1}):
        many = _read(path, **options)
        assert many[3] > 10
        for a, b in zip(one[:3], many[:3]):
            np.testing.assert_array_equal(a, b)
    # As Python (and np.loadtxt) read the numbers, to the bit.
    expected = np.array([[float(cells(v).strip('"')) for v in row] for row in values], np.float32)
    np.testing.assert_array_equal(one[0], expected)
    assert one[2].tolist() == [*range(2, 9), *range(10, 303)]
    assert one[1][:5].tolist() == ["c0", "c1", "c2", "c3", "c0"]


@pytest.mark.parametrize(
    "body, row, message",
    [
        ("x,1,2\ny,1,abc\n", 2, ", column 'b': 'abc' is not a number"),
        ("x,1,2\ny,,2\n", 2, ", column 'a': empty cell (a missing value)"),
        ("x,1,2\n ,1,2\n", 2, ", column 'label': empty cell (a missing value)"),
        ("x,1,1e39\n", 1, ", column 'b': 1e39 is not a finite float32 number"),
        ("x,1,2,3\n", 1, ": 4 cells, but the header has 3 columns"),
        ('x,"1,2\n', 1, ": unexpected end of data; a quoted cell must end on its line"),
        ("x,1-2,2\n", 1, ", column 'a': '1-2' is not a number"),
        ("x,1.2.3,2\n", 1, ", column 'a': '1.2.3' is not a number"),
        ("x,--1,2\n", 1, ", column 'a': '--1' is not a number"),
    ],
)
def test_chunk_problems_are_named_whatever_the_chunking(tmp_path, body, row, message):
    # 50 good rows (lines 2..51) before the body.
    good = "".join(f"k,{i},{i}\n" for i in range(50))
    path = write_file(str(tmp_path / "p.csv"), "label,a,b\n" + good + body)
    for options in ({}, {"rows": 3}, {"max_bytes": 64}):
        with _raises(f"p.csv line {51 + row}{message}"):
            _read(path, **options)


def test_not_utf8_and_header_only_files(tmp_path):
    path = write_file(str(tmp_path / "u.csv"), b"label,a\nx,1\n\xff,2\n")
    with _raises("u.csv line 3: not UTF-8 text (byte 0xff at byte 1 of the line)"):
        _read(path)
    path = write_file(str(tmp_path / "e.csv"), "label,a\n\n")
    with _raises("e.csv: no data rows, only a header and blank lines"):
        _read(path)


def test_kaggle_size_csv_reads_in_seconds(tmp_path):
    """A 4200 x 785 digits-like CSV (a tenth of Kaggle's): its time bounds the full one's."""
    import time

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(4200, 784)) * (rng.random((4200, 784)) < 0.2)
    rows = [f"{i % 10}," + ",".join(map(str, row)) for i, row in enumerate(pixels.tolist())]
    path = write_csv(str(tmp_path / "k.csv"), features=784, rows=rows)
    start = time.perf_counter()
    x, labels, _, _ = _read(path)
    elapsed = time.perf_counter() - start
    np.testing.assert_array_equal(x, pixels)
    assert labels[:3].tolist() == ["0", "1", "2"]
    assert elapsed < 3.0, f"{elapsed:.2f} s for 4200 rows"  # ~0.15 s when idle


# -- tabular: labels -----------------------------------------------------------------------
def test_class_vocabulary_integers_or_names():
    assert tabular.class_vocabulary(["3", "12", "-1", " 7 ", "3", "07"]) == (-1, 3, 7, 12)
    assert tabular.class_vocabulary(["2.0", "1e1"]) == (2, 10)
    assert tabular.class_vocabulary(["b", "a", "10", "b"]) == ("10", "a", "b")
    assert tabular.class_vocabulary({"x": 5, "1.5": 9}) == ("1.5", "x")
    assert tabular.class_vocabulary([]) == ()
    vocabulary = (-1, 3, 7, 12)
    ids = tabular.encode(np.array(["12", " 07", "-1", "3"]), vocabulary)
    assert ids.dtype == np.int64 and ids.tolist() == [3, 2, 0, 1]


def test_class_vocabulary_refuses_numbers_that_are_not_classes():
    lines = np.array([2, 3, 4, 5])
    with _raises(
        "f.csv line 4, column 'y': label 1.5 is not a class (a whole number or a name); "
        "for regression targets pass --loss=mse"
    ):
        tabular.class_vocabulary(["1", "2", "1.5", "nan"], lines, path="f.csv", column="y")
    with _raises("label nan is not a class"):
        tabular.class_vocabulary(["1", "nan"])
    with _raises("f.csv line 9, column 'y': label 1e30 is not a class: whole-number labels"):
        tabular.class_vocabulary({"1": 2, "1e30": 9}, path="f.csv", column="y")


def test_encode_names_a_label_not_in_the_vocabulary():
    lines = np.array([7, 8, 9])
    with _raises("e.csv line 8, column 'species': label 'dog' does not occur in the training rows"):
        tabular.encode(["cat", "dog", "emu"], ("cat", "emu"), lines, path="e.csv", column="species")
    with _raises("e.csv line 9, column 'y': label 4 does not occur in the training rows"):
        tabular.encode(["1", "2", "4"], (1, 2), lines, path="e.csv", column="y")
    with _raises("label 'x' does not occur in the training rows"):
        tabular.encode(["1", "x"], (1, 2))


def test_class_descriptions():
    assert tabular.describe_classes(tuple(range(10))) == "10 classes (0..9)"
    assert tabular.describe_classes(("a", "b")) == "2 classes ('a', 'b')"
    assert tabular.describe_classes(tuple("abcdefg")).endswith("'e', ...)")


def test_targets_are_float32_numbers():
    np.testing.assert_array_equal(tabular.targets([" 1.5", "-2", "1e3"]), [1.5, -2, 1000])
    lines = np.array([2, 3])
    with _raises("t.csv line 3, column 'y': 'abc' is not a number (a regression target)"):
        tabular.targets(["1", "abc"], lines, path="t.csv", column="y")
    with _raises("t.csv line 2, column 'y': inf is not a finite float32 number"):
        tabular.targets(["inf", "abc"], lines, path="t.csv", column="y")


# -- tabular: Moments ----------------------------------------------------------------------
def test_moments_match_numpy_over_chunks():
    rng = np.random.default_rng(2)
    x = (rng.normal(size=(10_000, 6)) * [1, 1e-3, 1e4, 5, 0.1, 1] + [0, 7, -3e5, 1, 0, 1e5]).astype(
        np.float32
    )
    moments = tabular.Moments(6)
    for start, stop in ((0, 1), (1, 4000), (4000, 4001), (4001, 10_000)):
        moments.update(x[start:stop])
    exact = x.astype(np.float64)
    assert moments.count == 10_000
    np.testing.assert_allclose(moments.mean, exact.mean(axis=0), rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(moments.std, exact.std(axis=0), rtol=1e-9)
    # Merging two halves is the same as one pass.
    halves = tabular.Moments(6).update(x[:3000]).merge(tabular.Moments(6).update(x[3000:]))
    np.testing.assert_allclose(halves.std, moments.std, rtol=1e-12)
    mean, scale = moments.standardization()
    assert mean.dtype == scale.dtype == np.float32
    np.testing.assert_allclose(scale, exact.std(axis=0), rtol=1e-6)


def test_standardization_of_constant_and_nearly_constant_columns():
    x = np.zeros((1000, 4), np.float32)
    x[:, 0] = 5.0  # constant: scale 1, as scikit-learn
    x[:, 1] = 1000.0
    x[::2, 1] = np.nextafter(np.float32(1000), np.float32(2000))  # rounding noise:
    # std 3e-5 < 1e-6 * 1000, floored to 1e-3 (the noise becomes +-0.03)
    x[:, 2] = np.arange(1000) % 2  # a 0/1 column beside ...
    x[:, 3] = np.arange(1000) * 1e6  # ... one in far larger units keeps its own scale
    mean, scale = tabular.Moments(4).update(x).standardization()
    assert scale[0] == 1.0 and mean[0] == 5.0
    assert scale[1] == pytest.approx(1e-3, rel=1e-6)
    assert scale[2] == pytest.approx(0.5)
    assert scale[3] == pytest.approx(x[:, 3].astype(np.float64).std(), rel=1e-6)
    chunk = tabular.Chunk(x[:10], np.array(["a"] * 10), np.arange(10))
    assert tabular.Moments(4).update(chunk).count == 10
