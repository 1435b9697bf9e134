"""The trainer's default command on scikit-learn's bundled tables, against
scikit-learn's own baselines on the same rows.

    python scripts/tables_vs_sklearn.py --out_dir=runs/tables

Each table (diabetes, wine, breast cancer) is written as a training and a test
CSV (80/20, ``train_test_split`` with ``--seed``, stratified for classes); the
trainer runs its default command on them (``--loss=mse`` for diabetes), choosing
on its validation split carved from the training CSV; the baselines are fitted on
the whole training CSV with standardized features: ``Ridge`` for the regression,
``LogisticRegression`` for the classes. Both are scored on the test CSV. Flags
after ``--`` go to every trainer command (``-- --epochs=5``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
from absl import app, flags

TABLES = ("diabetes", "wine", "breast_cancer")
flags.DEFINE_string("out_dir", os.path.join("runs", "tables"), "Where the CSVs and runs go.")
flags.DEFINE_integer("seed", 0, "Seed of the 80/20 split.")
flags.DEFINE_list("tables", list(TABLES), "Which tables, of " + ", ".join(TABLES) + ".")
FLAGS = flags.FLAGS


def write_tables(out_dir: str, name: str, seed: int) -> tuple[str, str]:
    """``(train.csv, test.csv)`` of one bundled table, 80/20."""
    from sklearn import datasets
    from sklearn.model_selection import train_test_split

    data = getattr(datasets, f"load_{name}")()
    x, y = data.data, data.target
    stratify = None if name == "diabetes" else y
    train, test = train_test_split(
        np.arange(len(y)), test_size=0.2, random_state=seed, stratify=stratify
    )
    paths = []
    for split, rows in (("train", train), ("test", test)):
        path = os.path.join(out_dir, f"{name}_{split}.csv")
        header = ",".join([*(f"f{i}" for i in range(x.shape[1])), "label"])
        lines = [header] + [",".join([*map(repr, x[r].tolist()), repr(y[r].item())]) for r in rows]
        with open(path, "w") as handle:
            handle.write("\n".join(lines) + "\n")
        paths.append(path)
    return paths[0], paths[1]


def baseline(name: str, train_csv: str, test_csv: str) -> float:
    """Ridge's test RMSE, or LogisticRegression's test accuracy."""
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.preprocessing import StandardScaler

    train = np.loadtxt(train_csv, delimiter=",", skiprows=1)
    test = np.loadtxt(test_csv, delimiter=",", skiprows=1)
    scaler = StandardScaler().fit(train[:, :-1])
    x_train, x_test = scaler.transform(train[:, :-1]), scaler.transform(test[:, :-1])
    if name == "diabetes":
        predicted = Ridge().fit(x_train, train[:, -1]).predict(x_test)
        return float(np.sqrt(np.mean((predicted - test[:, -1]) ** 2)))
    model = LogisticRegression(max_iter=5000).fit(x_train, train[:, -1])
    return float(model.score(x_test, test[:, -1]))


def main(argv) -> None:
    trainer_flags = argv[1:]
    os.makedirs(FLAGS.out_dir, exist_ok=True)
    rows = []
    unknown = sorted(set(FLAGS.tables) - set(TABLES))
    if unknown:
        sys.exit(f"error: --tables: unknown {', '.join(unknown)} (of {', '.join(TABLES)})")
    for name in FLAGS.tables:
        train_csv, test_csv = write_tables(FLAGS.out_dir, name, FLAGS.seed)
        run = os.path.join(FLAGS.out_dir, name)
        command = [
            sys.executable, "-m", "trainer.main", "--dataset=csv", f"--csv_path={train_csv}",
            f"--test_csv_path={test_csv}", f"--model_dir={run}",
        ]  # fmt: skip
        if name == "diabetes":
            command.append("--loss=mse")
        done = subprocess.run(command + trainer_flags, capture_output=True, text=True)
        if done.returncode:
            lines = done.stderr.strip().splitlines() or ["(no output)"]
            sys.exit(f"the trainer failed on {name}: {lines[-1]}")
        with open(os.path.join(run, "results.json")) as handle:
            results = json.load(handle)
        figure = "test_rmse" if name == "diabetes" else "test_accuracy"
        rows.append((name, figure, results[figure], baseline(name, train_csv, test_csv)))
    print(f"{'table':<14} {'figure':<14} {'trainer':>8} {'sklearn':>8}")
    for name, figure, ours, theirs in rows:
        print(f"{name:<14} {figure:<14} {ours:>8.4f} {theirs:>8.4f}")


if __name__ == "__main__":
    app.run(main)
