"""Adversarial attempts on the trainer: flags, config.json, checkpoints, resumes,
the run folder, signals, non-finite training, results and the inspect tool.

An attempt either ends in one ``error: ...`` line on standard error with the
documented exit status (2 bad input, 3 non-finite, 128 + N a signal), or, where
the trainer can go on (a damaged checkpoint with a good one before it, a planted
link), goes on; never a traceback, a hang or a death by signal, and every file
saved in the run folder before it is kept.

Cost: flag errors exit before TensorFlow is imported, so they run through the
command line freely; config.json, resume and lock attacks run in-process too,
and so do the attacks the trainer survives (the test workers have TensorFlow
imported already). The rest run the command line on copies of one small
trained run folder; 16 of them import TensorFlow.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import threading

import forkserver
import pytest

from trainer import assembly, run_folder, train_lib
from trainer import config as config_lib
from trainer.config import UsageError

from helpers import ROOT, assert_one_line_error, results, train

TIMEOUT = 120
TEMPLATE = {"hidden": (16,), "train_steps": 20, "checkpoint_every": 10, "summary_every": 0}
# Run folders are copied under a name with spaces, quotes and shell characters.
WEIRD = "run ü $HOME %s 'q' ,=;&"


# -- helpers -------------------------------------------------------------------
def _run(*args, module="trainer.main", unprivileged=False, memory=0, env=None, timeout=TIMEOUT):
    """``python -m MODULE ARGS`` from the repository root.

    ``unprivileged``: as root, first drop the capabilities that bypass file
    permissions (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER), so a
    read-only or closed folder is what it is for any other user.
    ``memory``: a cap on its address space in bytes, so that a regression
    reading an endless file fails instead of exhausting the machine.
    """
    drop = "drop" if unprivileged and os.geteuid() == 0 else "keep"
    if not memory and drop == "keep":
        forked = forkserver.run(module, args, {**os.environ, **(env or {})}, timeout=timeout)
        if forked is not None:
            return forked
    return subprocess.run(
        [sys.executable, "-c", _WRAPPER, str(memory), drop, "-m", module, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


_WRAPPER = """
import ctypes, os, resource, sys
memory, drop = int(sys.argv[1]), sys.argv[2] == "drop"
if memory:
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
if drop:  # PR_CAPBSET_DROP of DAC_OVERRIDE, DAC_READ_SEARCH, FOWNER: applied at exec
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2, 3):
        if libc.prctl(24, capability, 0, 0, 0) != 0:
            sys.exit(f"cannot drop capability {capability}")
os.execv(sys.executable, [sys.executable, *sys.argv[3:]])
"""


def _permissions_hold(tmp_path) -> bool:
    """Whether a closed file stays closed to ``_run(unprivileged=True)`` here."""
    closed = tmp_path / "closed"
    closed.write_text("x")
    closed.chmod(0)
    probe = f"open({str(closed)!r})"
    drop = "drop" if os.geteuid() == 0 else "keep"
    result = subprocess.run(
        [sys.executable, "-c", _WRAPPER, "0", drop, "-c", probe],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    closed.unlink()
    return "PermissionError" in result.stderr


def _snapshot(folder) -> dict:
    """``{relative path: bytes}`` of every regular file under ``folder`` (links,
    and the run lock that each training process rewrites, left out)."""
    files = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            if name == ".lock" or os.path.islink(path) or not os.path.isfile(path):
                continue
            with open(path, "rb") as handle:
                files[os.path.relpath(path, folder)] = handle.read()
    return files


def _kept(before: dict, folder, rewritten=("results.json",)) -> None:
    """Every file of ``before`` is still there, byte for byte, except ``rewritten``
    (a name ending in ``/``: everything under that folder);
    a rewritten config.json's earlier bytes are kept in a config.before-step-N.json."""
    after = _snapshot(folder)
    for path, data in before.items():
        if path in rewritten or any(path.startswith(p) for p in rewritten if p.endswith("/")):
            continue
        if path == "config.json" and after.get(path) != data:
            kept = [p for p in after if p.startswith("config.before-step-")]
            assert any(after[p] == data for p in kept), f"the earlier config.json is lost: {kept}"
            continue
        assert after.get(path) == data, f"{path} was changed or lost"


