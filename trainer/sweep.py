"""``python -m trainer.sweep``: a grid (or a random sample of it) of training runs.

    python -m trainer.sweep --output_dir=runs/sweep \\
        --grid="learning_rate=0.001,0.003;init=xavier,he" --parallel=2 -- --epochs=10

Every combination of the ``--grid`` values is one ``python -m trainer.main``
run in ``<output_dir>/runs/<name>`` (the flags after ``--`` go to every run),
its log in ``<output_dir>/logs/<name>.log``; each is a fork of this process, which
imports TensorFlow once (``--nofork``: a fresh interpreter each). ``--random=N`` runs N
combinations drawn with ``--sweep_seed`` instead of all. Runs go ``--parallel``
at a time.

Resumable: a run whose ``results.json`` says it finished (``stop_reason``
``steps_done`` or ``early_stop``) is skipped; any other resumes from its
checkpoints. ``<output_dir>/sweep.json`` records the grid and the flags; the
same command continues a stopped sweep, another one is refused, and so is a
second sweep in the folder while one runs (``<output_dir>/.sweep.lock``). SIGTERM
or Ctrl-C stops the runs (they save first) and the sweep (exit 128 + signal); on
Linux a sweep that dies (even by SIGKILL) sends its runs SIGTERM. A run refused
for its grid values is a failed run; the others go on.

At the end, and after each run, ``results.csv`` and ``results.md`` rank the
runs by ``--metric`` on the validation split (default: best validation
accuracy, or best validation loss for a regression); the test figures of each
run's exported model are shown beside it and never rank anything.
``tensorboard --logdir <output_dir>/runs`` compares them in the HParams
dashboard.

Exit status: 0 every run finished; 1 some run failed or did not finish (named
on the last line, their errors in the table); 2 bad input; 128 + N stopped by
signal N.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import io
import json
import math
import os
import random
import re
import signal
import subprocess
import sys
import time

from absl import app, flags, logging

from trainer import config as config_lib
from trainer import parent_death
from trainer.cli import (
    Interrupted,
    end_on_signals,
    fail,
    fail_interrupted,
    flagfile_lines,
    parse_flags,
    run_as_python,
)
from trainer.errors import UsageError
from trainer.files import exclusive_lock, write_atomically

FINISHED = ("steps_done", "early_stop")
# Ranking metrics: validation figures only (the test split never chooses).
METRICS = (
    "auto",
    "best_validation_accuracy",
    "best_validation_loss",
    "validation_accuracy",
    "validation_loss",
)
MAX_RUNS = 10_000
# What the sweep sets for each run: refused among the trainer flags.
SET_BY_THE_SWEEP = ("model_dir", "mode")
LOCK_NAME = ".sweep.lock"


def define_flags() -> None:
    """The sweep's own flags (the trainer's go after ``--``)."""
    flags.DEFINE_string("output_dir", None, "Folder of the sweep: runs/, logs/, results.*.")
    flags.DEFINE_string(
        "grid",
        None,
        'Flag values to combine: "name=v1,v2;name=v1,v2" (trainer flag names, e.g. '
        '"learning_rate=0.001,0.003;init=xavier,he"; values holding commas are separated '
        'by |, e.g. "hidden=100|500,500").',
    )
    flags.DEFINE_integer(
        "random", 0, "Run this many combinations drawn at random (0: all).",
        lower_bound=0, upper_bound=MAX_RUNS,
    )  # fmt: skip
    flags.DEFINE_integer("sweep_seed", 0, "Seed of --random's draw.")
    flags.DEFINE_integer("parallel", 1, "Runs at a time.", lower_bound=1, upper_bound=64)
    flags.DEFINE_enum("metric", "auto", METRICS, "What ranks the runs.")
    flags.DEFINE_boolean(
        "fork",
        hasattr(os, "fork"),
        "Start each run as a fork of this process, which imports TensorFlow once (saves "
        "its ~5 CPU seconds per run); --nofork starts a fresh interpreter per run.",
    )


@dataclasses.dataclass
class Run:
    name: str
    values: dict
    folder: str
    log: str

    def results(self) -> dict:
        try:
            with open(os.path.join(self.folder, "results.json")) as handle:
                results = json.load(handle)
        except (OSError, ValueError):
            return {}
        return results if isinstance(results, dict) else {}

    def finished(self) -> bool:
        return self.results().get("stop_reason") in FINISHED


def parse_grid(text: str | None) -> dict[str, list[str]]:
    """``"a=1,2;b=x"`` -> ``{"a": ["1", "2"], "b": ["x"]}``, checked against the
    trainer's flags and their values. Values that hold commas (``--hidden``,
    ``--layers``) are separated by ``|`` instead: ``"hidden=100|500,500"``.

    Raises:
      UsageError: naming ``--grid`` and the part that is wrong.
    """
    if not text or not text.strip():
        raise UsageError('--grid: required, e.g. --grid="learning_rate=0.001,0.003;init=xavier,he"')
    grid: dict[str, list[str]] = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        name, equals, values = part.partition("=")
        name = name.strip().lstrip("-")
        if not equals or not name:
            raise UsageError(f"--grid: {part!r} is not name=value1,value2")
        if name in ("model_dir", "mode", "export_dir"):
            raise UsageError(f"--grid: {name} is set by the sweep, not a setting to vary")
        if name not in config_lib.FLAG_NAMES:
            raise UsageError(f"--grid: {name!r} is not a flag of python -m trainer.main")
        if name in grid:
            raise UsageError(f"--grid: {name} is given twice")
        separator = "|" if "|" in values else ","  # "|" when values hold commas
        listed = [v.strip() for v in values.split(separator) if v.strip()]
        if not listed:
            raise UsageError(f"--grid: {name} has no values")
        repeated = sorted({v for v in listed if listed.count(v) > 1})
        if repeated:
            raise UsageError(f"--grid: {name} lists {', '.join(repeated)} more than once")
        for value in listed:
            problem = config_lib.flag_problem(name, value)
            if problem:
                raise UsageError(f"--grid: {name}={value} {problem}")
        grid[name] = listed
    if not grid:
        raise UsageError("--grid: give at least one name=values")
    return grid


def run_name(index: int, values: dict) -> str:
    """``03-learning_rate=0.003,init=he``: readable, and safe as a folder name."""
    text = ",".join(f"{k}={v}" for k, v in values.items())
    return f"{index:02d}-" + re.sub(r"[^A-Za-z0-9_.=,+-]", "_", text)[:120]


def grid_size(grid: dict) -> int:
    """How many combinations ``grid`` has (none is built)."""
    return math.prod(len(values) for values in grid.values())


def combination(grid: dict, index: int) -> dict:
    """The ``index``-th combination of ``grid`` in ``itertools.product``'s order
    (the last name varies fastest), decoded mixed-radix without building any other."""
    picked = {}
    for name in reversed(grid):
        index, position = divmod(index, len(grid[name]))
        picked[name] = grid[name][position]
    return {name: picked[name] for name in grid}


def draw(total: int, count: int, seed: int) -> list[int]:
    """``count`` distinct indices in ``[0, total)``, sorted, drawn with ``seed``; memory
    and time grow with ``count``, not ``total``. ``random.sample`` on a ``range``
    builds nothing (the draw of earlier versions, so a sweep keeps its runs);
    beyond what ``len`` of a range can say, indices drawn one by one, duplicates redrawn."""
    rng = random.Random(seed)
    if total <= sys.maxsize:
        return sorted(rng.sample(range(total), count))
    picked: set[int] = set()
    while len(picked) < count:
        picked.add(rng.randrange(total))
    return sorted(picked)


def plan(output_dir: str, grid: dict, count: int, seed: int) -> list[Run]:
    """The runs of the sweep: every combination, or ``count`` drawn with ``seed``.
    The caps are checked on the grid's size before any combination is built.

    Raises:
      UsageError: naming ``--random`` or ``--grid``.
    """
    total = grid_size(grid)
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise UsageError(f"--random={count}: must be an integer >= 0 (0: every combination)")
    if count > MAX_RUNS:
        raise UsageError(f"--random={count}: at most {MAX_RUNS} runs")
    if count > total:
        raise UsageError(f"--random={count}: the grid has only {total} combinations")
    if not count and total > MAX_RUNS:
        raise UsageError(
            f"--grid: {total} combinations; at most {MAX_RUNS} (or run some: --random=N)"
        )
    indices = draw(total, count, seed) if count else range(total)
    combos = [combination(grid, index) for index in indices]
    return [
        Run(
            name,
            values,
            os.path.join(output_dir, "runs", name),
            os.path.join(output_dir, "logs", name + ".log"),
        )
        for index, values in enumerate(combos)
        for name in [run_name(index, values)]
    ]


def check_manifest(output_dir: str, manifest: dict) -> None:
    """Writes ``sweep.json``, or checks that an existing one is this sweep's."""
    path = os.path.join(output_dir, "sweep.json")
    if os.path.exists(path):
        try:
            with open(path) as handle:
                saved = json.load(handle)
        except (OSError, ValueError) as error:
            raise UsageError(
                f"{path}: unreadable ({error}); remove it or use a new --output_dir"
            ) from None
        if saved != manifest:
            raise UsageError(
                f"--output_dir={output_dir}: holds another sweep (grid or flags differ from "
                f"{path}); use a new --output_dir or the same command"
            )
        return
    write_atomically(path, json.dumps(manifest, indent=2) + "\n")


