"""What a writer killed outright leaves, and run folders that cannot be written.

``trainer.convert`` and the export write into hidden ``.tmp-convert-*`` /
``.tmp-export-*`` folders named after their host and process
(``files.private_folder``). A SIGKILL leaves such a folder; the next
conversion beside it, or the next export into the same folder, removes it
(one log line each) once its process is gone, and never one a live process
is writing. The killed writers here kill themselves half-way, after their
first examples or their SavedModel are written: as deterministic as a
SIGKILL from outside can be, and quick (forked from ``forkserver``).
"""

from __future__ import annotations

import fcntl
import glob
import json
import os
import subprocess
import sys
import time

import forkserver
import pytest

from trainer import files
from trainer.errors import UsageError

from datafiles import write_csv
from helpers import assert_one_line_error, cli, train

CONVERT = ".tmp-convert-"
EXPORT = ".tmp-export-"
HOST = files._HOST

# Run as ``python -m``: the converter, killed by the signal KILL_WITH once it has
# written its first examples into its temporary folder.
KILLED_CONVERT = """
import os, signal
from trainer import convert

real = convert._route

def route(*args):
    real(*args)
    os.kill(os.getpid(), getattr(signal, os.environ["KILL_WITH"]))

convert._route = route
convert.run_main()
"""

# Run as ``python -m``: an export of a small model into sys.argv[1], killed outright
# once the SavedModel is written into its temporary folder, before the rename.
KILLED_EXPORT = """
import os, signal, sys
import numpy as np
import tensorflow as tf
from models import zoo
from trainer import export

real = tf.saved_model.save

def save(*args, **kwargs):
    real(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)

tf.saved_model.save = save
model = zoo.mlp(4, (5,), 3, normalization=(np.zeros(4), np.ones(4)))
export.export_model(model, sys.argv[1], 4, classification=True)
"""


def _run_module(tmp_path, name: str, source: str, args, **env):
    """``python -m name args`` of a module written from ``source`` (forked, fast)."""
    folder = tmp_path / "modules"
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.py").write_text(source)
    return forkserver.run(name, args, {**os.environ, **env}, cwd=str(folder), timeout=120)


def _convert_args(tmp_path, output):
    csv_path = write_csv(str(tmp_path / "train.csv"), n=200, features=4)
    return ["--source=csv", f"--csv_path={csv_path}", f"--output_dir={output}", "--num_shards=2"]


def _ended() -> int:
    """The id of a process that has ended (and been waited for)."""
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def _fabricate(parent, prefix: str, host: str, pid: int, random="abc123") -> str:
    """A leftover as ``files.private_folder`` names it, holding a half-written file."""
    path = os.path.join(str(parent), f"{prefix}{host}.{pid}.{random}")
    os.makedirs(path)
    with open(os.path.join(path, "half-written"), "w") as handle:
        handle.write("x")
    return path


# -- 1: leftovers of killed writers ----------------------------------------------------
def test_sigkilled_conversion_leaves_a_folder_the_next_one_removes(tmp_path):
    output = tmp_path / "data" / "out"
    args = _convert_args(tmp_path, output)
    killed = _run_module(tmp_path, "killed_convert", KILLED_CONVERT, args, KILL_WITH="SIGKILL")
    assert killed.returncode == -9, killed.stderr
    [leftover] = glob.glob(str(tmp_path / "data" / f"{CONVERT}*"))
    assert os.listdir(leftover) and not output.exists()  # half a dataset, hidden
    assert os.path.basename(leftover).startswith(f"{CONVERT}{HOST}.")

    live = _fabricate(tmp_path / "data", CONVERT, HOST, os.getpid())  # this test: alive
    again = forkserver.run("trainer.convert", args, dict(os.environ), timeout=120)
    assert again.returncode == 0, again.stderr
    assert not os.path.exists(leftover)
    removed = [line for line in again.stderr.splitlines() if "removed " in line]
    assert len(removed) == 1 and leftover in removed[0], again.stderr
    assert sorted(os.listdir(tmp_path / "data")) == sorted(["out", os.path.basename(live)])
    with open(output / "metadata.json") as handle:
        metadata = json.load(handle)
    assert sum(split["examples"] for split in metadata["splits"].values()) == 200
    for split in metadata["splits"].values():
        for name, facts in split["files"].items():
            assert os.path.getsize(output / name) == facts["bytes"]


def test_sigterm_during_conversion_removes_its_own_folder(tmp_path):
    output = tmp_path / "out"
    args = _convert_args(tmp_path, output)
    stopped = _run_module(tmp_path, "killed_convert", KILLED_CONVERT, args, KILL_WITH="SIGTERM")
    assert stopped.returncode == 143, stopped.stderr
    assert_one_line_error(stopped, "received SIGTERM", "nothing was written to --output_dir")
    assert not output.exists() and not glob.glob(str(tmp_path / f"{CONVERT}*"))


