"""``python -m trainer.sweep``: a grid of runs, ranked, resumable after a kill."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from trainer import sweep
from trainer.config import UsageError

from helpers import ROOT, assert_one_line_error

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
    logs_dir = out / "logs"
    deadline = time.time() + 180
    while time.time() < deadline and first.poll() is None:
        # finished: the run's log has its last line (results.json is written just before)
        logs = sorted(logs_dir.iterdir()) if logs_dir.exists() else []
        if sum(1 for log in logs if _done_lines(log)) >= 2:
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
        ("learning_rate=0.1,0.2,0.1", "learning_rate lists 0.1 more than once"),
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


# -- --random: checked, and drawn without building the grid ----------------------------
def _sweep_command(output_dir, grid, *extra, flags=FLAGS):
    return [sys.executable, "-m", "trainer.sweep", f"--output_dir={output_dir}",
            f"--grid={grid}", *extra, *flags]  # fmt: skip


def _run(args, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("value", ["-3", "abc", "1.5", "20000"])
def test_a_bad_random_is_one_line_naming_the_flag(tmp_path, value):
    out = tmp_path / "sweep"
    result = _run(_sweep_command(out, GRID, f"--random={value}"))
    assert_one_line_error(result, f"--random={value}")
    assert result.returncode == 2 and not out.exists()
    with pytest.raises(UsageError, match=r"--random=-3: must be an integer >= 0"):
        sweep.plan(str(out), {"seed": ["1", "2"]}, -3, seed=0)


def test_random_draws_from_a_huge_grid_without_building_it(tmp_path):
    grid = {name: [str(v) for v in range(1, 11)] for name in "abcdefghijk"}  # 10^11
    assert sweep.grid_size(grid) == 10**11
    started = time.perf_counter()
    runs = sweep.plan(str(tmp_path), grid, 2, seed=7)
    again = sweep.plan(str(tmp_path), grid, 2, seed=7)
    assert time.perf_counter() - started < 0.5
    assert runs == again and len({r.name for r in runs}) == 2
    for run in runs:
        assert list(run.values) == list(grid)
        assert all(run.values[name] in grid[name] for name in grid)
    # beyond what a range's len can hold (10^30): still drawn, distinct, seeded
    huge = {f"k{i}": ["1", "2", "3", "4", "5", "6", "7", "8", "9", "10"] for i in range(30)}
    drawn = sweep.plan(str(tmp_path), huge, 3, seed=1)
    assert drawn == sweep.plan(str(tmp_path), huge, 3, seed=1)
    assert len({tuple(r.values.values()) for r in drawn}) == 3
    # the caps, checked on the size before anything is built
    with pytest.raises(UsageError, match=r"--grid: 100000000000 combinations; at most 10000"):
        sweep.plan(str(tmp_path), grid, 0, seed=0)
    with pytest.raises(UsageError, match=r"--random=10001: at most 10000 runs"):
        sweep.plan(str(tmp_path), grid, 10_001, seed=0)
    assert not list(tmp_path.iterdir())


def test_combinations_decode_in_product_order_and_draws_stay_those_of_before(tmp_path):
    import itertools
    import random

    grid = sweep.parse_grid("learning_rate=0.1,0.2,0.3;init=xavier,he;hidden=32|64,64")
    product = [dict(zip(grid, v, strict=True)) for v in itertools.product(*grid.values())]
    assert [sweep.combination(grid, i) for i in range(12)] == product
    assert [r.values for r in sweep.plan(str(tmp_path), grid, 0, seed=0)] == product
    for seed in (0, 1, 5):  # a sweep started before keeps its runs
        before = sorted(random.Random(seed).sample(range(12), 4))
        drawn = [r.values for r in sweep.plan(str(tmp_path), grid, 4, seed=seed)]
        assert drawn == [product[i] for i in before]


# -- one sweep per folder --------------------------------------------------------------
def _snapshot(folder) -> dict:
    return {
        str(path.relative_to(folder)): (path.stat().st_mtime_ns, path.read_bytes())
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def test_a_second_sweep_while_one_runs_is_refused_and_touches_nothing(tmp_path):
    out = tmp_path / "sweep"
    out.mkdir()
    with sweep.SweepLock(str(out)):  # this process is the running sweep
        before = _snapshot(out)
        result = _run(_sweep_command(out, GRID))
        assert_one_line_error(result, f"another sweep is running in {out} (pid {os.getpid()})")
        assert result.returncode == 2
        assert _snapshot(out) == before and sorted(os.listdir(out)) == [".sweep.lock"]
    with sweep.SweepLock(str(out)):  # released: the next one takes it
        pass


# -- trainer flags that would point every run at one folder -----------------------------
def test_trainer_flags_that_set_the_run_folder_are_refused_in_flagfiles_too(tmp_path):
    inner = tmp_path / "inner.flags"
    inner.write_text("# a comment: --model_dir=/ignored\n\n--hidden=16\n  -mode=train\n")
    outer = tmp_path / "outer.flags"
    outer.write_text(f"// settings\n--train_steps=3\n--flagfile={inner}\n")
    harmless = tmp_path / "harmless.flags"
    harmless.write_text("# --model_dir=/ignored\n--train_steps=3\n")
    sweep.check_trainer_flags([f"--flagfile={harmless}", "--hidden=16"])  # comments skipped
    cases = {
        "--model_dir=/tmp/shared": "--model_dir=/tmp/shared: the sweep sets --model_dir",
        f"--flagfile={outer}": f"--flagfile={inner} in --flagfile={outer} gives -mode=train",
        f"--flagfile={tmp_path / 'missing'}": "missing: cannot read",
    }
    for flag, message in cases.items():
        with pytest.raises(UsageError) as raised:
            sweep.check_trainer_flags(["--train_steps=3", flag])
        assert message in str(raised.value)
    shared = tmp_path / "shared.flags"
    shared.write_text("--model_dir=/tmp/shared\n")
    out = tmp_path / "sweep"
    result = _run(_sweep_command(out, GRID, flags=["--", f"--flagfile={shared}"]))
    assert_one_line_error(result, f"--flagfile={shared} gives --model_dir=/tmp/shared")
    assert result.returncode == 2 and not out.exists()


def test_runs_that_failed_or_did_not_finish_are_named(tmp_path):
    grid = {"seed": ["1", "2", "3"]}
    runs = sweep.plan(str(tmp_path), grid, 0, seed=0)
    for run, reason in zip(runs, ["steps_done", None, "signal"], strict=True):
        os.makedirs(run.folder)
        if reason:
            (Path(run.folder) / "results.json").write_text(json.dumps({"stop_reason": reason}))
    assert sweep.unfinished(runs[:1], {}) is None
    line = sweep.unfinished(runs, {runs[1].name: "--seed=2: bad"})
    assert f"1 of 3 runs failed: {runs[1].name};" in line
    assert "1 of 3 runs did not finish" in line and line.count(runs[2].name) == 1
    assert "\n" not in line


# -- a sweep's runs end with it -------------------------------------------------------
def _lock_held(path) -> bool:
    import fcntl

    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False


def _sweeps_own_files(out) -> dict:
    """The sweep's files (not its runs', which change as they train), and the logs' names."""
    files = {k: v for k, v in _snapshot(out).items() if "/" not in k}
    return {**files, "logs": sorted(os.listdir(out / "logs"))}