def check_trainer_flags(trainer_flags: list[str]) -> None:
    """Refuses trainer flags (after ``--``) that are not ``--flags``, or that set what
    the sweep sets for each run (``--model_dir``, ``--mode``), a ``--flagfile``'s
    (nested ones too) included: every run would share one run folder.

    Raises:
      UsageError: naming the flag, and the flagfile that gives it.
    """
    for value in trainer_flags:
        if not value.startswith("--") or value == "--":
            raise UsageError(f"unexpected arguments {[value]}; every option is a --flag")
    given = []
    for value in trainer_flags:
        if value == "--flagfile":
            raise UsageError("--flagfile: give the file as --flagfile=FILE")
        if value.startswith("--flagfile="):
            path = os.path.expanduser(value.partition("=")[2].strip())
            if not path:
                raise UsageError("--flagfile: give the path of a file of flags")
            given += flagfile_lines(path)
        else:
            given.append((value, ""))
    for value, where in given:
        name = value.lstrip("-").partition("=")[0].strip()
        if name in SET_BY_THE_SWEEP:
            source = f"{where} gives {value}" if where else value
            raise UsageError(f"{source}: the sweep sets --model_dir and --mode of each run")


def command(run: Run, trainer_flags: list[str]) -> list[str]:
    """The run's ``python -m trainer.main`` command: the trainer flags, the run's grid
    values, then the run folder and mode last, so that nothing before them wins."""
    values = [f"--{k}={v}" for k, v in run.values.items()]
    return [
        sys.executable, "-m", "trainer.main", *trainer_flags, *values,
        f"--model_dir={run.folder}", "--mode=train_and_eval",
    ]  # fmt: skip


