"""``python -m trainer.sweep``: a grid of runs, ranked, resumable after a kill."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from trainer import sweep
from trainer.config import UsageError

from helpers import ROOT

GRID = "learning_rate=0.003,0.03;init=zeros,xavier"
FLAGS = [
    "--",
    "--train_steps=30",
    "--summary_every=0",
    "--eval_every=0",
    "--hidden=16",
    "--optimizer=sgd",
]


def _sweep(output_dir, *extra, **popen):
    return subprocess.Popen(
        [sys.executable, "-m", "trainer.sweep", f"--output_dir={output_dir}", f"--grid={GRID}",
         *extra, *FLAGS],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen,
    )  # fmt: skip


def _done_lines(log) -> int:
    with open(log) as handle:
        return sum("done at step" in line for line in handle)


def test_a_sweep_killed_half_way_finishes_only_the_missing_runs(tmp_path):
    out = tmp_path / "sweep"
    first = _sweep(out, "--parallel=1", start_new_session=True)
    runs = out / "runs"
    deadline = time.time() + 180
    while time.time() < deadline and first.poll() is None:
        finished = [
            name for name in (os.listdir(runs) if runs.exists() else [])
            if (runs / name / "results.json").exists()
        ]  # fmt: skip
        if len(finished) >= 2:
            break
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)  # the sweep and the run it was running
    first.communicate()
    logs = sorted((out / "logs").iterdir())
    done_before = [log for log in logs if _done_lines(log)]
    assert 2 <= len(done_before) < 4

    second = _sweep(out, "--parallel=2")
    _, err = second.communicate(timeout=300)
    assert second.returncode == 0, err
    assert f"{len(done_before)} finished before, {4 - len(done_before)} to run" in err
    for log in done_before:  # not run again
        assert _done_lines(log) == 1, log
    with open(out / "results.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["rank"]) for r in rows] == [1, 2, 3, 4]
    accuracies = [float(r["best_validation_accuracy"]) for r in rows]
    assert accuracies == sorted(accuracies, reverse=True)
    assert {(r["learning_rate"], r["init"]) for r in rows} == {
        (lr, init) for lr in ("0.003", "0.03") for init in ("zeros", "xavier")
    }
    assert all(r["stop_reason"] == "steps_done" for r in rows)
    assert "ranked by best_validation_accuracy" in (out / "results.md").read_text()
    assert json.loads((out / "sweep.json").read_text())["grid"]["init"] == ["zeros", "xavier"]


@pytest.mark.parametrize(
    "grid, fragment",
    [
        ("", "--grid: required"),
        ("learning_rate", "is not name=value1,value2"),
        ("speed=1,2", "'speed' is not a flag"),
        ("learning_rate=0.1,-1", "learning_rate=-1 must be a finite number > 0"),
        ("init=xavier,nope", "init=nope must be one of"),
        ("model_dir=a,b", "set by the sweep"),
        ("seed=1;seed=2", "given twice"),
        ("hidden=32|0", "layer sizes must be >= 1"),
    ],
)
def test_bad_grids_are_named(grid, fragment):
    with pytest.raises(UsageError, match=None) as raised:
        sweep.parse_grid(grid)
    assert fragment in str(raised.value)


def test_random_draws_distinct_combinations_and_names_are_folder_safe(tmp_path):
    grid = sweep.parse_grid("learning_rate=0.1,0.2,0.3;init=xavier,he;hidden=32|64,64")
    assert grid["hidden"] == ["32", "64,64"]
    runs = sweep.plan(str(tmp_path), grid, 3, seed=1)
    assert len(runs) == 3 and len({r.name for r in runs}) == 3
    assert all("/" not in r.name and "*" not in r.name for r in runs)
    assert runs == sweep.plan(str(tmp_path), grid, 3, seed=1)
    with pytest.raises(UsageError, match="only 12 combinations"):
        sweep.plan(str(tmp_path), grid, 13, seed=1)


def test_another_sweep_in_the_same_folder_is_refused(tmp_path):
    sweep.check_manifest(str(tmp_path), {"grid": {"seed": ["1"]}})
    sweep.check_manifest(str(tmp_path), {"grid": {"seed": ["1"]}})  # the same: fine
    with pytest.raises(UsageError, match="holds another sweep"):
        sweep.check_manifest(str(tmp_path), {"grid": {"seed": ["2"]}})