def test_sigkilled_export_leaves_a_folder_the_next_export_removes(tmp_path, monkeypatch):
    import numpy as np

    from models import zoo
    from trainer import export

    export_dir = tmp_path / "run" / "export"
    killed = _run_module(tmp_path, "killed_export", KILLED_EXPORT, [str(export_dir)])
    assert killed.returncode == -9, killed.stderr
    [leftover] = glob.glob(str(export_dir / f"{EXPORT}*"))
    assert os.path.isfile(os.path.join(leftover, "saved_model.pb"))

    live = _fabricate(export_dir, EXPORT, HOST, os.getpid())
    other_host = _fabricate(export_dir, EXPORT, "another-host", _ended())
    model = zoo.mlp(4, (5,), 3, normalization=(np.zeros(4), np.ones(4)))
    from trainer import files

    logged = []  # (absl's handler may not reach caplog once an absl app has run here)
    monkeypatch.setattr(files.logging, "info", lambda text, *args: logged.append(text % args))
    path = export.export_model(model, str(export_dir), 4, classification=True)
    assert path == str(export_dir / "1")  # the killed export never took a number
    assert os.path.isfile(os.path.join(path, "saved_model.pb"))
    assert not os.path.exists(leftover)
    assert sorted(os.listdir(export_dir)) == sorted(
        ["1", os.path.basename(live), os.path.basename(other_host)]
    )
    removed = [line for line in logged if line.startswith("removed ")]
    assert len(removed) == 1 and leftover in removed[0], removed


def test_only_leftovers_of_dead_writers_of_this_host_and_user_are_removed(tmp_path):
    dead = _fabricate(tmp_path, CONVERT, HOST, _ended(), "dead")
    live = _fabricate(tmp_path, CONVERT, HOST, os.getpid(), "live")
    parent_pid = _fabricate(tmp_path, CONVERT, HOST, os.getppid(), "parent")
    elsewhere = _fabricate(tmp_path, CONVERT, "another-host", _ended(), "elsewhere")
    old_style = str(tmp_path / f"{CONVERT}99999")  # no writer in its name: kept
    os.makedirs(old_style)
    export_kind = _fabricate(tmp_path, EXPORT, HOST, _ended(), "export")  # another prefix
    # Its process id ended here, yet its lock is held: a live writer all the same
    # (one in another process namespace on this host, say).
    locked = _fabricate(tmp_path, CONVERT, HOST, _ended(), "locked")
    lock = os.open(locked, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(lock, fcntl.LOCK_EX)
    # A link named as a leftover is never followed.
    target = tmp_path / "precious"
    target.mkdir()
    (target / "keep").write_text("keep")
    link = tmp_path / f"{CONVERT}{HOST}.{_ended()}.link"
    link.symlink_to(target)
    # A zombie (ended, not yet waited for) is dead.
    zombie = subprocess.Popen(["true"])
    try:
        deadline = time.monotonic() + 30
        while files.process_alive(zombie.pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        unreaped = _fabricate(tmp_path, CONVERT, HOST, zombie.pid, "zombie")
        removed = files.remove_dead_leftovers(str(tmp_path), CONVERT)
    finally:
        zombie.wait()
        os.close(lock)
    assert sorted(removed) == sorted([dead, unreaped])
    kept = [live, parent_pid, elsewhere, old_style, export_kind, locked, str(link)]
    assert all(os.path.lexists(path) for path in kept)
    assert (target / "keep").read_text() == "keep"
    assert files.remove_dead_leftovers(str(tmp_path / "missing"), CONVERT) == []


def test_private_folder_is_named_after_its_writer_and_removed_on_failure(tmp_path):
    with pytest.raises(RuntimeError), files.private_folder(str(tmp_path), EXPORT) as path:
        assert files.writer_of(os.path.basename(path), EXPORT) == (HOST, os.getpid())
        # Locked while written: another process's clean-up would leave it.
        probe = subprocess.run(
            [sys.executable, "-c", "import fcntl, os, sys;"
             "fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY);"
             "fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)", path],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert probe.returncode != 0 and "BlockingIOError" in probe.stderr
        raise RuntimeError("the writer fails")
    assert os.listdir(tmp_path) == []
    assert files.writer_of(f"{EXPORT}99999", EXPORT) is None
    assert files.writer_of(f"{EXPORT}host.0.abc", EXPORT) is None  # pid 0: not a process


# -- 2: a run folder that cannot be written -------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small run with summaries (the eval writes them into train/, validation/, test/)."""
    run = tmp_path_factory.mktemp("leftovers") / "run"
    train(run, train_steps=4, summary_every=2)
    assert os.path.isdir(run / "validation")
    return run


def _copy_run(trained, tmp_path):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    return copy


def test_writable_run_folder_names_what_cannot_be_written(trained, tmp_path):
    run = _copy_run(trained, tmp_path)
    label = f"--model_dir={run}"
    files.writable_run_folder(str(run), label, ("train", "validation", "test"))
    files.writable_run_folder(str(tmp_path / "missing"), label, ("train",))
    summary = run / "validation"
    for path in glob.glob(str(summary / "*")):
        os.remove(path)
    summary.rmdir()
    summary.write_text("a file where the summaries go")
    with pytest.raises(UsageError) as raised:
        files.writable_run_folder(str(run), label, ("train", "validation", "test"))
    assert str(raised.value).startswith(f"{summary}: is not a folder"), raised.value
    if os.geteuid() != 0:  # root writes whatever the mode
        summary.unlink()
        os.chmod(run, 0o555)
        try:
            with pytest.raises(UsageError, match="folder is not writable"):
                files.writable_run_folder(str(run), label, ())
        finally:
            os.chmod(run, 0o755)


def test_eval_in_a_run_folder_it_cannot_write_is_a_one_line_usage_error(trained, tmp_path):
    run = _copy_run(trained, tmp_path)
    results = (run / "results.json").read_text()
    summary = run / "train"
    for path in glob.glob(str(summary / "*")):
        os.remove(path)
    summary.rmdir()
    summary.write_text("a file where the summaries go")  # as root, chmod would not stop it
    result = cli("--mode=eval", f"--model_dir={run}")
    assert_one_line_error(result, str(summary), "is not a folder")
    assert result.returncode == 2
    assert (run / "results.json").read_text() == results  # nothing saved was lost