class SweepLock:
    """An exclusive lock on the sweep's folder for the sweep's life, so that two
    sweeps never share one: ``files.exclusive_lock`` on ``<output_dir>/.sweep.lock``,
    as ``checkpoints.RunLock`` locks a run folder. The kernel drops it when the sweep
    ends, however it ends; forked runs close their copy (``_HELD``)."""

    def __init__(self, output_dir: str):
        self.output_dir = output_dir
        self.path = os.path.join(output_dir, LOCK_NAME)
        self._fd: int | None = None

    def __enter__(self) -> SweepLock:
        self._fd = exclusive_lock(
            self.path,
            busy=lambda holder: (
                f"another sweep is running in {self.output_dir} ({holder}); wait for it "
                "to end, or use another --output_dir"
            ),
            record=f"pid {os.getpid()}",
            hint="remove it",
            cloexec=True,
        )
        _HELD.add(self._fd)
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            _HELD.discard(self._fd)
            os.close(self._fd)  # the lock goes with the last descriptor
            self._fd = None


_HELD: set[int] = set()  # the sweep locks this process holds


class _ForkedRun:
    """A run forked from the sweep (TensorFlow imported, its runtime not started),
    with the part of ``subprocess.Popen``'s interface the sweep uses."""

    def __init__(self, argv: list[str], log: str):
        sys.stdout.flush()
        sys.stderr.flush()
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # the child becomes `python -m trainer.main ...`; never returns
            code = 1
            try:
                parent_death.die_with_parent(parent)
                for fd in _HELD:  # the sweep's lock stays the sweep's
                    os.close(fd)
                target = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
                os.dup2(target, 1)
                os.dup2(target, 2)
                os.close(target)
                os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
                signal.signal(signal.SIGINT, signal.default_int_handler)
                code = run_as_python(["-m", "trainer.main", *argv])
            finally:
                os._exit(code)
        self.pid = pid
        self.returncode = None

    def poll(self):
        if self.returncode is None:
            done, status = os.waitpid(self.pid, os.WNOHANG)
            if done:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def wait(self, timeout: float | None = None):
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired("trainer.main", timeout)
            time.sleep(0.05)
        return self.returncode