def _one_line(error: BaseException, *fragments: str) -> None:
    """An in-process error as ``main`` prints it: one line naming ``fragments``."""
    message = str(error)
    assert "\n" not in message and message.strip(), repr(message)
    for fragment in fragments:
        assert fragment in message, message


def _checkpoint_steps(folder) -> list[int]:
    pattern = os.path.join(glob.escape(str(folder)), "checkpoints", "ckpt-*.index")
    return sorted(int(os.path.basename(p)[5:-6]) for p in glob.glob(pattern))


def _export_versions(folder) -> list[str]:
    export = os.path.join(str(folder), "export")
    return sorted(os.listdir(export)) if os.path.isdir(export) else []


def _edit_config(folder, **changes) -> None:
    path = os.path.join(str(folder), "config.json")
    with open(path) as handle:
        saved = json.load(handle)
    saved.update(changes)
    with open(path, "w") as handle:
        json.dump(saved, handle)


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """One small trained run (train and eval, checkpoints at 10 and 20, export 1),
    in a folder whose name holds a newline, quotes, spaces and shell characters.
    Trained in-process: the test workers have imported TensorFlow already."""
    folder = tmp_path_factory.mktemp("template") / "tem plate\n'q' \"d\" $x %s ü ,=;&|"
    train(folder, **TEMPLATE)
    return folder


def _write_json(path, payload) -> None:
    """As the trainer writes its JSON files."""
    with open(path, "w") as handle:
        handle.write(json.dumps(payload, indent=2, sort_keys=True) + "\n")


@pytest.fixture
def run(template, tmp_path):
    """A copy of the template whose files name the copy, as a real run's do."""
    folder = tmp_path / WEIRD
    shutil.copytree(template, folder, symlinks=True)
    _write_json(
        folder / "results.json", {**results(folder), "export_path": str(folder / "export" / "1")}
    )
    with open(folder / "config.json") as handle:
        saved = json.load(handle)
    _write_json(folder / "config.json", {**saved, "model_dir": str(folder)})
    return folder