def _wait(condition, seconds) -> bool:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_the_runs_of_a_sweep_killed_by_sigkill_end_with_it(tmp_path):
    out = tmp_path / "sweep"
    long = ["--", "--train_steps=10000000", "--summary_every=0", "--eval_every=0",
            "--hidden=16", "--nohistograms", "--jit_compile=false"]  # fmt: skip
    args = _sweep_command(out, "learning_rate=0.01", flags=long)
    with open(tmp_path / "first.err", "w") as err:
        first = subprocess.Popen(args, cwd=ROOT, stdout=err, stderr=err, start_new_session=True)
    run_lock = out / "runs" / "00-learning_rate=0.01" / ".lock"
    log = out / "logs" / "00-learning_rate=0.01.log"

    def training():
        return log.exists() and "training steps" in log.read_text() and _lock_held(run_lock)

    try:
        assert _wait(training, 120), (tmp_path / "first.err").read_text()
        # an identical sweep meanwhile: refused, the first one's files untouched
        before = _sweeps_own_files(out)
        second = _run(args)
        assert_one_line_error(second, f"another sweep is running in {out} (pid {first.pid})")
        assert _sweeps_own_files(out) == before
        os.kill(first.pid, signal.SIGKILL)  # the sweep alone, not its process group
        first.wait(timeout=10)
        assert _wait(lambda: not _lock_held(run_lock), 30), "the run outlived its sweep"
        assert not _lock_held(out / ".sweep.lock")
        # it was told to stop (SIGTERM), so it saved first
        assert "error: received SIGTERM: saved the checkpoint of step" in log.read_text()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(first.pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_run_started_as_a_subprocess_ends_with_its_sweep(tmp_path):
    script = (
        "import os, sys, time\n"
        "from trainer import sweep\n"
        "sweep.command = lambda run, flags: [sys.executable, '-c', 'import time; time.sleep(60)']\n"
        f"run = sweep.Run('r', {{}}, {str(tmp_path)!r}, {str(tmp_path / 'r.log')!r})\n"
        "print(sweep._start(run, [], fork=False).pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE,
                              text=True, start_new_session=True)  # fmt: skip
    try:
        child = int(parent.stdout.readline())
        assert _alive(child)
        parent.kill()
        parent.wait(timeout=10)
        assert _wait(lambda: not _alive(child), 10), "the run outlived its sweep"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(parent.pid, signal.SIGKILL)


# -- a run refused for its grid value fails alone ---------------------------------------
def test_a_run_refused_for_its_grid_value_fails_alone_and_the_others_run(tmp_path):
    out = tmp_path / "sweep"
    short = ["--", "--train_steps=3", "--summary_every=0", "--eval_every=0", "--hidden=16",
             "--nohistograms", "--jit_compile=false"]  # fmt: skip
    result = _run(_sweep_command(out, "dataset=csv,digits", flags=short), timeout=300)
    assert_one_line_error(result, "1 of 2 runs failed: 00-dataset=csv;", "results.md")
    assert result.returncode == 1
    # the sweep's own TensorFlow import is as quiet as a run's (no C++ start-up lines)
    assert "cudart_stub" not in result.stderr and "port.cc" not in result.stderr
    with open(out / "results.csv") as handle:
        rows = {row["run"]: row for row in csv.DictReader(handle)}
    assert rows["01-dataset=digits"]["stop_reason"] == "steps_done"
    assert rows["01-dataset=digits"]["error"] == ""
    assert rows["00-dataset=csv"]["stop_reason"] == "failed"
    assert "--csv_path: required with --dataset=csv" in rows["00-dataset=csv"]["error"]
    assert "- 00-dataset=csv: --csv_path: required" in (out / "results.md").read_text()


def test_a_sweep_into_a_training_runs_folder_is_refused(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    before = _snapshot(run)
    result = _run(_sweep_command(run, GRID))
    assert result.returncode == 2
    assert_one_line_error(result, "a training run's folder (it holds config.json)")
    assert _snapshot(run) == before and sorted(os.listdir(run)) == ["config.json"]