def _start(run: Run, trainer_flags: list[str], fork: bool):
    parent_death.load()
    if fork:
        return _ForkedRun(command(run, trainer_flags)[3:], run.log)
    with open(run.log, "a") as log:
        return subprocess.Popen(
            command(run, trainer_flags), stdout=log, stderr=subprocess.STDOUT,
            preexec_fn=functools.partial(parent_death.die_with_parent, os.getpid()),
        )  # fmt: skip


def last_error(log: str) -> str:
    try:
        with open(log, errors="replace") as handle:
            lines = [line.strip() for line in handle if line.startswith("error: ")]
    except OSError:
        return ""
    return lines[-1][len("error: ") :] if lines else ""


def rank(runs: list[Run], metric: str) -> tuple[list[dict], str]:
    """Rows for the table, best first; returns ``(rows, the metric used)``."""
    rows = []
    for run in runs:
        results = run.results()
        started = os.path.exists(run.log)
        failed = last_error(run.log) if not run.finished() else ""
        unfinished = "failed" if failed else "not finished" if started else "not run"
        state = results.get("stop_reason") or unfinished
        rows.append({"run": run.name, **run.values, "results": results, "state": state,
                     "error": failed})  # fmt: skip
    if metric == "auto":
        has_accuracy = any(r["results"].get("validation_accuracy") is not None for r in rows)
        metric = "best_validation_accuracy" if has_accuracy else "best_validation_loss"
    higher = metric.endswith("accuracy")

    def key(row):
        value = row["results"].get(metric)
        if value is None:
            value = row["results"].get(metric.replace("best_", ""))
        if not isinstance(value, int | float):
            return (1, 0.0)
        return (0, -value if higher else value)

    rows.sort(key=key)
    return rows, metric


COLUMNS = (
    "best_validation_accuracy", "best_validation_loss", "best_step", "validation_accuracy",
    "validation_loss", "validation_rmse", "test_accuracy", "test_loss", "test_rmse",
    "test_mae", "test_r2", "test_step", "global_step", "stop_reason", "wall_time_s",
)  # fmt: skip


def write_tables(output_dir: str, runs: list[Run], grid: dict, metric: str) -> str:
    rows, metric = rank(runs, metric)
    # The figures some run has (a classification sweep has no best_validation_loss).
    columns = [c for c in COLUMNS if any(r["results"].get(c) is not None for r in rows)]
    if "stop_reason" not in columns:
        columns.append("stop_reason")
    header = ["rank", "run", *grid, *columns, "error"]
    table = []
    for position, row in enumerate(rows, 1):
        results = row["results"]
        cells = [position, row["run"], *(row[k] for k in grid)]
        cells += [_cell(results.get(c)) for c in columns]
        cells += [row["error"]]
        if not results.get("stop_reason"):
            cells[len(grid) + 2 + columns.index("stop_reason")] = row["state"]
        table.append(cells)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(table)
    write_atomically(os.path.join(output_dir, "results.csv"), buffer.getvalue())
    lines = [
        f"# Sweep results, ranked by {metric}",
        "",
        "| " + " | ".join(header[:-1]) + " |",
        "|" + "---|" * (len(header) - 1),
    ]
    lines += ["| " + " | ".join(str(c) for c in cells[:-1]) + " |" for cells in table]
    failed = [cells for cells in table if cells[-1]]
    if failed:
        lines += ["", "Failed runs:", ""] + [f"- {c[1]}: {c[-1]}" for c in failed]
    write_atomically(os.path.join(output_dir, "results.md"), "\n".join(lines) + "\n")
    return metric