# -- flags: one line, exit 2, before TensorFlow, nothing written --------------
FLAG_CASES = [
    (["--learning_rate=inf"], ["--learning_rate=inf", "finite"]),
    (["--learning_rate=nan"], ["--learning_rate=nan", "finite"]),
    (["--learning_rate=1e400"], ["--learning_rate=inf", "finite"]),
    (["--learning_rate=-inf"], ["--learning_rate=-inf"]),
    (["--learning_rate=1e-400"], ["--learning_rate=0.0", "> 0"]),
    (["--clip_norm=nan"], ["--clip_norm=nan", "finite"]),
    (["--clip_norm=-1"], ["--clip_norm=-1.0", "> 0"]),
    (["--test_fraction=inf"], ["--test_fraction=inf", "(0, 1)"]),
    (["--test_fraction=1"], ["--test_fraction=1.0", "(0, 1)"]),
    (["--worker_timeout=nan"], ["--worker_timeout=nan", "finite"]),
    (["--batch_size=2147483648"], ["--batch_size=2147483648", "<= 2147483647"]),
    (["--train_steps=99999999999999999999"], ["--train_steps=99999999999999999999", "<="]),
    (["--epochs=2147483648"], ["--epochs=2147483648", "<= 2147483647"]),
    (["--steps_per_loop=-1"], ["--steps_per_loop=-1", ">= 1"]),
    (["--synthetic_examples=2147483648"], ["--synthetic_examples=2147483648"]),
    (["--hidden=99999999999"], ["--hidden=99999999999", "<= 2147483647"]),
    (["--hidden=16,-1"], ["--hidden=16,-1", ">= 1"]),
    (["--hidden=16,,x"], ["--hidden=16,,x", "an empty layer size"]),
    (["--hidden=16,x"], ["--hidden=16,x", "'x' is not an integer"]),
    (["--hidden="], ["--hidden=''", "at least one layer"]),
    (["--seed=-1"], ["--seed=-1", ">= 0"]),
    (["--seed=2147483648"], ["--seed=2147483648", "<= 2147483647"]),
    (["--seed=-99999999999999999999"], ["--seed=-99999999999999999999", ">= 0"]),
    (["--keep_checkpoints=0"], ["--keep_checkpoints=0", ">= 1"]),
    (["--cpu_devices=1025"], ["--cpu_devices=1025", "<= 1024"]),
    (["--summary_every=-1"], ["--summary_every=-1", ">= 0"]),
    (["--lr_schedule=piecewise"], ["--lr_schedule=piecewise", "--lr_boundaries"]),
    (["--lr_schedule=piecewise", "--lr_boundaries=5,3"], ["--lr_boundaries=5,3", "increasing"]),
    (["--lr_boundaries=100"], ["--lr_boundaries", "piecewise only"]),
    (["--dataset=sin", "--label_smoothing=0.1"], ["--label_smoothing=0.1", "cross_entropy"]),
    (["--label_smoothing=1"], ["--label_smoothing=1.0", "[0, 1)"]),
    (["--weight_decay=-0.1"], ["--weight_decay=-0.1", ">= 0"]),
    (["--lr_plateau_factor=1"], ["--lr_plateau_factor=1.0", "(0, 1)"]),
    (["--dataset=tfrecord"], ["--dataset=tfrecord", "--data_dir"]),
    (["--best_metric=accuracy"], ["--best_metric", "accuracy"]),
    (["--batch_size="], ["--batch_size"]),
    (["--learning_rate="], ["--learning_rate"]),
    (["--dataset="], ["--dataset"]),
    (["--hidden"], ["--hidden"]),
    (["--nosuchflag"], ["nosuchflag"]),
    (["stray"], ["unexpected arguments"]),
    (["--mode=eval", "--model_dir="], ["--model_dir: required with --mode=eval"]),
    (["--mode=export", "--model_dir="], ["--model_dir: required with --mode=export"]),
    (["--dataset=csv", "--csv_path="], ["--csv_path: required"]),
    (["--dataset=mnist", "--data_dir="], ["--data_dir: required"]),
    (["--dataset=csv", "--csv_path=~/missing.csv"], ["--csv_path={tmp}/missing.csv"]),
    (["--mode=eval", "--model_dir=~/nowhere"], ["--model_dir={tmp}/nowhere", "no such folder"]),
    (["--model_dir={tmp}/afile"], ["--model_dir={tmp}/afile", "is a file"]),
    (["--export_dir={tmp}/afile"], ["--export_dir={tmp}/afile", "is a file"]),
    (["--export_dir=~/afile"], ["--export_dir={tmp}/afile", "is a file"]),
    (["--mode=export", "--model_dir={tmp}/afile"], ["--model_dir={tmp}/afile", "no such"]),
    (["--model_dir={tmp}/new\nline"], ["--model_dir={tmp}/new line", "is a file"]),
    (["--model_dir={tmp}/run[1]"], ["--model_dir={tmp}/run[1]", "must not contain ["]),
    (["--model_dir={tmp}/back\\slash"], ["must not contain \\"]),
    (["--model_dir={tmp}/what?"], ["must not contain ?"]),
    (["--export_dir={tmp}/star*"], ["--export_dir={tmp}/star*", "must not contain *"]),
    (["--flagfile="], ["--flagfile", "give the path"]),
    (["--flagfile=/dev/zero"], ["--flagfile=/dev/zero", "not a regular file"]),
    (["--flagfile", "{tmp}/fifo"], ["--flagfile={tmp}/fifo", "not a regular file"]),
    (["--flagfile={tmp}"], ["--flagfile={tmp}", "not a regular file"]),
]


@pytest.mark.parametrize("args, fragments", FLAG_CASES, ids=lambda v: repr(v)[:60])
def test_bad_flags_are_one_line_and_write_nothing(tmp_path, args, fragments):
    (tmp_path / "afile").write_text("a file, not a folder")
    (tmp_path / "new\nline").write_text("a file, not a folder")
    os.mkfifo(tmp_path / "fifo")
    args = [arg.replace("{tmp}", str(tmp_path)) for arg in args]
    never = tmp_path / "never"
    if not any(arg.startswith("--model_dir") for arg in args):
        args.append(f"--model_dir={never}")
    before = sorted(os.listdir(tmp_path))
    result = _run(*args, env={"HOME": str(tmp_path)}, memory=2 << 30, timeout=60)
    assert result.returncode == 2, result.stderr
    assert_one_line_error(result, *[f.replace("{tmp}", str(tmp_path)) for f in fragments])
    assert sorted(os.listdir(tmp_path)) == before  # nothing created


# -- config.json of an existing run: every kind of bad value, read in-process --
def _valid_config() -> dict:
    values = dataclasses.asdict(config_lib.Config(model_dir="/somewhere"))
    values["hidden"] = list(values["hidden"])
    return values


