"""Runs every command and snippet of docs/walkthrough.md, shortened as the page says.

Every line of a ``bash`` block and every ``python`` block runs in order, in a fresh
folder, each in its own process, as the page shows it. To keep the test short, the
processes of ``python -m module ...`` and ``python script.py ...`` lines and of the
snippets are not started from scratch: this file, run as a script, imports
TensorFlow and the other heavy libraries once, then forks one child per command or
snippet, which runs it as ``python`` would (``runpy``: as ``__main__``, with
``sys.argv`` and ``sys.path[0]`` set as the interpreter sets them) with its own
standard output, standard error and exit status. That saves an interpreter start
and a TensorFlow import (several CPU seconds each) per command, and nothing a
command does leaks into the next. Any other line runs through ``bash -c``.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time

import forkserver
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGE = os.path.join(ROOT, "docs", "walkthrough.md")
# What docs/walkthrough.md says the test appends to keep it short.
SHORTER = {
    "python -m trainer.main": " --train_steps=30 --nohistograms --jit_compile=false",
    # the sweep: 2 of its runs (before its "--"), each shortened (after it)
    "python -m trainer.sweep": " --train_steps=30 --nohistograms --jit_compile=false",
    "python scripts/init_study.py": (
        " --steps=20 --depth=3 --width=128 --summary_every=0 --inits=uniform,xavier"
    ),
    "python scripts/tables_vs_sklearn.py": " --tables=wine -- --train_steps=30 --nohistograms",
    "python scripts/benchmark.py": (
        " --preset=tiny --steps=4 --repeats=1 --matmul_size=64 --noprecision_check"
        " --summary_every=0"
    ),
}
# Imported once by the runner before it forks the commands; none defines absl flags.
PRELOAD = (
    "numpy",
    "sklearn.datasets",
    "sklearn.model_selection",
    "keras",
    "matplotlib",
    "tensorboard.backend.event_processing.event_accumulator",
)
TIMEOUT_S = 600  # per command or snippet


def _blocks():
    with open(PAGE) as handle:
        text = handle.read()
    return re.findall(r"```(bash|python)\n(.*?)```", text, flags=re.S)


SWEEP_SAMPLE = " --random=1"  # inserted before the sweep's "--"


def _shorten(command: str) -> str:
    for prefix, extra in SHORTER.items():
        if command.startswith(prefix):
            if prefix == "python -m trainer.sweep":
                command = command.replace(" -- ", SWEEP_SAMPLE + " -- ", 1)
            return command + extra
    return command


def _commands(folder: str) -> list[tuple[int, str]]:
    """(block number, command line) for every command and snippet, in page order.

    A ``python`` block becomes ``python snippet_<number>.py``, written to ``folder``.
    """
    commands = []
    for number, (language, body) in enumerate(_blocks()):
        if language == "python":
            name = f"snippet_{number}.py"
            with open(os.path.join(folder, name), "w") as handle:
                handle.write(body)
            commands.append((number, f"python {name}"))
        else:
            commands += [(number, _shorten(line)) for line in body.splitlines() if line]
    return commands


# -- the runner (this file run as a script, in the fresh folder) -------------------------
def _forkable(command: str) -> bool:
    """Whether ``command`` is a plain ``python -m module ...`` or ``python script.py ...``."""
    if re.search(r"[|&;<>$`\\(){}*?\[\]~]", command):  # pipes, expansions, globs: bash's
        return False
    words = shlex.split(command)
    if len(words) < 2 or words[0] != "python":
        return False
    return (words[1] == "-m" and len(words) > 2) or words[1].endswith(".py")


def _fork(args: list[str], stdout_path: str, stderr_path: str) -> int:
    """Runs ``python <args>`` in a forked child; returns its exit status (-9: timed out)."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 1
        try:
            for fd, path in ((1, stdout_path), (2, stderr_path)):
                target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                os.dup2(target, fd)
                os.close(target)
            code = forkserver.run_as_python(args)
            atexit._run_exitfuncs()  # what the interpreter runs at exit
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return -9
        time.sleep(0.02)