def write_hparams_experiment(runs_dir: str, grid: dict, trainer_flags: list[str]) -> None:
    """The HParams dashboard's columns for the sweep, at the root of its runs: the
    settings the grid varies (the runs record every setting; the constants stay
    out of view) and the metrics, the one that ranks first. Written once, with
    TensorBoard's own event writer."""
    import glob

    if glob.glob(os.path.join(runs_dir, "events.out.tfevents.*.sweep")):
        return
    from trainer import runtime

    runtime.import_tensorflow()  # quietly: TensorFlow's C++ start-up lines hidden, as for runs
    from tensorboard.plugins.hparams import api as hp
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    from trainer.summaries import HPARAMS_PREFIX, metric_names

    regression = "--loss=mse" in trainer_flags or "--dataset=sin" in trainer_flags
    metrics = [
        hp.Metric(f"{HPARAMS_PREFIX}{name}", group="", display_name=name.replace("_", " "))
        for name in metric_names(not regression)
    ]
    summary = hp.hparams_config_pb(hparams=[hp.HParam(name) for name in grid], metrics=metrics)
    writer = EventFileWriter(runs_dir, filename_suffix=".sweep")
    try:
        from tensorboard.compat.proto import event_pb2

        writer.add_event(event_pb2.Event(wall_time=time.time(), step=0, summary=summary))
    finally:
        writer.close()


def _cell(value):
    if isinstance(value, float):
        return f"{value:.4f}"
    return "" if value is None else value


def sweep(output_dir: str, grid: dict, trainer_flags: list[str], options) -> str | None:
    """Runs what is missing, holding the folder's lock; returns a line on the runs
    that failed or did not finish (None: every run finished)."""
    runs = plan(output_dir, grid, options.random, options.sweep_seed)  # before any file
    manifest = {"grid": grid, "trainer_flags": trainer_flags, "random": options.random,
                "sweep_seed": options.sweep_seed}  # fmt: skip
    run_files = [n for n in ("config.json", "checkpoints", "results.json")
                 if os.path.lexists(os.path.join(output_dir, n))]  # fmt: skip
    if run_files and not os.path.lexists(os.path.join(output_dir, "sweep.json")):
        raise UsageError(
            f"--output_dir={output_dir}: a training run's folder (it holds {run_files[0]}); "
            "a sweep needs a folder of its own"
        )
    os.makedirs(output_dir, exist_ok=True)
    with SweepLock(output_dir):
        os.makedirs(os.path.join(output_dir, "logs"), exist_ok=True)
        os.makedirs(os.path.join(output_dir, "runs"), exist_ok=True)
        check_manifest(output_dir, manifest)
        write_hparams_experiment(os.path.join(output_dir, "runs"), grid, trainer_flags)
        todo = [run for run in runs if not run.finished()]
        logging.info(
            "sweep of %d runs in %s: %d finished before, %d to run, %d at a time",
            len(runs), _shown(output_dir), len(runs) - len(todo), len(todo), options.parallel,
        )  # fmt: skip
        fork = bool(getattr(options, "fork", False)) and todo
        if fork:
            from trainer import runtime

            # Imported once here; each forked run starts TensorFlow's runtime itself.
            runtime.import_tensorflow()
        failed = _run_all(output_dir, runs, todo, grid, trainer_flags, options, fork)
        metric = write_tables(output_dir, runs, grid, options.metric)
    best = rank(runs, metric)[0][0]
    logging.info(
        "sweep done: best %s (%s %s); tables %s and %s", best["run"], metric,
        _cell(best["results"].get(metric)), _shown(output_dir, "results.md"),
        _shown(output_dir, "results.csv"),
    )  # fmt: skip
    print(f"compare them: tensorboard --logdir {_shown(output_dir, 'runs')}")
    return unfinished(runs, failed)