CONFIG_VALUES = [
    ("hidden", "abc", "non-empty list"),
    ("hidden", [], "non-empty list"),
    ("hidden", [16, True], "integers"),
    ("hidden", [16.5], "integers"),
    ("hidden", [0], ">= 1"),
    ("hidden", [2**40], "<= 2147483647"),
    ("batch_size", -5, ">= 1"),
    ("batch_size", "32", "must be an integer"),
    ("batch_size", 2**40, "<= 2147483647"),
    ("seed", -1, ">= 0"),
    ("seed", None, "null is not allowed"),
    ("optimizer", None, "null is not allowed"),
    ("precision", "float16", "must be one of float32, bfloat16"),
    ("dataset", 7, "must be one of"),
    ("learning_rate", "x", "must be a number"),
    ("learning_rate", 0, "finite number > 0"),
    ("test_fraction", True, "must be a number"),
    ("deterministic", "yes", "true or false"),
    ("skip_nonfinite", 1, "true or false"),
    ("data_fingerprint", 5, "must be a string"),
    ("model_dir", ["a"], "must be a string"),
    ("csv_path", "a\0b", "NUL"),
    ("layers", "conv3x3:8,warp9", "'warp9': unknown layer"),
    ("layers", 5, "must be a string"),
    ("input_shape", [8, 8, 0], ">= 1"),
    ("input_shape", [1, 2, 3, 4], "at most 3"),
    ("input_shape", "8x8", "list"),
    ("activation", "swish", "must be one of"),
    ("model", "resnet", "must be one of"),
]


@pytest.mark.parametrize("field, value, problem", CONFIG_VALUES, ids=lambda v: repr(v)[:30])
def test_config_json_with_a_bad_value_is_named(tmp_path, field, value, problem):
    saved = _valid_config()
    saved[field] = value
    path = tmp_path / "config.json"
    path.write_text(json.dumps(saved))
    before = path.read_bytes()
    with pytest.raises(UsageError) as raised:
        config_lib.load(str(path))
    _one_line(raised.value, str(path), json.dumps(field), problem, "fix or remove the file")
    assert path.read_bytes() == before


NONFINITE_JSON = [("learning_rate", "1e400"), ("learning_rate", "NaN"), ("clip_norm", "-Infinity")]


@pytest.mark.parametrize("field, text", NONFINITE_JSON)
def test_config_json_with_a_non_finite_number_is_named(tmp_path, field, text):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(_valid_config())[:-1] + f', "{field}": {text}}}')
    with pytest.raises(UsageError) as raised:
        config_lib.load(str(path))
    _one_line(raised.value, json.dumps(field), "finite number > 0")


MALFORMED = {
    "a_list": (b"[1, 2]", "not a JSON object"),
    "a_string": (b'"settings"', "not a JSON object"),
    "null": (b"null", "not a JSON object"),
    "truncated": (b'{"hidden": [16], "batch_si', "cannot read"),
    "binary": (bytes(range(256)) * 4, "cannot read"),
    "empty": (b"", "cannot read"),
    "bom": (b'\xef\xbb\xbf{"hidden": [16]}', "cannot read"),
    "nested_deeply": (b"[" * 100_000 + b"]" * 100_000, "cannot read"),
}


@pytest.mark.parametrize("kind", sorted(MALFORMED))
def test_malformed_config_json_is_one_line(tmp_path, kind):
    content, problem = MALFORMED[kind]
    path = tmp_path / "config.json"
    path.write_bytes(content)
    with pytest.raises(UsageError) as raised:
        config_lib.load(str(path))
    _one_line(raised.value, str(path), problem)
    assert path.read_bytes() == content


def test_config_json_that_is_a_folder_is_one_line(tmp_path):
    (tmp_path / "config.json").mkdir()
    with pytest.raises(UsageError) as raised:
        config_lib.load(str(tmp_path / "config.json"))
    _one_line(raised.value, "config.json")


_LOAD_IN_A_CHILD = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))  # a regression fails, not the box
from trainer import config
try:
    config.load(sys.argv[1])
except config.UsageError as error:
    sys.exit(f"error: {error}")
