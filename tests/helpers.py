"""Running the trainer from tests: in-process through ``train_lib.run`` and as
a subprocess through ``python -m trainer.main``."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def config(model_dir, **overrides):
    """A ``Config`` for a small, quiet run in ``model_dir``."""
    from trainer.config import Config

    # No XLA unless a test asks: compiling costs more than these short runs save.
    # No evaluation per epoch either (nor the best checkpoints it saves): one at the end.
    values = {
        "model_dir": str(model_dir),
        "hidden": (32,),
        "summary_every": 0,
        "jit_compile": "false",
        "eval_every": 0,
    }
    values.update(overrides)
    if "train_steps" in overrides and "epochs" not in overrides:
        values["epochs"] = None
    return dataclasses.replace(Config(), **values)


def train(model_dir, **overrides) -> dict:
    from trainer import train_lib

    # Like flags given on the command line: they win over a saved config.json.
    return train_lib.run(config(model_dir, **overrides), explicit=set(overrides))


def cli(*flags, timeout=240, env=None) -> subprocess.CompletedProcess:
    """Runs ``python -m trainer.main FLAGS`` from the repository root (forked from
    a process that has TensorFlow imported already: see ``forkserver``)."""
    import forkserver

    full_env = dict(os.environ)
    full_env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    full_env.update(env or {})
    # As config(): evaluate at the end only, unless the test says otherwise (last wins).
    flags = ("--eval_every=0", *flags)
    forked = forkserver.run("trainer.main", flags, full_env, timeout=timeout)
    if forked is not None:
        return forked
    return subprocess.run(
        [sys.executable, "-m", "trainer.main", *flags],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )


def latest_step(model_dir) -> int:
    """The newest ``ckpt-<step>`` in ``model_dir/checkpoints`` (-1 if none)."""
    import glob

    steps = [
        int(os.path.basename(p)[len("ckpt-") : -len(".index")])
        for p in glob.glob(os.path.join(str(model_dir), "checkpoints", "ckpt-*.index"))
    ]
    return max(steps, default=-1)


def checkpoint_variables(prefix) -> dict:
    """``{name: array}`` of a checkpoint's variables (bookkeeping left out: the save
    counter, the object graph and the record of the run's settings)."""
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(prefix))
    return {
        key: reader.get_tensor(key)
        for key in reader.get_variable_to_shape_map()
        if "save_counter" not in key and not key.startswith(("_CHECKPOINTABLE", "identity/"))
    }


def results(model_dir) -> dict:
    with open(os.path.join(str(model_dir), "results.json")) as handle:
        return json.load(handle)


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode != 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in lines if line.startswith("error: ")]
    # exactly one error line, the last thing printed (progress logs may precede it)
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


def script(name: str):
    """The module of ``scripts/<name>.py``, imported once by its path (``scripts/``
    is a folder of programs, not a package)."""
    import importlib.util

    module = sys.modules.get(f"scripts_{name}")
    if module is None:
        path = os.path.join(ROOT, "scripts", f"{name}.py")
        spec = importlib.util.spec_from_file_location(f"scripts_{name}", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    return module