def _run_all(output_dir, runs, todo, grid, trainer_flags, options, fork) -> dict[str, str]:
    """Runs ``todo``, ``--parallel`` at a time; returns ``{run name: error}`` of those
    that failed. A run refused for its grid values is one failed run; a refusal that
    names none of them, before any run finished, is the flags' that every run shares:
    it stops the sweep (every run would fail alike)."""
    failed: dict[str, str] = {}
    running: list = []
    try:
        while todo or running:
            while todo and len(running) < options.parallel:
                run = todo.pop(0)
                running.append((run, _start(run, trainer_flags, fork)))
                logging.info("started %s", run.name)
            time.sleep(0.2)
            for run, process in list(running):
                code = process.poll()
                if code is None:
                    continue
                running.remove((run, process))
                if code == 0:
                    logging.info("finished %s", run.name)
                else:
                    error = last_error(run.log) or f"exit status {code}"
                    failed[run.name] = error
                    logging.warning("%s failed: %s", run.name, error)
                    shared = code == 2 and not _names_a_grid_flag(error, grid)
                    if shared and not any(r.finished() for r in runs):
                        raise UsageError(f"run {run.name}: {error}")
                write_tables(output_dir, runs, grid, options.metric)
    except BaseException:
        for _, process in running:  # each saves its checkpoint and stops
            process.send_signal(signal.SIGTERM)
        for _, process in running:
            try:
                process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                process.kill()
        write_tables(output_dir, runs, grid, options.metric)
        raise
    return failed


def _names_a_grid_flag(error: str, grid: dict) -> bool:
    """Whether a run's error line names a flag that the grid varies (``--hidden=...``)."""
    return any(re.search(rf"--(no)?{re.escape(name)}\b", error) for name in grid)


def unfinished(runs: list[Run], failed: dict[str, str]) -> str | None:
    """One line naming the runs that failed and those that ended without finishing
    (None if every run finished)."""
    left = [run for run in runs if not run.finished()]
    if not left:
        return None
    broken = [run.name for run in left if run.name in failed]
    stopped = [run.name for run in left if run.name not in failed]
    parts = []
    if broken:
        parts.append(f"{len(broken)} of {len(runs)} runs failed: {_listed(broken)}")
    if stopped:
        parts.append(
            f"{len(stopped)} of {len(runs)} runs did not finish (no stop_reason "
            f"{' or '.join(FINISHED)} in their results.json): {_listed(stopped)}"
        )
    return "; ".join(parts) + "; see results.md, then run the same command again"


def _listed(names: list[str], most: int = 5) -> str:
    more = f" and {len(names) - most} more" if len(names) > most else ""
    return ", ".join(names[:most]) + more


def _shown(*parts: str) -> str:
    """A path for messages: relative to the working folder when inside it."""
    path = os.path.join(*parts)
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative


def main(argv) -> None:
    FLAGS = flags.FLAGS
    trainer_flags = list(argv[1:])
    logging.get_absl_handler().use_absl_log_file = False
    try:
        check_trainer_flags(trainer_flags)
        if not FLAGS.output_dir:
            raise UsageError("--output_dir: required (the sweep's folder)")
        output_dir = os.path.abspath(os.path.expanduser(FLAGS.output_dir))
        grid = parse_grid(FLAGS.grid)
        with end_on_signals():
            left = sweep(output_dir, grid, trainer_flags, FLAGS)
    except UsageError as error:
        fail(error)
    except Interrupted as interrupted:
        fail_interrupted(
            interrupted,
            "the sweep stopped (the running runs saved their checkpoints); "
            "run the same command again to finish the missing runs",
        )
    except OSError as error:
        fail(f"--output_dir: cannot write ({error.strerror or error})")
    if left:
        fail(left, status=1)
    sys.exit(0)


def _parse_sweep_flags(argv):
    """``parse_flags``, saying where a trainer flag given before ``--`` belongs."""
    own = set(flags.FLAGS)
    for arg in argv[1 : argv.index("--") if "--" in argv else len(argv)]:
        name = arg.lstrip("-").partition("=")[0]
        if name.startswith("no") and name[2:] in config_lib.FLAG_NAMES:
            name = name[2:]  # --noflag, a boolean's false
        if arg.startswith("-") and name not in own and name in config_lib.FLAG_NAMES:
            fail(
                f"--{name}: a trainer flag; put trainer flags after --, e.g. "
                f"python -m trainer.sweep --output_dir=... --grid=... -- {arg}"
            )
    return parse_flags(argv)


def run_main() -> None:
    define_flags()
    app.run(main, flags_parser=_parse_sweep_flags)


if __name__ == "__main__":
    run_main()