"""


@pytest.mark.parametrize("kind", ["fifo", "dev_zero"])
def test_config_json_that_never_ends_is_refused_without_reading(tmp_path, kind):
    path = tmp_path / "config.json"
    if kind == "fifo":
        os.mkfifo(path)  # opening it would block until a writer comes
    else:
        path.symlink_to("/dev/zero")  # reading it would never end
    result = subprocess.run(
        [sys.executable, "-c", _LOAD_IN_A_CHILD, str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stderr
    assert_one_line_error(result, str(path), "not a regular file")


def test_config_json_with_null_epochs_and_null_train_steps_gets_the_default(run):
    _edit_config(run, epochs=None, train_steps=None)
    config = config_lib.resolve({"model_dir": str(run)})
    merged = run_folder.merge_saved_config(config, explicit={"model_dir"})
    assert merged.epochs is None and merged.train_steps is None  # the default length
    plan = assembly.plan(merged, num_train=3200, num_replicas=1)
    assert plan.total_steps == config_lib.DEFAULT_EPOCHS * 100


def test_bad_config_json_on_the_command_line_changes_nothing(run):
    _edit_config(run, hidden="abc")
    before = _snapshot(run)
    result = _run(f"--model_dir={run}", "--train_steps=30")
    assert result.returncode == 2, result.stderr
    assert_one_line_error(result, os.path.join(str(run), "config.json"), '"hidden"', '"abc"')
    assert _snapshot(run) == before


# -- resuming with flags that would change what the run is ---------------------
IDENTITY_CHANGES = [
    ("dataset", "sin", "digits"),
    ("batch_size", 64, "32"),
    ("seed", 1, "0"),
    ("hidden", "32", "16"),
    ("optimizer", "sgd", "adam"),
    ("activation", "relu", "sigmoid"),
    ("init", "he", "xavier"),
    ("loss", "mse", "cross_entropy"),
    ("test_fraction", 0.3, "0.2"),
    ("model", "linear", "mlp"),
    ("model", "lenet", "mlp"),
]


@pytest.mark.parametrize("flag, value, saved", IDENTITY_CHANGES, ids=lambda v: str(v))
def test_resume_refuses_a_flag_that_changes_the_run(run, flag, value, saved):
    before = _snapshot(run)
    config = config_lib.resolve({"model_dir": str(run), flag: value})
    with pytest.raises(UsageError) as raised:
        run_folder.merge_saved_config(config, explicit={"model_dir", flag})
    shown = ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
    _one_line(raised.value, f"--{flag}={shown}", f"--{flag}={saved}", "nothing was changed")
    assert _snapshot(run) == before


def test_resume_of_a_cnn_refuses_other_layers_and_keeps_its_own(tmp_path):
    layers = "conv3x3:4,maxpool2,flatten"
    train(tmp_path, model="cnn", layers=layers, train_steps=2, mode="train")
    before = _snapshot(tmp_path)
    other = config_lib.resolve({"model_dir": str(tmp_path), "model": "cnn", "layers": "conv3x3:8"})
    with pytest.raises(UsageError) as raised:
        run_folder.merge_saved_config(other, explicit={"model_dir", "model", "layers"})
    _one_line(raised.value, "--layers=conv3x3:8", f"--layers={layers}", "nothing was changed")
    assert _snapshot(tmp_path) == before
    plain = config_lib.resolve({"model_dir": str(tmp_path)})  # no flags: the saved network
    merged = run_folder.merge_saved_config(plain, explicit={"model_dir"})
    assert (merged.model, merged.layers, merged.input_shape) == ("cnn", layers, (8, 8, 1))
    assert merged.activation == "relu"


def test_resume_takes_the_saved_settings_and_a_safe_change(run):
    config = config_lib.resolve({"model_dir": str(run), "learning_rate": 0.01})
    merged = run_folder.merge_saved_config(config, explicit={"model_dir", "learning_rate"})
    assert merged.learning_rate == 0.01
    assert merged.hidden == (16,) and merged.train_steps == 20 and merged.summary_every == 0


def test_resume_with_another_dataset_on_the_command_line_changes_nothing(run):
    before = _snapshot(run)
    result = _run(f"--model_dir={run}", "--dataset=sin", "--train_steps=40")
    assert result.returncode == 2, result.stderr
    assert_one_line_error(result, "--dataset=sin", "--dataset=digits", "nothing was changed")
    assert _snapshot(run) == before


def test_resume_with_a_new_learning_rate_is_logged_and_keeps_the_earlier_config(run, monkeypatch):
    logged = []
    monkeypatch.setattr(
        train_lib.logging, "info", lambda text, *args: logged.append(text % args if args else text)
    )
    before = _snapshot(run)
    train(run, learning_rate=0.01, train_steps=30)
    assert "resuming with changed settings: learning_rate 0.003 -> 0.01; train_steps" in (
        " ".join(logged)
    )
    assert (run / "config.before-step-20.json").read_bytes() == before["config.json"]
    assert json.loads((run / "config.json").read_text())["learning_rate"] == 0.01
    assert results(run)["global_step"] == 30
    # the best checkpoint is replaced by a better one: that is what it is for
    _kept(before, run, rewritten=("results.json", "checkpoints/checkpoint", "checkpoints/best/"))


# -- checkpoints ---------------------------------------------------------------
# Attacks the trainer survives run in-process; those ending in an error line run the CLI.
def test_garbage_checkpoint_state_file_still_evaluates(run):
    (run / "checkpoints" / "checkpoint").write_text("garbage\n\0\1\2")
    before = _snapshot(run)
    assert train(run, mode="eval")["validation_step"] == 20
    _kept(before, run)


def test_empty_checkpoint_state_file_is_one_line(run):
    (run / "checkpoints" / "checkpoint").write_bytes(b"")
    before = _snapshot(run)
    result = _run(f"--model_dir={run}", "--mode=eval")
    assert result.returncode == 2, result.stderr
    assert_one_line_error(result, os.path.join("checkpoints", "checkpoint"), "checkpoint state")
    assert _snapshot(run) == before


def test_checkpoint_index_that_is_a_folder_falls_back_and_keeps_the_data(run):
    index = run / "checkpoints" / "ckpt-20.index"
    index.unlink()
    index.mkdir()
    before = _snapshot(run)
    assert train(run, mode="train", train_steps=30)["global_step"] == 30
    assert _checkpoint_steps(run) == [10, 20, 30]  # resumed from 10, saved 20 again
    data = "checkpoints/ckpt-20.data-00000-of-00001"
    assert (run / "checkpoints" / "corrupt" / os.path.basename(data)).read_bytes() == before[data]
    assert (run / "checkpoints" / "corrupt" / "ckpt-20.index").is_dir()
    _kept(
        {p: v for p, v in before.items() if p != data},
        run,
        ("results.json", "checkpoints/checkpoint"),
    )


def test_checkpoint_data_file_linked_to_nothing_falls_back(run):
    data = run / "checkpoints" / "ckpt-20.data-00000-of-00001"
    data.unlink()
    data.symlink_to(run / "nowhere")
    before = _snapshot(run)
    assert train(run, mode="eval")["validation_step"] == 10  # fell back to ckpt-10
    assert os.path.islink(data)  # eval moves nothing
    _kept(before, run)


def test_all_checkpoints_corrupt_is_one_line_and_nothing_is_deleted(run):
    for index in glob.glob(os.path.join(glob.escape(str(run)), "checkpoints", "*.index")):
        with open(index, "wb") as handle:
            handle.write(b"not an index")
    before = _snapshot(run)
    result = _run(f"--model_dir={run}", "--mode=eval")
    assert result.returncode == 2, result.stderr
    assert_one_line_error(result, "no readable checkpoint left", "nothing was deleted")
    assert _snapshot(run) == before


# -- the run folder ------------------------------------------------------------
@pytest.fixture
def lock_module():
    from trainer import checkpoints  # imports TensorFlow, once per worker

    return checkpoints


@pytest.mark.parametrize("kind", ["link_to_victim", "dangling_link", "folder", "fifo"])
def test_a_planted_run_lock_is_refused(lock_module, tmp_path, kind):
    victim = tmp_path / "victim"
    lock = tmp_path / "run" / ".lock"
    lock.parent.mkdir()
    if kind == "link_to_victim":
        victim.write_text("precious")
        lock.symlink_to(victim)
    elif kind == "dangling_link":
        lock.symlink_to(victim)
    elif kind == "folder":
        lock.mkdir()
    else:
        os.mkfifo(lock)
    with pytest.raises(UsageError) as raised:
        lock_module.RunLock(str(lock.parent)).acquire()
    _one_line(raised.value, str(lock))
    if kind == "link_to_victim":
        assert victim.read_text() == "precious"
    if kind == "dangling_link":
        assert not os.path.lexists(victim)  # never created through the link


def test_run_lock_linked_to_a_victim_outside_is_one_line(run, tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (run / ".lock").unlink()
    (run / ".lock").symlink_to(victim)
    before = _snapshot(run)
    result = _run(f"--model_dir={run}", "--train_steps=30")
    assert result.returncode == 2, result.stderr
    assert_one_line_error(result, ".lock", "symbolic link")
    assert victim.read_text() == "precious"
    assert _snapshot(run) == before


def test_results_json_linked_to_a_victim_is_replaced_not_followed(run, tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (run / "results.json").unlink()
    (run / "results.json").symlink_to(victim)
    train(run, train_steps=30)
    assert victim.read_text() == "precious"
    assert not os.path.islink(run / "results.json")
    assert results(run)["global_step"] == 30


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_read_only_run_folder_is_one_line_and_keeps_everything(run, tmp_path, mode):
    if not _permissions_hold(tmp_path):
        pytest.skip("file permissions are not enforced for this user here")
    before = _snapshot(run)
    flags = ["--mode=eval"] if mode == "eval" else ["--mode=train", "--train_steps=30"]
    run.chmod(0o555)
    try:
        result = _run(f"--model_dir={run}", *flags, unprivileged=True)
    finally:
        run.chmod(0o755)
    assert result.returncode == 2, result.stderr
    if mode == "eval":
        assert_one_line_error(result, f"--model_dir={run}", "not writable", "results")
    else:
        assert_one_line_error(result, f"--model_dir={run}", "not writable")
    assert _snapshot(run) == before


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_run_folder_without_permissions_is_one_line(run, tmp_path, mode):
    if not _permissions_hold(tmp_path):
        pytest.skip("file permissions are not enforced for this user here")
    before = _snapshot(run)
    run.chmod(0)
    try:
        result = _run(f"--model_dir={run}", f"--mode={mode}", unprivileged=True)
    finally:
        run.chmod(0o755)
    assert result.returncode == 2, result.stderr
    assert_one_line_error(result, f"--model_dir={run}", "cannot read the folder")
    assert _snapshot(run) == before


# -- signals ---------------------------------------------------------------------
def _start(*args) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "trainer.main", *args],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _signal_after(process: subprocess.Popen, needle: str, signum: int):
    """Sends ``signum`` once ``needle`` is printed; returns the finished process's result."""
    watchdog = threading.Timer(TIMEOUT, process.kill)  # a hang fails instead of blocking
    watchdog.start()
    seen = []
    try:
        for line in process.stderr:
            seen.append(line)
            if needle in line:
                process.send_signal(signum)
                break
        rest = process.stderr.read()
        process.wait()
    finally:
        watchdog.cancel()
    stderr = "".join(seen) + rest
    assert needle in stderr, stderr
    return subprocess.CompletedProcess(process.args, process.returncode, "", stderr)


