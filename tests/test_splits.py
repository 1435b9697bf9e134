"""Three splits, each with one job: training, validation (every choice reads it)
and test (reported at the end, never used to choose); pre-split CSVs; regression
targets standardized and reported in their own units."""

from __future__ import annotations

import glob
import json
import math
import os

import numpy as np
import pytest

from trainer import config as config_lib
from trainer import sweep
from trainer.config import Config
from trainer.data import arrays as arrays_lib
from trainer.data import splits
from trainer.errors import DataError

from datafiles import write_file
from helpers import assert_one_line_error, checkpoint_variables, cli, train


def _table(path, x, y, names=None):
    """A CSV of features ``x`` ``[n, D]`` and a ``label`` column ``y``."""
    names = names or [f"f{i}" for i in range(x.shape[1])]
    lines = [",".join([*names, "label"])]
    lines += [",".join([*(f"{v:.6g}" for v in row), str(label)]) for row, label in zip(x, y)]
    return write_file(str(path), "\n".join(lines) + "\n")


def _blobs(n, seed, classes=3, features=4):
    """Separable-ish Gaussian blobs: ``(x float [n, D], y int [n])``."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    x = rng.normal(size=(n, features)) + 2.0 * y[:, None]
    return x, y


# -- how the splits are made ---------------------------------------------------------
def test_digits_has_three_disjoint_stratified_splits_as_readme_reproduces_them():
    from sklearn import datasets
    from sklearn.model_selection import train_test_split

    arrays = arrays_lib.load(Config(dataset="digits"))
    assert (len(arrays.x_train), len(arrays.x_validation), len(arrays.x_test)) == (1293, 144, 360)
    # README's recipe: the test split from all rows, then validation from the rest.
    digits = datasets.load_digits()
    x, y, n = digits.data.astype(np.float32), digits.target, len(digits.target)
    train, test = train_test_split(
        np.arange(n), test_size=math.ceil(0.2 * n), random_state=0, stratify=y
    )
    train, validation = train_test_split(
        train, test_size=math.ceil(0.1 * len(train)), random_state=0, stratify=y[train]
    )
    np.testing.assert_array_equal(arrays.x_train, x[train])
    np.testing.assert_array_equal(arrays.x_validation, x[validation])
    np.testing.assert_array_equal(arrays.y_test, y[test])
    for part in (arrays.y_validation, arrays.y_test):
        assert np.bincount(part, minlength=10).min() >= 1  # every class in every split
    # The feature scaling is fitted on the training split alone.
    np.testing.assert_allclose(arrays.feature_mean, x[train].mean(axis=0), rtol=1e-5, atol=1e-5)
    assert "validation: 10% of the training examples, stratified by class, seed 0" in (
        arrays.describe()
    )


def test_mnist_validation_comes_from_the_training_files(tmp_path):
    from datafiles import write_mnist

    write_mnist(str(tmp_path), n_train=1400)
    arrays = arrays_lib.load(Config(dataset="mnist", data_dir=str(tmp_path)))
    assert (len(arrays.x_train), len(arrays.x_validation), len(arrays.x_test)) == (1260, 140, 397)
    assert "test: the t10k" in arrays.splits


def test_csv_given_already_split(tmp_path):
    x, y = _blobs(90, 0)
    train = _table(tmp_path / "train.csv", x[:60], y[:60])
    val = _table(tmp_path / "val.csv", x[60:72], y[60:72])
    test = _table(tmp_path / "test.csv", x[72:], y[72:])
    arrays = arrays_lib.load(
        Config(dataset="csv", csv_path=train, test_csv_path=test, validation_csv_path=val)
    )
    assert (len(arrays.x_train), len(arrays.x_validation), len(arrays.x_test)) == (60, 12, 18)
    np.testing.assert_allclose(arrays.x_test, x[72:], rtol=1e-5)
    assert f"test: the rows of {test}" in arrays.splits
    only_test = arrays_lib.load(Config(dataset="csv", csv_path=train, test_csv_path=test))
    assert (len(only_test.x_train), len(only_test.x_validation)) == (54, 6)


def test_a_split_csv_with_other_columns_or_unseen_labels_is_refused(tmp_path):
    x, y = _blobs(60, 0)
    train = _table(tmp_path / "train.csv", x[:40], y[:40])
    other = _table(tmp_path / "other.csv", x[40:, :3], y[40:])
    with pytest.raises(DataError, match="differ from the training CSV's"):
        arrays_lib.load(Config(dataset="csv", csv_path=train, test_csv_path=other))
    unseen = _table(tmp_path / "unseen.csv", x[40:], y[40:] + 7)
    with pytest.raises(DataError, match="unseen.csv line 2"):
        arrays_lib.load(Config(dataset="csv", csv_path=train, test_csv_path=unseen))


def test_three_way_is_the_in_memory_split():
    y = np.arange(200) % 4
    train, validation, test, _ = splits.three_way(y, 200, 0.2, 0.1, 3, "t")
    assert sorted(np.concatenate([train, validation, test]).tolist()) == list(range(200))
    x = np.arange(200, dtype=np.float32)[:, None]
    first = splits.split(x, y, 0.2, 3, "t")
    second = splits.split(first[0], first[2], 0.1, 3, "t", "validation")
    np.testing.assert_array_equal(second[1][:, 0], validation)
    np.testing.assert_array_equal(first[1][:, 0], test)


# -- choices never read the test split ----------------------------------------------
def test_corrupting_the_test_labels_changes_no_choice(tmp_path):
    """Best checkpoint, early stopping, reduce-on-plateau and the weights end the
    same whatever the test split holds; only the test figures change."""
    x, y = _blobs(300, 1)
    train_csv = _table(tmp_path / "train.csv", x[:240], y[:240])
    rng = np.random.default_rng(5)
    test_csv = _table(tmp_path / "test.csv", x[240:], y[240:])
    wrong_csv = _table(tmp_path / "wrong.csv", x[240:], rng.permutation(y[240:] + 1) % 3)
    runs = {}
    for name, test in (("right", test_csv), ("wrong", wrong_csv)):
        runs[name] = train(
            tmp_path / name, dataset="csv", csv_path=train_csv, test_csv_path=test,
            epochs=12, batch_size=16, eval_every=5, early_stopping_patience=3,
            lr_plateau_patience=1, learning_rate=0.05, deterministic=True,
        )  # fmt: skip
    right, wrong = runs["right"], runs["wrong"]
    for key in ("best_step", "best_validation_accuracy", "global_step", "stop_reason",
                "validation_loss", "test_step", "export_step"):  # fmt: skip
        assert right[key] == wrong[key], key
    assert right["test_accuracy"] != wrong["test_accuracy"]
    best = {
        name: glob.glob(str(tmp_path / name / "checkpoints/best/best-*.index")) for name in runs
    }
    assert [os.path.basename(p) for p in best["right"]] == [f"best-{right['best_step']}.index"]
    a, b = (checkpoint_variables(paths[0][: -len(".index")]) for paths in best.values())
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_a_sweep_ranks_by_validation_figures_alone(tmp_path):
    class FakeRun:
        def __init__(self, name, results):
            self.name, self.values, self._results = name, {}, results
            self.log = str(tmp_path / f"{name}.log")

        def results(self):
            return self._results

        def finished(self):
            return True

    runs = [
        FakeRun(
            "a",
            {"best_validation_accuracy": 0.8, "validation_accuracy": 0.8, "test_accuracy": 0.99},
        ),
        FakeRun(
            "b",
            {"best_validation_accuracy": 0.9, "validation_accuracy": 0.7, "test_accuracy": 0.50},
        ),
    ]
    rows, metric = sweep.rank(runs, "auto")
    assert metric == "best_validation_accuracy"
    assert [row["run"] for row in rows] == ["b", "a"]
    assert all(not m.startswith("test") for m in sweep.METRICS)


# -- regression ------------------------------------------------------------------------
def test_regression_targets_are_standardized_and_reported_in_their_units(tmp_path):
    import tensorflow as tf
    from sklearn.metrics import mean_absolute_error, r2_score

    rng = np.random.default_rng(2)
    x = rng.normal(size=(400, 3))
    y = 150 + 40 * x[:, 0] - 25 * x[:, 1] + rng.normal(scale=10, size=400)
    train_csv = _table(tmp_path / "train.csv", x[:320], y[:320].round(3))
    test_csv = _table(tmp_path / "test.csv", x[320:], y[320:].round(3))
    results = train(
        tmp_path / "run", dataset="csv", csv_path=train_csv, test_csv_path=test_csv,
        loss="mse", hidden=(16,), activation="relu", epochs=30, eval_every=20,
    )  # fmt: skip
    assert results["test_rmse"] < 20  # the targets' std is ~48: mean prediction is far worse
    served = tf.saved_model.load(results["export_path"]).signatures["serving_default"]
    test = np.loadtxt(test_csv, delimiter=",", skiprows=1)
    predicted = served(x=tf.constant(test[:, :-1], tf.float32))["predictions"].numpy()[:, 0]
    rmse = float(np.sqrt(np.mean((predicted - test[:, -1]) ** 2)))
    assert rmse == pytest.approx(results["test_rmse"], rel=1e-3)
    assert mean_absolute_error(test[:, -1], predicted) == pytest.approx(
        results["test_mae"], rel=1e-3
    )
    assert r2_score(test[:, -1], predicted) == pytest.approx(results["test_r2"], abs=1e-3)


def test_numeric_labels_that_look_like_targets_are_refused_as_classes(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 2))
    path = _table(tmp_path / "t.csv", x, rng.integers(25, 346, size=120))
    result = cli("--dataset=csv", f"--csv_path={path}", f"--model_dir={tmp_path / 'r'}")
    assert_one_line_error(result, "look like regression targets", "--loss=mse")


# -- the settings ---------------------------------------------------------------------
def test_an_old_config_json_reads_in_the_new_names(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(
        json.dumps({"eval_fraction": 0.3, "best_metric": "eval_loss", "eval_files": "x*"})
    )
    saved = config_lib.load(str(path))
    assert saved["test_fraction"] == 0.3 and saved["test_files"] == "x*"
    assert saved["best_metric"] == "validation_loss" and "eval_fraction" not in saved


def test_the_old_flag_names_still_work(tmp_path):
    result = cli("--eval_fraction=1.5", f"--model_dir={tmp_path / 'r'}")
    assert_one_line_error(result, "--test_fraction=1.5", "(0, 1)")


def test_the_sweep_says_where_trainer_flags_go(tmp_path):
    import subprocess
    import sys

    from helpers import ROOT

    result = subprocess.run(
        [sys.executable, "-m", "trainer.sweep", f"--output_dir={tmp_path}",
         "--grid=learning_rate=0.1", "--epochs=3"],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert_one_line_error(result, "--epochs: a trainer flag", "after --")


def test_default_length_trains_small_tables_enough_and_evaluates_at_most_50_times():
    from trainer import assembly

    def plan(num_train, **values):
        config = config_lib.resolve({"mode": "train_and_eval", "model_dir": "/tmp/x", **values})
        return assembly.plan(config, num_train, num_replicas=1)

    large = plan(3200)  # 100 steps an epoch: the default 20 epochs, evaluated each epoch
    assert (large.total_steps, large.eval_every) == (2000, 100)
    small = plan(127)  # 3 steps an epoch: whole epochs up to at least 500 steps
    assert small.steps_per_epoch == 3 and small.total_steps == 3 * 167
    assert small.eval_every == 3 * 4 and math.ceil(167 / 4) <= assembly.MAX_EVALUATIONS
    assert plan(127, epochs=40).eval_every == 3  # up to 50 epochs: every epoch
    assert plan(127, epochs=2).total_steps == 6  # an explicit length is kept
    assert plan(127, train_steps=7, eval_every=2).eval_every == 2