def runner(manifest: str) -> None:
    """Runs every command of the page in the current folder, stopping at a failure.

    Writes ``manifest``: one entry per command run, with its block, command line,
    exit status, standard output and standard error, and seconds.
    """
    from trainer import runtime

    runtime.import_tensorflow()  # what each command's own import would do, done once
    for name in PRELOAD:
        __import__(name)
    from tensorflow.python.eager import context

    # Forking is safe only before TensorFlow starts its runtime (threads, devices).
    assert getattr(context, "_context", None) is None, "TensorFlow started before the fork"
    results = []
    for index, (number, command) in enumerate(_commands(os.getcwd())):
        out, err = f".walkthrough_{index}.out", f".walkthrough_{index}.err"
        start = time.perf_counter()
        if _forkable(command):
            status = _fork(shlex.split(command)[1:], out, err)
        else:  # as the page's shell would run it
            with open(out, "w") as stdout, open(err, "w") as stderr:
                status = subprocess.run(
                    ["bash", "-c", command], stdout=stdout, stderr=stderr, timeout=TIMEOUT_S
                ).returncode
        seconds = time.perf_counter() - start
        with open(out) as stdout, open(err) as stderr:
            output = {"stdout": stdout.read(), "stderr": stderr.read()}
        results.append(
            {"block": number, "command": command, "returncode": status, "seconds": seconds} | output
        )
        print(f"{seconds:6.1f}s  status {status}  block {number}: {command}", flush=True)
        if status != 0:
            break
    with open(manifest, "w") as handle:
        json.dump(results, handle)


# -- the tests ---------------------------------------------------------------------------
def test_the_page_says_how_it_is_shortened():
    with open(PAGE) as handle:
        text = " ".join(handle.read().split())
    for extra in [*SHORTER.values(), SWEEP_SAMPLE]:
        assert extra.strip() in text


def test_every_block_of_the_walkthrough_runs(tmp_path):
    pytest.importorskip("matplotlib")
    (tmp_path / "docs" / "img").mkdir(parents=True)
    os.symlink(os.path.join(ROOT, "scripts"), tmp_path / "scripts")
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env["PATH"]
    env["PYTHONPATH"] = ROOT
    blocks = _blocks()
    assert len(blocks) >= 10
    expected = _commands(str(tmp_path))
    manifest = tmp_path / ".walkthrough.json"
    completed = subprocess.run(
        [sys.executable, os.path.abspath(__file__), str(manifest)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    with open(manifest) as handle:
        results = json.load(handle)
    print(completed.stdout)  # seconds per command, shown by pytest on failure or with -s
    for result in results:
        assert result["returncode"] == 0, (
            f"block {result['block']}: {result['command']}\n{result['stderr'][-3000:]}"
        )
    # Every command and snippet ran, in page order.
    assert [(r["block"], r["command"]) for r in results] == expected
    assert {number for number, _ in expected} == set(range(len(blocks)))
    everything = "\n".join(result["stdout"] + result["stderr"] for result in results)
    assert "vanishing gradients in layer hidden_0 at step" in everything
    assert "vanishing gradients in layer conv_0 at step 1: gradient norm 0 is 0" in everything
    assert "conv_1     sigmoid    3x3x16x16" in everything  # inspect shows the kernels
    assert "Xavier std:" in everything and "2.0000000e+04" in everything
    assert "ValueError: layer 3 (misfit) expects 50 inputs" in everything
    assert (tmp_path / "docs" / "img" / "loss_curve.png").stat().st_size > 0
    assert (tmp_path / "runs" / "init_study" / "study.json").exists()
    assert "# Sweep results, ranked by best_validation_accuracy" in everything
    runs = tmp_path / "runs" / "init_sweep" / "runs"
    assert len([p for p in runs.iterdir() if p.is_dir()]) == 1  # --random=1


if __name__ == "__main__":
    sys.path[0] = ROOT  # this file's folder (tests/) is not on a command's path
    runner(sys.argv[1])