LONG = ("--train_steps=1000000", "--checkpoint_every=0", "--steps_per_loop=10", "--log_every=10")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_during_training_saves_the_stop_step(run, signum):
    before = _snapshot(run)
    result = _signal_after(_start(f"--model_dir={run}", *LONG), "step 40/1000000", signum)
    assert result.returncode == 128 + signum, result.stderr
    name = signal.Signals(signum).name
    assert_one_line_error(result, f"received {name}", "saved the checkpoint of step")
    stopped_at = int(result.stderr.split("saved the checkpoint of step ")[1].split(";")[0])
    assert stopped_at >= 40 and stopped_at % 10 == 0
    assert stopped_at in _checkpoint_steps(run)
    _kept(before, run, rewritten=("results.json", "checkpoints/checkpoint"))
    if signum == signal.SIGTERM:  # and training resumes from it
        assert train(run, train_steps=stopped_at + 10)["global_step"] == stopped_at + 10
        assert _export_versions(run) == ["1", "2"]


def test_sigterm_during_eval_is_one_line_and_keeps_everything(run):
    before = _snapshot(run)
    result = _signal_after(_start(f"--model_dir={run}", "--mode=eval"), "restored", signal.SIGTERM)
    assert result.returncode == 143, result.stderr
    assert_one_line_error(result, "received SIGTERM", "everything saved before is kept")
    _kept(before, run)
    assert results(run)["global_step"] == 20  # still whole


# -- non-finite training ----------------------------------------------------------
@pytest.mark.parametrize("skip", [False, True], ids=["stop", "skip_nonfinite"])
def test_overflowing_learning_rate_stops_with_exit_3_and_saves_nothing(tmp_path, skip):
    folder = tmp_path / WEIRD
    flags = ["--optimizer=sgd", "--learning_rate=1e38", "--hidden=16", "--summary_every=0"]
    flags += ["--train_steps=20", "--checkpoint_every=10"] + (["--skip_nonfinite"] if skip else [])
    result = _run(f"--model_dir={folder}", *flags)
    assert result.returncode == 3, result.stderr
    if skip:
        # Step 1 leaves finite weights near 1e37 that overflow every later step:
        # skipping cannot recover, so ten skipped steps in a row stop the run.
        assert_one_line_error(result, "from step 2 to 11", "in a row", "diverged")
    else:
        assert_one_line_error(result, "at step 2", "last good checkpoint: none")
        assert _checkpoint_steps(folder) == []
    assert _export_versions(folder) == []
    # results.json says why it stopped, and holds no figure of the broken model
    stopped = json.loads((folder / "results.json").read_text())
    assert stopped["stop_reason"] == "non_finite" and stopped["validation_loss"] is None
    assert "export_path" not in stopped


def test_exploding_regression_with_histograms_every_step_never_crashes(tmp_path):
    folder = tmp_path / "sin"
    result = _run(
        f"--model_dir={folder}", "--dataset=sin", "--optimizer=sgd", "--learning_rate=1e9",
        "--summary_every=1", "--train_steps=30", "--hidden=16",
    )  # fmt: skip
    assert result.returncode >= 0 and result.returncode not in (139, 134), result.stderr
    assert "Traceback" not in result.stderr
    if result.returncode:
        assert result.returncode == 3, result.stderr
        assert_one_line_error(result, "non-finite")


# -- results.json -------------------------------------------------------------------
def test_rerunning_a_finished_command_keeps_the_results_and_exports_nothing_new(run):
    before = results(run)
    snapshot = _snapshot(run)
    train(run, **TEMPLATE)  # the template's own command again
    after = results(run)
    for key in ("train_loss", "train_accuracy", "examples_per_sec", "first_call_s", "export_path"):
        assert after[key] == before[key] and after[key] is not None, key
    assert after["validation_step"] == 20 and after["validation_loss"] == pytest.approx(
        before["validation_loss"]
    )
    assert _export_versions(run) == ["1"]
    _kept(snapshot, run)


def test_training_on_without_eval_does_not_report_the_old_eval_as_current(run):
    before = results(run)
    train(run, mode="train", epochs=2)
    after = results(run)
    assert after["global_step"] == 2 * (1293 // 32)
    assert after["validation_loss"] is None and after["validation_accuracy"] is None
    assert "validation_step" not in after
    assert after["train_loss"] is not None and after["train_loss"] != before["train_loss"]


# -- the inspect tool -----------------------------------------------------------------
def test_inspect_with_a_broken_config_json_is_one_line(run):
    (run / "config.json").write_text('{"hidden": [16], "batch_')
    before = _snapshot(run)
    result = _run(f"--model_dir={run}", module="trainer.inspect")
    assert result.returncode == 2, result.stderr
    assert_one_line_error(result, "config.json", "cannot read the run's config")
    assert _snapshot(run) == before


def test_inspect_without_checkpoints_is_one_line(run):
    shutil.rmtree(run / "checkpoints")
    before = _snapshot(run)
    result = _run(f"--model_dir={run}", module="trainer.inspect")
    assert result.returncode == 2, result.stderr
    assert_one_line_error(result, f"--model_dir={run}", "no checkpoint to inspect")
    assert _snapshot(run) == before


def test_inspect_of_a_file_is_one_line(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("not a run")
    result = _run(f"--model_dir={afile}", module="trainer.inspect")
    assert result.returncode == 2, result.stderr
    assert_one_line_error(result, f"--model_dir={afile}", "no such run folder")
    assert afile.read_text() == "not a run"


# -- the template itself: a folder named with a newline, quotes and $ trains -------
def test_a_run_folder_named_with_a_newline_quotes_and_dollars_trains(template):
    figures = results(template)
    assert figures["global_step"] == 20 and figures["validation_step"] == 20
    assert _checkpoint_steps(template) == [10, 20] and _export_versions(template) == ["1"]
    assert json.loads((template / "config.json").read_text())["model_dir"] == str(template)
